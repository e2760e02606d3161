//! `range`: per topic, consecutive ranges of partitions to the topic's subscribers in Java's
//! member order (static members by instance id first, then the others by member id); the first
//! `partitions % subscribers` members get one more.

use std::collections::BTreeMap;

use super::{
    member_order_start, plain_assignments, subscribed_topics, Assignment, Balancer, BalancerError,
    GroupMember,
};
use crate::types::TopicPartition;

/// Java's `RangeAssignor` (without its rack-aware mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeBalancer;

impl Balancer for RangeBalancer {
    fn name(&self) -> &str {
        "range"
    }

    fn assign(
        &self,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Assignment>, BalancerError> {
        let (mut out, sorted) = member_order_start(members)?;
        for (topic, count) in subscribed_topics(members, topics) {
            let subs: Vec<&&GroupMember> = sorted
                .iter()
                .filter(|m| m.subscription.topics.contains(&topic))
                .collect();
            let n = subs.len() as i64;
            let count = i64::from(count);
            let per = count / n;
            let extra = count % n;
            for (i, m) in subs.iter().enumerate() {
                let i = i as i64;
                let start = per * i + i.min(extra);
                let len = per + i64::from(i < extra);
                let list = out.entry(m.member_id.clone()).or_default();
                for p in start..start + len {
                    list.push(TopicPartition::new(topic.as_str(), p as i32));
                }
            }
        }
        Ok(plain_assignments(out))
    }
}
