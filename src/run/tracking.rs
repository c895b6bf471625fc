//! Which resource follows which Amperity run, across every resource the operator
//! watches: the search for a lost start must never adopt a run that another
//! resource follows (or followed, until it has been gone longer than any search
//! window), nor a run that may be another resource's own unresolved start. Kept up
//! to date by every reconcile and status write, filled from a full list before the
//! first search of each leadership term (the watch cache holds metadata only, and
//! another leader may have written what this replica never saw), and pruned when
//! resources go. The runs of departed resources also come from the claims ledger
//! ([`crate::run::ledger`]), loaded once per term: a restarted replica remembers
//! nothing of them itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::amperity::Principal;
use crate::crd::{AmperityWorkflowRunSpec, AmperityWorkflowRunStatus, Phase};
use crate::run::decide::{Claims, workflow_type_for};

/// How long the runs of a resource that is gone stay claimed: longer than any
/// search for a lost start looks back (the skew, the request window and the
/// settle time are minutes).
pub const DEPARTED_RETENTION: Duration = Duration::from_secs(3600);

/// The default endpoint template, as the driver's defaults have it.
const DEFAULT_ENDPOINT: &str = "https://{tenant}.amperity.com/api";

pub struct Tracking {
    state: Mutex<State>,
    /// The leadership term (bumped each time this replica starts leading).
    term: AtomicU64,
    /// The term whose full relist completed (0: none).
    relisted_term: AtomicU64,
    /// The term in which the claims ledger was loaded (0: none).
    ledger_term: AtomicU64,
    /// Where a spec without `endpoint` goes (`{tenant}` replaced).
    default_endpoint: String,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking::with_default_endpoint(DEFAULT_ENDPOINT)
    }
}

/// Where and as whom a start goes: the tenant, the endpoint's host, and (once
/// known) the principal's id. Starts contest each other only when all agree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StartKey {
    tenant: String,
    host: String,
    kind: &'static str,
}

#[derive(Default)]
struct State {
    /// The runs each resource (by uid) follows or followed.
    ids_of: HashMap<String, Vec<String>>,
    /// Who follows each run id.
    follower: HashMap<String, String>,
    /// Resources whose start's outcome is not known yet: where it went, and when
    /// the intent was recorded.
    unresolved: HashMap<String, (StartKey, Timestamp)>,
    /// Who each resource's credential starts runs as, once a search of its told.
    principal_of: HashMap<String, String>,
    /// Runs of resources that are gone, and when they went: still claimed for
    /// [`DEPARTED_RETENTION`].
    departed: HashMap<String, Timestamp>,
}

impl Tracking {
    pub fn with_default_endpoint(template: &str) -> Tracking {
        Tracking {
            state: Mutex::new(State::default()),
            term: AtomicU64::new(1),
            relisted_term: AtomicU64::new(0),
            ledger_term: AtomicU64::new(0),
            default_endpoint: template.to_string(),
        }
    }

    /// The host a spec's calls go to (lower case), or the raw text when unparsable.
    fn host_of(&self, spec: &AmperityWorkflowRunSpec) -> String {
        let raw = match &spec.endpoint {
            Some(e) => e.clone(),
            None => self.default_endpoint.replace("{tenant}", spec.tenant()),
        };
        url::Url::parse(&raw)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or(raw)
    }

    fn key(&self, spec: &AmperityWorkflowRunSpec) -> StartKey {
        StartKey {
            tenant: spec.tenant().to_string(),
            host: self.host_of(spec),
            kind: workflow_type_for(&spec.config_id),
        }
    }

    /// Records what resource `uid` follows, from its spec and status.
    pub fn observe(
        &self,
        uid: &str,
        spec: &AmperityWorkflowRunSpec,
        status: Option<&AmperityWorkflowRunStatus>,
    ) {
        let ids = claimed_ids(spec, status);
        let mut unresolved = None;
        if let Some(s) = status
            && s.phase == Some(Phase::Starting)
            && s.workflow_id.is_none()
        {
            // An intent without a time is as old as time: it contests everything.
            let at = s.started_at.as_ref().map_or(Timestamp::MIN, |t| t.0);
            unresolved = Some((self.key(spec), at));
        }
        let mut state = self.state.lock().unwrap();
        state.drop_live(uid);
        for id in &ids {
            state.follower.insert(id.clone(), uid.to_string());
        }
        if !ids.is_empty() {
            state.ids_of.insert(uid.to_string(), ids);
        }
        if let Some(u) = unresolved {
            state.unresolved.insert(uid.to_string(), u);
        }
    }

    /// The resource is gone: its runs stay claimed for [`DEPARTED_RETENTION`].
    /// Returns them (for the claims ledger).
    pub fn forget(&self, uid: &str) -> Vec<String> {
        self.forget_at(uid, Timestamp::now())
    }

    /// [`Tracking::forget`] at a given time.
    pub fn forget_at(&self, uid: &str, now: Timestamp) -> Vec<String> {
        let mut state = self.state.lock().unwrap();
        let ids = state.depart(uid, now);
        state.prune_departed(now);
        ids
    }

    /// Keeps only the resources in `present` (after a relist). Returns the runs of
    /// the resources that vanished (for the claims ledger).
    pub fn retain(&self, present: &HashSet<String>) -> Vec<String> {
        let now = Timestamp::now();
        let mut state = self.state.lock().unwrap();
        let gone: Vec<String> = state
            .ids_of
            .keys()
            .chain(state.unresolved.keys())
            .filter(|uid| !present.contains(*uid))
            .cloned()
            .collect();
        let mut ids = Vec::new();
        for uid in gone {
            ids.extend(state.depart(&uid, now));
        }
        state.prune_departed(now);
        ids
    }

    /// Runs of resources gone before this replica saw them go, from the claims
    /// ledger as read in `term`: claimed until their own retention ends. Counts as
    /// the ledger's load for `term`, if it is still current.
    pub fn load_departed_for(&self, term: u64, departed: Vec<(String, Timestamp)>) {
        let now = Timestamp::now();
        let mut state = self.state.lock().unwrap();
        for (id, at) in departed {
            let slot = state.departed.entry(id).or_insert(at);
            *slot = (*slot).max(at);
        }
        state.prune_departed(now);
        drop(state);
        if term == self.term() {
            self.ledger_term.store(term, Ordering::SeqCst);
        }
    }

    /// This replica starts leading (again): what it knew may be stale (another
    /// leader wrote meanwhile, every replica may have restarted), so claims are
    /// incomplete until the next full relist and the next load of the claims
    /// ledger. Returns the new term.
    pub fn begin_term(&self) -> u64 {
        self.term.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The current leadership term, to hand to [`Tracking::set_warm_for`] after a
    /// relist that began in it.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Every watched resource has been listed, and the claims ledger loaded, in the
    /// current term.
    pub fn is_warm(&self) -> bool {
        !self.needs_relist() && !self.needs_ledger()
    }

    /// No full relist completed in the current term.
    pub fn needs_relist(&self) -> bool {
        self.relisted_term.load(Ordering::SeqCst) != self.term()
    }

    /// The claims ledger was not loaded in the current term.
    pub fn needs_ledger(&self) -> bool {
        self.ledger_term.load(Ordering::SeqCst) != self.term()
    }

    /// A full relist that began in `term` completed (warm once the ledger is
    /// loaded too), if the term is still current.
    pub fn set_warm_for(&self, term: u64) {
        if term == self.term() {
            self.relisted_term.store(term, Ordering::SeqCst);
        }
    }

    /// Warm for the current term: a host that manages every resource itself, and
    /// has no other replica's departures to learn.
    pub fn set_warm(&self) {
        let term = self.term();
        self.set_warm_for(term);
        self.ledger_term.store(term, Ordering::SeqCst);
    }

    /// Records who resource `uid`'s credential starts runs as (its search knew).
    pub fn note_principal(&self, uid: &str, principal: Option<&Principal>) {
        let Some(id) = principal.and_then(|p| p.id.clone()) else {
            return;
        };
        let mut state = self.state.lock().unwrap();
        state.principal_of.insert(uid.to_string(), id);
    }

    /// What other resources claim of `candidates`, for resource `uid` searching for
    /// a start of `spec` with a credential that starts runs as `principal`.
    pub fn claims(
        &self,
        uid: &str,
        spec: &AmperityWorkflowRunSpec,
        candidates: &[String],
        principal: Option<&Principal>,
    ) -> Claims {
        let state = self.state.lock().unwrap();
        let tracked: BTreeSet<String> = candidates
            .iter()
            .filter(|id| {
                state.follower.get(*id).is_some_and(|who| who != uid)
                    || state.departed.contains_key(*id)
            })
            .cloned()
            .collect();
        let key = self.key(spec);
        let mine = principal.and_then(|p| p.id.as_deref());
        let other_starts = state
            .unresolved
            .iter()
            .filter(|(other, (k, _))| *other != uid && *k == key)
            // Another principal's start makes another principal's runs, which the
            // principal check already rules out; unknown on either side contests.
            .filter(
                |(other, _)| match (mine, state.principal_of.get(*other).map(String::as_str)) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                },
            )
            .map(|(_, (_, at))| *at)
            .collect();
        Claims {
            tracked,
            other_starts,
            complete: self.is_warm(),
        }
    }

    /// How many resources are known (for tests and debugging).
    pub fn len(&self) -> usize {
        let state = self.state.lock().unwrap();
        let mut uids: HashSet<&String> = state.ids_of.keys().collect();
        uids.extend(state.unresolved.keys());
        uids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The runs a resource follows or followed: its status's run and attempts, and the
/// run its spec names.
pub fn claimed_ids(
    spec: &AmperityWorkflowRunSpec,
    status: Option<&AmperityWorkflowRunStatus>,
) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    if let Some(s) = status {
        ids.extend(s.workflow_id.iter().cloned());
        ids.extend(s.attempts.iter().map(|a| a.workflow_id.clone()));
    }
    ids.extend(spec.workflow_id.iter().cloned());
    ids.sort();
    ids.dedup();
    ids
}

impl State {
    /// Drops what `uid` follows now (before recording it afresh).
    fn drop_live(&mut self, uid: &str) {
        if let Some(ids) = self.ids_of.remove(uid) {
            for id in ids {
                if self.follower.get(&id).is_some_and(|who| who == uid) {
                    self.follower.remove(&id);
                }
            }
        }
        self.unresolved.remove(uid);
    }

    /// `uid` is gone: its runs move to the departed (and are returned).
    fn depart(&mut self, uid: &str, now: Timestamp) -> Vec<String> {
        let ids = self.ids_of.get(uid).cloned().unwrap_or_default();
        for id in &ids {
            self.departed.insert(id.clone(), now);
        }
        self.drop_live(uid);
        self.principal_of.remove(uid);
        ids
    }

    fn prune_departed(&mut self, now: Timestamp) {
        let keep = SignedDuration::try_from(DEPARTED_RETENTION).unwrap_or_default();
        let since = now.saturating_sub(keep).unwrap_or(Timestamp::MIN);
        self.departed.retain(|_, at| *at >= since);
        // Bounded whatever the churn: the oldest go first.
        if self.departed.len() > 100_000 {
            let mut ages: Vec<Timestamp> = self.departed.values().copied().collect();
            ages.sort();
            let cut = ages[ages.len() - 100_000];
            self.departed.retain(|_, at| *at >= cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Attempt;

    fn spec(config: &str) -> AmperityWorkflowRunSpec {
        serde_json::from_value(serde_json::json!({
            "tenant": "socktown", "tokenSecretRef": {"name": "s"}, "configId": config
        }))
        .unwrap()
    }

    fn status(phase: Phase, id: Option<&str>, attempts: &[&str]) -> AmperityWorkflowRunStatus {
        AmperityWorkflowRunStatus {
            phase: Some(phase),
            workflow_id: id.map(str::to_string),
            attempts: attempts
                .iter()
                .map(|a| Attempt {
                    workflow_id: a.to_string(),
                    ..Attempt::default()
                })
                .collect(),
            ..AmperityWorkflowRunStatus::default()
        }
    }

    #[test]
    fn runs_followed_by_others_and_their_unresolved_starts_are_claims() {
        let t = Tracking::default();
        t.observe(
            "b",
            &spec("cg-b"),
            Some(&status(Phase::Running, Some("wf-b2"), &["wf-b1"])),
        );
        t.observe(
            "c",
            &spec("cc-c"),
            Some(&status(Phase::Starting, None, &[])),
        );
        let mine = spec("cg-a");
        let claims = t.claims(
            "a",
            &mine,
            &["wf-b1".into(), "wf-b2".into(), "wf-x".into()],
            None,
        );
        assert_eq!(
            claims.tracked,
            ["wf-b1".to_string(), "wf-b2".to_string()].into()
        );
        assert!(
            claims.other_starts.is_empty(),
            "c starts a campaign, a courier group"
        );
        assert!(!claims.complete, "not warm yet");
        t.observe(
            "d",
            &spec("cg-d"),
            Some(&status(Phase::Starting, None, &[])),
        );
        t.set_warm();
        let claims = t.claims("a", &mine, &[], None);
        assert!(claims.other_starts.len() == 1 && claims.complete);
        // A resource's own runs and own start are never claims against it.
        let claims = t.claims("b", &spec("cg-b"), &["wf-b2".into()], None);
        assert!(claims.tracked.is_empty());
        // Once d has its run, its start is resolved; once b is gone, its runs stay
        // claimed (a search must not adopt a deleted resource's run).
        t.observe(
            "d",
            &spec("cg-d"),
            Some(&status(Phase::Running, Some("wf-d"), &[])),
        );
        t.forget("b");
        let claims = t.claims("a", &mine, &["wf-b2".into(), "wf-d".into()], None);
        assert_eq!(
            claims.tracked,
            ["wf-b2".to_string(), "wf-d".to_string()].into()
        );
        assert!(claims.other_starts.is_empty());
        t.retain(&["d".to_string()].into());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_spec_workflow_id_is_a_claim_before_any_status() {
        let t = Tracking::default();
        let mut s = spec("cg-e");
        s.workflow_id = Some("wf-e".into());
        t.observe("e", &s, None);
        assert_eq!(
            t.claims("a", &spec("cg-a"), &["wf-e".into()], None)
                .tracked
                .len(),
            1
        );
    }

    fn at(secs: i64) -> Timestamp {
        "2026-03-01T09:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_secs(secs)
    }

    #[test]
    fn a_deleted_resources_runs_stay_claimed_for_the_retention() {
        let t = Tracking::default();
        t.observe(
            "b",
            &spec("cg-b"),
            Some(&status(Phase::Succeeded, Some("wf-b"), &["wf-b0"])),
        );
        t.forget_at("b", at(0));
        let claims = t.claims("a", &spec("cg-a"), &["wf-b".into(), "wf-b0".into()], None);
        assert_eq!(claims.tracked.len(), 2, "{claims:?}");
        assert_eq!(t.len(), 0, "b itself is gone");
        // Long after any search window, pruned on the next departure.
        t.forget_at("x", at(DEPARTED_RETENTION.as_secs() as i64 + 1));
        assert!(
            t.claims("a", &spec("cg-a"), &["wf-b".into()], None)
                .tracked
                .is_empty()
        );
        // A relist that no longer shows a resource departs it too.
        t.observe(
            "c",
            &spec("cg-c"),
            Some(&status(Phase::Running, Some("wf-c"), &[])),
        );
        t.retain(&HashSet::new());
        assert_eq!(
            t.claims("a", &spec("cg-a"), &["wf-c".into()], None)
                .tracked
                .len(),
            1
        );
    }

    #[test]
    fn claims_are_complete_only_after_a_relist_in_the_current_term() {
        let t = Tracking::default();
        let term = t.term();
        t.set_warm_for(term);
        t.load_departed_for(term, Vec::new());
        assert!(t.claims("a", &spec("cg-a"), &[], None).complete);
        // Leading again: what the other leader wrote is unknown until a relist.
        let next = t.begin_term();
        t.load_departed_for(next, Vec::new());
        assert!(!t.claims("a", &spec("cg-a"), &[], None).complete);
        // A relist that began in the earlier term does not count.
        t.set_warm_for(term);
        assert!(!t.is_warm());
        t.set_warm_for(next);
        assert!(t.is_warm());
    }

    #[test]
    fn claims_are_complete_only_once_the_ledger_is_loaded_in_the_current_term() {
        let t = Tracking::default();
        let term = t.term();
        t.set_warm_for(term);
        assert!(
            !t.claims("a", &spec("cg-a"), &[], None).complete,
            "relisted, but the departed of earlier processes are unknown"
        );
        // A load read in an earlier term does not count for the next.
        let next = t.begin_term();
        t.set_warm_for(next);
        t.load_departed_for(term, vec![("wf-gone".into(), Timestamp::now())]);
        assert!(!t.is_warm());
        // Loaded in this term: complete, and the ledger's runs are claims.
        t.load_departed_for(next, vec![("wf-orphaned".into(), Timestamp::now())]);
        let claims = t.claims(
            "a",
            &spec("cg-a"),
            &["wf-orphaned".into(), "wf-gone".into(), "wf-free".into()],
            None,
        );
        assert!(claims.complete);
        assert_eq!(
            claims.tracked,
            ["wf-gone".to_string(), "wf-orphaned".to_string()].into()
        );
        // An entry past its retention is no claim.
        let old =
            Timestamp::now() - SignedDuration::from_secs(DEPARTED_RETENTION.as_secs() as i64 + 5);
        t.load_departed_for(next, vec![("wf-expired".into(), old)]);
        assert!(
            t.claims("a", &spec("cg-a"), &["wf-expired".into()], None)
                .tracked
                .is_empty()
        );
    }

    #[test]
    fn departures_name_the_runs_to_record() {
        let t = Tracking::default();
        t.observe(
            "b",
            &spec("cg-b"),
            Some(&status(Phase::Failed, Some("wf-b2"), &["wf-b1", "wf-b2"])),
        );
        t.observe("c", &spec("cg-c"), Some(&status(Phase::Pending, None, &[])));
        assert_eq!(t.forget("b"), ["wf-b1", "wf-b2"]);
        assert!(t.forget("b").is_empty(), "recorded once");
        assert!(t.forget("c").is_empty(), "nothing to record without runs");
        t.observe(
            "d",
            &spec("cg-d"),
            Some(&status(Phase::Running, Some("wf-d"), &[])),
        );
        assert_eq!(t.retain(&HashSet::new()), ["wf-d"]);
    }

    #[test]
    fn unresolved_starts_contest_only_the_same_tenant_endpoint_and_principal() {
        let t = Tracking::default();
        let with = |endpoint: Option<&str>| {
            let mut s = spec("cg-x");
            s.endpoint = endpoint.map(str::to_string);
            s
        };
        let starting = status(Phase::Starting, None, &[]);
        // Same tenant name, another endpoint (another team's same-named tenant).
        t.observe(
            "other-host",
            &with(Some("https://app.amperity.com/api")),
            Some(&starting),
        );
        // The default endpoint, spelled out: the same host.
        t.observe(
            "same-host",
            &with(Some("https://SOCKTOWN.amperity.com/api")),
            Some(&starting),
        );
        // Same place, another principal.
        t.observe("other-key", &with(None), Some(&starting));
        t.note_principal("other-key", Some(&Principal::given("api-key|other")));
        // Same place, principal unknown: contests.
        t.observe("unknown-key", &with(None), Some(&starting));
        let me = Principal::given("api-key|me");
        let claims = t.claims("a", &with(None), &[], Some(&me));
        assert_eq!(
            claims.other_starts.len(),
            2,
            "same-host and unknown-key: {claims:?}"
        );
        // Without knowing our own principal, every start at the same place contests.
        assert_eq!(t.claims("a", &with(None), &[], None).other_starts.len(), 3);
        t.note_principal("unknown-key", Some(&me));
        assert_eq!(
            t.claims("a", &with(None), &[], Some(&me))
                .other_starts
                .len(),
            2
        );
    }
}
