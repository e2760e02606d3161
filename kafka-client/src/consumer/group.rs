//! The consumer's group side: [`Consumer::subscribe`], the rebalance hooks, offset commits.
//!
//! # What happens at a rebalance, in order
//!
//! The group driver (one task per subscribed consumer) handles the member's events one at a
//! time and awaits each to the end before it sends anything else to the coordinator, so hooks
//! never run concurrently with each other and each gets its own copy of the partition list.
//!
//! - **Revoked** (eager: everything owned, when a rebalance starts; cooperative-sticky: only the
//!   partitions that moved away, after the SyncGroup; every owned partition on
//!   [`Consumer::close`]):
//!   1. the partitions stop being fetched and handed out; their buffered records are dropped
//!      (their positions stay readable, so [`Consumer::commit_polled`] still covers them);
//!   2. with `enable.auto.commit`, their polled positions are committed synchronously (as Java
//!      does before its revoke listener);
//!   3. [`RebalanceHooks::on_revoked`] runs and is awaited: it may commit;
//!   4. the partitions are removed; only then does the member send its next JoinGroup (or its
//!      LeaveGroup), so no other member can own them before the hook has returned.
//! - **Assigned** (after every successful SyncGroup, even with nothing new; eager: the whole
//!   assignment, cooperative: only the added partitions):
//!   1. the partitions join the assignment without a position;
//!   2. [`RebalanceHooks::on_assigned`] runs and is awaited (a [`Consumer::seek`] there sets the
//!      start position and skips the committed offset);
//!   3. their committed offsets are fetched (OffsetFetch with `require_stable`, KIP-447;
//!      `UNSTABLE_OFFSET_COMMIT` is retried) and fetching starts there, or at
//!      `auto.offset.reset` for partitions without a committed offset.
//! - **Lost** (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, session timeout, fencing): the partitions
//!   are dropped at once, nothing is committed, then [`RebalanceHooks::on_lost`] runs. It must
//!   not commit (another member may own the partitions already); it does **not** fall back to
//!   `on_revoked` — implement both if both should do the same.
//!
//! With cooperative-sticky (the default) partitions that stay with a member are neither revoked
//! nor re-assigned: they keep being fetched through the rebalance.
//!
//! # KIP-848 (`group.protocol=consumer`)
//!
//! The broker assigns; the member learns its target assignment from heartbeat answers. The
//! hooks keep the same meaning and ordering: partitions that left the target are **revoked**
//! first, and the heartbeat that tells the coordinator they are free goes out only after
//! `on_revoked` returned; then the added partitions are **assigned** (`on_assigned` also runs with
//! an empty list when a new target only took partitions away). UNKNOWN_MEMBER_ID,
//! FENCED_MEMBER_EPOCH and a session without heartbeat answers are **lost**. Commits carry the
//! member epoch in place of the generation ([`Consumer::group_generation`] returns it).
//!
//! Hooks must not call [`Consumer::close`] (close waits for the group driver, which waits for
//! the hook). With the classic protocol the member keeps heartbeating its last synced generation
//! while `on_assigned` or `on_revoked` runs, every `heartbeat.interval.ms`, for up to the
//! rebalance timeout (`max.poll.interval.ms`), as Java's heartbeat thread does: a revoke hook
//! that drains work for longer than `session.timeout.ms` keeps its membership, one that runs past
//! the rebalance timeout gets the member evicted. With KIP-848 heartbeats carry the owned
//! partitions and wait for the hook: there a hook longer than the session timeout is evicted.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kafka_wire::messages::{
    ConsumerGroupHeartbeatRequest, FindCoordinatorRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_wire::{ErrorCode, KString};
use tokio::sync::{mpsc, oneshot};

use super::{Consumer, Inner};
use crate::client::{Client, Purpose};
use crate::error::{BrokerError, Error, Result};
use crate::group::driver::{AnyMember, EventHandler, GroupShared};
use crate::group::member::{GroupEvent, OffsetToCommit};
use crate::group::BoxFuture;
use crate::offsets::{offset_fetch_request, offset_fetch_rows};
use crate::types::TopicPartition;

/// Async callbacks run at rebalances (franz-go's `OnPartitionsAssigned` / `Revoked` / `Lost`).
/// See the [module docs](self) for when each runs and what is guaranteed around it. Every
/// method has a do-nothing default. Each gets a handle of the consumer, to commit, seek or read
/// positions.
///
/// ```
/// use kafka_client::consumer::RebalanceHooks;
/// use kafka_client::group::BoxFuture;
/// use kafka_client::{Consumer, TopicPartition};
///
/// struct CommitOnRevoke;
///
/// impl RebalanceHooks for CommitOnRevoke {
///     fn on_revoked<'a>(
///         &'a self,
///         consumer: &'a Consumer,
///         _partitions: &'a [TopicPartition],
///     ) -> BoxFuture<'a, ()> {
///         Box::pin(async move {
///             if let Err(e) = consumer.commit_polled().await {
///                 eprintln!("commit on revoke failed: {e}");
///             }
///         })
///     }
/// }
/// ```
pub trait RebalanceHooks: Send + Sync + 'static {
    /// Partitions now owned (eager: the whole assignment; cooperative: the added ones), before
    /// their committed offsets are fetched.
    fn on_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }

    /// Partitions given up in an orderly way; they are no longer handed out. May commit.
    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }

    /// Partitions lost without a chance to commit. Must not commit (a commit here fails with
    /// `REBALANCE_IN_PROGRESS`: the member has no valid generation).
    fn on_lost<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }
}

/// An offset commit running in the background ([`Consumer::commit_async`]). Awaiting it gives
/// the commit's result; dropping it does not cancel the commit.
#[must_use = "the commit runs anyway; await this to learn whether it succeeded"]
pub struct CommitHandle(CommitInner);

enum CommitInner {
    Waiting(oneshot::Receiver<Result<()>>),
    Done(Option<Result<()>>),
}

impl std::fmt::Debug for CommitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitHandle").finish_non_exhaustive()
    }
}

impl Future for CommitHandle {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &mut self.get_mut().0 {
            CommitInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(Error::Closed))),
            CommitInner::Done(r) => Poll::Ready(r.take().unwrap_or(Err(Error::Closed))),
        }
    }
}

struct CommitJob {
    offsets: Vec<OffsetToCommit>,
    reply: Option<oneshot::Sender<Result<()>>>,
}

/// The group state of a subscribed consumer.
pub(super) struct GroupState {
    pub group_id: String,
    pub shared: Arc<GroupShared>,
    pub task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Commits go through one worker, in the order they were asked for.
    commits: mpsc::UnboundedSender<CommitJob>,
    /// A fatal group error, handed to every later poll.
    pub fatal: Mutex<Option<Error>>,
    pub next_auto_commit: Mutex<Instant>,
}

impl GroupState {
    fn enqueue(&self, offsets: Vec<OffsetToCommit>, reply: Option<oneshot::Sender<Result<()>>>) {
        if let Err(mpsc::error::SendError(job)) = self.commits.send(CommitJob { offsets, reply }) {
            if let Some(reply) = job.reply {
                let _ = reply.send(Err(Error::Closed));
            }
        }
    }
}

struct Handler {
    inner: Weak<Inner>,
    alive: Weak<()>,
}

impl Handler {
    fn consumer(&self) -> Option<Consumer> {
        Some(Consumer {
            inner: self.inner.upgrade()?,
            alive: self.alive.upgrade()?,
        })
    }
}

impl EventHandler for Handler {
    fn handle(&self, event: GroupEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(consumer) = self.consumer() else {
                return;
            };
            match event {
                GroupEvent::Assigned { partitions, .. } => consumer.on_assigned(partitions).await,
                GroupEvent::Revoked { partitions } => consumer.on_revoked(partitions).await,
                GroupEvent::Lost { partitions } => consumer.on_lost(partitions).await,
                GroupEvent::Fatal { error } => consumer.on_fatal(error),
                GroupEvent::Left | GroupEvent::NeedMetadata { .. } => {}
            }
        })
    }

    fn is_abandoned(&self) -> bool {
        self.alive.strong_count() == 0
    }
}

fn rebalancing(what: &str) -> Error {
    Error::Broker(
        BrokerError::new(ErrorCode::REBALANCE_IN_PROGRESS)
            .with_message(format!("{what}: the member is not in a synced generation")),
    )
}

fn is_coordinator_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NOT_COORDINATOR
            | ErrorCode::COORDINATOR_NOT_AVAILABLE
            | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
            | ErrorCode::REQUEST_TIMED_OUT
    )
}

/// The optional gate that holds a revocation while the application holds polled records
/// (franz-go's `BlockRebalanceOnPoll`).
#[derive(Default)]
pub(crate) struct RebalanceGate {
    enabled: std::sync::atomic::AtomicBool,
    held: std::sync::atomic::AtomicBool,
    released: tokio::sync::Notify,
}

impl RebalanceGate {
    /// A poll handed out records: hold revocations until [`Consumer::allow_rebalance`].
    pub(crate) fn polled(&self) {
        use std::sync::atomic::Ordering;
        if self.enabled.load(Ordering::SeqCst) {
            self.held.store(true, Ordering::SeqCst);
        }
    }

    fn release(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
        self.released.notify_waiters();
    }

    /// Waits until the application allows the rebalance, at most `limit` (past the rebalance
    /// timeout the coordinator evicts the member anyway; then the revocation goes on, with a
    /// warning).
    async fn wait(&self, limit: Duration) {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + limit;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.held.load(Ordering::SeqCst) {
                return;
            }
            if tokio::time::timeout_at(deadline.into(), released)
                .await
                .is_err()
            {
                tracing::warn!(
                    waited = ?limit,
                    "the application did not allow the rebalance within the rebalance timeout; revoking anyway"
                );
                return;
            }
        }
    }
}

/// Whether a failed commit attempt is worth repeating in the same generation.
fn commit_retriable(e: &Error) -> bool {
    match e.broker_code() {
        Some(code) => is_coordinator_error(code),
        None => e.is_retriable(),
    }
}

async fn commit_worker(shared: Arc<GroupShared>, mut rx: mpsc::UnboundedReceiver<CommitJob>) {
    while let Some(job) = rx.recv().await {
        let r = commit_once(&shared, &job.offsets).await;
        match job.reply {
            Some(reply) => {
                let _ = reply.send(r);
            }
            None => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "background offset commit failed");
                }
            }
        }
    }
}

/// Commits `offsets` with the member's current generation, retrying coordinator and transport
/// errors (up to `request.timeout.ms`) as long as the generation stays the same.
async fn commit_once(shared: &GroupShared, offsets: &[OffsetToCommit]) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let cfg = shared.client.config();
    // As long as a coordinator failover may take (Java bounds commitSync by
    // default.api.timeout.ms, 60 s): a revoke hook's commit must survive the coordinator's
    // broker dying, or its records are consumed again by the next owner.
    let deadline = Instant::now() + cfg.request_timeout.max(shared.rebalance_timeout);
    let backoff = cfg.retry_backoff;
    // The coordinator found by this commit itself, when the member's is unreachable (the
    // member does not look for a new one while the driver awaits a revoke hook).
    let mut found: Option<i32> = None;
    let (mut generation, kip848) = {
        let m = shared.member.lock().unwrap();
        (m.generation(), m.is_consumer_protocol())
    };
    loop {
        let r = try_commit(shared, offsets, generation, found).await;
        match r {
            Err(e) if commit_retriable(&e) && Instant::now() + backoff < deadline => {
                tracing::debug!(error = %e, "offset commit failed; retrying");
                tokio::time::sleep(backoff).await;
                if coordinator_lost(&e) {
                    match find_coordinator(&shared.client, &shared.group_id).await {
                        Ok(node) => found = Some(node),
                        Err(e) => {
                            tracing::debug!(error = %e, "FindCoordinator for a commit failed")
                        }
                    }
                }
            }
            // KIP-848: the member epoch moves on with every change of our own assignment, so
            // a commit can race a heartbeat (STALE_MEMBER_EPOCH, or the epoch changed before
            // the request was built). Retry with the new epoch while we still hold one.
            Err(e)
                if kip848
                    && matches!(
                        e.broker_code(),
                        Some(ErrorCode::STALE_MEMBER_EPOCH | ErrorCode::REBALANCE_IN_PROGRESS)
                    )
                    && Instant::now() + backoff < deadline =>
            {
                let now_generation = shared.member.lock().unwrap().generation();
                if now_generation < 0 {
                    return Err(e);
                }
                if now_generation == generation {
                    tokio::time::sleep(backoff).await;
                }
                generation = now_generation;
            }
            r => return r,
        }
    }
}

/// Whether a commit error means the coordinator is gone or moved (find it again).
fn coordinator_lost(e: &Error) -> bool {
    match e.broker_code() {
        Some(code) => matches!(
            code,
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE
        ),
        None => matches!(e, Error::Io { .. } | Error::Timeout { .. } | Error::Closed),
    }
}

async fn try_commit(
    shared: &GroupShared,
    offsets: &[OffsetToCommit],
    generation: i32,
    found: Option<i32>,
) -> Result<()> {
    let node = {
        let m = shared.member.lock().unwrap();
        if m.generation() != generation || !m.can_commit() {
            return Err(rebalancing("offset commit"));
        }
        found.or_else(|| m.coordinator().map(|c| c.node_id))
    };
    let Some(node) = node else {
        return Err(Error::Broker(BrokerError::new(
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
        )));
    };
    let conn = match shared.client.connection(node, Purpose::Group).await {
        Ok(c) => c,
        Err(e) => {
            shared.client.request_metadata_refresh();
            return Err(e);
        }
    };
    let Some(version) = conn.version::<OffsetCommitRequest>() else {
        return Err(crate::client::unsupported::<OffsetCommitRequest>(
            &conn,
            "committing offsets",
        ));
    };
    let request = {
        let m = shared.member.lock().unwrap();
        if m.generation() != generation {
            return Err(rebalancing("offset commit"));
        }
        m.commit_request(version, offsets)
    };
    let Some((version, request)) = request else {
        return Err(rebalancing("offset commit"));
    };
    let group = request.group_id.to_string();
    let resp = conn.send(version, request).await?;
    let mut first: Option<Error> = None;
    let mut group_error: Option<ErrorCode> = None;
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code == 0 {
                continue;
            }
            let code = ErrorCode(p.error_code);
            if matches!(
                code,
                ErrorCode::ILLEGAL_GENERATION
                    | ErrorCode::UNKNOWN_MEMBER_ID
                    | ErrorCode::REBALANCE_IN_PROGRESS
                    | ErrorCode::NOT_COORDINATOR
                    | ErrorCode::COORDINATOR_NOT_AVAILABLE
                    | ErrorCode::FENCED_INSTANCE_ID
                    | ErrorCode::FENCED_MEMBER_EPOCH
                    | ErrorCode::STALE_MEMBER_EPOCH
            ) {
                group_error.get_or_insert(code);
            }
            if first.is_none() {
                let e = BrokerError::new(code)
                    .with_group(group.clone())
                    .with_partition(t.name.to_string(), p.partition_index);
                first = Some(if code == ErrorCode::FENCED_INSTANCE_ID {
                    Error::Fenced(e)
                } else {
                    Error::Broker(e)
                });
            }
        }
    }
    if let Some(code) = group_error {
        shared.with_member(|m| m.handle_commit_error(Instant::now(), code));
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The coordinator of `group` through FindCoordinator.
async fn find_coordinator(client: &Client, group: &str) -> Result<i32> {
    let resp = client
        .send_any(Purpose::Group, |v| {
            if v >= 4 {
                FindCoordinatorRequest {
                    key_type: 0,
                    coordinator_keys: vec![KString::from(group)],
                    ..Default::default()
                }
            } else {
                FindCoordinatorRequest {
                    key: KString::from(group),
                    key_type: 0,
                    ..Default::default()
                }
            }
        })
        .await?;
    let (code, node) = match resp.coordinators.first() {
        Some(c) => (c.error_code, c.node_id),
        None => (resp.error_code, resp.node_id),
    };
    if code != 0 {
        return Err(Error::Broker(BrokerError::new(code).with_group(group)));
    }
    if !client.metadata().brokers.contains_key(&node) {
        client.refresh_metadata().await?;
    }
    Ok(node)
}

/// One OffsetFetch of `tps` (stable offsets only) to `node`: committed offsets, `None` for
/// partitions without one. Partition errors come back as the first error.
async fn offset_fetch_once(
    client: &Client,
    node: i32,
    group: &str,
    tps: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
    let conn = client.connection(node, Purpose::Group).await?;
    let Some(version) = conn.version::<OffsetFetchRequest>() else {
        return Err(crate::client::unsupported::<OffsetFetchRequest>(
            &conn,
            "reading committed offsets",
        ));
    };
    // v10 names topics by id; we ask by name.
    let version = version.min(9);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    let request = offset_fetch_request(version, group, Some(&by_topic));
    let resp = conn.send(version, request).await?;
    let out = offset_fetch_rows(&resp, version >= 8, group)?
        .into_iter()
        .map(|r| {
            (
                TopicPartition::new(r.topic, r.partition),
                (r.offset >= 0).then_some(r.offset),
            )
        })
        .collect();
    Ok(out)
}

fn offset_fetch_retriable(e: &Error) -> bool {
    match e.broker_code() {
        Some(code) => is_coordinator_error(code) || code == ErrorCode::UNSTABLE_OFFSET_COMMIT,
        None => e.is_retriable(),
    }
}

/// Keeps fetching the committed offsets of `tps` until they are known, then starts them
/// there; stops when the consumer is gone or closed, or the partitions are no longer pending
/// (revoked or lost). A new generation does not stop it: with cooperative rebalancing the
/// partitions stay assigned across the follow-up round.
async fn retry_committed(inner: Weak<Inner>, alive: Weak<()>, tps: Vec<TopicPartition>) {
    loop {
        let Some(consumer) = (Handler {
            inner: inner.clone(),
            alive: alive.clone(),
        })
        .consumer() else {
            return;
        };
        let backoff = consumer.inner.client.config().retry_backoff;
        let Some(g) = consumer.group_state() else {
            return;
        };
        let still: Vec<TopicPartition> = {
            let st = consumer.inner.state.lock().unwrap();
            tps.iter().filter(|tp| st.is_pending(tp)).cloned().collect()
        };
        if still.is_empty()
            || consumer
                .inner
                .closed
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        match consumer.start_at_committed(&g, &still, || true).await {
            None => {
                consumer.inner.wake.notify_waiters();
                consumer.drive();
                return;
            }
            Some(e) => {
                tracing::debug!(error = %e, "committed offsets still not known; retrying");
                drop(consumer);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Committed offsets of `tps`, retrying retriable errors (UNSTABLE_OFFSET_COMMIT: a transaction
/// with offsets for them is still open) until `deadline` or until `keep_going` says stop.
async fn fetch_committed(
    client: &Client,
    group: &str,
    coordinator: impl Fn() -> Option<i32>,
    tps: &[TopicPartition],
    deadline: Instant,
    keep_going: impl Fn() -> bool,
) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
    let backoff = client.config().retry_backoff;
    loop {
        let node = match coordinator() {
            Some(n) => Ok(n),
            None => find_coordinator(client, group).await,
        };
        let r = match node {
            Ok(node) => offset_fetch_once(client, node, group, tps).await,
            Err(e) => Err(e),
        };
        match r {
            Err(e) if offset_fetch_retriable(&e) && Instant::now() + backoff < deadline => {
                if !keep_going() {
                    return Err(e);
                }
                tracing::debug!(error = %e, "OffsetFetch failed; retrying");
                tokio::time::sleep(backoff).await;
            }
            r => return r,
        }
    }
}

impl Consumer {
    fn group_state(&self) -> Option<Arc<GroupState>> {
        self.inner.group.lock().unwrap().clone()
    }

    /// Joins the consumer group `group.id` subscribing to `topics`; a second call changes the
    /// subscription (and rebalances). Partitions arrive through rebalances: see the
    /// [module docs](crate::consumer::group) for the order of events and hooks. Topics that do
    /// not exist yet are subscribed to all the same.
    ///
    /// The protocol is `group.protocol`: classic (JoinGroup / SyncGroup, client-side balancers
    /// from [`Consumer::set_balancers`] or `partition.assignment.strategy`), or consumer
    /// (KIP-848: ConsumerGroupHeartbeat, the broker assigns with `group.remote.assignor`). A
    /// broker that does not offer ConsumerGroupHeartbeat gets the classic protocol (with a
    /// warning).
    ///
    /// Errors: [`Error::Config`] without `group.id` or with an unknown balancer name in
    /// `partition.assignment.strategy`; [`Error::Misuse`] after [`Consumer::assign`] or
    /// [`Consumer::close`].
    pub fn subscribe<I, S>(&self, topics: I) -> impl Future<Output = Result<()>> + Send + '_
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        self.subscribe_topics(topics)
    }

    /// The classic balancers: [`Consumer::set_balancers`], else `partition.assignment.strategy`,
    /// else cooperative-sticky.
    fn classic_balancers(&self) -> Result<Vec<Arc<dyn crate::group::balancer::Balancer>>> {
        if let Some(b) = self.inner.balancers.lock().unwrap().clone() {
            return Ok(b);
        }
        let names = &self.inner.config.partition_assignment_strategy;
        if names.is_empty() {
            return Ok(vec![Arc::new(
                crate::group::balancer::CooperativeStickyBalancer,
            )]);
        }
        names
            .iter()
            .map(|n| {
                crate::group::balancer_by_name(n).ok_or_else(|| {
                    Error::Config(crate::config::ConfigError::Invalid(format!(
                        "partition.assignment.strategy: unknown balancer {n:?}"
                    )))
                })
            })
            .collect()
    }

    /// Whether to run the KIP-848 protocol: asked for, and offered by the broker.
    async fn use_consumer_protocol(&self) -> Result<bool> {
        if self.inner.config.group_protocol != crate::config::GroupProtocol::Consumer {
            return Ok(false);
        }
        let conn = self.inner.client.any_connection(Purpose::Group).await?;
        let offered = conn.version::<ConsumerGroupHeartbeatRequest>().is_some();
        // A broker that reports finalized features (every KRaft Kafka reports metadata.version)
        // runs KIP-848 groups only at group.version 1 or later: Kafka 3.9 lists
        // ConsumerGroupHeartbeat but answers it UNSUPPORTED_VERSION unless the early-access
        // protocol was turned on. One that reports no features (Redpanda) is taken at its word.
        let reports_features = conn.finalized_feature("metadata.version").is_some();
        let group_version = conn.finalized_feature("group.version").unwrap_or(0);
        if offered && (!reports_features || group_version >= 1) {
            Ok(true)
        } else {
            tracing::warn!(
                broker = %conn.peer(),
                consumer_group_heartbeat = offered,
                group_version,
                "group.protocol=consumer, but the broker does not run the consumer group \
                 protocol (KIP-848: ConsumerGroupHeartbeat and group.version >= 1); using the \
                 classic protocol"
            );
            Ok(false)
        }
    }

    async fn subscribe_topics(&self, topics: Vec<String>) -> Result<()> {
        use std::sync::atomic::Ordering;
        let config = &self.inner.config;
        let Some(group_id) = config.group_id.clone() else {
            return Err(Error::Config(crate::config::ConfigError::Invalid(
                "subscribe needs a group id (group.id / ConsumerConfig::group_id)".to_string(),
            )));
        };
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Misuse("subscribe on a closed consumer".to_string()));
        }
        if self.inner.direct.load(Ordering::SeqCst) {
            return Err(Error::Misuse(
                "subscribe after assign: a consumer uses one or the other".to_string(),
            ));
        }
        // Make the topics part of the metadata refreshes (to see partition count changes, and
        // to name the topic ids of KIP-848 assignments).
        for t in &topics {
            let _ = self.inner.client.topic(t).await;
        }
        let now = Instant::now();
        if let Some(g) = self.group_state() {
            g.shared.with_member(|m| m.set_topics(now, topics));
            return Ok(());
        }
        let member = if self.use_consumer_protocol().await? {
            use crate::group::consumer_member::{ConsumerMember, ConsumerMemberConfig};
            use crate::rng::RandomSource;
            let mut mc = ConsumerMemberConfig::new(group_id.clone(), topics);
            mc.instance_id = config.group_instance_id.clone();
            mc.rack_id = config.client_rack.clone();
            mc.server_assignor = config.group_remote_assignor.clone();
            mc.rebalance_timeout = config.rebalance_timeout;
            mc.session_timeout = config.session_timeout;
            mc.retry_backoff = config.client.retry_backoff;
            mc.request_timeout = config.client.request_timeout;
            let seed = crate::rng::OsRandom.next_u64();
            let mut member = ConsumerMember::new(mc, seed, now);
            member.start(now);
            AnyMember::Consumer(member)
        } else {
            let mut mc = crate::group::member::MemberConfig::new(group_id.clone(), topics);
            mc.instance_id = config.group_instance_id.clone();
            mc.session_timeout = config.session_timeout;
            mc.rebalance_timeout = config.rebalance_timeout;
            mc.heartbeat_interval = config.heartbeat_interval;
            mc.retry_backoff = config.client.retry_backoff;
            mc.request_timeout = config.client.request_timeout;
            let balancers = self.classic_balancers()?;
            let mut member = crate::group::member::Member::new(mc, balancers, now);
            member.start(now);
            AnyMember::Classic(member)
        };
        let shared = Arc::new(GroupShared {
            member: Mutex::new(member),
            wake: tokio::sync::Notify::new(),
            client: self.inner.client.clone(),
            rebalance_timeout: config.rebalance_timeout,
            heartbeat_interval: config.heartbeat_interval,
            group_id: group_id.clone(),
            hook: Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(GroupState {
            group_id,
            shared: shared.clone(),
            task: Mutex::new(None),
            commits: tx,
            fatal: Mutex::new(None),
            next_auto_commit: Mutex::new(now + config.auto_commit_interval),
        });
        {
            let mut slot = self.inner.group.lock().unwrap();
            if let Some(g) = slot.as_ref() {
                // A concurrent subscribe won: change its subscription instead.
                let topics = shared.member.lock().unwrap().topics().to_vec();
                g.shared.with_member(|m| m.set_topics(now, topics));
                return Ok(());
            }
            *slot = Some(state.clone());
        }
        tokio::spawn(commit_worker(shared.clone(), rx));
        let handler = Arc::new(Handler {
            inner: Arc::downgrade(&self.inner),
            alive: Arc::downgrade(&self.alive),
        });
        let task = tokio::spawn(crate::group::driver::run(shared, handler));
        *state.task.lock().unwrap() = Some(task);
        Ok(())
    }

    /// Leaves the group: every owned partition is revoked through the hooks (with the
    /// auto-commit of [`Consumer::close`]), the member leaves (LeaveGroup, or a KIP-848
    /// heartbeat with epoch -1; nothing for a static member), fetching stops and the
    /// subscription is forgotten. A later [`Consumer::subscribe`] joins anew. Does nothing
    /// without a subscription. Waits at most the rebalance timeout (plus five seconds) for the
    /// member to leave.
    pub async fn unsubscribe(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let Some(g) = self.group_state() else {
            return Ok(());
        };
        self.leave_group().await;
        {
            let mut slot = self.inner.group.lock().unwrap();
            if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &g)) {
                *slot = None;
            }
        }
        // Whatever the member did not revoke (it did not leave in time) stops now.
        {
            let mut st = self.inner.state.lock().unwrap();
            let all = st.assignment();
            st.fence(&all);
            st.remove(&all);
        }
        self.inner.wake.notify_waiters();
        Ok(())
    }

    /// The subscribed topics (empty without [`Consumer::subscribe`]).
    pub fn subscription(&self) -> Vec<String> {
        self.group_state()
            .map(|g| g.shared.member.lock().unwrap().topics().to_vec())
            .unwrap_or_default()
    }

    /// Sets the hooks run at rebalances (replacing earlier ones); set them before
    /// [`Consumer::subscribe`] to see the first assignment.
    pub fn set_rebalance_hooks(&self, hooks: Arc<dyn RebalanceHooks>) {
        *self.inner.hooks.lock().unwrap() = Some(hooks);
    }

    /// The balancers offered to the group, in order of preference (classic protocol only;
    /// overrides `partition.assignment.strategy`, see [`crate::group::balancer_by_name`]).
    /// Default: cooperative-sticky alone. Must be called before [`Consumer::subscribe`].
    pub fn set_balancers(
        &self,
        balancers: Vec<Arc<dyn crate::group::balancer::Balancer>>,
    ) -> Result<()> {
        if balancers.is_empty() {
            return Err(Error::Misuse(
                "set_balancers needs at least one".to_string(),
            ));
        }
        if self.group_state().is_some() {
            return Err(Error::Misuse(
                "set_balancers after subscribe has no effect".to_string(),
            ));
        }
        *self.inner.balancers.lock().unwrap() = Some(balancers);
        Ok(())
    }

    /// With `on`, every [`Consumer::poll`] that returns records holds the next revocation
    /// (partitions leaving this member, and so the rebalance) until
    /// [`Consumer::allow_rebalance`]: the application finishes (and commits) what it polled
    /// while it still owns the partitions. franz-go's `BlockRebalanceOnPoll`. Call
    /// `allow_rebalance` promptly: a revocation held past the rebalance timeout goes on anyway
    /// (the coordinator would evict the member). Lost partitions are never held. Off by default.
    pub fn block_rebalance_on_poll(&self, on: bool) {
        use std::sync::atomic::Ordering;
        self.inner.gate.enabled.store(on, Ordering::SeqCst);
        if !on {
            self.inner.gate.release();
        }
    }

    /// Lets a revocation held by [`Consumer::block_rebalance_on_poll`] go on (until the next
    /// poll that returns records).
    pub fn allow_rebalance(&self) {
        self.inner.gate.release();
    }

    /// The rebalance hook running now (`on_assigned`, `on_revoked` or `on_lost`) and for how
    /// long: the "hook is blocking" signal. Heartbeats go on during a hook up to the rebalance
    /// timeout (classic protocol; see the [module docs](crate::consumer::group)); the driver
    /// logs a warning every 5 s while a hook runs.
    pub fn running_rebalance_hook(&self) -> Option<(&'static str, Duration)> {
        let g = self.group_state()?;
        let hook = *g.shared.hook.lock().unwrap();
        hook.map(|(kind, since)| (kind, since.elapsed()))
    }

    /// The group member id and generation of the last successful sync (KIP-848: the member
    /// epoch), once joined.
    pub fn group_generation(&self) -> Option<(String, i32)> {
        let g = self.group_state()?;
        let m = g.shared.member.lock().unwrap();
        (m.generation() >= 0).then(|| (m.member_id().to_string(), m.generation()))
    }

    /// What a transactional producer sends with this consumer's offsets
    /// ([`crate::Producer::send_offsets_to_transaction`], KIP-447): `group.id`, the generation
    /// (KIP-848: the member epoch), the member id and `group.instance.id`. `None` before the
    /// first successful join (and after the group was left).
    pub fn group_metadata(&self) -> Option<crate::producer::GroupMetadata> {
        let g = self.group_state()?;
        let m = g.shared.member.lock().unwrap();
        (m.generation() >= 0).then(|| crate::producer::GroupMetadata {
            group_id: g.shared.group_id.clone(),
            generation_id: m.generation(),
            member_id: m.member_id().to_string(),
            instance_id: self.inner.config.group_instance_id.clone(),
        })
    }

    /// Asks the group for a rebalance (Java's `enforceRebalance`, franz-go's `ForceRebalance`):
    /// the member sends a JoinGroup carrying `reason` (KIP-800; brokers log it), with metadata
    /// computed after this call, so balancers see what changed (a warm-up that finished, say).
    /// When a round is already under way the member joins again as soon as it completes.
    /// Returns at once; the new assignment arrives through the hooks as usual.
    ///
    /// Errors: [`Error::Closed`] on a closed consumer; [`Error::Misuse`] when not subscribed, or
    /// with the consumer group protocol (KIP-848), where the broker alone decides when to
    /// rebalance.
    pub fn request_rejoin(&self, reason: &str) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let Some(g) = self.group_state() else {
            return Err(Error::Misuse(
                "request_rejoin needs a subscribed consumer".to_string(),
            ));
        };
        g.shared.with_member(|m| match m {
            crate::group::driver::AnyMember::Classic(m) => {
                if m.rejoin(Instant::now(), reason) {
                    tracing::info!(group = %g.shared.group_id, reason, "rejoin requested");
                    Ok(())
                } else {
                    Err(Error::Closed)
                }
            }
            crate::group::driver::AnyMember::Consumer(_) => Err(Error::Misuse(
                "request_rejoin needs the classic group protocol: with group.protocol=consumer \
                 (KIP-848) the broker decides when to rebalance"
                    .to_string(),
            )),
        })
    }

    fn hooks(&self) -> Option<Arc<dyn RebalanceHooks>> {
        self.inner.hooks.lock().unwrap().clone()
    }

    /// Fetches the committed offsets of `tps` (for at most half a session timeout: heartbeats
    /// may wait on this) and starts the partitions there; an error that is not retriable fails
    /// them. Returns the retriable error when the offsets are not known yet: the partitions
    /// then stay pending.
    async fn start_at_committed(
        &self,
        g: &GroupState,
        tps: &[TopicPartition],
        keep_going: impl Fn() -> bool,
    ) -> Option<Error> {
        let deadline = Instant::now() + self.inner.config.session_timeout / 2;
        let coordinator = || {
            g.shared
                .member
                .lock()
                .unwrap()
                .coordinator()
                .map(|c| c.node_id)
        };
        let r = fetch_committed(
            &self.inner.client,
            &g.group_id,
            coordinator,
            tps,
            deadline,
            keep_going,
        )
        .await;
        let mut st = self.inner.state.lock().unwrap();
        match r {
            Ok(committed) => {
                for tp in tps {
                    st.start(tp, committed.get(tp).copied().flatten());
                }
                None
            }
            Err(e) if offset_fetch_retriable(&e) => Some(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch committed offsets");
                for tp in tps {
                    st.fail(tp, e.clone());
                }
                None
            }
        }
    }

    async fn on_assigned(&self, partitions: Vec<TopicPartition>) {
        self.inner.state.lock().unwrap().add_pending(&partitions);
        if let Some(h) = self.hooks() {
            h.on_assigned(self, &partitions).await;
        }
        let pending: Vec<TopicPartition> = {
            let st = self.inner.state.lock().unwrap();
            partitions
                .iter()
                .filter(|tp| st.is_pending(tp))
                .cloned()
                .collect()
        };
        let mut held_back: Vec<TopicPartition> = Vec::new();
        if !pending.is_empty() {
            if let Some(g) = self.group_state() {
                let generation = g.shared.member.lock().unwrap().generation();
                let same = || g.shared.member.lock().unwrap().generation() == generation;
                if let Some(e) = self.start_at_committed(&g, &pending, same).await {
                    // Not stable yet (UNSTABLE_OFFSET_COMMIT: a previous owner's transaction
                    // with offsets for them is still open, until it commits or times out), or
                    // the coordinator is moving. The partitions stay pending, not fetched, and
                    // are started once their offsets are known; never at auto.offset.reset,
                    // which would re-read or skip records.
                    tracing::debug!(error = %e, "committed offsets not known yet; retrying in the background");
                    held_back = pending.clone();
                    tokio::spawn(retry_committed(
                        Arc::downgrade(&self.inner),
                        Arc::downgrade(&self.alive),
                        pending.clone(),
                    ));
                }
            }
        }
        {
            let mut st = self.inner.state.lock().unwrap();
            for tp in partitions.iter().filter(|tp| !held_back.contains(tp)) {
                st.start(tp, None);
            }
        }
        self.inner.wake.notify_waiters();
        self.drive();
    }

    async fn on_revoked(&self, partitions: Vec<TopicPartition>) {
        // The application may still be processing records it polled from these partitions.
        self.inner
            .gate
            .wait(self.inner.config.rebalance_timeout)
            .await;
        self.inner.state.lock().unwrap().fence(&partitions);
        self.inner.wake.notify_waiters();
        if self.inner.config.enable_auto_commit {
            let offsets = self.polled_offsets(Some(&partitions));
            if let Err(e) = self.commit_offsets(offsets).await {
                tracing::warn!(error = %e, "auto-commit of revoked partitions failed");
            }
        }
        if let Some(h) = self.hooks() {
            h.on_revoked(self, &partitions).await;
        }
        self.inner.state.lock().unwrap().remove(&partitions);
        self.inner.wake.notify_waiters();
    }

    async fn on_lost(&self, partitions: Vec<TopicPartition>) {
        {
            let mut st = self.inner.state.lock().unwrap();
            st.fence(&partitions);
            st.remove(&partitions);
        }
        self.inner.wake.notify_waiters();
        if let Some(h) = self.hooks() {
            h.on_lost(self, &partitions).await;
        }
    }

    fn on_fatal(&self, code: ErrorCode) {
        let Some(g) = self.group_state() else {
            return;
        };
        let e = BrokerError::new(code).with_group(g.group_id.clone());
        let e = if code == ErrorCode::FENCED_INSTANCE_ID {
            Error::Fenced(e)
        } else {
            Error::Broker(e)
        };
        tracing::error!(error = %e, "the group member failed for good");
        *g.fatal.lock().unwrap() = Some(e);
        {
            let mut st = self.inner.state.lock().unwrap();
            let all = st.assignment();
            st.fence(&all);
            st.remove(&all);
        }
        self.inner.wake.notify_waiters();
    }

    /// The fatal group error, if the member failed for good.
    pub(super) fn group_error(&self) -> Option<Error> {
        self.group_state()?.fatal.lock().unwrap().clone()
    }

    /// Auto-commit, called at the start of every poll: every `auto.commit.interval.ms`, commits
    /// in the background the positions of the records handed out by *earlier* polls.
    pub(super) fn maybe_auto_commit(&self) {
        if !self.inner.config.enable_auto_commit {
            return;
        }
        let Some(g) = self.group_state() else {
            return;
        };
        let now = Instant::now();
        {
            let mut next = g.next_auto_commit.lock().unwrap();
            if now < *next {
                return;
            }
            *next = now + self.inner.config.auto_commit_interval;
        }
        let offsets = self.polled_offsets(None);
        if !offsets.is_empty() {
            g.enqueue(offsets, None);
        }
    }

    fn polled_offsets(&self, only: Option<&[TopicPartition]>) -> Vec<OffsetToCommit> {
        let st = self.inner.state.lock().unwrap();
        st.commit_positions()
            .into_iter()
            .filter(|(tp, _, _)| only.is_none_or(|o| o.contains(tp)))
            .map(|(partition, offset, leader_epoch)| OffsetToCommit {
                partition,
                offset,
                leader_epoch,
            })
            .collect()
    }

    async fn commit_offsets(&self, offsets: Vec<OffsetToCommit>) -> Result<()> {
        self.commit_handle(offsets).await
    }

    fn commit_handle(&self, offsets: Vec<OffsetToCommit>) -> CommitHandle {
        let Some(g) = self.group_state() else {
            return CommitHandle(CommitInner::Done(Some(Err(Error::Misuse(
                "commit needs a subscribed consumer (subscribe first)".to_string(),
            )))));
        };
        if offsets.is_empty() {
            return CommitHandle(CommitInner::Done(Some(Ok(()))));
        }
        let (tx, rx) = oneshot::channel();
        g.enqueue(offsets, Some(tx));
        CommitHandle(CommitInner::Waiting(rx))
    }

    /// Commits `offsets` (partition → next offset to consume) for the group and waits for the
    /// answer. Commits are sent one at a time, in the order asked for. Coordinator and transport
    /// errors are retried (up to `request.timeout.ms`) while the generation stays the same;
    /// during a rebalance the commit fails with `REBALANCE_IN_PROGRESS` (commit in
    /// [`RebalanceHooks::on_revoked`] instead). Needs [`Consumer::subscribe`].
    pub fn commit<I>(&self, offsets: I) -> CommitHandle
    where
        I: IntoIterator<Item = (TopicPartition, i64)>,
    {
        let offsets = offsets
            .into_iter()
            .map(|(partition, offset)| OffsetToCommit {
                partition,
                offset,
                leader_epoch: -1,
            })
            .collect();
        self.commit_handle(offsets)
    }

    /// Like [`Consumer::commit`], without waiting: the commit is queued behind earlier ones and
    /// its failure is logged unless the returned handle is awaited.
    pub fn commit_async<I>(&self, offsets: I) -> CommitHandle
    where
        I: IntoIterator<Item = (TopicPartition, i64)>,
    {
        self.commit(offsets)
    }

    /// Commits the positions of every record handed out by [`Consumer::poll`] so far (with the
    /// leader epoch of the last one), for every assigned partition; waits for the answer.
    pub async fn commit_polled(&self) -> Result<()> {
        let offsets = self.polled_offsets(None);
        self.commit_offsets(offsets).await
    }

    /// The group's committed offsets of `tps` (`None`: nothing committed), stable offsets only
    /// (KIP-447). Works without [`Consumer::subscribe`] as long as `group.id` is set.
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let Some(group) = self.inner.config.group_id.clone() else {
            return Err(Error::Config(crate::config::ConfigError::Invalid(
                "committed needs a group id (group.id / ConsumerConfig::group_id)".to_string(),
            )));
        };
        if tps.is_empty() {
            return Ok(BTreeMap::new());
        }
        let shared = self.group_state().map(|g| g.shared.clone());
        let deadline = Instant::now() + self.inner.config.client.request_timeout;
        let mut out = fetch_committed(
            &self.inner.client,
            &group,
            || {
                shared
                    .as_ref()
                    .and_then(|s| s.member.lock().unwrap().coordinator().map(|c| c.node_id))
            },
            tps,
            deadline,
            || true,
        )
        .await?;
        for tp in tps {
            out.entry(tp.clone()).or_insert(None);
        }
        Ok(out)
    }

    /// Leaves the group (revoking everything through the hooks, with a final auto-commit when
    /// enabled) and waits for the driver to finish, at most the rebalance timeout.
    pub(super) async fn leave_group(&self) {
        let Some(g) = self.group_state() else {
            return;
        };
        g.shared.with_member(|m| m.leave(Instant::now()));
        let task = g.task.lock().unwrap().take();
        if let Some(task) = task {
            let wait = self.inner.config.rebalance_timeout + Duration::from_secs(5);
            let abort = task.abort_handle();
            if tokio::time::timeout(wait, task).await.is_err() {
                tracing::warn!("the group member did not leave in time");
                abort.abort();
            }
        }
    }
}
