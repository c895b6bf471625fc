//! A run made from the schedule's `runTemplate`: its name, labels, annotations and
//! owner, the same for the reconciler and for `local`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::{
    SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION, TRIGGER_ANNOTATION, TRIGGER_RUN_NOW, TRIGGER_SCHEDULE,
    Trigger, run_now_run_name,
};
use crate::crd::AmperityWorkflowRun;
use crate::crd::schedule::AmperityWorkflowSchedule;
use crate::run::decide::START_DEADLINE_ANNOTATION;

/// The run `schedule` creates as `name` for `trigger`, at `at` (the slot, or when a
/// run-now value was acted on): the template's spec (never stopped, never following
/// an existing Amperity run), its labels and annotations plus the schedule's own,
/// and the schedule as its controller owner (when it has a uid).
pub fn run_for(
    schedule: &AmperityWorkflowSchedule,
    name: String,
    trigger: &Trigger,
    at: Timestamp,
) -> AmperityWorkflowRun {
    let template = &schedule.spec.run_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels;
    labels.insert(SCHEDULE_LABEL.into(), schedule.name_any());
    let mut annotations = meta.annotations;
    annotations.insert(SCHEDULED_AT_ANNOTATION.into(), at.to_string());
    let kind = match trigger {
        Trigger::Slot(_) => TRIGGER_SCHEDULE,
        Trigger::RunNow(_) => TRIGGER_RUN_NOW,
    };
    annotations.insert(TRIGGER_ANNOTATION.into(), kind.into());
    if let (Trigger::Slot(slot), Some(seconds)) = (trigger, schedule.spec.starting_deadline_seconds)
        && let Ok(deadline) = slot.checked_add(SignedDuration::from_secs(seconds.max(0)))
    {
        annotations.insert(START_DEADLINE_ANNOTATION.into(), deadline.to_string());
    }
    let mut spec = template.spec.clone();
    spec.stop = false;
    spec.workflow_id = None;
    AmperityWorkflowRun {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: schedule.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: schedule.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// The run a new `amperity.dev/run-now` value would start on `schedule` at `now`
/// (`local` runs it once, with no cluster).
pub fn run_now(
    schedule: &AmperityWorkflowSchedule,
    value: &str,
    now: Timestamp,
) -> AmperityWorkflowRun {
    let count = schedule
        .status
        .as_ref()
        .map_or(0, |s| s.run_now_count)
        .saturating_add(1);
    let name = run_now_run_name(&schedule.name_any(), count);
    run_for(schedule, name, &Trigger::RunNow(value.to_string()), now)
}
