//! The KIP-848 consumer group member (`group.protocol=consumer`) as a sans-IO state machine.
//!
//! [`ConsumerMember`] decides *what* a member of a KIP-848 consumer group sends and *when*; the
//! group driver moves the bytes. The coordinator runs the assignor; the member only heartbeats
//! (ConsumerGroupHeartbeat), learns its target assignment from the answers and reconciles it.
//! No socket, clock or random source is touched: every input carries `now`, and the member ids
//! come from a seeded generator the driver seeds.
//!
//! # Method taxonomy (as [`Member`](super::member::Member))
//!
//! - Inputs: [`ConsumerMember::handle_response`], [`ConsumerMember::handle_transport_error`],
//!   [`ConsumerMember::handle_timeout`], [`ConsumerMember::resolve_topics`] (topic names for the
//!   ids in [`ConsumerMember::unresolved_topic_ids`]), [`ConsumerMember::event_handled`] (the
//!   driver has finished handling the last event polled: its hooks have returned).
//! - Commands: [`ConsumerMember::start`], [`ConsumerMember::set_topics`],
//!   [`ConsumerMember::leave`].
//! - Outputs, polled after every input in this order: [`ConsumerMember::poll_event`] until
//!   `None` (calling `event_handled` after each `Assigned` / `Revoked` / `Lost`), then
//!   [`ConsumerMember::poll_transmit`] until `None`, then [`ConsumerMember::poll_timeout`].
//!
//! # States
//!
//! `FindCoordinator` → `Heartbeat` (member epoch 0 joins, then the epoch the coordinator hands
//! out) → `Leaving` (epoch -1, or -2 for a static member) → `Closed`.
//!
//! # Reconciliation (KIP-848 "Member reconciliation")
//!
//! A heartbeat answer with an assignment sets the member's *target*: partitions by topic id.
//! The member then:
//! 1. revokes the owned partitions that are not in the target ([`GroupEvent::Revoked`]) and
//!    sends nothing until the driver reports the event handled: the next heartbeat carries the
//!    reduced owned set, which is what tells the coordinator the partitions are free for their
//!    new owners, so it must not leave before the revoke hook has run (and committed);
//! 2. then assigns the target partitions it does not own yet ([`GroupEvent::Assigned`], sent even
//!    when nothing was added, as after a classic sync) and acknowledges them with the next
//!    heartbeat, sent at once.
//!
//! Partitions whose topic id is not known yet stay pending until
//! [`ConsumerMember::resolve_topics`] names them; then they are assigned. The coordinator only
//! puts a partition in our assignment once its previous owner has acknowledged its revocation,
//! so no partition is owned twice.
//!
//! # Errors
//!
//! - UNKNOWN_MEMBER_ID: everything is lost ([`GroupEvent::Lost`]); the member rejoins with epoch 0
//!   and a new member id. FENCED_MEMBER_EPOCH (and STALE_MEMBER_EPOCH): lost, rejoin with epoch 0
//!   and the same id.
//! - NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE or a broken connection: find the coordinator
//!   again, keeping the epoch and the partitions; COORDINATOR_LOAD_IN_PROGRESS and unknown codes:
//!   retry after `retry.backoff.ms`.
//! - UNSUPPORTED_ASSIGNOR, GROUP_MAX_SIZE_REACHED, UNRELEASED_INSTANCE_ID, FENCED_INSTANCE_ID,
//!   INVALID_REQUEST, GROUP_ID_NOT_FOUND (the group uses the classic protocol), authorization and
//!   version errors: `Lost` then [`GroupEvent::Fatal`]; the member is closed.
//! - No successful heartbeat for `session.timeout.ms`: the coordinator has evicted us; `Lost`
//!   and rejoin.
//!
//! # Member ids (KIP-1082)
//!
//! With ConsumerGroupHeartbeat v1 the client makes its member id (a random UUID, kept for the
//! member's life); with v0 the coordinator hands one out in its first answer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_wire::messages::consumer_group_heartbeat::ConsumerGroupHeartbeatRequestTopicPartitions;
use kafka_wire::messages::offset_commit::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_wire::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, OffsetCommitRequest,
};
use kafka_wire::{ErrorCode, KString, Uuid};

use super::member::{Coordinator, GroupEvent, OffsetToCommit};
use crate::rng::{RandomSource, SeededRng};
use crate::types::TopicPartition;

/// The member epoch that joins (or rejoins) the group.
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch a static member (KIP-345) leaves with: the coordinator keeps its assignment
/// for the session timeout, for a restart with the same `group.instance.id`.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Negotiated versions (set by the driver from the coordinator's ApiVersions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerVersions {
    /// FindCoordinator (v4+ batches keys).
    pub find_coordinator: i16,
    /// ConsumerGroupHeartbeat (v1+: the client makes the member id, KIP-1082).
    pub heartbeat: i16,
}

impl Default for ConsumerVersions {
    fn default() -> Self {
        ConsumerVersions {
            find_coordinator: 6,
            heartbeat: 1,
        }
    }
}

/// Settings of one KIP-848 member.
#[derive(Debug, Clone)]
pub struct ConsumerMemberConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id` (static membership); default none.
    pub instance_id: Option<String>,
    /// `client.rack`, sent as the rack id (rack-aware assignors); default none.
    pub rack_id: Option<String>,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// `group.remote.assignor`: the server-side assignor (`uniform`, `range`); default none
    /// (the broker's default).
    pub server_assignor: Option<String>,
    /// `max.poll.interval.ms` / rebalance timeout: how long the coordinator waits for us to
    /// revoke partitions; default 60 s.
    pub rebalance_timeout: Duration,
    /// Without a successful heartbeat for this long, the partitions are considered lost (the
    /// broker's `group.consumer.session.timeout.ms` defaults to 45 s too); default 45 s.
    pub session_timeout: Duration,
    /// `retry.backoff.ms`; default 100 ms.
    pub retry_backoff: Duration,
    /// `request.timeout.ms`; default 30 s.
    pub request_timeout: Duration,
}

impl ConsumerMemberConfig {
    /// A member of `group_id` subscribing to `topics`, with the defaults above.
    pub fn new(group_id: impl Into<String>, topics: Vec<String>) -> ConsumerMemberConfig {
        ConsumerMemberConfig {
            group_id: group_id.into(),
            instance_id: None,
            rack_id: None,
            topics,
            server_assignor: None,
            rebalance_timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(45),
            retry_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A request to send, built for the version in it.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum ConsumerRequest {
    /// To any broker.
    FindCoordinator {
        version: i16,
        request: FindCoordinatorRequest,
    },
    /// To the coordinator.
    Heartbeat {
        version: i16,
        request: ConsumerGroupHeartbeatRequest,
    },
}

impl ConsumerRequest {
    /// Whether it must go to the coordinator.
    pub fn to_coordinator(&self) -> bool {
        matches!(self, ConsumerRequest::Heartbeat { .. })
    }
}

/// A decoded response to the request last polled.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum ConsumerResponse {
    FindCoordinator(FindCoordinatorResponse),
    Heartbeat(ConsumerGroupHeartbeatResponse),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    Wait(Instant),
    Ready,
    InFlight(Instant),
}

#[derive(Debug)]
enum State {
    FindCoordinator { io: Io },
    Heartbeat { io: Io },
    Leaving { io: Io },
    Closed,
}

/// Errors after which the member gives up (KIP-848 lists them as fatal for the member).
fn is_fatal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UNSUPPORTED_ASSIGNOR
            | ErrorCode::GROUP_MAX_SIZE_REACHED
            | ErrorCode::UNRELEASED_INSTANCE_ID
            | ErrorCode::FENCED_INSTANCE_ID
            | ErrorCode::INVALID_REQUEST
            | ErrorCode::GROUP_ID_NOT_FOUND
            | ErrorCode::INVALID_GROUP_ID
            | ErrorCode::GROUP_AUTHORIZATION_FAILED
            | ErrorCode::TOPIC_AUTHORIZATION_FAILED
            | ErrorCode::UNSUPPORTED_VERSION
    )
}

/// The KIP-848 group member. See the [module docs](self).
pub struct ConsumerMember {
    config: ConsumerMemberConfig,
    versions: ConsumerVersions,
    state: State,
    coordinator: Option<Coordinator>,
    rng: SeededRng,
    /// The member id we send (v1: ours; v0: the coordinator's, empty before the first answer).
    member_id: String,
    /// The id generated for this member (KIP-1082); replaced after UNKNOWN_MEMBER_ID.
    generated_id: String,
    epoch: i32,
    heartbeat_interval: Duration,
    /// No successful heartbeat by then: the partitions are lost. Set while we hold an epoch.
    session_deadline: Option<Instant>,
    /// The assignment the coordinator wants us to have, by topic id.
    target: Option<BTreeMap<Uuid, BTreeSet<i32>>>,
    /// Whether a new target arrived that `Assigned` has not been emitted for yet.
    assign_notice: bool,
    /// Owned partitions, by topic id and number.
    owned: BTreeSet<(Uuid, i32)>,
    /// Topic names by id, as far as known.
    names: BTreeMap<Uuid, String>,
    /// The owned set the last heartbeat carried (`None`: none sent in this epoch).
    acked: Option<BTreeSet<(Uuid, i32)>>,
    /// Events emitted that the driver has not reported handled.
    unhandled: usize,
    left: bool,
    events: VecDeque<GroupEvent>,
    last_now: Instant,
}

impl std::fmt::Debug for ConsumerMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerMember")
            .field("group_id", &self.config.group_id)
            .field("member_id", &self.member_id)
            .field("epoch", &self.epoch)
            .field("state", &self.state)
            .field("owned", &self.owned)
            .finish()
    }
}

fn ks(s: &str) -> KString {
    KString::from(s)
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn new_member_id(rng: &mut SeededRng) -> String {
    let mut b = [0u8; 16];
    // SeededRng never fails.
    let _ = rng.try_fill_bytes(&mut b);
    // RFC 4122 version 4, variant 1.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid(b).to_string()
}

impl ConsumerMember {
    /// A member that has not started; `seed` makes its member ids.
    pub fn new(config: ConsumerMemberConfig, seed: u64, now: Instant) -> ConsumerMember {
        let mut rng = SeededRng::new(seed);
        let generated_id = new_member_id(&mut rng);
        ConsumerMember {
            config,
            versions: ConsumerVersions::default(),
            state: State::Closed,
            coordinator: None,
            rng,
            member_id: String::new(),
            generated_id,
            epoch: JOIN_EPOCH,
            heartbeat_interval: Duration::from_secs(5),
            session_deadline: None,
            target: None,
            assign_notice: false,
            owned: BTreeSet::new(),
            names: BTreeMap::new(),
            acked: None,
            unhandled: 0,
            left: false,
            events: VecDeque::new(),
            last_now: now,
        }
    }

    /// Starts looking for the coordinator (once; not after leaving).
    pub fn start(&mut self, now: Instant) {
        self.last_now = now;
        if matches!(self.state, State::Closed) && !self.left {
            self.state = State::FindCoordinator { io: Io::Ready };
        }
    }

    /// Sets the negotiated API versions for the requests built from now on.
    pub fn set_versions(&mut self, versions: ConsumerVersions) {
        self.versions = versions;
    }

    /// The coordinator, once found.
    pub fn coordinator(&self) -> Option<&Coordinator> {
        self.coordinator.as_ref()
    }

    /// Our member id (empty with v0 before the first answer).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The member epoch (0 while joining); offset commits carry it as the generation.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The heartbeat interval the coordinator asked for.
    #[cfg(test)]
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The partitions owned now (with resolved topic names).
    #[cfg(test)]
    pub fn owned(&self) -> Vec<TopicPartition> {
        self.owned
            .iter()
            .filter_map(|(id, p)| {
                self.names
                    .get(id)
                    .map(|n| TopicPartition::new(n.clone(), *p))
            })
            .collect()
    }

    /// Whether the member is in the group with everything in its target assignment owned and
    /// acknowledged.
    pub fn is_stable(&self) -> bool {
        matches!(self.state, State::Heartbeat { .. })
            && self.epoch > 0
            && self.unhandled == 0
            && self.acked.as_ref() == Some(&self.owned)
            && self.target.as_ref().is_some_and(|t| {
                t.iter()
                    .flat_map(|(id, ps)| ps.iter().map(move |p| (*id, *p)))
                    .eq(self.owned.iter().copied())
            })
    }

    /// Whether the member is closed (left, fatal error, or not started).
    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The state's name, for logs and tests.
    #[cfg(test)]
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::FindCoordinator { .. } => "FindCoordinator",
            State::Heartbeat { .. } if self.epoch == JOIN_EPOCH => "Joining",
            State::Heartbeat { .. } => "Heartbeat",
            State::Leaving { .. } => "Leaving",
            State::Closed => "Closed",
        }
    }

    /// The subscribed topics.
    pub fn topics(&self) -> &[String] {
        &self.config.topics
    }

    // ---------------------------------------------------------------------------------------
    // Commands

    /// Changes the subscription; the next heartbeat carries it (sent at once) and the
    /// coordinator answers with a new assignment.
    pub fn set_topics(&mut self, now: Instant, topics: Vec<String>) {
        self.last_now = now;
        if self.config.topics != topics {
            self.config.topics = topics;
            if let State::Heartbeat {
                io: io @ Io::Wait(_),
            } = &mut self.state
            {
                *io = Io::Ready;
            }
        }
    }

    /// Leaves the group: revokes everything ([`GroupEvent::Revoked`]), then, once that is
    /// handled, heartbeats with epoch -1 (-2 for a static member); ends with
    /// [`GroupEvent::Left`].
    pub fn leave(&mut self, now: Instant) {
        self.last_now = now;
        if matches!(self.state, State::Leaving { .. }) {
            return;
        }
        if matches!(self.state, State::Closed) {
            if !self.left {
                self.left = true;
                self.events.push_back(GroupEvent::Left);
            }
            return;
        }
        self.left = true;
        self.target = None;
        self.assign_notice = false;
        self.session_deadline = None;
        self.revoke(self.owned.clone());
        let joined = self.epoch > 0 && !self.member_id.is_empty();
        if joined && self.coordinator.is_some() {
            self.state = State::Leaving { io: Io::Ready };
        } else {
            self.state = State::Closed;
            self.events.push_back(GroupEvent::Left);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Inputs

    /// The driver has handled the event polled last (its hooks returned). Revocations are
    /// acknowledged, and further reconciliation steps taken, only after this.
    pub fn event_handled(&mut self, now: Instant) {
        self.last_now = now;
        self.unhandled = self.unhandled.saturating_sub(1);
        if self.unhandled == 0 {
            self.reconcile();
            self.ack_soon();
        }
    }

    /// Topic ids of the target assignment whose names are not known yet.
    pub fn unresolved_topic_ids(&self) -> Vec<Uuid> {
        self.target
            .as_ref()
            .map(|t| {
                t.keys()
                    .filter(|id| !self.names.contains_key(id))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of topic ids (from metadata); partitions of newly named topics get assigned.
    pub fn resolve_topics(&mut self, now: Instant, names: &BTreeMap<Uuid, String>) {
        self.last_now = now;
        let mut new = false;
        for (id, name) in names {
            if self.names.get(id) != Some(name) {
                self.names.insert(*id, name.clone());
                new = true;
            }
        }
        if new {
            self.reconcile();
            self.ack_soon();
        }
    }

    /// Time has passed: starts due requests, expires requests in flight and the session.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if let Some(deadline) = self.session_deadline {
            if now >= deadline
                && matches!(
                    self.state,
                    State::Heartbeat { .. } | State::FindCoordinator { .. }
                )
            {
                // No heartbeat answer for a whole session: the coordinator has evicted us and
                // another member may own our partitions by now.
                tracing::warn!(group = %self.config.group_id, "session timed out without a heartbeat answer");
                self.lose();
                self.state = match self.coordinator {
                    Some(_) => State::Heartbeat {
                        io: Io::Wait(now + self.config.retry_backoff),
                    },
                    None => State::FindCoordinator {
                        io: Io::Wait(now + self.config.retry_backoff),
                    },
                };
                return;
            }
        }
        let expired = match &mut self.state {
            State::FindCoordinator { io } | State::Heartbeat { io } | State::Leaving { io } => {
                match *io {
                    Io::Wait(t) if now >= t => {
                        *io = Io::Ready;
                        false
                    }
                    Io::InFlight(t) => now >= t,
                    _ => false,
                }
            }
            State::Closed => false,
        };
        if expired {
            self.handle_transport_error(now);
        }
    }

    /// The request in flight failed without an answer.
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.last_now = now;
        match self.state {
            State::Leaving { .. } => {
                self.state = State::Closed;
                self.events.push_back(GroupEvent::Left);
            }
            State::Closed => {}
            State::FindCoordinator { .. } | State::Heartbeat { .. } => {
                // Keep the epoch and the partitions: the next heartbeat to the (maybe new)
                // coordinator continues the membership unless the session expires first.
                self.find_again(now);
            }
        }
    }

    /// A response to the request last polled; others are ignored.
    pub fn handle_response(&mut self, now: Instant, response: ConsumerResponse) {
        self.last_now = now;
        match (&self.state, response) {
            (
                State::FindCoordinator {
                    io: Io::InFlight(_),
                },
                ConsumerResponse::FindCoordinator(r),
            ) => self.on_find_coordinator(now, r),
            (
                State::Heartbeat {
                    io: Io::InFlight(_),
                },
                ConsumerResponse::Heartbeat(r),
            ) => self.on_heartbeat(now, r),
            (
                State::Leaving {
                    io: Io::InFlight(_),
                },
                ConsumerResponse::Heartbeat(r),
            ) => {
                if r.error_code != 0 {
                    tracing::debug!(error = %ErrorCode(r.error_code), "leave heartbeat failed");
                }
                self.epoch = JOIN_EPOCH;
                self.state = State::Closed;
                self.events.push_back(GroupEvent::Left);
            }
            (state, response) => {
                tracing::debug!(?state, ?response, "ignoring an unexpected group response");
            }
        }
    }

    fn on_find_coordinator(&mut self, now: Instant, r: FindCoordinatorResponse) {
        let (error, node_id, host, port) =
            crate::proto::coordinator_in(&r, self.versions.find_coordinator, &self.config.group_id);
        if error == ErrorCode::GROUP_AUTHORIZATION_FAILED {
            self.fatal(error);
            return;
        }
        if error != ErrorCode::NONE || node_id < 0 {
            self.state = State::FindCoordinator {
                io: Io::Wait(now + self.config.retry_backoff),
            };
            return;
        }
        self.coordinator = Some(Coordinator {
            node_id,
            host,
            port,
        });
        self.state = State::Heartbeat { io: Io::Ready };
    }

    fn on_heartbeat(&mut self, now: Instant, r: ConsumerGroupHeartbeatResponse) {
        let error = ErrorCode(r.error_code);
        let backoff = now + self.config.retry_backoff;
        match error {
            ErrorCode::NONE => {}
            ErrorCode::UNKNOWN_MEMBER_ID => {
                tracing::info!(group = %self.config.group_id, "unknown member id; rejoining as a new member");
                self.lose();
                self.generated_id = new_member_id(&mut self.rng);
                self.member_id.clear();
                self.state = State::Heartbeat { io: Io::Ready };
                return;
            }
            ErrorCode::FENCED_MEMBER_EPOCH | ErrorCode::STALE_MEMBER_EPOCH => {
                tracing::info!(group = %self.config.group_id, %error, "member fenced; rejoining");
                self.lose();
                self.state = State::Heartbeat { io: Io::Ready };
                return;
            }
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE => {
                self.find_again(now);
                return;
            }
            e if is_fatal(e) => {
                tracing::error!(
                    group = %self.config.group_id,
                    error = %e,
                    message = r.error_message.as_deref().unwrap_or(""),
                    "consumer group heartbeat failed for good"
                );
                self.fatal(e);
                return;
            }
            // COORDINATOR_LOAD_IN_PROGRESS and anything unknown: retry after the backoff.
            _ => {
                self.state = State::Heartbeat {
                    io: Io::Wait(backoff),
                };
                return;
            }
        }
        if let Some(id) = r.member_id.as_deref().filter(|s| !s.is_empty()) {
            self.member_id = id.to_string();
        }
        if r.heartbeat_interval_ms > 0 {
            self.heartbeat_interval = Duration::from_millis(r.heartbeat_interval_ms as u64);
        }
        self.epoch = r.member_epoch;
        self.session_deadline = Some(now + self.config.session_timeout);
        if let Some(a) = r.assignment {
            let mut target: BTreeMap<Uuid, BTreeSet<i32>> = BTreeMap::new();
            for t in a.topic_partitions {
                target
                    .entry(t.topic_id)
                    .or_default()
                    .extend(t.partitions.iter().copied());
            }
            target.retain(|_, ps| !ps.is_empty());
            if self.target.as_ref() != Some(&target) {
                self.assign_notice = true;
            }
            self.target = Some(target);
        }
        self.reconcile();
        let next = if self.unhandled == 0 && self.acked.as_ref() != Some(&self.owned) {
            Io::Ready
        } else {
            Io::Wait(now + self.heartbeat_interval)
        };
        self.state = State::Heartbeat { io: next };
    }

    // ---------------------------------------------------------------------------------------
    // Outputs

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// The next request to send (one at a time). Nothing goes to the coordinator while an
    /// emitted event is not handled.
    pub fn poll_transmit(&mut self) -> Option<ConsumerRequest> {
        let now = self.last_now;
        let v = self.versions;
        match self.state {
            State::FindCoordinator { io: Io::Ready } => {
                self.state = State::FindCoordinator {
                    io: Io::InFlight(now + self.config.request_timeout),
                };
                let mut request = FindCoordinatorRequest {
                    key_type: 0,
                    ..Default::default()
                };
                if v.find_coordinator >= 4 {
                    request.coordinator_keys = vec![ks(&self.config.group_id)];
                } else {
                    request.key = ks(&self.config.group_id);
                }
                Some(ConsumerRequest::FindCoordinator {
                    version: v.find_coordinator,
                    request,
                })
            }
            State::Heartbeat { io: Io::Ready } if self.unhandled == 0 => {
                self.state = State::Heartbeat {
                    io: Io::InFlight(now + self.config.request_timeout),
                };
                let request = self.heartbeat_request();
                self.acked = Some(self.owned.clone());
                Some(ConsumerRequest::Heartbeat {
                    version: v.heartbeat,
                    request,
                })
            }
            State::Leaving { io: Io::Ready } if self.unhandled == 0 => {
                self.state = State::Leaving {
                    io: Io::InFlight(now + self.config.request_timeout),
                };
                let epoch = if self.config.instance_id.is_some() {
                    STATIC_LEAVE_EPOCH
                } else {
                    LEAVE_EPOCH
                };
                let request = ConsumerGroupHeartbeatRequest {
                    group_id: ks(&self.config.group_id),
                    member_id: ks(&self.member_id),
                    member_epoch: epoch,
                    instance_id: self.config.instance_id.as_deref().map(ks),
                    rebalance_timeout_ms: -1,
                    ..Default::default()
                };
                Some(ConsumerRequest::Heartbeat {
                    version: v.heartbeat,
                    request,
                })
            }
            _ => None,
        }
    }

    /// A full heartbeat: every field set (KIP-848 allows sending only changes; the full form is
    /// always valid and survives a coordinator that lost our state).
    fn heartbeat_request(&mut self) -> ConsumerGroupHeartbeatRequest {
        if self.member_id.is_empty() && self.versions.heartbeat >= 1 {
            // KIP-1082: the client makes its member id.
            self.member_id = self.generated_id.clone();
        }
        let mut by_topic: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
        if self.epoch != JOIN_EPOCH {
            for (id, p) in &self.owned {
                by_topic.entry(*id).or_default().push(*p);
            }
        }
        ConsumerGroupHeartbeatRequest {
            group_id: ks(&self.config.group_id),
            member_id: ks(&self.member_id),
            member_epoch: self.epoch,
            instance_id: self.config.instance_id.as_deref().map(ks),
            rack_id: self.config.rack_id.as_deref().map(ks),
            rebalance_timeout_ms: millis(self.config.rebalance_timeout),
            subscribed_topic_names: Some(self.config.topics.iter().map(|t| ks(t)).collect()),
            subscribed_topic_regex: None,
            server_assignor: self.config.server_assignor.as_deref().map(ks),
            topic_partitions: Some(
                by_topic
                    .into_iter()
                    .map(
                        |(topic_id, partitions)| ConsumerGroupHeartbeatRequestTopicPartitions {
                            topic_id,
                            partitions,
                            ..Default::default()
                        },
                    )
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// Where the request [`ConsumerMember::poll_transmit`] would return now goes, without
    /// taking it: `Some(None)` any broker, `Some(Some(node))` the coordinator, `None` nothing.
    pub fn transmit_target(&self) -> Option<Option<i32>> {
        match self.state {
            State::FindCoordinator { io: Io::Ready } => Some(None),
            State::Heartbeat { io: Io::Ready } | State::Leaving { io: Io::Ready }
                if self.unhandled == 0 =>
            {
                self.coordinator.as_ref().map(|c| Some(c.node_id))
            }
            _ => None,
        }
    }

    /// When [`ConsumerMember::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let io = match self.state {
            State::FindCoordinator { io } | State::Heartbeat { io } | State::Leaving { io } => {
                match io {
                    Io::Wait(t) | Io::InFlight(t) => Some(t),
                    Io::Ready => None,
                }
            }
            State::Closed => return None,
        };
        let session = match self.state {
            State::Leaving { .. } => None,
            _ => self.session_deadline,
        };
        match (io, session) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Commits

    /// Whether offsets can be committed now: the member holds an epoch.
    pub fn can_commit(&self) -> bool {
        self.epoch > 0 && matches!(self.state, State::Heartbeat { .. } | State::Leaving { .. })
    }

    /// An OffsetCommit carrying the member id and the member epoch (KIP-848 replaces the
    /// generation by the epoch), `None` unless [`ConsumerMember::can_commit`]. `version` is
    /// capped at 9 (v10 names topics by id); KIP-848 needs v9.
    pub fn commit_request(
        &self,
        version: i16,
        offsets: &[OffsetToCommit],
    ) -> Option<(i16, OffsetCommitRequest)> {
        if !self.can_commit() {
            return None;
        }
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for o in offsets {
            topics.entry(o.partition.topic.as_str()).or_default().push(
                OffsetCommitRequestPartition {
                    partition_index: o.partition.partition,
                    committed_offset: o.offset,
                    committed_leader_epoch: o.leader_epoch,
                    committed_metadata: Some(KString::new()),
                    ..Default::default()
                },
            );
        }
        let version = version.min(9);
        Some((
            version,
            OffsetCommitRequest {
                group_id: ks(&self.config.group_id),
                generation_id_or_member_epoch: self.epoch,
                member_id: ks(&self.member_id),
                group_instance_id: if version >= 7 {
                    self.config.instance_id.as_deref().map(ks)
                } else {
                    None
                },
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| OffsetCommitRequestTopic {
                        name: ks(name),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ))
    }

    /// A group-level error of an OffsetCommit answer: fencing loses the partitions and rejoins,
    /// coordinator errors find the coordinator again; STALE_MEMBER_EPOCH (our epoch moved on
    /// while the commit was underway) and partition errors change nothing.
    pub fn handle_commit_error(&mut self, now: Instant, error: ErrorCode) {
        self.last_now = now;
        if !matches!(self.state, State::Heartbeat { .. }) {
            return;
        }
        match error {
            ErrorCode::UNKNOWN_MEMBER_ID => {
                self.lose();
                self.generated_id = new_member_id(&mut self.rng);
                self.member_id.clear();
                self.state = State::Heartbeat { io: Io::Ready };
            }
            ErrorCode::FENCED_MEMBER_EPOCH => {
                self.lose();
                self.state = State::Heartbeat { io: Io::Ready };
            }
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE => {
                self.find_again(now)
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------------------------------
    // Transitions

    /// One reconciliation step towards the target (see the module docs): revoke first, and
    /// assign only once the revocation is handled.
    fn reconcile(&mut self) {
        if self.unhandled > 0 || !matches!(self.state, State::Heartbeat { .. }) || self.left {
            return;
        }
        let Some(target) = &self.target else {
            return;
        };
        let resolved: BTreeSet<(Uuid, i32)> = target
            .iter()
            .filter(|(id, _)| self.names.contains_key(id))
            .flat_map(|(id, ps)| ps.iter().map(move |p| (*id, *p)))
            .collect();
        let revoked: BTreeSet<(Uuid, i32)> = self.owned.difference(&resolved).copied().collect();
        if !revoked.is_empty() {
            self.revoke(revoked);
            return;
        }
        let added: BTreeSet<(Uuid, i32)> = resolved.difference(&self.owned).copied().collect();
        if added.is_empty() && !self.assign_notice {
            return;
        }
        self.assign_notice = false;
        self.owned.extend(added.iter().copied());
        let partitions = self.names_of(&added);
        self.unhandled += 1;
        self.events.push_back(GroupEvent::Assigned {
            partitions,
            generation: self.epoch,
        });
    }

    fn names_of(&self, set: &BTreeSet<(Uuid, i32)>) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> = set
            .iter()
            .filter_map(|(id, p)| {
                self.names
                    .get(id)
                    .map(|n| TopicPartition::new(n.clone(), *p))
            })
            .collect();
        v.sort();
        v
    }

    fn revoke(&mut self, set: BTreeSet<(Uuid, i32)>) {
        if set.is_empty() {
            return;
        }
        let partitions = self.names_of(&set);
        for x in &set {
            self.owned.remove(x);
        }
        self.unhandled += 1;
        self.events.push_back(GroupEvent::Revoked { partitions });
    }

    /// Sends the next heartbeat at once if the owned set changed since the last one.
    fn ack_soon(&mut self) {
        if self.unhandled == 0 && self.acked.as_ref() != Some(&self.owned) {
            if let State::Heartbeat {
                io: io @ Io::Wait(_),
            } = &mut self.state
            {
                *io = Io::Ready;
            }
        }
        if self.unhandled == 0 {
            if let State::Leaving {
                io: io @ Io::Wait(_),
            } = &mut self.state
            {
                *io = Io::Ready;
            }
        }
    }

    /// Everything owned is lost; the next heartbeat rejoins with epoch 0.
    fn lose(&mut self) {
        self.epoch = JOIN_EPOCH;
        self.target = None;
        self.assign_notice = false;
        self.acked = None;
        self.session_deadline = None;
        if !self.owned.is_empty() {
            let all = std::mem::take(&mut self.owned);
            let partitions = self.names_of(&all);
            self.unhandled += 1;
            self.events.push_back(GroupEvent::Lost { partitions });
        }
    }

    fn find_again(&mut self, now: Instant) {
        self.coordinator = None;
        self.state = State::FindCoordinator {
            io: Io::Wait(now + self.config.retry_backoff),
        };
    }

    fn fatal(&mut self, error: ErrorCode) {
        self.lose();
        self.left = true;
        self.events.push_back(GroupEvent::Fatal { error });
        self.state = State::Closed;
    }
}

#[cfg(test)]
mod tests;
