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

/// The edge's bans, shared by lookups and the admin API, saved to `path` on every change.
pub struct Bans {
    set: RwLock<BanSet>,
    path: Option<PathBuf>,
}

impl Bans {
    /// Loads the saved bans (a missing file is no bans; an unreadable one is an error naming it).
    pub fn open(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut set = BanSet::default();
        if let Some(path) = &path
            && path.exists()
        {
            let text = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading bans {}: {e}", path.display()))?;
            let bans: Vec<Ban> = serde_json::from_slice(&text)
                .map_err(|e| anyhow::anyhow!("bans file {} is not valid: {e}", path.display()))?;
            for ban in bans {
                set.add(ban);
            }
        }
        Ok(Bans {
            set: RwLock::new(set),
            path,
        })
    }

    pub fn verdict(&self, url: &str, tags: &[String], confirmed_ms: u64) -> Verdict {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        if set.is_empty() {
            return Verdict::Keep;
        }
        set.verdict(url, tags, confirmed_ms)
    }

    /// Records a ban (after pruning those older than `prune_before_ms`) and saves the set.
    pub fn add(&self, ban: Ban, prune_before_ms: u64) -> std::io::Result<()> {
        let list = {
            let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
            set.prune(prune_before_ms);
            set.add(ban);
            set.list()
        };
        self.save(&list)
    }

    pub fn list(&self) -> Vec<Ban> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).list()
    }

    pub fn counts(&self) -> [(BanKind, usize); 3] {
        self.set.read().unwrap_or_else(|e| e.into_inner()).counts()
    }

    fn save(&self, list: &[Ban]) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(list).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }
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

    #[test]
    fn bans_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let bans = Bans::open(Some(path.clone())).unwrap();
        bans.add(ban(BanKind::Tag, "t", 10, false), 0).unwrap();
        bans.add(ban(BanKind::Prefix, "s|/x/", 20, true), 0)
            .unwrap();
        let again = Bans::open(Some(path.clone())).unwrap();
        assert_eq!(again.list(), bans.list());
        assert_eq!(again.verdict("s|/x/1", &[], 5), Verdict::Stale(20));
        std::fs::write(&path, b"not json").unwrap();
        let err = Bans::open(Some(path)).err().unwrap().to_string();
        assert!(err.contains("bans.json"), "{err}");
    }
}
