//! The Amperity API simulator: the four workflow endpoints and the OAuth token
//! endpoint, with realistic runs and fault injection (see docs/simulator.md).
//! Part of the product: `amperity-operator simulator`, `local --simulator`, tests.

mod faults;
mod routes;
pub mod runs;

pub use faults::{HUGE_BODY_BYTES, HUGE_MESSAGE_BYTES, REDIRECT_BODY, REDIRECT_TARGET};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::cli::SimulatorArgs;
use runs::Run;

/// Everything the simulator can be asked to do.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// Bearer tokens accepted (besides tokens issued by the OAuth endpoint).
    pub tokens: Vec<String>,
    pub tenant: String,
    /// Time compression: 10 runs ten times faster than real time.
    pub speed: f64,
    pub seed: u64,
    /// OAuth client credentials the token endpoint accepts.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub token_ttl: Duration,
    /// Requests per tenant in any 1-second window before 429s.
    pub rate_limit: u32,
    /// Share (0..1) of requests answered with a 5xx.
    pub fault_5xx_rate: f64,
    /// Share (0..1) of successful answers sent with a truncated body.
    pub fault_malformed_rate: f64,
    /// Added to every answer.
    pub latency: Duration,
    /// Answer 429 to everything for this long after start.
    pub throttle_storm: Duration,
    /// Add `Deprecation` and `Sunset` headers to every answer.
    pub deprecation: bool,
    /// Keep a log of every request (for load runs; grows without bound).
    pub record_requests: bool,
    /// How late a `slowstart` start answers (the run exists at once).
    pub slow_start: Duration,
    /// How long a `listlag` run stays out of lists after it was created.
    pub list_lag: Duration,
    /// The OAuth token endpoint answers 503 (it is down).
    pub token_unavailable: bool,
    /// Latency added to the OAuth token endpoint's answers.
    pub token_latency: Duration,
    /// The largest `limit` a list takes; a larger one is refused with a 400.
    pub list_limit: usize,
    /// How far the simulator's clock is ahead of the real one (negative: behind):
    /// its `Date` header and every timestamp it hands out or filters on.
    pub clock_offset: jiff::SignedDuration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tokens: vec!["sim-token".into()],
            tenant: "socktown".into(),
            speed: 1.0,
            seed: 42,
            client_id: None,
            client_secret: None,
            token_ttl: Duration::from_secs(3600),
            rate_limit: 10,
            fault_5xx_rate: 0.0,
            fault_malformed_rate: 0.0,
            latency: Duration::ZERO,
            throttle_storm: Duration::ZERO,
            deprecation: false,
            record_requests: false,
            slow_start: Duration::from_secs(35),
            list_lag: Duration::from_secs(5),
            token_unavailable: false,
            token_latency: Duration::ZERO,
            list_limit: 1000,
            clock_offset: jiff::SignedDuration::ZERO,
        }
    }
}

impl SimConfig {
    /// Now, by the simulator's clock ([`SimConfig::clock_offset`]).
    pub fn now(&self) -> jiff::Timestamp {
        let now = jiff::Timestamp::now();
        now.checked_add(self.clock_offset).unwrap_or(now)
    }
}

impl From<&SimulatorArgs> for SimConfig {
    fn from(a: &SimulatorArgs) -> Self {
        SimConfig {
            listen: a.listen,
            tokens: a.tokens.clone(),
            tenant: a.tenant.clone(),
            speed: a.speed.max(0.001),
            seed: a.seed.unwrap_or_else(|| fastrand::u64(..)),
            client_id: a.client_id.clone(),
            client_secret: a.client_secret.as_ref().map(|s| s.expose().to_string()),
            token_ttl: Duration::from_secs(a.token_ttl_secs),
            rate_limit: a.rate_limit,
            fault_5xx_rate: a.fault_5xx_rate,
            fault_malformed_rate: a.fault_malformed_rate,
            latency: Duration::from_millis(a.latency_ms),
            throttle_storm: Duration::from_secs(a.throttle_storm_secs),
            deprecation: a.deprecation,
            record_requests: false,
            slow_start: Duration::from_millis(a.slow_start_ms),
            list_lag: Duration::from_millis(a.list_lag_ms),
            token_unavailable: a.token_unavailable,
            token_latency: Duration::ZERO,
            list_limit: 1000,
            clock_offset: jiff::SignedDuration::ZERO,
        }
    }
}

/// Counters tests read (also served at `GET /_sim/stats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Accepted `POST /workflow/runs` (each created a run).
    pub starts: u64,
    pub starts_by_config: BTreeMap<String, u64>,
    pub stops: u64,
    /// Requests to /api, of any kind and outcome.
    pub requests: u64,
    /// 429 answers sent.
    pub throttled: u64,
    /// `GET /workflow/runs` answered with a list.
    #[serde(default)]
    pub lists: u64,
    /// Access tokens issued by the OAuth endpoint.
    pub tokens_issued: u64,
    pub runs: Vec<RunStat>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStat {
    pub id: String,
    pub config_id: String,
    pub state: String,
}

pub(crate) struct Sim {
    pub config: SimConfig,
    pub started: Instant,
    pub state: Mutex<SimState>,
}

pub(crate) struct SimState {
    pub rng: fastrand::Rng,
    pub runs: Vec<Run>,
    /// Real instant each run was created at, by run index.
    pub created: Vec<Instant>,
    pub stats: Stats,
    /// Accepted requests in the last second, per tenant.
    pub window: HashMap<String, VecDeque<Instant>>,
    /// Issued OAuth tokens and when they expire.
    pub issued: HashMap<String, Instant>,
    pub sequence: u64,
    pub log: Vec<Logged>,
    /// How the next list requests fail (a test hook, [`SimHandle::fail_lists`]).
    pub list_faults: VecDeque<ListFault>,
}

/// A way a list request fails, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFault {
    /// An error answer with this status (in the documented error shape).
    Status(u16),
    /// A 200 whose body is not a list.
    Garbage,
}

/// One request to /api, when `record_requests` is on.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// Seconds since the simulator started.
    pub at: f64,
    pub request: Request,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Start,
    Get(String),
    Stop(String),
    List,
}

impl Sim {
    /// Simulated seconds since run `i` was created.
    pub fn elapsed(&self, created: Instant) -> f64 {
        created.elapsed().as_secs_f64() * self.config.speed
    }

    pub fn stats(&self) -> Stats {
        let state = self.state.lock().unwrap();
        let mut stats = state.stats.clone();
        stats.runs = state
            .runs
            .iter()
            .zip(&state.created)
            .map(|(r, created)| RunStat {
                id: r.id.clone(),
                config_id: r.config_id.clone(),
                state: r.at(self.elapsed(*created)).state.to_string(),
            })
            .collect();
        stats
    }
}

/// A running simulator; stops when dropped.
pub struct SimHandle {
    addr: SocketAddr,
    sim: Arc<Sim>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL, e.g. `http://127.0.0.1:8470/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.sim.stats()
    }

    /// Every request so far (with `record_requests`).
    pub fn request_log(&self) -> Vec<Logged> {
        self.sim.state.lock().unwrap().log.clone()
    }

    /// Seconds since the simulator started (the clock of the request log).
    pub fn clock(&self) -> f64 {
        self.sim.started.elapsed().as_secs_f64()
    }

    /// Creates runs directly, as if started elsewhere (no request is counted):
    /// load runs adopt them with `spec.workflowId`. Returns their ids.
    pub fn seed_runs(&self, config_id: &str, count: usize) -> Vec<String> {
        let mut state = self.sim.state.lock().unwrap();
        (0..count)
            .map(|_| {
                let run = new_run(
                    &mut state,
                    &self.sim.config,
                    config_id,
                    ("seeded".into(), "Seeded".into()),
                );
                let id = run.id.clone();
                state.runs.push(run);
                state.created.push(Instant::now());
                id
            })
            .collect()
    }

    /// Ends run `id` now (a test hook: no request is counted), as succeeded or
    /// failed with a customer error; tasks still going end with it. Returns the
    /// moment it ended on [`SimHandle::clock`], or None for an unknown run or one
    /// that had already ended.
    pub fn end_run(&self, id: &str, failed: bool) -> Option<f64> {
        let mut state = self.sim.state.lock().unwrap();
        let i = state.runs.iter().position(|r| r.id == id)?;
        let t = self.sim.elapsed(state.created[i]);
        let run = &mut state.runs[i];
        if run.at(t).ended.is_some() || run.stopped_at.is_some() {
            return None;
        }
        run.forced_end = Some((t, failed));
        Some(self.clock())
    }

    /// The next `faults` list requests fail, one fault each, in order (after the
    /// gateway's checks, which still count them).
    pub fn fail_lists(&self, faults: &[ListFault]) {
        self.sim
            .state
            .lock()
            .unwrap()
            .list_faults
            .extend(faults.iter().copied());
    }

    /// Simulated seconds at which run `id` ends (None while it cannot end).
    pub fn ends_at(&self, id: &str) -> Option<f64> {
        let state = self.sim.state.lock().unwrap();
        let i = state.runs.iter().position(|r| r.id == id)?;
        let run = &state.runs[i];
        let end = run
            .forced_end
            .map(|(e, _)| e)
            .or(run.at(f64::MAX / 4.0).ended)?;
        let created = state.created[i]
            .duration_since(self.sim.started)
            .as_secs_f64();
        Some(created + end / self.sim.config.speed)
    }

    pub fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A new run of `config_id`, its id drawn from the seeded generator.
pub(crate) fn new_run(
    state: &mut SimState,
    config: &SimConfig,
    config_id: &str,
    principal: (String, String),
) -> Run {
    let first = !state.runs.iter().any(|r| r.config_id == config_id);
    state.sequence += 1;
    let now = config.now();
    let suffix: String = (0..5).map(|_| state.rng.alphanumeric()).collect();
    let version: String = (0..6).map(|_| state.rng.alphanumeric()).collect();
    Run {
        id: format!(
            "wf-{}-{:05}-{suffix}",
            now.strftime("%Y%m%d"),
            10_000 + state.sequence
        ),
        name: format!("Run of {config_id}"),
        config_id: config_id.to_string(),
        tenant: config.tenant.clone(),
        principal_id: principal.0,
        principal_name: principal.1,
        version: format!("etv-{}-{version}", now.strftime("%Y%m%d")),
        created_at: now,
        scenario: runs::Scenario::from_config(config_id, first),
        stopped_at: None,
        forced_end: None,
    }
}

fn new_sim(config: SimConfig) -> Arc<Sim> {
    Arc::new(Sim {
        state: Mutex::new(SimState {
            rng: fastrand::Rng::with_seed(config.seed),
            runs: Vec::new(),
            created: Vec::new(),
            stats: Stats::default(),
            window: HashMap::new(),
            issued: HashMap::new(),
            sequence: 0,
            log: Vec::new(),
            list_faults: VecDeque::new(),
        }),
        config,
        started: Instant::now(),
    })
}

/// Starts a simulator in this process on `config.listen` (port 0 picks one).
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let sim = new_sim(config);
    let (tx, rx) = oneshot::channel();
    let app = routes::router(sim.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle {
        addr,
        sim,
        shutdown: Some(tx),
    })
}

/// `amperity-operator simulator`: serves until Ctrl-C or SIGTERM.
pub async fn run(args: SimulatorArgs) -> std::io::Result<()> {
    let config = SimConfig::from(&args);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        tenant = %config.tenant,
        speed = config.speed,
        "Amperity simulator serving /api (stats at /_sim/stats)"
    );
    let app = routes::router(new_sim(config));
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::signal::shutdown_signal())
        .await
}
