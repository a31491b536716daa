//! The structured log of every binary: JSON lines on stdout by default (one object per event, the access log
//! included, under target `access`), or human-readable text.

use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tracing::{Event, Level, Subscriber, field::Field, field::Visit};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
/// `RUST_LOG` environment variable overrides it. Errors reach the watches of [`watch_errors`] whatever the filter.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let output = match format {
        LogFormat::Json => output
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => output.with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(output)
        .with(ErrorWatchLayer.with_filter(LevelFilter::ERROR))
        .try_init();
}

type ErrorWatch = (&'static str, Arc<dyn Fn(&str) + Send + Sync>);

static ERROR_WATCHES: RwLock<Vec<ErrorWatch>> = RwLock::new(Vec::new());

/// Calls `on_error` with the message of every error event whose target starts with `target_prefix`: for a
/// library that reports a failure only in its log (foyer's disk writes). `on_error` runs inside the logging of
/// the event, so it must not log itself; it should only record what happened.
pub fn watch_errors(target_prefix: &'static str, on_error: impl Fn(&str) + Send + Sync + 'static) {
    ERROR_WATCHES
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((target_prefix, Arc::new(on_error)));
}

struct ErrorWatchLayer;

impl<S: Subscriber> Layer<S> for ErrorWatchLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let target = event.metadata().target();
        let watches = ERROR_WATCHES
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut message = None;
        for (prefix, on_error) in watches.iter() {
            if target.starts_with(prefix) {
                let message = message.get_or_insert_with(|| {
                    let mut visitor = MessageVisitor(String::new());
                    event.record(&mut visitor);
                    visitor.0
                });
                on_error(message);
            }
        }
    }
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let separator = if self.0.is_empty() { "" } else { ", " };
        if field.name() == "message" {
            let _ = write!(self.0, "{separator}{value:?}");
        } else {
            let _ = write!(self.0, "{separator}{}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn watched_errors_are_seen_whatever_the_filter() {
        init(LogFormat::Json, "off");
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&seen);
        watch_errors("shared::logging::tests::watched", move |message| {
            assert!(message.contains("disk write failed"), "{message}");
            counted.fetch_add(1, Ordering::SeqCst);
        });
        tracing::error!(target: "shared::logging::tests::watched", "disk write failed");
        tracing::warn!(target: "shared::logging::tests::watched", "only a warning");
        tracing::error!(target: "shared::logging::tests::other", "another library");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
