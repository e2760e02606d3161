//! Late answers, against a scripted broker: an answer that comes after its request timed out
//! on a connection that is otherwise alive is dropped and the connection goes on; a correlation
//! id that was never sent still breaks the connection; a request that times out with nothing
//! at all arriving from the broker still closes the connection (a dead peer).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_client::config::ClientConfig;
use kafka_client::error::ProtocolErrorKind;
use kafka_client::kafka_wire::codec::KString;
use kafka_client::kafka_wire::frame::{encode_response, FrameDecoder};
use kafka_client::kafka_wire::header::RequestHeader;
use kafka_client::kafka_wire::messages::api_versions::ApiVersion;
use kafka_client::kafka_wire::messages::metadata::MetadataResponseBroker;
use kafka_client::kafka_wire::messages::{
    ApiVersionsRequest, ApiVersionsResponse, DescribeClusterRequest, DescribeClusterResponse,
    MetadataRequest, MetadataResponse, SUPPORTED_APIS,
};
use kafka_client::kafka_wire::ApiKey;
use kafka_client::{Client, Error, Purpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The node id the scripted broker gives itself.
const NODE: i32 = 7;

/// A broker that answers ApiVersions and Metadata (listing only itself), and the n-th
/// DescribeCluster request it gets (counted over all its connections) as follows:
/// 0: after 400 ms; 1: 1200 ms after reading it; 2: at once; 3: with a correlation id that was
/// never sent; 4 and later: never. Returns its address and the DescribeCluster count.
async fn scripted_broker() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock, addr.port(), c.clone()));
        }
    });
    (addr.to_string(), count)
}

async fn serve(mut sock: TcpStream, port: u16, count: Arc<AtomicUsize>) {
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
        let (corr, version) = (header.correlation_id, header.request_api_version);
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
                let resp = MetadataResponse {
                    brokers: vec![MetadataResponseBroker {
                        node_id: NODE,
                        host: KString::from("127.0.0.1"),
                        port: port as i32,
                        ..Default::default()
                    }],
                    controller_id: NODE,
                    ..Default::default()
                };
                encode_response::<MetadataRequest>(&mut out, corr, version, &resp, 1 << 20)
                    .unwrap();
            }
            ApiKey::DESCRIBE_CLUSTER => {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let answer_as = match n {
                    0 => {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        corr
                    }
                    1 => {
                        tokio::time::sleep(Duration::from_millis(1200)).await;
                        corr
                    }
                    2 => corr,
                    3 => corr + 1000,
                    _ => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                };
                let resp = DescribeClusterResponse {
                    cluster_id: KString::from("scripted"),
                    controller_id: NODE,
                    ..Default::default()
                };
                encode_response::<DescribeClusterRequest>(
                    &mut out,
                    answer_as,
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
}

async fn describe(conn: &kafka_client::net::Connection) -> kafka_client::Result<String> {
    let resp = kafka_client::client::send_on(conn, |_| DescribeClusterRequest::default()).await?;
    Ok(resp.cluster_id.as_str().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_is_dropped_and_the_live_connection_goes_on() {
    crate::logs();
    let (addr, count) = scripted_broker().await;
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(vec![addr])
        .request_timeout(Duration::from_millis(1000));
    let client = Client::connect(cfg).await.unwrap();
    let conn = client.connection(NODE, Purpose::Control).await.unwrap();

    // Z is answered after 400 ms; A, written right behind it, after about 1.6 s: past its
    // 1 s timeout, but the connection showed it is alive (Z's answer came after A went out).
    let t0 = Instant::now();
    let z = {
        let conn = conn.clone();
        tokio::spawn(async move { describe(&conn).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = {
        let conn = conn.clone();
        tokio::spawn(async move { describe(&conn).await })
    };
    assert_eq!(z.await.unwrap().unwrap(), "scripted");
    let err = a.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(!conn.is_closed(), "a timeout on a live connection keeps it");
    // A's answer arrives and is dropped as late, not taken for a protocol violation.
    while conn.late_answers() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the late answer never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    assert!(
        !conn.is_closed(),
        "the late answer did not break the connection"
    );
    // The same connection serves the next request.
    assert_eq!(describe(&conn).await.unwrap(), "scripted");
    assert_eq!(conn.late_answers(), 1);
    assert!(!conn.is_closed());

    // A correlation id that was never sent is a broken peer: a violation, the connection goes.
    let err = describe(&conn).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Protocol {
                kind: ProtocolErrorKind::CorrelationId { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(conn.is_closed());

    // Silence: nothing at all arrives after the request went out, so the timeout closes the
    // connection (the peer may be dead).
    let conn = client.connection(NODE, Purpose::Control).await.unwrap();
    let err = describe(&conn).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        conn.is_closed(),
        "a silent connection is dropped on timeout"
    );
    assert_eq!(count.load(Ordering::SeqCst), 5);
    client.close();
}
