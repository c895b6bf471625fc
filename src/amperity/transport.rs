//! The HTTP transport under every Amperity call (the API's and the token
//! exchange's): what a failure proves about whether the request left, and bodies
//! read no further than their size limit.

use std::time::Duration;

use super::error::ClientError;

/// A transport failure, by what it proves: a connection that was never made (DNS,
/// refused, TLS handshake, connect timeout) means the request was never written.
/// A request that could not be built (`is_builder`) never left either.
pub(crate) fn classify(e: &reqwest::Error, timeout: Duration) -> ClientError {
    if e.is_builder() {
        ClientError::Unsent(transport_summary(e))
    } else if e.is_connect() {
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

/// A transport error in a few words: its kind and the chain of causes below
/// reqwest's own text (which names the URL), down to the root one a person can act
/// on ("invalid peer certificate: UnknownIssuer", "Connection refused").
pub fn transport_summary(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    let mut causes: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        // Wrappers repeat their cause's text: keep each once.
        if !causes
            .iter()
            .any(|c| c.contains(&text) || text.contains(c.as_str()))
        {
            causes.push(text);
        } else if let Some(last) = causes.last_mut()
            && text.len() > last.len()
        {
            *last = text;
        }
        source = cause.source();
    }
    if causes.is_empty() {
        kind.to_string()
    } else {
        crate::bounded::cut(&format!("{kind}: {}", causes.join(": ")), 300)
    }
}
