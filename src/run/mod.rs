//! `AmperityWorkflowRun`: one Amperity workflow run per resource.
//!
//! - [`decide`]: pure decisions, from (resource, last answer, now) to the next status
//!   and the one action to perform; where a start, a poll or a stop is decided.
//! - [`driver`]: the decide/act loop, the only place that performs those actions
//!   (through a [`driver::Host`]: the cluster or `local`).
//! - [`controller`]: the Kubernetes side: reconcile and its error policy; [`context`]
//!   is what every reconcile shares (the `Context`) and the reconcile's errors;
//!   `host` is the driver's Kubernetes [`driver::Host`] (status writes, Secrets, Events).
//! - [`feed`]: the change feed that wakes runs whose end a list shows.
//! - [`tracking`]: which runs each resource claims, for lost-start searches;
//!   [`ledger`] keeps the runs of resources that are gone across restarts.
//! - [`trailing`]: a finished run's Events and finalizer removal, after its reconcile.
//! - [`validate`]: the spec rules, for API servers that do not enforce CEL.

pub mod connection;
pub mod context;
pub mod controller;
pub mod decide;
pub mod driver;
pub mod feed;
pub mod host;
pub mod ledger;
pub mod tracking;
pub mod trailing;
pub mod validate;
