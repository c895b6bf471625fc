//! `amperity.dev/run-now`: whether a value is new (never handled, not older than the
//! schedule), the values remembered, and the run it starts (or waits behind Forbid).

use kube::ResourceExt;

use super::super::*;
use super::Step;
use crate::crd::schedule::ConcurrencyPolicy;

impl Step<'_> {
    /// A run-now value not handled yet: neither among the values handled nor a
    /// timestamp older than the schedule (those are recorded as handled, with an Event).
    pub(super) fn pending_run_now(&mut self) -> Option<String> {
        let value = self.schedule.annotations().get(RUN_NOW_ANNOTATION)?.trim();
        if value.is_empty() {
            return None;
        }
        let key = run_now_key(value);
        let seen = &self.previous;
        if seen.last_handled_run_now.as_deref() == Some(key.as_str())
            || seen.handled_run_now.contains(&key)
        {
            return None;
        }
        let created = self
            .schedule
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0);
        if let (Some(at), Some(created)) = (run_now_time(value), created)
            && at < created
        {
            self.remember_run_now(&key);
            self.events.push(normal(
                "RunNowIgnored",
                format!(
                    "ignored {RUN_NOW_ANNOTATION} {key:?}: it names {at}, before this schedule was created ({created}), so it was meant for an earlier copy of it; set a new value to run now"
                ),
            ));
            return None;
        }
        Some(key)
    }

    pub(super) fn remember_run_now(&mut self, key: &str) {
        self.status.last_handled_run_now = Some(key.to_string());
        let handled = &mut self.status.handled_run_now;
        handled.retain(|k| k != key);
        handled.push(key.to_string());
        let excess = handled.len().saturating_sub(MAX_HANDLED_RUN_NOW);
        handled.drain(..excess);
        if self.status.waiting_run_now.as_deref() == Some(key) {
            self.status.waiting_run_now = None;
        }
    }

    pub(super) fn run_now(&mut self, key: String) {
        let count = self.previous.run_now_count.saturating_add(1);
        let name = run_now_run_name(&self.name(), count);
        if self.views.iter().any(|r| r.name == name) {
            // Created before a restart that lost the status write: it is this request's run.
            self.status.run_now_count = count;
            self.remember_run_now(&key);
            return;
        }
        let policy = self.schedule.spec.concurrency_policy.unwrap_or_default();
        let in_flight: Vec<String> = self
            .views
            .iter()
            .filter(|r| r.active())
            .map(|r| r.name.clone())
            .collect();
        if policy == ConcurrencyPolicy::Forbid && !in_flight.is_empty() {
            // Kept, not dropped: it runs once the runs in flight have finished.
            if self.previous.waiting_run_now.as_deref() != Some(key.as_str()) {
                self.events.push(normal(
                    "RunNowWaiting",
                    format!(
                        "{RUN_NOW_ANNOTATION} {key:?} waits for {} to finish (concurrencyPolicy Forbid); it runs then",
                        in_flight.join(", ")
                    ),
                ));
            }
            self.status.waiting_run_now = Some(key);
            return;
        }
        self.status.run_now_count = count;
        self.remember_run_now(&key);
        if !self.admit(&name, &format!("the {RUN_NOW_ANNOTATION} run for {key:?}")) {
            return;
        }
        self.create_run(name, Trigger::RunNow(key), self.now);
    }
}
