//! Events in: what players and edges tell the control plane about playback, checked and put on the bus.
//!
//! - `POST /v1/events`: a batch `{"events": [...]}` of player events (`start`, `heartbeat`, `seek`, `stall`,
//!   `bitrate_switch`, `error`, `end`), each with a client-made `id` (unique within its session: delivery may
//!   repeat an event, processing counts it once), its `session` (CMCD `sid`), `title` (CMCD `cid`, a catalog
//!   slug), `ts` (the client's clock, ms since the Unix epoch), the fields of its kind, the CMCD (CTA-5004) keys
//!   that apply (`br`, `bl`, `bs`, `su`, `d`, `ot`, `tb`, `mtp`), the `edge` that served it and the viewer's
//!   `region`. Each event becomes one record of the playback topic, keyed by title, with what the server adds:
//!   when it received it, the client's address, the edge's name and region as the fleet knows them and the
//!   viewer's region ([`PlaybackRecord`]).
//! - `POST /v1/edges/<name>/stats`: an edge's per-title summary (requests by cache status, bytes, errors, TTFB
//!   percentiles) over its last interval; one record per title on the edge-stats topic ([`EdgeStatsRecord`]).
//!
//! A batch is all or nothing: one event that does not hold refuses the batch with 400 and a reason naming the
//! event and the field (`events[3].br: must be a non-negative integer`), unknown fields included; a body past
//! 256 KiB or more than 500 events is 413 (split the batch); no bus, or one that fails, is 503 (send again
//! later: the ids make that harmless). Any content type is read as JSON, so `navigator.sendBeacon` works.
//! The checking is pure ([`parse_batch`], [`parse_edge_stats`]); `accept` and `accept_edge_stats` are the I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::bus::{TOPIC_EDGE_STATS, TOPIC_PLAYBACK, now_ms};
use crate::control::api::{ApiError, ApiService};
use crate::control::fleet::is_name;

/// Largest body of either route; past it the answer is 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a body has to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most events in one batch; past it the answer is 413.
pub const MAX_EVENTS: usize = 500;
/// Most titles in one edge summary.
pub const MAX_STATS_TITLES: usize = 1000;
/// Longest event id, session id (CMCD `sid`'s limit), error code and edge URL; longest title slug; longest
/// error message (in characters).
pub const MAX_ID_CHARS: usize = 64;
pub const MAX_SESSION_CHARS: usize = 64;
pub const MAX_CODE_CHARS: usize = 64;
pub const MAX_EDGE_CHARS: usize = 256;
pub const MAX_TITLE_CHARS: usize = 128;
pub const MAX_MESSAGE_CHARS: usize = 512;
/// The largest integer accepted anywhere (JSON's safe integer, 2^53 - 1): sums of them cannot overflow a u64
/// for a long while, and every JSON client reads them exactly.
pub const MAX_INTEGER: u64 = (1 << 53) - 1;
/// Longest edge summary interval, in seconds.
pub const MAX_INTERVAL_SECS: u64 = 3600;

/// CTA-5004 object types (`ot`): manifest, audio, video, muxed, init, caption, timed text, key, other.
pub const OBJECT_TYPES: [&str; 9] = ["m", "a", "v", "av", "i", "c", "tt", "k", "o"];
/// The edge's cache statuses (its `CacheStatus::label`), the keys of an edge summary's `requests`.
pub const CACHE_STATUSES: [&str; 9] = [
    "hit",
    "revalidated",
    "stale",
    "miss",
    "coalesced",
    "pass",
    "not_cached",
    "local",
    "error",
];

/// A player event as checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerEvent {
    /// 1 to 64 of `A-Z a-z 0-9 _ -`, unique within the session.
    pub id: String,
    /// CMCD `sid`: 1 to 64 visible ASCII characters (a UUID, typically).
    pub session: String,
    /// CMCD `cid`: a catalog slug (lower-case letters, digits, `-`), up to 128.
    pub title: String,
    /// The client's clock when it happened, ms since the Unix epoch (not trusted for ordering).
    pub ts: u64,
    #[serde(flatten)]
    pub detail: EventDetail,
    #[serde(flatten)]
    pub cmcd: Cmcd,
    /// The edge that served the session: its name, or its `host[:port]` (as a browser's `URL.host` gives it)
    /// from a URL or as given; of a URL only the host and port are kept (a segment's signed token is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
    /// The viewer's region as the player knows it (an edge or region name's letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// What happened, with the fields of its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventDetail {
    /// The first frame showed, `startup_ms` after the viewer asked to play.
    Start { startup_ms: u64 },
    /// Progress, every few seconds of playing: `played_ms` is the time played in this session so far (it only
    /// grows; a smaller one than seen before is a late heartbeat), `position_ms` the playhead. Without
    /// `played_ms`, the playhead's progress since the previous heartbeat or seek stands for it.
    Heartbeat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        played_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position_ms: Option<u64>,
    },
    /// The viewer moved the playhead to `position_ms`.
    Seek { position_ms: u64 },
    /// Playback stopped for lack of data for `duration_ms` (after startup: a rebuffer).
    Stall { duration_ms: u64 },
    /// The player changed renditions.
    BitrateSwitch { from_kbps: u64, to_kbps: u64 },
    /// A player error: its code (the player's, as text) and an optional message.
    Error {
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The session ended, after `watched_ms` of playing.
    End { reason: EndReason, watched_ms: u64 },
}

impl EventDetail {
    /// The kind's name, as in the JSON and the `kind` label.
    pub fn kind(&self) -> &'static str {
        match self {
            EventDetail::Start { .. } => "start",
            EventDetail::Heartbeat { .. } => "heartbeat",
            EventDetail::Seek { .. } => "seek",
            EventDetail::Stall { .. } => "stall",
            EventDetail::BitrateSwitch { .. } => "bitrate_switch",
            EventDetail::Error { .. } => "error",
            EventDetail::End { .. } => "end",
        }
    }
}

/// Every kind, in the order of the docs.
pub const KINDS: [&str; 7] = [
    "start",
    "heartbeat",
    "seek",
    "stall",
    "bitrate_switch",
    "error",
    "end",
];

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Played to the end.
    Completed,
    /// The viewer left before the end.
    Abandoned,
    /// An error stopped it.
    Error,
}

/// The CMCD (CTA-5004) keys a player may add to any event, with the spec's types and units.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cmcd {
    /// Encoded bitrate of the object (rendition) playing, kbps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub br: Option<u64>,
    /// Buffer length, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bl: Option<u64>,
    /// Buffer starvation since the last request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bs: Option<bool>,
    /// Startup: the object is needed to start (or restart after a rebuffer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub su: Option<bool>,
    /// Object duration, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<u64>,
    /// Object type, one of [`OBJECT_TYPES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ot: Option<String>,
    /// Top bitrate the player may choose, kbps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tb: Option<u64>,
    /// Measured throughput, kbps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtp: Option<u64>,
}

/// A player event as the playback topic holds it: the event and what the server adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaybackRecord {
    #[serde(flatten)]
    pub event: PlayerEvent,
    /// When the server received it, ms since the Unix epoch (the clock processing goes by).
    pub received_ms: i64,
    /// The client's address, as the API's connection saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The serving edge's name: the fleet's when the edge is registered, else one made from its URL's host and
    /// port (as `playback.edges` names them), else the name the player gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_name: Option<String>,
    /// The serving edge's region, when the fleet knows the edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_region: Option<String>,
    /// The viewer's region: the event's `region`, else the steering table's for the client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_region: Option<String>,
}

/// An edge's summary of one title over its last interval, as it sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TitleStats {
    pub title: String,
    /// Requests by cache status (keys among [`CACHE_STATUSES`]).
    pub requests: BTreeMap<String, u64>,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Responses that were errors (5xx, or cut short).
    pub errors: u64,
    /// Time to first byte percentiles, ms; absent when there was no request to measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<Percentiles>,
    /// Requests whose CMCD said the player's buffer ran dry (`bs`), when any carried CMCD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalls: Option<u64>,
    /// Distinct CMCD sessions (`sid`) seen in the interval (an estimate), when any request carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
}

/// p50, p90 and p99 of a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// An edge summary as checked.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeStats {
    pub interval_secs: u64,
    pub titles: Vec<TitleStats>,
}

/// One title of an edge summary as the edge-stats topic holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeStatsRecord {
    /// The edge's name (from the URL it posted to).
    pub edge: String,
    /// Its region, when the fleet knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_region: Option<String>,
    pub received_ms: i64,
    pub interval_secs: u64,
    #[serde(flatten)]
    pub stats: TitleStats,
}

/// Why a body is refused: the status (400 or 413), the machine-readable error and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: &'static str,
    pub reason: String,
}

impl Refusal {
    fn bad(reason: String) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason,
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::bad(reason)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError(r.status, r.error, r.reason)
    }
}

/// Checks a `POST /v1/events` body.
pub fn parse_batch(body: &[u8]) -> Result<Vec<PlayerEvent>, Refusal> {
    let events = top_level_array(
        body,
        "events",
        r#"{"events": [{"id": "…", "kind": "start", …}]}"#,
    )?;
    if events.len() > MAX_EVENTS {
        return Err(Refusal {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "too_many_events",
            reason: format!(
                "events: {} events, a batch holds {MAX_EVENTS} at most: split it",
                events.len()
            ),
        });
    }
    if events.is_empty() {
        return Err(Refusal::bad("events: must hold at least one event".into()));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| parse_event(&format!("events[{i}]"), event).map_err(Refusal::bad))
        .collect()
}

/// Checks a `POST /v1/edges/<name>/stats` body.
pub fn parse_edge_stats(body: &[u8]) -> Result<EdgeStats, Refusal> {
    let example = r#"{"interval_secs": 10, "titles": [{"title": "…", "requests": {"hit": 1}, "bytes": 0, "errors": 0}]}"#;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::bad(format!("the body is not JSON ({e}); send {example}")))?;
    let Value::Object(map) = value else {
        return Err(Refusal::bad(format!(
            "the body must be an object: {example}"
        )));
    };
    let mut fields = Fields::new("", map);
    let interval_secs = fields.required("interval_secs", |v| {
        let n = integer(v)?;
        if n == 0 || n > MAX_INTERVAL_SECS {
            return Err(format!("must be 1 to {MAX_INTERVAL_SECS} seconds"));
        }
        Ok(n)
    })?;
    let titles = fields.required("titles", |v| match v {
        Value::Array(a) if a.len() <= MAX_STATS_TITLES => Ok(a.clone()),
        Value::Array(a) => Err(format!(
            "{} titles, a summary holds {MAX_STATS_TITLES} at most",
            a.len()
        )),
        _ => Err("must be an array".into()),
    })?;
    fields.finish("an edge summary")?;
    let titles = titles
        .into_iter()
        .enumerate()
        .map(|(i, t)| parse_title_stats(&format!("titles[{i}]"), t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Refusal::bad)?;
    Ok(EdgeStats {
        interval_secs,
        titles,
    })
}

/// The body's `{"<name>": [...]}`, refusing other fields.
fn top_level_array(body: &[u8], name: &str, example: &str) -> Result<Vec<Value>, Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::bad(format!("the body is not JSON ({e}); send {example}")))?;
    let Value::Object(mut map) = value else {
        return Err(Refusal::bad(format!(
            "the body must be an object: {example}"
        )));
    };
    let array = match map.remove(name) {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(Refusal::bad(format!("{name}: must be an array"))),
        None => return Err(Refusal::bad(format!("{name}: missing; send {example}"))),
    };
    if let Some(other) = map.keys().next() {
        return Err(Refusal::bad(format!(
            "{}: unknown field (the body is {example})",
            shown(other)
        )));
    }
    Ok(array)
}

fn parse_event(path: &str, value: Value) -> Result<PlayerEvent, String> {
    let Value::Object(map) = value else {
        return Err(format!("{path}: must be an object"));
    };
    let mut f = Fields::new(path, map);
    let kind = f.required("kind", |v| {
        KINDS
            .iter()
            .find(|k| v.as_str() == Some(**k))
            .copied()
            .ok_or_else(|| format!("must be one of {}", KINDS.join(", ")))
    })?;
    let id = f.required("id", |v| {
        let s = text(v, 1, MAX_ID_CHARS)?;
        if s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(s)
        } else {
            Err(format!(
                "must be 1 to {MAX_ID_CHARS} of letters, digits, `_` and `-`"
            ))
        }
    })?;
    let session = f.required("session", |v| {
        let s = text(v, 1, MAX_SESSION_CHARS)?;
        if s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(s)
        } else {
            Err(format!(
                "must be 1 to {MAX_SESSION_CHARS} visible ASCII characters (CMCD sid)"
            ))
        }
    })?;
    let title = f.required("title", slug)?;
    let ts = f.required("ts", integer)?;
    let detail = match kind {
        "start" => EventDetail::Start {
            startup_ms: f.required("startup_ms", integer)?,
        },
        "heartbeat" => EventDetail::Heartbeat {
            played_ms: f.optional("played_ms", integer)?,
            position_ms: f.optional("position_ms", integer)?,
        },
        "seek" => EventDetail::Seek {
            position_ms: f.required("position_ms", integer)?,
        },
        "stall" => EventDetail::Stall {
            duration_ms: f.required("duration_ms", integer)?,
        },
        "bitrate_switch" => EventDetail::BitrateSwitch {
            from_kbps: f.required("from_kbps", integer)?,
            to_kbps: f.required("to_kbps", integer)?,
        },
        "error" => EventDetail::Error {
            code: f.required("code", |v| match v {
                Value::Number(_) => integer(v).map(|n| n.to_string()),
                _ => {
                    let s = text(v, 1, MAX_CODE_CHARS)?;
                    if s.bytes().all(|b| b.is_ascii_graphic()) {
                        Ok(s)
                    } else {
                        Err(format!(
                            "must be a non-negative integer or 1 to {MAX_CODE_CHARS} visible ASCII characters"
                        ))
                    }
                }
            })?,
            message: f.optional("message", |v| {
                let s = text(v, 0, MAX_MESSAGE_CHARS)?;
                Ok(s.chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect())
            })?,
        },
        "end" => EventDetail::End {
            reason: f.required("reason", |v| match v.as_str() {
                Some("completed") => Ok(EndReason::Completed),
                Some("abandoned") => Ok(EndReason::Abandoned),
                Some("error") => Ok(EndReason::Error),
                _ => Err("must be one of completed, abandoned, error".into()),
            })?,
            watched_ms: f.required("watched_ms", integer)?,
        },
        other => return Err(format!("{path}.kind: `{other}` is not handled")),
    };
    let cmcd = Cmcd {
        br: f.optional("br", integer)?,
        bl: f.optional("bl", integer)?,
        bs: f.optional("bs", boolean)?,
        su: f.optional("su", boolean)?,
        d: f.optional("d", integer)?,
        ot: f.optional("ot", |v| match v.as_str() {
            Some(t) if OBJECT_TYPES.contains(&t) => Ok(t.to_string()),
            _ => Err(format!(
                "must be a CMCD object type: one of {}",
                OBJECT_TYPES.join(", ")
            )),
        })?,
        tb: f.optional("tb", integer)?,
        mtp: f.optional("mtp", integer)?,
    };
    let edge = f.optional("edge", edge)?;
    let region = f.optional("region", |v| {
        let s = text(v, 1, 64)?;
        if is_name(&s) {
            Ok(s)
        } else {
            Err("must be 1 to 64 letters, digits, `-`, `_` or `.`".into())
        }
    })?;
    f.finish(&format!("`{kind}` events"))?;
    Ok(PlayerEvent {
        id,
        session,
        title,
        ts,
        detail,
        cmcd,
        edge,
        region,
    })
}

fn parse_title_stats(path: &str, value: Value) -> Result<TitleStats, String> {
    let Value::Object(map) = value else {
        return Err(format!("{path}: must be an object"));
    };
    let mut f = Fields::new(path, map);
    let title = f.required("title", slug)?;
    let requests = f.required("requests", |v| Ok(v.clone()))?;
    let bytes = f.required("bytes", integer)?;
    let errors = f.required("errors", integer)?;
    let ttfb_ms = f.optional("ttfb_ms", |v| Ok(v.clone()))?;
    let stalls = f.optional("stalls", integer)?;
    let sessions = f.optional("sessions", integer)?;
    f.finish("a title's summary")?;
    Ok(TitleStats {
        title,
        requests: cache_counts(&format!("{path}.requests"), requests)?,
        bytes,
        errors,
        ttfb_ms: ttfb_ms
            .map(|v| percentiles(&format!("{path}.ttfb_ms"), v))
            .transpose()?,
        stalls,
        sessions,
    })
}

/// Requests by cache status: `{"hit": 1, "miss": 2}`.
fn cache_counts(path: &str, value: Value) -> Result<BTreeMap<String, u64>, String> {
    let Value::Object(counts) = value else {
        return Err(format!(
            r#"{path}: must be an object of counts by cache status, {{"hit": 1, "miss": 2}}"#
        ));
    };
    let mut out = BTreeMap::new();
    for (status, count) in counts {
        if !CACHE_STATUSES.contains(&status.as_str()) {
            return Err(format!(
                "{path}.{}: not a cache status (one of {})",
                shown(&status),
                CACHE_STATUSES.join(", ")
            ));
        }
        let count = integer(&count).map_err(|e| format!("{path}.{status}: {e}"))?;
        out.insert(status, count);
    }
    Ok(out)
}

/// `{"p50": ms, "p90": ms, "p99": ms}`, in order.
fn percentiles(path: &str, value: Value) -> Result<Percentiles, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            r#"{path}: must be {{"p50": ms, "p90": ms, "p99": ms}}"#
        ));
    };
    let ms = |v: &Value| match v.as_f64() {
        Some(x) if x.is_finite() && (0.0..=3_600_000.0).contains(&x) => Ok(x),
        _ => Err("must be a number of milliseconds, 0 to 3600000".to_string()),
    };
    let mut f = Fields::new(path, map);
    let out = Percentiles {
        p50: f.required("p50", ms)?,
        p90: f.required("p90", ms)?,
        p99: f.required("p99", ms)?,
    };
    f.finish("ttfb_ms")?;
    if !(out.p50 <= out.p90 && out.p90 <= out.p99) {
        return Err(format!("{path}: must have p50 ≤ p90 ≤ p99"));
    }
    Ok(out)
}

/// The fields of one JSON object, taken one by one, so what is left at the end is unknown.
struct Fields {
    path: String,
    map: Map<String, Value>,
}

impl Fields {
    fn new(path: &str, map: Map<String, Value>) -> Self {
        Fields {
            path: path.to_string(),
            map,
        }
    }

    fn name(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn required<T>(
        &mut self,
        field: &str,
        check: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<T, String> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Err(format!("{}: missing", self.name(field))),
            Some(v) => check(&v).map_err(|e| format!("{}: {e}", self.name(field))),
        }
    }

    /// Absent and `null` are the same.
    fn optional<T>(
        &mut self,
        field: &str,
        check: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => check(&v)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.name(field))),
        }
    }

    /// Refuses what was not taken.
    fn finish(self, what: &str) -> Result<(), String> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(field) => Err(format!(
                "{}: unknown field (not a field of {what})",
                self.name(&shown(field))
            )),
        }
    }
}

/// A non-negative integer up to [`MAX_INTEGER`] (CMCD's Integer).
fn integer(v: &Value) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n <= MAX_INTEGER => Ok(n),
        Some(_) => Err(format!("must be at most {MAX_INTEGER}")),
        None => Err("must be a non-negative integer".into()),
    }
}

/// `true` or `false` (CMCD's Boolean).
fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| "must be true or false".to_string())
}

/// A string of `min` to `max` characters.
fn text(v: &Value, min: usize, max: usize) -> Result<String, String> {
    let Some(s) = v.as_str() else {
        return Err("must be a string".into());
    };
    let chars = s.chars().count();
    if chars < min || chars > max {
        return Err(format!("must be {min} to {max} characters, not {chars}"));
    }
    Ok(s.to_string())
}

/// A catalog slug: lower-case letters, digits and `-`.
fn slug(v: &Value) -> Result<String, String> {
    let s = text(v, 1, MAX_TITLE_CHARS)?;
    if s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(s)
    } else {
        Err(format!(
            "must be a title's slug: 1 to {MAX_TITLE_CHARS} lower-case letters, digits and `-`"
        ))
    }
}

/// An edge: its name, an `http(s)` URL or `host[:port]`; kept as the name or as `host[:port]`.
fn edge(v: &Value) -> Result<String, String> {
    let s = text(v, 1, MAX_EDGE_CHARS)?;
    if is_name(&s) {
        return Ok(s);
    }
    let url = if s.contains("://") {
        url::Url::parse(&s)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
    } else {
        // A bare `host[:port]`: nothing but the authority.
        url::Url::parse(&format!("http://{s}/")).ok().filter(|u| {
            u.path() == "/"
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none()
        })
    };
    url.as_ref().and_then(authority).ok_or_else(|| {
        "must be the edge's URL (http or https), its host[:port] or its name (letters, digits, `-`, `_`, `.`)"
            .into()
    })
}

/// A URL's `host[:port]`, the port only when not the scheme's default (as a browser's `URL.host`).
fn authority(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// Up to 64 characters of a client's text, for a reason.
fn shown(text: &str) -> String {
    crate::control::api::shown(text)
}

/// A registered edge as the fleet knows it, for naming the edges events mention.
#[derive(Debug, Clone)]
pub struct KnownEdge {
    pub name: String,
    pub region: String,
    /// `host[:port]` of each of its URLs.
    pub hosts: Vec<String>,
}

/// The serving edge's name and region: the fleet's edge with that name or host, else a name made from the host
/// and port (`edge1.example:8443` → `edge1.example-8443`, as `playback.edges` are named), else the name as
/// given.
pub fn resolve_edge(edge: &str, known: &[KnownEdge]) -> (String, Option<String>) {
    if let Some(k) = known
        .iter()
        .find(|k| k.name == edge || k.hosts.iter().any(|h| h == edge))
    {
        return (
            k.name.clone(),
            Some(k.region.clone()).filter(|r| !r.is_empty()),
        );
    }
    if is_name(edge) {
        return (edge.to_string(), None);
    }
    (crate::control::playback::pathway_name(edge), None)
}

/// The playback records of a checked batch: (key = title, value = JSON).
pub fn playback_records(
    events: Vec<PlayerEvent>,
    received_ms: i64,
    client: Option<IpAddr>,
    known: &[KnownEdge],
    viewer_region: impl Fn(Option<&str>) -> Option<String>,
) -> Vec<(Bytes, Bytes)> {
    events
        .into_iter()
        .map(|event| {
            let (edge_name, edge_region) = match event.edge.as_deref() {
                Some(edge) => {
                    let (name, region) = resolve_edge(edge, known);
                    (Some(name), region)
                }
                None => (None, None),
            };
            let viewer_region = viewer_region(event.region.as_deref());
            let key = Bytes::from(event.title.clone());
            let record = PlaybackRecord {
                event,
                received_ms,
                client: client.map(|c| c.to_string()),
                edge_name,
                edge_region,
                viewer_region,
            };
            (
                key,
                Bytes::from(serde_json::to_vec(&record).expect("serializable")),
            )
        })
        .collect()
}

/// How long a copy of the fleet's edges serves to name the edges events mention: a batch must not copy the
/// whole fleet, and an edge that just registered is named by its host and port for a second at most.
const KNOWN_EDGES_TTL: Duration = Duration::from_secs(1);

/// The fleet's edges, named for [`resolve_edge`]: a copy made at most once a second per fleet.
fn known_edges(api: &ApiService) -> Arc<Vec<KnownEdge>> {
    type Cached = Option<(usize, std::time::Instant, Arc<Vec<KnownEdge>>)>;
    static CACHE: Mutex<Cached> = Mutex::new(None);
    if api.fleet_secret.is_none() {
        // Registration off: the fleet is empty.
        return Arc::default();
    }
    let fleet = Arc::as_ptr(&api.fleet) as usize;
    let now = std::time::Instant::now();
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((of, at, edges)) = cache.as_ref()
        && *of == fleet
        && now.saturating_duration_since(*at) < KNOWN_EDGES_TTL
    {
        return Arc::clone(edges);
    }
    let edges: Arc<Vec<KnownEdge>> = Arc::new(
        api.fleet
            .list(crate::bus::now_ms())
            .into_iter()
            .map(|e| KnownEdge {
                name: e.name,
                region: e.report.region,
                hosts: e
                    .report
                    .urls
                    .iter()
                    .filter_map(|u| url::Url::parse(u).ok())
                    .filter_map(|u| authority(&u))
                    .collect(),
            })
            .collect(),
    );
    *cache = Some((fleet, now, Arc::clone(&edges)));
    edges
}

fn bus_of(api: &ApiService) -> Result<&crate::bus::Bus, ApiError> {
    api.bus.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_bus",
            "events are not taken here: this control plane has no message bus".into(),
        )
    })
}

async fn publish(
    bus: &crate::bus::Bus,
    topic: &str,
    records: Vec<(Bytes, Bytes)>,
) -> Result<(), ApiError> {
    bus.publish(topic, records).await.map_err(|e| {
        tracing::warn!(error = %e, topic, "publishing to the bus failed");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            "the message bus did not take the events: send them again later".into(),
        )
    })
}

async fn read_body<B>(req: Request<B>) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    shared::body::read_limited(req.into_body(), MAX_BODY_BYTES, BODY_TIMEOUT)
        .await
        .map_err(|e| {
            let status = e.status();
            let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_body"
            };
            ApiError(status, error, e.to_string())
        })
}

/// `POST /v1/events`: a batch of player events, validated and published to the playback topic.
pub(crate) async fn accept<B>(
    api: &ApiService,
    req: Request<B>,
) -> Result<serde_json::Value, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bus = bus_of(api)?;
    let client = api.client_ip(&req);
    let body = read_body(req).await?;
    let events = parse_batch(&body)?;
    let accepted = events.len();
    let known = if events.iter().any(|e| e.edge.is_some()) {
        known_edges(api)
    } else {
        Arc::default()
    };
    let records = playback_records(events, now_ms(), client, &known, |hint| {
        api.steering.viewer_region(hint, client)
    });
    publish(bus, TOPIC_PLAYBACK, records).await?;
    Ok(json!({ "accepted": accepted }))
}

/// `POST /v1/edges/<name>/stats` (fleet secret checked by the caller): an edge's per-title summary.
pub(crate) async fn accept_edge_stats<B>(
    api: &ApiService,
    name: &str,
    req: Request<B>,
) -> Result<serde_json::Value, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !is_name(name) {
        return Err(ApiError::bad(
            "an edge's name is 1 to 64 letters, digits, `-`, `_` or `.`",
        ));
    }
    let bus = bus_of(api)?;
    let body = read_body(req).await?;
    let stats = parse_edge_stats(&body)?;
    let accepted = stats.titles.len();
    let edge_region = known_edges(api)
        .iter()
        .find(|k| k.name == name)
        .map(|k| k.region.clone())
        .filter(|r| !r.is_empty());
    let records = edge_stats_records(name, edge_region, stats, now_ms());
    if !records.is_empty() {
        publish(bus, TOPIC_EDGE_STATS, records).await?;
    }
    Ok(json!({ "accepted": accepted }))
}

/// The edge-stats records of a checked summary: (key = title, value = JSON), one per title.
pub fn edge_stats_records(
    edge: &str,
    edge_region: Option<String>,
    stats: EdgeStats,
    received_ms: i64,
) -> Vec<(Bytes, Bytes)> {
    stats
        .titles
        .into_iter()
        .map(|t| {
            let key = Bytes::from(t.title.clone());
            let record = EdgeStatsRecord {
                edge: edge.to_string(),
                edge_region: edge_region.clone(),
                received_ms,
                interval_secs: stats.interval_secs,
                stats: t,
            };
            (
                key,
                Bytes::from(serde_json::to_vec(&record).expect("serializable")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Value {
        json!({
            "id": "e-1", "kind": "start", "session": "6e2f1c3a-0b7d-4c55-9a51-2f0c9e1d7a10",
            "title": "test-pattern", "ts": 1_700_000_000_000u64, "startup_ms": 850,
            "br": 3000, "bl": 4000, "su": true, "ot": "v", "tb": 6000, "mtp": 25000, "d": 4000,
            "edge": "https://edge1.example:8443/titles/test-pattern/v/seg1.m4s?token=secret",
            "region": "eu-west"
        })
    }

    fn batch(events: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "events": events })).unwrap()
    }

    fn refused(body: &[u8]) -> Refusal {
        parse_batch(body).expect_err("refused")
    }

    /// The reason for one event with `change` applied to a start event.
    fn reason_with(change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut event = start();
        change(event.as_object_mut().unwrap());
        let r = refused(&batch(vec![start(), event]));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
        r.reason
    }

    #[test]
    fn a_start_event_with_every_cmcd_key_is_read_and_the_edge_url_loses_its_path_and_token() {
        let events = parse_batch(&batch(vec![start()])).unwrap();
        assert_eq!(
            events,
            vec![PlayerEvent {
                id: "e-1".into(),
                session: "6e2f1c3a-0b7d-4c55-9a51-2f0c9e1d7a10".into(),
                title: "test-pattern".into(),
                ts: 1_700_000_000_000,
                detail: EventDetail::Start { startup_ms: 850 },
                cmcd: Cmcd {
                    br: Some(3000),
                    bl: Some(4000),
                    bs: None,
                    su: Some(true),
                    d: Some(4000),
                    ot: Some("v".into()),
                    tb: Some(6000),
                    mtp: Some(25000),
                },
                edge: Some("edge1.example:8443".into()),
                region: Some("eu-west".into()),
            }]
        );
    }

    #[test]
    fn every_kind_is_read_with_its_fields() {
        let base = |kind: &str, extra: Value| {
            let mut e = json!({"id": format!("id-{kind}"), "kind": kind, "session": "s", "title": "t", "ts": 1});
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            e
        };
        let events = parse_batch(&batch(vec![
            base("start", json!({"startup_ms": 0})),
            base(
                "heartbeat",
                json!({"played_ms": 10_000, "position_ms": 12_000, "bs": false}),
            ),
            base("heartbeat", json!({"played_ms": 20_000})),
            base("seek", json!({"position_ms": 2})),
            base("heartbeat", json!({"position_ms": 30_000})),
            base("stall", json!({"duration_ms": 300, "bs": true})),
            base(
                "bitrate_switch",
                json!({"from_kbps": 1000, "to_kbps": 3000}),
            ),
            base(
                "error",
                json!({"code": "fragLoadError", "message": "timeout\nretrying"}),
            ),
            base("error", json!({"code": 4001})),
            base(
                "end",
                json!({"reason": "abandoned", "watched_ms": 20_000, "edge": "edge-1"}),
            ),
        ]))
        .unwrap();
        let details: Vec<EventDetail> = events.iter().map(|e| e.detail.clone()).collect();
        assert_eq!(
            details,
            vec![
                EventDetail::Start { startup_ms: 0 },
                EventDetail::Heartbeat {
                    played_ms: Some(10_000),
                    position_ms: Some(12_000)
                },
                EventDetail::Heartbeat {
                    played_ms: Some(20_000),
                    position_ms: None
                },
                EventDetail::Seek { position_ms: 2 },
                EventDetail::Heartbeat {
                    played_ms: None,
                    position_ms: Some(30_000)
                },
                EventDetail::Stall { duration_ms: 300 },
                EventDetail::BitrateSwitch {
                    from_kbps: 1000,
                    to_kbps: 3000
                },
                EventDetail::Error {
                    code: "fragLoadError".into(),
                    message: Some("timeout retrying".into())
                },
                EventDetail::Error {
                    code: "4001".into(),
                    message: None
                },
                EventDetail::End {
                    reason: EndReason::Abandoned,
                    watched_ms: 20_000
                },
            ]
        );
        assert_eq!(events[1].cmcd.bs, Some(false));
        assert_eq!(events[9].edge.as_deref(), Some("edge-1"));
        assert_eq!(events.len(), 10);
        for (event, kind) in events.iter().zip([
            "start",
            "heartbeat",
            "heartbeat",
            "seek",
            "heartbeat",
            "stall",
            "bitrate_switch",
            "error",
            "error",
            "end",
        ]) {
            assert_eq!(event.detail.kind(), kind);
        }
    }

    /// A change made to an event.
    type Change = Box<dyn FnOnce(&mut Map<String, Value>)>;

    #[test]
    fn each_bad_field_is_named_with_its_event_index() {
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("br".into(), json!(-1));
                }),
                "events[1].br: must be a non-negative integer",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("br".into(), json!(2.5));
                }),
                "events[1].br: must be a non-negative integer",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("br".into(), json!("3000"));
                }),
                "events[1].br: must be a non-negative integer",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("bl".into(), json!(1u64 << 60));
                }),
                "events[1].bl: must be at most 9007199254740991",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("d".into(), json!(true));
                }),
                "events[1].d: must be a non-negative integer",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("tb".into(), json!(null));
                    e.insert("mtp".into(), json!([]));
                }),
                "events[1].mtp: must be a non-negative integer",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("bs".into(), json!(1));
                }),
                "events[1].bs: must be true or false",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("su".into(), json!("true"));
                }),
                "events[1].su: must be true or false",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("ot".into(), json!("video"));
                }),
                "events[1].ot: must be a CMCD object type: one of m, a, v, av, i, c, tt, k, o",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.remove("id");
                }),
                "events[1].id: missing",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("id".into(), json!(""));
                }),
                "events[1].id: must be 1 to 64 characters, not 0",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("id".into(), json!("a".repeat(65)));
                }),
                "events[1].id: must be 1 to 64 characters, not 65",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("id".into(), json!("a b"));
                }),
                "events[1].id: must be 1 to 64 of letters, digits, `_` and `-`",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("id".into(), json!(7));
                }),
                "events[1].id: must be a string",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("session".into(), json!("has space"));
                }),
                "events[1].session: must be 1 to 64 visible ASCII characters (CMCD sid)",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("session".into(), json!("s".repeat(65)));
                }),
                "events[1].session: must be 1 to 64 characters, not 65",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("title".into(), json!("Test_Pattern"));
                }),
                "events[1].title: must be a title's slug: 1 to 128 lower-case letters, digits and `-`",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("title".into(), json!("t".repeat(129)));
                }),
                "events[1].title: must be 1 to 128 characters, not 129",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.remove("ts");
                }),
                "events[1].ts: missing",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("ts".into(), json!(-5));
                }),
                "events[1].ts: must be a non-negative integer",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.remove("kind");
                }),
                "events[1].kind: missing",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("kind".into(), json!("pause"));
                }),
                "events[1].kind: must be one of start, heartbeat, seek, stall, bitrate_switch, error, end",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.remove("startup_ms");
                }),
                "events[1].startup_ms: missing",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("duration_ms".into(), json!(5));
                }),
                "events[1].duration_ms: unknown field (not a field of `start` events)",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("sid".into(), json!("x"));
                }),
                "events[1].sid: unknown field (not a field of `start` events)",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("edge".into(), json!("ftp://edge1.example/"));
                }),
                "events[1].edge: must be the edge's URL (http or https), its host[:port] or its name (letters, digits, `-`, `_`, `.`)",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("edge".into(), json!("edge one"));
                }),
                "events[1].edge: must be the edge's URL (http or https), its host[:port] or its name (letters, digits, `-`, `_`, `.`)",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert(
                        "edge".into(),
                        json!(format!("https://e.example/{}", "a".repeat(300))),
                    );
                }),
                "events[1].edge: must be 1 to 256 characters, not 318",
            ),
            (
                Box::new(|e: &mut Map<String, Value>| {
                    e.insert("region".into(), json!("eu west"));
                }),
                "events[1].region: must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ),
        ];
        for (change, want) in cases {
            assert_eq!(reason_with(change), want);
        }
    }

    #[test]
    fn kind_specific_fields_are_checked_per_kind() {
        let event = |extra: Value| {
            let mut e = json!({"id": "x", "session": "s", "title": "t", "ts": 1});
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            e
        };
        for (extra, want) in [
            (
                json!({"kind": "heartbeat", "played_ms": 1, "position_ms": "1"}),
                "events[0].position_ms: must be a non-negative integer",
            ),
            (
                json!({"kind": "seek", "from_ms": 1}),
                "events[0].position_ms: missing",
            ),
            (
                json!({"kind": "stall", "duration_ms": -1}),
                "events[0].duration_ms: must be a non-negative integer",
            ),
            (
                json!({"kind": "bitrate_switch", "from_kbps": 1, "to_kbps": 1.5}),
                "events[0].to_kbps: must be a non-negative integer",
            ),
            (json!({"kind": "error"}), "events[0].code: missing"),
            (
                json!({"kind": "error", "code": "a b"}),
                "events[0].code: must be a non-negative integer or 1 to 64 visible ASCII characters",
            ),
            (
                json!({"kind": "error", "code": -3}),
                "events[0].code: must be a non-negative integer",
            ),
            (
                json!({"kind": "error", "code": "E", "message": "m".repeat(513)}),
                "events[0].message: must be 0 to 512 characters, not 513",
            ),
            (
                json!({"kind": "end", "reason": "finished", "watched_ms": 0}),
                "events[0].reason: must be one of completed, abandoned, error",
            ),
            (
                json!({"kind": "end", "reason": "completed"}),
                "events[0].watched_ms: missing",
            ),
            (
                json!({"kind": "end", "reason": "completed", "watched_ms": 0, "startup_ms": 1}),
                "events[0].startup_ms: unknown field (not a field of `end` events)",
            ),
        ] {
            let r = refused(&batch(vec![event(extra)]));
            assert_eq!(
                (r.status, r.reason.as_str()),
                (StatusCode::BAD_REQUEST, want)
            );
        }
        // A message of exactly 512 characters (not bytes) is fine.
        let ok = event(json!({"kind": "error", "code": "E", "message": "é".repeat(512)}));
        assert!(parse_batch(&batch(vec![ok])).is_ok());
    }

    #[test]
    fn the_batch_itself_is_checked() {
        let r = refused(b"{not json");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.reason.starts_with("the body is not JSON"), "{}", r.reason);
        assert_eq!(
            refused(b"[]").reason,
            r#"the body must be an object: {"events": [{"id": "…", "kind": "start", …}]}"#
        );
        assert_eq!(
            refused(b"{}").reason,
            r#"events: missing; send {"events": [{"id": "…", "kind": "start", …}]}"#
        );
        assert_eq!(
            refused(br#"{"events": {}}"#).reason,
            "events: must be an array"
        );
        assert_eq!(
            refused(br#"{"events": []}"#).reason,
            "events: must hold at least one event"
        );
        assert_eq!(
            refused(br#"{"events": [1], "v": 1}"#).reason,
            r#"v: unknown field (the body is {"events": [{"id": "…", "kind": "start", …}]})"#
        );
        assert_eq!(
            refused(br#"{"events": [1]}"#).reason,
            "events[0]: must be an object"
        );
        let too_many = refused(&batch(vec![start(); MAX_EVENTS + 1]));
        assert_eq!(too_many.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_many.error, "too_many_events");
        assert_eq!(
            too_many.reason,
            "events: 501 events, a batch holds 500 at most: split it"
        );
        assert_eq!(
            parse_batch(&batch(vec![start(); MAX_EVENTS]))
                .unwrap()
                .len(),
            MAX_EVENTS
        );
    }

    #[test]
    fn a_full_batch_of_the_largest_events_fits_the_body_limit_only_with_short_messages() {
        // The body limit, not the event count, bounds a batch of long messages: 500 events of 512-character
        // messages do not fit in 256 KiB, and the client learns to split.
        let mut e =
            json!({"id": "x", "kind": "error", "session": "s", "title": "t", "ts": 1, "code": "E"});
        e["message"] = json!("m".repeat(MAX_MESSAGE_CHARS));
        assert!(batch(vec![e; MAX_EVENTS]).len() > MAX_BODY_BYTES);
        assert!(batch(vec![start(); MAX_EVENTS]).len() < MAX_BODY_BYTES);
    }

    #[test]
    fn records_carry_the_receive_time_client_edge_and_regions_and_read_back() {
        let known = vec![KnownEdge {
            name: "edge-1".into(),
            region: "eu-west".into(),
            hosts: vec!["edge1.example:8443".into()],
        }];
        let mut unknown_edge = start();
        unknown_edge["edge"] = json!("http://10.0.0.9:8080/x");
        unknown_edge["id"] = json!("e-2");
        unknown_edge.as_object_mut().unwrap().remove("region");
        let events = parse_batch(&batch(vec![start(), unknown_edge])).unwrap();
        let records = playback_records(
            events.clone(),
            42,
            Some("192.0.2.7".parse().unwrap()),
            &known,
            |hint| Some(hint.unwrap_or("from-cidr").to_string()),
        );
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0, Bytes::from("test-pattern"));
        let first: PlaybackRecord = serde_json::from_slice(&records[0].1).unwrap();
        assert_eq!(
            first,
            PlaybackRecord {
                event: events[0].clone(),
                received_ms: 42,
                client: Some("192.0.2.7".into()),
                edge_name: Some("edge-1".into()),
                edge_region: Some("eu-west".into()),
                viewer_region: Some("eu-west".into()),
            }
        );
        let second: PlaybackRecord = serde_json::from_slice(&records[1].1).unwrap();
        assert_eq!(second.edge_name.as_deref(), Some("10.0.0.9-8080"));
        assert_eq!(second.edge_region, None);
        assert_eq!(second.viewer_region.as_deref(), Some("from-cidr"));
        // The JSON is flat: the kind's fields and the CMCD keys beside the others.
        let value: Value = serde_json::from_slice(&records[0].1).unwrap();
        assert_eq!(value["kind"], "start");
        assert_eq!(value["startup_ms"], 850);
        assert_eq!(value["br"], 3000);
        assert!(value.get("bs").is_none());
    }

    #[test]
    fn edges_are_named_by_the_fleet_else_by_host_and_port() {
        let known = vec![KnownEdge {
            name: "edge-1".into(),
            region: String::new(),
            hosts: vec!["a.example".into()],
        }];
        assert_eq!(resolve_edge("a.example", &known), ("edge-1".into(), None));
        assert_eq!(resolve_edge("edge-1", &known), ("edge-1".into(), None));
        assert_eq!(resolve_edge("edge-2", &known), ("edge-2".into(), None));
        assert_eq!(
            resolve_edge("b.example:8443", &known),
            ("b.example-8443".into(), None)
        );
        assert_eq!(resolve_edge("[::1]:8080", &known), ("1--8080".into(), None));
    }

    #[test]
    fn an_edge_is_kept_as_its_name_or_host_and_port() {
        for (given, kept) in [
            (
                "https://edge1.example:8443/titles/t/v/1.m4s?token=secret",
                "edge1.example:8443",
            ),
            ("https://edge1.example/x", "edge1.example"),
            ("http://edge1.example:443/", "edge1.example:443"),
            ("HTTPS://EDGE1.example:8443", "edge1.example:8443"),
            ("edge1.example:8443", "edge1.example:8443"),
            ("127.0.0.1:8443", "127.0.0.1:8443"),
            ("[::1]:8443", "[::1]:8443"),
            ("edge-1", "edge-1"),
            ("edge1.example", "edge1.example"),
        ] {
            assert_eq!(edge(&json!(given)).as_deref(), Ok(kept), "{given}");
        }
        for refused in [
            "edge1.example:8443/path",
            "user@edge1.example:8443",
            "edge1.example:99999",
            "edge1.example:8443?x=1",
            "ftp://edge1.example",
            "https://",
            "edge one",
        ] {
            assert!(edge(&json!(refused)).is_err(), "{refused}");
        }
    }

    /// What `origin/web/player-events.js` sends (its batch as the browser builds it).
    #[test]
    fn a_batch_as_the_player_script_sends_it_is_accepted() {
        let session = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let common = |seq: u32, kind: &str| {
            json!({"id": format!("{session}-{seq}"), "kind": kind, "session": session,
                   "title": "test-pattern", "ts": 1_733_350_000_000u64, "br": 2400, "bl": 8100,
                   "mtp": 41000, "edge": "127.0.0.1:8443"})
        };
        let with = |mut e: Value, extra: Value| {
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            e
        };
        let events = parse_batch(&batch(vec![
            with(common(0, "start"), json!({"startup_ms": 912, "su": false})),
            with(common(1, "heartbeat"), json!({"position_ms": 10_000})),
            with(common(2, "seek"), json!({"position_ms": 60_000})),
            with(common(3, "stall"), json!({"duration_ms": 420, "bs": true})),
            with(
                common(4, "bitrate_switch"),
                json!({"from_kbps": 2400, "to_kbps": 800}),
            ),
            with(
                common(5, "error"),
                json!({"code": "media_3", "message": "decode"}),
            ),
            with(
                common(6, "end"),
                json!({"reason": "abandoned", "watched_ms": 21_000}),
            ),
        ]))
        .unwrap();
        assert_eq!(events.len(), 7);
        assert_eq!(events[0].edge.as_deref(), Some("127.0.0.1:8443"));
    }

    fn stats(titles: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({ "interval_secs": 10, "titles": titles })).unwrap()
    }

    #[test]
    fn an_edge_summary_is_read_and_becomes_one_record_per_title() {
        let body = stats(json!([
            {"title": "mandelbrot", "requests": {"hit": 90, "miss": 10}, "bytes": 1000, "errors": 1,
             "ttfb_ms": {"p50": 2.5, "p90": 10, "p99": 40}},
            {"title": "test-pattern", "requests": {}, "bytes": 0, "errors": 0},
        ]));
        let parsed = parse_edge_stats(&body).unwrap();
        assert_eq!(parsed.interval_secs, 10);
        assert_eq!(parsed.titles[0].requests["hit"], 90);
        assert_eq!(
            parsed.titles[0].ttfb_ms,
            Some(Percentiles {
                p50: 2.5,
                p90: 10.0,
                p99: 40.0
            })
        );
        assert_eq!(parsed.titles[1].ttfb_ms, None);
        let records = edge_stats_records("edge-1", Some("eu".into()), parsed.clone(), 7);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].0, Bytes::from("test-pattern"));
        let back: EdgeStatsRecord = serde_json::from_slice(&records[0].1).unwrap();
        assert_eq!(
            back,
            EdgeStatsRecord {
                edge: "edge-1".into(),
                edge_region: Some("eu".into()),
                received_ms: 7,
                interval_secs: 10,
                stats: parsed.titles[0].clone(),
            }
        );
        assert!(
            parse_edge_stats(&stats(json!([])))
                .unwrap()
                .titles
                .is_empty()
        );
    }

    #[test]
    fn a_bad_edge_summary_is_refused_naming_the_field() {
        let title = |change: Value| {
            let mut t = json!({"title": "t", "requests": {"hit": 1}, "bytes": 1, "errors": 0});
            for (k, v) in change.as_object().unwrap() {
                t[k] = v.clone();
            }
            stats(json!([t]))
        };
        for (body, want) in [
            (
                title(json!({"requests": {"hot": 1}})),
                "titles[0].requests.hot: not a cache status (one of hit, revalidated, stale, miss, coalesced, pass, not_cached, local, error)",
            ),
            (
                title(json!({"requests": {"hit": -1}})),
                "titles[0].requests.hit: must be a non-negative integer",
            ),
            (
                title(json!({"requests": [1]})),
                r#"titles[0].requests: must be an object of counts by cache status, {"hit": 1, "miss": 2}"#,
            ),
            (
                title(json!({"bytes": "1"})),
                "titles[0].bytes: must be a non-negative integer",
            ),
            (
                title(json!({"title": "Bad"})),
                "titles[0].title: must be a title's slug: 1 to 128 lower-case letters, digits and `-`",
            ),
            (
                title(json!({"ttfb_ms": {"p50": 1, "p90": 2}})),
                "titles[0].ttfb_ms.p99: missing",
            ),
            (
                title(json!({"ttfb_ms": {"p50": 5, "p90": 2, "p99": 9}})),
                "titles[0].ttfb_ms: must have p50 ≤ p90 ≤ p99",
            ),
            (
                title(json!({"ttfb_ms": {"p50": -1, "p90": 2, "p99": 9}})),
                "titles[0].ttfb_ms.p50: must be a number of milliseconds, 0 to 3600000",
            ),
            (
                title(json!({"ttfb_ms": {"p50": 1, "p90": 2, "p99": 9, "p999": 10}})),
                "titles[0].ttfb_ms.p999: unknown field (not a field of ttfb_ms)",
            ),
            (
                title(json!({"hits": 1})),
                "titles[0].hits: unknown field (not a field of a title's summary)",
            ),
            (
                serde_json::to_vec(&json!({"interval_secs": 0, "titles": []})).unwrap(),
                "interval_secs: must be 1 to 3600 seconds",
            ),
            (
                serde_json::to_vec(&json!({"titles": []})).unwrap(),
                "interval_secs: missing",
            ),
            (
                serde_json::to_vec(&json!({"interval_secs": 1, "titles": {}})).unwrap(),
                "titles: must be an array",
            ),
            (
                serde_json::to_vec(&json!({"interval_secs": 1, "titles": [], "edge": "x"}))
                    .unwrap(),
                "edge: unknown field (not a field of an edge summary)",
            ),
            (
                serde_json::to_vec(
                    &json!({"interval_secs": 1, "titles": vec![json!({}); MAX_STATS_TITLES + 1]}),
                )
                .unwrap(),
                "titles: 1001 titles, a summary holds 1000 at most",
            ),
            (
                serde_json::to_vec(&json!([1])).unwrap(),
                r#"the body must be an object: {"interval_secs": 10, "titles": [{"title": "…", "requests": {"hit": 1}, "bytes": 0, "errors": 0}]}"#,
            ),
        ] {
            let r = parse_edge_stats(&body).expect_err("refused");
            assert_eq!(
                (r.status, r.reason.as_str()),
                (StatusCode::BAD_REQUEST, want)
            );
        }
    }
}
