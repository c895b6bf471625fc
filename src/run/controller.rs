//! The Kubernetes side: the `Context` every reconcile shares, `reconcile` (which runs
//! the shared driver with a Kubernetes [`Host`]) and `error_policy`.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::Action as Requeue;
use kube::{Api, ResourceExt};
use tracing::{Instrument, field, info_span, warn};

use super::connection;
pub use super::context::{Context, Error};
use super::host::KubeHost;
use super::trailing::trail;
use crate::cluster::finalizer::apply_finalizer;
use crate::cluster::retry::catch_panic;
use crate::crd::{AmperityWorkflowRun, Phase};
use crate::metrics::{Metrics, ReasonLabels};
use crate::run::decide::{Action, workflow_type_for};
use crate::run::driver::Driver;
pub use crate::run::feed::CachedRun;
use crate::run::tracking::claimed_ids;

/// Holds an unfinished resource until its run was stopped (deletionPolicy Stop)
/// and, whatever the policy, its runs were written to the claims ledger: an
/// orphaned run of a resource deleted while no replica ran would otherwise be
/// known to nobody, and a lost start's search could adopt it. (The name is older
/// than the second purpose; resources in clusters carry it.)
pub const FINALIZER: &str = "amperity.dev/stop-run";

/// How soon a run whose trailing work is not done yet is looked at again.
const TRAILING_RECHECK: Duration = Duration::from_secs(1);

pub use super::context::KUBE_CALLS;
pub use crate::run::decide::MAX_EVENT_NOTE_BYTES;
/// The longest a resource waits before it is looked at again, whatever it asked
/// for (a TTL of a year is re-checked hourly: no timer reaches past the clock).
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
pub use crate::cluster::retry::{ERROR_BACKOFF_CAP, ERROR_BACKOFF_FIRST};

pub async fn reconcile(obj: Arc<CachedRun>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    ctx.metrics.reconciles.inc();
    let namespace = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(obj.name_any()))?;
    let name = obj.name_any();
    let span = info_span!(
        "reconcile",
        namespace = %namespace,
        name = %name,
        workflow_id = field::Empty,
    );
    let uid = obj.uid().unwrap_or_default();
    let result = guarded(
        &ctx,
        namespace.clone(),
        name.clone(),
        reconcile_in(obj, ctx.clone(), namespace, name).instrument(span),
    )
    .await;
    if result.is_ok() {
        ctx.failures.succeeded(&uid);
    }
    result
}

/// Runs one resource's reconcile, turning a panic into an error for that resource
/// alone: a panic is a bug in the handling of one resource, and must not take the
/// process (kube-runtime would re-raise it), and every other resource, down.
pub async fn guarded(
    ctx: &Context,
    namespace: String,
    name: String,
    work: impl std::future::Future<Output = Result<Requeue, Error>>,
) -> Result<Requeue, Error> {
    match catch_panic(work).await {
        Ok(result) => result,
        Err(message) => {
            ctx.metrics.reconcile_panics.inc();
            tracing::error!(%namespace, %name, panic = %message, "reconcile panicked; retrying this resource with backoff");
            Err(Error::Panicked {
                namespace,
                name,
                message,
            })
        }
    }
}

async fn reconcile_in(
    obj: Arc<CachedRun>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
) -> Result<Requeue, Error> {
    // Its last reconcile finished it and left work for after (see `trailing`):
    // read it once that is done, or a status write would conflict with it.
    if ctx.trailing.holds(&obj.uid().unwrap_or_default()) {
        return Ok(Requeue::requeue(TRAILING_RECHECK));
    }
    let api: Api<AmperityWorkflowRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let kube_err = |what: &'static str| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| Error::Kube {
            what,
            namespace,
            name,
            source,
        }
    };
    let read = {
        let _slot = ctx.kube_calls.acquire().await.expect("never closed");
        api.get_opt(&name).await
    };
    let Some(mut run) = read.map_err(kube_err("reading the resource"))? else {
        // Deleted since the cache saw it: nothing left to do for it.
        let uid = obj.uid().unwrap_or_default();
        ctx.forget(&uid);
        return Ok(Requeue::await_change());
    };
    if let Some(id) = run.status.as_ref().and_then(|s| s.workflow_id.as_deref()) {
        tracing::Span::current().record("workflow_id", id);
    }
    // A run that names a connection takes its tenant, endpoint and Secret from it:
    // filled in here, before anything is tracked or decided.
    // Which connection the run uses, counted in its status while the run is unfinished.
    let connection_key = run.spec.connection_ref.as_ref().map(|r| r.key(&namespace));
    let source = if run.spec.connection_ref.is_some() && !ctx.connections {
        connection::disabled()
    } else {
        let found = {
            let _slot = ctx.kube_calls.acquire().await.expect("never closed");
            connection::read(&ctx.client, &namespace, &run).await
        }
        .map_err(kube_err("reading the connection it names"))?;
        connection::resolve(&mut run, &namespace, found, &ctx.operator_namespace)
    };
    let uid = run.uid().unwrap_or_default();
    ctx.tracking.observe(&uid, &run.spec, run.status.as_ref());
    let mut memory = ctx.remember(&uid);
    // Woken by the change feed: the run it follows was listed ended. The list's
    // answer settles the outcome; the run keeps its routine turn for the read of
    // its final task summary.
    if let Some(report) = ctx.feed.as_ref().and_then(|f| f.take_report(&uid))
        && run.status.as_ref().and_then(|s| s.workflow_id.as_deref())
            == Some(report.workflow_id.as_str())
    {
        memory.decide.end_reported = true;
        memory.listed = Some(Box::new(report.listed));
    }

    if needs_finalizer(&run) {
        // The answer is the resource as it now stands: the intent to start is then
        // written over this version, not the one before the finalizer (which the API
        // server would refuse as a conflict, and the start would wait out a backoff).
        let resolved = run.spec.clone();
        run = {
            let _slot = ctx.kube_calls.acquire().await.expect("never closed");
            apply_finalizer(&api, &name, FINALIZER, true).await
        }
        .map_err(kube_err("adding the finalizer"))?;
        // As resolved above (the answer carries the spec as written).
        run.spec = resolved;
    }

    let host = KubeHost::new(&ctx, namespace.clone(), source);
    let driver = Driver {
        host: &host,
        amperity: &ctx.amperity,
        defaults: &ctx.defaults,
        settings: &ctx.settings,
    };
    let before = run.phase();
    let action = driver.drive(&mut run, &mut memory).await;
    if let Some(id) = run.status.as_ref().and_then(|s| s.workflow_id.as_deref()) {
        tracing::Span::current().record("workflow_id", id);
    }
    let finished = run.phase().is_some_and(|p| p.is_finished());
    let in_use = connection_key.filter(|_| !finished);
    ctx.uses_connection(&uid, in_use);
    if let Some(feed) = &ctx.feed
        && !matches!(run.phase(), Some(Phase::Running | Phase::Stopping))
    {
        if finished {
            let ended_at = run
                .status
                .as_ref()
                .and_then(|s| s.workflow.as_ref())
                .and_then(|w| w.ended_at.as_deref());
            feed.finished(&uid, ended_at);
        } else {
            feed.forget(&uid);
        }
    }
    // Kept on failure too: a turn reserved before a failed status write is still
    // this run's place in the queue; losing it would put the run at the back.
    // A run settled from the change feed's list keeps its memory (and its turn)
    // until the read of its final task summary.
    let keep = !finished || memory.decide.summary_due;
    ctx.store(&uid, keep.then_some(memory));
    let deferred = host.take_deferred();
    let action = match action {
        Ok(action) => action,
        Err(e) => {
            trail(&ctx, &run, deferred, false);
            return Err(e);
        }
    };
    tracing::debug!(?action, "reconciled");
    record_phase(&ctx.metrics, &uid, before, &run);

    // A finished run has nothing to stop: deletion goes through at once, whether
    // or not a TTL is still to come. Before a TTL's deletion the finalizer goes
    // first, here; otherwise after the reconcile.
    let release = finished && has_finalizer(&run) && !matches!(action, Action::ReleaseFinalizer);
    let now_deleting = matches!(action, Action::Delete);
    trail(&ctx, &run, deferred, release && !now_deleting);
    if release && now_deleting {
        let _slot = ctx.kube_calls.acquire().await.expect("never closed");
        apply_finalizer(&api, &name, FINALIZER, false)
            .await
            .map_err(kube_err("removing the finalizer"))?;
    }
    Ok(match action {
        Action::Requeue(after) => {
            Requeue::requeue(after.clamp(Duration::from_millis(200), MAX_REQUEUE))
        }
        Action::AwaitChange => Requeue::await_change(),
        Action::Delete => {
            let now = jiff::Timestamp::now();
            record_departure(&ctx, &run, &namespace, &name, now).await?;
            // Only this resource: a new one of the same name is not its TTL's to delete.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(kube_err("deleting after ttlSecondsAfterFinished")(e)),
            }
            ctx.forget_recorded(&uid, now);
            Requeue::await_change()
        }
        Action::ReleaseFinalizer => {
            let now = jiff::Timestamp::now();
            record_departure(&ctx, &run, &namespace, &name, now).await?;
            if has_finalizer(&run) {
                apply_finalizer(&api, &name, FINALIZER, false)
                    .await
                    .map_err(kube_err("removing the finalizer"))?;
            }
            ctx.forget_recorded(&uid, now);
            Requeue::await_change()
        }
        other => unreachable!("the driver performs {other:?} itself"),
    })
}

/// Writes the runs of a resource the operator is about to let go to the claims
/// ledger: once it is gone, nothing but the ledger says those runs were its, and a
/// restarted operator's search could adopt one (an orphaned run, which it would
/// later stop). On failure the resource stays (finalizer, TTL) and is retried.
async fn record_departure(
    ctx: &Context,
    run: &AmperityWorkflowRun,
    namespace: &str,
    name: &str,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let ids = claimed_ids(&run.spec, run.status.as_ref());
    if ids.is_empty() {
        return Ok(());
    }
    ctx.ledger
        .record(&ids, now)
        .await
        .map_err(|source| Error::Ledger {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        })
}

/// Retries after a failed Kubernetes call (or a caught panic), backing off per
/// resource; Amperity failures never get here (they are answers that `decide`
/// turns into status).
pub fn error_policy(obj: Arc<CachedRun>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let (failures, wait) = ctx.failures.failed(&obj.uid().unwrap_or_default());
    warn!(error = %error, failures, retry_in_s = wait.as_secs(), "reconcile failed; retrying");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: error.metric_label().to_string(),
        })
        .inc();
    Requeue::requeue(wait)
}

/// Updates the phase gauge, and the duration histogram when the run just finished.
fn record_phase(metrics: &Metrics, uid: &str, before: Option<Phase>, run: &AmperityWorkflowRun) {
    let after = run.phase();
    metrics.set_phase(uid, after);
    let stalled = run
        .status
        .as_ref()
        .and_then(crate::run::decide::conditions::stalled_reason);
    let namespace = run.metadata.namespace.as_deref().unwrap_or_default();
    metrics.set_stalled(uid, stalled.map(|reason| (namespace, reason)));
    let Some(status) = run.status.as_ref() else {
        return;
    };
    if let (Some(phase), false) = (after, before.is_some_and(Phase::is_finished))
        && phase.is_finished()
        && let (Some(start), Some(end)) = (&status.started_at, &status.completed_at)
    {
        let took = Duration::try_from(end.0.duration_since(start.0)).unwrap_or_default();
        let kind = status
            .workflow
            .as_ref()
            .and_then(|w| w.workflow_type.clone())
            .unwrap_or_else(|| workflow_type_for(&run.spec.config_id).to_string());
        let reason =
            crate::run::decide::conditions::get(status, crate::run::decide::conditions::SUCCEEDED)
                .map_or("", |c| c.reason.as_str());
        metrics.record_finished(&kind, phase, reason, took);
    }
}

fn has_finalizer(run: &AmperityWorkflowRun) -> bool {
    run.finalizers().iter().any(|f| f == FINALIZER)
}

fn needs_finalizer(run: &AmperityWorkflowRun) -> bool {
    run.metadata.deletion_timestamp.is_none()
        && !has_finalizer(run)
        && !run.phase().is_some_and(|p| p.is_finished())
}
