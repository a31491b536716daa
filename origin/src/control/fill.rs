//! The proactive fill plan: what an edge should hold before its viewers ask, as Open Connect's appliances are
//! filled each night from predicted popularity. `GET /v1/edges/<name>/fill-plan?budget_bytes=N` (the fleet's
//! registration secret) ranks the titles by recent plays (the recommender's trending: viewers' plays, decayed
//! by age), then by the catalog's popularity, and takes whole titles in that order while their files fit the
//! edge's budget; a title larger than what is left is skipped and a smaller one after it may still fit. A
//! title's files are the ones a player fetches through the edge (manifests, init segments, subtitles, media
//! segments; not artwork, which the API serves), listed in that order per title, so an edge that runs out of
//! quiet hours part-way holds the most popular titles whole and the next one's manifests and first files.
//!
//! [`Planner`] is the pure part (titles offered in rank order, files in, the plan out); [`plan`] reads the
//! ranking and each title's files: the catalog's record of them (`origin ingest` keeps one), else the store's
//! listing of the title's folder.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::json;

use crate::control::api::{ApiError, ApiService, shown};
use crate::control::catalog::AssetMeta;

/// Titles considered at most (in rank order) for one plan: a plan is read once a night per edge, and each
/// title considered costs two catalog reads.
pub const MAX_TITLES_CONSIDERED: usize = 5_000;
/// Files listed at most in one plan (about 100 bytes of JSON each).
pub const MAX_OBJECTS: usize = 200_000;
/// The largest budget an edge may ask a plan for: 1 PiB.
pub const MAX_BUDGET_BYTES: u64 = 1 << 50;

/// One file of the plan: the path the edge asks its upstream for (`/<store key>`), and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedObject {
    pub path: String,
    pub bytes: u64,
}

/// One title of the plan: its files' count and bytes, and the plays that ranked it (`None`: ranked by the
/// catalog's popularity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedTitle {
    pub slug: String,
    pub bytes: u64,
    pub objects: usize,
    pub plays: Option<f32>,
}

/// Builds a plan from titles offered in rank order.
#[derive(Debug)]
pub struct Planner {
    budget: u64,
    used: u64,
    titles: Vec<PlannedTitle>,
    objects: Vec<PlannedObject>,
    considered: usize,
    seen: HashSet<String>,
}

/// The order of a title's files in the plan: what a player asks first, first. `None`: not fetched through the
/// edge.
fn file_order(kind: &str) -> Option<u8> {
    match kind {
        "manifest" => Some(0),
        "init" => Some(1),
        "subtitles" => Some(2),
        "segment" => Some(3),
        _ => None,
    }
}

impl Planner {
    pub fn new(budget: u64) -> Self {
        Planner {
            budget,
            used: 0,
            titles: Vec::new(),
            objects: Vec::new(),
            considered: 0,
            seen: HashSet::new(),
        }
    }

    /// Whether offering more titles is pointless: the budget is spent, or the plan is as long as it may be.
    pub fn is_done(&self) -> bool {
        self.used >= self.budget
            || self.considered >= MAX_TITLES_CONSIDERED
            || self.objects.len() >= MAX_OBJECTS
    }

    /// Offers the next title in rank order with its files; it is taken whole when its edge-served files fit
    /// in what is left of the budget (and of [`MAX_OBJECTS`]). A title offered twice counts once. Returns
    /// whether it was taken.
    pub fn offer(&mut self, slug: &str, plays: Option<f32>, assets: &[AssetMeta]) -> bool {
        if self.is_done() || !self.seen.insert(slug.to_string()) {
            return false;
        }
        self.considered += 1;
        let mut files: Vec<(u8, &AssetMeta)> = assets
            .iter()
            .filter(|asset| asset.bytes >= 0)
            .filter_map(|asset| file_order(&asset.kind).map(|order| (order, asset)))
            .collect();
        if files.is_empty() {
            return false;
        }
        files.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.key.cmp(&y.key)));
        let bytes: u64 = files.iter().map(|(_, asset)| asset.bytes as u64).sum();
        if bytes > self.budget - self.used || self.objects.len() + files.len() > MAX_OBJECTS {
            return false;
        }
        self.used += bytes;
        self.objects
            .extend(files.iter().map(|(_, asset)| PlannedObject {
                path: format!("/{}", asset.key.trim_start_matches('/')),
                bytes: asset.bytes as u64,
            }));
        self.titles.push(PlannedTitle {
            slug: slug.to_string(),
            bytes,
            objects: files.len(),
            plays,
        });
        true
    }

    /// The plan: its titles and files in rank order, and the bytes they take.
    pub fn finish(self) -> (Vec<PlannedTitle>, Vec<PlannedObject>, u64) {
        (self.titles, self.objects, self.used)
    }
}

/// `GET /v1/edges/<name>/fill-plan?budget_bytes=N`: the plan for an edge that may hold `N` bytes.
pub(crate) async fn plan(
    api: &ApiService,
    name: &str,
    query: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    let mut budget = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "budget_bytes" => {
                budget = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=MAX_BUDGET_BYTES).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad(format!(
                                "budget_bytes must be 1 to {MAX_BUDGET_BYTES}, not `{}`",
                                shown(&value)
                            ))
                        })?,
                )
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{}`",
                    shown(other)
                )));
            }
        }
    }
    let budget = budget.ok_or_else(|| ApiError::bad("budget_bytes is required"))?;

    let trending = api
        .recommender()
        .map(|model| model.trending(MAX_TITLES_CONSIDERED))
        .unwrap_or_default();
    let popular = api
        .catalog
        .popular(None, MAX_TITLES_CONSIDERED as i64)
        .await
        .map_err(ApiError::internal)?;
    let ranked = trending
        .into_iter()
        .map(|(slug, plays)| (slug, Some(plays)))
        .chain(popular.into_iter().map(|title| (title.slug, None)));

    let mut planner = Planner::new(budget);
    for (slug, plays) in ranked {
        if planner.is_done() {
            break;
        }
        // A title taken down since the model was trained has no files to offer.
        let Some(assets) = api
            .catalog
            .assets(&slug)
            .await
            .map_err(ApiError::internal)?
        else {
            continue;
        };
        let assets = match (&api.store, assets.is_empty()) {
            (Some(store), true) => stored_files(store, &slug)
                .await
                .map_err(ApiError::internal)?,
            _ => assets,
        };
        planner.offer(&slug, plays, &assets);
    }
    let (titles, objects, bytes) = planner.finish();
    tracing::info!(
        edge = name,
        budget,
        bytes,
        titles = titles.len(),
        objects = objects.len(),
        "fill plan"
    );
    Ok(json!({
        "edge": name,
        "budget_bytes": budget,
        "bytes": bytes,
        "titles": titles,
        "objects": objects,
    }))
}

/// A title's files as the store lists them under `titles/<slug>/`, for a title registered from the store's
/// `meta.json` (only `origin ingest` records each file in the catalog). Listing stops past [`MAX_OBJECTS`].
async fn stored_files(
    store: &crate::media::store::Store,
    slug: &str,
) -> anyhow::Result<Vec<AssetMeta>> {
    use futures::StreamExt;
    let prefix = object_store::path::Path::from(format!("titles/{slug}"));
    let mut listing = store.inner().list(Some(&prefix));
    let mut files = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let key = meta.location.to_string();
        files.push(AssetMeta {
            kind: AssetMeta::kind_of(&key).to_string(),
            bytes: i64::try_from(meta.size).unwrap_or(i64::MAX),
            key,
        });
        if files.len() > MAX_OBJECTS {
            break;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(key: &str, kind: &str, bytes: i64) -> AssetMeta {
        AssetMeta {
            key: key.into(),
            kind: kind.into(),
            bytes,
        }
    }

    fn title(slug: &str, segment_bytes: i64) -> Vec<AssetMeta> {
        vec![
            asset(
                &format!("titles/{slug}/v0/seg_2.m4s"),
                "segment",
                segment_bytes,
            ),
            asset(&format!("titles/{slug}/poster.jpg"), "artwork", 50_000),
            asset(&format!("titles/{slug}/v0/init.mp4"), "init", 10),
            asset(
                &format!("titles/{slug}/v0/seg_1.m4s"),
                "segment",
                segment_bytes,
            ),
            asset(&format!("titles/{slug}/en.vtt"), "subtitles", 20),
            asset(&format!("titles/{slug}/master.m3u8"), "manifest", 30),
            asset(&format!("titles/{slug}/meta.json"), "other", 40),
        ]
    }

    #[test]
    fn a_title_is_taken_whole_with_its_edge_files_in_the_order_a_player_asks() {
        let mut planner = Planner::new(1_000);
        assert!(planner.offer("a", Some(3.0), &title("a", 100)));
        let (titles, objects, bytes) = planner.finish();
        let paths: Vec<&str> = objects.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/titles/a/master.m3u8",
                "/titles/a/v0/init.mp4",
                "/titles/a/en.vtt",
                "/titles/a/v0/seg_1.m4s",
                "/titles/a/v0/seg_2.m4s",
            ]
        );
        // 30 + 10 + 20 + 2 × 100: the artwork and meta.json are not the edge's.
        assert_eq!(bytes, 260);
        assert_eq!(
            titles,
            [PlannedTitle {
                slug: "a".into(),
                bytes: 260,
                objects: 5,
                plays: Some(3.0),
            }]
        );
    }

    #[test]
    fn titles_that_do_not_fit_are_skipped_and_smaller_ones_after_them_taken() {
        // a: 260 bytes, b: 2,060, c: 160, d: 60 (budget 500).
        let mut planner = Planner::new(500);
        assert!(planner.offer("a", None, &title("a", 100)));
        assert!(!planner.offer("b", None, &title("b", 1_000)));
        assert!(planner.offer("c", None, &title("c", 50)));
        assert!(!planner.offer("a", None, &title("a", 100)), "offered twice");
        assert!(planner.offer("d", None, &title("d", 0)));
        assert!(!planner.offer("e", None, &[asset("titles/e/x.jpg", "artwork", 1)]));
        let (titles, objects, bytes) = planner.finish();
        let slugs: Vec<&str> = titles.iter().map(|t| t.slug.as_str()).collect();
        assert_eq!(slugs, ["a", "c", "d"]);
        assert_eq!(bytes, 260 + 160 + 60);
        assert_eq!(objects.len(), 15);
    }

    #[test]
    fn a_spent_budget_or_a_full_plan_ends_the_offers() {
        let mut planner = Planner::new(260);
        assert!(planner.offer("a", None, &title("a", 100)));
        assert!(planner.is_done());
        assert!(!planner.offer("b", None, &title("b", 0)));

        let mut planner = Planner::new(u64::MAX);
        let many: Vec<AssetMeta> = (0..MAX_OBJECTS - 1)
            .map(|i| asset(&format!("t/big/{i}.m4s"), "segment", 1))
            .collect();
        assert!(planner.offer("big", None, &many));
        assert!(
            !planner.offer("two", None, &title("two", 1)),
            "5 files do not fit"
        );
        assert!(planner.offer("one", None, &[asset("t/one/x.m3u8", "manifest", 1)]));
        assert!(planner.is_done());
    }

    #[test]
    fn considering_stops_after_the_most_titles() {
        let mut planner = Planner::new(u64::MAX);
        for i in 0..MAX_TITLES_CONSIDERED {
            assert!(!planner.is_done());
            planner.offer(&format!("t{i}"), None, &[]);
        }
        assert!(planner.is_done());
    }
}
