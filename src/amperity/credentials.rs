//! Credentials as a Kubernetes Secret holds them (the keys and their formats), read
//! from the Secret's data without knowing Kubernetes: the cluster side hands the
//! data in. Errors say which key is missing, never what a key holds.

use super::{Credentials, Principal, SecretString};
use crate::bounded::cut;

/// The Secret keys: a bearer token under [`DEFAULT_TOKEN_KEY`] (or the key the
/// resource names), or OAuth client credentials.
pub const DEFAULT_TOKEN_KEY: &str = "token";
pub const CLIENT_ID_KEY: &str = "client_id";
pub const CLIENT_SECRET_KEY: &str = "client_secret";
pub const TOKEN_URL_KEY: &str = "token_url";
/// Who the credential starts runs as (Amperity's principal id or name), when known.
pub const PRINCIPAL_KEY: &str = "principal";

/// The credentials of a resource, and who they start runs as when the Secret says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub credentials: Credentials,
    pub principal: Option<Principal>,
}

/// Reads credentials from Secret data: `key` (default `token`) holds a bearer token;
/// without an explicit key, `client_id` + `client_secret` (and optionally
/// `token_url`) are OAuth client credentials. `principal`, if present, names who
/// they start runs as. The error says what is missing.
/// `value` looks a key up in the Secret's data.
pub fn from_secret_data<'a>(
    value: impl Fn(&str) -> Option<&'a [u8]>,
    key: Option<&str>,
) -> Result<Access, String> {
    let text = |k: &str| {
        value(k)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let principal = text(PRINCIPAL_KEY).map(|p| Principal::given(&cut(&p, 256)));
    let access = |credentials| Access {
        credentials,
        principal: principal.clone(),
    };
    let token_key = key.unwrap_or(DEFAULT_TOKEN_KEY);
    if let Some(token) = text(token_key) {
        return Ok(access(Credentials::Token(SecretString::new(token))));
    }
    if key.is_none() {
        if let (Some(id), Some(secret)) = (text(CLIENT_ID_KEY), text(CLIENT_SECRET_KEY)) {
            let token_url = match text(TOKEN_URL_KEY) {
                Some(u) => Some(url::Url::parse(&u).map_err(|_| {
                    format!("key {TOKEN_URL_KEY:?} is not a URL: give the full https URL of the OAuth token endpoint")
                })?),
                None => None,
            };
            return Ok(access(Credentials::ClientCredentials {
                client_id: cut(&id, 512),
                client_secret: SecretString::new(secret),
                token_url,
            }));
        }
        return Err(format!(
            "has neither key {DEFAULT_TOKEN_KEY:?} nor keys {CLIENT_ID_KEY:?} and {CLIENT_SECRET_KEY:?}: add an Amperity API token under {DEFAULT_TOKEN_KEY:?}"
        ));
    }
    Err(format!(
        "has no key {token_key:?} (spec.tokenSecretRef.key), or it is empty: add the Amperity API token under that key"
    ))
}
