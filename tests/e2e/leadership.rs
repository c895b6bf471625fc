//! Leader election between replicas: only the leader reconciles, a follower takes
//! over when the leader dies, and a leader that loses its Lease stops.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::env::{Env, Result, TaskGuard, eventually, phase, wait_http};
use crate::scenarios::{FINISH, ensure, finished};

/// The value of the unlabelled series `name` on an operator's /metrics.
async fn series(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
}

pub async fn only_the_leader_reconciles_and_a_follower_takes_over(env: &mut Env) -> Result {
    // With the current operator alone, a finished run proves it leads.
    let ns = env.namespace("leader", Some(&env.own_token())).await?;
    env.create_run(&ns, "first", json!({"configId": "cg-e2e-leader-1"}))
        .await?;
    env.wait_for(&ns, "first", FINISH, "finished", finished)
        .await?;
    let (follower, follower_port) = env.start_operator("operator-follower", &[]).await?;
    wait_http(
        &format!("http://127.0.0.1:{follower_port}/readyz"),
        Duration::from_secs(30),
    )
    .await?;
    env.create_run(&ns, "between", json!({"configId": "cg-e2e-leader-between"}))
        .await?;
    env.wait_for(&ns, "between", FINISH, "finished", finished)
        .await?;
    let reconciles = |port: u16| series(port, "amperity_operator_reconciles_total");
    ensure(
        reconciles(follower_port).await == Some(0.0),
        "the follower reconciled while not leading",
    )?;
    // Kill the leader: the follower takes over once the lease expires.
    env.operator.as_mut().ok_or("no operator")?.kill();
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

/// An operator of its own, on a Lease of its own in the scenario's namespace: what
/// the scenario does to its Lease can outlast it in no other scenario.
pub async fn a_leader_that_loses_its_lease_stops_reconciling(env: &mut Env) -> Result {
    env.without_shared_operator("operator-after-lease", |env| Box::pin(lease_checks(env)))
        .await
}

async fn lease_checks(env: &mut Env) -> Result {
    let ns = env.namespace("lease", Some(&env.own_token())).await?;
    let lease = "amperity-operator-lease";
    let (_operator, port) = env
        .start_operator(
            "operator-lease",
            &[
                ("POD_NAMESPACE", ns.clone()),
                ("LEASE_NAME", lease.to_string()),
            ],
        )
        .await?;
    // A finished run proves it leads (and that its Lease exists); how long the run
    // took to be taken up bounds the wait for something that must not happen.
    let created = Instant::now();
    env.create_run(&ns, "before", json!({"configId": "cg-e2e-lease-before"}))
        .await?;
    env.wait_for(&ns, "before", FINISH, "taken up", |r| r.status.is_some())
        .await?;
    let taken_up = created.elapsed();
    env.wait_for(&ns, "before", FINISH, "finished", finished)
        .await?;
    // Someone else takes the lease (as a partitioned leader finds on its return)
    // and keeps renewing it, until the scenario ends whichever way it does. (For
    // 10 s at a time: the operator waits out what the holder last wrote, even
    // after the expiry below.)
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &ns);
    let micro = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let mut intruder = {
        let leases = leases.clone();
        TaskGuard(tokio::spawn(async move {
            while !*stopped.borrow() {
                let now = jiff::Timestamp::now();
                let spec = json!({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 10,
                    "acquireTime": micro(now), "renewTime": micro(now)}});
                let _ = leases
                    .patch(lease, &PatchParams::default(), &Patch::Merge(spec))
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopped.changed() => {}
                }
            }
        }))
    };
    // The operator notices and says it no longer leads.
    eventually(Duration::from_secs(30), || async {
        let leader = series(port, "amperity_operator_leader").await;
        ensure(
            leader == Some(0.0),
            format!("amperity_operator_leader is {leader:?} with the lease taken"),
        )
    })
    .await?;
    // A run created now stays untouched, for several times as long as the leading
    // operator took to take one up.
    let hold = (taken_up * 4).max(Duration::from_secs(5));
    env.create_run(&ns, "during", json!({"configId": "cg-e2e-lease-during"}))
        .await?;
    let until = Instant::now() + hold;
    while Instant::now() < until {
        let during = env
            .runs(&ns)
            .get("during")
            .await
            .map_err(|e| e.to_string())?;
        ensure(
            during.status.is_none(),
            format!(
                "reconciled without the lease: {:?}",
                during.status.map(|s| s.phase)
            ),
        )?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ensure(
        env.starts_for("cg-e2e-lease-during").await == 0,
        format!("started a run without the lease (within {hold:?})"),
    )?;
    // The intruder stops after its last renewal has landed (aborted, a renewal in
    // flight could land after the expiry below).
    let _ = stop.send(true);
    let _ = (&mut intruder.0).await;
    // The lease expires: the operator leads again and the run proceeds.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let expired = json!({"spec": {"leaseDurationSeconds": 1, "renewTime": micro(past)}});
    leases
        .patch(lease, &PatchParams::default(), &Patch::Merge(expired))
        .await
        .map_err(|e| format!("expiring the lease: {e}"))?;
    let run = env
        .wait_for(&ns, "during", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))
}
