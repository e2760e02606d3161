use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::error::{Codec, DecodeError, EncodeError};

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Gzip,
    Codec::Snappy,
    Codec::Lz4,
    Codec::Zstd,
];

type OwnedRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn build(options: BatchOptions, records: &[OwnedRecord]) -> Bytes {
    let mut b = BatchBuilder::new(options);
    for (ts, k, v, hs) in records {
        let hs: Vec<(&str, Option<&[u8]>)> =
            hs.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        b.append(*ts, k.as_deref(), v.as_deref(), &hs).unwrap();
    }
    b.finish().unwrap()
}

fn read_all(bytes: Bytes) -> (RecordBatch, Vec<Record>) {
    let mut it = RecordBatches::new(bytes);
    let batch = it.next().unwrap().unwrap();
    assert!(it.next().is_none());
    assert!(!it.truncated());
    let recs = batch
        .records(&ReadOptions::default())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (batch, recs)
}

fn sample() -> Vec<OwnedRecord> {
    (0..20)
        .map(|i| {
            (
                1_700_000_000_000 + i * 3,
                (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
                (i % 5 != 0).then(|| format!("value-{i}-").repeat(10).into_bytes()),
                vec![
                    ("h".to_string(), Some(b"1".to_vec())),
                    ("h".to_string(), None),
                ],
            )
        })
        .collect()
}

#[test]
fn round_trip_every_codec_with_header_fields() {
    for codec in CODECS {
        let mut o = BatchOptions {
            base_offset: 1000,
            partition_leader_epoch: 7,
            producer_id: 99,
            producer_epoch: 4,
            base_sequence: 123,
            transactional: true,
            compression: codec,
            ..BatchOptions::default()
        };
        o.compression_level = None;
        let recs = sample();
        let (batch, got) = read_all(build(o, &recs));
        assert_eq!(batch.compression().unwrap(), codec);
        assert_eq!(batch.base_offset(), 1000);
        assert_eq!(batch.last_offset_delta(), 19);
        assert_eq!(batch.last_offset(), 1019);
        assert_eq!(batch.partition_leader_epoch(), 7);
        assert_eq!(batch.magic(), 2);
        assert_eq!(batch.producer_id(), 99);
        assert_eq!(batch.producer_epoch(), 4);
        assert_eq!(batch.base_sequence(), 123);
        assert!(batch.is_transactional());
        assert!(!batch.is_control());
        assert!(!batch.has_delete_horizon());
        assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(batch.first_timestamp(), 1_700_000_000_000);
        assert_eq!(batch.max_timestamp(), 1_700_000_000_057);
        assert_eq!(batch.records_count(), 20);
        batch.verify_crc().unwrap();
        assert_eq!(got.len(), 20);
        for (i, (r, want)) in got.iter().zip(&recs).enumerate() {
            assert_eq!(r.offset, 1000 + i as i64);
            assert_eq!(r.timestamp, want.0);
            assert_eq!(r.key.as_deref(), want.1.as_deref());
            assert_eq!(r.value.as_deref(), want.2.as_deref());
            let hs: Vec<Header> = r.headers.clone().collect();
            assert_eq!(hs.len(), 2);
            assert_eq!(hs[0].key_str(), Some("h"));
            assert_eq!(hs[0].value.as_deref(), Some(&b"1"[..]));
            assert_eq!(hs[1].key_str(), Some("h"));
            assert_eq!(hs[1].value, None);
        }
    }
}

#[test]
fn incompressible_batch_is_written_uncompressed() {
    // Tiny records: framing overhead makes compressed output larger.
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        let o = BatchOptions {
            compression: codec,
            ..BatchOptions::default()
        };
        let (batch, got) = read_all(build(o, &[(5, None, Some(b"x".to_vec()), vec![])]));
        assert_eq!(batch.compression().unwrap(), Codec::None, "{codec}");
        assert_eq!(got[0].value.as_deref(), Some(&b"x"[..]));
    }
}

#[test]
fn log_append_time_overrides_record_timestamps() {
    let o = BatchOptions {
        log_append_time: Some(42_000),
        ..BatchOptions::default()
    };
    let (batch, got) = read_all(build(
        o,
        &[(1, None, None, vec![]), (9, None, None, vec![])],
    ));
    assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(batch.max_timestamp(), 42_000);
    assert!(got.iter().all(|r| r.timestamp == 42_000));
    assert_eq!(got[1].timestamp_delta, 8);
}

#[test]
fn uncompressed_records_share_the_batch_memory() {
    let bytes = build(BatchOptions::default(), &sample());
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let (_, got) = read_all(bytes.clone());
    for r in &got {
        if let Some(k) = &r.key {
            assert!(range.contains(&(k.as_ptr() as usize)));
        }
        if let Some(v) = &r.value {
            assert!(range.contains(&(v.as_ptr() as usize)));
        }
        for h in r.headers.clone() {
            assert!(range.contains(&(h.key.as_ptr() as usize)));
        }
    }
}

#[test]
fn control_batch_round_trip() {
    let o = BatchOptions {
        base_offset: 50,
        producer_id: 8,
        producer_epoch: 2,
        ..BatchOptions::default()
    };
    for (kind, epoch) in [
        (ControlRecordType::COMMIT, 17),
        (ControlRecordType::ABORT, -1),
    ] {
        let bytes = end_txn_marker_batch(&o, 1234, kind, epoch).unwrap();
        let (batch, got) = read_all(bytes);
        assert!(batch.is_control() && batch.is_transactional());
        assert_eq!(batch.base_sequence(), NO_SEQUENCE);
        let c = batch
            .control_record(&ReadOptions::default())
            .unwrap()
            .unwrap();
        assert_eq!(c, ControlRecord { version: 0, kind });
        assert_eq!(
            got[0].end_txn_marker().unwrap(),
            EndTxnMarker {
                version: 0,
                coordinator_epoch: epoch
            }
        );
        assert_eq!(got[0].timestamp, 1234);
    }
    assert!(end_txn_marker_batch(&o, 0, ControlRecordType::LEADER_CHANGE, 0).is_err());
    let mut data = BatchBuilder::new(BatchOptions::default());
    assert!(data
        .append_control(0, ControlRecordType::COMMIT, &[])
        .is_err());
}

#[test]
fn crc_corruption_is_detected_at_every_covered_byte() {
    let bytes = build(BatchOptions::default(), &sample()[..3]);
    for i in CRC_OFFSET..bytes.len() {
        let mut m = BytesMut::from(&bytes[..]);
        m[i] ^= 0x01;
        let batch = RecordBatch::new(m.freeze()).unwrap();
        assert!(
            matches!(batch.verify_crc(), Err(DecodeError::BadCrc { .. })),
            "byte {i}"
        );
        assert!(batch.records(&ReadOptions::default()).is_err());
    }
}

#[test]
fn truncation_at_every_offset_never_panics() {
    for codec in CODECS {
        let o = BatchOptions {
            compression: codec,
            ..BatchOptions::default()
        };
        let bytes = build(o, &sample()[..4]);
        for cut in 0..bytes.len() {
            let part = bytes.slice(..cut);
            let mut it = RecordBatches::new(part.clone());
            assert!(it.next().is_none(), "cut {cut}");
            assert_eq!(it.truncated(), cut > 0);
            assert_eq!(it.remaining().len(), cut);
            assert!(RecordBatch::new(part).is_err());
        }
    }
}

#[test]
fn corrupting_any_byte_never_panics() {
    // With the CRC check off, every mutation reaches the record decoder.
    let mut opts = ReadOptions::default();
    opts.verify_crc(false).max_decompressed(1 << 20);
    for codec in CODECS {
        let o = BatchOptions {
            compression: codec,
            ..BatchOptions::default()
        };
        let bytes = build(o, &sample()[..4]);
        for i in 0..bytes.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut m = BytesMut::from(&bytes[..]);
                m[i] ^= x;
                for b in RecordBatches::new(m.freeze()).flatten() {
                    if let Ok(rs) = b.records(&opts) {
                        for r in rs.flatten() {
                            let _ = r.headers.count();
                        }
                    }
                }
            }
        }
    }
}

/// A 73-byte v2 batch with a valid CRC whose header claims i32::MAX records.
fn huge_count_batch() -> Bytes {
    let mut b = BytesMut::new();
    b.put_i64(0); // base offset
    b.put_i32(73 - 12); // length
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, patched below
    b.put_i16(0); // attributes
    b.put_i32(0); // last offset delta
    b.put_i64(0); // first timestamp
    b.put_i64(0); // max timestamp
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(i32::MAX); // records count
                         // one real 12-byte record: len 11, attrs, ts delta, offset delta, key null, value "abcde",
                         // no headers
    b.put_slice(&[22, 0, 0, 0, 1, 10, b'a', b'b', b'c', b'd', b'e', 0]);
    assert_eq!(b.len(), 73);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[test]
fn regression_record_count_i32_max() {
    let bytes = huge_count_batch();
    let batch = RecordBatches::new(bytes.clone()).next().unwrap().unwrap();
    batch.verify_crc().unwrap();
    assert_eq!(batch.records_count(), i32::MAX);
    assert!(matches!(
        batch.records(&ReadOptions::default()),
        Err(DecodeError::InvalidLength { .. })
    ));
}

#[test]
fn fewer_records_than_count_is_an_error() {
    // Count 3 where the bytes hold 2 records (plausible count, so the lazy reader runs out).
    let bytes = build(BatchOptions::default(), &sample()[..2]);
    let mut m = BytesMut::from(&bytes[..]);
    m[57..61].copy_from_slice(&3i32.to_be_bytes());
    let crc = crc32c::crc32c(&m[21..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
    let batch = RecordBatch::new(m.freeze()).unwrap();
    let res: Vec<_> = batch.records(&ReadOptions::default()).unwrap().collect();
    assert_eq!(res.len(), 3);
    assert!(res[0].is_ok() && res[1].is_ok());
    assert!(matches!(res[2], Err(DecodeError::UnexpectedEof { .. })));
}

#[test]
fn more_bytes_than_records_is_an_error() {
    let bytes = build(BatchOptions::default(), &sample()[..2]);
    let mut m = BytesMut::from(&bytes[..]);
    m[57..61].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&m[21..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
    let batch = RecordBatch::new(m.freeze()).unwrap();
    let res: Vec<_> = batch.records(&ReadOptions::default()).unwrap().collect();
    assert!(matches!(
        res.last(),
        Some(Err(DecodeError::TrailingBytes { .. }))
    ));
}

#[test]
fn several_batches_and_a_truncated_tail() {
    let a = build(BatchOptions::default(), &sample()[..2]);
    let o = BatchOptions {
        base_offset: 2,
        compression: Codec::Zstd,
        ..BatchOptions::default()
    };
    let b = build(o, &sample()[..5]);
    let mut all = BytesMut::new();
    all.put_slice(&a);
    all.put_slice(&b);
    all.put_slice(&a[..a.len() - 3]);
    let mut it = RecordBatches::new(all.freeze());
    assert_eq!(it.next().unwrap().unwrap().base_offset(), 0);
    let second = it.next().unwrap().unwrap();
    assert_eq!(second.base_offset(), 2);
    assert_eq!(second.compression().unwrap(), Codec::Zstd);
    assert!(it.next().is_none());
    assert!(it.truncated());
    assert_eq!(it.remaining().len(), a.len() - 3);
}

#[test]
fn legacy_message_sets_are_flagged_and_skipped() {
    // A magic-1 message (offset, size 22, crc, magic 1, attrs, timestamp, null key, null value).
    let mut legacy = BytesMut::new();
    legacy.put_i64(0);
    legacy.put_i32(22);
    legacy.put_u32(0);
    legacy.put_i8(1);
    legacy.put_i8(0);
    legacy.put_i64(0);
    legacy.put_i32(-1);
    legacy.put_i32(-1);
    let v2 = build(BatchOptions::default(), &sample()[..1]);
    legacy.put_slice(&v2);
    let mut it = RecordBatches::new(legacy.freeze());
    assert!(matches!(
        it.next(),
        Some(Err(DecodeError::InvalidValue { value: 1, .. }))
    ));
    assert!(it.next().unwrap().is_ok());
    assert!(it.next().is_none());
}

#[test]
fn bad_lengths_end_iteration_with_an_error() {
    let mut b = BytesMut::new();
    b.put_i64(0);
    b.put_i32(-5);
    b.put_bytes(0, 60);
    let mut it = RecordBatches::new(b.freeze());
    assert!(matches!(
        it.next(),
        Some(Err(DecodeError::InvalidLength { .. }))
    ));
    assert!(it.next().is_none());
}

#[test]
fn builder_enforces_max_batch_bytes() {
    let o = BatchOptions {
        max_batch_bytes: 200,
        ..BatchOptions::default()
    };
    let mut b = BatchBuilder::new(o);
    assert!(b.would_fit(0, None, Some(&[0; 100]), &[]));
    b.append(0, None, Some(&[0; 100]), &[]).unwrap();
    assert!(!b.would_fit(0, None, Some(&[0; 100]), &[]));
    let before = b.estimated_size();
    assert!(matches!(
        b.append(0, None, Some(&[0; 100]), &[]),
        Err(EncodeError::TooLarge { .. })
    ));
    assert_eq!(b.estimated_size(), before);
    assert_eq!(b.record_count(), 1);
    let bytes = b.finish().unwrap();
    assert_eq!(bytes.len(), before);
    assert!(BatchBuilder::new(BatchOptions::default())
        .finish()
        .unwrap()
        .is_empty());
}

#[test]
fn decompression_cap_applies_to_batches() {
    let o = BatchOptions {
        compression: Codec::Gzip,
        ..BatchOptions::default()
    };
    let bytes = build(o, &[(0, None, Some(vec![0; 100_000]), vec![])]);
    let batch = RecordBatch::new(bytes).unwrap();
    let mut opts = ReadOptions::default();
    opts.max_decompressed(50_000);
    assert!(matches!(
        batch.records(&opts),
        Err(DecodeError::DecompressedTooLarge { cap: 50_000, .. })
    ));
}

fn arb_record() -> impl Strategy<Value = OwnedRecord> {
    (
        any::<i64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                "[a-c]{0,3}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            ),
            0..4,
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn prop_builder_reader_round_trip(
        recs in proptest::collection::vec(arb_record(), 1..20),
        codec_i in 0usize..5,
        base_offset in any::<i64>(),
        producer_id in any::<i64>(),
        producer_epoch in any::<i16>(),
        base_sequence in any::<i32>(),
        transactional in any::<bool>(),
    ) {
        let o = BatchOptions {
            base_offset,
            producer_id,
            producer_epoch,
            base_sequence,
            transactional,
            compression: CODECS[codec_i],
            ..BatchOptions::default()
        };
        let (batch, got) = read_all(build(o, &recs));
        prop_assert_eq!(batch.records_count() as usize, recs.len());
        prop_assert_eq!(batch.producer_id(), producer_id);
        prop_assert_eq!(batch.producer_epoch(), producer_epoch);
        prop_assert_eq!(batch.base_sequence(), base_sequence);
        prop_assert_eq!(batch.is_transactional(), transactional);
        let max_ts = recs.iter().map(|r| r.0).fold(-1, i64::max);
        prop_assert_eq!(batch.max_timestamp(), max_ts);
        prop_assert_eq!(got.len(), recs.len());
        for (i, (r, want)) in got.iter().zip(&recs).enumerate() {
            prop_assert_eq!(r.offset, base_offset.wrapping_add(i as i64));
            prop_assert_eq!(r.timestamp, want.0);
            prop_assert_eq!(r.key.as_deref(), want.1.as_deref());
            prop_assert_eq!(r.value.as_deref(), want.2.as_deref());
            let hs: Vec<(Vec<u8>, Option<Vec<u8>>)> = r
                .headers
                .clone()
                .map(|h| (h.key.to_vec(), h.value.map(|v| v.to_vec())))
                .collect();
            let want_hs: Vec<(Vec<u8>, Option<Vec<u8>>)> = want
                .3
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect();
            prop_assert_eq!(hs, want_hs);
        }
    }
}
