//! The sans-IO core of the producer: accumulator, idempotence bookkeeping and delivery timeouts.
//!
//! Inputs, each with the current time: [`Core::append`] (a record from the application),
//! [`Core::handle_response`] (the outcome of a Produce request, or the connection error that
//! ended it), [`Core::set_producer_id`] (an InitProducerId answer), [`Core::handle_timeout`]
//! (delivery timeouts). Outputs: [`Core::poll_transmit`] (the Produce requests to send now, per
//! broker), [`Core::poll_timeout`] (when to call again), [`Core::needs_producer_id`].
//!
//! Ordering rules (SEMANTICS.md, "Idempotent producer"):
//! - batches of a partition stay in one queue, in sequence order, until they are finished;
//! - a batch gets its sequence the first time it is sent and keeps it across retries, so the
//!   broker can deduplicate a retry of a batch that was written but not acknowledged;
//! - until the broker has acknowledged a batch of the current producer id on a partition, one
//!   batch at a time is in flight there (a broker accepts any first sequence from a producer
//!   it does not know, so a pipelined second batch could be written ahead of a failed first);
//! - after an error, the partition sends nothing until all its in-flight batches are answered,
//!   then resends from the first unfinished batch;
//! - a batch is failed by the delivery timeout only when no batch at or behind it is in flight,
//!   and then every batch behind it fails too, so the log never has a gap; if a failed batch had
//!   a sequence, the producer id is renewed (KIP-360) so the next sequence is accepted;
//! - before the producer id is renewed, every other partition resends its batches that already
//!   have a sequence (they may have been written: their request died with its connection)
//!   under the old id until they are answered; renewing the id first would give them new
//!   sequences the broker cannot match to the copy it may hold, and write them twice;
//! - a request that could not be sent at all (no connection to the leader, e.g. a leader that
//!   left the metadata) is retried like a retriable error: its batches were not written.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_wire::codec::Uuid;
use kafka_wire::messages::ProduceResponse;
use kafka_wire::records::{BatchBuilder, BatchOptions, HEADER_LEN};
use kafka_wire::{Codec, ErrorCode};

use crate::config::{Acks, ProducerConfig};
use crate::error::{BrokerError, Error, Result};
use crate::metadata::ClusterMetadata;
use crate::partitioner::{PartitionLoad, Partitioner};
use crate::rng::SeededRng;
use crate::types::TopicPartition;

use super::{ProducerRecord, RecordMetadata};

/// The broker's default `message.max.bytes`: the largest batch, before compression.
pub const MAX_BATCH_BYTES: usize = 1_000_012;

/// Where one record's outcome goes: the driver's type (a future's sender, a callback). The
/// core hands each completed record's `R` to [`Deliver::deliver`] under its lock; what must
/// not run there (a user callback) goes to `later`, which the driver drains once the core is
/// unlocked ([`Core::swap_completed`]).
pub trait Deliver: Send + Sized + 'static {
    /// Delivers `result` at once (cheap and non-blocking), or pushes it to `later`.
    fn deliver(self, result: Result<RecordMetadata>, later: &mut Completed<Self>);
}

/// Completed records whose delivery waits until the core is unlocked, with their outcomes.
pub type Completed<R> = Vec<(R, Result<RecordMetadata>)>;

/// The settings the core needs, taken from [`ProducerConfig`].
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub acks: Acks,
    pub idempotent: bool,
    /// A transactional producer: the transaction manager supplies the producer id, and a
    /// failed batch is reported ([`Core::take_failures`]) instead of renewing the id here.
    pub transactional: bool,
    pub linger: Duration,
    pub batch_size: usize,
    pub buffer_memory: usize,
    pub max_request_size: usize,
    pub max_in_flight: usize,
    pub compression: Codec,
    pub compression_level: Option<i32>,
    pub delivery_timeout: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
}

impl CoreConfig {
    pub fn from_producer(c: &ProducerConfig) -> CoreConfig {
        let compression = *c.get_compression();
        let compression_level = match compression {
            Codec::Gzip => *c.get_compression_gzip_level(),
            Codec::Lz4 => *c.get_compression_lz4_level(),
            Codec::Zstd => *c.get_compression_zstd_level(),
            _ => None,
        };
        CoreConfig {
            acks: *c.get_acks(),
            idempotent: c.idempotent(),
            transactional: c.transactional(),
            linger: *c.get_linger(),
            batch_size: *c.get_batch_size(),
            buffer_memory: *c.get_buffer_memory(),
            max_request_size: *c.get_max_request_size(),
            max_in_flight: if c.idempotent() {
                (*c.get_max_in_flight_per_partition()).clamp(1, 5)
            } else {
                (*c.get_max_in_flight_per_partition()).max(1)
            },
            compression,
            compression_level,
            delivery_timeout: *c.get_delivery_timeout(),
            retries: *c.get_retries(),
            retry_backoff: *c.client().get_retry_backoff(),
            retry_backoff_max: *c.client().get_retry_backoff_max(),
        }
    }

    /// The largest record batch (and so record) this producer writes.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_request_size.min(MAX_BATCH_BYTES)
    }
}

/// `seq + n`, wrapping at `i32::MAX` to 0 as the broker does.
pub fn next_sequence(seq: i32, n: i32) -> i32 {
    ((i64::from(seq) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

/// Writes producer id, epoch and base sequence into a finished v2 batch and recomputes its CRC.
pub fn patch_batch(bytes: &Bytes, producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
    if bytes.len() < HEADER_LEN {
        return bytes.clone();
    }
    let mut b = BytesMut::with_capacity(bytes.len());
    b.extend_from_slice(bytes);
    (&mut b[43..51]).put_i64(producer_id);
    (&mut b[51..53]).put_i16(epoch);
    (&mut b[53..57]).put_i32(base_sequence);
    let crc = crc32c::crc32c(&b[21..]);
    (&mut b[17..21]).put_u32(crc);
    b.freeze()
}

struct PendingRecord<R> {
    reply: Option<R>,
    timestamp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchState {
    /// Open or sealed, waiting to be sent (again).
    Queued,
    /// In request `req`.
    InFlight { req: u64 },
}

struct Batch<R> {
    id: u64,
    builder: Option<BatchBuilder>,
    bytes: Option<Bytes>,
    records: Vec<PendingRecord<R>>,
    created: Instant,
    /// Bytes counted against `buffer.memory`.
    reserved: usize,
    /// Sequence and producer (id, epoch) the batch was given when first sent.
    seq: Option<(i32, i64, i16)>,
    state: BatchState,
    attempts: u32,
    /// Sealed: no more records go in.
    full: bool,
    /// The (producer id, epoch, base sequence) written in `bytes`, if any.
    stamped: Option<(i64, i16, i32)>,
}

impl<R: Deliver> Batch<R> {
    fn count(&self) -> i32 {
        self.records.len() as i32
    }

    fn fail(&mut self, err: &Error, completed: &mut Completed<R>) {
        for r in &mut self.records {
            if let Some(reply) = r.reply.take() {
                reply.deliver(Err(err.clone()), completed);
            }
        }
    }
}

struct PartitionState<R> {
    /// The topic's name, shared by every [`RecordMetadata`] of the partition.
    topic: Arc<str>,
    /// Size and record count of the last batch sent: a new batch's buffer and record list
    /// start that large.
    last_batch_len: usize,
    last_batch_records: usize,
    queue: VecDeque<Batch<R>>,
    next_seq: i32,
    last_acked_offset: i64,
    in_flight: usize,
    backoff_until: Option<Instant>,
    /// Consecutive failed attempts (for the backoff).
    errors: u32,
    /// The broker acknowledged a batch of ours under the current producer id, so it holds our
    /// producer state for this partition. Until then a single batch is in flight: a broker
    /// that has never seen a producer accepts any first sequence, so if a first batch failed
    /// with a retriable error while the second was in flight, the second would be written and
    /// the first rejected as out of order on its retry.
    confirmed: bool,
    /// This partition waits for a new producer id: a batch with a sequence failed (the broker
    /// expects a sequence the current id will never send), or the broker lost our producer
    /// state. Nothing is sent here until [`Core::set_producer_id`].
    hold: bool,
}

impl<R> Default for PartitionState<R> {
    fn default() -> Self {
        PartitionState {
            topic: Arc::from(""),
            last_batch_len: 0,
            last_batch_records: 0,
            queue: VecDeque::new(),
            next_seq: 0,
            last_acked_offset: 0,
            in_flight: 0,
            backoff_until: None,
            errors: 0,
            confirmed: false,
            hold: false,
        }
    }
}

impl<R> PartitionState<R> {
    /// Retry mode: a batch that already has a sequence waits to be resent; nothing new may go
    /// out until every in-flight batch of the partition is answered.
    fn must_drain(&self) -> bool {
        self.in_flight > 0
            && self
                .queue
                .iter()
                .any(|b| b.state == BatchState::Queued && b.seq.is_some())
    }
}

/// One batch of a [`Transmit`].
#[derive(Debug, Clone)]
pub struct TransmitBatch {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    pub batch_id: u64,
    pub records: Bytes,
}

/// A Produce request to send to `node`.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub node: i32,
    pub req: u64,
    pub batches: Vec<TransmitBatch>,
}

/// What the driver should do after a response.
#[derive(Debug, Default, Clone)]
pub struct ResponseActions {
    pub refresh_metadata: bool,
    /// KIP-951 hints: (topic, partition, leader, leader epoch).
    pub leader_hints: Vec<(String, i32, i32, i32)>,
}

/// Why [`Core::append`] refused a record.
pub enum AppendError {
    /// Not enough buffer memory now; try again later (the record is given back).
    Full(Box<ProducerRecord>),
    /// The record can never be produced.
    Failed(Error),
}

struct InFlightReq {
    batches: Vec<(TopicPartition, Uuid, u64)>,
}

/// The producer's state machine.
pub struct Core<R> {
    cfg: CoreConfig,
    partitioner: Partitioner,
    rng: SeededRng,
    partitions: BTreeMap<TopicPartition, PartitionState<R>>,
    requests: HashMap<u64, InFlightReq>,
    next_batch_id: u64,
    next_req_id: u64,
    buffer_used: usize,
    /// (producer id, epoch), once known.
    producer: Option<(i64, i16)>,
    /// The producer id must be renewed once nothing is in flight.
    need_reset: bool,
    /// Batches with an id up to this are sent without waiting for linger.
    flush_upto: u64,
    closing: bool,
    /// An empty batch that only measures records (`record_size`), made once: a fresh builder
    /// per record cost an allocation each.
    probe: BatchBuilder,
    /// An append opened or sealed a batch since [`Core::take_wake`]: the driver has something
    /// new to schedule (a linger deadline or a batch to send).
    wake: bool,
    /// The partition of the last successful [`Core::append`].
    last_partition: i32,
    /// Transactional producers: batches that failed since [`Core::take_failures`], with
    /// whether the batch had a sequence (the epoch must then be bumped).
    failures: Vec<(Error, bool)>,
    /// Callbacks of completed records ([`Core::take_completed`]).
    completed: Completed<R>,
    /// Buffers of acknowledged batches, reused for new batches (as Java's buffer pool does):
    /// fresh ones cost an allocation and the kernel's zeroing of new pages per batch. Bounded
    /// by [`MAX_SPARE_BUFFERS`] and by a quarter of `buffer.memory` in total.
    spare: Vec<BytesMut>,
    spare_bytes: usize,
    /// See [`Core::take_progress`].
    progressed: bool,
}

/// At most this many batch buffers are kept for reuse.
const MAX_SPARE_BUFFERS: usize = 64;

impl<R: Deliver> Core<R> {
    pub fn new(cfg: CoreConfig, partitioner: Partitioner, seed: u64) -> Core<R> {
        let producer = if cfg.idempotent { None } else { Some((-1, -1)) };
        Core {
            cfg,
            partitioner,
            rng: SeededRng::new(seed),
            partitions: BTreeMap::new(),
            requests: HashMap::new(),
            next_batch_id: 1,
            next_req_id: 1,
            buffer_used: 0,
            producer,
            need_reset: false,
            flush_upto: 0,
            closing: false,
            probe: BatchBuilder::new(BatchOptions::default()),
            wake: false,
            last_partition: -1,
            failures: Vec::new(),
            completed: Vec::new(),
            spare: Vec::new(),
            spare_bytes: 0,
            progressed: false,
        }
    }

    /// Keeps the buffer of an acknowledged batch for a new batch, if no one else holds it and
    /// the pool has room.
    fn recycle(&mut self, bytes: Bytes) {
        if self.spare.len() >= MAX_SPARE_BUFFERS {
            return;
        }
        if let Ok(buf) = bytes.try_into_mut() {
            let cap = buf.capacity();
            if self.spare_bytes + cap <= self.cfg.buffer_memory / 4 {
                self.spare_bytes += cap;
                self.spare.push(buf);
            }
        }
    }

    /// The delivery callbacks of records completed since the last call, with their outcomes.
    /// The caller calls them once it no longer holds the core (a callback may use the
    /// producer).
    pub fn take_completed(&mut self) -> Completed<R> {
        std::mem::take(&mut self.completed)
    }

    /// [`Core::take_completed`] into `out` (empty), which becomes the core's list: the two
    /// lists trade places so that neither is allocated again per response.
    pub fn swap_completed(&mut self, out: &mut Completed<R>) {
        std::mem::swap(&mut self.completed, out);
    }

    /// The partition the last successful [`Core::append`] chose.
    pub fn last_partition(&self) -> i32 {
        self.last_partition
    }

    /// Batches failed since the last call (transactional producers only), each with whether it
    /// had a sequence: the transaction must be aborted, and with a sequence the epoch bumped.
    pub fn take_failures(&mut self) -> Vec<(Error, bool)> {
        std::mem::take(&mut self.failures)
    }

    /// Drops every batch not in flight (an abort: Java's `abortUndrainedBatches`), failing its
    /// records with `err`; batches in flight are left to be answered. Returns whether a dropped
    /// batch had a sequence (it was sent before: the epoch must be bumped).
    pub fn abort_unsent(&mut self, err: &Error) -> bool {
        let mut had_seq = false;
        let mut dropped = Vec::new();
        for (tp, p) in &self.partitions {
            for b in &p.queue {
                if b.state == BatchState::Queued {
                    had_seq |= b.seq.is_some();
                    dropped.push((tp.clone(), b.id));
                }
            }
        }
        for (tp, id) in dropped {
            if let Some(mut b) = self.remove_batch(&tp, id) {
                b.fail(err, &mut self.completed);
            }
        }
        if had_seq {
            self.need_reset = true;
        }
        had_seq
    }

    /// Bytes of buffer memory in use.
    #[cfg(test)]
    pub fn buffer_used(&self) -> usize {
        self.buffer_used
    }

    /// Records not finished yet.
    pub fn pending_records(&self) -> usize {
        self.partitions
            .values()
            .flat_map(|p| p.queue.iter())
            .map(|b| b.records.len())
            .sum()
    }

    /// The id of the newest batch so far (for [`Core::flush`] / [`Core::flushed`]).
    pub fn last_batch_id(&self) -> u64 {
        self.next_batch_id - 1
    }

    /// Sends every batch that exists now without waiting for linger; returns the mark to pass
    /// to [`Core::flushed`].
    pub fn flush(&mut self) -> u64 {
        self.flush_upto = self.last_batch_id();
        self.flush_upto
    }

    /// Whether every batch up to `mark` is finished.
    pub fn flushed(&self, mark: u64) -> bool {
        !self
            .partitions
            .values()
            .flat_map(|p| p.queue.iter())
            .any(|b| b.id <= mark)
    }

    /// From now on, send everything at once (the producer is closing).
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Whether an append since the last call opened or sealed a batch, so the driver must look
    /// again (appends to an open batch change nothing it has scheduled); clears the flag.
    pub fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake)
    }

    /// Requests in flight.
    pub fn in_flight_requests(&self) -> usize {
        self.requests.len()
    }

    /// Whether the driver should send InitProducerId now.
    pub fn needs_producer_id(&self) -> bool {
        self.cfg.idempotent
            && !self.cfg.transactional
            && self.requests.is_empty()
            && (self.producer.is_none() || (self.need_reset && !self.unresolved_sequences()))
    }

    /// Whether a partition that is not on hold still has batches with a sequence of the
    /// current producer id: they are resent under it before the id is renewed.
    fn unresolved_sequences(&self) -> bool {
        self.partitions
            .values()
            .any(|p| !p.hold && p.queue.iter().any(|b| b.seq.is_some()))
    }

    /// The id and epoch to renew to without asking the broker (KIP-360, as Java's idempotent
    /// producer does): the same id with the next epoch. A broker takes sequence 0 at a new,
    /// higher epoch, so this is a fresh start for every partition. `None` when there is no id
    /// yet, no renewal is due, or the epoch is exhausted (then InitProducerId gives a new id).
    pub fn bumped_producer_id(&self) -> Option<(i64, i16)> {
        match self.producer {
            Some((id, epoch)) if self.need_reset && id >= 0 && epoch < i16::MAX - 1 => {
                Some((id, epoch + 1))
            }
            _ => None,
        }
    }

    /// The producer id and epoch in use.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.producer
    }

    /// Installs a (new) producer id: every partition's sequence restarts at 0 and batches that
    /// had a sequence under the old id get a new one when they are resent.
    pub fn set_producer_id(&mut self, producer_id: i64, epoch: i16) {
        let renewed = self.producer.is_some();
        self.producer = Some((producer_id, epoch));
        self.need_reset = false;
        if renewed {
            tracing::debug!(producer_id, epoch, "producer id renewed, sequences reset");
        }
        for p in self.partitions.values_mut() {
            p.next_seq = 0;
            p.last_acked_offset = -1;
            p.confirmed = false;
            p.hold = false;
            for b in &mut p.queue {
                if b.state == BatchState::Queued {
                    b.seq = None;
                }
            }
        }
    }

    /// Fails every pending record with `err` (InitProducerId failed for good, or the producer
    /// is being torn down).
    pub fn fail_all(&mut self, err: &Error) {
        for p in self.partitions.values_mut() {
            for mut b in p.queue.drain(..) {
                b.fail(err, &mut self.completed);
            }
            p.in_flight = 0;
        }
        self.requests.clear();
        self.buffer_used = 0;
        self.progressed = true;
    }

    /// [`Core::append`] with the delivery going to `reply`, which is taken only when the record
    /// was appended (after [`AppendError::Full`] the caller retries with the same one). `now`
    /// is read only when the record opens a batch (a clock read per record is not free).
    pub fn append_with(
        &mut self,
        now: impl FnOnce() -> Instant,
        now_ms: i64,
        num_partitions: i32,
        mut record: ProducerRecord,
        reply: &mut Option<R>,
    ) -> std::result::Result<(), AppendError> {
        let timestamp = record.timestamp.unwrap_or(now_ms);
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()))
            .collect();
        let max = self.cfg.max_batch_bytes();
        // A fresh batch of our own tells the record's size (the timestamp delta is 0).
        let size = match self.probe.record_size(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        ) {
            Ok(n) => n,
            Err(e) => return Err(AppendError::Failed(Error::Encode(e))),
        };
        // Some slack for a larger timestamp delta / offset delta varint inside a batch.
        let worst = size + 16;
        if HEADER_LEN + size > max || HEADER_LEN + worst > self.cfg.buffer_memory {
            return Err(AppendError::Failed(Error::Broker(
                BrokerError::new(ErrorCode::MESSAGE_TOO_LARGE)
                    .with_topic(record.topic.clone())
                    .with_message(format!(
                        "the record takes {} bytes in a batch, more than the {} allowed",
                        HEADER_LEN + size,
                        max.min(self.cfg.buffer_memory)
                    )),
            )));
        }
        let (partition, choice) = match record.partition {
            Some(p) if p >= 0 && p < num_partitions => (p, None),
            Some(p) => {
                return Err(AppendError::Failed(Error::Broker(
                    BrokerError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
                        .with_partition(record.topic.clone(), p),
                )))
            }
            None => {
                let load = PartitionLoad::uniform(num_partitions);
                match self.partitioner.partition(
                    &record.topic,
                    record.key.as_deref(),
                    &load,
                    &mut self.rng,
                ) {
                    Some(c) => (c.partition, Some(c)),
                    None => {
                        return Err(AppendError::Failed(Error::Broker(
                            BrokerError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
                                .with_topic(record.topic.clone())
                                .with_message("the topic has no partitions"),
                        )))
                    }
                }
            }
        };
        // The record's own topic string becomes the key (one search, no copy per record); a
        // record handed back gets it again from the partition's shared name.
        let tp = TopicPartition::new(std::mem::take(&mut record.topic), partition);
        self.last_partition = partition;
        let batch_size = self.cfg.batch_size;
        let part = self
            .partitions
            .entry(tp)
            .or_insert_with_key(|tp| PartitionState {
                topic: Arc::from(tp.topic.as_str()),
                last_acked_offset: -1,
                ..Default::default()
            });
        let topic = part.topic.clone();
        // Does the record go into the open batch?
        let fits_open = part.queue.back().is_some_and(|b| {
            b.state == BatchState::Queued
                && !b.full
                && b.builder.as_ref().is_some_and(|bb| {
                    bb.would_fit(
                        timestamp,
                        record.key.as_deref(),
                        record.value.as_deref(),
                        &headers,
                    ) && bb.estimated_size() + size <= batch_size
                })
        });
        let need = if fits_open { worst } else { HEADER_LEN + worst };
        if self.buffer_used + need > self.cfg.buffer_memory {
            drop(headers);
            record.topic = topic.to_string();
            return Err(AppendError::Full(Box::new(record)));
        }
        if !fits_open {
            if let Some(b) = part.queue.back_mut() {
                b.full = true;
            }
            self.wake = true;
            let options = BatchOptions {
                compression: self.cfg.compression,
                compression_level: self.cfg.compression_level,
                max_batch_bytes: max,
                transactional: self.cfg.transactional,
                ..Default::default()
            };
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            // Room for a batch like the last one (an eighth more), so the buffer rarely grows.
            let capacity = (part.last_batch_len + part.last_batch_len / 8)
                .clamp(HEADER_LEN + 256, batch_size.min(max));
            let buf = match self.spare.pop() {
                Some(mut buf) => {
                    self.spare_bytes -= buf.capacity();
                    // Grown once now rather than step by step while records are appended.
                    buf.clear();
                    buf.reserve(capacity);
                    buf
                }
                None => BytesMut::with_capacity(capacity),
            };
            part.queue.push_back(Batch {
                id,
                builder: Some(BatchBuilder::with_buffer(options, buf)),
                bytes: None,
                records: Vec::with_capacity(part.last_batch_records),
                created: now(),
                reserved: HEADER_LEN,
                seq: None,
                state: BatchState::Queued,
                attempts: 0,
                full: false,
                stamped: None,
            });
            self.buffer_used += HEADER_LEN;
        }
        let Some(batch) = part.queue.back_mut() else {
            return Err(AppendError::Failed(Error::Closed));
        };
        let Some(builder) = batch.builder.as_mut() else {
            return Err(AppendError::Failed(Error::Closed));
        };
        let before = builder.estimated_size();
        if let Err(e) = builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        ) {
            return Err(AppendError::Failed(Error::Encode(e)));
        }
        let added = builder.estimated_size() - before;
        // Full once another record like this one would not fit (Java seals a batch the same
        // way: when the next append does not fit).
        if builder.estimated_size() + size > batch_size {
            batch.full = true;
        }
        let batch_full = batch.full;
        self.wake |= batch_full;
        batch.reserved += added;
        self.buffer_used += added;
        batch.records.push(PendingRecord {
            reply: reply.take(),
            timestamp,
        });
        drop(headers);
        if let Some(c) = choice {
            let load = PartitionLoad::uniform(num_partitions);
            self.partitioner
                .record_appended(&topic, c, added, batch_full, &load, &mut self.rng);
        }
        Ok(())
    }

    fn batch_ready(&self, b: &Batch<R>, now: Instant, behind: bool) -> bool {
        b.bytes.is_some()
            || b.full
            || behind
            || self.closing
            || b.id <= self.flush_upto
            || now >= b.created + self.cfg.linger
    }

    /// The Produce requests to send now, given the current metadata (leaders and topic ids).
    /// Requests to one broker must be written in the order returned.
    pub fn poll_transmit(&mut self, now: Instant, meta: &ClusterMetadata) -> Vec<Transmit> {
        self.poll_transmit_gated(now, meta, |_| true)
    }

    /// [`Core::poll_transmit`] sending only the batches of partitions `may_send` allows (a
    /// transactional producer sends a partition's batches once it is in the transaction).
    pub fn poll_transmit_gated(
        &mut self,
        now: Instant,
        meta: &ClusterMetadata,
        may_send: impl Fn(&TopicPartition) -> bool,
    ) -> Vec<Transmit> {
        let Some((pid, epoch)) = self.producer else {
            return Vec::new();
        };
        // While a renewal of the producer id is pending, only batches that already have a
        // sequence of the current id go out (resends), and none of partitions on hold.
        let resends_only = self.need_reset;
        let acks0 = self.cfg.acks == Acks::None;
        // Per partition: the batches to send, in order.
        let mut picked: Vec<(i32, TopicPartition, Uuid, Vec<u64>)> = Vec::new();
        let keys: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        for tp in keys {
            let Some(topic) = meta.topics.get(&tp.topic) else {
                continue;
            };
            let leader = topic.partition(tp.partition).map_or(-1, |p| p.leader);
            if leader < 0 {
                continue;
            }
            let Some(part) = self.partitions.get(&tp) else {
                continue;
            };
            if part.backoff_until.is_some_and(|t| now < t)
                || part.must_drain()
                || !may_send(&tp)
                || (resends_only && part.hold)
            {
                continue;
            }
            let max_in_flight = if part.confirmed || !self.cfg.idempotent {
                self.cfg.max_in_flight
            } else {
                1
            };
            let mut room = max_in_flight.saturating_sub(part.in_flight);
            let mut ids = Vec::new();
            let n = part.queue.len();
            for (i, b) in part.queue.iter().enumerate() {
                if room == 0 {
                    break;
                }
                if b.state != BatchState::Queued {
                    continue;
                }
                if resends_only && b.seq.is_none() {
                    break;
                }
                if !self.batch_ready(b, now, i + 1 < n) {
                    break;
                }
                ids.push(b.id);
                room -= 1;
            }
            if !ids.is_empty() {
                picked.push((leader, tp, topic.topic_id, ids));
            }
        }
        // Seal, sequence and stamp the picked batches.
        let mut per_node: BTreeMap<i32, Vec<Vec<TransmitBatch>>> = BTreeMap::new();
        for (leader, tp, topic_id, ids) in picked {
            let Some(part) = self.partitions.get_mut(&tp) else {
                continue;
            };
            let mut list = Vec::new();
            let mut failed = Vec::new();
            for id in ids {
                let Some(b) = part.queue.iter_mut().find(|b| b.id == id) else {
                    continue;
                };
                b.full = true;
                // The sequence this batch gets if it has none yet (taken only once its bytes
                // exist).
                let stamp = if self.cfg.idempotent {
                    Some(match b.seq {
                        Some((seq, _, _)) => (pid, epoch, seq),
                        None => (pid, epoch, part.next_seq),
                    })
                } else {
                    None
                };
                if let Some(mut builder) = b.builder.take() {
                    // First send: the header is written with the sequence at once, so the
                    // batch is not copied again to stamp it.
                    if let Some((p, e, seq)) = stamp {
                        builder.set_producer(p, e, seq);
                    }
                    match builder.finish() {
                        Ok(bytes) => {
                            part.last_batch_len = bytes.len();
                            part.last_batch_records = b.records.len();
                            b.bytes = Some(bytes);
                            b.stamped = stamp;
                        }
                        Err(e) => {
                            failed.push((id, Error::Encode(e)));
                            continue;
                        }
                    }
                }
                let Some(bytes) = b.bytes.clone() else {
                    continue;
                };
                if let (None, Some((_, _, seq))) = (b.seq, stamp) {
                    part.next_seq = next_sequence(seq, b.records.len() as i32);
                    b.seq = Some((seq, pid, epoch));
                }
                let records = match stamp {
                    // A resend under a new producer id: restamp (a copy and a new CRC).
                    Some((p, e, seq)) if b.stamped != stamp => {
                        let patched = patch_batch(&bytes, p, e, seq);
                        b.bytes = Some(patched.clone());
                        b.stamped = stamp;
                        patched
                    }
                    _ => bytes,
                };
                b.attempts += 1;
                list.push(TransmitBatch {
                    tp: tp.clone(),
                    topic_id,
                    batch_id: id,
                    records,
                });
            }
            for (id, err) in failed {
                self.finish_batch_err(&tp, id, err);
            }
            let slots = per_node.entry(leader).or_default();
            for (i, tb) in list.into_iter().enumerate() {
                if slots.len() <= i {
                    slots.push(Vec::new());
                }
                slots[i].push(tb);
            }
        }
        // Split into requests under max.request.size: the i-th batches of each partition go in
        // the i-th group, so a partition's batches go out in order and one per request.
        let mut out = Vec::new();
        let limit = self.cfg.max_request_size;
        for (node, groups) in per_node {
            for group in groups {
                let mut cur: Vec<TransmitBatch> = Vec::new();
                let mut size = 0usize;
                for tb in group {
                    let n = tb.records.len() + 64;
                    if !cur.is_empty() && size + n > limit {
                        out.push(self.make_transmit(node, std::mem::take(&mut cur), acks0));
                        size = 0;
                    }
                    size += n;
                    cur.push(tb);
                }
                if !cur.is_empty() {
                    out.push(self.make_transmit(node, cur, acks0));
                }
            }
        }
        out
    }

    fn make_transmit(&mut self, node: i32, batches: Vec<TransmitBatch>, acks0: bool) -> Transmit {
        let req = self.next_req_id;
        self.next_req_id += 1;
        if acks0 {
            // No response will come: the records are done once written.
            for tb in &batches {
                self.finish_batch_ok(&tb.tp, tb.batch_id, -1, -1);
            }
        } else {
            for tb in &batches {
                if let Some(part) = self.partitions.get_mut(&tb.tp) {
                    if let Some(b) = part.queue.iter_mut().find(|b| b.id == tb.batch_id) {
                        b.state = BatchState::InFlight { req };
                        part.in_flight += 1;
                    }
                }
            }
            self.requests.insert(
                req,
                InFlightReq {
                    batches: batches
                        .iter()
                        .map(|tb| (tb.tp.clone(), tb.topic_id, tb.batch_id))
                        .collect(),
                },
            );
        }
        Transmit { node, req, batches }
    }

    fn release(&mut self, reserved: usize) {
        self.buffer_used = self.buffer_used.saturating_sub(reserved);
        self.progressed = true;
    }

    /// Whether a batch finished (acknowledged, failed or dropped: buffer space freed, a flush
    /// may be complete, a failure may be waiting) since the last call. Waking the senders and
    /// flushers only then keeps a sender that waits for space from being woken, finding the
    /// buffer still full and waking the driver again, round after round.
    pub fn take_progress(&mut self) -> bool {
        std::mem::take(&mut self.progressed)
    }

    fn remove_batch(&mut self, tp: &TopicPartition, id: u64) -> Option<Batch<R>> {
        let part = self.partitions.get_mut(tp)?;
        let i = part.queue.iter().position(|b| b.id == id)?;
        let b = part.queue.remove(i)?;
        if matches!(b.state, BatchState::InFlight { .. }) {
            part.in_flight -= 1;
        }
        if part.queue.is_empty() && part.in_flight == 0 {
            part.backoff_until = None;
        }
        self.release(b.reserved);
        Some(b)
    }

    fn finish_batch_ok(&mut self, tp: &TopicPartition, id: u64, base: i64, append_time: i64) {
        let Some(mut b) = self.remove_batch(tp, id) else {
            return;
        };
        let mut topic = None;
        if let Some(part) = self.partitions.get_mut(tp) {
            part.errors = 0;
            part.confirmed = true;
            if base >= 0 {
                part.last_acked_offset =
                    part.last_acked_offset.max(base + i64::from(b.count()) - 1);
            }
            topic = Some(part.topic.clone());
        }
        let topic = topic.unwrap_or_else(|| Arc::from(tp.topic.as_str()));
        if let Some(bytes) = b.bytes.take() {
            self.recycle(bytes);
        }
        for (i, r) in b.records.iter_mut().enumerate() {
            if let Some(reply) = r.reply.take() {
                reply.deliver(
                    Ok(RecordMetadata {
                        topic: topic.clone(),
                        partition: tp.partition,
                        offset: if base >= 0 { base + i as i64 } else { -1 },
                        timestamp: if append_time >= 0 {
                            append_time
                        } else {
                            r.timestamp
                        },
                    }),
                    &mut self.completed,
                );
            }
        }
    }

    /// Fails a batch that was answered (or never sent). If it had a sequence, the broker's
    /// expected sequence no longer matches ours: renew the producer id.
    fn finish_batch_err(&mut self, tp: &TopicPartition, id: u64, err: Error) {
        let Some(mut b) = self.remove_batch(tp, id) else {
            return;
        };
        if b.seq.is_some() && self.cfg.idempotent {
            self.need_reset = true;
            if let Some(part) = self.partitions.get_mut(tp) {
                part.hold = true;
            }
        }
        if self.cfg.transactional {
            self.failures.push((err.clone(), b.seq.is_some()));
        }
        b.fail(&err, &mut self.completed);
    }

    fn requeue(&mut self, now: Instant, tp: &TopicPartition, id: u64) -> bool {
        let cfg_retries = self.cfg.retries;
        let (base, max) = (self.cfg.retry_backoff, self.cfg.retry_backoff_max);
        let Some(part) = self.partitions.get_mut(tp) else {
            return false;
        };
        let Some(b) = part.queue.iter_mut().find(|b| b.id == id) else {
            return false;
        };
        if b.attempts > cfg_retries {
            return false;
        }
        if matches!(b.state, BatchState::InFlight { .. }) {
            part.in_flight -= 1;
        }
        b.state = BatchState::Queued;
        part.errors = part.errors.saturating_add(1);
        let shift = part.errors.saturating_sub(1).min(16);
        let backoff = base.saturating_mul(1u32 << shift).min(max);
        part.backoff_until = Some(now + backoff);
        true
    }

    /// Replaces a partition's backoff by a short one: 20 ms doubling per consecutive error,
    /// at most `retry.backoff.ms`.
    fn short_backoff(&mut self, now: Instant, tp: &TopicPartition) {
        let cap = self.cfg.retry_backoff;
        if let Some(part) = self.partitions.get_mut(tp) {
            let shift = part.errors.saturating_sub(1).min(8);
            let wait = (Duration::from_millis(20) * (1u32 << shift)).min(cap);
            part.backoff_until = Some(now + wait);
        }
    }

    /// Applies the outcome of request `req`: its response, or the error that ended it (a
    /// connection error or timeout: the batches may or may not have been written; they are
    /// resent with the same sequences and the broker deduplicates).
    pub fn handle_response(
        &mut self,
        now: Instant,
        req: u64,
        result: Result<ProduceResponse>,
    ) -> ResponseActions {
        let mut actions = ResponseActions::default();
        let Some(info) = self.requests.remove(&req) else {
            return actions;
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, req, "produce request failed, will retry");
                actions.refresh_metadata = true;
                for (tp, _, id) in info.batches {
                    if !e.is_retriable() || !self.requeue(now, &tp, id) {
                        self.finish_batch_err(&tp, id, e.clone());
                    }
                }
                return actions;
            }
        };
        for (tp, topic_id, id) in info.batches {
            let found = resp
                .responses
                .iter()
                .filter(|t| {
                    (topic_id != Uuid::ZERO && t.topic_id == topic_id) || t.name == *tp.topic
                })
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == tp.partition);
            let Some(p) = found else {
                tracing::debug!(%tp, "partition missing from produce response, will retry");
                if !self.requeue(now, &tp, id) {
                    self.finish_batch_err(&tp, id, Error::Closed);
                }
                continue;
            };
            let code = ErrorCode(p.error_code);
            if p.current_leader.leader_id >= 0 {
                actions.leader_hints.push((
                    tp.topic.clone(),
                    tp.partition,
                    p.current_leader.leader_id,
                    p.current_leader.leader_epoch,
                ));
            }
            if code == ErrorCode::NONE || code == ErrorCode::DUPLICATE_SEQUENCE_NUMBER {
                let base = if code == ErrorCode::NONE {
                    p.base_offset
                } else {
                    -1
                };
                self.finish_batch_ok(&tp, id, base, p.log_append_time_ms);
                continue;
            }
            let err = Error::Broker(
                BrokerError::new(code)
                    .with_partition(tp.topic.clone(), tp.partition)
                    .with_message(
                        p.error_message
                            .as_ref()
                            .map(|m| m.as_str().to_string())
                            .unwrap_or_default(),
                    ),
            );
            if code == ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
                || code == ErrorCode::UNKNOWN_PRODUCER_ID
                || code == ErrorCode::INVALID_PRODUCER_EPOCH
            {
                self.handle_sequence_error(now, &tp, id, code, p.log_start_offset, err);
                continue;
            }
            if matches!(
                code,
                ErrorCode::NOT_LEADER_OR_FOLLOWER
                    | ErrorCode::LEADER_NOT_AVAILABLE
                    | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                    | ErrorCode::FENCED_LEADER_EPOCH
                    | ErrorCode::KAFKA_STORAGE_ERROR
                    | ErrorCode::NOT_ENOUGH_REPLICAS
                    | ErrorCode::REQUEST_TIMED_OUT
            ) {
                actions.refresh_metadata = true;
            }
            if code.is_retriable() && self.requeue(now, &tp, id) {
                if code == ErrorCode::CONCURRENT_TRANSACTIONS {
                    // The previous transaction's markers are still being written (a Produce
                    // that adds its partition implicitly, transactions v2): that takes a few
                    // milliseconds, so retry sooner than retry.backoff.ms (as for
                    // AddPartitionsToTxn).
                    self.short_backoff(now, &tp);
                }
                tracing::debug!(%tp, error = %err, "produce error, will retry");
            } else {
                tracing::warn!(%tp, error = %err, "batch failed");
                self.finish_batch_err(&tp, id, err);
            }
        }
        actions
    }

    /// Applies the failure of request `req` before any of it was written (no connection to
    /// its broker could be had). Its batches are retried (with backoff, within the delivery
    /// timeout) unless `err` is fatal: they were not written, so the broker holds nothing of
    /// them and resending them with the same sequences is safe.
    pub fn handle_unsent(&mut self, now: Instant, req: u64, err: Error) -> ResponseActions {
        let actions = ResponseActions {
            refresh_metadata: true,
            ..Default::default()
        };
        let Some(info) = self.requests.remove(&req) else {
            return actions;
        };
        tracing::debug!(error = %err, req, "produce request not sent, will retry");
        for (tp, _, id) in info.batches {
            if err.is_fatal() || !self.requeue(now, &tp, id) {
                self.finish_batch_err(&tp, id, err.clone());
            }
        }
        actions
    }

    fn handle_sequence_error(
        &mut self,
        now: Instant,
        tp: &TopicPartition,
        id: u64,
        code: ErrorCode,
        log_start_offset: i64,
        err: Error,
    ) {
        if self.cfg.transactional {
            // In a transaction the batch fails and the transaction aborts; the manager bumps
            // the epoch (the broker's sequence state then starts afresh).
            self.finish_batch_err(tp, id, err);
            return;
        }
        let Some(part) = self.partitions.get(tp) else {
            return;
        };
        // Not the first unfinished batch: an earlier batch failed, this one was rejected as a
        // consequence and is resent after it.
        let first = part.queue.front().map(|b| b.id) == Some(id);
        let truncated = part.last_acked_offset < 0
            || (log_start_offset >= 0 && log_start_offset > part.last_acked_offset);
        if !first {
            if !self.requeue(now, tp, id) {
                self.finish_batch_err(tp, id, err);
            }
            return;
        }
        if truncated || code == ErrorCode::INVALID_PRODUCER_EPOCH {
            // KIP-360: the broker lost our producer state (the log start moved past our last
            // acknowledged offset): a new producer id, sequences from 0, resend.
            tracing::debug!(%tp, ?code, log_start_offset, "producer state lost on the broker, renewing producer id");
            self.need_reset = true;
            if let Some(part) = self.partitions.get_mut(tp) {
                part.hold = true;
            }
            if !self.requeue(now, tp, id) {
                self.finish_batch_err(tp, id, err);
            }
            return;
        }
        tracing::warn!(%tp, ?code, "sequence error without truncation: possible data loss, failing batch and renewing producer id");
        self.finish_batch_err(tp, id, err);
        self.need_reset = true;
        if let Some(part) = self.partitions.get_mut(tp) {
            part.hold = true;
        }
    }

    /// Fails batches whose delivery timeout passed, when that is safe: no batch at or behind
    /// them in the partition is in flight. Everything behind a failed batch fails with it.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.cfg.delivery_timeout;
        let mut to_fail: Vec<(TopicPartition, Vec<u64>)> = Vec::new();
        for (tp, part) in &self.partitions {
            // The front batch is the oldest: if it has time left, every batch has.
            if part.queue.front().is_none_or(|b| now < b.created + timeout) {
                continue;
            }
            let start = part
                .queue
                .iter()
                .rposition(|b| matches!(b.state, BatchState::InFlight { .. }))
                .map_or(0, |i| i + 1);
            if let Some(b) = part.queue.get(start) {
                if now >= b.created + timeout {
                    to_fail.push((
                        tp.clone(),
                        part.queue.iter().skip(start).map(|b| b.id).collect(),
                    ));
                }
            }
        }
        for (tp, ids) in to_fail {
            let n = ids.len();
            let mut first = true;
            for id in ids {
                let err = if first {
                    Error::Timeout {
                        what: "delivery (delivery.timeout.ms)",
                        after: timeout,
                    }
                } else {
                    Error::Timeout {
                        what: "delivery of an earlier batch of the partition",
                        after: timeout,
                    }
                };
                first = false;
                self.finish_batch_err(&tp, id, err);
            }
            tracing::warn!(%tp, batches = n, "delivery timeout: batches failed");
        }
    }

    /// When [`Core::poll_transmit`] or [`Core::handle_timeout`] has something to do next
    /// (`None`: nothing pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut upd = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        // Batches are queued in creation order and never reordered, and only the newest one can
        // still be open: the front has the earliest delivery deadline, the back the only linger
        // deadline (this runs after every driver wake-up; scanning every batch was a tenth of
        // the producer's CPU).
        for part in self.partitions.values() {
            if let Some(b) = part.backoff_until {
                upd(b);
            }
            if let Some(b) = part.queue.front() {
                upd(b.created + self.cfg.delivery_timeout);
            }
            if let Some(b) = part.queue.back() {
                if b.state == BatchState::Queued && b.bytes.is_none() && !b.full {
                    upd(b.created + self.cfg.linger);
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl Core<crate::producer::Reply> {
    /// Appends a record to its partition's open batch (or a new one). `num_partitions` is the
    /// topic's partition count; `now_ms` the wall clock for a record without a timestamp.
    pub fn append(
        &mut self,
        now: Instant,
        now_ms: i64,
        num_partitions: i32,
        record: ProducerRecord,
    ) -> std::result::Result<tokio::sync::oneshot::Receiver<Result<RecordMetadata>>, AppendError>
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.append_with(
            || now,
            now_ms,
            num_partitions,
            record,
            &mut Some(crate::producer::Reply::Future(tx)),
        )?;
        Ok(rx)
    }
}
