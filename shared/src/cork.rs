//! Write coalescing for a served connection: small writes and flushes made while the connection's task is being
//! polled are gathered, and go out in one write when that poll ends (`Cork::flush_after`).
//!
//! Why: hyper's HTTP/2 server (through the `h2` crate) writes and flushes once per accepted stream, so a batch of
//! requests that arrived in one read, answered at once from cache, left as one TLS record and one `writev` per
//! response; the system calls were a third of the edge's CPU on small hits. Corked, the batch leaves together.
//! Writes of `CORK_BYTES` or more (large DATA frames, HTTP/1.1 bodies) pass straight through once the gathered
//! bytes ahead of them are out, so big bodies are never copied.
//!
//! Under TLS the gathering needs no copy of its own: rustls already copies each write into its records, so the
//! TLS stream runs over a `Held` socket that refuses to send while the connection is being polled
//! (`cork_tls`). rustls keeps the records, and when the poll ends they leave in one `writev`. Before, 16 KiB
//! HTTP/2 DATA frames were copied into the gather buffer and then again into rustls: 7.6 % of the edge's CPU
//! on 256 KiB hits over HTTP/2.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes smaller than this are gathered; the gathered bytes never exceed it.
pub const CORK_BYTES: usize = 32 * 1024;

struct State<I> {
    io: I,
    /// Set for a TLS stream over a `Held` socket: writes go straight to the TLS stream, which keeps them
    /// while the switch is on, and a drain is a flush of the TLS stream.
    hold: Option<Arc<HoldSwitch>>,
    gathered: BytesMut,
    /// A flush was asked for and has not reached `io` yet.
    flush_wanted: bool,
    /// A write error met while sending gathered bytes outside a write call, returned by the next call.
    error: Option<io::Error>,
}

impl<I: AsyncWrite + Unpin> State<I> {
    /// Writes out everything gathered; Ready(Ok) once it is all out (and flushed, if a flush was asked for).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(switch) = &self.hold {
            // The TLS stream's flush sends every record it holds; with nothing held it makes no system call.
            let _sending = switch.off_for_now();
            std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush_wanted = false;
            return Poll::Ready(Ok(()));
        }
        while !self.gathered.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.gathered) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.gathered.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.flush_wanted {
            std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush_wanted = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// The connection's I/O as hyper sees it: writes are gathered until the end of the task's poll.
pub struct Corked<I> {
    state: Arc<Mutex<State<I>>>,
}

/// The handle the serving task keeps, to send what was gathered once the connection's poll returns.
pub struct Cork<I> {
    state: Arc<Mutex<State<I>>>,
    /// The held socket's switch, for a TLS stream (`cork_tls`): on while the connection is polled.
    hold: Option<Arc<HoldSwitch>>,
}

/// Wraps `io`; give the `Corked` half to hyper and call `Cork::flush_after` around the connection's polls.
pub fn cork<I>(io: I) -> (Corked<I>, Cork<I>) {
    corked(io, None)
}

/// Like `cork`, for a TLS stream whose socket is the `Held` that `switch` controls.
pub fn cork_tls<I>(tls: I, switch: Arc<HoldSwitch>) -> (Corked<I>, Cork<I>) {
    corked(tls, Some(switch))
}

fn corked<I>(io: I, hold: Option<Arc<HoldSwitch>>) -> (Corked<I>, Cork<I>) {
    let state = Arc::new(Mutex::new(State {
        io,
        hold: hold.clone(),
        gathered: BytesMut::new(),
        flush_wanted: false,
        error: None,
    }));
    (
        Corked {
            state: Arc::clone(&state),
        },
        Cork { state, hold },
    )
}

fn lock<I>(state: &Mutex<State<I>>) -> MutexGuard<'_, State<I>> {
    // Both halves live in one task; a poisoned lock means a panic mid-write, after which bytes are only dropped.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl<I: AsyncWrite + Unpin> Cork<I> {
    /// Polls `connection`, then sends what its poll gathered. The result is the connection's.
    pub fn flush_after<F: std::future::Future + Unpin>(
        &self,
        connection: &mut F,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        let polled = match &self.hold {
            Some(switch) => {
                let _held = switch.on_for_now();
                Pin::new(connection).poll(cx)
            }
            None => Pin::new(connection).poll(cx),
        };
        let mut state = lock(&self.state);
        if let Poll::Ready(Err(e)) = state.poll_drain(cx) {
            // The connection learns of it at its next write, as it would have from the socket.
            state.error.get_or_insert(e);
        }
        polled
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Corked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.state).io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Corked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut state = lock(&self.state);
        if let Some(e) = state.error.take() {
            return Poll::Ready(Err(e));
        }
        if state.hold.is_some() {
            // TLS over a held socket: rustls takes the bytes (one copy, into its records) and holds them. It
            // refuses more once its buffer is full; then what it holds is sent now and the write tried again.
            let written = Pin::new(&mut state.io).poll_write_vectored(cx, bufs);
            if written.is_ready() {
                return written;
            }
            std::task::ready!(state.poll_drain(cx))?;
            return Pin::new(&mut state.io).poll_write_vectored(cx, bufs);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if state.gathered.len() + len <= CORK_BYTES {
            for buf in bufs {
                state.gathered.extend_from_slice(buf);
            }
            return Poll::Ready(Ok(len));
        }
        // No room: what is gathered goes first; then a large write passes through, a small one is gathered.
        std::task::ready!(state.poll_drain(cx))?;
        if len >= CORK_BYTES {
            Pin::new(&mut state.io).poll_write_vectored(cx, bufs)
        } else {
            for buf in bufs {
                state.gathered.extend_from_slice(buf);
            }
            Poll::Ready(Ok(len))
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Deferred to the end of the task's poll (`Cork::flush_after`).
        lock(&self.state).flush_wanted = true;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.state);
        state.flush_wanted = true;
        std::task::ready!(state.poll_drain(cx))?;
        // A TLS shutdown sends close_notify through the socket: it must not be held.
        let hold = state.hold.clone();
        let _sending = hold.as_deref().map(HoldSwitch::off_for_now);
        Pin::new(&mut state.io).poll_shutdown(cx)
    }
}

/// Turns a `Held` socket's holding on and off.
#[derive(Debug, Default)]
pub struct HoldSwitch {
    on: AtomicBool,
}

impl HoldSwitch {
    fn set(&self, on: bool) -> bool {
        self.on.swap(on, Ordering::Relaxed)
    }

    /// Holds sends until the guard drops (then the previous state returns).
    fn on_for_now(&self) -> SwitchGuard<'_> {
        SwitchGuard {
            previous: self.set(true),
            switch: self,
        }
    }

    /// Lets sends through until the guard drops.
    fn off_for_now(&self) -> SwitchGuard<'_> {
        SwitchGuard {
            previous: self.set(false),
            switch: self,
        }
    }
}

struct SwitchGuard<'a> {
    switch: &'a HoldSwitch,
    previous: bool,
}

impl Drop for SwitchGuard<'_> {
    fn drop(&mut self) {
        self.switch.set(self.previous);
    }
}

/// A socket under TLS that refuses writes (as if full) while its switch is on, so that rustls keeps its
/// records until the connection's poll ends. Reads, flushes and shutdowns always go through. Only the task that
/// polls the connection touches the socket, and it drains after every poll, so a refused write never waits
/// for a wake-up that does not come.
pub struct Held<I> {
    io: I,
    switch: Arc<HoldSwitch>,
}

impl<I> Held<I> {
    /// The socket, held only while a `Cork` made by `cork_tls` with the returned switch polls the connection.
    pub fn new(io: I) -> (Self, Arc<HoldSwitch>) {
        let switch = Arc::new(HoldSwitch::default());
        (
            Held {
                io,
                switch: Arc::clone(&switch),
            },
            switch,
        )
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Held<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Held<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.switch.on.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.switch.on.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::AsyncWriteExt;

    /// A writer that records each write call.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        blocked: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.blocked {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_once<F: Future + Unpin>(cork: &Cork<Recorder>, f: &mut F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        cork.flush_after(f, &mut cx)
    }

    #[test]
    fn small_writes_in_one_poll_leave_in_one_write() {
        let (mut corked, cork) = cork(Recorder::default());
        let mut task = Box::pin(async {
            for response in [&b"first"[..], b"second", b"third"] {
                corked.write_all(response).await.unwrap();
                corked.flush().await.unwrap();
            }
        });
        assert!(poll_once(&cork, &mut task).is_ready());
        let state = lock(&cork.state);
        assert_eq!(state.io.writes, [b"firstsecondthird".to_vec()]);
        assert_eq!(state.io.flushes, 1);
    }

    #[test]
    fn large_writes_pass_through_after_what_was_gathered() {
        let (mut corked, cork) = cork(Recorder::default());
        let big = vec![7u8; CORK_BYTES + 1];
        let mut task = Box::pin(async {
            corked.write_all(b"head").await.unwrap();
            corked.write_all(&big).await.unwrap();
            corked.write_all(b"tail").await.unwrap();
        });
        assert!(poll_once(&cork, &mut task).is_ready());
        let state = lock(&cork.state);
        assert_eq!(state.io.writes.len(), 3);
        assert_eq!(state.io.writes[0], b"head");
        assert_eq!(state.io.writes[1].len(), CORK_BYTES + 1);
        assert_eq!(state.io.writes[2], b"tail");
    }

    #[test]
    fn a_full_socket_holds_writes_back_until_it_drains() {
        let (mut corked, cork) = cork(Recorder {
            blocked: true,
            ..Recorder::default()
        });
        let chunk = vec![1u8; CORK_BYTES / 2 + 1];
        let mut task = Box::pin(async {
            corked.write_all(&chunk).await.unwrap();
            corked.write_all(&chunk).await.unwrap(); // no room: waits for the drain
            corked.shutdown().await.unwrap();
        });
        assert!(poll_once(&cork, &mut task).is_pending());
        assert!(lock(&cork.state).io.writes.is_empty());
        lock(&cork.state).io.blocked = false;
        assert!(poll_once(&cork, &mut task).is_ready());
        let state = lock(&cork.state);
        let written: usize = state.io.writes.iter().map(Vec::len).sum();
        assert_eq!(written, 2 * chunk.len(), "nothing lost, nothing doubled");
    }

    /// Real TLS over loopback, with a certificate made for the test.
    mod over_tls {
        use super::*;
        use tokio::io::AsyncWriteExt;

        /// A loopback TCP socket that counts the write calls that reach it.
        struct CountedSocket {
            tcp: tokio::net::TcpStream,
            writes: Arc<std::sync::atomic::AtomicUsize>,
        }

        impl AsyncRead for CountedSocket {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.tcp).poll_read(cx, buf)
            }
        }

        impl AsyncWrite for CountedSocket {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.writes.fetch_add(1, Ordering::Relaxed);
                Pin::new(&mut self.tcp).poll_write(cx, data)
            }
            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.writes.fetch_add(1, Ordering::Relaxed);
                Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                true
            }
            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.tcp).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.tcp).poll_shutdown(cx)
            }
        }

        type HeldTls = tokio_rustls::server::TlsStream<Held<CountedSocket>>;

        /// A real TLS connection over loopback: the server side corked with `cork_tls` over a counted socket,
        /// and a rustls client reading everything until close_notify.
        async fn tls_pair() -> (
            Corked<HeldTls>,
            Cork<HeldTls>,
            Arc<std::sync::atomic::AtomicUsize>,
            tokio::task::JoinHandle<Vec<u8>>,
        ) {
            use tokio::io::AsyncReadExt;
            crate::tls::install_crypto_provider();
            let certs = crate::tls::generate_self_signed(&["localhost"], 1).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, &certs.chain_pem).unwrap();
            std::fs::write(&key, &certs.key_pem).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(&cert, &key, &[b"http/1.1"]).unwrap(),
            );
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject;
            roots
                .add(
                    rustls_pki_types::CertificateDer::from_pem_slice(certs.ca_pem.as_bytes())
                        .unwrap(),
                )
                .unwrap();
            let client_config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));

            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let mut tls = connector.connect(name, tcp).await.unwrap();
                let mut received = Vec::new();
                tls.read_to_end(&mut received).await.unwrap(); // an error without close_notify
                received
            });
            let (tcp, _) = listener.accept().await.unwrap();
            let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let socket = CountedSocket {
                tcp,
                writes: Arc::clone(&writes),
            };
            let (held, switch) = Held::new(socket);
            let tls = acceptor.accept(held).await.unwrap();
            let (corked, cork) = cork_tls(tls, switch);
            writes.store(0, Ordering::Relaxed); // count from the end of the handshake
            (corked, cork, writes, client)
        }

        #[tokio::test]
        async fn tls_writes_of_one_poll_leave_in_one_socket_write_without_a_copy() {
            let (mut corked, cork, writes, client) = tls_pair().await;
            let mut responses = Box::pin(async move {
                for response in [&b"first"[..], b"second", b"third"] {
                    corked.write_all(response).await.unwrap();
                    corked.flush().await.unwrap();
                }
                corked
            });
            let mut corked = std::future::poll_fn(|cx| cork.flush_after(&mut responses, cx)).await;
            assert_eq!(
                writes.load(Ordering::Relaxed),
                1,
                "three responses, one send"
            );
            assert!(
                lock(&cork.state).gathered.is_empty(),
                "nothing copied aside"
            );
            corked.shutdown().await.unwrap();
            drop(corked);
            assert_eq!(client.await.unwrap(), b"firstsecondthird");
        }

        #[tokio::test]
        async fn a_tls_body_larger_than_what_rustls_holds_arrives_whole() {
            let (mut corked, cork, writes, client) = tls_pair().await;
            let body: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
            let expected = body.clone();
            let mut sending = Box::pin(async move {
                for piece in body.chunks(16 * 1024 + 9) {
                    corked.write_all(piece).await.unwrap();
                }
                corked.flush().await.unwrap();
                corked.shutdown().await.unwrap();
            });
            std::future::poll_fn(|cx| cork.flush_after(&mut sending, cx)).await;
            let sends = writes.load(Ordering::Relaxed);
            assert!(
                sends > 1 && sends < 4 * 1024,
                "rustls's held records leave in batches: {sends} sends"
            );
            assert_eq!(
                client.await.unwrap(),
                expected,
                "every byte, in order, then close_notify"
            );
        }
    }

    #[tokio::test]
    async fn a_held_socket_refuses_writes_only_while_its_switch_is_on() {
        use tokio::io::AsyncWriteExt;
        let (mut held, switch) = Held::new(Recorder::default());
        {
            let _on = switch.on_for_now();
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(Pin::new(&mut held).poll_write(&mut cx, b"x").is_pending());
            assert!(Pin::new(&mut held).poll_flush(&mut cx).is_ready());
            assert!(held.get_ref().writes.is_empty());
        }
        held.write_all(b"after").await.unwrap();
        assert_eq!(held.get_ref().writes, [b"after".to_vec()]);
    }
}
