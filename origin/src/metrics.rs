//! The origin's Prometheus metrics, registered once in their own registry and exposed on the admin listener.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the origin exports.
pub struct OriginMetrics {
    pub registry: Registry,
    /// `origin_http_requests_total{method, status_class}`: finished requests.
    pub requests: IntCounterVec,
    /// `origin_http_response_body_bytes_total`: body bytes sent.
    pub response_bytes: IntCounter,
    /// `origin_http_request_duration_seconds`: from the request head to the last body byte.
    pub duration: Histogram,
    /// `origin_http_responses_incomplete_total`: bodies cut short (client gone or store failed mid-stream).
    pub incomplete: IntCounter,
    /// `origin_http_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `origin_http_connections_open`.
    pub connections_open: IntGauge,
    /// `origin_http_connections_total`: connections accepted.
    pub connections: IntCounter,
    /// `origin_tls_handshake_failures_total`.
    pub tls_failures: IntCounter,
    /// `origin_store_errors_total{kind}`: store failures by kind (`store_failed`, `store_unavailable`, `internal`).
    pub store_errors: IntCounterVec,
    /// `origin_preload_hint_holds_total{result}`: requests for an LL-HLS hinted part not yet stored, held until
    /// it was (`ready`), for the whole hold (`timeout`), or answered 404 at once for want of room (`busy`).
    pub preload_hint_holds: IntCounterVec,
    /// `control_fleet_edges{region, state}`: edges registered with the control plane, `healthy` or `down`.
    pub fleet_edges: IntGaugeVec,
    /// `control_steering_requests_total{protocol, decision}`: Content Steering requests from players (`hls`,
    /// `dash`), by whether the answer kept the player on its pathway (`stay`), moved it (`move`) or it named
    /// none (`first`).
    pub steering_requests: IntCounterVec,
    /// `control_playback_steered_total{region, edge_region}`: playback answers by the viewer's region and the
    /// region of the edge ranked first (`none` when unknown): how often viewers are served out of region.
    pub playback_steered: IntCounterVec,
    /// `control_event_batches_total{source, outcome}`: batches posted to the events routes, `source` `player`
    /// (`POST /v1/events`) or `edge` (an edge's summary), `outcome` `accepted`, `refused` (4xx) or `unavailable`
    /// (the bus failed).
    pub event_batches: IntCounterVec,
    /// `control_signins_total{outcome}`: sign-in attempts, `signed_in`, `refused` (wrong email or password) or
    /// `limited` (too many failures).
    pub signins: IntCounterVec,
    /// `control_playback_requests_total{caller}`: playback answers by who asked: `viewer` (a signed-in
    /// profile), `service` (a service credential); `refused` for a request with neither.
    pub playback_requests: IntCounterVec,
    /// `control_recommender_trainings_total{outcome}` and the last training's duration and size.
    pub recs_trainings: IntCounterVec,
    pub recs_train_seconds: prometheus::Gauge,
    /// `control_recommender_models_loaded_total`: models this instance read from the database (trained by the
    /// instance holding the trainer's lease, this one or another).
    pub recs_models_loaded: IntCounter,
    pub recs_interactions: prometheus::IntGauge,
    /// `control_events_accepted_total{source}`: events (a summary's titles) put on the bus.
    pub events_accepted: IntCounterVec,
    /// `control_catalog_changes_applied_total`: catalog changes this instance applied (search, caches, takedowns).
    pub catalog_changes_applied: IntCounter,
    /// `control_db_queries_total{op}`: SQL statements this instance sent to its database.
    pub db_queries: DbQueries,
}

/// `control_db_queries_total{op}`: SQL statements sent to the catalog's database (the catalog, the viewers'
/// documents, the shared state of the instances), one per statement, by a short name of what they were for
/// (`title`, `titles_list`, `doc_get`, …). Cloned into every store; unregistered until [`OriginMetrics`] makes it.
#[derive(Clone)]
pub struct DbQueries(IntCounterVec);

impl DbQueries {
    fn new() -> Self {
        DbQueries(
            IntCounterVec::new(
                Opts::new(
                    "control_db_queries_total",
                    "SQL statements sent to the database, by what they were for.",
                ),
                &["op"],
            )
            .expect("valid metric"),
        )
    }

    /// Counts one statement for `op`.
    pub fn count(&self, op: &str) {
        self.0.with_label_values(&[op]).inc();
    }

    /// How many statements `op` sent so far.
    pub fn get(&self, op: &str) -> u64 {
        self.0.with_label_values(&[op]).get()
    }
}

impl Default for DbQueries {
    /// A counter no registry exports (tools, tests).
    fn default() -> Self {
        DbQueries::new()
    }
}

impl OriginMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "origin_http_requests_total",
                "Requests answered, by method and status class.",
            ),
            &["method", "status_class"],
        )
        .expect("valid metric");
        let response_bytes = IntCounter::new(
            "origin_http_response_body_bytes_total",
            "Response body bytes sent.",
        )
        .expect("valid");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "origin_http_request_duration_seconds",
                "Time from the request head to the end of the response body.",
            )
            .buckets(shared::metrics::LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let incomplete = IntCounter::new(
            "origin_http_responses_incomplete_total",
            "Response bodies that ended before their end.",
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("origin_http_requests_in_flight", "Requests being answered.")
            .expect("valid");
        let connections_open =
            IntGauge::new("origin_http_connections_open", "Open client connections.")
                .expect("valid");
        let connections = IntCounter::new(
            "origin_http_connections_total",
            "Client connections accepted.",
        )
        .expect("valid");
        let tls_failures = IntCounter::new(
            "origin_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
        )
        .expect("valid metric");
        let store_errors = IntCounterVec::new(
            Opts::new(
                "origin_store_errors_total",
                "Object store operations that failed, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let preload_hint_holds = IntCounterVec::new(
            Opts::new(
                "origin_preload_hint_holds_total",
                "Requests for a hinted LL-HLS part held until it was stored, by result (ready, timeout, busy).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for result in ["ready", "timeout", "busy"] {
            preload_hint_holds.with_label_values(&[result]);
        }
        let fleet_edges = IntGaugeVec::new(
            Opts::new(
                "control_fleet_edges",
                "Edges registered with the control plane, by region and state (healthy, down).",
            ),
            &["region", "state"],
        )
        .expect("valid metric");
        let steering_requests = IntCounterVec::new(
            Opts::new(
                "control_steering_requests_total",
                "Content Steering requests, by player protocol and decision (stay, move, first).",
            ),
            &["protocol", "decision"],
        )
        .expect("valid metric");
        let playback_steered = IntCounterVec::new(
            Opts::new(
                "control_playback_steered_total",
                "Playback answers, by the viewer's region and the region of the edge ranked first.",
            ),
            &["region", "edge_region"],
        )
        .expect("valid metric");
        let event_batches = IntCounterVec::new(
            Opts::new(
                "control_event_batches_total",
                "Batches posted to the events routes, by source (player, edge) and outcome (accepted, refused, unavailable).",
            ),
            &["source", "outcome"],
        )
        .expect("valid metric");
        let events_accepted = IntCounterVec::new(
            Opts::new(
                "control_events_accepted_total",
                "Events put on the bus, by source (player events; an edge summary's titles).",
            ),
            &["source"],
        )
        .expect("valid metric");
        let signins = IntCounterVec::new(
            Opts::new(
                "control_signins_total",
                "Sign-in attempts, by outcome (signed_in, refused, limited).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let playback_requests = IntCounterVec::new(
            Opts::new(
                "control_playback_requests_total",
                "Playback requests, by caller (viewer, service) or refused without either.",
            ),
            &["caller"],
        )
        .expect("valid metric");
        let recs_trainings = IntCounterVec::new(
            Opts::new(
                "control_recommender_trainings_total",
                "Recommender trainings, by outcome (ok, failed).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let recs_train_seconds = prometheus::Gauge::new(
            "control_recommender_train_seconds",
            "How long the last recommender training took.",
        )
        .expect("valid");
        let recs_interactions = prometheus::IntGauge::new(
            "control_recommender_interactions",
            "Interactions (viewing history entries) the serving recommender was trained on.",
        )
        .expect("valid");
        let recs_models_loaded = IntCounter::new(
            "control_recommender_models_loaded_total",
            "Recommender models read from the database (trained by the instance holding the trainer's lease).",
        )
        .expect("valid");
        let catalog_changes_applied = IntCounter::new(
            "control_catalog_changes_applied_total",
            "Catalog changes this instance applied to its search index, caches and takedowns.",
        )
        .expect("valid");
        let db_queries = DbQueries::new();
        for collector in [
            Box::new(db_queries.0.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(fleet_edges.clone()),
            Box::new(event_batches.clone()),
            Box::new(signins.clone()),
            Box::new(playback_requests.clone()),
            Box::new(recs_trainings.clone()),
            Box::new(recs_train_seconds.clone()),
            Box::new(recs_interactions.clone()),
            Box::new(recs_models_loaded.clone()),
            Box::new(events_accepted.clone()),
            Box::new(catalog_changes_applied.clone()),
            Box::new(steering_requests.clone()),
            Box::new(playback_steered.clone()),
            Box::new(requests.clone()),
            Box::new(response_bytes.clone()),
            Box::new(duration.clone()),
            Box::new(incomplete.clone()),
            Box::new(in_flight.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections.clone()),
            Box::new(tls_failures.clone()),
            Box::new(store_errors.clone()),
            Box::new(preload_hint_holds.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        OriginMetrics {
            registry,
            requests,
            response_bytes,
            duration,
            incomplete,
            in_flight,
            connections_open,
            connections,
            tls_failures,
            store_errors,
            preload_hint_holds,
            fleet_edges,
            steering_requests,
            playback_steered,
            event_batches,
            signins,
            playback_requests,
            recs_trainings,
            recs_train_seconds,
            recs_interactions,
            recs_models_loaded,
            events_accepted,
            catalog_changes_applied,
            db_queries,
        }
    }
}

impl Default for OriginMetrics {
    fn default() -> Self {
        Self::new()
    }
}

pub use shared::metrics::method_label;
