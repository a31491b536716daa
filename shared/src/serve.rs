//! Serving plumbing shared by every HTTP listener of the project: the hyper connection builder with the
//! connection limits, the accept loop (bounded connections, graceful drain), and small helpers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Per-connection limits of an HTTP/1.1 + HTTP/2 listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Time allowed for a complete HTTP/1.1 request head, idle keep-alive time included.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window per stream and per connection, in bytes.
    pub h2_window_bytes: u32,
}

/// The executor hyper hands each HTTP/2 stream to. It polls the stream once where it is handed over, inside
/// the connection's task, and spawns it only if it is not finished: a response ready at once (a cache hit) is
/// then queued before the connection writes, so the responses to the requests that arrived together leave in
/// one TLS record and one `writev`. Spawned at once instead, each stream task woke the connection task, which
/// tokio's LIFO slot ran next, flushing one response per system call (a third of the CPU on small hits).
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineFirstExecutor;

impl<F> hyper::rt::Executor<F> for InlineFirstExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let mut future = Box::pin(future);
        // Polled with a waker that does nothing: a future left pending is polled again by its task at once,
        // and registers that task's waker then (wakers are re-registered on every poll).
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if future.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(future);
        }
    }
}

/// A connection builder that speaks HTTP/1.1 and HTTP/2 (by ALPN or prior knowledge) within `limits`.
pub fn http_builder(limits: &ConnLimits) -> auto::Builder<InlineFirstExecutor> {
    let mut builder = auto::Builder::new(InlineFirstExecutor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .initial_stream_window_size(limits.h2_window_bytes)
        .initial_connection_window_size(limits.h2_window_bytes.saturating_mul(4))
        .max_frame_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Binds a listener, naming the config field on failure.
pub async fn bind(addr: SocketAddr, field: &str) -> std::io::Result<TcpListener> {
    listen(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (`{field}`): {e}"),
        )
    })
}

/// Connections the kernel queues before they are accepted (capped by `net.core.somaxconn`). The standard
/// library's 128 overflowed when 200 players arrived at once: the SYNs beyond it were dropped, and those players
/// got their first byte a second later, when their SYN was sent again.
pub const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As the standard library's bind does: a restarted server may reuse a port left in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections until `stop` turns true, at most as many at once as `limits` has permits, and runs
/// `serve` for each with a receiver of the stop signal (so it can finish gracefully: HTTP/2 GOAWAY, HTTP/1.1
/// close after the current response); returns when every connection has finished. With `threads`, each
/// connection lives on one of them (see [`ConnectionThreads`]); without, on the runtime this loop runs on.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    threads: Option<Arc<ConnectionThreads>>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&limits).acquire_owned() => permit.expect("semaphore never closed"),
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let stop = stop.clone();
        match &threads {
            None => {
                let fut = serve(stream, peer, stop);
                tasks.spawn(async move {
                    fut.await;
                    drop(permit);
                });
            }
            Some(threads) => {
                // Registered again with the chosen thread's own reactor: its readiness never wakes another.
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let serve = Arc::clone(&serve);
                tasks.spawn_on(
                    async move {
                        if let Ok(stream) = TcpStream::from_std(stream) {
                            serve(stream, peer, stop).await;
                        }
                        drop(permit);
                    },
                    threads.next(),
                );
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Threads that each run a runtime of their own (thread per core, as nginx runs a worker per core): a
/// connection accepted on the shared runtime is handed to one of them, in turn, and lives there — its socket on
/// that thread's reactor, its requests and the tasks they start run on that thread — so serving a request
/// wakes no other thread and no task is stolen across cores. On two cores, a manifest hit over HTTP/1.1 cost
/// 1.4× the CPU on the shared work-stealing runtime.
pub struct ConnectionThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
    /// Dropped with this: each thread's runtime then stops, ending the tasks left on it.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl ConnectionThreads {
    /// Starts `count` threads named `<name>-conn-<i>`, each running a current-thread runtime.
    pub fn start(name: &str, count: usize) -> std::io::Result<Arc<ConnectionThreads>> {
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("{name}-conn-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Arc::new(ConnectionThreads {
            handles,
            next: std::sync::atomic::AtomicUsize::new(0),
            _stop: stops,
        }))
    }

    /// The thread for the next connection (round robin).
    fn next(&self) -> &tokio::runtime::Handle {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.handles[i % self.handles.len()]
    }
}

/// A client connection as accepted: plain TCP, or TLS over a `Held` socket (see `accept_tls`).
pub enum Accepted {
    Plain(TcpStream),
    Tls(
        Box<tokio_rustls::server::TlsStream<crate::cork::Held<TcpStream>>>,
        Arc<crate::cork::HoldSwitch>,
    ),
}

/// The TLS handshake on a TCP connection, over a `Held` socket: rustls then holds the records written in
/// one poll of the connection, and they leave together without another copy (`crate::cork::cork_tls`).
pub async fn accept_tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
) -> std::io::Result<Accepted> {
    let (held, switch) = crate::cork::Held::new(tcp);
    Ok(Accepted::Tls(
        Box::new(acceptor.accept(held).await?),
        switch,
    ))
}

/// How long a connection may live.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimers {
    /// A connection is idle when no request is in flight and none has started or ended for this long, or when
    /// no byte has moved either way for this long (a stalled transfer); pings do not count. Then it is asked
    /// to finish, and dropped if it has not one more `idle` later.
    pub idle: Duration,
    /// A connection is asked to finish (GOAWAY, or `Connection: close`) at this age, so no client holds one
    /// for ever; its requests in flight complete. `None`: no limit.
    pub max_age: Option<Duration>,
    /// The send deadline: a connection is closed when one of its responses has waited this long for the client
    /// to take its next bytes (a full socket, or an HTTP/2 stream or connection window the client never opens),
    /// so that no client pins response bodies in memory. Pings and other streams' progress do not count.
    pub send: Duration,
}

/// Serves one connection with `builder` until it ends. It is asked to finish gracefully when `stop` turns
/// true, when it is idle, or when it reaches its maximum age (`timers`; hyper has no idle timeout for HTTP/2).
/// Writes made during one poll of the connection leave together (`crate::cork`; under TLS, by rustls itself:
/// `accept_tls`).
async fn serve_connection<S, B>(
    builder: &auto::Builder<InlineFirstExecutor>,
    accepted: Accepted,
    service: S,
    stop: watch::Receiver<bool>,
    timers: ConnTimers,
    requests: Arc<RequestActivity>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match accepted {
        Accepted::Plain(tcp) => {
            serve_gathered(builder, tcp, None, service, stop, timers, requests).await
        }
        Accepted::Tls(tls, switch) => {
            serve_gathered(builder, tls, Some(switch), service, stop, timers, requests).await
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (a server holds a descriptor per client
/// connection, and about as many upstream), and logs what it has; warns when even the hard limit is below
/// `needed`, naming the field that asks for it. Connections past the limit would fail to be accepted.
pub fn raise_open_file_limit(needed: u64, field: &str) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let before = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if before != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    let soft = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            limit.rlim_cur = soft;
        }
    }
    let open_files = limit.rlim_cur;
    if open_files < needed {
        tracing::warn!(
            open_files,
            raised_from = soft,
            needed,
            "the open-file limit is below what `{field}` needs; raise the hard limit (LimitNOFILE, ulimit -Hn)"
        );
    } else {
        tracing::info!(open_files, raised_from = soft, needed, "open-file limit");
    }
}

/// Serves one accepted connection with `handle`, called for each request with the request and the peer's
/// address; a connection that ends with an error is logged at debug level (clients hang up all the time).
pub async fn serve_requests<H, F, B>(
    builder: &auto::Builder<InlineFirstExecutor>,
    accepted: Accepted,
    peer: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
    timers: ConnTimers,
    handle: H,
) where
    H: Fn(http::Request<Incoming>, std::net::SocketAddr) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let requests = Arc::new(RequestActivity::new());
    let in_service = Arc::clone(&requests);
    let service = hyper::service::service_fn(move |request| {
        // In flight from its head until its body ends (or is dropped).
        let guard = RequestGuard::new(Arc::clone(&in_service));
        let response = handle(request, peer);
        async move {
            let response = response.await;
            let waiting_since = guard.0.send_clock();
            Ok::<_, std::convert::Infallible>(response.map(|body| CountedBody {
                inner: body,
                guard,
                waiting_since,
            }))
        }
    });
    if let Err(e) = serve_connection(builder, accepted, service, stop, timers, requests).await {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// `serve_connection` on a stream, with the writes of a TLS stream over a `Held` socket gathered by rustls
/// (`hold`).
async fn serve_gathered<I, S, B>(
    builder: &auto::Builder<InlineFirstExecutor>,
    io: I,
    hold: Option<Arc<crate::cork::HoldSwitch>>,
    service: S,
    mut stop: watch::Receiver<bool>,
    timers: ConnTimers,
    requests: Arc<RequestActivity>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let tracked = Tracked {
        inner: io,
        activity: Arc::clone(&activity),
    };
    let (io, cork) = match hold {
        None => crate::cork::cork(tracked),
        Some(switch) => crate::cork::cork_tls(tracked, switch),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut finishing = *stop.borrow();
    if finishing {
        conn.as_mut().graceful_shutdown();
    }
    let idle_timeout = timers.idle;
    let retire_at = timers.max_age.map(|age| tokio::time::Instant::now() + age);
    let mut idle_close_at: Option<tokio::time::Instant> = None;
    loop {
        // Idle: no byte for idle_timeout (a stalled transfer), or no request in flight and none started or
        // ended for idle_timeout (an HTTP/2 client answering pings is not busy).
        let bytes_left = idle_timeout.saturating_sub(activity.idle_for());
        let requests_left = match requests.in_flight() {
            0 => idle_timeout.saturating_sub(requests.idle_for()),
            _ => idle_timeout,
        };
        let idle_left = bytes_left.min(requests_left);
        let hard_close =
            idle_close_at.unwrap_or_else(|| tokio::time::Instant::now() + idle_timeout);
        let retire = retire_at.unwrap_or_else(|| tokio::time::Instant::now() + idle_timeout);
        let sending = requests.in_flight() > 0;
        tokio::select! {
            result = std::future::poll_fn(|cx| cork.flush_after(&mut conn.as_mut(), cx)) => return result,
            _ = stop.changed(), if !finishing => {
                conn.as_mut().graceful_shutdown();
                finishing = true;
            }
            _ = tokio::time::sleep(idle_left), if !finishing => {
                let idle = activity.idle_for() >= idle_timeout
                    || (requests.in_flight() == 0 && requests.idle_for() >= idle_timeout);
                if idle {
                    conn.as_mut().graceful_shutdown();
                    finishing = true;
                    idle_close_at = Some(tokio::time::Instant::now() + idle_timeout);
                }
            }
            // Old enough: finish gracefully; requests in flight complete, then the idle rules apply again.
            _ = tokio::time::sleep_until(retire), if !finishing && retire_at.is_some() => {
                conn.as_mut().graceful_shutdown();
                finishing = true;
            }
            _ = tokio::time::sleep_until(hard_close), if idle_close_at.is_some() => return Ok(()),
            _ = requests.started.notified(), if !sending => {}
            // Checked a few times per deadline, only while responses are in flight.
            _ = tokio::time::sleep(timers.send / 4), if sending => {
                let waited = requests.longest_send_wait();
                if waited >= timers.send {
                    tracing::info!(
                        waited_ms = waited.as_millis() as u64,
                        "closing a connection whose client took no response bytes within the send deadline"
                    );
                    return Ok(());
                }
            }
        }
    }
}

/// When bytes last moved on a connection.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The requests of one connection: how many are in flight, when one last started or ended, and how long each
/// response body has waited for the client to take what it gave last.
struct RequestActivity {
    in_flight: AtomicU64,
    changed: Activity,
    /// One per response body in flight: since when (`changed`'s milliseconds + 1) its last frame has waited
    /// for the client, 0 while it is not waiting. Bounded by the streams in flight (pruned as they end).
    sends: Mutex<Vec<Weak<AtomicU64>>>,
    /// Wakes the connection's loop when a request starts on an idle connection (to start its send checks).
    started: tokio::sync::Notify,
}

impl RequestActivity {
    fn new() -> Self {
        RequestActivity {
            in_flight: AtomicU64::new(0),
            changed: Activity::new(),
            sends: Mutex::new(Vec::new()),
            started: tokio::sync::Notify::new(),
        }
    }

    /// Registers a response body's send clock.
    fn send_clock(&self) -> Arc<AtomicU64> {
        let clock = Arc::new(AtomicU64::new(0));
        let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
        // Pruned when ended ones may be half of it: a few pointer checks per request, amortised.
        if sends.len() >= 2 * self.in_flight() as usize + 8 {
            sends.retain(|s| s.strong_count() > 0);
        }
        sends.push(Arc::downgrade(&clock));
        clock
    }

    fn now_mark(&self) -> u64 {
        self.changed.base.elapsed().as_millis() as u64 + 1
    }

    /// The longest time a response body in flight has waited for the client.
    fn longest_send_wait(&self) -> Duration {
        let now = self.now_mark();
        let sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = sends
            .iter()
            .filter_map(Weak::upgrade)
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&since| since > 0)
            .min();
        oldest.map_or(Duration::ZERO, |since| {
            Duration::from_millis(now.saturating_sub(since))
        })
    }

    fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn idle_for(&self) -> Duration {
        self.changed.idle_for()
    }
}

/// One request in flight, from its head until its response body ends or is dropped.
struct RequestGuard(Arc<RequestActivity>);

impl RequestGuard {
    fn new(requests: Arc<RequestActivity>) -> Self {
        if requests.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            requests.started.notify_one();
        }
        requests.changed.touch();
        RequestGuard(requests)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.touch();
    }
}

/// A response body that keeps its request counted as in flight until it is done, and keeps its send clock:
/// from each frame it gives until it is asked for the next, it is waiting for the client.
struct CountedBody<B> {
    inner: B,
    guard: RequestGuard,
    waiting_since: Arc<AtomicU64>,
}

impl<B: http_body::Body + Unpin> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.waiting_since.store(0, Ordering::Relaxed);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            let now = self.guard.0.now_mark();
            self.waiting_since.store(now, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An I/O stream that records activity.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The protocol label of access logs and metrics.
pub fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "http/0.9",
        http::Version::HTTP_10 => "http/1.0",
        http::Version::HTTP_11 => "http/1.1",
        http::Version::HTTP_2 => "h2",
        http::Version::HTTP_3 => "h3",
        _ => "unknown",
    }
}

/// Runs `f` when dropped (connection gauges, in-flight counters).
pub fn on_drop<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// A future that resolves on SIGINT (Ctrl-C) or SIGTERM, the signals every binary drains on. The handlers are
/// installed when this is called, not when the future is first polled, so a signal that arrives as soon as a
/// server says it is listening is never lost to the default action (regression: `sigterm_stops_cleanly`
/// failed once when SIGTERM came between the `listening` line and the first poll). Call inside a runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Runs a server future on a multi-threaded runtime and turns its outcome into the process exit status,
/// printing the error as `NAME: error` (the one place both binaries report a failed start or run).
pub fn run_server<F>(name: &str, server: F) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300 players connecting at once, before the server accepts any: every connection completes (the kernel
    /// queues them), none waits for its SYN to be sent again.
    #[tokio::test]
    async fn a_crowd_connecting_at_once_is_queued_not_dropped() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test.listen")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..300 {
            connects.spawn(async move {
                tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
            });
        }
        let mut held = Vec::new();
        while let Some(connected) = connects.join_next().await {
            let stream = connected
                .unwrap()
                .expect("connected within 500 ms")
                .unwrap();
            held.push(stream);
        }
        assert_eq!(held.len(), 300);
        drop(listener);
    }

    /// With connection threads, every connection is served on one of them, in turn, with its socket usable
    /// there; the loop ends when every connection has finished, and the threads' runtimes stop with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_live_on_the_connection_threads_in_turn() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test.listen")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let threads = ConnectionThreads::start("test", 3).unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let served = tokio::spawn(accept_loop(
            listener,
            Arc::new(Semaphore::new(16)),
            stop_rx,
            Some(Arc::clone(&threads)),
            |mut stream: TcpStream, _peer, _stop| async move {
                // The thread's name, as the answer: the connection runs where it was handed.
                let name = std::thread::current().name().unwrap_or("").to_string();
                let mut asked = [0u8; 4];
                stream.read_exact(&mut asked).await.unwrap();
                stream.write_all(name.as_bytes()).await.unwrap();
            },
        ));
        let mut names = Vec::new();
        for _ in 0..6 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(b"ping").await.unwrap();
            let mut name = String::new();
            client.read_to_string(&mut name).await.unwrap();
            names.push(name);
        }
        let expected: Vec<String> = (0..6).map(|i| format!("test-conn-{}", i % 3)).collect();
        assert_eq!(names, expected);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the loop ends")
            .unwrap();
    }
}
