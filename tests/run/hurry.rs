//! What someone waits on goes ahead on the Kubernetes side too: the driver tells
//! its host to hurry before the calls of a start, a stop and the poll before a stop
//! (the Secret read, the intent write), and never for a routine poll, so that a
//! stop's intent write does not queue behind a burst's thousand routine status
//! writes. The real driver against the simulator, with a host that records its calls.

use std::time::Duration;

use amperity_operator::crd::{AmperityWorkflowRun, Phase};
use amperity_operator::run::decide::{Action, Settings};
use amperity_operator::run::driver::{Defaults, Driver, RunMemory};
use serde_json::json;

use super::memory_host::{Call, MemoryHost, client_for, fast_simulator};

/// The first hurry, and the first call of `kind` after the drive began.
fn position(calls: &[Call], wanted: impl Fn(&Call) -> bool) -> Option<usize> {
    calls.iter().position(wanted)
}

#[tokio::test]
async fn starts_and_stops_hurry_before_their_kubernetes_calls_and_routine_polls_do_not() {
    let sim = fast_simulator().await;
    let client = client_for(&sim, 50);
    let (defaults, settings) = (Defaults::default(), Settings::default());
    let host = MemoryHost::new(None, Some("api-key|sim-1"));
    let driver = Driver {
        host: &host,
        amperity: &client,
        defaults: &defaults,
        settings: &settings,
    };
    let mut run: AmperityWorkflowRun = serde_json::from_value(json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityWorkflowRun",
        "metadata": {"name": "r", "namespace": "n", "generation": 1},
        "spec": {"tenant": "socktown", "endpoint": sim.base_url(), "tokenSecretRef": {"name": "s"},
                 "configId": "cg-hurry", "pollInterval": "30s"}
    }))
    .unwrap();
    let mut memory = RunMemory::default();

    // The start: the Secret read and the intent both come after the hurry.
    let action = driver.drive(&mut run, &mut memory).await.unwrap();
    assert!(matches!(action, Action::Requeue(_)), "{action:?}");
    assert_eq!(run.phase(), Some(Phase::Running), "{:?}", run.status);
    let calls = host.take_calls();
    let hurry = position(&calls, |c| *c == Call::Hurry).expect("a start hurries");
    let secret = position(&calls, |c| *c == Call::Credentials).unwrap();
    let intent = position(&calls, |c| *c == Call::Save(Some(Phase::Starting), false)).unwrap();
    assert!(hurry < secret && hurry < intent, "{calls:?}");

    // A routine poll (its time has come): nobody waits on it.
    memory.decide.last_polled = None;
    memory.turn = None;
    driver.drive(&mut run, &mut memory).await.unwrap();
    let calls = host.take_calls();
    assert!(
        calls.contains(&Call::Credentials),
        "the poll was made: {calls:?}"
    );
    assert!(
        !calls.contains(&Call::Hurry),
        "a routine poll hurried: {calls:?}"
    );

    // A stop: the poll before it and the intent to stop both come after the hurry.
    run.spec.stop = true;
    driver.drive(&mut run, &mut memory).await.unwrap();
    let calls = host.take_calls();
    let hurry = position(&calls, |c| *c == Call::Hurry).expect("a stop hurries");
    let secret = position(&calls, |c| *c == Call::Credentials).unwrap();
    let intent = position(&calls, |c| matches!(c, Call::Save(_, true))).expect("stop intent");
    assert!(hurry < secret && hurry < intent, "{calls:?}");
    assert!(
        sim.stats().stops >= 1,
        "the stop reached Amperity: {:?}",
        run.status
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
