//! The Amperity REST client: start, get, list and stop workflow runs. Knows nothing
//! of Kubernetes. Every request carries the bearer token, `amperity-tenant` and
//! `api-version`, waits for the tenant's budget, and is bounded in time and size.
//! It calls only URLs on the allow-list and follows no redirects: where credentials
//! go is the operator's choice, never a resource author's or a server's.

pub mod allow;
pub mod auth;
pub mod budget;
mod client;
pub mod credentials;
pub mod error;
mod target;
mod transport;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use allow::AllowList;
pub use auth::{Credentials, SecretString};
pub use budget::Turn;
pub use error::ClientError;

pub use client::{AmperityClient, DeprecationNotice, ListQuery, Reply};
pub use target::{Principal, Target};

/// Sees every request, for metrics. The client itself stays free of any metrics crate.
pub trait Observer: Send + Sync {
    /// One answered (or failed: `status` None) request of `call` (`start`, `get`,
    /// `list`, `stop`, `feed`) to `tenant`.
    fn request(&self, call: &'static str, tenant: &str, status: Option<u16>, latency: Duration);
    /// One OAuth token exchange for `tenant`: `ok`, `refused` (the token endpoint
    /// refused the client credentials) or `failed` (it failed or did not answer).
    fn token_exchange(&self, tenant: &str, outcome: &'static str) {
        let _ = (tenant, outcome);
    }
    /// Time a request waited for the tenant's budget.
    fn waited(&self, wait: Duration);
}

/// The largest answer accepted by default: a verbose run with hundreds of tasks is
/// tens of KiB; a list page of 1,000 runs a few MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct ClientConfig {
    /// Whole-request bound (connect, send, answer).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests per second per tenant, 1 to 10 (Amperity allows 10).
    pub rate_limit_per_sec: u32,
    /// Retries of a retryable failure inside one call (never of a start whose outcome
    /// is unknown). The operator uses none: a failure goes back to the decisions,
    /// which requeue, so no reconcile waits out a backoff.
    pub max_retries: u32,
    pub user_agent: String,
    pub observer: Option<Arc<dyn Observer>>,
    /// The base URLs requests and token exchanges may go to.
    pub allow: AllowList,
    /// Answers larger than this are refused while they stream in.
    pub max_body_bytes: u64,
    pub tls: TlsConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            rate_limit_per_sec: 5,
            max_retries: 0,
            user_agent: format!("amperity-operator/{}", env!("CARGO_PKG_VERSION")),
            observer: None,
            allow: AllowList::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tls: TlsConfig::default(),
        }
    }
}

/// Which certificates TLS connections trust.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The operating system's store instead of the bundled Mozilla roots.
    pub system_roots: bool,
    /// A PEM file of further CA certificates (a TLS-inspecting proxy's, say).
    pub ca_file: Option<PathBuf>,
}
