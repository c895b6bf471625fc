//! The custom resources, as the API server stores and validates them: only kube,
//! serde and schemars here, never the Amperity client or the decisions.

mod common;
pub mod connection;
mod run;
pub mod schedule;

pub use common::*;
pub use run::*;
