//! The calls: start, get and stop one run, each sent in the tenant's turn, with the
//! token, bounded in time and size, and its answer checked.

mod learned;
mod list;
mod reply;
mod turns;

pub use list::ListQuery;
pub(crate) use reply::date_header;
pub use reply::{DeprecationNotice, Reply};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::amperity::{ClientConfig, Principal, Target};

use crate::amperity::allow::AllowList;
use crate::amperity::auth::Credentials;
use crate::amperity::auth::TokenCache;
use crate::amperity::budget::Budgets;
use crate::amperity::budget::Turn;
use crate::amperity::error::ClientError;
use crate::amperity::error::excerpt;
use crate::amperity::transport::{classify, read_limited};
use crate::amperity::wire::{RunRequest, Workflow};

#[derive(Clone)]
pub struct AmperityClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    budgets: Budgets,
    tokens: TokenCache,
    /// What each credential was seen to start runs as (keyed in `client/learned.rs`).
    principals: Mutex<HashMap<u64, Principal>>,
    /// The workflow name each config id's runs carry, by target and config id.
    names: Mutex<HashMap<(String, String), String>>,
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

/// The most runs a list may hold: beyond, the API keeps handing out tokens.
const MAX_LIST_RUNS: usize = 100_000;
/// Principals' ids and names are cut to this.
const MAX_ID_BYTES: usize = crate::amperity::wire::MAX_RUN_ID_BYTES;
/// The bytes one call may read over all its answers (the pages of a list): this
/// many times the limit on one answer.
const CALL_BYTES_PER_BODY_LIMIT: u64 = 4;

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
                names: Mutex::new(HashMap::new()),
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
        checked_request_id(id)?;
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
        checked_request_id(id)?;
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

    /// Forgets an exchanged token the API refused.
    pub fn forget_token(&self, target: &Target, credentials: &Credentials) {
        self.inner.tokens.forget(&target.base_url, credentials);
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
        let (mut reply, _): (Reply<Workflow>, u64) = self
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
        reply.body.make_printable();
        Ok(reply)
    }

    /// Sends one request (retrying what may be retried) and decodes its answer;
    /// also returns how many bytes the answer had, for bounds over a whole call.
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
    ) -> Result<(Reply<T>, u64), ClientError> {
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
                    inner.config.observer.as_deref(),
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
                    if let Some(date) = headers.get("date").and_then(|v| v.to_str().ok()) {
                        budget.observe_date(date, jiff::Timestamp::now());
                    }
                    let deprecation = DeprecationNotice::from_headers(&headers);
                    if status.is_success() {
                        let size = bytes.len() as u64;
                        let date = date_header(&headers);
                        return serde_json::from_slice::<T>(&bytes)
                            .map(|body| {
                                let reply = Reply {
                                    body,
                                    deprecation,
                                    status: status.as_u16(),
                                    date,
                                };
                                (reply, size)
                            })
                            .map_err(|e| {
                                too_many(&e).unwrap_or(ClientError::Decode {
                                    status: status.as_u16(),
                                    expected: std::any::type_name::<T>()
                                        .rsplit("::")
                                        .next()
                                        .unwrap_or("JSON"),
                                    excerpt: excerpt(&String::from_utf8_lossy(&bytes)),
                                })
                            });
                    }
                    let retry_after = headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| {
                            crate::amperity::budget::parse_retry_after(v, jiff::Timestamp::now())
                        });
                    ClientError::from_response(status.as_u16(), &bytes, retry_after)
                }
                Err(e) => e,
            };
            if let ClientError::RateLimited { retry_after, .. } = &error {
                budget.rate_limited(*retry_after, attempt);
            }
            let may_repeat =
                error.is_retryable() && (repeat == Repeat::Safe || !error.outcome_unknown());
            if !may_repeat || attempt >= inner.config.max_retries {
                return Err(error);
            }
            let wait = error
                .retry_after()
                .unwrap_or_else(|| crate::amperity::budget::backoff(attempt));
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

/// The error for an answer refused while parsing for holding too many tasks or runs.
fn too_many(e: &serde_json::Error) -> Option<ClientError> {
    use crate::amperity::wire::{MAX_PAGE_RUNS, MAX_TASKS, TOO_MANY_MARK};
    let text = e.to_string();
    if !text.contains(TOO_MANY_MARK) {
        return None;
    }
    Some(if text.contains(" tasks") {
        ClientError::TooMuch {
            what: "tasks in one run",
            limit: MAX_TASKS as u64,
            hint: "the run is far larger than any workflow the operator expects; follow it in Amperity's UI",
        }
    } else {
        ClientError::TooMuch {
            what: "runs in one list page",
            limit: MAX_PAGE_RUNS as u64,
            hint: "ask for smaller pages (limit)",
        }
    })
}

/// An id in an answer: one Amperity could have handed out (see
/// [`run_id_problem`](crate::amperity::wire::run_id_problem)).
pub(crate) fn checked_id(id: &str, status: u16) -> Result<(), ClientError> {
    if crate::amperity::wire::run_id_problem(id).is_some() {
        return Err(ClientError::Decode {
            status,
            expected: "a workflow id",
            excerpt: excerpt(id),
        });
    }
    Ok(())
}

/// An id a caller asks about: refused before it becomes part of a URL.
fn checked_request_id(id: &str) -> Result<(), ClientError> {
    match crate::amperity::wire::run_id_problem(id) {
        Some(why) => Err(ClientError::InvalidRunId {
            id: excerpt(id),
            why,
        }),
        None => Ok(()),
    }
}
