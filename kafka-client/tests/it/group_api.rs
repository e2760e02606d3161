//! The group API the streams layer builds on, against a real broker (classic protocol):
//! balancer user data both ways across generations (`Balancer::on_assignment`),
//! `Consumer::request_rejoin` and how fast it gives a new generation, heartbeats during a revoke
//! hook longer than the session timeout, and `pause` inside `on_assigned`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_client::consumer::RebalanceHooks;
use kafka_client::group::balancer::{
    Assignment, Balancer, BalancerError, CooperativeStickyBalancer, GroupMember, RebalanceProtocol,
    Subscription,
};
use kafka_client::group::BoxFuture;
use kafka_client::{Consumer, Error, TopicPartition};

use crate::consumer::{bootstrap, create_topic};
use crate::group::{group_config, produce_range, producer, unique, value_of};

async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn generation(c: &Consumer) -> i32 {
    c.group_metadata().map_or(-1, |g| g.generation_id)
}

/// Echoes a counter through both user-data fields: each member sends the last value it
/// received (JoinGroup metadata), the leader answers every member with that value plus one
/// (SyncGroup assignment), and `on_assignment` records what arrived. Partitions are assigned by
/// cooperative-sticky.
struct Echo {
    inner: CooperativeStickyBalancer,
    last: Mutex<u32>,
    received: Mutex<Vec<(u32, i32)>>,
}

impl Balancer for Echo {
    fn name(&self) -> &str {
        "echo-v1"
    }
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }
    fn member_metadata(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
        generation: i32,
    ) -> Subscription {
        let mut s = self.inner.member_metadata(topics, owned, generation);
        let last = *self.last.lock().unwrap();
        s.user_data = Some(Bytes::copy_from_slice(&last.to_be_bytes()));
        s
    }
    fn assign(
        &self,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Assignment>, BalancerError> {
        let mut out = self.inner.assign(members, topics)?;
        for m in members {
            let sent = m
                .subscription
                .user_data
                .as_deref()
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| BalancerError::InvalidGroup("no counter".to_string()))?;
            if let Some(a) = out.get_mut(&m.member_id) {
                a.user_data = Some(Bytes::copy_from_slice(&(sent + 1).to_be_bytes()));
            }
        }
        Ok(out)
    }
    fn on_assignment(&self, assignment: &Assignment, generation: i32) {
        let Some(v) = assignment
            .user_data
            .as_deref()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
        else {
            return;
        };
        *self.last.lock().unwrap() = v;
        self.received.lock().unwrap().push((v, generation));
    }
}

/// A counter goes leader -> member -> leader through both user-data fields across three
/// generations (the first join and two requested rejoins), for both members of the group: each
/// generation's value is the previous one plus one, and arrives before that sync's hooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balancer_user_data_round_trips_across_generations() {
    let bootstrap = bootstrap().await;
    let topic = unique("echo");
    let group = unique("echo-group");
    let mut members = Vec::new();
    let mut balancers = Vec::new();
    for _ in 0..2 {
        let mut cfg = group_config(&bootstrap, &group);
        cfg.heartbeat_interval(Duration::from_millis(500));
        let c = Consumer::new(cfg).await.unwrap();
        let b = Arc::new(Echo {
            inner: CooperativeStickyBalancer,
            last: Mutex::new(0),
            received: Mutex::new(Vec::new()),
        });
        c.set_balancers(vec![b.clone()]).unwrap();
        members.push(c);
        balancers.push(b);
    }
    create_topic(members[0].client(), &topic, 4).await;
    for c in &members {
        c.subscribe([topic.clone()]).await.unwrap();
    }
    // Both members in one generation, each with two partitions.
    wait_until(Duration::from_secs(30), "a stable group of two", || {
        let g: Vec<i32> = members.iter().map(generation).collect();
        g[0] >= 0 && g[0] == g[1] && members.iter().all(|c| c.assignment().len() == 2)
    })
    .await;
    for round in 0..2 {
        let before = generation(&members[0]);
        members[round % 2]
            .request_rejoin("user data echo test")
            .unwrap();
        wait_until(Duration::from_secs(30), "a new generation", || {
            let g: Vec<i32> = members.iter().map(generation).collect();
            g[0] > before && g[0] == g[1]
        })
        .await;
    }
    for (i, b) in balancers.iter().enumerate() {
        let got = b.received.lock().unwrap().clone();
        assert!(got.len() >= 3, "member {i} saw {got:?}");
        for w in got.windows(2) {
            assert_eq!(
                w[1].0,
                w[0].0 + 1,
                "member {i}: counter not echoed: {got:?}"
            );
            assert!(
                w[1].1 > w[0].1,
                "member {i}: generations not increasing: {got:?}"
            );
        }
        assert_eq!(
            got[0].0, 1,
            "member {i}: the first assignment carries 0 + 1"
        );
    }
    for c in &members {
        c.close().await;
    }
}

/// Time from `request_rejoin` on one member of three until all three are in the new generation,
/// with 500 ms and with 3 s heartbeats (the others learn of the rebalance at their next
/// heartbeat). Asserts the 500 ms case completes within 1.5 s; prints both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_rejoin_gives_a_new_generation_fast_with_500ms_heartbeats() {
    let bootstrap = bootstrap().await;
    let mut seen = Vec::new();
    for heartbeat in [Duration::from_millis(500), Duration::from_secs(3)] {
        let topic = unique("rejoin");
        let group = unique("rejoin-group");
        let mut members = Vec::new();
        for _ in 0..3 {
            let mut cfg = group_config(&bootstrap, &group);
            cfg.heartbeat_interval(heartbeat);
            members.push(Consumer::new(cfg).await.unwrap());
        }
        create_topic(members[0].client(), &topic, 6).await;
        for c in &members {
            c.subscribe([topic.clone()]).await.unwrap();
        }
        wait_until(Duration::from_secs(60), "a stable group of three", || {
            let g: Vec<i32> = members.iter().map(generation).collect();
            g[0] >= 0
                && g.iter().all(|x| *x == g[0])
                && members.iter().all(|c| c.assignment().len() == 2)
        })
        .await;
        let before = generation(&members[0]);
        let started = Instant::now();
        members[1].request_rejoin("latency test").unwrap();
        wait_until(Duration::from_secs(30), "a new generation", || {
            let g: Vec<i32> = members.iter().map(generation).collect();
            g[0] > before && g.iter().all(|x| *x == g[0])
        })
        .await;
        let took = started.elapsed();
        println!(
            "request_rejoin -> new generation on 3 members, heartbeat {heartbeat:?}: {took:?}"
        );
        seen.push(took);
        for c in &members {
            c.close().await;
        }
    }
    assert!(
        seen[0] <= Duration::from_millis(1500),
        "with 500 ms heartbeats the new generation took {:?}",
        seen[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_rejoin_errors_when_not_subscribed_or_closed() {
    let bootstrap = bootstrap().await;
    let c = Consumer::new(group_config(&bootstrap, &unique("rejoin-misuse")))
        .await
        .unwrap();
    assert!(matches!(c.request_rejoin("x"), Err(Error::Misuse(_))));
    assert!(c.group_metadata().is_none());
    c.close().await;
    assert!(matches!(c.request_rejoin("x"), Err(Error::Closed)));
}

/// Sleeps in `on_revoked` (once) and records losses.
struct SlowRevoke {
    sleep: Duration,
    revoking: AtomicBool,
    revoked: AtomicUsize,
    lost: AtomicUsize,
}

impl RebalanceHooks for SlowRevoke {
    fn on_revoked<'a>(
        &'a self,
        _consumer: &'a Consumer,
        _partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.revoked.fetch_add(1, Ordering::SeqCst) == 0 {
                self.revoking.store(true, Ordering::SeqCst);
                tokio::time::sleep(self.sleep).await;
                self.revoking.store(false, Ordering::SeqCst);
            }
        })
    }
    fn on_lost<'a>(
        &'a self,
        _consumer: &'a Consumer,
        _partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.lost.fetch_add(1, Ordering::SeqCst);
        })
    }
}

/// A revoke hook that runs for twice the session timeout keeps its membership: the member
/// heartbeats during the hook, so it is not evicted, keeps its member id, loses nothing, and the
/// joining member gets the revoked partitions once the hook returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_hook_longer_than_the_session_timeout_keeps_the_membership() {
    let bootstrap = bootstrap().await;
    let topic = unique("slow-revoke");
    let group = unique("slow-revoke-group");
    let session = Duration::from_secs(6); // the broker's minimum
    let config = || {
        let mut cfg = group_config(&bootstrap, &group);
        cfg.session_timeout(session);
        cfg.heartbeat_interval(Duration::from_millis(500));
        cfg.rebalance_timeout(Duration::from_secs(30));
        cfg
    };
    let a = Consumer::new(config()).await.unwrap();
    let hooks = Arc::new(SlowRevoke {
        sleep: session * 2,
        revoking: AtomicBool::new(false),
        revoked: AtomicUsize::new(0),
        lost: AtomicUsize::new(0),
    });
    a.set_rebalance_hooks(hooks.clone());
    create_topic(a.client(), &topic, 4).await;
    a.subscribe([topic.clone()]).await.unwrap();
    wait_until(Duration::from_secs(30), "a owns everything", || {
        a.assignment().len() == 4
    })
    .await;
    let member_id = a.group_metadata().unwrap().member_id;
    let b = Consumer::new(config()).await.unwrap();
    b.subscribe([topic.clone()]).await.unwrap();
    wait_until(Duration::from_secs(30), "the revoke hook starts", || {
        hooks.revoking.load(Ordering::SeqCst)
    })
    .await;
    let hook_started = Instant::now();
    wait_until(Duration::from_secs(60), "b gets its share", || {
        b.assignment().len() == 2 && a.assignment().len() == 2
    })
    .await;
    assert!(
        hook_started.elapsed() >= session,
        "the hand-over waited for the hook"
    );
    assert_eq!(
        hooks.lost.load(Ordering::SeqCst),
        0,
        "a lost its partitions"
    );
    assert_eq!(
        a.group_metadata().unwrap().member_id,
        member_id,
        "a was evicted and rejoined as a new member"
    );
    let (ga, gb) = (generation(&a), generation(&b));
    assert_eq!(ga, gb);
    a.close().await;
    b.close().await;
}

/// Pauses every partition it is given.
struct PauseOnAssign;

impl RebalanceHooks for PauseOnAssign {
    fn on_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { consumer.pause(partitions) })
    }
}

/// `pause` inside `on_assigned` survives the start at the committed offset: nothing is fetched
/// until `resume`, and then reading starts at the committed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_in_on_assigned_holds_until_resume() {
    let bootstrap = bootstrap().await;
    let topic = unique("pause-assigned");
    let group = unique("pause-assigned-group");
    let p = producer(&bootstrap).await;
    let first = Consumer::new(group_config(&bootstrap, &group))
        .await
        .unwrap();
    create_topic(first.client(), &topic, 1).await;
    produce_range(&p, &topic, 1, 0, 20).await;
    // A committed offset of 5 to start from.
    let tp = TopicPartition::new(topic.as_str(), 0);
    first.subscribe([topic.clone()]).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "the first member's assignment",
        || first.assignment().len() == 1,
    )
    .await;
    first.commit([(tp.clone(), 5)]).await.unwrap();
    first.close().await;

    let c = Consumer::new(group_config(&bootstrap, &group))
        .await
        .unwrap();
    c.set_rebalance_hooks(Arc::new(PauseOnAssign));
    c.subscribe([topic.clone()]).await.unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    let mut while_paused = 0;
    while Instant::now() < until {
        while_paused += c.poll(Duration::from_millis(200)).await.unwrap().len();
    }
    assert_eq!(c.assignment(), vec![tp.clone()], "assigned while paused");
    assert_eq!(while_paused, 0, "records fetched from a paused partition");
    c.resume(std::slice::from_ref(&tp));
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < 15 {
        assert!(Instant::now() < deadline, "resumed reading got {values:?}");
        values.extend(
            c.poll(Duration::from_millis(200))
                .await
                .unwrap()
                .iter()
                .map(value_of),
        );
    }
    assert_eq!(values, (5..20).collect::<Vec<u64>>());
    c.close().await;
    p.close().await.unwrap();
}
