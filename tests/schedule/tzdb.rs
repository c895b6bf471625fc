//! Schedules resolve IANA time zones without a usable system database: the
//! distroless image has no /usr/share/zoneinfo (jiff then uses the copy bundled
//! into the binary), and a system database may lack a zone. This binary holds one
//! test, so that it can point TZDIR at a database of one zone before anything reads
//! the database.

use amperity_operator::schedule::cron::{CronSchedule, time_zone};
use jiff::Timestamp;

#[test]
fn zones_come_from_the_bundled_database_when_the_system_has_none() {
    let sparse = std::env::temp_dir().join(format!("awsched-zoneinfo-{}", std::process::id()));
    std::fs::create_dir_all(&sparse).unwrap();
    // Where the machine has a database, a copy of its UTC alone; where it has none,
    // jiff finds nothing here either and uses the bundled copy by itself.
    let _ = std::fs::copy("/usr/share/zoneinfo/UTC", sparse.join("UTC"));
    // SAFETY: the only test of this binary, run before any thread reads the environment.
    unsafe { std::env::set_var("TZDIR", &sparse) };
    assert!(
        jiff::tz::db().get("America/New_York").is_err(),
        "a full system database is in use: {:?}",
        jiff::tz::db()
    );
    let new_york = time_zone(Some("America/New_York")).expect("the bundled copy has it");
    let winter: Timestamp = "2025-01-15T12:00:00Z".parse().unwrap();
    let summer: Timestamp = "2025-07-15T12:00:00Z".parse().unwrap();
    assert_eq!(new_york.to_offset(winter).seconds(), -5 * 3600);
    assert_eq!(new_york.to_offset(summer).seconds(), -4 * 3600);
    // And a schedule in it keeps its daylight-saving rules.
    let s = CronSchedule::parse("30 2 * * *", Some("America/New_York"), winter).unwrap();
    let spring: Timestamp = "2025-03-09T00:00:00Z".parse().unwrap();
    assert_eq!(
        s.next_after(spring).unwrap().to_string(),
        "2025-03-09T07:30:00Z"
    );
    assert!(time_zone(Some("Mars/Olympus_Mons")).is_err());
    let _ = std::fs::remove_dir_all(&sparse);
}
