//! Loading and validating the binaries' TOML configs. Each binary has one serde struct with
//! `#[serde(deny_unknown_fields)]` and a `validate()` that reports the offending field by its dotted path.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

/// A config that cannot be used, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field (`media.listen`), or the file when it did not parse.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config: `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parses TOML text into a config struct. Unknown keys and type errors are reported with toml's own message,
/// which names the key and the line.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // toml's message names the key ("unknown field `x`") and shows the line; keep it whole.
        ConfigError::new(origin, e.to_string().trim_end().to_string())
    })
}

/// Reads and parses a TOML config file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&origin, format!("cannot read: {e}")))?;
    parse_toml(&text, &origin)
}

/// Checks that a listen address parses as `IP:PORT`.
pub fn check_socket_addr(field: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(field, format!("`{value}` is not an IP:PORT socket address")))
}

/// Fails with `message` on `field` unless `ok`.
pub fn ensure(ok: bool, field: &str, message: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        port: u16,
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            parse_toml::<Sample>("name = \"a\"\n[inner]\nprot = 1\n", "test.toml").unwrap_err();
        assert_eq!(err.field, "test.toml");
        assert!(err.message.contains("unknown field `prot`"), "{err}");
    }

    #[test]
    fn type_errors_are_named() {
        let err = parse_toml::<Sample>("name = \"a\"\n[inner]\nport = \"x\"\n", "t").unwrap_err();
        assert!(err.message.contains("port"), "{err}");
    }

    #[test]
    fn socket_addresses() {
        assert!(check_socket_addr("a.listen", "127.0.0.1:8080").is_ok());
        assert!(check_socket_addr("a.listen", "[::1]:0").is_ok());
        let err = check_socket_addr("a.listen", "localhost:80").unwrap_err();
        assert_eq!(err.field, "a.listen");
        assert_eq!(
            err.to_string(),
            "invalid config: `a.listen`: `localhost:80` is not an IP:PORT socket address"
        );
    }
}
