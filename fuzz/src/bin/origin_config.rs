//! The origin's config (origin::config): any text as a config file is a config or a refusal naming a field,
//! never a panic; a config that passes `validate()` has its listeners' addresses and its catalog URL.
//!
//! Input: the TOML text.

use origin::config::OriginConfig;
use shared::config::parse_toml;

/// The fields a refusal may name: the file itself (it did not parse) or a field of the config, by its dotted path.
const FIELDS: &[&str] = &[
    "data_dir",
    "media",
    "admin",
    "store",
    "cache_control",
    "log",
    "api",
    "catalog",
    "playback",
    "signing_key",
];

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let config: OriginConfig = match parse_toml(text, "origin.toml") {
            Ok(config) => config,
            Err(e) => {
                assert_eq!(e.field, "origin.toml");
                assert!(!e.message.is_empty());
                return;
            }
        };
        match config.validate() {
            Ok(()) => {
                assert!(
                    config.media_addr().is_ok()
                        && config.admin_addr().is_ok()
                        && config.api_addr().is_ok()
                );
                assert!(!config.catalog_url().is_empty());
            }
            Err(e) => {
                let head = e.field.split(['.', '[']).next().unwrap_or("");
                assert!(FIELDS.contains(&head), "a refusal names no field: {e:?}");
                assert!(!e.message.is_empty());
            }
        }
    });
}
