//! The simulator's HTTP surface: request checks in the order a real gateway
//! applies them (rate limit, token, tenant, api-version), then the endpoints,
//! then any fault the config id or the flags ask for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::runs::{Run, Snapshot, View, stamp, workflow_type};
use super::{ListFault, Logged, Request, Sim, SimState, new_run};

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

#[derive(Clone, Copy, Default)]
struct Faults {
    err500: bool,
    errempty: bool,
    errhtml: bool,
    malformed: bool,
    timeout: bool,
    deprecated: bool,
    redirect: bool,
    hugebody: bool,
    retryafterhuge: bool,
    slowstart: bool,
}

/// Where `redirect` points: a cloud metadata address, what an attacker would pick.
pub const REDIRECT_TARGET: &str =
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
/// The body that goes with the redirect: must never reach a status.
pub const REDIRECT_BODY: &str = "redirected-secret-body";
/// Bytes of padding `hugebody` adds to a successful answer (past the client's 8 MiB).
pub const HUGE_BODY_BYTES: usize = 9 * 1024 * 1024;
/// Bytes of the messages of `hugeerror` and `hugereject`.
pub const HUGE_MESSAGE_BYTES: usize = 3 * 1024 * 1024;

impl Faults {
    fn for_config(config_id: &str) -> Faults {
        let id = config_id.to_ascii_lowercase();
        Faults {
            err500: id.contains("err500"),
            errempty: id.contains("errempty"),
            errhtml: id.contains("errhtml"),
            malformed: id.contains("malformed"),
            timeout: id.contains("timeout"),
            deprecated: id.contains("deprecated"),
            redirect: id.contains("redirect"),
            hugebody: id.contains("hugebody"),
            retryafterhuge: id.contains("retryafterhuge"),
            slowstart: id.contains("slowstart"),
        }
    }
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
    if f.deprecated || sim.config.deprecation {
        reply.headers.push(("deprecation", "true".into()));
        reply
            .headers
            .push(("sunset", "Wed, 01 Apr 2026 00:00:00 GMT".into()));
    }
    reply
}

#[derive(serde::Deserialize)]
struct VersionQuery {
    api_version: Option<String>,
    view: Option<String>,
}

async fn start(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let answer = start_inner(&sim, q.api_version.as_deref(), &headers, &body);
    // `slowstart`: the run exists at once, its answer comes late (past a client's
    // timeout, or while the operator is killed).
    if answer.as_ref().is_ok_and(|r| r.faults.slowstart) {
        tokio::time::sleep(sim.config.slow_start).await;
    }
    finish(&sim, answer).await
}

fn start_inner(sim: &Sim, version: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Answer {
    let principal = admit(sim, headers, version, Request::Start)?;
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| bad("the body must be one JSON object".to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("the body must be one JSON object".to_string()))?;
    if let Some(unknown) = obj.keys().find(|k| !RUN_FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown property {unknown:?}: allowed are {}",
            RUN_FIELDS.join(", ")
        )));
    }
    let text = |k: &str| -> Result<Option<&str>, Reply> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad(format!("{k} must be a string"))),
        }
    };
    let config_id = text("config_id")?
        .ok_or_else(|| bad("config_id is required".to_string()))?
        .to_string();
    let faults = Faults::for_config(&config_id);
    let range_from = text("range_from")?;
    let range_to = text("range_to")?;
    if let Some(mode) = text("run_mode")?
        && !matches!(mode, "full" | "refresh" | "source")
    {
        return Err(bad(format!(
            "run_mode {mode:?} is not one of full, refresh, source"
        )));
    }
    if range_to.is_some() && range_from.is_none() {
        return Err(bad("range_to requires range_from".to_string()));
    }
    let from = range_from
        .map(|v| {
            parse_time(v).ok_or_else(|| {
                bad(format!(
                    "range_from {v:?} is not an ISO 8601 UTC date or date-time"
                ))
            })
        })
        .transpose()?;
    let to = range_to
        .map(|v| {
            parse_time(v).ok_or_else(|| {
                bad(format!(
                    "range_to {v:?} is not an ISO 8601 UTC date or date-time"
                ))
            })
        })
        .transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && t <= f
    {
        return Err(bad("range_to must be after range_from".to_string()));
    }
    let lower = config_id.to_ascii_lowercase();
    let known_prefix = matches!(config_id.get(..3), Some("cg-" | "og-" | "cc-"));
    if !known_prefix || lower.contains("rejected") {
        return Err(bad(format!(
            "config_id {config_id:?} does not exist in this tenant"
        )));
    }
    if lower.contains("hugereject") {
        return Err(bad(format!(
            "the request was refused: {}",
            "é".repeat(HUGE_MESSAGE_BYTES / 2)
        )));
    }
    if lower.contains("needsrange") && range_from.is_none() {
        return Err(bad(
            "range_from is required for this courier group: it pulls files from cloud storage"
                .to_string(),
        ));
    }
    // Gateway errors (empty and HTML bodies) never reach the application.
    if faults.errempty || faults.errhtml {
        return Err(Reply {
            faults,
            ..error(StatusCode::BAD_GATEWAY, "")
        });
    }

    let mut state = sim.state.lock().unwrap();
    let run = new_run(&mut state, &sim.config, &config_id, principal);
    let body = run.to_json(0.0, sim.config.speed, View::Verbose);
    state.runs.push(run);
    state.created.push(Instant::now());
    state.stats.starts += 1;
    *state
        .stats
        .starts_by_config
        .entry(config_id.clone())
        .or_default() += 1;
    // `lostanswer`: the run is created, but the answer is lost (a 500).
    if lower.contains("lostanswer") {
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error occurred.",
        ));
    }
    Ok(Reply {
        faults,
        ..json_reply(StatusCode::CREATED, body)
    })
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

/// The index of run `id`, or the API's 404.
fn find(state: &SimState, id: &str) -> Result<usize, Reply> {
    state
        .runs
        .iter()
        .position(|r| r.id == id)
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> Reply {
    error(StatusCode::NOT_FOUND, format!("workflow {id} not found"))
}

async fn get_run(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
) -> Reply {
    let answer = (|| {
        admit(
            &sim,
            &headers,
            q.api_version.as_deref(),
            Request::Get(id.clone()),
        )?;
        let state = sim.state.lock().unwrap();
        let i = find(&state, &id)?;
        let run = &state.runs[i];
        let t = sim.elapsed(state.created[i]);
        let faults = Faults::for_config(&run.config_id);
        if run.scenario.vanish && t >= 1.0 {
            return Err(not_found(&id));
        }
        let view = match q.view.as_deref() {
            None | Some("overview") => View::Overview,
            Some("verbose") => View::Verbose,
            Some(other) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("view {other:?} is not overview or verbose"),
                ));
            }
        };
        Ok(Reply {
            faults,
            ..json_reply(StatusCode::OK, run.to_json(t, sim.config.speed, view))
        })
    })();
    finish(&sim, answer).await
}

async fn stop(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
) -> Reply {
    let answer = (|| {
        admit(
            &sim,
            &headers,
            q.api_version.as_deref(),
            Request::Stop(id.clone()),
        )?;
        let mut state = sim.state.lock().unwrap();
        let i = find(&state, &id)?;
        let t = sim.elapsed(state.created[i]);
        state.stats.stops += 1;
        let run = &mut state.runs[i];
        if run.stopped_at.is_none() && run.at(t).ended.is_none() {
            run.stopped_at = Some(t);
        }
        let faults = Faults::for_config(&run.config_id);
        Ok(Reply {
            faults,
            ..json_reply(
                StatusCode::OK,
                run.to_json(t, sim.config.speed, View::Verbose),
            )
        })
    })();
    finish(&sim, answer).await
}

async fn list(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Reply {
    let answer = list_inner(&sim, &q, &headers);
    finish(&sim, answer).await
}

/// The list's filters, as the OpenAPI file describes them: time windows (from
/// inclusive, to exclusive; a full UTC timestamp or a bare date, which is
/// midnight UTC), `state` and `type`, `limit`, `next_token`, `with_total`.
struct ListFilters {
    created_from: Option<Timestamp>,
    created_to: Option<Timestamp>,
    ended_from: Option<Timestamp>,
    ended_to: Option<Timestamp>,
    state: Option<String>,
    workflow_type: Option<String>,
    limit: usize,
    /// Only runs created before the run at this index (the last one of the page
    /// before): a page boundary stays put while new runs are created.
    before: Option<usize>,
    with_total: bool,
}

/// The longest page; without `limit`, pages of 100.
const MAX_LIMIT: usize = 1000;

impl ListFilters {
    fn parse(q: &HashMap<String, String>) -> Result<ListFilters, String> {
        let bound = |k: &str| -> Result<Option<Timestamp>, String> {
            q.get(k)
                .map(|v| {
                    parse_time(v).ok_or_else(|| {
                        format!("{k} {v:?} is not an ISO 8601 UTC timestamp (2026-04-01T00:00:00Z) or date (2026-04-01)")
                    })
                })
                .transpose()
        };
        let limit = match q.get("limit") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| format!("limit {v:?} must be an integer from 1 to {MAX_LIMIT}"))?,
            None => 100,
        };
        let before = match q.get("next_token") {
            Some(t) if t.is_empty() => return Err("next_token cannot be empty".to_string()),
            Some(t) => Some(
                decode_token(t)
                    .ok_or_else(|| format!("next_token {t:?} is not one this API handed out"))?,
            ),
            None => None,
        };
        let with_total = match q.get("with_total").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => return Err(format!("with_total {v:?} must be true or false")),
        };
        Ok(ListFilters {
            created_from: bound("created_from")?,
            created_to: bound("created_to")?,
            ended_from: bound("ended_from")?,
            ended_to: bound("ended_to")?,
            state: q.get("state").map(|s| state_class(s)),
            workflow_type: q.get("type").cloned(),
            limit,
            before,
            with_total,
        })
    }

    fn keep(
        &self,
        run: &Run,
        created: Timestamp,
        snap: &Snapshot,
        ended: Option<Timestamp>,
    ) -> bool {
        let within = |at: Option<Timestamp>, from: Option<Timestamp>, to: Option<Timestamp>| {
            (from.is_none() && to.is_none())
                || at.is_some_and(|at| from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t))
        };
        within(Some(created), self.created_from, self.created_to)
            && within(ended, self.ended_from, self.ended_to)
            && self
                .state
                .as_ref()
                .is_none_or(|s| state_class(snap.state) == *s)
            && self
                .workflow_type
                .as_ref()
                .is_none_or(|ty| workflow_type(&run.config_id) == ty)
    }
}

/// A state as the list's filter compares it: any case and separator, and the
/// names the documentation uses for the states runs report ("In progress" for
/// running, "Stopped" for canceled).
fn state_class(state: &str) -> String {
    let s = state.to_ascii_lowercase().replace([' ', '_', '-'], "");
    match s.as_str() {
        "inprogress" => "running".to_string(),
        "stopped" | "cancelled" => "canceled".to_string(),
        _ => s,
    }
}

/// A moment as the API shows it (milliseconds) and as that text reads back, so
/// that a filter compares exactly what a client sees.
fn shown(base: Timestamp, real_secs: f64) -> Timestamp {
    stamp(base, real_secs).parse().unwrap_or(base)
}

fn list_inner(sim: &Sim, q: &HashMap<String, String>, headers: &HeaderMap) -> Answer {
    admit(
        sim,
        headers,
        q.get("api_version").map(String::as_str),
        Request::List,
    )?;
    let filters = ListFilters::parse(q).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
    let mut state = sim.state.lock().unwrap();
    match state.list_faults.pop_front() {
        Some(ListFault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(error(
                status,
                "the list failed (a fault the test asked for)",
            ));
        }
        Some(ListFault::Garbage) => {
            return Ok(Reply {
                status: StatusCode::OK,
                body: Body::from("<html>not a list</html>"),
                headers: vec![("content-type", "text/html".into())],
                faults: Faults::default(),
            });
        }
        None => {}
    }
    let speed = sim.config.speed;
    let before = filters.before.unwrap_or(state.runs.len());
    let (mut page, mut total, mut more) = (Vec::new(), 0, false);
    let mut last = None;
    // Newest first, as the API lists them.
    for i in (0..state.runs.len()).rev() {
        let run = &state.runs[i];
        // `listlag`: a new run shows in lists only after a while, as an eventually
        // consistent index would; `unlisted`: never.
        if run.scenario.unlisted
            || (run.config_id.to_ascii_lowercase().contains("listlag")
                && state.created[i].elapsed() < sim.config.list_lag)
        {
            continue;
        }
        let t = sim.elapsed(state.created[i]);
        let snap = listed_snapshot(run, t, speed, sim.config.list_lag);
        let created = shown(run.created_at, 0.0);
        let ended = snap.ended.map(|e| shown(run.created_at, e / speed));
        if !filters.keep(run, created, &snap, ended) {
            continue;
        }
        total += 1;
        if i >= before {
            continue;
        }
        if page.len() < filters.limit {
            page.push(run.snapshot_json(&snap, speed, View::Listed));
            last = Some(i);
        } else {
            more = true;
            if !filters.with_total {
                break;
            }
        }
    }
    let mut body = json!({"data": page});
    if more && let Some(i) = last {
        body["next_token"] = json!(encode_token(i));
    }
    if filters.with_total {
        body["total"] = json!(total);
    }
    state.stats.lists += 1;
    Ok(json_reply(StatusCode::OK, body))
}

/// How a run shows in a list at `t`: as it is, unless a marker makes the list
/// lie (`listlie`: succeeded a second after it was created) or lag (`endlag`:
/// still going until `lag` after it ended).
fn listed_snapshot(run: &Run, t: f64, speed: f64, lag: Duration) -> Snapshot {
    let snap = run.at(t);
    if run.scenario.list_lie && snap.ended.is_none() {
        return Snapshot {
            state: "succeeded",
            ended: Some(1.0_f64.min(t)),
            error: None,
            tasks: Vec::new(),
        };
    }
    if run.scenario.end_lag
        && let Some(end) = snap.ended
        && (t - end) / speed < lag.as_secs_f64()
    {
        return run.at((end - 1e-6).max(0.0));
    }
    snap
}

fn encode_token(index: usize) -> String {
    format!("nt{:x}", index ^ 0x5a5a)
}

fn decode_token(token: &str) -> Option<usize> {
    usize::from_str_radix(token.strip_prefix("nt")?, 16)
        .ok()
        .map(|v| v ^ 0x5a5a)
}

async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Reply {
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

async fn stats(State(sim): State<Arc<Sim>>) -> impl IntoResponse {
    let mut r = json_reply(StatusCode::OK, serde_json::to_value(sim.stats()).unwrap());
    r.headers.push(("cache-control", "no-store".into()));
    r
}
