//! What to do with a request, given what is stored for it: the cache's decision as one pure function. The
//! pipeline looks the request up, calls [`plan`] with the stored version's freshness (as numbers, the clock
//! already read), the request's directives and the policy switches, and then only carries out the [`Plan`]:
//! serve, serve stale (and maybe revalidate in the background), revalidate, fill, pass, or refuse.
//!
//! The rows come from RFC 9111 §4 (constructing responses from caches), §4.2.4 (serving stale), §4.3
//! (validation), §5.2.1 (request directives) and RFC 5861 (`stale-while-revalidate`, `stale-if-error`); the
//! table tests below name the section of each row.

use super::freshness::{CacheControl, client_accepts_stale, fresh_enough};
use crate::status::{Fwd, StaleReason};

/// A stored version's freshness at the time of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredState {
    /// Current age in seconds (§4.2.3).
    pub age: u64,
    /// Freshness lifetime in seconds (§4.2.1).
    pub ttl_secs: u64,
    /// It has a validator (`ETag` or `Last-Modified`), so a conditional request can revalidate it (§4.3.1).
    pub has_validator: bool,
    /// `must-revalidate`, `proxy-revalidate` or `no-cache`: never served stale (§4.2.4, §5.2.2).
    pub no_stale: bool,
    /// RFC 5861 windows, in seconds past the lifetime.
    pub stale_while_revalidate_secs: u64,
    pub stale_if_error_secs: u64,
}

impl StoredState {
    pub fn is_fresh(&self) -> bool {
        self.age < self.ttl_secs
    }

    /// Seconds past the freshness lifetime (0 while fresh).
    pub fn staleness(&self) -> u64 {
        self.age.saturating_sub(self.ttl_secs)
    }

    fn within(&self, window: u64) -> bool {
        window > 0 && self.staleness() <= window
    }
}

/// The policy switches the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanPolicy {
    /// Honour the client's request directives (`max-age`, `no-cache`, `no-store`, …); otherwise only
    /// `only-if-cached` and `max-stale` are read.
    pub honor_client: bool,
}

/// What the pipeline does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Serve the stored version as it is.
    ServeFresh,
    /// Serve the stored version stale; with `WhileRevalidate`, also revalidate it once in the background.
    ServeStale(StaleReason),
    /// Send one conditional request upstream (shared by every waiter): a 304 refreshes and serves the stored
    /// version, a new answer replaces it. When the upstream fails and `stale_if_error` holds, serve it stale.
    Revalidate { fwd: Fwd, stale_if_error: bool },
    /// Fetch from upstream and store (coalesced). When the upstream fails and `stale_if_error` holds, the stored
    /// (unvalidatable) version answers stale.
    Fill { fwd: Fwd, stale_if_error: bool },
    /// Forward without storing; `detail` says why.
    Pass { fwd: Fwd, detail: &'static str },
    /// `only-if-cached` and nothing usable is stored: 504 without going upstream (§5.2.1.7).
    NotCached,
}

/// Decides what to do with a request. `stored` is the version the lookup found (`None` on a miss, when
/// `miss_fwd` says why); `pass_mark` is the reason the URL is marked hit-for-pass, when it is.
pub fn plan(
    stored: Option<&StoredState>,
    miss_fwd: Fwd,
    request: &CacheControl,
    policy: PlanPolicy,
    pass_mark: Option<&'static str>,
) -> Plan {
    let honor = policy.honor_client;
    let Some(stored) = stored else {
        if request.only_if_cached {
            return Plan::NotCached;
        }
        if let Some(detail) = pass_mark.filter(|_| miss_fwd == Fwd::UriMiss) {
            return Plan::Pass {
                fwd: miss_fwd,
                detail,
            };
        }
        return fill_or_pass(miss_fwd, request, honor, false);
    };
    let fresh = stored.is_fresh();
    // §5.2.1.1 max-age, §5.2.1.3 min-fresh, §5.2.1.4 no-cache: the client asks for a fresher answer.
    let forced = honor && !fresh_enough(request, stored.age, stored.ttl_secs);
    if fresh && (!forced || request.only_if_cached) {
        return Plan::ServeFresh;
    }
    // §5.2.1.2 max-stale (never for must-revalidate and the like, §4.2.4).
    if !fresh && client_accepts_stale(request, stored.staleness(), stored.no_stale) {
        return Plan::ServeStale(StaleReason::MaxStale);
    }
    if request.only_if_cached {
        return Plan::NotCached;
    }
    let fwd = if fresh { Fwd::Request } else { Fwd::Stale };
    let stale_if_error = !stored.no_stale && stored.within(stored.stale_if_error_secs);
    if !fresh
        && !forced
        && !stored.no_stale
        && stored.has_validator
        && stored.within(stored.stale_while_revalidate_secs)
    {
        return Plan::ServeStale(StaleReason::WhileRevalidate);
    }
    if stored.has_validator {
        // §4.3.1: a stored response with a validator is revalidated, not fetched again.
        return Plan::Revalidate {
            fwd,
            stale_if_error,
        };
    }
    fill_or_pass(fwd, request, honor, stale_if_error)
}

fn fill_or_pass(fwd: Fwd, request: &CacheControl, honor: bool, stale_if_error: bool) -> Plan {
    if honor && request.no_store {
        // §5.2.1.5: the response to this request must not be stored.
        return Plan::Pass {
            fwd: Fwd::Request,
            detail: "no-store",
        };
    }
    Plan::Fill {
        fwd,
        stale_if_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HONOR: PlanPolicy = PlanPolicy { honor_client: true };
    const IGNORE: PlanPolicy = PlanPolicy {
        honor_client: false,
    };

    fn stored(age: u64, ttl: u64) -> StoredState {
        StoredState {
            age,
            ttl_secs: ttl,
            has_validator: true,
            no_stale: false,
            stale_while_revalidate_secs: 0,
            stale_if_error_secs: 0,
        }
    }

    fn cc(value: &str) -> CacheControl {
        CacheControl::parse(value)
    }

    fn fill(fwd: Fwd) -> Plan {
        Plan::Fill {
            fwd,
            stale_if_error: false,
        }
    }

    fn revalidate(fwd: Fwd) -> Plan {
        Plan::Revalidate {
            fwd,
            stale_if_error: false,
        }
    }

    #[test]
    fn rfc_9111_rows() {
        let no_validator = StoredState {
            has_validator: false,
            ..stored(20, 10)
        };
        let must_revalidate = StoredState {
            no_stale: true,
            stale_if_error_secs: 60,
            stale_while_revalidate_secs: 60,
            ..stored(20, 10)
        };
        #[rustfmt::skip]
        let table: Vec<(&str, Option<StoredState>, &str, PlanPolicy, Plan)> = vec![
            ("§4: nothing stored: fill", None, "", HONOR, fill(Fwd::UriMiss)),
            ("§4: another variant stored: fill", None, "", HONOR, fill(Fwd::VaryMiss)),
            ("§4.2: fresh: serve", Some(stored(5, 10)), "", HONOR, Plan::ServeFresh),
            ("§4.2: age == lifetime is stale", Some(stored(10, 10)), "", HONOR, revalidate(Fwd::Stale)),
            ("§4.3.1: stale with a validator: revalidate", Some(stored(20, 10)), "", HONOR, revalidate(Fwd::Stale)),
            ("§4.3.1: stale without a validator: fetch again", Some(no_validator), "", HONOR, fill(Fwd::Stale)),
            ("§5.2.1.1: max-age above the age: serve", Some(stored(5, 10)), "max-age=6", HONOR, Plan::ServeFresh),
            ("§5.2.1.1: max-age at the age: revalidate", Some(stored(5, 10)), "max-age=5", HONOR, revalidate(Fwd::Request)),
            ("§5.2.1.1: max-age=0: revalidate", Some(stored(0, 10)), "max-age=0", HONOR, revalidate(Fwd::Request)),
            ("§5.2.1.3: min-fresh satisfied: serve", Some(stored(5, 10)), "min-fresh=5", HONOR, Plan::ServeFresh),
            ("§5.2.1.3: min-fresh not satisfied: revalidate", Some(stored(5, 10)), "min-fresh=6", HONOR, revalidate(Fwd::Request)),
            ("§5.2.1.4: no-cache: revalidate", Some(stored(5, 10)), "no-cache", HONOR, revalidate(Fwd::Request)),
            ("§5.2.1.4: no-cache ignored by policy: serve", Some(stored(5, 10)), "no-cache", IGNORE, Plan::ServeFresh),
            ("§5.2.1.2: max-stale covers it: serve stale", Some(stored(20, 10)), "max-stale=10", HONOR, Plan::ServeStale(StaleReason::MaxStale)),
            ("§5.2.1.2: bare max-stale: serve stale", Some(stored(2000, 10)), "max-stale", HONOR, Plan::ServeStale(StaleReason::MaxStale)),
            ("§5.2.1.2: max-stale too short: revalidate", Some(stored(20, 10)), "max-stale=9", HONOR, revalidate(Fwd::Stale)),
            ("§4.2.4: must-revalidate beats max-stale", Some(must_revalidate), "max-stale", HONOR, revalidate(Fwd::Stale)),
            ("§5.2.1.7: only-if-cached, fresh: serve", Some(stored(5, 10)), "only-if-cached", HONOR, Plan::ServeFresh),
            ("§5.2.1.7: only-if-cached beats no-cache when fresh", Some(stored(5, 10)), "only-if-cached, no-cache", HONOR, Plan::ServeFresh),
            ("§5.2.1.7: only-if-cached, stale: 504", Some(stored(20, 10)), "only-if-cached", HONOR, Plan::NotCached),
            ("§5.2.1.7: only-if-cached, nothing stored: 504", None, "only-if-cached", HONOR, Plan::NotCached),
            ("§5.2.1.7: only-if-cached with max-stale: serve stale", Some(stored(20, 10)), "only-if-cached, max-stale", HONOR, Plan::ServeStale(StaleReason::MaxStale)),
            ("§5.2.1.5: no-store, nothing stored: pass", None, "no-store", HONOR, Plan::Pass { fwd: Fwd::Request, detail: "no-store" }),
            ("§5.2.1.5: no-store ignored by policy: fill", None, "no-store", IGNORE, fill(Fwd::UriMiss)),
            ("§5.2.1.5: no-store, fresh copy: serve", Some(stored(5, 10)), "no-store", HONOR, Plan::ServeFresh),
            ("§5.2.1.5: no-store, stale without validator: pass", Some(no_validator), "no-store", HONOR, Plan::Pass { fwd: Fwd::Request, detail: "no-store" }),
        ];
        for (row, state, request, policy, want) in table {
            let miss_fwd = if row.contains("variant") {
                Fwd::VaryMiss
            } else {
                Fwd::UriMiss
            };
            let got = plan(state.as_ref(), miss_fwd, &cc(request), policy, None);
            assert_eq!(got, want, "{row}");
        }
    }

    #[test]
    fn rfc_5861_rows() {
        let swr = |age, window| StoredState {
            stale_while_revalidate_secs: window,
            ..stored(age, 10)
        };
        let sie = |age, window, validator| StoredState {
            stale_if_error_secs: window,
            has_validator: validator,
            ..stored(age, 10)
        };
        #[rustfmt::skip]
        let table: Vec<(&str, StoredState, &str, Plan)> = vec![
            ("§3: within stale-while-revalidate: serve stale, revalidate behind", swr(15, 10), "", Plan::ServeStale(StaleReason::WhileRevalidate)),
            ("§3: at the window's end: still within", swr(20, 10), "", Plan::ServeStale(StaleReason::WhileRevalidate)),
            ("§3: past the window: revalidate", swr(21, 10), "", revalidate(Fwd::Stale)),
            ("§3: the client's no-cache forbids it", swr(15, 10), "no-cache", revalidate(Fwd::Stale)),
            ("§3: no validator: no background revalidation", StoredState { has_validator: false, ..swr(15, 10) }, "", fill(Fwd::Stale)),
            ("§4: within stale-if-error: revalidate, stale on error", sie(15, 10, true), "", Plan::Revalidate { fwd: Fwd::Stale, stale_if_error: true }),
            ("§4: without a validator: fill, stale on error", sie(15, 10, false), "", Plan::Fill { fwd: Fwd::Stale, stale_if_error: true }),
            ("§4: past the window: no stale fallback", sie(21, 10, true), "", revalidate(Fwd::Stale)),
            ("§4: must-revalidate forbids it", StoredState { no_stale: true, ..sie(15, 10, true) }, "", revalidate(Fwd::Stale)),
        ];
        for (row, state, request, want) in table {
            assert_eq!(
                plan(Some(&state), Fwd::UriMiss, &cc(request), HONOR, None),
                want,
                "{row}"
            );
        }
    }

    #[test]
    fn pass_marks_apply_only_to_misses_of_the_url() {
        let marked = Some("no-store");
        let pass = Plan::Pass {
            fwd: Fwd::UriMiss,
            detail: "no-store",
        };
        assert_eq!(
            plan(None, Fwd::UriMiss, &cc(""), HONOR, marked),
            pass,
            "a URL marked hit-for-pass goes straight upstream"
        );
        assert_eq!(
            plan(None, Fwd::VaryMiss, &cc(""), HONOR, marked),
            fill(Fwd::VaryMiss),
            "a variant miss is not the URL's mark"
        );
        assert_eq!(
            plan(Some(&stored(5, 10)), Fwd::UriMiss, &cc(""), HONOR, marked),
            Plan::ServeFresh,
            "a stored version outranks the mark"
        );
        assert_eq!(
            plan(None, Fwd::UriMiss, &cc("only-if-cached"), HONOR, marked),
            Plan::NotCached
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn state() -> impl Strategy<Value = StoredState> {
            (
                0u64..100,
                0u64..100,
                any::<bool>(),
                any::<bool>(),
                0u64..50,
                0u64..50,
            )
                .prop_map(|(age, ttl, has_validator, no_stale, swr, sie)| {
                    StoredState {
                        age,
                        ttl_secs: ttl,
                        has_validator,
                        no_stale,
                        stale_while_revalidate_secs: swr,
                        stale_if_error_secs: sie,
                    }
                })
        }

        fn directives() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("no-cache".to_string()),
                    Just("no-store".to_string()),
                    Just("only-if-cached".to_string()),
                    Just("max-stale".to_string()),
                    (0u64..60).prop_map(|n| format!("max-age={n}")),
                    (0u64..60).prop_map(|n| format!("max-stale={n}")),
                    (0u64..60).prop_map(|n| format!("min-fresh={n}")),
                ],
                0..4,
            )
            .prop_map(|d| d.join(", "))
        }

        proptest! {
            /// What the plan may never do, whatever it is given.
            #[test]
            fn the_plan_keeps_its_promises(
                stored in proptest::option::of(state()),
                request in directives(),
                honor in any::<bool>(),
                marked in any::<bool>(),
            ) {
                let cc = CacheControl::parse(&request);
                let policy = PlanPolicy { honor_client: honor };
                let mark = marked.then_some("no-store");
                let decided = plan(stored.as_ref(), Fwd::UriMiss, &cc, policy, mark);
                match (&stored, decided) {
                    (None, Plan::ServeFresh | Plan::ServeStale(_) | Plan::Revalidate { .. }) => {
                        prop_assert!(false, "{decided:?} with nothing stored");
                    }
                    (Some(s), Plan::ServeFresh) => prop_assert!(s.is_fresh(), "served a stale copy as fresh"),
                    (Some(s), Plan::ServeStale(_)) => {
                        prop_assert!(!s.no_stale, "served stale what forbids it");
                        prop_assert!(!s.is_fresh());
                    }
                    (Some(s), Plan::Revalidate { .. }) => prop_assert!(s.has_validator),
                    (_, Plan::Fill { stale_if_error: true, .. }) => {
                        prop_assert!(stored.as_ref().is_some_and(|s| !s.no_stale));
                    }
                    _ => {}
                }
                if decided == Plan::NotCached {
                    prop_assert!(cc.only_if_cached, "504 without only-if-cached");
                }
                if cc.only_if_cached {
                    let upstream = matches!(decided, Plan::Fill { .. } | Plan::Revalidate { .. } | Plan::Pass { .. });
                    prop_assert!(!upstream, "only-if-cached went upstream: {decided:?}");
                }
            }
        }
    }
}
