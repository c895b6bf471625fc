//! How a run ends, seen through the API server, kubectl, Events and metrics:
//! success, a customer failure, a platform failure retried, the documented phases
//! of Amperity's faults, and bad input refused naming the field.

use std::cell::Cell;
use std::time::Duration;

use amperity_operator::crd::AmperityWorkflowRun;

use serde_json::json;

use crate::env::{Env, Result, condition, eventually, phase, wait_events, wait_http};
use crate::scenarios::{EVENTS, FINISH, ensure, finished};

pub async fn a_run_succeeds_and_kubectl_can_wait_on_it(env: &Env) -> Result {
    let ns = env.namespace("succeeds", Some(&env.own_token())).await?;
    env.create_run(
        &ns,
        "nightly",
        json!({"configId": "cg-e2e-ok", "runMode": "source", "range": {"from": "2025-04-18", "to": "2025-04-19"}}),
    )
    .await?;
    let (ok, out) = env
        .kubectl(&[
            "-n",
            &ns,
            "wait",
            "awr/nightly",
            "--for=condition=Finished",
            "--timeout=90s",
        ])
        .await;
    ensure(ok, format!("kubectl wait Finished: {out}"))?;
    let (ok, out) = env
        .kubectl(&[
            "-n",
            &ns,
            "wait",
            "awr/nightly",
            "--for=condition=Succeeded",
            "--timeout=5s",
        ])
        .await;
    ensure(ok, format!("kubectl wait Succeeded: {out}"))?;
    let run = env
        .wait_for(&ns, "nightly", FINISH, "Succeeded", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", format!("phase {}", phase(&run)))?;
    let status = run.status.clone().unwrap();
    let id = status.workflow_id.clone().unwrap_or_default();
    ensure(id.starts_with("wf-"), format!("workflow id {id:?}"))?;
    let tasks = status.tasks.clone().ok_or("no task summary")?;
    ensure(
        tasks.total > 0 && tasks.succeeded == tasks.total,
        format!("tasks {tasks:?}"),
    )?;
    ensure(
        tasks.progress == format!("{0}/{0}", tasks.total),
        format!("progress {}", tasks.progress),
    )?;
    for (kind, want) in [
        ("Succeeded", "True"),
        ("Finished", "True"),
        ("Ready", "True"),
        ("Reconciling", "False"),
        ("Stalled", "False"),
    ] {
        let (got, _, _) = condition(&run, kind).ok_or(format!("no {kind} condition"))?;
        ensure(got == want, format!("{kind} is {got}, want {want}"))?;
    }
    ensure(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1)),
        "conditions carry observedGeneration 1",
    )?;
    ensure(
        env.starts_for("cg-e2e-ok").await >= 1,
        "the simulator saw the start",
    )?;
    let (ok, out) = env.kubectl(&["-n", &ns, "get", "awr"]).await;
    ensure(ok, out.clone())?;
    for header in ["CONFIG", "MODE", "PHASE", "WORKFLOW", "TASKS", "AGE"] {
        ensure(
            out.contains(header),
            format!("kubectl get awr lacks {header}:\n{out}"),
        )?;
    }
    for value in [
        "cg-e2e-ok",
        "source",
        "Succeeded",
        id.as_str(),
        tasks.progress.as_str(),
    ] {
        ensure(
            out.contains(value),
            format!("kubectl get awr lacks {value}:\n{out}"),
        )?;
    }
    let seen = wait_events(env, &ns, &["Started", "Succeeded"], EVENTS).await?;
    ensure(
        seen.get("Started") == Some(&1),
        format!("one Started event, not one per poll: {seen:?}"),
    )
}

pub async fn a_customer_failure_ends_failed_and_stalled(env: &Env) -> Result {
    let ns = env.namespace("customer", Some(&env.own_token())).await?;
    env.create_run(
        &ns,
        "broken",
        json!({"configId": "cg-e2e-failcustomer", "retry": {"limit": 2}}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "broken", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Failed", format!("phase {}", phase(&run)))?;
    let error = run
        .status
        .as_ref()
        .and_then(|s| s.error.clone())
        .ok_or("no error in status")?;
    ensure(
        error.attribution.as_deref() == Some("customer"),
        format!("{error:?}"),
    )?;
    ensure(!error.message.is_empty(), "error message")?;
    let (stalled, reason, _) = condition(&run, "Stalled").unwrap();
    ensure(
        stalled == "True" && reason == "CustomerError",
        format!("Stalled {stalled} {reason}"),
    )?;
    ensure(
        run.status.unwrap().attempts.is_empty(),
        "customer errors never retry",
    )?;
    wait_events(env, &ns, &["Failed"], EVENTS).await.map(|_| ())
}

pub async fn a_platform_failure_retries_and_succeeds(env: &Env) -> Result {
    let ns = env.namespace("platform", Some(&env.own_token())).await?;
    env.create_run(
        &ns,
        "flaky",
        json!({"configId": "cg-e2e-failplatform", "retry": {"limit": 1}}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "flaky", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", format!("phase {}", phase(&run)))?;
    let status = run.status.unwrap();
    ensure(
        status.attempts.len() == 1,
        format!("attempts {:?}", status.attempts),
    )?;
    ensure(
        status.attempts[0]
            .error
            .as_ref()
            .and_then(|e| e.attribution.as_deref())
            == Some("platform"),
        "the first attempt failed for a platform reason",
    )?;
    ensure(
        env.starts_for("cg-e2e-failplatform").await == 2,
        "two starts: the run and its retry",
    )?;
    wait_events(env, &ns, &["Retrying"], EVENTS)
        .await
        .map(|_| ())
}

pub async fn the_api_server_rejects_bad_input_naming_the_field(env: &Env) -> Result {
    let ns = env.namespace("schema", Some(&env.own_token())).await?;
    let cases = [
        ("configId", r#"configId: "nope""#),
        (
            "runMode",
            r#"configId: cg-1
  runMode: weekly"#,
        ),
        (
            "range.from",
            r#"configId: cg-1
  range: {from: "18/04/2025"}"#,
        ),
        (
            "range.from",
            r#"configId: cg-1
  range: {to: "2025-04-19"}"#,
        ),
        (
            "pollInterval",
            r#"configId: cg-1
  pollInterval: soon"#,
        ),
        (
            "retry.limit",
            r#"configId: cg-1
  retry: {limit: 11}"#,
        ),
        ("configId", r#"runMode: full"#),
    ];
    for (field, spec) in cases {
        let manifest = format!(
            "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowRun\nmetadata:\n  name: bad\n  namespace: {ns}\nspec:\n  tenant: socktown\n  tokenSecretRef: {{name: amperity-api}}\n  {spec}\n"
        );
        let path = std::env::temp_dir().join(format!("e2e-bad-{}.yaml", fastrand::u32(..)));
        std::fs::write(&path, manifest).unwrap();
        let (ok, out) = env
            .kubectl(&["apply", "--validate=false", "-f", path.to_str().unwrap()])
            .await;
        let _ = std::fs::remove_file(&path);
        ensure(!ok, format!("{field}: the API server accepted a bad spec"))?;
        let leaf = field.rsplit('.').next().unwrap();
        ensure(
            out.contains(leaf),
            format!("{field}: the error does not name the field: {out}"),
        )?;
    }
    // Rules only CEL can say are ignored by a 1.20 API server: the operator catches them.
    env.create_run(
        &ns,
        "too-fast",
        json!({"configId": "cg-e2e-fast", "pollInterval": "1s"}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "too-fast", FINISH, "finished", finished)
        .await?;
    let (_, reason, message) = condition(&run, "Succeeded").unwrap();
    ensure(
        reason == "InvalidSpec" && message.contains("pollInterval"),
        format!("{reason}: {message}"),
    )?;
    ensure(
        env.starts_for("cg-e2e-fast").await == 0,
        "an invalid spec calls no API",
    )
}

pub async fn metrics_and_readiness_answer(env: &Env) -> Result {
    let base = format!("http://127.0.0.1:{}", env.metrics_port);
    wait_http(&format!("{base}/readyz"), Duration::from_secs(5)).await?;
    wait_http(&format!("{base}/healthz"), Duration::from_secs(5)).await?;
    let scrape = || async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    };
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let before = scrape().await?;
    // The figures move when runs do.
    let ns = env.namespace("metrics", Some(&env.own_token())).await?;
    env.create_run(&ns, "measured", json!({"configId": "og-e2e-metrics"}))
        .await?;
    env.wait_for(&ns, "measured", FINISH, "finished", finished)
        .await?;
    // The metrics are recorded around the status write the wait saw, not before it.
    let (before, scrape, value) = (&before, &scrape, &value);
    eventually(Duration::from_secs(10), || async move {
        let text = scrape().await?;
        // Counters only grow, whatever the scenarios beside this one do.
        for name in [
            "amperity_operator_reconciles_total",
            "amperity_operator_amperity_requests_total{call=\"start\",code=\"201\",tenant=\"socktown\"}",
            "amperity_operator_amperity_request_seconds_count{call=\"get\",tenant=\"socktown\"}",
            "amperity_operator_runs_finished_total{phase=\"Succeeded\",reason=\"Succeeded\"}",
            "amperity_operator_workflow_duration_seconds_count{workflow_type=\"amperity.orchestration.orchestration/run\",outcome=\"Succeeded\"}",
        ] {
            ensure(
                value(&text, name) > value(before, name),
                format!("{name} did not grow:\n{text}"),
            )?;
        }
        // A gauge of the runs there are: another scenario's finished run deleted
        // meanwhile (ttlSecondsAfterFinished) takes one off. This one counts.
        let succeeded = "amperity_operator_runs{phase=\"Succeeded\"}";
        ensure(
            value(&text, succeeded) >= 1.0,
            format!("{succeeded} does not count the run:\n{text}"),
        )?;
        ensure(
            text.lines().any(|l| l == "amperity_operator_leader 1"),
            format!("the leading replica does not say so:\n{text}"),
        )
    })
    .await
}

pub async fn faults_end_in_documented_phases(env: &Env) -> Result {
    let ns = env.namespace("faults", Some(&env.own_token())).await?;
    // An undocumented state keeps the run going, with one Warning event (below).
    // A run that disappears (404) fails with a reason that says so.
    env.create_run(&ns, "gone", json!({"configId": "cg-e2e-vanish"}))
        .await?;
    // A start whose answer is lost (a 500 after the run was created) is found
    // again, not repeated.
    // (An orchestration group: other scenarios running at the same time search for
    // lost campaign starts, and starts of one kind in flight together are, rightly,
    // never told apart.)
    env.create_run(&ns, "garbled", json!({"configId": "og-e2e-lostanswer"}))
        .await?;
    // Deprecation headers become a Warning event (and a metric).
    env.create_run(&ns, "old", json!({"configId": "cg-e2e-deprecated"}))
        .await?;
    // A config the API refuses fails at once with the API's message.
    env.create_run(&ns, "refused", json!({"configId": "cg-e2e-rejected"}))
        .await?;

    let odd = odd_run(env, &ns).await?;
    ensure(phase(&odd) == "Succeeded", format!("odd: {}", phase(&odd)))?;
    let gone = env
        .wait_for(&ns, "gone", FINISH, "finished", finished)
        .await?;
    let (_, reason, _) = condition(&gone, "Succeeded").unwrap();
    ensure(
        phase(&gone) == "Failed" && reason == "WorkflowNotFound",
        format!("gone: {} {reason}", phase(&gone)),
    )?;
    let refused = env
        .wait_for(&ns, "refused", FINISH, "finished", finished)
        .await?;
    let (_, reason, message) = condition(&refused, "Succeeded").unwrap();
    ensure(
        reason == "StartRejected" && message.contains("does not exist"),
        format!("refused: {reason}: {message}"),
    )?;
    let old = env
        .wait_for(&ns, "old", FINISH, "finished", finished)
        .await?;
    ensure(phase(&old) == "Succeeded", format!("old: {}", phase(&old)))?;
    let seen = wait_events(env, &ns, &["UnknownState", "ApiDeprecated"], EVENTS).await?;
    ensure(
        seen.get("UnknownState") == Some(&1),
        format!("one UnknownState warning: {seen:?}"),
    )?;
    ensure(
        seen.get("ApiDeprecated") == Some(&1),
        format!("one ApiDeprecated warning: {seen:?}"),
    )?;
    let metrics = format!("http://127.0.0.1:{}/metrics", env.metrics_port);
    eventually(Duration::from_secs(10), || async {
        let text = reqwest::get(&metrics)
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        ensure(
            text.contains(
                "amperity_operator_amperity_deprecation_notices_total{api_version=\"2024-04-01\"}",
            ),
            "deprecation metric",
        )
    })
    .await?;
    // The lost start: the run was found and followed.
    let garbled = env
        .wait_for(&ns, "garbled", FINISH, "settled", |r| {
            finished(r) || condition(r, "Stalled").is_some_and(|c| c.1 == "StartUnconfirmed")
        })
        .await?;
    ensure(
        env.starts_for("og-e2e-lostanswer").await == 1,
        "the lost start was not repeated",
    )?;
    let status = garbled.status.unwrap();
    ensure(
        status.workflow_id.is_some() || condition_reason(&status) == Some("StartUnconfirmed"),
        "the run was adopted or a person was asked",
    )
}

/// A run whose Amperity run reports an undocumented state ("Warming up") for its
/// first six seconds, finished, once the operator has seen that state (its status
/// shows it, for a poll interval at least). The operator's first poll comes five
/// seconds after the start: delayed past the sixth (the simulator's rate budget is
/// shared by every scenario running), it sees only documented states and proves
/// nothing, and another run is tried.
async fn odd_run(env: &Env, ns: &str) -> Result<AmperityWorkflowRun> {
    for attempt in 1..=3 {
        let name = format!("odd-{attempt}");
        env.create_run(ns, &name, json!({"configId": "cg-e2e-unknownstate-slow"}))
            .await?;
        let seen = Cell::new(false);
        let run = env
            .wait_for(ns, &name, FINISH, "finished", |r| {
                let state = r
                    .status
                    .as_ref()
                    .and_then(|s| s.workflow.as_ref()?.state.clone());
                if state.as_deref() == Some("Warming up") {
                    seen.set(true);
                }
                finished(r)
            })
            .await?;
        if seen.get() {
            return Ok(run);
        }
    }
    Err("the operator never polled a run while it reported an undocumented state (3 runs)".into())
}

fn condition_reason(status: &amperity_operator::crd::AmperityWorkflowRunStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True")
        .map(|c| c.reason.as_str())
}
