//! The chart's aggregated ClusterRoles on the real API server, aggregated by
//! kube-controller-manager's clusterrole-aggregation controller (testenv.sh runs it):
//! a user bound to the built-in `edit` role in a namespace creates and deletes runs
//! there, a `view` user only reads them, and neither may read the operator's Lease.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::env::{self, Env, Result, can, client_for, eventually};

const EDITOR: &str = "e2e-editor";
const VIEWER: &str = "e2e-viewer";

fn ensure(ok: bool, what: impl Into<String>) -> Result {
    if ok { Ok(()) } else { Err(what.into()) }
}

pub async fn users_bound_to_edit_create_and_delete_runs_and_cannot_read_the_lease(
    env: &Env,
) -> Result {
    // With connections served: editors may create AmperityConnections too.
    let values = json!({"amperity": {"connections": true}});
    let roles: Vec<Value> = env::render_chart_with("amperity-system", "ClusterRole", values)
        .await?
        .into_iter()
        .filter(env::is_aggregated)
        .collect();
    ensure(
        roles.len() == 2,
        format!(
            "the chart renders {} aggregated ClusterRoles, expected 2",
            roles.len()
        ),
    )?;
    apply(env, &roles).await?;
    wait_until_aggregated(env, "edit", "create").await?;
    wait_until_aggregated(env, "view", "list").await?;

    let ns = env.namespace("roles", Some(&env.own_token())).await?;
    bind(env, &ns, EDITOR, "edit").await?;
    bind(env, &ns, VIEWER, "view").await?;
    let editor = user_kubeconfig(env, EDITOR)?;
    let viewer = user_kubeconfig(env, VIEWER)?;
    // The authorizer learns of new bindings through a watch: wait until they hold.
    let (as_editor, as_viewer) = (client_for(&editor).await?, client_for(&viewer).await?);
    eventually(Duration::from_secs(30), || async {
        let runs = "amperityworkflowruns";
        ensure(
            can(&as_editor, "create", "amperity.dev", runs, &ns).await?
                && can(&as_viewer, "list", "amperity.dev", runs, &ns).await?
                && can(
                    &as_editor,
                    "create",
                    "amperity.dev",
                    "amperityconnections",
                    &ns,
                )
                .await?,
            format!("the bindings in {ns} are not in force"),
        )
    })
    .await?;

    // The editor creates a run: the operator takes it up.
    let manifest = std::env::temp_dir().join(format!("e2e-roles-{ns}.json"));
    let run = env.run_manifest(&ns, "by-editor", json!({"configId": "cg-e2e-roles"}));
    std::fs::write(&manifest, run.to_string()).map_err(|e| e.to_string())?;
    let manifest = manifest.to_str().unwrap();
    let (ok, out) = env.kubectl_as(&viewer, &["create", "-f", manifest]).await;
    ensure(
        !ok && out.contains("Forbidden"),
        format!("a viewer created a run: {out}"),
    )?;
    let (ok, out) = env.kubectl_as(&editor, &["create", "-f", manifest]).await;
    ensure(ok, format!("an editor could not create a run: {out}"))?;
    env.wait_for(&ns, "by-editor", Duration::from_secs(30), "taken up", |r| {
        r.status.is_some()
    })
    .await?;
    for (user, kubeconfig) in [(EDITOR, &editor), (VIEWER, &viewer)] {
        let (ok, out) = env
            .kubectl_as(kubeconfig, &["-n", &ns, "get", "awr", "by-editor"])
            .await;
        ensure(ok, format!("{user} cannot read the run: {out}"))?;
    }

    // Status is the operator's, in every role; runs elsewhere are out of reach.
    for (user, verb, group, resource, namespace, want) in [
        (
            EDITOR,
            "patch",
            "amperity.dev",
            "amperityworkflowruns",
            ns.as_str(),
            true,
        ),
        (
            EDITOR,
            "deletecollection",
            "amperity.dev",
            "amperityworkflowruns",
            ns.as_str(),
            true,
        ),
        (
            EDITOR,
            "create",
            "amperity.dev",
            "amperityworkflowschedules",
            ns.as_str(),
            true,
        ),
        (
            VIEWER,
            "get",
            "amperity.dev",
            "amperityworkflowruns/status",
            ns.as_str(),
            true,
        ),
        (
            VIEWER,
            "list",
            "amperity.dev",
            "amperityworkflowschedules",
            ns.as_str(),
            true,
        ),
        (
            EDITOR,
            "patch",
            "amperity.dev",
            "amperityworkflowruns/status",
            ns.as_str(),
            false,
        ),
        (
            EDITOR,
            "update",
            "amperity.dev",
            "amperityworkflowruns/status",
            ns.as_str(),
            false,
        ),
        (
            VIEWER,
            "delete",
            "amperity.dev",
            "amperityworkflowruns",
            ns.as_str(),
            false,
        ),
        (
            VIEWER,
            "create",
            "amperity.dev",
            "amperityworkflowschedules",
            ns.as_str(),
            false,
        ),
        (
            EDITOR,
            "create",
            "amperity.dev",
            "amperityworkflowruns",
            "default",
            false,
        ),
        (
            EDITOR,
            "get",
            "coordination.k8s.io",
            "leases",
            ns.as_str(),
            false,
        ),
        (
            EDITOR,
            "get",
            "coordination.k8s.io",
            "leases",
            "default",
            false,
        ),
    ] {
        let kubeconfig = if user == EDITOR { &editor } else { &viewer };
        let allowed = allowed(env, kubeconfig, verb, group, resource, namespace).await?;
        ensure(
            allowed == want,
            format!("{user} may {verb} {group}/{resource} in {namespace}: {allowed}, want {want}"),
        )?;
    }

    // The operator's Lease (in its own namespace) stays out of an editor's reach.
    let lease = [
        "-n",
        "default",
        "get",
        "leases.coordination.k8s.io",
        "amperity-operator-e2e",
    ];
    let (ok, out) = env.kubectl_as(&editor, &lease).await;
    ensure(
        !ok && out.contains("Forbidden"),
        format!("an editor read the operator's Lease: {out}"),
    )?;
    let (ok, out) = env.kubectl(&lease).await;
    ensure(
        ok,
        format!("the operator's Lease exists (the check above is not vacuous): {out}"),
    )?;

    crate::connection_roles::editors_create_connections_not_cluster_ones(
        env, &ns, &editor, &viewer,
    )
    .await?;

    // The editor deletes the run: the operator stops it and lets it go.
    let (ok, out) = env
        .kubectl_as(&viewer, &["-n", &ns, "delete", "awr", "by-editor"])
        .await;
    ensure(
        !ok && out.contains("Forbidden"),
        format!("a viewer deleted a run: {out}"),
    )?;
    let (ok, out) = env
        .kubectl_as(
            &editor,
            &["-n", &ns, "delete", "awr", "by-editor", "--timeout=60s"],
        )
        .await;
    ensure(ok, format!("an editor could not delete the run: {out}"))?;
    let gone = env
        .runs(&ns)
        .get_opt("by-editor")
        .await
        .map_err(|e| e.to_string())?
        .is_none();
    ensure(gone, "the run is still there after the editor deleted it")
}

/// Whether the user of `kubeconfig` may do `verb` on `resource` (`name/subresource`
/// allowed) in `namespace`, as the API server's RBAC answers a SelfSubjectAccessReview.
pub(crate) async fn allowed(
    env: &Env,
    kubeconfig: &Path,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
) -> Result<bool> {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb, "group": group,
                                        "resource": resource, "subresource": subresource}},
    });
    let path = std::env::temp_dir().join(format!("e2e-review-{}.json", fastrand::u32(..)));
    std::fs::write(&path, review.to_string()).map_err(|e| e.to_string())?;
    let (ok, out) = env
        .kubectl_as(
            kubeconfig,
            &["create", "-f", path.to_str().unwrap(), "-o", "json"],
        )
        .await;
    let _ = std::fs::remove_file(&path);
    ensure(ok, format!("SelfSubjectAccessReview: {out}"))?;
    let answer: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    Ok(answer["status"]["allowed"] == true)
}

/// Applies objects with the admin's kubectl.
async fn apply(env: &Env, docs: &[Value]) -> Result {
    let path = std::env::temp_dir().join(format!("e2e-roles-{}.json", fastrand::u32(..)));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    std::fs::write(&path, list.to_string()).map_err(|e| e.to_string())?;
    let (ok, out) = env.kubectl(&["apply", "-f", path.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&path);
    ensure(ok, format!("applying {}: {out}", path.display()))
}

/// Waits until the built-in ClusterRole `role` grants `verb` on runs, which only the
/// clusterrole-aggregation controller can have written.
async fn wait_until_aggregated(env: &Env, role: &str, verb: &str) -> Result {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (ok, out) = env
            .kubectl(&["get", "clusterrole", role, "-o", "json"])
            .await;
        if ok {
            let role: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let granted = role["rules"].as_array().into_iter().flatten().any(|rule| {
                let has = |field: &str, want: &str| {
                    rule[field]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|x| x == want))
                };
                has("apiGroups", "amperity.dev")
                    && has("resources", "amperityworkflowruns")
                    && has("verbs", verb)
            });
            if granted {
                return Ok(());
            }
        }
        last = out;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "the built-in {role} ClusterRole never gained {verb} on amperityworkflowruns \
         (is kube-controller-manager running? see $AMPERITY_E2E_DIR/controller-manager.log): {last}"
    ))
}

/// Binds `user` to the built-in ClusterRole `role` in `ns`.
async fn bind(env: &Env, ns: &str, user: &str, role: &str) -> Result {
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{user}-{role}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    });
    apply(env, &[binding]).await
}

/// A kubeconfig for a static-token user of testenv.sh (its line in tokens.csv).
fn user_kubeconfig(env: &Env, user: &str) -> Result<PathBuf> {
    let dir = env.kubeconfig.parent().unwrap_or(Path::new("."));
    let tokens = std::fs::read_to_string(dir.join("tokens.csv"))
        .map_err(|e| format!("reading tokens.csv next to the kubeconfig: {e}"))?;
    let token = tokens
        .lines()
        .find_map(|l| {
            let mut fields = l.split(',');
            let token = fields.next()?;
            (fields.next()? == user).then(|| token.to_string())
        })
        .ok_or(format!("tokens.csv has no user {user}: is the environment from an older testenv.sh? run `testenv.sh down`"))?;
    env.kubeconfig_with_token(user, &token)
}
