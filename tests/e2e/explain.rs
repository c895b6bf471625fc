//! `kubectl explain` on the real API server shows every field's description: what a
//! person reads before writing a manifest or while reading a status.

use serde_norway::Value;

use crate::env::{Env, Result};
use crate::scenarios::ensure;

/// The first words of a description, as `kubectl explain` reflows it.
fn opening(description: &str) -> String {
    description
        .split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every object in the schema under `path` (dotted, as `kubectl explain` takes it).
/// The fields inside a nullable object are left out: API servers before 1.21 (this
/// suite's is 1.20) do not publish them; tests/crd_docs.rs checks their descriptions.
fn objects<'a>(node: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    let node = node.get("items").unwrap_or(node);
    if node.get("properties").is_none() || node.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    out.push((path.clone(), node));
    for (name, sub) in node["properties"].as_mapping().unwrap() {
        objects(sub, format!("{path}.{}", name.as_str().unwrap()), out);
    }
}

pub async fn kubectl_explain_describes_every_field(env: &Env) -> Result {
    // The API server republishes its OpenAPI a few seconds after a CRD changes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match explain_everything(env).await {
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn explain_everything(env: &Env) -> Result {
    let crds: Vec<Value> = amperity_operator::crds()
        .iter()
        .map(|(_, yaml)| serde_norway::from_str(yaml).unwrap())
        .collect();
    let mut found = Vec::new();
    for crd in &crds {
        let singular = crd["spec"]["names"]["singular"].as_str().unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for part in ["spec", "status"] {
            objects(
                &schema["properties"][part],
                format!("{singular}.{part}"),
                &mut found,
            );
        }
    }
    let mut checked = 0;
    for (path, node) in found {
        // Conditions are Kubernetes' own type, described by Kubernetes.
        if path.contains(".conditions") {
            continue;
        }
        let (ok, out) = env.kubectl(&["explain", &path]).await;
        ensure(ok, format!("kubectl explain {path}: {out}"))?;
        let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
        for (name, field) in node["properties"].as_mapping().unwrap() {
            let description = field["description"].as_str().unwrap_or_default();
            ensure(
                !description.is_empty() && flat.contains(&opening(description)),
                format!(
                    "kubectl explain {path} does not describe {}: want {:?} in\n{out}",
                    name.as_str().unwrap(),
                    opening(description)
                ),
            )?;
            checked += 1;
        }
    }
    ensure(checked > 80, format!("only {checked} fields explained"))?;
    // --recursive lists them all, status included.
    let (ok, out) = env
        .kubectl(&["explain", "amperityworkflowrun.status", "--recursive"])
        .await;
    ensure(ok, out.clone())?;
    for field in [
        "phase",
        "conditions",
        "startedAt",
        "stopRequestedAt",
        "attempts",
    ] {
        ensure(
            out.contains(field),
            format!("--recursive lacks {field}:\n{out}"),
        )?;
    }
    let (ok, out) = env
        .kubectl(&["explain", "awsched.status", "--recursive"])
        .await;
    ensure(ok, out.clone())?;
    for field in [
        "lastScheduleTime",
        "nextScheduleTime",
        "lastRun",
        "conditions",
    ] {
        ensure(
            out.contains(field),
            format!("awsched --recursive lacks {field}:\n{out}"),
        )?;
    }
    Ok(())
}
