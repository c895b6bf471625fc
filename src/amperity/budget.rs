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

use std::collections::HashMap;
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
    /// The first turn not yet handed out. Turns are `period` apart, in the order
    /// they were reserved, so that every run's interval stretches evenly.
    next_turn: Mutex<Instant>,
    /// The first urgent turn not yet handed out: urgent requests go ahead of routine
    /// ones, but are spaced too, so that a burst of them (many starts to one tenant)
    /// is spread out instead of piling up at the gate, each holding a reconcile.
    next_urgent: Mutex<Instant>,
}

/// A reserved moment at which one request may pass the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Turn(Instant);

impl Turn {
    /// A turn due at once (for callers that keep no budget, such as test doubles).
    pub fn due_now() -> Turn {
        Turn(Instant::now())
    }

    /// How long until the turn is due (zero once it is).
    pub fn wait(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
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
        Budget {
            limiter: RateLimiter::direct(quota),
            recent: Mutex::new(std::collections::VecDeque::new()),
            per_second: per_second.get() as usize,
            paused_until: Mutex::new(None),
            queue: tokio::sync::Mutex::new(()),
            period: WINDOW / per_second.get(),
            next_turn: Mutex::new(Instant::now()),
            next_urgent: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the next free turn in the schedule (after any pause).
    pub fn reserve(&self) -> Turn {
        let now = Instant::now();
        let paused = self.paused_until.lock().unwrap().unwrap_or(now);
        let mut next = self.next_turn.lock().unwrap();
        let turn = (*next).max(now).max(paused);
        *next = turn + self.period;
        Turn(turn)
    }

    /// Reserves a turn for a request someone is waiting on (a start, a stop, a
    /// search): the earliest moment the tenant is not paused, ahead of routine polls.
    /// The schedule moves back one turn to make room for it.
    pub fn reserve_urgent(&self) -> Turn {
        let now = Instant::now();
        let paused = self.paused_until.lock().unwrap().unwrap_or(now);
        let mut urgent = self.next_urgent.lock().unwrap();
        let turn = (*urgent).max(now).max(paused);
        *urgent = turn + self.period;
        let mut next = self.next_turn.lock().unwrap();
        *next = (*next).max(now) + self.period;
        Turn(turn)
    }

    /// How much longer the tenant is paused after a 429, if it is.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().unwrap())?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Waits for a permit (and out any pause); returns how long it waited.
    ///
    /// With a reserved `turn`, first waits until it is due. Without one (starts,
    /// stops, searches, retries: what a person or a failure is waiting on) the
    /// request goes straight to the gate, ahead of routine polls, and takes the
    /// schedule's next turn so that later reservations leave room for it.
    pub async fn acquire(&self, turn: Option<Turn>) -> Duration {
        let started = Instant::now();
        match turn {
            Some(Turn(at)) => tokio::time::sleep_until(at.into()).await,
            None => {
                let mut next = self.next_turn.lock().unwrap();
                *next = (*next).max(started) + self.period;
            }
        }
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
        started.elapsed()
    }

    /// Holds every request to this tenant back for `d` (after a 429), at most
    /// [`MAX_PAUSE`].
    pub fn pause(&self, d: Duration) {
        let now = Instant::now();
        let until = now.checked_add(d.min(MAX_PAUSE)).unwrap_or(now);
        let mut paused = self.paused_until.lock().unwrap();
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
        drop(paused);
        let mut next = self.next_turn.lock().unwrap();
        *next = (*next).max(until);
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
            assert_eq!(pair[1].0 - pair[0].0, Duration::from_millis(206));
        }
        // The last of 64 starts at 5/s is 13 s out: it waits outside any reconcile.
        assert!(turns[63].wait() > Duration::from_secs(12));
    }

    #[test]
    fn urgent_turns_go_first_and_push_routine_turns_back() {
        let budget = Budgets::new(10).for_tenant("t");
        let routine: Vec<Turn> = (0..20).map(|_| budget.reserve()).collect();
        let urgent = budget.reserve_urgent();
        assert!(urgent.wait() < Duration::from_millis(5), "{urgent:?}");
        // The urgent request took a turn's room: the next routine turn comes one
        // period later than it would have.
        let next = budget.reserve();
        assert_eq!(
            next.0 - routine.last().unwrap().0,
            Duration::from_millis(206)
        );
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

    #[test]
    fn turns_are_handed_out_a_period_apart_in_order() {
        let budget = Budgets::new(5).for_tenant("t");
        let turns: Vec<Turn> = (0..50).map(|_| budget.reserve()).collect();
        // 5 per 1.03 s, the window the gate counts over.
        for pair in turns.windows(2) {
            assert_eq!(pair[1].0 - pair[0].0, Duration::from_millis(206));
        }
        // The fiftieth request of a 5/s budget goes about ten seconds out (49 turns).
        let last = turns.last().unwrap().wait();
        assert!(
            last > Duration::from_millis(9_994) && last <= Duration::from_millis(10_094),
            "{last:?}"
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
                budget.acquire(Some(turn)).await;
                Instant::now().saturating_duration_since(turn.0)
            }
        }))
        .await;
        let worst = waits.iter().max().unwrap();
        assert!(*worst < Duration::from_millis(60), "{waits:?}");
    }

    #[tokio::test]
    async fn unscheduled_requests_go_first_and_push_the_schedule_back() {
        let budget = Budgets::new(10).for_tenant("t");
        let first = budget.reserve();
        let started = Instant::now();
        budget.acquire(None).await;
        assert!(started.elapsed() < Duration::from_millis(50));
        // The start took the slot after `first`: the next reservation comes after both.
        let next = budget.reserve();
        assert_eq!(next.0 - first.0, Duration::from_millis(206));
    }

    #[test]
    fn a_pause_moves_every_later_turn_past_it() {
        let budget = Budgets::new(10).for_tenant("t");
        budget.pause(Duration::from_secs(3));
        let turn = budget.reserve();
        assert!(turn.wait() > Duration::from_millis(2_900), "{turn:?}");
    }
}
