//! A TCP fault proxy in front of one broker.
//!
//! Each node's `CLIENT` listener is advertised at its proxy's address, so every client connection
//! goes through the proxy. A test steers it through a cheap, cloneable [`ProxyHandle`]:
//!
//! * [`ProxyHandle::set_latency`] delays every chunk of bytes by the given time **in each
//!   direction** (a request/response round trip grows by twice the latency);
//! * [`ProxyHandle::cut`] closes every connection open at that moment (new ones are accepted);
//! * [`ProxyHandle::blackhole`] accepts connections and reads their bytes but never forwards or
//!   answers anything; connections that lost bytes this way are closed when the black hole ends,
//!   since their byte streams are no longer whole;
//! * [`ProxyHandle::reject`] closes new connections right after accepting them;
//! * [`ProxyHandle::heal`] removes latency, black hole and rejection;
//! * [`ProxyHandle::trip_after`] arms a tripwire: connections opened from then on close right
//!   after forwarding a request of one API key (the broker acts on it, its answer is lost), a
//!   given number of times — say an EndTxn whose outcome the client cannot know;
//! * [`ProxyHandle::set_version_cap`] makes the broker look like one with fewer API versions
//!   (Redpanda's set, say) to connections opened from then on: see [`crate::versioncap`]. Those
//!   connections see no latency or black hole; cuts still end them.
//!
//! Inter-broker and controller traffic does not pass through the proxy, so faults affect clients
//! only. The proxy's tasks run on the crate's background runtime, so a proxy outlives the runtime
//! of any single `#[tokio::test]`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::versioncap::{response_correlation_id, take_frame, Verdict, VersionCap};

/// Chunks queued per direction before the reader waits (bounds memory under latency).
const QUEUE_CHUNKS: usize = 64;
/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// How long the proxy tries to reach its broker before closing the client's connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame a version-capped connection relays (it holds whole frames).
const MAX_CAPPED_FRAME: usize = 256 * 1024 * 1024;

struct Shared {
    upstream: SocketAddr,
    latency_us: AtomicU64,
    reject: AtomicBool,
    shutdown: AtomicBool,
    blackhole: watch::Sender<bool>,
    /// Bumped by every `cut()` (and at shutdown); connections end when it changes.
    cut_gen: watch::Sender<u64>,
    accepted: AtomicU64,
    active: AtomicU64,
    version_cap: Mutex<Option<Arc<VersionCap>>>,
    /// The tripwire: (API key, trips left).
    trip: Mutex<Option<(i16, u32)>>,
    tripped: AtomicU64,
}

/// A running fault proxy. Dropping it stops the proxy and closes its connections.
pub struct FaultProxy {
    handle: ProxyHandle,
    addr: SocketAddr,
}

/// A cloneable handle that steers a [`FaultProxy`].
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy that accepts on `listener` (already bound) and forwards to `upstream`.
    /// The proxy's tasks run on `rt`.
    pub fn start(
        listener: StdListener,
        upstream: SocketAddr,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<FaultProxy> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (blackhole, _) = watch::channel(false);
        let (cut_gen, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            upstream,
            latency_us: AtomicU64::new(0),
            reject: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            blackhole,
            cut_gen,
            accepted: AtomicU64::new(0),
            active: AtomicU64::new(0),
            version_cap: Mutex::new(None),
            trip: Mutex::new(None),
            tripped: AtomicU64::new(0),
        });
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(listener)?
        };
        rt.spawn(accept_loop(listener, shared.clone(), rt.clone()));
        Ok(FaultProxy {
            handle: ProxyHandle { shared, addr },
            addr,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to steer this proxy.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.handle.shared.shutdown.store(true, Ordering::SeqCst);
        self.handle.shared.cut_gen.send_modify(|g| *g += 1);
    }
}

impl ProxyHandle {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Delays every chunk by `latency` in each direction (applies to bytes read from now on).
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::SeqCst);
    }

    /// The current one-way latency.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.shared.latency_us.load(Ordering::SeqCst))
    }

    /// Closes every connection open now. New connections are accepted as usual.
    pub fn cut(&self) {
        self.shared.cut_gen.send_modify(|g| *g += 1);
    }

    /// Turns the black hole on (accept, read, never answer) or off.
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// Whether the black hole is on.
    pub fn is_blackholed(&self) -> bool {
        *self.shared.blackhole.borrow()
    }

    /// When on, new connections are closed right after being accepted (like a dead broker).
    pub fn reject(&self, on: bool) {
        self.shared.reject.store(on, Ordering::SeqCst);
    }

    /// Removes latency, black hole and rejection. Open healthy connections stay open.
    pub fn heal(&self) {
        self.set_latency(Duration::ZERO);
        self.reject(false);
        self.blackhole(false);
    }

    /// Presents `cap` instead of the broker's API versions to connections opened from now on
    /// (`None`: the broker's own). Open connections keep what they had; [`ProxyHandle::cut`]
    /// them to make clients reconnect under the new setting. [`ProxyHandle::heal`] leaves the
    /// cap alone: it is not a fault.
    pub fn set_version_cap(&self, cap: Option<VersionCap>) {
        *self.shared.version_cap.lock().unwrap() = cap.map(Arc::new);
    }

    /// The version cap in force for new connections.
    pub fn version_cap(&self) -> Option<VersionCap> {
        self.shared.version_cap.lock().unwrap().as_deref().cloned()
    }

    /// Arms the tripwire: connections opened from now on relay frame by frame and close right
    /// after forwarding a request with `api_key` (the broker gets it; its answer never arrives),
    /// `times` times in all. [`ProxyHandle::cut`] open connections to make clients reconnect
    /// through it. `times = 0` disarms it.
    pub fn trip_after(&self, api_key: i16, times: u32) {
        *self.shared.trip.lock().unwrap() = (times > 0).then_some((api_key, times));
    }

    /// Connections closed by the tripwire so far.
    pub fn tripped(&self) -> u64 {
        self.shared.tripped.load(Ordering::SeqCst)
    }

    /// Connections accepted since the proxy started.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// A one-line description of the fault state, e.g. `latency=0ms blackhole=false reject=false`.
    pub fn describe(&self) -> String {
        format!(
            "latency={}ms blackhole={} reject={} active={}",
            self.latency().as_millis(),
            self.is_blackholed(),
            self.shared.reject.load(Ordering::SeqCst),
            self.active()
        )
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, rt: tokio::runtime::Handle) {
    let mut cut = shared.cut_gen.subscribe();
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    if shared.reject.load(Ordering::SeqCst) {
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    rt.spawn(connection(stream, shared.clone()));
                }
                // Out of file descriptors and the like: back off rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            changed = cut.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    shared.active.fetch_add(1, Ordering::SeqCst);
    let _guard = ActiveGuard(shared.clone());
    let mut cut = shared.cut_gen.subscribe();
    cut.mark_unchanged();
    let bh = shared.blackhole.subscribe();
    // Lost bytes make a connection unusable: it is closed when the black hole ends.
    let poisoned = Arc::new(AtomicBool::new(false));

    if *bh.borrow() {
        poisoned.store(true, Ordering::SeqCst);
        let (mut r, _w) = client.into_split();
        tokio::select! {
            _ = discard(&mut r) => {}
            _ = cut.changed() => {}
            _ = until_healed(bh.clone(), poisoned.clone()) => {}
        }
        return;
    }

    let upstream = tokio::select! {
        res = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.upstream)) => match res {
            Ok(Ok(s)) => s,
            // Broker down: close the client's connection, as a dead broker would.
            _ => return,
        },
        _ = cut.changed() => return,
    };
    let _ = upstream.set_nodelay(true);
    let cap = shared.version_cap.lock().unwrap().clone();
    if let Some(cap) = cap {
        tokio::select! {
            _ = capped(client, upstream, cap) => {}
            _ = cut.changed() => {}
        }
        return;
    }
    if shared.trip.lock().unwrap().is_some() {
        tokio::select! {
            _ = tripwire(client, upstream, shared.clone()) => {}
            _ = cut.changed() => {}
        }
        return;
    }
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    tokio::select! {
        _ = pump(cr, uw, shared.clone(), bh.clone(), poisoned.clone()) => {}
        _ = pump(ur, cw, shared.clone(), bh.clone(), poisoned.clone()) => {}
        _ = cut.changed() => {}
        _ = until_healed(bh.clone(), poisoned.clone()) => {}
    }
}

async fn discard(r: &mut OwnedReadHalf) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Resolves when the black hole is off and this connection lost bytes to it.
async fn until_healed(mut bh: watch::Receiver<bool>, poisoned: Arc<AtomicBool>) {
    loop {
        if !*bh.borrow_and_update() && poisoned.load(Ordering::SeqCst) {
            return;
        }
        if bh.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Copies one direction, holding every chunk back by the current latency.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    shared: Arc<Shared>,
    bh: watch::Receiver<bool>,
    poisoned: Arc<AtomicBool>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let reader = {
        let bh = bh.clone();
        let poisoned = poisoned.clone();
        async move {
            loop {
                let mut buf = BytesMut::with_capacity(CHUNK);
                match r.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if *bh.borrow() {
                    poisoned.store(true, Ordering::SeqCst);
                    continue;
                }
                let delay = Duration::from_micros(shared.latency_us.load(Ordering::SeqCst));
                if tx
                    .send((Instant::now() + delay, buf.freeze()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if *bh.borrow() {
                poisoned.store(true, Ordering::SeqCst);
                continue;
            }
            if w.write_all(&data).await.is_err() {
                return;
            }
        }
    };
    // The reader ends on EOF and drops `tx`; the writer then delivers what is queued and ends.
    tokio::join!(reader, writer);
}

/// Relays one connection frame by frame (requests) and raw (answers); after forwarding a
/// request of the tripwire's API key (while trips are left), closes the connection.
async fn tripwire(client: TcpStream, upstream: TcpStream, shared: Arc<Shared>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    // Set before the tripping request goes out: no answer reaches the client after it.
    let tripped = AtomicBool::new(false);
    let requests = async {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            loop {
                let frame = match take_frame(&mut buf, MAX_CAPPED_FRAME) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => return,
                };
                let api_key = frame.get(4..6).map(|b| i16::from_be_bytes([b[0], b[1]]));
                let trip = {
                    let mut t = shared.trip.lock().unwrap();
                    match *t {
                        Some((key, left)) if Some(key) == api_key => {
                            *t = (left > 1).then_some((key, left - 1));
                            true
                        }
                        _ => false,
                    }
                };
                if trip {
                    tripped.store(true, Ordering::SeqCst);
                }
                if uw.write_all(&frame).await.is_err() {
                    return;
                }
                if trip {
                    shared.tripped.fetch_add(1, Ordering::SeqCst);
                    // Let the broker read the request before the connection closes.
                    let _ = uw.flush().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return;
                }
            }
            match cr.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let responses = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if tripped.load(Ordering::SeqCst) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = responses => {}
    }
}

/// Relays one connection under a version cap, frame by frame: requests outside the cap close the
/// connection, an ApiVersions request above it is answered here, and the broker's ApiVersions
/// answers are cut down to the cap.
async fn capped(client: TcpStream, upstream: TcpStream, cap: Arc<VersionCap>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    // ApiVersions requests forwarded and not yet answered: correlation id -> version.
    let asked: Mutex<HashMap<i32, i16>> = Mutex::new(HashMap::new());
    // Frames for the client, from the broker or from the proxy, written by one task.
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_CHUNKS);
    let to_client = tx.clone();
    let requests = async {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            loop {
                let frame = match take_frame(&mut buf, MAX_CAPPED_FRAME) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(cap = cap.name(), error = %e, "closing a capped connection");
                        return;
                    }
                };
                match cap.verdict(&frame[4..]) {
                    Verdict::Forward => {}
                    Verdict::ForwardApiVersions {
                        correlation_id,
                        version,
                    } => {
                        asked.lock().unwrap().insert(correlation_id, version);
                    }
                    Verdict::Answer(answer) => {
                        if to_client.send(answer).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Verdict::Close(why) => {
                        tracing::debug!(cap = cap.name(), why, "closing a capped connection");
                        return;
                    }
                }
                if uw.write_all(&frame).await.is_err() {
                    return;
                }
            }
            match cr.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let responses = async {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            loop {
                let frame = match take_frame(&mut buf, MAX_CAPPED_FRAME) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => return,
                };
                let version = response_correlation_id(&frame)
                    .and_then(|corr| asked.lock().unwrap().remove(&corr));
                let frame = match version {
                    Some(v) => cap.rewrite_api_versions(frame, v),
                    None => frame,
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
            match ur.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let writer = async {
        while let Some(frame) = rx.recv().await {
            if cw.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    // The first side to end ends the connection (a closed connection is what Redpanda does on a
    // refused request, and what a broker's EOF means anyway).
    tokio::select! {
        _ = requests => {}
        _ = responses => {}
        _ = writer => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port; returns its address.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn proxy() -> (FaultProxy, ProxyHandle) {
        let upstream = echo_server().await;
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let p = FaultProxy::start(l, upstream, &tokio::runtime::Handle::current()).unwrap();
        let h = p.handle();
        (p, h)
    }

    async fn ping(s: &mut TcpStream, wait: Duration) -> Option<Duration> {
        let t = std::time::Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Some(t.elapsed()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_and_adds_latency_both_ways() {
        let (_p, h) = proxy().await;
        let mut s = TcpStream::connect(h.addr()).await.unwrap();
        let fast = ping(&mut s, Duration::from_secs(5)).await.expect("echo");
        h.set_latency(Duration::from_millis(100));
        let slow = ping(&mut s, Duration::from_secs(5)).await.expect("echo");
        assert!(
            slow >= Duration::from_millis(200),
            "{slow:?} (fast {fast:?})"
        );
        assert!(slow < Duration::from_secs(3), "{slow:?}");
        h.heal();
        assert!(ping(&mut s, Duration::from_secs(5)).await.is_some());
        assert_eq!(h.active(), 1);
    }

    #[tokio::test]
    async fn cut_blackhole_reject() {
        let (_p, h) = proxy().await;
        let mut a = TcpStream::connect(h.addr()).await.unwrap();
        assert!(ping(&mut a, Duration::from_secs(5)).await.is_some());
        h.cut();
        assert!(
            ping(&mut a, Duration::from_secs(2)).await.is_none(),
            "cut conn answered"
        );

        h.blackhole(true);
        let mut b = TcpStream::connect(h.addr()).await.unwrap();
        assert!(
            ping(&mut b, Duration::from_millis(300)).await.is_none(),
            "black hole answered"
        );
        h.heal();
        let mut c = TcpStream::connect(h.addr()).await.unwrap();
        assert!(ping(&mut c, Duration::from_secs(5)).await.is_some());

        h.reject(true);
        let mut d = TcpStream::connect(h.addr()).await.unwrap();
        assert!(
            ping(&mut d, Duration::from_secs(2)).await.is_none(),
            "rejected conn answered"
        );
        h.heal();
    }

    /// A request frame: length, api key, version, correlation id.
    fn frame(api_key: i16, corr: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&8i32.to_be_bytes());
        v.extend_from_slice(&api_key.to_be_bytes());
        v.extend_from_slice(&0i16.to_be_bytes());
        v.extend_from_slice(&corr.to_be_bytes());
        v
    }

    #[tokio::test]
    async fn the_tripwire_forwards_the_request_then_drops_its_answer_and_the_connection() {
        let (_p, h) = proxy().await;
        h.trip_after(26, 1);
        let mut s = TcpStream::connect(h.addr()).await.unwrap();
        // Another API passes (the echo answers it).
        s.write_all(&frame(3, 1)).await.unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(&buf[..], &frame(3, 1)[..]);
        // The armed API: no answer, the connection ends.
        s.write_all(&frame(26, 2)).await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("closed");
        assert!(n.is_err() || rest.is_empty(), "{rest:?}");
        assert_eq!(h.tripped(), 1);
        // Used up: the next connection relays it.
        let mut s = TcpStream::connect(h.addr()).await.unwrap();
        s.write_all(&frame(26, 3)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(h.tripped(), 1);
    }
}
