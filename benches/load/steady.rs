//! The steady case: through the window runs end at half the budget, one in ten
//! failed, each replaced by a new run, so that N stay in flight.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::case::{Ctx, Window, config_id, create_run};
use crate::env_or;

pub async fn window(ctx: &Ctx<'_>) -> Window {
    let Ctx { sim, setting, .. } = *ctx;
    let length = env_or::<f64>("LOAD_MAX_WINDOW", 180.0).max(min_window(ctx));
    // Replacements, seeded now so that their tasks are done when they are adopted:
    // nothing about them changes after their first poll.
    let spares = sim.seed_runs(
        &config_id(&setting, "spare"),
        (length * setting.end_rate()).ceil() as usize + 10,
    );
    let w0 = sim.clock();
    let mut in_flight: VecDeque<String> = ctx.ids.iter().cloned().collect();
    let mut spare = spares.iter();
    let mut ends: Vec<(String, f64)> = Vec::new();
    let mut names: HashMap<String, String> = ctx
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("load-{i}")))
        .collect();
    // When each run came in flight: the first ones when the operator started.
    let mut born: HashMap<String, f64> = ctx
        .ids
        .iter()
        .map(|id| (id.clone(), ctx.op_started))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / setting.end_rate()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut replacing = Vec::new();
    while sim.clock() < w0 + length - 1.0 {
        tick.tick().await;
        let Some(id) = in_flight.pop_front() else {
            break;
        };
        // One in ten fails: the error shows with the end.
        if let Some(at) = sim.end_run(&id, ends.len() % 10 == 9) {
            ends.push((id, at));
        }
        if let Some(next) = spare.next() {
            born.insert(next.clone(), sim.clock());
            in_flight.push_back(next.clone());
            let (runs, sim_url, next) = (ctx.runs.clone(), sim.base_url(), next.clone());
            let name = format!("load-r{}", ends.len());
            names.insert(next.clone(), name.clone());
            let poll = setting.poll;
            replacing.push(tokio::spawn(async move {
                create_run(&runs, &sim_url, &next, poll, name).await
            }));
        }
    }
    for r in replacing {
        r.await.unwrap();
    }
    while sim.clock() < w0 + length {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Window {
        ends,
        born,
        names,
        stops: Vec::new(),
        from: w0,
        to: sim.clock(),
    }
}

/// LOAD_MIN_CYCLES (default 0): the window lasts at least this many routine
/// cycles as expected (N over the turns the ends' reads leave, about half the
/// budget), so that task-progress freshness is measured in steady state.
fn min_window(ctx: &Ctx<'_>) -> f64 {
    let cycles: f64 = env_or("LOAD_MIN_CYCLES", 0.0);
    let s = ctx.setting;
    let progress_rate = (1.0 / s.period() - s.end_rate()).max(0.1);
    cycles * (s.poll as f64).max(s.n as f64 / progress_rate)
}
