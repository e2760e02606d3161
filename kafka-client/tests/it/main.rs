//! kafka-client integration tests (one binary; modules per area).

mod admin;
mod client;
mod java;
mod security;
