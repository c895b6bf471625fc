//! The AmperityWorkflowSchedule reconciler: reads the schedule and its runs, asks
//! [`schedule::decide`](crate::schedule::decide) what to do, and does it. The only
//! place schedules touch the cluster.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::bounded::cut;
use crate::cluster::FIELD_MANAGER;
use crate::cluster::events::{publish_event, reporter};
use crate::cluster::finalizer::apply_finalizer;
use crate::cluster::retry::{Failures, catch_panic};
use crate::crd::AmperityWorkflowRun;
use crate::crd::schedule::{AmperityWorkflowSchedule, AmperityWorkflowScheduleStatus};
use crate::metrics::{Metrics, ReasonLabels, SCHEDULE_OUTCOMES, ScheduleLabels};
use crate::run::decide::Event;
use crate::run::ledger::{ClaimsLedger, LedgerError};
use crate::run::tracking::claimed_ids;
use crate::schedule::{self, Plan, RUN_NOW_ANNOTATION, SCHEDULE_LABEL};

/// Holds a schedule being deleted until its runs were told to go: clusters
/// without a garbage collector would otherwise keep them for ever.
pub const SCHEDULE_FINALIZER: &str = "amperity.dev/delete-runs";
/// Slack added to a wake-up so that it lands just after the slot, not before it.
const WAKE_SLACK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} for AmperityWorkflowSchedule {namespace}/{name} failed: {source}")]
    Kube {
        what: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("AmperityWorkflowSchedule {0} has no namespace")]
    NoNamespace(String),
    #[error(
        "recording the runs AmperityWorkflowSchedule {namespace}/{name} prunes failed: {source}"
    )]
    Ledger {
        namespace: String,
        name: String,
        #[source]
        source: LedgerError,
    },
    #[error("the reconcile of AmperityWorkflowSchedule {namespace}/{name} panicked: {message}")]
    Panicked {
        namespace: String,
        name: String,
        message: String,
    },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { what, .. } => what,
            Error::NoNamespace(_) => "no namespace",
            Error::Ledger { .. } => "recording pruned runs in the claims ledger",
            Error::Panicked { .. } => "panicked",
        }
    }
}

/// What every schedule reconcile shares.
pub struct ScheduleContext {
    pub client: Client,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// Failed reconciles in a row, by uid, for each schedule's own backoff.
    pub failures: Failures,
    /// Where the runs of history it prunes are recorded before they go (the
    /// run controller's claims ledger): a lost start's search must never adopt one.
    pub ledger: Option<Arc<ClaimsLedger>>,
}

impl ScheduleContext {
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        ScheduleContext {
            reporter: reporter(),
            client,
            metrics,
            failures: Failures::default(),
            ledger: None,
        }
    }

    /// The same, recording pruned runs in `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<ClaimsLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }
}

/// One schedule controller per watched namespace (or one for all), until a
/// shutdown signal. Runs work without the schedule CRD (a chart upgrade does not
/// install new CRDs): until it can be listed, the controller waits, retrying with
/// backoff (the log and `schedule_controller_running` say so), and starts once it can.
pub async fn controllers(
    client: Client,
    namespaces: &[String],
    metrics: Arc<Metrics>,
    ledger: Arc<ClaimsLedger>,
) {
    let scope = |client: Client, ns: Option<&String>| -> Api<AmperityWorkflowSchedule> {
        match ns {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    };
    let probe = scope(client.clone(), namespaces.first());
    tokio::select! {
        _ = wait_for_crd(&probe, &metrics) => {}
        _ = crate::signal::shutdown_signal() => return,
    }
    let ctx = Arc::new(ScheduleContext::new(client.clone(), metrics).with_ledger(ledger));
    let scopes: Vec<Option<&String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(Some).collect()
    };
    let running = scopes.into_iter().map(|ns| {
        let schedules = scope(client.clone(), ns);
        let runs: Api<AmperityWorkflowRun> = match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (reader, writer) = reflector::store();
        // Our own status writes change neither of these: they trigger nothing.
        let changes = watcher(schedules, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .touched_objects()
            .predicate_filter(schedule_change, PredicateConfig::default());
        // Only runs made by schedules, and only when their phase or life changes.
        let run_changes = watcher(runs, watcher::Config::default().labels(SCHEDULE_LABEL))
            .default_backoff()
            .touched_objects()
            .predicate_filter(run_change, PredicateConfig::default());
        Controller::for_stream(changes, reader)
            .owns_stream(run_changes)
            .with_config(controller::Config::default().concurrency(8))
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    warn!(error = %e, "schedule reconcile loop error");
                }
            })
    });
    info!("AmperityWorkflowSchedule controller started");
    futures::future::join_all(running).await;
}

/// The longest wait between two probes for the schedule CRD.
pub const MAX_PROBE_BACKOFF: Duration = Duration::from_secs(60);

/// The wait before probe `attempt + 1`: 1 s, doubling, at most [`MAX_PROBE_BACKOFF`].
pub fn probe_backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempt.min(16)).unwrap_or(u64::MAX))
        .min(MAX_PROBE_BACKOFF)
}

/// Lists schedules until that works (a 5xx, a CRD installed after the operator),
/// with backoff; `schedule_controller_running` is 0 meanwhile and 1 after.
pub async fn wait_for_crd(probe: &Api<AmperityWorkflowSchedule>, metrics: &Metrics) {
    let mut attempt: u32 = 0;
    loop {
        match probe.list(&ListParams::default().limit(1)).await {
            Ok(_) => {
                metrics.schedule_controller_running.set(1);
                return;
            }
            Err(e) => {
                metrics.schedule_controller_running.set(0);
                let wait = probe_backoff(attempt);
                attempt = attempt.saturating_add(1);
                warn!(
                    error = %e,
                    attempt,
                    retry_in_seconds = wait.as_secs(),
                    "AmperityWorkflowSchedules are not running yet: their CRD is not installed or not readable; install it with `amperity-operator crd | kubectl apply -f -` and they start by themselves"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Changes worth a reconcile: the spec, deletion, and the run-now annotation.
fn schedule_change(schedule: &AmperityWorkflowSchedule) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    schedule.metadata.generation.hash(&mut h);
    schedule.metadata.deletion_timestamp.is_some().hash(&mut h);
    schedule.annotations().get(RUN_NOW_ANNOTATION).hash(&mut h);
    Some(h.finish())
}

fn run_change(run: &AmperityWorkflowRun) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    run.phase().hash(&mut h);
    run.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

pub async fn reconcile(
    obj: Arc<AmperityWorkflowSchedule>,
    ctx: Arc<ScheduleContext>,
) -> Result<Action, Error> {
    let namespace = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(obj.name_any()))?;
    let name = obj.name_any();
    let span = info_span!("reconcile_schedule", namespace = %namespace, name = %name);
    let work = Reconcile {
        ctx: &ctx,
        schedules: Api::namespaced(ctx.client.clone(), &namespace),
        runs: Api::namespaced(ctx.client.clone(), &namespace),
        namespace: namespace.clone(),
        name: name.clone(),
    }
    .run()
    .instrument(span);
    // A panic is a bug in the handling of one schedule: it must not end the process
    // (kube-runtime would re-raise it), and every other schedule with it.
    let uid = obj.uid().unwrap_or_default();
    let result = match catch_panic(work).await {
        Ok(result) => result,
        Err(message) => {
            ctx.metrics.reconcile_panics.inc();
            tracing::error!(%namespace, %name, panic = %message, "schedule reconcile panicked; retrying it with backoff");
            Err(Error::Panicked {
                namespace,
                name,
                message,
            })
        }
    };
    if result.is_ok() {
        ctx.failures.succeeded(&uid);
    }
    result
}

/// Retries after a failed Kubernetes call (or a caught panic), backing off per
/// schedule as the run controller does: 5 s, doubling, at most 5 minutes.
pub fn error_policy(
    obj: Arc<AmperityWorkflowSchedule>,
    error: &Error,
    ctx: Arc<ScheduleContext>,
) -> Action {
    let (failures, wait) = ctx.failures.failed(&obj.uid().unwrap_or_default());
    warn!(error = %error, failures, retry_in_s = wait.as_secs(), "schedule reconcile failed; retrying");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: error.metric_label().to_string(),
        })
        .inc();
    Action::requeue(wait)
}

struct Reconcile<'a> {
    ctx: &'a ScheduleContext,
    schedules: Api<AmperityWorkflowSchedule>,
    runs: Api<AmperityWorkflowRun>,
    namespace: String,
    name: String,
}

impl Reconcile<'_> {
    fn fail(&self, what: &'static str) -> impl FnOnce(kube::Error) -> Error + use<> {
        let (namespace, name) = (self.namespace.clone(), self.name.clone());
        move |source| Error::Kube {
            what,
            namespace,
            name,
            source,
        }
    }

    async fn run(self) -> Result<Action, Error> {
        // Read afresh: the cache can lag the status this operator wrote a moment ago.
        let Some(schedule) = self
            .schedules
            .get_opt(&self.name)
            .await
            .map_err(self.fail("reading the schedule"))?
        else {
            return Ok(Action::await_change());
        };
        let selector = format!("{SCHEDULE_LABEL}={}", self.name);
        let runs = self
            .runs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(self.fail("listing the schedule's runs"))?
            .items;
        let now = Timestamp::now();
        let mut plan = schedule::decide(&schedule, &runs, now);

        let deleting = schedule.metadata.deletion_timestamp.is_some();
        let has_finalizer = schedule
            .finalizers()
            .iter()
            .any(|f| f == SCHEDULE_FINALIZER);
        if !deleting && !has_finalizer {
            self.set_finalizer(true)
                .await
                .map_err(self.fail("adding the finalizer"))?;
        }
        // Replace creates the new run first and stops the old ones only once it
        // exists: a refused create leaves them alone (creation_refused clears stop).
        self.create(&schedule, &mut plan, now).await?;
        for run in &plan.stop {
            let patch = Patch::Merge(json!({"spec": {"stop": true}}));
            match self.runs.patch(run, &PatchParams::default(), &patch).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(self.fail("stopping a run it replaces")(e)),
            }
        }
        if schedule.status.clone().unwrap_or_default() != plan.status {
            self.save_status(&plan.status).await?;
        }
        self.record_pruned(&runs, &plan.delete, now).await?;
        for run in &plan.delete {
            match self.runs.delete(run, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(self.fail("deleting a run")(e)),
            }
        }
        for event in &plan.events {
            self.count(event);
            self.publish(&schedule, event).await;
        }
        if plan.release_finalizer && has_finalizer {
            self.set_finalizer(false)
                .await
                .map_err(self.fail("removing the finalizer"))?;
        }
        Ok(match plan.wake {
            Some(at) => {
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
                Action::requeue((wait + WAKE_SLACK).max(Duration::from_millis(200)))
            }
            None => Action::await_change(),
        })
    }

    /// Writes the runs of the history about to be pruned to the claims ledger,
    /// before they go: once deleted, only the ledger says whose they were.
    async fn record_pruned(
        &self,
        runs: &[AmperityWorkflowRun],
        names: &[String],
        now: Timestamp,
    ) -> Result<(), Error> {
        let Some(ledger) = &self.ctx.ledger else {
            return Ok(());
        };
        let ids: Vec<String> = runs
            .iter()
            .filter(|r| names.contains(&r.name_any()))
            .flat_map(|r| claimed_ids(&r.spec, r.status.as_ref()))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        ledger
            .record(&ids, now)
            .await
            .map_err(|source| Error::Ledger {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })
    }

    /// Creates the plan's run. AlreadyExists from a run of this schedule means it
    /// was created before (a restart, another replica): done. A refusal becomes
    /// status and an Event instead of a retry loop.
    async fn create(
        &self,
        schedule: &AmperityWorkflowSchedule,
        plan: &mut Plan,
        now: Timestamp,
    ) -> Result<(), Error> {
        let Some(new) = &plan.create else {
            return Ok(());
        };
        let run_name = new.run.name_any();
        let refused = match self.runs.create(&PostParams::default(), &new.run).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = self
                    .runs
                    .get_opt(&run_name)
                    .await
                    .map_err(self.fail("reading a run that already exists"))?;
                let ours = existing.is_some_and(|r| {
                    schedule::owned(schedule, std::slice::from_ref(&r)).len() == 1
                });
                if ours {
                    // Created before (a restart, another replica): not created now.
                    plan.events.retain(|e| e.reason != "Created");
                    return Ok(());
                }
                format!(
                    "an AmperityWorkflowRun named {run_name} already exists and is not this schedule's; delete or rename it"
                )
            }
            // Invalid (400, 422) or forbidden (403: a quota, an admission policy).
            Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
                format!(
                    "the API server refused it ({}): {}",
                    e.code,
                    cut(&e.message, 512)
                )
            }
            Err(e) => return Err(self.fail("creating a run")(e)),
        };
        plan.creation_refused(&refused, schedule.metadata.generation, now);
        Ok(())
    }

    async fn save_status(&self, status: &AmperityWorkflowScheduleStatus) -> Result<(), Error> {
        self.ctx.metrics.status_writes.inc();
        let patch = json!({
            "apiVersion": AmperityWorkflowSchedule::api_version(&()),
            "kind": AmperityWorkflowSchedule::kind(&()),
            "status": status,
        });
        self.schedules
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .map(|_| ())
            .map_err(self.fail("writing status"))
    }

    async fn set_finalizer(&self, present: bool) -> Result<(), kube::Error> {
        apply_finalizer(&self.schedules, &self.name, SCHEDULE_FINALIZER, present)
            .await
            .map(|_| ())
    }

    fn count(&self, event: &Event) {
        let [created, skipped, missed, replaced, failed] = SCHEDULE_OUTCOMES;
        let outcome = match event.reason {
            "Created" => created,
            "Skipped" => skipped,
            "MissedSchedule" => missed,
            "Replaced" => replaced,
            "CreateFailed" => failed,
            _ => return,
        };
        self.ctx
            .metrics
            .schedule_runs
            .get_or_create(&ScheduleLabels { outcome })
            .inc();
    }

    async fn publish(&self, schedule: &AmperityWorkflowSchedule, event: &Event) {
        let ctx = self.ctx;
        let regarding = schedule.object_ref(&());
        publish_event(&ctx.client, &ctx.reporter, event, "Schedule", &regarding).await;
    }
}
