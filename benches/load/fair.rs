//! Namespaces sharing one tenant's budget (issue 25): ten runs in namespace
//! `small` beside many in namespace `big`, each run polling on its
//! `pollInterval` in a routine turn of its namespace's lane, through the real
//! client (its budget, its gate) against the simulator over loopback. No
//! Kubernetes and no operator binary: what is measured is the budget's sharing.
//!
//!     cargo bench --bench load -- --fair-namespaces
//!
//! Environment: LOAD_RATE (the budget, default 5 requests/s as the operator's;
//! at the tenant's documented 10 the simulator's own 10/s window answers a
//! rare 429 to loopback jitter), LOAD_POLL (pollInterval seconds, default 10),
//! LOAD_FAIR_BIG (runs in `big`, default 10,000), LOAD_FAIR_SECS (the window,
//! default 120 s), LOAD_FAIR_LANES (`namespaces`, the default, or `one`: both
//! namespaces' polls in one lane, as before namespaces took turns).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amperity_operator::amperity::{
    AllowList, AmperityClient, ClientConfig, Credentials, SecretString, Target,
};
use amperity_operator::sim::{self, SimConfig};

const SMALL: usize = 10;

/// Each poll's namespace, when its turn was asked for, and when it was answered.
type Polls = Arc<Mutex<Vec<(bool, usize, Instant, Instant)>>>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn quantiles(mut xs: Vec<f64>) -> Option<(f64, f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    Some((at(0.5), at(0.99), xs[xs.len() - 1]))
}

fn show(t: Option<(f64, f64, f64)>) -> String {
    t.map_or("-".into(), |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}"))
}

/// Runs the case; returns whether its targets held.
pub async fn run() -> bool {
    let rate: u32 = env_or("LOAD_RATE", 5);
    let poll = Duration::from_secs(env_or("LOAD_POLL", 10));
    let big: usize = env_or("LOAD_FAIR_BIG", 10_000);
    let window = Duration::from_secs(env_or("LOAD_FAIR_SECS", 120));
    let one_lane = std::env::var("LOAD_FAIR_LANES").is_ok_and(|v| v == "one");
    let sim = sim::spawn(SimConfig {
        tokens: vec!["fair-token".into()],
        speed: 0.0001,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let client = AmperityClient::new(ClientConfig {
        rate_limit_per_sec: rate,
        allow: AllowList::parse(&[sim.base_url()]).unwrap(),
        ..ClientConfig::default()
    })
    .unwrap();
    let target = Target::new(
        Some(&sim.base_url()),
        "",
        &SimConfig::default().tenant,
        "2024-04-01",
        client.allow_list(),
    )
    .unwrap();
    let ids = sim.seed_runs("cg-fair", big + SMALL);
    let polls: Polls = Arc::new(Mutex::new(Vec::new()));
    let began = Instant::now();
    let end = began + window;
    let mut tasks = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let small = i >= big;
        let lane = if small && !one_lane { "small" } else { "big" };
        let (client, target, polls) = (client.clone(), target.clone(), polls.clone());
        tasks.push(tokio::spawn(async move {
            let credentials = Credentials::Token(SecretString::new("fair-token"));
            while Instant::now() < end {
                let asked = Instant::now();
                let turn = client.reserve_turn(&target, lane);
                // A turn past the window is not waited for.
                if turn.due() > end {
                    return;
                }
                let answer = client
                    .get_in_turn(&target, &credentials, &id, Some(turn))
                    .await;
                let done = Instant::now();
                if answer.is_ok() {
                    polls.lock().unwrap().push((small, i, asked, done));
                }
                tokio::time::sleep(poll).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let polls = polls.lock().unwrap().clone();
    let waits = |of_small: bool| {
        quantiles(
            polls
                .iter()
                .filter(|p| p.0 == of_small)
                .map(|p| (p.3 - p.2).as_secs_f64())
                .collect(),
        )
    };
    // The time between two polls of a small run: its pollInterval plus the wait.
    let mut intervals = Vec::new();
    for run in big..big + SMALL {
        let mut times: Vec<Instant> = polls.iter().filter(|p| p.1 == run).map(|p| p.3).collect();
        times.sort();
        intervals.extend(times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()));
    }
    let small_polls = polls.iter().filter(|p| p.0).count();
    let big_polls = polls.len() - small_polls;
    let stats = sim.stats();
    let per_s = stats.requests as f64 / elapsed;
    let small_intervals = quantiles(intervals);
    println!(
        "fair namespaces ({}): budget {rate}/s, pollInterval {} s, {SMALL} runs in `small` beside {big} in `big`, {:.0} s: \
         small's poll interval p50/p99/max {} s, its wait for a turn p50/p99/max {} s ({small_polls} polls); \
         big's wait p50/p99/max {} s ({big_polls} polls); requests/s {per_s:.2}, 429s {}",
        if one_lane {
            "one lane"
        } else {
            "a lane per namespace"
        },
        poll.as_secs(),
        elapsed,
        show(small_intervals),
        show(waits(true)),
        show(waits(false)),
        stats.throttled,
    );
    let mut ok = stats.throttled == 0 && per_s <= f64::from(rate);
    if !one_lane {
        // Each small run polled on its interval, give or take a few turns.
        let target = poll.as_secs_f64() + 2.5;
        let held = small_intervals.is_some_and(|(_, p99, _)| p99 <= target);
        if !held {
            println!("  FAILED: small's poll interval p99 is over {target:.1} s");
        }
        ok &= held;
    }
    ok
}
