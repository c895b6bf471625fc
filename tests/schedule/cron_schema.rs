//! What the CRD's pattern for `spec.schedule` keeps out at apply time (fields out
//! of range, unknown names), and that it never keeps out a pattern the operator's
//! parser (croner, as the operator configures it) accepts.

use amperity_operator::crd::schedule::CRON_PATTERN;
use croner::parser::{CronParser, Seconds, Year};
use proptest::prelude::*;

fn schema_accepts(pattern: &str) -> bool {
    regex::Regex::new(CRON_PATTERN).unwrap().is_match(pattern)
}

fn croner_accepts(pattern: &str) -> bool {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .is_ok()
}

#[test]
fn the_schema_refuses_fields_out_of_range_and_unknown_names() {
    for bad in [
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 0 *",
        "* * * 13 *",
        "* * * * 8",
        "* * * FOO *",
        "* * * * FUNDAY",
        "0-60 * * * *",
        "* 1-25 * * *",
        "*/5 * * * * *",
        "* * * *",
        "@reboot",
        // croner reads an empty item as nothing; the schema takes it for a typo.
        "1,,2 * * * *",
        "* * * * 1#6",
    ] {
        assert!(!schema_accepts(bad), "{bad:?} passes the schema");
    }
    for good in [
        "0 6 * * 1-5",
        "*/15 * * * *",
        "30 2 * * *",
        "0 0 L * *",
        "0 0 15W * *",
        "0 0 LW * *",
        "0 0 * * 5L",
        "0 0 * * MON#2",
        "0 0 1 jan,Jul *",
        "0 9-17/2 * * mon-fri",
        "5/10 * ? * *",
        "00 07 01 01 0",
        "59 23 31 12 7",
        "@yearly",
        "@midnight",
        "0\t6 * * *",
    ] {
        assert!(schema_accepts(good), "{good:?} is refused by the schema");
    }
}

/// One field's text from pieces, some out of range: values (with leading zeros),
/// names in any case, `*`, `?`, ranges, steps, lists and the L/W/# forms.
fn field(max: u32, names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let numbers = prop_oneof![
        (0..max + 3).prop_map(|v| v.to_string()),
        (0..max + 3).prop_map(|v| format!("{v:02}")),
    ];
    let value: BoxedStrategy<String> = if names.is_empty() {
        numbers.boxed()
    } else {
        let named = proptest::sample::select(names.to_vec()).prop_flat_map(|n| {
            prop_oneof![
                Just(n.to_string()),
                Just(n.to_lowercase()),
                Just(format!("{}{}", &n[..1], n[1..].to_lowercase()))
            ]
        });
        prop_oneof![numbers, named].boxed()
    };
    let item = prop_oneof![
        Just("*".to_string()),
        Just("?".to_string()),
        value.clone(),
        (value.clone(), value.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        (value.clone(), 0..70u32).prop_map(|(a, s)| format!("{a}/{s}")),
        (0..70u32).prop_map(|s| format!("*/{s}")),
        (value.clone(), value.clone(), 1..30u32).prop_map(|(a, b, s)| format!("{a}-{b}/{s}")),
        Just("L".to_string()),
        Just("LW".to_string()),
        (value.clone()).prop_map(|v| format!("{v}W")),
        (value.clone()).prop_map(|v| format!("{v}L")),
        (value, 0..7u32).prop_map(|(v, n)| format!("{v}#{n}")),
    ];
    proptest::collection::vec(item, 1..4).prop_map(|items| items.join(","))
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_schema_never_refuses_a_pattern_the_operator_parses(
        minute in field(59, &[]),
        hour in field(23, &[]),
        day in field(31, &[]),
        month in field(12, MONTHS),
        weekday in field(7, DAYS),
    ) {
        let pattern = format!("{minute} {hour} {day} {month} {weekday}");
        if croner_accepts(&pattern) {
            prop_assert!(schema_accepts(&pattern), "{pattern:?}: croner parses it, the schema refuses it");
        }
    }
}
