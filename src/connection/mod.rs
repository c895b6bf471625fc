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

/// Who the credentials of the Secret at `secret_version` act as: `known` (the
/// Secret's `principal` key, or what their runs showed) when there is one, else
/// what the status already said for that same version of the Secret. A principal
/// recorded for another version is dropped: a rotated Secret may hold another
/// principal's credentials, and a search trusting the old one could adopt a run
/// that is not its own. Returns the id, the name and the version they hold for.
pub fn principal(
    before: Option<&ConnectionStatus>,
    known: Option<&Principal>,
    secret_version: &str,
) -> (Option<String>, Option<String>, Option<String>) {
    if let Some(p) = known.filter(|p| p.id.as_deref().is_some_and(|id| !id.is_empty())) {
        let version = (!secret_version.is_empty()).then(|| secret_version.to_string());
        return (p.id.clone(), p.name.clone(), version);
    }
    match before {
        Some(s)
            if !secret_version.is_empty()
                && s.principal_secret_version.as_deref() == Some(secret_version) =>
        {
            (
                s.principal_id.clone(),
                s.principal_name.clone(),
                s.principal_secret_version.clone(),
            )
        }
        _ => (None, None, None),
    }
}

/// The status of a connection verified recently (nothing to verify again): the
/// same, with the count of runs and the principal brought up to date.
pub fn refreshed(
    before: &ConnectionStatus,
    known: Option<&Principal>,
    secret_version: &str,
    runs: u32,
) -> ConnectionStatus {
    let (principal_id, principal_name, principal_secret_version) =
        principal(Some(before), known, secret_version);
    ConnectionStatus {
        principal_id,
        principal_name,
        principal_secret_version,
        runs: Some(runs),
        ..before.clone()
    }
}

/// The status a verification gives a connection: `Ready` True once Amperity
/// answered; `Stalled` True when a person must act (Secret, allow-list, refused
/// credentials); a failure to reach Amperity leaves `Ready` False, not stalled.
/// `principal`: who the credentials act as, when known; `secret_version`: the
/// version of the Secret they were read from (empty when it could not be read).
pub fn status(
    before: Option<&ConnectionStatus>,
    generation: i64,
    outcome: &Verification,
    known: Option<&Principal>,
    secret_version: &str,
    runs: u32,
    now: Timestamp,
) -> ConnectionStatus {
    let (principal_id, principal_name, principal_secret_version) =
        principal(before, known, secret_version);
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
    // kstatus reads Reconciling: True while the operator is still finding out
    // (Amperity could not be asked), so a GitOps tool waits rather than calls the
    // connection Current or Failed.
    let finding_out = matches!(outcome, Verification::Unavailable(_));
    ConnectionStatus {
        conditions: vec![
            condition("Ready", ready, reason, &message),
            condition(
                "Reconciling",
                finding_out,
                if finding_out { reason } else { "Verified" },
                if finding_out {
                    &message
                } else {
                    "nothing left to find out"
                },
            ),
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
        principal_id,
        principal_name,
        principal_secret_version,
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
            let s = status(None, 3, &outcome, None, "7", 0, at(0));
            let unavailable = matches!(outcome, Verification::Unavailable(_));
            let reconciling = if unavailable { "True" } else { "False" };
            assert_eq!(cond(&s, "Reconciling").0, reconciling, "{outcome:?}");
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
        let ok = status(
            None,
            1,
            &Verification::Verified,
            Some(&principal),
            "7",
            2,
            at(0),
        );
        let later = status(
            Some(&ok),
            1,
            &Verification::Unavailable("timed out".into()),
            None,
            "7",
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
    fn the_principal_holds_for_the_version_of_the_secret_it_was_known_for() {
        let p = |id: &str| Principal {
            id: Some(id.into()),
            name: Some(format!("name of {id}")),
        };
        let recorded = ConnectionStatus {
            principal_id: Some("p-old".into()),
            principal_name: Some("name of p-old".into()),
            principal_secret_version: Some("7".into()),
            ..ConnectionStatus::default()
        };
        type Case<'a> = (
            &'a str,
            Option<&'a ConnectionStatus>,
            Option<Principal>,
            &'a str,
            Option<(&'a str, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            ("nothing known", None, None, "7", None),
            ("newly known", None, Some(p("p-1")), "7", Some(("p-1", "7"))),
            (
                "after a restart: the status remembers it for the same Secret",
                Some(&recorded),
                None,
                "7",
                Some(("p-old", "7")),
            ),
            (
                "the Secret was rotated: the old principal is not trusted",
                Some(&recorded),
                None,
                "8",
                None,
            ),
            (
                "the Secret could not be read",
                Some(&recorded),
                None,
                "",
                None,
            ),
            (
                "known anew after a rotation",
                Some(&recorded),
                Some(p("p-2")),
                "8",
                Some(("p-2", "8")),
            ),
            (
                "a name without an id identifies nobody",
                Some(&recorded),
                Some(Principal {
                    id: None,
                    name: Some("Automated workflow".into()),
                }),
                "8",
                None,
            ),
        ];
        for (case, before, known, version, want) in cases {
            let (id, name, held) = principal(before, known.as_ref(), version);
            let got = id.as_deref().zip(held.as_deref());
            assert_eq!(got, want, "{case}");
            assert_eq!(name.is_some(), want.is_some(), "{case}");
            // The same through a verification and through a refresh.
            let s = status(
                before,
                1,
                &Verification::Verified,
                known.as_ref(),
                version,
                0,
                at(0),
            );
            assert_eq!(
                s.principal_id
                    .as_deref()
                    .zip(s.principal_secret_version.as_deref()),
                want,
                "{case}"
            );
            let r = refreshed(
                before.unwrap_or(&ConnectionStatus::default()),
                known.as_ref(),
                version,
                3,
            );
            assert_eq!(
                r.principal_id
                    .as_deref()
                    .zip(r.principal_secret_version.as_deref()),
                want,
                "{case}"
            );
            assert_eq!(r.runs, Some(3));
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let s = status(
            None,
            1,
            &Verification::Rejected("é".repeat(4000)),
            None,
            "",
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
