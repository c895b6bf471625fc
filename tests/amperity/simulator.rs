//! The simulator over real HTTP: every check, endpoint, scenario and fault it
//! offers. Every JSON body it answers is validated against the matching schema of
//! Amperity's own OpenAPI file, so the simulator cannot drift from the real API.

use std::time::Duration;

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::run::decide::{Action, Memory, Settings, decide};
use amperity_operator::sim::{self, SimConfig, SimHandle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const OPENAPI: &str =
    include_str!("../../docs/amperity-api/openapi/control-plane-2024-04-01-openapi.json");

struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
    token: String,
    tenant: String,
    version: String,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// Validates `body` against `#/components/schemas/{schema}` of the OpenAPI file.
fn conforms(schema: &str, body: &Value) {
    let openapi: Value = serde_json::from_str(OPENAPI).unwrap();
    let doc = json!({
        "$ref": format!("#/components/schemas/{schema}"),
        "components": openapi["components"],
    });
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(&doc)
        .expect("the OpenAPI schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{schema} violated: {errors:?}\nbody: {body}"
    );
}

async fn sim(config: SimConfig) -> Sim {
    Sim {
        handle: sim::spawn(config).await.unwrap(),
        // The simulator's answers as they are: its redirect is never followed.
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        token: "sim-token".into(),
        tenant: "socktown".into(),
        version: "2024-04-01".into(),
    }
}

/// Fast runs and no rate limit (tests that are not about it poll quickly).
fn fast() -> SimConfig {
    SimConfig {
        speed: 50.0,
        rate_limit: 10_000,
        ..SimConfig::default()
    }
}

impl Sim {
    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        let url = format!("{}{path}", self.handle.base_url());
        let mut req = self.http.request(method, url);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if !self.tenant.is_empty() {
            req = req.header("amperity-tenant", &self.tenant);
        }
        if !self.version.is_empty() {
            req = req.header("api-version", &self.version);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let answer = Answer {
            status: r.status(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        };
        // Every documented-shape body is checked against the OpenAPI file.
        if let Ok(v) = serde_json::from_str::<Value>(&answer.text) {
            let schema = if !answer.status.is_success() {
                "ErrorResponse"
            } else if path.starts_with("/workflow/runs?")
                || path == "/workflow/runs" && body.is_none()
            {
                "WorkflowList"
            } else {
                "Workflow"
            };
            conforms(schema, &v);
        }
        answer
    }

    async fn start(&self, body: Value) -> Answer {
        self.call(Method::POST, "/workflow/runs", Some(&body.to_string()))
            .await
    }

    async fn started_id(&self, config: &str) -> String {
        let a = self.start(json!({"config_id": config})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.json()["id"].as_str().unwrap().to_string()
    }

    async fn verbose(&self, id: &str) -> Value {
        let a = self
            .call(
                Method::GET,
                &format!("/workflow/runs/{id}?view=verbose"),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.json()
    }

    async fn wait_state(&self, id: &str, states: &[&str]) -> Value {
        for _ in 0..200 {
            let w = self.verbose(id).await;
            if states.contains(&w["state"].as_str().unwrap_or_default()) {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        panic!("{id} never reached {states:?}");
    }
}

#[tokio::test]
async fn gateway_checks_answer_401_403_400() {
    let mut s = sim(fast()).await;
    let ok = s.call(Method::GET, "/workflow/runs", None).await;
    assert_eq!(ok.status, StatusCode::OK);
    s.token = "wrong".into();
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    s.token = String::new();
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    s.token = "sim-token".into();
    s.tenant = "othertown".into();
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::FORBIDDEN
    );
    s.tenant = String::new();
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    s.tenant = "socktown".into();
    s.version = "2023-01-01".into();
    let old = s.call(Method::GET, "/workflow/runs", None).await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST);
    assert!(
        old.json()["message"]
            .as_str()
            .unwrap()
            .contains("api-version")
    );
    s.version = String::new();
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::BAD_REQUEST
    );
    // The query parameter works instead of the header.
    assert_eq!(
        s.call(Method::GET, "/workflow/runs?api_version=2024-04-01", None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_start_bodies_are_refused_saying_which_problem() {
    let s = sim(fast()).await;
    let cases = [
        ("not json", "config_id=cg-1", "one JSON object"),
        ("an array", "[]", "one JSON object"),
        (
            "no config_id",
            r#"{"run_mode": "full"}"#,
            "config_id is required",
        ),
        (
            "unknown property",
            r#"{"config_id": "cg-1", "priority": 1}"#,
            "unknown property \"priority\"",
        ),
        (
            "range_to alone",
            r#"{"config_id": "cg-1", "range_to": "2025-04-19"}"#,
            "range_to requires range_from",
        ),
        (
            "bad date",
            r#"{"config_id": "cg-1", "range_from": "18/04/2025"}"#,
            "range_from",
        ),
        (
            "offset date-time",
            r#"{"config_id": "cg-1", "range_from": "2025-04-18T06:00:00+02:00"}"#,
            "range_from",
        ),
        (
            "bad run_mode",
            r#"{"config_id": "cg-1", "run_mode": "weekly"}"#,
            "run_mode",
        ),
        (
            "to before from",
            r#"{"config_id": "cg-1", "range_from": "2025-04-19", "range_to": "2025-04-18"}"#,
            "after",
        ),
        (
            "unknown config",
            r#"{"config_id": "xx-1"}"#,
            "does not exist",
        ),
        (
            "rejected marker",
            r#"{"config_id": "cg-1-rejected"}"#,
            "does not exist",
        ),
        (
            "needsrange marker",
            r#"{"config_id": "cg-1-needsrange"}"#,
            "range_from is required",
        ),
    ];
    for (case, body, says) in cases {
        let a = s.call(Method::POST, "/workflow/runs", Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{case}: {}", a.text);
        let msg = a.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{case}: {msg}");
    }
    assert_eq!(s.handle.stats().starts, 0);
    let with_range = s
        .start(json!({"config_id": "cg-1-needsrange", "range_from": "2025-04-18", "range_to": "2025-04-19T00:00:00Z", "run_mode": "source"}))
        .await;
    assert_eq!(
        with_range.status,
        StatusCode::CREATED,
        "{}",
        with_range.text
    );
}

#[tokio::test]
async fn a_start_answers_201_with_a_scheduled_workflow_of_the_configs_type() {
    let s = sim(fast()).await;
    for (config, ty) in [
        ("cg-1", "courier.group/run"),
        ("og-1", "amperity.orchestration.orchestration/run"),
        ("cc-1", "campaign.send"),
    ] {
        let a = s.start(json!({"config_id": config})).await;
        assert_eq!(a.status, StatusCode::CREATED);
        let w = a.json();
        assert_eq!(w["type"], ty);
        assert_eq!(w["state"], "scheduled");
        assert_eq!(w["task_instances"], json!([]));
        assert!(w["id"].as_str().unwrap().starts_with("wf-"));
        assert_eq!(w["principal_name"], "API key 1");
    }
    let stats = s.handle.stats();
    assert_eq!(stats.starts, 3);
    assert_eq!(stats.starts_by_config["og-1"], 1);
}

#[tokio::test]
async fn runs_progress_task_by_task_and_views_differ() {
    let s = sim(SimConfig {
        speed: 10.0,
        ..fast()
    })
    .await;
    let id = s.started_id("cg-progress").await;
    let overview = s
        .call(Method::GET, &format!("/workflow/runs/{id}"), None)
        .await
        .json();
    assert!(overview.get("task_instances").is_none() && overview.get("error").is_none());
    assert!(overview.get("principal_id").is_none());
    let mut seen_states = std::collections::BTreeSet::new();
    let mut max_done = 0;
    let done = loop {
        let w = s.verbose(&id).await;
        seen_states.insert(w["state"].as_str().unwrap().to_string());
        let tasks = w["task_instances"].as_array().unwrap();
        let done = tasks.iter().filter(|t| t["state"] == "succeeded").count();
        assert!(done >= max_done, "tasks never go backwards");
        max_done = done;
        assert!(
            tasks.iter().filter(|t| t["state"] == "running").count() <= 1,
            "one task at a time"
        );
        if w["state"] == "succeeded" {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(seen_states.contains("running"), "{seen_states:?}");
    assert_eq!(done["task_instances"].as_array().unwrap().len(), 5);
    assert!(done["ended_at"].is_string());
    assert!(
        done["task_instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["ended_at"].is_string())
    );
}

#[tokio::test]
async fn a_stop_goes_stopping_then_canceled() {
    let s = sim(SimConfig {
        speed: 5.0,
        ..fast()
    })
    .await;
    let id = s.started_id("cg-stoppable-hang").await;
    s.wait_state(&id, &["running"]).await;
    let stopped = s
        .call(Method::POST, &format!("/workflow/runs/{id}/stop"), None)
        .await;
    assert_eq!(stopped.status, StatusCode::OK);
    assert_eq!(stopped.json()["state"], "stopping");
    let end = s.wait_state(&id, &["canceled"]).await;
    assert_eq!(end["error"]["message"], "Workflow manually stopped");
    assert!(end["ended_at"].is_string());
    let missing = s
        .call(Method::POST, "/workflow/runs/wf-nope/stop", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(s.handle.stats().stops, 1, "only accepted stops count");
}

#[tokio::test]
async fn scenario_markers() {
    let s = sim(fast()).await;
    let customer = s.started_id("cg-a-failcustomer").await;
    let w = s.wait_state(&customer, &["failed", "succeeded"]).await;
    assert_eq!(w["state"], "failed");
    assert_eq!(w["error"]["attribution"], "customer");
    assert!(
        w["task_instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["state"] == "failed" && t["error"].is_object())
    );

    let first = s.started_id("cg-b-failplatform").await;
    assert_eq!(
        s.wait_state(&first, &["failed", "succeeded"]).await["error"]["attribution"],
        "platform"
    );
    let rerun = s.started_id("cg-b-failplatform").await;
    assert_eq!(
        s.wait_state(&rerun, &["failed", "succeeded"]).await["state"],
        "succeeded"
    );

    // Slower, so that the few simulated seconds of the undocumented state are seen.
    let slow = sim(SimConfig {
        speed: 4.0,
        ..fast()
    })
    .await;
    let odd = slow.started_id("cg-c-unknownstate").await;
    slow.wait_state(&odd, &["Warming up"]).await;
    assert_eq!(
        slow.wait_state(&odd, &["succeeded"]).await["state"],
        "succeeded"
    );

    let hang = s.started_id("cg-d-hang").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.verbose(&hang).await["state"], "running");

    let vanish = s.started_id("cg-e-vanish").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gone = s
        .call(
            Method::GET,
            &format!("/workflow/runs/{vanish}?view=verbose"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn fault_markers() {
    let s = sim(fast()).await;
    let e500 = s.start(json!({"config_id": "cg-err500"})).await;
    assert_eq!(e500.status, StatusCode::INTERNAL_SERVER_ERROR);
    let empty = s.start(json!({"config_id": "cg-errempty"})).await;
    assert_eq!(
        (empty.status, empty.text.as_str()),
        (StatusCode::BAD_GATEWAY, "")
    );
    let html = s.start(json!({"config_id": "cg-errhtml"})).await;
    assert_eq!(html.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(html.text.starts_with("<html>"));
    let malformed = s.start(json!({"config_id": "cg-malformed"})).await;
    assert_eq!(malformed.status, StatusCode::CREATED);
    assert!(serde_json::from_str::<Value>(&malformed.text).is_err());
    let deprecated = s.start(json!({"config_id": "cg-deprecated"})).await;
    assert_eq!(deprecated.headers["deprecation"], "true");
    assert!(deprecated.headers.contains_key("sunset"));
    // The run behind a lost answer exists: the list shows it.
    let lost = s.start(json!({"config_id": "cc-lostanswer"})).await;
    assert_eq!(lost.status, StatusCode::INTERNAL_SERVER_ERROR);
    let listed = s
        .call(Method::GET, "/workflow/runs?type=campaign.send", None)
        .await
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // `throttlestart`: a 429 with Retry-After, and nothing created.
    let throttled = s.start(json!({"config_id": "cc-throttlestart"})).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers["retry-after"], "1");
    let listed = s
        .call(Method::GET, "/workflow/runs?type=campaign.send", None)
        .await
        .json();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "still only the lost answer's run"
    );
    // `unavailablestart`: a 503, and nothing created.
    let unavailable = s.start(json!({"config_id": "cc-unavailablestart"})).await;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    // `loststop`: the stop is done, its answer lost.
    let run = s
        .start(json!({"config_id": "cg-hang-loststop"}))
        .await
        .json();
    let id = run["id"].as_str().unwrap();
    let stop = s
        .call(Method::POST, &format!("/workflow/runs/{id}/stop"), None)
        .await;
    assert_eq!(stop.status, StatusCode::INTERNAL_SERVER_ERROR);
    let got = s
        .call(Method::GET, &format!("/workflow/runs/{id}"), None)
        .await
        .json();
    assert!(
        matches!(got["state"].as_str(), Some("stopping" | "canceled")),
        "{got}"
    );
    // Gateway errors never reach the application; 500s and malformed answers did.
    let stats = s.handle.stats();
    assert_eq!(stats.starts_by_config.get("cc-throttlestart"), None);
    assert_eq!(stats.starts_by_config.get("cc-unavailablestart"), None);
    assert_eq!(stats.starts_by_config.get("cg-errempty"), None);
    assert_eq!(stats.starts_by_config["cg-err500"], 1);
    assert_eq!(stats.starts_by_config["cg-malformed"], 1);
}

#[tokio::test]
async fn global_fault_flags() {
    let s = sim(SimConfig {
        fault_5xx_rate: 1.0,
        deprecation: true,
        ..fast()
    })
    .await;
    let a = s.call(Method::GET, "/workflow/runs", None).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.headers.contains_key("deprecation"));
    let storm = sim(SimConfig {
        throttle_storm: Duration::from_secs(60),
        ..fast()
    })
    .await;
    let a = storm.call(Method::GET, "/workflow/runs", None).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "1");
    let slow = sim(SimConfig {
        latency: Duration::from_millis(300),
        ..fast()
    })
    .await;
    let started = std::time::Instant::now();
    slow.call(Method::GET, "/workflow/runs", None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let garbled = sim(SimConfig {
        fault_malformed_rate: 1.0,
        ..fast()
    })
    .await;
    let a = garbled.call(Method::GET, "/workflow/runs", None).await;
    assert!(serde_json::from_str::<Value>(&a.text).is_err());
}

#[tokio::test]
async fn more_than_ten_requests_in_a_second_get_429() {
    let s = sim(SimConfig::default()).await;
    let mut codes = Vec::new();
    for _ in 0..15 {
        codes.push(
            s.call(Method::GET, "/workflow/runs", None)
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 5);
    assert_eq!(s.handle.stats().throttled, 5);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_list_filters_and_pages() {
    let s = sim(SimConfig {
        speed: 1000.0,
        rate_limit: 1000,
        ..SimConfig::default()
    })
    .await;
    for i in 0..7 {
        s.started_id(&format!("cg-list-{i}")).await;
    }
    s.started_id("og-list").await;
    let hang = s.started_id("cc-list-hang").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let all = s
        .call(Method::GET, "/workflow/runs?with_total=true", None)
        .await
        .json();
    assert_eq!(all["total"], 9);
    assert!(all.get("next_token").is_none());
    let no_total = s.call(Method::GET, "/workflow/runs", None).await.json();
    assert!(no_total.get("total").is_none());

    let courier = s
        .call(Method::GET, "/workflow/runs?type=courier.group/run", None)
        .await
        .json();
    assert_eq!(courier["data"].as_array().unwrap().len(), 7);
    let running = s
        .call(Method::GET, "/workflow/runs?state=Running", None)
        .await
        .json();
    let ids: Vec<&str> = running["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [hang.as_str()]);
    let done = s
        .call(
            Method::GET,
            "/workflow/runs?state=succeeded&ended_from=2000-01-01",
            None,
        )
        .await
        .json();
    assert_eq!(done["data"].as_array().unwrap().len(), 8);
    let future = s
        .call(Method::GET, "/workflow/runs?created_from=2999-01-01", None)
        .await
        .json();
    assert_eq!(future["data"], json!([]));
    let past = s
        .call(
            Method::GET,
            "/workflow/runs?created_to=2000-01-01T00:00:00Z",
            None,
        )
        .await
        .json();
    assert_eq!(past["data"], json!([]));
    let bad = s
        .call(Method::GET, "/workflow/runs?created_from=yesterday", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Pages of 4: 4 + 4 + 1, the last without a next_token.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(t) => format!("/workflow/runs?limit=4&next_token={t}"),
            None => "/workflow/runs?limit=4".to_string(),
        };
        let page = s.call(Method::GET, &path, None).await.json();
        pages += 1;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_string()),
        );
        match page["next_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 9);
}

#[tokio::test]
async fn oauth_client_credentials_mint_usable_tokens() {
    let mut s = sim(SimConfig {
        client_id: Some("operator".into()),
        client_secret: Some("s3cret".into()),
        ..fast()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/v0/oauth2/token", s.handle.base_url());
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "operator"),
        ("client_secret", "s3cret"),
    ];
    let a = http
        .post(&url)
        .header("X-Amperity-Tenant", "socktown")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    let body: Value = a.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    s.token = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::OK
    );
    let wrong = [
        ("grant_type", "client_credentials"),
        ("client_id", "operator"),
        ("client_secret", "nope"),
    ];
    let a = http
        .post(&url)
        .header("X-Amperity-Tenant", "socktown")
        .form(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.handle.stats().tokens_issued, 1);
}

#[test]
fn start_requests_the_operator_builds_conform_to_the_openapi_file() {
    // The body the client sends is the decision's RunRequest as JSON.
    let specs = [
        json!({}),
        json!({"runMode": "full"}),
        json!({"range": {"from": "2025-04-18"}}),
        json!({"range": {"from": "2025-04-18", "to": "2025-04-19"}}),
        json!({"range": {"from": "2025-04-18T06:00:00Z", "to": "2025-04-18T07:30:15.250Z"}}),
        json!({"configId": "cc-spring-sale", "runMode": "source"}),
    ];
    for extra in specs {
        let mut spec =
            json!({"tenant": "socktown", "tokenSecretRef": {"name": "s"}, "configId": "cg-1"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let run: AmperityWorkflowRun = serde_json::from_value(json!({
            "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
            "metadata": {"name": "r", "namespace": "n"}, "spec": spec
        }))
        .unwrap();
        let d = decide(
            &run,
            None,
            jiff::Timestamp::now(),
            Memory::default(),
            &Settings::default(),
        );
        let Action::Start(request) = d.action else {
            panic!("{:?}", d.action)
        };
        conforms(
            "WorkflowRunRequest",
            &serde_json::to_value(&request).unwrap(),
        );
    }
}

#[tokio::test]
async fn trust_boundary_fault_markers() {
    let s = sim(SimConfig {
        slow_start: Duration::from_millis(300),
        list_lag: Duration::from_millis(500),
        ..fast()
    })
    .await;
    // A redirect to a metadata address, with a body a client must never show.
    let r = s.start(json!({"config_id": "cg-redirect"})).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], sim::REDIRECT_TARGET);
    // A success answer past 8 MiB.
    let r = s.start(json!({"config_id": "cg-hugebody"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.text.len() > 9 * 1024 * 1024);
    // A 429 asking to wait for ever.
    let r = s.start(json!({"config_id": "cg-retryafterhuge"})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "9999999999999999999");
    // A start refused with a 3 MB message.
    let r = s.start(json!({"config_id": "cg-hugereject"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"].as_str().unwrap().len() >= 3 * 1024 * 1024);
    conforms("ErrorResponse", &r.json());
    // A run failing with a 3 MB error message.
    let id = s.started_id("cg-hugeerror").await;
    let failed = s.wait_state(&id, &["failed"]).await;
    assert!(failed["error"]["message"].as_str().unwrap().len() >= 3 * 1024 * 1024);
    conforms("Workflow", &failed);
    // A slow start: the run exists before the answer comes.
    let started = std::time::Instant::now();
    let r = s.start(json!({"config_id": "cg-slowstart"})).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, StatusCode::CREATED);
    // A lagging list: a new run is listed only after a while.
    let id = s.started_id("og-listlag").await;
    let listed = |v: Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == id.as_str())
    };
    let now = s.call(Method::GET, "/workflow/runs", None).await.json();
    assert!(!listed(now));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = s.call(Method::GET, "/workflow/runs", None).await.json();
    assert!(listed(later));
}

/// The ids a list answer holds, in order.
fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_list_filters_follow_the_openapi_file() {
    let s = sim(fast()).await;
    let hang = s.started_id("cg-filters-hang").await;
    let stopped = s.started_id("cg-filters-stop-hang").await;
    let failed = s.started_id("cg-filters-failcustomer").await;
    let done = s.started_id("og-filters").await;
    s.wait_state(&failed, &["failed"]).await;
    s.wait_state(&done, &["succeeded"]).await;
    s.wait_state(&hang, &["running"]).await;
    let stop = s
        .call(
            Method::POST,
            &format!("/workflow/runs/{stopped}/stop"),
            None,
        )
        .await;
    assert_eq!(stop.status, StatusCode::OK, "{}", stop.text);
    s.wait_state(&stopped, &["canceled"]).await;
    let sim = &s;
    let list = |query: &str| {
        let path = format!("/workflow/runs?{query}");
        async move { sim.call(Method::GET, &path, None).await }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // Items: the overview with the principal and the error, never task instances
    // (the list has no verbose view).
    let all = list("with_total=true").await.json();
    assert_eq!(all["total"], 4);
    assert_eq!(
        ids(&all),
        [&*done, &failed, &stopped, &hang],
        "newest first"
    );
    for w in all["data"].as_array().unwrap() {
        assert!(w.get("task_instances").is_none(), "{w}");
        assert_eq!(w["principal_name"], "API key 1");
    }
    assert_eq!(all["data"][1]["error"]["attribution"], "customer");
    assert!(all["data"][3].get("ended_at").is_none());

    // State, as the documentation names them (any case or separator).
    for (state, expected) in [
        ("In progress", vec![hang.clone()]),
        ("in_progress", vec![hang.clone()]),
        ("running", vec![hang.clone()]),
        ("Stopped", vec![stopped.clone()]),
        ("canceled", vec![stopped.clone()]),
        ("Succeeded", vec![done.clone()]),
        ("FAILED", vec![failed.clone()]),
        ("Stopping", vec![]),
    ] {
        let got = list(&format!("state={}", state.replace(' ', "%20")))
            .await
            .json();
        assert_eq!(ids(&got), expected, "state={state}");
    }
    let orchestrations = list("type=amperity.orchestration.orchestration/run")
        .await
        .json();
    assert_eq!(ids(&orchestrations), [done.as_str()]);

    // Time windows: a full timestamp or a bare date, from inclusive, to exclusive.
    let ended_at = |id: &str| {
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .and_then(|w| w["ended_at"].as_str())
            .unwrap()
            .to_string()
    };
    let edge = ended_at(&done);
    let today = &edge[..10];
    assert_eq!(
        ids(&list(&format!(
            "ended_from={edge}&type=amperity.orchestration.orchestration/run"
        ))
        .await
        .json()),
        [done.as_str()],
        "the from bound is inclusive"
    );
    assert_eq!(
        ids(&list(&format!(
            "ended_to={edge}&type=amperity.orchestration.orchestration/run"
        ))
        .await
        .json()),
        Vec::<String>::new(),
        "the to bound is exclusive"
    );
    let ended_today = list(&format!("ended_from={today}")).await.json();
    assert_eq!(
        sorted(ids(&ended_today)),
        sorted(vec![done.clone(), failed.clone(), stopped.clone()])
    );
    assert_eq!(
        ids(&list(&format!("ended_to={today}")).await.json()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(
            &list(&format!("created_from={today}&created_to=2999-01-01"))
                .await
                .json()
        )
        .len(),
        4
    );
    assert_eq!(
        ids(&list("created_from=2999-01-01T00:00:00Z").await.json()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&list(&format!("created_to={today}")).await.json()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(
            &list("created_from=2000-01-01T00:00:00.000Z&ended_to=2999-01-01")
                .await
                .json()
        )
        .len(),
        3
    );

    // Bad filters answer 400 saying which.
    for (query, says) in [
        ("created_from=yesterday", "created_from"),
        ("ended_from=2026-04-01T00:00:00%2B02:00", "ended_from"),
        ("ended_to=01/04/2026", "ended_to"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("with_total=yes", "with_total"),
        ("next_token=", "next_token"),
        ("next_token=forged", "next_token"),
    ] {
        let a = list(query).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}: {}", a.text);
        assert!(
            a.json()["message"].as_str().unwrap().contains(says),
            "{query}: {}",
            a.text
        );
    }
    assert!(list("with_total=false").await.json().get("total").is_none());
    assert_eq!(list("limit=1000").await.status, StatusCode::OK);
}

#[tokio::test]
async fn list_pages_hold_still_while_runs_are_created() {
    let s = sim(fast()).await;
    for i in 0..7 {
        s.started_id(&format!("cg-page-{i}")).await;
    }
    let first = s
        .call(Method::GET, "/workflow/runs?limit=3", None)
        .await
        .json();
    let token = first["next_token"].as_str().unwrap().to_string();
    // Two new runs between the pages: the next page goes on where the first ended,
    // with neither a run twice nor one left out.
    s.started_id("cg-page-new-1").await;
    s.started_id("cg-page-new-2").await;
    let mut seen = ids(&first);
    let mut next = Some(token);
    while let Some(t) = next {
        let page = s
            .call(
                Method::GET,
                &format!("/workflow/runs?limit=3&next_token={t}"),
                None,
            )
            .await
            .json();
        seen.extend(ids(&page));
        next = page["next_token"].as_str().map(str::to_string);
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7);
    // A full last page has no next_token when nothing follows.
    let exact = s
        .call(Method::GET, "/workflow/runs?limit=9", None)
        .await
        .json();
    assert_eq!(ids(&exact).len(), 9);
    assert!(exact.get("next_token").is_none());
}

#[tokio::test]
async fn runs_end_on_demand_and_lists_can_lie_lag_or_fail() {
    let s = sim(SimConfig {
        list_lag: Duration::from_millis(400),
        ..fast()
    })
    .await;
    let listed = |v: &Value, id: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .cloned()
    };
    // A run ended by the test hook: ended at once, tasks done, and said when.
    let hang = s.started_id("cg-hook-hang").await;
    s.wait_state(&hang, &["running"]).await;
    let before = s.handle.clock();
    let at = s.handle.end_run(&hang, true).unwrap();
    assert!(at >= before && at <= s.handle.clock());
    let ended = s.verbose(&hang).await;
    assert_eq!(ended["state"], "failed");
    assert!(
        ended["task_instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("ended_at").is_some())
    );
    assert_eq!(s.handle.end_run(&hang, false), None, "it has ended already");

    // `unlisted`: never in a list.
    let unlisted = s.started_id("cg-unlisted").await;
    s.wait_state(&unlisted, &["succeeded"]).await;
    let all = s.call(Method::GET, "/workflow/runs", None).await.json();
    assert!(listed(&all, &unlisted).is_none());
    // `listlie`: listed ended while it is still running.
    let liar = s.started_id("cg-listlie-hang").await;
    s.wait_state(&liar, &["running"]).await;
    let all = s.call(Method::GET, "/workflow/runs", None).await.json();
    let lie = listed(&all, &liar).unwrap();
    assert_eq!(lie["state"], "succeeded");
    assert!(lie["ended_at"].is_string());
    assert_eq!(s.verbose(&liar).await["state"], "running");
    // `endlag`: listed still running until the lag has passed since its end.
    let lagging = s.started_id("cg-endlag-hang").await;
    s.wait_state(&lagging, &["running"]).await;
    s.handle.end_run(&lagging, false).unwrap();
    let now = s
        .call(Method::GET, "/workflow/runs?ended_from=2000-01-01", None)
        .await
        .json();
    assert!(listed(&now, &lagging).is_none());
    let shown = s.call(Method::GET, "/workflow/runs", None).await.json();
    assert_eq!(listed(&shown, &lagging).unwrap()["state"], "running");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = s
        .call(Method::GET, "/workflow/runs?ended_from=2000-01-01", None)
        .await
        .json();
    assert_eq!(listed(&later, &lagging).unwrap()["state"], "succeeded");

    // Failing lists, once each, then lists again.
    let lists = s.handle.stats().lists;
    s.handle.fail_lists(&[
        sim::ListFault::Status(500),
        sim::ListFault::Status(400),
        sim::ListFault::Garbage,
    ]);
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::BAD_REQUEST
    );
    let garbage = s.call(Method::GET, "/workflow/runs", None).await;
    assert_eq!(garbage.status, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&garbage.text).is_err());
    assert_eq!(
        s.call(Method::GET, "/workflow/runs", None).await.status,
        StatusCode::OK
    );
    assert_eq!(s.handle.stats().lists, lists + 1);
}

#[tokio::test]
async fn a_list_limit_above_the_configured_one_is_refused() {
    let s = sim(SimConfig {
        list_limit: 100,
        ..fast()
    })
    .await;
    let refused = s.call(Method::GET, "/workflow/runs?limit=101", None).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(refused.text.contains("1 to 100"), "{}", refused.text);
    let taken = s.call(Method::GET, "/workflow/runs?limit=100", None).await;
    assert_eq!(taken.status, StatusCode::OK);
}

#[tokio::test]
async fn the_clock_offset_moves_the_date_header_timestamps_and_filters() {
    let behind = jiff::SignedDuration::from_secs(-600);
    let s = sim(SimConfig {
        clock_offset: behind,
        ..fast()
    })
    .await;
    let before = jiff::Timestamp::now();
    let id = s.started_id("cg-clock-hang").await;
    let run = s
        .call(Method::GET, &format!("/workflow/runs/{id}"), None)
        .await;
    let date = jiff::fmt::rfc2822::parse(run.headers["date"].to_str().unwrap())
        .unwrap()
        .timestamp();
    let off = date.duration_since(before) - behind;
    assert!(off.abs() < jiff::SignedDuration::from_secs(3), "{off:?}");
    let created: jiff::Timestamp = run.json()["created_at"].as_str().unwrap().parse().unwrap();
    let off = created.duration_since(before) - behind;
    assert!(off.abs() < jiff::SignedDuration::from_secs(3), "{off:?}");
    // Filters compare in the simulator's clock: created five minutes ago by ours
    // is in the future by its.
    let from = |at: jiff::Timestamp| at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mine = from(before - jiff::SignedDuration::from_secs(300));
    let theirs = from(before + behind - jiff::SignedDuration::from_secs(5));
    for (since, expected) in [(mine, 0), (theirs, 1)] {
        let page = s
            .call(
                Method::GET,
                &format!("/workflow/runs?created_from={since}"),
                None,
            )
            .await
            .json();
        assert_eq!(ids(&page).len(), expected, "{since}");
    }
}
