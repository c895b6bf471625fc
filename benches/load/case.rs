//! One load case: N runs in flight, runs ending at a steady rate through the
//! measuring window (each replaced by a new one, so N stay in flight), the change
//! feed on or off; the figures, and what missed a target.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::sim::{self, Request, SimConfig, SimHandle};
use futures::StreamExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::env::{Kube, Operator};
use crate::observe::{self, Seen};
use crate::{env_or, percentile};

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
}

impl Setting {
    /// Seconds between two turns of the budget (1.03 s / rate).
    fn period(&self) -> f64 {
        1.03 / self.rate as f64
    }

    /// Runs end at half the budget.
    fn end_rate(&self) -> f64 {
        self.rate as f64 / 2.0
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
    pub requests_per_finished_run: f64,
    /// Between two polls of a run in flight the whole window: median, p99, max,
    /// and the longest any run waited (including runs not polled again yet).
    pub intervals: Option<(f64, f64, f64)>,
    pub intervals_seen: usize,
    pub longest_wait: f64,
    /// Per-run polls' cycle: N over the polls per second the feed and the reads of
    /// ended runs leave.
    pub routine_cycle: f64,
    pub status_writes: f64,
    pub writes_with_news: u64,
    pub writes_for_unchanged_polls: f64,
    pub reconcile_errors: f64,
    pub peak_rss: f64,
    pub cpu_cores: f64,
    pub window: f64,
    pub adopted_after: f64,
}

/// Runs one case and returns its figures and what missed a target.
pub async fn run(kube: &Kube, setting: Setting) -> (Figures, Vec<String>) {
    let Setting {
        n,
        rate,
        poll,
        feed,
    } = setting;
    let sim = sim::spawn(SimConfig {
        tokens: vec![TOKEN.into()],
        record_requests: true,
        rate_limit: 10,
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
    let window = env_or("LOAD_MAX_WINDOW", 180.0);
    // Runs in flight, oldest first: the next to end is the one created first.
    let ids = sim.seed_runs("cg-load-hang", n);
    // Replacements, seeded now so that their tasks are done when they are adopted:
    // nothing about them changes after their first poll.
    let spares = sim.seed_runs(
        "cg-load-spare-hang",
        (window * setting.end_rate()).ceil() as usize + 10,
    );
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

    // The window: runs end at half the budget, each replaced by a new run.
    let (m0, c0, idle0) = quiet(&op, &seen).await;
    let (w0, cpu0, throttled0) = (sim.clock(), op.cpu_seconds(), sim.stats().throttled);
    let mut in_flight: VecDeque<String> = ids.iter().cloned().collect();
    let mut spare = spares.iter();
    let mut ends: Vec<(String, f64)> = Vec::new();
    let mut names: HashMap<String, String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("load-{i}")))
        .collect();
    // When each run came in flight: the first ones when the operator started.
    let mut born: HashMap<String, f64> = ids.iter().map(|id| (id.clone(), op_started)).collect();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / setting.end_rate()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut replacing = Vec::new();
    while sim.clock() < w0 + window - 1.0 {
        tick.tick().await;
        let Some(id) = in_flight.pop_front() else {
            break;
        };
        // One in ten fails: the error shows with the end.
        if let Some(at) = sim.end_run(&id, ends.len() % 10 == 9) {
            ends.push((id, at));
        }
        if let Some(next) = spare.next() {
            born.insert(next.clone(), sim.clock());
            in_flight.push_back(next.clone());
            let (runs, sim_url, next) = (runs.clone(), sim.base_url(), next.clone());
            let name = format!("load-r{}", ends.len());
            names.insert(next.clone(), name.clone());
            replacing.push(tokio::spawn(async move {
                create_run(&runs, &sim_url, &next, poll, name).await
            }));
        }
    }
    for r in replacing {
        r.await.unwrap();
    }
    while sim.clock() < w0 + window {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (m1, c1, idle1) = quiet(&op, &seen).await;
    let (w1, cpu1, throttled1) = (sim.clock(), op.cpu_seconds(), sim.stats().throttled);
    let errors = op.metric("amperity_operator_reconcile_errors_total").await;

    // Ended runs not showing yet: wait for them, up to a cycle of per-run polls
    // (all there is without the feed), at most LOAD_MAX_WAIT seconds.
    let cycle = (poll as f64).max(n as f64 * setting.period());
    let wait_for = if feed {
        30.0
    } else {
        (1.3 * cycle + 30.0).min(env_or("LOAD_MAX_WAIT", 300.0))
    };
    let deadline = Instant::now() + Duration::from_secs_f64(wait_for);
    while Instant::now() < deadline {
        let all_shown = {
            let seen = seen.lock().unwrap();
            ends.iter().all(|(id, _)| seen.finished_at.contains_key(id))
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
            trace(&log, &seen, &ends, &names);
        }
        measure(&setting, &log, &seen, &ends, &born, (w0, w1), case_end)
    };
    figures.status_writes = m1 - m0;
    figures.writes_with_news = (c1 - c0) - (idle1 - idle0);
    // A write that changed nothing shows no change; one that changed only what
    // carries no news shows an idle one.
    figures.writes_for_unchanged_polls = (m1 - m0) - (c1 - c0) as f64 + (idle1 - idle0) as f64;
    figures.reconcile_errors = errors;
    figures.throttled = throttled1 - throttled0;
    figures.peak_rss = peak;
    figures.cpu_cores = (cpu1 - cpu0) / (w1 - w0);
    figures.adopted_after = adopted_after;
    let problems = check(&figures);
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

fn measure(
    setting: &Setting,
    log: &[sim::Logged],
    seen: &Seen,
    ends: &[(String, f64)],
    born: &HashMap<String, f64>,
    (w0, w1): (f64, f64),
    case_end: f64,
) -> Figures {
    let mut f = Figures {
        setting: Some(*setting),
        window: w1 - w0,
        ended: ends.len(),
        ..Figures::default()
    };
    // end → status, from the simulator's end to the watch showing it.
    let mut delays: Vec<f64> = Vec::new();
    for (id, at) in ends {
        match seen.finished_at.get(id) {
            Some(shown) => delays.push(shown - at),
            None => {
                f.unseen += 1;
                delays.push(case_end - at);
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    if !delays.is_empty() {
        f.delay = Some((
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            *delays.last().unwrap(),
        ));
    }

    let in_window: Vec<&sim::Logged> = log.iter().filter(|l| l.at >= w0 && l.at < w1).collect();
    f.requests_per_s = in_window.len() as f64 / (w1 - w0);
    let times: Vec<f64> = in_window.iter().map(|l| l.at).collect();
    let mut j = 0;
    for i in 0..times.len() {
        while times[i] - times[j] >= 1.0 {
            j += 1;
        }
        f.max_in_a_second = f.max_in_a_second.max(i - j + 1);
    }
    f.lists = in_window
        .iter()
        .filter(|l| l.request == Request::List)
        .count();

    // What finishing a run cost: the reads of it after its end, and the lists.
    let end_of: HashMap<&str, f64> = ends.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    let reads_after_end = log
        .iter()
        .filter(|l| matches!(&l.request, Request::Get(id) if end_of.get(id.as_str()).is_some_and(|e| l.at >= *e)))
        .count();
    if !ends.is_empty() {
        f.requests_per_finished_run = (reads_after_end + f.lists) as f64 / ends.len() as f64;
    }

    // Task progress: the time between two polls of a run while it is in flight
    // (the reads after its end are not progress polls), and how long runs still
    // in flight at the end of the window have waited since their last poll.
    let in_flight = |id: &str, at: f64| {
        born.get(id).is_some_and(|b| at >= *b) && end_of.get(id).is_none_or(|e| at < *e)
    };
    let mut last: HashMap<&str, f64> = HashMap::new();
    let mut intervals = Vec::new();
    let mut progress_polls = 0;
    for l in log.iter().filter(|l| l.at < w1) {
        if let Request::Get(id) = &l.request
            && in_flight(id, l.at)
        {
            if l.at >= w0 {
                progress_polls += 1;
            }
            if let Some(prev) = last.insert(id.as_str(), l.at)
                && l.at >= w0
            {
                intervals.push(l.at - prev);
            }
        }
    }
    intervals.sort_by(f64::total_cmp);
    f.intervals_seen = intervals.len();
    if !intervals.is_empty() {
        f.intervals = Some((
            percentile(&intervals, 0.5),
            percentile(&intervals, 0.99),
            *intervals.last().unwrap(),
        ));
    }
    let still_waiting = born
        .iter()
        .filter(|(id, _)| in_flight(id, w1 - 1e-9))
        .map(|(id, b)| w1 - last.get(id.as_str()).copied().unwrap_or(*b))
        .fold(0.0, f64::max);
    f.longest_wait = still_waiting.max(f.intervals.map_or(0.0, |i| i.2));
    // Progress polls get what the feed and the reads of ended runs leave, shared
    // fairly by the N runs in flight.
    let progress_rate = progress_polls as f64 / (w1 - w0);
    f.routine_cycle = (setting.poll as f64).max(if progress_rate > 0.0 {
        setting.n as f64 / progress_rate
    } else {
        setting.n as f64 * setting.period()
    });
    f
}

fn check(f: &Figures) -> Vec<String> {
    let s = f.setting.unwrap();
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    check(
        f.throttled == 0,
        format!("{} answers were 429", f.throttled),
    );
    check(
        f.max_in_a_second <= s.rate as usize,
        format!(
            "{} requests in one second, budget {}",
            f.max_in_a_second, s.rate
        ),
    );
    if s.n as f64 * s.period() > s.poll as f64 {
        check(
            f.requests_per_s >= 0.95 * s.rate as f64,
            format!(
                "only {:.0}% of the budget used",
                100.0 * f.requests_per_s / s.rate as f64
            ),
        );
    }
    check(
        f.writes_for_unchanged_polls == 0.0,
        format!(
            "{} status writes for unchanged polls",
            f.writes_for_unchanged_polls
        ),
    );
    check(
        f.longest_wait <= 1.2 * f.routine_cycle,
        format!(
            "a run waited {:.1}s for its poll, over 1.2 x its cycle {:.0}s",
            f.longest_wait, f.routine_cycle
        ),
    );
    // With the feed, and wherever per-run polls keep up (the runs in flight and
    // the first polls of new ones fit in the budget), an end shows within a poll
    // interval and a little.
    let keep_up = (s.n as f64 / s.poll as f64 + s.end_rate()) * s.period() <= 1.0;
    if let Some((_, p99, _)) = f.delay
        && (s.feed || keep_up)
    {
        let target = s.poll as f64 + 2.0;
        check(
            p99 <= target,
            format!("end -> status p99 {p99:.1}s over {target:.0}s"),
        );
        check(
            f.unseen == 0,
            format!("{} ended runs never showed it", f.unseen),
        );
    }
    if s.n >= 10_000 {
        check(
            f.peak_rss <= 64.0,
            format!("peak RSS {:.1} MiB over 64 MiB", f.peak_rss),
        );
        check(
            f.cpu_cores < 0.2,
            format!("{:.3} CPU cores, over 0.2", f.cpu_cores),
        );
    }
    problems
}

async fn create_runs(
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
async fn create_run(
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
