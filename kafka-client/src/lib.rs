//! `kafka-client`: connections, metadata, producer, consumer, groups, transactions and admin,
//! built on [`kafka_wire`]. Work in progress: see the project's issues.
#![forbid(unsafe_code)]

pub use kafka_wire;
