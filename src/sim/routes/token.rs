//! The OAuth token endpoint and the test hooks' statistics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use super::super::Sim;
use super::{Reply, error, header, json_reply};

pub(super) async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Reply {
    if !sim.config.token_latency.is_zero() {
        tokio::time::sleep(sim.config.token_latency).await;
    }
    let form: HashMap<String, String> = form_pairs(&body);
    let answer = (|| {
        let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
        if sim.config.token_unavailable {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the token service is unavailable",
            ));
        }
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return Err(bad("grant_type must be client_credentials"));
        }
        match header(&headers, "x-amperity-tenant") {
            Some(t) if t == sim.config.tenant => {}
            _ => {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "X-Amperity-Tenant must name this tenant",
                ));
            }
        }
        let (Some(id), Some(secret)) = (&sim.config.client_id, &sim.config.client_secret) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "no client credentials are configured",
            ));
        };
        if form.get("client_id") != Some(id) || form.get("client_secret") != Some(secret) {
            // RFC 6749's answer to unknown or wrong client credentials.
            return Err(json_reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "error_description": "invalid client credentials"}),
            ));
        }
        let mut state = sim.state.lock().unwrap();
        let token: String = (0..40).map(|_| state.rng.alphanumeric()).collect();
        let token = format!("simjwt.{token}");
        state
            .issued
            .insert(token.clone(), Instant::now() + sim.config.token_ttl);
        state.stats.tokens_issued += 1;
        Ok(json_reply(
            StatusCode::OK,
            json!({"access_token": token, "expires_in": sim.config.token_ttl.as_secs(), "token_type": "Bearer"}),
        ))
    })();
    match answer {
        Ok(r) | Err(r) => r,
    }
}

/// Form bodies are `k=v&k=v` with percent-encoding and `+` for spaces.
fn form_pairs(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

pub(super) async fn stats(State(sim): State<Arc<Sim>>) -> impl IntoResponse {
    let mut r = json_reply(StatusCode::OK, serde_json::to_value(sim.stats()).unwrap());
    r.headers.push(("cache-control", "no-store".into()));
    r
}
