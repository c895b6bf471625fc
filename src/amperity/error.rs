//! What can go wrong talking to Amperity, and what each failure means for the
//! caller: worth retrying, and whether a POST may already have taken effect.

use std::time::Duration;

use super::wire::ErrorResponse;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid Amperity endpoint: {0}")]
    InvalidEndpoint(String),
    /// The URL is not on the allow-list: nothing was sent.
    #[error("{0}")]
    EndpointNotAllowed(String),
    /// A 3xx: never followed, and neither its Location nor its body is read.
    #[error(
        "the Amperity endpoint answered HTTP {status}, a redirect, which the operator never follows: check the endpoint"
    )]
    Redirect { status: u16 },
    #[error(
        "the Amperity API's answer was larger than {limit} bytes and was refused (AMPERITY_MAX_BODY_BYTES)"
    )]
    BodyTooLarge { limit: u64 },
    /// An answer, or all the pages of one call together, held more than the
    /// operator keeps (bytes of a whole call, tasks of a run, runs of a list).
    #[error(
        "the Amperity API's answer held more than {limit} {what}, more than the operator keeps for one call: {hint}"
    )]
    TooMuch {
        what: &'static str,
        limit: u64,
        hint: &'static str,
    },
    /// A run id the caller passed could not name a run (empty, `.`, `..`, a
    /// separator): nothing was sent.
    #[error("the run id {id} {why}: it cannot name an Amperity run, so nothing was sent")]
    InvalidRunId { id: String, why: &'static str },
    #[error(
        "the Amperity API rejected the credentials (HTTP {status}: {message}): check the token in the Secret, or mint a new one"
    )]
    Unauthorized { status: u16, message: String },
    #[error("not found (HTTP 404: {message})")]
    NotFound { message: String },
    #[error("the Amperity API refused the request (HTTP {status}: {message})")]
    Rejected { status: u16, message: String },
    #[error("rate limited by the Amperity API (HTTP 429: {message})")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("the Amperity API failed (HTTP {status}: {message})")]
    Server {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("no answer from the Amperity API within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to the Amperity API: {0}")]
    Connect(String),
    #[error("the connection to the Amperity API failed mid-request: {0}")]
    Transport(String),
    /// The request could not be built (a header value it cannot carry, say): not
    /// a byte was sent, so nothing can have been started.
    #[error("the request to the Amperity API could not be built and was not sent: {0}")]
    Unsent(String),
    #[error(
        "unreadable answer from the Amperity API (HTTP {status}): expected {expected}, got {excerpt}"
    )]
    Decode {
        status: u16,
        expected: &'static str,
        excerpt: String,
    },
    /// The OAuth token endpoint did not hand out a token; nothing was sent to the API.
    /// `refused`: it refused the client credentials (400/401/403: `invalid_client`,
    /// `invalid_grant`), which only a corrected Secret mends; otherwise it failed
    /// (5xx, 429, transport) and trying again later may work.
    #[error("exchanging the client credentials for a token failed: {message}")]
    TokenExchange { refused: bool, message: String },
}

impl ClientError {
    /// Worth trying again later as it is.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::RateLimited { .. }
                | ClientError::Server { .. }
                | ClientError::Timeout(_)
                | ClientError::Connect(_)
                | ClientError::Transport(_)
                | ClientError::Unsent(_)
                | ClientError::Decode { .. }
                | ClientError::TokenExchange { refused: false, .. }
        )
    }

    /// A POST may have been processed even though no usable answer came back:
    /// the caller must not blindly repeat a start.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Server { .. }
                | ClientError::Timeout(_)
                | ClientError::Transport(_)
                | ClientError::Decode { .. }
                | ClientError::Redirect { .. }
                | ClientError::BodyTooLarge { .. }
                | ClientError::TooMuch { .. }
        )
    }

    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ClientError::Unauthorized { .. } | ClientError::TokenExchange { refused: true, .. }
        )
    }

    /// The URL is not on the allow-list.
    pub fn is_not_allowed(&self) -> bool {
        matches!(self, ClientError::EndpointNotAllowed(_))
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Unauthorized { status, .. }
            | ClientError::Rejected { status, .. }
            | ClientError::Server { status, .. }
            | ClientError::Redirect { status }
            | ClientError::Decode { status, .. } => Some(*status),
            ClientError::NotFound { .. } => Some(404),
            ClientError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::RateLimited { retry_after, .. }
            | ClientError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Builds the error for a non-2xx answer from its status and body.
    pub fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> ClientError {
        let message = describe_body(body);
        match status {
            401 | 403 => ClientError::Unauthorized { status, message },
            404 => ClientError::NotFound { message },
            429 => ClientError::RateLimited {
                message,
                retry_after,
            },
            500..=599 => ClientError::Server {
                status,
                message,
                retry_after,
            },
            _ => ClientError::Rejected { status, message },
        }
    }
}

/// The longest API error message kept: enough for any real explanation, small
/// enough that one copied into a condition keeps the resource small.
pub const MAX_API_MESSAGE_BYTES: usize = 512;

/// The API's `{status, message}` message, or a short description of a body that
/// is not that shape (empty, HTML, other text).
pub fn describe_body(body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ErrorResponse>(body)
        && let Some(m) = parsed.message.filter(|m| !m.trim().is_empty())
    {
        // Escaped, not dropped: the text reaches statuses, Events and terminals.
        let printable = super::wire::printable(&m);
        return crate::bounded::cut(&printable, MAX_API_MESSAGE_BYTES);
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        "an empty body".to_string()
    } else if trimmed.starts_with('<') {
        "an HTML body".to_string()
    } else {
        format!("a body that is not JSON: {}", excerpt(trimmed))
    }
}

/// The first 80 characters, printable only.
pub fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(80).collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let cases: Vec<(ClientError, bool, bool, bool)> = vec![
            // (error, retryable, outcome unknown, auth)
            (
                ClientError::from_response(401, b"", None),
                false,
                false,
                true,
            ),
            (
                ClientError::from_response(403, b"{}", None),
                false,
                false,
                true,
            ),
            (
                ClientError::from_response(404, b"", None),
                false,
                false,
                false,
            ),
            (
                ClientError::from_response(400, br#"{"status":400,"message":"bad"}"#, None),
                false,
                false,
                false,
            ),
            (
                ClientError::from_response(429, b"", Some(Duration::from_secs(2))),
                true,
                false,
                false,
            ),
            (
                ClientError::from_response(500, b"", None),
                true,
                true,
                false,
            ),
            (
                ClientError::from_response(503, b"<html>", None),
                true,
                true,
                false,
            ),
            (
                ClientError::Timeout(Duration::from_secs(1)),
                true,
                true,
                false,
            ),
            (ClientError::Connect("refused".into()), true, false, false),
            (ClientError::Redirect { status: 302 }, false, true, false),
            (ClientError::BodyTooLarge { limit: 8 }, false, true, false),
            (
                ClientError::TokenExchange {
                    refused: true,
                    message: "invalid_client".into(),
                },
                false,
                false,
                true,
            ),
            (
                ClientError::TokenExchange {
                    refused: false,
                    message: "HTTP 503".into(),
                },
                true,
                false,
                false,
            ),
            (
                ClientError::EndpointNotAllowed("no".into()),
                false,
                false,
                false,
            ),
        ];
        for (e, retryable, unknown, auth) in cases {
            assert_eq!(e.is_retryable(), retryable, "{e}");
            assert_eq!(e.outcome_unknown(), unknown, "{e}");
            assert_eq!(e.is_auth(), auth, "{e}");
        }
    }

    #[test]
    fn bodies_are_described_sensibly() {
        assert_eq!(
            describe_body(br#"{"status": 400, "message": "config_id is required"}"#),
            "config_id is required"
        );
        assert_eq!(describe_body(b""), "an empty body");
        assert_eq!(
            describe_body(b"  <html><body>Bad gateway</body></html>"),
            "an HTML body"
        );
        assert!(describe_body(b"oops\n").contains("\"oops\""));
        let e = ClientError::from_response(503, b"<html>", None);
        assert_eq!(
            e.to_string(),
            "the Amperity API failed (HTTP 503: an HTML body)"
        );
        assert_eq!(e.status(), Some(503));
        // A 3 MB message is cut, on a character boundary, with a mark.
        let huge = serde_json::json!({"status": 400, "message": "é".repeat(1_500_000)}).to_string();
        let m = describe_body(huge.as_bytes());
        assert!(m.len() <= MAX_API_MESSAGE_BYTES, "{}", m.len());
        assert!(m.ends_with(crate::bounded::CUT_MARK));
        assert!(describe_body(b"x").len() < 100);
        // A redirect's text names the code only.
        assert_eq!(
            ClientError::Redirect { status: 302 }.to_string(),
            "the Amperity endpoint answered HTTP 302, a redirect, which the operator never follows: check the endpoint"
        );
    }
}
