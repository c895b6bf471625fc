//! The Amperity client against the project's simulator over real HTTP: every
//! endpoint, every error class, the budget, OAuth, and that secrets never leak.

use std::time::{Duration, Instant};

use amperity_operator::amperity::wire::{RunRequest, WorkflowState};
use amperity_operator::amperity::{
    AllowList, AmperityClient, ClientConfig, ClientError, Credentials, ListQuery, SecretString,
    Target,
};
use amperity_operator::sim::{self, SimConfig, SimHandle};

const TOKEN: &str = "sim-token-0123456789";

async fn setup(config: SimConfig, client: ClientConfig) -> (SimHandle, AmperityClient, Target) {
    let sim = sim::spawn(SimConfig {
        tokens: vec![TOKEN.into()],
        ..config
    })
    .await
    .unwrap();
    let target = Target::new(
        Some(&sim.base_url()),
        "",
        "socktown",
        "2024-04-01",
        &allow(&sim),
    )
    .unwrap();
    (sim, AmperityClient::new(client).unwrap(), target)
}

/// An allow-list that admits the simulator.
fn allow(sim: &SimHandle) -> AllowList {
    AllowList::parse(&[sim.base_url()]).unwrap()
}

fn fast() -> SimConfig {
    SimConfig {
        speed: 50.0,
        rate_limit: 10_000,
        ..SimConfig::default()
    }
}

fn quick_client() -> ClientConfig {
    ClientConfig {
        rate_limit_per_sec: 10,
        max_retries: 0,
        allow: AllowList::parse(&["http://127.0.0.1:*"]).unwrap(),
        ..ClientConfig::default()
    }
}

fn token() -> Credentials {
    Credentials::Token(SecretString::new(TOKEN))
}

fn start(config: &str) -> RunRequest {
    RunRequest {
        config_id: config.into(),
        ..RunRequest::default()
    }
}

#[tokio::test]
async fn every_endpoint_round_trips() {
    let (sim, client, target) = setup(fast(), quick_client()).await;
    let req = RunRequest {
        config_id: "cg-client".into(),
        run_mode: Some("source".into()),
        range_from: Some("2025-04-18".into()),
        range_to: Some("2025-04-19".into()),
    };
    let started = client
        .start(&target, &token(), &req, None)
        .await
        .unwrap()
        .body;
    assert_eq!(started.state, WorkflowState::Scheduled);
    assert_eq!(started.workflow_type, "courier.group/run");
    assert_eq!(started.task_instances.as_deref(), Some(&[][..]));

    let got = client
        .get(&target, &token(), &started.id)
        .await
        .unwrap()
        .body;
    assert_eq!(got.id, started.id);
    assert!(
        got.task_instances.is_some(),
        "the client asks for the verbose view"
    );

    let stopped = client
        .stop(&target, &token(), &started.id, None)
        .await
        .unwrap()
        .body;
    assert!(
        matches!(
            stopped.state,
            WorkflowState::Stopping | WorkflowState::Succeeded
        ),
        "{:?}",
        stopped.state
    );

    for i in 0..6 {
        client
            .start(&target, &token(), &start(&format!("og-page-{i}")), None)
            .await
            .unwrap();
    }
    let q = ListQuery {
        workflow_type: Some("amperity.orchestration.orchestration/run".into()),
        limit: Some(2),
        ..ListQuery::default()
    };
    let listed = client.list(&target, &token(), &q, None).await.unwrap().body;
    assert_eq!(listed.len(), 6, "every page followed to the end");
    let before = sim.stats().requests;
    client.list(&target, &token(), &q, None).await.unwrap();
    assert_eq!(
        sim.stats().requests - before,
        3,
        "three pages of two, no extra request"
    );
}

#[tokio::test]
async fn every_error_class_is_typed() {
    let (sim, client, target) = setup(fast(), quick_client()).await;
    let wrong = Credentials::Token(SecretString::new("not-the-token"));
    let e = client.get(&target, &wrong, "wf-1").await.unwrap_err();
    assert!(e.is_auth() && e.status() == Some(401), "{e}");
    assert!(e.to_string().contains("check the token"), "{e}");

    let other_tenant = Target::new(
        Some(&sim.base_url()),
        "",
        "othertown",
        "2024-04-01",
        &allow(&sim),
    )
    .unwrap();
    let e = client
        .get(&other_tenant, &token(), "wf-1")
        .await
        .unwrap_err();
    assert!(e.is_auth() && e.status() == Some(403), "{e}");

    let e = client
        .get(&target, &token(), "wf-does-not-exist")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::NotFound { .. }), "{e}");

    let e = client
        .start(&target, &token(), &start("cg-x-rejected"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Rejected { status: 400, .. }) && !e.is_retryable(),
        "{e}"
    );
    assert!(
        e.to_string().contains("does not exist"),
        "the API's message is kept: {e}"
    );

    let e = client
        .start(&target, &token(), &start("cg-err500"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Server { status: 500, .. }) && e.outcome_unknown(),
        "{e}"
    );
    let e = client
        .start(&target, &token(), &start("cg-errempty"), None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the Amperity API failed (HTTP 502: an empty body)"
    );
    let e = client
        .start(&target, &token(), &start("cg-errhtml"), None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the Amperity API failed (HTTP 503: an HTML body)"
    );
    let e = client
        .start(&target, &token(), &start("cg-malformed"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Decode { status: 201, .. }) && e.outcome_unknown(),
        "{e}"
    );

    let version = Target::new(
        Some(&sim.base_url()),
        "",
        "socktown",
        "2020-01-01",
        &allow(&sim),
    )
    .unwrap();
    let e = client.get(&version, &token(), "wf-1").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Rejected { status: 400, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn rate_limits_timeouts_and_refused_connections() {
    let (_sim, client, target) = setup(
        SimConfig {
            throttle_storm: Duration::from_secs(60),
            ..fast()
        },
        quick_client(),
    )
    .await;
    let e = client.get(&target, &token(), "wf-1").await.unwrap_err();
    assert!(
        matches!(e, ClientError::RateLimited { .. }) && e.is_retryable() && !e.outcome_unknown(),
        "{e}"
    );
    assert_eq!(
        e.retry_after(),
        Some(Duration::from_secs(1)),
        "Retry-After is read"
    );

    let (_slow, client, target) = setup(
        SimConfig {
            latency: Duration::from_millis(800),
            ..fast()
        },
        ClientConfig {
            request_timeout: Duration::from_millis(200),
            ..quick_client()
        },
    )
    .await;
    let e = client.get(&target, &token(), "wf-1").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout(_)) && e.outcome_unknown(),
        "{e}"
    );

    let closed = Target::new(
        Some("http://127.0.0.1:9/api"),
        "",
        "socktown",
        "2024-04-01",
        &AllowList::parse(&["http://127.0.0.1:9"]).unwrap(),
    )
    .unwrap();
    let e = client.get(&closed, &token(), "wf-1").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Connect(_)) && e.is_retryable() && !e.outcome_unknown(),
        "{e}"
    );
}

#[tokio::test]
async fn reads_retry_but_a_start_with_unknown_outcome_is_never_repeated() {
    let retrying = ClientConfig {
        max_retries: 2,
        ..quick_client()
    };
    let (sim, client, target) = setup(
        SimConfig {
            fault_5xx_rate: 1.0,
            ..fast()
        },
        retrying.clone(),
    )
    .await;
    let e = client
        .list(&target, &token(), &ListQuery::default(), None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert_eq!(sim.stats().requests, 3, "one try and two retries");

    let (sim, client, target) = setup(fast(), retrying).await;
    client
        .start(&target, &token(), &start("cg-err500"), None)
        .await
        .unwrap_err();
    assert_eq!(
        sim.stats().starts_by_config["cg-err500"],
        1,
        "exactly one POST"
    );
    assert_eq!(sim.stats().requests, 1);
}

#[tokio::test]
async fn deprecation_headers_reach_the_caller() {
    let (_sim, client, target) = setup(fast(), quick_client()).await;
    let reply = client
        .start(&target, &token(), &start("cg-deprecated"), None)
        .await
        .unwrap();
    let notice = reply.deprecation.expect("a deprecation notice");
    assert_eq!(notice.deprecation.as_deref(), Some("true"));
    assert!(notice.sunset.unwrap().contains("2026"));
    let plain = client
        .start(&target, &token(), &start("cg-plain"), None)
        .await
        .unwrap();
    assert!(plain.deprecation.is_none());
}

#[tokio::test]
async fn client_credentials_are_exchanged_once_shared_and_refreshed() {
    let (sim, client, target) = setup(
        SimConfig {
            client_id: Some("operator".into()),
            client_secret: Some("client-s3cret".into()),
            token_ttl: Duration::from_secs(2),
            ..fast()
        },
        quick_client(),
    )
    .await;
    let creds = Credentials::ClientCredentials {
        client_id: "operator".into(),
        client_secret: SecretString::new("client-s3cret"),
        token_url: None,
    };
    let query = ListQuery::default();
    let calls = (0..5).map(|_| client.list(&target, &creds, &query, None));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(
        sim.stats().tokens_issued,
        1,
        "concurrent callers share one exchange"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client
        .list(&target, &creds, &ListQuery::default(), None)
        .await
        .unwrap();
    assert_eq!(
        sim.stats().tokens_issued,
        2,
        "refreshed before use once expired"
    );
    client.forget_token(&target, &creds);
    client
        .list(&target, &creds, &ListQuery::default(), None)
        .await
        .unwrap();
    assert_eq!(
        sim.stats().tokens_issued,
        3,
        "a refused token is exchanged again"
    );

    let bad = Credentials::ClientCredentials {
        client_id: "operator".into(),
        client_secret: SecretString::new("wrong-s3cret"),
        token_url: None,
    };
    let e = client
        .list(&target, &bad, &ListQuery::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::TokenExchange { refused: true, .. }) && e.is_auth(),
        "a wrong client secret is refused credentials: {e}"
    );
    for text in [e.to_string(), format!("{e:?}"), format!("{bad:?}")] {
        assert!(
            !text.contains("wrong-s3cret"),
            "the client secret leaked: {text}"
        );
    }
}

#[tokio::test]
async fn the_budget_spaces_requests_and_sees_no_429() {
    // The simulator allows 10/s; the client's budget is 5/s.
    let (sim, client, target) = setup(
        SimConfig {
            speed: 50.0,
            ..SimConfig::default()
        },
        ClientConfig {
            rate_limit_per_sec: 5,
            ..quick_client()
        },
    )
    .await;
    let started = Instant::now();
    let (creds, query) = (token(), ListQuery::default());
    let calls = (0..20).map(|_| client.list(&target, &creds, &query, None));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3700),
        "20 requests at 5/s took {took:?}"
    );
    assert_eq!(sim.stats().throttled, 0);
}

#[tokio::test]
async fn tokens_never_appear_in_errors() {
    let (_sim, client, target) = setup(fast(), quick_client()).await;
    // The accepted token, so that each call reaches the fault it asks for.
    let creds = token();
    let mut texts = vec![format!("{creds:?}")];
    for config in ["cg-err500", "cg-errhtml", "cg-malformed", "cg-x-rejected"] {
        let e = client
            .start(&target, &creds, &start(config), None)
            .await
            .unwrap_err();
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    }
    let e = client.get(&target, &creds, "wf-1").await.unwrap_err();
    texts.push(format!("{e} {e:?}"));
    for t in texts {
        assert!(!t.contains(TOKEN), "token leaked: {t}");
    }
}

#[tokio::test]
async fn redirects_are_never_followed_and_never_shown() {
    let (sim, client, target) = setup(fast(), quick_client()).await;
    let e = client
        .start(&target, &token(), &start("cg-redirect"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Redirect { status: 302 }), "{e}");
    // A POST redirected may have been processed: never repeated blindly.
    assert!(e.outcome_unknown() && !e.is_retryable());
    let text = format!("{e} {e:?}");
    assert!(!text.contains("169.254"), "the Location leaked: {text}");
    assert!(
        !text.contains(sim::REDIRECT_BODY),
        "the body leaked: {text}"
    );
    assert!(text.contains("302"), "{text}");
    // The metadata address was never asked: only the one request reached the simulator.
    assert_eq!(sim.stats().requests, 1);
}

/// A server that answers 200 with an endless chunked body, counting what it sent.
async fn endless_body() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {
                    counter.fetch_add(64 * 1024, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{addr}/api"), sent)
}

#[tokio::test]
async fn oversized_bodies_are_refused_while_they_stream_in() {
    // From the simulator: a 9 MiB answer against the default 8 MiB limit.
    let (_sim, client, target) = setup(fast(), quick_client()).await;
    let e = client
        .start(&target, &token(), &start("cg-hugebody"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::BodyTooLarge { limit } if limit == 8 * 1024 * 1024),
        "{e}"
    );
    assert!(e.outcome_unknown(), "the start may have been processed");

    // An answer that never ends is cut off at the limit, not buffered for ever.
    let (url, sent) = endless_body().await;
    let client = AmperityClient::new(ClientConfig {
        max_body_bytes: 256 * 1024,
        ..quick_client()
    })
    .unwrap();
    let target = Target::new(
        Some(&url),
        "",
        "socktown",
        "2024-04-01",
        &AllowList::parse(&[url.as_str()]).unwrap(),
    )
    .unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(&target, &token(), "wf-1"),
    )
    .await
    .expect("refused without reading it all")
    .unwrap_err();
    assert!(
        matches!(e, ClientError::BodyTooLarge { limit: 262_144 }),
        "{e}"
    );
    assert!(e.to_string().contains("AMPERITY_MAX_BODY_BYTES"), "{e}");
    // The server got to send little more than the limit plus what sockets buffer.
    let so_far = sent.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        later - so_far < 16 * 1024 * 1024,
        "the client stopped reading: {so_far} then {later}"
    );
}

#[tokio::test]
async fn an_absurd_retry_after_is_capped_not_obeyed() {
    let (_sim, client, target) = setup(fast(), quick_client()).await;
    let e = client
        .start(&target, &token(), &start("cg-retryafterhuge"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::RateLimited { .. }), "{e}");
    assert_eq!(
        e.retry_after(),
        Some(Duration::from_secs(300)),
        "capped at 5 minutes"
    );
    // The tenant's budget paused for the cap (no overflow, no panic): a routine
    // turn now waits out the pause, an urgent one does too.
    let turn = client.reserve_turn(&target, "");
    assert!(turn.wait() > Duration::from_secs(290) && turn.wait() <= Duration::from_secs(300));
}

#[tokio::test]
async fn token_exchange_failures_are_told_apart_and_token_urls_must_be_allowed() {
    let creds = |url: Option<&str>| Credentials::ClientCredentials {
        client_id: "operator".into(),
        client_secret: SecretString::new("client-s3cret"),
        token_url: url.map(|u| url::Url::parse(u).unwrap()),
    };
    // The token endpoint is down: transient, nothing was sent to the API.
    let (sim, client, target) = setup(
        SimConfig {
            client_id: Some("operator".into()),
            client_secret: Some("client-s3cret".into()),
            token_unavailable: true,
            ..fast()
        },
        quick_client(),
    )
    .await;
    let e = client
        .start(&target, &creds(None), &start("cg-oauth"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::TokenExchange { refused: false, .. })
            && e.is_retryable()
            && !e.is_auth(),
        "{e}"
    );
    assert!(!e.outcome_unknown(), "nothing reached the API");
    assert_eq!(sim.stats().starts, 0);

    // A token URL (from the Secret) off the allow-list: the secret goes nowhere.
    let (elsewhere, _sent) = endless_body().await;
    let client = AmperityClient::new(ClientConfig {
        allow: AllowList::parse(&[sim.base_url()]).unwrap(),
        ..quick_client()
    })
    .unwrap();
    let e = client
        .start(
            &target,
            &creds(Some(&format!("{elsewhere}/token"))),
            &start("cg-oauth"),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::EndpointNotAllowed(_)), "{e}");
    assert!(e.to_string().contains("token URL"), "{e}");
    let plain_http = Target::new(
        Some(&sim.base_url()),
        "",
        "socktown",
        "2024-04-01",
        &AllowList::parse(&["https://*.amperity.com"]).unwrap(),
    );
    assert!(matches!(
        plain_http,
        Err(ClientError::EndpointNotAllowed(_))
    ));
}

#[tokio::test]
async fn a_slow_token_exchange_does_not_release_a_burst() {
    // Ten requests wait on one slow exchange (2 s). They take their turns in the
    // budget only once they have the token, so they go out spaced at the budget's
    // rate, not all at once when the token arrives.
    let (sim, client, target) = setup(
        SimConfig {
            client_id: Some("operator".into()),
            client_secret: Some("client-s3cret".into()),
            token_latency: Duration::from_secs(2),
            record_requests: true,
            ..fast()
        },
        ClientConfig {
            rate_limit_per_sec: 5,
            ..quick_client()
        },
    )
    .await;
    let creds = Credentials::ClientCredentials {
        client_id: "operator".into(),
        client_secret: SecretString::new("client-s3cret"),
        token_url: None,
    };
    let query = ListQuery::default();
    let calls = (0..10).map(|_| client.list(&target, &creds, &query, None));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let times: Vec<f64> = sim.request_log().iter().map(|l| l.at).collect();
    assert_eq!(times.len(), 10);
    let most_in_a_second = (0..times.len())
        .map(|i| {
            times
                .iter()
                .filter(|t| **t >= times[i] && **t < times[i] + 1.0)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_in_a_second <= 5,
        "{most_in_a_second} requests in one second: {times:?}"
    );
}

/// A server that answers every request with `status` and the JSON `body`.
pub(crate) async fn fixed_answer(status: &'static str, body: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/api")
}

#[tokio::test]
async fn a_run_id_amperity_could_not_have_handed_out_is_refused_with_its_status() {
    let run = |id: &str| {
        serde_json::json!({
            "id": id, "state": "running", "type": "courier-group",
            "name": "n", "tenant": "acme", "created_at": "2026-01-01T00:00:00Z"
        })
        .to_string()
    };
    let client = AmperityClient::new(quick_client()).unwrap();
    for (status, id, code) in [
        ("201 Created", "wf-1\u{7}\r\nSet-Cookie: x".to_string(), 201),
        ("200 OK", String::new(), 200),
        ("200 OK", "w".repeat(100_000), 200),
    ] {
        let url = fixed_answer(status, run(&id)).await;
        let target = Target::new(
            Some(&url),
            "",
            "acme",
            "2024-04-01",
            &AllowList::parse(&[url.as_str()]).unwrap(),
        )
        .unwrap();
        let e = if code == 201 {
            client.start(&target, &token(), &start("cg-x"), None).await
        } else {
            client.get(&target, &token(), "wf-1").await
        }
        .unwrap_err();
        assert!(
            matches!(e, ClientError::Decode { status, expected: "a workflow id", .. } if status == code),
            "{e:?}"
        );
        // The answer to a start came: whether a run was made is unknown, so it is
        // searched for, never repeated.
        assert!(code != 201 || e.outcome_unknown(), "{e}");
        assert!(
            e.to_string().len() < 2000,
            "the id is cut in the error: {e}"
        );
    }
}

/// Records what the client reports of OAuth token exchanges.
#[derive(Default)]
struct Exchanges(std::sync::Mutex<Vec<(String, &'static str)>>);

impl amperity_operator::amperity::Observer for Exchanges {
    fn request(&self, _: &'static str, _: &str, _: Option<u16>, _: Duration) {}
    fn waited(&self, _: Duration) {}
    fn token_exchange(&self, tenant: &str, outcome: &'static str) {
        self.0.lock().unwrap().push((tenant.to_string(), outcome));
    }
}

#[tokio::test]
async fn every_token_exchange_is_reported_by_outcome() {
    let creds = |secret: &str| Credentials::ClientCredentials {
        client_id: "operator".into(),
        client_secret: SecretString::new(secret),
        token_url: None,
    };
    let mut seen = Vec::new();
    for (unavailable, secret, outcome) in [
        (false, "client-s3cret", "ok"),
        (false, "wrong", "refused"),
        (true, "client-s3cret", "failed"),
    ] {
        let observer = std::sync::Arc::new(Exchanges::default());
        let (_sim, client, target) = setup(
            SimConfig {
                client_id: Some("operator".into()),
                client_secret: Some("client-s3cret".into()),
                token_unavailable: unavailable,
                ..fast()
            },
            ClientConfig {
                observer: Some(observer.clone()),
                ..quick_client()
            },
        )
        .await;
        let _ = client
            .list(&target, &creds(secret), &ListQuery::default(), None)
            .await;
        // A cached token is no exchange.
        let _ = client
            .list(&target, &creds(secret), &ListQuery::default(), None)
            .await;
        let got = observer.0.lock().unwrap().clone();
        let want = if outcome == "ok" { 1 } else { 2 };
        assert_eq!(got.len(), want, "{outcome}: {got:?}");
        assert!(
            got.iter().all(|(t, o)| t == "socktown" && *o == outcome),
            "{got:?}"
        );
        seen.push(outcome);
    }
    assert_eq!(seen, ["ok", "refused", "failed"]);
}

#[tokio::test]
async fn a_request_that_cannot_be_built_is_never_sent_and_never_shows_the_token() {
    let (sim, client, target) = setup(fast(), quick_client()).await;
    // A header value cannot hold a line break: the request builder refuses it.
    let bad = "sim-token\nwith-a-line-break";
    let creds = Credentials::Token(SecretString::new(bad));
    let e = client
        .start(&target, &creds, &start("cg-1"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Unsent(_)), "{e:?}");
    assert!(
        !e.outcome_unknown() && e.is_retryable(),
        "nothing left, so nothing can have started: {e:?}"
    );
    assert_eq!(
        sim.stats().requests,
        0,
        "the simulator got no request at all"
    );
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("sim-token") && !shown.contains("line-break"),
        "{shown}"
    );
}

#[tokio::test]
async fn answers_carry_amperitys_clock_from_its_date_header() {
    let (_sim, client, target) = setup(fast(), quick_client()).await;
    let before = jiff::Timestamp::now();
    let reply = client
        .list(&target, &token(), &ListQuery::default(), None)
        .await
        .unwrap();
    let date = reply.date.expect("the simulator's server sends Date");
    let skew = date.duration_since(before).abs();
    assert!(
        skew < jiff::SignedDuration::from_secs(3),
        "{date} vs {before}"
    );
    let started = client
        .start(&target, &token(), &start("cg-1"), None)
        .await
        .unwrap();
    assert!(started.date.is_some());
}
