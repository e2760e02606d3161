use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::sticky::{decode_sticky_user_data, encode_sticky_user_data};
use super::*;

fn tp(t: &str, p: i32) -> TopicPartition {
    TopicPartition::new(t, p)
}

fn member(id: &str, sub: Subscription) -> GroupMember {
    GroupMember {
        member_id: id.to_string(),
        instance_id: None,
        subscription: sub,
    }
}

fn balancers() -> Vec<Box<dyn Balancer>> {
    vec![
        Box::new(RangeBalancer),
        Box::new(RoundRobinBalancer),
        Box::new(StickyBalancer),
        Box::new(CooperativeStickyBalancer),
    ]
}

/// Every partition of a subscribed topic exactly once, only to subscribers, every member present.
fn check_valid(
    members: &[GroupMember],
    topics: &BTreeMap<String, i32>,
    out: &BTreeMap<String, Assignment>,
    complete: bool,
) {
    assert_eq!(out.len(), members.len());
    let mut seen = BTreeSet::new();
    for m in members {
        for p in &out[&m.member_id].partitions {
            assert!(
                m.subscription.topics.contains(&p.topic),
                "{p} to non-subscriber"
            );
            assert!(
                (0..topics[&p.topic]).contains(&p.partition),
                "{p} does not exist"
            );
            assert!(seen.insert(p.clone()), "{p} assigned twice");
        }
    }
    if complete {
        for (t, n) in topics {
            if members.iter().any(|m| m.subscription.topics.contains(t)) {
                for p in 0..*n {
                    assert!(seen.contains(&tp(t, p)), "{t}-{p} unassigned");
                }
            }
        }
    }
}

fn counts(out: &BTreeMap<String, Assignment>) -> (usize, usize) {
    let c: Vec<usize> = out.values().map(|a| a.partitions.len()).collect();
    (
        c.iter().copied().min().unwrap_or(0),
        c.iter().copied().max().unwrap_or(0),
    )
}

#[test]
fn wire_roundtrip_all_versions() {
    let sub = Subscription {
        topics: vec!["a".into(), "b".into()],
        user_data: Some(Bytes::from_static(b"xyz")),
        owned_partitions: vec![tp("a", 0), tp("a", 2), tp("b", 1)],
        generation_id: 7,
        rack_id: Some("r1".into()),
    };
    for v in 0..=3i16 {
        let back = Subscription::decode(&sub.encode(v).unwrap()).unwrap();
        assert_eq!(back.topics, sub.topics);
        assert_eq!(back.user_data, sub.user_data);
        assert_eq!(
            back.owned_partitions,
            if v >= 1 {
                sub.owned_partitions.clone()
            } else {
                vec![]
            }
        );
        assert_eq!(back.generation_id, if v >= 2 { 7 } else { -1 });
        assert_eq!(
            back.rack_id,
            if v >= 3 { sub.rack_id.clone() } else { None }
        );
    }
    let a = Assignment {
        partitions: vec![tp("x", 3), tp("y", 0)],
        user_data: None,
    };
    for v in 0..=3i16 {
        assert_eq!(Assignment::decode(&a.encode(v).unwrap()).unwrap(), a);
    }
}

#[test]
fn newer_version_read_as_newest_known() {
    let sub = Subscription {
        topics: vec!["t".into()],
        generation_id: 3,
        ..Default::default()
    };
    let mut bytes = sub.encode(3).unwrap().to_vec();
    bytes[0..2].copy_from_slice(&9i16.to_be_bytes());
    bytes.extend_from_slice(b"future fields");
    let back = Subscription::decode(&bytes).unwrap();
    assert_eq!(back.topics, vec!["t".to_string()]);
    assert_eq!(back.generation_id, 3);
}

#[test]
fn hostile_bytes_are_errors() {
    assert!(Subscription::decode(&[]).is_err());
    assert!(Subscription::decode(&[0]).is_err());
    assert!(matches!(
        Subscription::decode(&[0xff, 0xff, 0, 0, 0, 0]),
        Err(BalancerError::UnsupportedVersion(-1))
    ));
    // A topic count of i32::MAX with nothing behind it.
    assert!(Subscription::decode(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
    assert!(Assignment::decode(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_err());
    assert!(Assignment::decode(&[0, 0, 0, 0, 0, 1, 0xff, 0xff]).is_err());
    let (p, g) = decode_sticky_user_data(&[0x7f, 0xff, 0xff, 0xff]);
    assert!(p.is_empty() && g.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Subscription::decode(&bytes);
        let _ = Assignment::decode(&bytes);
        let _ = decode_sticky_user_data(&bytes);
    }
}

#[test]
fn sticky_user_data_roundtrip() {
    let owned = vec![tp("a", 1), tp("b", 0), tp("a", 3)];
    let (p, g) = decode_sticky_user_data(&encode_sticky_user_data(&owned, 12));
    assert_eq!(g, Some(12));
    assert_eq!(p, vec![tp("a", 1), tp("a", 3), tp("b", 0)]);
}

#[test]
fn choose_protocol_rules() {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        choose_protocol(&[v(&["cooperative-sticky", "range"]), v(&["range"])]).as_deref(),
        Some("range")
    );
    assert_eq!(
        choose_protocol(&[
            v(&["cooperative-sticky", "range"]),
            v(&["cooperative-sticky", "range"])
        ])
        .as_deref(),
        Some("cooperative-sticky")
    );
    // Most votes wins over the leader's preference.
    assert_eq!(
        choose_protocol(&[v(&["a", "b"]), v(&["b", "a"]), v(&["b", "a"])]).as_deref(),
        Some("b")
    );
    assert_eq!(choose_protocol(&[v(&["a"]), v(&["b"])]), None);
    assert_eq!(choose_protocol::<String>(&[]), None);
    let bs = balancers();
    let refs: Vec<&dyn Balancer> = bs.iter().map(|b| b.as_ref()).collect();
    assert_eq!(common_protocol(&refs), RebalanceProtocol::Eager);
    assert_eq!(
        common_protocol(&[&CooperativeStickyBalancer as &dyn Balancer]),
        RebalanceProtocol::Cooperative
    );
}

#[test]
fn range_orders_static_members_first() {
    let topics: BTreeMap<String, i32> = [("t".to_string(), 3)].into();
    let sub = Subscription {
        topics: vec!["t".into()],
        ..Default::default()
    };
    let mut a = member("a", sub.clone());
    let mut b = member("b", sub.clone());
    let c = member("c", sub);
    a.instance_id = Some("z".into());
    b.instance_id = Some("y".into());
    let out = RangeBalancer.assign(&[a, b, c], &topics).unwrap();
    assert_eq!(out["b"].partitions, vec![tp("t", 0)]);
    assert_eq!(out["a"].partitions, vec![tp("t", 1)]);
    assert_eq!(out["c"].partitions, vec![tp("t", 2)]);
}

#[test]
fn cooperative_moves_take_two_rounds() {
    let topics: BTreeMap<String, i32> = [("t".to_string(), 4)].into();
    let bal = CooperativeStickyBalancer;
    let names = vec!["t".to_string()];
    let all: Vec<TopicPartition> = (0..4).map(|p| tp("t", p)).collect();
    // Round 1: A owns everything (generation 1), B joins.
    let members = vec![
        member("A", bal.member_metadata(&names, &all, 1)),
        member("B", bal.member_metadata(&names, &[], -1)),
    ];
    let r1 = bal.assign(&members, &topics).unwrap();
    check_valid(&members, &topics, &r1, false);
    assert_eq!(r1["A"].partitions.len(), 2);
    assert!(
        r1["B"].partitions.is_empty(),
        "moving partitions are revoked first"
    );
    // Round 2: A owns its share; B gets the revoked ones.
    let members = vec![
        member("A", bal.member_metadata(&names, &r1["A"].partitions, 2)),
        member("B", bal.member_metadata(&names, &[], 2)),
    ];
    let r2 = bal.assign(&members, &topics).unwrap();
    check_valid(&members, &topics, &r2, true);
    assert_eq!(r2["A"].partitions, r1["A"].partitions);
    let moved: BTreeSet<_> = all
        .iter()
        .filter(|p| !r1["A"].partitions.contains(p))
        .cloned()
        .collect();
    assert_eq!(
        r2["B"].partitions.iter().cloned().collect::<BTreeSet<_>>(),
        moved
    );
}

#[test]
fn same_generation_double_claim_is_nobodys() {
    let topics: BTreeMap<String, i32> = [("t".to_string(), 2)].into();
    let bal = CooperativeStickyBalancer;
    let names = vec!["t".to_string()];
    let members = vec![
        member(
            "A",
            bal.member_metadata(&names, &[tp("t", 0), tp("t", 1)], 3),
        ),
        member("B", bal.member_metadata(&names, &[tp("t", 0)], 3)),
    ];
    let out = bal.assign(&members, &topics).unwrap();
    check_valid(&members, &topics, &out, false);
    // t-0 was claimed twice in one generation: it is handed out only after a revocation round.
    assert!(out.values().all(|a| !a.partitions.contains(&tp("t", 0))));
    // A higher generation wins.
    let members = vec![
        member(
            "A",
            bal.member_metadata(&names, &[tp("t", 0), tp("t", 1)], 2),
        ),
        member("B", bal.member_metadata(&names, &[tp("t", 0)], 3)),
    ];
    let out = bal.assign(&members, &topics).unwrap();
    assert_eq!(out["B"].partitions, vec![tp("t", 0)]);
    assert_eq!(out["A"].partitions, vec![tp("t", 1)]);
}

/// A random group: topic partition counts, members' subscriptions, and a previous assignment.
#[derive(Debug, Clone)]
struct Group {
    topics: BTreeMap<String, i32>,
    subs: Vec<Vec<String>>,
}

fn group_strategy(equal: bool) -> impl Strategy<Value = Group> {
    (
        proptest::collection::vec(0i32..12, 1..5),
        1usize..8,
        proptest::collection::vec(proptest::collection::vec(any::<bool>(), 5), 8),
    )
        .prop_map(move |(counts, n, masks)| {
            let topics: BTreeMap<String, i32> = counts
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("t{i}"), *c))
                .collect();
            let names: Vec<String> = topics.keys().cloned().collect();
            let subs = (0..n)
                .map(|m| {
                    let mut s: Vec<String> = names
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| equal || masks[m][*i])
                        .map(|(_, t)| t.clone())
                        .collect();
                    if s.is_empty() {
                        s.push(names[m % names.len()].clone());
                    }
                    s
                })
                .collect();
            Group { topics, subs }
        })
}

fn members_of(
    bal: &dyn Balancer,
    g: &Group,
    prev: &BTreeMap<String, Assignment>,
    gen: i32,
) -> Vec<GroupMember> {
    g.subs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let id = format!("member-{i}");
            let owned = prev
                .get(&id)
                .map(|a| a.partitions.clone())
                .unwrap_or_default();
            member(
                &id,
                bal.member_metadata(s, &owned, if owned.is_empty() { -1 } else { gen }),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn all_balancers_valid(g in group_strategy(false)) {
        for bal in balancers() {
            let members = members_of(bal.as_ref(), &g, &BTreeMap::new(), -1);
            let out = bal.assign(&members, &g.topics).unwrap();
            check_valid(&members, &g.topics, &out, true);
        }
    }

    #[test]
    fn equal_subscriptions_balanced(g in group_strategy(true)) {
        for bal in balancers() {
            if bal.name() == "range" { continue; } // range balances per topic only
            let members = members_of(bal.as_ref(), &g, &BTreeMap::new(), -1);
            let out = bal.assign(&members, &g.topics).unwrap();
            let (min, max) = counts(&out);
            prop_assert!(max - min <= 1, "{}: {min}..{max}", bal.name());
        }
    }

    /// Sticky: after a member leaves or joins, partitions of the remaining members move only as
    /// far as balance needs; a repeated rebalance with no change moves nothing.
    #[test]
    fn sticky_is_sticky(g in group_strategy(false), equal in any::<bool>(), drop_first in any::<bool>()) {
        let mut g = g;
        if equal {
            let all: Vec<String> = g.topics.keys().cloned().collect();
            for s in &mut g.subs { *s = all.clone(); }
        }
        let bals: Vec<Box<dyn Balancer>> = vec![Box::new(StickyBalancer), Box::new(CooperativeStickyBalancer)];
        for bal in bals {
            let cooperative = bal.protocol() == RebalanceProtocol::Cooperative;
            let m1 = members_of(bal.as_ref(), &g, &BTreeMap::new(), -1);
            let r1 = bal.assign(&m1, &g.topics).unwrap();
            // No change: nothing moves.
            let m2 = members_of(bal.as_ref(), &g, &r1, 1);
            let r2 = bal.assign(&m2, &g.topics).unwrap();
            prop_assert_eq!(sorted(&r1), sorted(&r2));
            // Membership change.
            let mut g3 = g.clone();
            if drop_first && g3.subs.len() > 1 { g3.subs.remove(0); } else { g3.subs.push(g.topics.keys().cloned().collect()); }
            let mut prev = r1.clone();
            if drop_first && g.subs.len() > 1 {
                // Ids shift when member-0 leaves: rename to keep owners.
                prev = (1..g.subs.len()).map(|i| (format!("member-{}", i - 1), r1[&format!("member-{i}")].clone())).collect();
            }
            let m3 = members_of(bal.as_ref(), &g3, &prev, 1);
            let mut r3 = bal.assign(&m3, &g3.topics).unwrap();
            check_valid(&m3, &g3.topics, &r3, !cooperative);
            if cooperative {
                // Second round completes the move.
                let m4 = members_of(bal.as_ref(), &g3, &r3, 2);
                let r4 = bal.assign(&m4, &g3.topics).unwrap();
                check_valid(&m4, &g3.topics, &r4, true);
                for (id, a) in &r3 {
                    for p in &a.partitions { prop_assert!(r4[id].partitions.contains(p), "{} lost {} in round 2", id, p); }
                }
                r3 = r4;
            }
            if equal {
                // Stickiness: a member never gives up a partition it had while receiving a new
                // one (it keeps min(old, new) of its old partitions).
                let (_, max) = counts(&r3);
                for (id, a) in &r3 {
                    if let Some(old) = prev.get(id) {
                        let kept = old.partitions.iter().filter(|p| a.partitions.contains(p)).count();
                        prop_assert!(kept >= old.partitions.len().min(a.partitions.len()),
                            "{} {}: kept {} of {} (now {}, max {})", bal.name(), id, kept, old.partitions.len(), a.partitions.len(), max);
                    }
                }
            } else {
                // Different subscriptions may need chains of moves (A gives a t1 partition to B
                // and takes a t0 one from C), but never a swap of one topic's partitions between
                // two members.
                let mut moves = BTreeSet::new();
                for (id, a) in &r3 {
                    for p in &a.partitions {
                        if let Some((from, _)) = prev.iter().find(|(o, pa)| *o != id && pa.partitions.contains(p)) {
                            moves.insert((from.clone(), id.clone(), p.topic.clone()));
                        }
                    }
                }
                for (f, t, topic) in &moves {
                    prop_assert!(!moves.contains(&(t.clone(), f.clone(), topic.clone())), "{} swap of {} between {} and {}", bal.name(), topic, f, t);
                }
            }
            if equal {
                let (min, max) = counts(&r3);
                prop_assert!(max - min <= 1);
            }
        }
    }
}

fn sorted(out: &BTreeMap<String, Assignment>) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    out.iter()
        .map(|(k, v)| (k.clone(), v.partitions.iter().cloned().collect()))
        .collect()
}
