//! `AmperityConnection` and `ClusterAmperityConnection`: an Amperity tenant, its
//! endpoint and the Secret holding its credentials, declared once by whoever owns
//! them and referenced by runs and schedules (`spec.connectionRef`), in the manner
//! of cert-manager's `Issuer`/`ClusterIssuer`. Only kube, serde and schemars here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{MAX_ENDPOINT_CHARS, SECRET_KEY_PATTERN, SECRET_NAME_PATTERN, TokenSecretRef};

/// A namespace's name (RFC 1123 label), as Kubernetes requires.
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A tenant and the credentials to reach it, for the runs and schedules of this
/// namespace.
// Each printer column repeats `type_ = "string"`, which clippy reads as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "amperity.dev",
    version = "v1alpha1",
    kind = "AmperityConnection",
    doc = "An Amperity tenant and the Secret holding its credentials, for the runs and schedules of one namespace",
    plural = "amperityconnections",
    shortname = "aconn",
    category = "amperity",
    namespaced,
    status = "ConnectionStatus",
    derive = "PartialEq",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenant"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Principal",
        type_ = "string",
        json_path = ".status.principalName"
    ),
    printcolumn(name = "Runs", type_ = "integer", json_path = ".status.runs"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AmperityConnectionSpec {
    /// The tenant, where its API is, and how fast it may be sent requests.
    #[serde(flatten)]
    pub target: ConnectionTarget,

    /// Secret in this namespace holding `token` (a bearer JWT) or `client_id` +
    /// `client_secret` (OAuth client credentials), as runs accept them.
    pub token_secret_ref: TokenSecretRef,
}

/// A tenant and the credentials to reach it, for the runs and schedules of the
/// namespaces its `namespaceSelector` chooses. Its Secret lives in a namespace
/// of the platform team's (by default the operator's own).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "amperity.dev",
    version = "v1alpha1",
    kind = "ClusterAmperityConnection",
    doc = "An Amperity tenant and the Secret holding its credentials, for the runs and schedules of the namespaces it chooses",
    plural = "clusteramperityconnections",
    shortname = "caconn",
    category = "amperity",
    status = "ConnectionStatus",
    derive = "PartialEq",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenant"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Principal",
        type_ = "string",
        json_path = ".status.principalName"
    ),
    printcolumn(name = "Runs", type_ = "integer", json_path = ".status.runs"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAmperityConnectionSpec {
    /// The tenant, where its API is, and how fast it may be sent requests.
    #[serde(flatten)]
    pub target: ConnectionTarget,

    /// The Secret holding `token` or `client_id` + `client_secret`, in `namespace`
    /// (default: the operator's own namespace).
    pub token_secret_ref: ClusterTokenSecretRef,

    /// Which namespaces' runs and schedules may use this connection. Required:
    /// `{}` chooses every namespace.
    pub namespace_selector: LabelSelector,
}

/// What both kinds of connection say about the tenant: who it is, where its API
/// is, and how fast it may be sent requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionTarget {
    /// Amperity tenant id, sent as the `amperity-tenant` header. Also names the
    /// default base URL `https://{tenant}.amperity.com/api`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub tenant: String,

    /// Base URL of the Amperity API, e.g. `https://app.amperity.com/api`; must be on
    /// the operator's allow-list, like a run's `spec.endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = MAX_ENDPOINT_CHARS),
        regex(pattern = r"^https?://[^\s/]+(/\S*)?$")
    )]
    pub endpoint: Option<String>,

    /// At most this many requests a second to the tenant (at most its documented
    /// 10). Lowers the tenant's one budget for every run that reaches it, through
    /// any connection or a Secret of its own; the lowest any connection asks wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub requests_per_second: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct ClusterTokenSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub name: String,
    /// Key holding a bearer token. Default `token`; when the key is absent and the
    /// Secret has `client_id` and `client_secret`, those are used instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY_PATTERN))]
    pub key: Option<String>,
    /// The Secret's namespace; default: the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(NAMESPACE_PATTERN))]
    pub namespace: Option<String>,
}

/// What the operator found when it checked a connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// `Ready` (the credentials were verified with one authenticated call),
    /// `Stalled` (why they could not be, until someone fixes it) and `Reconciling`
    /// (True while Amperity could not be asked yet), as kstatus reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the credentials were last verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified: Option<Time>,
    /// The Amperity principal the credentials act as, when known (from the
    /// Secret's `principal` key or the runs they started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// The principal's display name, when known (names are not unique: searches
    /// compare ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_name: Option<String>,
    /// The `resourceVersion` of the Secret whose credentials act as `principalId`:
    /// a run's search for a lost start trusts the principal only while the Secret
    /// it reads is this version (a rotated Secret may act as someone else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub principal_secret_version: Option<String>,
    /// Runs in flight that use this connection now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<u32>,
}

/// Which kind of connection a run or schedule names.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum ConnectionKind {
    /// An `AmperityConnection` in the run's own namespace.
    #[default]
    AmperityConnection,
    /// A `ClusterAmperityConnection` whose `namespaceSelector` chooses the run's
    /// namespace.
    ClusterAmperityConnection,
}

/// `spec.connectionRef` of a run or a schedule's `runTemplate`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct ConnectionRef {
    /// `AmperityConnection` (default) or `ClusterAmperityConnection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ConnectionKind>,
    /// The connection's name.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub name: String,
}

impl ConnectionRef {
    pub fn kind(&self) -> ConnectionKind {
        self.kind.unwrap_or_default()
    }

    /// The [`connection_key`] of the connection a run in `namespace` names.
    pub fn key(&self, namespace: &str) -> String {
        connection_key(self.kind(), namespace, &self.name)
    }
}

/// One name for a connection wherever it is counted or remembered (the runs using
/// it, its last verification): `AmperityConnection/{namespace}/{name}`, or
/// `ClusterAmperityConnection/{name}` (a cluster connection has no namespace).
pub fn connection_key(kind: ConnectionKind, namespace: &str, name: &str) -> String {
    match kind {
        ConnectionKind::AmperityConnection => format!("AmperityConnection/{namespace}/{name}"),
        ConnectionKind::ClusterAmperityConnection => format!("ClusterAmperityConnection/{name}"),
    }
}
