//! The Amperity REST client: start, get, list and stop workflow runs. Knows nothing
//! of Kubernetes. Every request carries the bearer token, `amperity-tenant` and
//! `api-version`, waits for the tenant's budget, and is bounded in time.

pub mod auth;
pub mod budget;
pub mod error;
pub mod wire;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

pub use auth::{Credentials, SecretString};
use auth::{TokenCache, transport_summary};
use budget::Budgets;
pub use budget::Turn;
pub use error::ClientError;
use error::excerpt;
use wire::{RunRequest, Workflow, WorkflowList};

/// Sees every request, for metrics. The client itself stays free of any metrics crate.
pub trait Observer: Send + Sync {
    /// One answered (or failed: `status` None) request to `endpoint` of `tenant`.
    fn request(&self, endpoint: &'static str, tenant: &str, status: Option<u16>, latency: Duration);
    /// Time a request waited for the tenant's budget.
    fn waited(&self, wait: Duration);
}

#[derive(Clone)]
pub struct ClientConfig {
    /// Whole-request bound (connect, send, answer).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests per second per tenant, 1 to 10 (Amperity allows 10).
    pub rate_limit_per_sec: u32,
    /// Retries of a retryable failure (never of a start whose outcome is unknown).
    pub max_retries: u32,
    pub user_agent: String,
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            rate_limit_per_sec: 5,
            max_retries: 3,
            user_agent: format!("amperity-operator/{}", env!("CARGO_PKG_VERSION")),
            observer: None,
        }
    }
}

/// Where requests go: base URL, tenant, API version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub base_url: Url,
    pub tenant: String,
    pub api_version: String,
}

impl Target {
    /// `endpoint` overrides `default_template` (where `{tenant}` is replaced).
    /// Plain http is refused unless the host is loopback or `allow_insecure_http`.
    pub fn new(
        endpoint: Option<&str>,
        default_template: &str,
        tenant: &str,
        api_version: &str,
        allow_insecure_http: bool,
    ) -> Result<Target, ClientError> {
        let raw = match endpoint {
            Some(e) => e.to_string(),
            None => default_template.replace("{tenant}", tenant),
        };
        let mut url = Url::parse(&raw)
            .map_err(|e| ClientError::InvalidEndpoint(format!("{raw:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_insecure_http || is_loopback(&url) => {}
            "http" => {
                return Err(ClientError::InvalidEndpoint(format!(
                    "{raw} uses plain http: use https, or start the operator with --allow-insecure-http"
                )));
            }
            other => {
                return Err(ClientError::InvalidEndpoint(format!(
                    "{raw}: unsupported scheme {other:?}"
                )));
            }
        }
        if url.host().is_none() {
            return Err(ClientError::InvalidEndpoint(format!("{raw} has no host")));
        }
        // Join relative paths under the base path, not beside it.
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Target {
            base_url: url,
            tenant: tenant.to_string(),
            api_version: api_version.to_string(),
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        {
            let mut path = url.path_segments_mut().expect("http(s) URLs have paths");
            path.pop_if_empty();
            // Each segment is percent-encoded: ids are opaque strings.
            path.extend(segments);
        }
        url
    }

    fn budget_key(&self) -> String {
        format!("{}|{}", self.tenant, self.base_url)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// An answer with what its headers announced.
#[derive(Clone, Debug)]
pub struct Reply<T> {
    pub body: T,
    pub deprecation: Option<DeprecationNotice>,
}

/// `Deprecation` / `Sunset` headers: the API version is on its way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeprecationNotice {
    pub deprecation: Option<String>,
    pub sunset: Option<String>,
}

impl DeprecationNotice {
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let notice = DeprecationNotice {
            deprecation: text("deprecation"),
            sunset: text("sunset"),
        };
        (notice.deprecation.is_some() || notice.sunset.is_some()).then_some(notice)
    }
}

/// Filters of `GET /workflow/runs`; times are ISO 8601 (a bare date is allowed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub created_from: Option<String>,
    pub created_to: Option<String>,
    pub ended_from: Option<String>,
    pub ended_to: Option<String>,
    pub state: Option<String>,
    pub workflow_type: Option<String>,
    pub limit: Option<u32>,
    pub with_total: bool,
}

impl ListQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let fields = [
            ("created_from", &self.created_from),
            ("created_to", &self.created_to),
            ("ended_from", &self.ended_from),
            ("ended_to", &self.ended_to),
            ("state", &self.state),
            ("type", &self.workflow_type),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                pairs.push((name, v.clone()));
            }
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if self.with_total {
            pairs.push(("with_total", "true".into()));
        }
        pairs
    }
}

/// A list must end: more pages than this means the API keeps handing out tokens.
const MAX_PAGES: usize = 1000;

#[derive(Clone)]
pub struct AmperityClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    budgets: Budgets,
    tokens: TokenCache,
}

/// Whether a request may be repeated after a failure whose outcome is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    /// Only when the API certainly did not process it (429, refused connection).
    OnlyIfUnprocessed,
}

impl AmperityClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| ClientError::InvalidEndpoint(format!("building the HTTP client: {e}")))?;
        Ok(AmperityClient {
            inner: Arc::new(Inner {
                http,
                budgets: Budgets::new(config.rate_limit_per_sec),
                config,
                tokens: TokenCache::default(),
            }),
        })
    }

    /// `POST /workflow/runs`. Never repeated when its outcome is unknown.
    pub async fn start(
        &self,
        target: &Target,
        credentials: &Credentials,
        request: &RunRequest,
    ) -> Result<Reply<Workflow>, ClientError> {
        let body = serde_json::to_value(request).expect("a run request serializes");
        self.send(
            target,
            credentials,
            "start",
            Method::POST,
            target.url(&["workflow", "runs"]),
            Some(body),
            Repeat::OnlyIfUnprocessed,
            None,
        )
        .await
    }

    /// Reserves the tenant's next free turn for a later request (see [`Budget`]):
    /// a caller with nothing else to do can go away until [`Turn::wait`] is over.
    ///
    /// [`Budget`]: budget::Budget
    pub fn reserve_turn(&self, target: &Target) -> Turn {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .reserve()
    }

    /// `GET /workflow/runs/{id}?view=verbose`, at once (after the budget's gate).
    pub async fn get(
        &self,
        target: &Target,
        credentials: &Credentials,
        id: &str,
    ) -> Result<Reply<Workflow>, ClientError> {
        self.get_in_turn(target, credentials, id, None).await
    }

    /// `GET /workflow/runs/{id}?view=verbose`, sent in a reserved turn (first
    /// waiting until it is due).
    pub async fn get_in_turn(
        &self,
        target: &Target,
        credentials: &Credentials,
        id: &str,
        turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        let mut url = target.url(&["workflow", "runs", id]);
        url.query_pairs_mut().append_pair("view", "verbose");
        self.send(
            target,
            credentials,
            "get",
            Method::GET,
            url,
            None,
            Repeat::Safe,
            turn,
        )
        .await
    }

    /// `POST /workflow/runs/{id}/stop`. Stopping twice is harmless, so it is retried.
    pub async fn stop(
        &self,
        target: &Target,
        credentials: &Credentials,
        id: &str,
    ) -> Result<Reply<Workflow>, ClientError> {
        let url = target.url(&["workflow", "runs", id, "stop"]);
        self.send(
            target,
            credentials,
            "stop",
            Method::POST,
            url,
            None,
            Repeat::Safe,
            None,
        )
        .await
    }

    /// `GET /workflow/runs`, following `next_token` to the last page.
    pub async fn list(
        &self,
        target: &Target,
        credentials: &Credentials,
        query: &ListQuery,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        let mut runs = Vec::new();
        let mut deprecation = None;
        let mut next: Option<String> = None;
        let mut seen_tokens = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut url = target.url(&["workflow", "runs"]);
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in query.pairs() {
                    q.append_pair(k, &v);
                }
                if let Some(token) = &next {
                    q.append_pair("next_token", token);
                }
            }
            let page: Reply<WorkflowList> = self
                .send(
                    target,
                    credentials,
                    "list",
                    Method::GET,
                    url,
                    None,
                    Repeat::Safe,
                    None,
                )
                .await?;
            deprecation = deprecation.or(page.deprecation);
            runs.extend(page.body.data);
            match page.body.next_token.filter(|t| !t.is_empty()) {
                // A token handed out twice would loop for ever.
                Some(token) if seen_tokens.insert(token.clone()) => next = Some(token),
                _ => {
                    return Ok(Reply {
                        body: runs,
                        deprecation,
                    });
                }
            }
        }
        Err(ClientError::Decode {
            status: 200,
            expected: "a last page",
            excerpt: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// Forgets an exchanged token the API refused.
    pub fn forget_token(&self, target: &Target, credentials: &Credentials) {
        self.inner.tokens.forget(&target.base_url, credentials);
    }

    #[allow(clippy::too_many_arguments)]
    async fn send<T: DeserializeOwned>(
        &self,
        target: &Target,
        credentials: &Credentials,
        endpoint: &'static str,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        repeat: Repeat,
        turn: Option<Turn>,
    ) -> Result<Reply<T>, ClientError> {
        let inner = &self.inner;
        let budget = inner.budgets.for_tenant(&target.budget_key());
        let mut attempt = 0;
        let mut turn = turn;
        loop {
            // A retry is what a failure is waiting on: it goes without a reservation.
            let waited = budget.acquire(turn.take()).await;
            if let Some(o) = &inner.config.observer {
                o.waited(waited);
            }
            let token = inner
                .tokens
                .bearer(&inner.http, &target.base_url, &target.tenant, credentials)
                .await?;
            let mut request = inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose())
                .header("amperity-tenant", &target.tenant)
                .header("api-version", &target.api_version)
                .header("accept", "application/json");
            if let Some(b) = &body {
                request = request.json(b);
            }
            let started = Instant::now();
            let result = self.answer(request).await;
            let status = match &result {
                Ok((s, _, _)) => Some(s.as_u16()),
                Err(e) => e.status(),
            };
            if let Some(o) = &inner.config.observer {
                o.request(endpoint, &target.tenant, status, started.elapsed());
            }
            let error = match result {
                Ok((status, headers, bytes)) => {
                    let deprecation = DeprecationNotice::from_headers(&headers);
                    if status.is_success() {
                        return serde_json::from_slice::<T>(&bytes)
                            .map(|body| Reply { body, deprecation })
                            .map_err(|_| ClientError::Decode {
                                status: status.as_u16(),
                                expected: std::any::type_name::<T>()
                                    .rsplit("::")
                                    .next()
                                    .unwrap_or("JSON"),
                                excerpt: excerpt(&String::from_utf8_lossy(&bytes)),
                            });
                    }
                    let retry_after = headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| budget::parse_retry_after(v, jiff::Timestamp::now()));
                    ClientError::from_response(status.as_u16(), &bytes, retry_after)
                }
                Err(e) => e,
            };
            if let ClientError::RateLimited { retry_after, .. } = &error {
                budget.pause(retry_after.unwrap_or_else(|| budget::backoff(attempt)));
            }
            let may_repeat =
                error.is_retryable() && (repeat == Repeat::Safe || !error.outcome_unknown());
            if !may_repeat || attempt >= inner.config.max_retries {
                return Err(error);
            }
            let wait = error
                .retry_after()
                .unwrap_or_else(|| budget::backoff(attempt));
            tracing::debug!(endpoint, attempt, error = %error, ?wait, "retrying Amperity request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Sends and reads the whole answer, classifying transport failures.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, bytes::Bytes), ClientError> {
        let timeout = self.inner.config.request_timeout;
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                ClientError::Timeout(timeout)
            } else if e.is_connect() {
                ClientError::Connect(transport_summary(&e))
            } else {
                ClientError::Transport(transport_summary(&e))
            }
        };
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(classify)?;
        Ok((status, headers, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Option<&str>, insecure: bool) -> Result<Target, ClientError> {
        Target::new(
            endpoint,
            "https://{tenant}.amperity.com/api",
            "socktown",
            "2024-04-01",
            insecure,
        )
    }

    #[test]
    fn endpoints_and_their_rules() {
        assert_eq!(
            target(None, false).unwrap().base_url.as_str(),
            "https://socktown.amperity.com/api/"
        );
        assert!(target(Some("https://app.amperity.com/api"), false).is_ok());
        assert!(target(Some("http://127.0.0.1:8470/api"), false).is_ok());
        assert!(target(Some("http://localhost:8470/api"), false).is_ok());
        assert!(target(Some("http://[::1]:8470/api"), false).is_ok());
        let err = target(Some("http://sim.internal/api"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("plain http"), "{err}");
        assert!(target(Some("http://sim.internal/api"), true).is_ok());
        assert!(target(Some("ftp://x/api"), true).is_err());
        assert!(target(Some("not a url"), true).is_err());
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        let t = target(Some("https://app.amperity.com/api"), false).unwrap();
        assert_eq!(
            t.url(&["workflow", "runs", "wf-1/../x y"]).as_str(),
            "https://app.amperity.com/api/workflow/runs/wf-1%2F..%2Fx%20y"
        );
    }

    #[test]
    fn list_query_names_every_filter() {
        let q = ListQuery {
            created_from: Some("2025-04-18".into()),
            created_to: Some("2025-04-19".into()),
            ended_from: Some("a".into()),
            ended_to: Some("b".into()),
            state: Some("succeeded".into()),
            workflow_type: Some("courier.group/run".into()),
            limit: Some(10),
            with_total: true,
        };
        let names: Vec<&str> = q.pairs().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "created_from",
                "created_to",
                "ended_from",
                "ended_to",
                "state",
                "type",
                "limit",
                "with_total"
            ]
        );
    }
}
