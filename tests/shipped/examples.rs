//! Every manifest in examples/ runs to its documented end with
//! `amperity-operator local --simulator`, through the real binary.

use std::process::Command;

use serde_json::Value;

struct Outcome {
    code: i32,
    last_status: Value,
    stderr: String,
}

fn run_local(example: &str, extra: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_amperity-operator"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "local",
            "-f",
            example,
            "--simulator",
            "--simulator-speed",
            "20",
            "--output",
            "json",
        ])
        .args(extra)
        .env_remove("AMPERITY_TOKEN")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("null");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        last_status: serde_json::from_str(last).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[test]
fn the_succeeding_examples_succeed() {
    for example in [
        "examples/courier-group.yaml",
        "examples/orchestration-group.yaml",
        "examples/campaign.yaml",
        // A run and the connection it names, in one file.
        "examples/connection-run.yaml",
    ] {
        let o = run_local(example, &[]);
        assert_eq!(o.code, 0, "{example} exited {}: {}", o.code, o.stderr);
        let s = &o.last_status;
        assert_eq!(s["phase"], "Succeeded", "{example}: {s}");
        assert!(
            s["workflowId"]
                .as_str()
                .unwrap_or_default()
                .starts_with("wf-"),
            "{example}: {s}"
        );
        let tasks = &s["tasks"];
        assert!(tasks["total"].as_u64().unwrap_or(0) > 0, "{example}: {s}");
        assert_eq!(tasks["succeeded"], tasks["total"], "{example}: {s}");
        assert_eq!(condition(s, "Succeeded")["status"], "True");
        assert_eq!(condition(s, "Finished")["status"], "True");
    }
}

#[test]
fn the_failing_example_fails_with_exit_code_1() {
    let o = run_local("examples/failing-courier-group.yaml", &[]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let s = &o.last_status;
    assert_eq!(s["phase"], "Failed");
    assert_eq!(s["error"]["attribution"], "customer");
    assert_eq!(condition(s, "Succeeded")["reason"], "CustomerError");
    assert!(o.stderr.contains("Failed"), "{}", o.stderr);
}

#[test]
fn an_invalid_manifest_lists_every_problem_with_exit_code_3() {
    let dir = std::env::temp_dir().join(format!("awr-invalid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowRun\nmetadata: {name: bad}\nspec:\n  tenant: socktown\n  tokenSecretRef: {name: s}\n  configId: nope\n  runMode: weekly\n  range: {to: \"2025-04-19\"}\n  pollInterval: 1s\n",
    )
    .unwrap();
    let o = run_local(path.to_str().unwrap(), &[]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    for field in [
        "spec.configId",
        "spec.runMode",
        "spec.range.from",
        "spec.pollInterval",
    ] {
        assert!(
            o.stderr.contains(field),
            "{field} not reported: {}",
            o.stderr
        );
    }
}

#[test]
fn no_token_without_the_simulator_exits_4() {
    let out = Command::new(env!("CARGO_BIN_EXE_amperity-operator"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["local", "-f", "examples/courier-group.yaml"])
        .env_remove("AMPERITY_TOKEN")
        .env_remove("AMPERITY_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AMPERITY_TOKEN"));
}

#[test]
fn text_output_prints_timestamped_lines_and_the_final_status() {
    let out = Command::new(env!("CARGO_BIN_EXE_amperity-operator"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "local",
            "-f",
            "examples/campaign.yaml",
            "--simulator",
            "--simulator-speed",
            "20",
            "--output",
            "text",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<&str> = stderr.lines().filter(|l| l.contains("Running")).collect();
    assert!(!progress.is_empty(), "{stderr}");
    assert!(
        progress
            .iter()
            .all(|l| l.starts_with("20") && l.contains('T')),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let status: Value = serde_norway::from_str(&stdout).expect("the final status is YAML");
    assert_eq!(status["phase"], "Succeeded");
}

#[test]
fn ctrl_c_stops_the_amperity_run_before_exiting() {
    let dir = std::env::temp_dir().join(format!("awr-ctrlc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hang.yaml");
    std::fs::write(
        &path,
        "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowRun\nmetadata: {name: forever}\nspec:\n  tenant: socktown\n  tokenSecretRef: {name: s}\n  configId: cg-forever-hang\n  pollInterval: 5s\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_amperity-operator"))
        .args([
            "local",
            "-f",
            path.to_str().unwrap(),
            "--simulator",
            "--simulator-speed",
            "20",
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("interrupted: stopping the Amperity run"),
        "{stderr}"
    );
    assert!(stderr.contains("Stopping"), "the stop was sent: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: Value =
        serde_json::from_str(stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap()).unwrap();
    assert_eq!(last["phase"], "Canceled", "{last}");
    assert_eq!(last["workflow"]["state"], "canceled");
}

#[test]
fn an_endpoint_off_the_allow_list_ends_local_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("amperity-allow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("run.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowRun\nmetadata: {name: elsewhere}\nspec:\n  \
         tenant: socktown\n  endpoint: https://collector.evil.test/api\n  tokenSecretRef: {name: s}\n  configId: cg-1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amperity-operator"))
        .args(["local", "-f"])
        .arg(&manifest)
        .args(["--output", "text"])
        .env("AMPERITY_TOKEN", "a-real-token")
        .env_remove("AMPERITY_ALLOWED_ENDPOINTS")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("EndpointNotAllowed"), "{text}");
    assert!(
        text.contains("https://collector.evil.test/api") && text.contains("--allowed-endpoints"),
        "{text}"
    );
    assert!(!text.contains("a-real-token"), "{text}");
}

#[test]
fn the_schedule_example_runs_its_template_once_now_and_says_so() {
    let o = run_local("examples/schedule.yaml", &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "AmperityWorkflowSchedule nightly-ingest: running its runTemplate once, now, as run nightly-ingest-now-1"
        ),
        "{}",
        o.stderr
    );
    let s = &o.last_status;
    assert_eq!(s["phase"], "Succeeded", "{s}");
    // The template's configId, started once.
    assert_eq!(
        o.stderr.matches("event: Started:").count(),
        1,
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("cg-123ABc4DE"), "{}", o.stderr);
}

fn write_manifest(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("awr-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_manifest_of_another_kind_names_the_kinds_local_accepts() {
    let path = write_manifest(
        "configmap.yaml",
        "apiVersion: amperity.dev/v1alpha1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
    );
    let o = run_local(path.to_str().unwrap(), &[]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        o.stderr.contains("\"ConfigMap\" is not a kind local runs"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("AmperityWorkflowRun") && o.stderr.contains("AmperityWorkflowSchedule"),
        "{}",
        o.stderr
    );
    // Only the kind: no run rules applied to a file that is not a run.
    assert!(!o.stderr.contains("spec.tenant"), "{}", o.stderr);
}

#[test]
fn an_invalid_schedule_lists_its_problems_and_runs_nothing() {
    let path = write_manifest(
        "schedule.yaml",
        "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowSchedule\nmetadata: {name: s}\nspec:\n  \
         schedule: \"61 * * * *\"\n  runTemplate:\n    metadata: {annotations: {amperity.dev/retry: \"x\"}}\n    \
         spec: {tenant: socktown, tokenSecretRef: {name: s}, configId: nope}\n",
    );
    let o = run_local(path.to_str().unwrap(), &[]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    for field in [
        "spec.schedule",
        "spec.runTemplate.spec.configId",
        "spec.runTemplate.metadata.annotations",
    ] {
        assert!(
            o.stderr.contains(field),
            "{field} not reported: {}",
            o.stderr
        );
    }
    assert!(!o.stderr.contains("Started"), "{}", o.stderr);
}
