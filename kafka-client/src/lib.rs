//! `kafka-client`: connections, metadata, producer, consumer, groups, transactions and admin,
//! built on [`kafka_wire`].
//!
//! The client is layered so that everything that decides *what* to do is deterministic and can be
//! tested without sockets, clocks or tasks:
//!
//! ```text
//!   handles       Producer / Consumer / Admin: cheap Clone handles held by the application
//!      |
//!   tokio driver  one #[must_use] future owns the sockets, timers and OS randomness
//!      |
//!   sans-IO core  plain state machines: config, backoff, throttling, partitioners, SASL, ...
//!      |          (inputs carry `now: Instant` and an injected RandomSource; no I/O, no sleeps)
//!   kafka-wire    bytes <-> messages; no I/O, no clocks, no tasks
//! ```
//!
//! The modules available today are the sans-IO building blocks the driver is built on:
//!
//! - [`config`]: typed [`ClientConfig`](config::ClientConfig),
//!   [`ProducerConfig`](config::ProducerConfig) and [`ConsumerConfig`](config::ConsumerConfig),
//!   readable from Java-style `key=value` properties, validated, secrets redacted in `Debug`.
//! - [`partitioner`]: the Java-compatible murmur2 key partitioner and the sticky /
//!   uniform-sticky partitioner for records without a key (KIP-480, KIP-794).
//! - [`sasl`]: SASL PLAIN and SCRAM-SHA-256/512 client state machines (RFC 4616, 5802, 7677).
//! - [`backoff`]: jittered exponential backoff and per-broker throttle tracking (KIP-219).
//! - [`error`]: the client [`Error`] type with `is_retriable()` / `is_fatal()`.
//! - [`rng`]: the [`RandomSource`](rng::RandomSource) trait through which randomness is injected.
//!
//! A short example will open this page once the producer and consumer handles exist.
#![forbid(unsafe_code)]

pub use kafka_wire;

pub mod admin;
pub mod backoff;
pub mod client;
pub mod config;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod group;
pub mod metadata;
pub mod net;
pub mod offsets;
pub mod partitioner;
pub mod producer;
pub mod rng;
pub mod sasl;
mod tls;
pub mod transact;
pub mod types;

pub use admin::Admin;
pub use client::{Client, Purpose};
pub use consumer::{CommitHandle, Consumer, ConsumerRecord, RebalanceHooks};
pub use error::{BrokerError, Error, Result};
pub use metadata::{BrokerInfo, ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use net::Connection;
pub use producer::{DeliveryFuture, Producer, ProducerRecord, RecordMetadata};
pub use types::{Header, Offset, TimestampType, TopicPartition};
