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
//! start a run is on record before the POST is sent. The decisions are split by
//! the stage of a resource's life: [`start`] (starting, and searching for a run
//! whose start answer was lost), [`watch`] (polling and mirroring), [`stop`]
//! (`spec.stop` and `timeout`) and [`delete`] (deletion and TTL).

pub mod conditions;
mod delete;
pub mod mirror;
mod settle;
mod start;
mod stop;
mod watch;

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::amperity::Principal;
use crate::amperity::wire::{RunRequest, Workflow};
use crate::bounded::cut;
use crate::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus, Phase, StopReason};
use crate::run::validate;
pub use conditions::Outcome;

/// The reason a run ends with when the cluster connection it names does not choose
/// its namespace (a stall for every other reason credentials are missing).
pub const CONNECTION_NOT_ALLOWED: &str = "ConnectionNotAllowed";
pub use start::normalise_range_bound;

/// The annotation a person sets to settle an unconfirmed start.
pub const RESOLVE_START_ANNOTATION: &str = "amperity.dev/resolve-start";
/// The annotation a schedule sets on a run it creates for a slot with a
/// `startingDeadlineSeconds`: the latest time (RFC 3339) its first start may be
/// sent. A run not started by then ends TimedOut (`StartingDeadlineExceeded`)
/// instead of starting late.
pub const START_DEADLINE_ANNOTATION: &str = "amperity.dev/start-deadline";

/// Tunables of the decisions; the defaults are what the operator runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Poll interval when the resource gives none.
    pub default_poll_interval: Duration,
    /// First poll after a start, and the poll interval while stopping.
    pub quick_poll: Duration,
    /// How often a stalled resource re-checks (a Secret that appeared, a rotated token).
    pub stalled_recheck: Duration,
    /// How far before the recorded start the search for a lost start looks (clocks
    /// may be skewed).
    pub start_search_skew: Duration,
    /// How far apart Amperity's clock (read from its `Date` header, to the second)
    /// and the intent's time can be once the offset between the clocks is known:
    /// the header's resolution, the list's latency and skew between replicas.
    pub amperity_clock_tolerance: Duration,
    /// How long after its intent a start's run can have been created: the request
    /// timeout, with a margin. A run created later was not made by that start.
    pub start_request_window: Duration,
    /// Backoff before retry attempt n is `retry_backoff * 2^(n-1)`, capped at 10 minutes.
    pub retry_backoff: Duration,
    /// How long deletion waits for a stop to be accepted before letting go.
    pub deletion_grace: Duration,
    /// How long, from its first answer, the search for a lost start keeps looking
    /// before it asks a person (the list can take a while to show a new run).
    pub start_settle: Duration,
    /// How long a run may stay Stopping before it ends `StopUnconfirmed`.
    pub stop_grace: Duration,
    /// Failed polls in a row before the condition and an Event say so.
    pub poll_failures_to_report: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_poll_interval: Duration::from_secs(30),
            quick_poll: Duration::from_secs(5),
            stalled_recheck: Duration::from_secs(30),
            start_search_skew: Duration::from_secs(120),
            start_request_window: Duration::from_secs(60),
            amperity_clock_tolerance: Duration::from_secs(5),
            retry_backoff: Duration::from_secs(30),
            deletion_grace: Duration::from_secs(120),
            start_settle: Duration::from_secs(60),
            stop_grace: Duration::from_secs(600),
            poll_failures_to_report: 3,
        }
    }
}

/// What happened when the last action was to be performed.
#[derive(Clone, Debug)]
pub enum Answer {
    /// The credentials could not be read (reason is CamelCase, message names the Secret and key).
    CredentialsUnavailable {
        reason: String,
        message: String,
    },
    /// The endpoint (or the OAuth token URL) is not on the operator's allow-list:
    /// nothing was sent.
    EndpointNotAllowed {
        message: String,
    },
    /// The call's turn in the tenant's request budget is far off: nothing was
    /// sent, come back after this long (a little before the turn, to wait the
    /// rest in place).
    Later(Duration),
    Started(Result<Workflow, ApiFailure>),
    Polled(Result<Workflow, ApiFailure>),
    StopSent(Result<Workflow, ApiFailure>),
    Searched(Search),
    /// The change feed's list reports the run ended (no task instances): the
    /// outcome is settled from it, and the final task summary read later.
    Listed(Workflow),
}

/// The answer to a search for a run whose start answer was lost, with what the
/// host knows that Amperity's list does not say.
#[derive(Clone, Debug)]
pub struct Search {
    pub result: Result<Vec<Workflow>, ApiFailure>,
    /// Who this resource's credential starts runs as, when known (learned from its
    /// own starts, or given in the Secret).
    pub principal: Option<Principal>,
    pub claims: Claims,
    /// Amperity's clock less ours when it answered (from its `Date` header), when
    /// known: the search's windows are drawn in Amperity's clock.
    pub clock_offset: Option<SignedDuration>,
    /// The workflow name this config id's runs carry, once learned from Amperity's
    /// answers: a run of another name is never this resource's.
    pub config_name: Option<String>,
}

/// Which candidate runs other resources already follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// Candidate ids another resource (any namespace) follows or followed.
    pub tracked: BTreeSet<String>,
    /// When other resources recorded their intents to start a run of the same kind
    /// whose outcome is not known yet: a candidate created about then may be theirs.
    pub other_starts: Vec<Timestamp>,
    /// The host could see every resource and the runs of those gone (false: it
    /// could not list them all, or not read the claims ledger, in this term).
    pub complete: bool,
}

impl Claims {
    /// What a host that manages this one resource alone knows: nobody else claims anything.
    pub fn alone() -> Claims {
        Claims {
            complete: true,
            ..Claims::default()
        }
    }
}

/// A failed API call, reduced to what the decisions need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFailure {
    pub kind: FailureKind,
    /// Safe to show a person (never carries the token).
    pub message: String,
    pub retry_after: Option<Duration>,
    /// The answer was a 429.
    pub throttled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// 401/403 after the credentials were re-read once, or a refused OAuth exchange.
    Auth,
    /// 404: the run (or the endpoint) does not exist.
    NotFound,
    /// Another 4xx: the request itself is wrong and repeating it will not help.
    Rejected,
    /// The request was not processed (429, refused connection, failed token
    /// exchange): safe to repeat.
    Transient,
    /// The request may have been processed (timeout, 5xx, reset, unreadable 2xx,
    /// a redirect, an oversized answer).
    Unknown,
    /// The URL is not on the allow-list: nothing was sent.
    NotAllowed,
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
    /// What to remember until the next decision.
    pub memory: Memory,
}

/// What the caller remembers between reconciles without writing it to status.
/// Lost on a restart, which costs at most an early poll or a repeated Event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// When this run was last polled (polls write nothing unless something changed).
    pub last_polled: Option<Timestamp>,
    /// Polls in a row that got no usable answer.
    pub poll_failures: u32,
    /// Stops in a row that Amperity did not accept.
    pub stop_failures: u32,
    /// No stop before this (backoff after a failed one).
    pub next_stop_at: Option<Timestamp>,
    /// The tenant answered 429 and nothing has succeeded since (one Event per episode).
    pub throttled: bool,
    /// The change feed reported this run ended: poll it now, ahead of routine
    /// polls, whenever it was last polled. The report itself never changes the
    /// status: the list's answer ([`Answer::Listed`]) or a poll's does.
    pub end_reported: bool,
    /// The poll decided comes before a stop (the run may have ended on its own):
    /// someone waits on it, so it goes in an urgent turn.
    pub poll_before_stop: bool,
    /// The outcome was settled from the change feed's list; the verbose read for
    /// the final task summary is still to come, at routine priority.
    pub summary_due: bool,
    /// That read disagreed with the list (the status kept the list's outcome):
    /// the driver logs and counts it, then clears this.
    pub list_disagreed: bool,
    /// Amperity's clock less ours, from the last answer that carried a `Date`
    /// header: a lost start's search asks for runs created since its intent in
    /// Amperity's clock, not ours.
    pub amperity_clock: Option<SignedDuration>,
}

/// How often a run in flight is polled: its `pollInterval`, or the default.
pub fn poll_interval(run: &AmperityWorkflowRun, settings: &Settings) -> Duration {
    run.spec
        .poll_interval
        .as_deref()
        .and_then(validate::parse_duration)
        .unwrap_or(settings.default_poll_interval)
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
        memory: step.memory,
    }
}

/// Spec problems matter only before the run has finished; a finished run keeps its result.
fn check_spec(run: &AmperityWorkflowRun, status: &AmperityWorkflowRunStatus) -> Result<(), String> {
    if status.phase.is_some_and(Phase::is_finished) {
        return Ok(());
    }
    validate::validate_spec(&run.spec).map_err(|e| validate::describe(&e))
}

/// One decision in the making: the resource, the status as it becomes, and what to
/// tell people. Each lifecycle stage adds its own methods in its own file.
struct Step<'a> {
    run: &'a AmperityWorkflowRun,
    status: AmperityWorkflowRunStatus,
    events: Vec<Event>,
    now: Timestamp,
    memory: Memory,
    settings: &'a Settings,
}

/// The longest Event note (the events API's limit is 1,024 bytes).
pub const MAX_EVENT_NOTE_BYTES: usize = 1024;

/// The longest id of someone else's run quoted in a message.
const MAX_QUOTED_ID_BYTES: usize = 64;

impl Step<'_> {
    /// What to do when nothing new was learned.
    fn next(&mut self) -> Action {
        match self.status.phase {
            None | Some(Phase::Pending) => self.pending(),
            Some(Phase::Starting) => self.starting_without_answer(),
            Some(Phase::Running | Phase::Stopping) => self.in_flight(),
            Some(_) => self.after_finish(),
        }
    }

    /// What an answer changes.
    fn answered(&mut self, answer: Answer) -> Action {
        match answer {
            // The cluster connection it names does not choose its namespace: no
            // Secret was read, nothing was sent, and nothing will change that.
            Answer::CredentialsUnavailable { reason, message }
                if reason == CONNECTION_NOT_ALLOWED =>
            {
                if self.status.workflow_id.is_none() {
                    self.status.started_at = None;
                }
                self.finish(Phase::Failed, CONNECTION_NOT_ALLOWED, message);
                Action::AwaitChange
            }
            Answer::CredentialsUnavailable { reason, message } => {
                // Nothing started and the timeout passed: it ends here, without a
                // run, however long the Secret stays broken.
                if self.status.workflow_id.is_none()
                    && self.wanted_stop() == Some(StopReason::Timeout)
                {
                    return match self.status.phase {
                        None | Some(Phase::Pending) => self.finish_timed_out_before_start(),
                        _ => self.give_up_unconfirmed_start(StopReason::Timeout),
                    };
                }
                // A recorded start (Starting) may have been sent: it keeps its
                // intent and resumes its search once the credentials are back.
                let phase = self.status.phase.unwrap_or(Phase::Pending);
                self.stall(phase, &reason, message);
                Action::Requeue(self.settings.stalled_recheck)
            }
            Answer::EndpointNotAllowed { message } => self.not_allowed(message),
            Answer::Later(wait) => {
                // A first reconcile says at once that the run is on its way.
                if self.status.phase.is_none() {
                    let message = format!(
                        "waiting for a turn in tenant {}'s request budget to start the run",
                        self.run.spec.tenant()
                    );
                    self.set(Outcome::in_flight(Phase::Pending, "Pending", message));
                }
                Action::Requeue(wait)
            }
            Answer::Started(result) => self.started(result),
            // A finished status never moves back: the only read of a finished run
            // is the one for its final task summary.
            Answer::Polled(result) if self.status.phase.is_some_and(Phase::is_finished) => {
                self.summary(result)
            }
            Answer::Polled(result) => self.polled(result),
            Answer::Listed(w) => self.listed(w),
            Answer::StopSent(result) => self.stop_sent(result),
            Answer::Searched(search) => self.searched(search),
        }
    }

    // ---- shared transitions ----

    fn not_allowed(&mut self, message: String) -> Action {
        if self.status.workflow_id.is_none() {
            self.status.started_at = None;
        }
        self.finish(Phase::Failed, "EndpointNotAllowed", message);
        Action::AwaitChange
    }

    fn adopt(&mut self, id: String, reason: &'static str, message: &str) -> Action {
        self.status.workflow_id = Some(id.clone());
        self.status.search_started_at = None;
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

    fn finish(&mut self, phase: Phase, reason: &'static str, message: impl Into<String>) {
        let message = message.into();
        if self.status.completed_at.is_none() {
            self.status.completed_at = Some(Time(self.now));
        }
        let (event_type, event_reason) = match phase {
            Phase::Succeeded => (EventType::Normal, "Succeeded"),
            // Something may be left running in Amperity: a person should look.
            _ if reason == "StopUnconfirmed" => (EventType::Warning, "StopUnconfirmed"),
            Phase::TimedOut => (EventType::Warning, "TimedOut"),
            Phase::Canceled if reason == "Canceled" => (EventType::Normal, "Canceled"),
            Phase::Canceled => (EventType::Warning, "Canceled"),
            _ => (EventType::Warning, "Failed"),
        };
        if self.status.phase != Some(phase) {
            self.event(event_type, event_reason, message.clone());
        }
        self.set(Outcome::finished(phase, reason, message));
    }

    fn auth_failed(&mut self, phase: Phase, detail: &str) -> Action {
        let message = format!(
            "Amperity rejected the credentials from Secret {} ({detail}); put valid credentials in the Secret, it is re-read on the next try",
            self.run
                .spec
                .token_secret_ref
                .as_ref()
                .map_or("", |r| r.name.as_str())
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
                "StartUnconfirmed" => "StartUnconfirmed",
                _ => "CredentialsUnavailable",
            };
            self.event(EventType::Warning, event_reason, message.clone());
        }
        self.set(Outcome::stalled(phase, reason, message));
    }

    /// A 429 starts a throttling episode, told once in an Event; any answer that
    /// is not a 429 ends it.
    fn note_throttling(&mut self, failure: Option<&ApiFailure>) {
        let throttled = failure.is_some_and(|f| f.throttled);
        if throttled && !self.memory.throttled {
            self.event(
                EventType::Warning,
                "RateLimited",
                format!(
                    "Amperity answered 429 (too many requests) for tenant {}; requests back off and resume on their own",
                    self.run.spec.tenant()
                ),
            );
        }
        self.memory.throttled = throttled;
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
            // The API server refuses Event notes over 1 KiB: cut here, once, so
            // every host publishes what it is given.
            note: cut(&note, MAX_EVENT_NOTE_BYTES),
        });
    }

    /// `now - then`, zero when `then` is in the future (a skewed or edited status).
    fn since(&self, then: Timestamp) -> Duration {
        Duration::try_from(self.now.duration_since(then)).unwrap_or_default()
    }

    /// `at + d`, or None when that is past the end of time (an absurd duration).
    fn after(at: Timestamp, d: Duration) -> Option<Timestamp> {
        at.checked_add(SignedDuration::try_from(d).ok()?).ok()
    }
}

/// A list of other runs' ids for a message: at most five, each cut.
fn quoted_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let ids: Vec<String> = ids.map(|id| cut(id, MAX_QUOTED_ID_BYTES)).collect();
    let shown = ids.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if ids.len() > 5 {
        format!("{shown} and {} more", ids.len() - 5)
    } else {
        shown
    }
}
