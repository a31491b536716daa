//! Posting the per-title summaries: every `[control] stats_secs`, the interval's summary — when it counted
//! anything — as one `POST <url>/v1/edges/<name>/stats` with the fleet's bearer secret (the pattern of
//! `report.rs`). A refused (not 2xx) or failed post drops that interval's numbers: nothing is queued or sent
//! again, so the edge never holds more than the interval being counted. The first failure of a spell is logged
//! with its reason, the recovery once; `edge_stats_posts_total{outcome}` counts every post.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::ControlConfig;
use crate::pipeline::Edge;

/// The longest a post may take (shorter when the interval is).
const MAX_POST_SECS: u64 = 10;
/// The most of a refusal's body read for its reason.
const MAX_REASON_BYTES: usize = 1024;
/// The longest interval a summary may claim (the control plane's limit).
pub const MAX_INTERVAL_SECS: u64 = 3600;

/// How one post went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// The control plane answered, but not with 2xx.
    Refused {
        status: u16,
        reason: String,
    },
    /// No answer: unreachable, timed out.
    Failed(String),
}

impl Outcome {
    /// The `edge_stats_posts_total` label.
    fn label(&self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// Posts a summary every `stats_secs` until `stop` turns true; returns at once when `stats_secs` is 0.
pub async fn post_forever(
    control: ControlConfig,
    name: String,
    edge: Arc<Edge>,
    mut stop: watch::Receiver<bool>,
) {
    if control.stats_secs == 0 {
        return;
    }
    edge.title_stats.start(control.stats_max_titles);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!(
        "{}/v1/edges/{name}/stats",
        control.url.trim_end_matches('/')
    );
    let secret = control.registration_secret.unwrap_or_default();
    let every = Duration::from_secs(control.stats_secs);
    let deadline = every.min(Duration::from_secs(MAX_POST_SECS));
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut began = Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Instant::now();
        let secs = (now - began)
            .as_secs_f64()
            .round()
            .clamp(1.0, MAX_INTERVAL_SECS as f64) as u64;
        began = now;
        // An interval that counted nothing sends nothing.
        let Some(summary) = edge.title_stats.take().filter(|s| !s.is_empty()) else {
            continue;
        };
        let body = summary.to_json(secs).to_string();
        drop(summary);
        let outcome = post(&client, &url, &secret, body, deadline).await;
        edge.metrics
            .stats_posts
            .with_label_values(&[outcome.label()])
            .inc();
        match outcome {
            Outcome::Sent if failing => {
                tracing::info!(url = %url, "the control plane takes this edge's summaries again");
                failing = false;
            }
            Outcome::Sent => {}
            // Said once per spell: the next posts would say the same.
            Outcome::Refused { status, reason } => {
                if !failing {
                    tracing::error!(url = %url, status, reason = %reason, "the control plane refused this edge's per-title summary; summaries are dropped until it takes them");
                }
                failing = true;
            }
            Outcome::Failed(reason) => {
                if !failing {
                    tracing::warn!(url = %url, reason = %reason, "cannot post this edge's per-title summary; summaries are dropped until the control plane answers");
                }
                failing = true;
            }
        }
    }
}

/// One post of `body`, answered within `deadline`.
async fn post(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    secret: &str,
    body: String,
    deadline: Duration,
) -> Outcome {
    let request = http::Request::post(url)
        .header(http::header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)));
    let request = match request {
        Ok(request) => request,
        Err(e) => return Outcome::Failed(format!("cannot build the request: {e}")),
    };
    let response = match tokio::time::timeout(deadline, client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Outcome::Failed(error_chain(&e)),
        Err(_) => return Outcome::Failed(format!("no answer within {deadline:?}")),
    };
    let status = response.status();
    // Read (a bounded part of) the body either way, so the connection can carry the next post.
    let text = match tokio::time::timeout(
        deadline,
        Limited::new(response.into_body(), MAX_REASON_BYTES).collect(),
    )
    .await
    {
        Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).trim().to_string(),
        _ => String::new(),
    };
    if status.is_success() {
        Outcome::Sent
    } else {
        Outcome::Refused {
            status: status.as_u16(),
            reason: text,
        }
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_have_their_labels() {
        assert_eq!(Outcome::Sent.label(), "sent");
        let refused = Outcome::Refused {
            status: 401,
            reason: "wrong secret".into(),
        };
        assert_eq!(refused.label(), "refused");
        assert_eq!(Outcome::Failed("refused".into()).label(), "failed");
    }

    #[test]
    fn errors_name_their_causes() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            error_chain(&Outer(inner)),
            "client error (Connect): connection refused"
        );
    }
}
