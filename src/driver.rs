//! The loop around `decide`, shared by the controller and `local`: it persists each
//! decided status before performing the decided Amperity call, feeds the answer
//! back, and stops at the first action that is not an Amperity call (requeue,
//! wait, delete, release the finalizer), which it hands back to the caller.
//!
//! Where status is kept, where credentials come from and where events go differ
//! between the two callers; they provide them through [`Host`].

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;

use crate::amperity::{
    AmperityClient, ClientError, Credentials, DeprecationNotice, ListQuery, Reply, Target, Turn,
};
use crate::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus};
use crate::decide::{
    Action, Answer, ApiFailure, Event, EventType, FailureKind, Memory, SearchQuery, Settings,
    decide,
};

/// Performs one Amperity call; a 401/403 re-reads the credentials once and
/// retries, and a second refusal is final. (A macro: async closures over
/// borrowed credentials make futures the controller cannot prove `Send`.)
macro_rules! retrying_auth {
    ($driver:expr, $run:expr, $target:expr, $credentials:expr, $method:ident, $($arg:expr),+) => {{
        let first = $driver.amperity.$method($target, $credentials, $($arg),+).await;
        match &first {
            Err(e) if e.is_auth() => {
                $driver.amperity.forget_token($target, $credentials);
                match $driver.host.credentials($run).await {
                    Ok(fresh) => $driver.amperity.$method($target, &fresh, $($arg),+).await,
                    Err(_) => first,
                }
            }
            _ => first,
        }
    }};
}

/// At most this many decide/act rounds per call: a start takes three (intent, POST,
/// id); anything longer is a bug, and stopping beats spinning on the API.
const MAX_ROUNDS: usize = 6;

/// A poll whose turn is at most this far off waits for it in place; a later one
/// lets go and comes back (a requeue costs a reconcile, a held wait costs memory).
pub const HOLD_TURN: Duration = Duration::from_secs(2);

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
    ) -> impl Future<Output = Result<Credentials, CredentialsProblem>> + Send;

    /// Persists the status; the driver calls it only when the status changed.
    fn save_status(
        &self,
        run: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    fn publish(&self, run: &AmperityWorkflowRun, event: &Event) -> impl Future<Output = ()> + Send;

    /// Called when a response carried `Deprecation`/`Sunset` headers.
    fn deprecation(
        &self,
        run: &AmperityWorkflowRun,
        notice: &DeprecationNotice,
    ) -> impl Future<Output = ()> + Send;

    fn now(&self) -> Timestamp;
}

/// Operator-wide defaults a resource may leave out.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Base URL template; `{tenant}` is replaced by the resource's tenant.
    pub endpoint: String,
    pub api_version: String,
    pub allow_insecure_http: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            endpoint: "https://{tenant}.amperity.com/api".to_string(),
            api_version: "2024-04-01".to_string(),
            allow_insecure_http: false,
        }
    }
}

/// What the caller keeps for one resource between calls.
#[derive(Clone, Debug, Default)]
pub struct RunMemory {
    pub decide: Memory,
    /// A deprecation warning was already published for this resource.
    pub deprecation_warned: bool,
    /// The turn reserved for this run's next poll, when it was too far off to wait for.
    pub turn: Option<Turn>,
}

pub struct Driver<'a, H: Host> {
    pub host: &'a H,
    pub amperity: &'a AmperityClient,
    pub defaults: &'a Defaults,
    pub settings: &'a Settings,
}

impl<H: Host> Driver<'_, H> {
    /// Runs decide/act rounds until an action that is not an Amperity call.
    /// `run.status` is kept up to date with what was persisted.
    pub async fn drive(
        &self,
        run: &mut AmperityWorkflowRun,
        memory: &mut RunMemory,
    ) -> Result<Action, H::Error> {
        let mut answer = None;
        for _ in 0..MAX_ROUNDS {
            let decision = decide(
                run,
                answer.take(),
                self.host.now(),
                memory.decide,
                self.settings,
            );
            if let Action::Poll(_) = &decision.action
                && let Some(wait) = self.poll_later(run, memory)
            {
                self.record(run, decision.status, &decision.events).await?;
                return Ok(Action::Requeue(wait));
            }
            let calls_amperity = matches!(
                decision.action,
                Action::Start(_) | Action::Poll(_) | Action::Stop(_) | Action::Search(_)
            );
            // Credentials first: without them the call cannot happen, so its intent
            // is not recorded and `decide` hears why instead.
            let credentials = if calls_amperity {
                match self.host.credentials(run).await {
                    Ok(c) => Some(c),
                    Err(p) => {
                        answer = Some(Answer::CredentialsUnavailable {
                            reason: p.reason,
                            message: p.message,
                        });
                        continue;
                    }
                }
            } else {
                None
            };
            // Persist before acting: for a start, this is the recorded intent.
            self.record(run, decision.status, &decision.events).await?;
            match credentials {
                Some(c) => answer = Some(self.perform(run, decision.action, c, memory).await),
                None => return Ok(decision.action),
            }
        }
        tracing::error!("no settled decision after {MAX_ROUNDS} rounds; trying again later");
        Ok(Action::Requeue(self.settings.quick_poll))
    }

    /// Saves the status if it changed, then publishes the events.
    async fn record(
        &self,
        run: &mut AmperityWorkflowRun,
        status: AmperityWorkflowRunStatus,
        events: &[Event],
    ) -> Result<(), H::Error> {
        if run.status.as_ref() != Some(&status) {
            self.host.save_status(run, &status).await?;
            run.status = Some(status);
        }
        for event in events {
            self.host.publish(run, event).await;
        }
        Ok(())
    }

    /// Reserves this run's turn for a poll (or keeps the one it has); says how
    /// long to go away when the turn is further off than [`HOLD_TURN`].
    fn poll_later(&self, run: &AmperityWorkflowRun, memory: &mut RunMemory) -> Option<Duration> {
        // A bad endpoint fails in `perform`, which says so in the status.
        let target = self.target(run).ok()?;
        let kept = memory.turn.take();
        let reserved = kept.is_none();
        let turn = kept.unwrap_or_else(|| self.amperity.reserve_turn(&target));
        memory.turn = Some(turn);
        let wait = turn.wait();
        tracing::debug!(reserved, wait_ms = wait.as_millis() as u64, "poll turn");
        (wait > HOLD_TURN).then_some(wait)
    }

    fn target(&self, run: &AmperityWorkflowRun) -> Result<Target, ClientError> {
        let spec = &run.spec;
        Target::new(
            spec.endpoint.as_deref(),
            &self.defaults.endpoint,
            &spec.tenant,
            spec.amperity_api_version
                .as_deref()
                .unwrap_or(&self.defaults.api_version),
            self.defaults.allow_insecure_http,
        )
    }

    async fn perform(
        &self,
        run: &AmperityWorkflowRun,
        action: Action,
        credentials: Credentials,
        memory: &mut RunMemory,
    ) -> Answer {
        let target = match self.target(run) {
            Ok(t) => t,
            Err(e) => {
                let failure = ApiFailure {
                    kind: FailureKind::Rejected,
                    message: e.to_string(),
                    retry_after: None,
                };
                return match action {
                    Action::Start(_) => Answer::Started(Err(failure)),
                    Action::Stop(_) => Answer::StopSent(Err(failure)),
                    Action::Search(_) => Answer::Searched(Err(failure)),
                    _ => Answer::Polled(Err(failure)),
                };
            }
        };
        match action {
            Action::Start(req) => {
                let r = retrying_auth!(self, run, &target, &credentials, start, &req);
                Answer::Started(self.settle(run, r, memory).await)
            }
            Action::Poll(id) => {
                memory.decide.last_polled = Some(self.host.now());
                let turn = memory.turn.take();
                let r = retrying_auth!(self, run, &target, &credentials, get_in_turn, &id, turn);
                Answer::Polled(self.settle(run, r, memory).await)
            }
            Action::Stop(id) => {
                let r = retrying_auth!(self, run, &target, &credentials, stop, &id);
                Answer::StopSent(self.settle(run, r, memory).await)
            }
            Action::Search(query) => {
                let q = list_query(&query);
                let r = retrying_auth!(self, run, &target, &credentials, list, &q);
                Answer::Searched(self.settle(run, r, memory).await)
            }
            _ => unreachable!("only Amperity calls are performed"),
        }
    }

    /// Surfaces deprecation headers (once per resource) and reduces errors for `decide`.
    async fn settle<T>(
        &self,
        run: &AmperityWorkflowRun,
        result: Result<Reply<T>, ClientError>,
        memory: &mut RunMemory,
    ) -> Result<T, ApiFailure> {
        match result {
            Ok(reply) => {
                if let Some(notice) = &reply.deprecation {
                    self.host.deprecation(run, notice).await;
                    if !memory.deprecation_warned {
                        memory.deprecation_warned = true;
                        let note = format!(
                            "the Amperity API announced that api-version {} is deprecated{}; move to a newer version before it is retired",
                            run.spec
                                .amperity_api_version
                                .as_deref()
                                .unwrap_or(&self.defaults.api_version),
                            notice
                                .sunset
                                .as_deref()
                                .map(|s| format!(" (sunset {s})"))
                                .unwrap_or_default()
                        );
                        let event = Event {
                            type_: EventType::Warning,
                            reason: "ApiDeprecated",
                            note,
                        };
                        self.host.publish(run, &event).await;
                    }
                }
                Ok(reply.body)
            }
            Err(e) => Err(failure(&e)),
        }
    }
}

fn list_query(q: &SearchQuery) -> ListQuery {
    ListQuery {
        created_from: Some(q.created_from.to_string()),
        workflow_type: Some(q.workflow_type.clone()),
        ..ListQuery::default()
    }
}

/// Reduces a client error to what the decisions need.
pub fn failure(e: &ClientError) -> ApiFailure {
    let kind = if e.is_auth() {
        FailureKind::Auth
    } else if e.status() == Some(404) {
        FailureKind::NotFound
    } else if e.outcome_unknown() {
        FailureKind::Unknown
    } else if e.is_retryable() {
        FailureKind::Transient
    } else {
        FailureKind::Rejected
    };
    ApiFailure {
        kind,
        message: e.to_string(),
        retry_after: e.retry_after(),
    }
}
