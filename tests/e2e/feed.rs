//! The change feed through the real binary: ended runs are settled from the list
//! at once, their final task summary read after; a run the list never shows, or
//! shows late, is finished by its own polls or a later look; a list that says a
//! running run ended settles it, and the read that disagrees is told and counted
//! (the finished status never moves back).

use std::time::Duration;

use serde_json::json;

use crate::env::{Env, Result, eventually, phase, wait_events, wait_http};
use crate::scenarios::{ensure, finished};

pub async fn the_change_feed_settles_ended_runs_and_a_lying_list_is_told(env: &mut Env) -> Result {
    env.without_shared_operator("operator-after-feed", |env| Box::pin(feed_checks(env)))
        .await
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

async fn feed_checks(env: &mut Env) -> Result {
    let ns = env.namespace("feed", Some(&env.own_token())).await?;
    // A budget of 2/s: the twenty runs below are polled in turn every ten
    // seconds or so, twice their 5 s interval, so the feed looks every 5 s.
    let (mut op, port) = env
        .start_operator(
            "operator-feed",
            &[
                ("WATCH_NAMESPACES", ns.clone()),
                ("LEADER_ELECTION", "false".into()),
                ("AMPERITY_RATE_LIMIT", "2".into()),
                ("AMPERITY_CHANGE_FEED", "true".into()),
            ],
        )
        .await?;
    let scrape = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    };
    wait_http(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(30),
    )
    .await?;
    for i in 0..14 {
        env.create_run(
            &ns,
            &format!("busy-{i}"),
            json!({"configId": "cg-e2e-feed-busy-hang"}),
        )
        .await?;
    }
    // Their starts go first (urgent turns): the runs measured below start after.
    for i in 0..14 {
        env.wait_for(
            &ns,
            &format!("busy-{i}"),
            Duration::from_secs(60),
            "running",
            |r| phase(r) == "Running",
        )
        .await?;
    }
    // Slow runs end about 8 s after they start.
    let measured = [
        ("ends-1", "cg-e2e-feed-slow"),
        ("ends-2", "cg-e2e-feed-slow"),
        ("ends-3", "cg-e2e-feed-slow"),
        // Never listed: only its own polls can see it end.
        ("unlisted", "cg-e2e-feed-unlisted-slow"),
        // Listed ended 4 s after it ends.
        ("lagging", "cg-e2e-feed-endlag-slow"),
        // Listed ended while it goes on.
        ("lied-about", "cg-e2e-feed-listlie-hang"),
    ];
    for (name, config) in measured {
        env.create_run(&ns, name, json!({"configId": config}))
            .await?;
    }
    let mut delays = Vec::new();
    for (name, _) in &measured[..5] {
        let run = env
            .wait_for(&ns, name, Duration::from_secs(90), "finished", finished)
            .await?;
        let status = run.status.clone().unwrap_or_default();
        ensure(
            phase(&run) == "Succeeded",
            format!("{name}: {}", phase(&run)),
        )?;
        // The final task summary follows, from the routine read after the end.
        eventually(Duration::from_secs(60), || async {
            let run = env.runs(&ns).get(name).await.map_err(|e| e.to_string())?;
            let tasks = run.status.and_then(|s| s.tasks).unwrap_or_default();
            ensure(
                tasks.total == 5 && tasks.succeeded == 5,
                format!("{name}: task summary {tasks:?}"),
            )
        })
        .await?;
        let ended: jiff::Timestamp = status
            .workflow
            .and_then(|w| w.ended_at)
            .ok_or(format!("{name}: no endedAt"))?
            .parse()
            .map_err(|e| format!("{name}: {e}"))?;
        let completed = status
            .completed_at
            .ok_or(format!("{name}: no completedAt"))?
            .0;
        delays.push((
            name.to_string(),
            completed.duration_since(ended).as_secs_f64(),
        ));
    }
    let text = scrape().await?;
    let wakes = metric(&text, "amperity_operator_change_feed_wakes_total");
    let looks = metric(
        &text,
        "amperity_operator_change_feed_looks_total{outcome=\"listed\"}",
    );
    // The run the list lies about can only have been woken by the feed; of the
    // three listed runs, those whose own poll did not see the end first were too.
    ensure(
        wakes >= 2.0,
        format!("{wakes} wakes, {looks} looks; delays {delays:?}"),
    )?;
    // Listed ends show within the feed's cycle (5 s) and a read, where per-run
    // polls of twenty runs at 2/s take about ten seconds.
    for (name, delay) in &delays[..3] {
        ensure(
            *delay <= 8.0,
            format!("{name} showed its end after {delay:.1}s: {delays:?}"),
        )?;
    }
    // The run the list said had ended was settled from the list; the read after
    // it says it still runs: told in an Event and counted, and the finished status
    // stays.
    wait_events(env, &ns, &["ListDisagreed"], Duration::from_secs(60)).await?;
    let lied = env
        .runs(&ns)
        .get("lied-about")
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        phase(&lied) == "Succeeded",
        format!(
            "lied-about: {} after the list said it succeeded",
            phase(&lied)
        ),
    )?;
    let disagreed = metric(
        &scrape().await?,
        "amperity_operator_change_feed_disagreements_total",
    );
    ensure(
        disagreed >= 1.0,
        format!("{disagreed} disagreements counted"),
    )?;
    if let Ok(Some(status)) = op.child.try_wait() {
        return Err(format!("the operator exited ({status})"));
    }
    op.kill();
    Ok(())
}
