//! What a schedule sees of its runs: which are in flight, which finished and how,
//! and which fall outside the history limits.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{SCHEDULED_AT_ANNOTATION, TRIGGER_ANNOTATION, TRIGGER_SCHEDULE};
use crate::bounded::cut;
use crate::crd::schedule::{ActiveRun, LastRun};
use crate::crd::{AmperityWorkflowRun, Phase};

/// Longest run message copied into the schedule's status, in bytes.
const MAX_MESSAGE_BYTES: usize = 512;
/// Longest run reason and name copied into the schedule's status, in bytes.
const MAX_REASON_BYTES: usize = 128;
const MAX_NAME_BYTES: usize = 253;

/// One run of the schedule, as the decisions need it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunView {
    pub name: String,
    /// The slot it was created for (a run-now run: when it was requested).
    pub scheduled_at: Option<Timestamp>,
    /// Created for a slot rather than by `amperity.dev/run-now`.
    pub on_schedule: bool,
    pub phase: Option<Phase>,
    pub completed_at: Option<Timestamp>,
    pub stop_requested: bool,
    pub deleting: bool,
    /// The run's Succeeded condition: reason and message.
    pub outcome: Option<(String, String)>,
}

impl RunView {
    pub fn of(run: &AmperityWorkflowRun) -> RunView {
        let annotations = run.annotations();
        let status = run.status.as_ref();
        RunView {
            name: run.name_any(),
            scheduled_at: annotations
                .get(SCHEDULED_AT_ANNOTATION)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .or_else(|| run.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            on_schedule: annotations.get(TRIGGER_ANNOTATION).map(String::as_str)
                == Some(TRIGGER_SCHEDULE),
            phase: run.phase(),
            completed_at: status.and_then(|s| s.completed_at.as_ref()).map(|t| t.0),
            stop_requested: run.spec.stop,
            deleting: run.metadata.deletion_timestamp.is_some(),
            outcome: status
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Succeeded"))
                .map(|c| (c.reason.clone(), c.message.clone())),
        }
    }

    pub fn finished(&self) -> bool {
        self.phase.is_some_and(Phase::is_finished)
    }

    /// In flight: not finished and not on its way out.
    pub fn active(&self) -> bool {
        !self.finished() && !self.deleting
    }

    fn key(&self) -> (Option<Timestamp>, &str) {
        (self.scheduled_at, &self.name)
    }
}

/// Newest first, by scheduled time, then name.
pub fn newest_first(runs: &mut [RunView]) {
    runs.sort_by(|a, b| b.key().cmp(&a.key()));
}

pub fn active(runs: &[RunView]) -> Vec<ActiveRun> {
    runs.iter()
        .filter(|r| r.active())
        .map(|r| ActiveRun {
            name: r.name.clone(),
            scheduled_time: r.scheduled_at.map(Time),
            phase: r.phase,
        })
        .collect()
}

/// The run that finished last, when it finished later than what status recorded.
pub fn last_run(runs: &[RunView], recorded: Option<&LastRun>) -> Option<LastRun> {
    let key = |r: &RunView| (r.completed_at, r.scheduled_at);
    let newest = runs
        .iter()
        .filter(|r| r.finished())
        .max_by_key(|r| key(r))?;
    if let Some(recorded) = recorded {
        let recorded_key = (
            recorded.completed_at.as_ref().map(|t| t.0),
            recorded.scheduled_time.as_ref().map(|t| t.0),
        );
        if key(newest) < recorded_key {
            return None;
        }
    }
    Some(LastRun {
        name: cut(&newest.name, MAX_NAME_BYTES),
        scheduled_time: newest.scheduled_at.map(Time),
        result: newest.phase?,
        completed_at: newest.completed_at.map(Time),
        reason: newest
            .outcome
            .as_ref()
            .map(|(reason, _)| cut(reason, MAX_REASON_BYTES)),
        message: newest
            .outcome
            .as_ref()
            .map(|(_, message)| cut(message, MAX_MESSAGE_BYTES)),
    })
}

/// When the newest successful run finished, if later than `recorded`.
pub fn last_successful(runs: &[RunView], recorded: Option<Timestamp>) -> Option<Timestamp> {
    runs.iter()
        .filter(|r| r.phase == Some(Phase::Succeeded))
        .filter_map(|r| r.completed_at)
        .chain(recorded)
        .max()
}

/// The scheduled time of the newest run created on schedule.
pub fn newest_slot(runs: &[RunView]) -> Option<Timestamp> {
    runs.iter()
        .filter(|r| r.on_schedule)
        .filter_map(|r| r.scheduled_at)
        .max()
}

/// Finished runs beyond the history limits, oldest first.
pub fn beyond_history(runs: &[RunView], successful: usize, failed: usize) -> Vec<String> {
    let mut kept = (0, 0);
    let mut doomed: Vec<String> = runs
        .iter()
        .filter(|r| r.finished() && !r.deleting)
        .filter(|r| {
            let (count, limit) = if r.phase == Some(Phase::Succeeded) {
                (&mut kept.0, successful)
            } else {
                (&mut kept.1, failed)
            };
            *count += 1;
            *count > limit
        })
        .map(|r| r.name.clone())
        .collect();
    doomed.reverse();
    doomed
}
