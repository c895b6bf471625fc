//! amperity-operator: start Amperity workflow runs from Kubernetes and mirror them
//! into `AmperityWorkflowRun` status.

pub mod amperity;
pub mod bounded;
pub mod cli;
pub mod cluster;
pub mod connection;
pub mod crd;
pub mod local;
pub mod memory;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod signal;
pub mod sim;
pub mod telemetry;

use kube::CustomResourceExt;

/// Every CRD the operator serves, as shipped, each with the file name `crds/` keeps
/// it under.
pub fn crds() -> Vec<(&'static str, String)> {
    vec![
        (
            "amperityworkflowruns.amperity.dev.yaml",
            shipped(crd::AmperityWorkflowRun::crd()),
        ),
        (
            "amperityworkflowschedules.amperity.dev.yaml",
            shipped(crd::schedule::AmperityWorkflowSchedule::crd()),
        ),
        (
            "amperityconnections.amperity.dev.yaml",
            shipped(crd::connection::AmperityConnection::crd()),
        ),
        (
            "clusteramperityconnections.amperity.dev.yaml",
            shipped(crd::connection::ClusterAmperityConnection::crd()),
        ),
    ]
}

/// The CRDs as YAML documents separated by `---`, exactly as `amperity-operator crd`
/// prints them; `crds/` holds each in its own file.
pub fn crd_yaml() -> String {
    crds()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Status objects the operator's own server-side apply removes (a retry clears the
/// last attempt's workflow, tasks and error). API servers before 1.21 store such a
/// removed object as null, which only a nullable field accepts.
const REMOVABLE_STATUS_OBJECTS: [&str; 3] = ["workflow", "tasks", "error"];

/// A CRD as shipped: without the `nullable` marks schemars puts on every optional
/// field, but for [`REMOVABLE_STATUS_OBJECTS`]. The operator never writes a null
/// (absent fields are left out), API servers prune nulls from fields not marked
/// nullable, and API servers before 1.21 drop the type and nested fields of nullable
/// ones from the OpenAPI they publish: `kubectl explain` would show nothing under
/// `spec.range`, or under `status` itself.
fn shipped(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes");
    strip(&mut value);
    for version in value["spec"]["versions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let status =
            &mut version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        for field in REMOVABLE_STATUS_OBJECTS {
            if let Some(object) = status.get_mut(field) {
                object["nullable"] = serde_json::Value::Bool(true);
            }
        }
    }
    serde_norway::to_string(&value).expect("the CRD serializes to YAML")
}
