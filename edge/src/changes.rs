//! Following the control plane's catalog changes (`[control]`): a long poll of
//! `GET <url>/v1/edges/<name>/changes?after=<seq>&wait=25`, and for each takedown a hard purge of its path
//! (`/titles/<slug>/`) on every site. The last sequence number applied is kept in `<data_dir>/control-changes`,
//! so an edge that was down or restarts catches up on what it missed; one with no such file starts from the
//! control plane's latest when it has no disk tier (nothing cached to purge), and from the beginning when it
//! has one (its disk may hold a title taken down meanwhile). A purge is idempotent: a change applied twice is
//! harmless.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::ControlConfig;
use crate::pipeline::Edge;

/// How long the control plane may hold a poll open; the request's own deadline is longer.
const WAIT_SECS: u64 = 25;
/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize)]
struct Answer {
    changes: Vec<Change>,
    next: i64,
}

#[derive(Debug, Deserialize)]
struct Change {
    seq: i64,
    slug: String,
    purge: Option<String>,
}

/// Where the last applied sequence number is kept.
pub fn state_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("control-changes")
}

/// Follows the change feed until `stop` turns true.
pub async fn follow_forever(
    control: ControlConfig,
    name: String,
    edge: Arc<Edge>,
    state: PathBuf,
    has_disk_tier: bool,
    mut stop: watch::Receiver<bool>,
) {
    let client: ControlClient = Client::builder(TokioExecutor::new()).build_http();
    let base = format!(
        "{}/v1/edges/{name}/changes",
        control.url.trim_end_matches('/')
    );
    let secret = control.registration_secret.unwrap_or_default();
    let mut after: Option<i64> = std::fs::read_to_string(&state)
        .ok()
        .and_then(|text| text.trim().parse().ok());
    if after.is_none() && has_disk_tier {
        after = Some(0);
    }
    let mut backoff = Duration::from_secs(1);
    // Said once per spell of failures: the next polls would say the same.
    let mut failing = false;
    loop {
        let url = match after {
            Some(seq) => format!("{base}?after={seq}&wait={WAIT_SECS}"),
            None => format!("{base}?after=latest"),
        };
        let answer = tokio::select! {
            answer = poll(&client, &url, &secret) => answer,
            _ = stop.changed() => return,
        };
        match answer {
            Ok(answer) => {
                backoff = Duration::from_secs(1);
                if failing {
                    tracing::info!(url = %base, "the control plane's changes are read again");
                    failing = false;
                }
                for change in &answer.changes {
                    let Some(path) = &change.purge else { continue };
                    match edge.purge_path_on_every_site(path).await {
                        Ok(sites) => {
                            edge.metrics
                                .purges
                                .with_label_values(&["prefix", "hard"])
                                .inc();
                            tracing::info!(seq = change.seq, slug = %change.slug, path = %path, sites, "takedown purged");
                        }
                        Err(crate::pipeline::PurgeError::Invalid(reason)) => {
                            tracing::warn!(seq = change.seq, path = %path, reason = %reason, "a takedown names no purgeable path; skipped")
                        }
                        Err(crate::pipeline::PurgeError::Io(e)) => {
                            // Not recorded as applied: the next poll asks again.
                            tracing::error!(seq = change.seq, error = %e, "a takedown purge could not be saved");
                            break;
                        }
                    }
                    after = Some(change.seq);
                }
                if answer.changes.is_empty() || after.is_none() {
                    after = Some(answer.next.max(after.unwrap_or(0)));
                }
                if let Some(seq) = after
                    && let Err(e) = save(&state, seq)
                {
                    tracing::warn!(file = %state.display(), error = %e, "cannot save the change feed's position");
                }
            }
            Err(reason) => {
                if !failing {
                    tracing::warn!(url = %url, reason = %reason, "reading the control plane's changes failed; retrying");
                    failing = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn poll(client: &ControlClient, url: &str, secret: &str) -> Result<Answer, String> {
    let deadline = Duration::from_secs(WAIT_SECS + 10);
    let body = get_from_control(client, url, secret, deadline, MAX_ANSWER_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| format!("not a change feed answer: {e}"))
}

/// The plain-HTTP client the edge asks its control plane with.
pub type ControlClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// `GET url` with the registration secret: the body of a 2xx answer (at most `max_bytes`, all of it within
/// `deadline`), or why not (a refusal with the control plane's reason).
pub async fn get_from_control(
    client: &ControlClient,
    url: &str,
    secret: &str,
    deadline: Duration,
    max_bytes: usize,
) -> Result<Bytes, String> {
    let request = http::Request::get(url)
        .header(http::header::AUTHORIZATION, format!("Bearer {secret}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(deadline, client.request(request))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = tokio::time::timeout(
        deadline,
        http_body_util::Limited::new(response.into_body(), max_bytes).collect(),
    )
    .await
    .map_err(|_| "the answer did not arrive in time".to_string())?
    .map_err(|e| e.to_string())?
    .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok(body)
}

/// Replaces the state file atomically.
fn save(state: &std::path::Path, seq: i64) -> std::io::Result<()> {
    if let Some(parent) = state.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temp = state.with_extension("tmp");
    std::fs::write(&temp, seq.to_string())?;
    std::fs::rename(&temp, state)
}
