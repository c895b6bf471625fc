//! Load harness: the real operator binary (release build) against the project's
//! simulator over loopback and the end-to-end kube-apiserver, with N runs in
//! flight, printing one line of figures per N; plus the hot code paths per op.
//!
//!     cargo bench --bench load -- 40 100 1000 10000
//!
//! Environment: LOAD_RATE (the operator's budget, default 5 requests/s),
//! LOAD_POLL (pollInterval seconds, default 10), LOAD_MAX_WINDOW (longest
//! measuring window, default 180 s: raise it to 1.5 x N/rate to see every run's
//! interval at large N), LOAD_WRAPPER (a profiler to run the operator under,
//! e.g. `heaptrack -o /tmp/operator`), LOAD_LOG (the operator's log filter, e.g.
//! `warn,amperity_operator=debug,kube_runtime=debug`; the log goes to
//! target/operator-<N>.log). The Kubernetes side is the e2e environment
//! (tests/e2e/testenv.sh up), which this starts if needed.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amperity_operator::amperity::wire::Workflow;
use amperity_operator::controller::status_patch;
use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::decide::{Answer, Memory, Settings, decide};
use amperity_operator::sim::{self, Request, SimConfig, SimHandle};
use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

const TOKEN: &str = "load-token";

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if args.is_empty() {
        vec![40, 100, 1000, 10_000]
    } else {
        args
    };
    let rate: u32 = env_or("LOAD_RATE", 5);
    let poll: u64 = env_or("LOAD_POLL", 10);
    hot_paths();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kube = kube_env().await;
        println!(
            "\nload: budget {rate}/s, pollInterval {poll}s, Kubernetes: the e2e kube-apiserver (real API client code)"
        );
        let (mut passed, mut failed) = (0, 0);
        for n in sizes {
            let problems = load(&kube, n, rate, poll).await;
            if problems.is_empty() {
                passed += 1;
            } else {
                failed += 1;
                for p in problems {
                    println!("  FAILED N={n}: {p}");
                }
            }
        }
        println!("load: {passed} passed, {failed} failed");
        if failed > 0 {
            std::process::exit(1);
        }
    });
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

// ---------- load ----------

struct Kube {
    client: Client,
    kubeconfig: String,
}

async fn kube_env() -> Kube {
    let repo = env!("CARGO_MANIFEST_DIR");
    let up = Command::new(format!("{repo}/tests/e2e/testenv.sh"))
        .arg("up")
        .output()
        .expect("testenv.sh runs");
    assert!(
        up.status.success(),
        "testenv.sh up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let kubeconfig = String::from_utf8_lossy(&up.stdout).trim().to_string();
    let kc = Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let kubectl = Command::new(format!("{repo}/tests/e2e/testenv.sh"))
        .arg("kubectl")
        .output()
        .expect("testenv.sh runs");
    assert!(kubectl.status.success(), "testenv.sh kubectl failed");
    let kubectl = String::from_utf8_lossy(&kubectl.stdout).trim().to_string();
    let crd = Command::new(kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(crd_without_cel().as_bytes())?;
            c.wait()
        })
        .expect("kubectl runs");
    assert!(crd.success(), "installing the CRD failed");
    Kube {
        client: Client::try_from(config).unwrap(),
        kubeconfig,
    }
}

/// The CRDs without their CEL rules, which a 1.20 API server refuses to apply.
fn crd_without_cel() -> String {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("x-kubernetes-validations");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let docs: Vec<String> = amperity_operator::crds()
        .into_iter()
        .map(|(_, yaml)| {
            let mut crd: Value = serde_yaml::from_str(&yaml).unwrap();
            strip(&mut crd);
            serde_yaml::to_string(&crd).unwrap()
        })
        .collect();
    docs.join("---\n")
}

struct Operator {
    child: Child,
    metrics: String,
}

impl Drop for Operator {
    fn drop(&mut self) {
        // SIGTERM to the process group: a profiler wrapping the operator
        // (LOAD_WRAPPER) writes its report once the operator has shut down.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Operator {
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name: utime and stime are the 12th and 13th.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    fn peak_rss_mib(&self) -> f64 {
        self.memory_mib("VmHWM:")
    }

    fn rss_mib(&self) -> f64 {
        self.memory_mib("VmRSS:")
    }

    fn memory_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    /// A counter's value, summed over its labels.
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(&self.metrics)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            // From +0: an f64 sum of no series is -0, which prints as "-0".
            .fold(0.0, |total, v| total + v)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs one size and returns what broke the targets of issue 7 (empty: all met).
async fn load(kube: &Kube, n: usize, rate: u32, poll: u64) -> Vec<String> {
    let sim = sim::spawn(SimConfig {
        tokens: vec![TOKEN.into()],
        record_requests: true,
        rate_limit: 10,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ns = format!("load-{n}-{}", fastrand::u32(..) % 100_000);
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
    let ids = sim.seed_runs("cg-load-hang", n);
    create_runs(&runs, &sim, &ids, poll, 0).await;
    // Let the seeded runs finish their task progress: from the first poll on,
    // nothing about them changes.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // LOAD_WRAPPER runs the operator under a profiler, e.g. "heaptrack -o /tmp/op"
    // (the memory and CPU figures are then the wrapper's, not the operator's).
    let wrapper = std::env::var("LOAD_WRAPPER").unwrap_or_default();
    // LOAD_LOG="<filter>" keeps the operator's log (e.g. "warn,kube_runtime=debug"
    // says why each reconcile ran) in target/operator-<N>.log.
    let (log_level, log_file) = match std::env::var("LOAD_LOG") {
        Ok(filter) => (
            filter,
            Stdio::from(
                std::fs::File::create(format!(
                    "{}/target/operator-{n}.log",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            ),
        ),
        Err(_) => ("warn".to_string(), Stdio::null()),
    };
    let operator = env!("CARGO_BIN_EXE_amperity-operator");
    let op = Operator {
        child: Command::new("sh")
            .args(["-c", &format!("exec {wrapper} {operator} run")])
            .process_group(0)
            .env("KUBECONFIG", &kube.kubeconfig)
            .env("WATCH_NAMESPACES", &ns)
            .env("LEADER_ELECTION", "false")
            .env("AMPERITY_RATE_LIMIT", rate.to_string())
            .env("AMPERITY_ALLOWED_ENDPOINTS", sim.base_url())
            .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_LEVEL", log_level)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap(),
        metrics: format!("http://127.0.0.1:{port}/metrics"),
    };
    let started = Instant::now();
    let op_started = sim.clock();
    // Adoption writes each run's status once; each is then polled in turn. With
    // more runs than the budget polls in two minutes, measure from then on.
    let mut adopted;
    loop {
        let list = runs.list(&Default::default()).await.unwrap();
        adopted = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.workflow_id.is_some()))
            .count();
        if adopted == n || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1 + n as u64 / 2000)).await;
    }
    let adopted_after = started.elapsed().as_secs_f64();
    let cycle = (poll as f64).max(n as f64 / rate as f64);
    // Settle: the seeded runs finish their task progress (about 9 s), then every
    // run is polled once more; from then on nothing changes.
    let warmup = cycle.min(150.0) + 10.0;
    // Long enough to see every run polled twice only up to LOAD_MAX_WINDOW seconds.
    let window = (1.5 * cycle).clamp(20.0, env_or("LOAD_MAX_WINDOW", 180.0));
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;

    // Steady state: N unchanged runs polled within the budget.
    let (w0, cpu0, writes0, throttled0) = (
        sim.clock(),
        op.cpu_seconds(),
        op.metric("amperity_operator_status_writes_total").await,
        sim.stats().throttled,
    );
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let (w1, cpu1, writes1, throttled1) = (
        sim.clock(),
        op.cpu_seconds(),
        op.metric("amperity_operator_status_writes_total").await,
        sim.stats().throttled,
    );
    let errors = op.metric("amperity_operator_reconcile_errors_total").await;

    // End latency, while the budget still polls on time: runs that end at a known
    // simulated moment, watched until their status shows it.
    let mut delays = Vec::new();
    let mut probe_writes = f64::NAN;
    if (n as f64 + 5.0) / (rate as f64) < poll as f64 {
        let before = op.metric("amperity_operator_status_writes_total").await;
        let finishers = sim.seed_runs("cg-load-finish", 5);
        create_runs(&runs, &sim, &finishers, poll, n).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen: HashMap<String, f64> = HashMap::new();
        while seen.len() < finishers.len() && Instant::now() < deadline {
            for r in runs.list(&Default::default()).await.unwrap().items {
                let id = r.spec.workflow_id.clone().unwrap_or_default();
                if finishers.contains(&id) && r.phase().is_some_and(|p| p.is_finished()) {
                    seen.entry(id).or_insert_with(|| sim.clock());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        delays = finishers
            .iter()
            .filter_map(|id| Some(seen.get(id)? - sim.ends_at(id)?))
            .collect();
        probe_writes = (op.metric("amperity_operator_status_writes_total").await - before) / 5.0;
    }
    let (peak, rss) = (op.peak_rss_mib(), op.rss_mib());
    drop(op);

    let log = sim.request_log();
    let in_window: Vec<&sim::Logged> = log.iter().filter(|l| l.at >= w0 && l.at < w1).collect();
    let mean = in_window.len() as f64 / (w1 - w0);
    let times: Vec<f64> = in_window.iter().map(|l| l.at).collect();
    let mut max_window = 0;
    let mut j = 0;
    for i in 0..times.len() {
        while times[i] - times[j] >= 1.0 {
            j += 1;
        }
        max_window = max_window.max(i - j + 1);
    }
    let hang: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut last: HashMap<&str, f64> = HashMap::new();
    let mut intervals = Vec::new();
    let mut late = Vec::new();
    for l in log.iter().filter(|l| l.at < w1) {
        if let Request::Get(id) = &l.request
            && hang.contains(id.as_str())
            && let Some(prev) = last.insert(id.as_str(), l.at)
            && l.at >= w0
        {
            intervals.push(l.at - prev);
            if l.at - prev > 1.2 * cycle {
                late.push((id.as_str(), prev, l.at));
            }
        }
    }
    intervals.sort_by(f64::total_cmp);
    let polled = last.values().filter(|t| **t >= w0).count();
    // A run not polled again by the end of the window has waited at least this
    // long (a run never polled: since the operator started).
    let still_waiting = ids
        .iter()
        .map(|id| w1 - last.get(id.as_str()).copied().unwrap_or(op_started))
        .fold(0.0, f64::max);
    // A run's first poll records its details once; every later poll finds nothing new.
    let mut first_seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut first_polls = 0;
    for l in log.iter().filter(|l| l.at < w1) {
        if let Request::Get(id) = &l.request
            && first_seen.insert(id.as_str())
            && l.at >= w0
        {
            first_polls += 1;
        }
    }
    let unchanged = in_window.len() - first_polls;
    let max_interval = intervals.last().copied().unwrap_or(f64::NAN);
    let longest_wait = still_waiting.max(max_interval);
    let max_delay = delays.iter().cloned().fold(f64::NAN, f64::max);
    println!(
        "N={n:>6}  requests/s mean {mean:.2} = {:.0}% of budget, max in any 1s window {max_window} = {:.0}%  429s {}  \
         poll interval median {:.1}s p99 {:.1}s max {max_interval:.1}s = {:.2} x max(pollInterval, N/rate) {cycle:.0}s \
         ({} intervals; {polled}/{n} runs polled in the window; longest wait including runs still waiting \
         {longest_wait:.1}s = {:.2} x)  \
         status writes {} = {first_polls} first polls + {} for {unchanged} unchanged polls  {}  \
         reconcile errors {errors}  peak RSS {peak:.1} MiB (now {rss:.1})  CPU {:.2} s in {:.0} s = {:.3} cores  ({adopted}/{n} adopted in {adopted_after:.0} s)",
        100.0 * mean / rate as f64,
        100.0 * max_window as f64 / rate as f64,
        throttled1 - throttled0,
        percentile(&intervals, 0.5),
        percentile(&intervals, 0.99),
        max_interval / cycle,
        intervals.len(),
        longest_wait / cycle,
        writes1 - writes0,
        writes1 - writes0 - first_polls as f64,
        if delays.is_empty() {
            "end->status delay not measured (the budget cannot poll on time)".to_string()
        } else {
            format!(
                "end->status delay max {max_delay:.1}s over {} runs, {probe_writes:.1} writes per finishing run",
                delays.len()
            )
        },
        cpu1 - cpu0,
        w1 - w0,
        (cpu1 - cpu0) / (w1 - w0),
    );
    let run_name = |id: &str| {
        ids.iter()
            .position(|i| i == id)
            .map(|i| format!("load-{i}"))
    };
    for (id, from, to) in late.iter().take(10) {
        println!(
            "  late: {} ({id}) polled at {from:.1}s and then {to:.1}s (simulator clock)",
            run_name(id).unwrap_or_default()
        );
    }
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    let rate_f = rate as f64;
    check(
        throttled1 == throttled0,
        format!("{} answers were 429", throttled1 - throttled0),
    );
    check(
        max_window <= rate as usize,
        format!("{max_window} requests in one second, budget {rate}"),
    );
    if n as f64 / rate_f > poll as f64 {
        check(
            mean >= 0.95 * rate_f,
            format!("only {:.0}% of the budget used", 100.0 * mean / rate_f),
        );
    }
    check(
        longest_wait <= 1.2 * cycle,
        format!("a run waited {longest_wait:.1}s, over 1.2 x {cycle:.0}s"),
    );
    check(
        writes1 - writes0 - first_polls as f64 == 0.0,
        format!(
            "{} status writes for unchanged polls",
            writes1 - writes0 - first_polls as f64
        ),
    );
    if !delays.is_empty() {
        check(
            max_delay <= poll as f64 + 1.0,
            format!("an ended run showed after {max_delay:.1}s"),
        );
    }
    if n >= 10_000 {
        check(peak <= 64.0, format!("peak RSS {peak:.1} MiB over 64 MiB"));
        check((cpu1 - cpu0) / (w1 - w0) < 0.2, "over 0.2 CPU cores".into());
    }

    // This API server has no namespace controller: delete the runs themselves. One
    // request can time out before 10,000 are gone; left behind, they would burden
    // every later run on the same API server.
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
    let _ = namespaces.delete(&ns, &Default::default()).await;
    problems
}

async fn create_runs(
    runs: &Api<AmperityWorkflowRun>,
    sim: &SimHandle,
    ids: &[String],
    poll: u64,
    offset: usize,
) {
    let base = sim.base_url();
    futures::stream::iter(ids.iter().enumerate())
        .for_each_concurrent(16, |(i, id)| {
            let runs = runs.clone();
            let base = base.clone();
            async move {
                let run: AmperityWorkflowRun = serde_json::from_value(json!({
                    "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
                    "metadata": {"name": format!("load-{}", i + offset)},
                    "spec": {"tenant": "socktown", "endpoint": base, "tokenSecretRef": {"name": "amperity-api"},
                             "configId": "cg-load", "workflowId": id, "pollInterval": format!("{poll}s"),
                             "deletionPolicy": "Orphan"}
                }))
                .unwrap();
                runs.create(&PostParams::default(), &run).await.unwrap();
            }
        })
        .await;
}
