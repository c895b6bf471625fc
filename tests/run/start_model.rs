//! A model-based test of the one-run promise: the real decisions and driver against
//! a model of Amperity that answers each call with any outcome (success, 4xx, 5xx,
//! a timeout after or before creating the run, a lost answer, 429, a refused
//! connection), a list that lags, runs of other resources and other principals in
//! every search, credential reads that fail, an operator that dies at any status
//! write and restarts with nothing but the persisted status, and a clock that jumps.
//!
//! Invariants, for every case:
//! - no more runs are created for a resource than `retry.limit + 1` attempts allow;
//! - a run another resource follows, or another principal started, is never adopted;
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
    ]
}

#[derive(Clone, Debug)]
struct ModelRun {
    id: String,
    /// The resource that created it ("" for runs of others); the operator never sees this.
    owner: &'static str,
    principal: &'static str,
    created_at: Timestamp,
    state: &'static str,
    error: Option<&'static str>,
}

impl ModelRun {
    fn workflow(&self) -> Workflow {
        let mut w = json!({"id": self.id, "state": self.state, "type": "campaign.send",
            "name": "Spring sale", "tenant": "socktown", "created_at": self.created_at.to_string(),
            "principal_id": self.principal, "task_instances": []});
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
        any::<bool>(),
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
                timeout,
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
    /// Runs of another resource, which it follows: the operator's claims.
    others_tracked: BTreeSet<String>,
}

impl World {
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
        Outcome::Ok => unreachable!(),
    }
}

fn reply<T>(body: T) -> Reply<T> {
    Reply {
        body,
        deprecation: None,
        status: 200,
        date: None,
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

    fn reserve_turn(&self, _target: &Target, _urgent: bool) -> Turn {
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
            created_at: w.now,
            state: "scheduled",
            error: None,
        };
        w.runs.push(run.clone());
        match o {
            Outcome::Ok => Ok(reply(run.workflow())),
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
        }
        Ok(reply(run.workflow()))
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
        match o {
            Outcome::Ok => Ok(reply(run.workflow())),
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
        let visible_until = w.now - SignedDuration::from_secs(lag);
        Ok(reply(
            w.runs
                .iter()
                .filter(|r| r.created_at >= from && r.created_at <= visible_until)
                .map(ModelRun::workflow)
                .collect(),
        ))
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
    // Runs of others, created a minute after the start is decided, all of the same
    // type: one another resource follows (same principal), one a person started.
    let others = vec![
        ModelRun {
            id: "wf-b-tracked".into(),
            owner: "",
            principal: ME,
            created_at: t0 + SignedDuration::from_secs(1),
            state: "running",
            error: None,
        },
        ModelRun {
            id: "wf-ui".into(),
            owner: "",
            principal: THEM,
            created_at: t0 + SignedDuration::from_secs(2),
            state: "running",
            error: None,
        },
    ];
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
            model.world.lock().unwrap().learned = None;
        }
        let wait = match &result {
            Ok(Action::Requeue(d)) => d.as_secs().min(3600),
            _ => 0,
        };
        {
            let mut w = model.world.lock().unwrap();
            w.now += SignedDuration::from_secs((wait.max(1) + if calm { 0 } else { jump }) as i64);
        }
        check_invariants(&model, &s)?;
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
    if !status.phase.is_some_and(|p| p.is_finished()) {
        let reason = conditions::stalled_reason(&status).unwrap_or("");
        if reason.is_empty() {
            return Err(format!("stopped without an end or a reason: {status:?}"));
        }
        STALLED.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn check_invariants(model: &Model, s: &Scenario) -> Result<(), String> {
    let w = model.world.lock().unwrap();
    let created = w.runs.iter().filter(|r| r.owner == model.resource).count();
    let allowed = s.retry_limit as usize + 1;
    if created > allowed {
        return Err(format!(
            "{created} runs created for one resource, {allowed} attempts allowed: {:?}",
            w.runs
        ));
    }
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
                    "adopted {id}, a run of {}",
                    if run.principal == ME {
                        "another resource"
                    } else {
                        "another principal"
                    }
                ));
            }
        }
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
        "model: {} cases ({} steps) of starts, polls, stops and searches under faults, crashes, \
         failed Secret reads and clock jumps in {:.1}s; {} ended waiting for a person",
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
