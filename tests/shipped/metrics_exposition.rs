//! The series the operator exports, as its alerts and dashboard see them.
//!
//! `tests/chart/exposition.txt` is the `/metrics` text of `Metrics` after one of each
//! thing the operator records (every phase, final reason, endpoint and status code
//! the rules and dashboard name). The chart tests check every alert expression, every
//! promtool unit-test series and every dashboard query against it, so a rule cannot
//! name a series, a label or a label value the operator does not export. This test
//! keeps the file equal to what the code encodes, and fails when a metric is added
//! without a sample here. Regenerate it with
//! `AMPERITY_BLESS=1 cargo test --test shipped metrics_exposition`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use amperity_operator::crd::Phase;
use amperity_operator::metrics::{
    Metrics, ReasonLabels, SCHEDULE_OUTCOMES, ScheduleLabels, WORKFLOW_TYPES,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/chart/exposition.txt")
}

/// One of each thing the operator records.
fn recorded() -> Metrics {
    let m = Metrics::default();
    let phases = [
        Phase::Pending,
        Phase::Starting,
        Phase::Running,
        Phase::Stopping,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Canceled,
        Phase::TimedOut,
    ];
    for (i, phase) in phases.into_iter().enumerate() {
        m.set_phase(&format!("uid-{i}"), Some(phase));
    }
    m.reconciles.inc();
    m.status_writes.inc();
    m.reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: "writing status".into(),
        })
        .inc();
    let answers: [(&str, Option<u16>); 13] = [
        ("start", Some(201)),
        ("start", Some(400)),
        ("get", Some(200)),
        ("get", Some(401)),
        ("get", Some(403)),
        ("get", Some(429)),
        ("get", Some(500)),
        ("get", Some(503)),
        ("get", None),
        ("list", Some(200)),
        ("feed", Some(200)),
        ("feed", Some(500)),
        ("stop", Some(200)),
    ];
    for (call, code) in answers {
        m.record_request(call, "socktown", code, Duration::from_millis(120));
    }
    for outcome in ["ok", "refused", "failed"] {
        m.record_token_exchange("socktown", outcome);
    }
    // Every reason a run stalls with (run/decide; the README's troubleshooting table).
    for (i, reason) in [
        "SecretNotFound",
        "SecretKeyMissing",
        "SecretUnreadable",
        "AuthFailed",
        "StartUnconfirmed",
        "ApiRejected",
    ]
    .into_iter()
    .enumerate()
    {
        m.set_stalled(&format!("stalled-{i}"), Some(("marketing", reason)));
    }
    m.rate_limit_wait_seconds.inc_by(0.5);
    let finished = [
        (Phase::Succeeded, "Succeeded"),
        (Phase::Failed, "CustomerError"),
        (Phase::Failed, "PlatformError"),
        (Phase::Failed, "RetriesExhausted"),
        (Phase::Canceled, "Canceled"),
        (Phase::TimedOut, "TimedOut"),
    ];
    for (i, (phase, reason)) in finished.into_iter().enumerate() {
        let workflow_type = WORKFLOW_TYPES[i % WORKFLOW_TYPES.len()];
        m.record_finished(workflow_type, phase, reason, Duration::from_secs(600));
    }
    m.deprecation("2024-04-01");
    m.leader.set(1);
    m.schedule_controller_running.set(1);
    m.reconcile_panics.inc();
    m.poll_failures.inc();
    for outcome in ["listed", "failed", "skipped"] {
        m.feed_look(outcome);
    }
    for operation in ["read", "write"] {
        m.claims_ledger_error(operation);
    }
    m.claims_ledger_writes.inc();
    m.claims_ledger_dropped.inc();
    m.feed_wakes.inc();
    m.feed_missed.inc();
    m.feed_disagreed.inc();
    for outcome in SCHEDULE_OUTCOMES {
        m.schedule_runs
            .get_or_create(&ScheduleLabels { outcome })
            .inc();
    }
    m
}

/// The exposition with each family's samples sorted (families keep no order of their own).
fn normalized(text: &str) -> String {
    let mut out = Vec::new();
    let mut samples: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            samples.sort_unstable();
            out.append(&mut samples);
            out.push(line);
        } else if !line.is_empty() {
            samples.push(line);
        }
    }
    samples.sort_unstable();
    out.append(&mut samples);
    out.join("\n") + "\n"
}

#[test]
fn the_fixture_is_what_the_operator_exports() {
    let encoded = normalized(&recorded().encode());
    if std::env::var_os("AMPERITY_BLESS").is_some() {
        std::fs::write(fixture(), &encoded).unwrap();
    }
    let committed = std::fs::read_to_string(fixture()).unwrap_or_default();
    assert!(
        committed == encoded,
        "{} is out of date: run `AMPERITY_BLESS=1 cargo test --test shipped metrics_exposition` and \
         check the chart's alerts and dashboard against the change",
        fixture().display()
    );
}

#[test]
fn every_metric_has_a_sample_in_the_fixture() {
    let text = recorded().encode();
    let mut families: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap().to_string();
            families.insert(name, 0);
        } else if !line.starts_with('#') && !line.is_empty() {
            let sample = line.split(['{', ' ']).next().unwrap();
            let family = families
                .keys()
                .filter(|f| sample.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned()
                .unwrap_or_else(|| panic!("sample {sample} of no family"));
            *families.get_mut(&family).unwrap() += 1;
        }
    }
    let empty: Vec<&String> = families
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(f, _)| f)
        .collect();
    assert!(
        empty.is_empty(),
        "record a sample of {empty:?} in tests/shipped/metrics_exposition.rs, then regenerate the fixture"
    );
    assert!(!families.is_empty(), "no # TYPE line in:\n{text}");
}
