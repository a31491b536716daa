//! Generated config text for property tests: TOML that looks like a binary's config (its sections and keys,
//! values of every type and some the binary expects, and junk lines), for checking that any of it loads as a
//! config or is refused with the offending field named, never a panic.

use proptest::prelude::*;

/// Lines of `sections` (`[tls]`, `[[site]]`, …), `key = value` pairs of `keys` with values of any type or one of
/// `values` (TOML literals the binary expects somewhere, such as `"127.0.0.1:0"`), and junk.
pub fn config_toml(
    sections: &'static [&'static str],
    keys: &'static [&'static str],
    values: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let section = proptest::sample::select(sections);
    let key = proptest::sample::select(keys);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..1 << 32).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~&&[^\"\\\\]]{0,24}".prop_map(|s| format!("\"{s}\"")),
        proptest::sample::select(values).prop_map(str::to_string),
        proptest::collection::vec("[ -~&&[^\"\\\\]]{0,12}", 0..3).prop_map(|v| format!(
            "[{}]",
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    ];
    let line = prop_oneof![
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => section.prop_map(str::to_string),
        1 => "[ -~]{0,30}",
    ];
    proptest::collection::vec(line, 0..14).prop_map(|lines| lines.join("\n"))
}
