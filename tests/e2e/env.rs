//! The end-to-end environment: a real kube-apiserver + etcd on loopback (started by
//! testenv.sh), the project's simulator and the real operator binary as processes.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::crd::schedule::AmperityWorkflowSchedule;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_amperity-operator");
/// Every token the simulator accepts starts with this, and is handed to one
/// scenario (`Env::own_token`): a search for a lost start looks only at runs its
/// principal made, so another scenario's runs (started at the same time, or by a
/// resource since deleted) can never make it ambiguous.
pub const TOKEN_PREFIX: &str = "e2e-token-";
/// More than the suite's scenarios ask for.
const TOKENS: usize = 200;

fn token(i: usize) -> String {
    format!("{TOKEN_PREFIX}{i}")
}

/// Who the simulator says a token starts runs as (`api-key|sim-N` for the Nth of
/// the tokens it was given).
pub fn principal_of(token: &str) -> Option<String> {
    let i: usize = token.strip_prefix(TOKEN_PREFIX)?.parse().ok()?;
    (1..=TOKENS)
        .contains(&i)
        .then(|| format!("api-key|sim-{i}"))
}
pub const CLIENT_ID: &str = "e2e-operator";
pub const CLIENT_SECRET: &str = "e2e-client-s3cret";

pub type Result<T = ()> = std::result::Result<T, String>;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A task aborted when dropped: a scenario that returns early, fails or runs out
/// of time leaves nothing running behind it.
pub struct TaskGuard(pub tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `check` until it holds, or fails with its last complaint after `timeout`.
/// For what must happen; what must not happen is checked once, after something
/// that comes later has been seen.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{e} (still so after {timeout:?})"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A child process killed when dropped, its output in a log file.
pub struct Proc {
    /// What it was started as: an operator's POD_NAME, its identity in the Lease.
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    /// Killed by the suite (its pid may since be another process's).
    killed: bool,
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
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
            killed: false,
        })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }

    /// The process still runs (it has not exited, nor become a zombie).
    pub fn is_running(&self) -> bool {
        !self.killed
            && std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
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

    /// The TCP port the process listens on, once it does. The suite's children bind
    /// port 0 and are asked afterwards (listening.rs): a port found free beforehand
    /// could be taken before the child binds it.
    pub async fn listen_port(&self, timeout: Duration) -> Result<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(port) = crate::listening::listening_ports(&[self.child.id()])
                .first()
                .copied()
            {
                return Ok(port);
            }
            if !self.is_running() {
                return Err(format!(
                    "{} exited before it listened:\n{}",
                    self.log.display(),
                    self.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} listened on no port within {timeout:?}:\n{}",
                    self.log.display(),
                    self.log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    /// How many of the simulator's tokens have been handed out.
    tokens_used: AtomicUsize,
}

/// The suite's Python (scripts/python-venv.sh creates its venv when missing).
fn python() -> Result<PathBuf> {
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
        clear_leftovers(&client).await?;

        let tokens: Vec<String> = (1..=TOKENS).map(token).collect();
        let sim = Proc::spawn(
            "simulator",
            &["simulator"],
            &[
                ("SIM_LISTEN", "127.0.0.1:0".into()),
                ("SIM_TOKENS", tokens.join(",")),
                ("SIM_SPEED", "10".into()),
                // A seed of its own: the workflow ids it hands out are not those an
                // earlier run's simulator handed out (and an earlier run's resource
                // could still claim).
                ("SIM_SEED", fastrand::u64(..).to_string()),
                ("SIM_CLIENT_ID", CLIENT_ID.into()),
                ("SIM_CLIENT_SECRET", CLIENT_SECRET.into()),
                // `slowstart` answers late enough to kill the operator inside a start;
                // `listlag` runs show in lists after a while.
                ("SIM_SLOW_START_MS", "3000".into()),
                ("SIM_LIST_LAG_MS", "4000".into()),
            ],
        )?;
        let sim_port = sim.listen_port(Duration::from_secs(20)).await?;
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
            metrics_port: 0,
            tokens_used: AtomicUsize::new(0),
        };
        env.restart_operator("operator").await?;
        Ok(env)
    }

    /// Starts the shared operator as `name` (replacing one that runs), and waits
    /// until it answers /readyz.
    pub async fn restart_operator(&mut self, name: &str) -> Result {
        if let Some(mut old) = self.operator.take() {
            old.kill();
        }
        let (op, port) = self.start_operator(name, &[]).await?;
        let ready = wait_http(
            &format!("http://127.0.0.1:{port}/readyz"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| format!("{e}\noperator log:\n{}", op.log_text()));
        self.operator = Some(op);
        self.metrics_port = port;
        ready
    }

    /// After a scenario that kills or replaces operators: the shared operator runs,
    /// whatever path the scenario took out (an error, its time limit).
    pub async fn ensure_operator(&mut self, name: &str) -> Result {
        if self.operator.as_ref().is_some_and(Proc::is_running) {
            return Ok(());
        }
        self.restart_operator(name).await
    }

    /// Starts an operator process with the test settings (fast retries and re-checks),
    /// its metrics on a port of its own choosing; returns it with that port once it
    /// listens.
    pub async fn start_operator(
        &self,
        name: &str,
        extra: &[(&str, String)],
    ) -> Result<(Proc, u16)> {
        let op = self.spawn_operator(name, extra)?;
        let port = op.listen_port(Duration::from_secs(30)).await?;
        Ok((op, port))
    }

    /// Starts an operator process without waiting for it (`start_operator` waits
    /// until it listens).
    pub fn spawn_operator(&self, name: &str, extra: &[(&str, String)]) -> Result<Proc> {
        let mut envs: Vec<(&str, String)> = vec![
            ("KUBECONFIG", self.kubeconfig.display().to_string()),
            ("METRICS_ADDR", "127.0.0.1:0".into()),
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
    /// scenario's runs too), then starts it again as `name`. (Should `checks` run
    /// out of time, the suite starts it again: `ensure_operator`.)
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
        let restarted = self.restart_operator(name).await;
        result.and(restarted)
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

    /// A token of the simulator's that no other scenario uses.
    pub fn own_token(&self) -> String {
        let i = self.tokens_used.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(i <= TOKENS, "the simulator has only {TOKENS} tokens");
        token(i)
    }

    /// A fresh namespace with the token Secret.
    pub async fn namespace(&self, name: &str, token: Option<&str>) -> Result<String> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut attempts = 0;
        let ns = loop {
            let ns = format!("{name}-{}", fastrand::u32(..) % 100_000);
            match api
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
                )
                .await
            {
                Ok(_) => break ns,
                // Namespaces outlive a run of the suite (nothing here deletes them):
                // a name an earlier run drew is drawn again.
                Err(kube::Error::Api(e)) if e.code == 409 && attempts < 10 => attempts += 1,
                Err(e) => return Err(format!("creating namespace {ns}: {e}")),
            }
        };
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

    pub async fn kubectl(&self, args: &[&str]) -> (bool, String) {
        self.kubectl_as(&self.kubeconfig, args).await
    }

    /// The suite's kubectl with another identity's kubeconfig. On a thread of its
    /// own: the scenarios that share the operator run as one task, and a kubectl
    /// that blocked it (`kubectl wait` for a run's end, `explain` after `explain`)
    /// would stop every other scenario's clock-bound checks meanwhile.
    pub async fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", kubeconfig).args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("the kubectl thread ends")
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
/// engine for a release in `namespace` (tests/chart/render.py). On a thread of its
/// own, as kubectl: the venv may be created first.
pub async fn render_chart(namespace: &str, kinds: &str) -> Result<Vec<Value>> {
    render_chart_with(namespace, kinds, Value::Null).await
}

/// [`render_chart`] with `values` (a JSON object of chart values; null: none).
pub async fn render_chart_with(namespace: &str, kinds: &str, values: Value) -> Result<Vec<Value>> {
    let (namespace, kinds) = (namespace.to_string(), kinds.to_string());
    tokio::task::spawn_blocking(move || render_chart_now(&namespace, &kinds, &values))
        .await
        .map_err(|e| e.to_string())?
}

fn render_chart_now(namespace: &str, kinds: &str, values: &Value) -> Result<Vec<Value>> {
    let mut command = Command::new(python()?);
    command
        .arg(repo().join("tests/chart/render.py"))
        .arg(format!("--kinds={kinds}"))
        .arg(format!("--namespace={namespace}"));
    let file = std::env::temp_dir().join(format!("e2e-values-{}.json", fastrand::u32(..)));
    if !values.is_null() {
        std::fs::write(&file, values.to_string()).map_err(|e| e.to_string())?;
        command.arg(&file);
    }
    let out = command.output();
    let _ = std::fs::remove_file(&file);
    let out = out.map_err(|e| format!("rendering the chart: {e}"))?;
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

/// Whether the API server's authorizer lets the user of `client` do `verb` on
/// `resource` (`name/subresource` allowed) in `namespace`: a SelfSubjectAccessReview.
pub async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
) -> Result<bool> {
    can_named(client, verb, group, resource, namespace, "").await
}

/// [`can`] for one object by name (what a rule with `resourceNames` allows).
pub async fn can_named(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Result<bool> {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb, "group": group,
                                        "resource": resource, "subresource": subresource,
                                        "name": name}},
    }))
    .map_err(|e| e.to_string())?;
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| format!("SelfSubjectAccessReview: {e}"))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
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

/// Removes the runs and schedules that earlier runs of the suite left in the API
/// server (nothing here deletes them, and without a namespace controller deleting
/// a namespace would not either), finalizers and all, before this run's operator
/// starts. Left, the operator would take them up: runs following workflow ids this
/// run's simulator may hand out again to other runs, schedules still creating a
/// run every minute, all of them spending the simulator's rate budget.
async fn clear_leftovers(client: &Client) -> Result {
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let runs = Api::<AmperityWorkflowRun>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing leftover runs: {e}"))?;
    for run in runs {
        let (ns, name) = (
            run.metadata.namespace.unwrap_or_default(),
            run.metadata.name.unwrap_or_default(),
        );
        let api: Api<AmperityWorkflowRun> = Api::namespaced(client.clone(), &ns);
        let _ = api
            .patch(&name, &PatchParams::default(), &no_finalizers)
            .await;
        let _ = api.delete(&name, &Default::default()).await;
    }
    let schedules = Api::<AmperityWorkflowSchedule>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing leftover schedules: {e}"))?;
    for schedule in schedules {
        let (ns, name) = (
            schedule.metadata.namespace.unwrap_or_default(),
            schedule.metadata.name.unwrap_or_default(),
        );
        let api: Api<AmperityWorkflowSchedule> = Api::namespaced(client.clone(), &ns);
        let _ = api
            .patch(&name, &PatchParams::default(), &no_finalizers)
            .await;
        let _ = api.delete(&name, &Default::default()).await;
    }
    Ok(())
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

/// The Events (events.k8s.io) in `ns`.
pub async fn event_list(env: &Env, ns: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), ns);
    api.list(&Default::default())
        .await
        .map(|list| list.items)
        .map_err(|e| format!("listing the Events in {ns}: {e}"))
}

/// How many Events in `ns` give each reason.
pub async fn events(env: &Env, ns: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in event_list(env, ns).await.unwrap_or_default() {
        if let Some(r) = event.reason {
            *counts.entry(r).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits until the Events in `ns` include one with each of `reasons` (the operator
/// writes an Event after the status it tells of, so a status seen does not mean
/// its Event is there yet); returns the counts by reason.
pub async fn wait_events(
    env: &Env,
    ns: &str,
    reasons: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, usize>> {
    eventually(timeout, || async {
        let seen = events(env, ns).await;
        let missing: Vec<&&str> = reasons.iter().filter(|r| !seen.contains_key(**r)).collect();
        if missing.is_empty() {
            Ok(seen)
        } else {
            Err(format!("no {missing:?} Event in {ns}: {seen:?}"))
        }
    })
    .await
}
