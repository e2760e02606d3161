//! Deterministic tests of the KIP-848 member against a scripted coordinator: no broker, no
//! sleeps, time is injected.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_wire::messages::consumer_group_heartbeat::{
    Assignment, ConsumerGroupHeartbeatResponseTopicPartitions,
};
use kafka_wire::messages::find_coordinator::Coordinator as WireCoordinator;
use kafka_wire::messages::{ConsumerGroupHeartbeatResponse, FindCoordinatorResponse};
use kafka_wire::{ErrorCode, KString, Uuid};

use super::*;

const T: Uuid = Uuid([1; 16]);
const U: Uuid = Uuid([2; 16]);

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic.to_string(), partition)
}

struct Sim {
    m: ConsumerMember,
    now: Instant,
}

impl Sim {
    fn with(cfg: ConsumerMemberConfig) -> Sim {
        let now = Instant::now();
        let mut m = ConsumerMember::new(cfg, 7, now);
        m.start(now);
        Sim { m, now }
    }

    fn new() -> Sim {
        let mut cfg = ConsumerMemberConfig::new("g", vec!["t".to_string(), "u".to_string()]);
        cfg.server_assignor = Some("uniform".to_string());
        let mut s = Sim::with(cfg);
        s.name(T, "t");
        s
    }

    fn name(&mut self, id: Uuid, name: &str) {
        let names: BTreeMap<Uuid, String> = [(id, name.to_string())].into();
        self.m.resolve_topics(self.now, &names);
    }

    fn advance_to_timeout(&mut self) {
        let t = self.m.poll_timeout().expect("a timeout is armed");
        assert!(t >= self.now);
        self.now = t;
        self.m.handle_timeout(self.now);
    }

    fn events(&mut self) -> Vec<GroupEvent> {
        std::iter::from_fn(|| self.m.poll_event()).collect()
    }

    /// Polls the events and reports each handled, as the driver does.
    fn handle_all(&mut self) -> Vec<GroupEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.m.poll_event() {
            let ack = matches!(
                e,
                GroupEvent::Assigned { .. } | GroupEvent::Revoked { .. } | GroupEvent::Lost { .. }
            );
            out.push(e);
            if ack {
                self.m.event_handled(self.now);
            }
        }
        out
    }

    fn transmit(&mut self) -> ConsumerRequest {
        let r = self.m.poll_transmit().expect("a request to send");
        assert!(self.m.poll_transmit().is_none(), "one request in flight");
        r
    }

    fn heartbeat(&mut self) -> ConsumerGroupHeartbeatRequest {
        match self.transmit() {
            ConsumerRequest::Heartbeat { request, .. } => request,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    fn find_coordinator(&mut self, node: i32) {
        assert_eq!(self.m.state_name(), "FindCoordinator");
        match self.transmit() {
            ConsumerRequest::FindCoordinator { version, request } => {
                assert!(version >= 4);
                assert_eq!(request.coordinator_keys, vec![KString::from("g")]);
            }
            other => panic!("expected FindCoordinator, got {other:?}"),
        }
        self.m.handle_response(
            self.now,
            ConsumerResponse::FindCoordinator(FindCoordinatorResponse {
                coordinators: vec![WireCoordinator {
                    key: KString::from("g"),
                    node_id: node,
                    host: KString::from("h"),
                    port: 9092,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        );
        assert_eq!(self.m.coordinator().map(|c| c.node_id), Some(node));
    }

    fn respond(&mut self, r: ConsumerGroupHeartbeatResponse) {
        self.m
            .handle_response(self.now, ConsumerResponse::Heartbeat(r));
    }

    fn respond_error(&mut self, code: ErrorCode) {
        self.respond(ConsumerGroupHeartbeatResponse {
            error_code: code.0,
            ..Default::default()
        });
    }

    /// Joins and settles with `parts` of topic T at epoch 1.
    fn joined(parts: &[i32]) -> Sim {
        let mut s = Sim::new();
        s.find_coordinator(1);
        let hb = s.heartbeat();
        assert_eq!(hb.member_epoch, 0);
        s.respond(ok(1, Some(&[(T, parts)])));
        s.handle_all();
        let hb = s.heartbeat();
        assert_eq!(hb.member_epoch, 1);
        s.respond(ok(1, None));
        assert!(s.m.is_stable());
        s
    }
}

fn ok(epoch: i32, assignment: Option<&[(Uuid, &[i32])]>) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse {
        member_id: None,
        member_epoch: epoch,
        heartbeat_interval_ms: 2000,
        assignment: assignment.map(|a| Assignment {
            topic_partitions: a
                .iter()
                .map(|(id, ps)| ConsumerGroupHeartbeatResponseTopicPartitions {
                    topic_id: *id,
                    partitions: ps.to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn owned_in(hb: &ConsumerGroupHeartbeatRequest) -> Vec<(Uuid, i32)> {
    let mut v: Vec<(Uuid, i32)> = hb
        .topic_partitions
        .as_ref()
        .expect("topic partitions are always sent")
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
        .collect();
    v.sort();
    v
}

#[test]
fn join_sends_a_full_request_and_assigns() {
    let mut s = Sim::new();
    s.find_coordinator(3);
    let hb = s.heartbeat();
    assert_eq!(hb.group_id.as_str(), "g");
    assert_eq!(hb.member_epoch, JOIN_EPOCH);
    // KIP-1082: v1 members make their id.
    assert_eq!(hb.member_id.len(), 36, "a UUID: {}", hb.member_id);
    let id = hb.member_id.to_string();
    assert_eq!(hb.rebalance_timeout_ms, 60_000);
    assert_eq!(
        hb.subscribed_topic_names,
        Some(vec![KString::from("t"), KString::from("u")])
    );
    assert_eq!(hb.server_assignor.as_deref(), Some("uniform"));
    assert_eq!(hb.topic_partitions, Some(Vec::new()), "empty when joining");
    assert_eq!(s.m.state_name(), "Joining");
    // Nothing before the answer.
    assert!(s.m.poll_transmit().is_none());
    s.respond(ok(1, Some(&[(T, &[0, 1])])));
    assert_eq!(s.m.epoch(), 1);
    assert_eq!(s.m.heartbeat_interval(), Duration::from_secs(2));
    let ev = s.events();
    assert_eq!(
        ev,
        vec![GroupEvent::Assigned {
            partitions: vec![tp("t", 0), tp("t", 1)],
            generation: 1
        }]
    );
    // The acknowledgement waits for the event to be handled.
    assert!(s.m.poll_transmit().is_none());
    s.m.event_handled(s.now);
    let hb = s.heartbeat();
    assert_eq!(hb.member_epoch, 1);
    assert_eq!(hb.member_id.as_str(), id);
    assert_eq!(owned_in(&hb), vec![(T, 0), (T, 1)]);
    s.respond(ok(1, None));
    assert!(s.m.is_stable());
    assert!(s.events().is_empty());
    // The next heartbeat comes after the interval the broker asked for.
    let before = s.now;
    s.advance_to_timeout();
    assert_eq!(s.now - before, Duration::from_secs(2));
    let hb = s.heartbeat();
    assert_eq!(hb.member_epoch, 1);
}

#[test]
fn empty_assignment_is_still_announced() {
    let mut s = Sim::new();
    s.find_coordinator(1);
    s.heartbeat();
    s.respond(ok(1, Some(&[])));
    assert_eq!(
        s.handle_all(),
        vec![GroupEvent::Assigned {
            partitions: vec![],
            generation: 1
        }]
    );
    // Owned set unchanged (empty) and nothing pending: the regular interval applies.
    assert!(s.m.poll_transmit().is_none());
    assert!(s.m.is_stable());
}

#[test]
fn v0_takes_the_member_id_from_the_broker() {
    let mut s = Sim::new();
    s.m.set_versions(ConsumerVersions {
        find_coordinator: 4,
        heartbeat: 0,
    });
    s.find_coordinator(1);
    let hb = s.heartbeat();
    assert_eq!(hb.member_id.as_str(), "");
    let mut r = ok(1, Some(&[]));
    r.member_id = Some(KString::from("broker-made"));
    s.respond(r);
    s.handle_all();
    assert_eq!(s.m.member_id(), "broker-made");
    s.advance_to_timeout();
    let hb = s.heartbeat();
    assert_eq!(hb.member_id.as_str(), "broker-made");
}

#[test]
fn assignment_grows_in_steps() {
    let mut s = Sim::joined(&[0]);
    s.advance_to_timeout();
    s.heartbeat();
    s.respond(ok(2, Some(&[(T, &[0, 1])])));
    assert_eq!(
        s.handle_all(),
        vec![GroupEvent::Assigned {
            partitions: vec![tp("t", 1)],
            generation: 2
        }]
    );
    // Acknowledged at once.
    let hb = s.heartbeat();
    assert_eq!(owned_in(&hb), vec![(T, 0), (T, 1)]);
    assert_eq!(hb.member_epoch, 2);
    s.respond(ok(3, Some(&[(T, &[0, 1, 2, 3])])));
    assert_eq!(
        s.handle_all(),
        vec![GroupEvent::Assigned {
            partitions: vec![tp("t", 2), tp("t", 3)],
            generation: 3
        }]
    );
    let hb = s.heartbeat();
    assert_eq!(owned_in(&hb), vec![(T, 0), (T, 1), (T, 2), (T, 3)]);
    s.respond(ok(3, None));
    assert!(s.m.is_stable());
    assert_eq!(s.m.owned().len(), 4);
}

#[test]
fn revocation_is_acknowledged_only_after_it_is_handled() {
    let mut s = Sim::joined(&[0, 1, 2, 3]);
    s.advance_to_timeout();
    s.heartbeat();
    // The coordinator moves 2 and 3 away (same epoch while we revoke).
    s.respond(ok(1, Some(&[(T, &[0, 1])])));
    assert!(!s.m.is_stable());
    let e = s.m.poll_event();
    assert_eq!(
        e,
        Some(GroupEvent::Revoked {
            partitions: vec![tp("t", 2), tp("t", 3)]
        })
    );
    assert!(s.m.poll_event().is_none());
    // The hook is still running: no heartbeat may tell the coordinator they are free, even
    // when the heartbeat interval passes.
    assert!(s.m.transmit_target().is_none());
    assert!(s.m.poll_transmit().is_none());
    s.advance_to_timeout();
    assert!(s.m.poll_transmit().is_none());
    // Commits still work inside the revoke hook, with the current epoch.
    let (_, commit) =
        s.m.commit_request(
            9,
            &[OffsetToCommit {
                partition: tp("t", 2),
                offset: 10,
                leader_epoch: -1,
            }],
        )
        .expect("can commit while revoking");
    assert_eq!(commit.generation_id_or_member_epoch, 1);
    s.m.event_handled(s.now);
    // Then the (empty) assignment notice, then the acknowledgement.
    assert_eq!(
        s.m.poll_event(),
        Some(GroupEvent::Assigned {
            partitions: vec![],
            generation: 1
        })
    );
    assert!(s.m.poll_transmit().is_none());
    s.m.event_handled(s.now);
    let hb = s.heartbeat();
    assert_eq!(owned_in(&hb), vec![(T, 0), (T, 1)]);
    s.respond(ok(2, None));
    assert!(s.m.is_stable());
    assert_eq!(s.m.epoch(), 2);
}

#[test]
fn revoke_and_add_in_one_target_revokes_first() {
    let mut s = Sim::joined(&[0, 1]);
    s.advance_to_timeout();
    s.heartbeat();
    s.respond(ok(2, Some(&[(T, &[1, 2])])));
    let ev = s.handle_all();
    assert_eq!(
        ev,
        vec![
            GroupEvent::Revoked {
                partitions: vec![tp("t", 0)]
            },
            GroupEvent::Assigned {
                partitions: vec![tp("t", 2)],
                generation: 2
            }
        ]
    );
    let hb = s.heartbeat();
    assert_eq!(owned_in(&hb), vec![(T, 1), (T, 2)]);
}

#[test]
fn fenced_epoch_loses_everything_and_rejoins_with_the_same_id() {
    let mut s = Sim::joined(&[0, 1]);
    let id = s.m.member_id().to_string();
    s.advance_to_timeout();
    s.heartbeat();
    s.respond_error(ErrorCode::FENCED_MEMBER_EPOCH);
    assert_eq!(
        s.m.poll_event(),
        Some(GroupEvent::Lost {
            partitions: vec![tp("t", 0), tp("t", 1)]
        })
    );
    assert!(!s.m.can_commit());
    // The rejoin waits for on_lost.
    assert!(s.m.poll_transmit().is_none());
    s.m.event_handled(s.now);
    let hb = s.heartbeat();
    assert_eq!(hb.member_epoch, JOIN_EPOCH);
    assert_eq!(hb.member_id.as_str(), id);
    assert_eq!(hb.topic_partitions, Some(Vec::new()));
    s.respond(ok(5, Some(&[(T, &[0])])));
    assert_eq!(
        s.handle_all(),
        vec![GroupEvent::Assigned {
            partitions: vec![tp("t", 0)],
            generation: 5
        }]
    );
}

#[test]
fn unknown_member_id_rejoins_with_a_new_id() {
    let mut s = Sim::joined(&[0]);
    let id = s.m.member_id().to_string();
    s.advance_to_timeout();
    s.heartbeat();
    s.respond_error(ErrorCode::UNKNOWN_MEMBER_ID);
    assert_eq!(
        s.handle_all(),
        vec![GroupEvent::Lost {
            partitions: vec![tp("t", 0)]
        }]
    );
    let hb = s.heartbeat();
    assert_eq!(hb.member_epoch, JOIN_EPOCH);
    assert_ne!(hb.member_id.as_str(), id);
    assert_eq!(hb.member_id.len(), 36);
}

#[test]
fn coordinator_move_keeps_the_membership() {
    let mut s = Sim::joined(&[0, 1]);
    s.advance_to_timeout();
    s.heartbeat();
    s.respond_error(ErrorCode::NOT_COORDINATOR);
    assert!(s.events().is_empty(), "nothing is lost");
    assert!(s.m.coordinator().is_none());
    assert!(s.m.poll_transmit().is_none(), "backoff first");
    s.advance_to_timeout();
    s.find_coordinator(2);
    let hb = s.heartbeat();
    assert_eq!(hb.member_epoch, 1);
    assert_eq!(owned_in(&hb), vec![(T, 0), (T, 1)]);
    s.respond(ok(1, None));
    assert!(s.m.is_stable());
    // A broken connection does the same.
    s.advance_to_timeout();
    s.heartbeat();
    s.m.handle_transport_error(s.now);
    assert!(s.events().is_empty());
    s.advance_to_timeout();
    s.find_coordinator(3);
    assert_eq!(s.heartbeat().member_epoch, 1);
}

#[test]
fn load_in_progress_retries_after_the_backoff() {
    let mut s = Sim::joined(&[0]);
    s.advance_to_timeout();
    s.heartbeat();
    s.respond_error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
    assert!(s.m.poll_transmit().is_none());
    let before = s.now;
    s.advance_to_timeout();
    assert_eq!(s.now - before, Duration::from_millis(100));
    assert_eq!(s.m.coordinator().map(|c| c.node_id), Some(1));
    assert_eq!(s.heartbeat().member_epoch, 1);
}

#[test]
fn session_loss_without_answers() {
    let mut s = Sim::joined(&[0, 1]);
    let start = s.now;
    // Every request from now on fails.
    let mut lost = Vec::new();
    for _ in 0..10_000 {
        if s.m.poll_transmit().is_some() {
            s.m.handle_transport_error(s.now);
        }
        lost.extend(s.handle_all());
        if !lost.is_empty() {
            break;
        }
        s.advance_to_timeout();
    }
    assert_eq!(
        lost,
        vec![GroupEvent::Lost {
            partitions: vec![tp("t", 0), tp("t", 1)]
        }]
    );
    assert!(s.now - start >= Duration::from_secs(45));
    assert_eq!(s.m.epoch(), JOIN_EPOCH);
}

#[test]
fn fatal_errors_close_the_member() {
    for code in [
        ErrorCode::UNSUPPORTED_ASSIGNOR,
        ErrorCode::GROUP_MAX_SIZE_REACHED,
        ErrorCode::UNRELEASED_INSTANCE_ID,
        ErrorCode::INVALID_REQUEST,
    ] {
        let mut s = Sim::joined(&[0]);
        s.advance_to_timeout();
        s.heartbeat();
        s.respond_error(code);
        assert_eq!(
            s.events(),
            vec![
                GroupEvent::Lost {
                    partitions: vec![tp("t", 0)]
                },
                GroupEvent::Fatal { error: code }
            ],
            "{code}"
        );
        assert!(s.m.is_closed());
        s.m.start(s.now);
        assert!(s.m.is_closed(), "a failed member does not restart");
    }
}

#[test]
fn leave_revokes_then_sends_epoch_minus_one() {
    let mut s = Sim::joined(&[0, 1]);
    s.m.leave(s.now);
    assert_eq!(
        s.m.poll_event(),
        Some(GroupEvent::Revoked {
            partitions: vec![tp("t", 0), tp("t", 1)]
        })
    );
    assert!(
        s.m.poll_transmit().is_none(),
        "the leave waits for the hook"
    );
    assert!(s.m.can_commit(), "the revoke hook can commit");
    s.m.event_handled(s.now);
    let hb = s.heartbeat();
    assert_eq!(hb.member_epoch, LEAVE_EPOCH);
    s.respond(ok(-1, None));
    assert_eq!(s.events(), vec![GroupEvent::Left]);
    assert!(s.m.is_closed());
}

#[test]
fn static_member_leaves_with_epoch_minus_two() {
    let mut cfg = ConsumerMemberConfig::new("g", vec!["t".to_string()]);
    cfg.instance_id = Some("i-1".to_string());
    let mut s = Sim::with(cfg);
    s.name(T, "t");
    s.find_coordinator(1);
    let hb = s.heartbeat();
    assert_eq!(hb.instance_id.as_deref(), Some("i-1"));
    s.respond(ok(1, Some(&[(T, &[0])])));
    s.handle_all();
    s.heartbeat();
    s.respond(ok(1, None));
    s.m.leave(s.now);
    s.handle_all();
    let hb = s.heartbeat();
    assert_eq!(hb.member_epoch, STATIC_LEAVE_EPOCH);
    assert_eq!(hb.instance_id.as_deref(), Some("i-1"));
    s.m.handle_transport_error(s.now);
    assert_eq!(s.events(), vec![GroupEvent::Left]);
}

#[test]
fn leave_before_joining_sends_nothing() {
    let mut s = Sim::new();
    s.m.leave(s.now);
    assert_eq!(s.events(), vec![GroupEvent::Left]);
    assert!(s.m.poll_transmit().is_none());
    assert!(s.m.is_closed());
}

#[test]
fn unknown_topic_ids_stay_pending_until_named() {
    let mut s = Sim::new();
    s.find_coordinator(1);
    s.heartbeat();
    s.respond(ok(1, Some(&[(T, &[0]), (U, &[0, 1])])));
    assert_eq!(
        s.handle_all(),
        vec![GroupEvent::Assigned {
            partitions: vec![tp("t", 0)],
            generation: 1
        }]
    );
    assert_eq!(s.m.unresolved_topic_ids(), vec![U]);
    let hb = s.heartbeat();
    assert_eq!(owned_in(&hb), vec![(T, 0)], "only what we own");
    s.respond(ok(1, None));
    assert!(!s.m.is_stable(), "U's partitions are still pending");
    // Heartbeats go on while the metadata is missing.
    s.advance_to_timeout();
    s.heartbeat();
    s.respond(ok(1, None));
    // The metadata learns the name.
    s.name(U, "u");
    assert!(s.m.unresolved_topic_ids().is_empty());
    assert_eq!(
        s.handle_all(),
        vec![GroupEvent::Assigned {
            partitions: vec![tp("u", 0), tp("u", 1)],
            generation: 1
        }]
    );
    // Acknowledged without waiting for the interval.
    let hb = s.heartbeat();
    assert_eq!(owned_in(&hb), vec![(T, 0), (U, 0), (U, 1)]);
    s.respond(ok(2, None));
    assert!(s.m.is_stable());
}

#[test]
fn subscription_change_is_sent_at_once() {
    let mut s = Sim::joined(&[0]);
    assert!(s.m.poll_transmit().is_none());
    s.m.set_topics(s.now, vec!["t".to_string(), "v".to_string()]);
    let hb = s.heartbeat();
    assert_eq!(
        hb.subscribed_topic_names,
        Some(vec![KString::from("t"), KString::from("v")])
    );
}

#[test]
fn commits_carry_the_member_epoch() {
    let mut s = Sim::new();
    let offsets = [OffsetToCommit {
        partition: tp("t", 0),
        offset: 42,
        leader_epoch: 3,
    }];
    assert!(s.m.commit_request(9, &offsets).is_none(), "not joined");
    s.find_coordinator(1);
    s.heartbeat();
    s.respond(ok(4, Some(&[(T, &[0])])));
    s.handle_all();
    let (v, r) = s.m.commit_request(10, &offsets).expect("joined");
    assert_eq!(v, 9);
    assert_eq!(r.generation_id_or_member_epoch, 4);
    assert_eq!(r.member_id.as_str(), s.m.member_id());
    assert_eq!(r.topics[0].partitions[0].committed_offset, 42);
    // A fenced commit loses the partitions.
    s.m.handle_commit_error(s.now, ErrorCode::FENCED_MEMBER_EPOCH);
    assert_eq!(
        s.events(),
        vec![GroupEvent::Lost {
            partitions: vec![tp("t", 0)]
        }]
    );
    assert!(s.m.commit_request(9, &offsets).is_none());
}

#[test]
fn stale_responses_are_ignored() {
    let mut s = Sim::joined(&[0]);
    // No heartbeat in flight: an answer changes nothing.
    s.respond(ok(9, Some(&[(T, &[5])])));
    assert!(s.events().is_empty());
    assert_eq!(s.m.epoch(), 1);
}
