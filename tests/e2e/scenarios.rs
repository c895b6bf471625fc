//! The scenarios, each in its own namespace, each checked through the Kubernetes
//! API, kubectl and the simulator's counters.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::env::{self, Env, Result, condition, events, free_port, phase, wait_http};
use crate::explain::kubectl_explain_describes_every_field;
use crate::feed::the_change_feed_wakes_ended_runs_and_a_lying_list_changes_nothing;
use crate::one_run::{
    a_search_skips_other_resources_runs_and_waits_out_a_lagging_list,
    killing_the_leader_inside_its_starts_never_starts_twice,
};
use crate::roles::users_bound_to_edit_create_and_delete_runs_and_cannot_read_the_lease;
use crate::schedule_guards::{
    schedule_guards_a_run_without_its_secret_blocks_and_is_not_started_late,
    schedule_guards_run_now_fires_once_per_value_across_a_revert_and_a_recreate,
};
use crate::schedules::{
    schedules_run_now_replace_and_refuse_bad_input,
    schedules_run_once_a_minute_across_a_sigkill_and_two_replicas,
};
use crate::trust::{
    an_endpoint_off_the_allow_list_gets_nothing,
    hostile_specs_are_refused_or_handled_and_the_operator_lives,
    megabyte_messages_stay_out_of_status_and_events,
};
use crate::{Scenario, Shared};

pub const FINISH: Duration = Duration::from_secs(90);

macro_rules! scenarios {
    (shared: [$($shared:ident),* $(,)?], exclusive: [$($exclusive:ident),* $(,)?] $(,)?) => {
        /// Scenarios that leave the operator alone: they run at the same time, each in
        /// its own namespace.
        pub const SHARED: &[(&str, Shared)] = &[$((stringify!($shared), |e| Box::pin($shared(e)))),*];
        /// Scenarios that kill, replace or starve the operator: one at a time, after.
        pub const EXCLUSIVE: &[(&str, Scenario)] = &[$((stringify!($exclusive), |e| Box::pin($exclusive(e)))),*];
    };
}

scenarios!(
    shared: [
        a_run_succeeds_and_kubectl_can_wait_on_it,
        a_customer_failure_ends_failed_and_stalled,
        a_platform_failure_retries_and_succeeds,
        the_api_server_rejects_bad_input_naming_the_field,
        a_missing_secret_stalls_until_it_exists,
        a_rotated_token_is_used_without_a_restart,
        stop_cancels_the_run,
        timeout_stops_the_run,
        deleting_an_unfinished_run_stops_it,
        ttl_removes_finished_runs,
        metrics_and_readiness_answer,
        faults_end_in_documented_phases,
        oauth_client_credentials_from_the_secret,
        an_endpoint_off_the_allow_list_gets_nothing,
        hostile_specs_are_refused_or_handled_and_the_operator_lives,
        megabyte_messages_stay_out_of_status_and_events,
        a_search_skips_other_resources_runs_and_waits_out_a_lagging_list,
        kubectl_explain_describes_every_field,
        users_bound_to_edit_create_and_delete_runs_and_cannot_read_the_lease,
        schedule_guards_a_run_without_its_secret_blocks_and_is_not_started_late,
        schedule_guards_run_now_fires_once_per_value_across_a_revert_and_a_recreate,
    ],
    exclusive: [
        killing_the_leader_inside_its_starts_never_starts_twice,
        the_charts_rbac_is_enough_and_every_rule_is_needed,
        only_the_leader_reconciles_and_a_follower_takes_over,
        a_leader_that_loses_its_lease_stops_reconciling,
        schedules_run_now_replace_and_refuse_bad_input,
        schedules_run_once_a_minute_across_a_sigkill_and_two_replicas,
        the_change_feed_wakes_ended_runs_and_a_lying_list_changes_nothing,
    ],
);

/// Scenarios that wait for real minutes to pass get longer than the usual 180 s.
pub fn time_limit(name: &str) -> Duration {
    if name == "schedules_run_once_a_minute_across_a_sigkill_and_two_replicas"
        || name == "schedule_guards_a_run_without_its_secret_blocks_and_is_not_started_late"
    {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(180)
    }
}

pub fn ensure(ok: bool, what: impl Into<String>) -> Result {
    if ok { Ok(()) } else { Err(what.into()) }
}

pub fn finished(r: &amperity_operator::crd::AmperityWorkflowRun) -> bool {
    r.phase().is_some_and(|p| p.is_finished())
}

async fn a_run_succeeds_and_kubectl_can_wait_on_it(env: &Env) -> Result {
    let ns = env.namespace("succeeds", Some(env::TOKEN)).await?;
    env.create_run(
        &ns,
        "nightly",
        json!({"configId": "cg-e2e-ok", "runMode": "source", "range": {"from": "2025-04-18", "to": "2025-04-19"}}),
    )
    .await?;
    let (ok, out) = env.kubectl(&[
        "-n",
        &ns,
        "wait",
        "awr/nightly",
        "--for=condition=Finished",
        "--timeout=90s",
    ]);
    ensure(ok, format!("kubectl wait Finished: {out}"))?;
    let (ok, out) = env.kubectl(&[
        "-n",
        &ns,
        "wait",
        "awr/nightly",
        "--for=condition=Succeeded",
        "--timeout=5s",
    ]);
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
    let (ok, out) = env.kubectl(&["-n", &ns, "get", "awr"]);
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
    let seen = events(env, &ns);
    for reason in ["Started", "Succeeded"] {
        ensure(
            seen.contains_key(reason),
            format!("no {reason} event: {seen:?}"),
        )?;
    }
    ensure(
        seen.get("Started") == Some(&1),
        format!("one Started event, not one per poll: {seen:?}"),
    )
}

async fn a_customer_failure_ends_failed_and_stalled(env: &Env) -> Result {
    let ns = env.namespace("customer", Some(env::TOKEN)).await?;
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
    ensure(events(env, &ns).contains_key("Failed"), "a Failed event")
}

async fn a_platform_failure_retries_and_succeeds(env: &Env) -> Result {
    let ns = env.namespace("platform", Some(env::TOKEN)).await?;
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
    ensure(
        events(env, &ns).contains_key("Retrying"),
        "a Retrying event",
    )
}

async fn the_api_server_rejects_bad_input_naming_the_field(env: &Env) -> Result {
    let ns = env.namespace("schema", Some(env::TOKEN)).await?;
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
        let (ok, out) = env.kubectl(&["apply", "--validate=false", "-f", path.to_str().unwrap()]);
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

async fn a_missing_secret_stalls_until_it_exists(env: &Env) -> Result {
    let ns = env.namespace("nosecret", None).await?;
    env.create_run(&ns, "waiting", json!({"configId": "cg-e2e-nosecret"}))
        .await?;
    let run = env
        .wait_for(&ns, "waiting", FINISH, "stalled", |r| {
            condition(r, "Stalled").is_some_and(|c| c.0 == "True")
        })
        .await?;
    let (_, reason, message) = condition(&run, "Stalled").unwrap();
    ensure(reason == "SecretNotFound", reason.clone())?;
    ensure(
        message.contains("amperity-api") && message.contains(&ns),
        format!("message names the Secret: {message}"),
    )?;
    ensure(phase(&run) == "Pending", phase(&run))?;
    env.put_secret(&ns, env::TOKEN).await?;
    let run = env
        .wait_for(&ns, "waiting", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))
}

async fn a_rotated_token_is_used_without_a_restart(env: &Env) -> Result {
    let ns = env.namespace("rotate", Some("expired-token")).await?;
    env.create_run(&ns, "rotating", json!({"configId": "cg-e2e-rotate"}))
        .await?;
    let run = env
        .wait_for(&ns, "rotating", FINISH, "stalled", |r| {
            condition(r, "Stalled").is_some_and(|c| c.0 == "True")
        })
        .await?;
    let (_, reason, message) = condition(&run, "Stalled").unwrap();
    ensure(reason == "AuthFailed", format!("{reason}: {message}"))?;
    ensure(
        !message.contains("expired-token"),
        "the token never appears in status",
    )?;
    ensure(
        events(env, &ns).contains_key("AuthFailed"),
        "an AuthFailed event",
    )?;
    env.put_secret(&ns, env::ROTATED_TOKEN).await?;
    let run = env
        .wait_for(&ns, "rotating", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))?;
    let log = env.operator.as_ref().unwrap().log_text();
    ensure(
        !log.contains("expired-token") && !log.contains(env::ROTATED_TOKEN),
        "tokens never appear in logs",
    )
}

async fn running_hang(env: &Env, ns: &str, name: &str, extra: serde_json::Value) -> Result<String> {
    let mut spec = json!({"configId": format!("cg-e2e-{name}-hang")});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    env.create_run(ns, name, spec).await?;
    let run = env
        .wait_for(ns, name, FINISH, "running", |r| {
            phase(r) == "Running" && r.status.as_ref().is_some_and(|s| s.workflow_id.is_some())
        })
        .await?;
    Ok(run.status.unwrap().workflow_id.unwrap())
}

pub async fn sim_state(env: &Env, id: &str) -> String {
    let stats = env.sim_stats().await;
    stats["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["id"] == id))
        .and_then(|r| r["state"].as_str())
        .unwrap_or("missing")
        .to_string()
}

async fn stop_cancels_the_run(env: &Env) -> Result {
    let ns = env.namespace("stop", Some(env::TOKEN)).await?;
    let id = running_hang(env, &ns, "stopme", json!({})).await?;
    env.runs(&ns)
        .patch(
            "stopme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"stop": true}})),
        )
        .await
        .map_err(|e| e.to_string())?;
    let run = env
        .wait_for(&ns, "stopme", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Canceled", phase(&run))?;
    ensure(
        run.status.as_ref().unwrap().observed_generation == Some(2),
        "observedGeneration follows the stop edit",
    )?;
    let state = sim_state(env, &id).await;
    ensure(
        state == "canceled",
        format!("the simulator's run is {state}"),
    )
}

async fn timeout_stops_the_run(env: &Env) -> Result {
    let ns = env.namespace("timeout", Some(env::TOKEN)).await?;
    env.create_run(
        &ns,
        "slowpoke",
        json!({"configId": "cg-e2e-slowpoke-hang", "timeout": "4s"}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "slowpoke", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "TimedOut", phase(&run))?;
    let id = run
        .status
        .as_ref()
        .and_then(|s| s.workflow_id.clone())
        .unwrap_or_default();
    let state = sim_state(env, &id).await;
    ensure(
        state == "canceled",
        format!("the simulator's run is {state}"),
    )?;
    ensure(
        events(env, &ns).contains_key("TimedOut"),
        "a TimedOut event",
    )
}

async fn deleting_an_unfinished_run_stops_it(env: &Env) -> Result {
    let ns = env.namespace("delete", Some(env::TOKEN)).await?;
    let id = running_hang(env, &ns, "deleteme", json!({})).await?;
    env.runs(&ns)
        .delete("deleteme", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env
        .runs(&ns)
        .get_opt("deleteme")
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        ensure(
            std::time::Instant::now() < deadline,
            "the resource was not deleted within 30s",
        )?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let state = sim_state(env, &id).await;
    ensure(
        state == "canceled" || state == "stopping",
        format!("the simulator's run is {state}"),
    )?;
    // Orphan leaves the run alone.
    let orphan_id = running_hang(env, &ns, "orphan", json!({"deletionPolicy": "Orphan"})).await?;
    env.runs(&ns)
        .delete("orphan", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = sim_state(env, &orphan_id).await;
    ensure(
        state != "canceled" && state != "stopping",
        format!("an orphaned run was stopped: {state}"),
    )
}

async fn ttl_removes_finished_runs(env: &Env) -> Result {
    let ns = env.namespace("ttl", Some(env::TOKEN)).await?;
    // Long enough for this test to see the finished run between its looks while
    // the other scenarios load the API server (with 2 s it once saw only the gap).
    env.create_run(
        &ns,
        "shortlived",
        json!({"configId": "cg-e2e-ttl", "ttlSecondsAfterFinished": 10}),
    )
    .await?;
    env.wait_for(&ns, "shortlived", FINISH, "finished", finished)
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env
        .runs(&ns)
        .get_opt("shortlived")
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        ensure(
            std::time::Instant::now() < deadline,
            "not deleted 30s after ttlSecondsAfterFinished",
        )?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

async fn metrics_and_readiness_answer(env: &Env) -> Result {
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
    let ns = env.namespace("metrics", Some(env::TOKEN)).await?;
    env.create_run(&ns, "measured", json!({"configId": "og-e2e-metrics"}))
        .await?;
    env.wait_for(&ns, "measured", FINISH, "finished", finished)
        .await?;
    let text = scrape().await?;
    for name in [
        "amperity_operator_reconciles_total",
        "amperity_operator_runs{phase=\"Succeeded\"}",
        "amperity_operator_amperity_requests_total{endpoint=\"start\",code=\"201\",tenant=\"socktown\"}",
        "amperity_operator_amperity_request_seconds_count{endpoint=\"get\",tenant=\"socktown\"}",
        "amperity_operator_runs_finished_total{phase=\"Succeeded\",reason=\"Succeeded\"}",
        "amperity_operator_workflow_duration_seconds_count{workflow_type=\"amperity.orchestration.orchestration/run\",outcome=\"Succeeded\"}",
    ] {
        ensure(
            value(&text, name) > value(&before, name),
            format!("{name} did not grow:\n{text}"),
        )?;
    }
    ensure(
        text.lines().any(|l| l == "amperity_operator_leader 1"),
        format!("the leading replica does not say so:\n{text}"),
    )
}

async fn faults_end_in_documented_phases(env: &Env) -> Result {
    let ns = env.namespace("faults", Some(env::TOKEN)).await?;
    // An undocumented state keeps the run going, with one Warning event.
    env.create_run(&ns, "odd", json!({"configId": "cg-e2e-unknownstate-slow"}))
        .await?;
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

    let odd = env
        .wait_for(&ns, "odd", FINISH, "finished", finished)
        .await?;
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
    let seen = events(env, &ns);
    ensure(
        seen.get("UnknownState") == Some(&1),
        format!("one UnknownState warning: {seen:?}"),
    )?;
    ensure(
        seen.get("ApiDeprecated") == Some(&1),
        format!("one ApiDeprecated warning: {seen:?}"),
    )?;
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", env.metrics_port))
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
    )?;
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

fn condition_reason(status: &amperity_operator::crd::AmperityWorkflowRunStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True")
        .map(|c| c.reason.as_str())
}

async fn oauth_client_credentials_from_the_secret(env: &Env) -> Result {
    let ns = env.namespace("oauth", None).await?;
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), &ns);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "amperity-api"},
        "stringData": {"client_id": env::CLIENT_ID, "client_secret": env::CLIENT_SECRET}});
    api.patch(
        "amperity-api",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(secret),
    )
    .await
    .map_err(|e| e.to_string())?;
    env.create_run(&ns, "oauth", json!({"configId": "og-e2e-oauth"}))
        .await?;
    let run = env
        .wait_for(&ns, "oauth", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))?;
    let stats = env.sim_stats().await;
    ensure(
        stats["tokens_issued"].as_u64().unwrap_or(0) >= 1,
        "an access token was minted",
    )?;
    // Neither the client secret nor any token appears in logs, status or events.
    let log = env.operator.as_ref().unwrap().log_text();
    let (_, events_json) = env.kubectl(&["-n", &ns, "get", "events.events.k8s.io", "-o", "json"]);
    let status = serde_json::to_string(&run.status).unwrap();
    for (what, text) in [("log", &log), ("events", &events_json), ("status", &status)] {
        for secret in [
            env::CLIENT_SECRET,
            env::TOKEN,
            env::ROTATED_TOKEN,
            "simjwt.",
        ] {
            ensure(
                !text.contains(secret),
                format!("{secret} leaked into the {what}"),
            )?;
        }
    }
    Ok(())
}

async fn only_the_leader_reconciles_and_a_follower_takes_over(env: &mut Env) -> Result {
    // With the current operator alone, a finished run proves it leads.
    let ns = env.namespace("leader", Some(env::TOKEN)).await?;
    env.create_run(&ns, "first", json!({"configId": "cg-e2e-leader-1"}))
        .await?;
    env.wait_for(&ns, "first", FINISH, "finished", finished)
        .await?;
    let follower_port = free_port();
    let follower = env.spawn_operator("operator-follower", follower_port, &[])?;
    wait_http(
        &format!("http://127.0.0.1:{follower_port}/readyz"),
        Duration::from_secs(30),
    )
    .await?;
    env.create_run(&ns, "between", json!({"configId": "cg-e2e-leader-between"}))
        .await?;
    env.wait_for(&ns, "between", FINISH, "finished", finished)
        .await?;
    let reconciles = |port: u16| async move {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("amperity_operator_reconciles_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
    };
    ensure(
        reconciles(follower_port).await == Some(0.0),
        "the follower reconciled while not leading",
    )?;
    // Kill the leader: the follower takes over once the lease expires.
    env.operator.as_mut().unwrap().kill();
    env.operator = Some(follower);
    env.metrics_port = follower_port;
    env.create_run(&ns, "second", json!({"configId": "cg-e2e-leader-2"}))
        .await?;
    let run = env
        .wait_for(&ns, "second", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))?;
    ensure(
        reconciles(follower_port).await.unwrap_or(0.0) > 0.0,
        "the new leader reconciled",
    )
}

/// The chart's RBAC objects for a release in `namespace`.
fn chart_rbac(namespace: &str) -> Result<Vec<serde_json::Value>> {
    let docs = env::render_chart(
        namespace,
        "ServiceAccount,ClusterRole,ClusterRoleBinding,Role,RoleBinding",
    )?;
    // The operator's own RBAC: the users' aggregated roles grant it nothing (roles.rs).
    Ok(docs
        .into_iter()
        .filter(|d| !env::is_aggregated(d))
        .collect())
}

/// Applies RBAC objects, replacing earlier versions wholesale. The ServiceAccount
/// is created once and kept: recreating it would revoke its token.
fn apply_rbac(env: &Env, docs: &[serde_json::Value]) -> Result {
    let path = std::env::temp_dir().join(format!("e2e-rbac-{}.json", fastrand::u32(..)));
    let docs: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] != "ServiceAccount")
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    std::fs::write(&path, list.to_string()).unwrap();
    let (_, _) = env.kubectl(&["delete", "--ignore-not-found", "-f", path.to_str().unwrap()]);
    let (ok, out) = env.kubectl(&["create", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    ensure(ok, format!("applying RBAC: {out}"))
}

/// A kubeconfig that authenticates as the chart's ServiceAccount (a TokenRequest,
/// through the API: the suite's kubectl 1.20 has no `create token`).
async fn service_account_kubeconfig(env: &Env, namespace: &str) -> Result<std::path::PathBuf> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(env.client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}
    }))
    .map_err(|e| e.to_string())?;
    let issued = accounts
        .create_token_request("amperity-operator", &Default::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest: {e}"))?;
    let issued = serde_json::to_value(issued).map_err(|e| e.to_string())?;
    let token = issued["status"]["token"]
        .as_str()
        .ok_or("TokenRequest: no token")?
        .to_string();
    env.kubeconfig_with_token(&format!("sa-{namespace}"), &token)
}

/// Runs one workflow and one schedule under `kubeconfig`; true when everything a
/// user expects happened: the run Succeeded, with a Started event, and was deleted
/// after its TTL; the schedule started a run on `amperity.dev/run-now` and recorded
/// its success in status.
async fn works_under(
    env: &Env,
    kubeconfig: &std::path::Path,
    lease_ns: &str,
    label: &str,
) -> Result<(bool, String)> {
    let port = free_port();
    let mut op = env.spawn_operator(
        &format!("operator-rbac-{label}"),
        port,
        &[
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("POD_NAMESPACE", lease_ns.to_string()),
            ("LEASE_NAME", format!("rbac-{label}")),
        ],
    )?;
    let ns = env.namespace("rbac", Some(env::TOKEN)).await?;
    env.create_run(
        &ns,
        "checked",
        json!({"configId": format!("cg-e2e-rbac-{label}"), "ttlSecondsAfterFinished": 1}),
    )
    .await?;
    env.create_schedule(
        &ns,
        "checked",
        json!({}),
        json!({"configId": format!("cg-e2e-rbac-{label}-sched")}),
        json!({amperity_operator::schedule::RUN_NOW_ANNOTATION: "1"}),
    )
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    let mut last = String::from("no status");
    let (mut succeeded, mut run_done, mut schedule_done) = (false, false, false);
    while std::time::Instant::now() < deadline {
        match env
            .runs(&ns)
            .get_opt("checked")
            .await
            .map_err(|e| e.to_string())?
        {
            Some(run) => {
                succeeded |= phase(&run) == "Succeeded";
                let stalled = condition(&run, "Stalled");
                last = format!("run phase {:?}, stalled {stalled:?}", phase(&run));
                if stalled.is_some_and(|c| c.0 == "True") {
                    break;
                }
            }
            None if succeeded => run_done = true,
            None => last = "the run was deleted before it succeeded".into(),
        }
        let schedule = env
            .schedules(&ns)
            .get("checked")
            .await
            .map_err(|e| e.to_string())?;
        let status = schedule.status.unwrap_or_default();
        schedule_done = status
            .last_run
            .is_some_and(|r| r.result.as_str() == "Succeeded");
        if run_done && !schedule_done {
            last = format!(
                "the schedule's run-now run did not succeed (runs {:?}, schedule status written: {})",
                env.run_names(&ns).await?,
                status.observed_generation.is_some()
            );
        }
        if run_done && schedule_done {
            break;
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            last = format!("the operator exited ({status})");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    op.kill();
    // Deleted by the operator that runs the next check: the environment outlives it.
    let _ = env
        .schedules(&ns)
        .delete("checked", &DeleteParams::default())
        .await;
    if !(run_done && schedule_done) {
        return Ok((false, last));
    }
    let started = events(env, &ns).contains_key("Started");
    Ok((
        started,
        if started {
            "ok".into()
        } else {
            "no Started event".into()
        },
    ))
}

async fn the_charts_rbac_is_enough_and_every_rule_is_needed(env: &mut Env) -> Result {
    // The admin-credentialed operator would do the work itself: pause it.
    env.without_shared_operator("operator-after-rbac", |env| Box::pin(rbac_checks(env)))
        .await
}

async fn rbac_checks(env: &mut Env) -> Result {
    let release_ns = env.namespace("operator", None).await?;
    let full = chart_rbac(&release_ns)?;
    let accounts: Vec<&serde_json::Value> = full
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .collect();
    ensure(accounts.len() == 1, "the chart renders one ServiceAccount")?;
    let sa = std::env::temp_dir().join(format!("e2e-sa-{release_ns}.json"));
    std::fs::write(&sa, accounts[0].to_string()).unwrap();
    let (ok, out) = env.kubectl(&["create", "-f", sa.to_str().unwrap()]);
    ensure(ok, format!("creating the ServiceAccount: {out}"))?;
    apply_rbac(env, &full)?;
    let kubeconfig = service_account_kubeconfig(env, &release_ns).await?;
    let (ok, why) = works_under(env, &kubeconfig, &release_ns, "full").await?;
    ensure(ok, format!("the chart's RBAC is not enough: {why}"))?;

    // Remove each rule in turn: something must break.
    let roles: Vec<usize> = full
        .iter()
        .enumerate()
        .filter(|(_, d)| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .map(|(i, _)| i)
        .collect();
    let mut checked = 0;
    for role in roles {
        let count = full[role]["rules"].as_array().map(Vec::len).unwrap_or(0);
        for rule in 0..count {
            let mut reduced = full.clone();
            let removed = reduced[role]["rules"].as_array_mut().unwrap().remove(rule);
            apply_rbac(env, &reduced)?;
            let label = format!("without-{checked}");
            let (ok, why) = works_under(env, &kubeconfig, &release_ns, &label).await?;
            ensure(!ok, format!("removing {removed} broke nothing"))?;
            eprintln!("    without {}: {why}", removed["resources"]);
            checked += 1;
        }
    }
    ensure(checked == 7, format!("{checked} rules checked, expected 7"))
}

async fn a_leader_that_loses_its_lease_stops_reconciling(env: &mut Env) -> Result {
    let ns = env.namespace("lease", Some(env::TOKEN)).await?;
    env.create_run(&ns, "before", json!({"configId": "cg-e2e-lease-before"}))
        .await?;
    env.wait_for(&ns, "before", FINISH, "finished", finished)
        .await?;
    // Someone else takes the lease (as a partitioned leader finds on its return)
    // and keeps renewing it.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env.client.clone(), "default");
    let micro = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let intruder = {
        let leases = leases.clone();
        tokio::spawn(async move {
            loop {
                let now = jiff::Timestamp::now();
                let spec = json!({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 30,
                    "acquireTime": micro(now), "renewTime": micro(now)}});
                let _ = leases
                    .patch(
                        "amperity-operator-e2e",
                        &PatchParams::default(),
                        &Patch::Merge(spec),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    // Within one check period the operator notices and stops reconciling.
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.create_run(&ns, "during", json!({"configId": "cg-e2e-lease-during"}))
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = env
        .runs(&ns)
        .get("during")
        .await
        .map_err(|e| e.to_string())?;
    intruder.abort();
    ensure(
        during.status.is_none(),
        format!(
            "reconciled without the lease: {:?}",
            during.status.map(|s| s.phase)
        ),
    )?;
    ensure(
        env.starts_for("cg-e2e-lease-during").await == 0,
        "started a run without the lease",
    )?;
    // The lease expires: the operator leads again and the run proceeds.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let expired = json!({"spec": {"leaseDurationSeconds": 1, "renewTime": micro(past)}});
    leases
        .patch(
            "amperity-operator-e2e",
            &PatchParams::default(),
            &Patch::Merge(expired),
        )
        .await
        .map_err(|e| format!("expiring the lease: {e}"))?;
    let run = env
        .wait_for(&ns, "during", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))
}
