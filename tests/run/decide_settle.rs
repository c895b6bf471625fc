//! Table tests of an end the change feed's list reported: the list's answer
//! settles the outcome at once, the final task summary is read later at routine
//! priority, a read that disagrees is told and counted, and a finished status
//! never moves back.

use std::time::Duration;

use amperity_operator::amperity::wire::{Workflow, WorkflowState};
use amperity_operator::crd::Phase;
use amperity_operator::run::decide::{
    Action, Answer, EventType, FailureKind, Memory, Settings, decide,
};
use serde_json::json;

use super::decide_table::{at, cond, failed, failure, running, step, with_status, workflow};

/// A list item: no task instances; ended at 06:05.
fn listed(id: &str, state: &str) -> Workflow {
    let mut w = workflow(id, state);
    w.task_instances = None;
    w.ended_at = Some("2025-04-18T06:05:00Z".into());
    w
}

/// A verbose read of the same end.
fn read(id: &str, state: &str) -> Workflow {
    let mut w = workflow(id, state);
    w.ended_at = Some("2025-04-18T06:05:00Z".into());
    w
}

fn due() -> Memory {
    Memory {
        summary_due: true,
        ..Memory::default()
    }
}

#[test]
fn the_list_settles_the_outcome_at_once_and_the_summary_read_follows() {
    let r = running(json!({"pollInterval": "10m"}));
    let reported = Memory {
        end_reported: true,
        ..Memory::default()
    };
    let settings = Settings::default();
    for (w, phase, reason) in [
        (listed("wf-1", "succeeded"), Phase::Succeeded, "Succeeded"),
        (listed("wf-1", "canceled"), Phase::Canceled, "Canceled"),
        (
            {
                let mut f = failed("wf-1", "customer");
                f.task_instances = None;
                f
            },
            Phase::Failed,
            "CustomerError",
        ),
    ] {
        let d = decide(
            &r,
            Some(Answer::Listed(w.clone())),
            at(300),
            reported,
            &settings,
        );
        assert_eq!(d.status.phase, Some(phase), "{w:?}");
        assert_eq!(cond(&d, "Succeeded").1, reason);
        let info = d.status.workflow.clone().unwrap();
        assert_eq!(info.ended_at.as_deref(), Some("2025-04-18T06:05:00Z"));
        assert_eq!(d.status.error.is_some(), phase == Phase::Failed);
        // The task summary of the last poll stays until the read.
        assert_eq!(d.status.tasks, r.status.as_ref().unwrap().tasks);
        // The read for the final summary: a routine poll (not a report's).
        assert_eq!(d.action, Action::Poll("wf-1".into()));
        assert!(d.memory.summary_due);
        assert!(!d.memory.end_reported);
        assert!(!d.memory.poll_before_stop);
        // Came back later (the routine turn was far): the read is still due.
        let done = with_status(r.clone(), d.status.clone());
        let later = decide(&done, None, at(400), d.memory, &settings);
        assert_eq!(later.action, Action::Poll("wf-1".into()));
        assert_eq!(later.status, d.status);
    }
}

#[test]
fn an_agreeing_read_fills_the_summary_a_disagreeing_one_is_told_and_nothing_moves_back() {
    let r = running(json!({}));
    let (done, d) = {
        let d = step(
            &r,
            Some(Answer::Listed(listed("wf-1", "succeeded"))),
            at(300),
        );
        (with_status(r.clone(), d.status.clone()), d)
    };
    let settings = Settings::default();
    // Agrees: the verbose answer's task summary is recorded, nothing else moves.
    let mut agreeing = read("wf-1", "succeeded");
    agreeing.task_instances.as_mut().unwrap()[1].state = WorkflowState::Succeeded;
    let a = decide(
        &done,
        Some(Answer::Polled(Ok(agreeing))),
        at(310),
        due(),
        &settings,
    );
    assert_eq!(a.status.phase, Some(Phase::Succeeded));
    let tasks = a.status.tasks.clone().unwrap();
    assert_eq!((tasks.total, tasks.succeeded), (3, 2));
    assert!(!a.memory.summary_due && !a.memory.list_disagreed);
    assert!(a.events.is_empty());
    assert_eq!(a.status.completed_at, d.status.completed_at);
    assert_eq!(a.action, Action::AwaitChange);
    // Disagrees (still running, another end, another outcome): told once, the
    // status keeps the list's outcome.
    for other in [workflow("wf-1", "running"), read("wf-1", "failed"), {
        let mut w = read("wf-1", "succeeded");
        w.ended_at = Some("2025-04-18T06:09:00Z".into());
        w
    }] {
        let x = decide(
            &done,
            Some(Answer::Polled(Ok(other.clone()))),
            at(310),
            due(),
            &settings,
        );
        assert_eq!(x.status, done.status.clone().unwrap(), "{other:?}");
        assert!(x.memory.list_disagreed);
        assert!(!x.memory.summary_due);
        assert_eq!(x.events.len(), 1);
        assert_eq!(x.events[0].type_, EventType::Warning);
        assert_eq!(x.events[0].reason, "ListDisagreed");
        assert!(x.events[0].note.contains("wf-1"), "{}", x.events[0].note);
        assert_eq!(x.action, Action::AwaitChange);
    }
}

#[test]
fn a_due_ttl_deletes_without_waiting_for_the_summary_read() {
    let r = running(json!({"ttlSecondsAfterFinished": 0}));
    let d = step(
        &r,
        Some(Answer::Listed(listed("wf-1", "succeeded"))),
        at(300),
    );
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert_eq!(d.action, Action::Delete);
    // A TTL still to come: the read first, the deletion when it is due.
    let r = running(json!({"ttlSecondsAfterFinished": 600}));
    let d = step(
        &r,
        Some(Answer::Listed(listed("wf-1", "succeeded"))),
        at(300),
    );
    assert_eq!(d.action, Action::Poll("wf-1".into()));
    let done = with_status(r.clone(), d.status.clone());
    let x = decide(
        &done,
        Some(Answer::Polled(Ok(read("wf-1", "succeeded")))),
        at(310),
        due(),
        &Settings::default(),
    );
    assert_eq!(x.action, Action::Requeue(Duration::from_secs(590)));
}

#[test]
fn a_failed_summary_read_is_tried_a_few_times_then_the_outcome_stands() {
    let r = running(json!({}));
    let d = step(
        &r,
        Some(Answer::Listed(listed("wf-1", "succeeded"))),
        at(300),
    );
    let done = with_status(r.clone(), d.status.clone());
    let settings = Settings::default();
    let mut memory = due();
    let mut tries = 0;
    loop {
        let x = decide(
            &done,
            Some(Answer::Polled(Err(failure(FailureKind::Transient)))),
            at(310),
            memory,
            &settings,
        );
        assert_eq!(x.status.phase, Some(Phase::Succeeded));
        tries += 1;
        memory = x.memory;
        if !x.memory.summary_due {
            assert_eq!(x.action, Action::AwaitChange);
            break;
        }
        assert_eq!(x.action, Action::Requeue(Duration::from_secs(5)));
        assert!(tries < 5, "never gave up");
    }
    assert_eq!(tries, 3);
    // A refusal (404, 401) gives up at once; the outcome stands.
    let x = decide(
        &done,
        Some(Answer::Polled(Err(failure(FailureKind::NotFound)))),
        at(310),
        due(),
        &settings,
    );
    assert_eq!(x.status.phase, Some(Phase::Succeeded));
    assert!(!x.memory.summary_due);
}

#[test]
fn a_list_answer_that_cannot_settle_changes_nothing() {
    let r = running(json!({"pollInterval": "10m"}));
    let reported = Memory {
        end_reported: true,
        last_polled: Some(at(290)),
        ..Memory::default()
    };
    let settings = Settings::default();
    for w in [
        // Another run.
        listed("wf-9", "succeeded"),
        // Not ended.
        workflow("wf-1", "running"),
    ] {
        let d = decide(
            &r,
            Some(Answer::Listed(w.clone())),
            at(300),
            reported,
            &settings,
        );
        assert_eq!(d.status, r.status.clone().unwrap(), "{w:?}");
        // As a bare report: an urgent read of its own.
        assert_eq!(d.action, Action::Poll("wf-1".into()));
        assert!(d.memory.end_reported && !d.memory.summary_due);
    }
    // Already finished by its own poll: the list changes nothing.
    let finished = step(
        &r,
        Some(Answer::Polled(Ok(read("wf-1", "failed")))),
        at(300),
    );
    let done = with_status(r.clone(), finished.status.clone());
    let d = step(
        &done,
        Some(Answer::Listed(listed("wf-1", "succeeded"))),
        at(301),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(!matches!(d.action, Action::Poll(_)));
    // A platform failure under spec.retry starts the next attempt, with no read.
    let retrying = running(json!({"retry": {"limit": 1}}));
    let mut w = failed("wf-1", "platform");
    w.task_instances = None;
    let d = step(&retrying, Some(Answer::Listed(w)), at(300));
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert!(!d.memory.summary_due);
}

#[test]
fn the_poll_a_stop_waits_for_is_marked_urgent() {
    let mut r = running(json!({}));
    r.spec.stop = true;
    let d = step(&r, None, at(10));
    assert_eq!(d.action, Action::Poll("wf-1".into()));
    assert!(d.memory.poll_before_stop);
    // A routine poll is not.
    let plain = running(json!({}));
    let d = step(&plain, None, at(100));
    assert_eq!(d.action, Action::Poll("wf-1".into()));
    assert!(!d.memory.poll_before_stop);
    // Its answer clears it.
    let d = decide(
        &r,
        Some(Answer::Polled(Ok(workflow("wf-1", "running")))),
        at(10),
        Memory {
            poll_before_stop: true,
            ..Memory::default()
        },
        &Settings::default(),
    );
    assert_eq!(d.action, Action::Stop("wf-1".into()));
    assert!(!d.memory.poll_before_stop);
}
