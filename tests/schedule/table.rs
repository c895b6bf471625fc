//! Table tests of the schedule's pure decisions: for a schedule, its runs and the
//! time, which run is created (if any), what is skipped, stopped or deleted, the
//! status and conditions, the Events, and when to look again.

use amperity_operator::crd::schedule::{AmperityWorkflowSchedule, AmperityWorkflowScheduleStatus};
use amperity_operator::crd::{AmperityWorkflowRun, Phase};
use amperity_operator::run::decide::{EventType, START_DEADLINE_ANNOTATION};
use amperity_operator::schedule::{
    MAX_HANDLED_RUN_NOW, Plan, RUN_NOW_ANNOTATION, SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION,
    TRIGGER_ANNOTATION, Trigger, decide, slot_run_name,
};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

const UID: &str = "sched-uid";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The schedule was created at 05:30 on 2025-04-18; "0 6 * * *" in UTC unless changed.
fn schedule(spec: Value, status: Option<Value>) -> AmperityWorkflowSchedule {
    let mut full = json!({
        "schedule": "0 6 * * *",
        "runTemplate": {
            "metadata": {"labels": {"team": "data"}, "annotations": {"note": "nightly"}},
            "spec": {"tenant": "socktown", "tokenSecretRef": {"name": "amperity-api"},
                     "configId": "cg-nightly", "runMode": "source"}
        }
    });
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let mut obj = json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowSchedule",
        "metadata": {"name": "nightly", "namespace": "marketing", "uid": UID, "generation": 2,
                     "creationTimestamp": "2025-04-18T05:30:00Z"},
        "spec": full,
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    serde_json::from_value(obj).unwrap()
}

fn with_annotation(
    mut s: AmperityWorkflowSchedule,
    key: &str,
    value: &str,
) -> AmperityWorkflowSchedule {
    s.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
    s
}

/// A run of the schedule: `phase` None is not reconciled yet.
fn run(name: &str, scheduled: &str, trigger: &str, phase: Option<&str>) -> AmperityWorkflowRun {
    let mut status = json!({});
    if let Some(p) = phase {
        status["phase"] = json!(p);
        if matches!(p, "Succeeded" | "Failed" | "Canceled" | "TimedOut") {
            status["completedAt"] = json!(scheduled.replace("T06:00", "T06:20"));
            let (ok, reason) = if p == "Succeeded" {
                ("True", "Succeeded")
            } else {
                ("False", "CustomerError")
            };
            status["conditions"] = json!([{"type": "Succeeded", "status": ok, "reason": reason,
                "message": format!("{name} says {p}"), "lastTransitionTime": scheduled}]);
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": name, "namespace": "marketing",
            "labels": {SCHEDULE_LABEL: "nightly"},
            "annotations": {SCHEDULED_AT_ANNOTATION: scheduled, TRIGGER_ANNOTATION: trigger},
            "ownerReferences": [{"apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowSchedule",
                "name": "nightly", "uid": UID, "controller": true}],
            "creationTimestamp": scheduled},
        "spec": {"tenant": "socktown", "tokenSecretRef": {"name": "amperity-api"}, "configId": "cg-nightly"},
        "status": status,
    }))
    .unwrap()
}

fn slot_run(day: &str, phase: Option<&str>) -> AmperityWorkflowRun {
    let at = format!("2025-04-{day}T06:00:00Z");
    run(&slot_run_name("nightly", ts(&at)), &at, "schedule", phase)
}

fn created(plan: &Plan) -> Option<String> {
    plan.create
        .as_ref()
        .map(|n| n.run.metadata.name.clone().unwrap())
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|e| e.reason).collect()
}

fn condition<'a>(
    status: &'a AmperityWorkflowScheduleStatus,
    kind: &str,
) -> (&'a str, &'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn time(
    status_time: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> Option<String> {
    status_time.as_ref().map(|t| t.0.to_string())
}

/// Applies a plan as the reconciler does: the run exists, the status is written.
fn applied(s: &AmperityWorkflowSchedule, plan: &Plan) -> AmperityWorkflowSchedule {
    let mut next = s.clone();
    next.status = Some(plan.status.clone());
    next
}

#[test]
fn before_the_first_slot_nothing_runs_and_status_says_when() {
    let s = schedule(json!({}), None);
    let plan = decide(&s, &[], ts("2025-04-18T05:45:00Z"));
    assert_eq!(created(&plan), None);
    assert!(plan.events.is_empty());
    assert_eq!(
        time(&plan.status.next_schedule_time).as_deref(),
        Some("2025-04-18T06:00:00Z")
    );
    assert_eq!(plan.wake, Some(ts("2025-04-18T06:00:00Z")));
    assert_eq!(condition(&plan.status, "Ready").0, "True");
    assert_eq!(condition(&plan.status, "Ready").1, "Scheduled");
    assert!(
        condition(&plan.status, "Ready")
            .2
            .contains("2025-04-18T06:00:00")
    );
    assert_eq!(condition(&plan.status, "Stalled").0, "False");
    assert_eq!(
        condition(&plan.status, "LastRunSucceeded"),
        (
            "Unknown",
            "NoRunFinished",
            "no run of this schedule has finished yet"
        )
    );
    assert_eq!(plan.status.observed_generation, Some(2));
    assert!(
        plan.status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
    // The slot before the schedule existed is not a missed one.
    let plan = decide(
        &schedule(json!({"schedule": "0 5 * * *"}), None),
        &[],
        ts("2025-04-18T05:45:00Z"),
    );
    assert_eq!(created(&plan), None);
}

#[test]
fn a_due_slot_creates_one_run_named_from_the_slot_from_the_template() {
    let s = schedule(json!({}), None);
    let plan = decide(&s, &[], ts("2025-04-18T06:00:00.2Z"));
    let new = plan.create.as_ref().expect("a run");
    assert_eq!(new.trigger, Trigger::Slot(ts("2025-04-18T06:00:00Z")));
    let run = &new.run;
    // 2025-04-18T06:00:00Z is 29,082,600 minutes after the epoch.
    assert_eq!(run.metadata.name.as_deref(), Some("nightly-29082600"));
    assert_eq!(run.metadata.namespace.as_deref(), Some("marketing"));
    let labels = run.metadata.labels.clone().unwrap();
    assert_eq!(labels["team"], "data");
    assert_eq!(labels[SCHEDULE_LABEL], "nightly");
    let annotations = run.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["note"], "nightly");
    assert_eq!(annotations[SCHEDULED_AT_ANNOTATION], "2025-04-18T06:00:00Z");
    assert_eq!(annotations[TRIGGER_ANNOTATION], "schedule");
    let owner = &run.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("AmperityWorkflowSchedule", "nightly", UID)
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(run.spec.config_id, "cg-nightly");
    assert!(!run.spec.stop && run.spec.workflow_id.is_none());
    assert_eq!(
        time(&plan.status.last_schedule_time).as_deref(),
        Some("2025-04-18T06:00:00Z")
    );
    assert_eq!(plan.status.active.len(), 1);
    assert_eq!(plan.status.active[0].name, "nightly-29082600");
    assert_eq!(reasons(&plan), ["Created"]);
    assert_eq!(
        time(&plan.status.next_schedule_time).as_deref(),
        Some("2025-04-19T06:00:00Z")
    );

    // Applied: the same slot never creates again, from status or from the run alone
    // (a crash between the create and the status write).
    let now = ts("2025-04-18T06:00:05Z");
    let again = decide(&applied(&s, &plan), &[slot_run("18", None)], now);
    assert_eq!(created(&again), None);
    assert!(again.events.is_empty());
    let after_crash = decide(&s, &[slot_run("18", Some("Running"))], now);
    assert_eq!(created(&after_crash), None);
    assert_eq!(
        time(&after_crash.status.last_schedule_time).as_deref(),
        Some("2025-04-18T06:00:00Z"),
        "status catches up with the run the lost write was for"
    );
    assert_eq!(after_crash.status.active[0].phase, Some(Phase::Running));
}

#[test]
fn after_downtime_only_the_most_recent_missed_slot_runs() {
    let s = schedule(
        json!({}),
        Some(json!({"lastScheduleTime": "2025-04-15T06:00:00Z"})),
    );
    let plan = decide(&s, &[], ts("2025-04-18T09:00:00Z"));
    assert_eq!(
        created(&plan).as_deref(),
        Some(slot_run_name("nightly", ts("2025-04-18T06:00:00Z")).as_str())
    );
    assert_eq!(reasons(&plan), ["Created"]);
    // A deadline that the slot is within: it runs; past it: skipped and said.
    let within = schedule(
        json!({"startingDeadlineSeconds": 3 * 3600}),
        Some(json!({"lastScheduleTime": "2025-04-15T06:00:00Z"})),
    );
    assert!(
        decide(&within, &[], ts("2025-04-18T09:00:00Z"))
            .create
            .is_some()
    );
    let past = schedule(
        json!({"startingDeadlineSeconds": 600}),
        Some(json!({"lastScheduleTime": "2025-04-15T06:00:00Z"})),
    );
    let plan = decide(&past, &[], ts("2025-04-18T09:00:00Z"));
    assert_eq!(created(&plan), None);
    assert_eq!(
        time(&plan.status.last_skipped_time).as_deref(),
        Some("2025-04-18T06:00:00Z")
    );
    assert_eq!(
        time(&plan.status.last_schedule_time).as_deref(),
        Some("2025-04-15T06:00:00Z")
    );
    assert_eq!(reasons(&plan), ["MissedSchedule"]);
    assert_eq!(plan.events[0].type_, EventType::Warning);
    assert!(
        plan.events[0].note.contains("startingDeadlineSeconds"),
        "{}",
        plan.events[0].note
    );
    // Once skipped, it stays skipped: no Event again, no late run.
    let again = decide(&applied(&past, &plan), &[], ts("2025-04-18T09:01:00Z"));
    assert_eq!(created(&again), None);
    assert!(again.events.is_empty());
}

#[test]
fn concurrency_policies_decide_what_a_run_in_flight_means() {
    let in_flight = [slot_run("17", Some("Running"))];
    let now = ts("2025-04-18T06:00:01Z");
    let status = Some(json!({"lastScheduleTime": "2025-04-17T06:00:00Z"}));

    // Forbid (the default): skipped, said, and not run later when the other ends.
    let forbid = schedule(json!({}), status.clone());
    let plan = decide(&forbid, &in_flight, now);
    assert_eq!(created(&plan), None);
    assert_eq!(reasons(&plan), ["Skipped"]);
    assert!(
        plan.events[0]
            .note
            .contains(&in_flight[0].metadata.name.clone().unwrap())
    );
    assert!(plan.events[0].note.contains("Forbid"));
    assert_eq!(
        time(&plan.status.last_skipped_time).as_deref(),
        Some("2025-04-18T06:00:00Z")
    );
    let finished = [slot_run("17", Some("Succeeded"))];
    let later = decide(
        &applied(&forbid, &plan),
        &finished,
        ts("2025-04-18T06:30:00Z"),
    );
    assert_eq!(created(&later), None);
    assert!(later.events.is_empty());

    // Allow: both run.
    let allow = schedule(json!({"concurrencyPolicy": "Allow"}), status.clone());
    let plan = decide(&allow, &in_flight, now);
    assert!(plan.create.is_some());
    assert!(plan.stop.is_empty());
    assert_eq!(plan.status.active.len(), 2);

    // Replace: the run in flight is stopped and the new one started.
    let replace = schedule(json!({"concurrencyPolicy": "Replace"}), status.clone());
    let plan = decide(&replace, &in_flight, now);
    assert!(plan.create.is_some());
    assert_eq!(plan.stop, [in_flight[0].metadata.name.clone().unwrap()]);
    assert_eq!(reasons(&plan), ["Replaced", "Created"]);
    // A run already told to stop is not told again.
    let mut stopping = in_flight[0].clone();
    stopping.spec.stop = true;
    let plan = decide(&replace, &[stopping], now);
    assert!(plan.create.is_some() && plan.stop.is_empty());

    // Runs being deleted or finished are not in flight.
    let mut leaving = in_flight[0].clone();
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    assert!(decide(&forbid, &[leaving], now).create.is_some());
    assert!(
        decide(&forbid, &[slot_run("17", Some("Failed"))], now)
            .create
            .is_some()
    );
    // A run not reconciled yet (no phase) is in flight.
    assert!(
        decide(&forbid, &[slot_run("17", None)], now)
            .create
            .is_none()
    );
}

#[test]
fn suspend_skips_slots_quietly_and_catches_none_up() {
    let s = schedule(
        json!({"suspend": true}),
        Some(json!({"lastScheduleTime": "2025-04-17T06:00:00Z"})),
    );
    let plan = decide(&s, &[], ts("2025-04-18T06:00:00Z"));
    assert_eq!(created(&plan), None);
    assert!(plan.events.is_empty());
    assert_eq!(
        time(&plan.status.last_skipped_time).as_deref(),
        Some("2025-04-18T06:00:00Z")
    );
    assert_eq!(plan.status.next_schedule_time, None);
    assert_eq!(condition(&plan.status, "Ready").0, "True");
    assert_eq!(condition(&plan.status, "Ready").1, "Suspended");
    // It still wakes at each slot, to record it skipped.
    assert_eq!(plan.wake, Some(ts("2025-04-19T06:00:00Z")));
    // Resumed later that day: the skipped slot does not run late.
    let mut resumed = applied(&s, &plan);
    resumed.spec.suspend = false;
    let plan = decide(&resumed, &[], ts("2025-04-18T10:00:00Z"));
    assert_eq!(created(&plan), None);
    assert_eq!(
        time(&plan.status.next_schedule_time).as_deref(),
        Some("2025-04-19T06:00:00Z")
    );
    assert_eq!(condition(&plan.status, "Ready").1, "Scheduled");
}

#[test]
fn run_now_starts_one_run_per_new_value() {
    let now = ts("2025-04-18T10:00:00Z");
    let base = schedule(
        json!({}),
        Some(json!({"lastScheduleTime": "2025-04-18T06:00:00Z"})),
    );
    let s = with_annotation(base.clone(), RUN_NOW_ANNOTATION, " 2025-04-18T10:00 ");
    let plan = decide(&s, &[], now);
    let new = plan.create.as_ref().expect("a run now");
    assert_eq!(new.run.metadata.name.as_deref(), Some("nightly-now-1"));
    assert_eq!(new.trigger, Trigger::RunNow("2025-04-18T10:00".into()));
    let annotations = new.run.metadata.annotations.clone().unwrap();
    assert_eq!(annotations[TRIGGER_ANNOTATION], "run-now");
    assert_eq!(annotations[SCHEDULED_AT_ANNOTATION], now.to_string());
    assert_eq!(
        plan.status.last_handled_run_now.as_deref(),
        Some("2025-04-18T10:00")
    );
    assert_eq!(plan.status.run_now_count, 1);
    // Scheduled runs are unaffected by it.
    assert_eq!(
        time(&plan.status.last_schedule_time).as_deref(),
        Some("2025-04-18T06:00:00Z")
    );

    // The same value again does nothing; a new value starts the next one.
    let done = applied(&s, &plan);
    let now_run = run(
        "nightly-now-1",
        &now.to_string(),
        "run-now",
        Some("Succeeded"),
    );
    assert!(
        decide(&done, std::slice::from_ref(&now_run), now)
            .create
            .is_none()
    );
    let next = with_annotation(done, RUN_NOW_ANNOTATION, "again");
    let plan = decide(&next, std::slice::from_ref(&now_run), now);
    assert_eq!(created(&plan).as_deref(), Some("nightly-now-2"));
    assert_eq!(plan.status.run_now_count, 2);

    // Created before a restart lost the status write: recorded, not created twice.
    let plan = decide(
        &s,
        &[run("nightly-now-1", &now.to_string(), "run-now", None)],
        now,
    );
    assert_eq!(created(&plan), None);
    assert_eq!(
        plan.status.last_handled_run_now.as_deref(),
        Some("2025-04-18T10:00")
    );

    // Forbid with a run in flight: kept (said once), and run once the run finished.
    let busy = [slot_run("18", Some("Running"))];
    let plan = decide(&s, &busy, now);
    assert_eq!(created(&plan), None);
    assert_eq!(reasons(&plan), ["RunNowWaiting"]);
    assert!(
        plan.events[0].note.contains("nightly-"),
        "{}",
        plan.events[0].note
    );
    assert_eq!(plan.status.last_handled_run_now, None);
    assert_eq!(
        plan.status.waiting_run_now.as_deref(),
        Some("2025-04-18T10:00")
    );
    let waiting = applied(&s, &plan);
    let again = decide(&waiting, &busy, now + SignedDuration::from_secs(60));
    assert_eq!(created(&again), None);
    assert!(
        reasons(&again).is_empty(),
        "said once: {:?}",
        reasons(&again)
    );
    let finished = [slot_run("18", Some("Succeeded"))];
    let plan = decide(&waiting, &finished, now + SignedDuration::from_secs(120));
    assert_eq!(created(&plan).as_deref(), Some("nightly-now-1"));
    assert_eq!(plan.status.waiting_run_now, None);
    assert_eq!(
        plan.status.last_handled_run_now.as_deref(),
        Some("2025-04-18T10:00")
    );

    // Whatever the schedule: suspended too.
    let mut suspended = s.clone();
    suspended.spec.suspend = true;
    assert_eq!(
        created(&decide(&suspended, &[], now)).as_deref(),
        Some("nightly-now-1")
    );

    // An empty value is no request; a huge one is kept as a digest.
    assert!(
        decide(
            &with_annotation(base.clone(), RUN_NOW_ANNOTATION, "  "),
            &[],
            now
        )
        .create
        .is_none()
    );
    let huge = "x".repeat(10_000);
    let plan = decide(&with_annotation(base, RUN_NOW_ANNOTATION, &huge), &[], now);
    let kept = plan.status.last_handled_run_now.clone().unwrap();
    assert!(kept.len() < 64 && kept.starts_with("fnv1a64:"), "{kept}");
}

#[test]
fn a_slot_and_a_run_now_together_take_turns() {
    let s = with_annotation(schedule(json!({}), None), RUN_NOW_ANNOTATION, "1");
    let now = ts("2025-04-18T06:00:00Z");
    let plan = decide(&s, &[], now);
    assert!(matches!(
        plan.create.as_ref().unwrap().trigger,
        Trigger::Slot(_)
    ));
    assert_eq!(plan.status.last_handled_run_now, None);
    // It looks again within a second; then the run-now meets the slot's run (Forbid).
    assert!(plan.wake.unwrap() <= now + SignedDuration::from_secs(1));
    let plan = decide(
        &applied(&s, &plan),
        &[slot_run("18", None)],
        now + SignedDuration::from_secs(1),
    );
    assert_eq!(created(&plan), None);
    assert_eq!(reasons(&plan), ["RunNowWaiting"]);
    assert_eq!(plan.status.waiting_run_now.as_deref(), Some("1"));
    assert_eq!(plan.status.last_handled_run_now, None);
}

#[test]
fn history_beyond_the_limits_is_deleted_oldest_first() {
    let mut runs = vec![];
    for day in ["10", "11", "12", "13", "14"] {
        runs.push(slot_run(day, Some("Succeeded")));
    }
    for day in ["15", "16", "17"] {
        runs.push(slot_run(day, Some("Failed")));
    }
    runs.push(slot_run("18", Some("Running")));
    let now = ts("2025-04-18T06:10:00Z");
    let status = Some(json!({"lastScheduleTime": "2025-04-18T06:00:00Z"}));
    let name = |d: &str| slot_run_name("nightly", ts(&format!("2025-04-{d}T06:00:00Z")));

    let plan = decide(&schedule(json!({}), status.clone()), &runs, now);
    // Defaults: 3 succeeded, 1 failed.
    assert_eq!(
        plan.delete,
        [name("10"), name("11"), name("15"), name("16")]
    );
    assert_eq!(reasons(&plan), ["Deleted"; 4]);
    let plan = decide(
        &schedule(
            json!({"successfulRunsHistoryLimit": 0, "failedRunsHistoryLimit": 5}),
            status.clone(),
        ),
        &runs,
        now,
    );
    assert_eq!(
        plan.delete,
        [name("10"), name("11"), name("12"), name("13"), name("14")]
    );
    // A run already being deleted is not deleted again, and not counted.
    let mut leaving = runs.clone();
    leaving[0].metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    let plan = decide(&schedule(json!({}), status), &leaving, now);
    assert_eq!(plan.delete, [name("11"), name("15"), name("16")]);
}

#[test]
fn the_last_finished_run_is_its_own_condition_and_never_unreadies_the_schedule() {
    let now = ts("2025-04-18T07:00:00Z");
    let status = Some(json!({"lastScheduleTime": "2025-04-18T06:00:00Z"}));
    let runs = [
        slot_run("17", Some("Succeeded")),
        slot_run("18", Some("Failed")),
    ];
    let plan = decide(&schedule(json!({}), status.clone()), &runs, now);
    let last = plan.status.last_run.clone().unwrap();
    assert_eq!(
        last.name,
        slot_run_name("nightly", ts("2025-04-18T06:00:00Z"))
    );
    assert_eq!(last.result, Phase::Failed);
    assert_eq!(last.reason.as_deref(), Some("CustomerError"));
    let (st, reason, message) = condition(&plan.status, "LastRunSucceeded");
    assert_eq!((st, reason), ("False", "CustomerError"));
    assert!(
        message.contains(&last.name) && message.contains("says Failed"),
        "{message}"
    );
    assert_eq!(condition(&plan.status, "Ready").0, "True");
    assert_eq!(condition(&plan.status, "Stalled").0, "False");
    assert_eq!(
        time(&plan.status.last_successful_time).as_deref(),
        Some("2025-04-17T06:20:00Z")
    );
    assert!(plan.status.active.is_empty());

    // Runs pruned away: status keeps what it knew; an older run finishing late does not replace it.
    let kept = decide(
        &applied(&schedule(json!({}), status.clone()), &plan),
        &[],
        now,
    );
    assert_eq!(kept.status.last_run, plan.status.last_run);
    assert_eq!(
        kept.status.last_successful_time,
        plan.status.last_successful_time
    );
    let older = decide(
        &applied(&schedule(json!({}), status), &plan),
        &[slot_run("16", Some("Succeeded"))],
        now,
    );
    assert_eq!(older.status.last_run, plan.status.last_run);
    let (st, _, _) = condition(&older.status, "LastRunSucceeded");
    assert_eq!(st, "False");
}

#[test]
fn an_invalid_spec_is_stalled_starts_nothing_and_says_why_once() {
    let now = ts("2025-04-18T06:00:00Z");
    for (spec, field) in [
        (json!({"schedule": "0 0 30 2 *"}), "spec.schedule"),
        (json!({"schedule": "every day"}), "spec.schedule"),
        (json!({"timeZone": "Mars/Olympus_Mons"}), "spec.timeZone"),
        (
            json!({"startingDeadlineSeconds": 0}),
            "spec.startingDeadlineSeconds",
        ),
        (
            json!({"successfulRunsHistoryLimit": 101}),
            "spec.successfulRunsHistoryLimit",
        ),
        (
            json!({"runTemplate": {"spec": {"tenant": "socktown", "tokenSecretRef": {"name": "a"}, "configId": "nope"}}}),
            "spec.runTemplate.spec.configId",
        ),
        (
            json!({"runTemplate": {"spec": {"tenant": "socktown", "tokenSecretRef": {"name": "a"}, "configId": "cg-1", "stop": true}}}),
            "spec.runTemplate.spec.stop",
        ),
        (
            json!({"runTemplate": {"spec": {"tenant": "socktown", "tokenSecretRef": {"name": "a"}, "configId": "cg-1", "workflowId": "wf-1"}}}),
            "spec.runTemplate.spec.workflowId",
        ),
        (
            json!({"runTemplate": {"spec": {"tenant": "socktown", "tokenSecretRef": {"name": "a"}, "configId": "cg-1", "pollInterval": "1s"}}}),
            "spec.runTemplate.spec.pollInterval",
        ),
        (
            json!({"runTemplate": {"metadata": {"annotations": {"amperity.dev/resolve-start": "retry"}},
                "spec": {"tenant": "socktown", "tokenSecretRef": {"name": "a"}, "configId": "cg-1"}}}),
            "spec.runTemplate.metadata.annotations",
        ),
    ] {
        let s = with_annotation(schedule(spec.clone(), None), RUN_NOW_ANNOTATION, "1");
        let plan = decide(&s, &[], now);
        assert_eq!(created(&plan), None, "{spec}");
        let (ready, reason, message) = condition(&plan.status, "Ready");
        assert_eq!((ready, reason), ("False", "InvalidSpec"), "{spec}");
        assert!(message.contains(field), "{spec}: {message}");
        assert_eq!(condition(&plan.status, "Stalled").0, "True");
        assert_eq!(plan.status.next_schedule_time, None);
        assert_eq!(plan.wake, None);
        assert_eq!(reasons(&plan), ["InvalidSpec"], "{spec}");
        assert_eq!(
            plan.status.last_handled_run_now, None,
            "run-now waits for a valid spec"
        );
        let again = decide(
            &applied(&s, &plan),
            &[],
            now + SignedDuration::from_secs(60),
        );
        assert!(again.events.is_empty(), "{spec}: said once");
    }
    // The name is checked too (API servers before 1.25 ignore the CEL rule).
    let mut long = schedule(json!({}), None);
    long.metadata.name = Some("n".repeat(53));
    let plan = decide(&long, &[], now);
    assert!(condition(&plan.status, "Ready").2.contains("metadata.name"));
}

/// A schedule created long before the times a test looks at.
fn old_schedule(spec: Value, status: Value) -> AmperityWorkflowSchedule {
    let mut s = schedule(spec, Some(status));
    s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
        "2024-01-01T00:00:00Z",
    )));
    s
}

#[test]
fn daylight_saving_changes_run_each_slot_once() {
    // New York, spring forward: 02:30 does not exist and runs at 03:30 EDT.
    let s = old_schedule(
        json!({"schedule": "30 2 * * *", "timeZone": "America/New_York"}),
        json!({"lastScheduleTime": "2025-03-08T07:30:00Z"}),
    );
    let plan = decide(&s, &[], ts("2025-03-09T07:30:00Z"));
    assert_eq!(
        created(&plan).as_deref(),
        Some(slot_run_name("nightly", ts("2025-03-09T07:30:00Z")).as_str())
    );
    // Fall back: 01:30 runs at its first occurrence, not again an hour later.
    let s = old_schedule(
        json!({"schedule": "30 1 * * *", "timeZone": "America/New_York"}),
        json!({"lastScheduleTime": "2025-11-01T05:30:00Z"}),
    );
    let first = decide(&s, &[], ts("2025-11-02T05:30:00Z"));
    assert_eq!(
        created(&first).as_deref(),
        Some(slot_run_name("nightly", ts("2025-11-02T05:30:00Z")).as_str())
    );
    let second = decide(&applied(&s, &first), &[], ts("2025-11-02T06:30:00Z"));
    assert_eq!(created(&second), None);
    assert_eq!(
        time(&second.status.next_schedule_time).as_deref(),
        Some("2025-11-03T06:30:00Z")
    );
    // London, fall back, hourly: 01:00 GMT (the repeat) is not a new slot.
    let s = old_schedule(
        json!({"schedule": "0 * * * *", "timeZone": "Europe/London"}),
        json!({"lastScheduleTime": "2025-10-26T00:00:00Z"}),
    );
    let plan = decide(&s, &[], ts("2025-10-26T01:00:00Z"));
    assert_eq!(created(&plan), None);
    assert_eq!(
        time(&plan.status.next_schedule_time).as_deref(),
        Some("2025-10-26T02:00:00Z")
    );
}

#[test]
fn deleting_the_schedule_deletes_its_runs_and_releases_it() {
    let mut s = schedule(
        json!({}),
        Some(json!({"lastScheduleTime": "2025-04-18T06:00:00Z"})),
    );
    s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
        "2025-04-18T07:00:00Z",
    )));
    let mut leaving = slot_run("16", Some("Succeeded"));
    leaving.metadata.deletion_timestamp = s.metadata.deletion_timestamp.clone();
    let mut foreign = slot_run("15", Some("Succeeded"));
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();
    let runs = [
        slot_run("18", Some("Running")),
        slot_run("17", Some("Succeeded")),
        leaving,
        foreign,
    ];
    let plan = decide(&s, &runs, ts("2025-04-18T07:00:00Z"));
    assert!(plan.release_finalizer);
    assert_eq!(
        plan.delete,
        [
            runs[0].metadata.name.clone().unwrap(),
            runs[1].metadata.name.clone().unwrap()
        ]
    );
    assert!(plan.create.is_none());
    assert_eq!(Some(&plan.status), s.status.as_ref(), "no status write");
}

#[test]
fn runs_of_another_schedule_are_not_this_ones() {
    let mut foreign = slot_run("18", Some("Running"));
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let plan = decide(
        &schedule(json!({}), None),
        &[foreign],
        ts("2025-04-18T06:00:00Z"),
    );
    assert!(
        plan.create.is_some(),
        "a same-named label does not make a run in flight"
    );
    assert_eq!(plan.status.active.len(), 1);
}

#[test]
fn a_refused_creation_counts_the_slot_and_says_why() {
    let s = schedule(
        json!({}),
        Some(json!({"lastScheduleTime": "2025-04-17T06:00:00Z"})),
    );
    let now = ts("2025-04-18T06:00:00Z");
    let mut plan = decide(&s, &[], now);
    plan.creation_refused(
        "the API server refused it: spec.configId: Invalid value",
        Some(2),
        now,
    );
    assert!(plan.create.is_none());
    assert!(plan.status.active.is_empty());
    // Not cleared: it stays at the last slot that got a run.
    assert_eq!(
        time(&plan.status.last_schedule_time).as_deref(),
        Some("2025-04-17T06:00:00Z")
    );
    assert_eq!(
        time(&plan.status.last_skipped_time).as_deref(),
        Some("2025-04-18T06:00:00Z")
    );
    assert_eq!(reasons(&plan), ["CreateFailed"]);
    let (ready, reason, message) = condition(&plan.status, "Ready");
    assert_eq!((ready, reason), ("False", "RunCreateFailed"));
    assert!(message.contains("configId"), "{message}");
    assert!(
        decide(&applied(&s, &plan), &[], now).create.is_none(),
        "not retried in a loop"
    );
}

// ---------------------------------------------------------------- hostile input

fn any_time() -> impl Strategy<Value = String> {
    prop_oneof![
        (-377_705_116_800_i64..253_402_300_799)
            .prop_map(|s| jiff::Timestamp::from_second(s).unwrap().to_string()),
        Just("-009999-01-02T01:59:59Z".to_string()),
        Just("9999-12-30T22:00:00.999999999Z".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_status_and_runs_give_at_most_one_run_and_no_panic(
        last in any_time(), skipped in any_time(), created in any_time(), scheduled in any_time(),
        now in any_time(), count in any::<u64>(), value in "\\PC{0,300}", deadline in any::<i64>(),
        zone in prop_oneof![Just("UTC"), Just("America/New_York"), Just("Europe/London")],
        policy in prop_oneof![Just("Forbid"), Just("Allow"), Just("Replace")],
    ) {
        let mut s = schedule(
            json!({"schedule": "*/5 * * * *", "timeZone": zone, "concurrencyPolicy": policy,
                   "startingDeadlineSeconds": deadline}),
            Some(json!({"lastScheduleTime": last, "lastSkippedTime": skipped, "runNowCount": count})),
        );
        s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created.parse().unwrap()));
        let s = with_annotation(s, RUN_NOW_ANNOTATION, &value);
        let runs = [run("r1", &scheduled, "schedule", Some("Running")), run("r2", &scheduled, "run-now", None)];
        let plan = decide(&s, &runs, now.parse().unwrap());
        prop_assert!(plan.status.active.len() <= 3);
        if let Some(new) = &plan.create {
            let name = new.run.metadata.name.clone().unwrap();
            prop_assert!(name.len() <= 63);
        }
    }
}

// Issue 22: schedules that never stop silently, and never run by surprise.

#[test]
fn a_run_in_flight_across_a_slot_blocks_a_forbid_schedule_and_says_so() {
    let s = schedule(
        json!({}),
        Some(json!({"lastScheduleTime": "2025-04-17T06:00:00Z"})),
    );
    let stuck = [slot_run("17", Some("Pending"))];
    // Before the next slot the run is merely in flight.
    let plan = decide(&s, &stuck, ts("2025-04-17T12:00:00Z"));
    assert_eq!(condition(&plan.status, "Ready").0, "True");
    assert_eq!(condition(&plan.status, "Stalled").0, "False");
    // The next slot is skipped behind it: Blocked, naming the run and since when.
    let plan = decide(&s, &stuck, ts("2025-04-18T06:00:10Z"));
    assert_eq!(created(&plan), None);
    assert_eq!(reasons(&plan), ["Skipped"]);
    let (ready, reason, message) = condition(&plan.status, "Ready");
    assert_eq!((ready, reason), ("False", "Blocked"));
    assert!(
        message.contains(&slot_run_name("nightly", ts("2025-04-17T06:00:00Z"))),
        "{message}"
    );
    assert!(message.contains("2025-04-17T06:00:00Z"), "{message}");
    assert!(message.contains("2025-04-18T06:00:00Z"), "{message}");
    let (stalled, reason, _) = condition(&plan.status, "Stalled");
    assert_eq!((stalled, reason), ("True", "Blocked"));
    // Still blocked later on, without a new Event; freed once the run finished.
    let later = applied(&s, &plan);
    let plan = decide(&later, &stuck, ts("2025-04-18T12:00:00Z"));
    assert_eq!(condition(&plan.status, "Ready").1, "Blocked");
    assert!(plan.events.is_empty(), "{:?}", reasons(&plan));
    let done = [slot_run("17", Some("Failed"))];
    let plan = decide(&later, &done, ts("2025-04-18T12:00:00Z"));
    assert_eq!(
        condition(&plan.status, "Ready"),
        ("True", "Scheduled", condition(&plan.status, "Ready").2)
    );
    assert_eq!(condition(&plan.status, "Stalled").0, "False");
    // Allow and Replace are never blocked; suspended says Suspended.
    for spec in [
        json!({"concurrencyPolicy": "Allow"}),
        json!({"suspend": true}),
    ] {
        let s = schedule(
            spec.clone(),
            Some(json!({"lastScheduleTime": "2025-04-18T06:00:00Z"})),
        );
        let plan = decide(&s, &stuck, ts("2025-04-18T07:00:00Z"));
        assert_ne!(condition(&plan.status, "Ready").1, "Blocked", "{spec}");
    }
}

#[test]
fn a_slot_run_carries_its_starting_deadline_and_a_run_now_run_none() {
    let s = schedule(json!({"startingDeadlineSeconds": 600}), None);
    let plan = decide(&s, &[], ts("2025-04-18T06:00:05Z"));
    let annotations = plan.create.unwrap().run.metadata.annotations.unwrap();
    assert_eq!(
        annotations
            .get(START_DEADLINE_ANNOTATION)
            .map(String::as_str),
        Some("2025-04-18T06:10:00Z")
    );
    let s = with_annotation(
        schedule(
            json!({"startingDeadlineSeconds": 600}),
            Some(json!({"lastScheduleTime": "2025-04-18T06:00:00Z"})),
        ),
        RUN_NOW_ANNOTATION,
        "go",
    );
    let plan = decide(&s, &[], ts("2025-04-18T07:00:00Z"));
    let annotations = plan.create.unwrap().run.metadata.annotations.unwrap();
    assert!(!annotations.contains_key(START_DEADLINE_ANNOTATION));
    // Without a deadline, no annotation.
    let plan = decide(&schedule(json!({}), None), &[], ts("2025-04-18T06:00:05Z"));
    let annotations = plan.create.unwrap().run.metadata.annotations.unwrap();
    assert!(!annotations.contains_key(START_DEADLINE_ANNOTATION));
}

#[test]
fn a_run_now_value_fires_once_ever_even_after_a_revert() {
    let now = ts("2025-04-18T10:00:00Z");
    let mut s = schedule(json!({"schedule": "@yearly"}), None);
    let mut runs: Vec<AmperityWorkflowRun> = vec![];
    let mut fired = vec![];
    for value in ["v1", "v2", "v1", "v2", "v3"] {
        s = with_annotation(s, RUN_NOW_ANNOTATION, value);
        let plan = decide(&s, &runs, now);
        if let Some(name) = created(&plan) {
            fired.push(value);
            runs.push(run(&name, &now.to_string(), "run-now", Some("Succeeded")));
        }
        s = applied(&s, &plan);
    }
    assert_eq!(fired, ["v1", "v2", "v3"]);
    assert_eq!(
        s.status.as_ref().unwrap().handled_run_now,
        ["v1", "v2", "v3"]
    );

    // Bounded: the oldest values are forgotten beyond the limit.
    let mut s = schedule(
        json!({"schedule": "@yearly", "concurrencyPolicy": "Allow"}),
        None,
    );
    for n in 0..(MAX_HANDLED_RUN_NOW + 5) {
        s = with_annotation(s, RUN_NOW_ANNOTATION, &format!("r{n}"));
        let plan = decide(&s, &[], now);
        assert!(plan.create.is_some(), "r{n}");
        s = applied(&s, &plan);
    }
    let handled = &s.status.as_ref().unwrap().handled_run_now;
    assert_eq!(handled.len(), MAX_HANDLED_RUN_NOW);
    assert_eq!(handled.last().map(String::as_str), Some("r36"));
    assert_eq!(handled.first().map(String::as_str), Some("r5"));
}

#[test]
fn a_run_now_timestamp_older_than_the_schedule_never_fires() {
    // The schedule was created at 2025-04-18T05:30:00Z (1744954200).
    let now = ts("2025-04-18T10:00:00Z");
    let base = schedule(json!({"schedule": "@yearly"}), None);
    for stale in ["1744954199", "1744954199000", "2025-04-01T00:00:00Z"] {
        let s = with_annotation(base.clone(), RUN_NOW_ANNOTATION, stale);
        let plan = decide(&s, &[], now);
        assert_eq!(created(&plan), None, "{stale}");
        assert_eq!(reasons(&plan), ["RunNowIgnored"], "{stale}");
        assert_eq!(plan.status.handled_run_now, [stale]);
        let again = decide(&applied(&s, &plan), &[], now);
        assert!(again.events.is_empty(), "said once: {stale}");
    }
    // After the creation, or a counter (not a timestamp): it fires.
    for fresh in ["1744954201", "2025-04-18T09:00:00Z", "1", "42", "v7"] {
        let s = with_annotation(base.clone(), RUN_NOW_ANNOTATION, fresh);
        assert!(decide(&s, &[], now).create.is_some(), "{fresh}");
    }
}

#[test]
fn editing_the_pattern_counts_like_a_creation() {
    let s = schedule(
        json!({}),
        Some(json!({"lastScheduleTime": "2025-04-17T06:00:00Z"})),
    );
    // The first look records the pattern; nothing else changes.
    let plan = decide(
        &s,
        &[slot_run("17", Some("Succeeded"))],
        ts("2025-04-17T09:00:00Z"),
    );
    assert_eq!(
        plan.status.observed_schedule.as_deref(),
        Some("0 6 * * * in UTC")
    );
    assert_eq!(plan.status.observed_schedule_since, None);
    let seen = applied(&s, &plan);
    // Edited at 09:00 on the 18th to 08:00: the 08:00 slot before the edit is not run.
    let mut edited = seen.clone();
    edited.spec.schedule = "0 8 * * *".into();
    let now = ts("2025-04-18T09:00:00Z");
    let plan = decide(&edited, &[slot_run("17", Some("Succeeded"))], now);
    assert_eq!(created(&plan), None, "{:?}", reasons(&plan));
    assert_eq!(
        plan.status.observed_schedule.as_deref(),
        Some("0 8 * * * in UTC")
    );
    assert_eq!(
        time(&plan.status.observed_schedule_since),
        Some(now.to_string())
    );
    assert_eq!(condition(&plan.status, "Ready").0, "True");
    // The new pattern's next slot runs.
    let after = applied(&edited, &plan);
    let plan = decide(
        &after,
        &[slot_run("17", Some("Succeeded"))],
        ts("2025-04-19T08:00:01Z"),
    );
    assert_eq!(
        created(&plan),
        Some(slot_run_name("nightly", ts("2025-04-19T08:00:00Z")))
    );
    // The time zone counts too.
    let mut moved = seen;
    moved.spec.time_zone = Some("Asia/Tokyo".into());
    let plan = decide(
        &moved,
        &[slot_run("17", Some("Succeeded"))],
        ts("2025-04-18T00:00:00Z"),
    );
    assert_eq!(created(&plan), None);
    assert!(plan.status.observed_schedule_since.is_some());
}

#[test]
fn a_slot_time_in_the_future_on_a_run_is_ignored_with_a_warning() {
    let mut poisoned = slot_run("17", Some("Succeeded"));
    poisoned.metadata.annotations.as_mut().unwrap().insert(
        SCHEDULED_AT_ANNOTATION.into(),
        "2099-01-01T06:00:00Z".into(),
    );
    let s = schedule(json!({}), None);
    let now = ts("2025-04-18T06:00:05Z");
    let plan = decide(&s, std::slice::from_ref(&poisoned), now);
    assert_eq!(
        created(&plan),
        Some(slot_run_name("nightly", ts("2025-04-18T06:00:00Z")))
    );
    assert_eq!(reasons(&plan)[0], "FutureScheduledAt");
    assert_eq!(plan.events[0].type_, EventType::Warning);
    assert!(
        plan.events[0].note.contains("2099"),
        "{}",
        plan.events[0].note
    );
    assert_eq!(
        time(&plan.status.last_schedule_time).as_deref(),
        Some("2025-04-18T06:00:00Z")
    );
    // A status already poisoned does not stop the schedule either.
    let s = schedule(
        json!({}),
        Some(json!({"lastScheduleTime": "2099-01-01T06:00:00Z"})),
    );
    assert!(decide(&s, &[], now).create.is_some());
    // A small skew is tolerated: a run scheduled a minute ahead still counts.
    let ahead = slot_run("18", Some("Running"));
    let plan = decide(
        &schedule(json!({}), None),
        &[ahead],
        ts("2025-04-18T05:59:30Z"),
    );
    assert!(!reasons(&plan).contains(&"FutureScheduledAt"));
    // A run owned by another uid (a schedule recreated under the same name) does not count.
    let mut foreign = slot_run("18", Some("Running"));
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other-uid".into();
    let plan = decide(&schedule(json!({}), None), &[foreign], now);
    assert!(plan.create.is_some());
}

#[test]
fn replace_stops_leftover_runs_in_flight_once_the_new_one_exists() {
    let s = schedule(
        json!({"concurrencyPolicy": "Replace"}),
        Some(json!({"lastScheduleTime": "2025-04-18T06:00:00Z"})),
    );
    let runs = [
        slot_run("17", Some("Running")),
        slot_run("18", Some("Running")),
    ];
    let plan = decide(&s, &runs, ts("2025-04-18T06:01:00Z"));
    assert_eq!(created(&plan), None);
    assert_eq!(
        plan.stop,
        [slot_run_name("nightly", ts("2025-04-17T06:00:00Z"))]
    );
    // A refused create stops nothing and says so.
    let s = schedule(
        json!({"concurrencyPolicy": "Replace"}),
        Some(json!({"lastScheduleTime": "2025-04-17T06:00:00Z"})),
    );
    let now = ts("2025-04-18T06:00:01Z");
    let mut plan = decide(&s, &[slot_run("17", Some("Running"))], now);
    assert_eq!(plan.stop.len(), 1);
    plan.creation_refused(&"quota ".repeat(1000), Some(2), now);
    assert!(plan.stop.is_empty());
    assert_eq!(reasons(&plan), ["CreateFailed"]);
    let (_, reason, message) = condition(&plan.status, "Ready");
    assert_eq!(reason, "RunCreateFailed");
    assert!(message.len() <= 1024, "{}", message.len());
    // Nor later: the run in flight goes on, and the refused slot is not retried.
    let after = decide(
        &applied(&s, &plan),
        &[slot_run("17", Some("Running"))],
        ts("2025-04-18T06:00:30Z"),
    );
    assert!(after.stop.is_empty() && after.create.is_none(), "{after:?}");
    assert_eq!(after.status.active.len(), 1);
}

#[test]
fn last_run_is_the_run_that_finished_last() {
    let mut slow = slot_run("16", Some("Failed"));
    slow.status.as_mut().unwrap().completed_at = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts("2025-04-18T07:00:00Z")),
    );
    let mut fast = slot_run("17", Some("Succeeded"));
    let long = "é".repeat(600);
    fast.status.as_mut().unwrap().conditions[0].message = long;
    let s = schedule(
        json!({"concurrencyPolicy": "Allow"}),
        Some(json!({"lastScheduleTime": "2025-04-17T06:00:00Z"})),
    );
    let plan = decide(
        &s,
        &[slow.clone(), fast.clone()],
        ts("2025-04-18T07:30:00Z"),
    );
    let last = plan.status.last_run.clone().unwrap();
    assert_eq!(
        last.name,
        slot_run_name("nightly", ts("2025-04-16T06:00:00Z"))
    );
    // Cut in bytes, on a character boundary.
    let plan = decide(&s, &[fast], ts("2025-04-18T07:30:00Z"));
    let message = plan.status.last_run.unwrap().message.unwrap();
    assert!(message.len() <= 512, "{}", message.len());
}

#[test]
fn deleting_with_cascade_orphan_or_foreground_leaves_the_runs_to_the_garbage_collector() {
    for finalizer in ["orphan", "foregroundDeletion"] {
        let mut s = schedule(json!({}), None);
        s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            ts("2025-04-18T07:00:00Z"),
        ));
        s.metadata.finalizers = Some(vec![
            finalizer.to_string(),
            "amperity.dev/delete-runs".to_string(),
        ]);
        let runs = [
            slot_run("18", Some("Running")),
            slot_run("17", Some("Succeeded")),
        ];
        let plan = decide(&s, &runs, ts("2025-04-18T07:00:00Z"));
        assert!(plan.release_finalizer, "{finalizer}");
        assert!(plan.delete.is_empty(), "{finalizer}: {:?}", plan.delete);
        assert!(plan.stop.is_empty() && plan.create.is_none(), "{finalizer}");
    }
}

// ------------------------------------------------- slots missed during downtime

/// An hourly schedule created long ago, whose last slot handled is `last`.
fn hourly_since(last: &str, spec: Value) -> AmperityWorkflowSchedule {
    let mut full = json!({"schedule": "0 * * * *"});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let mut s = schedule(full, Some(json!({"lastScheduleTime": last})));
    s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
        "2024-01-01T00:00:00Z",
    )));
    s
}

#[test]
fn slots_missed_during_downtime_get_one_warning_with_their_count() {
    let s = hourly_since("2025-04-18T01:00:00Z", json!({}));
    let now = ts("2025-04-18T06:00:30Z");
    let plan = decide(&s, &[], now);
    // 02:00 to 05:00 were missed; 06:00, the most recent, runs.
    assert_eq!(
        created(&plan),
        Some(slot_run_name("nightly", ts("2025-04-18T06:00:00Z")))
    );
    assert_eq!(reasons(&plan), ["MissedScheduledTimes", "Created"]);
    let missed = &plan.events[0];
    assert_eq!(missed.type_, EventType::Warning);
    assert!(
        missed.note.starts_with(
            "4 scheduled times between 2025-04-18T01:00:00Z and 2025-04-18T06:00:00Z were missed"
        ),
        "{}",
        missed.note
    );
    // Said once: the next look, a moment later, has nothing more to say.
    let later = decide(&applied(&s, &plan), &[], ts("2025-04-18T06:01:00Z"));
    assert!(later.events.is_empty(), "{:?}", reasons(&later));
}

#[test]
fn missed_slots_are_counted_up_to_a_bound() {
    // A year down with a schedule every minute: counted to 100, then "more than".
    let mut s = hourly_since("2024-04-18T06:00:00Z", json!({"schedule": "* * * * *"}));
    s.spec.starting_deadline_seconds = Some(60);
    let plan = decide(&s, &[], ts("2025-04-18T06:00:30Z"));
    assert_eq!(reasons(&plan), ["MissedScheduledTimes", "Created"]);
    assert!(
        plan.events[0]
            .note
            .starts_with("more than 100 scheduled times"),
        "{}",
        plan.events[0].note
    );
    // The most recent is also past the deadline: both are said.
    let mut daily = hourly_since("2025-04-10T06:00:00Z", json!({"schedule": "0 6 * * *"}));
    daily.spec.starting_deadline_seconds = Some(600);
    let plan = decide(&daily, &[], ts("2025-04-18T09:00:00Z"));
    assert_eq!(reasons(&plan), ["MissedScheduledTimes", "MissedSchedule"]);
    assert!(
        plan.events[0].note.starts_with("7 scheduled times"),
        "{}",
        plan.events[0].note
    );
}

#[test]
fn no_missed_slot_warning_on_time_nor_when_suspended_nor_before_creation() {
    // On time: the previous slot was handled.
    let s = hourly_since("2025-04-18T05:00:00Z", json!({}));
    assert_eq!(
        reasons(&decide(&s, &[], ts("2025-04-18T06:00:01Z"))),
        ["Created"]
    );
    // Suspended: skipping is what it is for.
    let s = hourly_since("2025-04-18T01:00:00Z", json!({"suspend": true}));
    assert!(
        decide(&s, &[], ts("2025-04-18T06:00:01Z"))
            .events
            .is_empty()
    );
    // Slots before the schedule existed were never missed.
    let s = schedule(json!({"schedule": "0 * * * *"}), None);
    assert_eq!(
        reasons(&decide(&s, &[], ts("2025-04-18T09:00:01Z"))),
        ["MissedScheduledTimes", "Created"]
    );
    let plan = decide(&s, &[], ts("2025-04-18T06:00:01Z"));
    assert_eq!(
        reasons(&plan),
        ["Created"],
        "created at 05:30: nothing missed before 06:00"
    );
}
