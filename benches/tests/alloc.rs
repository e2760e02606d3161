#![forbid(unsafe_code)]
//! Reading uncompressed records allocates O(1), not O(records): keys, values and headers are
//! slices of the batch's `Bytes`, so the allocation count must not grow with the record count.
//!
//! dhat's testing mode counts heap blocks through its own safe `#[global_allocator]`; one
//! profiler may run at a time, so this binary holds exactly one test.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_wire::records::{BatchBuilder, BatchOptions, ReadOptions, RecordBatches};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// `batches` batches of `per_batch` records, each with a key, a value and two headers.
fn blob(batches: usize, per_batch: usize) -> Bytes {
    let payloads = benches::payloads(per_batch, 64, 42);
    let mut out = BytesMut::new();
    for b in 0..batches {
        let mut builder = BatchBuilder::new(BatchOptions {
            base_offset: (b * per_batch) as i64,
            max_batch_bytes: usize::MAX,
            ..Default::default()
        });
        for p in &payloads {
            let headers: [(&str, Option<&[u8]>); 2] =
                [("trace-id", Some(&p.key)), ("source", Some(b"bench"))];
            builder
                .append(
                    benches::BASE_TIMESTAMP,
                    Some(&p.key),
                    Some(&p.value),
                    &headers,
                )
                .expect("append");
        }
        out.put(builder.finish().expect("finish"));
    }
    out.freeze()
}

/// Iterates every record of `blob`, touching key, value and every header key and value; returns
/// (records seen, bytes touched, heap blocks allocated while iterating).
fn iterate(blob: &Bytes) -> (usize, usize, u64) {
    let options = ReadOptions::default();
    let before = dhat::HeapStats::get().total_blocks;
    let mut records = 0;
    let mut touched = 0;
    for batch in RecordBatches::new(blob.clone()) {
        let batch = batch.expect("batch");
        for record in batch.records(&options).expect("records") {
            let record = record.expect("record");
            records += 1;
            touched += record.key.as_ref().map_or(0, |k| k.len());
            touched += record.value.as_ref().map_or(0, |v| v.len());
            for header in record.headers {
                touched += header.key.len() + header.value.as_ref().map_or(0, |v| v.len());
            }
        }
    }
    let after = dhat::HeapStats::get().total_blocks;
    (records, touched, after - before)
}

#[test]
fn iterating_uncompressed_records_allocates_o1() {
    let _profiler = dhat::Profiler::builder().testing().build();

    // One batch: 10 records against 10,000 records.
    let small = blob(1, 10);
    let large = blob(1, 10_000);
    let (n_small, _, allocs_small) = iterate(&small);
    let (n_large, touched, allocs_large) = iterate(&large);
    assert_eq!((n_small, n_large), (10, 10_000));
    assert!(touched > 10_000 * 64);
    assert_eq!(
        allocs_small, allocs_large,
        "allocations grew with the record count: {allocs_small} for 10 records, \
         {allocs_large} for 10,000"
    );

    // Many batches: allocations may grow per batch (never per record) and stay tiny.
    let many = blob(100, 100);
    let (n_many, _, allocs_many) = iterate(&many);
    assert_eq!(n_many, 10_000);
    assert!(
        allocs_many <= 100 * (allocs_small.max(1) + 1),
        "{allocs_many} allocations for 100 batches of 100 records"
    );
    eprintln!(
        "heap blocks while iterating: 10 records {allocs_small}, 10,000 records in one batch \
         {allocs_large}, 10,000 records in 100 batches {allocs_many}"
    );
}
