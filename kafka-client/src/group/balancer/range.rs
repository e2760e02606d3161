//! `range`: per topic, consecutive ranges of partitions to the topic's subscribers in Java's
//! member order (static members by instance id first, then the others by member id); the first
//! `partitions % subscribers` members get one more.

use std::collections::BTreeMap;

use super::{
    check_members, member_info_cmp, plain_assignments, plain_subscription, subscribed_topics,
    Assignment, Balancer, BalancerError, GroupMember, RebalanceProtocol, Subscription,
    TopicPartition,
};

/// Java's `RangeAssignor` (without its rack-aware mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeBalancer;

impl Balancer for RangeBalancer {
    fn name(&self) -> &str {
        "range"
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
        let mut sorted: Vec<&GroupMember> = members.iter().collect();
        sorted.sort_by(|a, b| member_info_cmp(a, b));
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
