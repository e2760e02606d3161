//! `kafka-wire`: bytes <-> Kafka messages. No I/O, no clocks, no tasks.
#![forbid(unsafe_code)]

pub mod error;

pub use error::{Codec, DecodeError, EncodeError};
