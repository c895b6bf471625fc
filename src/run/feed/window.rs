//! The feed's pure decisions: how often a tenant is looked at, whether a look is
//! needed at all, where its window starts, which ends it missed, and which members
//! a list wakes.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{FeedSettings, Member};
use crate::amperity::wire::Workflow;

/// A group's cycle: its shortest poll interval, at least `min`.
pub fn cycle(intervals: impl Iterator<Item = Duration>, min: Duration) -> Duration {
    intervals.min().unwrap_or(min).max(min)
}

/// How often a group is looked at: every half of its shortest poll interval, at
/// least `min`. An end then waits at most half an interval for the list that
/// shows it, and the other half is left for what follows it: when a thousand runs
/// end together, their status writes and Events take seconds on the API server.
/// (One list more per interval: at a 10 s interval and 5 requests/s, 2% of the budget.)
pub fn look_every(intervals: impl Iterator<Item = Duration>, min: Duration) -> Duration {
    (cycle(intervals, Duration::ZERO) / 2).max(min)
}

/// How late routine polls may be while they count as keeping up.
pub const KEEP_UP_SLACK: Duration = Duration::from_secs(1);

/// Whether per-run polls already look at every one of a tenant's `runs` within
/// `shortest` interval, so that the feed would only add requests: the runs fit
/// in the interval (each poll takes a turn `period` long), and routine turns are
/// not queueing (a routine poll reserved now would wait `backlog`; runs that come
/// and go cost first polls the count of runs does not show).
pub fn polls_keep_up(runs: usize, period: Duration, backlog: Duration, shortest: Duration) -> bool {
    let runs = u32::try_from(runs).unwrap_or(u32::MAX);
    period.saturating_mul(runs) <= shortest && backlog <= KEEP_UP_SLACK
}

/// Where a look starts: the last look's start minus the overlap, or, for a group's
/// first look, its creation minus the lookback; never further back than the
/// lookback from now (a feed that failed for an hour does not ask for the hour).
pub fn window_start(
    looked_at: Option<Timestamp>,
    created: Timestamp,
    now: Timestamp,
    settings: &FeedSettings,
) -> Timestamp {
    let minus = |at: Timestamp, d: Duration| {
        SignedDuration::try_from(d)
            .ok()
            .and_then(|d| at.checked_sub(d).ok())
            .unwrap_or(Timestamp::MIN)
    };
    let from = match looked_at {
        // A last look "in the future" (the clock was set back) counts as now.
        Some(at) => minus(at.min(now), settings.overlap),
        None => minus(created, settings.lookback),
    };
    from.max(minus(now, settings.lookback))
}

/// Whether an end at `ended_at` was missed: it lies in what listed looks
/// `covered`, at least an `overlap` before the last of them started, so no window
/// to come reaches it (and the feed did not wake its run).
pub fn missed(
    covered: Option<(Timestamp, Timestamp)>,
    ended_at: Option<Timestamp>,
    overlap: Duration,
) -> bool {
    let (Some((from, last)), Some(ended)) = (covered, ended_at) else {
        return false;
    };
    let next_from = SignedDuration::try_from(overlap)
        .ok()
        .and_then(|o| last.checked_sub(o).ok())
        .unwrap_or(Timestamp::MIN);
    ended >= from && ended < next_from
}

/// A timestamp as the list's filters take it: whole seconds (rounded down, so
/// the window only grows), UTC.
pub(super) fn list_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A member to wake: its run was listed ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wake {
    pub uid: String,
    pub ended_at: String,
}

/// Which members the listed runs report ended, oldest end first (the runs that
/// have waited longest are read first), each once; a member already woken for the
/// same end is not woken again.
pub fn ended_members(members: &HashMap<String, Member>, listed: &[Workflow]) -> Vec<Wake> {
    let mut by_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for (uid, m) in members {
        by_id.entry(m.workflow_id.as_str()).or_default().push(uid);
    }
    let mut wakes: Vec<(Option<Timestamp>, Wake)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for w in listed.iter().filter(|w| w.has_ended()) {
        let Some(uids) = by_id.get(w.id.as_str()) else {
            continue;
        };
        let ended_at = crate::bounded::cut(w.ended_at.as_deref().unwrap_or_default(), 64);
        for uid in uids {
            let member = &members[*uid];
            if member.woken_for.as_deref() == Some(ended_at.as_str()) || !seen.insert(*uid) {
                continue;
            }
            wakes.push((
                ended_at.parse().ok(),
                Wake {
                    uid: uid.to_string(),
                    ended_at: ended_at.clone(),
                },
            ));
        }
    }
    // Unreadable ends last; ties by uid, so that the order is the same every time.
    wakes.sort_by(|(a, wa), (b, wb)| match (a, b) {
        (Some(a), Some(b)) => a.cmp(b).then_with(|| wa.uid.cmp(&wb.uid)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => wa.uid.cmp(&wb.uid),
    });
    wakes.into_iter().map(|(_, w)| w).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn member(id: &str, woken_for: Option<&str>) -> Member {
        Member {
            workflow_id: id.into(),
            namespace: "ns".into(),
            name: format!("r-{id}"),
            poll_interval: Duration::from_secs(10),
            woken_for: woken_for.map(str::to_string),
        }
    }

    fn listed(id: &str, state: &str, ended_at: Option<&str>) -> Workflow {
        let mut w = json!({"id": id, "state": state, "type": "courier.group/run", "name": "n",
                           "tenant": "t", "created_at": "2026-04-01T00:00:00Z"});
        if let Some(e) = ended_at {
            w["ended_at"] = json!(e);
        }
        serde_json::from_value(w).unwrap()
    }

    #[test]
    fn the_cycle_is_the_shortest_interval_but_never_under_the_minimum() {
        let s = |v: &[u64]| {
            v.iter()
                .map(|s| Duration::from_secs(*s))
                .collect::<Vec<_>>()
        };
        let min = Duration::from_secs(5);
        for (intervals, expected) in [
            (s(&[10, 30, 60]), 10),
            (s(&[1, 30]), 5),
            (s(&[5]), 5),
            (s(&[86_400]), 86_400),
            (s(&[]), 5),
        ] {
            assert_eq!(
                cycle(intervals.into_iter(), min),
                Duration::from_secs(expected)
            );
        }
    }

    #[test]
    fn a_group_is_looked_at_every_half_interval_at_least_the_minimum() {
        let s =
            |v: &[u64]| -> Vec<Duration> { v.iter().map(|s| Duration::from_secs(*s)).collect() };
        let min = Duration::from_secs(5);
        for (intervals, expected) in [
            (s(&[10, 30, 60]), 5.0),
            (s(&[20, 30]), 10.0),
            (s(&[15]), 7.5),
            (s(&[1, 30]), 5.0),
            (s(&[86_400]), 43_200.0),
            (s(&[]), 5.0),
        ] {
            assert_eq!(
                look_every(intervals.into_iter(), min),
                Duration::from_secs_f64(expected),
            );
        }
    }

    #[test]
    fn the_feed_is_skipped_while_polls_keep_up() {
        let period = Duration::from_millis(206); // 5/s
        let ten = Duration::from_secs(10);
        let ms = Duration::from_millis;
        for (runs, backlog, keep_up) in [
            (0, ms(0), true),
            (40, ms(0), true),
            (48, ms(1000), true),
            (49, ms(0), false),
            (1000, ms(0), false),
            (usize::MAX, ms(0), false),
            // Few runs, but polls queue (runs come and go faster than the budget
            // polls them): the feed asks.
            (40, ms(1001), false),
            (10, ms(30_000), false),
        ] {
            assert_eq!(
                polls_keep_up(runs, period, backlog, ten),
                keep_up,
                "{runs} runs, backlog {backlog:?}"
            );
        }
    }

    #[test]
    fn each_look_starts_an_overlap_before_the_last_and_never_past_the_lookback() {
        let settings = FeedSettings::default();
        let now = at("2026-04-01T12:00:00Z");
        let created = at("2026-04-01T11:59:50Z");
        for (looked_at, expected) in [
            // The first look reaches back the whole lookback from the group's creation.
            (None, "2026-04-01T11:50:00Z"),
            // Later looks: the last look's start minus the overlap.
            (Some("2026-04-01T11:59:50Z"), "2026-04-01T11:58:50Z"),
            // After an hour of failed looks: the lookback from now, not the hour.
            (Some("2026-04-01T11:00:00Z"), "2026-04-01T11:50:00Z"),
            // A last look in the future (the clock was set back): an overlap before now.
            (Some("2026-04-01T13:00:00Z"), "2026-04-01T11:59:00Z"),
        ] {
            assert_eq!(
                window_start(looked_at.map(at), created, now, &settings),
                at(expected),
                "{looked_at:?}"
            );
        }
        // Absurd settings and clocks do not overflow.
        let absurd = FeedSettings {
            overlap: Duration::MAX,
            lookback: Duration::MAX,
            ..FeedSettings::default()
        };
        assert_eq!(
            window_start(
                Some(Timestamp::MIN),
                Timestamp::MIN,
                Timestamp::MIN,
                &absurd
            ),
            Timestamp::MIN
        );
        assert_eq!(
            list_time(at("2026-04-01T11:58:50.999Z")),
            "2026-04-01T11:58:50Z"
        );
    }

    #[test]
    fn an_end_is_missed_only_once_the_windows_passed_it() {
        let covered = Some((at("2026-04-01T12:00:00Z"), at("2026-04-01T12:05:00Z")));
        let overlap = Duration::from_secs(60);
        for (ended, expected) in [
            // Before the feed looked: per-run polls' to find.
            (Some("2026-04-01T11:59:59Z"), false),
            (Some("2026-04-01T12:00:00Z"), true),
            (Some("2026-04-01T12:03:59Z"), true),
            // The next window still reaches it.
            (Some("2026-04-01T12:04:00Z"), false),
            (Some("2026-04-01T12:10:00Z"), false),
            (None, false),
        ] {
            assert_eq!(
                missed(covered, ended.map(at), overlap),
                expected,
                "{ended:?}"
            );
        }
        assert!(!missed(None, Some(at("2026-04-01T12:01:00Z")), overlap));
        assert!(!missed(
            Some((Timestamp::MIN, Timestamp::MIN)),
            Some(Timestamp::MIN),
            Duration::MAX
        ));
    }

    #[test]
    fn members_listed_ended_are_woken_oldest_end_first_and_once() {
        let members: HashMap<String, Member> = [
            ("u1", member("wf-1", None)),
            ("u2", member("wf-2", None)),
            ("u3", member("wf-3", Some("2026-04-01T10:00:03.000Z"))),
            ("u4", member("wf-4", None)),
            ("u5", member("wf-5", None)),
            // Two resources following the same run are both woken.
            ("u6", member("wf-1", None)),
        ]
        .into_iter()
        .map(|(u, m)| (u.to_string(), m))
        .collect();
        let list = [
            listed("wf-2", "succeeded", Some("2026-04-01T10:00:05.000Z")),
            listed("wf-1", "failed", Some("2026-04-01T10:00:01.000Z")),
            // Woken for this very end at an earlier look (the overlap lists it again).
            listed("wf-3", "succeeded", Some("2026-04-01T10:00:03.000Z")),
            // Not a member's run.
            listed("wf-9", "succeeded", Some("2026-04-01T10:00:00.000Z")),
            // Listed, but not ended: nothing to wake for.
            listed("wf-4", "running", None),
            // Ended, with an end time that does not parse: last.
            listed("wf-5", "canceled", Some("yesterday")),
            // The same run on two pages: once.
            listed("wf-2", "succeeded", Some("2026-04-01T10:00:05.000Z")),
        ];
        let order: Vec<String> = ended_members(&members, &list)
            .into_iter()
            .map(|w| w.uid)
            .collect();
        assert_eq!(order, ["u1", "u6", "u2", "u5"]);
        // A different end of a run already woken (the list lied before, or the run
        // was retried under the same id) wakes it again.
        let again = [listed("wf-3", "failed", Some("2026-04-01T10:07:00.000Z"))];
        assert_eq!(ended_members(&members, &again).len(), 1);
    }
}
