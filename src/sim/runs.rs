//! A simulated run: its scenario (chosen by markers in the config id) and, as a
//! pure function of elapsed simulated time, its state, tasks and error.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

/// Labels of the simulated tasks, in order.
const TASKS: &[&str] = &[
    "Pulling files from the source",
    "Loading domain tables",
    "Updating domain tables",
    "Running Stitch",
    "Refreshing databases",
];
/// Simulated seconds per task; the whole default run takes about 10 s.
const TASK_SECONDS: f64 = 1.6;
const SCHEDULED_SECONDS: f64 = 1.0;
const STARTED_SECONDS: f64 = 1.0;
const STOPPING_SECONDS: f64 = 1.0;
const WARMING_UP_SECONDS: f64 = 3.0;

/// What a config id asks the simulator to do (markers are case-insensitive).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scenario {
    pub fail_customer: bool,
    /// Fail with a platform error (only the first run of the config id).
    pub fail_platform: bool,
    pub slow: bool,
    pub hang: bool,
    pub unknown_state: bool,
    pub vanish: bool,
    /// Fails like `failcustomer`, with a 3 MB error message.
    pub huge_error: bool,
    /// Never shows in lists.
    pub unlisted: bool,
    /// Lists show it succeeded (with an `ended_at`) while it is still going.
    pub list_lie: bool,
    /// Lists show its end only `--list-lag-ms` after it ended.
    pub end_lag: bool,
}

impl Scenario {
    pub fn from_config(config_id: &str, first_of_its_config: bool) -> Scenario {
        let id = config_id.to_ascii_lowercase();
        Scenario {
            fail_customer: id.contains("failcustomer"),
            fail_platform: id.contains("failplatform") && first_of_its_config,
            slow: id.contains("slow"),
            hang: id.contains("hang"),
            unknown_state: id.contains("unknownstate"),
            vanish: id.contains("vanish"),
            huge_error: id.contains("hugeerror"),
            unlisted: id.contains("unlisted"),
            list_lie: id.contains("listlie"),
            end_lag: id.contains("endlag"),
        }
    }
}

pub fn workflow_type(config_id: &str) -> &'static str {
    match config_id.get(..3) {
        Some("og-") => "amperity.orchestration.orchestration/run",
        Some("cc-") => "campaign.send",
        _ => "courier.group/run",
    }
}

#[derive(Clone, Debug)]
pub struct Run {
    pub id: String,
    pub config_id: String,
    pub tenant: String,
    pub name: String,
    pub principal_id: String,
    pub principal_name: String,
    pub version: String,
    pub created_at: Timestamp,
    pub scenario: Scenario,
    /// Simulated seconds since creation at which a stop arrived.
    pub stopped_at: Option<f64>,
    /// Simulated seconds since creation at which the run was made to end (a test
    /// hook, [`super::SimHandle::end_run`]), and whether it failed.
    pub forced_end: Option<(f64, bool)>,
}

/// Which fields a workflow is shown with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `view=overview`: id, state, type, name, tenant, created_at, ended_at.
    Overview,
    /// A list item: the overview, with the principal, versions and error (the
    /// list's documented example), without task instances (verbose only).
    Listed,
    /// `view=verbose`: everything, with task instances.
    Verbose,
}

/// Where a run stands at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub state: &'static str,
    /// Simulated seconds at which it ended.
    pub ended: Option<f64>,
    pub error: Option<Value>,
    /// (label, state, started, ended) per task that exists yet.
    pub tasks: Vec<TaskSnapshot>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskSnapshot {
    pub index: usize,
    pub state: &'static str,
    pub started: f64,
    pub ended: Option<f64>,
    pub error: Option<Value>,
}

impl Run {
    fn task_seconds(&self) -> f64 {
        if self.scenario.slow {
            TASK_SECONDS * 10.0
        } else {
            TASK_SECONDS
        }
    }

    /// The task that fails, if the scenario fails.
    fn failing_task(&self) -> Option<(usize, Value)> {
        if self.scenario.huge_error {
            // Multi-byte characters, so that a cut in the wrong place would split one.
            let message = format!(
                "Stitch failed: {}",
                "ü".repeat(super::faults::HUGE_MESSAGE_BYTES / 2)
            );
            Some((
                3,
                json!({"type": "amperity.workflow.task.stitch/table", "attribution": "customer", "message": message}),
            ))
        } else if self.scenario.fail_customer {
            Some((
                3,
                json!({"type": "amperity.workflow.task.stitch/table", "attribution": "customer",
                       "message": "Found table in an invalid state: loyalty_members. Remove the table or load data into it."}),
            ))
        } else if self.scenario.fail_platform {
            Some((
                1,
                json!({"type": "amperity.workflow.task.spark/cluster", "attribution": "platform",
                       "message": "The compute cluster was lost while loading domain tables."}),
            ))
        } else {
            None
        }
    }

    /// The run at `t` simulated seconds after its creation.
    pub fn at(&self, t: f64) -> Snapshot {
        match self.forced_end {
            Some((end, failed)) if t >= end => self.forced(end, failed),
            _ => self.natural(t),
        }
    }

    /// The run made to end at `end`: tasks still going end with it.
    fn forced(&self, end: f64, failed: bool) -> Snapshot {
        let mut snap = self.natural(end);
        if snap.ended.is_some() {
            return snap;
        }
        let last = snap.tasks.len().saturating_sub(1);
        for (i, task) in snap.tasks.iter_mut().enumerate() {
            if task.ended.is_none() {
                task.ended = Some(end);
                task.state = if failed && i == last {
                    "failed"
                } else {
                    "succeeded"
                };
            }
        }
        let error = failed.then(|| {
            json!({"type": "amperity.workflow.task.stitch/table", "attribution": "customer",
                   "message": "Found table in an invalid state: loyalty_members."})
        });
        if let (Some(task), Some(e)) = (snap.tasks.last_mut(), &error) {
            task.error = Some(e.clone());
        }
        Snapshot {
            state: if failed { "failed" } else { "succeeded" },
            ended: Some(end),
            error,
            tasks: snap.tasks,
        }
    }

    fn natural(&self, t: f64) -> Snapshot {
        let warm = match (self.scenario.unknown_state, self.scenario.slow) {
            (false, _) => 0.0,
            // Slow runs warm up for a minute, long enough for a poll to see it.
            (true, true) => WARMING_UP_SECONDS * 20.0,
            (true, false) => WARMING_UP_SECONDS,
        };
        let tasks_start = SCHEDULED_SECONDS + STARTED_SECONDS + warm;
        let per_task = self.task_seconds();
        let failing = self.failing_task();
        let last_task = match &failing {
            Some((i, _)) => *i,
            None => TASKS.len() - 1,
        };
        let natural_end = if self.scenario.hang {
            None
        } else {
            Some(tasks_start + per_task * (last_task + 1) as f64)
        };
        // A stop ends the run unless it had already ended.
        let stop = self
            .stopped_at
            .filter(|s| natural_end.is_none_or(|end| *s < end));
        let cut = match (stop, natural_end) {
            (Some(s), _) => Some(s),
            (None, end) => end,
        };

        let mut tasks = Vec::new();
        for i in 0..=last_task {
            let started = tasks_start + per_task * i as f64;
            if t < started || cut.is_some_and(|c| c <= started) {
                break;
            }
            let natural_done = started + per_task;
            let hang_here = self.scenario.hang && i == last_task;
            let (state, ended, error) = if let Some(s) =
                stop.filter(|s| *s < natural_done || hang_here)
            {
                if t >= s {
                    ("canceled", Some(s), None)
                } else {
                    ("running", None, None)
                }
            } else if t >= natural_done && !hang_here {
                match &failing {
                    Some((fi, e)) if *fi == i => ("failed", Some(natural_done), Some(e.clone())),
                    _ => ("succeeded", Some(natural_done), None),
                }
            } else {
                ("running", None, None)
            };
            tasks.push(TaskSnapshot {
                index: i,
                state,
                started,
                ended,
                error,
            });
        }

        if let Some(s) = stop {
            if t >= s + STOPPING_SECONDS {
                return Snapshot {
                    state: "canceled",
                    ended: Some(s + STOPPING_SECONDS),
                    error: Some(
                        json!({"type": "amperity.workflow.workflow.repository.core/cancel",
                                       "attribution": "customer", "message": "Workflow manually stopped"}),
                    ),
                    tasks,
                };
            }
            if t >= s {
                return Snapshot {
                    state: "stopping",
                    ended: None,
                    error: None,
                    tasks,
                };
            }
        }
        if let Some(end) = natural_end
            && t >= end
        {
            let (state, error) = match failing {
                Some((_, e)) => ("failed", Some(e)),
                None => ("succeeded", None),
            };
            return Snapshot {
                state,
                ended: Some(end),
                error,
                tasks,
            };
        }
        let state = if t < SCHEDULED_SECONDS {
            "scheduled"
        } else if t < SCHEDULED_SECONDS + warm {
            "Warming up"
        } else if t < tasks_start {
            "started"
        } else {
            "running"
        };
        Snapshot {
            state,
            ended: None,
            error: None,
            tasks,
        }
    }

    /// The Workflow JSON of the API at `t`, in `view`.
    pub fn to_json(&self, t: f64, speed: f64, view: View) -> Value {
        self.snapshot_json(&self.at(t), speed, view)
    }

    /// A snapshot's Workflow JSON.
    pub fn snapshot_json(&self, snap: &Snapshot, speed: f64, view: View) -> Value {
        let stamp = |sim_secs: f64| stamp(self.created_at, sim_secs / speed);
        let mut w = json!({
            "id": self.id,
            "state": snap.state,
            "type": workflow_type(&self.config_id),
            "name": self.name,
            "tenant": self.tenant,
            "created_at": stamp(0.0),
        });
        if let Some(end) = snap.ended {
            w["ended_at"] = json!(stamp(end));
        }
        if view != View::Overview {
            w["principal_id"] = json!(self.principal_id);
            w["principal_name"] = json!(self.principal_name);
            w["launched_version"] = json!(self.version);
            w["current_version"] = json!(self.version);
            if let Some(e) = &snap.error {
                w["error"] = e.clone();
            }
        }
        if view == View::Verbose {
            let tasks: Vec<Value> = snap
                .tasks
                .iter()
                .map(|task| {
                    let mut v = json!({
                        "id": format!("wft-{}-{}", self.id.trim_start_matches("wf-"), task.index + 1),
                        "state": task.state,
                        "tenant": self.tenant,
                        "label": TASKS[task.index],
                        "created_at": stamp(task.started),
                        "execution_type": "spark-sql",
                        "workflow_id": self.id,
                    });
                    if let Some(end) = task.ended {
                        v["ended_at"] = json!(stamp(end));
                    }
                    if let Some(e) = &task.error {
                        v["error"] = e.clone();
                    }
                    v
                })
                .collect();
            w["task_instances"] = Value::Array(tasks);
        }
        w
    }
}

/// RFC 3339 with milliseconds, as the API writes them.
pub fn stamp(base: Timestamp, real_secs: f64) -> String {
    let at = base + SignedDuration::from_secs_f64(real_secs.max(0.0));
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &str) -> Run {
        Run {
            id: "wf-1".into(),
            config_id: config.into(),
            tenant: "t".into(),
            name: "n".into(),
            principal_id: "p".into(),
            principal_name: "P".into(),
            version: "etv-1".into(),
            created_at: "2025-04-18T06:00:00Z".parse().unwrap(),
            scenario: Scenario::from_config(config, true),
            stopped_at: None,
            forced_end: None,
        }
    }

    #[test]
    fn a_default_run_moves_through_realistic_states() {
        let r = run("cg-1");
        let states: Vec<&str> = [0.0, 1.5, 2.5, 5.0, 11.0]
            .iter()
            .map(|t| r.at(*t).state)
            .collect();
        assert_eq!(
            states,
            ["scheduled", "started", "running", "running", "succeeded"]
        );
        let done = r.at(11.0);
        assert_eq!(done.tasks.len(), 5);
        assert!(done.tasks.iter().all(|t| t.state == "succeeded"));
        let mid = r.at(5.0);
        assert_eq!(
            mid.tasks.iter().filter(|t| t.state == "succeeded").count(),
            1
        );
        assert_eq!(mid.tasks.iter().filter(|t| t.state == "running").count(), 1);
    }

    #[test]
    fn scenarios() {
        let c = run("cg-x-FailCustomer").at(100.0);
        assert_eq!(c.state, "failed");
        assert_eq!(c.error.unwrap()["attribution"], "customer");
        let p = run("cg-x-failplatform").at(100.0);
        assert_eq!(p.error.unwrap()["attribution"], "platform");
        let mut again = run("cg-x-failplatform");
        again.scenario = Scenario::from_config("cg-x-failplatform", false);
        assert_eq!(again.at(100.0).state, "succeeded");
        assert_eq!(run("cg-hang").at(10_000.0).state, "running");
        assert_eq!(run("cg-unknownstate").at(1.5).state, "Warming up");
        assert_eq!(run("cg-slow").at(20.0).state, "running");
    }

    #[test]
    fn a_run_made_to_end_ends_then_with_its_tasks() {
        let mut r = run("cg-hang");
        r.forced_end = Some((5.0, false));
        assert_eq!(r.at(4.9).state, "running");
        let done = r.at(6.0);
        assert_eq!((done.state, done.ended), ("succeeded", Some(5.0)));
        assert!(done.tasks.iter().all(|t| t.ended.is_some_and(|e| e <= 5.0)));
        let mut failed = run("cg-hang");
        failed.forced_end = Some((5.0, true));
        let f = failed.at(5.0);
        assert_eq!(f.state, "failed");
        assert_eq!(f.error.unwrap()["attribution"], "customer");
        assert_eq!(f.tasks.last().unwrap().state, "failed");
        // A run that had ended by then keeps its own end.
        let mut natural = run("cg-1");
        natural.forced_end = Some((50.0, true));
        assert_eq!(natural.at(60.0).state, "succeeded");
    }

    #[test]
    fn a_stop_goes_through_stopping_to_canceled() {
        let mut r = run("cg-hang");
        r.stopped_at = Some(5.0);
        assert_eq!(r.at(5.5).state, "stopping");
        let end = r.at(6.5);
        assert_eq!(end.state, "canceled");
        assert_eq!(end.error.unwrap()["message"], "Workflow manually stopped");
        assert!(end.tasks.iter().any(|t| t.state == "canceled"));
        // A stop after the end changes nothing.
        let mut done = run("cg-1");
        done.stopped_at = Some(50.0);
        assert_eq!(done.at(60.0).state, "succeeded");
    }
}
