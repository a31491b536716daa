//! LL-HLS blocking playlist reload at the I/O rim (RFC 8216bis §6.2.5.2). A playlist request with `_HLS_msn`
//! (and maybe `_HLS_part`) is held until the playlist holds that segment or part — at most three target
//! durations, then 503 — and is then answered through the ordinary cached path under its own key (`_HLS_msn`,
//! `_HLS_part` and `_HLS_skip` stay in it, so a delta playlist asked for with `_HLS_skip` is the upstream's own
//! answer to that request, and every player asking for the same part shares one stored answer).
//!
//! Held requests never go upstream one by one: each playlist (site and path) has one watcher, whose single
//! poller asks the upstream for the playlist while anyone waits on it, as often as `live::poll_delay` says,
//! and publishes what it read on a `watch` channel that every held request of that playlist reads. When a poll
//! brings a new part, that part is warmed through prefetch's ordinary coalesced fill (`Edge::warm`), so the
//! players it releases find it cached or filling; so is the part the new version hints (`EXT-X-PRELOAD-HINT`),
//! before it exists: an LL-HLS upstream (this project's origin among them) holds that request until the part is
//! written, so the part streams to the edge as soon as it is, and a player's request for it joins that fill or
//! finds it stored. An upstream that answers 404 instead costs that one request; the 404 is not stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::request::Parts;
use http::{Method, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use super::prefetch::Purpose;
use super::{Answer, Canonical, Edge};
use crate::error::EdgeError;
use crate::live::{self, Playlist, Ready};
use crate::status::CacheStatus;

/// Playlists watched at once, at most; a request for another is answered 503 while the map is full of
/// playlists someone waits on.
const MAX_WATCHED: usize = 4096;
/// The largest playlist a poll reads.
const MAX_PLAYLIST_BYTES: usize = 2 << 20;
/// Polls one poller runs at most before it stops (a new waiter starts another): bounds a task whose waiters
/// never leave.
const MAX_POLLS: u32 = 100_000;

/// One watched playlist: the newest version read, and whether its poller runs.
struct Watcher {
    latest: watch::Sender<Option<Arc<Playlist>>>,
    polling: AtomicBool,
    /// The site and path of the part its newest version hints (`EXT-X-PRELOAD-HINT`), as `hints` keys it.
    hint: Mutex<Option<String>>,
    /// When a poll last read the playlist (changed or not): a request is refused as too far ahead only on a
    /// version read after it arrived, never on what a poller that stopped long ago saw.
    read_at: Mutex<Option<Instant>>,
}

/// The watched playlists, by site and path.
#[derive(Default)]
pub struct LiveWatchers {
    watchers: Mutex<HashMap<String, Arc<Watcher>>>,
    /// Hinted parts (site and path) → the watcher of the playlist that hints them: one per watcher at most.
    hints: Mutex<HashMap<String, Arc<Watcher>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveWatchers {
    fn watcher(&self, name: &str) -> Option<Arc<Watcher>> {
        let mut map = lock(&self.watchers);
        if let Some(w) = map.get(name) {
            return Some(Arc::clone(w));
        }
        if map.len() >= MAX_WATCHED {
            map.retain(|_, w| w.latest.receiver_count() > 0 || w.polling.load(Ordering::Acquire));
            if map.len() >= MAX_WATCHED {
                return None;
            }
        }
        let (latest, _) = watch::channel(None);
        let watcher = Arc::new(Watcher {
            latest,
            polling: AtomicBool::new(false),
            hint: Mutex::new(None),
            read_at: Mutex::new(None),
        });
        map.insert(name.to_string(), Arc::clone(&watcher));
        Some(watcher)
    }

    /// Records the part a watcher's newest playlist hints (`None`: it hints none).
    fn set_hint(&self, watcher: &Arc<Watcher>, hinted: Option<String>) {
        let mut hints = lock(&self.hints);
        let mut own = lock(&watcher.hint);
        if *own == hinted {
            return;
        }
        if let Some(old) = own.take() {
            hints.remove(&old);
        }
        if let Some(new) = &hinted {
            hints.insert(new.clone(), Arc::clone(watcher));
        }
        *own = hinted;
    }

    /// The watcher whose playlist hints this part (site and path), while its poller runs, with the part's name
    /// as `hints` keys it. Named only when some playlist hints a part: other requests cost no allocation here.
    fn hinting(&self, site: &str, path: &str) -> Option<(String, Arc<Watcher>)> {
        let hints = lock(&self.hints);
        if hints.is_empty() {
            return None;
        }
        let name = format!("{site}\n{path}");
        let watcher = hints
            .get(&name)
            .filter(|w| w.polling.load(Ordering::Acquire))
            .cloned()?;
        Some((name, watcher))
    }
}

impl Edge {
    /// Holds a blocking playlist request until the playlist is new enough for it. `None`: go on and answer it
    /// through the cache; `Some`: the answer (400 for a request too far ahead or malformed, 503 when the hold
    /// ran out).
    pub(super) async fn hold_for_playlist(
        self: &Arc<Self>,
        parts: &Parts,
        request: &Canonical<'_>,
    ) -> Option<Answer> {
        if !(parts.method == Method::GET || parts.method == Method::HEAD)
            || !request.path.ends_with(".m3u8")
        {
            return None;
        }
        let asked = match live::directives(request.query.as_deref()) {
            Ok(asked) if asked.blocks() => asked,
            Ok(_) => return None,
            Err(fault) => {
                let error = EdgeError::client(StatusCode::BAD_REQUEST, fault);
                return Some(self.error_answer(parts, error, CacheStatus::Local));
            }
        };
        let name = format!("{}\n{}", request.site.name, request.path);
        let Some(watcher) = self.live.watcher(&name) else {
            let error = EdgeError::Overloaded {
                reason: "too many live playlists are watched at once".into(),
            };
            return Some(self.error_answer(parts, error, CacheStatus::Local));
        };
        let mut latest = watcher.latest.subscribe();
        let started = Instant::now();
        let mut deadline = None;
        loop {
            let playlist = latest.borrow_and_update().clone();
            if let Some(playlist) = &playlist {
                match live::ready(playlist, &asked) {
                    Ready::Now => {
                        self.metrics
                            .live_blocked
                            .with_label_values(&["ready"])
                            .inc();
                        self.metrics
                            .live_block_seconds
                            .observe(started.elapsed().as_secs_f64());
                        return None;
                    }
                    Ready::TooFar if lock(&watcher.read_at).is_none_or(|at| at < started) => {}
                    Ready::TooFar => {
                        self.metrics
                            .live_blocked
                            .with_label_values(&["too_far"])
                            .inc();
                        let error = EdgeError::client(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "_HLS_msn/_HLS_part ask for more than the playlist can reach soon (its next segment is {}, part {})",
                                playlist.next_msn, playlist.next_parts
                            ),
                        );
                        return Some(self.error_answer(parts, error, CacheStatus::Local));
                    }
                    Ready::Wait => {}
                }
                deadline.get_or_insert(started + live::hold_limit(playlist.target_duration));
            }
            self.ensure_polling(&watcher, parts, request);
            // Until a playlist was read, the hold is bounded by the longest a target duration could make it.
            let until = deadline.unwrap_or(started + live::hold_limit(20.0));
            match tokio::time::timeout_at(until, latest.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    self.metrics
                        .live_blocked
                        .with_label_values(&["timeout"])
                        .inc();
                    let error = EdgeError::Overloaded {
                        reason: format!(
                            "the playlist did not reach _HLS_msn={}{} in time",
                            asked.msn.unwrap_or_default(),
                            asked
                                .part
                                .map_or(String::new(), |p| format!(" _HLS_part={p}"))
                        ),
                    };
                    return Some(self.error_answer(parts, error, CacheStatus::Local));
                }
            }
        }
    }

    /// Holds a request for the part a watched playlist hints (`EXT-X-PRELOAD-HINT`, §6.2.6: the server holds
    /// it until the part exists) until a newer version of the playlist hints another — that is, lists this
    /// one — at most three target durations; then it goes on through the cache either way (a part that never
    /// came is the upstream's 404).
    pub(super) async fn hold_for_hinted_part(&self, parts: &Parts, request: &Canonical<'_>) {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return;
        }
        let Some((name, watcher)) = self.live.hinting(&request.site.name, &request.path) else {
            return;
        };
        let mut latest = watcher.latest.subscribe();
        let started = Instant::now();
        let limit = latest.borrow().as_ref().map_or(live::hold_limit(2.0), |p| {
            live::hold_limit(p.target_duration)
        });
        loop {
            if lock(&watcher.hint).as_deref() != Some(name.as_str()) {
                self.metrics
                    .live_hint_holds
                    .with_label_values(&["listed"])
                    .inc();
                return;
            }
            match tokio::time::timeout_at(started + limit, latest.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    self.metrics
                        .live_hint_holds
                        .with_label_values(&["timeout"])
                        .inc();
                    return;
                }
            }
        }
    }

    /// Starts the playlist's poller unless it runs.
    fn ensure_polling(
        self: &Arc<Self>,
        watcher: &Arc<Watcher>,
        parts: &Parts,
        request: &Canonical<'_>,
    ) {
        if watcher.polling.swap(true, Ordering::AcqRel) {
            return;
        }
        let edge = Arc::clone(self);
        let watcher = Arc::clone(watcher);
        let mut fields = self.fill_fields(parts, request, None);
        // The poller reads the playlist's text: asked for as it is, never compressed.
        fields.remove(http::header::ACCEPT_ENCODING);
        fields.remove(http::header::RANGE);
        let upstream = request.site.upstream.clone();
        let path = request.path.clone();
        let warm_parts = request.site.prefetch_segments > 0;
        let site = request.site.name.clone();
        let template = clone_head(parts);
        tokio::spawn(async move {
            loop {
                edge.poll_playlist(
                    &watcher,
                    &upstream,
                    (&site, &path),
                    &fields,
                    warm_parts.then_some(&template),
                )
                .await;
                edge.live.set_hint(&watcher, None);
                watcher.polling.store(false, Ordering::Release);
                // A waiter that came while the poller was stopping finds `polling` false and starts another,
                // or this one goes on for it.
                if watcher.latest.receiver_count() == 0
                    || watcher.polling.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    /// Polls one playlist while anyone waits on it: one upstream request at a time, each after
    /// `live::poll_delay`; publishes each new version and warms its newest part.
    async fn poll_playlist(
        self: &Arc<Self>,
        watcher: &Arc<Watcher>,
        upstream: &str,
        (site, path): (&str, &str),
        fields: &http::HeaderMap,
        warm_from: Option<&Parts>,
    ) {
        let mut changed_at = Instant::now();
        let mut failures = 0;
        for _ in 0..MAX_POLLS {
            if watcher.latest.receiver_count() == 0 {
                return;
            }
            self.metrics.live_polls.inc();
            let asked_at = Instant::now();
            let read = self.read_playlist(upstream, path, fields.clone()).await;
            let now = Instant::now();
            match read {
                Some(playlist) => {
                    failures = 0;
                    *lock(&watcher.read_at) = Some(asked_at);
                    let playlist = Arc::new(playlist);
                    let newest = playlist.newest_part.clone();
                    // The hint is recorded before the version is published: a request for the part that
                    // arrives meanwhile is held for the next one.
                    let hinted = playlist
                        .preload_hint
                        .as_deref()
                        .and_then(|uri| live::resolve(path, uri))
                        .map(|part| format!("{site}\n{part}"));
                    self.live.set_hint(watcher, hinted);
                    let changed = watcher.latest.send_if_modified(|held| {
                        if held.as_deref() == Some(&*playlist) {
                            return false;
                        }
                        *held = Some(Arc::clone(&playlist));
                        true
                    });
                    if changed {
                        changed_at = now;
                        if let Some(parts) = warm_from {
                            // The part just listed (if no request took it yet), and the one hinted next:
                            // asked for now, an LL-HLS upstream answers it the moment it is written.
                            let listed = newest.map(|uri| (uri, Purpose::Prefetch));
                            let hinted = playlist
                                .preload_hint
                                .clone()
                                .map(|uri| (uri, Purpose::Hint));
                            for (uri, purpose) in listed.into_iter().chain(hinted) {
                                if let Some(part_path) = live::resolve(path, &uri) {
                                    self.warm_live_part(parts, &part_path, purpose);
                                }
                            }
                        }
                    }
                }
                None => {
                    failures += 1;
                    self.metrics.live_poll_failures.inc();
                }
            }
            let current = watcher.latest.borrow().clone();
            let since_change = now.duration_since(changed_at);
            let delay = live::poll_delay(current.as_deref(), since_change, failures);
            tokio::time::sleep(delay).await;
        }
    }

    /// One upstream request for the playlist; what it holds, or `None` when it failed or is not a playlist.
    async fn read_playlist(
        &self,
        upstream: &str,
        path: &str,
        fields: http::HeaderMap,
    ) -> Option<Playlist> {
        let engine = self.engine();
        let (response, _) = engine
            .upstream()
            .request(&Method::GET, upstream, path, fields, bytes::Bytes::new())
            .await
            .ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = engine.upstream().next_chunk(&mut body).await.ok()? {
            text.extend_from_slice(&chunk);
            if text.len() > MAX_PLAYLIST_BYTES {
                return None;
            }
        }
        live::parse(std::str::from_utf8(&text).ok()?)
    }

    /// Warms a part the poll just saw listed or hinted, as a prefetch of it (skipped when cached or filling).
    fn warm_live_part(self: &Arc<Self>, template: &Parts, part_path: &str, purpose: Purpose) {
        let edge = Arc::clone(self);
        let target = shared::segments::Segment {
            path: part_path.to_string(),
            range: None,
            duration_secs: 0.0,
            discontinuity: false,
        };
        if let Some(next) = super::prefetch::prefetch_request(template, &target) {
            tokio::spawn(async move { edge.warm(next, None, purpose).await });
        }
    }
}

/// A copy of a request head (method, URI, version, headers, client address) to build warm requests from.
fn clone_head(parts: &Parts) -> Parts {
    let (mut head, ()) = http::Request::builder()
        .method(Method::GET)
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(())
        .expect("a request built from a valid head")
        .into_parts();
    head.headers = parts.headers.clone();
    if let Some(client) = parts.extensions.get::<super::ClientAddr>() {
        head.extensions.insert(*client);
    }
    head
}
