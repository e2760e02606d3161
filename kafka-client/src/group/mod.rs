//! Consumer groups.
//!
//! - [`balancer`]: the partition assignors ("balancers") of the classic group protocol — range,
//!   round-robin, sticky and cooperative-sticky — as pure functions over the members' subscriptions,
//!   with the `ConsumerProtocol` wire formats they exchange through JoinGroup / SyncGroup.
//! - `member` (crate-private): the classic-protocol group member as a sans-IO state machine.
//! - `consumer_member` (crate-private): the KIP-848 consumer-protocol member (`group.protocol=consumer`) as a
//!   sans-IO state machine: ConsumerGroupHeartbeat, server-side assignors.
//! - `driver` (internal): the tokio task that runs one member (either kind) for a
//!   [`Consumer`](crate::Consumer); see [`Consumer::subscribe`](crate::Consumer::subscribe) and
//!   the [`consumer`](crate::consumer) module docs for the rebalance hooks and their ordering.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub mod balancer;
pub(crate) mod consumer_member;
pub(crate) mod driver;
pub(crate) mod member;

/// A boxed, sendable future: what the [`RebalanceHooks`](crate::consumer::RebalanceHooks)
/// methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The balancer named as in Java's `partition.assignment.strategy` (either the short protocol
/// name or the Java class name): `range`, `roundrobin`, `sticky`, `cooperative-sticky`.
pub fn balancer_by_name(name: &str) -> Option<Arc<dyn balancer::Balancer>> {
    let short = name.rsplit('.').next().unwrap_or(name);
    Some(match short {
        "range" | "RangeAssignor" => Arc::new(balancer::RangeBalancer),
        "roundrobin" | "RoundRobinAssignor" => Arc::new(balancer::RoundRobinBalancer),
        "sticky" | "StickyAssignor" => Arc::new(balancer::StickyBalancer),
        "cooperative-sticky" | "CooperativeStickyAssignor" => {
            Arc::new(balancer::CooperativeStickyBalancer)
        }
        _ => return None,
    })
}
