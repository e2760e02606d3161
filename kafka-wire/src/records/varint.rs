//! Zig-zag varints as used inside v2 records (Protocol Buffers' `sint32`/`sint64` encoding:
//! 7 bits per byte, least significant group first, high bit set on every byte but the last).
//!
//! Only the readers live here: they walk a record's bytes by position without copying. Writing and
//! sizing use the codec's [`put_varint`](crate::codec::put_varint) family.

use crate::error::DecodeError;

/// The most bytes a zig-zag `i32` takes.
pub const MAX_VARINT_LEN: usize = 5;
/// The most bytes a zig-zag `i64` takes.
pub const MAX_VARLONG_LEN: usize = 10;

/// Reads an unsigned 64-bit varint of at most `max_len` bytes from `buf` at `*pos`, advancing it.
fn read_raw(
    buf: &[u8],
    pos: &mut usize,
    max_len: usize,
    what: &'static str,
) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..max_len {
        let Some(&byte) = buf.get(*pos + i) else {
            return Err(DecodeError::UnexpectedEof {
                what,
                needed: 1,
                remaining: 0,
            });
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint { what })
}

/// Reads a zig-zag varint (`i32`) from `buf` at `*pos`, advancing `*pos` past it.
///
/// More than five bytes, or a value that does not fit 32 bits, is [`DecodeError::InvalidVarint`].
pub fn read_varint(buf: &[u8], pos: &mut usize, what: &'static str) -> Result<i32, DecodeError> {
    let start = *pos;
    let raw = read_raw(buf, pos, MAX_VARINT_LEN, what)?;
    let Ok(raw) = u32::try_from(raw) else {
        *pos = start;
        return Err(DecodeError::InvalidVarint { what });
    };
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zig-zag varlong (`i64`) from `buf` at `*pos`, advancing `*pos` past it.
pub fn read_varlong(buf: &[u8], pos: &mut usize, what: &'static str) -> Result<i64, DecodeError> {
    let raw = read_raw(buf, pos, MAX_VARLONG_LEN, what)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{put_varint, put_varlong, varint_len, varlong_len};
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out, bytes);
            let mut pos = 0;
            assert_eq!(read_varlong(bytes, &mut pos, "t").unwrap(), v);
            assert_eq!(pos, bytes.len());
        }
    }

    #[test]
    fn bad_varints() {
        let mut pos = 0;
        assert!(matches!(
            read_varint(&[0xff; 6], &mut pos, "t"),
            Err(DecodeError::InvalidVarint { .. })
        ));
        let mut pos = 0;
        // five bytes but more than 32 bits
        assert!(matches!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x7f], &mut pos, "t"),
            Err(DecodeError::InvalidVarint { .. })
        ));
        let mut pos = 0;
        assert!(matches!(
            read_varlong(&[0x80, 0x80], &mut pos, "t"),
            Err(DecodeError::UnexpectedEof { .. })
        ));
        let mut pos = 0;
        assert!(matches!(
            read_varlong(&[0xff; 11], &mut pos, "t"),
            Err(DecodeError::InvalidVarint { .. })
        ));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v: i32) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(read_varint(&out, &mut pos, "t").unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn varlong_round_trip(v: i64) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(read_varlong(&out, &mut pos, "t").unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }
    }
}
