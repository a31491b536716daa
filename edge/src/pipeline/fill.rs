//! Proactive fill at the I/O rim (`[fill]`; the window and the plan are `crate::fill`). One task per edge
//! waits for the quiet hours to open (or for `POST /fill` on the admin listener), reads the control plane's
//! plan for this edge, and warms the plan's files in order through the cache's ordinary coalesced fills: a file
//! cached or being filled costs a lookup, a request for a file being filled joins it. The pace is a budget of
//! its own (files at once, bytes per second: `prefetch::budget` with the fill's limits), and the fill waits
//! whenever demand fills queue or take 75 % of `cache.max_fills`, so players never wait behind it. A scheduled
//! run stops when the window closes (the next night reads a fresh plan); one asked for by the admin API runs
//! to the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Edge;
use super::prefetch::{Purpose, Warmed};
use crate::changes::{ControlClient, get_from_control};
use crate::config::ControlConfig;
use crate::fill::{MAX_PLAN_OBJECTS, Plan, QuietHours};
use crate::prefetch::budget::{Budget, Limits, Shed};

/// The largest plan read (a plan's file takes about 100 bytes of JSON).
const MAX_PLAN_BYTES: usize = MAX_PLAN_OBJECTS * 256;
/// How long a plan may take to arrive: the control plane reads two catalog rows per title it considers.
const PLAN_DEADLINE: Duration = Duration::from_secs(120);
/// How often the fill looks again while it waits for its budget or for demand to ease.
const WAIT_STEP: Duration = Duration::from_millis(50);

/// What the fill is built from (`[fill]`).
#[derive(Debug, Clone)]
pub struct FillSettings {
    /// Run when the quiet hours open (`fill.enabled`); without it, only when asked.
    pub scheduled: bool,
    pub quiet_hours: QuietHours,
    /// Bytes the plan may take.
    pub budget_bytes: u64,
    pub bytes_per_sec: u64,
    pub max_in_flight: usize,
    /// The site the files are filled through (its name); empty: the first.
    pub site: String,
}

/// What started a run (the metric's `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Schedule,
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Admin => "admin",
        }
    }
}

/// How a run ended (the metric's `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnd {
    Done,
    /// The quiet hours closed, or the edge is stopping.
    Paused,
    Failed,
}

impl RunEnd {
    fn as_str(self) -> &'static str {
        match self {
            RunEnd::Done => "done",
            RunEnd::Paused => "paused",
            RunEnd::Failed => "failed",
        }
    }
}

/// The admin API's handle on the fill: whether a fill task runs at all, whether a run goes on, and the
/// request for one now.
#[derive(Default)]
pub struct FillControl {
    configured: AtomicBool,
    running: AtomicBool,
    asked: Notify,
}

/// Why `POST /fill` cannot start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillRefusal {
    /// No control plane to read a plan from (`control.url`).
    NotConfigured,
    Running,
}

impl Edge {
    /// Asks the fill task for a run now (`POST /fill`).
    pub fn request_fill(&self) -> Result<(), FillRefusal> {
        if !self.fill.configured.load(Ordering::Acquire) {
            return Err(FillRefusal::NotConfigured);
        }
        if self.fill.running.load(Ordering::Acquire) {
            return Err(FillRefusal::Running);
        }
        self.fill.asked.notify_one();
        Ok(())
    }

    /// The fill task: until `stop` turns true, a run each time the quiet hours open (when scheduled) and each
    /// time the admin API asks.
    pub async fn fill_forever(
        self: Arc<Self>,
        settings: FillSettings,
        control: ControlConfig,
        mut stop: watch::Receiver<bool>,
    ) {
        self.fill.configured.store(true, Ordering::Release);
        let client: ControlClient = Client::builder(TokioExecutor::new()).build_http();
        let url = format!(
            "{}/v1/edges/{}/fill-plan?budget_bytes={}",
            control.url.trim_end_matches('/'),
            self.name,
            settings.budget_bytes
        );
        let secret = control.registration_secret.unwrap_or_default();
        // After a scheduled run, the next waits for this window to close.
        let mut not_before = Instant::now();
        loop {
            let now = Instant::now();
            let wait = if now < not_before {
                not_before - now
            } else {
                settings.quiet_hours.until_open(self.unix_secs())
            };
            let trigger = tokio::select! {
                _ = tokio::time::sleep(wait), if settings.scheduled => {
                    if Instant::now() < not_before || !settings.quiet_hours.contains(self.unix_secs()) {
                        continue;
                    }
                    Trigger::Schedule
                }
                _ = self.fill.asked.notified() => Trigger::Admin,
                _ = stop.changed() => return,
            };
            self.fill.running.store(true, Ordering::Release);
            self.metrics.fill_running.set(1);
            let end = self
                .fill_once(&settings, trigger, &client, &url, &secret, &mut stop)
                .await;
            self.fill.running.store(false, Ordering::Release);
            self.metrics.fill_running.set(0);
            self.metrics
                .fill_runs
                .with_label_values(&[trigger.as_str(), end.as_str()])
                .inc();
            if trigger == Trigger::Schedule {
                not_before = Instant::now() + settings.quiet_hours.until_close(self.unix_secs());
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// One run: reads the plan and warms its files in order, paced.
    async fn fill_once(
        self: &Arc<Self>,
        settings: &FillSettings,
        trigger: Trigger,
        client: &ControlClient,
        url: &str,
        secret: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> RunEnd {
        let plan = match get_from_control(client, url, secret, PLAN_DEADLINE, MAX_PLAN_BYTES)
            .await
            .and_then(|body| Plan::read(&body, settings.budget_bytes))
        {
            Ok(plan) => plan,
            Err(reason) => {
                tracing::warn!(url, reason = %reason, "no fill plan: this run fills nothing");
                return RunEnd::Failed;
            }
        };
        self.metrics
            .fill_plan_objects
            .set(plan.objects.len() as i64);
        self.metrics
            .fill_plan_bytes
            .set(i64::try_from(plan.bytes()).unwrap_or(i64::MAX));
        let Some((site_index, host)) = self.fill_site(&settings.site) else {
            tracing::warn!(site = %settings.site, "the fill's site serves no host: nothing filled");
            return RunEnd::Failed;
        };
        let upstream = self.sites[site_index].upstream.clone();
        tracing::info!(
            trigger = trigger.as_str(),
            titles = plan.titles.len(),
            objects = plan.objects.len(),
            bytes = plan.bytes(),
            "fill started"
        );
        let started = Instant::now();
        let limits = Limits {
            max_in_flight: settings.max_in_flight,
            max_in_flight_per_upstream: settings.max_in_flight,
            bytes_per_sec: settings.bytes_per_sec,
            bytes_per_sec_per_upstream: settings.bytes_per_sec,
        };
        let mut pace = Pace {
            budget: Budget::new(limits, started),
            upstream: &upstream,
            tasks: JoinSet::new(),
            stored: 0,
            bytes: 0,
        };
        let mut end = RunEnd::Done;
        'plan: for object in &plan.objects {
            let mut waited = false;
            loop {
                if *stop.borrow()
                    || (trigger == Trigger::Schedule
                        && !settings.quiet_hours.contains(self.unix_secs()))
                {
                    end = RunEnd::Paused;
                    break 'plan;
                }
                pace.reap();
                match pace
                    .budget
                    .admit(&upstream, self.engine.load(), Instant::now())
                {
                    Ok(()) => break,
                    Err(shed) => {
                        if !waited {
                            waited = true;
                            let reason = match shed {
                                Shed::Load => "load",
                                Shed::InFlight | Shed::UpstreamInFlight => "in_flight",
                                Shed::Rate | Shed::UpstreamRate => "rate",
                            };
                            self.metrics.fill_waits.with_label_values(&[reason]).inc();
                        }
                        tokio::select! {
                            Some(done) = pace.tasks.join_next(), if !pace.tasks.is_empty() => pace.settle(done),
                            _ = tokio::time::sleep(WAIT_STEP) => {}
                            changed = stop.changed() => {
                                // A stop signal that can no longer come is a stop.
                                if changed.is_err() {
                                    end = RunEnd::Paused;
                                    break 'plan;
                                }
                            }
                        }
                    }
                }
            }
            let request = http::Request::get(object.path.as_str())
                .header(http::header::HOST, host.as_str())
                .body(())
                .map(|request| request.into_parts().0);
            match request {
                Ok(parts) => {
                    let edge = Arc::clone(self);
                    pace.tasks
                        .spawn(async move { edge.warm(parts, None, Purpose::Fill).await });
                }
                Err(_) => pace.budget.release(&upstream),
            }
        }
        // What was started is finished (a stopping edge aborts the task, and these with it).
        while let Some(done) = pace.tasks.join_next().await {
            pace.settle(done);
        }
        tracing::info!(
            trigger = trigger.as_str(),
            result = end.as_str(),
            stored = pace.stored,
            bytes = pace.bytes,
            seconds = started.elapsed().as_secs_f64(),
            "fill ended"
        );
        end
    }

    /// The site the fill goes through (by name; empty: the first), with a host it answers for.
    fn fill_site(&self, name: &str) -> Option<(usize, String)> {
        let index = if name.is_empty() {
            0
        } else {
            self.sites.iter().position(|site| site.name == name)?
        };
        let host = self
            .hosts
            .iter()
            .filter(|(_, i)| **i == index)
            .map(|(host, _)| host.clone())
            .min()?;
        Some((index, host))
    }
}

/// The fill's budget and the warms it started.
struct Pace<'a> {
    budget: Budget,
    upstream: &'a str,
    tasks: JoinSet<Warmed>,
    stored: u64,
    bytes: u64,
}

impl Pace<'_> {
    /// Settles the warms that have ended.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            self.settle(done);
        }
    }

    /// Charges one ended warm's bytes and gives its place back.
    fn settle(&mut self, done: Result<Warmed, tokio::task::JoinError>) {
        let warmed = done.unwrap_or(Warmed {
            result: "failed",
            bytes: 0,
        });
        let now = Instant::now();
        self.budget.charge(self.upstream, warmed.bytes, now);
        self.budget.release(self.upstream);
        self.bytes += warmed.bytes;
        if warmed.result == "stored" {
            self.stored += 1;
        }
    }
}

impl Edge {
    /// The edge's time (its clock, which a test may move) in Unix seconds, for the quiet hours.
    fn unix_secs(&self) -> u64 {
        crate::cache::meta::unix_millis(self.engine.clock().now()) / 1000
    }
}
