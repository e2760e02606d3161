//! Minimal Kafka requests (ApiVersions, Metadata) used to see whether brokers answer.
//!
//! Encoded with the `kafka-protocol` crate, which is fine for talking to our own broker; this is
//! not a client. Frames larger than [`MAX_FRAME`] are refused before any allocation, but the
//! `kafka-protocol` decoder itself is known to panic or abort on some hostile bytes: point probes
//! only at brokers started by this crate.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response frame accepted (bytes).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// ApiVersions version used by the probe.
pub const API_VERSIONS_VERSION: i16 = 3;
/// Metadata version used by the probe.
pub const METADATA_VERSION: i16 = 12;

/// A failed probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("bad answer from {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    #[error("broker {addr} answered with error code {code}")]
    ErrorCode { addr: SocketAddr, code: i16 },
}

/// One connection to a broker that sends requests one at a time.
pub struct ProbeConn {
    addr: SocketAddr,
    stream: TcpStream,
    correlation: i32,
}

impl ProbeConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<ProbeConn, ProbeError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProbeError::Timeout { addr, timeout })?
            .map_err(|source| ProbeError::Io { addr, source })?;
        let _ = stream.set_nodelay(true);
        Ok(ProbeConn {
            addr,
            stream,
            correlation: 0,
        })
    }

    /// The broker address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` at `version` and waits up to `timeout` for its response.
    pub async fn request<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ProbeError> {
        let addr = self.addr;
        tokio::time::timeout(timeout, self.request_inner(req, version))
            .await
            .map_err(|_| ProbeError::Timeout { addr, timeout })?
    }

    async fn request_inner<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, ProbeError> {
        let addr = self.addr;
        let proto = |reason: String| ProbeError::Protocol { addr, reason };
        let io = |source| ProbeError::Io { addr, source };
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("testkit-probe")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .map_err(|e| proto(format!("encoding request header: {e}")))?;
        req.encode(&mut body, version)
            .map_err(|e| proto(format!("encoding request: {e}")))?;
        let len = i32::try_from(body.len()).map_err(|_| proto("request too large".into()))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(len);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await.map_err(io)?;

        let len = self.stream.read_i32().await.map_err(io)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (4..=MAX_FRAME).contains(l))
            .ok_or_else(|| proto(format!("response frame length {len}")))?;
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await.map_err(io)?;
        let mut bytes = Bytes::from(buf);
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let rh = ResponseHeader::decode(&mut bytes, header_version)
            .map_err(|e| proto(format!("decoding response header: {e}")))?;
        if rh.correlation_id != self.correlation {
            return Err(proto(format!(
                "correlation id {} (expected {})",
                rh.correlation_id, self.correlation
            )));
        }
        let resp = <R::Response as Decodable>::decode(&mut bytes, version)
            .map_err(|e| proto(format!("decoding response: {e}")))?;
        if bytes.has_remaining() {
            return Err(proto(format!("{} trailing bytes", bytes.remaining())));
        }
        Ok(resp)
    }

    /// ApiVersions; fails unless the broker answers with error code 0.
    pub async fn api_versions(
        &mut self,
        timeout: Duration,
    ) -> Result<ApiVersionsResponse, ProbeError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("testkit"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp = self.request(&req, API_VERSIONS_VERSION, timeout).await?;
        if resp.error_code != 0 {
            return Err(ProbeError::ErrorCode {
                addr: self.addr,
                code: resp.error_code,
            });
        }
        Ok(resp)
    }

    /// Metadata for no topics: the live brokers and the controller.
    pub async fn metadata(&mut self, timeout: Duration) -> Result<ClusterView, ProbeError> {
        let req = MetadataRequest::default()
            .with_topics(Some(Vec::new()))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = self.request(&req, METADATA_VERSION, timeout).await?;
        let mut brokers: Vec<(i32, String)> = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        brokers.sort();
        Ok(ClusterView {
            brokers,
            controller_id: resp.controller_id.0,
            cluster_id: resp.cluster_id.map(|s| s.as_str().to_string()),
        })
    }
}

/// What a Metadata response says about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Live brokers: node id and advertised `host:port`, sorted by id.
    pub brokers: Vec<(i32, String)>,
    /// The controller id the broker reports (-1 when none).
    pub controller_id: i32,
    /// The cluster id.
    pub cluster_id: Option<String>,
}

/// Connects to `addr` and sends one ApiVersions request.
pub async fn api_versions(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<ApiVersionsResponse, ProbeError> {
    let mut c = ProbeConn::connect(addr, timeout).await?;
    c.api_versions(timeout).await
}

/// Connects to `addr` and sends one Metadata request.
pub async fn metadata(addr: SocketAddr, timeout: Duration) -> Result<ClusterView, ProbeError> {
    let mut c = ProbeConn::connect(addr, timeout).await?;
    c.metadata(timeout).await
}
