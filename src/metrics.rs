//! Prometheus metrics and the health endpoints, served together on one port:
//! `/metrics` (text format), `/healthz` (the process is alive) and `/readyz` (the
//! watch is established and leadership is known).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    /// HTTP status code, or `error` when no response came back.
    pub code: String,
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub phase: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub workflow_type: String,
    pub outcome: String,
}

/// What a schedule did with a due time or a run-now request: `created`,
/// `skipped` (Forbid), `missed` (starting deadline), `replaced`, `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub outcome: &'static str,
}

/// Every `outcome` of `schedule_runs`.
pub const SCHEDULE_OUTCOMES: [&str; 5] = ["created", "skipped", "missed", "replaced", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookLabels {
    /// `listed`, `failed` or `skipped`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub api_version: String,
}

/// Every figure the operator exports.
pub struct Metrics {
    registry: Registry,
    pub runs: Family<PhaseLabels, Gauge>,
    pub reconciles: Counter,
    pub status_writes: Counter,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<EndpointLabels, Histogram>,
    pub rate_limit_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub throttled: Family<TenantLabels, Counter>,
    pub workflow_seconds: Family<OutcomeLabels, Histogram>,
    pub deprecations: Family<VersionLabels, Counter>,
    /// 1 on the replica that leads (or when election is off), 0 on the others.
    pub leader: Gauge,
    pub reconcile_panics: Counter,
    /// Polls that failed (5xx, unreadable answers, transport errors) in a row.
    pub poll_failures: Counter,
    pub runs_finished: Family<FinishedLabels, Counter>,
    /// Looks of the change feed, by outcome (its requests are counted in
    /// `amperity_requests` with endpoint `feed`).
    pub feed_looks: Family<LookLabels, Counter>,
    /// Resources the change feed woke because their run was listed ended.
    pub feed_wakes: Counter,
    pub schedule_runs: Family<ScheduleLabels, Counter>,
    /// 1 while the schedule controller runs, 0 while it waits for its CRD.
    pub schedule_controller_running: Gauge,
    /// The phase last counted for each resource (uid), so `runs` is a true gauge.
    phases: Mutex<HashMap<String, Phase>>,
    tenants: TenantLabeller,
}

/// How many tenants get a label of their own; later ones share `other`. Tenants are
/// named by resource authors, so an unbounded label would let them grow the
/// operator's memory and every scrape without limit.
pub const MAX_TENANT_LABELS: usize = 32;

/// Hands out tenant label values, first come first served, up to the bound.
#[derive(Default)]
struct TenantLabeller {
    known: Mutex<std::collections::HashSet<String>>,
}

impl TenantLabeller {
    fn label(&self, tenant: &str) -> String {
        let mut known = self.known.lock().unwrap();
        if known.contains(tenant) {
            return tenant.to_string();
        }
        if known.len() < MAX_TENANT_LABELS && tenant.len() <= 253 {
            known.insert(tenant.to_string());
            return tenant.to_string();
        }
        "other".to_string()
    }
}

/// The workflow types of the metrics: the three Amperity starts, and `other` for
/// anything Amperity reports that is not one of them.
pub const WORKFLOW_TYPES: [&str; 3] = [
    "courier.group/run",
    "amperity.orchestration.orchestration/run",
    "campaign.send",
];

/// Reasons are the operator's own CamelCase words; anything else (a status edited by
/// hand) is `Other`, so the label stays bounded.
fn reason_label(reason: &str) -> String {
    let camel = reason.len() <= 40
        && reason.starts_with(|c: char| c.is_ascii_uppercase())
        && reason.chars().all(|c| c.is_ascii_alphanumeric());
    if camel { reason } else { "Other" }.to_string()
}

fn workflow_type_label(reported: &str) -> String {
    WORKFLOW_TYPES
        .iter()
        .find(|t| **t == reported)
        .map_or("other", |t| t)
        .to_string()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("amperity_operator");
        let runs = Family::<PhaseLabels, Gauge>::default();
        registry.register("runs", "AmperityWorkflowRuns by phase", runs.clone());
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles performed", reconciles.clone());
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Status writes (each one a change; unchanged polls write nothing)",
            status_writes.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            reconcile_errors.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "amperity_requests",
            "Amperity API requests by endpoint, status code and tenant",
            requests.clone(),
        );
        let request_seconds = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "amperity_request_seconds",
            "Amperity API request latency by endpoint and tenant",
            request_seconds.clone(),
        );
        let rate_limit_wait_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "rate_limit_wait_seconds",
            "Time requests spent waiting for the per-tenant rate limiter",
            rate_limit_wait_seconds.clone(),
        );
        let throttled = Family::<TenantLabels, Counter>::default();
        registry.register(
            "amperity_throttled",
            "HTTP 429 answers received from Amperity, by tenant",
            throttled.clone(),
        );
        let workflow_seconds = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
            ])
        });
        registry.register(
            "workflow_duration_seconds",
            "Duration of finished workflow runs by type and outcome",
            workflow_seconds.clone(),
        );
        let deprecations = Family::<VersionLabels, Counter>::default();
        registry.register(
            "amperity_deprecation_notices",
            "Responses carrying Deprecation or Sunset headers, by api-version",
            deprecations.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 on the replica that leads (reconciles), 0 on a follower",
            leader.clone(),
        );
        let reconcile_panics = Counter::default();
        registry.register(
            "reconcile_panics",
            "Reconciles that panicked (caught; the resource is retried with backoff)",
            reconcile_panics.clone(),
        );
        let poll_failures = Counter::default();
        registry.register(
            "poll_failures",
            "Polls of a run that failed without an answer (5xx, unreadable body, transport error)",
            poll_failures.clone(),
        );
        let runs_finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs that reached a final phase, by phase and reason",
            runs_finished.clone(),
        );
        let feed_looks = Family::<LookLabels, Counter>::default();
        registry.register(
            "change_feed_looks",
            "Looks of the change feed by outcome: listed, failed (retried next cycle) or skipped (per-run polls keep up)",
            feed_looks.clone(),
        );
        let feed_wakes = Counter::default();
        registry.register(
            "change_feed_wakes",
            "Resources woken because the change feed listed their run ended",
            feed_wakes.clone(),
        );
        let schedule_runs = Family::<ScheduleLabels, Counter>::default();
        registry.register(
            "schedule_runs",
            "What AmperityWorkflowSchedules did with due times and run-now requests, by outcome",
            schedule_runs.clone(),
        );
        let schedule_controller_running = Gauge::default();
        registry.register(
            "schedule_controller_running",
            "1 while the AmperityWorkflowSchedule controller runs, 0 while it waits for the schedule CRD (retried with backoff)",
            schedule_controller_running.clone(),
        );
        Metrics {
            registry,
            schedule_controller_running,
            feed_looks,
            feed_wakes,
            leader,
            reconcile_panics,
            poll_failures,
            runs_finished,
            tenants: TenantLabeller::default(),
            runs,
            reconciles,
            status_writes,
            reconcile_errors,
            requests,
            request_seconds,
            rate_limit_wait_seconds,
            throttled,
            workflow_seconds,
            deprecations,
            schedule_runs,
            phases: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Moves one resource between phase gauges; `None` forgets it (deleted).
    pub fn set_phase(&self, uid: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap();
        let previous = match phase {
            Some(p) => phases.insert(uid.to_string(), p),
            None => phases.remove(uid),
        };
        if previous == phase {
            return;
        }
        if let Some(p) = previous {
            self.runs.get_or_create(&phase_labels(p)).dec();
        }
        if let Some(p) = phase {
            self.runs.get_or_create(&phase_labels(p)).inc();
        }
    }

    pub fn record_request(
        &self,
        endpoint: &str,
        tenant: &str,
        code: Option<u16>,
        latency: Duration,
    ) {
        let tenant = self.tenants.label(tenant);
        let code = code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "error".into());
        if code == "429" {
            self.throttled
                .get_or_create(&TenantLabels {
                    tenant: tenant.clone(),
                })
                .inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                code,
                tenant: tenant.clone(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
                tenant,
            })
            .observe(latency.as_secs_f64());
    }

    /// One look of the change feed: `listed`, `failed` or `skipped`.
    pub fn feed_look(&self, outcome: &'static str) {
        self.feed_looks
            .get_or_create(&LookLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A run reached a final phase: its duration by (bounded) type and outcome, and
    /// the count by phase and reason (reasons are the operator's own words).
    pub fn record_finished(
        &self,
        workflow_type: &str,
        outcome: Phase,
        reason: &str,
        duration: Duration,
    ) {
        self.workflow_seconds
            .get_or_create(&OutcomeLabels {
                workflow_type: workflow_type_label(workflow_type),
                outcome: outcome.as_str().to_string(),
            })
            .observe(duration.as_secs_f64());
        self.runs_finished
            .get_or_create(&FinishedLabels {
                phase: outcome.as_str().to_string(),
                reason: reason_label(reason),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The Amperity client reports every request and every budget wait here.
impl crate::amperity::Observer for Metrics {
    fn request(
        &self,
        endpoint: &'static str,
        tenant: &str,
        status: Option<u16>,
        latency: Duration,
    ) {
        self.record_request(endpoint, tenant, status, latency);
    }

    fn waited(&self, wait: Duration) {
        self.rate_limit_wait_seconds.inc_by(wait.as_secs_f64());
    }
}

fn phase_labels(p: Phase) -> PhaseLabels {
    PhaseLabels {
        phase: p.as_str().to_string(),
    }
}

/// What `/readyz` reports.
#[derive(Default)]
pub struct Readiness {
    /// Leadership is known (leader or follower), or election is off.
    pub leadership_known: AtomicBool,
    pub leader: AtomicBool,
    /// The leader's watch delivered its initial list.
    pub watching: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.leadership_known.load(Ordering::SeqCst)
            && (!self.leader.load(Ordering::SeqCst) || self.watching.load(Ordering::SeqCst))
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_ready))
        .with_state(Shared { metrics, readiness })
}

async fn serve_metrics(State(s): State<Shared>) -> impl IntoResponse {
    s.metrics
        .leader
        .set(i64::from(s.readiness.leader.load(Ordering::SeqCst)));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn serve_ready(State(s): State<Shared>) -> impl IntoResponse {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for leadership or the initial watch",
        )
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, readiness)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    #[test]
    fn labels_chosen_outside_the_operator_stay_bounded() {
        let m = Metrics::default();
        for i in 0..(MAX_TENANT_LABELS + 50) {
            m.record_request("get", &format!("tenant-{i}"), Some(200), Duration::ZERO);
        }
        m.record_request("get", "tenant-0", Some(429), Duration::ZERO);
        m.record_finished(
            "x.evil/type",
            Phase::Failed,
            "Not CamelCase!",
            Duration::ZERO,
        );
        m.record_finished(
            "campaign.send",
            Phase::Succeeded,
            "Succeeded",
            Duration::ZERO,
        );
        let text = m.encode();
        let tenants: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("amperity_operator_amperity_requests_total{"))
            .filter_map(|l| l.split("tenant=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(tenants.len(), MAX_TENANT_LABELS + 1, "{tenants:?}");
        assert!(tenants.contains("other"));
        assert!(
            line(
                &text,
                "amperity_operator_amperity_requests_total{endpoint=\"get\",code=\"200\",tenant=\"other\"} 50"
            )
            .is_some(),
            "{text}"
        );
        assert!(
            line(
                &text,
                "amperity_operator_amperity_throttled_total{tenant=\"tenant-0\"} 1"
            )
            .is_some()
        );
        assert!(
            line(
                &text,
                "amperity_operator_workflow_duration_seconds_count{workflow_type=\"other\",outcome=\"Failed\"} 1"
            )
            .is_some(),
            "{text}"
        );
        assert!(
            line(
                &text,
                "amperity_operator_runs_finished_total{phase=\"Failed\",reason=\"Other\"} 1"
            )
            .is_some()
        );
        assert!(
            line(
                &text,
                "amperity_operator_runs_finished_total{phase=\"Succeeded\",reason=\"Succeeded\"} 1"
            )
            .is_some()
        );
    }

    #[tokio::test]
    async fn the_leader_gauge_follows_leadership_at_each_scrape() {
        let metrics = Arc::new(Metrics::default());
        let readiness = Arc::new(Readiness::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(metrics, readiness.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let scrape = || async {
            reqwest::get(format!("http://{addr}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        assert!(line(&scrape().await, "amperity_operator_leader 0").is_some());
        readiness.leader.store(true, Ordering::SeqCst);
        assert!(line(&scrape().await, "amperity_operator_leader 1").is_some());
        readiness.leader.store(false, Ordering::SeqCst);
        assert!(line(&scrape().await, "amperity_operator_leader 0").is_some());
    }
}
