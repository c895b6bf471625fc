//! Which slot is due, what was missed before it, and what becomes of it (run,
//! skipped, past its deadline); when the schedule's slots count from (its creation,
//! the last edit of its pattern); whether Forbid has it blocked.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::super::cron::CronSchedule;
use super::super::runs;
use super::super::*;
use super::Step;
use crate::crd::schedule::ConcurrencyPolicy;

impl Step<'_> {
    /// The most recent slot at or before now that nothing has handled yet, and the
    /// last time handled before it (a slot run or skipped, the creation, an edit).
    pub(super) fn due_slot(&self, slots: &CronSchedule) -> Option<(Timestamp, Option<Timestamp>)> {
        let slot = slots.latest_at_or_before(self.now)?;
        let handled = [
            self.previous.last_schedule_time.as_ref().map(|t| t.0),
            self.previous.last_skipped_time.as_ref().map(|t| t.0),
            runs::newest_slot(&self.views),
            // Slots before the schedule existed, or before its pattern was last
            // edited, are not missed, they never were.
            self.floor(),
        ]
        .into_iter()
        .flatten()
        .max();
        (handled.is_none_or(|h| slot > h)).then_some((slot, handled))
    }

    /// Slots strictly between `since` (the last one handled) and `slot` (the one
    /// handled now) were missed: the operator was down or could not reach the API
    /// server. Only the most recent is ever considered (never a burst), so the others
    /// are said once, with their count, in a Warning Event (CronJob's
    /// TooManyMissedTimes). A suspended schedule is meant to skip: nothing to say.
    pub(super) fn missed_before(
        &mut self,
        slots: &CronSchedule,
        since: Option<Timestamp>,
        slot: Timestamp,
    ) {
        let Some(since) = since.filter(|_| !self.schedule.spec.suspend) else {
            return;
        };
        let mut count = 0;
        let mut at = since;
        while count <= MAX_MISSED_COUNTED {
            match slots.next_after(at) {
                Some(next) if next < slot => {
                    count += 1;
                    at = next;
                }
                _ => break,
            }
        }
        if count == 0 {
            return;
        }
        let shown = if count > MAX_MISSED_COUNTED {
            format!("more than {MAX_MISSED_COUNTED}")
        } else {
            count.to_string()
        };
        self.events.push(warning(
            "MissedScheduledTimes",
            format!(
                "{shown} scheduled times between {since} and {slot} were missed (the operator was not running, or could not reach the API server) and will not run; only the most recent, {slot}, is considered"
            ),
        ));
    }

    pub(super) fn slot(&mut self, slot: Timestamp) {
        let spec = &self.schedule.spec;
        if spec.suspend {
            // Quietly: a suspended schedule is meant to skip.
            self.status.last_skipped_time = Some(Time(slot));
            return;
        }
        let late = self.now.duration_since(slot);
        if let Some(deadline) = spec.starting_deadline_seconds
            && late > SignedDuration::from_secs(deadline)
        {
            self.status.last_skipped_time = Some(Time(slot));
            self.events.push(warning(
                "MissedSchedule",
                format!(
                    "skipped the run due at {slot}: it is {}s late, past startingDeadlineSeconds ({deadline}s)",
                    late.as_secs()
                ),
            ));
            return;
        }
        let name = slot_run_name(&self.name(), slot);
        if !self.admit(&name, &format!("the run due at {slot}")) {
            self.status.last_skipped_time = Some(Time(slot));
            return;
        }
        self.last_schedule_time_before = self.status.last_schedule_time.clone();
        self.status.last_schedule_time = Some(Time(slot));
        self.create_run(name, Trigger::Slot(slot), slot);
    }

    /// The time before which no slot counts as missed: the schedule's creation, or
    /// the last edit of its pattern or time zone.
    pub(super) fn floor(&self) -> Option<Timestamp> {
        let created = self
            .schedule
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0);
        let edited = self.status.observed_schedule_since.as_ref().map(|t| t.0);
        created.max(edited)
    }

    /// Records the pattern the slots are read from; an edit of the schedule or the
    /// time zone counts like a creation (its earlier slots are not missed).
    pub(super) fn observe_pattern(&mut self) {
        let spec = &self.schedule.spec;
        let pattern = format!(
            "{} in {}",
            spec.schedule.trim(),
            spec.time_zone.as_deref().unwrap_or("UTC")
        );
        let since = match self.previous.observed_schedule.as_deref() {
            Some(seen) if seen != pattern => Some(Time(self.now)),
            _ => self.previous.observed_schedule_since.clone(),
        };
        self.status.observed_schedule = Some(pattern);
        self.status.observed_schedule_since = since;
    }

    /// Why the schedule is blocked, when it is: under Forbid, a run in flight since
    /// before the latest slot (which was then skipped behind it).
    pub(super) fn blocked(&self, slots: &CronSchedule) -> Option<String> {
        let spec = &self.schedule.spec;
        if spec.suspend || spec.concurrency_policy.unwrap_or_default() != ConcurrencyPolicy::Forbid
        {
            return None;
        }
        let latest = slots.latest_at_or_before(self.now)?;
        if self.floor().is_some_and(|floor| latest <= floor) {
            return None;
        }
        let oldest = self
            .views
            .iter()
            .filter(|r| r.active())
            .rfind(|r| r.scheduled_at.is_some_and(|at| at < latest))?;
        let since = oldest
            .scheduled_at
            .map(|t| t.to_string())
            .unwrap_or_default();
        Some(format!(
            "blocked since {since}: run {} is still in flight and concurrencyPolicy Forbid skips every slot behind it (the last at {latest}); stop or delete it, or let its spec.timeout end it",
            oldest.name
        ))
    }
}
