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

/// What is wrong with a Secret's data: a CamelCase reason and a message naming the
/// key (never what it holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretProblem {
    /// `SecretKeyMissing` or `SecretKeyInvalid`.
    pub reason: &'static str,
    pub message: String,
}

impl SecretProblem {
    fn missing(message: String) -> SecretProblem {
        SecretProblem {
            reason: "SecretKeyMissing",
            message,
        }
    }
}

/// Whether a bearer token can be sent in an `Authorization` header: visible ASCII
/// only (RFC 6750's token68 and the JWTs Amperity mints are). Anything else fails
/// in the request builder, before a byte is sent.
pub fn valid_bearer_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

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
) -> Result<Access, SecretProblem> {
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
        if !valid_bearer_token(&token) {
            return Err(SecretProblem {
                reason: "SecretKeyInvalid",
                message: format!(
                    "key {token_key:?} holds characters a bearer token cannot have (spaces, line breaks or other non-printable or non-ASCII characters inside it): put the Amperity API token there exactly as issued"
                ),
            });
        }
        return Ok(access(Credentials::Token(SecretString::new(token))));
    }
    if key.is_none() {
        if let (Some(id), Some(secret)) = (text(CLIENT_ID_KEY), text(CLIENT_SECRET_KEY)) {
            let token_url = match text(TOKEN_URL_KEY) {
                Some(u) => Some(url::Url::parse(&u).map_err(|_| SecretProblem {
                    reason: "SecretKeyInvalid",
                    message: format!("key {TOKEN_URL_KEY:?} is not a URL: give the full https URL of the OAuth token endpoint"),
                })?),
                None => None,
            };
            return Ok(access(Credentials::ClientCredentials {
                client_id: cut(&id, 512),
                client_secret: SecretString::new(secret),
                token_url,
            }));
        }
        return Err(SecretProblem::missing(format!(
            "has neither key {DEFAULT_TOKEN_KEY:?} nor keys {CLIENT_ID_KEY:?} and {CLIENT_SECRET_KEY:?}: add an Amperity API token under {DEFAULT_TOKEN_KEY:?}"
        )));
    }
    Err(SecretProblem::missing(format!(
        "has no key {token_key:?} (spec.tokenSecretRef.key), or it is empty: add the Amperity API token under that key"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)], key: Option<&str>) -> Result<Access, SecretProblem> {
        let data: std::collections::HashMap<String, Vec<u8>> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        from_secret_data(|k| data.get(k).map(Vec::as_slice), key)
    }

    #[test]
    fn a_token_no_header_can_carry_is_a_secret_problem_naming_the_key() {
        for bad in ["abc\ndef", "abc def", "abc\u{7f}", "tök", "a\tb"] {
            let p = read(&[("api", bad)], Some("api")).unwrap_err();
            assert_eq!(p.reason, "SecretKeyInvalid", "{bad:?}");
            assert!(p.message.contains("\"api\""), "{}", p.message);
            assert!(!p.message.contains(bad), "never the value: {}", p.message);
        }
        // Surrounding whitespace (a trailing newline from `echo`) is trimmed, not refused.
        assert!(read(&[("token", "  eyJ.abc-_~+/=\n")], None).is_ok());
        let p = read(&[], Some("api")).unwrap_err();
        assert_eq!(p.reason, "SecretKeyMissing");
        let p = read(
            &[
                ("client_id", "i"),
                ("client_secret", "s"),
                ("token_url", "::"),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(p.reason, "SecretKeyInvalid");
    }
}
