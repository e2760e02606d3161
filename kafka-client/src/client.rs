//! [`Client`]: the connections to a cluster and its metadata, shared by producers, consumers and
//! admin handles.
//!
//! Connections are kept per broker *and per purpose* ([`Purpose`]): a large fetch waiting out
//! `fetch.max.wait.ms` must not delay a produce, a heartbeat or a metadata request queued behind
//! it on the same socket. Each (broker, purpose) slot reconnects on demand with jittered
//! exponential backoff (`reconnect.backoff.ms` .. `reconnect.backoff.max.ms`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kafka_wire::codec::{KString, Request, Uuid};
use kafka_wire::messages::metadata::MetadataRequestTopic;
use kafka_wire::messages::MetadataRequest;
use kafka_wire::ErrorCode;
use tokio::sync::Notify;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::config::ClientConfig;
use crate::error::{BrokerError, Error, Peer, Result};
use crate::metadata::{BrokerInfo, ClusterMetadata, MetadataCache, TopicMetadata, TopicSelection};
use crate::net::Connection;
use crate::rng::{OsRandom, RandomSource, SeededRng};

/// What a connection is used for. Each purpose gets its own connection to a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Metadata and admin requests.
    Control,
    /// Produce requests (and the idempotent/transactional producer's InitProducerId).
    Produce,
    /// Fetch and ListOffsets.
    Fetch,
    /// Group coordination (FindCoordinator, JoinGroup, Heartbeat, OffsetCommit, ...) and
    /// transaction coordination.
    Group,
}

struct Slot {
    conn: tokio::sync::Mutex<Option<Connection>>,
    backoff: Mutex<Backoff>,
}

struct Inner {
    config: ClientConfig,
    cache: Mutex<MetadataCache>,
    refresh_lock: tokio::sync::Mutex<()>,
    refresh_wake: Notify,
    slots: Mutex<HashMap<(i32, Purpose), Arc<Slot>>>,
    rng: Mutex<SeededRng>,
    closed: AtomicBool,
}

/// A handle to a cluster: connections and metadata. Cheap to clone; all clones share the same
/// connections. Background metadata refresh stops when the last clone is dropped or
/// [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.config.bootstrap_servers)
            .finish()
    }
}

impl Client {
    /// Validates `config`, reaches one bootstrap server and reads the cluster's brokers.
    ///
    /// A retriable failure (no bootstrap server reachable, a broker dying during the request)
    /// is tried again, across every bootstrap server, with backoff (`retry.backoff.ms` doubling
    /// up to 1 s) until `request.timeout.ms` has passed; then the last error is returned. Errors
    /// that retrying cannot fix (authentication, an unsupported broker, a bad configuration)
    /// return at once.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        for w in config.validate()? {
            tracing::warn!(warning = %w, "client configuration");
        }
        let now = Instant::now();
        let seed = OsRandom.next_u64();
        let inner = Arc::new(Inner {
            cache: Mutex::new(MetadataCache::new(
                now,
                config.metadata_max_age,
                config.metadata_min_refresh_interval,
            )),
            config,
            refresh_lock: tokio::sync::Mutex::new(()),
            refresh_wake: Notify::new(),
            slots: Mutex::new(HashMap::new()),
            rng: Mutex::new(SeededRng::new(seed)),
            closed: AtomicBool::new(false),
        });
        let client = Client { inner };
        let deadline = now + client.inner.config.request_timeout;
        let mut delay = client
            .inner
            .config
            .retry_backoff
            .max(Duration::from_millis(10));
        loop {
            match client.refresh_metadata().await {
                Ok(_) => break,
                Err(e) if e.is_retriable() && Instant::now() + delay < deadline => {
                    tracing::debug!(error = %e, retry_in = ?delay, "first metadata request failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    client.close();
                    return Err(e);
                }
            }
        }
        tokio::spawn(refresh_loop(Arc::downgrade(&client.inner)));
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.inner.cache.lock().unwrap().snapshot()
    }

    /// Refresh every topic of the cluster (not only those asked for) from now on.
    pub fn set_all_topics(&self, all: bool) {
        self.inner.cache.lock().unwrap().set_all_topics(all);
    }

    /// Asks for a metadata refresh soon (at most once per `metadata.min.refresh.interval.ms`),
    /// after an error that suggests the metadata is stale. Does not wait.
    pub fn request_metadata_refresh(&self) {
        self.inner.cache.lock().unwrap().request_refresh(false);
        self.inner.refresh_wake.notify_one();
    }

    /// Refreshes metadata now and returns the new snapshot. Concurrent callers share one
    /// request.
    pub async fn refresh_metadata(&self) -> Result<Arc<ClusterMetadata>> {
        let asked_at = Instant::now();
        let _guard = self.inner.refresh_lock.lock().await;
        {
            let snap = self.metadata();
            // Someone else refreshed while we waited for the lock.
            if snap.fetched_at >= asked_at && !snap.brokers.is_empty() {
                return Ok(snap);
            }
        }
        let selection = self.inner.cache.lock().unwrap().selection();
        let result = self
            .send_any(Purpose::Control, |version| {
                metadata_request(&selection, version)
            })
            .await;
        let now = Instant::now();
        match result {
            Ok(resp) => {
                if resp.error_code != 0 {
                    self.inner.cache.lock().unwrap().refresh_failed(now);
                    return Err(Error::Broker(BrokerError::new(resp.error_code)));
                }
                Ok(self.inner.cache.lock().unwrap().apply_response(now, &resp))
            }
            Err(e) => {
                self.inner.cache.lock().unwrap().refresh_failed(now);
                Err(e)
            }
        }
    }

    /// The metadata of `topic`, fetching it if it is not known yet. A topic the cluster does not
    /// have is `UNKNOWN_TOPIC_OR_PARTITION`; a topic whose partitions have no leader yet (just
    /// created) is waited for up to the request timeout.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicMetadata>> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let mut added = self.inner.cache.lock().unwrap().add_interest([topic]);
        let mut delay = Duration::from_millis(20);
        loop {
            let snap = self.metadata();
            if let Some(t) = snap.topic(topic) {
                match t.error {
                    None if t.partitions.iter().all(|p| p.leader >= 0) => return Ok(t.clone()),
                    Some(code) if code != ErrorCode::LEADER_NOT_AVAILABLE && !added => {
                        return Err(Error::Broker(BrokerError::new(code).with_topic(topic)))
                    }
                    _ => {}
                }
            }
            if !added && Instant::now() >= deadline {
                return match snap.topic(topic) {
                    Some(t) => Ok(t.clone()),
                    None => Err(Error::Broker(
                        BrokerError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION).with_topic(topic),
                    )),
                };
            }
            if !added {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            added = false;
            self.refresh_metadata().await?;
        }
    }

    /// Stops refreshing `topic`'s metadata.
    pub fn forget_topic(&self, topic: &str) {
        self.inner.cache.lock().unwrap().remove_interest(topic);
    }

    /// Applies a KIP-951 leader hint from a Produce or Fetch response.
    pub fn apply_leader_hint(&self, topic: &str, partition: i32, leader: i32, epoch: i32) {
        self.inner
            .cache
            .lock()
            .unwrap()
            .apply_leader_hint(topic, partition, leader, epoch);
    }

    /// Applies a KIP-951 node endpoint from a Produce or Fetch response.
    pub fn apply_node_endpoint(&self, node_id: i32, host: &str, port: i32, rack: Option<&str>) {
        let Ok(port) = u16::try_from(port) else {
            return;
        };
        self.inner
            .cache
            .lock()
            .unwrap()
            .apply_node_endpoint(BrokerInfo {
                id: node_id,
                host: host.to_string(),
                port,
                rack: rack.map(str::to_string),
            });
    }

    /// The connection to broker `node_id` for `purpose`, opened (or reopened, after the
    /// reconnect backoff) if needed.
    pub async fn connection(&self, node_id: i32, purpose: Purpose) -> Result<Connection> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let addr = match self.metadata().brokers.get(&node_id) {
            Some(b) => b.addr(),
            None => {
                return Err(Error::Broker(
                    BrokerError::new(ErrorCode::BROKER_NOT_AVAILABLE)
                        .with_message(format!("broker {node_id} is not in the metadata")),
                ))
            }
        };
        let peer = Peer::Broker {
            node_id,
            addr: addr.clone(),
        };
        self.slot_connection((node_id, purpose), &addr, peer).await
    }

    async fn slot_connection(
        &self,
        key: (i32, Purpose),
        addr: &str,
        peer: Peer,
    ) -> Result<Connection> {
        let slot = {
            let mut slots = self.inner.slots.lock().unwrap();
            slots
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(Slot {
                        conn: tokio::sync::Mutex::new(None),
                        backoff: Mutex::new(Backoff::new(BackoffPolicy::reconnect(
                            &self.inner.config,
                        ))),
                    })
                })
                .clone()
        };
        let mut guard = slot.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            // A broker that moved (new address in metadata) gets a new connection.
            if !c.is_closed() && c.peer() == &peer {
                return Ok(c.clone());
            }
            c.close(Error::Closed);
        }
        *guard = None;
        let ready_at = slot.backoff.lock().unwrap().ready_at(Instant::now());
        tokio::time::sleep_until(ready_at.into()).await;
        match Connection::connect(&self.inner.config, addr, peer.clone()).await {
            Ok(c) => {
                slot.backoff.lock().unwrap().succeed();
                *guard = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connect failed");
                let mut rng = self.inner.rng.lock().unwrap();
                slot.backoff.lock().unwrap().fail(Instant::now(), &mut *rng);
                Err(e)
            }
        }
    }

    /// Sends a request to broker `node_id` on the `purpose` connection. `build` gets the version
    /// negotiated with that broker and returns the request to send at it.
    pub async fn send<R, F>(&self, node_id: i32, purpose: Purpose, build: F) -> Result<R::Response>
    where
        R: Request + Send + Sync + 'static,
        F: FnOnce(i16) -> R,
    {
        let conn = self.connection(node_id, purpose).await?;
        send_on(&conn, build).await
    }

    /// Sends a request to any reachable broker (known brokers first, in random order, then the
    /// bootstrap servers), moving on to the next one on connection errors.
    pub async fn send_any<R, F>(&self, purpose: Purpose, build: F) -> Result<R::Response>
    where
        R: Request + Send + Sync + 'static,
        F: FnOnce(i16) -> R,
    {
        let conn = self.any_connection(purpose).await?;
        send_on(&conn, build).await
    }

    /// A connection to any reachable broker for `purpose`.
    pub async fn any_connection(&self, purpose: Purpose) -> Result<Connection> {
        // Reuse an open connection if there is one.
        let open: Vec<Arc<Slot>> = {
            let slots = self.inner.slots.lock().unwrap();
            slots
                .iter()
                .filter(|((_, p), _)| *p == purpose)
                .map(|(_, s)| s.clone())
                .collect()
        };
        for slot in open {
            if let Ok(guard) = slot.conn.try_lock() {
                if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
                    return Ok(c.clone());
                }
            }
        }
        let mut brokers: Vec<i32> = self.metadata().brokers.keys().copied().collect();
        let start = if brokers.is_empty() {
            0
        } else {
            (self.inner.rng.lock().unwrap().next_u64() % brokers.len() as u64) as usize
        };
        brokers.rotate_left(start);
        let mut last_err = None;
        for id in brokers {
            match self.connection(id, purpose).await {
                Ok(c) => return Ok(c),
                Err(e) => last_err = Some(e),
            }
        }
        let bootstrap = self.inner.config.bootstrap_servers.clone();
        for (i, addr) in bootstrap.iter().enumerate() {
            let peer = Peer::Bootstrap { addr: addr.clone() };
            match self
                .slot_connection((-1 - i as i32, purpose), addr, peer)
                .await
            {
                Ok(c) => return Ok(c),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(Error::Closed))
    }

    /// Closes every connection; requests in flight fail with [`Error::Closed`].
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.refresh_wake.notify_one();
        let slots: Vec<Arc<Slot>> = self.inner.slots.lock().unwrap().values().cloned().collect();
        for slot in slots {
            if let Ok(guard) = slot.conn.try_lock() {
                if let Some(c) = guard.as_ref() {
                    c.close(Error::Closed);
                }
            }
        }
    }

    /// Whether [`Client::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }
}

/// Sends on `conn` at the version negotiated for `R`.
pub async fn send_on<R, F>(conn: &Connection, build: F) -> Result<R::Response>
where
    R: Request + Send + Sync + 'static,
    F: FnOnce(i16) -> R,
{
    let version = conn
        .version::<R>()
        .ok_or_else(|| unsupported::<R>(conn, "this request"))?;
    conn.send(version, build(version)).await
}

/// The [`Error::Unsupported`] for a broker on `conn` that offers no version of `R` this client
/// speaks, for `feature`.
pub(crate) fn unsupported<R: Request>(conn: &Connection, feature: &str) -> Error {
    Error::Unsupported {
        peer: conn.peer().clone(),
        api: R::API_KEY.name().unwrap_or("an API"),
        need: format!("v{}-v{}", R::MIN_VERSION, R::MAX_VERSION),
        broker_range: conn.versions().offered(R::API_KEY),
        feature: feature.to_string(),
    }
}

fn metadata_request(selection: &TopicSelection, version: i16) -> MetadataRequest {
    let topics = match selection {
        TopicSelection::All => None,
        TopicSelection::Some(names) => Some(
            names
                .iter()
                .map(|n| MetadataRequestTopic {
                    topic_id: Uuid::ZERO,
                    name: Some(KString::from(n.as_str())),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    let _ = version;
    MetadataRequest {
        topics,
        allow_auto_topic_creation: false,
        ..Default::default()
    }
}

async fn refresh_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        // Only this task holds it: every handle is gone.
        if inner.closed.load(Ordering::SeqCst) || Arc::strong_count(&inner) == 1 {
            return;
        }
        let due = inner.cache.lock().unwrap().poll_timeout();
        // Wake at least every second to notice the last handle going away.
        let until = due
            .max(Instant::now())
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = inner.refresh_wake.notified() => {}
        }
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        if inner.cache.lock().unwrap().needs_refresh(Instant::now()) {
            let client = Client { inner };
            if let Err(e) = client.refresh_metadata().await {
                tracing::debug!(error = %e, "background metadata refresh failed");
            }
        }
    }
}
