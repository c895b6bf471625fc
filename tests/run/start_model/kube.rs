//! The model's Kubernetes: one replica's view of the stored resource (its status
//! writes, conditional on the version read), its Secret reads and its claims.

use std::task::Poll;

use amperity_operator::amperity::credentials::Access;
use amperity_operator::amperity::{
    AllowList, Credentials, DeprecationNotice, Principal, SecretString,
};
use amperity_operator::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus};
use amperity_operator::run::decide::{Claims, Event};
use amperity_operator::run::driver::{CredentialsProblem, Host};
use jiff::Timestamp;
use std::sync::Mutex;

use super::{ME, World};

/// One replica of the operator: its view of Kubernetes and its client.
pub struct Replica<'w> {
    pub world: &'w Mutex<World>,
    pub id: usize,
    pub allow: &'w AllowList,
}

impl Replica<'_> {
    /// Counts the call; the replica is held here while the test pauses it.
    pub async fn gate(&self) {
        {
            let mut w = self.world.lock().unwrap();
            w.replicas[self.id].calls += 1;
        }
        std::future::poll_fn(|cx| {
            let mut w = self.world.lock().unwrap();
            let calls = w.replicas[self.id].calls;
            if w.pause_at == Some((self.id, calls)) {
                w.held = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("the operator died before this write")]
    Died,
    #[error("conflict: the resource changed since it was read")]
    Conflict,
}

impl Host for Replica<'_> {
    type Error = Failed;

    async fn credentials(&self, _run: &AmperityWorkflowRun) -> Result<Access, CredentialsProblem> {
        self.gate().await;
        let mut w = self.world.lock().unwrap();
        w.credential_reads += 1;
        if !w.calm && w.scenario.secret_hiccups.contains(&w.credential_reads) {
            return Err(CredentialsProblem {
                reason: "SecretUnreadable".into(),
                message: "the Secret could not be read (HTTP 429)".into(),
            });
        }
        Ok(Access {
            credentials: Credentials::Token(SecretString::new("t")),
            principal: w.scenario.principal_in_secret.then(|| Principal::given(ME)),
        })
    }

    async fn save_status(
        &self,
        run: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
    ) -> Result<Option<String>, Failed> {
        self.gate().await;
        let mut w = self.world.lock().unwrap();
        w.writes += 1;
        if !w.calm && w.scenario.crashes.contains(&w.writes) {
            return Err(Failed::Died);
        }
        let current = w.store.version.to_string();
        if run.metadata.resource_version.as_deref() != Some(current.as_str()) {
            return Err(Failed::Conflict);
        }
        w.store.version += 1;
        w.store.status = Some(status.clone());
        w.store.history.push(Some(status.clone()));
        Ok(Some(w.store.version.to_string()))
    }

    async fn publish(&self, _run: &AmperityWorkflowRun, _event: &Event) {}

    async fn deprecation(&self, _run: &AmperityWorkflowRun, _n: &DeprecationNotice) {}

    async fn claims(
        &self,
        _run: &AmperityWorkflowRun,
        candidates: &[String],
        _principal: Option<&Principal>,
    ) -> Claims {
        self.gate().await;
        let mut w = self.world.lock().unwrap();
        w.searches += 1;
        let complete = w.calm || !w.scenario.incomplete_claims.contains(&w.searches);
        // Incomplete: the other resources could not all be read, and what they
        // follow is missing from the answer.
        Claims {
            tracked: candidates
                .iter()
                .filter(|id| complete && w.others_tracked.contains(*id))
                .cloned()
                .collect(),
            other_starts: Vec::new(),
            complete,
        }
    }

    fn poll_failed(&self, _run: &AmperityWorkflowRun) {}

    fn now(&self) -> Timestamp {
        self.world.lock().unwrap().now
    }
}
