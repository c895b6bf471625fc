//! Where a run's tenant, endpoint and credentials come from: its own spec, or the
//! connection it names. The pure part ([`resolve`]) decides from what was read;
//! [`read`] performs the reads (the connection, and for a cluster connection the
//! run's namespace, whose labels its selector matches).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::{Api, Client, ResourceExt};

use crate::amperity::Principal;
use crate::crd::connection::{
    AmperityConnection, ClusterAmperityConnection, ConnectionKind, ConnectionStatus,
};
use crate::crd::{AmperityWorkflowRun, TokenSecretRef};
use crate::run::decide::CONNECTION_NOT_ALLOWED;
use crate::run::driver::CredentialsProblem;

/// Where the run's credentials are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The Secret `name` in `namespace`: the run's own, or its connection's.
    Secret {
        namespace: String,
        secret: TokenSecretRef,
        /// Who the connection's credentials act as, from its status (None for a
        /// run's own Secret, or while the connection does not know).
        principal: Option<Vouched>,
    },
    /// No Secret may be read for this run: why (a missing or not-Ready connection
    /// stalls it; a connection that does not choose its namespace ends it).
    Refused(CredentialsProblem),
}

/// A principal a connection's status names, and the version of its Secret it
/// holds for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vouched {
    pub principal: Principal,
    pub secret_version: String,
}

impl Vouched {
    fn from_status(status: Option<&ConnectionStatus>) -> Option<Vouched> {
        let s = status?;
        let id = s.principal_id.clone().filter(|id| !id.is_empty())?;
        let secret_version = s
            .principal_secret_version
            .clone()
            .filter(|v| !v.is_empty())?;
        Some(Vouched {
            principal: Principal {
                id: Some(id),
                name: s.principal_name.clone(),
            },
            secret_version,
        })
    }
}

/// Who a run's credentials act as, for the search of a lost start: the Secret's
/// own `principal` key when it has one; else the principal its connection's
/// status names, if the Secret read is the version that principal was known for
/// (after a rotation the connection must learn it again). Without either, the
/// driver falls back on what the client learned from earlier answers.
pub fn principal_for(
    from_secret: Option<Principal>,
    vouched: Option<&Vouched>,
    secret_version: Option<&str>,
) -> Option<Principal> {
    from_secret.or_else(|| {
        vouched
            .filter(|v| secret_version == Some(v.secret_version.as_str()))
            .map(|v| v.principal.clone())
    })
}

/// What was read about the connection a run names.
pub enum Found {
    Namespaced(Option<AmperityConnection>),
    /// The cluster connection (if any) and the labels of the run's namespace.
    Cluster(Option<ClusterAmperityConnection>, BTreeMap<String, String>),
}

/// Decides where `run`'s credentials come from, and fills in the tenant, endpoint
/// and Secret of the connection it names in place of the reference, so that
/// everything after sees one shape (and validates it as such).
/// `operator_namespace` is where a cluster connection's Secret lives by default.
pub fn resolve(
    run: &mut AmperityWorkflowRun,
    namespace: &str,
    found: Option<Found>,
    operator_namespace: &str,
) -> Source {
    let Some(reference) = run.spec.connection_ref.clone() else {
        return match &run.spec.token_secret_ref {
            Some(secret) => Source::Secret {
                namespace: namespace.to_string(),
                secret: secret.clone(),
                principal: None,
            },
            None => Source::Refused(problem(
                "SecretNotFound",
                "spec.tokenSecretRef is not set: name the Secret holding the Amperity token, or a connection in spec.connectionRef".into(),
            )),
        };
    };
    let kind = reference.kind();
    let named = match kind {
        ConnectionKind::AmperityConnection => {
            format!("AmperityConnection {namespace}/{}", reference.name)
        }
        ConnectionKind::ClusterAmperityConnection => {
            format!("ClusterAmperityConnection {}", reference.name)
        }
    };
    let missing = || {
        Source::Refused(problem(
            "ConnectionNotFound",
            format!(
                "{named} (spec.connectionRef) does not exist: create it, or name another connection"
            ),
        ))
    };
    let (tenant, endpoint, secret, secret_namespace, status, generation) = match found {
        Some(Found::Namespaced(Some(c))) if kind == ConnectionKind::AmperityConnection => {
            let generation = c.metadata.generation;
            (
                c.spec.target.tenant,
                c.spec.target.endpoint,
                c.spec.token_secret_ref,
                namespace.to_string(),
                c.status,
                generation,
            )
        }
        Some(Found::Cluster(Some(c), labels))
            if kind == ConnectionKind::ClusterAmperityConnection =>
        {
            if !selects(&c.spec.namespace_selector, &labels) {
                return Source::Refused(problem(
                    CONNECTION_NOT_ALLOWED,
                    format!(
                        "{named} does not choose namespace {namespace} (its namespaceSelector): ask its owners to choose this namespace, or use a connection that does"
                    ),
                ));
            }
            let generation = c.metadata.generation;
            let r = c.spec.token_secret_ref;
            (
                c.spec.target.tenant,
                c.spec.target.endpoint,
                TokenSecretRef {
                    name: r.name,
                    key: r.key,
                },
                r.namespace
                    .unwrap_or_else(|| operator_namespace.to_string()),
                c.status,
                generation,
            )
        }
        _ => return missing(),
    };
    if let Some(why) = not_ready(status.as_ref(), generation) {
        return Source::Refused(problem(
            "ConnectionNotReady",
            format!("{named} is not Ready: {why}"),
        ));
    }
    // The run now reads as if it had been written with these inline: the rules of
    // a spec (connectionRef excludes them) hold for what is decided from it.
    run.spec.connection_ref = None;
    run.spec.tenant = Some(tenant);
    run.spec.endpoint = endpoint;
    run.spec.token_secret_ref = Some(secret.clone());
    Source::Secret {
        namespace: secret_namespace,
        secret,
        principal: Vouched::from_status(status.as_ref()),
    }
}

/// Where the credentials of a run naming a connection come from when this operator
/// serves no connections: nowhere, until it does.
pub fn disabled() -> Source {
    Source::Refused(problem(
        "ConnectionsDisabled",
        "the run names a connection (spec.connectionRef), but this operator serves none: start it with --connections (the chart's connections.enabled)".into(),
    ))
}

fn problem(reason: &str, message: String) -> CredentialsProblem {
    CredentialsProblem {
        reason: reason.to_string(),
        message,
    }
}

/// Why a connection cannot serve runs yet, or None when it is Ready for its
/// current generation.
fn not_ready(status: Option<&ConnectionStatus>, generation: Option<i64>) -> Option<String> {
    let ready = status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.observed_generation.is_none() || c.observed_generation == generation);
    match ready {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!("{} ({})", c.message, c.reason)),
        None => Some("its credentials have not been verified yet".into()),
    }
}

/// Whether a label selector chooses an object with `labels` (Kubernetes' rules:
/// every matchLabels pair and every expression must hold; `{}` chooses all).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector.match_labels.iter().flatten();
    let expressions = selector.match_expressions.iter().flatten();
    pairs.into_iter().all(|(k, v)| labels.get(k) == Some(v))
        && expressions.into_iter().all(|e| holds(e, labels))
}

fn holds(e: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = e.values.as_deref().unwrap_or_default();
    let value = labels.get(&e.key);
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // An operator Kubernetes does not know chooses nothing.
        _ => false,
    }
}

/// Reads what [`resolve`] needs about the connection `run` names (nothing when it
/// names none).
pub async fn read(
    client: &Client,
    namespace: &str,
    run: &AmperityWorkflowRun,
) -> Result<Option<Found>, kube::Error> {
    let Some(reference) = &run.spec.connection_ref else {
        return Ok(None);
    };
    Ok(Some(match reference.kind() {
        ConnectionKind::AmperityConnection => {
            let api: Api<AmperityConnection> = Api::namespaced(client.clone(), namespace);
            Found::Namespaced(api.get_opt(&reference.name).await?)
        }
        ConnectionKind::ClusterAmperityConnection => {
            let api: Api<ClusterAmperityConnection> = Api::all(client.clone());
            let connection = api.get_opt(&reference.name).await?;
            let labels = match &connection {
                Some(_) => {
                    let namespaces: Api<Namespace> = Api::all(client.clone());
                    namespaces.get(namespace).await?.labels().clone()
                }
                None => BTreeMap::new(),
            };
            Found::Cluster(connection, labels)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::connection::{
        AmperityConnectionSpec, ClusterAmperityConnectionSpec, ClusterTokenSecretRef,
        ConnectionRef, ConnectionTarget,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use serde_json::json;

    fn run(spec: serde_json::Value) -> AmperityWorkflowRun {
        serde_json::from_value(json!({
            "apiVersion": "amperity.dev/v1alpha1",
            "kind": "AmperityWorkflowRun",
            "metadata": {"name": "r", "namespace": "team-a"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn by(kind: Option<ConnectionKind>) -> AmperityWorkflowRun {
        let mut r = run(json!({"configId": "cg-1"}));
        r.spec.connection_ref = Some(ConnectionRef {
            kind,
            name: "tenant-a".into(),
        });
        r
    }

    fn ready(status: &str, generation: Option<i64>) -> ConnectionStatus {
        ConnectionStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: if status == "True" {
                    "Verified"
                } else {
                    "AuthFailed"
                }
                .into(),
                message: "Amperity answered 401".into(),
                observed_generation: generation,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
            }],
            ..ConnectionStatus::default()
        }
    }

    fn namespaced(status: Option<ConnectionStatus>) -> Found {
        let mut c = AmperityConnection::new(
            "tenant-a",
            AmperityConnectionSpec {
                target: ConnectionTarget {
                    tenant: "acme".into(),
                    endpoint: Some("https://app.amperity.com/api".into()),
                    requests_per_second: None,
                },
                token_secret_ref: TokenSecretRef {
                    name: "acme-api".into(),
                    key: None,
                },
            },
        );
        c.metadata.generation = Some(2);
        c.status = status;
        Found::Namespaced(Some(c))
    }

    fn cluster(
        selector: serde_json::Value,
        secret_namespace: Option<&str>,
        labels: &[(&str, &str)],
    ) -> Found {
        let mut c = ClusterAmperityConnection::new(
            "tenant-a",
            ClusterAmperityConnectionSpec {
                target: ConnectionTarget {
                    tenant: "acme".into(),
                    endpoint: None,
                    requests_per_second: Some(5),
                },
                token_secret_ref: ClusterTokenSecretRef {
                    name: "acme-api".into(),
                    key: Some("token".into()),
                    namespace: secret_namespace.map(str::to_string),
                },
                namespace_selector: serde_json::from_value(selector).unwrap(),
            },
        );
        c.metadata.generation = Some(1);
        c.status = Some(ready("True", Some(1)));
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Found::Cluster(Some(c), labels)
    }

    fn reason(source: &Source) -> &str {
        match source {
            Source::Refused(p) => &p.reason,
            Source::Secret { .. } => "Secret",
        }
    }

    #[test]
    fn an_inline_run_reads_its_own_secret() {
        let mut r =
            run(json!({"tenant": "acme", "tokenSecretRef": {"name": "s"}, "configId": "cg-1"}));
        let source = resolve(&mut r, "team-a", None, "amperity-system");
        assert_eq!(
            source,
            Source::Secret {
                namespace: "team-a".into(),
                secret: TokenSecretRef {
                    name: "s".into(),
                    key: None
                },
                principal: None,
            }
        );
        let mut r = run(json!({"tenant": "acme", "configId": "cg-1"}));
        assert_eq!(
            reason(&resolve(&mut r, "team-a", None, "x")),
            "SecretNotFound"
        );
    }

    #[test]
    fn a_ready_connection_supplies_tenant_endpoint_and_secret() {
        let mut r = by(None);
        let source = resolve(
            &mut r,
            "team-a",
            Some(namespaced(Some(ready("True", Some(2))))),
            "op",
        );
        assert_eq!(
            source,
            Source::Secret {
                namespace: "team-a".into(),
                secret: TokenSecretRef {
                    name: "acme-api".into(),
                    key: None
                },
                principal: None,
            }
        );
        assert_eq!(r.spec.tenant(), "acme");
        assert_eq!(
            r.spec.endpoint.as_deref(),
            Some("https://app.amperity.com/api")
        );
    }

    #[test]
    fn a_connection_vouches_for_its_principal_for_the_secret_it_knew_it_from() {
        // resolve hands on what the connection's status says, with the version.
        let mut status = ready("True", Some(2));
        status.principal_id = Some("api-key|sim-1".into());
        status.principal_name = Some("API key 1".into());
        status.principal_secret_version = Some("41".into());
        let mut r = by(None);
        let Source::Secret { principal, .. } = resolve(
            &mut r,
            "team-a",
            Some(namespaced(Some(status.clone()))),
            "op",
        ) else {
            panic!("a Ready connection serves the run")
        };
        let vouched = principal.expect("the status names a principal");
        assert_eq!(vouched.principal.id.as_deref(), Some("api-key|sim-1"));
        assert_eq!(vouched.secret_version, "41");
        // Without the version it was known for, nothing is vouched for.
        status.principal_secret_version = None;
        let mut r = by(None);
        let Source::Secret { principal, .. } =
            resolve(&mut r, "team-a", Some(namespaced(Some(status))), "op")
        else {
            panic!("a Ready connection serves the run")
        };
        assert_eq!(principal, None);

        let given = Principal::given("api-key|given");
        type Case<'a> = (&'a str, Option<Principal>, Option<&'a str>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "the Secret's own key first",
                Some(given.clone()),
                Some("41"),
                Some("api-key|given"),
            ),
            (
                "the same Secret the connection knew",
                None,
                Some("41"),
                Some("api-key|sim-1"),
            ),
            ("a rotated Secret", None, Some("42"), None),
            ("a Secret whose version is unknown", None, None, None),
        ];
        for (case, from_secret, version, want) in cases {
            let got = principal_for(from_secret, Some(&vouched), version);
            assert_eq!(got.and_then(|p| p.id).as_deref(), want, "{case}");
        }
        assert_eq!(principal_for(None, None, Some("41")), None, "no connection");
    }

    #[test]
    fn a_missing_or_unverified_connection_stalls_and_fills_nothing() {
        let cases: Vec<(&str, Option<Found>, &str)> = vec![
            (
                "not found",
                Some(Found::Namespaced(None)),
                "ConnectionNotFound",
            ),
            (
                "never verified",
                Some(namespaced(None)),
                "ConnectionNotReady",
            ),
            (
                "refused",
                Some(namespaced(Some(ready("False", Some(2))))),
                "ConnectionNotReady",
            ),
            (
                "verified before an edit",
                Some(namespaced(Some(ready("True", Some(1))))),
                "ConnectionNotReady",
            ),
            (
                "a cluster connection read for a namespaced reference",
                Some(cluster(json!({}), None, &[])),
                "ConnectionNotFound",
            ),
        ];
        for (case, found, want) in cases {
            let mut r = by(None);
            let source = resolve(&mut r, "team-a", found, "op");
            assert_eq!(reason(&source), want, "{case}");
            assert_eq!(r.spec.tenant(), "", "{case}: nothing is filled in");
            if let Source::Refused(p) = source {
                assert!(
                    p.message.contains("AmperityConnection team-a/tenant-a"),
                    "{case}: {}",
                    p.message
                );
            }
        }
    }

    #[test]
    fn a_cluster_connection_serves_only_the_namespaces_it_chooses() {
        let kind = Some(ConnectionKind::ClusterAmperityConnection);
        type Case<'a> = (
            &'a str,
            serde_json::Value,
            &'a [(&'a str, &'a str)],
            &'a str,
        );
        let cases: Vec<Case> = vec![
            ("{} chooses all", json!({}), &[], "Secret"),
            (
                "matchLabels",
                json!({"matchLabels": {"team": "a"}}),
                &[("team", "a")],
                "Secret",
            ),
            (
                "matchLabels, other value",
                json!({"matchLabels": {"team": "a"}}),
                &[("team", "b")],
                CONNECTION_NOT_ALLOWED,
            ),
            (
                "matchLabels, no label",
                json!({"matchLabels": {"team": "a"}}),
                &[],
                CONNECTION_NOT_ALLOWED,
            ),
            (
                "In",
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]}),
                &[("tier", "silver")],
                "Secret",
            ),
            (
                "In, absent",
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}),
                &[],
                CONNECTION_NOT_ALLOWED,
            ),
            (
                "NotIn, absent",
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}),
                &[],
                "Secret",
            ),
            (
                "NotIn",
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}),
                &[("tier", "gold")],
                CONNECTION_NOT_ALLOWED,
            ),
            (
                "Exists",
                json!({"matchExpressions": [{"key": "amperity", "operator": "Exists"}]}),
                &[("amperity", "")],
                "Secret",
            ),
            (
                "DoesNotExist",
                json!({"matchExpressions": [{"key": "frozen", "operator": "DoesNotExist"}]}),
                &[("frozen", "yes")],
                CONNECTION_NOT_ALLOWED,
            ),
            (
                "an unknown operator",
                json!({"matchExpressions": [{"key": "team", "operator": "Near", "values": ["a"]}]}),
                &[("team", "a")],
                CONNECTION_NOT_ALLOWED,
            ),
            (
                "both must hold",
                json!({"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                &[("team", "a")],
                CONNECTION_NOT_ALLOWED,
            ),
        ];
        for (case, selector, labels, want) in cases {
            let mut r = by(kind);
            let source = resolve(
                &mut r,
                "team-a",
                Some(cluster(selector, None, labels)),
                "amperity-system",
            );
            assert_eq!(reason(&source), want, "{case}");
            if want == CONNECTION_NOT_ALLOWED {
                assert_eq!(r.spec.tenant(), "", "{case}: nothing is filled in");
                let Source::Refused(p) = source else {
                    unreachable!()
                };
                assert!(
                    p.message.contains("does not choose namespace team-a"),
                    "{case}: {}",
                    p.message
                );
            }
        }
    }

    #[test]
    fn a_cluster_connections_secret_is_in_its_namespace_or_the_operators() {
        let kind = Some(ConnectionKind::ClusterAmperityConnection);
        for (secret_namespace, want) in [(Some("platform"), "platform"), (None, "amperity-system")]
        {
            let mut r = by(kind);
            let source = resolve(
                &mut r,
                "team-a",
                Some(cluster(json!({}), secret_namespace, &[])),
                "amperity-system",
            );
            let Source::Secret {
                namespace, secret, ..
            } = source
            else {
                panic!("{source:?}")
            };
            assert_eq!(namespace, want);
            assert_eq!(secret.key.as_deref(), Some("token"));
            assert_eq!(r.spec.tenant(), "acme");
            assert_eq!(r.spec.endpoint, None);
        }
    }
}
