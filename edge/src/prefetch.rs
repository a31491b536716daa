//! Prefetch's decisions, without I/O: which objects follow the one a player just asked for. The edge learns
//! renditions from the manifests it serves (HLS media playlists and DASH MPDs, read by `shared::segments`) and
//! from single-file renditions' `sidx` boxes, keeps them in a bounded index keyed by segment, and answers "the
//! next k segments after this request" ([`Index::next`]); a player's own CMCD `nor`/`nrr` names its next object
//! directly ([`from_cmcd`]) and goes first. The budget ([`budget`]) and the record of what demand used
//! ([`ledger`]) are pure too; the fetching, through the cache's ordinary coalesced fills, is the pipeline's
//! (`pipeline/prefetch.rs`).

pub mod budget;
pub mod ledger;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use shared::segments::{self, ByteRange, Rendition, Segment};

/// How many renditions the index holds; learning one more forgets the one learnt longest ago.
pub const MAX_RENDITIONS: usize = 4096;
/// Segments indexed over all renditions; a rendition that would pass it is not learnt.
pub const MAX_INDEXED_SEGMENTS: usize = 2_000_000;

/// Where a segment is: its rendition's id, its position in it, the rendition's length, and its duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located<'a> {
    pub rendition: &'a str,
    pub position: usize,
    pub segments: usize,
    pub seconds: f64,
}

/// One learnt rendition, as the index holds it.
#[derive(Debug)]
struct Learnt {
    rendition: Arc<Rendition>,
    /// The manifest version it was read from (its `ETag` or length+date), so a manifest read again is not re-learnt.
    version: String,
}

/// Renditions by id, and where each segment is: a bounded map, oldest rendition out first.
#[derive(Debug, Default)]
pub struct Index {
    renditions: HashMap<String, Learnt>,
    /// Rendition ids in the order learnt (a re-learnt one moves to the back).
    order: VecDeque<String>,
    /// Segment path → the renditions listing it, each with the path's first position in it (a file of byte
    /// ranges is listed by one rendition, a segment shared by two manifests of one title by both).
    by_path: HashMap<String, Vec<(String, usize)>>,
    segments: usize,
}

impl Index {
    /// Renditions held.
    pub fn len(&self) -> usize {
        self.renditions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.renditions.is_empty()
    }

    /// Segments listed over every rendition held.
    pub fn segment_count(&self) -> usize {
        self.segments
    }

    /// Whether the rendition `id` was learnt from `version` already.
    pub fn knows(&self, id: &str, version: &str) -> bool {
        self.renditions
            .get(id)
            .is_some_and(|l| l.version == version)
    }

    /// Learns what the manifest at `path` (its text `body`, its `version`) lists; a manifest that is not a media
    /// playlist or an MPD (a master playlist, say) teaches nothing. Returns how many renditions it learnt.
    pub fn learn_manifest(&mut self, path: &str, version: &str, body: &[u8]) -> usize {
        let renditions = if path.ends_with(".mpd") {
            segments::dash(path, body).unwrap_or_default()
        } else {
            // A master playlist fails as a media playlist: nothing to learn from it.
            segments::hls_media(path, body)
                .map(|r| vec![r])
                .unwrap_or_default()
        };
        let mut learnt = 0;
        for rendition in renditions {
            let useful = !rendition.segments.is_empty() || rendition.index.is_some();
            if useful && self.learn(rendition, version) {
                learnt += 1;
            }
        }
        learnt
    }

    /// Learns the segments of a single-file rendition from its `sidx` box: `bytes` are the index range `range` of
    /// `path`. Every rendition that names this file and index gets them.
    pub fn learn_sidx(&mut self, path: &str, range: ByteRange, bytes: &[u8]) -> usize {
        let Ok(listed) = segments::sidx_segments(path, range, bytes) else {
            return 0;
        };
        let waiting: Vec<Arc<Rendition>> = self
            .renditions
            .values()
            .filter(|l| l.rendition.index.as_ref() == Some(&(path.to_string(), range)))
            .map(|l| Arc::clone(&l.rendition))
            .collect();
        let mut learnt = 0;
        for rendition in waiting {
            let version = self.renditions[&rendition.id].version.clone();
            let mut whole = (*rendition).clone();
            whole.segments = listed.clone();
            if self.learn(whole, &version) {
                learnt += 1;
            }
        }
        learnt
    }

    /// Single-file renditions still waiting for their `sidx`: the file and the range to read.
    pub fn wants_sidx(&self, path: &str) -> Option<ByteRange> {
        self.renditions
            .values()
            .find_map(|l| match &l.rendition.index {
                Some((file, range)) if file == path && l.rendition.segments.is_empty() => {
                    Some(*range)
                }
                _ => None,
            })
    }

    /// Up to `k` segments after the one a request for `path` (and `range`) asks for, in the first rendition that
    /// lists it.
    pub fn next(&self, path: &str, range: Option<ByteRange>, k: usize) -> Vec<Segment> {
        self.listing(path, range)
            .map(|(rendition, position)| rendition.following(position, k))
            .find(|next| !next.is_empty())
            .map(<[Segment]>::to_vec)
            .unwrap_or_default()
    }

    /// Where a request for `path` (and `range`) is in the first complete rendition (a VOD one: a live playlist's
    /// positions move with its window) that lists it.
    pub fn locate(&self, path: &str, range: Option<ByteRange>) -> Option<Located<'_>> {
        self.listing(path, range)
            .filter(|(rendition, _)| rendition.complete)
            .map(|(rendition, position)| Located {
                rendition: rendition.id.as_str(),
                position,
                segments: rendition.segments.len(),
                seconds: rendition.segments[position].duration_secs,
            })
            .next()
    }

    /// The renditions listing `path`, each with the position a request for it (and `range`) asks for.
    fn listing<'a, 'p>(
        &'a self,
        path: &'p str,
        range: Option<ByteRange>,
    ) -> impl Iterator<Item = (&'a Rendition, usize)> + use<'a, 'p> {
        self.by_path
            .get(path)
            .into_iter()
            .flatten()
            .filter_map(move |(id, first)| {
                let rendition = &self.renditions.get(id)?.rendition;
                Some((&**rendition, rendition.position_from(*first, path, range)?))
            })
    }

    /// What to warm after a request for `path` (and `range`): the object the player's CMCD names
    /// (`from_player`) first, then the segments after the one asked for, `k` in all, none twice. A whole-file
    /// segment asked for with a range (ffmpeg sends `bytes=0-`) is still that segment.
    pub fn next_objects(
        &self,
        from_player: Option<Segment>,
        path: &str,
        range: Option<ByteRange>,
        k: usize,
    ) -> Vec<Segment> {
        let mut objects: Vec<Segment> = from_player.into_iter().take(k).collect();
        if objects.len() >= k {
            return objects;
        }
        let mut listed = self.next(path, range, k);
        if listed.is_empty() && range.is_some() {
            listed = self.next(path, None, k);
        }
        for next in listed {
            if objects.len() >= k {
                break;
            }
            if !objects
                .iter()
                .any(|o| o.path == next.path && o.range == next.range)
            {
                objects.push(next);
            }
        }
        objects
    }

    fn learn(&mut self, rendition: Rendition, version: &str) -> bool {
        let count = rendition.segments.len();
        if count > MAX_INDEXED_SEGMENTS {
            return false;
        }
        self.forget(&rendition.id);
        while !self.order.is_empty()
            && (self.renditions.len() >= MAX_RENDITIONS
                || self.segments + count > MAX_INDEXED_SEGMENTS)
        {
            let oldest = self.order.front().cloned().unwrap_or_default();
            self.forget(&oldest);
        }
        let id = rendition.id.clone();
        for (position, segment) in rendition.segments.iter().enumerate() {
            let ids = self.by_path.entry(segment.path.clone()).or_default();
            if !ids.iter().any(|(other, _)| *other == id) {
                ids.push((id.clone(), position));
            }
        }
        self.segments += count;
        self.order.push_back(id.clone());
        self.renditions.insert(
            id,
            Learnt {
                rendition: Arc::new(rendition),
                version: version.to_string(),
            },
        );
        true
    }

    fn forget(&mut self, id: &str) {
        let Some(learnt) = self.renditions.remove(id) else {
            return;
        };
        self.order.retain(|o| o != id);
        self.segments -= learnt.rendition.segments.len();
        for segment in &learnt.rendition.segments {
            if let Some(ids) = self.by_path.get_mut(&segment.path) {
                ids.retain(|(other, _)| other != id);
                if ids.is_empty() {
                    self.by_path.remove(&segment.path);
                }
            }
        }
    }
}

/// The object a player's CMCD says it will ask for next: `nor` (a URL relative to the request's path) and `nrr`
/// (a byte range, `start-end`; an open end is not prefetched); `None` when it names another host or nothing.
pub fn from_cmcd(request_path: &str, nor: Option<&str>, nrr: Option<&str>) -> Option<Segment> {
    let range = match nrr {
        Some(text) => Some(ByteRange::parse(text)?),
        None => None,
    };
    let path = match nor {
        Some(reference) => {
            let decoded = percent_decode(reference)?;
            segments::resolve(request_path, &decoded)?
        }
        // `nrr` alone: the next range of the same object.
        None if range.is_some() => request_path.to_string(),
        None => return None,
    };
    Some(Segment {
        path,
        range,
        duration_secs: 0.0,
        discontinuity: false,
    })
}

/// `nor` is percent-encoded (CTA-5004 §3.3.2): decoded once, and refused when that leaves no UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYLIST: &[u8] = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n\
        #EXTINF:4,\nseg_0.ts\n#EXTINF:4,\nseg_1.ts\n#EXTINF:4,\nseg_2.ts\n#EXTINF:4,\nseg_3.ts\n#EXT-X-ENDLIST\n";

    fn paths(segments: &[Segment]) -> Vec<String> {
        segments.iter().map(|s| s.path.clone()).collect()
    }

    #[test]
    fn a_vod_segment_is_located_in_its_rendition_and_a_live_one_is_not() {
        let mut index = Index::default();
        index.learn_manifest("/t/a/v0/index.m3u8", "v1", PLAYLIST);
        assert_eq!(
            index.locate("/t/a/v0/seg_2.ts", None),
            Some(Located {
                rendition: "/t/a/v0/index.m3u8",
                position: 2,
                segments: 4,
                seconds: 4.0
            })
        );
        assert_eq!(index.locate("/t/a/v0/seg_9.ts", None), None);
        let live = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:4,\ns7.ts\n#EXTINF:4,\ns8.ts\n";
        index.learn_manifest("/live/index.m3u8", "v1", live);
        assert!(
            !index.next("/live/s7.ts", None, 1).is_empty(),
            "prefetch still reads it"
        );
        assert_eq!(index.locate("/live/s7.ts", None), None);
    }

    #[test]
    fn a_learnt_playlist_gives_the_next_segments_of_each_request() {
        let mut index = Index::default();
        assert_eq!(
            index.learn_manifest("/t/a/v0/index.m3u8", "v1", PLAYLIST),
            1
        );
        assert!(index.knows("/t/a/v0/index.m3u8", "v1"));
        assert!(!index.knows("/t/a/v0/index.m3u8", "v2"));
        assert_eq!(
            paths(&index.next("/t/a/v0/seg_1.ts", None, 2)),
            ["/t/a/v0/seg_2.ts", "/t/a/v0/seg_3.ts"]
        );
        assert!(
            index.next("/t/a/v0/seg_3.ts", None, 2).is_empty(),
            "the end"
        );
        assert!(
            index.next("/t/b/v0/seg_1.ts", None, 2).is_empty(),
            "not learnt"
        );
        // A master playlist teaches nothing.
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv0/index.m3u8\n";
        assert_eq!(index.learn_manifest("/t/a/master.m3u8", "v1", master), 0);
    }

    #[test]
    fn a_manifest_learnt_again_replaces_its_segments() {
        let mut index = Index::default();
        index.learn_manifest("/t/a/v0/index.m3u8", "v1", PLAYLIST);
        let grown =
            b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg_3.ts\n#EXTINF:4,\nseg_4.ts\n";
        index.learn_manifest("/t/a/v0/index.m3u8", "v2", grown);
        assert_eq!(index.len(), 1);
        assert!(
            index.next("/t/a/v0/seg_1.ts", None, 1).is_empty(),
            "gone from the live window"
        );
        assert_eq!(
            paths(&index.next("/t/a/v0/seg_3.ts", None, 1)),
            ["/t/a/v0/seg_4.ts"]
        );
    }

    #[test]
    fn the_index_stays_bounded_oldest_out() {
        let mut index = Index::default();
        for i in 0..MAX_RENDITIONS + 10 {
            index.learn_manifest(&format!("/t/{i}/index.m3u8"), "v", PLAYLIST);
        }
        assert_eq!(index.len(), MAX_RENDITIONS);
        assert!(
            index.next("/t/0/seg_0.ts", None, 1).is_empty(),
            "the first learnt is forgotten"
        );
        assert_eq!(
            index
                .next(&format!("/t/{}/seg_0.ts", MAX_RENDITIONS + 9), None, 1)
                .len(),
            1
        );
        assert_eq!(index.segments, MAX_RENDITIONS * 4);
    }

    #[test]
    fn a_single_file_rendition_waits_for_its_sidx() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../origin/sample-content/titles/test-pattern/mp4");
        let mpd = std::fs::read(root.join("manifest.mpd")).unwrap();
        let mut index = Index::default();
        index.learn_manifest("/titles/test-pattern/mp4/manifest.mpd", "v1", &mpd);
        let file = "/titles/test-pattern/mp4/v0.mp4";
        let range = index.wants_sidx(file).expect("its index range");
        assert_eq!(
            range,
            ByteRange {
                start: 760,
                end: 871
            }
        );
        assert!(
            index
                .next(
                    file,
                    Some(ByteRange {
                        start: 872,
                        end: 1000
                    }),
                    1
                )
                .is_empty()
        );
        let bytes = std::fs::read(root.join("v0.mp4")).unwrap();
        let learnt = index.learn_sidx(file, range, &bytes[760..=871]);
        assert_eq!(learnt, 1);
        assert_eq!(index.wants_sidx(file), None);
        let next = index.next(
            file,
            Some(ByteRange {
                start: 872,
                end: 125_076,
            }),
            1,
        );
        assert_eq!(
            next[0].range,
            Some(ByteRange {
                start: 125_077,
                end: 252_288
            })
        );
    }

    #[test]
    fn the_players_next_object_goes_first_then_the_index_k_in_all_none_twice() {
        let mut index = Index::default();
        index.learn_manifest("/t/a/v0/index.m3u8", "v1", PLAYLIST);
        let cmcd = |path: &str| from_cmcd("/t/a/v0/seg_0.ts", Some(path), None);
        let from_range = Some(ByteRange {
            start: 0,
            end: u64::MAX,
        });
        /// The player's next object, the request's range, `k`, and the paths warmed.
        type Row = (
            Option<Segment>,
            Option<ByteRange>,
            usize,
            &'static [&'static str],
        );
        let table: [Row; 7] = [
            (None, None, 1, &["/t/a/v0/seg_1.ts"]),
            (
                None,
                None,
                3,
                &["/t/a/v0/seg_1.ts", "/t/a/v0/seg_2.ts", "/t/a/v0/seg_3.ts"],
            ),
            (cmcd("seg_3.ts"), None, 1, &["/t/a/v0/seg_3.ts"]),
            (
                cmcd("seg_3.ts"),
                None,
                2,
                &["/t/a/v0/seg_3.ts", "/t/a/v0/seg_1.ts"],
            ),
            // Named by both: once.
            (
                cmcd("seg_1.ts"),
                None,
                2,
                &["/t/a/v0/seg_1.ts", "/t/a/v0/seg_2.ts"],
            ),
            // `bytes=0-` of a whole-file segment.
            (None, from_range, 1, &["/t/a/v0/seg_1.ts"]),
            (cmcd("seg_2.ts"), None, 0, &[]),
        ];
        for (player, range, k, want) in table {
            let got = index.next_objects(player.clone(), "/t/a/v0/seg_0.ts", range, k);
            assert_eq!(paths(&got), want, "{player:?} {range:?} k={k}");
        }
        // Nothing learnt about the path: only what the player names.
        let other = from_cmcd("/t/b/x.ts", Some("y.ts"), None);
        assert_eq!(
            paths(&index.next_objects(other, "/t/b/x.ts", None, 2)),
            ["/t/b/y.ts"]
        );
    }

    #[test]
    fn cmcd_names_the_next_object_relative_to_the_request() {
        let table = [
            (
                "/t/a/v0/seg_1.m4v",
                Some("..%2F300kbps%2Fseg_2.m4v"),
                None,
                Some(("/t/a/300kbps/seg_2.m4v", None)),
            ),
            (
                "/t/a/v0/seg_1.m4v",
                Some("seg_2.m4v"),
                Some("100-199"),
                Some(("/t/a/v0/seg_2.m4v", Some((100, 199)))),
            ),
            (
                "/t/a/v0.mp4",
                None,
                Some("500-999"),
                Some(("/t/a/v0.mp4", Some((500, 999)))),
            ),
            ("/t/a/v0.mp4", None, Some("500-"), None),
            (
                "/t/a/v0.mp4",
                Some("https%3A%2F%2Fother.example%2Fx.ts"),
                None,
                None,
            ),
            ("/t/a/v0.mp4", Some("..%2F..%2F..%2F..%2Fx"), None, None),
            ("/t/a/v0.mp4", None, None, None),
        ];
        for (request, nor, nrr, want) in table {
            let got =
                from_cmcd(request, nor, nrr).map(|s| (s.path, s.range.map(|r| (r.start, r.end))));
            let want = want.map(|(p, r)| (p.to_string(), r));
            assert_eq!(got, want, "{nor:?} {nrr:?}");
        }
    }
}
