//! The Amperity REST client: start, get, list and stop workflow runs. Knows nothing
//! of Kubernetes. Every request carries the bearer token, `amperity-tenant` and
//! `api-version`, waits for the tenant's budget, and is bounded in time and size.
//! It calls only URLs on the allow-list and follows no redirects: where credentials
//! go is the operator's choice, never a resource author's or a server's.

pub mod allow;
pub mod auth;
pub mod budget;
pub mod credentials;
pub mod error;
pub mod wire;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

pub use allow::AllowList;
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

/// Where requests go: base URL, tenant, API version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub base_url: Url,
    pub tenant: String,
    pub api_version: String,
}

impl Target {
    /// `endpoint` overrides `default_template` (where `{tenant}` is replaced). The
    /// URL must be on the allow-list.
    pub fn new(
        endpoint: Option<&str>,
        default_template: &str,
        tenant: &str,
        api_version: &str,
        allow: &AllowList,
    ) -> Result<Target, ClientError> {
        let raw = match endpoint {
            Some(e) => e.to_string(),
            None => default_template.replace("{tenant}", tenant),
        };
        let shown = crate::bounded::cut(&raw, 300);
        let mut url = Url::parse(&raw)
            .map_err(|e| ClientError::InvalidEndpoint(format!("{shown:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(ClientError::InvalidEndpoint(format!(
                "{shown:?} is not an http(s) URL with a host"
            )));
        }
        allow.check(&url).map_err(ClientError::EndpointNotAllowed)?;
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

    /// Which budget requests to this target take turns in: the tenant at this
    /// base URL.
    pub fn budget_key(&self) -> String {
        format!("{}|{}", self.tenant, self.base_url)
    }
}

/// Who a credential starts runs as, as Amperity reports it on the runs it starts:
/// the search for a run whose start answer was lost trusts only runs of this principal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Principal {
    /// A principal given by a person (the Secret's `principal` key): an id or a name.
    pub fn given(value: &str) -> Principal {
        Principal {
            id: Some(value.to_string()),
            name: Some(value.to_string()),
        }
    }

    /// From a run's fields; None when the run names no principal.
    pub fn of(w: &Workflow) -> Option<Principal> {
        let p = Principal {
            id: w.principal_id.clone().filter(|s| !s.is_empty()),
            name: w.principal_name.clone().filter(|s| !s.is_empty()),
        };
        (p.id.is_some() || p.name.is_some()).then_some(p)
    }

    /// Whether `w` names this principal. A run that names none does not.
    pub fn started(&self, w: &Workflow) -> bool {
        let eq = |mine: &Option<String>, theirs: &Option<String>| matches!((mine, theirs), (Some(a), Some(b)) if a == b);
        eq(&self.id, &w.principal_id)
            || eq(&self.name, &w.principal_name)
            || eq(&self.id, &w.principal_name)
            || eq(&self.name, &w.principal_id)
    }
}

/// An answer with what its headers announced.
#[derive(Clone, Debug)]
pub struct Reply<T> {
    pub body: T,
    pub deprecation: Option<DeprecationNotice>,
    /// The HTTP status it came with (a list's: its last page's).
    pub status: u16,
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
    /// What each credential was seen to start runs as, by [`principal_key`].
    principals: Mutex<HashMap<u64, Principal>>,
}

/// Whether a request may be repeated after a failure whose outcome is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    /// Only when the API certainly did not process it (429, refused connection).
    OnlyIfUnprocessed,
}

/// The longest a request waits for a paused tenant in place; longer pauses are
/// answered at once with the time left.
const MAX_GATE_WAIT: Duration = Duration::from_secs(2);

/// The most ids and pages a list may hold: beyond, the API keeps handing out tokens.
const MAX_LIST_RUNS: usize = 100_000;
/// Ids are opaque, but an id that is empty, very long or has control characters is
/// not one Amperity hands out: refusing it keeps it out of URLs, status and labels.
const MAX_ID_BYTES: usize = 256;

impl AmperityClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let invalid = |what: String| ClientError::InvalidEndpoint(what);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            // A redirect would take the bearer token (or the OAuth client secret) to a
            // URL the allow-list never saw.
            .redirect(reqwest::redirect::Policy::none())
            .tls_built_in_webpki_certs(!config.tls.system_roots)
            .tls_built_in_native_certs(config.tls.system_roots);
        if let Some(path) = &config.tls.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| invalid(format!("reading the CA file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                invalid(format!(
                    "the CA file {} is not PEM certificates: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(invalid(format!(
                    "the CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("building the HTTP client: {e}")))?;
        Ok(AmperityClient {
            inner: Arc::new(Inner {
                http,
                budgets: Budgets::new(config.rate_limit_per_sec),
                config,
                tokens: TokenCache::default(),
                principals: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The allow-list every request is checked against.
    pub fn allow_list(&self) -> &AllowList {
        &self.inner.config.allow
    }

    /// `POST /workflow/runs`. Never repeated when its outcome is unknown.
    pub async fn start(
        &self,
        target: &Target,
        credentials: &Credentials,
        request: &RunRequest,
        turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        let body = serde_json::to_value(request).expect("a run request serializes");
        let url = target.url(&["workflow", "runs"]);
        self.send_for_run(
            target,
            credentials,
            "start",
            Method::POST,
            url,
            Some(body),
            Repeat::OnlyIfUnprocessed,
            turn,
        )
        .await
    }

    /// Reserves the tenant's next free turn for a routine request (see [`Budget`]):
    /// a caller with nothing else to do can go away until [`Turn::wait`] is over.
    ///
    /// [`Budget`]: budget::Budget
    pub fn reserve_turn(&self, target: &Target) -> Turn {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .reserve()
    }

    /// Reserves a turn for what a person or a failure is waiting on (a start, a
    /// stop, a search): due now unless the tenant is paused after a 429, and ahead
    /// of routine polls, which move back to make room.
    pub fn reserve_urgent_turn(&self, target: &Target) -> Turn {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .reserve_urgent()
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
        self.send_for_run(
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
        turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        let url = target.url(&["workflow", "runs", id, "stop"]);
        self.send_for_run(
            target,
            credentials,
            "stop",
            Method::POST,
            url,
            None,
            Repeat::Safe,
            turn,
        )
        .await
    }

    /// `GET /workflow/runs`, following `next_token` to the last page. The first page
    /// goes in `turn`; later ones take urgent turns as they come.
    pub async fn list(
        &self,
        target: &Target,
        credentials: &Credentials,
        query: &ListQuery,
        turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        self.list_as("list", target, credentials, query, turn).await
    }

    /// How far apart a tenant's turns are: a routine poll of each of N runs takes
    /// about N times this.
    pub fn turn_period(&self) -> Duration {
        self.inner.budgets.period()
    }

    /// How long a routine poll to `target` reserved now would wait for its turn.
    pub fn routine_backlog(&self, target: &Target) -> Duration {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .backlog()
    }

    /// [`AmperityClient::list`], its requests counted in metrics as `endpoint`
    /// (the change feed's as `feed`).
    pub async fn list_as(
        &self,
        endpoint: &'static str,
        target: &Target,
        credentials: &Credentials,
        query: &ListQuery,
        turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        let mut runs = Vec::new();
        let mut deprecation = None;
        let mut next: Option<String> = None;
        let mut seen_tokens = std::collections::HashSet::new();
        let mut turn = turn;
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
                    endpoint,
                    Method::GET,
                    url,
                    None,
                    Repeat::Safe,
                    turn.take(),
                )
                .await?;
            deprecation = deprecation.or(page.deprecation);
            for w in &page.body.data {
                checked_id(&w.id, page.status)?;
            }
            runs.extend(page.body.data);
            if runs.len() > MAX_LIST_RUNS {
                return Err(ClientError::Decode {
                    status: page.status,
                    expected: "a last page",
                    excerpt: format!("more than {MAX_LIST_RUNS} runs"),
                });
            }
            match page.body.next_token.filter(|t| !t.is_empty()) {
                // A token handed out twice would loop for ever.
                Some(token) if token.len() <= 4096 && seen_tokens.insert(token.clone()) => {
                    next = Some(token)
                }
                _ => {
                    return Ok(Reply {
                        body: runs,
                        deprecation,
                        status: page.status,
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

    /// What `credentials` were seen to start runs as at `target`, if known.
    pub fn learned_principal(
        &self,
        target: &Target,
        credentials: &Credentials,
    ) -> Option<Principal> {
        self.inner
            .principals
            .lock()
            .unwrap()
            .get(&principal_key(target, credentials))
            .cloned()
    }

    /// Records who `credentials` start runs as (from a run they started).
    pub fn learn_principal(&self, target: &Target, credentials: &Credentials, p: Principal) {
        let p = Principal {
            id: crate::bounded::cut_opt(p.id.as_deref(), MAX_ID_BYTES),
            name: crate::bounded::cut_opt(p.name.as_deref(), MAX_ID_BYTES),
        };
        let mut known = self.inner.principals.lock().unwrap();
        // Bounded like every other per-credential table: credentials come and go
        // with Secrets, and a forgotten principal is only learned again.
        if known.len() >= 10_000 {
            known.clear();
        }
        known.insert(principal_key(target, credentials), p);
    }

    /// [`send`](Self::send) for calls answered with one run, whose id must be one
    /// Amperity could have handed out.
    #[allow(clippy::too_many_arguments)]
    async fn send_for_run(
        &self,
        target: &Target,
        credentials: &Credentials,
        endpoint: &'static str,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        repeat: Repeat,
        turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        let reply: Reply<Workflow> = self
            .send(
                target,
                credentials,
                endpoint,
                method,
                url,
                body,
                repeat,
                turn,
            )
            .await?;
        checked_id(&reply.body.id, reply.status)?;
        Ok(reply)
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
        // The target was checked when it was built; this guards every other way a
        // URL could be made.
        inner
            .config
            .allow
            .check(&url)
            .map_err(ClientError::EndpointNotAllowed)?;
        let budget = inner.budgets.for_tenant(&target.budget_key());
        // A tenant paused after a 429 is not waited for here: the caller comes back
        // when the pause is over, holding nothing meanwhile.
        if let Some(left) = budget.paused_for().filter(|left| *left > MAX_GATE_WAIT) {
            return Err(ClientError::RateLimited {
                message: format!(
                    "requests to tenant {} are paused for {}s after a 429",
                    target.tenant,
                    left.as_secs()
                ),
                retry_after: Some(left),
            });
        }
        let mut attempt = 0;
        let mut turn = turn;
        loop {
            // The token first: a slow exchange must not hold a turn that then fires
            // together with every turn queued behind it.
            let token = inner
                .tokens
                .bearer(
                    &inner.http,
                    &inner.config.allow,
                    inner.config.max_body_bytes,
                    &target.base_url,
                    &target.tenant,
                    credentials,
                )
                .await?;
            // A retry is what a failure is waiting on: it goes without a reservation.
            let waited = budget.acquire(turn.take()).await;
            if let Some(o) = &inner.config.observer {
                o.waited(waited);
            }
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
                            .map(|body| Reply {
                                body,
                                deprecation,
                                status: status.as_u16(),
                            })
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

    /// Sends and reads the answer, classifying transport failures; refuses a
    /// redirect unread and a body past the size limit while it streams in.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, bytes::Bytes), ClientError> {
        let timeout = self.inner.config.request_timeout;
        let response = request.send().await.map_err(|e| classify(&e, timeout))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ClientError::Redirect {
                status: status.as_u16(),
            });
        }
        let headers = response.headers().clone();
        let bytes = read_limited(response, self.inner.config.max_body_bytes, timeout).await?;
        Ok((status, headers, bytes))
    }
}

/// A transport failure, by what it proves: a connection that was never made (DNS,
/// refused, TLS handshake, connect timeout) means the request was never written.
pub(crate) fn classify(e: &reqwest::Error, timeout: Duration) -> ClientError {
    if e.is_connect() {
        ClientError::Connect(transport_summary(e))
    } else if e.is_timeout() {
        ClientError::Timeout(timeout)
    } else {
        ClientError::Transport(transport_summary(e))
    }
}

/// Reads a body chunk by chunk, giving up as soon as it passes `limit` bytes.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: u64,
    timeout: Duration,
) -> Result<bytes::Bytes, ClientError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(ClientError::BodyTooLarge { limit });
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e, timeout))? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ClientError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn checked_id(id: &str, status: u16) -> Result<(), ClientError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(ClientError::Decode {
            status,
            expected: "a workflow id",
            excerpt: excerpt(id),
        });
    }
    Ok(())
}

fn principal_key(target: &Target, credentials: &Credentials) -> u64 {
    let mut h = DefaultHasher::new();
    target.budget_key().hash(&mut h);
    credentials.fingerprint().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Option<&str>, allow: &[&str]) -> Result<Target, ClientError> {
        Target::new(
            endpoint,
            "https://{tenant}.amperity.com/api",
            "socktown",
            "2024-04-01",
            &AllowList::parse(allow).unwrap(),
        )
    }

    #[test]
    fn endpoints_must_be_on_the_allow_list() {
        let default = ["https://*.amperity.com"];
        assert_eq!(
            target(None, &default).unwrap().base_url.as_str(),
            "https://socktown.amperity.com/api/"
        );
        assert!(target(Some("https://app.amperity.com/api"), &default).is_ok());
        for refused in [
            "http://127.0.0.1:8470/api",
            "http://app.amperity.com/api",
            "https://evil.test/api",
        ] {
            let err = target(Some(refused), &default).unwrap_err();
            assert!(
                matches!(err, ClientError::EndpointNotAllowed(_)),
                "{refused}: {err}"
            );
            assert!(
                err.to_string().contains("AMPERITY_ALLOWED_ENDPOINTS"),
                "{err}"
            );
        }
        let sim = ["http://127.0.0.1:8470"];
        assert!(target(Some("http://127.0.0.1:8470/api"), &sim).is_ok());
        assert!(target(Some("http://127.0.0.1:8471/api"), &sim).is_err());
        assert!(matches!(
            target(Some("ftp://x/api"), &sim),
            Err(ClientError::InvalidEndpoint(_))
        ));
        assert!(matches!(
            target(Some("not a url"), &sim),
            Err(ClientError::InvalidEndpoint(_))
        ));
    }

    #[test]
    fn principals_match_by_id_or_name() {
        let run = |id: Option<&str>, name: Option<&str>| Workflow {
            principal_id: id.map(str::to_string),
            principal_name: name.map(str::to_string),
            ..serde_json::from_value(serde_json::json!({"id": "wf-1", "state": "running"})).unwrap()
        };
        let p = Principal::given("api-key|sim-1");
        assert!(p.started(&run(Some("api-key|sim-1"), None)));
        assert!(p.started(&run(None, Some("api-key|sim-1"))));
        assert!(!p.started(&run(Some("api-key|sim-2"), Some("API key 2"))));
        assert!(
            !p.started(&run(None, None)),
            "a run naming no principal is no match"
        );
        assert!(Principal::of(&run(None, Some(""))).is_none());
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        let t = target(
            Some("https://app.amperity.com/api"),
            &["https://*.amperity.com"],
        )
        .unwrap();
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
