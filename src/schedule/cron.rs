//! A cron pattern read in a time zone: which instants are scheduled times.
//!
//! croner searches civil (wall-clock) times; each civil time it finds becomes one
//! instant by jiff's "compatible" rule, which gives the daylight-saving behaviour
//! the schedule documents:
//! - a civil time that happens twice (the clock goes back) is one scheduled time,
//!   at its first occurrence;
//! - a civil time that does not exist (the clock jumps forward) moves later by the
//!   length of the jump (02:30 becomes 03:30), and runs once even when another
//!   civil time lands on the same instant.
//!
//! A moved time can land after civil times that come later on the clock, so the
//! searches do not trust civil order near a transition: they look at every civil
//! match within [`WINDOW`] of the answer (an offset never changes by more than
//! that) and keep the nearest instant.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::crd::schedule::CRON_PATTERN;

/// More than any change of a time zone's offset (UTC-12 to UTC+14 is 26 hours).
const WINDOW: SignedDuration = SignedDuration::from_hours(26);
/// Civil matches one search looks at: a match every minute across two windows is
/// 3,120, so this bounds the work without ever cutting a search short.
const MAX_STEPS: usize = 4_000;
const MAX_PATTERN_CHARS: usize = 128;

static PATTERN: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(CRON_PATTERN).expect("a valid regex"));

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "{pattern:?} is not a cron schedule ({why}): use five fields, minute hour day-of-month month day-of-week (e.g. \"0 6 * * 1-5\"), or @hourly, @daily, @weekly, @monthly or @yearly"
    )]
    Pattern { pattern: String, why: String },
    #[error(
        "{0:?} is not a time zone this operator knows: use an IANA name such as America/New_York, Europe/London or UTC"
    )]
    TimeZone(String),
    #[error(
        "{0:?} never matches a date that exists (such as 30 February): no run would ever start"
    )]
    Never(String),
}

/// A parsed schedule: the pattern and the zone it is read in.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    cron: Cron,
    tz: TimeZone,
}

/// The time zone for an IANA name (UTC when none is given): from the system's
/// database where there is one, else (the distroless image has none), or when the
/// system's lacks the name, from the copy bundled into the binary.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    let Some(name) = name else {
        return Ok(TimeZone::UTC);
    };
    jiff::tz::db()
        .get(name)
        .or_else(|_| bundled().get(name))
        .map_err(|_| CronError::TimeZone(name.to_string()))
}

fn bundled() -> &'static jiff::tz::TimeZoneDatabase {
    static BUNDLED: std::sync::LazyLock<jiff::tz::TimeZoneDatabase> =
        std::sync::LazyLock::new(jiff::tz::TimeZoneDatabase::bundled);
    &BUNDLED
}

impl CronSchedule {
    /// Parses `pattern` in the zone named `time_zone`; `now` is where the check that
    /// the pattern matches any time at all starts.
    pub fn parse(
        pattern: &str,
        time_zone_name: Option<&str>,
        now: Timestamp,
    ) -> Result<CronSchedule, CronError> {
        let refuse = |why: &str| CronError::Pattern {
            pattern: pattern.chars().take(MAX_PATTERN_CHARS).collect(),
            why: why.to_string(),
        };
        if pattern.len() > MAX_PATTERN_CHARS {
            return Err(refuse("longer than 128 characters"));
        }
        if !PATTERN.is_match(pattern) {
            return Err(refuse("not five fields or a known @ macro"));
        }
        let normalized = if pattern == "@midnight" {
            "@daily"
        } else {
            pattern
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(normalized)
            .map_err(|e| refuse(&e.to_string()))?;
        let schedule = CronSchedule {
            cron,
            tz: time_zone(time_zone_name)?,
        };
        if schedule.next_after(now).is_none() {
            return Err(CronError::Never(pattern.to_string()));
        }
        Ok(schedule)
    }

    /// The instant a civil time is scheduled at (see the module's DST rules).
    pub fn instant(&self, civil: DateTime) -> Option<Timestamp> {
        self.tz.to_ambiguous_timestamp(civil).compatible().ok()
    }

    /// The wall-clock time of an instant in the schedule's zone.
    pub fn civil(&self, at: Timestamp) -> DateTime {
        self.tz.to_datetime(at)
    }

    /// Whether no offset change happens within [`WINDOW`] of `at`: there, civil
    /// order is instant order and the first civil match is the answer.
    fn steady_around(&self, at: Timestamp) -> bool {
        let (Ok(from), Ok(to)) = (at.checked_sub(WINDOW), at.checked_add(WINDOW)) else {
            return false;
        };
        self.tz
            .following(from)
            .next()
            .is_none_or(|transition| transition.timestamp() > to)
    }

    /// The first scheduled time strictly after `t`, if any.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let origin = self.civil(t);
        let first = self
            .cron
            .find_next_occurrence(&origin, false)
            .ok()
            .and_then(|civil| self.instant(civil));
        if let Some(at) = first
            && at > t
            && self.steady_around(t)
            && self.steady_around(at)
        {
            return Some(at);
        }
        let mut cursor = origin.checked_sub(WINDOW).ok()?;
        let mut best: Option<(DateTime, Timestamp)> = None;
        for _ in 0..MAX_STEPS {
            let Ok(civil) = self.cron.find_next_occurrence(&cursor, false) else {
                break;
            };
            if let Some((found, _)) = best
                && found.checked_add(WINDOW).is_ok_and(|limit| civil > limit)
            {
                break;
            }
            if let Some(at) = self.instant(civil)
                && at > t
                && best.is_none_or(|(_, b)| at < b)
            {
                best = Some((civil, at));
            }
            cursor = civil;
        }
        best.map(|(_, at)| at)
    }

    /// The last scheduled time at or before `t`, if any.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let origin = self.civil(t);
        let first = self
            .cron
            .find_previous_occurrence(&origin, true)
            .ok()
            .and_then(|civil| self.instant(civil));
        if let Some(at) = first
            && at <= t
            && self.steady_around(t)
            && self.steady_around(at)
        {
            return Some(at);
        }
        let mut cursor = origin.checked_add(WINDOW).ok()?;
        let mut best: Option<(DateTime, Timestamp)> = None;
        for _ in 0..MAX_STEPS {
            let Ok(civil) = self.cron.find_previous_occurrence(&cursor, false) else {
                break;
            };
            if let Some((found, _)) = best
                && found.checked_sub(WINDOW).is_ok_and(|limit| civil < limit)
            {
                break;
            }
            if let Some(at) = self.instant(civil)
                && at <= t
                && best.is_none_or(|(_, b)| at > b)
            {
                best = Some((civil, at));
            }
            cursor = civil;
        }
        best.map(|(_, at)| at)
    }
}
