//! The schedule reconciler against a mocked Kubernetes API server (tower-test):
//! every call it makes is asserted in order, with its body.

use std::sync::Arc;
use std::time::Duration;

use amperity_operator::cluster::FIELD_MANAGER;
use amperity_operator::cluster::finalizer::FINALIZER_MANAGER;
use amperity_operator::crd::schedule::AmperityWorkflowSchedule;
use amperity_operator::metrics::Metrics;
use amperity_operator::schedule::RUN_NOW_ANNOTATION;
use amperity_operator::schedule::controller::{
    SCHEDULE_FINALIZER, ScheduleContext, error_policy, probe_backoff, reconcile, wait_for_crd,
};
use http::{Method, Request, Response, StatusCode};
use jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

const SCHEDULES: &str =
    "/apis/amperity.dev/v1alpha1/namespaces/marketing/amperityworkflowschedules";
const RUNS: &str = "/apis/amperity.dev/v1alpha1/namespaces/marketing/amperityworkflowruns";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/marketing/events";

struct Received {
    method: Method,
    path: String,
    query: String,
    body: Value,
    reply: SendResponse<Response<Body>>,
}

impl Received {
    fn answer(self, status: StatusCode, body: Value) {
        self.reply.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }
}

async fn expect(
    handle: &mut Handle<Request<Body>, Response<Body>>,
    method: Method,
    path: &str,
) -> Received {
    let (request, reply) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no call; expected {method} {path}"))
        .expect("the client is alive");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let got = Received {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        reply,
    };
    assert_eq!(
        (&got.method, got.path.as_str()),
        (&method, path),
        "unexpected call"
    );
    got
}

fn status_error(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
           "reason": reason, "code": code})
}

/// A schedule "* * * * *" created two minutes ago, with the finalizer in place.
fn schedule(extra_spec: Value, annotations: Value) -> AmperityWorkflowSchedule {
    // Just before the latest minute: that slot is due, and none before it was missed.
    let minute = Timestamp::now().as_second().div_euclid(60) * 60;
    let created = Timestamp::from_second(minute - 1).unwrap();
    let mut spec = json!({
        "schedule": "* * * * *",
        "runTemplate": {"spec": {"tenant": "socktown", "tokenSecretRef": {"name": "amperity-api"},
                                 "configId": "cg-nightly"}}
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowSchedule",
        "metadata": {"name": "nightly", "namespace": "marketing", "uid": "s-uid", "generation": 1,
                     "resourceVersion": "7", "creationTimestamp": created.to_string(),
                     "finalizers": [SCHEDULE_FINALIZER], "annotations": annotations},
        "spec": spec,
    }))
    .unwrap()
}

fn owned_run(name: &str, phase: &str) -> Value {
    json!({"apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": name, "namespace": "marketing", "labels": {"amperity.dev/schedule": "nightly"},
            "annotations": {"amperity.dev/scheduled-at": (Timestamp::now() - SignedDuration::from_secs(300)).to_string(),
                            "amperity.dev/trigger": "schedule"},
            "ownerReferences": [{"apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowSchedule",
                "name": "nightly", "uid": "s-uid", "controller": true}]},
        "spec": {"tenant": "socktown", "tokenSecretRef": {"name": "amperity-api"}, "configId": "cg-nightly"},
        "status": {"phase": phase}})
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRunList",
           "metadata": {"resourceVersion": "9"}, "items": items})
}

fn setup() -> (Arc<ScheduleContext>, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Arc::new(ScheduleContext::new(
        Client::new(service, "default"),
        Arc::new(Metrics::default()),
    ));
    (ctx, handle)
}

/// Starts a reconcile and answers its reading of the schedule and listing of its runs.
async fn begin(
    ctx: &Arc<ScheduleContext>,
    api: &mut Handle<Request<Body>, Response<Body>>,
    s: &AmperityWorkflowSchedule,
    runs: Vec<Value>,
) -> tokio::task::JoinHandle<Result<Action, amperity_operator::schedule::controller::Error>> {
    let task = tokio::spawn(reconcile(Arc::new(s.clone()), ctx.clone()));
    expect(api, Method::GET, &format!("{SCHEDULES}/nightly"))
        .await
        .answer(StatusCode::OK, serde_json::to_value(s).unwrap());
    let listing = expect(api, Method::GET, RUNS).await;
    assert!(
        listing
            .query
            .contains("labelSelector=amperity.dev%2Fschedule%3Dnightly"),
        "{}",
        listing.query
    );
    listing.answer(StatusCode::OK, list(runs));
    task
}

#[tokio::test]
async fn a_due_slot_creates_the_run_then_writes_status_then_says_so() {
    let (ctx, mut api) = setup();
    let s = schedule(json!({}), json!({}));
    let task = begin(&ctx, &mut api, &s, vec![]).await;

    let create = expect(&mut api, Method::POST, RUNS).await;
    let name = create.body["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let minute = Timestamp::now().as_second().div_euclid(60);
    assert!(
        name == format!("nightly-{minute}") || name == format!("nightly-{}", minute - 1),
        "{name}"
    );
    assert_eq!(
        create.body["metadata"]["ownerReferences"][0]["uid"],
        "s-uid"
    );
    assert_eq!(create.body["spec"]["configId"], "cg-nightly");
    let body = create.body.clone();
    create.answer(StatusCode::CREATED, body);

    let status = expect(
        &mut api,
        Method::PATCH,
        &format!("{SCHEDULES}/nightly/status"),
    )
    .await;
    assert!(
        status
            .query
            .contains(&format!("fieldManager={FIELD_MANAGER}")),
        "{}",
        status.query
    );
    assert!(status.query.contains("force=true"));
    let written = status.body["status"].clone();
    assert_eq!(written["active"][0]["name"], name.as_str());
    assert!(written["lastScheduleTime"].is_string());
    assert!(written["nextScheduleTime"].is_string());
    let ready = written["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(
        (
            ready["status"].as_str(),
            ready["observedGeneration"].as_i64()
        ),
        (Some("True"), Some(1))
    );
    status.answer(StatusCode::OK, serde_json::to_value(&s).unwrap());

    let event = expect(&mut api, Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "Created");
    assert_eq!(event.body["regarding"]["kind"], "AmperityWorkflowSchedule");
    assert!(event.body["note"].as_str().unwrap().contains(&name));
    let body = event.body.clone();
    event.answer(StatusCode::CREATED, body);

    let action = task.await.unwrap().unwrap();
    // The next slot is within a minute.
    assert!(action != Action::await_change());
    let wait = format!("{action:?}");
    assert!(wait.contains("requeue_after: Some("), "{wait}");
    assert_eq!(
        ctx.metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("amperity_operator_schedule_runs_total")),
        Some("amperity_operator_schedule_runs_total{outcome=\"created\"} 1")
    );
}

#[tokio::test]
async fn a_run_that_already_exists_and_is_ours_is_not_an_error() {
    let (ctx, mut api) = setup();
    let s = schedule(json!({}), json!({}));
    let task = begin(&ctx, &mut api, &s, vec![]).await;
    let create = expect(&mut api, Method::POST, RUNS).await;
    let name = create.body["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut existing = create.body.clone();
    create.answer(
        StatusCode::CONFLICT,
        status_error(409, "AlreadyExists", "already exists"),
    );
    expect(&mut api, Method::GET, &format!("{RUNS}/{name}"))
        .await
        .answer(StatusCode::OK, {
            existing["metadata"]["resourceVersion"] = json!("3");
            existing
        });
    let status = expect(
        &mut api,
        Method::PATCH,
        &format!("{SCHEDULES}/nightly/status"),
    )
    .await;
    assert_eq!(status.body["status"]["active"][0]["name"], name.as_str());
    status.answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    // Not created now: no Created Event, and not counted as created.
    task.await.unwrap().unwrap();
    assert_eq!(
        ctx.metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("amperity_operator_schedule_runs_total{")),
        None
    );
}

#[tokio::test]
async fn a_refused_run_is_reported_not_retried() {
    let (ctx, mut api) = setup();
    let s = schedule(json!({}), json!({}));
    let task = begin(&ctx, &mut api, &s, vec![]).await;
    expect(&mut api, Method::POST, RUNS).await.answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        status_error(
            422,
            "Invalid",
            "AmperityWorkflowRun is invalid: spec.tenant: Required value",
        ),
    );
    let status = expect(
        &mut api,
        Method::PATCH,
        &format!("{SCHEDULES}/nightly/status"),
    )
    .await;
    let written = status.body["status"].clone();
    assert!(written.get("active").is_none());
    assert!(written["lastSkippedTime"].is_string());
    let ready = written["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["reason"], "RunCreateFailed");
    assert!(ready["message"].as_str().unwrap().contains("spec.tenant"));
    status.answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    let event = expect(&mut api, Method::POST, EVENTS).await;
    assert_eq!(
        (event.body["reason"].as_str(), event.body["type"].as_str()),
        (Some("CreateFailed"), Some("Warning"))
    );
    event.answer(StatusCode::CREATED, json!({}));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn replace_creates_the_new_run_then_stops_the_one_in_flight() {
    let (ctx, mut api) = setup();
    let s = schedule(json!({"concurrencyPolicy": "Replace"}), json!({}));
    let task = begin(&ctx, &mut api, &s, vec![owned_run("nightly-1", "Running")]).await;
    let create = expect(&mut api, Method::POST, RUNS).await;
    let body = create.body.clone();
    create.answer(StatusCode::CREATED, body);
    let stop = expect(&mut api, Method::PATCH, &format!("{RUNS}/nightly-1")).await;
    assert_eq!(stop.body, json!({"spec": {"stop": true}}));
    stop.answer(StatusCode::OK, owned_run("nightly-1", "Running"));
    expect(
        &mut api,
        Method::PATCH,
        &format!("{SCHEDULES}/nightly/status"),
    )
    .await
    .answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    for reason in ["Replaced", "Created"] {
        let event = expect(&mut api, Method::POST, EVENTS).await;
        assert_eq!(event.body["reason"], reason);
        event.answer(StatusCode::CREATED, json!({}));
    }
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn replace_with_a_forbidden_create_leaves_the_run_in_flight_alone() {
    let (ctx, mut api) = setup();
    let s = schedule(json!({"concurrencyPolicy": "Replace"}), json!({}));
    let task = begin(&ctx, &mut api, &s, vec![owned_run("nightly-1", "Running")]).await;
    expect(&mut api, Method::POST, RUNS).await.answer(
        StatusCode::FORBIDDEN,
        status_error(
            403,
            "Forbidden",
            "exceeded quota: count/amperityworkflowruns.amperity.dev",
        ),
    );
    // No stop: the next call is the status, which says why.
    let status = expect(
        &mut api,
        Method::PATCH,
        &format!("{SCHEDULES}/nightly/status"),
    )
    .await;
    let written = status.body["status"].clone();
    let ready = written["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "RunCreateFailed");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("exceeded quota")
    );
    assert_eq!(written["active"][0]["name"], "nightly-1");
    status.answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    let event = expect(&mut api, Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "CreateFailed");
    event.answer(StatusCode::CREATED, json!({}));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_new_schedule_gets_its_finalizer_first_and_run_now_runs() {
    let (ctx, mut api) = setup();
    let mut s = schedule(
        json!({"schedule": "@yearly"}),
        json!({RUN_NOW_ANNOTATION: "go"}),
    );
    s.metadata.finalizers = None;
    s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    let task = begin(&ctx, &mut api, &s, vec![]).await;
    let finalizer = expect(&mut api, Method::PATCH, &format!("{SCHEDULES}/nightly")).await;
    assert!(
        finalizer
            .query
            .contains(&format!("fieldManager={FINALIZER_MANAGER}")),
        "{}",
        finalizer.query
    );
    assert_eq!(
        finalizer.body["metadata"]["finalizers"],
        json!([SCHEDULE_FINALIZER])
    );
    finalizer.answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    let create = expect(&mut api, Method::POST, RUNS).await;
    assert_eq!(create.body["metadata"]["name"], "nightly-now-1");
    assert_eq!(
        create.body["metadata"]["annotations"]["amperity.dev/trigger"],
        "run-now"
    );
    let body = create.body.clone();
    create.answer(StatusCode::CREATED, body);
    let status = expect(
        &mut api,
        Method::PATCH,
        &format!("{SCHEDULES}/nightly/status"),
    )
    .await;
    assert_eq!(status.body["status"]["lastHandledRunNow"], "go");
    assert_eq!(status.body["status"]["runNowCount"], 1);
    status.answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    expect(&mut api, Method::POST, EVENTS)
        .await
        .answer(StatusCode::CREATED, json!({}));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn deleting_a_schedule_deletes_its_runs_then_lets_it_go() {
    let (ctx, mut api) = setup();
    let mut s = schedule(json!({}), json!({}));
    s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    let task = begin(
        &ctx,
        &mut api,
        &s,
        vec![
            owned_run("nightly-1", "Running"),
            owned_run("nightly-2", "Succeeded"),
        ],
    )
    .await;
    let mut deleted = vec![];
    for _ in 0..2 {
        let (request, reply) = api.next_request().await.unwrap();
        assert_eq!(request.method(), Method::DELETE);
        let name = request
            .uri()
            .path()
            .strip_prefix(&format!("{RUNS}/"))
            .unwrap()
            .to_string();
        reply.send_response(
            Response::builder()
                .body(Body::from(
                    serde_json::to_vec(&owned_run(&name, "Running")).unwrap(),
                ))
                .unwrap(),
        );
        deleted.push(name);
    }
    deleted.sort();
    assert_eq!(deleted, ["nightly-1", "nightly-2"]);
    let release = expect(&mut api, Method::PATCH, &format!("{SCHEDULES}/nightly")).await;
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    release.answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
}

#[test]
fn the_crd_probe_backs_off_to_a_minute() {
    let waits: Vec<u64> = [0, 1, 2, 5, 6, 7, 40, u32::MAX]
        .into_iter()
        .map(|n| probe_backoff(n).as_secs())
        .collect();
    assert_eq!(waits, [1, 2, 4, 32, 60, 60, 60, 60]);
}

#[tokio::test]
async fn a_failed_crd_probe_is_retried_until_the_crd_is_there() {
    let (ctx, mut api) = setup();
    let probe: kube::Api<AmperityWorkflowSchedule> = kube::Api::all(ctx.client.clone());
    let metrics = ctx.metrics.clone();
    let task = tokio::spawn(async move { wait_for_crd(&probe, &metrics).await });
    let all = "/apis/amperity.dev/v1alpha1/amperityworkflowschedules";
    let running = |ctx: &Arc<ScheduleContext>| {
        ctx.metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("amperity_operator_schedule_controller_running "))
            .map(str::to_string)
    };
    // Not installed yet (the operator came first), then a hiccup: it keeps trying.
    expect(&mut api, Method::GET, all).await.answer(
        StatusCode::NOT_FOUND,
        status_error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    );
    let second = expect(&mut api, Method::GET, all).await;
    assert_eq!(
        running(&ctx).as_deref(),
        Some("amperity_operator_schedule_controller_running 0")
    );
    assert!(!task.is_finished());
    second.answer(
        StatusCode::SERVICE_UNAVAILABLE,
        status_error(503, "ServiceUnavailable", "etcd is slow"),
    );
    // Installed: the controller starts.
    expect(&mut api, Method::GET, all).await.answer(
        StatusCode::OK,
        json!({"apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowScheduleList",
               "metadata": {"resourceVersion": "1"}, "items": []}),
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("it stops probing once the CRD is there")
        .unwrap();
    assert_eq!(
        running(&ctx).as_deref(),
        Some("amperity_operator_schedule_controller_running 1")
    );
}

fn requeue_secs(action: &Action) -> f64 {
    let shown = format!("{action:?}");
    shown
        .split_once("Some(")
        .and_then(|(_, rest)| rest.split_once("s)"))
        .and_then(|(secs, _)| secs.parse().ok())
        .unwrap_or_else(|| panic!("no requeue in {shown}"))
}

#[tokio::test]
async fn a_failing_create_backs_off_per_schedule_like_a_run_until_a_reconcile_succeeds() {
    let (ctx, mut api) = setup();
    let s = schedule(json!({}), json!({}));
    let mut waits = Vec::new();
    for _ in 0..3 {
        let task = begin(&ctx, &mut api, &s, vec![]).await;
        expect(&mut api, Method::POST, RUNS).await.answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            status_error(500, "InternalError", "etcdserver: request timed out"),
        );
        let error = task.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("creating a run"), "{error}");
        waits.push(requeue_secs(&error_policy(
            Arc::new(s.clone()),
            &error,
            ctx.clone(),
        )));
    }
    assert_eq!(waits, [5.0, 10.0, 20.0], "not every 5 s");
    // Another schedule starts from the first step.
    let mut other = s.clone();
    other.metadata.uid = Some("other-uid".into());
    let error = amperity_operator::schedule::controller::Error::NoNamespace("x".into());
    assert_eq!(
        requeue_secs(&error_policy(Arc::new(other), &error, ctx.clone())),
        5.0
    );
    // A reconcile that succeeds starts this one over.
    let task = begin(&ctx, &mut api, &s, vec![]).await;
    let create = expect(&mut api, Method::POST, RUNS).await;
    let body = create.body.clone();
    create.answer(StatusCode::CREATED, body);
    expect(
        &mut api,
        Method::PATCH,
        &format!("{SCHEDULES}/nightly/status"),
    )
    .await
    .answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    expect(&mut api, Method::POST, EVENTS)
        .await
        .answer(StatusCode::CREATED, json!({}));
    task.await.unwrap().unwrap();
    assert_eq!(
        requeue_secs(&error_policy(Arc::new(s.clone()), &error, ctx.clone())),
        5.0
    );
}

/// Issue 21: the runs a schedule deletes (its history pruned, or all of them when
/// it goes) are written to the claims ledger first: once deleted, only the ledger
/// says they were this operator's, and a lost start's search must never adopt one.
#[tokio::test]
async fn the_runs_a_schedule_deletes_are_recorded_in_the_claims_ledger_first() {
    use amperity_operator::run::ledger::{ClaimsLedger, DEFAULT_CONFIGMAP};
    let (service, mut api) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let metrics = Arc::new(Metrics::default());
    let ledger = ClaimsLedger::new(
        client.clone(),
        "default",
        DEFAULT_CONFIGMAP,
        metrics.clone(),
    );
    let ctx = Arc::new(ScheduleContext::new(client, metrics).with_ledger(Arc::new(ledger)));
    let mut s = schedule(json!({}), json!({}));
    s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    let mut ran = owned_run("nightly-1", "Succeeded");
    ran["status"]["workflowId"] = json!("wf-pruned");
    let task = begin(
        &ctx,
        &mut api,
        &s,
        vec![ran, owned_run("nightly-2", "Pending")],
    )
    .await;
    let ledger_at = format!("/api/v1/namespaces/default/configmaps/{DEFAULT_CONFIGMAP}");
    expect(&mut api, Method::GET, &ledger_at).await.answer(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    );
    let created = expect(
        &mut api,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
    )
    .await;
    let text = created.body["data"]["departed"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.ends_with(" wf-pruned\n"), "{text}");
    assert_eq!(text.lines().count(), 1, "only runs that ran: {text}");
    let body = created.body.clone();
    created.answer(StatusCode::CREATED, body);
    for _ in 0..2 {
        let (request, reply) = api.next_request().await.unwrap();
        assert_eq!(request.method(), Method::DELETE, "{}", request.uri());
        reply.send_response(
            Response::builder()
                .body(Body::from(
                    serde_json::to_vec(&owned_run("nightly-1", "Running")).unwrap(),
                ))
                .unwrap(),
        );
    }
    let release = expect(&mut api, Method::PATCH, &format!("{SCHEDULES}/nightly")).await;
    release.answer(StatusCode::OK, serde_json::to_value(&s).unwrap());
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
}
