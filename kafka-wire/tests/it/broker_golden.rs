//! Golden bytes from the real broker: requests we encode are sent to Apache Kafka (started by
//! `testkit`), and every response frame it returns must decode completely, re-encode to the very
//! same bytes, and agree with `kafka-protocol` where that crate knows the version. The frames are
//! also kept under `tests/data/broker/` (rewritten with `KAFKA_WIRE_UPDATE_GOLDEN=1`) so that
//! `golden_broker_frames_decode` checks them without a broker.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey as KpApiKey, ResponseKind};
use kafka_wire::codec::Uuid;
use kafka_wire::frame::{encode_request, FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
use kafka_wire::header::ResponseHeader;
use kafka_wire::messages::create_topics::CreatableTopic;
use kafka_wire::messages::fetch::{FetchPartition, FetchTopic};
use kafka_wire::messages::list_offsets::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_wire::messages::metadata::MetadataRequestTopic;
use kafka_wire::messages::produce::{PartitionProduceData, TopicProduceData};
use kafka_wire::messages::{
    decode_response, ApiVersionsRequest, CreateTopicsRequest, DescribeClusterRequest, FetchRequest,
    FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
};
use kafka_wire::records::{BatchBuilder, BatchOptions};
use kafka_wire::{ApiKey, Codec, Decode, KString, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/broker")
}

/// Checks one response body: decodes fully, re-encodes identically, and matches kafka-protocol's
/// re-encoding when it supports the version. Returns how many checks kafka-protocol took part in.
fn check_body(key: ApiKey, version: i16, body: &Bytes) -> Result<usize, String> {
    let name = key.name().unwrap_or("unknown");
    let mut buf = body.clone();
    let value =
        decode_response(key, version, &mut buf).map_err(|e| format!("{name} v{version}: {e}"))?;
    if !buf.is_empty() {
        return Err(format!(
            "{name} v{version}: {} bytes left after decode",
            buf.len()
        ));
    }
    let mut out = BytesMut::new();
    value
        .encode(&mut out, version)
        .map_err(|e| format!("{name} v{version}: re-encode: {e}"))?;
    if out[..] != body[..] {
        return Err(format!(
            "{name} v{version}: re-encoded bytes differ from the broker's"
        ));
    }
    let Ok(kp_key) = KpApiKey::try_from(key.0) else {
        return Ok(0);
    };
    let range = kp_key.valid_versions();
    if version < range.min || version > range.max {
        return Ok(0);
    }
    let mut kb = body.clone();
    let kp = ResponseKind::decode(kp_key, &mut kb, version)
        .map_err(|e| format!("{name} v{version}: kafka-protocol: {e}"))?;
    let mut kout = BytesMut::new();
    kp.encode(&mut kout, version)
        .map_err(|e| format!("{name} v{version}: kafka-protocol encode: {e}"))?;
    if kout[..] != body[..] {
        return Err(format!(
            "{name} v{version}: kafka-protocol re-encodes differently"
        ));
    }
    Ok(1)
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    frames: FrameDecoder,
    next_id: i32,
}

impl Conn {
    /// Sends `request` as `version` and returns the response body (after the header).
    async fn call<R: Request>(&mut self, version: i16, request: &R) -> Bytes {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        encode_request(
            &mut out,
            id,
            Some("golden"),
            version,
            request,
            DEFAULT_MAX_FRAME_SIZE,
        )
        .unwrap_or_else(|e| {
            panic!(
                "encode {} v{version}: {e}",
                R::API_KEY.name().unwrap_or("?")
            )
        });
        self.stream.write_all(&out).await.expect("write");
        let mut frame = loop {
            if let Some(frame) = self.frames.decode(&mut self.buf).expect("frame") {
                break frame;
            }
            let n = self.stream.read_buf(&mut self.buf).await.expect("read");
            assert!(
                n > 0,
                "broker closed the connection after {} v{version}",
                R::API_KEY.name().unwrap_or("?")
            );
        };
        let header = ResponseHeader::decode(&mut frame, R::response_header_version(version))
            .expect("header");
        assert_eq!(header.correlation_id, id);
        frame
    }
}

fn versions<R: Request>(broker: &BTreeMap<i16, (i16, i16)>) -> std::ops::RangeInclusive<i16> {
    let (lo, hi) = broker.get(&R::API_KEY.0).copied().unwrap_or((0, -1));
    lo.max(R::MIN_VERSION)..=hi.min(R::MAX_VERSION)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_responses_round_trip_exactly() {
    let cluster = testkit::shared_cluster(1)
        .await
        .expect("the test broker must start");
    let addr = cluster.node(1).expect("node 1").addr();
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the broker");
    let mut conn = Conn {
        stream,
        buf: BytesMut::new(),
        frames: FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE),
        next_id: 1,
    };
    let mut frames: Vec<(ApiKey, i16, Bytes)> = Vec::new();

    let av = ApiVersionsRequest {
        client_software_name: KString::from("kafka-wire-golden"),
        client_software_version: KString::from("0"),
        ..Default::default()
    };
    let mut broker = BTreeMap::new();
    for v in 0..=4 {
        let body = conn.call(v, &av).await;
        if v == 3 {
            let resp = kafka_wire::messages::ApiVersionsResponse::decode(&mut body.clone(), 3)
                .expect("ApiVersions v3");
            for k in &resp.api_keys {
                broker.insert(k.api_key, (k.min_version, k.max_version));
            }
        }
        frames.push((ApiKey::API_VERSIONS, v, body));
    }
    assert!(
        broker.len() > 50,
        "broker listed only {} APIs",
        broker.len()
    );

    let mut topic_id = Uuid::default();
    for v in versions::<CreateTopicsRequest>(&broker) {
        let req = CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: KString::from(format!("golden-{v}").as_str()),
                num_partitions: 2,
                replication_factor: 1,
                ..Default::default()
            }],
            timeout_ms: 30_000,
            ..Default::default()
        };
        let body = conn.call(v, &req).await;
        if v == 7 {
            let resp = kafka_wire::messages::CreateTopicsResponse::decode(&mut body.clone(), 7)
                .expect("CreateTopics v7");
            assert_eq!(resp.topics[0].error_code, 0, "create golden-7");
            topic_id = resp.topics[0].topic_id;
        }
        frames.push((ApiKey::CREATE_TOPICS, v, body));
    }
    assert_ne!(
        topic_id,
        Uuid::default(),
        "CreateTopics v7 gave no topic id"
    );
    let topic = KString::from("golden-7");

    for v in versions::<MetadataRequest>(&broker) {
        let req = MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                name: Some(topic.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        frames.push((ApiKey::METADATA, v, conn.call(v, &req).await));
    }

    let mut builder = BatchBuilder::new(BatchOptions {
        compression: Codec::None,
        ..Default::default()
    });
    for i in 0..10u8 {
        builder
            .append(
                1_700_000_000_000 + i64::from(i),
                Some(&[i]),
                Some(b"golden value"),
                &[("h", Some(b"v"))],
            )
            .expect("append");
    }
    let batch = builder.finish().expect("batch");
    for v in versions::<ProduceRequest>(&broker) {
        let mut t = TopicProduceData {
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(batch.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        if v >= 13 {
            t.topic_id = topic_id
        } else {
            t.name = topic.clone()
        }
        let req = ProduceRequest {
            acks: -1,
            timeout_ms: 30_000,
            topic_data: vec![t],
            ..Default::default()
        };
        frames.push((ApiKey::PRODUCE, v, conn.call(v, &req).await));
    }

    for v in versions::<FetchRequest>(&broker) {
        let mut t = FetchTopic {
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: 0,
                partition_max_bytes: 1 << 20,
                ..Default::default()
            }],
            ..Default::default()
        };
        if v >= 13 {
            t.topic_id = topic_id
        } else {
            t.topic = topic.clone()
        }
        let req = FetchRequest {
            replica_id: -1,
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![t],
            ..Default::default()
        };
        frames.push((ApiKey::FETCH, v, conn.call(v, &req).await));
    }

    for v in versions::<ListOffsetsRequest>(&broker) {
        let req = ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: topic.clone(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: 0,
                    timestamp: -1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        frames.push((ApiKey::LIST_OFFSETS, v, conn.call(v, &req).await));
    }
    for v in versions::<DescribeClusterRequest>(&broker) {
        frames.push((
            ApiKey::DESCRIBE_CLUSTER,
            v,
            conn.call(v, &DescribeClusterRequest::default()).await,
        ));
    }
    for v in versions::<FindCoordinatorRequest>(&broker) {
        let mut req = FindCoordinatorRequest::default();
        if v >= 4 {
            req.coordinator_keys = vec![KString::from("golden-group")]
        } else {
            req.key = KString::from("golden-group")
        }
        frames.push((ApiKey::FIND_COORDINATOR, v, conn.call(v, &req).await));
    }

    // A produced batch must come back from Fetch with the records we wrote.
    let (_, fv, fetch_body) = frames
        .iter()
        .rev()
        .find(|(k, v, _)| *k == ApiKey::FETCH && *v == 12)
        .expect("a Fetch v12 response");
    let fetched = kafka_wire::messages::FetchResponse::decode(&mut fetch_body.clone(), *fv)
        .expect("Fetch v12");
    let records = fetched.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    let batch = kafka_wire::records::RecordBatches::new(records)
        .next()
        .expect("a batch")
        .expect("valid batch");
    assert_eq!(batch.records_count(), 10);

    let mut failures = Vec::new();
    let mut with_kp = 0;
    for (key, v, body) in &frames {
        match check_body(*key, *v, body) {
            Ok(n) => with_kp += n,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} broker frames failed:\n{}",
        failures.len(),
        frames.len(),
        failures.join("\n")
    );
    println!(
        "{} broker response frames round-tripped exactly; {with_kp} also through kafka-protocol",
        frames.len()
    );
    assert!(frames.len() >= 60, "only {} frames captured", frames.len());

    if std::env::var_os("KAFKA_WIRE_UPDATE_GOLDEN").is_some() {
        let dir = golden_dir();
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (key, v, body) in &frames {
            std::fs::write(
                dir.join(format!(
                    "{}-{}-v{v}.bin",
                    key.0,
                    key.name().unwrap_or("unknown")
                )),
                body,
            )
            .expect("write golden");
        }
    }
}

#[test]
fn golden_broker_frames_decode() {
    let dir = golden_dir();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        let mut parts = name.trim_end_matches(".bin").split('-');
        let key: i16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("api key in name");
        let version: i16 = parts
            .next_back()
            .and_then(|s| s.trim_start_matches('v').parse().ok())
            .expect("version in name");
        let body = Bytes::from(std::fs::read(&path).expect("read"));
        check_body(ApiKey(key), version, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        n += 1;
    }
    assert!(
        n >= 60,
        "only {n} golden broker frames in {}",
        dir.display()
    );
}
