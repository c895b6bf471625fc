//! Tests of `AmperityWorkflowRun` (src/run/): every decision by table and property, the controller against a mocked Kubernetes API, the change feed, a crash inside a start, and the spec rules.

#[path = "../support/mod.rs"]
mod support;

mod connection_search;
mod controller;
mod decide_props;
mod decide_settle;
mod decide_table;
mod feed;
mod hurry;
mod memory_host;
mod one_run_guards;
mod spec_rules;
mod start_crash;
