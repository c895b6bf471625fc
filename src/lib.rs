//! amperity-operator: start Amperity workflow runs from Kubernetes and mirror them
//! into `AmperityWorkflowRun` status.

pub mod amperity;
pub mod bounded;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod decide;
pub mod driver;
pub mod leader;
pub mod local;
pub mod memory;
pub mod metrics;
pub mod operator;
pub mod schedule;
pub mod schedule_controller;
pub mod sim;
pub mod telemetry;
pub mod tracking;
pub mod validate;

use kube::CustomResourceExt;

/// Every CRD the operator serves, each with the file name `crds/` keeps it under.
pub fn crds() -> Vec<(&'static str, String)> {
    let yaml = |crd| serde_yaml::to_string(&crd).expect("a CRD serializes to YAML");
    vec![
        (
            "amperityworkflowruns.amperity.dev.yaml",
            yaml(crd::AmperityWorkflowRun::crd()),
        ),
        (
            "amperityworkflowschedules.amperity.dev.yaml",
            yaml(crd::schedule::AmperityWorkflowSchedule::crd()),
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
