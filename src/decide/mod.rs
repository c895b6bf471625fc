//! The operator's decisions, with no I/O: from the resource as it stands, the answer
//! to the last action (if any) and the time, compute the next status and the one
//! action to perform. The controller and `local` run the same loop around it:
//!
//! ```text
//! decision = decide(run, None, now)
//! loop { persist decision.status if changed; perform decision.action;
//!        decision = decide(run with new status, Some(answer), now) }
//! ```
//!
//! Because the status is persisted before an action is performed, the intent to
//! start a run is on record before the POST is sent (at most one run per resource).

pub mod conditions;
pub mod mirror;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::amperity::wire::{Attribution, RunRequest, Workflow, WorkflowState};
use crate::crd::{
    AmperityWorkflowRun, AmperityWorkflowRunStatus, Attempt, DeletionPolicy, Phase, StopReason,
};
use crate::validate;
pub use conditions::Outcome;

/// The annotation a person sets to settle an unconfirmed start.
pub const RESOLVE_START_ANNOTATION: &str = "amperity.dev/resolve-start";

/// Tunables of the decisions; the defaults are what the operator runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Poll interval when the resource gives none.
    pub default_poll_interval: Duration,
    /// First poll after a start, and the poll interval while stopping.
    pub quick_poll: Duration,
    /// How often a stalled resource re-checks (a Secret that appeared, a rotated token).
    pub stalled_recheck: Duration,
    /// How far before the recorded start the search for a lost start looks.
    pub start_search_skew: Duration,
    /// Backoff before retry attempt n is `retry_backoff * 2^(n-1)`, capped at 10 minutes.
    pub retry_backoff: Duration,
    /// How long deletion waits for a stop to be accepted before letting go.
    pub deletion_grace: Duration,
    /// After a lost start, how long the list may take to show a created run. Past
    /// it, finding no run at all means the start never happened: start again.
    pub start_settle: Duration,
    /// The operator's own Amperity principal, when known: narrows the lost-start search.
    pub principal: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_poll_interval: Duration::from_secs(30),
            quick_poll: Duration::from_secs(5),
            stalled_recheck: Duration::from_secs(30),
            start_search_skew: Duration::from_secs(120),
            retry_backoff: Duration::from_secs(30),
            deletion_grace: Duration::from_secs(120),
            start_settle: Duration::from_secs(60),
            principal: None,
        }
    }
}

/// What happened when the last action was performed.
#[derive(Clone, Debug)]
pub enum Answer {
    /// The credentials could not be read (reason is CamelCase, message names the Secret and key).
    CredentialsUnavailable {
        reason: String,
        message: String,
    },
    Started(Result<Workflow, ApiFailure>),
    Polled(Result<Workflow, ApiFailure>),
    StopSent(Result<Workflow, ApiFailure>),
    Searched(Result<Vec<Workflow>, ApiFailure>),
}

/// A failed API call, reduced to what the decisions need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFailure {
    pub kind: FailureKind,
    /// Safe to show a person (never carries the token).
    pub message: String,
    pub retry_after: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// 401/403 after the credentials were re-read once.
    Auth,
    /// 404: the run (or the endpoint) does not exist.
    NotFound,
    /// Another 4xx: the request itself is wrong and repeating it will not help.
    Rejected,
    /// The request was not processed (429, refused connection): safe to repeat.
    Transient,
    /// The request may have been processed (timeout, 5xx, reset, unreadable 2xx).
    Unknown,
}

/// The one piece of I/O the caller performs next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// POST /workflow/runs. The decision's status (the intent) must be persisted first.
    Start(RunRequest),
    Poll(String),
    Stop(String),
    /// List runs to find one whose start answer was lost.
    Search(SearchQuery),
    /// Nothing to do until then.
    Requeue(Duration),
    /// Nothing to do until the resource changes.
    AwaitChange,
    /// `ttlSecondsAfterFinished` has passed: delete the resource.
    Delete,
    /// The resource is being deleted and the run needs nothing more: drop the finalizer.
    ReleaseFinalizer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    pub created_from: Timestamp,
    pub workflow_type: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A Kubernetes Event to publish: only on transitions, never per poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: AmperityWorkflowRunStatus,
    pub action: Action,
    pub events: Vec<Event>,
}

/// What the caller remembers between reconciles without writing it to status.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// When this run was last polled (polls write nothing unless something changed).
    pub last_polled: Option<Timestamp>,
}

/// The Amperity workflow type a config id starts, for searching lost starts.
pub fn workflow_type_for(config_id: &str) -> &'static str {
    match config_id.get(..3) {
        Some("og-") => "amperity.orchestration.orchestration/run",
        Some("cc-") => "campaign.send",
        _ => "courier.group/run",
    }
}

pub fn decide(
    run: &AmperityWorkflowRun,
    answer: Option<Answer>,
    now: Timestamp,
    memory: Memory,
    settings: &Settings,
) -> Decision {
    let mut step = Step {
        run,
        status: run.status.clone().unwrap_or_default(),
        events: Vec::new(),
        now,
        memory,
        settings,
    };
    let action = if run.metadata.deletion_timestamp.is_some() {
        step.deleting(answer)
    } else if let Err(errors) = check_spec(run, &step.status) {
        step.finish(
            Phase::Failed,
            "InvalidSpec",
            format!("the spec is invalid: {errors}; create a corrected AmperityWorkflowRun"),
        );
        Action::AwaitChange
    } else {
        match answer {
            None => step.next(),
            Some(answer) => step.answered(answer),
        }
    };
    let mut status = step.status;
    conditions::stamp_generation(&mut status, run.metadata.generation);
    Decision {
        status,
        action,
        events: step.events,
    }
}

/// Spec problems matter only before the run has finished; a finished run keeps its result.
fn check_spec(run: &AmperityWorkflowRun, status: &AmperityWorkflowRunStatus) -> Result<(), String> {
    if status.phase.is_some_and(Phase::is_finished) {
        return Ok(());
    }
    validate::validate_spec(&run.spec).map_err(|e| validate::describe(&e))
}

struct Step<'a> {
    run: &'a AmperityWorkflowRun,
    status: AmperityWorkflowRunStatus,
    events: Vec<Event>,
    now: Timestamp,
    memory: Memory,
    settings: &'a Settings,
}

impl Step<'_> {
    // ---- what to do when nothing new was learned ----

    fn next(&mut self) -> Action {
        let spec = &self.run.spec;
        match self.status.phase {
            None => {
                self.set(Outcome::in_flight(
                    Phase::Pending,
                    "Pending",
                    "the run has not been started yet",
                ));
                if let Some(id) = spec.workflow_id.clone() {
                    return self.adopt(
                        id,
                        "Adopted",
                        "following the existing run named in spec.workflowId",
                    );
                }
                if spec.stop {
                    return self.finish_canceled_before_start();
                }
                self.begin_start()
            }
            Some(Phase::Pending) => {
                if spec.stop {
                    return self.finish_canceled_before_start();
                }
                if let Some(wait) = self.retry_wait() {
                    return Action::Requeue(wait);
                }
                self.begin_start()
            }
            Some(Phase::Starting) => self.starting_without_answer(),
            Some(Phase::Running | Phase::Stopping) => self.in_flight(),
            Some(_) => self.finished_next(),
        }
    }

    fn begin_start(&mut self) -> Action {
        let spec = &self.run.spec;
        self.status.started_at = Some(Time(self.now));
        self.status.workflow_id = None;
        self.set(Outcome::in_flight(
            Phase::Starting,
            "Starting",
            format!(
                "starting {} (the intent is recorded before the request is sent)",
                spec.config_id
            ),
        ));
        Action::Start(RunRequest {
            config_id: spec.config_id.clone(),
            run_mode: spec.run_mode.map(|m| m.as_str().to_string()),
            range_from: spec.range.as_ref().map(|r| r.from.clone()),
            range_to: spec.range.as_ref().and_then(|r| r.to.clone()),
        })
    }

    /// A start was recorded but its answer never reached us: look for the run
    /// before even thinking of starting another.
    fn starting_without_answer(&mut self) -> Action {
        if conditions::stalled_reason(&self.status) == Some("StartUnconfirmed") {
            return self.resolve_start();
        }
        let recorded = self
            .status
            .started_at
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(self.now);
        let skew = SignedDuration::try_from(self.settings.start_search_skew).unwrap_or_default();
        Action::Search(SearchQuery {
            created_from: recorded - skew,
            workflow_type: workflow_type_for(&self.run.spec.config_id).to_string(),
        })
    }

    /// Acts once on `amperity.dev/resolve-start`, recording what it did.
    fn resolve_start(&mut self) -> Action {
        let Some(answer) = self
            .run
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESOLVE_START_ANNOTATION))
        else {
            return Action::AwaitChange;
        };
        let answer = answer.trim().to_string();
        if self.status.start_resolution.as_deref() == Some(answer.as_str()) {
            return Action::AwaitChange;
        }
        let mut words = answer.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("adopt"), Some(id), None) => {
                self.status.start_resolution = Some(answer.clone());
                self.adopt(
                    id.to_string(),
                    "StartResolved",
                    &format!("adopted {id} as told by the {RESOLVE_START_ANNOTATION} annotation"),
                )
            }
            (Some("retry"), None, None) => {
                self.status.start_resolution = Some(answer.clone());
                self.event(
                    EventType::Normal,
                    "StartResolved",
                    format!(
                        "starting a new run as told by the {RESOLVE_START_ANNOTATION} annotation"
                    ),
                );
                self.begin_start()
            }
            _ => {
                let message = format!(
                    "the {RESOLVE_START_ANNOTATION} annotation {answer:?} is not understood: use 'adopt <workflow id>' or 'retry'"
                );
                self.set(Outcome::stalled(
                    Phase::Starting,
                    "StartUnconfirmed",
                    message,
                ));
                Action::AwaitChange
            }
        }
    }

    fn in_flight(&mut self) -> Action {
        let Some(id) = self.status.workflow_id.clone() else {
            // Running without an id cannot happen through decide; recover by searching.
            self.set(Outcome::in_flight(
                Phase::Starting,
                "Starting",
                "the run id was lost; looking for the run",
            ));
            return self.starting_without_answer();
        };
        if self.status.stop_reason.is_none() && self.wanted_stop().is_some() {
            return Action::Stop(id);
        }
        let interval = if self.status.phase == Some(Phase::Stopping) {
            self.settings.quick_poll
        } else {
            self.poll_interval()
        };
        match self.memory.last_polled {
            Some(at) => {
                let since = self.now.duration_since(at);
                let since = Duration::try_from(since).unwrap_or_default();
                if since >= interval {
                    Action::Poll(id)
                } else {
                    Action::Requeue(interval - since)
                }
            }
            None => Action::Poll(id),
        }
    }

    /// Why the run should be stopped now, if it should.
    fn wanted_stop(&self) -> Option<StopReason> {
        if self.run.spec.stop {
            return Some(StopReason::Requested);
        }
        let timeout = self
            .run
            .spec
            .timeout
            .as_deref()
            .and_then(validate::parse_duration)?;
        let started = self.status.started_at.as_ref()?.0;
        let elapsed = Duration::try_from(self.now.duration_since(started)).unwrap_or_default();
        (elapsed >= timeout).then_some(StopReason::Timeout)
    }

    fn finished_next(&mut self) -> Action {
        let Some(ttl) = self.run.spec.ttl_seconds_after_finished else {
            return Action::AwaitChange;
        };
        let Some(done) = self.status.completed_at.as_ref().map(|t| t.0) else {
            return Action::AwaitChange;
        };
        let due = done + SignedDuration::from_secs(ttl.max(0));
        if self.now >= due {
            Action::Delete
        } else {
            Action::Requeue(Duration::try_from(due.duration_since(self.now)).unwrap_or_default())
        }
    }

    // ---- what an answer changes ----

    fn answered(&mut self, answer: Answer) -> Action {
        match answer {
            Answer::CredentialsUnavailable { reason, message } => {
                if self.status.phase.is_none_or(|p| p == Phase::Starting)
                    && self.status.workflow_id.is_none()
                {
                    // Nothing was sent: the start did not happen.
                    self.status.started_at = None;
                    self.stall(Phase::Pending, &reason, message);
                } else {
                    let phase = self.status.phase.unwrap_or(Phase::Pending);
                    self.stall(phase, &reason, message);
                }
                Action::Requeue(self.settings.stalled_recheck)
            }
            Answer::Started(result) => self.started(result),
            Answer::Polled(result) => self.polled(result),
            Answer::StopSent(result) => self.stop_sent(result),
            Answer::Searched(result) => self.searched(result),
        }
    }

    fn started(&mut self, result: Result<Workflow, ApiFailure>) -> Action {
        match result {
            Ok(w) => {
                let id = w.id.clone();
                self.event(
                    EventType::Normal,
                    "Started",
                    format!("started Amperity run {id} for {}", self.run.spec.config_id),
                );
                self.status.workflow_id = Some(id.clone());
                self.observe(&w);
                if w.has_ended() {
                    return self.ended(&w);
                }
                self.set(Outcome::in_flight(
                    Phase::Running,
                    "Running",
                    format!("Amperity run {id} is {}", w.state),
                ));
                Action::Requeue(self.settings.quick_poll)
            }
            Err(f) => match f.kind {
                FailureKind::Unknown => {
                    self.set(Outcome::in_flight(
                        Phase::Starting,
                        "StartOutcomeUnknown",
                        format!("the start request's outcome is unknown ({}); looking for the run before starting another", f.message),
                    ));
                    Action::Requeue(f.retry_after.unwrap_or(self.settings.quick_poll))
                }
                FailureKind::Transient => {
                    self.status.started_at = None;
                    self.set(Outcome::in_flight(
                        Phase::Pending,
                        "StartDeferred",
                        format!(
                            "the start was not accepted yet ({}); trying again",
                            f.message
                        ),
                    ));
                    Action::Requeue(f.retry_after.unwrap_or(self.settings.quick_poll))
                }
                FailureKind::Auth => {
                    self.status.started_at = None;
                    self.auth_failed(Phase::Pending, &f.message)
                }
                FailureKind::Rejected | FailureKind::NotFound => {
                    self.status.started_at = None;
                    let message = format!(
                        "Amperity refused to start {}: {}; fix the spec (config id, range, run mode) in a new AmperityWorkflowRun",
                        self.run.spec.config_id, f.message
                    );
                    self.finish(Phase::Failed, "StartRejected", message);
                    Action::AwaitChange
                }
            },
        }
    }

    fn polled(&mut self, result: Result<Workflow, ApiFailure>) -> Action {
        let id = self.status.workflow_id.clone().unwrap_or_default();
        match result {
            Ok(w) => {
                let was_stalled = conditions::stalled_reason(&self.status).is_some();
                let previous_state = self.status.workflow.as_ref().and_then(|i| i.state.clone());
                self.observe(&w);
                if w.has_ended() {
                    return self.ended(&w);
                }
                if let WorkflowState::Unknown(raw) = &w.state
                    && previous_state.as_deref() != Some(raw.as_str())
                {
                    self.event(
                            EventType::Warning,
                            "UnknownState",
                            format!("Amperity reports the undocumented state {raw:?} for {id}; treating the run as still running"),
                        );
                }
                let phase = if self.status.stop_reason.is_some() {
                    Phase::Stopping
                } else {
                    Phase::Running
                };
                let current = self.status.status_line(&w);
                let reason = if phase == Phase::Stopping {
                    "Stopping"
                } else {
                    "Running"
                };
                if was_stalled
                    || self.status.phase != Some(phase)
                    || self.reconciling_message() != Some(current.as_str())
                {
                    self.set(Outcome::in_flight(phase, reason, current));
                }
                let interval = if phase == Phase::Stopping {
                    self.settings.quick_poll
                } else {
                    self.poll_interval()
                };
                if self.status.stop_reason.is_none() && self.wanted_stop().is_some() {
                    return Action::Stop(id);
                }
                Action::Requeue(interval)
            }
            Err(f) => match f.kind {
                FailureKind::NotFound => {
                    let message = format!(
                        "Amperity has no run {id} in tenant {} (HTTP 404): it was deleted, or spec.workflowId or spec.tenant is wrong",
                        self.run.spec.tenant
                    );
                    self.finish(Phase::Failed, "WorkflowNotFound", message);
                    Action::AwaitChange
                }
                FailureKind::Auth => {
                    let phase = self.status.phase.unwrap_or(Phase::Running);
                    self.auth_failed(phase, &f.message)
                }
                FailureKind::Rejected => {
                    let phase = self.status.phase.unwrap_or(Phase::Running);
                    self.stall(
                        phase,
                        "ApiRejected",
                        format!("Amperity rejected the status request: {}", f.message),
                    );
                    Action::Requeue(self.settings.stalled_recheck)
                }
                FailureKind::Transient | FailureKind::Unknown => Action::Requeue(
                    f.retry_after
                        .unwrap_or(self.settings.quick_poll.max(Duration::from_secs(10))),
                ),
            },
        }
    }

    fn stop_sent(&mut self, result: Result<Workflow, ApiFailure>) -> Action {
        let reason = self.wanted_stop().unwrap_or(StopReason::Requested);
        let id = self.status.workflow_id.clone().unwrap_or_default();
        match result {
            Ok(w) => {
                self.status.stop_reason = Some(reason);
                self.observe(&w);
                if w.has_ended() {
                    return self.ended(&w);
                }
                let why = match reason {
                    StopReason::Timeout => format!(
                        "spec.timeout ({}) passed",
                        self.run.spec.timeout.as_deref().unwrap_or("?")
                    ),
                    _ => "spec.stop is true".to_string(),
                };
                self.event(
                    EventType::Normal,
                    "Stopping",
                    format!("asked Amperity to stop {id}: {why}"),
                );
                self.set(Outcome::in_flight(
                    Phase::Stopping,
                    "Stopping",
                    format!("stopping {id}: {why}"),
                ));
                Action::Requeue(self.settings.quick_poll)
            }
            Err(f) => match f.kind {
                FailureKind::NotFound => self.polled(Err(f)),
                FailureKind::Auth => {
                    let phase = self.status.phase.unwrap_or(Phase::Running);
                    self.auth_failed(phase, &f.message)
                }
                _ => Action::Requeue(f.retry_after.unwrap_or(self.settings.quick_poll)),
            },
        }
    }

    fn searched(&mut self, result: Result<Vec<Workflow>, ApiFailure>) -> Action {
        let runs = match result {
            Ok(runs) => runs,
            Err(f) if f.kind == FailureKind::Auth => {
                return self.auth_failed(Phase::Starting, &f.message);
            }
            Err(f) => return Action::Requeue(f.retry_after.unwrap_or(self.settings.quick_poll)),
        };
        let wanted_type = workflow_type_for(&self.run.spec.config_id);
        let known: Vec<&str> = self
            .status
            .attempts
            .iter()
            .map(|a| a.workflow_id.as_str())
            .collect();
        let floor = self
            .status
            .started_at
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(self.now)
            - SignedDuration::try_from(self.settings.start_search_skew).unwrap_or_default();
        let candidates: Vec<&Workflow> = runs
            .iter()
            .filter(|w| w.workflow_type.is_empty() || w.workflow_type == wanted_type)
            .filter(|w| !known.contains(&w.id.as_str()))
            .filter(|w| {
                w.created_at
                    .as_deref()
                    .and_then(|c| c.parse::<Timestamp>().ok())
                    .is_none_or(|c| c >= floor)
            })
            .filter(|w| match &self.settings.principal {
                Some(me) => {
                    w.principal_id.as_deref() == Some(me.as_str())
                        || w.principal_name.as_deref() == Some(me.as_str())
                }
                None => true,
            })
            .collect();
        if let [only] = candidates.as_slice() {
            let w = (*only).clone();
            let message = format!(
                "the start's answer was lost; found and adopted {} (the only matching run)",
                w.id
            );
            let action = self.adopt(w.id.clone(), "Adopted", &message);
            self.observe(&w);
            if w.has_ended() {
                return self.ended(&w);
            }
            return action;
        }
        if candidates.is_empty() {
            let recorded = self
                .status
                .started_at
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(self.now);
            let age = Duration::try_from(self.now.duration_since(recorded)).unwrap_or_default();
            if age < self.settings.start_settle {
                // The run may not be listed yet: look again before concluding.
                return Action::Requeue(self.settings.start_settle - age);
            }
            self.event(
                EventType::Normal,
                "StartNotFound",
                format!(
                    "no {wanted_type} run was created since the lost start at {recorded}; starting one now"
                ),
            );
            return self.begin_start();
        }
        let listed: Vec<&str> = candidates.iter().take(5).map(|w| w.id.as_str()).collect();
        let message = format!(
            "a start was sent at {} but its answer was lost, and {} matching {wanted_type} runs exist since then{}; \
             to continue, annotate this resource with {RESOLVE_START_ANNOTATION}='adopt <workflow id>' to follow one, \
             or {RESOLVE_START_ANNOTATION}=retry to start a new run",
            self.status
                .started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            candidates.len(),
            if listed.is_empty() {
                String::new()
            } else {
                format!(" ({})", listed.join(", "))
            },
        );
        if conditions::stalled_reason(&self.status) != Some("StartUnconfirmed") {
            self.event(EventType::Warning, "StartUnconfirmed", message.clone());
        }
        self.set(Outcome::stalled(
            Phase::Starting,
            "StartUnconfirmed",
            message,
        ));
        self.resolve_start()
    }

    // ---- deletion ----

    fn deleting(&mut self, answer: Option<Answer>) -> Action {
        let policy = self.run.spec.deletion_policy.unwrap_or_default();
        let Some(id) = self.status.workflow_id.clone() else {
            return Action::ReleaseFinalizer;
        };
        let finished = self.status.phase.is_some_and(Phase::is_finished);
        if policy == DeletionPolicy::Orphan
            || finished
            || self.status.stop_reason == Some(StopReason::Deletion)
        {
            return Action::ReleaseFinalizer;
        }
        let deleted_at = self
            .run
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(self.now);
        let waited = Duration::try_from(self.now.duration_since(deleted_at)).unwrap_or_default();
        match answer {
            None => Action::Stop(id),
            Some(Answer::StopSent(Ok(_))) => {
                self.status.stop_reason = Some(StopReason::Deletion);
                self.event(
                    EventType::Normal,
                    "Stopping",
                    format!("stopped Amperity run {id} because the resource is being deleted"),
                );
                Action::ReleaseFinalizer
            }
            Some(Answer::StopSent(Err(f))) if f.kind == FailureKind::NotFound => {
                Action::ReleaseFinalizer
            }
            // A gone Secret, failed auth or an unreachable API must not block deletion for ever.
            Some(Answer::CredentialsUnavailable { .. }) => {
                self.give_up_stop(&id, "the credentials are unavailable")
            }
            Some(Answer::StopSent(Err(f)))
                if f.kind == FailureKind::Auth || waited >= self.settings.deletion_grace =>
            {
                self.give_up_stop(&id, &f.message)
            }
            Some(_) => Action::Requeue(self.settings.quick_poll),
        }
    }

    fn give_up_stop(&mut self, id: &str, why: &str) -> Action {
        self.event(
            EventType::Warning,
            "StopFailed",
            format!(
                "could not stop Amperity run {id} before deletion ({why}); it may still be running"
            ),
        );
        Action::ReleaseFinalizer
    }

    // ---- shared transitions ----

    fn adopt(&mut self, id: String, reason: &'static str, message: &str) -> Action {
        self.status.workflow_id = Some(id.clone());
        if self.status.started_at.is_none() {
            self.status.started_at = Some(Time(self.now));
        }
        self.event(EventType::Normal, reason, message.to_string());
        self.set(Outcome::in_flight(
            Phase::Running,
            "Running",
            format!("following Amperity run {id}"),
        ));
        Action::Poll(id)
    }

    /// Mirrors a run's fields, tasks and error into status.
    fn observe(&mut self, w: &Workflow) {
        self.status.workflow = Some(mirror::workflow_info(w, self.status.workflow.as_ref()));
        if let Some(tasks) = &w.task_instances {
            self.status.tasks = Some(mirror::task_summary(tasks));
        }
        if let Some(e) = &w.error {
            self.status.error = Some(mirror::run_error(e));
        }
    }

    fn ended(&mut self, w: &Workflow) -> Action {
        let id = w.id.clone();
        let platform =
            w.error.as_ref().and_then(|e| e.attribution.as_ref()) == Some(&Attribution::Platform);
        let error_text = w
            .error
            .as_ref()
            .map(|e| mirror::truncate(&e.message))
            .unwrap_or_default();
        match &w.state {
            WorkflowState::Canceled | WorkflowState::Stopped => {
                let (phase, reason, text) = match self.status.stop_reason {
                    Some(StopReason::Timeout) => (
                        Phase::TimedOut,
                        "TimedOut",
                        format!(
                            "Amperity run {id} was stopped because spec.timeout ({}) passed",
                            self.run.spec.timeout.as_deref().unwrap_or("?")
                        ),
                    ),
                    Some(_) => (
                        Phase::Canceled,
                        "Canceled",
                        format!("Amperity run {id} was stopped as spec.stop asked"),
                    ),
                    None => (
                        Phase::Canceled,
                        "Canceled",
                        format!("Amperity run {id} was stopped outside the operator"),
                    ),
                };
                self.finish(phase, reason, text);
            }
            WorkflowState::Failed => {
                let limit = self.run.spec.retry.map(|r| r.limit).unwrap_or(0) as usize;
                if platform
                    && self.status.attempts.len() < limit
                    && self.status.stop_reason.is_none()
                {
                    return self.retry(w);
                }
                let reason = match w.error.as_ref().and_then(|e| e.attribution.as_ref()) {
                    Some(Attribution::Customer) => "CustomerError",
                    Some(Attribution::Platform) if limit > 0 => "RetriesExhausted",
                    Some(Attribution::Platform) => "PlatformError",
                    _ => "Failed",
                };
                let hint = match reason {
                    "CustomerError" => "fix the configuration in Amperity, then create a new run",
                    "PlatformError" => {
                        "a platform error is usually transient: create a new run, or set spec.retry"
                    }
                    "RetriesExhausted" => {
                        "every attempt failed with a platform error; contact Amperity support if it persists"
                    }
                    _ => "see the run in Amperity for details",
                };
                self.finish(
                    Phase::Failed,
                    reason,
                    format!("Amperity run {id} failed: {error_text}; {hint}"),
                );
            }
            WorkflowState::Succeeded | WorkflowState::Skipped => {
                self.finish(
                    Phase::Succeeded,
                    "Succeeded",
                    format!("Amperity run {id} succeeded"),
                );
            }
            other => {
                // Ended by `ended_at` in a state we do not know: the error decides.
                if w.error.is_some() {
                    self.finish(
                        Phase::Failed,
                        "Failed",
                        format!("Amperity run {id} ended in state {other}: {error_text}"),
                    );
                } else {
                    self.finish(
                        Phase::Succeeded,
                        "Succeeded",
                        format!("Amperity run {id} ended in state {other} without an error"),
                    );
                }
            }
        }
        self.finished_next()
    }

    fn retry(&mut self, w: &Workflow) -> Action {
        let attempt = Attempt {
            workflow_id: w.id.clone(),
            state: Some(w.state.as_str().to_string()),
            started_at: self.status.started_at.clone(),
            completed_at: Some(Time(self.now)),
            error: w.error.as_ref().map(mirror::run_error),
        };
        self.status.attempts.push(attempt);
        let n = self.status.attempts.len();
        let limit = self.run.spec.retry.map(|r| r.limit).unwrap_or(0);
        let wait = self.retry_wait().unwrap_or_default();
        let message = format!(
            "Amperity run {} failed with a platform error ({}); starting attempt {} of {} in {}s",
            w.id,
            w.error
                .as_ref()
                .map(|e| mirror::truncate(&e.message))
                .unwrap_or_default(),
            n + 1,
            limit + 1,
            wait.as_secs()
        );
        self.event(EventType::Warning, "Retrying", message.clone());
        self.status.workflow_id = None;
        self.status.started_at = None;
        self.status.workflow = None;
        self.status.tasks = None;
        self.status.error = None;
        self.set(Outcome::in_flight(Phase::Pending, "Retrying", message));
        Action::Requeue(wait)
    }

    /// Time left before the next retry attempt may start, if any.
    fn retry_wait(&self) -> Option<Duration> {
        let last = self.status.attempts.last()?.completed_at.as_ref()?.0;
        let n = self.status.attempts.len() as u32;
        let backoff = self
            .settings
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
            .min(Duration::from_secs(600));
        let since = Duration::try_from(self.now.duration_since(last)).unwrap_or_default();
        (since < backoff).then(|| backoff - since)
    }

    fn finish_canceled_before_start(&mut self) -> Action {
        self.finish(
            Phase::Canceled,
            "Canceled",
            "spec.stop was set before the run started; nothing was started",
        );
        self.finished_next()
    }

    fn finish(&mut self, phase: Phase, reason: &'static str, message: impl Into<String>) {
        let message = message.into();
        if self.status.completed_at.is_none() {
            self.status.completed_at = Some(Time(self.now));
        }
        let (event_type, event_reason) = match phase {
            Phase::Succeeded => (EventType::Normal, "Succeeded"),
            Phase::TimedOut => (EventType::Warning, "TimedOut"),
            Phase::Canceled => (EventType::Normal, "Canceled"),
            _ => (EventType::Warning, "Failed"),
        };
        if self.status.phase != Some(phase) {
            self.event(event_type, event_reason, message.clone());
        }
        self.set(Outcome::finished(phase, reason, message));
    }

    fn auth_failed(&mut self, phase: Phase, detail: &str) -> Action {
        let message = format!(
            "Amperity rejected the credentials from Secret {} ({detail}); put a valid token in the Secret, it is re-read on the next try",
            self.run.spec.token_secret_ref.name
        );
        self.stall(phase, "AuthFailed", message);
        Action::Requeue(self.settings.stalled_recheck)
    }

    /// Marks the run stalled, with a Warning event when it was not stalled for this reason.
    fn stall(&mut self, phase: Phase, reason: &str, message: String) {
        if conditions::stalled_reason(&self.status) != Some(reason) {
            let event_reason = match reason {
                "AuthFailed" => "AuthFailed",
                "ApiRejected" => "ApiRejected",
                _ => "CredentialsUnavailable",
            };
            self.event(EventType::Warning, event_reason, message.clone());
        }
        self.set(Outcome::stalled(phase, reason, message));
    }

    fn set(&mut self, outcome: Outcome) {
        conditions::apply(
            &mut self.status,
            &outcome,
            self.run.metadata.generation,
            Time(self.now),
        );
    }

    fn reconciling_message(&self) -> Option<&str> {
        conditions::get(&self.status, conditions::RECONCILING).map(|c| c.message.as_str())
    }

    fn event(&mut self, type_: EventType, reason: &'static str, note: String) {
        self.events.push(Event {
            type_,
            reason,
            note,
        });
    }

    fn poll_interval(&self) -> Duration {
        self.run
            .spec
            .poll_interval
            .as_deref()
            .and_then(validate::parse_duration)
            .unwrap_or(self.settings.default_poll_interval)
    }
}

trait StatusLine {
    fn status_line(&self, w: &Workflow) -> String;
}

impl StatusLine for AmperityWorkflowRunStatus {
    /// The Reconciling message while in flight: changes only when the state or task
    /// progress does, so an unchanged poll writes nothing.
    fn status_line(&self, w: &Workflow) -> String {
        match &self.tasks {
            Some(t) if t.total > 0 => format!(
                "Amperity run {} is {}: {} tasks done",
                w.id, w.state, t.progress
            ),
            _ => format!("Amperity run {} is {}", w.id, w.state),
        }
    }
}
