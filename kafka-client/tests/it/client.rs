//! The client spine against the real broker and against a scripted misbehaving one: version
//! negotiation, per-purpose connections, metadata, and what happens when a broker sends garbage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_client::config::ClientConfig;
use kafka_client::error::ProtocolErrorKind;
use kafka_client::kafka_wire::codec::KString;
use kafka_client::kafka_wire::frame::{encode_response, FrameDecoder};
use kafka_client::kafka_wire::header::RequestHeader;
use kafka_client::kafka_wire::messages::api_versions::ApiVersion;
use kafka_client::kafka_wire::messages::metadata::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_client::kafka_wire::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, SUPPORTED_APIS,
};
use kafka_client::kafka_wire::{ApiKey, ErrorCode};
use kafka_client::{Client, Error, Purpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::default();
    c.bootstrap_servers(vec![bootstrap.to_string()])
        .request_timeout(Duration::from_secs(10));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_negotiates_and_reads_metadata() {
    let cluster = testkit::shared_cluster(1)
        .await
        .expect("the testkit cluster must start");
    let client = Client::connect(config(&cluster.bootstrap())).await.unwrap();
    let meta = client.metadata();
    assert_eq!(meta.brokers.len(), 1, "{meta:?}");
    assert!(meta.cluster_id.is_some());
    let node = *meta.brokers.keys().next().unwrap();

    // Separate connections per purpose, each with ApiVersions done.
    let produce = client.connection(node, Purpose::Produce).await.unwrap();
    let fetch = client.connection(node, Purpose::Fetch).await.unwrap();
    let again = client.connection(node, Purpose::Produce).await.unwrap();
    assert!(produce.version::<MetadataRequest>().unwrap() >= 12);
    assert!(!produce.is_closed() && !fetch.is_closed());
    // Closing one purpose's connection leaves the other alone.
    produce.close(Error::Closed);
    assert!(again.is_closed(), "clones share the socket");
    assert!(!fetch.is_closed());
    let reopened = client.connection(node, Purpose::Produce).await.unwrap();
    assert!(!reopened.is_closed());

    // Pipelining: many requests in flight on one connection, answered in order.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = fetch.clone();
        tasks.push(tokio::spawn(async move {
            kafka_client::client::send_on(&c, |_| ApiVersionsRequest {
                client_software_name: KString::from("t"),
                client_software_version: KString::from("1"),
                ..Default::default()
            })
            .await
        }));
    }
    for t in tasks {
        let resp = t.await.unwrap().unwrap();
        assert_eq!(resp.error_code, 0);
    }

    // An unknown topic is a typed broker error, not a hang.
    let err = client.topic("no-such-topic-anywhere").await.unwrap_err();
    assert_eq!(
        err.broker_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
        "{err}"
    );
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_reopen_on_demand() {
    let cluster = testkit::shared_cluster(1)
        .await
        .expect("the testkit cluster must start");
    let mut cfg = config(&cluster.bootstrap());
    cfg.connections_max_idle(Duration::from_millis(300));
    let client = Client::connect(cfg).await.unwrap();
    let node = *client.metadata().brokers.keys().next().unwrap();
    let conn = client.connection(node, Purpose::Fetch).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !conn.is_closed() {
        assert!(
            std::time::Instant::now() < deadline,
            "idle connection never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = client
        .send(node, Purpose::Fetch, |_| MetadataRequest {
            topics: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(resp.brokers.len(), 1);
    client.close();
}

#[tokio::test]
async fn unreachable_bootstrap_fails_with_io_error() {
    // A port nobody listens on: bind, learn the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config(&format!("127.0.0.1:{port}"));
    cfg.request_timeout(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let err = Client::connect(cfg).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // Tried again until request.timeout.ms, then given up.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

/// What the scripted broker does once a request other than ApiVersions/Metadata arrives.
#[derive(Clone, Copy, Debug)]
enum Misbehave {
    /// A response whose correlation id is not the request's.
    WrongCorrelationId,
    /// A frame claiming 2 GiB.
    HostileLength,
    /// A frame too short to hold a response header.
    TruncatedFrame,
    /// A well-framed response whose body does not decode.
    GarbageBody,
    /// Half a frame, then the connection closes.
    CloseMidFrame,
    /// Nothing at all (the request must time out).
    Silence,
}

/// A broker that answers ApiVersions and Metadata correctly (listing itself as node 7 and the
/// real broker as node `real_id`), then misbehaves.
async fn scripted_broker(real_id: i32, real_addr: String, how: Misbehave) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let real_addr = real_addr.clone();
            tokio::spawn(serve(sock, addr.port(), real_id, real_addr, how));
        }
    });
    addr.to_string()
}

async fn serve(mut sock: TcpStream, port: u16, real_id: i32, real_addr: String, how: Misbehave) {
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    loop {
        let frame = loop {
            if let Ok(Some(f)) = decoder.decode(&mut buf) {
                break f;
            }
            if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        let mut body = frame;
        let Ok(header) = RequestHeader::decode_any(&mut body) else {
            return;
        };
        let corr = header.correlation_id;
        let version = header.request_api_version;
        let mut out = BytesMut::new();
        match header.request_api_key {
            ApiKey::API_VERSIONS => {
                let resp = ApiVersionsResponse {
                    api_keys: SUPPORTED_APIS
                        .iter()
                        .map(|&(k, lo, hi)| ApiVersion {
                            api_key: k.0,
                            min_version: lo,
                            max_version: hi,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                encode_response::<ApiVersionsRequest>(&mut out, corr, version, &resp, 1 << 20)
                    .unwrap();
            }
            ApiKey::METADATA => {
                let (host, rport) = real_addr.rsplit_once(':').unwrap();
                let resp = MetadataResponse {
                    brokers: vec![
                        MetadataResponseBroker {
                            node_id: 7,
                            host: KString::from("127.0.0.1"),
                            port: port as i32,
                            ..Default::default()
                        },
                        MetadataResponseBroker {
                            node_id: real_id,
                            host: KString::from(host),
                            port: rport.parse().unwrap(),
                            ..Default::default()
                        },
                    ],
                    controller_id: 7,
                    ..Default::default()
                };
                encode_response::<MetadataRequest>(&mut out, corr, version, &resp, 1 << 20)
                    .unwrap();
            }
            _ => match how {
                Misbehave::WrongCorrelationId => {
                    out.extend_from_slice(&8i32.to_be_bytes());
                    out.extend_from_slice(&(corr + 1000).to_be_bytes());
                    out.extend_from_slice(&[0, 0, 0, 0]);
                }
                Misbehave::HostileLength => out.extend_from_slice(&0x7fff_fff0i32.to_be_bytes()),
                Misbehave::TruncatedFrame => out.extend_from_slice(&[0, 0, 0, 2, 0, 0]),
                Misbehave::GarbageBody => {
                    out.extend_from_slice(&9i32.to_be_bytes());
                    out.extend_from_slice(&corr.to_be_bytes());
                    out.extend_from_slice(&[0xff; 5]);
                }
                Misbehave::CloseMidFrame => {
                    out.extend_from_slice(&100i32.to_be_bytes());
                    out.extend_from_slice(&corr.to_be_bytes());
                    let _ = sock.write_all(&out).await;
                    return;
                }
                Misbehave::Silence => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
            },
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_one_broker_resets_its_connection_and_spares_the_others() {
    let cluster = testkit::shared_cluster(1)
        .await
        .expect("the testkit cluster must start");
    let real = Client::connect(config(&cluster.bootstrap())).await.unwrap();
    let real_meta = real.metadata();
    let (&real_id, real_info) = real_meta.brokers.iter().next().unwrap();
    for how in [
        Misbehave::WrongCorrelationId,
        Misbehave::HostileLength,
        Misbehave::TruncatedFrame,
        Misbehave::GarbageBody,
        Misbehave::CloseMidFrame,
        Misbehave::Silence,
    ] {
        let fake = scripted_broker(real_id, real_info.addr(), how).await;
        let mut cfg = config(&fake);
        cfg.request_timeout(Duration::from_secs(2));
        let client = Client::connect(cfg).await.unwrap();
        assert!(client.metadata().brokers.contains_key(&7));

        // A DescribeCluster to the fake broker: it misbehaves.
        let conn = client.connection(7, Purpose::Control).await.unwrap();
        let err = kafka_client::client::send_on(&conn, |_| {
            kafka_client::kafka_wire::messages::DescribeClusterRequest::default()
        })
        .await
        .unwrap_err();
        match how {
            Misbehave::WrongCorrelationId => assert!(
                matches!(
                    &err,
                    Error::Protocol {
                        kind: ProtocolErrorKind::CorrelationId { .. },
                        ..
                    }
                ),
                "{how:?}: {err}"
            ),
            Misbehave::HostileLength | Misbehave::TruncatedFrame | Misbehave::GarbageBody => {
                assert!(matches!(err, Error::Protocol { .. }), "{how:?}: {err}")
            }
            Misbehave::CloseMidFrame => assert!(matches!(err, Error::Io { .. }), "{how:?}: {err}"),
            Misbehave::Silence => assert!(matches!(err, Error::Timeout { .. }), "{how:?}: {err}"),
        }
        assert!(conn.is_closed(), "{how:?}: the connection must be reset");

        // The same client still works with the real broker...
        let resp = client
            .send(real_id, Purpose::Control, |_| MetadataRequest {
                topics: Some(vec![]),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(resp.brokers.iter().any(|b| b.node_id == real_id));
        // ...and reconnects to the misbehaving one on demand.
        let again = client.connection(7, Purpose::Control).await.unwrap();
        assert!(!again.is_closed());
        client.close();
    }
}

/// A broker of long ago: ApiVersions up to v2 (a v3+ request gets UNSUPPORTED_VERSION in the v0
/// format, KIP-511), Metadata up to v5, Produce up to v2, Fetch up to v3, nothing else. It
/// answers ApiVersions and Metadata (topic `old` with one partition that it leads, as node 7),
/// and closes the connection on anything else, as a broker does with an API it does not know.
/// Returns its address and how many ApiVersions requests above v2 it refused.
async fn old_broker() -> (String, Arc<AtomicUsize>) {
    const RANGES: &[(ApiKey, i16, i16)] = &[
        (ApiKey::PRODUCE, 0, 2),
        (ApiKey::FETCH, 0, 3),
        (ApiKey::METADATA, 0, 5),
        (ApiKey::API_VERSIONS, 0, 2),
    ];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let decoder = FrameDecoder::new(1 << 20);
                let mut buf = BytesMut::new();
                loop {
                    let frame = loop {
                        if let Ok(Some(f)) = decoder.decode(&mut buf) {
                            break f;
                        }
                        if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    };
                    let mut body = frame;
                    let Ok(h) = RequestHeader::decode_any(&mut body) else {
                        return;
                    };
                    let (corr, version) = (h.correlation_id, h.request_api_version);
                    let mut out = BytesMut::new();
                    let ranges = || {
                        RANGES
                            .iter()
                            .map(|&(k, lo, hi)| ApiVersion {
                                api_key: k.0,
                                min_version: lo,
                                max_version: hi,
                                ..Default::default()
                            })
                            .collect()
                    };
                    match h.request_api_key {
                        ApiKey::API_VERSIONS if version > 2 => {
                            count.fetch_add(1, Ordering::SeqCst);
                            let resp = ApiVersionsResponse {
                                error_code: ErrorCode::UNSUPPORTED_VERSION.0,
                                api_keys: ranges(),
                                ..Default::default()
                            };
                            encode_response::<ApiVersionsRequest>(
                                &mut out,
                                corr,
                                0,
                                &resp,
                                1 << 20,
                            )
                            .unwrap();
                        }
                        ApiKey::API_VERSIONS => {
                            let resp = ApiVersionsResponse {
                                api_keys: ranges(),
                                ..Default::default()
                            };
                            encode_response::<ApiVersionsRequest>(
                                &mut out,
                                corr,
                                version,
                                &resp,
                                1 << 20,
                            )
                            .unwrap();
                        }
                        ApiKey::METADATA if version <= 5 => {
                            let resp = MetadataResponse {
                                brokers: vec![MetadataResponseBroker {
                                    node_id: 7,
                                    host: KString::from("127.0.0.1"),
                                    port: addr.port() as i32,
                                    ..Default::default()
                                }],
                                controller_id: 7,
                                topics: vec![MetadataResponseTopic {
                                    name: Some(KString::from("old")),
                                    partitions: vec![MetadataResponsePartition {
                                        partition_index: 0,
                                        leader_id: 7,
                                        replica_nodes: vec![7],
                                        isr_nodes: vec![7],
                                        ..Default::default()
                                    }],
                                    ..Default::default()
                                }],
                                ..Default::default()
                            };
                            encode_response::<MetadataRequest>(
                                &mut out,
                                corr,
                                version,
                                &resp,
                                1 << 20,
                            )
                            .unwrap();
                        }
                        _ => return,
                    }
                    if sock.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr.to_string(), refused)
}

/// A broker that only speaks old versions: the ApiVersions v0 error answer is read and the
/// request retried at v2; what is common works (Metadata v5), and what is not fails at once with
/// a typed `Unsupported` error naming the API and both ranges: no panic, no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_only_old_versions_gets_clear_unsupported_errors() {
    use kafka_client::config::{AutoOffsetReset, ConsumerConfig, ProducerConfig};
    use kafka_client::kafka_wire::messages::ProduceRequest;
    use kafka_client::{Consumer, Producer, ProducerRecord, TopicPartition};

    let (addr, refused) = old_broker().await;
    let client = Client::connect(config(&addr)).await.expect("connect");
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "one v5 ApiVersions refused"
    );
    let conn = client.connection(7, Purpose::Control).await.unwrap();
    assert_eq!(conn.versions().version(ApiKey::API_VERSIONS), Some(2));
    assert_eq!(conn.version::<MetadataRequest>(), Some(5));
    assert_eq!(conn.version::<ProduceRequest>(), None);
    assert_eq!(conn.versions().offered(ApiKey::PRODUCE), Some((0, 2)));
    let t = client.topic("old").await.expect("metadata v5 works");
    assert_eq!(t.partitions.len(), 1);

    // A request with no common version: refused before anything is sent.
    let err = kafka_client::client::send_on(&conn, |_| ProduceRequest::default())
        .await
        .unwrap_err();
    match &err {
        Error::Unsupported {
            api, broker_range, ..
        } => {
            assert_eq!(*api, "Produce");
            assert_eq!(*broker_range, Some((0, 2)));
        }
        other => panic!("expected Unsupported, got {other}"),
    }
    assert!(err.to_string().contains("Produce"), "{err}");
    assert!(!err.is_retriable());
    assert!(
        !conn.is_closed(),
        "a refused request leaves the connection alone"
    );

    // A producer's record fails with the same error, well within its delivery timeout.
    let mut pcfg = ProducerConfig::default();
    pcfg.client_mut()
        .bootstrap_servers(vec![addr.clone()])
        .request_timeout(Duration::from_secs(5));
    pcfg.enable_idempotence(Some(false))
        .acks(kafka_client::config::Acks::One)
        .delivery_timeout(Duration::from_secs(20));
    let producer = Producer::new(pcfg).await.expect("producer");
    let started = std::time::Instant::now();
    let delivery = producer
        .send(ProducerRecord::new("old").value("x"))
        .await
        .expect("accepted into the buffer");
    let err = tokio::time::timeout(Duration::from_secs(15), delivery)
        .await
        .expect("the delivery must not hang")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { api: "Produce", .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let _ = producer.close().await;

    // A consumer's poll says why it cannot fetch.
    let mut ccfg = ConsumerConfig::default();
    ccfg.client_mut().bootstrap_servers(vec![addr.clone()]);
    ccfg.auto_offset_reset(AutoOffsetReset::Earliest);
    let consumer = Consumer::new(ccfg).await.expect("consumer");
    consumer
        .assign([TopicPartition::new("old", 0)])
        .await
        .expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let err = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "poll neither failed nor returned records in 15 s"
        );
        match consumer.poll(Duration::from_millis(300)).await {
            Err(e) => break e,
            Ok(r) => assert!(r.is_empty(), "records from nowhere: {r:?}"),
        }
    };
    assert!(
        matches!(&err, Error::Unsupported { .. }),
        "expected Unsupported from poll, got {err}"
    );
    consumer.close().await;
    client.close();
}

/// `Client::connect` retries across the bootstrap servers until `request.timeout.ms`: a broker
/// that refuses connections for its first second (restarting, say) is reached, and a port that
/// never answers fails with the I/O error once the timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_retries_the_first_metadata_request_until_its_deadline() {
    let (real, _) = old_broker().await;
    // A front that closes every connection for 1 s, then relays to `real`.
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap().to_string();
    let opened = std::time::Instant::now();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = front.accept().await {
            if opened.elapsed() < Duration::from_secs(1) {
                drop(sock);
                continue;
            }
            let real = real.clone();
            tokio::spawn(async move {
                let mut up = TcpStream::connect(&real).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
            });
        }
    });
    let client = Client::connect(config(&front_addr))
        .await
        .expect("connect retries until the broker answers");
    assert!(opened.elapsed() >= Duration::from_secs(1));
    assert!(client.metadata().brokers.contains_key(&7));
    client.close();
}
