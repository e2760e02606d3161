//! `streams`: event sourcing on Kafka, exactly once. An [`EventSource`] consumes a topic as a
//! consumer group, routes each event by a header to a typed handler, keeps one state store per
//! input partition (rebuilt from a compacted changelog topic), and commits the handlers'
//! outputs, state changes and input offsets in one Kafka transaction. Built on `kafka-client`'s
//! public API only.
//!
//! What exists today: the event source with header routing, per-partition workers with
//! restore-before-process, the in-memory [`MemStore`](store::MemStore), exactly-once
//! processing through a pool of transactional producers with a Nagle-style commit rule
//! (STREAMS.md §3.3), [`metrics`] through a non-blocking sink, and [`testing`] helpers that run a
//! handler without a broker. The incremental rebalancer, interjections, async jobs, the
//! persistent store and standbys come next (see the project's issues).
//!
//! ```text
//!   your handlers ──► EventSource ──► kafka-client (Consumer, Producer × pool, Admin)
//!                      │  workers (one per partition) · stores · pool core (sans-IO)
//!                      └─► topics: input ─► outputs + changelog, offsets in one transaction
//! ```
#![forbid(unsafe_code)]

pub use kafka_client;

mod config;
mod context;
mod eos;
mod error;
pub mod metrics;
mod route;
mod source;
pub mod store;
pub mod testing;

pub use config::{EosConfig, ErrorPolicy, EventSourceConfig, Guarantee, UnknownEventPolicy};
pub use context::{Completion, EventContext};
pub use error::{Error, Result};
pub use route::{BoxError, DecodeError, Decoder, Handler, Outcome};
pub use source::{EventSource, EventSourceBuilder, Health, Stats};
