//! The tokio driver of one classic-protocol [`Member`].
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
    FindCoordinatorRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use tokio::sync::Notify;

use super::member::{GroupEvent, GroupRequest, GroupResponse, GroupVersions, Member};
use super::BoxFuture;
use crate::client::{Client, Purpose};
use crate::error::{Error, Peer, Result};
use crate::net::Connection;

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
    pub member: Mutex<Member>,
    /// Wakes the driver after something outside it changed the member.
    pub wake: Notify,
    /// The client whose metadata and connections the group uses.
    pub client: Client,
    /// The rebalance timeout (sizes the coordinator connection's request timeout).
    pub rebalance_timeout: Duration,
}

impl GroupShared {
    /// Runs `f` on the member, then wakes the driver.
    pub fn with_member<T>(&self, f: impl FnOnce(&mut Member) -> T) -> T {
        let out = f(&mut self.member.lock().unwrap());
        self.wake.notify_one();
        out
    }
}

type InFlight = BoxFuture<'static, Result<GroupResponse>>;

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

async fn send(conn: Connection, request: GroupRequest) -> Result<GroupResponse> {
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

async fn wait_in_flight(f: &mut Option<InFlight>) -> Result<GroupResponse> {
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
    fn member(&self) -> std::sync::MutexGuard<'_, Member> {
        self.shared.member.lock().unwrap()
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
                        self.member().provide_metadata(Instant::now(), &counts);
                        self.led_with = Some(counts);
                    }
                    GroupEvent::Left => {
                        self.handler.handle(GroupEvent::Left).await;
                        return;
                    }
                    e @ GroupEvent::Fatal { .. } => {
                        self.handler.handle(e).await;
                        return;
                    }
                    e @ GroupEvent::Assigned { .. } => {
                        self.handler.handle(e).await;
                    }
                    e => {
                        // A revocation or loss ends the generation we may have led.
                        self.led_with = None;
                        self.handler.handle(e).await;
                    }
                }
            }
            if !self.leaving && self.handler.is_abandoned() {
                tracing::debug!("every consumer handle is gone; leaving the group");
                self.leaving = true;
                self.member().leave(Instant::now());
                continue;
            }
            self.check_metadata();
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
    fn check_metadata(&mut self) {
        let Some(counts) = &self.led_with else {
            return;
        };
        if !self.member().is_stable() {
            return;
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
            self.member().rejoin(Instant::now());
        }
    }

    async fn transmit(&mut self, target: Option<i32>) {
        let conn = match target {
            None => self.shared.client.any_connection(Purpose::Group).await,
            Some(node) => self.coordinator_connection(node).await,
        };
        let now = Instant::now();
        match conn {
            Ok(conn) => {
                let request = {
                    let mut m = self.member();
                    m.set_versions(versions_of(&conn));
                    m.poll_transmit()
                };
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
                let _ = m.poll_transmit();
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
