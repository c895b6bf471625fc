//! The routine queue's lanes: one per namespace (or whatever the caller shares a
//! tenant's budget by), taking turns round-robin. A namespace with ten runs is not
//! queued behind another's ten thousand: its next turn comes after at most one
//! turn of every other lane with turns waiting, and each lane's turns keep the
//! order they were reserved in.
//!
//! The order: round 0 is the first waiting turn of each lane, in ring order (the
//! ring's front is served next), round 1 the second of each, and so on. Passing
//! the first turn moves its lane to the back of the ring, which keeps every other
//! turn's place less one; a lane that had nothing waiting joins at the back. So
//! no turn ever moves ahead of where it was told it stands: reserving in one lane
//! only moves turns of other lanes back (see the schedule's property test).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// The lane of callers that name none.
pub const DEFAULT_LANE: &str = "";

/// Every lane with turns waiting, and the ring they are served in.
#[derive(Default)]
pub(super) struct Lanes {
    by_name: HashMap<Arc<str>, Lane>,
    /// The lanes with turns waiting; the front's first turn comes next.
    ring: VecDeque<Arc<str>>,
    /// Above every number a lane ever handed out: a lane made again after it
    /// emptied numbers on from here, so that a turn held from before can never be
    /// mistaken for a new one.
    high_water: u64,
}

/// One lane's waiting turns, numbered `head..next`.
struct Lane {
    head: u64,
    next: u64,
    /// Turns still to come that their holders gave up: places the lane's next
    /// reservations take, latest first.
    holes: BTreeSet<u64>,
}

impl Lane {
    fn waiting(&self) -> u64 {
        self.next - self.head
    }
}

impl Lanes {
    /// Whether any turn is waiting.
    pub(super) fn any(&self) -> bool {
        !self.ring.is_empty()
    }

    /// How many turns wait, in every lane (the longest a new turn can wait, in
    /// turns: the place a reservation in the fullest lane would get).
    pub(super) fn waiting(&self) -> u64 {
        self.by_name.values().map(Lane::waiting).sum()
    }

    /// How many turns of `lane` wait.
    #[cfg(test)]
    pub(super) fn waiting_in(&self, lane: &str) -> u64 {
        self.by_name.get(lane).map_or(0, Lane::waiting)
    }

    /// How many lanes have turns waiting.
    #[cfg(test)]
    pub(super) fn busy(&self) -> usize {
        self.ring.len()
    }

    /// Passes the first turn: Some(true) when someone held it, Some(false) for a
    /// place given up, None when no turn waits.
    pub(super) fn pass_first(&mut self) -> Option<bool> {
        let name = self.ring.pop_front()?;
        let lane = self.by_name.get_mut(&name)?;
        let seq = lane.head;
        lane.head += 1;
        let held = !lane.holes.remove(&seq);
        if lane.waiting() > 0 {
            self.ring.push_back(name);
        } else {
            self.high_water = self.high_water.max(lane.next);
            self.by_name.remove(&name);
        }
        Some(held)
    }

    /// How many turns come before turn `seq` of `lane`; None once it passed (or
    /// was given up).
    pub(super) fn place(&self, lane: &str, seq: u64) -> Option<u64> {
        let own = self.by_name.get(lane)?;
        if seq < own.head || seq >= own.next || own.holes.contains(&seq) {
            return None;
        }
        let round = seq - own.head;
        let mut ahead = 0u64;
        let mut before_it = true;
        for name in &self.ring {
            if &**name == lane {
                before_it = false;
                ahead = ahead.saturating_add(round);
                continue;
            }
            let waiting = self.by_name.get(name).map_or(0, Lane::waiting);
            // Its turns of the earlier rounds, and of this round when it comes first.
            let this_round = u64::from(before_it && waiting > round);
            ahead = ahead
                .saturating_add(waiting.min(round))
                .saturating_add(this_round);
        }
        Some(ahead)
    }

    /// A turn in `lane`: the latest place it gave up, or a new one after its last.
    pub(super) fn reserve(&mut self, lane: &str) -> u64 {
        let start = self.high_water;
        let own = self.by_name.entry(Arc::from(lane)).or_insert(Lane {
            head: start,
            next: start,
            holes: BTreeSet::new(),
        });
        if let Some(seq) = own.holes.pop_last() {
            return seq;
        }
        let seq = own.next;
        own.next += 1;
        if own.waiting() == 1 {
            self.ring.push_back(Arc::from(lane));
        }
        seq
    }

    /// Turn `seq` of `lane` is given up: its place stays for the lane's next
    /// reservation; nobody moves.
    pub(super) fn release(&mut self, lane: &str, seq: u64) {
        if let Some(own) = self.by_name.get_mut(lane)
            && seq >= own.head
            && seq < own.next
        {
            own.holes.insert(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order turns pass in, as (lane, seq).
    fn drain(lanes: &mut Lanes, holders: &[(&str, u64)]) -> Vec<(String, u64)> {
        let mut order: Vec<(u64, String, u64)> = holders
            .iter()
            .filter_map(|(l, s)| lanes.place(l, *s).map(|p| (p, l.to_string(), *s)))
            .collect();
        order.sort();
        let places: Vec<u64> = order.iter().map(|(p, _, _)| *p).collect();
        assert_eq!(
            places,
            (0..places.len() as u64).collect::<Vec<_>>(),
            "{order:?}"
        );
        while lanes.pass_first().is_some() {}
        order.into_iter().map(|(_, l, s)| (l, s)).collect()
    }

    #[test]
    fn a_small_lane_is_not_queued_behind_a_big_one() {
        let mut lanes = Lanes::default();
        let big: Vec<u64> = (0..10_000).map(|_| lanes.reserve("big")).collect();
        let small = lanes.reserve("small");
        // One turn of the big lane first (it was there first), then the small one.
        assert_eq!(lanes.place("small", small), Some(1));
        assert_eq!(lanes.place("big", big[0]), Some(0));
        assert_eq!(lanes.place("big", big[1]), Some(2), "moved back one turn");
        assert_eq!(lanes.waiting(), 10_001);
        // The small lane's next turn after that one passes: again one big turn ahead.
        assert_eq!(lanes.pass_first(), Some(true));
        assert_eq!(lanes.pass_first(), Some(true));
        let again = lanes.reserve("small");
        assert_eq!(lanes.place("small", again), Some(1));
        assert_eq!(lanes.busy(), 2);
    }

    #[test]
    fn lanes_take_turns_round_robin_each_in_its_own_order() {
        let mut lanes = Lanes::default();
        let mut holders = Vec::new();
        for lane in ["a", "a", "a", "b", "c", "c"] {
            holders.push((lane, lanes.reserve(lane)));
        }
        let order = drain(&mut lanes, &holders);
        let lanes_in_order: Vec<&str> = order.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(lanes_in_order, ["a", "b", "c", "a", "c", "a"]);
        let a: Vec<u64> = order
            .iter()
            .filter(|(l, _)| l == "a")
            .map(|(_, s)| *s)
            .collect();
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
    }

    #[test]
    fn a_place_given_up_goes_to_the_lanes_next_reservation_and_a_lane_made_again_never_reuses_numbers()
     {
        let mut lanes = Lanes::default();
        let first = lanes.reserve("a");
        let second = lanes.reserve("a");
        let other = lanes.reserve("b");
        lanes.release("a", second);
        assert_eq!(lanes.place("a", second), None);
        assert_eq!(lanes.place("b", other), Some(1), "nobody moved");
        // Another lane's reservation does not take it.
        let b2 = lanes.reserve("b");
        assert_ne!((b2, "b"), (second, "a"));
        assert_eq!(lanes.reserve("a"), second);
        // Passed, the lane is forgotten; made again, it numbers on.
        while lanes.pass_first().is_some() {}
        assert!(!lanes.any());
        let again = lanes.reserve("a");
        assert!(again > second && again > first);
        assert_eq!(
            lanes.place("a", first),
            None,
            "a turn from before stays passed"
        );
        assert_eq!(lanes.place("a", again), Some(0));
    }
}
