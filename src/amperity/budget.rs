//! The per-tenant request budget: one evenly spaced rate limiter per tenant shared
//! by every request of every resource, a schedule of turns that routine polls
//! reserve ahead, a tenant-wide pause after a 429, and exponential backoff with
//! full jitter.
//!
//! Every request passes the gate ([`Budget::acquire`]): fair turns, the limiter and
//! a sliding-window guard. With more runs than the budget polls in a poll interval,
//! most runs are waiting for their turn at any moment; holding a future for each
//! would cost memory per waiting run. So a poll first reserves a turn in the
//! schedule ([`Budget::reserve`]), and the caller comes back when it is due, holding
//! nothing but the reservation meanwhile.
//!
//! Routine turns are places in a queue, not fixed moments: an urgent request (a
//! start, a stop, a search, the read of a run the change feed reports ended) goes
//! ahead of every routine turn not yet due, and each of those moves back by one
//! turn. Were routine turns fixed moments, urgent requests arriving while the
//! schedule is full would be extra demand at the gate, where requests would pile
//! up, each holding a reconcile, for as long as the schedule reaches ahead.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The window the rate is counted over, with a margin for network jitter.
const WINDOW: Duration = Duration::from_millis(1030);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// The longest a `Retry-After` (or any pause) holds a tenant back: a server may ask
/// for anything, and "9999999999999999999 seconds" must neither stop the tenant for
/// good nor overflow a clock.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// One tenant's budget.
pub struct Budget {
    limiter: DefaultDirectRateLimiter,
    /// When the last `rate` permits were granted: a permit waits until the oldest
    /// is a second (plus a margin for network jitter) old, so that no 1-second
    /// window, as the server counts it, ever holds more than `rate` requests.
    recent: Mutex<std::collections::VecDeque<Instant>>,
    per_second: usize,
    paused_until: Mutex<Option<Instant>>,
    /// Waiters at the gate take turns in arrival order (tokio's mutex is fair).
    queue: tokio::sync::Mutex<()>,
    /// Turns are this far apart: what the sliding-window guard lets through
    /// (`WINDOW` / rate), not one second / rate. Handed out faster than the gate
    /// passes them, turns would pile up at the gate, every poll would wait there
    /// longer than the last, and the pile would hold the controller's reconcile
    /// slots until requeued runs could not even start on time.
    period: Duration,
    schedule: Mutex<Schedule>,
    /// Requests due and waiting at the gate.
    at_gate: std::sync::atomic::AtomicUsize,
}

/// The queue of routine turns and the spacing of urgent ones.
///
/// Routine turns are numbered in the order they were reserved; turn `n` is due at
/// `head_due` plus one period for every turn between the head and `n`. An urgent
/// turn moves `head_due` back by one period: every routine turn not yet due makes
/// room for it. No routine turn ever moves earlier: its holder sleeps until the
/// moment it was told, and a turn that moved earlier would find nobody at the
/// gate, leaving its time unused while every other turn is taken.
struct Schedule {
    /// The first routine turn not yet due (or `next_seq` when none is waiting).
    head_seq: u64,
    /// When `head_seq` is due.
    head_due: Instant,
    /// The number the next routine turn gets.
    next_seq: u64,
    /// Routine turns still to come that their holders gave up (for an urgent turn):
    /// places the next reservations take, latest first, before new ones at the end.
    holes: BTreeSet<u64>,
    /// The first urgent turn not yet handed out: urgent requests go ahead of routine
    /// ones, but are spaced too, so that a burst of them (many starts to one tenant)
    /// is spread out instead of piling up at the gate, each holding a reconcile.
    next_urgent: Instant,
    /// When the last routine turn that came due was due: an urgent turn goes a
    /// period after it. Closer, the two would meet at the gate, one would wait for
    /// the other, and with every turn taken the time would never be made up.
    last_due: Option<Instant>,
    /// The earliest the gate can pass another request, as of the last one it
    /// passed (and those still waiting there).
    gate_free: Instant,
}

impl Schedule {
    /// Passes every routine turn already due, so that what changes next moves only
    /// the turns still to come.
    fn advance(&mut self, now: Instant, period: Duration) {
        while self.head_seq < self.next_seq && self.head_due <= now {
            if !self.holes.remove(&self.head_seq) {
                self.last_due = Some(self.head_due);
            }
            self.head_due += period;
            self.head_seq += 1;
        }
        if self.head_seq == self.next_seq {
            self.head_due = self.head_due.max(now);
        }
    }

    /// When routine turn `seq` is due; None once it is (or it was given up).
    fn due(&self, seq: u64, period: Duration) -> Option<Instant> {
        if seq < self.head_seq || self.holes.contains(&seq) {
            return None;
        }
        let ahead = u32::try_from(seq - self.head_seq).unwrap_or(u32::MAX);
        Some(
            self.head_due
                .checked_add(period.saturating_mul(ahead))
                .unwrap_or(self.head_due),
        )
    }

    /// An urgent turn: the next urgent slot (after any pause, and a period after
    /// the last routine turn that came due), with every routine turn not yet due
    /// moved back one period to make room for it.
    fn urgent(&mut self, now: Instant, paused: Instant, period: Duration) -> Instant {
        self.advance(now, period);
        let after_routine = self.last_due.map_or(now, |due| due + period);
        let at = self
            .next_urgent
            .max(now)
            .max(paused)
            .max(after_routine)
            .max(self.gate_free);
        self.next_urgent = at + period;
        self.head_due = self.head_due.max(paused).max(at) + period;
        at
    }

    /// The next routine turn (after any pause): the latest place given up, or a
    /// new one at the end.
    fn routine(&mut self, now: Instant, paused: Instant, period: Duration) -> u64 {
        self.advance(now, period);
        self.head_due = self.head_due.max(paused);
        if let Some(seq) = self.holes.pop_last() {
            return seq;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Routine turn `seq` is given up: its place stays (nobody moves) for the
    /// next reservation to take.
    fn release(&mut self, seq: u64, now: Instant, period: Duration) {
        self.advance(now, period);
        if seq >= self.head_seq && seq < self.next_seq {
            self.holes.insert(seq);
        }
    }

    /// Routine turn `seq` is given up for an urgent turn ahead of it.
    fn promote(&mut self, seq: u64, now: Instant, paused: Instant, period: Duration) -> Instant {
        self.release(seq, now, period);
        self.urgent(now, paused, period)
    }

    /// Nothing passes until `until`: routine turns not yet due move back past it.
    fn pause(&mut self, now: Instant, until: Instant, period: Duration) {
        self.advance(now, period);
        self.head_due = self.head_due.max(until);
    }

    /// The gate can pass nothing more before `free` (it is behind: requests came
    /// late, or together): turns still to come move back to it. Requests waiting
    /// at the gate each hold a reconcile; a turn moved back holds nothing. With
    /// every turn taken, a gate behind would otherwise never catch up, and urgent
    /// requests would queue behind routine ones that came late.
    fn gate_busy_until(&mut self, now: Instant, free: Instant, period: Duration) {
        self.advance(now, period);
        self.gate_free = self.gate_free.max(free);
        self.head_due = self.head_due.max(free);
    }
}

/// A reserved place at the gate: a moment (urgent turns), or a place in the queue
/// of routine turns, whose moment moves back while urgent requests go ahead.
/// Clones share the place: a turn promoted through one clone is promoted for
/// whoever waits on another (the change feed promotes the turn a run waits on,
/// even while that run waits for it in a reconcile).
#[derive(Clone)]
pub struct Turn(Arc<Mutex<TurnAt>>);

#[derive(Clone)]
enum TurnAt {
    Moment(Instant),
    Routine { seq: u64, budget: Arc<Budget> },
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wait = self.wait();
        match &*self.0.lock().unwrap() {
            TurnAt::Moment(_) => write!(f, "Turn(urgent, due in {wait:?})"),
            TurnAt::Routine { seq, .. } => write!(f, "Turn(routine #{seq}, due in {wait:?})"),
        }
    }
}

impl Turn {
    fn at(at: TurnAt) -> Turn {
        Turn(Arc::new(Mutex::new(at)))
    }

    /// A turn due at once (for callers that keep no budget, such as test doubles).
    pub fn due_now() -> Turn {
        Turn::at(TurnAt::Moment(Instant::now()))
    }

    /// When the turn is due, as the schedule stands now (a routine turn may move
    /// later while urgent requests go ahead of it).
    pub fn due(&self) -> Instant {
        let at = self.0.lock().unwrap().clone();
        match at {
            TurnAt::Moment(at) => at,
            TurnAt::Routine { seq, budget } => budget.routine_due(seq),
        }
    }

    /// How long until the turn is due (zero once it is).
    pub fn wait(&self) -> Duration {
        self.due().saturating_duration_since(Instant::now())
    }

    /// A routine turn.
    pub fn is_routine(&self) -> bool {
        matches!(*self.0.lock().unwrap(), TurnAt::Routine { .. })
    }

    /// Whether `other` is this very turn (a clone of it).
    pub fn same(&self, other: &Turn) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Makes the turn urgent, for everyone who holds it: a routine turn still to
    /// come is given up (its place goes to the next reservation) for an urgent
    /// turn ahead of the routine ones. Any other turn stays as it is.
    pub fn promote(&self) {
        let mut at = self.0.lock().unwrap();
        if let TurnAt::Routine { seq, budget } = &*at
            && let Some(urgent) = budget.promote(*seq)
        {
            *at = TurnAt::Moment(urgent);
        }
    }

    /// Gives up a routine turn still to come (an urgent turn was handed out for the
    /// same request). Its place goes to the next reservation; nobody moves.
    pub fn release(&self) {
        let at = self.0.lock().unwrap().clone();
        if let TurnAt::Routine { seq, budget } = at {
            let now = Instant::now();
            budget
                .schedule
                .lock()
                .unwrap()
                .release(seq, now, budget.period);
        }
    }
}

impl Budget {
    fn new(per_second: NonZeroU32) -> Self {
        // A burst of one spaces requests evenly, so no 1-second window ever holds
        // more than the configured rate (a burst of N would allow almost 2N).
        let period = Duration::from_secs(1) / per_second.get();
        let quota = Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(NonZeroU32::MIN);
        let now = Instant::now();
        Budget {
            limiter: RateLimiter::direct(quota),
            recent: Mutex::new(std::collections::VecDeque::new()),
            per_second: per_second.get() as usize,
            paused_until: Mutex::new(None),
            queue: tokio::sync::Mutex::new(()),
            period: WINDOW / per_second.get(),
            schedule: Mutex::new(Schedule {
                head_seq: 0,
                head_due: now,
                next_seq: 0,
                holes: BTreeSet::new(),
                next_urgent: now,
                last_due: None,
                gate_free: now,
            }),
            at_gate: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How far apart turns are.
    pub fn period(&self) -> Duration {
        self.period
    }

    fn paused_or(&self, now: Instant) -> Instant {
        self.paused_until.lock().unwrap().unwrap_or(now).max(now)
    }

    /// Reserves the next free turn in the routine queue (after any pause).
    pub fn reserve(self: &Arc<Self>) -> Turn {
        let now = Instant::now();
        let paused = self.paused_or(now);
        let seq = self
            .schedule
            .lock()
            .unwrap()
            .routine(now, paused, self.period);
        Turn::at(TurnAt::Routine {
            seq,
            budget: self.clone(),
        })
    }

    /// Reserves a turn for a request someone is waiting on (a start, a stop, a
    /// search): the earliest urgent slot after any pause, ahead of routine turns,
    /// every one of which not yet due moves back one turn to make room for it.
    pub fn reserve_urgent(&self) -> Turn {
        let now = Instant::now();
        let paused = self.paused_or(now);
        let at = self
            .schedule
            .lock()
            .unwrap()
            .urgent(now, paused, self.period);
        Turn::at(TurnAt::Moment(at))
    }

    /// Routine turn `seq` made urgent (see [`Turn::promote`]): the urgent turn's
    /// moment, or None when `seq` is already due (it is used as it is).
    fn promote(&self, seq: u64) -> Option<Instant> {
        let now = Instant::now();
        let paused = self.paused_or(now);
        let mut schedule = self.schedule.lock().unwrap();
        schedule.due(seq, self.period).filter(|due| *due > now)?;
        Some(schedule.promote(seq, now, paused, self.period))
    }

    fn routine_due(&self, seq: u64) -> Instant {
        let schedule = self.schedule.lock().unwrap();
        schedule
            .due(seq, self.period)
            .unwrap_or_else(|| schedule.head_due.min(Instant::now()))
    }

    /// How long a routine turn reserved now would wait: zero while per-run polls
    /// go when they are due, growing while they queue.
    pub fn backlog(&self) -> Duration {
        let now = Instant::now();
        let mut schedule = self.schedule.lock().unwrap();
        schedule.advance(now, self.period);
        schedule
            .due(schedule.next_seq, self.period)
            .map_or(Duration::ZERO, |due| due.saturating_duration_since(now))
    }

    /// How much longer the tenant is paused after a 429, if it is.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().unwrap())?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Waits for a permit (and out any pause); returns how long it waited.
    ///
    /// With a reserved `turn`, first waits until it is due (a routine turn is
    /// checked again when its moment comes, as urgent requests may have moved it
    /// back). Without one (a retry, a list's next page: what a failure or a person
    /// is waiting on) the request takes an urgent turn.
    pub async fn acquire(&self, turn: Option<Turn>) -> Duration {
        let started = Instant::now();
        let turn = turn.unwrap_or_else(|| self.reserve_urgent());
        loop {
            let wait = turn.wait();
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        use std::sync::atomic::Ordering::SeqCst;
        self.at_gate.fetch_add(1, SeqCst);
        let _turn = self.queue.lock().await;
        loop {
            let pause = *self.paused_until.lock().unwrap();
            match pause {
                Some(until) if until > Instant::now() => {
                    tokio::time::sleep_until(until.into()).await
                }
                _ => break,
            }
        }
        self.limiter.until_ready().await;
        loop {
            let oldest_due = {
                let mut recent = self.recent.lock().unwrap();
                let now = Instant::now();
                while recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    recent.pop_front();
                }
                if recent.len() < self.per_second {
                    recent.push_back(now);
                    None
                } else {
                    recent.front().map(|t| *t + WINDOW)
                }
            };
            match oldest_due {
                None => break,
                Some(due) => tokio::time::sleep_until(due.into()).await,
            }
        }
        // This one passes; those still waiting pass a turn apart after it. (A
        // tenth of a turn is jitter, not a gate behind: moving the turns to come
        // for it would stretch every turn by it.)
        let waiting = self.at_gate.fetch_sub(1, SeqCst).saturating_sub(1);
        let now = Instant::now();
        let free = now
            + self
                .period
                .saturating_mul(u32::try_from(waiting + 1).unwrap_or(u32::MAX))
            - self.period / 10;
        self.schedule
            .lock()
            .unwrap()
            .gate_busy_until(now, free, self.period);
        started.elapsed()
    }

    /// Holds every request to this tenant back for `d` (after a 429), at most
    /// [`MAX_PAUSE`]: routine turns not yet due move back past the pause, keeping
    /// their spacing.
    pub fn pause(&self, d: Duration) {
        let now = Instant::now();
        let until = now.checked_add(d.min(MAX_PAUSE)).unwrap_or(now);
        let mut paused = self.paused_until.lock().unwrap();
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
        drop(paused);
        self.schedule.lock().unwrap().pause(now, until, self.period);
    }
}

/// Budgets by tenant key (tenant and base URL).
pub struct Budgets {
    per_second: NonZeroU32,
    by_tenant: Mutex<HashMap<String, Arc<Budget>>>,
}

impl Budgets {
    pub fn new(per_second: u32) -> Self {
        Budgets {
            per_second: NonZeroU32::new(per_second.clamp(1, 10)).expect("clamped to 1..=10"),
            by_tenant: Mutex::new(HashMap::new()),
        }
    }

    /// How far apart each tenant's turns are.
    pub fn period(&self) -> Duration {
        WINDOW / self.per_second.get()
    }

    pub fn for_tenant(&self, key: &str) -> Arc<Budget> {
        self.by_tenant
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Budget::new(self.per_second)))
            .clone()
    }
}

/// `base * 2^attempt`, capped: the longest wait of attempt `attempt`.
pub fn backoff_ceiling(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(BACKOFF_CAP)
}

/// Full jitter: a random wait between zero and [`backoff_ceiling`].
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(fastrand::u64(
        0..=backoff_ceiling(attempt).as_millis() as u64,
    ))
}

/// `Retry-After` as delay-seconds or an HTTP date, at most [`MAX_PAUSE`].
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // More digits than a u64 holds is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        Duration::try_from(at.duration_since(now)).unwrap_or_default()
    };
    Some(wait.min(MAX_PAUSE))
}

#[cfg(test)]
mod tests {
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
        Routine,
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
            4 => Just(Op::Routine),
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
                head_seq: 0,
                head_due: start,
                next_seq: 0,
                holes: BTreeSet::new(),
                next_urgent: start,
                last_due: None,
                gate_free: start,
            };
            // Each routine reservation: its place, the moment last seen, and
            // whether it was given up (for an urgent turn).
            let mut holders: Vec<(u64, Option<Instant>, bool)> = Vec::new();
            // The moment each urgent request is planned to pass the gate.
            let mut urgent_moments: Vec<Instant> = Vec::new();
            for op in ops {
                match op {
                    Op::Routine => {
                        let seq = schedule.routine(now, paused.max(now), period);
                        holders.push((seq, schedule.due(seq, period), false));
                    }
                    Op::Urgent => {
                        let at = schedule.urgent(now, paused.max(now), period);
                        proptest::prop_assert!(at >= now && at >= paused);
                        urgent_moments.push(at);
                    }
                    Op::Promote(n) if !holders.is_empty() => {
                        let k = n % holders.len();
                        let (seq, _, given_up) = holders[k];
                        if !given_up {
                            // Given up only while still to come (a turn already
                            // due is used as it is).
                            if schedule.due(seq, period).is_some_and(|d| d > now) {
                                holders[k].2 = true;
                            }
                            urgent_moments.push(schedule.promote(seq, now, paused.max(now), period));
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
                for (seq, last, given_up) in holders.iter_mut() {
                    if *given_up {
                        continue;
                    }
                    let due = schedule.due(*seq, period);
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
        let worst = waits.iter().max().unwrap();
        assert!(*worst < Duration::from_millis(60), "{waits:?}");
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
}
