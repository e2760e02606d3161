//! `testkit`: real Apache Kafka clusters on loopback for tests, benchmarks and the quick start.
#![forbid(unsafe_code)]

pub mod dist;
