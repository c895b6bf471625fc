//! Load harness: the real operator binary (release build) against the project's
//! simulator over loopback and the end-to-end kube-apiserver, with N runs in
//! flight, the change feed off and on side by side; one line of figures per case,
//! a table at the end, and the hot code paths per op. Cases (LOAD_CASE, a comma
//! list): `steady` (the default: runs end at half the budget through the window,
//! each replaced, so that N stay in flight; `steady.rs`) and `burst` (LOAD_BURST
//! runs, default 1000, end within one second, and stops are asked meanwhile;
//! `burst.rs`). Each runs at every clock offset in LOAD_CLOCK (seconds the
//! operator's clock is ahead of Amperity's, a comma list, default 0) and with the
//! list lagging LOAD_LIST_LAG seconds behind ends (default 0). The simulator
//! answers 429 above LOAD_SIM_LIMIT requests in a second (default: the budget).
//!
//!     cargo bench --bench load -- 40 1000 10000
//!     LOAD_CASE=burst LOAD_CLOCK=-300,0,300 cargo bench --bench load -- 10000
//!
//! Environment: LOAD_MIN_CYCLES (a steady window lasts at least this many
//! expected routine cycles, for task-progress freshness; default 0),
//! LOAD_RATE (the operator's budget, default 5 requests/s),
//! LOAD_POLL (pollInterval seconds, default 10), LOAD_FEED (`off,on`, the
//! default, or one of them), LOAD_MAX_WINDOW (the measuring window, default
//! 180 s), LOAD_WARMUP (seconds between adoption and the window, default 20),
//! LOAD_MAX_WAIT (how long, at most, to wait after the window for ended runs to
//! show it without the feed, default 300 s: a cycle of per-run polls is N/rate),
//! LOAD_WRAPPER (a profiler to run the operator under, e.g. `heaptrack -o
//! /tmp/operator`), LOAD_LOG (the operator's log filter, e.g.
//! `warn,amperity_operator=debug,kube_runtime=debug`; the log goes to
//! target/operator-<N>-<feed|polls>.log), LOAD_TRACE (set: print, for each run
//! that ended, when it was read and listed after its end, and when its end
//! showed). The Kubernetes side is the e2e
//! environment (tests/e2e/testenv.sh up), which this starts if needed.

mod burst;
mod case;
mod env;
mod fair;
#[path = "../../tests/e2e/listening.rs"]
mod listening;
mod measure;
mod observe;
mod play;
mod steady;

use std::time::Instant;

use amperity_operator::amperity::wire::Workflow;
use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::run::decide::{Answer, Memory, Settings, decide};
use amperity_operator::run::host::status_patch;
use serde_json::{Value, json};

use case::{Figures, Setting, Shape};

fn main() {
    // Namespaces sharing a tenant's budget: in process, no Kubernetes (fair.rs).
    if std::env::args().any(|a| a == "--fair-namespaces") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        std::process::exit(if rt.block_on(fair::run()) { 0 } else { 1 });
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if args.is_empty() {
        vec![40, 1000, 10_000]
    } else {
        args
    };
    let rate: u32 = env_or("LOAD_RATE", 5);
    let poll: u64 = env_or("LOAD_POLL", 10);
    let feeds: Vec<bool> = std::env::var("LOAD_FEED")
        .unwrap_or_else(|_| "off,on".into())
        .split(',')
        .map(|m| match m.trim() {
            "on" => true,
            "off" => false,
            other => panic!("LOAD_FEED: {other:?} is neither on nor off"),
        })
        .collect();
    let shapes: Vec<Shape> = std::env::var("LOAD_CASE")
        .unwrap_or_else(|_| "steady".into())
        .split(',')
        .map(|c| match c.trim() {
            "steady" => Shape::Steady,
            "burst" => Shape::Burst(env_or("LOAD_BURST", 1000)),
            other => panic!("LOAD_CASE: {other:?} is neither steady nor burst"),
        })
        .collect();
    let clocks: Vec<i64> = std::env::var("LOAD_CLOCK")
        .unwrap_or_else(|_| "0".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .unwrap_or_else(|_| panic!("LOAD_CLOCK: {c:?} is not a number of seconds"))
        })
        .collect();
    let list_lag: u64 = env_or("LOAD_LIST_LAG", 0);
    let sim_limit: u32 = env_or("LOAD_SIM_LIMIT", rate);
    hot_paths();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kube = env::kube_env().await;
        println!(
            "\nload: budget {rate}/s (the simulator answers 429 above {sim_limit} in a second), pollInterval {poll}s, Kubernetes: the e2e kube-apiserver (real API client code)"
        );
        let (mut passed, mut failed) = (0, 0);
        let mut table = Vec::new();
        let mut settings = Vec::new();
        for &n in &sizes {
            for &shape in &shapes {
                for &clock_offset in &clocks {
                    for &feed in &feeds {
                        settings.push(Setting {
                            n,
                            rate,
                            poll,
                            feed,
                            shape,
                            clock_offset,
                            list_lag,
                            sim_limit,
                        });
                    }
                }
            }
        }
        for setting in settings {
            let (figures, problems) = play::run(&kube, setting).await;
            println!("{}", line(&figures));
            table.push(figures);
            if problems.is_empty() {
                passed += 1;
            } else {
                failed += 1;
                for p in problems {
                    println!(
                        "  FAILED N={} {} feed {}: {p}",
                        setting.n,
                        setting.label(),
                        on_off(setting.feed)
                    );
                }
            }
        }
        println!("\n{}", markdown(&table));
        println!("load: {passed} passed, {failed} failed");
        if failed > 0 {
            std::process::exit(1);
        }
    });
}

fn on_off(feed: bool) -> &'static str {
    if feed { "on" } else { "off" }
}

fn seconds(t: Option<f64>) -> String {
    t.map_or("-".into(), |t| format!("{t:.2} s"))
}

fn triple(t: Option<(f64, f64, f64)>) -> String {
    t.map_or("-".into(), |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}"))
}

/// One case's figures on one line.
fn line(f: &Figures) -> String {
    let s = f.setting.unwrap();
    format!(
        "N={:>6} {} feed {:<3}  end->status p50/p99/max {} s over {} ended runs ({} not shown by the end)  \
         stop latency max {} from the request, {} from the decision ({} stops, {} lost)  \
         requests/s {:.2} = {:.0}% of budget, max in any 1s window {}  429s {}  lists {}  \
         requests per finished run {:.2} (all requests of the window and the {} summary reads still owed; {:.2} after the end and lists)  \
         poll interval median/p99/max {} s ({} intervals), longest wait {:.1} s \
         vs cycle {:.0} s (window {:.1} cycles)  status writes {} ({} with news, {} for unchanged polls)  reconcile errors {}  \
         peak RSS {:.1} MiB  CPU {:.3} cores  (window {:.0} s, adopted in {:.0} s)",
        s.n,
        s.label(),
        on_off(s.feed),
        triple(f.delay),
        f.ended,
        f.unseen,
        seconds(f.stop_latency),
        seconds(f.stop_after_decision),
        f.stops,
        f.stops_lost,
        f.requests_per_s,
        100.0 * f.requests_per_s / s.rate as f64,
        f.max_in_a_second,
        f.throttled,
        f.lists,
        f.requests_per_finished_run,
        f.summaries_owed,
        f.after_end_per_finished_run,
        triple(f.intervals),
        f.intervals_seen,
        f.longest_wait,
        f.routine_cycle,
        f.window / f.routine_cycle,
        f.status_writes,
        f.writes_with_news,
        f.writes_for_unchanged_polls,
        f.reconcile_errors,
        f.peak_rss,
        f.cpu_cores,
        f.window,
        f.adopted_after,
    )
}

/// The cases side by side, as docs/performance.md shows them.
fn markdown(cases: &[Figures]) -> String {
    let mut out = String::from(
        "| N | case | feed | end → status p50 / p99 / max | stop latency (max: from the request; from the decision) | requests/s (share of budget) | max in 1 s | requests per finished run (all; after the end) | longest task-progress interval | 429s | writes for unchanged polls | peak RSS | CPU |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in cases {
        let s = f.setting.unwrap();
        let unseen = if f.unseen > 0 {
            format!(" ({} not shown within the wait: at least)", f.unseen)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} s{unseen} | {}; {} | {:.2} ({:.0}%) | {} | {:.2}; {:.2} | {:.0} s (cycle {:.0} s, window {:.1} cycles) | {} | {} | {:.1} MiB | {:.3} cores |\n",
            s.n,
            s.label(),
            on_off(s.feed),
            triple(f.delay),
            seconds(f.stop_latency),
            seconds(f.stop_after_decision),
            f.requests_per_s,
            100.0 * f.requests_per_s / s.rate as f64,
            f.max_in_a_second,
            f.requests_per_finished_run,
            f.after_end_per_finished_run,
            f.longest_wait,
            f.routine_cycle,
            f.window / f.routine_cycle,
            f.throttled,
            f.writes_for_unchanged_polls,
            f.peak_rss,
            f.cpu_cores,
        ));
    }
    out
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------- hot code paths ----------

fn verbose_workflow(tasks: usize) -> String {
    let tasks: Vec<Value> = (0..tasks)
        .map(|i| {
            json!({"id": format!("wft-{i}"), "state": if i < tasks / 2 { "succeeded" } else { "running" },
                   "tenant": "socktown", "label": format!("Task number {i}"), "created_at": "2025-04-18T06:00:00.000Z",
                   "ended_at": "2025-04-18T06:01:00.000Z", "execution_type": "spark-sql", "workflow_id": "wf-1"})
        })
        .collect();
    json!({"id": "wf-1", "state": "running", "type": "courier.group/run", "name": "Daily", "tenant": "socktown",
           "created_at": "2025-04-18T06:00:00.000Z", "principal_id": "p", "principal_name": "P",
           "launched_version": "etv-1", "current_version": "etv-1", "task_instances": tasks})
    .to_string()
}

fn time_per_op(iterations: u32, mut op: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        op();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        op();
    }
    started.elapsed().as_nanos() as f64 / iterations as f64
}

fn hot_paths() {
    let body = verbose_workflow(50);
    let decode = time_per_op(20_000, || {
        std::hint::black_box(serde_json::from_str::<Workflow>(&body).unwrap());
    });
    let run: AmperityWorkflowRun = serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": "r", "namespace": "n", "generation": 1},
        "spec": {"tenant": "socktown", "tokenSecretRef": {"name": "s"}, "configId": "cg-1", "workflowId": "wf-1"}
    }))
    .unwrap();
    let settings = Settings::default();
    let now = jiff::Timestamp::now();
    let adopted = decide(&run, None, now, Memory::default(), &settings);
    let mut running = run.clone();
    running.status = Some(adopted.status);
    let workflow: Workflow = serde_json::from_str(&body).unwrap();
    let next = time_per_op(20_000, || {
        let answer = Answer::Polled(Ok(workflow.clone()));
        std::hint::black_box(decide(
            &running,
            Some(answer),
            now,
            Memory::default(),
            &settings,
        ));
    });
    let status = decide(
        &running,
        Some(Answer::Polled(Ok(workflow.clone()))),
        now,
        Memory::default(),
        &settings,
    )
    .status;
    let patch = time_per_op(20_000, || {
        std::hint::black_box(serde_json::to_vec(&status_patch(&status)).unwrap());
    });
    println!("hot paths (50 task instances, {} bytes):", body.len());
    println!("  decode verbose workflow  {:>9.1} us/op", decode / 1000.0);
    println!(
        "  compute next status      {:>9.1} us/op (includes cloning the answer)",
        next / 1000.0
    );
    println!("  build status patch       {:>9.1} us/op", patch / 1000.0);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
