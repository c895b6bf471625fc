//! Issue 22, item 5, with the garbage collector running: deleting a schedule honours
//! the propagation policy. `--cascade=orphan` keeps its runs (the one in flight goes
//! on, its ownerReference removed), as a CronJob keeps its Jobs; background and
//! foreground deletions take the runs with it.

use std::time::Duration;

use amperity_operator::schedule::RUN_NOW_ANNOTATION;
use kube::ResourceExt;
use kube::api::DeleteParams;
use serde_json::json;

use crate::env::{Env, Result, eventually, phase};
use crate::scenarios::ensure;

const CASCADES: [&str; 3] = ["orphan", "background", "foreground"];

pub async fn schedule_cascade_orphan_keeps_the_runs_background_and_foreground_take_them(
    env: &Env,
) -> Result {
    let ns = env
        .namespace("sched-cascade", Some(&env.own_token()))
        .await?;
    let outcome = cascades(env, &ns).await;
    // Cleaned up on every path: what is left of the schedules, then the runs.
    for name in CASCADES {
        let _ = env
            .schedules(&ns)
            .delete(name, &DeleteParams::default())
            .await;
    }
    let _ = env
        .runs(&ns)
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await;
    outcome
}

async fn cascades(env: &Env, ns: &str) -> Result {
    let hang = format!("cg-e2e-cascade-hang-{}", fastrand::u32(..) % 100_000);
    for name in CASCADES {
        env.create_schedule(
            ns,
            name,
            json!({}),
            json!({"configId": hang}),
            json!({RUN_NOW_ANNOTATION: "1"}),
        )
        .await?;
    }
    for name in CASCADES {
        env.wait_for(
            ns,
            &format!("{name}-now-1"),
            Duration::from_secs(60),
            "running",
            |r| phase(r) == "Running",
        )
        .await?;
    }
    for name in CASCADES {
        let cascade = format!("--cascade={name}");
        let (ok, out) = env
            .kubectl(&[
                "-n",
                ns,
                "delete",
                "awsched",
                name,
                &cascade,
                "--wait=false",
            ])
            .await;
        ensure(ok, format!("kubectl delete {cascade}: {out}"))?;
    }
    for name in CASCADES {
        eventually(Duration::from_secs(90), || async {
            match env.schedules(ns).get_opt(name).await {
                Ok(None) => Ok(()),
                Ok(Some(s)) => Err(format!(
                    "schedule {ns}/{name} still there, finalizers {:?}",
                    s.finalizers()
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
    }
    // Orphan: the run stays, in flight, no longer owned, never told to stop.
    let kept = eventually(Duration::from_secs(60), || async {
        let run = env
            .runs(ns)
            .get("orphan-now-1")
            .await
            .map_err(|e| format!("the orphaned run: {e}"))?;
        ensure(
            run.owner_references().is_empty(),
            format!("ownerReferences still {:?}", run.owner_references()),
        )?;
        Ok(run)
    })
    .await?;
    ensure(
        !kept.spec.stop && kept.metadata.deletion_timestamp.is_none() && phase(&kept) == "Running",
        format!(
            "the orphaned run goes on: stop {}, deleting {}, {}",
            kept.spec.stop,
            kept.metadata.deletion_timestamp.is_some(),
            phase(&kept)
        ),
    )?;
    // Background and foreground: the runs go with the schedule.
    for name in ["background", "foreground"] {
        let run = format!("{name}-now-1");
        eventually(Duration::from_secs(90), || async {
            match env.runs(ns).get_opt(&run).await {
                Ok(None) => Ok(()),
                Ok(Some(r)) => Err(format!("{run} still there ({})", phase(&r))),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
    }
    // Checked last, once the others have gone: the orphan is still there.
    let still = env
        .runs(ns)
        .get_opt("orphan-now-1")
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        still.is_some_and(|r| r.metadata.deletion_timestamp.is_none()),
        "the orphaned run outlived the other deletions",
    )
}
