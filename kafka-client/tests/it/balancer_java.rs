//! Differential checks of the balancers against Apache Kafka's Java assignors
//! (`RangeAssignor`, `RoundRobinAssignor`, `StickyAssignor`, `CooperativeStickyAssignor`) and of
//! the embedded consumer protocol codec against Java's `ConsumerProtocol`. Needs `java`, `javac`
//! and the Kafka jars (fetched by testkit); fails, never skips, when they are missing.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_client::group::balancer::{
    Assignment, Balancer, CooperativeStickyBalancer, GroupMember, RangeBalancer,
    RoundRobinBalancer, StickyBalancer, Subscription,
};
use kafka_client::rng::{RandomSource, SeededRng};
use kafka_client::TopicPartition;

use crate::jvm;

fn run_java(input: String) -> String {
    let out = jvm::run("AssignorVectors", &[], input.as_bytes());
    // Java's logging may share stdout: keep only the protocol's lines.
    out.lines()
        .filter(|l| {
            *l == "E"
                || ["A ", "J ", "topics=", "parts=", "error"]
                    .iter()
                    .any(|p| l.starts_with(p))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "empty" || s == "-" {
        return Vec::new();
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn pick(rng: &mut SeededRng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// One generated group.
struct Scenario {
    topics: BTreeMap<String, i32>,
    members: Vec<GroupMember>,
    equal: bool,
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn scenario(rng: &mut SeededRng, bal: &dyn Balancer, statics: bool) -> Scenario {
    let ntopics = 1 + pick(rng, 4);
    let topics: BTreeMap<String, i32> = (0..ntopics)
        .map(|i| {
            let name = if rng.below(3) == 0 {
                format!("Topic_{}", pick(rng, 100))
            } else {
                format!("t{i}")
            };
            (name, 1 + rng.below(12) as i32)
        })
        .collect();
    let names: Vec<String> = topics.keys().cloned().collect();
    let equal = rng.below(2) == 0;
    let max_members = if rng.below(4) == 0 { 12 } else { 6 };
    let nmembers = 1 + pick(rng, max_members);
    let mut ids = BTreeSet::new();
    let mut subs_topics: Vec<Vec<String>> = Vec::new();
    while ids.len() < nmembers {
        // Java-like member ids: "<client id>-<uuid-ish>".
        let suffix: String = (0..1 + pick(rng, 10))
            .map(|_| ALNUM[pick(rng, ALNUM.len())] as char)
            .collect();
        let id = format!("consumer-{}-{suffix}", pick(rng, 5));
        if !ids.insert(id) {
            continue;
        }
        let mut t: Vec<String> = if equal {
            names.clone()
        } else {
            names
                .iter()
                .filter(|_| rng.below(2) == 0)
                .cloned()
                .collect()
        };
        if t.is_empty() {
            t.push(names[pick(rng, names.len())].clone());
        }
        if rng.below(10) == 0 {
            // A topic that does not exist (yet): ignored by every assignor.
            t.push("ghost".into());
            if equal {
                // Keep the subscription sets equal.
                for s in subs_topics.iter_mut() {
                    if !s.contains(&"ghost".to_string()) {
                        s.push("ghost".into());
                    }
                }
            }
        }
        subs_topics.push(t);
    }
    if equal && subs_topics.iter().any(|s| s.contains(&"ghost".to_string())) {
        for s in subs_topics.iter_mut() {
            if !s.contains(&"ghost".to_string()) {
                s.push("ghost".into());
            }
        }
    }
    // Shuffle topic order inside each subscription (sets, order must not matter).
    for s in subs_topics.iter_mut() {
        for i in (1..s.len()).rev() {
            let j = pick(rng, i + 1);
            s.swap(i, j);
        }
    }
    // Previous ownership: most partitions owned by someone (sometimes a member not subscribed,
    // sometimes claimed twice), generations mostly current, some stale or unknown.
    let all: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| TopicPartition::new(t.as_str(), p)))
        .collect();
    let mut owned: Vec<Vec<TopicPartition>> = vec![Vec::new(); nmembers];
    let fresh = rng.below(5) == 0;
    if !fresh {
        for tp in &all {
            if rng.below(10) < 7 {
                let subscribers: Vec<usize> = (0..nmembers)
                    .filter(|&m| subs_topics[m].contains(&tp.topic) || rng.below(8) == 0)
                    .collect();
                if let Some(&m) = subscribers.get(pick(rng, subscribers.len().max(1))) {
                    owned[m].push(tp.clone());
                }
                if rng.below(12) == 0 {
                    owned[pick(rng, nmembers)].push(tp.clone());
                }
            }
        }
    }
    let ids: Vec<String> = {
        let mut v: Vec<String> = ids.into_iter().collect();
        for i in (1..v.len()).rev() {
            let j = pick(rng, i + 1);
            v.swap(i, j);
        }
        v
    };
    let members = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let mut own = std::mem::take(&mut owned[i]);
            own.dedup();
            let generation = if own.is_empty() && rng.below(2) == 0 {
                -1
            } else {
                match rng.below(6) {
                    0 => 3,
                    1 => -1,
                    _ => 4,
                }
            };
            GroupMember {
                member_id: id,
                instance_id: (statics && rng.below(2) == 0)
                    .then(|| format!("instance-{}", pick(rng, 1000))),
                subscription: bal.member_metadata(&subs_topics[i], &own, generation),
            }
        })
        .collect::<Vec<_>>();
    // Static instance ids must be distinct.
    let mut seen = BTreeSet::new();
    let members = members
        .into_iter()
        .map(|mut m| {
            if let Some(inst) = &m.instance_id {
                if !seen.insert(inst.clone()) {
                    m.instance_id = None;
                }
            }
            m
        })
        .collect();
    Scenario {
        topics,
        members,
        equal,
    }
}

fn sets(out: &BTreeMap<String, Assignment>) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    out.iter()
        .map(|(k, a)| (k.clone(), a.partitions.iter().cloned().collect()))
        .collect()
}

fn check_valid(s: &Scenario, out: &BTreeMap<String, Assignment>, complete: bool) {
    let mut seen = BTreeSet::new();
    for m in &s.members {
        for p in &out[&m.member_id].partitions {
            assert!(
                m.subscription.topics.contains(&p.topic),
                "{p} to non-subscriber"
            );
            assert!(seen.insert(p.clone()), "{p} twice");
        }
    }
    if complete {
        for (t, n) in &s.topics {
            if s.members.iter().any(|m| m.subscription.topics.contains(t)) {
                assert_eq!(
                    seen.iter().filter(|p| &p.topic == t).count(),
                    *n as usize,
                    "all of {t} assigned"
                );
            }
        }
    }
}

#[test]
fn balancers_match_java() {
    let balancers: Vec<Box<dyn Balancer>> = vec![
        Box::new(RangeBalancer),
        Box::new(RoundRobinBalancer),
        Box::new(StickyBalancer),
        Box::new(CooperativeStickyBalancer),
    ];
    const PER_BALANCER: usize = 300;
    let mut rng = SeededRng::new(0xba1a_4ce5);
    let mut input = String::new();
    let mut scenarios: Vec<(usize, Scenario)> = Vec::new();
    for (bi, bal) in balancers.iter().enumerate() {
        for _ in 0..PER_BALANCER {
            let sc = scenario(&mut rng, bal.as_ref(), bi < 2);
            input.push_str(&format!("S {}\n", bal.name()));
            for (t, n) in &sc.topics {
                input.push_str(&format!("T {t} {n}\n"));
            }
            for m in &sc.members {
                input.push_str(&format!(
                    "M {} {} {}\n",
                    m.member_id,
                    m.instance_id.as_deref().unwrap_or("-"),
                    hex(&m.subscription.encode(3).unwrap())
                ));
            }
            input.push_str("E\n");
            scenarios.push((bi, sc));
        }
    }
    let out = run_java(input);
    let mut lines = out.lines();
    // [balancer][equal?] -> (agree, total)
    let mut agree = [[(0usize, 0usize); 2]; 4];
    let mut first_mismatch: Vec<String> = Vec::new();
    let mut java_invalid = [0usize; 4];
    let mut general_valid_diff = [0usize; 4];
    for (bi, sc) in &scenarios {
        let bal = &balancers[*bi];
        let mut java: BTreeMap<String, Assignment> = BTreeMap::new();
        for line in lines.by_ref() {
            if line == "E" {
                break;
            }
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f[0], "A", "unexpected line {line}");
            // Java's assignment bytes must decode with our codec.
            let a = Assignment::decode(&unhex(f[2])).expect("decode Java assignment");
            java.insert(f[1].to_string(), a);
        }
        let ours = bal.assign(&sc.members, &sc.topics).expect("assign");
        let cooperative = bal.name() == "cooperative-sticky";
        check_valid(sc, &ours, !cooperative);
        if sc.equal && bal.name() != "range" && !cooperative {
            let c: Vec<usize> = ours.values().map(|a| a.partitions.len()).collect();
            let (min, max) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(max - min <= 1, "{} unbalanced: {c:?}", bal.name());
        }
        let same = sets(&ours) == sets(&java);
        let slot = &mut agree[*bi][usize::from(sc.equal)];
        slot.1 += 1;
        slot.0 += usize::from(same);
        // Java's general sticky path can hand a partition back to an older-generation owner that
        // no longer subscribes to its topic; we never do (count those separately).
        let java_valid = sc.members.iter().all(|m| {
            java.get(&m.member_id).is_none_or(|a| {
                a.partitions
                    .iter()
                    .all(|p| m.subscription.topics.contains(&p.topic))
            })
        });
        if !java_valid {
            java_invalid[*bi] += 1;
        }
        if !same && java_valid && !sc.equal {
            general_valid_diff[*bi] += 1;
        }
        // Identity is claimed for range and round-robin always, for the sticky ones when all
        // subscriptions are equal. With different subscriptions the sticky ones follow Java's
        // general algorithm but are only reported on.
        let claimed = *bi < 2 || sc.equal;
        if claimed && !same && first_mismatch.len() < 3 {
            first_mismatch.push(format!(
                "{}: topics {:?}\nmembers {:#?}\nours {:?}\njava {:?}",
                bal.name(),
                sc.topics,
                sc.members,
                sets(&ours),
                sets(&java)
            ));
        }
    }
    for (bi, bal) in balancers.iter().enumerate() {
        let [(ad, td), (ae, te)] = agree[bi];
        println!(
            "{:>18}: equal subscriptions {ae}/{te} identical to Java, different subscriptions \
             {ad}/{td} (of the others: {} where Java assigned a partition to a non-subscriber, \
             {} where both are valid)",
            bal.name(),
            java_invalid[bi],
            general_valid_diff[bi]
        );
        assert!(bi >= 2 || java_invalid[bi] == 0);
    }
    assert!(
        first_mismatch.is_empty(),
        "differs from Java:\n{}",
        first_mismatch.join("\n\n")
    );
}

fn canonical_sub(s: &Subscription) -> String {
    let parts: Vec<String> = s
        .owned_partitions
        .iter()
        .map(|p| format!("{}:{}", p.topic, p.partition))
        .collect();
    format!(
        "topics={} ud={} owned={} gen={} rack={}",
        if s.topics.is_empty() {
            "-".to_string()
        } else {
            s.topics.join(",")
        },
        match &s.user_data {
            None => "null".to_string(),
            Some(b) if b.is_empty() => "empty".to_string(),
            Some(b) => hex(b),
        },
        if parts.is_empty() {
            "-".to_string()
        } else {
            parts.join(",")
        },
        s.generation_id,
        s.rack_id.as_deref().unwrap_or("-"),
    )
}

fn canonical_asg(a: &Assignment) -> String {
    let parts: Vec<String> = a
        .partitions
        .iter()
        .map(|p| format!("{}:{}", p.topic, p.partition))
        .collect();
    format!(
        "parts={} ud={}",
        if parts.is_empty() {
            "-".to_string()
        } else {
            parts.join(",")
        },
        match &a.user_data {
            None => "null".to_string(),
            Some(b) if b.is_empty() => "empty".to_string(),
            Some(b) => hex(b),
        }
    )
}

#[test]
fn consumer_protocol_interop_with_java() {
    let subs = vec![
        Subscription::default(),
        Subscription {
            topics: vec!["a".into(), "b-2".into()],
            user_data: Some(Bytes::from_static(&[1, 2, 3])),
            owned_partitions: vec![
                TopicPartition::new("a", 0),
                TopicPartition::new("a", 5),
                TopicPartition::new("b-2", 1),
            ],
            generation_id: 17,
            rack_id: Some("rack-1".into()),
        },
        Subscription {
            topics: vec!["only".into()],
            user_data: Some(Bytes::new()),
            owned_partitions: vec![],
            generation_id: -1,
            rack_id: None,
        },
        CooperativeStickyBalancer.member_metadata(&["x".into()], &[TopicPartition::new("x", 3)], 9),
        StickyBalancer.member_metadata(&["x".into()], &[TopicPartition::new("x", 3)], 9),
    ];
    let asgs = vec![
        Assignment::default(),
        Assignment {
            partitions: vec![TopicPartition::new("a", 1), TopicPartition::new("c", 0)],
            user_data: Some(Bytes::from_static(b"streams")),
        },
    ];
    let mut input = String::new();
    let mut expect: Vec<(String, bool, Option<String>)> = Vec::new(); // (canonical, is_sub, ours)
    for s in &subs {
        for v in 0..=3i16 {
            input.push_str(&format!("DS {}\n", hex(&s.encode(v).unwrap())));
            let back = Subscription::decode(&s.encode(v).unwrap()).unwrap();
            expect.push((canonical_sub(&back), true, None));
        }
    }
    for a in &asgs {
        for v in 0..=3i16 {
            input.push_str(&format!("DA {}\n", hex(&a.encode(v).unwrap())));
            expect.push((canonical_asg(a), false, None));
        }
    }
    let out = run_java(input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), expect.len() * 2);
    for (i, (want, is_sub, _)) in expect.iter().enumerate() {
        // Java decodes our bytes to the same values...
        assert_eq!(lines[2 * i], want, "Java's reading of our bytes");
        // ...and we decode Java's own encoding to the same values.
        let jbytes = unhex(lines[2 * i + 1].strip_prefix("J ").unwrap());
        let ours = if *is_sub {
            canonical_sub(&Subscription::decode(&jbytes).unwrap())
        } else {
            canonical_asg(&Assignment::decode(&jbytes).unwrap())
        };
        assert_eq!(&ours, want, "our reading of Java's bytes");
    }
}
