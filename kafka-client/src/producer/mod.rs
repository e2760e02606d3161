//! The producer: idempotent by default, batching per partition, compression, delivery futures.
//!
//! ```text
//!   Producer (Clone)  send() -> appends to the core under a lock, waits for buffer space
//!        |
//!   driver task       InitProducerId, drains the core into Produce requests per broker,
//!        |            applies responses (one spawned task per request in flight)
//!   Core (sans-IO)    accumulator, sequences, retries, delivery timeouts (see core.rs)
//! ```
//!
//! ```no_run
//! # async fn demo() -> kafka_client::Result<()> {
//! use kafka_client::config::ProducerConfig;
//! use kafka_client::{Producer, ProducerRecord};
//!
//! let mut cfg = ProducerConfig::default();
//! cfg.client_mut().bootstrap_servers(vec!["127.0.0.1:9092".to_string()]);
//! let producer = Producer::new(cfg).await?;
//! let delivery = producer.send(ProducerRecord::new("events").key("k").value("v")).await?;
//! let meta = delivery.await?;
//! println!("written at {}-{}@{}", meta.topic, meta.partition, meta.offset);
//! producer.close().await?;
//! # Ok(())
//! # }
//! ```

pub(crate) mod core;
mod transaction;
pub(crate) mod txn;

pub use self::txn::{GroupMetadata, TxnOffset};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_wire::codec::KString;
use kafka_wire::messages::produce::{PartitionProduceData, TopicProduceData};
use kafka_wire::messages::{InitProducerIdRequest, ProduceRequest, ProduceResponse};
use kafka_wire::ErrorCode;
use tokio::sync::{oneshot, Notify};

use crate::client::{Client, Purpose};
use crate::config::{Acks, ProducerConfig};
use crate::error::{BrokerError, Error, Result};
use crate::net::Connection;
use crate::partitioner::Partitioner;
use crate::rng::{OsRandom, RandomSource};
use crate::types::Header;

use self::core::{AppendError, CoreConfig, Deliver, Transmit};

/// A delivery callback: called once with the record's outcome.
pub(crate) type DeliveryCallback = Box<dyn FnOnce(Result<RecordMetadata>) + Send + 'static>;

/// Where the delivery result of one record goes.
pub(crate) enum Reply {
    /// A [`DeliveryFuture`] waits on it (completed under the core's lock: a oneshot send).
    Future(tokio::sync::oneshot::Sender<Result<RecordMetadata>>),
    /// Called once the core is unlocked.
    Callback(DeliveryCallback),
}

impl Deliver for Reply {
    fn deliver(self, result: Result<RecordMetadata>, later: &mut Completed) {
        match self {
            Reply::Future(tx) => {
                let _ = tx.send(result);
            }
            Reply::Callback(cb) => later.push((Reply::Callback(cb), result)),
        }
    }
}

type Core = self::core::Core<Reply>;
type Completed = self::core::Completed<Reply>;

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// Partition; `None` lets the partitioner choose (murmur2 of the key, sticky without one).
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order, duplicates kept.
    pub headers: Vec<Header>,
    /// Create time in ms since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic` with no key, value or headers.
    pub fn new(topic: impl Into<String>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since the epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic (shared with the partition's other records: no copy per record).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset; -1 when unknown (acks=0, or a retry the broker recognized as a duplicate without
    /// telling the offset).
    pub offset: i64,
    /// The record's timestamp (the broker's log append time if the topic uses it).
    pub timestamp: i64,
}

/// Resolves when the record is acknowledged (or failed). Dropping it does not cancel the send.
#[derive(Debug)]
#[must_use = "the delivery result is only known by awaiting the future"]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            // The producer's state went away without an answer (runtime shut down).
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

struct Shared {
    client: Client,
    core: Mutex<Core>,
    /// Held while records complete and their delivery callbacks run ([`Shared::with_core`]);
    /// the list is kept to be traded with the core's (no allocation per response).
    callbacks: Mutex<Completed>,
    /// Wakes the driver.
    wake: Notify,
    /// Signalled when buffer space is freed or batches finish.
    progress: Notify,
    closed: AtomicBool,
    max_block: Duration,
    acks: Acks,
    owns_client: bool,
    driver_done: AtomicBool,
    /// The transactional side, for a producer with `transactional.id`.
    txn: Option<transaction::TxnShared>,
    /// `transactional.id`, sent in every Produce request of a transactional producer.
    transactional_id: Option<KString>,
    /// The highest Produce version to send (11 for transactions v1, which must not let a
    /// Produce add its partition implicitly).
    max_produce_version: i16,
}

impl Shared {
    /// Runs `f` on the core, then calls the delivery callbacks of the records it completed,
    /// with the core unlocked (a callback may use the producer).
    ///
    /// The callback lock is held from before `f` until the callbacks have returned, so once a
    /// record is seen completed in the core, [`Shared::callbacks_done`] waits for its callback:
    /// `flush` returns only after the callbacks of the flushed records ran. Lock order:
    /// callbacks, then the transaction state, then the core.
    fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let mut done = self.callbacks.lock().unwrap();
        let r = {
            let mut core = self.core.lock().unwrap();
            let r = f(&mut core);
            core.swap_completed(&mut done);
            r
        };
        run_callbacks(done.drain(..));
        r
    }

    /// Waits until the callbacks of records completed so far have returned.
    fn callbacks_done(&self) {
        drop(self.callbacks.lock().unwrap());
    }

    fn begin_close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.core.lock().unwrap().close();
        self.wake.notify_one();
    }
}

fn run_callbacks(done: impl IntoIterator<Item = (Reply, Result<RecordMetadata>)>) {
    for (reply, result) in done {
        let callback = match reply {
            Reply::Callback(cb) => cb,
            Reply::Future(tx) => {
                let _ = tx.send(result);
                continue;
            }
        };
        // A panicking callback must not take the producer's task (and every other record's
        // delivery) with it.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || callback(result))).is_err()
        {
            tracing::error!("a delivery callback panicked");
        }
    }
}

/// Marks the producer closing when the last handle goes away; the driver then delivers what is
/// buffered and stops.
struct HandleGuard {
    shared: Arc<Shared>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.shared.begin_close();
    }
}

/// The producer handle. Cheap to clone; all clones share one buffer and one driver task.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _guard: Arc<HandleGuard>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("client", &self.shared.client)
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Producer {
    /// Validates `config`, connects a new [`Client`] and starts the producer.
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let client = Client::connect(config.client().clone()).await?;
        match Self::start(client.clone(), config, true).await {
            Ok(p) => Ok(p),
            Err(e) => {
                client.close();
                Err(e)
            }
        }
    }

    /// Starts a producer on an existing client (its connections are shared).
    pub async fn with_client(client: Client, config: ProducerConfig) -> Result<Producer> {
        Self::start(client, config, false).await
    }

    async fn start(client: Client, config: ProducerConfig, owns_client: bool) -> Result<Producer> {
        for w in config.validate()? {
            tracing::warn!(warning = %w, "producer configuration");
        }
        let (txn, max_produce_version) = if config.transactional() {
            let (t, v2) = transaction::TxnShared::new(&client, &config).await?;
            (Some(t), if v2 { i16::MAX } else { 11 })
        } else {
            (None, i16::MAX)
        };
        let transactional_id = config.get_transactional_id().as_deref().map(KString::from);
        let cfg = CoreConfig::from_producer(&config);
        let core = Core::new(cfg, Partitioner::new(&config), OsRandom.next_u64());
        let shared = Arc::new(Shared {
            client,
            core: Mutex::new(core),
            callbacks: Mutex::new(Vec::new()),
            wake: Notify::new(),
            progress: Notify::new(),
            closed: AtomicBool::new(false),
            max_block: *config.get_max_block(),
            acks: *config.get_acks(),
            owns_client,
            driver_done: AtomicBool::new(false),
            txn,
            transactional_id,
            max_produce_version,
        });
        tokio::spawn(drive(shared.clone()));
        if shared.txn.is_some() {
            tokio::spawn(transaction::drive_txn(shared.clone()));
        }
        Ok(Producer {
            _guard: Arc::new(HandleGuard {
                shared: shared.clone(),
            }),
            shared,
        })
    }

    /// The client the producer uses.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The producer id and epoch in use, once known (idempotent producers only). The epoch goes
    /// up when the producer renews itself after a batch with a sequence failed.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.shared
            .core
            .lock()
            .unwrap()
            .producer_id()
            .filter(|(id, _)| *id >= 0)
    }

    /// Buffers `record` and returns a future of its delivery. Waits up to `max.block.ms` for the
    /// topic's metadata and for buffer space. Fails at once for a record larger than
    /// `max.request.size` (or the 1,000,012-byte batch limit) with `MESSAGE_TOO_LARGE`, for an
    /// unknown topic, and after [`Producer::close`].
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(record, Reply::Future(tx)).await?;
        Ok(DeliveryFuture { rx })
    }

    /// Buffers `record` like [`send`](Self::send), and calls `callback` once with its delivery
    /// result instead of returning a future: no channel and no future per record, for
    /// applications that produce many small records and only count or log their outcomes
    /// (franz-go's promise, librdkafka's delivery report).
    ///
    /// The callback runs on the producer's task, after the producer's state is unlocked: it
    /// should be quick and must not block (hand heavy work to a channel or a task). A callback
    /// that panics is logged and does not stop the producer. When `send_with` itself fails
    /// (the same errors as `send`), the record was not buffered and `callback` is dropped
    /// without being called.
    pub async fn send_with<F>(&self, record: ProducerRecord, callback: F) -> Result<()>
    where
        F: FnOnce(Result<RecordMetadata>) + Send + 'static,
    {
        self.enqueue(record, Reply::Callback(Box::new(callback)))
            .await
    }

    async fn enqueue(&self, record: ProducerRecord, reply: Reply) -> Result<()> {
        let mut reply = Some(reply);
        let sh = &self.shared;
        if sh.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        // Read once needed: most records never wait.
        let mut deadline = None;
        // Known topic: go on with its partition count. Partitions without a leader (an
        // election under way) hold their batches in the accumulator; they do not stall the
        // other partitions' sends.
        let known = sh
            .client
            .metadata()
            .topic(&record.topic)
            .filter(|t| t.error.is_none() && t.partition_count() > 0)
            .cloned();
        let topic = match known {
            Some(t) => t,
            None => {
                match tokio::time::timeout(sh.max_block, sh.client.topic(&record.topic)).await {
                    Ok(t) => t?,
                    Err(_) => {
                        return Err(Error::Timeout {
                            what: "topic metadata (max.block.ms)",
                            after: sh.max_block,
                        })
                    }
                }
            }
        };
        if let Some(code) = topic.error {
            return Err(Error::Broker(
                BrokerError::new(code).with_topic(record.topic.clone()),
            ));
        }
        let n = i32::try_from(topic.partition_count()).unwrap_or(i32::MAX);
        let mut record = record;
        // Registered for buffer space only once the buffer was found full (no waiter per
        // record): then the append is tried once more before waiting, so space freed in
        // between is not missed.
        let mut waiter = None;
        loop {
            if sh.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            let (res, wake) = match &sh.txn {
                None => {
                    let mut core = sh.core.lock().unwrap();
                    let res = core.append_with(Instant::now, now_ms(), n, record, &mut reply);
                    (res, core.take_wake())
                }
                Some(txn) => {
                    // The manager's lock first (as everywhere): a commit cannot slip in
                    // between the check and the append.
                    let mut st = txn.state.lock().unwrap();
                    st.mgr.check_send()?;
                    let topic = record.topic.clone();
                    let mut core = sh.core.lock().unwrap();
                    let res = core.append_with(Instant::now, now_ms(), n, record, &mut reply);
                    if res.is_ok() {
                        let tp = crate::types::TopicPartition::new(topic, core.last_partition());
                        st.mgr.add_partition(&tp)?;
                        txn.wake.notify_one();
                    }
                    (res, core.take_wake())
                }
            };
            match res {
                Ok(()) => {
                    // Waking the driver per record costs a cross-thread wake-up each; it only
                    // has new work when a batch opened (a linger deadline) or filled up.
                    if wake {
                        sh.wake.notify_one();
                    }
                    return Ok(());
                }
                Err(AppendError::Failed(e)) => return Err(e),
                Err(AppendError::Full(r)) => {
                    record = *r;
                    sh.wake.notify_one();
                    match waiter.take() {
                        None => {
                            let mut notified = Box::pin(sh.progress.notified());
                            notified.as_mut().enable();
                            waiter = Some(notified);
                        }
                        Some(notified) => {
                            let deadline =
                                *deadline.get_or_insert_with(|| Instant::now() + sh.max_block);
                            if tokio::time::timeout_at(deadline.into(), notified)
                                .await
                                .is_err()
                            {
                                return Err(Error::Timeout {
                                    what: "buffer memory (max.block.ms)",
                                    after: sh.max_block,
                                });
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`send`](Self::send) and wait for the delivery.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends everything buffered now without waiting for linger, and waits until all of it is
    /// acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let sh = &self.shared;
        let mark = sh.core.lock().unwrap().flush();
        sh.wake.notify_one();
        loop {
            let notified = sh.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if sh.core.lock().unwrap().flushed(mark) {
                sh.callbacks_done();
                return Ok(());
            }
            if sh.driver_done.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            notified.await;
        }
    }

    /// Flushes, then stops the producer (later sends fail with [`Error::Closed`]); closes the
    /// client if the producer created it.
    pub async fn close(&self) -> Result<()> {
        if self.in_transaction() {
            tracing::info!("aborting the open transaction at close");
            if let Err(e) = self.abort_transaction().await {
                tracing::warn!(error = %e, "abort at close failed");
            }
        }
        let flushed = self.flush().await;
        self.shared.begin_close();
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.driver_done.load(Ordering::SeqCst) {
                break;
            }
            notified.await;
        }
        flushed
    }
}

fn init_request(_version: i16) -> InitProducerIdRequest {
    InitProducerIdRequest {
        transactional_id: None,
        transaction_timeout_ms: 60_000,
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    }
}

async fn drive(sh: Arc<Shared>) {
    let mut pid_backoff = Duration::from_millis(100);
    loop {
        let now = Instant::now();
        let (need_pid, done, timeout, progressed) = sh.with_core(|core| {
            core.handle_timeout(now);
            let done = sh.closed.load(Ordering::SeqCst)
                && core.pending_records() == 0
                && core.in_flight_requests() == 0;
            (
                core.needs_producer_id(),
                done,
                core.poll_timeout(),
                core.take_progress(),
            )
        });
        if progressed || sh.closed.load(Ordering::SeqCst) {
            sh.progress.notify_waiters();
        }
        if done || (sh.client.is_closed() && !sh.owns_client) {
            break;
        }
        if need_pid {
            let bumped = sh.core.lock().unwrap().bumped_producer_id();
            if let Some((id, epoch)) = bumped {
                tracing::debug!(producer_id = id, epoch, "producer epoch bumped");
                sh.core.lock().unwrap().set_producer_id(id, epoch);
                continue;
            }
            let result = sh.client.send_any(Purpose::Produce, init_request).await;
            let result = result.and_then(|r| match ErrorCode(r.error_code) {
                ErrorCode::NONE => Ok((r.producer_id, r.producer_epoch)),
                code => Err(Error::Broker(
                    BrokerError::new(code).with_message("InitProducerId"),
                )),
            });
            match result {
                Ok((id, epoch)) => {
                    tracing::debug!(producer_id = id, epoch, "producer id");
                    sh.core.lock().unwrap().set_producer_id(id, epoch);
                    pid_backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    if e.is_fatal() || matches!(e, Error::Closed) {
                        tracing::warn!(error = %e, "InitProducerId failed; failing buffered records");
                        sh.with_core(|core| core.fail_all(&e));
                        sh.progress.notify_waiters();
                        if sh.client.is_closed() {
                            break;
                        }
                    } else {
                        tracing::debug!(error = %e, "InitProducerId failed, will retry");
                    }
                    tokio::time::sleep(pid_backoff).await;
                    pid_backoff = (pid_backoff * 2).min(Duration::from_secs(1));
                }
            }
            continue;
        }
        let meta = sh.client.metadata();
        let transmits = match &sh.txn {
            // Records complete here with acks=0.
            None => sh.with_core(|core| core.poll_transmit(Instant::now(), &meta)),
            Some(txn) => {
                let st = txn.state.lock().unwrap();
                sh.core
                    .lock()
                    .unwrap()
                    .poll_transmit_gated(Instant::now(), &meta, |tp| st.mgr.may_send(tp))
            }
        };
        for t in transmits {
            dispatch(&sh, t).await;
        }
        let until = timeout
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1))
            .max(Instant::now() + Duration::from_millis(1));
        tokio::select! {
            _ = sh.wake.notified() => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
    }
    if sh.owns_client {
        sh.client.close();
    }
    // Anything left (the client was closed under us) is reported, never dropped silently.
    sh.with_core(|core| {
        if core.pending_records() > 0 {
            core.fail_all(&Error::Closed);
        }
    });
    sh.driver_done.store(true, Ordering::SeqCst);
    sh.progress.notify_waiters();
}

fn build_request(
    t: &Transmit,
    version: i16,
    acks: Acks,
    timeout_ms: i32,
    transactional_id: Option<KString>,
) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for b in &t.batches {
        let idx = match topics.iter().position(|x| x.name == *b.tp.topic) {
            Some(i) => i,
            None => {
                topics.push(TopicProduceData {
                    name: KString::from(b.tp.topic.as_str()),
                    topic_id: if version >= 13 {
                        b.topic_id
                    } else {
                        Default::default()
                    },
                    ..Default::default()
                });
                topics.len() - 1
            }
        };
        topics[idx].partition_data.push(PartitionProduceData {
            index: b.tp.partition,
            records: Some(b.records.clone()),
            ..Default::default()
        });
    }
    ProduceRequest {
        transactional_id,
        acks: acks.wire_value(),
        timeout_ms,
        topic_data: topics,
        ..Default::default()
    }
}

fn complete(
    sh: &Arc<Shared>,
    conn: Option<&Connection>,
    req: u64,
    result: Result<ProduceResponse>,
) {
    if let (Ok(resp), Some(conn)) = (&result, conn) {
        if resp.throttle_time_ms > 0 {
            conn.throttle(Duration::from_millis(resp.throttle_time_ms as u64));
        }
        for n in &resp.node_endpoints {
            sh.client.apply_node_endpoint(
                n.node_id,
                n.host.as_str(),
                n.port,
                n.rack.as_ref().map(|r| r.as_str()),
            );
        }
    }
    let actions = sh.with_core(|core| core.handle_response(Instant::now(), req, result));
    for (topic, partition, leader, epoch) in &actions.leader_hints {
        sh.client
            .apply_leader_hint(topic, *partition, *leader, *epoch);
    }
    if actions.refresh_metadata {
        sh.client.request_metadata_refresh();
    }
    sh.progress.notify_waiters();
    sh.wake.notify_one();
}

async fn dispatch(sh: &Arc<Shared>, t: Transmit) {
    let conn = match sh.client.connection(t.node, Purpose::Produce).await {
        Ok(c) => c,
        Err(e) => {
            // Nothing was written (e.g. the leader in our metadata left the cluster): retry
            // after a metadata refresh rather than fail the records.
            let actions = sh.with_core(|core| core.handle_unsent(Instant::now(), t.req, e));
            if actions.refresh_metadata {
                sh.client.request_metadata_refresh();
            }
            sh.progress.notify_waiters();
            sh.wake.notify_one();
            return;
        }
    };
    let Some(version) = conn
        .version::<ProduceRequest>()
        .map(|v| v.min(sh.max_produce_version))
    else {
        let e = crate::client::unsupported::<ProduceRequest>(&conn, "producing records");
        complete(sh, Some(&conn), t.req, Err(e));
        return;
    };
    let timeout_ms =
        i32::try_from(sh.client.config().get_request_timeout().as_millis()).unwrap_or(i32::MAX);
    let req = build_request(
        &t,
        version,
        sh.acks,
        timeout_ms,
        sh.transactional_id.clone(),
    );
    if sh.acks == Acks::None {
        if let Err(e) = conn.send_no_response(version, req) {
            tracing::warn!(error = %e, "acks=0 produce request not written; records may be lost");
        }
        return;
    }
    let c2 = conn.clone();
    let mut fut = Box::pin(async move { c2.send(version, req).await });
    // Poll once here so the request is queued on the connection now, in the order the core
    // produced it (a partition's batches must reach the broker in sequence order).
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(r) => complete(sh, Some(&conn), t.req, r),
        Poll::Pending => {
            let sh = sh.clone();
            let req_id = t.req;
            tokio::spawn(async move {
                let r = fut.await;
                complete(&sh, Some(&conn), req_id, r);
            });
        }
    }
}
