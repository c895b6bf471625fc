//! The change feed: one list request per cycle tells which runs ended, whatever the
//! number in flight, where polling each run in turn takes longer the more runs
//! there are.
//!
//! Runs are grouped by tenant ([`Target::budget_key`]): a list answers for the
//! whole tenant, so one list a cycle serves every namespace and credential that
//! uses it (one of the members' credentials lists; each woken run is still read
//! with its own). Every half of the group's shortest `pollInterval` (at least
//! [`FeedSettings::min_cycle`]; [`look_every`]) the feed asks
//! `GET /workflow/runs` for the runs that ended since its last look, minus an
//! overlap for clock skew and list lag, follows every page in urgent turns of the
//! tenant's budget, and wakes the resources whose run it reports ended, oldest end
//! first, with what the list said. A woken resource settles its outcome (state,
//! `ended_at`, error) from the list's answer at once, without a read; the verbose
//! read for the final task summary follows at routine priority, and one that
//! disagrees with the list is logged and counted (`change_feed_disagreements`),
//! the finished status kept. A list that lags or fails changes nothing, and every
//! run is still polled on its own interval. When per-run polls already look at
//! every run within its interval, the feed does not ask at all.
//!
//! Runs join the feed when their poll is scheduled ([`Feed::follow`]) and leave
//! when they stop being in flight or go ([`Feed::forget`]). The looks run only on
//! the leader, beside the controllers ([`Feed::run`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use crate::amperity::wire::Workflow;
use crate::amperity::{AmperityClient, Credentials, ListQuery, Target};
use crate::metrics::Metrics;
use kube::core::PartialObjectMeta;

use crate::crd::AmperityWorkflowRun;

mod window;
use window::list_time;
pub use window::{
    KEEP_UP_SLACK, Wake, cycle, ended_members, look_every, missed, polls_keep_up, window_start,
};

/// What the controller's cache holds of a run: its metadata. Thousands of runs in
/// flight would otherwise keep thousands of statuses in memory; a reconcile reads
/// the one it works on from the API server instead (always current, so a status
/// this operator wrote can never look unwritten).
pub type CachedRun = PartialObjectMeta<AmperityWorkflowRun>;

/// Tunables of the feed; the defaults are what the operator runs with.
#[derive(Clone, Debug)]
pub struct FeedSettings {
    /// How far before its last look each look starts: runs whose end Amperity
    /// lists late, or stamps by a clock behind ours, are still seen.
    pub overlap: Duration,
    /// The shortest cycle, whatever the runs' poll intervals.
    pub min_cycle: Duration,
    /// How far back a look reaches at most (the first look of a group, and after
    /// failed looks): older ends are found by the runs' own polls.
    pub lookback: Duration,
    /// Runs per page.
    pub page_size: u32,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            overlap: Duration::from_secs(60),
            min_cycle: Duration::from_secs(5),
            lookback: Duration::from_secs(600),
            page_size: 1000,
        }
    }
}

/// Wakes queued for the controllers at most: a wake that does not fit is not
/// counted as given, so the next look gives it again.
const WAKE_QUEUE: usize = 4096;

/// The tenant a group's runs belong to.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct GroupKey {
    budget: String,
}

struct Group {
    target: Target,
    /// Members by resource uid.
    members: HashMap<String, Member>,
    /// Which credentials (fingerprint) each member's polls use.
    uses: HashMap<String, u64>,
    /// The members' credentials by fingerprint, with how many members use each.
    credentials: HashMap<u64, (Credentials, usize)>,
    /// Credentials the list refused (401, 403): the next look lists with another.
    refused: std::collections::HashSet<u64>,
    /// Where the next look starts, before the overlap (the start of the last
    /// successful look, or the group's creation).
    looked_at: Option<Timestamp>,
    created: Timestamp,
    next_look: Instant,
    looking: bool,
    /// Runs per page: the settings' page size until the API refused it or a page
    /// was too large, then the smaller page that came through.
    page_size: u32,
    /// What the listed looks in a row since the last failure or skip covered, in
    /// the tenant's clock: from the first one's window start to the last one's
    /// start. An end in it that no look listed, and that the next window no
    /// longer reaches, was missed.
    covered: Option<(Timestamp, Timestamp)>,
}

/// A resource whose run the feed watches for.
#[derive(Clone, Debug)]
pub struct Member {
    pub workflow_id: String,
    pub namespace: String,
    pub name: String,
    pub poll_interval: Duration,
    /// The `ended_at` a wake was given for: a later look listing the same end
    /// (the overlap) wakes nobody again.
    pub woken_for: Option<String>,
}

#[derive(Default)]
struct State {
    groups: HashMap<GroupKey, Group>,
    /// Which group each resource (uid) is in.
    group_of: HashMap<String, GroupKey>,
    /// Resources woken because their run was listed ended: their next reconcile
    /// settles the outcome from what the list said.
    reported: HashMap<String, Report>,
}

/// What the feed tells a resource it woke.
#[derive(Debug)]
pub struct Report {
    /// The run the list reported ended.
    pub workflow_id: String,
    /// What the list said of it (state, `ended_at`, error; no task instances).
    pub listed: Workflow,
}

/// A controller's wake queue: the namespace it watches (None: all of them).
struct Route {
    namespace: Option<String>,
    sender: mpsc::Sender<ObjectRef<CachedRun>>,
}

pub struct Feed {
    settings: FeedSettings,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    routes: Mutex<Vec<Route>>,
}

/// What became of one look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Look {
    /// Per-run polls look at every run within its interval: nothing was asked.
    Skipped,
    /// The list answered; these resources (uids) were woken, oldest end first.
    Listed { runs: usize, woken: Vec<String> },
    /// The list failed (said in a log line and a metric); the next look covers
    /// the same window.
    Failed(String),
}

impl Feed {
    pub fn new(settings: FeedSettings, metrics: Arc<Metrics>) -> Self {
        Feed {
            settings,
            metrics,
            state: Mutex::new(State::default()),
            routes: Mutex::new(Vec::new()),
        }
    }

    /// A queue of wakes for the controller watching `namespace` (None: all);
    /// replaces an earlier queue for the same namespace.
    pub fn route(&self, namespace: Option<String>) -> mpsc::Receiver<ObjectRef<CachedRun>> {
        let (sender, receiver) = mpsc::channel(WAKE_QUEUE);
        let mut routes = self.routes.lock().unwrap();
        routes.retain(|r| r.namespace != namespace);
        routes.push(Route { namespace, sender });
        receiver
    }

    /// Drops every wake queue (the controllers stopped).
    pub fn close_routes(&self) {
        self.routes.lock().unwrap().clear();
    }

    /// Records that resource `uid` follows `member.workflow_id` at `target` with
    /// `credentials` (the latest a poll used: a rotated Secret replaces them).
    pub fn follow(&self, uid: &str, member: Member, target: &Target, credentials: &Credentials) {
        let key = GroupKey {
            budget: target.budget_key(),
        };
        let mut state = self.state.lock().unwrap();
        if state.group_of.get(uid).is_some_and(|k| *k != key) {
            state.leave(uid);
        }
        let now = Timestamp::now();
        let first_look = Instant::now() + self.settings.min_cycle;
        let group = state.groups.entry(key.clone()).or_insert_with(|| Group {
            target: target.clone(),
            members: HashMap::new(),
            uses: HashMap::new(),
            credentials: HashMap::new(),
            refused: Default::default(),
            looked_at: None,
            created: now,
            next_look: first_look,
            looking: false,
            page_size: self.settings.page_size,
            covered: None,
        });
        group.use_credentials(uid, credentials);
        let woken_for = group
            .members
            .get(uid)
            .filter(|m| m.workflow_id == member.workflow_id)
            .and_then(|m| m.woken_for.clone());
        group.members.insert(
            uid.to_string(),
            Member {
                woken_for,
                ..member
            },
        );
        state.group_of.insert(uid.to_string(), key);
    }

    /// Whether resource `uid` is known to follow `workflow_id`.
    pub fn follows(&self, uid: &str, workflow_id: &str) -> bool {
        let state = self.state.lock().unwrap();
        state
            .group_of
            .get(uid)
            .and_then(|key| state.groups.get(key))
            .and_then(|g| g.members.get(uid))
            .is_some_and(|m| m.workflow_id == workflow_id)
    }

    /// The resource no longer follows a run in flight (it finished, is waiting to
    /// retry, or is gone).
    pub fn forget(&self, uid: &str) {
        let mut state = self.state.lock().unwrap();
        state.leave(uid);
        state.reported.remove(uid);
    }

    /// Resource `uid`'s run finished (its own poll read the end, `ended_at`): it
    /// leaves the feed, and an end the feed's windows passed without listing it is
    /// counted as missed (`amperity_operator_change_feed_missed_total`).
    pub fn finished(&self, uid: &str, ended_at: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        let missed = state
            .group_of
            .get(uid)
            .and_then(|key| state.groups.get(key))
            .is_some_and(|g| {
                g.members.get(uid).is_some_and(|m| m.woken_for.is_none())
                    && missed(
                        g.covered,
                        ended_at.and_then(|e| e.parse().ok()),
                        self.settings.overlap,
                    )
            });
        state.leave(uid);
        state.reported.remove(uid);
        drop(state);
        if missed {
            self.metrics.feed_missed.inc();
        }
    }

    /// What the feed reported for resource `uid`, once.
    pub fn take_report(&self, uid: &str) -> Option<Report> {
        self.state.lock().unwrap().reported.remove(uid)
    }

    /// Resources the feed follows, in every group.
    pub fn members(&self) -> usize {
        self.state.lock().unwrap().group_of.len()
    }

    /// Looks at each group when its cycle comes, until dropped (the controllers
    /// stop, or leadership is lost). Looks wait for turns in their tenant's budget
    /// here, never in a reconcile; a group's next look waits for its last.
    pub async fn run(self: Arc<Self>, amperity: AmperityClient) {
        let mut looks = FuturesUnordered::new();
        // A look is at most a tick late: a fifth of the shortest cycle.
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for key in self.due(Instant::now()) {
                        let (feed, amperity) = (self.clone(), amperity.clone());
                        looks.push(async move {
                            feed.look_at(&amperity, &key).await;
                        });
                    }
                }
                Some(()) = looks.next(), if !looks.is_empty() => {}
            }
        }
    }

    /// Looks at every group now, one after another (for tests).
    pub async fn look_now(&self, amperity: &AmperityClient) -> Vec<Look> {
        let mut looks = Vec::new();
        for key in self.claim(|_| true) {
            looks.push(self.look_at(amperity, &key).await);
        }
        looks
    }

    /// Groups whose look is due, marked as looking.
    fn due(&self, now: Instant) -> Vec<GroupKey> {
        self.claim(|g| g.next_look <= now)
    }

    /// Groups not being looked at for which `ready` holds, marked as looking.
    fn claim(&self, ready: impl Fn(&Group) -> bool) -> Vec<GroupKey> {
        let mut state = self.state.lock().unwrap();
        state
            .groups
            .iter_mut()
            .filter(|(_, g)| !g.looking && ready(g))
            .map(|(k, g)| {
                g.looking = true;
                k.clone()
            })
            .collect()
    }

    async fn look_at(&self, amperity: &AmperityClient, key: &GroupKey) -> Look {
        let started = Instant::now();
        let look = self.look(amperity, key).await;
        let mut state = self.state.lock().unwrap();
        if let Some(group) = state.groups.get_mut(key) {
            group.looking = false;
            // A cycle from this look's start, so that a slow answer (a wait for a
            // turn, many pages) does not stretch the time between looks.
            let intervals = group.members.values().map(|m| m.poll_interval);
            group.next_look = started + look_every(intervals, self.settings.min_cycle);
        }
        drop(state);
        let outcome = match &look {
            Look::Skipped => "skipped",
            Look::Listed { woken, .. } => {
                self.metrics.feed_wakes.inc_by(woken.len() as u64);
                "listed"
            }
            Look::Failed(_) => "failed",
        };
        self.metrics.feed_look(outcome);
        look
    }

    async fn look(&self, amperity: &AmperityClient, key: &GroupKey) -> Look {
        // Windows are kept in the tenant's clock (its answers' `Date`), so that an
        // operator clock minutes off changes nothing; this look's start is set
        // again once the list answered (the first answer tells the clock).
        let local_start = Timestamp::now();
        let (target, credentials, from, page_size) = {
            let mut state = self.state.lock().unwrap();
            let Some(group) = state.groups.get_mut(key) else {
                return Look::Skipped;
            };
            let in_tenant = group.members.len();
            let Some(credentials) = group.lister() else {
                return Look::Skipped;
            };
            let shortest = cycle(
                group.members.values().map(|m| m.poll_interval),
                Duration::ZERO,
            );
            let backlog = amperity.routine_backlog(&group.target);
            let started = amperity.in_tenant_clock(&group.target, local_start);
            if polls_keep_up(in_tenant, amperity.turn_period(), backlog, shortest) {
                // Per-run polls see every end within its interval; when they stop
                // keeping up, the feed starts from here.
                group.looked_at = Some(started);
                group.covered = None;
                return Look::Skipped;
            }
            let created = amperity.in_tenant_clock(&group.target, group.created);
            let from = window_start(group.looked_at, created, started, &self.settings);
            (group.target.clone(), credentials, from, group.page_size)
        };
        let mut query = ListQuery {
            ended_from: Some(list_time(from)),
            limit: Some(page_size),
            ..ListQuery::default()
        };
        let turn = amperity.reserve_wake_turn(&target);
        let answer = amperity
            .list_paged("feed", &target, &credentials, &mut query, Some(turn))
            .await;
        if let Some(limit) = query.limit.filter(|l| *l != page_size)
            && let Some(group) = self.state.lock().unwrap().groups.get_mut(key)
        {
            // A smaller page came through (or none did): the next look starts there.
            group.page_size = limit;
        }
        let listed = match answer {
            Ok(reply) => reply.body,
            Err(e) => {
                // A token the API no longer takes (401) is exchanged again; a 403
                // says the token is good but may not list: exchanging it again
                // every cycle would change nothing.
                if e.is_auth() && e.status() != Some(403) {
                    amperity.forget_token(&target, &credentials);
                }
                if let Some(group) = self.state.lock().unwrap().groups.get_mut(key) {
                    group.covered = None;
                    if e.is_auth() {
                        // These credentials may not list: the next look tries
                        // another member's.
                        group.refused.insert(credentials.fingerprint());
                    }
                }
                tracing::warn!(tenant = %target.tenant, error = %e, "the change feed's list failed; its next look covers the same window");
                return Look::Failed(e.to_string());
            }
        };
        let wakes = {
            let mut state = self.state.lock().unwrap();
            let Some(group) = state.groups.get_mut(key) else {
                return Look::Listed {
                    runs: listed.len(),
                    woken: Vec::new(),
                };
            };
            group.refused.remove(&credentials.fingerprint());
            // This look's start, by the tenant's clock as the answer told it.
            let started = amperity.in_tenant_clock(&target, local_start);
            group.looked_at = Some(started);
            group.covered = Some(match group.covered {
                Some((first, _)) if from >= first => (first, started),
                _ => (from, started),
            });
            let wakes = ended_members(&group.members, &listed);
            let ended: HashMap<&str, &Workflow> = listed
                .iter()
                .filter(|w| w.has_ended())
                .map(|w| (w.id.as_str(), w))
                .collect();
            let mut given = Vec::new();
            for wake in wakes {
                let Some(member) = group.members.get_mut(&wake.uid) else {
                    continue;
                };
                let Some(listed) = ended.get(member.workflow_id.as_str()) else {
                    continue;
                };
                if self.wake(member) {
                    member.woken_for = Some(wake.ended_at);
                    let report = Report {
                        workflow_id: member.workflow_id.clone(),
                        listed: (*listed).clone(),
                    };
                    given.push((wake.uid, report));
                }
            }
            let woken = given.iter().map(|(uid, _)| uid.clone()).collect::<Vec<_>>();
            state.reported.extend(given);
            woken
        };
        if !wakes.is_empty() {
            tracing::debug!(tenant = %target.tenant, woken = wakes.len(), "the change feed woke runs it lists ended");
        }
        Look::Listed {
            runs: listed.len(),
            woken: wakes,
        }
    }

    /// Queues a reconcile of `member`'s resource with the controller watching its
    /// namespace; false when none takes it now.
    fn wake(&self, member: &Member) -> bool {
        let mut routes = self.routes.lock().unwrap();
        let Some(route) = routes.iter_mut().find(|r| {
            r.namespace
                .as_deref()
                .is_none_or(|ns| ns == member.namespace)
        }) else {
            return false;
        };
        let object = ObjectRef::new(&member.name).within(&member.namespace);
        route.sender.try_send(object).is_ok()
    }
}

impl Group {
    /// Member `uid`'s polls use `credentials`.
    fn use_credentials(&mut self, uid: &str, credentials: &Credentials) {
        let fingerprint = credentials.fingerprint();
        if self.uses.get(uid) != Some(&fingerprint) {
            self.stop_using(uid);
            self.uses.insert(uid.to_string(), fingerprint);
            self.credentials
                .entry(fingerprint)
                .or_insert_with(|| (credentials.clone(), 0))
                .1 += 1;
        }
        if let Some((kept, _)) = self.credentials.get_mut(&fingerprint) {
            *kept = credentials.clone();
        }
    }

    fn stop_using(&mut self, uid: &str) {
        let Some(fingerprint) = self.uses.remove(uid) else {
            return;
        };
        if let Some((_, count)) = self.credentials.get_mut(&fingerprint) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.credentials.remove(&fingerprint);
                self.refused.remove(&fingerprint);
            }
        }
    }

    /// The credentials the group lists with: the same every look (the lowest
    /// fingerprint) among those the list has not refused; when it refused them
    /// all, it starts over.
    fn lister(&mut self) -> Option<Credentials> {
        if self.credentials.keys().all(|f| self.refused.contains(f)) {
            self.refused.clear();
        }
        self.credentials
            .iter()
            .filter(|(f, _)| !self.refused.contains(f))
            .min_by_key(|(f, _)| **f)
            .map(|(_, (c, _))| c.clone())
    }
}

impl State {
    fn leave(&mut self, uid: &str) {
        let Some(key) = self.group_of.remove(uid) else {
            return;
        };
        if let Some(group) = self.groups.get_mut(&key) {
            group.stop_using(uid);
            group.members.remove(uid);
            if group.members.is_empty() {
                self.groups.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_lists_with_one_members_credentials_and_another_once_refused() {
        let token = |t: &str| Credentials::Token(crate::amperity::SecretString::new(t.to_string()));
        let mut group = Group {
            target: Target::new(
                Some("https://socktown.amperity.com/api"),
                "",
                "socktown",
                "2024-04-01",
                &crate::amperity::AllowList::parse(&["https://*.amperity.com"]).unwrap(),
            )
            .unwrap(),
            members: HashMap::new(),
            uses: HashMap::new(),
            credentials: HashMap::new(),
            refused: Default::default(),
            looked_at: None,
            created: Timestamp::now(),
            next_look: Instant::now(),
            looking: false,
            page_size: 3,
            covered: None,
        };
        assert!(group.lister().is_none());
        group.use_credentials("u1", &token("a"));
        group.use_credentials("u2", &token("b"));
        group.use_credentials("u3", &token("b"));
        let fp = |c: Option<Credentials>| c.map(|c| c.fingerprint());
        let (a, b) = (token("a").fingerprint(), token("b").fingerprint());
        let (low, high) = (a.min(b), a.max(b));
        assert_eq!(fp(group.lister()), Some(low), "the same one every look");
        assert_eq!(fp(group.lister()), Some(low));
        group.refused.insert(low);
        assert_eq!(fp(group.lister()), Some(high));
        group.refused.insert(high);
        assert_eq!(fp(group.lister()), Some(low), "all refused: start over");
        // A member that rotates its Secret moves its count; unused credentials go.
        group.use_credentials("u1", &token("b"));
        assert_eq!(group.credentials.len(), 1);
        assert_eq!(group.credentials[&b].1, 3);
        group.stop_using("u2");
        group.stop_using("u2");
        assert_eq!(group.credentials[&b].1, 2);
    }
}
