//! kafka-client integration tests (one binary; modules per area).

mod admin;
mod balancer_java;
mod client;
mod consumer;
mod group;
mod interop;
mod java;
mod jvm;
mod producer_faults;
mod roundtrip;
mod security;
