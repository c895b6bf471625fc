//! Following a run: polls on the resource's interval, its state, tasks and error
//! mirrored into status, the end it comes to, and retries after platform failures.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Action, ApiFailure, EventType, FailureKind, Outcome, Step, conditions, mirror};
use crate::amperity::budget::backoff_ceiling;
use crate::amperity::wire::{Attribution, Workflow, WorkflowState};
use crate::crd::{AmperityWorkflowRunStatus, Attempt, Phase, StopReason};

impl Step<'_> {
    /// Running or Stopping: stop when asked, end a stop that never came, or poll.
    pub(super) fn in_flight(&mut self) -> Action {
        let Some(id) = self.status.workflow_id.clone() else {
            // Running without an id cannot happen through decide; recover by searching.
            self.set(Outcome::in_flight(
                Phase::Starting,
                "Starting",
                "the run id was lost; looking for the run",
            ));
            return self.starting_without_answer();
        };
        if let Some(action) = self.stop_overdue() {
            return action;
        }
        let stop_due = self.stop_due();
        if stop_due && self.polled_within(self.settings.quick_poll) {
            return self.stop(id);
        }
        // The poll a stop waits for is as urgent as the stop.
        self.memory.poll_before_stop = stop_due;
        let interval = if stop_due || self.status.phase == Some(Phase::Stopping) {
            // A stop is sent right after a poll has shown the run still going.
            self.settings.quick_poll
        } else {
            self.poll_interval()
        };
        if self.memory.end_reported {
            return Action::Poll(id);
        }
        match self.memory.last_polled {
            Some(at) => {
                let since = self.since(at);
                if since >= interval {
                    Action::Poll(id)
                } else {
                    Action::Requeue(interval - since)
                }
            }
            None => Action::Poll(id),
        }
    }

    fn polled_within(&self, d: Duration) -> bool {
        self.memory.last_polled.is_some_and(|at| self.since(at) < d)
    }

    pub(super) fn polled(&mut self, result: Result<Workflow, ApiFailure>) -> Action {
        self.note_throttling(result.as_ref().err());
        // A report of the end is settled by any answer but one that says nothing
        // (its retry still goes ahead of routine polls).
        self.memory.end_reported &= matches!(
            &result,
            Err(f) if matches!(f.kind, FailureKind::Transient | FailureKind::Unknown)
        );
        self.memory.poll_before_stop = false;
        let id = self.status.workflow_id.clone().unwrap_or_default();
        match result {
            Ok(w) => {
                let was_stalled = conditions::stalled_reason(&self.status).is_some();
                let was_failing =
                    self.memory.poll_failures >= self.settings.poll_failures_to_report;
                self.memory.poll_failures = 0;
                let previous_state = self.status.workflow.as_ref().and_then(|i| i.state.clone());
                self.observe(&w);
                if w.has_ended() {
                    return self.ended(&w);
                }
                if let WorkflowState::Unknown(raw) = &w.state
                    && previous_state.as_deref() != Some(raw.as_str())
                {
                    self.event(
                        EventType::Warning,
                        "UnknownState",
                        format!("Amperity reports the undocumented state {raw:?} for {id}; treating the run as still running"),
                    );
                }
                // Stopping once Amperity accepted the stop; until then, Running.
                let phase = if self.status.phase == Some(Phase::Stopping) {
                    Phase::Stopping
                } else {
                    Phase::Running
                };
                let current = self.status.status_line(&w);
                let reason = if phase == Phase::Stopping {
                    "Stopping"
                } else {
                    "Running"
                };
                // While a refused stop is being retried, the condition keeps saying so.
                let stop_backing_off = self.status.phase != Some(Phase::Stopping)
                    && self.stop_cause().is_some()
                    && self.memory.stop_failures > 0;
                if self.status.phase != Some(phase)
                    || (!stop_backing_off
                        && (was_stalled
                            || was_failing
                            || self.reconciling_message() != Some(current.as_str())))
                {
                    self.set(Outcome::in_flight(phase, reason, current));
                }
                if let Some(action) = self.stop_overdue() {
                    return action;
                }
                if self.stop_due() {
                    return self.stop(id);
                }
                let interval = if phase == Phase::Stopping {
                    self.settings.quick_poll
                } else {
                    self.poll_interval()
                };
                let stop_at = self
                    .memory
                    .next_stop_at
                    .filter(|_| stop_backing_off)
                    .map(|at| Duration::try_from(at.duration_since(self.now)).unwrap_or_default());
                Action::Requeue(stop_at.map_or(interval, |d| d.min(interval)))
            }
            Err(f) => match f.kind {
                FailureKind::NotFound => {
                    let message = format!(
                        "Amperity has no run {id} in tenant {} (HTTP 404): it was deleted, or spec.workflowId or the tenant is wrong",
                        self.run.spec.tenant()
                    );
                    self.finish(Phase::Failed, "WorkflowNotFound", message);
                    Action::AwaitChange
                }
                FailureKind::Auth => {
                    let phase = self.status.phase.unwrap_or(Phase::Running);
                    self.auth_failed(phase, &f.message)
                }
                FailureKind::NotAllowed => self.not_allowed(f.message),
                FailureKind::Rejected => {
                    let phase = self.status.phase.unwrap_or(Phase::Running);
                    self.stall(
                        phase,
                        "ApiRejected",
                        format!("Amperity rejected the status request: {}", f.message),
                    );
                    Action::Requeue(self.settings.stalled_recheck)
                }
                FailureKind::Transient | FailureKind::Unknown => self.poll_failed(&id, &f),
            },
        }
    }

    /// A poll without a usable answer. One is noise; several in a row are said in
    /// the Reconciling condition and one Event, so a person sees a run that is no
    /// longer being followed.
    fn poll_failed(&mut self, id: &str, f: &ApiFailure) -> Action {
        self.memory.poll_failures = self.memory.poll_failures.saturating_add(1);
        let n = self.memory.poll_failures;
        if n == self.settings.poll_failures_to_report {
            let message = format!(
                "the last {n} polls of Amperity run {id} failed (latest: {}); still trying",
                f.message
            );
            self.event(EventType::Warning, "PollsFailing", message.clone());
            let phase = self.status.phase.unwrap_or(Phase::Running);
            self.set(Outcome::in_flight(phase, "PollsFailing", message));
        }
        let wait = f
            .retry_after
            .unwrap_or_else(|| backoff_ceiling(n).max(self.settings.quick_poll))
            .min(self.poll_interval().max(self.settings.quick_poll));
        Action::Requeue(wait)
    }

    /// The run ended: record its outcome, or start the next attempt.
    pub(super) fn ended(&mut self, w: &Workflow) -> Action {
        let id = w.id.clone();
        let platform =
            w.error.as_ref().and_then(|e| e.attribution.as_ref()) == Some(&Attribution::Platform);
        let error_text = w
            .error
            .as_ref()
            .map(|e| mirror::truncate(&e.message))
            .unwrap_or_default();
        match &w.state {
            WorkflowState::Canceled | WorkflowState::Stopped => {
                let (phase, reason, text) = match self.status.stop_reason {
                    Some(StopReason::Timeout) => (
                        Phase::TimedOut,
                        "TimedOut",
                        format!(
                            "Amperity run {id} was stopped because spec.timeout ({}) passed",
                            self.run.spec.timeout.as_deref().unwrap_or("?")
                        ),
                    ),
                    Some(_) => (
                        Phase::Canceled,
                        "Canceled",
                        format!("Amperity run {id} was stopped as spec.stop asked"),
                    ),
                    None => (
                        Phase::Canceled,
                        "Canceled",
                        format!("Amperity run {id} was stopped outside the operator"),
                    ),
                };
                self.finish(phase, reason, text);
            }
            WorkflowState::Failed => {
                let limit = self.run.spec.retry.map(|r| r.limit).unwrap_or(0) as usize;
                if platform
                    && self.status.attempts.len() < limit
                    && self.status.stop_reason.is_none()
                    && self.wanted_stop().is_none()
                {
                    return self.retry(w);
                }
                let reason = match w.error.as_ref().and_then(|e| e.attribution.as_ref()) {
                    Some(Attribution::Customer) => "CustomerError",
                    Some(Attribution::Platform) if limit > 0 => "RetriesExhausted",
                    Some(Attribution::Platform) => "PlatformError",
                    _ => "Failed",
                };
                let hint = match reason {
                    "CustomerError" => "fix the configuration in Amperity, then create a new run",
                    "PlatformError" => {
                        "a platform error is usually transient: create a new run, or set spec.retry"
                    }
                    "RetriesExhausted" => {
                        "every attempt failed with a platform error; contact Amperity support if it persists"
                    }
                    _ => "see the run in Amperity for details",
                };
                self.finish(
                    Phase::Failed,
                    reason,
                    format!("Amperity run {id} failed: {error_text}; {hint}"),
                );
            }
            WorkflowState::Succeeded | WorkflowState::Skipped => {
                self.finish(
                    Phase::Succeeded,
                    "Succeeded",
                    format!("Amperity run {id} succeeded"),
                );
            }
            other => {
                // Ended by `ended_at` in a state we do not know: the error decides.
                if w.error.is_some() {
                    self.finish(
                        Phase::Failed,
                        "Failed",
                        format!("Amperity run {id} ended in state {other}: {error_text}"),
                    );
                } else {
                    self.finish(
                        Phase::Succeeded,
                        "Succeeded",
                        format!("Amperity run {id} ended in state {other} without an error"),
                    );
                }
            }
        }
        self.finished_next()
    }

    fn retry(&mut self, w: &Workflow) -> Action {
        let attempt = Attempt {
            workflow_id: w.id.clone(),
            state: Some(w.state.as_str().to_string()),
            started_at: self.status.started_at.clone(),
            completed_at: Some(Time(self.now)),
            error: w.error.as_ref().map(mirror::run_error),
        };
        self.status.attempts.push(attempt);
        let n = self.status.attempts.len();
        let limit = self.run.spec.retry.map(|r| r.limit).unwrap_or(0);
        let wait = self.retry_wait().unwrap_or_default();
        let message = format!(
            "Amperity run {} failed with a platform error ({}); starting attempt {} of {} in {}s",
            w.id,
            w.error
                .as_ref()
                .map(|e| mirror::truncate(&e.message))
                .unwrap_or_default(),
            n + 1,
            limit + 1,
            wait.as_secs()
        );
        self.event(EventType::Warning, "Retrying", message.clone());
        self.status.workflow_id = None;
        self.status.started_at = None;
        self.status.search_started_at = None;
        self.status.workflow = None;
        self.status.tasks = None;
        self.status.error = None;
        self.set(Outcome::in_flight(Phase::Pending, "Retrying", message));
        Action::Requeue(wait)
    }

    /// Time left before the next retry attempt may start, if any.
    pub(super) fn retry_wait(&self) -> Option<Duration> {
        let last = self.status.attempts.last()?.completed_at.as_ref()?.0;
        let n = self.status.attempts.len() as u32;
        let backoff = self
            .settings
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
            .min(Duration::from_secs(600));
        let since = self.since(last);
        (since < backoff).then(|| backoff - since)
    }

    pub(super) fn poll_interval(&self) -> Duration {
        super::poll_interval(self.run, self.settings)
    }
}

pub(super) trait StatusLine {
    fn status_line(&self, w: &Workflow) -> String;
}

impl StatusLine for AmperityWorkflowRunStatus {
    /// The Reconciling message while in flight: changes only when the state or task
    /// progress does, so an unchanged poll writes nothing.
    fn status_line(&self, w: &Workflow) -> String {
        match &self.tasks {
            Some(t) if t.total > 0 => format!(
                "Amperity run {} is {}: {} tasks done",
                w.id, w.state, t.progress
            ),
            _ => format!("Amperity run {} is {}", w.id, w.state),
        }
    }
}
