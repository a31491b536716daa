//! Reporting this edge to the control plane (`[control]`): at start and then every `heartbeat_secs`, one
//! `PUT <url>/v1/edges/<name>` of its whole record, so a report is its registration and its heartbeat at once
//! (a control plane that restarted learns the fleet again from the next round). The load it carries is read from
//! the edge's own metrics: totals, and rates and ratios since the previous report. A refusal (a wrong secret)
//! is logged with the control plane's reason; the edge serves on either way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::watch;

use crate::config::ControlConfig;
use crate::pipeline::Edge;

/// What a report says of this edge besides its load.
pub struct Identity {
    pub name: String,
    pub region: String,
    pub urls: Vec<String>,
    pub metrics_target: String,
    pub capacity: u64,
}

/// Totals read from the metrics, to tell rates and ratios between two reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub hits: u64,
    pub errors: u64,
    pub response_bytes: u64,
    pub open_connections: u64,
    pub disk_tier_up: bool,
}

impl Totals {
    /// Reads the edge's metrics.
    pub fn read(registry: &prometheus::Registry) -> Totals {
        let mut totals = Totals::default();
        for family in registry.gather() {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                let counter = metric.get_counter().get_value() as u64;
                match family.name() {
                    "edge_http_requests_total" => {
                        totals.requests += counter;
                        if label("cache_status").as_deref() == Some("hit") {
                            totals.hits += counter;
                        }
                        if label("status_class").as_deref() == Some("5xx") {
                            totals.errors += counter;
                        }
                    }
                    "edge_http_response_body_bytes_total" => totals.response_bytes += counter,
                    "edge_http_connections_open" => {
                        totals.open_connections += metric.get_gauge().get_value().max(0.0) as u64
                    }
                    "edge_cache_disk_tier_up" => {
                        totals.disk_tier_up = metric.get_gauge().get_value() > 0.0
                    }
                    _ => {}
                }
            }
        }
        totals
    }

    /// The load since `before`, `secs` ago.
    pub fn load(&self, before: &Totals, secs: f64, memory_tier_bytes: u64) -> serde_json::Value {
        let requests = self.requests.saturating_sub(before.requests);
        let share = |n: u64| {
            if requests == 0 {
                0.0
            } else {
                n as f64 / requests as f64
            }
        };
        json!({
            "requests_total": self.requests,
            "response_bytes_total": self.response_bytes,
            "requests_per_sec": if secs > 0.0 { requests as f64 / secs } else { 0.0 },
            "hit_ratio": share(self.hits.saturating_sub(before.hits)),
            "error_ratio": share(self.errors.saturating_sub(before.errors)),
            "open_connections": self.open_connections,
            "memory_tier_bytes": memory_tier_bytes,
            "disk_tier_up": self.disk_tier_up,
        })
    }
}

/// Reports every `heartbeat_secs` until `stop` turns true.
pub async fn report_forever(
    control: ControlConfig,
    identity: Identity,
    edge: Arc<Edge>,
    mut stop: watch::Receiver<bool>,
) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!(
        "{}/v1/edges/{}",
        control.url.trim_end_matches('/'),
        identity.name
    );
    let secret = control.registration_secret.unwrap_or_default();
    let every = Duration::from_secs(control.heartbeat_secs);
    let mut before = Totals::default();
    let mut last = tokio::time::Instant::now();
    let mut refused_before = false;
    loop {
        let totals = Totals::read(&edge.metrics.registry);
        let now = tokio::time::Instant::now();
        let load = totals.load(
            &before,
            (now - last).as_secs_f64(),
            edge.storage().memory_usage(),
        );
        (before, last) = (totals, now);
        let body = json!({
            "region": identity.region,
            "urls": identity.urls,
            "metrics_target": identity.metrics_target,
            "capacity": identity.capacity,
            "load": load,
        });
        let request = http::Request::put(&url)
            .header(http::header::AUTHORIZATION, format!("Bearer {secret}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())));
        let sent = match request {
            Ok(request) => {
                tokio::time::timeout(every.max(Duration::from_secs(2)), client.request(request))
                    .await
            }
            Err(e) => {
                tracing::error!(error = %e, url = %url, "cannot build the report to the control plane");
                return;
            }
        };
        match sent {
            Ok(Ok(response)) if response.status().is_success() => {
                if refused_before {
                    tracing::info!(url = %url, "the control plane accepts this edge's reports again");
                }
                refused_before = false;
            }
            Ok(Ok(response)) => {
                let status = response.status();
                let reason = match tokio::time::timeout(every, response.into_body().collect()).await
                {
                    Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).trim().to_string(),
                    _ => String::new(),
                };
                // Said once per refusal spell: the next reports would say the same.
                if !refused_before {
                    tracing::error!(url = %url, status = status.as_u16(), reason = %reason, "the control plane refused this edge's report");
                }
                refused_before = true;
            }
            Ok(Err(e)) => tracing::warn!(url = %url, error = %e, "cannot reach the control plane"),
            Err(_) => {
                tracing::warn!(url = %url, "the control plane did not answer the report in time")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_rates_and_ratios_since_the_previous_report() {
        let before = Totals {
            requests: 100,
            hits: 50,
            errors: 1,
            ..Totals::default()
        };
        let now = Totals {
            requests: 300,
            hits: 200,
            errors: 11,
            response_bytes: 4096,
            open_connections: 3,
            disk_tier_up: true,
        };
        let load = now.load(&before, 4.0, 1 << 20);
        assert_eq!(load["requests_total"], 300);
        assert_eq!(load["requests_per_sec"], 50.0);
        assert_eq!(load["hit_ratio"], 0.75);
        assert_eq!(load["error_ratio"], 0.05);
        assert_eq!(load["disk_tier_up"], true);
        // No requests since: no ratio, no division by zero.
        assert_eq!(now.load(&now, 0.0, 0)["hit_ratio"], 0.0);
    }
}
