//! The Kubernetes side: the `Context` every reconcile shares, `reconcile` (which runs
//! the shared driver with a Kubernetes [`Host`]) and `error_policy`.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, field, info_span, warn};

use crate::amperity::{
    AmperityClient, Credentials, DeprecationNotice, Principal, SecretString, Target, Turn,
};
use crate::bounded::cut;
use crate::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus, DeletionPolicy, Phase};
use crate::decide::{Action, Claims, Event, EventType, Settings, poll_interval, workflow_type_for};
use crate::driver::{Access, CredentialsProblem, Defaults, Driver, Host, RunMemory};
use crate::feed::{Feed, Member};
use crate::metrics::{Metrics, ReasonLabels, VersionLabels};
use crate::tracking::Tracking;

/// The field manager of every write this operator makes.
pub const FIELD_MANAGER: &str = "amperity-operator";
/// A separate manager for the finalizer, so that applying status never touches it.
pub const FINALIZER_MANAGER: &str = "amperity-operator-finalizer";
/// Holds an unfinished resource until its run was stopped (deletionPolicy Stop).
pub const FINALIZER: &str = "amperity.dev/stop-run";
/// Secret keys.
pub const DEFAULT_TOKEN_KEY: &str = "token";
pub const CLIENT_ID_KEY: &str = "client_id";
pub const CLIENT_SECRET_KEY: &str = "client_secret";
pub const TOKEN_URL_KEY: &str = "token_url";
/// Who the credential starts runs as (Amperity's principal id or name), when known.
pub const PRINCIPAL_KEY: &str = "principal";
/// Kubernetes requests in flight at once from reconciles.
pub const KUBE_CALLS: usize = 16;
pub use crate::decide::MAX_EVENT_NOTE_BYTES;
/// The longest a resource waits before it is looked at again, whatever it asked
/// for (a TTL of a year is re-checked hourly: no timer reaches past the clock).
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// The backoff of a resource whose reconcile failed: doubling from the first, capped.
pub const ERROR_BACKOFF_FIRST: Duration = Duration::from_secs(5);
pub const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} for {namespace}/{name} failed: {source}")]
    Kube {
        what: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("AmperityWorkflowRun {0} has no namespace")]
    NoNamespace(String),
    /// A bug: the reconcile of this one resource panicked. It is retried with
    /// backoff; every other resource goes on.
    #[error("the reconcile of {namespace}/{name} panicked: {message}")]
    Panicked {
        namespace: String,
        name: String,
        message: String,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { what, .. } => what,
            Error::NoNamespace(_) => "no namespace",
            Error::Panicked { .. } => "panic",
        }
    }
}

/// Everything a reconcile needs; cheap to share.
pub struct Context {
    pub client: Client,
    pub amperity: AmperityClient,
    pub defaults: Defaults,
    pub settings: Settings,
    /// Who publishes the Events. (No shared `Recorder`: it keeps every Event it
    /// published for six minutes, about 4 KB each, to count repeats as a series;
    /// ours are published once per transition, and with thousands of runs started
    /// together that cache would be most of the operator's memory.)
    pub reporter: Reporter,
    /// Per-resource memory (last poll time), keyed by uid. Lost on restart, which
    /// costs at most one early poll per resource.
    pub memory: Mutex<HashMap<String, RunMemory>>,
    pub metrics: Arc<Metrics>,
    /// Bounds concurrent Kubernetes calls: thousands of runs reconciled at once
    /// (after a restart) would otherwise hold thousands of requests in memory.
    pub kube_calls: tokio::sync::Semaphore,
    /// Which resource follows which Amperity run (for the search of a lost start).
    pub tracking: Tracking,
    /// The namespaces watched (empty: all), where `tracking` is filled from.
    pub namespaces: Vec<String>,
    /// Failed reconciles in a row, by uid, for each resource's own backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// The change feed, when it is on: runs join it when their poll is scheduled.
    pub feed: Option<Arc<Feed>>,
}

impl Context {
    pub fn new(
        client: Client,
        amperity: AmperityClient,
        defaults: Defaults,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            reporter: reporter(),
            client,
            amperity,
            defaults,
            settings,
            memory: Mutex::new(HashMap::new()),
            metrics,
            kube_calls: tokio::sync::Semaphore::new(KUBE_CALLS),
            tracking: Tracking::default(),
            namespaces: Vec::new(),
            failures: Mutex::new(HashMap::new()),
            feed: None,
        }
    }

    /// The same, with the change feed on.
    pub fn with_feed(mut self, feed: Arc<Feed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The same, watching only `namespaces` (empty: all).
    pub fn watching(mut self, namespaces: &[String]) -> Self {
        self.namespaces = namespaces.to_vec();
        self
    }

    fn remember(&self, uid: &str) -> RunMemory {
        self.memory
            .lock()
            .unwrap()
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    /// Drops everything kept for a resource that is gone: its memory, its phase
    /// in the `runs` gauge, the run it tracks, its place in the change feed.
    pub fn forget(&self, uid: &str) {
        self.store(uid, None);
        self.metrics.set_phase(uid, None);
        self.tracking.forget(uid);
        if let Some(feed) = &self.feed {
            feed.forget(uid);
        }
    }

    /// What the watch saw, for what a reconcile cannot do: a run deleted without
    /// one (no finalizer: it had finished) is forgotten; after a relist of all
    /// namespaces, runs that vanished meanwhile leave the tracking (`present`
    /// gives the uids the cache holds).
    pub fn watched(
        &self,
        event: &watcher::Event<CachedRun>,
        present: impl FnOnce() -> HashSet<String>,
    ) {
        match event {
            watcher::Event::Delete(run) => self.forget(&run.uid().unwrap_or_default()),
            watcher::Event::InitDone if self.namespaces.len() <= 1 => {
                self.tracking.retain(&present())
            }
            _ => {}
        }
    }

    fn store(&self, uid: &str, memory: Option<RunMemory>) {
        let mut map = self.memory.lock().unwrap();
        match memory {
            Some(m) => map.insert(uid.to_string(), m),
            None => map.remove(uid),
        };
    }
}

/// What the controller's cache holds of a run: its metadata. Thousands of runs in
/// flight would otherwise keep thousands of statuses in memory; a reconcile reads
/// the one it works on from the API server instead (always current, so a status
/// this operator wrote can never look unwritten).
pub type CachedRun = PartialObjectMeta<AmperityWorkflowRun>;

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
        ctx.failures.lock().unwrap().remove(&uid);
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
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = cut(&panic_message(panic.as_ref()), 300);
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

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

async fn reconcile_in(
    obj: Arc<CachedRun>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
) -> Result<Requeue, Error> {
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
    let uid = run.uid().unwrap_or_default();
    ctx.tracking.observe(&uid, &run.spec, run.status.as_ref());
    let mut memory = ctx.remember(&uid);
    // Woken by the change feed: the run it follows was listed ended, and is read
    // in the urgent turn the feed handed out (in the order runs ended), instead
    // of its routine one.
    if let Some(report) = ctx.feed.as_ref().and_then(|f| f.take_report(&uid))
        && run.status.as_ref().and_then(|s| s.workflow_id.as_deref())
            == Some(report.workflow_id.as_str())
    {
        memory.decide.end_reported = true;
        match memory.turn.take() {
            // The turn it kept is the one the feed promoted, or an urgent one due sooner.
            Some(kept)
                if kept.same(&report.turn)
                    || (!kept.is_routine() && kept.due() <= report.turn.due()) =>
            {
                memory.turn = Some(kept)
            }
            kept => {
                if let Some(routine) = kept.filter(Turn::is_routine) {
                    routine.release();
                }
                memory.turn = Some(report.turn);
            }
        }
    }

    if needs_finalizer(&run) {
        // The answer is the resource as it now stands: the intent to start is then
        // written over this version, not the one before the finalizer (which the API
        // server would refuse as a conflict, and the start would wait out a backoff).
        run = apply_finalizer(&api, &name, FINALIZER, true)
            .await
            .map_err(kube_err("adding the finalizer"))?;
    }

    let host = KubeHost {
        ctx: &ctx,
        namespace: namespace.clone(),
    };
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
    if let Some(feed) = &ctx.feed
        && !matches!(run.phase(), Some(Phase::Running | Phase::Stopping))
    {
        feed.forget(&uid);
    }
    // Kept on failure too: a turn reserved before a failed status write is still
    // this run's place in the queue; losing it would put the run at the back.
    ctx.store(&uid, (!finished).then_some(memory));
    let action = action?;
    tracing::debug!(?action, "reconciled");
    record_phase(&ctx.metrics, &uid, before, &run);

    // A finished run has nothing to stop: deletion goes through at once, whether
    // or not a TTL is still to come.
    if finished && has_finalizer(&run) && !matches!(action, Action::ReleaseFinalizer) {
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
            ctx.forget(&uid);
            Requeue::await_change()
        }
        Action::ReleaseFinalizer => {
            if has_finalizer(&run) {
                apply_finalizer(&api, &name, FINALIZER, false)
                    .await
                    .map_err(kube_err("removing the finalizer"))?;
            }
            ctx.forget(&uid);
            Requeue::await_change()
        }
        other => unreachable!("the driver performs {other:?} itself"),
    })
}

/// Retries after a failed Kubernetes call (or a caught panic), backing off per
/// resource; Amperity failures never get here (they are answers that `decide`
/// turns into status).
pub fn error_policy(obj: Arc<CachedRun>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let uid = obj.uid().unwrap_or_default();
    let failures = {
        let mut map = ctx.failures.lock().unwrap();
        let n = map.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let wait = ERROR_BACKOFF_FIRST
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(ERROR_BACKOFF_CAP);
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
        let reason = crate::decide::conditions::get(status, crate::decide::conditions::SUCCEEDED)
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
        && run.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Stop
        && !run.phase().is_some_and(|p| p.is_finished())
}

/// Adds or drops `finalizer` with server-side apply under its own field manager,
/// which leaves other finalizers alone. The answer is the resource as it now stands.
pub async fn apply_finalizer<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
    present: bool,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let finalizers: Vec<&str> = if present { vec![finalizer] } else { vec![] };
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "finalizers": finalizers},
    });
    api.patch(
        name,
        &PatchParams::apply(FINALIZER_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
}

/// The Kubernetes [`Host`]: status in the resource, credentials in a Secret of its
/// namespace, Events through the events API.
struct KubeHost<'a> {
    ctx: &'a Context,
    namespace: String,
}

impl Host for KubeHost<'_> {
    type Error = Error;

    async fn credentials(&self, run: &AmperityWorkflowRun) -> Result<Access, CredentialsProblem> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let r = &run.spec.token_secret_ref;
        let read = {
            let _slot = self.ctx.kube_calls.acquire().await.expect("never closed");
            secrets.get_opt(&r.name).await
        };
        let secret = match read {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(CredentialsProblem {
                    reason: "SecretNotFound".into(),
                    message: format!(
                        "Secret {}/{} (spec.tokenSecretRef.name) does not exist: create it with key {:?} holding an Amperity API token",
                        self.namespace,
                        r.name,
                        r.key.as_deref().unwrap_or(DEFAULT_TOKEN_KEY)
                    ),
                });
            }
            Err(e) => {
                return Err(CredentialsProblem {
                    reason: "SecretUnreadable".into(),
                    message: format!(
                        "Secret {}/{} could not be read ({}): check that the operator may get Secrets in this namespace",
                        self.namespace,
                        r.name,
                        kube_error_summary(&e)
                    ),
                });
            }
        };
        credentials_from_secret(&secret, r.key.as_deref()).map_err(|message| CredentialsProblem {
            reason: "SecretKeyMissing".into(),
            message: format!("Secret {}/{} {message}", self.namespace, r.name),
        })
    }

    async fn save_status(
        &self,
        run: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
        exclusive: bool,
    ) -> Result<Option<String>, Error> {
        let api: Api<AmperityWorkflowRun> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let name = run.name_any();
        let mut patch = status_patch(status);
        if exclusive {
            // Only if nobody wrote since it was read: of two replicas that both
            // believe they lead, one records the intent and POSTs; the other gets a
            // conflict, reads again and finds the intent.
            patch["metadata"] = json!({"resourceVersion": run.resource_version()});
        }
        self.ctx.metrics.status_writes.inc();
        let written = {
            let _slot = self.ctx.kube_calls.acquire().await.expect("never closed");
            api.patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
        };
        let written = written.map_err(|source| Error::Kube {
            what: if exclusive {
                "recording the intent to start"
            } else {
                "writing status"
            },
            namespace: self.namespace.clone(),
            name,
            source,
        })?;
        self.ctx
            .tracking
            .observe(&run.uid().unwrap_or_default(), &run.spec, Some(status));
        Ok(written.resource_version())
    }

    async fn claims(&self, run: &AmperityWorkflowRun, candidates: &[String]) -> Claims {
        if !self.ctx.tracking.is_warm()
            && let Err(e) = fill_tracking(self.ctx).await
        {
            warn!(error = %kube_error_summary(&e), "could not list the runs to rule out their Amperity runs");
        }
        self.ctx
            .tracking
            .claims(&run.uid().unwrap_or_default(), &run.spec, candidates)
    }

    fn poll_failed(&self, _run: &AmperityWorkflowRun) {
        self.ctx.metrics.poll_failures.inc();
    }

    fn follow(
        &self,
        run: &AmperityWorkflowRun,
        target: &Target,
        credentials: &Credentials,
        id: &str,
    ) {
        let Some(feed) = &self.ctx.feed else {
            return;
        };
        let member = Member {
            workflow_id: id.to_string(),
            namespace: self.namespace.clone(),
            name: run.name_any(),
            poll_interval: poll_interval(run, &self.ctx.settings),
            woken_for: None,
            turn: None,
        };
        feed.follow(&run.uid().unwrap_or_default(), member, target, credentials);
    }

    fn waiting(&self, run: &AmperityWorkflowRun, turn: &Turn) {
        if let Some(feed) = &self.ctx.feed {
            feed.waiting(&run.uid().unwrap_or_default(), turn);
        }
    }

    fn follows(&self, run: &AmperityWorkflowRun, id: &str) -> bool {
        self.ctx
            .feed
            .as_ref()
            .is_none_or(|f| f.follows(&run.uid().unwrap_or_default(), id))
    }

    async fn publish(&self, run: &AmperityWorkflowRun, event: &Event) {
        let ctx = self.ctx;
        publish_event(
            &ctx.client,
            &ctx.reporter,
            event,
            "Reconcile",
            &run.object_ref(&()),
        )
        .await;
    }

    async fn deprecation(&self, run: &AmperityWorkflowRun, notice: &DeprecationNotice) {
        let api_version = run
            .spec
            .amperity_api_version
            .clone()
            .unwrap_or_else(|| self.ctx.defaults.api_version.clone());
        self.ctx
            .metrics
            .deprecations
            .get_or_create(&VersionLabels { api_version })
            .inc();
        warn!(
            deprecation = notice.deprecation.as_deref().unwrap_or(""),
            sunset = notice.sunset.as_deref().unwrap_or(""),
            "the Amperity API announced a deprecation"
        );
    }

    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Who publishes this operator's Events: the controller, and the pod (when the
/// chart gives its name).
pub fn reporter() -> Reporter {
    Reporter {
        controller: "amperity-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// Publishes one of the decisions' Events about `regarding` (a run or a schedule).
/// Events are best effort: the status already says the same.
pub async fn publish_event(
    client: &Client,
    reporter: &Reporter,
    event: &Event,
    action: &str,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
) {
    let kube_event = KubeEvent {
        type_: match event.type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: event.reason.to_string(),
        note: Some(cut(&event.note, MAX_EVENT_NOTE_BYTES)),
        action: action.into(),
        secondary: None,
    };
    let recorder = Recorder::new(client.clone(), reporter.clone());
    if let Err(e) = recorder.publish(&kube_event, regarding).await {
        warn!(reason = event.reason, error = %kube_error_summary(&e), "could not publish event");
    }
}

/// The server-side apply body for a status: the whole status, so that fields this
/// manager no longer sets are removed.
pub fn status_patch(status: &AmperityWorkflowRunStatus) -> serde_json::Value {
    json!({
        "apiVersion": AmperityWorkflowRun::api_version(&()),
        "kind": AmperityWorkflowRun::kind(&()),
        "status": status,
    })
}

/// Fills `tracking` from every watched run, once (later changes come through
/// reconciles and status writes).
async fn fill_tracking(ctx: &Context) -> Result<(), kube::Error> {
    let apis: Vec<Api<AmperityWorkflowRun>> = if ctx.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        ctx.namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    for api in apis {
        let mut params = ListParams::default().limit(500);
        loop {
            let page = {
                let _slot = ctx.kube_calls.acquire().await.expect("never closed");
                api.list(&params).await?
            };
            for run in &page.items {
                ctx.tracking.observe(
                    &run.uid().unwrap_or_default(),
                    &run.spec,
                    run.status.as_ref(),
                );
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    ctx.tracking.set_warm();
    Ok(())
}

/// Reads credentials from Secret data: `key` (default `token`) holds a bearer token;
/// without an explicit key, `client_id` + `client_secret` (and optionally
/// `token_url`) are OAuth client credentials. `principal`, if present, names who
/// they start runs as. The error says what is missing.
pub fn credentials_from_secret(secret: &Secret, key: Option<&str>) -> Result<Access, String> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let principal = text(PRINCIPAL_KEY).map(|p| Principal::given(&cut(&p, 256)));
    let access = |credentials| Access {
        credentials,
        principal: principal.clone(),
    };
    let token_key = key.unwrap_or(DEFAULT_TOKEN_KEY);
    if let Some(token) = text(token_key) {
        return Ok(access(Credentials::Token(SecretString::new(token))));
    }
    if key.is_none() {
        if let (Some(id), Some(secret)) = (text(CLIENT_ID_KEY), text(CLIENT_SECRET_KEY)) {
            let token_url = match text(TOKEN_URL_KEY) {
                Some(u) => Some(url::Url::parse(&u).map_err(|_| {
                    format!("key {TOKEN_URL_KEY:?} is not a URL: give the full https URL of the OAuth token endpoint")
                })?),
                None => None,
            };
            return Ok(access(Credentials::ClientCredentials {
                client_id: cut(&id, 512),
                client_secret: SecretString::new(secret),
                token_url,
            }));
        }
        return Err(format!(
            "has neither key {DEFAULT_TOKEN_KEY:?} nor keys {CLIENT_ID_KEY:?} and {CLIENT_SECRET_KEY:?}: add an Amperity API token under {DEFAULT_TOKEN_KEY:?}"
        ));
    }
    Err(format!(
        "has no key {token_key:?} (spec.tokenSecretRef.key), or it is empty: add the Amperity API token under that key"
    ))
}

/// A kube error in one line, without response bodies that could echo request data.
fn kube_error_summary(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
        other => other.to_string(),
    }
}
