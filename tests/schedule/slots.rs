//! Which instants a cron pattern schedules in a time zone: macros, February 29,
//! impossible dates, and the daylight-saving rules (a time that happens twice runs
//! once, at its first occurrence; a time the clock skips runs as much later as the
//! clock jumped) in America/New_York and Europe/London. Plus properties that hold
//! for any pattern, zone and time, and hostile input that must never panic.

use amperity_operator::schedule::cron::{CronError, CronSchedule, time_zone};
use jiff::Timestamp;
use jiff::tz::TimeZoneDatabase;
use proptest::prelude::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn schedule(pattern: &str, tz: &str) -> CronSchedule {
    CronSchedule::parse(pattern, Some(tz), ts("2025-01-01T00:00:00Z"))
        .unwrap_or_else(|e| panic!("{pattern} in {tz}: {e}"))
}

/// The scheduled instants after `from`, as RFC 3339 UTC strings.
fn upcoming(s: &CronSchedule, from: &str, n: usize) -> Vec<String> {
    let mut at = ts(from);
    (0..n)
        .map(|_| {
            at = s.next_after(at).expect("a next slot");
            at.to_string()
        })
        .collect()
}

#[test]
fn next_and_latest_slots_by_table() {
    // (pattern, zone, from, next after `from`, latest at or before `from`)
    let table = [
        (
            "0 6 * * *",
            "UTC",
            "2025-04-18T05:59:59Z",
            "2025-04-18T06:00:00Z",
            "2025-04-17T06:00:00Z",
        ),
        (
            "0 6 * * *",
            "UTC",
            "2025-04-18T06:00:00Z",
            "2025-04-19T06:00:00Z",
            "2025-04-18T06:00:00Z",
        ),
        (
            "0 6 * * 1-5",
            "UTC",
            "2025-04-18T07:00:00Z",
            "2025-04-21T06:00:00Z",
            "2025-04-18T06:00:00Z",
        ),
        (
            "*/15 * * * *",
            "UTC",
            "2025-04-18T06:07:00Z",
            "2025-04-18T06:15:00Z",
            "2025-04-18T06:00:00Z",
        ),
        (
            "@hourly",
            "UTC",
            "2025-04-18T06:30:00Z",
            "2025-04-18T07:00:00Z",
            "2025-04-18T06:00:00Z",
        ),
        (
            "@daily",
            "UTC",
            "2025-04-18T06:30:00Z",
            "2025-04-19T00:00:00Z",
            "2025-04-18T00:00:00Z",
        ),
        (
            "@midnight",
            "UTC",
            "2025-04-18T06:30:00Z",
            "2025-04-19T00:00:00Z",
            "2025-04-18T00:00:00Z",
        ),
        // 2025-04-18 is a Friday: @weekly is Sunday midnight.
        (
            "@weekly",
            "UTC",
            "2025-04-18T06:30:00Z",
            "2025-04-20T00:00:00Z",
            "2025-04-13T00:00:00Z",
        ),
        (
            "@monthly",
            "UTC",
            "2025-04-18T06:30:00Z",
            "2025-05-01T00:00:00Z",
            "2025-04-01T00:00:00Z",
        ),
        (
            "@yearly",
            "UTC",
            "2025-04-18T06:30:00Z",
            "2026-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        ),
        (
            "@annually",
            "UTC",
            "2025-04-18T06:30:00Z",
            "2026-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        ),
        // Day of month and day of week both given: either matches, as in cron.
        (
            "0 0 13 * 5",
            "UTC",
            "2025-04-12T00:00:00Z",
            "2025-04-13T00:00:00Z",
            "2025-04-11T00:00:00Z",
        ),
        // Day of week 7 is Sunday too; names work.
        (
            "0 0 * * 7",
            "UTC",
            "2025-04-18T00:00:00Z",
            "2025-04-20T00:00:00Z",
            "2025-04-13T00:00:00Z",
        ),
        (
            "0 9 * JAN,jul MON",
            "UTC",
            "2025-04-18T00:00:00Z",
            "2025-07-07T09:00:00Z",
            "2025-01-27T09:00:00Z",
        ),
        // February 29 comes every four years.
        (
            "0 12 29 2 *",
            "UTC",
            "2025-03-01T00:00:00Z",
            "2028-02-29T12:00:00Z",
            "2024-02-29T12:00:00Z",
        ),
        (
            "0 12 29 2 *",
            "America/New_York",
            "2025-03-01T00:00:00Z",
            "2028-02-29T17:00:00Z",
            "2024-02-29T17:00:00Z",
        ),
        // The last day of the month.
        (
            "0 0 L 2 *",
            "UTC",
            "2025-01-01T00:00:00Z",
            "2025-02-28T00:00:00Z",
            "2024-02-29T00:00:00Z",
        ),
        // A zone's ordinary offset: 06:00 in New York is 10:00 or 11:00 UTC.
        (
            "0 6 * * *",
            "America/New_York",
            "2025-07-01T00:00:00Z",
            "2025-07-01T10:00:00Z",
            "2025-06-30T10:00:00Z",
        ),
        (
            "0 6 * * *",
            "America/New_York",
            "2025-01-15T00:00:00Z",
            "2025-01-15T11:00:00Z",
            "2025-01-14T11:00:00Z",
        ),
        (
            "0 6 * * *",
            "Europe/London",
            "2025-07-01T00:00:00Z",
            "2025-07-01T05:00:00Z",
            "2025-06-30T05:00:00Z",
        ),
    ];
    for (pattern, tz, from, next, latest) in table {
        let s = schedule(pattern, tz);
        let case = format!("{pattern:?} in {tz} from {from}");
        assert_eq!(
            s.next_after(ts(from)).map(|t| t.to_string()).as_deref(),
            Some(next),
            "next: {case}"
        );
        assert_eq!(
            s.latest_at_or_before(ts(from))
                .map(|t| t.to_string())
                .as_deref(),
            Some(latest),
            "latest: {case}"
        );
    }
}

#[test]
fn new_york_spring_forward_moves_skipped_times_by_the_jump() {
    // 2025-03-09: at 02:00 EST the clock jumps to 03:00 EDT.
    let daily = schedule("30 2 * * *", "America/New_York");
    assert_eq!(
        upcoming(&daily, "2025-03-08T00:00:00Z", 3),
        [
            "2025-03-08T07:30:00Z", // 02:30 EST
            "2025-03-09T07:30:00Z", // 02:30 does not exist: 03:30 EDT
            "2025-03-10T06:30:00Z", // 02:30 EDT
        ]
    );
    // Every half hour: 02:00 and 02:30 land on 03:00 and 03:30, which run once each.
    let half_hourly = schedule("*/30 * * * *", "America/New_York");
    assert_eq!(
        upcoming(&half_hourly, "2025-03-09T06:00:00Z", 4),
        [
            "2025-03-09T06:30:00Z", // 01:30 EST
            "2025-03-09T07:00:00Z", // 02:00 -> 03:00 EDT, and 03:00 itself
            "2025-03-09T07:30:00Z", // 02:30 -> 03:30 EDT, and 03:30 itself
            "2025-03-09T08:00:00Z", // 04:00 EDT
        ]
    );
    // The moved time is the latest slot once it has passed, and not before.
    assert_eq!(
        daily
            .latest_at_or_before(ts("2025-03-09T07:29:59Z"))
            .unwrap()
            .to_string(),
        "2025-03-08T07:30:00Z"
    );
    assert_eq!(
        daily
            .latest_at_or_before(ts("2025-03-09T07:30:00Z"))
            .unwrap()
            .to_string(),
        "2025-03-09T07:30:00Z"
    );
}

#[test]
fn new_york_fall_back_runs_a_repeated_time_once_at_its_first_occurrence() {
    // 2025-11-02: at 02:00 EDT the clock goes back to 01:00 EST; 01:00-01:59 happen twice.
    let daily = schedule("30 1 * * *", "America/New_York");
    assert_eq!(
        upcoming(&daily, "2025-11-01T12:00:00Z", 2),
        [
            "2025-11-02T05:30:00Z", // 01:30 EDT; not again at 01:30 EST (06:30Z)
            "2025-11-03T06:30:00Z", // 01:30 EST the next day
        ]
    );
    let hourly = schedule("0 * * * *", "America/New_York");
    assert_eq!(
        upcoming(&hourly, "2025-11-02T03:30:00Z", 4),
        [
            "2025-11-02T04:00:00Z", // 00:00 EDT
            "2025-11-02T05:00:00Z", // 01:00 EDT (01:00 EST at 06:00Z does not run again)
            "2025-11-02T07:00:00Z", // 02:00 EST
            "2025-11-02T08:00:00Z", // 03:00 EST
        ]
    );
    // From inside the second 01:xx, the latest slot is the first pass's, the next is 02:00 EST.
    let quarterly = schedule("*/15 * * * *", "America/New_York");
    let inside = ts("2025-11-02T06:20:00Z"); // 01:20 EST, the second time round
    assert_eq!(
        quarterly.latest_at_or_before(inside).unwrap().to_string(),
        "2025-11-02T05:45:00Z"
    );
    assert_eq!(
        quarterly.next_after(inside).unwrap().to_string(),
        "2025-11-02T07:00:00Z"
    );
}

#[test]
fn london_changes_follow_the_same_rules() {
    // 2025-03-30: 01:00 GMT jumps to 02:00 BST. 2025-10-26: 02:00 BST goes back to 01:00 GMT.
    let daily = schedule("30 1 * * *", "Europe/London");
    assert_eq!(
        upcoming(&daily, "2025-03-29T00:00:00Z", 3),
        [
            "2025-03-29T01:30:00Z", // 01:30 GMT
            "2025-03-30T01:30:00Z", // 01:30 does not exist: 02:30 BST
            "2025-03-31T00:30:00Z", // 01:30 BST
        ]
    );
    assert_eq!(
        upcoming(&daily, "2025-10-25T12:00:00Z", 2),
        [
            "2025-10-26T00:30:00Z", // 01:30 BST, once
            "2025-10-27T01:30:00Z", // 01:30 GMT
        ]
    );
}

#[test]
fn impossible_and_malformed_schedules_are_refused_with_the_reason() {
    let now = ts("2025-04-18T00:00:00Z");
    for pattern in ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"] {
        assert_eq!(
            CronSchedule::parse(pattern, None, now).unwrap_err(),
            CronError::Never(pattern.into()),
            "{pattern}"
        );
    }
    for pattern in [
        "",
        "* * * *",
        "0 * * * * *",
        "@reboot",
        "@HOURLY",
        "61 * * * *",
        "0 24 * * *",
        "*/0 * * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
        " 0 6 * * *",
        "0 6 * * * ",
        "TZ=UTC 0 6 * * *",
    ] {
        let err = CronSchedule::parse(pattern, None, now).unwrap_err();
        assert!(
            matches!(err, CronError::Pattern { .. }),
            "{pattern:?}: {err}"
        );
        assert!(err.to_string().contains("five fields"), "{err}");
    }
    let err = CronSchedule::parse("0 6 * * *", Some("Mars/Olympus_Mons"), now).unwrap_err();
    assert_eq!(err, CronError::TimeZone("Mars/Olympus_Mons".into()));
    assert!(err.to_string().contains("IANA"));
}

#[test]
fn the_bundled_time_zone_database_has_the_zones_distroless_needs() {
    // The image has no /usr/share/zoneinfo: jiff falls back to its bundled copy.
    let bundled = TimeZoneDatabase::bundled();
    for name in ["America/New_York", "Europe/London", "Asia/Kolkata", "UTC"] {
        let tz = bundled.get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let system = time_zone(Some(name)).unwrap();
        let at = ts("2025-07-01T12:00:00Z");
        assert_eq!(tz.to_offset(at), system.to_offset(at), "{name}");
    }
}

// ---------------------------------------------------------------- properties

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe", // 30-minute DST changes
    "Pacific/Apia",        // skipped a whole day in 2011
    "Asia/Kolkata",
    "America/Sao_Paulo",
];

fn field(max: u32, min: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (min..=max).prop_map(|n| n.to_string()),
        (1..=max.max(2)).prop_map(|n| format!("*/{n}")),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

fn pattern() -> impl Strategy<Value = String> {
    (
        field(59, 0),
        field(23, 0),
        field(28, 1),
        field(12, 1),
        field(6, 0),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"))
}

fn instant() -> impl Strategy<Value = Timestamp> {
    // 2000 to 2100, across every DST rule change of the zones above.
    (946_684_800_i64..4_102_444_800).prop_map(|s| Timestamp::from_second(s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn slots_are_ordered_around_any_instant(p in pattern(), zone in 0..ZONES.len(), t in instant()) {
        let s = CronSchedule::parse(&p, Some(ZONES[zone]), t).unwrap();
        let next = s.next_after(t).unwrap();
        prop_assert!(next > t);
        // The next slot is a slot: the latest at or before it is itself.
        prop_assert_eq!(s.latest_at_or_before(next), Some(next));
        if let Some(latest) = s.latest_at_or_before(t) {
            prop_assert!(latest <= t);
            // Nothing is scheduled between the latest slot and `t`, nor between `t` and the next.
            prop_assert!(s.next_after(latest).unwrap() > t);
        }
        // Slots are whole minutes.
        prop_assert_eq!(next.as_second().rem_euclid(60), 0);
    }

    #[test]
    fn any_text_is_refused_or_parsed_without_panicking(p in "\\PC{0,200}", zone in "\\PC{0,80}", t in instant()) {
        let _ = CronSchedule::parse(&p, Some(&zone), t);
    }

    #[test]
    fn cron_looking_garbage_never_panics(p in "[0-9*/,#LW?A-Z-]{1,6}( [0-9*/,#LW?A-Z-]{1,6}){4}", t in instant()) {
        if let Ok(s) = CronSchedule::parse(&p, None, t) {
            let _ = (s.next_after(t), s.latest_at_or_before(t));
        }
    }
}
