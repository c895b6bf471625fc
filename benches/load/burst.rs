//! The burst case: K of the N runs in flight end within one second (one in ten
//! failed), and while the operator works through them, stops are requested
//! (`spec.stop`) on runs still going: how soon every end shows, and how soon each
//! stop reaches Amperity.

use std::collections::HashMap;
use std::time::Duration;

use amperity_operator::sim::Request;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::case::{Ctx, Window};
use crate::env_or;

/// Stops requested during the burst, this long after the first list that
/// follows it (or after the burst, without the feed): while the wakes are queued.
const STOPS_AFTER: [f64; 3] = [0.5, 2.0, 4.0];

pub async fn window(ctx: &Ctx<'_>, k: usize) -> Window {
    let Ctx { sim, setting, .. } = *ctx;
    let k = k.min(ctx.ids.len().saturating_sub(STOPS_AFTER.len()));
    let names: HashMap<String, String> = ctx
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("load-{i}")))
        .collect();
    let born: HashMap<String, f64> = ctx
        .ids
        .iter()
        .map(|id| (id.clone(), ctx.op_started))
        .collect();
    let w0 = sim.clock();
    let mut ends = Vec::with_capacity(k);
    for (i, id) in ctx.ids.iter().take(k).enumerate() {
        if let Some(at) = sim.end_run(id, i % 10 == 9) {
            ends.push((id.clone(), at));
        }
    }
    let burst_took = sim.clock() - w0;
    assert!(
        burst_took < 1.0,
        "the burst took {burst_took:.2}s, over 1 s"
    );

    // The stops: on the newest runs, which no burst ends.
    let first_list = if setting.feed {
        wait_for_list(ctx, w0, setting.poll as f64 + 5.0).await
    } else {
        w0
    };
    let mut stops = Vec::new();
    for (after, id) in STOPS_AFTER.iter().zip(ctx.ids.iter().rev()) {
        while sim.clock() < first_list + after {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = sim.clock();
        ctx.runs
            .patch(
                &names[id],
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"stop": true}})),
            )
            .await
            .unwrap();
        stops.push((id.clone(), at));
    }

    // Until every end shows and every stop arrived, or the wait is over.
    let wait = if setting.feed {
        setting.poll as f64 + 60.0 + setting.list_lag as f64
    } else {
        env_or("LOAD_MAX_WAIT", 300.0)
    };
    while sim.clock() < w0 + wait {
        let shown = {
            let seen = ctx.seen.lock().unwrap();
            ends.iter().all(|(id, _)| seen.finished_at.contains_key(id))
        };
        let stopped = sim
            .request_log()
            .iter()
            .filter(|l| matches!(&l.request, Request::Stop(_)) && l.at >= w0)
            .count()
            >= stops.len();
        if shown && stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Window {
        ends,
        born,
        names,
        stops,
        from: w0,
        to: sim.clock(),
    }
}

/// When the first list after `since` was asked (simulator clock), waiting at
/// most `within` seconds for it.
async fn wait_for_list(ctx: &Ctx<'_>, since: f64, within: f64) -> f64 {
    loop {
        let listed = ctx
            .sim
            .request_log()
            .iter()
            .rev()
            .take_while(|l| l.at >= since)
            .filter(|l| l.request == Request::List)
            .map(|l| l.at)
            .fold(f64::NAN, f64::min);
        if !listed.is_nan() {
            return listed;
        }
        if ctx.sim.clock() >= since + within {
            return ctx.sim.clock();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
