//! Backoff with full jitter, and what a `Retry-After` header asks for (bounded).

use std::time::Duration;

use super::{BACKOFF_BASE, BACKOFF_CAP, MAX_PAUSE};

/// `base * 2^attempt`, capped: the longest wait of attempt `attempt`.
pub fn backoff_ceiling(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(BACKOFF_CAP)
}

/// Full jitter: a random wait between zero and [`backoff_ceiling`].
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(fastrand::u64(
        0..=backoff_ceiling(attempt).as_millis() as u64,
    ))
}

/// `Retry-After` as delay-seconds or an HTTP date, at most [`MAX_PAUSE`].
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // More digits than a u64 holds is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        Duration::try_from(at.duration_since(now)).unwrap_or_default()
    };
    Some(wait.min(MAX_PAUSE))
}
