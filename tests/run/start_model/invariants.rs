//! What must hold: a resource follows only runs created for it, and every run
//! created for it is accounted for.

use std::collections::BTreeSet;
use std::sync::Mutex;

use amperity_operator::crd::AmperityWorkflowRunStatus;

use super::amperity::ModelRun;
use super::{ME, NAMESAKE, RESOURCE, World};

/// Records the run ids that statuses written since the last look name in their
/// messages (what a person was shown), and checks that none of them follows a run
/// created for another.
pub fn look(world: &Mutex<World>) -> Result<(), String> {
    let mut w = world.lock().unwrap();
    let from = w.noted + 1;
    w.noted = w.store.version;
    let mut named = Vec::new();
    for status in w.store.history[from as usize..].iter().flatten() {
        let shown: BTreeSet<&str> = status
            .conditions
            .iter()
            .flat_map(|c| {
                c.message
                    .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
            })
            .collect();
        named.extend(
            w.runs
                .iter()
                .filter(|r| shown.contains(r.id.as_str()))
                .map(|r| r.id.clone()),
        );
        follows_only_its_own(&w, status)?;
    }
    w.listed.extend(named);
    Ok(())
}

/// The resource follows only runs created for it.
fn follows_only_its_own(w: &World, status: &AmperityWorkflowRunStatus) -> Result<(), String> {
    let followed = status
        .workflow_id
        .iter()
        .chain(status.attempts.iter().map(|a| &a.workflow_id));
    for id in followed {
        let Some(run) = w.runs.iter().find(|r| &r.id == id) else {
            return Err(format!("follows {id}, which Amperity never had"));
        };
        if run.owner != RESOURCE {
            return Err(format!(
                "adopted {id}, a run of {} (clock offset {} s)",
                match run.principal {
                    ME => "another resource, or a deleted one",
                    NAMESAKE => "another key with the same display name",
                    _ => "another principal",
                },
                w.scenario.clock_offset_secs
            ));
        }
    }
    Ok(())
}

/// Once settled: every run Amperity created for the resource is the run it
/// follows, a recorded earlier attempt, or a candidate it listed for a person; or,
/// when it ends asking a person about its latest attempt (StartUnconfirmed, or
/// StopUnconfirmed with nothing confirmed), that attempt's run.
pub fn every_run_accounted_for(
    world: &Mutex<World>,
    status: &AmperityWorkflowRunStatus,
) -> Result<(), String> {
    let w = world.lock().unwrap();
    let followed: BTreeSet<&String> = status
        .workflow_id
        .iter()
        .chain(status.attempts.iter().map(|a| &a.workflow_id))
        .collect();
    let asking = status.workflow_id.is_none()
        && status
            .conditions
            .iter()
            .any(|c| c.reason == "StartUnconfirmed" || c.reason == "StopUnconfirmed");
    let mine: Vec<&ModelRun> = w.runs.iter().filter(|r| r.owner == RESOURCE).collect();
    let unaccounted: Vec<&String> = mine
        .iter()
        .map(|r| &r.id)
        .filter(|id| !followed.contains(id) && !w.listed.contains(*id))
        .collect();
    let allowed = usize::from(asking);
    let latest_only = unaccounted
        .iter()
        .all(|id| mine.last().is_some_and(|last| &&last.id == id));
    if unaccounted.len() > allowed || !latest_only {
        return Err(format!(
            "runs created for the resource but neither followed nor listed for a person: {unaccounted:?} \
             (follows {followed:?}, listed {:?}, runs {:?})",
            w.listed, w.runs
        ));
    }
    Ok(())
}
