//! Reading v2 record batches: a lazy, zero-copy view over the bytes of a frame.

use std::fmt;

use bytes::Bytes;

use super::varint::{read_varint, read_varlong};
use super::{
    ControlRecordType, TimestampType, ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_DELETE_HORIZON,
    ATTR_TIMESTAMP_TYPE, ATTR_TRANSACTIONAL, CRC_OFFSET, HEADER_LEN, LOG_OVERHEAD, MAGIC_OFFSET,
    MIN_RECORD_LEN,
};
use crate::compression::{self, DEFAULT_MAX_DECOMPRESSED};
use crate::error::{Codec, DecodeError};

/// How records are read out of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// The most bytes a compressed batch may inflate to, default
    /// [`DEFAULT_MAX_DECOMPRESSED`] (64 MiB). Passing it gives
    /// [`DecodeError::DecompressedTooLarge`].
    pub max_decompressed: usize,
    /// Whether [`RecordBatch::records`] checks the batch CRC first (default `true`, like Java's
    /// `check.crcs`).
    pub verify_crc: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
            verify_crc: true,
        }
    }
}

impl ReadOptions {
    /// Sets [`ReadOptions::max_decompressed`].
    pub fn max_decompressed(&mut self, bytes: usize) -> &mut Self {
        self.max_decompressed = bytes;
        self
    }

    /// Sets [`ReadOptions::verify_crc`].
    pub fn verify_crc(&mut self, verify: bool) -> &mut Self {
        self.verify_crc = verify;
        self
    }
}

fn eof(what: &'static str, needed: usize, remaining: usize) -> DecodeError {
    DecodeError::UnexpectedEof {
        what,
        needed,
        remaining,
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

// ---------------------------------------------------------------------------------------------
// RecordBatches

/// An iterator over the record batches of a records blob (the `records` field of a Fetch or
/// Produce partition): batches back to back, each `Ok` item a [`RecordBatch`] sharing `bytes`.
///
/// A final batch cut short is normal in Fetch responses (the broker fills up to the byte limit): it
/// ends the iteration without an error and [`RecordBatches::truncated`] tells it happened. A legacy
/// v0/v1 message set yields [`DecodeError::InvalidValue`] naming the magic and is skipped; any other
/// malformed batch yields one error and ends the iteration.
#[derive(Clone)]
pub struct RecordBatches {
    bytes: Bytes,
    pos: usize,
    done: bool,
    truncated: bool,
}

impl RecordBatches {
    /// Iterates over the batches in `bytes`.
    pub fn new(bytes: Bytes) -> Self {
        RecordBatches {
            bytes,
            pos: 0,
            done: false,
            truncated: false,
        }
    }

    /// Whether the iteration ended at a partial batch (trailing bytes too few for the batch they
    /// start). Meaningful once the iterator returned `None`.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The bytes not yet consumed (the partial batch, after a truncated end).
    pub fn remaining(&self) -> Bytes {
        self.bytes.slice(self.pos.min(self.bytes.len())..)
    }
}

impl fmt::Debug for RecordBatches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatches")
            .field("len", &self.bytes.len())
            .field("pos", &self.pos)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl Iterator for RecordBatches {
    type Item = Result<RecordBatch, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        if rest.len() < LOG_OVERHEAD {
            self.done = true;
            self.truncated = !rest.is_empty();
            return None;
        }
        let length = be_i32(rest, 8);
        // The smallest legacy message (v0) has 14 bytes after the length; anything below cannot be
        // a batch of any magic and the stream cannot be resynchronised.
        if length < 14 {
            self.done = true;
            return Some(Err(DecodeError::InvalidLength {
                what: "record batch length",
                len: i64::from(length),
                remaining: rest.len() - LOG_OVERHEAD,
            }));
        }
        let total = LOG_OVERHEAD + length as usize;
        if rest.len() < total {
            self.done = true;
            self.truncated = true;
            return None;
        }
        let start = self.pos;
        self.pos += total;
        let magic = rest[MAGIC_OFFSET] as i8;
        if magic != 2 {
            if magic < 2 {
                // A legacy message set: skip it, report it.
                return Some(Err(DecodeError::InvalidValue {
                    what: "record batch magic (legacy v0/v1 message sets are not supported)",
                    value: i64::from(magic),
                }));
            }
            self.done = true;
            return Some(Err(DecodeError::InvalidValue {
                what: "record batch magic",
                value: i64::from(magic),
            }));
        }
        match RecordBatch::new(self.bytes.slice(start..start + total)) {
            Ok(b) => Some(Ok(b)),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RecordBatch

/// One v2 record batch: its 61-byte header decoded, its records read on demand.
///
/// Cloning is cheap (the bytes are shared).
#[derive(Clone)]
pub struct RecordBatch {
    data: Bytes,
}

impl fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("records_count", &self.records_count())
            .field("compression", &self.compression())
            .field("is_transactional", &self.is_transactional())
            .field("is_control", &self.is_control())
            .field("producer_id", &self.producer_id())
            .field("size", &self.data.len())
            .finish()
    }
}

impl RecordBatch {
    /// Wraps exactly one v2 batch (`bytes` from its base offset to its last byte).
    ///
    /// Checks the magic and that the batch length field matches `bytes`; the CRC is checked by
    /// [`RecordBatch::verify_crc`] (and by [`RecordBatch::records`] by default).
    pub fn new(bytes: Bytes) -> Result<RecordBatch, DecodeError> {
        if bytes.len() < HEADER_LEN {
            // The magic decides the layout; report a legacy batch as such even when short.
            if bytes.len() > MAGIC_OFFSET && (bytes[MAGIC_OFFSET] as i8) < 2 {
                return Err(DecodeError::InvalidValue {
                    what: "record batch magic (legacy v0/v1 message sets are not supported)",
                    value: i64::from(bytes[MAGIC_OFFSET] as i8),
                });
            }
            return Err(eof(
                "record batch header",
                HEADER_LEN - bytes.len(),
                bytes.len(),
            ));
        }
        let magic = bytes[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(DecodeError::InvalidValue {
                what: if magic < 2 {
                    "record batch magic (legacy v0/v1 message sets are not supported)"
                } else {
                    "record batch magic"
                },
                value: i64::from(magic),
            });
        }
        let length = be_i32(&bytes, 8);
        let body = bytes.len() - LOG_OVERHEAD;
        if usize::try_from(length).ok() != Some(body) {
            if length >= 0 && (length as usize) > body {
                return Err(eof("record batch", length as usize - body, body));
            }
            return Err(DecodeError::InvalidLength {
                what: "record batch length",
                len: i64::from(length),
                remaining: body,
            });
        }
        Ok(RecordBatch { data: bytes })
    }

    /// The whole batch as it was on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.data
    }

    /// The batch's size on the wire, header included.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        be_i64(&self.data, 0)
    }

    /// The batch length field: bytes after it.
    pub fn batch_length(&self) -> i32 {
        be_i32(&self.data, 8)
    }

    /// The partition leader epoch written by the broker (-1 from producers).
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(&self.data, 12)
    }

    /// The magic byte (always 2 here).
    pub fn magic(&self) -> i8 {
        self.data[MAGIC_OFFSET] as i8
    }

    /// The stored CRC-32C (of everything from the attributes to the end).
    pub fn crc(&self) -> u32 {
        be_i32(&self.data, CRC_OFFSET) as u32
    }

    /// The CRC-32C computed over the batch.
    pub fn computed_crc(&self) -> u32 {
        crc32c::crc32c(&self.data[CRC_OFFSET + 4..])
    }

    /// Checks the stored CRC against the bytes.
    pub fn verify_crc(&self) -> Result<(), DecodeError> {
        let (stored, computed) = (self.crc(), self.computed_crc());
        if stored == computed {
            Ok(())
        } else {
            Err(DecodeError::BadCrc {
                what: "record batch",
                stored,
                computed,
            })
        }
    }

    /// The raw attributes.
    pub fn attributes(&self) -> i16 {
        be_i16(&self.data, 21)
    }

    /// The compression codec (bits 0-2); an unknown id is an error.
    pub fn compression(&self) -> Result<Codec, DecodeError> {
        let id = self.attributes() & ATTR_COMPRESSION_MASK;
        Codec::from_id(id).ok_or(DecodeError::InvalidValue {
            what: "record batch compression codec",
            value: i64::from(id),
        })
    }

    /// Create time or log-append time (bit 3).
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Part of a transaction (bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }

    /// A control batch: its records are control records (bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }

    /// The first timestamp is a delete horizon set by the log cleaner (bit 6).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & ATTR_DELETE_HORIZON != 0
    }

    /// Offset delta of the last record.
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(&self.data, 23)
    }

    /// Offset of the last record (`base_offset + last_offset_delta`, wrapping).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// The base timestamp the record deltas are relative to (the delete horizon when
    /// [`RecordBatch::has_delete_horizon`]).
    pub fn first_timestamp(&self) -> i64 {
        be_i64(&self.data, 27)
    }

    /// The largest timestamp (the log-append time under [`TimestampType::LogAppendTime`]).
    pub fn max_timestamp(&self) -> i64 {
        be_i64(&self.data, 35)
    }

    /// Producer id, -1 when not idempotent.
    pub fn producer_id(&self) -> i64 {
        be_i64(&self.data, 43)
    }

    /// Producer epoch, -1 when not idempotent.
    pub fn producer_epoch(&self) -> i16 {
        be_i16(&self.data, 51)
    }

    /// Sequence number of the first record, -1 when not idempotent.
    pub fn base_sequence(&self) -> i32 {
        be_i32(&self.data, 53)
    }

    /// The record count claimed by the header (checked when the records are read).
    pub fn records_count(&self) -> i32 {
        be_i32(&self.data, 57)
    }

    /// The records section as on the wire (compressed if the batch is).
    pub fn records_bytes(&self) -> Bytes {
        self.data.slice(HEADER_LEN..)
    }

    /// The records, read lazily.
    ///
    /// Verifies the CRC first when `options.verify_crc`, decompresses (up to
    /// `options.max_decompressed`) when the batch is compressed, and checks the record count
    /// against the bytes available, so a count that cannot be right fails here rather than after
    /// the data runs out. Uncompressed records share the batch's memory.
    pub fn records(&self, options: &ReadOptions) -> Result<Records, DecodeError> {
        if options.verify_crc {
            self.verify_crc()?;
        }
        let codec = self.compression()?;
        let raw = self.records_bytes();
        let body = match codec {
            Codec::None => raw,
            c => compression::decompress(c, &raw, options.max_decompressed)?,
        };
        let count = self.records_count();
        if count < 0 || count as usize > body.len() / MIN_RECORD_LEN {
            return Err(DecodeError::InvalidLength {
                what: "record batch records count",
                len: i64::from(count),
                remaining: body.len(),
            });
        }
        let log_append_time = match self.timestamp_type() {
            TimestampType::LogAppendTime => Some(self.max_timestamp()),
            TimestampType::CreateTime => None,
        };
        Ok(Records {
            body,
            pos: 0,
            left: count as usize,
            base_offset: self.base_offset(),
            base_timestamp: self.first_timestamp(),
            log_append_time,
            done: false,
        })
    }

    /// For a control batch, the control record key of its (first) record; `None` for a data batch.
    pub fn control_record(
        &self,
        options: &ReadOptions,
    ) -> Result<Option<ControlRecord>, DecodeError> {
        if !self.is_control() {
            return Ok(None);
        }
        let mut records = self.records(options)?;
        match records.next() {
            Some(r) => Ok(Some(r?.control()?)),
            None => Err(eof("control batch record", MIN_RECORD_LEN, 0)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// The records of one batch, decoded one at a time; yields `Result<Record, DecodeError>` and ends
/// after the first error.
///
/// Fewer records than the header's count, or bytes left after the last one, are errors.
#[derive(Clone)]
pub struct Records {
    body: Bytes,
    pos: usize,
    left: usize,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    done: bool,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("left", &self.left)
            .field("bytes_left", &(self.body.len() - self.pos))
            .finish()
    }
}

impl Records {
    /// Records not yet read, as claimed by the header.
    pub fn remaining_count(&self) -> usize {
        self.left
    }

    fn next_record(&mut self) -> Result<Record, DecodeError> {
        let buf = &self.body[..];
        let mut pos = self.pos;
        let len = read_varint(buf, &mut pos, "record length")?;
        let avail = buf.len() - pos;
        let ulen = usize::try_from(len)
            .ok()
            .filter(|&l| l <= avail)
            .ok_or_else(|| {
                if len < 0 {
                    DecodeError::InvalidLength {
                        what: "record length",
                        len: i64::from(len),
                        remaining: avail,
                    }
                } else {
                    eof("record", len as usize - avail, avail)
                }
            })?;
        let end = pos + ulen;
        self.pos = end;
        let rec = &buf[..end];
        let attributes = *rec.get(pos).ok_or_else(|| eof("record attributes", 1, 0))? as i8;
        pos += 1;
        let timestamp_delta = read_varlong(rec, &mut pos, "record timestamp delta")?;
        let offset_delta = read_varint(rec, &mut pos, "record offset delta")?;
        let key = read_bytes(&self.body, end, &mut pos, "record key")?;
        let value = read_bytes(&self.body, end, &mut pos, "record value")?;
        let count = read_varint(rec, &mut pos, "record headers count")?;
        let headers_start = pos;
        let avail = end - pos;
        // Each header takes at least two bytes (two length varints).
        if count < 0 || count as usize > avail / 2 {
            return Err(DecodeError::InvalidLength {
                what: "record headers count",
                len: i64::from(count),
                remaining: avail,
            });
        }
        for _ in 0..count {
            skip_header(rec, &mut pos)?;
        }
        if pos != end {
            return Err(DecodeError::TrailingBytes {
                what: "record",
                extra: end - pos,
            });
        }
        Ok(Record {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: self
                .log_append_time
                .unwrap_or_else(|| self.base_timestamp.wrapping_add(timestamp_delta)),
            timestamp_delta,
            offset_delta,
            attributes,
            key,
            value,
            headers: Headers {
                data: self.body.slice(headers_start..end),
                left: count as usize,
            },
        })
    }
}

/// Reads a varint length and that many bytes (a negative length is null), as a slice of `body`.
fn read_bytes(
    body: &Bytes,
    end: usize,
    pos: &mut usize,
    what: &'static str,
) -> Result<Option<Bytes>, DecodeError> {
    let len = read_varint(&body[..end], pos, what)?;
    if len < 0 {
        return Ok(None);
    }
    let avail = end - *pos;
    let len = len as usize;
    if len > avail {
        return Err(eof(what, len - avail, avail));
    }
    let b = body.slice(*pos..*pos + len);
    *pos += len;
    Ok(Some(b))
}

/// Steps over one header (key, value) checking its lengths.
fn skip_header(rec: &[u8], pos: &mut usize) -> Result<(), DecodeError> {
    let klen = read_varint(rec, pos, "record header key length")?;
    let avail = rec.len() - *pos;
    if klen < 0 {
        return Err(DecodeError::UnexpectedNull {
            what: "record header key",
        });
    }
    if klen as usize > avail {
        return Err(eof("record header key", klen as usize - avail, avail));
    }
    *pos += klen as usize;
    let vlen = read_varint(rec, pos, "record header value length")?;
    if vlen >= 0 {
        let avail = rec.len() - *pos;
        if vlen as usize > avail {
            return Err(eof("record header value", vlen as usize - avail, avail));
        }
        *pos += vlen as usize;
    }
    Ok(())
}

impl Iterator for Records {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.left == 0 {
            self.done = true;
            let extra = self.body.len() - self.pos;
            if extra > 0 {
                return Some(Err(DecodeError::TrailingBytes {
                    what: "record batch records",
                    extra,
                }));
            }
            return None;
        }
        if self.pos >= self.body.len() {
            self.done = true;
            return Some(Err(eof(
                "record batch records (fewer records than the header's count)",
                self.left.saturating_mul(MIN_RECORD_LEN),
                0,
            )));
        }
        match self.next_record() {
            Ok(r) => {
                self.left -= 1;
                Some(Ok(r))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (0, Some(self.left))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Record, headers, control records

/// One record. Key, value and headers are slices of the batch (or of its decompressed body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset: base offset + offset delta.
    pub offset: i64,
    /// Absolute timestamp: base timestamp + delta, or the batch's log-append time.
    pub timestamp: i64,
    /// The timestamp delta as written.
    pub timestamp_delta: i64,
    /// The offset delta as written.
    pub offset_delta: i32,
    /// The record attributes byte (unused by Kafka so far, written as 0).
    pub attributes: i8,
    /// The key, `None` for a null key.
    pub key: Option<Bytes>,
    /// The value, `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// The headers, in wire order, duplicates kept.
    pub headers: Headers,
}

impl Record {
    /// Parses this record's key as a control record key (for records of control batches).
    pub fn control(&self) -> Result<ControlRecord, DecodeError> {
        let key = self.key.as_deref().ok_or(DecodeError::UnexpectedNull {
            what: "control record key",
        })?;
        if key.len() < 4 {
            return Err(eof("control record key", 4 - key.len(), key.len()));
        }
        Ok(ControlRecord {
            version: be_i16(key, 0),
            kind: ControlRecordType(be_i16(key, 2)),
        })
    }

    /// Parses this record's value as a transaction marker (the value of a COMMIT or ABORT control
    /// record): version and coordinator epoch. Versions above 0 are read as version 0, as Java
    /// does.
    pub fn end_txn_marker(&self) -> Result<EndTxnMarker, DecodeError> {
        let v = self.value.as_deref().ok_or(DecodeError::UnexpectedNull {
            what: "transaction marker value",
        })?;
        if v.len() < 6 {
            return Err(eof("transaction marker value", 6 - v.len(), v.len()));
        }
        let version = be_i16(v, 0);
        if version < 0 {
            return Err(DecodeError::InvalidValue {
                what: "transaction marker version",
                value: i64::from(version),
            });
        }
        Ok(EndTxnMarker {
            version,
            coordinator_epoch: be_i32(v, 2),
        })
    }
}

/// A control record's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlRecord {
    /// Key version (0).
    pub version: i16,
    /// What the control record marks.
    pub kind: ControlRecordType,
}

/// The value of a COMMIT or ABORT control record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndTxnMarker {
    /// Value version (0).
    pub version: i16,
    /// The epoch of the transaction coordinator that wrote the marker.
    pub coordinator_epoch: i32,
}

/// One record header. The key is a UTF-8 string on the Java side; it is kept as bytes here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header key bytes.
    pub key: Bytes,
    /// Header value, `None` for null.
    pub value: Option<Bytes>,
}

impl Header {
    /// The key as text, if it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.key).ok()
    }
}

/// A record's headers: a lazy iterator over the header bytes, already checked when the record
/// was read, so iterating cannot fail. Cloning restarts nothing: it copies the current position.
#[derive(Clone, PartialEq, Eq)]
pub struct Headers {
    data: Bytes,
    left: usize,
}

impl Headers {
    /// Number of headers not yet iterated.
    pub fn len(&self) -> usize {
        self.left
    }

    /// Whether there are no headers left.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The headers section as on the wire (without its count).
    pub fn as_bytes(&self) -> &Bytes {
        &self.data
    }
}

impl Headers {
    fn read_one(&mut self) -> Option<Header> {
        let mut pos = 0;
        let klen = read_varint(&self.data, &mut pos, "header key length").ok()?;
        let kend = pos.checked_add(usize::try_from(klen).ok()?)?;
        if kend > self.data.len() {
            return None;
        }
        let key = self.data.slice(pos..kend);
        pos = kend;
        let vlen = read_varint(&self.data, &mut pos, "header value length").ok()?;
        let value = match usize::try_from(vlen) {
            Err(_) => None,
            Ok(vlen) => {
                let vend = pos.checked_add(vlen)?;
                if vend > self.data.len() {
                    return None;
                }
                let v = self.data.slice(pos..vend);
                pos = vend;
                Some(v)
            }
        };
        self.data = self.data.slice(pos..);
        Some(Header { key, value })
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

impl Iterator for Headers {
    type Item = Header;

    fn next(&mut self) -> Option<Header> {
        if self.left == 0 {
            return None;
        }
        // Validated by `skip_header` when the record was read; a failure here would mean a bug, so
        // end the iteration rather than panic.
        match self.read_one() {
            Some(h) => {
                self.left -= 1;
                Some(h)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Headers {}
