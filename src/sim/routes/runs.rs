//! Starting, reading and stopping one run.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::super::faults::{Faults, HUGE_MESSAGE_BYTES};
use super::super::runs::View;
use super::super::{Request, Sim, SimState, new_run};
use super::{Answer, RUN_FIELDS, Reply, admit, error, finish, json_reply, parse_time};

#[derive(serde::Deserialize)]
pub(super) struct VersionQuery {
    pub(super) api_version: Option<String>,
    pub(super) view: Option<String>,
}

pub(super) async fn start(
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

    // `unavailablestart`: every start is answered 503 before anything is created.
    if lower.contains("unavailablestart") {
        return Err(Reply {
            faults,
            ..error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        });
    }
    // `throttlestart`: every start is answered 429 (Retry-After 1 s) before
    // anything is created.
    if lower.contains("throttlestart") {
        sim.state.lock().unwrap().stats.throttled += 1;
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        r.headers.push(("retry-after", "1".into()));
        return Err(Reply { faults, ..r });
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

pub(super) async fn get_run(
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

pub(super) async fn stop(
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
        // `loststop`: the run is stopped, but the answer is lost (a 500).
        if run.config_id.to_ascii_lowercase().contains("loststop") {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred.",
            ));
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
