//! How GitOps tools read connections: the Argo CD health check
//! (examples/gitops/argocd-health-connection.lua, under Lua 5.1 and 5.4, and its
//! copies in argocd-cm.yaml for both kinds) and kstatus' generic rules (Flux), on
//! the statuses the operator itself writes (`connection::status`).

use amperity_operator::amperity::Principal;
use amperity_operator::connection::{Verification, status};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::argocd_health::{ARGOCD_CM, health, kstatus};

const SCRIPT: &str = include_str!("../../examples/gitops/argocd-health-connection.lua");

/// A connection at `generation` whose status the operator wrote for `observed`.
fn connection(generation: i64, observed: i64, outcome: Option<&Verification>) -> Value {
    let mut obj = json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "ClusterAmperityConnection",
        "metadata": {"name": "socktown", "generation": generation},
        "spec": {"tenant": "socktown", "tokenSecretRef": {"name": "socktown-api"}, "namespaceSelector": {}},
    });
    if let Some(outcome) = outcome {
        let principal = Principal::given("api-key|1");
        let at = Timestamp::from_second(1_750_000_000).unwrap();
        let s = status(None, observed, outcome, Some(&principal), "7", 2, at);
        obj["status"] = serde_json::to_value(s).unwrap();
    }
    obj
}

/// Each outcome: what Argo CD shows, a word its message has, and kstatus' answer.
fn cases() -> Vec<(
    &'static str,
    Value,
    &'static str,
    &'static str,
    &'static str,
)> {
    let secret = Verification::SecretProblem {
        reason: "SecretNotFound".into(),
        message: "Secret platform/socktown-api (tokenSecretRef) does not exist".into(),
    };
    vec![
        (
            "not looked at yet",
            connection(1, 1, None),
            "Progressing",
            "Waiting",
            "Current",
        ),
        (
            "verified",
            connection(1, 1, Some(&Verification::Verified)),
            "Healthy",
            "accepted",
            "Current",
        ),
        (
            "Amperity could not be asked",
            connection(1, 1, Some(&Verification::Unavailable("503".into()))),
            "Progressing",
            "503",
            "InProgress",
        ),
        (
            "the Secret is missing",
            connection(1, 1, Some(&secret)),
            "Degraded",
            "does not exist",
            "Failed",
        ),
        (
            "the credentials were refused",
            connection(1, 1, Some(&Verification::Rejected("401".into()))),
            "Degraded",
            "401",
            "Failed",
        ),
        (
            "off the allow-list",
            connection(
                1,
                1,
                Some(&Verification::EndpointNotAllowed("not allowed".into())),
            ),
            "Degraded",
            "not allowed",
            "Failed",
        ),
        (
            "an edit not yet verified",
            connection(2, 1, Some(&Verification::Verified)),
            "Progressing",
            "latest change",
            "InProgress",
        ),
    ]
}

#[test]
fn kstatus_reads_what_the_operator_writes_of_a_connection() {
    for (case, obj, _, _, want) in cases() {
        assert_eq!(kstatus(&obj), want, "{case}");
    }
}

#[test]
#[ignore = "needs lua5.1 and lua5.4 (tests/e2e/testenv.sh install); cargo test -- --include-ignored"]
fn argo_cd_reads_what_the_operator_writes_of_a_connection() {
    for (case, obj, want, says, _) in cases() {
        let (got, message) = health(SCRIPT, &obj);
        assert_eq!(got, want, "{case}: {message}");
        assert!(message.contains(says), "{case}: {message:?} lacks {says:?}");
    }
}

#[test]
fn argocd_cm_carries_the_connection_check_for_both_kinds() {
    let cm: Value = serde_norway::from_str(ARGOCD_CM).unwrap();
    for kind in ["AmperityConnection", "ClusterAmperityConnection"] {
        let key = format!("resource.customizations.health.amperity.dev_{kind}");
        let inline = cm["data"][&key].as_str().unwrap_or_else(|| panic!("{key}"));
        assert_eq!(
            inline.trim_end(),
            SCRIPT.trim_end(),
            "argocd-cm.yaml must inline examples/gitops/argocd-health-connection.lua unchanged for {kind}"
        );
    }
}

/// examples/gitops/connection.yaml holds together: the cluster connection is one the
/// CRD types read, the schedule's runTemplate passes the spec rules, and the run it
/// makes, in the labelled namespace, is served by the connection (its Secret read in
/// the platform's namespace); in a namespace without the label it would be refused.
#[test]
fn the_gitops_connection_example_holds_together() {
    use amperity_operator::crd::AmperityWorkflowRun;
    use amperity_operator::crd::connection::ClusterAmperityConnection;
    use amperity_operator::run::connection::{Found, Source, resolve};
    use amperity_operator::run::validate::validate_spec_value;

    let text = include_str!("../../examples/gitops/connection.yaml");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let of = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap().clone();
    let mut connection: ClusterAmperityConnection =
        serde_json::from_value(of("ClusterAmperityConnection")).unwrap();
    assert_eq!(connection.spec.target.requests_per_second, Some(5));
    let schedule = of("AmperityWorkflowSchedule");
    let template = &schedule["spec"]["runTemplate"]["spec"];
    assert_eq!(validate_spec_value(template), vec![]);
    let namespace = of("Namespace");
    let labels = serde_json::from_value(namespace["metadata"]["labels"].clone()).unwrap();
    // The connection as the operator leaves it once verified.
    let verified = connection_status_ready();
    connection.metadata.generation = Some(1);
    connection.status = Some(verified);
    let run = || -> AmperityWorkflowRun {
        serde_json::from_value(json!({
            "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
            "metadata": {"name": "nightly-ingest-1", "namespace": "marketing"},
            "spec": template,
        }))
        .unwrap()
    };
    let mut served = run();
    let found = Found::Cluster(Some(connection.clone()), labels);
    match resolve(&mut served, "marketing", Some(found), "amperity-system") {
        Source::Secret {
            namespace, secret, ..
        } => {
            assert_eq!(namespace, "amperity-system");
            assert_eq!(secret.name, "socktown-api");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(served.spec.tenant(), "socktown");
    let mut refused = run();
    let found = Found::Cluster(Some(connection), Default::default());
    assert!(matches!(
        resolve(&mut refused, "sales", Some(found), "amperity-system"),
        Source::Refused(p) if p.reason == "ConnectionNotAllowed"
    ));
}

fn connection_status_ready() -> amperity_operator::crd::connection::ConnectionStatus {
    let at = Timestamp::from_second(1_750_000_000).unwrap();
    status(None, 1, &Verification::Verified, None, "7", 0, at)
}
