//! Every spec rule, checked three ways: by the CRD's OpenAPI keywords (what any API
//! server enforces), by its CEL rules (what 1.25+ API servers enforce), and by the
//! Rust validator the reconciler and `local` use. A bad spec must be rejected by the
//! Rust validator AND by the CRD, each naming the field.

use crate::support::crd_schema;

use amperity_operator::crd::AmperityWorkflowRun;
use amperity_operator::run::validate::validate_spec_value;
use serde_json::{Value, json};

fn valid_spec() -> Value {
    json!({
        "tenant": "socktown",
        "tokenSecretRef": {"name": "amperity-api", "key": "token"},
        "configId": "cg-123ABc4DE",
        "runMode": "source",
        "range": {"from": "2025-04-18", "to": "2025-04-19"},
        "pollInterval": "30s",
        "timeout": "6h",
        "retry": {"limit": 2},
        "ttlSecondsAfterFinished": 86400,
        "stop": false,
        "deletionPolicy": "Stop"
    })
}

fn resource(spec: Value) -> Value {
    json!({
        "apiVersion": "amperity.dev/v1alpha1",
        "kind": "AmperityWorkflowRun",
        "metadata": {"name": "nightly", "namespace": "marketing"},
        "spec": spec
    })
}

/// What the CRD refuses (OpenAPI keywords and CEL), as paths and messages.
fn schema_errors(object: &Value) -> Vec<String> {
    crd_schema::refused::<AmperityWorkflowRun>(object, None)
}

fn cel_errors(object: &Value, old: Option<&Value>) -> Result<(), Vec<String>> {
    crd_schema::cel_refusals::<AmperityWorkflowRun>(object, old)
}

fn rust_paths(spec: &Value) -> Vec<String> {
    validate_spec_value(spec)
        .into_iter()
        .map(|e| e.path)
        .collect()
}

fn with(mutate: impl FnOnce(&mut Value)) -> Value {
    let mut spec = valid_spec();
    mutate(&mut spec);
    spec
}

/// A valid spec that takes tenant and credentials from a connection.
fn by_connection(mutate: impl FnOnce(&mut Value)) -> Value {
    let mut spec = valid_spec();
    let obj = spec.as_object_mut().unwrap();
    obj.remove("tenant");
    obj.remove("tokenSecretRef");
    obj.insert("connectionRef".into(), json!({"name": "tenant-a"}));
    mutate(&mut spec);
    spec
}

#[test]
fn a_spec_naming_a_connection_is_valid_everywhere() {
    for reference in [
        json!({"name": "tenant-a"}),
        json!({"kind": "AmperityConnection", "name": "tenant-a"}),
        json!({"kind": "ClusterAmperityConnection", "name": "tenant-a"}),
    ] {
        let spec = by_connection(|s| s["connectionRef"] = reference.clone());
        assert_eq!(rust_paths(&spec), Vec::<String>::new(), "{reference}");
        assert_eq!(
            schema_errors(&resource(spec)),
            Vec::<String>::new(),
            "{reference}"
        );
    }
}

#[test]
fn the_example_spec_is_valid_everywhere() {
    assert_eq!(rust_paths(&valid_spec()), Vec::<String>::new());
    assert_eq!(schema_errors(&resource(valid_spec())), Vec::<String>::new());
    let minimal = json!({"tenant": "t", "tokenSecretRef": {"name": "s"}, "configId": "og-1"});
    assert_eq!(rust_paths(&minimal), Vec::<String>::new());
    assert_eq!(schema_errors(&resource(minimal)), Vec::<String>::new());
    let datetimes = with(|s| {
        s["range"] = json!({"from": "2025-04-18T06:00:00Z", "to": "2025-04-18T06:00:01.5Z"})
    });
    assert_eq!(rust_paths(&datetimes), Vec::<String>::new());
    assert_eq!(schema_errors(&resource(datetimes)), Vec::<String>::new());
    for id in ["wf-20250418-33851-Nf2Hx", "a.b", ".x", "x.."] {
        let tracked = with(|s| s["workflowId"] = json!(id));
        assert_eq!(rust_paths(&tracked), Vec::<String>::new(), "{id}");
        assert_eq!(
            schema_errors(&resource(tracked)),
            Vec::<String>::new(),
            "{id}"
        );
    }
}

#[test]
fn every_bad_input_is_rejected_naming_its_field() {
    // (case, bad spec, the field that must be named, a word the CEL/schema error carries)
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing configId",
            with(|s| {
                s.as_object_mut().unwrap().remove("configId");
            }),
            "spec.configId",
        ),
        (
            "configId of the wrong kind",
            with(|s| s["configId"] = json!("xx-123")),
            "spec.configId",
        ),
        (
            "configId without id",
            with(|s| s["configId"] = json!("cg-")),
            "spec.configId",
        ),
        (
            "configId with spaces",
            with(|s| s["configId"] = json!("cg-12 34")),
            "spec.configId",
        ),
        (
            "unknown runMode",
            with(|s| s["runMode"] = json!("weekly")),
            "spec.runMode",
        ),
        (
            "malformed range.from",
            with(|s| s["range"]["from"] = json!("18/04/2025")),
            "spec.range.from",
        ),
        (
            "range.from with an offset",
            with(|s| s["range"]["from"] = json!("2025-04-18T06:00:00+02:00")),
            "spec.range.from",
        ),
        (
            // A 1.25+ API server's CEL timestamp() cannot read it: refused by the schema.
            "range.from without seconds",
            with(|s| s["range"]["from"] = json!("2025-04-18T06:00Z")),
            "spec.range.from",
        ),
        (
            "malformed range.to",
            with(|s| s["range"]["to"] = json!("tomorrow")),
            "spec.range.to",
        ),
        (
            "range.to without range.from",
            with(|s| s["range"] = json!({"to": "2025-04-19"})),
            "spec.range.from",
        ),
        (
            "range.to before range.from",
            with(|s| s["range"] = json!({"from": "2025-04-19", "to": "2025-04-18"})),
            "spec.range.to",
        ),
        (
            "range.to equal to range.from",
            with(|s| s["range"] = json!({"from": "2025-04-18", "to": "2025-04-18T00:00:00Z"})),
            "spec.range.to",
        ),
        (
            "pollInterval under 5s",
            with(|s| s["pollInterval"] = json!("4s")),
            "spec.pollInterval",
        ),
        (
            "zero pollInterval",
            with(|s| s["pollInterval"] = json!("0s")),
            "spec.pollInterval",
        ),
        (
            "negative pollInterval",
            with(|s| s["pollInterval"] = json!("-30s")),
            "spec.pollInterval",
        ),
        (
            "malformed pollInterval",
            with(|s| s["pollInterval"] = json!("soon")),
            "spec.pollInterval",
        ),
        (
            "zero timeout",
            with(|s| s["timeout"] = json!("0s")),
            "spec.timeout",
        ),
        (
            "malformed timeout",
            with(|s| s["timeout"] = json!("6 hours")),
            "spec.timeout",
        ),
        (
            "retry.limit above 10",
            with(|s| s["retry"]["limit"] = json!(11)),
            "spec.retry.limit",
        ),
        (
            "negative retry.limit",
            with(|s| s["retry"]["limit"] = json!(-1)),
            "spec.retry.limit",
        ),
        (
            "negative ttl",
            with(|s| s["ttlSecondsAfterFinished"] = json!(-5)),
            "spec.ttlSecondsAfterFinished",
        ),
        (
            "ttl beyond a year (a clock overflow once)",
            with(|s| s["ttlSecondsAfterFinished"] = json!(300_000_000_000i64)),
            "spec.ttlSecondsAfterFinished",
        ),
        (
            "pollInterval over a day",
            with(|s| s["pollInterval"] = json!("25h")),
            "spec.pollInterval",
        ),
        (
            "timeout over 30 days",
            with(|s| s["timeout"] = json!("721h")),
            "spec.timeout",
        ),
        (
            "a duration too long to be one",
            with(|s| s["timeout"] = json!("9".repeat(40) + "h")),
            "spec.timeout",
        ),
        (
            "Secret name that is not a DNS subdomain",
            with(|s| s["tokenSecretRef"]["name"] = json!("DB_Creds")),
            "spec.tokenSecretRef.name",
        ),
        (
            "Secret name with a path",
            with(|s| s["tokenSecretRef"]["name"] = json!("../kube-system/x")),
            "spec.tokenSecretRef.name",
        ),
        (
            "Secret key with a slash",
            with(|s| s["tokenSecretRef"]["key"] = json!("a/b")),
            "spec.tokenSecretRef.key",
        ),
        (
            "endpoint too long",
            with(|s| {
                s["endpoint"] = json!(format!("https://app.amperity.com/{}", "a".repeat(600)))
            }),
            "spec.endpoint",
        ),
        (
            "unknown deletionPolicy",
            with(|s| s["deletionPolicy"] = json!("Keep")),
            "spec.deletionPolicy",
        ),
        (
            "missing tokenSecretRef",
            with(|s| {
                s.as_object_mut().unwrap().remove("tokenSecretRef");
            }),
            "spec.tokenSecretRef",
        ),
        (
            "workflowId ..",
            with(|s| s["workflowId"] = json!("..")),
            "spec.workflowId",
        ),
        (
            "workflowId .",
            with(|s| s["workflowId"] = json!(".")),
            "spec.workflowId",
        ),
        (
            "workflowId empty",
            with(|s| s["workflowId"] = json!("")),
            "spec.workflowId",
        ),
        (
            "workflowId with a slash",
            with(|s| s["workflowId"] = json!("wf-1/stop")),
            "spec.workflowId",
        ),
        (
            "workflowId with an escape",
            with(|s| s["workflowId"] = json!("wf-1\u{1b}[2J")),
            "spec.workflowId",
        ),
        (
            "missing tenant",
            with(|s| {
                s.as_object_mut().unwrap().remove("tenant");
            }),
            "spec.tenant",
        ),
        (
            "a connection and an inline tenant",
            with(|s| s["connectionRef"] = json!({"name": "tenant-a"})),
            "spec.tenant",
        ),
        (
            "a connection and an inline Secret",
            by_connection(|s| s["tokenSecretRef"] = json!({"name": "amperity-api"})),
            "spec.tokenSecretRef",
        ),
        (
            "a connection and an inline endpoint",
            by_connection(|s| s["endpoint"] = json!("https://app.amperity.com/api")),
            "spec.endpoint",
        ),
        (
            "a connection of an unknown kind",
            by_connection(|s| s["connectionRef"]["kind"] = json!("Issuer")),
            "spec.connectionRef.kind",
        ),
        (
            "a connection without a name",
            by_connection(|s| s["connectionRef"] = json!({"kind": "ClusterAmperityConnection"})),
            "spec.connectionRef.name",
        ),
        (
            "a connection name that is no resource name",
            by_connection(|s| s["connectionRef"]["name"] = json!("Tenant_A")),
            "spec.connectionRef.name",
        ),
    ];
    for (case, spec, field) in cases {
        let rust = rust_paths(&spec);
        assert!(
            rust.contains(&field.to_string()),
            "{case}: Rust validator named {rust:?}, want {field}"
        );
        let schema = schema_errors(&resource(spec));
        let pointer = format!("/{}", field.replace('.', "/"));
        let dotted = field.trim_start_matches("spec.");
        assert!(
            schema
                .iter()
                .any(|e| e.contains(&pointer) || e.contains(dotted)),
            "{case}: CRD schema errors {schema:?} do not name {field}"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let spec = json!({
        "tenant": "socktown",
        "tokenSecretRef": {"name": "s"},
        "configId": "nope",
        "runMode": "weekly",
        "pollInterval": "1s",
        "range": {"to": "2025-04-19"},
        "typo": true
    });
    let paths = rust_paths(&spec);
    for field in [
        "spec.configId",
        "spec.runMode",
        "spec.pollInterval",
        "spec.range.from",
        "spec.typo",
    ] {
        assert!(
            paths.contains(&field.to_string()),
            "{field} missing from {paths:?}"
        );
    }
}

#[test]
fn spec_is_immutable_except_stop_going_true() {
    let old = resource(valid_spec());
    let stop = resource(with(|s| s["stop"] = json!(true)));
    assert!(
        cel_errors(&stop, Some(&old)).is_ok(),
        "stop false -> true is allowed"
    );
    let unstop = resource(with(|s| s["stop"] = json!(false)));
    let err = cel_errors(&unstop, Some(&stop)).unwrap_err().join(" ");
    assert!(err.contains("stop cannot be set back"), "{err}");

    let changes: Vec<(&str, Value)> = vec![
        ("configId", with(|s| s["configId"] = json!("cg-other"))),
        ("runMode", with(|s| s["runMode"] = json!("full"))),
        ("range", with(|s| s["range"]["to"] = json!("2025-04-20"))),
        (
            "pollInterval removed",
            with(|s| {
                s.as_object_mut().unwrap().remove("pollInterval");
            }),
        ),
        (
            "workflowId added",
            with(|s| s["workflowId"] = json!("wf-1")),
        ),
        (
            "tokenSecretRef",
            with(|s| s["tokenSecretRef"]["name"] = json!("other")),
        ),
        ("tenant", with(|s| s["tenant"] = json!("other"))),
    ];
    for (case, spec) in changes {
        let err = cel_errors(&resource(spec), Some(&old))
            .expect_err(case)
            .join(" ");
        assert!(err.contains("spec is immutable"), "{case}: {err}");
    }
    assert!(
        cel_errors(&old, Some(&old)).is_ok(),
        "an unchanged spec passes"
    );
}

#[test]
fn typed_cel_helpers_agree() {
    let run: AmperityWorkflowRun = serde_json::from_value(resource(valid_spec())).unwrap();
    assert!(run.validate_cel().is_ok());
    let mut bad = run.clone();
    bad.spec.poll_interval = Some("2s".into());
    assert!(bad.validate_cel().is_err());
    let mut changed = run.clone();
    changed.spec.config_id = "cg-other".into();
    assert!(changed.validate_cel_update(&run).is_err());
}

/// Every CEL rule of the spec that applies on creation is the reconciler's rule too:
/// the Rust validator evaluates the generated CRD's own rules rather than restating
/// them, so a rule added to the CRD is enforced for API servers that ignore CEL.
#[test]
fn every_creation_rule_of_the_crd_is_enforced_by_the_reconciler() {
    let schema = crd_schema::openapi::<AmperityWorkflowRun>();
    let mut rules: Vec<(String, String)> = Vec::new();
    collect_rules(&schema["properties"]["spec"], "spec", &mut rules);
    let creation: Vec<_> = rules
        .into_iter()
        .filter(|(_, rule)| !rule.contains("oldSelf"))
        .collect();
    assert!(creation.len() >= 8, "{creation:?}");
    // One spec breaking each rule; each rule's message must come back from Rust.
    let breakers = [
        with(|s| {
            s.as_object_mut().unwrap().remove("tenant");
        }),
        with(|s| {
            s.as_object_mut().unwrap().remove("tokenSecretRef");
        }),
        with(|s| s["connectionRef"] = json!({"name": "tenant-a"})),
        by_connection(|s| s["endpoint"] = json!("https://app.amperity.com/api")),
        with(|s| s["pollInterval"] = json!("4s")),
        with(|s| s["timeout"] = json!("721h")),
        with(|s| s["range"] = json!({"from": "2025-04-19", "to": "2025-04-18"})),
    ];
    let messages: Vec<String> = breakers
        .iter()
        .flat_map(validate_spec_value)
        .map(|e| e.to_string())
        .collect();
    for (path, rule) in &creation {
        let schema_node = path_schema(&schema, path);
        for v in schema_node["x-kubernetes-validations"].as_array().unwrap() {
            if v["rule"] != json!(rule) {
                continue;
            }
            let field = match v["fieldPath"].as_str() {
                Some(f) => format!("{path}{f}"),
                None => path.clone(),
            };
            let want = format!("{field}: {}", v["message"].as_str().unwrap());
            assert!(
                messages.contains(&want),
                "the rule {rule:?} is not enforced by the Rust validator: {want:?} not in {messages:?}"
            );
        }
    }
}

/// The typed entry point (the reconciler's, which remembers its answers) agrees
/// with the JSON one, on first sight and when asked again.
#[test]
fn the_reconcilers_check_agrees_with_the_manifest_check() {
    use amperity_operator::crd::AmperityWorkflowRunSpec;
    use amperity_operator::run::validate::validate_spec;
    for spec in [
        valid_spec(),
        by_connection(|_| {}),
        with(|s| s["pollInterval"] = json!("4s")),
        with(|s| s["range"] = json!({"from": "2025-04-19", "to": "2025-04-18"})),
        with(|s| s["connectionRef"] = json!({"name": "tenant-a"})),
    ] {
        let typed: AmperityWorkflowRunSpec = serde_json::from_value(spec.clone()).unwrap();
        let want = validate_spec_value(&spec);
        for _ in 0..2 {
            assert_eq!(validate_spec(&typed).err().unwrap_or_default(), want);
        }
    }
}

fn collect_rules(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    for v in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push((path.to_string(), v["rule"].as_str().unwrap().to_string()));
    }
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        collect_rules(child, &format!("{path}.{name}"), out);
    }
}

fn path_schema<'a>(root: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(root, |node, name| &node["properties"][name])
}
