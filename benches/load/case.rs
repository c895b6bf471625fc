//! What a load case is made of: what was asked of it (setting, shape), its window,
//! what the shapes share while they play (Ctx), its figures, and creating runs.

use std::collections::HashMap;

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::sim::SimHandle;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::observe::Seen;

pub const TOKEN: &str = "load-token";

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
