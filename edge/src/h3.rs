//! HTTP/3: a QUIC listener (quinn + h3) on the TLS listener's port, over UDP. Each request goes through the
//! same pipeline as HTTP/1.1 and HTTP/2 (`server::respond_logged`), so the cache, the access log and the
//! metrics are shared; only the framing differs. The certificate resolver is the TCP listener's, so a SIGHUP
//! reload applies to new QUIC connections too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use quinn::crypto::rustls::QuicServerConfig;
use shared::serve::on_drop;
use shared::tls::ReloadableCert;
use tokio::sync::watch;

use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::pipeline::{EarlyData, Edge};
use crate::status::CacheStatus;

type RequestStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// H3_NO_ERROR (RFC 9114 8.1): the connection is closed cleanly.
const H3_NO_ERROR: u32 = 0x100;

/// Body data goes to h3 in pieces of at most this size. h3-quinn copies each piece into a fresh buffer
/// (`SendStream::write`, not the zero-copy `write_chunk`); pieces of a whole 2 MiB slice cost a fresh mmap, page
/// faults and zeroing per response (measured: 10 % of the edge's CPU under HTTP/3 load), small ones reuse heap.
const H3_DATA_PIECE_BYTES: usize = 64 * 1024;

/// Binds the QUIC endpoint on `addr` (UDP) with the transport settings of `[h3]`.
pub fn bind(
    addr: SocketAddr,
    cert: &Arc<ReloadableCert>,
    config: &EdgeConfig,
) -> anyhow::Result<quinn::Endpoint> {
    let h3 = &config.h3;
    let mut tls = cert.server_config(&[b"h3"]);
    tls.max_early_data_size = if h3.zero_rtt { u32::MAX } else { 0 };
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| anyhow::anyhow!("QUIC TLS config: {e}"))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(h3.max_concurrent_streams.into())
        .max_concurrent_uni_streams(3u32.into())
        .stream_receive_window(h3.stream_receive_window_bytes.into())
        // Unread data a client may push over all its streams at once (quinn's default is unlimited).
        .receive_window((u64::from(h3.stream_receive_window_bytes) * 4).try_into()?)
        .send_window(h3.send_window_bytes)
        .max_idle_timeout(Some(Duration::from_secs(h3.idle_timeout_secs).try_into()?))
        .keep_alive_interval(None);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    quinn::Endpoint::server(server, addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}/udp (`tls.listen`, HTTP/3): {e}"))
}

/// The limits every HTTP/3 connection is served with.
#[derive(Debug, Clone, Copy)]
pub struct QuicLimits {
    /// Connections at once (with the TCP listeners' `limits.max_connections`); past half of it, a client must
    /// prove its address with a Retry first.
    pub max_connections: usize,
    /// A request's head must arrive within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight and none arriving for this long is closed, whatever PINGs keep
    /// QUIC itself alive.
    pub idle_timeout: Duration,
    /// The send deadline: a response stream whose client takes none of its next bytes for this long (its
    /// flow-control window never opened) is reset, so no client pins bodies in memory.
    pub send_timeout: Duration,
    pub max_header_bytes: u64,
    pub zero_rtt: bool,
}

/// Accepts QUIC connections until `stop` turns true; then refuses new ones, sends GOAWAY on open ones, and
/// returns when they have finished their requests.
pub async fn serve(
    endpoint: quinn::Endpoint,
    edge: Arc<Edge>,
    mut stop: watch::Receiver<bool>,
    limits: QuicLimits,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            _ = stop.changed() => break,
        };
        while connections.try_join_next().is_some() {}
        let open = connections.len();
        let turned_away = |how| {
            edge.metrics
                .quic_turned_away
                .with_label_values(&[how])
                .inc()
        };
        if open >= limits.max_connections {
            turned_away("refused");
            incoming.refuse();
            continue;
        }
        // Under load, a client proves it can receive at its address before it costs a handshake (RFC 9000 8.1).
        let incoming = if open >= limits.max_connections / 2
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            match incoming.retry() {
                Ok(()) => {
                    turned_away("retry");
                    continue;
                }
                Err(e) => e.into_incoming(),
            }
        } else {
            incoming
        };
        let (edge, stop) = (Arc::clone(&edge), stop.clone());
        connections.spawn(serve_connection(incoming, edge, stop, limits));
    }
    endpoint.set_server_config(None);
    while connections.join_next().await.is_some() {}
    endpoint.close(0u32.into(), b"shutting down");
}

/// Accepts a connection. With 0-RTT on, requests are read before the handshake completes; the returned future
/// resolves when it has, and requests accepted before then are early data (replayable, RFC 8470).
async fn accept(
    incoming: quinn::Incoming,
    zero_rtt: bool,
) -> Result<(quinn::Connection, Option<quinn::ZeroRttAccepted>), quinn::ConnectionError> {
    if !zero_rtt {
        return Ok((incoming.await?, None));
    }
    match incoming.accept()?.into_0rtt() {
        Ok((conn, handshake)) => Ok((conn, Some(handshake))),
        Err(connecting) => Ok((connecting.await?, None)),
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    edge: Arc<Edge>,
    mut stop: watch::Receiver<bool>,
    limits: QuicLimits,
) {
    let metrics = Arc::clone(&edge.metrics);
    let (conn, handshake) = match accept(incoming, limits.zero_rtt).await {
        Ok(accepted) => accepted,
        Err(e) => {
            metrics.quic_handshake_failures.inc();
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
    };
    metrics.quic_connections.inc();
    metrics.quic_connections_open.inc();
    let quic = conn.clone();
    let stats_conn = conn.clone();
    let _open = on_drop(move || {
        let stats = stats_conn.stats();
        metrics.quic_connections_open.dec();
        metrics.quic_sent_packets.inc_by(stats.path.sent_packets);
        metrics.quic_lost_packets.inc_by(stats.path.lost_packets);
        metrics
            .quic_congestion_events
            .inc_by(stats.path.congestion_events);
    });
    let peer = conn.remote_address();
    let built = h3::server::builder()
        .max_field_section_size(limits.max_header_bytes)
        .build(h3_quinn::Connection::new(conn))
        .await;
    let mut h3_conn = match built {
        Ok(h3_conn) => h3_conn,
        Err(e) => {
            tracing::debug!(peer = %peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
    };
    let mut requests = tokio::task::JoinSet::new();
    let mut goaway_sent = *stop.borrow();
    if goaway_sent {
        let _ = h3_conn.shutdown(0).await;
    }
    let mut handshake_done = handshake.is_none();
    let mut handshake = handshake.map(Box::pin);
    let mut last_request = Instant::now();
    loop {
        let mut stopping = false;
        let idle_until = last_request + limits.idle_timeout;
        tokio::select! {
            // Polled first: when the client's Finished and a request arrive together, the request is not early.
            biased;
            _ = async { handshake.as_mut().expect("while handshaking").await }, if !handshake_done => {
                handshake_done = true;
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                last_request = Instant::now();
            }
            () = tokio::time::sleep_until(idle_until), if requests.is_empty() => {
                // Idle means no request, not no packet: a client's PINGs keep QUIC alive, not this connection.
                quic.close(H3_NO_ERROR.into(), b"idle");
                break;
            }
            accepted = h3_conn.accept() => match accepted {
                Ok(Some(resolver)) => {
                    last_request = Instant::now();
                    let edge = Arc::clone(&edge);
                    let early_data = !handshake_done;
                    let (header_timeout, send_timeout) = (limits.header_timeout, limits.send_timeout);
                    let quic = quic.clone();
                    requests.spawn(async move {
                        match tokio::time::timeout(header_timeout, resolver.resolve_request()).await {
                            Ok(Ok((mut request, stream))) => {
                                // For CMSD-Dynamic: the path as it is when the request has arrived.
                                let path = quic.stats().path;
                                request.extensions_mut().insert(crate::cmsd::QuicPath {
                                    rtt: path.rtt,
                                    cwnd_bytes: path.cwnd,
                                });
                                serve_request(edge, request, stream, peer, early_data, send_timeout).await
                            }
                            Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "bad HTTP/3 request"),
                            // Dropping the stream resets it.
                            Err(_) => tracing::debug!(peer = %peer, "HTTP/3 request head timed out"),
                        }
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(peer = %peer, error = %e, "HTTP/3 connection ended");
                    }
                    break;
                }
            },
            _ = stop.changed(), if !goaway_sent => stopping = true,
        }
        if stopping {
            // GOAWAY: no new requests; those in flight finish.
            goaway_sent = true;
            let _ = h3_conn.shutdown(0).await;
        }
    }
    while requests.join_next().await.is_some() {}
}

/// The body of an HTTP/3 request, whole, up to `limit` bytes.
async fn read_body(stream: &mut RequestStream, limit: usize) -> Result<bytes::Bytes, EdgeError> {
    use bytes::Buf;
    let mut body = bytes::BytesMut::new();
    loop {
        match stream.recv_data().await {
            Ok(Some(mut chunk)) => {
                if body.len() + chunk.remaining() > limit {
                    return Err(EdgeError::client(
                        http::StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the request body is larger than {limit} bytes"),
                    ));
                }
                while chunk.has_remaining() {
                    let piece = chunk.chunk();
                    body.extend_from_slice(piece);
                    let n = piece.len();
                    chunk.advance(n);
                }
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(EdgeError::client(
                    http::StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                ));
            }
        }
    }
}

/// One HTTP/3 request through the shared pipeline; the body is sent frame by frame, and a body that fails
/// mid-way resets the stream (never a short body presented as complete).
async fn serve_request(
    edge: Arc<Edge>,
    request: http::Request<()>,
    mut stream: RequestStream,
    peer: SocketAddr,
    early_data: bool,
    send_timeout: Duration,
) {
    let started = Instant::now();
    let malformed = crate::server::host_fields_refusal(&request);
    let (mut parts, ()) = request.into_parts();
    parts.extensions.insert(crate::pipeline::ClientAddr(peer));
    if early_data {
        parts.extensions.insert(EarlyData);
    }
    let response = if let Some(refusal) = malformed {
        let answer = edge.error_answer(&parts, refusal, CacheStatus::Local);
        crate::access::log_answer(&edge, parts, answer, peer, started)
    } else if crate::pipeline::is_unsafe(&parts.method) {
        let read = match edge.admit_body(&parts) {
            Ok(permit) => {
                let limits = &edge.bodies;
                let read = read_body(&mut stream, limits.max_bytes);
                crate::access::within(limits.timeout, read)
                    .await
                    .map(|body| (body, permit))
            }
            Err(refusal) => Err(refusal),
        };
        match read {
            Ok((body, _permit)) => {
                crate::access::respond_logged(&edge, parts, body, peer, started).await
            }
            Err(refusal) => {
                let answer = edge.error_answer(&parts, refusal, CacheStatus::Local);
                crate::access::log_answer(&edge, parts, answer, peer, started)
            }
        }
    } else {
        crate::access::respond_logged(&edge, parts, bytes::Bytes::new(), peer, started).await
    };
    let (head, mut body) = response.into_parts();
    if stream
        .send_response(Response::from_parts(head, ()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                while !data.is_empty() {
                    let piece = data.split_to(data.len().min(H3_DATA_PIECE_BYTES));
                    match tokio::time::timeout(send_timeout, stream.send_data(piece)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "HTTP/3 send failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(
                                peer = %peer,
                                "resetting an HTTP/3 response whose client took no bytes within the send deadline"
                            );
                            stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                            return;
                        }
                    }
                }
            }
            Err(_) => {
                stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        }
    }
    if let Err(e) = stream.finish().await {
        tracing::debug!(peer = %peer, error = %e, "HTTP/3 finish failed");
        return;
    }
    // Read the request side to its end (GET and HEAD carry no body) so that dropping the stream does not
    // send STOP_SENDING, which clients report as a reset; a client still sending gets H3_NO_ERROR.
    let drained = tokio::time::timeout(Duration::from_secs(1), async {
        let mut budget = 64 * 1024usize;
        while let Ok(Some(chunk)) = stream.recv_data().await {
            budget = budget.saturating_sub(bytes::Buf::remaining(&chunk));
            if budget == 0 {
                return false;
            }
        }
        true
    })
    .await;
    if !matches!(drained, Ok(true)) {
        stream.stop_sending(h3::error::Code::H3_NO_ERROR);
    }
}
