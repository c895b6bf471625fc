//! What a run and a connection spell the same way: where the token is (a Secret's
//! name and key) and how long an endpoint may be.

use serde::{Deserialize, Serialize};

/// A Secret's name: a DNS subdomain (RFC 1123), as Kubernetes requires.
pub const SECRET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key of a Secret's data, as Kubernetes requires.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// Longest `spec.endpoint`.
pub const MAX_ENDPOINT_CHARS: u32 = 512;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct TokenSecretRef {
    /// Name of a Secret in the resource's namespace.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub name: String,
    /// Key holding a bearer token. Default `token`; when the key is absent and the
    /// Secret has `client_id` and `client_secret`, those are used instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY_PATTERN))]
    pub key: Option<String>,
}
