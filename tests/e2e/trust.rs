//! The trust boundary on the real API server: what a resource author or Amperity
//! sends can neither send credentials somewhere else, nor crash the operator, nor
//! push a resource past the API server's limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::events::v1::Event;
use serde_json::json;

use crate::env::{Env, Result, TaskGuard, condition, event_list, eventually, phase, wait_events};
use crate::scenarios::{EVENTS, FINISH, ensure, finished};

/// A resource must stay far under etcd's limit whatever Amperity says.
const MAX_RESOURCE_BYTES: usize = 64 * 1024;

/// A loopback server that counts the connections it gets (and answers nothing),
/// until the guard is dropped.
async fn counting_server() -> (String, Arc<AtomicUsize>, TaskGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let server = TaskGuard(tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    }));
    (url, seen, server)
}

pub async fn an_endpoint_off_the_allow_list_gets_nothing(env: &Env) -> Result {
    let ns = env.namespace("allowlist", Some(&env.own_token())).await?;
    let (elsewhere, seen, _server) = counting_server().await;
    env.create_run(
        &ns,
        "exfiltrate",
        json!({"configId": "cg-e2e-elsewhere", "endpoint": elsewhere}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "exfiltrate", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Failed", phase(&run))?;
    let (_, reason, message) = condition(&run, "Succeeded").ok_or("no Succeeded condition")?;
    ensure(
        reason == "EndpointNotAllowed",
        format!("{reason}: {message}"),
    )?;
    ensure(
        message.contains(&elsewhere) && message.contains("--allowed-endpoints"),
        format!("the message names the endpoint and the flag: {message}"),
    )?;
    let (stalled, _, _) = condition(&run, "Stalled").unwrap();
    ensure(stalled == "True", "Stalled")?;
    // A request would have been sent before the run was failed, and the Event
    // is written after the status: by then, none has arrived.
    wait_events(env, &ns, &["Failed"], EVENTS).await?;
    ensure(
        seen.load(Ordering::SeqCst) == 0,
        format!(
            "the server off the allow-list got {} connections",
            seen.load(Ordering::SeqCst)
        ),
    )
}

pub async fn hostile_specs_are_refused_or_handled_and_the_operator_lives(env: &Env) -> Result {
    let ns = env.namespace("hostile", Some(&env.own_token())).await?;
    // Refused at apply time by the schema (every API server enforces maximum).
    let manifest = format!(
        "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowRun\nmetadata:\n  name: forever\n  namespace: {ns}\n\
         spec:\n  tenant: socktown\n  tokenSecretRef: {{name: amperity-api}}\n  configId: cg-e2e-ttl-huge\n  stop: true\n  ttlSecondsAfterFinished: 300000000000\n"
    );
    let path = std::env::temp_dir().join(format!("e2e-hostile-{}.yaml", fastrand::u32(..)));
    std::fs::write(&path, manifest).unwrap();
    let (ok, out) = env.kubectl(&["apply", "-f", path.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&path);
    ensure(!ok, "an absurd TTL was accepted")?;
    ensure(
        out.contains("ttlSecondsAfterFinished"),
        format!("the refusal names the field: {out}"),
    )?;
    // What only CEL refuses reaches the operator on this 1.20 API server: a
    // duration that once overflowed a clock (kube's parser panics on it).
    env.create_run(
        &ns,
        "overflow",
        json!({"configId": "cg-e2e-overflow", "timeout": "99999999999999999999h"}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "overflow", FINISH, "finished", finished)
        .await?;
    let (_, reason, message) = condition(&run, "Succeeded").unwrap();
    ensure(
        reason == "InvalidSpec" && message.contains("spec.timeout"),
        format!("{reason}: {message}"),
    )?;
    // The operator is still the same process, and still works for everyone.
    ensure(
        env.operator.as_ref().is_some_and(|op| op.is_running()),
        "the operator exited",
    )?;
    env.create_run(&ns, "after", json!({"configId": "cg-e2e-after-hostile"}))
        .await?;
    let run = env
        .wait_for(&ns, "after", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Succeeded", phase(&run))
}

fn resource_bytes(run: &amperity_operator::crd::AmperityWorkflowRun) -> usize {
    serde_json::to_vec(run)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

pub async fn megabyte_messages_stay_out_of_status_and_events(env: &Env) -> Result {
    let ns = env.namespace("huge", Some(&env.own_token())).await?;
    // A workflow failing with a 3 MB (multi-byte) error message.
    env.create_run(&ns, "bigerror", json!({"configId": "cg-e2e-hugeerror"}))
        .await?;
    // A start refused with a 3 MB message.
    env.create_run(&ns, "bigreject", json!({"configId": "cg-e2e-hugereject"}))
        .await?;
    let run = env
        .wait_for(&ns, "bigerror", FINISH, "finished", finished)
        .await?;
    ensure(phase(&run) == "Failed", phase(&run))?;
    let size = resource_bytes(&run);
    ensure(
        size < MAX_RESOURCE_BYTES,
        format!("the resource is {size} bytes"),
    )?;
    let message = run
        .status
        .as_ref()
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .message
        .clone();
    ensure(
        message.ends_with(amperity_operator::bounded::CUT_MARK)
            && message.starts_with("Stitch failed"),
        "the error message is kept, cut, and says so",
    )?;
    let refused = env
        .wait_for(&ns, "bigreject", FINISH, "finished", finished)
        .await?;
    let (_, reason, _) = condition(&refused, "Succeeded").unwrap();
    ensure(reason == "StartRejected", reason.clone())?;
    let size = resource_bytes(&refused);
    ensure(
        size < MAX_RESOURCE_BYTES,
        format!("the refused resource is {size} bytes"),
    )?;
    // The Failed Events were recorded (notes cut to the API's 1 KiB); an Event is
    // written after the status it tells of.
    let failed = eventually(EVENTS, || async {
        let failed: Vec<Event> = event_list(env, &ns)
            .await?
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Failed"))
            .collect();
        ensure(
            failed.len() >= 2,
            format!("{} Failed Events, want one per resource", failed.len()),
        )?;
        Ok(failed)
    })
    .await?;
    for e in failed {
        let note = e.note.unwrap_or_default();
        ensure(
            note.len() <= 1024,
            format!("a note of {} bytes", note.len()),
        )?;
    }
    Ok(())
}
