//! The change feed against the simulator over real HTTP: which resources it wakes
//! and in what order, its pages and its overlap, lists that lag or fail, and when
//! it does not ask at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use amperity_operator::amperity::{
    AllowList, AmperityClient, ClientConfig, Credentials, SecretString, Target,
};
use amperity_operator::metrics::Metrics;
use amperity_operator::run::feed::{Feed, FeedSettings, Look, Member};
use amperity_operator::sim::{self, ListFault, Request, SimConfig, SimHandle};
use futures::StreamExt;
use futures::channel::mpsc::Receiver;
use kube::runtime::reflector::ObjectRef;

use amperity_operator::run::controller::CachedRun;

struct Setup {
    sim: SimHandle,
    client: AmperityClient,
    target: Target,
    feed: Feed,
    metrics: Arc<Metrics>,
    wakes: Receiver<ObjectRef<CachedRun>>,
}

fn token(t: &str) -> Credentials {
    Credentials::Token(SecretString::new(t.to_string()))
}

/// A simulator, a client with budget `rate`, and a feed routing wakes for
/// namespace `ns`.
async fn setup(sim_config: SimConfig, rate: u32, settings: FeedSettings) -> Setup {
    let sim = sim::spawn(SimConfig {
        record_requests: true,
        tokens: vec!["sim-token".into(), "other-token".into()],
        ..sim_config
    })
    .await
    .unwrap();
    let allow = AllowList::parse(&[sim.base_url()]).unwrap();
    let client = AmperityClient::new(ClientConfig {
        rate_limit_per_sec: rate,
        allow: allow.clone(),
        ..ClientConfig::default()
    })
    .unwrap();
    let target = Target::new(Some(&sim.base_url()), "", "socktown", "2024-04-01", &allow).unwrap();
    let metrics = Arc::new(Metrics::default());
    let feed = Feed::new(settings, metrics.clone());
    let wakes = feed.route(Some("ns".into()));
    Setup {
        sim,
        client,
        target,
        feed,
        metrics,
        wakes,
    }
}

fn member(id: &str, name: &str, interval_secs: u64) -> Member {
    Member {
        workflow_id: id.into(),
        namespace: "ns".into(),
        name: name.into(),
        poll_interval: Duration::from_secs(interval_secs),
        woken_for: None,
    }
}

impl Setup {
    /// Seeds `n` runs that go on until ended, each followed by resource `uid-<i>`.
    fn follow_new(&self, config: &str, n: usize, from: usize) -> Vec<String> {
        let ids = self.sim.seed_runs(config, n);
        for (i, id) in ids.iter().enumerate() {
            let k = from + i;
            self.feed.follow(
                &format!("uid-{k}"),
                member(id, &format!("run-{k}"), 10),
                &self.target,
                &token("sim-token"),
            );
        }
        ids
    }

    /// The resources woken since the last call, in order.
    fn woken(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(r) = self.wakes.try_recv() {
            assert_eq!(r.namespace.as_deref(), Some("ns"));
            names.push(r.name);
        }
        names
    }

    fn lists(&self) -> usize {
        self.sim
            .request_log()
            .iter()
            .filter(|l| l.request == Request::List)
            .count()
    }

    /// Whether the metrics hold this exact line.
    async fn metric(&self, line: &str) -> bool {
        self.metrics.encode().lines().any(|l| l == line)
    }
}

/// Settings for tests: short cycles, pages of three.
fn quick() -> FeedSettings {
    FeedSettings {
        overlap: Duration::from_secs(3),
        min_cycle: Duration::from_secs(1),
        lookback: Duration::from_secs(60),
        page_size: 3,
    }
}

fn listed(looks: &[Look]) -> (usize, Vec<String>) {
    match looks {
        [Look::Listed { runs, woken }] => (*runs, woken.clone()),
        other => panic!("one listed look expected: {other:?}"),
    }
}

#[tokio::test]
async fn ended_runs_are_woken_oldest_end_first_across_pages_and_once() {
    // A budget of 1/s: twelve followed runs take twelve seconds to poll in turn,
    // longer than their ten-second interval, so the feed asks.
    let mut s = setup(SimConfig::default(), 1, quick()).await;
    let ids = s.follow_new("cg-feed-hang", 12, 0);
    // Runs nobody here follows end too; the list holds them, nobody is woken.
    for other in s.sim.seed_runs("cg-others-hang", 4) {
        s.sim.end_run(&other, false).unwrap();
    }
    // Seven of ours end, in this order.
    let order = [5, 0, 11, 3, 7, 1, 9];
    for i in order {
        s.sim.end_run(&ids[i], i % 2 == 1).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lists = s.lists();
    let (runs, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(runs, 11, "seven of ours and four others ended");
    // Pages of three: four requests for eleven runs.
    assert_eq!(s.lists() - lists, 4);
    let expected: Vec<String> = order.iter().map(|i| format!("uid-{i}")).collect();
    assert_eq!(woken, expected);
    let names: Vec<String> = order.iter().map(|i| format!("run-{i}")).collect();
    assert_eq!(
        s.woken(),
        names,
        "wakes reach the controller oldest end first"
    );
    // Each woken resource's next reconcile learns which run was listed ended and
    // what the list said of it (the odd ones failed).
    for i in order {
        let report = s.feed.take_report(&format!("uid-{i}")).unwrap();
        assert_eq!(report.workflow_id, ids[i]);
        assert_eq!(report.listed.id, ids[i]);
        let state = if i % 2 == 1 { "failed" } else { "succeeded" };
        assert_eq!(report.listed.state.as_str(), state);
    }
    assert!(s.feed.take_report("uid-5").is_none(), "once");
    assert!(s.feed.take_report("uid-2").is_none(), "not listed ended");

    // The next look lists the same ends again (the overlap) and wakes nobody.
    let (runs, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!((runs, woken), (11, vec![]));
    assert!(s.woken().is_empty());
    assert!(
        s.metric("amperity_operator_change_feed_wakes_total 7")
            .await
    );
    assert!(
        s.metric(r#"amperity_operator_change_feed_looks_total{outcome="listed"} 2"#)
            .await
    );

    // A resource that stopped following its run (it finished) is not woken.
    s.feed.forget("uid-2");
    s.sim.end_run(&ids[2], false).unwrap();
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert!(woken.is_empty());
    assert_eq!(s.feed.members(), 11);
}

#[tokio::test]
async fn a_run_whose_end_is_listed_late_is_seen_by_the_next_look_once() {
    // Amperity lists an end a second late: the first look after the end does not
    // show it, the next one does, because each look starts an overlap before the
    // last one began.
    let mut s = setup(
        SimConfig {
            list_lag: Duration::from_millis(1200),
            ..SimConfig::default()
        },
        1,
        quick(),
    )
    .await;
    let ids = s.follow_new("cg-edge-endlag-hang", 12, 0);
    s.sim.end_run(&ids[0], false).unwrap();
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert!(woken.is_empty(), "not listed yet: {woken:?}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-0"]);
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert!(woken.is_empty(), "seen once: {woken:?}");
    assert_eq!(s.woken(), ["run-0"]);
}

#[tokio::test]
async fn a_run_that_ends_while_a_look_is_answered_is_seen_by_the_next_one() {
    // A run that ends after a look began, at the very edge of its window, is in
    // the next look's window: windows overlap, they never leave a gap.
    let mut s = setup(SimConfig::default(), 1, quick()).await;
    let ids = s.follow_new("cg-edge-hang", 12, 0);
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert!(woken.is_empty());
    s.sim.end_run(&ids[4], false).unwrap();
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-4"]);
    assert_eq!(s.woken(), ["run-4"]);
}

#[tokio::test]
async fn a_list_that_fails_costs_its_request_and_the_next_look_covers_its_window() {
    let mut s = setup(SimConfig::default(), 1, quick()).await;
    let ids = s.follow_new("cg-failing-hang", 12, 0);
    s.sim.end_run(&ids[3], false).unwrap();
    s.sim.fail_lists(&[
        ListFault::Status(500),
        ListFault::Status(400),
        ListFault::Garbage,
    ]);
    for expected in ["HTTP 500", "HTTP 400", "expected WorkflowList"] {
        let lists = s.lists();
        let looks = s.feed.look_now(&s.client).await;
        let [Look::Failed(message)] = looks.as_slice() else {
            panic!("{looks:?}")
        };
        assert!(message.contains(expected), "{expected}: {message}");
        assert_eq!(s.lists() - lists, 1, "one request, no retry");
        assert!(s.woken().is_empty());
    }
    // Nothing else was held up: the tenant is not paused, a poll goes at once.
    let started = Instant::now();
    s.client
        .get(&s.target, &token("sim-token"), &ids[0])
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(1500));
    // The next look asks for the same window: the run that ended before the
    // failures is woken.
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-3"]);
    assert!(
        s.metric(r#"amperity_operator_change_feed_looks_total{outcome="failed"} 3"#)
            .await
    );
}

#[tokio::test]
async fn no_list_is_asked_while_per_run_polls_keep_up() {
    // 5/s: forty runs polled in turn every 8.2 s, within their 10 s interval.
    let s = setup(SimConfig::default(), 5, quick()).await;
    let ids = s.follow_new("cg-few-hang", 40, 0);
    s.sim.end_run(&ids[0], false).unwrap();
    assert_eq!(s.feed.look_now(&s.client).await, [Look::Skipped]);
    assert_eq!(s.lists(), 0);
    // Fifty do not: 10.3 s.
    s.follow_new("cg-more-hang", 10, 40);
    // The feed starts an overlap before the look it skipped.
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-0"]);
    s.sim.end_run(&ids[1], false).unwrap();
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-1"]);
    assert!(
        s.metric(r#"amperity_operator_change_feed_looks_total{outcome="skipped"} 1"#)
            .await
    );
}

#[tokio::test]
async fn one_list_serves_every_credential_of_a_tenant_and_wakes_only_where_a_controller_listens() {
    let mut s = setup(SimConfig::default(), 1, quick()).await;
    let ids = s.sim.seed_runs("cg-groups-hang", 12);
    for (i, id) in ids.iter().enumerate() {
        let (ns, creds) = match i {
            0 => ("elsewhere", "sim-token"),
            1..=5 => ("ns", "sim-token"),
            _ => ("ns", "other-token"),
        };
        s.feed.follow(
            &format!("uid-{i}"),
            Member {
                namespace: ns.into(),
                ..member(id, &format!("run-{i}"), 10)
            },
            &s.target,
            &token(creds),
        );
    }
    for id in &ids[..3] {
        s.sim.end_run(id, false).unwrap();
    }
    s.sim.end_run(&ids[8], false).unwrap();
    let lists = s.lists();
    let looks = s.feed.look_now(&s.client).await;
    assert_eq!(
        looks.len(),
        1,
        "one look per tenant, whatever the credentials: {looks:?}"
    );
    assert_eq!(
        s.lists() - lists,
        2,
        "two pages (four runs, pages of three)"
    );
    let mut woken = s.woken();
    woken.sort();
    // run-0's namespace has no controller here: it is not counted as woken, and a
    // later look tries again.
    assert_eq!(woken, ["run-1", "run-2", "run-8"]);
    let elsewhere = s.feed.route(Some("elsewhere".into()));
    s.feed.look_now(&s.client).await;
    let again: Vec<String> = elsewhere.take(1).map(|r| r.name).collect::<Vec<_>>().await;
    assert_eq!(again, ["run-0"]);
    // A rotated Secret changes a resource's credentials, not its group.
    s.feed.follow(
        "uid-1",
        member(&ids[1], "run-1", 10),
        &s.target,
        &token("other-token"),
    );
    assert!(s.feed.follows("uid-1", &ids[1]));
    assert!(!s.feed.follows("uid-1", &ids[2]));
    assert_eq!(s.feed.members(), 12);
}

#[tokio::test]
async fn a_run_listed_ended_is_reported_with_what_the_list_said_and_no_turn_moves() {
    // A budget of 1/s with thirty polls queued: a poll reserved now waits half a
    // minute. Its run is listed ended (failed): the report carries the list's
    // answer, which settles the outcome, and the routine turn kept for the read
    // of the final task summary stays where it was (nothing jumps the queue).
    let s = setup(SimConfig::default(), 1, quick()).await;
    let ids = s.follow_new("cg-waiting-hang", 12, 0);
    for _ in 0..30 {
        s.client.reserve_turn(&s.target, "marketing");
    }
    let turn = s.client.reserve_turn(&s.target, "marketing");
    assert!(turn.wait() > Duration::from_secs(25), "{turn:?}");
    s.sim.end_run(&ids[7], true).unwrap();
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-7"]);
    let report = s.feed.take_report("uid-7").unwrap();
    assert_eq!(report.workflow_id, ids[7]);
    assert_eq!(report.listed.id, ids[7]);
    assert_eq!(report.listed.state.as_str(), "failed");
    assert!(report.listed.ended_at.is_some());
    assert!(report.listed.error.is_some(), "{:?}", report.listed);
    assert!(report.listed.task_instances.is_none());
    assert!(turn.is_routine());
    assert!(turn.wait() > Duration::from_secs(20), "{turn:?}");
    // Only the list was asked: no read of the run.
    let reads = s
        .sim
        .request_log()
        .iter()
        .filter(|l| matches!(l.request, Request::Get(_)))
        .count();
    assert_eq!(reads, 0);
}

#[tokio::test]
async fn a_list_limit_the_api_refuses_falls_back_to_a_smaller_page_that_sticks() {
    // The API takes at most 100 a page; the feed asks for 1000.
    let mut s = setup(
        SimConfig {
            list_limit: 100,
            ..SimConfig::default()
        },
        1,
        FeedSettings {
            page_size: 1000,
            ..quick()
        },
    )
    .await;
    let ids = s.follow_new("cg-limit-hang", 12, 0);
    s.sim.end_run(&ids[2], false).unwrap();
    let lists = s.lists();
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-2"]);
    // 1000 and 250 refused, 62 taken.
    assert_eq!(s.lists() - lists, 3);
    s.sim.end_run(&ids[5], false).unwrap();
    let lists = s.lists();
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-5"]);
    assert_eq!(s.lists() - lists, 1, "the page that came through is kept");
    assert!(s.woken().len() == 2);
}

#[tokio::test]
async fn a_page_over_the_body_limit_is_fetched_again_in_smaller_pages() {
    let mut s = setup(
        SimConfig::default(),
        1,
        FeedSettings {
            page_size: 1000,
            ..quick()
        },
    )
    .await;
    let allow = AllowList::parse(&[s.sim.base_url()]).unwrap();
    s.client = AmperityClient::new(ClientConfig {
        // Sixty runs take 12.4 s to poll in turn at 5/s, over their interval.
        rate_limit_per_sec: 5,
        allow,
        max_body_bytes: 8 * 1024,
        ..ClientConfig::default()
    })
    .unwrap();
    let ids = s.follow_new("cg-big-hang", 60, 0);
    for id in &ids {
        s.sim.end_run(id, false).unwrap();
    }
    // All sixty in one page are over 8 KiB: the first look is refused pages
    // until they are small enough, and wakes every run.
    let lists = s.lists();
    let (runs, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(runs, 60);
    assert_eq!(woken.len(), 60);
    assert_eq!(s.woken().len(), 60);
    let first = s.lists() - lists;
    assert!(first > 2, "{first} requests");
    // The next look starts from the page that came through: no page too large.
    let lists = s.lists();
    let (runs, _) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(runs, 60);
    let second = s.lists() - lists;
    assert!(second < first, "{second} against {first}");
    // Plain lists fall back too.
    let all = s
        .client
        .list(
            &s.target,
            &token("sim-token"),
            &amperity_operator::amperity::ListQuery::default(),
            None,
        )
        .await
        .unwrap();
    assert!(all.body.len() >= 60);
}

#[tokio::test]
async fn a_403_on_the_list_does_not_exchange_the_token_again_each_cycle() {
    let s = setup(
        SimConfig {
            client_id: Some("operator".into()),
            client_secret: Some("client-s3cret".into()),
            ..SimConfig::default()
        },
        1,
        quick(),
    )
    .await;
    let creds = Credentials::ClientCredentials {
        client_id: "operator".into(),
        client_secret: SecretString::new("client-s3cret"),
        token_url: None,
    };
    let ids = s.sim.seed_runs("cg-forbidden-hang", 12);
    for (i, id) in ids.iter().enumerate() {
        s.feed.follow(
            &format!("uid-{i}"),
            member(id, &format!("run-{i}"), 10),
            &s.target,
            &creds,
        );
    }
    s.sim
        .fail_lists(&[ListFault::Status(403), ListFault::Status(403)]);
    for _ in 0..2 {
        let looks = s.feed.look_now(&s.client).await;
        assert!(matches!(looks.as_slice(), [Look::Failed(_)]), "{looks:?}");
    }
    listed(&s.feed.look_now(&s.client).await);
    assert_eq!(s.sim.stats().tokens_issued, 1);
    assert!(
        s.metric(r#"amperity_operator_change_feed_looks_total{outcome="failed"} 2"#)
            .await
    );
}

/// Two looks a little apart with the simulator's clock `offset_secs` off ours: a
/// run that ends between them is woken by the second.
async fn ends_are_seen_with_amperity_clock_off_by(offset_secs: i64) {
    let mut s = setup(
        SimConfig {
            clock_offset: jiff::SignedDuration::from_secs(offset_secs),
            ..SimConfig::default()
        },
        1,
        quick(),
    )
    .await;
    let ids = s.follow_new("cg-skew-hang", 12, 0);
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert!(woken.is_empty());
    s.sim.end_run(&ids[4], false).unwrap();
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-4"], "clock off by {offset_secs} s");
    assert_eq!(s.woken(), ["run-4"]);
}

#[tokio::test]
async fn an_operator_clock_minutes_ahead_of_amperity_changes_nothing() {
    ends_are_seen_with_amperity_clock_off_by(-300).await;
}

#[tokio::test]
async fn an_operator_clock_minutes_behind_amperity_changes_nothing() {
    ends_are_seen_with_amperity_clock_off_by(300).await;
}

#[tokio::test]
async fn ends_the_windows_passed_unlisted_are_counted_as_missed() {
    let s = setup(SimConfig::default(), 1, quick()).await;
    // Runs the list never shows (an index that lost them), and ordinary ones.
    let hidden = s.follow_new("cg-unlisted-hang", 2, 0);
    let shown = s.follow_new("cg-shown-hang", 10, 2);
    listed(&s.feed.look_now(&s.client).await);
    for id in [&hidden[0], &shown[0]] {
        s.sim.end_run(id, false).unwrap();
    }
    // An overlap (3 s) later, and the second a `Date` header may lag by (it has
    // whole seconds), the next window starts after those ends.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (_, woken) = listed(&s.feed.look_now(&s.client).await);
    assert_eq!(woken, ["uid-2"]);
    let ended_at = |id: &str| {
        let (client, target) = (s.client.clone(), s.target.clone());
        let id = id.to_string();
        async move {
            client
                .get(&target, &token("sim-token"), &id)
                .await
                .unwrap()
                .body
                .ended_at
        }
    };
    // Their own polls read the ends: the hidden one was missed, the listed one not.
    s.feed
        .finished("uid-0", ended_at(&hidden[0]).await.as_deref());
    s.feed
        .finished("uid-2", ended_at(&shown[0]).await.as_deref());
    // A run that ends now is still within reach of the next window: not missed.
    s.sim.end_run(&hidden[1], false).unwrap();
    s.feed
        .finished("uid-1", ended_at(&hidden[1]).await.as_deref());
    assert!(
        s.metric("amperity_operator_change_feed_missed_total 1")
            .await
    );
    assert_eq!(s.feed.members(), 9);
}
