//! `AmperityConnection` and `ClusterAmperityConnection`: their credentials are
//! verified with one cheap authenticated call, and the outcome is their status.
//! A connection is looked at as often as a stalled run (`STALLED_RECHECK_SECS`):
//! its Secret is read, and a rotated one is verified at once.
//! The decisions here are pure (what the status says, when to verify again); the
//! controller ([`controller`]) reads the Secret, makes the call and writes status.

pub mod controller;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::amperity::Principal;
use crate::bounded::cut;
use crate::crd::connection::ConnectionStatus;

/// How old a verification may get before it is made again (one list call).
pub const VERIFY_EVERY: Duration = Duration::from_secs(300);
/// Condition messages are cut to what the API server's Condition accepts.
const MAX_MESSAGE_BYTES: usize = 1024;

/// What checking a connection's credentials found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Amperity answered an authenticated call.
    Verified,
    /// The Secret is missing, unreadable or lacks the key (reason, message).
    SecretProblem { reason: String, message: String },
    /// The endpoint or the OAuth token URL is not on the operator's allow-list.
    EndpointNotAllowed(String),
    /// Amperity refused the credentials (401/403, or the token exchange).
    Rejected(String),
    /// Amperity could not be asked (network, 5xx, 429): nothing is known yet.
    Unavailable(String),
}

/// Whether a connection's credentials should be verified now: never verified,
/// verified for an older generation or Secret, or longer ago than [`VERIFY_EVERY`].
pub fn due(
    last: Option<&(i64, String, Timestamp)>,
    generation: i64,
    secret_version: &str,
    now: Timestamp,
) -> bool {
    match last {
        None => true,
        Some((g, v, at)) => {
            *g != generation
                || v != secret_version
                || now.duration_since(*at).unsigned_abs() >= VERIFY_EVERY
        }
    }
}

/// The status a verification gives a connection: `Ready` True once Amperity
/// answered; `Stalled` True when a person must act (Secret, allow-list, refused
/// credentials); a failure to reach Amperity leaves `Ready` False, not stalled.
pub fn status(
    before: Option<&ConnectionStatus>,
    generation: i64,
    outcome: &Verification,
    principal: Option<&Principal>,
    runs: u32,
    now: Timestamp,
) -> ConnectionStatus {
    let (ready, stalled, reason, message) = match outcome {
        Verification::Verified => (
            true,
            false,
            "Verified",
            "Amperity accepted the credentials".to_string(),
        ),
        Verification::SecretProblem { reason, message } => {
            (false, true, reason.as_str(), message.clone())
        }
        Verification::EndpointNotAllowed(m) => (false, true, "EndpointNotAllowed", m.clone()),
        Verification::Rejected(m) => (false, true, "AuthFailed", m.clone()),
        Verification::Unavailable(m) => (false, false, "ApiUnavailable", m.clone()),
    };
    let message = if message.trim().is_empty() {
        reason.to_string()
    } else {
        cut(&message, MAX_MESSAGE_BYTES)
    };
    let previous = before.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let condition = |type_: &str, on: bool, reason: &str, message: &str| {
        let status = if on { "True" } else { "False" };
        // The transition time moves only when the status does.
        let since = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(generation),
            last_transition_time: since,
        }
    };
    let verified = matches!(outcome, Verification::Verified);
    ConnectionStatus {
        conditions: vec![
            condition("Ready", ready, reason, &message),
            condition(
                "Stalled",
                stalled,
                if stalled { reason } else { "Verified" },
                // Never empty: an empty message is serialized as nothing, which the
                // API server refuses in a Condition.
                if stalled {
                    &message
                } else {
                    "nothing needs a person"
                },
            ),
        ],
        observed_generation: Some(generation),
        last_verified: if verified {
            Some(Time(now))
        } else {
            before.and_then(|s| s.last_verified.clone())
        },
        principal_id: principal
            .and_then(|p| p.id.clone())
            .or_else(|| before.and_then(|s| s.principal_id.clone())),
        principal_name: principal
            .and_then(|p| p.name.clone())
            .or_else(|| before.and_then(|s| s.principal_name.clone())),
        runs: Some(runs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + secs).unwrap()
    }

    fn cond<'a>(s: &'a ConnectionStatus, type_: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn each_outcome_sets_ready_and_stalled() {
        let cases = [
            (
                Verification::Verified,
                ("True", "Verified"),
                ("False", "Verified"),
            ),
            (
                Verification::SecretProblem {
                    reason: "SecretNotFound".into(),
                    message: "Secret platform/acme does not exist".into(),
                },
                ("False", "SecretNotFound"),
                ("True", "SecretNotFound"),
            ),
            (
                Verification::EndpointNotAllowed("not allowed".into()),
                ("False", "EndpointNotAllowed"),
                ("True", "EndpointNotAllowed"),
            ),
            (
                Verification::Rejected("401".into()),
                ("False", "AuthFailed"),
                ("True", "AuthFailed"),
            ),
            (
                Verification::Unavailable("503".into()),
                ("False", "ApiUnavailable"),
                ("False", "Verified"),
            ),
        ];
        for (outcome, ready, stalled) in cases {
            let s = status(None, 3, &outcome, None, 0, at(0));
            assert!(
                s.conditions.iter().all(|c| !c.message.is_empty()),
                "{outcome:?}"
            );
            assert_eq!(cond(&s, "Ready"), ready, "{outcome:?}");
            assert_eq!(cond(&s, "Stalled"), stalled, "{outcome:?}");
            assert!(
                s.conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(3))
            );
            assert_eq!(s.last_verified.is_some(), outcome == Verification::Verified);
        }
    }

    #[test]
    fn a_failure_to_reach_amperity_keeps_what_was_known() {
        let principal = Principal {
            id: Some("p-1".into()),
            name: Some("Automated workflow".into()),
        };
        let ok = status(None, 1, &Verification::Verified, Some(&principal), 2, at(0));
        let later = status(
            Some(&ok),
            1,
            &Verification::Unavailable("timed out".into()),
            None,
            1,
            at(60),
        );
        assert_eq!(later.last_verified, ok.last_verified);
        assert_eq!(later.principal_id.as_deref(), Some("p-1"));
        assert_eq!(later.principal_name.as_deref(), Some("Automated workflow"));
        assert_eq!(later.runs, Some(1));
        // Ready went False: its transition time is the new one; Stalled stayed False.
        let time = |s: &ConnectionStatus, t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(time(&later, "Ready"), Time(at(60)));
        assert_eq!(time(&later, "Stalled"), time(&ok, "Stalled"));
    }

    #[test]
    fn long_messages_are_cut() {
        let s = status(
            None,
            1,
            &Verification::Rejected("é".repeat(4000)),
            None,
            0,
            at(0),
        );
        assert!(s.conditions.iter().all(|c| c.message.len() <= 1024));
    }

    #[test]
    fn verification_is_due_when_anything_it_depends_on_changed_or_it_is_old() {
        let last = (2, "100".to_string(), at(0));
        assert!(due(None, 2, "100", at(0)));
        assert!(!due(Some(&last), 2, "100", at(299)));
        assert!(due(Some(&last), 3, "100", at(1)), "the spec changed");
        assert!(due(Some(&last), 2, "101", at(1)), "the Secret changed");
        assert!(due(Some(&last), 2, "100", at(300)), "five minutes passed");
        // A clock that went back is not a reason to wait for ever.
        assert!(due(Some(&last), 2, "100", at(-300)));
    }
}
