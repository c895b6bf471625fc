//! Which resource follows which Amperity run, across every resource the operator
//! watches: the search for a lost start must never adopt a run that another
//! resource follows, nor a run that may be another resource's own unresolved
//! start. Kept up to date by every reconcile and status write, filled once from a
//! full list before the first search after a start (the watch cache holds metadata
//! only), and pruned when resources go.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use jiff::Timestamp;

use crate::crd::{AmperityWorkflowRunSpec, AmperityWorkflowRunStatus, Phase};
use crate::run::decide::{Claims, workflow_type_for};

#[derive(Default)]
pub struct Tracking {
    state: Mutex<State>,
    /// Every watched resource has been seen at least once.
    warm: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    /// The runs each resource (by uid) follows or followed.
    ids_of: HashMap<String, Vec<String>>,
    /// Who follows each run id.
    follower: HashMap<String, String>,
    /// Resources whose start's outcome is not known yet: (tenant, workflow type,
    /// when the intent was recorded).
    unresolved: HashMap<String, (String, &'static str, Timestamp)>,
}

impl Tracking {
    /// Records what resource `uid` follows, from its spec and status.
    pub fn observe(
        &self,
        uid: &str,
        spec: &AmperityWorkflowRunSpec,
        status: Option<&AmperityWorkflowRunStatus>,
    ) {
        let mut ids: Vec<String> = Vec::new();
        let mut unresolved = None;
        if let Some(s) = status {
            ids.extend(s.workflow_id.iter().cloned());
            ids.extend(s.attempts.iter().map(|a| a.workflow_id.clone()));
            if s.phase == Some(Phase::Starting) && s.workflow_id.is_none() {
                // An intent without a time is as old as time: it contests everything.
                let at = s.started_at.as_ref().map_or(Timestamp::MIN, |t| t.0);
                unresolved = Some((
                    spec.tenant().to_string(),
                    workflow_type_for(&spec.config_id),
                    at,
                ));
            }
        }
        ids.extend(spec.workflow_id.iter().cloned());
        let mut state = self.state.lock().unwrap();
        state.forget(uid);
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

    /// The resource is gone.
    pub fn forget(&self, uid: &str) {
        self.state.lock().unwrap().forget(uid);
    }

    /// Keeps only the resources in `present` (after a relist).
    pub fn retain(&self, present: &HashSet<String>) {
        let mut state = self.state.lock().unwrap();
        let gone: Vec<String> = state
            .ids_of
            .keys()
            .chain(state.unresolved.keys())
            .filter(|uid| !present.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            state.forget(&uid);
        }
    }

    pub fn is_warm(&self) -> bool {
        self.warm.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_warm(&self) {
        self.warm.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// What other resources claim of `candidates`, for resource `uid` searching for
    /// a start of `spec`.
    pub fn claims(
        &self,
        uid: &str,
        spec: &AmperityWorkflowRunSpec,
        candidates: &[String],
    ) -> Claims {
        let state = self.state.lock().unwrap();
        let tracked: BTreeSet<String> = candidates
            .iter()
            .filter(|id| state.follower.get(*id).is_some_and(|who| who != uid))
            .cloned()
            .collect();
        let kind = workflow_type_for(&spec.config_id);
        let other_starts = state
            .unresolved
            .iter()
            .filter(|(other, (tenant, k, _))| {
                *other != uid && *tenant == spec.tenant() && *k == kind
            })
            .map(|(_, (_, _, at))| *at)
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

impl State {
    fn forget(&mut self, uid: &str) {
        if let Some(ids) = self.ids_of.remove(uid) {
            for id in ids {
                if self.follower.get(&id).is_some_and(|who| who == uid) {
                    self.follower.remove(&id);
                }
            }
        }
        self.unresolved.remove(uid);
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
        let claims = t.claims("a", &mine, &["wf-b1".into(), "wf-b2".into(), "wf-x".into()]);
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
        let claims = t.claims("a", &mine, &[]);
        assert!(claims.other_starts.len() == 1 && claims.complete);
        // A resource's own runs and own start are never claims against it.
        let claims = t.claims("b", &spec("cg-b"), &["wf-b2".into()]);
        assert!(claims.tracked.is_empty());
        // Once d has its run, its start is resolved; once b is gone, its runs are free.
        t.observe(
            "d",
            &spec("cg-d"),
            Some(&status(Phase::Running, Some("wf-d"), &[])),
        );
        t.forget("b");
        let claims = t.claims("a", &mine, &["wf-b2".into(), "wf-d".into()]);
        assert_eq!(claims.tracked, ["wf-d".to_string()].into());
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
            t.claims("a", &spec("cg-a"), &["wf-e".into()]).tracked.len(),
            1
        );
    }
}
