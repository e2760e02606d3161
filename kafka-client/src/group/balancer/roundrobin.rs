//! `roundrobin`: all partitions of all subscribed topics (topics sorted, partitions ascending)
//! dealt in turn to the members in Java's member order, skipping members not subscribed to the
//! partition's topic.

use std::collections::BTreeMap;

use super::{
    member_order_start, plain_assignments, subscribed_topics, Assignment, Balancer, BalancerError,
    GroupMember,
};
use crate::types::TopicPartition;

/// Java's `RoundRobinAssignor`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinBalancer;

impl Balancer for RoundRobinBalancer {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn assign(
        &self,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Assignment>, BalancerError> {
        let (mut out, ring) = member_order_start(members)?;
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
