//! Tests of `AmperityWorkflowSchedule` (src/schedule/): its decisions by table, slots and time zones, the spec rules, and its controller against a mocked Kubernetes API. (Time zones without a system database: `tzdb.rs`, a binary of its own.)

#[path = "../support/mod.rs"]
mod support;

mod controller;
mod cron_schema;
mod rules;
mod slots;
mod table;
