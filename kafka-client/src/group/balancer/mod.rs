//! Partition assignors ("balancers") of the classic consumer group protocol.
//!
//! The group leader receives every member's [`Subscription`] (JoinGroup metadata, encoded in
//! Kafka's embedded `ConsumerProtocolSubscription` format) and computes one [`Assignment`] per
//! member (SyncGroup, `ConsumerProtocolAssignment`). This module is pure: no I/O, no clock, no
//! randomness, and every balancer gives the same answer as its Java namesake for the same inputs
//! where documented:
//!
//! | balancer | Java class | identical to Java |
//! |---|---|---|
//! | [`RangeBalancer`] (`range`) | `RangeAssignor` | always (no rack-aware mode) |
//! | [`RoundRobinBalancer`] (`roundrobin`) | `RoundRobinAssignor` | always |
//! | [`StickyBalancer`] (`sticky`) | `StickyAssignor` | when all members subscribe to the same topics |
//! | [`CooperativeStickyBalancer`] (`cooperative-sticky`) | `CooperativeStickyAssignor` | same |
//!
//! With differing subscriptions the sticky balancers follow Java's general algorithm and agree
//! with it in most tested groups, but identity is not guaranteed (see `sticky.rs`).
//!
//! Member order matters for Java identity: pass members in the order of the JoinGroup response,
//! as Java's coordinator does (its assignors iterate a `HashMap` built in that order).
//!
//! Custom balancers (the streams layer has one) implement [`Balancer`]; the trait is object safe.

mod java;
mod range;
mod roundrobin;
mod sticky;
mod wire;

use std::collections::BTreeMap;

use bytes::Bytes;

pub use crate::types::TopicPartition;
pub use range::RangeBalancer;
pub use roundrobin::RoundRobinBalancer;
pub use sticky::{CooperativeStickyBalancer, StickyBalancer};

/// How a group moves partitions between members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RebalanceProtocol {
    /// Every member revokes everything before each rebalance (range, round-robin, sticky).
    Eager,
    /// KIP-429: members keep their partitions; a partition that moves is first revoked by its
    /// owner (absent from the new assignment) and handed to its new owner in a second rebalance.
    Cooperative,
}

/// A member's JoinGroup metadata (`ConsumerProtocolSubscription`, versions 0-3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Topics the member subscribes to.
    pub topics: Vec<String>,
    /// Balancer-specific data (`None` is null on the wire).
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (v1+; cooperative balancers rely on it).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation of `owned_partitions`; -1 when unknown (v2+).
    pub generation_id: i32,
    /// The member's rack (v3+). Carried, not used: our balancers are not rack-aware.
    pub rack_id: Option<String>,
}

/// One member's share (`ConsumerProtocolAssignment`, versions 0-3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// Partitions assigned to the member.
    pub partitions: Vec<TopicPartition>,
    /// Balancer-specific data (`None` is null on the wire).
    pub user_data: Option<Bytes>,
}

/// A member of the group as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id given by the coordinator.
    pub member_id: String,
    /// The static member's `group.instance.id` (KIP-345), if any.
    pub instance_id: Option<String>,
    /// Its decoded subscription.
    pub subscription: Subscription,
}

/// Why a subscription, an assignment or a balancing could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BalancerError {
    /// The bytes are not a valid consumer protocol message.
    #[error("malformed consumer protocol data: {0}")]
    Decode(#[from] kafka_wire::error::DecodeError),
    /// A value cannot be written (string or array too long).
    #[error("cannot encode consumer protocol data: {0}")]
    Encode(#[from] kafka_wire::error::EncodeError),
    /// A negative embedded version.
    #[error("unsupported consumer protocol version {0}")]
    UnsupportedVersion(i16),
    /// The input to `assign` is inconsistent (for example two members with one id).
    #[error("invalid group: {0}")]
    InvalidGroup(String),
}

/// A partition assignor. Implementations must be deterministic: every member may run them.
pub trait Balancer: Send + Sync {
    /// The protocol name sent in JoinGroup (`range`, `roundrobin`, `sticky`,
    /// `cooperative-sticky`, or a custom one).
    fn name(&self) -> &str;

    /// Eager or cooperative. Default: eager (as Java's `ConsumerPartitionAssignor`).
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// This member's JoinGroup metadata: its topics, the partitions it owns and the generation
    /// they belong to (-1 if none); user data is the balancer's. Default: no user data.
    fn member_metadata(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
        generation: i32,
    ) -> Subscription {
        Subscription {
            topics: topics.to_vec(),
            user_data: None,
            owned_partitions: owned.to_vec(),
            generation_id: generation,
            rack_id: None,
        }
    }

    /// Computes every member's assignment (run by the leader). `topics` holds the partition count
    /// of topics known to exist; topics absent from it are ignored (as Java does). The result has
    /// one entry per member, possibly with no partitions.
    fn assign(
        &self,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Assignment>, BalancerError>;

    /// This member's assignment of `generation`, user data included (Java's
    /// `ConsumerPartitionAssignor.onAssignment`). Called on every member after each successful
    /// SyncGroup, before that sync's revoke and assign hooks run. Default: nothing.
    fn on_assignment(&self, assignment: &Assignment, generation: i32) {
        let _ = (assignment, generation);
    }
}

/// A partition [`adjust_cooperative`] kept from its new member this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    /// The partition.
    pub partition: TopicPartition,
    /// The member that owns it now (per its subscription).
    pub owner: String,
    /// The member the plan gave it to.
    pub to: String,
}

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {} to {}", self.partition, self.owner, self.to)
    }
}

/// Makes a cooperative plan safe (KIP-429): a partition owned now by one member must not be
/// given to another member in the same round, since the owner may still be processing it. Such
/// partitions are removed from their new member's assignment and returned; the owner, which no
/// longer has them in its assignment, revokes them and rejoins, and the next round hands them
/// out. The group leader applies this to every cooperative balancer's plan; a custom balancer
/// may call it itself.
///
/// The owner of a partition is the member whose subscription lists it with the highest
/// generation (Java's rule for conflicting claims: an older claim is stale); members tied at
/// that generation all count as owners.
pub fn adjust_cooperative(
    members: &[GroupMember],
    assignments: &mut BTreeMap<String, Assignment>,
) -> Vec<HeldBack> {
    // partition -> (generation, owners)
    let mut owners: BTreeMap<&TopicPartition, (i32, Vec<&str>)> = BTreeMap::new();
    for m in members {
        let generation = m.subscription.generation_id;
        for tp in &m.subscription.owned_partitions {
            let entry = owners.entry(tp).or_insert((generation, Vec::new()));
            if generation > entry.0 {
                *entry = (generation, Vec::new());
            }
            if generation == entry.0 && !entry.1.contains(&m.member_id.as_str()) {
                entry.1.push(m.member_id.as_str());
            }
        }
    }
    let mut held = Vec::new();
    for (member_id, assignment) in assignments.iter_mut() {
        assignment.partitions.retain(|tp| match owners.get(tp) {
            Some((_, list)) if !list.contains(&member_id.as_str()) => {
                held.push(HeldBack {
                    partition: tp.clone(),
                    owner: list[0].to_string(),
                    to: member_id.clone(),
                });
                false
            }
            _ => true,
        });
    }
    held
}

/// The classic group protocol the coordinator picks from the members' preference lists
/// (`protocols[i]` is member `i`'s list, most preferred first; member 0 is the leader).
///
/// Candidates are the names every member supports. As Apache Kafka's coordinator does, each
/// member votes for the first candidate of its own list and the most voted candidate wins; ties
/// go to the candidate that comes first in the leader's list (so with agreeing members this is
/// "the first protocol in the leader's list that all members support"). `None` when there is no
/// common protocol (the coordinator answers INCONSISTENT_GROUP_PROTOCOL).
pub fn choose_protocol<S: AsRef<str>>(protocols: &[Vec<S>]) -> Option<String> {
    let (leader, others) = protocols.split_first()?;
    let candidates: Vec<&str> = leader
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| {
            others
                .iter()
                .all(|list| list.iter().any(|q| q.as_ref() == *p))
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let mut votes = vec![0usize; candidates.len()];
    for list in protocols {
        if let Some(i) = list
            .iter()
            .find_map(|p| candidates.iter().position(|c| *c == p.as_ref()))
        {
            votes[i] += 1;
        }
    }
    let best = votes.iter().copied().max().unwrap_or(0);
    let winner = votes.iter().position(|v| *v == best).unwrap_or(0);
    Some(candidates[winner].to_string())
}

/// The rebalance protocol a consumer runs with the balancers it is configured with: cooperative
/// only if all of them are (Java's `ConsumerCoordinator` rule), else eager.
pub fn common_protocol(balancers: &[&dyn Balancer]) -> RebalanceProtocol {
    if !balancers.is_empty()
        && balancers
            .iter()
            .all(|b| b.protocol() == RebalanceProtocol::Cooperative)
    {
        RebalanceProtocol::Cooperative
    } else {
        RebalanceProtocol::Eager
    }
}

/// Topics subscribed by any member that exist (in `topics`), in Java `String` order.
pub(crate) fn subscribed_topics(
    members: &[GroupMember],
    topics: &BTreeMap<String, i32>,
) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> = Vec::new();
    for m in members {
        for t in &m.subscription.topics {
            if let Some(&n) = topics.get(t) {
                if !out.iter().any(|(o, _)| o == t) {
                    out.push((t.clone(), n.max(0)));
                }
            }
        }
    }
    out.sort_by(|a, b| java::cmp_str(&a.0, &b.0));
    out
}

/// Checks member ids are distinct.
pub(crate) fn check_members(members: &[GroupMember]) -> Result<(), BalancerError> {
    let mut ids: Vec<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(BalancerError::InvalidGroup(format!(
            "member id {} appears twice",
            w[0]
        )));
    }
    Ok(())
}

/// Java's `MemberInfo` order used by range and round-robin: members with an instance id first,
/// by instance id; then the others by member id.
pub(crate) fn member_info_cmp(a: &GroupMember, b: &GroupMember) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (&a.instance_id, &b.instance_id) {
        (Some(x), Some(y)) => java::cmp_str(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => java::cmp_str(&a.member_id, &b.member_id),
    }
}

/// Turns per-member partition lists into assignments without user data.
pub(crate) fn plain_assignments(
    lists: BTreeMap<String, Vec<TopicPartition>>,
) -> BTreeMap<String, Assignment> {
    lists
        .into_iter()
        .map(|(m, partitions)| {
            (
                m,
                Assignment {
                    partitions,
                    user_data: None,
                },
            )
        })
        .collect()
}

/// An empty partition list per member id, and the members in Java's `MemberInfo` order.
pub(crate) type MemberOrder<'a> = (BTreeMap<String, Vec<TopicPartition>>, Vec<&'a GroupMember>);

/// The start of a member-order balancer (range, round-robin): checks the members, and returns
/// an empty partition list per member and the members in Java's `MemberInfo` order.
pub(crate) fn member_order_start(
    members: &[GroupMember],
) -> Result<MemberOrder<'_>, BalancerError> {
    check_members(members)?;
    let lists = members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    let mut sorted: Vec<&GroupMember> = members.iter().collect();
    sorted.sort_by(|a, b| member_info_cmp(a, b));
    Ok((lists, sorted))
}

#[cfg(test)]
mod tests;
