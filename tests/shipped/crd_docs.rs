//! Every field of every CRD the operator ships is described in words a user
//! understands: `kubectl explain` shows these descriptions. Fails on a field without
//! one, and on the generic text k8s-openapi gives its own types.

use serde::Deserialize;
use serde_norway::Value;

/// Paths of fields (and objects) that have no description of their own.
fn undescribed(node: &Value, path: &str, out: &mut Vec<String>) {
    let description = node.get("description").and_then(Value::as_str);
    match description {
        None if !path.ends_with("[]") => out.push(path.to_string()),
        Some(d) if d.contains("Time is a wrapper around time.Time") => {
            out.push(format!("{path} (k8s-openapi's text)"))
        }
        _ => {}
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_mapping) {
        for (name, sub) in properties {
            let name = name.as_str().unwrap_or_default();
            undescribed(sub, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        undescribed(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_field_of_every_crd_is_described() {
    let yaml = amperity_operator::crd_yaml();
    let mut checked = 0;
    for doc in serde_norway::Deserializer::from_str(&yaml) {
        let crd = Value::deserialize(doc).unwrap();
        if crd.is_null() {
            continue;
        }
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        for version in crd["spec"]["versions"].as_sequence().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            let mut missing = Vec::new();
            for part in ["spec", "status"] {
                undescribed(&schema["properties"][part], part, &mut missing);
            }
            assert!(
                missing.is_empty(),
                "{kind}: fields without a description: {missing:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    for (file, yaml) in amperity_operator::crds() {
        let crd: Value = serde_norway::from_str(&yaml).unwrap();
        let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{file}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"][0], "type",
            "{file}"
        );
    }
}
