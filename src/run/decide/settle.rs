//! An end the change feed's list reported: the list's answer settles the outcome
//! (state, `ended_at`, error) at once, and the verbose read for the final task
//! summary comes later, at routine priority. A read that disagrees with the list
//! is told (an Event, and the driver counts it); a finished status never moves
//! back.

use std::time::Duration;

use super::{Action, ApiFailure, EventType, FailureKind, Step, mirror};
use crate::amperity::wire::Workflow;
use crate::crd::Phase;

/// Failed summary reads tried again, at most: the outcome is already settled.
const SUMMARY_TRIES: u32 = 3;

impl Step<'_> {
    /// The list reports this resource's run ended: settle it from the list's
    /// answer. Anything else (another run, not ended, a resource not in flight)
    /// changes nothing, as if nothing had been learned.
    pub(super) fn listed(&mut self, w: Workflow) -> Action {
        let ours = self.status.workflow_id.as_deref() == Some(w.id.as_str());
        let in_flight = matches!(self.status.phase, Some(Phase::Running | Phase::Stopping));
        if !ours || !in_flight || !w.has_ended() {
            return self.next();
        }
        self.memory.end_reported = false;
        self.memory.poll_failures = 0;
        // A list item has no task instances: the summary of the last poll stays
        // until the read below.
        self.observe(&w);
        let action = self.ended(&w);
        if !self.status.phase.is_some_and(Phase::is_finished) {
            // Another attempt is on its way (a platform failure under spec.retry).
            return action;
        }
        self.memory.summary_due = true;
        self.after_finish()
    }

    /// The read for the final task summary of a run the list settled.
    pub(super) fn summary(&mut self, result: Result<Workflow, ApiFailure>) -> Action {
        self.note_throttling(result.as_ref().err());
        let id = self.status.workflow_id.clone().unwrap_or_default();
        match result {
            Ok(w) => {
                self.memory.summary_due = false;
                self.memory.poll_failures = 0;
                let read = mirror::workflow_info(&w, None);
                let listed = self.status.workflow.clone().unwrap_or_default();
                if w.id == id
                    && w.has_ended()
                    && read.state == listed.state
                    && read.ended_at == listed.ended_at
                {
                    self.observe(&w);
                } else {
                    self.memory.list_disagreed = true;
                    let said = |state: Option<String>, ended: Option<String>| {
                        format!(
                            "{} (ended {})",
                            state.as_deref().unwrap_or("?"),
                            ended.as_deref().unwrap_or("-")
                        )
                    };
                    self.event(
                        EventType::Warning,
                        "ListDisagreed",
                        format!(
                            "Amperity's list reported run {id} {}; a later read of {} says {}; the status keeps the list's outcome",
                            said(listed.state, listed.ended_at),
                            w.id,
                            said(read.state, read.ended_at),
                        ),
                    );
                }
                self.finished_next()
            }
            Err(f)
                if matches!(f.kind, FailureKind::Transient | FailureKind::Unknown)
                    && self.memory.poll_failures + 1 < SUMMARY_TRIES =>
            {
                self.memory.poll_failures += 1;
                Action::Requeue(
                    f.retry_after
                        .unwrap_or(Duration::ZERO)
                        .max(self.settings.quick_poll),
                )
            }
            Err(_) => {
                // The outcome stands; the summary stays the last poll's.
                self.memory.summary_due = false;
                self.memory.poll_failures = 0;
                self.finished_next()
            }
        }
    }

    /// What a finished run does next: its summary read when one is due, unless
    /// `ttlSecondsAfterFinished` has come (the resource goes, read or not).
    pub(super) fn after_finish(&mut self) -> Action {
        let after = self.finished_next();
        match &self.status.workflow_id {
            Some(id) if self.memory.summary_due && after != Action::Delete => {
                Action::Poll(id.clone())
            }
            _ => after,
        }
    }
}
