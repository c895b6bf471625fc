//! The credentials a run's Secret holds: a missing Secret stalls the run until it
//! exists, a rotated token is used without a restart, OAuth client credentials are
//! exchanged for tokens; none of them appears in logs, status or Events.

use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::env::{self, Env, Result, condition, phase, wait_events};
use crate::scenarios::{EVENTS, FINISH, ensure, finished};

pub async fn a_missing_secret_stalls_until_it_exists(env: &Env) -> Result {
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
    env.put_secret(&ns, &env.own_token()).await?;
    let run = env
        .wait_for(&ns, "waiting", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))
}

pub async fn a_rotated_token_is_used_without_a_restart(env: &Env) -> Result {
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
    wait_events(env, &ns, &["AuthFailed"], EVENTS).await?;
    let rotated = env.own_token();
    env.put_secret(&ns, &rotated).await?;
    let run = env
        .wait_for(&ns, "rotating", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))?;
    let log = env.operator.as_ref().unwrap().log_text();
    ensure(
        !log.contains("expired-token") && !log.contains(&rotated),
        "tokens never appear in logs",
    )
}

pub async fn oauth_client_credentials_from_the_secret(env: &Env) -> Result {
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
    let (_, events_json) = env
        .kubectl(&["-n", &ns, "get", "events.events.k8s.io", "-o", "json"])
        .await;
    let status = serde_json::to_string(&run.status).unwrap();
    for (what, text) in [("log", &log), ("events", &events_json), ("status", &status)] {
        for secret in [env::CLIENT_SECRET, env::TOKEN_PREFIX, "simjwt."] {
            ensure(
                !text.contains(secret),
                format!("{secret} leaked into the {what}"),
            )?;
        }
    }
    Ok(())
}
