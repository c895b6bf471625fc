//! The `AmperityWorkflowRun` custom resource: spec, status and the schema rules the
//! API server enforces at `kubectl apply` time. Only kube, serde and schemars here.
//!
//! Rules that plain OpenAPI keywords can say (required, enum, pattern, minimum,
//! maximum) are written as such so that every API server enforces them; CEL
//! (`x-kubernetes-validations`) carries only cross-field and transition rules.
//! `run/validate.rs` enforces the same rules in Rust for API servers that ignore CEL.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{MAX_ENDPOINT_CHARS, TokenSecretRef};
use super::connection::ConnectionRef;

/// Amperity config ids: courier group, orchestration group or campaign.
/// A run id: at least one character other than a dot, and no separator or control
/// character (the Amperity client's `run_id_problem` is the same rule).
pub const WORKFLOW_ID_PATTERN: &str =
    r"^[^/\\\x00-\x1f\x7f]*[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*$";
pub const CONFIG_ID_PATTERN: &str = r"^(cg|og|cc)-[A-Za-z0-9][A-Za-z0-9-]*$";
/// An ISO 8601 date (`2025-04-18`) or a UTC date-time with seconds
/// (`2025-04-18T06:00:00Z`): the forms the range-order rule's CEL `timestamp()` reads
/// (RFC 3339, as an API server parses it), so no value the schema admits makes the
/// rule fail to evaluate.
pub const RANGE_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z)?$";
/// A Go-style duration as Kubernetes writes them: `30s`, `1m30s`, `6h`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// Longest duration text: enough for `1h30m15s`, too short to overflow a clock.
pub const MAX_DURATION_CHARS: u32 = 32;
/// Longest `ttlSecondsAfterFinished`: a year.
pub const MAX_TTL_SECONDS: i64 = 31_536_000;

/// The spec may not change once created, except `stop` going from false to true.
/// Written field by field because CEL cannot compare a map minus one key.
pub const SPEC_IMMUTABLE_RULE: &str = concat!(
    "[has(self.tenant) == has(oldSelf.tenant) && (!has(self.tenant) || self.tenant == oldSelf.tenant),",
    " has(self.endpoint) == has(oldSelf.endpoint) && (!has(self.endpoint) || self.endpoint == oldSelf.endpoint),",
    " has(self.amperityApiVersion) == has(oldSelf.amperityApiVersion) && (!has(self.amperityApiVersion) || self.amperityApiVersion == oldSelf.amperityApiVersion),",
    " has(self.tokenSecretRef) == has(oldSelf.tokenSecretRef) && (!has(self.tokenSecretRef) || self.tokenSecretRef == oldSelf.tokenSecretRef),",
    " has(self.connectionRef) == has(oldSelf.connectionRef) && (!has(self.connectionRef) || self.connectionRef == oldSelf.connectionRef),",
    " has(self.configId) == has(oldSelf.configId) && (!has(self.configId) || self.configId == oldSelf.configId),",
    " has(self.runMode) == has(oldSelf.runMode) && (!has(self.runMode) || self.runMode == oldSelf.runMode),",
    " has(self.range) == has(oldSelf.range) && (!has(self.range) || self.range == oldSelf.range),",
    " has(self.pollInterval) == has(oldSelf.pollInterval) && (!has(self.pollInterval) || self.pollInterval == oldSelf.pollInterval),",
    " has(self.timeout) == has(oldSelf.timeout) && (!has(self.timeout) || self.timeout == oldSelf.timeout),",
    " has(self.retry) == has(oldSelf.retry) && (!has(self.retry) || self.retry == oldSelf.retry),",
    " has(self.ttlSecondsAfterFinished) == has(oldSelf.ttlSecondsAfterFinished) && (!has(self.ttlSecondsAfterFinished) || self.ttlSecondsAfterFinished == oldSelf.ttlSecondsAfterFinished),",
    " has(self.deletionPolicy) == has(oldSelf.deletionPolicy) && (!has(self.deletionPolicy) || self.deletionPolicy == oldSelf.deletionPolicy),",
    " has(self.workflowId) == has(oldSelf.workflowId) && (!has(self.workflowId) || self.workflowId == oldSelf.workflowId)",
    "].all(same, same)"
);
pub const SPEC_IMMUTABLE_MESSAGE: &str = "spec is immutable once created, except stop (false to true); create a new AmperityWorkflowRun to run again";

/// Where credentials come from: a connection, or tenant and Secret inline. One rule
/// per field, each with its `fieldPath`, so that the API server (and the reconciler,
/// which evaluates these same rules with `run::validate`) names the field at fault.
pub const TENANT_REQUIRED_RULE: &str = "has(self.connectionRef) || has(self.tenant)";
pub const TENANT_REQUIRED_MESSAGE: &str =
    "required: name the Amperity tenant (or name a connection in connectionRef)";
pub const SECRET_REQUIRED_RULE: &str = "has(self.connectionRef) || has(self.tokenSecretRef)";
pub const SECRET_REQUIRED_MESSAGE: &str =
    "required: name the Secret holding the Amperity token (or name a connection in connectionRef)";
pub const TENANT_WITH_CONNECTION_RULE: &str = "!has(self.connectionRef) || !has(self.tenant)";
pub const ENDPOINT_WITH_CONNECTION_RULE: &str = "!has(self.connectionRef) || !has(self.endpoint)";
pub const SECRET_WITH_CONNECTION_RULE: &str =
    "!has(self.connectionRef) || !has(self.tokenSecretRef)";
pub const WITH_CONNECTION_MESSAGE: &str = "must not be set with connectionRef, which supplies tenant, endpoint and credentials: remove one or the other";

pub const STOP_RULE: &str = "!(has(oldSelf.stop) && oldSelf.stop) || (has(self.stop) && self.stop)";
pub const STOP_MESSAGE: &str = "stop cannot be set back to false once true";

/// `range.to` is exclusive and must come after `range.from`; a bare date means midnight UTC.
pub const RANGE_ORDER_RULE: &str = "!has(self.to) || timestamp(size(self.to) == 10 ? self.to + 'T00:00:00Z' : self.to) > timestamp(size(self.from) == 10 ? self.from + 'T00:00:00Z' : self.from)";
pub const RANGE_ORDER_MESSAGE: &str = "must be after range.from (to is exclusive)";

pub const POLL_INTERVAL_RULE: &str =
    "duration(self) >= duration('5s') && duration(self) <= duration('24h')";
pub const POLL_INTERVAL_MESSAGE: &str = "must be between 5s and 24h";
pub const TIMEOUT_RULE: &str =
    "duration(self) > duration('0s') && duration(self) <= duration('720h')";
pub const TIMEOUT_MESSAGE: &str = "must be greater than zero and at most 720h (30 days)";

/// Start one Amperity workflow run (a courier group, orchestration group or campaign)
/// and follow it to the end. One-shot, like a Job: create a new resource to run again.
// Each printer column repeats `type_ = "string"`, which clippy reads as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "amperity.dev",
    version = "v1alpha1",
    kind = "AmperityWorkflowRun",
    doc = "Starts one Amperity workflow run and mirrors its progress into status",
    plural = "amperityworkflowruns",
    shortname = "awr",
    category = "amperity",
    namespaced,
    status = "AmperityWorkflowRunStatus",
    derive = "PartialEq",
    cel,
    printcolumn(name = "Config", type_ = "string", json_path = ".spec.configId"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.runMode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Workflow", type_ = "string", json_path = ".status.workflowId"),
    printcolumn(name = "Tasks", type_ = "string", json_path = ".status.tasks.progress"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Succeeded\")].reason",
        description = "Why the run stands where it does (the Succeeded condition's reason)",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(SPEC_IMMUTABLE_RULE).message(SPEC_IMMUTABLE_MESSAGE))]
#[x_kube(validation = Rule::new(STOP_RULE).message(STOP_MESSAGE))]
#[x_kube(validation = Rule::new(TENANT_REQUIRED_RULE).message(TENANT_REQUIRED_MESSAGE).field_path(".tenant").reason(kube::core::cel::Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new(SECRET_REQUIRED_RULE).message(SECRET_REQUIRED_MESSAGE).field_path(".tokenSecretRef").reason(kube::core::cel::Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new(TENANT_WITH_CONNECTION_RULE).message(WITH_CONNECTION_MESSAGE).field_path(".tenant").reason(kube::core::cel::Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(ENDPOINT_WITH_CONNECTION_RULE).message(WITH_CONNECTION_MESSAGE).field_path(".endpoint").reason(kube::core::cel::Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(SECRET_WITH_CONNECTION_RULE).message(WITH_CONNECTION_MESSAGE).field_path(".tokenSecretRef").reason(kube::core::cel::Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct AmperityWorkflowRunSpec {
    /// Amperity tenant id, sent as the `amperity-tenant` header. Also names the
    /// default base URL `https://{tenant}.amperity.com/api`.
    /// Required unless `connectionRef` names a connection, which then supplies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub tenant: Option<String>,

    /// Base URL of the Amperity API, e.g. `https://app.amperity.com/api`. https only,
    /// except for loopback addresses or when the operator allows plain http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = MAX_ENDPOINT_CHARS),
        regex(pattern = r"^https?://[^\s/]+(/\S*)?$")
    )]
    pub endpoint: Option<String>,

    /// The `api-version` header; defaults to the operator's (2024-04-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub amperity_api_version: Option<String>,

    /// Secret in the same namespace holding `token` (a bearer JWT) or
    /// `client_id` + `client_secret` (OAuth client credentials). Required unless
    /// `connectionRef` names a connection, which then supplies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<TokenSecretRef>,

    /// An `AmperityConnection` of this namespace, or a `ClusterAmperityConnection`
    /// that chooses it, supplying tenant, endpoint and credentials instead of
    /// `tenant`, `endpoint` and `tokenSecretRef` (which it excludes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<ConnectionRef>,

    /// Courier group (`cg-`), orchestration group (`og-`) or campaign (`cc-`) id.
    #[schemars(pattern(CONFIG_ID_PATTERN))]
    pub config_id: String,

    /// Override the run mode configured for the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_mode: Option<RunMode>,

    /// Time window of files to pull; file-based courier groups need `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<DateRange>,

    /// How often to poll the run, e.g. `30s`, at least `5s`. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_CHARS), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(POLL_INTERVAL_RULE).message(POLL_INTERVAL_MESSAGE))]
    pub poll_interval: Option<String>,

    /// Stop the run and give up (phase TimedOut) when it has not ended after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_CHARS), pattern(DURATION_PATTERN))]
    #[x_kube(validation = Rule::new(TIMEOUT_RULE).message(TIMEOUT_MESSAGE))]
    pub timeout: Option<String>,

    /// Start a new run when one fails for a platform reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,

    /// Delete the resource this many seconds after the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_TTL_SECONDS))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Set to true to stop the run. The only field that may change after creation.
    #[serde(default)]
    pub stop: bool,

    /// What deleting an unfinished resource does to its run: Stop (default) or Orphan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Track an existing run instead of starting one. One path segment: not `.` or
    /// `..` (nor only dots), no `/` or `\`, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(WORKFLOW_ID_PATTERN))]
    pub workflow_id: Option<String>,
}

impl AmperityWorkflowRunSpec {
    /// The tenant, once known: inline, or filled in from the connection the run
    /// names before anything is decided ("" until then).
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or("")
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// Reprocess everything.
    Full,
    /// Process what changed since the last run.
    Refresh,
    /// Pull from the sources only.
    Source,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Full => "full",
            RunMode::Refresh => "refresh",
            RunMode::Source => "source",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(cel, validation = Rule::new(RANGE_ORDER_RULE).message(RANGE_ORDER_MESSAGE).field_path(".to"))]
pub struct DateRange {
    /// Inclusive start: an ISO 8601 date or UTC date-time.
    #[schemars(pattern(RANGE_PATTERN))]
    pub from: String,
    /// Exclusive end, after `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(RANGE_PATTERN))]
    pub to: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct RetryPolicy {
    /// How many new runs to start after platform failures (0-10).
    #[schemars(range(min = 0, max = 10))]
    pub limit: u32,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Deleting an unfinished resource stops its run first.
    #[default]
    Stop,
    /// Deleting the resource leaves the run alone.
    Orphan,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Phase {
    /// Not started yet (waiting for a Secret, a retry backoff or a first reconcile).
    Pending,
    /// The start was recorded and sent; the run id is not known yet.
    Starting,
    /// The Amperity run is in flight.
    Running,
    /// A stop was sent; waiting for the run to end.
    Stopping,
    /// The run succeeded.
    Succeeded,
    /// The run failed, or could not be started.
    Failed,
    /// The run was stopped on request.
    Canceled,
    /// The run was stopped because `timeout` passed.
    TimedOut,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::Canceled | Phase::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Starting => "Starting",
            Phase::Running => "Running",
            Phase::Stopping => "Stopping",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Canceled => "Canceled",
            Phase::TimedOut => "TimedOut",
        }
    }
}

/// Why a run is being stopped; decides whether it ends Canceled or TimedOut.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum StopReason {
    /// `spec.stop` was set.
    Requested,
    /// `spec.timeout` passed.
    Timeout,
    /// The resource is being deleted with `deletionPolicy: Stop`.
    Deletion,
}

/// Where the run stands: written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmperityWorkflowRunStatus {
    /// Where the run is in its life: Pending (not started yet), Starting (the start
    /// was sent, its answer not known yet), Running, Stopping, and the final phases
    /// Succeeded, Failed, Canceled and TimedOut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The Amperity run this resource follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// What Amperity says about the run: its name, type, state, times, who started it
    /// and the workflow versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowInfo>,
    /// The run's task progress: counts by state, what runs now, what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskSummary>,
    /// The error Amperity reported for the run, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// Earlier runs of this resource, when retry started new ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// When the current run was (or is about to be) started: recorded before the
    /// request is sent, so a start is never made twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Option<Time>,
    /// When the first start attempt was made (its intent recorded): `spec.timeout`
    /// counts from it, deferred starts, retries and a person's `retry` included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub first_attempt_at: Option<Time>,
    /// When the run reached its final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub completed_at: Option<Time>,
    /// When the search for a run whose start answer was lost got its first answer:
    /// the search looks for `START_SETTLE_SECS` from then before asking a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub search_started_at: Option<Time>,
    /// Why the run is being stopped (Requested: spec.stop; Timeout; Deletion),
    /// recorded with the intent to stop, before the request is sent: it decides
    /// whether the run ends Canceled or TimedOut, even when the stop's answer is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// When the stop was first asked for: a run still not stopped `STOP_GRACE_SECS`
    /// later (the stop refused, or accepted and never carried out) ends with reason
    /// StopUnconfirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub stop_requested_at: Option<Time>,
    /// The last `amperity.dev/resolve-start` answer acted on, and what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_resolution: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What waiting tools read: Succeeded (Unknown in flight, True on success, False
    /// otherwise, with the reason), Finished, Ready, Reconciling and Stalled, each with
    /// a CamelCase reason and a message a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A point in time, as Kubernetes writes them (RFC 3339, UTC).
fn timestamp_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time"})
}

/// The Amperity run's own fields, mirrored.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowInfo {
    /// The workflow's name in Amperity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The workflow type, e.g. `courier.group/run` or `campaign.send`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub workflow_type: Option<String>,
    /// The run's state as Amperity names it, e.g. `running` or `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When Amperity created the run (its own timestamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the run ended, by Amperity's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Who started the run in Amperity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_name: Option<String>,
    /// The version of the workflow's configuration the run was launched with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_version: Option<String>,
    /// The version of the workflow's configuration now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
}

/// Task progress of the run: counts per state and what is running now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    /// How many tasks the run has so far.
    pub total: u32,
    /// Tasks waiting to run.
    pub pending: u32,
    /// Tasks running now.
    pub running: u32,
    /// Tasks that succeeded.
    pub succeeded: u32,
    /// Tasks that failed.
    pub failed: u32,
    /// Tasks Amperity skipped.
    pub skipped: u32,
    /// Tasks stopped before they ended.
    pub canceled: u32,
    /// `done/total`, for the printer column.
    pub progress: String,
    /// Labels of the running tasks (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current: Vec<String>,
    /// The failed tasks (at most 5) with their error messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tasks: Vec<FailedTask>,
}

/// A task that failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedTask {
    /// The task's label in Amperity.
    pub label: String,
    /// The task's error message (cut at 1 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The error Amperity reported for the run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunError {
    /// `customer` (fix the configuration) or `platform` (usually transient).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
    /// Amperity's error type, e.g. `amperity.workflow.task.stitch/table`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Amperity's error message (cut at 1 KiB, ending `…[cut]` when it was longer).
    pub message: String,
}

/// An earlier run of this resource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The Amperity run of that attempt.
    pub workflow_id: String,
    /// The state that run ended in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When that attempt was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Option<Time>,
    /// When that attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub completed_at: Option<Time>,
    /// The error that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
}

impl AmperityWorkflowRun {
    pub fn phase(&self) -> Option<Phase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}
