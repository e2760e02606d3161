//! Quick start: starts a local Apache Kafka (one KRaft node, via `testkit`), then creates a topic,
//! produces compressed record batches and fetches them back, speaking the protocol with
//! `kafka-wire` over a plain TCP connection, and checks that every record came back intact.
//!
//! ```sh
//! cargo run --release -p kafka-client --example quickstart
//! # or against a broker of your own:
//! QUICKSTART_BOOTSTRAP=127.0.0.1:9092 cargo run --release -p kafka-client --example quickstart
//! ```
//!
//! This drives the codec by hand; the client's own producer and consumer replace it as they land.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_wire::frame::{encode_request, FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
use kafka_wire::header::ResponseHeader;
use kafka_wire::messages::create_topics::{CreatableTopic, CreateTopicsRequest};
use kafka_wire::messages::fetch::{FetchPartition, FetchRequest, FetchTopic};
use kafka_wire::messages::produce::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_wire::messages::ApiVersionsRequest;
use kafka_wire::records::{BatchBuilder, BatchOptions, ReadOptions, RecordBatches};
use kafka_wire::{Codec, Decode, ErrorCode, KString, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TOPIC: &str = "quickstart";
const PARTITIONS: i32 = 3;
const RECORDS_PER_PARTITION: usize = 10_000;

/// One connection, one request at a time: enough for a demonstration.
struct Conn {
    stream: TcpStream,
    read_buf: BytesMut,
    frames: FrameDecoder,
    next_correlation_id: i32,
}

impl Conn {
    async fn connect(addr: &str) -> Result<Conn, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            frames: FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE),
            next_correlation_id: 1,
        })
    }

    async fn call<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, BoxError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut out = BytesMut::new();
        encode_request(
            &mut out,
            correlation_id,
            Some("quickstart"),
            version,
            request,
            DEFAULT_MAX_FRAME_SIZE,
        )?;
        self.stream.write_all(&out).await?;
        let mut frame = loop {
            if let Some(frame) = self.frames.decode(&mut self.read_buf)? {
                break frame;
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Err("the broker closed the connection".into());
            }
        };
        let header = ResponseHeader::decode(&mut frame, R::response_header_version(version))?;
        if header.correlation_id != correlation_id {
            return Err(format!(
                "correlation id {} answered {correlation_id}",
                header.correlation_id
            )
            .into());
        }
        Ok(R::Response::decode(&mut frame, version)?)
    }
}

fn check(code: i16, what: &str) -> Result<(), BoxError> {
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{what}: broker error {}", ErrorCode(code)).into())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    // Keep the cluster alive until the end of `main`: dropping it stops the broker.
    let (_cluster, bootstrap) = match std::env::var("QUICKSTART_BOOTSTRAP") {
        Ok(b) => (None, b),
        Err(_) => {
            println!(
                "starting a local Apache Kafka {} (KRaft, 1 node)...",
                testkit::dist::kafka_version()
            );
            let cluster = testkit::Cluster::start(testkit::ClusterConfig::with_brokers(1)).await?;
            let bootstrap = cluster.bootstrap();
            println!(
                "cluster up in {:.1?}: bootstrap={bootstrap}",
                started.elapsed()
            );
            (Some(cluster), bootstrap)
        }
    };
    let addr = bootstrap
        .split(',')
        .next()
        .ok_or("empty bootstrap")?
        .to_string();
    let mut conn = Conn::connect(&addr).await?;

    let versions = conn
        .call(
            3,
            &ApiVersionsRequest {
                client_software_name: KString::from("kafka-rs-quickstart"),
                client_software_version: KString::from(env!("CARGO_PKG_VERSION")),
                ..Default::default()
            },
        )
        .await?;
    check(versions.error_code, "ApiVersions")?;
    println!("broker offers {} APIs", versions.api_keys.len());

    let created = conn
        .call(
            7,
            &CreateTopicsRequest {
                topics: vec![CreatableTopic {
                    name: KString::from(TOPIC),
                    num_partitions: PARTITIONS,
                    replication_factor: 1,
                    ..Default::default()
                }],
                timeout_ms: 30_000,
                ..Default::default()
            },
        )
        .await?;
    for t in &created.topics {
        if t.error_code != ErrorCode::TOPIC_ALREADY_EXISTS.0 {
            check(t.error_code, "CreateTopics")?;
        }
    }

    // Produce one lz4-compressed batch per partition, retrying while the new topic's leaders
    // are elected.
    let produce_started = Instant::now();
    let mut base_offsets = Vec::new();
    for partition in 0..PARTITIONS {
        let mut builder = BatchBuilder::new(BatchOptions {
            compression: Codec::Lz4,
            max_batch_bytes: 8 << 20,
            ..Default::default()
        });
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        for i in 0..RECORDS_PER_PARTITION {
            let key = format!("key-{partition}-{i}");
            let value = format!("value {i} of partition {partition}");
            builder.append(
                now_ms,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[("source", Some(b"quickstart"))],
            )?;
        }
        let batch = builder.finish()?;
        let request = ProduceRequest {
            acks: -1,
            timeout_ms: 30_000,
            topic_data: vec![TopicProduceData {
                name: KString::from(TOPIC),
                partition_data: vec![PartitionProduceData {
                    index: partition,
                    records: Some(batch),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let base_offset = loop {
            let response = conn.call(12, &request).await?;
            let p = &response.responses[0].partition_responses[0];
            let code = ErrorCode(p.error_code);
            if code.0 == 0 {
                break p.base_offset;
            }
            if !code.is_retriable() || Instant::now() > deadline {
                return Err(format!("produce to {TOPIC}-{partition}: {code}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        base_offsets.push(base_offset);
    }
    let total = RECORDS_PER_PARTITION * PARTITIONS as usize;
    println!(
        "produced {total} records (acks=all, lz4) in {:.1?}",
        produce_started.elapsed()
    );

    // Fetch every partition back from the offset its batch was written at.
    let fetch_started = Instant::now();
    let mut seen = 0usize;
    for partition in 0..PARTITIONS {
        let mut offset = base_offsets[partition as usize];
        let end = offset + RECORDS_PER_PARTITION as i64;
        while offset < end {
            let response = conn
                .call(
                    12,
                    &FetchRequest {
                        replica_id: -1,
                        max_wait_ms: 500,
                        min_bytes: 1,
                        max_bytes: 50 << 20,
                        topics: vec![FetchTopic {
                            topic: KString::from(TOPIC),
                            partitions: vec![FetchPartition {
                                partition,
                                fetch_offset: offset,
                                partition_max_bytes: 8 << 20,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )
                .await?;
            check(response.error_code, "Fetch")?;
            let data = &response.responses[0].partitions[0];
            check(data.error_code, "Fetch partition")?;
            for batch in RecordBatches::new(data.records.clone().unwrap_or_default()) {
                // `records` checks the batch's CRC-32C first (ReadOptions::verify_crc).
                for record in batch?.records(&ReadOptions::default())? {
                    let record = record?;
                    if record.offset < offset {
                        continue;
                    }
                    let i = (record.offset - base_offsets[partition as usize]) as usize;
                    let want_key = format!("key-{partition}-{i}");
                    let want_value = format!("value {i} of partition {partition}");
                    if record.key.as_deref() != Some(want_key.as_bytes())
                        || record.value.as_deref() != Some(want_value.as_bytes())
                    {
                        return Err(format!(
                            "record at {TOPIC}-{partition}@{} does not match",
                            record.offset
                        )
                        .into());
                    }
                    offset = record.offset + 1;
                    seen += 1;
                }
            }
        }
    }
    println!(
        "fetched and verified {seen} records in {:.1?}",
        fetch_started.elapsed()
    );
    if seen != total {
        return Err(format!("expected {total} records, read {seen}").into());
    }
    println!(
        "OK: round trip of {total} records through {bootstrap} in {:.1?}",
        started.elapsed()
    );
    Ok(())
}
