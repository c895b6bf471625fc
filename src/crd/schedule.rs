//! The `AmperityWorkflowSchedule` custom resource: runs from a template on a cron
//! schedule, like a CronJob makes Jobs. Only kube, serde and schemars here; the
//! decisions are in `crate::schedule`.
//!
//! The run template's spec is the run's own spec type, [`AmperityWorkflowRunSpec`],
//! with a schema derived from the run's (see [`run_template_spec_schema`]), so the
//! two can never drift apart.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AmperityWorkflowRunSpec, Phase};

/// One item of a cron field whose values match `$v`: `*`, `?`, a value or a range,
/// each with an optional step (`*/15`, `1-5`, `10-50/10`).
macro_rules! cron_item {
    ($v:literal) => {
        concat!("(([*?]|(", $v, ")(-(", $v, "))?)(/[0-9]{1,3})?)")
    };
}
/// A cron field: items of `$v`, or the field's own forms `$x` (`L`, `W`, `#`),
/// separated by commas.
macro_rules! cron_field {
    ($v:literal) => {
        concat!(cron_item!($v), "(,", cron_item!($v), ")*")
    };
    ($v:literal, $x:literal) => {
        concat!(
            "(",
            cron_item!($v),
            "|",
            $x,
            ")(,(",
            cron_item!($v),
            "|",
            $x,
            "))*"
        )
    };
}

/// Five cron fields, each within its range (minute 0-59, hour 0-23, day of month
/// 1-31 with `L` and `W`, month 1-12 or JAN-DEC, day of week 0-7 or SUN-SAT with `L`
/// and `#`), or a macro. What is left (a day that never comes, a step that makes no
/// sense) the operator checks when it parses the pattern.
pub const CRON_PATTERN: &str = concat!(
    "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|",
    cron_field!("[0-5]?[0-9]"),
    "[ \t]+",
    cron_field!("[01]?[0-9]|2[0-3]"),
    "[ \t]+",
    cron_field!(
        "0?[1-9]|[12][0-9]|3[01]",
        "L(-[0-9]{1,2})?W?|(0?[1-9]|[12][0-9]|3[01])W"
    ),
    "[ \t]+",
    cron_field!("0?[1-9]|1[0-2]|(?i:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)"),
    "[ \t]+",
    cron_field!(
        "0?[0-7]|(?i:SUN|MON|TUE|WED|THU|FRI|SAT)",
        "(0?[0-7]|(?i:SUN|MON|TUE|WED|THU|FRI|SAT))(L|#[1-5])|L"
    ),
    ")$"
);
/// An IANA time zone name such as `America/New_York`, `Europe/London` or `UTC`.
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";
/// Run names are `<schedule>-<minutes since the epoch>` and the schedule's name is
/// a label value on its runs: 52 characters keep both valid (as CronJob's limit).
pub const MAX_NAME_LENGTH: usize = 52;
pub const NAME_LENGTH_RULE: &str = "self.metadata.name.size() <= 52";
pub const NAME_LENGTH_MESSAGE: &str = "an AmperityWorkflowSchedule's name may be at most 52 characters: its runs are named <schedule>-<minutes since the epoch>";
/// Bounds of the history limits and the starting deadline.
pub const MAX_HISTORY_LIMIT: u32 = 100;
pub const MAX_STARTING_DEADLINE_SECONDS: i64 = 31_536_000;

/// Starts AmperityWorkflowRuns from a template on a cron schedule, like a CronJob
/// starts Jobs: one run per scheduled time, at most one missed time caught up after
/// downtime, older runs deleted beyond the history limits.
// Each printer column repeats `type_ = "string"`, which clippy reads as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "amperity.dev",
    version = "v1alpha1",
    kind = "AmperityWorkflowSchedule",
    doc = "Starts AmperityWorkflowRuns from a template on a cron schedule",
    plural = "amperityworkflowschedules",
    shortname = "awsched",
    category = "amperity",
    namespaced,
    status = "AmperityWorkflowScheduleStatus",
    derive = "PartialEq",
    cel,
    validation = Rule::new(NAME_LENGTH_RULE).message(NAME_LENGTH_MESSAGE),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "TimeZone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.active[*].name"),
    printcolumn(
        name = "Last Schedule",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    ),
    printcolumn(
        name = "Last Result",
        type_ = "string",
        json_path = ".status.lastRun.result"
    ),
    // A string: kubectl shows a future date column as <invalid>.
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextScheduleTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AmperityWorkflowScheduleSpec {
    /// When to start a run: five cron fields (minute hour day-of-month month
    /// day-of-week, e.g. `0 6 * * 1-5` for 06:00 on weekdays) or one of `@hourly`,
    /// `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`).
    /// A day of month and a day of week both given match either, as in cron.
    #[schemars(length(min = 1, max = 128), regex(pattern = CRON_PATTERN))]
    pub schedule: String,

    /// The IANA time zone the schedule is read in, e.g. `America/New_York`; default
    /// UTC. A time that a daylight-saving change skips runs as much later as the
    /// clock jumped (02:30 becomes 03:30); a time that happens twice runs once, at
    /// its first occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: Option<String>,

    /// The run to start at each scheduled time. A change applies to runs created
    /// after it; runs already created keep their spec.
    pub run_template: RunTemplate,

    /// What to do when a run is due while an earlier one is still in flight:
    /// Forbid (default) skips the new one, Allow starts it anyway, Replace stops the
    /// earlier runs (their `spec.stop`) and starts the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,

    /// A run more than this many seconds late (the operator was down, or the
    /// schedule suspended) is skipped instead of started. Without it, after
    /// downtime the most recent missed time runs however late; never more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub starting_deadline_seconds: Option<i64>,

    /// True stops starting runs on schedule (runs in flight go on; times that pass
    /// while suspended are skipped, not caught up). `amperity.dev/run-now` still works.
    #[serde(default)]
    pub suspend: bool,

    /// How many succeeded runs to keep (default 3); older ones are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: Option<u32>,

    /// How many failed, canceled or timed-out runs to keep (default 1); older ones
    /// are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: Option<u32>,
}

/// The run each scheduled time creates, as a CronJob's `jobTemplate`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct RunTemplate {
    /// Labels and annotations for the runs. The operator adds the label
    /// `amperity.dev/schedule` and the annotations `amperity.dev/scheduled-at` and
    /// `amperity.dev/trigger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RunTemplateMetadata>,

    /// The runs' spec: an AmperityWorkflowRun's spec without `stop` and
    /// `workflowId` (each run starts its own Amperity run; stop a run on the run).
    #[schemars(schema_with = "run_template_spec_schema")]
    pub spec: AmperityWorkflowRunSpec,
}

/// Metadata copied onto every run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct RunTemplateMetadata {
    /// Labels for the runs: Kubernetes label keys (an optional DNS-subdomain prefix
    /// and `/`, then a name of at most 63 characters) and values (at most 63
    /// characters, alphanumerics with `-`, `_`, `.` inside).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "template_labels_schema")]
    pub labels: BTreeMap<String, String>,
    /// Annotations for the runs: Kubernetes annotation keys, none under
    /// `amperity.dev/` (those are the operator's, and one could answer a question
    /// the operator asks a person).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "template_annotations_schema")]
    pub annotations: BTreeMap<String, String>,
}

/// At most this many labels or annotations in a run template (few, to keep the
/// CEL rules' estimated cost low: as Gateway API does for its infrastructure labels).
pub const MAX_TEMPLATE_ENTRIES: usize = 16;
/// The longest annotation value in a run template.
pub const MAX_TEMPLATE_ANNOTATION_VALUE: usize = 1024;
/// A qualified key: an optional DNS-subdomain prefix and `/`, then a name.
pub const QUALIFIED_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";
/// A label value: empty, or alphanumerics with `-`, `_`, `.` inside.
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// The annotation prefix the operator keeps for itself.
pub const OPERATOR_PREFIX: &str = "amperity.dev/";

const KEY_RULE: &str = "self.all(k, k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || k.matches('^[^/]{1,253}/')))";
const KEY_MESSAGE: &str = "each key must be a Kubernetes qualified name: an optional DNS-subdomain prefix (at most 253 characters) and '/', then a name of at most 63 characters (alphanumerics, '-', '_', '.', starting and ending alphanumeric)";

fn template_map_schema(value_max: usize, rules: Vec<Value>) -> Schema {
    let schema = serde_json::json!({
        "type": "object",
        "maxProperties": MAX_TEMPLATE_ENTRIES,
        "additionalProperties": {"type": "string", "maxLength": value_max},
        "x-kubernetes-validations": rules,
    });
    Schema::try_from(schema).expect("a JSON object is a schema")
}

pub fn template_labels_schema(_: &mut SchemaGenerator) -> Schema {
    template_map_schema(
        63,
        vec![
            serde_json::json!({"rule": KEY_RULE, "message": KEY_MESSAGE}),
            serde_json::json!({
                "rule": "self.all(k, self[k].matches('^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'))",
                "message": "each label value must be at most 63 characters: empty, or alphanumerics with '-', '_', '.' inside"
            }),
        ],
    )
}

pub fn template_annotations_schema(_: &mut SchemaGenerator) -> Schema {
    template_map_schema(
        MAX_TEMPLATE_ANNOTATION_VALUE,
        vec![
            serde_json::json!({"rule": KEY_RULE, "message": KEY_MESSAGE}),
            serde_json::json!({
                "rule": "!self.exists(k, k.startsWith('amperity.dev/'))",
                "message": "annotations under amperity.dev/ are the operator's: remove them from runTemplate.metadata.annotations"
            }),
        ],
    )
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    /// Skip a scheduled time while a run is in flight.
    #[default]
    Forbid,
    /// Start runs whether or not earlier ones are in flight.
    Allow,
    /// Stop the runs in flight and start the new one.
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Allow => "Allow",
            ConcurrencyPolicy::Replace => "Replace",
        }
    }
}

/// Fields of the run spec a template may not set.
pub const TEMPLATE_FORBIDDEN_FIELDS: &[&str] = &["stop", "workflowId"];

/// The run spec's schema without `stop` and `workflowId`, and without the
/// top-level rules that compare with `oldSelf` (a template is editable; each run it
/// creates is immutable on its own). The API server then prunes the two fields.
pub fn run_template_spec_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = AmperityWorkflowRunSpec::json_schema(generator);
    let object = schema.ensure_object();
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for field in TEMPLATE_FORBIDDEN_FIELDS {
            properties.remove(*field);
        }
    }
    if let Some(Value::Array(required)) = object.get_mut("required") {
        required.retain(|f| !TEMPLATE_FORBIDDEN_FIELDS.iter().any(|x| f == x));
    }
    if let Some(Value::Array(rules)) = object.get_mut("x-kubernetes-validations") {
        rules.retain(|r| !r["rule"].as_str().unwrap_or_default().contains("oldSelf"));
        if rules.is_empty() {
            object.remove("x-kubernetes-validations");
        }
    }
    schema
}

/// Where the schedule stands: what ran last and how it ended, what is in flight,
/// and when the next run is due.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmperityWorkflowScheduleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The scheduled time of the last run started on schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the last run that succeeded finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the next run is due; empty while the schedule is suspended or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The last scheduled time that passed without a run: a run was in flight
    /// (Forbid), the schedule was suspended, or the starting deadline had passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped_time: Option<Time>,
    /// The runs of this schedule that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ActiveRun>,
    /// The most recent run that finished, and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    /// The last value of the `amperity.dev/run-now` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_run_now: Option<String>,
    /// The `amperity.dev/run-now` values handled (run, or ignored as older than the
    /// schedule), oldest first, at most 32: a value among them never runs again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub handled_run_now: Vec<String>,
    /// A run-now value waiting for the runs in flight to finish (concurrencyPolicy
    /// Forbid): it runs once they have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_run_now: Option<String>,
    /// The schedule and time zone the slots are read from (`<schedule> in <zone>`),
    /// and since when: slots of a pattern before it was set are never run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_schedule: Option<String>,
    /// When `observedSchedule` was first seen (its creation or its last edit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_schedule_since: Option<Time>,
    /// How many `amperity.dev/run-now` values were acted on; the next run-now run
    /// is named `<schedule>-now-<count + 1>`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run_now_count: u64,
    /// `Ready`: the schedule is valid and operating (False with the reason when
    /// not). `Stalled`: the spec is invalid and a person must fix it.
    /// `LastRunSucceeded`: how the most recent finished run ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A run of this schedule that has not finished.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveRun {
    /// The AmperityWorkflowRun's name.
    pub name: String,
    /// The time it was scheduled for (or, for a run-now run, requested at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<Time>,
    /// The run's phase; empty until the operator first reconciled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
}

/// The most recent run of this schedule that finished.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// The AmperityWorkflowRun's name (it may since have been deleted).
    pub name: String,
    /// The time it was scheduled for (or, for a run-now run, requested at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<Time>,
    /// How it ended: Succeeded, Failed, Canceled or TimedOut.
    pub result: Phase,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The reason of the run's Succeeded condition, e.g. CustomerError.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The message of the run's Succeeded condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
