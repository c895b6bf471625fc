//! Leader election between replicas: only the leader reconciles, a follower takes
//! over when the leader dies, and a leader that loses its Lease stops.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::env::{self, Env, Result, free_port, phase, wait_http};
use crate::scenarios::{FINISH, ensure, finished};

pub async fn only_the_leader_reconciles_and_a_follower_takes_over(env: &mut Env) -> Result {
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

pub async fn a_leader_that_loses_its_lease_stops_reconciling(env: &mut Env) -> Result {
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
