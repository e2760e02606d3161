//! The client error type.
//!
//! Split by *who* is at fault, the way rustls and tokio-postgres do it:
//!
//! | variant                | meaning                                                        |
//! |------------------------|----------------------------------------------------------------|
//! | [`Error::Broker`]      | the broker answered with an error code (with topic/partition)  |
//! | [`Error::Protocol`]    | a broken peer: bytes we cannot decode or a protocol violation  |
//! | [`Error::Io`]          | the connection failed                                          |
//! | [`Error::Timeout`]     | a deadline passed                                              |
//! | [`Error::Closed`]      | the client (or the connection) was shut down                   |
//! | [`Error::Config`]      | the configuration is invalid                                   |
//! | [`Error::Misuse`]      | the API was called wrongly (e.g. commit outside a transaction) |
//! | [`Error::Fenced`]      | a newer instance took over this producer or group member       |
//! | [`Error::Sasl`]        | authentication failed on our side of the exchange              |
//! | [`Error::Aborted`]     | the record's transaction was aborted before the record was sent |
//! | [`Error::OutcomeUnknown`] | a commit got no definite answer: treat it as not committed  |
//! | [`Error::Unsupported`] | the broker lacks an API version a feature needs                |
//!
//! [`Error::is_retriable`] tells whether retrying the same operation may succeed;
//! [`Error::is_fatal`] whether the producer/consumer instance must be dropped (or re-initialized).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::{DecodeError, EncodeError, ErrorCode};

use crate::config::ConfigError;
use crate::sasl::SaslError;

/// `Result` with the client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the client.
///
/// Cheap to clone (one failure is often reported to many waiting records).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker answered with a non-zero error code.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The peer broke the protocol: a response we cannot decode, a wrong correlation id, a missing
    /// partition in a response, ...
    #[error("protocol violation by {peer}: {kind}")]
    Protocol { peer: Peer, kind: ProtocolErrorKind },
    /// A request could not be encoded (a field unsupported by the negotiated version, a record too
    /// large); nothing was sent.
    #[error("could not encode request: {0}")]
    Encode(#[from] EncodeError),
    /// The connection to a broker failed.
    #[error("I/O error with {peer}: {source}")]
    Io {
        peer: Peer,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A deadline passed before `what` completed.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: &'static str, after: Duration },
    /// The client, or the connection the request was on, is shut down.
    #[error("client closed")]
    Closed,
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API was used in a way it does not allow.
    #[error("API misuse: {0}")]
    Misuse(String),
    /// Another instance with the same transactional id, producer epoch or group instance id took
    /// over. Permanent for this instance.
    #[error("fenced: {0}")]
    Fenced(BrokerError),
    /// SASL authentication failed on the client side (the broker's own rejection arrives as
    /// [`Error::Broker`] with `SASL_AUTHENTICATION_FAILED`).
    #[error(transparent)]
    Sasl(#[from] SaslError),
    /// The record's transaction was aborted before the record was sent: it was never written.
    #[error("transaction aborted before the record was sent")]
    Aborted,
    /// A transaction commit got no definite answer (the coordinator may have committed or
    /// aborted it). Never a commit to rely on: rewind to the committed offsets and read with
    /// `read_committed`. The producer is ready for a new transaction.
    #[error("transaction outcome unknown: {0}")]
    OutcomeUnknown(Arc<Error>),
    /// The broker does not speak a version of `api` that `feature` needs (an older Kafka, or
    /// another implementation such as Redpanda). Permanent for this broker build.
    #[error("{peer} cannot serve {feature}: it needs {api} {need}, the broker offers {}", fmt_range(*broker_range))]
    Unsupported {
        /// The broker.
        peer: Peer,
        /// The API's name, e.g. `ConsumerGroupHeartbeat`.
        api: &'static str,
        /// The versions the feature needs, e.g. `v0-v1` or `v5+`.
        need: String,
        /// The versions the broker advertised for `api` (`None`: not at all).
        broker_range: Option<(i16, i16)>,
        /// What was asked for, e.g. `the consumer group protocol (KIP-848)`.
        feature: String,
    },
}

fn fmt_range(range: Option<(i16, i16)>) -> String {
    match range {
        Some((lo, hi)) => format!("v{lo}-v{hi}"),
        None => "no version of it".to_string(),
    }
}

impl Error {
    /// An [`Error::Io`] for `peer`.
    pub fn io(peer: Peer, source: std::io::Error) -> Error {
        Error::Io {
            peer,
            source: Arc::new(source),
        }
    }

    /// An [`Error::Protocol`] for a decode error from `peer`.
    pub fn decode(peer: Peer, err: DecodeError) -> Error {
        Error::Protocol {
            peer,
            kind: ProtocolErrorKind::Decode(err),
        }
    }

    /// Whether the same operation may succeed if tried again (after a metadata refresh, a
    /// reconnect or a backoff).
    ///
    /// - broker errors: as Kafka classifies the code (`RetriableException` in Java);
    /// - I/O errors and timeouts: yes (a new connection may work; for writes, idempotence
    ///   decides whether a retry is safe, not this predicate), except a failed TLS handshake
    ///   (a certificate the client does not trust will not become trusted by retrying);
    /// - protocol violations: no (retrying against the same broker build repeats the violation;
    ///   the connection is dropped and the error surfaced);
    /// - everything else: no.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker(b) => b.is_retriable(),
            // A TLS handshake failure (an untrusted or mismatched certificate: rustls reports
            // it as InvalidData) repeats on every attempt; other I/O errors may not.
            Error::Io { source, .. } => source.kind() != std::io::ErrorKind::InvalidData,
            Error::Timeout { .. } => true,
            Error::Protocol { .. }
            | Error::Encode(_)
            | Error::Closed
            | Error::Config(_)
            | Error::Misuse(_)
            | Error::Fenced(_)
            | Error::Sasl(_)
            | Error::Aborted
            | Error::OutcomeUnknown(_)
            | Error::Unsupported { .. } => false,
        }
    }

    /// Whether the instance that got this error cannot go on and must be dropped (or, for a
    /// transactional producer, re-initialized): fencing, authentication/authorization failures
    /// that concern the whole instance, an invalid configuration, or a closed client.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Fenced(_) | Error::Config(_) | Error::Closed | Error::Sasl(_) => true,
            Error::Broker(b) => b.is_fatal(),
            Error::Protocol { .. }
            | Error::Encode(_)
            | Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Misuse(_)
            | Error::Aborted
            | Error::OutcomeUnknown(_)
            | Error::Unsupported { .. } => false,
        }
    }

    /// The broker error code, for [`Error::Broker`] and [`Error::Fenced`].
    pub fn broker_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker(b) | Error::Fenced(b) => Some(b.code),
            _ => None,
        }
    }
}

/// Which end of a connection an error concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// A broker known by its node id (and address).
    Broker { node_id: i32, addr: String },
    /// A bootstrap server, before its node id is known.
    Bootstrap { addr: String },
    /// Not known (for example an error before any connection was made).
    Unknown,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Broker { node_id, addr } => write!(f, "broker {node_id} ({addr})"),
            Peer::Bootstrap { addr } => write!(f, "bootstrap server {addr}"),
            Peer::Unknown => f.write_str("unknown peer"),
        }
    }
}

/// How a peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolErrorKind {
    /// Its bytes did not decode.
    #[error(transparent)]
    Decode(DecodeError),
    /// A response carried a correlation id we did not expect.
    #[error("unexpected correlation id {got} (expected {expected})")]
    CorrelationId { expected: i32, got: i32 },
    /// A response was well-formed but made no sense (a partition we did not ask about, ...).
    #[error("{0}")]
    Invalid(String),
}

/// An error code returned by a broker, with the context it concerns.
///
/// `code` is the raw wire value, so codes newer than this client survive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerError {
    /// The Kafka error code (never 0).
    pub code: ErrorCode,
    /// The error message the broker sent, if any.
    pub message: Option<String>,
    /// The topic concerned, if any.
    pub topic: Option<String>,
    /// The partition concerned, if any.
    pub partition: Option<i32>,
    /// The offset concerned, if any.
    pub offset: Option<i64>,
    /// The group or transactional id concerned, if any.
    pub group: Option<String>,
}

impl BrokerError {
    /// An error with `code` and no context.
    pub fn new(code: impl Into<ErrorCode>) -> BrokerError {
        BrokerError {
            code: code.into(),
            message: None,
            topic: None,
            partition: None,
            offset: None,
            group: None,
        }
    }

    /// Adds the broker's message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Adds the topic and partition.
    pub fn with_partition(mut self, topic: impl Into<String>, partition: i32) -> Self {
        self.topic = Some(topic.into());
        self.partition = Some(partition);
        self
    }

    /// Adds the topic only.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Adds the offset.
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Adds the group (or transactional) id.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The Kafka name of the code (`"NOT_LEADER_OR_FOLLOWER"`), if it is a known code.
    pub fn name(&self) -> Option<&'static str> {
        self.code.name()
    }

    /// Whether Kafka classifies this code as retriable.
    pub fn is_retriable(&self) -> bool {
        self.code.is_retriable()
    }

    /// Whether this code ends the instance: fencing, and authorization failures of the
    /// transactional id or the cluster.
    pub fn is_fatal(&self) -> bool {
        is_fencing_code(self.code)
            || matches!(
                self.code,
                ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                    | ErrorCode::CLUSTER_AUTHORIZATION_FAILED
            )
    }

    /// Whether this code means another instance took over (turn it into [`Error::Fenced`]).
    pub fn is_fencing(&self) -> bool {
        is_fencing_code(self.code)
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "broker error {name} ({})", self.code.0)?,
            None => write!(f, "broker error code {}", self.code.0)?,
        }
        if let Some(group) = &self.group {
            write!(f, " for {group}")?;
        }
        match (&self.topic, self.partition) {
            (Some(t), Some(p)) => write!(f, " on {t}-{p}")?,
            (Some(t), None) => write!(f, " on topic {t}")?,
            _ => {}
        }
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BrokerError {}

/// Codes that always mean another instance took over. `INVALID_PRODUCER_EPOCH` is not among
/// them: from a transaction coordinator it means fenced, but in a Produce response it is an
/// abortable error (KIP-588), so the transaction manager classifies it by where it came from.
fn is_fencing_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::PRODUCER_FENCED
            | ErrorCode::TRANSACTION_COORDINATOR_FENCED
            | ErrorCode::FENCED_INSTANCE_ID
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_table_lookup() {
        assert_eq!(BrokerError::new(6).name(), Some("NOT_LEADER_OR_FOLLOWER"));
        assert!(BrokerError::new(6).is_retriable());
        assert_eq!(BrokerError::new(-1).name(), Some("UNKNOWN_SERVER_ERROR"));
        assert!(!BrokerError::new(-1).is_retriable());
        assert_eq!(BrokerError::new(90).name(), Some("PRODUCER_FENCED"));
        assert_eq!(BrokerError::new(i16::MAX).name(), None);
        assert!(!BrokerError::new(i16::MAX).is_retriable());
        assert_eq!(BrokerError::new(i16::MIN).name(), None);
        assert_eq!(BrokerError::new(-2).name(), None);
        for code in ErrorCode::all() {
            assert_eq!(BrokerError::new(code).name(), code.name());
            assert_eq!(BrokerError::new(code).is_retriable(), code.is_retriable());
        }
    }

    #[test]
    fn display_carries_context() {
        let e = BrokerError::new(6)
            .with_partition("orders", 3)
            .with_offset(42)
            .with_message("moved");
        assert_eq!(
            e.to_string(),
            "broker error NOT_LEADER_OR_FOLLOWER (6) on orders-3 at offset 42: moved"
        );
        assert_eq!(BrokerError::new(9999).to_string(), "broker error code 9999");
    }

    #[test]
    fn predicates() {
        let retriable: Error = BrokerError::new(ErrorCode::NOT_LEADER_OR_FOLLOWER).into();
        assert!(retriable.is_retriable() && !retriable.is_fatal());
        let fenced = Error::Fenced(BrokerError::new(ErrorCode::PRODUCER_FENCED));
        assert!(!fenced.is_retriable() && fenced.is_fatal());
        assert!(BrokerError::new(ErrorCode::PRODUCER_FENCED).is_fencing());
        assert!(BrokerError::new(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED).is_fatal());
        assert!(!BrokerError::new(ErrorCode::INVALID_PRODUCER_EPOCH).is_fatal());
        let io = Error::io(Peer::Unknown, std::io::Error::other("reset"));
        assert!(io.is_retriable() && !io.is_fatal());
        let tls = Error::io(
            Peer::Unknown,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid peer certificate"),
        );
        assert!(
            !tls.is_retriable(),
            "a certificate failure repeats on retry"
        );
        let t = Error::Timeout {
            what: "metadata",
            after: Duration::from_secs(1),
        };
        assert!(t.is_retriable());
        assert!(Error::Closed.is_fatal() && !Error::Closed.is_retriable());
        let p = Error::Protocol {
            peer: Peer::Bootstrap {
                addr: "127.0.0.1:9092".into(),
            },
            kind: ProtocolErrorKind::CorrelationId {
                expected: 1,
                got: 2,
            },
        };
        assert!(!p.is_retriable() && !p.is_fatal());
        assert_eq!(
            p.to_string(),
            "protocol violation by bootstrap server 127.0.0.1:9092: unexpected correlation id 2 (expected 1)"
        );
        assert_eq!(fenced.broker_code(), Some(ErrorCode::PRODUCER_FENCED));
        assert!(Error::Misuse("x".into()).broker_code().is_none());
    }

    #[test]
    fn error_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Error>();
    }
}
