//! The schedule's spec rules, enforced in Rust: the reconciler checks them before it
//! creates any run (API servers older than 1.25 ignore the CRD's CEL rule, and a
//! schema cannot say whether a pattern matches a real date).

use jiff::Timestamp;

use super::cron::CronSchedule;
use crate::crd::schedule::{
    AmperityWorkflowSchedule, MAX_HISTORY_LIMIT, MAX_NAME_LENGTH, MAX_STARTING_DEADLINE_SECONDS,
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
        for key in meta
            .annotations
            .keys()
            .filter(|k| k.starts_with("amperity.dev/"))
        {
            err(
                "spec.runTemplate.metadata.annotations",
                format!(
                    "{key:?}: annotations under amperity.dev/ are the operator's and a person's answers to one run (a copied resolve-start would act with no person involved): remove it"
                ),
            );
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
