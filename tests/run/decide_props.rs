//! Property tests of the pure decisions with hostile inputs: any spec a lenient API
//! server lets through, any status (a status can be edited by hand), any answer
//! Amperity could give (absurd states, 3 MB messages, hundreds of tasks), any
//! clock, any memory. `decide` must never panic, and what it writes must stay
//! small whatever it was fed.

use std::time::Duration;

use amperity_operator::amperity::Principal;
use amperity_operator::amperity::wire::Workflow;
use amperity_operator::crd::{
    AmperityWorkflowRun, AmperityWorkflowRunStatus, Attempt, Phase, StopReason,
};
use amperity_operator::run::decide::{
    Answer, ApiFailure, Claims, FailureKind, Memory, Search, Settings, decide,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use serde_json::json;

fn timestamp() -> BoxedStrategy<Timestamp> {
    prop_oneof![
        // Anywhere in jiff's range: year -9999 to 9999.
        (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
            .prop_map(|s| Timestamp::from_second(s).unwrap()),
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        // Near now, where real runs live.
        (1_700_000_000i64..1_900_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
    .boxed()
}

fn duration() -> BoxedStrategy<Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0u64..u64::MAX).prop_map(Duration::from_secs),
        (0u64..100_000).prop_map(Duration::from_millis),
    ]
    .boxed()
}

fn duration_text() -> BoxedStrategy<Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("5s".to_string())),
        Just(Some("720h".to_string())),
        Just(Some("0.000000001s".to_string())),
        Just(Some(format!("{}h", "9".repeat(30)))),
        "[0-9]{1,25}(ms|s|m|h)".prop_map(Some),
        ".{0,40}".prop_map(Some),
    ]
    .boxed()
}

/// Text of any size up to 3 MB, with multi-byte characters (mostly short).
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        8 => ".{0,60}",
        2 => (0usize..3_000_000).prop_map(|n| "ü".repeat(n / 2)),
    ]
    .boxed()
}

/// Text that is repeated many times over (task labels): up to a few KiB.
fn short_text() -> BoxedStrategy<String> {
    prop_oneof![".{0,60}", (0usize..5_000).prop_map(|n| "ü".repeat(n / 2))].boxed()
}

fn phase() -> BoxedStrategy<Option<Phase>> {
    prop_oneof![
        Just(None),
        Just(Some(Phase::Pending)),
        Just(Some(Phase::Starting)),
        Just(Some(Phase::Running)),
        Just(Some(Phase::Stopping)),
        Just(Some(Phase::Succeeded)),
        Just(Some(Phase::Failed)),
        Just(Some(Phase::Canceled)),
        Just(Some(Phase::TimedOut)),
    ]
    .boxed()
}

fn workflow() -> BoxedStrategy<Workflow> {
    (
        prop_oneof![
            Just("running".to_string()),
            Just("succeeded".to_string()),
            Just("failed".to_string()),
            Just("canceled".to_string()),
            Just("stopping".to_string()),
            text()
        ],
        proptest::option::of(prop_oneof![timestamp().prop_map(|t| t.to_string()), ".{0,30}"]),
        proptest::option::of((text(), prop_oneof![Just("platform"), Just("customer"), Just("?")])),
        0usize..600,
        short_text(),
        proptest::option::of(timestamp().prop_map(|t| t.to_string())),
    )
        .prop_map(|(state, ended_at, error, tasks, label, created_at)| {
            let tasks: Vec<_> = (0..tasks)
                .map(|i| {
                    json!({"id": format!("wft-{i}"), "state": if i % 3 == 0 { "failed" } else { "running" },
                           "tenant": "t", "label": label, "error": {"type": "x", "message": label}})
                })
                .collect();
            let mut w = json!({"id": "wf-1", "state": state, "type": "courier.group/run",
                               "name": label.clone(), "tenant": "t", "principal_id": "p",
                               "task_instances": tasks});
            if let Some(e) = ended_at {
                w["ended_at"] = json!(e);
            }
            if let Some(c) = created_at {
                w["created_at"] = json!(c);
            }
            if let Some((message, attribution)) = error {
                w["error"] = json!({"type": "t", "message": message, "attribution": attribution});
            }
            serde_json::from_value(w).unwrap()
        })
    .boxed()
}

fn failure() -> BoxedStrategy<ApiFailure> {
    (
        prop_oneof![
            Just(FailureKind::Auth),
            Just(FailureKind::NotFound),
            Just(FailureKind::Rejected),
            Just(FailureKind::Transient),
            Just(FailureKind::Unknown),
            Just(FailureKind::NotAllowed),
        ],
        text(),
        proptest::option::of(duration()),
        any::<bool>(),
    )
        .prop_map(|(kind, message, retry_after, throttled)| ApiFailure {
            kind,
            message,
            retry_after,
            throttled,
        })
        .boxed()
}

fn answer() -> BoxedStrategy<Option<Answer>> {
    let result = || prop_oneof![workflow().prop_map(Ok), failure().prop_map(Err)];
    prop_oneof![
        Just(None),
        result().prop_map(|r| Some(Answer::Started(r))),
        result().prop_map(|r| Some(Answer::Polled(r))),
        workflow().prop_map(|w| Some(Answer::Listed(w))),
        result().prop_map(|r| Some(Answer::StopSent(r))),
        duration().prop_map(|d| Some(Answer::Later(d))),
        text().prop_map(|m| Some(Answer::CredentialsUnavailable {
            reason: "SecretNotFound".into(),
            message: m
        })),
        text().prop_map(|m| Some(Answer::EndpointNotAllowed { message: m })),
        (
            proptest::collection::vec(workflow(), 0..4),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(runs, known, busy)| Some(Answer::Searched(Search {
                result: Ok(runs),
                principal: known.then(|| Principal::given("p")),
                claims: Claims {
                    other_starts: if busy { vec![Timestamp::now()] } else { vec![] },
                    ..Claims::alone()
                },
                clock_offset: None,
                config_name: None,
            }))),
    ]
    .boxed()
}

prop_compose! {
    fn resource()(
        phase in phase(),
        times in proptest::collection::vec(proptest::option::of(timestamp()), 6),
        timeout in duration_text(),
        poll in duration_text(),
        ttl in proptest::option::of(any::<i64>()),
        stop in any::<bool>(),
        retry in 0u32..12,
        attempts in 0usize..12,
        stop_reason in proptest::option::of(prop_oneof![Just(StopReason::Requested), Just(StopReason::Timeout), Just(StopReason::Deletion)]),
        deleted in proptest::option::of(timestamp()),
        id in proptest::option::of(".{1,40}"),
        generation in proptest::option::of(any::<i64>()),
    ) -> AmperityWorkflowRun {
        let mut spec = json!({"tenant": "socktown", "tokenSecretRef": {"name": "s"}, "configId": "cg-1",
                              "stop": stop, "retry": {"limit": retry}});
        if let Some(t) = timeout { spec["timeout"] = json!(t); }
        if let Some(p) = poll { spec["pollInterval"] = json!(p); }
        if let Some(t) = ttl { spec["ttlSecondsAfterFinished"] = json!(t); }
        let mut run: AmperityWorkflowRun = serde_json::from_value(json!({
            "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
            "metadata": {"name": "r", "namespace": "n", "uid": "u"}, "spec": spec
        })).unwrap();
        run.metadata.generation = generation;
        run.metadata.deletion_timestamp = deleted.map(Time);
        let t = |i: usize| times[i].map(Time);
        run.status = Some(AmperityWorkflowRunStatus {
            phase,
            workflow_id: id,
            started_at: t(0),
            completed_at: t(1),
            search_started_at: t(2),
            stop_requested_at: t(3),
            stop_reason,
            attempts: (0..attempts).map(|i| Attempt {
                workflow_id: format!("wf-a{i}"),
                started_at: t(4),
                completed_at: t(5),
                ..Attempt::default()
            }).collect(),
            ..AmperityWorkflowRunStatus::default()
        });
        run
    }
}

prop_compose! {
    fn memory()(
        polled in proptest::option::of(timestamp()),
        next_stop in proptest::option::of(timestamp()),
        failures in any::<u32>(),
        stops in any::<u32>(),
        throttled in any::<bool>(),
        end_reported in any::<bool>(),
        summary_due in any::<bool>(),
        poll_before_stop in any::<bool>(),
        // Amperity's Date header is untrusted: any offset at all.
        clock in proptest::option::of(any::<i64>()),
    ) -> Memory {
        let amperity_clock = clock.map(jiff::SignedDuration::from_secs);
        Memory { last_polled: polled, next_stop_at: next_stop, poll_failures: failures, stop_failures: stops, throttled, end_reported, summary_due, poll_before_stop, amperity_clock, ..Memory::default() }
    }
}

fn settings() -> BoxedStrategy<Settings> {
    (duration(), duration(), duration(), duration(), duration())
        .prop_map(|(a, b, c, d, e)| Settings {
            start_search_skew: a,
            retry_backoff: b,
            deletion_grace: c,
            start_settle: d,
            stop_grace: e,
            ..Settings::default()
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn decide_never_panics_and_its_status_stays_small(
        run in resource(),
        answer in answer(),
        now in timestamp(),
        memory in memory(),
        settings in settings(),
    ) {
        let read = matches!(answer, Some(Answer::Polled(_) | Answer::Listed(_)));
        let d = decide(&run, answer, now, memory, &settings);
        // A finished status never moves back: no read or list changes its phase.
        let phase = run.status.as_ref().and_then(|s| s.phase);
        if read && phase.is_some_and(|p| p.is_finished()) {
            prop_assert_eq!(d.status.phase, phase);
        }
        for c in &d.status.conditions {
            prop_assert!(c.message.len() <= 1024, "condition message of {} bytes", c.message.len());
        }
        for e in &d.events {
            prop_assert!(e.note.len() <= 1024, "event note of {} bytes", e.note.len());
        }
        // A report from the change feed only makes a poll come sooner: it never
        // changes what is written, nor what is told.
        let mut told = memory;
        told.end_reported = !memory.end_reported;
        let other = decide(&run, None, now, told, &settings);
        let plain = decide(&run, None, now, memory, &settings);
        prop_assert_eq!(&other.status, &plain.status);
        prop_assert_eq!(&other.events, &plain.events);
        // The whole status, as written: far under etcd's limits.
        let written = serde_json::to_string(&d.status).map(|s| s.len()).unwrap_or(0);
        prop_assert!(written < 64 * 1024, "status of {written} bytes");
    }
}
