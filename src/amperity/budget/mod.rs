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

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

mod adapt;
mod backoff;
mod lanes;
mod tenants;
mod turns;

pub use adapt::Adaptive;
pub use backoff::{backoff, backoff_ceiling, parse_retry_after};
pub use lanes::DEFAULT_LANE;
use lanes::Lanes;
pub use tenants::Budgets;
pub use turns::Turn;
use turns::{Schedule, TurnAt};

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
    /// The rate the tenant is sent: the configured budget, lowered after 429s
    /// that name no `Retry-After` (see [`Adaptive`]). Turns are `WINDOW` / rate
    /// apart: what the sliding-window guard lets through, not one second / rate.
    /// Handed out faster than the gate passes them, turns would pile up at the
    /// gate, every poll would wait there longer than the last, and the pile would
    /// hold the controller's reconcile slots until requeued runs could not even
    /// start on time.
    adaptive: Mutex<Adaptive>,
    /// When the gate last passed a request: while the rate is lowered, the next
    /// passes no sooner than a second / rate after it.
    last_pass: Mutex<Option<Instant>>,
    schedule: Mutex<Schedule>,
    /// Requests due and waiting at the gate.
    at_gate: std::sync::atomic::AtomicUsize,
    /// How far the tenant's clock (its answers' `Date`) is ahead of ours, as last
    /// seen.
    clock_offset: Mutex<Option<jiff::SignedDuration>>,
}

/// A `Date` further than this from our clock is not believed (a broken gateway
/// must not move the change feed's windows by years).
pub const MAX_CLOCK_OFFSET: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

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
            adaptive: Mutex::new(Adaptive::new(f64::from(per_second.get()), now)),
            last_pass: Mutex::new(None),
            schedule: Mutex::new(Schedule {
                head_due: now,
                lanes: Lanes::default(),
                next_urgent: now,
                next_wake: now,
                last_due: None,
                gate_free: now,
            }),
            at_gate: std::sync::atomic::AtomicUsize::new(0),
            clock_offset: Mutex::new(None),
        }
    }

    /// An answer came with `Date: date` at `local` (our clock): the tenant's clock
    /// is that far from ours. Unreadable or absurd dates are ignored.
    pub fn observe_date(&self, date: &str, local: jiff::Timestamp) {
        let Ok(at) = jiff::fmt::rfc2822::parse(date.trim()) else {
            return;
        };
        let offset = at.timestamp().duration_since(local);
        if offset.abs() <= MAX_CLOCK_OFFSET {
            *self.clock_offset.lock().unwrap() = Some(offset);
        }
    }

    /// `local` (a moment by our clock) by the tenant's clock, as far as its
    /// answers told; `local` itself before any told. (A `Date` has whole seconds:
    /// the result may be up to a second early.)
    pub fn in_tenant_clock(&self, local: jiff::Timestamp) -> jiff::Timestamp {
        let offset = *self.clock_offset.lock().unwrap();
        offset
            .and_then(|o| local.checked_add(o).ok())
            .unwrap_or(local)
    }

    /// How far apart turns are (at the rate the tenant is sent now).
    pub fn period(&self) -> Duration {
        WINDOW.div_f64(self.rate())
    }

    /// The rate the tenant is sent now, requests per second.
    pub fn rate(&self) -> f64 {
        self.adaptive.lock().unwrap().rate(Instant::now())
    }

    /// `who` (a connection) asks that the tenant be sent at most `per_second`
    /// (None: it no longer does); it holds for [`adapt::LIMIT_HOLDS`] unless asked again.
    pub fn limit(&self, who: &str, per_second: Option<u32>) {
        let rate = per_second.map(f64::from);
        self.adaptive
            .lock()
            .unwrap()
            .limit(who, rate, Instant::now());
    }

    /// Whether 429s lowered the rate below the configured budget.
    pub fn lowered(&self) -> bool {
        self.adaptive.lock().unwrap().lowered(Instant::now())
    }

    /// A 429 came: the tenant pauses for its `Retry-After`; without one, for a
    /// backoff of `attempt`, and its rate is lowered (see [`Adaptive`]).
    pub fn rate_limited(&self, retry_after: Option<Duration>, attempt: u32) {
        match retry_after {
            Some(wait) => self.pause(wait),
            None => {
                self.adaptive.lock().unwrap().rate_limited(Instant::now());
                self.pause(backoff(attempt));
            }
        }
    }

    fn paused_or(&self, now: Instant) -> Instant {
        self.paused_until.lock().unwrap().unwrap_or(now).max(now)
    }

    /// Reserves the next free turn in the routine queue (after any pause), in
    /// the lane of callers that name none.
    pub fn reserve(self: &Arc<Self>) -> Turn {
        self.reserve_in(DEFAULT_LANE)
    }

    /// Reserves the next free turn of `lane` (a namespace) in the routine queue:
    /// lanes take turns, so a lane's turn waits for at most one turn of each
    /// other lane per turn of its own ahead of it, however many those hold.
    pub fn reserve_in(self: &Arc<Self>, lane: &str) -> Turn {
        let now = Instant::now();
        let paused = self.paused_or(now);
        let period = self.period();
        let seq = self
            .schedule
            .lock()
            .unwrap()
            .routine(now, paused, period, lane);
        Turn::at(TurnAt::Routine {
            lane: Arc::from(lane),
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
        let period = self.period();
        let at = self.schedule.lock().unwrap().urgent(now, paused, period);
        Turn::at(TurnAt::Moment(at))
    }

    /// Reserves a wake turn (the read of a run the change feed reports ended, or
    /// the feed's list): ahead of routine turns, which move back to make room,
    /// but behind urgent ones, which never wait for wakes (a stop during a burst
    /// of ends goes at once).
    pub fn reserve_wake(&self) -> Turn {
        let now = Instant::now();
        let paused = self.paused_or(now);
        let period = self.period();
        let at = self.schedule.lock().unwrap().wake(now, paused, period);
        Turn::at(TurnAt::Moment(at))
    }

    /// Routine turn `seq` made urgent (see [`Turn::promote`]): the new turn's
    /// moment, or None when `seq` is already due (it is used as it is).
    fn promote_with(&self, lane: &str, seq: u64) -> Option<Instant> {
        let now = Instant::now();
        let paused = self.paused_or(now);
        let period = self.period();
        let mut schedule = self.schedule.lock().unwrap();
        schedule.due(lane, seq, period).filter(|due| *due > now)?;
        Some(schedule.promote((lane, seq), now, paused, period))
    }

    fn routine_due(&self, lane: &str, seq: u64) -> Instant {
        let period = self.period();
        let schedule = self.schedule.lock().unwrap();
        schedule
            .due(lane, seq, period)
            .unwrap_or_else(|| schedule.head_due.min(Instant::now()))
    }

    /// How long a routine turn reserved now in the fullest lane would wait: zero
    /// while per-run polls go when they are due, growing while they queue.
    pub fn backlog(&self) -> Duration {
        let now = Instant::now();
        let period = self.period();
        let mut schedule = self.schedule.lock().unwrap();
        schedule.advance(now, period);
        let waiting = u32::try_from(schedule.lanes.waiting()).unwrap_or(u32::MAX);
        schedule
            .head_due
            .checked_add(period.saturating_mul(waiting))
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
        // While the rate is lowered, a second / rate after the last request.
        let rate = self.rate();
        let last = *self.last_pass.lock().unwrap();
        if let Some(last) = last
            && let Some(due) = last.checked_add(Duration::from_secs(1).div_f64(rate))
            && due > Instant::now()
        {
            tokio::time::sleep_until(due.into()).await;
        }
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
        *self.last_pass.lock().unwrap() = Some(now);
        let period = self.period();
        let free = now + period.saturating_mul(u32::try_from(waiting + 1).unwrap_or(u32::MAX))
            - period / 10;
        self.schedule
            .lock()
            .unwrap()
            .gate_busy_until(now, free, period);
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
        let period = self.period();
        self.schedule.lock().unwrap().pause(now, until, period);
    }
}

#[cfg(test)]
mod tests;
