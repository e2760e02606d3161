//! `roundrobin`: all partitions of all subscribed topics (topics sorted, partitions ascending)
//! dealt in turn to the members in Java's member order, skipping members not subscribed to the
//! partition's topic.

use std::collections::BTreeMap;

use super::{
    check_members, member_info_cmp, plain_assignments, plain_subscription, subscribed_topics,
    Assignment, Balancer, BalancerError, GroupMember, RebalanceProtocol, Subscription,
    TopicPartition,
};

/// Java's `RoundRobinAssignor`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinBalancer;

impl Balancer for RoundRobinBalancer {
    fn name(&self) -> &str {
        "roundrobin"
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
        plain_subscription(topics, owned, generation)
    }

    fn assign(
        &self,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Assignment>, BalancerError> {
        check_members(members)?;
        let mut out: BTreeMap<String, Vec<TopicPartition>> = members
            .iter()
            .map(|m| (m.member_id.clone(), Vec::new()))
            .collect();
        let mut ring: Vec<&GroupMember> = members.iter().collect();
        ring.sort_by(|a, b| member_info_cmp(a, b));
        let mut next = 0usize;
        for (topic, count) in subscribed_topics(members, topics) {
            for p in 0..count {
                // Some member subscribes to `topic` (that is how it got here), so this finds one
                // within one turn of the ring.
                for _ in 0..ring.len() {
                    let m = ring[next % ring.len()];
                    next = (next + 1) % ring.len();
                    if m.subscription.topics.contains(&topic) {
                        if let Some(list) = out.get_mut(&m.member_id) {
                            list.push(TopicPartition::new(topic.as_str(), p));
                        }
                        break;
                    }
                }
            }
        }
        Ok(plain_assignments(out))
    }
}
