//! Purges as bans: a ban (an exact URL, a URL prefix, or a tag) recorded with its time makes every stored version
//! the upstream last confirmed before that time unusable (hard) or stale (soft). Issuing one is O(1) whatever the
//! cache holds; lookups check the bans that could match (a hash lookup for URLs and tags, the prefix list for
//! prefixes). Bans are written to a file so that a restart keeps them, and dropped once older than the cache's
//! retention limit, beyond which no stored version is used anyway.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// What a ban matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanKind {
    /// The key's URL (`site|path?query`), every variant of it.
    Url,
    /// Keys whose URL starts with the pattern.
    Prefix,
    /// Versions carrying the tag (`Surrogate-Key`, `Cache-Tag`).
    Tag,
}

impl BanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BanKind::Url => "url",
            BanKind::Prefix => "prefix",
            BanKind::Tag => "tag",
        }
    }
}

/// One recorded ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub kind: BanKind,
    pub pattern: String,
    /// Unix milliseconds when it was issued.
    pub at_ms: u64,
    /// Soft: matching versions become stale (revalidated on next use) instead of unusable.
    pub soft: bool,
}

/// What the bans say about one stored version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Stale from this time (unix ms) on.
    Stale(u64),
    Drop,
}

/// The set of bans, without I/O.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BanSet {
    /// Per pattern, the latest hard ban and the earliest soft ban not covered by it, per kind.
    urls: HashMap<String, Marks>,
    tags: HashMap<String, Marks>,
    prefixes: Vec<Ban>,
}

/// The bans recorded for one URL or tag: the latest hard one, and the soft ones (earliest first).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Marks {
    hard_ms: Option<u64>,
    soft_ms: Vec<u64>,
}

impl Marks {
    fn add(&mut self, at_ms: u64, soft: bool) {
        if soft {
            self.soft_ms.push(at_ms);
            self.soft_ms.sort_unstable();
        } else {
            self.hard_ms = Some(self.hard_ms.map_or(at_ms, |h| h.max(at_ms)));
        }
    }

    fn verdict(&self, confirmed_ms: u64) -> Verdict {
        if self.hard_ms.is_some_and(|h| h > confirmed_ms) {
            return Verdict::Drop;
        }
        match self.soft_ms.iter().find(|&&s| s > confirmed_ms) {
            Some(&s) => Verdict::Stale(s),
            None => Verdict::Keep,
        }
    }

    fn prune(&mut self, before_ms: u64) -> bool {
        self.hard_ms = self.hard_ms.filter(|&h| h >= before_ms);
        self.soft_ms.retain(|&s| s >= before_ms);
        self.hard_ms.is_none() && self.soft_ms.is_empty()
    }
}

fn combine(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Drop, _) | (_, Verdict::Drop) => Verdict::Drop,
        (Verdict::Stale(x), Verdict::Stale(y)) => Verdict::Stale(x.min(y)),
        (Verdict::Stale(x), Verdict::Keep) | (Verdict::Keep, Verdict::Stale(x)) => {
            Verdict::Stale(x)
        }
        (Verdict::Keep, Verdict::Keep) => Verdict::Keep,
    }
}

impl BanSet {
    pub fn add(&mut self, ban: Ban) {
        match ban.kind {
            BanKind::Url => self
                .urls
                .entry(ban.pattern)
                .or_default()
                .add(ban.at_ms, ban.soft),
            BanKind::Tag => self
                .tags
                .entry(ban.pattern)
                .or_default()
                .add(ban.at_ms, ban.soft),
            BanKind::Prefix => self.prefixes.push(ban),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.tags.is_empty() && self.prefixes.is_empty()
    }

    /// The verdict for a version of `url` with `tags`, last confirmed upstream at `confirmed_ms`.
    pub fn verdict(&self, url: &str, tags: &[String], confirmed_ms: u64) -> Verdict {
        let mut verdict = self
            .urls
            .get(url)
            .map_or(Verdict::Keep, |m| m.verdict(confirmed_ms));
        for tag in tags {
            if let Some(marks) = self.tags.get(tag) {
                verdict = combine(verdict, marks.verdict(confirmed_ms));
            }
        }
        for ban in &self.prefixes {
            if ban.at_ms > confirmed_ms && url.starts_with(&ban.pattern) {
                let v = if ban.soft {
                    Verdict::Stale(ban.at_ms)
                } else {
                    Verdict::Drop
                };
                verdict = combine(verdict, v);
            }
        }
        verdict
    }

    /// Drops bans issued before `before_ms`: no version confirmed before then is used any more.
    pub fn prune(&mut self, before_ms: u64) {
        self.urls.retain(|_, m| !m.prune(before_ms));
        self.tags.retain(|_, m| !m.prune(before_ms));
        self.prefixes.retain(|b| b.at_ms >= before_ms);
    }

    /// Every ban, for listing and saving.
    pub fn list(&self) -> Vec<Ban> {
        let mut all = Vec::new();
        for (kind, map) in [(BanKind::Url, &self.urls), (BanKind::Tag, &self.tags)] {
            for (pattern, marks) in map {
                let soft = marks.soft_ms.iter().map(|&at| (at, true));
                for (at_ms, soft) in marks.hard_ms.map(|h| (h, false)).into_iter().chain(soft) {
                    all.push(Ban {
                        kind,
                        pattern: pattern.clone(),
                        at_ms,
                        soft,
                    });
                }
            }
        }
        all.extend(self.prefixes.iter().cloned());
        all.sort_by(|a, b| {
            (a.at_ms, a.kind.as_str(), &a.pattern).cmp(&(b.at_ms, b.kind.as_str(), &b.pattern))
        });
        all
    }

    /// Counts by kind, for the gauge.
    pub fn counts(&self) -> [(BanKind, usize); 3] {
        [
            (BanKind::Url, self.urls.len()),
            (BanKind::Prefix, self.prefixes.len()),
            (BanKind::Tag, self.tags.len()),
        ]
    }
}

/// How long an invalidation (RFC 9111 §4.4, after an unsafe request) is remembered. The stored versions it names
/// are removed at once; the ban only covers a fill that was already under way, so it need not outlive one.
pub const INVALIDATION_MEMORY_MS: u64 = 10 * 60 * 1000;
/// Invalidations remembered at most; past that, the oldest half goes.
pub const MAX_INVALIDATIONS: usize = 100_000;

/// The edge's bans, shared by lookups and the admin API. Purges are durable: saved to `path` (off the runtime's
/// threads, fsynced, the previous good copy kept beside it as `*.prev`) so that a restart keeps them.
/// Invalidations are not: they live in memory for [`INVALIDATION_MEMORY_MS`], at most [`MAX_INVALIDATIONS`],
/// so a busy API behind the edge cannot grow the file.
pub struct Bans {
    set: RwLock<BanSet>,
    invalidations: RwLock<BanSet>,
    /// When the invalidations are next pruned of the expired ones (unix ms).
    next_prune_ms: std::sync::atomic::AtomicU64,
    path: Option<PathBuf>,
    /// Serialises writes of the file.
    writing: std::sync::Mutex<()>,
}

impl Bans {
    /// Loads the saved bans. A missing file is no bans; a corrupt or unreadable one is replaced by the last good
    /// copy (`*.prev`), or by no bans when that is bad too, each with a warning naming the file.
    pub fn open(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut set = BanSet::default();
        if let Some(path) = &path {
            let bans = match read_bans(path) {
                Ok(bans) => bans,
                Err(e) => {
                    let prev = previous_copy(path);
                    tracing::error!(file = %path.display(), error = %e, "the bans file is unusable; using its last good copy");
                    read_bans(&prev).unwrap_or_else(|e| {
                        tracing::error!(file = %prev.display(), error = %e, "no usable copy of the bans; starting without them");
                        Vec::new()
                    })
                }
            };
            for ban in bans {
                set.add(ban);
            }
        }
        Ok(Bans {
            set: RwLock::new(set),
            invalidations: RwLock::new(BanSet::default()),
            next_prune_ms: std::sync::atomic::AtomicU64::new(0),
            path,
            writing: std::sync::Mutex::new(()),
        })
    }

    pub fn verdict(&self, url: &str, tags: &[String], confirmed_ms: u64) -> Verdict {
        let mut verdict = Verdict::Keep;
        for set in [&self.set, &self.invalidations] {
            let set = set.read().unwrap_or_else(|e| e.into_inner());
            if !set.is_empty() {
                verdict = combine(verdict, set.verdict(url, tags, confirmed_ms));
            }
        }
        verdict
    }

    /// Records a purge (after pruning those older than `prune_before_ms`) and saves the set, on a blocking
    /// thread.
    pub async fn add(
        self: &std::sync::Arc<Self>,
        ban: Ban,
        prune_before_ms: u64,
    ) -> std::io::Result<()> {
        {
            let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
            set.prune(prune_before_ms);
            set.add(ban);
        }
        let bans = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || bans.save())
            .await
            .map_err(std::io::Error::other)?
    }

    /// Remembers an invalidation of the URL `pattern` at `at_ms`, in memory only.
    pub fn invalidate(&self, pattern: String, at_ms: u64) {
        let mut set = self
            .invalidations
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // Expired ones go at most every tenth of the memory span: a prune walks them all.
        if at_ms
            >= self
                .next_prune_ms
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            set.prune(at_ms.saturating_sub(INVALIDATION_MEMORY_MS));
            self.next_prune_ms.store(
                at_ms + INVALIDATION_MEMORY_MS / 10,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if set.urls.len() >= MAX_INVALIDATIONS {
            let mut times: Vec<u64> = set.list().iter().map(|b| b.at_ms).collect();
            times.sort_unstable();
            set.prune(times[times.len() / 2]);
        }
        set.add(Ban {
            kind: BanKind::Url,
            pattern,
            at_ms,
            soft: false,
        });
    }

    /// The purges in force (invalidations are not listed).
    pub fn list(&self) -> Vec<Ban> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).list()
    }

    pub fn counts(&self) -> [(BanKind, usize); 3] {
        self.set.read().unwrap_or_else(|e| e.into_inner()).counts()
    }

    /// Invalidations remembered now.
    pub fn invalidations(&self) -> usize {
        self.invalidations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .urls
            .len()
    }

    /// Writes the current purges: a temporary file, fsynced, renamed over the file after the file is kept as
    /// the previous good copy; then the folder is fsynced.
    fn save(&self) -> std::io::Result<()> {
        use std::io::Write;
        let Some(path) = &self.path else {
            return Ok(());
        };
        let _one_writer = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let list = self.list();
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        if path.exists() {
            let prev = previous_copy(path);
            let _ = std::fs::remove_file(&prev);
            std::fs::hard_link(path, &prev)?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The saved bans in `path` (none when it does not exist).
fn read_bans(path: &std::path::Path) -> anyhow::Result<Vec<Ban>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read(path)?;
    Ok(serde_json::from_slice(&text)?)
}

/// Where the previous good copy of the bans file is kept.
fn previous_copy(path: &std::path::Path) -> PathBuf {
    path.with_extension("json.prev")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(kind: BanKind, pattern: &str, at_ms: u64, soft: bool) -> Ban {
        Ban {
            kind,
            pattern: pattern.into(),
            at_ms,
            soft,
        }
    }

    #[test]
    fn bans_match_versions_confirmed_before_them() {
        let mut set = BanSet::default();
        set.add(ban(BanKind::Url, "s|/a.ts", 100, false));
        set.add(ban(BanKind::Prefix, "s|/titles/x/", 200, false));
        set.add(ban(BanKind::Tag, "title-9", 300, true));
        let tags = ["title-9".to_string()];
        let table = [
            ("s|/a.ts", &[][..], 99, Verdict::Drop),
            ("s|/a.ts", &[][..], 100, Verdict::Keep), // confirmed at the ban's time: after it
            ("s|/a.tsx", &[][..], 0, Verdict::Keep),  // URL bans are exact
            ("s|/titles/x/seg1.ts", &[][..], 150, Verdict::Drop),
            ("s|/titles/x/seg1.ts", &[][..], 250, Verdict::Keep),
            ("s|/titles/y/seg1.ts", &[][..], 0, Verdict::Keep),
            ("s|/other", &tags[..], 299, Verdict::Stale(300)),
            ("s|/other", &tags[..], 301, Verdict::Keep),
            ("s|/titles/x/1", &tags[..], 150, Verdict::Drop), // hard beats soft
        ];
        for (url, tags, confirmed, want) in table {
            assert_eq!(set.verdict(url, tags, confirmed), want, "{url} {confirmed}");
        }
    }

    #[test]
    fn soft_then_hard_and_the_earliest_soft_counts() {
        let mut set = BanSet::default();
        set.add(ban(BanKind::Url, "u", 500, true));
        set.add(ban(BanKind::Url, "u", 400, true));
        assert_eq!(set.verdict("u", &[], 300), Verdict::Stale(400));
        assert_eq!(set.verdict("u", &[], 450), Verdict::Stale(500));
        set.add(ban(BanKind::Url, "u", 420, false));
        assert_eq!(set.verdict("u", &[], 410), Verdict::Drop);
        assert_eq!(set.verdict("u", &[], 430), Verdict::Stale(500));
    }

    #[test]
    fn prune_drops_old_bans_and_the_list_round_trips() {
        let mut set = BanSet::default();
        set.add(ban(BanKind::Url, "u", 100, false));
        set.add(ban(BanKind::Url, "u", 300, true));
        set.add(ban(BanKind::Prefix, "p", 100, true));
        set.add(ban(BanKind::Tag, "t", 100, false));
        let mut copy = BanSet::default();
        for b in set.list() {
            copy.add(b);
        }
        assert_eq!(copy, set);
        set.prune(200);
        assert_eq!(set.list(), vec![ban(BanKind::Url, "u", 300, true)]);
        set.prune(301);
        assert!(set.is_empty());
    }

    #[tokio::test]
    async fn purges_survive_a_restart_and_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let bans = std::sync::Arc::new(Bans::open(Some(path.clone())).unwrap());
        bans.add(ban(BanKind::Tag, "t", 10, false), 0)
            .await
            .unwrap();
        let first = bans.list();
        bans.add(ban(BanKind::Prefix, "s|/x/", 20, true), 0)
            .await
            .unwrap();
        let again = Bans::open(Some(path.clone())).unwrap();
        assert_eq!(again.list(), bans.list());
        assert_eq!(again.verdict("s|/x/1", &[], 5), Verdict::Stale(20));
        // A corrupt file: the last good copy (before the last save) is used, not a refusal to start.
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(Bans::open(Some(path.clone())).unwrap().list(), first);
        // Both bad: no bans, still a start.
        std::fs::write(previous_copy(&path), b"{").unwrap();
        assert!(Bans::open(Some(path)).unwrap().list().is_empty());
    }

    #[test]
    fn invalidations_are_bounded_in_memory_and_never_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let bans = Bans::open(Some(path.clone())).unwrap();
        for i in 0..MAX_INVALIDATIONS as u64 + 10 {
            bans.invalidate(format!("s|/api/{i}"), 1_000_000 + i);
        }
        assert!(bans.invalidations() <= MAX_INVALIDATIONS);
        assert_eq!(bans.verdict("s|/api/100009", &[], 999_000), Verdict::Drop);
        assert_eq!(bans.verdict("s|/api/100009", &[], 1_200_000), Verdict::Keep);
        // Remembered for INVALIDATION_MEMORY_MS only.
        bans.invalidate("s|/late".into(), 2_000_000 + INVALIDATION_MEMORY_MS);
        assert_eq!(bans.invalidations(), 1);
        assert!(
            bans.list().is_empty() && !path.exists(),
            "nothing listed or written"
        );
    }
}
