//! Issue 22 on the real kube-apiserver: a schedule that cannot go on says so, and a
//! run-now value fires once, ever.

use std::time::Duration;

use amperity_operator::crd::schedule::AmperityWorkflowSchedule;
use amperity_operator::run::decide::START_DEADLINE_ANNOTATION;
use amperity_operator::schedule::RUN_NOW_ANNOTATION;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::env::{Env, Result, condition, phase, schedule_condition, wait_events};
use crate::scenarios::{EVENTS, ensure};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u32(..) % 100_000)
}

/// A Forbid schedule every minute whose run's Secret is missing: the next slot is
/// skipped and the schedule says Blocked (Ready False, Stalled True) naming the run.
/// A twin with startingDeadlineSeconds ends its run StartingDeadlineExceeded
/// without starting anything in Amperity.
pub async fn schedule_guards_a_run_without_its_secret_blocks_and_is_not_started_late(
    env: &Env,
) -> Result {
    let ns = env.namespace("sched-blocked", None).await?;
    let config = unique("cg-e2e-blocked");
    env.create_schedule(
        &ns,
        "stuck",
        json!({"schedule": "* * * * *"}),
        json!({"configId": config}),
        json!({}),
    )
    .await?;
    env.create_schedule(
        &ns,
        "late",
        json!({"schedule": "* * * * *", "startingDeadlineSeconds": 5}),
        json!({"configId": config}),
        json!({}),
    )
    .await?;
    let blocked = async {
        let s = env
            .wait_for_schedule(&ns, "stuck", Duration::from_secs(150), "Blocked", |s| {
                schedule_condition(s, "Ready").is_some_and(|(_, reason, _)| reason == "Blocked")
            })
            .await?;
        let (ready, _, message) = schedule_condition(&s, "Ready").unwrap_or_default();
        let (stalled, reason, _) = schedule_condition(&s, "Stalled").unwrap_or_default();
        ensure(
            ready == "False" && stalled == "True" && reason == "Blocked",
            format!("{:?}", s.status),
        )?;
        let active = s
            .status
            .as_ref()
            .map(|st| st.active.clone())
            .unwrap_or_default();
        ensure(
            active.len() == 1 && message.contains(&active[0].name),
            format!("the message names the run in flight: {message} ({active:?})"),
        )?;
        ensure(
            message.contains("blocked since"),
            format!("and since when: {message}"),
        )
    };
    let not_late = async {
        let s = env
            .wait_for_schedule(&ns, "late", Duration::from_secs(90), "a run created", |s| {
                s.status.as_ref().is_some_and(|st| !st.active.is_empty())
            })
            .await?;
        let name = s.status.unwrap().active[0].name.clone();
        let run = env
            .wait_for(&ns, &name, Duration::from_secs(75), "TimedOut", |r| {
                phase(r) == "TimedOut"
            })
            .await?;
        ensure(
            run.annotations().contains_key(START_DEADLINE_ANNOTATION),
            "the run carries its start deadline",
        )?;
        let reason = condition(&run, "Succeeded").map(|c| c.1);
        ensure(
            reason.as_deref() == Some("StartingDeadlineExceeded"),
            format!("{reason:?}"),
        )?;
        ensure(
            run.status.as_ref().is_some_and(|s| s.workflow_id.is_none())
                && env.starts_for(&config).await == 0,
            "nothing was started in Amperity",
        )
    };
    let (a, b) = futures::future::join(blocked, not_late).await;
    a?;
    b?;
    wait_events(env, &ns, &["Skipped"], EVENTS).await?;
    env.schedules(&ns)
        .delete("stuck", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    env.schedules(&ns)
        .delete("late", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn annotate(env: &Env, ns: &str, name: &str, value: &str) -> Result {
    env.schedules(ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {RUN_NOW_ANNOTATION: value}}})),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("annotating {ns}/{name}: {e}"))
}

fn handled(s: &AmperityWorkflowSchedule) -> Vec<String> {
    s.status
        .as_ref()
        .map(|st| st.handled_run_now.clone())
        .unwrap_or_default()
}

/// run-now v1, v2, then v1 again (a revert): two runs. The schedule recreated from
/// the same manifest with a timestamp value older than it: no run.
pub async fn schedule_guards_run_now_fires_once_per_value_across_a_revert_and_a_recreate(
    env: &Env,
) -> Result {
    let ns = env
        .namespace("sched-revert", Some(&env.own_token()))
        .await?;
    let config = unique("cg-e2e-revert");
    env.create_schedule(
        &ns,
        "adhoc",
        json!({"concurrencyPolicy": "Allow"}),
        json!({"configId": config}),
        json!({RUN_NOW_ANNOTATION: "v1"}),
    )
    .await?;
    env.wait_for_schedule(&ns, "adhoc", Duration::from_secs(60), "v1 handled", |s| {
        handled(s) == ["v1"]
    })
    .await?;
    annotate(env, &ns, "adhoc", "v2").await?;
    env.wait_for_schedule(&ns, "adhoc", Duration::from_secs(60), "v2 handled", |s| {
        handled(s) == ["v1", "v2"]
    })
    .await?;
    annotate(env, &ns, "adhoc", "v1").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let names = env.run_names(&ns).await?;
    ensure(
        names == ["adhoc-now-1", "adhoc-now-2"],
        format!("the revert to v1 started nothing: {names:?}"),
    )?;
    let s = env
        .schedules(&ns)
        .get("adhoc")
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        s.status.as_ref().map(|st| st.run_now_count) == Some(2),
        format!("{:?}", s.status),
    )?;

    // Recreated (a new cluster, a restore) with a committed timestamp value older
    // than the new schedule: nothing runs.
    let ns2 = env
        .namespace("sched-recreate", Some(&env.own_token()))
        .await?;
    let committed = (jiff::Timestamp::now().as_second() - 3600).to_string();
    env.create_schedule(
        &ns2,
        "adhoc",
        json!({}),
        json!({"configId": config}),
        json!({RUN_NOW_ANNOTATION: committed}),
    )
    .await?;
    env.wait_for_schedule(
        &ns2,
        "adhoc",
        Duration::from_secs(60),
        "the value handled",
        |s| handled(s) == [committed.clone()],
    )
    .await?;
    // The Event comes after the status that records the value handled, and a run
    // would have been created before either: once it is there, none can come.
    wait_events(env, &ns2, &["RunNowIgnored"], EVENTS).await?;
    ensure(
        env.run_names(&ns2).await?.is_empty(),
        "a timestamp older than the schedule started nothing",
    )?;
    // A fresh timestamp does run.
    annotate(
        env,
        &ns2,
        "adhoc",
        &jiff::Timestamp::now().as_second().to_string(),
    )
    .await?;
    env.wait_for(
        &ns2,
        "adhoc-now-1",
        Duration::from_secs(60),
        "created",
        |_| true,
    )
    .await?;
    Ok(())
}
