//! kafka-client integration tests (one binary; modules per area).

mod admin;
mod balancer_java;
mod callbacks;
mod client;
mod consumer;
mod group;
mod group848;
mod group_api;
mod group_faults;
mod group_java;
mod group_migration;
mod interop;
mod java;
mod jvm;
mod late_answers;
mod producer_faults;
mod roundtrip;
mod security;
mod transactions;
mod txn_recovery;

/// Sends the client's logs to the test output when `KAFKA_TEST_LOG` is set (an env-filter
/// directive such as `kafka_client=debug`); call it at the start of a test.
#[allow(dead_code)]
pub(crate) fn logs() {
    if let Ok(filter) = std::env::var("KAFKA_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
