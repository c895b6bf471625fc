//! What a user sees of the resources: a watch on the load namespace that counts
//! every status change, tells changes that carry news (phase, run, task summary,
//! error) from changes that carry none, and notes when each run's end first
//! showed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use amperity_operator::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

#[derive(Default)]
pub struct Seen {
    /// Status changes with news.
    pub news: u64,
    /// Status changes without news: written for a poll that found nothing new.
    pub idle: u64,
    /// When each run's end first showed (simulator clock), by workflow id.
    pub finished_at: HashMap<String, f64>,
    /// Resources following a run.
    pub adopted: HashSet<String>,
    /// The last version and status seen of each resource.
    last: HashMap<String, (String, Option<AmperityWorkflowRunStatus>)>,
}

impl Seen {
    pub fn changes(&self) -> u64 {
        self.news + self.idle
    }

    /// The last status seen of resource `name`.
    pub fn status(&self, name: &str) -> Option<&AmperityWorkflowRunStatus> {
        self.last.get(name).and_then(|(_, s)| s.as_ref())
    }

    fn apply(&mut self, run: &AmperityWorkflowRun, clock: f64) {
        let name = run.name_any();
        let version = run.resource_version().unwrap_or_default();
        let status = run.status.clone();
        if let Some(s) = &status {
            if s.workflow_id.is_some() {
                self.adopted.insert(name.clone());
            }
            if s.phase.is_some_and(|p| p.is_finished())
                && let Some(id) = &s.workflow_id
            {
                self.finished_at.entry(id.clone()).or_insert(clock);
            }
        }
        match self.last.get(&name) {
            Some((seen, _)) if *seen == version => return,
            Some((_, before)) if *before != status => {
                if news(before.as_ref(), status.as_ref()) {
                    self.news += 1;
                } else {
                    self.idle += 1;
                }
            }
            _ => {}
        }
        self.last.insert(name, (version, status));
    }
}

/// Whether a status change says something a user could act on.
fn news(
    before: Option<&AmperityWorkflowRunStatus>,
    after: Option<&AmperityWorkflowRunStatus>,
) -> bool {
    let (Some(b), Some(a)) = (before, after) else {
        return true;
    };
    b.phase != a.phase
        || b.workflow_id != a.workflow_id
        || b.workflow != a.workflow
        || b.tasks != a.tasks
        || b.error != a.error
        // The recorded intent to stop (written before the stop is sent), and a
        // spec change seen (spec.stop: observedGeneration, which waiting tools read).
        || b.stop_reason != a.stop_reason
        || b.stop_requested_at != a.stop_requested_at
        || b.observed_generation != a.observed_generation
}

/// Watches `api` until dropped; `origin` is the simulator's clock zero.
pub fn watch(
    api: Api<AmperityWorkflowRun>,
    origin: Instant,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let clock = origin.elapsed().as_secs_f64();
            match event {
                Ok(watcher::Event::Apply(run) | watcher::Event::InitApply(run)) => {
                    state.lock().unwrap().apply(&run, clock)
                }
                Ok(watcher::Event::Delete(run)) => {
                    state.lock().unwrap().last.remove(&run.name_any());
                }
                _ => {}
            }
        }
    });
    (seen, task)
}
