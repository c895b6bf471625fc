//! One case played: the operator and the simulator started, the shape's window
//! (steady or burst), its figures measured and checked, everything cleaned up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::sim::{self, Request, SimConfig};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::case::*;
use crate::env::{Kube, Operator};
use crate::env_or;
use crate::observe::{self, Seen};

/// Runs one case and returns its figures and what missed a target.
pub async fn run(kube: &Kube, setting: Setting) -> (Figures, Vec<String>) {
    let Setting {
        n,
        rate,
        poll,
        feed,
        ..
    } = setting;
    let sim = sim::spawn(SimConfig {
        tokens: vec![TOKEN.into()],
        record_requests: true,
        rate_limit: setting.sim_limit,
        clock_offset: jiff::SignedDuration::from_secs(setting.clock_offset.saturating_neg()),
        list_lag: Duration::from_secs(setting.list_lag),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let origin = Instant::now() - Duration::from_secs_f64(sim.clock());
    let label = format!("{n}-{}", if feed { "feed" } else { "polls" });
    let ns = format!("load-{label}-{}", fastrand::u32(..) % 100_000);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(kube.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(kube.client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "amperity-api"}, "stringData": {"token": TOKEN}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let runs: Api<AmperityWorkflowRun> = Api::namespaced(kube.client.clone(), &ns);
    let (seen, watching) = observe::watch(runs.clone(), origin);

    let warmup: f64 = env_or("LOAD_WARMUP", 20.0);
    // Runs in flight, oldest first: the next to end is the one created first.
    let ids = sim.seed_runs(&config_id(&setting, "run"), n);
    create_runs(&runs, &sim, &ids, poll, "load").await;
    tokio::time::sleep(Duration::from_secs(10)).await;

    let op = Operator::spawn(kube, &ns, &sim.base_url(), rate, feed, &label);
    let started = Instant::now();
    let op_started = sim.clock();
    // Adoption writes each run's status once; each is then polled in turn.
    let adopt_for = Duration::from_secs((n as u64 / 20).max(120));
    while seen.lock().unwrap().adopted.len() < n && started.elapsed() < adopt_for {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let adopted_after = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;

    let ctx = Ctx {
        sim: &sim,
        runs: &runs,
        seen: &seen,
        setting,
        ids: &ids,
        op_started,
    };
    let (m0, c0, idle0) = quiet(&op, &seen).await;
    let (cpu0, throttled0) = (op.cpu_seconds(), sim.stats().throttled);
    let window = match setting.shape {
        Shape::Steady => crate::steady::window(&ctx).await,
        Shape::Burst(k) => crate::burst::window(&ctx, k).await,
    };
    let (m1, c1, idle1) = quiet(&op, &seen).await;
    let (cpu1, throttled1) = (op.cpu_seconds(), sim.stats().throttled);
    let errors = op.metric("amperity_operator_reconcile_errors_total").await;

    // Ended runs not showing yet: wait for them, up to a cycle of per-run polls
    // (all there is without the feed), at most LOAD_MAX_WAIT seconds.
    let cycle = (poll as f64).max(n as f64 * setting.period());
    let wait_for = if feed {
        30.0 + setting.list_lag as f64
    } else {
        (1.3 * cycle + 30.0).min(env_or("LOAD_MAX_WAIT", 300.0))
    };
    let deadline = Instant::now() + Duration::from_secs_f64(wait_for);
    while Instant::now() < deadline {
        let all_shown = {
            let seen = seen.lock().unwrap();
            window
                .ends
                .iter()
                .all(|(id, _)| seen.finished_at.contains_key(id))
        };
        if all_shown {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let case_end = sim.clock();
    let (peak, _rss) = (op.peak_rss_mib(), op.rss_mib());
    drop(op);
    watching.abort();

    let log = sim.request_log();
    let mut figures = {
        let seen = seen.lock().unwrap();
        if std::env::var_os("LOAD_TRACE").is_some() {
            trace(&log, &seen, &window.ends, &window.names);
        }
        crate::measure::measure(&setting, &log, &seen, &window, case_end, sim_origin(&sim))
    };
    figures.status_writes = m1 - m0;
    figures.writes_with_news = (c1 - c0) - (idle1 - idle0);
    // A write that changed nothing shows no change; one that changed only what
    // carries no news shows an idle one.
    figures.writes_for_unchanged_polls = (m1 - m0) - (c1 - c0) as f64 + (idle1 - idle0) as f64;
    figures.reconcile_errors = errors;
    figures.throttled = throttled1 - throttled0;
    figures.peak_rss = peak;
    figures.cpu_cores = (cpu1 - cpu0) / (window.to - window.from);
    figures.adopted_after = adopted_after;
    let problems = crate::measure::check(&figures);
    cleanup(&runs, &namespaces, &ns).await;
    (figures, problems)
}

/// For each run that ended: when it was read and listed after its end, and
/// when its end showed.
fn trace(
    log: &[sim::Logged],
    seen: &Seen,
    ends: &[(String, f64)],
    names: &HashMap<String, String>,
) {
    for (id, at) in ends {
        let after = |of: &dyn Fn(&Request) -> bool, until: f64| {
            log.iter()
                .filter(|l| of(&l.request) && l.at >= *at && l.at < until)
                .map(|l| format!("{:.2}", l.at - at))
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "  trace {} {id} ended {at:.2}: reads after +{} shown +{:.2} lists +{}",
            names.get(id).map_or("?", String::as_str),
            after(&|r| matches!(r, Request::Get(i) if i == id), f64::MAX),
            seen.finished_at.get(id).map_or(f64::NAN, |s| s - at),
            after(&|r| *r == Request::List, at + 20.0),
        );
    }
}

/// The writes metric and the status changes seen, at a moment when no write is
/// under way (neither moved for 150 ms, where a write takes a few), so that the
/// two count the same writes.
async fn quiet(op: &Operator, seen: &std::sync::Mutex<Seen>) -> (f64, u64, u64) {
    let counts = || {
        let s = seen.lock().unwrap();
        (s.changes(), s.idle)
    };
    let mut last = None;
    for _ in 0..600 {
        let m = op.metric("amperity_operator_status_writes_total").await;
        let c = counts();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let again = (
            op.metric("amperity_operator_status_writes_total").await,
            counts(),
        );
        if again == (m, c) {
            return (m, c.0, c.1);
        }
        last = Some(again);
    }
    let (m, (c, idle)) = last.unwrap();
    println!("  (no quiet moment in 600 tries: write counts may be off by the writes under way)");
    (m, c, idle)
}

/// This API server has no namespace controller: delete the runs themselves.
/// The operator has exited by now, so nothing would remove the finalizers of
/// unfinished runs and a deletion would only mark them: take the finalizers off
/// first (many at a time), then delete. One request can time out before 10,000
/// are gone; left behind, they would burden every later case on the same API
/// server.
async fn cleanup(
    runs: &Api<AmperityWorkflowRun>,
    namespaces: &Api<k8s_openapi::api::core::v1::Namespace>,
    ns: &str,
) {
    use futures::StreamExt;
    let started = Instant::now();
    let unfinalize = kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let params = kube::api::PatchParams::default();
    let held: Vec<String> = runs
        .list_metadata(&Default::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|r| {
                    r.metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| !f.is_empty())
                })
                .filter_map(|r| r.metadata.name)
                .collect()
        })
        .unwrap_or_default();
    let stripped = futures::stream::iter(&held)
        .map(|name| runs.patch_metadata(name, &params, &unfinalize))
        .buffer_unordered(32)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    let mut left = usize::MAX;
    for _ in 0..10 {
        let _ = runs
            .delete_collection(&Default::default(), &Default::default())
            .await;
        left = runs
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
            .map_or(1, |l| l.items.len());
        if left == 0 {
            break;
        }
    }
    let _ = namespaces.delete(ns, &Default::default()).await;
    println!(
        "  cleanup: {stripped} of {} finalizers taken off, {} in {:.0} s",
        held.len(),
        if left == 0 {
            "every run deleted"
        } else {
            "runs left behind"
        },
        started.elapsed().as_secs_f64()
    );
}
