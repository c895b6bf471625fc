//! The Kubernetes side (the e2e kube-apiserver) and the operator process of a
//! load case.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

pub struct Kube {
    pub client: Client,
    pub kubeconfig: String,
}

pub async fn kube_env() -> Kube {
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
            let mut crd: Value = serde_norway::from_str(&yaml).unwrap();
            strip(&mut crd);
            serde_norway::to_string(&crd).unwrap()
        })
        .collect();
    docs.join("---\n")
}

pub struct Operator {
    child: Child,
    /// Its /metrics URL, once known: it binds port 0, and the port it got is read
    /// from /proc (`listening.rs`). A port found free beforehand and handed to it
    /// could be taken in between, and the operator would go on without metrics.
    metrics: OnceLock<String>,
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
    /// Starts `amperity-operator run` on namespace `ns` with budget `rate` and the
    /// change feed on or off. LOAD_WRAPPER runs it under a profiler, e.g.
    /// "heaptrack -o /tmp/op" (the memory and CPU figures are then the wrapper's);
    /// LOAD_LOG="<filter>" keeps its log in target/operator-<label>.log.
    pub fn spawn(
        kube: &Kube,
        ns: &str,
        allowed: &str,
        rate: u32,
        feed: bool,
        label: &str,
    ) -> Operator {
        let wrapper = std::env::var("LOAD_WRAPPER").unwrap_or_default();
        let (log_level, log_file) = match std::env::var("LOAD_LOG") {
            Ok(filter) => (
                filter,
                Stdio::from(
                    std::fs::File::create(format!(
                        "{}/target/operator-{label}.log",
                        env!("CARGO_MANIFEST_DIR")
                    ))
                    .unwrap(),
                ),
            ),
            Err(_) => ("warn".to_string(), Stdio::null()),
        };
        let operator = env!("CARGO_BIN_EXE_amperity-operator");
        Operator {
            child: Command::new("sh")
                .args(["-c", &format!("exec {wrapper} {operator} run")])
                .process_group(0)
                .env("KUBECONFIG", &kube.kubeconfig)
                .env("WATCH_NAMESPACES", ns)
                .env("LEADER_ELECTION", "false")
                .env("AMPERITY_RATE_LIMIT", rate.to_string())
                .env("AMPERITY_CHANGE_FEED", feed.to_string())
                .env("AMPERITY_ALLOWED_ENDPOINTS", allowed)
                .env("METRICS_ADDR", "127.0.0.1:0")
                .env("RUST_LOG", log_level)
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap(),
            metrics: OnceLock::new(),
        }
    }

    /// The operator's /metrics URL, waiting until it listens. The operator may run
    /// under LOAD_WRAPPER: the port is looked for in the whole process group.
    async fn metrics_url(&self) -> &str {
        if let Some(url) = self.metrics.get() {
            return url;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            let group = group_members(self.child.id());
            if let Some(port) = crate::listening::listening_ports(&group).first() {
                break *port;
            }
            assert!(
                Instant::now() < deadline,
                "the operator listened on no port within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.metrics
            .get_or_init(|| format!("http://127.0.0.1:{port}/metrics"))
    }

    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name: utime and stime are the 12th and 13th.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.memory_mib("VmHWM:")
    }

    pub fn rss_mib(&self) -> f64 {
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
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.metrics_url().await)
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

/// The processes in process group `group` (the operator, or its wrapper and it).
fn group_members(group: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command name: state, ppid, pgrp.
        let pgrp = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<u32>().ok());
        if pgrp == Some(group) {
            members.push(pid);
        }
    }
    // The group leader first: its network namespace is the one read.
    members.sort_by_key(|pid| *pid != group);
    members
}
