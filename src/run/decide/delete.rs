//! The end of a resource: deletion (with `deletionPolicy: Stop`, its run is stopped
//! first; a start whose outcome is unknown is searched for first) and
//! `ttlSecondsAfterFinished`. Deletion is never blocked for longer than its grace
//! period, whatever Amperity or the Secret does.

use std::time::Duration;

use jiff::SignedDuration;

use super::start::Judgement;
use super::{Action, Answer, EventType, FailureKind, Step, quoted_ids};
use crate::crd::{DeletionPolicy, Phase, StopReason};

impl Step<'_> {
    pub(super) fn deleting(&mut self, answer: Option<Answer>) -> Action {
        let policy = self.run.spec.deletion_policy.unwrap_or_default();
        let finished = self.status.phase.is_some_and(Phase::is_finished);
        if policy == DeletionPolicy::Orphan
            || finished
            || self.status.stop_reason == Some(StopReason::Deletion)
        {
            return Action::ReleaseFinalizer;
        }
        let unresolved_start =
            self.status.workflow_id.is_none() && self.status.phase == Some(Phase::Starting);
        if self.status.workflow_id.is_none() && !unresolved_start {
            // Nothing was started: nothing to stop.
            return Action::ReleaseFinalizer;
        }
        let deleted_at = self
            .run
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(self.now);
        let waited = self.since(deleted_at);
        let grace = self.settings.deletion_grace;
        if waited >= grace {
            return self.give_up_stop(&format!(
                "the deletion grace period of {}s passed",
                grace.as_secs()
            ));
        }
        let left = grace - waited;
        match answer {
            // A gone Secret or a refused endpoint must not block deletion for ever.
            Some(Answer::CredentialsUnavailable { message, .. }) => self.give_up_stop(&message),
            Some(Answer::EndpointNotAllowed { message }) => self.give_up_stop(&message),
            Some(Answer::Later(wait)) => Action::Requeue(wait.min(left)),
            Some(Answer::Searched(search)) => match search.result {
                Ok(runs) => {
                    match self.judge(
                        &runs,
                        search.principal.as_ref(),
                        &search.claims,
                        search.clock_offset,
                        search.config_name.as_deref(),
                    ) {
                        Judgement::Certain(w) => {
                            // Recorded, so that the stop's answer knows which run it was.
                            self.status.workflow_id = Some(w.id.clone());
                            Action::Stop(w.id.clone())
                        }
                        Judgement::Uncertain { candidates, why } => {
                            let what = if candidates.is_empty() {
                                "no run was found".to_string()
                            } else {
                                format!(
                                    "these runs may be this resource's and were left running: {}",
                                    quoted_ids(candidates.iter().map(String::as_str))
                                )
                            };
                            self.event(
                                EventType::Warning,
                                "DeletedWhileStarting",
                                format!(
                                    "deleted while the outcome of its start was unknown; {what} ({why}); check Amperity"
                                ),
                            );
                            Action::ReleaseFinalizer
                        }
                    }
                }
                Err(f) if f.kind == FailureKind::Auth => self.give_up_stop(&f.message),
                Err(f) => Action::Requeue(self.retry_in(f.retry_after, left)),
            },
            Some(Answer::StopSent(Ok(_))) => {
                self.status.stop_reason = Some(StopReason::Deletion);
                let id = self.status.workflow_id.clone().unwrap_or_default();
                self.event(
                    EventType::Normal,
                    "Stopping",
                    format!("stopped Amperity run {id} because the resource is being deleted"),
                );
                Action::ReleaseFinalizer
            }
            Some(Answer::StopSent(Err(f)) | Answer::Polled(Err(f)))
                if f.kind == FailureKind::NotFound =>
            {
                Action::ReleaseFinalizer
            }
            Some(Answer::StopSent(Err(f)) | Answer::Polled(Err(f)))
                if matches!(f.kind, FailureKind::Auth | FailureKind::NotAllowed) =>
            {
                self.give_up_stop(&f.message)
            }
            // Stop refused: the run may have just ended. Look.
            Some(Answer::StopSent(Err(f))) if f.kind == FailureKind::Rejected => {
                Action::Poll(self.status.workflow_id.clone().unwrap_or_default())
            }
            Some(Answer::Polled(Ok(w)) | Answer::Listed(w)) if w.has_ended() => {
                Action::ReleaseFinalizer
            }
            Some(Answer::StopSent(Err(f)) | Answer::Polled(Err(f))) => {
                Action::Requeue(self.retry_in(f.retry_after, left))
            }
            Some(Answer::Polled(Ok(_)) | Answer::Listed(_) | Answer::Started(_)) => {
                Action::Requeue(self.settings.quick_poll.min(left))
            }
            None if unresolved_start => Action::Search(self.search_query()),
            None => Action::Stop(self.status.workflow_id.clone().unwrap_or_default()),
        }
    }

    fn retry_in(&self, retry_after: Option<Duration>, left: Duration) -> Duration {
        retry_after.unwrap_or(self.settings.quick_poll).min(left)
    }

    fn give_up_stop(&mut self, why: &str) -> Action {
        let what = match &self.status.workflow_id {
            Some(id) => format!("could not stop Amperity run {id}"),
            None => "could not look for the run of its unconfirmed start".to_string(),
        };
        self.event(
            EventType::Warning,
            "StopFailed",
            format!("{what} before deletion ({why}); it may still be running"),
        );
        Action::ReleaseFinalizer
    }

    /// A finished resource waits for its TTL, if it has one.
    pub(super) fn finished_next(&mut self) -> Action {
        let Some(ttl) = self.run.spec.ttl_seconds_after_finished else {
            return Action::AwaitChange;
        };
        let Some(done) = self.status.completed_at.as_ref().map(|t| t.0) else {
            return Action::AwaitChange;
        };
        // A TTL past the end of time never comes.
        let Ok(due) = done.checked_add(SignedDuration::from_secs(ttl.max(0))) else {
            return Action::AwaitChange;
        };
        if self.now >= due {
            Action::Delete
        } else {
            Action::Requeue(Duration::try_from(due.duration_since(self.now)).unwrap_or_default())
        }
    }
}
