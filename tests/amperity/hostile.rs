//! Hostile input over real HTTP: token URLs carrying a password or a key never shown,
//! run ids a URL would drop refused, control characters escaped, and the memory one
//! call may take bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amperity_operator::amperity::wire::{MAX_TASKS, RunRequest};
use amperity_operator::amperity::{
    AllowList, AmperityClient, ClientConfig, ClientError, Credentials, ListQuery, SecretString,
    Target,
};
use amperity_operator::sim::{self, SimConfig};

use super::client::fixed_answer;

const PASSWORD: &str = "PASSWORD-9f3b";
const KEY: &str = "KEY-77e1a0";

fn client() -> AmperityClient {
    AmperityClient::new(ClientConfig {
        rate_limit_per_sec: 10,
        allow: AllowList::parse(&["http://127.0.0.1:*"]).unwrap(),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn target(url: &str) -> Target {
    Target::new(
        Some(url),
        "",
        "socktown",
        "2024-04-01",
        &AllowList::parse(&["http://127.0.0.1:*"]).unwrap(),
    )
    .unwrap()
}

fn oauth(token_url: &str) -> Credentials {
    Credentials::ClientCredentials {
        client_id: "operator".into(),
        client_secret: SecretString::new("client-s3cret"),
        token_url: Some(url::Url::parse(token_url).unwrap()),
    }
}

fn start() -> RunRequest {
    RunRequest {
        config_id: "cg-1".into(),
        ..RunRequest::default()
    }
}

/// Everything a failure may put in a status, an Event or a log: its text and its
/// Debug form, and the credentials' Debug form.
fn assert_never_shown(e: &ClientError, creds: &Credentials, what: &str) {
    let text = format!("{e} | {e:?} | {creds:?}");
    assert!(
        !text.contains(PASSWORD) && !text.contains(KEY) && !text.contains("svc:"),
        "{what}: the token URL leaked: {text}"
    );
}

#[tokio::test]
async fn a_token_url_is_never_shown_with_its_user_info_or_query() {
    // The simulator's own token endpoint, down: the failure names the URL's path only.
    let sim = sim::spawn(SimConfig {
        client_id: Some("operator".into()),
        client_secret: Some("client-s3cret".into()),
        token_unavailable: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let api = target(&sim.base_url());
    let creds = oauth(&format!("{}/v0/oauth2/token?api_key={KEY}", sim.base_url()));
    let e = client()
        .start(&api, &creds, &start(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::TokenExchange { refused: false, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("/api/v0/oauth2/token"), "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    assert_never_shown(&e, &creds, "503 from the simulator");

    // The simulator refuses the client: the refusal names the URL without its key.
    let sim = sim::spawn(SimConfig {
        client_id: Some("operator".into()),
        client_secret: Some("another-secret".into()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let creds = oauth(&format!("{}/v0/oauth2/token?api_key={KEY}", sim.base_url()));
    let e = client()
        .get(&target(&sim.base_url()), &creds, "wf-1")
        .await
        .unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert_never_shown(&e, &creds, "401 from the simulator");

    // A token endpoint that answers 200 without a token, or 500 with an HTML page.
    for (status, body) in [
        ("200 OK", "{\"token\":\"x\"}".to_string()),
        ("500 Internal Server Error", "<html>".to_string()),
    ] {
        let url = fixed_answer(status, body).await;
        let creds = oauth(&format!("{url}/token?api_key={KEY}#{KEY}"));
        let e = client()
            .get(&target(&url), &creds, "wf-1")
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::TokenExchange { .. }), "{e}");
        assert_never_shown(&e, &creds, status);
    }

    // No answer at all: a port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let creds = oauth(&format!("http://127.0.0.1:{port}/token?api_key={KEY}"));
    let e = client()
        .get(&target(&sim.base_url()), &creds, "wf-1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("POST http://127.0.0.1"), "{e}");
    assert_never_shown(&e, &creds, "connection refused");

    // User info: refused by the allow-list before anything is sent, and the
    // refusal shows the URL without it.
    let before = sim.stats().requests;
    let creds = oauth(&format!(
        "http://svc:{PASSWORD}@127.0.0.1:{}/api/v0/oauth2/token?api_key={KEY}",
        sim.addr().port()
    ));
    let e = client()
        .get(&target(&sim.base_url()), &creds, "wf-1")
        .await
        .unwrap_err();
    assert!(e.is_not_allowed(), "{e}");
    assert!(e.to_string().contains("http://127.0.0.1:"), "{e}");
    assert_never_shown(&e, &creds, "user info");
    assert_eq!(sim.stats().requests, before, "nothing was sent");
}

fn run_json(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "state": "running", "type": "courier.group/run", "name": "n"})
}

#[tokio::test]
async fn run_ids_a_url_would_drop_are_refused_wherever_they_enter() {
    // As an argument: refused before a request is made.
    let sim = sim::spawn(SimConfig {
        tokens: vec!["t".into()],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let api = target(&sim.base_url());
    let creds = Credentials::Token(SecretString::new("t"));
    for id in ["", ".", "..", "a/b", "..\\x"] {
        let e = client().get(&api, &creds, id).await.unwrap_err();
        assert!(matches!(e, ClientError::InvalidRunId { .. }), "{id:?}: {e}");
        assert!(!e.is_retryable() && !e.outcome_unknown(), "{e}");
        let e = client().stop(&api, &creds, id, None).await.unwrap_err();
        assert!(matches!(e, ClientError::InvalidRunId { .. }), "{id:?}: {e}");
    }
    assert_eq!(sim.stats().requests, 0, "no id became a URL");

    // In a start's, a poll's or a list's answer.
    for id in [".", "..", ""] {
        let url = fixed_answer("201 Created", run_json(id).to_string()).await;
        let e = client()
            .start(&target(&url), &creds, &start(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Decode {
                    expected: "a workflow id",
                    ..
                }
            ),
            "start answered {id:?}: {e}"
        );
        assert!(e.outcome_unknown(), "searched for, never repeated");
        let url = fixed_answer("200 OK", run_json(id).to_string()).await;
        let e = client()
            .get(&target(&url), &creds, "wf-1")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Decode {
                    expected: "a workflow id",
                    ..
                }
            ),
            "{e}"
        );
        let page = serde_json::json!({"data": [run_json("wf-1"), run_json(id)]});
        let url = fixed_answer("200 OK", page.to_string()).await;
        let e = client()
            .list(&target(&url), &creds, &ListQuery::default(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Decode {
                    expected: "a workflow id",
                    ..
                }
            ),
            "list answered {id:?}: {e}"
        );
    }
}

#[tokio::test]
async fn control_characters_from_amperity_are_escaped() {
    let hostile = "Load\u{1b}]8;;http://evil.test\u{7}click\u{1b}[2J\r\n\u{202e}gpj.exe";
    let run = serde_json::json!({
        "id": "wf-1", "state": "failed", "type": "courier.group/run", "name": hostile,
        "task_instances": [{"id": "t-1", "state": "failed", "label": hostile,
            "error": {"type": hostile, "message": hostile}}],
        "error": {"type": "x", "message": hostile}
    });
    let creds = Credentials::Token(SecretString::new("t"));
    let url = fixed_answer("200 OK", run.to_string()).await;
    let got = client()
        .get(&target(&url), &creds, "wf-1")
        .await
        .unwrap()
        .body;
    let task = &got.task_instances.as_ref().unwrap()[0];
    for text in [
        got.name.as_str(),
        got.error.as_ref().unwrap().message.as_str(),
        task.label.as_deref().unwrap(),
        task.error.as_ref().unwrap().message.as_str(),
        task.error.as_ref().unwrap().error_type.as_str(),
    ] {
        assert!(
            !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{text:?}"
        );
        assert!(text.contains("\\u{1b}[2J"), "escaped, not lost: {text:?}");
    }
    let page = serde_json::json!({"data": [run]});
    let url = fixed_answer("200 OK", page.to_string()).await;
    let listed = client()
        .list(&target(&url), &creds, &ListQuery::default(), None)
        .await
        .unwrap()
        .body;
    assert!(!listed[0].name.chars().any(char::is_control), "{listed:?}");
}

#[tokio::test]
async fn tasks_of_a_run_are_bounded() {
    let task = serde_json::json!({"id": "t", "state": "running"});
    let mut run = run_json("wf-1");
    run["task_instances"] = serde_json::Value::Array(vec![task; MAX_TASKS + 1]);
    let url = fixed_answer("200 OK", run.to_string()).await;
    let creds = Credentials::Token(SecretString::new("t"));
    let e = client()
        .get(&target(&url), &creds, "wf-1")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::TooMuch {
                what: "tasks in one run",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("5000 tasks"), "{e}");
}

/// A server whose every answer is a list page of about `page_bytes` with a fresh
/// `next_token`: a list that never ends, each page within the body limit.
async fn endless_pages(page_bytes: usize) -> (String, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pages = Arc::new(AtomicU64::new(0));
    let served = pages.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = served.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let mut run = run_json(&format!("wf-{n}"));
                run["name"] = "x".repeat(page_bytes).into();
                let body =
                    serde_json::json!({"data": [run], "next_token": format!("p{n}")}).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/api"), pages)
}

#[tokio::test]
async fn the_bytes_of_a_whole_list_are_bounded() {
    let (url, pages) = endless_pages(60 * 1024).await;
    let client = AmperityClient::new(ClientConfig {
        rate_limit_per_sec: 10,
        max_body_bytes: 64 * 1024,
        allow: AllowList::parse(&["http://127.0.0.1:*"]).unwrap(),
        ..ClientConfig::default()
    })
    .unwrap();
    let creds = Credentials::Token(SecretString::new("t"));
    let e = client
        .list(&target(&url), &creds, &ListQuery::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::TooMuch { limit: 262_144, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("narrow the list"), "{e}");
    // Four pages fit in four times the body limit; the fifth passes it.
    assert_eq!(pages.load(Ordering::SeqCst), 5);
}
