//! A pool of interchangeable upstream instances (the control plane's, say), decided here without I/O (time and
//! randomness passed in): which instance a request goes to — least outstanding requests between two chosen at
//! random among the usable ones ("power of two choices") — and each instance's health, from two sources:
//! active probes (usable after `healthy_threshold` good probes in a row, unusable after `unhealthy_threshold`
//! bad ones) and passive outlier ejection (`eject_after` failed requests in a row take an instance out for
//! `eject_for`, doubled for each ejection in a row, at most 8×). When no instance is usable the pool still
//! tries them all ("panic mode"): a guess beats a certain 503. The probes and requests themselves are sent by
//! `upstream.rs`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How a pool judges its instances.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Failed requests in a row that eject an instance; 0 turns passive ejection off.
    pub eject_after: u32,
    /// How long a first ejection lasts.
    pub eject_for: Duration,
    /// Good probes in a row that make an unusable instance usable.
    pub healthy_threshold: u32,
    /// Bad probes in a row that make a usable instance unusable.
    pub unhealthy_threshold: u32,
}

/// One instance of a pool.
#[derive(Debug)]
pub struct Member {
    /// Its base URL as configured: the metric label and what logs name.
    pub url: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// Requests sent to it and not yet answered (their response head not yet received).
    outstanding: AtomicUsize,
}

impl Member {
    pub fn new(url: &str, authority: &str) -> Self {
        Member {
            url: url.to_string(),
            authority: authority.to_string(),
            outstanding: AtomicUsize::new(0),
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// An instance's health as the probes and the requests have seen it.
#[derive(Debug, Clone, Default)]
struct Health {
    /// The probes say it is down (it starts up: a new pool serves at once).
    probed_down: bool,
    probes_in_a_row: u32,
    failures_in_a_row: u32,
    ejected_until: Option<Instant>,
    /// Ejections since it last answered well: each one lasts twice the last, up to 8×.
    ejections: u32,
}

impl Health {
    fn usable(&self, now: Instant) -> bool {
        !self.probed_down && self.ejected_until.is_none_or(|until| now >= until)
    }
}

/// What an answer or a probe says about an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (any status below 500).
    Good,
    /// It could not be reached, timed out, or answered 5xx.
    Bad,
}

/// A change of an instance's state, for the log and the `edge_pool_member_up` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    WentDown,
    CameBack,
}

/// The instances and their health.
#[derive(Debug)]
pub struct Pool {
    members: Vec<Member>,
    settings: PoolSettings,
    health: Mutex<Vec<Health>>,
}

/// One request counted as outstanding on an instance until dropped.
pub struct Outstanding<'a>(&'a Member);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    pub fn new(members: Vec<Member>, settings: PoolSettings) -> Self {
        let health = Mutex::new(vec![Health::default(); members.len()]);
        Pool {
            members,
            settings,
            health,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn get(&self, index: usize) -> &Member {
        &self.members[index]
    }

    /// Whether instance `index` would be chosen at `now` (in a pool not in panic mode).
    pub fn is_usable(&self, index: usize, now: Instant) -> bool {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.get(index).is_some_and(|h| h.usable(now))
    }

    /// The instance for the next request at `now`, leaving out `tried` (the instances this request already
    /// failed on), or `None` when every instance was tried. `random` is any random number.
    pub fn choose(&self, now: Instant, tried: &[usize], random: u64) -> Option<usize> {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let untried = |i: &usize| !tried.contains(i);
        let usable: Vec<usize> = (0..self.members.len())
            .filter(untried)
            .filter(|&i| health[i].usable(now))
            .collect();
        drop(health);
        let candidates = if usable.is_empty() {
            (0..self.members.len()).filter(untried).collect()
        } else {
            usable
        };
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            n => {
                let first = (random % n as u64) as usize;
                // The second is any other: an offset of 1..n from the first.
                let second = (first + 1 + ((random >> 32) % (n as u64 - 1)) as usize) % n;
                let (a, b) = (candidates[first], candidates[second]);
                Some(
                    if self.members[b].outstanding() < self.members[a].outstanding() {
                        b
                    } else {
                        a
                    },
                )
            }
        }
    }

    /// Counts a request on instance `index` as outstanding until the guard is dropped.
    pub fn start(&self, index: usize) -> Outstanding<'_> {
        let member = &self.members[index];
        member.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(member)
    }

    /// Records how instance `index` answered a request at `now`; the change of its state, if any.
    pub fn record_answer(&self, index: usize, verdict: Verdict, now: Instant) -> Option<Change> {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let h = health.get_mut(index)?;
        let was_usable = h.usable(now);
        match verdict {
            Verdict::Good => {
                h.failures_in_a_row = 0;
                if h.ejected_until.is_none_or(|until| now >= until) {
                    // It served well outside an ejection: the next ejection starts short again.
                    h.ejected_until = None;
                    h.ejections = 0;
                }
            }
            Verdict::Bad => {
                h.failures_in_a_row += 1;
                let eject_after = self.settings.eject_after;
                if eject_after > 0 && h.failures_in_a_row >= eject_after && was_usable {
                    let factor = 1u32 << h.ejections.min(3);
                    h.ejected_until = Some(now + self.settings.eject_for * factor);
                    h.ejections += 1;
                    h.failures_in_a_row = 0;
                }
            }
        }
        change(was_usable, h.usable(now))
    }

    /// Records a probe of instance `index` at `now`; the change of its state, if any.
    pub fn record_probe(&self, index: usize, verdict: Verdict, now: Instant) -> Option<Change> {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let h = health.get_mut(index)?;
        let was_usable = h.usable(now);
        let same_as_before = (verdict == Verdict::Good) != h.probed_down;
        if same_as_before {
            h.probes_in_a_row = 0;
        } else {
            h.probes_in_a_row += 1;
            let threshold = match verdict {
                Verdict::Good => self.settings.healthy_threshold,
                Verdict::Bad => self.settings.unhealthy_threshold,
            };
            if h.probes_in_a_row >= threshold.max(1) {
                h.probed_down = verdict == Verdict::Bad;
                h.probes_in_a_row = 0;
                if verdict == Verdict::Good {
                    // The probes saw it come back: whatever ejected it is over.
                    h.ejected_until = None;
                    h.ejections = 0;
                    h.failures_in_a_row = 0;
                }
            }
        }
        change(was_usable, h.usable(now))
    }
}

fn change(was_usable: bool, usable: bool) -> Option<Change> {
    match (was_usable, usable) {
        (true, false) => Some(Change::WentDown),
        (false, true) => Some(Change::CameBack),
        _ => None,
    }
}

/// How an answer is judged: 4xx is the request's business, 5xx the instance's.
pub fn verdict(status: http::StatusCode) -> Verdict {
    if status.is_server_error() {
        Verdict::Bad
    } else {
        Verdict::Good
    }
}

/// A random number for [`Pool::choose`]: splitmix64 over a process-wide counter (cheap, well spread, and no
/// dependency; nothing here needs to be unpredictable).
pub fn random() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut z = NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        Pool::new(
            (0..n)
                .map(|i| Member::new(&format!("http://h:{i}"), &format!("h:{i}")))
                .collect(),
            PoolSettings {
                eject_after: 3,
                eject_for: Duration::from_secs(10),
                healthy_threshold: 2,
                unhealthy_threshold: 2,
            },
        )
    }

    #[test]
    fn two_choices_take_the_less_loaded() {
        let p = pool(2);
        let now = Instant::now();
        let _busy = [p.start(0), p.start(0)];
        for r in 0..50 {
            assert_eq!(p.choose(now, &[], random() ^ r), Some(1));
        }
        let _more = [p.start(1), p.start(1), p.start(1)];
        assert_eq!(p.choose(now, &[], 7), Some(0));
    }

    #[test]
    fn choices_spread_over_every_member() {
        let p = pool(3);
        let now = Instant::now();
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[p.choose(now, &[], random()).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn tried_members_are_left_out_and_the_last_gives_none() {
        let p = pool(3);
        let now = Instant::now();
        for r in 0..20 {
            assert_eq!(p.choose(now, &[0, 2], r), Some(1));
        }
        assert_eq!(p.choose(now, &[0, 1, 2], 1), None);
    }

    #[test]
    fn failures_in_a_row_eject_for_a_doubling_time() {
        let p = pool(2);
        let t0 = Instant::now();
        assert_eq!(p.record_answer(0, Verdict::Bad, t0), None);
        assert_eq!(
            p.record_answer(0, Verdict::Good, t0),
            None,
            "a success resets the count"
        );
        assert_eq!(p.record_answer(0, Verdict::Bad, t0), None);
        assert_eq!(p.record_answer(0, Verdict::Bad, t0), None);
        assert_eq!(p.record_answer(0, Verdict::Bad, t0), Some(Change::WentDown));
        for r in 0..20 {
            assert_eq!(p.choose(t0, &[], r), Some(1));
        }
        let t1 = t0 + Duration::from_secs(10);
        assert!(p.is_usable(0, t1), "the first ejection lasts eject_for");
        // Failing again right away: out for twice as long.
        for _ in 0..3 {
            p.record_answer(0, Verdict::Bad, t1);
        }
        assert!(!p.is_usable(0, t1 + Duration::from_secs(19)));
        assert!(p.is_usable(0, t1 + Duration::from_secs(20)));
        // A good answer after the ejection: the next one is short again.
        let t2 = t1 + Duration::from_secs(20);
        p.record_answer(0, Verdict::Good, t2);
        for _ in 0..3 {
            p.record_answer(0, Verdict::Bad, t2);
        }
        assert!(p.is_usable(0, t2 + Duration::from_secs(10)));
    }

    #[test]
    fn ejection_doubling_stops_at_eight_times() {
        let p = pool(2);
        let mut t = Instant::now();
        for _ in 0..6 {
            for _ in 0..3 {
                p.record_answer(0, Verdict::Bad, t);
            }
            t += Duration::from_secs(80);
            assert!(p.is_usable(0, t));
        }
        for _ in 0..3 {
            p.record_answer(0, Verdict::Bad, t);
        }
        assert!(!p.is_usable(0, t + Duration::from_secs(79)));
        assert!(p.is_usable(0, t + Duration::from_secs(80)));
    }

    #[test]
    fn probes_take_members_down_and_back_after_their_thresholds() {
        let p = pool(2);
        let now = Instant::now();
        assert_eq!(p.record_probe(1, Verdict::Bad, now), None);
        assert_eq!(p.record_probe(1, Verdict::Good, now), None, "not in a row");
        assert_eq!(p.record_probe(1, Verdict::Bad, now), None);
        assert_eq!(p.record_probe(1, Verdict::Bad, now), Some(Change::WentDown));
        assert_eq!(p.choose(now, &[], 3), Some(0));
        assert_eq!(p.record_probe(1, Verdict::Good, now), None);
        assert_eq!(
            p.record_probe(1, Verdict::Good, now),
            Some(Change::CameBack)
        );
        assert!(p.is_usable(1, now));
    }

    #[test]
    fn a_probe_coming_back_ends_an_ejection() {
        let p = pool(2);
        let now = Instant::now();
        for _ in 0..3 {
            p.record_answer(1, Verdict::Bad, now);
        }
        assert!(!p.is_usable(1, now));
        p.record_probe(1, Verdict::Bad, now);
        p.record_probe(1, Verdict::Bad, now);
        p.record_probe(1, Verdict::Good, now);
        assert_eq!(
            p.record_probe(1, Verdict::Good, now),
            Some(Change::CameBack)
        );
    }

    #[test]
    fn with_nothing_usable_every_member_is_still_tried() {
        let p = pool(2);
        let now = Instant::now();
        for i in 0..2 {
            p.record_probe(i, Verdict::Bad, now);
            p.record_probe(i, Verdict::Bad, now);
        }
        assert!(p.choose(now, &[], 5).is_some());
        assert_eq!(p.choose(now, &[0], 5), Some(1));
    }

    #[test]
    fn outstanding_counts_follow_the_guards() {
        let p = pool(1);
        {
            let _a = p.start(0);
            let _b = p.start(0);
            assert_eq!(p.get(0).outstanding(), 2);
        }
        assert_eq!(p.get(0).outstanding(), 0);
    }

    #[test]
    fn server_errors_are_bad_and_client_errors_good() {
        assert_eq!(verdict(http::StatusCode::OK), Verdict::Good);
        assert_eq!(verdict(http::StatusCode::NOT_FOUND), Verdict::Good);
        assert_eq!(verdict(http::StatusCode::BAD_GATEWAY), Verdict::Bad);
    }
}
