//! `streams`: the event-sourcing layer (EventSource, state stores, exactly-once producer pool,
//! incremental rebalancer, interjections), built on `kafka-client`'s public API only.
//! Work in progress: see the project's issues.
#![forbid(unsafe_code)]

pub use kafka_client;
