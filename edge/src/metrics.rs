//! The edge's Prometheus metrics (`edge_*`), registered once and exposed on the admin listener.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Every metric the edge exports.
pub struct EdgeMetrics {
    pub registry: Registry,
    /// `edge_http_requests_total{protocol, method, status_class, cache_status}`.
    pub requests: IntCounterVec,
    /// `edge_http_response_body_bytes_total{protocol, cache_status}`.
    pub response_bytes: IntCounterVec,
    /// `edge_http_request_duration_seconds{cache_status}`: request head to last body byte.
    pub duration: HistogramVec,
    /// `edge_http_time_to_first_byte_seconds{cache_status}`.
    pub ttfb: HistogramVec,
    /// `edge_http_responses_incomplete_total`: bodies cut short (client gone, upstream failed mid-body).
    pub incomplete: IntCounter,
    /// `edge_http_connections_open{listener}`.
    pub connections_open: IntGaugeVec,
    /// `edge_tls_handshake_failures_total`.
    pub tls_failures: IntCounter,
    /// `edge_tls_certificate_reloads_total{result}`.
    pub cert_reloads: IntCounterVec,
    /// `edge_quic_connections_total`: QUIC connections established.
    pub quic_connections: IntCounter,
    /// `edge_quic_connections_open`.
    pub quic_connections_open: IntGauge,
    /// `edge_quic_handshake_failures_total`.
    pub quic_handshake_failures: IntCounter,
    /// `edge_quic_connections_turned_away_total{how}`: refused at the connection cap, or sent a Retry to prove
    /// their address under load.
    pub quic_turned_away: IntCounterVec,
    /// `edge_quic_sent_packets_total` and `edge_quic_lost_packets_total` (added when a connection ends).
    pub quic_sent_packets: IntCounter,
    pub quic_lost_packets: IntCounter,
    /// `edge_quic_congestion_events_total` (added when a connection ends).
    pub quic_congestion_events: IntCounter,
    /// `edge_upstream_requests_total{status_class}`: answers used, from a parent edge or the origin (parents
    /// that failed on the way are counted in `edge_upstream_parent_requests_total` only).
    pub upstream_requests: IntCounterVec,
    /// `edge_upstream_errors_total{kind}`: `connect`, `timeout`, `body`, `validator_changed`.
    pub upstream_errors: IntCounterVec,
    /// `edge_upstream_response_seconds`: time to the upstream's response head.
    pub upstream_latency: Histogram,
    /// `edge_upstream_parent_requests_total{parent, result}`: requests sent to a parent edge, by how it
    /// answered: `ok` (any answer but a failure), `5xx`, `connect`, `timeout`. A failure takes it out.
    pub parent_requests: IntCounterVec,
    /// `edge_parent_up{parent}`: 1 while a parent edge is used, 0 from a failure until it answers again.
    pub parent_up: IntGaugeVec,
    /// `edge_route_requests_total{route, cache_status}`: requests a site's path route took (the control plane's
    /// API, say), by cache status; the requests themselves are in `edge_http_requests_total` too.
    pub route_requests: IntCounterVec,
    /// `edge_pool_requests_total{route, member, result}`: requests sent to a pool's instances, by how the
    /// instance answered: `ok` (any answer below 500), `5xx`, `connect`, `timeout`.
    pub pool_requests: IntCounterVec,
    /// `edge_pool_retries_total{route}`: requests sent again to another instance after one failed.
    pub pool_retries: IntCounterVec,
    /// `edge_pool_member_up{route, member}`: 1 while an instance is chosen, 0 while probes or ejection keep it out.
    pub pool_member_up: IntGaugeVec,
    /// `edge_pool_probes_total{route, member, result}`: active health checks, `ok` or `failed`.
    pub pool_probes: IntCounterVec,
    /// `edge_loops_refused_total`: requests refused with 508 because their `CDN-Loop` named this CDN too often.
    pub loops_refused: IntCounter,
    /// `edge_cache_fills_in_flight`.
    pub fills_in_flight: IntGauge,
    /// `edge_cache_fills_waiting`: fills queued for a slot (at most `cache.max_fills`; past it, 503).
    pub fills_waiting: IntGauge,
    /// `edge_cache_fill_waiters_total`: requests that joined a fill another request started.
    pub fill_waiters: IntCounter,
    /// `edge_cache_lookups_total{kind, result}`: kind `meta`/`slice`, result `memory`/`disk`/`miss`, or
    /// `wrong_length` for a stored slice that is not whole (fetched again, never served).
    pub lookups: IntCounterVec,
    /// `edge_cache_memory_bytes`: bytes held by the memory tier (set at scrape time).
    pub memory_bytes: IntGauge,
    /// `edge_cache_marks{kind}`: URLs remembered as not storable (`pass`) or backing off after upstream
    /// failures (`failing`), expired ones included until swept (set at scrape time).
    pub marks: IntGaugeVec,
    /// `edge_allocator_bytes{state}`: jemalloc's `allocated`, `active`, `resident` and `retained` bytes (set at
    /// scrape time; absent where jemalloc is not the allocator).
    pub allocator_bytes: IntGaugeVec,
    /// `edge_cache_slices_stored_total`.
    pub slices_stored: IntCounter,
    /// `edge_cache_forwarded_total{fwd}`: requests sent upstream, by the RFC 9211 `fwd=` reason.
    pub forwarded: IntCounterVec,
    /// `edge_cache_purges_total{kind, mode}`: purges accepted, kind `url`/`prefix`/`tag`, mode `hard`/`soft`.
    pub purges: IntCounterVec,
    /// `edge_cache_bans{kind}`: bans recorded (set at scrape time).
    pub bans: IntGaugeVec,
    /// `edge_cache_ban_matches_total{verdict}`: stored versions a ban made unusable (`drop`) or stale.
    pub ban_matches: IntCounterVec,
    /// `edge_cache_invalidations_total`: URLs invalidated by unsafe requests (RFC 9111 §4.4).
    pub invalidations: IntCounter,
    /// `edge_signed_url_refusals_total{reason}`: requests refused for a missing or invalid URL token.
    pub signed_url_refusals: IntCounterVec,
    /// `edge_cmcd_requests_total{carrier, object_type}`: requests carrying CMCD (CTA-5004), by where (`query`,
    /// `headers`, `both`) and the object type they report (`ot`: `m a v av i c tt k o`, or `none`).
    pub cmcd_requests: IntCounterVec,
    /// `edge_cmcd_rejected_values_total`: CMCD values dropped for a wrong type, range or length, or a malformed
    /// pair (the key is ignored, never the request).
    pub cmcd_rejected: IntCounter,
    /// `edge_stats_posts_total{outcome}`: per-title summaries posted to the control plane, by outcome: `sent`,
    /// `refused` (an answer other than 2xx) or `failed` (no answer); a refused or failed summary is dropped.
    pub stats_posts: IntCounterVec,
    /// `edge_prefetch_issued_total`: prefetches started (each a fill of the segment's slices, see `prefetch`).
    pub prefetch_issued: IntCounter,
    /// `edge_prefetch_used_total`: prefetched objects a demand request then asked for (a hit, or a request that
    /// joined the prefetch while it ran).
    pub prefetch_used: IntCounter,
    /// `edge_prefetch_wasted_total`: prefetched objects not asked for within `prefetch.unused_secs`.
    pub prefetch_wasted: IntCounter,
    /// `edge_prefetch_bytes_total` and `edge_prefetch_wasted_bytes_total`: bytes prefetches brought, and those
    /// of the wasted ones.
    pub prefetch_bytes: IntCounter,
    pub prefetch_wasted_bytes: IntCounter,
    /// `edge_prefetch_failed_total`: prefetches whose fill failed or whose answer may not be stored.
    pub prefetch_failed: IntCounter,
    /// `edge_prefetch_skipped_total{reason}`: next objects not prefetched because there was nothing to do:
    /// `cached`, `filling` (a fill, demand's or another prefetch's, is running), `stale` (left to demand's
    /// revalidation), `not_cacheable` (refused, passed or marked hit-for-pass).
    pub prefetch_skipped: IntCounterVec,
    /// `edge_prefetch_shed_total{reason}`: prefetches given up for the budget: `load`, `in_flight`,
    /// `upstream_in_flight`, `rate`, `upstream_rate`.
    pub prefetch_shed: IntCounterVec,
    /// `edge_prefetch_in_flight` and `edge_prefetch_in_flight_peak`: prefetches running, and the most at once.
    pub prefetch_in_flight: IntGauge,
    pub prefetch_in_flight_peak: IntGauge,
    /// `edge_viewer_sessions`: viewers' sessions the eviction by value follows (active or not yet forgotten).
    pub viewer_sessions: IntGauge,
    /// `edge_fill_runs_total{trigger,result}`: proactive fill runs, by what started them (`schedule`: the
    /// quiet hours opened; `admin`: `POST /fill`) and how they ended (`done`, `paused` when the quiet hours
    /// closed, `failed` when no plan could be read).
    pub fill_runs: IntCounterVec,
    /// `edge_fill_objects_total{result}`: the plan's files, by what the fill did: `stored`, `cached`,
    /// `filling` (a request's fill had it), `stale`, `not_cacheable`, `failed`.
    pub fill_objects: IntCounterVec,
    /// `edge_fill_bytes_total`: bytes proactive fills brought.
    pub fill_bytes: IntCounter,
    /// `edge_fill_waits_total{reason}`: times the fill waited before its next file for demand (`load`) or its
    /// budget (`in_flight`, `rate`).
    pub fill_waits: IntCounterVec,
    /// `edge_fill_plan_objects`, `edge_fill_plan_bytes`: the last plan's files and bytes; `edge_fill_running`:
    /// 1 while a run goes on.
    pub fill_plan_objects: IntGauge,
    pub fill_plan_bytes: IntGauge,
    pub fill_running: IntGauge,
    /// `edge_live_blocked_total{result}`: LL-HLS blocking playlist requests (`_HLS_msn`), by how their hold
    /// ended: `ready`, `timeout` (503 after three target durations), `too_far` (400).
    pub live_blocked: IntCounterVec,
    /// `edge_live_block_seconds`: how long blocking playlist requests that were answered waited.
    pub live_block_seconds: Histogram,
    /// `edge_live_polls_total` and `edge_live_poll_failures_total`: upstream polls of live playlists that
    /// blocking requests wait on (one poller per playlist), and those that brought no playlist.
    pub live_polls: IntCounter,
    pub live_poll_failures: IntCounter,
    /// `edge_live_hint_holds_total{result}`: requests for a part a watched playlist hints
    /// (`EXT-X-PRELOAD-HINT`), held until it was `listed` or the hold ran out (`timeout`).
    pub live_hint_holds: IntCounterVec,
    /// `edge_prefetch_renditions` and `edge_prefetch_indexed_segments`: renditions the prefetch index holds,
    /// and the segments they list.
    pub prefetch_renditions: IntGauge,
    pub prefetch_segments: IntGauge,
    /// Children of the per-request metrics, resolved once per label combination (no label hashing per request).
    request_series: Box<[OnceLock<RequestSeries>]>,
}

/// The metrics one request updates, for one (protocol, method, status class, cache status).
pub struct RequestSeries {
    pub requests: IntCounter,
    pub response_bytes: IntCounter,
    pub duration: Histogram,
    pub ttfb: Histogram,
}

const PROTOCOLS: [&str; 6] = ["http/0.9", "http/1.0", "http/1.1", "h2", "h3", "unknown"];
const METHODS: [&str; 8] = [
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "other",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn position(values: &[&str], value: &str) -> usize {
    values
        .iter()
        .position(|v| *v == value)
        .unwrap_or(values.len() - 1)
}

impl EdgeMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let buckets = shared::metrics::LATENCY_BUCKETS.to_vec();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let histogram_vec = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.clone()),
                labels,
            )
            .expect("valid metric")
        };
        let m = EdgeMetrics {
            requests: counter_vec(
                "edge_http_requests_total",
                "Requests answered, by protocol, method, status class and cache status.",
                &["protocol", "method", "status_class", "cache_status"],
            ),
            response_bytes: counter_vec(
                "edge_http_response_body_bytes_total",
                "Response body bytes sent, by protocol and cache status.",
                &["protocol", "cache_status"],
            ),
            duration: histogram_vec(
                "edge_http_request_duration_seconds",
                "Time from the request head to the end of the response body.",
                &["cache_status"],
            ),
            ttfb: histogram_vec(
                "edge_http_time_to_first_byte_seconds",
                "Time from the request head to the first body byte.",
                &["cache_status"],
            ),
            incomplete: counter(
                "edge_http_responses_incomplete_total",
                "Response bodies that ended before their end.",
            ),
            connections_open: IntGaugeVec::new(
                Opts::new(
                    "edge_http_connections_open",
                    "Open client connections, by listener.",
                ),
                &["listener"],
            )
            .expect("valid metric"),
            tls_failures: counter(
                "edge_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
            ),
            cert_reloads: counter_vec(
                "edge_tls_certificate_reloads_total",
                "Certificate reloads (SIGHUP), by result.",
                &["result"],
            ),
            quic_connections: counter(
                "edge_quic_connections_total",
                "QUIC connections established.",
            ),
            quic_connections_open: IntGauge::new(
                "edge_quic_connections_open",
                "Open QUIC connections.",
            )
            .expect("valid metric"),
            quic_handshake_failures: counter(
                "edge_quic_handshake_failures_total",
                "QUIC handshakes that failed or timed out.",
            ),
            quic_turned_away: counter_vec(
                "edge_quic_connections_turned_away_total",
                "QUIC connection attempts refused at the cap, or answered with a Retry under load.",
                &["how"],
            ),
            quic_sent_packets: counter(
                "edge_quic_sent_packets_total",
                "QUIC packets sent (counted when a connection ends).",
            ),
            quic_lost_packets: counter(
                "edge_quic_lost_packets_total",
                "QUIC packets declared lost (counted when a connection ends).",
            ),
            quic_congestion_events: counter(
                "edge_quic_congestion_events_total",
                "QUIC congestion events (counted when a connection ends).",
            ),
            upstream_requests: counter_vec(
                "edge_upstream_requests_total",
                "Requests sent upstream, by response status class.",
                &["status_class"],
            ),
            upstream_errors: counter_vec(
                "edge_upstream_errors_total",
                "Upstream failures, by kind.",
                &["kind"],
            ),
            upstream_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "edge_upstream_response_seconds",
                    "Time to the upstream's response head.",
                )
                .buckets(buckets.clone()),
            )
            .expect("valid metric"),
            parent_requests: counter_vec(
                "edge_upstream_parent_requests_total",
                "Requests sent to parent edges, by parent and result (ok, 5xx, connect, timeout).",
                &["parent", "result"],
            ),
            parent_up: IntGaugeVec::new(
                Opts::new(
                    "edge_parent_up",
                    "Whether a parent edge is used (1) or out after a failure (0).",
                ),
                &["parent"],
            )
            .expect("valid metric"),
            route_requests: counter_vec(
                "edge_route_requests_total",
                "Requests taken by a site's path route, by route and cache status.",
                &["route", "cache_status"],
            ),
            pool_requests: counter_vec(
                "edge_pool_requests_total",
                "Requests sent to a route's pool instances, by route, instance and result (ok, 5xx, connect, timeout).",
                &["route", "member", "result"],
            ),
            pool_retries: counter_vec(
                "edge_pool_retries_total",
                "Requests sent again to another pool instance after one failed.",
                &["route"],
            ),
            pool_member_up: IntGaugeVec::new(
                Opts::new(
                    "edge_pool_member_up",
                    "Whether a pool instance is chosen (1) or kept out by health checks or ejection (0).",
                ),
                &["route", "member"],
            )
            .expect("valid metric"),
            pool_probes: counter_vec(
                "edge_pool_probes_total",
                "Active health checks of pool instances, by result (ok, failed).",
                &["route", "member", "result"],
            ),
            loops_refused: counter(
                "edge_loops_refused_total",
                "Requests refused with 508 Loop Detected (CDN-Loop, RFC 8586).",
            ),
            fills_in_flight: IntGauge::new("edge_cache_fills_in_flight", "Upstream fills running.")
                .expect("valid"),
            fills_waiting: IntGauge::new(
                "edge_cache_fills_waiting",
                "Upstream fills waiting for a slot.",
            )
            .expect("valid metric"),
            fill_waiters: counter(
                "edge_cache_fill_waiters_total",
                "Requests that joined a fill another request had started (coalesced).",
            ),
            lookups: counter_vec(
                "edge_cache_lookups_total",
                "Cache lookups, by kind (meta, slice) and result (memory, disk, miss, wrong_length).",
                &["kind", "result"],
            ),
            memory_bytes: IntGauge::new(
                "edge_cache_memory_bytes",
                "Bytes held by the memory tier.",
            )
            .expect("valid"),
            marks: IntGaugeVec::new(
                Opts::new(
                    "edge_cache_marks",
                    "URLs remembered as not storable (pass) or backing off after upstream failures (failing).",
                ),
                &["kind"],
            )
            .expect("valid"),
            allocator_bytes: IntGaugeVec::new(
                Opts::new(
                    "edge_allocator_bytes",
                    "The memory allocator's bytes, by state (allocated, active, resident, retained).",
                ),
                &["state"],
            )
            .expect("valid"),
            slices_stored: counter(
                "edge_cache_slices_stored_total",
                "Slices inserted into the cache.",
            ),
            forwarded: counter_vec(
                "edge_cache_forwarded_total",
                "Requests sent upstream, by the RFC 9211 fwd reason.",
                &["fwd"],
            ),
            purges: counter_vec(
                "edge_cache_purges_total",
                "Purges accepted, by kind (url, prefix, tag) and mode (hard, soft).",
                &["kind", "mode"],
            ),
            bans: IntGaugeVec::new(
                Opts::new("edge_cache_bans", "Purge bans recorded, by kind."),
                &["kind"],
            )
            .expect("valid metric"),
            ban_matches: counter_vec(
                "edge_cache_ban_matches_total",
                "Stored versions a ban made unusable (drop) or stale.",
                &["verdict"],
            ),
            invalidations: counter(
                "edge_cache_invalidations_total",
                "URLs invalidated by unsafe requests (RFC 9111 4.4).",
            ),
            signed_url_refusals: counter_vec(
                "edge_signed_url_refusals_total",
                "Requests refused for a missing or invalid signed-URL token, by reason.",
                &["reason"],
            ),
            cmcd_requests: counter_vec(
                "edge_cmcd_requests_total",
                "Requests carrying CMCD, by carrier (query, headers, both) and object type (ot, or none).",
                &["carrier", "object_type"],
            ),
            cmcd_rejected: counter(
                "edge_cmcd_rejected_values_total",
                "CMCD values dropped for a wrong type, range or length, or a malformed pair.",
            ),
            stats_posts: counter_vec(
                "edge_stats_posts_total",
                "Per-title summaries posted to the control plane, by outcome (sent, refused, failed).",
                &["outcome"],
            ),
            prefetch_issued: counter("edge_prefetch_issued_total", "Prefetches started."),
            prefetch_used: counter(
                "edge_prefetch_used_total",
                "Prefetched objects a demand request then asked for.",
            ),
            prefetch_wasted: counter(
                "edge_prefetch_wasted_total",
                "Prefetched objects not asked for within prefetch.unused_secs.",
            ),
            prefetch_bytes: counter("edge_prefetch_bytes_total", "Bytes prefetches brought."),
            prefetch_wasted_bytes: counter(
                "edge_prefetch_wasted_bytes_total",
                "Bytes of prefetched objects not asked for within prefetch.unused_secs.",
            ),
            prefetch_failed: counter(
                "edge_prefetch_failed_total",
                "Prefetches whose fill failed or whose answer may not be stored.",
            ),
            prefetch_skipped: counter_vec(
                "edge_prefetch_skipped_total",
                "Next objects not prefetched, by reason (cached, filling, stale, not_cacheable).",
                &["reason"],
            ),
            prefetch_shed: counter_vec(
                "edge_prefetch_shed_total",
                "Prefetches given up for the budget, by reason (load, in_flight, upstream_in_flight, rate, upstream_rate).",
                &["reason"],
            ),
            prefetch_in_flight: IntGauge::new("edge_prefetch_in_flight", "Prefetches running.")
                .expect("valid metric"),
            prefetch_in_flight_peak: IntGauge::new(
                "edge_prefetch_in_flight_peak",
                "The most prefetches that ran at once since the edge started.",
            )
            .expect("valid metric"),
            viewer_sessions: IntGauge::new(
                "edge_viewer_sessions",
                "Viewers' sessions the eviction by value follows (active or not yet forgotten).",
            )
            .expect("valid metric"),
            fill_runs: counter_vec(
                "edge_fill_runs_total",
                "Proactive fill runs, by trigger (schedule, admin) and result (done, paused, failed).",
                &["trigger", "result"],
            ),
            fill_objects: counter_vec(
                "edge_fill_objects_total",
                "Files of the fill plan, by result (stored, cached, filling, stale, not_cacheable, failed).",
                &["result"],
            ),
            fill_bytes: counter("edge_fill_bytes_total", "Bytes proactive fills brought."),
            fill_waits: counter_vec(
                "edge_fill_waits_total",
                "Waits of the proactive fill before its next file, by reason (load, in_flight, rate).",
                &["reason"],
            ),
            fill_plan_objects: IntGauge::new(
                "edge_fill_plan_objects",
                "Files in the last fill plan read.",
            )
            .expect("valid metric"),
            fill_plan_bytes: IntGauge::new("edge_fill_plan_bytes", "Bytes of the last fill plan read.")
                .expect("valid metric"),
            fill_running: IntGauge::new("edge_fill_running", "1 while a proactive fill runs.")
                .expect("valid metric"),
            live_blocked: counter_vec(
                "edge_live_blocked_total",
                "LL-HLS blocking playlist requests, by how their hold ended (ready, timeout, too_far).",
                &["result"],
            ),
            live_block_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "edge_live_block_seconds",
                    "How long answered blocking playlist requests waited.",
                )
                .buckets(buckets.clone()),
            )
            .expect("valid metric"),
            live_polls: counter(
                "edge_live_polls_total",
                "Upstream polls of live playlists that blocking requests wait on.",
            ),
            live_poll_failures: counter(
                "edge_live_poll_failures_total",
                "Upstream polls of live playlists that brought no playlist.",
            ),
            live_hint_holds: counter_vec(
                "edge_live_hint_holds_total",
                "Requests for a preload-hinted part, held until it was listed or the hold ran out.",
                &["result"],
            ),
            prefetch_renditions: IntGauge::new(
                "edge_prefetch_renditions",
                "Renditions the prefetch index holds.",
            )
            .expect("valid metric"),
            prefetch_segments: IntGauge::new(
                "edge_prefetch_indexed_segments",
                "Segments listed by the renditions the prefetch index holds.",
            )
            .expect("valid metric"),
            request_series: (0..PROTOCOLS.len()
                * METHODS.len()
                * STATUS_CLASSES.len()
                * crate::status::CacheStatus::LABELS.len())
                .map(|_| OnceLock::new())
                .collect(),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.response_bytes.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.ttfb.clone()),
            Box::new(m.incomplete.clone()),
            Box::new(m.connections_open.clone()),
            Box::new(m.tls_failures.clone()),
            Box::new(m.cert_reloads.clone()),
            Box::new(m.quic_connections.clone()),
            Box::new(m.quic_connections_open.clone()),
            Box::new(m.quic_handshake_failures.clone()),
            Box::new(m.quic_turned_away.clone()),
            Box::new(m.quic_sent_packets.clone()),
            Box::new(m.quic_lost_packets.clone()),
            Box::new(m.quic_congestion_events.clone()),
            Box::new(m.upstream_requests.clone()),
            Box::new(m.upstream_errors.clone()),
            Box::new(m.upstream_latency.clone()),
            Box::new(m.parent_requests.clone()),
            Box::new(m.parent_up.clone()),
            Box::new(m.route_requests.clone()),
            Box::new(m.pool_requests.clone()),
            Box::new(m.pool_retries.clone()),
            Box::new(m.pool_member_up.clone()),
            Box::new(m.pool_probes.clone()),
            Box::new(m.loops_refused.clone()),
            Box::new(m.fills_in_flight.clone()),
            Box::new(m.fills_waiting.clone()),
            Box::new(m.fill_waiters.clone()),
            Box::new(m.lookups.clone()),
            Box::new(m.memory_bytes.clone()),
            Box::new(m.allocator_bytes.clone()),
            Box::new(m.marks.clone()),
            Box::new(m.slices_stored.clone()),
            Box::new(m.forwarded.clone()),
            Box::new(m.purges.clone()),
            Box::new(m.bans.clone()),
            Box::new(m.ban_matches.clone()),
            Box::new(m.invalidations.clone()),
            Box::new(m.signed_url_refusals.clone()),
            Box::new(m.cmcd_requests.clone()),
            Box::new(m.cmcd_rejected.clone()),
            Box::new(m.stats_posts.clone()),
            Box::new(m.prefetch_issued.clone()),
            Box::new(m.prefetch_used.clone()),
            Box::new(m.prefetch_wasted.clone()),
            Box::new(m.prefetch_bytes.clone()),
            Box::new(m.prefetch_wasted_bytes.clone()),
            Box::new(m.prefetch_failed.clone()),
            Box::new(m.prefetch_skipped.clone()),
            Box::new(m.prefetch_shed.clone()),
            Box::new(m.prefetch_in_flight.clone()),
            Box::new(m.prefetch_in_flight_peak.clone()),
            Box::new(m.viewer_sessions.clone()),
            Box::new(m.fill_runs.clone()),
            Box::new(m.fill_objects.clone()),
            Box::new(m.fill_bytes.clone()),
            Box::new(m.fill_waits.clone()),
            Box::new(m.fill_plan_objects.clone()),
            Box::new(m.fill_plan_bytes.clone()),
            Box::new(m.fill_running.clone()),
            Box::new(m.live_blocked.clone()),
            Box::new(m.live_block_seconds.clone()),
            Box::new(m.live_polls.clone()),
            Box::new(m.live_poll_failures.clone()),
            Box::new(m.live_hint_holds.clone()),
            Box::new(m.prefetch_renditions.clone()),
            Box::new(m.prefetch_segments.clone()),
        ];
        for fwd in crate::status::Fwd::ALL {
            m.forwarded.with_label_values(&[fwd.as_str()]);
        }
        for outcome in ["sent", "refused", "failed"] {
            m.stats_posts.with_label_values(&[outcome]);
        }
        for reason in ["cached", "filling", "stale", "not_cacheable"] {
            m.prefetch_skipped.with_label_values(&[reason]);
        }
        for reason in [
            "load",
            "in_flight",
            "upstream_in_flight",
            "rate",
            "upstream_rate",
        ] {
            m.prefetch_shed.with_label_values(&[reason]);
        }
        for result in [
            "stored",
            "cached",
            "filling",
            "stale",
            "not_cacheable",
            "failed",
        ] {
            m.fill_objects.with_label_values(&[result]);
        }
        for reason in ["load", "in_flight", "rate"] {
            m.fill_waits.with_label_values(&[reason]);
        }
        for verdict in ["drop", "stale"] {
            m.ban_matches.with_label_values(&[verdict]);
        }
        for collector in collectors {
            m.registry
                .register(collector)
                .expect("metric names are unique");
        }
        m
    }
}

impl EdgeMetrics {
    /// The metrics of requests with these labels (each a value `edge_http_requests_total` documents).
    pub fn request_series(
        &self,
        protocol: &str,
        method: &str,
        status_class: &str,
        cache_status: &'static str,
    ) -> &RequestSeries {
        let labels = crate::status::CacheStatus::LABELS;
        let index = ((position(&PROTOCOLS, protocol) * METHODS.len() + position(&METHODS, method))
            * STATUS_CLASSES.len()
            + position(&STATUS_CLASSES, status_class))
            * labels.len()
            + position(&labels, cache_status);
        self.request_series[index].get_or_init(|| RequestSeries {
            requests: self.requests.with_label_values(&[
                protocol,
                method,
                status_class,
                cache_status,
            ]),
            response_bytes: self
                .response_bytes
                .with_label_values(&[protocol, cache_status]),
            duration: self.duration.with_label_values(&[cache_status]),
            ttfb: self.ttfb.with_label_values(&[cache_status]),
        })
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self::new()
    }
}
