//! Configuration of an [`EventSource`](crate::EventSource): typed, with documented defaults,
//! validated once by `build()`.

use std::time::Duration;

use kafka_client::config::ClientConfig;

use crate::error::{Error, Result};

/// How outputs, state changes and input offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Exactly once: each transaction carries outputs, changelog records and the input offsets
    /// (KIP-447), committed together or not at all. The default.
    #[default]
    ExactlyOnce,
    /// At least once: outputs and changes are flushed (idempotent producer), then the input
    /// offsets are committed. A crash replays events since the last commit; stores are then
    /// restored from a changelog that may hold the replayed events' changes twice (harmless for
    /// last-value state such as balances written whole, not for increments).
    AtLeastOnce,
}

/// What to do with an event whose routing header names no registered handler (or is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownEventPolicy {
    /// Skip it: no output, no state change, its offset commits; counted in metrics. The default
    /// without a default handler.
    Skip,
    /// Run the default handler (the default when one is registered; `build()` refuses this
    /// policy without one).
    Default,
    /// Fail the instance, as for a handler's `Outcome::Fail`.
    Fail,
}

/// What to do with an event the decoder rejects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Fail the instance: it goes `Unhealthy`, the offset is not committed (the event is read
    /// again by the next owner). The default: a skipped event silently corrupts event-sourced
    /// state.
    #[default]
    Fail,
    /// Skip it (its offset commits), counted in metrics.
    Skip,
    /// Write the input record to this topic, in the same transaction as its offset, with
    /// headers naming the source topic, partition, offset and the error.
    DeadLetter {
        /// The dead-letter topic (must exist).
        topic: String,
    },
}

/// The exactly-once producer pool and its commit rule (STREAMS.md §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EosConfig {
    /// Transactional producers in the pool, 1 to 16. While the oldest transaction commits, the
    /// next ones send on their own producers, so a commit never stalls the output. 3.
    pub pool_size: usize,
    /// How long an open transaction waits for more events after its first one (Nagle). 10 ms.
    pub linger: Duration,
    /// Events (or output records) at which a transaction closes without waiting for `linger`.
    /// 1000.
    pub target_txn_events: usize,
    /// Events at which intake stops until the transaction closes. 10,000.
    pub max_txn_events: usize,
    /// Bytes of outputs and changes at which intake stops (closing starts at half). 16 MiB.
    pub max_txn_bytes: usize,
    /// `transaction.timeout.ms` of the producers: below the session timeout, so a transaction
    /// never outlives its member's session. 10 s.
    pub transaction_timeout: Duration,
    /// How long a closed transaction waits for its events to complete before it is aborted. 5 s.
    pub commit_deadline: Duration,
    /// How long one commit (flush, offsets, EndTxn with the client's retries) may take before
    /// its outcome counts as unknown: the producer then bumps its epoch, which settles the
    /// transaction, and the pool reads the committed offsets to learn which way it went (R11).
    /// The producers' `transaction.end.timeout.ms`; below `transaction_timeout`. 5 s.
    pub commit_timeout: Duration,
    /// Attempts to commit one transaction (abort and re-send in between) before the instance
    /// goes unhealthy. 3.
    pub max_commit_attempts: u32,
    /// Close the on-deck transaction at once when no older transaction is committing, instead
    /// of waiting for `linger` (true Nagle: one event per commit at low load, batches that grow
    /// with load). `false`.
    pub eager_when_idle: bool,
}

impl Default for EosConfig {
    fn default() -> Self {
        EosConfig {
            pool_size: 3,
            linger: Duration::from_millis(10),
            target_txn_events: 1000,
            max_txn_events: 10_000,
            max_txn_bytes: 16 << 20,
            transaction_timeout: Duration::from_secs(10),
            commit_deadline: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(5),
            max_commit_attempts: 3,
            eager_when_idle: false,
        }
    }
}

/// An [`EventSource`](crate::EventSource)'s configuration. [`EventSourceConfig::new`] gives the
/// defaults below; change fields before `build()`.
#[derive(Debug, Clone)]
pub struct EventSourceConfig {
    /// The consumer group (required).
    pub group_id: String,
    /// The source topic (required; it must exist: it is never created implicitly).
    pub topic: String,
    /// Connection settings shared by the consumer, the producers and the admin calls.
    pub client: ClientConfig,
    /// The changelog topic. Default `{group_id}-{topic}-changelog`. Created compacted with the
    /// source's partition count when absent; an existing one with another count is refused.
    pub changelog_topic: Option<String>,
    /// A stable id for this instance: transactional ids are `{group_id}-{instance_id}-{slot}`,
    /// so a restarted instance fences its predecessor's open transactions at once. Also used
    /// as `group.instance.id` (static membership) when [`EventSourceConfig::static_membership`]
    /// is set. Default: a random id per process (logged).
    pub instance_id: Option<String>,
    /// Join as a static member (KIP-345) with `instance_id`: a restart within the session
    /// timeout gets its partitions back without a rebalance. Default false.
    pub static_membership: bool,
    /// Replication factor of created topics. Default: the broker's (`-1`); a warning below 3.
    pub replication_factor: Option<i16>,
    /// The routing header. Default `__grt__` (GKES's, so GKES producers route the same).
    pub routing_header: String,
    /// Unknown event types: default `Skip`, or `Default` when a default handler is registered.
    pub unknown_events: Option<UnknownEventPolicy>,
    /// Undecodable events. Default `Fail`.
    pub decode_errors: ErrorPolicy,
    /// Exactly once (default) or at least once.
    pub guarantee: Guarantee,
    /// The pool and commit rule.
    pub eos: EosConfig,
    /// `session.timeout.ms`. 15 s (above `transaction_timeout`).
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`. 500 ms, so a rebalance is noticed fast.
    pub heartbeat_interval: Duration,
    /// Events queued per partition worker before the partition is paused. 1024.
    pub worker_queue: usize,
    /// Metrics queued for the sink before new ones are dropped (and counted). 4096.
    pub metrics_queue: usize,
    /// How often per-partition metrics (events, lag) and restore progress are emitted. 1 s.
    pub metrics_interval: Duration,
}

impl EventSourceConfig {
    /// The defaults, for `group_id`, `topic` and the cluster `client` connects to.
    pub fn new(
        group_id: impl Into<String>,
        topic: impl Into<String>,
        client: ClientConfig,
    ) -> EventSourceConfig {
        EventSourceConfig {
            group_id: group_id.into(),
            topic: topic.into(),
            client,
            changelog_topic: None,
            instance_id: None,
            static_membership: false,
            replication_factor: None,
            routing_header: "__grt__".to_string(),
            unknown_events: None,
            decode_errors: ErrorPolicy::Fail,
            guarantee: Guarantee::ExactlyOnce,
            eos: EosConfig::default(),
            session_timeout: Duration::from_secs(15),
            heartbeat_interval: Duration::from_millis(500),
            worker_queue: 1024,
            metrics_queue: 4096,
            metrics_interval: Duration::from_secs(1),
        }
    }

    /// The changelog topic's name.
    pub fn changelog(&self) -> String {
        self.changelog_topic
            .clone()
            .unwrap_or_else(|| format!("{}-{}-changelog", self.group_id, self.topic))
    }

    /// Checks everything that can be checked without a broker.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.group_id.is_empty() {
            return bad("group_id is empty".into());
        }
        if self.topic.is_empty() {
            return bad("topic is empty".into());
        }
        if self.routing_header.is_empty() {
            return bad("routing_header is empty".into());
        }
        let e = &self.eos;
        if !(1..=16).contains(&e.pool_size) {
            return bad(format!("eos.pool_size {} is not in 1..=16", e.pool_size));
        }
        if e.linger < Duration::from_millis(1) {
            return bad(format!("eos.linger {:?} is below 1 ms", e.linger));
        }
        if e.target_txn_events == 0 || e.max_txn_events < e.target_txn_events {
            return bad(format!(
                "eos.target_txn_events {} must be >= 1 and <= eos.max_txn_events {}",
                e.target_txn_events, e.max_txn_events
            ));
        }
        if e.max_txn_bytes < 1024 {
            return bad(format!(
                "eos.max_txn_bytes {} is below 1 KiB",
                e.max_txn_bytes
            ));
        }
        if e.commit_timeout < Duration::from_millis(100)
            || (self.guarantee == Guarantee::ExactlyOnce
                && e.commit_timeout >= e.transaction_timeout)
        {
            return bad(format!(
                "eos.commit_timeout {:?} must be at least 100 ms and below \
                 eos.transaction_timeout {:?}",
                e.commit_timeout, e.transaction_timeout
            ));
        }
        if e.max_commit_attempts == 0 {
            return bad("eos.max_commit_attempts is 0".into());
        }
        if self.guarantee == Guarantee::ExactlyOnce && e.transaction_timeout >= self.session_timeout
        {
            return bad(format!(
                "eos.transaction_timeout {:?} must be below session_timeout {:?}: a transaction \
                 must not outlive its member's session",
                e.transaction_timeout, self.session_timeout
            ));
        }
        if self.heartbeat_interval >= self.session_timeout {
            return bad(format!(
                "heartbeat_interval {:?} must be below session_timeout {:?}",
                self.heartbeat_interval, self.session_timeout
            ));
        }
        if self.metrics_queue == 0 {
            return bad("metrics_queue is 0".into());
        }
        if self.metrics_interval < Duration::from_millis(10) {
            return bad(format!(
                "metrics_interval {:?} is below 10 ms",
                self.metrics_interval
            ));
        }
        if self.worker_queue == 0 {
            return bad("worker_queue is 0".into());
        }
        if self.static_membership && self.instance_id.is_none() {
            return bad("static_membership needs an instance_id".into());
        }
        if let ErrorPolicy::DeadLetter { topic } = &self.decode_errors {
            if topic.is_empty() {
                return bad("the dead-letter topic is empty".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EventSourceConfig {
        EventSourceConfig::new("g", "t", ClientConfig::default())
    }

    #[test]
    fn defaults_validate_and_name_the_changelog() {
        let c = cfg();
        c.validate().unwrap();
        assert_eq!(c.changelog(), "g-t-changelog");
        assert_eq!(c.routing_header, "__grt__");
    }

    #[test]
    fn a_transaction_timeout_above_the_session_is_refused() {
        let mut c = cfg();
        c.eos.transaction_timeout = Duration::from_secs(20);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("transaction_timeout"), "{e}");
        c.guarantee = Guarantee::AtLeastOnce;
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        type Change = Box<dyn Fn(&mut EventSourceConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.group_id.clear()), "group_id"),
            (Box::new(|c| c.topic.clear()), "topic"),
            (Box::new(|c| c.eos.pool_size = 0), "pool_size"),
            (Box::new(|c| c.eos.pool_size = 17), "pool_size"),
            (Box::new(|c| c.eos.linger = Duration::ZERO), "linger"),
            (
                Box::new(|c| c.eos.target_txn_events = 0),
                "target_txn_events",
            ),
            (Box::new(|c| c.eos.max_txn_events = 10), "target_txn_events"),
            (
                Box::new(|c| c.eos.max_commit_attempts = 0),
                "max_commit_attempts",
            ),
            (Box::new(|c| c.worker_queue = 0), "worker_queue"),
            (
                Box::new(|c| c.eos.commit_timeout = Duration::from_secs(10)),
                "commit_timeout",
            ),
            (Box::new(|c| c.metrics_queue = 0), "metrics_queue"),
            (
                Box::new(|c| c.metrics_interval = Duration::ZERO),
                "metrics_interval",
            ),
            (Box::new(|c| c.static_membership = true), "instance_id"),
            (
                Box::new(|c| c.heartbeat_interval = Duration::from_secs(20)),
                "heartbeat_interval",
            ),
        ];
        for (change, name) in cases {
            let mut c = cfg();
            change(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }
}
