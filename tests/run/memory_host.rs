//! A `Host` that keeps a run's status in memory and logs what it was asked, for
//! tests that drive the real driver against the simulator: the status write
//! numbered `die_at` fails, as if the process died before it.

use std::sync::Mutex;

use amperity_operator::amperity::credentials::Access;
use amperity_operator::amperity::{
    AllowList, AmperityClient, ClientConfig, Credentials, DeprecationNotice, Principal,
    SecretString,
};
use amperity_operator::crd::{AmperityWorkflowRun, AmperityWorkflowRunStatus, Phase};
use amperity_operator::run::decide::{Claims, Event};
use amperity_operator::run::driver::{CredentialsProblem, Host};
use amperity_operator::sim::{self, SimConfig, SimHandle};
use jiff::Timestamp;

#[derive(Debug, thiserror::Error)]
#[error("the process died before this write")]
pub struct Died;

/// What the host was asked, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Hurry,
    Credentials,
    /// A status write, with the phase it records and whether it holds a stop's intent.
    Save(Option<Phase>, bool),
}

#[derive(Default)]
pub struct MemoryHost {
    /// The status write (1-based) that fails; none fails without it.
    pub die_at: Option<usize>,
    /// The Secret's `principal` key, if it has one.
    pub principal: Option<&'static str>,
    writes: Mutex<usize>,
    saved: Mutex<Option<AmperityWorkflowRunStatus>>,
    calls: Mutex<Vec<Call>>,
}

impl MemoryHost {
    pub fn new(die_at: Option<usize>, principal: Option<&'static str>) -> Self {
        Self {
            die_at,
            principal,
            ..Self::default()
        }
    }

    /// The last status written.
    pub fn saved(&self) -> Option<AmperityWorkflowRunStatus> {
        self.saved.lock().unwrap().clone()
    }

    /// The calls since the last take.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }

    fn log(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Host for MemoryHost {
    type Error = Died;

    fn hurry(&self) {
        self.log(Call::Hurry);
    }

    async fn credentials(&self, _: &AmperityWorkflowRun) -> Result<Access, CredentialsProblem> {
        self.log(Call::Credentials);
        Ok(Access {
            credentials: Credentials::Token(SecretString::new("sim-token")),
            principal: self.principal.map(Principal::given),
        })
    }

    async fn save_status(
        &self,
        _: &AmperityWorkflowRun,
        status: &AmperityWorkflowRunStatus,
    ) -> Result<Option<String>, Died> {
        self.log(Call::Save(status.phase, status.stop_requested_at.is_some()));
        let mut writes = self.writes.lock().unwrap();
        *writes += 1;
        if Some(*writes) == self.die_at {
            return Err(Died);
        }
        *self.saved.lock().unwrap() = Some(status.clone());
        Ok(None)
    }

    async fn claims(&self, _: &AmperityWorkflowRun, _: &[String], _: Option<&Principal>) -> Claims {
        Claims::alone()
    }

    fn poll_failed(&self, _: &AmperityWorkflowRun) {}

    async fn publish(&self, _: &AmperityWorkflowRun, _: &Event) {}

    async fn deprecation(&self, _: &AmperityWorkflowRun, _: &DeprecationNotice) {}

    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A simulator whose runs move 100 times faster, limited only far above any test's rate.
pub async fn fast_simulator() -> SimHandle {
    sim::spawn(SimConfig {
        speed: 0.01,
        rate_limit: 1000,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// A client for `sim` alone, at `rate` requests a second.
pub fn client_for(sim: &SimHandle, rate: u32) -> AmperityClient {
    AmperityClient::new(ClientConfig {
        rate_limit_per_sec: rate,
        allow: AllowList::parse(&[sim.base_url()]).unwrap(),
        ..ClientConfig::default()
    })
    .unwrap()
}
