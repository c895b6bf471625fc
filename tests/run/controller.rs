//! The reconciler against a mocked Kubernetes API server (tower-test), with the
//! project's Amperity simulator over real HTTP: each Kubernetes call is asserted in
//! order, and the simulator's counters say when the start was sent.

use std::sync::Arc;
use std::time::Duration;

use amperity_operator::amperity::{AllowList, AmperityClient, ClientConfig, Target};
use amperity_operator::cluster::FIELD_MANAGER;
use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::metrics::Metrics;
use amperity_operator::run::controller::{CachedRun, Context, Error, FINALIZER, reconcile};
use amperity_operator::run::decide::Settings;
use amperity_operator::run::driver::Defaults;
use amperity_operator::sim::{self, SimConfig, SimHandle};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::client::Body;
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

pub(super) const TOKEN: &str = "sim-token";

pub(super) struct ApiServer {
    pub(super) handle: Handle<Request<Body>, Response<Body>>,
}

pub(super) struct Call {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) body: Value,
    send: SendResponse<Response<Body>>,
}

impl Call {
    pub(super) fn reply(self, status: StatusCode, body: Value) {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(bytes))
                .unwrap(),
        );
    }
}

impl ApiServer {
    /// The next request the reconciler makes; fails the test if it makes none.
    pub(super) async fn next(&mut self) -> Call {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
                .await
                .expect("the reconciler made no further Kubernetes call")
                .expect("the client was dropped");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        Call {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            },
            send,
        }
    }

    pub(super) async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected call order"
        );
        call
    }

    /// Asserts the reconciler makes no further Kubernetes call.
    async fn expect_quiet(&mut self) {
        let next =
            tokio::time::timeout(Duration::from_millis(300), self.handle.next_request()).await;
        if let Ok(Some((req, _))) = next {
            panic!("unexpected call {} {}", req.method(), req.uri());
        }
    }
}

pub(super) const RUNS: &str =
    "/apis/amperity.dev/v1alpha1/namespaces/marketing/amperityworkflowruns";
const SECRET: &str = "/api/v1/namespaces/marketing/secrets/amperity-api";
/// The claims ledger, where a `Context` that was not told otherwise keeps it.
pub(super) const LEDGER: &str = "/api/v1/namespaces/default/configmaps/amperity-operator-claims";
const LEDGERS: &str = "/api/v1/namespaces/default/configmaps";

/// The API server's answer for an object that does not exist.
pub(super) fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": "not found"})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
           "code": 409, "message": "the object has been modified"})
}

/// The claims ledger ConfigMap at `version`, holding `text`.
fn ledger(version: &str, text: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "amperity-operator-claims", "namespace": "default",
                        "resourceVersion": version},
           "data": {"departed": text}})
}
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/marketing/events";

fn resource(sim: &SimHandle, extra: Value, status: Option<Value>) -> AmperityWorkflowRun {
    let mut spec = json!({
        "tenant": "socktown",
        "endpoint": sim.base_url(),
        "tokenSecretRef": {"name": "amperity-api"},
        "configId": "cg-nightly",
        "runMode": "source",
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut obj = json!({
        "apiVersion": "amperity.dev/v1alpha1",
        "kind": "AmperityWorkflowRun",
        "metadata": {"name": "nightly", "namespace": "marketing", "uid": "uid-1", "generation": 1,
                     "resourceVersion": "10", "finalizers": [FINALIZER]},
        "spec": spec,
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    serde_json::from_value(obj).unwrap()
}

fn secret(token: &str) -> Value {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("amperity-api".into()),
            namespace: Some("marketing".into()),
            ..ObjectMeta::default()
        },
        data: Some([("token".to_string(), ByteString(token.as_bytes().to_vec()))].into()),
        ..Secret::default()
    };
    serde_json::to_value(secret).unwrap()
}

async fn setup(sim_config: SimConfig) -> (Arc<Context>, ApiServer, SimHandle) {
    setup_with(sim_config, ClientConfig::default()).await
}

/// The test's allow-list: the simulators on loopback.
pub(super) fn loopback() -> AllowList {
    AllowList::parse(&["http://127.0.0.1:*"]).unwrap()
}

async fn setup_with(
    sim_config: SimConfig,
    client_config: ClientConfig,
) -> (Arc<Context>, ApiServer, SimHandle) {
    let sim = sim::spawn(sim_config).await.unwrap();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let amperity = AmperityClient::new(ClientConfig {
        allow: loopback(),
        ..client_config
    })
    .unwrap();
    let ctx = Arc::new(Context::new(
        client,
        amperity,
        Defaults::default(),
        Settings::default(),
        Arc::new(Metrics::default()),
    ));
    (ctx, ApiServer { handle }, sim)
}

fn fast_sim() -> SimConfig {
    SimConfig {
        speed: 20.0,
        ..SimConfig::default()
    }
}

fn applied_status(call: &Call) -> &Value {
    assert!(
        call.query
            .contains(&format!("fieldManager={FIELD_MANAGER}")),
        "{}",
        call.query
    );
    assert!(call.query.contains("force=true"), "{}", call.query);
    &call.body["status"]
}

/// What the controller's watch cache holds of a run: its metadata.
pub(super) fn cached(run: &AmperityWorkflowRun) -> Arc<CachedRun> {
    Arc::new(run.metadata.clone().into_response_partial())
}

/// Starts a reconcile of `run` and answers its first call: reading the run itself.
async fn reconcile_run(
    ctx: &Arc<Context>,
    api: &mut ApiServer,
    run: &AmperityWorkflowRun,
) -> JoinHandle<Result<Action, Error>> {
    let task = tokio::spawn(reconcile(cached(run), ctx.clone()));
    api.expect(Method::GET, &format!("{RUNS}/nightly"))
        .await
        .reply(StatusCode::OK, serde_json::to_value(run).unwrap());
    task
}

#[tokio::test]
async fn a_start_records_intent_before_the_post_and_the_id_right_after() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = resource(&sim, json!({}), None);
    let task = reconcile_run(&ctx, &mut api, &run).await;

    api.expect(Method::GET, SECRET)
        .await
        .reply(StatusCode::OK, secret(TOKEN));

    let intent = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let status = applied_status(&intent).clone();
    assert_eq!(status["phase"], "Starting");
    assert!(status["startedAt"].is_string());
    assert!(status.get("workflowId").is_none());
    assert_eq!(
        sim.stats().starts,
        0,
        "the POST must wait for the intent to be stored"
    );
    let mut stored = serde_json::to_value(&run).unwrap();
    stored["status"] = status;
    intent.reply(StatusCode::OK, stored.clone());

    let recorded = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    assert_eq!(sim.stats().starts, 1, "exactly one start");
    let status = applied_status(&recorded).clone();
    assert_eq!(status["phase"], "Running");
    let id = status["workflowId"]
        .as_str()
        .expect("the id is written right after the POST")
        .to_string();
    assert!(id.starts_with("wf-"));
    for kind in ["Succeeded", "Finished", "Ready", "Reconciling", "Stalled"] {
        let c = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap();
        assert_eq!(c["observedGeneration"], 1, "{kind}");
    }
    stored["status"] = status;
    recorded.reply(StatusCode::OK, stored.clone());

    let event = api.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "Started");
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["regarding"]["name"], "nightly");
    let body = event.body.clone();
    event.reply(StatusCode::CREATED, body);

    let action = task.await.unwrap().unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5))
    );
    api.expect_quiet().await;
    assert_eq!(sim.stats().starts, 1);

    // Reconciled again from a watch event older than those writes: the reconcile
    // reads the resource itself, so the recorded start is not taken for one never
    // made, even by an operator that forgot everything (a restart).
    let ctx = fresh(&ctx);
    let task = tokio::spawn(reconcile(cached(&run), ctx.clone()));
    api.expect(Method::GET, &format!("{RUNS}/nightly"))
        .await
        .reply(StatusCode::OK, stored.clone());
    // It polls the run it started (nothing was polled yet), never starts another.
    api.expect(Method::GET, SECRET)
        .await
        .reply(StatusCode::OK, secret(TOKEN));
    while !task.is_finished() {
        let Ok(Some((request, send))) =
            tokio::time::timeout(Duration::from_millis(300), api.handle.next_request()).await
        else {
            continue;
        };
        let (parts, body) = request.into_parts();
        if parts.uri.path().ends_with("/status") {
            let body: Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["status"]["workflowId"], id.as_str());
        }
        let reply = serde_json::to_vec(&stored).unwrap();
        send.send_response(Response::builder().body(Body::from(reply)).unwrap());
    }
    task.await.unwrap().unwrap();
    assert_eq!(sim.stats().starts, 1, "no second start");
}

#[tokio::test]
async fn a_run_deleted_since_the_cache_saw_it_is_left_alone() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = resource(&sim, json!({}), None);
    let task = tokio::spawn(reconcile(cached(&run), ctx.clone()));
    api.expect(Method::GET, &format!("{RUNS}/nightly")).await.reply(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": "amperityworkflowruns.amperity.dev \"nightly\" not found"}),
    );
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    api.expect_quiet().await;
    assert_eq!(
        sim.stats().requests,
        0,
        "no Amperity call for a deleted run"
    );
}

/// A context sharing the mocked API server but with no per-resource memory, as
/// after a restart: the next reconcile polls at once.
fn fresh(ctx: &Context) -> Arc<Context> {
    Arc::new(Context::new(
        ctx.client.clone(),
        ctx.amperity.clone(),
        Defaults::default(),
        Settings::default(),
        Arc::new(Metrics::default()),
    ))
}

/// Reconciles once, answering the calls a poll makes; returns the status written, if any.
async fn poll_once(
    ctx: Arc<Context>,
    api: &mut ApiServer,
    run: &AmperityWorkflowRun,
) -> Option<Value> {
    let task = reconcile_run(&ctx, api, run).await;
    api.expect(Method::GET, SECRET)
        .await
        .reply(StatusCode::OK, secret(TOKEN));
    let next = tokio::time::timeout(Duration::from_millis(500), api.handle.next_request()).await;
    let written = match next {
        Ok(Some((request, send))) => {
            let (parts, body) = request.into_parts();
            assert_eq!(
                parts.method,
                Method::PATCH,
                "only a status write may follow a poll"
            );
            assert_eq!(parts.uri.path(), format!("{RUNS}/nightly/status"));
            let body: Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
            let bytes = serde_json::to_vec(&serde_json::to_value(run).unwrap()).unwrap();
            send.send_response(Response::builder().body(Body::from(bytes)).unwrap());
            Some(body["status"].clone())
        }
        _ => None,
    };
    task.await.unwrap().unwrap();
    written
}

#[tokio::test]
async fn a_poll_that_changes_nothing_writes_nothing() {
    // A slow simulator: the run stays scheduled for the whole test.
    let (ctx, mut api, sim) = setup(SimConfig {
        speed: 0.001,
        ..SimConfig::default()
    })
    .await;
    let run = resource(&sim, json!({}), None);
    let task = reconcile_run(&ctx, &mut api, &run).await;
    api.expect(Method::GET, SECRET)
        .await
        .reply(StatusCode::OK, secret(TOKEN));
    api.expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await
        .reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    let recorded = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let started = applied_status(&recorded).clone();
    recorded.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    api.expect(Method::POST, EVENTS)
        .await
        .reply(StatusCode::CREATED, json!({}));
    task.await.unwrap().unwrap();

    // The start's answer already carried the whole run: a poll that finds it
    // unchanged costs one Amperity GET and no write, however often it happens.
    let settled = resource(&sim, json!({}), Some(started));
    for _ in 0..3 {
        let before = sim.stats().requests;
        assert_eq!(
            poll_once(fresh(&ctx), &mut api, &settled).await,
            None,
            "an unchanged poll must not write"
        );
        assert_eq!(sim.stats().requests, before + 1, "one GET per poll");
    }
    api.expect_quiet().await;
}

#[tokio::test]
async fn spec_workflow_id_is_followed_without_a_post() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = resource(&sim, json!({"workflowId": "wf-20250418-12345-AbCdE"}), None);
    let task = reconcile_run(&ctx, &mut api, &run).await;
    // The adoption is recorded first; the Secret is read for the poll that follows.
    let adopted = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let status = applied_status(&adopted).clone();
    assert_eq!(status["workflowId"], "wf-20250418-12345-AbCdE");
    assert_eq!(status["phase"], "Running");
    adopted.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    // Events and the poll's answer (the simulator has no such run: 404 -> Failed).
    loop {
        let call = api.next().await;
        match (call.method.clone(), call.path.as_str()) {
            (Method::POST, EVENTS) => call.reply(StatusCode::CREATED, json!({})),
            (Method::GET, SECRET) => call.reply(StatusCode::OK, secret(TOKEN)),
            (Method::PATCH, p) if p.ends_with("/status") => {
                assert_eq!(applied_status(&call)["phase"], "Failed");
                let reason = applied_status(&call)["conditions"][0]["reason"].clone();
                assert_eq!(reason, "WorkflowNotFound");
                call.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
            }
            (Method::PATCH, p) if p.ends_with("/nightly") => {
                assert_eq!(
                    call.body["metadata"]["finalizers"],
                    json!([]),
                    "a finished run drops the finalizer"
                );
                call.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
                break;
            }
            (m, p) => panic!("unexpected call {m} {p}"),
        }
    }
    task.await.unwrap().unwrap();
    assert_eq!(sim.stats().starts, 0, "no POST when spec.workflowId is set");
}

/// A budget of 2/s whose next eight turns other polls hold: a poll reserved now
/// goes about 4.1 s out (turns are 0.515 s apart at 2 per 1.03 s). Returns a run adopting a seeded (long) simulator run.
async fn crowded_tenant() -> (Arc<Context>, ApiServer, SimHandle, AmperityWorkflowRun) {
    let (ctx, api, sim) = setup_with(
        SimConfig {
            speed: 0.001,
            record_requests: true,
            ..SimConfig::default()
        },
        ClientConfig {
            rate_limit_per_sec: 2,
            ..ClientConfig::default()
        },
    )
    .await;
    let target = Target::new(
        Some(&sim.base_url()),
        "",
        "socktown",
        "2024-04-01",
        &AllowList::parse(&[sim.base_url()]).unwrap(),
    )
    .unwrap();
    for _ in 0..8 {
        // In the run's namespace: other namespaces' turns would alternate with its.
        ctx.amperity.reserve_turn(&target, "marketing");
    }
    let id = sim.seed_runs("cg-nightly", 1).remove(0);
    let run = resource(&sim, json!({"workflowId": id}), None);
    (ctx, api, sim, run)
}

#[tokio::test]
async fn a_poll_whose_turn_is_far_off_lets_go_of_the_reconcile_and_keeps_its_turn() {
    let (ctx, mut api, sim, run) = crowded_tenant().await;
    let id = run.spec.workflow_id.clone().unwrap();

    // Adopting records the status at once; the poll waits for its turn without a
    // reconcile in flight (no Secret read, no Amperity request yet).
    let started = std::time::Instant::now();
    let task = reconcile_run(&ctx, &mut api, &run).await;
    let adopted = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let status = applied_status(&adopted).clone();
    assert_eq!(status["phase"], "Running");
    adopted.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    api.expect(Method::POST, EVENTS)
        .await
        .reply(StatusCode::CREATED, json!({}));
    let requeue = tokio::time::timeout(Duration::from_millis(500), task)
        .await
        .expect("the reconcile returns instead of waiting for its turn")
        .unwrap()
        .unwrap();
    // Its turn is the ninth: eight turns of a 2/s budget out (about 4.1 s); it
    // comes back a second before, to wait the rest in place.
    let after = requeue_secs(&requeue);
    assert!((2.7..3.2).contains(&after), "{requeue:?}");
    api.expect_quiet().await;
    assert_eq!(sim.stats().requests, 0);

    // Back at its turn, the same reservation is used and the poll goes at once (a
    // new reservation would come after the nine handed out: half a second later).
    tokio::time::sleep(Duration::from_millis(4_120).saturating_sub(started.elapsed())).await;
    let settled = resource(&sim, json!({"workflowId": id}), Some(status));
    let back = sim.clock();
    poll_once(ctx.clone(), &mut api, &settled).await;
    let log = sim.request_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].at - back < 0.3,
        "polled {:.2}s after coming back",
        log[0].at - back
    );
}

#[tokio::test]
async fn a_missing_secret_stalls_with_a_message_naming_it() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = resource(&sim, json!({}), None);
    let task = reconcile_run(&ctx, &mut api, &run).await;
    api.expect(Method::GET, SECRET).await.reply(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": "secrets \"amperity-api\" not found"}),
    );
    let stalled = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let status = applied_status(&stalled).clone();
    assert_eq!(status["phase"], "Pending");
    let cond = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .unwrap();
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["reason"], "SecretNotFound");
    let msg = cond["message"].as_str().unwrap();
    assert!(
        msg.contains("marketing/amperity-api") && msg.contains("\"token\""),
        "{msg}"
    );
    stalled.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    let event = api.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["type"], "Warning");
    event.reply(StatusCode::CREATED, json!({}));
    let action = task.await.unwrap().unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(30))
    );
    assert_eq!(sim.stats().starts, 0);
}

/// Found by the model test: a write that changes nothing about the start (here a
/// `Pending` that now says the Secret is missing, over a `Pending` that said the
/// start was deferred) still goes only over the version it was decided from. Were
/// it unconditional, a replica that read a stale version would erase a newer
/// intent to start, and the next reconcile would start a second run.
#[tokio::test]
async fn every_status_write_goes_over_the_version_it_was_decided_from() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let deferred = json!({"phase": "Pending", "firstAttemptAt": "2026-03-01T09:00:00Z",
        "conditions": [{"type": "Ready", "status": "False", "reason": "StartDeferred",
            "message": "the start did not reach Amperity (connection refused); trying again",
            "lastTransitionTime": "2026-03-01T09:00:00Z"}]});
    let run = resource(&sim, json!({}), Some(deferred));
    let task = reconcile_run(&ctx, &mut api, &run).await;
    api.expect(Method::GET, SECRET).await.reply(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": "secrets \"amperity-api\" not found"}),
    );
    let stalled = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    assert_eq!(applied_status(&stalled)["phase"], "Pending");
    assert_eq!(
        stalled.body["metadata"]["resourceVersion"], "10",
        "the write carries the version it was decided from"
    );
    // Another writer got there first: refused, and nothing is sent.
    stalled.reply(
        StatusCode::CONFLICT,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
               "message": "the object has been modified"}),
    );
    assert!(task.await.unwrap().is_err());
    assert_eq!(sim.stats().starts, 0);
}

/// Item 3 of issue 21: a replica that leads again does not take the claims it
/// gathered in an earlier term as complete. Its lost start's search finds one run
/// of its principal; before judging it, the replica lists every resource again,
/// and finds that another resource (recorded by the leader in between) follows
/// that run: it is not adopted. Were the earlier term's relist taken as complete,
/// there would be no list, and the run would be adopted.
#[tokio::test]
async fn a_re_elected_replica_relists_before_its_claims_are_complete() {
    let (ctx, mut api, sim) = setup(SimConfig::default()).await;
    // Warm in the term before, then leading again.
    ctx.tracking.set_warm();
    ctx.tracking.begin_term();
    let id = sim.seed_runs("cg-nightly", 1).remove(0);
    // The relist, in this term: the other leader's resource follows the run.
    let mut other = serde_json::to_value(resource(
        &sim,
        json!({}),
        Some(json!({"phase": "Running", "workflowId": id})),
    ))
    .unwrap();
    other["metadata"]["name"] = json!("weekly");
    other["metadata"]["uid"] = json!("uid-2");
    let (task, stored) = a_lost_start_until_its_relist(&ctx, &mut api, &sim, vec![other]).await;
    // And the runs of resources gone before this term: none.
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::NOT_FOUND, not_found());
    the_search_adopts_nothing(&mut api, stored, task).await;
    assert!(
        ctx.tracking.is_warm(),
        "warm for this term after its relist"
    );
    assert_eq!(sim.stats().starts, 0);
}

/// The reconcile of a run whose start's outcome is unknown (issue 21), answered up
/// to its relist of every run, which `others` answers: the search is recorded, the
/// Secret names the principal. Returns the reconcile and the stored resource.
async fn a_lost_start_until_its_relist(
    ctx: &Arc<Context>,
    api: &mut ApiServer,
    sim: &SimHandle,
    others: Vec<Value>,
) -> (JoinHandle<Result<Action, Error>>, Value) {
    let intent = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2);
    let lost = json!({"phase": "Starting", "startedAt": intent.to_string(),
        "firstAttemptAt": intent.to_string(),
        "conditions": [{"type": "Ready", "status": "False", "reason": "StartOutcomeUnknown",
            "message": "the start request's outcome is unknown; looking for the run before anything else",
            "lastTransitionTime": intent.to_string()}]});
    let run = resource(sim, json!({}), Some(lost));
    let task = reconcile_run(ctx, api, &run).await;
    // What it decided (to search) is recorded first.
    let searching = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let mut stored = serde_json::to_value(&run).unwrap();
    stored["status"] = applied_status(&searching).clone();
    searching.reply(StatusCode::OK, stored.clone());
    let mut with_principal = secret(TOKEN);
    with_principal["data"]["principal"] = json!("c2VlZGVk"); // "seeded"
    api.expect(Method::GET, SECRET)
        .await
        .reply(StatusCode::OK, with_principal);
    api.expect(
        Method::GET,
        "/apis/amperity.dev/v1alpha1/amperityworkflowruns",
    )
    .await
    .reply(
        StatusCode::OK,
        json!({"apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRunList",
                   "metadata": {"resourceVersion": "20"}, "items": others}),
    );
    (task, stored)
}

/// The lost start's search ends as written: still starting, no run adopted.
async fn the_search_adopts_nothing(
    api: &mut ApiServer,
    mut stored: Value,
    task: JoinHandle<Result<Action, Error>>,
) {
    let written = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let status = applied_status(&written).clone();
    assert_eq!(status["phase"], "Starting", "{status}");
    assert!(status.get("workflowId").is_none(), "{status}");
    stored["status"] = status;
    written.reply(StatusCode::OK, stored);
    task.await.unwrap().unwrap();
}

/// The resource as the API server answers the finalizer's patch: with it, at a new version.
fn with_finalizer(run: &AmperityWorkflowRun, version: &str) -> Value {
    let mut answer = run.clone();
    answer.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    answer.metadata.resource_version = Some(version.to_string());
    serde_json::to_value(answer).unwrap()
}

#[tokio::test]
async fn a_new_resource_gets_the_finalizer_first() {
    gets_the_finalizer_first(json!({})).await;
}

/// Issue 21: an orphaning resource too, so that its runs are written to the claims
/// ledger before it goes, even when it is deleted while no replica runs.
#[tokio::test]
async fn a_new_orphaning_resource_gets_the_finalizer_first() {
    gets_the_finalizer_first(json!({"deletionPolicy": "Orphan"})).await;
}

async fn gets_the_finalizer_first(spec: Value) {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let mut run = resource(&sim, spec, None);
    run.metadata.finalizers = None;
    let task = reconcile_run(&ctx, &mut api, &run).await;
    let fin = api.expect(Method::PATCH, &format!("{RUNS}/nightly")).await;
    assert!(
        fin.query
            .contains("fieldManager=amperity-operator-finalizer"),
        "{}",
        fin.query
    );
    assert_eq!(fin.body["metadata"]["finalizers"], json!([FINALIZER]));
    fin.reply(StatusCode::OK, with_finalizer(&run, "11"));
    api.expect(Method::GET, SECRET)
        .await
        .reply(StatusCode::OK, secret(TOKEN));
    let intent = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    // Written over the version the finalizer's answer carried, not the one read
    // before it (which the API server would refuse as a conflict).
    assert_eq!(intent.body["metadata"]["resourceVersion"], "11");
    intent.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    let recorded = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    recorded.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    api.expect(Method::POST, EVENTS)
        .await
        .reply(StatusCode::CREATED, json!({}));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failed_status_write_keeps_the_runs_place_in_the_queue() {
    let (ctx, mut api, _sim, run) = crowded_tenant().await;
    let task = reconcile_run(&ctx, &mut api, &run).await;
    api.expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await
        .reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd timeout"}),
        );
    let failed = task.await.unwrap();
    assert!(matches!(failed, Err(Error::Kube { .. })), "{failed:?}");

    // The retry finds the turn reserved before the failure (about 4.1 s out, so
    // it comes back at 3.1 s); a new one would come after it, at the back of the
    // queue (4.6 s and more).
    let task = reconcile_run(&ctx, &mut api, &run).await;
    api.expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await
        .reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    api.expect(Method::POST, EVENTS)
        .await
        .reply(StatusCode::CREATED, json!({}));
    let requeue = task.await.unwrap().unwrap();
    let after = requeue_secs(&requeue);
    assert!((2.7..3.2).contains(&after), "{requeue:?}");
}

/// When a reconcile asked to come back, in seconds (kube's `Action` shows it only
/// in its `Debug` form).
fn requeue_secs(action: &kube::runtime::controller::Action) -> f64 {
    let shown = format!("{action:?}");
    shown
        .split_once("Some(")
        .and_then(|(_, rest)| rest.split_once("s)"))
        .and_then(|(secs, _)| secs.parse().ok())
        .unwrap_or_else(|| panic!("no requeue in {shown}"))
}

#[tokio::test]
async fn the_intent_is_written_only_over_the_version_read() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = resource(&sim, json!({}), None);
    let task = reconcile_run(&ctx, &mut api, &run).await;
    api.expect(Method::GET, SECRET)
        .await
        .reply(StatusCode::OK, secret(TOKEN));
    let intent = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    assert_eq!(applied_status(&intent)["phase"], "Starting");
    assert_eq!(
        intent.body["metadata"]["resourceVersion"], "10",
        "the intent carries the version it was decided on"
    );
    // Another replica wrote first: the API server refuses, and nothing is POSTed.
    intent.reply(
        StatusCode::CONFLICT,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
               "message": "the object has been modified"}),
    );
    let result = task.await.unwrap();
    assert!(
        matches!(
            result,
            Err(Error::Kube {
                what: "recording the intent to start",
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(sim.stats().starts, 0);
    api.expect_quiet().await;
}

#[tokio::test]
async fn a_resource_that_finishes_in_its_first_reconcile_keeps_no_finalizer() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let mut run = resource(
        &sim,
        json!({"stop": true, "ttlSecondsAfterFinished": 3600}),
        None,
    );
    run.metadata.finalizers = None;
    let task = reconcile_run(&ctx, &mut api, &run).await;
    let added = api.expect(Method::PATCH, &format!("{RUNS}/nightly")).await;
    assert_eq!(added.body["metadata"]["finalizers"], json!([FINALIZER]));
    added.reply(StatusCode::OK, with_finalizer(&run, "11"));
    let status = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    assert_eq!(applied_status(&status)["phase"], "Canceled");
    status.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    api.expect(Method::POST, EVENTS)
        .await
        .reply(StatusCode::CREATED, json!({}));
    // Finished, with its TTL still to come: nothing to stop, so no finalizer.
    let removed = api.expect(Method::PATCH, &format!("{RUNS}/nightly")).await;
    assert_eq!(removed.body["metadata"]["finalizers"], json!([]));
    removed.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    let requeue = task.await.unwrap().unwrap();
    assert!(
        (3599.0..=3600.0).contains(&requeue_secs(&requeue)),
        "{requeue:?}"
    );
    assert_eq!(sim.stats().requests, 0);
}

/// The `runs` gauge's value for `phase`, as a scrape shows it.
fn runs_gauge(ctx: &Context, phase: &str) -> String {
    let line = format!("amperity_operator_runs{{phase=\"{phase}\"}} ");
    ctx.metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_finished_run_deleted_without_a_reconcile_leaves_the_runs_gauge() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let mut run = resource(&sim, json!({"stop": true}), None);
    run.metadata.finalizers = None;
    let task = reconcile_run(&ctx, &mut api, &run).await;
    api.expect(Method::PATCH, &format!("{RUNS}/nightly"))
        .await
        .reply(StatusCode::OK, with_finalizer(&run, "11"));
    api.expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await
        .reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    api.expect(Method::POST, EVENTS)
        .await
        .reply(StatusCode::CREATED, json!({}));
    api.expect(Method::PATCH, &format!("{RUNS}/nightly"))
        .await
        .reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    task.await.unwrap().unwrap();
    assert_eq!(runs_gauge(&ctx, "Canceled"), "1");
    // Finished and without a finalizer, it is deleted by a person: the controller
    // has nothing left to reconcile, only the watch sees it go.
    ctx.watched(&watcher::Event::Delete((*cached(&run)).clone()), || {
        unreachable!("a deletion needs no relist")
    });
    assert_eq!(runs_gauge(&ctx, "Canceled"), "0");
    api.expect_quiet().await;
}

#[tokio::test]
async fn the_ttl_deletes_only_the_resource_it_belongs_to() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let mut run = resource(
        &sim,
        json!({"stop": true, "ttlSecondsAfterFinished": 0}),
        None,
    );
    run.metadata.finalizers = None;
    let d = amperity_operator::run::decide::decide(
        &run,
        None,
        jiff::Timestamp::now(),
        Default::default(),
        &Settings::default(),
    );
    run.status = Some(d.status);
    let task = reconcile_run(&ctx, &mut api, &run).await;
    let delete = api.expect(Method::DELETE, &format!("{RUNS}/nightly")).await;
    assert_eq!(
        delete.body["preconditions"]["uid"], "uid-1",
        "{}",
        delete.body
    );
    delete.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_panicking_reconcile_is_an_error_for_that_resource_only() {
    let (ctx, _api, _sim) = setup(fast_sim()).await;
    let result = amperity_operator::run::controller::guarded(
        &ctx,
        "marketing".into(),
        "nightly".into(),
        async { panic!("an index out of bounds, say") },
    )
    .await;
    let Err(Error::Panicked {
        namespace,
        name,
        message,
    }) = result
    else {
        panic!("{result:?}")
    };
    assert_eq!(
        (namespace.as_str(), name.as_str()),
        ("marketing", "nightly")
    );
    assert!(message.contains("index out of bounds"), "{message}");
    assert!(
        ctx.metrics
            .encode()
            .contains("amperity_operator_reconcile_panics_total 1")
    );
    // The next resource is reconciled as usual.
    let ok = amperity_operator::run::controller::guarded(
        &ctx,
        "marketing".into(),
        "other".into(),
        async { Ok(Action::await_change()) },
    )
    .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn failed_reconciles_back_off_per_resource() {
    let (ctx, _api, sim) = setup(fast_sim()).await;
    let run = resource(&sim, json!({}), None);
    let error = Error::NoNamespace("nightly".into());
    let waits: Vec<f64> = (0..8)
        .map(|_| {
            requeue_secs(&amperity_operator::run::controller::error_policy(
                cached(&run),
                &error,
                ctx.clone(),
            ))
        })
        .collect();
    assert_eq!(waits, [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]);
    // Another resource starts from the first step.
    let mut other = run.clone();
    other.metadata.uid = Some("uid-2".into());
    let first = requeue_secs(&amperity_operator::run::controller::error_policy(
        cached(&other),
        &error,
        ctx.clone(),
    ));
    assert_eq!(first, 5.0);
}

#[tokio::test]
async fn a_throttled_tenant_does_not_hold_a_reconcile_for_its_pause() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    // A 429 asking to wait (capped at 5 minutes) pauses the tenant's budget.
    let target = Target::new(
        Some(&sim.base_url()),
        "",
        "socktown",
        "2024-04-01",
        &AllowList::parse(&[sim.base_url()]).unwrap(),
    )
    .unwrap();
    let creds = amperity_operator::amperity::Credentials::Token(
        amperity_operator::amperity::SecretString::new(TOKEN),
    );
    let request = amperity_operator::amperity::wire::RunRequest {
        config_id: "cg-retryafterhuge".into(),
        ..Default::default()
    };
    ctx.amperity
        .start(&target, &creds, &request, None)
        .await
        .unwrap_err();
    // A new resource for that tenant: it says it waits, and lets go of the reconcile
    // at once; no Secret is read and nothing is sent until the pause is over.
    let run = resource(&sim, json!({}), None);
    let started = std::time::Instant::now();
    let task = reconcile_run(&ctx, &mut api, &run).await;
    let waiting = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let status = applied_status(&waiting).clone();
    assert_eq!(status["phase"], "Pending");
    assert!(
        status.get("startedAt").is_none(),
        "no intent: nothing was sent"
    );
    waiting.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    let requeue = task.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let after = requeue_secs(&requeue);
    assert!((290.0..=300.0).contains(&after), "{requeue:?}");
    api.expect_quiet().await;
    assert_eq!(sim.stats().starts_by_config.get("cg-nightly"), None);
}

/// Also (issue 23): what follows a finished run's status write (its Event, its
/// finalizer's removal) does not hold its reconcile: the reconcile ends before the
/// Event is answered, and both follow in places of their own. So a burst of ends
/// settled at once has its statuses written before its Events and finalizers.
#[tokio::test]
async fn an_endpoint_off_the_allow_list_reads_no_secret_and_sends_nothing() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = resource(
        &sim,
        json!({"endpoint": "https://collector.evil.test/api"}),
        None,
    );
    let task = reconcile_run(&ctx, &mut api, &run).await;
    // The first call after reading the run is the status: no Secret GET before it.
    let failed = api
        .expect(Method::PATCH, &format!("{RUNS}/nightly/status"))
        .await;
    let status = applied_status(&failed).clone();
    assert_eq!(status["phase"], "Failed");
    let reason = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Succeeded")
        .unwrap()["reason"]
        .clone();
    assert_eq!(reason, "EndpointNotAllowed");
    failed.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the reconcile ends before its Event is answered")
        .unwrap()
        .unwrap();
    // Its next reconcile waits until that is done (the finalizer's removal makes
    // a new version, which a status write decided before it would conflict with):
    // it calls nothing.
    let next = tokio::time::timeout(Duration::from_secs(5), reconcile(cached(&run), ctx.clone()))
        .await
        .expect("the next reconcile calls nothing while the work is under way")
        .unwrap();
    assert_eq!(next, Action::requeue(Duration::from_secs(1)));
    let event = api.expect(Method::POST, EVENTS).await;
    assert_eq!(event.body["type"], "Warning");
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("https://collector.evil.test/api")
    );
    event.reply(StatusCode::CREATED, json!({}));
    // Finished: the finalizer goes.
    api.expect(Method::PATCH, &format!("{RUNS}/nightly"))
        .await
        .reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    api.expect_quiet().await;
    assert!(
        !ctx.trailing.holds("uid-1"),
        "done once the finalizer is gone"
    );
    assert_eq!(sim.stats().requests, 0);
}

/// A finished resource being deleted, that followed `wf-gone` after `wf-first`.
fn deleted_after_its_run(sim: &SimHandle) -> AmperityWorkflowRun {
    let done = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60)).to_string();
    let mut run = resource(
        sim,
        json!({"deletionPolicy": "Stop"}),
        Some(json!({"phase": "Succeeded", "workflowId": "wf-gone",
            "attempts": [{"workflowId": "wf-first"}],
            "startedAt": done, "completedAt": done})),
    );
    run.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    run
}

/// Answers the status writes and Events of a deletion until the first call to the
/// claims ledger, which it returns.
async fn until_the_ledger(api: &mut ApiServer, run: &AmperityWorkflowRun) -> Call {
    loop {
        let call = api.next().await;
        match (&call.method, call.path.as_str()) {
            (&Method::PATCH, p) if p == format!("{RUNS}/nightly/status") => {
                call.reply(StatusCode::OK, serde_json::to_value(run).unwrap())
            }
            (&Method::POST, EVENTS) => call.reply(StatusCode::CREATED, json!({})),
            (&Method::GET, LEDGER) => return call,
            (method, path) => panic!("unexpected call {method} {path} before the ledger"),
        }
    }
}

fn ledger_text(call: &Call) -> String {
    call.body["data"]["departed"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Issue 21: the runs of a resource the operator lets go are in the claims ledger
/// before its finalizer is removed, so a restart of every replica cannot forget
/// them (a lost start's search would adopt one, e.g. the orphaned run of a deleted
/// resource). Without the ledger, the finalizer patch is the first call.
#[tokio::test]
async fn a_released_resource_s_runs_are_recorded_before_its_finalizer_goes() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = deleted_after_its_run(&sim);
    let task = reconcile_run(&ctx, &mut api, &run).await;
    until_the_ledger(&mut api, &run)
        .await
        .reply(StatusCode::NOT_FOUND, not_found());
    let created = api.expect(Method::POST, LEDGERS).await;
    let text = ledger_text(&created);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(_, id)| id)
        .collect();
    assert_eq!(ids, ["wf-first", "wf-gone"], "{text}");
    assert_eq!(created.body["metadata"]["name"], "amperity-operator-claims");
    created.reply(StatusCode::CREATED, ledger("1", &text));
    let released = api.expect(Method::PATCH, &format!("{RUNS}/nightly")).await;
    assert_eq!(released.body["metadata"]["finalizers"], json!([]));
    released.reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    task.await.unwrap().unwrap();
    // Recorded already: nothing is queued to be written again.
    assert_eq!(ctx.ledger.pending(), 0);
    api.expect_quiet().await;
}

/// Issue 21: when the ledger cannot be written, the resource keeps its finalizer
/// (the reconcile fails, naming the ConfigMap, and is retried): nothing is lost.
#[tokio::test]
async fn a_failed_ledger_write_keeps_the_finalizer() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = deleted_after_its_run(&sim);
    let task = reconcile_run(&ctx, &mut api, &run).await;
    until_the_ledger(&mut api, &run).await.reply(
        StatusCode::FORBIDDEN,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
               "code": 403, "message": "configmaps is forbidden"}),
    );
    let error = task.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::Ledger { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("default/amperity-operator-claims"),
        "{error}"
    );
    api.expect_quiet().await;
    let scrape = ctx.metrics.encode();
    assert!(
        scrape.contains("amperity_operator_claims_ledger_errors_total{operation=\"write\"} 1"),
        "{scrape}"
    );
}

/// Issue 21: two replicas writing the ledger at once never lose each other's
/// entries. This one finds no ConfigMap, but another creates it first; then
/// another writes over the version this one read: each time, this one reads again
/// and merges, and its write goes over the version it read.
#[tokio::test]
async fn concurrent_ledger_writes_keep_each_others_entries() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let run = deleted_after_its_run(&sim);
    let now = jiff::Timestamp::now().as_second();
    let theirs = format!("{now} wf-theirs\n");
    let both = format!("{now} wf-theirs\n{now} wf-third\n");
    let task = reconcile_run(&ctx, &mut api, &run).await;
    until_the_ledger(&mut api, &run)
        .await
        .reply(StatusCode::NOT_FOUND, not_found());
    api.expect(Method::POST, LEDGERS).await.reply(
        StatusCode::CONFLICT,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
               "code": 409, "message": "already exists"}),
    );
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::OK, ledger("5", &theirs));
    let first = api.expect(Method::PUT, LEDGER).await;
    assert_eq!(first.body["metadata"]["resourceVersion"], "5");
    assert!(ledger_text(&first).contains("wf-theirs"));
    first.reply(StatusCode::CONFLICT, conflict());
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::OK, ledger("6", &both));
    let second = api.expect(Method::PUT, LEDGER).await;
    assert_eq!(second.body["metadata"]["resourceVersion"], "6");
    let text = ledger_text(&second);
    for id in ["wf-theirs", "wf-third", "wf-first", "wf-gone"] {
        assert!(
            text.lines().any(|l| l.ends_with(&format!(" {id}"))),
            "{id}: {text}"
        );
    }
    second.reply(StatusCode::OK, ledger("7", &text));
    api.expect(Method::PATCH, &format!("{RUNS}/nightly"))
        .await
        .reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    task.await.unwrap().unwrap();
}

/// Issue 21: departures the operator only observes (resources deleted without a
/// finalizer) are written in batches: a burst of deletions costs one write, and
/// a resource that never had a run costs none.
#[tokio::test]
async fn observed_departures_are_written_in_one_batch() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let flusher = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.ledger.flush_periodically().await }
    });
    for i in 0..3 {
        let mut run = resource(
            &sim,
            json!({}),
            Some(json!({"phase": "Succeeded", "workflowId": format!("wf-{i}")})),
        );
        run.metadata.uid = Some(format!("uid-{i}"));
        ctx.tracking
            .observe(&format!("uid-{i}"), &run.spec, run.status.as_ref());
        ctx.watched(&watcher::Event::Delete((*cached(&run)).clone()), || {
            unreachable!("a deletion needs no relist")
        });
    }
    let mut never_started = resource(&sim, json!({}), None);
    never_started.metadata.uid = Some("uid-none".into());
    ctx.watched(
        &watcher::Event::Delete((*cached(&never_started)).clone()),
        || unreachable!(),
    );
    assert_eq!(ctx.ledger.pending(), 3);
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::NOT_FOUND, not_found());
    let created = api.expect(Method::POST, LEDGERS).await;
    let text = ledger_text(&created);
    assert_eq!(text.lines().count(), 3, "{text}");
    created.reply(StatusCode::CREATED, ledger("1", &text));
    api.expect_quiet().await;
    assert_eq!(ctx.ledger.pending(), 0);
    assert!(
        ctx.metrics
            .encode()
            .contains("amperity_operator_claims_ledger_writes_total 1")
    );
    flusher.abort();
}

/// Issue 21: a replica that starts afresh (every replica restarted) knows the runs
/// of resources deleted before it only from the claims ledger: its lost start's
/// search finds one run of its principal, no resource follows it any more, but the
/// ledger names it: it is not adopted. Without the ledger load it would be.
#[tokio::test]
async fn a_restarted_replica_does_not_adopt_a_run_the_ledger_names() {
    let (ctx, mut api, sim) = setup(SimConfig::default()).await;
    let id = sim.seed_runs("cg-nightly", 1).remove(0);
    // No other resource: the one that followed the run was deleted (Orphan).
    let (task, stored) = a_lost_start_until_its_relist(&ctx, &mut api, &sim, vec![]).await;
    let departed = format!("{} {id}\n", jiff::Timestamp::now().as_second() - 30);
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::OK, ledger("3", &departed));
    the_search_adopts_nothing(&mut api, stored, task).await;
    assert!(ctx.tracking.is_warm());
    assert_eq!(sim.stats().starts, 0);
}

/// Issue 21: a finished run's TTL deletion records its run in the claims ledger
/// first; without the record, the DELETE is the first call.
#[tokio::test]
async fn a_ttl_deletion_records_the_run_before_the_delete() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let done = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60)).to_string();
    let mut run = resource(
        &sim,
        json!({"ttlSecondsAfterFinished": 0}),
        Some(json!({"phase": "Succeeded", "workflowId": "wf-ttl",
            "startedAt": done, "completedAt": done})),
    );
    run.metadata.finalizers = None;
    let task = reconcile_run(&ctx, &mut api, &run).await;
    until_the_ledger(&mut api, &run)
        .await
        .reply(StatusCode::OK, ledger("4", ""));
    let replaced = api.expect(Method::PUT, LEDGER).await;
    assert_eq!(replaced.body["metadata"]["resourceVersion"], "4");
    let text = ledger_text(&replaced);
    assert!(text.ends_with(" wf-ttl\n"), "{text}");
    replaced.reply(StatusCode::OK, ledger("5", &text));
    api.expect(Method::DELETE, &format!("{RUNS}/nightly"))
        .await
        .reply(StatusCode::OK, serde_json::to_value(&run).unwrap());
    task.await.unwrap().unwrap();
    api.expect_quiet().await;
}

fn forbidden() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
           "code": 403, "message": "configmaps \"amperity-operator-claims\" is forbidden"})
}

/// Issue 21: a claims ledger that cannot be read leaves the claims incomplete: the
/// only run found (no resource follows it, and what the ledger says is unknown) is
/// not adopted, and the failed read is counted.
#[tokio::test]
async fn an_unreadable_ledger_keeps_the_claims_incomplete() {
    let (ctx, mut api, sim) = setup(SimConfig::default()).await;
    sim.seed_runs("cg-nightly", 1);
    let (task, stored) = a_lost_start_until_its_relist(&ctx, &mut api, &sim, vec![]).await;
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::FORBIDDEN, forbidden());
    the_search_adopts_nothing(&mut api, stored, task).await;
    assert!(
        !ctx.tracking.is_warm(),
        "relisted, but the ledger is unread"
    );
    let scrape = ctx.metrics.encode();
    assert!(
        scrape.contains("amperity_operator_claims_ledger_errors_total{operation=\"read\"} 1"),
        "{scrape}"
    );
}

/// Issue 21: the ledger's load at the start of a term is retried with backoff
/// until it succeeds; then (with the relist) the claims are complete.
#[tokio::test]
async fn the_ledger_load_is_retried_until_it_succeeds() {
    let (ctx, mut api, sim) = setup(fast_sim()).await;
    let term = ctx.tracking.begin_term();
    ctx.tracking.set_warm_for(term);
    let loader = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.ledger.load_for_term(&ctx.tracking, term).await }
    });
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::FORBIDDEN, forbidden());
    let departed = format!("{} wf-gone\n", jiff::Timestamp::now().as_second() - 5);
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::OK, ledger("9", &departed));
    tokio::time::timeout(Duration::from_secs(5), loader)
        .await
        .expect("the load ends once it succeeded")
        .unwrap();
    assert!(ctx.tracking.is_warm());
    let claims = ctx.tracking.claims(
        "uid-1",
        &resource(&sim, json!({}), None).spec,
        &["wf-gone".into()],
        None,
    );
    assert!(
        claims.complete && claims.tracked.contains("wf-gone"),
        "{claims:?}"
    );
    api.expect_quiet().await;
}

/// Issue 21: resources let go at once (a namespace deleted) share the ledger's
/// writes: those recorded while a write is under way go together in the next one,
/// and none waits for a write that does not carry it.
#[tokio::test]
async fn departures_recorded_during_a_write_go_together_in_the_next() {
    let (ctx, mut api, _sim) = setup(fast_sim()).await;
    let at = jiff::Timestamp::now();
    let first = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.ledger.record(&["wf-a".to_string()], at).await }
    });
    // The first write has read the ledger; two more resources go meanwhile.
    let read = api.expect(Method::GET, LEDGER).await;
    let later: Vec<_> = ["wf-b", "wf-c"]
        .into_iter()
        .map(|id| {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.ledger.record(&[id.to_string()], at).await })
        })
        .collect();
    while ctx.ledger.pending() < 2 {
        tokio::task::yield_now().await;
    }
    read.reply(StatusCode::NOT_FOUND, not_found());
    let created = api.expect(Method::POST, LEDGERS).await;
    let text = ledger_text(&created);
    assert_eq!(ids_in(&text), ["wf-a"], "{text}");
    created.reply(StatusCode::CREATED, ledger("1", &text));
    first.await.unwrap().unwrap();
    // One write for the two recorded meanwhile.
    api.expect(Method::GET, LEDGER)
        .await
        .reply(StatusCode::OK, ledger("1", &text));
    let replaced = api.expect(Method::PUT, LEDGER).await;
    let text = ledger_text(&replaced);
    assert_eq!(ids_in(&text), ["wf-a", "wf-b", "wf-c"], "{text}");
    assert_eq!(replaced.body["metadata"]["resourceVersion"], "1");
    replaced.reply(StatusCode::OK, ledger("2", &text));
    for record in later {
        record.await.unwrap().unwrap();
    }
    api.expect_quiet().await;
    assert!(
        ctx.metrics
            .encode()
            .contains("amperity_operator_claims_ledger_writes_total 2")
    );
}

/// The run ids of a ledger's text, in order.
fn ids_in(text: &str) -> Vec<&str> {
    let mut ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(_, id)| id)
        .collect();
    ids.sort_unstable();
    ids
}
