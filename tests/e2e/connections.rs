//! Connections on the real API server: a ClusterAmperityConnection whose Secret
//! lives in the platform team's namespace serves a run in a namespace it chooses
//! (which holds no Secret) to success, refuses one in a namespace it does not
//! choose without a request reaching Amperity, and picks up a rotated Secret.

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::crd::connection::ClusterAmperityConnection;

use crate::env::{Env, Result, condition, phase};
use crate::scenarios::{FINISH, ensure, finished};

fn ready(c: &ClusterAmperityConnection) -> Option<(String, String)> {
    let status = c.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((ready.status.clone(), ready.reason.clone()))
}

async fn wait_connection(
    env: &Env,
    name: &str,
    what: &str,
    done: impl Fn(&ClusterAmperityConnection) -> bool,
) -> Result<ClusterAmperityConnection> {
    let api: Api<ClusterAmperityConnection> = Api::all(env.client.clone());
    let deadline = std::time::Instant::now() + FINISH;
    loop {
        let c = api.get(name).await.map_err(|e| e.to_string())?;
        if done(&c) {
            return Ok(c);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("connection {name} never {what}: {:?}", c.status));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A run naming the connection, and nothing of its own.
async fn create_run(env: &Env, ns: &str, name: &str, connection: &str, config: &str) -> Result {
    let run: AmperityWorkflowRun = serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "connectionRef": {"kind": "ClusterAmperityConnection", "name": connection},
            "configId": config,
            "pollInterval": "5s",
        }
    }))
    .map_err(|e| e.to_string())?;
    env.runs(ns)
        .create(&PostParams::default(), &run)
        .await
        .map(|_| ())
        .map_err(|e| format!("creating {ns}/{name}: {e}"))
}

fn requests_for(stats: &Value, config: &str) -> usize {
    stats["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["config_id"] == config)
        .count()
}

pub async fn a_cluster_connection_serves_the_namespaces_it_chooses(env: &Env) -> Result {
    let tag = format!("{}", fastrand::u32(..) % 100_000);
    let token = env.own_token();
    let platform = env.namespace("platform", Some(&token)).await?;
    let chosen = env.namespace("team-chosen", None).await?;
    let other = env.namespace("team-other", None).await?;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces
        .patch(
            &chosen,
            &PatchParams::apply("e2e"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": chosen, "labels": {"e2e-connection": tag}}
            })),
        )
        .await
        .map_err(|e| format!("labelling {chosen}: {e}"))?;
    let name = format!("e2e-conn-{tag}");
    let connections: Api<ClusterAmperityConnection> = Api::all(env.client.clone());
    let connection: ClusterAmperityConnection = serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "ClusterAmperityConnection",
        "metadata": {"name": name},
        "spec": {
            "tenant": "socktown",
            "endpoint": env.sim_url,
            "tokenSecretRef": {"name": "amperity-api", "namespace": platform},
            "namespaceSelector": {"matchLabels": {"e2e-connection": tag}},
        }
    }))
    .map_err(|e| e.to_string())?;
    connections
        .create(&PostParams::default(), &connection)
        .await
        .map_err(|e| format!("creating {name}: {e}"))?;
    let result = checks(env, &name, &platform, (&chosen, &other), &tag, &token).await;
    let _ = connections.delete(&name, &Default::default()).await;
    result
}

async fn checks(
    env: &Env,
    name: &str,
    platform: &str,
    (chosen, other): (&str, &str),
    tag: &str,
    token: &str,
) -> Result {
    wait_connection(env, name, "became Ready", |c| {
        ready(c).is_some_and(|(s, _)| s == "True")
    })
    .await?;

    // Served: the chosen namespace holds no Secret, the connection's is used.
    let served = format!("cg-e2e-conn-{tag}");
    create_run(env, chosen, "served", name, &served).await?;
    let run = env
        .wait_for(chosen, "served", FINISH, "finished", finished)
        .await?;
    ensure(
        phase(&run) == "Succeeded",
        format!("served: {}", phase(&run)),
    )?;

    // Refused: ends at once, and Amperity never hears of it.
    let refused = format!("cg-e2e-conn-refused-{tag}");
    create_run(env, other, "refused", name, &refused).await?;
    let run = env
        .wait_for(other, "refused", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Failed", format!("refused: {}", phase(&run)))?;
    let (_, reason, message) = condition(&run, "Stalled").ok_or("no Stalled condition")?;
    ensure(
        reason == "ConnectionNotAllowed" && message.contains(other),
        format!("refused: {reason}: {message}"),
    )?;
    let stats = env.sim_stats().await;
    ensure(
        requests_for(&stats, &served) >= 1 && requests_for(&stats, &refused) == 0,
        format!(
            "the simulator saw {} runs of the served config and {} of the refused one",
            requests_for(&stats, &served),
            requests_for(&stats, &refused)
        ),
    )?;

    // Rotated: a bad token is noticed without a restart, and a good one again.
    env.put_secret(platform, "expired-token").await?;
    wait_connection(env, name, "noticed the rotated Secret", |c| {
        ready(c).is_some_and(|(s, r)| s == "False" && r == "AuthFailed")
    })
    .await?;
    env.put_secret(platform, token).await?;
    let c = wait_connection(env, name, "became Ready again", |c| {
        ready(c).is_some_and(|(s, _)| s == "True")
    })
    .await?;
    ensure(
        !serde_json::to_string(&c).unwrap().contains("expired-token"),
        "the token never appears in the connection's status",
    )
}
