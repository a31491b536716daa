//! The edge's listeners: TLS (HTTP/1.1 and HTTP/2 by ALPN; certificate reloaded on SIGHUP), an optional plain
//! HTTP listener, and the admin listener. All are bound before anything is served; all drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::conn::auto;
use shared::serve::{Accepted, ConnLimits, accept_loop, accept_tls, bind, http_builder, on_drop};
use shared::tls::ReloadableCert;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::admin::AdminService;
use crate::cache::bans::Bans;
use crate::cache::engine::{Engine, EngineSetup};
use crate::cache::freshness::Policy;
use crate::cache::storage::{FoyerStorage, StorageSizes};
use crate::clock::Clock;
use crate::config::{EdgeConfig, slice_block_bytes};
use crate::error::EdgeError;
use crate::metrics::EdgeMetrics;
use crate::pipeline::{
    BodyLimits, Cors, Edge, EdgeSetup, Forwarding, QueryPolicy, Site, SiteRoute,
};
use crate::status::CacheStatus;
use crate::upstream::Upstream;

/// Connections the admin listener serves at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A configured edge with its listeners bound and its cache open.
pub struct EdgeServer {
    config: EdgeConfig,
    tls_listener: Option<TcpListener>,
    http_listener: Option<TcpListener>,
    admin_listener: TcpListener,
    quic: Option<quinn::Endpoint>,
    cert: Option<Arc<ReloadableCert>>,
    edge: Arc<Edge>,
}

impl EdgeServer {
    /// Validates the config, loads the certificate, opens (and recovers) the cache, and binds the listeners.
    pub async fn bind(config: EdgeConfig) -> anyhow::Result<EdgeServer> {
        config.validate()?;
        let tls_addr = config.tls_addr()?;
        let cert = match tls_addr {
            Some(_) => Some(ReloadableCert::load(&config.tls_cert(), &config.tls_key())?),
            None => None,
        };
        let tls_listener = match tls_addr {
            Some(addr) => Some(bind(addr, "tls.listen").await?),
            None => None,
        };
        let http_listener = match config.http_addr()? {
            Some(addr) => Some(bind(addr, "http.listen").await?),
            None => None,
        };
        let admin_listener = bind(config.admin_addr()?, "admin.listen").await?;
        // HTTP/3 on the same port number as the TLS listener (known now, even when configured as port 0).
        let quic = match (&tls_listener, &cert) {
            (Some(listener), Some(cert)) if config.h3.enabled => {
                Some(crate::h3::bind(listener.local_addr()?, cert, &config)?)
            }
            _ => None,
        };
        let alt_svc = match &quic {
            Some(endpoint) => Some(http::HeaderValue::from_str(&format!(
                "h3=\":{}\"; ma={}",
                endpoint.local_addr()?.port(),
                config.h3.alt_svc_max_age_secs
            ))?),
            None => None,
        };
        let c = &config.cache;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("creating data_dir {}: {e}", config.data_dir.display()))?;
        let bans = Arc::new(Bans::open(Some(config.data_dir.join("bans.json")))?);
        let metrics = Arc::new(EdgeMetrics::new());
        let storage = FoyerStorage::open(
            &config.disk_dir(),
            StorageSizes {
                registry: metrics.registry.clone(),
                memory_bytes: c.memory_bytes,
                disk_bytes: c.disk_bytes,
                block_bytes: slice_block_bytes(c.slice_bytes),
                evict_by_value: c.evict_by_value,
            },
        )
        .await?;
        let l = &config.limits;
        let mut upstream = Upstream::new(
            Duration::from_secs(l.upstream_connect_timeout_secs),
            Duration::from_secs(l.upstream_header_timeout_secs),
            Duration::from_secs(l.upstream_body_idle_timeout_secs),
            &config.name,
        )
        .with_cdn_id(&config.cdn_id);
        let authority_of = |url: &str| {
            url::Url::parse(url)
                .ok()
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
                .unwrap_or_default()
        };
        let pool_metrics = crate::upstream::PoolMetrics {
            requests: metrics.pool_requests.clone(),
            retries: metrics.pool_retries.clone(),
            up: metrics.pool_member_up.clone(),
            probes: metrics.pool_probes.clone(),
        };
        let sites = config
            .effective_sites()
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut authority = authority_of(&s.upstream);
                if !s.parents.is_empty() {
                    let parents = s
                        .parents
                        .iter()
                        .map(|url| crate::shield::Parent::new(url, &authority_of(url)))
                        .collect();
                    let route = crate::upstream::Route {
                        origin: authority,
                        host: http::HeaderValue::from_str(&s.hosts[0])
                            .unwrap_or(http::HeaderValue::from_static("localhost")),
                        parents: crate::shield::Parents::new(
                            parents,
                            Duration::from_secs(l.parent_retry_secs),
                        ),
                    };
                    authority =
                        upstream.add_route(i, route, &metrics.parent_requests, &metrics.parent_up);
                }
                let forwarding = |forward_credentials| Forwarding {
                    forward_credentials,
                    deny: s
                        .strip_request_fields
                        .iter()
                        .filter_map(|f| http::HeaderName::from_bytes(f.as_bytes()).ok())
                        .collect(),
                };
                let query_policy = |key: crate::config::QueryKey, params: &[String]| match key {
                    crate::config::QueryKey::All => QueryPolicy::All,
                    crate::config::QueryKey::None => QueryPolicy::None,
                    crate::config::QueryKey::Listed => QueryPolicy::Listed(params.to_vec()),
                };
                let own = Site {
                    name: s.name.clone(),
                    upstream: authority,
                    bypass_paths: canonical_prefixes(&s.bypass_paths),
                    signed_paths: canonical_prefixes(&s.signed_paths),
                    query_key: query_policy(s.query_key, &s.query_params),
                    passes: Arc::new(Semaphore::new(s.max_passes)),
                    forwarding: forwarding(s.forward_credentials),
                    route: None,
                    routes: Vec::new(),
                    prefetch_segments: s.prefetch_segments.unwrap_or(config.prefetch.segments),
                };
                let routes = s
                    .routes
                    .iter()
                    .map(|r| {
                        let label = format!("{}/{}", s.name, r.name);
                        let members = r
                            .upstreams
                            .iter()
                            .map(|url| crate::pool::Member::new(url, &authority_of(url)))
                            .collect();
                        let check = r.health_check.as_ref();
                        let pool = crate::pool::Pool::new(
                            members,
                            crate::pool::PoolSettings {
                                eject_after: r.eject_after_failures,
                                eject_for: Duration::from_secs(r.eject_secs),
                                healthy_threshold: check.map_or(1, |c| c.healthy_threshold),
                                unhealthy_threshold: check.map_or(1, |c| c.unhealthy_threshold),
                            },
                        );
                        let name = upstream.add_pool(crate::upstream::PoolRoute {
                            label: label.clone(),
                            pool,
                            retries: r.retries,
                            probe: check.map(|c| crate::upstream::Probe {
                                path: c.path.clone(),
                                interval: Duration::from_millis(c.interval_ms),
                                timeout: Duration::from_millis(c.timeout_ms),
                            }),
                            metrics: pool_metrics.clone(),
                        });
                        SiteRoute {
                            paths: canonical_prefixes(&r.paths),
                            prefixes: canonical_prefixes(&r.prefixes),
                            site: Site {
                                upstream: name,
                                query_key: query_policy(r.query_key, &r.query_params),
                                passes: Arc::new(Semaphore::new(r.max_passes)),
                                forwarding: forwarding(r.forward_credentials),
                                route: Some(label.into()),
                                ..own.clone()
                            },
                        }
                    })
                    .collect();
                (Site { routes, ..own }, s.hosts)
            })
            .collect();
        let cors = Cors {
            any: config.cors.allow_origins.iter().any(|o| o == "*"),
            origins: config.cors.allow_origins.clone(),
        };
        // Every fill holds up to a slice in memory: as many at once as the memory tier holds slices, at most.
        let max_fills = c.max_fills.min(
            usize::try_from(c.memory_bytes / c.slice_bytes)
                .unwrap_or(usize::MAX)
                .max(1),
        );
        if max_fills < c.max_fills {
            tracing::info!(
                max_fills,
                configured = c.max_fills,
                "cache.max_fills lowered to what the memory tier holds in slices"
            );
        }
        let engine = Arc::new(Engine::new(EngineSetup {
            storage: Arc::new(storage),
            upstream,
            slice_bytes: c.slice_bytes,
            max_fills,
            fill_deadline: Duration::from_secs(config.limits.upstream_fill_timeout_secs),
            metrics: Arc::clone(&metrics),
            policy: Policy {
                targeted_fields: c
                    .targeted_fields
                    .iter()
                    .filter_map(|f| http::HeaderName::from_bytes(f.as_bytes()).ok())
                    .collect(),
                heuristic_percent: c.heuristic_percent,
                heuristic_max_secs: c.heuristic_max_secs,
                negative_ttl_secs: c.negative_ttl_secs,
                stale_defaults: (c.stale_while_revalidate_secs, c.stale_if_error_secs),
            },
            max_variants: c.max_variants,
            retention_secs: c.max_retention_secs,
            bans,
            clock: Arc::new(Clock::new(config.admin.test_clock)),
        }));
        let edge = Arc::new(Edge::new(EdgeSetup {
            name: config.name.clone(),
            sites,
            engine,
            cors,
            metrics,
            alt_svc,
            client_directives: c.client_directives,
            bodies: BodyLimits::new(
                config.limits.max_request_body_bytes,
                config.limits.request_bodies_bytes,
                Duration::from_secs(config.limits.request_body_timeout_secs),
            ),
            signing_keys: shared::token::keys(&config.signing_keys),
            loops: crate::pipeline::LoopGuard {
                cdn_id: config.cdn_id.clone(),
                max_hops: config.limits.max_loop_hops,
            },
            prefetch: crate::pipeline::PrefetchSettings {
                limits: crate::prefetch::budget::Limits {
                    max_in_flight: config.prefetch.max_in_flight,
                    max_in_flight_per_upstream: config.prefetch.max_in_flight_per_upstream,
                    bytes_per_sec: config.prefetch.bytes_per_sec,
                    bytes_per_sec_per_upstream: config.prefetch.bytes_per_sec_per_upstream,
                },
                unused: Duration::from_secs(config.prefetch.unused_secs),
            },
            cmsd: config.cmsd,
        }));
        if c.evict_by_value {
            edge.follow_viewers();
        }
        Ok(EdgeServer {
            config,
            tls_listener,
            http_listener,
            admin_listener,
            quic,
            cert,
            edge,
        })
    }

    /// Serves until `shutdown` resolves, then drains for `limits.shutdown_grace_secs` and closes the cache.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let addr = |l: &Option<TcpListener>| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.to_string())
        };
        tracing::info!(
            name = %self.config.name,
            tls_addr = addr(&self.tls_listener),
            http_addr = addr(&self.http_listener),
            h3_addr = self.quic.as_ref().and_then(|q| q.local_addr().ok()).map(|a| a.to_string()),
            admin_addr = %self.admin_listener.local_addr()?,
            "listening"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        // Dropped (so aborted) when the server stops.
        let mut background = tokio::task::JoinSet::new();
        for task in self.edge.engine().upstream().pool_tasks() {
            background.spawn(task);
        }
        if !self.config.control.url.is_empty() {
            let control = self.config.control.clone();
            let tls_addr = addr(&self.tls_listener);
            let identity = crate::report::Identity {
                name: self.config.name.clone(),
                region: control.region.clone(),
                urls: match (&control.public_urls[..], tls_addr) {
                    ([], Some(tls)) => vec![format!("https://{tls}")],
                    (urls, _) => urls.to_vec(),
                },
                metrics_target: match control.metrics_target.as_str() {
                    "" => self.admin_listener.local_addr()?.to_string(),
                    target => target.to_string(),
                },
                capacity: self.config.limits.max_connections as u64,
            };
            tokio::spawn(crate::changes::follow_forever(
                control.clone(),
                identity.name.clone(),
                Arc::clone(&self.edge),
                crate::changes::state_file(&self.config.data_dir),
                self.config.cache.disk_bytes > 0,
                stop_rx.clone(),
            ));
            tokio::spawn(crate::stats::post_forever(
                control.clone(),
                identity.name.clone(),
                Arc::clone(&self.edge),
                stop_rx.clone(),
            ));
            let fill = &self.config.fill;
            let settings = crate::pipeline::FillSettings {
                scheduled: fill.enabled,
                quiet_hours: crate::fill::QuietHours::parse(&fill.quiet_hours)
                    .map_err(|reason| anyhow::anyhow!("fill.quiet_hours: {reason}"))?,
                budget_bytes: self.config.fill_budget(),
                bytes_per_sec: fill.bytes_per_sec,
                max_in_flight: fill.max_in_flight,
                site: fill.site.clone(),
            };
            tokio::spawn(Arc::clone(&self.edge).fill_forever(
                settings,
                control.clone(),
                stop_rx.clone(),
            ));
            let edge = Arc::clone(&self.edge);
            tokio::spawn(crate::report::report_forever(
                control,
                identity,
                edge,
                stop_rx.clone(),
            ));
        }
        let l = &self.config.limits;
        let builder = http_builder(&ConnLimits {
            header_read_timeout: Duration::from_secs(l.header_read_timeout_secs),
            max_header_bytes: l.max_header_bytes,
            h2_max_concurrent_streams: l.h2_max_concurrent_streams,
            h2_window_bytes: l.h2_window_bytes,
        });
        let handshake_timeout = Duration::from_secs(l.tls_handshake_timeout_secs);
        let idle = shared::serve::ConnTimers {
            idle: Duration::from_secs(l.idle_timeout_secs),
            max_age: Some(Duration::from_secs(l.max_connection_age_secs)),
            send: Duration::from_secs(l.send_timeout_secs),
        };
        let mut tasks = tokio::task::JoinSet::new();
        let threads = match l.connection_threads {
            Some(0) => None,
            Some(count) => Some(shared::serve::ConnectionThreads::start("edge", count)?),
            None => Some(shared::serve::ConnectionThreads::start(
                "edge",
                std::thread::available_parallelism().map_or(1, usize::from),
            )?),
        };

        if let (Some(listener), Some(cert)) = (self.tls_listener, &self.cert) {
            let acceptor = TlsAcceptor::from(Arc::new(cert.server_config(shared::tls::ALPN_H2_H1)));
            let (edge, builder) = (Arc::clone(&self.edge), builder.clone());
            let limits = Arc::new(Semaphore::new(l.max_connections));
            tasks.spawn(accept_loop(
                listener,
                limits,
                stop_rx.clone(),
                threads.clone(),
                move |stream, peer, stop| {
                    let (edge, builder, acceptor) =
                        (Arc::clone(&edge), builder.clone(), acceptor.clone());
                    async move {
                        let gauge = edge.metrics.connections_open.with_label_values(&["tls"]);
                        gauge.inc();
                        let _open = on_drop(move || gauge.dec());
                        let handshake = accept_tls(&acceptor, stream);
                        match tokio::time::timeout(handshake_timeout, handshake).await {
                            Ok(Ok(tls)) => serve_edge(&builder, tls, peer, edge, stop, idle).await,
                            Ok(Err(e)) => {
                                edge.metrics.tls_failures.inc();
                                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                edge.metrics.tls_failures.inc();
                                tracing::debug!(peer = %peer, "TLS handshake timed out");
                            }
                        }
                    }
                },
            ));
        }
        if let Some(listener) = self.http_listener {
            let (edge, builder) = (Arc::clone(&self.edge), builder.clone());
            let limits = Arc::new(Semaphore::new(l.max_connections));
            tasks.spawn(accept_loop(
                listener,
                limits,
                stop_rx.clone(),
                threads.clone(),
                move |stream, peer, stop| {
                    let (edge, builder) = (Arc::clone(&edge), builder.clone());
                    async move {
                        let gauge = edge.metrics.connections_open.with_label_values(&["http"]);
                        gauge.inc();
                        let _open = on_drop(move || gauge.dec());
                        serve_edge(&builder, Accepted::Plain(stream), peer, edge, stop, idle).await;
                    }
                },
            ));
        }
        {
            let admin = Arc::new(AdminService {
                edge: Arc::clone(&self.edge),
                bearer_token: self.config.admin.bearer_token.clone(),
            });
            // The same limits as the players' listeners (header-read timeout, header size): a slow client
            // must not hold the admin API, /healthz and purges among them.
            let builder = builder.clone();
            tasks.spawn(accept_loop(
                self.admin_listener,
                Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS)),
                stop_rx.clone(),
                None,
                move |stream, peer, stop| {
                    let (admin, builder) = (Arc::clone(&admin), builder.clone());
                    let handle = move |request, _peer| {
                        let admin = Arc::clone(&admin);
                        async move { admin.respond(request).await }
                    };
                    async move {
                        let accepted = Accepted::Plain(stream);
                        shared::serve::serve_requests(&builder, accepted, peer, stop, idle, handle)
                            .await;
                    }
                },
            ));
        }
        if let Some(endpoint) = self.quic {
            let limits = crate::h3::QuicLimits {
                max_connections: l.max_connections,
                header_timeout: Duration::from_secs(l.header_read_timeout_secs),
                idle_timeout: Duration::from_secs(self.config.h3.idle_timeout_secs),
                send_timeout: Duration::from_secs(l.send_timeout_secs),
                max_header_bytes: l.max_header_bytes as u64,
                zero_rtt: self.config.h3.zero_rtt,
            };
            let edge = Arc::clone(&self.edge);
            tasks.spawn(crate::h3::serve(endpoint, edge, stop_rx.clone(), limits));
        }
        // Always handled: SIGHUP's default action would end an edge that has no certificate to reload.
        tokio::spawn(reload_on_sighup(
            self.cert.clone(),
            Arc::clone(&self.edge.metrics),
        ));

        shutdown.await;
        let grace = Duration::from_secs(l.shutdown_grace_secs);
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new connections, draining open ones"
        );
        let _ = stop_tx.send(true);
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing the connections still open");
        }
        self.edge.storage().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn reload_on_sighup(cert: Option<Arc<ReloadableCert>>, metrics: Arc<EdgeMetrics>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        let Some(cert) = &cert else {
            tracing::info!("SIGHUP: no TLS listener, so no certificate to reload");
            continue;
        };
        match cert.reload() {
            Ok(()) => {
                metrics.cert_reloads.with_label_values(&["ok"]).inc();
                tracing::info!("certificate reloaded; new connections use it");
            }
            Err(e) => {
                metrics.cert_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "certificate reload failed; keeping the current one");
            }
        }
    }
}

/// Configured path prefixes in the canonical spelling requests are compared in (validated at load).
fn canonical_prefixes(prefixes: &[String]) -> Vec<String> {
    prefixes
        .iter()
        .map(|p| shared::path::canonical_prefix(p).unwrap_or_else(|_| p.clone()))
        .collect()
}

async fn serve_edge(
    builder: &auto::Builder<shared::serve::InlineFirstExecutor>,
    accepted: Accepted,
    peer: SocketAddr,
    edge: Arc<Edge>,
    stop: watch::Receiver<bool>,
    idle: shared::serve::ConnTimers,
) {
    let socket = crate::cmsd::ConnSocket::new(match &accepted {
        Accepted::Plain(stream) => stream.as_raw_fd(),
        Accepted::Tls(stream, _) => stream.get_ref().0.get_ref().as_raw_fd(),
    });
    let handle = move |mut request: http::Request<hyper::body::Incoming>, peer| {
        let edge = Arc::clone(&edge);
        request.extensions_mut().insert(socket.clone());
        async move {
            if let Some(refusal) = host_fields_refusal(&request) {
                let (parts, _body) = request.into_parts();
                let answer = edge.error_answer(&parts, refusal, CacheStatus::Local);
                let started = tokio::time::Instant::now();
                return crate::access::log_answer(&edge, parts, answer, peer, started);
            }
            crate::access::handle(&edge, request, peer).await
        }
    };
    shared::serve::serve_requests(builder, accepted, peer, stop, idle, handle).await;
}

/// Why a request's `Host` fields make it malformed, whatever the pipeline would make of it: more than one
/// `Host` field line (RFC 9112 3.2: a server MUST answer 400; two parsers could each pick a different one),
/// or, over HTTP/2 and HTTP/3, a `Host` that names another authority than `:authority` (RFC 9113 8.3.1,
/// RFC 9114 4.3.1). An HTTP/1.1 request in absolute form keeps its own rule: the target's authority decides
/// and `Host` is ignored (RFC 9112 3.2.2).
pub(crate) fn host_fields_refusal<B>(request: &http::Request<B>) -> Option<EdgeError> {
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Some(EdgeError::client(
            http::StatusCode::BAD_REQUEST,
            "more than one Host header field",
        ));
    }
    let multiplexed = matches!(
        request.version(),
        http::Version::HTTP_2 | http::Version::HTTP_3
    );
    if multiplexed
        && let (Some(host), Some(authority)) = (first, request.uri().authority())
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Some(EdgeError::client(
            http::StatusCode::BAD_REQUEST,
            "the Host header field names another authority than :authority",
        ));
    }
    None
}
