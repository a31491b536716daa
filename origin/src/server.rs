//! The origin's listeners: the media listener (HTTP/1.1 and HTTP/2, cleartext or TLS) and the admin listener.
//! Both are bound before anything is served, so a bad address never leaves a half-started server, and both
//! drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::server::conn::auto;
use shared::body::Metered;
use shared::serve::{
    Accepted, ConnLimits, accept_loop, accept_tls, bind, http_builder, on_drop, protocol_name,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::admin::AdminService;
use crate::config::OriginConfig;
use crate::control::api::ApiService;
use crate::control::catalog::{Catalog, TitleMeta};
use crate::control::search::SearchIndex;
use crate::media::access::AccessRecord;
use crate::media::handler::{Body, MediaService};
use crate::media::store::Store;
use crate::metrics::OriginMetrics;

/// A configured origin with its listeners bound, ready to serve.
pub struct Origin {
    config: OriginConfig,
    media_listener: TcpListener,
    admin_listener: TcpListener,
    tls: Option<TlsAcceptor>,
    media: Arc<MediaService>,
    admin: Arc<AdminService>,
    metrics: Arc<OriginMetrics>,
    /// The control plane's API, when `api.listen` is set.
    api: Option<(TcpListener, Arc<ApiService>)>,
}

impl Origin {
    /// Validates the config, opens the store, loads TLS material and binds both listeners; nothing is served yet.
    pub async fn bind(config: OriginConfig) -> anyhow::Result<Origin> {
        config.validate()?;
        let store = Store::open(&config)?;
        let tls = match (&config.media.tls_cert, &config.media.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(shared::tls::server_config(
                cert,
                key,
                shared::tls::ALPN_H2_H1,
            )?)),
            _ => None,
        };
        let media_listener = bind(config.media_addr()?, "media.listen").await?;
        let admin_listener = bind(config.admin_addr()?, "admin.listen").await?;
        let metrics = Arc::new(OriginMetrics::new());
        let cors_allow_origin = Some(config.media.cors_allow_origin.as_str())
            .filter(|v| !v.is_empty())
            .map(HeaderValue::from_str)
            .transpose()?;
        tracing::info!(store = %store.description, "store opened");
        let media = Arc::new(MediaService {
            store,
            cache_control: config.cache_control.clone(),
            cors_allow_origin,
            metrics: Arc::clone(&metrics),
            taken_down: Default::default(),
            hints: Default::default(),
        });
        let train = Arc::new(tokio::sync::Notify::new());
        let admin = Arc::new(AdminService {
            metrics: Arc::clone(&metrics),
            bearer_token: config.admin.bearer_token.clone(),
            train: Arc::clone(&train),
        });
        let api = match config.api_addr()? {
            Some(addr) => {
                let listener = bind(addr, "api.listen").await?;
                let catalog = Catalog::open(&config.catalog_url())
                    .await?
                    .counting(metrics.db_queries.clone());
                let registered = register_titles(&catalog, &media.store).await;
                tracing::info!(backend = catalog.backend, registered, "catalog opened");
                let catalog = Arc::new(catalog);
                let search = Arc::new(std::sync::RwLock::new(Arc::new(
                    SearchIndex::build(&catalog.search_docs().await?)
                        .map_err(|e| anyhow::anyhow!("search index: {e}"))?,
                )));
                let details = crate::control::api::TitleCache::default();
                let fleet = Arc::new(crate::control::fleet::Fleet::new(Duration::from_secs(
                    config.fleet.heartbeat_timeout_secs,
                )));
                let bus = crate::bus::Bus::open(&config.bus, &config.data_dir)
                    .await
                    .map_err(|e| anyhow::anyhow!("bus (bus.url): {e}"))?;
                tracing::info!(bus = %bus.description(), "bus opened");
                let changes = crate::control::changes::ChangeFeed::default();
                crate::control::changes::spawn_consumers(
                    &bus,
                    &config.bus_group("derived", listener.local_addr()?),
                    crate::control::changes::Derived {
                        catalog: Arc::clone(&catalog),
                        applied: metrics.catalog_changes_applied.clone(),
                        search: Arc::clone(&search),
                        details: Arc::clone(&details),
                        taken_down: media.taken_down.clone(),
                        feed: changes.clone(),
                    },
                )
                .await?;
                tokio::spawn(crate::control::qoe::run(
                    bus.clone(),
                    metrics.registry.clone(),
                ));
                let recommender = crate::control::home::SharedRecommender::default();
                let trainer = crate::control::training::Trainer {
                    docs: catalog.docs(),
                    catalog: Arc::clone(&catalog),
                    target: Arc::clone(&recommender),
                    metrics: Arc::clone(&metrics),
                    kind: crate::recs::ModelKind::from_name(&config.recs.model)
                        .unwrap_or(crate::recs::ModelKind::Blend),
                    every: Duration::from_secs(config.recs.train_secs),
                    retrain_after_plays: config.recs.retrain_after_plays,
                    wake: train,
                    models: crate::control::training::ModelStore::new(
                        catalog.pool().clone(),
                        catalog.queries().clone(),
                    ),
                    lease: crate::control::lease::Lease::new(
                        catalog.pool().clone(),
                        catalog.queries().clone(),
                        crate::control::training::TRAINER_LEASE,
                        crate::control::training::LEASE_TTL,
                    ),
                };
                let accounts = Arc::new(crate::control::accounts::Accounts::new(
                    catalog.docs(),
                    config.accounts.session_ttl_secs as i64,
                    crate::control::accounts::SigninLimits {
                        max_failures: config.accounts.signin_max_failures,
                        window_secs: config.accounts.signin_window_secs as i64,
                    },
                ));
                tokio::spawn(sweep_sessions(Arc::clone(&accounts)));
                tokio::spawn(trainer.run(Some((
                    bus.clone(),
                    config.bus_group("recs", listener.local_addr()?),
                ))));
                let edge_reports = crate::control::fleet::EdgeReports::new(
                    catalog.pool().clone(),
                    catalog.queries().clone(),
                );
                let service = ApiService {
                    search,
                    details,
                    catalog,
                    edges: crate::control::api::PlaybackEdges::new(config.playback.edges.clone()),
                    token_ttl_secs: config.playback.token_ttl_secs,
                    signing_keys: shared::token::keys(&config.signing_keys),
                    fleet: Arc::clone(&fleet),
                    edge_reports: Some(edge_reports),
                    fleet_secret: config.fleet.registration_secret.clone(),
                    steering: crate::control::steering::SteeringPolicy::new(&config.steering)
                        .map_err(|(field, reason)| anyhow::anyhow!("{field}: {reason}"))?,
                    store: Some(media.store.clone()),
                    metrics: Arc::clone(&metrics),
                    bus: Some(bus),
                    changes,
                    accounts: Arc::clone(&accounts),
                    service_tokens: config.accounts.service_tokens.clone(),
                    secure_cookies: config.accounts.secure_cookies,
                    web_dir: config.web.dir.clone(),
                    recommender,
                    caching: crate::control::api::SharedCaching::from_config(&config.api),
                    trusted_proxies: crate::control::forwarded::TrustedProxies::parse(
                        &config.api.trusted_proxies,
                    )
                    .map_err(|(i, reason)| anyhow::anyhow!("api.trusted_proxies[{i}]: {reason}"))?,
                };
                tokio::spawn(sweep_fleet(
                    fleet,
                    service
                        .edge_reports
                        .clone()
                        .filter(|_| service.fleet_secret.is_some()),
                    Arc::clone(&metrics),
                ));
                Some((listener, Arc::new(service)))
            }
            None => None,
        };
        Ok(Origin {
            config,
            media_listener,
            admin_listener,
            tls,
            media,
            admin,
            metrics,
            api,
        })
    }

    pub fn media_addr(&self) -> SocketAddr {
        self.media_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives open requests
    /// `media.shutdown_grace_secs` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (media_addr, admin_addr) = (self.media_addr(), self.admin_addr());
        let api_addr = self
            .api
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
            .map(|a| a.to_string());
        tracing::info!(
            media_addr = %media_addr,
            admin_addr = %admin_addr,
            api_addr,
            tls = self.tls.is_some(),
            "listening"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let grace = Duration::from_secs(self.config.media.shutdown_grace_secs);
        let media_builder = media_builder(&self.config);
        // The admin and API listeners get the media listener's limits too.
        let (admin_builder, api_builder) = (media_builder.clone(), media_builder.clone());
        let limits = Arc::new(Semaphore::new(self.config.media.max_connections));
        let handshake_timeout = Duration::from_secs(self.config.media.tls_handshake_timeout_secs);
        let idle = shared::serve::ConnTimers {
            idle: Duration::from_secs(self.config.media.idle_timeout_secs),
            max_age: None,
            send: Duration::from_secs(self.config.media.send_timeout_secs),
        };

        let media = {
            let (service, metrics, tls) = (
                Arc::clone(&self.media),
                Arc::clone(&self.metrics),
                self.tls.clone(),
            );
            accept_loop(
                self.media_listener,
                limits,
                stop_rx.clone(),
                None,
                move |stream, peer, stop| {
                    let (service, metrics, tls, builder) = (
                        Arc::clone(&service),
                        Arc::clone(&metrics),
                        tls.clone(),
                        media_builder.clone(),
                    );
                    async move {
                        metrics.connections.inc();
                        metrics.connections_open.inc();
                        let _open = on_drop(move || metrics.connections_open.dec());
                        match tls {
                            None => {
                                let plain = Accepted::Plain(stream);
                                serve_media(&builder, plain, peer, service, stop, idle).await
                            }
                            Some(acceptor) => match tokio::time::timeout(
                                handshake_timeout,
                                accept_tls(&acceptor, stream),
                            )
                            .await
                            {
                                Ok(Ok(tls_stream)) => {
                                    serve_media(&builder, tls_stream, peer, service, stop, idle)
                                        .await
                                }
                                Ok(Err(e)) => {
                                    service.metrics.tls_failures.inc();
                                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                                }
                                Err(_) => {
                                    service.metrics.tls_failures.inc();
                                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                                }
                            },
                        }
                    }
                },
            )
        };
        let admin = {
            let service = Arc::clone(&self.admin);
            let builder = admin_builder;
            plain_listener(
                self.admin_listener,
                64,
                builder,
                stop_rx.clone(),
                idle,
                move |req| {
                    let service = Arc::clone(&service);
                    async move { service.respond(&req) }
                },
            )
        };
        let api_task = self.api.map(|(listener, service)| {
            let max_connections = self.config.media.max_connections;
            tokio::spawn(plain_listener(
                listener,
                max_connections,
                api_builder,
                stop_rx.clone(),
                idle,
                move |req| {
                    let service = Arc::clone(&service);
                    async move { service.respond(req).await }
                },
            ))
        });
        let media_task = tokio::spawn(media);
        let admin_task = tokio::spawn(admin);
        shutdown.await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new connections, draining open ones"
        );
        let _ = stop_tx.send(true);
        let drained = async {
            let _ = media_task.await;
            let _ = admin_task.await;
            if let Some(task) = api_task {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("grace period over; closing the connections still open");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// A cleartext HTTP/1.1 and HTTP/2 listener (admin, API): each request answered by `respond`, at most
/// `max_connections` at once, with the media listener's limits (`builder`: header-read timeout, header size),
/// drained on stop.
async fn plain_listener<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    builder: auto::Builder<shared::serve::InlineFirstExecutor>,
    stop: watch::Receiver<bool>,
    idle: shared::serve::ConnTimers,
    respond: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    accept_loop(
        listener,
        Arc::new(Semaphore::new(max_connections)),
        stop,
        None,
        move |stream, peer, stop| {
            let (respond, builder) = (respond.clone(), builder.clone());
            // The peer's address rides in the request (the API places viewers by it).
            let handle = move |mut request: Request<Incoming>, peer: SocketAddr| {
                request.extensions_mut().insert(peer);
                respond(request)
            };
            async move {
                let accepted = Accepted::Plain(stream);
                shared::serve::serve_requests(&builder, accepted, peer, stop, idle, handle).await;
            }
        },
    )
    .await
}

/// Deletes expired sessions and the failed sign-ins that no longer count, every hour (every instance does: the
/// deletes are idempotent and cheap).
async fn sweep_sessions(accounts: Arc<crate::control::accounts::Accounts>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = crate::control::viewer::now_secs();
        match accounts.sweep_sessions(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "expired sessions deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting expired sessions failed"),
        }
        match accounts.sweep_failures(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(failures = n, "old failed sign-ins deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting old failed sign-ins failed"),
        }
    }
}

/// Every second: reads the edges' reports every instance took (`reports`; none when registration is off), logs
/// the edges that went down or came back, and sets `control_fleet_edges`.
async fn sweep_fleet(
    fleet: Arc<crate::control::fleet::Fleet>,
    reports: Option<crate::control::fleet::EdgeReports>,
    metrics: Arc<OriginMetrics>,
) {
    use crate::control::fleet::Change;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reading = true;
    loop {
        tick.tick().await;
        if let Some(reports) = &reports {
            match reports.load().await {
                Ok(rows) => {
                    fleet.merge(rows);
                    reading = true;
                }
                // Said once per outage, not every second; the copy held meanwhile ages into "down".
                Err(e) if reading => {
                    reading = false;
                    tracing::warn!(error = %e, "reading the edges' reports failed");
                }
                Err(_) => {}
            }
        }
        let now = crate::bus::now_ms();
        for change in fleet.sweep(now) {
            match change {
                Change::Down { name, region } => {
                    tracing::warn!(edge = %name, region = %region, "edge down: no report within the heartbeat timeout")
                }
                Change::Up { name, region } => {
                    tracing::info!(edge = %name, region = %region, "edge up")
                }
            }
        }
        metrics.fleet_edges.reset();
        for (region, (registered, healthy)) in fleet.counts(now) {
            let set = |state: &str, n: u64| {
                metrics
                    .fleet_edges
                    .with_label_values(&[region.as_str(), state])
                    .set(n as i64)
            };
            set("healthy", healthy);
            set("down", registered - healthy);
        }
    }
}

/// Registers the packaged titles the store holds (`titles/<slug>/meta.json`) in the catalog; returns how many.
/// Only titles whose metadata changed since they were last registered are written, and one instance at a time
/// does it (the lease `catalog-register`): instances starting together on one database would otherwise write
/// every title each, and race. A title whose metadata cannot be read is skipped with a warning naming it.
async fn register_titles(catalog: &Catalog, store: &Store) -> usize {
    let lease = crate::control::lease::Lease::new(
        catalog.pool().clone(),
        catalog.queries().clone(),
        "catalog-register",
        REGISTRATION_LEASE,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    match lease.hold(now.as_millis() as i64).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(
                "another instance is registering the store's titles; this one reads the catalog"
            );
            return 0;
        }
        Err(e) => {
            tracing::warn!(error = %e, "the registration lease could not be taken; titles not registered");
            return 0;
        }
    }
    let registered = register_changed_titles(catalog, store, now.as_secs() as i64).await;
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "the registration lease could not be released (it lapses by itself)");
    }
    registered
}

/// How long an instance may take to register the store's titles before another may start over.
const REGISTRATION_LEASE: Duration = Duration::from_secs(900);

async fn register_changed_titles(catalog: &Catalog, store: &Store, now: i64) -> usize {
    let prefix = object_store::path::Path::from("titles");
    let listing = match store.inner().list_with_delimiter(Some(&prefix)).await {
        Ok(listing) => listing,
        Err(e) => {
            tracing::warn!(error = %e, "could not list titles/ in the store");
            return 0;
        }
    };
    let registered_at = match catalog.registered_at().await {
        Ok(times) => times,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the catalog; every title is registered again");
            Default::default()
        }
    };
    // The metadata files are read a few at a time, the titles written a batch per transaction.
    let reads = futures::stream::iter(listing.common_prefixes)
        .map(|folder| {
            let registered_at = &registered_at;
            async move {
                // The folder names the title: a title ingested under another slug keeps its packager's meta.json.
                let slug = folder.filename().unwrap_or_default().to_string();
                let key = format!("{folder}/meta.json");
                let meta = match store.read_small(&key, 1 << 20).await {
                    Ok((object, _))
                        if registered_at
                            .get(&slug)
                            // Strictly before: a file rewritten in the second it was registered is registered again.
                            .is_some_and(|&at| object.last_modified.timestamp() < at) =>
                    {
                        return None;
                    }
                    Ok((_, Some(bytes))) => serde_json::from_slice::<TitleMeta>(&bytes)
                        .map_err(|e| format!("{key} is not valid title metadata: {e}")),
                    Ok((_, None)) => Err(format!("{key} is larger than 1 MiB")),
                    Err((_, e)) => Err(format!("{key}: {e}")),
                };
                match meta {
                    Ok(mut meta) => {
                        meta.relocate(&slug);
                        Some((key, meta))
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "title skipped");
                        None
                    }
                }
            }
        })
        .buffered(REGISTRATION_READS)
        .filter_map(std::future::ready)
        .chunks(REGISTRATION_BATCH);
    futures::pin_mut!(reads);
    let mut registered = 0;
    while let Some(batch) = reads.next().await {
        let metas: Vec<TitleMeta> = batch.iter().map(|(_, meta)| meta.clone()).collect();
        if catalog.upsert_many(&metas, now).await.is_ok() {
            registered += metas.len();
            continue;
        }
        // One title spoils its batch: each on its own, so the others are registered and it is named.
        for (key, meta) in &batch {
            match catalog.upsert(meta, now).await {
                Ok(()) => registered += 1,
                Err(e) => tracing::warn!(key, error = %e, "could not register a title"),
            }
        }
    }
    registered
}

/// Titles' metadata files read at once when registering.
const REGISTRATION_READS: usize = 16;
/// Titles written per transaction when registering.
const REGISTRATION_BATCH: usize = 500;

fn media_builder(config: &OriginConfig) -> auto::Builder<shared::serve::InlineFirstExecutor> {
    let m = &config.media;
    http_builder(&ConnLimits {
        header_read_timeout: Duration::from_secs(m.header_read_timeout_secs),
        max_header_bytes: m.max_header_bytes,
        h2_max_concurrent_streams: m.h2_max_concurrent_streams,
        h2_window_bytes: 4 * 1024 * 1024,
    })
}

async fn serve_media(
    builder: &auto::Builder<shared::serve::InlineFirstExecutor>,
    accepted: Accepted,
    peer: SocketAddr,
    service: Arc<MediaService>,
    stop: watch::Receiver<bool>,
    idle: shared::serve::ConnTimers,
) {
    let handle = move |request, peer| {
        let service = Arc::clone(&service);
        async move { handle_media(&service, request, peer).await }
    };
    shared::serve::serve_requests(builder, accepted, peer, stop, idle, handle).await;
}

/// One media request, end to end: respond, then wrap the body so the access log and metrics see its end.
async fn handle_media(
    service: &MediaService,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Metered<Body>> {
    let started = Instant::now();
    let (parts, _body) = req.into_parts();
    let (response, error) = match service
        .respond(&parts.method, parts.uri.path(), &parts.headers)
        .await
    {
        Ok(response) => (response, None),
        Err(err) => (
            service.error_response(parts.uri.path(), &err),
            Some(err.reason),
        ),
    };
    let text = |name: http::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let expected_bytes =
        shared::body::promised_len(&parts.method, response.status(), response.headers());
    let record = AccessRecord {
        expected_bytes,
        path: parts.uri.path().to_string(),
        protocol: protocol_name(parts.version),
        peer,
        status: response.status().as_u16(),
        range: text(http::header::RANGE),
        user_agent: text(http::header::USER_AGENT),
        error,
        started,
        metrics: Arc::clone(&service.metrics),
        method: parts.method,
    };
    response.map(|body| record.meter(body))
}
