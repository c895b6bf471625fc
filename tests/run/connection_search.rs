//! A run through a connection whose start's answer was lost, reconciled by a
//! process that learned nothing yet (just restarted): the search knows the
//! principal from the connection's status, for the version of the Secret it
//! holds for, and adopts the one run that principal started. With the Secret
//! rotated since, the old principal is not trusted and a person is asked.

use std::sync::Arc;
use std::time::Duration;

use amperity_operator::amperity::wire::RunRequest;
use amperity_operator::amperity::{
    AmperityClient, ClientConfig, Credentials, SecretString, Target,
};
use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::metrics::Metrics;
use amperity_operator::run::controller::{Context, FINALIZER, reconcile};
use amperity_operator::run::decide::Settings;
use amperity_operator::run::driver::Defaults;
use amperity_operator::sim::{self, SimConfig, SimHandle};
use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::controller::{ApiServer, LEDGER, RUNS, TOKEN, cached, loopback, not_found};

const CONNECTION: &str =
    "/apis/amperity.dev/v1alpha1/namespaces/marketing/amperityconnections/tenant-a";
const SECRET: &str = "/api/v1/namespaces/marketing/secrets/acme-api";
const ALL_RUNS: &str = "/apis/amperity.dev/v1alpha1/amperityworkflowruns";

/// The connection as the API server holds it: Ready, naming the principal the
/// simulator gives `TOKEN` ("api-key|sim-1"), known for Secret version "41".
fn connection(sim: &SimHandle) -> Value {
    json!({
        "apiVersion": "amperity.dev/v1alpha1",
        "kind": "AmperityConnection",
        "metadata": {"name": "tenant-a", "namespace": "marketing", "generation": 1},
        "spec": {"tenant": "socktown", "endpoint": sim.base_url(), "tokenSecretRef": {"name": "acme-api"}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Verified",
                            "message": "Amperity accepted the credentials", "observedGeneration": 1,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "principalId": "api-key|sim-1",
            "principalName": "API key 1",
            "principalSecretVersion": "41",
        },
    })
}

/// The Secret, with a token and no `principal` key, at `version`.
fn secret(version: &str) -> Value {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("acme-api".into()),
            namespace: Some("marketing".into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        },
        data: Some([("token".to_string(), ByteString(TOKEN.as_bytes().to_vec()))].into()),
        ..Secret::default()
    };
    serde_json::to_value(secret).unwrap()
}

/// A run naming the connection, its intent to start recorded at `intent` and the
/// answer never received.
fn lost_start(intent: Timestamp) -> AmperityWorkflowRun {
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1",
        "kind": "AmperityWorkflowRun",
        "metadata": {"name": "nightly", "namespace": "marketing", "uid": "uid-1", "generation": 1,
                     "resourceVersion": "10", "finalizers": [FINALIZER]},
        "spec": {"connectionRef": {"name": "tenant-a"}, "configId": "cg-nightly", "runMode": "source"},
        "status": {"phase": "Starting", "startedAt": intent.to_string(),
                   "firstAttemptAt": intent.to_string(), "observedGeneration": 1},
    }))
    .unwrap()
}

/// Reconciles `run` once with a context that learned nothing (as after a
/// restart), answering every Kubernetes call; returns the statuses written.
async fn reconcile_fresh(sim: &SimHandle, run: &AmperityWorkflowRun, version: &str) -> Vec<Value> {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut api = ApiServer { handle };
    let amperity = AmperityClient::new(ClientConfig {
        allow: loopback(),
        ..ClientConfig::default()
    })
    .unwrap();
    let ctx = Arc::new(
        Context::new(
            Client::new(service, "default"),
            amperity,
            Defaults::default(),
            Settings {
                start_settle: Duration::from_secs(60),
                ..Settings::default()
            },
            Arc::new(Metrics::default()),
        )
        .serving_connections(true),
    );
    let mut task = tokio::spawn(reconcile(cached(run), ctx.clone()));
    let mut written = Vec::new();
    let mut current = run.clone();
    loop {
        let call = tokio::select! {
            done = &mut task => {
                done.unwrap().unwrap();
                return written;
            }
            call = api.next() => call,
        };
        let path = call.path.clone();
        match (&call.method, path.as_str()) {
            (&Method::GET, p) if p == format!("{RUNS}/nightly") => {
                call.reply(StatusCode::OK, serde_json::to_value(&current).unwrap())
            }
            (&Method::GET, CONNECTION) => call.reply(StatusCode::OK, connection(sim)),
            (&Method::GET, LEDGER) => call.reply(StatusCode::NOT_FOUND, not_found()),
            (&Method::GET, SECRET) => call.reply(StatusCode::OK, secret(version)),
            (&Method::GET, ALL_RUNS) => call.reply(
                StatusCode::OK,
                json!({"apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRunList",
                       "metadata": {}, "items": [serde_json::to_value(&current).unwrap()]}),
            ),
            (&Method::PATCH, p) if p == format!("{RUNS}/nightly/status") => {
                let status = call.body["status"].clone();
                current.status = Some(serde_json::from_value(status.clone()).unwrap());
                written.push(status);
                call.reply(StatusCode::OK, serde_json::to_value(&current).unwrap());
            }
            (&Method::POST, p) if p.ends_with("/events") => {
                call.reply(StatusCode::CREATED, json!({}))
            }
            (method, p) => panic!("unexpected call {method} {p}"),
        }
    }
}

/// Starts the run the lost answer would have named, as the connection's
/// credentials: returns its id.
async fn start_in_amperity(sim: &SimHandle) -> String {
    let client = AmperityClient::new(ClientConfig {
        allow: loopback(),
        ..ClientConfig::default()
    })
    .unwrap();
    let target = Target::new(
        Some(&sim.base_url()),
        "",
        "socktown",
        "2024-04-01",
        &loopback(),
    )
    .unwrap();
    let request = RunRequest {
        config_id: "cg-nightly".into(),
        run_mode: Some("source".into()),
        range_from: None,
        range_to: None,
    };
    let credentials = Credentials::Token(SecretString::new(TOKEN));
    let reply = client
        .start(&target, &credentials, &request, None)
        .await
        .unwrap();
    reply.body.id
}

fn adopted(written: &[Value]) -> Option<&str> {
    written.iter().rev().find_map(|s| s["workflowId"].as_str())
}

#[tokio::test]
async fn a_lost_start_through_a_connection_knows_its_principal_after_a_restart() {
    // A slow simulator: the run found is still running when adopted.
    let sim = sim::spawn(SimConfig {
        speed: 0.01,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let intent = Timestamp::now();
    let id = start_in_amperity(&sim).await;
    let run = lost_start(intent);
    let written = reconcile_fresh(&sim, &run, "41").await;
    assert_eq!(adopted(&written), Some(id.as_str()), "{written:#?}");
    let last = written.last().unwrap();
    assert_eq!(last["phase"], "Running", "{last:#}");
    assert_eq!(sim.stats().starts, 1, "nothing was started again");
}

#[tokio::test]
async fn a_rotated_secret_does_not_inherit_the_old_principal() {
    let sim = sim::spawn(SimConfig {
        speed: 0.01,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let intent = Timestamp::now();
    start_in_amperity(&sim).await;
    let run = lost_start(intent);
    // The Secret is at version 42 now; the connection knew the principal for 41.
    let written = reconcile_fresh(&sim, &run, "42").await;
    assert_eq!(adopted(&written), None, "{written:#?}");
    let last = written.last().expect("a status saying it is looking");
    assert_eq!(last["phase"], "Starting", "{last:#}");
    assert_eq!(sim.stats().starts, 1, "nothing was started again");
}
