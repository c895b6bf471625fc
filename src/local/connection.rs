//! `local -f` with a connection beside the run: a file may hold the run (or what
//! `local` runs) and the `AmperityConnection` or `ClusterAmperityConnection` it
//! names, separated by `---`. The connection gives the tenant, endpoint and Secret name, as the
//! operator's would; the token still comes from `--token` or `AMPERITY_TOKEN` (a
//! connection's Secret is a cluster's, and `local` reads none).

use serde_json::Value;

use crate::crd::connection::{ConnectionKind, ConnectionTarget};
use crate::crd::{AmperityWorkflowRun, TokenSecretRef};
use crate::run::validate::FieldError;

const CONNECTION_KINDS: [&str; 2] = ["AmperityConnection", "ClusterAmperityConnection"];

fn problem(path: &str, message: String) -> Vec<FieldError> {
    vec![FieldError {
        path: path.into(),
        message,
    }]
}

/// Splits a file into the one document `local` runs (as YAML text) and the
/// connections beside it. A file of one document is returned as it is.
pub fn split(text: &str) -> Result<(String, Vec<Value>), Vec<FieldError>> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            // Said by the usual parse, with its message.
            Err(_) => return Ok((text.to_string(), Vec::new())),
        };
        if !value.is_null() {
            docs.push(value);
        }
    }
    if docs.len() <= 1 {
        return Ok((text.to_string(), Vec::new()));
    }
    let (connections, others): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(|d| {
        d.get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| CONNECTION_KINDS.contains(&k))
    });
    match others.as_slice() {
        [one] => {
            let text =
                serde_norway::to_string(one).map_err(|e| problem("(document)", e.to_string()))?;
            Ok((text, connections))
        }
        _ => Err(problem(
            "(document)",
            format!(
                "local runs one resource, with the connections it names beside it; this file holds {} others",
                others.len()
            ),
        )),
    }
}

/// Fills in the tenant and endpoint of the connection `run` names, from the
/// connections in its file, as the operator does from the cluster's.
pub fn apply(run: &mut AmperityWorkflowRun, connections: &[Value]) -> Result<(), Vec<FieldError>> {
    let Some(reference) = run.spec.connection_ref.clone() else {
        return Ok(());
    };
    let kind = match reference.kind() {
        ConnectionKind::AmperityConnection => CONNECTION_KINDS[0],
        ConnectionKind::ClusterAmperityConnection => CONNECTION_KINDS[1],
    };
    let found = connections.iter().find(|c| {
        c.get("kind").and_then(Value::as_str) == Some(kind)
            && c.pointer("/metadata/name").and_then(Value::as_str) == Some(reference.name.as_str())
    });
    let Some(found) = found else {
        return Err(problem(
            "spec.connectionRef",
            format!(
                "names {kind} {}, which is not in this file: put it beside the run, separated by ---",
                reference.name
            ),
        ));
    };
    let spec = found.get("spec").cloned().unwrap_or(Value::Null);
    let target: ConnectionTarget = serde_json::from_value(spec)
        .map_err(|e| problem(&format!("{kind} {}: spec", reference.name), e.to_string()))?;
    // Its Secret, named as the operator would (local reads none: the spec is whole).
    let secret = spec_secret(found).ok_or_else(|| {
        problem(
            &format!("{kind} {}: spec.tokenSecretRef.name", reference.name),
            "required".into(),
        )
    })?;
    run.spec.connection_ref = None;
    run.spec.tenant = Some(target.tenant);
    run.spec.endpoint = target.endpoint;
    run.spec.token_secret_ref = Some(secret);
    Ok(())
}

fn spec_secret(connection: &Value) -> Option<TokenSecretRef> {
    let r = connection.pointer("/spec/tokenSecretRef")?;
    Some(TokenSecretRef {
        name: r.get("name")?.as_str()?.to_string(),
        key: r.get("key").and_then(Value::as_str).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::parse_manifest;

    const RUN: &str = "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowRun\nmetadata:\n  name: r\nspec:\n  connectionRef:\n    kind: ClusterAmperityConnection\n    name: socktown\n  configId: cg-1\n";
    const CONNECTION: &str = "apiVersion: amperity.dev/v1alpha1\nkind: ClusterAmperityConnection\nmetadata:\n  name: socktown\nspec:\n  tenant: socktown\n  endpoint: https://app.amperity.com/api\n  tokenSecretRef:\n    name: socktown-api\n  namespaceSelector: {}\n";

    fn load(text: &str) -> Result<AmperityWorkflowRun, Vec<FieldError>> {
        let (run, connections) = split(text)?;
        let mut manifest = parse_manifest(&run)?;
        apply(&mut manifest.run, &connections)?;
        Ok(manifest.run)
    }

    #[test]
    fn a_run_beside_its_connection_takes_its_tenant_and_endpoint() {
        for text in [
            format!("{CONNECTION}---\n{RUN}"),
            format!("{RUN}---\n{CONNECTION}"),
        ] {
            let run = load(&text).unwrap();
            assert_eq!(run.spec.tenant(), "socktown");
            assert_eq!(
                run.spec.endpoint.as_deref(),
                Some("https://app.amperity.com/api")
            );
            assert_eq!(run.spec.connection_ref, None);
            let secret = run.spec.token_secret_ref.as_ref().unwrap();
            assert_eq!(
                (secret.name.as_str(), secret.key.as_deref()),
                ("socktown-api", None)
            );
            assert_eq!(run.spec.config_id, "cg-1");
        }
    }

    #[test]
    fn what_is_missing_or_extra_is_said() {
        let alone = load(RUN).unwrap_err();
        assert_eq!(alone[0].path, "spec.connectionRef");
        assert!(
            alone[0]
                .message
                .contains("ClusterAmperityConnection socktown")
        );
        let other = CONNECTION.replace("name: socktown\nspec", "name: acme\nspec");
        let wrong = load(&format!("{other}---\n{RUN}")).unwrap_err();
        assert_eq!(wrong[0].path, "spec.connectionRef");
        let namespaced = CONNECTION.replace(
            "kind: ClusterAmperityConnection",
            "kind: AmperityConnection",
        );
        assert!(
            load(&format!("{namespaced}---\n{RUN}")).is_err(),
            "the kind counts"
        );
        let two = load(&format!("{RUN}---\n{RUN}---\n{CONNECTION}")).unwrap_err();
        assert!(two[0].message.contains("holds 2 others"), "{two:?}");
        let broken = CONNECTION.replace("  tenant: socktown\n", "");
        let broken = load(&format!("{broken}---\n{RUN}")).unwrap_err();
        assert!(broken[0].message.contains("tenant"), "{broken:?}");
    }
}
