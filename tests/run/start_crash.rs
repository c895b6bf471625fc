//! At most one Amperity run per resource, whatever point a start is interrupted at:
//! the real driver and decisions against the simulator (which counts POSTs), with
//! a status store that fails ("the process died") at a chosen write.

use std::time::Duration;

use amperity_operator::crd::{AmperityWorkflowRun, Phase};
use amperity_operator::run::decide::{Settings, conditions};
use amperity_operator::run::driver::{Defaults, Driver, RunMemory};
use serde_json::json;

use super::memory_host::{MemoryHost, client_for, fast_simulator};

fn resource(endpoint: &str, config: &str) -> AmperityWorkflowRun {
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": "r", "namespace": "n", "generation": 1},
        "spec": {"tenant": "socktown", "endpoint": endpoint, "tokenSecretRef": {"name": "s"}, "configId": config}
    }))
    .unwrap()
}

/// How a start ended up: following a run, or asking a person.
#[derive(Debug, PartialEq)]
enum Settled {
    Following(String),
    AskingAPerson,
}

/// Drives `run` until it is Running with a run id or waits for a person, restarting
/// (a new process: fresh memory, a new client, the last persisted status) whenever
/// the store "dies". Returns how it settled and how many runs Amperity created.
async fn drive_through_crashes(
    die_at: Option<usize>,
    config: &str,
    principal: Option<&'static str>,
) -> (Settled, u64) {
    let sim = fast_simulator().await;
    let settings = Settings {
        start_settle: Duration::from_millis(300),
        ..Settings::default()
    };
    let defaults = Defaults::default();
    let store = MemoryHost::new(die_at, principal);
    let mut persisted = resource(&sim.base_url(), config);
    for _ in 0..10 {
        // After a crash the process starts over from what was persisted, with
        // nothing learned before.
        let client = client_for(&sim, 10);
        let mut run = persisted.clone();
        let mut memory = RunMemory::default();
        let driver = Driver {
            host: &store,
            amperity: &client,
            defaults: &defaults,
            settings: &settings,
        };
        let result = driver.drive(&mut run, &mut memory).await;
        if let Some(s) = store.saved() {
            persisted.status = Some(s);
        }
        let status = persisted.status.clone().unwrap_or_default();
        if result.is_ok()
            && status.phase == Some(Phase::Running)
            && let Some(id) = status.workflow_id
        {
            return (Settled::Following(id), sim.stats().starts);
        }
        if conditions::stalled_reason(&status) == Some("StartUnconfirmed") {
            return (Settled::AskingAPerson, sim.stats().starts);
        }
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    panic!("never settled: {:?}", persisted.status);
}

#[tokio::test]
async fn no_crash_point_starts_a_second_run_or_loses_one() {
    // Writes of a start: 1 = the intent (before the POST), 2 = the run id (after it).
    let cases = [
        (None, "no crash"),
        (Some(1), "dies writing the intent: nothing was sent"),
        (Some(2), "dies after the POST, before the id is stored"),
        (Some(3), "dies on a later write"),
    ];
    // The simulator's principal for the token is "api-key|sim-1".
    for principal in [Some("api-key|sim-1"), None] {
        for (die_at, case) in cases {
            let (settled, starts) = drive_through_crashes(die_at, "cg-crash", principal).await;
            assert_eq!(starts, 1, "{case} ({principal:?}): {starts} Amperity runs");
            match (die_at, principal, &settled) {
                // The POST's answer never got stored and nobody said who the
                // credential starts runs as: the run found cannot be confirmed.
                (Some(2), None, Settled::AskingAPerson) => {}
                (_, _, Settled::Following(id)) => {
                    assert!(id.starts_with("wf-"), "{case}: following {id}")
                }
                _ => panic!("{case} ({principal:?}): {settled:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_lost_answer_is_found_not_repeated() {
    // The simulator creates the run and answers 500: the id never arrives.
    let (settled, starts) =
        drive_through_crashes(None, "cg-crash-lostanswer", Some("api-key|sim-1")).await;
    assert_eq!(starts, 1);
    assert!(matches!(settled, Settled::Following(_)), "{settled:?}");
    // Without the principal a person is asked, and nothing is started again.
    let (settled, starts) = drive_through_crashes(None, "cg-crash-lostanswer", None).await;
    assert_eq!(starts, 1);
    assert_eq!(settled, Settled::AskingAPerson);
}
