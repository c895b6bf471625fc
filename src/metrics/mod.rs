//! Prometheus metrics and the health endpoints, served together on one port:
//! `/metrics` (text format), `/healthz` (the process is alive) and `/readyz` (the
//! watch is established and leadership is known).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::crd::Phase;

mod endpoints;
mod labels;

pub use endpoints::{Readiness, router, serve};
pub use labels::*;
use labels::{Labeller, TenantLabeller, reason_label, workflow_type_label};

/// Every figure the operator exports.
pub struct Metrics {
    registry: Registry,
    pub runs: Family<PhaseLabels, Gauge>,
    pub reconciles: Counter,
    pub status_writes: Counter,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<CallLabels, Histogram>,
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
    /// Ends a per-run poll found that fell out of the change feed's windows unlisted.
    pub feed_missed: Counter,
    /// Reads of runs settled from the change feed's list that disagreed with it.
    pub feed_disagreed: Counter,
    pub schedule_runs: Family<ScheduleLabels, Counter>,
    /// OAuth token exchanges by outcome and tenant.
    pub token_exchanges: Family<ExchangeLabels, Counter>,
    /// Runs in flight whose `Stalled` condition is True, by namespace and reason.
    pub stalled: Family<StalledLabels, Gauge>,
    /// The (namespace, reason) last counted in `stalled` for each resource (uid).
    stalled_runs: Mutex<HashMap<String, StalledLabels>>,
    /// 1 while the schedule controller runs, 0 while it waits for its CRD.
    pub schedule_controller_running: Gauge,
    /// Failed reads and writes of the claims ledger ConfigMap, by operation.
    pub claims_ledger_errors: Family<OperationLabels, Counter>,
    /// Writes of the claims ledger ConfigMap that changed it.
    pub claims_ledger_writes: Counter,
    /// Departed runs the ledger's bounds dropped before their retention ended.
    pub claims_ledger_dropped: Counter,
    /// The phase last counted for each resource (uid), so `runs` is a true gauge.
    phases: Mutex<HashMap<String, Phase>>,
    tenants: TenantLabeller,
    namespaces: Labeller,
    api_versions: Labeller,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("amperity_operator");
        let r = &mut registry;
        // Registered in this order, which is the exposition's order.
        Metrics {
            runs: registered(
                r,
                "runs",
                "AmperityWorkflowRuns by phase",
                Family::<PhaseLabels, Gauge>::default(),
            ),
            reconciles: registered(r, "reconciles", "Reconciles performed", Counter::default()),
            status_writes: registered(
                r,
                "status_writes",
                "Status writes (each one a change; unchanged polls write nothing)",
                Counter::default(),
            ),
            reconcile_errors: registered(
                r,
                "reconcile_errors",
                "Reconciles that failed, by reason",
                Family::<ReasonLabels, Counter>::default(),
            ),
            requests: registered(
                r,
                "amperity_requests",
                "Amperity API requests by call, status code and tenant",
                Family::<RequestLabels, Counter>::default(),
            ),
            request_seconds: registered(
                r,
                "amperity_request_seconds",
                "Amperity API request latency by call and tenant",
                Family::<CallLabels, Histogram>::new_with_constructor(|| {
                    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
                }),
            ),
            rate_limit_wait_seconds: registered(
                r,
                "rate_limit_wait_seconds",
                "Time requests spent waiting for the per-tenant rate limiter",
                Counter::<f64, std::sync::atomic::AtomicU64>::default(),
            ),
            throttled: registered(
                r,
                "amperity_throttled",
                "HTTP 429 answers received from Amperity, by tenant",
                Family::<TenantLabels, Counter>::default(),
            ),
            workflow_seconds: registered(
                r,
                "workflow_duration_seconds",
                "Duration of finished workflow runs by type and outcome",
                Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
                    Histogram::new([
                        30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
                    ])
                }),
            ),
            deprecations: registered(
                r,
                "amperity_deprecation_notices",
                "Responses carrying Deprecation or Sunset headers, by api-version",
                Family::<VersionLabels, Counter>::default(),
            ),
            leader: registered(
                r,
                "leader",
                "1 on the replica that leads (reconciles), 0 on a follower",
                Gauge::default(),
            ),
            reconcile_panics: registered(
                r,
                "reconcile_panics",
                "Reconciles that panicked (caught; the resource is retried with backoff)",
                Counter::default(),
            ),
            poll_failures: registered(
                r,
                "poll_failures",
                "Polls of a run that failed without an answer (5xx, unreadable body, transport error)",
                Counter::default(),
            ),
            runs_finished: registered(
                r,
                "runs_finished",
                "Runs that reached a final phase, by phase and reason",
                Family::<FinishedLabels, Counter>::default(),
            ),
            feed_looks: registered(
                r,
                "change_feed_looks",
                "Looks of the change feed by outcome: listed, failed (retried next cycle) or skipped (per-run polls keep up)",
                Family::<LookLabels, Counter>::default(),
            ),
            feed_wakes: registered(
                r,
                "change_feed_wakes",
                "Resources woken because the change feed listed their run ended",
                Counter::default(),
            ),
            feed_missed: registered(
                r,
                "change_feed_missed",
                "Runs whose end a per-run poll found after the change feed's windows had passed it unlisted (clock skew, list lag, a list that lies)",
                Counter::default(),
            ),
            feed_disagreed: registered(
                r,
                "change_feed_disagreements",
                "Runs whose outcome was settled from the change feed's list and whose later read disagreed with the list (the status keeps the list's outcome)",
                Counter::default(),
            ),
            schedule_runs: registered(
                r,
                "schedule_runs",
                "What AmperityWorkflowSchedules did with due times and run-now requests, by outcome",
                Family::<ScheduleLabels, Counter>::default(),
            ),
            token_exchanges: registered(
                r,
                "amperity_token_exchanges",
                "OAuth client-credentials exchanges by outcome (ok, refused: the Secret's client is refused, failed: the token endpoint failed) and tenant",
                Family::<ExchangeLabels, Counter>::default(),
            ),
            stalled: registered(
                r,
                "runs_stalled",
                "Runs waiting for a person (their Stalled condition is True), by the runs' namespace and reason",
                Family::<StalledLabels, Gauge>::default(),
            ),
            schedule_controller_running: registered(
                r,
                "schedule_controller_running",
                "1 while the AmperityWorkflowSchedule controller runs, 0 while it waits for the schedule CRD (retried with backoff)",
                Gauge::default(),
            ),
            claims_ledger_errors: registered(
                r,
                "claims_ledger_errors",
                "Failed reads (claims stay incomplete: lost starts wait for a person) and writes (retried; a resource keeps its finalizer) of the claims ledger ConfigMap, by operation",
                Family::<OperationLabels, Counter>::default(),
            ),
            claims_ledger_writes: registered(
                r,
                "claims_ledger_writes",
                "Writes of the claims ledger ConfigMap (the runs of resources that are gone)",
                Counter::default(),
            ),
            claims_ledger_dropped: registered(
                r,
                "claims_ledger_dropped",
                "Runs of departed resources dropped from the claims ledger by its size bounds before their retention ended",
                Counter::default(),
            ),
            stalled_runs: Mutex::new(HashMap::new()),
            namespaces: Labeller::new(MAX_NAMESPACE_LABELS),
            api_versions: Labeller::new(MAX_API_VERSION_LABELS),
            tenants: TenantLabeller::default(),
            phases: Mutex::new(HashMap::new()),
            registry,
        }
    }
}

/// Registers `metric` and gives it back, so that each figure is named once.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
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

    /// Moves one resource between `stalled` gauges: `Some((namespace, reason))`
    /// while its Stalled condition is True, `None` otherwise or once it is gone.
    pub fn set_stalled(&self, uid: &str, stalled: Option<(&str, &str)>) {
        let labels = stalled.map(|(namespace, reason)| StalledLabels {
            run_namespace: self.namespaces.label(namespace, true),
            reason: reason_label(reason),
        });
        let mut runs = self.stalled_runs.lock().unwrap();
        let previous = match &labels {
            Some(l) => runs.insert(uid.to_string(), l.clone()),
            None => runs.remove(uid),
        };
        if previous == labels {
            return;
        }
        if let Some(p) = previous {
            self.stalled.get_or_create(&p).dec();
        }
        if let Some(l) = labels {
            self.stalled.get_or_create(&l).inc();
        }
    }

    /// A response announced a deprecation of `api_version` (from a spec, so bounded:
    /// a date-shaped version takes one of [`MAX_API_VERSION_LABELS`] labels, anything
    /// else is `other`).
    pub fn deprecation(&self, api_version: &str) {
        let dated = api_version.len() == 10
            && api_version.char_indices().all(|(i, c)| match i {
                4 | 7 => c == '-',
                _ => c.is_ascii_digit(),
            });
        let api_version = self.api_versions.label(api_version, dated);
        self.deprecations
            .get_or_create(&VersionLabels { api_version })
            .inc();
    }

    /// One OAuth token exchange for `tenant`: `ok`, `refused` or `failed`.
    pub fn record_token_exchange(&self, tenant: &str, outcome: &'static str) {
        let tenant = self.tenants.label(tenant, outcome == "ok");
        self.token_exchanges
            .get_or_create(&ExchangeLabels {
                outcome: outcome.to_string(),
                tenant,
            })
            .inc();
    }

    pub fn record_request(&self, call: &str, tenant: &str, code: Option<u16>, latency: Duration) {
        let answered = code.is_some_and(|c| (200..300).contains(&c));
        let tenant = self.tenants.label(tenant, answered);
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
                call: call.to_string(),
                code,
                tenant: tenant.clone(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&CallLabels {
                call: call.to_string(),
                tenant,
            })
            .observe(latency.as_secs_f64());
    }

    /// A failed `read` or `write` of the claims ledger.
    pub fn claims_ledger_error(&self, operation: &'static str) {
        self.claims_ledger_errors
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .inc();
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
    fn request(&self, call: &'static str, tenant: &str, status: Option<u16>, latency: Duration) {
        self.record_request(call, tenant, status, latency);
    }

    fn token_exchange(&self, tenant: &str, outcome: &'static str) {
        self.record_token_exchange(tenant, outcome);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    #[test]
    fn labels_chosen_outside_the_operator_stay_bounded() {
        let m = Metrics::default();
        // Made-up tenants that never answered with success take no slot.
        for i in 0..(MAX_TENANT_LABELS * 3) {
            m.record_request("get", &format!("made-up-{i}"), None, Duration::ZERO);
            m.record_request("get", &format!("refused-{i}"), Some(401), Duration::ZERO);
            m.record_token_exchange(&format!("refused-{i}"), "refused");
        }
        for i in 0..(MAX_TENANT_LABELS + 50) {
            m.record_request("get", &format!("tenant-{i}"), Some(200), Duration::ZERO);
        }
        // api-versions come from specs: bounded, and only date-shaped ones are kept.
        for i in 0..(MAX_API_VERSION_LABELS + 20) {
            m.deprecation(&format!("2024-01-{i:02}"));
        }
        m.deprecation("x\"} 1\nfake_metric{a=\"");
        // Namespaces of stalled runs are bounded too.
        for i in 0..(MAX_NAMESPACE_LABELS + 10) {
            m.set_stalled(
                &format!("uid-{i}"),
                Some((&format!("ns-{i}"), "AuthFailed")),
            );
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
        assert!(tenants.contains("tenant-0") && !tenants.contains("made-up-0"));
        let versions: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("amperity_operator_amperity_deprecation_notices_total{"))
            .filter_map(|l| l.split("api_version=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(versions.len(), MAX_API_VERSION_LABELS + 1, "{versions:?}");
        assert!(!text.contains("fake_metric"), "{text}");
        let namespaces = text
            .lines()
            .filter(|l| l.starts_with("amperity_operator_runs_stalled{"))
            .count();
        assert_eq!(namespaces, MAX_NAMESPACE_LABELS + 1, "{text}");
        assert!(
            line(
                &text,
                "amperity_operator_runs_stalled{run_namespace=\"other\",reason=\"AuthFailed\"} 10"
            )
            .is_some(),
            "{text}"
        );
        assert!(
            line(
                &text,
                "amperity_operator_amperity_requests_total{call=\"get\",code=\"200\",tenant=\"other\"} 50"
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

    #[test]
    fn the_stalled_gauge_follows_each_run() {
        let m = Metrics::default();
        let count = |m: &Metrics, reason: &str| {
            m.stalled
                .get_or_create(&StalledLabels {
                    run_namespace: "marketing".into(),
                    reason: reason.into(),
                })
                .get()
        };
        m.set_stalled("a", Some(("marketing", "AuthFailed")));
        m.set_stalled("a", Some(("marketing", "AuthFailed")));
        m.set_stalled("b", Some(("marketing", "AuthFailed")));
        assert_eq!(count(&m, "AuthFailed"), 2);
        m.set_stalled("a", Some(("marketing", "StartUnconfirmed")));
        assert_eq!(count(&m, "AuthFailed"), 1);
        assert_eq!(count(&m, "StartUnconfirmed"), 1);
        m.set_stalled("a", None);
        m.set_stalled("b", None);
        m.set_stalled("b", None);
        assert_eq!(count(&m, "AuthFailed"), 0);
        assert_eq!(count(&m, "StartUnconfirmed"), 0);
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
