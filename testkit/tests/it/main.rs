//! Integration tests: real Apache Kafka clusters started by `testkit`.
//!
//! They need `java` (17+) and `mvn` (or a warm jar cache) and fail, never skip, without them.

mod cli;
mod cluster_1node;
mod cluster_3node;
mod proxy;
mod util;
