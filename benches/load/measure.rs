//! The figures of a case from the simulator's request log and what the watch saw,
//! and the targets they are checked against.

use std::collections::HashMap;

use amperity_operator::sim::{self, Request};

use crate::case::{Figures, Setting, Shape, Window};
use crate::observe::Seen;
use crate::percentile;

pub fn measure(
    setting: &Setting,
    log: &[sim::Logged],
    seen: &Seen,
    window: &Window,
    case_end: f64,
    origin: jiff::Timestamp,
) -> Figures {
    let (ends, born) = (&window.ends, &window.born);
    let (w0, w1) = (window.from, window.to);
    let mut f = Figures {
        setting: Some(*setting),
        window: w1 - w0,
        ended: ends.len(),
        ..Figures::default()
    };
    // end → status, from the simulator's end to the watch showing it.
    let mut delays: Vec<f64> = Vec::new();
    for (id, at) in ends {
        match seen.finished_at.get(id) {
            Some(shown) => delays.push(shown - at),
            None => {
                f.unseen += 1;
                delays.push(case_end - at);
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    if !delays.is_empty() {
        f.delay = Some((
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            *delays.last().unwrap(),
        ));
    }

    let in_window: Vec<&sim::Logged> = log.iter().filter(|l| l.at >= w0 && l.at < w1).collect();
    f.requests_per_s = in_window.len() as f64 / (w1 - w0);
    let times: Vec<f64> = in_window.iter().map(|l| l.at).collect();
    let mut j = 0;
    for i in 0..times.len() {
        while times[i] - times[j] >= 1.0 {
            j += 1;
        }
        f.max_in_a_second = f.max_in_a_second.max(i - j + 1);
    }
    f.lists = in_window
        .iter()
        .filter(|l| l.request == Request::List)
        .count();

    // What finishing a run cost: the reads of it after its end, and the lists.
    let end_of: HashMap<&str, f64> = ends.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    let reads_after_end = log
        .iter()
        .filter(|l| matches!(&l.request, Request::Get(id) if end_of.get(id.as_str()).is_some_and(|e| l.at >= *e)))
        .count();
    // Ended runs whose end showed without a read after it (settled from the
    // list): their summary read is still to come, one request each.
    f.summaries_owed = ends
        .iter()
        .filter(|(id, at)| {
            !log.iter()
                .any(|l| l.at >= *at && matches!(&l.request, Request::Get(i) if i == id))
        })
        .count();
    if !ends.is_empty() {
        f.after_end_per_finished_run =
            (reads_after_end + f.summaries_owed + f.lists) as f64 / ends.len() as f64;
        // Everything the window cost, and the reads it still owes, over what
        // finished in it.
        f.requests_per_finished_run =
            (in_window.len() + f.summaries_owed) as f64 / ends.len() as f64;
    }

    // Each stop: from its request to its stop reaching Amperity.
    f.stops = window.stops.len();
    for (id, asked) in &window.stops {
        let arrived = log
            .iter()
            .find(|l| matches!(&l.request, Request::Stop(s) if s == id) && l.at >= *asked);
        match arrived {
            Some(l) => {
                let latency = l.at - asked;
                f.stop_latency = Some(f.stop_latency.map_or(latency, |m: f64| m.max(latency)));
                let decided = window
                    .names
                    .get(id)
                    .and_then(|name| seen.status(name))
                    .and_then(|s| s.stop_requested_at.as_ref())
                    .map(|t| t.0.duration_since(origin).as_secs_f64());
                if let Some(decided) = decided {
                    let after = l.at - decided;
                    f.stop_after_decision =
                        Some(f.stop_after_decision.map_or(after, |m: f64| m.max(after)));
                }
            }
            None => f.stops_lost += 1,
        }
    }

    // Task progress: the time between two polls of a run while it is in flight
    // (the reads after its end are not progress polls), and how long runs still
    // in flight at the end of the window have waited since their last poll.
    let in_flight = |id: &str, at: f64| {
        born.get(id).is_some_and(|b| at >= *b) && end_of.get(id).is_none_or(|e| at < *e)
    };
    let mut last: HashMap<&str, f64> = HashMap::new();
    let mut intervals = Vec::new();
    let mut progress_polls = 0;
    for l in log.iter().filter(|l| l.at < w1) {
        if let Request::Get(id) = &l.request
            && in_flight(id, l.at)
        {
            if l.at >= w0 {
                progress_polls += 1;
            }
            if let Some(prev) = last.insert(id.as_str(), l.at)
                && l.at >= w0
            {
                intervals.push(l.at - prev);
            }
        }
    }
    intervals.sort_by(f64::total_cmp);
    f.intervals_seen = intervals.len();
    if !intervals.is_empty() {
        f.intervals = Some((
            percentile(&intervals, 0.5),
            percentile(&intervals, 0.99),
            *intervals.last().unwrap(),
        ));
    }
    let still_waiting = born
        .iter()
        .filter(|(id, _)| in_flight(id, w1 - 1e-9))
        .map(|(id, b)| w1 - last.get(id.as_str()).copied().unwrap_or(*b))
        .fold(0.0, f64::max);
    f.longest_wait = still_waiting.max(f.intervals.map_or(0.0, |i| i.2));
    // Progress polls get what the feed and the reads of ended runs leave, shared
    // fairly by the N runs in flight.
    let progress_rate = progress_polls as f64 / (w1 - w0);
    f.routine_cycle = (setting.poll as f64).max(if progress_rate > 0.0 {
        setting.n as f64 / progress_rate
    } else {
        setting.n as f64 * setting.period()
    });
    f
}

pub fn check(f: &Figures) -> Vec<String> {
    let s = f.setting.unwrap();
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    check(
        f.throttled == 0,
        format!("{} answers were 429", f.throttled),
    );
    check(
        f.max_in_a_second <= s.rate as usize,
        format!(
            "{} requests in one second, budget {}",
            f.max_in_a_second, s.rate
        ),
    );
    // Budget use is a steady-state figure: a burst's window (seconds long) is the
    // burst's settling, whose work is on the Kubernetes side.
    if s.shape == Shape::Steady && s.n as f64 * s.period() > s.poll as f64 {
        check(
            f.requests_per_s >= 0.95 * s.rate as f64,
            format!(
                "only {:.0}% of the budget used",
                100.0 * f.requests_per_s / s.rate as f64
            ),
        );
    }
    check(
        f.writes_for_unchanged_polls == 0.0,
        format!(
            "{} status writes for unchanged polls",
            f.writes_for_unchanged_polls
        ),
    );
    // Task progress in steady state (a burst defers routine polls on purpose).
    if s.shape == Shape::Steady {
        check(
            f.longest_wait <= 1.2 * f.routine_cycle,
            format!(
                "a run waited {:.1}s for its poll, over 1.2 x its cycle {:.0}s",
                f.longest_wait, f.routine_cycle
            ),
        );
    }
    // With the feed, and wherever per-run polls keep up (the runs in flight and
    // the first polls of new ones fit in the budget), an end shows within a poll
    // interval and a little.
    let keep_up = (s.n as f64 / s.poll as f64 + s.end_rate()) * s.period() <= 1.0;
    if let Some((_, p99, _)) = f.delay
        && (s.feed || keep_up)
    {
        // A lagging list shows an end that much later; a burst has 5 s more.
        let target = s.poll as f64
            + s.list_lag as f64
            + match s.shape {
                Shape::Steady => 2.0,
                Shape::Burst(_) => 5.0,
            };
        check(
            p99 <= target,
            format!("end -> status p99 {p99:.1}s over {target:.0}s"),
        );
        check(
            f.unseen == 0,
            format!("{} ended runs never showed it", f.unseen),
        );
    }
    // A stop reaches Amperity within 2 s of its request, burst or not.
    if f.stops > 0 {
        check(
            f.stops_lost == 0,
            format!(
                "{} of {} stops never reached Amperity",
                f.stops_lost, f.stops
            ),
        );
        // From the operator's decision (the target's wording; stopRequestedAt is
        // to the second, rounded down, so this is an upper bound), or from the
        // request when no decision was seen.
        if let Some(latency) = f.stop_after_decision.or(f.stop_latency) {
            check(
                latency <= 2.0,
                format!("a stop reached Amperity {latency:.1}s after its decision, over 2 s"),
            );
        }
    }
    if s.n >= 10_000 {
        check(
            f.peak_rss <= 64.0,
            format!("peak RSS {:.1} MiB over 64 MiB", f.peak_rss),
        );
        check(
            f.cpu_cores < 0.2,
            format!("{:.3} CPU cores, over 0.2", f.cpu_cores),
        );
    }
    problems
}
