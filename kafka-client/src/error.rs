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
//!
//! [`Error::is_retriable`] tells whether retrying the same operation may succeed;
//! [`Error::is_fatal`] whether the producer/consumer instance must be dropped (or re-initialized).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::{DecodeError, EncodeError};

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
    ///   decides whether a retry is safe, not this predicate);
    /// - protocol violations: no (retrying against the same broker build repeats the violation;
    ///   the connection is dropped and the error surfaced);
    /// - everything else: no.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker(b) => b.is_retriable(),
            Error::Io { .. } | Error::Timeout { .. } => true,
            Error::Protocol { .. }
            | Error::Encode(_)
            | Error::Closed
            | Error::Config(_)
            | Error::Misuse(_)
            | Error::Fenced(_)
            | Error::Sasl(_) => false,
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
            | Error::Misuse(_) => false,
        }
    }

    /// The broker error code, for [`Error::Broker`] and [`Error::Fenced`].
    pub fn broker_code(&self) -> Option<i16> {
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
    pub code: i16,
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
    pub fn new(code: i16) -> BrokerError {
        BrokerError {
            code,
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

    /// The Kafka name of the code (`"NOT_LEADER_OR_FOLLOWER"`), if this client knows it.
    pub fn name(&self) -> Option<&'static str> {
        code_info(self.code).map(|(name, _)| name)
    }

    /// Whether Kafka classifies this code as retriable.
    pub fn is_retriable(&self) -> bool {
        code_info(self.code).is_some_and(|(_, retriable)| retriable)
    }

    /// Whether this code ends the instance: fencing, and authorization failures of the
    /// transactional id or the cluster.
    pub fn is_fatal(&self) -> bool {
        is_fencing_code(self.code)
            || matches!(
                self.code,
                codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED | codes::CLUSTER_AUTHORIZATION_FAILED
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
            Some(name) => write!(f, "broker error {name} ({})", self.code)?,
            None => write!(f, "broker error code {}", self.code)?,
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
fn is_fencing_code(code: i16) -> bool {
    matches!(
        code,
        codes::PRODUCER_FENCED | codes::TRANSACTION_COORDINATOR_FENCED | codes::FENCED_INSTANCE_ID
    )
}

/// The few codes the client refers to by name. The full typed set lives in kafka-wire.
pub mod codes {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const PRODUCER_FENCED: i16 = 90;
}

/// (name, retriable) for every code Kafka 4.x defines, index = code + 1 (so -1 is at 0).
/// Checked against Java's `org.apache.kafka.common.protocol.Errors` by the integration test.
const CODES: &[(&str, bool)] = &[
    ("UNKNOWN_SERVER_ERROR", false),
    ("NONE", false),
    ("OFFSET_OUT_OF_RANGE", false),
    ("CORRUPT_MESSAGE", true),
    ("UNKNOWN_TOPIC_OR_PARTITION", true),
    ("INVALID_FETCH_SIZE", false),
    ("LEADER_NOT_AVAILABLE", true),
    ("NOT_LEADER_OR_FOLLOWER", true),
    ("REQUEST_TIMED_OUT", true),
    ("BROKER_NOT_AVAILABLE", false),
    ("REPLICA_NOT_AVAILABLE", true),
    ("MESSAGE_TOO_LARGE", false),
    ("STALE_CONTROLLER_EPOCH", false),
    ("OFFSET_METADATA_TOO_LARGE", false),
    ("NETWORK_EXCEPTION", true),
    ("COORDINATOR_LOAD_IN_PROGRESS", true),
    ("COORDINATOR_NOT_AVAILABLE", true),
    ("NOT_COORDINATOR", true),
    ("INVALID_TOPIC_EXCEPTION", false),
    ("RECORD_LIST_TOO_LARGE", false),
    ("NOT_ENOUGH_REPLICAS", true),
    ("NOT_ENOUGH_REPLICAS_AFTER_APPEND", true),
    ("INVALID_REQUIRED_ACKS", false),
    ("ILLEGAL_GENERATION", false),
    ("INCONSISTENT_GROUP_PROTOCOL", false),
    ("INVALID_GROUP_ID", false),
    ("UNKNOWN_MEMBER_ID", false),
    ("INVALID_SESSION_TIMEOUT", false),
    ("REBALANCE_IN_PROGRESS", false),
    ("INVALID_COMMIT_OFFSET_SIZE", false),
    ("TOPIC_AUTHORIZATION_FAILED", false),
    ("GROUP_AUTHORIZATION_FAILED", false),
    ("CLUSTER_AUTHORIZATION_FAILED", false),
    ("INVALID_TIMESTAMP", false),
    ("UNSUPPORTED_SASL_MECHANISM", false),
    ("ILLEGAL_SASL_STATE", false),
    ("UNSUPPORTED_VERSION", false),
    ("TOPIC_ALREADY_EXISTS", false),
    ("INVALID_PARTITIONS", false),
    ("INVALID_REPLICATION_FACTOR", false),
    ("INVALID_REPLICA_ASSIGNMENT", false),
    ("INVALID_CONFIG", false),
    ("NOT_CONTROLLER", true),
    ("INVALID_REQUEST", false),
    ("UNSUPPORTED_FOR_MESSAGE_FORMAT", false),
    ("POLICY_VIOLATION", false),
    ("OUT_OF_ORDER_SEQUENCE_NUMBER", false),
    ("DUPLICATE_SEQUENCE_NUMBER", false),
    ("INVALID_PRODUCER_EPOCH", false),
    ("INVALID_TXN_STATE", false),
    ("INVALID_PRODUCER_ID_MAPPING", false),
    ("INVALID_TRANSACTION_TIMEOUT", false),
    ("CONCURRENT_TRANSACTIONS", true),
    ("TRANSACTION_COORDINATOR_FENCED", false),
    ("TRANSACTIONAL_ID_AUTHORIZATION_FAILED", false),
    ("SECURITY_DISABLED", false),
    ("OPERATION_NOT_ATTEMPTED", false),
    ("KAFKA_STORAGE_ERROR", true),
    ("LOG_DIR_NOT_FOUND", false),
    ("SASL_AUTHENTICATION_FAILED", false),
    ("UNKNOWN_PRODUCER_ID", false),
    ("REASSIGNMENT_IN_PROGRESS", false),
    ("DELEGATION_TOKEN_AUTH_DISABLED", false),
    ("DELEGATION_TOKEN_NOT_FOUND", false),
    ("DELEGATION_TOKEN_OWNER_MISMATCH", false),
    ("DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", false),
    ("DELEGATION_TOKEN_AUTHORIZATION_FAILED", false),
    ("DELEGATION_TOKEN_EXPIRED", false),
    ("INVALID_PRINCIPAL_TYPE", false),
    ("NON_EMPTY_GROUP", false),
    ("GROUP_ID_NOT_FOUND", false),
    ("FETCH_SESSION_ID_NOT_FOUND", true),
    ("INVALID_FETCH_SESSION_EPOCH", true),
    ("LISTENER_NOT_FOUND", true),
    ("TOPIC_DELETION_DISABLED", false),
    ("FENCED_LEADER_EPOCH", true),
    ("UNKNOWN_LEADER_EPOCH", true),
    ("UNSUPPORTED_COMPRESSION_TYPE", false),
    ("STALE_BROKER_EPOCH", false),
    ("OFFSET_NOT_AVAILABLE", true),
    ("MEMBER_ID_REQUIRED", false),
    ("PREFERRED_LEADER_NOT_AVAILABLE", true),
    ("GROUP_MAX_SIZE_REACHED", false),
    ("FENCED_INSTANCE_ID", false),
    ("ELIGIBLE_LEADERS_NOT_AVAILABLE", true),
    ("ELECTION_NOT_NEEDED", true),
    ("NO_REASSIGNMENT_IN_PROGRESS", false),
    ("GROUP_SUBSCRIBED_TO_TOPIC", false),
    ("INVALID_RECORD", false),
    ("UNSTABLE_OFFSET_COMMIT", true),
    ("THROTTLING_QUOTA_EXCEEDED", true),
    ("PRODUCER_FENCED", false),
    ("RESOURCE_NOT_FOUND", false),
    ("DUPLICATE_RESOURCE", false),
    ("UNACCEPTABLE_CREDENTIAL", false),
    ("INCONSISTENT_VOTER_SET", false),
    ("INVALID_UPDATE_VERSION", false),
    ("FEATURE_UPDATE_FAILED", false),
    ("PRINCIPAL_DESERIALIZATION_FAILURE", false),
    ("SNAPSHOT_NOT_FOUND", false),
    ("POSITION_OUT_OF_RANGE", false),
    ("UNKNOWN_TOPIC_ID", true),
    ("DUPLICATE_BROKER_REGISTRATION", false),
    ("BROKER_ID_NOT_REGISTERED", false),
    ("INCONSISTENT_TOPIC_ID", true),
    ("INCONSISTENT_CLUSTER_ID", false),
    ("TRANSACTIONAL_ID_NOT_FOUND", false),
    ("FETCH_SESSION_TOPIC_ID_ERROR", true),
    ("INELIGIBLE_REPLICA", false),
    ("NEW_LEADER_ELECTED", false),
    ("OFFSET_MOVED_TO_TIERED_STORAGE", false),
    ("FENCED_MEMBER_EPOCH", false),
    ("UNRELEASED_INSTANCE_ID", false),
    ("UNSUPPORTED_ASSIGNOR", false),
    ("STALE_MEMBER_EPOCH", false),
    ("MISMATCHED_ENDPOINT_TYPE", false),
    ("UNSUPPORTED_ENDPOINT_TYPE", false),
    ("UNKNOWN_CONTROLLER_ID", false),
    ("UNKNOWN_SUBSCRIPTION_ID", false),
    ("TELEMETRY_TOO_LARGE", false),
    ("INVALID_REGISTRATION", false),
    ("TRANSACTION_ABORTABLE", false),
    ("INVALID_RECORD_STATE", false),
    ("SHARE_SESSION_NOT_FOUND", true),
    ("INVALID_SHARE_SESSION_EPOCH", true),
    ("FENCED_STATE_EPOCH", false),
    ("INVALID_VOTER_KEY", false),
    ("DUPLICATE_VOTER", false),
    ("VOTER_NOT_FOUND", false),
    ("INVALID_REGULAR_EXPRESSION", false),
    ("REBOOTSTRAP_REQUIRED", false),
    ("STREAMS_INVALID_TOPOLOGY", false),
    ("STREAMS_INVALID_TOPOLOGY_EPOCH", false),
    ("STREAMS_TOPOLOGY_FENCED", false),
    ("SHARE_SESSION_LIMIT_REACHED", true),
    ("GROUP_DELETION_FAILED", false),
    ("STREAMS_TOPOLOGY_DESCRIPTION_UPDATE_FAILED", false),
    ("CONTROLLER_ID_NOT_REGISTERED", false),
];

/// The (name, retriable) of `code`, if known.
pub(crate) fn code_info(code: i16) -> Option<(&'static str, bool)> {
    let idx = usize::try_from(i32::from(code) + 1).ok()?;
    CODES.get(idx).copied()
}

/// Every (code, name, retriable) this client knows; for tests and diagnostics.
pub fn known_codes() -> impl Iterator<Item = (i16, &'static str, bool)> {
    CODES
        .iter()
        .enumerate()
        .map(|(i, (name, r))| (i as i16 - 1, *name, *r))
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
        for (code, name, _) in known_codes() {
            assert_eq!(BrokerError::new(code).name(), Some(name));
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
        let retriable: Error = BrokerError::new(codes::NOT_LEADER_OR_FOLLOWER).into();
        assert!(retriable.is_retriable() && !retriable.is_fatal());
        let fenced = Error::Fenced(BrokerError::new(codes::PRODUCER_FENCED));
        assert!(!fenced.is_retriable() && fenced.is_fatal());
        assert!(BrokerError::new(codes::PRODUCER_FENCED).is_fencing());
        assert!(BrokerError::new(codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED).is_fatal());
        assert!(!BrokerError::new(codes::INVALID_PRODUCER_EPOCH).is_fatal());
        let io = Error::io(Peer::Unknown, std::io::Error::other("reset"));
        assert!(io.is_retriable() && !io.is_fatal());
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
        assert_eq!(fenced.broker_code(), Some(codes::PRODUCER_FENCED));
        assert!(Error::Misuse("x".into()).broker_code().is_none());
    }

    #[test]
    fn error_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Error>();
    }
}
