//! `amperity-operator run`: connects to the cluster, checks the CRD is installed and
//! runs one controller per watched namespace (or one for all namespaces).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::api::ListParams;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::amperity::{AllowList, AmperityClient, ClientConfig, Observer, TlsConfig};
use crate::cli::{AmperityArgs, RunArgs, TlsRoots};
use crate::cluster::leader::{self, LeaderConfig};
use crate::crd::AmperityWorkflowRun;
use crate::metrics::{self, Metrics, Readiness};
use crate::run::controller::{CachedRun, Context, error_policy, reconcile};
use crate::run::decide::{RESOLVE_START_ANNOTATION, Settings};
use crate::run::driver::Defaults;
use crate::run::feed::{Feed, FeedSettings};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach the Kubernetes API (kubeconfig or in-cluster service account): {0}")]
    Connect(#[source] kube::Error),
    #[error(
        "the AmperityWorkflowRun CRD is not installed or not readable ({0}): install it with `amperity-operator crd | kubectl apply -f -`"
    )]
    CrdMissing(#[source] kube::Error),
    #[error("invalid Amperity client settings: {0}")]
    Amperity(String),
    #[error("leader election failed: {0}")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
}

pub fn defaults(args: &AmperityArgs) -> Defaults {
    Defaults {
        endpoint: args.default_endpoint.clone(),
        api_version: args.api_version.clone(),
    }
}

/// The client settings from the flags; an allow-list entry that does not parse is
/// refused at start-up, naming the entry.
pub fn client_config(args: &AmperityArgs) -> Result<ClientConfig, String> {
    Ok(ClientConfig {
        request_timeout: Duration::from_secs(args.request_timeout_secs.clamp(1, 600)),
        rate_limit_per_sec: args.rate_limit,
        allow: AllowList::parse(&args.allowed_endpoints)?,
        max_body_bytes: args.max_body_bytes.max(1024),
        tls: TlsConfig {
            system_roots: args.tls_roots == TlsRoots::System,
            ca_file: args.ca_file.clone(),
        },
        ..ClientConfig::default()
    })
}

/// Durations from flags, bounded so that no setting can overflow a clock.
fn secs(value: u64) -> Duration {
    Duration::from_secs(value.min(30 * 86_400))
}

pub fn settings(args: &RunArgs) -> Settings {
    Settings {
        retry_backoff: secs(args.retry_backoff_secs),
        stalled_recheck: secs(args.stalled_recheck_secs.max(1)),
        deletion_grace: secs(args.deletion_grace_secs),
        start_settle: secs(args.start_settle_secs),
        stop_grace: secs(args.stop_grace_secs),
        ..Settings::default()
    }
}

pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Connect)?;
    // Checked where the operator may list: everywhere, or its first namespace.
    let probe: Api<AmperityWorkflowRun> = match args.namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    probe
        .list(&ListParams::default().limit(1))
        .await
        .map_err(RunError::CrdMissing)?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let observer: Arc<dyn Observer> = metrics.clone();
    let config = client_config(&args.amperity).map_err(RunError::Amperity)?;
    let amperity = AmperityClient::new(ClientConfig {
        observer: Some(observer),
        ..config
    })
    .map_err(|e| RunError::Amperity(e.to_string()))?;
    let mut ctx = Context::new(
        client.clone(),
        amperity,
        defaults(&args.amperity),
        settings(&args),
        metrics.clone(),
    )
    .watching(&args.namespaces)
    .in_namespace(&args.lease_namespace)
    .with_claims_ledger(&args.claims_configmap)
    .serving_connections(args.connections);
    if args.change_feed {
        ctx = ctx.with_feed(Arc::new(Feed::new(
            FeedSettings::default(),
            metrics.clone(),
        )));
    }
    let ctx = Arc::new(ctx);
    let server = tokio::spawn(metrics::serve(
        args.metrics_addr,
        metrics,
        readiness.clone(),
    ));
    let trimmer = tokio::spawn(crate::memory::trim_periodically());
    // Observed departures are written whether or not this replica leads: they were
    // queued while it led, and losing the lease must not lose them.
    let flusher = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.ledger.flush_periodically().await }
    });

    let leader = LeaderConfig {
        enabled: args.leader_election,
        lease_name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity: args.identity.clone().unwrap_or_else(default_identity),
        lease_seconds: args.lease_seconds,
        renew_grace_seconds: (args.lease_seconds / 3).max(1),
    };
    info!(namespaces = ?args.namespaces, leader_election = leader.enabled, change_feed = args.change_feed, connections = args.connections, "operator starting");
    let work = || {
        futures::future::join(
            controllers(
                client.clone(),
                &args.namespaces,
                args.concurrency,
                ctx.clone(),
                readiness.clone(),
            ),
            futures::future::join(
                crate::schedule::controller::controllers(
                    client.clone(),
                    &args.namespaces,
                    ctx.metrics.clone(),
                    ctx.ledger.clone(),
                ),
                async {
                    if args.connections {
                        crate::connection::controller::controllers(client.clone(), ctx.clone())
                            .await
                    }
                },
            ),
        )
        .map(|_| ())
    };
    let result = leader::run_while_leading(client.clone(), leader, readiness.clone(), work).await;
    server.abort();
    trimmer.abort();
    flusher.abort();
    if let Err(e) = ctx.ledger.flush().await {
        warn!(error = %e, "departed runs queued for the claims ledger were not written before the exit");
    }
    info!("operator stopped");
    result.map_err(RunError::Lease)
}

/// One controller per watched namespace (or one for all), and the change feed
/// that wakes them, until a shutdown signal.
async fn controllers(
    client: Client,
    namespaces: &[String],
    concurrency: u16,
    ctx: Arc<Context>,
    readiness: Arc<Readiness>,
) {
    // A new leadership term: what another leader recorded meanwhile is unknown
    // until a full relist, and the runs of resources gone before this process
    // until the claims ledger is loaded, so claims are incomplete until both.
    let term = ctx.tracking.begin_term();
    let loader = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.ledger.load_for_term(&ctx.tracking, term).await }
    });
    let apis: Vec<(Option<String>, Api<CachedRun>)> = if namespaces.is_empty() {
        vec![(None, Api::all(client))]
    } else {
        namespaces
            .iter()
            .map(|ns| (Some(ns.clone()), Api::namespaced(client.clone(), ns)))
            .collect()
    };
    let waiting = Arc::new(AtomicUsize::new(apis.len()));
    let running = apis.into_iter().map(|(namespace, api)| {
        let (reader, writer) = reflector::store();
        let (readiness, waiting) = (readiness.clone(), waiting.clone());
        let (tracked, store) = (ctx.clone(), reader.clone());
        // Our own status writes must not trigger reconciles (each would cost an
        // Amperity GET); only what a person changes does. Polls are scheduled by requeue.
        // Metadata only: the reconcile reads the run itself (see `CachedRun`).
        let changes = watcher(api, watcher::Config::default())
            .default_backoff()
            .inspect_ok(move |event| {
                if matches!(event, watcher::Event::InitDone)
                    && waiting.fetch_sub(1, Ordering::SeqCst) == 1
                {
                    readiness.watching.store(true, Ordering::SeqCst);
                }
            })
            // The cache holds every run for as long as it exists: it keeps only what
            // the watch filter reads. managedFields, labels and annotations (kubectl's
            // last applied copy, GitOps tracking) are not.
            .modify(|run| {
                run.metadata.managed_fields = None;
                run.labels_mut().clear();
                run.annotations_mut()
                    .retain(|key, _| key == RESOLVE_START_ANNOTATION);
            })
            .reflect(writer)
            // Runs deleted without a reconcile (no finalizer) are forgotten; after a
            // relist, runs that vanished meanwhile leave the tracking.
            .inspect_ok(move |event| {
                tracked.watched(event, || {
                    store.state().iter().filter_map(|r| r.uid()).collect()
                })
            })
            .touched_objects()
            .predicate_filter(person_visible_change, PredicateConfig::default());
        let mut controller = Controller::for_stream(changes, reader)
            .with_config(controller::Config::default().concurrency(concurrency));
        // Runs the change feed lists ended are reconciled at once.
        if let Some(feed) = &ctx.feed {
            controller = controller.reconcile_on(feed.route(namespace));
        }
        controller
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    warn!(error = %e, "reconcile loop error");
                }
            })
    });
    let controllers = futures::future::join_all(running);
    match ctx.feed.clone() {
        Some(feed) => {
            tokio::select! {
                _ = controllers => {}
                _ = feed.clone().run(ctx.amperity.clone()) => {}
            }
            feed.close_routes();
        }
        None => {
            controllers.await;
        }
    }
    loader.abort();
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "amperity-operator".into());
    format!("{host}-{:08x}", fastrand::u32(..))
}

/// Changes worth a reconcile: the spec (generation), deletion, and the
/// resolve-start annotation.
fn person_visible_change(run: &CachedRun) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    run.metadata.generation.hash(&mut h);
    run.metadata.deletion_timestamp.is_some().hash(&mut h);
    run.annotations().get(RESOLVE_START_ANNOTATION).hash(&mut h);
    Some(h.finish())
}
