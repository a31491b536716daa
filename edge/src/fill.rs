//! Proactive fill, the pure parts: the quiet hours it runs in and the plan it follows. Each night the edge asks
//! the control plane (`GET <control.url>/v1/edges/<name>/fill-plan?budget_bytes=N`) which titles it should
//! hold — the most played first, whole titles within its budget — and fills their files through its cache at a
//! bounded rate while the quiet hours last, as Open Connect's appliances are filled before the evening's
//! viewers ask. The I/O (the plan's request, pacing, the fills) is `pipeline::fill`; no clock is read here.

use std::time::Duration;

use serde::Deserialize;

/// Seconds in a day.
const DAY_SECS: u32 = 24 * 3600;
/// Files a plan may list (the control plane lists 200,000 at most).
pub const MAX_PLAN_OBJECTS: usize = 500_000;

/// A daily window in UTC, from `start` (inclusive) to `end` (exclusive), in seconds of the day; it passes
/// midnight when `end <= start` (`22:00-04:00`). `00:00-24:00` is the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start: u32,
    end: u32,
}

impl QuietHours {
    /// Reads `HH:MM-HH:MM` (24-hour, UTC; `24:00` only as an end).
    pub fn parse(text: &str) -> Result<QuietHours, String> {
        let shape = || format!("`{text}` is not HH:MM-HH:MM (24-hour UTC, e.g. 02:00-06:00)");
        let (start, end) = text.trim().split_once('-').ok_or_else(shape)?;
        let minute_of_day = |part: &str, may_be_24: bool| -> Option<u32> {
            let (hours, minutes) = part.trim().split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
            match (hours, minutes) {
                (24, 0) if may_be_24 => Some(DAY_SECS),
                (0..=23, 0..=59) => Some(hours * 3600 + minutes * 60),
                _ => None,
            }
        };
        let start = minute_of_day(start, false).ok_or_else(shape)?;
        let end = minute_of_day(end, true).ok_or_else(shape)?;
        if start == end {
            return Err(format!(
                "`{text}` is an empty window (00:00-24:00 is the whole day)"
            ));
        }
        Ok(QuietHours { start, end })
    }

    /// Whether the window holds this moment (Unix seconds).
    pub fn contains(&self, unix_secs: u64) -> bool {
        let now = (unix_secs % u64::from(DAY_SECS)) as u32;
        if self.start < self.end {
            (self.start..self.end).contains(&now)
        } else {
            now >= self.start || now < self.end
        }
    }

    /// How long until the window next opens (zero while it is open).
    pub fn until_open(&self, unix_secs: u64) -> Duration {
        if self.contains(unix_secs) {
            return Duration::ZERO;
        }
        let now = (unix_secs % u64::from(DAY_SECS)) as u32;
        let wait = (self.start + DAY_SECS - now) % DAY_SECS;
        Duration::from_secs(u64::from(wait))
    }

    /// How long until the window closes (zero while it is closed; a whole-day window never closes: a day).
    pub fn until_close(&self, unix_secs: u64) -> Duration {
        if !self.contains(unix_secs) {
            return Duration::ZERO;
        }
        if self.start == 0 && self.end == DAY_SECS {
            return Duration::from_secs(u64::from(DAY_SECS));
        }
        let now = (unix_secs % u64::from(DAY_SECS)) as u32;
        let end = self.end % DAY_SECS;
        let wait = (end + DAY_SECS - now) % DAY_SECS;
        Duration::from_secs(u64::from(wait))
    }
}

/// The control plane's answer: the files to hold, most popular titles first.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Plan {
    pub objects: Vec<PlannedObject>,
    #[serde(default)]
    pub titles: Vec<PlannedTitle>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PlannedObject {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PlannedTitle {
    pub slug: String,
}

impl Plan {
    /// Reads and checks a plan: every path canonical (as a request for it would be spelled after the edge's
    /// own checks: no `..`, no encoded slash, no query), no more than [`MAX_PLAN_OBJECTS`] files, and their
    /// bytes within `budget` (a plan that asks more than the edge offered is refused whole).
    pub fn read(body: &[u8], budget: u64) -> Result<Plan, String> {
        let plan: Plan =
            serde_json::from_slice(body).map_err(|e| format!("not a fill plan: {e}"))?;
        if plan.objects.len() > MAX_PLAN_OBJECTS {
            return Err(format!(
                "{} files, more than {MAX_PLAN_OBJECTS}",
                plan.objects.len()
            ));
        }
        let mut total: u64 = 0;
        for object in &plan.objects {
            match shared::path::canonical_path(&object.path) {
                Ok(canonical) if canonical == object.path && !canonical.contains(['?', '#']) => {}
                _ => return Err(format!("`{}` is not a canonical path", object.path)),
            }
            total = total.saturating_add(object.bytes);
        }
        if total > budget {
            return Err(format!(
                "its files take {total} bytes, more than the {budget} asked for"
            ));
        }
        Ok(plan)
    }

    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    #[test]
    fn quiet_hours_read_and_refused() {
        assert_eq!(
            QuietHours::parse("02:00-06:30"),
            Ok(QuietHours {
                start: 2 * 3600,
                end: 6 * 3600 + 1800
            })
        );
        assert_eq!(
            QuietHours::parse(" 00:00-24:00 "),
            Ok(QuietHours {
                start: 0,
                end: DAY_SECS
            })
        );
        for bad in [
            "",
            "02:00",
            "2:00-06:00",
            "02:00-6:00",
            "24:00-02:00",
            "02:60-03:00",
            "02:00-24:01",
            "02:00-02:00",
            "aa:bb-cc:dd",
            "02:00-06:00-07:00",
        ] {
            assert!(QuietHours::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inside_and_outside_a_window_and_one_past_midnight() {
        let day = 20_000 * 24 * H; // a midnight, UTC
        let night = QuietHours::parse("02:00-06:00").unwrap();
        let table = [
            (0, false, 2 * H, 0),
            (2 * H - 1, false, 1, 0),
            (2 * H, true, 0, 4 * H),
            (5 * H + 59 * 60, true, 0, 60),
            (6 * H, false, 20 * H, 0),
            (23 * H, false, 3 * H, 0),
        ];
        for (at, open, until_open, until_close) in table {
            assert_eq!(night.contains(day + at), open, "{at}");
            assert_eq!(night.until_open(day + at).as_secs(), until_open, "{at}");
            assert_eq!(night.until_close(day + at).as_secs(), until_close, "{at}");
        }
        let late = QuietHours::parse("22:00-04:00").unwrap();
        let table = [
            (21 * H, false, H, 0),
            (22 * H, true, 0, 6 * H),
            (0, true, 0, 4 * H),
            (4 * H - 1, true, 0, 1),
            (4 * H, false, 18 * H, 0),
        ];
        for (at, open, until_open, until_close) in table {
            assert_eq!(late.contains(day + at), open, "{at}");
            assert_eq!(late.until_open(day + at).as_secs(), until_open, "{at}");
            assert_eq!(late.until_close(day + at).as_secs(), until_close, "{at}");
        }
        let always = QuietHours::parse("00:00-24:00").unwrap();
        for at in [0, 12 * H, 24 * H - 1] {
            assert!(always.contains(day + at));
            assert_eq!(always.until_close(day + at).as_secs(), 24 * H);
        }
        let to_midnight = QuietHours::parse("20:00-24:00").unwrap();
        assert!(to_midnight.contains(day + 23 * H));
        assert!(!to_midnight.contains(day));
        assert_eq!(to_midnight.until_close(day + 23 * H).as_secs(), H);
    }

    proptest::proptest! {
        /// Any window, any moment: open exactly when there is nothing to wait for; waiting until it opens
        /// finds it open, and waiting until it closes finds it closed (a whole-day window never closes).
        #[test]
        fn windows_open_and_close_where_they_say(
            start in 0u32..24 * 60,
            end in 1u32..=24 * 60,
            at in 0u64..4_000_000_000,
        ) {
            proptest::prop_assume!(start != end);
            let text = format!("{:02}:{:02}-{:02}:{:02}", start / 60, start % 60, end / 60, end % 60);
            let window = QuietHours::parse(&text).unwrap();
            let open = window.contains(at);
            let until_open = window.until_open(at).as_secs();
            let until_close = window.until_close(at).as_secs();
            proptest::prop_assert_eq!(open, until_open == 0);
            proptest::prop_assert_eq!(open, until_close > 0);
            proptest::prop_assert!(until_open < u64::from(DAY_SECS));
            proptest::prop_assert!(window.contains(at + until_open));
            if open && (start, end) != (0, 24 * 60) {
                proptest::prop_assert!(!window.contains(at + until_close));
                proptest::prop_assert!(window.contains(at + until_close - 1));
            }
        }
    }

    #[test]
    fn a_plan_is_read_only_when_every_path_is_canonical_and_it_fits() {
        let plan = |paths: &[(&str, u64)]| {
            let objects: Vec<_> = paths
                .iter()
                .map(|(path, bytes)| serde_json::json!({"path": path, "bytes": bytes}))
                .collect();
            serde_json::to_vec(&serde_json::json!({"objects": objects, "titles": [{"slug": "a"}]}))
                .unwrap()
        };
        let good = Plan::read(
            &plan(&[("/titles/a/master.m3u8", 10), ("/titles/a/v0/1.m4s", 90)]),
            100,
        )
        .unwrap();
        assert_eq!(good.objects.len(), 2);
        assert_eq!(good.bytes(), 100);
        assert_eq!(good.titles[0].slug, "a");
        assert!(Plan::read(&plan(&[("/a", 101)]), 100).is_err());
        assert!(Plan::read(&plan(&[("/a", u64::MAX), ("/b", 2)]), u64::MAX - 1).is_err());
        for bad in [
            "titles/a",
            "/titles/../etc/passwd",
            "/titles/a%2Fb",
            "/titles/a?x=1",
            "/titles/a#b",
            "/titles//a",
            "/titles/%61",
            "/",
        ] {
            assert!(Plan::read(&plan(&[(bad, 1)]), 100).is_err(), "{bad}");
        }
        assert!(Plan::read(b"{}", 100).is_err());
        assert!(Plan::read(b"not json", 100).is_err());
    }
}
