//! What every reconcile of a run shares (`Context`: clients, settings, per-resource
//! memory, tracking, the feed) and the reconcile's error type; used by the
//! controller and by the Kubernetes host of the driver.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::amperity::AmperityClient;
use crate::cluster::events::reporter;
use crate::cluster::retry::Failures;
use crate::metrics::Metrics;
use crate::run::decide::Settings;
use crate::run::driver::{Defaults, RunMemory};
use crate::run::feed::{CachedRun, Feed};
use crate::run::ledger::{ClaimsLedger, DEFAULT_CONFIGMAP, LedgerError};
use crate::run::tracking::Tracking;
use crate::run::trailing::Trailing;

/// Kubernetes requests in flight at once from reconciles (reads, status writes,
/// Events, finalizers: each holds a connection to the API server). At 16, a burst
/// of 1,000 ends took 19.5 s (p99) to show after the list that reported them; at
/// 64, 11.7 s (benches/load, 10,000 runs in flight, docs/performance.md).
pub const KUBE_CALLS: usize = 64;

/// Kubernetes requests in flight at once for what someone waits on (the intent
/// before a start or a stop, the Secret read that goes with it), beside
/// [`KUBE_CALLS`].
pub const URGENT_KUBE_CALLS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} for {namespace}/{name} failed: {source}")]
    Kube {
        what: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("AmperityWorkflowRun {0} has no namespace")]
    NoNamespace(String),
    /// The runs of a resource about to go could not be recorded: it is kept
    /// (its finalizer stays, its TTL waits) until they are.
    #[error("recording the runs of {namespace}/{name} before it goes: {source}")]
    Ledger {
        namespace: String,
        name: String,
        #[source]
        source: LedgerError,
    },
    /// A bug: the reconcile of this one resource panicked. It is retried with
    /// backoff; every other resource goes on.
    #[error("the reconcile of {namespace}/{name} panicked: {message}")]
    Panicked {
        namespace: String,
        name: String,
        message: String,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { what, .. } => what,
            Error::NoNamespace(_) => "no namespace",
            Error::Ledger { .. } => "recording departed runs in the claims ledger",
            Error::Panicked { .. } => "panic",
        }
    }
}

/// Everything a reconcile needs; cheap to share.
pub struct Context {
    pub client: Client,
    pub amperity: AmperityClient,
    pub defaults: Defaults,
    pub settings: Settings,
    /// Who publishes the Events. (No shared `Recorder`: it keeps every Event it
    /// published for six minutes, about 4 KB each, to count repeats as a series;
    /// ours are published once per transition, and with thousands of runs started
    /// together that cache would be most of the operator's memory.)
    pub reporter: Reporter,
    /// Per-resource memory (last poll time), keyed by uid. Lost on restart, which
    /// costs at most one early poll per resource.
    pub memory: Mutex<HashMap<String, RunMemory>>,
    pub metrics: Arc<Metrics>,
    /// Bounds concurrent Kubernetes calls: thousands of runs reconciled at once
    /// (after a restart) would otherwise hold thousands of requests in memory.
    pub kube_calls: tokio::sync::Semaphore,
    /// Kept for the calls a start or a stop waits on: when a burst of ends has a
    /// thousand reconciles queued for `kube_calls`, a stop's intent write would
    /// wait behind all of them (seconds) before the stop could be sent.
    pub urgent_kube_calls: tokio::sync::Semaphore,
    /// What reconciles that finished a run left for after them (its Events, its
    /// finalizer's removal), served by few workers of their own.
    pub trailing: Trailing,
    /// Which resource follows which Amperity run (for the search of a lost start).
    pub tracking: Tracking,
    /// The runs of resources that are gone, kept across restarts (in the
    /// operator's namespace).
    pub ledger: Arc<ClaimsLedger>,
    /// The namespaces watched (empty: all), where `tracking` is filled from.
    pub namespaces: Vec<String>,
    /// Failed reconciles in a row, by uid, for each resource's own backoff.
    pub failures: Failures,
    /// The change feed, when it is on: runs join it when their poll is scheduled.
    pub feed: Option<Arc<Feed>>,
    /// The operator's own namespace: where a cluster connection's Secret is by default.
    pub operator_namespace: String,
    /// Whether connections are served (`--connections`).
    pub connections: bool,
    /// Unfinished runs by the connection they name, for the connection's status.
    pub connections_in_use: Mutex<HashMap<String, HashSet<String>>>,
}

impl Context {
    pub fn new(
        client: Client,
        amperity: AmperityClient,
        defaults: Defaults,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let tracking = Tracking::with_default_endpoint(&defaults.endpoint);
        let ledger = Arc::new(ClaimsLedger::new(
            client.clone(),
            "default",
            DEFAULT_CONFIGMAP,
            metrics.clone(),
        ));
        Context {
            ledger,
            reporter: reporter(),
            client,
            amperity,
            defaults,
            settings,
            memory: Mutex::new(HashMap::new()),
            metrics,
            kube_calls: tokio::sync::Semaphore::new(KUBE_CALLS),
            urgent_kube_calls: tokio::sync::Semaphore::new(URGENT_KUBE_CALLS),
            trailing: Trailing::default(),
            tracking,
            namespaces: Vec::new(),
            failures: Failures::default(),
            feed: None,
            operator_namespace: "default".into(),
            connections: false,
            connections_in_use: Mutex::new(HashMap::new()),
        }
    }

    /// The same, serving connections or not (`--connections`).
    pub fn serving_connections(mut self, on: bool) -> Self {
        self.connections = on;
        self
    }

    /// The same, running in `namespace` (where cluster connections' Secrets are by
    /// default, and the claims ledger is).
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.operator_namespace = namespace.to_string();
        let name = self.ledger.name().to_string();
        self.ledger = Arc::new(ClaimsLedger::new(
            self.client.clone(),
            namespace,
            &name,
            self.metrics.clone(),
        ));
        self
    }

    /// The same, with the claims ledger in the ConfigMap `name` (of its namespace).
    pub fn with_claims_ledger(mut self, name: &str) -> Self {
        let namespace = self.ledger.namespace().to_string();
        self.ledger = Arc::new(ClaimsLedger::new(
            self.client.clone(),
            &namespace,
            name,
            self.metrics.clone(),
        ));
        self
    }

    /// The same, with the change feed on.
    pub fn with_feed(mut self, feed: Arc<Feed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The same, watching only `namespaces` (empty: all).
    pub fn watching(mut self, namespaces: &[String]) -> Self {
        self.namespaces = namespaces.to_vec();
        self
    }

    pub(super) fn remember(&self, uid: &str) -> RunMemory {
        self.memory
            .lock()
            .unwrap()
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    /// Drops everything kept for a resource seen gone: its memory, its phase in
    /// the `runs` gauge, the run it tracks, its place in the change feed. Its runs
    /// are queued for the claims ledger.
    pub fn forget(&self, uid: &str) {
        let now = jiff::Timestamp::now();
        let departed = self.forget_recorded(uid, now);
        self.ledger.queue(departed, now);
    }

    /// [`Context::forget`] for a resource whose runs the claims ledger already
    /// holds (the operator recorded them before letting it go). Returns its runs.
    pub fn forget_recorded(&self, uid: &str, now: jiff::Timestamp) -> Vec<String> {
        self.uses_connection(uid, None);
        self.store(uid, None);
        self.metrics.set_phase(uid, None);
        self.metrics.set_stalled(uid, None);
        if let Some(feed) = &self.feed {
            feed.forget(uid);
        }
        self.tracking.forget_at(uid, now)
    }

    /// How many unfinished runs name the connection (its
    /// [`connection_key`](crate::crd::connection::connection_key)).
    pub fn connection_users(&self, key: &str) -> u32 {
        let users = self.connections_in_use.lock().unwrap();
        let count = users.get(key).map_or(0, HashSet::len);
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Records which connection an unfinished run uses now (None: none).
    pub(super) fn uses_connection(&self, uid: &str, connection: Option<String>) {
        let mut users = self.connections_in_use.lock().unwrap();
        users.retain(|key, uids| {
            if connection.as_deref() != Some(key.as_str()) {
                uids.remove(uid);
            }
            !uids.is_empty()
        });
        if let Some(key) = connection {
            users.entry(key).or_default().insert(uid.to_string());
        }
    }

    /// What the watch saw, for what a reconcile cannot do: a run deleted without
    /// one (no finalizer: it had finished) is forgotten; after a relist of all
    /// namespaces, runs that vanished meanwhile leave the tracking (`present`
    /// gives the uids the cache holds).
    pub fn watched(
        &self,
        event: &watcher::Event<CachedRun>,
        present: impl FnOnce() -> HashSet<String>,
    ) {
        match event {
            watcher::Event::Delete(run) => self.forget(&run.uid().unwrap_or_default()),
            watcher::Event::InitDone if self.namespaces.len() <= 1 => {
                let vanished = self.tracking.retain(&present());
                self.ledger.queue(vanished, jiff::Timestamp::now());
            }
            _ => {}
        }
    }

    pub(super) fn store(&self, uid: &str, memory: Option<RunMemory>) {
        let mut map = self.memory.lock().unwrap();
        match memory {
            Some(m) => map.insert(uid.to_string(), m),
            None => map.remove(uid),
        };
    }
}
