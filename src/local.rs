//! `amperity-operator local`: run one manifest to completion without a cluster,
//! through the same driver and decisions as the controller, printing progress.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use kube::ResourceExt;
use serde_json::Value;

use crate::amperity::credentials::Access;
use crate::amperity::{AmperityClient, Credentials, DeprecationNotice, SecretString};
use crate::cli::{LocalArgs, LocalOutput};
use crate::cluster::operator::{client_config, defaults};
use crate::crd::schedule::AmperityWorkflowSchedule;
use crate::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus, Phase};
use crate::run::controller::MAX_REQUEUE;
use crate::run::decide::{Action, Claims, Event, EventType, Settings, conditions};
use crate::run::driver::{CredentialsProblem, Driver, Host, RunMemory};
use crate::run::validate::{FieldError, validate_spec_value};
use crate::sim;

mod connection;

/// Exit codes of `local`, documented in the README.
pub mod exit {
    pub const SUCCEEDED: u8 = 0;
    pub const FAILED: u8 = 1;
    /// 2 is clap's usage error.
    pub const INVALID_MANIFEST: u8 = 3;
    pub const AUTH_FAILED: u8 = 4;
    pub const CANCELED: u8 = 5;
    pub const TIMED_OUT: u8 = 6;
    /// The run cannot go on without a person (e.g. an unconfirmed start) or local I/O failed.
    pub const STALLED: u8 = 7;
}

const SIMULATOR_TOKEN: &str = "sim-token";

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest for local:\n{}", list(.problems))]
    Invalid {
        path: String,
        problems: Vec<FieldError>,
    },
    #[error("no Amperity token: set AMPERITY_TOKEN, pass --token-file, or use --simulator")]
    NoToken,
    #[error("could not start the embedded simulator: {0}")]
    Simulator(#[source] std::io::Error),
    #[error("invalid Amperity client settings: {0}")]
    Client(String),
}

impl LocalError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LocalError::Invalid { .. } | LocalError::Read { .. } => exit::INVALID_MANIFEST,
            LocalError::NoToken => exit::AUTH_FAILED,
            LocalError::Simulator(_) | LocalError::Client(_) => exit::STALLED,
        }
    }
}

fn list(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and checks a manifest, reporting every problem at once with its field path.
pub fn load_manifest(path: &Path) -> Result<Manifest, LocalError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LocalError::Read {
        path: shown.clone(),
        source,
    })?;
    let invalid = |problems| LocalError::Invalid {
        path: shown.clone(),
        problems,
    };
    // A connection may sit beside the run (connection.rs).
    let (text, connections) = connection::split(&text).map_err(invalid)?;
    let mut manifest = parse_manifest(&text).map_err(invalid)?;
    connection::apply(&mut manifest.run, &connections).map_err(invalid)?;
    Ok(manifest)
}

/// What `local` runs from a manifest, and what it says about it first.
pub struct Manifest {
    pub run: AmperityWorkflowRun,
    /// Said before the run starts (a schedule's runTemplate run once, now).
    pub note: Option<String>,
}

const RUN_KIND: &str = "AmperityWorkflowRun";
const SCHEDULE_KIND: &str = "AmperityWorkflowSchedule";
/// The kinds `local` accepts, as its errors name them.
const KINDS: &str = "AmperityWorkflowRun (run to its end), or AmperityWorkflowSchedule (its runTemplate run once, now, as amperity.dev/run-now would)";

pub fn parse_manifest(text: &str) -> Result<Manifest, Vec<FieldError>> {
    let problem = |path: &str, message: String| {
        vec![FieldError {
            path: path.into(),
            message,
        }]
    };
    let mut doc: Value = serde_norway::from_str(text)
        .map_err(|e| problem("(document)", format!("not YAML: {e}")))?;
    let mut problems = Vec::new();
    match doc.get("apiVersion").and_then(Value::as_str) {
        Some("amperity.dev/v1alpha1") => {}
        other => problems.push(FieldError {
            path: "apiVersion".into(),
            message: format!("{other:?} must be \"amperity.dev/v1alpha1\""),
        }),
    }
    match doc.get("kind").and_then(Value::as_str) {
        Some(RUN_KIND) => {}
        Some(SCHEDULE_KIND) if problems.is_empty() => return schedule_run(doc, Timestamp::now()),
        Some(SCHEDULE_KIND) => return Err(problems),
        other => {
            let kind = other.map_or("no kind".to_string(), |k| format!("{k:?}"));
            problems.push(FieldError {
                path: "kind".into(),
                message: format!("{kind} is not a kind local runs: {KINDS}"),
            });
            return Err(problems);
        }
    }
    match doc.get("spec") {
        Some(spec) => problems.extend(validate_spec_value(spec)),
        None => problems.push(FieldError {
            path: "spec".into(),
            message: "required".into(),
        }),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if doc.pointer("/metadata/name").is_none() {
        doc["metadata"]["name"] = Value::from("local");
    }
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("status");
    }
    let run = serde_json::from_value(doc).map_err(|e| problem("(document)", e.to_string()))?;
    Ok(Manifest { run, note: None })
}

/// A schedule's runTemplate as one run now: the run a new `amperity.dev/run-now`
/// value would start, checked with the schedule's own rules (cron pattern, time
/// zone, template) first.
fn schedule_run(mut doc: Value, now: Timestamp) -> Result<Manifest, Vec<FieldError>> {
    let mut problems: Vec<FieldError> = match doc.pointer("/spec/runTemplate/spec") {
        Some(spec) => validate_spec_value(spec)
            .into_iter()
            .map(|p| FieldError {
                path: format!("spec.runTemplate.{}", p.path),
                message: p.message,
            })
            .collect(),
        None => vec![FieldError {
            path: "spec.runTemplate.spec".into(),
            message: "required".into(),
        }],
    };
    if doc.pointer("/metadata/name").is_none() {
        doc["metadata"]["name"] = Value::from("local");
    }
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("status");
    }
    let schedule: AmperityWorkflowSchedule = match serde_json::from_value(doc) {
        Ok(schedule) => schedule,
        Err(e) => {
            problems.push(FieldError {
                path: "(document)".into(),
                message: e.to_string(),
            });
            return Err(problems);
        }
    };
    for p in crate::schedule::spec::check(&schedule, now)
        .err()
        .unwrap_or_default()
    {
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let run = crate::schedule::template::run_now(&schedule, "local", now);
    let note = format!(
        "{SCHEDULE_KIND} {}: running its runTemplate once, now, as run {} (as a new amperity.dev/run-now value would); local does not follow the schedule {:?}",
        schedule.name_any(),
        run.name_any(),
        schedule.spec.schedule,
    );
    Ok(Manifest {
        run,
        note: Some(note),
    })
}

pub async fn run(args: LocalArgs) -> ExitCode {
    match run_inner(args).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run_inner(args: LocalArgs) -> Result<u8, LocalError> {
    let Manifest { mut run, note } = load_manifest(&args.file)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let defaults = defaults(&args.amperity);
    let mut client = client_config(&args.amperity).map_err(LocalError::Client)?;
    // A local run waits in place; nobody else shares its reconcile.
    client.max_retries = 3;
    // Keep the simulator alive for the whole run.
    let mut _simulator = None;
    let credentials = if args.simulator {
        let config = sim::SimConfig {
            speed: args.simulator_speed,
            tenant: run.spec.tenant().to_string(),
            tokens: vec![SIMULATOR_TOKEN.to_string()],
            ..sim::SimConfig::default()
        };
        let handle = sim::spawn(config).await.map_err(LocalError::Simulator)?;
        run.spec.endpoint = Some(handle.base_url());
        // The embedded simulator is allowed by itself, and nothing else is added.
        client.allow = client
            .allow
            .with(&handle.base_url())
            .map_err(LocalError::Client)?;
        _simulator = Some(handle);
        Credentials::Token(SecretString::new(SIMULATOR_TOKEN.to_string()))
    } else {
        Credentials::Token(SecretString::new(read_token(&args)?))
    };
    let amperity = AmperityClient::new(client).map_err(|e| LocalError::Client(e.to_string()))?;
    let output = match args.output {
        LocalOutput::Auto if std::io::stderr().is_terminal() => Output::Bar(progress_bar()),
        LocalOutput::Auto | LocalOutput::Text => Output::Lines,
        LocalOutput::Json => Output::Json,
    };
    let host = LocalHost {
        credentials,
        output,
        last_line: Mutex::new(String::new()),
    };
    let settings = Settings {
        // Nobody else can fix a stalled local run; re-check quickly, then give up.
        stalled_recheck: Duration::from_secs(5),
        ..Settings::default()
    };
    let driver = Driver {
        host: &host,
        amperity: &amperity,
        defaults: &defaults,
        settings: &settings,
    };
    let mut memory = RunMemory::default();
    let mut interrupted_at: Option<Timestamp> = None;
    let code = loop {
        let action = match driver.drive(&mut run, &mut memory).await {
            Ok(a) => a,
            Err(never) => match never {},
        };
        let status = run.status.clone().unwrap_or_default();
        if let Some(code) = stalled_exit(&status) {
            break code;
        }
        if let Some(phase) = status.phase.filter(|p| p.is_finished()) {
            break phase_exit(phase);
        }
        let wait = match action {
            Action::Requeue(d) => d.min(MAX_REQUEUE),
            // Stalled waiting for a person, or the TTL passed: nothing more to do here.
            _ => break exit::STALLED,
        };
        if let Some(at) = interrupted_at {
            let waited =
                Duration::try_from(Timestamp::now().duration_since(at)).unwrap_or_default();
            if waited > Duration::from_secs(args.stop_grace_secs) {
                eprintln!(
                    "the stop was not confirmed in {}s; exiting",
                    args.stop_grace_secs
                );
                break exit::CANCELED;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => {
                if interrupted_at.is_some() {
                    eprintln!("interrupted again; exiting without waiting for the stop");
                    break exit::CANCELED;
                }
                eprintln!("interrupted: stopping the Amperity run (Ctrl-C again to exit at once)");
                interrupted_at = Some(Timestamp::now());
                run.spec.stop = true;
            }
        }
    };
    host.finish(&run);
    Ok(code)
}

fn read_token(args: &LocalArgs) -> Result<String, LocalError> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path).map_err(|source| LocalError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let token = text.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    args.token
        .as_ref()
        .map(|t| t.expose().to_string())
        .filter(|t| !t.is_empty())
        .ok_or(LocalError::NoToken)
}

/// The exit code of a run that ended in `phase`.
pub fn phase_exit(phase: Phase) -> u8 {
    match phase {
        Phase::Succeeded => exit::SUCCEEDED,
        Phase::Canceled => exit::CANCELED,
        Phase::TimedOut => exit::TIMED_OUT,
        _ => exit::FAILED,
    }
}

/// A local run stalled on credentials cannot be fixed by anyone while it waits.
fn stalled_exit(status: &AmperityWorkflowRunStatus) -> Option<u8> {
    match conditions::stalled_reason(status) {
        Some("AuthFailed" | "SecretNotFound" | "SecretKeyMissing" | "SecretKeyInvalid")
            if !status.phase.is_some_and(Phase::is_finished) =>
        {
            Some(exit::AUTH_FAILED)
        }
        _ => None,
    }
}

enum Output {
    Bar(ProgressBar),
    Lines,
    Json,
}

/// Until the run reports its tasks there is nothing to measure: a spinner only
/// (a bar of 0 of 0 would be drawn full).
const SPINNER: &str = "{spinner} [{elapsed_precise}] {msg}";
const BAR: &str = "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks  {msg}";

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(SPINNER).expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

struct LocalHost {
    credentials: Credentials,
    output: Output,
    last_line: Mutex<String>,
}

impl LocalHost {
    fn line(&self, status: &AmperityWorkflowRunStatus) -> String {
        let phase = status.phase.map(Phase::as_str).unwrap_or("Pending");
        let id = status.workflow_id.as_deref().unwrap_or("-");
        let mut line = format!("{phase:<9} {id}");
        if let Some(t) = status.tasks.as_ref().filter(|t| t.total > 0) {
            line.push_str(&format!("  tasks {}", t.progress));
            if let Some(current) = t.current.first() {
                line.push_str(&format!("  {current}"));
            }
        }
        if let Some(c) = conditions::get(status, conditions::SUCCEEDED)
            && (status.phase.is_some_and(Phase::is_finished)
                || conditions::stalled_reason(status).is_some())
        {
            line.push_str(&format!("  ({}: {})", c.reason, c.message));
        }
        line
    }

    fn finish(&self, run: &AmperityWorkflowRun) {
        let status = run.status.clone().unwrap_or_default();
        match &self.output {
            Output::Bar(bar) => {
                bar.finish_and_clear();
                eprintln!("{}", self.line(&status));
                print!("{}", serde_norway::to_string(&status).unwrap_or_default());
            }
            Output::Lines => print!("{}", serde_norway::to_string(&status).unwrap_or_default()),
            Output::Json => {}
        }
    }
}

impl Host for LocalHost {
    type Error = std::convert::Infallible;

    async fn credentials(&self, _run: &AmperityWorkflowRun) -> Result<Access, CredentialsProblem> {
        Ok(Access {
            credentials: self.credentials.clone(),
            principal: None,
        })
    }

    async fn claims(
        &self,
        _run: &AmperityWorkflowRun,
        _candidates: &[String],
        _principal: Option<&crate::amperity::Principal>,
    ) -> Claims {
        Claims::alone()
    }

    fn poll_failed(&self, _run: &AmperityWorkflowRun) {}

    async fn save_status(
        &self,
        _run: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
    ) -> Result<Option<String>, Self::Error> {
        match &self.output {
            Output::Json => println!("{}", serde_json::to_string(status).unwrap_or_default()),
            Output::Lines => {
                let line = self.line(status);
                let mut last = self.last_line.lock().unwrap();
                if *last != line {
                    eprintln!("{} {line}", Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"));
                    *last = line;
                }
            }
            Output::Bar(bar) => {
                if let Some(t) = status.tasks.as_ref().filter(|t| t.total > 0) {
                    if bar.length() == Some(0) {
                        bar.set_style(ProgressStyle::with_template(BAR).expect("a valid template"));
                    }
                    bar.set_length(t.total as u64);
                    bar.set_position((t.succeeded + t.failed + t.skipped + t.canceled) as u64);
                }
                bar.set_message(self.line(status));
            }
        }
        Ok(None)
    }

    async fn publish(&self, _run: &AmperityWorkflowRun, event: &Event) {
        let kind = match event.type_ {
            EventType::Normal => "event",
            EventType::Warning => "warning",
        };
        let text = format!("{kind}: {}: {}", event.reason, event.note);
        match &self.output {
            Output::Bar(bar) => bar.println(text),
            // JSON mode keeps stdout for status objects only.
            Output::Lines | Output::Json => eprintln!("{text}"),
        }
    }

    async fn deprecation(&self, _run: &AmperityWorkflowRun, _notice: &DeprecationNotice) {}

    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
