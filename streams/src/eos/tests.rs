//! The pool core's invariants, with injected time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_client::ProducerRecord;
use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits {
        linger: Duration::from_millis(10),
        target_events: 3,
        max_events: 5,
        max_bytes: 1 << 20,
        commit_deadline: Duration::from_secs(5),
        max_attempts: 3,
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
            offsets,
            events,
            records,
        }) => {
            assert_eq!(seq, e.seq);
            assert_eq!(offsets, BTreeMap::from([(0, 42)]));
            assert_eq!((events, records), (1, 0));
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
    let Some(Action::Send { seq, records }) = c.poll_action(t2) else {
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
        Some(Action::Fail(reason)) => assert!(reason.contains("3 times"), "{reason}"),
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
    assert!(matches!(c.poll_action(t1), Some(Action::Fail(_))));
}

#[test]
fn a_failed_event_fails_the_core_once() {
    let t0 = Instant::now();
    let mut c = PoolCore::new(limits());
    let e = attached(c.attach(0, 0, t0));
    c.complete(e, Err("boom".into()));
    match c.poll_action(t0) {
        Some(Action::Fail(r)) => assert_eq!(r, "boom"),
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

#[derive(Debug, Clone)]
enum Op {
    Attach(i32),
    CompleteOldest(u8),
    Tick(u8),
    Commit(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i32..3).prop_map(Op::Attach),
        (0u8..3).prop_map(Op::CompleteOldest),
        (0u8..20).prop_map(Op::Tick),
        any::<bool>().prop_map(Op::Commit),
    ]
}

proptest! {
    /// Random attaches, completions, clock ticks and commit results: transactions commit in
    /// sequence; per input partition the committed offsets only grow; the records sent for a
    /// transaction, per attempt, are exactly its completed records in completion order; records
    /// of a transaction are sent only after every earlier transaction committed; every
    /// committed event was attached exactly once.
    #[test]
    fn commits_are_ordered_and_records_sent_once_per_attempt(ops in proptest::collection::vec(op(), 1..200)) {
        let mut now = Instant::now();
        let mut c = PoolCore::new(limits());
        let mut next_offset = [0i64; 3];
        let mut pending: Vec<(EventId, i32, i64)> = Vec::new();
        let mut expected: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut sent: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut committing: Option<(u64, BTreeMap<i32, i64>)> = None;
        let mut last_committed_seq = 0u64;
        let mut committed_offsets = [0i64; 3];
        for op in ops {
            match op {
                Op::Attach(p) => {
                    let o = next_offset[p as usize];
                    if let Attach::Attached(e) = c.attach(p, o, now) {
                        next_offset[p as usize] += 1;
                        pending.push((e, p, o));
                    }
                }
                Op::CompleteOldest(n) => {
                    for _ in 0..n {
                        if pending.is_empty() { break; }
                        let (e, p, o) = pending.remove(0);
                        let tag = format!("{p}:{o}");
                        expected.entry(e.seq).or_default().push(tag.clone());
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
                            // Everything completed for it was sent in this attempt.
                            prop_assert_eq!(sent.get(&seq).cloned().unwrap_or_default(),
                                expected.get(&seq).cloned().unwrap_or_default());
                            for (p, o) in offsets {
                                prop_assert!(o > committed_offsets[p as usize]);
                                committed_offsets[p as usize] = o;
                            }
                            last_committed_seq = seq;
                            c.commit_done(seq, CommitResult::Committed);
                        } else {
                            sent.remove(&seq);
                            c.commit_done(seq, CommitResult::Retry("test".into()));
                        }
                    }
                }
            }
            while let Some(a) = c.poll_action(now) {
                match a {
                    Action::Send { seq, records } => {
                        prop_assert!(seq > last_committed_seq);
                        prop_assert!(committing.is_none(), "sends only between commits");
                        sent.entry(seq).or_default().extend(tags(&records));
                    }
                    Action::Commit { seq, offsets, .. } => {
                        prop_assert!(committing.is_none());
                        committing = Some((seq, offsets));
                    }
                    Action::Fail(_) => {
                        // Too many retries: allowed; nothing more happens.
                        prop_assert!(c.poll_action(now).is_none());
                        return Ok(());
                    }
                }
                if committing.is_some() { break; }
            }
        }
    }
}
