//! Errors of the codec. Decoding never panics: every malformed input maps to a [`DecodeError`].

use std::fmt;

/// What went wrong while decoding bytes from the wire.
///
/// `what` names the field, structure or step being decoded (for example
/// `"ApiVersionsResponse.api_keys"` or `"record batch header"`), so an error read in a log points
/// at the place in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before `what` was complete.
    #[error(
        "unexpected end of input decoding {what}: needed {needed} more bytes, {remaining} left"
    )]
    UnexpectedEof {
        what: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// A length or count read from the wire is negative (and not the null marker), or claims more
    /// elements or bytes than the input can hold.
    #[error("invalid length {len} for {what} ({remaining} bytes left)")]
    InvalidLength {
        what: &'static str,
        len: i64,
        remaining: usize,
    },
    /// A null was read where the field is not nullable in this version.
    #[error("null value for non-nullable {what}")]
    UnexpectedNull { what: &'static str },
    /// A varint ran past its maximum width.
    #[error("malformed varint in {what}")]
    InvalidVarint { what: &'static str },
    /// A string was not valid UTF-8.
    #[error("invalid UTF-8 in {what}")]
    InvalidUtf8 { what: &'static str },
    /// A value outside its allowed set (an unknown magic byte, a bad boolean, ...).
    #[error("invalid value {value} for {what}")]
    InvalidValue { what: &'static str, value: i64 },
    /// The (API key, version) pair is not one this codec knows.
    #[error("unsupported version {version} of API key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// A frame's size prefix is larger than the configured maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { size: i64, max: usize },
    /// A CRC-32C check failed.
    #[error("CRC mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    /// Decompressed output would exceed the cap.
    #[error("{codec} decompression exceeds the cap of {cap} bytes")]
    DecompressedTooLarge { codec: Codec, cap: usize },
    /// The compressed data is corrupt.
    #[error("corrupt {codec} data: {detail}")]
    Decompression { codec: Codec, detail: String },
    /// Bytes were left over after a structure that must fill its container exactly.
    #[error("{extra} trailing bytes after {what}")]
    TrailingBytes { what: &'static str, extra: usize },
}

/// What went wrong while encoding a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field set to a non-default value does not exist in the version being written.
    #[error("{what} cannot be written in version {version}")]
    FieldNotInVersion { what: &'static str, version: i16 },
    /// A null was given for a field that is not nullable in the version being written.
    #[error("{what} is not nullable in version {version}")]
    NullNotAllowed { what: &'static str, version: i16 },
    /// A string, byte array or array is longer than the wire format can express.
    #[error("{what} is too long ({len})")]
    TooLong { what: &'static str, len: usize },
    /// The version is outside the message's supported range.
    #[error("unsupported version {version} of API key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// A record or batch is too large for the configured limit.
    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    /// Compression failed.
    #[error("{codec} compression failed: {detail}")]
    Compression { codec: Codec, detail: String },
}

/// A record-batch compression codec, as named in the batch attributes (bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The attribute value of this codec (bits 0-2 of a v2 batch's attributes).
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// The codec with attribute value `id`, if known.
    pub fn from_id(id: i16) -> Option<Codec> {
        Some(match id {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            _ => return None,
        })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        })
    }
}
