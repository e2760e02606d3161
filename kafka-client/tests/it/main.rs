//! kafka-client integration tests (one binary; modules per area).

mod client;
mod java;
