//! The budgets of every tenant, one each, made when first used and forgotten
//! when idle.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A tenant nobody has asked for in this long is forgotten (unless a turn it
/// handed out is still held, it is paused after a 429, or its rate is lowered):
/// the number of budgets kept follows the tenants in use, not every tenant ever
/// named.
pub const IDLE: Duration = Duration::from_secs(600);
/// Idle tenants are looked for at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Budgets by tenant key ([`Target::budget_key`](crate::amperity::Target::budget_key)).
pub struct Budgets {
    per_second: NonZeroU32,
    registry: Mutex<Registry>,
}

struct Registry {
    by_tenant: HashMap<String, Entry>,
    last_sweep: Instant,
}

struct Entry {
    budget: Arc<Budget>,
    used: Instant,
}

impl Budgets {
    pub fn new(per_second: u32) -> Self {
        Budgets {
            per_second: NonZeroU32::new(per_second.clamp(1, 10)).expect("clamped to 1..=10"),
            registry: Mutex::new(Registry {
                by_tenant: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// How far apart each tenant's turns are at the configured rate.
    pub fn period(&self) -> Duration {
        WINDOW / self.per_second.get()
    }

    pub fn for_tenant(&self, key: &str) -> Arc<Budget> {
        self.for_tenant_at(key, Instant::now())
    }

    /// How many tenants' budgets are kept.
    pub fn len(&self) -> usize {
        self.registry.lock().unwrap().by_tenant.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn for_tenant_at(&self, key: &str, now: Instant) -> Arc<Budget> {
        let mut registry = self.registry.lock().unwrap();
        if now.saturating_duration_since(registry.last_sweep) >= SWEEP_EVERY {
            registry.last_sweep = now;
            registry.by_tenant.retain(|_, e| {
                now.saturating_duration_since(e.used) < IDLE
                    || Arc::strong_count(&e.budget) > 1
                    || e.budget.paused_for().is_some()
                    || e.budget.lowered()
            });
        }
        let entry = registry
            .by_tenant
            .entry(key.to_string())
            .or_insert_with(|| Entry {
                budget: Arc::new(Budget::new(self.per_second)),
                used: now,
            });
        entry.used = entry.used.max(now);
        entry.budget.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_tenants_are_forgotten_and_busy_ones_kept() {
        let budgets = Budgets::new(5);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let held = budgets.for_tenant_at("held", at(0));
        let paused = budgets.for_tenant_at("paused", at(0));
        paused.pause(MAX_PAUSE);
        drop(paused);
        let lowered = budgets.for_tenant_at("lowered", at(0));
        lowered.rate_limited(None, 0);
        drop(lowered);
        for i in 0..100 {
            drop(budgets.for_tenant_at(&format!("t{i}"), at(0)));
        }
        drop(budgets.for_tenant_at("busy", at(0)));
        assert_eq!(budgets.len(), 104);
        // Used now and then, "busy" stays; the hundred others go once idle.
        for s in (60..=660).step_by(60) {
            drop(budgets.for_tenant_at("busy", at(s)));
        }
        let mut kept: Vec<String> = budgets
            .registry
            .lock()
            .unwrap()
            .by_tenant
            .keys()
            .cloned()
            .collect();
        kept.sort();
        // "paused" and "lowered" were judged by the real clock (a pause of five
        // minutes, a rate lowered for longer), not by the test's instants.
        assert_eq!(kept, ["busy", "held", "lowered", "paused"]);
        // The same tenant is the same budget while kept.
        assert!(Arc::ptr_eq(&held, &budgets.for_tenant_at("held", at(700))));
        // Once nobody holds it and it idled, it is forgotten: a new one is made.
        let old = Arc::downgrade(&held);
        drop(held);
        let again = budgets.for_tenant_at("held", at(2000));
        assert!(old.upgrade().is_none());
        assert_eq!(Arc::strong_count(&again), 2);
    }
}
