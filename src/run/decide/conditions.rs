//! The five conditions waiting tools read, derived from one `Outcome` so that they
//! can never contradict each other.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{AmperityWorkflowRunStatus, Phase};

pub const SUCCEEDED: &str = "Succeeded";
pub const FINISHED: &str = "Finished";
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// The longest condition message: five conditions carry the same message, and it
/// may quote Amperity (an error, an API answer), so it is bounded once here.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Where the run stands, as conditions say it: the phase, a CamelCase reason and a
/// message a person can act on. `stalled` marks an in-flight run that cannot go
/// on without a person (bad Secret, failed auth, an unconfirmed start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub phase: Phase,
    pub reason: String,
    pub message: String,
    pub stalled: bool,
}

impl Outcome {
    pub fn in_flight(phase: Phase, reason: &str, message: impl Into<String>) -> Self {
        Outcome {
            phase,
            reason: reason.to_string(),
            message: message.into(),
            stalled: false,
        }
    }

    pub fn stalled(phase: Phase, reason: &str, message: impl Into<String>) -> Self {
        Outcome {
            stalled: true,
            ..Outcome::in_flight(phase, reason, message)
        }
    }

    pub fn finished(phase: Phase, reason: &str, message: impl Into<String>) -> Self {
        debug_assert!(phase.is_finished());
        Outcome::in_flight(phase, reason, message)
    }
}

/// Writes the phase and all five conditions for `outcome`, keeping each
/// condition's `lastTransitionTime` when its status did not change.
pub fn apply(
    status: &mut AmperityWorkflowRunStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    now: Time,
) {
    status.phase = Some(outcome.phase);
    let message = crate::bounded::cut(&outcome.message, MAX_MESSAGE_BYTES);
    let (reason, message) = (outcome.reason.as_str(), message.as_str());
    let finished = outcome.phase.is_finished();
    let succeeded = outcome.phase == Phase::Succeeded;

    let succeeded_status = match (finished, succeeded) {
        (true, true) => "True",
        (true, false) => "False",
        (false, _) => "Unknown",
    };
    let stalled = outcome.stalled || (finished && !succeeded);
    let wanted = [
        (SUCCEEDED, succeeded_status),
        (FINISHED, if finished { "True" } else { "False" }),
        (READY, if succeeded { "True" } else { "False" }),
        (
            RECONCILING,
            if !finished && !outcome.stalled {
                "True"
            } else {
                "False"
            },
        ),
        (STALLED, if stalled { "True" } else { "False" }),
    ];
    for (kind, value) in wanted {
        set(status, kind, value, reason, message, generation, &now);
    }
}

fn set(
    status: &mut AmperityWorkflowRunStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let fresh = Condition {
        type_: kind.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    };
    match status.conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) => {
            let transition_time = if existing.status == value {
                existing.last_transition_time.clone()
            } else {
                now.clone()
            };
            *existing = Condition {
                last_transition_time: transition_time,
                ..fresh
            };
        }
        None => status.conditions.push(fresh),
    }
}

/// The condition of the given type, if set.
pub fn get<'a>(status: &'a AmperityWorkflowRunStatus, kind: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == kind)
}

/// The reason the run is stalled, if it is.
pub fn stalled_reason(status: &AmperityWorkflowRunStatus) -> Option<&str> {
    get(status, STALLED)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.as_str())
}

/// Restamps every condition with the current generation (a `stop` edit bumps it).
pub fn stamp_generation(status: &mut AmperityWorkflowRunStatus, generation: Option<i64>) {
    status.observed_generation = generation;
    for c in &mut status.conditions {
        c.observed_generation = generation;
    }
}
