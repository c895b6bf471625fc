//! The queue of routine turns and the spacing of urgent ones, and the turn a
//! caller holds meanwhile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// The queue of routine turns and the spacing of urgent ones.
///
/// Routine turns wait in lanes (one per namespace, see [`Lanes`]) taken in turn;
/// a routine turn is due at `head_due` plus one period for every turn before it
/// in that order. An urgent
/// turn moves `head_due` back by one period: every routine turn not yet due makes
/// room for it. No routine turn ever moves earlier: its holder sleeps until the
/// moment it was told, and a turn that moved earlier would find nobody at the
/// gate, leaving its time unused while every other turn is taken.
pub(super) struct Schedule {
    /// When the first routine turn waiting is due.
    pub(super) head_due: Instant,
    /// The routine turns not yet due, by lane. A turn its holder gave up (for an
    /// urgent turn) keeps its place for the lane's next reservation.
    pub(super) lanes: Lanes,
    /// The first urgent turn not yet handed out: urgent requests go ahead of routine
    /// ones, but are spaced too, so that a burst of them (many starts to one tenant)
    /// is spread out instead of piling up at the gate, each holding a reconcile.
    pub(super) next_urgent: Instant,
    /// The first wake turn not yet handed out (the reads of runs the change feed
    /// reports ended, and its lists): after urgent turns, ahead of routine ones.
    /// Urgent turns do not wait behind wakes: each one handed out inside the
    /// stretch of wakes still to come lengthens it by a turn.
    pub(super) next_wake: Instant,
    /// When the last routine turn that came due was due: an urgent turn goes a
    /// period after it. Closer, the two would meet at the gate, one would wait for
    /// the other, and with every turn taken the time would never be made up.
    pub(super) last_due: Option<Instant>,
    /// The earliest the gate can pass another request, as of the last one it
    /// passed (and those still waiting there).
    pub(super) gate_free: Instant,
}

impl Schedule {
    /// Passes every routine turn already due, so that what changes next moves only
    /// the turns still to come.
    pub(super) fn advance(&mut self, now: Instant, period: Duration) {
        while self.lanes.any() && self.head_due <= now {
            if self.lanes.pass_first() == Some(true) {
                self.last_due = Some(self.head_due);
            }
            self.head_due += period;
        }
        if !self.lanes.any() {
            self.head_due = self.head_due.max(now);
        }
    }

    /// When routine turn `seq` of `lane` is due; None once it is (or it was given up).
    pub(super) fn due(&self, lane: &str, seq: u64, period: Duration) -> Option<Instant> {
        let ahead = self.lanes.place(lane, seq)?;
        let ahead = u32::try_from(ahead).unwrap_or(u32::MAX);
        Some(
            self.head_due
                .checked_add(period.saturating_mul(ahead))
                .unwrap_or(self.head_due),
        )
    }

    /// An urgent turn: the next urgent slot (after any pause, and a period after
    /// the last routine turn that came due), with every routine turn not yet due
    /// moved back one period to make room for it.
    pub(super) fn urgent(&mut self, now: Instant, paused: Instant, period: Duration) -> Instant {
        self.advance(now, period);
        let after_routine = self.last_due.map_or(now, |due| due + period);
        let at = self
            .next_urgent
            .max(now)
            .max(paused)
            .max(after_routine)
            .max(self.gate_free);
        self.next_urgent = at + period;
        self.next_wake = if self.next_wake > at {
            self.next_wake + period
        } else {
            at + period
        };
        self.head_due = self.head_due.max(paused).max(at) + period;
        at
    }

    /// A wake turn: the next wake slot, after urgent turns already handed out,
    /// with every routine turn not yet due moved back one period to make room.
    pub(super) fn wake(&mut self, now: Instant, paused: Instant, period: Duration) -> Instant {
        self.advance(now, period);
        let after_routine = self.last_due.map_or(now, |due| due + period);
        let at = self
            .next_wake
            .max(self.next_urgent)
            .max(now)
            .max(paused)
            .max(after_routine)
            .max(self.gate_free);
        self.next_wake = at + period;
        self.head_due = self.head_due.max(paused).max(at) + period;
        at
    }

    /// The next routine turn of `lane` (after any pause): the latest place the
    /// lane gave up, or a new one after its last.
    pub(super) fn routine(
        &mut self,
        now: Instant,
        paused: Instant,
        period: Duration,
        lane: &str,
    ) -> u64 {
        self.advance(now, period);
        self.head_due = self.head_due.max(paused);
        self.lanes.reserve(lane)
    }

    /// Routine turn `seq` of `lane` is given up: its place stays (nobody moves)
    /// for the lane's next reservation to take.
    pub(super) fn release(&mut self, lane: &str, seq: u64, now: Instant, period: Duration) {
        self.advance(now, period);
        self.lanes.release(lane, seq);
    }

    /// Routine turn `seq` is given up for an urgent turn ahead of it.
    pub(super) fn promote(
        &mut self,
        (lane, seq): (&str, u64),
        now: Instant,
        paused: Instant,
        period: Duration,
    ) -> Instant {
        self.release(lane, seq, now, period);
        self.urgent(now, paused, period)
    }

    /// Nothing passes until `until`: routine turns not yet due move back past it.
    pub(super) fn pause(&mut self, now: Instant, until: Instant, period: Duration) {
        self.advance(now, period);
        self.head_due = self.head_due.max(until);
    }

    /// The gate can pass nothing more before `free` (it is behind: requests came
    /// late, or together): turns still to come move back to it. Requests waiting
    /// at the gate each hold a reconcile; a turn moved back holds nothing. With
    /// every turn taken, a gate behind would otherwise never catch up, and urgent
    /// requests would queue behind routine ones that came late.
    pub(super) fn gate_busy_until(&mut self, now: Instant, free: Instant, period: Duration) {
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
pub(super) enum TurnAt {
    Moment(Instant),
    Routine {
        lane: Arc<str>,
        seq: u64,
        budget: Arc<Budget>,
    },
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
    pub(super) fn at(at: TurnAt) -> Turn {
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
            TurnAt::Routine { lane, seq, budget } => budget.routine_due(&lane, seq),
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
        if let TurnAt::Routine { lane, seq, budget } = &*at
            && let Some(urgent) = budget.promote_with(lane, *seq)
        {
            *at = TurnAt::Moment(urgent);
        }
    }

    /// Gives up a routine turn still to come (an urgent turn was handed out for the
    /// same request). Its place goes to the next reservation; nobody moves.
    pub fn release(&self) {
        let at = self.0.lock().unwrap().clone();
        if let TurnAt::Routine { lane, seq, budget } = at {
            let now = Instant::now();
            let period = budget.period();
            budget
                .schedule
                .lock()
                .unwrap()
                .release(&lane, seq, now, period);
        }
    }
}
