//! A profile's home page as rows of titles — continue watching, top picks, because you watched …, trending, and
//! the profile's favourite genres — the rows of a visitor who is not signed in (trending and the popular titles'
//! genres: the same for everyone, so shared by the edge), and a title's similar titles. Rows come from the recommender last trained
//! (`control::training` swaps it in; serving only reads it); until one is ready, and for what it cannot answer,
//! from the catalog's popularity.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use crate::control::api::{ApiError, ApiService};
use crate::control::catalog::TitleSummary;
use crate::control::viewer::{Watched, watched};

/// Titles per row.
const ROW_TITLES: usize = 20;
/// Genre rows on a home page.
const GENRE_ROWS: usize = 2;

/// What the home page asks of a trained model.
pub trait Recommender: Send + Sync {
    /// A personal top-`n` for a history (oldest first, with when each was watched), leaving out `exclude` and the
    /// history's own titles.
    fn recommend(
        &self,
        history: &[(String, i64)],
        n: usize,
        exclude: &HashSet<String>,
    ) -> Vec<(String, f32)>;
    /// Titles most like `slug`.
    fn similar(&self, slug: &str, n: usize) -> Vec<(String, f32)>;
    /// Most watched lately.
    fn trending(&self, n: usize) -> Vec<(String, f32)>;
}

/// The model serving reads, swapped whole by training.
pub type SharedRecommender = Arc<RwLock<Option<Arc<dyn Recommender>>>>;

impl ApiService {
    pub(crate) fn recommender(&self) -> Option<Arc<dyn Recommender>> {
        self.recommender
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A row's entry for each slug that is still in the catalog, in order, `limit` at most.
    async fn entries(&self, slugs: impl IntoIterator<Item = String>, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for slug in slugs {
            if out.len() >= limit {
                break;
            }
            if let Ok(details) = self.title(&slug).await {
                out.push(entry(&details.summary));
            }
        }
        out
    }

    /// Titles like `slug`: the model's, else the most popular of its first genre.
    pub(crate) async fn similar_titles(&self, slug: &str, limit: usize) -> Vec<Value> {
        let from_model = self
            .recommender()
            .map(|m| m.similar(slug, limit))
            .unwrap_or_default();
        if !from_model.is_empty() {
            return self
                .entries(from_model.into_iter().map(|(s, _)| s), limit)
                .await;
        }
        // No model yet (or it knows nothing of the title): the most popular titles of its genres, then of all.
        let genres = match self.title(slug).await {
            Ok(details) => details.summary.genres.clone(),
            Err(_) => Vec::new(),
        };
        let mut out: Vec<Value> = Vec::new();
        let mut seen: HashSet<String> = HashSet::from([slug.to_string()]);
        let sources = genres.iter().map(|g| Some(g.as_str())).chain([None]);
        for genre in sources {
            if out.len() >= limit {
                break;
            }
            let popular = self
                .catalog
                .popular(genre, limit as i64 + 1)
                .await
                .unwrap_or_default();
            for t in popular {
                if out.len() < limit && seen.insert(t.slug.clone()) {
                    out.push(entry(&t));
                }
            }
        }
        out
    }
}

fn entry(summary: &TitleSummary) -> Value {
    json!({
        "slug": summary.slug,
        "title": summary.title,
        "year": summary.year,
        "genres": summary.genres,
        "artwork": summary.artwork_key.as_ref().map(|_| format!("/v1/titles/{}/artwork", summary.slug)),
    })
}

/// The rows of `profile`'s home page.
pub(crate) async fn rows(
    api: &ApiService,
    profile: &str,
    _now: i64,
) -> Result<Vec<Value>, ApiError> {
    let history_doc = api
        .accounts
        .docs
        .get("history", profile)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("viewer documents: {e}")))?;
    let history = watched(history_doc.as_ref());
    let finished: HashSet<String> = history
        .iter()
        .filter(|w| w.finished)
        .map(|w| w.slug.clone())
        .collect();
    let model = api.recommender();
    let popular = api
        .catalog
        .popular(None, (ROW_TITLES * 3) as i64)
        .await
        .map_err(ApiError::internal)?;
    let mut rows = Vec::new();

    // Continue watching: started, not finished, newest first.
    let started: Vec<&Watched> = history
        .iter()
        .filter(|w| !w.finished && w.position_secs > 0.0)
        .collect();
    let mut continuing = Vec::new();
    for w in started.iter().take(ROW_TITLES) {
        if let Ok(details) = api.title(&w.slug).await {
            let mut item = entry(&details.summary);
            item["position_secs"] = json!(w.position_secs);
            item["duration_secs"] = json!(w.duration_secs);
            continuing.push(item);
        }
    }
    push_row(&mut rows, "continue", "Continue watching", continuing);

    // Top picks: the model's personal top-N, or what is popular that the profile has not finished.
    let oldest_first: Vec<(String, i64)> = history
        .iter()
        .rev()
        .map(|w| (w.slug.clone(), w.updated))
        .collect();
    let picks: Vec<String> = match &model {
        Some(m) => m
            .recommend(&oldest_first, ROW_TITLES, &finished)
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
        None => Vec::new(),
    };
    let seen: HashSet<&str> = history.iter().map(|w| w.slug.as_str()).collect();
    let picks = if picks.is_empty() {
        popular
            .iter()
            .filter(|t| !seen.contains(t.slug.as_str()))
            .map(|t| t.slug.clone())
            .collect()
    } else {
        picks
    };
    let picks = api.entries(picks, ROW_TITLES).await;
    push_row(&mut rows, "top-picks", "Top picks for you", picks);

    // Because you watched the latest title.
    if let Some(last) = history.first()
        && let Ok(details) = api.title(&last.slug).await
    {
        let similar: Vec<Value> = api
            .similar_titles(&last.slug, ROW_TITLES + finished.len().min(ROW_TITLES))
            .await
            .into_iter()
            .filter(|v| {
                v["slug"]
                    .as_str()
                    .is_some_and(|s| !finished.contains(s) && s != last.slug)
            })
            .take(ROW_TITLES)
            .collect();
        push_row(
            &mut rows,
            &format!("because-{}", last.slug),
            &format!("Because you watched {}", details.summary.title),
            similar,
        );
    }

    push_trending(api, &mut rows, model.as_deref(), &popular).await;

    // The profile's favourite genres (by titles watched), else the most popular titles' genres.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for w in &history {
        if let Ok(details) = api.title(&w.slug).await {
            for g in &details.summary.genres {
                *counts.entry(g.clone()).or_default() += 1;
            }
        }
    }
    if counts.is_empty() {
        counts = popular_genres(&popular);
    }
    push_genres(api, &mut rows, counts).await?;
    Ok(rows)
}

/// The home rows of a visitor who is not signed in: trending, then the genres of the most popular titles. No
/// viewer's data is read, so every visitor gets the same rows (`GET /v1/home` is shared by the edge).
pub(crate) async fn anonymous_rows(api: &ApiService) -> Result<Vec<Value>, ApiError> {
    let popular = api
        .catalog
        .popular(None, (ROW_TITLES * 3) as i64)
        .await
        .map_err(ApiError::internal)?;
    let mut rows = Vec::new();
    push_trending(api, &mut rows, api.recommender().as_deref(), &popular).await;
    push_genres(api, &mut rows, popular_genres(&popular)).await?;
    Ok(rows)
}

/// Trending: the model's recent plays, else the catalog's popularity.
async fn push_trending(
    api: &ApiService,
    rows: &mut Vec<Value>,
    model: Option<&dyn Recommender>,
    popular: &[TitleSummary],
) {
    let trending: Vec<String> = model
        .map(|m| m.trending(ROW_TITLES))
        .unwrap_or_default()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let trending = if trending.is_empty() {
        popular.iter().map(|t| t.slug.clone()).collect()
    } else {
        trending
    };
    let trending = api.entries(trending, ROW_TITLES).await;
    push_row(rows, "trending", "Trending now", trending);
}

/// How many of the popular titles have each genre.
fn popular_genres(popular: &[TitleSummary]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in popular {
        for g in &t.genres {
            *counts.entry(g.clone()).or_default() += 1;
        }
    }
    counts
}

/// A row of the most popular titles of each of the [`GENRE_ROWS`] genres counted most (ties by name).
async fn push_genres(
    api: &ApiService,
    rows: &mut Vec<Value>,
    counts: HashMap<String, usize>,
) -> Result<(), ApiError> {
    let mut genres: Vec<(String, usize)> = counts.into_iter().collect();
    genres.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (genre, _) in genres.into_iter().take(GENRE_ROWS) {
        let titles = api
            .catalog
            .popular(Some(&genre), ROW_TITLES as i64)
            .await
            .map_err(ApiError::internal)?;
        let items: Vec<Value> = titles.iter().map(entry).collect();
        push_row(
            rows,
            &format!("genre-{}", genre.to_lowercase().replace(' ', "-")),
            &genre,
            items,
        );
    }
    Ok(())
}

fn push_row(rows: &mut Vec<Value>, id: &str, title: &str, items: Vec<Value>) {
    if !items.is_empty() {
        rows.push(json!({ "id": id, "title": title, "items": items }));
    }
}
