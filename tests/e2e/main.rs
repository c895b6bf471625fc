//! End-to-end suite: the real `amperity-operator run` binary against a real
//! kube-apiserver (tests/e2e/testenv.sh) and the project's simulator.
//!
//! A custom harness (one environment for all scenarios, each in its own
//! namespace). It fails, never skips, when the environment cannot be brought up.
//!
//! Like libtest's `#[ignore]`d tests it runs only when asked for, since bringing the
//! environment up installs packages as root and builds Kubernetes once per machine:
//! `cargo test -- --include-ignored` (what scripts/test.sh runs) or
//! `cargo test --test e2e -- --ignored [SCENARIO...]`.

mod connection_roles;
mod connections;
mod credentials;
mod env;
mod explain;
mod feed;
mod leadership;
mod listening;
mod one_run;
mod operator_rbac;
mod outcomes;
mod roles;
mod scenarios;
mod schedule_cascade;
mod schedule_guards;
mod schedules;
mod stopping;
mod trust;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Instant;

use env::Env;

type Scenario = for<'a> fn(&'a mut Env) -> Pin<Box<dyn Future<Output = env::Result> + 'a>>;
type Shared = for<'a> fn(&'a Env) -> Pin<Box<dyn Future<Output = env::Result> + 'a>>;

/// Prints a scenario's outcome; true when it passed.
fn report(
    name: &str,
    secs: f32,
    outcome: Result<env::Result, tokio::time::error::Elapsed>,
) -> bool {
    match outcome {
        Ok(Ok(())) => {
            println!("test {name} ... ok ({secs:.1}s)");
            true
        }
        Ok(Err(e)) => {
            println!("test {name} ... FAILED ({secs:.1}s)\n  {e}");
            false
        }
        Err(_) => {
            println!("test {name} ... FAILED (timed out after {secs:.0}s)");
            false
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        println!(
            "test e2e ... ignored, needs a kube-apiserver: cargo test --test e2e -- --ignored \
             (scripts/test.sh runs it; tests/e2e/README.md)"
        );
        println!("e2e: 0 passed, 0 failed, 1 ignored");
        return ExitCode::SUCCESS;
    }
    let filter: Vec<String> = args.into_iter().filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let shared: Vec<(&str, Shared)> = scenarios::SHARED
        .iter()
        .filter(|(name, _)| wanted(name))
        .cloned()
        .collect();
    let exclusive: Vec<(&str, Scenario)> = scenarios::EXCLUSIVE
        .iter()
        .filter(|(name, _)| wanted(name))
        .cloned()
        .collect();
    if shared.is_empty() && exclusive.is_empty() {
        // `cargo test some_unit_test` names no scenario here.
        println!("e2e: 0 passed, 0 failed");
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut env = match Env::start().await {
            Ok(env) => env,
            Err(e) => {
                eprintln!("e2e environment could not be started: {e}");
                println!("e2e: 0 passed, 1 failed");
                return ExitCode::FAILURE;
            }
        };
        let (mut passed, mut failed) = (0, 0);
        // The scenarios that leave the operator alone, all at once (they wait on
        // runs far more than they work), then the others one by one.
        let together = shared.iter().map(|(name, scenario)| {
            let env = &env;
            async move {
                let started = Instant::now();
                let outcome =
                    tokio::time::timeout(scenarios::time_limit(name), scenario(env)).await;
                (*name, started.elapsed().as_secs_f32(), outcome)
            }
        });
        for (name, secs, outcome) in futures::future::join_all(together).await {
            if report(name, secs, outcome) {
                passed += 1;
            } else {
                failed += 1;
            }
        }
        for (name, scenario) in exclusive {
            let started = Instant::now();
            let limit = scenarios::time_limit(name);
            let outcome = tokio::time::timeout(limit, scenario(&mut env)).await;
            if report(name, started.elapsed().as_secs_f32(), outcome) {
                passed += 1;
            } else {
                failed += 1;
            }
            // Whichever way it ended (early, or cut off at its limit), the next
            // scenario finds the shared operator running.
            if let Err(e) = env.ensure_operator(&format!("operator-after-{name}")).await {
                println!("  the shared operator could not be started again: {e}");
                failed += 1;
            }
        }
        if failed > 0
            && let Some(op) = &env.operator
        {
            let log = op.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last operator log lines ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        println!("e2e: {passed} passed, {failed} failed");
        if failed == 0 && passed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}
