//! Writing v2 record batches straight into a buffer.

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    ControlRecordType, EndTxnMarker, TimestampType, ATTR_CONTROL, ATTR_TIMESTAMP_TYPE,
    ATTR_TRANSACTIONAL, CRC_OFFSET, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};
use crate::codec::{put_varint, put_varlong, varint_len, varlong_len};
use crate::compression;
use crate::error::{Codec, EncodeError};

/// The header fields and limits of a batch to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOptions {
    /// Offset of the first record (producers write 0; the broker assigns). Default 0.
    pub base_offset: i64,
    /// Default -1 ([`NO_PARTITION_LEADER_EPOCH`]).
    pub partition_leader_epoch: i32,
    /// Default -1 ([`NO_PRODUCER_ID`]): not idempotent.
    pub producer_id: i64,
    /// Default -1 ([`NO_PRODUCER_EPOCH`]).
    pub producer_epoch: i16,
    /// Sequence of the first record; default -1 ([`NO_SEQUENCE`]).
    pub base_sequence: i32,
    /// Sets the transactional attribute. Default `false`.
    pub transactional: bool,
    /// Sets the control attribute: the records must be control records. Default `false`.
    pub control: bool,
    /// The codec (Java `compression.type`). Default [`Codec::None`]. If compressing does not make
    /// the batch smaller, it is written uncompressed.
    pub compression: Codec,
    /// Codec level (Java `compression.<codec>.level`); `None`, the default, is Java's default.
    pub compression_level: Option<i32>,
    /// `Some(t)` writes a `LogAppendTime` batch whose max timestamp is `t`; `None` (default) a
    /// `CreateTime` batch.
    pub log_append_time: Option<i64>,
    /// The most bytes the batch may take *uncompressed*, header included; an append past it fails
    /// with [`EncodeError::TooLarge`]. Default 1,000,012 (the broker's `message.max.bytes`).
    pub max_batch_bytes: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            compression: Codec::None,
            compression_level: None,
            log_append_time: None,
            max_batch_bytes: 1_000_012,
        }
    }
}

impl BatchOptions {
    /// The timestamp type these options write.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.log_append_time.is_some() {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// Builds one v2 batch: records are encoded straight into the batch buffer as they are appended;
/// [`BatchBuilder::finish`] compresses the records section if asked, then fills in the header,
/// length and CRC.
///
/// Timestamps follow Java's `MemoryRecordsBuilder`: the first record's timestamp is the base
/// timestamp, the max timestamp starts at -1.
#[derive(Debug)]
pub struct BatchBuilder {
    options: BatchOptions,
    buf: BytesMut,
    count: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
}

fn too_long(what: &'static str, len: usize) -> EncodeError {
    EncodeError::TooLong { what, len }
}

fn len_i32(what: &'static str, len: usize) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| too_long(what, len))
}

fn bytes_field_len(what: &'static str, b: Option<&[u8]>) -> Result<usize, EncodeError> {
    Ok(match b {
        None => varint_len(-1),
        Some(b) => varint_len(len_i32(what, b.len())?) + b.len(),
    })
}

fn put_bytes_field(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            // Lengths were checked by `bytes_field_len` before anything was written.
            put_varint(buf, i32::try_from(b.len()).unwrap_or(i32::MAX));
            buf.put_slice(b);
        }
    }
}

impl BatchBuilder {
    /// Starts a batch.
    pub fn new(options: BatchOptions) -> Self {
        Self::with_capacity(options, HEADER_LEN + 256)
    }

    /// Starts a batch whose buffer holds `capacity` bytes (header included) before it grows: a
    /// producer that knows how large its batches get avoids growing (and copying) the buffer
    /// while records are appended.
    pub fn with_capacity(options: BatchOptions, capacity: usize) -> Self {
        Self::with_buffer(options, BytesMut::with_capacity(capacity.max(HEADER_LEN)))
    }

    /// Starts a batch in `buf` (cleared first), e.g. the buffer of a batch that was sent and
    /// acknowledged: a producer that recycles its buffers allocates (and the kernel zeroes)
    /// no new memory per batch.
    pub fn with_buffer(options: BatchOptions, mut buf: BytesMut) -> Self {
        buf.clear();
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            options,
            buf,
            count: 0,
            base_timestamp: None,
            max_timestamp: -1,
        }
    }

    /// Sets the producer id, epoch and base sequence written by [`BatchBuilder::finish`] (an
    /// idempotent producer knows the sequence only when it sends the batch).
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.options.producer_id = producer_id;
        self.options.producer_epoch = producer_epoch;
        self.options.base_sequence = base_sequence;
    }

    /// The options the batch is built with.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Records appended so far.
    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The uncompressed size so far, header included: an upper bound of what [`Self::finish`]
    /// returns (compression only ever shrinks it).
    pub fn estimated_size(&self) -> usize {
        self.buf.len()
    }

    /// The bytes `append` would add for this record, length prefix included.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<usize, EncodeError> {
        let body = self.body_len(timestamp, key, value, headers)?;
        Ok(varint_len(len_i32("record", body)?) + body)
    }

    /// Whether a record fits under [`BatchOptions::max_batch_bytes`].
    pub fn would_fit(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> bool {
        self.record_size(timestamp, key, value, headers)
            .is_ok_and(|n| self.buf.len().saturating_add(n) <= self.options.max_batch_bytes)
    }

    fn body_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<usize, EncodeError> {
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp.unwrap_or(timestamp));
        let mut n = 1 + varlong_len(ts_delta) + varint_len(self.count);
        n += bytes_field_len("record key", key)?;
        n += bytes_field_len("record value", value)?;
        n += varint_len(len_i32("record headers", headers.len())?);
        for (k, v) in headers {
            n += bytes_field_len("record header key", Some(k.as_bytes()))?;
            n += bytes_field_len("record header value", *v)?;
        }
        Ok(n)
    }

    /// Appends a record; returns its offset.
    ///
    /// Fails without writing anything if the record would take the batch past
    /// [`BatchOptions::max_batch_bytes`], if the batch already holds `i32::MAX` records, or if a
    /// field is longer than `i32::MAX`.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<i64, EncodeError> {
        if self.count == i32::MAX {
            return Err(too_long("record batch records", self.count as usize));
        }
        let body = self.body_len(timestamp, key, value, headers)?;
        let size = varint_len(len_i32("record", body)?) + body;
        let new_len = self.buf.len().saturating_add(size);
        if new_len > self.options.max_batch_bytes {
            return Err(EncodeError::TooLarge {
                what: "record batch",
                size: new_len,
                max: self.options.max_batch_bytes,
            });
        }
        let base = *self.base_timestamp.get_or_insert(timestamp);
        if timestamp > self.max_timestamp {
            self.max_timestamp = timestamp;
        }
        let buf = &mut self.buf;
        buf.reserve(size);
        put_varint(buf, body as i32);
        buf.put_i8(0);
        put_varlong(buf, timestamp.wrapping_sub(base));
        put_varint(buf, self.count);
        put_bytes_field(buf, key);
        put_bytes_field(buf, value);
        put_varint(buf, headers.len() as i32);
        for (k, v) in headers {
            put_bytes_field(buf, Some(k.as_bytes()));
            put_bytes_field(buf, *v);
        }
        let offset = self.options.base_offset.wrapping_add(i64::from(self.count));
        self.count += 1;
        Ok(offset)
    }

    /// Appends a control record (key: version 0 and `kind`; `value` as given). The batch must have
    /// been started with [`BatchOptions::control`] set.
    pub fn append_control(
        &mut self,
        timestamp: i64,
        kind: ControlRecordType,
        value: &[u8],
    ) -> Result<i64, EncodeError> {
        if !self.options.control {
            return Err(EncodeError::FieldNotInVersion {
                what: "control record in a data batch",
                version: i16::from(MAGIC_V2),
            });
        }
        self.append(timestamp, Some(&kind.key_bytes()), Some(value), &[])
    }

    /// Finishes the batch: compresses the records (keeping them uncompressed if that is not
    /// smaller), writes the header, length and CRC. An empty builder gives empty bytes (no batch),
    /// as Java's builder does.
    pub fn finish(self) -> Result<Bytes, EncodeError> {
        if self.count == 0 {
            return Ok(Bytes::new());
        }
        let mut codec = self.options.compression;
        let mut buf = self.buf;
        if codec != Codec::None {
            let mut out = BytesMut::with_capacity(buf.len());
            out.put_slice(&buf[..HEADER_LEN]);
            compression::compress_with_level(
                codec,
                self.options.compression_level,
                &buf[HEADER_LEN..],
                &mut out,
            )?;
            if out.len() < buf.len() {
                buf = out;
            } else {
                codec = Codec::None;
            }
        }
        let length = len_i32("record batch", buf.len() - LOG_OVERHEAD)?;
        let mut attributes = codec.id();
        if self.options.log_append_time.is_some() {
            attributes |= ATTR_TIMESTAMP_TYPE;
        }
        if self.options.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        if self.options.control {
            attributes |= ATTR_CONTROL;
        }
        let max_timestamp = self.options.log_append_time.unwrap_or(self.max_timestamp);
        let o = &self.options;
        let mut h = &mut buf[..HEADER_LEN];
        h.put_i64(o.base_offset);
        h.put_i32(length);
        h.put_i32(o.partition_leader_epoch);
        h.put_i8(MAGIC_V2);
        h.put_u32(0);
        h.put_i16(attributes);
        h.put_i32(self.count - 1);
        h.put_i64(self.base_timestamp.unwrap_or(-1));
        h.put_i64(max_timestamp);
        h.put_i64(o.producer_id);
        h.put_i16(o.producer_epoch);
        h.put_i32(o.base_sequence);
        h.put_i32(self.count);
        let crc = crc32c::crc32c(&buf[CRC_OFFSET + 4..]);
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }
}

/// Builds a transaction marker batch the way a transaction coordinator has the leader write it:
/// one COMMIT or ABORT control record, uncompressed, transactional and control bits set, no
/// sequence. `options` supplies base offset, partition leader epoch, producer id and epoch; its
/// other fields are overridden.
pub fn end_txn_marker_batch(
    options: &BatchOptions,
    timestamp: i64,
    kind: ControlRecordType,
    coordinator_epoch: i32,
) -> Result<Bytes, EncodeError> {
    if !kind.is_txn_marker() {
        return Err(EncodeError::FieldNotInVersion {
            what: "transaction marker of a type other than COMMIT/ABORT",
            version: kind.0,
        });
    }
    let mut opts = options.clone();
    opts.transactional = true;
    opts.control = true;
    opts.base_sequence = NO_SEQUENCE;
    opts.compression = Codec::None;
    opts.log_append_time = None;
    let mut b = BatchBuilder::new(opts);
    b.append_control(
        timestamp,
        kind,
        &EndTxnMarker::value_bytes(coordinator_epoch),
    )?;
    b.finish()
}
