//! The fleet of edges the control plane steers players to. Each edge reports itself with one authenticated
//! `PUT /v1/edges/<name>` of its whole record (region, public URLs, metrics address, load) at start and then
//! every few seconds, to whichever instance of the control plane its request reaches; an edge not heard from
//! within `fleet.heartbeat_timeout_secs` is down, and its next report brings it back.
//!
//! The reports are kept in the database ([`EdgeReports`], table `edge_reports`), so an edge reporting to one
//! instance is seen by all; each instance reads them all again every second into its [`Fleet`], the in-memory
//! copy playback places viewers from (no query per request). The players an instance sent to an edge since its
//! last report are counted by that instance alone (a load estimate between reports, safe to lose). [`Fleet`] is
//! pure state with time (unix milliseconds) passed in; the API and the sweep task are the I/O around it.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

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
    /// When its last report arrived, unix milliseconds (at whichever instance took it).
    last_seen: i64,
    /// Whether the sweep last found it healthy (to log each change once).
    was_healthy: bool,
    /// Players steered to it since its last report (which counts them among its connections, if they came).
    steered_since_report: u64,
}

/// The edges known, by name.
pub struct Fleet {
    timeout_ms: i64,
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
            timeout_ms: timeout.as_millis().min(i64::MAX as u128) as i64,
            edges: RwLock::new(BTreeMap::new()),
        }
    }

    /// Records a report; returns whether the edge is new.
    pub fn report(&self, name: &str, report: EdgeReport, now: i64) -> Result<bool, String> {
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

    /// Takes the reports as the database holds them (every instance's): a newer report replaces the one known
    /// (and the count of players sent to the edge since); an older one, or the same, changes nothing.
    pub fn merge(&self, reports: Vec<(String, EdgeReport, i64)>) {
        let mut edges = self.edges.write().unwrap_or_else(|p| p.into_inner());
        for (name, report, seen) in reports {
            let room = edges.len() < MAX_EDGES;
            match edges.get_mut(&name) {
                Some(known) if known.last_seen >= seen => {}
                Some(known) => {
                    known.report = report;
                    known.last_seen = seen;
                    known.steered_since_report = 0;
                }
                None if room => {
                    edges.insert(
                        name,
                        Known {
                            report,
                            last_seen: seen,
                            was_healthy: false,
                            steered_since_report: 0,
                        },
                    );
                }
                None => {}
            }
        }
    }

    /// Milliseconds since the edge's last report (0 for a report stamped by a clock ahead of this one).
    fn silent_ms(known: &Known, now: i64) -> i64 {
        now.saturating_sub(known.last_seen).max(0)
    }

    fn healthy(&self, known: &Known, now: i64) -> bool {
        Self::silent_ms(known, now) <= self.timeout_ms
    }

    /// Every edge known, by name.
    pub fn list(&self, now: i64) -> Vec<EdgeState> {
        let edges = self.edges.read().unwrap_or_else(|p| p.into_inner());
        edges
            .iter()
            .map(|(name, known)| EdgeState {
                name: name.clone(),
                healthy: self.healthy(known, now),
                last_seen_secs: (Self::silent_ms(known, now) / 1000) as u64,
                report: known.report.clone(),
            })
            .collect()
    }

    /// The healthy edges steering may choose, by name, with their load: the connections open at their last
    /// report plus the players steered to them since.
    pub fn candidates(&self, now: i64) -> Vec<Candidate> {
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
    pub fn sweep(&self, now: i64) -> Vec<Change> {
        let mut edges = self.edges.write().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        let timeout = self.timeout_ms;
        for (name, known) in edges.iter_mut() {
            let healthy = Self::silent_ms(known, now) <= timeout;
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
    pub fn counts(&self, now: i64) -> BTreeMap<String, (u64, u64)> {
        let mut counts = BTreeMap::new();
        for edge in self.list(now) {
            let entry = counts.entry(edge.report.region).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += u64::from(edge.healthy);
        }
        counts
    }

    /// Prometheus's HTTP service discovery: one target group per edge that says where its metrics are.
    pub fn prometheus_targets(&self, now: i64) -> serde_json::Value {
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

/// What saving a report came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The edge's first report.
    New,
    /// A report of an edge known before.
    Again,
    /// A new edge, refused: the fleet holds [`MAX_EDGES`].
    Full,
}

/// The edges' reports in the database (`edge_reports`: name, the report as JSON text, when it arrived), shared
/// by every instance.
#[derive(Clone)]
pub struct EdgeReports {
    pool: AnyPool,
    queries: crate::metrics::DbQueries,
}

impl EdgeReports {
    pub fn new(pool: AnyPool, queries: crate::metrics::DbQueries) -> EdgeReports {
        EdgeReports { pool, queries }
    }

    /// Keeps `report` as the edge's latest, arrived at `now` (unix ms).
    pub async fn save(&self, name: &str, report: &EdgeReport, now: i64) -> anyhow::Result<Saved> {
        let text = serde_json::to_string(report)?;
        self.queries.count("edge_report_write");
        let updated =
            sqlx::query("UPDATE edge_reports SET report = $1, seen_at = $2 WHERE name = $3")
                .bind(&text)
                .bind(now)
                .bind(name)
                .execute(&self.pool)
                .await?;
        if updated.rows_affected() > 0 {
            return Ok(Saved::Again);
        }
        self.queries.count("edge_report_write");
        let known: i64 = sqlx::query("SELECT COUNT(*) FROM edge_reports")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if known >= MAX_EDGES as i64 {
            return Ok(Saved::Full);
        }
        // Another instance may have taken the edge's first report meanwhile: the later report wins either way.
        self.queries.count("edge_report_write");
        sqlx::query(
            "INSERT INTO edge_reports (name, report, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET report = excluded.report, seen_at = excluded.seen_at",
        )
        .bind(name)
        .bind(&text)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(Saved::New)
    }

    /// Every edge's latest report, with when it arrived (unix ms); a report that no longer reads is skipped.
    pub async fn load(&self) -> anyhow::Result<Vec<(String, EdgeReport, i64)>> {
        self.queries.count("edge_reports_read");
        let rows = sqlx::query("SELECT name, report, seen_at FROM edge_reports ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut reports = Vec::with_capacity(rows.len());
        for row in &rows {
            let name: String = row.try_get(0)?;
            let text: String = row.try_get(1)?;
            match serde_json::from_str::<EdgeReport>(&text) {
                Ok(report) => reports.push((name, report, row.try_get(2)?)),
                Err(e) => {
                    tracing::warn!(edge = %name, error = %e, "an edge's stored report does not read; skipped")
                }
            }
        }
        Ok(reports)
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
        let t0 = 1_700_000_000_000i64;
        assert_eq!(fleet.report("e1", report("eu"), t0), Ok(true));
        assert_eq!(
            fleet.sweep(t0),
            vec![Change::Up {
                name: "e1".into(),
                region: "eu".into()
            }]
        );
        assert_eq!(fleet.report("e1", report("eu"), t0 + 5_000), Ok(false));
        assert!(fleet.sweep(t0 + 20_000).is_empty());
        let late = t0 + 21_000;
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
        let t0 = 1_700_000_000_000i64;
        let mut busy = report("eu");
        busy.load.open_connections = 7;
        fleet.report("e1", busy.clone(), t0).unwrap();
        fleet.report("e2", report("us"), t0 + 10_000).unwrap();
        fleet.steered("e1");
        fleet.steered("e1");
        fleet.steered("unknown");
        let now = t0 + 20_000;
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
    fn the_databases_reports_merge_newest_first() {
        let fleet = Fleet::new(Duration::from_secs(15));
        let t0 = 1_700_000_000_000i64;
        let mut busy = report("eu");
        busy.load.open_connections = 7;
        fleet.report("e1", busy, t0).unwrap();
        fleet.steered("e1");
        // Another instance took e2's report, and an older one of e1: e2 appears, e1 keeps its newer report.
        fleet.merge(vec![
            ("e1".into(), report("eu"), t0 - 2_000),
            ("e2".into(), report("us"), t0 - 1_000),
        ]);
        let loads: Vec<(String, u64)> = fleet
            .candidates(t0)
            .into_iter()
            .map(|c| (c.name, c.load))
            .collect();
        assert_eq!(loads, [("e1".to_string(), 8), ("e2".to_string(), 0)]);
        // A newer report of e1 taken elsewhere replaces it, and the players sent since the old one no longer count.
        fleet.merge(vec![("e1".into(), report("eu"), t0 + 3_000)]);
        let e1 = &fleet.candidates(t0 + 3_000)[0];
        assert_eq!((e1.name.as_str(), e1.load), ("e1", 0));
        assert_eq!(fleet.list(t0 + 3_000)[0].last_seen_secs, 0);
        // A clock a little ahead elsewhere: healthy, just reported.
        fleet.merge(vec![("e3".into(), report("eu"), t0 + 60_000)]);
        assert!(
            fleet
                .list(t0)
                .iter()
                .all(|e| e.name != "e3" || (e.healthy && e.last_seen_secs == 0))
        );
    }

    #[test]
    fn reports_are_checked() {
        let fleet = Fleet::new(Duration::from_secs(15));
        let now = 1_700_000_000_000i64;
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
        let now = 1_700_000_000_000i64;
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
