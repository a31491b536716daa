//! Write coalescing for a served connection: small writes and flushes made while the connection's task is being
//! polled are gathered, and go out in one write when that poll ends (`Cork::flush_after`).
//!
//! Why: hyper's HTTP/2 server (through the `h2` crate) writes and flushes once per accepted stream, so a batch of
//! requests that arrived in one read, answered at once from cache, left as one TLS record and one `writev` per
//! response; the system calls were a third of the edge's CPU on small hits. Corked, the batch leaves together.
//! Writes of `CORK_BYTES` or more (large DATA frames, HTTP/1.1 bodies) pass straight through once the gathered
//! bytes ahead of them are out, so big bodies are never copied.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes smaller than this are gathered; the gathered bytes never exceed it.
pub const CORK_BYTES: usize = 32 * 1024;

struct State<I> {
    io: I,
    gathered: BytesMut,
    /// A flush was asked for and has not reached `io` yet.
    flush_wanted: bool,
    /// A write error met while sending gathered bytes outside a write call, returned by the next call.
    error: Option<io::Error>,
}

impl<I: AsyncWrite + Unpin> State<I> {
    /// Writes out everything gathered; Ready(Ok) once it is all out (and flushed, if a flush was asked for).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
}

/// Wraps `io`; give the `Corked` half to hyper and call `Cork::flush_after` around the connection's polls.
pub fn cork<I>(io: I) -> (Corked<I>, Cork<I>) {
    let state = Arc::new(Mutex::new(State {
        io,
        gathered: BytesMut::new(),
        flush_wanted: false,
        error: None,
    }));
    (
        Corked {
            state: Arc::clone(&state),
        },
        Cork { state },
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
        let polled = Pin::new(connection).poll(cx);
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
        Pin::new(&mut state.io).poll_shutdown(cx)
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
}
