//! The spec rules, enforced in Rust: the reconciler checks them before any API call
//! (API servers older than 1.25 ignore the CRD's CEL rules) and `local` checks a
//! manifest with them.
//!
//! Two halves: the schema's keywords (types, patterns, enums, bounds) are checked
//! here field by field, with messages that say how to fix them; the cross-field and
//! range rules are the CRD's own CEL rules (`x-kubernetes-validations` in
//! `crd/run.rs`), evaluated here from the generated schema, so each is written once.
//!
//! Validation works on the JSON form of the spec so that every problem is found at
//! once, each with its field path, including ones a typed decode would stop at.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use crate::crd::{
    AmperityWorkflowRunSpec, CONFIG_ID_PATTERN, DURATION_PATTERN, MAX_DURATION_CHARS,
    MAX_ENDPOINT_CHARS, MAX_TTL_SECONDS, RANGE_PATTERN, SECRET_KEY_PATTERN, SECRET_NAME_PATTERN,
};

/// The shortest poll interval a resource may ask for.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The longest poll interval a resource may ask for.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The longest timeout a resource may ask for (30 days).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(720 * 3600);
pub const MAX_RETRY_LIMIT: u64 = 10;

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the resource root, e.g. `spec.range.to`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All problems of a spec, joined into one line for a condition message.
pub fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

static CONFIG_ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(CONFIG_ID_PATTERN).unwrap());
static RANGE_VALUE: LazyLock<Regex> = LazyLock::new(|| Regex::new(RANGE_PATTERN).unwrap());
static DURATION: LazyLock<Regex> = LazyLock::new(|| Regex::new(DURATION_PATTERN).unwrap());
static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(SECRET_NAME_PATTERN).unwrap());
static SECRET_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(SECRET_KEY_PATTERN).unwrap());
static TENANT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]*$").unwrap());
static API_VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$").unwrap());

const KNOWN_FIELDS: &[&str] = &[
    "tenant",
    "endpoint",
    "amperityApiVersion",
    "tokenSecretRef",
    "connectionRef",
    "configId",
    "runMode",
    "range",
    "pollInterval",
    "timeout",
    "retry",
    "ttlSecondsAfterFinished",
    "stop",
    "deletionPolicy",
    "workflowId",
];

/// Checks a typed spec (the reconciler's case).
pub fn validate_spec(spec: &AmperityWorkflowRunSpec) -> Result<(), Vec<FieldError>> {
    // Bounded: the memory starts over when full.
    const REMEMBERED: usize = 512;
    let key = serde_json::to_string(spec).expect("a spec serializes to JSON");
    let errors = match CHECKED.with_borrow(|m| m.get(&key).cloned()) {
        Some(errors) => errors,
        None => {
            let value: Value = serde_json::from_str(&key).expect("a spec's JSON parses");
            let errors = validate_spec_value(&value);
            CHECKED.with_borrow_mut(|m| {
                if m.len() >= REMEMBERED {
                    m.clear();
                }
                m.insert(key, errors.clone());
            });
            errors
        }
    };
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks the JSON form of a spec and returns every problem found.
pub fn validate_spec_value(spec: &Value) -> Vec<FieldError> {
    let mut v = Checker::default();
    let Some(obj) = spec.as_object() else {
        v.err("spec", "must be an object");
        return v.errors;
    };
    for key in obj.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            v.err(&format!("spec.{key}"), "unknown field");
        }
    }

    let present = |k: &str| !matches!(obj.get(k), None | Some(Value::Null));
    let by_connection = present("connectionRef");
    if by_connection {
        check_connection_ref(&mut v, obj.get("connectionRef"));
    }

    match v.optional_str(obj.get("tenant"), "spec.tenant") {
        Some(t) if !TENANT.is_match(t) || t.len() > 253 => v.err(
            "spec.tenant",
            &format!("{t:?} is not a tenant id (letters, digits, '.', '_', '-')"),
        ),
        _ => {}
    }

    if let Some(endpoint) = v.optional_str(obj.get("endpoint"), "spec.endpoint") {
        match url::Url::parse(endpoint) {
            _ if endpoint.chars().count() > MAX_ENDPOINT_CHARS as usize => v.err(
                "spec.endpoint",
                &format!("is longer than {MAX_ENDPOINT_CHARS} characters"),
            ),
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
            _ => v.err(
                "spec.endpoint",
                &format!("{endpoint:?} is not an http(s) URL, e.g. https://app.amperity.com/api"),
            ),
        }
    }

    if let Some(ver) = v.optional_str(obj.get("amperityApiVersion"), "spec.amperityApiVersion")
        && !API_VERSION.is_match(ver)
    {
        v.err(
            "spec.amperityApiVersion",
            &format!("{ver:?} is not an API version such as 2024-04-01"),
        );
    }

    match obj.get("tokenSecretRef") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            match v.required_str(r.get("name"), "spec.tokenSecretRef.name") {
                Some(name) if name.len() > 253 || !SECRET_NAME.is_match(name) => v.err(
                    "spec.tokenSecretRef.name",
                    &format!(
                        "{:?} is not a Secret name (lower-case letters, digits, '-' and '.', at most 253)",
                        crate::bounded::cut(name, 80)
                    ),
                ),
                _ => {}
            }
            match v.optional_str(r.get("key"), "spec.tokenSecretRef.key") {
                Some(key) if key.len() > 253 || !SECRET_KEY.is_match(key) => v.err(
                    "spec.tokenSecretRef.key",
                    &format!(
                        "{:?} is not a Secret key (letters, digits, '-', '_' and '.', at most 253)",
                        crate::bounded::cut(key, 80)
                    ),
                ),
                _ => {}
            }
        }
        Some(_) => v.err("spec.tokenSecretRef", "must be an object with name and key"),
    }

    match v.required_str(obj.get("configId"), "spec.configId") {
        Some(id) if !CONFIG_ID.is_match(id) => v.err(
            "spec.configId",
            &format!(
                "{id:?} is not an Amperity config id: expected cg- (courier group), og- (orchestration group) or cc- (campaign) followed by letters, digits and dashes"
            ),
        ),
        _ => {}
    }

    if let Some(mode) = v.optional_str(obj.get("runMode"), "spec.runMode")
        && !matches!(mode, "full" | "refresh" | "source")
    {
        v.err(
            "spec.runMode",
            &format!("{mode:?} is not a run mode: use full, refresh or source"),
        );
    }

    match obj.get("range") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => v.range(r),
        Some(_) => v.err("spec.range", "must be an object with from and to"),
    }

    v.duration(obj.get("pollInterval"), "spec.pollInterval");
    v.duration(obj.get("timeout"), "spec.timeout");

    match obj.get("retry") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => match r.get("limit") {
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= MAX_RETRY_LIMIT) => {}
            Some(Value::Number(n)) => v.err(
                "spec.retry.limit",
                &format!("{n} is out of range: use a whole number from 0 to 10"),
            ),
            None => v.err("spec.retry.limit", "required: a whole number from 0 to 10"),
            Some(_) => v.err("spec.retry.limit", "must be a whole number from 0 to 10"),
        },
        Some(_) => v.err("spec.retry", "must be an object with limit"),
    }

    match obj.get("ttlSecondsAfterFinished") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= MAX_TTL_SECONDS as u64) => {}
        Some(_) => v.err(
            "spec.ttlSecondsAfterFinished",
            &format!("must be a whole number of seconds from 0 to {MAX_TTL_SECONDS} (a year)"),
        ),
    }

    match obj.get("stop") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => v.err("spec.stop", "must be true or false"),
    }

    if let Some(policy) = v.optional_str(obj.get("deletionPolicy"), "spec.deletionPolicy")
        && !matches!(policy, "Stop" | "Orphan")
    {
        v.err(
            "spec.deletionPolicy",
            &format!("{policy:?} is not a deletion policy: use Stop or Orphan"),
        );
    }

    if let Some(id) = v.optional_str(obj.get("workflowId"), "spec.workflowId")
        && let Some(why) = crate::amperity::wire::run_id_problem(id)
    {
        v.err(
            "spec.workflowId",
            &format!("{why}: give the id of an existing Amperity run (wf-…)"),
        );
    }

    let cel = cel_errors(spec, &v.errors);
    v.errors.extend(cel);
    v.errors
}

/// The run CRD's CEL rules over `spec`, as an API server of 1.25 or later applies
/// them when the resource is created. A field the checks above already refused is
/// not reported twice (a rule over a malformed duration cannot even be evaluated).
fn cel_errors(spec: &Value, already: &[FieldError]) -> Vec<FieldError> {
    let refused = evaluated_rules(spec);
    refused
        .into_iter()
        .filter(|e| {
            !already
                .iter()
                .any(|a| a.path == e.path || e.path.starts_with(&format!("{}.", a.path)))
        })
        .collect()
}

/// The CEL refusals of one spec.
fn evaluated_rules(spec: &Value) -> Vec<FieldError> {
    SPEC_RULES.with(|(validator, compiled)| {
        let Err(errors) = validator.validate_compiled(compiled, spec, None) else {
            return Vec::new();
        };
        errors
            .into_iter()
            .map(|e| FieldError {
                path: if e.field_path.is_empty() {
                    "spec".to_string()
                } else {
                    format!("spec.{}", e.field_path.trim_start_matches('.'))
                },
                message: e.message,
            })
            .collect()
    })
}

thread_local! {
    /// The answers for the specs checked last, by their JSON text: the decision
    /// function checks the same immutable spec on every reconcile, and interpreting
    /// the CEL rules costs far more than finding their answer again.
    static CHECKED: std::cell::RefCell<std::collections::HashMap<String, Vec<FieldError>>> =
        std::cell::RefCell::default();
    /// The spec's schema with its rules compiled once per thread (a compiled rule is
    /// not `Sync`).
    static SPEC_RULES: (kube::core::cel::Validator, kube::core::cel::CompiledSchema) = {
        let crd = <crate::crd::AmperityWorkflowRun as kube::CustomResourceExt>::crd();
        let root = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("spec"))
            .map(|s| serde_json::to_value(s).expect("a schema serializes to JSON"))
            .expect("the generated run CRD has a spec schema");
        (kube::core::cel::Validator::new(), kube::core::cel::compile_schema(&root))
    };
}

/// Parses a Go-style duration (`30s`, `1m30s`, `1.5h`); None for anything else,
/// and for text too long, or a value too large, to be a sane duration. Checked
/// arithmetic throughout: a resource author's `99999999999999999999h` must be an
/// error, not a panic (kube's own parser multiplies floats and panics on it).
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.len() > MAX_DURATION_CHARS as usize || !DURATION.is_match(text) {
        return None;
    }
    const NANOS: [(&str, u128); 4] = [
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let (unit, scale) = NANOS.iter().find(|(u, _)| tail.starts_with(u))?;
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let mut nanos = whole.parse::<u128>().ok()?.checked_mul(*scale)?;
        // The fraction, digit by digit: 1.5h is one hour and a half.
        let mut place = *scale;
        for digit in fraction.bytes() {
            place /= 10;
            nanos = nanos.checked_add(u128::from(digit - b'0') * place)?;
        }
        total = total.checked_add(nanos)?;
        rest = &tail[unit.len()..];
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Parses a range bound: a bare date is midnight UTC.
pub fn parse_range_bound(text: &str) -> Option<jiff::Timestamp> {
    if !RANGE_VALUE.is_match(text) {
        return None;
    }
    if text.len() == 10 {
        let date: jiff::civil::Date = text.parse().ok()?;
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    } else {
        text.parse().ok()
    }
}

#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

/// `spec.connectionRef`: a kind this operator serves and a name.
fn check_connection_ref(v: &mut Checker, value: Option<&Value>) {
    let Some(Value::Object(r)) = value else {
        v.err("spec.connectionRef", "must be an object with kind and name");
        return;
    };
    for key in r.keys() {
        if !matches!(key.as_str(), "kind" | "name") {
            v.err(&format!("spec.connectionRef.{key}"), "unknown field");
        }
    }
    match v.optional_str(r.get("kind"), "spec.connectionRef.kind") {
        Some(kind) if !matches!(kind, "AmperityConnection" | "ClusterAmperityConnection") => v.err(
            "spec.connectionRef.kind",
            &format!(
                "{:?} is not a connection kind: AmperityConnection (the default) or ClusterAmperityConnection",
                crate::bounded::cut(kind, 80)
            ),
        ),
        _ => {}
    }
    match v.required_str(r.get("name"), "spec.connectionRef.name") {
        Some(name) if name.len() > 253 || !SECRET_NAME.is_match(name) => v.err(
            "spec.connectionRef.name",
            &format!(
                "{:?} is not a resource name (lower-case letters, digits, '-' and '.', at most 253)",
                crate::bounded::cut(name, 80)
            ),
        ),
        _ => {}
    }
}

impl Checker {
    fn err(&mut self, path: &str, message: &str) {
        self.errors.push(FieldError {
            path: path.to_string(),
            message: message.to_string(),
        });
    }

    fn required_str<'a>(&mut self, value: Option<&'a Value>, path: &str) -> Option<&'a str> {
        match value {
            None | Some(Value::Null) => {
                self.err(path, "required");
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.err(path, "must be a string");
                None
            }
        }
    }

    fn optional_str<'a>(&mut self, value: Option<&'a Value>, path: &str) -> Option<&'a str> {
        match value {
            None | Some(Value::Null) => None,
            Some(_) => self.required_str(value, path),
        }
    }

    fn duration(&mut self, value: Option<&Value>, path: &str) -> Option<Duration> {
        let text = self.optional_str(value, path)?;
        let parsed = parse_duration(text);
        if parsed.is_none() {
            self.err(
                path,
                &format!(
                    "{text:?} is not a duration: use a number and a unit, e.g. 30s, 5m, 1h30m"
                ),
            );
        }
        parsed
    }

    fn range(&mut self, range: &serde_json::Map<String, Value>) {
        self.range_bound(range.get("from"), "spec.range.from");
        self.range_bound(range.get("to"), "spec.range.to");
        if range.get("from").is_none_or(Value::is_null) {
            if range.get("to").is_some_and(|t| !t.is_null()) {
                self.err("spec.range.from", "required when range.to is given");
            } else {
                self.err("spec.range.from", "required");
            }
        }
    }

    fn range_bound(&mut self, value: Option<&Value>, path: &str) -> Option<jiff::Timestamp> {
        let text = self.optional_str(value, path)?;
        let parsed = parse_range_bound(text);
        if parsed.is_none() {
            self.err(
                path,
                &format!(
                    "{text:?} is not an ISO 8601 date or UTC date-time, e.g. 2025-04-18 or 2025-04-18T06:00:00Z"
                ),
            );
        }
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_kubernetes_writes_them_and_never_overflow() {
        let cases = [
            ("30s", Some(Duration::from_secs(30))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1.5h", Some(Duration::from_secs(5400))),
            ("250ms", Some(Duration::from_millis(250))),
            ("0.000000001s", Some(Duration::from_nanos(1))),
            ("6h", Some(Duration::from_secs(21_600))),
            ("9999999999999999999999999999h", None),
            ("99999999999999999999999999999999", None),
            ("-30s", None),
            ("soon", None),
            ("", None),
            ("1d", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "{text}");
        }
    }
}
