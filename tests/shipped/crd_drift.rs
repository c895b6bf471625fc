//! Every committed CRD, in `crds/` and in the chart (`files/crds/`), must be exactly what the binary
//! generates; regenerate with `AMPERITY_BLESS=1 cargo test --test shipped crd_drift`,
//! which writes what `cargo run -- crd` prints, one document per file.

use std::path::Path;

const DIRS: &[&str] = &["crds", "charts/amperity-operator/files/crds"];

fn read(dir: &str, file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): commit the generated CRD",
            path.display()
        )
    })
}

#[test]
fn committed_crds_match_the_generated_ones() {
    if std::env::var_os("AMPERITY_BLESS").is_some() {
        for (file, generated) in amperity_operator::crds() {
            for dir in DIRS {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(file);
                std::fs::write(&path, &generated).unwrap();
            }
        }
    }
    for (file, generated) in amperity_operator::crds() {
        for dir in DIRS {
            assert!(
                read(dir, file) == generated,
                "{dir}/{file} is out of date: regenerate it with `AMPERITY_BLESS=1 cargo test --test shipped crd_drift` and commit it"
            );
        }
    }
}

#[test]
fn no_other_crd_is_committed() {
    let generated: Vec<&str> = amperity_operator::crds().iter().map(|(f, _)| *f).collect();
    for dir in DIRS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(&path).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                generated.contains(&name.as_str()),
                "{dir}/{name} is no CRD the binary generates: remove it"
            );
        }
    }
}

#[test]
fn the_binary_prints_every_crd_as_one_yaml_stream() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amperity-operator"))
        .arg("crd")
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, amperity_operator::crd_yaml());
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "amperityworkflowruns.amperity.dev",
            "amperityworkflowschedules.amperity.dev",
            "amperityconnections.amperity.dev",
            "clusteramperityconnections.amperity.dev"
        ]
    );
}

fn documents() -> Vec<serde_json::Value> {
    amperity_operator::crds()
        .iter()
        .map(|(_, yaml)| serde_norway::from_str(yaml).unwrap())
        .collect()
}

#[test]
fn no_enum_carries_null() {
    // Kubernetes 1.20 rejects `enum: [..., null]` with a misleading message.
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
    for crd in documents() {
        walk(&crd, "");
    }
}
