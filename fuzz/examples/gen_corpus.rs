//! Writes the seed corpus under `fuzz/corpus/<target>/` from kafka-wire's own encoders.
//!
//! ```text
//! cd fuzz && cargo run --example gen_corpus
//! ```
//!
//! Seeds are deterministic (same names, same bytes on every run). Message seeds are made
//! generically for every supported API: the shortest run of zero (or 0x01) bytes that decodes as the
//! message (empty arrays, empty strings, zero numbers) is decoded and encoded back, giving the
//! canonical encoding of a minimal value at that version.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_wire::compression::compress;
use kafka_wire::header::{RequestHeader, ResponseHeader};
use kafka_wire::messages::{
    decode_request, decode_response, header_versions, ApiVersionsRequest, SUPPORTED_APIS,
};
use kafka_wire::records::{BatchBuilder, BatchOptions, ControlRecordType};
use kafka_wire::{frame, ApiKey, Codec, Encode};

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Gzip,
    Codec::Snappy,
    Codec::Lz4,
    Codec::Zstd,
];

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let w = |target: &str, name: &str, bytes: &[u8]| write(&root, target, name, bytes);

    // --- messages: a minimal canonical body for every API at its lowest, middle and highest
    // version.
    let mut frames = Vec::new();
    for (i, &(key, min, max)) in SUPPORTED_APIS.iter().enumerate() {
        let mut versions = vec![min, max];
        if max - min >= 2 {
            versions.push(min + (max - min) / 2);
        }
        versions.dedup();
        for v in versions {
            let (req_hv, resp_hv) = header_versions(key, v).expect("supported");
            if let Some(body) = minimal(key, v, true) {
                let name = format!("api{}_v{v}", key.0);
                let header = RequestHeader {
                    request_api_key: key,
                    request_api_version: v,
                    correlation_id: 7,
                    client_id: (req_hv >= 1).then(|| "fuzz".into()),
                    unknown_tagged_fields: Default::default(),
                };
                let mut req = Vec::new();
                header.encode(&mut req, req_hv).unwrap();
                req.extend_from_slice(&body);
                w("request", &name, &req);
                w(
                    "roundtrip",
                    &format!("req_{name}"),
                    &rt_seed(0, i, v - min, &body),
                );
                if v == max {
                    let mut f = (req.len() as u32).to_be_bytes().to_vec();
                    f.extend_from_slice(&req);
                    frames.push(f);
                }
            }
            if let Some(body) = minimal(key, v, false) {
                let name = format!("api{}_v{v}", key.0);
                let mut resp = key.0.to_be_bytes().to_vec();
                resp.extend_from_slice(&v.to_be_bytes());
                resp.extend_from_slice(&body);
                w("response", &name, &resp);
                w(
                    "roundtrip",
                    &format!("resp_{name}"),
                    &rt_seed(1, i, v - min, &body),
                );
                if v == max && i % 8 == 0 {
                    let header = ResponseHeader {
                        correlation_id: 7,
                        unknown_tagged_fields: Default::default(),
                    };
                    let mut r = Vec::new();
                    header.encode(&mut r, resp_hv).unwrap();
                    r.extend_from_slice(&body);
                    let mut f = (r.len() as u32).to_be_bytes().to_vec();
                    f.extend_from_slice(&r);
                    frames.push(f);
                }
            }
        }
    }

    // --- a request with content: ApiVersions at every version, with client software fields.
    let av = ApiVersionsRequest {
        client_software_name: "kafka-rs".into(),
        client_software_version: "0.1.0".into(),
        ..Default::default()
    };
    for v in 0..=4 {
        let mut buf = BytesMut::new();
        if frame::encode_request(&mut buf, 42, Some("fuzz-client"), v, &av, 1 << 20).is_ok() {
            w("request", &format!("api_versions_full_v{v}"), &buf[4..]);
            frames.push(buf.to_vec());
        }
    }

    // --- frames: groups of frames back to back, with a generous and a tight maximum.
    for (n, group) in frames.chunks(6).enumerate().take(12) {
        let stream: Vec<u8> = group.concat();
        let mut seed = vec![0xff, n as u8];
        seed.extend_from_slice(&stream);
        w("frame", &format!("frames_{n:02}"), &seed);
    }
    w(
        "frame",
        "empty_frames",
        &[0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    w("frame", "too_large", &[0x01, 0x03, 0, 0, 0x10, 0, 1, 2, 3]);
    w(
        "frame",
        "negative",
        &[0x10, 0x05, 0xff, 0xff, 0xff, 0xfe, 1],
    );

    // --- record batches: every codec, headers, transactional, control, two batches in a row.
    let mut all = Vec::new();
    for codec in CODECS {
        let mut o = BatchOptions::default();
        o.base_offset = 100;
        o.compression = codec;
        o.producer_id = 9;
        o.producer_epoch = 1;
        o.base_sequence = 0;
        let mut b = BatchBuilder::new(o);
        for i in 0..8u8 {
            let value = vec![b'v'; 20 + usize::from(i)];
            let key = [b'k', i];
            b.append(
                1_700_000_000_000 + i64::from(i),
                (i % 3 != 0).then_some(&key[..]),
                (i != 5).then_some(&value[..]),
                &[("h", Some(&b"x"[..])), ("n", None)][..usize::from(i % 3)],
            )
            .unwrap();
        }
        let bytes = b.finish().unwrap();
        w("record_batch", &format!("batch_{codec}"), &bytes);
        w("record_batch_crc_fixed", &format!("batch_{codec}"), &bytes);
        all.extend_from_slice(&bytes);
    }
    let mut o = BatchOptions::default();
    o.transactional = true;
    o.log_append_time = Some(1_700_000_000_500);
    o.producer_id = 3;
    o.producer_epoch = 0;
    o.base_sequence = 5;
    let mut b = BatchBuilder::new(o.clone());
    b.append(1, Some(b"k"), Some(b"v"), &[]).unwrap();
    let txn = b.finish().unwrap();
    w("record_batch", "batch_txn_log_append_time", &txn);
    w("record_batch_crc_fixed", "batch_txn_log_append_time", &txn);
    let marker = kafka_wire::records::end_txn_marker_batch(&o, 2, ControlRecordType(1), 4).unwrap();
    w("record_batch", "batch_commit_marker", &marker);
    w("record_batch_crc_fixed", "batch_commit_marker", &marker);
    all.extend_from_slice(&txn);
    all.extend_from_slice(&marker);
    w("record_batch", "batches_all", &all);
    // A truncated tail.
    w("record_batch", "batches_truncated", &all[..all.len() - 10]);

    // Known crash input: a 73-byte v2 batch with a valid CRC and records count i32::MAX.
    let mut b = BatchBuilder::new(BatchOptions::default());
    b.append(0, Some(b"abcde"), None, &[]).unwrap();
    let mut huge = b.finish().unwrap().to_vec();
    assert_eq!(huge.len(), 73);
    huge[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&huge[21..]);
    huge[17..21].copy_from_slice(&crc.to_be_bytes());
    w("record_batch", "crash_count_i32_max", &huge);
    w("record_batch_crc_fixed", "crash_count_i32_max", &huge);

    // --- decompress: every codec, a compressible and an incompressible payload.
    let text: Vec<u8> = b"kafka wire fuzz corpus "
        .iter()
        .cycle()
        .take(2000)
        .copied()
        .collect();
    let noise: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for codec in CODECS {
        for (what, payload) in [("text", &text), ("noise", &noise)] {
            let mut out = BytesMut::new();
            compress(codec, payload, &mut out).unwrap();
            let mut seed = vec![codec.id() as u8];
            seed.extend_from_slice(&out);
            w("decompress", &format!("{codec}_{what}"), &seed);
        }
    }

    // --- known crash inputs of the message decoders.
    w("request", "crash_one_byte_header", &[0x00]);
    let av_huge = [0x00, 0x00, 0x7f, 0xff, 0xff, 0xff];
    let mut r = ApiKey::API_VERSIONS.0.to_be_bytes().to_vec();
    r.extend_from_slice(&0i16.to_be_bytes());
    r.extend_from_slice(&av_huge);
    w("response", "crash_api_versions_v0_count_7fffffff", &r);
    let idx = SUPPORTED_APIS
        .iter()
        .position(|(k, _, _)| *k == ApiKey::API_VERSIONS)
        .unwrap();
    w(
        "roundtrip",
        "crash_api_versions_v0_count_7fffffff",
        &rt_seed(1, idx, 0, &av_huge),
    );
}

/// The canonical encoding of the value that the shortest all-zero (or all-one) body decodes to, if any.
fn minimal(key: ApiKey, version: i16, request: bool) -> Option<Vec<u8>> {
    // All zeros suit classic encodings; all ones suit flexible ones (compact length 1 = empty).
    for (fill, n) in [0u8, 1]
        .into_iter()
        .flat_map(|f| (0..96).map(move |n| (f, n)))
    {
        let mut buf = Bytes::from(vec![fill; n]);
        let mut out = Vec::new();
        let ok = if request {
            decode_request(key, version, &mut buf)
                .ok()
                .filter(|_| buf.is_empty())
                .is_some_and(|v| v.encode(&mut out, version).is_ok())
        } else {
            decode_response(key, version, &mut buf)
                .ok()
                .filter(|_| buf.is_empty())
                .is_some_and(|v| v.encode(&mut out, version).is_ok())
        };
        if ok {
            return Some(out);
        }
    }
    None
}

fn rt_seed(kind: u8, api_index: usize, version_offset: i16, body: &[u8]) -> Vec<u8> {
    let mut s = vec![kind, api_index as u8, version_offset as u8];
    s.extend_from_slice(body);
    s
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}
