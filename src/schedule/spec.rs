//! The schedule's spec rules, enforced in Rust: the reconciler checks them before it
//! creates any run (API servers older than 1.25 ignore the CRD's CEL rule, and a
//! schema cannot say whether a pattern matches a real date).

use jiff::Timestamp;

use super::cron::CronSchedule;
use crate::bounded::cut;
use crate::crd::schedule::{
    AmperityWorkflowSchedule, LABEL_VALUE_PATTERN, MAX_HISTORY_LIMIT, MAX_NAME_LENGTH,
    MAX_STARTING_DEADLINE_SECONDS, MAX_TEMPLATE_ANNOTATION_VALUE, MAX_TEMPLATE_ENTRIES,
    OPERATOR_PREFIX, QUALIFIED_KEY_PATTERN, RunTemplateMetadata,
};
use crate::run::validate::{self, FieldError};

/// The schedule's cron pattern parsed in its zone, or every problem of its spec.
pub fn check(
    schedule: &AmperityWorkflowSchedule,
    now: Timestamp,
) -> Result<CronSchedule, Vec<FieldError>> {
    let spec = &schedule.spec;
    let mut errors = Vec::new();
    let mut err = |path: &str, message: String| {
        errors.push(FieldError {
            path: path.to_string(),
            message,
        })
    };
    let name = schedule.metadata.name.as_deref().unwrap_or_default();
    if name.len() > MAX_NAME_LENGTH {
        err(
            "metadata.name",
            format!(
                "{} characters is too long: at most {MAX_NAME_LENGTH}, so that run names (<schedule>-<minutes since the epoch>) stay valid label values",
                name.len()
            ),
        );
    }
    let parsed =
        CronSchedule::parse(&spec.schedule, spec.time_zone.as_deref(), now).map_err(|e| match e {
            super::cron::CronError::TimeZone(_) => ("spec.timeZone", e.to_string()),
            _ => ("spec.schedule", e.to_string()),
        });
    if let Err((path, message)) = &parsed {
        err(path, message.clone());
    }
    if let Some(seconds) = spec.starting_deadline_seconds
        && !(1..=MAX_STARTING_DEADLINE_SECONDS).contains(&seconds)
    {
        err(
            "spec.startingDeadlineSeconds",
            format!("{seconds} is out of range: use 1 to {MAX_STARTING_DEADLINE_SECONDS} seconds"),
        );
    }
    for (path, limit) in [
        (
            "spec.successfulRunsHistoryLimit",
            spec.successful_runs_history_limit,
        ),
        (
            "spec.failedRunsHistoryLimit",
            spec.failed_runs_history_limit,
        ),
    ] {
        if let Some(n) = limit
            && n > MAX_HISTORY_LIMIT
        {
            err(
                path,
                format!("{n} is out of range: keep 0 to {MAX_HISTORY_LIMIT} runs"),
            );
        }
    }
    if let Some(meta) = &spec.run_template.metadata {
        for (path, message) in template_metadata_problems(meta) {
            err(&path, message);
        }
    }
    let template = &spec.run_template.spec;
    if template.stop {
        err(
            "spec.runTemplate.spec.stop",
            "a template cannot stop its runs: set stop on a run itself".into(),
        );
    }
    if template.workflow_id.is_some() {
        err(
            "spec.runTemplate.spec.workflowId",
            "a template cannot follow one existing Amperity run: each scheduled run starts its own"
                .into(),
        );
    }
    if let Err(problems) = validate::validate_spec(template) {
        for p in problems {
            let path = match p.path.strip_prefix("spec.") {
                Some(rest) => format!("spec.runTemplate.spec.{rest}"),
                None => format!("spec.runTemplate.{}", p.path),
            };
            err(&path, p.message);
        }
    }
    match parsed {
        Ok(parsed) if errors.is_empty() => Ok(parsed),
        _ => Err(errors),
    }
}

/// What is wrong with a run template's labels and annotations (the CRD's CEL rules,
/// for API servers that ignore them): Kubernetes' key and value rules, and no
/// annotation under `amperity.dev/`.
pub fn template_metadata_problems(meta: &RunTemplateMetadata) -> Vec<(String, String)> {
    let key_shape = regex::Regex::new(QUALIFIED_KEY_PATTERN).expect("a valid pattern");
    let label_value = regex::Regex::new(LABEL_VALUE_PATTERN).expect("a valid pattern");
    let mut problems = Vec::new();
    let shown = |text: &str| format!("{:?}", cut(text, 80));
    for (field, map) in [("labels", &meta.labels), ("annotations", &meta.annotations)] {
        let base = format!("spec.runTemplate.metadata.{field}");
        if map.len() > MAX_TEMPLATE_ENTRIES {
            problems.push((
                base.clone(),
                format!("{} entries: at most {MAX_TEMPLATE_ENTRIES}", map.len()),
            ));
        }
        for (key, value) in map.iter().take(MAX_TEMPLATE_ENTRIES + 1) {
            let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
            if !key_shape.is_match(key) || name.len() > 63 || prefix.len() > 253 {
                problems.push((
                    base.clone(),
                    format!(
                        "key {} is not a Kubernetes qualified name: an optional DNS-subdomain prefix (at most 253 characters) and '/', then a name of at most 63 characters (alphanumerics, '-', '_', '.', starting and ending alphanumeric)",
                        shown(key)
                    ),
                ));
            }
            if field == "labels" && (value.len() > 63 || !label_value.is_match(value)) {
                problems.push((
                    format!("{base}[{}]", cut(key, 80)),
                    format!(
                        "{} is not a label value: at most 63 characters, empty or alphanumerics with '-', '_', '.' inside",
                        shown(value)
                    ),
                ));
            }
            if field == "annotations" && value.len() > MAX_TEMPLATE_ANNOTATION_VALUE {
                problems.push((
                    format!("{base}[{}]", cut(key, 80)),
                    format!(
                        "{} bytes: at most {MAX_TEMPLATE_ANNOTATION_VALUE}",
                        value.len()
                    ),
                ));
            }
            if field == "annotations" && key.starts_with(OPERATOR_PREFIX) {
                problems.push((
                    base.clone(),
                    format!(
                        "{} is the operator's own annotation (under {OPERATOR_PREFIX}): remove it from the template",
                        shown(key)
                    ),
                ));
            }
        }
    }
    problems
}
