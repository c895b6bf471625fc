//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): only
//! the holder reconciles; followers stay ready and take over when the lease
//! expires; a leader that loses the lease drops its controllers at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::Readiness;
use crate::signal::shutdown_signal;

/// The field manager of the Lease writes.
pub const LEASE_FIELD_MANAGER: &str = "amperity-operator-lease";

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub enabled: bool,
    pub lease_name: String,
    pub namespace: String,
    /// Unique per replica; the pod name in a cluster.
    pub identity: String,
    /// Seconds a lease stays valid without renewal.
    pub lease_seconds: u64,
    /// Seconds before expiry the holder renews.
    pub renew_grace_seconds: u64,
}

/// Runs `work` while this replica leads (or always, with election off) until a
/// shutdown signal. `work` is started anew each time leadership is regained.
pub async fn run_while_leading<F, Fut>(
    client: Client,
    config: LeaderConfig,
    readiness: Arc<Readiness>,
    work: F,
) -> Result<(), LeaseManagerError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    if !config.enabled {
        readiness.leader.store(true, Ordering::SeqCst);
        readiness.leadership_known.store(true, Ordering::SeqCst);
        // The controllers end themselves on a shutdown signal, after in-flight reconciles.
        work().await;
        return Ok(());
    }
    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.lease_seconds)
        .with_grace(config.renew_grace_seconds)
        .with_field_manager(LEASE_FIELD_MANAGER)
        .build()
        .await?;
    // The Lease was read: until it says otherwise, this replica is a ready follower.
    readiness.leadership_known.store(true, Ordering::SeqCst);
    info!(lease = %config.lease_name, identity = %config.identity, "waiting for leadership");
    let (mut leading, task) = manager.watch().await;
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let check = Duration::from_secs((config.lease_seconds / 3).max(1));
    let lease = Duration::from_secs(config.lease_seconds);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        // The manager says we hold the lease, and the Lease itself agrees.
        let confirmed = async {
            loop {
                if !until(&mut leading, true).await {
                    return false;
                }
                if holder_is(&leases, &config.lease_name, &config.identity).await == Some(true) {
                    return true;
                }
                tokio::time::sleep(check).await;
            }
        };
        tokio::select! {
            became = confirmed => if !became { break },
            _ = &mut shutdown => break,
        }
        info!(identity = %config.identity, "became leader; reconciling");
        readiness.leader.store(true, Ordering::SeqCst);
        // Losing the lease drops the controllers at once; a shutdown signal ends them
        // gracefully (they listen for it themselves), which ends `work`. The Lease is
        // also checked directly: the manager notices a taken lease only when it
        // next renews.
        let lost = tokio::select! {
            _ = work() => false,
            lost = until(&mut leading, false) => lost,
            _ = watchdog(&leases, &config.lease_name, &config.identity, check, lease) => true,
        };
        readiness.leader.store(false, Ordering::SeqCst);
        readiness.watching.store(false, Ordering::SeqCst);
        if !lost {
            break;
        }
        warn!(identity = %config.identity, "lost leadership; stopped reconciling");
    }
    // Closing the channel makes the manager release the lease for the next leader.
    drop(leading);
    match task.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(join) => {
            warn!(error = %join, "lease task ended abnormally");
            Ok(())
        }
    }
}

/// Whether the Lease names `identity` as its holder; None when it cannot be read.
async fn holder_is(leases: &Api<Lease>, name: &str, identity: &str) -> Option<bool> {
    let lease = leases.get(name).await.ok()?;
    Some(lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(identity))
}

/// Returns once this replica can no longer count itself leader: the Lease names
/// another holder, or it could not be read for a whole lease period.
async fn watchdog(
    leases: &Api<Lease>,
    name: &str,
    identity: &str,
    every: Duration,
    lease: Duration,
) {
    let mut confirmed = std::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match holder_is(leases, name, identity).await {
            Some(true) => confirmed = std::time::Instant::now(),
            Some(false) => return,
            None if confirmed.elapsed() >= lease => return,
            None => {}
        }
    }
}

/// Waits until the leadership flag equals `wanted`; false if the manager stopped.
async fn until(leading: &mut watch::Receiver<bool>, wanted: bool) -> bool {
    loop {
        if *leading.borrow_and_update() == wanted {
            return true;
        }
        if leading.changed().await.is_err() {
            return false;
        }
    }
}
