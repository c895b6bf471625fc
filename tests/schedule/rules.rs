//! The schedule's rules, checked the ways they are enforced: the CRD's OpenAPI
//! keywords (any API server), its CEL rule (1.25+), and the operator's own checks
//! (`schedule::spec`). And examples/schedule.yaml: valid everywhere, and the run it
//! makes is a valid AmperityWorkflowRun.

use crate::support::crd_schema::{self, refused};

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::crd::schedule::AmperityWorkflowSchedule;
use amperity_operator::schedule::{decide, spec};
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("../../examples/schedule.yaml");

fn example() -> Value {
    let mut v: Value = serde_norway::from_str(EXAMPLE).unwrap();
    v["metadata"]["namespace"] = json!("marketing");
    v
}

fn with(mutate: impl FnOnce(&mut Value)) -> Value {
    let mut v = example();
    mutate(&mut v);
    v
}

/// The operator's own verdict: the fields it names.
fn operator_refuses(object: &Value) -> Vec<String> {
    let mut s: AmperityWorkflowSchedule = serde_json::from_value(object.clone()).unwrap();
    s.metadata.creation_timestamp = None;
    match spec::check(&s, "2025-04-18T00:00:00Z".parse().unwrap()) {
        Ok(_) => vec![],
        Err(errors) => errors.into_iter().map(|e| e.path).collect(),
    }
}

#[test]
fn the_example_schedule_is_valid_everywhere_and_makes_a_valid_run() {
    let object = example();
    assert_eq!(
        refused::<AmperityWorkflowSchedule>(&object, None),
        Vec::<String>::new()
    );
    assert_eq!(operator_refuses(&object), Vec::<String>::new());
    let mut s: AmperityWorkflowSchedule = serde_json::from_value(object).unwrap();
    s.metadata.uid = Some("u".into());
    s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2025-04-17T00:00:00Z".parse().unwrap(),
    ));
    // 02:30 in New York on 2025-04-18 is 06:30 UTC.
    let plan = decide(&s, &[], "2025-04-18T06:30:00Z".parse().unwrap());
    let run = serde_json::to_value(&plan.create.expect("a run at 02:30").run).unwrap();
    assert_eq!(run["metadata"]["name"], "nightly-ingest-29082630");
    assert_eq!(run["metadata"]["labels"]["team"], "data-platform");
    assert_eq!(
        refused::<AmperityWorkflowRun>(&run, None),
        Vec::<String>::new()
    );
}

#[test]
fn the_schema_refuses_bad_schedules_naming_the_field() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "words",
            with(|v| v["spec"]["schedule"] = json!("every day")),
            "/spec/schedule",
        ),
        (
            "six fields",
            with(|v| v["spec"]["schedule"] = json!("0 30 2 * * *")),
            "/spec/schedule",
        ),
        (
            "four fields",
            with(|v| v["spec"]["schedule"] = json!("30 2 * *")),
            "/spec/schedule",
        ),
        (
            "@reboot",
            with(|v| v["spec"]["schedule"] = json!("@reboot")),
            "/spec/schedule",
        ),
        (
            "empty",
            with(|v| v["spec"]["schedule"] = json!("")),
            "/spec/schedule",
        ),
        (
            "no schedule",
            with(|v| {
                v["spec"].as_object_mut().unwrap().remove("schedule");
            }),
            "/spec/schedule",
        ),
        (
            "zone with spaces",
            with(|v| v["spec"]["timeZone"] = json!("New York")),
            "/spec/timeZone",
        ),
        (
            "policy",
            with(|v| v["spec"]["concurrencyPolicy"] = json!("Sometimes")),
            "/spec/concurrencyPolicy",
        ),
        (
            "zero deadline",
            with(|v| v["spec"]["startingDeadlineSeconds"] = json!(0)),
            "/spec/startingDeadlineSeconds",
        ),
        (
            "history",
            with(|v| v["spec"]["successfulRunsHistoryLimit"] = json!(101)),
            "/spec/successfulRunsHistoryLimit",
        ),
        (
            "negative history",
            with(|v| v["spec"]["failedRunsHistoryLimit"] = json!(-1)),
            "/spec/failedRunsHistoryLimit",
        ),
        (
            "no template",
            with(|v| {
                v["spec"].as_object_mut().unwrap().remove("runTemplate");
            }),
            "/spec/runTemplate",
        ),
        // The template's spec is checked by the run's own schema.
        (
            "template config id",
            with(|v| v["spec"]["runTemplate"]["spec"]["configId"] = json!("nope")),
            "/spec/runTemplate/spec/configId",
        ),
        (
            "template run mode",
            with(|v| v["spec"]["runTemplate"]["spec"]["runMode"] = json!("weekly")),
            "/spec/runTemplate/spec/runMode",
        ),
    ];
    for (name, object, path) in cases {
        let paths = refused::<AmperityWorkflowSchedule>(&object, None);
        assert!(
            paths.iter().any(|p| p == path),
            "{name}: {paths:?} lacks {path}"
        );
    }
    // What the operator checks itself, whatever the API server enforced.
    for (object, field) in [
        (
            with(|v| v["spec"]["schedule"] = json!("every day")),
            "spec.schedule",
        ),
        (
            with(|v| v["spec"]["schedule"] = json!("0 0 30 2 *")),
            "spec.schedule",
        ),
        (
            with(|v| v["spec"]["timeZone"] = json!("Mars/Olympus_Mons")),
            "spec.timeZone",
        ),
        (
            with(|v| v["spec"]["runTemplate"]["spec"]["configId"] = json!("nope")),
            "spec.runTemplate.spec.configId",
        ),
        (
            with(|v| v["spec"]["runTemplate"]["spec"]["timeout"] = json!("0s")),
            "spec.runTemplate.spec.timeout",
        ),
        (
            with(|v| v["metadata"]["name"] = json!("n".repeat(53))),
            "metadata.name",
        ),
    ] {
        let fields = operator_refuses(&object);
        assert!(
            fields.iter().any(|f| f == field),
            "{fields:?} lacks {field}"
        );
    }
}

#[test]
fn cel_limits_the_name_and_keeps_the_template_editable() {
    let long = with(|v| v["metadata"]["name"] = json!("n".repeat(53)));
    let paths = refused::<AmperityWorkflowSchedule>(&long, None);
    assert!(
        paths.iter().any(|p| p.contains("52 characters")),
        "{paths:?}"
    );
    assert_eq!(
        refused::<AmperityWorkflowSchedule>(
            &with(|v| v["metadata"]["name"] = json!("n".repeat(52))),
            None
        ),
        Vec::<String>::new()
    );
    // A run's spec is immutable; a template's is not.
    let edited = with(|v| v["spec"]["runTemplate"]["spec"]["configId"] = json!("cg-other"));
    assert_eq!(
        refused::<AmperityWorkflowSchedule>(&edited, Some(&example())),
        Vec::<String>::new()
    );
    // The template's own rules still apply (range order).
    let backwards = with(|v| {
        v["spec"]["runTemplate"]["spec"]["range"] =
            json!({"from": "2025-04-19", "to": "2025-04-18"})
    });
    let paths = refused::<AmperityWorkflowSchedule>(&backwards, None);
    assert!(
        paths.iter().any(|p| p.contains("must be after range.from")),
        "{paths:?}"
    );
}

#[test]
fn a_template_cannot_carry_stop_or_workflow_id() {
    let schema = crd_schema::openapi::<AmperityWorkflowSchedule>();
    let template = &schema["properties"]["spec"]["properties"]["runTemplate"]["properties"]["spec"];
    let fields: Vec<&String> = template["properties"].as_object().unwrap().keys().collect();
    assert!(fields.iter().any(|f| *f == "configId"));
    for forbidden in ["stop", "workflowId"] {
        assert!(
            !fields.iter().any(|f| *f == forbidden),
            "{forbidden} in {fields:?}"
        );
    }
    // A structural schema without them: the API server prunes them on write.
    assert!(
        template
            .get("x-kubernetes-preserve-unknown-fields")
            .is_none()
    );
}

#[test]
fn template_labels_and_annotations_are_checked_at_apply_time() {
    let meta = |labels: Value, annotations: Value| {
        with(move |v| {
            v["spec"]["runTemplate"]["metadata"] =
                json!({"labels": labels, "annotations": annotations})
        })
    };
    let good = meta(
        json!({"team": "data", "app.kubernetes.io/part-of": "nightly", "empty": ""}),
        json!({"example.com/owner": "Data team <data@example.com>"}),
    );
    assert_eq!(
        refused::<AmperityWorkflowSchedule>(&good, None),
        Vec::<String>::new()
    );
    assert_eq!(operator_refuses(&good), Vec::<String>::new());
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "a label value with a space",
            meta(json!({"team": "data team"}), json!({})),
            "label value",
            "spec.runTemplate.metadata.labels[team]",
        ),
        (
            "a label value of 64 characters",
            meta(json!({"team": "x".repeat(64)}), json!({})),
            "/spec/runTemplate/metadata/labels/team",
            "spec.runTemplate.metadata.labels[team]",
        ),
        (
            "a label key with two slashes",
            meta(json!({"a/b/c": "x"}), json!({})),
            "qualified name",
            "spec.runTemplate.metadata.labels",
        ),
        (
            "a label name of 64 characters",
            meta(json!({"n".repeat(64): "x"}), json!({})),
            "qualified name",
            "spec.runTemplate.metadata.labels",
        ),
        (
            "an annotation key with a space",
            meta(json!({}), json!({"my note": "x"})),
            "qualified name",
            "spec.runTemplate.metadata.annotations",
        ),
        (
            "the operator's own annotation",
            meta(
                json!({}),
                json!({"amperity.dev/resolve-start": "adopt wf-1"}),
            ),
            "amperity.dev/",
            "spec.runTemplate.metadata.annotations",
        ),
        (
            "too many labels",
            meta(
                Value::Object((0..17).map(|n| (format!("l{n}"), json!("x"))).collect()),
                json!({}),
            ),
            "/spec/runTemplate/metadata/labels",
            "spec.runTemplate.metadata.labels",
        ),
    ];
    for (name, object, schema_says, field) in cases {
        let paths = refused::<AmperityWorkflowSchedule>(&object, None);
        assert!(
            paths.iter().any(|p| p.contains(schema_says)),
            "{name}: the schema's {paths:?} lacks {schema_says}"
        );
        let fields = operator_refuses(&object);
        assert!(
            fields.iter().any(|f| f == field),
            "{name}: the operator's {fields:?} lacks {field}"
        );
    }
    // Within seconds of the apply on an API server without CEL: Stalled, naming the key.
    let mut s: AmperityWorkflowSchedule = serde_json::from_value(meta(
        json!({}),
        json!({"amperity.dev/resolve-start": "adopt wf-1"}),
    ))
    .unwrap();
    s.metadata.uid = Some("u".into());
    let plan = decide(&s, &[], "2025-04-18T06:30:00Z".parse().unwrap());
    assert!(plan.create.is_none());
    let stalled = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        stalled.message.contains("amperity.dev/resolve-start"),
        "{}",
        stalled.message
    );
}
