//! Credentials: a static bearer token, or OAuth client credentials exchanged for
//! short-lived tokens that are cached, shared and refreshed before they expire.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use url::Url;

use super::allow::AllowList;
use super::error::{ClientError, describe_body};
use super::wire::TokenResponse;

/// A secret string: `Debug` and `Display` never show it, and it has no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Arc<str>);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(Arc::from(value.into()))
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A bearer token (a JWT minted in the Amperity UI).
    Token(SecretString),
    /// OAuth client credentials; `token_url` defaults to `{base_url}/v0/oauth2/token`.
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
        token_url: Option<Url>,
    },
}

/// Shows neither secret, nor the token URL's user info or query (which a Secret
/// may use to carry a password or an API key).
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(t) => f.debug_tuple("Token").field(t).finish(),
            Credentials::ClientCredentials {
                client_id,
                client_secret,
                token_url,
            } => f
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .field("client_secret", client_secret)
                .field("token_url", &token_url.as_ref().map(super::allow::shown))
                .finish(),
        }
    }
}

impl Credentials {
    /// A stable digest of the credentials (never the secret itself), for tables
    /// keyed by credential.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        match self {
            Credentials::Token(t) => ("token", t.expose()).hash(&mut h),
            Credentials::ClientCredentials {
                client_id,
                client_secret,
                token_url,
            } => (
                "client",
                client_id,
                client_secret.expose(),
                token_url.as_ref().map(Url::as_str),
            )
                .hash(&mut h),
        }
        h.finish()
    }
}

/// The longest lifetime a token endpoint may claim for a token (a day): an absurd
/// `expires_in` must not keep a token cached, or overflow a clock.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// Refresh this long before a token expires, or a tenth of its lifetime if shorter.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

#[derive(Clone, Hash, PartialEq, Eq)]
struct Key {
    token_url: String,
    client_id: String,
    secret_hash: u64,
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Exchanged tokens, one slot per (token URL, client id, secret). A slot's async
/// lock makes concurrent callers share one exchange.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl TokenCache {
    fn slot(&self, key: &Key) -> Slot {
        self.slots
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The bearer token to send. A token URL, given or derived, must be on the
    /// allow-list like every API URL: the client secret goes nowhere else.
    #[allow(clippy::too_many_arguments)]
    pub async fn bearer(
        &self,
        http: &reqwest::Client,
        allow: &AllowList,
        max_body_bytes: u64,
        base_url: &Url,
        tenant: &str,
        credentials: &Credentials,
        observer: Option<&dyn super::Observer>,
    ) -> Result<SecretString, ClientError> {
        let (client_id, client_secret, token_url) = match credentials {
            Credentials::Token(t) => return Ok(t.clone()),
            Credentials::ClientCredentials {
                client_id,
                client_secret,
                token_url,
            } => (
                client_id,
                client_secret,
                token_url_for(base_url, token_url.as_ref())?,
            ),
        };
        allow.check(&token_url).map_err(|why| {
            ClientError::EndpointNotAllowed(format!("the OAuth token URL: {why}"))
        })?;
        let key = key(&token_url, client_id, client_secret);
        let slot = self.slot(&key);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let fresh = exchange(
            http,
            &token_url,
            tenant,
            client_id,
            client_secret,
            max_body_bytes,
        )
        .await;
        if let Some(o) = observer {
            let outcome = match &fresh {
                Ok(_) => "ok",
                Err(e) if e.is_auth() => "refused",
                Err(_) => "failed",
            };
            o.token_exchange(tenant, outcome);
        }
        let fresh = fresh?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops a cached token the API refused, so the next call exchanges again.
    pub fn forget(&self, base_url: &Url, credentials: &Credentials) {
        if let Credentials::ClientCredentials {
            client_id,
            client_secret,
            token_url,
        } = credentials
            && let Ok(url) = token_url_for(base_url, token_url.as_ref())
        {
            self.slots
                .lock()
                .unwrap()
                .remove(&key(&url, client_id, client_secret));
        }
    }
}

fn key(token_url: &Url, client_id: &str, secret: &SecretString) -> Key {
    let mut h = DefaultHasher::new();
    secret.expose().hash(&mut h);
    Key {
        token_url: token_url.to_string(),
        client_id: client_id.to_string(),
        secret_hash: h.finish(),
    }
}

fn token_url_for(base_url: &Url, explicit: Option<&Url>) -> Result<Url, ClientError> {
    if let Some(u) = explicit {
        return Ok(u.clone());
    }
    let mut base = base_url.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join("v0/oauth2/token").map_err(|e| {
        ClientError::InvalidEndpoint(format!(
            "no token URL can be derived from {}: {e}",
            super::allow::shown(base_url)
        ))
    })
}

async fn exchange(
    http: &reqwest::Client,
    token_url: &Url,
    tenant: &str,
    client_id: &str,
    client_secret: &SecretString,
    max_body_bytes: u64,
) -> Result<Cached, ClientError> {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", client_secret.expose()),
    ];
    // Failures of the exchange are the token endpoint's, not the credentials':
    // worth another try later. Only a refusal (below) means the Secret is wrong.
    let failed = |message: String| ClientError::TokenExchange {
        refused: false,
        message,
    };
    // Never the URL itself: its user info or query may hold a password or a key.
    let shown = crate::bounded::cut(&super::allow::shown(token_url), 300);
    let response = http
        .post(token_url.clone())
        .header("X-Amperity-Tenant", tenant)
        .form(&form)
        .send()
        .await
        .map_err(|e| {
            failed(format!(
                "POST {shown}: {}",
                super::transport::transport_summary(&e)
            ))
        })?;
    let status = response.status().as_u16();
    if response.status().is_redirection() {
        return Err(failed(format!(
            "{shown} answered HTTP {status}, a redirect, which the operator never follows"
        )));
    }
    let body = super::transport::read_limited(response, max_body_bytes, Duration::from_secs(30))
        .await
        .map_err(|e| failed(format!("{shown}: {e}")))?;
    if !(200..300).contains(&status) {
        let refused = matches!(status, 400 | 401 | 403);
        let hint = if refused {
            "check client_id and client_secret in the Secret"
        } else {
            "the token endpoint failed; trying again later"
        };
        return Err(ClientError::TokenExchange {
            refused,
            message: format!(
                "{shown} answered HTTP {status}: {}; {hint}",
                describe_body(&body)
            ),
        });
    }
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
        failed(format!(
            "{shown} answered HTTP {status} without an access_token"
        ))
    })?;
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600)).min(MAX_TOKEN_LIFETIME);
    let margin = REFRESH_MARGIN.min(lifetime / 10);
    Ok(Cached {
        token: SecretString::new(parsed.access_token),
        refresh_at: Instant::now()
            .checked_add(lifetime.saturating_sub(margin))
            .unwrap_or_else(Instant::now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials::ClientCredentials {
            client_id: "id".into(),
            client_secret: SecretString::new("hunter2"),
            token_url: None,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = Credentials::Token(SecretString::new("eyJhbGciOi.secret"));
        assert!(!format!("{t:?}").contains("eyJ"));
        assert_eq!(SecretString::new("x").to_string(), "<redacted>");
        let c = Credentials::ClientCredentials {
            client_id: "id".into(),
            client_secret: SecretString::new("hunter2"),
            token_url: Some(Url::parse("https://svc:PASSWORD@auth.example/t?api_key=KEY").unwrap()),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("PASSWORD") && !shown.contains("KEY") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("https://auth.example/t"), "{shown}");
    }

    #[test]
    fn token_url_defaults_under_the_base_url() {
        let base = Url::parse("https://socktown.amperity.com/api").unwrap();
        assert_eq!(
            token_url_for(&base, None).unwrap().as_str(),
            "https://socktown.amperity.com/api/v0/oauth2/token"
        );
        let explicit = Url::parse("https://auth.example/token").unwrap();
        assert_eq!(token_url_for(&base, Some(&explicit)).unwrap(), explicit);
    }
}
