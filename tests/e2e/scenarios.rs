//! The registry of scenarios: which run side by side and which alone, and how long
//! each may take; and the small checks every scenario file uses. The scenarios
//! themselves live in files by what they prove, each in its own namespace, each
//! checked through the Kubernetes API, kubectl and the simulator's counters.

use std::time::Duration;

use crate::connections::a_cluster_connection_serves_the_namespaces_it_chooses;
use crate::credentials::{
    a_missing_secret_stalls_until_it_exists, a_rotated_token_is_used_without_a_restart,
    oauth_client_credentials_from_the_secret,
};
use crate::env::{Env, Result};
use crate::explain::kubectl_explain_describes_every_field;
use crate::feed::the_change_feed_settles_ended_runs_and_a_lying_list_is_told;
use crate::leadership::{
    a_leader_that_loses_its_lease_stops_reconciling,
    only_the_leader_reconciles_and_a_follower_takes_over,
};
use crate::one_run::{
    a_lost_stop_answer_for_the_timeout_ends_timed_out,
    a_search_skips_other_resources_runs_and_waits_out_a_lagging_list,
    an_orphaned_run_of_a_deleted_resource_is_never_adopted,
    every_start_answered_429_times_out_without_a_run,
    killing_the_leader_inside_its_starts_never_starts_twice,
};
use crate::operator_rbac::the_charts_rbac_is_enough_and_every_rule_is_needed;
use crate::outcomes::{
    a_customer_failure_ends_failed_and_stalled, a_platform_failure_retries_and_succeeds,
    a_run_succeeds_and_kubectl_can_wait_on_it, faults_end_in_documented_phases,
    metrics_and_readiness_answer, the_api_server_rejects_bad_input_naming_the_field,
};
use crate::roles::users_bound_to_edit_create_and_delete_runs_and_cannot_read_the_lease;
use crate::schedule_cascade::schedule_cascade_orphan_keeps_the_runs_background_and_foreground_take_them;
use crate::schedule_guards::{
    schedule_guards_a_run_without_its_secret_blocks_and_is_not_started_late,
    schedule_guards_replace_with_a_refused_create_leaves_the_run_in_flight,
    schedule_guards_run_now_fires_once_per_value_across_a_revert_and_a_recreate,
};
use crate::schedules::{
    schedules_run_now_replace_and_refuse_bad_input,
    schedules_run_once_a_minute_across_a_sigkill_and_two_replicas,
};
use crate::stopping::{
    deleting_an_unfinished_run_stops_it, stop_cancels_the_run, timeout_stops_the_run,
    ttl_removes_finished_runs,
};
use crate::trust::{
    an_endpoint_off_the_allow_list_gets_nothing,
    hostile_specs_are_refused_or_handled_and_the_operator_lives,
    megabyte_messages_stay_out_of_status_and_events,
};
use crate::{Scenario, Shared};

pub const FINISH: Duration = Duration::from_secs(90);
/// How long an Event may follow the status it tells of (the operator writes the
/// status, then the Event).
pub const EVENTS: Duration = Duration::from_secs(30);

macro_rules! scenarios {
    (shared: [$($shared:ident),* $(,)?], exclusive: [$($exclusive:ident),* $(,)?] $(,)?) => {
        /// Scenarios that leave the operator alone: they run at the same time, each in
        /// its own namespace.
        pub const SHARED: &[(&str, Shared)] = &[$((stringify!($shared), |e| Box::pin($shared(e)))),*];
        /// Scenarios that kill, replace or starve the operator: one at a time, after.
        pub const EXCLUSIVE: &[(&str, Scenario)] = &[$((stringify!($exclusive), |e| Box::pin($exclusive(e)))),*];
    };
}

scenarios!(
    shared: [
        a_run_succeeds_and_kubectl_can_wait_on_it,
        a_cluster_connection_serves_the_namespaces_it_chooses,
        a_customer_failure_ends_failed_and_stalled,
        a_platform_failure_retries_and_succeeds,
        the_api_server_rejects_bad_input_naming_the_field,
        a_missing_secret_stalls_until_it_exists,
        a_rotated_token_is_used_without_a_restart,
        stop_cancels_the_run,
        timeout_stops_the_run,
        deleting_an_unfinished_run_stops_it,
        ttl_removes_finished_runs,
        metrics_and_readiness_answer,
        faults_end_in_documented_phases,
        oauth_client_credentials_from_the_secret,
        an_endpoint_off_the_allow_list_gets_nothing,
        hostile_specs_are_refused_or_handled_and_the_operator_lives,
        megabyte_messages_stay_out_of_status_and_events,
        a_search_skips_other_resources_runs_and_waits_out_a_lagging_list,
        every_start_answered_429_times_out_without_a_run,
        a_lost_stop_answer_for_the_timeout_ends_timed_out,
        kubectl_explain_describes_every_field,
        users_bound_to_edit_create_and_delete_runs_and_cannot_read_the_lease,
        schedule_guards_a_run_without_its_secret_blocks_and_is_not_started_late,
        schedule_guards_run_now_fires_once_per_value_across_a_revert_and_a_recreate,
        schedule_guards_replace_with_a_refused_create_leaves_the_run_in_flight,
        schedule_cascade_orphan_keeps_the_runs_background_and_foreground_take_them,
    ],
    exclusive: [
        killing_the_leader_inside_its_starts_never_starts_twice,
        an_orphaned_run_of_a_deleted_resource_is_never_adopted,
        the_charts_rbac_is_enough_and_every_rule_is_needed,
        only_the_leader_reconciles_and_a_follower_takes_over,
        a_leader_that_loses_its_lease_stops_reconciling,
        schedules_run_now_replace_and_refuse_bad_input,
        schedules_run_once_a_minute_across_a_sigkill_and_two_replicas,
        the_change_feed_settles_ended_runs_and_a_lying_list_is_told,
    ],
);

/// Scenarios that wait for real minutes to pass, or check one thing after another
/// each with its own operator, get longer than the usual 180 s.
pub fn time_limit(name: &str) -> Duration {
    match name {
        "schedules_run_once_a_minute_across_a_sigkill_and_two_replicas"
        | "the_charts_rbac_is_enough_and_every_rule_is_needed"
        | "schedule_guards_a_run_without_its_secret_blocks_and_is_not_started_late" => {
            Duration::from_secs(300)
        }
        _ => Duration::from_secs(180),
    }
}

pub fn ensure(ok: bool, what: impl Into<String>) -> Result {
    if ok { Ok(()) } else { Err(what.into()) }
}

pub fn finished(r: &amperity_operator::crd::AmperityWorkflowRun) -> bool {
    r.phase().is_some_and(|p| p.is_finished())
}

pub async fn sim_state(env: &Env, id: &str) -> String {
    let stats = env.sim_stats().await;
    stats["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["id"] == id))
        .and_then(|r| r["state"].as_str())
        .unwrap_or("missing")
        .to_string()
}
