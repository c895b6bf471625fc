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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, deserialize_with = "null_default")]
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
}
