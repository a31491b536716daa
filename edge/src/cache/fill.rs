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
}

impl std::fmt::Display for FillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillError::Upstream { message, .. } => write!(f, "upstream failed: {message}"),
            FillError::Body(message) => write!(f, "upstream body failed: {message}"),
            FillError::ValidatorChanged => {
                f.write_str("the object changed upstream during the fill")
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

    pub fn in_flight(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Default for Fills {
    fn default() -> Self {
        Self::new()
    }
}

/// Concatenates a fill's chunks into one slice value (one copy, at the end of the fill).
pub fn concat(chunks: &[Bytes]) -> Bytes {
    if chunks.len() == 1 {
        return chunks[0].clone();
    }
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
        assert_eq!(fills.in_flight(), 0);
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

    #[test]
    fn concat_joins_chunks() {
        assert_eq!(
            concat(&[Bytes::from_static(b"ab"), Bytes::from_static(b"c")]),
            Bytes::from_static(b"abc")
        );
        assert_eq!(concat(&[]), Bytes::new());
    }
}
