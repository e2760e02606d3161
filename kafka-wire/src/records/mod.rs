//! Record batches, magic v2: a lazy zero-copy reader and a builder.
//!
//! A v2 batch is a 61-byte header followed by its records (compressed as one block when the batch
//! is compressed):
//!
//! ```text
//! offset  size  field
//!      0     8  base offset
//!      8     4  batch length (bytes after this field)
//!     12     4  partition leader epoch
//!     16     1  magic (2)
//!     17     4  CRC-32C of bytes 21..end
//!     21     2  attributes: bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control,
//!               6 delete horizon
//!     23     4  last offset delta
//!     27     8  base (first) timestamp
//!     35     8  max timestamp
//!     43     8  producer id
//!     51     2  producer epoch
//!     55     4  base sequence
//!     57     4  records count
//!     61        records: length varint, attributes i8, timestamp delta varlong, offset delta
//!               varint, key (varint length, -1 null), value (same), header count varint, headers
//!               (key: varint length + UTF-8, value: varint length, -1 null)
//! ```
//!
//! Reading never trusts a length or count: each is checked against the bytes that are there
//! before it is used, decompression stops at [`ReadOptions::max_decompressed`], and records are
//! decoded one at a time on demand.
//!
//! ```
//! use kafka_wire::records::{BatchBuilder, BatchOptions, ReadOptions, RecordBatches};
//! use kafka_wire::Codec;
//!
//! let mut options = BatchOptions::default();
//! options.base_offset = 10;
//! options.compression = Codec::Lz4;
//! let mut builder = BatchBuilder::new(options);
//! builder.append(1_000, Some(b"k"), Some(b"v"), &[("trace", Some(b"1"))]).unwrap();
//! builder.append(1_005, None, None, &[]).unwrap();
//! let bytes = builder.finish().unwrap();
//!
//! let mut batches = RecordBatches::new(bytes);
//! let batch = batches.next().unwrap().unwrap();
//! let records: Vec<_> = batch.records(&ReadOptions::default()).unwrap()
//!     .collect::<Result<_, _>>().unwrap();
//! assert_eq!(records[1].offset, 11);
//! assert_eq!(records[1].timestamp, 1_005);
//! assert_eq!(records[0].headers.clone().next().unwrap().key_str(), Some("trace"));
//! assert!(batches.next().is_none() && !batches.truncated());
//! ```

mod batch;
mod builder;
pub mod varint;

pub use batch::{
    ControlRecord, EndTxnMarker, Header, Headers, ReadOptions, Record, RecordBatch, RecordBatches,
    Records,
};
pub use builder::{end_txn_marker_batch, BatchBuilder, BatchOptions};

/// Bytes before the batch length field counts: base offset (8) and batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 batch header, up to the first record.
pub const HEADER_LEN: usize = 61;
/// The smallest possible encoded record: length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each.
pub const MIN_RECORD_LEN: usize = 7;
/// The magic byte of v2 batches.
pub const MAGIC_V2: i8 = 2;
/// Producer id of a non-idempotent batch.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a non-idempotent batch.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of a non-idempotent batch.
pub const NO_SEQUENCE: i32 = -1;
/// Partition leader epoch written by producers.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

pub(crate) const MAGIC_OFFSET: usize = 16;
pub(crate) const CRC_OFFSET: usize = 17;
pub(crate) const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub(crate) const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
pub(crate) const ATTR_CONTROL: i16 = 0x20;
pub(crate) const ATTR_DELETE_HORIZON: i16 = 0x40;

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// Set by the producer (`CreateTime`).
    #[default]
    CreateTime,
    /// Set by the broker when appending (`LogAppendTime`); every record's timestamp is the
    /// batch's max timestamp.
    LogAppendTime,
}

/// The type of a control record (the `type` in its key). Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlRecordType(pub i16);

impl ControlRecordType {
    /// A transaction was aborted.
    pub const ABORT: ControlRecordType = ControlRecordType(0);
    /// A transaction was committed.
    pub const COMMIT: ControlRecordType = ControlRecordType(1);
    /// KRaft: a leader change.
    pub const LEADER_CHANGE: ControlRecordType = ControlRecordType(2);
    /// KRaft: snapshot header.
    pub const SNAPSHOT_HEADER: ControlRecordType = ControlRecordType(3);
    /// KRaft: snapshot footer.
    pub const SNAPSHOT_FOOTER: ControlRecordType = ControlRecordType(4);
    /// KRaft: kraft.version record.
    pub const KRAFT_VERSION: ControlRecordType = ControlRecordType(5);
    /// KRaft: voters record.
    pub const KRAFT_VOTERS: ControlRecordType = ControlRecordType(6);

    /// Whether this marks the end of a transaction (COMMIT or ABORT).
    pub fn is_txn_marker(self) -> bool {
        self == Self::ABORT || self == Self::COMMIT
    }

    /// The control record key of this type: version 0, then the type.
    pub fn key_bytes(self) -> [u8; 4] {
        let t = self.0.to_be_bytes();
        [0, 0, t[0], t[1]]
    }
}

impl EndTxnMarker {
    /// The record value of this marker: version 0 and the coordinator epoch.
    pub fn value_bytes(coordinator_epoch: i32) -> [u8; 6] {
        let e = coordinator_epoch.to_be_bytes();
        [0, 0, e[0], e[1], e[2], e[3]]
    }
}

#[cfg(test)]
mod tests;
