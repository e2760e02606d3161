//! The classic-protocol consumer group member as a sans-IO state machine.
//!
//! [`Member`] decides *what* a group member sends and *when*; a driver moves the bytes. It never
//! touches a socket, a clock or a random source: every input carries `now`.
//!
//! # Method taxonomy (quinn-proto style)
//!
//! - Inputs: [`Member::handle_response`] (a decoded response to the request last taken from
//!   [`Member::poll_transmit`]), [`Member::handle_transport_error`] (that request failed: the
//!   connection broke or timed out), [`Member::handle_timeout`] (the instant from
//!   [`Member::poll_timeout`] has passed), [`Member::provide_metadata`] (answer to
//!   [`GroupEvent::NeedMetadata`]).
//! - Commands: [`Member::start`], [`Member::rejoin`], [`Member::leave`].
//! - Outputs, polled after every input in this order: [`Member::poll_event`] until `None`, then
//!   [`Member::poll_transmit`] until `None`, then [`Member::poll_timeout`].
//!
//! At most one request is in flight at a time. FindCoordinator goes to any broker; every other
//! request goes to [`Member::coordinator`]. A driver that reconnects must drop responses that
//! arrive on a connection it has already reported broken.
//!
//! # States
//!
//! Named for what they await: `FindCoordinator` → `AwaitJoin` → (`AwaitMetadata`, leader only) →
//! `AwaitSync` → `Stable` (heartbeating) → `Leaving` → `Closed`. Each step consumes the state.
//!
//! # Rebalance events (SEMANTICS.md "Rebalance hooks")
//!
//! - Eager: when a rebalance starts, [`GroupEvent::Revoked`] carries every owned partition
//!   (omitted when nothing is owned); after each successful sync, [`GroupEvent::Assigned`] carries
//!   the whole new assignment (even when empty).
//! - Cooperative (KIP-429): owned partitions are kept across the join. After sync, the partitions
//!   that moved away are revoked first ([`GroupEvent::Revoked`], only when non-empty), then
//!   [`GroupEvent::Assigned`] carries the *added* partitions only (even when empty), and if
//!   anything was revoked the member rejoins at once (the second round), where the coordinator
//!   can hand the freed partitions to their new owners.
//! - ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, and a session timeout without a heartbeat answer
//!   invalidate everything: [`GroupEvent::Lost`] (only when something was owned; nothing must be
//!   committed for those partitions), then the member rejoins (with a fresh member id after
//!   UNKNOWN_MEMBER_ID). `Lost` never falls back to `Revoked`: they are distinct events.
//! - FENCED_INSTANCE_ID (another process uses our `group.instance.id`) is fatal, as in Java:
//!   `Lost` then [`GroupEvent::Fatal`]; rejoining would fence the other instance back and forth.
//! - [`Member::leave`] revokes everything through [`GroupEvent::Revoked`]; a static member
//!   (KIP-345) sends no LeaveGroup, so the coordinator keeps its assignment for a restart. A
//!   dynamic member that has lost its coordinator finds it again first (up to the rebalance
//!   timeout), so that the revoke hook's commit and the LeaveGroup can reach it.
//!
//! After `Assigned` the driver fetches committed offsets (OffsetFetch) for the partitions it
//! carries, then starts fetching. Commits: [`Member::commit_request`] builds an OffsetCommit
//! stamped with the current generation and [`Member::handle_commit_error`] takes its group-level
//! errors; OffsetFetch is not built here. [`Member::can_commit`] is also true between a
//! revocation and the next JoinGroup, so a revoke hook run by the driver before it polls the
//! JoinGroup can commit the revoked partitions' offsets.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::messages::join_group::JoinGroupRequestProtocol;
use kafka_wire::messages::leave_group::MemberIdentity;
use kafka_wire::messages::offset_commit::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_wire::messages::sync_group::SyncGroupRequestAssignment;
use kafka_wire::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, SyncGroupRequest, SyncGroupResponse,
};
use kafka_wire::{ErrorCode, KString};

use super::balancer::{
    adjust_cooperative, common_protocol, Assignment, Balancer, GroupMember, RebalanceProtocol,
    Subscription,
};
use crate::types::TopicPartition;

/// The `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` version we write.
const CONSUMER_PROTOCOL_VERSION: i16 = 3;
/// Java adds this to the rebalance timeout for the JoinGroup request timeout.
const JOIN_GRACE: Duration = Duration::from_secs(5);
/// `GROUP_MAX_SIZE_REACHED`.
const GROUP_MAX_SIZE_REACHED: ErrorCode = ErrorCode(81);

/// Negotiated versions of the group APIs, set by the driver after ApiVersions with the
/// coordinator ([`Member::set_versions`]). Defaults: the highest versions Kafka 4.x offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupVersions {
    /// FindCoordinator (v4+ batches keys).
    pub find_coordinator: i16,
    /// JoinGroup (v4+ answers MEMBER_ID_REQUIRED, v5+ carries the instance id).
    pub join_group: i16,
    /// SyncGroup.
    pub sync_group: i16,
    /// Heartbeat.
    pub heartbeat: i16,
    /// LeaveGroup (v3+ lists members).
    pub leave_group: i16,
}

impl Default for GroupVersions {
    fn default() -> Self {
        GroupVersions {
            find_coordinator: 6,
            join_group: 9,
            sync_group: 5,
            heartbeat: 4,
            leave_group: 5,
        }
    }
}

/// Settings of one group member.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id` (KIP-345 static membership); default none.
    pub instance_id: Option<String>,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// `session.timeout.ms`; default 45 s.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms`, sent as the rebalance timeout; default 60 s.
    pub rebalance_timeout: Duration,
    /// `heartbeat.interval.ms`; default 3 s.
    pub heartbeat_interval: Duration,
    /// `retry.backoff.ms`: wait before retrying after a retriable error; default 100 ms.
    pub retry_backoff: Duration,
    /// `request.timeout.ms` for FindCoordinator and LeaveGroup; default 30 s.
    pub request_timeout: Duration,
}

impl MemberConfig {
    /// A member of `group_id` subscribing to `topics`, with the defaults above.
    pub fn new(group_id: impl Into<String>, topics: Vec<String>) -> MemberConfig {
        MemberConfig {
            group_id: group_id.into(),
            instance_id: None,
            topics,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            retry_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// One offset to commit ([`Member::commit_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    /// The partition.
    pub partition: TopicPartition,
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record, -1 if unknown.
    pub leader_epoch: i32,
}

/// The group coordinator found through FindCoordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    /// Broker id.
    pub node_id: i32,
    /// Host name.
    pub host: String,
    /// Port.
    pub port: i32,
}

/// A request to send, built for the version in it.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum GroupRequest {
    /// To any broker.
    FindCoordinator {
        version: i16,
        request: FindCoordinatorRequest,
    },
    /// To the coordinator; the others too.
    JoinGroup {
        version: i16,
        request: JoinGroupRequest,
    },
    SyncGroup {
        version: i16,
        request: SyncGroupRequest,
    },
    Heartbeat {
        version: i16,
        request: HeartbeatRequest,
    },
    LeaveGroup {
        version: i16,
        request: LeaveGroupRequest,
    },
}

impl GroupRequest {
    /// Whether it must go to the coordinator (everything but FindCoordinator).
    pub fn to_coordinator(&self) -> bool {
        !matches!(self, GroupRequest::FindCoordinator { .. })
    }
}

/// A decoded response to the request last polled.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum GroupResponse {
    FindCoordinator(FindCoordinatorResponse),
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
}

/// What the member tells its driver (and, through it, the rebalance hooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// Partitions now owned (eager: the whole assignment; cooperative: the added ones). Fetch
    /// their committed offsets, then start fetching.
    Assigned {
        /// The partitions.
        partitions: Vec<TopicPartition>,
        /// The generation they belong to (for offset commits).
        generation: i32,
    },
    /// Partitions given up in an orderly way: stop fetching, commit if wanted, drop buffers.
    Revoked {
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// Partitions lost without a chance to commit (fencing, session timeout).
    Lost {
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// We lead this generation: call [`Member::provide_metadata`] with the partition counts of
    /// these topics (those that do not exist may be left out).
    NeedMetadata {
        /// Every topic any member subscribes to.
        topics: Vec<String>,
    },
    /// The member has left the group (after [`Member::leave`]); nothing more will happen.
    Left,
    /// A non-retriable error: the member is closed.
    Fatal {
        /// The broker's error code.
        error: ErrorCode,
    },
}

/// Where a request of the current state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    /// Waiting until the instant before it is ready (backoff, or the next heartbeat).
    Wait(Instant),
    /// Ready: `poll_transmit` returns it next.
    Ready,
    /// Sent; treated as failed at the deadline.
    InFlight(Instant),
}

#[derive(Debug)]
enum State {
    FindCoordinator {
        io: Io,
    },
    AwaitJoin {
        io: Io,
    },
    AwaitMetadata {
        generation: i32,
        protocol: String,
        members: Vec<GroupMember>,
        deadline: Instant,
    },
    AwaitSync {
        generation: i32,
        protocol: String,
        assignments: Vec<SyncGroupRequestAssignment>,
        io: Io,
    },
    Stable {
        generation: i32,
        protocol: String,
        /// `Wait(t)`: the next heartbeat is due at `t`.
        io: Io,
        /// No heartbeat answer by then: the coordinator has evicted us.
        session_deadline: Instant,
    },
    Leaving {
        io: Io,
    },
    Closed,
}

/// The classic-protocol group member. See the [module docs](self).
pub struct Member {
    config: MemberConfig,
    versions: GroupVersions,
    balancers: Vec<Arc<dyn Balancer>>,
    protocol: RebalanceProtocol,
    state: State,
    coordinator: Option<Coordinator>,
    member_id: String,
    /// Generation of the last successful sync, -1 if none.
    generation: i32,
    owned: BTreeSet<TopicPartition>,
    /// Whether the current generation is synced (a coordinator change then resumes heartbeats).
    synced: bool,
    /// The protocol (balancer name) of the synced generation.
    stable_protocol: String,
    /// Set once the member has left: it cannot start again.
    left: bool,
    /// Set when [`Member::leave`] found no coordinator: until then the member keeps looking for
    /// it (revoking nothing yet), so the revoke hook can commit and the LeaveGroup be sent.
    leave_deadline: Option<Instant>,
    /// The reason sent with the next JoinGroup (KIP-800, JoinGroup v8+), then cleared.
    join_reason: Option<String>,
    /// A rejoin asked for while a join or sync was under way: done as soon as the member is
    /// stable again, so the next JoinGroup carries fresh metadata.
    rejoin_pending: Option<String>,
    events: VecDeque<GroupEvent>,
    last_now: Instant,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("group_id", &self.config.group_id)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .field("state", &self.state)
            .field("owned", &self.owned)
            .finish()
    }
}

fn ks(s: &str) -> KString {
    KString::from(s)
}

impl Member {
    /// A member that has not started; `balancers` in order of preference (at least one).
    pub fn new(config: MemberConfig, balancers: Vec<Arc<dyn Balancer>>, now: Instant) -> Member {
        let refs: Vec<&dyn Balancer> = balancers.iter().map(|b| b.as_ref()).collect();
        let protocol = common_protocol(&refs);
        Member {
            config,
            versions: GroupVersions::default(),
            balancers,
            protocol,
            state: State::Closed,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            owned: BTreeSet::new(),
            synced: false,
            stable_protocol: String::new(),
            left: false,
            leave_deadline: None,
            join_reason: None,
            rejoin_pending: None,
            events: VecDeque::new(),
            last_now: now,
        }
    }

    /// Starts looking for the coordinator. Does nothing unless the member is new or closed
    /// without having left.
    pub fn start(&mut self, now: Instant) {
        self.last_now = now;
        if matches!(self.state, State::Closed) && !self.left {
            self.state = State::FindCoordinator { io: Io::Ready };
        }
    }

    /// Sets the negotiated API versions used for the requests built from now on.
    pub fn set_versions(&mut self, versions: GroupVersions) {
        self.versions = versions;
    }

    /// The coordinator, once found.
    pub fn coordinator(&self) -> Option<&Coordinator> {
        self.coordinator.as_ref()
    }

    /// Our member id (empty before the first JoinGroup answer).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Generation of the last successful sync (-1 if none).
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The partitions owned now.
    #[cfg(test)]
    pub fn owned(&self) -> &BTreeSet<TopicPartition> {
        &self.owned
    }

    /// A heartbeat for the generation this member last synced, with the coordinator's node id,
    /// for the driver to send while a rebalance hook runs (the member's own requests wait until
    /// the hook returns): the coordinator then keeps the member through a hook that runs longer
    /// than the session timeout. Answers go to the driver, not to [`Member::handle_response`].
    /// `None` without a synced generation, member id or coordinator, or when leaving or closed.
    pub fn hook_heartbeat(&self) -> Option<(i32, GroupRequest)> {
        if matches!(self.state, State::Leaving { .. } | State::Closed)
            || self.generation < 0
            || self.member_id.is_empty()
        {
            return None;
        }
        let node = self.coordinator.as_ref()?.node_id;
        let v = self.versions.heartbeat;
        let request = HeartbeatRequest {
            group_id: ks(&self.config.group_id),
            generation_id: self.generation,
            member_id: ks(&self.member_id),
            group_instance_id: if v >= 3 {
                self.config.instance_id.as_deref().map(ks)
            } else {
                None
            },
            ..Default::default()
        };
        Some((
            node,
            GroupRequest::Heartbeat {
                version: v,
                request,
            },
        ))
    }

    /// Whether the member is heartbeating in a synced generation.
    pub fn is_stable(&self) -> bool {
        matches!(self.state, State::Stable { .. })
    }

    /// Whether the member is closed (left, fatal error, or not started).
    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The state's name, for logs and tests.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::FindCoordinator { .. } => "FindCoordinator",
            State::AwaitJoin { .. } => "AwaitJoin",
            State::AwaitMetadata { .. } => "AwaitMetadata",
            State::AwaitSync { .. } => "AwaitSync",
            State::Stable { .. } => "Stable",
            State::Leaving { .. } => "Leaving",
            State::Closed => "Closed",
        }
    }

    // ---------------------------------------------------------------------------------------
    // Commands

    /// Asks for a rebalance (Java's `enforceRebalance`, franz-go's `ForceRebalance`); `reason`
    /// goes with the JoinGroup (KIP-800). Eager: revokes everything first.
    ///
    /// - Stable: joins now.
    /// - Looking for the coordinator, or joining with the JoinGroup not sent yet: that join
    ///   takes the reason (its metadata is computed when it is sent).
    /// - JoinGroup sent, awaiting the leader's metadata, or SyncGroup under way: joins again as
    ///   soon as this round's sync completes, so the group sees metadata computed after the
    ///   call (an interrupted round would only cost every member a failed sync).
    /// - Leaving or closed: nothing. Returns whether a rejoin was started or scheduled.
    pub fn rejoin(&mut self, now: Instant, reason: &str) -> bool {
        self.last_now = now;
        match &self.state {
            State::Stable { .. } => {
                self.join_reason = Some(reason.to_string());
                self.state = self.start_join(None);
                true
            }
            State::AwaitJoin { io } if !matches!(io, Io::InFlight(_)) => {
                self.join_reason = Some(reason.to_string());
                true
            }
            State::FindCoordinator { .. }
            | State::AwaitJoin { .. }
            | State::AwaitMetadata { .. }
            | State::AwaitSync { .. } => {
                self.rejoin_pending = Some(reason.to_string());
                true
            }
            State::Leaving { .. } | State::Closed => false,
        }
    }

    /// `stable`, unless a rejoin is pending: then a join carrying its reason.
    fn stable_or_rejoin(&mut self, stable: State) -> State {
        match self.rejoin_pending.take() {
            Some(reason) => {
                self.join_reason = Some(reason);
                self.start_join(None)
            }
            None => stable,
        }
    }

    /// Leaves the group: revokes everything, then sends LeaveGroup unless the member is static
    /// or has no member id; ends with [`GroupEvent::Left`]. When the coordinator is being looked
    /// for (it moved, or its broker is down), a dynamic member keeps looking for up to the
    /// rebalance timeout and revokes only once it is found, so the revoke hook can still commit;
    /// without a coordinator by then it revokes and leaves without a LeaveGroup.
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
        if self.leave_deadline.is_some() {
            return;
        }
        self.left = true;
        if matches!(self.state, State::FindCoordinator { .. })
            && self.config.instance_id.is_none()
            && !self.member_id.is_empty()
        {
            // The coordinator moved or its broker is down. Revoking now would run the revoke
            // hook while no commit can reach the group (its offsets would be lost and the
            // records redelivered), and no LeaveGroup could be sent (the others would wait a
            // session timeout for our partitions). Keep looking for the coordinator, up to the
            // rebalance timeout (what `Consumer::close` grants the driver), as Java's close
            // does: the partitions are revoked once it is found.
            self.leave_deadline = Some(now + self.config.rebalance_timeout);
            return;
        }
        self.revoke_all();
        self.synced = false;
        let send = self.config.instance_id.is_none()
            && !self.member_id.is_empty()
            && self.coordinator.is_some();
        if send {
            self.state = State::Leaving { io: Io::Ready };
        } else {
            self.state = State::Closed;
            self.events.push_back(GroupEvent::Left);
        }
    }

    /// The answer to [`GroupEvent::NeedMetadata`]: partition counts by topic. Runs the chosen
    /// balancer and queues the SyncGroup carrying every member's assignment.
    pub fn provide_metadata(&mut self, now: Instant, topics: &BTreeMap<String, i32>) {
        self.last_now = now;
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::AwaitMetadata {
                generation,
                protocol,
                members,
                ..
            } => self.lead(now, generation, protocol, &members, topics),
            other => other,
        };
    }

    fn lead(
        &mut self,
        now: Instant,
        generation: i32,
        protocol: String,
        members: &[GroupMember],
        topics: &BTreeMap<String, i32>,
    ) -> State {
        let Some(balancer) = self.balancers.iter().find(|b| b.name() == protocol) else {
            // The coordinator chose a protocol we did not offer: a broken coordinator.
            tracing::warn!(protocol, "coordinator chose a protocol we did not offer");
            return self.start_join(Some(now + self.config.retry_backoff));
        };
        let mut assignments = match balancer.assign(members, topics) {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "balancer failed; rejoining");
                return self.start_join(Some(now + self.config.retry_backoff));
            }
        };
        if balancer.protocol() == RebalanceProtocol::Cooperative {
            // KIP-429: a partition goes to its new member only after its owner revoked it.
            let held = adjust_cooperative(members, &mut assignments);
            if !held.is_empty() {
                let unassigned = held
                    .iter()
                    .filter(|h| {
                        !assignments
                            .values()
                            .any(|a| a.partitions.contains(&h.partition))
                    })
                    .count();
                tracing::warn!(
                    balancer = balancer.name(),
                    held_back = held.len(),
                    first = %held[0],
                    "the balancer moved partitions straight from one member to another; \
                     they are left out of this round"
                );
                // A held-back partition that nobody has now is handed out by the next round.
                // Partitions left with their owner are not: rejoining for them would repeat
                // the same plan forever.
                if unassigned > 0 {
                    self.rejoin_pending
                        .get_or_insert_with(|| "cooperative plan adjusted".to_string());
                }
            }
        }
        let mut out = Vec::with_capacity(assignments.len());
        for (member_id, assignment) in assignments {
            match assignment.encode(CONSUMER_PROTOCOL_VERSION) {
                Ok(bytes) => out.push(SyncGroupRequestAssignment {
                    member_id: KString::from(member_id),
                    assignment: bytes,
                    ..Default::default()
                }),
                Err(error) => {
                    tracing::warn!(%error, "cannot encode an assignment; rejoining");
                    return self.start_join(Some(now + self.config.retry_backoff));
                }
            }
        }
        State::AwaitSync {
            generation,
            protocol,
            assignments: out,
            io: Io::Ready,
        }
    }

    /// An OffsetCommit stamped with this member's generation, member id and instance id, for
    /// the driver to send to [`Member::coordinator`] alongside the group traffic (it does not use
    /// the member's single request slot). `None` unless the member is stable: offsets committed
    /// outside a synced generation would be rejected (ILLEGAL_GENERATION) or, worse, accepted
    /// for partitions that moved. `version` is capped at 9 (v10 names topics by id). Pass error
    /// codes of the answer to [`Member::handle_commit_error`].
    pub fn commit_request(
        &self,
        version: i16,
        offsets: &[OffsetToCommit],
    ) -> Option<(i16, OffsetCommitRequest)> {
        if !self.can_commit() {
            return None;
        }
        let generation = &self.generation;
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
        let request = OffsetCommitRequest {
            group_id: ks(&self.config.group_id),
            generation_id_or_member_epoch: *generation,
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
        };
        Some((version, request))
    }

    /// Whether [`Member::commit_request`] builds a request now: while stable (also while the
    /// coordinator of the synced generation is looked for again: the commit waits for it), and
    /// in the window between a revocation and the JoinGroup that follows it (or the LeaveGroup),
    /// where the revoke hook commits. The coordinator still accepts the last synced generation there: a
    /// classic group rejects commits only while it awaits SyncGroup (REBALANCE_IN_PROGRESS) or
    /// once a newer generation exists (ILLEGAL_GENERATION).
    pub fn can_commit(&self) -> bool {
        if self.generation < 0 {
            return false;
        }
        match &self.state {
            State::Stable { .. } => true,
            State::AwaitJoin { io } | State::Leaving { io } => !matches!(io, Io::InFlight(_)),
            // The coordinator moved while we were stable: the generation lives on (the new
            // coordinator loads it), so a commit waits for the coordinator rather than fail.
            State::FindCoordinator { .. } => self.synced,
            _ => false,
        }
    }

    /// Where the request [`Member::poll_transmit`] would return now goes, without taking it:
    /// `Some(None)` to any broker (FindCoordinator), `Some(Some(node))` to the coordinator,
    /// `None` when nothing is ready. A driver opens the right connection and sets the
    /// negotiated versions ([`Member::set_versions`]) before polling the request.
    pub fn transmit_target(&self) -> Option<Option<i32>> {
        let ready = match &self.state {
            State::FindCoordinator { io } => return (*io == Io::Ready).then_some(None),
            State::AwaitJoin { io }
            | State::AwaitSync { io, .. }
            | State::Stable { io, .. }
            | State::Leaving { io } => *io == Io::Ready,
            State::AwaitMetadata { .. } | State::Closed => false,
        };
        if !ready {
            return None;
        }
        self.coordinator.as_ref().map(|c| Some(c.node_id))
    }

    /// Changes the subscribed topics and rejoins (the next JoinGroup carries them).
    pub fn set_topics(&mut self, now: Instant, topics: Vec<String>) {
        if self.config.topics != topics {
            self.config.topics = topics;
            self.rejoin(now, "subscription changed");
        }
    }

    /// The subscribed topics.
    pub fn topics(&self) -> &[String] {
        &self.config.topics
    }

    /// A group-level error from an OffsetCommit answer (any partition's code): fencing errors
    /// lose the partitions and rejoin, REBALANCE_IN_PROGRESS rejoins, coordinator errors find
    /// the coordinator again. Other codes concern the partition only and change nothing here.
    pub fn handle_commit_error(&mut self, now: Instant, error: ErrorCode) {
        self.last_now = now;
        if !matches!(self.state, State::Stable { .. }) {
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match error {
            ErrorCode::ILLEGAL_GENERATION | ErrorCode::UNKNOWN_MEMBER_ID => self.fenced(error),
            ErrorCode::REBALANCE_IN_PROGRESS => self.start_join(None),
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE => {
                self.find_again(now)
            }
            ErrorCode::FENCED_INSTANCE_ID => self.fatal(error),
            _ => state,
        };
    }

    // ---------------------------------------------------------------------------------------
    // Outputs

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// The next request to send (at most one is in flight). Nothing while events are queued: a
    /// request must not overtake an event (a JoinGroup or LeaveGroup sent before the driver has
    /// run the revoke hook would close the window in which the hook can commit). This matters
    /// when a command ([`Member::leave`]) arrives while the driver is between
    /// [`Member::transmit_target`] and this call.
    pub fn poll_transmit(&mut self) -> Option<GroupRequest> {
        if !self.events.is_empty() {
            return None;
        }
        let now = self.last_now;
        let cfg = &self.config;
        let v = self.versions;
        let instance = cfg.instance_id.as_deref().map(ks);
        match &mut self.state {
            State::FindCoordinator { io } if *io == Io::Ready => {
                *io = Io::InFlight(now + cfg.request_timeout);
                let mut request = FindCoordinatorRequest {
                    key_type: 0,
                    ..Default::default()
                };
                if v.find_coordinator >= 4 {
                    request.coordinator_keys = vec![ks(&cfg.group_id)];
                } else {
                    request.key = ks(&cfg.group_id);
                }
                Some(GroupRequest::FindCoordinator {
                    version: v.find_coordinator,
                    request,
                })
            }
            State::AwaitJoin { io } if *io == Io::Ready => {
                *io = Io::InFlight(now + cfg.rebalance_timeout + JOIN_GRACE);
                let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
                let mut protocols = Vec::with_capacity(self.balancers.len());
                for b in &self.balancers {
                    let sub = b.member_metadata(&cfg.topics, &owned, self.generation);
                    match sub.encode(CONSUMER_PROTOCOL_VERSION) {
                        Ok(metadata) => protocols.push(JoinGroupRequestProtocol {
                            name: ks(b.name()),
                            metadata,
                            ..Default::default()
                        }),
                        Err(error) => {
                            tracing::warn!(%error, balancer = b.name(), "cannot encode subscription")
                        }
                    }
                }
                let request = JoinGroupRequest {
                    group_id: ks(&cfg.group_id),
                    session_timeout_ms: millis(cfg.session_timeout),
                    rebalance_timeout_ms: millis(cfg.rebalance_timeout),
                    member_id: ks(&self.member_id),
                    group_instance_id: if v.join_group >= 5 { instance } else { None },
                    protocol_type: KString::from_static("consumer"),
                    protocols,
                    reason: if v.join_group >= 8 {
                        self.join_reason.take().map(|r| ks(&r))
                    } else {
                        self.join_reason.take();
                        None
                    },
                    ..Default::default()
                };
                Some(GroupRequest::JoinGroup {
                    version: v.join_group,
                    request,
                })
            }
            State::AwaitSync {
                generation,
                protocol,
                assignments,
                io,
            } if *io == Io::Ready => {
                *io = Io::InFlight(now + cfg.rebalance_timeout);
                let request = SyncGroupRequest {
                    group_id: ks(&cfg.group_id),
                    generation_id: *generation,
                    member_id: ks(&self.member_id),
                    group_instance_id: if v.sync_group >= 3 { instance } else { None },
                    protocol_type: Some(KString::from_static("consumer")),
                    protocol_name: Some(ks(protocol)),
                    assignments: std::mem::take(assignments),
                    ..Default::default()
                };
                Some(GroupRequest::SyncGroup {
                    version: v.sync_group,
                    request,
                })
            }
            State::Stable {
                generation,
                io,
                session_deadline,
                ..
            } if *io == Io::Ready => {
                *io = Io::InFlight(*session_deadline);
                let request = HeartbeatRequest {
                    group_id: ks(&cfg.group_id),
                    generation_id: *generation,
                    member_id: ks(&self.member_id),
                    group_instance_id: if v.heartbeat >= 3 { instance } else { None },
                    ..Default::default()
                };
                Some(GroupRequest::Heartbeat {
                    version: v.heartbeat,
                    request,
                })
            }
            State::Leaving { io } if *io == Io::Ready => {
                *io = Io::InFlight(now + cfg.request_timeout);
                let mut request = LeaveGroupRequest {
                    group_id: ks(&cfg.group_id),
                    ..Default::default()
                };
                if v.leave_group >= 3 {
                    request.members = vec![MemberIdentity {
                        member_id: ks(&self.member_id),
                        group_instance_id: None,
                        reason: Some(KString::from_static("the consumer is closing")),
                        ..Default::default()
                    }];
                } else {
                    request.member_id = ks(&self.member_id);
                }
                Some(GroupRequest::LeaveGroup {
                    version: v.leave_group,
                    request,
                })
            }
            _ => None,
        }
    }

    /// When [`Member::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let io_time = |io: &Io| match io {
            Io::Wait(t) | Io::InFlight(t) => Some(*t),
            Io::Ready => None,
        };
        match &self.state {
            State::FindCoordinator { io } => match (io_time(io), self.leave_deadline) {
                (Some(t), Some(d)) => Some(t.min(d)),
                (t, d) => t.or(d),
            },
            State::AwaitJoin { io } | State::AwaitSync { io, .. } | State::Leaving { io } => {
                io_time(io)
            }
            State::AwaitMetadata { deadline, .. } => Some(*deadline),
            State::Stable {
                io,
                session_deadline,
                ..
            } => Some(io_time(io).map_or(*session_deadline, |t| t.min(*session_deadline))),
            State::Closed => None,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Inputs

    /// Time has passed: starts due retries and heartbeats, expires requests and the session.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::FindCoordinator { .. } if self.leave_deadline.is_some_and(|d| now >= d) => {
                // No coordinator within the rebalance timeout: leave without it.
                tracing::warn!("leaving the group without reaching its coordinator");
                self.leave_deadline = None;
                self.revoke_all();
                self.synced = false;
                self.events.push_back(GroupEvent::Left);
                State::Closed
            }
            State::Stable {
                session_deadline, ..
            } if now >= session_deadline => {
                // No heartbeat answer for a whole session: the coordinator has evicted us, and
                // another member may own our partitions by now.
                tracing::warn!("session timed out without a heartbeat answer");
                self.lose();
                self.coordinator = None;
                State::FindCoordinator {
                    io: Io::Wait(now + self.config.retry_backoff),
                }
            }
            State::AwaitMetadata { deadline, .. } if now >= deadline => {
                // The driver never answered; the coordinator has moved on without us.
                self.start_join(None)
            }
            State::FindCoordinator {
                io: Io::InFlight(t),
            }
            | State::AwaitJoin {
                io: Io::InFlight(t),
            }
            | State::AwaitSync {
                io: Io::InFlight(t),
                ..
            }
            | State::Leaving {
                io: Io::InFlight(t),
            } if now >= t => {
                self.state = state;
                self.handle_transport_error(now);
                return;
            }
            mut other => {
                match &mut other {
                    State::FindCoordinator { io }
                    | State::AwaitJoin { io }
                    | State::AwaitSync { io, .. }
                    | State::Leaving { io }
                    | State::Stable { io, .. } => {
                        if let Io::Wait(t) = *io {
                            if now >= t {
                                *io = Io::Ready;
                            }
                        }
                    }
                    State::AwaitMetadata { .. } | State::Closed => {}
                }
                other
            }
        };
    }

    /// The request in flight failed without an answer (connection lost or timed out). Ignored
    /// when no request is in flight (a driver whose connection failed before it could take the
    /// request reports the failure all the same).
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.last_now = now;
        let in_flight = match &self.state {
            State::FindCoordinator { io }
            | State::AwaitJoin { io }
            | State::AwaitSync { io, .. }
            | State::Stable { io, .. }
            | State::Leaving { io } => matches!(io, Io::InFlight(_)),
            State::AwaitMetadata { .. } | State::Closed => false,
        };
        if !in_flight {
            tracing::debug!(
                state = self.state_name(),
                "transport error with nothing in flight"
            );
            return;
        }
        let retry = now + self.config.retry_backoff;
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::Leaving { .. } => {
                self.events.push_back(GroupEvent::Left);
                State::Closed
            }
            State::Closed => State::Closed,
            State::FindCoordinator { .. }
            | State::AwaitJoin { .. }
            | State::AwaitMetadata { .. }
            | State::AwaitSync { .. }
            | State::Stable { .. } => {
                self.coordinator = None;
                State::FindCoordinator {
                    io: Io::Wait(retry),
                }
            }
        };
    }

    /// A response to the request last polled. Responses that do not match the request in
    /// flight are ignored.
    pub fn handle_response(&mut self, now: Instant, response: GroupResponse) {
        self.last_now = now;
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match (state, response) {
            (
                State::FindCoordinator {
                    io: Io::InFlight(_),
                },
                GroupResponse::FindCoordinator(r),
            ) => self.on_find_coordinator(now, r),
            (
                State::AwaitJoin {
                    io: Io::InFlight(_),
                },
                GroupResponse::JoinGroup(r),
            ) => self.on_join(now, r),
            (
                State::AwaitSync {
                    generation,
                    protocol,
                    io: Io::InFlight(_),
                    ..
                },
                GroupResponse::SyncGroup(r),
            ) => self.on_sync(now, generation, protocol, r),
            (
                State::Stable {
                    generation,
                    protocol,
                    io: Io::InFlight(_),
                    session_deadline,
                },
                GroupResponse::Heartbeat(r),
            ) => self.on_heartbeat(now, generation, protocol, session_deadline, r),
            (
                State::Leaving {
                    io: Io::InFlight(_),
                },
                GroupResponse::LeaveGroup(r),
            ) => {
                if r.error_code != 0 {
                    tracing::debug!(error = %ErrorCode(r.error_code), "LeaveGroup failed");
                }
                self.member_id.clear();
                self.events.push_back(GroupEvent::Left);
                State::Closed
            }
            (state, response) => {
                tracing::debug!(state = ?state, ?response, "ignoring an unexpected group response");
                state
            }
        };
    }

    fn on_find_coordinator(&mut self, now: Instant, r: FindCoordinatorResponse) -> State {
        let (error, node_id, host, port) =
            crate::proto::coordinator_in(&r, self.versions.find_coordinator, &self.config.group_id);
        if error == ErrorCode::GROUP_AUTHORIZATION_FAILED {
            return self.fatal(error);
        }
        if error != ErrorCode::NONE || node_id < 0 {
            return State::FindCoordinator {
                io: Io::Wait(now + self.config.retry_backoff),
            };
        }
        self.coordinator = Some(Coordinator {
            node_id,
            host,
            port,
        });
        if self.leave_deadline.take().is_some() {
            // `leave` waited for the coordinator: revoke now (the hook can commit), then leave.
            self.revoke_all();
            self.synced = false;
            return State::Leaving { io: Io::Ready };
        }
        if self.synced && self.generation >= 0 {
            // The coordinator moved while we were stable: keep the generation, heartbeat at once.
            let stable = State::Stable {
                generation: self.generation,
                protocol: self.current_protocol_name(),
                io: Io::Ready,
                session_deadline: now + self.config.session_timeout,
            };
            self.stable_or_rejoin(stable)
        } else {
            self.start_join(None)
        }
    }

    fn current_protocol_name(&self) -> String {
        self.stable_protocol.clone()
    }

    fn on_join(&mut self, now: Instant, r: JoinGroupResponse) -> State {
        let error = ErrorCode(r.error_code);
        let backoff = now + self.config.retry_backoff;
        match error {
            ErrorCode::NONE => {}
            // KIP-394: the coordinator gives us an id and wants it in a second JoinGroup.
            ErrorCode::MEMBER_ID_REQUIRED => {
                self.member_id = r.member_id.to_string();
                return State::AwaitJoin { io: Io::Ready };
            }
            ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION => {
                if error == ErrorCode::UNKNOWN_MEMBER_ID {
                    self.member_id.clear();
                }
                self.lose();
                return State::AwaitJoin { io: Io::Ready };
            }
            ErrorCode::REBALANCE_IN_PROGRESS => return State::AwaitJoin { io: Io::Ready },
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS => {
                return State::AwaitJoin {
                    io: Io::Wait(backoff),
                }
            }
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE => {
                return self.find_again(now)
            }
            ErrorCode::FENCED_INSTANCE_ID
            | ErrorCode::INCONSISTENT_GROUP_PROTOCOL
            | ErrorCode::INVALID_SESSION_TIMEOUT
            | ErrorCode::GROUP_AUTHORIZATION_FAILED
            | ErrorCode::INVALID_GROUP_ID
            | ErrorCode::UNSUPPORTED_VERSION
            | GROUP_MAX_SIZE_REACHED => return self.fatal(error),
            _ => {
                return State::AwaitJoin {
                    io: Io::Wait(backoff),
                }
            }
        }
        self.member_id = r.member_id.to_string();
        let protocol = r
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        if !r.skip_assignment && !r.leader.is_empty() && r.leader.as_str() == self.member_id {
            let members: Vec<GroupMember> = r
                .members
                .iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
                    subscription: Subscription::decode(&m.metadata).unwrap_or_else(|error| {
                        tracing::warn!(%error, member = %m.member_id, "undecodable subscription");
                        Subscription::default()
                    }),
                })
                .collect();
            let topics: BTreeSet<String> = members
                .iter()
                .flat_map(|m| m.subscription.topics.iter().cloned())
                .collect();
            self.events.push_back(GroupEvent::NeedMetadata {
                topics: topics.into_iter().collect(),
            });
            State::AwaitMetadata {
                generation: r.generation_id,
                protocol,
                members,
                deadline: now + self.config.rebalance_timeout,
            }
        } else {
            State::AwaitSync {
                generation: r.generation_id,
                protocol,
                assignments: Vec::new(),
                io: Io::Ready,
            }
        }
    }

    fn on_sync(
        &mut self,
        now: Instant,
        generation: i32,
        protocol: String,
        r: SyncGroupResponse,
    ) -> State {
        let error = ErrorCode(r.error_code);
        match error {
            ErrorCode::NONE => {}
            ErrorCode::REBALANCE_IN_PROGRESS => return self.start_join(None),
            ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION => {
                return self.fenced(error)
            }
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE => {
                return self.find_again(now)
            }
            ErrorCode::FENCED_INSTANCE_ID | ErrorCode::GROUP_AUTHORIZATION_FAILED => {
                return self.fatal(error)
            }
            _ => return self.start_join(Some(now + self.config.retry_backoff)),
        }
        let assignment = match Assignment::decode(&r.assignment) {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "undecodable assignment; rejoining");
                return self.start_join(Some(now + self.config.retry_backoff));
            }
        };
        // The balancer sees the whole assignment (its user data too) before the hooks run.
        if let Some(b) = self.balancers.iter().find(|b| b.name() == protocol) {
            b.on_assignment(&assignment, generation);
        }
        let new: BTreeSet<TopicPartition> = assignment.partitions.into_iter().collect();
        self.generation = generation;
        self.synced = true;
        self.stable_protocol = protocol.clone();
        let stable = State::Stable {
            generation,
            protocol,
            io: Io::Wait(now + self.config.heartbeat_interval),
            session_deadline: now + self.config.session_timeout,
        };
        match self.protocol {
            RebalanceProtocol::Eager => {
                // Everything was revoked when the rebalance started; anything still owned here
                // would be a bug, revoke it rather than assign it twice.
                self.revoke_all();
                self.owned = new.clone();
                self.events.push_back(GroupEvent::Assigned {
                    partitions: new.into_iter().collect(),
                    generation,
                });
                self.stable_or_rejoin(stable)
            }
            RebalanceProtocol::Cooperative => {
                let revoked: Vec<TopicPartition> = self.owned.difference(&new).cloned().collect();
                let added: Vec<TopicPartition> = new.difference(&self.owned).cloned().collect();
                self.owned = new;
                if !revoked.is_empty() {
                    self.events.push_back(GroupEvent::Revoked {
                        partitions: revoked.clone(),
                    });
                }
                self.events.push_back(GroupEvent::Assigned {
                    partitions: added,
                    generation,
                });
                if revoked.is_empty() {
                    self.stable_or_rejoin(stable)
                } else {
                    if let Some(reason) = self.rejoin_pending.take() {
                        self.join_reason = Some(reason);
                    }
                    // KIP-429 second round: the freed partitions reach their new owners only
                    // after we rejoin without them.
                    self.start_join(None)
                }
            }
        }
    }

    fn on_heartbeat(
        &mut self,
        now: Instant,
        generation: i32,
        protocol: String,
        session_deadline: Instant,
        r: HeartbeatResponse,
    ) -> State {
        let error = ErrorCode(r.error_code);
        match error {
            ErrorCode::NONE => State::Stable {
                generation,
                protocol,
                io: Io::Wait(now + self.config.heartbeat_interval),
                session_deadline: now + self.config.session_timeout,
            },
            ErrorCode::REBALANCE_IN_PROGRESS => self.start_join(None),
            ErrorCode::UNKNOWN_MEMBER_ID | ErrorCode::ILLEGAL_GENERATION => self.fenced(error),
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE => {
                self.find_again(now)
            }
            ErrorCode::FENCED_INSTANCE_ID | ErrorCode::GROUP_AUTHORIZATION_FAILED => {
                self.fatal(error)
            }
            _ => State::Stable {
                generation,
                protocol,
                io: Io::Wait(now + self.config.retry_backoff),
                session_deadline,
            },
        }
    }

    // ---------------------------------------------------------------------------------------
    // Transitions shared by several inputs

    /// Starts a join (now, or at `at`). Eager protocols revoke everything first.
    fn start_join(&mut self, at: Option<Instant>) -> State {
        if self.protocol == RebalanceProtocol::Eager {
            self.revoke_all();
        }
        self.synced = false;
        State::AwaitJoin {
            io: at.map_or(Io::Ready, Io::Wait),
        }
    }

    /// The coordinator moved or is unavailable: find it again.
    fn find_again(&mut self, now: Instant) -> State {
        self.coordinator = None;
        State::FindCoordinator {
            io: Io::Wait(now + self.config.retry_backoff),
        }
    }

    /// ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID: everything is lost; rejoin (with a fresh member id
    /// after UNKNOWN_MEMBER_ID).
    fn fenced(&mut self, error: ErrorCode) -> State {
        if error == ErrorCode::UNKNOWN_MEMBER_ID {
            self.member_id.clear();
        }
        self.lose();
        self.start_join(None)
    }

    fn fatal(&mut self, error: ErrorCode) -> State {
        self.lose();
        self.events.push_back(GroupEvent::Fatal { error });
        State::Closed
    }

    fn lose(&mut self) {
        self.generation = -1;
        self.synced = false;
        if !self.owned.is_empty() {
            let partitions = std::mem::take(&mut self.owned).into_iter().collect();
            self.events.push_back(GroupEvent::Lost { partitions });
        }
    }

    fn revoke_all(&mut self) {
        if !self.owned.is_empty() {
            let partitions = std::mem::take(&mut self.owned).into_iter().collect();
            self.events.push_back(GroupEvent::Revoked { partitions });
        }
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests;
