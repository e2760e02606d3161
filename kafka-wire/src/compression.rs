//! Record-batch compression codecs, written the way the Java client writes them and read with a
//! hard cap on the decompressed size.
//!
//! | codec  | written as                                                        | read                         |
//! |--------|-------------------------------------------------------------------|------------------------------|
//! | gzip   | one gzip member, deflate level 6 (Java's `Deflater.DEFAULT_COMPRESSION`), mtime 0 | any number of gzip members |
//! | snappy | snappy-java's "xerial" stream: 16-byte header, then 32 KiB input blocks each as `i32` length + raw snappy | xerial, the snappy framing format, or one raw snappy block |
//! | lz4    | LZ4 frame: 64 KiB independent blocks, no checksums but the header's, end mark | LZ4 frame                    |
//! | zstd   | one zstd frame, level 3 (Java's default), no content checksum, flushed then ended as zstd-jni does | zstd frames |
//!
//! Java's lz4 default level (9) uses lz4's *fast* compressor, which is what we always use
//! (`lz4_flex` has no high-compression mode), so an lz4 level is accepted but ignored.
//!
//! Decompression never inflates without bound: every decoder is streaming and stops one byte past
//! `cap`, giving [`DecodeError::DecompressedTooLarge`]; raw snappy blocks announce their length,
//! which is checked against the cap before anything is allocated.
//!
//! ```
//! use bytes::BytesMut;
//! use kafka_wire::{compression, Codec};
//!
//! let mut out = BytesMut::new();
//! compression::compress(Codec::Zstd, b"hello hello hello hello", &mut out).unwrap();
//! let back = compression::decompress(Codec::Zstd, &out, 1024).unwrap();
//! assert_eq!(&back[..], b"hello hello hello hello");
//! ```

use std::io::{self, Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Codec, DecodeError, EncodeError};

/// Java's default gzip level (`Deflater.DEFAULT_COMPRESSION`, which zlib maps to 6).
pub const GZIP_DEFAULT_LEVEL: i32 = 6;
/// Java's default zstd level (`compression.zstd.level`).
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;
/// Java's default lz4 level (`compression.lz4.level`); it selects lz4's fast compressor.
pub const LZ4_DEFAULT_LEVEL: i32 = 9;
/// Uncompressed bytes per xerial snappy block, snappy-java's default block size.
pub const SNAPPY_XERIAL_BLOCK_SIZE: usize = 32 * 1024;
/// The default cap on decompressed output used by [`crate::records::ReadOptions`]: 64 MiB.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// The 8-byte magic that opens a snappy-java (xerial) stream.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Stream identifier chunk of the snappy framing format.
const SNAPPY_FRAME_MAGIC: [u8; 10] = [0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];

/// Compresses `input` with `codec` at Java's default level, appending to `out`.
///
/// [`Codec::None`] copies `input` as is.
pub fn compress(codec: Codec, input: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    compress_with_level(codec, None, input, out)
}

/// Compresses `input` with `codec` at `level` (`None`: Java's default), appending to `out`.
///
/// Levels follow Java's `compression.<codec>.level` settings: gzip 1..=9 (and -1 for the default),
/// zstd from -131072 to 22, lz4 1..=17 (ignored: always lz4's fast compressor). Snappy has no level.
pub fn compress_with_level(
    codec: Codec,
    level: Option<i32>,
    input: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let fail = |e: io::Error| EncodeError::Compression {
        codec,
        detail: e.to_string(),
    };
    match codec {
        Codec::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Codec::Gzip => {
            let level = match level {
                None | Some(-1) => GZIP_DEFAULT_LEVEL,
                Some(l) if (0..=9).contains(&l) => l,
                Some(l) => {
                    return Err(EncodeError::Compression {
                        codec,
                        detail: format!("gzip level {l} is outside 0..=9"),
                    })
                }
            };
            // `level` is in 0..=9 here, so the cast cannot wrap.
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(out.writer(), flate2::Compression::new(level.unsigned_abs()));
            enc.write_all(input).map_err(fail)?;
            enc.finish().map_err(fail)?;
            Ok(())
        }
        Codec::Snappy => {
            compress_xerial(input, out);
            Ok(())
        }
        Codec::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_checksums(false)
                .content_checksum(false)
                .content_size(None);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out.writer());
            enc.write_all(input).map_err(fail)?;
            enc.finish().map_err(|e| EncodeError::Compression {
                codec,
                detail: e.to_string(),
            })?;
            Ok(())
        }
        Codec::Zstd => {
            let level = level.unwrap_or(ZSTD_DEFAULT_LEVEL);
            let mut enc = zstd::stream::write::Encoder::new(out.writer(), level).map_err(fail)?;
            enc.write_all(input).map_err(fail)?;
            // Java's stream is flushed before it is closed (its buffered wrapper flushes on
            // close), which ends the data in a non-final block followed by an empty last block;
            // doing the same keeps our frames byte-identical to Java's.
            enc.flush().map_err(fail)?;
            enc.finish().map_err(fail)?;
            Ok(())
        }
    }
}

/// Writes `input` as a snappy-java stream: header (magic, version 1, compatible version 1), then
/// each block of at most [`SNAPPY_XERIAL_BLOCK_SIZE`] input bytes as a big-endian `i32` length
/// and a raw snappy block.
fn compress_xerial(input: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(&XERIAL_MAGIC);
    out.put_i32(1);
    out.put_i32(1);
    let mut enc = snap::raw::Encoder::new();
    for block in input.chunks(SNAPPY_XERIAL_BLOCK_SIZE) {
        let len_at = out.len();
        out.put_i32(0);
        let start = out.len();
        out.resize(start + snap::raw::max_compress_len(block.len()), 0);
        // A block of at most 32 KiB always fits `max_compress_len` bytes; the encoder cannot fail.
        let n = enc.compress(block, &mut out[start..]).unwrap_or(0);
        out.truncate(start + n);
        let n32 = i32::try_from(n).unwrap_or(i32::MAX);
        out[len_at..len_at + 4].copy_from_slice(&n32.to_be_bytes());
    }
}

/// Decompresses `input` compressed with `codec`, producing at most `cap` bytes.
///
/// Output longer than `cap` gives [`DecodeError::DecompressedTooLarge`]; decoding stops as soon as
/// the cap is passed, so memory stays bounded by about `cap` whatever the input claims.
/// [`Codec::None`] returns a copy of `input` (subject to the same cap).
pub fn decompress(codec: Codec, input: &[u8], cap: usize) -> Result<Bytes, DecodeError> {
    let corrupt = |e: io::Error| DecodeError::Decompression {
        codec,
        detail: e.to_string(),
    };
    let too_large = DecodeError::DecompressedTooLarge { codec, cap };
    let out = match codec {
        Codec::None => {
            if input.len() > cap {
                return Err(too_large);
            }
            input.to_vec()
        }
        Codec::Gzip => read_capped(flate2::read::MultiGzDecoder::new(input), codec, cap)?,
        Codec::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(input), codec, cap)?,
        Codec::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt)?;
            // Bound the window (the decoder's history buffer) the frame may ask for: at least 8 MiB
            // so streams from any level up to 19 decode, at most Java's own limit (2^27).
            let window_log = usize::BITS - cap.max(1).leading_zeros();
            dec.window_log_max(window_log.clamp(23, 27))
                .map_err(corrupt)?;
            read_capped(dec, codec, cap)?
        }
        Codec::Snappy => decompress_snappy(input, cap)?,
    };
    Ok(Bytes::from(out))
}

/// Reads `reader` to the end, failing once more than `cap` bytes come out.
fn read_capped<R: Read>(reader: R, codec: Codec, cap: usize) -> Result<Vec<u8>, DecodeError> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Decompression {
            codec,
            detail: e.to_string(),
        })?;
    if out.len() > cap {
        return Err(DecodeError::DecompressedTooLarge { codec, cap });
    }
    Ok(out)
}

fn snappy_err(detail: impl ToString) -> DecodeError {
    DecodeError::Decompression {
        codec: Codec::Snappy,
        detail: detail.to_string(),
    }
}

/// Reads a xerial stream, a snappy framing-format stream, or one raw snappy block.
fn decompress_snappy(input: &[u8], cap: usize) -> Result<Vec<u8>, DecodeError> {
    if input.len() >= 16 && input[..8] == XERIAL_MAGIC {
        return decompress_xerial(&input[16..], cap);
    }
    if input.starts_with(&SNAPPY_FRAME_MAGIC) {
        return read_capped(snap::read::FrameDecoder::new(input), Codec::Snappy, cap);
    }
    let mut out = Vec::new();
    decompress_raw_block(input, cap, &mut out)?;
    Ok(out)
}

/// Appends the decompressed raw snappy `block` to `out`, checking its announced length against what
/// `cap` leaves before allocating.
fn decompress_raw_block(block: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let len = snap::raw::decompress_len(block).map_err(snappy_err)?;
    if len > cap.saturating_sub(out.len()) {
        return Err(DecodeError::DecompressedTooLarge {
            codec: Codec::Snappy,
            cap,
        });
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(snappy_err)?;
    out.truncate(start + n);
    Ok(())
}

/// Reads the blocks of a xerial stream after its 16-byte header.
fn decompress_xerial(mut rest: &[u8], cap: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(DecodeError::UnexpectedEof {
                what: "xerial snappy block length",
                needed: 4 - rest.len(),
                remaining: rest.len(),
            });
        }
        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        let ulen = usize::try_from(len).map_err(|_| DecodeError::InvalidLength {
            what: "xerial snappy block",
            len: i64::from(len),
            remaining: rest.len(),
        })?;
        if ulen > rest.len() {
            return Err(DecodeError::InvalidLength {
                what: "xerial snappy block",
                len: i64::from(len),
                remaining: rest.len(),
            });
        }
        let (block, tail) = rest.split_at(ulen);
        decompress_raw_block(block, cap, &mut out)?;
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    #[test]
    fn round_trip_every_codec() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        for codec in ALL {
            let mut out = BytesMut::new();
            compress(codec, &data, &mut out).unwrap();
            let back = decompress(codec, &out, data.len()).unwrap();
            assert_eq!(&back[..], &data[..], "{codec}");
            assert!(matches!(
                decompress(codec, &out, data.len() - 1),
                Err(DecodeError::DecompressedTooLarge { .. })
            ));
        }
    }

    #[test]
    fn empty_input() {
        for codec in ALL {
            let mut out = BytesMut::new();
            compress(codec, b"", &mut out).unwrap();
            assert!(decompress(codec, &out, 0).unwrap().is_empty(), "{codec}");
        }
    }

    #[test]
    fn xerial_layout() {
        let data = vec![7u8; 70_000];
        let mut out = BytesMut::new();
        compress(Codec::Snappy, &data, &mut out).unwrap();
        assert_eq!(&out[..8], &XERIAL_MAGIC);
        assert_eq!(&out[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        // three blocks: 32 KiB, 32 KiB, the rest
        let mut rest = &out[16..];
        let mut blocks = 0;
        while !rest.is_empty() {
            let n = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            rest = &rest[4 + n..];
            blocks += 1;
        }
        assert_eq!(blocks, 3);
    }

    #[test]
    fn raw_and_framed_snappy_read() {
        let data = b"raw snappy raw snappy raw snappy".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            &decompress(Codec::Snappy, &raw, 1 << 20).unwrap()[..],
            &data[..]
        );
        let mut framed = snap::write::FrameEncoder::new(Vec::new());
        framed.write_all(&data).unwrap();
        let framed = framed.into_inner().unwrap();
        assert_eq!(
            &decompress(Codec::Snappy, &framed, 1 << 20).unwrap()[..],
            &data[..]
        );
        assert!(matches!(
            decompress(Codec::Snappy, &raw, 10),
            Err(DecodeError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let inputs: [&[u8]; 5] = [
            b"",
            b"\x00",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            &[
                0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1, 0x7f, 0xff,
                0xff, 0xff,
            ],
            &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40],
        ];
        for codec in ALL {
            for input in inputs {
                let _ = decompress(codec, input, 1 << 16);
            }
        }
    }
}
