use super::*;

#[test]
fn backoff_stays_within_its_ceiling() {
    for attempt in 0..12 {
        let ceiling = backoff_ceiling(attempt);
        for _ in 0..50 {
            assert!(backoff(attempt) <= ceiling);
        }
    }
}

#[test]
fn retry_after_forms() {
    let now: jiff::Timestamp = "2025-04-18T06:00:00Z".parse().unwrap();
    assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
    assert_eq!(
        parse_retry_after("Fri, 18 Apr 2025 06:00:10 GMT", now),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        parse_retry_after("Fri, 18 Apr 2025 05:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    for absurd in [
        "9999999999999999999",
        "99999999999999999999999999",
        "Wed, 01 Jan 3000 00:00:00 GMT",
    ] {
        assert_eq!(parse_retry_after(absurd, now), Some(MAX_PAUSE), "{absurd}");
    }
}

/// `turn` is due `expected` after `base`, within a millisecond.
fn due_after(turn: &Turn, base: Instant, expected: Duration) {
    let at = turn.due().saturating_duration_since(base);
    let off = at.abs_diff(expected);
    assert!(
        off < Duration::from_millis(2),
        "{turn:?}: due {at:?} after the base, expected {expected:?}"
    );
}

#[test]
fn an_absurd_pause_is_capped_not_a_panic() {
    let budget = Budgets::new(10).for_tenant("t");
    budget.pause(Duration::MAX);
    let turn = budget.reserve();
    assert!(turn.wait() <= MAX_PAUSE && turn.wait() > MAX_PAUSE - Duration::from_secs(1));
    // An urgent turn also waits out the pause, and is not later than it.
    let urgent = budget.reserve_urgent();
    assert!(urgent.wait() <= MAX_PAUSE);
}

#[test]
fn a_burst_of_urgent_turns_is_spread_out() {
    let budget = Budgets::new(5).for_tenant("t");
    let turns: Vec<Turn> = (0..64).map(|_| budget.reserve_urgent()).collect();
    for pair in turns.windows(2) {
        assert_eq!(pair[1].due() - pair[0].due(), Duration::from_millis(206));
    }
    // The last of 64 starts at 5/s is 13 s out: it waits outside any reconcile.
    assert!(turns[63].wait() > Duration::from_secs(12));
}

#[test]
fn urgent_turns_go_first_and_every_routine_turn_to_come_makes_room() {
    let budget = Budgets::new(10).for_tenant("t");
    let routine: Vec<Turn> = (0..20).map(|_| budget.reserve()).collect();
    let base = routine[0].due();
    let urgent = budget.reserve_urgent();
    // The first routine turn was due at once and goes as it was; the urgent
    // turn comes a turn after it, and each of the others moved back one turn.
    due_after(&urgent, base, Duration::from_millis(103));
    due_after(&routine[1], base, Duration::from_millis(2 * 103));
    due_after(&routine[19], base, Duration::from_millis(20 * 103));
    let next = budget.reserve();
    due_after(&next, base, Duration::from_millis(21 * 103));
}

#[test]
fn a_promoted_turn_goes_first_and_its_place_goes_to_the_next_reservation() {
    let budget = Budgets::new(5).for_tenant("t");
    let turns: Vec<Turn> = (0..50).map(|_| budget.reserve()).collect();
    let base = turns[0].due();
    let far = turns[40].clone();
    assert!(far.wait() > Duration::from_secs(8));
    far.promote();
    // Whoever holds the turn (a clone of it) sees it urgent.
    let promoted = &turns[40];
    assert!(!promoted.is_routine());
    // Right after the turn already due; every routine turn still to come made
    // room for it (none moves earlier: nobody holding a timer comes late).
    due_after(promoted, base, Duration::from_millis(206));
    due_after(&turns[1], base, Duration::from_millis(2 * 206));
    due_after(&turns[41], base, Duration::from_millis(42 * 206));
    due_after(&turns[49], base, Duration::from_millis(50 * 206));
    // The place given up is the next reservation's, ahead of a new one at the end.
    let next = budget.reserve();
    due_after(&next, base, Duration::from_millis(41 * 206));
    let after = budget.reserve();
    due_after(&after, base, Duration::from_millis(51 * 206));
    // A turn already due is used as it is.
    turns[0].promote();
    assert!(turns[0].is_routine());
}

#[test]
fn the_backlog_is_how_long_a_routine_turn_reserved_now_would_wait() {
    let budget = Budgets::new(5).for_tenant("t");
    assert_eq!(budget.backlog(), Duration::ZERO);
    let turns: Vec<Turn> = (0..10).map(|_| budget.reserve()).collect();
    let backlog = budget.backlog();
    assert!(
        backlog > Duration::from_millis(2_000) && backlog <= Duration::from_millis(2_060),
        "{backlog:?}"
    );
    // An urgent turn adds one.
    budget.reserve_urgent();
    assert!(budget.backlog() > backlog + Duration::from_millis(200));
    drop(turns);
}

#[test]
fn a_released_turn_moves_nobody_and_is_taken_by_the_next_reservation() {
    let budget = Budgets::new(5).for_tenant("t");
    let turns: Vec<Turn> = (0..50).map(|_| budget.reserve()).collect();
    let base = turns[0].due();
    let urgent = budget.reserve_urgent();
    due_after(&urgent, base, Duration::from_millis(206));
    turns[40].clone().release();
    turns[45].clone().release();
    due_after(&turns[39], base, Duration::from_millis(40 * 206));
    due_after(&turns[41], base, Duration::from_millis(42 * 206));
    // The latest place given up first (the fairest: about a whole queue away).
    due_after(&budget.reserve(), base, Duration::from_millis(46 * 206));
    due_after(&budget.reserve(), base, Duration::from_millis(41 * 206));
    due_after(&budget.reserve(), base, Duration::from_millis(51 * 206));
    // An urgent turn has nothing to give back.
    budget.reserve_urgent().release();
}

#[test]
fn turns_are_handed_out_a_period_apart_in_order() {
    let budget = Budgets::new(5).for_tenant("t");
    let turns: Vec<Turn> = (0..50).map(|_| budget.reserve()).collect();
    // 5 per 1.03 s, the window the gate counts over. (The first is due at once:
    // once due, a turn's moment is no longer kept.)
    for pair in turns[1..].windows(2) {
        assert_eq!(pair[1].due() - pair[0].due(), Duration::from_millis(206));
    }
    // The fiftieth request of a 5/s budget goes about ten seconds out (49 turns).
    let last = turns.last().unwrap().wait();
    assert!(
        last > Duration::from_millis(9_994) && last <= Duration::from_millis(10_094),
        "{last:?}"
    );
}

#[derive(Clone, Debug)]
enum Op {
    /// A routine turn in lane 0 (the default), 1 or 2.
    Routine(usize),
    Urgent,
    /// Promote the n-th routine turn handed out (if any).
    Promote(usize),
    Pause(u64),
    /// Let this many milliseconds pass.
    Wait(u64),
    /// The gate passes a request now, with this many more waiting there.
    Gate(u32),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0usize..3).prop_map(Op::Routine),
        2 => Just(Op::Urgent),
        2 => any::<usize>().prop_map(Op::Promote),
        1 => (0u64..5_000).prop_map(Op::Pause),
        3 => (0u64..3_000).prop_map(Op::Wait),
        1 => (0u32..20).prop_map(Op::Gate),
    ]
}

proptest::proptest! {
    /// Whatever happens, a routine turn's moment never comes earlier than it
    /// was when last looked at (its holder sleeps on that moment: an earlier
    /// one would be missed, and the slot would go unused while the holder
    /// comes late, together with someone else), and turns waiting in the
    /// queue stay at least a period apart, in order.
    #[test]
    fn routine_turns_never_move_earlier_and_stay_spaced(ops in proptest::collection::vec(op(), 1..120)) {
        let period = Duration::from_millis(103);
        let start = Instant::now();
        let mut now = start;
        let mut paused = start;
        let mut schedule = Schedule {
            head_due: start,
            lanes: Lanes::default(),
            next_urgent: start,
            next_wake: start,
            last_due: None,
            gate_free: start,
        };
        // Each routine reservation: its place, the moment last seen, and
        // whether it was given up (for an urgent turn).
        let mut holders: Vec<((&str, u64), Option<Instant>, bool)> = Vec::new();
        // The moment each urgent request is planned to pass the gate.
        let mut urgent_moments: Vec<Instant> = Vec::new();
        for op in ops {
            match op {
                Op::Routine(lane) => {
                    let lane = ["", "team-a", "team-b"][lane];
                    let seq = schedule.routine(now, paused.max(now), period, lane);
                    holders.push(((lane, seq), schedule.due(lane, seq, period), false));
                }
                Op::Urgent => {
                    let at = schedule.urgent(now, paused.max(now), period);
                    proptest::prop_assert!(at >= now && at >= paused);
                    urgent_moments.push(at);
                }
                Op::Promote(n) if !holders.is_empty() => {
                    let k = n % holders.len();
                    let ((lane, seq), _, given_up) = holders[k];
                    if !given_up {
                        // Given up only while still to come (a turn already
                        // due is used as it is).
                        if schedule.due(lane, seq, period).is_some_and(|d| d > now) {
                            holders[k].2 = true;
                        }
                        urgent_moments.push(schedule.promote((lane, seq), now, paused.max(now), period));
                    }
                }
                Op::Promote(_) => {}
                Op::Pause(ms) => {
                    paused = paused.max(now + Duration::from_millis(ms));
                    schedule.pause(now, paused, period);
                }
                Op::Wait(ms) => now += Duration::from_millis(ms),
                Op::Gate(waiting) => {
                    schedule.gate_busy_until(now, now + period * (waiting + 1), period)
                }
            }
            let mut waiting = Vec::new();
            for ((lane, seq), last, given_up) in holders.iter_mut() {
                if *given_up {
                    continue;
                }
                let due = schedule.due(lane, *seq, period);
                if let (Some(before), Some(after)) = (*last, due) {
                    proptest::prop_assert!(after >= before, "turn {seq} moved from {before:?} to {after:?}");
                }
                if let Some(after) = due {
                    waiting.push(after);
                    *last = Some(after);
                }
            }
            waiting.sort();
            for pair in waiting.windows(2) {
                proptest::prop_assert!(pair[1] >= pair[0] + period, "{waiting:?}");
            }
        }
        // No two requests are planned closer than a period: the gate passes
        // each in its turn, and none waits there for another's.
        let mut planned: Vec<Instant> = holders
            .iter()
            .filter(|(_, _, given_up)| !given_up)
            .filter_map(|(_, due, _)| *due)
            .chain(urgent_moments)
            .collect();
        planned.sort();
        for pair in planned.windows(2) {
            proptest::prop_assert!(
                pair[1] >= pair[0] + period,
                "{:?} apart",
                pair[1] - pair[0]
            );
        }
    }
}

#[tokio::test]
async fn permits_are_evenly_spaced() {
    let budget = Budgets::new(10).for_tenant("t");
    let started = Instant::now();
    for _ in 0..6 {
        budget.acquire(None).await;
    }
    // Six permits at 10/s with no burst: the sixth comes 500 ms after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(490),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn polls_in_their_turn_do_not_queue_at_the_gate() {
    // Sixty turns reserved at once, each used when due: were turns handed out
    // faster than the gate passes them, each would wait a little longer than
    // the one before (the sixtieth about 180 ms at 10/s) and the backlog would
    // grow for as long as the schedule stays full.
    let budget = Budgets::new(10).for_tenant("t");
    let turns: Vec<Turn> = (0..60).map(|_| budget.reserve()).collect();
    let waits = futures::future::join_all(turns.into_iter().map(|turn| {
        let budget = budget.clone();
        async move {
            let due = turn.due();
            budget.acquire(Some(turn)).await;
            Instant::now().saturating_duration_since(due)
        }
    }))
    .await;
    // What the test is about is growth: the sixtieth turn must not be later than
    // the first ones by the backlog (about 180 ms). Lateness every turn shares (a
    // loaded machine waking the task late) is not the gate's, so medians are compared.
    let median = |w: &[Duration]| {
        let mut w = w.to_vec();
        w.sort();
        w[w.len() / 2]
    };
    let (first, last) = (median(&waits[..10]), median(&waits[50..]));
    assert!(
        last.saturating_sub(first) < Duration::from_millis(60),
        "lateness grew from {first:?} to {last:?}: {waits:?}"
    );
}

#[tokio::test]
async fn urgent_requests_into_a_full_schedule_do_not_pile_up_at_the_gate() {
    // Forty routine turns reserved (four seconds of a 10/s budget), then ten
    // urgent requests. Each waits its own turn and the routine turns not yet
    // due move back to make room: no request waits at the gate longer than the
    // one turn that was already due, instead of a backlog growing with every
    // urgent request (ten turns, a second, for the last routine turns).
    let budget = Budgets::new(10).for_tenant("t");
    let routine: Vec<Turn> = (0..40).map(|_| budget.reserve()).collect();
    let urgent: Vec<Turn> = (0..10).map(|_| budget.reserve_urgent()).collect();
    let all = routine.into_iter().chain(urgent);
    let started = Instant::now();
    let waits = futures::future::join_all(all.map(|turn| {
        let budget = budget.clone();
        async move {
            budget.acquire(Some(turn.clone())).await;
            // How long after its (final) moment the request passed the gate.
            Instant::now().saturating_duration_since(turn.due())
        }
    }))
    .await;
    let worst = waits.iter().max().unwrap();
    assert!(*worst < Duration::from_millis(130), "{waits:?}");
    // Fifty requests at 10 per 1.03 s: about five seconds, not more.
    assert!(started.elapsed() < Duration::from_millis(5_200));
}

#[tokio::test]
async fn a_gate_behind_moves_the_turns_to_come_instead_of_holding_requests() {
    // Six requests reach the gate at once, outside the schedule (requests that
    // came late, all together): the gate is behind by five turns. The routine
    // turns still to come move back by as much, to wait on their timers rather
    // than in the gate's queue (each holding a reconcile), and an urgent turn
    // goes after them, not behind a queue it cannot see.
    let budget = Budgets::new(10).for_tenant("t");
    let routine: Vec<Turn> = (0..10).map(|_| budget.reserve()).collect();
    let before = routine[9].due();
    let started = Instant::now();
    futures::future::join_all((0..6).map(|_| budget.acquire(Some(Turn::due_now())))).await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    let moved = routine[9].due() - before;
    assert!(moved >= Duration::from_millis(400), "{moved:?}");
    let urgent = budget.reserve_urgent();
    assert!(
        urgent.due() >= started + Duration::from_millis(500),
        "{urgent:?}"
    );
}

#[tokio::test]
async fn unscheduled_requests_go_first_and_push_the_schedule_back() {
    let budget = Budgets::new(10).for_tenant("t");
    let first = budget.reserve();
    let second = budget.reserve();
    let base = first.due();
    let started = Instant::now();
    budget.acquire(None).await;
    // Right after the routine turn that was due, ahead of the one still to come,
    // which made room for it.
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(150), "{waited:?}");
    due_after(&second, base, Duration::from_millis(2 * 103));
}

#[test]
fn a_pause_moves_every_turn_to_come_past_it() {
    let budget = Budgets::new(10).for_tenant("t");
    let early = budget.reserve();
    let later = budget.reserve();
    let base = early.due();
    budget.pause(Duration::from_secs(3));
    let turn = budget.reserve();
    assert!(turn.wait() > Duration::from_millis(2_900), "{turn:?}");
    // Turns reserved before the pause move past it, keeping their spacing.
    assert!(later.wait() > Duration::from_millis(2_900), "{later:?}");
    due_after(&turn, later.due(), Duration::from_millis(103));
    assert!(later.due() - base >= Duration::from_millis(2_990));
}

#[test]
fn a_429_without_retry_after_lowers_the_rate_and_one_with_it_only_pauses() {
    let budget = Budgets::new(5).for_tenant("t");
    let full = budget.period();
    budget.rate_limited(Some(Duration::from_millis(1)), 0);
    assert!(!budget.lowered());
    assert_eq!(budget.period(), full);
    budget.rate_limited(None, 0);
    assert!(budget.lowered());
    assert!((budget.rate() - 2.5).abs() < 1e-9, "{}", budget.rate());
    let lowered = budget.period().as_micros().abs_diff(2 * full.as_micros());
    assert!(lowered <= 1, "{:?} against {full:?}", budget.period());
}

#[tokio::test]
async fn permits_at_a_lowered_rate_are_spaced_by_it() {
    let budget = Budgets::new(10).for_tenant("t");
    // 10/s halved twice: 2.5/s, a permit every 400 ms.
    budget.rate_limited(None, 0);
    budget
        .adaptive
        .lock()
        .unwrap()
        .rate_limited(Instant::now() + Duration::from_secs(2));
    budget.pause(Duration::ZERO);
    let started = Instant::now();
    for _ in 0..3 {
        budget.acquire(None).await;
    }
    // At the configured 10/s the third would come 200 ms after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(790),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_tenant_clock_follows_its_date_headers_within_bounds() {
    let budget = Budgets::new(5).for_tenant("t");
    let local: jiff::Timestamp = "2026-04-01T12:00:00Z".parse().unwrap();
    assert_eq!(budget.in_tenant_clock(local), local, "nothing told yet");
    // Amperity's clock five minutes behind ours.
    budget.observe_date("Wed, 01 Apr 2026 11:55:00 GMT", local);
    let later: jiff::Timestamp = "2026-04-01T13:00:00Z".parse().unwrap();
    assert_eq!(
        budget.in_tenant_clock(later),
        "2026-04-01T12:55:00Z".parse::<jiff::Timestamp>().unwrap()
    );
    // Garbage and absurd dates change nothing; saturating at the ends of time.
    budget.observe_date("yesterday", local);
    budget.observe_date("Fri, 01 Apr 2106 12:00:00 GMT", local);
    assert_eq!(
        budget.in_tenant_clock(later),
        "2026-04-01T12:55:00Z".parse::<jiff::Timestamp>().unwrap()
    );
    assert_eq!(
        budget.in_tenant_clock(jiff::Timestamp::MIN),
        jiff::Timestamp::MIN
    );
}

#[test]
fn urgent_turns_never_wait_behind_wakes_and_routine_turns_wait_for_both() {
    let budget = Budgets::new(5).for_tenant("t");
    let period = budget.period();
    let ms = Duration::from_millis;
    // A burst of ends: six hundred reads queued (two minutes at 5/s).
    let wakes: Vec<Turn> = (0..600).map(|_| budget.reserve_wake()).collect();
    let last_wake = wakes.last().unwrap().due();
    assert!(last_wake > Instant::now() + period * 590);
    // A stop decided now goes at once, not after them.
    let stop = budget.reserve_urgent();
    assert!(stop.wait() <= period * 2, "{stop:?}");
    // The wakes to come make room for it; routine polls come after every wake.
    let next = budget.reserve_wake();
    assert!(next.due() + ms(1) >= last_wake + period * 2, "{next:?}");
    let routine = budget.reserve();
    assert!(routine.due() + ms(1) >= next.due() + period, "{routine:?}");
}

/// In simulated time at 10 requests a second: namespace "b" keeps 10,000 runs
/// waiting for their polls (each polled run asks again at once: its
/// pollInterval is far shorter than the queue), while namespace "a"'s ten runs
/// each ask `interval` after their last poll, in `a_lane`. Returns how long a's
/// polls waited for their turns (the worst), how many a's runs got, and how
/// many turns b got.
fn ten_beside_ten_thousand(a_lane: &str, interval: Duration) -> (Duration, usize, usize) {
    let period = Duration::from_millis(103);
    let start = Instant::now();
    let mut schedule = Schedule {
        head_due: start,
        lanes: Lanes::default(),
        next_urgent: start,
        next_wake: start,
        last_due: None,
        gate_free: start,
    };
    let mut b_turns = 0usize;
    let mut b_waiting = 0u64;
    let mut next_ask: Vec<Instant> = (0..10).map(|i| start + period * i).collect();
    let mut held: Vec<Option<(u64, Instant)>> = vec![None; 10];
    let (mut worst, mut polls) = (Duration::ZERO, 0usize);
    let step = Duration::from_millis(10);
    let mut now = start;
    while now < start + Duration::from_secs(600) {
        schedule.advance(now, period);
        let b_now = schedule.lanes.waiting_in("b");
        if a_lane != "b" {
            b_turns += usize::try_from(b_waiting.saturating_sub(b_now)).unwrap();
        }
        for _ in b_now..10_000 {
            schedule.routine(now, now, period, "b");
        }
        for i in 0..10 {
            match held[i] {
                None if now >= next_ask[i] => {
                    held[i] = Some((schedule.routine(now, now, period, a_lane), now));
                }
                Some((seq, asked)) if schedule.due(a_lane, seq, period).is_none() => {
                    worst = worst.max(now - asked);
                    polls += 1;
                    held[i] = None;
                    next_ask[i] = now + interval;
                }
                _ => {}
            }
        }
        b_waiting = schedule.lanes.waiting_in("b");
        now += step;
    }
    (worst, polls, b_turns)
}

/// Twenty turns at 10 requests a second, and the simulation's step.
fn period_of_20_turns() -> Duration {
    Duration::from_millis(20 * 103 + 10)
}

#[test]
fn a_namespace_with_ten_runs_is_polled_at_its_interval_beside_one_with_ten_thousand() {
    let interval = Duration::from_secs(30);
    let (worst, polls, b_turns) = ten_beside_ten_thousand("a", interval);
    // a's ten runs ask within a second of each other; taking every other turn,
    // the last of them waits its nine neighbours' turns and b's ten: about a
    // second on a 30 s interval (in one lane with b it would be 1,030 s).
    assert!(worst <= period_of_20_turns(), "waited up to {worst:?}");
    // Ten runs, a poll every 30 s and a fraction, for 600 s.
    assert!(polls >= 10 * 19, "{polls} polls");
    // b gets every other turn: 600 s at 103 ms is about 5,825 turns.
    assert!(b_turns >= 5_825 - polls - 20, "b got {b_turns} turns");
    // The same runs queued behind b's (one lane, as before namespaces took
    // turns): the first poll would wait some 1,030 s, past the whole test.
    let (_, polls, _) = ten_beside_ten_thousand("b", interval);
    assert_eq!(polls, 0);
}

#[test]
fn a_connections_lower_rate_spaces_every_turn_of_its_tenant() {
    let budgets = Budgets::new(10);
    let budget = budgets.for_tenant("acme|amperity.com");
    assert_eq!(budget.period(), WINDOW / 10);
    budget.limit("ClusterAmperityConnection/acme", Some(2));
    // Every caller of the tenant's one budget, whatever its credentials.
    let same = budgets.for_tenant("acme|amperity.com");
    assert_eq!(same.period(), WINDOW / 2);
    let first = same.reserve_in("team-a");
    let second = same.reserve_in("team-a");
    let apart = second.due().saturating_duration_since(first.due());
    assert!(apart >= WINDOW / 2 - Duration::from_millis(2), "{apart:?}");
    budget.limit("ClusterAmperityConnection/acme", None);
    assert_eq!(same.period(), WINDOW / 10);
}
