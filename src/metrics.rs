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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
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
    pub throttled: Counter,
    pub workflow_seconds: Family<OutcomeLabels, Histogram>,
    pub deprecations: Family<VersionLabels, Counter>,
    pub schedule_runs: Family<ScheduleLabels, Counter>,
    /// The phase last counted for each resource (uid), so `runs` is a true gauge.
    phases: Mutex<HashMap<String, Phase>>,
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
            "Amperity API requests by endpoint and status code",
            requests.clone(),
        );
        let request_seconds = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "amperity_request_seconds",
            "Amperity API request latency",
            request_seconds.clone(),
        );
        let rate_limit_wait_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "rate_limit_wait_seconds",
            "Time requests spent waiting for the per-tenant rate limiter",
            rate_limit_wait_seconds.clone(),
        );
        let throttled = Counter::default();
        registry.register(
            "amperity_throttled",
            "HTTP 429 answers received from Amperity",
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
        let schedule_runs = Family::<ScheduleLabels, Counter>::default();
        registry.register(
            "schedule_runs",
            "What AmperityWorkflowSchedules did with due times and run-now requests, by outcome",
            schedule_runs.clone(),
        );
        Metrics {
            registry,
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

    pub fn record_request(&self, endpoint: &str, code: Option<u16>, latency: Duration) {
        let code = code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "error".into());
        if code == "429" {
            self.throttled.inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                code,
            })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(latency.as_secs_f64());
    }

    pub fn record_finished(&self, workflow_type: &str, outcome: Phase, duration: Duration) {
        self.workflow_seconds
            .get_or_create(&OutcomeLabels {
                workflow_type: workflow_type.to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .observe(duration.as_secs_f64());
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
    fn request(&self, endpoint: &'static str, status: Option<u16>, latency: Duration) {
        self.record_request(endpoint, status, latency);
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
