//! Training the recommender in the background: every `recs.train_secs`, and sooner when the playback topic of
//! the bus has carried `recs.retrain_after_plays` new plays (a consumer group of its own per instance). A
//! training reads every profile's viewing history and ratings (`control::docs`) and the catalog's titles, fits
//! the configured model on a blocking thread, and swaps it in whole; serving only ever reads a ready model
//! (`control::home`), and until the first one is ready the home page falls back to the catalog's popularity.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::bus::{Bus, StartAt, TOPIC_PLAYBACK};
use crate::control::catalog::Catalog;
use crate::control::docs::DocStore;
use crate::control::home::{Recommender, SharedRecommender};
use crate::control::viewer::watched;
use crate::metrics::OriginMetrics;
use crate::recs::{Interaction, ItemInfo, Model, ModelKind, TrainParams};

/// Profiles' documents read per training at most (a bound on memory; the newest are not preferred: by id).
const MAX_PROFILES_READ: i64 = 1_000_000;
/// A partial view counts at least this much (a title started is a weak positive, finished a full one).
const MIN_VIEW_WEIGHT: f32 = 0.3;

impl Recommender for Model {
    fn recommend(
        &self,
        history: &[(String, i64)],
        n: usize,
        exclude: &HashSet<String>,
    ) -> Vec<(String, f32)> {
        Model::recommend(self, history, n, exclude)
    }
    fn similar(&self, slug: &str, n: usize) -> Vec<(String, f32)> {
        Model::similar(self, slug, n)
    }
    fn trending(&self, n: usize) -> Vec<(String, f32)> {
        Model::trending(self, n)
    }
}

/// What a training reads: interactions from histories and ratings, and the catalog's titles.
pub async fn gather(
    docs: &DocStore,
    catalog: &Catalog,
) -> anyhow::Result<(Vec<Interaction>, Vec<ItemInfo>)> {
    let items: Vec<ItemInfo> = catalog
        .items()
        .await?
        .into_iter()
        .map(|(item, genres, _)| ItemInfo { item, genres })
        .collect();
    let mut interactions = Vec::new();
    for (profile, doc) in docs.all("history", MAX_PROFILES_READ).await? {
        for w in watched(Some(&doc)) {
            let share = if w.duration_secs > 0.0 {
                (w.position_secs / w.duration_secs) as f32
            } else {
                0.0
            };
            interactions.push(Interaction {
                user: profile.clone(),
                item: w.slug,
                at: w.updated,
                weight: if w.finished {
                    1.0
                } else {
                    share.clamp(MIN_VIEW_WEIGHT, 1.0)
                },
                finished: w.finished,
            });
        }
    }
    // A rating of 3 or more is a positive the history may not hold (rated without watching here).
    let watched_pairs: HashSet<(String, String)> = interactions
        .iter()
        .map(|i| (i.user.clone(), i.item.clone()))
        .collect();
    for (profile, doc) in docs.all("ratings", MAX_PROFILES_READ).await? {
        for (slug, rating) in doc.body["items"].as_object().into_iter().flatten() {
            let rating = rating.as_i64().unwrap_or(0);
            if rating >= 3 && !watched_pairs.contains(&(profile.clone(), slug.clone())) {
                interactions.push(Interaction {
                    user: profile.clone(),
                    item: slug.clone(),
                    at: doc.updated,
                    weight: rating as f32 / 5.0,
                    finished: true,
                });
            }
        }
    }
    Ok((interactions, items))
}

/// The background trainer's settings.
pub struct Trainer {
    pub docs: DocStore,
    pub catalog: Arc<Catalog>,
    pub target: SharedRecommender,
    pub metrics: Arc<OriginMetrics>,
    pub kind: ModelKind,
    pub every: Duration,
    pub retrain_after_plays: u64,
    /// Wakes it before its time: plays on the bus, or the admin listener's `POST /recs/train`.
    pub wake: Arc<Notify>,
}

impl Trainer {
    /// Trains once now and then on the schedule and on demand, for as long as the process runs.
    pub async fn run(self, bus: Option<(Bus, String)>) {
        let wake = Arc::clone(&self.wake);
        if let Some((bus, group)) = bus {
            match bus
                .subscribe(&group, &[TOPIC_PLAYBACK], StartAt::Latest)
                .await
            {
                Ok(consumer) => {
                    tokio::spawn(count_plays(
                        consumer,
                        self.retrain_after_plays,
                        Arc::clone(&wake),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the recommender does not follow plays (bus): schedule only")
                }
            }
        }
        loop {
            self.train_once().await;
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// One training: gathered, fitted off the runtime's threads, swapped in.
    pub async fn train_once(&self) {
        let started = Instant::now();
        let gathered = gather(&self.docs, &self.catalog).await;
        let (interactions, items) = match gathered {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(error = %e, "reading training data failed");
                self.metrics
                    .recs_trainings
                    .with_label_values(&["failed"])
                    .inc();
                return;
            }
        };
        let count = interactions.len();
        let kind = self.kind;
        let now = crate::control::viewer::now_secs();
        let fitted = tokio::task::spawn_blocking(move || {
            Model::train(kind, &interactions, &items, &TrainParams::default(), now)
        })
        .await;
        match fitted {
            Ok(model) => {
                *self.target.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(Arc::new(model) as Arc<dyn Recommender>);
                let secs = started.elapsed().as_secs_f64();
                self.metrics.recs_trainings.with_label_values(&["ok"]).inc();
                self.metrics.recs_train_seconds.set(secs);
                self.metrics.recs_interactions.set(count as i64);
                tracing::info!(interactions = count, seconds = secs, "recommender trained");
            }
            Err(e) => {
                tracing::warn!(error = %e, "training the recommender failed");
                self.metrics
                    .recs_trainings
                    .with_label_values(&["failed"])
                    .inc();
            }
        }
    }
}

/// Counts plays (`start` events) on the playback topic and wakes the trainer every `after` of them.
async fn count_plays(mut consumer: crate::bus::Consumer, after: u64, wake: Arc<Notify>) {
    let mut plays = 0u64;
    loop {
        let records = consumer
            .poll_retrying(500, Duration::from_secs(1), "plays for the recommender")
            .await;
        for record in &records {
            let is_start =
                serde_json::from_slice::<crate::control::events::PlaybackRecord>(&record.value)
                    .is_ok_and(|r| {
                        matches!(
                            r.event.detail,
                            crate::control::events::EventDetail::Start { .. }
                        )
                    });
            if is_start {
                plays += 1;
            }
        }
        if plays >= after {
            plays = 0;
            wake.notify_one();
        }
        if !records.is_empty() {
            let _ = consumer.commit().await;
        }
    }
}
