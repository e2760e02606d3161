//! Live migration of a classic group from eager to cooperative rebalancing (KIP-429's upgrade
//! path), and a downgrade.
//!
//! Upgrade: three members start with `[range]` (eager). First rolling restart: each in turn is
//! replaced by one offering `[cooperative-sticky, range]` — still eager, as in Java, because a
//! consumer runs the protocol *all* its balancers support; once all three offer it the group
//! picks cooperative-sticky. Second rolling restart: each is replaced by one offering
//! `[cooperative-sticky]` only (cooperative). Records are produced throughout; members commit in
//! `on_revoked` and (through it) when closing.
//!
//! Checked: every produced record is consumed at least once; ownership replayed in time order
//! never has two holders; records delivered twice are counted and printed by phase, and once all
//! members are cooperative there are none.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_client::config::ClientConfig;
use kafka_client::group::balancer::{Balancer, CooperativeStickyBalancer, RangeBalancer};
use kafka_client::{Admin, Error};
use kafka_wire::ErrorCode;

use crate::consumer::{bootstrap, create_topic};
use crate::group::{producer, unique};
use crate::group_java::{
    balanced, duplicates, member_config, now_us, produce_until, replay, wait_consuming, wait_log,
    wait_protocol, Kind, RustMember, Shared,
};

const P: i32 = 12;

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::default();
    c.bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    c
}

fn range() -> Vec<Arc<dyn Balancer>> {
    vec![Arc::new(RangeBalancer)]
}

fn coop_range() -> Vec<Arc<dyn Balancer>> {
    vec![Arc::new(CooperativeStickyBalancer), Arc::new(RangeBalancer)]
}

fn coop() -> Vec<Arc<dyn Balancer>> {
    vec![Arc::new(CooperativeStickyBalancer)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eager_to_cooperative_rolling_upgrade() {
    let t0 = Instant::now();
    let secs = || t0.elapsed().as_secs_f64();
    let bootstrap = bootstrap().await;
    let topic = unique("group-migrate");
    let group = unique("g-migrate");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    let log: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producing = produce_until(
        p.clone(),
        topic.clone(),
        P,
        24,
        Duration::from_millis(50),
        stop.clone(),
        produced.clone(),
    );
    let cfg = || member_config(&bootstrap, &group);

    let mut members = Vec::new();
    for slot in ["a", "b", "c"] {
        let name = format!("{slot}0");
        members.push(RustMember::start(&name, cfg(), Some(range()), &topic, &log).await);
    }
    wait_log(&log, "three eager members", Duration::from_secs(60), |l| {
        balanced(l, &["a0", "b0", "c0"], 4)
    })
    .await;
    let admin = Admin::new(client_config(&bootstrap)).await.expect("admin");
    wait_protocol(&admin, &group, "range", Duration::from_secs(30)).await;
    wait_consuming(&log, &["a0", "b0", "c0"], Duration::from_secs(30)).await;
    println!("{:>5.1}s eager group stable", secs());

    // Phase boundaries (µs): when the last eager-only member left, when the last member
    // offering range left (from then on every member is cooperative).
    let mut marks = Vec::new();
    for (phase, balancers) in [(1, coop_range as fn() -> _), (2, coop)] {
        for i in 0..3 {
            let slot = ["a", "b", "c"][i];
            let old = std::mem::replace(
                &mut members[i],
                RustMember::start(
                    &format!("{slot}{phase}"),
                    cfg(),
                    Some(balancers()),
                    &topic,
                    &log,
                )
                .await,
            );
            // A rolling restart stops the old process; starting the new one first keeps the
            // test short and changes nothing about the protocol (the old one leaves cleanly).
            old.close().await;
            let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
            let want: Vec<&str> = names.iter().map(String::as_str).collect();
            wait_log(
                &log,
                &format!("phase {phase}: {slot} replaced"),
                Duration::from_secs(60),
                |l| balanced(l, &want, 4),
            )
            .await;
            // Each generation does real work before the next restart.
            wait_consuming(&log, &want, Duration::from_secs(30)).await;
            let n = log.lock().unwrap().consumed_values().len();
            println!(
                "{:>5.1}s phase {phase}: {slot} replaced ({n} consumed)",
                secs()
            );
        }
        // Once all offer cooperative-sticky first the group votes for it (phase 1 members still
        // rebalance eagerly: range is in their list).
        wait_protocol(
            &admin,
            &group,
            "cooperative-sticky",
            Duration::from_secs(30),
        )
        .await;
        marks.push(now_us());
    }
    let all_coop = marks[1];
    // Run a while fully cooperative, then stop producing and drain.
    let mark = now_us();
    wait_log(
        &log,
        "cooperative members consume",
        Duration::from_secs(30),
        |l| {
            ["a2", "b2", "c2"]
                .iter()
                .all(|m| l.deliveries.iter().any(|d| d.member == *m && d.t > mark))
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), producing)
        .await
        .expect("producer stops")
        .expect("producer task");
    let n = produced.load(Ordering::SeqCst);
    wait_log(
        &log,
        "every record consumed",
        Duration::from_secs(60),
        |l| l.consumed_values().len() as u64 == n,
    )
    .await;
    for m in members {
        m.close().await;
    }
    p.close().await.unwrap();

    let l = log.lock().unwrap();
    let values = l.consumed_values();
    assert_eq!(values.len() as u64, n, "no record lost");
    let violations = replay(&l.events);
    assert!(violations.is_empty(), "double ownership: {violations:#?}");
    let lost: Vec<_> = l.events.iter().filter(|e| e.kind == Kind::Lost).collect();
    assert!(lost.is_empty(), "partitions lost: {lost:?}");
    assert!(l.errors.is_empty(), "errors: {:?}", l.errors);
    let dups = duplicates(&l.deliveries);
    let phase_of = |t: u64| {
        if t > all_coop {
            3
        } else if t > marks[0] {
            2
        } else {
            1
        }
    };
    let mut by_phase = [0usize; 4];
    for (first, second) in &dups {
        by_phase[phase_of(second.t)] += 1;
        println!(
            "duplicate {}@{} (value {}): {} then {}",
            second.partition, second.offset, second.value, first.member, second.member
        );
    }
    println!(
        "{:>5.1}s {n} records; duplicates: eager phase {}, mixed phase {}, cooperative {}",
        secs(),
        by_phase[1],
        by_phase[2],
        by_phase[3]
    );
    assert_eq!(
        by_phase[3], 0,
        "duplicates once every member is cooperative"
    );
    // Eager members are cooperative in the revocation too: the revoke hook commits every record
    // handed out, so even the eager phases should redeliver nothing.
    assert!(
        dups.is_empty(),
        "duplicates despite commits on revoke: {dups:?}"
    );
    // Cooperative members revoke only partitions that move: the next assignment of each goes
    // to another member. Eager members revoke everything and may get it back.
    let mut sorted: Vec<_> = l.events.iter().collect();
    sorted.sort_by_key(|e| e.t);
    let mut returned_eager = 0;
    for (i, e) in sorted.iter().enumerate() {
        if e.kind != Kind::Revoked {
            continue;
        }
        for p in &e.parts {
            let next = sorted[i + 1..]
                .iter()
                .find(|n| n.kind == Kind::Assigned && n.parts.contains(p));
            if next.is_some_and(|n| n.member == e.member) {
                assert!(
                    !e.member.ends_with('2'),
                    "cooperative {} revoked {p} and got it back: {e:?}",
                    e.member
                );
                returned_eager += 1;
            }
        }
    }
    println!("eager revocations of partitions that stayed: {returned_eager}");
    assert!(
        returned_eager > 0,
        "the eager phases never revoked a kept partition"
    );
}

/// A group of `[cooperative-sticky, range]` members (running cooperative-sticky, eagerly) is
/// joined by a `[range]`-only member: the only common protocol is range and the group switches
/// to it and keeps consuming. A `[range]` member cannot join a `[cooperative-sticky]`-only group
/// (no common protocol): it fails with INCONSISTENT_GROUP_PROTOCOL and the group is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eager_member_joins_cooperative_group() {
    let bootstrap = bootstrap().await;
    let topic = unique("group-downgrade");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    let log: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producing = produce_until(
        p.clone(),
        topic.clone(),
        P,
        24,
        Duration::from_millis(50),
        stop.clone(),
        produced.clone(),
    );

    let admin = Admin::new(client_config(&bootstrap)).await.expect("admin");

    // Part 1: a cooperative-only group refuses the eager member.
    let group = unique("g-coop-only");
    let cfg = || member_config(&bootstrap, &group);
    let x0 = RustMember::start("x0", cfg(), Some(coop()), &topic, &log).await;
    let x1 = RustMember::start("x1", cfg(), Some(coop()), &topic, &log).await;
    wait_log(
        &log,
        "two cooperative members",
        Duration::from_secs(60),
        |l| balanced(l, &["x0", "x1"], 6),
    )
    .await;
    let outsider = kafka_client::Consumer::new(cfg()).await.unwrap();
    outsider.set_balancers(range()).unwrap();
    outsider.subscribe([topic.clone()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "the range-only member was not refused within 30 s"
        );
        match outsider.poll(Duration::from_millis(200)).await {
            Ok(r) => assert!(r.is_empty(), "the refused member got records"),
            Err(e) => break e,
        }
    };
    match &err {
        Error::Broker(b) => assert_eq!(b.code, ErrorCode::INCONSISTENT_GROUP_PROTOCOL, "{err}"),
        other => panic!("expected INCONSISTENT_GROUP_PROTOCOL, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(30), outsider.close())
        .await
        .expect("the refused member closes");
    assert!(balanced(&log.lock().unwrap(), &["x0", "x1"], 6));
    x0.close().await;
    x1.close().await;
    {
        // x1 closes while the group rebalances after x0 left: its final commit on revoke may
        // carry the generation the group just left behind and be refused (as Java's commitSync
        // in onPartitionsRevoked is). Nothing is lost by it (the next owner re-reads), and this
        // part's records are not checked: only such refusals of the closing members are let go.
        let mut l = log.lock().unwrap();
        l.errors.retain(|e| {
            let at_close = (e.starts_with("x0 ") || e.starts_with("x1 "))
                && (e.contains("ILLEGAL_GENERATION") || e.contains("REBALANCE_IN_PROGRESS"));
            if at_close {
                eprintln!("refused commit at close (allowed): {e}");
            }
            !at_close
        });
    }

    // Part 2: members that still list range fall back to it.
    let group = unique("g-downgrade");
    let cfg = || member_config(&bootstrap, &group);
    let m0 = RustMember::start("m0", cfg(), Some(coop_range()), &topic, &log).await;
    let m1 = RustMember::start("m1", cfg(), Some(coop_range()), &topic, &log).await;
    wait_log(
        &log,
        "two members on cooperative-sticky",
        Duration::from_secs(60),
        |l| balanced(l, &["m0", "m1"], 6),
    )
    .await;
    wait_protocol(
        &admin,
        &group,
        "cooperative-sticky",
        Duration::from_secs(30),
    )
    .await;
    let m2 = RustMember::start("m2", cfg(), Some(range()), &topic, &log).await;
    wait_log(
        &log,
        "three members on range",
        Duration::from_secs(60),
        |l| balanced(l, &["m0", "m1", "m2"], 4),
    )
    .await;
    wait_protocol(&admin, &group, "range", Duration::from_secs(30)).await;
    {
        // Range gives each member a contiguous block: with 12 partitions and 3 members,
        // partitions 0-3, 4-7 and 8-11 each have one owner.
        let l = log.lock().unwrap();
        for block in 0..3 {
            let owners: std::collections::BTreeSet<&String> = (block * 4..block * 4 + 4)
                .filter_map(|p| l.live.get(&p))
                .collect();
            assert_eq!(owners.len(), 1, "not a range assignment: {:?}", l.live);
        }
    }
    let mark = now_us();
    wait_log(&log, "all three consume", Duration::from_secs(30), |l| {
        ["m0", "m1", "m2"]
            .iter()
            .all(|m| l.deliveries.iter().any(|d| d.member == *m && d.t > mark))
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), producing)
        .await
        .expect("producer stops")
        .expect("producer task");
    let n = produced.load(Ordering::SeqCst);
    // The second group reads the topic from the start: every record once more.
    wait_log(
        &log,
        "every record consumed by the second group",
        Duration::from_secs(60),
        |l| {
            let mut seen = std::collections::BTreeSet::new();
            for d in &l.deliveries {
                if d.member.starts_with('m') {
                    seen.insert(d.value);
                }
            }
            seen.len() as u64 == n
        },
    )
    .await;
    for m in [m0, m1, m2] {
        m.close().await;
    }
    p.close().await.unwrap();
    let l = log.lock().unwrap();
    let violations = replay(&l.events);
    assert!(violations.is_empty(), "double ownership: {violations:#?}");
    assert!(l.errors.is_empty(), "errors: {:?}", l.errors);
}
