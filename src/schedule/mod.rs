//! The schedule's decisions, with no I/O: from the schedule, its runs and the time,
//! the next status and what to do (create a run, stop runs, delete old ones), the
//! Events to publish and when to look again. The reconciler
//! ([`controller`]) performs the plan; nothing here talks to a cluster.
//!
//! Exactly one run per scheduled time: a slot's run is named from the schedule and
//! the slot (`<schedule>-<minutes since the epoch>`), so two replicas, a restart or
//! a crash between the create and the status write can only try to create the same
//! name again, which the API server refuses (AlreadyExists). A slot counts as
//! handled once a run for it exists, or status records it run or skipped; after
//! downtime only the most recent missed slot is considered, never a burst.

pub mod conditions;
pub mod controller;
pub mod cron;
mod decide;
pub mod runs;
pub mod spec;
pub mod template;

pub use decide::decide;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::crd::AmperityWorkflowRun;
use crate::crd::schedule::{AmperityWorkflowSchedule, AmperityWorkflowScheduleStatus};
use crate::run::decide::{Event, EventType};
use conditions::{READY, Wanted};

/// Label on every run: the schedule's name.
pub const SCHEDULE_LABEL: &str = "amperity.dev/schedule";
/// Annotation on every run: the slot it was created for (RFC 3339), or the time a
/// run-now request was acted on.
pub const SCHEDULED_AT_ANNOTATION: &str = "amperity.dev/scheduled-at";
/// Annotation on every run: `schedule` or `run-now`.
pub const TRIGGER_ANNOTATION: &str = "amperity.dev/trigger";
pub const TRIGGER_SCHEDULE: &str = "schedule";
pub const TRIGGER_RUN_NOW: &str = "run-now";
/// Annotation on the schedule: each new value starts one run now.
pub const RUN_NOW_ANNOTATION: &str = "amperity.dev/run-now";
pub const DEFAULT_SUCCESSFUL_RUNS_HISTORY_LIMIT: u32 = 3;
pub const DEFAULT_FAILED_RUNS_HISTORY_LIMIT: u32 = 1;
/// Longest run-now value kept in status as it is; longer ones are kept as a digest.
const MAX_RUN_NOW_CHARS: usize = 253;
/// The finalizer the API server sets for `kubectl delete --cascade=orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer the API server sets for `kubectl delete --cascade=foreground`.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// How many handled run-now values status remembers.
pub const MAX_HANDLED_RUN_NOW: usize = 32;
/// How far past now a run's slot time may be (clock skew) before it is ignored.
pub const FUTURE_SKEW: SignedDuration = SignedDuration::from_secs(120);
/// Missed slots counted one by one before an Event says "more than" this many.
pub const MAX_MISSED_COUNTED: usize = 100;
/// How soon to look again when a run-now waits behind a slot handled just now.
const SOON: SignedDuration = SignedDuration::from_secs(1);

/// Why a run is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The scheduled time it is for.
    Slot(Timestamp),
    /// The `amperity.dev/run-now` value it answers.
    RunNow(String),
}

/// A run to create, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    pub run: AmperityWorkflowRun,
    pub trigger: Trigger,
    /// `lastScheduleTime` before this run: what it goes back to if the run is refused.
    pub last_schedule_time_before: Option<Time>,
}

/// What the reconciler does, in this order: stop runs, create the new one, write
/// the status (when it changed), delete runs, publish the Events, drop the
/// finalizer if told, and look again at `wake`.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: AmperityWorkflowScheduleStatus,
    /// Runs to stop (`spec.stop: true`) for concurrencyPolicy Replace.
    pub stop: Vec<String>,
    pub create: Option<NewRun>,
    /// Runs to delete: beyond the history limits (oldest first), or all of them
    /// when the schedule is being deleted.
    pub delete: Vec<String>,
    /// The schedule is being deleted and its runs are on their way out.
    pub release_finalizer: bool,
    pub events: Vec<Event>,
    /// When to look again without any change; None waits for a change.
    pub wake: Option<Timestamp>,
}

impl Plan {
    /// The API server refused the new run (`why` says how): the slot or run-now
    /// request counts as handled, and status and an Event say what happened.
    pub fn creation_refused(&mut self, why: &str, generation: Option<i64>, now: Timestamp) {
        let Some(new) = self.create.take() else {
            return;
        };
        let name = new.run.name_any();
        self.status.active.retain(|a| a.name != name);
        // The runs it would have replaced go on: nothing replaces them.
        self.stop.clear();
        self.events.retain(|e| e.reason != "Replaced");
        let what = match &new.trigger {
            Trigger::Slot(slot) => {
                // lastScheduleTime goes back to the last slot that did get a run
                // (never cleared: an earlier slot must not look due again); the
                // refused slot counts as skipped.
                self.status.last_schedule_time = new.last_schedule_time_before.clone();
                self.status.last_skipped_time = Some(Time(*slot));
                format!("the run due at {slot}")
            }
            Trigger::RunNow(value) => format!("the {RUN_NOW_ANNOTATION} run for {value:?}"),
        };
        let message = format!("could not create {what} as {name}: {why}");
        self.events.retain(|e| e.reason != "Created");
        self.events.push(warning("CreateFailed", message.clone()));
        conditions::set(
            &mut self.status.conditions,
            Wanted {
                kind: READY,
                status: "False",
                reason: "RunCreateFailed",
                message: &message,
            },
            generation,
            Time(now),
        );
    }
}

fn normal(reason: &'static str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason,
        note,
    }
}

fn warning(reason: &'static str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason,
        note,
    }
}

/// The runs `schedule` controls: those whose controller owner reference is its uid.
pub fn owned<'a>(
    schedule: &AmperityWorkflowSchedule,
    runs: &'a [AmperityWorkflowRun],
) -> Vec<&'a AmperityWorkflowRun> {
    let Some(uid) = schedule.metadata.uid.as_deref() else {
        return Vec::new();
    };
    runs.iter()
        .filter(|r| {
            r.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect()
}

/// The name of the run for a slot: `<schedule>-<minutes since the epoch>`.
pub fn slot_run_name(schedule: &str, slot: Timestamp) -> String {
    format!("{schedule}-{}", slot.as_second().div_euclid(60))
}

/// The name of the `count`-th run-now run: `<schedule>-now-<count>`.
pub fn run_now_run_name(schedule: &str, count: u64) -> String {
    format!("{schedule}-now-{count}")
}

/// The time a run-now value names, when it is one: seconds (or milliseconds) since
/// the epoch, as `date +%s` gives (ten digits or more: a smaller number is a
/// counter), or an RFC 3339 timestamp.
pub fn run_now_time(value: &str) -> Option<Timestamp> {
    let value = value.trim();
    if value.bytes().all(|b| b.is_ascii_digit()) {
        if !(10..=16).contains(&value.len()) {
            return None;
        }
        let n: i64 = value.parse().ok()?;
        // Past 10^11 seconds (year 5138) it can only be milliseconds.
        return if n >= 100_000_000_000 {
            Timestamp::from_millisecond(n).ok()
        } else {
            Timestamp::from_second(n).ok()
        };
    }
    if value.len() <= 64 {
        return value.parse::<Timestamp>().ok();
    }
    None
}

/// The run-now value as status keeps it: as given when short, else a digest.
fn run_now_key(value: &str) -> String {
    if value.len() <= MAX_RUN_NOW_CHARS {
        return value.to_string();
    }
    // FNV-1a: stable across Rust releases, unlike the standard library's hasher.
    let digest = value.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("fnv1a64:{digest:016x}")
}
