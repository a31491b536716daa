//! The structured log of every binary: JSON lines on stdout by default (one object per event, the access log
//! included, under target `access`), or human-readable text.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line. Default.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive (`info`, `origin=debug,info`); the
/// `RUST_LOG` environment variable overrides it.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
