//! `sticky` and `cooperative-sticky` (Java's `StickyAssignor` / `CooperativeStickyAssignor`,
//! both built on `AbstractStickyAssignor`).
//!
//! Steps, as in Java:
//! 1. Previous ownership. Each member's claimed partitions are read (eager `sticky`: from its
//!    user data, `[topic, [partition]]` + generation; `cooperative-sticky`: from the subscription's
//!    owned partitions and generation). A partition claimed by two members goes to the one with
//!    the higher generation; claimed by two of the same generation it is owned by nobody (and, for
//!    cooperative, must be revoked before it is handed out again). Members are visited in the
//!    order Java's `HashMap` of member ids iterates, which decides some ties.
//! 2. All members subscribe to the same topics ("constrained" case, Java's
//!    `ConstrainedAssignmentBuilder`, reproduced step by step): quotas `floor(P/N)` / `ceil(P/N)`;
//!    members keep up to their quota of owned partitions (lowest partition numbers first); the rest
//!    are dealt round-robin to the members under quota, sorted by member id. Identical to Java.
//! 3. Otherwise ("general" case, Java's `GeneralAssignmentBuilder` step by step: keep owned
//!    partitions still subscribed, hand out free ones to the least loaded subscriber, then move
//!    partitions while it improves balance, preferring older-generation owners and Java's
//!    `PartitionMovements` choice). One deliberate difference: Java may hand a partition back to
//!    its older-generation owner even when that member no longer subscribes to the topic (an
//!    invalid assignment); we never do.
//! 4. Cooperative only: a partition whose previous owner loses it is left out of this round's
//!    assignment (KIP-429); the owner revokes it and the next rebalance assigns it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::java;
use super::{
    check_members, subscribed_topics, Assignment, Balancer, BalancerError, GroupMember,
    RebalanceProtocol, Subscription, TopicPartition,
};

/// Java's `StickyAssignor` (eager). Previous assignments travel in the subscription user data.
#[derive(Debug, Clone, Copy, Default)]
pub struct StickyBalancer;

/// Java's `CooperativeStickyAssignor` (KIP-429 incremental rebalancing).
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyBalancer;

impl Balancer for StickyBalancer {
    fn name(&self) -> &str {
        "sticky"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    fn member_metadata(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
        generation: i32,
    ) -> Subscription {
        // Java sends no user data before the member's first assignment.
        let user_data = if generation >= 0 || !owned.is_empty() {
            Some(encode_sticky_user_data(owned, generation))
        } else {
            None
        };
        Subscription {
            topics: topics.to_vec(),
            user_data,
            owned_partitions: owned.to_vec(),
            generation_id: generation,
            rack_id: None,
        }
    }

    fn assign(
        &self,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Assignment>, BalancerError> {
        assign_sticky(members, topics, false)
    }
}

impl Balancer for CooperativeStickyBalancer {
    fn name(&self) -> &str {
        "cooperative-sticky"
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
        // Java also puts the generation in the user data, for coordinators that only keep v0/v1.
        let mut ud = BytesMut::with_capacity(4);
        ud.put_i32(generation);
        Subscription {
            topics: topics.to_vec(),
            user_data: Some(ud.freeze()),
            owned_partitions: owned.to_vec(),
            generation_id: generation,
            rack_id: None,
        }
    }

    fn assign(
        &self,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Assignment>, BalancerError> {
        assign_sticky(members, topics, true)
    }
}

/// Encodes the eager sticky user data (`StickyAssignorUserData` v1): an array of
/// `{topic: string, partitions: [int32]}` then the generation.
pub(crate) fn encode_sticky_user_data(owned: &[TopicPartition], generation: i32) -> Bytes {
    let mut groups: Vec<(&str, Vec<i32>)> = Vec::new();
    for tp in owned {
        match groups.iter_mut().find(|(t, _)| *t == tp.topic) {
            Some((_, ps)) => ps.push(tp.partition),
            None => groups.push((tp.topic.as_str(), vec![tp.partition])),
        }
    }
    let mut b = BytesMut::new();
    b.put_i32(groups.len() as i32);
    for (t, ps) in groups {
        // Topic names are at most 249 bytes; longer ones are cut rather than mis-framed.
        let tb = &t.as_bytes()[..t.len().min(i16::MAX as usize)];
        b.put_i16(tb.len() as i16);
        b.put_slice(tb);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i32(generation);
    b.freeze()
}

/// Reads the partitions part of the sticky user data; `None` if malformed.
fn read_sticky_partitions(buf: &mut &[u8]) -> Option<Vec<TopicPartition>> {
    let topics = buf.try_get_i32().ok()?;
    // Each topic takes at least 6 bytes: bound the count by what is left.
    if topics < 0 || topics as usize > buf.remaining() / 6 {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..topics {
        let len = buf.try_get_i16().ok()?;
        if len < 0 || len as usize > buf.remaining() {
            return None;
        }
        let name = std::str::from_utf8(&buf[..len as usize]).ok()?.to_string();
        buf.advance(len as usize);
        let n = buf.try_get_i32().ok()?;
        if n < 0 || n as usize > buf.remaining() / 4 {
            return None;
        }
        for _ in 0..n {
            out.push(TopicPartition::new(name.as_str(), buf.try_get_i32().ok()?));
        }
    }
    Some(out)
}

/// Decodes the eager sticky user data as Java does: v1 (with generation), else v0 (without),
/// else nothing.
pub(crate) fn decode_sticky_user_data(data: &[u8]) -> (Vec<TopicPartition>, Option<i32>) {
    let mut buf = data;
    if let Some(parts) = read_sticky_partitions(&mut buf) {
        if let Ok(g) = buf.try_get_i32() {
            return (parts, Some(g));
        }
        return (parts, None);
    }
    (Vec::new(), None)
}

/// What the sticky algorithm knows of one member.
struct MemberIn<'a> {
    id: &'a str,
    /// Subscribed topics as sent (existing or not).
    topics: BTreeSet<&'a str>,
    /// Claimed partitions and their generation (Java's `MemberData`).
    claimed: Vec<TopicPartition>,
    claim_generation: i32,
    /// The subscription's own generation field (-1 when absent).
    sub_generation: i32,
    /// The subscription's owned partitions as sent (for cooperative revocation).
    owned_raw: &'a [TopicPartition],
}

fn member_in(m: &GroupMember, cooperative: bool) -> MemberIn<'_> {
    let sub = &m.subscription;
    let sub_generation = if sub.generation_id < 0 {
        -1
    } else {
        sub.generation_id
    };
    let (claimed, gen) = if cooperative {
        if sub.generation_id >= 0 {
            (sub.owned_partitions.clone(), Some(sub.generation_id))
        } else {
            let g = sub
                .user_data
                .as_ref()
                .map(|ud| (&ud[..]).try_get_i32().unwrap_or(-1));
            (sub.owned_partitions.clone(), g)
        }
    } else {
        match &sub.user_data {
            Some(ud) if !ud.is_empty() => decode_sticky_user_data(ud),
            _ => (Vec::new(), None),
        }
    };
    // A member listing one partition twice is treated as listing it once.
    let mut seen = HashSet::new();
    let claimed = claimed
        .into_iter()
        .filter(|tp| seen.insert(tp.clone()))
        .collect();
    MemberIn {
        id: &m.member_id,
        topics: sub.topics.iter().map(String::as_str).collect(),
        claimed,
        claim_generation: gen.unwrap_or(-1),
        sub_generation,
        owned_raw: &sub.owned_partitions,
    }
}

fn assign_sticky(
    members: &[GroupMember],
    topics: &BTreeMap<String, i32>,
    cooperative: bool,
) -> Result<BTreeMap<String, Assignment>, BalancerError> {
    check_members(members)?;
    // Java iterates its HashMap of subscriptions; we visit members in that order.
    let order = java::hashmap_order(
        &members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect::<Vec<_>>(),
    );
    let ms: Vec<MemberIn<'_>> = order
        .iter()
        .map(|&i| member_in(&members[i], cooperative))
        .collect();
    // Java leaves topics without partitions out.
    let counts: Vec<(String, i32)> = subscribed_topics(members, topics)
        .into_iter()
        .filter(|(_, c)| *c > 0)
        .collect();
    let count_of: HashMap<&str, i32> = counts.iter().map(|(t, n)| (t.as_str(), *n)).collect();

    // Step 1: previous owners (Java's allSubscriptionsEqual).
    let mut all_equal = true;
    let mut first_topics: Option<&BTreeSet<&str>> = None;
    let mut owned: Vec<Vec<TopicPartition>> = vec![Vec::new(); ms.len()];
    let mut owner_of: HashMap<TopicPartition, usize> = HashMap::new();
    let mut multi: HashSet<TopicPartition> = HashSet::new();
    for (i, m) in ms.iter().enumerate() {
        match first_topics {
            None => first_topics = Some(&m.topics),
            Some(t) => {
                if *t != m.topics {
                    all_equal = false;
                }
            }
        }
        for tp in &m.claimed {
            match count_of.get(tp.topic.as_str()) {
                Some(&n) if (0..n).contains(&tp.partition) => {}
                _ => continue,
            }
            match owner_of.get(tp).copied() {
                None => {
                    owned[i].push(tp.clone());
                    owner_of.insert(tp.clone(), i);
                }
                Some(o) => {
                    let other_gen = ms[o].sub_generation;
                    if m.claim_generation == other_gen {
                        multi.insert(tp.clone());
                        remove_first(&mut owned[o], tp);
                        owner_of.insert(tp.clone(), i);
                    } else if m.claim_generation > other_gen {
                        owned[i].push(tp.clone());
                        remove_first(&mut owned[o], tp);
                        owner_of.insert(tp.clone(), i);
                    }
                }
            }
        }
    }
    // Java's check starts over when it has seen only empty subscriptions so far; we instead treat
    // a member without topics as a different subscription (it must not get partitions).
    if ms.iter().any(|m| m.topics.is_empty()) {
        all_equal = false;
    }

    // Java's prevAssignment: partitions claimed in generations older than the newest one.
    let max_gen = ms
        .iter()
        .map(|m| m.claim_generation)
        .max()
        .unwrap_or(-1)
        .max(-1);
    let mut prev: HashMap<TopicPartition, (usize, i32)> = HashMap::new();
    for (i, m) in ms.iter().enumerate() {
        if m.claim_generation < max_gen {
            for tp in &m.claimed {
                match prev.get(tp) {
                    Some(&(_, g)) if m.claim_generation <= g => {}
                    _ => {
                        prev.insert(tp.clone(), (i, m.claim_generation));
                    }
                }
            }
        }
    }

    let (mut lists, transferring) = if all_equal {
        constrained(&ms, &counts, owned, &multi)?
    } else {
        let lists = general_java(&ms, &counts, owned, &prev);
        (lists, None)
    };

    if cooperative {
        let transferring = match transferring {
            Some(t) => t,
            None => transfers(&ms, &lists),
        };
        for (tp, to) in transferring {
            remove_first(&mut lists[to], &tp);
        }
    }

    Ok(ms
        .iter()
        .zip(lists)
        .map(|(m, partitions)| {
            (
                m.id.to_string(),
                Assignment {
                    partitions,
                    user_data: None,
                },
            )
        })
        .collect())
}

fn remove_first(list: &mut Vec<TopicPartition>, tp: &TopicPartition) {
    if let Some(pos) = list.iter().position(|x| x == tp) {
        list.remove(pos);
    }
}

/// Partitions by topic (Java string order), then partition number.
fn all_partitions(counts: &[(String, i32)]) -> Vec<TopicPartition> {
    counts
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| TopicPartition::new(t.as_str(), p)))
        .collect()
}

type Transfers = Vec<(TopicPartition, usize)>;

/// Java's `ConstrainedAssignmentBuilder` without racks. Returns per-member lists (in `ms` order)
/// and the partitions changing owner (partition, new member index).
fn constrained(
    ms: &[MemberIn<'_>],
    counts: &[(String, i32)],
    owned: Vec<Vec<TopicPartition>>,
    multi: &HashSet<TopicPartition>,
) -> Result<(Vec<Vec<TopicPartition>>, Option<Transfers>), BalancerError> {
    let n = ms.len();
    let total: usize = counts.iter().map(|(_, c)| *c as usize).sum();
    if n == 0 {
        return Ok((Vec::new(), Some(Vec::new())));
    }
    let min_quota = total / n;
    let max_quota = total.div_ceil(n);
    let expected_over = total % n;
    let mut current_over = 0usize;

    let mut assignment: Vec<Vec<TopicPartition>> = vec![Vec::new(); n];
    let mut assigned: HashSet<TopicPartition> = HashSet::new();
    let mut revoked: HashSet<TopicPartition> = HashSet::new();
    let mut under: Vec<usize> = Vec::new();
    let mut exact: VecDeque<usize> = VecDeque::new();

    for (i, own) in owned.into_iter().enumerate() {
        let mut own = own;
        own.sort_by(|a, b| {
            a.partition
                .cmp(&b.partition)
                .then_with(|| java::cmp_str(&a.topic, &b.topic))
        });
        own.retain(|tp| !multi.contains(tp));
        if own.len() < min_quota {
            assigned.extend(own.iter().cloned());
            assignment[i] = own;
            under.push(i);
        } else if own.len() >= max_quota && current_over < expected_over {
            current_over += 1;
            if current_over == expected_over {
                exact.clear();
            }
            revoked.extend(own.drain(max_quota..));
            assigned.extend(own.iter().cloned());
            assignment[i] = own;
        } else {
            revoked.extend(own.drain(min_quota..));
            assigned.extend(own.iter().cloned());
            assignment[i] = own;
            if current_over < expected_over {
                exact.push_back(i);
            }
        }
    }

    let unassigned: Vec<TopicPartition> = all_partitions(counts)
        .into_iter()
        .filter(|tp| !assigned.contains(tp))
        .collect();
    under.sort_by(|&a, &b| java::cmp_str(ms[a].id, ms[b].id));
    exact
        .make_contiguous()
        .sort_by(|&a, &b| java::cmp_str(ms[a].id, ms[b].id));

    let mut transferring: Transfers = Vec::new();
    // `cursor` is the position of a Java iterator over `under`: the next element to return.
    let mut cursor = 0usize;
    for tp in unassigned {
        let from_under;
        let consumer = if cursor < under.len() {
            cursor += 1;
            from_under = true;
            under[cursor - 1]
        } else if under.is_empty() {
            match exact.pop_front() {
                Some(c) => {
                    from_under = false;
                    c
                }
                None => {
                    return Err(BalancerError::InvalidGroup(
                        "sticky: partitions left but every member is full".into(),
                    ))
                }
            }
        } else {
            cursor = 1;
            from_under = true;
            under[0]
        };
        if revoked.contains(&tp) || multi.contains(&tp) {
            transferring.push((tp.clone(), consumer));
        }
        assignment[consumer].push(tp);
        let count = assignment[consumer].len();
        if count == min_quota {
            if from_under {
                under.remove(cursor - 1);
                cursor -= 1;
            }
            exact.push_back(consumer);
        }
    }
    Ok((assignment, Some(transferring)))
}

/// Java's `computePartitionsTransferringOwnership`: partitions newly given to a member that
/// another member owned (per its subscription) and loses.
fn transfers(ms: &[MemberIn<'_>], lists: &[Vec<TopicPartition>]) -> Transfers {
    let mut revoked: HashSet<&TopicPartition> = HashSet::new();
    for (m, list) in ms.iter().zip(lists) {
        let new: HashSet<&TopicPartition> = list.iter().collect();
        revoked.extend(m.owned_raw.iter().filter(|tp| !new.contains(tp)));
    }
    let mut out = Vec::new();
    for (i, (m, list)) in ms.iter().zip(lists).enumerate() {
        let old: HashSet<&TopicPartition> = m.owned_raw.iter().collect();
        for tp in list {
            if !old.contains(tp) && revoked.contains(tp) {
                out.push((tp.clone(), i));
            }
        }
    }
    out
}

/// Java's `PartitionMovements`: which partitions moved between which members during the
/// balancing, so a move back along the same pair picks a partition that moved the other way.
struct Movements {
    moves: HashMap<TopicPartition, (usize, usize)>,
    by_topic: HashMap<String, HashMap<(usize, usize), java::JavaPartitionSet>>,
}

impl Movements {
    fn new() -> Movements {
        Movements {
            moves: HashMap::new(),
            by_topic: HashMap::new(),
        }
    }

    fn remove_record(&mut self, tp: &TopicPartition) -> Option<(usize, usize)> {
        let pair = self.moves.remove(tp)?;
        if let Some(topic) = self.by_topic.get_mut(&tp.topic) {
            if let Some(set) = topic.get_mut(&pair) {
                set.remove(tp);
                if set.is_empty() {
                    topic.remove(&pair);
                }
            }
            if topic.is_empty() {
                self.by_topic.remove(&tp.topic);
            }
        }
        Some(pair)
    }

    fn add_record(&mut self, tp: TopicPartition, pair: (usize, usize)) {
        self.moves.insert(tp.clone(), pair);
        self.by_topic
            .entry(tp.topic.clone())
            .or_default()
            .entry(pair)
            .or_insert_with(java::JavaPartitionSet::new)
            .insert(tp);
    }

    fn record_move(&mut self, tp: &TopicPartition, old: usize, new: usize) {
        match self.remove_record(tp) {
            Some((src, _)) => {
                if src != new {
                    self.add_record(tp.clone(), (src, new));
                }
            }
            None => self.add_record(tp.clone(), (old, new)),
        }
    }

    fn actual_partition(&self, tp: &TopicPartition, old: usize, new: usize) -> TopicPartition {
        let Some(topic) = self.by_topic.get(&tp.topic) else {
            return tp.clone();
        };
        let old = self.moves.get(tp).map(|(src, _)| *src).unwrap_or(old);
        match topic.get(&(new, old)).and_then(|s| s.first()) {
            Some(other) => other.clone(),
            None => tp.clone(),
        }
    }
}

/// Java's `GeneralAssignmentBuilder` (members with different subscriptions), without racks.
/// `prev` holds partitions claimed in older generations (Java's `prevAssignment`).
fn general_java(
    ms: &[MemberIn<'_>],
    counts: &[(String, i32)],
    owned: Vec<Vec<TopicPartition>>,
    prev: &HashMap<TopicPartition, (usize, i32)>,
) -> Vec<Vec<TopicPartition>> {
    let n = ms.len();
    let count_of: HashMap<&str, i32> = counts.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    let topic_consumers: HashMap<&str, Vec<usize>> = counts
        .iter()
        .map(|(t, _)| {
            (
                t.as_str(),
                (0..n)
                    .filter(|&i| ms[i].topics.contains(t.as_str()))
                    .collect(),
            )
        })
        .collect();
    let max_size: Vec<usize> = (0..n)
        .map(|i| {
            counts
                .iter()
                .filter(|(t, _)| ms[i].topics.contains(t.as_str()))
                .map(|(_, c)| *c as usize)
                .sum()
        })
        .collect();
    let movable_topic = |t: &str| topic_consumers.get(t).map_or(0, Vec::len) >= 2;

    // Owned partitions still valid.
    let mut revocation_required = false;
    let mut asg: Vec<Vec<TopicPartition>> = Vec::with_capacity(n);
    for (i, own) in owned.into_iter().enumerate() {
        let mut keep = Vec::new();
        for tp in own {
            if !count_of.contains_key(tp.topic.as_str()) {
                continue;
            }
            if !ms[i].topics.contains(tp.topic.as_str()) {
                revocation_required = true;
                continue;
            }
            keep.push(tp);
        }
        asg.push(keep);
    }
    let mut owner: HashMap<TopicPartition, usize> = HashMap::new();
    for (i, list) in asg.iter().enumerate() {
        for tp in list {
            owner.insert(tp.clone(), i);
        }
    }
    // All partitions: topics by number of possible consumers, then name.
    let mut topic_order: Vec<&(String, i32)> = counts.iter().collect();
    topic_order.sort_by(|a, b| {
        topic_consumers[a.0.as_str()]
            .len()
            .cmp(&topic_consumers[b.0.as_str()].len())
            .then_with(|| java::cmp_str(&a.0, &b.0))
    });
    let sorted_all: Vec<TopicPartition> = topic_order
        .iter()
        .flat_map(|(t, c)| (0..*c).map(move |p| TopicPartition::new(t.as_str(), p)))
        .collect();
    let unassigned: Vec<TopicPartition> = sorted_all
        .iter()
        .filter(|tp| !owner.contains_key(*tp))
        .cloned()
        .collect();

    let mut active = vec![true; n];
    // The least loaded active subscriber of `topic` (Java's sorted set: size, then member id).
    let least =
        |asg: &Vec<Vec<TopicPartition>>, active: &Vec<bool>, topic: &str| -> Option<usize> {
            topic_consumers
                .get(topic)?
                .iter()
                .copied()
                .filter(|&c| active[c])
                .min_by(|&a, &b| {
                    asg[a]
                        .len()
                        .cmp(&asg[b].len())
                        .then_with(|| java::cmp_str(ms[a].id, ms[b].id))
                })
        };

    let initializing = asg.iter().all(Vec::is_empty);
    for tp in &unassigned {
        if let Some(c) = least(&asg, &active, &tp.topic) {
            asg[c].push(tp.clone());
            owner.insert(tp.clone(), c);
        }
    }
    let reassignable: Vec<TopicPartition> = sorted_all
        .iter()
        .filter(|tp| movable_topic(&tp.topic))
        .cloned()
        .collect();
    let unassigned: Vec<TopicPartition> = unassigned
        .into_iter()
        .filter(|tp| movable_topic(&tp.topic))
        .collect();
    for i in 0..n {
        let participates =
            asg[i].len() < max_size[i] || asg[i].iter().any(|tp| movable_topic(&tp.topic));
        active[i] = participates;
    }
    let pre_asg = asg.clone();

    let is_balanced = |asg: &Vec<Vec<TopicPartition>>, owner: &HashMap<TopicPartition, usize>| {
        let sizes: Vec<usize> = (0..n)
            .filter(|&i| active[i])
            .map(|i| asg[i].len())
            .collect();
        let (Some(&min), Some(&max)) = (sizes.iter().min(), sizes.iter().max()) else {
            return true;
        };
        if min + 1 >= max {
            return true;
        }
        for c in (0..n).filter(|&i| active[i]) {
            let size = asg[c].len();
            if size == max_size[c] {
                continue;
            }
            let mine: HashSet<&TopicPartition> = asg[c].iter().collect();
            for (t, cnt) in counts {
                if !ms[c].topics.contains(t.as_str()) {
                    continue;
                }
                for p in 0..*cnt {
                    let tp = TopicPartition::new(t.as_str(), p);
                    if mine.contains(&tp) {
                        continue;
                    }
                    if let Some(&o) = owner.get(&tp) {
                        if active[o] && size + 1 < asg[o].len() {
                            return false;
                        }
                    }
                }
            }
        }
        true
    };

    let mut movements = Movements::new();
    let perform = |list: &[TopicPartition],
                   asg: &mut Vec<Vec<TopicPartition>>,
                   owner: &mut HashMap<TopicPartition, usize>,
                   movements: &mut Movements|
     -> bool {
        let mut performed = false;
        loop {
            let mut modified = false;
            for tp in list {
                if is_balanced(asg, owner) {
                    break;
                }
                let Some(&cur) = owner.get(tp) else { continue };
                let target = match prev.get(tp) {
                    Some(&(pc, _))
                        if active[pc]
                            && ms[pc].topics.contains(tp.topic.as_str())
                            && asg[cur].len() > asg[pc].len() + 1 =>
                    {
                        Some(pc)
                    }
                    _ => {
                        let better = topic_consumers[tp.topic.as_str()]
                            .iter()
                            .any(|&o| active[o] && asg[cur].len() > asg[o].len() + 1);
                        if better {
                            least(asg, &active, &tp.topic)
                        } else {
                            None
                        }
                    }
                };
                if let Some(new) = target {
                    let actual = movements.actual_partition(tp, cur, new);
                    let Some(&old) = owner.get(&actual) else {
                        continue;
                    };
                    movements.record_move(&actual, old, new);
                    remove_first(&mut asg[old], &actual);
                    asg[new].push(actual.clone());
                    owner.insert(actual, new);
                    performed = true;
                    modified = true;
                }
            }
            if !modified {
                break;
            }
        }
        performed
    };
    if !revocation_required {
        perform(&unassigned, &mut asg, &mut owner, &mut movements);
    }
    let performed = perform(&reassignable, &mut asg, &mut owner, &mut movements);
    let score = |asg: &Vec<Vec<TopicPartition>>| -> usize {
        let sizes: Vec<usize> = (0..n)
            .filter(|&i| active[i])
            .map(|i| asg[i].len())
            .collect();
        let mut s = 0;
        for i in 0..sizes.len() {
            for j in i + 1..sizes.len() {
                s += sizes[i].abs_diff(sizes[j]);
            }
        }
        s
    };
    if !initializing && performed && score(&asg) >= score(&pre_asg) {
        asg = pre_asg;
    }
    asg
}
