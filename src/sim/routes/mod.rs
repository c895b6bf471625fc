//! The simulator's HTTP surface: request checks in the order a real gateway
//! applies them (rate limit, token, tenant, api-version), then the endpoints,
//! then any fault the config id or the flags ask for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::faults::{Faults, HUGE_BODY_BYTES, REDIRECT_BODY, REDIRECT_TARGET};
use super::{Logged, Request, Sim, SimState};

mod list;
mod runs;
mod token;

use list::list;
use runs::{get_run, start, stop};
use token::{stats, token};

const API_VERSION: &str = "2024-04-01";
const RUN_FIELDS: &[&str] = &["config_id", "run_mode", "range_from", "range_to"];

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/api/workflow/runs", post(start).get(list))
        .route("/api/workflow/runs/{id}", get(get_run))
        .route("/api/workflow/runs/{id}/stop", post(stop))
        .route("/api/v0/oauth2/token", post(token))
        .route("/_sim/stats", get(stats))
        .with_state(sim)
}

type Answer = Result<Reply, Reply>;

/// An answer plus the faults to apply on the way out.
struct Reply {
    status: StatusCode,
    body: Body,
    headers: Vec<(&'static str, String)>,
    /// Per-request faults from config-id markers.
    faults: Faults,
}

fn json_reply(status: StatusCode, body: Value) -> Reply {
    Reply {
        status,
        body: Body::from(body.to_string()),
        headers: vec![("content-type", "application/json".into())],
        faults: Faults::default(),
    }
}

/// An error in the documented `{status, message}` shape.
fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json_reply(
        status,
        json!({"status": status.as_u16(), "message": message.into()}),
    )
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = Response::builder().status(self.status);
        for (k, v) in &self.headers {
            response = response.header(*k, v);
        }
        response.body(self.body).expect("valid response parts")
    }
}

/// Applies the gateway checks; on success returns the principal of the caller.
fn admit(
    sim: &Sim,
    headers: &HeaderMap,
    query_version: Option<&str>,
    request: Request,
) -> Result<(String, String), Reply> {
    let mut state = sim.state.lock().unwrap();
    state.stats.requests += 1;
    if sim.config.record_requests {
        let at = sim.started.elapsed().as_secs_f64();
        state.log.push(Logged { at, request });
    }
    let tenant = header(headers, "amperity-tenant");
    let now = Instant::now();
    if now.duration_since(sim.started) < sim.config.throttle_storm {
        return Err(throttled(&mut state));
    }
    let window = state
        .window
        .entry(tenant.clone().unwrap_or_default())
        .or_default();
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        window.pop_front();
    }
    if window.len() >= sim.config.rate_limit as usize {
        return Err(throttled(&mut state));
    }
    window.push_back(now);

    let token = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    let Some(token) = token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send Authorization: Bearer <token>",
        ));
    };
    let principal = if let Some(i) = sim.config.tokens.iter().position(|t| *t == token) {
        (
            format!("api-key|sim-{}", i + 1),
            format!("API key {}", i + 1),
        )
    } else if state.issued.get(&token).is_some_and(|exp| *exp > now) {
        ("oauth|sim-client".to_string(), "OAuth client".to_string())
    } else {
        return Err(error(StatusCode::UNAUTHORIZED, "invalid or expired token"));
    };
    match tenant {
        None => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "missing amperity-tenant header",
            ));
        }
        Some(t) if t != sim.config.tenant => {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!("the token has no access to tenant {t:?}"),
            ));
        }
        Some(_) => {}
    }
    let version = header(headers, "api-version").or(query_version.map(str::to_string));
    match version.as_deref() {
        Some(API_VERSION) => Ok(principal),
        Some(other) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("unsupported api-version {other:?}: use {API_VERSION}"),
        )),
        None => Err(error(StatusCode::BAD_REQUEST, "missing api-version header")),
    }
}

fn throttled(state: &mut SimState) -> Reply {
    state.stats.throttled += 1;
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate limit exceeded: at most 10 requests per second",
    );
    r.headers.push(("retry-after", "1".into()));
    r
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Global flag faults, drawn per request, then the markers' faults and latency.
async fn finish(sim: &Sim, answer: Answer) -> Reply {
    let mut reply = match answer {
        Ok(r) | Err(r) => r,
    };
    let (draw_5xx, draw_malformed) = {
        let mut state = sim.state.lock().unwrap();
        (state.rng.f64(), state.rng.f64())
    };
    let f = reply.faults;
    let ok = reply.status.is_success();
    if f.timeout {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if f.redirect {
        return Reply {
            status: StatusCode::FOUND,
            body: Body::from(REDIRECT_BODY),
            headers: vec![("location", REDIRECT_TARGET.into())],
            faults: f,
        };
    }
    if f.retryafterhuge {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        r.headers
            .push(("retry-after", "9999999999999999999".into()));
        sim.state.lock().unwrap().stats.throttled += 1;
        return r;
    }
    if ok && f.hugebody {
        // The real answer, with a padding field that takes it past any sane limit.
        let real = axum::body::to_bytes(std::mem::take(&mut reply.body), usize::MAX)
            .await
            .unwrap_or_default();
        let mut value: Value = serde_json::from_slice(&real).unwrap_or_else(|_| json!({}));
        value["padding"] = Value::String("x".repeat(HUGE_BODY_BYTES));
        reply.body = Body::from(value.to_string());
    }
    if !sim.config.latency.is_zero() {
        tokio::time::sleep(sim.config.latency).await;
    }
    if f.err500 || (ok && draw_5xx < sim.config.fault_5xx_rate) {
        reply = error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error occurred.",
        );
    } else if f.errempty {
        reply = Reply {
            status: StatusCode::BAD_GATEWAY,
            body: Body::empty(),
            headers: vec![],
            faults: f,
        };
    } else if f.errhtml {
        reply = Reply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Body::from(
                "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            ),
            headers: vec![("content-type", "text/html".into())],
            faults: f,
        };
    } else if ok && (f.malformed || draw_malformed < sim.config.fault_malformed_rate) {
        reply = Reply {
            status: reply.status,
            body: Body::from(r#"{"id": "wf-trunc", "state": "runn"#),
            headers: vec![("content-type", "application/json".into())],
            faults: f,
        };
    }
    // The simulator's clock, as a gateway states it (hyper adds none when one is set).
    reply.headers.push((
        "date",
        jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&sim.config.now())
            .unwrap_or_default(),
    ));
    if f.deprecated || sim.config.deprecation {
        reply.headers.push(("deprecation", "true".into()));
        reply
            .headers
            .push(("sunset", "Wed, 01 Apr 2026 00:00:00 GMT".into()));
    }
    reply
}

/// An ISO 8601 date (midnight UTC) or UTC date-time.
fn parse_time(v: &str) -> Option<Timestamp> {
    if v.len() == 10 {
        let date: jiff::civil::Date = v.parse().ok()?;
        return date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    if !v.ends_with('Z') {
        return None;
    }
    v.parse().ok()
}
