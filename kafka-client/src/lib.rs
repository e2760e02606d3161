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
//! - `backoff` (crate-private): jittered exponential backoff.
//! - [`error`]: the client [`Error`] type with `is_retriable()` / `is_fatal()`.
//! - [`rng`]: the [`RandomSource`](rng::RandomSource) trait through which randomness is injected.
//!
//! # Example
//!
//! Produce a record, then read it back through a consumer group (see `examples/quickstart.rs`
//! for a complete program that also starts a local Kafka):
//!
//! ```no_run
//! use std::time::Duration;
//! use kafka_client::config::{AutoOffsetReset, ConsumerConfig, ProducerConfig};
//! use kafka_client::{Consumer, Producer, ProducerRecord};
//!
//! # async fn run() -> kafka_client::Result<()> {
//! let mut pcfg = ProducerConfig::default();
//! pcfg.client_mut().bootstrap_servers(vec!["127.0.0.1:9092".to_string()]);
//! let producer = Producer::new(pcfg).await?;
//! let delivery = producer
//!     .send(ProducerRecord::new("events").key("account-1").value("deposit 10"))
//!     .await?;
//! let meta = delivery.await?; // acknowledged by the broker
//! println!("written at {}:{}", meta.partition, meta.offset);
//!
//! let mut ccfg = ConsumerConfig::default();
//! ccfg.client_mut().bootstrap_servers(vec!["127.0.0.1:9092".to_string()]);
//! ccfg.group_id("readers".to_string());
//! ccfg.auto_offset_reset(AutoOffsetReset::Earliest);
//! let consumer = Consumer::new(ccfg).await?;
//! consumer.subscribe(["events"]).await?;
//! for record in consumer.poll(Duration::from_secs(1)).await? {
//!     println!("{:?} = {:?}", record.key, record.value);
//! }
//! consumer.close().await;
//! producer.close().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub use kafka_wire;

pub mod admin;
pub(crate) mod backoff;
pub mod client;
pub mod config;
pub(crate) mod conn;
pub mod consumer;
pub mod error;
pub mod group;
pub mod metadata;
pub mod net;
pub mod offsets;
pub mod partitioner;
pub mod producer;
mod proto;
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
