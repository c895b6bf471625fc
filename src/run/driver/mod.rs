//! The loop around `decide`, shared by the controller and `local`: it persists each
//! decided status before performing the decided Amperity call, feeds the answer
//! back, and stops at the first action that is not an Amperity call (requeue,
//! wait, delete, release the finalizer), which it hands back to the caller.
//!
//! Before any call it checks the endpoint against the allow-list (nothing is read
//! or sent for an endpoint that is not allowed) and takes the call's turn in the
//! tenant's budget; a turn further off than [`HOLD_TURN`] is waited for outside
//! the reconcile. Where status is kept, where credentials come from and where
//! events go differ between the two callers; they provide them through [`Host`].
//! Amperity itself is behind [`Api`], so that a model of it can stand in for tests.

use std::time::Duration;

use crate::amperity::credentials::Access;
use crate::amperity::wire::Workflow;
use crate::amperity::{AmperityClient, ClientError, ListQuery, Principal, Reply, Target, Turn};
use crate::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus};
mod ports;

pub use ports::{Api, CredentialsProblem, Host};

use crate::run::decide::{
    Action, Answer, ApiFailure, Claims, Event, EventType, FailureKind, Memory, Search, SearchQuery,
    Settings, decide,
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
                    Ok(fresh) => $driver.amperity.$method($target, &fresh.credentials, $($arg),+).await,
                    Err(_) => first,
                }
            }
            _ => first,
        }
    }};
}

/// At most this many decide/act rounds per call: a start takes three (intent, POST,
/// id), a lost start's search four; anything longer is a bug, and stopping beats
/// spinning on the API.
const MAX_ROUNDS: usize = 8;

/// A call whose turn is at most this far off waits for it in place; a later one
/// lets go and comes back (a requeue costs a reconcile, a held wait costs memory
/// and a reconcile slot).
pub const HOLD_TURN: Duration = Duration::from_secs(2);

/// How much before its turn a call that let go comes back, to wait the rest in
/// place: a reconcile takes a few reads before its call, and a call that reaches
/// the gate after its turn leaves the turn unused, time the budget never gets
/// back while every turn is taken.
pub const COME_BACK_EARLY: Duration = Duration::from_secs(1);

/// Operator-wide defaults a resource may leave out.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Base URL template; `{tenant}` is replaced by the resource's tenant.
    pub endpoint: String,
    pub api_version: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            endpoint: "https://{tenant}.amperity.com/api".to_string(),
            api_version: "2024-04-01".to_string(),
        }
    }
}

/// What the caller keeps for one resource between calls.
#[derive(Clone, Debug, Default)]
pub struct RunMemory {
    pub decide: Memory,
    /// A deprecation warning was already published for this resource.
    pub deprecation_warned: bool,
    /// The turn reserved for this run's next call, when it was too far off to wait for.
    pub turn: Option<Turn>,
    /// What the change feed's list said of the run's end, for the next drive to
    /// settle the outcome from. Boxed: it is there only between a wake and the
    /// drive that takes it, and inline it made every run's entry in
    /// `Context::memory` about three times larger (10,000 runs: a 9 MiB table,
    /// and 13 MiB more while the table grew).
    pub listed: Option<Box<Workflow>>,
}

pub struct Driver<'a, H: Host, A: Api = AmperityClient> {
    pub host: &'a H,
    pub amperity: &'a A,
    pub defaults: &'a Defaults,
    pub settings: &'a Settings,
}

impl<H: Host, A: Api> Driver<'_, H, A> {
    /// Runs decide/act rounds until an action that is not an Amperity call.
    /// `run.status` is kept up to date with what was persisted.
    pub async fn drive(
        &self,
        run: &mut AmperityWorkflowRun,
        memory: &mut RunMemory,
    ) -> Result<Action, H::Error> {
        let mut answer = memory.listed.take().map(|w| Answer::Listed(*w));
        let mut calls = 0;
        for _ in 0..MAX_ROUNDS {
            let decision = decide(
                run,
                answer.take(),
                self.host.now(),
                memory.decide,
                self.settings,
            );
            memory.decide = decision.memory;
            if memory.decide.list_disagreed {
                memory.decide.list_disagreed = false;
                tracing::warn!(
                    "a read of a run settled from the change feed's list disagrees with the list; the status keeps the list's outcome"
                );
                self.host.list_disagreed(run);
            }
            if !matches!(
                decision.action,
                Action::Start(_) | Action::Poll(_) | Action::Stop(_) | Action::Search(_)
            ) {
                self.record(run, decision.status, &decision.events).await?;
                return Ok(decision.action);
            }
            // Nothing can be sent for a resource whose credentials cannot be had
            // whatever the endpoint (a connection missing, not Ready, or not for it).
            if let Some(problem) = self.host.refusal() {
                answer = Some(unavailable(problem));
                continue;
            }
            // Where the call would go: nothing is read or sent for an endpoint that
            // is not allowed.
            let target = match self.target(run) {
                Ok(t) => t,
                Err(e) => {
                    answer = Some(Answer::EndpointNotAllowed {
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            // A routine poll takes the next free turn; what someone waits on goes
            // first (a stop and the poll before it; a run the change feed reports
            // ended that its list could not settle), and a routine turn kept for it
            // is given up for an urgent one. The read for the final task summary of
            // a run the list settled is routine.
            let urgent = calls > 0
                || !matches!(decision.action, Action::Poll(_))
                || memory.decide.end_reported
                || memory.decide.poll_before_stop;
            // Its Kubernetes calls too: a stop's intent write must not queue behind
            // a burst's routine status writes. (A read of a run the feed reported
            // ended is not waited on by anyone: a burst has a thousand of them.)
            if !matches!(decision.action, Action::Poll(_)) || memory.decide.poll_before_stop {
                self.host.hurry();
            }
            let turn = match memory.turn.take() {
                Some(kept) => {
                    if urgent {
                        kept.promote();
                    }
                    kept
                }
                None => self.amperity.reserve_turn(
                    &target,
                    urgent,
                    run.metadata.namespace.as_deref().unwrap_or_default(),
                ),
            };
            let wait = turn.wait();
            let is_start = matches!(decision.action, Action::Start(_));
            if wait > HOLD_TURN {
                tracing::debug!(wait_ms = wait.as_millis() as u64, "turn kept for later");
                memory.turn = Some(turn);
                // What was decided (an adoption, say) stands; an intent to start is
                // recorded only right before its POST.
                if !is_start {
                    self.record(run, decision.status, &decision.events).await?;
                }
                // The change feed learns of the run now, not at its first poll a
                // whole schedule away (after a restart, every run's).
                if let Action::Poll(id) = &decision.action
                    && !self.host.follows(run, id)
                    && let Ok(access) = self.host.credentials(run).await
                {
                    self.host.follow(run, &target, &access.credentials, id);
                }
                answer = Some(Answer::Later(wait.saturating_sub(COME_BACK_EARLY)));
                continue;
            }
            // For a start, the credentials come first: without them nothing is sent,
            // so no intent is recorded. Any other decision (an adoption, say) is
            // recorded whatever the credentials do.
            let mut access = None;
            if is_start {
                match self.host.credentials(run).await {
                    Ok(a) => access = Some(a),
                    Err(p) => {
                        memory.turn = Some(turn);
                        answer = Some(unavailable(p));
                        continue;
                    }
                }
            }
            // Persist before acting: for a start, this is the recorded intent.
            self.record(run, decision.status, &decision.events).await?;
            let access = match access {
                Some(a) => a,
                None => match self.host.credentials(run).await {
                    Ok(a) => a,
                    Err(p) => {
                        memory.turn = Some(turn);
                        answer = Some(unavailable(p));
                        continue;
                    }
                },
            };
            calls += 1;
            answer = Some(
                self.perform(run, decision.action, &target, &access, turn, memory)
                    .await,
            );
        }
        tracing::error!("no settled decision after {MAX_ROUNDS} rounds; trying again later");
        Ok(Action::Requeue(self.settings.quick_poll))
    }

    /// Saves the status if it changed (over the version it was decided from, see
    /// [`Host::save_status`]), then publishes the events.
    async fn record(
        &self,
        run: &mut AmperityWorkflowRun,
        status: AmperityWorkflowRunStatus,
        events: &[Event],
    ) -> Result<(), H::Error> {
        if run.status.as_ref() != Some(&status) {
            let version = self.host.save_status(run, &status).await?;
            run.status = Some(status);
            if version.is_some() {
                run.metadata.resource_version = version;
            }
        }
        for event in events {
            self.host.publish(run, event).await;
        }
        Ok(())
    }

    fn target(&self, run: &AmperityWorkflowRun) -> Result<Target, ClientError> {
        let spec = &run.spec;
        Target::new(
            spec.endpoint.as_deref(),
            &self.defaults.endpoint,
            spec.tenant(),
            spec.amperity_api_version
                .as_deref()
                .unwrap_or(&self.defaults.api_version),
            self.amperity.allow_list(),
        )
    }

    async fn perform(
        &self,
        run: &AmperityWorkflowRun,
        action: Action,
        target: &Target,
        access: &Access,
        turn: Turn,
        memory: &mut RunMemory,
    ) -> Answer {
        let credentials = &access.credentials;
        let turn = Some(turn);
        match action {
            Action::Start(req) => {
                let r = retrying_auth!(self, run, target, credentials, start, &req, turn.clone());
                // The run this credential just started names who it starts runs as.
                if let Ok(reply) = &r {
                    if let Some(p) = Principal::of(&reply.body) {
                        self.amperity.learn_principal(target, credentials, p);
                    }
                    self.amperity
                        .learn_name(target, &run.spec.config_id, &reply.body.name);
                }
                Answer::Started(self.settle(run, r, memory).await)
            }
            Action::Poll(id) => {
                self.host.follow(run, target, credentials, &id);
                memory.decide.last_polled = Some(self.host.now());
                let r = retrying_auth!(self, run, target, credentials, get, &id, turn.clone());
                match &r {
                    Ok(reply) if started_here(run) => {
                        if let Some(p) = Principal::of(&reply.body) {
                            self.amperity.learn_principal(target, credentials, p);
                        }
                        self.amperity
                            .learn_name(target, &run.spec.config_id, &reply.body.name);
                    }
                    Err(e) if e.is_retryable() || e.outcome_unknown() => self.host.poll_failed(run),
                    _ => {}
                }
                Answer::Polled(self.settle(run, r, memory).await)
            }
            Action::Stop(id) => {
                let r = retrying_auth!(self, run, target, credentials, stop, &id, turn.clone());
                Answer::StopSent(self.settle(run, r, memory).await)
            }
            Action::Search(query) => {
                let q = list_query(&query);
                let r = retrying_auth!(self, run, target, credentials, list, &q, turn.clone());
                // Amperity's clock against ours, at its answer.
                let clock_offset = r
                    .as_ref()
                    .ok()
                    .and_then(|reply| reply.date)
                    .map(|date| date.duration_since(self.host.now()));
                let result = self.settle(run, r, memory).await;
                let principal = access
                    .principal
                    .clone()
                    .or_else(|| self.amperity.learned_principal(target, credentials));
                let claims = match &result {
                    Ok(runs) => {
                        let ids: Vec<String> = runs.iter().map(|w| w.id.clone()).collect();
                        self.host.claims(run, &ids, principal.as_ref()).await
                    }
                    Err(_) => Claims::default(),
                };
                Answer::Searched(Search {
                    result,
                    principal,
                    claims,
                    clock_offset,
                    config_name: self.amperity.learned_name(target, &run.spec.config_id),
                })
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
                if let Some(date) = reply.date {
                    memory.decide.amperity_clock = Some(date.duration_since(self.host.now()));
                }
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
                                .map(|s| format!(" (sunset {})", crate::bounded::cut(s, 64)))
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

fn unavailable(p: CredentialsProblem) -> Answer {
    Answer::CredentialsUnavailable {
        reason: p.reason,
        message: p.message,
    }
}

/// The run this resource follows is one it started itself (not one named in
/// spec.workflowId, nor one a person told it to adopt): its principal is the
/// credential's own.
fn started_here(run: &AmperityWorkflowRun) -> bool {
    run.spec.workflow_id.is_none()
        && run
            .status
            .as_ref()
            .is_some_and(|s| s.start_resolution.is_none())
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
    let kind = if e.is_not_allowed() {
        FailureKind::NotAllowed
    } else if e.is_auth() {
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
        throttled: e.status() == Some(429),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Context::memory` keeps one of these per run: 10,000 runs in flight are
    /// 10,000 entries of a table that doubles as it grows. A `Workflow` inline
    /// made each entry 560 bytes (a 9 MiB table at 10,000 runs, and 13.8 MiB at
    /// once while it grew from 8,192 to 16,384 places).
    #[test]
    fn a_run_memory_stays_small() {
        let size = std::mem::size_of::<RunMemory>();
        assert!(size <= 128, "RunMemory is {size} bytes");
    }
}
