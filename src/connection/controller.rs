//! Looks at every connection as often as at a stalled run: verifies its credentials
//! when they are new, changed or five minutes old (one `GET /workflow/runs?limit=1`), and writes
//! what [`super::status`] decides with server-side apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{Verification, due, refreshed, status};
use crate::amperity::credentials::{self, Access, DEFAULT_TOKEN_KEY};
use crate::amperity::{ClientError, ListQuery, Target};
use crate::cluster::FIELD_MANAGER;
use crate::cluster::events::kube_error_summary;
use crate::crd::TokenSecretRef;
use crate::crd::connection::{
    AmperityConnection, ClusterAmperityConnection, ConnectionKind, ConnectionStatus,
    ConnectionTarget, connection_key,
};
use crate::run::controller::Context;

/// What both kinds share, as the reconcile needs it.
struct Connection {
    /// Its [`connection_key`]: what runs count it by.
    key: String,
    target: ConnectionTarget,
    secret_namespace: String,
    secret: TokenSecretRef,
    generation: i64,
    status: Option<ConnectionStatus>,
}

/// The run controller's context (the Amperity client, its defaults, the count of
/// runs using each connection) and when each connection was last verified.
pub struct ConnectionContext {
    runs: Arc<Context>,
    /// By connection key: generation, Secret version and time of the last verification.
    verified: Mutex<HashMap<String, (i64, String, Timestamp)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} for {connection}: {source}")]
    Kube {
        what: &'static str,
        connection: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs both controllers until a shutdown signal. Without the CRDs (installed
/// after the operator), it says so and runs nothing: runs naming a connection
/// then wait, `ConnectionNotFound`.
pub async fn controllers(client: Client, runs: Arc<Context>) {
    // Namespaced connections where runs are watched; cluster ones everywhere.
    let scopes: Vec<Api<AmperityConnection>> = if runs.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        runs.namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let cluster: Api<ClusterAmperityConnection> = Api::all(client.clone());
    let probe = ListParams::default().limit(1);
    let probed = match scopes[0].list(&probe).await {
        Ok(_) => cluster.list(&probe).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = probed {
        warn!(error = %kube_error_summary(&e), "connections are off: their CRDs are not installed or not readable; install them with `amperity-operator crd | kubectl apply -f -` and the chart's RBAC (connections.enabled)");
        return;
    }
    let ctx = Arc::new(ConnectionContext {
        runs,
        verified: Mutex::new(HashMap::new()),
    });
    let namespaced = scopes.into_iter().map(|api| {
        Controller::new(api, watcher::Config::default())
            .shutdown_on_signal()
            .run(reconcile_namespaced, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    warn!(error = %e, "AmperityConnection reconcile loop error");
                }
            })
    });
    let cluster = Controller::new(cluster, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile_cluster, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "ClusterAmperityConnection reconcile loop error");
            }
        });
    info!("connection controllers started");
    futures::future::join(futures::future::join_all(namespaced), cluster).await;
}

async fn reconcile_namespaced(
    c: Arc<AmperityConnection>,
    ctx: Arc<ConnectionContext>,
) -> Result<Action, Error> {
    let namespace = c.namespace().unwrap_or_default();
    let connection = Connection {
        key: connection_key(
            ConnectionKind::AmperityConnection,
            &namespace,
            &c.name_any(),
        ),
        target: c.spec.target.clone(),
        secret_namespace: namespace.clone(),
        secret: c.spec.token_secret_ref.clone(),
        generation: c.metadata.generation.unwrap_or_default(),
        status: c.status.clone(),
    };
    let api: Api<AmperityConnection> = Api::namespaced(ctx.runs.client.clone(), &namespace);
    reconcile(&ctx, connection, &api, &c.name_any()).await
}

async fn reconcile_cluster(
    c: Arc<ClusterAmperityConnection>,
    ctx: Arc<ConnectionContext>,
) -> Result<Action, Error> {
    let r = &c.spec.token_secret_ref;
    let connection = Connection {
        key: connection_key(ConnectionKind::ClusterAmperityConnection, "", &c.name_any()),
        target: c.spec.target.clone(),
        secret_namespace: r
            .namespace
            .clone()
            .unwrap_or_else(|| ctx.runs.operator_namespace.clone()),
        secret: TokenSecretRef {
            name: r.name.clone(),
            key: r.key.clone(),
        },
        generation: c.metadata.generation.unwrap_or_default(),
        status: c.status.clone(),
    };
    let api: Api<ClusterAmperityConnection> = Api::all(ctx.runs.client.clone());
    reconcile(&ctx, connection, &api, &c.name_any()).await
}

async fn reconcile<K>(
    ctx: &ConnectionContext,
    c: Connection,
    api: &Api<K>,
    name: &str,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let kube_err = |what: &'static str| {
        let connection = c.key.clone();
        move |source| Error::Kube {
            what,
            connection,
            source,
        }
    };
    let now = Timestamp::now();
    let secrets: Api<Secret> = Api::namespaced(ctx.runs.client.clone(), &c.secret_namespace);
    let secret = secrets.get_opt(&c.secret.name).await;
    let version = match &secret {
        Ok(Some(s)) => s.resource_version().unwrap_or_default(),
        _ => String::new(),
    };
    let last = ctx.verified.lock().unwrap().get(&c.key).cloned();
    let runs = ctx.runs.connection_users(&c.key);
    let prepared = prepare(ctx, &c, secret);
    // The tenant's one budget, lowered while this connection asks it to be
    // (whoever's requests they are: its runs', other connections', inline ones').
    if let Ok(target) = target(ctx, &c) {
        let rate = c.target.requests_per_second;
        ctx.runs.amperity.limit_tenant(&target, &c.key, rate);
    }
    // Who the credentials act as: the Secret's `principal` key, or what the runs
    // they started showed; written with the Secret's version, so that a search
    // after a restart (nothing learned yet) still knows it, and one after a
    // rotation does not trust the old one.
    let known = prepared.as_ref().ok().and_then(|(access, target)| {
        access.principal.clone().or_else(|| {
            ctx.runs
                .amperity
                .learned_principal(target, &access.credentials)
        })
    });
    let next = match (&c.status, prepared) {
        // Verified recently: only the count of runs and the principal may change.
        (Some(before), Ok(_)) if !due(last.as_ref(), c.generation, &version, now) => {
            refreshed(before, known.as_ref(), &version, runs)
        }
        (_, prepared) => {
            let outcome = match prepared {
                Ok((access, target)) => call(ctx, &c, &access, &target).await,
                Err(problem) => problem,
            };
            if matches!(outcome, Verification::Verified) {
                ctx.verified
                    .lock()
                    .unwrap()
                    .insert(c.key.clone(), (c.generation, version.clone(), now));
            } else {
                ctx.verified.lock().unwrap().remove(&c.key);
            }
            status(
                c.status.as_ref(),
                c.generation,
                &outcome,
                known.as_ref(),
                &version,
                runs,
                now,
            )
        }
    };
    if c.status.as_ref() != Some(&next) {
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": next,
        });
        api.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(kube_err("writing the status"))?;
    }
    Ok(Action::requeue(ctx.runs.settings.stalled_recheck))
}

/// The connection's credentials and where they go, or what stands in the way
/// (the Secret, the allow-list).
fn prepare(
    ctx: &ConnectionContext,
    c: &Connection,
    secret: Result<Option<Secret>, kube::Error>,
) -> Result<(Access, Target), Verification> {
    let named = format!("Secret {}/{}", c.secret_namespace, c.secret.name);
    let secret = match secret {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(Verification::SecretProblem {
                reason: "SecretNotFound".into(),
                message: format!(
                    "{named} (tokenSecretRef) does not exist: create it with key {:?} holding an Amperity API token",
                    c.secret.key.as_deref().unwrap_or(DEFAULT_TOKEN_KEY)
                ),
            });
        }
        Err(e) => {
            return Err(Verification::SecretProblem {
                reason: "SecretUnreadable".into(),
                message: format!(
                    "{named} could not be read ({}): let the operator get Secrets in namespace {} (README, connections)",
                    kube_error_summary(&e),
                    c.secret_namespace
                ),
            });
        }
    };
    let data = secret.data.unwrap_or_default();
    let value = |k: &str| data.get(k).map(|v| v.0.as_slice());
    let access = credentials::from_secret_data(value, c.secret.key.as_deref()).map_err(|p| {
        Verification::SecretProblem {
            reason: p.reason.into(),
            message: format!("{named} {}", p.message),
        }
    })?;
    let target = target(ctx, c).map_err(|e| Verification::EndpointNotAllowed(e.to_string()))?;
    Ok((access, target))
}

/// Where the connection's requests go, if the allow-list lets them.
fn target(ctx: &ConnectionContext, c: &Connection) -> Result<Target, ClientError> {
    let defaults = &ctx.runs.defaults;
    Target::new(
        c.target.endpoint.as_deref(),
        &defaults.endpoint,
        &c.target.tenant,
        &defaults.api_version,
        ctx.runs.amperity.allow_list(),
    )
}

/// One authenticated call with the connection's credentials.
async fn call(
    ctx: &ConnectionContext,
    c: &Connection,
    access: &Access,
    target: &Target,
) -> Verification {
    let named = format!("Secret {}/{}", c.secret_namespace, c.secret.name);
    let query = ListQuery {
        limit: Some(1),
        ..ListQuery::default()
    };
    match ctx
        .runs
        .amperity
        .list(target, &access.credentials, &query, None)
        .await
    {
        Ok(_) => Verification::Verified,
        Err(e) if e.is_not_allowed() => Verification::EndpointNotAllowed(e.to_string()),
        Err(e) if e.is_auth() => Verification::Rejected(format!(
            "Amperity refused the credentials from {named} ({e}): put valid credentials in the Secret, a changed Secret is verified at once"
        )),
        Err(e) => Verification::Unavailable(format!(
            "Amperity could not be asked ({e}); verified again shortly"
        )),
    }
}

fn error_policy<K>(_c: Arc<K>, error: &Error, _ctx: Arc<ConnectionContext>) -> Action {
    warn!(error = %error, "connection reconcile failed; retrying");
    Action::requeue(std::time::Duration::from_secs(10))
}
