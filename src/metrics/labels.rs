//! The label sets of the metrics, and the bounds that keep label values chosen
//! outside the operator (tenants, namespaces, api-versions, reasons) from growing
//! the operator's memory and every scrape without limit.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// `call` is which Amperity call (`start`, `get`, `list`, `stop`, `feed`); never
/// `endpoint`, which Prometheus' own scrape target labels use.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub call: String,
    /// HTTP status code, or `error` when no response came back.
    pub code: String,
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub call: String,
    pub tenant: String,
}

/// An OAuth token exchange: `ok`, `refused` (the client credentials: fix the
/// Secret) or `failed` (the token endpoint failed or did not answer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    pub outcome: String,
    pub tenant: String,
}

/// Runs that wait for a person, by the namespace they are in (`run_namespace`:
/// `namespace` is the scrape target's label, the operator's own namespace) and the
/// reason of their `Stalled` condition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StalledLabels {
    pub run_namespace: String,
    pub reason: String,
}

/// `read` or `write` (of the claims ledger).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub phase: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub workflow_type: String,
    pub outcome: String,
}

/// What a schedule did with a due time or a run-now request: `created`,
/// `skipped` (Forbid), `missed` (starting deadline), `replaced`, `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub outcome: &'static str,
}

/// Every `outcome` of `schedule_runs`.
pub const SCHEDULE_OUTCOMES: [&str; 5] = ["created", "skipped", "missed", "replaced", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookLabels {
    /// `listed`, `failed` or `skipped`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub api_version: String,
}

/// How many tenants get a label of their own; later ones share `other`. Tenants are
/// named by resource authors, so an unbounded label would let them grow the
/// operator's memory and every scrape without limit.
pub const MAX_TENANT_LABELS: usize = 32;

/// How many namespaces get a label of their own in `stalled`; later ones share `other`.
pub const MAX_NAMESPACE_LABELS: usize = 32;

/// How many api-versions get a label of their own in `deprecation_notices`.
pub const MAX_API_VERSION_LABELS: usize = 8;

/// Hands out label values, first come first served, up to a bound; later values
/// share `other`.
pub(super) struct Labeller {
    max: usize,
    known: Mutex<std::collections::HashSet<String>>,
}

impl Labeller {
    pub(super) fn new(max: usize) -> Self {
        Labeller {
            max,
            known: Mutex::default(),
        }
    }

    /// `value`'s own label if it has one or may take a slot (`admit`), else `other`.
    pub(super) fn label(&self, value: &str, admit: bool) -> String {
        let mut known = self.known.lock().unwrap();
        if known.contains(value) {
            return value.to_string();
        }
        if admit && known.len() < self.max && value.len() <= 253 && value != "other" {
            known.insert(value.to_string());
            return value.to_string();
        }
        "other".to_string()
    }
}

/// Tenant label values. A tenant takes one of the [`MAX_TENANT_LABELS`] slots only
/// once Amperity has answered it with success: a tenant made up in a spec (which
/// never answers, or answers 401/403) cannot take the slot of a real one.
pub(super) struct TenantLabeller(Labeller);

impl Default for TenantLabeller {
    fn default() -> Self {
        TenantLabeller(Labeller::new(MAX_TENANT_LABELS))
    }
}

impl TenantLabeller {
    pub(super) fn label(&self, tenant: &str, answered: bool) -> String {
        self.0.label(tenant, answered)
    }
}

/// The workflow types of the metrics: the three Amperity starts, and `other` for
/// anything Amperity reports that is not one of them.
pub const WORKFLOW_TYPES: [&str; 3] = [
    "courier.group/run",
    "amperity.orchestration.orchestration/run",
    "campaign.send",
];

/// Reasons are the operator's own CamelCase words; anything else (a status edited by
/// hand) is `Other`, so the label stays bounded.
pub(super) fn reason_label(reason: &str) -> String {
    let camel = reason.len() <= 40
        && reason.starts_with(|c: char| c.is_ascii_uppercase())
        && reason.chars().all(|c| c.is_ascii_alphanumeric());
    if camel { reason } else { "Other" }.to_string()
}

pub(super) fn workflow_type_label(reported: &str) -> String {
    WORKFLOW_TYPES
        .iter()
        .find(|t| **t == reported)
        .map_or("other", |t| t)
        .to_string()
}
