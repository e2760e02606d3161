//! The primitive encodings of the Kafka protocol and the [`Encode`]/[`Decode`] traits.
//!
//! Decoding reads from a [`Bytes`] and advances it, so strings and byte fields are zero-copy slices
//! of the frame. Every length or count read from the wire is checked against the bytes that remain
//! before anything is allocated; a malformed input gives a [`DecodeError`], never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::{Buf, BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};

/// A value that can be written in a given version of its message.
pub trait Encode {
    /// Writes `self` as `version` of its message.
    fn encode<B: BufMut>(&self, buf: &mut B, version: i16) -> Result<(), EncodeError>;
    /// The number of bytes [`Encode::encode`] writes for `version`.
    fn encoded_len(&self, version: i16) -> Result<usize, EncodeError>;
}

/// A value that can be read from a given version of its message.
pub trait Decode: Sized {
    /// Reads a value of `version` from the front of `buf`, advancing it.
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;
}

/// A request message: its API key, the versions this crate speaks, its header versions and the
/// type of its response.
pub trait Request: Encode + Decode {
    /// The API key.
    const API_KEY: crate::api_key::ApiKey;
    /// The lowest version this crate can encode and decode.
    const MIN_VERSION: i16;
    /// The highest version this crate can encode and decode.
    const MAX_VERSION: i16;
    /// The matching response.
    type Response: Encode + Decode;
    /// The request header version used with `version` of this request (1, or 2 when flexible).
    fn request_header_version(version: i16) -> i16;
    /// The response header version used with `version` (0, or 1 when flexible; ApiVersions
    /// responses always use 0).
    fn response_header_version(version: i16) -> i16;
}

/// Tagged fields this crate does not know, by tag, kept so they are written back unchanged.
pub type UnknownTaggedFields = BTreeMap<u32, Bytes>;

// ---------------------------------------------------------------------------------------------
// KString

/// A UTF-8 string sharing the frame's memory: a [`Bytes`] validated once as UTF-8.
#[derive(Clone, Default)]
pub struct KString(Bytes);

impl KString {
    /// An empty string.
    pub const fn new() -> Self {
        KString(Bytes::new())
    }

    /// A string over static text, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        KString(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps `bytes` after checking they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(KString(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Checked on construction; the fallback is unreachable but keeps this panic-free.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Unwraps the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for KString {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for KString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for KString {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for KString {
    fn from(s: &str) -> Self {
        KString(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for KString {
    fn from(s: String) -> Self {
        KString(Bytes::from(s.into_bytes()))
    }
}

impl From<&String> for KString {
    fn from(s: &String) -> Self {
        KString::from(s.as_str())
    }
}

impl From<KString> for String {
    fn from(s: KString) -> Self {
        s.as_str().to_owned()
    }
}

impl PartialEq for KString {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for KString {}

impl PartialEq<str> for KString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for KString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for KString {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for KString {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for KString {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for KString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for KString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Uuid

/// A 128-bit UUID as Kafka writes it (16 bytes, most significant first).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero UUID Kafka uses as "no id".
    pub const ZERO: Uuid = Uuid([0; 16]);

    /// The UUID with these 128 bits.
    pub fn from_u128(v: u128) -> Self {
        Uuid(v.to_be_bytes())
    }

    /// The 128 bits.
    pub fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        for (i, x) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Fails unless `buf` holds at least `n` more bytes.
#[inline]
pub fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(DecodeError::UnexpectedEof {
            what,
            needed: n,
            remaining: buf.remaining(),
        })
    } else {
        Ok(())
    }
}

/// Reads an `int8`.
pub fn get_i8(buf: &mut Bytes, what: &'static str) -> Result<i8, DecodeError> {
    need(buf, 1, what)?;
    Ok(buf.get_i8())
}

/// Reads an `int16`.
pub fn get_i16(buf: &mut Bytes, what: &'static str) -> Result<i16, DecodeError> {
    need(buf, 2, what)?;
    Ok(buf.get_i16())
}

/// Reads an `int32`.
pub fn get_i32(buf: &mut Bytes, what: &'static str) -> Result<i32, DecodeError> {
    need(buf, 4, what)?;
    Ok(buf.get_i32())
}

/// Reads an `int64`.
pub fn get_i64(buf: &mut Bytes, what: &'static str) -> Result<i64, DecodeError> {
    need(buf, 8, what)?;
    Ok(buf.get_i64())
}

/// Reads a `uint16`.
pub fn get_u16(buf: &mut Bytes, what: &'static str) -> Result<u16, DecodeError> {
    need(buf, 2, what)?;
    Ok(buf.get_u16())
}

/// Reads a `uint32`.
pub fn get_u32(buf: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    need(buf, 4, what)?;
    Ok(buf.get_u32())
}

/// Reads a `float64`.
pub fn get_f64(buf: &mut Bytes, what: &'static str) -> Result<f64, DecodeError> {
    need(buf, 8, what)?;
    Ok(buf.get_f64())
}

/// Reads a `bool` (any non-zero byte is true, as Java reads it).
pub fn get_bool(buf: &mut Bytes, what: &'static str) -> Result<bool, DecodeError> {
    need(buf, 1, what)?;
    Ok(buf.get_u8() != 0)
}

/// Reads a `uuid`.
pub fn get_uuid(buf: &mut Bytes, what: &'static str) -> Result<Uuid, DecodeError> {
    need(buf, 16, what)?;
    let mut b = [0u8; 16];
    buf.copy_to_slice(&mut b);
    Ok(Uuid(b))
}

/// Reads an unsigned varint of at most 32 bits.
pub fn get_uvarint(buf: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        need(buf, 1, what)?;
        let b = buf.get_u8();
        if i == 4 && b > 0x0f {
            return Err(DecodeError::InvalidVarint { what });
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint { what })
}

/// Reads an unsigned varint of at most 64 bits.
pub fn get_uvarlong(buf: &mut Bytes, what: &'static str) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        need(buf, 1, what)?;
        let b = buf.get_u8();
        if i == 9 && b > 0x01 {
            return Err(DecodeError::InvalidVarint { what });
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint { what })
}

/// Reads a zig-zag signed varint of at most 32 bits.
pub fn get_varint(buf: &mut Bytes, what: &'static str) -> Result<i32, DecodeError> {
    let v = get_uvarint(buf, what)?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Reads a zig-zag signed varint of at most 64 bits.
pub fn get_varlong(buf: &mut Bytes, what: &'static str) -> Result<i64, DecodeError> {
    let v = get_uvarlong(buf, what)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// Reads a length prefix (`int16` or `int32`, or compact `uvarint` minus one); `None` is null.
/// A length larger than what remains is an error.
fn get_len(
    buf: &mut Bytes,
    compact: bool,
    wide: bool,
    what: &'static str,
) -> Result<Option<usize>, DecodeError> {
    let len: i64 = if compact {
        i64::from(get_uvarint(buf, what)?) - 1
    } else if wide {
        i64::from(get_i32(buf, what)?)
    } else {
        i64::from(get_i16(buf, what)?)
    };
    if len == -1 {
        return Ok(None);
    }
    if len < 0 || len as u64 > buf.remaining() as u64 {
        return Err(DecodeError::InvalidLength {
            what,
            len,
            remaining: buf.remaining(),
        });
    }
    Ok(Some(len as usize))
}

/// Reads a nullable string (`int16` length, or compact).
pub fn get_nullable_string(
    buf: &mut Bytes,
    compact: bool,
    what: &'static str,
) -> Result<Option<KString>, DecodeError> {
    match get_len(buf, compact, false, what)? {
        None => Ok(None),
        Some(n) => {
            let b = buf.split_to(n);
            KString::from_utf8(b)
                .map(Some)
                .map_err(|_| DecodeError::InvalidUtf8 { what })
        }
    }
}

/// Reads a non-nullable string.
pub fn get_string(
    buf: &mut Bytes,
    compact: bool,
    what: &'static str,
) -> Result<KString, DecodeError> {
    get_nullable_string(buf, compact, what)?.ok_or(DecodeError::UnexpectedNull { what })
}

/// Reads nullable bytes (`int32` length, or compact), zero-copy.
pub fn get_nullable_bytes(
    buf: &mut Bytes,
    compact: bool,
    what: &'static str,
) -> Result<Option<Bytes>, DecodeError> {
    Ok(get_len(buf, compact, true, what)?.map(|n| buf.split_to(n)))
}

/// Reads non-nullable bytes.
pub fn get_bytes(buf: &mut Bytes, compact: bool, what: &'static str) -> Result<Bytes, DecodeError> {
    get_nullable_bytes(buf, compact, what)?.ok_or(DecodeError::UnexpectedNull { what })
}

/// Reads an array count (`int32`, or compact); `None` is null. The count times `min_elem`
/// (the smallest encoding of one element, at least 1 is assumed) must fit in what remains, so a
/// hostile count cannot make the caller allocate.
pub fn get_array_len(
    buf: &mut Bytes,
    compact: bool,
    min_elem: usize,
    what: &'static str,
) -> Result<Option<usize>, DecodeError> {
    let len: i64 = if compact {
        i64::from(get_uvarint(buf, what)?) - 1
    } else {
        i64::from(get_i32(buf, what)?)
    };
    if len == -1 {
        return Ok(None);
    }
    let need_bytes = (len as u64).saturating_mul(min_elem.max(1) as u64);
    if len < 0 || need_bytes > buf.remaining() as u64 {
        return Err(DecodeError::InvalidLength {
            what,
            len,
            remaining: buf.remaining(),
        });
    }
    Ok(Some(len as usize))
}

/// A first capacity for a vector of `n` elements already checked against the input: capped, so
/// growth past it is paid for by bytes actually decoded.
#[inline]
pub fn initial_capacity(n: usize) -> usize {
    n.min(1024)
}

/// Reads the tagged-field section's header: the number of tagged fields.
pub fn get_tag_count(buf: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    get_uvarint(buf, what)
}

/// Reads one tagged field's tag and its data (zero-copy).
pub fn get_tagged_field(buf: &mut Bytes, what: &'static str) -> Result<(u32, Bytes), DecodeError> {
    let tag = get_uvarint(buf, what)?;
    let size = get_uvarint(buf, what)? as usize;
    if size > buf.remaining() {
        return Err(DecodeError::InvalidLength {
            what,
            len: size as i64,
            remaining: buf.remaining(),
        });
    }
    Ok((tag, buf.split_to(size)))
}

/// Fails if a tagged field's data was not consumed exactly.
pub fn expect_empty(buf: &Bytes, what: &'static str) -> Result<(), DecodeError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes {
            what,
            extra: buf.len(),
        })
    }
}

/// Reads the tagged-field section of a structure that knows no tags.
pub fn get_unknown_tagged_fields(
    buf: &mut Bytes,
    what: &'static str,
) -> Result<UnknownTaggedFields, DecodeError> {
    let n = get_tag_count(buf, what)?;
    let mut out = UnknownTaggedFields::new();
    for _ in 0..n {
        let (tag, data) = get_tagged_field(buf, what)?;
        out.insert(tag, data);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Writes an `int8`.
#[inline]
pub fn put_i8<B: BufMut>(buf: &mut B, v: i8) {
    buf.put_i8(v)
}
/// Writes an `int16`.
#[inline]
pub fn put_i16<B: BufMut>(buf: &mut B, v: i16) {
    buf.put_i16(v)
}
/// Writes an `int32`.
#[inline]
pub fn put_i32<B: BufMut>(buf: &mut B, v: i32) {
    buf.put_i32(v)
}
/// Writes an `int64`.
#[inline]
pub fn put_i64<B: BufMut>(buf: &mut B, v: i64) {
    buf.put_i64(v)
}
/// Writes a `uint16`.
#[inline]
pub fn put_u16<B: BufMut>(buf: &mut B, v: u16) {
    buf.put_u16(v)
}
/// Writes a `uint32`.
#[inline]
pub fn put_u32<B: BufMut>(buf: &mut B, v: u32) {
    buf.put_u32(v)
}
/// Writes a `float64`.
#[inline]
pub fn put_f64<B: BufMut>(buf: &mut B, v: f64) {
    buf.put_f64(v)
}
/// Writes a `bool`.
#[inline]
pub fn put_bool<B: BufMut>(buf: &mut B, v: bool) {
    buf.put_u8(u8::from(v))
}
/// Writes a `uuid`.
#[inline]
pub fn put_uuid<B: BufMut>(buf: &mut B, v: &Uuid) {
    buf.put_slice(&v.0)
}

/// Writes an unsigned varint.
pub fn put_uvarint<B: BufMut>(buf: &mut B, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes an unsigned 64-bit varint.
pub fn put_uvarlong<B: BufMut>(buf: &mut B, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes a zig-zag signed varint.
pub fn put_varint<B: BufMut>(buf: &mut B, v: i32) {
    put_uvarint(buf, ((v << 1) ^ (v >> 31)) as u32)
}

/// Writes a zig-zag signed 64-bit varint.
pub fn put_varlong<B: BufMut>(buf: &mut B, v: i64) {
    put_uvarlong(buf, ((v << 1) ^ (v >> 63)) as u64)
}

/// The encoded size of an unsigned varint.
pub fn uvarint_len(v: u32) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// The encoded size of an unsigned 64-bit varint.
pub fn uvarlong_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// The encoded size of a zig-zag signed varint.
pub fn varint_len(v: i32) -> usize {
    uvarint_len(((v << 1) ^ (v >> 31)) as u32)
}

/// The encoded size of a zig-zag signed 64-bit varint.
pub fn varlong_len(v: i64) -> usize {
    uvarlong_len(((v << 1) ^ (v >> 63)) as u64)
}

fn put_len<B: BufMut>(
    buf: &mut B,
    len: Option<usize>,
    compact: bool,
    max: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    match len {
        None if compact => put_uvarint(buf, 0),
        None if max == i16::MAX as usize => put_i16(buf, -1),
        None => put_i32(buf, -1),
        Some(n) => {
            if n > max || (compact && n >= u32::MAX as usize) {
                return Err(EncodeError::TooLong { what, len: n });
            }
            if compact {
                put_uvarint(buf, n as u32 + 1)
            } else if max == i16::MAX as usize {
                put_i16(buf, n as i16)
            } else {
                put_i32(buf, n as i32)
            }
        }
    }
    Ok(())
}

fn len_prefix_len(len: Option<usize>, compact: bool, wide: bool) -> usize {
    if compact {
        uvarint_len(len.map_or(0, |n| (n as u32).wrapping_add(1)))
    } else if wide {
        4
    } else {
        2
    }
}

const STR_MAX: usize = i16::MAX as usize;
const BYTES_MAX: usize = i32::MAX as usize;

/// Writes a nullable string. `nullable` says whether null may be written in this version.
pub fn put_nullable_string<B: BufMut>(
    buf: &mut B,
    v: Option<&str>,
    compact: bool,
    nullable: bool,
    version: i16,
    what: &'static str,
) -> Result<(), EncodeError> {
    match v {
        None if !nullable => Err(EncodeError::NullNotAllowed { what, version }),
        None => put_len(buf, None, compact, STR_MAX, what),
        Some(s) => put_string(buf, s, compact, what),
    }
}

/// Writes a string.
pub fn put_string<B: BufMut>(
    buf: &mut B,
    v: &str,
    compact: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, Some(v.len()), compact, STR_MAX, what)?;
    buf.put_slice(v.as_bytes());
    Ok(())
}

/// The encoded size of a nullable string.
pub fn nullable_string_len(v: Option<&str>, compact: bool) -> usize {
    len_prefix_len(v.map(str::len), compact, false) + v.map_or(0, str::len)
}

/// The encoded size of a string.
pub fn string_len(v: &str, compact: bool) -> usize {
    len_prefix_len(Some(v.len()), compact, false) + v.len()
}

/// Writes nullable bytes.
pub fn put_nullable_bytes<B: BufMut>(
    buf: &mut B,
    v: Option<&[u8]>,
    compact: bool,
    nullable: bool,
    version: i16,
    what: &'static str,
) -> Result<(), EncodeError> {
    match v {
        None if !nullable => Err(EncodeError::NullNotAllowed { what, version }),
        None => put_len(buf, None, compact, BYTES_MAX, what),
        Some(s) => put_bytes(buf, s, compact, what),
    }
}

/// Writes bytes.
pub fn put_bytes<B: BufMut>(
    buf: &mut B,
    v: &[u8],
    compact: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, Some(v.len()), compact, BYTES_MAX, what)?;
    buf.put_slice(v);
    Ok(())
}

/// The encoded size of nullable bytes.
pub fn nullable_bytes_len(v: Option<&[u8]>, compact: bool) -> usize {
    len_prefix_len(v.map(<[u8]>::len), compact, true) + v.map_or(0, <[u8]>::len)
}

/// The encoded size of bytes.
pub fn bytes_len(v: &[u8], compact: bool) -> usize {
    len_prefix_len(Some(v.len()), compact, true) + v.len()
}

/// Writes an array count; `None` is null (the caller checked nullability).
pub fn put_array_len<B: BufMut>(
    buf: &mut B,
    len: Option<usize>,
    compact: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, len, compact, BYTES_MAX, what)
}

/// The encoded size of an array count.
pub fn array_len_len(len: Option<usize>, compact: bool) -> usize {
    len_prefix_len(len, compact, true)
}

/// Writes unknown tagged fields whose tags are in `range`, in tag order.
pub fn put_unknown_tags<B: BufMut>(
    buf: &mut B,
    fields: &UnknownTaggedFields,
    range: impl std::ops::RangeBounds<u32>,
    what: &'static str,
) -> Result<(), EncodeError> {
    for (tag, data) in fields.range(range) {
        if data.len() > u32::MAX as usize {
            return Err(EncodeError::TooLong {
                what,
                len: data.len(),
            });
        }
        put_uvarint(buf, *tag);
        put_uvarint(buf, data.len() as u32);
        buf.put_slice(data);
    }
    Ok(())
}

/// The encoded size of unknown tagged fields (without the count).
pub fn unknown_tags_len(fields: &UnknownTaggedFields) -> usize {
    fields
        .iter()
        .map(|(tag, data)| uvarint_len(*tag) + uvarint_len(data.len() as u32) + data.len())
        .sum()
}

/// Writes the header of a known tagged field: its tag and its size.
pub fn put_tag_header<B: BufMut>(
    buf: &mut B,
    tag: u32,
    size: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    if size > u32::MAX as usize {
        return Err(EncodeError::TooLong { what, len: size });
    }
    put_uvarint(buf, tag);
    put_uvarint(buf, size as u32);
    Ok(())
}

/// The encoded size of a known tagged field with `size` bytes of data.
pub fn tag_len(tag: u32, size: usize) -> usize {
    uvarint_len(tag) + uvarint_len(size as u32) + size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0i32, 1, -1, 63, -64, 64, 300, i32::MAX, i32::MIN] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut bytes = Bytes::from(b);
            assert_eq!(get_varint(&mut bytes, "t").unwrap(), v);
        }
        for v in [0i64, -1, i64::MAX, i64::MIN, 1 << 40] {
            let mut b = Vec::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v));
            let mut bytes = Bytes::from(b);
            assert_eq!(get_varlong(&mut bytes, "t").unwrap(), v);
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(
            get_uvarint(&mut b, "t"),
            Err(DecodeError::InvalidVarint { .. })
        ));
    }

    #[test]
    fn huge_lengths_are_rejected_before_allocating() {
        let mut b = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0]);
        assert!(matches!(
            get_array_len(&mut b, false, 1, "t"),
            Err(DecodeError::InvalidLength { .. })
        ));
        let mut b = Bytes::from_static(&[0x7f, 0xff, b'a']);
        assert!(matches!(
            get_string(&mut b, false, "t"),
            Err(DecodeError::InvalidLength { .. })
        ));
        let mut b = Bytes::from_static(&[0xff, 0xfe]);
        assert!(matches!(
            get_nullable_string(&mut b, false, "t"),
            Err(DecodeError::InvalidLength { .. })
        ));
    }

    #[test]
    fn kstring_is_validated() {
        assert!(KString::from_utf8(Bytes::from_static(&[0xff])).is_err());
        let s = KString::from("héllo");
        assert_eq!(&*s, "héllo");
        assert_eq!(s.to_string(), "héllo");
    }
}
