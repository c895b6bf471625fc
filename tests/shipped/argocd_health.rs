//! The GitOps and pipeline recipes in examples/gitops/, checked against status objects
//! the decision code really produces, phase by phase:
//! - the Argo CD health checks (argocd-health.lua for runs, argocd-health-schedule.lua
//!   for schedules), each run by Debian's `lua5.1` (the Lua that Argo CD's gopher-lua
//!   implements) and `lua5.4`, and their copies inline in argocd-cm.yaml;
//! - kstatus, as Flux's `wait`/`healthChecks` read it, and the Flux healthCheckExprs;
//! - the Argo Workflows step's successCondition/failureCondition;
//! - the shell of the waiting Job (wait-job.yaml), with a stand-in `kubectl`.
//!
//! The Lua checks need Debian's interpreters, which plain `cargo test` does not
//! assume: they are `#[ignore]`d there and run by `cargo test -- --include-ignored`
//! (scripts/test.sh, after tests/e2e/testenv.sh installed them), failing if missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use amperity_operator::amperity::wire::Workflow;
use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::crd::schedule::AmperityWorkflowSchedule;
use amperity_operator::run::decide::{Answer, Memory, Settings, decide};
use amperity_operator::schedule::decide as schedule_decide;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const SCRIPT: &str = include_str!("../../examples/gitops/argocd-health.lua");
const SCHEDULE_SCRIPT: &str = include_str!("../../examples/gitops/argocd-health-schedule.lua");
pub(crate) const ARGOCD_CM: &str = include_str!("../../examples/gitops/argocd-cm.yaml");
const ARGO_WORKFLOW: &str = include_str!("../../examples/gitops/argo-workflows-step.yaml");
const FLUX: &str = include_str!("../../examples/gitops/flux-kustomization.yaml");
const WAIT_JOB: &str = include_str!("../../examples/gitops/wait-job.yaml");

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

/// What each tool should make of one status.
struct Case {
    name: &'static str,
    object: Value,
    /// Argo CD health status, and a fragment of its message.
    argocd: (&'static str, &'static str),
    /// kstatus (Flux `wait`/`healthChecks`).
    kstatus: &'static str,
    /// Outcome: Some(true) succeeded, Some(false) failed, None still waiting
    /// (the Argo Workflows step and the Flux healthCheckExprs).
    outcome: Option<bool>,
}

fn cases() -> Vec<Case> {
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
    // A Secret that disappears while the run is in flight.
    let secret_gone = step(
        &running,
        Some(Answer::CredentialsUnavailable {
            reason: "SecretNotFound".into(),
            message: "Secret n/amperity-api does not exist".into(),
        }),
        30,
    );
    let mut newer_spec = stop_requested.clone();
    newer_spec.metadata.generation = Some(2);

    // The phases the decision code gave each step, so the table cannot drift unseen.
    let phase = |r: &AmperityWorkflowRun| {
        serde_json::to_value(r).unwrap()["status"]["phase"]
            .as_str()
            .map(String::from)
    };
    assert_eq!(phase(&fresh), None);
    for (r, want) in [
        (&starting, "Starting"),
        (&running, "Running"),
        (&stopping, "Stopping"),
        (&succeeded, "Succeeded"),
        (&failed, "Failed"),
        (&canceled, "Canceled"),
        (&timed_out, "TimedOut"),
        (&no_secret, "Pending"),
        (&secret_gone, "Running"),
    ] {
        assert_eq!(phase(r).as_deref(), Some(want));
    }

    let case = |name, r: &AmperityWorkflowRun, argocd, kstatus, outcome| Case {
        name,
        object: serde_json::to_value(r).unwrap(),
        argocd,
        kstatus,
        outcome,
    };
    vec![
        case(
            "no status yet",
            &fresh,
            ("Progressing", "Waiting for the operator"),
            // kstatus reads a resource without conditions as Current (see flux-kustomization.yaml).
            "Current",
            None,
        ),
        case(
            "starting",
            &starting,
            ("Progressing", "starting cg-1"),
            "InProgress",
            None,
        ),
        case(
            "running",
            &running,
            ("Progressing", "wf-1"),
            "InProgress",
            None,
        ),
        case(
            "stopping",
            &stopping,
            ("Suspended", "stop"),
            "InProgress",
            None,
        ),
        case(
            "succeeded",
            &succeeded,
            ("Healthy", "succeeded"),
            "Current",
            Some(true),
        ),
        case(
            "failed (customer error)",
            &failed,
            ("Degraded", "Found table in an invalid state"),
            "Failed",
            Some(false),
        ),
        case(
            "canceled",
            &canceled,
            ("Degraded", "stopped"),
            "Failed",
            Some(false),
        ),
        case(
            "timed out",
            &timed_out,
            ("Degraded", "timeout"),
            "Failed",
            Some(false),
        ),
        case(
            "stalled before start (missing Secret)",
            &no_secret,
            ("Degraded", "does not exist"),
            "Failed",
            // Still in flight for a phase-based condition: it waits (activeDeadlineSeconds bounds it).
            None,
        ),
        case(
            "stalled in flight (Secret gone)",
            &secret_gone,
            ("Degraded", "does not exist"),
            "Failed",
            None,
        ),
        case(
            "change not yet observed",
            &newer_spec,
            ("Progressing", "latest change"),
            "InProgress",
            None,
        ),
    ]
}

// ---------------------------------------------------------------- Argo CD (Lua)

/// A string as a Lua literal: bytes other than printable ASCII as decimal escapes.
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// A JSON value as a Lua table constructor (null fields are left out, as Argo CD's
/// conversion of the object leaves them nil).
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Argo CD runs health checks in gopher-lua, a Lua 5.1; 5.4 is what people test
/// with by hand. A construct only one of them has must fail here.
const INTERPRETERS: &[&str] = &["lua5.1", "lua5.4"];

/// Runs `script` as Argo CD does, a chunk with a global `obj` that returns a table,
/// under every interpreter; they must agree.
pub(crate) fn health(script: &str, obj: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, \"\\t\", hs.message or \"\")",
        lua(obj)
    );
    let mut answers = INTERPRETERS.iter().map(|lua| {
        let out = Command::new(lua)
            .arg("-e")
            .arg(&program)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "this test runs the Argo CD health checks in examples/gitops/ under Debian's {lua}, which \
                     could not be started ({e}); install it with `apt-get update && apt-get install -y {lua}` \
                     (tests/e2e/testenv.sh install does)"
                )
            });
        assert!(
            out.status.success(),
            "{lua} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (status, message) = text.split_once('\t').expect("status and message");
        (lua, (status.to_string(), message.to_string()))
    });
    let (first, answer) = answers.next().unwrap();
    for (other, theirs) in answers {
        assert_eq!(theirs, answer, "{other} and {first} disagree on {obj}");
    }
    answer
}

#[test]
#[ignore = "needs lua5.1 and lua5.4 (tests/e2e/testenv.sh install); cargo test -- --include-ignored"]
fn both_interpreters_are_the_ones_named() {
    // The check above relies on each name starting the Lua it says.
    for (lua, version) in [("lua5.1", "Lua 5.1"), ("lua5.4", "Lua 5.4")] {
        let out = Command::new(lua)
            .arg("-e")
            .arg("io.write(_VERSION)")
            .output()
            .unwrap_or_else(|e| {
                panic!("{lua} could not be started ({e}): apt-get install -y {lua}")
            });
        assert_eq!(String::from_utf8_lossy(&out.stdout), version);
    }
    // A 5.4-only construct (integer division) fails under 5.1: the double run catches it.
    let out = Command::new("lua5.1")
        .arg("-e")
        .arg("local x = 7 // 2")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
#[ignore = "needs lua5.1 and lua5.4 (tests/e2e/testenv.sh install); cargo test -- --include-ignored"]
fn argo_cd_health_check_maps_every_phase() {
    for c in cases() {
        let (status, says) = c.argocd;
        let (got, message) = health(SCRIPT, &c.object);
        assert_eq!(got, status, "{}: {message}", c.name);
        assert!(
            message.contains(says),
            "{}: {message:?} lacks {says:?}",
            c.name
        );
        // The message is the condition's own message whenever there are conditions.
        if let Some(conditions) = c.object["status"]["conditions"].as_array() {
            let messages: Vec<&str> = conditions
                .iter()
                .filter_map(|x| x["message"].as_str())
                .collect();
            assert!(
                messages.contains(&message.as_str()) || c.name == "change not yet observed",
                "{}: {message:?} is none of the conditions' messages",
                c.name
            );
        }
    }
}

#[test]
#[ignore = "needs lua5.1 and lua5.4 (tests/e2e/testenv.sh install); cargo test -- --include-ignored"]
fn argo_cd_health_check_survives_odd_objects() {
    for (obj, status) in [
        (json!({"status": {}}), "Progressing"),
        (json!({"status": {"phase": "Running"}}), "Progressing"),
        (
            json!({"status": {"phase": "Stopping", "conditions": []}}),
            "Suspended",
        ),
        (json!({"status": {"phase": "Succeeded"}}), "Healthy"),
        (json!({"status": {"phase": "SomethingNew"}}), "Progressing"),
        (
            json!({"status": {"phase": "Pending", "conditions": [{"type": "Stalled", "status": "True", "message": "x \"quoted\" \\ é"}]}}),
            "Degraded",
        ),
    ] {
        assert_eq!(health(SCRIPT, &obj).0, status, "{obj}");
    }
    let (_, message) = health(
        SCRIPT,
        &json!({"status": {"phase": "Pending", "conditions": [{"type": "Stalled", "status": "True", "message": "x \"quoted\" \\ é"}]}}),
    );
    assert_eq!(message, "x \"quoted\" \\ é");
}

#[test]
fn argocd_cm_carries_the_same_script() {
    let cm: Value = serde_norway::from_str(ARGOCD_CM).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let inline = cm["data"]["resource.customizations.health.amperity.dev_AmperityWorkflowRun"]
        .as_str()
        .expect("the health customization key for amperity.dev/AmperityWorkflowRun");
    assert_eq!(
        inline.trim_end(),
        SCRIPT.trim_end(),
        "argocd-cm.yaml must inline examples/gitops/argocd-health.lua unchanged"
    );
    let inline = cm["data"]["resource.customizations.health.amperity.dev_AmperityWorkflowSchedule"]
        .as_str()
        .expect("the health customization key for amperity.dev/AmperityWorkflowSchedule");
    assert_eq!(
        inline.trim_end(),
        SCHEDULE_SCRIPT.trim_end(),
        "argocd-cm.yaml must inline examples/gitops/argocd-health-schedule.lua unchanged"
    );
}

// ---------------------------------------------------------------- Flux (kstatus)

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn is_true(obj: &Value, kind: &str) -> bool {
    condition(obj, kind).is_some_and(|c| c["status"] == "True")
}

/// kstatus' generic rules, which apply to any custom resource (cli-utils
/// pkg/kstatus/status: checkGenericProperties, then "Current" by default).
pub(crate) fn kstatus(obj: &Value) -> &'static str {
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating";
    }
    if let (Some(generation), Some(observed)) = (
        obj["metadata"]["generation"].as_i64(),
        obj["status"]["observedGeneration"].as_i64(),
    ) && generation != observed
    {
        return "InProgress";
    }
    for c in obj["status"]["conditions"].as_array().into_iter().flatten() {
        if c["type"] == "Reconciling" && c["status"] == "True" {
            return "InProgress";
        }
        if c["type"] == "Stalled" && c["status"] == "True" {
            return "Failed";
        }
    }
    "Current"
}

/// The Kustomization's healthCheckExprs for `kind`: current when Ready is True,
/// failed when Stalled is True. No CEL engine here: the expressions are pinned, and
/// their meaning (an existing condition of that type whose status is True) is
/// checked against every status by the callers.
fn flux_expressions_are_ready_and_stalled(docs: &[Value], kind: &str) {
    let exprs = docs
        .iter()
        .find_map(|d| d["spec"]["healthCheckExprs"].as_array())
        .expect("a Kustomization with healthCheckExprs");
    let expr = exprs
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("healthCheckExprs for {kind}"));
    assert_eq!(expr["apiVersion"], "amperity.dev/v1alpha1");
    let cel = |kind: &str| {
        format!(
            "status.?conditions.orValue([]).exists(c, c.type == '{kind}' && c.status == 'True')"
        )
    };
    assert_eq!(expr["current"].as_str(), Some(cel("Ready").as_str()));
    assert_eq!(expr["failed"].as_str(), Some(cel("Stalled").as_str()));
}

#[test]
fn flux_reads_runs_through_kstatus_as_documented() {
    for c in cases() {
        assert_eq!(kstatus(&c.object), c.kstatus, "{}", c.name);
    }
}

#[test]
fn flux_health_check_expressions_wait_for_ready_and_fail_on_stalled() {
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(FLUX)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    flux_expressions_are_ready_and_stalled(&docs, "AmperityWorkflowRun");
    for c in cases() {
        // Flux checks `failed` before `current`; neither means in progress.
        let verdict = if is_true(&c.object, "Stalled") {
            Some(false)
        } else if is_true(&c.object, "Ready") {
            Some(true)
        } else {
            None
        };
        let want = match c.kstatus {
            "Failed" => Some(false),
            // Unlike plain kstatus, a run without conditions is not Current here.
            "Current" if c.outcome.is_none() => None,
            "Current" => Some(true),
            _ => None,
        };
        assert_eq!(verdict, want, "{}", c.name);
    }
}

// ---------------------------------------------------------------- Argo Workflows

/// One requirement of Kubernetes label-selector syntax, as Argo evaluates
/// successCondition/failureCondition: the key is a path into the resource's JSON.
fn requirement_matches(obj: &Value, requirement: &str) -> bool {
    let lookup = |path: &str| {
        let mut v = obj;
        for part in path.split('.') {
            v = &v[part];
        }
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    let r = requirement.trim();
    if let Some((key, set)) = r.split_once(" notin ").or_else(|| r.split_once(" in ")) {
        let set = set
            .trim()
            .strip_prefix('(')
            .unwrap()
            .strip_suffix(')')
            .unwrap();
        let member = set.split(',').any(|v| v.trim() == lookup(key.trim()));
        return member != r.contains(" notin ");
    }
    for (op, equal) in [("!=", false), ("==", true), ("=", true)] {
        if let Some((key, value)) = r.split_once(op) {
            return (lookup(key.trim()) == value.trim()) == equal;
        }
    }
    panic!("unsupported requirement {r:?}")
}

/// Requirements are comma-separated, except inside the parentheses of a set.
fn selector_matches(obj: &Value, selector: &str) -> bool {
    let (mut depth, mut start, mut all) = (0, 0, true);
    for (i, ch) in selector.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                all &= requirement_matches(obj, &selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    all && requirement_matches(obj, &selector[start..])
}

#[test]
fn argo_workflows_step_succeeds_fails_or_waits_as_the_run_does() {
    let wf: Value = serde_norway::from_str(ARGO_WORKFLOW).unwrap();
    let resource = wf["spec"]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|t| t.get("resource"))
        .expect("a resource template");
    let success = resource["successCondition"].as_str().unwrap();
    let failure = resource["failureCondition"].as_str().unwrap();
    assert_eq!(success, "status.phase == Succeeded");
    assert_eq!(failure, "status.phase in (Failed, Canceled, TimedOut)");
    let manifest: Value = serde_norway::from_str(resource["manifest"].as_str().unwrap()).unwrap();
    assert_eq!(manifest["kind"], "AmperityWorkflowRun");
    for c in cases() {
        // Argo checks the failure condition first.
        let verdict = if selector_matches(&c.object, failure) {
            Some(false)
        } else if selector_matches(&c.object, success) {
            Some(true)
        } else {
            None
        };
        assert_eq!(verdict, c.outcome, "{}", c.name);
    }
}

// ---------------------------------------------------------------- the waiting Job

/// A stand-in `kubectl` answering `wait --for=condition=Finished` and the jsonpath
/// queries of wait-job.yaml from one status object.
fn fake_kubectl(dir: &Path, obj: &Value) -> PathBuf {
    let get = |kind: &str, field: &str| {
        condition(obj, kind)
            .and_then(|c| c[field].as_str())
            .unwrap_or("")
            .replace('\'', "")
    };
    let finished = is_true(obj, "Finished");
    let script = format!(
        r#"#!/bin/sh
case "$*" in
  *wait*--for=condition=Finished*) {wait} ;;
  *'.type=="Succeeded")].status'*) printf '%s' '{status}' ;;
  *'.type=="Succeeded")].message'*) printf '%s\n' '{message}' ;;
  *) echo "unexpected kubectl call: $*" >&2; exit 99 ;;
esac
"#,
        wait = if finished {
            "echo condition met"
        } else {
            "echo timed out >&2; exit 1"
        },
        status = get("Succeeded", "status"),
        message = get("Succeeded", "message"),
    );
    let path = dir.join("kubectl");
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path
}

#[test]
fn the_waiting_job_exits_zero_only_on_success() {
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(WAIT_JOB)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
    let [container] = job["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .as_slice()
    else {
        panic!("one container")
    };
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let [shell, "-c", script] = command.as_slice() else {
        panic!("command is [shell, -c, script]: {command:?}")
    };
    assert!(script.contains("--for=condition=Finished"));
    // The Role lets the Job read and watch runs, nothing else.
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("a Role");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["amperity.dev"], "resources": ["amperityworkflowruns"], "verbs": ["get", "list", "watch"]}])
    );
    let dir = std::env::temp_dir().join(format!("awr-wait-job-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for c in cases() {
        fake_kubectl(&dir, &c.object);
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(shell)
            .arg("-c")
            .arg(script)
            .env("PATH", path)
            .output()
            .unwrap();
        let code = out.status.code();
        match c.outcome {
            Some(true) => assert_eq!(code, Some(0), "{}: {out:?}", c.name),
            // Finished but not succeeded, or never finished (the wait times out): non-zero.
            _ => assert_ne!(code, Some(0), "{}: {out:?}", c.name),
        }
        if c.outcome.is_some() {
            let says = c.argocd.1;
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(says),
                "{}: the Job prints the outcome's message: {out:?}",
                c.name
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- schedules

/// A schedule "0 6 * * *" created at 05:30 on 2025-04-18, with `spec` on top.
fn schedule(spec: Value) -> AmperityWorkflowSchedule {
    let mut full = json!({"schedule": "0 6 * * *", "runTemplate": {"spec": {"tenant": "socktown",
        "tokenSecretRef": {"name": "amperity-api"}, "configId": "cg-1"}}});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowSchedule",
        "metadata": {"name": "s", "namespace": "n", "uid": "s-uid", "generation": 1,
                     "creationTimestamp": "2025-04-18T05:30:00Z"},
        "spec": full
    }))
    .unwrap()
}

/// One decision, as the reconciler writes it.
fn planned(
    s: &AmperityWorkflowSchedule,
    runs: &[AmperityWorkflowRun],
    now: &str,
) -> AmperityWorkflowSchedule {
    let plan = schedule_decide(s, runs, now.parse().unwrap());
    let mut next = s.clone();
    next.status = Some(plan.status);
    next
}

/// A finished run of schedule `s`, as the run's own decisions leave it.
fn finished_run_of(s: &AmperityWorkflowSchedule, outcome: &str) -> AmperityWorkflowRun {
    let plan = schedule_decide(s, &[], "2025-04-18T06:00:00Z".parse().unwrap());
    let mut r = plan.create.expect("a run at 06:00").run;
    r.metadata.generation = Some(1);
    let started = step(&r, None, 0);
    let running = step(
        &started,
        Some(Answer::Started(Ok(workflow("scheduled", None)))),
        1,
    );
    let error = json!({"type": "t", "message": "Found table in an invalid state.", "attribution": "customer"});
    let state = (outcome == "failed").then_some(error);
    step(
        &running,
        Some(Answer::Polled(Ok(workflow(outcome, state)))),
        60,
    )
}

struct ScheduleCase {
    name: &'static str,
    object: Value,
    argocd: (&'static str, &'static str),
    kstatus: &'static str,
    /// Flux healthCheckExprs: Some(true) current, Some(false) failed, None waiting.
    flux: Option<bool>,
}

fn schedule_cases() -> Vec<ScheduleCase> {
    let fresh = schedule(json!({}));
    let scheduled = planned(&fresh, &[], "2025-04-18T05:45:00Z");
    let failed_run = finished_run_of(&fresh, "failed");
    let after_failure = planned(&scheduled, &[failed_run], "2025-04-18T07:00:00Z");
    let suspended = planned(
        &schedule(json!({"suspend": true})),
        &[],
        "2025-04-18T05:45:00Z",
    );
    let invalid = planned(
        &schedule(json!({"schedule": "0 0 30 2 *"})),
        &[],
        "2025-04-18T05:45:00Z",
    );
    let refused = {
        let mut plan = schedule_decide(&fresh, &[], "2025-04-18T06:00:00Z".parse().unwrap());
        plan.creation_refused(
            "the API server refused it: spec.tenant: Required value",
            Some(1),
            "2025-04-18T06:00:00Z".parse().unwrap(),
        );
        let mut s = fresh.clone();
        s.status = Some(plan.status);
        s
    };
    // Forbid, and the 06:00 run never started (its Secret is missing): the next
    // day's slot is skipped behind it.
    let blocked = {
        let plan = schedule_decide(&fresh, &[], "2025-04-18T06:00:00Z".parse().unwrap());
        let stuck = plan.create.clone().expect("a run at 06:00").run;
        let mut s = fresh.clone();
        s.status = Some(plan.status);
        planned(&s, &[stuck], "2025-04-19T06:00:10Z")
    };
    let mut edited = scheduled.clone();
    edited.metadata.generation = Some(2);
    let case = |name, s: &AmperityWorkflowSchedule, argocd, kstatus, flux| ScheduleCase {
        name,
        object: serde_json::to_value(s).unwrap(),
        argocd,
        kstatus,
        flux,
    };
    vec![
        case(
            "no status yet",
            &fresh,
            ("Progressing", "Waiting for the operator"),
            "Current",
            None,
        ),
        case(
            "scheduled",
            &scheduled,
            ("Healthy", "next run at 2025-04-18T06:00:00"),
            "Current",
            Some(true),
        ),
        case(
            "the last run failed",
            &after_failure,
            ("Healthy", "ended Failed"),
            "Current",
            Some(true),
        ),
        case(
            "suspended",
            &suspended,
            ("Suspended", "suspended"),
            "Current",
            Some(true),
        ),
        case(
            "invalid spec",
            &invalid,
            ("Degraded", "never matches"),
            "Failed",
            Some(false),
        ),
        case(
            "a run the API server refused",
            &refused,
            ("Degraded", "spec.tenant"),
            "Current",
            None,
        ),
        case(
            "blocked behind a run that never finishes",
            &blocked,
            ("Degraded", "blocked since 2025-04-18T06:00:00Z"),
            "Failed",
            Some(false),
        ),
        case(
            "change not yet observed",
            &edited,
            ("Progressing", "latest change"),
            "InProgress",
            None,
        ),
    ]
}

#[test]
#[ignore = "needs lua5.1 and lua5.4 (tests/e2e/testenv.sh install); cargo test -- --include-ignored"]
fn argo_cd_health_check_reads_schedules() {
    for c in schedule_cases() {
        let (status, says) = c.argocd;
        let (got, message) = health(SCHEDULE_SCRIPT, &c.object);
        assert_eq!(got, status, "{}: {message}", c.name);
        assert!(
            message.contains(says),
            "{}: {message:?} lacks {says:?}",
            c.name
        );
    }
    for (obj, status) in [
        (json!({"status": {}}), "Progressing"),
        (json!({"status": {"conditions": []}}), "Progressing"),
        (
            json!({"spec": {"suspend": true}, "status": {"conditions": [{"type": "Ready", "status": "True", "message": "é \"q\""}]}}),
            "Suspended",
        ),
        (
            json!({"status": {"conditions": [{"type": "Stalled", "status": "True", "message": "x"}]}}),
            "Degraded",
        ),
    ] {
        assert_eq!(health(SCHEDULE_SCRIPT, &obj).0, status, "{obj}");
    }
}

#[test]
fn flux_reads_schedules_through_kstatus_and_the_expressions() {
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(FLUX)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    flux_expressions_are_ready_and_stalled(&docs, "AmperityWorkflowSchedule");
    for c in schedule_cases() {
        assert_eq!(kstatus(&c.object), c.kstatus, "{}", c.name);
        // Flux compares observedGeneration with generation before the expressions.
        let verdict = if c.kstatus == "InProgress" {
            None
        } else if is_true(&c.object, "Stalled") {
            Some(false)
        } else if is_true(&c.object, "Ready") {
            Some(true)
        } else {
            None
        };
        assert_eq!(verdict, c.flux, "{}", c.name);
    }
}
