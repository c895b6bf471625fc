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
pub mod sim;
pub mod telemetry;
pub mod tracking;
pub mod validate;

use kube::CustomResourceExt;

/// The CRD as YAML, exactly as `amperity-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    let crd = crd::AmperityWorkflowRun::crd();
    serde_yaml::to_string(&crd).expect("the CRD serializes to YAML")
}
