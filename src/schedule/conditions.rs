//! The schedule's conditions. kstatus reads `Stalled=True` as Failed and anything
//! else (with a current observedGeneration) as Current, so a schedule is unhealthy
//! only while its spec is invalid; how the last run ended is its own condition and
//! never makes the schedule itself unhealthy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::bounded::cut;
use crate::crd::Phase;
use crate::crd::schedule::LastRun;

pub const READY: &str = "Ready";
pub const STALLED: &str = "Stalled";
pub const LAST_RUN_SUCCEEDED: &str = "LastRunSucceeded";
/// The longest condition message (an API server's refusal can be long).
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 1024;

/// One condition's wanted state.
pub struct Wanted<'a> {
    pub kind: &'static str,
    pub status: &'static str,
    pub reason: &'a str,
    pub message: &'a str,
}

/// Sets a condition, keeping its `lastTransitionTime` when its status is unchanged.
pub fn set(conditions: &mut Vec<Condition>, wanted: Wanted, generation: Option<i64>, now: Time) {
    let existing = conditions.iter_mut().find(|c| c.type_ == wanted.kind);
    let last_transition_time = match &existing {
        Some(c) if c.status == wanted.status => c.last_transition_time.clone(),
        _ => now,
    };
    let fresh = Condition {
        type_: wanted.kind.to_string(),
        status: wanted.status.to_string(),
        reason: wanted.reason.to_string(),
        message: cut(wanted.message, MAX_CONDITION_MESSAGE_BYTES),
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(c) => *c = fresh,
        None => conditions.push(fresh),
    }
}

pub fn get<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

/// `LastRunSucceeded` for the most recent finished run.
pub fn last_run(last: Option<&LastRun>) -> (&'static str, String, String) {
    let Some(last) = last else {
        return (
            "Unknown",
            "NoRunFinished".into(),
            "no run of this schedule has finished yet".into(),
        );
    };
    let reason = last
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| last.result.as_str().to_string());
    let detail = last
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    if last.result == Phase::Succeeded {
        (
            "True",
            reason,
            format!("run {} succeeded{detail}", last.name),
        )
    } else {
        (
            "False",
            reason,
            format!("run {} ended {}{detail}", last.name, last.result.as_str()),
        )
    }
}
