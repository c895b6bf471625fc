//! The schedule's decision: which slot is due (or missed), whether a run-now
//! request fires, what the concurrency policy does with runs in flight, which old
//! runs to prune, and the status and Events that say so.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::conditions::{LAST_RUN_SUCCEEDED, READY, STALLED, Wanted};
use super::cron::CronSchedule;
use super::runs::RunView;
use super::*;
use crate::crd::AmperityWorkflowRun;
use crate::crd::schedule::{
    AmperityWorkflowSchedule, AmperityWorkflowScheduleStatus, ConcurrencyPolicy,
};
use crate::run::decide::Event;
use crate::run::validate;

mod run_now;
mod slots;

/// Decides one schedule at `now` from its spec, its status and the runs it owns:
/// the [`Plan`] the controller performs (runs to create, stop and delete), the next
/// status, the Events, and when to look again.
pub fn decide(
    schedule: &AmperityWorkflowSchedule,
    all_runs: &[AmperityWorkflowRun],
    now: Timestamp,
) -> Plan {
    let mut views: Vec<RunView> = owned(schedule, all_runs)
        .into_iter()
        .map(RunView::of)
        .collect();
    let mut events = Vec::new();
    let horizon = now.checked_add(FUTURE_SKEW).unwrap_or(Timestamp::MAX);
    for view in &mut views {
        if let Some(at) = view.scheduled_at.filter(|at| *at > horizon) {
            events.push(warning(
                "FutureScheduledAt",
                format!(
                    "ignored run {}'s {SCHEDULED_AT_ANNOTATION} {at}: it is later than now; a slot time from a run never moves the schedule into the future (fix or remove the annotation)",
                    view.name
                ),
            ));
            view.scheduled_at = None;
        }
    }
    runs::newest_first(&mut views);
    let mut previous = schedule.status.clone().unwrap_or_default();
    for recorded in [
        &mut previous.last_schedule_time,
        &mut previous.last_skipped_time,
    ] {
        if recorded.as_ref().is_some_and(|t| t.0 > horizon) {
            events.push(warning(
                "FutureScheduledAt",
                format!(
                    "ignored a recorded slot time {} later than now in the status",
                    recorded
                        .as_ref()
                        .map(|t| t.0.to_string())
                        .unwrap_or_default()
                ),
            ));
            *recorded = None;
        }
    }
    let mut step = Step {
        schedule,
        views,
        now,
        status: previous.clone(),
        previous,
        stop: Vec::new(),
        create: None,
        events,
        last_schedule_time_before: None,
    };
    if schedule.metadata.deletion_timestamp.is_some() {
        // `--cascade=orphan` (the API server's `orphan` finalizer): the runs stay,
        // as a CronJob's Jobs do; the garbage collector removes their ownerReferences.
        // `--cascade=foreground` (`foregroundDeletion`): the garbage collector deletes
        // them and waits. Otherwise (background, or no garbage collector at all) the
        // operator deletes them itself.
        let gc_decides = schedule
            .finalizers()
            .iter()
            .any(|f| f == ORPHAN_FINALIZER || f == FOREGROUND_FINALIZER);
        return Plan {
            delete: step
                .views
                .iter()
                .filter(|r| !r.deleting && !gc_decides)
                .map(|r| r.name.clone())
                .collect(),
            release_finalizer: true,
            status: step.previous,
            stop: Vec::new(),
            create: None,
            events: Vec::new(),
            wake: None,
        };
    }
    step.observe_runs();
    let wake = match spec::check(schedule, now) {
        Err(errors) => {
            step.invalid(&validate::describe(&errors));
            None
        }
        Ok(slots) => step.operate(&slots),
    };
    let delete = step.history();
    let generation = schedule.metadata.generation;
    step.status.observed_generation = generation;
    for c in &mut step.status.conditions {
        c.observed_generation = generation;
    }
    Plan {
        status: step.status,
        stop: step.stop,
        create: step.create,
        delete,
        release_finalizer: false,
        events: step.events,
        wake,
    }
}

struct Step<'a> {
    schedule: &'a AmperityWorkflowSchedule,
    /// The schedule's runs, newest first.
    views: Vec<RunView>,
    now: Timestamp,
    previous: AmperityWorkflowScheduleStatus,
    status: AmperityWorkflowScheduleStatus,
    stop: Vec<String>,
    create: Option<NewRun>,
    events: Vec<Event>,
    last_schedule_time_before: Option<Time>,
}

impl Step<'_> {
    fn name(&self) -> String {
        self.schedule.name_any()
    }

    fn condition(&mut self, kind: &'static str, status: &'static str, reason: &str, message: &str) {
        conditions::set(
            &mut self.status.conditions,
            Wanted {
                kind,
                status,
                reason,
                message,
            },
            self.schedule.metadata.generation,
            Time(self.now),
        );
    }

    /// Active runs, the last slot run, the last finished run and the last success,
    /// from the runs.
    fn observe_runs(&mut self) {
        self.status.active = runs::active(&self.views);
        // A run created just before a crash that lost the status write still counts.
        self.status.last_schedule_time = self
            .previous
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .max(runs::newest_slot(&self.views))
            .map(Time);
        if let Some(last) = runs::last_run(&self.views, self.previous.last_run.as_ref()) {
            self.status.last_run = Some(last);
        }
        self.status.last_successful_time = runs::last_successful(
            &self.views,
            self.previous.last_successful_time.as_ref().map(|t| t.0),
        )
        .map(Time);
        let (status, reason, message) = conditions::last_run(self.status.last_run.as_ref());
        self.condition(LAST_RUN_SUCCEEDED, status, &reason, &message);
    }

    fn invalid(&mut self, problems: &str) {
        let message = format!("the spec is invalid: {problems}; no run starts until it is fixed");
        let already = conditions::get(&self.previous.conditions, STALLED)
            .is_some_and(|c| c.status == "True" && c.message == message);
        if !already {
            self.events.push(warning("InvalidSpec", message.clone()));
        }
        self.status.next_schedule_time = None;
        self.condition(READY, "False", "InvalidSpec", &message);
        self.condition(STALLED, "True", "InvalidSpec", &message);
    }

    /// Handles the most recent due slot, or else a new run-now value; returns when
    /// to look again.
    fn operate(&mut self, slots: &CronSchedule) -> Option<Timestamp> {
        let spec = &self.schedule.spec;
        self.observe_pattern();
        let run_now = self.pending_run_now();
        let mut handled = false;
        if let Some((slot, since)) = self.due_slot(slots) {
            self.missed_before(slots, since, slot);
            self.slot(slot);
            handled = true;
        }
        let next = slots.next_after(self.now);
        let mut wake = next;
        if let Some(value) = run_now {
            if handled {
                // One trigger per reconcile: the run-now then sees the slot's run in flight.
                let soon = self.now.checked_add(SOON).ok();
                wake = match (soon, next) {
                    (Some(soon), Some(next)) => Some(soon.min(next)),
                    (soon, next) => soon.or(next),
                };
            } else {
                self.run_now(value);
            }
        }
        if self.create.is_none() {
            self.stop_replaced_leftovers();
        }
        // While suspended, the wake-ups still come at each slot, to record it skipped.
        self.status.next_schedule_time = next.filter(|_| !spec.suspend).map(Time);
        if let Some(message) = self.blocked(slots) {
            self.condition(READY, "False", "Blocked", &message);
            self.condition(STALLED, "True", "Blocked", &message);
            return wake;
        }
        let (reason, message) = if spec.suspend {
            (
                "Suspended",
                "suspended: no run starts on schedule until spec.suspend is false (amperity.dev/run-now still works)".to_string(),
            )
        } else {
            let next = self
                .status
                .next_schedule_time
                .as_ref()
                .map(|t| format!("{}", slots.civil(t.0)))
                .unwrap_or_else(|| "never".into());
            (
                "Scheduled",
                format!(
                    "{:?} in {}: next run at {next}",
                    spec.schedule,
                    spec.time_zone.as_deref().unwrap_or("UTC")
                ),
            )
        };
        self.condition(READY, "True", reason, &message);
        self.condition(STALLED, "False", "Valid", "the spec is valid");
        wake
    }

    /// Under Replace, runs in flight older than the newest one still to be stopped
    /// (a restart between creating a run and stopping the ones it replaces).
    fn stop_replaced_leftovers(&mut self) {
        if self.schedule.spec.concurrency_policy != Some(ConcurrencyPolicy::Replace) {
            return;
        }
        self.stop = self
            .views
            .iter()
            .filter(|r| r.active())
            .skip(1)
            .filter(|r| !r.stop_requested)
            .map(|r| r.name.clone())
            .collect();
    }

    /// Applies the concurrency policy before `name` starts: false when it must not
    /// (Forbid with a run in flight, said in an Event); with Replace, the runs in
    /// flight are stopped.
    fn admit(&mut self, name: &str, what: &str) -> bool {
        let in_flight: Vec<&RunView> = self.views.iter().filter(|r| r.active()).collect();
        if in_flight.is_empty() {
            return true;
        }
        let names = in_flight
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        match self.schedule.spec.concurrency_policy.unwrap_or_default() {
            ConcurrencyPolicy::Allow => true,
            ConcurrencyPolicy::Forbid => {
                self.events.push(normal(
                    "Skipped",
                    format!("skipped {what}: {names} still in flight (concurrencyPolicy Forbid)"),
                ));
                false
            }
            ConcurrencyPolicy::Replace => {
                self.stop = in_flight
                    .iter()
                    .filter(|r| !r.stop_requested)
                    .map(|r| r.name.clone())
                    .collect();
                self.events.push(normal(
                    "Replaced",
                    format!("stopping {names} to start {name} (concurrencyPolicy Replace)"),
                ));
                true
            }
        }
    }

    fn create_run(&mut self, name: String, trigger: Trigger, at: Timestamp) {
        let run = template::run_for(self.schedule, name.clone(), &trigger, at);
        let why = match &trigger {
            Trigger::Slot(slot) => format!("for {slot}"),
            Trigger::RunNow(value) => format!("for {RUN_NOW_ANNOTATION} {value:?}"),
        };
        self.events
            .push(normal("Created", format!("created run {name} {why}")));
        self.status.active.push(crate::crd::schedule::ActiveRun {
            name,
            scheduled_time: Some(Time(at)),
            phase: None,
        });
        self.create = Some(NewRun {
            run,
            trigger,
            last_schedule_time_before: self.last_schedule_time_before.clone(),
        });
    }

    /// Finished runs beyond the history limits; an Event for each.
    fn history(&mut self) -> Vec<String> {
        let spec = &self.schedule.spec;
        let successful = spec
            .successful_runs_history_limit
            .unwrap_or(DEFAULT_SUCCESSFUL_RUNS_HISTORY_LIMIT) as usize;
        let failed = spec
            .failed_runs_history_limit
            .unwrap_or(DEFAULT_FAILED_RUNS_HISTORY_LIMIT) as usize;
        let doomed = runs::beyond_history(&self.views, successful, failed);
        for name in &doomed {
            self.events.push(normal(
                "Deleted",
                format!("deleted run {name}: beyond the history limits"),
            ));
        }
        doomed
    }
}
