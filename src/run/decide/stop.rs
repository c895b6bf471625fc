//! Stopping a run: `spec.stop`, and `timeout`, which bounds a resource's whole life
//! from its first start attempt. A stop is sent after a poll has shown the run still
//! going (a run that ended on its own keeps its own outcome); a refused stop looks
//! at the run again and retries with backoff; and `Stopping` is bounded.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Action, ApiFailure, EventType, FailureKind, Outcome, Step};
use crate::amperity::budget::backoff_ceiling;
use crate::amperity::wire::Workflow;
use crate::crd::{Phase, StopReason};
use crate::run::validate;

impl Step<'_> {
    /// Why the run should be stopped now, if it should.
    pub(super) fn wanted_stop(&self) -> Option<StopReason> {
        if self.run.spec.stop {
            return Some(StopReason::Requested);
        }
        let deadline = self.deadline()?;
        (self.now >= deadline).then_some(StopReason::Timeout)
    }

    /// When `timeout` runs out: its length after the first start attempt (retries,
    /// deferred starts and a person's `retry` included), or, before any attempt was
    /// recorded, after the resource's creation: a resource that can never start is
    /// bounded too. None without a timeout, or past the end of time.
    fn deadline(&self) -> Option<jiff::Timestamp> {
        let timeout = self
            .run
            .spec
            .timeout
            .as_deref()
            .and_then(validate::parse_duration)?;
        let first_attempt = self
            .status
            .first_attempt_at
            .as_ref()
            // Statuses written before firstAttemptAt existed.
            .or_else(|| {
                self.status
                    .attempts
                    .first()
                    .and_then(|a| a.started_at.as_ref())
            })
            .or(self.status.started_at.as_ref())
            .or(self.run.metadata.creation_timestamp.as_ref())?
            .0;
        Self::after(first_attempt, timeout)
    }

    /// Why the run is being stopped: the reason recorded with the intent to stop,
    /// else the one that holds now.
    pub(super) fn stop_cause(&self) -> Option<StopReason> {
        self.status.stop_reason.or_else(|| self.wanted_stop())
    }

    /// A stop is wanted and not accepted yet (phase Stopping), and not held back by
    /// a recent failure.
    pub(super) fn stop_due(&self) -> bool {
        self.status.phase != Some(Phase::Stopping)
            && self.stop_cause().is_some()
            && self.memory.next_stop_at.is_none_or(|at| self.now >= at)
    }

    /// Sends the stop, recording first why and when it was asked for: an answer
    /// lost on the way back still leaves the reason on record, and it decides the
    /// phase the run ends in.
    pub(super) fn stop(&mut self, id: String) -> Action {
        if self.status.stop_reason.is_none() {
            self.status.stop_reason = self.wanted_stop();
        }
        if self.status.stop_requested_at.is_none() {
            self.status.stop_requested_at = Some(Time(self.now));
        }
        Action::Stop(id)
    }

    /// A stop asked for longer than the grace period ago and not seen done (refused
    /// every time, or accepted and never carried out): the run ends StopUnconfirmed.
    pub(super) fn stop_overdue(&mut self) -> Option<Action> {
        if !matches!(self.status.phase, Some(Phase::Running | Phase::Stopping)) {
            return None;
        }
        let reason = self.status.stop_reason?;
        let sent = self.status.stop_requested_at.as_ref()?.0;
        if self.since(sent) < self.settings.stop_grace {
            return None;
        }
        let id = self.status.workflow_id.clone().unwrap_or_default();
        let phase = match reason {
            StopReason::Timeout => Phase::TimedOut,
            _ => Phase::Canceled,
        };
        let grace = self.settings.stop_grace.as_secs();
        let message = if self.status.phase == Some(Phase::Stopping) {
            format!(
                "Amperity accepted the stop of run {id} (first asked at {sent}) but has not reported it stopped after {grace}s; check the run in Amperity"
            )
        } else {
            format!(
                "Amperity did not accept the stop of run {id} (first asked at {sent}, {} failure(s) since this operator started) within {grace}s; the run may still be going: stop it in Amperity",
                self.memory.stop_failures
            )
        };
        self.finish(phase, "StopUnconfirmed", message);
        Some(self.finished_next())
    }

    pub(super) fn stop_sent(&mut self, result: Result<Workflow, ApiFailure>) -> Action {
        self.note_throttling(result.as_ref().err());
        let reason = self.stop_cause().unwrap_or(StopReason::Requested);
        let id = self.status.workflow_id.clone().unwrap_or_default();
        match result {
            Ok(w) => {
                self.status.stop_reason = Some(reason);
                if self.status.stop_requested_at.is_none() {
                    self.status.stop_requested_at = Some(Time(self.now));
                }
                self.memory.stop_failures = 0;
                self.memory.next_stop_at = None;
                self.observe(&w);
                if w.has_ended() {
                    return self.ended(&w);
                }
                let why = match reason {
                    StopReason::Timeout => format!(
                        "spec.timeout ({}) passed",
                        self.run.spec.timeout.as_deref().unwrap_or("?")
                    ),
                    _ => "spec.stop is true".to_string(),
                };
                self.event(
                    EventType::Normal,
                    "Stopping",
                    format!("asked Amperity to stop {id}: {why}"),
                );
                self.set(Outcome::in_flight(
                    Phase::Stopping,
                    "Stopping",
                    format!("stopping {id}: {why}"),
                ));
                Action::Requeue(self.settings.quick_poll)
            }
            Err(f) => match f.kind {
                FailureKind::NotFound => self.polled(Err(f)),
                FailureKind::Auth => {
                    let phase = self.status.phase.unwrap_or(Phase::Running);
                    self.auth_failed(phase, &f.message)
                }
                FailureKind::NotAllowed => self.not_allowed(f.message),
                FailureKind::Rejected | FailureKind::Transient | FailureKind::Unknown => {
                    self.stop_failed(&id, &f)
                }
            },
        }
    }

    /// A stop that did not go through (often: the run had just ended, and stop
    /// stops only a running workflow). Look at the run first: its own end, if it
    /// came, is the truth; otherwise try again later, backing off.
    fn stop_failed(&mut self, id: &str, f: &ApiFailure) -> Action {
        self.memory.stop_failures = self.memory.stop_failures.saturating_add(1);
        let n = self.memory.stop_failures;
        let wait = f
            .retry_after
            .unwrap_or_else(|| backoff_ceiling(n))
            .max(self.settings.quick_poll)
            .min(Duration::from_secs(300));
        self.memory.next_stop_at = Self::after(self.now, wait);
        if n == 1 {
            self.event(
                EventType::Warning,
                "StopFailed",
                format!(
                    "Amperity did not accept the stop of run {id} ({}); looking at the run and trying again with backoff",
                    f.message
                ),
            );
        }
        let phase = self.status.phase.unwrap_or(Phase::Running);
        self.set(Outcome::in_flight(
            phase,
            "StopFailing",
            format!(
                "the stop of Amperity run {id} failed {n} time(s) (latest: {}); the run is polled, and the stop is tried again in {}s",
                f.message,
                wait.as_secs()
            ),
        ));
        Action::Poll(id.to_string())
    }
}
