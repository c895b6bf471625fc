//! The HTTP side of metrics: `/metrics`, `/healthz` and `/readyz` on one port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::Metrics;

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
