//! At most one Amperity run per resource, whatever point a start is interrupted at:
//! the real driver and decisions against the simulator (which counts POSTs), with
//! a status store that fails ("the process died") at a chosen write.

use std::sync::Mutex;
use std::time::Duration;

use amperity_operator::amperity::{
    AmperityClient, ClientConfig, Credentials, DeprecationNotice, SecretString,
};
use amperity_operator::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus, Phase};
use amperity_operator::decide::{Event, Settings};
use amperity_operator::driver::{CredentialsProblem, Defaults, Driver, Host, RunMemory};
use amperity_operator::sim::{self, SimConfig};
use jiff::Timestamp;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error("the process died before this write")]
struct Died;

/// Keeps status in memory; the write numbered `die_at` (1-based) fails.
struct Store {
    die_at: Option<usize>,
    writes: Mutex<usize>,
    saved: Mutex<Option<AmperityWorkflowRunStatus>>,
}

impl Host for Store {
    type Error = Died;

    async fn credentials(
        &self,
        _: &AmperityWorkflowRun,
    ) -> Result<Credentials, CredentialsProblem> {
        Ok(Credentials::Token(SecretString::new("sim-token")))
    }

    async fn save_status(
        &self,
        _: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
    ) -> Result<(), Died> {
        let mut writes = self.writes.lock().unwrap();
        *writes += 1;
        if Some(*writes) == self.die_at {
            Err(Died)
        } else {
            *self.saved.lock().unwrap() = Some(status.clone());
            Ok(())
        }
    }

    async fn publish(&self, _: &AmperityWorkflowRun, _: &Event) {}

    async fn deprecation(&self, _: &AmperityWorkflowRun, _: &DeprecationNotice) {}

    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

fn resource(endpoint: &str, config: &str) -> AmperityWorkflowRun {
    serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": "r", "namespace": "n", "generation": 1},
        "spec": {"tenant": "socktown", "endpoint": endpoint, "tokenSecretRef": {"name": "s"}, "configId": config}
    }))
    .unwrap()
}

/// Drives `run` until it is Running with a run id, restarting (fresh memory, the
/// last persisted status) whenever the store "dies". Returns the final status.
async fn drive_through_crashes(
    die_at: Option<usize>,
    config: &str,
) -> (AmperityWorkflowRunStatus, u64) {
    let sim = sim::spawn(SimConfig {
        speed: 0.01,
        rate_limit: 1000,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let client = AmperityClient::new(ClientConfig {
        rate_limit_per_sec: 10,
        ..ClientConfig::default()
    })
    .unwrap();
    let settings = Settings {
        start_settle: Duration::from_millis(300),
        ..Settings::default()
    };
    let defaults = Defaults::default();
    let store = Store {
        die_at,
        writes: Mutex::new(0),
        saved: Mutex::new(None),
    };
    let mut persisted = resource(&sim.base_url(), config);
    for _ in 0..10 {
        // After a crash the process starts over from what was persisted.
        let mut run = persisted.clone();
        let mut memory = RunMemory::default();
        let driver = Driver {
            host: &store,
            amperity: &client,
            defaults: &defaults,
            settings: &settings,
        };
        let result = driver.drive(&mut run, &mut memory).await;
        if let Some(s) = store.saved.lock().unwrap().clone() {
            persisted.status = Some(s);
        }
        let status = persisted.status.clone().unwrap_or_default();
        if result.is_ok() && status.phase == Some(Phase::Running) && status.workflow_id.is_some() {
            return (status, sim.stats().starts);
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
    for (die_at, case) in cases {
        let (status, starts) = drive_through_crashes(die_at, "cg-crash").await;
        assert_eq!(starts, 1, "{case}: {starts} Amperity runs");
        let id = status.workflow_id.unwrap();
        assert!(id.starts_with("wf-"), "{case}: following {id}");
    }
}

#[tokio::test]
async fn a_lost_answer_is_found_not_repeated() {
    // The simulator creates the run and answers 500: the id never arrives.
    let (status, starts) = drive_through_crashes(None, "cg-crash-lostanswer").await;
    assert_eq!(starts, 1);
    assert!(status.workflow_id.is_some());
}
