#![forbid(unsafe_code)]
//! `kafka-wire` against `kafka-protocol` 0.18 on identical bytes.
//!
//! ```text
//! cargo bench -p benches --bench wire -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Groups (each has an `ours` and a `kafka-protocol` function):
//! - `records_read/{none,lz4,zstd}`: 1 MiB of 1 KiB records in 64 KiB batches; ours iterates
//!   batches and records touching key and value lengths, theirs is
//!   `RecordBatchDecoder::decode` per batch (both verify the CRC).
//! - `records_build/{none,lz4}`: encode the same records into the same batches.
//! - `fetch_response_decode`: a v18 FetchResponse with that blob as one partition's records.
//! - `produce_request_{encode,decode}`: v13, 10 topics x 10 partitions, one 10-record batch each.
//! - `metadata_response_{decode,encode}`: v13, 100 topics x 10 partitions x 3 replicas.

use std::hint::black_box;
use std::ops::Range;

use benches::{batch_chunks, blob_payloads, build_blob, payloads, Payload, BASE_TIMESTAMP};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_wire::records::{BatchBuilder, BatchOptions, ReadOptions, RecordBatches};
use kafka_wire::{Codec, Decode, Encode};

use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records as kpr;

const FETCH_VERSION: i16 = 18;
const PRODUCE_VERSION: i16 = 13;
const METADATA_VERSION: i16 = 13;

const READ: ReadOptions = ReadOptions {
    max_decompressed: 64 << 20,
    verify_crc: true,
};

/// [`READ`] without the CRC check (Java `check.crcs=false`), to show what the CRC costs.
const READ_NO_CRC: ReadOptions = ReadOptions {
    max_decompressed: 64 << 20,
    verify_crc: false,
};

/// Ours: every batch, every record, key and value lengths.
fn iterate_ours(blob: &Bytes) -> usize {
    iterate_ours_with(blob, &READ)
}

fn iterate_ours_with(blob: &Bytes, options: &ReadOptions) -> usize {
    let mut total = 0;
    for batch in RecordBatches::new(blob.clone()) {
        let batch = batch.expect("batch");
        for record in batch.records(options).expect("records") {
            let record = record.expect("record");
            total += record.key.as_ref().map_or(0, |k| k.len());
            total += record.value.as_ref().map_or(0, |v| v.len());
        }
    }
    total
}

/// Theirs: `RecordBatchDecoder::decode` batch after batch, the same lengths.
fn iterate_theirs(blob: &Bytes) -> usize {
    let mut buf = blob.clone();
    let mut total = 0;
    while !buf.is_empty() {
        let set = kpr::RecordBatchDecoder::decode(&mut buf).expect("decode");
        for record in &set.records {
            total += record.key.as_ref().map_or(0, |k| k.len());
            total += record.value.as_ref().map_or(0, |v| v.len());
        }
    }
    total
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::None => "none",
        Codec::Lz4 => "lz4",
        Codec::Zstd => "zstd",
        Codec::Gzip => "gzip",
        Codec::Snappy => "snappy",
    }
}

fn records_read(c: &mut Criterion) {
    let payloads = blob_payloads();
    let chunks = batch_chunks(&payloads, benches::BATCH_BYTES);
    let value_bytes: usize = payloads.iter().map(|p| p.key.len() + p.value.len()).sum();
    let mut group = c.benchmark_group("records_read");
    for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
        let blob = build_blob(&payloads, &chunks, codec);
        // Same answer from both before timing anything.
        assert_eq!(iterate_ours(&blob), value_bytes);
        assert_eq!(iterate_theirs(&blob), value_bytes);
        // Throughput is the uncompressed record payload (keys + values), so GB/s compare
        // across codecs; the blob size is printed for reference.
        eprintln!(
            "records_read/{}: {} records, {} batches, blob {} bytes, keys+values {} bytes",
            codec_name(codec),
            payloads.len(),
            chunks.len(),
            blob.len(),
            value_bytes
        );
        group.throughput(Throughput::Bytes(value_bytes as u64));
        group.bench_with_input(
            BenchmarkId::new("ours", codec_name(codec)),
            &blob,
            |b, blob| b.iter(|| black_box(iterate_ours(black_box(blob)))),
        );
        group.bench_with_input(
            BenchmarkId::new("kafka-protocol", codec_name(codec)),
            &blob,
            |b, blob| b.iter(|| black_box(iterate_theirs(black_box(blob)))),
        );
        group.bench_with_input(
            BenchmarkId::new("ours-no-crc", codec_name(codec)),
            &blob,
            |b, blob| b.iter(|| black_box(iterate_ours_with(black_box(blob), &READ_NO_CRC))),
        );
    }
    group.finish();
}

fn build_ours(payloads: &[Payload], chunks: &[Range<usize>], codec: Codec) -> usize {
    let mut size = 0;
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
        size += black_box(builder.finish().expect("finish")).len();
    }
    size
}

fn their_records(payloads: &[Payload]) -> Vec<kpr::Record> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| kpr::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kpr::TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: BASE_TIMESTAMP + i as i64,
            key: Some(Bytes::copy_from_slice(&p.key)),
            value: Some(Bytes::copy_from_slice(&p.value)),
            headers: Default::default(),
        })
        .collect()
}

fn build_theirs(
    records: &[kpr::Record],
    chunks: &[Range<usize>],
    compression: kpr::Compression,
    out: &mut BytesMut,
) -> usize {
    let options = kpr::RecordEncodeOptions {
        version: 2,
        compression,
    };
    let mut size = 0;
    for chunk in chunks {
        out.clear();
        kpr::RecordBatchEncoder::encode(out, &records[chunk.clone()], &options).expect("encode");
        size += black_box(&*out).len();
    }
    size
}

fn records_build(c: &mut Criterion) {
    let payloads = blob_payloads();
    let chunks = batch_chunks(&payloads, benches::BATCH_BYTES);
    let theirs = their_records(&payloads);
    let value_bytes: usize = payloads.iter().map(|p| p.key.len() + p.value.len()).sum();
    let mut group = c.benchmark_group("records_build");
    group.throughput(Throughput::Bytes(value_bytes as u64));
    for (codec, compression) in [
        (Codec::None, kpr::Compression::None),
        (Codec::Lz4, kpr::Compression::Lz4),
    ] {
        group.bench_function(BenchmarkId::new("ours", codec_name(codec)), |b| {
            b.iter(|| black_box(build_ours(&payloads, &chunks, codec)))
        });
        let mut out = BytesMut::with_capacity(2 * benches::BATCH_BYTES);
        group.bench_function(BenchmarkId::new("kafka-protocol", codec_name(codec)), |b| {
            b.iter(|| black_box(build_theirs(&theirs, &chunks, compression, &mut out)))
        });
    }
    group.finish();
}

fn fetch_response(c: &mut Criterion) {
    use kafka_wire::messages::fetch::{FetchResponse, FetchableTopicResponse, PartitionData};
    let payloads = blob_payloads();
    let chunks = batch_chunks(&payloads, benches::BATCH_BYTES);
    let blob = build_blob(&payloads, &chunks, Codec::None);
    let message = FetchResponse {
        session_id: 7,
        responses: vec![FetchableTopicResponse {
            topic_id: kafka_wire::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
            partitions: vec![PartitionData {
                partition_index: 3,
                high_watermark: payloads.len() as i64,
                last_stable_offset: payloads.len() as i64,
                log_start_offset: 0,
                records: Some(blob.clone()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut encoded = Vec::new();
    message.encode(&mut encoded, FETCH_VERSION).expect("encode");
    let encoded = Bytes::from(encoded);
    // Both sides must read the same message.
    let theirs =
        kp::FetchResponse::decode(&mut encoded.clone(), FETCH_VERSION).expect("their decode");
    assert_eq!(
        theirs.responses[0].partitions[0].records.as_ref(),
        Some(&blob)
    );

    let mut group = c.benchmark_group("fetch_response_decode");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("ours", |b| {
        b.iter(|| {
            black_box(FetchResponse::decode(
                &mut black_box(&encoded).clone(),
                FETCH_VERSION,
            ))
            .expect("decode")
        })
    });
    group.bench_function("kafka-protocol", |b| {
        b.iter(|| {
            black_box(kp::FetchResponse::decode(
                &mut black_box(&encoded).clone(),
                FETCH_VERSION,
            ))
            .expect("decode")
        })
    });
    // The whole consumer path: decode the message, then every record of every batch.
    group.bench_function("ours+records", |b| {
        b.iter(|| {
            let m = FetchResponse::decode(&mut black_box(&encoded).clone(), FETCH_VERSION)
                .expect("decode");
            let records = m.responses[0].partitions[0]
                .records
                .as_ref()
                .expect("records");
            black_box(iterate_ours(records))
        })
    });
    group.bench_function("kafka-protocol+records", |b| {
        b.iter(|| {
            let m = kp::FetchResponse::decode(&mut black_box(&encoded).clone(), FETCH_VERSION)
                .expect("decode");
            let records = m.responses[0].partitions[0]
                .records
                .as_ref()
                .expect("records");
            black_box(iterate_theirs(records))
        })
    });
    group.finish();
}

fn produce_request(c: &mut Criterion) {
    use kafka_wire::messages::produce::{PartitionProduceData, ProduceRequest, TopicProduceData};
    // 10 topics x 10 partitions, each with one batch of ten 1 KiB records: ~1 MiB.
    let payloads = payloads(10, benches::VALUE_LEN, 0xfeed);
    let chunks = vec![Range {
        start: 0,
        end: payloads.len(),
    }];
    let batch = build_blob(&payloads, &chunks, Codec::None);
    let ours = ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topic_data: (0..10u128)
            .map(|t| TopicProduceData {
                name: format!("topic-{t}").into(),
                topic_id: kafka_wire::Uuid::from_u128(t + 1),
                partition_data: (0..10)
                    .map(|p| PartitionProduceData {
                        index: p,
                        records: Some(batch.clone()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut theirs = kp::ProduceRequest::default();
    theirs.acks = -1;
    theirs.timeout_ms = 30_000;
    theirs.topic_data = (0..10u128)
        .map(|t| {
            let mut topic = kp::produce_request::TopicProduceData::default();
            topic.name = kp::TopicName(StrBytes::from_string(format!("topic-{t}")));
            topic.topic_id = uuid::Uuid::from_u128(t + 1);
            topic.partition_data = (0..10)
                .map(|p| {
                    let mut part = kp::produce_request::PartitionProduceData::default();
                    part.index = p;
                    part.records = Some(batch.clone());
                    part
                })
                .collect();
            topic
        })
        .collect();

    let mut ours_bytes = Vec::new();
    ours.encode(&mut ours_bytes, PRODUCE_VERSION)
        .expect("encode");
    let mut theirs_bytes = BytesMut::new();
    theirs
        .encode(&mut theirs_bytes, PRODUCE_VERSION)
        .expect("encode");
    assert_eq!(ours_bytes, &theirs_bytes[..], "same produce request bytes");
    let encoded = Bytes::from(ours_bytes);

    let mut group = c.benchmark_group("produce_request_encode");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut out = BytesMut::with_capacity(encoded.len() * 2);
    group.bench_function("ours", |b| {
        b.iter(|| {
            out.clear();
            black_box(&ours)
                .encode(&mut out, PRODUCE_VERSION)
                .expect("encode");
            black_box(out.len())
        })
    });
    group.bench_function("kafka-protocol", |b| {
        b.iter(|| {
            out.clear();
            black_box(&theirs)
                .encode(&mut out, PRODUCE_VERSION)
                .expect("encode");
            black_box(out.len())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("produce_request_decode");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("ours", |b| {
        b.iter(|| {
            black_box(ProduceRequest::decode(
                &mut black_box(&encoded).clone(),
                PRODUCE_VERSION,
            ))
            .expect("decode")
        })
    });
    group.bench_function("kafka-protocol", |b| {
        b.iter(|| {
            black_box(kp::ProduceRequest::decode(
                &mut black_box(&encoded).clone(),
                PRODUCE_VERSION,
            ))
            .expect("decode")
        })
    });
    group.finish();
}

fn metadata_response(c: &mut Criterion) {
    use kafka_wire::messages::metadata::{
        MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    const BROKERS: i32 = 6;
    let replicas = |t: i32, p: i32| -> Vec<i32> { (0..3).map(|r| (t + p + r) % BROKERS).collect() };
    let ours = MetadataResponse {
        brokers: (0..BROKERS)
            .map(|id| MetadataResponseBroker {
                node_id: id,
                host: format!("broker-{id}.kafka.internal").into(),
                port: 9092,
                rack: Some(format!("rack-{}", id % 3).into()),
                ..Default::default()
            })
            .collect(),
        cluster_id: Some("cluster-benchmark-0001".into()),
        controller_id: 1,
        topics: (0..100)
            .map(|t| MetadataResponseTopic {
                name: Some(format!("orders.events.topic-{t:03}").into()),
                topic_id: kafka_wire::Uuid::from_u128(0xabcd_0000 + t as u128),
                partitions: (0..10)
                    .map(|p| MetadataResponsePartition {
                        partition_index: p,
                        leader_id: replicas(t, p)[0],
                        leader_epoch: 5,
                        replica_nodes: replicas(t, p),
                        isr_nodes: replicas(t, p),
                        offline_replicas: Vec::new(),
                        ..Default::default()
                    })
                    .collect(),
                topic_authorized_operations: -2147483648,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut encoded = Vec::new();
    ours.encode(&mut encoded, METADATA_VERSION).expect("encode");
    let encoded = Bytes::from(encoded);
    let theirs =
        kp::MetadataResponse::decode(&mut encoded.clone(), METADATA_VERSION).expect("decode");
    let mut theirs_bytes = BytesMut::new();
    theirs
        .encode(&mut theirs_bytes, METADATA_VERSION)
        .expect("encode");
    assert_eq!(&encoded[..], &theirs_bytes[..], "same metadata bytes");
    let partitions: usize = theirs.topics.iter().map(|t| t.partitions.len()).sum();
    assert_eq!(partitions, 1000);

    let mut group = c.benchmark_group("metadata_response_decode");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("ours", |b| {
        b.iter(|| {
            black_box(MetadataResponse::decode(
                &mut black_box(&encoded).clone(),
                METADATA_VERSION,
            ))
            .expect("decode")
        })
    });
    group.bench_function("kafka-protocol", |b| {
        b.iter(|| {
            black_box(kp::MetadataResponse::decode(
                &mut black_box(&encoded).clone(),
                METADATA_VERSION,
            ))
            .expect("decode")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("metadata_response_encode");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut out = BytesMut::with_capacity(encoded.len() * 2);
    group.bench_function("ours", |b| {
        b.iter(|| {
            out.clear();
            black_box(&ours)
                .encode(&mut out, METADATA_VERSION)
                .expect("encode");
            black_box(out.len())
        })
    });
    group.bench_function("kafka-protocol", |b| {
        b.iter(|| {
            out.clear();
            black_box(&theirs)
                .encode(&mut out, METADATA_VERSION)
                .expect("encode");
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(
    wire,
    records_read,
    records_build,
    fetch_response,
    produce_request,
    metadata_response
);
criterion_main!(wire);
