//! The client's side of the tenants' budgets: reserving turns, how far apart they
//! are, the tenant's clock, and the lower rates connections ask for.

use std::time::Duration;

use super::AmperityClient;
use crate::amperity::{Target, Turn};

impl AmperityClient {
    /// Reserves the tenant's next free turn for a routine request (see [`Budget`])
    /// in `lane` (a namespace: the lanes of a tenant take turns, so a namespace with
    /// few runs is not queued behind one with many). A caller with nothing else to
    /// do can go away until [`Turn::wait`] is over.
    ///
    /// [`Budget`]: crate::amperity::budget::Budget
    pub fn reserve_turn(&self, target: &Target, lane: &str) -> Turn {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .reserve_in(lane)
    }

    /// Reserves a turn for what a person or a failure is waiting on (a start, a
    /// stop, a search): due now unless the tenant is paused after a 429, and ahead
    /// of routine polls, which move back to make room.
    pub fn reserve_urgent_turn(&self, target: &Target) -> Turn {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .reserve_urgent()
    }

    /// Reserves a wake turn (the change feed's lists and the reads of runs it
    /// reports ended): ahead of routine polls, behind starts and stops.
    pub fn reserve_wake_turn(&self, target: &Target) -> Turn {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .reserve_wake()
    }

    /// How far apart a tenant's turns are: a routine poll of each of N runs takes
    /// about N times this.
    pub fn turn_period(&self) -> Duration {
        self.inner.budgets.period()
    }

    /// How long a routine poll to `target` reserved now would wait for its turn.
    pub fn routine_backlog(&self, target: &Target) -> Duration {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .backlog()
    }

    /// `local` (a moment by our clock) by the clock of `target`'s tenant, as its
    /// answers' `Date` headers tell it.
    pub fn in_tenant_clock(&self, target: &Target, local: jiff::Timestamp) -> jiff::Timestamp {
        self.inner
            .budgets
            .for_tenant(&target.budget_key())
            .in_tenant_clock(local)
    }

    /// `who` (a connection) asks that `target`'s tenant be sent at most
    /// `per_second`, whoever's requests they are (None: it no longer asks).
    pub fn limit_tenant(&self, target: &Target, who: &str, per_second: Option<u32>) {
        let budget = self.inner.budgets.for_tenant(&target.budget_key());
        budget.limit(who, per_second);
    }
}
