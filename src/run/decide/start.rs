//! Starting a run, and the search for a run whose start answer was lost.
//!
//! The promise: at most one Amperity run per resource and attempt, or a person is
//! asked. The intent (phase Starting, `startedAt`) is persisted before the POST; a
//! start is repeated only on an answer that proves Amperity never got it (a refused
//! connection, a 429, a failed token exchange). Any other lost answer searches the
//! runs created since the intent, adopts a single certain match (the type the
//! config implies, started by this credential's principal, followed by no other
//! resource, while no other start of that kind is unresolved), and otherwise asks
//! a person (`StartUnconfirmed`, settled with the resolve-start annotation).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Action, ApiFailure, Claims, EventType, FailureKind, Outcome, RESOLVE_START_ANNOTATION, Search,
    SearchQuery, Step, conditions, quoted_ids, workflow_type_for,
};
use crate::amperity::Principal;
use crate::amperity::wire::{RunRequest, Workflow};
use crate::bounded::cut;
use crate::crd::{Phase, StopReason};

/// The longest resolve-start answer recorded in status.
const MAX_RESOLUTION_BYTES: usize = 300;

/// What a search tells about the lost start.
pub(super) enum Judgement {
    /// One run that can only be this resource's.
    Certain(Box<Workflow>),
    /// Nothing certain: the candidates (maybe none), and why none is certain.
    Uncertain {
        candidates: Vec<String>,
        why: String,
    },
}

/// A range bound as the API's `WorkflowRunRequest` wants it: an RFC 3339
/// date-time. A bare date from the spec means that day's midnight UTC, and a time
/// without seconds gets them.
pub fn normalise_range_bound(bound: &str) -> String {
    crate::run::validate::parse_range_bound(bound)
        .map(|t| t.to_string())
        .unwrap_or_else(|| bound.to_string())
}

impl Step<'_> {
    /// Not started yet: follow an existing run, give up, wait for a retry, or start.
    pub(super) fn pending(&mut self) -> Action {
        let spec = &self.run.spec;
        if self.status.phase.is_none() {
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
        }
        if spec.stop {
            return self.finish_canceled_before_start();
        }
        // A scheduled run is not started late: past its schedule's starting
        // deadline, the first start is not sent (retries of an attempt may go on).
        if self.status.attempts.is_empty()
            && self.status.started_at.is_none()
            && let Some(deadline) = self.start_deadline()
            && self.now > deadline
        {
            return self.finish_start_deadline_passed(deadline);
        }
        // The timeout bounds the whole life from the first start attempt, retries
        // included: a retry that would begin past it does not begin.
        if self.wanted_stop() == Some(StopReason::Timeout) {
            return self.finish_timed_out_before_start();
        }
        if let Some(wait) = self.retry_wait() {
            return Action::Requeue(wait);
        }
        self.begin_start()
    }

    pub(super) fn begin_start(&mut self) -> Action {
        let spec = &self.run.spec;
        self.status.started_at = Some(Time(self.now));
        if self.status.first_attempt_at.is_none() {
            self.status.first_attempt_at = Some(Time(self.now));
        }
        self.status.search_started_at = None;
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
            range_from: spec.range.as_ref().map(|r| normalise_range_bound(&r.from)),
            range_to: spec
                .range
                .as_ref()
                .and_then(|r| r.to.as_deref())
                .map(normalise_range_bound),
        })
    }

    pub(super) fn started(&mut self, result: Result<Workflow, ApiFailure>) -> Action {
        self.note_throttling(result.as_ref().err());
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
                        format!(
                            "the start request's outcome is unknown ({}); looking for the run before anything else",
                            f.message
                        ),
                    ));
                    Action::Requeue(f.retry_after.unwrap_or(self.settings.quick_poll))
                }
                // Amperity never got it (or refused it unprocessed): nothing was started.
                FailureKind::Transient => {
                    self.status.started_at = None;
                    self.set(Outcome::in_flight(
                        Phase::Pending,
                        "StartDeferred",
                        format!(
                            "the start did not reach Amperity ({}); trying again",
                            f.message
                        ),
                    ));
                    Action::Requeue(f.retry_after.unwrap_or(self.settings.quick_poll))
                }
                FailureKind::Auth => {
                    self.status.started_at = None;
                    self.auth_failed(Phase::Pending, &f.message)
                }
                FailureKind::NotAllowed => self.not_allowed(f.message),
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

    /// A start was recorded but its answer never reached us: look for the run
    /// before even thinking of starting another.
    pub(super) fn starting_without_answer(&mut self) -> Action {
        if conditions::stalled_reason(&self.status) == Some("StartUnconfirmed") {
            if let Some(reason) = self.wanted_stop()
                && !self.annotation_says_adopt()
            {
                return self.give_up_unconfirmed_start(reason);
            }
            return self.resolve_start();
        }
        Action::Search(self.search_query())
    }

    pub(super) fn search_query(&self) -> SearchQuery {
        SearchQuery {
            created_from: self.search_floor(),
            workflow_type: workflow_type_for(&self.run.spec.config_id).to_string(),
        }
    }

    /// The earliest creation time a run of this start can have, in Amperity's
    /// clock: the intent less a small tolerance once an answer told how far its
    /// clock is from ours; until then, the intent less the wide skew.
    fn search_floor(&self) -> Timestamp {
        let (floor, _) = self.made_between_in_amperity(self.intent(), self.memory.amperity_clock);
        floor
    }

    fn intent(&self) -> Timestamp {
        self.status
            .started_at
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(self.now)
    }

    /// When a run started by an intent recorded at `intent` can have been created:
    /// from a clock skew before it to a request's lifetime and a skew after it.
    fn made_between(&self, intent: Timestamp) -> (Timestamp, Timestamp) {
        let skew = SignedDuration::try_from(self.settings.start_search_skew).unwrap_or_default();
        let window = SignedDuration::try_from(self.settings.start_request_window)
            .unwrap_or_default()
            .saturating_add(skew);
        (
            intent.saturating_sub(skew).unwrap_or(Timestamp::MIN),
            intent.saturating_add(window).unwrap_or(Timestamp::MAX),
        )
    }

    pub(super) fn searched(&mut self, search: Search) -> Action {
        self.note_throttling(search.result.as_ref().err());
        let runs = match search.result {
            Ok(runs) => runs,
            Err(f) if f.kind == FailureKind::Auth => {
                return self.auth_failed(Phase::Starting, &f.message);
            }
            Err(f) if f.kind == FailureKind::NotAllowed => return self.not_allowed(f.message),
            // A failed search tells nothing: the search window has not begun.
            Err(f) => {
                return Action::Requeue(f.retry_after.unwrap_or(self.settings.quick_poll));
            }
        };
        // The window runs from the first answer, not from the intent: an outage
        // before it must not count as time spent looking.
        let first = self
            .status
            .search_started_at
            .get_or_insert(Time(self.now))
            .0;
        match self.judge(
            &runs,
            search.principal.as_ref(),
            &search.claims,
            search.clock_offset,
            search.config_name.as_deref(),
        ) {
            Judgement::Certain(w) => {
                let message = format!(
                    "the start's answer was lost; found and adopted {} (the only run this credential started since)",
                    w.id
                );
                let action = self.adopt(w.id.clone(), "Adopted", &message);
                self.observe(&w);
                if w.has_ended() {
                    return self.ended(&w);
                }
                action
            }
            Judgement::Uncertain { candidates, why } => {
                let waited = self.since(first);
                if waited < self.settings.start_settle {
                    // A new run can take a while to be listed: look again.
                    if self.status.conditions.is_empty()
                        || self
                            .reconciling_message()
                            .is_none_or(|m| !m.starts_with("looking"))
                    {
                        self.set(Outcome::in_flight(
                            Phase::Starting,
                            "StartOutcomeUnknown",
                            "looking for the run the lost start may have created".to_string(),
                        ));
                    }
                    return Action::Requeue(
                        self.settings
                            .quick_poll
                            .min(self.settings.start_settle - waited),
                    );
                }
                self.unconfirmed(&candidates, &why)
            }
        }
    }

    /// When a run made by the start recorded at `intent` (our clock) can have been
    /// created, in Amperity's clock: with its offset known, from the intent less a
    /// small tolerance (the `Date` header's second, the request's latency, skew
    /// between replicas) to a request's lifetime after it; without, the wide skew.
    fn made_between_in_amperity(
        &self,
        intent: Timestamp,
        clock: Option<SignedDuration>,
    ) -> (Timestamp, Timestamp) {
        let Some(offset) = clock else {
            return self.made_between(intent);
        };
        let tolerance =
            SignedDuration::try_from(self.settings.amperity_clock_tolerance).unwrap_or_default();
        let window = SignedDuration::try_from(self.settings.start_request_window)
            .unwrap_or_default()
            .saturating_add(tolerance);
        let at = intent.saturating_add(offset).unwrap_or(intent);
        (
            at.saturating_sub(tolerance).unwrap_or(Timestamp::MIN),
            at.saturating_add(window).unwrap_or(Timestamp::MAX),
        )
    }

    /// Which of `runs` can be this resource's lost start, and whether one is certain.
    /// `clock`: Amperity's clock less ours, when its answer said; `name`: the
    /// workflow name this config id's runs carry, once learned.
    pub(super) fn judge(
        &self,
        runs: &[Workflow],
        principal: Option<&Principal>,
        claims: &Claims,
        clock: Option<SignedDuration>,
        name: Option<&str>,
    ) -> Judgement {
        let wanted_type = workflow_type_for(&self.run.spec.config_id);
        let (floor, ceiling) = self.made_between_in_amperity(self.intent(), clock);
        let own: Vec<&str> = self
            .status
            .attempts
            .iter()
            .map(|a| a.workflow_id.as_str())
            .collect();
        let time = |t: Option<&str>| t.and_then(|c| c.parse::<Timestamp>().ok());
        let created = |w: &Workflow| time(w.created_at.as_deref());
        let candidates: Vec<&Workflow> = runs
            .iter()
            .filter(|w| w.workflow_type.is_empty() || w.workflow_type == wanted_type)
            // Another workflow than the one this config id starts.
            .filter(|w| name.is_none_or(|n| w.name.is_empty() || w.name == n))
            .filter(|w| !own.contains(&w.id.as_str()))
            .filter(|w| !claims.tracked.contains(&w.id))
            // Made by this start: created between the intent (less a tolerance) and
            // the end of its request. A run with no readable time may be.
            .filter(|w| created(w).is_none_or(|c| c >= floor && c <= ceiling))
            // A run that ended before the intent was written is someone else's.
            .filter(|w| time(w.ended_at.as_deref()).is_none_or(|e| e >= floor))
            // A run that names another principal was started by someone else.
            .filter(|w| principal.is_none_or(|p| !p.not_started(w)))
            .collect();
        // Another resource's unresolved start of the same kind could have made a run
        // created while its own request could have been in flight.
        let contested = |w: &Workflow| {
            claims.other_starts.iter().any(|t| {
                let (from, to) = self.made_between_in_amperity(*t, clock);
                created(w).is_none_or(|c| c >= from && c <= to)
            })
        };
        let ids = candidates.iter().map(|w| w.id.clone()).collect();
        let why = match (candidates.as_slice(), principal) {
            (_, None) => {
                "this credential's principal is not known yet (add key \"principal\" to the Secret to name it), so no run can be confirmed as this resource's"
            }
            ([], _) => "no run was found",
            (_, _) if !claims.complete => {
                "the other resources could not all be read, so it cannot be ruled out that the run is another's"
            }
            ([only], _) if contested(only) => {
                "another resource's start of the same kind, at about the same time, is unresolved too, and the run found could be its"
            }
            ([only], Some(p)) if p.started(only) => {
                return Judgement::Certain(Box::new((*only).clone()));
            }
            ([_], _) => "the run found does not name its principal",
            _ => "more than one run could be it",
        };
        Judgement::Uncertain {
            candidates: ids,
            why: why.to_string(),
        }
    }

    /// The search ended without certainty: a person decides, unless the run was
    /// to be stopped anyway.
    fn unconfirmed(&mut self, candidates: &[String], why: &str) -> Action {
        if let Some(reason) = self.wanted_stop() {
            return self.give_up_unconfirmed_start_with(reason, candidates);
        }
        let message = format!(
            "a start was sent at {} but its answer was lost, and {}: {why}; to continue, annotate this resource with \
             {RESOLVE_START_ANNOTATION}='adopt <workflow id>' to follow a run, or {RESOLVE_START_ANNOTATION}='retry {}' to start a new one",
            self.intent_time(),
            found(candidates, workflow_type_for(&self.run.spec.config_id)),
            self.stall_token(),
        );
        self.stall(Phase::Starting, "StartUnconfirmed", message);
        self.resolve_start()
    }

    pub(super) fn give_up_unconfirmed_start(&mut self, reason: StopReason) -> Action {
        self.give_up_unconfirmed_start_with(reason, &[])
    }

    /// `spec.stop` or the timeout came while no run could be confirmed: nothing
    /// can be stopped, so the resource ends, saying what may be left running.
    fn give_up_unconfirmed_start_with(
        &mut self,
        reason: StopReason,
        candidates: &[String],
    ) -> Action {
        let phase = if reason == StopReason::Timeout {
            Phase::TimedOut
        } else {
            Phase::Canceled
        };
        let why = if reason == StopReason::Timeout {
            "the timeout passed"
        } else {
            "spec.stop was set"
        };
        let left = if candidates.is_empty() {
            "if a run was started, find it in Amperity and stop it there".to_string()
        } else {
            format!(
                "if one of these is this resource's run, stop it in Amperity: {}",
                quoted_ids(candidates.iter().map(String::as_str))
            )
        };
        let message = format!(
            "{why} while the outcome of the start sent at {} was unknown; no run could be confirmed as this resource's, so none was stopped; {left}",
            self.intent_time()
        );
        self.finish(phase, "StopUnconfirmed", message);
        self.finished_next()
    }

    fn intent_time(&self) -> String {
        self.status
            .started_at
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "an unknown time".to_string())
    }

    /// What a `retry` answer must repeat: a digest of the resource's uid and the
    /// time of the intent whose outcome is unknown, which only the stalled status
    /// shows. An annotation set in advance (on a new resource, or copied from a
    /// template) cannot know it, and each stall has its own, so `retry` can answer
    /// a later stall again. (FNV-1a: stable across versions and restarts.)
    fn stall_token(&self) -> String {
        let uid = self.run.metadata.uid.as_deref().unwrap_or_default();
        let at = self
            .status
            .started_at
            .as_ref()
            .map_or(0, |t| t.0.as_nanosecond());
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in uid.bytes().chain(at.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{:08x}", h >> 32)
    }

    fn resolve_start_answer(&self) -> Option<String> {
        self.run
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESOLVE_START_ANNOTATION))
            .map(|a| cut(a.trim(), MAX_RESOLUTION_BYTES))
            .filter(|a| self.status.start_resolution.as_deref() != Some(a.as_str()))
    }

    fn annotation_says_adopt(&self) -> bool {
        self.resolve_start_answer()
            .is_some_and(|a| a.starts_with("adopt "))
    }

    /// Acts once on `amperity.dev/resolve-start`, recording what it did.
    fn resolve_start(&mut self) -> Action {
        let Some(answer) = self.resolve_start_answer() else {
            return Action::AwaitChange;
        };
        let mut words = answer.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("adopt"), Some(id), None) if is_plausible_id(id) => {
                let id = id.to_string();
                self.status.start_resolution = Some(answer.clone());
                self.adopt(
                    id.clone(),
                    "StartResolved",
                    &format!("adopted {id} as told by the {RESOLVE_START_ANNOTATION} annotation"),
                )
            }
            (Some("retry"), Some(token), None) if token == self.stall_token() => {
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
                    "the {RESOLVE_START_ANNOTATION} annotation {answer:?} is not understood, or answers an earlier stall: use 'adopt <workflow id>' or 'retry {}'",
                    self.stall_token()
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

    pub(super) fn finish_canceled_before_start(&mut self) -> Action {
        self.finish(
            Phase::Canceled,
            "Canceled",
            "spec.stop was set before the run started; nothing was started",
        );
        self.finished_next()
    }

    /// The schedule's starting deadline, when the run has one that parses.
    fn start_deadline(&self) -> Option<Timestamp> {
        self.run
            .metadata
            .annotations
            .as_ref()?
            .get(super::START_DEADLINE_ANNOTATION)?
            .trim()
            .parse::<Timestamp>()
            .ok()
    }

    fn finish_start_deadline_passed(&mut self, deadline: Timestamp) -> Action {
        let message = format!(
            "not started by {deadline} (annotation {}, from the schedule's startingDeadlineSeconds): a scheduled run is not started late; nothing was started",
            super::START_DEADLINE_ANNOTATION
        );
        self.finish(Phase::TimedOut, "StartingDeadlineExceeded", message);
        self.finished_next()
    }

    pub(super) fn finish_timed_out_before_start(&mut self) -> Action {
        let message = format!(
            "spec.timeout ({}) passed before attempt {} could start; nothing more was started",
            self.run.spec.timeout.as_deref().unwrap_or("?"),
            self.status.attempts.len() + 1
        );
        self.finish(Phase::TimedOut, "TimedOut", message);
        self.finished_next()
    }
}

/// "no matching run was found" or "found 2 matching runs since then (a, b)".
fn found(candidates: &[String], wanted_type: &str) -> String {
    match candidates.len() {
        0 => format!("no {wanted_type} run was found since then"),
        n => format!(
            "{n} {wanted_type} run(s) created since then could be it ({})",
            quoted_ids(candidates.iter().map(String::as_str))
        ),
    }
}

/// An id a person may name: what Amperity's ids look like, nothing that could be
/// a path or a URL.
fn is_plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
