//! The claims ledger: the runs of resources that are gone, kept in one ConfigMap of
//! the operator's namespace so that they stay claimed across restarts of every
//! replica (in memory, [`Tracking`] forgets them with the process). A lost start's
//! search must never adopt such a run, e.g. the deliberately orphaned run of a
//! deleted resource, which it would later stop.
//!
//! Writes are read-modify-write over the version read (a conflict reads again), so
//! replicas writing at once never lose each other's entries. Departures the
//! operator causes are written before the resource goes ([`ClaimsLedger::record`]);
//! those it only observes are queued and written in batches
//! ([`ClaimsLedger::flush_periodically`]). The text itself is [`format`]'s.

pub mod format;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::cluster::FIELD_MANAGER;
use crate::metrics::Metrics;
use crate::run::tracking::Tracking;

/// The ConfigMap's name when no flag names it.
pub const DEFAULT_CONFIGMAP: &str = "amperity-operator-claims";

/// How long observed departures wait to be written together: one burst of
/// deletions costs one write.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Writes in a row that may conflict before one write gives up (and is retried by
/// its caller: the reconcile's backoff, or the next flush).
const MAX_CONFLICTS: u32 = 8;

/// Observed departures waiting to be written, at most: beyond, the oldest go (and
/// are counted as dropped), as the ledger's own bound would drop them.
const MAX_PENDING: usize = format::MAX_ENTRIES;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "reading ConfigMap {namespace}/{name} (the claims ledger: the operator needs get on it) failed: {source}"
    )]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "writing ConfigMap {namespace}/{name} (the claims ledger: the operator needs get and update on it, and create in {namespace}) failed: {source}"
    )]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "writing ConfigMap {namespace}/{name} (the claims ledger) conflicted {MAX_CONFLICTS} times in a row"
    )]
    Contended { namespace: String, name: String },
}

/// Where the ledger is, and the departures not written yet.
pub struct ClaimsLedger {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    metrics: Arc<Metrics>,
    pending: Mutex<Pending>,
    queued: Notify,
    /// One write at a time from this process: the departures queued meanwhile go
    /// together in the next, so a namespace of a thousand runs deleted at once
    /// costs a few writes, not a thousand that conflict with each other.
    writing: tokio::sync::Mutex<()>,
}

/// Departures waiting to be written, each numbered in the order queued.
#[derive(Default)]
struct Pending {
    entries: Vec<(String, Timestamp)>,
    /// The number the next departure queued gets.
    next: u64,
    /// Every departure numbered below this is in the ledger.
    written_below: u64,
}

impl ClaimsLedger {
    pub fn new(client: Client, namespace: &str, name: &str, metrics: Arc<Metrics>) -> Self {
        ClaimsLedger {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            metrics,
            pending: Mutex::new(Pending::default()),
            queued: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `namespace/name`, for logs.
    pub fn location(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The departures the ledger holds that are still claimed at `now`. A missing
    /// ConfigMap is an empty ledger.
    pub async fn read(&self, now: Timestamp) -> Result<Vec<(String, Timestamp)>, LedgerError> {
        match self.api.get_opt(&self.name).await {
            Ok(found) => Ok(format::unexpired(text_of(found.as_ref()), now)),
            Err(source) => {
                let e = LedgerError::Read {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    source,
                };
                self.failed("read", &e);
                Err(e)
            }
        }
    }

    /// Loads the ledger into `tracking`'s departed runs for the current term; until
    /// it has, in this term, `tracking`'s claims are incomplete.
    pub async fn load_into(&self, tracking: &Tracking) -> Result<(), LedgerError> {
        let term = tracking.term();
        let entries = self.read(Timestamp::now()).await?;
        info!(configmap = %self.location(), departed = entries.len(), term, "claims ledger loaded");
        tracking.load_departed_for(term, entries);
        Ok(())
    }

    /// [`ClaimsLedger::load_into`] until it succeeds, backing off, while `term` is
    /// the current term and nothing else loaded the ledger in it.
    pub async fn load_for_term(&self, tracking: &Tracking, term: u64) {
        let mut failures = 0u32;
        while tracking.term() == term && tracking.needs_ledger() {
            if self.load_into(tracking).await.is_ok() {
                return;
            }
            failures = failures.saturating_add(1);
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    /// Writes `ids` as departed at `at`, now: the caller lets the resource go only
    /// once this succeeded. Records made while another write is under way go
    /// together in the next one.
    pub async fn record(&self, ids: &[String], at: Timestamp) -> Result<(), LedgerError> {
        let Some(mine) = self.enqueue(ids.to_vec(), at) else {
            return Ok(());
        };
        let _writing = self.writing.lock().await;
        if self.lock_pending().written_below > mine {
            // A write that began after this was queued carried it.
            return Ok(());
        }
        self.write_pending().await
    }

    /// Queues departures the operator only observed, for the next flush.
    pub fn queue(&self, ids: Vec<String>, at: Timestamp) {
        if self.enqueue(ids, at).is_some() {
            self.queued.notify_one();
        }
    }

    /// Adds departures to those waiting; returns the number of the last.
    fn enqueue(&self, ids: Vec<String>, at: Timestamp) -> Option<u64> {
        if ids.is_empty() {
            return None;
        }
        let mut pending = self.lock_pending();
        pending.next = pending.next.saturating_add(ids.len() as u64);
        pending.entries.extend(ids.into_iter().map(|id| (id, at)));
        if pending.entries.len() > MAX_PENDING {
            let over = pending.entries.len() - MAX_PENDING;
            pending.entries.sort_by_key(|(_, at)| *at);
            pending.entries.drain(..over);
            self.dropped(over);
        }
        Some(pending.next - 1)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many departures wait to be written.
    pub fn pending(&self) -> usize {
        self.lock_pending().entries.len()
    }

    /// Writes every queued departure in one write; on failure they stay queued.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let _writing = self.writing.lock().await;
        self.write_pending().await
    }

    /// Writes what is queued (the caller holds `writing`).
    async fn write_pending(&self) -> Result<(), LedgerError> {
        let (batch, upto) = {
            let mut pending = self.lock_pending();
            (std::mem::take(&mut pending.entries), pending.next)
        };
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.write(&batch).await;
        let mut pending = self.lock_pending();
        match &result {
            Ok(()) => pending.written_below = pending.written_below.max(upto),
            Err(_) => {
                let newer = std::mem::replace(&mut pending.entries, batch);
                pending.entries.extend(newer);
            }
        }
        result
    }

    /// Flushes queued departures [`FLUSH_EVERY`] after the first of a batch was
    /// queued, backing off while writes fail. Runs until dropped.
    pub async fn flush_periodically(&self) {
        let mut failures = 0u32;
        loop {
            if self.pending() == 0 {
                self.queued.notified().await;
            }
            let wait = if failures == 0 {
                FLUSH_EVERY
            } else {
                backoff(failures)
            };
            tokio::time::sleep(wait).await;
            match self.flush().await {
                Ok(()) => failures = 0,
                Err(_) => failures = failures.saturating_add(1),
            }
        }
    }

    /// Read, merge, write over the version read; a conflict reads again.
    async fn write(&self, departures: &[(String, Timestamp)]) -> Result<(), LedgerError> {
        let write_error = |source: kube::Error| LedgerError::Write {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        };
        let result = async {
            for _ in 0..MAX_CONFLICTS {
                let found = self.api.get_opt(&self.name).await.map_err(write_error)?;
                let current = text_of(found.as_ref());
                let merged = format::merge(current, departures, Timestamp::now());
                if found.is_some() && merged.text == current {
                    return Ok(());
                }
                if merged.dropped_unexpired > 0 {
                    self.dropped(merged.dropped_unexpired);
                }
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PostParams::default()
                };
                let written = match found {
                    Some(mut map) => {
                        // The resourceVersion read stays in the object: the API
                        // server refuses the write if anyone wrote since.
                        map.data
                            .get_or_insert_default()
                            .insert(format::DATA_KEY.into(), merged.text);
                        self.api.replace(&self.name, &params, &map).await
                    }
                    None => self.api.create(&params, &self.empty_map(merged.text)).await,
                };
                match written {
                    Ok(_) => {
                        self.metrics.claims_ledger_writes.inc();
                        return Ok(());
                    }
                    // Written (or created) by someone else since it was read.
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(source) => return Err(write_error(source)),
                }
            }
            Err(LedgerError::Contended {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            })
        }
        .await;
        if let Err(e) = &result {
            self.failed("write", e);
        }
        result
    }

    fn empty_map(&self, text: String) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            data: Some([(format::DATA_KEY.to_string(), text)].into()),
            ..ConfigMap::default()
        }
    }

    fn failed(&self, operation: &'static str, error: &LedgerError) {
        self.metrics.claims_ledger_error(operation);
        if operation == "read" {
            warn!(error = %error, configmap = %self.location(), "could not read the claims ledger: claims stay incomplete (a lost start waits for a person) until it is read; retrying");
        } else {
            warn!(error = %error, configmap = %self.location(), "could not write the claims ledger: the departed runs stay queued (or the resource keeps its finalizer); retrying");
        }
    }

    fn dropped(&self, count: usize) {
        self.metrics
            .claims_ledger_dropped
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
        warn!(configmap = %self.location(), count, "claims ledger full: dropped the oldest departed runs before their retention ended");
    }
}

fn text_of(map: Option<&ConfigMap>) -> &str {
    map.and_then(|m| m.data.as_ref())
        .and_then(|d| d.get(format::DATA_KEY))
        .map_or("", String::as_str)
}

/// The wait after the `failures`-th failed read or flush in a row: 1 s, doubling,
/// at most 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(Duration::from_secs(30))
}
