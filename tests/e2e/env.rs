//! The end-to-end environment: a real kube-apiserver + etcd on loopback (started by
//! testenv.sh), the project's simulator and the real operator binary as processes.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::crd::schedule::AmperityWorkflowSchedule;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_amperity-operator");
pub const TOKEN: &str = "sim-token";
pub const ROTATED_TOKEN: &str = "rotated-token";
/// A credential of its own for the scenario that kills the leader inside starts:
/// its searches look only at runs this principal made, so runs that other
/// scenarios' resources started (and since deleted) cannot make them ambiguous.
pub const KILL_TOKEN: &str = "kill-token";
/// Who the simulator says each token starts runs as.
pub fn principal_of(token: &str) -> Option<&'static str> {
    match token {
        TOKEN => Some("api-key|sim-1"),
        ROTATED_TOKEN => Some("api-key|sim-2"),
        KILL_TOKEN => Some("api-key|sim-3"),
        _ => None,
    }
}
pub const CLIENT_ID: &str = "e2e-operator";
pub const CLIENT_SECRET: &str = "e2e-client-s3cret";

pub type Result<T = ()> = std::result::Result<T, String>;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped, its output in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, String)]) -> Result<Proc> {
        let dir = repo().join("target/e2e-logs");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Proc { child, log })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process still runs (it has not exited, nor become a zombie).
    pub fn is_running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Env {
    pub client: Client,
    pub kubeconfig: PathBuf,
    /// The suite's own kubectl, built from the API server's source (testenv.sh).
    pub kubectl: PathBuf,
    pub sim_url: String,
    pub sim_port: u16,
    /// Kept so the simulator process lives as long as the environment.
    pub _sim: Proc,
    pub operator: Option<Proc>,
    pub metrics_port: u16,
}

/// The suite's Python (scripts/python-venv.sh creates its venv when missing).
pub fn python() -> Result<PathBuf> {
    let out = Command::new(repo().join("scripts/python-venv.sh"))
        .output()
        .map_err(|e| format!("cannot run scripts/python-venv.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/python-venv.sh failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn testenv(arg: &str) -> Result<String> {
    let out = Command::new(repo().join("tests/e2e/testenv.sh"))
        .arg(arg)
        .output()
        .map_err(|e| format!("cannot run tests/e2e/testenv.sh {arg}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tests/e2e/testenv.sh {arg} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

impl Env {
    pub async fn start() -> Result<Env> {
        testenv("up")?;
        let vars = testenv("env")?;
        let kubeconfig = vars
            .lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .map(|v| PathBuf::from(v.trim_matches(|c| c == '"' || c == '\'')))
            .ok_or("testenv.sh env printed no KUBECONFIG")?;
        let kubectl = vars
            .lines()
            .find_map(|l| l.strip_prefix("export E2E_KUBECTL="))
            .map(|v| PathBuf::from(v.trim_matches(|c| c == '"' || c == '\'')))
            .ok_or("testenv.sh env printed no E2E_KUBECTL")?;
        let client = client_for(&kubeconfig).await?;
        install_crds(&client).await?;

        let sim_port = free_port();
        let sim = Proc::spawn(
            "simulator",
            &["simulator"],
            &[
                ("SIM_LISTEN", format!("127.0.0.1:{sim_port}")),
                (
                    "SIM_TOKENS",
                    format!("{TOKEN},{ROTATED_TOKEN},{KILL_TOKEN}"),
                ),
                ("SIM_SPEED", "10".into()),
                ("SIM_SEED", "7".into()),
                ("SIM_CLIENT_ID", CLIENT_ID.into()),
                ("SIM_CLIENT_SECRET", CLIENT_SECRET.into()),
                // `slowstart` answers late enough to kill the operator inside a start;
                // `listlag` runs show in lists after a while.
                ("SIM_SLOW_START_MS", "3000".into()),
                ("SIM_LIST_LAG_MS", "4000".into()),
            ],
        )?;
        let sim_url = format!("http://127.0.0.1:{sim_port}/api");
        wait_http(
            &format!("http://127.0.0.1:{sim_port}/_sim/stats"),
            Duration::from_secs(20),
        )
        .await?;
        let mut env = Env {
            client,
            kubeconfig,
            kubectl,
            sim_url,
            sim_port,
            _sim: sim,
            operator: None,
            metrics_port: free_port(),
        };
        env.operator = Some(env.spawn_operator("operator", env.metrics_port, &[])?);
        wait_http(
            &format!("http://127.0.0.1:{}/readyz", env.metrics_port),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| {
            format!(
                "{e}\noperator log:\n{}",
                env.operator.as_ref().unwrap().log_text()
            )
        })?;
        Ok(env)
    }

    /// Starts an operator process with the test settings (fast retries and re-checks).
    pub fn spawn_operator(
        &self,
        name: &str,
        metrics_port: u16,
        extra: &[(&str, String)],
    ) -> Result<Proc> {
        let mut envs: Vec<(&str, String)> = vec![
            ("KUBECONFIG", self.kubeconfig.display().to_string()),
            ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
            ("RUST_LOG", "info,amperity_operator=debug".into()),
            ("RETRY_BACKOFF_SECS", "1".into()),
            // Many scenarios share the simulator's one tenant at once.
            ("AMPERITY_RATE_LIMIT", "10".into()),
            ("STALLED_RECHECK_SECS", "2".into()),
            // Connections are served (their CRDs are installed with the others).
            ("AMPERITY_CONNECTIONS", "true".into()),
            ("DELETION_GRACE_SECS", "10".into()),
            ("START_SETTLE_SECS", "10".into()),
            // The simulator, and nothing else on loopback.
            (
                "AMPERITY_ALLOWED_ENDPOINTS",
                format!("http://127.0.0.1:{}/api", self.sim_port),
            ),
            ("POD_NAME", name.into()),
            ("POD_NAMESPACE", "default".into()),
            ("LEASE_NAME", "amperity-operator-e2e".into()),
            ("LEASE_SECONDS", "6".into()),
        ];
        envs.extend(extra.iter().cloned());
        Proc::spawn(name, &["run"], &envs)
    }

    /// Runs `checks` with the shared operator stopped (it would reconcile the
    /// scenario's runs too), then starts it again as `name`.
    pub async fn without_shared_operator<F>(&mut self, name: &str, checks: F) -> Result
    where
        F: for<'a> FnOnce(
            &'a mut Env,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result> + 'a>>,
    {
        if let Some(op) = self.operator.as_mut() {
            op.kill();
        }
        let result = checks(self).await;
        let port = self.metrics_port;
        self.operator = Some(self.spawn_operator(name, port, &[])?);
        wait_http(
            &format!("http://127.0.0.1:{port}/readyz"),
            Duration::from_secs(30),
        )
        .await?;
        result
    }

    pub async fn sim_stats(&self) -> Value {
        reqwest::get(format!("http://127.0.0.1:{}/_sim/stats", self.sim_port))
            .await
            .expect("the simulator answers")
            .json()
            .await
            .expect("stats are JSON")
    }

    pub async fn starts_for(&self, config_id: &str) -> u64 {
        self.sim_stats().await["starts_by_config"][config_id]
            .as_u64()
            .unwrap_or(0)
    }

    /// A fresh namespace with the token Secret.
    pub async fn namespace(&self, name: &str, token: Option<&str>) -> Result<String> {
        let ns = format!("{name}-{}", fastrand::u32(..) % 100_000);
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .map_err(|e| format!("creating namespace {ns}: {e}"))?;
        if let Some(token) = token {
            self.put_secret(&ns, token).await?;
        }
        Ok(ns)
    }

    /// Writes the token Secret, naming the principal the token starts runs as (as
    /// an administrator would, so that a lost start can be confirmed).
    pub async fn put_secret(&self, ns: &str, token: &str) -> Result {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut data = json!({"token": token});
        if let Some(p) = principal_of(token) {
            data["principal"] = json!(p);
        }
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "amperity-api"},
                            "stringData": data});
        api.patch(
            "amperity-api",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(secret),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("writing the Secret: {e}"))
    }

    /// A copy of the admin's kubeconfig that authenticates with `token` instead.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> Result<PathBuf> {
        let admin = std::fs::read_to_string(&self.kubeconfig).map_err(|e| e.to_string())?;
        let admin_token = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .ok_or("no admin token line in the kubeconfig")?;
        let path = std::env::temp_dir().join(format!("e2e-{name}.kubeconfig"));
        std::fs::write(&path, admin.replace(admin_token, token.trim()))
            .map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// A run with the given spec fields on top of a valid default.
    pub fn run_manifest(&self, ns: &str, name: &str, spec: Value) -> Value {
        let mut full = json!({
            "tenant": "socktown",
            "endpoint": self.sim_url,
            "tokenSecretRef": {"name": "amperity-api"},
            "configId": "cg-e2e",
            "pollInterval": "5s",
        });
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        json!({
            "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
            "metadata": {"name": name, "namespace": ns}, "spec": full
        })
    }

    /// Creates a run with the given spec fields on top of a valid default.
    pub async fn create_run(
        &self,
        ns: &str,
        name: &str,
        spec: Value,
    ) -> Result<AmperityWorkflowRun> {
        let obj: AmperityWorkflowRun =
            serde_json::from_value(self.run_manifest(ns, name, spec)).map_err(|e| e.to_string())?;
        self.runs(ns)
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("creating {ns}/{name}: {e}"))
    }

    pub fn runs(&self, ns: &str) -> Api<AmperityWorkflowRun> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub fn schedules(&self, ns: &str) -> Api<AmperityWorkflowSchedule> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Creates a schedule: `spec` on top of a valid one whose runs use the simulator
    /// (`template` fields on top of a valid run spec), with `annotations`.
    pub async fn create_schedule(
        &self,
        ns: &str,
        name: &str,
        spec: Value,
        template: Value,
        annotations: Value,
    ) -> Result<AmperityWorkflowSchedule> {
        let mut run_spec = json!({
            "tenant": "socktown",
            "endpoint": self.sim_url,
            "tokenSecretRef": {"name": "amperity-api"},
            "configId": "cg-e2e",
            "pollInterval": "5s",
        });
        for (k, v) in template.as_object().unwrap() {
            run_spec[k] = v.clone();
        }
        let mut full = json!({"schedule": "@yearly", "runTemplate": {"spec": run_spec}});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        let obj: AmperityWorkflowSchedule = serde_json::from_value(json!({
            "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowSchedule",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations}, "spec": full
        }))
        .map_err(|e| e.to_string())?;
        self.schedules(ns)
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("creating schedule {ns}/{name}: {e}"))
    }

    /// Polls the schedule until `done` holds, or fails with its last status.
    pub async fn wait_for_schedule(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&AmperityWorkflowSchedule) -> bool,
    ) -> Result<AmperityWorkflowSchedule> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.schedules(ns).get_opt(name).await {
                if done(&s) {
                    return Ok(s);
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "schedule {ns}/{name}: not {what} after {timeout:?}; last status: {}",
            last.and_then(|s| s.status)
                .map(|s| serde_json::to_string_pretty(&s).unwrap())
                .unwrap_or_else(|| "none".into())
        ))
    }

    /// The names of the runs in `ns`, sorted.
    pub async fn run_names(&self, ns: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .runs(ns)
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .map(|r| r.metadata.name.unwrap_or_default())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Polls the resource until `done` holds, or fails with its last status.
    pub async fn wait_for(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&AmperityWorkflowRun) -> bool,
    ) -> Result<AmperityWorkflowRun> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(Some(run)) = self.runs(ns).get_opt(name).await {
                if done(&run) {
                    return Ok(run);
                }
                last = Some(run);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "{ns}/{name}: not {what} after {timeout:?}; last status: {}",
            last.and_then(|r| r.status)
                .map(|s| serde_json::to_string_pretty(&s).unwrap())
                .unwrap_or_else(|| "none".into())
        ))
    }

    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        self.kubectl_as(&self.kubeconfig, args)
    }

    /// The suite's kubectl with another identity's kubeconfig.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.kubectl)
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .output()
            .expect("the suite's kubectl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// The chart's objects of the given kinds (comma-separated), rendered with Helm's
/// engine for a release in `namespace` (tests/chart/render.py).
pub fn render_chart(namespace: &str, kinds: &str) -> Result<Vec<Value>> {
    let out = Command::new(python()?)
        .arg(repo().join("tests/chart/render.py"))
        .arg(format!("--kinds={kinds}"))
        .arg(format!("--namespace={namespace}"))
        .output()
        .map_err(|e| format!("rendering the chart: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rendering the chart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// A ClusterRole the chart aggregates into the built-in view, edit or admin roles.
pub fn is_aggregated(doc: &Value) -> bool {
    doc["kind"] == "ClusterRole"
        && doc["metadata"]["labels"].as_object().is_some_and(|labels| {
            labels.iter().any(|(k, v)| {
                k.starts_with("rbac.authorization.k8s.io/aggregate-to-") && v == "true"
            })
        })
}

pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("reading {}: {e}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Kubernetes 1.20 rejects server-side apply of a CRD carrying CEL rules and
/// silently drops them on create, so the test server gets the CRDs without them.
pub fn crd_without_cel(file: &str) -> Value {
    let mut crd: Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join("crds").join(file)).unwrap())
            .unwrap();
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("x-kubernetes-validations");
                m.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut crd);
    crd
}

async fn install_crds(client: &Client) -> Result {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (file, _) in amperity_operator::crds() {
        let crd = crd_without_cel(file);
        let name = crd["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(crd),
        )
        .await
        .map_err(|e| format!("installing the CRD {name}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let crd = api.get(&name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the CRD {name} did not become Established"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

pub async fn wait_http(url: &str, timeout: Duration) -> Result {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match reqwest::get(url).await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{url} did not answer within {timeout:?}: {last}"))
}

/// A schedule's condition: status, reason, message.
pub fn schedule_condition(
    s: &AmperityWorkflowSchedule,
    kind: &str,
) -> Option<(String, String, String)> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn condition(run: &AmperityWorkflowRun, kind: &str) -> Option<(String, String, String)> {
    run.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn phase(run: &AmperityWorkflowRun) -> String {
    run.phase()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default()
}

pub fn events(env: &Env, ns: &str) -> BTreeMap<String, usize> {
    let (_, out) = env.kubectl(&["-n", ns, "get", "events.events.k8s.io", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut counts = BTreeMap::new();
    for item in v["items"].as_array().cloned().unwrap_or_default() {
        if let Some(r) = item["reason"].as_str() {
            *counts.entry(r.to_string()).or_insert(0) += 1;
        }
    }
    counts
}
