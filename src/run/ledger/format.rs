//! The text of the claims ledger: which runs resources that are gone followed, and
//! when they went. Pure: parsing, merging, pruning and bounds, so that what any
//! replica (or anyone with write access to the ConfigMap) left there can be read
//! without trusting it.
//!
//! One line per run: `<unix seconds> <run id>`, the departure time first, a single
//! space, then the id to the end of the line (an id may hold spaces; it never holds
//! a line break, which is a control character). Lines are sorted oldest first.
//! A line that does not parse, or names an id the operator would never follow, is
//! ignored; a time in the future counts as now.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

use crate::amperity::wire::run_id_problem;
use crate::run::tracking::DEPARTED_RETENTION;

/// The ConfigMap key that holds the ledger's lines.
pub const DATA_KEY: &str = "departed";

/// At most this many runs are kept (the newest departures).
pub const MAX_ENTRIES: usize = 10_000;

/// At most this many bytes of text: well under the API server's 1 MiB object limit,
/// with room for the object's metadata.
pub const MAX_BYTES: usize = 768 * 1024;

/// What a merge produced: the new text, and how many departures still within the
/// retention did not fit (the bounds dropped them, oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub text: String,
    pub kept: usize,
    pub dropped_unexpired: usize,
}

/// The departures in `text`, each id with its latest departure time. Times after
/// `now` clamp to `now` (a clock ahead, or a hand-edited line, must not keep a
/// claim for ever). Expired entries are kept: [`merge`] and [`unexpired`] prune.
pub fn parse(text: &str, now: Timestamp) -> HashMap<String, Timestamp> {
    let mut entries = HashMap::new();
    for line in text.lines() {
        if let Some((id, at)) = parse_line(line, now) {
            add(&mut entries, id.to_string(), at);
        }
    }
    entries
}

fn parse_line(line: &str, now: Timestamp) -> Option<(&str, Timestamp)> {
    let (secs, id) = line.split_once(' ')?;
    // Digits only: no sign, no spaces, and few enough to fit an i64.
    if secs.is_empty() || secs.len() > 18 || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if run_id_problem(id).is_some() {
        return None;
    }
    let at = Timestamp::from_second(secs.parse().ok()?).ok()?;
    Some((id, at.min(now)))
}

fn add(entries: &mut HashMap<String, Timestamp>, id: String, at: Timestamp) {
    let slot = entries.entry(id).or_insert(at);
    *slot = (*slot).max(at);
}

/// The earliest departure still claimed at `now`.
fn cutoff(now: Timestamp) -> Timestamp {
    let keep = SignedDuration::try_from(DEPARTED_RETENTION).unwrap_or(SignedDuration::MAX);
    now.saturating_sub(keep).unwrap_or(Timestamp::MIN)
}

/// The departures in `text` still claimed at `now` (what a replica loads).
pub fn unexpired(text: &str, now: Timestamp) -> Vec<(String, Timestamp)> {
    let since = cutoff(now);
    parse(text, now)
        .into_iter()
        .filter(|(_, at)| *at >= since)
        .collect()
}

/// The ledger `current` with `departures` added at `now`: expired entries pruned,
/// then the newest kept within [`MAX_ENTRIES`] and [`MAX_BYTES`]. The text is the
/// same for the same entries, so an unchanged ledger need not be written.
pub fn merge(current: &str, departures: &[(String, Timestamp)], now: Timestamp) -> Merged {
    let mut entries = parse(current, now);
    for (id, at) in departures {
        if run_id_problem(id).is_none() {
            add(&mut entries, id.clone(), (*at).min(now));
        }
    }
    let since = cutoff(now);
    let mut live: Vec<(Timestamp, String)> = entries
        .into_iter()
        .filter(|(_, at)| *at >= since)
        .map(|(id, at)| (at, id))
        .collect();
    // Newest first, to keep the newest when the bounds cut.
    live.sort_unstable_by(|a, b| b.cmp(a));
    let mut bytes = 0usize;
    let mut kept = Vec::new();
    for (at, id) in &live {
        let line = line_len(*at, id);
        if kept.len() == MAX_ENTRIES || bytes.saturating_add(line) > MAX_BYTES {
            break;
        }
        bytes += line;
        kept.push((*at, id.as_str()));
    }
    let dropped_unexpired = live.len() - kept.len();
    kept.reverse();
    let mut text = String::with_capacity(bytes);
    for (at, id) in &kept {
        text.push_str(&format!("{} {id}\n", at.as_second()));
    }
    Merged {
        text,
        kept: kept.len(),
        dropped_unexpired,
    }
}

fn line_len(at: Timestamp, id: &str) -> usize {
    // The seconds, a space, the id and the line break.
    at.as_second().to_string().len() + 1 + id.len() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_780_000_000 + secs).unwrap()
    }

    fn ids(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect()
    }

    const HOUR: i64 = DEPARTED_RETENTION.as_secs() as i64;

    #[test]
    fn departures_are_added_sorted_oldest_first_and_a_rewrite_changes_nothing() {
        let now = at(100);
        let m = merge("", &[("wf-b".into(), at(90)), ("wf-a".into(), at(50))], now);
        assert_eq!(
            m.text,
            format!("{} wf-a\n{} wf-b\n", at(50).as_second(), at(90).as_second())
        );
        assert_eq!((m.kept, m.dropped_unexpired), (2, 0));
        assert_eq!(merge(&m.text, &[], now).text, m.text);
        // The same run departing again keeps its latest time.
        let again = merge(&m.text, &[("wf-a".into(), at(95))], now);
        assert_eq!(ids(&again.text), ["wf-b", "wf-a"]);
    }

    #[test]
    fn entries_expire_the_retention_after_they_departed() {
        let m = merge(
            "",
            &[("wf-old".into(), at(0)), ("wf-new".into(), at(10))],
            at(10),
        );
        assert_eq!(
            ids(&merge(&m.text, &[], at(HOUR)).text),
            ["wf-old", "wf-new"]
        );
        assert_eq!(ids(&merge(&m.text, &[], at(HOUR + 1)).text), ["wf-new"]);
        assert_eq!(
            unexpired(&m.text, at(HOUR + 1)),
            [("wf-new".to_string(), at(10))]
        );
        assert!(merge(&m.text, &[], at(HOUR + 11)).text.is_empty());
    }

    #[test]
    fn hostile_lines_are_ignored_and_future_times_clamp_to_now() {
        let now = at(0);
        let text = format!(
            "garbage\n\n-5 wf-neg\n+5 wf-plus\n99999999999999999999 wf-huge\n{} \n{} ../x\n{} a/b\n{} {}\n{} wf ok\r\n{} wf-future\n 1 wf-lead\n",
            now.as_second(),
            now.as_second(),
            now.as_second(),
            now.as_second(),
            "x".repeat(257),
            now.as_second(),
            now.as_second() + 10_000_000,
        );
        let parsed = parse(&text, now);
        let mut names: Vec<&str> = parsed.keys().map(String::as_str).collect();
        names.sort();
        // An id may hold a space; a Windows line end is a line end.
        assert_eq!(names, ["wf ok", "wf-future"], "{parsed:?}");
        assert_eq!(parsed["wf-future"], now);
        // Once written back, a future time is now's, and expires the retention after.
        let written = merge(&text, &[], now);
        assert_eq!(written.kept, 2);
        assert!(merge(&written.text, &[], at(HOUR + 1)).text.is_empty());
        // An id of the longest length the operator follows is kept.
        let longest = "y".repeat(256);
        assert_eq!(
            parse(&format!("{} {longest}\n", now.as_second()), now).len(),
            1
        );
    }

    #[test]
    fn the_bounds_keep_the_newest_and_count_what_they_drop() {
        let now = at(3000);
        let many: Vec<(String, Timestamp)> = (0..MAX_ENTRIES as i64 + 5)
            .map(|i| (format!("wf-{i}"), at(i % 3000)))
            .collect();
        let m = merge("", &many, now);
        assert_eq!((m.kept, m.dropped_unexpired), (MAX_ENTRIES, 5));
        assert_eq!(m.text.lines().count(), MAX_ENTRIES);
        // Long ids reach the byte bound before the count bound.
        let long: Vec<(String, Timestamp)> = (0..4000i64)
            .map(|i| (format!("{i:0>250}"), at(i % 3000)))
            .collect();
        let m = merge("", &long, now);
        assert!(
            m.text.len() <= MAX_BYTES && m.dropped_unexpired > 0,
            "{}",
            m.text.len()
        );
        assert_eq!(m.kept + m.dropped_unexpired, 4000);
        // The ones dropped are the oldest.
        let oldest_kept = parse(&m.text, now).values().min().copied().unwrap();
        let dropped = long.len() - m.kept;
        let mut times: Vec<Timestamp> = long.iter().map(|(_, t)| *t).collect();
        times.sort();
        assert!(oldest_kept >= times[dropped - 1]);
    }

    proptest! {
        #[test]
        fn any_ledger_text_merges_within_bounds_and_keeps_new_departures(
            text in ".{0,2000}",
            lines in proptest::collection::vec((any::<i64>(), "[ -~]{0,40}"), 0..40),
            new_id in "wf-[a-z0-9]{1,20}",
            secs in 0i64..4_000_000_000,
        ) {
            let now = Timestamp::from_second(secs).unwrap();
            let mut hostile = text;
            for (t, id) in &lines {
                hostile.push_str(&format!("{t} {id}\n"));
            }
            let m = merge(&hostile, &[(new_id.clone(), now)], now);
            prop_assert!(m.text.len() <= MAX_BYTES);
            prop_assert!(m.kept <= MAX_ENTRIES);
            let back = parse(&m.text, now);
            prop_assert_eq!(back.get(&new_id), Some(&now));
            prop_assert_eq!(back.len(), m.kept);
            // Nothing read back lies in the future, and merging again is stable.
            prop_assert!(back.values().all(|at| *at <= now));
            prop_assert_eq!(merge(&m.text, &[], now).text, m.text);
        }
    }
}
