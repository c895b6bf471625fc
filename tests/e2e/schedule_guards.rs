//! Issue 22 on the real kube-apiserver: a schedule that cannot go on says so, a
//! run-now value fires once, ever, and Replace never leaves nothing running.

use std::time::Duration;

use amperity_operator::crd::schedule::AmperityWorkflowSchedule;
use amperity_operator::run::decide::START_DEADLINE_ANNOTATION;
use amperity_operator::schedule::RUN_NOW_ANNOTATION;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::env::{
    Env, Result, condition, events, eventually, phase, schedule_condition, wait_events,
};
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

const RUN_COUNT: &str = "count/amperityworkflowruns.amperity.dev";

/// Sets the namespace's quota on runs to `hard`, and waits until the quota
/// controller has taken it in (the API server admits against its status).
async fn quota(env: &Env, ns: &str, hard: u32) -> Result {
    let api: Api<ResourceQuota> = Api::namespaced(env.client.clone(), ns);
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "runs"},
                       "spec": {"hard": {RUN_COUNT: hard.to_string()}}});
    api.patch(
        "runs",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(quota),
    )
    .await
    .map_err(|e| format!("writing the ResourceQuota: {e}"))?;
    // The quota controller discovers the CRD's resource every 30 s, then counts.
    eventually(Duration::from_secs(120), || async {
        let q = api.get("runs").await.map_err(|e| e.to_string())?;
        let status = q.status.unwrap_or_default();
        let seen = status.hard.unwrap_or_default().get(RUN_COUNT).cloned();
        let used = status.used.unwrap_or_default().get(RUN_COUNT).cloned();
        ensure(
            seen.as_ref().is_some_and(|h| h.0 == hard.to_string()) && used.is_some(),
            format!("the quota controller has not taken in {hard} (hard {seen:?}, used {used:?})"),
        )
    })
    .await
}

/// concurrencyPolicy Replace when the API server refuses the new run (a
/// ResourceQuota on runs, 403 "exceeded quota"): the run in flight is left alone,
/// the schedule says RunCreateFailed with a CreateFailed Event; once the quota
/// allows it, the new run is created and only then the old one stopped.
pub async fn schedule_guards_replace_with_a_refused_create_leaves_the_run_in_flight(
    env: &Env,
) -> Result {
    let ns = env.namespace("sched-quota", Some(&env.own_token())).await?;
    let outcome = replace_over_quota(env, &ns).await;
    // Cleaned up on every path: the schedule, then its runs (stopped per their
    // deletionPolicy), then the quota.
    let _ = env
        .schedules(&ns)
        .delete("swap", &DeleteParams::default())
        .await;
    let _ = env
        .runs(&ns)
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await;
    let _ = Api::<ResourceQuota>::namespaced(env.client.clone(), &ns)
        .delete("runs", &DeleteParams::default())
        .await;
    outcome
}

async fn replace_over_quota(env: &Env, ns: &str) -> Result {
    quota(env, ns, 1).await?;
    let hang = unique("cg-e2e-quota-hang");
    env.create_schedule(
        ns,
        "swap",
        json!({"concurrencyPolicy": "Replace"}),
        json!({"configId": hang}),
        json!({RUN_NOW_ANNOTATION: "a"}),
    )
    .await?;
    env.wait_for(ns, "swap-now-1", Duration::from_secs(60), "running", |r| {
        phase(r) == "Running"
    })
    .await?;
    annotate(env, ns, "swap", "b").await?;
    let s = env
        .wait_for_schedule(
            ns,
            "swap",
            Duration::from_secs(60),
            "RunCreateFailed",
            |s| {
                schedule_condition(s, "Ready")
                    .is_some_and(|(_, reason, _)| reason == "RunCreateFailed")
            },
        )
        .await?;
    let (ready, _, message) = schedule_condition(&s, "Ready").unwrap_or_default();
    ensure(
        ready == "False" && message.contains("exceeded quota") && message.contains("403"),
        format!("the API server's refusal, said: {ready} {message}"),
    )?;
    wait_events(env, ns, &["CreateFailed"], EVENTS).await?;
    // The refusal is recorded (status, then the Event) after the create was refused
    // and before anything would have been stopped: the run in flight goes on.
    let old = env
        .runs(ns)
        .get("swap-now-1")
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        !old.spec.stop && phase(&old) == "Running",
        format!(
            "the run in flight was left alone: stop {}, {}",
            old.spec.stop,
            phase(&old)
        ),
    )?;
    let names = env.run_names(ns).await?;
    ensure(
        names == ["swap-now-1"],
        format!("nothing replaced it: {names:?}"),
    )?;
    let seen = events(env, ns).await;
    ensure(
        !seen.contains_key("Replaced"),
        format!("no Replaced Event for a run never created: {seen:?}"),
    )?;

    // Room for one more: the next value creates its run, then stops the old one.
    quota(env, ns, 2).await?;
    annotate(env, ns, "swap", "c").await?;
    env.wait_for(ns, "swap-now-3", Duration::from_secs(60), "running", |r| {
        phase(r) == "Running"
    })
    .await?;
    env.wait_for(ns, "swap-now-1", Duration::from_secs(60), "canceled", |r| {
        phase(r) == "Canceled"
    })
    .await?;
    wait_events(env, ns, &["Replaced"], EVENTS).await?;
    Ok(())
}
