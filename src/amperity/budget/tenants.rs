//! The budgets of every tenant, one each, made when first used.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

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
