//! Serving plumbing shared by every HTTP listener of the project: the hyper connection builder with the
//! connection limits, the accept loop (bounded connections, graceful drain), and small helpers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
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

/// A connection builder that speaks HTTP/1.1 and HTTP/2 (by ALPN or prior knowledge) within `limits`.
pub fn http_builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
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
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (`{field}`): {e}"),
        )
    })
}

/// Accepts connections until `stop` turns true, at most as many at once as `limits` has permits, and runs
/// `serve` for each with a watcher for graceful shutdown; then asks every open connection to finish (HTTP/2
/// GOAWAY, HTTP/1.1 close after the current response) and returns when all have.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
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
        let fut = serve(stream, peer, graceful.watcher());
        tasks.spawn(async move {
            fut.await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    graceful.shutdown().await;
    while tasks.join_next().await.is_some() {}
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
