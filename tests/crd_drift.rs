//! The committed CRD must be exactly what the binary generates; regenerate with
//! `cargo run -- crd > crds/amperityworkflowruns.amperity.dev.yaml`. The chart holds a
//! copy of each CRD the binary prints in `charts/amperity-operator/files/crds/`.

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

/// Each YAML document `amperity-operator crd` prints, with the name of the CRD it holds.
fn printed_crds() -> Vec<(String, String)> {
    let mut docs = vec![String::new()];
    for line in amperity_operator::crd_yaml().split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            docs.last_mut().unwrap().push_str(line);
        }
    }
    docs.into_iter()
        .filter(|d| !d.trim().is_empty())
        .map(|doc| {
            let crd: serde_json::Value = serde_yaml::from_str(&doc).unwrap();
            let name = crd["metadata"]["name"].as_str().unwrap().to_string();
            (name, doc)
        })
        .collect()
}

#[test]
fn the_chart_holds_a_copy_of_every_crd_the_binary_prints() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/amperity-operator/files/crds");
    let printed = printed_crds();
    assert!(!printed.is_empty());
    for (name, doc) in &printed {
        let path = dir.join(format!("{name}.yaml"));
        let copy = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; copy the {name} document of `cargo run -- crd` into it",
                path.display()
            )
        });
        assert!(
            &copy == doc,
            "{} is out of date: copy the {name} document of `cargo run -- crd` into it",
            path.display()
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = printed.iter().map(|(n, _)| format!("{n}.yaml")).collect();
    expected.sort();
    assert_eq!(
        files,
        expected,
        "{} holds a file for a CRD the binary does not print",
        dir.display()
    );
}
