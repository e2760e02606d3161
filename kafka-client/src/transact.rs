//! Exactly-once consume-transform-produce: a group consumer and a transactional producer
//! working as one ([`TransactSession`], like franz-go's `GroupTransactSession`).
//!
//! ```no_run
//! # async fn demo() -> kafka_client::Result<()> {
//! use std::time::Duration;
//! use kafka_client::config::{ConsumerConfig, ProducerConfig};
//! use kafka_client::transact::TransactSession;
//! use kafka_client::ProducerRecord;
//!
//! let mut c = ConsumerConfig::default();
//! c.group_id("copier".to_string());
//! let mut p = ProducerConfig::default();
//! p.transactional_id("copier-1".to_string());
//! let session = TransactSession::new(c, p).await?;
//! session.subscribe(["input"]).await?;
//! loop {
//!     for r in session.poll(Duration::from_millis(100)).await? {
//!         let out = ProducerRecord::new("output").value(r.value.clone().unwrap_or_default());
//!         let _ = session.send(out).await?;
//!     }
//!     // Commits the outputs and the input offsets together, or aborts and rewinds.
//!     let committed = session.end(true).await?;
//!     # let _ = committed; break;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - The consumer reads with `read_committed` and never commits by itself: input offsets are
//!   committed only inside the producer's transaction (TxnOffsetCommit carrying the member's
//!   generation, so a member fenced by a rebalance cannot commit them: KIP-447).
//! - [`TransactSession::poll`] opens a transaction when none is open; every record it returns
//!   belongs to that transaction until [`TransactSession::end`].
//! - `end(true)` commits the outputs and the offsets of every record polled since the
//!   transaction began, *unless* a partition those records came from was revoked or lost
//!   meanwhile: then it aborts. Every abort (and a commit whose outcome is unknown) rewinds the
//!   partitions still owned to where the transaction started (or to the committed offsets when
//!   the outcome is unknown), so those records are polled again.
//! - A rebalance waits for an `end` in flight: the revoke hook takes the same lock as `end`, so
//!   partitions leave only after the transaction that read them is committed or aborted.
//! - Fencing (another session with the same transactional id) is fatal: `end` and `poll` fail
//!   with [`Error::Fenced`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{ConsumerConfig, IsolationLevel, ProducerConfig};
use crate::consumer::{Consumer, ConsumerRecord, RebalanceHooks};
use crate::error::{Error, Result};
use crate::group::BoxFuture;
use crate::producer::{DeliveryFuture, GroupMetadata, Producer, ProducerRecord, TxnOffset};
use crate::types::{Offset, TopicPartition};

/// How many times `end` waits for an abort that is still waiting for batches in flight.
const ABORT_WAITS: u32 = 5;

/// What the open transaction consumed.
#[derive(Default)]
struct Consumed {
    /// Per partition: the offset of the first record polled in this transaction.
    start: BTreeMap<TopicPartition, i64>,
    /// Per partition: the next offset to consume and the last record's leader epoch.
    next: BTreeMap<TopicPartition, (i64, i32)>,
}

struct Inner {
    /// Held by `end` while it commits or aborts, and by the revoke and lost hooks: a
    /// rebalance waits for an end in flight.
    end_lock: tokio::sync::Mutex<()>,
    /// A partition consumed in the open transaction was revoked or lost: it must abort.
    failed: AtomicBool,
    consumed: Mutex<Consumed>,
    hooks: Mutex<Option<Arc<dyn RebalanceHooks>>>,
}

impl Inner {
    fn mark_if_consumed(&self, partitions: &[TopicPartition]) {
        let c = self.consumed.lock().unwrap();
        if partitions.iter().any(|tp| c.next.contains_key(tp)) {
            self.failed.store(true, Ordering::SeqCst);
        }
    }

    fn user_hooks(&self) -> Option<Arc<dyn RebalanceHooks>> {
        self.hooks.lock().unwrap().clone()
    }
}

struct SessionHooks {
    inner: Arc<Inner>,
}

impl RebalanceHooks for SessionHooks {
    fn on_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(h) = self.inner.user_hooks() {
                h.on_assigned(consumer, partitions).await;
            }
        })
    }

    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Wait for an end in flight; a transaction still open that read from these
            // partitions can no longer commit.
            let _end = self.inner.end_lock.lock().await;
            self.inner.mark_if_consumed(partitions);
            if let Some(h) = self.inner.user_hooks() {
                h.on_revoked(consumer, partitions).await;
            }
        })
    }

    fn on_lost<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _end = self.inner.end_lock.lock().await;
            self.inner.mark_if_consumed(partitions);
            if let Some(h) = self.inner.user_hooks() {
                h.on_lost(consumer, partitions).await;
            }
        })
    }
}

/// A group consumer and a transactional producer that commit together. See the
/// [module docs](self).
pub struct TransactSession {
    consumer: Consumer,
    producer: Producer,
    inner: Arc<Inner>,
    group_id: String,
    instance_id: Option<String>,
}

impl std::fmt::Debug for TransactSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactSession")
            .field("group_id", &self.group_id)
            .finish()
    }
}

impl TransactSession {
    /// A session from a consumer configuration (with `group.id`; `isolation.level` is set to
    /// read_committed and auto-commit turned off) and a producer configuration (with
    /// `transactional.id`). Waits for the producer id (up to `max.block.ms`), which fences an
    /// older session with the same transactional id.
    pub async fn new(
        mut consumer_config: ConsumerConfig,
        producer_config: ProducerConfig,
    ) -> Result<TransactSession> {
        let Some(group_id) = consumer_config.get_group_id().clone() else {
            return Err(Error::Misuse(
                "a transact session needs a consumer group (group.id)".to_string(),
            ));
        };
        if !producer_config.transactional() {
            return Err(Error::Misuse(
                "a transact session needs a transactional producer (transactional.id)".to_string(),
            ));
        }
        consumer_config.isolation_level(IsolationLevel::ReadCommitted);
        consumer_config.enable_auto_commit(false);
        let instance_id = consumer_config.get_group_instance_id().clone();
        let producer = Producer::new(producer_config).await?;
        if let Err(e) = producer.init_transactions().await {
            let _ = producer.close().await;
            return Err(e);
        }
        let consumer = match Consumer::new(consumer_config).await {
            Ok(c) => c,
            Err(e) => {
                let _ = producer.close().await;
                return Err(e);
            }
        };
        let inner = Arc::new(Inner {
            end_lock: tokio::sync::Mutex::new(()),
            failed: AtomicBool::new(false),
            consumed: Mutex::new(Consumed::default()),
            hooks: Mutex::new(None),
        });
        consumer.set_rebalance_hooks(Arc::new(SessionHooks {
            inner: inner.clone(),
        }));
        Ok(TransactSession {
            consumer,
            producer,
            inner,
            group_id,
            instance_id,
        })
    }

    /// Hooks run after the session's own (which wait for an end in flight); set them before
    /// [`TransactSession::subscribe`].
    pub fn set_rebalance_hooks(&self, hooks: Arc<dyn RebalanceHooks>) {
        *self.inner.hooks.lock().unwrap() = Some(hooks);
    }

    /// Joins the group, subscribed to `topics`.
    pub async fn subscribe<I, S>(&self, topics: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.consumer.subscribe(topics).await
    }

    /// The consumer (for its assignment, lag, ...). Do not commit through it.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The transactional producer.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Polls records, opening a transaction first when none is open.
    pub async fn poll(&self, max_wait: Duration) -> Result<Vec<ConsumerRecord>> {
        if !self.producer.in_transaction() {
            self.producer.begin_transaction().await?;
        }
        let records = self.consumer.poll(max_wait).await?;
        if !records.is_empty() {
            let mut c = self.inner.consumed.lock().unwrap();
            for r in &records {
                let tp = TopicPartition::new(r.topic.to_string(), r.partition);
                c.start.entry(tp.clone()).or_insert(r.offset);
                c.next
                    .insert(tp, (r.offset + 1, r.leader_epoch.unwrap_or(-1)));
            }
        }
        Ok(records)
    }

    /// Produces `record` in the open transaction (see [`Producer::send`]).
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        if !self.producer.in_transaction() {
            self.producer.begin_transaction().await?;
        }
        self.producer.send(record).await
    }

    /// Ends the open transaction: with `commit`, commits the outputs and the offsets of the
    /// records polled in it, unless one of their partitions was revoked or lost meanwhile or a
    /// step fails; otherwise (or then) aborts and rewinds. Returns whether it committed.
    ///
    /// Errors: fatal ones only (fencing, a closed producer); everything else ends in an abort
    /// and `Ok(false)`.
    pub async fn end(&self, commit: bool) -> Result<bool> {
        let _end = self.inner.end_lock.lock().await;
        let consumed = std::mem::take(&mut *self.inner.consumed.lock().unwrap());
        let failed = self.inner.failed.swap(false, Ordering::SeqCst);
        if !self.producer.in_transaction() {
            return Ok(!failed);
        }
        let assigned: std::collections::BTreeSet<TopicPartition> =
            self.consumer.assignment().into_iter().collect();
        let moved = consumed.next.keys().any(|tp| !assigned.contains(tp));
        if commit && !failed && !moved {
            match self.commit(&consumed).await {
                Ok(()) => return Ok(true),
                Err(Error::OutcomeUnknown(e)) => {
                    tracing::warn!(error = %e, "transaction outcome unknown; rewinding to the committed offsets");
                    self.rewind_to_committed(&consumed, &assigned).await;
                    return Ok(false);
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "transaction failed; aborting");
                }
            }
        } else if commit {
            tracing::info!(
                failed,
                moved,
                "partitions of the transaction were revoked or lost; aborting"
            );
        }
        self.abort().await?;
        self.rewind(&consumed.start, &assigned).await;
        Ok(false)
    }

    /// Aborts the open transaction. An abort still waiting for batches in flight when its wait
    /// ends (`transaction.end.timeout.ms`) goes on in the producer: wait for it again, a few
    /// times (the batches' `delivery.timeout.ms` bounds it).
    async fn abort(&self) -> Result<()> {
        let mut tries = 0;
        loop {
            match self.producer.abort_transaction().await {
                Err(e @ Error::Timeout { .. }) if tries < ABORT_WAITS => {
                    tries += 1;
                    tracing::warn!(error = %e, "the abort is still waiting for batches in flight");
                }
                other => return other,
            }
        }
    }

    async fn commit(&self, consumed: &Consumed) -> Result<()> {
        if !consumed.next.is_empty() {
            let (member_id, generation_id) = self.consumer.group_generation().ok_or_else(|| {
                Error::Misuse("the session's consumer is not in the group".to_string())
            })?;
            let offsets = consumed
                .next
                .iter()
                .map(|(tp, (offset, epoch))| TxnOffset {
                    partition: tp.clone(),
                    offset: *offset,
                    leader_epoch: *epoch,
                    metadata: None,
                })
                .collect();
            let group = GroupMetadata {
                group_id: self.group_id.clone(),
                generation_id,
                member_id,
                instance_id: self.instance_id.clone(),
            };
            self.producer
                .send_offsets_to_transaction(offsets, group)
                .await?;
        }
        self.producer.commit_transaction().await
    }

    /// Seeks the partitions still owned back to where the aborted transaction started.
    async fn rewind(
        &self,
        start: &BTreeMap<TopicPartition, i64>,
        assigned: &std::collections::BTreeSet<TopicPartition>,
    ) {
        for (tp, offset) in start {
            if assigned.contains(tp) {
                if let Err(e) = self.consumer.seek(tp, Offset::At(*offset)).await {
                    tracing::warn!(%tp, error = %e, "rewind after abort failed");
                }
            }
        }
    }

    /// After an unknown outcome: seek to the committed offsets (the transaction's start where
    /// none is committed: then it cannot have committed).
    async fn rewind_to_committed(
        &self,
        consumed: &Consumed,
        assigned: &std::collections::BTreeSet<TopicPartition>,
    ) {
        let tps: Vec<TopicPartition> = consumed
            .start
            .keys()
            .filter(|tp| assigned.contains(tp))
            .cloned()
            .collect();
        let mut start = consumed.start.clone();
        match self.consumer.committed(&tps).await {
            Ok(committed) => {
                for (tp, off) in committed {
                    if let Some(off) = off {
                        start.insert(tp, off);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "committed offsets unknown after an unknown outcome; rewinding to the transaction's start");
            }
        }
        self.rewind(&start, assigned).await;
    }

    /// Aborts an open transaction, leaves the group and closes both clients.
    pub async fn close(&self) -> Result<()> {
        if self.producer.in_transaction() {
            let _end = self.inner.end_lock.lock().await;
            if let Err(e) = self.producer.abort_transaction().await {
                tracing::warn!(error = %e, "abort at close failed");
            }
        }
        self.consumer.close().await;
        self.producer.close().await
    }
}
