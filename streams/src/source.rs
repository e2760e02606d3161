//! The [`EventSource`]: owns the consumer, one worker task per assigned partition (restore,
//! then process), and the pool driver that turns the pool core's actions into transactions.
//!
//! Order of things for a partition (STREAMS.md R6, R7, R9):
//! - **assigned**: the source partition is paused in the hook; the worker reads the group's
//!   *stable* committed offset (KIP-447), then the changelog's end (read_uncommitted), then
//!   restores read_committed up to it, then resumes the partition and processes;
//! - **revoked**: the worker stops taking input (records not yet attached are dropped: the next
//!   owner reads them), its transactions close and commit, and only then does the hook return
//!   (before the JoinGroup: nobody else owns the partition before its effects are committed);
//! - **lost**: every open transaction is aborted and every store dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kafka_client::admin::{Admin, NewTopic};
use kafka_client::config::{AutoOffsetReset, ConsumerConfig, IsolationLevel, ProducerConfig};
use kafka_client::consumer::RebalanceHooks;
use kafka_client::group::BoxFuture;
use kafka_client::kafka_wire::ErrorCode;
use kafka_client::producer::TxnOffset;
use kafka_client::{
    Client, Consumer, ConsumerRecord, DeliveryFuture, Offset, Producer, ProducerRecord,
    TopicPartition,
};
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;

use crate::config::{ErrorPolicy, EventSourceConfig, Guarantee, UnknownEventPolicy};
use crate::context::{DeferSlot, EventContext, Target};
use crate::eos::{Action, Attach, CommitResult, Limits, PoolCore};
use crate::error::{Error, Result};
use crate::metrics::{Emitter, Metric, MetricsSink, SkipReason, TxnCommitted};
use crate::route::{self, Decoder, Handler, Outcome, RouteResult, Router};
use crate::store::{ChangelogRecord, Restore, RestoreProgress, StateStore, StoreError};

/// The health of an [`EventSource`], also as a [`watch`] ([`EventSource::health_watch`]).
#[derive(Debug, Clone)]
pub enum Health {
    /// Built, not running yet (or joining the group).
    Starting,
    /// Some assigned partitions are restoring their stores.
    Restoring {
        /// Partitions restoring now.
        partitions: usize,
    },
    /// Every assigned partition is processing.
    Healthy,
    /// Stopped by a failure (it does not recover: restart the instance).
    Unhealthy(Arc<Error>),
    /// Stopped on request.
    Stopped,
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events handled (any outcome).
    pub events: u64,
    /// Events skipped as unknown types.
    pub skipped_unknown: u64,
    /// Events skipped or dead-lettered as undecodable.
    pub undecodable: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Events in committed transactions.
    pub committed_events: u64,
    /// Changelog records applied by restores.
    pub restored_records: u64,
    /// Transaction attempts that failed and were re-sent.
    pub retries: u64,
    /// Commits whose outcome was unknown, resolved by reading the committed offsets (R11).
    pub outcomes_resolved: u64,
    /// Metrics dropped because the sink's queue was full.
    pub metrics_dropped: u64,
}

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    skipped_unknown: AtomicU64,
    undecodable: AtomicU64,
    restored_records: AtomicU64,
    retries: AtomicU64,
    outcomes_resolved: AtomicU64,
}

type Factory<S> = Arc<dyn Fn(i32) -> S + Send + Sync>;

/// Builds an [`EventSource`]: routes, then [`EventSourceBuilder::build`].
pub struct EventSourceBuilder<S> {
    config: EventSourceConfig,
    factory: Factory<S>,
    routes: HashMap<Vec<u8>, Arc<dyn route::Route<S>>>,
    default: Option<Arc<dyn route::Route<S>>>,
    duplicate: Option<String>,
    metrics: Option<Arc<dyn MetricsSink>>,
}

impl<S: StateStore> EventSourceBuilder<S> {
    /// Routes events whose routing header equals `event_type` to `handler`, through `decoder`.
    pub fn on<E, D, H>(mut self, event_type: &str, decoder: D, handler: H) -> Self
    where
        E: 'static,
        D: Decoder<E>,
        H: Handler<S, E>,
    {
        let key = event_type.as_bytes().to_vec();
        if self.routes.contains_key(&key) {
            self.duplicate = Some(event_type.to_string());
        }
        self.routes.insert(key, route::typed(decoder, handler));
        self
    }

    /// Sends [`Metric`]s to `sink`, from a thread of its own through a bounded queue
    /// (`metrics_queue`): a slow sink never slows processing; what does not fit is dropped and
    /// counted in [`Stats::metrics_dropped`].
    pub fn metrics(mut self, sink: Arc<dyn MetricsSink>) -> Self {
        self.metrics = Some(sink);
        self
    }

    /// Handles events of no registered type (the record itself is the event).
    pub fn default_handler<H>(mut self, handler: H) -> Self
    where
        H: Handler<S, ConsumerRecord>,
    {
        let identity =
            |r: &ConsumerRecord| -> std::result::Result<ConsumerRecord, route::DecodeError> {
                Ok(r.clone())
            };
        self.default = Some(route::typed(identity, handler));
        self
    }

    /// Validates the configuration, connects, creates or checks the changelog topic, and
    /// returns the event source (not running yet: see [`EventSource::run`]).
    pub async fn build(self) -> Result<EventSource<S>> {
        let config = self.config;
        config.validate()?;
        if let Some(t) = self.duplicate {
            return Err(Error::Config(format!(
                "event type {t:?} is registered twice"
            )));
        }
        if self.routes.is_empty() && self.default.is_none() {
            return Err(Error::Config(
                "no handler: register one with on(..) or default_handler(..)".into(),
            ));
        }
        let unknown = match (config.unknown_events, self.default.is_some()) {
            (Some(UnknownEventPolicy::Default), false) => {
                return Err(Error::Config(
                    "unknown_events = Default needs a default handler".into(),
                ))
            }
            (Some(p), _) => p,
            (None, true) => UnknownEventPolicy::Default,
            (None, false) => UnknownEventPolicy::Skip,
        };
        let router = Router {
            header: config.routing_header.clone(),
            routes: self.routes,
            default: self.default,
            unknown,
        };
        let instance_id = config
            .instance_id
            .clone()
            .unwrap_or_else(random_instance_id);
        if config.instance_id.is_none() {
            tracing::info!(%instance_id, "no instance id configured; using a random one");
        }
        let client = Client::connect(config.client.clone()).await?;
        let changelog = config.changelog();
        let partitions = ensure_topics(&client, &config, &changelog).await?;

        let mut ccfg = ConsumerConfig::default();
        *ccfg.client_mut() = config.client.clone();
        ccfg.group_id(config.group_id.clone());
        ccfg.isolation_level(IsolationLevel::ReadCommitted);
        ccfg.auto_offset_reset(AutoOffsetReset::Earliest);
        ccfg.enable_auto_commit(false);
        // Restores read the changelog by direct assignment, outside the group.
        let mut restore_cfg = ConsumerConfig::default();
        *restore_cfg.client_mut() = config.client.clone();
        restore_cfg.isolation_level(IsolationLevel::ReadCommitted);
        restore_cfg.auto_offset_reset(AutoOffsetReset::Earliest);
        ccfg.session_timeout(config.session_timeout);
        ccfg.heartbeat_interval(config.heartbeat_interval);
        if config.static_membership {
            ccfg.group_instance_id(instance_id.clone());
        }
        let consumer = Consumer::with_client(client.clone(), ccfg).await?;

        let e = &config.eos;
        let eos = config.guarantee == Guarantee::ExactlyOnce;
        // At least once needs no transactions: one producer, and commits in order.
        let slots = if eos { e.pool_size } else { 1 };
        let mut producers = Vec::with_capacity(slots);
        for slot in 0..slots {
            let mut pcfg = ProducerConfig::default();
            *pcfg.client_mut() = config.client.clone();
            pcfg.enable_idempotence(Some(true));
            pcfg.linger(Duration::from_millis(1));
            if eos {
                // R8: stable ids, so a restarted instance fences its predecessor at once.
                pcfg.transactional_id(Some(format!("{}-{}-{slot}", config.group_id, instance_id)));
                pcfg.transaction_timeout(e.transaction_timeout);
                pcfg.transaction_end_timeout(e.commit_timeout);
            }
            producers.push(Producer::with_client(client.clone(), pcfg).await?);
        }
        let core = PoolCore::new(Limits {
            slots,
            linger: e.linger,
            target_events: e.target_txn_events,
            max_events: e.max_txn_events,
            max_bytes: e.max_txn_bytes,
            commit_deadline: e.commit_deadline,
            max_attempts: e.max_commit_attempts,
            eager_when_idle: e.eager_when_idle,
        });
        let config_metrics_queue = config.metrics_queue;
        let (health, _) = watch::channel(Health::Starting);
        let (active, _) = watch::channel(BTreeSet::new());
        let (stop, _) = watch::channel(false);
        Ok(EventSource {
            inner: Arc::new(Inner {
                config,
                instance_id,
                changelog,
                partitions,
                client,
                consumer,
                producers,
                restore_cfg,
                router: Arc::new(router),
                factory: self.factory,
                core: Arc::new(Mutex::new(core)),
                wake: Arc::new(Notify::new()),
                intake: Notify::new(),
                health,
                active,
                stop,
                workers: Mutex::new(HashMap::new()),
                restoring: Mutex::new(BTreeSet::new()),
                lost_epoch: AtomicU64::new(0),
                running: AtomicBool::new(false),
                aborting: AtomicBool::new(false),
                counters: Counters::default(),
                metrics: Emitter::new(self.metrics, config_metrics_queue),
            }),
        })
    }
}

fn random_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Checks the source topic and creates or checks the changelog; returns the partition count.
async fn ensure_topics(
    client: &Client,
    config: &EventSourceConfig,
    changelog: &str,
) -> Result<i32> {
    let admin = Admin::from_client(client.clone());
    let source = admin
        .describe_topics(&[config.topic.as_str()])
        .await
        .map_err(|e| {
            Error::Config(format!(
                "source topic {} cannot be described (it must exist): {e}",
                config.topic
            ))
        })?;
    let partitions = i32::try_from(source[0].partitions.len()).unwrap_or(i32::MAX);
    if partitions == 0 {
        return Err(Error::Config(format!(
            "source topic {} has no partitions",
            config.topic
        )));
    }
    let rf = config.replication_factor.unwrap_or(-1);
    let created = admin
        .create_topic_if_absent(
            &NewTopic::new(changelog, partitions, rf).config("cleanup.policy", "compact"),
        )
        .await?;
    let described = admin.describe_topics(&[changelog]).await?;
    let n = i32::try_from(described[0].partitions.len()).unwrap_or(i32::MAX);
    if n != partitions {
        return Err(Error::Config(format!(
            "changelog topic {changelog} has {n} partitions but source topic {} has {partitions}: \
             a key's state would live on another partition than its events",
            config.topic
        )));
    }
    let replicas = described[0]
        .partitions
        .first()
        .map_or(0, |p| p.replicas.len());
    if replicas < 3 {
        tracing::warn!(
            topic = changelog,
            replicas,
            "changelog replication factor below 3: a broker loss can lose committed state"
        );
    }
    if created {
        tracing::info!(topic = changelog, partitions, "created the changelog topic");
    }
    Ok(partitions)
}

struct WorkerHandle {
    tx: mpsc::Sender<ConsumerRecord>,
    stop: Arc<AtomicBool>,
    /// Events handled on this partition (metrics).
    events: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner<S> {
    config: EventSourceConfig,
    instance_id: String,
    changelog: String,
    partitions: i32,
    client: Client,
    consumer: Consumer,
    /// The pool's slots (one producer at least once).
    producers: Vec<Producer>,
    restore_cfg: ConsumerConfig,
    router: Arc<Router<S>>,
    factory: Factory<S>,
    core: Arc<Mutex<PoolCore>>,
    /// Wakes the pool driver.
    wake: Arc<Notify>,
    /// Wakes workers waiting for room in the open transaction.
    intake: Notify,
    health: watch::Sender<Health>,
    active: watch::Sender<BTreeSet<i32>>,
    stop: watch::Sender<bool>,
    workers: Mutex<HashMap<i32, WorkerHandle>>,
    restoring: Mutex<BTreeSet<i32>>,
    lost_epoch: AtomicU64,
    running: AtomicBool,
    /// Set by [`EventSource::abort`].
    aborting: AtomicBool,
    counters: Counters,
    metrics: Emitter,
}

/// Processes a topic's events against per-partition state stores, exactly once. Cheap to
/// clone; clones share one instance.
///
/// ```no_run
/// use streams::kafka_client::config::ClientConfig;
/// use streams::store::{BigEndian, MemStore, Utf8};
/// use streams::{EventSource, EventSourceConfig, Outcome};
///
/// # async fn run() -> streams::Result<()> {
/// let mut client = ClientConfig::default();
/// client.bootstrap_servers(vec!["127.0.0.1:9092".to_string()]);
/// let config = EventSourceConfig::new("counters", "clicks", client);
/// let source = EventSource::builder(config, |_partition| MemStore::new(Utf8, BigEndian))
///     .on(
///         "click",
///         |r: &streams::kafka_client::ConsumerRecord| {
///             let key = r.key.as_deref().unwrap_or_default();
///             Ok(String::from_utf8_lossy(key).into_owned())
///         },
///         |ctx: &mut streams::EventContext<'_, MemStore<String, u64, Utf8, BigEndian>>,
///          page: String| {
///             let n = ctx.get(&page).copied().unwrap_or(0) + 1;
///             ctx.put(page, n);
///             Outcome::Complete
///         },
///     )
///     .build()
///     .await?;
/// source.run_until_signal().await
/// # }
/// ```
pub struct EventSource<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for EventSource<S> {
    fn clone(&self) -> Self {
        EventSource {
            inner: self.inner.clone(),
        }
    }
}

impl<S: StateStore> EventSource<S> {
    /// A builder for `config`, whose partitions' stores `factory` makes (called with the
    /// partition number on every assignment; the store is then restored from the changelog).
    pub fn builder<F>(config: EventSourceConfig, factory: F) -> EventSourceBuilder<S>
    where
        F: Fn(i32) -> S + Send + Sync + 'static,
    {
        EventSourceBuilder {
            config,
            factory: Arc::new(factory),
            routes: HashMap::new(),
            default: None,
            duplicate: None,
            metrics: None,
        }
    }

    /// The health now.
    pub fn health(&self) -> Health {
        self.inner.health.borrow().clone()
    }

    /// The health, as a watch.
    pub fn health_watch(&self) -> watch::Receiver<Health> {
        self.inner.health.subscribe()
    }

    /// The partitions restored and processing, as a watch.
    pub fn active_partitions(&self) -> watch::Receiver<BTreeSet<i32>> {
        self.inner.active.subscribe()
    }

    /// The instance id in use (configured or random).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// The changelog topic.
    pub fn changelog_topic(&self) -> &str {
        &self.inner.changelog
    }

    /// The source topic's partition count.
    pub fn partition_count(&self) -> i32 {
        self.inner.partitions
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let (transactions, committed_events) = self.inner.core.lock().unwrap().committed();
        Stats {
            events: c.events.load(Ordering::Relaxed),
            skipped_unknown: c.skipped_unknown.load(Ordering::Relaxed),
            undecodable: c.undecodable.load(Ordering::Relaxed),
            transactions,
            committed_events,
            restored_records: c.restored_records.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            outcomes_resolved: c.outcomes_resolved.load(Ordering::Relaxed),
            metrics_dropped: self.inner.metrics.dropped(),
        }
    }

    /// Asks a running instance to stop gracefully and waits until it has: every transaction
    /// committed, the group left, the producer closed.
    pub async fn stop(&self) {
        self.inner.stop.send_replace(true);
        let mut h = self.inner.health.subscribe();
        while self.inner.running.load(Ordering::SeqCst)
            && !matches!(*h.borrow(), Health::Stopped | Health::Unhealthy(_))
        {
            if h.changed().await.is_err() {
                break;
            }
        }
    }

    /// Stops at once, without committing: every open transaction is aborted (EndTxn(abort)),
    /// the group is left, and the events since the last commit are processed again by the
    /// partitions' next owner. [`EventSource::run`] then returns `Ok` and the health is
    /// `Stopped`.
    pub async fn abort(&self) {
        self.inner.aborting.store(true, Ordering::SeqCst);
        self.inner.core.lock().unwrap().fail(Error::Stopped);
        self.inner.wake.notify_one();
        self.stop().await;
    }

    /// Runs until [`EventSource::stop`], SIGINT or SIGTERM.
    pub async fn run_until_signal(&self) -> Result<()> {
        let me = self.clone();
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; stopping");
            me.inner.stop.send_replace(true);
        });
        let r = self.run().await;
        signals.abort();
        r
    }

    /// Spawns [`EventSource::run`] on the runtime.
    pub fn spawn(&self) -> tokio::task::JoinHandle<Result<()>>
    where
        S: 'static,
    {
        let me = self.clone();
        tokio::spawn(async move { me.run().await })
    }

    /// Runs the instance: joins the group, restores and processes assigned partitions, and
    /// commits. Returns `Ok` after [`EventSource::stop`]; an error when the instance failed
    /// (its health is then `Unhealthy`). Runs once.
    pub async fn run(&self) -> Result<()> {
        if self.inner.running.swap(true, Ordering::SeqCst) {
            return Err(Error::Config("run called twice".into()));
        }
        let inner = &self.inner;
        let driver = tokio::spawn(pool_driver(self.inner.clone()));
        inner.consumer.set_rebalance_hooks(Arc::new(Hooks::<S> {
            inner: Arc::downgrade(&self.inner),
        }));
        let mut failure: Option<Error> = None;
        if let Err(e) = inner.consumer.subscribe([inner.config.topic.clone()]).await {
            failure = Some(e.into());
        }
        let mut stop = inner.stop.subscribe();
        let mut pending: BTreeMap<i32, VecDeque<ConsumerRecord>> = BTreeMap::new();
        let mut tick = tokio::time::interval(inner.config.metrics_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while failure.is_none() && !*stop.borrow() {
            if let Some(e) = inner.core.lock().unwrap().failure() {
                failure = Some(e.clone());
                break;
            }
            flush_pending(inner, &mut pending);
            tokio::select! {
                _ = stop.changed() => {}
                _ = inner.wake_on_failure() => {}
                _ = tick.tick(), if inner.metrics.enabled() => inner.partition_metrics(),
                polled = inner.consumer.poll(Duration::from_millis(200)) => match polled {
                    Ok(records) => dispatch(inner, records, &mut pending),
                    Err(e) if e.is_fatal() => failure = Some(Error::client(e)),
                    Err(e) => {
                        tracing::warn!(error = %e, "poll failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(pending);
        // Stop intake, commit what is open, leave the group (the revoke hook waits for the
        // commits), then close the producer.
        self.stop_workers().await;
        {
            inner.core.lock().unwrap().drain_everything();
            inner.wake.notify_one();
        }
        if failure.is_none() {
            let deadline = Instant::now() + inner.config.eos.commit_deadline * 2;
            while !inner.core.lock().unwrap().is_idle() && Instant::now() < deadline {
                if inner.core.lock().unwrap().failure().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if let Some(e) = inner.core.lock().unwrap().failure() {
                failure = Some(e.clone());
            }
        }
        if failure.is_some() {
            inner.core.lock().unwrap().fail(Error::Stopped);
            inner.wake.notify_one();
        }
        // Every step of the way out is bounded: an instance that stops must exit, even with
        // its coordinators unreachable.
        let bound = inner.config.session_timeout;
        if tokio::time::timeout(bound, inner.consumer.close())
            .await
            .is_err()
        {
            tracing::warn!(?bound, "closing the consumer did not finish; going on");
        }
        driver.abort();
        let _ = driver.await;
        if tokio::time::timeout(inner.config.eos.transaction_timeout, abort_open(inner))
            .await
            .is_err()
        {
            tracing::warn!("aborting the open transactions did not finish; going on");
        }
        for (slot, p) in inner.producers.iter().enumerate() {
            match tokio::time::timeout(bound, p.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(slot, error = %e, "closing a producer failed"),
                Err(_) => tracing::warn!(slot, "closing a producer did not finish; going on"),
            }
        }
        inner.active.send_replace(BTreeSet::new());
        let aborted =
            matches!(failure, Some(Error::Stopped)) && inner.aborting.load(Ordering::SeqCst);
        if aborted {
            tracing::info!("aborted: open transactions were aborted");
            failure = None;
        }
        match failure {
            None => {
                inner.health.send_replace(Health::Stopped);
                tracing::info!("stopped");
                Ok(())
            }
            Some(e) => {
                tracing::error!(error = %e, "the event source failed");
                inner
                    .health
                    .send_replace(Health::Unhealthy(Arc::new(e.clone())));
                Err(e)
            }
        }
    }

    async fn stop_workers(&self) {
        let workers: Vec<(i32, WorkerHandle)> =
            self.inner.workers.lock().unwrap().drain().collect();
        for (_, w) in &workers {
            w.stop.store(true, Ordering::SeqCst);
        }
        self.inner.intake.notify_waiters();
        for (p, w) in workers {
            drop(w.tx);
            if tokio::time::timeout(Duration::from_secs(10), w.task)
                .await
                .is_err()
            {
                tracing::warn!(partition = p, "a worker did not stop within 10 s");
            }
        }
    }
}

impl<S> Inner<S> {
    /// Resolves when the core has failed (polled with the consumer).
    async fn wake_on_failure(&self) {
        loop {
            if self.core.lock().unwrap().failure().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One [`Metric::Partition`] per assigned partition.
    fn partition_metrics(&self) {
        let counts: Vec<(i32, u64)> = self
            .workers
            .lock()
            .unwrap()
            .iter()
            .map(|(p, w)| (*p, w.events.load(Ordering::Relaxed)))
            .collect();
        for (partition, events) in counts {
            let tp = TopicPartition::new(self.config.topic.as_str(), partition);
            let lag = self.consumer.lag(&tp);
            self.metrics.emit(|| Metric::Partition {
                partition,
                events,
                lag,
            });
        }
    }

    fn update_health(&self) {
        let restoring = self.restoring.lock().unwrap().len();
        let current = self.health.borrow().clone();
        if matches!(current, Health::Unhealthy(_) | Health::Stopped) {
            return;
        }
        let next = if restoring > 0 {
            Health::Restoring {
                partitions: restoring,
            }
        } else if self.active.borrow().is_empty() {
            Health::Starting
        } else {
            Health::Healthy
        };
        self.health.send_replace(next);
    }
}

/// Hands polled records to their partition's worker; a full queue pauses the partition and
/// keeps the rest in `pending` (in order) until there is room.
fn dispatch<S>(
    inner: &Inner<S>,
    records: Vec<ConsumerRecord>,
    pending: &mut BTreeMap<i32, VecDeque<ConsumerRecord>>,
) {
    let workers = inner.workers.lock().unwrap();
    for r in records {
        let p = r.partition;
        let Some(w) = workers.get(&p) else {
            continue; // revoked meanwhile: the next owner reads it
        };
        if let Some(q) = pending.get_mut(&p) {
            q.push_back(r);
            continue;
        }
        match w.tx.try_send(r) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(r)) => {
                inner
                    .consumer
                    .pause(&[TopicPartition::new(inner.config.topic.as_str(), p)]);
                pending.entry(p).or_default().push_back(r);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn flush_pending<S>(inner: &Inner<S>, pending: &mut BTreeMap<i32, VecDeque<ConsumerRecord>>) {
    if pending.is_empty() {
        return;
    }
    let workers = inner.workers.lock().unwrap();
    pending.retain(|p, q| {
        let Some(w) = workers.get(p) else {
            return false;
        };
        while let Some(r) = q.pop_front() {
            match w.tx.try_send(r) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(r)) => {
                    q.push_front(r);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        inner
            .consumer
            .resume(&[TopicPartition::new(inner.config.topic.as_str(), *p)]);
        false
    });
}

struct Hooks<S> {
    inner: Weak<Inner<S>>,
}

impl<S: StateStore> RebalanceHooks for Hooks<S> {
    fn on_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            if partitions.is_empty() {
                inner.update_health();
                return;
            }
            // The changelog has the partition count the source had at build: a partition
            // beyond it has no changelog partition, and keys would move between partitions.
            if let Some(max) = partitions
                .iter()
                .map(|tp| tp.partition)
                .filter(|p| *p >= inner.partitions)
                .max()
            {
                inner.core.lock().unwrap().fail(Error::Config(format!(
                    "the source topic {} grew from {} to at least {} partitions (partition {max} \
                     was assigned), but its changelog {} has {}: grow the changelog to match and \
                     restart",
                    inner.config.topic,
                    inner.partitions,
                    max + 1,
                    inner.changelog,
                    inner.partitions
                )));
                inner.wake.notify_one();
                return;
            }
            // Nothing is fetched until the partition's store is restored (the pause survives
            // the start at the committed offset).
            consumer.pause(partitions);
            let mut workers = inner.workers.lock().unwrap();
            for tp in partitions {
                let p = tp.partition;
                let (tx, rx) = mpsc::channel(inner.config.worker_queue);
                let stop = Arc::new(AtomicBool::new(false));
                let events = Arc::new(AtomicU64::new(0));
                inner.restoring.lock().unwrap().insert(p);
                let task = tokio::spawn(
                    worker(inner.clone(), p, rx, stop.clone(), events.clone())
                        .instrument(tracing::info_span!("partition", p)),
                );
                let handle = WorkerHandle {
                    tx,
                    stop,
                    events,
                    task,
                };
                if let Some(old) = workers.insert(p, handle) {
                    old.stop.store(true, Ordering::SeqCst);
                }
            }
            drop(workers);
            inner.update_health();
        })
    }

    fn on_revoked<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            let ps: BTreeSet<i32> = partitions.iter().map(|t| t.partition).collect();
            stop_partitions(&inner, &ps).await;
            // R7: their transactions close now and must commit before the hook returns.
            inner.core.lock().unwrap().drain(&ps);
            inner.wake.notify_one();
            let deadline = Instant::now() + inner.config.session_timeout;
            loop {
                let (holds, failed) = {
                    let c = inner.core.lock().unwrap();
                    (c.holds(&ps), c.failure().is_some())
                };
                if !holds || failed {
                    break;
                }
                if Instant::now() >= deadline {
                    inner.core.lock().unwrap().fail(Error::Commit {
                        seq: 0,
                        attempts: 0,
                        last: format!(
                            "partitions {ps:?} revoked, but their transactions did not commit \
                             within {:?}",
                            inner.config.session_timeout
                        )
                        .into(),
                    });
                    inner.wake.notify_one();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tracing::info!(partitions = ?ps, "revoked");
            inner.update_health();
        })
    }

    fn on_lost<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            // R9: the group may have handed these partitions to someone else already: abort
            // everything open and drop every store; what stays assigned restores again.
            let all: BTreeSet<i32> = inner.workers.lock().unwrap().keys().copied().collect();
            stop_partitions(&inner, &all).await;
            let dropped = inner.core.lock().unwrap().lose_all();
            inner.lost_epoch.fetch_add(1, Ordering::SeqCst);
            inner.wake.notify_one();
            tracing::warn!(
                partitions = partitions.len(),
                dropped_events = dropped,
                "partitions lost; open transactions aborted"
            );
            // Partitions still assigned get new workers (restored from their changelog).
            let still: Vec<TopicPartition> = inner
                .consumer
                .assignment()
                .into_iter()
                .filter(|tp| !partitions.contains(tp))
                .collect();
            drop(inner);
            if !still.is_empty() {
                self.on_assigned(_consumer, &still).await;
            }
        })
    }
}

/// Stops the workers of `ps` (each finishes the event it is handling) and drops their stores.
async fn stop_partitions<S>(inner: &Arc<Inner<S>>, ps: &BTreeSet<i32>) {
    let handles: Vec<(i32, WorkerHandle)> = {
        let mut w = inner.workers.lock().unwrap();
        ps.iter()
            .filter_map(|p| w.remove(p).map(|h| (*p, h)))
            .collect()
    };
    for (_, h) in &handles {
        h.stop.store(true, Ordering::SeqCst);
    }
    inner.intake.notify_waiters();
    for (p, h) in handles {
        drop(h.tx);
        if tokio::time::timeout(Duration::from_secs(10), h.task)
            .await
            .is_err()
        {
            tracing::warn!(partition = p, "a worker did not stop within 10 s");
        }
    }
}

/// One partition: restore its store, resume the source partition, then handle its events in
/// offset order.
async fn worker<S: StateStore>(
    inner: Arc<Inner<S>>,
    p: i32,
    mut rx: mpsc::Receiver<ConsumerRecord>,
    stop: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
) {
    let tp = TopicPartition::new(inner.config.topic.as_str(), p);
    let started = Instant::now();
    let restored = restore(&inner, p, &stop).await;
    inner.restoring.lock().unwrap().remove(&p);
    let mut store = match restored {
        Ok(Some((store, records))) => {
            let elapsed = started.elapsed();
            tracing::info!(partition = p, records, took = ?elapsed, "restored");
            inner.metrics.emit(|| Metric::Restored {
                partition: p,
                records,
                elapsed,
            });
            store
        }
        Ok(None) => {
            inner.update_health();
            return; // stopped while restoring
        }
        Err(e) => {
            inner.core.lock().unwrap().fail(e);
            inner.wake.notify_one();
            inner.update_health();
            return;
        }
    };
    inner.consumer.resume(std::slice::from_ref(&tp));
    inner.active.send_modify(|a| {
        a.insert(p);
    });
    inner.update_health();
    while let Some(record) = rx.recv().await {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        events.fetch_add(1, Ordering::Relaxed);
        if !handle(&inner, &mut store, record, &stop).await {
            break;
        }
    }
    inner.active.send_modify(|a| {
        a.remove(&p);
    });
    store.revoked();
}

/// Attaches `record` to the open transaction, runs its route, and hands the result to the
/// core. Returns false when the worker must stop.
async fn handle<S: StateStore>(
    inner: &Arc<Inner<S>>,
    store: &mut S,
    record: ConsumerRecord,
    stop: &AtomicBool,
) -> bool {
    let event = loop {
        let notified = inner.intake.notified();
        let a = inner
            .core
            .lock()
            .unwrap()
            .attach(record.partition, record.offset, Instant::now());
        match a {
            Attach::Attached(e) => break e,
            Attach::Closed => return false,
            Attach::Full => {
                inner.wake.notify_one();
                notified.await;
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
            }
        }
    };
    inner.counters.events.fetch_add(1, Ordering::Relaxed);
    let mut out = Vec::new();
    let slot = DeferSlot {
        target: Target::Pool {
            core: inner.core.clone(),
            wake: inner.wake.clone(),
            event,
        },
        taken: false,
    };
    let router = inner.router.clone();
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut ctx = EventContext::new(store, &record, &inner.changelog, &mut out, Some(slot));
        let r = router.run(&mut ctx);
        (r, ctx.deferred())
    }));
    let skipped = |reason: SkipReason| {
        inner.metrics.emit(|| Metric::Skipped {
            partition: record.partition,
            offset: record.offset,
            reason,
        })
    };
    let where_ = |reason: String| Error::Processing {
        partition: record.partition,
        offset: record.offset,
        reason: reason.into(),
    };
    let result: std::result::Result<Vec<ProducerRecord>, Error> = match run {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            Err(where_(format!("handler panicked: {msg}")))
        }
        Ok((RouteResult::Handled(Outcome::Complete), _)) => Ok(out),
        Ok((RouteResult::Handled(Outcome::Incomplete), true)) => {
            inner.core.lock().unwrap().add_records(event, out);
            inner.wake.notify_one();
            return true;
        }
        Ok((RouteResult::Handled(Outcome::Incomplete), false)) => Err(where_(
            "the handler returned Incomplete without calling defer()".into(),
        )),
        Ok((RouteResult::Handled(Outcome::Fail(e)), _)) => {
            Err(where_(format!("handler failed: {e}")))
        }
        Ok((RouteResult::Skipped, _)) => {
            inner
                .counters
                .skipped_unknown
                .fetch_add(1, Ordering::Relaxed);
            skipped(SkipReason::UnknownType);
            Ok(Vec::new())
        }
        Ok((RouteResult::Unknown(msg), _)) => Err(where_(msg)),
        Ok((RouteResult::Undecodable(e), _)) => match &inner.config.decode_errors {
            ErrorPolicy::Fail => Err(where_(format!("undecodable: {e}"))),
            ErrorPolicy::Skip => {
                inner.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                skipped(SkipReason::Undecodable);
                Ok(Vec::new())
            }
            ErrorPolicy::DeadLetter { topic } => {
                inner.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                skipped(SkipReason::DeadLettered);
                Ok(vec![dead_letter(topic, &record, &e.to_string())])
            }
        },
    };
    let failed = result.is_err();
    inner.core.lock().unwrap().complete(event, result);
    inner.wake.notify_one();
    !failed
}

fn dead_letter(topic: &str, r: &ConsumerRecord, error: &str) -> ProducerRecord {
    let mut out = ProducerRecord::new(topic)
        .header("source.topic", r.topic.to_string())
        .header("source.partition", r.partition.to_string())
        .header("source.offset", r.offset.to_string())
        .header("error", error.to_string());
    out.key = r.key.clone();
    out.value = r.value.clone();
    for h in &r.headers {
        out.headers.push(h.clone());
    }
    out
}

/// Restores partition `p`'s store (R6). `Ok(None)`: stopped meanwhile.
async fn restore<S: StateStore>(
    inner: &Arc<Inner<S>>,
    p: i32,
    stop: &AtomicBool,
) -> Result<Option<(S, u64)>> {
    let source = TopicPartition::new(inner.config.topic.as_str(), p);
    // A stable committed offset first: any transaction that committed offsets for this
    // partition has then written all its changelog records (flush before offsets).
    inner
        .consumer
        .committed(std::slice::from_ref(&source))
        .await?;
    let ctp = TopicPartition::new(inner.changelog.as_str(), p);
    // One lookup per end: list_offsets answers one entry per partition. The restore runs to
    // the last stable offset, not the log end: a transaction still open there belongs to a
    // previous owner that has not committed offsets for this partition (the stable fetch
    // above waited for any that had), so its generation is over and it can only abort; waiting
    // for it would hold the partition until its coordinator times it out, or for good if it
    // hangs.
    let earliest = list_one(
        &inner.client,
        &ctp,
        Offset::Earliest,
        IsolationLevel::ReadUncommitted,
    )
    .await?;
    let target = list_one(
        &inner.client,
        &ctp,
        Offset::Latest,
        IsolationLevel::ReadCommitted,
    )
    .await?;
    let mut store = (inner.factory)(p);
    let mut machine = Restore::new(earliest, target);
    if earliest >= target {
        return Ok(Some((store, 0)));
    }
    let rc = Consumer::with_client(inner.client.clone(), inner.restore_cfg.clone()).await?;
    let mut next_progress = Instant::now() + inner.config.metrics_interval;
    // A restore that does not end is logged, so a stall (an open transaction of a previous
    // owner holding the last stable offset below the end, say) is visible.
    let mut next_log = Instant::now() + Duration::from_secs(5);
    rc.assign([ctp.clone()]).await?;
    rc.seek(&ctp, Offset::At(earliest)).await?;
    let result = async {
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            // A short wait: a poll whose records were all aborted data returns nothing, and
            // the position moved anyway (a changelog ending in aborted data must not cost a
            // long wait per fetch).
            let batch = rc.poll(Duration::from_millis(50)).await?;
            let position = rc.position(&ctp).unwrap_or(earliest);
            let mut records = Vec::with_capacity(batch.len());
            for r in &batch {
                let Some(key) = r.key.as_deref() else {
                    return Err(Error::Restore {
                        partition: p,
                        source: StoreError::NoKey(r.offset),
                    });
                };
                records.push(ChangelogRecord {
                    key,
                    value: r.value.as_deref(),
                    offset: r.offset,
                });
            }
            let progress =
                machine
                    .apply_batch(&mut store, records, position)
                    .map_err(|source| Error::Restore {
                        partition: p,
                        source,
                    })?;
            if let RestoreProgress::Done = progress {
                return Ok(Some(()));
            }
            if Instant::now() >= next_log {
                next_log = Instant::now() + Duration::from_secs(5);
                tracing::info!(
                    partition = p,
                    position,
                    end = target,
                    applied = machine.applied(),
                    "restore still running"
                );
            }
            if inner.metrics.enabled() && Instant::now() >= next_progress {
                next_progress = Instant::now() + inner.config.metrics_interval;
                inner.metrics.emit(|| Metric::RestoreProgress {
                    partition: p,
                    records: machine.applied(),
                    position,
                    end: target,
                });
            }
        }
    }
    .await;
    rc.close().await;
    let applied = machine.applied();
    inner
        .counters
        .restored_records
        .fetch_add(applied, Ordering::Relaxed);
    Ok(result?.map(|()| (store, applied)))
}

async fn list_one(
    client: &Client,
    tp: &TopicPartition,
    at: Offset,
    isolation: IsolationLevel,
) -> Result<i64> {
    let m = kafka_client::offsets::list_offsets(client, &[(tp.clone(), at)], isolation).await?;
    Ok(m.get(tp).map_or(0, |l| l.offset.max(0)))
}

/// The pool's driver: turns the core's actions into producer calls. Sends run here, in order;
/// the head's commit runs as its own task, so other slots keep sending meanwhile.
async fn pool_driver<S: StateStore>(inner: Arc<Inner<S>>) {
    let mut lost_seen = inner.lost_epoch.load(Ordering::SeqCst);
    let mut deliveries: Vec<DeliveryFuture> = Vec::new();
    let mut commit: Option<tokio::task::JoinHandle<()>> = None;
    let eos = inner.config.guarantee == Guarantee::ExactlyOnce;
    loop {
        let lost = inner.lost_epoch.load(Ordering::SeqCst);
        if lost != lost_seen {
            // R9: the commit out settles first (it fails on the new generation, or commits
            // what was ours), then every slot's open transaction is aborted.
            lost_seen = lost;
            if let Some(c) = commit.take() {
                let _ = c.await;
            }
            deliveries.clear();
            abort_open(&inner).await;
        }
        if commit.as_ref().is_some_and(|c| c.is_finished()) {
            commit = None;
        }
        let notified = inner.wake.notified();
        let action = inner.core.lock().unwrap().poll_action(Instant::now());
        match action {
            Some(Action::Send {
                seq,
                slot,
                begin,
                records,
            }) => {
                let p = &inner.producers[slot];
                if eos && begin {
                    if let Err(e) = p.begin_transaction().await {
                        report(&inner, seq, &e);
                        continue;
                    }
                }
                for r in records {
                    match p.send(r).await {
                        Ok(d) => {
                            if !eos {
                                deliveries.push(d);
                            }
                        }
                        Err(e) => {
                            if eos {
                                abort_slot(&inner, slot).await;
                            }
                            deliveries.clear();
                            report(&inner, seq, &e);
                            break;
                        }
                    }
                }
            }
            Some(Action::Commit {
                seq,
                slot,
                begin,
                offsets,
                info,
            }) => {
                let task_inner = inner.clone();
                let owed = std::mem::take(&mut deliveries);
                let span = tracing::debug_span!("commit", seq, slot);
                commit = Some(tokio::spawn(
                    async move {
                        let inner = task_inner;
                        let started = Instant::now();
                        let result = if eos {
                            commit_eos(&inner, seq, slot, begin, &offsets).await
                        } else {
                            commit_alo(&inner, &offsets, owed).await
                        };
                        let commit_time = started.elapsed();
                        tracing::debug!(seq, slot, ?info, ?result, took = ?commit_time, "commit");
                        match &result {
                            CommitResult::Committed => inner.metrics.emit(|| {
                                Metric::TxnCommitted(TxnCommitted::new(
                                    seq,
                                    slot,
                                    &info,
                                    commit_time,
                                ))
                            }),
                            CommitResult::Retry(reason) => {
                                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                                inner.metrics.emit(|| Metric::TxnRetried {
                                    seq,
                                    attempt: info.attempts,
                                    reason: reason.clone(),
                                });
                            }
                            CommitResult::Fatal(_) => {}
                        }
                        inner.core.lock().unwrap().commit_done(seq, result);
                        inner.intake.notify_waiters();
                        inner.wake.notify_one();
                    }
                    .instrument(span),
                ));
            }
            Some(Action::Fail(reason)) => {
                tracing::error!(%reason, "the pool failed; aborting open transactions");
                if let Some(c) = commit.take() {
                    let _ = c.await;
                }
                abort_open(&inner).await;
                inner.intake.notify_waiters();
                return;
            }
            None => {
                let timeout = inner.core.lock().unwrap().poll_timeout();
                match timeout {
                    Some(t) => {
                        tokio::select! {
                            _ = notified => {}
                            _ = tokio::time::sleep_until(t.into()) => {}
                        }
                    }
                    None => notified.await,
                }
                inner.core.lock().unwrap().handle_timeout(Instant::now());
            }
        }
    }
}

/// Aborts the open transaction of every slot (exactly once only).
async fn abort_open<S>(inner: &Inner<S>) {
    if inner.config.guarantee != Guarantee::ExactlyOnce {
        return;
    }
    for slot in 0..inner.producers.len() {
        if inner.producers[slot].in_transaction() {
            abort_slot(inner, slot).await;
        }
    }
}

/// Aborts the slot's open transaction. An abort that has not ended (its coordinator moving,
/// a timeout) is waited for again, up to `eos.transaction_timeout` (by then the coordinator
/// has aborted the transaction itself), so the slot's next `begin` does not find the previous
/// transaction still ending.
async fn abort_slot<S>(inner: &Inner<S>, slot: usize) {
    let p = &inner.producers[slot];
    let deadline = Instant::now() + inner.config.eos.transaction_timeout;
    loop {
        match p.abort_transaction().await {
            Ok(()) => return,
            Err(e) if !p.in_transaction() || e.is_fatal() || Instant::now() >= deadline => {
                tracing::warn!(slot, error = %e, "abort failed");
                return;
            }
            Err(e) => {
                tracing::debug!(slot, error = %e, "the abort has not ended; waiting for it");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A send or begin failed: fatal errors fail the core; others retry the transaction.
fn report<S>(inner: &Inner<S>, seq: u64, e: &kafka_client::Error) {
    let result = if e.is_fatal() {
        CommitResult::Fatal(Error::client(e.clone()))
    } else {
        CommitResult::Retry(e.to_string())
    };
    inner.core.lock().unwrap().commit_done(seq, result);
}

/// R4 steps 3-4 and R10/R11 for one transaction.
async fn commit_eos<S>(
    inner: &Inner<S>,
    seq: u64,
    slot: usize,
    begin: bool,
    offsets: &BTreeMap<i32, i64>,
) -> CommitResult {
    let p = &inner.producers[slot];
    if begin {
        if let Err(e) = p.begin_transaction().await {
            return classify(e);
        }
    }
    let Some(group) = inner.consumer.group_metadata() else {
        abort_slot(inner, slot).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        return CommitResult::Retry("not in a group generation".into());
    };
    let tag = format!("{}/{slot}/{seq}", inner.instance_id);
    let list: Vec<TxnOffset> = offsets
        .iter()
        .map(|(part, off)| TxnOffset {
            partition: TopicPartition::new(inner.config.topic.as_str(), *part),
            offset: *off,
            leader_epoch: -1,
            metadata: Some(tag.clone()),
        })
        .collect();
    if !list.is_empty() {
        let generation = group.generation_id;
        if let Err(e) = p.send_offsets_to_transaction(list, group).await {
            if e.is_fatal() {
                return classify(e);
            }
            abort_slot(inner, slot).await;
            // The member's generation is stale: a new attempt only helps in the next one (the
            // error table of STREAMS.md §3.3), so wait for it rather than burn the attempts.
            let stale = matches!(
                e.broker_code(),
                Some(
                    ErrorCode::ILLEGAL_GENERATION
                        | ErrorCode::UNKNOWN_MEMBER_ID
                        | ErrorCode::REBALANCE_IN_PROGRESS
                )
            );
            if stale {
                let deadline = Instant::now() + inner.config.session_timeout;
                while Instant::now() < deadline
                    && inner
                        .consumer
                        .group_metadata()
                        .is_none_or(|g| g.generation_id == generation)
                    && inner.core.lock().unwrap().failure().is_none()
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            return CommitResult::Retry(e.to_string());
        }
    }
    match p.commit_transaction().await {
        Ok(()) => CommitResult::Committed,
        Err(kafka_client::Error::OutcomeUnknown(e)) => {
            // R11: the producer bumped its epoch, which settled the transaction; our offsets
            // tell which way (no later transaction touched these partitions).
            let tps: Vec<TopicPartition> = offsets
                .keys()
                .map(|part| TopicPartition::new(inner.config.topic.as_str(), *part))
                .collect();
            match inner.consumer.committed(&tps).await {
                Ok(committed) => {
                    let all = offsets.iter().all(|(part, off)| {
                        let tp = TopicPartition::new(inner.config.topic.as_str(), *part);
                        committed.get(&tp).copied().flatten() == Some(*off)
                    });
                    inner
                        .counters
                        .outcomes_resolved
                        .fetch_add(1, Ordering::Relaxed);
                    inner.metrics.emit(|| Metric::OutcomeResolved {
                        seq,
                        committed: all,
                    });
                    if all {
                        tracing::info!(seq, "unknown commit outcome resolved: committed");
                        CommitResult::Committed
                    } else {
                        tracing::info!(seq, "unknown commit outcome resolved: aborted; re-sending");
                        CommitResult::Retry(format!("outcome unknown, then not committed: {e}"))
                    }
                }
                Err(err) => CommitResult::Fatal(Error::Commit {
                    seq,
                    attempts: 0,
                    last: format!(
                        "commit outcome unknown ({e}) and committed offsets unreadable: {err}"
                    )
                    .into(),
                }),
            }
        }
        Err(e) if e.is_fatal() => classify(e),
        Err(e) => {
            abort_slot(inner, slot).await;
            CommitResult::Retry(e.to_string())
        }
    }
}

fn classify(e: kafka_client::Error) -> CommitResult {
    if e.is_fatal() {
        CommitResult::Fatal(Error::client(e))
    } else {
        CommitResult::Retry(e.to_string())
    }
}

/// At least once: every record acknowledged, then the offsets committed.
async fn commit_alo<S>(
    inner: &Inner<S>,
    offsets: &BTreeMap<i32, i64>,
    deliveries: Vec<DeliveryFuture>,
) -> CommitResult {
    if let Err(e) = inner.producers[0].flush().await {
        return CommitResult::Retry(e.to_string());
    }
    for d in deliveries {
        if let Err(e) = d.await {
            return classify(e);
        }
    }
    let list: Vec<(TopicPartition, i64)> = offsets
        .iter()
        .map(|(p, o)| (TopicPartition::new(inner.config.topic.as_str(), *p), *o))
        .collect();
    match inner.consumer.commit(list).await {
        Ok(()) => CommitResult::Committed,
        Err(e) => classify(e),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
