//! The model's Amperity: runs in its own clock, and every way a call can go wrong.

use std::time::Duration;

use amperity_operator::amperity::wire::{RunRequest, Workflow};
use amperity_operator::amperity::{
    AllowList, ClientError, Credentials, ListQuery, Principal, Reply, Target, Turn,
};
use amperity_operator::run::driver::Api;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

use super::{DISPLAY_NAME, ME, Replica, World};

/// How Amperity answers one call.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Ok,
    /// 400: refused, nothing done.
    Rejected,
    /// 429: nothing done.
    Throttled,
    /// 503 before doing anything.
    UnavailableBefore,
    /// 500 after doing it (for a start: the run exists, the answer is lost).
    ServerErrorAfter,
    /// No answer in time, after doing it.
    TimeoutAfter,
    /// No answer in time, before doing anything.
    TimeoutBefore,
    /// The connection was refused: nothing was sent.
    Refused,
    /// The request could not be built (a header it cannot carry): nothing was sent.
    Unsent,
}

pub fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Ok),
        1 => Just(Outcome::Rejected),
        1 => Just(Outcome::Throttled),
        1 => Just(Outcome::UnavailableBefore),
        1 => Just(Outcome::ServerErrorAfter),
        1 => Just(Outcome::TimeoutAfter),
        1 => Just(Outcome::TimeoutBefore),
        1 => Just(Outcome::Refused),
        1 => Just(Outcome::Unsent),
    ]
}

#[derive(Clone, Debug)]
pub struct ModelRun {
    pub id: String,
    /// The resource that created it ("" for runs of others); the operator never sees this.
    pub owner: &'static str,
    pub principal: &'static str,
    /// Amperity's clock.
    pub created_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub state: &'static str,
    pub error: Option<&'static str>,
}

impl ModelRun {
    pub fn workflow(&self) -> Workflow {
        let mut w = json!({"id": self.id, "state": self.state, "type": "campaign.send",
            "name": "Spring sale", "tenant": "socktown", "created_at": self.created_at.to_string(),
            "principal_id": self.principal, "principal_name": DISPLAY_NAME, "task_instances": []});
        if let Some(e) = self.ended_at {
            w["ended_at"] = json!(e.to_string());
        }
        if let Some(attribution) = self.error {
            w["error"] = json!({"type": "t", "message": "it broke", "attribution": attribution});
        }
        serde_json::from_value(w).unwrap()
    }

    pub fn ended(&self) -> bool {
        matches!(self.state, "succeeded" | "failed" | "canceled")
    }
}

fn error_for(outcome: Outcome) -> ClientError {
    match outcome {
        Outcome::Rejected => ClientError::Rejected {
            status: 400,
            message: "refused".into(),
        },
        Outcome::Throttled => ClientError::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(1)),
        },
        Outcome::UnavailableBefore => ClientError::Server {
            status: 503,
            message: "unavailable".into(),
            retry_after: None,
        },
        Outcome::ServerErrorAfter => ClientError::Server {
            status: 500,
            message: "oops".into(),
            retry_after: None,
        },
        Outcome::TimeoutAfter | Outcome::TimeoutBefore => {
            ClientError::Timeout(Duration::from_secs(30))
        }
        Outcome::Refused => ClientError::Connect("connection refused".into()),
        Outcome::Unsent => ClientError::Unsent("builder error".into()),
        Outcome::Ok => unreachable!(),
    }
}

/// Others start runs of the same type at the same moment as each of ours (which
/// foreign runs exist: bits of the scenario's `foreign`): another resource, which
/// follows its run (bit 0); a person (bit 1); another key with our key's display
/// name (bit 4).
fn others_start_too(w: &mut World) {
    let at = w.amperity_now();
    let n = w.runs.len();
    let twins = [
        (0, "wf-b-tracked", ME),
        (1, "wf-ui", super::THEM),
        (4, "wf-namesake", super::NAMESAKE),
    ];
    for (bit, prefix, principal) in twins {
        if w.scenario.foreign & (1 << bit) == 0 {
            continue;
        }
        let id = format!("{prefix}-{n}");
        if bit == 0 {
            w.others_tracked.insert(id.clone());
        }
        w.runs.push(ModelRun {
            id,
            owner: "",
            principal,
            created_at: at,
            ended_at: None,
            state: "running",
            error: None,
        });
    }
}

fn reply<T>(body: T, w: &World) -> Reply<T> {
    Reply {
        body,
        deprecation: None,
        status: 200,
        date: Some(w.amperity_now()),
    }
}

/// Whether the call happened at Amperity (for calls with effects).
fn took_effect(o: Outcome) -> bool {
    matches!(
        o,
        Outcome::Ok | Outcome::ServerErrorAfter | Outcome::TimeoutAfter
    )
}

impl Api for Replica<'_> {
    fn allow_list(&self) -> &AllowList {
        self.allow
    }

    fn reserve_turn(&self, _target: &Target, _urgent: bool, _lane: &str) -> Turn {
        Turn::due_now()
    }

    async fn start(
        &self,
        _t: &Target,
        _c: &Credentials,
        _r: &RunRequest,
        _turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        self.gate().await;
        let mut w = self.world.lock().unwrap();
        others_start_too(&mut w);
        let o = w.next_outcome();
        if !took_effect(o) {
            return Err(error_for(o));
        }
        let run = ModelRun {
            id: format!("wf-{}-{}", super::RESOURCE, w.runs.len()),
            owner: super::RESOURCE,
            principal: ME,
            created_at: w.amperity_now(),
            ended_at: None,
            state: "scheduled",
            error: None,
        };
        w.runs.push(run.clone());
        match o {
            Outcome::Ok => Ok(reply(run.workflow(), &w)),
            other => Err(error_for(other)),
        }
    }

    async fn get(
        &self,
        _t: &Target,
        _c: &Credentials,
        id: &str,
        _turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        self.gate().await;
        let mut w = self.world.lock().unwrap();
        let o = w.next_outcome();
        if !matches!(o, Outcome::Ok) {
            return Err(error_for(o));
        }
        let ending = w.next_ending();
        let amperity_now = w.amperity_now();
        let Some(run) = w.runs.iter_mut().find(|r| r.id == id) else {
            return Err(ClientError::NotFound {
                message: "no such run".into(),
            });
        };
        if !run.ended() {
            run.state = match (run.state, ending) {
                ("stopping", _) => "canceled",
                (_, 0) => "running",
                (_, 1) => "succeeded",
                _ => "failed",
            };
            if run.state == "failed" {
                run.error = Some(if ending == 3 { "platform" } else { "customer" });
            }
            if run.ended() {
                run.ended_at = Some(amperity_now);
            }
        }
        let body = run.workflow();
        Ok(reply(body, &w))
    }

    async fn stop(
        &self,
        _t: &Target,
        _c: &Credentials,
        id: &str,
        _turn: Option<Turn>,
    ) -> Result<Reply<Workflow>, ClientError> {
        self.gate().await;
        let mut w = self.world.lock().unwrap();
        let o = w.next_outcome();
        if !took_effect(o) {
            return Err(error_for(o));
        }
        let Some(run) = w.runs.iter_mut().find(|r| r.id == id) else {
            return Err(ClientError::NotFound {
                message: "no such run".into(),
            });
        };
        if run.ended() {
            // Amperity stops only running workflows.
            return Err(error_for(Outcome::Rejected));
        }
        run.state = "stopping";
        let body = run.workflow();
        match o {
            Outcome::Ok => Ok(reply(body, &w)),
            other => Err(error_for(other)),
        }
    }

    async fn list(
        &self,
        _t: &Target,
        _c: &Credentials,
        q: &ListQuery,
        _turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        self.gate().await;
        let mut w = self.world.lock().unwrap();
        let o = w.next_outcome();
        if !matches!(o, Outcome::Ok) {
            return Err(error_for(o));
        }
        let from: Timestamp = q.created_from.as_deref().unwrap().parse().unwrap();
        let lag = if w.calm { 0 } else { w.scenario.list_lag_secs };
        // Amperity applies the query's bound to its own clock.
        let visible_until = w.amperity_now() - SignedDuration::from_secs(lag);
        let runs = w
            .runs
            .iter()
            .filter(|r| r.created_at >= from && r.created_at <= visible_until)
            .map(ModelRun::workflow)
            .collect();
        Ok(reply(runs, &w))
    }

    fn forget_token(&self, _t: &Target, _c: &Credentials) {}

    fn learned_principal(&self, _t: &Target, _c: &Credentials) -> Option<Principal> {
        self.world.lock().unwrap().replicas[self.id].learned.clone()
    }

    fn learn_principal(&self, _t: &Target, _c: &Credentials, p: Principal) {
        self.world.lock().unwrap().replicas[self.id].learned = Some(p);
    }

    fn learned_name(&self, _t: &Target, _config_id: &str) -> Option<String> {
        self.world.lock().unwrap().replicas[self.id]
            .learned_name
            .clone()
    }

    fn learn_name(&self, _t: &Target, _config_id: &str, name: &str) {
        self.world.lock().unwrap().replicas[self.id].learned_name = Some(name.to_string());
    }
}
