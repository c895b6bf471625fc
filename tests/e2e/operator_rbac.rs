//! The operator's own RBAC from the chart, on the real API server: it is enough for
//! everything a user expects, and removing any one rule breaks something.

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;

use crate::env::{self, Env, Result, condition, events, free_port, phase};
use crate::scenarios::ensure;

/// The chart's RBAC objects for a release in `namespace`.
fn chart_rbac(namespace: &str) -> Result<Vec<serde_json::Value>> {
    let docs = env::render_chart(
        namespace,
        "ServiceAccount,ClusterRole,ClusterRoleBinding,Role,RoleBinding",
    )?;
    // The operator's own RBAC: the users' aggregated roles grant it nothing (roles.rs).
    Ok(docs
        .into_iter()
        .filter(|d| !env::is_aggregated(d))
        .collect())
}

/// Applies RBAC objects, replacing earlier versions wholesale. The ServiceAccount
/// is created once and kept: recreating it would revoke its token.
fn apply_rbac(env: &Env, docs: &[serde_json::Value]) -> Result {
    let path = std::env::temp_dir().join(format!("e2e-rbac-{}.json", fastrand::u32(..)));
    let docs: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] != "ServiceAccount")
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    std::fs::write(&path, list.to_string()).unwrap();
    let (_, _) = env.kubectl(&["delete", "--ignore-not-found", "-f", path.to_str().unwrap()]);
    let (ok, out) = env.kubectl(&["create", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    ensure(ok, format!("applying RBAC: {out}"))
}

/// A kubeconfig that authenticates as the chart's ServiceAccount (a TokenRequest,
/// through the API: the suite's kubectl 1.20 has no `create token`).
async fn service_account_kubeconfig(env: &Env, namespace: &str) -> Result<std::path::PathBuf> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(env.client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}
    }))
    .map_err(|e| e.to_string())?;
    let issued = accounts
        .create_token_request("amperity-operator", &Default::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest: {e}"))?;
    let issued = serde_json::to_value(issued).map_err(|e| e.to_string())?;
    let token = issued["status"]["token"]
        .as_str()
        .ok_or("TokenRequest: no token")?
        .to_string();
    env.kubeconfig_with_token(&format!("sa-{namespace}"), &token)
}

/// Runs one workflow and one schedule under `kubeconfig`; true when everything a
/// user expects happened: the run Succeeded, with a Started event, and was deleted
/// after its TTL; the schedule started a run on `amperity.dev/run-now` and recorded
/// its success in status.
async fn works_under(
    env: &Env,
    kubeconfig: &std::path::Path,
    lease_ns: &str,
    label: &str,
) -> Result<(bool, String)> {
    let port = free_port();
    let mut op = env.spawn_operator(
        &format!("operator-rbac-{label}"),
        port,
        &[
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("POD_NAMESPACE", lease_ns.to_string()),
            ("LEASE_NAME", format!("rbac-{label}")),
        ],
    )?;
    let ns = env.namespace("rbac", Some(env::TOKEN)).await?;
    env.create_run(
        &ns,
        "checked",
        json!({"configId": format!("cg-e2e-rbac-{label}"), "ttlSecondsAfterFinished": 1}),
    )
    .await?;
    env.create_schedule(
        &ns,
        "checked",
        json!({}),
        json!({"configId": format!("cg-e2e-rbac-{label}-sched")}),
        json!({amperity_operator::schedule::RUN_NOW_ANNOTATION: "1"}),
    )
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    let mut last = String::from("no status");
    let (mut succeeded, mut run_done, mut schedule_done) = (false, false, false);
    while std::time::Instant::now() < deadline {
        match env
            .runs(&ns)
            .get_opt("checked")
            .await
            .map_err(|e| e.to_string())?
        {
            Some(run) => {
                succeeded |= phase(&run) == "Succeeded";
                let stalled = condition(&run, "Stalled");
                last = format!("run phase {:?}, stalled {stalled:?}", phase(&run));
                if stalled.is_some_and(|c| c.0 == "True") {
                    break;
                }
            }
            None if succeeded => run_done = true,
            None => last = "the run was deleted before it succeeded".into(),
        }
        let schedule = env
            .schedules(&ns)
            .get("checked")
            .await
            .map_err(|e| e.to_string())?;
        let status = schedule.status.unwrap_or_default();
        schedule_done = status
            .last_run
            .is_some_and(|r| r.result.as_str() == "Succeeded");
        if run_done && !schedule_done {
            last = format!(
                "the schedule's run-now run did not succeed (runs {:?}, schedule status written: {})",
                env.run_names(&ns).await?,
                status.observed_generation.is_some()
            );
        }
        if run_done && schedule_done {
            break;
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            last = format!("the operator exited ({status})");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    op.kill();
    // Deleted by the operator that runs the next check: the environment outlives it.
    let _ = env
        .schedules(&ns)
        .delete("checked", &DeleteParams::default())
        .await;
    if !(run_done && schedule_done) {
        return Ok((false, last));
    }
    let started = events(env, &ns).contains_key("Started");
    Ok((
        started,
        if started {
            "ok".into()
        } else {
            "no Started event".into()
        },
    ))
}

pub async fn the_charts_rbac_is_enough_and_every_rule_is_needed(env: &mut Env) -> Result {
    // The admin-credentialed operator would do the work itself: pause it.
    env.without_shared_operator("operator-after-rbac", |env| Box::pin(rbac_checks(env)))
        .await
}

async fn rbac_checks(env: &mut Env) -> Result {
    let release_ns = env.namespace("operator", None).await?;
    let full = chart_rbac(&release_ns)?;
    let accounts: Vec<&serde_json::Value> = full
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .collect();
    ensure(accounts.len() == 1, "the chart renders one ServiceAccount")?;
    let sa = std::env::temp_dir().join(format!("e2e-sa-{release_ns}.json"));
    std::fs::write(&sa, accounts[0].to_string()).unwrap();
    let (ok, out) = env.kubectl(&["create", "-f", sa.to_str().unwrap()]);
    ensure(ok, format!("creating the ServiceAccount: {out}"))?;
    apply_rbac(env, &full)?;
    let kubeconfig = service_account_kubeconfig(env, &release_ns).await?;
    let (ok, why) = works_under(env, &kubeconfig, &release_ns, "full").await?;
    ensure(ok, format!("the chart's RBAC is not enough: {why}"))?;

    // Remove each rule in turn: something must break.
    let roles: Vec<usize> = full
        .iter()
        .enumerate()
        .filter(|(_, d)| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .map(|(i, _)| i)
        .collect();
    let mut checked = 0;
    for role in roles {
        let count = full[role]["rules"].as_array().map(Vec::len).unwrap_or(0);
        for rule in 0..count {
            let mut reduced = full.clone();
            let removed = reduced[role]["rules"].as_array_mut().unwrap().remove(rule);
            apply_rbac(env, &reduced)?;
            let label = format!("without-{checked}");
            let (ok, why) = works_under(env, &kubeconfig, &release_ns, &label).await?;
            ensure(!ok, format!("removing {removed} broke nothing"))?;
            eprintln!("    without {}: {why}", removed["resources"]);
            checked += 1;
        }
    }
    ensure(checked == 7, format!("{checked} rules checked, expected 7"))
}
