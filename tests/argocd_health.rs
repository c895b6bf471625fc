//! The Argo CD health check (examples/gitops/argocd-health.lua), run by Debian's
//! lua5.4 against status objects the decision code really produces, phase by phase.

use std::process::Command;

use amperity_operator::amperity::wire::Workflow;
use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::decide::{Answer, Memory, Settings, decide};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const SCRIPT: &str = include_str!("../examples/gitops/argocd-health.lua");

fn at(secs: i64) -> Timestamp {
    "2025-04-18T06:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_secs(secs)
}

fn run(spec: Value) -> AmperityWorkflowRun {
    let mut full = json!({"tenant": "socktown", "tokenSecretRef": {"name": "amperity-api"}, "configId": "cg-1"});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": "r", "namespace": "n", "generation": 1}, "spec": full
    }))
    .unwrap()
}

/// Applies one decision, as the controller persists it.
fn step(r: &AmperityWorkflowRun, answer: Option<Answer>, secs: i64) -> AmperityWorkflowRun {
    let d = decide(r, answer, at(secs), Memory::default(), &Settings::default());
    let mut next = r.clone();
    next.status = Some(d.status);
    next
}

fn workflow(state: &str, error: Option<Value>) -> Workflow {
    let mut w = json!({"id": "wf-1", "state": state, "type": "courier.group/run", "name": "n", "tenant": "t"});
    if let Some(e) = error {
        w["error"] = e;
        w["ended_at"] = json!("2025-04-18T06:10:00Z");
    }
    serde_json::from_value(w).unwrap()
}

/// A JSON value as a Lua table constructor (null fields are left out).
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn health(r: &AmperityWorkflowRun) -> (String, String) {
    let obj = serde_json::to_value(r).unwrap();
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{SCRIPT}\nend)()\nio.write(hs.status, \"\\t\", hs.message or \"\")",
        lua(&obj)
    );
    let out = Command::new("lua5.4").arg("-e").arg(&program).output().unwrap_or_else(|e| {
        panic!("lua5.4 is needed for this test ({e}): apt-get install lua5.4 (tests/e2e/testenv.sh install does it)")
    });
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\t').expect("status and message");
    (status.to_string(), message.to_string())
}

#[test]
fn every_phase_maps_to_the_argo_cd_health_users_expect() {
    let fresh = run(json!({}));
    let starting = step(&fresh, None, 0);
    let running = step(
        &starting,
        Some(Answer::Started(Ok(workflow("scheduled", None)))),
        1,
    );
    let mut stop_requested = running.clone();
    stop_requested.spec.stop = true;
    let stopping = step(
        &stop_requested,
        Some(Answer::StopSent(Ok(workflow("stopping", None)))),
        5,
    );
    let canceled = step(
        &stopping,
        Some(Answer::Polled(Ok(workflow("canceled", None)))),
        9,
    );
    let succeeded = step(
        &running,
        Some(Answer::Polled(Ok(workflow("succeeded", None)))),
        60,
    );
    let customer = json!({"type": "t", "message": "Found table in an invalid state.", "attribution": "customer"});
    let failed = step(
        &running,
        Some(Answer::Polled(Ok(workflow("failed", Some(customer))))),
        60,
    );
    let timed = run(json!({"timeout": "1m"}));
    let timed = step(
        &step(&timed, None, 0),
        Some(Answer::Started(Ok(workflow("scheduled", None)))),
        1,
    );
    let timed = step(
        &timed,
        Some(Answer::StopSent(Ok(workflow("stopping", None)))),
        61,
    );
    let timed_out = step(
        &timed,
        Some(Answer::Polled(Ok(workflow("canceled", None)))),
        65,
    );
    let no_secret = step(
        &fresh,
        Some(Answer::CredentialsUnavailable {
            reason: "SecretNotFound".into(),
            message: "Secret n/amperity-api does not exist".into(),
        }),
        0,
    );
    let mut newer_spec = running.clone();
    newer_spec.metadata.generation = Some(2);

    let cases = [
        (
            "no status yet",
            &fresh,
            "Progressing",
            "Waiting for the operator",
        ),
        ("starting", &starting, "Progressing", "starting cg-1"),
        ("running", &running, "Progressing", "wf-1"),
        ("stopping", &stopping, "Suspended", "stop"),
        ("succeeded", &succeeded, "Healthy", "succeeded"),
        (
            "failed",
            &failed,
            "Degraded",
            "Found table in an invalid state",
        ),
        ("canceled", &canceled, "Degraded", "stopped"),
        ("timed out", &timed_out, "Degraded", "timeout"),
        ("missing secret", &no_secret, "Degraded", "does not exist"),
        (
            "unobserved change",
            &newer_spec,
            "Progressing",
            "latest change",
        ),
    ];
    for (case, resource, status, says) in cases {
        let (got, message) = health(resource);
        assert_eq!(got, status, "{case}: {message}");
        assert!(message.contains(says), "{case}: {message:?} lacks {says:?}");
    }
}
