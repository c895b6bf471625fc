//! Table tests of the pure decision function: every phase transition, every state
//! spelling the Amperity documents use, and the conditions waiting tools read.

use std::collections::BTreeMap;
use std::time::Duration;

use amperity_operator::amperity::Principal;
use amperity_operator::amperity::wire::{Workflow, WorkflowState};
use amperity_operator::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus, Phase, StopReason};
use amperity_operator::run::decide::{
    Action, Answer, ApiFailure, Claims, Decision, EventType, FailureKind, Memory,
    RESOLVE_START_ANNOTATION, START_DEADLINE_ANNOTATION, Search, Settings, decide,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

pub(crate) fn t0() -> Timestamp {
    "2025-04-18T06:00:00Z".parse().unwrap()
}

pub(crate) fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

pub(crate) fn run(extra_spec: serde_json::Value) -> AmperityWorkflowRun {
    let mut spec = json!({
        "tenant": "socktown",
        "tokenSecretRef": {"name": "amperity-api"},
        "configId": "cg-123ABc4DE",
        "runMode": "source",
        "range": {"from": "2025-04-18", "to": "2025-04-19"},
        "pollInterval": "30s"
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1",
        "kind": "AmperityWorkflowRun",
        "metadata": {"name": "nightly", "namespace": "marketing", "generation": 1, "uid": "u1"},
        "spec": spec
    }))
    .unwrap()
}

pub(crate) fn with_status(
    mut r: AmperityWorkflowRun,
    status: AmperityWorkflowRunStatus,
) -> AmperityWorkflowRun {
    r.status = Some(status);
    r
}

/// Who this resource's credential starts runs as.
const ME: &str = "api-key|me";

pub(crate) fn workflow(id: &str, state: &str) -> Workflow {
    serde_json::from_value(json!({
        "id": id, "state": state, "type": "courier.group/run", "name": "Daily",
        "tenant": "socktown", "created_at": "2025-04-18T06:00:01Z", "principal_id": ME,
        "task_instances": [
            {"id": "wft-1", "state": "succeeded", "tenant": "socktown", "label": "Pull files"},
            {"id": "wft-2", "state": "running", "tenant": "socktown", "label": "Updating domain tables"},
            {"id": "wft-3", "state": "scheduled", "tenant": "socktown", "label": "Stitch"}
        ]
    }))
    .unwrap()
}

pub(crate) fn failed(id: &str, attribution: &str) -> Workflow {
    let mut w = workflow(id, "failed");
    w.ended_at = Some("2025-04-18T06:05:00Z".into());
    w.error = serde_json::from_value(json!({"type": "amperity.workflow.task.stitch/table", "message": "Found table in an invalid state.", "attribution": attribution})).unwrap();
    w
}

/// An ambiguous search answer: two runs that could be the lost one.
fn two_candidates() -> Vec<Workflow> {
    vec![workflow("wf-a", "running"), workflow("wf-b", "running")]
}

pub(crate) fn failure(kind: FailureKind) -> ApiFailure {
    ApiFailure {
        kind,
        message: "HTTP 503 with an HTML body".into(),
        retry_after: None,
        throttled: false,
    }
}

/// A search answer, with this credential's principal known and nobody else's claims.
fn searched(runs: Vec<Workflow>) -> Answer {
    searched_with(runs, Some(Principal::given(ME)), Claims::alone())
}

fn searched_with(runs: Vec<Workflow>, principal: Option<Principal>, claims: Claims) -> Answer {
    Answer::Searched(Search {
        result: Ok(runs),
        principal,
        claims,
        clock_offset: None,
        config_name: None,
    })
}

fn by(mut w: Workflow, principal: &str) -> Workflow {
    w.principal_id = Some(principal.into());
    w
}

fn message<'a>(d: &'a Decision, kind: &str) -> &'a str {
    &d.status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap()
        .message
}

/// A resource whose start's answer was lost at t0+1.
fn lost_start(extra_spec: serde_json::Value) -> AmperityWorkflowRun {
    let (starting, _) = apply(&run(extra_spec), None, t0());
    let (lost, _) = apply(
        &starting,
        Some(Answer::Started(Err(failure(FailureKind::Unknown)))),
        at(1),
    );
    lost
}

pub(crate) fn step(r: &AmperityWorkflowRun, answer: Option<Answer>, now: Timestamp) -> Decision {
    decide(r, answer, now, Memory::default(), &Settings::default())
}

/// Runs decide on `r`, then persists the status into the resource (as the controller does).
fn apply(
    r: &AmperityWorkflowRun,
    answer: Option<Answer>,
    now: Timestamp,
) -> (AmperityWorkflowRun, Decision) {
    let d = step(r, answer, now);
    (with_status(r.clone(), d.status.clone()), d)
}

pub(crate) fn cond<'a>(d: &'a Decision, kind: &str) -> (&'a str, &'a str) {
    let c = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition"));
    (c.status.as_str(), c.reason.as_str())
}

fn all_conditions(d: &Decision) -> BTreeMap<String, String> {
    d.status
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect()
}

fn expect_conditions(
    d: &Decision,
    succeeded: &str,
    finished: &str,
    ready: &str,
    reconciling: &str,
    stalled: &str,
) {
    let want: BTreeMap<String, String> = [
        ("Succeeded", succeeded),
        ("Finished", finished),
        ("Ready", ready),
        ("Reconciling", reconciling),
        ("Stalled", stalled),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(all_conditions(d), want);
}

/// A resource that is Running workflow wf-1, started at t0.
pub(crate) fn running(extra_spec: serde_json::Value) -> AmperityWorkflowRun {
    let r = run(extra_spec);
    let (r, _) = apply(&r, None, t0());
    let (r, _) = apply(
        &r,
        Some(Answer::Started(Ok(workflow("wf-1", "scheduled")))),
        t0(),
    );
    assert_eq!(r.phase(), Some(Phase::Running));
    r
}

#[test]
fn a_new_resource_records_intent_then_starts_with_the_spec() {
    let d = step(&run(json!({})), None, t0());
    assert_eq!(d.status.phase, Some(Phase::Starting));
    assert_eq!(d.status.started_at, Some(Time(t0())));
    let Action::Start(req) = &d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(req.config_id, "cg-123ABc4DE");
    assert_eq!(req.run_mode.as_deref(), Some("source"));
    // The API's WorkflowRunRequest takes date-times: a bare date is that day's midnight UTC.
    assert_eq!(req.range_from.as_deref(), Some("2025-04-18T00:00:00Z"));
    assert_eq!(req.range_to.as_deref(), Some("2025-04-19T00:00:00Z"));
    // Conditions are set at once: a fresh resource never looks finished.
    expect_conditions(&d, "Unknown", "False", "False", "True", "False");
    assert!(
        d.status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
    assert_eq!(d.status.observed_generation, Some(1));
    assert!(
        d.events.is_empty(),
        "no event before the start is confirmed"
    );
}

#[test]
fn start_answers() {
    let (starting, _) = apply(&run(json!({})), None, t0());
    let cases: Vec<(&str, Answer, Phase, &str, bool)> = vec![
        (
            "accepted",
            Answer::Started(Ok(workflow("wf-1", "scheduled"))),
            Phase::Running,
            "Running",
            false,
        ),
        (
            "outcome unknown",
            Answer::Started(Err(failure(FailureKind::Unknown))),
            Phase::Starting,
            "StartOutcomeUnknown",
            false,
        ),
        (
            "rate limited",
            Answer::Started(Err(failure(FailureKind::Transient))),
            Phase::Pending,
            "StartDeferred",
            false,
        ),
        (
            "token rejected",
            Answer::Started(Err(failure(FailureKind::Auth))),
            Phase::Pending,
            "AuthFailed",
            true,
        ),
        (
            "config rejected",
            Answer::Started(Err(failure(FailureKind::Rejected))),
            Phase::Failed,
            "StartRejected",
            true,
        ),
        (
            "token URL off the allow-list",
            Answer::Started(Err(failure(FailureKind::NotAllowed))),
            Phase::Failed,
            "EndpointNotAllowed",
            true,
        ),
    ];
    // (A missing Secret is found before the intent is recorded: see
    // a_missing_secret_stalls_then_recovers_by_itself.)
    for (case, answer, phase, reason, stalled) in cases {
        let d = step(&starting, Some(answer), at(1));
        assert_eq!(d.status.phase, Some(phase), "{case}");
        assert_eq!(cond(&d, "Succeeded").1, reason, "{case}");
        assert_eq!(
            cond(&d, "Stalled").0,
            if stalled { "True" } else { "False" },
            "{case}"
        );
        match phase {
            Phase::Running => {
                assert_eq!(d.status.workflow_id.as_deref(), Some("wf-1"));
                assert_eq!(
                    d.action,
                    Action::Requeue(Duration::from_secs(5)),
                    "polls soon after start"
                );
                assert_eq!(d.events[0].reason, "Started");
            }
            Phase::Pending => assert_eq!(d.status.started_at, None, "{case}: nothing was started"),
            Phase::Starting => assert!(
                d.status.started_at.is_some(),
                "{case}: the intent stays on record"
            ),
            _ => {}
        }
    }
}

#[test]
fn a_lost_start_is_searched_for_never_repeated() {
    let starting = lost_start(json!({}));
    // The next reconcile (or a restarted operator) looks for the run.
    let d = step(&starting, None, at(10));
    let Action::Search(q) = &d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(q.workflow_type, "courier.group/run");
    assert_eq!(q.created_from, t0() - SignedDuration::from_secs(120));

    // One run of the right type, new enough, started by this credential: adopted.
    // Runs of another type, from before the intent, or by another principal are not it.
    let mut other_type = workflow("wf-og", "running");
    other_type.workflow_type = "amperity.orchestration.orchestration/run".into();
    let mut too_old = workflow("wf-old", "running");
    too_old.created_at = Some("2025-04-17T06:00:00Z".into());
    let found = vec![
        workflow("wf-mine", "running"),
        other_type,
        too_old,
        by(workflow("wf-ui", "running"), "person|alice"),
    ];
    let d = step(&starting, Some(searched(found)), at(10));
    assert_eq!(d.action, Action::Poll("wf-mine".into()));
    assert_eq!(d.status.workflow_id.as_deref(), Some("wf-mine"));
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert_eq!(d.events[0].reason, "Adopted");
    // A run found already finished is finished at once.
    let d = step(
        &starting,
        Some(searched(vec![workflow("wf-mine", "succeeded")])),
        at(10),
    );
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
}

#[test]
fn nothing_found_is_not_proof_a_person_is_asked() {
    let starting = lost_start(json!({}));
    // The first answer opens the search window (60 s): keep looking.
    let (looking, d) = apply(&starting, Some(searched(vec![])), at(10));
    assert_eq!(d.action, Action::Requeue(Duration::from_secs(5)));
    assert_eq!(d.status.search_started_at, Some(Time(at(10))));
    assert_eq!(d.status.phase, Some(Phase::Starting));
    assert!(d.events.is_empty());
    // Failed searches (an outage) do not count as time spent looking.
    let d = step(
        &looking,
        Some(Answer::Searched(Search {
            result: Err(failure(FailureKind::Unknown)),
            principal: Some(Principal::given(ME)),
            claims: Claims::alone(),
            clock_offset: None,
            config_name: None,
        })),
        at(300),
    );
    assert!(matches!(d.action, Action::Requeue(_)));
    assert_eq!(d.status.search_started_at, Some(Time(at(10))));
    // Still nothing at the end of the window: never a second POST; a person decides.
    let (stalled, d) = apply(&looking, Some(searched(vec![])), at(70));
    assert!(!matches!(d.action, Action::Start(_)), "{:?}", d.action);
    assert_eq!(d.action, Action::AwaitChange);
    assert_eq!(cond(&d, "Stalled"), ("True", "StartUnconfirmed"));
    assert_eq!(d.status.phase, Some(Phase::Starting));
    let msg = message(&d, "Stalled");
    assert!(msg.contains("no courier.group/run run was found"), "{msg}");
    assert!(
        msg.contains("amperity.dev/resolve-start") && msg.contains("retry"),
        "{msg}"
    );
    assert_eq!(
        d.events
            .iter()
            .filter(|e| e.reason == "StartUnconfirmed")
            .count(),
        1
    );
    // Reconciling again changes nothing and starts nothing.
    let again = step(&stalled, None, at(80));
    assert_eq!(again.action, Action::AwaitChange);
    assert_eq!(again.status, stalled.status.clone().unwrap());
    // A run listed late is still adopted while the window is open.
    let d = step(
        &looking,
        Some(searched(vec![workflow("wf-late", "running")])),
        at(40),
    );
    assert_eq!(d.action, Action::Poll("wf-late".into()));
}

#[test]
fn a_match_is_certain_only_when_nothing_else_could_be_it() {
    let starting = lost_start(json!({}));
    let one = || vec![workflow("wf-1", "running")];
    let in_window = at(10);
    let after_window = at(80);
    // (case, answer, adopted)
    let cases: Vec<(&str, Answer, bool)> = vec![
        ("certain", searched(one()), true),
        (
            "principal unknown: no run can be confirmed",
            searched_with(one(), None, Claims::alone()),
            false,
        ),
        (
            "followed by another resource (any namespace)",
            searched_with(
                one(),
                Some(Principal::given(ME)),
                Claims {
                    tracked: ["wf-1".to_string()].into(),
                    ..Claims::alone()
                },
            ),
            false,
        ),
        (
            "another resource's start of the same kind is unresolved",
            searched_with(
                one(),
                Some(Principal::given(ME)),
                Claims {
                    other_starts: vec![t0() + SignedDuration::from_secs(20)],
                    ..Claims::alone()
                },
            ),
            false,
        ),
        (
            "the other resources could not all be read",
            searched_with(one(), Some(Principal::given(ME)), Claims::default()),
            false,
        ),
        (
            "another resource's unresolved start, long before: no contest",
            searched_with(
                one(),
                Some(Principal::given(ME)),
                Claims {
                    other_starts: vec![t0() - SignedDuration::from_secs(3600)],
                    ..Claims::alone()
                },
            ),
            true,
        ),
        (
            "a run created long after the intent is not this start's",
            searched(vec![{
                let mut w = workflow("wf-1", "running");
                w.created_at = Some("2025-04-18T06:30:00Z".into());
                w
            }]),
            false,
        ),
        ("two candidates", searched(two_candidates()), false),
        (
            "a run naming no principal",
            searched(vec![{
                let mut w = workflow("wf-1", "running");
                w.principal_id = None;
                w
            }]),
            false,
        ),
    ];
    for (case, answer, adopted) in cases {
        let d = step(&starting, Some(answer.clone()), in_window);
        if adopted {
            assert_eq!(d.action, Action::Poll("wf-1".into()), "{case}");
            continue;
        }
        assert!(
            matches!(d.action, Action::Requeue(_)),
            "{case}: {:?}",
            d.action
        );
        assert_eq!(d.status.workflow_id, None, "{case}");
        // At the end of the window a person is asked, and told what was found.
        let (looking, _) = apply(&starting, Some(answer.clone()), in_window);
        let d = step(&looking, Some(answer), after_window);
        assert_eq!(cond(&d, "Stalled"), ("True", "StartUnconfirmed"), "{case}");
        assert_eq!(d.action, Action::AwaitChange, "{case}");
    }
}

#[test]
fn a_secret_hiccup_during_a_start_keeps_the_intent() {
    let starting = lost_start(json!({}));
    let hiccup = Answer::CredentialsUnavailable {
        reason: "SecretUnreadable".into(),
        message: "Secret marketing/amperity-api could not be read (HTTP 429)".into(),
    };
    let (stalled, d) = apply(&starting, Some(hiccup), at(5));
    assert_eq!(
        d.status.phase,
        Some(Phase::Starting),
        "a POST may have been sent"
    );
    assert_eq!(d.status.started_at, Some(Time(t0())), "the intent stays");
    assert_eq!(cond(&d, "Stalled"), ("True", "SecretUnreadable"));
    assert_eq!(d.action, Action::Requeue(Duration::from_secs(30)));
    // When the credentials are back, the search resumes; no start.
    let d = step(&stalled, None, at(35));
    assert!(matches!(d.action, Action::Search(_)), "{:?}", d.action);
}

#[test]
fn the_resolve_start_annotation_is_acted_on_once() {
    let starting = lost_start(json!({}));
    let (looking, _) = apply(&starting, Some(searched(two_candidates())), at(10));
    let (stalled, _) = apply(&looking, Some(searched(two_candidates())), at(80));
    assert_eq!(conditions_reason(&stalled, "Stalled"), "StartUnconfirmed");

    let mut adopt = stalled.clone();
    adopt.metadata.annotations = Some(
        [(
            RESOLVE_START_ANNOTATION.to_string(),
            "adopt wf-x".to_string(),
        )]
        .into(),
    );
    let (adopted, d) = apply(&adopt, None, at(90));
    assert_eq!(d.action, Action::Poll("wf-x".into()));
    assert_eq!(d.status.start_resolution.as_deref(), Some("adopt wf-x"));
    assert_eq!(cond(&d, "Stalled").0, "False");
    assert_eq!(adopted.status.unwrap().workflow_id.as_deref(), Some("wf-x"));

    let mut retry = stalled.clone();
    let shown = &stalled
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap()
        .message;
    let from = shown.find("'retry ").unwrap() + "'retry ".len();
    let token = shown[from..].split('\'').next().unwrap();
    retry.metadata.annotations = Some(
        [(
            RESOLVE_START_ANNOTATION.to_string(),
            format!("retry {token}"),
        )]
        .into(),
    );
    let (retried, d) = apply(&retry, None, at(90));
    assert!(matches!(d.action, Action::Start(_)), "{:?}", d.action);
    assert_eq!(d.status.started_at, Some(Time(at(90))));
    // If that start is lost too, the same annotation does not start a third run.
    let (lost, _) = apply(
        &retried,
        Some(Answer::Started(Err(failure(FailureKind::Unknown)))),
        at(91),
    );
    let (lost, _) = apply(&lost, Some(searched(two_candidates())), at(100));
    let (lost, _) = apply(&lost, Some(searched(two_candidates())), at(170));
    assert_eq!(step(&lost, None, at(180)).action, Action::AwaitChange);

    for nonsense in [
        "please",
        "adopt ../../admin",
        "adopt a b",
        "retry",
        "retry 12",
    ] {
        let mut r = stalled.clone();
        r.metadata.annotations =
            Some([(RESOLVE_START_ANNOTATION.to_string(), nonsense.to_string())].into());
        let d = step(&r, None, at(90));
        assert_eq!(d.action, Action::AwaitChange, "{nonsense}");
        assert!(
            message(&d, "Stalled").contains("not understood"),
            "{nonsense}"
        );
    }
}

#[test]
fn stop_or_timeout_while_a_start_is_unconfirmed_ends_the_resource() {
    // spec.stop while searching: a certain match is adopted, then stopped.
    let mut r = lost_start(json!({}));
    r.spec.stop = true;
    let (adopted, d) = apply(
        &r,
        Some(searched(vec![workflow("wf-1", "running")])),
        at(10),
    );
    assert_eq!(d.action, Action::Poll("wf-1".into()));
    let d = step(
        &adopted,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(10),
    );
    assert_eq!(d.action, Action::Stop("wf-1".into()));
    // No certain match by the end of the window: nothing can be stopped; the
    // resource ends, naming what may be left running.
    let (looking, _) = apply(&r, Some(searched(two_candidates())), at(10));
    let d = step(&looking, Some(searched(two_candidates())), at(80));
    assert_eq!(d.status.phase, Some(Phase::Canceled));
    assert_eq!(cond(&d, "Succeeded"), ("False", "StopUnconfirmed"));
    let msg = message(&d, "Succeeded");
    assert!(msg.contains("wf-a") && msg.contains("wf-b"), "{msg}");
    // The timeout is enforced in Starting too.
    let r = lost_start(json!({"timeout": "1m"}));
    let (looking, _) = apply(&r, Some(searched(vec![])), at(30));
    let d = step(&looking, Some(searched(vec![])), at(95));
    assert_eq!(d.status.phase, Some(Phase::TimedOut));
    assert_eq!(cond(&d, "Succeeded"), ("False", "StopUnconfirmed"));
    // A person asked after the window, and spec.stop set afterwards: it ends too.
    let (looking, _) = apply(&lost_start(json!({})), Some(searched(vec![])), at(10));
    let (mut stalled, _) = apply(&looking, Some(searched(vec![])), at(80));
    stalled.spec.stop = true;
    let d = step(&stalled, None, at(90));
    assert_eq!(d.status.phase, Some(Phase::Canceled));
}

fn conditions_reason(r: &AmperityWorkflowRun, kind: &str) -> String {
    r.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[test]
fn spec_workflow_id_is_adopted_without_a_start() {
    let d = step(
        &run(json!({"workflowId": "wf-20250418-12345-AbCdE"})),
        None,
        t0(),
    );
    assert_eq!(d.action, Action::Poll("wf-20250418-12345-AbCdE".into()));
    assert_eq!(d.status.phase, Some(Phase::Running));
}

#[test]
fn every_documented_state_spelling_maps_to_a_phase() {
    let cases: Vec<(&str, Option<&str>, Phase, &str)> = vec![
        ("scheduled", None, Phase::Running, "Running"),
        ("Scheduled", None, Phase::Running, "Running"),
        ("Started", None, Phase::Running, "Running"),
        ("In progress", None, Phase::Running, "Running"),
        ("in_progress", None, Phase::Running, "Running"),
        ("Running", None, Phase::Running, "Running"),
        ("Running with failures", None, Phase::Running, "Running"),
        ("Finalizing", None, Phase::Running, "Running"),
        ("Stopping", None, Phase::Running, "Running"),
        ("Succeeded", None, Phase::Succeeded, "Succeeded"),
        ("succeeded", None, Phase::Succeeded, "Succeeded"),
        ("SUCCEEDED", None, Phase::Succeeded, "Succeeded"),
        ("failed", Some("customer"), Phase::Failed, "CustomerError"),
        ("Failed", Some("platform"), Phase::Failed, "PlatformError"),
        ("failed", None, Phase::Failed, "Failed"),
        ("canceled", None, Phase::Canceled, "Canceled"),
        ("Cancelled", None, Phase::Canceled, "Canceled"),
        ("Stopped", None, Phase::Canceled, "Canceled"),
        ("Skipped", None, Phase::Succeeded, "Succeeded"),
        ("Warming up", None, Phase::Running, "Running"),
    ];
    let r = running(json!({}));
    for (state, attribution, phase, reason) in cases {
        let w = match attribution {
            Some(a) => {
                let mut w = failed("wf-1", a);
                w.state = WorkflowState::parse(state);
                w
            }
            None => workflow("wf-1", state),
        };
        let d = step(&r, Some(Answer::Polled(Ok(w))), at(40));
        assert_eq!(d.status.phase, Some(phase), "{state}");
        assert_eq!(cond(&d, "Succeeded").1, reason, "{state}");
        let outcome = match phase {
            Phase::Succeeded => ["True", "True", "True", "False", "False"],
            Phase::Running => ["Unknown", "False", "False", "True", "False"],
            _ => ["False", "True", "False", "False", "True"],
        };
        expect_conditions(
            &d, outcome[0], outcome[1], outcome[2], outcome[3], outcome[4],
        );
        if phase.is_finished() {
            assert_eq!(d.status.completed_at, Some(Time(at(40))), "{state}");
            assert_eq!(d.action, Action::AwaitChange, "{state}");
        } else {
            assert_eq!(
                d.action,
                Action::Requeue(Duration::from_secs(30)),
                "{state}"
            );
        }
    }
    // A set ended_at ends a run whose state we do not know.
    let mut odd = workflow("wf-1", "archived");
    odd.ended_at = Some("2025-04-18T06:05:00Z".into());
    assert_eq!(
        step(&r, Some(Answer::Polled(Ok(odd))), at(40)).status.phase,
        Some(Phase::Succeeded)
    );
}

#[test]
fn status_mirrors_workflow_tasks_and_error() {
    let r = running(json!({}));
    let d = step(
        &r,
        Some(Answer::Polled(Ok(failed("wf-1", "customer")))),
        at(40),
    );
    let s = &d.status;
    let info = s.workflow.as_ref().unwrap();
    assert_eq!(info.name.as_deref(), Some("Daily"));
    assert_eq!(info.workflow_type.as_deref(), Some("courier.group/run"));
    assert_eq!(info.state.as_deref(), Some("failed"));
    assert_eq!(info.ended_at.as_deref(), Some("2025-04-18T06:05:00Z"));
    let tasks = s.tasks.as_ref().unwrap();
    assert_eq!(
        (tasks.total, tasks.succeeded, tasks.running, tasks.pending),
        (3, 1, 1, 1)
    );
    assert_eq!(tasks.progress, "1/3");
    assert_eq!(tasks.current, vec!["Updating domain tables".to_string()]);
    let error = s.error.as_ref().unwrap();
    assert_eq!(error.attribution.as_deref(), Some("customer"));
    assert_eq!(error.message, "Found table in an invalid state.");
    let failed_event = d.events.iter().find(|e| e.reason == "Failed").unwrap();
    assert_eq!(failed_event.type_, EventType::Warning);
    assert!(failed_event.note.contains("fix the configuration"));
}

#[test]
fn an_unchanged_poll_changes_nothing_and_emits_nothing() {
    let r = running(json!({}));
    let (polled, first) = apply(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(10),
    );
    assert!(!first.events.is_empty() || first.status != r.status.clone().unwrap());
    let again = step(
        &polled,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(40),
    );
    assert_eq!(
        again.status,
        polled.status.clone().unwrap(),
        "identical poll must not change status"
    );
    assert!(again.events.is_empty());
    assert_eq!(again.action, Action::Requeue(Duration::from_secs(30)));

    // An undocumented state warns once, not on every poll.
    let (odd, d) = apply(
        &polled,
        Some(Answer::Polled(Ok(workflow("wf-1", "Warming up")))),
        at(70),
    );
    assert_eq!(d.events.len(), 1);
    assert_eq!(
        (d.events[0].type_, d.events[0].reason),
        (EventType::Warning, "UnknownState")
    );
    let d = step(
        &odd,
        Some(Answer::Polled(Ok(workflow("wf-1", "Warming up")))),
        at(100),
    );
    assert!(d.events.is_empty());
    assert_eq!(d.status, odd.status.unwrap());
}

#[test]
fn polls_follow_the_interval_remembered_between_reconciles() {
    let r = running(json!({"pollInterval": "45s"}));
    let settings = Settings::default();
    let memory = |secs| Memory {
        last_polled: Some(at(secs)),
        ..Memory::default()
    };
    assert_eq!(
        decide(&r, None, at(100), Memory::default(), &settings).action,
        Action::Poll("wf-1".into())
    );
    assert_eq!(
        decide(&r, None, at(100), memory(90), &settings).action,
        Action::Requeue(Duration::from_secs(35))
    );
    assert_eq!(
        decide(&r, None, at(100), memory(55), &settings).action,
        Action::Poll("wf-1".into())
    );
}

#[test]
fn a_run_reported_ended_is_polled_now_and_only_the_poll_settles_it() {
    let r = running(json!({"pollInterval": "10m"}));
    let settings = Settings::default();
    let reported = |polled_secs| Memory {
        last_polled: Some(at(polled_secs)),
        end_reported: true,
        ..Memory::default()
    };
    // Polled a second ago, interval ten minutes: polled now all the same, and the
    // report itself writes nothing.
    let d = decide(&r, None, at(101), reported(100), &settings);
    assert_eq!(d.action, Action::Poll("wf-1".into()));
    assert_eq!(d.status, r.status.clone().unwrap());
    assert!(d.events.is_empty());
    // The poll's answer settles the report: ended, or (the list was wrong) still
    // running, which stays Running and goes back to its interval.
    let ended = decide(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "succeeded")))),
        at(101),
        reported(100),
        &settings,
    );
    assert_eq!(ended.status.phase, Some(Phase::Succeeded));
    assert!(!ended.memory.end_reported);
    let still = decide(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(101),
        reported(100),
        &settings,
    );
    assert_eq!(still.status.phase, Some(Phase::Running));
    assert!(!still.memory.end_reported);
    assert_eq!(still.action, Action::Requeue(Duration::from_secs(600)));
    // An answer that says nothing keeps the report: the retry also goes first.
    for (kind, kept) in [
        (FailureKind::Transient, true),
        (FailureKind::Unknown, true),
        (FailureKind::NotFound, false),
        (FailureKind::Auth, false),
        (FailureKind::Rejected, false),
    ] {
        let d = decide(
            &r,
            Some(Answer::Polled(Err(failure(kind)))),
            at(101),
            reported(100),
            &settings,
        );
        assert_eq!(d.memory.end_reported, kept, "{kind:?}");
    }
    // A run already finished is not polled for a report.
    let done = with_status(r.clone(), ended.status.clone());
    let d = decide(&done, None, at(102), reported(101), &settings);
    assert!(!matches!(d.action, Action::Poll(_)), "{:?}", d.action);
}

#[test]
fn poll_failures() {
    let r = running(json!({}));
    let d = step(
        &r,
        Some(Answer::Polled(Err(failure(FailureKind::NotFound)))),
        at(40),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d, "Succeeded"), ("False", "WorkflowNotFound"));

    let d = step(
        &r,
        Some(Answer::Polled(Err(failure(FailureKind::Auth)))),
        at(40),
    );
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert_eq!(cond(&d, "Stalled"), ("True", "AuthFailed"));
    assert_eq!(cond(&d, "Reconciling").0, "False");
    assert_eq!(d.events[0].reason, "AuthFailed");

    for kind in [FailureKind::Transient, FailureKind::Unknown] {
        let mut f = failure(kind);
        f.retry_after = Some(Duration::from_secs(7));
        let d = step(&r, Some(Answer::Polled(Err(f))), at(40));
        assert_eq!(
            d.status,
            r.status.clone().unwrap(),
            "a transient failure writes nothing"
        );
        assert_eq!(
            d.action,
            Action::Requeue(Duration::from_secs(7)),
            "Retry-After is honoured"
        );
    }
}

#[test]
fn a_missing_secret_stalls_then_recovers_by_itself() {
    let r = run(json!({}));
    let (stalled, d) = apply(
        &r,
        Some(Answer::CredentialsUnavailable {
            reason: "SecretNotFound".into(),
            message: "Secret marketing/amperity-api not found: create it with a token key".into(),
        }),
        t0(),
    );
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(cond(&d, "Stalled"), ("True", "SecretNotFound"));
    assert_eq!(d.action, Action::Requeue(Duration::from_secs(30)));
    let d = step(&stalled, None, at(30));
    assert!(matches!(d.action, Action::Start(_)));
    assert_eq!(cond(&d, "Stalled").0, "False");
}

#[test]
fn platform_failures_retry_up_to_the_limit_customer_failures_never() {
    let r = running(json!({"retry": {"limit": 1}}));
    let (pending, d) = apply(
        &r,
        Some(Answer::Polled(Ok(failed("wf-1", "platform")))),
        at(60),
    );
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.status.attempts.len(), 1);
    assert_eq!(d.status.attempts[0].workflow_id, "wf-1");
    assert_eq!(d.status.workflow_id, None);
    assert_eq!(d.action, Action::Requeue(Duration::from_secs(30)));
    assert_eq!(
        (d.events[0].type_, d.events[0].reason),
        (EventType::Warning, "Retrying")
    );
    assert_eq!(
        cond(&d, "Finished").0,
        "False",
        "a retrying run is not finished"
    );

    assert_eq!(
        step(&pending, None, at(70)).action,
        Action::Requeue(Duration::from_secs(20))
    );
    let (starting, d) = apply(&pending, None, at(90));
    assert!(matches!(d.action, Action::Start(_)));
    let (r2, _) = apply(
        &starting,
        Some(Answer::Started(Ok(workflow("wf-2", "scheduled")))),
        at(91),
    );
    let d = step(
        &r2,
        Some(Answer::Polled(Ok(failed("wf-2", "platform")))),
        at(150),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d, "Succeeded"), ("False", "RetriesExhausted"));
    assert_eq!(
        d.status.attempts.len(),
        1,
        "the final run is the current one, not an attempt"
    );

    let d = step(
        &r,
        Some(Answer::Polled(Ok(failed("wf-1", "customer")))),
        at(60),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d, "Succeeded"), ("False", "CustomerError"));
    assert!(d.status.attempts.is_empty());
}

/// What a reconcile remembers right after a poll at `secs`.
fn just_polled(secs: i64) -> Memory {
    Memory {
        last_polled: Some(at(secs)),
        ..Memory::default()
    }
}

#[test]
fn stop_and_timeout() {
    // spec.stop: a poll first (the run may have ended on its own), then the stop,
    // then Stopping, then Canceled.
    let mut r = running(json!({}));
    r.spec.stop = true;
    r.metadata.generation = Some(2);
    let settings = Settings::default();
    assert_eq!(step(&r, None, at(10)).action, Action::Poll("wf-1".into()));
    assert_eq!(
        decide(&r, None, at(10), just_polled(8), &settings).action,
        Action::Stop("wf-1".into())
    );
    let d = step(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(10),
    );
    assert_eq!(d.action, Action::Stop("wf-1".into()));
    let (stopping, d) = apply(
        &r,
        Some(Answer::StopSent(Ok(workflow("wf-1", "stopping")))),
        at(10),
    );
    assert_eq!(d.status.phase, Some(Phase::Stopping));
    assert_eq!(d.status.stop_reason, Some(StopReason::Requested));
    assert_eq!(d.status.stop_requested_at, Some(Time(at(10))));
    assert!(
        d.status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
    assert_eq!(d.action, Action::Requeue(Duration::from_secs(5)));
    let d = step(&stopping, None, at(20));
    assert_eq!(d.action, Action::Poll("wf-1".into()), "stop is sent once");
    let d = step(
        &stopping,
        Some(Answer::Polled(Ok(workflow("wf-1", "canceled")))),
        at(20),
    );
    assert_eq!(d.status.phase, Some(Phase::Canceled));
    assert_eq!(cond(&d, "Succeeded"), ("False", "Canceled"));
    assert_eq!(cond(&d, "Stalled").0, "True");

    // timeout: once the deadline passes, a poll, and the stop if the run still goes.
    let r = running(json!({"timeout": "1m"}));
    assert_eq!(step(&r, None, at(59)).action, Action::Poll("wf-1".into()));
    assert_eq!(
        decide(&r, None, at(60), just_polled(58), &settings).action,
        Action::Stop("wf-1".into())
    );
    let d = step(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(61),
    );
    assert_eq!(
        d.action,
        Action::Stop("wf-1".into()),
        "a poll past the deadline stops the run"
    );
    let (stopping, _) = apply(
        &r,
        Some(Answer::StopSent(Ok(workflow("wf-1", "stopping")))),
        at(61),
    );
    let d = step(
        &stopping,
        Some(Answer::Polled(Ok(workflow("wf-1", "canceled")))),
        at(70),
    );
    assert_eq!(d.status.phase, Some(Phase::TimedOut));
    assert_eq!(cond(&d, "Succeeded"), ("False", "TimedOut"));
    assert_eq!(d.events.last().unwrap().reason, "TimedOut");
    // A run that succeeded just before the deadline keeps its own outcome.
    let d = step(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "succeeded")))),
        at(61),
    );
    assert_eq!(d.status.phase, Some(Phase::Succeeded));

    // Stop before the run started: nothing is started.
    let d = step(&run(json!({"stop": true})), None, t0());
    assert_eq!(d.status.phase, Some(Phase::Canceled));
    assert!(!matches!(d.action, Action::Start(_)));
}

#[test]
fn a_refused_stop_looks_at_the_run_and_backs_off() {
    // The run succeeded at 5h59m59s; the stop at the deadline is refused (400).
    let r = running(json!({"timeout": "6h"}));
    let deadline = 6 * 3600;
    let (refused, d) = apply(
        &r,
        Some(Answer::StopSent(Err(failure(FailureKind::Rejected)))),
        at(deadline),
    );
    assert_eq!(d.action, Action::Poll("wf-1".into()), "the truth first");
    assert_eq!(d.events[0].reason, "StopFailed");
    assert_eq!(cond(&d, "Reconciling").1, "StopFailing");
    let d = decide(
        &refused,
        Some(Answer::Polled(Ok(workflow("wf-1", "succeeded")))),
        at(deadline),
        d.memory,
        &Settings::default(),
    );
    assert_eq!(
        d.status.phase,
        Some(Phase::Succeeded),
        "its own outcome, not TimedOut"
    );

    // Still running: the stop is tried again, later each time, and the condition says so.
    let mut memory = Memory::default();
    let mut waits = Vec::new();
    let mut state = r.clone();
    for i in 0..4 {
        let now = at(deadline + i * 600);
        let d = decide(
            &state,
            Some(Answer::StopSent(Err(failure(FailureKind::Unknown)))),
            now,
            memory,
            &Settings::default(),
        );
        assert_eq!(d.action, Action::Poll("wf-1".into()));
        assert_eq!(d.events.len(), usize::from(i == 0), "one StopFailed Event");
        memory = d.memory;
        waits.push(memory.next_stop_at.unwrap().duration_since(now));
        state = with_status(state, d.status.clone());
        let d = decide(
            &state,
            Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
            now,
            memory,
            &Settings::default(),
        );
        assert!(
            matches!(d.action, Action::Requeue(_)),
            "backing off: {:?}",
            d.action
        );
        assert!(message(&d, "Reconciling").contains("failed"), "still said");
        state = with_status(state, d.status.clone());
    }
    assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
    assert!(waits.last().unwrap() > waits.first().unwrap(), "{waits:?}");
}

#[test]
fn stopping_is_bounded() {
    let mut r = running(json!({}));
    r.spec.stop = true;
    let (stopping, _) = apply(
        &r,
        Some(Answer::StopSent(Ok(workflow("wf-1", "stopping")))),
        at(10),
    );
    let still = Answer::Polled(Ok(workflow("wf-1", "stopping")));
    let d = step(&stopping, Some(still.clone()), at(10 + 599));
    assert_eq!(d.status.phase, Some(Phase::Stopping));
    let d = step(&stopping, Some(still), at(10 + 600));
    assert_eq!(d.status.phase, Some(Phase::Canceled));
    assert_eq!(cond(&d, "Succeeded"), ("False", "StopUnconfirmed"));
    assert_eq!(cond(&d, "Stalled").0, "True");
    let d = step(&stopping, None, at(10 + 700));
    assert_eq!(d.status.phase, Some(Phase::Canceled), "also without a poll");
}

#[test]
fn the_timeout_bounds_the_whole_life_retries_included() {
    let r = running(json!({"timeout": "10m", "retry": {"limit": 3}}));
    // The first attempt fails for a platform reason at 9 minutes: the retry waits
    // 30 s, by which time the timeout has passed: no second attempt.
    let (pending, _) = apply(
        &r,
        Some(Answer::Polled(Ok(failed("wf-1", "platform")))),
        at(540),
    );
    assert_eq!(pending.phase(), Some(Phase::Pending));
    let d = step(&pending, None, at(600));
    assert!(!matches!(d.action, Action::Start(_)), "{:?}", d.action);
    assert_eq!(d.status.phase, Some(Phase::TimedOut));
    // A failure past the deadline is not retried at all.
    let d = step(
        &r,
        Some(Answer::Polled(Ok(failed("wf-1", "platform")))),
        at(601),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    // Before any start attempt, the clock runs from creation; without a creation
    // time (a resource never stored) there is none yet.
    let d = step(&run(json!({"timeout": "1s"})), None, at(100));
    assert!(matches!(d.action, Action::Start(_)));
}

#[test]
fn poll_failures_are_reported_once_they_persist() {
    let r = running(json!({}));
    let mut memory = Memory::default();
    let mut state = r.clone();
    let mut reported = 0;
    for i in 1..=5 {
        let d = decide(
            &state,
            Some(Answer::Polled(Err(failure(FailureKind::Unknown)))),
            at(i * 40),
            memory,
            &Settings::default(),
        );
        memory = d.memory;
        reported += d
            .events
            .iter()
            .filter(|e| e.reason == "PollsFailing")
            .count();
        if i < 3 {
            assert_eq!(
                d.status,
                state.status.clone().unwrap(),
                "one failure writes nothing"
            );
        }
        state = with_status(state, d.status.clone());
    }
    assert_eq!(reported, 1, "one Event");
    assert_eq!(conditions_reason(&state, "Reconciling"), "PollsFailing");
    // An answer again: back to the run's own line.
    let d = decide(
        &state,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(400),
        memory,
        &Settings::default(),
    );
    assert_eq!(cond(&d, "Reconciling").1, "Running");
    assert_eq!(d.memory.poll_failures, 0);
}

#[test]
fn throttling_is_told_once_per_episode() {
    let r = running(json!({}));
    let mut throttled = failure(FailureKind::Transient);
    throttled.throttled = true;
    throttled.retry_after = Some(Duration::from_secs(2));
    let mut memory = Memory::default();
    let mut events = 0;
    for i in 0..3 {
        let d = decide(
            &r,
            Some(Answer::Polled(Err(throttled.clone()))),
            at(i),
            memory,
            &Settings::default(),
        );
        assert_eq!(d.action, Action::Requeue(Duration::from_secs(2)));
        events += d
            .events
            .iter()
            .filter(|e| e.reason == "RateLimited")
            .count();
        memory = d.memory;
    }
    assert_eq!(events, 1);
    let d = decide(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(5),
        memory,
        &Settings::default(),
    );
    let d = decide(
        &r,
        Some(Answer::Polled(Err(throttled))),
        at(6),
        d.memory,
        &Settings::default(),
    );
    assert_eq!(d.events[0].reason, "RateLimited", "a new episode");
}

#[test]
fn an_endpoint_off_the_allow_list_fails_before_anything_is_sent() {
    let d = step(
        &run(json!({"endpoint": "https://evil.test/api"})),
        Some(Answer::EndpointNotAllowed {
            message: "https://evil.test/api is not on the operator's endpoint allow-list (--allowed-endpoints)".into(),
        }),
        t0(),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d, "Succeeded"), ("False", "EndpointNotAllowed"));
    assert_eq!(cond(&d, "Stalled").0, "True");
    assert_eq!(d.status.started_at, None, "nothing was started");
    assert!(message(&d, "Succeeded").contains("allowed-endpoints"));
    assert_eq!(d.events[0].reason, "Failed");
    assert_eq!(d.action, Action::AwaitChange);
}

#[test]
fn a_call_whose_turn_is_far_off_comes_back_without_recording_anything() {
    let d = step(
        &run(json!({})),
        Some(Answer::Later(Duration::from_secs(40))),
        t0(),
    );
    assert_eq!(d.action, Action::Requeue(Duration::from_secs(40)));
    assert_eq!(
        d.status.phase,
        Some(Phase::Pending),
        "no intent: nothing was sent"
    );
    assert_eq!(d.status.started_at, None);
    let r = running(json!({}));
    let d = step(&r, Some(Answer::Later(Duration::from_secs(40))), at(10));
    assert_eq!(d.status, r.status.clone().unwrap());
}

#[test]
fn deletion_stops_the_run_first_and_never_blocks_for_ever() {
    let deleting = |r: &AmperityWorkflowRun| {
        let mut r = r.clone();
        r.metadata.deletion_timestamp = Some(Time(at(100)));
        r
    };
    let r = deleting(&running(json!({})));
    assert_eq!(step(&r, None, at(100)).action, Action::Stop("wf-1".into()));
    let d = step(
        &r,
        Some(Answer::StopSent(Ok(workflow("wf-1", "stopping")))),
        at(100),
    );
    assert_eq!(d.action, Action::ReleaseFinalizer);
    assert_eq!(d.status.stop_reason, Some(StopReason::Deletion));
    let unreachable = Answer::StopSent(Err(failure(FailureKind::Unknown)));
    assert_eq!(
        step(&r, Some(unreachable.clone()), at(110)).action,
        Action::Requeue(Duration::from_secs(5))
    );
    let d = step(&r, Some(unreachable), at(100 + 120));
    assert_eq!(
        d.action,
        Action::ReleaseFinalizer,
        "gives up after the grace period"
    );
    assert_eq!(d.events[0].reason, "StopFailed");
    // The grace period holds even while the stop waits for its turn in the budget.
    let d = step(&r, Some(Answer::Later(Duration::from_secs(300))), at(110));
    assert_eq!(d.action, Action::Requeue(Duration::from_secs(110)));
    assert_eq!(step(&r, None, at(220)).action, Action::ReleaseFinalizer);
    // A refused stop: the run may have ended; look, and let go when it has.
    let d = step(
        &r,
        Some(Answer::StopSent(Err(failure(FailureKind::Rejected)))),
        at(101),
    );
    assert_eq!(d.action, Action::Poll("wf-1".into()));
    let d = step(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "succeeded")))),
        at(101),
    );
    assert_eq!(d.action, Action::ReleaseFinalizer);
    let gone = Answer::CredentialsUnavailable {
        reason: "SecretNotFound".into(),
        message: "gone".into(),
    };
    assert_eq!(
        step(&r, Some(gone), at(101)).action,
        Action::ReleaseFinalizer
    );

    let orphan = deleting(&running(json!({"deletionPolicy": "Orphan"})));
    assert_eq!(
        step(&orphan, None, at(100)).action,
        Action::ReleaseFinalizer
    );
    let finished = deleting(&with_status(
        running(json!({})),
        step(
            &running(json!({})),
            Some(Answer::Polled(Ok(workflow("wf-1", "succeeded")))),
            at(50),
        )
        .status,
    ));
    assert_eq!(
        step(&finished, None, at(100)).action,
        Action::ReleaseFinalizer
    );
    assert_eq!(
        step(&deleting(&run(json!({}))), None, at(100)).action,
        Action::ReleaseFinalizer
    );
}

#[test]
fn deleting_an_unconfirmed_start_searches_and_stops_what_it_finds() {
    let deleting = |r: &AmperityWorkflowRun| {
        let mut r = r.clone();
        r.metadata.deletion_timestamp = Some(Time(at(100)));
        r
    };
    let r = deleting(&lost_start(json!({})));
    assert!(matches!(step(&r, None, at(100)).action, Action::Search(_)));
    // A certain match: stopped, then released.
    let (found, d) = apply(
        &r,
        Some(searched(vec![workflow("wf-1", "running")])),
        at(100),
    );
    assert_eq!(d.action, Action::Stop("wf-1".into()));
    let d = step(
        &found,
        Some(Answer::StopSent(Ok(workflow("wf-1", "stopping")))),
        at(101),
    );
    assert_eq!(d.action, Action::ReleaseFinalizer);
    assert_eq!(d.events[0].reason, "Stopping");
    // Nothing certain: released, with an Event naming what may be left running.
    let d = step(&r, Some(searched(two_candidates())), at(100));
    assert_eq!(d.action, Action::ReleaseFinalizer);
    assert_eq!(d.events[0].reason, "DeletedWhileStarting");
    assert!(d.events[0].note.contains("wf-a") && d.events[0].note.contains("wf-b"));
    // Orphan: nothing to look for.
    let orphan = deleting(&lost_start(json!({"deletionPolicy": "Orphan"})));
    assert_eq!(
        step(&orphan, None, at(100)).action,
        Action::ReleaseFinalizer
    );
}

#[test]
fn ttl_deletes_finished_resources() {
    let r = running(json!({"ttlSecondsAfterFinished": 60}));
    let (done, d) = apply(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "succeeded")))),
        at(100),
    );
    assert_eq!(d.action, Action::Requeue(Duration::from_secs(60)));
    assert_eq!(
        step(&done, None, at(130)).action,
        Action::Requeue(Duration::from_secs(30))
    );
    assert_eq!(step(&done, None, at(160)).action, Action::Delete);
    let (plain, _) = apply(
        &running(json!({})),
        Some(Answer::Polled(Ok(workflow("wf-1", "succeeded")))),
        at(100),
    );
    assert_eq!(step(&plain, None, at(100_000)).action, Action::AwaitChange);
}

#[test]
fn an_invalid_spec_fails_before_any_api_call() {
    let d = step(
        &run(json!({"pollInterval": "1s", "configId": "nope"})),
        None,
        t0(),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d, "Succeeded"), ("False", "InvalidSpec"));
    let msg = &d.status.conditions[0].message;
    assert!(
        msg.contains("spec.pollInterval") && msg.contains("spec.configId"),
        "{msg}"
    );
    assert_eq!(d.action, Action::AwaitChange);
}

#[test]
fn transition_times_move_only_when_a_condition_changes() {
    let r = running(json!({}));
    let before: Vec<_> = r.status.as_ref().unwrap().conditions.clone();
    let d = step(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "In progress")))),
        at(500),
    );
    for c in &d.status.conditions {
        let old = before.iter().find(|o| o.type_ == c.type_).unwrap();
        assert_eq!(
            c.last_transition_time, old.last_transition_time,
            "{} did not transition",
            c.type_
        );
    }
    let d = step(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "succeeded")))),
        at(500),
    );
    let finished = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Finished")
        .unwrap();
    assert_eq!(finished.last_transition_time, Time(at(500)));
}

#[test]
fn a_cluster_connection_that_does_not_choose_the_namespace_ends_the_run() {
    let r = run(json!({}));
    let message = "ClusterAmperityConnection tenant-a does not choose namespace marketing (its namespaceSelector): ask its owners to choose this namespace, or use a connection that does";
    let (ended, d) = apply(
        &r,
        Some(Answer::CredentialsUnavailable {
            reason: "ConnectionNotAllowed".into(),
            message: message.into(),
        }),
        t0(),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d, "Succeeded"), ("False", "ConnectionNotAllowed"));
    assert_eq!(cond(&d, "Stalled"), ("True", "ConnectionNotAllowed"));
    assert_eq!(cond(&d, "Finished").0, "True");
    assert_eq!(message_of(&d, "Succeeded"), message);
    assert!(
        d.events
            .iter()
            .any(|e| e.type_ == EventType::Warning && e.note == message),
        "a Warning Event says so: {:?}",
        d.events
    );
    assert_eq!(d.action, Action::AwaitChange);
    // Ended: nothing is started later, whatever time passes.
    let d = step(&ended, None, at(3600));
    assert!(!matches!(d.action, Action::Start(_)), "{:?}", d.action);
    assert_eq!(d.status.phase, Some(Phase::Failed));
}

#[test]
fn a_missing_or_unready_connection_stalls_until_it_is_fixed() {
    for reason in ["ConnectionNotFound", "ConnectionNotReady"] {
        let r = run(json!({}));
        let (stalled, d) = apply(
            &r,
            Some(Answer::CredentialsUnavailable {
                reason: reason.into(),
                message: "AmperityConnection marketing/tenant-a (spec.connectionRef) does not exist: create it, or name another connection".into(),
            }),
            t0(),
        );
        assert_eq!(d.status.phase, Some(Phase::Pending), "{reason}");
        assert_eq!(cond(&d, "Stalled"), ("True", reason));
        assert_eq!(d.action, Action::Requeue(Duration::from_secs(30)));
        let d = step(&stalled, None, at(30));
        assert!(
            matches!(d.action, Action::Start(_)),
            "{reason}: tried again"
        );
    }
}

fn message_of<'a>(d: &'a Decision, kind: &str) -> &'a str {
    message(d, kind)
}

/// A run a schedule created with a starting deadline (issue 22).
fn with_start_deadline(mut r: AmperityWorkflowRun, deadline: &str) -> AmperityWorkflowRun {
    r.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(START_DEADLINE_ANNOTATION.into(), deadline.into());
    r
}

#[test]
fn a_scheduled_run_is_not_started_past_its_starting_deadline() {
    let r = with_start_deadline(run(json!({})), &at(600).to_string());
    // Within the deadline it starts.
    assert!(matches!(step(&r, None, at(599)).action, Action::Start(_)));
    // Waiting for its Secret past the deadline: once it looks again, it ends, not started.
    let (waiting, _) = apply(
        &r,
        Some(Answer::CredentialsUnavailable {
            reason: "SecretNotFound".into(),
            message: "secret amperity-api not found".into(),
        }),
        at(10),
    );
    let d = step(&waiting, None, at(601));
    assert!(!matches!(d.action, Action::Start(_)), "{:?}", d.action);
    assert_eq!(d.status.phase, Some(Phase::TimedOut));
    assert_eq!(cond(&d, "Succeeded"), ("False", "StartingDeadlineExceeded"));
    assert!(message(&d, "Succeeded").contains(START_DEADLINE_ANNOTATION));
    assert_eq!(d.events.last().unwrap().type_, EventType::Warning);
    // A deadline that does not parse is no deadline; a run without one starts late.
    let junk = with_start_deadline(run(json!({})), "tomorrow");
    assert!(matches!(
        step(&junk, None, at(10_000)).action,
        Action::Start(_)
    ));
    assert!(matches!(
        step(&run(json!({})), None, at(10_000)).action,
        Action::Start(_)
    ));
}
