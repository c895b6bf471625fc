//! Listing runs: filters, pages and the list's own faults (lies and lag).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use jiff::Timestamp;
use serde_json::json;

use super::super::faults::Faults;
use super::super::runs::{Run, Snapshot, View, stamp, workflow_type};
use super::super::{ListFault, Request, Sim};
use super::{Answer, Reply, admit, error, finish, json_reply, parse_time};

pub(super) async fn list(
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
    fn parse(q: &HashMap<String, String>, max_limit: usize) -> Result<ListFilters, String> {
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
                .filter(|n| (1..=max_limit).contains(n))
                .ok_or_else(|| format!("limit {v:?} must be an integer from 1 to {max_limit}"))?,
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
    let max_limit = sim.config.list_limit.clamp(1, MAX_LIMIT);
    let filters =
        ListFilters::parse(q, max_limit).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
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
