//! The tokio driver of one group member: a classic-protocol [`Member`] or a KIP-848
//! [`ConsumerMember`], behind [`AnyMember`].
//!
//! [`run`] is a task that moves the member's requests to the brokers and their answers back, in
//! the order the member's module docs prescribe: after every input it drains
//! [`Member::poll_event`] (awaiting the [`EventHandler`] for each event), then sends what
//! [`Member::poll_transmit`] gives, then sleeps until [`Member::poll_timeout`], an answer, or a
//! wake-up ([`GroupShared::wake`], after a command or a commit error changed the member).
//!
//! Because events are handled before the next request is polled, an event handler that awaits a
//! revoke hook delays the JoinGroup (or LeaveGroup) that follows the revocation until the hook
//! returns: the hook can still commit with the old generation ([`Member::can_commit`]).
//! The KIP-848 member is also told when each event has been handled
//! ([`ConsumerMember::event_handled`]): it acknowledges a revocation to the coordinator only
//! then. Its assignments name topics by id; the driver resolves them from the client's
//! metadata (refreshing it while some id is unknown).
//!
//! The member talks to its coordinator over a connection of its own, opened with a request
//! timeout of at least the rebalance timeout plus five seconds: a JoinGroup legitimately waits
//! for the whole rebalance (Java sizes its JoinGroup timeout the same way), and the shared
//! `Purpose::Group` connections close on the ordinary request timeout. Offset commits and
//! fetches use the client's `Purpose::Group` connection to the same broker, so they are not
//! queued behind a JoinGroup the broker holds back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_wire::messages::{
    ConsumerGroupHeartbeatRequest, FindCoordinatorRequest, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, OffsetCommitRequest, SyncGroupRequest,
};
use kafka_wire::{ErrorCode, Uuid};
use tokio::sync::Notify;

use super::consumer_member::{ConsumerMember, ConsumerRequest, ConsumerResponse, ConsumerVersions};
use super::member::{
    Coordinator, GroupEvent, GroupRequest, GroupResponse, GroupVersions, Member, OffsetToCommit,
};
use super::BoxFuture;
use crate::client::{Client, Purpose};
use crate::error::{Error, Peer, Result};
use crate::net::Connection;

/// Either kind of group member, with the operations the driver and the consumer need.
#[derive(Debug)]
pub(crate) enum AnyMember {
    /// The classic protocol (JoinGroup / SyncGroup / Heartbeat).
    Classic(Member),
    /// The KIP-848 consumer protocol (ConsumerGroupHeartbeat).
    Consumer(ConsumerMember),
}

/// A request of either member.
#[derive(Debug)]
pub(crate) enum AnyRequest {
    Classic(GroupRequest),
    Consumer(ConsumerRequest),
}

impl AnyRequest {
    fn to_coordinator(&self) -> bool {
        match self {
            AnyRequest::Classic(r) => r.to_coordinator(),
            AnyRequest::Consumer(r) => r.to_coordinator(),
        }
    }
}

/// A response of either member.
#[derive(Debug)]
pub(crate) enum AnyResponse {
    Classic(GroupResponse),
    Consumer(ConsumerResponse),
}

macro_rules! both {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            AnyMember::Classic($m) => $e,
            AnyMember::Consumer($m) => $e,
        }
    };
}

impl AnyMember {
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        both!(self, m => m.poll_event())
    }

    /// The event polled last has been handled (the KIP-848 member waits for this).
    pub fn event_handled(&mut self, now: Instant) {
        if let AnyMember::Consumer(m) = self {
            m.event_handled(now);
        }
    }

    pub fn leave(&mut self, now: Instant) {
        both!(self, m => m.leave(now))
    }

    pub fn coordinator(&self) -> Option<&Coordinator> {
        both!(self, m => m.coordinator())
    }

    pub fn member_id(&self) -> &str {
        both!(self, m => m.member_id())
    }

    /// The classic generation, or the KIP-848 member epoch (what offset commits carry).
    pub fn generation(&self) -> i32 {
        match self {
            AnyMember::Classic(m) => m.generation(),
            AnyMember::Consumer(m) => {
                if m.epoch() > 0 {
                    m.epoch()
                } else {
                    -1
                }
            }
        }
    }

    pub fn is_consumer_protocol(&self) -> bool {
        matches!(self, AnyMember::Consumer(_))
    }

    pub fn is_stable(&self) -> bool {
        both!(self, m => m.is_stable())
    }

    pub fn can_commit(&self) -> bool {
        both!(self, m => m.can_commit())
    }

    pub fn commit_request(
        &self,
        version: i16,
        offsets: &[OffsetToCommit],
    ) -> Option<(i16, OffsetCommitRequest)> {
        both!(self, m => m.commit_request(version, offsets))
    }

    pub fn handle_commit_error(&mut self, now: Instant, error: ErrorCode) {
        both!(self, m => m.handle_commit_error(now, error))
    }

    pub fn topics(&self) -> &[String] {
        both!(self, m => m.topics())
    }

    pub fn set_topics(&mut self, now: Instant, topics: Vec<String>) {
        both!(self, m => m.set_topics(now, topics))
    }

    fn transmit_target(&self) -> Option<Option<i32>> {
        both!(self, m => m.transmit_target())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        both!(self, m => m.poll_timeout())
    }

    fn handle_timeout(&mut self, now: Instant) {
        both!(self, m => m.handle_timeout(now))
    }

    fn handle_transport_error(&mut self, now: Instant) {
        both!(self, m => m.handle_transport_error(now))
    }

    fn handle_response(&mut self, now: Instant, response: AnyResponse) {
        match (self, response) {
            (AnyMember::Classic(m), AnyResponse::Classic(r)) => m.handle_response(now, r),
            (AnyMember::Consumer(m), AnyResponse::Consumer(r)) => m.handle_response(now, r),
            (_, r) => tracing::debug!(response = ?r, "ignoring a response of the other protocol"),
        }
    }

    /// Sets the versions `conn` negotiated, then takes the next request.
    fn poll_transmit_on(&mut self, conn: &Connection) -> Option<AnyRequest> {
        match self {
            AnyMember::Classic(m) => {
                m.set_versions(versions_of(conn));
                m.poll_transmit().map(AnyRequest::Classic)
            }
            AnyMember::Consumer(m) => {
                m.set_versions(consumer_versions_of(conn));
                m.poll_transmit().map(AnyRequest::Consumer)
            }
        }
    }

    /// Takes the next request without sending it (the connection for it failed).
    fn drop_transmit(&mut self) {
        match self {
            AnyMember::Classic(m) => {
                let _ = m.poll_transmit();
            }
            AnyMember::Consumer(m) => {
                let _ = m.poll_transmit();
            }
        }
    }
}

/// Handles the member's events for the driver. The driver awaits each call before it does
/// anything else, so calls never overlap and their order is the member's.
pub(crate) trait EventHandler: Send + Sync + 'static {
    /// One event (never [`GroupEvent::NeedMetadata`], which the driver answers itself).
    fn handle(&self, event: GroupEvent) -> BoxFuture<'_, ()>;
    /// Whether every handle of the owner is gone: the driver then leaves the group.
    fn is_abandoned(&self) -> bool;
}

/// State shared by the driver task and the handles (commits, commands).
pub(crate) struct GroupShared {
    /// The member; locked briefly, never across an await.
    pub member: Mutex<AnyMember>,
    /// Wakes the driver after something outside it changed the member.
    pub wake: Notify,
    /// The client whose metadata and connections the group uses.
    pub client: Client,
    /// The rebalance timeout (sizes the coordinator connection's request timeout).
    pub rebalance_timeout: Duration,
    /// How often heartbeats go out while a rebalance hook runs (`heartbeat.interval.ms`).
    pub heartbeat_interval: Duration,
    /// `group.id`.
    pub group_id: String,
    /// The rebalance hook running now and since when (the "hook is blocking" signal).
    pub hook: Mutex<Option<(&'static str, Instant)>>,
}

impl GroupShared {
    /// Runs `f` on the member, then wakes the driver.
    pub fn with_member<T>(&self, f: impl FnOnce(&mut AnyMember) -> T) -> T {
        let out = f(&mut self.member.lock().unwrap());
        self.wake.notify_one();
        out
    }
}

type InFlight = BoxFuture<'static, Result<AnyResponse>>;

/// Negotiated versions: the member's defaults capped by what `conn` speaks.
fn versions_of(conn: &Connection) -> GroupVersions {
    let d = GroupVersions::default();
    let cap = |v: Option<i16>, default: i16| v.map_or(default, |v| v.min(default));
    GroupVersions {
        find_coordinator: cap(conn.version::<FindCoordinatorRequest>(), d.find_coordinator),
        join_group: cap(conn.version::<JoinGroupRequest>(), d.join_group),
        sync_group: cap(conn.version::<SyncGroupRequest>(), d.sync_group),
        heartbeat: cap(conn.version::<HeartbeatRequest>(), d.heartbeat),
        leave_group: cap(conn.version::<LeaveGroupRequest>(), d.leave_group),
    }
}

/// Negotiated KIP-848 versions: the member's defaults capped by what `conn` speaks.
fn consumer_versions_of(conn: &Connection) -> ConsumerVersions {
    let d = ConsumerVersions::default();
    let cap = |v: Option<i16>, default: i16| v.map_or(default, |v| v.min(default));
    ConsumerVersions {
        find_coordinator: cap(conn.version::<FindCoordinatorRequest>(), d.find_coordinator),
        heartbeat: cap(conn.version::<ConsumerGroupHeartbeatRequest>(), d.heartbeat),
    }
}

async fn send(conn: Connection, request: AnyRequest) -> Result<AnyResponse> {
    match request {
        AnyRequest::Classic(r) => Ok(AnyResponse::Classic(send_classic(conn, r).await?)),
        AnyRequest::Consumer(ConsumerRequest::FindCoordinator { version, request }) => {
            Ok(AnyResponse::Consumer(ConsumerResponse::FindCoordinator(
                conn.send(version, request).await?,
            )))
        }
        AnyRequest::Consumer(ConsumerRequest::Heartbeat { version, request }) => {
            Ok(AnyResponse::Consumer(ConsumerResponse::Heartbeat(
                conn.send(version, request).await?,
            )))
        }
    }
}

async fn send_classic(conn: Connection, request: GroupRequest) -> Result<GroupResponse> {
    Ok(match request {
        GroupRequest::FindCoordinator { version, request } => {
            GroupResponse::FindCoordinator(conn.send(version, request).await?)
        }
        GroupRequest::JoinGroup { version, request } => {
            GroupResponse::JoinGroup(conn.send(version, request).await?)
        }
        GroupRequest::SyncGroup { version, request } => {
            GroupResponse::SyncGroup(conn.send(version, request).await?)
        }
        GroupRequest::Heartbeat { version, request } => {
            GroupResponse::Heartbeat(conn.send(version, request).await?)
        }
        GroupRequest::LeaveGroup { version, request } => {
            GroupResponse::LeaveGroup(conn.send(version, request).await?)
        }
    })
}

async fn wait_in_flight(f: &mut Option<InFlight>) -> Result<AnyResponse> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Partition counts of `topics` from the client's metadata (fetched if unknown); topics that do
/// not exist are left out.
async fn partition_counts(client: &Client, topics: &[String]) -> BTreeMap<String, i32> {
    let mut out = BTreeMap::new();
    let wait = client.config().request_timeout;
    for t in topics {
        match tokio::time::timeout(wait, client.topic(t)).await {
            Ok(Ok(m)) if m.error.is_none() && !m.partitions.is_empty() => {
                out.insert(
                    t.clone(),
                    i32::try_from(m.partitions.len()).unwrap_or(i32::MAX),
                );
            }
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                tracing::debug!(topic = %t, "subscribed topic has no partitions in the metadata");
            }
        }
    }
    out
}

/// The coordinator connection: its own socket, with a request timeout that covers a JoinGroup.
struct CoordinatorLink {
    node_id: i32,
    addr: String,
    conn: Connection,
}

struct Driver {
    shared: Arc<GroupShared>,
    handler: Arc<dyn EventHandler>,
    link: Option<CoordinatorLink>,
    in_flight: Option<InFlight>,
    /// Whether the in-flight request went to the coordinator link (its failure drops the link).
    in_flight_to_coordinator: bool,
    /// Partition counts the last assignment we led was computed from.
    led_with: Option<BTreeMap<String, i32>>,
    leaving: bool,
}

/// How often a rebalance hook that has not returned is reported with a warning.
pub(crate) const HOOK_WARN_EVERY: Duration = Duration::from_secs(5);

/// Runs the member until it has left the group or failed fatally.
pub(crate) async fn run(shared: Arc<GroupShared>, handler: Arc<dyn EventHandler>) {
    let mut d = Driver {
        shared,
        handler,
        link: None,
        in_flight: None,
        in_flight_to_coordinator: false,
        led_with: None,
        leaving: false,
    };
    d.run().await;
    if let Some(link) = d.link.take() {
        link.conn.close(Error::Closed);
    }
}

impl Driver {
    fn member(&self) -> std::sync::MutexGuard<'_, AnyMember> {
        self.shared.member.lock().unwrap()
    }

    /// Hands `event` to the handler, and while its hook runs says so: in
    /// [`GroupShared::hook`], and with a warning every [`HOOK_WARN_EVERY`]. Classic members keep
    /// heartbeating their last synced generation meanwhile, every `heartbeat.interval.ms`, for
    /// up to the rebalance timeout (as Java's heartbeat thread does): a revoke hook that drains
    /// work for longer than the session timeout does not get the member evicted. Not during
    /// `on_lost` (the membership is gone) nor with the KIP-848 protocol, whose heartbeats carry
    /// the owned partitions and are sent only between hooks.
    async fn handle(&mut self, event: GroupEvent) {
        let kind = match &event {
            GroupEvent::Assigned { .. } => "on_assigned",
            GroupEvent::Revoked { .. } => "on_revoked",
            GroupEvent::Lost { .. } => "on_lost",
            _ => "group event",
        };
        let mut heartbeats = matches!(
            event,
            GroupEvent::Assigned { .. } | GroupEvent::Revoked { .. }
        ) && !self.member().is_consumer_protocol();
        let started = Instant::now();
        *self.shared.hook.lock().unwrap() = Some((kind, started));
        let handler = self.handler.clone();
        let fut = handler.handle(event);
        tokio::pin!(fut);
        let every = self
            .shared
            .heartbeat_interval
            .max(Duration::from_millis(10));
        let heartbeat_until = started + self.shared.rebalance_timeout;
        let mut next_heartbeat = started + every;
        let mut next_warn = started + HOOK_WARN_EVERY;
        let mut in_flight: Option<InFlight> = None;
        loop {
            let wake = if heartbeats {
                next_heartbeat.min(next_warn)
            } else {
                next_warn
            };
            tokio::select! {
                _ = &mut fut => break,
                r = wait_in_flight(&mut in_flight) => {
                    in_flight = None;
                    match r {
                        Ok(AnyResponse::Classic(GroupResponse::Heartbeat(r))) => {
                            let error = ErrorCode(r.error_code);
                            // REBALANCE_IN_PROGRESS still refreshes the session: go on; the
                            // member's own heartbeat after the hook rejoins.
                            if error != ErrorCode::NONE && error != ErrorCode::REBALANCE_IN_PROGRESS {
                                tracing::debug!(%error, hook = kind, "heartbeat during a hook refused; no more until it returns");
                                heartbeats = false;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, hook = kind, "heartbeat during a hook failed"),
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now >= next_warn {
                        next_warn = now + HOOK_WARN_EVERY;
                        tracing::warn!(
                            hook = kind,
                            group = %self.shared.group_id,
                            running_for = ?started.elapsed(),
                            heartbeating = heartbeats && now < heartbeat_until,
                            "rebalance hook still running"
                        );
                    }
                    if heartbeats && now >= next_heartbeat {
                        next_heartbeat = now + every;
                        if now >= heartbeat_until {
                            tracing::warn!(
                                hook = kind,
                                group = %self.shared.group_id,
                                "rebalance hook ran past the rebalance timeout; heartbeats stop \
                                 and the coordinator will evict this member"
                            );
                            heartbeats = false;
                        } else if in_flight.is_none() {
                            let request = match &*self.member() {
                                AnyMember::Classic(m) => m.hook_heartbeat(),
                                AnyMember::Consumer(_) => None,
                            };
                            if let Some((node, request)) = request {
                                match self.coordinator_connection(node).await {
                                    Ok(conn) => {
                                        in_flight = Some(Box::pin(send(conn, AnyRequest::Classic(request))));
                                    }
                                    Err(e) => tracing::debug!(error = %e, "no coordinator connection for a heartbeat during a hook"),
                                }
                            }
                        }
                    }
                }
            }
        }
        *self.shared.hook.lock().unwrap() = None;
    }

    async fn run(&mut self) {
        loop {
            // 1. Events, in order; each handled to the end before anything else happens.
            loop {
                let event = self.member().poll_event();
                let Some(event) = event else { break };
                match event {
                    GroupEvent::NeedMetadata { topics } => {
                        let counts = partition_counts(&self.shared.client, &topics).await;
                        if let AnyMember::Classic(m) = &mut *self.member() {
                            m.provide_metadata(Instant::now(), &counts);
                        }
                        self.led_with = Some(counts);
                    }
                    GroupEvent::Left => {
                        self.handle(GroupEvent::Left).await;
                        return;
                    }
                    e @ GroupEvent::Fatal { .. } => {
                        self.handle(e).await;
                        return;
                    }
                    e @ GroupEvent::Assigned { .. } => {
                        self.handle(e).await;
                        self.member().event_handled(Instant::now());
                    }
                    e => {
                        // A revocation or loss ends the generation we may have led.
                        self.led_with = None;
                        self.handle(e).await;
                        self.member().event_handled(Instant::now());
                    }
                }
            }
            if !self.leaving && self.handler.is_abandoned() {
                tracing::debug!("every consumer handle is gone; leaving the group");
                self.leaving = true;
                self.member().leave(Instant::now());
                continue;
            }
            if self.check_metadata() {
                // Newly named topics may have produced events: handle them first.
                continue;
            }
            // 2. The next request. A request still in flight is stale once the member has
            // another one ready (a command or a timeout moved it on): drop it.
            let target = self.member().transmit_target();
            if let Some(target) = target {
                self.in_flight = None;
                self.transmit(target).await;
                continue;
            }
            // 3. Wait for an answer, a timer or a wake-up.
            let now = Instant::now();
            let timeout = self.member().poll_timeout();
            // Wake at least every second to notice abandoned handles and metadata changes.
            let until = timeout.map_or(now + Duration::from_secs(1), |t| {
                t.min(now + Duration::from_secs(1))
            });
            let shared = self.shared.clone();
            tokio::select! {
                r = wait_in_flight(&mut self.in_flight) => {
                    self.in_flight = None;
                    let now = Instant::now();
                    match r {
                        Ok(response) => self.member().handle_response(now, response),
                        Err(e) => {
                            tracing::debug!(error = %e, "group request failed");
                            if self.in_flight_to_coordinator {
                                if let Some(link) = self.link.take() {
                                    link.conn.close(Error::Closed);
                                }
                            }
                            self.member().handle_transport_error(now);
                        }
                    }
                }
                _ = tokio::time::sleep_until(until.into()) => {
                    self.member().handle_timeout(Instant::now());
                }
                _ = shared.wake.notified() => {}
            }
        }
    }

    /// The leader rejoins when a subscribed topic's partition count changed since it assigned.
    /// Returns whether the KIP-848 member learned topic names (and may have events).
    fn check_metadata(&mut self) -> bool {
        if self.member().is_consumer_protocol() {
            return self.resolve_topic_ids();
        }
        let Some(counts) = &self.led_with else {
            return false;
        };
        if !self.member().is_stable() {
            return false;
        }
        let meta = self.shared.client.metadata();
        let topics: Vec<String> = self.member().topics().to_vec();
        let changed = topics.iter().any(|t| {
            let now = meta
                .topic(t)
                .filter(|m| m.error.is_none())
                .map(|m| i32::try_from(m.partitions.len()).unwrap_or(i32::MAX));
            match (now, counts.get(t)) {
                (Some(n), Some(c)) => n != *c,
                (Some(n), None) => n > 0,
                (None, _) => false,
            }
        });
        if changed {
            tracing::info!("partition counts of subscribed topics changed; rebalancing");
            self.led_with = None;
            if let AnyMember::Classic(m) = &mut *self.member() {
                m.rejoin(Instant::now(), "partition count changed");
            }
        }
        false
    }

    /// KIP-848 assignments name topics by id: names them from the metadata, and asks for a
    /// refresh while some id is unknown (a topic created after our last metadata).
    fn resolve_topic_ids(&mut self) -> bool {
        let ids = match &*self.member() {
            AnyMember::Consumer(m) => m.unresolved_topic_ids(),
            AnyMember::Classic(_) => return false,
        };
        if ids.is_empty() {
            return false;
        }
        let meta = self.shared.client.metadata();
        let names: BTreeMap<Uuid, String> = ids
            .iter()
            .filter_map(|id| meta.topic_name(*id).map(|n| (*id, n.to_string())))
            .collect();
        if names.len() < ids.len() {
            self.shared.client.request_metadata_refresh();
        }
        if names.is_empty() {
            return false;
        }
        if let AnyMember::Consumer(m) = &mut *self.member() {
            m.resolve_topics(Instant::now(), &names);
        }
        true
    }

    async fn transmit(&mut self, target: Option<i32>) {
        let conn = match target {
            None => self.shared.client.any_connection(Purpose::Group).await,
            Some(node) => self.coordinator_connection(node).await,
        };
        let now = Instant::now();
        match conn {
            Ok(conn) => {
                let request = self.member().poll_transmit_on(&conn);
                if let Some(request) = request {
                    self.in_flight_to_coordinator = request.to_coordinator();
                    self.in_flight = Some(Box::pin(send(conn, request)));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, ?target, "no connection for the group request");
                if target.is_some() {
                    self.shared.client.request_metadata_refresh();
                }
                let mut m = self.member();
                // Take the request so the member counts it as sent, then fail it.
                m.drop_transmit();
                m.handle_transport_error(now);
            }
        }
    }

    async fn coordinator_connection(&mut self, node: i32) -> Result<Connection> {
        let addr = {
            let m = self.member();
            let c = m.coordinator();
            let from_member = c.map(|c| {
                if c.host.contains(':') {
                    format!("[{}]:{}", c.host, c.port)
                } else {
                    format!("{}:{}", c.host, c.port)
                }
            });
            drop(m);
            match self.shared.client.metadata().brokers.get(&node) {
                Some(b) => b.addr(),
                None => from_member.unwrap_or_default(),
            }
        };
        if let Some(link) = &self.link {
            if link.node_id == node && link.addr == addr && !link.conn.is_closed() {
                return Ok(link.conn.clone());
            }
            link.conn.close(Error::Closed);
        }
        self.link = None;
        let mut config = self.shared.client.config().clone();
        let needed = self.shared.rebalance_timeout + Duration::from_secs(5);
        if *config.get_request_timeout() < needed {
            config.request_timeout(needed);
        }
        let peer = Peer::Broker {
            node_id: node,
            addr: addr.clone(),
        };
        let conn = Connection::connect(&config, &addr, peer).await?;
        self.link = Some(CoordinatorLink {
            node_id: node,
            addr,
            conn: conn.clone(),
        });
        Ok(conn)
    }
}
