//! A CRD's schema, applied the ways an API server applies it: its OpenAPI keywords
//! (any version) and its CEL rules (1.25+). Shared by the tests of each CRD's rules.

use kube::CustomResourceExt;
use serde_json::Value;

/// The CRD's `openAPIV3Schema`.
pub fn openapi<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The CEL rules' refusals of `object` (updated from `old`, if given).
pub fn cel_refusals<K: CustomResourceExt>(
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Vec<String>> {
    kube::core::cel::Validator::new()
        .validate(&openapi::<K>(), object, old)
        .map_err(|errors| errors.into_iter().map(|e| format!("cel: {e}")).collect())
}

/// What the schema and the CEL rules refuse: instance paths such as
/// `/spec/range/to` (a missing property named on itself), then CEL messages.
pub fn refused<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = openapi::<K>();
    let validator = jsonschema::draft4::new(&schema).expect("the CRD schema compiles");
    let mut paths: Vec<String> = validator
        .iter_errors(object)
        .map(|e| {
            let mut path = e.instance_path().to_string();
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                path = format!("{path}/{}", property.as_str().unwrap_or_default());
            }
            path
        })
        .collect();
    if let Err(errors) = cel_refusals::<K>(object, old) {
        paths.extend(errors);
    }
    paths
}
