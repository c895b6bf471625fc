//! How a run is stopped or removed: spec.stop, spec.timeout, deleting it (and
//! deletionPolicy Orphan), ttlSecondsAfterFinished.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::env::{Env, Result, eventually, phase, wait_events};
use crate::scenarios::{EVENTS, FINISH, ensure, finished, sim_state};

pub async fn running_hang(
    env: &Env,
    ns: &str,
    name: &str,
    extra: serde_json::Value,
) -> Result<String> {
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

pub async fn stop_cancels_the_run(env: &Env) -> Result {
    let ns = env.namespace("stop", Some(&env.own_token())).await?;
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

pub async fn timeout_stops_the_run(env: &Env) -> Result {
    let ns = env.namespace("timeout", Some(&env.own_token())).await?;
    env.create_run(
        &ns,
        "slowpoke",
        // The timeout counts from creation until a start is recorded: long enough
        // for the first reconcile while the whole suite starts at once (it came
        // 8 s after creation on a loaded machine, and the run timed out unstarted).
        json!({"configId": "cg-e2e-slowpoke-hang", "timeout": "20s"}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "slowpoke", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "TimedOut", phase(&run))?;
    let Some(id) = run.status.as_ref().and_then(|s| s.workflow_id.clone()) else {
        return Err(format!(
            "timed out before any run was started: {:?}",
            run.status
        ));
    };
    let state = sim_state(env, &id).await;
    ensure(
        state == "canceled",
        format!("the simulator's run is {state}"),
    )?;
    wait_events(env, &ns, &["TimedOut"], EVENTS)
        .await
        .map(|_| ())
}

pub async fn deleting_an_unfinished_run_stops_it(env: &Env) -> Result {
    let ns = env.namespace("delete", Some(&env.own_token())).await?;
    let id = running_hang(env, &ns, "deleteme", json!({})).await?;
    env.runs(&ns)
        .delete("deleteme", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    gone(env, &ns, "deleteme").await?;
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
    // The operator releases its finalizer only once it has done what the deletion
    // asks: once the resource is gone, a stop would have been sent (as it was
    // for the run above).
    gone(env, &ns, "orphan").await?;
    let state = sim_state(env, &orphan_id).await;
    ensure(
        state != "canceled" && state != "stopping",
        format!("an orphaned run was stopped: {state}"),
    )
}

/// Waits until the run `name` is gone (its finalizer released).
pub async fn gone(env: &Env, ns: &str, name: &str) -> Result {
    eventually(Duration::from_secs(30), || async {
        let left = env
            .runs(ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        ensure(left.is_none(), format!("{ns}/{name} is not deleted"))
    })
    .await
}

pub async fn ttl_removes_finished_runs(env: &Env) -> Result {
    let ns = env.namespace("ttl", Some(&env.own_token())).await?;
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
