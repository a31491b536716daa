//! Training the recommender in the background, once for all the instances of the control plane. The instance that
//! holds the trainer's lease (`control::lease`, `recs-trainer`) trains: when no model exists yet, when the newest
//! is `recs.train_secs` old, and when a training was asked for after the newest model's data were read — by the
//! admin listener's `POST /recs/train` on any instance, or by `recs.retrain_after_plays` new plays on the bus's
//! playback topic (each instance follows it in its own group). A request is a row in the database
//! (`recs_requests`), so any instance can ask. A training reads every profile's viewing history and ratings
//! (`control::docs`) and the catalog's titles, fits the configured model on a blocking thread, swaps it in whole,
//! and publishes it to the database (`recs_models`, in the form `recs::stored` writes; the newest two kept).
//!
//! Every instance looks for a newer model every [`CHECK_EVERY`] (one small query) and loads it, so all serve the
//! same recommendations within seconds of a training. Serving only ever reads a ready model (`control::home`), and
//! until the first one is ready the home page falls back to the catalog's popularity. If the holder stops, its
//! lease lapses after [`LEASE_TTL`] and another instance trains from then on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use sqlx::{AnyPool, Row};

use crate::bus::{Bus, StartAt, TOPIC_PLAYBACK};
use crate::control::catalog::Catalog;
use crate::control::docs::DocStore;
use crate::control::home::{Recommender, SharedRecommender};
use crate::control::lease::Lease;
use crate::control::viewer::watched;
use crate::metrics::OriginMetrics;
use crate::recs::{Interaction, ItemInfo, Model, ModelKind, TrainParams};

/// Profiles' documents read per training at most (a bound on memory; the newest are not preferred: by id).
const MAX_PROFILES_READ: i64 = 1_000_000;
/// A partial view counts at least this much (a title started is a weak positive, finished a full one).
const MIN_VIEW_WEIGHT: f32 = 0.3;
/// How often every instance looks for a newer model, and the trainer renews its lease.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long the trainer's lease outlives its last renewal: a stopped holder's successor starts after this.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// The trainer's lease.
pub const TRAINER_LEASE: &str = "recs-trainer";
/// Models kept in the database: the newest, and the one before for an instance still loading it.
const MODELS_KEPT: i64 = 2;

/// Whether the trainer trains now: there is no model yet, the newest one's data were read `every_ms` ago or more,
/// or a training was asked for after they were read (all unix milliseconds).
pub fn training_due(
    newest_data_read_at: Option<i64>,
    requested_at: Option<i64>,
    now: i64,
    every_ms: i64,
) -> bool {
    match newest_data_read_at {
        None => true,
        Some(read_at) => {
            now.saturating_sub(read_at) >= every_ms || requested_at.is_some_and(|r| r > read_at)
        }
    }
}

/// The trained models and the training requests in the database, shared by every instance.
#[derive(Clone)]
pub struct ModelStore {
    pool: AnyPool,
    queries: crate::metrics::DbQueries,
}

impl ModelStore {
    pub fn new(pool: AnyPool, queries: crate::metrics::DbQueries) -> ModelStore {
        ModelStore { pool, queries }
    }

    /// The newest model's id and when its data were read (unix ms).
    pub async fn newest(&self) -> anyhow::Result<Option<(i64, i64)>> {
        self.queries.count("recs_model_check");
        let row = sqlx::query("SELECT id, data_read_at FROM recs_models ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// A model's kind and bytes; none when it was deleted meanwhile.
    pub async fn read(&self, id: i64) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        self.queries.count("recs_model_read");
        let row = sqlx::query("SELECT kind, body FROM recs_models WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// Keeps a model as the newest, deleting all but the newest [`MODELS_KEPT`]; its id.
    pub async fn publish(
        &self,
        kind: &str,
        data_read_at: i64,
        body: Vec<u8>,
    ) -> anyhow::Result<i64> {
        let mut tx = self.pool.begin().await?;
        self.queries.count("recs_model_write");
        let id: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM recs_models")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        self.queries.count("recs_model_write");
        sqlx::query(
            "INSERT INTO recs_models (id, kind, data_read_at, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(kind)
        .bind(data_read_at)
        .bind(body)
        .execute(&mut *tx)
        .await?;
        self.queries.count("recs_model_write");
        sqlx::query("DELETE FROM recs_models WHERE id <= $1")
            .bind(id - MODELS_KEPT)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Asks for a training (whichever instance trains answers it with a model whose data are read later).
    pub async fn request(&self, now: i64) -> anyhow::Result<()> {
        self.queries.count("recs_request");
        sqlx::query(
            "INSERT INTO recs_requests (name, requested_at) VALUES ('train', $1) \
             ON CONFLICT (name) DO UPDATE SET requested_at = excluded.requested_at \
             WHERE recs_requests.requested_at < excluded.requested_at",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When a training was last asked for.
    pub async fn requested_at(&self) -> anyhow::Result<Option<i64>> {
        self.queries.count("recs_request");
        let row = sqlx::query("SELECT requested_at FROM recs_requests WHERE name = 'train'")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(row.try_get(0)?)).transpose()
    }
}

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
    /// The models and requests every instance shares.
    pub models: ModelStore,
    /// Who trains ([`TRAINER_LEASE`]).
    pub lease: Lease,
}

impl Trainer {
    /// Follows the models and, while it holds the lease, trains, for as long as the process runs: the first
    /// look is at once, then every [`CHECK_EVERY`] and whenever it is woken (which also asks for a training).
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
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The model serving here, and the data of the last training tried here (counted even when it could not
        // be published, so a database that refuses does not make the trainer train every tick).
        let (mut loaded, mut tried): (i64, Option<i64>) = (0, None);
        let mut reachable = true;
        loop {
            let woken = tokio::select! {
                _ = tick.tick() => false,
                _ = wake.notified() => true,
            };
            let now = crate::bus::now_ms();
            let step = self.step(woken, now, &mut loaded, &mut tried).await;
            match step {
                Ok(()) => reachable = true,
                // Said once per outage, not every tick.
                Err(e) if reachable => {
                    reachable = false;
                    tracing::warn!(error = %e, "the recommender's models or lease cannot be read");
                }
                Err(_) => {}
            }
        }
    }

    /// One look: records a request if woken, loads a newer model, and trains if this instance holds the lease
    /// and a training is due.
    async fn step(
        &self,
        woken: bool,
        now: i64,
        loaded: &mut i64,
        tried: &mut Option<i64>,
    ) -> anyhow::Result<()> {
        if woken {
            self.models.request(now).await?;
        }
        let newest = self.models.newest().await?;
        if let Some((id, _)) = newest
            && id > *loaded
        {
            self.load(id).await;
            *loaded = id;
        }
        if !self.lease.hold(now).await? {
            return Ok(());
        }
        let last_data = newest.map(|(_, read_at)| read_at).max(*tried);
        let requested = self.models.requested_at().await?;
        let every_ms = self.every.as_millis().min(i64::MAX as u128) as i64;
        if training_due(last_data, requested, now, every_ms) {
            *tried = Some(now);
            if let Some(id) = self.train_and_publish(now).await {
                *loaded = id;
            }
        }
        Ok(())
    }

    /// Reads model `id` from the database and serves it (a model that does not read is skipped, with a warning).
    async fn load(&self, id: i64) {
        let (kind, body) = match self.models.read(id).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(model = id, error = %e, "reading a trained model failed");
                return;
            }
        };
        let size = body.len();
        match tokio::task::spawn_blocking(move || Model::from_bytes(&body)).await {
            Ok(Ok(model)) => {
                self.metrics
                    .recs_interactions
                    .set(model.interactions() as i64);
                *self.target.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(Arc::new(model) as Arc<dyn Recommender>);
                self.metrics.recs_models_loaded.inc();
                tracing::info!(model = id, %kind, bytes = size, "recommender model loaded");
            }
            Ok(Err(reason)) => {
                tracing::warn!(model = id, %kind, %reason, "a trained model does not read; skipped")
            }
            Err(e) => tracing::warn!(model = id, error = %e, "reading a trained model failed"),
        }
    }

    /// Trains (renewing the lease meanwhile: a training may outlast it), serves the model here and publishes it;
    /// the published model's id.
    async fn train_and_publish(&self, data_read_at: i64) -> Option<i64> {
        let training = self.train_once();
        tokio::pin!(training);
        let mut renew = tokio::time::interval(CHECK_EVERY);
        let model = loop {
            tokio::select! {
                model = &mut training => break model?,
                _ = renew.tick() => {
                    if let Err(e) = self.lease.hold(crate::bus::now_ms()).await {
                        tracing::warn!(error = %e, "renewing the trainer's lease failed");
                    }
                }
            }
        };
        let body = match tokio::task::spawn_blocking(move || model.to_bytes()).await {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "writing the trained model failed");
                return None;
            }
        };
        let size = body.len();
        match self
            .models
            .publish(self.kind.name(), data_read_at, body)
            .await
        {
            Ok(id) => {
                tracing::info!(model = id, bytes = size, "recommender model published");
                Some(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing the trained model failed: it serves on this instance only");
                None
            }
        }
    }

    /// One training: gathered, fitted off the runtime's threads, swapped in here; the model, to publish.
    pub async fn train_once(&self) -> Option<Arc<Model>> {
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
                return None;
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
                let model = Arc::new(model);
                *self.target.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(Arc::clone(&model) as Arc<dyn Recommender>);
                let secs = started.elapsed().as_secs_f64();
                self.metrics.recs_trainings.with_label_values(&["ok"]).inc();
                self.metrics.recs_train_seconds.set(secs);
                self.metrics.recs_interactions.set(count as i64);
                tracing::info!(interactions = count, seconds = secs, "recommender trained");
                Some(model)
            }
            Err(e) => {
                tracing::warn!(error = %e, "training the recommender failed");
                self.metrics
                    .recs_trainings
                    .with_label_values(&["failed"])
                    .inc();
                None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_is_due_with_no_model_on_schedule_and_when_asked_after_the_data() {
        let every = 600_000;
        assert!(training_due(None, None, 0, every), "no model yet");
        assert!(!training_due(Some(1_000), None, 1_000 + every - 1, every));
        assert!(
            training_due(Some(1_000), None, 1_000 + every, every),
            "on schedule"
        );
        assert!(
            !training_due(Some(1_000), Some(900), 2_000, every),
            "asked before the data were read: answered"
        );
        assert!(
            !training_due(Some(1_000), Some(1_000), 2_000, every),
            "asked as they were read: answered"
        );
        assert!(
            training_due(Some(1_000), Some(1_001), 2_000, every),
            "asked after"
        );
    }
}
