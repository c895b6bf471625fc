//! AmperityWorkflowSchedules on the real API server. The minute-by-minute checks
//! share one scenario so that their real minutes pass together.

use std::time::Duration;

use amperity_operator::crd::schedule::AmperityWorkflowSchedule;
use amperity_operator::schedule::RUN_NOW_ANNOTATION;
use jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::env::{
    Env, Result, events, eventually, phase, schedule_condition, wait_events, wait_http,
};
use crate::scenarios::{EVENTS, ensure};

/// The run name of the slot at minute boundary `minute` (minutes since the epoch).
fn slot_run(schedule: &str, minute: i64) -> String {
    format!("{schedule}-{minute}")
}

fn minute_now() -> i64 {
    Timestamp::now().as_second().div_euclid(60)
}

/// Sleeps until `secs` seconds past the start of minute `minute`.
async fn until_minute(minute: i64, secs: f64) {
    let at = minute as f64 * 60.0 + secs;
    let now = Timestamp::now().as_millisecond() as f64 / 1000.0;
    if at > now {
        tokio::time::sleep(Duration::from_secs_f64(at - now)).await;
    }
}

/// The slot a schedule last skipped, as a timestamp.
fn skipped(s: &AmperityWorkflowSchedule) -> Option<String> {
    s.status
        .as_ref()
        .and_then(|st| st.last_skipped_time.as_ref())
        .map(|t| t.0.to_string())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u32(..) % 100_000)
}

async fn annotate(env: &Env, ns: &str, name: &str, value: &str) -> Result {
    env.schedules(ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {RUN_NOW_ANNOTATION: value}}})),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("annotating {ns}/{name}: {e}"))
}

async fn lease_holder(env: &Env) -> Option<String> {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env.client.clone(), "default");
    leases
        .get("amperity-operator-e2e")
        .await
        .ok()?
        .spec?
        .holder_identity
}

/// Every minute for three minutes, exactly one run per minute, while the leader is
/// killed (SIGKILL) just after a slot and two replicas compete; beside it, history
/// pruning, Forbid skipping slots while a run hangs, suspend, and deleting a
/// schedule with a run in flight.
pub async fn schedules_run_once_a_minute_across_a_sigkill_and_two_replicas(
    env: &mut Env,
) -> Result {
    let ns = env
        .namespace("sched-minutes", Some(&env.own_token()))
        .await?;
    // Late in a minute, the schedules could be created after the boundary taken as
    // their first: start afresh just after it.
    if Timestamp::now().as_second().rem_euclid(60) >= 50 {
        until_minute(minute_now() + 1, 1.0).await;
    }
    let (tick, hang, idle) = (
        unique("cg-e2e-tick"),
        unique("cg-e2e-forbid-hang"),
        unique("cg-e2e-idle"),
    );
    let every_minute = |extra: serde_json::Value| {
        let mut spec = json!({"schedule": "* * * * *"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    env.create_schedule(
        &ns,
        "ticker",
        every_minute(json!({"successfulRunsHistoryLimit": 1})),
        json!({"configId": tick}),
        json!({}),
    )
    .await?;
    env.create_schedule(
        &ns,
        "forbid",
        every_minute(json!({"concurrencyPolicy": "Forbid"})),
        json!({"configId": hang}),
        json!({}),
    )
    .await?;
    env.create_schedule(
        &ns,
        "idle",
        every_minute(json!({"suspend": true})),
        json!({"configId": idle}),
        json!({}),
    )
    .await?;
    let created = minute_now();
    let b1 = created + 1;
    let (b2, b3) = (b1 + 1, b1 + 2);

    // A second replica, a follower while the first leads. (Should the scenario end
    // early, the replicas it started are killed as it drops them, and the suite
    // starts a shared operator again.)
    let (follower, follower_port) = env.start_operator("operator-sched-follower", &[]).await?;
    wait_http(
        &format!("http://127.0.0.1:{follower_port}/readyz"),
        Duration::from_secs(30),
    )
    .await?;

    // Minute one: one run each for ticker and forbid; idle skips it.
    until_minute(b1, 0.0).await;
    let first = [slot_run("ticker", b1), slot_run("forbid", b1)];
    eventually(Duration::from_secs(40), || async {
        let names = env.run_names(&ns).await?;
        ensure(
            first.iter().all(|n| names.contains(n)),
            format!("after the first slot: {names:?}"),
        )
    })
    .await?;
    // Its skip recorded, a run for the slot would have been created by now.
    let slot1 = format!("{}", Timestamp::from_second(b1 * 60).unwrap());
    env.wait_for_schedule(
        &ns,
        "idle",
        Duration::from_secs(40),
        "skipping the first slot",
        |s| skipped(s) == Some(slot1.clone()),
    )
    .await?;
    let names = env.run_names(&ns).await?;
    ensure(
        !names.iter().any(|n| n.starts_with("idle-")),
        format!("a suspended schedule ran: {names:?}"),
    )?;

    // Minute two: SIGKILL the leader a moment after the slot; a new replica starts.
    until_minute(b2, fastrand::f64() * 0.5).await;
    env.operator.as_mut().ok_or("no operator")?.kill();
    let (replacement, replacement_port) = env
        .start_operator("operator-sched-replacement", &[])
        .await?;
    let slot2 = format!("{}", Timestamp::from_second(b2 * 60).unwrap());
    // The suspended schedule records the slot skipped; only then is it resumed.
    env.wait_for_schedule(
        &ns,
        "idle",
        Duration::from_secs(40),
        "skipping the second slot",
        |s| skipped(s) == Some(slot2.clone()),
    )
    .await?;
    env.schedules(&ns)
        .patch(
            "idle",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .map_err(|e| e.to_string())?;
    env.wait_for_schedule(
        &ns,
        "ticker",
        Duration::from_secs(40),
        "running the second slot",
        |s| {
            s.status
                .as_ref()
                .and_then(|st| st.last_schedule_time.as_ref())
                .map(|t| t.0.to_string())
                == Some(slot2.clone())
        },
    )
    .await?;

    // The kill can land between the slot run's intent and its POST: then nothing
    // was created, no run can be found, and the new leader asks a person. Answer as
    // one would (the one-run promise is what is checked, not the kill's timing).
    answer_a_start_lost_before_it_left(env, &ns, &format!("ticker-{b2}")).await?;

    // Minute three, then the tally.
    until_minute(b3, 6.0).await;
    let recent = [slot_run("ticker", b2), slot_run("ticker", b3)];
    let ticker = env
        .wait_for_schedule(
            &ns,
            "ticker",
            Duration::from_secs(60),
            "past its third slot",
            |s| {
                let st = s.status.clone().unwrap_or_default();
                st.last_schedule_time.map(|t| t.0.as_second() / 60) == Some(b3)
                    && st.last_run.is_some_and(|r| recent.contains(&r.name))
            },
        )
        .await?;
    // One Amperity run per minute; the first pruned (history limit 1) once the second
    // succeeded (the pruning may follow the status above); the newest never pruned.
    eventually(Duration::from_secs(30), || async {
        let names = env.run_names(&ns).await?;
        let tickers: Vec<&String> = names.iter().filter(|n| n.starts_with("ticker-")).collect();
        ensure(
            tickers.contains(&&recent[1]) && tickers.iter().all(|n| recent.contains(n)),
            format!("ticker: one run per minute, the oldest pruned: {names:?}"),
        )
    })
    .await?;
    // The newest run's start may still be on its way.
    eventually(Duration::from_secs(30), || async {
        let starts = env.starts_for(&tick).await;
        ensure(
            starts >= 3,
            format!("ticker started {starts} Amperity runs, not 3"),
        )
    })
    .await?;
    let (ok, reason, _) =
        schedule_condition(&ticker, "LastRunSucceeded").ok_or("no LastRunSucceeded")?;
    ensure(
        ok == "True" && reason == "Succeeded",
        format!("LastRunSucceeded {ok} {reason}"),
    )?;
    // Before what must not have happened, what comes after it: forbid skipped the
    // third slot, idle ran it.
    let forbid = env
        .wait_for_schedule(
            &ns,
            "forbid",
            Duration::from_secs(40),
            "skipping the third slot",
            |s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.last_skipped_time.as_ref())
                    .map(|t| t.0.as_second() / 60)
                    == Some(b3)
            },
        )
        .await?;
    env.wait_for_schedule(
        &ns,
        "idle",
        Duration::from_secs(40),
        "running the third slot",
        |s| {
            s.status
                .as_ref()
                .and_then(|st| st.last_schedule_time.as_ref())
                .map(|t| t.0.as_second() / 60)
                == Some(b3)
        },
    )
    .await?;
    // Three ticker runs, one forbid run, one idle run; a leader killed right after
    // creating the second ticker run may not have said so.
    let seen = eventually(EVENTS, || async {
        let seen = events(env, &ns).await;
        ensure(
            seen.get("Created").copied().unwrap_or(0) >= 4
                && seen.contains_key("Deleted")
                && seen.contains_key("Skipped"),
            format!("Created (4 or 5), Deleted (the pruned run) and Skipped events: {seen:?}"),
        )?;
        Ok(seen)
    })
    .await?;
    let starts = env.starts_for(&tick).await;
    ensure(
        starts == 3,
        format!("ticker started {starts} Amperity runs, not 3"),
    )?;
    let created_events = seen.get("Created").copied().unwrap_or(0);
    ensure(
        (4..=5).contains(&created_events),
        format!("Created events: {seen:?}"),
    )?;
    let names = env.run_names(&ns).await?;

    // Forbid: the hanging run of minute one is still the only one; minutes two and three were skipped.
    ensure(
        names.iter().filter(|n| n.starts_with("forbid-")).count() == 1,
        format!("forbid: {names:?}"),
    )?;
    ensure(
        env.starts_for(&hang).await == 1,
        "forbid started a second Amperity run",
    )?;
    let status = forbid.status.clone().unwrap_or_default();
    ensure(
        status.active.len() == 1 && status.active[0].name == slot_run("forbid", b1),
        format!("forbid active: {:?}", status.active),
    )?;

    // Resumed after minute two: no late run for it, and minute three ran.
    let idles: Vec<&String> = names.iter().filter(|n| n.starts_with("idle-")).collect();
    ensure(
        idles == [&slot_run("idle", b3)],
        format!("idle: only the third slot: {names:?}"),
    )?;

    // kubectl shows what a person asks.
    let (ok, out) = env.kubectl(&["-n", &ns, "get", "awsched"]).await;
    ensure(ok, out.clone())?;
    for header in [
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "ACTIVE",
        "LAST SCHEDULE",
        "LAST RESULT",
        "NEXT",
        "AGE",
    ] {
        ensure(
            out.contains(header),
            format!("kubectl get awsched lacks {header}:\n{out}"),
        )?;
    }
    ensure(
        out.contains("Succeeded") && out.contains(&slot_run("forbid", b1)),
        format!("kubectl get awsched:\n{out}"),
    )?;

    // Deleting a schedule deletes its runs, and the hanging one is stopped.
    let hanging = env
        .runs(&ns)
        .get(&slot_run("forbid", b1))
        .await
        .map_err(|e| e.to_string())?;
    let id = hanging
        .status
        .and_then(|s| s.workflow_id)
        .ok_or("the hanging run has no workflow id")?;
    env.schedules(&ns)
        .delete("forbid", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    eventually(Duration::from_secs(40), || async {
        let gone = env
            .schedules(&ns)
            .get_opt("forbid")
            .await
            .map_err(|e| e.to_string())?
            .is_none()
            && !env
                .run_names(&ns)
                .await?
                .iter()
                .any(|n| n.starts_with("forbid-"));
        ensure(gone, "the deleted schedule or its run is still there")
    })
    .await?;
    let state = crate::scenarios::sim_state(env, &id).await;
    ensure(
        state == "canceled" || state == "stopping",
        format!("the deleted schedule's run is {state} in Amperity"),
    )?;

    // The environment outlives the scenario: stop the other schedules.
    for name in ["ticker", "idle"] {
        env.schedules(&ns)
            .delete(name, &DeleteParams::default())
            .await
            .map_err(|e| e.to_string())?;
    }

    // Two replicas go on as one: keep the replacement, and wait for it to lead.
    drop(follower);
    env.operator = Some(replacement);
    env.metrics_port = replacement_port;
    eventually(Duration::from_secs(30), || async {
        ensure(
            lease_holder(env).await.as_deref() == Some("operator-sched-replacement"),
            "the remaining replica did not take the lease",
        )
    })
    .await
}

/// run-now starts one run per new value, Replace stops the run in flight, and bad
/// schedules are refused by the API server or reported by the operator.
pub async fn schedules_run_now_replace_and_refuse_bad_input(env: &mut Env) -> Result {
    let ns = env.namespace("sched-now", Some(&env.own_token())).await?;
    let config = unique("cg-e2e-now");
    env.create_schedule(
        &ns,
        "adhoc",
        json!({}),
        json!({"configId": config}),
        json!({RUN_NOW_ANNOTATION: "1"}),
    )
    .await?;
    let finished = |name: &'static str| {
        move |s: &AmperityWorkflowSchedule| {
            s.status
                .as_ref()
                .and_then(|st| st.last_run.as_ref())
                .is_some_and(|r| r.name == name)
        }
    };
    let s = env
        .wait_for_schedule(
            &ns,
            "adhoc",
            Duration::from_secs(60),
            "finished its run-now run",
            finished("adhoc-now-1"),
        )
        .await?;
    let status = s.status.clone().unwrap();
    ensure(
        status.last_handled_run_now.as_deref() == Some("1") && status.run_now_count == 1,
        format!("{status:?}"),
    )?;
    ensure(
        status.last_run.as_ref().map(|r| r.result.as_str()) == Some("Succeeded"),
        format!("{:?}", status.last_run),
    )?;
    ensure(
        status.last_schedule_time.is_none(),
        "a run-now run is not a scheduled one",
    )?;
    // The same value again starts nothing; a new one starts the next run.
    annotate(env, &ns, "adhoc", "1").await?;
    annotate(env, &ns, "adhoc", "2").await?;
    let s = env
        .wait_for_schedule(
            &ns,
            "adhoc",
            Duration::from_secs(60),
            "finished its second run",
            finished("adhoc-now-2"),
        )
        .await?;
    // Both values handled, the later one last: a run for the repeated value would
    // have been created before the second run, which has finished.
    let status = s.status.clone().unwrap();
    ensure(
        status.last_handled_run_now.as_deref() == Some("2") && status.run_now_count == 2,
        format!("{status:?}"),
    )?;
    ensure(
        env.run_names(&ns).await? == ["adhoc-now-1", "adhoc-now-2"],
        "exactly two run-now runs",
    )?;
    ensure(
        env.starts_for(&config).await == 2,
        "two Amperity runs for two values",
    )?;

    // Replace: a new request stops the hanging run and starts another.
    let hang = unique("cg-e2e-replace-hang");
    env.create_schedule(
        &ns,
        "swap",
        json!({"concurrencyPolicy": "Replace"}),
        json!({"configId": hang}),
        json!({RUN_NOW_ANNOTATION: "a"}),
    )
    .await?;
    let run = env
        .wait_for(&ns, "swap-now-1", Duration::from_secs(60), "running", |r| {
            phase(r) == "Running" && r.status.as_ref().is_some_and(|s| s.workflow_id.is_some())
        })
        .await?;
    let id = run.status.and_then(|s| s.workflow_id).unwrap();
    annotate(env, &ns, "swap", "b").await?;
    env.wait_for(
        &ns,
        "swap-now-1",
        Duration::from_secs(60),
        "canceled",
        |r| phase(r) == "Canceled",
    )
    .await?;
    env.wait_for(&ns, "swap-now-2", Duration::from_secs(60), "running", |r| {
        phase(r) == "Running"
    })
    .await?;
    let state = crate::scenarios::sim_state(env, &id).await;
    ensure(
        state == "canceled",
        format!("the replaced run is {state} in Amperity"),
    )?;
    wait_events(env, &ns, &["Replaced"], EVENTS).await?;
    env.schedules(&ns)
        .delete("swap", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;

    // The API server refuses what the schema can say, naming the field.
    for (field, schedule) in [
        ("schedule", "every day"),
        ("schedule", "0 6 * * * *"),
        ("schedule", "@reboot"),
        // Out of range: minute 61, month 13.
        ("schedule", "61 * * * *"),
        ("schedule", "0 6 * 13 *"),
    ] {
        let manifest = format!(
            "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowSchedule\nmetadata:\n  name: bad\n  namespace: {ns}\nspec:\n  schedule: {schedule:?}\n  runTemplate:\n    spec: {{tenant: socktown, tokenSecretRef: {{name: amperity-api}}, configId: cg-1}}\n"
        );
        let path = std::env::temp_dir().join(format!("e2e-bad-sched-{}.yaml", fastrand::u32(..)));
        std::fs::write(&path, manifest).unwrap();
        let (ok, out) = env
            .kubectl(&["apply", "--validate=false", "-f", path.to_str().unwrap()])
            .await;
        let _ = std::fs::remove_file(&path);
        ensure(
            !ok && out.contains(field),
            format!("{schedule:?}: not refused naming {field}: {out}"),
        )?;
    }
    // What only the operator can say (a 1.20 API server ignores CEL): Ready False, Stalled.
    let long = "n".repeat(53);
    for (name, spec, field) in [
        (
            "zone",
            json!({"timeZone": "Mars/Olympus_Mons"}),
            "spec.timeZone",
        ),
        ("never", json!({"schedule": "0 0 30 2 *"}), "spec.schedule"),
        (long.as_str(), json!({}), "metadata.name"),
    ] {
        env.create_schedule(&ns, name, spec, json!({}), json!({}))
            .await?;
        let s = env
            .wait_for_schedule(&ns, name, Duration::from_secs(30), "stalled", |s| {
                schedule_condition(s, "Stalled").is_some_and(|c| c.0 == "True")
            })
            .await?;
        let (ready, reason, message) = schedule_condition(&s, "Ready").unwrap();
        ensure(
            ready == "False" && reason == "InvalidSpec" && message.contains(field),
            format!("{name}: {ready} {reason} {message}"),
        )?;
    }
    wait_events(env, &ns, &["InvalidSpec"], EVENTS).await?;
    env.schedules(&ns)
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// When `run` stalls `StartUnconfirmed` with no run found (its start never left:
/// the leader was killed in between), annotates the `retry` the message offers.
/// Returns once the run is past its start either way.
async fn answer_a_start_lost_before_it_left(env: &Env, ns: &str, run: &str) -> Result {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let r = env.runs(ns).get(run).await.map_err(|e| e.to_string())?;
        let status = r.status.clone().unwrap_or_default();
        if status.workflow_id.is_some() || r.phase().is_some_and(|p| p.is_finished()) {
            return Ok(());
        }
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "StartUnconfirmed");
        if let Some(c) = stalled.filter(|c| c.message.contains("no run was found")) {
            let token = c
                .message
                .split("retry ")
                .nth(1)
                .and_then(|t| t.split('\'').next())
                .ok_or_else(|| format!("no retry token in {:?}", c.message))?;
            env.runs(ns)
                .patch(
                    run,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {
                        amperity_operator::run::decide::RESOLVE_START_ANNOTATION: format!("retry {token}")
                    }}})),
                )
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("    {ns}/{run}: its start never left (leader killed first); answered retry");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{ns}/{run} neither started nor asked a person: {status:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
