//! amperity-operator: start Amperity workflow runs from Kubernetes and mirror them
//! into `AmperityWorkflowRun` status.

pub mod amperity;
pub mod cli;
pub mod sim;
