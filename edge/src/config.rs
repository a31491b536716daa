//! The edge's configuration: one TOML file loaded into [`EdgeConfig`]. Every field has a default (named
//! constants in [`defaults`]), unknown keys are refused, and [`EdgeConfig::validate`] names the offending field.
//! `configs/edge.toml` is the annotated reference.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use shared::config::{ConfigError, check_socket_addr, ensure};
use shared::logging::LogFormat;

/// Defaults of every field, in one place.
pub mod defaults {
    pub const NAME: &str = "edge";
    pub const DATA_DIR: &str = "data/edge";
    pub const TLS_LISTEN: &str = "127.0.0.1:8443";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9901";
    pub const UPSTREAM: &str = "http://127.0.0.1:8080";
    pub const SITE_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];
    pub const MEMORY_BYTES: u64 = 256 << 20;
    pub const DISK_BYTES: u64 = 1 << 30;
    pub const SLICE_BYTES: u64 = 2 << 20;
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
    pub const IDLE_TIMEOUT_SECS: u64 = 60;
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
    pub const H2_WINDOW_BYTES: u32 = 4 << 20;
    pub const TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
    pub const SHUTDOWN_GRACE_SECS: u64 = 10;
    pub const UPSTREAM_CONNECT_TIMEOUT_SECS: u64 = 3;
    pub const UPSTREAM_HEADER_TIMEOUT_SECS: u64 = 10;
    pub const UPSTREAM_BODY_IDLE_TIMEOUT_SECS: u64 = 10;
    pub const MAX_FILLS: usize = 1024;
    pub const CORS_ALLOW_ORIGINS: &[&str] = &["*"];
    pub const LOG_LEVEL: &str = "info";
    pub const H3_ALT_SVC_MAX_AGE_SECS: u64 = 86400;
    pub const H3_MAX_CONCURRENT_STREAMS: u32 = 256;
    pub const H3_SEND_WINDOW_BYTES: u64 = 32 << 20;
    pub const H3_STREAM_RECEIVE_WINDOW_BYTES: u32 = 1 << 20;
    pub const H3_IDLE_TIMEOUT_SECS: u64 = 30;
    pub const CDN_ID: &str = "video-cdn";
    pub const MAX_LOOP_HOPS: usize = 3;
    pub const PARENT_RETRY_SECS: u64 = 10;
    pub const STATS_SECS: u64 = 5;
    pub const STATS_MAX_TITLES: usize = 100;
    pub const PREFETCH_SEGMENTS: usize = 1;
    pub const PREFETCH_MAX_IN_FLIGHT: usize = 16;
    pub const PREFETCH_MAX_IN_FLIGHT_PER_UPSTREAM: usize = 8;
    pub const PREFETCH_BYTES_PER_SEC: u64 = 128 << 20;
    pub const PREFETCH_BYTES_PER_SEC_PER_UPSTREAM: u64 = 64 << 20;
    pub const PREFETCH_UNUSED_SECS: u64 = 60;
    pub const FILL_QUIET_HOURS: &str = "02:00-06:00";
    pub const FILL_BYTES_PER_SEC: u64 = 32 << 20;
    pub const FILL_MAX_IN_FLIGHT: usize = 2;
}

/// Parents a site may list, at most (each is scored for every fill).
pub const MAX_PARENTS: usize = 16;

/// The whole edge configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// This edge's name in `Cache-Status` and logs. Default: `edge`.
    pub name: String,
    /// The CDN's name in `CDN-Loop` (RFC 8586): the same on every edge of the CDN, so a request that comes
    /// round again is recognised; every request sent upstream carries it appended. Default: `video-cdn`.
    pub cdn_id: String,
    /// Folder for the edge's own data; the disk cache defaults to `<data_dir>/cache`. Default: `data/edge`.
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub h3: H3Config,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    /// Which `Host` values map to which upstream. Default: one site for localhost, 127.0.0.1 and [::1] in
    /// front of `http://127.0.0.1:8080`.
    #[serde(rename = "site")]
    pub sites: Vec<SiteConfig>,
    pub cache: CacheConfig,
    /// Warming the segments a player will ask for next.
    pub prefetch: PrefetchConfig,
    /// Filling, in the quiet hours, the titles the control plane says this edge should hold.
    pub fill: FillConfig,
    /// CMSD (CTA-5006) response headers for players.
    pub cmsd: CmsdConfig,
    pub limits: LimitsConfig,
    pub cors: CorsConfig,
    pub log: LogConfig,
    /// Reporting this edge to the control plane.
    pub control: ControlConfig,
    /// Keys that sign URLs (`/t/<token>/…`), shared with the control plane; several allow rotation.
    #[serde(rename = "signing_key")]
    pub signing_keys: Vec<SigningKeyConfig>,
}

pub use shared::token::SigningKeyConfig;

/// The control plane this edge reports itself to: at start and then every `heartbeat_secs`, one
/// `PUT <url>/v1/edges/<name>` with its region, public URLs, admin address (for Prometheus) and load; and every
/// `stats_secs`, one `POST <url>/v1/edges/<name>/stats` of its per-title summary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The control plane's API (`http://control.example:8000`); empty: the edge reports to none. Default: empty.
    pub url: String,
    /// The control plane's `fleet.registration_secret`. Default: none.
    pub registration_secret: Option<String>,
    /// This edge's region (`eu-west`). Default: `default`.
    pub region: String,
    /// Base URLs players reach this edge at; empty: `https://<tls.listen>`. Default: empty.
    pub public_urls: Vec<String>,
    /// The admin address Prometheus scrapes; empty: the admin listener's. Default: empty.
    pub metrics_target: String,
    /// Seconds between reports. Default: 5.
    pub heartbeat_secs: u64,
    /// Seconds between per-title summaries, each one `POST <url>/v1/edges/<name>/stats` of the requests by
    /// cache status, bytes, errors, TTFB percentiles, and the stalls and sessions CMCD reports, per title
    /// (`/titles/<slug>/…`) over the interval; an interval with no requests sends nothing, and a refused or
    /// failed post is dropped, never queued. 0 sends none (and counts nothing). At most 3600. Default: 5.
    pub stats_secs: u64,
    /// Titles a summary names at most, 1 to 999; requests for the others count under `other`. A title takes a
    /// place only with a successful answer, so requests for made-up titles cannot push real ones out. Memory:
    /// about 900 bytes a title, 1 KiB more when its requests carry CMCD session ids. Default: 100.
    pub stats_max_titles: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            url: String::new(),
            registration_secret: None,
            region: "default".into(),
            public_urls: Vec::new(),
            metrics_target: String::new(),
            heartbeat_secs: 5,
            stats_secs: defaults::STATS_SECS,
            stats_max_titles: defaults::STATS_MAX_TITLES,
        }
    }
}

/// The player-facing TLS listener (HTTP/1.1 and HTTP/2 by ALPN).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Address; empty disables the TLS listener. Default: `127.0.0.1:8443`.
    pub listen: String,
    /// PEM certificate chain, reloaded on SIGHUP. Default: `<data_dir>/tls/cert.pem`.
    pub cert: Option<PathBuf>,
    /// PEM private key, reloaded on SIGHUP. Default: `<data_dir>/tls/key.pem`.
    pub key: Option<PathBuf>,
}

/// HTTP/3 over QUIC, on the TLS listener's address (UDP), through the same pipeline and cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct H3Config {
    /// Serve HTTP/3 and advertise it with `Alt-Svc` on every TCP response. Default: true.
    pub enabled: bool,
    /// `ma` of the `Alt-Svc` header, seconds. Default: 86400.
    pub alt_svc_max_age_secs: u64,
    /// Request streams a client may have open at once per connection. Default: 256.
    pub max_concurrent_streams: u32,
    /// Bytes of response data in flight per connection (unacknowledged); it must cover several 1–8 MiB
    /// segments on a fast path, and each connection may buffer this much. Default: 33554432 (32 MiB).
    pub send_window_bytes: u64,
    /// Receive window per request stream (requests carry no bodies, so this only bounds misbehaving
    /// clients). Default: 1048576.
    pub stream_receive_window_bytes: u32,
    /// Seconds a QUIC connection may stay idle. Default: 30.
    pub idle_timeout_secs: u64,
    /// Accept requests in 0-RTT early data, which an attacker can replay: requests read before the handshake
    /// completes with an unsafe method (POST, PUT, PATCH, DELETE) get `425 Too Early` (RFC 8470) and the
    /// client sends them again after the handshake; safe ones are served and carry `Early-Data: 1` upstream.
    /// Default: false.
    pub zero_rtt: bool,
}

/// An optional plain-HTTP listener for internal tiers and tests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address; empty disables it. Default: disabled.
    pub listen: String,
}

/// The admin listener: `/metrics`, `/healthz`, and the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address. Default: `127.0.0.1:9901`.
    pub listen: String,
    /// Bearer token for the admin API and `/metrics` (`/healthz` stays open); without it the admin API is off.
    /// Default: none.
    pub bearer_token: Option<String>,
    /// For tests only: `POST /clock` (behind the bearer token) moves the edge's clock forward, so a test makes
    /// stored responses stale without sleeping. Never set it in production. Default: false.
    pub test_clock: bool,
}

/// One site: the hosts it answers for and the upstream it fills from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Name used in cache keys and logs. Default: `default`.
    #[serde(default = "default_site_name")]
    pub name: String,
    /// `Host` values (port ignored, case-insensitive) this site answers.
    pub hosts: Vec<String>,
    /// Upstream base URL (`http://host:port`): the origin or a parent edge.
    pub upstream: String,
    /// Path prefixes the cache does not handle: requests are forwarded and nothing is stored
    /// (`Cache-Status: …; fwd=bypass`). Default: none.
    #[serde(default)]
    pub bypass_paths: Vec<String>,
    /// Path prefixes served only through a signed URL (`/t/<token>/…`); others get 403. Default: none.
    /// Prefixes are compared with the request's canonical path, so every percent-encoded spelling of a path
    /// under one is covered.
    #[serde(default)]
    pub signed_paths: Vec<String>,
    /// Send `Authorization` and `Cookie` upstream on cacheable fills. Requests with `Authorization` are
    /// passed, never cached, either way; set this only when the upstream's answers do not depend on the
    /// cookies, since one fill's answer is shared by every viewer. Default: false.
    #[serde(default)]
    pub forward_credentials: bool,
    /// Request fields never sent upstream (case-insensitive), on fills and passes alike. Hop-by-hop fields
    /// never are. Default: none.
    #[serde(default)]
    pub strip_request_fields: Vec<String>,
    /// Which query parameters make a cache key: `"all"` (sorted, so their order does not matter), `"none"`
    /// (the query is sent upstream but ignored by the cache, so cache-busting parameters cannot fill it), or
    /// `"listed"` (only the parameters named in `query_params`). Default: `"all"`. Whatever it says, CMCD
    /// (CTA-5004 player data: the `CMCD` parameter in any percent-encoded spelling, and the `CMCD-*` request
    /// fields) is never part of a key and is not sent upstream, as CDNs do unless told to forward it: one
    /// player's data on a fill shared by every viewer would mislead the origin and split its cache. The edge
    /// logs it and counts it in its per-title summaries (`[control] stats_secs`) instead.
    #[serde(default)]
    pub query_key: QueryKey,
    /// With `query_key = "listed"`: the parameter names that count. Default: none.
    #[serde(default)]
    pub query_params: Vec<String>,
    /// Requests passed to the upstream at once for this site (credentials, bypassed paths, answers that may not
    /// be stored, unsafe methods); one more gets 503 with `Retry-After`. Default: 1000.
    #[serde(default = "default_max_passes")]
    pub max_passes: usize,
    /// Parent edges (shield tier) this site fills from before its `upstream`: base URLs of their plain-HTTP
    /// listeners (`http://parent.internal:8081`, no path), at most 16. A fill goes to the parent ranked first
    /// for its cache key by rendezvous hashing among those not out (a failure takes a parent out for
    /// `limits.parent_retry_secs`), then the next, then `upstream`. Parents receive the site's first `hosts`
    /// entry as `Host`, so their own site must list it. Passes (credentials, bypassed paths, unsafe methods,
    /// answers that may not be stored) go to `upstream` directly: no parent could cache them. Default: none.
    #[serde(default)]
    pub parents: Vec<String>,
    /// Path routes: requests whose canonical path a route matches go to the route's pool of upstream instances
    /// instead of `upstream` (the control plane's API and web front end beside the media, say). An exact
    /// `paths` entry wins, then the longest matching prefix. Default: none.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// This site's `prefetch.segments`: segments warmed after each media segment served; 0 turns prefetch off
    /// for the site. Default: `prefetch.segments`.
    #[serde(default)]
    pub prefetch_segments: Option<usize>,
}

/// A path route of a site: the paths it takes and the pool of interchangeable instances that serve them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name in logs and metric labels (`edge_pool_*{route}`), unique within the site.
    pub name: String,
    /// Path prefixes this route takes, compared with the canonical path. Default: none.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Exact paths this route takes (`/` for a front end's page). Default: none.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Base URLs (`http://host:port`) of the instances, 1 to 64; requests go to the one with fewer outstanding
    /// requests of two chosen at random among the healthy.
    pub upstreams: Vec<String>,
    /// As the site's: send `Authorization` and `Cookie` on cacheable fills. An API whose shared answers never
    /// depend on who asks (and say `private` when they do) needs it. Default: false.
    #[serde(default)]
    pub forward_credentials: bool,
    /// As the site's. Default: `"all"`.
    #[serde(default)]
    pub query_key: QueryKey,
    #[serde(default)]
    pub query_params: Vec<String>,
    /// As the site's. Default: 1000.
    #[serde(default = "default_max_passes")]
    pub max_passes: usize,
    /// Other instances an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) is sent to after one fails to
    /// answer (unreachable, timed out, 502, 503, 504). Any request is sent again when its connection was
    /// refused, since it never reached an instance. Default: 2.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Failed answers in a row (unreachable, timed out, 5xx) that take an instance out (passive outlier
    /// ejection); 0 turns it off. Default: 3.
    #[serde(default = "default_eject_after")]
    pub eject_after_failures: u32,
    /// Seconds a first ejection lasts; each ejection in a row lasts twice the last, up to 8×. Default: 10.
    #[serde(default = "default_eject_secs")]
    pub eject_secs: u64,
    /// Active health checks; without them, only passive ejection judges the instances. Default: none.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

/// An active health check: `GET path` on every instance each interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path probed; any 2xx within the timeout is good. Default: `/healthz`.
    pub path: String,
    /// Milliseconds between probes of one instance. Default: 1000.
    pub interval_ms: u64,
    /// Milliseconds a probe may take. Default: 1000.
    pub timeout_ms: u64,
    /// Good probes in a row that bring an instance back. Default: 2.
    pub healthy_threshold: u32,
    /// Bad probes in a row that take an instance out. Default: 2.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/healthz".into(),
            interval_ms: 1000,
            timeout_ms: 1000,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

/// Most instances in one route's pool.
pub const MAX_POOL: usize = 64;

/// A base URL an upstream is named by: `http://HOST[:PORT]`, nothing more; its `host:port`.
pub fn upstream_authority(field: &str, url: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| ConfigError::new(field, format!("`{url}` is not a URL: {e}")))?;
    ensure(
        parsed.scheme() == "http"
            && parsed.host_str().is_some()
            && parsed.path() == "/"
            && parsed.query().is_none()
            && parsed.username().is_empty(),
        field,
        format!("`{url}` must be http://HOST[:PORT] with no path"),
    )?;
    Ok(format!(
        "{}:{}",
        parsed.host_str().unwrap_or_default(),
        parsed.port_or_known_default().unwrap_or(80)
    ))
}

fn validate_routes(site: usize, routes: &[RouteConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    let mut taken = std::collections::HashSet::new();
    for (j, route) in routes.iter().enumerate() {
        let field = |name: &str| format!("site[{site}].route[{j}].{name}");
        ensure(
            !route.name.is_empty()
                && route
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            &field("name"),
            "must be letters, digits, - and _",
        )?;
        ensure(
            names.insert(route.name.clone()),
            &field("name"),
            format!("`{}` names two routes", route.name),
        )?;
        ensure(
            !route.prefixes.is_empty() || !route.paths.is_empty(),
            &field("prefixes"),
            "a route needs at least one prefix or path",
        )?;
        for (name, list) in [("prefixes", &route.prefixes), ("paths", &route.paths)] {
            for path in list {
                ensure(
                    path.starts_with('/'),
                    &field(name),
                    format!("`{path}` must start with /"),
                )?;
                let canonical = shared::path::canonical_prefix(path).map_err(|e| {
                    ConfigError::new(field(name), format!("`{path}` is not a path: {e}"))
                })?;
                ensure(
                    taken.insert((name, canonical)),
                    &field(name),
                    format!("`{path}` is taken by two routes"),
                )?;
            }
        }
        ensure(
            (1..=MAX_POOL).contains(&route.upstreams.len()),
            &field("upstreams"),
            format!("needs 1 to {MAX_POOL} base URLs"),
        )?;
        let mut seen = std::collections::HashSet::new();
        for (k, url) in route.upstreams.iter().enumerate() {
            let authority =
                upstream_authority(&format!("site[{site}].route[{j}].upstreams[{k}]"), url)?;
            ensure(
                seen.insert(authority),
                &field("upstreams"),
                format!("`{url}` is listed twice"),
            )?;
        }
        ensure(
            (1..=MAX_CONNECTIONS).contains(&route.max_passes),
            &field("max_passes"),
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        )?;
        ensure(
            route.query_key == QueryKey::Listed || route.query_params.is_empty(),
            &field("query_params"),
            "is read only with query_key = \"listed\"",
        )?;
        ensure(route.retries <= 8, &field("retries"), "must be at most 8")?;
        ensure(
            (1..=3600).contains(&route.eject_secs),
            &field("eject_secs"),
            "must be between 1 and 3600",
        )?;
        if let Some(check) = &route.health_check {
            ensure(
                check.path.starts_with('/') && shared::path::canonical_prefix(&check.path).is_ok(),
                &field("health_check.path"),
                format!("`{}` is not a path", check.path),
            )?;
            ensure(
                (100..=60_000).contains(&check.interval_ms),
                &field("health_check.interval_ms"),
                "must be between 100 and 60000",
            )?;
            ensure(
                (10..=60_000).contains(&check.timeout_ms),
                &field("health_check.timeout_ms"),
                "must be between 10 and 60000",
            )?;
            for (name, n) in [
                ("healthy_threshold", check.healthy_threshold),
                ("unhealthy_threshold", check.unhealthy_threshold),
            ] {
                ensure(
                    (1..=100).contains(&n),
                    &field(&format!("health_check.{name}")),
                    "must be between 1 and 100",
                )?;
            }
        }
    }
    Ok(())
}

fn default_retries() -> u32 {
    2
}

fn default_eject_after() -> u32 {
    3
}

fn default_eject_secs() -> u64 {
    10
}

/// Which query parameters are part of a cache key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryKey {
    #[default]
    All,
    None,
    Listed,
}

fn default_max_passes() -> usize {
    1000
}

fn default_site_name() -> String {
    "default".into()
}

/// The tiered cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory tier size in bytes (keys and values weighed). Default: 268435456 (256 MiB).
    pub memory_bytes: u64,
    /// Disk tier folder. Default: `<data_dir>/cache`.
    pub disk_dir: Option<PathBuf>,
    /// Disk tier size in bytes; 0 disables the disk tier. Default: 1073741824 (1 GiB).
    pub disk_bytes: u64,
    /// Objects are cached as slices of this many bytes; a Range request reads only the slices it needs.
    /// Default: 2097152 (2 MiB).
    pub slice_bytes: u64,
    /// Upstream fills running at once (each holds up to one slice in memory); more requests wait. Default: 1024.
    pub max_fills: usize,
    /// Targeted cache-control fields (RFC 9213), in priority order: the first present replaces `Cache-Control`
    /// for this edge, and none of them is passed to clients. Default: `["CDN-Cache-Control"]`.
    pub targeted_fields: Vec<String>,
    /// RFC 5861 `stale-while-revalidate` when the upstream gives none: seconds a stale object is served while
    /// one background request revalidates it. Default: 0.
    pub stale_while_revalidate_secs: u64,
    /// RFC 5861 `stale-if-error` when the upstream gives none: seconds a stale object is served when the
    /// upstream fails or times out. Default: 300.
    pub stale_if_error_secs: u64,
    /// Heuristic freshness (RFC 9111 §4.2.2) for responses without an explicit lifetime: this percentage of the
    /// time since `Last-Modified`; 0 disables heuristics. Default: 10.
    pub heuristic_percent: u64,
    /// Upper bound on a heuristic lifetime. Default: 86400.
    pub heuristic_max_secs: u64,
    /// Lifetime of a 404 or 410 the upstream gives no lifetime for (negative caching); 0 stores none.
    /// Default: 10.
    pub negative_ttl_secs: u64,
    /// Variants (`Vary`) kept per URL; storing one more drops the oldest. Default: 16.
    pub max_variants: usize,
    /// A stored version not confirmed by the upstream for this long is not used (it is fetched anew); purge
    /// bans are kept this long. Default: 2592000 (30 days).
    pub max_retention_secs: u64,
    /// Client request directives `no-cache`, `max-age`, `min-fresh` and `no-store`: `ignore` (the default:
    /// the edge protects its upstream, a client cannot force a refetch) or `honor` (they are obeyed, and a
    /// request they send upstream says `fwd=request`). `only-if-cached` and `max-stale` are always honoured.
    pub client_directives: ClientDirectives,
    /// Evict media slices from the memory tier by what the edge knows of its viewers (the segments no active
    /// session will reach go first, the ones just ahead of sessions last; learned from the manifests it serves,
    /// read into the prefetch index also where prefetch is off), keeping them at 14/16 of `memory_bytes` in a tier (one
    /// foyer shard) of 15/16; foyer's S3-FIFO evicts the rest. `false`: S3-FIFO alone over the whole of
    /// `memory_bytes` in 8 shards. Default: true.
    pub evict_by_value: bool,
}

/// Prefetch: when a media segment is served (hit or miss), the edge warms the next segments of the same
/// rendition, learnt from the HLS media playlists and DASH MPDs it serves (and the `sidx` of single-file
/// renditions), or the object the player's CMCD `nor`/`nrr` names (that one first). A prefetch is an ordinary
/// fill of the segment's slices: a request for it while it runs joins it, and what is cached is not fetched.
/// It is subordinate to demand: shed when demand fills queue or fill slots run short, and held to a budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefetchConfig {
    /// Segments warmed after each media segment served, per site unless the site says (`prefetch_segments`);
    /// 0 turns prefetch off, at most 16. Default: 1.
    pub segments: usize,
    /// Prefetches running at once over all upstreams; each holds a fill slot while it runs. Default: 16.
    pub max_in_flight: usize,
    /// Prefetches running at once against one upstream, at most `max_in_flight`. Default: 8.
    pub max_in_flight_per_upstream: usize,
    /// Bytes per second prefetches may bring over all upstreams (a token bucket holding one second; a
    /// prefetch larger than what is left runs it into debt, which holds the next back). At least 65536.
    /// Default: 134217728 (128 MiB/s).
    pub bytes_per_sec: u64,
    /// Bytes per second prefetches may bring from one upstream, at most `bytes_per_sec`. Default: 67108864
    /// (64 MiB/s).
    pub bytes_per_sec_per_upstream: u64,
    /// A prefetched object no request asked for within this many seconds counts as wasted
    /// (`edge_prefetch_wasted_total`), 1 to 86400. Default: 60.
    pub unused_secs: u64,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            segments: defaults::PREFETCH_SEGMENTS,
            max_in_flight: defaults::PREFETCH_MAX_IN_FLIGHT,
            max_in_flight_per_upstream: defaults::PREFETCH_MAX_IN_FLIGHT_PER_UPSTREAM,
            bytes_per_sec: defaults::PREFETCH_BYTES_PER_SEC,
            bytes_per_sec_per_upstream: defaults::PREFETCH_BYTES_PER_SEC_PER_UPSTREAM,
            unused_secs: defaults::PREFETCH_UNUSED_SECS,
        }
    }
}

/// Segments a site may warm after each one served.
pub const MAX_PREFETCH_SEGMENTS: usize = 16;

/// `[fill]`: proactive fill (see `crate::fill`). When the quiet hours open, the edge asks the control plane
/// (`control.url`) for the titles it should hold within `budget_bytes` — the most played first, whole titles —
/// and fills their files through its cache: one file after another, `max_in_flight` at once, at most
/// `bytes_per_sec`, and only while demand leaves fill slots free. Cached files cost a lookup; when the window
/// closes the fill stops and the next night starts from a fresh plan. `POST /fill` on the admin listener runs
/// one at once, whatever the hour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FillConfig {
    /// Fill in the quiet hours; needs `control.url`. Default: false.
    pub enabled: bool,
    /// The daily window, `HH:MM-HH:MM` in UTC; it may pass midnight (`22:00-04:00`); `00:00-24:00` is always.
    /// Default: `02:00-06:00`.
    pub quiet_hours: String,
    /// Bytes the plan may take, at most the cache's size (the memory tier and the disk tier together);
    /// 0: half the disk tier, or half the memory tier without one. Default: 0.
    pub budget_bytes: u64,
    /// Bytes per second the fill may bring, at least 65536 (a token bucket holding one second, as prefetch's).
    /// Default: 33554432 (32 MiB/s).
    pub bytes_per_sec: u64,
    /// Files filled at once, 1 to 64. Default: 2.
    pub max_in_flight: usize,
    /// The site (its `name`) whose upstream and cache the plan's files are filled through; empty: the first
    /// site. Default: empty.
    pub site: String,
}

impl Default for FillConfig {
    fn default() -> Self {
        FillConfig {
            enabled: false,
            quiet_hours: defaults::FILL_QUIET_HOURS.into(),
            budget_bytes: 0,
            bytes_per_sec: defaults::FILL_BYTES_PER_SEC,
            max_in_flight: defaults::FILL_MAX_IN_FLIGHT,
            site: String::new(),
        }
    }
}

/// `[cmsd]`: CMSD (CTA-5006) response headers (see `crate::cmsd`). Each costs a few dozen bytes per response;
/// `dynamic` one `getsockopt(TCP_INFO)` per request.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CmsdConfig {
    /// `CMSD-Static` on every answer of a GET or HEAD: the object type (`ot`), streaming format (`sf`), stream
    /// type (`st`) when known, and `cdn-prefetched` on the first use of a prefetched object. Default: true.
    #[serde(rename = "static")]
    pub send_static: bool,
    /// `CMSD-Dynamic`: the edge's name with its estimated throughput to the client (`etp`, kbit/s) and round
    /// trip (`rtt`, ms) from the TCP connection (HTTP/1.1 and HTTP/2; HTTP/3 answers carry `du` only), and `du`
    /// while the fill slots are short (demand queued, or 75 % of `cache.max_fills` taken). Default: true.
    #[serde(rename = "dynamic")]
    pub send_dynamic: bool,
}

impl Default for CmsdConfig {
    fn default() -> Self {
        CmsdConfig {
            send_static: true,
            send_dynamic: true,
        }
    }
}

/// The policy for client request directives that would send requests upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientDirectives {
    Ignore,
    Honor,
}

/// Limits on every connection and on upstream requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Client connections at once per listener. Default: 10000.
    pub max_connections: usize,
    /// Threads that serve the player listeners' TCP connections (HTTP/1.1 and HTTP/2), each running its own
    /// connections from accept to close, as nginx runs a worker per core: no request wakes another thread.
    /// 0: connections share the work-stealing runtime with everything else; at most 1024. Default: one per
    /// core.
    pub connection_threads: Option<usize>,
    /// Seconds for a complete HTTP/1.1 request head, idle keep-alive time included. Default: 10.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay idle before it is closed gracefully: no request in flight and none
    /// started (pings do not count), or no byte moving during a transfer. HTTP/2 included. Default: 60.
    pub idle_timeout_secs: u64,
    /// Seconds after which a connection is asked to finish (GOAWAY on HTTP/2, `Connection: close` on
    /// HTTP/1.1) so that no client holds one for ever; its requests in flight complete. Default: 3600.
    pub max_connection_age_secs: u64,
    /// The send deadline: seconds a response may wait for the client to take its next bytes (a full socket, an
    /// HTTP/2 window never opened) before its connection is closed, so no client pins bodies in memory.
    /// Default: 30.
    pub send_timeout_secs: u64,
    /// Largest request head in bytes. Default: 16384.
    pub max_header_bytes: usize,
    /// Request bodies (POST, PUT, PATCH, DELETE are forwarded to the upstream) larger than this get 413.
    /// Default: 1048576.
    pub max_request_body_bytes: usize,
    /// Request bodies held in memory at once, in bytes, over every connection: each body being read reserves
    /// `max_request_body_bytes` of it, and a request that finds none left gets 503 with `Retry-After`.
    /// Default: 67108864 (64 MiB).
    pub request_bodies_bytes: usize,
    /// Seconds to receive a whole request body; a slower one gets 408. Default: 30.
    pub request_body_timeout_secs: u64,
    /// HTTP/2 streams per connection. Default: 256.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window per stream in bytes (the connection gets 4x). Default: 4194304.
    pub h2_window_bytes: u32,
    /// Seconds for a TLS handshake. Default: 10.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds open requests get on shutdown. Default: 10.
    pub shutdown_grace_secs: u64,
    /// Seconds to connect to an upstream. Default: 3.
    pub upstream_connect_timeout_secs: u64,
    /// Seconds for an upstream's response head. Default: 10.
    pub upstream_header_timeout_secs: u64,
    /// Seconds an upstream body may stall before the fill is abandoned. Default: 10.
    pub upstream_body_idle_timeout_secs: u64,
    /// Seconds a whole fill (one slice from the upstream) may take; past it the fill fails with 504 and
    /// nothing is stored. Default: 120.
    pub upstream_fill_timeout_secs: u64,
    /// Seconds a parent edge that failed (no connection, no response head in time, a 5xx other than 508) is
    /// left out; then the next fill of one of its keys tries it again. Default: 10.
    pub parent_retry_secs: u64,
    /// A request whose `CDN-Loop` already names `cdn_id` more than this many times is refused with
    /// `508 Loop Detected`, never forwarded. Each tier a request legitimately crosses adds one (a child and a
    /// parent: two at the origin). Default: 3.
    pub max_loop_hops: usize,
}

/// CORS for browser players.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to read responses: `*`, or exact origins (`https://player.example`). Empty: no CORS
    /// headers. Default: `["*"]`.
    pub allow_origins: Vec<String>,
}

/// The structured log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` or `text`. Default: `json`.
    pub format: LogFormat,
    /// Filter directive; `RUST_LOG` overrides. Default: `info`.
    pub level: String,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            name: defaults::NAME.into(),
            cdn_id: defaults::CDN_ID.into(),
            data_dir: defaults::DATA_DIR.into(),
            tls: TlsConfig::default(),
            h3: H3Config::default(),
            http: HttpConfig::default(),
            admin: AdminConfig::default(),
            sites: Vec::new(),
            cache: CacheConfig::default(),
            prefetch: PrefetchConfig::default(),
            fill: FillConfig::default(),
            cmsd: CmsdConfig::default(),
            limits: LimitsConfig::default(),
            cors: CorsConfig::default(),
            log: LogConfig::default(),
            control: ControlConfig::default(),
            signing_keys: Vec::new(),
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: defaults::TLS_LISTEN.into(),
            cert: None,
            key: None,
        }
    }
}

impl Default for H3Config {
    fn default() -> Self {
        H3Config {
            enabled: true,
            alt_svc_max_age_secs: defaults::H3_ALT_SVC_MAX_AGE_SECS,
            max_concurrent_streams: defaults::H3_MAX_CONCURRENT_STREAMS,
            send_window_bytes: defaults::H3_SEND_WINDOW_BYTES,
            stream_receive_window_bytes: defaults::H3_STREAM_RECEIVE_WINDOW_BYTES,
            idle_timeout_secs: defaults::H3_IDLE_TIMEOUT_SECS,
            zero_rtt: false,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: defaults::ADMIN_LISTEN.into(),
            bearer_token: None,
            test_clock: false,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_bytes: defaults::MEMORY_BYTES,
            disk_dir: None,
            disk_bytes: defaults::DISK_BYTES,
            slice_bytes: defaults::SLICE_BYTES,
            max_fills: defaults::MAX_FILLS,
            targeted_fields: vec!["CDN-Cache-Control".into()],
            stale_while_revalidate_secs: 0,
            stale_if_error_secs: 300,
            heuristic_percent: 10,
            heuristic_max_secs: 86_400,
            negative_ttl_secs: 10,
            max_variants: 16,
            max_retention_secs: 30 * 86_400,
            client_directives: ClientDirectives::Ignore,
            evict_by_value: true,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: defaults::MAX_CONNECTIONS,
            connection_threads: None,
            header_read_timeout_secs: defaults::HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: defaults::IDLE_TIMEOUT_SECS,
            max_connection_age_secs: 3600,
            send_timeout_secs: 30,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            max_request_body_bytes: 1 << 20,
            request_bodies_bytes: 64 << 20,
            request_body_timeout_secs: 30,
            h2_max_concurrent_streams: defaults::H2_MAX_CONCURRENT_STREAMS,
            h2_window_bytes: defaults::H2_WINDOW_BYTES,
            tls_handshake_timeout_secs: defaults::TLS_HANDSHAKE_TIMEOUT_SECS,
            shutdown_grace_secs: defaults::SHUTDOWN_GRACE_SECS,
            upstream_connect_timeout_secs: defaults::UPSTREAM_CONNECT_TIMEOUT_SECS,
            upstream_header_timeout_secs: defaults::UPSTREAM_HEADER_TIMEOUT_SECS,
            upstream_body_idle_timeout_secs: defaults::UPSTREAM_BODY_IDLE_TIMEOUT_SECS,
            upstream_fill_timeout_secs: 120,
            parent_retry_secs: defaults::PARENT_RETRY_SECS,
            max_loop_hops: defaults::MAX_LOOP_HOPS,
        }
    }
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allow_origins: defaults::CORS_ALLOW_ORIGINS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: defaults::LOG_LEVEL.into(),
        }
    }
}

impl EdgeConfig {
    /// Loads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let config: EdgeConfig = shared::config::load_toml(path)?;
        config.validate()?;
        Ok(config)
    }

    /// The sites, or the default site when none is configured.
    pub fn effective_sites(&self) -> Vec<SiteConfig> {
        if !self.sites.is_empty() {
            return self.sites.clone();
        }
        vec![SiteConfig {
            name: default_site_name(),
            hosts: defaults::SITE_HOSTS.iter().map(|s| s.to_string()).collect(),
            upstream: defaults::UPSTREAM.into(),
            bypass_paths: Vec::new(),
            signed_paths: Vec::new(),
            forward_credentials: false,
            strip_request_fields: Vec::new(),
            query_key: QueryKey::All,
            query_params: Vec::new(),
            max_passes: default_max_passes(),
            parents: Vec::new(),
            routes: Vec::new(),
            prefetch_segments: None,
        }]
    }

    pub fn tls_cert(&self) -> PathBuf {
        self.tls
            .cert
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls/cert.pem"))
    }

    pub fn tls_key(&self) -> PathBuf {
        self.tls
            .key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls/key.pem"))
    }

    pub fn disk_dir(&self) -> PathBuf {
        self.cache
            .disk_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }

    /// `None` when the listener is disabled.
    pub fn tls_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("tls.listen", &self.tls.listen)
    }

    pub fn http_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("http.listen", &self.http.listen)
    }

    pub fn admin_addr(&self) -> Result<SocketAddr, ConfigError> {
        check_socket_addr("admin.listen", &self.admin.listen)
    }

    /// Checks the `[prefetch]` fields.
    fn validate_prefetch(&self) -> Result<(), ConfigError> {
        let p = &self.prefetch;
        ensure(
            p.segments <= MAX_PREFETCH_SEGMENTS,
            "prefetch.segments",
            format!("must be between 0 and {MAX_PREFETCH_SEGMENTS}"),
        )?;
        ensure(
            (1..=4096).contains(&p.max_in_flight),
            "prefetch.max_in_flight",
            "must be between 1 and 4096",
        )?;
        ensure(
            (1..=p.max_in_flight).contains(&p.max_in_flight_per_upstream),
            "prefetch.max_in_flight_per_upstream",
            "must be between 1 and prefetch.max_in_flight",
        )?;
        ensure(
            p.bytes_per_sec >= 64 * 1024,
            "prefetch.bytes_per_sec",
            "must be at least 65536",
        )?;
        ensure(
            (64 * 1024..=p.bytes_per_sec).contains(&p.bytes_per_sec_per_upstream),
            "prefetch.bytes_per_sec_per_upstream",
            "must be at least 65536 and at most prefetch.bytes_per_sec",
        )?;
        ensure(
            (1..=86_400).contains(&p.unused_secs),
            "prefetch.unused_secs",
            "must be between 1 and 86400",
        )
    }

    /// Checks the `[fill]` fields (after `[cache]` and `[control]`).
    fn validate_fill(&self) -> Result<(), ConfigError> {
        let f = &self.fill;
        crate::fill::QuietHours::parse(&f.quiet_hours)
            .map_err(|reason| ConfigError::new("fill.quiet_hours", reason))?;
        let cache_bytes = self
            .cache
            .memory_bytes
            .saturating_add(self.cache.disk_bytes);
        ensure(
            f.budget_bytes <= cache_bytes,
            "fill.budget_bytes",
            format!("must be at most the cache's size ({cache_bytes} bytes), or 0 for half of it"),
        )?;
        ensure(
            f.bytes_per_sec >= 64 * 1024,
            "fill.bytes_per_sec",
            "must be at least 65536",
        )?;
        ensure(
            (1..=64).contains(&f.max_in_flight),
            "fill.max_in_flight",
            "must be between 1 and 64",
        )?;
        ensure(
            f.site.is_empty() || self.effective_sites().iter().any(|s| s.name == f.site),
            "fill.site",
            format!("names no [[site]] (`{}`)", f.site),
        )?;
        ensure(
            !f.enabled || !self.control.url.is_empty(),
            "fill.enabled",
            "needs control.url: the plan comes from the control plane",
        )
    }

    /// The bytes a fill plan may take: `fill.budget_bytes`, or half the disk tier (the memory tier without
    /// one).
    pub fn fill_budget(&self) -> u64 {
        match self.fill.budget_bytes {
            0 if self.cache.disk_bytes > 0 => self.cache.disk_bytes / 2,
            0 => self.cache.memory_bytes / 2,
            budget => budget,
        }
    }

    /// Checks every field; the error names the first offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.name.is_empty()
                && self
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "name",
            "must be a token of letters, digits, '-', '_' or '.' (it goes into Cache-Status)",
        )?;
        ensure(
            !self.cdn_id.is_empty()
                && self.cdn_id.len() <= 64
                && self
                    .cdn_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
            "cdn_id",
            "must be 1 to 64 letters, digits, '-', '_', '.' or ':' (a host name or pseudonym, RFC 8586)",
        )?;
        ensure(
            (1..=64).contains(&self.limits.max_loop_hops),
            "limits.max_loop_hops",
            "must be between 1 and 64",
        )?;
        ensure(
            (1..=3600).contains(&self.limits.parent_retry_secs),
            "limits.parent_retry_secs",
            "must be between 1 and 3600",
        )?;
        ensure(
            !self.data_dir.as_os_str().is_empty(),
            "data_dir",
            "must not be empty",
        )?;
        let tls = self.tls_addr()?;
        let http = self.http_addr()?;
        let admin = self.admin_addr()?;
        ensure(
            tls.is_some() || http.is_some(),
            "tls.listen",
            "at least one of tls.listen and http.listen is needed",
        )?;
        for (field, addr) in [("tls.listen", tls), ("http.listen", http)] {
            ensure(
                addr.is_none_or(|a| a != admin || a.port() == 0),
                field,
                "must differ from admin.listen: the admin API has its own listener",
            )?;
        }
        if let Some(token) = &self.admin.bearer_token {
            ensure(
                token.len() >= 16,
                "admin.bearer_token",
                "must be at least 16 characters",
            )?;
            ensure(
                token.bytes().all(|b| b.is_ascii_graphic()),
                "admin.bearer_token",
                "must be printable ASCII",
            )?;
        }
        let mut seen_hosts = std::collections::HashSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            let field = |name: &str| format!("site[{i}].{name}");
            ensure(
                !site.hosts.is_empty(),
                &field("hosts"),
                "needs at least one host",
            )?;
            for host in &site.hosts {
                ensure(
                    !host.is_empty() && !host.contains('/') && !host.contains(char::is_whitespace),
                    &field("hosts"),
                    format!("`{host}` is not a host name"),
                )?;
                ensure(
                    seen_hosts.insert(host.to_ascii_lowercase()),
                    &field("hosts"),
                    format!("`{host}` belongs to two sites"),
                )?;
            }
            let upstream = url::Url::parse(&site.upstream).map_err(|e| {
                ConfigError::new(
                    field("upstream"),
                    format!("`{}` is not a URL: {e}", site.upstream),
                )
            })?;
            ensure(
                upstream.scheme() == "http"
                    && upstream.host_str().is_some()
                    && upstream.path() == "/",
                &field("upstream"),
                "must be http://HOST[:PORT] with no path",
            )?;
            for (name, prefixes) in [
                ("bypass_paths", &site.bypass_paths),
                ("signed_paths", &site.signed_paths),
            ] {
                for prefix in prefixes {
                    ensure(
                        prefix.starts_with('/'),
                        &field(name),
                        format!("`{prefix}` must start with /"),
                    )?;
                    if let Err(e) = shared::path::canonical_prefix(prefix) {
                        return Err(ConfigError::new(
                            field(name),
                            format!("`{prefix}` is not a path prefix: {e}"),
                        ));
                    }
                }
            }
            ensure(
                site.parents.len() <= MAX_PARENTS,
                &field("parents"),
                format!(
                    "lists {} parents; at most {MAX_PARENTS}",
                    site.parents.len()
                ),
            )?;
            let mut seen_parents = std::collections::HashSet::new();
            for (j, parent) in site.parents.iter().enumerate() {
                let field = format!("site[{i}].parents[{j}]");
                let url = url::Url::parse(parent).map_err(|e| {
                    ConfigError::new(&field, format!("`{parent}` is not a URL: {e}"))
                })?;
                ensure(
                    url.scheme() != "https",
                    &field,
                    "https is not spoken upstream yet: use the parent's plain-HTTP listener ([http] listen)",
                )?;
                ensure(
                    url.scheme() == "http"
                        && url.host_str().is_some()
                        && url.path() == "/"
                        && url.query().is_none()
                        && url.username().is_empty(),
                    &field,
                    "must be http://HOST[:PORT] with no path",
                )?;
                let authority = format!(
                    "{}:{}",
                    url.host_str().unwrap_or_default(),
                    url.port_or_known_default().unwrap_or(80)
                );
                ensure(
                    seen_parents.insert(authority.clone()),
                    &field,
                    format!("`{parent}` is listed twice"),
                )?;
                ensure(
                    upstream.host_str() != url.host_str()
                        || upstream.port_or_known_default() != url.port_or_known_default(),
                    &field,
                    "is the site's upstream itself",
                )?;
            }
            ensure(
                (1..=MAX_CONNECTIONS).contains(&site.max_passes),
                &field("max_passes"),
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            )?;
            ensure(
                site.query_key == QueryKey::Listed || site.query_params.is_empty(),
                &field("query_params"),
                "is read only with query_key = \"listed\"",
            )?;
            for name in &site.strip_request_fields {
                ensure(
                    http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                    &field("strip_request_fields"),
                    format!("`{name}` is not a header field name"),
                )?;
            }
            ensure(
                site.signed_paths.is_empty() || !self.signing_keys.is_empty(),
                &field("signed_paths"),
                "needs at least one [[signing_key]]",
            )?;
            validate_routes(i, &site.routes)?;
            ensure(
                site.prefetch_segments
                    .is_none_or(|k| k <= MAX_PREFETCH_SEGMENTS),
                &field("prefetch_segments"),
                format!("must be between 0 and {MAX_PREFETCH_SEGMENTS}"),
            )?;
        }
        self.validate_prefetch()?;
        let c = &self.cache;
        ensure(
            c.memory_bytes >= 1 << 20,
            "cache.memory_bytes",
            "must be at least 1 MiB",
        )?;
        ensure(
            (64 * 1024..=64 << 20).contains(&c.slice_bytes),
            "cache.slice_bytes",
            "must be between 65536 and 67108864",
        )?;
        ensure(
            c.disk_bytes == 0 || c.disk_bytes >= 8 * slice_block_bytes(c.slice_bytes),
            "cache.disk_bytes",
            format!(
                "must be 0 (no disk tier) or at least {} bytes for this slice size",
                8 * slice_block_bytes(c.slice_bytes)
            ),
        )?;
        ensure(c.max_fills > 0, "cache.max_fills", "must be at least 1")?;
        shared::token::validate_keys(&self.signing_keys)?;
        ensure(
            c.heuristic_percent <= 100,
            "cache.heuristic_percent",
            "must be between 0 and 100",
        )?;
        ensure(
            c.max_variants > 0,
            "cache.max_variants",
            "must be at least 1",
        )?;
        ensure(
            c.max_retention_secs >= 60,
            "cache.max_retention_secs",
            "must be at least 60",
        )?;
        for field in &c.targeted_fields {
            ensure(
                http::HeaderName::from_bytes(field.as_bytes()).is_ok(),
                "cache.targeted_fields",
                format!("`{field}` is not a header name"),
            )?;
        }
        let control = &self.control;
        if !control.url.is_empty() {
            let url = url::Url::parse(&control.url)
                .map_err(|e| ConfigError::new("control.url", format!("not a URL: {e}")))?;
            ensure(
                url.scheme() == "http" && url.host().is_some() && url.path() == "/",
                "control.url",
                "must be a base URL such as http://control.example:8000",
            )?;
            ensure(
                control
                    .registration_secret
                    .as_ref()
                    .is_some_and(|s| s.len() >= 16),
                "control.registration_secret",
                "is needed with control.url (the control plane's fleet.registration_secret)",
            )?;
            ensure(
                !control.region.is_empty()
                    && control.region.len() <= 64
                    && control
                        .region
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
                "control.region",
                "is 1 to 64 letters, digits, `-`, `_` or `.`",
            )?;
            ensure(
                (1..=300).contains(&control.heartbeat_secs),
                "control.heartbeat_secs",
                "must be between 1 and 300",
            )?;
            ensure(
                control.stats_secs <= crate::stats::MAX_INTERVAL_SECS,
                "control.stats_secs",
                "must be between 0 (no summaries) and 3600",
            )?;
            ensure(
                (1..=999).contains(&control.stats_max_titles),
                "control.stats_max_titles",
                "must be between 1 and 999 (the control plane takes 1000 titles a summary, `other` among them)",
            )?;
        }
        self.validate_fill()?;
        ensure(
            self.limits.connection_threads.is_none_or(|n| n <= 1024),
            "limits.connection_threads",
            "must be between 0 (the shared runtime) and 1024",
        )?;
        let l = &self.limits;
        for (field, value) in [
            (
                "limits.header_read_timeout_secs",
                l.header_read_timeout_secs,
            ),
            (
                "limits.tls_handshake_timeout_secs",
                l.tls_handshake_timeout_secs,
            ),
            (
                "limits.upstream_connect_timeout_secs",
                l.upstream_connect_timeout_secs,
            ),
            (
                "limits.upstream_header_timeout_secs",
                l.upstream_header_timeout_secs,
            ),
            (
                "limits.upstream_body_idle_timeout_secs",
                l.upstream_body_idle_timeout_secs,
            ),
            (
                "limits.request_body_timeout_secs",
                l.request_body_timeout_secs,
            ),
            ("limits.max_connection_age_secs", l.max_connection_age_secs),
            ("limits.send_timeout_secs", l.send_timeout_secs),
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            ("h3.idle_timeout_secs", self.h3.idle_timeout_secs),
            (
                "limits.upstream_fill_timeout_secs",
                l.upstream_fill_timeout_secs,
            ),
        ] {
            ensure(value > 0, field, "must be at least 1")?;
            ensure(
                value <= MAX_SECS,
                field,
                format!("must be at most {MAX_SECS} (30 days)"),
            )?;
        }
        // Lifetimes: arithmetic on them and the clock must not overflow.
        for (field, value) in [
            ("limits.shutdown_grace_secs", l.shutdown_grace_secs),
            (
                "cache.stale_while_revalidate_secs",
                c.stale_while_revalidate_secs,
            ),
            ("cache.stale_if_error_secs", c.stale_if_error_secs),
            ("cache.heuristic_max_secs", c.heuristic_max_secs),
            ("cache.negative_ttl_secs", c.negative_ttl_secs),
            ("cache.max_retention_secs", c.max_retention_secs),
            ("h3.alt_svc_max_age_secs", self.h3.alt_svc_max_age_secs),
        ] {
            ensure(
                value <= MAX_LIFETIME_SECS,
                field,
                format!("must be at most {MAX_LIFETIME_SECS} (10 years)"),
            )?;
        }
        ensure(
            (1..=MAX_CONNECTIONS).contains(&l.max_connections),
            "limits.max_connections",
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        )?;
        ensure(
            l.request_bodies_bytes >= l.max_request_body_bytes,
            "limits.request_bodies_bytes",
            "must be at least limits.max_request_body_bytes",
        )?;
        ensure(
            (1024..=MAX_HEADER_BYTES).contains(&l.max_header_bytes),
            "limits.max_header_bytes",
            format!("must be between 1024 and {MAX_HEADER_BYTES}"),
        )?;
        ensure(
            l.h2_max_concurrent_streams > 0,
            "limits.h2_max_concurrent_streams",
            "must be at least 1",
        )?;
        // The connection window is 4 stream windows, and HTTP/2 windows end at 2^31 - 1.
        ensure(
            (65535..=MAX_H2_WINDOW_BYTES).contains(&l.h2_window_bytes),
            "limits.h2_window_bytes",
            format!("must be between 65535 and {MAX_H2_WINDOW_BYTES}"),
        )?;
        for origin in &self.cors.allow_origins {
            ensure(
                origin == "*"
                    || (origin.starts_with("http")
                        && origin.contains("://")
                        && !origin.ends_with('/')),
                "cors.allow_origins",
                format!("`{origin}` must be `*` or an origin such as https://player.example"),
            )?;
        }
        ensure(
            !self.log.level.trim().is_empty(),
            "log.level",
            "must be a level such as `info`",
        )?;
        Ok(())
    }
}

/// The disk tier's block size for a slice size: a slice and its key must fit one block, or foyer drops it.
/// Upper bounds on config values, past which arithmetic on them (deadlines, windows, semaphores) would overflow
/// or panic: refused by `validate()` with the field's name instead.
pub const MAX_SECS: u64 = 30 * 24 * 3600;
pub const MAX_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;
pub const MAX_CONNECTIONS: usize = 1_000_000;
pub const MAX_HEADER_BYTES: usize = 256 * 1024;
pub const MAX_H2_WINDOW_BYTES: u32 = ((1u32 << 31) - 1) / 4;

pub fn slice_block_bytes(slice_bytes: u64) -> u64 {
    (slice_bytes + 64 * 1024).next_power_of_two().max(16 << 20)
}

fn optional_addr(field: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value.is_empty() {
        Ok(None)
    } else {
        check_socket_addr(field, value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EdgeConfig, ConfigError> {
        let config: EdgeConfig = shared::config::parse_toml(text, "edge.toml")?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn empty_config_is_the_documented_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.tls.listen, "127.0.0.1:8443");
        assert_eq!(config.admin.listen, "127.0.0.1:9901");
        assert_eq!(config.cache.slice_bytes, 2 << 20);
        let sites = config.effective_sites();
        assert_eq!(sites[0].upstream, "http://127.0.0.1:8080");
        assert_eq!(config.disk_dir(), PathBuf::from("data/edge/cache"));
        assert_eq!(
            (config.control.stats_secs, config.control.stats_max_titles),
            (5, 100)
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/edge.toml");
        EdgeConfig::load(&path).unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let table = [
            ("name = \"a b\"", "name"),
            ("[tls]\nlisten = \"x\"", "tls.listen"),
            ("[tls]\nlisten = \"\"", "tls.listen"),
            ("[http]\nlisten = \"127.0.0.1:9901\"", "http.listen"),
            ("[admin]\nbearer_token = \"short\"", "admin.bearer_token"),
            (
                "[[site]]\nhosts = []\nupstream = \"http://o:1\"",
                "site[0].hosts",
            ),
            (
                "[[site]]\nhosts = [\"a/b\"]\nupstream = \"http://o:1\"",
                "site[0].hosts",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"ftp://o\"",
                "site[0].upstream",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o/path\"",
                "site[0].upstream",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site]]\nhosts = [\"A\"]\nupstream = \"http://p\"",
                "site[1].hosts",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nbypass_paths = [\"/a/%2e%2e/\"]",
                "site[0].bypass_paths",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nstrip_request_fields = [\"bad name\"]",
                "site[0].strip_request_fields",
            ),
            ("[cache]\nslice_bytes = 10", "cache.slice_bytes"),
            // Prefetch (issue 19).
            ("[prefetch]\nsegments = 17", "prefetch.segments"),
            ("[prefetch]\nmax_in_flight = 0", "prefetch.max_in_flight"),
            (
                "[prefetch]\nmax_in_flight = 2\nmax_in_flight_per_upstream = 3",
                "prefetch.max_in_flight_per_upstream",
            ),
            ("[prefetch]\nbytes_per_sec = 1000", "prefetch.bytes_per_sec"),
            (
                "[prefetch]\nbytes_per_sec = 1000000\nbytes_per_sec_per_upstream = 2000000",
                "prefetch.bytes_per_sec_per_upstream",
            ),
            ("[prefetch]\nunused_secs = 0", "prefetch.unused_secs"),
            ("[fill]\nquiet_hours = \"2-6\"", "fill.quiet_hours"),
            (
                "[fill]\nbudget_bytes = 1099511627776000",
                "fill.budget_bytes",
            ),
            ("[fill]\nbytes_per_sec = 1000", "fill.bytes_per_sec"),
            ("[fill]\nmax_in_flight = 0", "fill.max_in_flight"),
            ("[fill]\nmax_in_flight = 65", "fill.max_in_flight"),
            ("[fill]\nsite = \"elsewhere\"", "fill.site"),
            ("[fill]\nenabled = true", "fill.enabled"),
            (
                "[limits]\nconnection_threads = 1025",
                "limits.connection_threads",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nprefetch_segments = 99",
                "site[0].prefetch_segments",
            ),
            // The shield tier (issue 15).
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nparents = [\"http://p:1\", \"https://p:2\"]",
                "site[0].parents[1]",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nparents = [\"http://p:1/cdn\"]",
                "site[0].parents[0]",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nparents = [\"ftp://p\"]",
                "site[0].parents[0]",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nparents = [\"p:1\"]",
                "site[0].parents[0]",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nparents = [\"http://p:1\", \"http://P:1/\"]",
                "site[0].parents[1]",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o:8080\"\nparents = [\"http://o:8080\"]",
                "site[0].parents[0]",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site]]\nhosts = [\"b\"]\nupstream = \"http://o\"\nparents = [\"http://p:1?x=1\"]",
                "site[1].parents[0]",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nupstreams = [\"http://i:1\"]",
                "site[0].route[0].prefixes",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"a b\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:1\"]",
                "site[0].route[0].name",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\"]\nupstreams = []",
                "site[0].route[0].upstreams",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:1/api\"]",
                "site[0].route[0].upstreams[0]",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:1\", \"http://I:1/\"]",
                "site[0].route[0].upstreams",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"v1/\"]\nupstreams = [\"http://i:1\"]",
                "site[0].route[0].prefixes",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/%2e%2e/\"]\nupstreams = [\"http://i:1\"]",
                "site[0].route[0].prefixes",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:1\"]\nretries = 9",
                "site[0].route[0].retries",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:1\"]\n[site.route.health_check]\ninterval_ms = 5",
                "site[0].route[0].health_check.interval_ms",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:1\"]\n[site.route.health_check]\nhealthy_threshold = 0",
                "site[0].route[0].health_check.healthy_threshold",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:1\"]\n[[site.route]]\nname = \"web\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:2\"]",
                "site[0].route[1].prefixes",
            ),
            (
                "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\n[[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\"]\nupstreams = [\"http://i:1\"]\n[[site.route]]\nname = \"api\"\nprefixes = [\"/web/\"]\nupstreams = [\"http://i:2\"]",
                "site[0].route[1].name",
            ),
            ("cdn_id = \"video cdn\"", "cdn_id"),
            ("cdn_id = \"\"", "cdn_id"),
            ("[limits]\nmax_loop_hops = 0", "limits.max_loop_hops"),
            (
                "[limits]\nparent_retry_secs = 0",
                "limits.parent_retry_secs",
            ),
            (
                "[limits]\nparent_retry_secs = 86400",
                "limits.parent_retry_secs",
            ),
            // Past what the arithmetic on them holds (the panic audit of issue 14).
            (
                "[limits]\nh2_window_bytes = 536870912",
                "limits.h2_window_bytes",
            ),
            (
                "[limits]\nidle_timeout_secs = 18446744073709551615",
                "limits.idle_timeout_secs",
            ),
            (
                "[limits]\nheader_read_timeout_secs = 9223372036854775807",
                "limits.header_read_timeout_secs",
            ),
            (
                "[limits]\nmax_header_bytes = 4294967296",
                "limits.max_header_bytes",
            ),
            (
                "[limits]\nmax_connections = 4611686018427387904",
                "limits.max_connections",
            ),
            (
                "[cache]\nnegative_ttl_secs = 9223372036854775808",
                "cache.negative_ttl_secs",
            ),
            (
                "[control]\nurl = \"http://127.0.0.1:8000\"",
                "control.registration_secret",
            ),
            ("[control]\nurl = \"https://c.example/x\"", "control.url"),
            (
                "[control]\nurl = \"http://127.0.0.1:8000\"\nregistration_secret = \"0123456789abcdef\"\nstats_secs = 3601",
                "control.stats_secs",
            ),
            (
                "[control]\nurl = \"http://127.0.0.1:8000\"\nregistration_secret = \"0123456789abcdef\"\nstats_max_titles = 0",
                "control.stats_max_titles",
            ),
            (
                "[control]\nurl = \"http://127.0.0.1:8000\"\nregistration_secret = \"0123456789abcdef\"\nstats_max_titles = 1000",
                "control.stats_max_titles",
            ),
            ("[cache]\nmemory_bytes = 10", "cache.memory_bytes"),
            ("[cache]\ndisk_bytes = 1000", "cache.disk_bytes"),
            (
                "[limits]\nupstream_header_timeout_secs = 0",
                "limits.upstream_header_timeout_secs",
            ),
            (
                "[cors]\nallow_origins = [\"player.example\"]",
                "cors.allow_origins",
            ),
        ];
        for (text, field) in table {
            let err = parse(text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
        }
        let err = parse("[cache]\nslices = 1").unwrap_err();
        assert!(err.message.contains("unknown field `slices`"), "{err}");
    }

    #[test]
    fn parents_are_checked_and_defaulted() {
        let config = parse("").unwrap();
        assert_eq!(config.cdn_id, "video-cdn");
        assert_eq!(config.limits.max_loop_hops, 3);
        assert_eq!(config.limits.parent_retry_secs, 10);
        assert!(config.effective_sites()[0].parents.is_empty());
        let sixteen: Vec<String> = (0..16).map(|i| format!("\"http://p{i}:8081\"")).collect();
        let text = format!(
            "cdn_id = \"cdn.example\"\n[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nparents = [{}]",
            sixteen.join(", ")
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.sites[0].parents.len(), 16);
        assert_eq!(config.cdn_id, "cdn.example");
        let seventeen = text.replace("8081\"]", "8081\", \"http://p16:8081\"]");
        let err = parse(&seventeen).unwrap_err();
        assert_eq!(err.field, "site[0].parents", "{err}");
        assert!(err.message.contains("at most 16"), "{err}");
        let https = parse(
            "[[site]]\nhosts = [\"a\"]\nupstream = \"http://o\"\nparents = [\"https://p:9443\"]",
        )
        .unwrap_err();
        assert!(https.message.contains("[http] listen"), "{https}");
    }

    #[test]
    fn block_size_holds_a_slice() {
        assert_eq!(slice_block_bytes(2 << 20), 16 << 20);
        assert_eq!(slice_block_bytes(16 << 20), 32 << 20);
        assert_eq!(slice_block_bytes(64 << 20), 128 << 20);
    }
}
