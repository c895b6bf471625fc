//! One load case: N runs in flight, runs ending at a steady rate through the
//! measuring window (each replaced by a new one, so N stay in flight), the change
//! feed on or off; the figures, and what missed a target.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::sim::{self, Request, SimConfig, SimHandle};
use futures::StreamExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::env::{Kube, Operator};
use crate::env_or;
use crate::observe::{self, Seen};

const TOKEN: &str = "load-token";

/// What was asked of a case.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub n: usize,
    /// The operator's budget, requests per second.
    pub rate: u32,
    /// pollInterval, seconds.
    pub poll: u64,
    pub feed: bool,
    pub shape: Shape,
    /// How far the operator's clock is ahead of Amperity's (the simulator's),
    /// seconds (negative: behind).
    pub clock_offset: i64,
    /// Seconds after its end before a list shows a run ended (0: at once).
    pub list_lag: u64,
    /// Requests per second the simulator takes before answering 429: the budget
    /// unless LOAD_SIM_LIMIT says otherwise, so that a budget overrun shows as 429s.
    pub sim_limit: u32,
}

/// How runs end through the measuring window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Runs end at half the budget, each replaced by a new one.
    Steady,
    /// This many runs end within one second; stops are requested while the
    /// operator works through them.
    Burst(usize),
}

impl Setting {
    /// Seconds between two turns of the budget (1.03 s / rate).
    pub fn period(&self) -> f64 {
        1.03 / self.rate as f64
    }

    /// Runs end at half the budget.
    pub fn end_rate(&self) -> f64 {
        self.rate as f64 / 2.0
    }

    /// The case in words: shape, clock and list.
    pub fn label(&self) -> String {
        let mut label = match self.shape {
            Shape::Steady => "steady".to_string(),
            Shape::Burst(k) => format!("burst {k}"),
        };
        if self.clock_offset != 0 {
            label.push_str(&format!(", operator clock {:+}s", self.clock_offset));
        }
        if self.list_lag != 0 {
            label.push_str(&format!(", list lag {}s", self.list_lag));
        }
        label
    }
}

/// The figures of one case.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub setting: Option<Setting>,
    pub ended: usize,
    /// end → status, seconds: p50, p99, max (None: no run ended).
    pub delay: Option<(f64, f64, f64)>,
    /// Ended runs whose end had not shown by the end of the case.
    pub unseen: usize,
    pub requests_per_s: f64,
    pub max_in_a_second: usize,
    pub throttled: u64,
    pub lists: usize,
    /// Every request of the window over the runs that ended in it.
    pub requests_per_finished_run: f64,
    /// The reads of ended runs after their end, and the lists, over those runs.
    pub after_end_per_finished_run: f64,
    /// Between two polls of a run in flight the whole window: median, p99, max,
    /// and the longest any run waited (including runs not polled again yet).
    pub intervals: Option<(f64, f64, f64)>,
    pub intervals_seen: usize,
    pub longest_wait: f64,
    /// Per-run polls' cycle: N over the polls per second the feed and the reads of
    /// ended runs leave.
    pub routine_cycle: f64,
    /// From each stop's request (spec.stop set) to its stop reaching Amperity,
    /// seconds: max, and how many stops never arrived.
    pub stop_latency: Option<f64>,
    /// From the operator's decision to stop (status.stopRequestedAt, to the
    /// second) to the stop reaching Amperity, seconds: max.
    pub stop_after_decision: Option<f64>,
    /// Ended runs not read after their end yet (their final task summary, at
    /// routine priority, is still to come): each will cost one request.
    pub summaries_owed: usize,
    pub stops: usize,
    pub stops_lost: usize,
    pub status_writes: f64,
    pub writes_with_news: u64,
    pub writes_for_unchanged_polls: f64,
    pub reconcile_errors: f64,
    pub peak_rss: f64,
    pub cpu_cores: f64,
    pub window: f64,
    pub adopted_after: f64,
}

/// What a case's shape did through its window, for the measures.
#[derive(Default)]
pub struct Window {
    /// Runs that ended, and when (simulator clock).
    pub ends: Vec<(String, f64)>,
    /// When each run came in flight.
    pub born: HashMap<String, f64>,
    /// Resource names by workflow id (for traces).
    pub names: HashMap<String, String>,
    /// Runs whose stop was requested, and when.
    pub stops: Vec<(String, f64)>,
    /// The window, on the simulator's clock.
    pub from: f64,
    pub to: f64,
}

/// A case under way: its simulator, its namespace's runs, and its setting.
pub struct Ctx<'a> {
    pub sim: &'a SimHandle,
    pub runs: &'a Api<AmperityWorkflowRun>,
    pub seen: &'a std::sync::Mutex<Seen>,
    pub setting: Setting,
    /// Runs in flight when the operator started, oldest first.
    pub ids: &'a [String],
    /// When the operator started (simulator clock).
    pub op_started: f64,
}

/// Where the simulator's clock (seconds since it started) began, in real time.
pub fn sim_origin(sim: &SimHandle) -> jiff::Timestamp {
    jiff::Timestamp::now() - jiff::SignedDuration::from_secs_f64(sim.clock())
}

/// The config id of the load's runs: they hang until ended, and lists show
/// their end late when the case asks for a lagging list.
pub fn config_id(setting: &Setting, what: &str) -> String {
    let lag = if setting.list_lag > 0 { "-endlag" } else { "" };
    format!("cg-load-{what}{lag}-hang")
}

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

pub async fn create_runs(
    runs: &Api<AmperityWorkflowRun>,
    sim: &SimHandle,
    ids: &[String],
    poll: u64,
    prefix: &str,
) {
    let base = sim.base_url();
    futures::stream::iter(ids.iter().enumerate())
        .for_each_concurrent(16, |(i, id)| {
            let (runs, base) = (runs.clone(), base.clone());
            async move { create_run(&runs, &base, id, poll, format!("{prefix}-{i}")).await }
        })
        .await;
}

/// A resource adopting simulator run `id` (spec.workflowId): no start, polls only.
pub async fn create_run(
    runs: &Api<AmperityWorkflowRun>,
    base: &str,
    id: &str,
    poll: u64,
    name: String,
) {
    let run: AmperityWorkflowRun = serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": name},
        "spec": {"tenant": "socktown", "endpoint": base, "tokenSecretRef": {"name": "amperity-api"},
                 "configId": "cg-load", "workflowId": id, "pollInterval": format!("{poll}s"),
                 "deletionPolicy": "Orphan"}
    }))
    .unwrap();
    runs.create(&PostParams::default(), &run).await.unwrap();
}

/// This API server has no namespace controller: delete the runs themselves. One
/// request can time out before 10,000 are gone; left behind, they would burden
/// every later case on the same API server.
async fn cleanup(
    runs: &Api<AmperityWorkflowRun>,
    namespaces: &Api<k8s_openapi::api::core::v1::Namespace>,
    ns: &str,
) {
    for _ in 0..10 {
        let _ = runs
            .delete_collection(&Default::default(), &Default::default())
            .await;
        let left = runs
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_or(1, |l| l.items.len());
        if left == 0 {
            break;
        }
    }
    let _ = namespaces.delete(ns, &Default::default()).await;
}
