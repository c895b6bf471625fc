//! The Kubernetes [`Host`] of the driver: status in the resource, credentials in a
//! Secret of its namespace, Events through the events API.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::SemaphorePermit;
use tracing::warn;

use super::connection::{self, Source};
use super::context::{Context, Error};
use crate::amperity::credentials::{self, Access, DEFAULT_TOKEN_KEY};
use crate::amperity::{Credentials, DeprecationNotice, Principal, Target};
use crate::cluster::FIELD_MANAGER;
use crate::cluster::events::{kube_error_summary, publish_event};
use crate::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus};
use crate::run::decide::{Claims, Event, poll_interval};
use crate::run::driver::{CredentialsProblem, Host};
use crate::run::feed::Member;

/// The Kubernetes [`Host`]: status in the resource, credentials in a Secret (of its
/// namespace, or its connection's), Events through the events API.
pub(super) struct KubeHost<'a> {
    ctx: &'a Context,
    namespace: String,
    /// Where the credentials are read, as [`super::connection::resolve`] decided.
    source: Source,
    /// The drive leads to a call someone waits on ([`Host::hurry`]).
    hurried: AtomicBool,
    /// Events of a finished run, left for after the reconcile (see
    /// `trailing::trail`): its status write goes first.
    deferred: Mutex<Vec<Event>>,
}

impl<'a> KubeHost<'a> {
    pub(super) fn new(ctx: &'a Context, namespace: String, source: Source) -> Self {
        KubeHost {
            ctx,
            namespace,
            source,
            hurried: AtomicBool::new(false),
            deferred: Mutex::new(Vec::new()),
        }
    }

    /// The Events this reconcile left for after it.
    pub(super) fn take_deferred(&self) -> Vec<Event> {
        std::mem::take(&mut self.deferred.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A place among the Kubernetes calls in flight: the urgent ones' own, once
    /// the drive is hurried.
    async fn kube_slot(&self) -> SemaphorePermit<'_> {
        let calls = if self.hurried.load(Ordering::Relaxed) {
            &self.ctx.urgent_kube_calls
        } else {
            &self.ctx.kube_calls
        };
        calls.acquire().await.expect("never closed")
    }
}

impl Host for KubeHost<'_> {
    type Error = Error;

    fn hurry(&self) {
        self.hurried.store(true, Ordering::Relaxed);
    }

    fn refusal(&self) -> Option<CredentialsProblem> {
        match &self.source {
            Source::Refused(problem) => Some(problem.clone()),
            Source::Secret { .. } => None,
        }
    }

    async fn credentials(&self, _run: &AmperityWorkflowRun) -> Result<Access, CredentialsProblem> {
        let (namespace, r, vouched) = match &self.source {
            Source::Refused(problem) => return Err(problem.clone()),
            Source::Secret {
                namespace,
                secret,
                principal,
            } => (namespace, secret, principal),
        };
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
        let read = {
            let _slot = self.kube_slot().await;
            secrets.get_opt(&r.name).await
        };
        let secret = match read {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(CredentialsProblem {
                    reason: "SecretNotFound".into(),
                    message: format!(
                        "Secret {}/{} (tokenSecretRef.name) does not exist: create it with key {:?} holding an Amperity API token",
                        namespace,
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
                        namespace,
                        r.name,
                        kube_error_summary(&e)
                    ),
                });
            }
        };
        let version = secret.resource_version();
        let data = secret.data.unwrap_or_default();
        let value = |k: &str| data.get(k).map(|v| v.0.as_slice());
        let mut access = credentials::from_secret_data(value, r.key.as_deref()).map_err(|p| {
            CredentialsProblem {
                reason: p.reason.into(),
                message: format!("Secret {}/{} {}", namespace, r.name, p.message),
            }
        })?;
        // A connection vouches for who its credentials act as (its status), so a
        // lost start's search knows it even before any answer taught it.
        access.principal =
            connection::principal_for(access.principal, vouched.as_ref(), version.as_deref());
        Ok(access)
    }

    async fn save_status(
        &self,
        run: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
    ) -> Result<Option<String>, Error> {
        let api: Api<AmperityWorkflowRun> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let name = run.name_any();
        let mut patch = status_patch(status);
        // Only if nobody wrote since it was read: of two replicas that both believe
        // they lead, one records the intent and POSTs; the other gets a conflict,
        // reads again and finds the intent. Every write, not only those that move
        // the start: a status decided from a stale cache (a `Pending` read before
        // the newer intent) would otherwise erase that intent, and the next
        // reconcile would start a second run.
        patch["metadata"] = json!({"resourceVersion": run.resource_version()});
        self.ctx.metrics.status_writes.inc();
        let written = {
            let _slot = self.kube_slot().await;
            api.patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
        };
        let written = written.map_err(|source| Error::Kube {
            what: match status.phase {
                Some(crate::crd::Phase::Starting) if status.workflow_id.is_none() => {
                    "recording the intent to start"
                }
                _ => "writing status over the version it was decided from",
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

    async fn claims(
        &self,
        run: &AmperityWorkflowRun,
        candidates: &[String],
        principal: Option<&Principal>,
    ) -> Claims {
        let uid = run.uid().unwrap_or_default();
        self.ctx.tracking.note_principal(&uid, principal);
        if self.ctx.tracking.needs_relist()
            && let Err(e) = fill_tracking(self.ctx).await
        {
            warn!(error = %kube_error_summary(&e), "could not list the runs to rule out their Amperity runs");
        }
        // Usually loaded when the term began; a search before that (or after a
        // failed load) tries once itself. A failure is logged and counted there.
        if self.ctx.tracking.needs_ledger() {
            let _ = self.ctx.ledger.load_into(&self.ctx.tracking).await;
        }
        self.ctx
            .tracking
            .claims(&uid, &run.spec, candidates, principal)
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
        // A finished run (read once more for its final task summary) has no end
        // left for the feed to find.
        if run.phase().is_some_and(|p| p.is_finished()) {
            return;
        }
        let member = Member {
            workflow_id: id.to_string(),
            namespace: self.namespace.clone(),
            name: run.name_any(),
            poll_interval: poll_interval(run, &self.ctx.settings),
            woken_for: None,
        };
        feed.follow(&run.uid().unwrap_or_default(), member, target, credentials);
    }

    fn list_disagreed(&self, _run: &AmperityWorkflowRun) {
        self.ctx.metrics.feed_disagreed.inc();
    }

    fn follows(&self, run: &AmperityWorkflowRun, id: &str) -> bool {
        self.ctx
            .feed
            .as_ref()
            .is_none_or(|f| f.follows(&run.uid().unwrap_or_default(), id))
    }

    async fn publish(&self, run: &AmperityWorkflowRun, event: &Event) {
        // The run's status is written: nobody waits on its Event.
        if run.phase().is_some_and(|p| p.is_finished()) {
            let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            deferred.push(event.clone());
            return;
        }
        let ctx = self.ctx;
        let _slot = self.kube_slot().await;
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
        self.ctx.metrics.deprecation(&api_version);
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

/// The server-side apply body for a status: the whole status, so that fields this
/// manager no longer sets are removed.
pub fn status_patch(status: &AmperityWorkflowRunStatus) -> serde_json::Value {
    json!({
        "apiVersion": AmperityWorkflowRun::api_version(&()),
        "kind": AmperityWorkflowRun::kind(&()),
        "status": status,
    })
}

/// Fills `tracking` from every watched run, once per leadership term (later
/// changes come through reconciles and status writes).
async fn fill_tracking(ctx: &Context) -> Result<(), kube::Error> {
    let term = ctx.tracking.term();
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
    ctx.tracking.set_warm_for(term);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http::{Request, Response};
    use kube::Client;
    use kube::client::Body;

    use super::*;
    use crate::amperity::{AmperityClient, ClientConfig};
    use crate::metrics::Metrics;
    use crate::run::context::KUBE_CALLS;
    use crate::run::decide::Settings;
    use crate::run::driver::Defaults;

    #[tokio::test]
    async fn a_hurried_drive_does_not_wait_behind_every_routine_kubernetes_call() {
        let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ctx = Context::new(
            Client::new(service, "default"),
            AmperityClient::new(ClientConfig::default()).unwrap(),
            Defaults::default(),
            Settings::default(),
            Arc::new(Metrics::default()),
        );
        // A burst's reconciles hold every routine place.
        let _burst = ctx
            .kube_calls
            .acquire_many(KUBE_CALLS as u32)
            .await
            .unwrap();
        let host = KubeHost::new(&ctx, "n".into(), connection::disabled());
        let routine = tokio::time::timeout(Duration::from_millis(50), host.kube_slot()).await;
        assert!(
            routine.is_err(),
            "a routine call found a place the burst holds"
        );
        host.hurry();
        let urgent = tokio::time::timeout(Duration::from_millis(50), host.kube_slot()).await;
        assert!(urgent.is_ok(), "a hurried call waited behind the burst");
    }
}
