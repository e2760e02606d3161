//! The consumer: [`Consumer::assign`] partitions directly, or [`Consumer::subscribe`] to topics
//! as a member of the consumer group `group.id` (classic protocol, or KIP-848 with
//! `group.protocol=consumer`); then [`Consumer::poll`] records.
//!
//! ```text
//!   Consumer (handle)  assign / subscribe / seek / pause / poll / stream / commit
//!        |
//!   driver (here)      one fetch in flight per broker on its Purpose::Fetch connection;
//!        |             offset lookups (ListOffsets) for positions to reset
//!   Fetcher (sans-IO)  positions, KIP-227 fetch sessions, record buffer, txn filtering
//!
//!   group driver       (subscribed consumers) one task running the sans-IO group member
//!                      (classic Member or KIP-848 ConsumerMember) on
//!                      its own coordinator connection; applies assignments to the Fetcher,
//!                      runs the RebalanceHooks; one commit worker sends OffsetCommits in order
//! ```
//!
//! Rebalance events, hooks and their ordering guarantees are described in [`group`]. Offsets:
//! [`Consumer::commit`], [`Consumer::commit_async`], [`Consumer::commit_polled`],
//! [`Consumer::committed`]; with `enable.auto.commit` every poll commits, at most every
//! `auto.commit.interval.ms` and in the background, the positions of the records handed out by
//! earlier polls, revoked partitions are committed synchronously before `on_revoked`, and
//! [`Consumer::close`] commits (through that revocation) before it leaves the group.
//!
//! Fetches run in small tasks spawned by `poll`: each sends one Fetch, feeds the response into the
//! `fetcher::Fetcher` and wakes pollers. While the application processes records, fetches keep
//! going until `max.prefetch.bytes` are buffered.

mod fetcher;
pub mod group;
mod records;
pub mod session;

pub use group::{CommitHandle, RebalanceHooks};

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::messages::FetchRequest;

use crate::client::{send_on, Client, Purpose};
use crate::config::ConsumerConfig;
use crate::error::{Error, Result};
use crate::offsets::list_offsets_each;
use crate::types::{Header, Offset, TimestampType, TopicPartition};
use fetcher::{Action, FetchSettings, Fetcher};

/// One record read by a [`Consumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (ms since the epoch).
    pub timestamp: i64,
    /// What the timestamp means.
    pub timestamp_type: TimestampType,
    /// Key (a zero-copy slice of the fetch response).
    pub key: Option<Bytes>,
    /// Value (a zero-copy slice of the fetch response).
    pub value: Option<Bytes>,
    /// Headers in wire order.
    pub headers: Vec<Header>,
    /// The leader epoch of the batch, if the broker set one.
    pub leader_epoch: Option<i32>,
}

struct Inner {
    client: Client,
    owns_client: bool,
    config: ConsumerConfig,
    state: Mutex<Fetcher>,
    wake: tokio::sync::Notify,
    closed: AtomicBool,
    /// Set by [`Consumer::assign`]: direct assignment excludes subscribing.
    direct: AtomicBool,
    /// Set by [`Consumer::subscribe`], cleared by [`Consumer::unsubscribe`].
    group: Mutex<Option<Arc<group::GroupState>>>,
    hooks: Mutex<Option<Arc<dyn RebalanceHooks>>>,
    /// Set by [`Consumer::set_balancers`]; otherwise `partition.assignment.strategy` decides.
    balancers: Mutex<Option<Vec<Arc<dyn crate::group::balancer::Balancer>>>>,
    /// [`Consumer::block_rebalance_on_poll`].
    gate: group::RebalanceGate,
}

/// A consumer of directly assigned partitions. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
    /// Held only by handles: background fetches stop chaining once every handle is gone.
    alive: Arc<()>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.assignment())
            .finish()
    }
}

impl Consumer {
    /// Connects a new client for this consumer.
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        let client = Client::connect(config.client().clone()).await?;
        Self::build(client, config, true)
    }

    /// A consumer on an existing client (which [`Consumer::close`] leaves open).
    pub async fn with_client(client: Client, config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        Self::build(client, config, false)
    }

    fn build(client: Client, config: ConsumerConfig, owns_client: bool) -> Result<Consumer> {
        let settings = FetchSettings::from_config(&config);
        Ok(Consumer {
            inner: Arc::new(Inner {
                client,
                owns_client,
                config,
                state: Mutex::new(Fetcher::new(settings)),
                wake: tokio::sync::Notify::new(),
                closed: AtomicBool::new(false),
                direct: AtomicBool::new(false),
                group: Mutex::new(None),
                hooks: Mutex::new(None),
                balancers: Mutex::new(None),
                gate: group::RebalanceGate::default(),
            }),
            alive: Arc::new(()),
        })
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Replaces the assignment. New partitions start at `auto.offset.reset` unless sought.
    pub async fn assign(&self, partitions: impl IntoIterator<Item = TopicPartition>) -> Result<()> {
        if self.inner.group.lock().unwrap().is_some() {
            return Err(Error::Misuse(
                "assign after subscribe: a consumer uses one or the other".to_string(),
            ));
        }
        self.inner.direct.store(true, Ordering::SeqCst);
        let tps: Vec<TopicPartition> = partitions.into_iter().collect();
        let mut topics: Vec<&str> = tps.iter().map(|tp| tp.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        for t in topics {
            let meta = self.inner.client.topic(t).await?;
            for tp in tps.iter().filter(|tp| tp.topic == t) {
                if meta.partition(tp.partition).is_none() {
                    return Err(Error::Broker(
                        crate::error::BrokerError::new(
                            kafka_wire::ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        )
                        .with_partition(t, tp.partition),
                    ));
                }
            }
        }
        self.inner.state.lock().unwrap().assign(tps);
        self.inner.wake.notify_waiters();
        Ok(())
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.state.lock().unwrap().assignment()
    }

    /// Moves `tp`'s position. `Earliest`, `Latest` and `Timestamp` are looked up now (a
    /// timestamp after the last record gives the log end).
    pub async fn seek(&self, tp: &TopicPartition, to: Offset) -> Result<()> {
        if !self.inner.state.lock().unwrap().is_assigned(tp) {
            return Err(Error::Misuse(format!(
                "seek on {tp}, which is not assigned"
            )));
        }
        let offset = match to {
            Offset::At(o) if o >= 0 => o,
            Offset::At(o) => return Err(Error::Misuse(format!("seek to offset {o} of {tp}"))),
            other => self.lookup(tp, other).await?,
        };
        self.inner.state.lock().unwrap().seek(tp, offset);
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn lookup(&self, tp: &TopicPartition, to: Offset) -> Result<i64> {
        let isolation = self.inner.config.isolation_level;
        let mut r = list_offsets_each(&self.inner.client, &[(tp.clone(), to)], isolation).await?;
        let found = r.remove(tp).unwrap_or(Err(Error::Closed))?.offset;
        if found < 0 && matches!(to, Offset::Timestamp(_)) {
            let mut r = list_offsets_each(
                &self.inner.client,
                &[(tp.clone(), Offset::Latest)],
                isolation,
            )
            .await?;
            return Ok(r.remove(tp).unwrap_or(Err(Error::Closed))?.offset);
        }
        Ok(found)
    }

    /// Stops fetching `tps` (buffered records stay until resumed).
    pub fn pause(&self, tps: &[TopicPartition]) {
        self.inner.state.lock().unwrap().pause(tps);
    }

    /// Fetches `tps` again.
    pub fn resume(&self, tps: &[TopicPartition]) {
        self.inner.state.lock().unwrap().resume(tps);
        self.inner.wake.notify_waiters();
    }

    /// The offset of the next record [`Consumer::poll`] returns for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.inner.state.lock().unwrap().position(tp)
    }

    /// High watermark (last stable offset with read_committed) minus position, from the latest
    /// fetch response.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        self.inner.state.lock().unwrap().lag(tp)
    }

    /// Up to `max.poll.records` records; an empty `Vec` once `max_wait` passes without any.
    pub async fn poll(&self, max_wait: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let max = self.inner.config.max_poll_records;
        self.maybe_auto_commit();
        loop {
            if self.inner.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            if let Some(e) = self.group_error() {
                return Err(e);
            }
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut st = self.inner.state.lock().unwrap();
                if st.has_ready() {
                    let records = st.take_records(max)?;
                    if !records.is_empty() {
                        drop(st);
                        self.inner.gate.polled();
                        // Room in the buffer again: fetch more.
                        self.drive();
                        return Ok(records);
                    }
                }
                st.poll_timeout(Instant::now())
            };
            self.drive();
            let until = match wake_at {
                Some(t) => deadline.min(t.into()),
                None => deadline,
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(Vec::new());
                    }
                }
            }
        }
    }

    /// An endless stream of records (polling with one-second waits). Ends after
    /// [`Consumer::close`].
    pub fn stream(&self) -> impl futures_core::Stream<Item = Result<ConsumerRecord>> + '_ {
        RecordStream {
            consumer: self,
            buffer: VecDeque::new(),
            pending: None,
            done: false,
        }
    }

    /// Leaves the group if subscribed (every partition is revoked through the hooks, with a
    /// final synchronous commit of the polled positions when `enable.auto.commit` is on; a
    /// static member sends no LeaveGroup), stops fetching, closes the fetch sessions (waiting
    /// up to a second for the brokers) and closes the client if this consumer made it.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.wake.notify_waiters();
        self.leave_group().await;
        let sessions = self.inner.state.lock().unwrap().take_sessions();
        let closing = sessions.into_iter().map(|(node, session_id)| {
            let client = self.inner.client.clone();
            async move {
                let req = FetchRequest {
                    replica_id: -1,
                    session_id,
                    session_epoch: session::FINAL_EPOCH,
                    ..Default::default()
                };
                let _ = client.send(node, Purpose::Fetch, move |_| req).await;
            }
        });
        let all = async {
            for f in closing {
                f.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
        if self.inner.owns_client {
            self.inner.client.close();
        }
    }

    /// Starts offset lookups and fetches that are due.
    fn drive(&self) {
        if self.inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let meta = self.inner.client.metadata();
        let (resets, brokers, refresh) = {
            let mut st = self.inner.state.lock().unwrap();
            let resets = st.poll_resets();
            let (brokers, refresh) = st.poll_fetch_brokers(Instant::now(), &meta);
            (resets, brokers, refresh)
        };
        if refresh {
            self.inner.client.request_metadata_refresh();
        }
        if !resets.is_empty() {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let isolation = inner.config.isolation_level;
                let mut results = Vec::new();
                // Timestamp lookups that find nothing go to the log end, as `seek` does.
                let asks: Vec<(TopicPartition, Offset)> =
                    resets.iter().map(|(tp, o, _)| (tp.clone(), *o)).collect();
                let r = list_offsets_each(&inner.client, &asks, isolation).await;
                for (tp, to, generation) in resets {
                    let res = match &r {
                        Ok(m) => match m.get(&tp) {
                            Some(Ok(l)) if l.offset >= 0 => Ok(l.offset),
                            Some(Ok(_)) if matches!(to, Offset::Timestamp(_)) => list_offsets_each(
                                &inner.client,
                                &[(tp.clone(), Offset::Latest)],
                                isolation,
                            )
                            .await
                            .and_then(|mut m| m.remove(&tp).unwrap_or(Err(Error::Closed)))
                            .map(|l| l.offset),
                            // A negative offset for Earliest/Latest: the broker misbehaves.
                            Some(Ok(l)) => Err(Error::Protocol {
                                peer: crate::error::Peer::Unknown,
                                kind: crate::error::ProtocolErrorKind::Invalid(format!(
                                    "ListOffsets gave offset {} for {tp}",
                                    l.offset
                                )),
                            }),
                            Some(Err(e)) => Err(e.clone()),
                            None => Err(Error::Closed),
                        },
                        Err(e) => Err(e.clone()),
                    };
                    results.push((tp, generation, res));
                }
                if let Some(e) = results.iter().find_map(|(_, _, r)| r.as_ref().err()) {
                    if e.is_retriable() {
                        tokio::time::sleep(inner.config.client.retry_backoff).await;
                    }
                }
                {
                    let mut st = inner.state.lock().unwrap();
                    for (tp, generation, res) in results {
                        st.handle_reset(&tp, generation, res);
                    }
                }
                inner.wake.notify_waiters();
            });
        }
        for node in brokers {
            let inner = self.inner.clone();
            tokio::spawn(fetch_once(inner, Arc::downgrade(&self.alive), node));
        }
    }
}

async fn fetch_once(inner: Arc<Inner>, alive: std::sync::Weak<()>, node: i32) {
    let conn = match inner.client.connection(node, Purpose::Fetch).await {
        Ok(c) => c,
        Err(e) => {
            inner.client.request_metadata_refresh();
            inner
                .state
                .lock()
                .unwrap()
                .handle_fetch_error(node, Instant::now(), &e);
            inner.wake.notify_waiters();
            return;
        }
    };
    let Some(version) = conn.version::<FetchRequest>() else {
        let e = crate::client::unsupported::<FetchRequest>(&conn, "fetching records");
        inner
            .state
            .lock()
            .unwrap()
            .handle_fetch_error(node, Instant::now(), &e);
        return;
    };
    let meta = inner.client.metadata();
    let req = inner
        .state
        .lock()
        .unwrap()
        .build_fetch(node, version, &meta);
    let Some(req) = req else {
        return;
    };
    let result = send_on(&conn, move |_| req).await;
    let now = Instant::now();
    let actions = match result {
        Ok(resp) => {
            let meta = inner.client.metadata();
            inner
                .state
                .lock()
                .unwrap()
                .handle_fetch_response(node, now, resp, &meta)
        }
        Err(e) => {
            inner.client.request_metadata_refresh();
            inner
                .state
                .lock()
                .unwrap()
                .handle_fetch_error(node, now, &e);
            Vec::new()
        }
    };
    for a in actions {
        match a {
            Action::RefreshMetadata => inner.client.request_metadata_refresh(),
            Action::LeaderHint {
                topic,
                partition,
                leader,
                epoch,
            } => inner
                .client
                .apply_leader_hint(&topic, partition, leader, epoch),
            Action::NodeEndpoint {
                node_id,
                host,
                port,
                rack,
            } => inner
                .client
                .apply_node_endpoint(node_id, &host, port, rack.as_deref()),
            Action::Throttle(d) => conn.throttle(d),
        }
    }
    inner.wake.notify_waiters();
    // Keep fetching while there is room (prefetch), even if nobody polls right now.
    if let Some(alive) = alive.upgrade() {
        Consumer { inner, alive }.drive();
    }
}

type PollFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<ConsumerRecord>>> + Send + 'a>>;

// `futures-core` gives the `Stream` trait only (no executor or combinators): the smallest way to
// offer a stream that works with any stream utilities the application already uses.
struct RecordStream<'a> {
    consumer: &'a Consumer,
    buffer: VecDeque<ConsumerRecord>,
    pending: Option<PollFuture<'a>>,
    done: bool,
}

impl futures_core::Stream for RecordStream<'_> {
    type Item = Result<ConsumerRecord>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(r) = this.buffer.pop_front() {
                return Poll::Ready(Some(Ok(r)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let consumer = this.consumer;
            let fut = this
                .pending
                .get_or_insert_with(|| Box::pin(consumer.poll(Duration::from_secs(1))));
            match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    this.pending = None;
                    match r {
                        Ok(records) => this.buffer.extend(records),
                        Err(Error::Closed) => {
                            this.done = true;
                            return Poll::Ready(None);
                        }
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Compile-time: handles, futures and the stream can move between tasks.
    #[allow(dead_code)]
    fn futures_are_send(c: &Consumer) {
        fn send<T: Send>(_: T) {}
        send(c.stream());
        send(c.poll(Duration::ZERO));
        send(c.seek(&TopicPartition::new("t", 0), Offset::Earliest));
        send(c.assign(Vec::new()));
    }

    #[test]
    fn consumer_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Consumer>();
        check::<ConsumerRecord>();
    }
}
