//! The pool core's invariants, with injected time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_client::ProducerRecord;
use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits {
        slots: 1,
        linger: Duration::from_millis(10),
        target_events: 3,
        max_events: 5,
        max_bytes: 1 << 20,
        commit_deadline: Duration::from_secs(5),
        max_attempts: 3,
        eager_when_idle: false,
    }
}

fn rec(tag: &str) -> ProducerRecord {
    ProducerRecord::new("out").value(tag.to_string())
}

fn attached(a: Attach) -> EventId {
    match a {
        Attach::Attached(e) => e,
        other => panic!("expected Attached, got {other:?}"),
    }
}

fn tags(records: &[ProducerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())
        .collect()
}

#[test]
fn an_offset_only_transaction_commits() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    let e = attached(c.attach(0, 41, t0));
    c.complete(e, Ok(vec![]));
    assert!(c.poll_action(t0).is_none(), "lingers first");
    let later = t0 + Duration::from_millis(10);
    match c.poll_action(later) {
        Some(Action::Commit {
            seq,
            begin,
            offsets,
            info,
            ..
        }) => {
            assert_eq!(seq, e.seq);
            assert!(begin, "nothing was sent: the commit begins the transaction");
            assert_eq!(offsets, BTreeMap::from([(0, 42)]));
            assert_eq!((info.events, info.records), (1, 0));
        }
        other => panic!("expected a commit, got {other:?}"),
    }
    c.commit_done(e.seq, CommitResult::Committed);
    assert!(c.is_idle());
    assert_eq!(c.committed(), (1, 1));
}

#[test]
fn the_open_transaction_closes_at_target_without_waiting_for_linger() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    for o in 0..3 {
        let e = attached(c.attach(1, o, t0));
        c.complete(e, Ok(vec![rec(&format!("r{o}"))]));
    }
    let Some(Action::Send { records, .. }) = c.poll_action(t0) else {
        panic!("the head sends as it goes")
    };
    assert_eq!(tags(&records), vec!["r0", "r1", "r2"]);
    assert!(matches!(c.poll_action(t0), Some(Action::Commit { .. })));
}

#[test]
fn only_the_head_sends_and_later_transactions_wait_for_its_commit() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    let a = attached(c.attach(0, 0, t0));
    c.complete(a, Ok(vec![rec("a")]));
    assert!(matches!(c.poll_action(t0), Some(Action::Send { .. })));
    let t1 = t0 + Duration::from_millis(10);
    let Some(Action::Commit { seq: first, .. }) = c.poll_action(t1) else {
        panic!("commit")
    };
    // While the first commits, events go to a second transaction, whose records wait.
    let b = attached(c.attach(0, 1, t1));
    assert_ne!(b.seq, first);
    c.complete(b, Ok(vec![rec("b")]));
    let t2 = t1 + Duration::from_millis(50);
    assert!(
        c.poll_action(t2).is_none(),
        "nothing before the head commits"
    );
    c.commit_done(first, CommitResult::Committed);
    let Some(Action::Send { seq, records, .. }) = c.poll_action(t2) else {
        panic!("now the second sends")
    };
    assert_eq!((seq, tags(&records)), (b.seq, vec!["b".to_string()]));
    let Some(Action::Commit { seq, offsets, .. }) = c.poll_action(t2) else {
        panic!("and commits (its linger passed)")
    };
    assert_eq!(seq, b.seq);
    assert_eq!(offsets, BTreeMap::from([(0, 2)]));
}

#[test]
fn a_retry_resends_every_record_in_order_then_fails_after_the_last_attempt() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    let e1 = attached(c.attach(0, 0, t0));
    let e2 = attached(c.attach(0, 1, t0));
    c.complete(e1, Ok(vec![rec("x"), rec("y")]));
    c.complete(e2, Ok(vec![rec("z")]));
    let t1 = t0 + Duration::from_millis(10);
    assert!(matches!(c.poll_action(t1), Some(Action::Send { .. })));
    assert!(matches!(c.poll_action(t1), Some(Action::Commit { .. })));
    for attempt in 1..3 {
        c.commit_done(e1.seq, CommitResult::Retry(format!("attempt {attempt}")));
        let Some(Action::Send { records, .. }) = c.poll_action(t1) else {
            panic!("re-send")
        };
        assert_eq!(tags(&records), vec!["x", "y", "z"]);
        assert!(matches!(c.poll_action(t1), Some(Action::Commit { .. })));
    }
    c.commit_done(e1.seq, CommitResult::Retry("third".into()));
    match c.poll_action(t1) {
        Some(Action::Fail(Error::Commit { attempts, last, .. })) => {
            assert_eq!((attempts, &*last), (3, "third"))
        }
        other => panic!("expected Fail, got {other:?}"),
    }
    assert!(c.poll_action(t1).is_none(), "reported once");
    assert_eq!(c.attach(0, 2, t1), Attach::Closed);
}

#[test]
fn intake_stops_at_the_event_limit_until_a_commit() {
    let t0 = Instant::now();
    let mut l = limits();
    l.target_events = 5;
    let mut c = PoolCore::new(l);
    let first = attached(c.attach(0, 0, t0));
    c.complete(first, Ok(vec![]));
    let Some(Action::Commit { seq, .. }) = c.poll_action(t0 + Duration::from_millis(10)) else {
        panic!("commit")
    };
    let mut ids = Vec::new();
    for o in 1..6 {
        ids.push(attached(c.attach(0, o, t0)));
    }
    assert_eq!(c.attach(0, 6, t0), Attach::Full);
    c.commit_done(seq, CommitResult::Committed);
    for e in ids {
        c.complete(e, Ok(vec![]));
    }
    assert!(matches!(c.poll_action(t0), Some(Action::Commit { .. })));
    assert!(matches!(c.attach(0, 6, t0), Attach::Attached(_)));
}

#[test]
fn a_drain_closes_the_transaction_of_its_partitions_at_once() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    let e = attached(c.attach(3, 7, t0));
    c.complete(e, Ok(vec![]));
    assert!(c.poll_action(t0).is_none());
    c.drain(&BTreeSet::from([2]));
    assert!(c.poll_action(t0).is_none(), "another partition's drain");
    c.drain(&BTreeSet::from([3]));
    assert!(c.holds(&BTreeSet::from([3])));
    assert!(matches!(c.poll_action(t0), Some(Action::Commit { .. })));
    c.commit_done(e.seq, CommitResult::Committed);
    assert!(!c.holds(&BTreeSet::from([3])));
}

#[test]
fn an_event_incomplete_past_the_commit_deadline_fails_the_core() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    let _slow = attached(c.attach(0, 0, t0));
    let t1 = t0 + Duration::from_millis(10);
    assert!(c.poll_action(t1).is_none(), "closed, waiting for the event");
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(5)));
    c.handle_timeout(t1 + Duration::from_secs(4));
    assert!(c.poll_action(t1).is_none());
    c.handle_timeout(t1 + Duration::from_secs(5));
    assert!(matches!(
        c.poll_action(t1),
        Some(Action::Fail(Error::SlowEvents {
            incomplete: 1,
            partition: 0,
            offset: 0,
            ..
        }))
    ));
}

#[test]
fn a_failed_event_fails_the_core_once() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    let e = attached(c.attach(0, 0, t0));
    c.complete(e, Err(Error::Stopped));
    match c.poll_action(t0) {
        Some(Action::Fail(r)) => assert!(matches!(r, Error::Stopped), "{r}"),
        other => panic!("{other:?}"),
    }
    assert!(c.poll_action(t0).is_none());
}

#[test]
fn after_a_loss_late_completions_are_ignored() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    let e = attached(c.attach(0, 0, t0));
    assert_eq!(c.lose_all(), 1);
    c.complete(e, Ok(vec![rec("late")]));
    assert!(c.is_idle());
    assert!(c.poll_action(t0 + Duration::from_secs(1)).is_none());
}

fn pool(slots: usize) -> PoolCore {
    let mut l = limits();
    l.slots = slots;
    PoolCore::new(l)
}

#[test]
fn a_later_transaction_sends_on_its_own_slot_while_the_head_commits() {
    let t0 = Instant::now();
    let mut c = pool(2);
    let a = attached(c.attach(0, 0, t0));
    c.complete(a, Ok(vec![rec("a")]));
    let Some(Action::Send {
        slot: s1, begin, ..
    }) = c.poll_action(t0)
    else {
        panic!("the head sends")
    };
    assert!(begin);
    let t1 = t0 + Duration::from_millis(10);
    let Some(Action::Commit { seq: first, .. }) = c.poll_action(t1) else {
        panic!("commit")
    };
    // Partition 1 is held by no older transaction: its records go out at once on slot 2.
    let b = attached(c.attach(1, 0, t1));
    c.complete(b, Ok(vec![rec("b")]));
    let Some(Action::Send {
        seq,
        slot: s2,
        begin,
        records,
    }) = c.poll_action(t1)
    else {
        panic!("the second transaction sends while the first commits")
    };
    assert_eq!(
        (seq, begin, tags(&records)),
        (b.seq, true, vec!["b".into()])
    );
    assert_ne!(s1, s2);
    // Partition 0 is owned by the committing head: its records wait.
    let c0 = attached(c.attach(0, 1, t1));
    c.complete(c0, Ok(vec![rec("c")]));
    assert!(c.poll_action(t1).is_none());
    c.commit_done(first, CommitResult::Committed);
    let Some(Action::Send {
        seq,
        begin,
        records,
        ..
    }) = c.poll_action(t1)
    else {
        panic!("ownership of partition 0 passed")
    };
    assert_eq!(
        (seq, begin, tags(&records)),
        (b.seq, false, vec!["c".into()])
    );
}

#[test]
fn a_transaction_without_a_slot_keeps_taking_events_and_closes_once_it_has_one() {
    let t0 = Instant::now();
    let mut c = pool(1);
    let a = attached(c.attach(0, 0, t0));
    c.complete(a, Ok(vec![]));
    let t1 = t0 + Duration::from_millis(10);
    let Some(Action::Commit { seq: first, .. }) = c.poll_action(t1) else {
        panic!("commit")
    };
    let b = attached(c.attach(0, 1, t1));
    c.complete(b, Ok(vec![]));
    // Its linger passes, but it has no slot: it stays open and takes more.
    let t2 = t1 + Duration::from_millis(30);
    assert!(c.poll_action(t2).is_none());
    assert_eq!(c.poll_timeout(), None, "no linger timer without a slot");
    let d = attached(c.attach(0, 2, t2));
    assert_eq!(d.seq, b.seq, "same transaction");
    c.complete(d, Ok(vec![]));
    c.commit_done(first, CommitResult::Committed);
    let Some(Action::Commit {
        seq, offsets, info, ..
    }) = c.poll_action(t2)
    else {
        panic!("now it holds the slot and its linger has passed")
    };
    assert_eq!((seq, info.events), (b.seq, 2));
    assert_eq!(offsets, BTreeMap::from([(0, 3)]));
}

#[test]
fn slots_rotate_so_the_longest_free_producer_begins_next() {
    let t0 = Instant::now();
    let mut c = pool(3);
    let mut used = Vec::new();
    let mut now = t0;
    for i in 0..6 {
        let e = attached(c.attach(0, i, now));
        c.complete(e, Ok(vec![]));
        now += Duration::from_millis(10);
        let Some(Action::Commit { seq, slot, .. }) = c.poll_action(now) else {
            panic!("commit")
        };
        used.push(slot);
        c.commit_done(seq, CommitResult::Committed);
    }
    assert_eq!(used, vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn eager_when_idle_closes_at_once_when_nothing_is_ahead() {
    let t0 = Instant::now();
    let mut l = limits();
    l.slots = 3;
    l.eager_when_idle = true;
    let mut c = PoolCore::new(l);
    let a = attached(c.attach(0, 0, t0));
    c.complete(a, Ok(vec![]));
    let Some(Action::Commit { seq: first, .. }) = c.poll_action(t0) else {
        panic!("no linger when idle")
    };
    let b = attached(c.attach(1, 0, t0));
    c.complete(b, Ok(vec![]));
    assert!(
        c.poll_action(t0).is_none(),
        "a commit is out: the next one lingers"
    );
    c.commit_done(first, CommitResult::Committed);
    assert!(matches!(c.poll_action(t0), Some(Action::Commit { .. })));
}

#[test]
fn a_failed_send_of_a_later_transaction_resends_it_on_the_same_slot() {
    let t0 = Instant::now();
    let mut c = pool(2);
    let a = attached(c.attach(0, 0, t0));
    c.complete(a, Ok(vec![]));
    let t1 = t0 + Duration::from_millis(10);
    let Some(Action::Commit { seq: first, .. }) = c.poll_action(t1) else {
        panic!("commit")
    };
    let b = attached(c.attach(1, 0, t1));
    c.complete(b, Ok(vec![rec("b1")]));
    let Some(Action::Send { slot, .. }) = c.poll_action(t1) else {
        panic!("send")
    };
    c.commit_done(b.seq, CommitResult::Retry("send failed".into()));
    let Some(Action::Send {
        slot: again,
        begin,
        records,
        ..
    }) = c.poll_action(t1)
    else {
        panic!("re-send")
    };
    assert_eq!(
        (again, begin, tags(&records)),
        (slot, true, vec!["b1".into()])
    );
    assert!(
        matches!(c.attach(1, 1, t1), Attach::Attached(_)),
        "the head is untouched"
    );
    c.commit_done(first, CommitResult::Committed);
}

#[test]
fn a_commit_reported_out_of_order_fails_the_core() {
    let t0 = Instant::now();
    let mut c = pool(2);
    let a = attached(c.attach(0, 0, t0));
    c.complete(a, Ok(vec![]));
    c.commit_done(a.seq, CommitResult::Committed);
    assert!(matches!(c.poll_action(t0), Some(Action::Fail(_))));
}

#[derive(Debug, Clone)]
enum Op {
    Attach(i32),
    /// Completes the oldest pending event of a partition.
    Complete(i32),
    Tick(u8),
    /// Answers the outstanding commit: committed, or retry.
    Commit(bool),
    /// A send of the n-th transaction holding a slot fails (the driver aborted its slot).
    SendFails(u8),
    Drain(i32),
    Lose,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0i32..3).prop_map(Op::Attach),
        4 => (0i32..3).prop_map(Op::Complete),
        2 => (0u8..20).prop_map(Op::Tick),
        3 => any::<bool>().prop_map(Op::Commit),
        1 => (0u8..4).prop_map(Op::SendFails),
        1 => (0i32..3).prop_map(Op::Drain),
        1 => Just(Op::Lose),
    ]
}

/// What a test driver knows of one transaction.
#[derive(Default, Debug)]
struct Seen {
    slot: Option<usize>,
    /// Records sent in the current attempt.
    sent: Vec<String>,
    /// Records of its completed events, per partition, in completion order.
    expected: Vec<String>,
    begun: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Random events, outputs, completion orders, clock ticks, commit results, failed sends,
    /// drains and losses, over 1-4 slots (with and without `eager_when_idle`):
    /// - transactions commit in sequence order, and only the head's commit is ever out (so
    ///   TxnOffsetCommits are sent in commit order);
    /// - per input partition, the records of committed attempts, in commit order, are its
    ///   events' records in event order, each exactly once (so nothing committed is lost or
    ///   doubled);
    /// - a transaction sends records of a partition only when no older uncommitted
    ///   transaction holds that partition;
    /// - a slot carries one transaction at a time; `begin` comes exactly once per attempt;
    /// - committed offsets per input partition only grow;
    /// - a transaction whose attempt failed re-sends all its records before it commits.
    #[test]
    fn the_pool_keeps_its_invariants(
        slots in 1usize..5,
        eager in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let mut now = Instant::now();
        let mut l = limits();
        l.slots = slots;
        l.eager_when_idle = eager;
        let mut c = PoolCore::new(l);
        let mut next_offset = [0i64; 3];
        // Per partition: attached, not yet completed events.
        let mut pending: [VecDeque<(EventId, i64)>; 3] = Default::default();
        let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
        // Uncommitted transactions holding each partition.
        let mut holding: [BTreeSet<u64>; 3] = Default::default();
        let mut committing: Option<(u64, BTreeMap<i32, i64>)> = None;
        let mut last_committed_seq = 0u64;
        let mut committed_offsets = [0i64; 3];
        // Per partition: the committed record stream, and the event order it must equal.
        let mut committed_stream: [Vec<String>; 3] = Default::default();
        let mut event_order: [Vec<String>; 3] = Default::default();
        for op in ops {
            match op {
                Op::Attach(p) => {
                    let o = next_offset[p as usize];
                    if let Attach::Attached(e) = c.attach(p, o, now) {
                        prop_assert_eq!(e.partition, p);
                        next_offset[p as usize] += 1;
                        pending[p as usize].push_back((e, o));
                        holding[p as usize].insert(e.seq);
                        seen.entry(e.seq).or_default();
                    }
                }
                Op::Complete(p) => {
                    if let Some((e, o)) = pending[p as usize].pop_front() {
                        let tag = format!("{p}:{o}");
                        seen.entry(e.seq).or_default().expected.push(tag.clone());
                        event_order[p as usize].push(tag.clone());
                        c.complete(e, Ok(vec![rec(&tag)]));
                    }
                }
                Op::Tick(ms) => {
                    now += Duration::from_millis(ms as u64);
                    c.handle_timeout(now);
                }
                Op::Commit(ok) => {
                    if let Some((seq, offsets)) = committing.take() {
                        if ok {
                            prop_assert!(seq > last_committed_seq);
                            let s = seen.remove(&seq).unwrap();
                            let mut sent = s.sent.clone();
                            let mut expected = s.expected.clone();
                            sent.sort();
                            expected.sort();
                            prop_assert_eq!(sent, expected, "the attempt sent all its records");
                            for tag in &s.sent {
                                let p: usize = tag[..1].parse().unwrap();
                                committed_stream[p].push(tag.clone());
                            }
                            for (p, o) in offsets {
                                prop_assert!(o > committed_offsets[p as usize]);
                                committed_offsets[p as usize] = o;
                            }
                            for h in holding.iter_mut() {
                                h.remove(&seq);
                            }
                            last_committed_seq = seq;
                            c.commit_done(seq, CommitResult::Committed);
                        } else {
                            let s = seen.get_mut(&seq).unwrap();
                            s.sent.clear();
                            s.begun = false;
                            c.commit_done(seq, CommitResult::Retry("test".into()));
                        }
                    }
                }
                Op::SendFails(n) => {
                    let victim = seen
                        .iter()
                        .filter(|(seq, s)| {
                            s.begun && committing.as_ref().map(|(c, _)| c) != Some(seq)
                        })
                        .nth(n as usize)
                        .map(|(seq, _)| *seq);
                    if let Some(seq) = victim {
                        let s = seen.get_mut(&seq).unwrap();
                        s.sent.clear();
                        s.begun = false;
                        c.commit_done(seq, CommitResult::Retry("send failed".into()));
                    }
                }
                Op::Drain(p) => c.drain(&BTreeSet::from([p])),
                Op::Lose => {
                    committing = None;
                    c.lose_all();
                    seen.clear();
                    for h in holding.iter_mut() {
                        h.clear();
                    }
                    // Lost events are re-read from the committed offsets.
                    for p in 0..3 {
                        pending[p].clear();
                        next_offset[p] = committed_offsets[p];
                        event_order[p].clone_from(&committed_stream[p]);
                    }
                }
            }
            while let Some(a) = c.poll_action(now) {
                match a {
                    Action::Send { seq, slot, begin, records } => {
                        prop_assert!(seq > last_committed_seq);
                        prop_assert!(slot < slots);
                        for (other, s) in &seen {
                            if *other != seq && s.slot == Some(slot) {
                                prop_assert!(false, "slot {} carries {} and {}", slot, other, seq);
                            }
                        }
                        let s = seen.get_mut(&seq).unwrap();
                        prop_assert_eq!(begin, !s.begun, "begin once per attempt");
                        s.begun = true;
                        s.slot = Some(slot);
                        for tag in tags(&records) {
                            let p: usize = tag[..1].parse().unwrap();
                            prop_assert!(
                                holding[p].iter().all(|h| *h >= seq),
                                "{} sent records of partition {} held by an older transaction", seq, p
                            );
                            s.sent.push(tag);
                        }
                    }
                    Action::Commit { seq, slot, begin, offsets, .. } => {
                        prop_assert!(committing.is_none(), "one commit at a time");
                        let oldest = seen.keys().next().copied();
                        prop_assert_eq!(Some(seq), oldest, "only the head commits");
                        let s = seen.get_mut(&seq).unwrap();
                        prop_assert_eq!(begin, !s.begun);
                        s.begun = true;
                        if let Some(prev) = s.slot {
                            prop_assert_eq!(prev, slot);
                        }
                        s.slot = Some(slot);
                        committing = Some((seq, offsets));
                    }
                    Action::Fail(_) => {
                        prop_assert!(c.poll_action(now).is_none());
                        return Ok(());
                    }
                }
            }
        }
        for p in 0..3 {
            let n = committed_stream[p].len();
            prop_assert_eq!(&committed_stream[p][..], &event_order[p][..n],
                "partition {}: committed records are a prefix of the event order", p);
        }
    }
}
