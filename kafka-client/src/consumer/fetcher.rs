//! The sans-IO core of the consumer: assignment, positions, fetch sessions, the record buffer.
//!
//! Inputs: commands (`assign`, `seek`, `pause`, ...), responses (`handle_fetch_response`,
//! `handle_fetch_error`, `handle_reset`), and `now`. Outputs: which brokers to fetch from
//! (`poll_fetch_brokers`), the request for each (`build_fetch`), which partitions need an offset
//! lookup (`poll_resets`), records for the application (`take_records`), and when to be woken
//! (`poll_timeout`). The tokio driver in `mod.rs` moves these between sockets and this struct.
//!
//! Two offsets per partition: `position` (the next record the application gets) and
//! `fetch_offset` (the next one to fetch; ahead of `position` while records are buffered).
//! A seek bumps the partition's generation so that a response to a fetch sent before the seek is
//! dropped. A group layer drives this with `assign` / `seek` as partitions are assigned/revoked.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::messages::{FetchRequest, FetchResponse};
use kafka_wire::records::ReadOptions;
use kafka_wire::{ErrorCode, KString};

use super::records::decode;
use super::session::{FetchSession, FetchTarget};
use super::ConsumerRecord;
use crate::config::{AutoOffsetReset, ConsumerConfig, IsolationLevel};
use crate::error::{BrokerError, Error, Result};
use crate::metadata::ClusterMetadata;
use crate::proto::is_leader_error;
use crate::types::{Offset, TopicPartition};

/// Something the driver must do for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// The metadata looks stale.
    RefreshMetadata,
    /// KIP-951: the partition's new leader.
    LeaderHint {
        topic: String,
        partition: i32,
        leader: i32,
        epoch: i32,
    },
    /// KIP-951: a broker's address.
    NodeEndpoint {
        node_id: i32,
        host: String,
        port: i32,
        rack: Option<String>,
    },
    /// KIP-219: hold requests to this broker back.
    Throttle(Duration),
}

#[derive(Debug)]
struct Chunk {
    records: VecDeque<ConsumerRecord>,
    next_offset: i64,
    bytes: usize,
}

#[derive(Debug)]
struct PartitionState {
    topic: Arc<str>,
    /// Next offset handed to the application; `None` until reset.
    position: Option<i64>,
    fetch_offset: i64,
    /// Where to reset to when `position` is `None`.
    reset_to: Option<Offset>,
    reset_in_flight: bool,
    generation: u64,
    paused: bool,
    in_flight: bool,
    high_watermark: i64,
    last_stable_offset: i64,
    chunks: VecDeque<Chunk>,
    /// Handed out once the records before it are.
    error: Option<Error>,
    /// Leader epoch of the last record handed out (-1 if none or unknown), for commits.
    last_epoch: i32,
    /// Group assignment: waiting for the committed offset ([`Fetcher::start`]).
    pending: bool,
    /// Being revoked: paused for good, buffer dropped, removed after the revoke hook.
    revoking: bool,
}

#[derive(Debug)]
struct InFlight {
    sent: HashMap<TopicPartition, (i64, u64)>,
}

#[derive(Debug, Default)]
struct BrokerState {
    session: FetchSession,
    in_flight: Option<InFlight>,
    reserved: bool,
    backoff_until: Option<Instant>,
}

/// Fetch settings taken from the consumer config.
#[derive(Debug, Clone)]
pub(crate) struct FetchSettings {
    pub isolation: IsolationLevel,
    pub auto_offset_reset: AutoOffsetReset,
    pub min_bytes: i32,
    pub max_wait: Duration,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    pub max_prefetch_bytes: usize,
    pub retry_backoff: Duration,
    pub read: ReadOptions,
}

impl FetchSettings {
    pub fn from_config(c: &ConsumerConfig) -> FetchSettings {
        let clamp = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        FetchSettings {
            isolation: c.isolation_level,
            auto_offset_reset: c.auto_offset_reset,
            min_bytes: clamp(c.fetch_min_bytes),
            max_wait: c.fetch_max_wait,
            max_bytes: clamp(c.fetch_max_bytes),
            partition_max_bytes: clamp(c.max_partition_fetch_bytes),
            max_prefetch_bytes: c.max_prefetch_bytes,
            retry_backoff: c.client.retry_backoff,
            read: ReadOptions::default(),
        }
    }
}

/// The consumer's state.
#[derive(Debug)]
pub(crate) struct Fetcher {
    settings: FetchSettings,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    brokers: HashMap<i32, BrokerState>,
    buffered_bytes: usize,
    next_generation: u64,
    /// Round-robin start for fairness between partitions.
    rr: usize,
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> Fetcher {
        Fetcher {
            settings,
            partitions: BTreeMap::new(),
            brokers: HashMap::new(),
            buffered_bytes: 0,
            next_generation: 1,
            rr: 0,
        }
    }

    fn default_reset(&self) -> Option<Offset> {
        match self.settings.auto_offset_reset {
            AutoOffsetReset::Earliest => Some(Offset::Earliest),
            AutoOffsetReset::Latest => Some(Offset::Latest),
            AutoOffsetReset::None => None,
        }
    }

    /// Replaces the assignment. Kept partitions keep their position and buffer.
    pub fn assign(&mut self, tps: impl IntoIterator<Item = TopicPartition>) {
        let new: HashSet<TopicPartition> = tps.into_iter().collect();
        let removed: Vec<TopicPartition> = self
            .partitions
            .keys()
            .filter(|tp| !new.contains(*tp))
            .cloned()
            .collect();
        for tp in removed {
            if let Some(p) = self.partitions.remove(&tp) {
                self.buffered_bytes -= p.chunks.iter().map(|c| c.bytes).sum::<usize>();
            }
        }
        let reset = self.default_reset();
        for tp in new {
            if self.partitions.contains_key(&tp) {
                continue;
            }
            let generation = self.bump();
            let error = if reset.is_none() {
                Some(no_offset_error(&tp))
            } else {
                None
            };
            self.partitions.insert(
                tp.clone(),
                PartitionState {
                    topic: Arc::from(tp.topic.as_str()),
                    position: None,
                    fetch_offset: -1,
                    reset_to: reset,
                    reset_in_flight: false,
                    generation,
                    paused: false,
                    in_flight: false,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    chunks: VecDeque::new(),
                    error,
                    last_epoch: -1,
                    pending: false,
                    revoking: false,
                },
            );
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    pub fn is_assigned(&self, tp: &TopicPartition) -> bool {
        self.partitions.contains_key(tp)
    }

    fn clear_buffer(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.partitions.get_mut(tp) {
            let freed: usize = p.chunks.drain(..).map(|c| c.bytes).sum();
            self.buffered_bytes -= freed;
            p.error = None;
        }
    }

    /// Moves the position to `offset`, dropping buffered records.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> bool {
        if !self.partitions.contains_key(tp) {
            return false;
        }
        self.clear_buffer(tp);
        let g = self.bump();
        let p = self.partitions.get_mut(tp).expect("checked above");
        p.position = Some(offset);
        p.fetch_offset = offset;
        p.reset_to = None;
        p.reset_in_flight = false;
        p.generation = g;
        true
    }

    /// Asks for the position to be looked up (`Earliest`, `Latest`, `Timestamp`).
    // For the group layer (a revoked-then-reassigned partition without a committed offset).
    #[allow(dead_code)]
    pub fn request_reset(&mut self, tp: &TopicPartition, to: Offset) -> bool {
        if !self.partitions.contains_key(tp) {
            return false;
        }
        self.clear_buffer(tp);
        let g = self.bump();
        let p = self.partitions.get_mut(tp).expect("checked above");
        p.position = None;
        p.reset_to = Some(to);
        p.reset_in_flight = false;
        p.generation = g;
        true
    }

    pub fn pause(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.partitions.get_mut(tp) {
                p.paused = true;
            }
        }
    }

    pub fn resume(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.partitions.get_mut(tp) {
                p.paused = p.revoking;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The group layer: partitions come and go one rebalance at a time.

    /// Adds group-assigned partitions that wait for their committed offset: neither fetched nor
    /// reset until [`Fetcher::start`]. Partitions already present are left alone (cooperative
    /// rebalancing keeps them).
    pub fn add_pending(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if self.partitions.contains_key(tp) {
                continue;
            }
            let generation = self.bump();
            self.partitions.insert(
                tp.clone(),
                PartitionState {
                    topic: Arc::from(tp.topic.as_str()),
                    position: None,
                    fetch_offset: -1,
                    reset_to: None,
                    reset_in_flight: false,
                    generation,
                    paused: false,
                    in_flight: false,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    chunks: VecDeque::new(),
                    error: None,
                    last_epoch: -1,
                    pending: true,
                    revoking: false,
                },
            );
        }
    }

    /// Whether `tp` still waits for its committed offset (no seek happened meanwhile).
    pub fn is_pending(&self, tp: &TopicPartition) -> bool {
        self.partitions
            .get(tp)
            .is_some_and(|p| p.pending && p.position.is_none() && p.reset_to.is_none())
    }

    /// Starts a pending partition at its committed offset, or at `auto.offset.reset` without
    /// one (an error for the application with `none`).
    pub fn start(&mut self, tp: &TopicPartition, committed: Option<i64>) {
        if !self.is_pending(tp) {
            if let Some(p) = self.partitions.get_mut(tp) {
                p.pending = false;
            }
            return;
        }
        match committed {
            Some(o) if o >= 0 => {
                self.seek(tp, o);
            }
            _ => {
                let reset = self.default_reset();
                if let Some(p) = self.partitions.get_mut(tp) {
                    match reset {
                        Some(to) => p.reset_to = Some(to),
                        None => p.error = Some(no_offset_error(tp)),
                    }
                }
            }
        }
        if let Some(p) = self.partitions.get_mut(tp) {
            p.pending = false;
        }
    }

    /// A pending partition whose committed offset could not be fetched: `err` goes to the
    /// application through poll.
    pub fn fail(&mut self, tp: &TopicPartition, err: Error) {
        if let Some(p) = self.partitions.get_mut(tp) {
            if p.pending && p.position.is_none() {
                p.error = Some(err);
            }
            p.pending = false;
        }
    }

    /// Stops handing out and fetching `tps` for good: drops their buffered records and any
    /// fetch answer in flight. Their positions stay readable until [`Fetcher::remove`].
    pub fn fence(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if !self.partitions.contains_key(tp) {
                continue;
            }
            self.clear_buffer(tp);
            let g = self.bump();
            let p = self.partitions.get_mut(tp).expect("checked above");
            p.generation = g;
            p.paused = true;
            p.revoking = true;
            p.reset_in_flight = false;
        }
    }

    /// Removes `tps`, dropping whatever is buffered for them.
    pub fn remove(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.partitions.remove(tp) {
                self.buffered_bytes -= p.chunks.iter().map(|c| c.bytes).sum::<usize>();
            }
        }
    }

    /// `(partition, position, leader epoch of the last record handed out)` of every partition
    /// with a known position: what `commit_polled` commits.
    pub fn commit_positions(&self) -> Vec<(TopicPartition, i64, i32)> {
        self.partitions
            .iter()
            .filter(|(_, p)| !p.pending)
            .filter_map(|(tp, p)| p.position.map(|o| (tp.clone(), o, p.last_epoch)))
            .collect()
    }

    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions.get(tp)?.position
    }

    /// `high watermark - position` (the last stable offset under read_committed).
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.partitions.get(tp)?;
        let end = match self.settings.isolation {
            IsolationLevel::ReadCommitted => p.last_stable_offset,
            IsolationLevel::ReadUncommitted => p.high_watermark,
        };
        if end < 0 {
            return None;
        }
        Some((end - p.position?).max(0))
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Partitions that need an offset lookup; marks them as being looked up.
    pub fn poll_resets(&mut self) -> Vec<(TopicPartition, Offset, u64)> {
        let mut out = Vec::new();
        for (tp, p) in self.partitions.iter_mut() {
            if p.position.is_none() && !p.reset_in_flight && p.error.is_none() {
                if let Some(to) = p.reset_to {
                    p.reset_in_flight = true;
                    out.push((tp.clone(), to, p.generation));
                }
            }
        }
        out
    }

    /// The result of an offset lookup started by [`Fetcher::poll_resets`].
    pub fn handle_reset(&mut self, tp: &TopicPartition, generation: u64, result: Result<i64>) {
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        if p.generation != generation {
            return;
        }
        p.reset_in_flight = false;
        match result {
            Ok(o) => {
                p.position = Some(o);
                p.fetch_offset = o;
                p.reset_to = None;
            }
            // Retried on the next poll (retriable errors come back after the lookup's own
            // retries); others are handed to the application.
            Err(e) if e.is_retriable() => {}
            Err(e) => p.error = Some(e),
        }
    }

    fn fetchable(&self, p: &PartitionState) -> bool {
        p.position.is_some() && !p.paused && !p.in_flight && p.error.is_none()
    }

    /// Brokers to send a fetch to now: leaders of fetchable partitions with no fetch in flight.
    /// Reserves them; each must get [`Fetcher::build_fetch`] (or [`Fetcher::handle_fetch_error`]).
    pub fn poll_fetch_brokers(&mut self, now: Instant, meta: &ClusterMetadata) -> (Vec<i32>, bool) {
        let mut need_refresh = false;
        if self.buffered_bytes >= self.settings.max_prefetch_bytes {
            return (Vec::new(), false);
        }
        let mut leaders: HashSet<i32> = HashSet::new();
        for (tp, p) in &self.partitions {
            if !self.fetchable(p) {
                continue;
            }
            match meta
                .topic(&tp.topic)
                .and_then(|t| t.partition(tp.partition))
            {
                Some(pm) if pm.leader >= 0 => {
                    leaders.insert(pm.leader);
                }
                _ => need_refresh = true,
            }
        }
        let mut out = Vec::new();
        for id in leaders {
            let b = self.brokers.entry(id).or_default();
            if b.reserved || b.in_flight.is_some() {
                continue;
            }
            if b.backoff_until.is_some_and(|t| t > now) {
                continue;
            }
            b.reserved = true;
            out.push(id);
        }
        out.sort_unstable();
        (out, need_refresh)
    }

    /// The fetch for `node` at `version`, or `None` if there is nothing to fetch there any more.
    pub fn build_fetch(
        &mut self,
        node: i32,
        version: i16,
        meta: &ClusterMetadata,
    ) -> Option<FetchRequest> {
        let mut wanted: BTreeMap<TopicPartition, FetchTarget> = BTreeMap::new();
        let mut sent = HashMap::new();
        for (tp, p) in self.partitions.iter_mut() {
            if p.position.is_none() || p.paused || p.in_flight || p.error.is_some() {
                continue;
            }
            let Some(t) = meta.topic(&tp.topic) else {
                continue;
            };
            let Some(pm) = t.partition(tp.partition) else {
                continue;
            };
            if pm.leader != node {
                continue;
            }
            if version >= 13 && t.topic_id == kafka_wire::Uuid::ZERO {
                continue;
            }
            wanted.insert(
                tp.clone(),
                FetchTarget {
                    topic_id: t.topic_id,
                    fetch_offset: p.fetch_offset,
                    current_leader_epoch: if version >= 9 { pm.leader_epoch } else { -1 },
                    max_bytes: self.settings.partition_max_bytes,
                },
            );
            p.in_flight = true;
            sent.insert(tp.clone(), (p.fetch_offset, p.generation));
        }
        let b = self.brokers.entry(node).or_default();
        b.reserved = false;
        if wanted.is_empty() {
            return None;
        }
        let plan = b.session.build(&wanted, version);
        b.in_flight = Some(InFlight { sent });
        Some(FetchRequest {
            replica_id: -1,
            max_wait_ms: i32::try_from(self.settings.max_wait.as_millis()).unwrap_or(i32::MAX),
            min_bytes: self.settings.min_bytes,
            max_bytes: self.settings.max_bytes,
            isolation_level: self.settings.isolation.wire_value(),
            session_id: plan.session_id,
            session_epoch: plan.session_epoch,
            topics: plan.topics,
            forgotten_topics_data: plan.forgotten,
            rack_id: KString::new(),
            ..Default::default()
        })
    }

    fn release(&mut self, node: i32) -> Option<InFlight> {
        let b = self.brokers.entry(node).or_default();
        b.reserved = false;
        let inflight = b.in_flight.take()?;
        for tp in inflight.sent.keys() {
            if let Some(p) = self.partitions.get_mut(tp) {
                p.in_flight = false;
            }
        }
        Some(inflight)
    }

    /// The fetch to `node` failed (or could not be sent).
    pub fn handle_fetch_error(&mut self, node: i32, now: Instant, err: &Error) {
        tracing::debug!(node, error = %err, "fetch failed");
        self.release(node);
        let backoff = self.settings.retry_backoff;
        let b = self.brokers.entry(node).or_default();
        b.session.handle_error();
        b.backoff_until = Some(now + backoff);
    }

    /// A fetch response from `node`.
    pub fn handle_fetch_response(
        &mut self,
        node: i32,
        now: Instant,
        resp: FetchResponse,
        meta: &ClusterMetadata,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if resp.throttle_time_ms > 0 {
            actions.push(Action::Throttle(Duration::from_millis(
                resp.throttle_time_ms as u64,
            )));
        }
        for ep in &resp.node_endpoints {
            actions.push(Action::NodeEndpoint {
                node_id: ep.node_id,
                host: ep.host.as_str().to_string(),
                port: ep.port,
                rack: ep.rack.as_ref().map(|r| r.as_str().to_string()),
            });
        }
        let Some(inflight) = self.release(node) else {
            return actions;
        };
        let usable = self
            .brokers
            .entry(node)
            .or_default()
            .session
            .handle_response(resp.error_code, resp.session_id);
        if !usable {
            let code = ErrorCode(resp.error_code);
            tracing::debug!(node, %code, "fetch failed as a whole");
            if !matches!(
                code,
                ErrorCode::FETCH_SESSION_ID_NOT_FOUND | ErrorCode::INVALID_FETCH_SESSION_EPOCH
            ) {
                self.brokers.entry(node).or_default().backoff_until =
                    Some(now + self.settings.retry_backoff);
                actions.push(Action::RefreshMetadata);
            }
            return actions;
        }
        let mut refresh = false;
        for t in resp.responses {
            let name: String = if t.topic.as_str().is_empty() {
                match meta.topic_name(t.topic_id) {
                    Some(n) => n.to_string(),
                    None => {
                        refresh = true;
                        continue;
                    }
                }
            } else {
                t.topic.as_str().to_string()
            };
            for pd in t.partitions {
                let tp = TopicPartition::new(name.clone(), pd.partition_index);
                let Some(&(sent_offset, generation)) = inflight.sent.get(&tp) else {
                    continue;
                };
                let read = self.settings.read;
                let isolation = self.settings.isolation;
                let policy = self.default_reset();
                let Some(p) = self.partitions.get_mut(&tp) else {
                    continue;
                };
                if p.generation != generation || p.fetch_offset != sent_offset {
                    continue;
                }
                let code = ErrorCode(pd.error_code);
                if code == ErrorCode::NONE {
                    if pd.high_watermark >= 0 {
                        p.high_watermark = pd.high_watermark;
                    }
                    if pd.last_stable_offset >= 0 {
                        p.last_stable_offset = pd.last_stable_offset;
                    }
                    let Some(bytes) = pd.records.filter(|b| !b.is_empty()) else {
                        continue;
                    };
                    let size = bytes.len();
                    let d = decode(
                        &p.topic,
                        tp.partition,
                        sent_offset,
                        bytes,
                        pd.aborted_transactions.as_deref(),
                        isolation,
                        &read,
                    );
                    p.fetch_offset = d.next_offset.max(sent_offset);
                    if d.error.is_some() {
                        p.error = d.error;
                    }
                    p.chunks.push_back(Chunk {
                        records: d.records.into(),
                        next_offset: p.fetch_offset,
                        bytes: size,
                    });
                    self.buffered_bytes += size;
                    continue;
                }
                if code == ErrorCode::OFFSET_OUT_OF_RANGE {
                    let g = self.next_generation + 1;
                    self.next_generation = g;
                    let freed: usize = p.chunks.drain(..).map(|c| c.bytes).sum();
                    self.buffered_bytes -= freed;
                    p.generation = g;
                    match policy {
                        Some(to) => {
                            tracing::info!(%tp, offset = sent_offset, ?to, "offset out of range; resetting");
                            p.position = None;
                            p.reset_to = Some(to);
                            p.reset_in_flight = false;
                        }
                        None => {
                            p.error = Some(Error::Broker(
                                BrokerError::new(code)
                                    .with_partition(tp.topic.clone(), tp.partition)
                                    .with_offset(sent_offset),
                            ));
                        }
                    }
                    continue;
                }
                if is_leader_error(code)
                    || code == ErrorCode::UNKNOWN_TOPIC_ID
                    || code == ErrorCode::INCONSISTENT_TOPIC_ID
                {
                    refresh = true;
                    if pd.current_leader.leader_id >= 0 && pd.current_leader.leader_epoch >= 0 {
                        actions.push(Action::LeaderHint {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            leader: pd.current_leader.leader_id,
                            epoch: pd.current_leader.leader_epoch,
                        });
                    }
                    continue;
                }
                if code.is_retriable() {
                    continue;
                }
                p.error = Some(Error::Broker(
                    BrokerError::new(code)
                        .with_partition(tp.topic.clone(), tp.partition)
                        .with_offset(sent_offset),
                ));
            }
        }
        if refresh {
            actions.push(Action::RefreshMetadata);
        }
        actions
    }

    /// The open sessions (broker, session id), forgotten here; the driver tells each broker to
    /// close its session with a sessionless fetch at the final epoch (KIP-227).
    pub fn take_sessions(&mut self) -> Vec<(i32, i32)> {
        let mut out: Vec<(i32, i32)> = self
            .brokers
            .iter()
            .filter(|(_, b)| b.session.id() != super::session::INVALID_SESSION_ID)
            .map(|(n, b)| (*n, b.session.id()))
            .collect();
        out.sort_unstable();
        for b in self.brokers.values_mut() {
            b.session = FetchSession::new();
        }
        out
    }

    /// When the driver should call in again even if nothing arrives (a broker backoff ends).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.brokers
            .values()
            .filter_map(|b| b.backoff_until)
            .filter(|t| *t > now)
            .min()
    }

    /// Whether there are records (or an error) to hand out.
    pub fn has_ready(&self) -> bool {
        self.partitions.values().any(|p| {
            !p.paused && (p.chunks.iter().any(|c| !c.records.is_empty()) || p.error.is_some())
        })
    }

    /// Up to `max` records, round-robin over unpaused partitions, advancing positions. An error
    /// of a partition comes out once the records before it are out (alone).
    pub fn take_records(&mut self, max: usize) -> Result<Vec<ConsumerRecord>> {
        let mut out = Vec::new();
        let n = self.partitions.len();
        if n == 0 {
            return Ok(out);
        }
        let start = self.rr % n;
        self.rr = self.rr.wrapping_add(1);
        let keys: Vec<TopicPartition> = self
            .partitions
            .keys()
            .cycle()
            .skip(start)
            .take(n)
            .cloned()
            .collect();
        for tp in keys {
            let p = self.partitions.get_mut(&tp).expect("key from the map");
            if p.paused {
                continue;
            }
            while out.len() < max {
                let Some(chunk) = p.chunks.front_mut() else {
                    break;
                };
                match chunk.records.pop_front() {
                    Some(r) => {
                        p.position = Some(r.offset + 1);
                        p.last_epoch = r.leader_epoch.unwrap_or(-1);
                        out.push(r);
                    }
                    None => {
                        p.position = Some(chunk.next_offset);
                        self.buffered_bytes -= chunk.bytes;
                        p.chunks.pop_front();
                    }
                }
            }
            // Drop drained chunks now so positions move past trailing control/aborted batches.
            while p.chunks.front().is_some_and(|c| c.records.is_empty()) {
                let c = p.chunks.pop_front().expect("front exists");
                p.position = Some(c.next_offset);
                self.buffered_bytes -= c.bytes;
            }
            if p.chunks.is_empty() && p.error.is_some() {
                if out.is_empty() {
                    return Err(p.error.take().expect("checked"));
                }
                break;
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

fn no_offset_error(tp: &TopicPartition) -> Error {
    Error::Broker(
        BrokerError::new(ErrorCode::OFFSET_OUT_OF_RANGE)
            .with_partition(tp.topic.clone(), tp.partition)
            .with_message("no position and auto.offset.reset=none; seek first"),
    )
}

#[cfg(test)]
mod tests;
