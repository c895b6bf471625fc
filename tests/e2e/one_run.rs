//! One run per resource on the real API server: the leader killed inside its
//! starts, and searches that must not adopt another resource's run or give up on
//! a list that lags.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::json;

use crate::env::{Env, Proc, Result, condition, phase, wait_http};
use crate::scenarios::{FINISH, ensure, finished};

const LEASE: &str = "amperity-operator-e2e";

async fn holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    leases.get(LEASE).await.ok()?.spec?.holder_identity
}

/// The config ids the simulator created runs for, with their run ids.
async fn runs_of(env: &Env, config: &str) -> Vec<String> {
    env.sim_stats().await["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter(|r| r["config_id"] == config)
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn settled(r: &amperity_operator::crd::AmperityWorkflowRun) -> bool {
    finished(r) || condition(r, "Stalled").is_some_and(|c| c.1 == "StartUnconfirmed")
}

fn kill_config(i: usize) -> String {
    let kind = ["cc", "cg", "og"][i % 3];
    format!("{kind}-e2e-kill-slowstart-{i}")
}

pub async fn killing_the_leader_inside_its_starts_never_starts_twice(env: &mut Env) -> Result {
    // A token of its own: its searches look only at runs this principal made, so
    // runs that other scenarios' resources started (and since deleted) cannot
    // make them ambiguous.
    let ns = env.namespace("killleader", Some(&env.own_token())).await?;
    // Two replicas: the one running now, and a second one waiting for the Lease.
    // (Should the scenario end early, they are killed as it drops them, and the
    // suite starts a shared operator again.)
    let mut replicas: Vec<(String, Proc, u16)> = Vec::new();
    let first = env.operator.take().ok_or("no operator")?;
    replicas.push((first.name.clone(), first, env.metrics_port));
    let (replica, port) = env.start_operator("replica-1", &[]).await?;
    replicas.push(("replica-1".into(), replica, port));
    wait_http(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(30),
    )
    .await?;
    let mut result = Ok(());
    for i in 0..3 {
        // Its start answers 3 s late, so the leader dies while the POST is in flight.
        // One of each kind (a second campaign start would be a second send to
        // customers): starts of one kind left unresolved together could not be told
        // apart by a search, and would rightly wait for a person.
        let config = kill_config(i);
        env.create_run(&ns, &format!("send-{i}"), json!({"configId": config}))
            .await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while env.starts_for(&config).await == 0 {
            if std::time::Instant::now() > deadline {
                result = Err(format!("{config}: no POST within 30s"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if result.is_err() {
            break;
        }
        let leader = holder(env).await.ok_or("nobody holds the Lease")?;
        let Some(at) = replicas.iter().position(|(name, _, _)| *name == leader) else {
            result = Err(format!("the Lease names {leader}, which is not running"));
            break;
        };
        let (_, mut dead, _) = replicas.remove(at);
        dead.kill();
        let name = format!("replica-{}", i + 2);
        let (replica, port) = env.start_operator(&name, &[]).await?;
        replicas.push((name, replica, port));
    }
    if result.is_ok() {
        for i in 0..3 {
            let config = kill_config(i);
            let run = env
                .wait_for(
                    &ns,
                    &format!("send-{i}"),
                    Duration::from_secs(90),
                    "settled",
                    settled,
                )
                .await?;
            let posts = env.starts_for(&config).await;
            ensure(
                posts == 1,
                format!("{config}: {posts} POSTs for one resource"),
            )?;
            // The Secret names the principal: the run the dead leader started is found.
            ensure(
                phase(&run) == "Succeeded",
                format!("{config}: {} {:?}", phase(&run), condition(&run, "Stalled")),
            )?;
            let followed = run.status.as_ref().and_then(|s| s.workflow_id.clone());
            let created = runs_of(env, &config).await;
            ensure(
                followed.as_ref().is_some_and(|id| created.contains(id)),
                format!("{config}: follows {followed:?}, created {created:?}"),
            )?;
        }
    }
    // Back to one operator for the scenarios after this one.
    let (_, survivor, port) = replicas.pop().unwrap();
    for (_, mut p, _) in replicas {
        p.kill();
    }
    env.operator = Some(survivor);
    env.metrics_port = port;
    wait_http(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(30),
    )
    .await?;
    result
}

pub async fn a_search_skips_other_resources_runs_and_waits_out_a_lagging_list(env: &Env) -> Result {
    // One credential for both, and for nothing else.
    let token = env.own_token();
    let mine_ns = env.namespace("search-mine", Some(&token)).await?;
    let theirs_ns = env.namespace("search-theirs", Some(&token)).await?;
    // Mine: the run is created, its answer lost (a 500), and lists show it only
    // after 4 s. Theirs: a campaign of the same type, same credential, same minute.
    let mine = "cc-e2e-mine-lostanswer-listlag";
    let theirs = "cc-e2e-theirs";
    env.create_run(&mine_ns, "mine", json!({"configId": mine}))
        .await?;
    env.create_run(&theirs_ns, "theirs", json!({"configId": theirs}))
        .await?;
    let other = env
        .wait_for(&theirs_ns, "theirs", FINISH, "finished", finished)
        .await?;
    let their_run = other.status.as_ref().and_then(|s| s.workflow_id.clone());
    let run = env
        .wait_for(&mine_ns, "mine", FINISH, "settled", settled)
        .await?;
    let followed = run.status.as_ref().and_then(|s| s.workflow_id.clone());
    ensure(
        followed.is_none() || followed != their_run,
        "adopted the other resource's run",
    )?;
    ensure(env.starts_for(mine).await == 1, "one POST for mine")?;
    // Its own run was listed late but within the search window: adopted.
    let created = runs_of(env, mine).await;
    ensure(
        phase(&run) == "Succeeded" && followed.as_ref().is_some_and(|id| created.contains(id)),
        format!(
            "mine: {} following {followed:?}, created {created:?}",
            phase(&run)
        ),
    )
}

/// Issue 21, scenario 4: every start is answered 429 (nothing created) until the
/// timeout passes: the resource ends `TimedOut` with no run, and Amperity has none.
pub async fn every_start_answered_429_times_out_without_a_run(env: &Env) -> Result {
    let ns = env
        .namespace("throttled-start", Some(&env.own_token()))
        .await?;
    let config = "cc-e2e-throttlestart";
    env.create_run(
        &ns,
        "throttled",
        json!({"configId": config, "timeout": "10s"}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "throttled", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "TimedOut", phase(&run))?;
    let followed = run.status.as_ref().and_then(|s| s.workflow_id.clone());
    ensure(followed.is_none(), format!("follows {followed:?}"))?;
    let created = runs_of(env, config).await;
    ensure(created.is_empty(), format!("Amperity has runs {created:?}"))
}

/// Issue 21, scenario 5: the stop sent for the timeout is answered 500 although
/// Amperity stopped the run: the phase says why the operator asked (`TimedOut`),
/// not `Canceled` as if someone had stopped it outside the operator.
pub async fn a_lost_stop_answer_for_the_timeout_ends_timed_out(env: &Env) -> Result {
    let ns = env.namespace("lost-stop", Some(&env.own_token())).await?;
    let config = "cg-e2e-slowpoke-hang-loststop";
    env.create_run(
        &ns,
        "slowpoke",
        json!({"configId": config, "timeout": "4s"}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "slowpoke", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "TimedOut", phase(&run))?;
    let status = run.status.clone().unwrap_or_default();
    ensure(
        status.stop_reason == Some(amperity_operator::crd::StopReason::Timeout),
        format!("stop reason {:?}", status.stop_reason),
    )?;
    let id = status.workflow_id.clone();
    let created = runs_of(env, config).await;
    ensure(
        created.len() == 1 && id.as_ref() == created.first(),
        format!("follows {id:?}, Amperity has {created:?}"),
    )?;
    // Amperity did stop it (the 500 came after).
    let state = crate::scenarios::sim_state(env, id.as_deref().unwrap_or_default()).await;
    ensure(
        state == "canceled" || state == "stopping",
        format!("the simulator's run is {state}"),
    )
}

/// Issue 21, scenario 1: A, of the same workflow type and credential as B below,
/// sends a start answered 503 that creates nothing, and looks for the run it may
/// have made. Meanwhile B (deletionPolicy Orphan) starts a run, inside A's search
/// window (created after A's intent), and is deleted. Then every replica restarts
/// (the operator is SIGKILLed and started afresh: nothing of B is left in any
/// memory), and A's search goes on: B's run is its only candidate (in the window,
/// still running, of the same principal), and only the claims ledger says it was
/// B's. A must not adopt it: it waits for a person, and deleting A leaves B's
/// deliberately orphaned run running.
pub async fn an_orphaned_run_of_a_deleted_resource_is_never_adopted(env: &mut Env) -> Result {
    env.without_shared_operator("operator-after-orphan", |env| Box::pin(orphan_checks(env)))
        .await
}

async fn orphan_checks(env: &mut Env) -> Result {
    let ns = env
        .namespace("orphan-adopt", Some(&env.own_token()))
        .await?;
    // A ledger of the scenario's own, removed however the scenario ends.
    let claims = format!("claims-{ns}");
    let result = orphan_steps(env, &ns, &claims).await;
    let ledger: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let _ = ledger.delete(&claims, &Default::default()).await;
    result
}

async fn orphan_steps(env: &mut Env, ns: &str, claims: &str) -> Result {
    let (ns, claims) = (ns.to_string(), claims.to_string());
    // A's search looks for 75 s: long enough to outlive B, C and the restart.
    let settings = [
        ("WATCH_NAMESPACES", ns.clone()),
        ("LEADER_ELECTION", "false".into()),
        ("START_SETTLE_SECS", "75".into()),
        ("CLAIMS_CONFIGMAP", claims.clone()),
    ];
    let (mut first, _) = env.start_operator("operator-orphan-1", &settings).await?;
    let config = "cc-e2e-a-unavailablestart";
    env.create_run(&ns, "a", json!({"configId": config}))
        .await?;
    env.wait_for(&ns, "a", FINISH, "looking for its lost start's run", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.search_started_at.is_some())
    })
    .await?;
    let orphan = crate::stopping::running_hang(
        env,
        &ns,
        "b",
        json!({"configId": "cc-e2e-orphaned-hang", "deletionPolicy": "Orphan"}),
    )
    .await?;
    // C, the same, is deleted while no replica runs: its finalizer holds it.
    let unseen = crate::stopping::running_hang(
        env,
        &ns,
        "c",
        json!({"configId": "cc-e2e-orphaned-hang", "deletionPolicy": "Orphan"}),
    )
    .await?;
    env.runs(&ns)
        .delete("b", &kube::api::DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    crate::stopping::gone(env, &ns, "b").await?;
    // Recorded before B's finalizer went.
    in_ledger(env, &claims, &orphan, "B").await?;
    first.kill();
    env.runs(&ns)
        .delete("c", &kube::api::DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = env
        .runs(&ns)
        .get_opt("c")
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        held.as_ref()
            .is_some_and(|c| c.metadata.deletion_timestamp.is_some()),
        format!(
            "C (Orphan) went while no operator ran, so nothing recorded its run: {:?}",
            held.map(|c| c.metadata)
        ),
    )?;
    let searching = env.runs(&ns).get("a").await.map_err(|e| e.to_string())?;
    ensure(
        searching
            .status
            .as_ref()
            .is_some_and(|s| s.workflow_id.is_none())
            && condition(&searching, "Stalled").is_none_or(|c| c.0 != "True"),
        format!(
            "A is no longer looking before the restart: {:?}",
            searching.status
        ),
    )?;
    let (mut second, _) = env.start_operator("operator-orphan-2", &settings).await?;
    crate::stopping::gone(env, &ns, "c").await?;
    in_ledger(env, &claims, &unseen, "C").await?;
    let run = env
        .wait_for(&ns, "a", FINISH, "asking a person", |r| {
            finished(r)
                || r.status.as_ref().is_some_and(|s| s.workflow_id.is_some())
                || condition(r, "Stalled").is_some_and(|c| c.1 == "StartUnconfirmed")
        })
        .await?;
    let followed = run.status.as_ref().and_then(|s| s.workflow_id.clone());
    ensure(
        followed.is_none(),
        format!("A follows {followed:?} (B's was {orphan})"),
    )?;
    ensure(
        condition(&run, "Stalled").is_some_and(|c| c.1 == "StartUnconfirmed"),
        format!("A is {} without asking a person", phase(&run)),
    )?;
    // Ruled out as B's, not merely unjudged: the claims were complete (the ledger
    // was read after the restart) and B's run was no candidate.
    let stalled = condition(&run, "Stalled").map(|c| c.2).unwrap_or_default();
    ensure(
        stalled.contains("no run was found"),
        format!("A's search did not rule B's run out: {stalled}"),
    )?;
    ensure(
        runs_of(env, config).await.is_empty(),
        "A's starts created nothing",
    )?;
    env.runs(&ns)
        .delete("a", &kube::api::DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    crate::stopping::gone(env, &ns, "a").await?;
    second.kill();
    for (name, id) in [("B", &orphan), ("C", &unseen)] {
        let state = crate::scenarios::sim_state(env, id).await;
        ensure(
            state == "running",
            format!("{name}'s orphaned run is {state}"),
        )?;
    }
    Ok(())
}

/// Waits until the ledger ConfigMap `claims` names run `id` (resource `who`'s).
async fn in_ledger(env: &Env, claims: &str, id: &str, who: &str) -> Result {
    let ledger: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    crate::env::eventually(Duration::from_secs(30), || async {
        let text = ledger
            .get_opt(claims)
            .await
            .ok()
            .flatten()
            .and_then(|m| m.data)
            .and_then(|d| d.get("departed").cloned())
            .unwrap_or_default();
        text.lines()
            .any(|l| l.split_once(' ').is_some_and(|(_, i)| i == id))
            .then_some(())
            .ok_or(format!(
                "{who}'s run {id} is not in ConfigMap default/{claims}: {text:?}"
            ))
    })
    .await
}
