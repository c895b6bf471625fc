//! Who may create which connection (issue 25): a user bound to the built-in `edit`
//! role in a namespace creates an `AmperityConnection` there and cannot create a
//! `ClusterAmperityConnection` (cluster-wide: a platform team's); a viewer reads
//! the namespace's connections and creates neither kind. (Reading cluster
//! connections takes `view` bound cluster-wide: a RoleBinding grants nothing
//! cluster-scoped.) Part of the roles scenario (roles.rs), which applies the
//! chart's aggregated roles with connections served.

use std::path::Path;

use serde_json::{Value, json};

use crate::env::{Env, Result};
use crate::roles::allowed;

fn ensure(ok: bool, what: impl Into<String>) -> Result {
    if ok { Ok(()) } else { Err(what.into()) }
}

/// Creates `doc` as the user of `kubeconfig`: whether it was allowed, and kubectl's words.
async fn create_as(env: &Env, kubeconfig: &Path, doc: &Value) -> Result<(bool, String)> {
    let path = std::env::temp_dir().join(format!("e2e-conn-{}.json", fastrand::u32(..)));
    std::fs::write(&path, doc.to_string()).map_err(|e| e.to_string())?;
    let out = env
        .kubectl_as(kubeconfig, &["create", "-f", path.to_str().unwrap()])
        .await;
    let _ = std::fs::remove_file(&path);
    Ok(out)
}

pub async fn editors_create_connections_not_cluster_ones(
    env: &Env,
    ns: &str,
    editor: &Path,
    viewer: &Path,
) -> Result {
    let name = format!("e2e-roles-{ns}");
    let namespaced = json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "AmperityConnection",
        "metadata": {"name": "by-editor", "namespace": ns},
        "spec": {"tenant": "socktown", "tokenSecretRef": {"name": "amperity-api"}},
    });
    let cluster = json!({
        "apiVersion": "amperity.dev/v1alpha1", "kind": "ClusterAmperityConnection",
        "metadata": {"name": name},
        "spec": {"tenant": "socktown", "tokenSecretRef": {"name": "amperity-api"},
                 "namespaceSelector": {}},
    });
    let (ok, out) = create_as(env, viewer, &namespaced).await?;
    ensure(
        !ok && out.contains("Forbidden"),
        format!("a viewer created an AmperityConnection: {out}"),
    )?;
    let (ok, out) = create_as(env, editor, &namespaced).await?;
    ensure(
        ok,
        format!("an editor could not create an AmperityConnection: {out}"),
    )?;
    let (ok, out) = create_as(env, editor, &cluster).await?;
    if ok {
        // Not left behind for other scenarios, whatever happens next.
        let _ = env
            .kubectl(&["delete", "clusteramperityconnection", &name, "--wait=false"])
            .await;
    }
    ensure(
        !ok && out.contains("Forbidden"),
        format!("an editor created a ClusterAmperityConnection: {out}"),
    )?;
    for (who, kubeconfig, verb, resource, namespace, want) in [
        ("editor", editor, "delete", "amperityconnections", ns, true),
        (
            "editor",
            editor,
            "create",
            "amperityconnections",
            "default",
            false,
        ),
        (
            "editor",
            editor,
            "update",
            "amperityconnections/status",
            ns,
            false,
        ),
        (
            "editor",
            editor,
            "delete",
            "clusteramperityconnections",
            "",
            false,
        ),
        ("viewer", viewer, "list", "amperityconnections", ns, true),
        (
            "viewer",
            viewer,
            "create",
            "clusteramperityconnections",
            "",
            false,
        ),
    ] {
        let may = allowed(env, kubeconfig, verb, "amperity.dev", resource, namespace).await?;
        ensure(
            may == want,
            format!("the {who} may {verb} {resource} in {namespace:?}: {may}, want {want}"),
        )?;
    }
    let (ok, out) = env
        .kubectl_as(editor, &["-n", ns, "delete", "aconn", "by-editor"])
        .await;
    ensure(
        ok,
        format!("an editor could not delete its AmperityConnection: {out}"),
    )
}
