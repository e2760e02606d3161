//! Codecs: how a store's keys and values become changelog bytes and back.
//!
//! Invariants:
//! - `decode(&encode(v)) == Ok(v)` for every value (property-tested below);
//! - a decoder never panics and never allocates more than its input: bytes it cannot read give a
//!   typed [`CodecError`];
//! - fixed-width integers are big-endian and length-checked: exactly `N` bytes, else
//!   [`CodecError::WrongLength`] (GKES read native-endian integers past the end of short slices,
//!   STREAMS.md D23);
//! - [`OrderedI64`]'s byte order is numeric order, so a changelog compacted or scanned by key
//!   sorts like the numbers.

use bytes::Bytes;

/// Turns a `T` into bytes and back. Implementations must be deterministic (the same value always
/// encodes to the same bytes) and their decoders must not panic on any input.
pub trait Codec<T>: Send + Sync + 'static {
    /// Encodes `value`.
    fn encode(&self, value: &T) -> Bytes;

    /// Decodes `bytes`, or says why it cannot.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// Why some bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A fixed-width value of the wrong length.
    #[error("expected {expected} bytes, got {got}")]
    WrongLength {
        /// The width the codec reads.
        expected: usize,
        /// The length it was given.
        got: usize,
    },
    /// Text that is not UTF-8.
    #[error("invalid UTF-8 after {valid_up_to} valid bytes")]
    InvalidUtf8 {
        /// How many leading bytes were valid UTF-8.
        valid_up_to: usize,
    },
    /// Anything else a codec reports (for user codecs).
    #[error("{0}")]
    Other(String),
}

/// Bytes as they are: [`Bytes`] to [`Bytes`]. Decoding copies the input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Raw;

impl Codec<Bytes> for Raw {
    fn encode(&self, value: &Bytes) -> Bytes {
        value.clone()
    }

    fn decode(&self, bytes: &[u8]) -> Result<Bytes, CodecError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

/// A [`String`] as its UTF-8 bytes; anything else is [`CodecError::InvalidUtf8`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8;

impl Codec<String> for Utf8 {
    fn encode(&self, value: &String) -> Bytes {
        Bytes::copy_from_slice(value.as_bytes())
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| CodecError::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
            })
    }
}

/// Fixed-width integers (`i64`, `u64`, `i32`, `u32`, `i16`, `u16`) in big-endian order, exactly
/// their width: any other length is [`CodecError::WrongLength`].
///
/// For unsigned integers the byte order is the numeric order; for signed ones it is not
/// (negative numbers sort after positive ones): use [`OrderedI64`] for ordered signed keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BigEndian;

macro_rules! big_endian {
    ($($t:ty),*) => {$(
        impl Codec<$t> for BigEndian {
            fn encode(&self, value: &$t) -> Bytes {
                Bytes::copy_from_slice(&value.to_be_bytes())
            }

            fn decode(&self, bytes: &[u8]) -> Result<$t, CodecError> {
                fixed(bytes).map(<$t>::from_be_bytes)
            }
        }
    )*};
}

big_endian!(i64, u64, i32, u32, i16, u16);

/// Exactly `N` bytes, else [`CodecError::WrongLength`].
fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], CodecError> {
    <[u8; N]>::try_from(bytes).map_err(|_| CodecError::WrongLength {
        expected: N,
        got: bytes.len(),
    })
}

/// An `i64` whose encoding sorts like the number: 8 bytes, big-endian, with the sign bit flipped.
///
/// Flipping the sign bit maps `i64::MIN..=i64::MAX` monotonically onto `0..=u64::MAX`
/// (`i64::MIN` → `00…00`, `-1` → `7f…ff`, `0` → `80…00`, `i64::MAX` → `ff…ff`), and big-endian
/// bytes compare like the `u64` they encode, so comparing two encodings byte by byte
/// (lexicographically, as Kafka tools and sorted stores do) gives the numeric order of the
/// values. GKES's `LexoInt64Codec` was little-endian and so did not sort (STREAMS.md D23).
/// Anything but exactly 8 bytes is [`CodecError::WrongLength`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderedI64;

const SIGN: u64 = 1 << 63;

impl Codec<i64> for OrderedI64 {
    fn encode(&self, value: &i64) -> Bytes {
        // `as` reinterprets the two's-complement bits; no value is lost.
        Bytes::copy_from_slice(&((*value as u64) ^ SIGN).to_be_bytes())
    }

    fn decode(&self, bytes: &[u8]) -> Result<i64, CodecError> {
        fixed(bytes).map(|b| (u64::from_be_bytes(b) ^ SIGN) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T, C>(codec: C, value: T)
    where
        T: PartialEq + std::fmt::Debug,
        C: Codec<T>,
    {
        let bytes = codec.encode(&value);
        assert_eq!(codec.decode(&bytes), Ok(value));
    }

    #[test]
    fn ordered_i64_encodings_at_the_edges() {
        let enc = |v: i64| OrderedI64.encode(&v).to_vec();
        assert_eq!(enc(i64::MIN), [0u8; 8]);
        assert_eq!(enc(-1), [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(enc(0), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(enc(i64::MAX), [0xffu8; 8]);
    }

    #[test]
    fn big_endian_is_big_endian() {
        assert_eq!(&BigEndian.encode(&0x0102_0304u32)[..], [1, 2, 3, 4]);
        assert_eq!(&BigEndian.encode(&-2i16)[..], [0xff, 0xfe]);
    }

    #[test]
    fn short_and_long_inputs_are_wrong_length() {
        let e = |expected, got| CodecError::WrongLength { expected, got };
        assert_eq!(Codec::<i64>::decode(&BigEndian, &[1, 2, 3]), Err(e(8, 3)));
        assert_eq!(Codec::<u64>::decode(&BigEndian, &[0; 9]), Err(e(8, 9)));
        assert_eq!(Codec::<i32>::decode(&BigEndian, &[]), Err(e(4, 0)));
        assert_eq!(Codec::<u32>::decode(&BigEndian, &[0; 5]), Err(e(4, 5)));
        assert_eq!(Codec::<i16>::decode(&BigEndian, &[0]), Err(e(2, 1)));
        assert_eq!(Codec::<u16>::decode(&BigEndian, &[0; 3]), Err(e(2, 3)));
        assert_eq!(OrderedI64.decode(&[0; 7]), Err(e(8, 7)));
    }

    #[test]
    fn invalid_utf8_says_where() {
        assert_eq!(
            Utf8.decode(b"ab\xffc"),
            Err(CodecError::InvalidUtf8 { valid_up_to: 2 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_codec_round_trips(
            i64v in any::<i64>(),
            u64v in any::<u64>(),
            i32v in any::<i32>(),
            u32v in any::<u32>(),
            i16v in any::<i16>(),
            u16v in any::<u16>(),
            text in ".*",
            raw in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            round_trip(BigEndian, i64v);
            round_trip(BigEndian, u64v);
            round_trip(BigEndian, i32v);
            round_trip(BigEndian, u32v);
            round_trip(BigEndian, i16v);
            round_trip(BigEndian, u16v);
            round_trip(OrderedI64, i64v);
            round_trip(Utf8, text);
            round_trip(Raw, Bytes::from(raw));
        }

        #[test]
        fn ordered_i64_byte_order_is_numeric_order(a in any::<i64>(), b in any::<i64>()) {
            let (ea, eb) = (OrderedI64.encode(&a), OrderedI64.encode(&b));
            prop_assert_eq!(ea[..].cmp(&eb[..]), a.cmp(&b));
        }

        #[test]
        fn unsigned_big_endian_byte_order_is_numeric_order(a in any::<u64>(), b in any::<u64>()) {
            let (ea, eb) = (BigEndian.encode(&a), BigEndian.encode(&b));
            prop_assert_eq!(ea[..].cmp(&eb[..]), a.cmp(&b));
        }

        #[test]
        fn decoders_answer_any_bytes_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let len = bytes.len();
            let checked = |width: usize, ok: bool| {
                prop_assert_eq!(ok, len == width);
                Ok(())
            };
            checked(8, Codec::<i64>::decode(&BigEndian, &bytes).is_ok())?;
            checked(8, Codec::<u64>::decode(&BigEndian, &bytes).is_ok())?;
            checked(4, Codec::<i32>::decode(&BigEndian, &bytes).is_ok())?;
            checked(4, Codec::<u32>::decode(&BigEndian, &bytes).is_ok())?;
            checked(2, Codec::<i16>::decode(&BigEndian, &bytes).is_ok())?;
            checked(2, Codec::<u16>::decode(&BigEndian, &bytes).is_ok())?;
            checked(8, OrderedI64.decode(&bytes).is_ok())?;
            match Utf8.decode(&bytes) {
                Ok(s) => prop_assert_eq!(s.as_bytes(), &bytes[..]),
                Err(CodecError::InvalidUtf8 { valid_up_to }) => {
                    prop_assert!(valid_up_to < len);
                    prop_assert!(std::str::from_utf8(&bytes).is_err());
                }
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
            prop_assert_eq!(Raw.decode(&bytes).map(|b| b.to_vec()), Ok(bytes.clone()));
        }
    }
}
