//! Decompression bombs: about 1 GiB of zeros per codec, built cheaply by repeating one small
//! compressed unit (gzip members, zstd frames, lz4 blocks, xerial snappy blocks all concatenate),
//! so nothing near 1 GiB is ever held in memory. Decoding must stop at the cap with
//! `DecompressedTooLarge`.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_wire::compression::{decompress, DEFAULT_MAX_DECOMPRESSED};
use kafka_wire::records::{ReadOptions, RecordBatch};
use kafka_wire::{Codec, DecodeError};

const MIB: usize = 1024 * 1024;

fn gzip_bomb() -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; MIB]).unwrap();
    enc.finish().unwrap().repeat(1024)
}

fn zstd_bomb() -> Vec<u8> {
    zstd::bulk::compress(&vec![0u8; MIB], 3)
        .unwrap()
        .repeat(1024)
}

fn lz4_bomb() -> Vec<u8> {
    let block = lz4_flex::block::compress(&vec![0u8; 64 * 1024]);
    // Frame header: magic, FLG (version 1, independent blocks), BD (64 KiB), header checksum.
    let desc = [0x60u8, 0x40];
    let hc = ((xxh32(&desc) >> 8) & 0xff) as u8;
    let mut out = vec![0x04, 0x22, 0x4d, 0x18, desc[0], desc[1], hc];
    for _ in 0..16 * 1024 {
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

fn snappy_bomb() -> Vec<u8> {
    let block = snap::raw::Encoder::new()
        .compress_vec(&vec![0u8; 32 * 1024])
        .unwrap();
    let mut out = vec![
        0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
    ];
    for _ in 0..32 * 1024 {
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// xxHash32 with seed 0, enough for the 2-byte LZ4 frame descriptor.
fn xxh32(data: &[u8]) -> u32 {
    const P2: u32 = 2_246_822_519;
    const P3: u32 = 3_266_489_917;
    const P4: u32 = 668_265_263;
    const P5: u32 = 374_761_393;
    let mut h = P5.wrapping_add(data.len() as u32);
    for &b in data {
        h = h.wrapping_add(u32::from(b).wrapping_mul(P5));
        h = h.rotate_left(11).wrapping_mul(2_654_435_761);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^= h >> 16;
    let _ = P4;
    h
}

fn bombs() -> Vec<(Codec, Vec<u8>)> {
    vec![
        (Codec::Gzip, gzip_bomb()),
        (Codec::Zstd, zstd_bomb()),
        (Codec::Lz4, lz4_bomb()),
        (Codec::Snappy, snappy_bomb()),
    ]
}

/// A v2 batch with a valid CRC whose records section is `section`, compressed with `codec`.
fn batch_around(codec: Codec, section: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i64(0);
    b.put_i32((49 + section.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(codec.id());
    b.put_i32(0);
    b.put_i64(0);
    b.put_i64(0);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(1);
    b.put_slice(section);
    let crc = crc32c_of(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// CRC-32C (Castagnoli), bitwise: the test does not lean on the crate under test's dependency.
fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn lz4_bomb_header_is_valid() {
    // The hand-built frame must be a real frame: the first 64 KiB decode fine.
    let bomb = lz4_bomb();
    let one_block = [
        &bomb[..7 + 4 + (bomb.len() - 11) / (16 * 1024) - 4],
        &[0, 0, 0, 0],
    ]
    .concat();
    assert_eq!(
        decompress(Codec::Lz4, &one_block, 64 * 1024).unwrap().len(),
        64 * 1024
    );
}

#[test]
fn one_gib_bombs_stop_at_the_cap() {
    for (codec, bomb) in bombs() {
        let cap = 4 * MIB;
        match decompress(codec, &bomb, cap) {
            Err(DecodeError::DecompressedTooLarge { codec: c, cap: k }) => {
                assert_eq!((c, k), (codec, cap))
            }
            other => panic!("{codec}: {:?}", other.map(|b| b.len())),
        }
        // The same bomb inside a record batch, read with a small cap.
        let batch = RecordBatch::new(batch_around(codec, &bomb)).unwrap();
        batch.verify_crc().unwrap();
        let mut opts = ReadOptions::default();
        opts.max_decompressed(cap);
        assert!(
            matches!(
                batch.records(&opts),
                Err(DecodeError::DecompressedTooLarge { .. })
            ),
            "{codec} in a batch"
        );
    }
}

#[test]
fn default_cap_stops_a_zstd_bomb() {
    let bomb = zstd_bomb();
    let batch = RecordBatch::new(batch_around(Codec::Zstd, &bomb)).unwrap();
    assert!(matches!(
        batch.records(&ReadOptions::default()),
        Err(DecodeError::DecompressedTooLarge { cap, .. }) if cap == DEFAULT_MAX_DECOMPRESSED
    ));
}

#[test]
fn raw_snappy_length_claim_is_checked_before_allocating() {
    // A raw snappy block whose preamble claims 4 GiB - 1 of output, followed by nothing.
    let claim = [0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(matches!(
        decompress(Codec::Snappy, &claim, 64 * MIB),
        Err(DecodeError::DecompressedTooLarge { .. })
    ));
    // Same inside a xerial stream.
    let mut x = vec![
        0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
    ];
    x.extend_from_slice(&5u32.to_be_bytes());
    x.extend_from_slice(&claim);
    assert!(matches!(
        decompress(Codec::Snappy, &x, 64 * MIB),
        Err(DecodeError::DecompressedTooLarge { .. })
    ));
    // A xerial block length larger than the bytes left.
    let mut y = x[..16].to_vec();
    y.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(matches!(
        decompress(Codec::Snappy, &y, 64 * MIB),
        Err(DecodeError::InvalidLength { .. })
    ));
}
