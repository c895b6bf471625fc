//! The rate a tenant is sent, lowered by 429s that name no `Retry-After` and
//! raised again while none come (additive increase, multiplicative decrease).
//!
//! Amperity documents no `Retry-After`, and a tenant's real limit may be below the
//! configured budget: a pause alone would resume at the full rate and meet the
//! limit again at once. Each such 429 halves the rate (429s answered together,
//! to requests already in flight, count once) and remembers the rate it came at;
//! the rate then climbs back a step every [`STEP_EVERY`] up to a margin below that
//! rate, and stays there. After [`FORGET_AFTER`] without a 429 the remembered rate
//! is forgotten and the climb resumes to the configured budget: a tenant whose
//! limit was raised gets its budget back, one whose limit is still low sees one
//! 429 in that long.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The lowest rate a tenant is ever sent, requests per second.
pub const MIN_RATE: f64 = 0.2;
/// 429s closer together than this count as one (they answer requests sent together).
pub const ONE_EVENT: Duration = Duration::from_secs(1);
/// How often the rate climbs back one step while no 429 comes.
pub const STEP_EVERY: Duration = Duration::from_secs(10);
/// Below the rate a 429 came at, the climb stops this far (a share of it).
pub const HOLD_BELOW: f64 = 0.85;
/// How long without a 429 before the rate a 429 came at is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);
/// How long a lower rate someone asked for (a connection's `requestsPerSecond`)
/// holds unless asked again: whoever asks repeats it more often than this, and a
/// connection deleted without a word stops lowering the tenant after this long.
pub const LIMIT_HOLDS: Duration = Duration::from_secs(300);
/// At most this many lower rates are kept per tenant (one per connection).
const MAX_LIMITS: usize = 256;

/// A tenant's adaptive rate.
#[derive(Clone, Debug)]
pub struct Adaptive {
    configured: f64,
    rate: f64,
    /// The rate the last 429 came at, while it is remembered.
    limit_seen: Option<f64>,
    last_429: Option<Instant>,
    /// When the rate last climbed (or fell): the next step is [`STEP_EVERY`] later.
    last_change: Instant,
    /// Lower rates asked for, by who asked, and when they last did.
    limits: HashMap<String, (f64, Instant)>,
}

impl Adaptive {
    pub fn new(configured: f64, now: Instant) -> Self {
        let configured = configured.max(MIN_RATE);
        Adaptive {
            configured,
            rate: configured,
            limit_seen: None,
            last_429: None,
            last_change: now,
            limits: HashMap::new(),
        }
    }

    /// `who` asks the tenant to be sent at most `per_second` (None: no longer).
    /// The lowest rate asked for in the last [`LIMIT_HOLDS`] caps the rate.
    pub fn limit(&mut self, who: &str, per_second: Option<f64>, now: Instant) {
        match per_second {
            Some(r) if r.is_finite() => {
                if self.limits.len() >= MAX_LIMITS && !self.limits.contains_key(who) {
                    self.forget_old_limits(now);
                }
                if self.limits.len() < MAX_LIMITS || self.limits.contains_key(who) {
                    self.limits.insert(who.to_string(), (r.max(MIN_RATE), now));
                }
            }
            _ => {
                self.limits.remove(who);
            }
        }
    }

    fn forget_old_limits(&mut self, now: Instant) {
        self.limits
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < LIMIT_HOLDS);
    }

    /// The most the tenant is sent: the configured budget, or a lower rate asked for.
    pub fn ceiling(&mut self, now: Instant) -> f64 {
        self.forget_old_limits(now);
        self.limits
            .values()
            .map(|(r, _)| *r)
            .fold(self.configured, f64::min)
    }

    /// The rate to send at, `now`: climbed back the steps that came due, and at
    /// most the [`ceiling`](Self::ceiling).
    pub fn rate(&mut self, now: Instant) -> f64 {
        let climbed = self.climbed(now);
        climbed.min(self.ceiling(now))
    }

    fn climbed(&mut self, now: Instant) -> f64 {
        if self
            .last_429
            .is_some_and(|at| now.saturating_duration_since(at) >= FORGET_AFTER)
        {
            self.limit_seen = None;
        }
        let steps = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64()
            / STEP_EVERY.as_secs_f64();
        let steps = steps.floor();
        if steps >= 1.0 {
            let ceiling = self
                .limit_seen
                .map_or(self.configured, |l| (l * HOLD_BELOW).max(MIN_RATE))
                .min(self.configured);
            let step = self.configured / 10.0;
            if self.rate < ceiling {
                self.rate = (self.rate + step * steps).min(ceiling);
            }
            self.last_change = self
                .last_change
                .checked_add(STEP_EVERY.mul_f64(steps.min(1e6)))
                .unwrap_or(now)
                .min(now);
        }
        self.rate
    }

    /// A 429 without `Retry-After` came `now`: the rate halves, unless another
    /// came less than [`ONE_EVENT`] ago (the same burst).
    pub fn rate_limited(&mut self, now: Instant) {
        let current = self.rate(now);
        let same_event = self
            .last_429
            .is_some_and(|at| now.saturating_duration_since(at) < ONE_EVENT);
        self.last_429 = Some(now);
        if same_event {
            return;
        }
        self.limit_seen = Some(current);
        self.rate = (current / 2.0).max(MIN_RATE);
        self.last_change = now;
    }

    /// Whether 429s lowered the rate below the configured budget (or the lower
    /// rate asked for).
    pub fn lowered(&mut self, now: Instant) -> bool {
        self.climbed(now) < self.ceiling(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_rate_asked_for_caps_the_tenant_until_withdrawn_or_no_longer_asked() {
        let now = Instant::now();
        let mut a = Adaptive::new(10.0, now);
        assert_eq!(a.rate(now), 10.0);
        a.limit("AmperityConnection/team-a/acme", Some(4.0), now);
        a.limit("ClusterAmperityConnection/acme", Some(6.0), now);
        assert_eq!(a.rate(now), 4.0, "the lowest asked for wins");
        assert!(!a.lowered(now), "asked for is not lowered by 429s");
        a.limit("AmperityConnection/team-a/acme", None, now);
        assert_eq!(a.rate(now), 6.0, "withdrawn");
        // Not asked again for LIMIT_HOLDS (a connection deleted): forgotten.
        let later = now + LIMIT_HOLDS;
        assert_eq!(a.rate(later), 10.0);
        // A 429 under a lower rate halves that rate.
        a.limit("ClusterAmperityConnection/acme", Some(6.0), later);
        a.rate_limited(later);
        assert_eq!(a.rate(later), 3.0);
        assert!(a.lowered(later));
        // Nonsense is bounded: below the floor, not a number, and many askers.
        a.limit("x", Some(0.0), later);
        assert_eq!(a.rate(later), MIN_RATE);
        a.limit("x", Some(f64::NAN), later);
        assert!(a.rate(later) > MIN_RATE);
        for i in 0..1000 {
            a.limit(&format!("c{i}"), Some(9.0), later);
        }
        assert!(a.limits.len() <= MAX_LIMITS);
    }

    /// A server whose limit is `limit` requests in any 1-second window, and a
    /// sender at the adaptive rate (a request every 1.03 s / rate, as the gate
    /// spaces them), in simulated time: the moments of the 429s it answers.
    fn simulate(adaptive: &mut Adaptive, start: Instant, limit: usize, for_secs: u64) -> Vec<f64> {
        let mut sent: std::collections::VecDeque<Instant> = Default::default();
        let mut throttled = Vec::new();
        let mut now = start;
        let end = start + Duration::from_secs(for_secs);
        while now < end {
            while sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                sent.pop_front();
            }
            if sent.len() >= limit {
                throttled.push(now.duration_since(start).as_secs_f64());
                adaptive.rate_limited(now);
            } else {
                sent.push_back(now);
            }
            now += Duration::from_secs_f64(1.03 / adaptive.rate(now));
        }
        throttled
    }

    #[test]
    fn a_limit_below_the_budget_stops_the_429s_within_a_minute_and_a_raised_one_is_used_again() {
        let start = Instant::now();
        let mut adaptive = Adaptive::new(5.0, start);
        // The tenant's real limit is 2/s against a budget of 5/s.
        let throttled = simulate(&mut adaptive, start, 2, 280);
        assert!(!throttled.is_empty());
        assert!(
            throttled.iter().all(|at| *at < 60.0),
            "429s after the first minute: {throttled:?}"
        );
        let later = start + Duration::from_secs(280);
        assert!(adaptive.rate(later) < 2.0 / 1.03 + 1e-9, "{adaptive:?}");
        assert!(
            adaptive.rate(later) >= 1.0,
            "held near the limit: {adaptive:?}"
        );
        // Its limit is raised: the remembered rate is forgotten after five quiet
        // minutes and the rate climbs back to the whole budget.
        let throttled = simulate(&mut adaptive, later, 10, 600);
        assert!(throttled.is_empty(), "{throttled:?}");
        assert_eq!(adaptive.rate(later + Duration::from_secs(600)), 5.0);
    }

    #[test]
    fn a_burst_of_429s_counts_once_and_the_rate_never_falls_below_the_floor() {
        let now = Instant::now();
        let mut adaptive = Adaptive::new(5.0, now);
        for ms in 0..10 {
            adaptive.rate_limited(now + Duration::from_millis(ms * 50));
        }
        assert_eq!(adaptive.rate(now + Duration::from_millis(500)), 2.5);
        let mut at = now;
        for _ in 0..100 {
            at += Duration::from_secs(2);
            adaptive.rate_limited(at);
        }
        assert_eq!(adaptive.rate(at), MIN_RATE);
        assert!(adaptive.lowered(at));
        // Clocks that go nowhere or jump far do not panic or overflow.
        let mut far = Adaptive::new(0.0, now);
        assert_eq!(far.rate(now), MIN_RATE);
        let mut jump = Adaptive::new(5.0, now + Duration::from_secs(10));
        jump.rate_limited(now);
        let _ = jump.rate(now + Duration::from_secs(10 * 365 * 86_400));
    }
}
