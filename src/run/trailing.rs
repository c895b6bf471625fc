//! What follows a finished run's status write (its Events, its finalizer's
//! removal), done after its reconcile by a few workers of their own. When a burst
//! of ends is settled at once, each reconcile then costs a read and a status write,
//! and the API server writes the burst's statuses (what users and pipelines wait
//! on) before its Events and finalizers, instead of all four calls of each run in
//! turn. The queue holds small records, not tasks: a task per run would hold a
//! whole request's future each (kilobytes) for as long as the burst is served.
//!
//! A run's next reconcile waits until its trailing work is done ([`Trailing::holds`]):
//! the finalizer's removal makes a new resourceVersion, and a status write decided
//! from the version before it would be refused as a conflict.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Api, Resource};
use tracing::{Instrument, warn};

use super::context::Context;
use crate::cluster::events::{kube_error_summary, publish_event};
use crate::cluster::finalizer::apply_finalizer;
use crate::crd::AmperityWorkflowRun;
use crate::run::decide::Event;

/// Workers, so Kubernetes requests in flight at once for trailing work, beside the
/// reconciles' own places (`context::KUBE_CALLS`).
pub const TRAILING_WORKERS: usize = 4;

/// One finished run's trailing work.
struct Work {
    /// The run, by its uid too (what [`Trailing::holds`] is asked).
    regarding: ObjectReference,
    events: Vec<Event>,
    /// Remove the finalizer (named by `regarding`).
    release: bool,
    span: tracing::Span,
}

#[derive(Default)]
struct Queue {
    work: VecDeque<Work>,
    workers: usize,
    /// Runs (uids) whose work is queued or under way.
    held: HashSet<String>,
}

/// The queue of trailing work, and how many workers serve it.
#[derive(Default)]
pub struct Trailing(Mutex<Queue>);

impl Trailing {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the run `uid` has trailing work queued or under way: its next
    /// reconcile waits for it.
    pub fn holds(&self, uid: &str) -> bool {
        self.queue().held.contains(uid)
    }

    /// The next piece of work; `None` also retires the worker asking.
    fn next(&self) -> Option<Work> {
        let mut queue = self.queue();
        let next = queue.work.pop_front();
        if next.is_none() {
            queue.workers -= 1;
        }
        next
    }

    fn done(&self, uid: &str) {
        self.queue().held.remove(uid);
    }
}

/// Leaves `events` and, if `release`, the removal of the finalizer of `run` (which
/// its reconcile finished) for after the reconcile. A failed removal is only
/// logged: the finalizer of a finished run holds nothing back, and the reconcile of
/// its deletion removes it.
pub fn trail(ctx: &Arc<Context>, run: &AmperityWorkflowRun, events: Vec<Event>, release: bool) {
    if events.is_empty() && !release {
        return;
    }
    let work = Work {
        regarding: run.object_ref(&()),
        events,
        release,
        span: tracing::Span::current(),
    };
    let start_worker = {
        let mut queue = ctx.trailing.queue();
        queue.held.insert(uid_of(&work));
        queue.work.push_back(work);
        let more = queue.workers < TRAILING_WORKERS;
        if more {
            queue.workers += 1;
        }
        more
    };
    if start_worker {
        tokio::spawn(serve(ctx.clone()));
    }
}

async fn serve(ctx: Arc<Context>) {
    while let Some(work) = ctx.trailing.next() {
        let (span, uid) = (work.span.clone(), uid_of(&work));
        perform(&ctx, work).instrument(span).await;
        ctx.trailing.done(&uid);
    }
}

fn uid_of(work: &Work) -> String {
    work.regarding.uid.clone().unwrap_or_default()
}

async fn perform(ctx: &Context, work: Work) {
    for event in &work.events {
        publish_event(
            &ctx.client,
            &ctx.reporter,
            event,
            "Reconcile",
            &work.regarding,
        )
        .await;
    }
    if !work.release {
        return;
    }
    let (Some(namespace), Some(name)) = (&work.regarding.namespace, &work.regarding.name) else {
        return;
    };
    let api: Api<AmperityWorkflowRun> = Api::namespaced(ctx.client.clone(), namespace);
    if let Err(e) = apply_finalizer(&api, name, super::controller::FINALIZER, false).await {
        warn!(
            error = %kube_error_summary(&e),
            "could not remove the finalizer of a finished run; its deletion will"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_retires_when_the_queue_is_empty_and_only_then() {
        let trailing = Trailing::default();
        {
            let mut queue = trailing.0.lock().unwrap();
            queue.workers = 1;
            queue.held.insert("uid-1".into());
            queue.work.push_back(Work {
                regarding: ObjectReference {
                    uid: Some("uid-1".into()),
                    ..ObjectReference::default()
                },
                events: Vec::new(),
                release: true,
                span: tracing::Span::none(),
            });
        }
        let work = trailing.next().unwrap();
        assert_eq!(trailing.0.lock().unwrap().workers, 1);
        assert!(trailing.holds("uid-1"), "held while under way");
        trailing.done(&uid_of(&work));
        assert!(!trailing.holds("uid-1"));
        assert!(trailing.next().is_none());
        assert_eq!(trailing.0.lock().unwrap().workers, 0);
    }
}
