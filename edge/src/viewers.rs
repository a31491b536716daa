//! What the edge knows about its viewers, for eviction by value (`cache::storage`'s value eviction): which title
//! and track each media segment belongs to (from the renditions prefetch learns and from the master playlists and
//! MPDs that name them), each session's place in its title, and what that makes a cached segment worth — the rate
//! at which it will be asked for next, estimated by [`shared::viewing::Knowledge`], the model the cache simulator
//! replays (`cachesim`'s video-value policy). Pure: time comes in as milliseconds since the edge started.
//!
//! A title is the master playlist or MPD that names a rendition; a rendition no master has named yet is a title
//! of its own, as one video track. A session is a player's CMCD session id (`sid`), else its address, within one
//! title. Names get dense numbers for the model's tables; both maps are bounded, and a number is given to a new
//! name only after the model has forgotten its old holder (an ended session; a title nobody watches, least
//! popular first). A tag carries its title's generation, so a number given to another title rates nothing.

use std::collections::{HashMap, VecDeque};

use shared::segments::{Kind, Listed};
use shared::viewing::{Knowledge, Object, RequestInfo, Track};

/// Sessions followed at once; a new one past this waits for an ended one to be forgotten.
pub const MAX_SESSIONS: usize = 65_536;
/// Titles known at once.
pub const MAX_TITLES: usize = 16_384;
/// Renditions whose title and track are known (from their master playlists and MPDs).
pub const MAX_TRACKS: usize = 65_536;
/// The maps are swept for ended sessions and forgotten titles at most this often.
const SWEEP_EVERY_MS: u64 = 1_000;
/// The model's learned tables are re-read at least this often (besides every few thousand requests): an edge
/// with few viewers still learns.
const REFRESH_EVERY_MS: u64 = 1_000;

/// A cached object's place in what the viewers watch: its title (and that number's generation) and which object
/// of the title it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tag {
    title: u32,
    generation: u32,
    object: Object,
}

#[cfg(test)]
impl Tag {
    /// A tag standing for slice `slice` of segment `segment` of title 0.
    pub fn for_test(segment: u32, slice: u64) -> Tag {
        Tag {
            title: 0,
            generation: slice as u32,
            object: Object::Segment(Track::Audio, segment),
        }
    }

    pub fn test_segment(&self) -> u32 {
        match self.object {
            Object::Segment(_, n) => n,
            _ => u32::MAX,
        }
    }
}

/// Names given dense numbers, each number's holder counted by a generation.
#[derive(Debug, Default)]
struct Numbers {
    by_name: HashMap<String, u32>,
    names: Vec<Option<String>>,
    generations: Vec<u32>,
    free: Vec<u32>,
}

impl Numbers {
    fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    fn len(&self) -> usize {
        self.by_name.len()
    }

    fn add(&mut self, name: &str) -> u32 {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.names.push(None);
                self.generations.push(0);
                (self.names.len() - 1) as u32
            }
        };
        self.names[id as usize] = Some(name.to_string());
        self.by_name.insert(name.to_string(), id);
        id
    }

    fn remove(&mut self, id: u32) {
        if let Some(name) = self.names.get_mut(id as usize).and_then(Option::take) {
            self.by_name.remove(&name);
            self.generations[id as usize] = self.generations[id as usize].wrapping_add(1);
            self.free.push(id);
        }
    }

    fn generation(&self, id: u32) -> u32 {
        self.generations.get(id as usize).copied().unwrap_or(0)
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_name.values().copied()
    }
}

/// The edge's viewers and the model learned from them.
#[derive(Debug)]
pub struct Viewers {
    knowledge: Knowledge,
    titles: Numbers,
    sessions: Numbers,
    /// `site\nrendition id` → its title's name and its track.
    tracks: HashMap<String, (String, Track)>,
    /// The keys of `tracks`, oldest first.
    tracks_order: VecDeque<String>,
    last_sweep_ms: Option<u64>,
    last_refresh_ms: u64,
    /// Requests not followed because the maps were full of live sessions or titles.
    pub untracked: u64,
}

impl Default for Viewers {
    fn default() -> Self {
        Viewers {
            knowledge: Knowledge::new(0),
            titles: Numbers::default(),
            sessions: Numbers::default(),
            tracks: HashMap::new(),
            tracks_order: VecDeque::new(),
            last_sweep_ms: None,
            last_refresh_ms: 0,
            untracked: 0,
        }
    }
}

fn scoped(site: &str, name: &str) -> String {
    format!("{site}\n{name}")
}

impl Viewers {
    /// Learns the renditions a master playlist or an MPD at `manifest_path` names (`listed`, as
    /// `prefetch::Index::learn_manifest` returns them): the manifest is their title; video is ranked by
    /// bandwidth (0 the lowest) within each DASH period, audio is audio.
    pub fn learn_manifest(&mut self, site: &str, manifest_path: &str, listed: &[Listed]) {
        // A DASH representation's id is `<mpd>#<period>/<representation>`; an HLS playlist has no period.
        fn period(l: &Listed) -> &str {
            match l.path.split_once('#') {
                Some(_) => l.path.rsplit_once('/').map_or("", |(period, _)| period),
                None => "",
            }
        }
        let mut periods: Vec<&str> = listed.iter().map(period).collect();
        periods.sort_unstable();
        periods.dedup();
        let title = scoped(site, manifest_path);
        for p in periods {
            let in_period: Vec<Listed> =
                listed.iter().filter(|l| period(l) == p).cloned().collect();
            self.learn_listed(site, &title, &in_period);
        }
    }

    /// Learns from a manifest's text: the renditions a master playlist or an MPD names (a media playlist names
    /// none).
    pub fn learn_manifest_text(&mut self, site: &str, path: &str, body: &[u8]) {
        let listed = if path.ends_with(".mpd") {
            shared::segments::dash(path, body)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| {
                    Some(Listed {
                        kind: r.kind?,
                        path: r.id,
                    })
                })
                .collect()
        } else {
            shared::segments::hls_master(path, body).unwrap_or_default()
        };
        if !listed.is_empty() {
            self.learn_manifest(site, path, &listed);
        }
    }

    /// Video ranked by bandwidth (0 the lowest), audio as audio, all of `title`.
    fn learn_listed(&mut self, site: &str, title: &str, listed: &[Listed]) {
        let mut video: Vec<(u64, &str)> = listed
            .iter()
            .filter_map(|l| match l.kind {
                Kind::Video { bandwidth } => Some((bandwidth, l.path.as_str())),
                _ => None,
            })
            .collect();
        video.sort_unstable();
        // A playlist listed twice (at two bandwidths, say) keeps its first rank.
        let mut seen = std::collections::HashSet::new();
        video.retain(|(_, path)| seen.insert(*path));
        for (rank, (_, path)) in video.iter().enumerate() {
            let rank = u8::try_from(rank).unwrap_or(u8::MAX);
            self.learn_track(scoped(site, path), title, Track::Video(rank));
        }
        for l in listed.iter().filter(|l| l.kind == Kind::Audio) {
            self.learn_track(scoped(site, &l.path), title, Track::Audio);
        }
    }

    fn learn_track(&mut self, rendition: String, title: &str, track: Track) {
        if self.tracks.len() >= MAX_TRACKS
            && !self.tracks.contains_key(&rendition)
            && let Some(oldest) = self.tracks_order.pop_front()
        {
            self.tracks.remove(&oldest);
        }
        if self
            .tracks
            .insert(rendition.clone(), (title.to_string(), track))
            .is_none()
        {
            self.tracks_order.push_back(rendition);
        }
    }

    /// The title (its name) and track of a rendition: as its master playlist or MPD said, else a title of its
    /// own and the one video track.
    fn track_of(&self, site: &str, rendition: &str) -> (String, Track) {
        let key = scoped(site, rendition);
        match self.tracks.get(&key) {
            Some((title, track)) => (title.clone(), *track),
            None => (key, Track::Video(0)),
        }
    }

    /// The number of a title, given one if it has none (`None` when every number is held by a watched title).
    fn title_id(&mut self, title: &str, now_ms: u64) -> Option<u32> {
        if let Some(id) = self.titles.get(title) {
            return Some(id);
        }
        if self.titles.len() >= MAX_TITLES {
            self.sweep(now_ms);
            if self.titles.len() >= MAX_TITLES {
                return None;
            }
        }
        Some(self.titles.add(title))
    }

    /// Forgets ended sessions, and (when the titles are full) the less popular half of the titles nobody
    /// watches; at most once per [`SWEEP_EVERY_MS`].
    fn sweep(&mut self, now_ms: u64) {
        if self
            .last_sweep_ms
            .is_some_and(|last| now_ms < last + SWEEP_EVERY_MS)
        {
            return;
        }
        self.last_sweep_ms = Some(now_ms);
        let ended: Vec<u32> = self
            .sessions
            .ids()
            .filter(|&id| !self.knowledge.is_active(id, now_ms))
            .collect();
        self.knowledge.forget_sessions(&ended);
        for id in ended {
            self.sessions.remove(id);
        }
        if self.titles.len() >= MAX_TITLES {
            let mut idle: Vec<(f64, u32)> = self
                .titles
                .ids()
                .filter(|&id| self.knowledge.active_sessions(id).next().is_none())
                .map(|id| (self.knowledge.start_rate(id), id))
                .collect();
            idle.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            for &(_, id) in idle.iter().take(idle.len().div_ceil(2)) {
                self.knowledge.forget_title(id);
                self.titles.remove(id);
            }
            // Their sessions, ended, are forgotten above; a title's live sessions keep it.
        }
    }

    /// The tag of segment `position` of a rendition (`rendition` as the prefetch index names it, in `site`).
    pub fn tag(&mut self, site: &str, rendition: &str, position: u32, now_ms: u64) -> Option<Tag> {
        let (title, track) = self.track_of(site, rendition);
        let id = self.title_id(&title, now_ms)?;
        Some(Tag {
            title: id,
            generation: self.titles.generation(id),
            object: Object::Segment(track, position),
        })
    }

    /// Learns from a request for segment `position` (of `segments`, lasting `seconds`) of a rendition, by the
    /// player `client` (its CMCD session id, else its address). Returns the segment's tag.
    pub fn observe(
        &mut self,
        now_ms: u64,
        client: &str,
        site: &str,
        rendition: &str,
        (position, segments, seconds): (u32, u32, f64),
    ) -> Option<Tag> {
        let tag = self.tag(site, rendition, position, now_ms)?;
        self.knowledge.set_segment_seconds(tag.title, seconds);
        let session_name = format!("{client}\n{}", tag.title);
        let session = match self.sessions.get(&session_name) {
            Some(id) => id,
            None => {
                if self.sessions.len() >= MAX_SESSIONS {
                    self.sweep(now_ms);
                }
                if self.sessions.len() >= MAX_SESSIONS {
                    self.untracked += 1;
                    return Some(tag);
                }
                self.sessions.add(&session_name)
            }
        };
        self.knowledge.observe(
            &RequestInfo {
                time_ms: now_ms,
                session,
                title: tag.title,
                object: tag.object,
                title_segments: segments,
            },
            0,
        );
        if now_ms >= self.last_refresh_ms + REFRESH_EVERY_MS {
            self.last_refresh_ms = now_ms;
            self.knowledge.refresh();
        }
        Some(tag)
    }

    /// The estimated rate (requests per second) at which the tagged object will be asked for; nothing once its
    /// title is forgotten.
    pub fn rate(&self, tag: Tag) -> f64 {
        if self.titles.generation(tag.title) != tag.generation {
            return 0.0;
        }
        self.knowledge.rate(tag.title, tag.object)
    }

    /// Sessions followed (active or not yet forgotten).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Titles known.
    pub fn titles(&self) -> usize {
        self.titles.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::viewing::ACTIVE_MS;

    fn listed(path: &str, kind: Kind) -> Listed {
        Listed {
            path: path.into(),
            kind,
        }
    }

    fn master(v: &mut Viewers) {
        v.learn_manifest(
            "s",
            "/t/master.m3u8",
            &[
                listed(
                    "/t/hi.m3u8",
                    Kind::Video {
                        bandwidth: 6_000_000,
                    },
                ),
                listed("/t/lo.m3u8", Kind::Video { bandwidth: 400_000 }),
                listed("/t/audio.m3u8", Kind::Audio),
                listed("/t/subs.m3u8", Kind::Other),
            ],
        );
    }

    #[test]
    fn renditions_take_their_title_and_rank_from_the_master() {
        let mut v = Viewers::default();
        master(&mut v);
        let title = "s\n/t/master.m3u8".to_string();
        assert_eq!(
            v.track_of("s", "/t/lo.m3u8"),
            (title.clone(), Track::Video(0))
        );
        assert_eq!(
            v.track_of("s", "/t/hi.m3u8"),
            (title.clone(), Track::Video(1))
        );
        assert_eq!(v.track_of("s", "/t/audio.m3u8"), (title, Track::Audio));
        // Not named by a master: a title of its own.
        assert_eq!(
            v.track_of("s", "/u/x.m3u8"),
            ("s\n/u/x.m3u8".to_string(), Track::Video(0))
        );
        // Another site's rendition at the same path is not this one.
        assert_eq!(v.track_of("other", "/t/hi.m3u8").1, Track::Video(0));
    }

    #[test]
    fn dash_representations_rank_within_their_period() {
        let mut v = Viewers::default();
        v.learn_manifest(
            "s",
            "/t/a.mpd",
            &[
                listed("/t/a.mpd#p0/v2", Kind::Video { bandwidth: 3_000 }),
                listed("/t/a.mpd#p0/v1", Kind::Video { bandwidth: 1_000 }),
                listed("/t/a.mpd#p0/a", Kind::Audio),
                listed("/t/a.mpd#p1/v9", Kind::Video { bandwidth: 9_000 }),
            ],
        );
        assert_eq!(v.track_of("s", "/t/a.mpd#p0/v1").1, Track::Video(0));
        assert_eq!(v.track_of("s", "/t/a.mpd#p0/v2").1, Track::Video(1));
        assert_eq!(v.track_of("s", "/t/a.mpd#p0/a").1, Track::Audio);
        assert_eq!(v.track_of("s", "/t/a.mpd#p1/v9").1, Track::Video(0));
        assert_eq!(v.track_of("s", "/t/a.mpd#p1/v9").0, "s\n/t/a.mpd");
    }

    /// The segments a session has passed are worth less than the ones just ahead of it, and a title nobody
    /// watches any more keeps only what new sessions may ask for.
    #[test]
    fn segments_ahead_of_a_session_outrank_the_ones_it_passed() {
        let mut v = Viewers::default();
        master(&mut v);
        // Eight viewers watched segments 0-29 of the low rendition earlier; now two are at segment 9.
        let mut t = 0;
        for client in 0..8 {
            for position in 0..30 {
                v.observe(
                    t,
                    &format!("early{client}"),
                    "s",
                    "/t/lo.m3u8",
                    (position, 100, 4.0),
                )
                .unwrap();
                t += 500;
            }
        }
        t += 60_000;
        for position in 0..10 {
            for client in ["a", "b"] {
                v.observe(t, client, "s", "/t/lo.m3u8", (position, 100, 4.0))
                    .unwrap();
            }
            t += 4_000;
        }
        v.knowledge.refresh();
        let mut rate = |rendition: &str, position| {
            let tag = v.clone_tag(rendition, position, t);
            v.rate(tag)
        };
        let passed = rate("/t/lo.m3u8", 3);
        let next = rate("/t/lo.m3u8", 10);
        let far = rate("/t/lo.m3u8", 60);
        assert!(next > passed, "next {next} passed {passed}");
        assert!(next > far, "next {next} far {far}");
        // Another rendition of the same title, at the same place: the sessions are not there.
        let hi = rate("/t/hi.m3u8", 10);
        assert!(hi < next, "hi {hi} next {next}");
    }

    #[test]
    fn ended_sessions_free_their_numbers_and_forgotten_titles_rate_nothing() {
        let mut v = Viewers::default();
        for i in 0..MAX_SESSIONS as u32 {
            v.observe(0, &format!("c{i}"), "s", "/t/lo.m3u8", (0, 10, 4.0))
                .unwrap();
        }
        assert_eq!(v.sessions(), MAX_SESSIONS);
        // Full of live sessions: a new one is not followed (its segment still gets a tag).
        assert!(
            v.observe(1, "late", "s", "/t/lo.m3u8", (0, 10, 4.0))
                .is_some()
        );
        assert_eq!(v.untracked, 1);
        // Once they have ended, a new session takes a freed number.
        let later = ACTIVE_MS + 10_000;
        v.observe(later, "new", "s", "/t/lo.m3u8", (0, 10, 4.0))
            .unwrap();
        assert_eq!(v.sessions(), 1);
        // A tag whose title number went to another title rates nothing.
        let tag = v.clone_tag("/t/lo.m3u8", 1, later);
        let id = tag.title;
        v.knowledge.forget_title(id);
        v.titles.remove(id);
        v.titles.add("s\n/other");
        assert_eq!(v.titles.get("s\n/other"), Some(id));
        assert_eq!(v.rate(tag), 0.0);
    }

    impl Viewers {
        fn clone_tag(&mut self, rendition: &str, position: u32, now: u64) -> Tag {
            self.tag("s", rendition, position, now).unwrap()
        }
    }
}
