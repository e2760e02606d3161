#![forbid(unsafe_code)]
//! Shared inputs for the `kafka-wire` benchmarks (`benches/wire.rs`) and the allocation test
//! (`tests/alloc.rs`). See `docs/wire-benchmarks.md` for the numbers and how to reproduce them.
//!
//! Everything here is deterministic: the same seed gives the same bytes on every run, so our
//! reader and `kafka-protocol`'s decoder are always timed on identical input.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_wire::records::{BatchBuilder, BatchOptions};
use kafka_wire::Codec;

/// Size of one record's value in the fixtures ("1 KiB records").
pub const VALUE_LEN: usize = 1024;
/// Total value bytes in a Fetch-response-sized blob (the Java `max.partition.fetch.bytes`
/// default).
pub const BLOB_BYTES: usize = 1 << 20;
/// Largest batch the fixtures build (uncompressed size, header included): what a Java producer
/// with `batch.size=65536` sends.
pub const BATCH_BYTES: usize = 64 * 1024;
/// First record timestamp (ms).
pub const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// One record of a fixture: key and value.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Key bytes, e.g. `user-0000042`.
    pub key: Vec<u8>,
    /// Value bytes: JSON-ish text made of a small vocabulary, so lz4 and zstd find something to
    /// compress (real event payloads compress 2-5x; random bytes would be stored uncompressed).
    pub value: Vec<u8>,
}

/// A small xorshift generator: deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

const WORDS: &[&str] = &[
    "click",
    "view",
    "purchase",
    "cart",
    "search",
    "login",
    "logout",
    "session",
    "mobile",
    "desktop",
    "tablet",
    "europe",
    "america",
    "asia",
    "campaign",
    "organic",
    "referral",
    "banner",
    "checkout",
    "shipping",
    "payment",
    "refund",
    "coupon",
    "premium",
    "basic",
    "trial",
    "renewal",
    "profile",
    "settings",
    "notification",
    "email",
    "sms",
];

/// `count` records with a key of about 12 bytes and a value of exactly `value_len` bytes.
pub fn payloads(count: usize, value_len: usize, seed: u64) -> Vec<Payload> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let key = format!("user-{:07}", rng.next_u64() % 10_000_000).into_bytes();
            let mut value = format!(
                "{{\"seq\":{i},\"ts\":{},\"amount\":{},\"tags\":\"",
                BASE_TIMESTAMP + i as i64,
                rng.next_u64() % 100_000
            )
            .into_bytes();
            while value.len() < value_len {
                let w = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
                value.extend_from_slice(w.as_bytes());
                value.push(b' ');
            }
            value.truncate(value_len.saturating_sub(2));
            value.extend_from_slice(b"\"}");
            value.truncate(value_len);
            Payload { key, value }
        })
        .collect()
}

/// The 1 MiB of 1 KiB records every record benchmark uses.
pub fn blob_payloads() -> Vec<Payload> {
    payloads(BLOB_BYTES / VALUE_LEN, VALUE_LEN, 0x5eed)
}

/// How many of `payloads` go in each batch so that no batch passes `batch_bytes` uncompressed:
/// the chunk boundaries both libraries are given, so both build the same batches.
pub fn batch_chunks(payloads: &[Payload], batch_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < payloads.len() {
        let mut builder = BatchBuilder::new(BatchOptions {
            max_batch_bytes: batch_bytes,
            ..Default::default()
        });
        let mut end = start;
        while end < payloads.len() {
            let p = &payloads[end];
            let ts = BASE_TIMESTAMP + end as i64;
            if !builder.would_fit(ts, Some(&p.key), Some(&p.value), &[]) {
                break;
            }
            builder
                .append(ts, Some(&p.key), Some(&p.value), &[])
                .expect("fits");
            end += 1;
        }
        assert!(end > start, "a record larger than a batch");
        chunks.push(start..end);
        start = end;
    }
    chunks
}

/// Builds `payloads` into consecutive v2 batches of `chunks` with our [`BatchBuilder`], as a
/// broker would return them in a Fetch response's `records` field. Record `i` has offset `i` and
/// timestamp `BASE_TIMESTAMP + i`.
pub fn build_blob(payloads: &[Payload], chunks: &[std::ops::Range<usize>], codec: Codec) -> Bytes {
    let mut out = BytesMut::new();
    for chunk in chunks {
        let mut builder = BatchBuilder::new(BatchOptions {
            base_offset: chunk.start as i64,
            compression: codec,
            max_batch_bytes: usize::MAX,
            ..Default::default()
        });
        for i in chunk.clone() {
            let p = &payloads[i];
            builder
                .append(BASE_TIMESTAMP + i as i64, Some(&p.key), Some(&p.value), &[])
                .expect("append");
        }
        out.put(builder.finish().expect("finish"));
    }
    out.freeze()
}
