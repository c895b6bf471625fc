//! Table tests of issue 21's scenarios: each one a way a resource could follow a
//! run that is not its own, end with the wrong outcome, or never end.

use amperity_operator::amperity::wire::Workflow;
use amperity_operator::amperity::{ClientError, Principal};
use amperity_operator::crd::{AmperityWorkflowRun, Phase, StopReason};
use amperity_operator::run::decide::{
    Action, Answer, ApiFailure, Claims, Decision, EventType, FailureKind, Memory, Search, Settings,
    decide,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

const ME: &str = "api-key|me";

fn t0() -> Timestamp {
    "2025-04-18T06:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn run(extra_spec: serde_json::Value) -> AmperityWorkflowRun {
    let mut spec = json!({
        "tenant": "socktown",
        "tokenSecretRef": {"name": "amperity-api", "key": "token"},
        "configId": "cg-123ABc4DE",
        "pollInterval": "30s"
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1",
        "kind": "AmperityWorkflowRun",
        "metadata": {"name": "nightly", "namespace": "marketing", "generation": 1, "uid": "u1",
                     "creationTimestamp": "2025-04-18T06:00:00Z"},
        "spec": spec
    }))
    .unwrap()
}

fn workflow(id: &str, state: &str, principal_id: Option<&str>, name: Option<&str>) -> Workflow {
    serde_json::from_value(json!({
        "id": id, "state": state, "type": "courier.group/run", "name": "Daily",
        "tenant": "socktown", "created_at": "2025-04-18T06:00:01Z",
        "principal_id": principal_id, "principal_name": name
    }))
    .unwrap()
}

fn mine(id: &str, state: &str) -> Workflow {
    workflow(id, state, Some(ME), Some("Automated workflow"))
}

fn failure(kind: FailureKind) -> ApiFailure {
    ApiFailure {
        kind,
        message: "HTTP 503".into(),
        retry_after: None,
        throttled: false,
    }
}

/// Decides, with `memory`, and persists the status as the driver does.
fn apply_with(
    r: &AmperityWorkflowRun,
    answer: Option<Answer>,
    now: Timestamp,
    memory: Memory,
) -> (AmperityWorkflowRun, Decision) {
    let d = decide(r, answer, now, memory, &Settings::default());
    let mut next = r.clone();
    next.status = Some(d.status.clone());
    (next, d)
}

fn apply(
    r: &AmperityWorkflowRun,
    answer: Option<Answer>,
    now: Timestamp,
) -> (AmperityWorkflowRun, Decision) {
    apply_with(r, answer, now, Memory::default())
}

fn reason(d: &Decision, kind: &str) -> (String, String) {
    let c = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition"));
    (c.status.clone(), c.reason.clone())
}

fn message(d: &Decision, kind: &str) -> String {
    d.status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.message.clone())
        .unwrap_or_else(|| panic!("no {kind} condition"))
}

/// A resource whose start's answer was lost at t0+1.
fn lost_start() -> AmperityWorkflowRun {
    let (starting, d) = apply(&run(json!({})), None, t0());
    assert!(matches!(d.action, Action::Start(_)));
    let (lost, _) = apply(
        &starting,
        Some(Answer::Started(Err(failure(FailureKind::Unknown)))),
        at(1),
    );
    lost
}

/// A resource that is Running wf-1, started at t0.
fn running(extra_spec: serde_json::Value) -> AmperityWorkflowRun {
    let (r, _) = apply(&run(extra_spec), None, t0());
    let (r, _) = apply(&r, Some(Answer::Started(Ok(mine("wf-1", "running")))), t0());
    assert_eq!(r.status.as_ref().unwrap().phase, Some(Phase::Running));
    r
}

/// Scenario 2: another key with the same display name ("Automated workflow") is
/// someone else; a run that shows only a name is never certain.
#[test]
fn scenario_2_a_principal_matches_by_id_never_by_name_alone() {
    // What the operator learned from this credential's earlier starts.
    let learned = Principal {
        id: Some(ME.into()),
        name: Some("Automated workflow".into()),
    };
    let search = |runs: Vec<Workflow>| {
        Answer::Searched(Search {
            result: Ok(runs),
            principal: Some(learned.clone()),
            claims: Claims::alone(),
            clock_offset: None,
            config_name: None,
        })
    };
    let namesake = workflow(
        "wf-other",
        "running",
        Some("api-key|other"),
        Some("Automated workflow"),
    );
    let name_only = workflow("wf-name", "running", None, Some("Automated workflow"));
    let given_as_name = workflow("wf-given", "running", None, Some(ME));
    for (runs, listed) in [
        (vec![namesake.clone()], vec![]),
        (vec![name_only.clone()], vec!["wf-name"]),
        (vec![given_as_name.clone()], vec!["wf-given"]),
        (vec![namesake, name_only], vec!["wf-name"]),
    ] {
        let ids: Vec<String> = runs.iter().map(|w| w.id.clone()).collect();
        let (r, d) = apply(&lost_start(), Some(search(runs.clone())), at(2));
        assert_eq!(d.status.workflow_id, None, "{ids:?} adopted");
        // Past the settle time, a person is asked, with only the possible runs listed.
        let (_, d) = apply(&r, Some(search(runs)), at(2 + 61));
        assert_eq!(d.status.workflow_id, None, "{ids:?} adopted");
        assert_eq!(reason(&d, "Stalled").1, "StartUnconfirmed", "{ids:?}");
        let stalled = message(&d, "Stalled");
        assert!(
            !stalled.contains("wf-other"),
            "another's run listed: {stalled}"
        );
        for id in listed {
            assert!(stalled.contains(id), "{id} not listed: {stalled}");
        }
    }
    // The credential's own run, by id, is still adopted.
    let (_, d) = apply(
        &lost_start(),
        Some(search(vec![mine("wf-mine", "running")])),
        at(2),
    );
    assert_eq!(d.status.workflow_id.as_deref(), Some("wf-mine"));
}

/// Scenario 9: a token no header can carry is a Secret problem (Stalled, reason
/// and message naming the Secret's key), and nothing is recorded as sent; an error
/// raised before a byte left is "never sent", so a start is not searched for.
#[test]
fn scenario_9_what_was_never_sent_is_never_maybe_sent() {
    let r = run(json!({}));
    let d = decide(
        &r,
        Some(Answer::CredentialsUnavailable {
            reason: "SecretKeyInvalid".into(),
            message: "Secret marketing/amperity-api key \"token\" holds characters a bearer token cannot have".into(),
        }),
        t0(),
        Memory::default(),
        &Settings::default(),
    );
    assert_eq!(
        d.status.phase,
        Some(Phase::Pending),
        "no intent: nothing sent"
    );
    assert_eq!(
        reason(&d, "Stalled"),
        ("True".into(), "SecretKeyInvalid".into())
    );
    assert!(matches!(d.action, Action::Requeue(_)));
    assert!(d.events.iter().any(|e| e.type_ == EventType::Warning));

    // The request builder's refusal is "never left": the start is deferred and
    // repeated, never searched for.
    let unsent = ClientError::Unsent("builder error: failed to parse header value".into());
    let f = amperity_operator::run::driver::failure(&unsent);
    assert_eq!(f.kind, FailureKind::Transient, "{f:?}");
    let (starting, _) = apply(&r, None, t0());
    let (r, d) = apply(&starting, Some(Answer::Started(Err(f))), at(1));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    let (_, d) = apply(&r, None, at(10));
    assert!(matches!(d.action, Action::Start(_)), "{:?}", d.action);
    // A transport failure after the request may have left is still searched for.
    let mid = ClientError::Transport("connection reset".into());
    assert_eq!(
        amperity_operator::run::driver::failure(&mid).kind,
        FailureKind::Unknown
    );
}

/// Scenario 4: the timeout counts from the first attempt, whatever happens to the
/// later ones; before any attempt, from the resource's creation.
#[test]
fn scenario_4_the_timeout_counts_from_the_first_attempt_or_creation() {
    // Every start answered 429: deferred again and again, but not past the timeout.
    let mut r = run(json!({"timeout": "2m"}));
    let mut starts = 0;
    let mut now = 5;
    let end = loop {
        let (next, d) = apply(&r, None, at(now));
        r = next;
        match d.action {
            Action::Start(_) => {
                starts += 1;
                assert_eq!(
                    d.status.first_attempt_at,
                    Some(Time(at(5))),
                    "the first attempt's time is kept"
                );
                let mut throttled = failure(FailureKind::Transient);
                throttled.throttled = true;
                let (next, _) = apply(&r, Some(Answer::Started(Err(throttled))), at(now));
                r = next;
            }
            _ if d.status.phase.is_some_and(Phase::is_finished) => break d,
            _ => {}
        }
        now += 10;
        assert!(now < 1000, "never timed out after {starts} starts");
    };
    assert!(starts >= 2, "{starts}");
    assert_eq!(end.status.phase, Some(Phase::TimedOut));
    assert_eq!(reason(&end, "Succeeded").1, "TimedOut");
    assert!(now <= 5 + 120 + 10, "timed out at {now}");
    assert_eq!(end.status.workflow_id, None);

    // A Secret that never appears: TimedOut from creation (t0), no run.
    let r = run(json!({"timeout": "1m"}));
    let missing = || Answer::CredentialsUnavailable {
        reason: "SecretNotFound".into(),
        message: "Secret marketing/amperity-api does not exist".into(),
    };
    let (r, d) = apply(&r, Some(missing()), at(30));
    assert_eq!(reason(&d, "Stalled").1, "SecretNotFound");
    let (_, d) = apply(&r, Some(missing()), at(60));
    assert_eq!(d.status.phase, Some(Phase::TimedOut));
    assert!(!matches!(d.action, Action::Start(_)));
    let (_, d) = apply(&r, None, at(61));
    assert_eq!(
        d.status.phase,
        Some(Phase::TimedOut),
        "nor on a plain recheck"
    );

    // Credentials refused on every start (AuthFailed stall): bounded too.
    let (starting, _) = apply(&run(json!({"timeout": "1m"})), None, at(1));
    let (r, _) = apply(
        &starting,
        Some(Answer::Started(Err(failure(FailureKind::Auth)))),
        at(2),
    );
    let (_, d) = apply(&r, None, at(62));
    assert_eq!(d.status.phase, Some(Phase::TimedOut));

    // A start waiting for a person ends TimedOut at the deadline, starting nothing.
    let r = lost_start();
    let r = {
        let mut r = r;
        r.spec.timeout = Some("5m".into());
        r
    };
    let nothing = || {
        Answer::Searched(Search {
            result: Ok(vec![]),
            principal: Some(Principal::given(ME)),
            claims: Claims::alone(),
            clock_offset: None,
            config_name: None,
        })
    };
    let (r, _) = apply(&r, Some(nothing()), at(2));
    let (r, d) = apply(&r, Some(nothing()), at(100));
    assert_eq!(reason(&d, "Stalled").1, "StartUnconfirmed");
    let (_, d) = apply(&r, None, at(301));
    assert_eq!(d.status.phase, Some(Phase::TimedOut));
    assert!(!matches!(d.action, Action::Start(_)));
}

/// Scenario 5: the reason to stop is recorded with the intent, so a stop whose
/// answer was lost still ends the run for that reason.
#[test]
fn scenario_5_a_lost_stop_answer_keeps_the_reason_to_stop() {
    let r = running(json!({"timeout": "1m"}));
    let (r, d) = apply(
        &r,
        Some(Answer::Polled(Ok(mine("wf-1", "running")))),
        at(61),
    );
    assert_eq!(d.action, Action::Stop("wf-1".into()));
    assert_eq!(
        d.status.stop_reason,
        Some(StopReason::Timeout),
        "recorded before the stop is sent"
    );
    assert_eq!(d.status.stop_requested_at, Some(Time(at(61))));
    assert_eq!(
        d.status.phase,
        Some(Phase::Running),
        "not Stopping before accepted"
    );
    // The stop's answer is lost (500), though Amperity stopped the run.
    let (r, d) = apply_with(
        &r,
        Some(Answer::StopSent(Err(failure(FailureKind::Unknown)))),
        at(62),
        d.memory,
    );
    assert_eq!(d.action, Action::Poll("wf-1".into()));
    let (_, d) = apply_with(
        &r,
        Some(Answer::Polled(Ok(mine("wf-1", "canceled")))),
        at(70),
        d.memory,
    );
    assert_eq!(
        d.status.phase,
        Some(Phase::TimedOut),
        "not 'stopped outside'"
    );
    assert_eq!(reason(&d, "Succeeded").1, "TimedOut");

    // spec.stop: the same, ending Canceled as asked.
    let mut r = running(json!({}));
    r.spec.stop = true;
    let (r, d) = apply(
        &r,
        Some(Answer::Polled(Ok(mine("wf-1", "running")))),
        at(10),
    );
    assert_eq!(d.status.stop_reason, Some(StopReason::Requested));
    let (_, d) = apply(
        &r,
        Some(Answer::Polled(Ok(mine("wf-1", "stopped")))),
        at(20),
    );
    assert_eq!(d.status.phase, Some(Phase::Canceled));
    let m = message(&d, "Succeeded");
    assert!(m.contains("as spec.stop asked"), "{m}");
}

/// Scenario 6: a stop Amperity keeps refusing ends StopUnconfirmed after the
/// grace period, with a Warning Event, instead of being retried for ever.
#[test]
fn scenario_6_a_refused_stop_ends_stop_unconfirmed() {
    let grace = Settings::default().stop_grace.as_secs() as i64;
    let mut r = running(json!({"timeout": "1m"}));
    let mut memory = Memory::default();
    let mut now = 61;
    let mut stops = 0;
    let mut answer = Some(Answer::Polled(Ok(mine("wf-1", "running"))));
    let end = loop {
        let (next, d) = apply_with(&r, answer.take(), at(now), memory);
        r = next;
        memory = d.memory;
        if d.status.phase.is_some_and(Phase::is_finished) {
            break d;
        }
        match d.action {
            Action::Stop(_) => {
                stops += 1;
                answer = Some(Answer::StopSent(Err(failure(FailureKind::Rejected))));
            }
            Action::Poll(_) => {
                memory.last_polled = Some(at(now));
                answer = Some(Answer::Polled(Ok(mine("wf-1", "running"))));
            }
            Action::Requeue(wait) => now += wait.as_secs().max(1) as i64,
            other => panic!("{other:?}"),
        }
        assert!(now < 61 + 10 * grace, "still retrying after {stops} stops");
    };
    assert!(stops >= 2, "{stops}");
    assert_eq!(end.status.phase, Some(Phase::TimedOut));
    assert_eq!(reason(&end, "Succeeded").1, "StopUnconfirmed");
    assert!(
        now >= 61 + grace && now <= 61 + grace + 300,
        "ended at {now}"
    );
    let event = end
        .events
        .iter()
        .find(|e| e.reason == "StopUnconfirmed")
        .expect("an Event says so");
    assert_eq!(event.type_, EventType::Warning);
    assert!(event.note.contains("did not accept"), "{}", event.note);
}

/// A run of this credential's principal, created `created` seconds after t0 (in
/// Amperity's clock), ended `ended` seconds after t0 if it did.
fn listed(id: &str, name: &str, created: i64, ended: Option<i64>) -> Workflow {
    let mut w = mine(
        id,
        if ended.is_some() {
            "succeeded"
        } else {
            "running"
        },
    );
    w.name = name.into();
    w.created_at = Some(at(created).to_string());
    w.ended_at = ended.map(|e| at(e).to_string());
    w
}

fn search_with(
    runs: Vec<Workflow>,
    claims: Claims,
    clock_offset: Option<SignedDuration>,
    config_name: Option<&str>,
) -> Answer {
    Answer::Searched(Search {
        result: Ok(runs),
        principal: Some(Principal::given(ME)),
        claims,
        clock_offset,
        config_name: config_name.map(str::to_string),
    })
}

/// Searches twice (the second past the settle time) and returns the last decision.
fn settle(r: &AmperityWorkflowRun, answer: impl Fn() -> Answer) -> Decision {
    let (r, d) = apply(r, Some(answer()), at(2));
    if d.status.workflow_id.is_some() {
        return d;
    }
    apply(&r, Some(answer()), at(2 + 61)).1
}

/// Scenario 1: what a deleted resource, a person or another installation started
/// is never adopted: runs created before our request could have reached Amperity
/// or ended before our intent, runs of another workflow name; and windows are
/// drawn in Amperity's clock.
/// Scenario 1, the search window: once an answer told how far Amperity's clock is
/// from ours, a lost start's search asks for runs created since the intent in
/// Amperity's clock, less a small tolerance (5 s), not since two minutes before
/// it in ours: with Amperity five minutes behind, the old window missed the run
/// the start made, and with Amperity ahead it reached back over runs of others.
#[test]
fn scenario_1_the_search_window_is_in_amperitys_clock() {
    let lost = lost_start();
    let query = |clock: Option<SignedDuration>| {
        let memory = Memory {
            amperity_clock: clock,
            ..Memory::default()
        };
        match apply_with(&lost, None, at(2), memory).1.action {
            Action::Search(q) => q.created_from,
            other => panic!("{other:?}"),
        }
    };
    let behind = SignedDuration::from_secs(-300);
    assert_eq!(query(Some(behind)), t0() - SignedDuration::from_secs(305));
    let ahead = SignedDuration::from_secs(240);
    assert_eq!(query(Some(ahead)), t0() + SignedDuration::from_secs(235));
    // Not known yet (a restart, no answer since): the wide skew, in our clock.
    assert_eq!(query(None), t0() - SignedDuration::from_secs(120));
}

#[test]
fn scenario_1_runs_made_before_our_request_or_of_another_name_are_never_adopted() {
    let exact = Some(SignedDuration::ZERO);
    // B (deletionPolicy Orphan, deleted, so nobody claims its run) started 100 s
    // before A's intent; A's start was answered 503 and created nothing.
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-b", "Daily", -100, None)],
            Claims::alone(),
            exact,
            None,
        )
    });
    assert_eq!(
        d.status.workflow_id, None,
        "adopted a run made before our request"
    );
    assert_eq!(reason(&d, "Stalled").1, "StartUnconfirmed");
    assert!(
        !message(&d, "Stalled").contains("wf-b"),
        "not even a candidate"
    );
    // The same with ttlSecondsAfterFinished: 0 (B's run ended, B is gone).
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-b", "Daily", -100, Some(-10))],
            Claims::alone(),
            exact,
            None,
        )
    });
    assert!(
        !message(&d, "Stalled").contains("wf-b"),
        "ended before the intent"
    );
    // Without a Date header, the wide skew (120 s) is all there is: a run created
    // and ended before that is still no candidate.
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-b", "Daily", -300, Some(-130))],
            Claims::alone(),
            None,
            None,
        )
    });
    assert!(!message(&d, "Stalled").contains("wf-b"));
    // Within the tolerance, ours is still found.
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-a", "Daily", -3, None)],
            Claims::alone(),
            exact,
            None,
        )
    });
    assert_eq!(d.status.workflow_id.as_deref(), Some("wf-a"));

    // Amperity's clock runs 4 minutes ahead of ours: our run, created just after
    // the request left, is found in its clock; a run made 30 s before is not.
    let ahead = Some(SignedDuration::from_secs(240));
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-a", "Daily", 241, None)],
            Claims::alone(),
            ahead,
            None,
        )
    });
    assert_eq!(d.status.workflow_id.as_deref(), Some("wf-a"));
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-b", "Daily", 210, None)],
            Claims::alone(),
            ahead,
            None,
        )
    });
    assert_eq!(d.status.workflow_id, None);
    assert!(!message(&d, "Stalled").contains("wf-b"));

    // A run of another workflow name than this config id's is never it.
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-w", "Weekly digest", 1, None)],
            Claims::alone(),
            exact,
            Some("Daily"),
        )
    });
    assert_eq!(d.status.workflow_id, None);
    assert!(!message(&d, "Stalled").contains("wf-w"));
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-a", "Daily", 1, None)],
            Claims::alone(),
            exact,
            Some("Daily"),
        )
    });
    assert_eq!(d.status.workflow_id.as_deref(), Some("wf-a"));

    // Another resource's lost start 170 s before ours contests only what it could
    // have made while its request was in flight: our run, made now, is ours.
    let contested_by = |secs: i64| Claims {
        other_starts: vec![at(secs)],
        ..Claims::alone()
    };
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-a", "Daily", 1, None)],
            contested_by(-170),
            exact,
            None,
        )
    });
    assert_eq!(d.status.workflow_id.as_deref(), Some("wf-a"));
    // One sent at about the same time still contests it.
    let d = settle(&lost_start(), || {
        search_with(
            vec![listed("wf-a", "Daily", 1, None)],
            contested_by(-2),
            exact,
            None,
        )
    });
    assert_eq!(d.status.workflow_id, None);
}

fn annotated(mut r: AmperityWorkflowRun, value: &str) -> AmperityWorkflowRun {
    r.metadata.annotations = Some(
        [(
            amperity_operator::run::decide::RESOLVE_START_ANNOTATION.to_string(),
            value.to_string(),
        )]
        .into(),
    );
    r
}

/// Stalls a lost start (intent at `intent` seconds) waiting for a person.
fn stalled_at(r: &AmperityWorkflowRun, intent: i64) -> AmperityWorkflowRun {
    let (starting, d) = apply(r, None, at(intent));
    assert!(matches!(d.action, Action::Start(_)), "{:?}", d.action);
    let (lost, _) = apply(
        &starting,
        Some(Answer::Started(Err(failure(FailureKind::Unknown)))),
        at(intent + 1),
    );
    let nothing = || search_with(vec![], Claims::alone(), Some(SignedDuration::ZERO), None);
    let (lost, _) = apply(&lost, Some(nothing()), at(intent + 2));
    let (stalled, d) = apply(&lost, Some(nothing()), at(intent + 70));
    assert_eq!(reason(&d, "Stalled").1, "StartUnconfirmed");
    stalled
}

/// The token in a StartUnconfirmed message's "'retry <token>'".
fn token_in(message: &str) -> String {
    let at = message.find("'retry ").expect(message) + "'retry ".len();
    message[at..].split('\'').next().unwrap().to_string()
}

/// Scenario 8: resolve-start is acted on only when it answers the stall at hand:
/// `retry` repeats the token the stalled status shows; one set in advance (on a
/// new resource, or copied from a template) is never acted on; and a later stall
/// can be answered again.
#[test]
fn scenario_8_resolve_start_answers_only_the_stall_it_was_set_after() {
    // Set in advance, on the new resource: the stall does not act on it.
    for early in ["retry", "retry 0", "retry 1744956000", "retry 00000000"] {
        let r = stalled_at(&annotated(run(json!({})), early), 0);
        let d = decide(&r, None, at(100), Memory::default(), &Settings::default());
        assert_eq!(d.action, Action::AwaitChange, "{early}: {:?}", d.action);
    }
    let r = stalled_at(&run(json!({})), 0);
    let token = token_in(&message(&apply(&r, None, at(80)).1, "Stalled"));
    // A person repeats the token: a new start.
    let (retried, d) = apply(&annotated(r, &format!("retry {token}")), None, at(90));
    assert!(matches!(d.action, Action::Start(_)), "{:?}", d.action);
    // That start is lost too and stalls again: the old answer does nothing more...
    let (lost, _) = apply(
        &retried,
        Some(Answer::Started(Err(failure(FailureKind::Unknown)))),
        at(91),
    );
    let nothing = || search_with(vec![], Claims::alone(), Some(SignedDuration::ZERO), None);
    let (lost, _) = apply(&lost, Some(nothing()), at(92));
    let (again, d) = apply(&lost, Some(nothing()), at(160));
    assert_eq!(reason(&d, "Stalled").1, "StartUnconfirmed");
    assert_eq!(apply(&again, None, at(170)).1.action, Action::AwaitChange);
    // ...and `retry` with the new stall's token is acted on again.
    let new_token = token_in(&message(&d, "Stalled"));
    assert_ne!(new_token, token, "each stall its own token");
    let token = new_token;
    let d = apply(&annotated(again, &format!("retry {token}")), None, at(180)).1;
    assert!(matches!(d.action, Action::Start(_)), "{:?}", d.action);
}

// Scenario 7 (every status write goes over the version it was decided from, so
// that a stale `Pending` cannot erase a newer intent) is shown by the model test
// (tests/run/start_model.rs): its fixed regressions include the stale read that
// found it, and the controller tests show the version on the intent's patch.
