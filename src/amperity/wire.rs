//! The Amperity API's JSON shapes, as `docs/amperity-api/` documents them.
//!
//! Decoding is deliberately lenient: real responses omit optional fields, send
//! `null` where a list is expected, use older field names (`workflow_id`,
//! `task_instance_id`) and spell states in any case ("Succeeded", "In progress").
//! Unknown fields are ignored. Encoding follows the OpenAPI file.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A workflow run (`Workflow` in the OpenAPI file).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Workflow {
    #[serde(alias = "workflow_id")]
    pub id: String,
    pub state: WorkflowState,
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub workflow_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub tenant: String,
    /// RFC 3339 timestamps are kept as text: a malformed one must not make the
    /// whole run unreadable, and status mirrors them verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_after_ms: Option<u64>,
    /// `None` when the response left the field out (the overview view),
    /// as opposed to an empty list of tasks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_tasks"
    )]
    pub task_instances: Option<Vec<TaskInstance>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WorkflowError>,
}

impl Workflow {
    /// Ended by its state or, for states we do not know, by a set `ended_at`.
    pub fn has_ended(&self) -> bool {
        self.state.is_terminal() || self.ended_at.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// One task of a workflow (`WorkflowTaskInstance`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct TaskInstance {
    #[serde(alias = "task_instance_id")]
    pub id: String,
    pub state: WorkflowState,
    #[serde(default, deserialize_with = "null_default")]
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WorkflowError>,
}

/// An error attached to a workflow or a task (`WorkflowError`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct WorkflowError {
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub error_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Attribution>,
    /// Free-form; kept so that a re-encoded error loses nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// Who an error is attributed to: decides whether a rerun may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// Fix the configuration, then rerun; retrying as-is will not help.
    Customer,
    /// Usually transient: a rerun often works.
    Platform,
    Other(String),
}

impl Attribution {
    pub fn as_str(&self) -> &str {
        match self {
            Attribution::Customer => "customer",
            Attribution::Platform => "platform",
            Attribution::Other(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Attribution {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(match raw.trim().to_ascii_lowercase().as_str() {
            "customer" => Attribution::Customer,
            "platform" => Attribution::Platform,
            _ => Attribution::Other(raw),
        })
    }
}

impl Serialize for Attribution {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The longest unknown state name kept.
pub const MAX_STATE_BYTES: usize = 64;

/// A workflow or task state, normalised from whatever spelling the API used.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WorkflowState {
    Scheduled,
    Started,
    InProgress,
    Running,
    RunningWithFailures,
    Finalizing,
    Stopping,
    Succeeded,
    Failed,
    Canceled,
    Stopped,
    Skipped,
    /// A state the documents do not list, kept verbatim. Not terminal.
    Unknown(String),
}

impl WorkflowState {
    /// Case-insensitive; spaces, dashes and underscores are equivalent
    /// ("In progress", "in-progress", "IN_PROGRESS").
    pub fn parse(raw: &str) -> Self {
        let key: String = raw
            .trim()
            .chars()
            .filter_map(|c| match c {
                ' ' | '-' | '_' => None,
                c => Some(c.to_ascii_lowercase()),
            })
            .collect();
        match key.as_str() {
            "scheduled" | "queued" | "pending" => WorkflowState::Scheduled,
            "started" => WorkflowState::Started,
            "inprogress" => WorkflowState::InProgress,
            "running" => WorkflowState::Running,
            "runningwithfailures" => WorkflowState::RunningWithFailures,
            "finalizing" | "finalising" => WorkflowState::Finalizing,
            "stopping" | "canceling" | "cancelling" => WorkflowState::Stopping,
            "succeeded" | "success" | "successful" | "completed" => WorkflowState::Succeeded,
            "failed" | "failure" | "error" | "errored" => WorkflowState::Failed,
            "canceled" | "cancelled" => WorkflowState::Canceled,
            "stopped" => WorkflowState::Stopped,
            "skipped" => WorkflowState::Skipped,
            // Kept for people to read, so cut: a state name is a word or two.
            _ => WorkflowState::Unknown(crate::bounded::cut(raw, MAX_STATE_BYTES)),
        }
    }

    /// The lower-case, underscore-separated spelling used in JSON and status.
    pub fn as_str(&self) -> &str {
        match self {
            WorkflowState::Scheduled => "scheduled",
            WorkflowState::Started => "started",
            WorkflowState::InProgress => "in_progress",
            WorkflowState::Running => "running",
            WorkflowState::RunningWithFailures => "running_with_failures",
            WorkflowState::Finalizing => "finalizing",
            WorkflowState::Stopping => "stopping",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Canceled => "canceled",
            WorkflowState::Stopped => "stopped",
            WorkflowState::Skipped => "skipped",
            WorkflowState::Unknown(raw) => raw,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            WorkflowState::Succeeded
                | WorkflowState::Failed
                | WorkflowState::Canceled
                | WorkflowState::Stopped
                | WorkflowState::Skipped
        )
    }
}

impl std::fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WorkflowState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(WorkflowState::parse(&raw))
    }
}

impl Serialize for WorkflowState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A page of `GET /workflow/runs` (`WorkflowList`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct WorkflowList {
    #[serde(default, deserialize_with = "bounded_runs")]
    pub data: Vec<Workflow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// The body of `POST /workflow/runs` (`WorkflowRunRequest`): no other properties.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub config_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_to: Option<String>,
}

/// The documented error body `{status, message}`; either may be missing in practice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ErrorResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// The OAuth client-credentials answer.
#[derive(Clone, Deserialize, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// The longest run id accepted: ids are opaque, but no id Amperity hands out is long.
pub const MAX_RUN_ID_BYTES: usize = 256;

/// What is wrong with a run id, if anything. An id becomes one path segment of
/// `…/workflow/runs/{id}`: an empty id, `.` or `..` would be dropped or resolved by
/// the URL library (a poll would become a list, a stop would stop `…/runs/stop`),
/// and a separator, a control character or a very long id is not an id Amperity
/// hands out. Every id that enters (a spec's `workflowId`, a start's or a list's
/// answer, a call's argument) passes this rule.
pub fn run_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("is empty")
    } else if id.len() > MAX_RUN_ID_BYTES {
        Some("is longer than 256 bytes")
    } else if id.chars().all(|c| c == '.') {
        Some("is made of dots only (`.` and `..` are path segments, not ids)")
    } else if id.contains(['/', '\\']) {
        Some("contains a path separator (/ or \\)")
    } else if id.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

/// `text` safe to store in a status and print on a terminal: tabs and line breaks
/// become spaces, other control characters (ESC of a terminal escape sequence,
/// DEL, C1 controls) and the bidirectional overrides that reorder what a reader
/// sees are written as `\u{…}`. Text without any is returned as is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn hostile(c: char) -> bool {
        c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(hostile) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' | '\n' | '\r' => out.push(' '),
            c if hostile(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn clean(text: &mut String) {
    if let std::borrow::Cow::Owned(o) = printable(text) {
        *text = o;
    }
}

fn clean_opt(text: &mut Option<String>) {
    if let Some(t) = text {
        clean(t);
    }
}

impl WorkflowError {
    fn make_printable(&mut self) {
        clean(&mut self.error_type);
        clean(&mut self.message);
        if let Some(Attribution::Other(a)) = &mut self.attribution {
            clean(a);
        }
    }
}

impl WorkflowState {
    fn make_printable(&mut self) {
        if let WorkflowState::Unknown(raw) = self {
            clean(raw);
        }
    }
}

impl TaskInstance {
    fn make_printable(&mut self) {
        self.state.make_printable();
        for t in [&mut self.id, &mut self.tenant] {
            clean(t);
        }
        for t in [
            &mut self.label,
            &mut self.created_at,
            &mut self.ended_at,
            &mut self.execution_type,
            &mut self.run_id,
            &mut self.task_definition_id,
            &mut self.task_definition_type,
            &mut self.workflow_id,
        ] {
            clean_opt(t);
        }
        if let Some(e) = &mut self.error {
            e.make_printable();
        }
    }
}

impl Workflow {
    /// Escapes control characters in every text Amperity sent (see [`printable`]),
    /// so none reaches a status, an Event, a log line or `local`'s terminal. The id
    /// is left alone: ids with control characters are refused, not rewritten.
    pub fn make_printable(&mut self) {
        self.state.make_printable();
        for t in [&mut self.workflow_type, &mut self.name, &mut self.tenant] {
            clean(t);
        }
        for t in [
            &mut self.created_at,
            &mut self.ended_at,
            &mut self.principal_id,
            &mut self.principal_name,
            &mut self.principal_email,
            &mut self.launched_version,
            &mut self.current_version,
        ] {
            clean_opt(t);
        }
        for task in self.task_instances.iter_mut().flatten() {
            task.make_printable();
        }
        if let Some(e) = &mut self.error {
            e.make_printable();
        }
    }
}

/// The most tasks kept of one run: a verbose answer lists a run's tasks, hundreds
/// for the largest workflows. An answer with more is refused while it is parsed, so
/// 8 MiB of tiny task objects never become hundreds of thousands of tasks in memory.
pub const MAX_TASKS: usize = 5_000;

/// The most runs kept of one list page (Amperity's pages hold at most 1,000).
pub const MAX_PAGE_RUNS: usize = 10_000;

/// In the message of the parse error of an answer over [`MAX_TASKS`] or
/// [`MAX_PAGE_RUNS`], so the client can tell it from a malformed answer.
pub const TOO_MANY_MARK: &str = "amperity-operator: too many items";

/// A JSON array (or `null`) of at most `limit` items, refused as soon as it holds more.
fn bounded_seq<'de, D, T>(
    d: D,
    limit: usize,
    what: &'static str,
) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T> {
        limit: usize,
        what: &'static str,
        _t: std::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
        type Value = Option<Vec<T>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {} {}", self.limit, self.what)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == self.limit {
                    return Err(serde::de::Error::custom(format!(
                        "{TOO_MANY_MARK}: more than {} {}",
                        self.limit, self.what
                    )));
                }
                out.push(item);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(Bounded {
        limit,
        what,
        _t: std::marker::PhantomData,
    })
}

fn bounded_tasks<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<TaskInstance>>, D::Error> {
    bounded_seq(d, MAX_TASKS, "tasks")
}

fn bounded_runs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Workflow>, D::Error> {
    bounded_seq(d, MAX_PAGE_RUNS, "runs").map(Option::unwrap_or_default)
}

/// `null` and absent both mean "the default" (an empty list or string).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_state_spelling_normalises() {
        let cases = [
            ("scheduled", WorkflowState::Scheduled),
            ("Scheduled", WorkflowState::Scheduled),
            ("Started", WorkflowState::Started),
            ("In progress", WorkflowState::InProgress),
            ("in_progress", WorkflowState::InProgress),
            ("IN-PROGRESS", WorkflowState::InProgress),
            ("Running", WorkflowState::Running),
            ("Running with failures", WorkflowState::RunningWithFailures),
            ("running_with_failures", WorkflowState::RunningWithFailures),
            ("Finalizing", WorkflowState::Finalizing),
            ("Stopping", WorkflowState::Stopping),
            ("Succeeded", WorkflowState::Succeeded),
            ("succeeded", WorkflowState::Succeeded),
            ("Failed", WorkflowState::Failed),
            ("failed", WorkflowState::Failed),
            ("canceled", WorkflowState::Canceled),
            ("Cancelled", WorkflowState::Canceled),
            ("Stopped", WorkflowState::Stopped),
            ("Skipped", WorkflowState::Skipped),
        ];
        for (raw, want) in cases {
            assert_eq!(WorkflowState::parse(raw), want, "{raw}");
        }
        assert_eq!(
            WorkflowState::parse("Warming up"),
            WorkflowState::Unknown("Warming up".into())
        );
        assert!(!WorkflowState::parse("Warming up").is_terminal());
        let huge = WorkflowState::parse(&"w".repeat(3_000_000));
        assert!(huge.as_str().len() <= MAX_STATE_BYTES);
    }

    #[test]
    fn lenient_decoding_of_what_real_responses_do() {
        let w: Workflow = serde_json::from_str(
            r#"{"workflow_id":"wf-1","state":"In progress","type":null,"name":"n",
                "tenant":"t","created_at":"2025-04-18T15:33:51.724Z","surprise":1,
                "task_instances":[{"task_instance_id":"wft-1","state":"Succeeded","tenant":"t"}],
                "error":{"type":"x","message":"m","attribution":"Platform","data":null}}"#,
        )
        .unwrap();
        assert_eq!(w.id, "wf-1");
        assert_eq!(w.state, WorkflowState::InProgress);
        assert_eq!(w.workflow_type, "");
        let tasks = w.task_instances.as_deref().unwrap();
        assert_eq!(tasks[0].id, "wft-1");
        assert_eq!(
            w.error.as_ref().unwrap().attribution,
            Some(Attribution::Platform)
        );
        assert!(!w.has_ended() || w.ended_at.is_some());

        let overview: Workflow = serde_json::from_str(
            r#"{"id":"wf-2","state":"weird","ended_at":"2024-01-22T18:02:50.769Z"}"#,
        )
        .unwrap();
        assert!(overview.task_instances.is_none());
        assert!(overview.has_ended(), "ended_at set means ended");
    }

    #[test]
    fn run_request_sends_only_given_fields() {
        let body = RunRequest {
            config_id: "cg-1".into(),
            run_mode: Some("source".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"config_id":"cg-1","run_mode":"source"}"#
        );
        assert!(serde_json::from_str::<RunRequest>(r#"{"config_id":"x","extra":1}"#).is_err());
    }

    #[test]
    fn token_response_debug_redacts() {
        let t = TokenResponse {
            access_token: "s3cr3t".into(),
            expires_in: Some(3600),
            token_type: None,
        };
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }

    #[test]
    fn tasks_and_list_items_are_bounded_while_parsing() {
        let task = r#"{"id":"t","state":"running"}"#;
        let run = |n: usize| {
            format!(
                r#"{{"id":"wf-1","state":"running","task_instances":[{}]}}"#,
                vec![task; n].join(",")
            )
        };
        let w: Workflow = serde_json::from_str(&run(MAX_TASKS)).unwrap();
        assert_eq!(w.task_instances.unwrap().len(), MAX_TASKS);
        let e = serde_json::from_str::<Workflow>(&run(MAX_TASKS + 1)).unwrap_err();
        assert!(e.to_string().contains(TOO_MANY_MARK), "{e}");
        let w: Workflow =
            serde_json::from_str(r#"{"id":"wf-1","state":"running","task_instances":null}"#)
                .unwrap();
        assert_eq!(w.task_instances, None);
        let page = |n: usize| {
            format!(
                r#"{{"data":[{}]}}"#,
                vec![r#"{"id":"w","state":"running"}"#; n].join(",")
            )
        };
        assert_eq!(
            serde_json::from_str::<WorkflowList>(&page(MAX_PAGE_RUNS))
                .unwrap()
                .data
                .len(),
            MAX_PAGE_RUNS
        );
        let e = serde_json::from_str::<WorkflowList>(&page(MAX_PAGE_RUNS + 1)).unwrap_err();
        assert!(e.to_string().contains(TOO_MANY_MARK), "{e}");
        let empty: WorkflowList = serde_json::from_str(r#"{"data":null}"#).unwrap();
        assert!(empty.data.is_empty());
    }

    #[test]
    fn run_ids_that_a_url_would_drop_or_split_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "...",
            "a/b",
            "a\\b",
            "wf\u{1b}[2J",
            &"w".repeat(257),
        ] {
            assert!(run_id_problem(bad).is_some(), "{bad:?}");
        }
        for ok in ["wf-1", "wf-20250418-33851-Nf2Hx", "a.b", ".hidden", "x..y"] {
            assert_eq!(run_id_problem(ok), None, "{ok:?}");
        }
    }

    #[test]
    fn control_characters_from_amperity_are_escaped_everywhere() {
        let hostile = "ok\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}txt.exe\r\nnext\u{9b}1m";
        let mut w: Workflow = serde_json::from_value(serde_json::json!({
            "id": "wf-1", "state": hostile, "type": hostile, "name": hostile,
            "tenant": hostile, "principal_name": hostile, "created_at": hostile,
            "task_instances": [{"id": "t-1", "state": "running", "label": hostile,
                "task_definition_type": hostile,
                "error": {"type": hostile, "message": hostile, "attribution": hostile}}],
            "error": {"type": hostile, "message": hostile}
        }))
        .unwrap();
        w.make_printable();
        let all = serde_json::to_string(&w).unwrap();
        let decoded: serde_json::Value = serde_json::from_str(&all).unwrap();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut texts = Vec::new();
        walk(&decoded, &mut texts);
        assert!(texts.len() > 10, "{texts:?}");
        for t in &texts {
            assert!(
                !t.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{t:?}"
            );
        }
        let label = w.task_instances.as_ref().unwrap()[0]
            .label
            .as_deref()
            .unwrap();
        assert_eq!(
            label,
            "ok\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{202e}txt.exe  next\\u{9b}1m"
        );
        assert!(matches!(
            printable("plain é text"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
