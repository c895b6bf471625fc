//! The operator's own RBAC from the chart, on the real API server: it is enough for
//! everything a user expects, and removing any one rule breaks something.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::DeleteParams;
use serde_json::{Value, json};

use crate::env::{self, Env, Result, can_named, client_for, condition, events, eventually, phase};
use crate::scenarios::ensure;

/// How long the operator has, under the chart's full RBAC, to do everything.
const FULL: Duration = Duration::from_secs(60);
/// The chart's default `leaderElection.leaseName`, which its Lease Role names.
const CHART_LEASE: &str = "amperity-operator";
/// The chart's default `claimsConfigMap`, which its claims Role names.
const CHART_CLAIMS: &str = "amperity-operator-claims";

/// The chart's RBAC objects for a release in `namespace`.
async fn chart_rbac(namespace: &str) -> Result<Vec<Value>> {
    let docs = env::render_chart(
        namespace,
        "ServiceAccount,ClusterRole,ClusterRoleBinding,Role,RoleBinding",
    )
    .await?;
    // The operator's own RBAC: the users' aggregated roles grant it nothing (roles.rs).
    Ok(docs
        .into_iter()
        .filter(|d| !env::is_aggregated(d))
        .collect())
}

/// Applies RBAC objects, replacing earlier versions wholesale. The ServiceAccount
/// is created once and kept: recreating it would revoke its token.
async fn apply_rbac(env: &Env, docs: &[Value]) -> Result {
    let path = std::env::temp_dir().join(format!("e2e-rbac-{}.json", fastrand::u32(..)));
    let docs: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] != "ServiceAccount")
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    std::fs::write(&path, list.to_string()).unwrap();
    let (_, _) = env
        .kubectl(&["delete", "--ignore-not-found", "-f", path.to_str().unwrap()])
        .await;
    let (ok, out) = env.kubectl(&["create", "-f", path.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&path);
    ensure(ok, format!("applying RBAC: {out}"))
}

/// One request a rule allows: verb, group, resource, namespace and, for a rule
/// with `resourceNames`, the object's name.
type Probe = (String, String, String, String, String);

/// One request each rule of `docs`' roles allows.
fn probes(docs: &[Value], release_ns: &str) -> Vec<Probe> {
    let mut out = Vec::new();
    for doc in docs {
        if doc["kind"] != "ClusterRole" && doc["kind"] != "Role" {
            continue;
        }
        let namespace = doc["metadata"]["namespace"].as_str().unwrap_or(release_ns);
        for rule in doc["rules"].as_array().into_iter().flatten() {
            out.push(probe(rule, namespace));
        }
    }
    out
}

fn probe(rule: &Value, namespace: &str) -> Probe {
    let first = |field: &str| rule[field][0].as_str().unwrap_or_default().to_string();
    (
        first("verbs"),
        first("apiGroups"),
        first("resources"),
        namespace.to_string(),
        first("resourceNames"),
    )
}

/// Waits until the API server's authorizer answers for the ServiceAccount as the
/// RBAC just applied says: every remaining rule allows, the removed one does not.
/// (It learns of RBAC objects through a watch: a request made at once could still
/// be judged by the previous set.)
async fn until_authorized(sa: &Client, allowed: &[Probe], denied: Option<&Probe>) -> Result {
    eventually(Duration::from_secs(30), || async {
        for (verb, group, resource, ns, name) in allowed {
            ensure(
                can_named(sa, verb, group, resource, ns, name).await?,
                format!("the ServiceAccount may not yet {verb} {group}/{resource} {name} in {ns}"),
            )?;
        }
        if let Some((verb, group, resource, ns, name)) = denied {
            ensure(
                !can_named(sa, verb, group, resource, ns, name).await?,
                format!("the ServiceAccount may still {verb} {group}/{resource} {name} in {ns}"),
            )?;
        }
        Ok(())
    })
    .await
}

/// A kubeconfig that authenticates as the chart's ServiceAccount (a TokenRequest,
/// through the API: the suite's kubectl 1.20 has no `create token`).
async fn service_account_kubeconfig(env: &Env, namespace: &str) -> Result<PathBuf> {
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

/// A log line without its colours, cut to a readable length.
fn short(line: &str) -> String {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // An ANSI colour: ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    match plain.find("error=") {
        Some(at) => plain[at..].chars().take(200).collect(),
        None => plain.chars().take(200).collect(),
    }
}

/// How a check under some RBAC went.
struct Verdict {
    works: bool,
    why: String,
    /// A line of the operator's log where the API server refused it.
    refused: Option<String>,
}

/// Runs one workflow and one schedule under `kubeconfig`; works when everything a
/// user expects happened within `limit`: the run Succeeded, with a Started event,
/// and was deleted after its TTL; the schedule started a run on
/// `amperity.dev/run-now` and recorded its success in status. With `refusal_breaks`,
/// the check ends as soon as the operator's log shows the API server refusing it.
async fn works_under(
    env: &Env,
    kubeconfig: &Path,
    release_ns: &str,
    label: &str,
    limit: Duration,
    refusal_breaks: bool,
) -> Result<Verdict> {
    // The Lease the chart's Role names (leaderElection.leaseName), fresh for each
    // try: the Role may read and renew only that one, and the operator creates it.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env.client.clone(), release_ns);
    let _ = leases.delete(CHART_LEASE, &DeleteParams::default()).await;
    // The claims ledger likewise: the operator creates it (at the run's TTL deletion,
    // which records the run's id before the resource goes), then reads and replaces it.
    let ledgers: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(env.client.clone(), release_ns);
    let _ = ledgers.delete(CHART_CLAIMS, &DeleteParams::default()).await;
    let mut op = env.spawn_operator(
        &format!("operator-rbac-{label}"),
        &[
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("POD_NAMESPACE", release_ns.to_string()),
            ("LEASE_NAME", CHART_LEASE.to_string()),
        ],
    )?;
    // As the API server words a refusal of the ServiceAccount.
    let account = format!("system:serviceaccount:{release_ns}:amperity-operator");
    let refused = |log: &str| {
        log.lines()
            .find(|l| l.contains(&account) && l.contains("forbidden"))
            .map(short)
    };
    let ns = env.namespace("rbac", Some(&env.own_token())).await?;
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
    let deadline = Instant::now() + limit;
    let mut last = String::from("no status");
    let (mut succeeded, mut run_done, mut schedule_done) = (false, false, false);
    let mut verdict = None;
    while Instant::now() < deadline {
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
            // The run lives a second after it ends: a look can miss its Succeeded
            // phase, never its Succeeded Event.
            None if succeeded || events(env, &ns).await.contains_key("Succeeded") => {
                run_done = true;
            }
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
        if refusal_breaks && let Some(line) = refused(&op.log_text()) {
            verdict = Some(Verdict {
                works: false,
                why: format!("refused: {line}"),
                refused: Some(line),
            });
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
    if let Some(verdict) = verdict {
        return Ok(verdict);
    }
    let refused = refused(&op.log_text());
    if !(run_done && schedule_done) {
        return Ok(Verdict {
            works: false,
            why: last,
            refused,
        });
    }
    let started = events(env, &ns).await.contains_key("Started");
    Ok(Verdict {
        works: started,
        why: if started {
            "ok".into()
        } else {
            "no Started event".into()
        },
        refused,
    })
}

pub async fn the_charts_rbac_is_enough_and_every_rule_is_needed(env: &mut Env) -> Result {
    // The admin-credentialed operator would do the work itself: pause it.
    env.without_shared_operator("operator-after-rbac", |env| Box::pin(rbac_checks(env)))
        .await
}

async fn rbac_checks(env: &mut Env) -> Result {
    let release_ns = env.namespace("operator", None).await?;
    let full = chart_rbac(&release_ns).await?;
    let accounts: Vec<&Value> = full
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .collect();
    ensure(accounts.len() == 1, "the chart renders one ServiceAccount")?;
    let sa = std::env::temp_dir().join(format!("e2e-sa-{release_ns}.json"));
    std::fs::write(&sa, accounts[0].to_string()).unwrap();
    let (ok, out) = env.kubectl(&["create", "-f", sa.to_str().unwrap()]).await;
    ensure(ok, format!("creating the ServiceAccount: {out}"))?;
    apply_rbac(env, &full).await?;
    let kubeconfig = service_account_kubeconfig(env, &release_ns).await?;
    let sa_client = client_for(&kubeconfig).await?;
    until_authorized(&sa_client, &probes(&full, &release_ns), None).await?;
    let started = Instant::now();
    let verdict = works_under(env, &kubeconfig, &release_ns, "full", FULL, false).await?;
    ensure(
        verdict.works,
        format!("the chart's RBAC is not enough: {}", verdict.why),
    )?;
    // Each check below must break within twice the time everything took here, or
    // it would have worked. And when nothing was refused here, a refusal there is
    // proof enough that the rule removed is used.
    eprintln!(
        "    the chart's RBAC: everything done in {:.1}s",
        started.elapsed().as_secs_f32()
    );
    let limit = (started.elapsed() * 2).max(Duration::from_secs(15));
    let refusal_breaks = verdict.refused.is_none();

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
            apply_rbac(env, &reduced).await?;
            let scope = reduced[role]["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&release_ns)
                .to_string();
            until_authorized(
                &sa_client,
                &probes(&reduced, &release_ns),
                Some(&probe(&removed, &scope)),
            )
            .await?;
            let label = format!("without-{checked}");
            let verdict =
                works_under(env, &kubeconfig, &release_ns, &label, limit, refusal_breaks).await?;
            ensure(!verdict.works, format!("removing {removed} broke nothing"))?;
            eprintln!("    without {}: {}", removed["resources"], verdict.why);
            checked += 1;
        }
    }
    // Six of the operator's, two of the Lease (create; get and patch of the one
    // Lease), two of the claims ledger (create; get and update of the one ConfigMap).
    ensure(
        checked == 10,
        format!("{checked} rules checked, expected 10"),
    )
}
