//! What the driver needs from where it runs ([`Host`]: status, credentials,
//! Events, claims) and from Amperity ([`Api`], which the real client implements and
//! a model of Amperity can stand in for).

use std::future::Future;

use jiff::Timestamp;

use crate::amperity::credentials::Access;
use crate::amperity::wire::{RunRequest, Workflow};
use crate::amperity::{
    AllowList, AmperityClient, ClientError, Credentials, DeprecationNotice, ListQuery, Principal,
    Reply, Target, Turn,
};
use crate::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus};
use crate::run::decide::{Claims, Event};

/// Why credentials could not be had: a CamelCase reason and a message naming the
/// Secret and key, never their contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialsProblem {
    pub reason: String,
    pub message: String,
}

/// Where the resource lives: status storage, credentials and events.
pub trait Host: Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the credentials the resource names, fresh (a rotated Secret is used at once).
    fn credentials(
        &self,
        run: &AmperityWorkflowRun,
    ) -> impl Future<Output = Result<Access, CredentialsProblem>> + Send;

    /// Why no call can be made for the resource at all, known before its endpoint
    /// is (its connection is missing, not Ready, or does not serve its namespace).
    fn refusal(&self) -> Option<CredentialsProblem> {
        None
    }

    /// What follows leads to a call someone waits on (a start, a stop, a lost
    /// start's search, the poll before a stop): the host may serve this
    /// resource's own calls (its status write, its Secret read) ahead of routine
    /// ones for the rest of the drive.
    fn hurry(&self) {}

    /// Persists the status; the driver calls it only when the status changed.
    /// Only if the resource is still the version read (`run`'s resourceVersion):
    /// every status was decided from what that version said, and written over a
    /// newer one it could erase what another writer recorded (two replicas' intents
    /// to start; a `Pending` decided from a stale read over a newer intent, which
    /// would start a second run). A conflict is an error, and the next reconcile
    /// reads again. Returns the new version.
    fn save_status(
        &self,
        run: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;

    fn publish(&self, run: &AmperityWorkflowRun, event: &Event) -> impl Future<Output = ()> + Send;

    /// Called when a response carried `Deprecation`/`Sunset` headers.
    fn deprecation(
        &self,
        run: &AmperityWorkflowRun,
        notice: &DeprecationNotice,
    ) -> impl Future<Output = ()> + Send;

    /// Which of `candidates` (run ids a search found) other resources follow (or
    /// followed, recently), and whether another start of the same kind, at the
    /// same tenant and endpoint, by the same principal (`principal`: this
    /// resource's, when known) is unresolved.
    fn claims(
        &self,
        run: &AmperityWorkflowRun,
        candidates: &[String],
        principal: Option<&Principal>,
    ) -> impl Future<Output = Claims> + Send;

    /// A poll got no usable answer (counted for metrics).
    fn poll_failed(&self, run: &AmperityWorkflowRun);

    /// The run follows Amperity run `id` at `target` with `credentials`: the change
    /// feed may learn of its end from a list and have it polled at once. Called
    /// with every poll (the credentials may have been rotated).
    fn follow(
        &self,
        _run: &AmperityWorkflowRun,
        _target: &Target,
        _credentials: &Credentials,
        _id: &str,
    ) {
    }

    /// A read of a run settled from the change feed's list disagreed with the
    /// list (counted for metrics; the status kept the list's outcome).
    fn list_disagreed(&self, _run: &AmperityWorkflowRun) {}

    /// Whether the change feed already knows that the run follows `id` (a host
    /// without one: always, so that nothing is read for it).
    fn follows(&self, _run: &AmperityWorkflowRun, _id: &str) -> bool {
        true
    }

    fn now(&self) -> Timestamp;
}

/// Amperity, as the driver uses it: the real client, or a model in tests.
pub trait Api: Sync {
    fn allow_list(&self) -> &AllowList;

    /// A turn in the tenant's budget: `urgent` for what someone waits on (a start, a
    /// stop, a search, the poll that follows one), routine otherwise, in `lane`
    /// (the run's namespace: namespaces take turns in the tenant's budget).
    fn reserve_turn(&self, target: &Target, urgent: bool, lane: &str) -> Turn;

    fn start(
        &self,
        target: &Target,
        credentials: &Credentials,
        request: &RunRequest,
        turn: Option<Turn>,
    ) -> impl Future<Output = Result<Reply<Workflow>, ClientError>> + Send;

    fn get(
        &self,
        target: &Target,
        credentials: &Credentials,
        id: &str,
        turn: Option<Turn>,
    ) -> impl Future<Output = Result<Reply<Workflow>, ClientError>> + Send;

    fn stop(
        &self,
        target: &Target,
        credentials: &Credentials,
        id: &str,
        turn: Option<Turn>,
    ) -> impl Future<Output = Result<Reply<Workflow>, ClientError>> + Send;

    fn list(
        &self,
        target: &Target,
        credentials: &Credentials,
        query: &ListQuery,
        turn: Option<Turn>,
    ) -> impl Future<Output = Result<Reply<Vec<Workflow>>, ClientError>> + Send;

    fn forget_token(&self, target: &Target, credentials: &Credentials);

    fn learned_principal(&self, target: &Target, credentials: &Credentials) -> Option<Principal>;

    fn learn_principal(&self, target: &Target, credentials: &Credentials, principal: Principal);

    /// The workflow name runs of `config_id` at `target` carry, once seen.
    fn learned_name(&self, target: &Target, config_id: &str) -> Option<String>;

    fn learn_name(&self, target: &Target, config_id: &str, name: &str);
}

impl Api for AmperityClient {
    fn allow_list(&self) -> &AllowList {
        AmperityClient::allow_list(self)
    }

    fn reserve_turn(&self, target: &Target, urgent: bool, lane: &str) -> Turn {
        if urgent {
            self.reserve_urgent_turn(target)
        } else {
            AmperityClient::reserve_turn(self, target, lane)
        }
    }

    async fn start(
        &self,
        target: &Target,
        credentials: &Credentials,
        request: &RunRequest,
        turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        AmperityClient::start(self, target, credentials, request, turn).await
    }

    async fn get(
        &self,
        target: &Target,
        credentials: &Credentials,
        id: &str,
        turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        self.get_in_turn(target, credentials, id, turn).await
    }

    async fn stop(
        &self,
        target: &Target,
        credentials: &Credentials,
        id: &str,
        turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        AmperityClient::stop(self, target, credentials, id, turn).await
    }

    async fn list(
        &self,
        target: &Target,
        credentials: &Credentials,
        query: &ListQuery,
        turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        AmperityClient::list(self, target, credentials, query, turn).await
    }

    fn forget_token(&self, target: &Target, credentials: &Credentials) {
        AmperityClient::forget_token(self, target, credentials)
    }

    fn learned_principal(&self, target: &Target, credentials: &Credentials) -> Option<Principal> {
        AmperityClient::learned_principal(self, target, credentials)
    }

    fn learn_principal(&self, target: &Target, credentials: &Credentials, principal: Principal) {
        AmperityClient::learn_principal(self, target, credentials, principal)
    }

    fn learned_name(&self, target: &Target, config_id: &str) -> Option<String> {
        AmperityClient::learned_name(self, target, config_id)
    }

    fn learn_name(&self, target: &Target, config_id: &str, name: &str) {
        AmperityClient::learn_name(self, target, config_id, name)
    }
}
