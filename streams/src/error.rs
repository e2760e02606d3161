//! The streams crate's error type.

use std::sync::Arc;

use crate::store::StoreError;

/// What can go wrong building or running an [`EventSource`](crate::EventSource).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An invalid configuration, or topics that do not fit it (a changelog whose partition count
    /// differs from the source's, ...). Found at `build()`.
    #[error("configuration: {0}")]
    Config(String),
    /// The Kafka client failed.
    #[error(transparent)]
    Client(#[from] kafka_client::Error),
    /// A partition's store could not be restored from its changelog.
    #[error("restoring partition {partition}: {source}")]
    Restore {
        /// The input partition.
        partition: i32,
        /// What the store reported.
        source: StoreError,
    },
    /// A handler failed an event (or panicked), or an event could not be decoded under the
    /// `Fail` policy.
    #[error("partition {partition} offset {offset}: {reason}")]
    Processing {
        /// The input partition.
        partition: i32,
        /// The event's offset.
        offset: i64,
        /// What happened.
        reason: Arc<str>,
    },
    /// Another process runs with our transactional id (same instance id): this one stops.
    #[error("fenced: another instance uses this instance id ({0})")]
    Fenced(Arc<kafka_client::Error>),
    /// A transaction could not be committed after every attempt.
    #[error("transaction {seq} failed after {attempts} attempts: {last}")]
    Commit {
        /// The transaction's sequence number.
        seq: u64,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Arc<str>,
    },
    /// Events of a closed transaction did not complete within `eos.commit_deadline` (a handler
    /// that returned `Incomplete` never completed, or too slowly).
    #[error(
        "{incomplete} event(s) of transaction {seq} did not complete within {deadline:?} \
         (the oldest: partition {partition} offset {offset})"
    )]
    SlowEvents {
        /// The transaction's sequence number.
        seq: u64,
        /// The oldest incomplete event's input partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Events still incomplete.
        incomplete: usize,
        /// `eos.commit_deadline`.
        deadline: std::time::Duration,
    },
    /// The event source was stopped.
    #[error("the event source is stopped")]
    Stopped,
}

impl Error {
    /// A client error, as [`Error::Fenced`] when another instance took over.
    pub(crate) fn client(e: kafka_client::Error) -> Error {
        if matches!(e, kafka_client::Error::Fenced(_)) {
            Error::Fenced(Arc::new(e))
        } else {
            Error::Client(e)
        }
    }

    /// Whether another instance took over (R8).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced(_))
    }
}

/// `Result` with the streams [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
