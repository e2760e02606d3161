//! The logic of every fuzz target, in one place.
//!
//! Included with `#[path]` by each binary in `fuzz/fuzz_targets/` (run by libFuzzer) and by
//! `kafka-wire/tests/it/fuzz_corpus.rs` (which replays the checked-in corpus on stable in the
//! normal test suite). It only uses `kafka-wire`'s public API plus `bytes` and `crc32c`.
//!
//! Every function takes the raw fuzzer input; the invariant is always "no panic", plus the
//! properties asserted in each function.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_wire::compression::decompress as wire_decompress;
use kafka_wire::frame::FrameDecoder;
use kafka_wire::header::RequestHeader;
use kafka_wire::messages::{decode_request, decode_response, SUPPORTED_APIS};
use kafka_wire::records::{ReadOptions, RecordBatch, RecordBatches};
use kafka_wire::{ApiKey, Codec};

/// A fuzz target: runs one input and panics if an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by name, as laid out under `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("request", request),
    ("response", response),
    ("record_batch", record_batch),
    ("record_batch_crc_fixed", record_batch_crc_fixed),
    ("decompress", decompress),
    ("roundtrip", roundtrip),
];

/// The decompression cap used while reading batches: small, so bombs are cheap to detect.
pub const BATCH_DECOMPRESS_CAP: usize = 64 * 1024;
/// The cap of the `decompress` target.
pub const DECOMPRESS_CAP: usize = 1024 * 1024;

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// frame

/// Input: `[max_selector, chunk_seed, stream...]`.
///
/// Feeds `stream` to a [`FrameDecoder`] (maximum frame size `max_selector * 16`) in chunks whose
/// sizes come from a tiny PRNG seeded with `chunk_seed`, decoding after every chunk until it
/// needs more bytes or fails. Invariants: the frames and the outcome (error or not) are the same
/// as decoding the whole stream at once; every frame is at most the maximum; the frames with
/// their size prefixes are exactly the consumed prefix of the stream; `Ok(None)` leaves the
/// buffered bytes as they were.
pub fn frame(data: &[u8]) {
    let [max_sel, seed, stream @ ..] = data else {
        return;
    };
    let max = usize::from(*max_sel) * 16;
    let decoder = FrameDecoder::new(max);

    let reference = decode_all(&decoder, &mut BytesMut::from(stream));

    let mut state = u32::from(*seed) | 0x100;
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut failed = false;
    let mut pos = 0;
    'feed: while pos < stream.len() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (((state >> 16) % 9) as usize).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= max, "frame longer than max: {}", hex(data));
                    frames.push(f);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) changed the buffer: {}", hex(data));
                    break;
                }
                Err(_) => {
                    assert_eq!(buf, before, "an error changed the buffer: {}", hex(data));
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(
        (frames.clone(), failed),
        reference,
        "chunked and one-shot decoding differ: {}",
        hex(data)
    );
    let mut rebuilt = Vec::new();
    for f in &frames {
        rebuilt.extend_from_slice(&(f.len() as u32).to_be_bytes());
        rebuilt.extend_from_slice(f);
    }
    assert_eq!(
        &rebuilt[..],
        &stream[..rebuilt.len()],
        "frames are not the consumed prefix: {}",
        hex(data)
    );
}

fn decode_all(decoder: &FrameDecoder, buf: &mut BytesMut) -> (Vec<Bytes>, bool) {
    let mut frames = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, false),
            Err(_) => return (frames, true),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// request / response

/// Input: a request as a broker reads it after the size prefix: header (its version found from
/// the API key and version, [`RequestHeader::decode_any`]), then the body
/// ([`decode_request`]). A body that decodes must encode to exactly `encoded_len` bytes.
pub fn request(data: &[u8]) {
    let mut buf = Bytes::copy_from_slice(data);
    let Ok(header) = RequestHeader::decode_any(&mut buf) else {
        return;
    };
    let version = header.request_api_version;
    if let Ok(body) = decode_request(header.request_api_key, version, &mut buf) {
        let mut out = Vec::new();
        if body.encode(&mut out, version).is_ok() {
            assert_eq!(
                body.encoded_len(version).ok(),
                Some(out.len()),
                "encoded_len differs from encode: {}",
                hex(data)
            );
        }
    }
}

/// Input: `[api_key: i16 BE, version: i16 BE, body...]`; decodes `body` with
/// [`decode_response`]. A body that decodes must encode to exactly `encoded_len` bytes.
pub fn response(data: &[u8]) {
    let [k0, k1, v0, v1, body @ ..] = data else {
        return;
    };
    let key = ApiKey(i16::from_be_bytes([*k0, *k1]));
    let version = i16::from_be_bytes([*v0, *v1]);
    let mut buf = Bytes::copy_from_slice(body);
    if let Ok(resp) = decode_response(key, version, &mut buf) {
        let mut out = Vec::new();
        if resp.encode(&mut out, version).is_ok() {
            assert_eq!(
                resp.encoded_len(version).ok(),
                Some(out.len()),
                "encoded_len differs from encode: {}",
                hex(data)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// record batches

/// Input: a records blob (batches back to back). Iterates the batches, reads every header
/// field, and iterates the records of each (with and without CRC verification) under a
/// decompression cap of [`BATCH_DECOMPRESS_CAP`]. Invariants: no batch is larger than the input;
/// no more records come out than the batch's count.
pub fn record_batch(data: &[u8]) {
    read_batches(Bytes::copy_from_slice(data), false);
}

/// Input: one batch whose length field and CRC are patched before reading: the length is set to
/// the input length minus 12, the magic to 2 and the CRC-32C recomputed over bytes 21.., so the
/// fuzzer explores what lies behind the CRC check. Invariants as [`record_batch`], plus: the batch
/// is accepted and its CRC verifies.
pub fn record_batch_crc_fixed(data: &[u8]) {
    let Some(patched) = fix_batch(data) else {
        return;
    };
    read_batches(Bytes::from(patched), true);
}

/// Patches a batch's length, magic and CRC (`None` when shorter than a batch header or too long
/// for an `i32` length).
pub fn fix_batch(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 61 {
        return None;
    }
    let mut b = data.to_vec();
    let length = i32::try_from(b.len() - 12).ok()?;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    b[16] = 2;
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Some(b)
}

fn read_batches(bytes: Bytes, must_accept: bool) {
    let total = bytes.len();
    let mut batches = RecordBatches::new(bytes.clone());
    let mut seen = 0usize;
    for item in batches.by_ref() {
        seen += 1;
        assert!(seen <= total, "more batches than bytes");
        let batch = match item {
            Ok(b) => b,
            Err(e) => {
                assert!(!must_accept, "patched batch rejected: {e}");
                continue;
            }
        };
        read_batch(&batch, must_accept);
    }
    let _ = batches.truncated();
    let _ = batches.remaining();
    if must_accept {
        assert_eq!(seen, 1, "a patched input is exactly one batch");
    }
    // The direct constructor over the whole input, too.
    if let Ok(batch) = RecordBatch::new(bytes) {
        read_batch(&batch, false);
    }
}

fn read_batch(batch: &RecordBatch, must_verify: bool) {
    assert!(batch.size() == batch.as_bytes().len());
    let _ = format!("{batch:?}");
    let _ = (
        batch.base_offset(),
        batch.batch_length(),
        batch.partition_leader_epoch(),
        batch.magic(),
        batch.crc(),
        batch.computed_crc(),
        batch.attributes(),
        batch.compression(),
        batch.timestamp_type(),
        batch.is_transactional(),
        batch.is_control(),
        batch.has_delete_horizon(),
        batch.last_offset_delta(),
        batch.last_offset(),
        batch.next_offset(),
        batch.first_timestamp(),
        batch.max_timestamp(),
        batch.producer_id(),
        batch.producer_epoch(),
        batch.base_sequence(),
        batch.records_count(),
        batch.records_bytes(),
    );
    let crc_ok = batch.verify_crc().is_ok();
    if must_verify {
        assert!(crc_ok, "patched batch fails its CRC");
    }
    for verify in [true, false] {
        if verify && !crc_ok {
            assert!(batch
                .records(ReadOptions::default().verify_crc(true))
                .is_err());
            continue;
        }
        let mut options = ReadOptions::default();
        options
            .max_decompressed(BATCH_DECOMPRESS_CAP)
            .verify_crc(verify);
        let _ = batch.control_record(&options);
        let Ok(records) = batch.records(&options) else {
            continue;
        };
        let count = usize::try_from(batch.records_count()).unwrap_or(0);
        let mut n = 0usize;
        for record in records {
            // An error item may follow the last record (trailing bytes), so count `Ok`s only.
            let Ok(record) = record else { break };
            n += 1;
            assert!(n <= count, "more records than the batch count");
            let _ = record.control();
            let _ = record.end_txn_marker();
            let _ = format!("{:?}", record.headers);
            for h in record.headers.clone() {
                let _ = h.key_str();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// decompress

/// Input: `[codec_selector, compressed...]`; the codec is `codec_selector % 5` (none, gzip,
/// snappy, lz4, zstd). Invariant: the output never exceeds [`DECOMPRESS_CAP`] (1 MiB).
pub fn decompress(data: &[u8]) {
    let [sel, input @ ..] = data else {
        return;
    };
    let codec = Codec::from_id(i16::from(*sel % 5)).unwrap_or(Codec::None);
    if let Ok(out) = wire_decompress(codec, input, DECOMPRESS_CAP) {
        assert!(out.len() <= DECOMPRESS_CAP, "decompressed past the cap");
    }
}

// ---------------------------------------------------------------------------------------------
// roundtrip

/// Input: `[kind, api_index, version_selector, body...]`. `kind & 1` picks request (0) or
/// response (1); the API is `SUPPORTED_APIS[api_index % len]` and the version its minimum plus
/// `version_selector` modulo the number of versions. If `body` decodes, the value is encoded
/// (which must give `encoded_len` bytes), decoded again, and must equal the first value and
/// re-encode to identical bytes.
pub fn roundtrip(data: &[u8]) {
    let [kind, api, ver, body @ ..] = data else {
        return;
    };
    let (key, min, max) = SUPPORTED_APIS[usize::from(*api) % SUPPORTED_APIS.len()];
    let span = i32::from(max) - i32::from(min) + 1;
    let version = min + (i32::from(*ver) % span) as i16;
    let request = kind & 1 == 0;

    macro_rules! check {
        ($decode:expr) => {{
            let Ok(first) = $decode(key, version, &mut Bytes::copy_from_slice(body)) else {
                return;
            };
            let mut enc1 = Vec::new();
            if first.encode(&mut enc1, version).is_err() {
                return;
            }
            assert_eq!(
                first.encoded_len(version).ok(),
                Some(enc1.len()),
                "encoded_len differs from encode: {}",
                hex(data)
            );
            let mut rest = Bytes::from(enc1.clone());
            let second = match $decode(key, version, &mut rest) {
                Ok(v) => v,
                Err(e) => panic!("re-decoding our own encoding failed ({e}): {}", hex(data)),
            };
            assert!(
                rest.is_empty(),
                "re-decoding left {} bytes: {}",
                rest.len(),
                hex(data)
            );
            // NaN floats make `==` fail on equal values; their Debug forms still match.
            if first != second {
                assert_eq!(
                    format!("{first:?}"),
                    format!("{second:?}"),
                    "value changed by a round trip: {}",
                    hex(data)
                );
            }
            let mut enc2 = Vec::new();
            second
                .encode(&mut enc2, version)
                .expect("re-encoding a re-decoded value failed");
            assert_eq!(enc1, enc2, "re-encoding differs: {}", hex(data));
        }};
    }
    if request {
        check!(decode_request)
    } else {
        check!(decode_response)
    }
}
