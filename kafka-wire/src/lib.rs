//! `kafka-wire`: bytes <-> Kafka messages. No I/O, no clocks, no tasks.
//!
//! ```text
//!   bytes from a socket
//!        |
//!   frame::FrameDecoder        size-prefixed frames, bounded by a maximum
//!        |
//!   header::RequestHeader /    api key, version, correlation id (v0-v2 / v0-v1)
//!   header::ResponseHeader
//!        |
//!   messages::*                every Kafka 4.x message, generated from Kafka's schemas
//!        |                     (codec: Encode / Decode, bounded, zero-copy strings and bytes)
//!   records::*                 record batches inside `records` fields
//! ```
//!
//! ```
//! use bytes::Bytes;
//! use kafka_wire::messages::ApiVersionsRequest;
//! use kafka_wire::{Decode, Encode};
//!
//! let req = ApiVersionsRequest {
//!     client_software_name: "kafka-rs".into(),
//!     client_software_version: "0.1.0".into(),
//!     ..Default::default()
//! };
//! let mut buf = Vec::new();
//! req.encode(&mut buf, 3).unwrap();
//! assert_eq!(buf.len(), req.encoded_len(3).unwrap());
//! let back = ApiVersionsRequest::decode(&mut Bytes::from(buf), 3).unwrap();
//! assert_eq!(back, req);
//! ```
#![forbid(unsafe_code)]

pub mod api_key;
pub mod codec;
pub mod compression;
pub mod error;
pub mod error_code;
pub mod frame;
pub mod header;
pub mod messages;
pub mod records;
pub mod versions;

pub use api_key::ApiKey;
pub use codec::{Decode, Encode, KString, Request, Uuid};
pub use error::{Codec, DecodeError, EncodeError};
pub use error_code::ErrorCode;
