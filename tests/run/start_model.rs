//! A model-based test of the one-run promise: the real decisions and driver against
//! a model of Amperity that answers each call with any outcome (success, 4xx, 5xx,
//! a timeout after or before creating the run, a lost answer, 429, a refused
//! connection), a list that lags, runs of other resources and other principals in
//! every search, credential reads that fail, an operator that dies at any status
//! write and restarts with nothing but the persisted status, and a clock that jumps.
//!
//! Foreign runs of the same type in every search: one another resource follows,
//! one a person started, runs of a deleted resource (running and ended, created
//! shortly before the start, same principal and name), and a run of another key
//! with the same display name. Amperity's clock is off from the operator's by up
//! to five minutes (its `Date` header says by how much); errors raised before a
//! request was sent are among the outcomes.
//!
//! Invariants, for every case:
//! - every run Amperity created for the resource is, once it settles, the run it
//!   follows, a recorded earlier attempt, or a candidate it listed for a person (or
//!   its latest attempt's, when it ends asking a person about that attempt);
//! - a run created for another (another resource, a deleted one, a person,
//!   another key) is never followed, at any step;
//! - once the faults stop, the resource ends in a final phase, or stalls with a
//!   reason for a person;
//! - nothing panics.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use amperity_operator::amperity::credentials::Access;
use amperity_operator::amperity::wire::{RunRequest, Workflow};
use amperity_operator::amperity::{
    AllowList, ClientError, Credentials, DeprecationNotice, ListQuery, Principal, Reply,
    SecretString, Target, Turn,
};
use amperity_operator::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus};
use amperity_operator::run::decide::{Action, Claims, Event, Settings, conditions};
use amperity_operator::run::driver::{Api, CredentialsProblem, Defaults, Driver, Host, RunMemory};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

const ME: &str = "api-key|me";
const THEM: &str = "person|alice";
/// Another key, with the same display name as ours.
const NAMESAKE: &str = "api-key|namesake";
const DISPLAY_NAME: &str = "Automated workflow";

/// How Amperity answers one call.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    /// 400: refused, nothing done.
    Rejected,
    /// 429: nothing done.
    Throttled,
    /// 500 after doing it (for a start: the run exists, the answer is lost).
    ServerErrorAfter,
    /// No answer in time, after doing it.
    TimeoutAfter,
    /// No answer in time, before doing anything.
    TimeoutBefore,
    /// The connection was refused: nothing was sent.
    Refused,
    /// The request could not be built (a header it cannot carry): nothing was sent.
    Unsent,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Ok),
        1 => Just(Outcome::Rejected),
        1 => Just(Outcome::Throttled),
        1 => Just(Outcome::ServerErrorAfter),
        1 => Just(Outcome::TimeoutAfter),
        1 => Just(Outcome::TimeoutBefore),
        1 => Just(Outcome::Refused),
        1 => Just(Outcome::Unsent),
    ]
}

#[derive(Clone, Debug)]
struct ModelRun {
    id: String,
    /// The resource that created it ("" for runs of others); the operator never sees this.
    owner: &'static str,
    principal: &'static str,
    /// Amperity's clock.
    created_at: Timestamp,
    ended_at: Option<Timestamp>,
    state: &'static str,
    error: Option<&'static str>,
}

impl ModelRun {
    fn workflow(&self) -> Workflow {
        let mut w = json!({"id": self.id, "state": self.state, "type": "campaign.send",
            "name": "Spring sale", "tenant": "socktown", "created_at": self.created_at.to_string(),
            "principal_id": self.principal, "principal_name": DISPLAY_NAME, "task_instances": []});
        if let Some(e) = self.ended_at {
            w["ended_at"] = json!(e.to_string());
        }
        if let Some(attribution) = self.error {
            w["error"] = json!({"type": "t", "message": "it broke", "attribution": attribution});
        }
        serde_json::from_value(w).unwrap()
    }

    fn ended(&self) -> bool {
        matches!(self.state, "succeeded" | "failed" | "canceled")
    }
}

/// A scenario drawn by proptest.
#[derive(Clone, Debug)]
struct Scenario {
    outcomes: Vec<Outcome>,
    /// Run endings drawn in turn: 0 still running, 1 succeeded, 2 customer failure, 3 platform failure.
    endings: Vec<u8>,
    /// Status writes that "kill" the operator (by their number).
    crashes: BTreeSet<usize>,
    /// Credential reads that fail (by their number).
    secret_hiccups: BTreeSet<usize>,
    clock_jumps: Vec<u64>,
    list_lag_secs: i64,
    principal_in_secret: bool,
    retry_limit: u32,
    stop_at_step: Option<usize>,
    timeout: bool,
    /// Amperity's clock less the operator's, in seconds.
    clock_offset_secs: i64,
    /// Which foreign runs exist (a bit each).
    foreign: u8,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec(outcome(), 1..40),
        proptest::collection::vec(0u8..4, 1..20),
        proptest::collection::btree_set(1usize..40, 0..6),
        proptest::collection::btree_set(1usize..40, 0..6),
        proptest::collection::vec(prop_oneof![3 => 0u64..20, 1 => 0u64..900], 1..20),
        prop_oneof![Just(0i64), 0i64..600],
        any::<bool>(),
        0u32..3,
        proptest::option::of(0usize..30),
        (any::<bool>(), -300i64..300, any::<u8>()),
    )
        .prop_map(
            |(
                outcomes,
                endings,
                crashes,
                secret_hiccups,
                clock_jumps,
                lag,
                principal,
                retry,
                stop,
                (timeout, clock_offset_secs, foreign),
            )| {
                Scenario {
                    outcomes,
                    endings,
                    crashes,
                    secret_hiccups,
                    clock_jumps,
                    list_lag_secs: lag,
                    principal_in_secret: principal,
                    retry_limit: retry,
                    stop_at_step: stop,
                    timeout,
                    clock_offset_secs,
                    foreign,
                }
            },
        )
}

/// The model's shared state: Amperity's runs, the clock, what was persisted.
struct World {
    scenario: Scenario,
    /// Faults stop once the test lets things settle.
    calm: bool,
    now: Timestamp,
    runs: Vec<ModelRun>,
    calls: usize,
    endings_drawn: usize,
    writes: usize,
    credential_reads: usize,
    persisted: Option<AmperityWorkflowRunStatus>,
    learned: Option<Principal>,
    learned_name: Option<String>,
    /// Run ids the resource listed for a person (in a Stalled or final message).
    listed: BTreeSet<String>,
    /// Runs of another resource, which it follows: the operator's claims.
    others_tracked: BTreeSet<String>,
}

impl World {
    /// Amperity's clock now.
    fn amperity_now(&self) -> Timestamp {
        self.now + SignedDuration::from_secs(self.scenario.clock_offset_secs)
    }

    fn next_outcome(&mut self) -> Outcome {
        if self.calm {
            return Outcome::Ok;
        }
        let o = self.scenario.outcomes[self.calls % self.scenario.outcomes.len()];
        self.calls += 1;
        o
    }

    fn next_ending(&mut self) -> u8 {
        let e = self.scenario.endings[self.endings_drawn % self.scenario.endings.len()];
        self.endings_drawn += 1;
        if self.calm { e.max(1) } else { e }
    }
}

struct Model {
    world: Mutex<World>,
    allow: AllowList,
    resource: &'static str,
}

fn error_for(outcome: Outcome) -> ClientError {
    match outcome {
        Outcome::Rejected => ClientError::Rejected {
            status: 400,
            message: "refused".into(),
        },
        Outcome::Throttled => ClientError::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(1)),
        },
        Outcome::ServerErrorAfter => ClientError::Server {
            status: 500,
            message: "oops".into(),
            retry_after: None,
        },
        Outcome::TimeoutAfter | Outcome::TimeoutBefore => {
            ClientError::Timeout(Duration::from_secs(30))
        }
        Outcome::Refused => ClientError::Connect("connection refused".into()),
        Outcome::Unsent => ClientError::Unsent("builder error".into()),
        Outcome::Ok => unreachable!(),
    }
}

fn reply<T>(body: T, w: &World) -> Reply<T> {
    Reply {
        body,
        deprecation: None,
        status: 200,
        date: Some(w.amperity_now()),
    }
}

/// Whether the call happened at Amperity (for calls with effects).
fn took_effect(o: Outcome) -> bool {
    matches!(
        o,
        Outcome::Ok | Outcome::ServerErrorAfter | Outcome::TimeoutAfter
    )
}

impl Api for Model {
    fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    fn reserve_turn(&self, _target: &Target, _urgent: bool, _lane: &str) -> Turn {
        Turn::due_now()
    }

    async fn start(
        &self,
        _t: &Target,
        _c: &Credentials,
        _r: &RunRequest,
        _turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        let mut w = self.world.lock().unwrap();
        let o = w.next_outcome();
        if !took_effect(o) {
            return Err(error_for(o));
        }
        let run = ModelRun {
            id: format!("wf-{}-{}", self.resource, w.runs.len()),
            owner: self.resource,
            principal: ME,
            created_at: w.amperity_now(),
            ended_at: None,
            state: "scheduled",
            error: None,
        };
        w.runs.push(run.clone());
        match o {
            Outcome::Ok => Ok(reply(run.workflow(), &w)),
            other => Err(error_for(other)),
        }
    }

    async fn get(
        &self,
        _t: &Target,
        _c: &Credentials,
        id: &str,
        _turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        let mut w = self.world.lock().unwrap();
        let o = w.next_outcome();
        if !matches!(o, Outcome::Ok) {
            return Err(error_for(o));
        }
        let ending = w.next_ending();
        let amperity_now = w.amperity_now();
        let Some(run) = w.runs.iter_mut().find(|r| r.id == id) else {
            return Err(ClientError::NotFound {
                message: "no such run".into(),
            });
        };
        if !run.ended() {
            run.state = match (run.state, ending) {
                ("stopping", _) => "canceled",
                (_, 0) => "running",
                (_, 1) => "succeeded",
                _ => "failed",
            };
            if run.state == "failed" {
                run.error = Some(if ending == 3 { "platform" } else { "customer" });
            }
            if run.ended() {
                run.ended_at = Some(amperity_now);
            }
        }
        let body = run.workflow();
        Ok(reply(body, &w))
    }

    async fn stop(
        &self,
        _t: &Target,
        _c: &Credentials,
        id: &str,
        _turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        let mut w = self.world.lock().unwrap();
        let o = w.next_outcome();
        let Some(run) = w.runs.iter_mut().find(|r| r.id == id) else {
            return Err(ClientError::NotFound {
                message: "no such run".into(),
            });
        };
        if run.ended() {
            // Amperity stops only running workflows.
            return Err(error_for(Outcome::Rejected));
        }
        if took_effect(o) {
            run.state = "stopping";
        }
        let body = run.workflow();
        match o {
            Outcome::Ok => Ok(reply(body, &w)),
            other => Err(error_for(other)),
        }
    }

    async fn list(
        &self,
        _t: &Target,
        _c: &Credentials,
        q: &ListQuery,
        _turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        let mut w = self.world.lock().unwrap();
        let o = w.next_outcome();
        if !matches!(o, Outcome::Ok) {
            return Err(error_for(o));
        }
        let from: Timestamp = q.created_from.as_deref().unwrap().parse().unwrap();
        let lag = if w.calm { 0 } else { w.scenario.list_lag_secs };
        // The query's bound is in the operator's clock; Amperity applies it to its own.
        let visible_until = w.amperity_now() - SignedDuration::from_secs(lag);
        let runs = w
            .runs
            .iter()
            .filter(|r| r.created_at >= from && r.created_at <= visible_until)
            .map(ModelRun::workflow)
            .collect();
        Ok(reply(runs, &w))
    }

    fn forget_token(&self, _t: &Target, _c: &Credentials) {}

    fn learned_principal(&self, _t: &Target, _c: &Credentials) -> Option<Principal> {
        self.world.lock().unwrap().learned.clone()
    }

    fn learn_principal(&self, _t: &Target, _c: &Credentials, p: Principal) {
        self.world.lock().unwrap().learned = Some(p);
    }

    fn learned_name(&self, _t: &Target, _config_id: &str) -> Option<String> {
        self.world.lock().unwrap().learned_name.clone()
    }

    fn learn_name(&self, _t: &Target, _config_id: &str, name: &str) {
        self.world.lock().unwrap().learned_name = Some(name.to_string());
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the operator died before this write")]
struct Died;

impl Host for Model {
    type Error = Died;

    async fn credentials(&self, _run: &AmperityWorkflowRun) -> Result<Access, CredentialsProblem> {
        let mut w = self.world.lock().unwrap();
        w.credential_reads += 1;
        if !w.calm && w.scenario.secret_hiccups.contains(&w.credential_reads) {
            return Err(CredentialsProblem {
                reason: "SecretUnreadable".into(),
                message: "the Secret could not be read (HTTP 429)".into(),
            });
        }
        Ok(Access {
            credentials: Credentials::Token(SecretString::new("t")),
            principal: w.scenario.principal_in_secret.then(|| Principal::given(ME)),
        })
    }

    async fn save_status(
        &self,
        _run: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
        _exclusive: bool,
    ) -> Result<Option<String>, Died> {
        let mut w = self.world.lock().unwrap();
        w.writes += 1;
        if !w.calm && w.scenario.crashes.contains(&w.writes) {
            return Err(Died);
        }
        w.persisted = Some(status.clone());
        Ok(None)
    }

    async fn publish(&self, _run: &AmperityWorkflowRun, _event: &Event) {}

    async fn deprecation(&self, _run: &AmperityWorkflowRun, _n: &DeprecationNotice) {}

    async fn claims(
        &self,
        _run: &AmperityWorkflowRun,
        candidates: &[String],
        _principal: Option<&Principal>,
    ) -> Claims {
        let w = self.world.lock().unwrap();
        Claims {
            tracked: candidates
                .iter()
                .filter(|id| w.others_tracked.contains(*id))
                .cloned()
                .collect(),
            ..Claims::alone()
        }
    }

    fn poll_failed(&self, _run: &AmperityWorkflowRun) {}

    fn now(&self) -> Timestamp {
        self.world.lock().unwrap().now
    }
}

static CASES: AtomicUsize = AtomicUsize::new(0);
static STEPS: AtomicUsize = AtomicUsize::new(0);
static STALLED: AtomicUsize = AtomicUsize::new(0);

fn resource(s: &Scenario) -> AmperityWorkflowRun {
    let mut spec = json!({"tenant": "socktown", "endpoint": "https://socktown.amperity.com/api",
        "tokenSecretRef": {"name": "s"}, "configId": "cc-spring-sale",
        "retry": {"limit": s.retry_limit}});
    if s.timeout {
        spec["timeout"] = json!("2h");
    }
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": "a", "namespace": "n", "generation": 1}, "spec": spec
    }))
    .unwrap()
}

/// Drives one scenario to its end; returns a violated invariant, if any.
async fn play(s: Scenario) -> Result<(), String> {
    let t0: Timestamp = "2026-03-01T09:00:00Z".parse().unwrap();
    // Runs of others, all of the same type, in Amperity's clock: one another
    // resource follows (same principal), one a person started, two of a deleted
    // resource (same principal and name, nobody claims them: one running, made
    // 100 s before the start; one made and ended before it), and one of another
    // key with our key's display name, made as the start is sent.
    let amperity = |secs: i64| t0 + SignedDuration::from_secs(secs + s.clock_offset_secs);
    let other = |id: &str, principal, created, ended: Option<i64>| ModelRun {
        id: id.into(),
        owner: "",
        principal,
        created_at: amperity(created),
        ended_at: ended.map(amperity),
        state: if ended.is_some() {
            "succeeded"
        } else {
            "running"
        },
        error: None,
    };
    let others: Vec<ModelRun> = [
        other("wf-b-tracked", ME, 1, None),
        other("wf-ui", THEM, 2, None),
        other("wf-deleted-running", ME, -100, None),
        other("wf-deleted-ended", ME, -110, Some(-20)),
        other("wf-namesake", NAMESAKE, 1, None),
    ]
    .into_iter()
    .enumerate()
    .filter(|(i, _)| s.foreign & (1 << i) != 0)
    .map(|(_, r)| r)
    .collect();
    let model = Model {
        world: Mutex::new(World {
            scenario: s.clone(),
            calm: false,
            now: t0,
            runs: others,
            calls: 0,
            endings_drawn: 0,
            writes: 0,
            credential_reads: 0,
            persisted: None,
            learned: None,
            learned_name: None,
            listed: BTreeSet::new(),
            others_tracked: ["wf-b-tracked".to_string()].into(),
        }),
        allow: AllowList::default(),
        resource: "a",
    };
    let settings = Settings::default();
    let defaults = Defaults::default();
    let mut spec_run = resource(&s);
    let mut memory = RunMemory::default();
    let mut settled = None;
    for step in 0..160 {
        STEPS.fetch_add(1, Ordering::Relaxed);
        let calm = step >= 80;
        model.world.lock().unwrap().calm = calm;
        if s.stop_at_step == Some(step) {
            spec_run.spec.stop = true;
        }
        let mut run = spec_run.clone();
        run.status = model.world.lock().unwrap().persisted.clone();
        let driver = Driver {
            host: &model,
            amperity: &model,
            defaults: &defaults,
            settings: &settings,
        };
        let result = driver.drive(&mut run, &mut memory).await;
        let jump = s.clock_jumps[step % s.clock_jumps.len()];
        let restart = result.is_err() || (!calm && jump.is_multiple_of(7));
        if restart {
            // A new process: nothing remembered, nothing learned.
            memory = RunMemory::default();
            let mut w = model.world.lock().unwrap();
            w.learned = None;
            w.learned_name = None;
        }
        let wait = match &result {
            Ok(Action::Requeue(d)) => d.as_secs().min(3600),
            _ => 0,
        };
        {
            let mut w = model.world.lock().unwrap();
            w.now += SignedDuration::from_secs((wait.max(1) + if calm { 0 } else { jump }) as i64);
        }
        note_listed(&model);
        check_invariants(&model)?;
        let status = model
            .world
            .lock()
            .unwrap()
            .persisted
            .clone()
            .unwrap_or_default();
        let finished = status.phase.is_some_and(|p| p.is_finished());
        let stalled = conditions::stalled_reason(&status).is_some();
        if calm
            && matches!(result, Ok(Action::AwaitChange | Action::Delete))
            && (finished || stalled)
        {
            settled = Some(status);
            break;
        }
    }
    let Some(status) = settled else {
        let w = model.world.lock().unwrap();
        return Err(format!("never settled: {:?}", w.persisted));
    };
    every_run_accounted_for(&model, &status)?;
    if !status.phase.is_some_and(|p| p.is_finished()) {
        let reason = conditions::stalled_reason(&status).unwrap_or("");
        if reason.is_empty() {
            return Err(format!("stopped without an end or a reason: {status:?}"));
        }
        STALLED.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Records the run ids the status's messages name (what a person was shown).
fn note_listed(model: &Model) {
    let mut w = model.world.lock().unwrap();
    let named: Vec<String> = {
        let Some(status) = &w.persisted else {
            return;
        };
        let shown: BTreeSet<&str> = status
            .conditions
            .iter()
            .flat_map(|c| {
                c.message
                    .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
            })
            .collect();
        w.runs
            .iter()
            .filter(|r| shown.contains(r.id.as_str()))
            .map(|r| r.id.clone())
            .collect()
    };
    w.listed.extend(named);
}

/// At every step: the resource follows only runs created for it.
fn check_invariants(model: &Model) -> Result<(), String> {
    let w = model.world.lock().unwrap();
    if let Some(status) = &w.persisted {
        let followed = status
            .workflow_id
            .iter()
            .chain(status.attempts.iter().map(|a| &a.workflow_id));
        for id in followed {
            let Some(run) = w.runs.iter().find(|r| &r.id == id) else {
                return Err(format!("follows {id}, which Amperity never had"));
            };
            if run.owner != model.resource {
                return Err(format!(
                    "adopted {id}, a run of {} (clock offset {} s)",
                    match run.principal {
                        ME => "another resource, or a deleted one",
                        NAMESAKE => "another key with the same display name",
                        _ => "another principal",
                    },
                    w.scenario.clock_offset_secs
                ));
            }
        }
    }
    Ok(())
}

/// Once settled: every run Amperity created for the resource is the run it
/// follows, a recorded earlier attempt, or a candidate it listed for a person; or,
/// when it ends asking a person about its latest attempt (StartUnconfirmed, or
/// StopUnconfirmed with nothing confirmed), that attempt's run.
fn every_run_accounted_for(
    model: &Model,
    status: &AmperityWorkflowRunStatus,
) -> Result<(), String> {
    let w = model.world.lock().unwrap();
    let followed: BTreeSet<&String> = status
        .workflow_id
        .iter()
        .chain(status.attempts.iter().map(|a| &a.workflow_id))
        .collect();
    let asking = status.workflow_id.is_none()
        && status
            .conditions
            .iter()
            .any(|c| c.reason == "StartUnconfirmed" || c.reason == "StopUnconfirmed");
    let mine: Vec<&ModelRun> = w
        .runs
        .iter()
        .filter(|r| r.owner == model.resource)
        .collect();
    let unaccounted: Vec<&String> = mine
        .iter()
        .map(|r| &r.id)
        .filter(|id| !followed.contains(id) && !w.listed.contains(*id))
        .collect();
    let allowed = usize::from(asking);
    let latest_only = unaccounted
        .iter()
        .all(|id| mine.last().is_some_and(|last| &&last.id == id));
    if unaccounted.len() > allowed || !latest_only {
        return Err(format!(
            "runs created for the resource but neither followed nor listed for a person: {unaccounted:?} \
             (follows {followed:?}, listed {:?}, runs {:?})",
            w.listed, w.runs
        ));
    }
    Ok(())
}

/// A plain `main` (harness = false), so that the figures are printed on every run.
fn main() -> std::process::ExitCode {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let name = "one_run_per_attempt_or_a_person_is_asked";
    if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
        return std::process::ExitCode::SUCCESS;
    }
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let result = runner.run(&scenario(), |s| {
        CASES.fetch_add(1, Ordering::Relaxed);
        let outcome = rt.block_on(play(s));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
        Ok(())
    });
    println!(
        "model: {} cases ({} steps) of starts, polls, stops and searches under faults (errors \
         before sending included), crashes, failed Secret reads, clock jumps, Amperity's clock \
         off by up to 5 minutes and foreign runs (deleted resources', another key's with our \
         display name, a person's, a followed one) in {:.1}s; {} ended waiting for a person",
        CASES.load(Ordering::Relaxed),
        STEPS.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        STALLED.load(Ordering::Relaxed)
    );
    match result {
        Ok(()) => {
            println!("test {name} ... ok");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("test {name} ... FAILED\n{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
