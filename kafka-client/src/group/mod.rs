//! Consumer groups.
//!
//! - [`balancer`]: the partition assignors ("balancers") of the classic group protocol — range,
//!   round-robin, sticky and cooperative-sticky — as pure functions over the members' subscriptions,
//!   with the `ConsumerProtocol` wire formats they exchange through JoinGroup / SyncGroup.

pub mod balancer;

pub mod member;
