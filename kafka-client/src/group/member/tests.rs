//! Deterministic tests of the group member against a scripted coordinator: no broker, no sleeps,
//! time is injected.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::messages::find_coordinator::Coordinator as WireCoordinator;
use kafka_wire::messages::join_group::JoinGroupResponseMember;
use kafka_wire::messages::{
    FindCoordinatorResponse, HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
    SyncGroupResponse,
};
use kafka_wire::{ErrorCode, KString};
use proptest::prelude::*;

use super::*;
use crate::group::balancer::{CooperativeStickyBalancer, RangeBalancer};

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition {
        topic: topic.to_string(),
        partition,
    }
}

fn tps(list: &[i32]) -> Vec<TopicPartition> {
    list.iter().map(|p| tp("t", *p)).collect()
}

/// The member plus a virtual clock and a log of everything it emitted.
struct Sim {
    m: Member,
    now: Instant,
}

impl Sim {
    fn new(balancer: Arc<dyn Balancer>, instance: Option<&str>) -> Sim {
        let now = Instant::now();
        let mut cfg = MemberConfig::new("g", vec!["t".to_string()]);
        cfg.instance_id = instance.map(str::to_string);
        let mut m = Member::new(cfg, vec![balancer], now);
        m.start(now);
        Sim { m, now }
    }

    fn eager() -> Sim {
        Sim::new(Arc::new(RangeBalancer), None)
    }

    fn coop() -> Sim {
        Sim::new(Arc::new(CooperativeStickyBalancer), None)
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.m.handle_timeout(self.now);
    }

    /// Advances to the member's next timeout.
    fn advance_to_timeout(&mut self) {
        let t = self.m.poll_timeout().expect("a timeout is armed");
        assert!(t >= self.now);
        self.now = t;
        self.m.handle_timeout(self.now);
    }

    fn transmit(&mut self) -> GroupRequest {
        let r = self.m.poll_transmit().expect("a request to send");
        assert!(self.m.poll_transmit().is_none(), "one request in flight");
        r
    }

    fn respond(&mut self, r: GroupResponse) {
        self.m.handle_response(self.now, r);
    }

    fn events(&mut self) -> Vec<GroupEvent> {
        std::iter::from_fn(|| self.m.poll_event()).collect()
    }

    /// FindCoordinator round trip to node 1.
    fn find(&mut self) {
        assert!(matches!(
            self.transmit(),
            GroupRequest::FindCoordinator { .. }
        ));
        self.respond(find_ok(1));
        assert_eq!(self.m.coordinator().map(|c| c.node_id), Some(1));
    }

    /// Expects a JoinGroup and answers as a follower.
    fn join_follower(&mut self, generation: i32) -> JoinGroupRequest {
        let GroupRequest::JoinGroup { request, .. } = self.transmit() else {
            panic!("expected JoinGroup")
        };
        self.respond(join_ok(generation, "me", "other", "x", vec![]));
        request
    }

    /// Expects a SyncGroup and answers with `partitions`.
    fn sync(&mut self, partitions: &[i32]) -> SyncGroupRequest {
        let GroupRequest::SyncGroup { request, .. } = self.transmit() else {
            panic!("expected SyncGroup")
        };
        self.respond(sync_ok(partitions));
        request
    }

    fn heartbeat(&mut self, error: ErrorCode) -> HeartbeatRequest {
        let GroupRequest::Heartbeat { request, .. } = self.transmit() else {
            panic!("expected Heartbeat")
        };
        self.respond(GroupResponse::Heartbeat(HeartbeatResponse {
            error_code: error.0,
            ..Default::default()
        }));
        request
    }
}

fn find_ok(node: i32) -> GroupResponse {
    GroupResponse::FindCoordinator(FindCoordinatorResponse {
        coordinators: vec![WireCoordinator {
            key: KString::from("g"),
            node_id: node,
            host: KString::from("127.0.0.1"),
            port: 9092,
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn join_ok(
    generation: i32,
    member: &str,
    leader: &str,
    protocol: &str,
    members: Vec<(&str, Bytes)>,
) -> GroupResponse {
    GroupResponse::JoinGroup(JoinGroupResponse {
        generation_id: generation,
        protocol_type: Some(KString::from("consumer")),
        protocol_name: Some(KString::from(protocol)),
        leader: KString::from(leader),
        member_id: KString::from(member),
        members: members
            .into_iter()
            .map(|(id, metadata)| JoinGroupResponseMember {
                member_id: KString::from(id),
                metadata,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn join_err(error: ErrorCode, member: &str) -> GroupResponse {
    GroupResponse::JoinGroup(JoinGroupResponse {
        error_code: error.0,
        member_id: KString::from(member),
        generation_id: -1,
        ..Default::default()
    })
}

fn assignment(partitions: &[i32]) -> Bytes {
    Assignment {
        partitions: tps(partitions),
        user_data: None,
    }
    .encode(3)
    .expect("encodes")
}

fn sync_ok(partitions: &[i32]) -> GroupResponse {
    GroupResponse::SyncGroup(SyncGroupResponse {
        assignment: assignment(partitions),
        ..Default::default()
    })
}

fn sync_err(error: ErrorCode) -> GroupResponse {
    GroupResponse::SyncGroup(SyncGroupResponse {
        error_code: error.0,
        ..Default::default()
    })
}

fn assigned(partitions: &[i32], generation: i32) -> GroupEvent {
    GroupEvent::Assigned {
        partitions: tps(partitions),
        generation,
    }
}

fn revoked(partitions: &[i32]) -> GroupEvent {
    GroupEvent::Revoked {
        partitions: tps(partitions),
    }
}

fn lost(partitions: &[i32]) -> GroupEvent {
    GroupEvent::Lost {
        partitions: tps(partitions),
    }
}

fn subscription(topics: &[&str], owned: &[i32]) -> Bytes {
    Subscription {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        owned_partitions: tps(owned),
        generation_id: -1,
        ..Default::default()
    }
    .encode(3)
    .expect("encodes")
}

/// Brings an eager member to Stable in generation 1 owning `partitions`.
fn stable_eager(partitions: &[i32]) -> Sim {
    let mut s = Sim::eager();
    s.find();
    s.join_follower(1);
    s.sync(partitions);
    assert_eq!(s.events(), vec![assigned(partitions, 1)]);
    assert!(s.m.is_stable());
    s
}

fn stable_coop(partitions: &[i32]) -> Sim {
    let mut s = Sim::coop();
    s.find();
    s.join_follower(1);
    s.sync(partitions);
    assert_eq!(s.events(), vec![assigned(partitions, 1)]);
    s
}

#[test]
fn join_as_follower() {
    let mut s = Sim::eager();
    assert_eq!(s.m.state_name(), "FindCoordinator");
    let GroupRequest::FindCoordinator { version, request } = s.transmit() else {
        panic!("expected FindCoordinator")
    };
    assert_eq!(version, 6);
    assert_eq!(request.coordinator_keys, vec![KString::from("g")]);
    assert!(s.m.poll_transmit().is_none());
    s.respond(find_ok(1));
    assert_eq!(s.m.state_name(), "AwaitJoin");
    let join = s.join_follower(3);
    assert_eq!(join.group_id.as_str(), "g");
    assert_eq!(join.member_id.as_str(), "");
    assert_eq!(join.session_timeout_ms, 45_000);
    assert_eq!(join.rebalance_timeout_ms, 60_000);
    assert_eq!(join.protocols.len(), 1);
    assert_eq!(join.protocols[0].name.as_str(), "range");
    let sub = Subscription::decode(&join.protocols[0].metadata).unwrap();
    assert_eq!(sub.topics, vec!["t".to_string()]);
    assert_eq!(s.m.member_id(), "me");
    let sync = s.sync(&[0, 2]);
    assert_eq!(sync.generation_id, 3);
    assert_eq!(sync.member_id.as_str(), "me");
    assert!(sync.assignments.is_empty(), "followers send no assignments");
    assert_eq!(s.events(), vec![assigned(&[0, 2], 3)]);
    assert!(s.m.is_stable());
    assert_eq!(s.m.generation(), 3);
    assert_eq!(s.m.owned().len(), 2);
}

#[test]
fn join_as_leader_runs_the_balancer() {
    let mut s = Sim::eager();
    s.find();
    let GroupRequest::JoinGroup { .. } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    s.respond(join_ok(
        1,
        "a",
        "a",
        "range",
        vec![
            ("a", subscription(&["t"], &[])),
            ("b", subscription(&["t", "u"], &[])),
        ],
    ));
    assert_eq!(
        s.events(),
        vec![GroupEvent::NeedMetadata {
            topics: vec!["t".to_string(), "u".to_string()]
        }]
    );
    assert_eq!(s.m.state_name(), "AwaitMetadata");
    assert!(
        s.m.poll_transmit().is_none(),
        "nothing to send before metadata"
    );
    let meta: BTreeMap<String, i32> = [("t".to_string(), 4), ("u".to_string(), 2)].into();
    s.m.provide_metadata(s.now, &meta);
    let GroupRequest::SyncGroup { request, .. } = s.transmit() else {
        panic!("expected SyncGroup")
    };
    assert_eq!(request.generation_id, 1);
    assert_eq!(
        request.protocol_name.as_ref().map(|p| p.as_str()),
        Some("range")
    );
    let mut by_member = BTreeMap::new();
    for a in &request.assignments {
        let asg = Assignment::decode(&a.assignment).unwrap();
        by_member.insert(a.member_id.to_string(), asg.partitions);
    }
    // Range: t's 4 partitions split 2/2, u's 2 go to b (the only subscriber).
    assert_eq!(by_member["a"], tps(&[0, 1]));
    assert_eq!(
        by_member["b"],
        vec![tp("t", 2), tp("t", 3), tp("u", 0), tp("u", 1)]
    );
    s.respond(sync_ok(&[0, 1]));
    assert_eq!(s.events(), vec![assigned(&[0, 1], 1)]);
    assert!(s.m.is_stable());
}

#[test]
fn leader_metadata_never_given_times_out_and_rejoins() {
    let mut s = Sim::eager();
    s.find();
    s.transmit();
    s.respond(join_ok(
        1,
        "a",
        "a",
        "range",
        vec![("a", subscription(&["t"], &[]))],
    ));
    s.events();
    s.advance(Duration::from_secs(59));
    assert_eq!(s.m.state_name(), "AwaitMetadata");
    s.advance(Duration::from_secs(1));
    assert!(matches!(s.transmit(), GroupRequest::JoinGroup { .. }));
}

#[test]
fn eager_rebalance_revokes_all_then_assigns() {
    let mut s = stable_eager(&[0, 1]);
    s.advance(Duration::from_secs(3));
    s.heartbeat(ErrorCode::REBALANCE_IN_PROGRESS);
    // Eager: everything is revoked before the JoinGroup goes out.
    assert_eq!(s.events(), vec![revoked(&[0, 1])]);
    assert!(s.m.owned().is_empty());
    let join = s.join_follower(2);
    assert_eq!(join.member_id.as_str(), "me");
    let sub = Subscription::decode(&join.protocols[0].metadata).unwrap();
    assert!(sub.owned_partitions.is_empty());
    s.sync(&[1, 2]);
    // The whole assignment, including the partition we had before.
    assert_eq!(s.events(), vec![assigned(&[1, 2], 2)]);
}

#[test]
fn cooperative_two_rounds() {
    let mut s = stable_coop(&[0, 1, 2]);
    s.advance(Duration::from_secs(3));
    s.heartbeat(ErrorCode::REBALANCE_IN_PROGRESS);
    // Cooperative: nothing revoked when the rebalance starts.
    assert_eq!(s.events(), vec![]);
    let join = s.join_follower(2);
    let sub = Subscription::decode(&join.protocols[0].metadata).unwrap();
    assert_eq!(sub.owned_partitions, tps(&[0, 1, 2]));
    assert_eq!(sub.generation_id, 1);
    // First round: partition 2 moves away, 0 and 1 stay.
    s.sync(&[0, 1]);
    assert_eq!(s.events(), vec![revoked(&[2]), assigned(&[], 2)]);
    // ... and the member rejoins at once (second round) without 2.
    assert_eq!(s.m.state_name(), "AwaitJoin");
    let join = s.join_follower(3);
    let sub = Subscription::decode(&join.protocols[0].metadata).unwrap();
    assert_eq!(sub.owned_partitions, tps(&[0, 1]));
    // Second round: partition 3 is added; 0 and 1 were never revoked.
    s.sync(&[0, 1, 3]);
    assert_eq!(s.events(), vec![assigned(&[3], 3)]);
    assert!(s.m.is_stable());
    assert_eq!(
        s.m.owned().iter().cloned().collect::<Vec<_>>(),
        tps(&[0, 1, 3])
    );
}

#[test]
fn cooperative_without_moves_stays_stable() {
    let mut s = stable_coop(&[0]);
    s.m.rejoin(s.now, "test");
    assert_eq!(s.events(), vec![]);
    s.join_follower(2);
    s.sync(&[0, 5]);
    assert_eq!(s.events(), vec![assigned(&[5], 2)]);
    assert!(s.m.is_stable());
}

#[test]
fn heartbeat_timing() {
    let mut s = stable_eager(&[0]);
    assert!(s.m.poll_transmit().is_none());
    assert_eq!(s.m.poll_timeout(), Some(s.now + Duration::from_secs(3)));
    s.advance(Duration::from_millis(2999));
    assert!(s.m.poll_transmit().is_none(), "not yet");
    s.advance(Duration::from_millis(1));
    let hb = s.heartbeat(ErrorCode::NONE);
    assert_eq!(hb.generation_id, 1);
    assert_eq!(hb.member_id.as_str(), "me");
    // Next one heartbeat.interval after the answer.
    assert_eq!(s.m.poll_timeout(), Some(s.now + Duration::from_secs(3)));
    for _ in 0..10 {
        s.advance_to_timeout();
        s.heartbeat(ErrorCode::NONE);
    }
    assert!(s.m.is_stable());
    assert_eq!(s.events(), vec![]);
}

#[test]
fn session_timeout_without_heartbeat_answer_loses_partitions() {
    let mut s = stable_eager(&[0, 1]);
    s.advance(Duration::from_secs(3));
    assert!(matches!(s.transmit(), GroupRequest::Heartbeat { .. }));
    // No answer: the request deadline is the session deadline (45 s after the last answer).
    assert_eq!(s.m.poll_timeout(), Some(s.now + Duration::from_secs(42)));
    s.advance(Duration::from_secs(41));
    assert_eq!(s.events(), vec![]);
    s.advance(Duration::from_secs(1));
    assert_eq!(s.events(), vec![lost(&[0, 1])]);
    assert_eq!(s.m.state_name(), "FindCoordinator");
    assert_eq!(s.m.generation(), -1);
}

#[test]
fn coordinator_moved_resumes_heartbeats() {
    let mut s = stable_eager(&[0]);
    s.advance(Duration::from_secs(3));
    s.heartbeat(ErrorCode::NOT_COORDINATOR);
    assert_eq!(s.m.state_name(), "FindCoordinator");
    assert!(s.m.coordinator().is_none());
    assert!(s.m.poll_transmit().is_none(), "backs off first");
    s.advance_to_timeout();
    assert!(matches!(s.transmit(), GroupRequest::FindCoordinator { .. }));
    s.respond(find_ok(2));
    assert_eq!(s.m.coordinator().map(|c| c.node_id), Some(2));
    // Same generation, heartbeat at once; nothing revoked or lost.
    let hb = s.heartbeat(ErrorCode::NONE);
    assert_eq!(hb.generation_id, 1);
    assert_eq!(s.events(), vec![]);
    assert!(s.m.is_stable());
}

#[test]
fn connection_loss_during_join_finds_coordinator_again() {
    let mut s = Sim::eager();
    s.find();
    assert!(matches!(s.transmit(), GroupRequest::JoinGroup { .. }));
    s.m.handle_transport_error(s.now);
    assert_eq!(s.m.state_name(), "FindCoordinator");
    s.advance_to_timeout();
    s.find();
    s.join_follower(1);
    s.sync(&[0]);
    assert_eq!(s.events(), vec![assigned(&[0], 1)]);
}

#[test]
fn join_request_times_out_after_rebalance_timeout() {
    let mut s = Sim::eager();
    s.find();
    assert!(matches!(s.transmit(), GroupRequest::JoinGroup { .. }));
    assert_eq!(s.m.poll_timeout(), Some(s.now + Duration::from_secs(65)));
    s.advance(Duration::from_secs(65));
    assert_eq!(s.m.state_name(), "FindCoordinator");
}

#[test]
fn unknown_member_id_is_lost_then_rejoins_with_fresh_id() {
    let mut s = stable_coop(&[0, 1]);
    s.advance(Duration::from_secs(3));
    s.heartbeat(ErrorCode::UNKNOWN_MEMBER_ID);
    assert_eq!(s.events(), vec![lost(&[0, 1])]);
    assert!(s.m.owned().is_empty());
    let join = s.join_follower(5);
    assert_eq!(join.member_id.as_str(), "", "fresh member id");
    let sub = Subscription::decode(&join.protocols[0].metadata).unwrap();
    assert!(sub.owned_partitions.is_empty());
    s.sync(&[1]);
    assert_eq!(s.events(), vec![assigned(&[1], 5)]);
}

#[test]
fn illegal_generation_on_sync_is_lost_keeps_member_id() {
    let mut s = stable_coop(&[0]);
    s.m.rejoin(s.now, "test");
    s.join_follower(2);
    assert!(matches!(s.transmit(), GroupRequest::SyncGroup { .. }));
    s.respond(sync_err(ErrorCode::ILLEGAL_GENERATION));
    assert_eq!(s.events(), vec![lost(&[0])]);
    let join = s.join_follower(3);
    assert_eq!(join.member_id.as_str(), "me");
}

#[test]
fn fenced_instance_id_is_fatal() {
    let mut s = Sim::new(Arc::new(RangeBalancer), Some("i-1"));
    s.find();
    let join = s.join_follower(1);
    assert_eq!(
        join.group_instance_id.as_ref().map(|s| s.as_str()),
        Some("i-1")
    );
    s.sync(&[0]);
    s.events();
    s.advance(Duration::from_secs(3));
    s.heartbeat(ErrorCode::FENCED_INSTANCE_ID);
    assert_eq!(
        s.events(),
        vec![
            lost(&[0]),
            GroupEvent::Fatal {
                error: ErrorCode::FENCED_INSTANCE_ID
            }
        ]
    );
    assert!(s.m.is_closed());
    assert!(s.m.poll_transmit().is_none());
    assert!(s.m.poll_timeout().is_none());
}

#[test]
fn member_id_required_rejoins_with_given_id() {
    let mut s = Sim::eager();
    s.find();
    let GroupRequest::JoinGroup { request, .. } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    assert_eq!(request.member_id.as_str(), "");
    s.respond(join_err(ErrorCode::MEMBER_ID_REQUIRED, "given-1"));
    assert_eq!(s.events(), vec![]);
    let GroupRequest::JoinGroup { request, .. } = s.transmit() else {
        panic!("expected a second JoinGroup")
    };
    assert_eq!(request.member_id.as_str(), "given-1");
}

#[test]
fn rebalance_in_progress_on_sync_rejoins() {
    let mut s = Sim::coop();
    s.find();
    s.join_follower(1);
    assert!(matches!(s.transmit(), GroupRequest::SyncGroup { .. }));
    s.respond(sync_err(ErrorCode::REBALANCE_IN_PROGRESS));
    assert_eq!(s.m.state_name(), "AwaitJoin");
    assert_eq!(s.events(), vec![]);
}

#[test]
fn coordinator_load_in_progress_backs_off() {
    let mut s = Sim::eager();
    s.find();
    s.transmit();
    s.respond(join_err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS, ""));
    assert!(s.m.poll_transmit().is_none());
    assert_eq!(s.m.poll_timeout(), Some(s.now + Duration::from_millis(100)));
    s.advance_to_timeout();
    assert!(matches!(s.transmit(), GroupRequest::JoinGroup { .. }));
}

#[test]
fn leave_revokes_and_sends_leave_group() {
    let mut s = stable_eager(&[0, 3]);
    s.m.leave(s.now);
    assert_eq!(s.events(), vec![revoked(&[0, 3])]);
    let GroupRequest::LeaveGroup { version, request } = s.transmit() else {
        panic!("expected LeaveGroup")
    };
    assert_eq!(version, 5);
    assert_eq!(request.members.len(), 1);
    assert_eq!(request.members[0].member_id.as_str(), "me");
    s.respond(GroupResponse::LeaveGroup(LeaveGroupResponse::default()));
    assert_eq!(s.events(), vec![GroupEvent::Left]);
    assert!(s.m.is_closed());
    // A closed member cannot be restarted.
    s.m.start(s.now);
    assert!(s.m.is_closed());
}

#[test]
fn static_member_leaves_without_leave_group() {
    let mut s = Sim::new(Arc::new(RangeBalancer), Some("i-1"));
    s.find();
    s.join_follower(1);
    s.sync(&[2]);
    s.events();
    s.m.leave(s.now);
    assert_eq!(s.events(), vec![revoked(&[2]), GroupEvent::Left]);
    assert!(s.m.poll_transmit().is_none());
    assert!(s.m.is_closed());
}

#[test]
fn old_versions_build_old_shapes() {
    let mut s = Sim::eager();
    s.m.set_versions(GroupVersions {
        find_coordinator: 2,
        join_group: 3,
        sync_group: 2,
        heartbeat: 2,
        leave_group: 2,
    });
    let GroupRequest::FindCoordinator { version, request } = s.transmit() else {
        panic!("expected FindCoordinator")
    };
    assert_eq!(version, 2);
    assert_eq!(request.key.as_str(), "g");
    s.respond(GroupResponse::FindCoordinator(FindCoordinatorResponse {
        node_id: 7,
        host: KString::from("127.0.0.1"),
        port: 1,
        ..Default::default()
    }));
    assert_eq!(s.m.coordinator().map(|c| c.node_id), Some(7));
    s.join_follower(1);
    s.sync(&[0]);
    s.m.leave(s.now);
    assert_eq!(s.events(), vec![assigned(&[0], 1), revoked(&[0])]);
    let GroupRequest::LeaveGroup { request, .. } = s.transmit() else {
        panic!("expected LeaveGroup")
    };
    assert_eq!(request.member_id.as_str(), "me");
    assert!(request.members.is_empty());
}

#[test]
fn stale_or_unexpected_responses_are_ignored() {
    let mut s = stable_eager(&[0]);
    // A heartbeat answer with no heartbeat in flight.
    s.respond(GroupResponse::Heartbeat(HeartbeatResponse {
        error_code: ErrorCode::UNKNOWN_MEMBER_ID.0,
        ..Default::default()
    }));
    s.respond(sync_ok(&[9]));
    assert_eq!(s.events(), vec![]);
    assert!(s.m.is_stable());
}

#[test]
fn commit_request_is_stamped_and_only_when_stable() {
    let mut s = Sim::new(Arc::new(RangeBalancer), Some("i-1"));
    let offsets = vec![
        OffsetToCommit {
            partition: tp("t", 1),
            offset: 42,
            leader_epoch: 3,
        },
        OffsetToCommit {
            partition: tp("u", 0),
            offset: 7,
            leader_epoch: -1,
        },
    ];
    assert!(
        s.m.commit_request(9, &offsets).is_none(),
        "not in a generation yet"
    );
    s.find();
    s.join_follower(4);
    assert!(s.m.commit_request(9, &offsets).is_none(), "not synced yet");
    s.sync(&[1]);
    let (version, req) = s.m.commit_request(10, &offsets).expect("stable");
    assert_eq!(version, 9, "capped below topic ids");
    assert_eq!(req.generation_id_or_member_epoch, 4);
    assert_eq!(req.member_id.as_str(), "me");
    assert_eq!(
        req.group_instance_id.as_ref().map(|i| i.as_str()),
        Some("i-1")
    );
    assert_eq!(req.topics.len(), 2);
    assert_eq!(req.topics[0].name.as_str(), "t");
    assert_eq!(req.topics[0].partitions[0].committed_offset, 42);
    assert_eq!(req.topics[0].partitions[0].committed_leader_epoch, 3);
    assert_eq!(req.topics[1].name.as_str(), "u");
}

#[test]
fn commit_errors_drive_the_group() {
    let mut s = stable_eager(&[0]);
    s.m.handle_commit_error(s.now, ErrorCode::OFFSET_METADATA_TOO_LARGE);
    assert!(s.m.is_stable(), "partition-level errors change nothing");
    s.m.handle_commit_error(s.now, ErrorCode::REBALANCE_IN_PROGRESS);
    assert_eq!(s.events(), vec![revoked(&[0])]);
    assert_eq!(s.m.state_name(), "AwaitJoin");

    let mut s = stable_coop(&[0, 1]);
    s.m.handle_commit_error(s.now, ErrorCode::ILLEGAL_GENERATION);
    assert_eq!(s.events(), vec![lost(&[0, 1])]);
    let join = s.join_follower(2);
    assert_eq!(join.member_id.as_str(), "me");
}

// ---------------------------------------------------------------------------------------------
// Property test: any sequence of answers, errors and timeouts.

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Transmit,
    TransportError,
    Find(i16),
    Join {
        error: i16,
        leader: bool,
        gen: i32,
    },
    Sync {
        error: i16,
        parts: Vec<i32>,
    },
    Heartbeat(i16),
    Leave,
    LeaveResponse,
    Metadata,
    Rejoin,
    Garbage,
    CommitError(i16),
    /// The simulated coordinator answers the request in flight with this error code.
    Answer {
        error: i16,
        leader: bool,
        parts: Vec<i32>,
    },
}

fn error_code() -> impl Strategy<Value = i16> {
    prop_oneof![
        4 => Just(0i16),
        1 => prop::sample::select(vec![-1i16, 14, 15, 16, 22, 23, 25, 27, 30, 79, 82, 81, 7]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..70_000).prop_map(Op::Advance),
        Just(Op::Transmit),
        Just(Op::TransportError),
        error_code().prop_map(Op::Find),
        (error_code(), any::<bool>(), 0i32..5).prop_map(|(error, leader, gen)| Op::Join {
            error,
            leader,
            gen
        }),
        (error_code(), prop::collection::vec(0i32..6, 0..5))
            .prop_map(|(error, parts)| Op::Sync { error, parts }),
        error_code().prop_map(Op::Heartbeat),
        Just(Op::Leave),
        Just(Op::LeaveResponse),
        Just(Op::Metadata),
        Just(Op::Rejoin),
        Just(Op::Garbage),
        error_code().prop_map(Op::CommitError),
    ]
}

fn op_mix() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => op(),
        3 => (error_code(), any::<bool>(), prop::collection::vec(0i32..6, 0..5))
            .prop_map(|(error, leader, parts)| Op::Answer { error, leader, parts }),
    ]
}

fn run_ops(mut s: Sim, ops: Vec<Op>) {
    let mut owned: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut in_flight: Option<GroupRequest> = None;
    let mut gen = 0;
    for op in ops {
        // Send whatever is ready, so most answers meet a request in flight.
        if let Some(r) = s.m.poll_transmit() {
            in_flight = Some(r);
        }
        match op {
            Op::Answer {
                error,
                leader,
                parts,
            } => {
                gen += 1;
                let name = s.m.balancers[0].name().to_string();
                let response = match in_flight.take() {
                    None => None,
                    Some(GroupRequest::FindCoordinator { .. }) => {
                        let mut r = find_ok(1);
                        if let GroupResponse::FindCoordinator(f) = &mut r {
                            f.coordinators[0].error_code = error;
                        }
                        Some(r)
                    }
                    Some(GroupRequest::JoinGroup { .. }) => {
                        let mut r = join_ok(
                            gen,
                            "me",
                            if leader { "me" } else { "o" },
                            &name,
                            vec![
                                ("me", subscription(&["t"], &[])),
                                ("o", subscription(&["t"], &[])),
                            ],
                        );
                        if let GroupResponse::JoinGroup(j) = &mut r {
                            j.error_code = error;
                        }
                        Some(r)
                    }
                    Some(GroupRequest::SyncGroup { .. }) => {
                        let mut r = sync_ok(&parts);
                        if let GroupResponse::SyncGroup(x) = &mut r {
                            x.error_code = error;
                        }
                        Some(r)
                    }
                    Some(GroupRequest::Heartbeat { .. }) => {
                        Some(GroupResponse::Heartbeat(HeartbeatResponse {
                            error_code: error,
                            ..Default::default()
                        }))
                    }
                    Some(GroupRequest::LeaveGroup { .. }) => {
                        Some(GroupResponse::LeaveGroup(LeaveGroupResponse::default()))
                    }
                };
                if let Some(r) = response {
                    s.respond(r);
                }
            }
            Op::Advance(ms) => s.advance(Duration::from_millis(ms)),
            Op::Transmit => {
                let _ = s.m.poll_transmit();
            }
            Op::TransportError => s.m.handle_transport_error(s.now),
            Op::Find(e) => {
                let mut r = find_ok(1);
                if let GroupResponse::FindCoordinator(f) = &mut r {
                    f.coordinators[0].error_code = e;
                }
                s.respond(r)
            }
            Op::Join { error, leader, gen } => {
                let mut r = join_ok(
                    gen,
                    "me",
                    if leader { "me" } else { "o" },
                    s.m.balancers[0].name(),
                    vec![
                        ("me", subscription(&["t"], &[])),
                        ("o", Bytes::from_static(b"\xff")),
                    ],
                );
                if let GroupResponse::JoinGroup(j) = &mut r {
                    j.error_code = error;
                }
                s.respond(r)
            }
            Op::Sync { error, parts } => {
                let mut r = sync_ok(&parts);
                if let GroupResponse::SyncGroup(x) = &mut r {
                    x.error_code = error;
                }
                s.respond(r)
            }
            Op::Heartbeat(e) => s.respond(GroupResponse::Heartbeat(HeartbeatResponse {
                error_code: e,
                ..Default::default()
            })),
            Op::Leave => s.m.leave(s.now),
            Op::LeaveResponse => {
                s.respond(GroupResponse::LeaveGroup(LeaveGroupResponse::default()))
            }
            Op::Metadata => {
                let meta: BTreeMap<String, i32> = [("t".to_string(), 6)].into();
                s.m.provide_metadata(s.now, &meta)
            }
            Op::Rejoin => {
                s.m.rejoin(s.now, "test");
            }
            Op::CommitError(e) => {
                let offsets = [OffsetToCommit {
                    partition: tp("t", 0),
                    offset: 1,
                    leader_epoch: -1,
                }];
                let req = s.m.commit_request(9, &offsets);
                assert_eq!(req.is_some(), s.m.can_commit());
                assert!(!s.m.is_stable() || s.m.can_commit());
                s.m.handle_commit_error(s.now, ErrorCode(e))
            }
            Op::Garbage => s.respond(GroupResponse::SyncGroup(SyncGroupResponse {
                assignment: Bytes::from_static(b"\x00\x03\xff\xff\xff"),
                ..Default::default()
            })),
        }
        // Replay the events on a model of ownership.
        while let Some(ev) = s.m.poll_event() {
            match ev {
                GroupEvent::Assigned { partitions, .. } => {
                    for p in partitions {
                        assert!(
                            owned.insert(p.clone()),
                            "{p:?} assigned while already owned"
                        );
                    }
                }
                GroupEvent::Revoked { partitions } | GroupEvent::Lost { partitions } => {
                    assert!(!partitions.is_empty(), "empty revoke/lost event");
                    for p in partitions {
                        assert!(owned.remove(&p), "{p:?} revoked/lost but not owned");
                    }
                }
                GroupEvent::NeedMetadata { .. } | GroupEvent::Left | GroupEvent::Fatal { .. } => {}
            }
        }
        assert_eq!(&owned, s.m.owned(), "event model and member agree");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_sequences_never_panic_eager(ops in prop::collection::vec(op_mix(), 0..80)) {
        run_ops(Sim::eager(), ops);
    }

    #[test]
    fn random_sequences_never_panic_cooperative(ops in prop::collection::vec(op_mix(), 0..80)) {
        run_ops(Sim::coop(), ops);
    }
}

fn one_offset() -> Vec<OffsetToCommit> {
    vec![OffsetToCommit {
        partition: tp("t", 0),
        offset: 5,
        leader_epoch: -1,
    }]
}

#[test]
fn revoke_window_allows_commits_with_the_last_generation() {
    // Eager: the revoke hook runs between the revocation and the JoinGroup.
    let mut s = stable_eager(&[0, 1]);
    s.advance(Duration::from_secs(3));
    s.heartbeat(ErrorCode::REBALANCE_IN_PROGRESS);
    assert_eq!(s.events(), vec![revoked(&[0, 1])]);
    assert!(!s.m.is_stable());
    let (_, req) = s.m.commit_request(9, &one_offset()).expect("revoke window");
    assert_eq!(req.generation_id_or_member_epoch, 1);
    // Once the JoinGroup is out, the window is closed.
    s.join_follower(2);
    assert!(s.m.commit_request(9, &one_offset()).is_none());

    // Cooperative: after the sync that moves partitions away, before the second round.
    let mut s = stable_coop(&[0, 1, 2]);
    s.m.rejoin(s.now, "test");
    s.join_follower(2);
    s.sync(&[0, 1]);
    assert_eq!(s.events(), vec![revoked(&[2]), assigned(&[], 2)]);
    let (_, req) = s.m.commit_request(9, &one_offset()).expect("revoke window");
    assert_eq!(req.generation_id_or_member_epoch, 2);

    // Leaving: the revoke hook runs before the LeaveGroup goes out.
    let mut s = stable_coop(&[0]);
    s.m.leave(s.now);
    assert_eq!(s.events(), vec![revoked(&[0])]);
    assert!(s.m.can_commit());
    assert!(matches!(s.transmit(), GroupRequest::LeaveGroup { .. }));
    assert!(!s.m.can_commit());

    // Lost partitions: nothing may be committed.
    let mut s = stable_coop(&[0]);
    s.advance(Duration::from_secs(3));
    s.heartbeat(ErrorCode::ILLEGAL_GENERATION);
    assert_eq!(s.events(), vec![lost(&[0])]);
    assert!(s.m.commit_request(9, &one_offset()).is_none());
}

#[test]
fn transmit_target_peeks_without_taking() {
    let mut s = Sim::coop();
    assert_eq!(
        s.m.transmit_target(),
        Some(None),
        "FindCoordinator, any broker"
    );
    s.find();
    assert_eq!(
        s.m.transmit_target(),
        Some(Some(1)),
        "JoinGroup to the coordinator"
    );
    let _ = s.transmit();
    assert_eq!(s.m.transmit_target(), None, "in flight");
}

#[test]
fn set_topics_rejoins_with_the_new_subscription() {
    let mut s = stable_coop(&[0]);
    s.m.set_topics(s.now, vec!["t".to_string(), "u".to_string()]);
    let join = s.join_follower(2);
    let sub = Subscription::decode(&join.protocols[0].metadata).unwrap();
    assert_eq!(sub.topics, vec!["t".to_string(), "u".to_string()]);
}

/// Found by `tests/it/group_faults.rs`: a member closed while its coordinator's broker was down
/// revoked at once, so its revoke hook could not commit (REBALANCE_IN_PROGRESS: the member was
/// already closed) and the next owner re-read everything since the last commit; nor was a
/// LeaveGroup sent. Now it finds the coordinator first, then revokes (the hook commits with the
/// still valid generation) and leaves.
#[test]
fn leave_while_the_coordinator_is_unknown_finds_it_first() {
    let mut s = stable_coop(&[0, 3]);
    s.advance(Duration::from_secs(3));
    assert!(matches!(s.transmit(), GroupRequest::Heartbeat { .. }));
    s.m.handle_transport_error(s.now);
    assert_eq!(s.m.state_name(), "FindCoordinator");
    // A commit waits for the coordinator instead of failing: the generation lives on.
    let (_, req) =
        s.m.commit_request(9, &one_offset())
            .expect("synced generation");
    assert_eq!(req.generation_id_or_member_epoch, 1);
    s.m.leave(s.now);
    assert_eq!(
        s.events(),
        vec![],
        "nothing revoked before the coordinator is back"
    );
    assert_eq!(s.m.owned().len(), 2);
    s.advance_to_timeout();
    assert!(matches!(s.transmit(), GroupRequest::FindCoordinator { .. }));
    s.m.handle_transport_error(s.now);
    s.advance_to_timeout();
    assert!(matches!(s.transmit(), GroupRequest::FindCoordinator { .. }));
    s.respond(find_ok(2));
    assert_eq!(s.events(), vec![revoked(&[0, 3])]);
    // The revoke hook commits with the last generation, then the LeaveGroup goes out.
    let (_, req) = s.m.commit_request(9, &one_offset()).expect("revoke window");
    assert_eq!(req.generation_id_or_member_epoch, 1);
    let GroupRequest::LeaveGroup { request, .. } = s.transmit() else {
        panic!("expected LeaveGroup")
    };
    assert_eq!(request.members[0].member_id.as_str(), "me");
    s.respond(GroupResponse::LeaveGroup(LeaveGroupResponse::default()));
    assert_eq!(s.events(), vec![GroupEvent::Left]);
    assert!(s.m.is_closed());
}

/// The same, when the coordinator never comes back: the member gives up after the rebalance
/// timeout, revokes and leaves without a LeaveGroup.
#[test]
fn leave_without_coordinator_gives_up_after_the_rebalance_timeout() {
    let mut s = stable_coop(&[1]);
    s.advance(Duration::from_secs(3));
    s.heartbeat(ErrorCode::NOT_COORDINATOR);
    let start = s.now;
    s.m.leave(s.now);
    s.m.leave(s.now);
    assert_eq!(s.events(), vec![]);
    for _ in 0..10_000 {
        if s.m.is_closed() {
            break;
        }
        if let Some(r) = s.m.poll_transmit() {
            assert!(matches!(r, GroupRequest::FindCoordinator { .. }));
            s.m.handle_transport_error(s.now);
        }
        s.advance_to_timeout();
    }
    assert!(s.m.is_closed());
    assert_eq!(
        s.now - start,
        Duration::from_secs(60),
        "the rebalance timeout"
    );
    assert_eq!(s.events(), vec![revoked(&[1]), GroupEvent::Left]);
    assert!(s.m.poll_transmit().is_none());
}

/// Found by `tests/it/group_faults.rs` (a member closed while connections were being cut): the
/// driver asked `transmit_target` for a heartbeat, `leave` came in while it connected, then the
/// connection failed and the driver took the request that was ready (now the LeaveGroup) and
/// failed it: the member closed before the revoke hook ran, so the hook's commit was refused
/// and the next owner re-read the partitions. A request no longer overtakes a queued event, and
/// a transport error with nothing in flight changes nothing.
#[test]
fn leave_during_a_transmit_keeps_the_revoke_window_open() {
    let mut s = stable_coop(&[0, 3]);
    s.advance(Duration::from_secs(3));
    assert_eq!(s.m.transmit_target(), Some(Some(1)), "a heartbeat is due");
    // The driver awaits its connection; meanwhile the consumer closes.
    s.m.leave(s.now);
    // The connection fails: the driver takes the ready request and reports the failure.
    assert!(
        s.m.poll_transmit().is_none(),
        "no request before the revocation is taken"
    );
    s.m.handle_transport_error(s.now);
    assert_eq!(s.m.state_name(), "Leaving");
    assert_eq!(s.events(), vec![revoked(&[0, 3])]);
    // The revoke hook commits with the last generation, then the LeaveGroup goes out.
    let (_, req) = s.m.commit_request(9, &one_offset()).expect("revoke window");
    assert_eq!(req.generation_id_or_member_epoch, 1);
    assert!(matches!(s.transmit(), GroupRequest::LeaveGroup { .. }));
    s.respond(GroupResponse::LeaveGroup(LeaveGroupResponse::default()));
    assert_eq!(s.events(), vec![GroupEvent::Left]);
}

// ---------------------------------------------------------------------------------------------
// on_assignment (user data reaches the balancer), request_rejoin, cooperative safety

/// A cooperative balancer that records what `on_assignment` saw, and whose `assign` gives
/// every partition of `t` to the member named in `to` (a plan that can be unsafe), with user
/// data naming the member.
/// What `on_assignment` saw: user data, partitions, generation.
type Seen = (Option<Bytes>, Vec<TopicPartition>, i32);

struct Recording {
    seen: std::sync::Mutex<Vec<Seen>>,
    to: &'static str,
}

impl Recording {
    fn new(to: &'static str) -> Arc<Recording> {
        Arc::new(Recording {
            seen: std::sync::Mutex::new(Vec::new()),
            to,
        })
    }
}

impl Balancer for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }
    fn assign(
        &self,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Assignment>, crate::group::balancer::BalancerError> {
        let n = topics.get("t").copied().unwrap_or(0);
        Ok(members
            .iter()
            .map(|m| {
                let partitions = if m.member_id == self.to {
                    (0..n).map(|p| tp("t", p)).collect()
                } else {
                    Vec::new()
                };
                let user_data = Some(Bytes::from(format!("for {}", m.member_id)));
                (
                    m.member_id.clone(),
                    Assignment {
                        partitions,
                        user_data,
                    },
                )
            })
            .collect())
    }
    fn on_assignment(&self, assignment: &Assignment, generation: i32) {
        self.seen.lock().unwrap().push((
            assignment.user_data.clone(),
            assignment.partitions.clone(),
            generation,
        ));
    }
}

fn sync_with_user_data(partitions: &[i32], user_data: &'static [u8]) -> GroupResponse {
    GroupResponse::SyncGroup(SyncGroupResponse {
        assignment: Assignment {
            partitions: tps(partitions),
            user_data: Some(Bytes::from_static(user_data)),
        }
        .encode(3)
        .expect("encodes"),
        ..Default::default()
    })
}

#[test]
fn on_assignment_gets_the_exact_user_data_before_the_hooks_run() {
    let b = Recording::new("me");
    let mut s = Sim::new(b.clone(), None);
    s.find();
    let GroupRequest::JoinGroup { .. } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    s.respond(join_ok(4, "me", "other", "recording", vec![]));
    let GroupRequest::SyncGroup { .. } = s.transmit() else {
        panic!("expected SyncGroup")
    };
    s.respond(sync_with_user_data(&[0, 1], b"\x00\x01user\xff"));
    // Seen by the balancer when the answer was handled: before any event is handed out.
    assert_eq!(
        *b.seen.lock().unwrap(),
        vec![(
            Some(Bytes::from_static(b"\x00\x01user\xff")),
            tps(&[0, 1]),
            4
        )]
    );
    assert_eq!(s.events(), vec![assigned(&[0, 1], 4)]);
}

#[test]
fn request_rejoin_when_stable_joins_at_once_with_the_reason() {
    let mut s = stable_coop(&[0, 1]);
    s.m.set_versions(GroupVersions::default());
    assert!(s.m.rejoin(s.now, "warm-up ready"));
    assert_eq!(s.m.state_name(), "AwaitJoin");
    assert!(s.events().is_empty(), "cooperative: nothing is revoked");
    let GroupRequest::JoinGroup { version, request } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    assert!(version >= 8);
    assert_eq!(request.reason.as_deref(), Some("warm-up ready"));
    let sub = Subscription::decode(&request.protocols[0].metadata).unwrap();
    assert_eq!(sub.owned_partitions, tps(&[0, 1]));
    // The reason is sent once.
    s.respond(join_ok(2, "me", "other", "cooperative-sticky", vec![]));
    s.sync(&[0, 1]);
    assert_eq!(s.events(), vec![assigned(&[], 2)]);
    assert!(s.m.rejoin(s.now, "again"));
    let GroupRequest::JoinGroup { request, .. } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    assert_eq!(request.reason.as_deref(), Some("again"));
}

#[test]
fn request_rejoin_during_a_sync_joins_again_right_after_it() {
    let mut s = Sim::coop();
    s.find();
    s.join_follower(1);
    assert_eq!(s.m.state_name(), "AwaitSync");
    let GroupRequest::SyncGroup { .. } = s.transmit() else {
        panic!("expected SyncGroup")
    };
    // The SyncGroup is in flight: the round is not interrupted.
    assert!(s.m.rejoin(s.now, "ready"));
    assert_eq!(s.m.state_name(), "AwaitSync");
    assert!(s.m.poll_transmit().is_none(), "the sync stays in flight");
    s.respond(sync_ok(&[0]));
    assert_eq!(s.events(), vec![assigned(&[0], 1)]);
    assert_eq!(s.m.state_name(), "AwaitJoin");
    let GroupRequest::JoinGroup { request, .. } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    assert_eq!(request.reason.as_deref(), Some("ready"));
    // The metadata is computed now: it lists the partition just assigned.
    let sub = Subscription::decode(&request.protocols[0].metadata).unwrap();
    assert_eq!(sub.owned_partitions, tps(&[0]));
    assert_eq!(sub.generation_id, 1);
}

#[test]
fn request_rejoin_with_a_join_in_flight_joins_again_after_that_round() {
    let mut s = Sim::coop();
    s.find();
    let GroupRequest::JoinGroup { .. } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    assert!(s.m.rejoin(s.now, "later"));
    s.respond(join_ok(1, "me", "other", "cooperative-sticky", vec![]));
    s.sync(&[3]);
    assert_eq!(s.events(), vec![assigned(&[3], 1)]);
    let GroupRequest::JoinGroup { request, .. } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    assert_eq!(request.reason.as_deref(), Some("later"));
}

#[test]
fn request_rejoin_while_leaving_or_closed_does_nothing() {
    let mut s = stable_coop(&[0]);
    s.m.leave(s.now);
    assert_eq!(s.m.state_name(), "Leaving");
    assert!(!s.m.rejoin(s.now, "x"));
    assert_eq!(s.m.state_name(), "Leaving");
    assert_eq!(s.events(), vec![revoked(&[0])]);
    let GroupRequest::LeaveGroup { .. } = s.transmit() else {
        panic!("expected LeaveGroup")
    };
    s.respond(GroupResponse::LeaveGroup(LeaveGroupResponse::default()));
    assert!(s.m.is_closed());
    assert!(!s.m.rejoin(s.now, "x"));
    assert!(s.m.poll_transmit().is_none());
}

#[test]
fn an_old_join_group_version_carries_no_reason() {
    let mut s = stable_coop(&[0]);
    s.m.set_versions(GroupVersions {
        join_group: 7,
        ..GroupVersions::default()
    });
    s.m.rejoin(s.now, "why");
    let GroupRequest::JoinGroup { version, request } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    assert_eq!(version, 7);
    assert_eq!(request.reason, None);
}

fn member(id: &str, owned: &[i32], generation: i32) -> GroupMember {
    GroupMember {
        member_id: id.to_string(),
        instance_id: None,
        subscription: Subscription {
            topics: vec!["t".to_string()],
            owned_partitions: tps(owned),
            generation_id: generation,
            ..Default::default()
        },
    }
}

#[test]
fn adjust_cooperative_holds_back_partitions_moving_between_members() {
    let members = vec![
        member("a", &[0, 1], 3),
        member("b", &[2], 3),
        member("c", &[], -1),
    ];
    let mut plan: BTreeMap<String, Assignment> =
        [("a", vec![0]), ("b", vec![1, 2]), ("c", vec![3])]
            .into_iter()
            .map(|(m, p)| {
                (
                    m.to_string(),
                    Assignment {
                        partitions: tps(&p),
                        user_data: None,
                    },
                )
            })
            .collect();
    let held = crate::group::balancer::adjust_cooperative(&members, &mut plan);
    assert_eq!(
        held,
        vec![crate::group::balancer::HeldBack {
            partition: tp("t", 1),
            owner: "a".to_string(),
            to: "b".to_string(),
        }]
    );
    assert_eq!(plan["a"].partitions, tps(&[0]));
    assert_eq!(plan["b"].partitions, tps(&[2]));
    assert_eq!(
        plan["c"].partitions,
        tps(&[3]),
        "unowned partitions move freely"
    );
    // A stale claim (older generation) does not make its member the owner.
    let members = vec![member("a", &[5], 2), member("b", &[5], 3)];
    let mut plan: BTreeMap<String, Assignment> = [(
        "b".to_string(),
        Assignment {
            partitions: tps(&[5]),
            user_data: None,
        },
    )]
    .into();
    assert!(crate::group::balancer::adjust_cooperative(&members, &mut plan).is_empty());
}

#[test]
fn the_leader_refuses_an_unsafe_cooperative_plan_and_rejoins() {
    // The balancer gives everything to "b" although "a" (this member, the leader) owns 0 and 1.
    let b = Recording::new("b");
    let mut s = Sim::new(b, None);
    s.find();
    let GroupRequest::JoinGroup { .. } = s.transmit() else {
        panic!("expected JoinGroup")
    };
    s.respond(join_ok(
        2,
        "a",
        "a",
        "recording",
        vec![
            ("a", subscription(&["t"], &[0, 1])),
            ("b", subscription(&["t"], &[])),
        ],
    ));
    assert!(matches!(s.events()[..], [GroupEvent::NeedMetadata { .. }]));
    let meta: BTreeMap<String, i32> = [("t".to_string(), 3)].into();
    s.m.provide_metadata(s.now, &meta);
    let GroupRequest::SyncGroup { request, .. } = s.transmit() else {
        panic!("expected SyncGroup")
    };
    let by_member: BTreeMap<String, Vec<TopicPartition>> = request
        .assignments
        .iter()
        .map(|a| {
            (
                a.member_id.to_string(),
                Assignment::decode(&a.assignment).unwrap().partitions,
            )
        })
        .collect();
    // 0 and 1 are owned by "a": held back from "b" this round; 2 was free.
    assert_eq!(by_member["b"], tps(&[2]));
    assert_eq!(by_member["a"], tps(&[]));
    // The leader rejoins after its own sync, so the held-back partitions go out next round.
    s.respond(sync_ok(&[]));
    assert_eq!(s.events(), vec![assigned(&[], 2)]);
    let GroupRequest::JoinGroup { .. } = s.transmit() else {
        panic!("expected JoinGroup: the held-back partitions are handed out next round")
    };
}
