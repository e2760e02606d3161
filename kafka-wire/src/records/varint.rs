//! Zig-zag varints as used inside v2 records (Protocol Buffers' `sint32`/`sint64` encoding:
//! 7 bits per byte, least significant group first, high bit set on every byte but the last).

use bytes::BufMut;

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

fn write_raw<B: BufMut>(buf: &mut B, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes `v` as a zig-zag varint.
pub fn write_varint<B: BufMut>(buf: &mut B, v: i32) {
    write_raw(buf, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

/// Writes `v` as a zig-zag varlong.
pub fn write_varlong<B: BufMut>(buf: &mut B, v: i64) {
    write_raw(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn raw_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// The number of bytes [`write_varint`] writes for `v`.
pub fn varint_len(v: i32) -> usize {
    raw_len(u64::from(((v << 1) ^ (v >> 31)) as u32))
}

/// The number of bytes [`write_varlong`] writes for `v`.
pub fn varlong_len(v: i64) -> usize {
    raw_len(((v << 1) ^ (v >> 63)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            write_varlong(&mut out, v);
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
            write_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(read_varint(&out, &mut pos, "t").unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn varlong_round_trip(v: i64) {
            let mut out = Vec::new();
            write_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(read_varlong(&out, &mut pos, "t").unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }
    }
}
