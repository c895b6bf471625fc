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
