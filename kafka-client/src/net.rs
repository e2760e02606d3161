//! The tokio driver of one broker connection.
//!
//! [`Connection::connect`] opens TCP (and TLS), negotiates ApiVersions (sending our software name
//! and version, KIP-511) and authenticates with SASL. After that two tasks serve the connection:
//! a writer that encodes requests in the order they were submitted, and a reader that matches
//! responses through the sans-IO `ConnState`. Requests are pipelined: many may be in flight at once.
//!
//! Any protocol violation or I/O error closes the connection and fails every request in flight
//! on it with the same error; the owner ([`crate::client::Client`]) then reconnects with
//! backoff. A request timeout fails that request; it closes the connection too, unless the
//! connection showed it is alive (bytes arrived after the request was written): then the
//! request is given up ([`ConnState::give_up`]) and its answer, if it comes, is dropped as a
//! late answer. A response to a request whose caller stopped waiting is dropped the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::{KString, Request};
use kafka_wire::messages::{ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_wire::versions::NegotiatedVersions;
use kafka_wire::{ApiKey, Decode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::config::ClientConfig;
use crate::conn::{read_api_versions, ApiVersionsStep, ConnState};
use crate::error::{BrokerError, Error, Peer, ProtocolErrorKind, Result};
use crate::rng::OsRandom;
use crate::sasl::SaslSession;

/// Our software name and version, sent in ApiVersions (KIP-511).
pub const CLIENT_SOFTWARE_NAME: &str = "kafka-rs";
/// See [`CLIENT_SOFTWARE_NAME`].
pub const CLIENT_SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Reply = oneshot::Sender<Result<(i16, Bytes)>>;
type ReplyRx = oneshot::Receiver<Result<(i16, Bytes)>>;
type FrameBuilder = Box<dyn FnOnce(&mut ConnState, Instant, &mut BytesMut) -> Result<i32> + Send>;

struct Submit {
    frame_builder: FrameBuilder,
    reply: Option<Reply>,
    /// Set to the request's correlation id once written (-1 before).
    written: Arc<AtomicI32>,
}

struct Shared {
    peer: Peer,
    state: Mutex<ConnState>,
    replies: Mutex<HashMap<i32, Reply>>,
    closed: AtomicBool,
    close_error: Mutex<Option<Error>>,
    /// KIP-219: the broker asked us to hold requests back until then.
    throttled_until: Mutex<Option<Instant>>,
    /// When bytes last arrived from the broker.
    last_read: Mutex<Instant>,
}

impl Shared {
    fn close(&self, err: Error) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::debug!(peer = %self.peer, error = %err, "connection closed");
        *self.close_error.lock().unwrap() = Some(err.clone());
        self.state.lock().unwrap().fail_all();
        let replies: Vec<Reply> = self
            .replies
            .lock()
            .unwrap()
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in replies {
            let _ = r.send(Err(err.clone()));
        }
    }

    fn error(&self) -> Error {
        self.close_error
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(Error::Closed)
    }
}

/// A handle to one broker connection. Cheap to clone; requests from all clones are pipelined on
/// the same socket. The connection closes when it fails or when [`Connection::close`] is called;
/// dropping every handle also ends it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Submit>,
    versions: Arc<NegotiatedVersions>,
    /// Finalized feature levels from ApiVersions (name, max level), e.g. `transaction.version`.
    features: Arc<Vec<(String, i16)>>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.shared.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), then negotiates versions and authenticates, all within
    /// the configured connect timeout (the SASL exchange included).
    pub async fn connect(config: &ClientConfig, addr: &str, peer: Peer) -> Result<Connection> {
        let timeout = config.connect_timeout;
        match tokio::time::timeout(timeout, Self::connect_inner(config, addr, peer.clone())).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: "connection setup",
                after: timeout,
            }),
        }
    }

    async fn connect_inner(config: &ClientConfig, addr: &str, peer: Peer) -> Result<Connection> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::io(peer.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Stream> = if config.security_protocol.uses_tls() {
            let host = crate::config::parse_host_port(addr)
                .map(|(h, _)| h.to_string())
                .unwrap_or_else(|_| addr.to_string());
            Box::new(crate::tls::connect(config, &host, tcp, &peer).await?)
        } else {
            Box::new(tcp)
        };
        let mut state = ConnState::new(
            peer.clone(),
            Some(config.client_id.clone()),
            config.max_request_bytes,
            config.max_response_bytes,
        );
        let mut rbuf = BytesMut::with_capacity(8 * 1024);

        // ApiVersions: start at the newest version we speak; a broker that does not know it
        // answers UNSUPPORTED_VERSION in the v0 format with its own range, and we ask again at
        // its highest (Kafka before 4.4 stops at v4, Redpanda at v3).
        let mut version = ApiVersionsRequest::MAX_VERSION;
        let resp = loop {
            let req = ApiVersionsRequest {
                client_software_name: KString::from(CLIENT_SOFTWARE_NAME),
                client_software_version: KString::from(CLIENT_SOFTWARE_VERSION),
                ..Default::default()
            };
            let body = roundtrip_raw(&mut stream, &mut state, &mut rbuf, version, &req).await?;
            match read_api_versions(&peer, body, version)? {
                ApiVersionsStep::Ready(resp) => break resp,
                ApiVersionsStep::Retry(v) => {
                    tracing::debug!(%peer, from = version, to = v, "ApiVersions version lowered");
                    version = v;
                }
            }
        };
        let features: Vec<(String, i16)> = resp
            .finalized_features
            .iter()
            .map(|f| (f.name.as_str().to_string(), f.max_version_level))
            .collect();
        let versions = NegotiatedVersions::from_response(&resp);

        if config.security_protocol.uses_sasl() {
            authenticate(config, &mut stream, &mut state, &mut rbuf, &versions).await?;
        }

        let (reader, writer) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            peer: peer.clone(),
            state: Mutex::new(state),
            replies: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            close_error: Mutex::new(None),
            throttled_until: Mutex::new(None),
            last_read: Mutex::new(Instant::now()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(shared.clone(), writer, rx));
        tokio::spawn(read_loop(
            shared.clone(),
            reader,
            rbuf,
            config.connections_max_idle,
        ));
        tracing::debug!(%peer, "connected");
        Ok(Connection {
            shared,
            tx,
            versions: Arc::new(versions),
            features: Arc::new(features),
            request_timeout: config.request_timeout,
        })
    }

    /// The broker this connection talks to.
    pub fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    /// The finalized level of cluster feature `name` (e.g. `transaction.version`) this broker
    /// reported at connection time, if any.
    pub fn finalized_feature(&self, name: &str) -> Option<i16> {
        self.features
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, level)| *level)
    }

    /// The versions negotiated with this broker.
    pub fn versions(&self) -> &NegotiatedVersions {
        &self.versions
    }

    /// The highest version of `R` both sides speak, or `None`.
    pub fn version<R: Request>(&self) -> Option<i16> {
        self.versions.version(R::API_KEY)
    }

    /// Whether the connection has failed or been closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Requests written and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.state.lock().unwrap().in_flight()
    }

    /// Answers dropped as late on this connection: answers to requests that timed out while
    /// the connection stayed alive.
    pub fn late_answers(&self) -> u64 {
        self.shared.state.lock().unwrap().late_answers()
    }

    /// Closes the connection; requests in flight fail with `err`.
    pub fn close(&self, err: Error) {
        self.shared.close(err);
    }

    /// Holds further requests on this connection back for `throttle` (KIP-219: the broker
    /// reported `throttle_time_ms` in a response).
    pub fn throttle(&self, throttle: Duration) {
        if throttle.is_zero() {
            return;
        }
        let until = Instant::now() + throttle;
        let mut t = self.shared.throttled_until.lock().unwrap();
        if t.is_none_or(|t| t < until) {
            *t = Some(until);
        }
    }

    /// Sends `req` at `version` and waits for the response, at most the request timeout. A
    /// timeout fails the request. It also closes the connection when nothing at all arrived
    /// from the broker since the request was written (the broker or the path to it is dead);
    /// otherwise the connection is alive and stays open, and the answer, if it still comes, is
    /// dropped as a late answer.
    pub async fn send<R: Request + Send + Sync + 'static>(
        &self,
        version: i16,
        req: R,
    ) -> Result<R::Response> {
        let (rx, written) = self.submit(version, req, true)?;
        let rx = rx.expect("expects a response");
        let timeout = self.request_timeout;
        let (version, body) = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(self.shared.error()),
            Err(_) => {
                let err = Error::Timeout {
                    what: "a response from the broker",
                    after: timeout,
                };
                if !self.give_up(written.load(Ordering::SeqCst)) {
                    self.close(err.clone());
                }
                return Err(err);
            }
        };
        let mut body = body;
        match R::Response::decode(&mut body, version) {
            Ok(resp) => Ok(resp),
            Err(e) => {
                let err = Error::decode(self.shared.peer.clone(), e);
                self.close(err.clone());
                Err(err)
            }
        }
    }

    /// Gives up on the timed-out request `correlation_id` (-1: never written) if the
    /// connection is alive: bytes arrived after it was written. Returns whether the connection
    /// stays open.
    fn give_up(&self, correlation_id: i32) -> bool {
        if correlation_id < 0 || self.is_closed() {
            return false;
        }
        let mut state = self.shared.state.lock().unwrap();
        let last_read = *self.shared.last_read.lock().unwrap();
        let Some(sent_at) = state.sent_at(correlation_id) else {
            // Answered (and dropped) while we gave up: alive.
            return true;
        };
        if last_read <= sent_at {
            return false;
        }
        state.give_up(correlation_id);
        self.shared.replies.lock().unwrap().remove(&correlation_id);
        tracing::debug!(
            peer = %self.shared.peer,
            correlation_id,
            "request timed out on a live connection; its answer will be dropped if it comes"
        );
        true
    }

    /// Sends `req` without waiting for an answer (Produce with acks=0). Ordering with other
    /// requests on this connection is kept.
    pub fn send_no_response<R: Request + Send + Sync + 'static>(
        &self,
        version: i16,
        req: R,
    ) -> Result<()> {
        self.submit(version, req, false).map(|_| ())
    }

    fn submit<R: Request + Send + Sync + 'static>(
        &self,
        version: i16,
        req: R,
        expects_response: bool,
    ) -> Result<(Option<ReplyRx>, Arc<AtomicI32>)> {
        if self.is_closed() {
            return Err(self.shared.error());
        }
        let (reply, rx) = if expects_response {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let frame_builder = Box::new(move |state: &mut ConnState, now, out: &mut BytesMut| {
            state.write_request(now, version, &req, expects_response, out)
        });
        let written = Arc::new(AtomicI32::new(-1));
        self.tx
            .send(Submit {
                frame_builder,
                reply,
                written: written.clone(),
            })
            .map_err(|_| self.shared.error())?;
        Ok((rx, written))
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    mut writer: tokio::io::WriteHalf<Box<dyn Stream>>,
    mut rx: mpsc::UnboundedReceiver<Submit>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let throttled = *shared.throttled_until.lock().unwrap();
        if let Some(until) = throttled {
            tokio::time::sleep_until(until.into()).await;
        }
        if shared.closed.load(Ordering::SeqCst) {
            break;
        }
        // Coalesce whatever else is queued into one write.
        let mut next = Some(first);
        while let Some(sub) = next.take() {
            let now = Instant::now();
            let mut state = shared.state.lock().unwrap();
            match ((sub.frame_builder)(&mut state, now, &mut buf), sub.reply) {
                // Register the reply under the state lock, before the bytes can reach the
                // broker, so the reader always finds it.
                (Ok(corr), Some(reply)) => {
                    shared.replies.lock().unwrap().insert(corr, reply);
                    sub.written.store(corr, Ordering::SeqCst);
                }
                (Ok(_), None) => {}
                // Only this request fails (it could not be encoded); nothing was written.
                (Err(e), reply) => {
                    tracing::debug!(peer = %shared.peer, error = %e, "request not sent");
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            drop(state);
            if buf.len() >= 256 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if buf.is_empty() {
            continue;
        }
        if let Err(e) = writer.write_all(&buf).await {
            shared.close(Error::io(shared.peer.clone(), e));
            break;
        }
        buf.clear();
        if shared.closed.load(Ordering::SeqCst) {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop(
    shared: Arc<Shared>,
    mut reader: tokio::io::ReadHalf<Box<dyn Stream>>,
    mut buf: BytesMut,
    max_idle: Duration,
) {
    loop {
        // A closed connection's bytes are nobody's (its requests already failed).
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        // Deliver every complete response already buffered.
        loop {
            let answer = shared.state.lock().unwrap().read_response(&mut buf);
            match answer {
                Ok(Some(ans)) => {
                    let corr = ans.request.correlation_id;
                    let reply = shared.replies.lock().unwrap().remove(&corr);
                    let delivered = match reply {
                        Some(reply) => reply.send(Ok((ans.request.version, ans.body))).is_ok(),
                        None => false,
                    };
                    if !delivered {
                        // Its caller stopped waiting (dropped the future, or gave up).
                        tracing::debug!(peer = %shared.peer, "late answer for correlation id {corr}, dropped");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %shared.peer, error = %e, "dropping connection");
                    shared.close(e);
                    return;
                }
            }
        }
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        // With nothing in flight, a read that waits longer than `connections.max.idle.ms` means
        // the connection is idle: close it (the broker would, at its own idle limit, and a
        // request written at that moment would fail). The owner reconnects on demand.
        let read = if shared.state.lock().unwrap().in_flight() == 0 {
            match tokio::time::timeout(max_idle, reader.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) if shared.state.lock().unwrap().in_flight() == 0 => {
                    tracing::debug!(peer = %shared.peer, "closing idle connection");
                    // Retriable: a request racing with the close is simply sent again.
                    shared.close(Error::io(
                        shared.peer.clone(),
                        std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "idle connection closed (connections.max.idle.ms)",
                        ),
                    ));
                    return;
                }
                // A request went out while we waited: keep reading for its answer.
                Err(_) => continue,
            }
        } else {
            reader.read_buf(&mut buf).await
        };
        match read {
            Ok(0) => {
                shared.close(Error::io(
                    shared.peer.clone(),
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the broker closed the connection",
                    ),
                ));
                return;
            }
            Ok(_) => *shared.last_read.lock().unwrap() = Instant::now(),
            Err(e) => {
                shared.close(Error::io(shared.peer.clone(), e));
                return;
            }
        }
    }
}

/// One request and its response on a stream not yet split (the handshake phase).
async fn roundtrip<R: Request, S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    state: &mut ConnState,
    rbuf: &mut BytesMut,
    version: i16,
    req: &R,
) -> Result<R::Response> {
    let mut body = roundtrip_raw(stream, state, rbuf, version, req).await?;
    R::Response::decode(&mut body, version).map_err(|e| Error::decode(state.peer().clone(), e))
}

/// [`roundtrip`] without decoding the response body.
async fn roundtrip_raw<R: Request, S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    state: &mut ConnState,
    rbuf: &mut BytesMut,
    version: i16,
    req: &R,
) -> Result<Bytes> {
    let mut out = BytesMut::new();
    state.write_request(Instant::now(), version, req, true, &mut out)?;
    let peer = state.peer().clone();
    stream
        .write_all(&out)
        .await
        .map_err(|e| Error::io(peer.clone(), e))?;
    loop {
        if let Some(ans) = state.read_response(rbuf)? {
            return Ok(ans.body);
        }
        let n = stream
            .read_buf(rbuf)
            .await
            .map_err(|e| Error::io(peer.clone(), e))?;
        if n == 0 {
            return Err(Error::io(
                peer,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the broker closed the connection during the handshake",
                ),
            ));
        }
    }
}

async fn authenticate<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    config: &ClientConfig,
    stream: &mut S,
    state: &mut ConnState,
    rbuf: &mut BytesMut,
    versions: &NegotiatedVersions,
) -> Result<()> {
    let creds = config.sasl_credentials().ok_or_else(|| {
        Error::Misuse("a SASL security protocol needs sasl.username or sasl.jaas.config".into())
    })?;
    let peer = state.peer().clone();
    let mechanism = creds.mechanism.wire_name().to_string();
    let hv = versions
        .version(ApiKey::SASL_HANDSHAKE)
        .ok_or_else(|| protocol(&peer, "broker does not offer SaslHandshake"))?;
    let hs = roundtrip(
        stream,
        state,
        rbuf,
        hv,
        &SaslHandshakeRequest {
            mechanism: KString::from(mechanism.as_str()),
        },
    )
    .await?;
    if hs.error_code != 0 {
        let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(Error::Broker(BrokerError::new(hs.error_code).with_message(
            format!("mechanism {mechanism} refused; the broker offers {offered:?}"),
        )));
    }
    // KIP-152: from SaslHandshake v1 the tokens travel in SaslAuthenticate requests.
    let av = versions
        .version(ApiKey::SASL_AUTHENTICATE)
        .ok_or_else(|| protocol(&peer, "broker does not offer SaslAuthenticate"))?;
    let mut session = SaslSession::new(&creds);
    let mut token = session.start(&mut OsRandom)?;
    loop {
        let resp = roundtrip(
            stream,
            state,
            rbuf,
            av,
            &SaslAuthenticateRequest {
                auth_bytes: Bytes::from(token),
                ..Default::default()
            },
        )
        .await?;
        if resp.error_code != 0 {
            let mut e = BrokerError::new(resp.error_code);
            if let Some(m) = resp.error_message {
                e = e.with_message(m.as_str());
            }
            return Err(Error::Broker(e));
        }
        match session.step(&resp.auth_bytes)? {
            Some(next) => token = next,
            None => break,
        }
        if session.is_complete() {
            break;
        }
    }
    if !session.is_complete() {
        return Err(protocol(&peer, "SASL exchange ended early"));
    }
    tracing::debug!(%peer, mechanism, "authenticated");
    Ok(())
}

fn protocol(peer: &Peer, msg: &str) -> Error {
    Error::Protocol {
        peer: peer.clone(),
        kind: ProtocolErrorKind::Invalid(msg.to_string()),
    }
}
