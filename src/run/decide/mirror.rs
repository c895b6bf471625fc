//! Copies what Amperity says about a run into the resource's status shapes.

use crate::amperity::wire::{TaskInstance, Workflow, WorkflowError, WorkflowState};
use crate::bounded::{cut, cut_opt};
use crate::crd::{FailedTask, RunError, TaskSummary, WorkflowInfo};

/// How many running task labels and failed tasks status keeps: enough to act on,
/// small enough that a 500-task workflow cannot bloat the object.
pub const MAX_LISTED_TASKS: usize = 5;
/// Longest error message kept in status, in bytes (Amperity messages can be whole
/// stack traces).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest short field kept (names, types, timestamps, versions, task labels).
pub const MAX_FIELD_BYTES: usize = 256;

pub fn workflow_info(w: &Workflow, previous: Option<&WorkflowInfo>) -> WorkflowInfo {
    // The overview view omits the principal and versions; keep what we knew.
    let prev = previous.cloned().unwrap_or_default();
    let field = |v: &Option<String>| cut_opt(v.as_deref(), MAX_FIELD_BYTES);
    WorkflowInfo {
        name: non_empty(&w.name).or(prev.name),
        workflow_type: non_empty(&w.workflow_type).or(prev.workflow_type),
        state: Some(cut(w.state.as_str(), MAX_FIELD_BYTES)),
        created_at: field(&w.created_at).or(prev.created_at),
        ended_at: field(&w.ended_at).or(prev.ended_at),
        principal_name: field(&w.principal_name).or(prev.principal_name),
        launched_version: field(&w.launched_version).or(prev.launched_version),
        current_version: field(&w.current_version).or(prev.current_version),
    }
}

pub fn task_summary(tasks: &[TaskInstance]) -> TaskSummary {
    let mut s = TaskSummary {
        total: tasks.len() as u32,
        ..TaskSummary::default()
    };
    for t in tasks {
        match &t.state {
            WorkflowState::Scheduled => s.pending += 1,
            WorkflowState::Succeeded => s.succeeded += 1,
            WorkflowState::Failed => s.failed += 1,
            WorkflowState::Skipped => s.skipped += 1,
            WorkflowState::Canceled | WorkflowState::Stopped => s.canceled += 1,
            // Started, in progress, running, finalizing, stopping, and anything new.
            _ => s.running += 1,
        }
        if !t.state.is_terminal()
            && t.state != WorkflowState::Scheduled
            && s.current.len() < MAX_LISTED_TASKS
        {
            s.current.push(task_label(t));
        }
        if t.state == WorkflowState::Failed && s.failed_tasks.len() < MAX_LISTED_TASKS {
            s.failed_tasks.push(FailedTask {
                label: task_label(t),
                message: t.error.as_ref().map(|e| truncate(&e.message)),
            });
        }
    }
    let done = s.succeeded + s.failed + s.skipped + s.canceled;
    s.progress = format!("{done}/{}", s.total);
    s
}

pub fn run_error(e: &WorkflowError) -> RunError {
    RunError {
        attribution: e
            .attribution
            .as_ref()
            .map(|a| cut(a.as_str(), MAX_FIELD_BYTES)),
        error_type: non_empty(&e.error_type),
        message: truncate(&e.message),
    }
}

fn task_label(t: &TaskInstance) -> String {
    let label = t
        .label
        .as_deref()
        .filter(|l| !l.is_empty())
        .unwrap_or(&t.id);
    cut(label, MAX_FIELD_BYTES)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| cut(s, MAX_FIELD_BYTES))
}

/// An error message as status keeps it: at most [`MAX_MESSAGE_BYTES`].
pub fn truncate(message: &str) -> String {
    cut(message, MAX_MESSAGE_BYTES)
}
