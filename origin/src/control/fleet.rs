//! The fleet of edges the control plane steers players to. Each edge reports itself with one authenticated
//! `PUT /v1/edges/<name>` of its whole record (region, public URLs, metrics address, load) at start and then
//! every few seconds; an edge not heard from within `fleet.heartbeat_timeout_secs` is down, and its next report
//! brings it back. The record lives in memory: after a restart of the control plane, the edges' next reports
//! rebuild it. Pure state with time passed in; the API and the sweep task are the I/O around it.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::control::steering::Candidate;

/// What an edge says of itself.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdgeReport {
    /// The region it serves (`eu-west`, `us-east`, …).
    pub region: String,
    /// Base URLs players reach it at (`https://edge1.example:8443`).
    pub urls: Vec<String>,
    /// `host:port` of its admin listener, where Prometheus scrapes `/metrics`.
    #[serde(default)]
    pub metrics_target: Option<String>,
    /// Connections it serves at once (`limits.max_connections`).
    #[serde(default)]
    pub capacity: u64,
    #[serde(default)]
    pub load: EdgeLoad,
}

/// An edge's load since its previous report, and its totals.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeLoad {
    pub requests_total: u64,
    pub response_bytes_total: u64,
    /// Requests per second since the previous report.
    pub requests_per_sec: f64,
    /// Share of the requests since the previous report answered from cache.
    pub hit_ratio: f64,
    /// Share of the requests since the previous report answered with a 5xx.
    pub error_ratio: f64,
    pub open_connections: u64,
    pub memory_tier_bytes: u64,
    pub disk_tier_up: bool,
}

/// Whether `text` may name an edge or a region: 1 to 64 letters, digits, `-`, `_` or `.` (so it is also a valid
/// Content Steering pathway id).
pub fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why a report is refused (the API answers 400 with it).
pub fn check_report(name: &str, report: &EdgeReport) -> Result<(), String> {
    let token = is_name;
    if !token(name) {
        return Err("an edge's name is 1 to 64 letters, digits, `-`, `_` or `.`".into());
    }
    if !token(&report.region) {
        return Err("`region` is 1 to 64 letters, digits, `-`, `_` or `.`".into());
    }
    if report.urls.is_empty() || report.urls.len() > 8 {
        return Err("`urls` lists 1 to 8 base URLs".into());
    }
    for url in &report.urls {
        let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let base = matches!(parsed.scheme(), "https" | "http")
            && parsed.host().is_some()
            && parsed.path() == "/"
            && parsed.query().is_none()
            && url.len() <= 256;
        if !base {
            return Err(format!(
                "`{url}` must be a base URL such as https://edge.example:8443"
            ));
        }
    }
    if let Some(target) = &report.metrics_target
        && target.parse::<std::net::SocketAddr>().is_err()
        && !target
            .rsplit_once(':')
            .is_some_and(|(host, port)| token(host) && port.parse::<u16>().is_ok())
    {
        return Err(format!("`metrics_target` `{target}` must be host:port"));
    }
    Ok(())
}

struct Known {
    report: EdgeReport,
    last_seen: Instant,
    /// Whether the sweep last found it healthy (to log each change once).
    was_healthy: bool,
    /// Players steered to it since its last report (which counts them among its connections, if they came).
    steered_since_report: u64,
}

/// The edges known, by name.
pub struct Fleet {
    timeout: Duration,
    edges: RwLock<BTreeMap<String, Known>>,
}

/// One edge as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeState {
    pub name: String,
    pub healthy: bool,
    pub last_seen_secs: u64,
    #[serde(flatten)]
    pub report: EdgeReport,
}

/// A change of health the sweep found.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Down { name: String, region: String },
    Up { name: String, region: String },
}

/// Most edges known at once (a report past it is refused).
pub const MAX_EDGES: usize = 10_000;

impl Fleet {
    pub fn new(timeout: Duration) -> Self {
        Fleet {
            timeout,
            edges: RwLock::new(BTreeMap::new()),
        }
    }

    /// Records a report; returns whether the edge is new.
    pub fn report(&self, name: &str, report: EdgeReport, now: Instant) -> Result<bool, String> {
        check_report(name, &report)?;
        let mut edges = self.edges.write().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = edges.get_mut(name) {
            known.report = report;
            known.last_seen = now;
            known.steered_since_report = 0;
            return Ok(false);
        }
        if edges.len() >= MAX_EDGES {
            return Err(format!("the fleet holds {MAX_EDGES} edges at most"));
        }
        edges.insert(
            name.to_string(),
            Known {
                report,
                last_seen: now,
                was_healthy: false,
                steered_since_report: 0,
            },
        );
        Ok(true)
    }

    fn healthy(&self, known: &Known, now: Instant) -> bool {
        now.saturating_duration_since(known.last_seen) <= self.timeout
    }

    /// Every edge known, by name.
    pub fn list(&self, now: Instant) -> Vec<EdgeState> {
        let edges = self.edges.read().unwrap_or_else(|p| p.into_inner());
        edges
            .iter()
            .map(|(name, known)| EdgeState {
                name: name.clone(),
                healthy: self.healthy(known, now),
                last_seen_secs: now.saturating_duration_since(known.last_seen).as_secs(),
                report: known.report.clone(),
            })
            .collect()
    }

    /// The healthy edges steering may choose, by name, with their load: the connections open at their last
    /// report plus the players steered to them since.
    pub fn candidates(&self, now: Instant) -> Vec<Candidate> {
        let edges = self.edges.read().unwrap_or_else(|p| p.into_inner());
        edges
            .iter()
            .filter(|(_, known)| self.healthy(known, now))
            .map(|(name, known)| Candidate {
                name: name.clone(),
                region: known.report.region.clone(),
                url: known.report.urls[0].clone(),
                capacity: known.report.capacity,
                load: known
                    .report
                    .load
                    .open_connections
                    .saturating_add(known.steered_since_report),
            })
            .collect()
    }

    /// Counts a player sent to `name` until its next report.
    pub fn steered(&self, name: &str) {
        let mut edges = self.edges.write().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = edges.get_mut(name) {
            known.steered_since_report = known.steered_since_report.saturating_add(1);
        }
    }

    /// Finds the edges whose health changed since the last sweep.
    pub fn sweep(&self, now: Instant) -> Vec<Change> {
        let mut edges = self.edges.write().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        for (name, known) in edges.iter_mut() {
            let healthy = now.saturating_duration_since(known.last_seen) <= self.timeout;
            if healthy != known.was_healthy {
                known.was_healthy = healthy;
                let (name, region) = (name.clone(), known.report.region.clone());
                changes.push(if healthy {
                    Change::Up { name, region }
                } else {
                    Change::Down { name, region }
                });
            }
        }
        changes
    }

    /// Edges registered and healthy per region.
    pub fn counts(&self, now: Instant) -> BTreeMap<String, (u64, u64)> {
        let mut counts = BTreeMap::new();
        for edge in self.list(now) {
            let entry = counts.entry(edge.report.region).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += u64::from(edge.healthy);
        }
        counts
    }

    /// Prometheus's HTTP service discovery: one target group per edge that says where its metrics are.
    pub fn prometheus_targets(&self, now: Instant) -> serde_json::Value {
        let groups: Vec<serde_json::Value> = self
            .list(now)
            .into_iter()
            .filter_map(|edge| {
                let target = edge.report.metrics_target?;
                Some(serde_json::json!({
                    "targets": [target],
                    "labels": {
                        "edge": edge.name,
                        "region": edge.report.region,
                        "healthy": edge.healthy.to_string(),
                    }
                }))
            })
            .collect();
        serde_json::Value::Array(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(region: &str) -> EdgeReport {
        EdgeReport {
            region: region.into(),
            urls: vec!["https://edge1.example:8443".into()],
            metrics_target: Some("127.0.0.1:9901".into()),
            capacity: 100,
            load: EdgeLoad::default(),
        }
    }

    #[test]
    fn an_edge_is_down_after_the_timeout_and_back_with_its_next_report() {
        let fleet = Fleet::new(Duration::from_secs(15));
        let t0 = Instant::now();
        assert_eq!(fleet.report("e1", report("eu"), t0), Ok(true));
        assert_eq!(
            fleet.sweep(t0),
            vec![Change::Up {
                name: "e1".into(),
                region: "eu".into()
            }]
        );
        assert_eq!(
            fleet.report("e1", report("eu"), t0 + Duration::from_secs(5)),
            Ok(false)
        );
        assert!(fleet.sweep(t0 + Duration::from_secs(20)).is_empty());
        let late = t0 + Duration::from_secs(21);
        assert!(!fleet.list(late)[0].healthy);
        assert_eq!(
            fleet.sweep(late),
            vec![Change::Down {
                name: "e1".into(),
                region: "eu".into()
            }]
        );
        assert_eq!(fleet.counts(late)["eu"], (1, 0));
        fleet.report("e1", report("eu"), late).unwrap();
        assert!(fleet.list(late)[0].healthy);
        assert_eq!(fleet.sweep(late).len(), 1);
        assert_eq!(fleet.counts(late)["eu"], (1, 1));
    }

    #[test]
    fn candidates_are_the_healthy_edges_with_their_load_and_the_players_sent_since() {
        let fleet = Fleet::new(Duration::from_secs(15));
        let t0 = Instant::now();
        let mut busy = report("eu");
        busy.load.open_connections = 7;
        fleet.report("e1", busy.clone(), t0).unwrap();
        fleet
            .report("e2", report("us"), t0 + Duration::from_secs(10))
            .unwrap();
        fleet.steered("e1");
        fleet.steered("e1");
        fleet.steered("unknown");
        let now = t0 + Duration::from_secs(20);
        let candidates = fleet.candidates(now);
        assert_eq!(candidates.len(), 1, "e1 is down: {candidates:?}");
        assert_eq!((candidates[0].name.as_str(), candidates[0].load), ("e2", 0));
        fleet.report("e1", busy, now).unwrap();
        fleet.steered("e1");
        let e1 = fleet
            .candidates(now)
            .into_iter()
            .find(|c| c.name == "e1")
            .unwrap();
        assert_eq!(
            (e1.load, e1.capacity, e1.url.as_str()),
            (8, 100, "https://edge1.example:8443")
        );
    }

    #[test]
    fn reports_are_checked() {
        let fleet = Fleet::new(Duration::from_secs(15));
        let now = Instant::now();
        let refused = |name: &str, r: EdgeReport| fleet.report(name, r, now).unwrap_err();
        assert!(refused("", report("eu")).contains("name"));
        assert!(refused("e/1", report("eu")).contains("name"));
        assert!(refused("e1", report("eu west")).contains("region"));
        let mut r = report("eu");
        r.urls = vec![];
        assert!(refused("e1", r).contains("urls"));
        let mut r = report("eu");
        r.urls = vec!["https://edge.example/path".into()];
        assert!(refused("e1", r).contains("base URL"));
        let mut r = report("eu");
        r.urls = vec!["ftp://edge.example".into()];
        assert!(refused("e1", r).contains("base URL"));
        let mut r = report("eu");
        r.metrics_target = Some("not a target".into());
        assert!(refused("e1", r).contains("metrics_target"));
        assert!(fleet.list(now).is_empty());
    }

    #[test]
    fn prometheus_targets_name_each_edge_and_region() {
        let fleet = Fleet::new(Duration::from_secs(15));
        let now = Instant::now();
        fleet.report("e1", report("eu"), now).unwrap();
        let mut hidden = report("us");
        hidden.metrics_target = None;
        fleet.report("e2", hidden, now).unwrap();
        assert_eq!(
            fleet.prometheus_targets(now),
            serde_json::json!([{
                "targets": ["127.0.0.1:9901"],
                "labels": {"edge": "e1", "region": "eu", "healthy": "true"}
            }])
        );
    }
}
