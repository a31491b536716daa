//! Coalesced, streaming fills. One fill runs per slice at a time; every request that needs that slice while it
//! runs subscribes and receives the chunks as they arrive from upstream, so a cold popular segment costs its
//! players about the upstream's time to first byte. A fill that fails ends every subscriber's stream with the
//! error (their responses are aborted) and nothing is inserted.
//!
//! The map of fills is touched only on misses; hits never take its lock. Memory per fill is bounded by the slice
//! size, and the number of fills by a semaphore (`cache.max_fills`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::meta::ObjectMeta;

/// Why a fill failed; every subscriber sees the same error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillError {
    /// The upstream could not be reached or timed out before the response head (502/504 for waiters).
    Upstream { timeout: bool, message: String },
    /// The upstream body ended early, stalled, or carried more than announced.
    Body(String),
    /// The object changed upstream since its metadata was stored: the stored version was dropped.
    ValidatorChanged,
    /// The fill failed inside the edge (a bug, caught so that its waiters get an answer).
    Internal(String),
    /// Every fill slot is taken and the queue for them is full: nothing was asked upstream.
    Overloaded,
}

impl std::fmt::Display for FillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillError::Upstream { message, .. } => write!(f, "upstream failed: {message}"),
            FillError::Body(message) => write!(f, "upstream body failed: {message}"),
            FillError::ValidatorChanged => {
                f.write_str("the object changed upstream during the fill")
            }
            FillError::Internal(message) => write!(f, "the fill failed inside the edge: {message}"),
            FillError::Overloaded => {
                f.write_str("every upstream fill slot is taken; try again shortly")
            }
        }
    }
}

impl std::error::Error for FillError {}

/// What a fill learned from the upstream's response head.
#[derive(Debug, Clone)]
pub enum FillHead {
    /// A storable slice of this object version; chunks follow.
    Slice(Arc<ObjectMeta>),
    /// A revalidation's 304: the stored version, refreshed; no chunks follow.
    Refreshed(Arc<ObjectMeta>),
    /// Not storable (status, `no-store`, …); `detail` says why. The upstream's answer, unread, waits in
    /// `response` for the request that started the fill; the others forward their own request.
    NotStorable {
        status: u16,
        detail: &'static str,
        /// The answer itself says it is never shared (`no-store`, `private`, `Vary: *`): the URL goes straight
        /// upstream for a while (hit-for-pass). A status — the client's 416, an upstream 5xx — never does that.
        remember: bool,
        response: Option<Handoff>,
    },
}

/// An upstream response handed, once, from a fill to the request that caused it.
#[derive(Clone)]
pub struct Handoff(Arc<Mutex<Option<http::Response<hyper::body::Incoming>>>>);

impl Handoff {
    pub fn new(response: http::Response<hyper::body::Incoming>) -> Self {
        Handoff(Arc::new(Mutex::new(Some(response))))
    }

    /// The response, to the first caller only.
    pub fn take(&self) -> Option<http::Response<hyper::body::Incoming>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handoff")
    }
}

#[derive(Default)]
struct FillState {
    head: Option<Result<FillHead, FillError>>,
    chunks: Vec<Bytes>,
    done: Option<Result<(), FillError>>,
}

/// One in-flight fill.
pub struct Fill {
    state: Mutex<FillState>,
    /// Bumped on every change, so subscribers wake.
    progress: watch::Sender<u64>,
}

impl Fill {
    fn new() -> Arc<Self> {
        Arc::new(Fill {
            state: Mutex::new(FillState::default()),
            progress: watch::Sender::new(0),
        })
    }

    fn update(&self, f: impl FnOnce(&mut FillState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.progress.send_modify(|n| *n += 1);
    }

    pub fn publish_head(&self, head: Result<FillHead, FillError>) {
        self.update(|s| {
            if s.head.is_none() {
                s.head = Some(head);
            }
        });
    }

    pub fn push(&self, chunk: Bytes) {
        self.update(|s| s.chunks.push(chunk));
    }

    pub fn finish(&self, result: Result<(), FillError>) {
        self.update(|s| {
            if s.head.is_none() {
                s.head = Some(result.clone().map(|_| FillHead::NotStorable {
                    status: 502,
                    detail: "no-response",
                    remember: false,
                    response: None,
                }));
            }
            s.done.get_or_insert(result);
        });
    }

    pub fn subscribe(self: &Arc<Self>) -> Subscriber {
        Subscriber {
            fill: Arc::clone(self),
            progress: self.progress.subscribe(),
            next: 0,
        }
    }
}

/// A reader of one fill, from its first chunk.
pub struct Subscriber {
    fill: Arc<Fill>,
    progress: watch::Receiver<u64>,
    next: usize,
}

impl Subscriber {
    /// Waits for the response head.
    pub async fn head(&mut self) -> Result<FillHead, FillError> {
        loop {
            if let Some(head) = self
                .fill
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .head
                .clone()
            {
                return head;
            }
            if self.progress.changed().await.is_err() {
                return Err(FillError::Body("the fill was abandoned".into()));
            }
        }
    }

    /// The next chunk; `None` once the fill has completed and every chunk was read.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, FillError>> {
        loop {
            {
                let state = self.fill.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(chunk) = state.chunks.get(self.next) {
                    self.next += 1;
                    return Some(Ok(chunk.clone()));
                }
                match &state.done {
                    Some(Ok(())) => return None,
                    Some(Err(e)) => return Some(Err(e.clone())),
                    None => {}
                }
            }
            if self.progress.changed().await.is_err() {
                return Some(Err(FillError::Body("the fill was abandoned".into())));
            }
        }
    }
}

/// The registry of in-flight fills.
pub struct Fills {
    map: Mutex<HashMap<String, Arc<Fill>>>,
}

impl Fills {
    pub fn new() -> Self {
        Fills {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Joins the fill running under `fill_key`, or registers a new one; `true` means the caller started it and
    /// must run it (and call [`Fills::remove`] when it ends).
    pub fn join_or_start(&self, fill_key: &str) -> (Arc<Fill>, bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fill) = map.get(fill_key) {
            return (Arc::clone(fill), false);
        }
        let fill = Fill::new();
        map.insert(fill_key.to_string(), Arc::clone(&fill));
        (fill, true)
    }

    /// Registers `fill` under a second key as well (a fill for a new object becomes findable under its version
    /// once the version is known).
    pub fn alias(&self, fill_key: &str, fill: &Arc<Fill>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fill_key.to_string(), Arc::clone(fill));
    }

    /// The running fill under `fill_key`, if any.
    pub fn get(&self, fill_key: &str) -> Option<Arc<Fill>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(fill_key)
            .cloned()
    }

    pub fn remove(&self, fill_key: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(fill_key);
    }
}

impl Default for Fills {
    fn default() -> Self {
        Self::new()
    }
}

/// Concatenates a fill's chunks into one slice value (one copy, at the end of the fill). A single chunk is
/// copied too: it is a view into the connection's read buffer, and kept in the cache it would pin that whole
/// buffer (kilobytes to hundreds of kilobytes) while the memory tier counts only the chunk's length.
pub fn concat(chunks: &[Bytes]) -> Bytes {
    let mut buf = bytes::BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        buf.extend_from_slice(chunk);
    }
    buf.freeze()
}

impl Fill {
    /// The chunks received so far (the fill task concatenates them when the slice is complete).
    pub fn chunks(&self) -> Vec<Bytes> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .chunks
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_every_chunk_in_order_including_late_ones() {
        let fills = Fills::new();
        let (fill, started) = fills.join_or_start("k");
        assert!(started);
        let (same, started_again) = fills.join_or_start("k");
        assert!(!started_again);
        assert!(Arc::ptr_eq(&fill, &same));
        let mut early = fill.subscribe();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(chunk) = early.next_chunk().await {
                got.push(chunk.unwrap());
            }
            got
        });
        fill.push(Bytes::from_static(b"ab"));
        fill.push(Bytes::from_static(b"cd"));
        let mut late = fill.subscribe();
        fill.finish(Ok(()));
        fills.remove("k");
        assert!(fills.get("k").is_none());
        assert_eq!(
            reader.await.unwrap(),
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]
        );
        assert_eq!(late.next_chunk().await, Some(Ok(Bytes::from_static(b"ab"))));
        assert_eq!(late.next_chunk().await, Some(Ok(Bytes::from_static(b"cd"))));
        assert_eq!(late.next_chunk().await, None);
    }

    #[tokio::test]
    async fn a_failed_fill_fails_every_subscriber_after_the_chunks_it_had() {
        let fills = Fills::new();
        let (fill, _) = fills.join_or_start("k");
        let mut sub = fill.subscribe();
        fill.push(Bytes::from_static(b"x"));
        fill.finish(Err(FillError::Body("origin died".into())));
        assert_eq!(sub.next_chunk().await, Some(Ok(Bytes::from_static(b"x"))));
        assert!(matches!(
            sub.next_chunk().await,
            Some(Err(FillError::Body(_)))
        ));
        // A fill that fails before its head gives the error as the head.
        let (early, _) = fills.join_or_start("j");
        let mut sub = early.subscribe();
        early.finish(Err(FillError::Upstream {
            timeout: true,
            message: "t".into(),
        }));
        assert!(matches!(
            sub.head().await,
            Err(FillError::Upstream { timeout: true, .. })
        ));
    }

    /// One step of a scripted interleaving: what the fill task does, in its order.
    #[derive(Debug, Clone, Copy)]
    enum FillStep {
        Head,
        Chunk(&'static [u8]),
        /// The slice is inserted into the cache.
        Store,
        /// The fill leaves the registry.
        Unregister,
        Finish,
    }

    /// Every interleaving of two requests with a fill's steps, run by a scripted executor (futures polled by hand
    /// in a chosen order): a request that joins before, during or after the fill — or after it left the registry,
    /// when it finds the slice stored — gets the whole body, or, when the fill fails, an error; never a short
    /// body passed off as complete. The engine keeps the order insert → unregister → wake that this relies on.
    #[test]
    fn coalescing_holds_in_every_interleaving() {
        use std::future::Future;
        use std::pin::Pin;
        use std::task::{Context, Poll};

        type Outcome = Result<Vec<u8>, FillError>;
        let succeeding = [
            FillStep::Head,
            FillStep::Chunk(b"ab"),
            FillStep::Chunk(b"cd"),
            FillStep::Store,
            FillStep::Unregister,
            FillStep::Finish,
        ];
        let failing = [
            FillStep::Head,
            FillStep::Chunk(b"ab"),
            FillStep::Unregister,
            FillStep::Finish,
        ];
        let mut schedules = 0;
        for (steps, ok) in [(&succeeding[..], true), (&failing[..], false)] {
            // Before each step and after the last, each request is polled or not, A before B or B before A.
            let gaps = steps.len() as u32 + 1;
            for schedule in 0..5usize.pow(gaps) {
                schedules += 1;
                let fills = Arc::new(Fills::new());
                let cache: Arc<Mutex<Option<Bytes>>> = Arc::default();
                let (fill, started) = fills.join_or_start("k");
                assert!(started);
                let request = |fills: Arc<Fills>, cache: Arc<Mutex<Option<Bytes>>>| async move {
                    let (fill, started) = fills.join_or_start("k");
                    if started {
                        // Too late to join: the engine reads the slice from the cache (or fills again).
                        fills.remove("k");
                        let stored = cache.lock().unwrap().clone();
                        return stored
                            .map(|b| b.to_vec())
                            .ok_or(FillError::Body("not stored".into()));
                    }
                    let mut subscriber = fill.subscribe();
                    subscriber.head().await?;
                    let mut body = Vec::new();
                    while let Some(chunk) = subscriber.next_chunk().await {
                        body.extend_from_slice(&chunk?);
                    }
                    Ok(body)
                };
                let mut requests: Vec<Pin<Box<dyn Future<Output = Outcome>>>> = vec![
                    Box::pin(request(Arc::clone(&fills), Arc::clone(&cache))),
                    Box::pin(request(Arc::clone(&fills), Arc::clone(&cache))),
                ];
                let mut outcomes: [Option<Outcome>; 2] = [None, None];
                let waker = futures::task::noop_waker();
                let mut cx = Context::from_waker(&waker);
                let mut poll = |i: usize, outcomes: &mut [Option<Outcome>; 2]| {
                    if outcomes[i].is_none()
                        && let Poll::Ready(outcome) = requests[i].as_mut().poll(&mut cx)
                    {
                        outcomes[i] = Some(outcome);
                    }
                };
                let mut choice = schedule;
                for gap in 0..gaps as usize {
                    match choice % 5 {
                        0 => {}
                        1 => poll(0, &mut outcomes),
                        2 => poll(1, &mut outcomes),
                        3 => {
                            poll(0, &mut outcomes);
                            poll(1, &mut outcomes);
                        }
                        _ => {
                            poll(1, &mut outcomes);
                            poll(0, &mut outcomes);
                        }
                    }
                    choice /= 5;
                    match steps.get(gap) {
                        Some(FillStep::Head) => {
                            let meta = Arc::new(ObjectMeta::new(1, 200, 4, 4));
                            fill.publish_head(Ok(FillHead::Slice(meta)));
                        }
                        Some(FillStep::Chunk(bytes)) => fill.push(Bytes::from_static(bytes)),
                        Some(FillStep::Store) => {
                            *cache.lock().unwrap() = Some(concat(&fill.chunks()))
                        }
                        Some(FillStep::Unregister) => fills.remove("k"),
                        Some(FillStep::Finish) if ok => fill.finish(Ok(())),
                        Some(FillStep::Finish) => fill.finish(Err(FillError::Body("cut".into()))),
                        None => {}
                    }
                }
                // Everything has happened: each request ends at its next poll.
                for i in 0..2 {
                    poll(i, &mut outcomes);
                }
                for (i, outcome) in outcomes.into_iter().enumerate() {
                    match outcome {
                        Some(Ok(body)) => {
                            assert_eq!(body, b"abcd", "request {i}, schedule {schedule}")
                        }
                        Some(Err(_)) => assert!(
                            !ok,
                            "request {i} failed in schedule {schedule} of a good fill"
                        ),
                        None => panic!("request {i} never ended in schedule {schedule}"),
                    }
                }
            }
        }
        assert_eq!(schedules, 5usize.pow(7) + 5usize.pow(5));
    }

    #[test]
    fn concat_joins_chunks() {
        assert_eq!(
            concat(&[Bytes::from_static(b"ab"), Bytes::from_static(b"c")]),
            Bytes::from_static(b"abc")
        );
        assert_eq!(concat(&[]), Bytes::new());
        // One chunk cut from a larger buffer: the value is a copy of its bytes, not a view pinning the buffer.
        let buffer = Bytes::from(vec![7u8; 64 * 1024]);
        let chunk = buffer.slice(100..1124);
        let value = concat(std::slice::from_ref(&chunk));
        assert_eq!(value, chunk);
        assert_ne!(value.as_ptr(), chunk.as_ptr());
    }
}
