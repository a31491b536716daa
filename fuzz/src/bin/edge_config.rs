//! The edge's config (edge::config): any text as a config file is a config or a refusal naming a field, never a
//! panic; a config that passes `validate()` has its listeners' addresses, its sites and its folders.
//!
//! Input: the TOML text.

use edge::config::{EdgeConfig, slice_block_bytes};
use shared::config::parse_toml;

/// The fields a refusal may name: the file itself (it did not parse) or a field of the config, by its dotted path.
const FIELDS: &[&str] = &[
    "name",
    "data_dir",
    "tls",
    "h3",
    "http",
    "admin",
    "site",
    "cache",
    "limits",
    "cors",
    "log",
    "signing_key",
];

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let config: EdgeConfig = match parse_toml(text, "edge.toml") {
            Ok(config) => config,
            Err(e) => {
                assert_eq!(e.field, "edge.toml");
                assert!(!e.message.is_empty());
                return;
            }
        };
        match config.validate() {
            Ok(()) => {
                assert!(config.admin_addr().is_ok());
                let (tls, http) = (config.tls_addr(), config.http_addr());
                assert!(matches!((&tls, &http), (Ok(_), Ok(_))));
                assert!(tls.unwrap().is_some() || http.unwrap().is_some());
                let sites = config.effective_sites();
                assert!(!sites.is_empty() && sites.iter().all(|s| !s.hosts.is_empty()));
                for site in &sites {
                    for prefix in site.bypass_paths.iter().chain(&site.signed_paths) {
                        assert!(shared::path::canonical_prefix(prefix).is_ok());
                    }
                }
                let _ = (config.tls_cert(), config.tls_key(), config.disk_dir());
                assert!(slice_block_bytes(config.cache.slice_bytes) >= config.cache.slice_bytes);
            }
            Err(e) => {
                let head = e.field.split(['.', '[']).next().unwrap_or("");
                assert!(FIELDS.contains(&head), "a refusal names no field: {e:?}");
                assert!(!e.message.is_empty());
            }
        }
    });
}
