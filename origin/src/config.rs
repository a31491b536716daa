//! The origin's configuration: one TOML file loaded into [`OriginConfig`]. Every field has a default (named
//! constants in [`defaults`]), unknown keys are refused, and [`OriginConfig::validate`] names the offending field.
//! `configs/origin.toml` is the annotated reference.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared::config::{ConfigError, check_socket_addr, ensure};
use shared::logging::LogFormat;

/// Defaults of every field, in one place.
pub mod defaults {
    pub const DATA_DIR: &str = "data";
    pub const MEDIA_LISTEN: &str = "127.0.0.1:8080";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9900";
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
    pub const IDLE_TIMEOUT_SECS: u64 = 60;
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
    pub const TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
    pub const SHUTDOWN_GRACE_SECS: u64 = 10;
    pub const CORS_ALLOW_ORIGIN: &str = "*";
    pub const READ_CHUNK_BYTES: usize = 1024 * 1024;
    pub const MANIFEST_SNIFF_LIMIT_BYTES: u64 = 1024 * 1024;
    pub const SEGMENT_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
    pub const VOD_MANIFEST_CACHE_CONTROL: &str = "public, max-age=86400";
    pub const LIVE_MANIFEST_MAX_AGE_SECS: u64 = 2;
    pub const OTHER_CACHE_CONTROL: &str = "public, max-age=3600";
    pub const SEGMENT_NOT_FOUND_CACHE_CONTROL: &str = "public, max-age=1";
    pub const LOG_LEVEL: &str = "info";
}

/// The whole origin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// Folder for the origin's own data; the default store is `<data_dir>/objects`. Default: `data`.
    pub data_dir: PathBuf,
    pub media: MediaConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub cache_control: CacheControlConfig,
    pub log: LogConfig,
    /// The control plane's API listener (catalog, playback).
    pub api: ApiConfig,
    pub catalog: CatalogConfig,
    pub playback: PlaybackConfig,
    /// The edges that report themselves to the control plane.
    pub fleet: FleetConfig,
    /// How viewers are sent to edges: regions, distances, load bounds, Content Steering.
    pub steering: SteeringConfig,
    /// The message bus (see `bus`).
    pub bus: BusConfig,
    /// Viewers' accounts and sessions.
    pub accounts: AccountsConfig,
    /// The web front end.
    pub web: WebConfig,
    /// The recommender behind the home page.
    pub recs: RecsConfig,
    /// Keys that sign playback URLs; the edges verify with the same keys. The first signs; the others are
    /// accepted by edges during a rotation.
    #[serde(rename = "signing_key")]
    pub signing_keys: Vec<SigningKeyConfig>,
}

/// The control plane's API listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on; empty disables the API. Default: `127.0.0.1:8000`.
    pub listen: String,
    /// `max-age` of `Cache-Control` on the answers that are the same for every caller (catalog lists, titles,
    /// search, similar titles, the anonymous home rows): how long a browser keeps them. 0 to 86400. Default: 10.
    pub browser_max_age_secs: u64,
    /// `max-age` of `CDN-Cache-Control` (RFC 9213) on those answers and on the web front end's own files: how
    /// long the edge keeps them (it obeys `CDN-Cache-Control` before `Cache-Control`). 0 to 86400. Default: 30.
    pub cdn_max_age_secs: u64,
    /// `stale-while-revalidate` of `CDN-Cache-Control` on those answers: how long past `cdn_max_age_secs` the
    /// edge may answer from its copy while it fetches a fresh one. 0 to 86400. Default: 30.
    pub cdn_stale_while_revalidate_secs: u64,
    /// Lifetime of a shared 404 (an unknown title), for browsers and the edge alike: short, so a title that
    /// appears is seen soon. 0 to 3600. Default: 10.
    pub not_found_max_age_secs: u64,
    /// Proxies in front of the API (the edge), as CIDR blocks (`["127.0.0.1/32", "::1/128"]`): from a peer in
    /// one of them, the client's address is the rightmost address of `X-Forwarded-For` that is not itself a
    /// trusted proxy (token binding, placing the viewer, the sign-in limit, events). From any other peer the
    /// header is ignored. Default: none (the peer is the client).
    pub trusted_proxies: Vec<String>,
}

/// Viewers' accounts, sessions and sign-in limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// Lifetime of a session. Default: 2592000 (30 days).
    pub session_ttl_secs: u64,
    /// Whether the session cookie is `Secure` (sent over HTTPS only; browsers also keep it for
    /// http://localhost). Default: true.
    pub secure_cookies: bool,
    /// Failed sign-ins per email and per client address before further attempts wait out the window.
    /// Default: 5.
    pub signin_max_failures: u32,
    /// Default: 300.
    pub signin_window_secs: u64,
    /// Bearer credentials of servers that may ask `POST /v1/playback` without a viewer's session (each at least
    /// 16 characters). Default: none.
    pub service_tokens: Vec<String>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            session_ttl_secs: 30 * 24 * 3600,
            secure_cookies: true,
            signin_max_failures: 5,
            signin_window_secs: 300,
            service_tokens: Vec::new(),
        }
    }
}

/// The recommender: which model, and when it is trained again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecsConfig {
    /// `blend` (the default: the best on the offline evaluation), `ease`, `item-knn`, `sequential`,
    /// `sequential-linear` or `popularity`.
    pub model: String,
    /// Trained again at least this often (by whichever instance holds the trainer's lease; the others load the
    /// model it publishes). Default: 600.
    pub train_secs: u64,
    /// And as soon as the playback topic has carried this many new plays. Default: 200.
    pub retrain_after_plays: u64,
}

impl Default for RecsConfig {
    fn default() -> Self {
        RecsConfig {
            model: "blend".into(),
            train_secs: 600,
            retrain_after_plays: 200,
        }
    }
}

/// The web front end, served on the API listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// The front end's folder (the repository's `origin/web`, its players installed with `npm ci`); none: off.
    pub dir: Option<PathBuf>,
}

/// The catalog database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// `sqlite:///abs/file.db` or `postgres://user:pass@host:port/db`. Default: `sqlite://<data_dir>/catalog.db`.
    pub url: Option<String>,
}

/// What the playback API hands out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybackConfig {
    /// Base URLs of the edges players are sent to; each title ranks them in its own order (rendezvous hashing).
    /// Default: `["https://localhost:8443"]`.
    pub edges: Vec<String>,
    /// Lifetime of a playback URL's token. Default: 14400 (4 hours).
    pub token_ttl_secs: u64,
}

pub use shared::token::SigningKeyConfig;

/// The media listener: HTTP/1.1 and HTTP/2 (cleartext with prior knowledge, or TLS with ALPN).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address to listen on. Default: `127.0.0.1:8080`.
    pub listen: String,
    /// PEM certificate chain; with `tls_key`, the listener speaks TLS (ALPN h2, http/1.1). Default: none.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`. Default: none.
    pub tls_key: Option<PathBuf>,
    /// Connections served at once; more wait in the kernel's accept queue. Default: 10000.
    pub max_connections: usize,
    /// Seconds a client has to send a complete request head, idle keep-alive time included (HTTP/1.1). Default: 10.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay without a byte moving either way before it is closed gracefully (HTTP/2
    /// included). Default: 60.
    pub idle_timeout_secs: u64,
    /// The send deadline: seconds a response may wait for the client to take its next bytes before its
    /// connection is closed. Default: 30.
    pub send_timeout_secs: u64,
    /// Largest request head accepted, in bytes (HTTP/1.1 read buffer and HTTP/2 header list). Default: 16384.
    pub max_header_bytes: usize,
    /// HTTP/2 streams per connection. Default: 256.
    pub h2_max_concurrent_streams: u32,
    /// Seconds allowed for a TLS handshake. Default: 10.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds open requests get to finish on shutdown before connections are closed. Default: 10.
    pub shutdown_grace_secs: u64,
    /// `Access-Control-Allow-Origin` value on media responses; empty to send none. Default: `*`.
    pub cors_allow_origin: String,
    /// Bytes read from a local store per read call while streaming a body; a response in flight holds up to two
    /// such chunks. Larger chunks cost fewer thread hops per byte (1 MiB measured about 1.6x faster than 256 KiB
    /// in requests per CPU-second on 1 MiB objects). Default: 1048576.
    pub read_chunk_bytes: usize,
}

/// The admin listener: `/metrics` and `/healthz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to listen on. Default: `127.0.0.1:9900`.
    pub listen: String,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`; `/healthz` stays open. Default: none.
    pub bearer_token: Option<String>,
}

/// Where objects live. One URL picks the backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `file:///abs/folder`, `memory://`, `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    /// Requests can only name keys under the URL's folder or prefix. Default: `file://<data_dir>/objects`.
    pub url: Option<String>,
    /// S3-compatible endpoint URL (for MinIO, Ceph, moto …). Default: the provider's.
    pub endpoint: Option<String>,
    /// S3 region. Default: the provider's (or `us-east-1`).
    pub region: Option<String>,
    /// Access key id (S3) — or leave unset to use the environment (`AWS_ACCESS_KEY_ID` …). Default: none.
    pub access_key_id: Option<String>,
    /// Secret access key (S3). Default: none.
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (test servers). Default: false.
    pub allow_http: bool,
    /// Further `object_store` options passed as they are (`aws_virtual_hosted_style_request`,
    /// `google_service_account`, `azure_storage_account_name` …). Default: none.
    pub options: BTreeMap<String, String>,
}

/// `Cache-Control` sent for each object class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheControlConfig {
    /// Media segments, init segments, single-file renditions, subtitles. Default:
    /// `public, max-age=31536000, immutable`.
    pub segment: String,
    /// Manifests of finished (VOD) content: master playlists, playlists with `#EXT-X-ENDLIST`, static MPDs.
    /// Default: `public, max-age=86400`.
    pub vod_manifest: String,
    /// max-age of live manifests whose text does not say how often they change. A live HLS playlist gets half
    /// its target duration (the HLS reload floor), a dynamic MPD its `minimumUpdatePeriod`. Default: 2.
    pub live_manifest_max_age_secs: u64,
    /// Everything else (keys, JSON, artwork). Default: `public, max-age=3600`.
    pub other: String,
    /// A segment that does not exist (yet): a live player asks for the next one just before it is published,
    /// and a cache must not keep that 404 for its negative lifetime (the edge's is 10 s) once the segment
    /// appears. Other 404s carry no `Cache-Control`. Default: `public, max-age=1`.
    pub segment_not_found: String,
    /// Manifests up to this size are read to tell live from VOD; larger ones are streamed and treated as VOD.
    /// Default: 1048576.
    pub manifest_sniff_limit_bytes: u64,
}

/// The structured log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (one object per line) or `text`. Default: `json`.
    pub format: LogFormat,
    /// Filter directive (`info`, `debug`, `origin=debug,info`); `RUST_LOG` overrides. Default: `info`.
    pub level: String,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            data_dir: PathBuf::from(defaults::DATA_DIR),
            media: MediaConfig::default(),
            admin: AdminConfig::default(),
            store: StoreConfig::default(),
            cache_control: CacheControlConfig::default(),
            log: LogConfig::default(),
            api: ApiConfig::default(),
            catalog: CatalogConfig::default(),
            playback: PlaybackConfig::default(),
            fleet: FleetConfig::default(),
            steering: SteeringConfig::default(),
            bus: BusConfig::default(),
            accounts: AccountsConfig::default(),
            web: WebConfig::default(),
            recs: RecsConfig::default(),
            signing_keys: Vec::new(),
        }
    }
}

/// Edges report themselves with `PUT /v1/edges/<name>` (see `control::fleet`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// The bearer secret edges register with (at least 16 characters); none turns registration off (403).
    /// Default: none.
    pub registration_secret: Option<String>,
    /// An edge not heard from for this long is down (out of the fleet's healthy count) until its next report.
    /// Default: 15.
    pub heartbeat_timeout_secs: u64,
}

/// The message bus: the embedded log by default, Kafka by URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `kafka://host:port[,host:port…]` for Kafka, `file:///folder` for the embedded log in that folder.
    /// Default: the embedded log in `<data_dir>/bus`.
    pub url: Option<String>,
    /// Partitions of each topic the control plane creates. 1 to 1024. Default: 8.
    pub partitions: u32,
    /// The embedded log starts a new segment file past this size; 1 MiB to 1 GiB. Default: 64 MiB.
    pub segment_bytes: u64,
    /// The embedded log deletes a partition's whole segments older than this. 1 to 87600. Default: 168 (a week).
    pub retention_hours: u64,
    /// The embedded log keeps at most this many bytes per partition (whole old segments go first).
    /// Default: 1 GiB.
    pub retention_bytes: u64,
    /// Kafka: the replication factor of the topics it creates. Default: 1.
    pub replication: i32,
    /// Kafka: librdkafka settings passed as they are (`"security.protocol" = "ssl"`, …).
    pub options: BTreeMap<String, String>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: None,
            partitions: 8,
            segment_bytes: 64 * 1024 * 1024,
            retention_hours: 168,
            retention_bytes: 1024 * 1024 * 1024,
            replication: 1,
            options: BTreeMap::new(),
        }
    }
}

/// How the playback API and the Content Steering server rank edges for a viewer (see `control::steering`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteeringConfig {
    /// The load bound of rendezvous hashing with bounded loads: no edge is given a viewer past (1 + ε)× its
    /// share of its region's load. 0 to 10. Default: 0.25.
    pub epsilon: f64,
    /// The region of viewers no `[[steering.network]]` matches and who give no `region` hint. Default: none
    /// (one ranking over every region).
    pub default_region: Option<String>,
    /// Viewers' networks and their regions (`[[steering.network]] cidr = "10.1.0.0/16"`, `region = "eu-west"`);
    /// the longest matching prefix wins.
    #[serde(rename = "network")]
    pub networks: Vec<NetworkRegion>,
    /// Distances between regions (`[steering.distances.eu-west] us-east = 80`); a pair given one way holds
    /// both ways. Regions with no distance come after those with one, by name.
    pub distances: BTreeMap<String, BTreeMap<String, u32>>,
    /// Edges (pathways) a steered manifest names at most. 1 to 16. Default: 4.
    pub max_pathways: usize,
    /// Seconds a player keeps a steering answer before asking again (its `TTL`). 1 to 3600. Default: 10.
    pub ttl_secs: u64,
    /// The control plane's base URL as players reach it (`https://api.example`), for the steering server's
    /// address inside steered manifests. Default: the request's `Host`, over http.
    pub public_url: Option<String>,
}

/// One entry of the CIDR-to-region table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRegion {
    pub cidr: String,
    pub region: String,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        SteeringConfig {
            epsilon: 0.25,
            default_region: None,
            networks: Vec::new(),
            distances: BTreeMap::new(),
            max_pathways: 4,
            ttl_secs: 10,
            public_url: None,
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            registration_secret: None,
            heartbeat_timeout_secs: 15,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8000".into(),
            browser_max_age_secs: 10,
            cdn_max_age_secs: 30,
            cdn_stale_while_revalidate_secs: 30,
            not_found_max_age_secs: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for PlaybackConfig {
    fn default() -> Self {
        PlaybackConfig {
            edges: vec!["https://localhost:8443".into()],
            token_ttl_secs: 4 * 3600,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            listen: defaults::MEDIA_LISTEN.into(),
            tls_cert: None,
            tls_key: None,
            max_connections: defaults::MAX_CONNECTIONS,
            header_read_timeout_secs: defaults::HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: defaults::IDLE_TIMEOUT_SECS,
            send_timeout_secs: 30,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            h2_max_concurrent_streams: defaults::H2_MAX_CONCURRENT_STREAMS,
            tls_handshake_timeout_secs: defaults::TLS_HANDSHAKE_TIMEOUT_SECS,
            shutdown_grace_secs: defaults::SHUTDOWN_GRACE_SECS,
            cors_allow_origin: defaults::CORS_ALLOW_ORIGIN.into(),
            read_chunk_bytes: defaults::READ_CHUNK_BYTES,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: defaults::ADMIN_LISTEN.into(),
            bearer_token: None,
        }
    }
}

impl Default for CacheControlConfig {
    fn default() -> Self {
        CacheControlConfig {
            segment: defaults::SEGMENT_CACHE_CONTROL.into(),
            vod_manifest: defaults::VOD_MANIFEST_CACHE_CONTROL.into(),
            live_manifest_max_age_secs: defaults::LIVE_MANIFEST_MAX_AGE_SECS,
            other: defaults::OTHER_CACHE_CONTROL.into(),
            segment_not_found: defaults::SEGMENT_NOT_FOUND_CACHE_CONTROL.into(),
            manifest_sniff_limit_bytes: defaults::MANIFEST_SNIFF_LIMIT_BYTES,
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

/// The store URL schemes accepted.
const STORE_SCHEMES: &[&str] = &[
    "file", "memory", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss",
];

impl OriginConfig {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: OriginConfig = shared::config::load_toml(path)?;
        config.validate()?;
        Ok(config)
    }

    /// The consumer group of this instance's `role`: `<role>.<host>-<api port>`, so each instance of the control
    /// plane keeps its own derived state and finds its offsets again after a restart.
    pub fn bus_group(&self, role: &str, api: SocketAddr) -> String {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        let host: String = host
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        format!("{role}.{host}-{}", api.port())
    }

    fn validate_api(&self) -> Result<(), ConfigError> {
        let a = &self.api;
        for (field, value, max) in [
            ("api.browser_max_age_secs", a.browser_max_age_secs, 86_400),
            ("api.cdn_max_age_secs", a.cdn_max_age_secs, 86_400),
            (
                "api.cdn_stale_while_revalidate_secs",
                a.cdn_stale_while_revalidate_secs,
                86_400,
            ),
            (
                "api.not_found_max_age_secs",
                a.not_found_max_age_secs,
                3_600,
            ),
        ] {
            ensure(value <= max, field, format!("must be 0 to {max}"))?;
        }
        crate::control::forwarded::TrustedProxies::parse(&a.trusted_proxies)
            .map(drop)
            .map_err(|(i, reason)| ConfigError::new(format!("api.trusted_proxies[{i}]"), reason))
    }

    fn validate_accounts(&self) -> Result<(), ConfigError> {
        let a = &self.accounts;
        ensure(
            (60..=365 * 24 * 3600).contains(&a.session_ttl_secs),
            "accounts.session_ttl_secs",
            "must be 60 to 31536000",
        )?;
        ensure(
            (1..=1000).contains(&a.signin_max_failures),
            "accounts.signin_max_failures",
            "must be 1 to 1000",
        )?;
        ensure(
            (1..=86_400).contains(&a.signin_window_secs),
            "accounts.signin_window_secs",
            "must be 1 to 86400",
        )?;
        for (i, token) in a.service_tokens.iter().enumerate() {
            ensure(
                token.len() >= 16
                    && token.len() <= 256
                    && token.bytes().all(|b| b.is_ascii_graphic()),
                &format!("accounts.service_tokens[{i}]"),
                "must be 16 to 256 visible ASCII characters",
            )?;
        }
        ensure(
            crate::recs::ModelKind::from_name(&self.recs.model).is_some(),
            "recs.model",
            "must be blend, ease, item-knn, sequential, sequential-linear or popularity",
        )?;
        ensure(
            (10..=7 * 86_400).contains(&self.recs.train_secs),
            "recs.train_secs",
            "must be 10 to 604800",
        )?;
        ensure(
            self.recs.retrain_after_plays >= 1,
            "recs.retrain_after_plays",
            "must be at least 1",
        )?;
        if let Some(dir) = &self.web.dir {
            ensure(
                dir.is_dir(),
                "web.dir",
                format!("{} is not a folder", dir.display()),
            )?;
        }
        Ok(())
    }

    fn validate_bus(&self) -> Result<(), ConfigError> {
        let b = &self.bus;
        if let Some(url) = &b.url {
            let ok = match url.strip_prefix("kafka://") {
                Some(brokers) => brokers.split(',').all(|broker| {
                    broker
                        .rsplit_once(':')
                        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                }),
                None => url.strip_prefix("file:///").is_some_and(|p| !p.is_empty()),
            };
            ensure(
                ok,
                "bus.url",
                format!("`{url}` is neither kafka://host:port[,host:port…] nor file:///folder"),
            )?;
        }
        ensure(
            (1..=1024).contains(&b.partitions),
            "bus.partitions",
            "must be 1 to 1024",
        )?;
        ensure(
            (1 << 20..=1 << 30).contains(&b.segment_bytes),
            "bus.segment_bytes",
            "must be 1 MiB to 1 GiB",
        )?;
        ensure(
            (1..=87_600).contains(&b.retention_hours),
            "bus.retention_hours",
            "must be 1 to 87600",
        )?;
        ensure(
            b.retention_bytes >= b.segment_bytes,
            "bus.retention_bytes",
            "must be at least bus.segment_bytes",
        )?;
        ensure(
            (1..=16).contains(&b.replication),
            "bus.replication",
            "must be 1 to 16",
        )
    }

    fn validate_steering(&self) -> Result<(), ConfigError> {
        let s = &self.steering;
        let region = |field: &str, name: &str| {
            ensure(
                crate::control::fleet::is_name(name),
                field,
                format!("`{name}` must be 1 to 64 letters, digits, `-`, `_` or `.`"),
            )
        };
        ensure(
            (0.0..=10.0).contains(&s.epsilon),
            "steering.epsilon",
            "must be between 0 and 10",
        )?;
        if let Some(name) = &s.default_region {
            region("steering.default_region", name)?;
        }
        for (i, network) in s.networks.iter().enumerate() {
            region(&format!("steering.network[{i}].region"), &network.region)?;
        }
        ensure(
            s.networks.len() <= 100_000,
            "steering.network",
            "holds 100000 blocks at most",
        )?;
        for (from, to) in &s.distances {
            region(&format!("steering.distances.{from}"), from)?;
            for other in to.keys() {
                region(&format!("steering.distances.{from}.{other}"), other)?;
            }
        }
        ensure(
            (1..=16).contains(&s.max_pathways),
            "steering.max_pathways",
            "must be between 1 and 16",
        )?;
        ensure(
            (1..=3600).contains(&s.ttl_secs),
            "steering.ttl_secs",
            "must be between 1 and 3600",
        )?;
        if let Some(url) = &s.public_url {
            ensure(
                url::Url::parse(url).is_ok_and(|u| {
                    matches!(u.scheme(), "https" | "http")
                        && u.host_str().is_some()
                        && u.path() == "/"
                        && u.query().is_none()
                }),
                "steering.public_url",
                format!("`{url}` must be a base URL such as https://api.example"),
            )?;
        }
        crate::control::steering::SteeringPolicy::new(s)
            .map(drop)
            .map_err(|(field, reason)| ConfigError::new(field, reason))
    }

    /// Checks every field; the error names the first offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_bus()?;
        self.validate_accounts()?;
        ensure(
            !self.data_dir.as_os_str().is_empty(),
            "data_dir",
            "must not be empty",
        )?;
        let media = self.media_addr()?;
        let admin = self.admin_addr()?;
        ensure(
            media != admin || media.port() == 0,
            "admin.listen",
            "must differ from media.listen: the admin API has its own listener",
        )?;
        if let Some(api) = self.api_addr()? {
            ensure(
                (api != media && api != admin) || api.port() == 0,
                "api.listen",
                "must differ from media.listen and admin.listen",
            )?;
        }
        self.validate_api()?;
        if let Some(url) = &self.catalog.url {
            ensure(
                url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"),
                "catalog.url",
                format!("`{url}` must be sqlite:///path or postgres://…"),
            )?;
            ensure(
                !url.contains(":memory:") && !url.contains("mode=memory"),
                "catalog.url",
                "an in-memory SQLite database is lost whenever the pool replaces a connection (viewers' \
                 accounts with it): give a file, sqlite:///path",
            )?;
        }
        for (i, edge) in self.playback.edges.iter().enumerate() {
            ensure(
                url::Url::parse(edge).is_ok_and(|u| {
                    matches!(u.scheme(), "https" | "http")
                        && u.host_str().is_some()
                        && u.path() == "/"
                }),
                &format!("playback.edges[{i}]"),
                format!("`{edge}` must be a base URL such as https://edge.example:8443"),
            )?;
        }
        ensure(
            (60..=365 * 24 * 3600).contains(&self.playback.token_ttl_secs),
            "playback.token_ttl_secs",
            "must be between 60 and 31536000 (a year)",
        )?;
        shared::token::validate_keys(&self.signing_keys)?;
        if let Some(secret) = &self.fleet.registration_secret {
            ensure(
                secret.len() >= 16 && secret.bytes().all(|b| (0x21..0x7f).contains(&b)),
                "fleet.registration_secret",
                "must be at least 16 printable characters without spaces",
            )?;
        }
        ensure(
            (1..=3600).contains(&self.fleet.heartbeat_timeout_secs),
            "fleet.heartbeat_timeout_secs",
            "must be between 1 and 3600",
        )?;
        self.validate_steering()?;
        let m = &self.media;
        ensure(
            m.tls_cert.is_some() == m.tls_key.is_some(),
            "media.tls_key",
            "tls_cert and tls_key go together",
        )?;
        ensure(
            (1..=1_000_000).contains(&m.max_connections),
            "media.max_connections",
            "must be between 1 and 1000000",
        )?;
        // Deadlines: arithmetic on them and the clock must not overflow.
        const MAX_SECS: u64 = 30 * 24 * 3600;
        for (field, value) in [
            ("media.header_read_timeout_secs", m.header_read_timeout_secs),
            ("media.idle_timeout_secs", m.idle_timeout_secs),
            ("media.send_timeout_secs", m.send_timeout_secs),
            (
                "media.tls_handshake_timeout_secs",
                m.tls_handshake_timeout_secs,
            ),
            ("media.shutdown_grace_secs", m.shutdown_grace_secs.max(1)),
        ] {
            ensure(
                (1..=MAX_SECS).contains(&value),
                field,
                format!("must be between 1 and {MAX_SECS} (30 days)"),
            )?;
        }
        ensure(
            (1024..=256 * 1024).contains(&m.max_header_bytes),
            "media.max_header_bytes",
            "must be between 1024 and 262144",
        )?;
        ensure(
            m.h2_max_concurrent_streams > 0,
            "media.h2_max_concurrent_streams",
            "must be at least 1",
        )?;
        ensure(
            (4096..=16 * 1024 * 1024).contains(&m.read_chunk_bytes),
            "media.read_chunk_bytes",
            "must be between 4096 and 16777216",
        )?;
        ensure(
            m.cors_allow_origin
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b)),
            "media.cors_allow_origin",
            "must be printable ASCII",
        )?;
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
        self.validate_store()?;
        let cc = &self.cache_control;
        for (field, value) in [
            ("cache_control.segment", &cc.segment),
            ("cache_control.vod_manifest", &cc.vod_manifest),
            ("cache_control.other", &cc.other),
        ] {
            ensure(
                value.bytes().all(|b| (0x20..0x7f).contains(&b)),
                field,
                "must be printable ASCII",
            )?;
        }
        ensure(
            cc.live_manifest_max_age_secs > 0,
            "cache_control.live_manifest_max_age_secs",
            "must be at least 1",
        )?;
        ensure(
            tracing_subscriber_directive_ok(&self.log.level),
            "log.level",
            "must be a level or filter directive such as `info` or `origin=debug,info`",
        )?;
        Ok(())
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let Some(raw) = &self.store.url else {
            return Ok(());
        };
        let url = url::Url::parse(raw)
            .map_err(|e| ConfigError::new("store.url", format!("`{raw}` is not a URL: {e}")))?;
        ensure(
            STORE_SCHEMES.contains(&url.scheme()),
            "store.url",
            format!(
                "scheme `{}` is not one of file, memory, s3, gs, az",
                url.scheme()
            ),
        )?;
        if url.scheme() == "file" {
            ensure(
                url.host_str().unwrap_or("").is_empty() && url.to_file_path().is_ok(),
                "store.url",
                "a file URL needs an absolute path: file:///srv/objects",
            )?;
        }
        if let Some(endpoint) = &self.store.endpoint {
            let parsed = url::Url::parse(endpoint).map_err(|e| {
                ConfigError::new("store.endpoint", format!("`{endpoint}` is not a URL: {e}"))
            })?;
            ensure(
                parsed.scheme() == "https" || (parsed.scheme() == "http" && self.store.allow_http),
                "store.endpoint",
                "must be https:// (or http:// with store.allow_http = true)",
            )?;
        }
        Ok(())
    }

    pub fn media_addr(&self) -> Result<SocketAddr, ConfigError> {
        check_socket_addr("media.listen", &self.media.listen)
    }

    pub fn admin_addr(&self) -> Result<SocketAddr, ConfigError> {
        check_socket_addr("admin.listen", &self.admin.listen)
    }

    /// The API's address; `None` when `api.listen` is empty (no API).
    pub fn api_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.api.listen.is_empty() {
            return Ok(None);
        }
        check_socket_addr("api.listen", &self.api.listen).map(Some)
    }

    /// The catalog database URL.
    pub fn catalog_url(&self) -> String {
        self.catalog
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/catalog.db", self.data_dir.display()))
    }
}

fn tracing_subscriber_directive_ok(level: &str) -> bool {
    !level.trim().is_empty()
        && level
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=,:-.[]{}\"".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OriginConfig, ConfigError> {
        let config: OriginConfig = shared::config::parse_toml(text, "origin.toml")?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn empty_config_is_the_documented_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.media.listen, "127.0.0.1:8080");
        assert_eq!(config.admin.listen, "127.0.0.1:9900");
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(
            config.cache_control.segment,
            "public, max-age=31536000, immutable"
        );
        assert!(config.store.url.is_none());
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/origin.toml");
        OriginConfig::load(&path).unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let table = [
            ("[media]\nlisten = \"nowhere\"", "media.listen"),
            ("[admin]\nlisten = \"127.0.0.1:80800\"", "admin.listen"),
            (
                "[media]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"",
                "admin.listen",
            ),
            ("[media]\ntls_cert = \"/c.pem\"", "media.tls_key"),
            ("[media]\nmax_connections = 0", "media.max_connections"),
            ("[media]\nmax_header_bytes = 10", "media.max_header_bytes"),
            (
                "[media]\nmax_header_bytes = 4294967296",
                "media.max_header_bytes",
            ),
            (
                "[fleet]\nregistration_secret = \"short\"",
                "fleet.registration_secret",
            ),
            (
                "[fleet]\nheartbeat_timeout_secs = 0",
                "fleet.heartbeat_timeout_secs",
            ),
            ("[steering]\nepsilon = -0.5", "steering.epsilon"),
            ("[steering]\nepsilon = nan", "steering.epsilon"),
            (
                "[steering]\ndefault_region = \"eu west\"",
                "steering.default_region",
            ),
            ("[steering]\nmax_pathways = 0", "steering.max_pathways"),
            ("[steering]\nttl_secs = 0", "steering.ttl_secs"),
            (
                "[steering]\npublic_url = \"ftp://api\"",
                "steering.public_url",
            ),
            (
                "[[steering.network]]\ncidr = \"10.0.0.1/8\"\nregion = \"eu\"",
                "steering.network[0].cidr",
            ),
            (
                "[[steering.network]]\ncidr = \"10.0.0.0/8\"\nregion = \"\"",
                "steering.network[0].region",
            ),
            (
                "[steering.distances.eu]\n\"us/east\" = 3",
                "steering.distances.eu.us/east",
            ),
            (
                "[media]\nidle_timeout_secs = 18446744073709551615",
                "media.idle_timeout_secs",
            ),
            (
                "[media]\nmax_connections = 4611686018427387904",
                "media.max_connections",
            ),
            (
                "[playback]\ntoken_ttl_secs = 18446744073709551615",
                "playback.token_ttl_secs",
            ),
            ("[media]\nread_chunk_bytes = 1", "media.read_chunk_bytes"),
            ("[admin]\nbearer_token = \"short\"", "admin.bearer_token"),
            ("[store]\nurl = \"ftp://x/y\"", "store.url"),
            ("[store]\nurl = \"not a url\"", "store.url"),
            ("[store]\nurl = \"file://relative/path\"", "store.url"),
            (
                "[store]\nurl = \"s3://b/p\"\nendpoint = \"http://127.0.0.1:9000\"",
                "store.endpoint",
            ),
            (
                "[cache_control]\nlive_manifest_max_age_secs = 0",
                "cache_control.live_manifest_max_age_secs",
            ),
            (
                "[cache_control]\nsegment = \"a\\u0001b\"",
                "cache_control.segment",
            ),
            ("[log]\nlevel = \"\"", "log.level"),
            (
                "[api]\nbrowser_max_age_secs = 86401",
                "api.browser_max_age_secs",
            ),
            ("[api]\ncdn_max_age_secs = 100000", "api.cdn_max_age_secs"),
            (
                "[api]\ncdn_stale_while_revalidate_secs = 100000",
                "api.cdn_stale_while_revalidate_secs",
            ),
            (
                "[api]\nnot_found_max_age_secs = 3601",
                "api.not_found_max_age_secs",
            ),
            (
                "[api]\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.1/8\"]",
                "api.trusted_proxies[1]",
            ),
            ("data_dir = \"\"", "data_dir"),
            ("[bus]\nurl = \"redis://h:1\"", "bus.url"),
            ("[bus]\nurl = \"kafka://h\"", "bus.url"),
            ("[bus]\nurl = \"kafka://h:1,:2\"", "bus.url"),
            ("[bus]\npartitions = 0", "bus.partitions"),
            ("[bus]\nsegment_bytes = 1000", "bus.segment_bytes"),
            ("[bus]\nretention_hours = 0", "bus.retention_hours"),
            (
                "[bus]\nretention_bytes = 1048576\nsegment_bytes = 2097152",
                "bus.retention_bytes",
            ),
            ("[bus]\nreplication = 0", "bus.replication"),
            (
                "[accounts]\nsession_ttl_secs = 5",
                "accounts.session_ttl_secs",
            ),
            (
                "[accounts]\nsignin_max_failures = 0",
                "accounts.signin_max_failures",
            ),
            (
                "[accounts]\nsignin_window_secs = 0",
                "accounts.signin_window_secs",
            ),
            (
                "[accounts]\nservice_tokens = [\"0123456789abcdef\", \"short\"]",
                "accounts.service_tokens[1]",
            ),
            (
                "[accounts]\nservice_tokens = [\"0123456789 abcdef\"]",
                "accounts.service_tokens[0]",
            ),
            ("[web]\ndir = \"/nonexistent/web\"", "web.dir"),
            ("[recs]\nmodel = \"svd\"", "recs.model"),
            ("[catalog]\nurl = \"sqlite::memory:\"", "catalog.url"),
            ("[recs]\ntrain_secs = 1", "recs.train_secs"),
            (
                "[recs]\nretrain_after_plays = 0",
                "recs.retrain_after_plays",
            ),
        ];
        for (text, field) in table {
            let err = parse(text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused() {
        let err = parse("[media]\nlisten_addr = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.message.contains("unknown field `listen_addr`"), "{err}");
        let err = parse("[log]\nformat = \"yaml\"").unwrap_err();
        assert!(err.message.contains("yaml"), "{err}");
        let err = parse("[media]\nmax_connections = -1").unwrap_err();
        assert!(err.message.contains("max_connections"), "{err}");
    }

    #[test]
    fn s3_with_http_endpoint_needs_allow_http() {
        let ok =
            "[store]\nurl = \"s3://b/p\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true";
        assert!(parse(ok).is_ok());
    }
}
