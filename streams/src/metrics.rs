//! Metrics through a non-blocking sink.
//!
//! An [`EventSource`](crate::EventSource) hands each [`Metric`] to a bounded queue and goes on;
//! one thread per event source (`streams-metrics`) drains the queue into your
//! [`MetricsSink`]. A slow or blocking sink therefore never slows processing: when the queue is
//! full the metric is dropped and counted ([`Stats::metrics_dropped`](crate::Stats)).
//!
//! ```
//! use std::sync::Arc;
//! use streams::metrics::{Metric, MetricsSink};
//!
//! struct Log;
//! impl MetricsSink for Log {
//!     fn record(&self, metric: Metric) {
//!         if let Metric::TxnCommitted(t) = metric {
//!             println!("{} events in {:?}", t.events, t.commit_time);
//!         }
//!     }
//! }
//! let sink: Arc<dyn MetricsSink> = Arc::new(Log);
//! # let _ = sink;
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Receives metrics, on the event source's metrics thread (never on a processing task).
pub trait MetricsSink: Send + Sync + 'static {
    /// One metric. May block: the event source does not wait for it.
    fn record(&self, metric: Metric);
}

/// A committed transaction (STREAMS.md §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxnCommitted {
    /// Its sequence number (per process).
    pub seq: u64,
    /// The producer slot it ran on.
    pub slot: usize,
    /// Events it carried.
    pub events: u64,
    /// Records it wrote (outputs and changelog).
    pub records: usize,
    /// Bytes of keys, values and headers it wrote.
    pub bytes: usize,
    /// Input partitions it committed offsets for.
    pub partitions: usize,
    /// From its first event until it closed.
    pub linger: Duration,
    /// From the commit's start (offsets, EndTxn) to its answer.
    pub commit_time: Duration,
    /// Attempts, this one included (more than 1: aborted and re-sent).
    pub attempts: u32,
}

impl TxnCommitted {
    pub(crate) fn new(
        seq: u64,
        slot: usize,
        info: &crate::eos::TxnInfo,
        commit_time: Duration,
    ) -> TxnCommitted {
        TxnCommitted {
            seq,
            slot,
            events: info.events,
            records: info.records,
            bytes: info.bytes,
            partitions: info.partitions,
            linger: info.linger,
            commit_time,
            attempts: info.attempts,
        }
    }
}

/// Why an event was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// No route for its type (`UnknownEventPolicy::Skip`).
    UnknownType,
    /// Undecodable, skipped (`ErrorPolicy::Skip`).
    Undecodable,
    /// Undecodable, written to the dead-letter topic.
    DeadLettered,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Metric {
    /// A transaction committed.
    TxnCommitted(TxnCommitted),
    /// An attempt of a transaction failed; it was aborted and its records are re-sent.
    TxnRetried {
        /// The transaction.
        seq: u64,
        /// The failed attempt (1-based).
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// A commit's outcome was unknown and was resolved by reading the committed offsets.
    OutcomeResolved {
        /// The transaction.
        seq: u64,
        /// It had committed (else it had aborted and is re-sent).
        committed: bool,
    },
    /// Restore progress of a partition (about once per `metrics_interval`).
    RestoreProgress {
        /// The partition.
        partition: i32,
        /// Changelog records applied so far.
        records: u64,
        /// The changelog position reached.
        position: i64,
        /// The changelog offset the restore runs to.
        end: i64,
    },
    /// A partition's store is restored; processing starts.
    Restored {
        /// The partition.
        partition: i32,
        /// Changelog records applied.
        records: u64,
        /// How long it took.
        elapsed: Duration,
    },
    /// Per assigned partition, once per `metrics_interval`.
    Partition {
        /// The partition.
        partition: i32,
        /// Events handled on it since it was assigned.
        events: u64,
        /// Records between the consumer's position and the high watermark, when known.
        lag: Option<i64>,
    },
    /// An event was skipped.
    Skipped {
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why.
        reason: SkipReason,
    },
}

/// The sending side: never blocks, counts what it drops.
pub(crate) struct Emitter {
    tx: Option<SyncSender<Metric>>,
    dropped: Arc<AtomicU64>,
}

impl Emitter {
    /// Starts the metrics thread for `sink` (none: metrics are not built at all).
    pub(crate) fn new(sink: Option<Arc<dyn MetricsSink>>, queue: usize) -> Emitter {
        let dropped = Arc::new(AtomicU64::new(0));
        let Some(sink) = sink else {
            return Emitter { tx: None, dropped };
        };
        let (tx, rx) = sync_channel::<Metric>(queue.max(1));
        let spawned = std::thread::Builder::new()
            .name("streams-metrics".into())
            .spawn(move || {
                while let Ok(m) = rx.recv() {
                    // A panicking sink loses that metric, not the thread.
                    let s = &sink;
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.record(m)))
                        .is_err()
                    {
                        tracing::warn!("the metrics sink panicked");
                    }
                }
            });
        match spawned {
            Ok(_) => Emitter {
                tx: Some(tx),
                dropped,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the metrics thread; metrics are off");
                Emitter { tx: None, dropped }
            }
        }
    }

    /// Whether a sink listens (build metrics only then).
    pub(crate) fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `metric` (built only when a sink listens); drops it when the queue is full.
    pub(crate) fn emit(&self, metric: impl FnOnce() -> Metric) {
        if let Some(tx) = &self.tx {
            match tx.try_send(metric()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Metrics dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    struct Slow(Mutex<Vec<Metric>>);
    impl MetricsSink for Slow {
        fn record(&self, metric: Metric) {
            std::thread::sleep(Duration::from_millis(200));
            self.0.lock().unwrap().push(metric);
        }
    }

    fn skipped(offset: i64) -> Metric {
        Metric::Skipped {
            partition: 0,
            offset,
            reason: SkipReason::UnknownType,
        }
    }

    #[test]
    fn a_blocking_sink_never_blocks_the_emitter_and_drops_are_counted() {
        let sink = Arc::new(Slow(Mutex::new(Vec::new())));
        let e = Emitter::new(Some(sink.clone()), 4);
        let start = Instant::now();
        for i in 0..1000 {
            e.emit(|| skipped(i));
        }
        // Blocking on the sink would take 200 ms per metric (over 3 minutes).
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "emit blocked for {:?}",
            start.elapsed()
        );
        // At most the queue plus the one being recorded got through.
        assert!(e.dropped() >= 1000 - 5, "dropped {}", e.dropped());
    }

    #[test]
    fn without_a_sink_nothing_is_built() {
        let e = Emitter::new(None, 4);
        assert!(!e.enabled());
        e.emit(|| unreachable!("not built without a sink"));
        assert_eq!(e.dropped(), 0);
    }

    /// Panics on its first call, then counts.
    struct PanicsOnce(AtomicU64);
    impl MetricsSink for PanicsOnce {
        fn record(&self, _: Metric) {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("sink bug (expected by this test)");
            }
        }
    }

    #[test]
    fn a_panicking_sink_keeps_the_thread() {
        let sink = Arc::new(PanicsOnce(AtomicU64::new(0)));
        let e = Emitter::new(Some(sink.clone()), 8);
        e.emit(|| skipped(0));
        e.emit(|| skipped(1));
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink.0.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the second metric never came");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(e.dropped(), 0);
    }
}
