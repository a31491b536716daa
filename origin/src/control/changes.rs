//! Catalog changes and what follows them. Whoever changes the catalog (`origin ingest`, `origin takedown`)
//! publishes a `CatalogChange` to the bus's catalog topic once the database holds it; each control-plane
//! instance consumes the topic in its own group and keeps its derived state in step:
//! - the search index is rebuilt from the catalog (a new title is searchable within a second, a taken-down one
//!   gone);
//! - the cached title details of the changed titles are dropped;
//! - the media origin's set of taken-down titles (answered 410) follows;
//! - the edges' change feed is woken: each edge long-polls `GET /v1/edges/<name>/changes?after=<seq>` and purges
//!   `/titles/<slug>/` for every takedown after the last one it applied. The feed reads the catalog's takedown
//!   log, so an edge that was down, or restarts with a disk cache, catches up from its own sequence number.
//!
//! Every consumer is idempotent (a rebuild, a set insert, a purge), so the bus delivering a change twice is
//! harmless; an instance that was down resumes from its group's committed offset.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::bus::{Bus, StartAt, TOPIC_CATALOG};
use crate::control::api::{ApiError, ApiService, TitleCache};
use crate::control::catalog::Catalog;
use crate::control::search::{SearchIndex, SharedIndex};
use crate::media::handler::TakenDown;

/// What happened to a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Registered or registered again (ingest, a metadata edit).
    Upserted,
    /// Withdrawn from viewers.
    TakenDown,
    /// Brought back after a takedown.
    Restored,
}

/// One change to the catalog, as published on the catalog topic (JSON, keyed by slug).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogChange {
    pub kind: ChangeKind,
    pub slug: String,
    /// When the database took the change, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The takedown log's sequence number, for takedowns and restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
}

/// Publishes a change the database already holds.
pub async fn publish(bus: &Bus, change: &CatalogChange) -> anyhow::Result<()> {
    let value = serde_json::to_vec(change).expect("serializable");
    bus.publish(
        TOPIC_CATALOG,
        vec![(Bytes::from(change.slug.clone()), Bytes::from(value))],
    )
    .await
}

/// Wakes the edges' long polls: the last takedown sequence number this instance knows of.
#[derive(Clone)]
pub struct ChangeFeed {
    latest: Arc<watch::Sender<i64>>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed {
            latest: Arc::new(watch::channel(0).0),
        }
    }
}

impl ChangeFeed {
    pub fn advance(&self, seq: i64) {
        self.latest.send_if_modified(|latest| {
            let newer = seq > *latest;
            *latest = (*latest).max(seq);
            newer
        });
    }

    /// Waits until the feed passes `after` or `wait` elapses.
    async fn wait_past(&self, after: i64, wait: Duration) {
        let mut rx = self.latest.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|latest| *latest > after)).await;
    }
}

/// Takedowns (or restores) one answer of the feed carries at most.
const FEED_PAGE: i64 = 100;
/// The longest a feed request is held open.
const MAX_FEED_WAIT: Duration = Duration::from_secs(30);

/// `GET /v1/edges/<name>/changes?after=<seq|latest>&wait=<secs>`: the takedowns after `after`, waiting up to
/// `wait` seconds (at most 30) for one when there is none yet (the same for every edge). `after=latest` answers at once with no changes
/// and the sequence number to continue from (an edge with nothing cached has nothing to catch up on).
pub(crate) async fn feed(
    api: &ApiService,
    query: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    let (mut after, mut wait) = (None, Duration::ZERO);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "after" if value == "latest" => after = Some(-1),
            "after" => {
                after = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| {
                            ApiError::bad("after must be a sequence number (0 or more) or `latest`")
                        })?,
                )
            }
            "wait" => {
                wait = value
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .ok()
                    .filter(|w| *w <= MAX_FEED_WAIT)
                    .ok_or_else(|| ApiError::bad("wait must be 0 to 30 seconds"))?
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{}`",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    let after =
        after.ok_or_else(|| ApiError::bad("after is required (a sequence number or `latest`)"))?;
    if after < 0 {
        let next = api
            .catalog
            .last_takedown_seq()
            .await
            .map_err(ApiError::internal)?;
        return Ok(serde_json::json!({ "changes": [], "next": next }));
    }
    let mut changes = api
        .catalog
        .takedowns_after(after, FEED_PAGE)
        .await
        .map_err(ApiError::internal)?;
    if changes.is_empty() && !wait.is_zero() {
        // Woken by this instance's consumer; the catalog stays the truth (another instance may have taken the
        // change), so it is read again either way.
        api.changes.wait_past(after, wait).await;
        changes = api
            .catalog
            .takedowns_after(after, FEED_PAGE)
            .await
            .map_err(ApiError::internal)?;
    }
    let next = changes.last().map_or(after, |(seq, _, _)| *seq);
    let changes: Vec<serde_json::Value> = changes
        .into_iter()
        .map(|(seq, slug, taken_down)| {
            serde_json::json!({
                "seq": seq,
                "kind": if taken_down { "taken_down" } else { "restored" },
                "slug": slug,
                "purge": taken_down.then(|| format!("/titles/{slug}/")),
            })
        })
        .collect();
    Ok(serde_json::json!({ "changes": changes, "next": next }))
}

/// What a control-plane instance derives from the catalog.
pub struct Derived {
    pub catalog: Arc<Catalog>,
    /// Counts the changes applied (`control_catalog_changes_applied_total`).
    pub applied: prometheus::IntCounter,
    pub search: SharedIndex,
    pub details: TitleCache,
    pub taken_down: TakenDown,
    pub feed: ChangeFeed,
}

/// Records a catalog-change batch polled at most.
const BATCH: usize = 256;

/// Brings the derived state up to date with the catalog, then follows the catalog topic in group `group` (one
/// group per instance: every instance keeps its own derived state).
pub async fn spawn_consumers(bus: &Bus, group: &str, derived: Derived) -> anyhow::Result<()> {
    // Joined first, then the state read: a change landing in between is seen twice, never missed.
    let consumer = bus
        .subscribe(group, &[TOPIC_CATALOG], StartAt::Earliest)
        .await?;
    derived.refresh(&[]).await?;
    tokio::spawn(follow(consumer, derived));
    Ok(())
}

impl Derived {
    /// Reads the takedowns and rebuilds the search index from the catalog, and drops the cached details of
    /// `changed` (of every title when `changed` is empty).
    async fn refresh(&self, changed: &[String]) -> anyhow::Result<()> {
        // Dropped first: the database already holds the change, so from here on a title is read afresh, and
        // nobody finds it gone from search while its old details are still served.
        self.details
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drop_titles(changed);
        let taken_down = self.catalog.taken_down().await?;
        *self.taken_down.write().unwrap_or_else(|e| e.into_inner()) =
            taken_down.into_iter().collect();
        let docs = self.catalog.search_docs().await?;
        let index = SearchIndex::build(&docs).map_err(|e| anyhow::anyhow!("search index: {e}"))?;
        tracing::info!(titles = index.len(), "search index rebuilt");
        *self.search.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        self.feed.advance(self.catalog.last_takedown_seq().await?);
        Ok(())
    }
}

async fn follow(mut consumer: crate::bus::Consumer, derived: Derived) {
    loop {
        let records = consumer
            .poll_retrying(BATCH, Duration::from_secs(1), "catalog changes")
            .await;
        if records.is_empty() {
            continue;
        }
        let mut changed: Vec<String> = Vec::new();
        for record in &records {
            match serde_json::from_slice::<CatalogChange>(&record.value) {
                Ok(change) => {
                    tracing::info!(slug = %change.slug, kind = ?change.kind, "catalog change");
                    changed.push(change.slug);
                }
                Err(e) => tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    error = %e,
                    "a catalog-topic record is not a change; skipped"
                ),
            }
        }
        changed.sort();
        changed.dedup();
        if changed.is_empty() {
            let _ = consumer.commit().await;
            continue;
        }
        // Committed only once the state follows. The refresh reads the whole catalog, so retrying it is as
        // good as reading the records again.
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = derived.refresh(&changed).await {
            tracing::warn!(error = %e, "applying catalog changes failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        derived.applied.inc_by(changed.len() as u64);
        if let Err(e) = consumer.commit().await {
            tracing::warn!(error = %e, "committing catalog-change offsets failed");
        }
    }
}
