//! What follows a finished run's status write (its Events, its finalizer's
//! removal), done after its reconcile by a few workers of their own. When a burst
//! of ends is settled at once, each reconcile then costs a read and a status write,
//! and the API server writes the burst's statuses (what users and pipelines wait
//! on) before its Events and finalizers, instead of all four calls of each run in
//! turn. The queue holds small records, not tasks: a task per run would hold a
//! whole request's future each (kilobytes) for as long as the burst is served.

use std::collections::VecDeque;
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
}

/// The queue of trailing work, and how many workers serve it.
#[derive(Default)]
pub struct Trailing(Mutex<Queue>);

impl Trailing {
    /// The next piece of work; `None` also retires the worker asking.
    fn next(&self) -> Option<Work> {
        let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let next = queue.work.pop_front();
        if next.is_none() {
            queue.workers -= 1;
        }
        next
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
        let mut queue = ctx.trailing.0.lock().unwrap_or_else(|e| e.into_inner());
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
        let span = work.span.clone();
        perform(&ctx, work).instrument(span).await;
    }
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
            queue.work.push_back(Work {
                regarding: ObjectReference::default(),
                events: Vec::new(),
                release: true,
                span: tracing::Span::none(),
            });
        }
        assert!(trailing.next().is_some());
        assert_eq!(trailing.0.lock().unwrap().workers, 1);
        assert!(trailing.next().is_none());
        assert_eq!(trailing.0.lock().unwrap().workers, 0);
    }
}
