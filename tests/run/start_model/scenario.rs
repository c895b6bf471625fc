//! The cases: what proptest draws, and the holes the model found, kept as fixed cases.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::amperity::{Outcome, outcome};

/// A scenario drawn by proptest.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub outcomes: Vec<Outcome>,
    /// Run endings drawn in turn: 0 still running, 1 succeeded, 2 customer failure, 3 platform failure.
    pub endings: Vec<u8>,
    /// Status writes that "kill" the operator (by their number).
    pub crashes: BTreeSet<usize>,
    /// Credential reads that fail (by their number).
    pub secret_hiccups: BTreeSet<usize>,
    pub clock_jumps: Vec<u64>,
    pub list_lag_secs: i64,
    pub principal_in_secret: bool,
    pub retry_limit: u32,
    pub stop_at_step: Option<usize>,
    pub timeout: bool,
    /// Amperity's clock less the operator's, in seconds.
    pub clock_offset_secs: i64,
    /// Which foreign runs exist (a bit each).
    pub foreign: u8,
    /// When (seconds before the first start, Amperity's clock) the unclaimed
    /// runs of the same key and type were created.
    pub unclaimed_ages: (i64, i64),
    /// Steps with faults, before the calm.
    pub faulty_steps: usize,
    /// How far behind the store each read can be (versions), drawn in turn.
    pub stale_reads: Vec<u64>,
    /// Steps at which leadership changes hands.
    pub handovers: BTreeSet<usize>,
    /// The deposed leader pauses before this call of its reconcile (none: it
    /// stops cleanly), for this many of the new leader's steps.
    pub pause: Option<(usize, usize)>,
    /// Searches (by number) whose claims are incomplete.
    pub incomplete_claims: BTreeSet<usize>,
}

pub fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (
            proptest::collection::vec(outcome(), 1..40),
            proptest::collection::vec(0u8..4, 1..20),
            proptest::collection::btree_set(1usize..40, 0..6),
            proptest::collection::btree_set(1usize..40, 0..6),
            proptest::collection::vec(prop_oneof![3 => 0u64..20, 1 => 0u64..900], 1..20),
            prop_oneof![Just(0i64), 0i64..600],
            any::<bool>(),
            0u32..3,
            proptest::option::of(0usize..30),
        ),
        (
            any::<bool>(),
            -300i64..300,
            any::<u8>(),
            (6i64..600, 6i64..600),
            10usize..50,
            proptest::collection::vec(prop_oneof![2 => Just(0u64), 1 => 1u64..4], 1..10),
            proptest::collection::btree_set(0usize..50, 0..4),
            proptest::option::of((0usize..8, 1usize..6)),
            proptest::collection::btree_set(0usize..10, 0..4),
        ),
    )
        .prop_map(
            |(
                (
                    outcomes,
                    endings,
                    crashes,
                    secret_hiccups,
                    clock_jumps,
                    list_lag_secs,
                    principal_in_secret,
                    retry_limit,
                    stop_at_step,
                ),
                (
                    timeout,
                    clock_offset_secs,
                    foreign,
                    unclaimed_ages,
                    faulty_steps,
                    stale_reads,
                    handovers,
                    pause,
                    incomplete_claims,
                ),
            )| Scenario {
                outcomes,
                endings,
                crashes,
                secret_hiccups,
                clock_jumps,
                list_lag_secs,
                principal_in_secret,
                retry_limit,
                stop_at_step,
                timeout,
                clock_offset_secs,
                foreign,
                unclaimed_ages,
                faulty_steps,
                stale_reads,
                handovers,
                pause,
                incomplete_claims,
            },
        )
}

/// A scenario with no faults, foreign runs, handovers or stale reads.
fn quiet() -> Scenario {
    Scenario {
        outcomes: vec![Outcome::Ok],
        endings: vec![1],
        crashes: BTreeSet::new(),
        secret_hiccups: BTreeSet::new(),
        clock_jumps: vec![1],
        list_lag_secs: 0,
        principal_in_secret: false,
        retry_limit: 0,
        stop_at_step: None,
        timeout: false,
        clock_offset_secs: 0,
        foreign: 0,
        unclaimed_ages: (6, 6),
        faulty_steps: 10,
        stale_reads: vec![0],
        handovers: BTreeSet::new(),
        pause: None,
        incomplete_claims: BTreeSet::new(),
    }
}

/// The holes the model found, each as it first shrank.
pub fn regressions() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            // A start refused (nothing sent), then a start whose answer was lost (the
            // run exists); a cache two versions behind shows the earlier `Pending`, a
            // Secret read fails, and the `Pending` written from that stale read erased
            // the intent: the next reconcile started a second run.
            "a stale Pending written over a newer intent",
            Scenario {
                outcomes: vec![Outcome::Refused, Outcome::ServerErrorAfter],
                endings: vec![0],
                secret_hiccups: [3].into(),
                stale_reads: vec![0, 0, 2, 2, 0, 2],
                ..quiet()
            },
        ),
        (
            // Attempt 1 starts (the principal is learned from its answer, with its
            // display name) and fails on the platform's side; attempt 2's start times
            // out before reaching Amperity, while another key with the same display
            // name starts a run of the same type: it must not be adopted.
            "a namesake's run made as a retry's start is lost",
            Scenario {
                outcomes: [Outcome::Ok, Outcome::Ok, Outcome::TimeoutBefore]
                    .into_iter()
                    .chain([Outcome::Ok; 12])
                    .collect(),
                endings: vec![3],
                retry_limit: 1,
                foreign: 1 << 4,
                faulty_steps: 12,
                ..quiet()
            },
        ),
    ]
}
