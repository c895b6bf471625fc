//! The committed CRD must be exactly what the binary generates; regenerate with
//! `cargo run -- crd > crds/amperityworkflowruns.amperity.dev.yaml`.

use std::path::Path;

const COMMITTED: &str = "crds/amperityworkflowruns.amperity.dev.yaml";

#[test]
fn committed_crd_matches_the_generated_one() {
    let committed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED))
        .expect("the committed CRD exists");
    let generated = amperity_operator::crd_yaml();
    assert!(
        committed == generated,
        "{COMMITTED} is out of date: run `cargo run -- crd > {COMMITTED}` and commit it"
    );
}

#[test]
fn the_binary_prints_the_same_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amperity-operator"))
        .arg("crd")
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        amperity_operator::crd_yaml()
    );
}

#[test]
fn no_enum_carries_null() {
    // Kubernetes 1.20 rejects `enum: [..., null]` with a misleading message.
    let crd: serde_json::Value = serde_yaml::from_str(&amperity_operator::crd_yaml()).unwrap();
    fn walk(v: &serde_json::Value, path: &str) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::Array(values)) = m.get("enum") {
                    assert!(
                        !values.iter().any(|x| x.is_null()),
                        "null in enum at {path}"
                    );
                }
                for (k, child) in m {
                    walk(child, &format!("{path}.{k}"));
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, path)),
            _ => {}
        }
    }
    walk(&crd, "");
}
