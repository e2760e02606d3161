//! [`Admin`]: topics, configurations, partitions, records, groups, the cluster and SCRAM users.
//!
//! ```no_run
//! # async fn demo() -> kafka_client::Result<()> {
//! use kafka_client::admin::{Admin, NewTopic};
//! use kafka_client::config::ClientConfig;
//!
//! let mut cfg = ClientConfig::default();
//! cfg.bootstrap_servers(vec!["127.0.0.1:9092".to_string()]);
//! let admin = Admin::new(cfg).await?;
//! let created = admin.create_topic_if_absent(&NewTopic::new("orders", 6, 3)).await?;
//! let topics = admin.describe_topics(&["orders"]).await?;
//! assert_eq!(topics[0].partitions.len(), 6);
//! # let _ = created;
//! # Ok(()) }
//! ```
//!
//! Every request is sent at the version negotiated with the broker that gets it. Topic and
//! configuration changes go to any broker (KRaft brokers forward them to the active controller);
//! broker configurations go to that broker; record deletion goes to each partition's leader; group
//! requests go to the group's coordinator.
//!
//! Retriable failures (`NOT_CONTROLLER`, a coordinator loading or moving, a stale leader, a lost
//! connection, ...) are retried with the client's jittered exponential backoff
//! (`retry.backoff.ms` .. `retry.backoff.max.ms`) until `request.timeout.ms` has passed since the
//! call began; then the last error is returned. Broker errors carry the topic or group they
//! concern ([`BrokerError::topic`], [`BrokerError::group`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::codec::{Request, Uuid};
use kafka_wire::messages::create_partitions::CreatePartitionsTopic;
use kafka_wire::messages::create_topics::{CreatableTopic, CreatableTopicConfig};
use kafka_wire::messages::delete_records::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_wire::messages::delete_topics::DeleteTopicState;
use kafka_wire::messages::describe_configs::DescribeConfigsResource;
use kafka_wire::messages::incremental_alter_configs::{AlterConfigsResource, AlterableConfig};
use kafka_wire::messages::metadata::MetadataRequestTopic;
use kafka_wire::messages::{
    AlterUserScramCredentialsRequest, ConsumerGroupDescribeRequest, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
    IncrementalAlterConfigsRequest, ListGroupsRequest, MetadataRequest,
};
use kafka_wire::{ErrorCode, KString};

use crate::backoff::BackoffPolicy;
use crate::client::{send_on, Client, Purpose};
use crate::config::{ClientConfig, IsolationLevel, Secret};
use crate::error::{BrokerError, Error, Peer, ProtocolErrorKind, Result};
use crate::metadata::{BrokerInfo, ClusterMetadata, PartitionMetadata};
use crate::net::Connection;
use crate::offsets::ListedOffset;
use crate::offsets::{offset_fetch_request, offset_fetch_rows};
use crate::rng::{OsRandom, RandomSource};
use crate::sasl::ScramHash;
use crate::types::{Offset, TopicPartition};

/// A cheap, cloneable handle for administrative operations. Clones share one [`Client`].
#[derive(Clone, Debug)]
pub struct Admin {
    client: Client,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Number of partitions; -1 for the broker's `num.partitions`.
    pub partitions: i32,
    /// Replication factor; -1 for the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic configurations (`cleanup.policy`, `retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `partitions` partitions of `replication_factor` replicas and no
    /// configuration overrides.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    /// Adds a configuration override.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// A topic the broker created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    /// Topic name.
    pub name: String,
    /// Topic id (zero before CreateTopics v7).
    pub topic_id: Uuid,
    /// Number of partitions (as created).
    pub partitions: i32,
    /// Replication factor (as created).
    pub replication_factor: i16,
}

/// One result per topic, in the order asked.
pub type TopicResults<T> = Vec<(String, Result<T>)>;

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Name.
    pub name: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Whether it is internal (`__consumer_offsets`, ...).
    pub is_internal: bool,
    /// Partitions sorted by id, with leader (-1 if none), replicas and ISR.
    pub partitions: Vec<PartitionMetadata>,
}

/// The thing whose configuration is described or altered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigResource {
    /// A topic.
    Topic(String),
    /// A broker, by node id.
    Broker(i32),
}

impl ConfigResource {
    fn wire(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(t) => (2, t.clone()),
            ConfigResource::Broker(id) => (4, id.to_string()),
        }
    }

    fn context(&self, e: BrokerError) -> BrokerError {
        match self {
            ConfigResource::Topic(t) => e.with_topic(t.clone()),
            ConfigResource::Broker(id) => {
                let m = e.message.clone().unwrap_or_default();
                e.with_message(format!("broker {id} configuration: {m}"))
            }
        }
    }
}

/// Where a configuration value comes from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigSource {
    /// A dynamic topic configuration.
    DynamicTopic,
    /// A dynamic configuration of this broker.
    DynamicBroker,
    /// A dynamic default for every broker.
    DynamicDefaultBroker,
    /// The broker's `server.properties`.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    /// A dynamic broker logger level.
    DynamicBrokerLogger,
    /// Anything else (raw wire value).
    Other(i8),
}

impl ConfigSource {
    fn from_wire(v: i8) -> ConfigSource {
        match v {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            other => ConfigSource::Other(other),
        }
    }
}

/// One configuration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Key, e.g. `retention.ms`.
    pub name: String,
    /// Value; `None` for sensitive values and unset ones.
    pub value: Option<String>,
    /// Whether it cannot be changed.
    pub read_only: bool,
    /// Whether it is Kafka's built-in default (as Java's `ConfigEntry.isDefault()`).
    pub is_default: bool,
    /// Whether the value is a secret (the broker never returns it).
    pub is_sensitive: bool,
    /// Where the value comes from.
    pub source: ConfigSource,
}

/// One change of an incremental configuration update (IncrementalAlterConfigs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    /// Sets `name` to `value`.
    Set { name: String, value: String },
    /// Removes the override of `name` (back to its default).
    Delete { name: String },
    /// Appends `value` to the list `name`.
    Append { name: String, value: String },
    /// Removes `value` from the list `name`.
    Subtract { name: String, value: String },
}

impl AlterConfigOp {
    /// [`AlterConfigOp::Set`].
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> AlterConfigOp {
        AlterConfigOp::Set {
            name: name.into(),
            value: value.into(),
        }
    }

    /// [`AlterConfigOp::Delete`].
    pub fn delete(name: impl Into<String>) -> AlterConfigOp {
        AlterConfigOp::Delete { name: name.into() }
    }

    fn wire(&self) -> AlterableConfig {
        let (name, op, value) = match self {
            AlterConfigOp::Set { name, value } => (name, 0, Some(value)),
            AlterConfigOp::Delete { name } => (name, 1, None),
            AlterConfigOp::Append { name, value } => (name, 2, Some(value)),
            AlterConfigOp::Subtract { name, value } => (name, 3, Some(value)),
        };
        AlterableConfig {
            name: KString::from(name.as_str()),
            config_operation: op,
            value: value.map(|v| KString::from(v.as_str())),
            ..Default::default()
        }
    }
}

/// The cluster as DescribeCluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: String,
    /// The node the broker reports as controller, if any. In KRaft clients never talk to the
    /// controller quorum, so brokers report one of the live brokers here (Java shows the same).
    pub controller: Option<i32>,
    /// Live brokers, by id.
    pub brokers: Vec<BrokerInfo>,
}

/// A group as ListGroups lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type (`consumer` for consumer groups, empty for groups with only offsets).
    pub protocol_type: String,
    /// State (`Stable`, `Empty`, ...), if the broker reports it (ListGroups v4+).
    pub state: Option<String>,
    /// Group type (`classic`, `consumer`, `share`, ...), if the broker reports it (v5+).
    pub group_type: Option<String>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Client id of the member's client.
    pub client_id: String,
    /// Host the member connects from.
    pub host: String,
    /// Static membership id (KIP-345), if any.
    pub group_instance_id: Option<String>,
    /// The partitions assigned to the member: decoded from the classic consumer protocol's
    /// assignment (empty for other protocol types, or an assignment that does not decode), or
    /// the KIP-848 target assignment's current partitions.
    pub assignment: Vec<TopicPartition>,
}

/// A group as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State (`Stable`, `Empty`, `Dead`, ...).
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// The chosen protocol (classic: the assignor; KIP-848 groups: the server assignor).
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
    /// Whether the group uses the KIP-848 consumer protocol.
    pub is_consumer_protocol: bool,
}

/// A change of a user's SCRAM credentials.
#[derive(Debug, Clone)]
pub enum ScramCredentialChange {
    /// Creates or replaces `user`'s credential for `mechanism`. The salted password is computed
    /// here with a random salt; the password itself is never sent.
    Upsert {
        user: String,
        mechanism: ScramHash,
        /// PBKDF2 iterations; Kafka accepts 4096 to 16384.
        iterations: i32,
        password: Secret,
    },
    /// Deletes `user`'s credential for `mechanism`.
    Delete { user: String, mechanism: ScramHash },
}

fn scram_wire(m: ScramHash) -> i8 {
    match m {
        ScramHash::Sha256 => 1,
        ScramHash::Sha512 => 2,
    }
}

/// Retries with backoff until the deadline.
struct Retry {
    deadline: Instant,
    attempt: u32,
    policy: BackoffPolicy,
}

impl Retry {
    fn new(config: &ClientConfig) -> Retry {
        Retry {
            deadline: Instant::now() + config.request_timeout,
            attempt: 0,
            policy: BackoffPolicy::retry(config),
        }
    }

    /// Waits before the next attempt after `err`, or returns `err` if it is not retriable or
    /// the deadline would pass.
    async fn backoff(&mut self, err: Error) -> Result<()> {
        if !err.is_retriable() {
            return Err(err);
        }
        let delay = self.policy.delay(self.attempt, &mut OsRandom);
        self.attempt = self.attempt.saturating_add(1);
        if Instant::now() + delay >= self.deadline {
            return Err(err);
        }
        tracing::debug!(error = %err, ?delay, "admin request retried");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Responses that carry `throttle_time_ms` (KIP-219).
trait Throttled {
    fn throttle_time_ms(&self) -> i32;
}

macro_rules! throttled {
    ($($t:ty),* $(,)?) => {
        $(impl Throttled for $t {
            fn throttle_time_ms(&self) -> i32 {
                self.throttle_time_ms
            }
        })*
    };
}

throttled!(
    kafka_wire::messages::MetadataResponse,
    kafka_wire::messages::CreateTopicsResponse,
    kafka_wire::messages::DeleteTopicsResponse,
    kafka_wire::messages::CreatePartitionsResponse,
    kafka_wire::messages::DescribeConfigsResponse,
    kafka_wire::messages::IncrementalAlterConfigsResponse,
    kafka_wire::messages::DeleteRecordsResponse,
    kafka_wire::messages::DescribeClusterResponse,
    kafka_wire::messages::ListGroupsResponse,
    kafka_wire::messages::FindCoordinatorResponse,
    kafka_wire::messages::DescribeGroupsResponse,
    kafka_wire::messages::ConsumerGroupDescribeResponse,
    kafka_wire::messages::AlterUserScramCredentialsResponse,
    kafka_wire::messages::OffsetFetchResponse,
    kafka_wire::messages::DeleteGroupsResponse,
);

/// Sends on `conn` at the negotiated version and honours the broker's throttle time (KIP-219:
/// the connection holds later requests back until it has passed).
async fn send_throttled<R, F>(conn: &Connection, build: F) -> Result<R::Response>
where
    R: Request + Send + Sync + 'static,
    R::Response: Throttled,
    F: FnOnce(i16) -> R,
{
    let resp = send_on(conn, build).await?;
    let ms = resp.throttle_time_ms();
    if ms > 0 {
        conn.throttle(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    }
    Ok(resp)
}

fn broker_error(code: i16, message: Option<&KString>) -> BrokerError {
    let e = BrokerError::new(code);
    match message {
        Some(m) if !m.as_str().is_empty() => e.with_message(m.as_str()),
        _ => e,
    }
}

fn invalid_response(msg: String) -> Error {
    Error::Protocol {
        peer: Peer::Unknown,
        kind: ProtocolErrorKind::Invalid(msg),
    }
}

/// The `timeout_ms` given to the broker: a little below our own request timeout, so the broker's
/// answer (possibly `REQUEST_TIMED_OUT`) arrives before we give up on the connection.
fn timeout_ms(config: &ClientConfig) -> i32 {
    let ms = config.request_timeout.as_millis().saturating_mul(4) / 5;
    i32::try_from(ms.max(1)).unwrap_or(i32::MAX)
}

impl Admin {
    /// Connects a new [`Client`] for admin use.
    pub async fn new(config: ClientConfig) -> Result<Admin> {
        Ok(Admin {
            client: Client::connect(config).await?,
        })
    }

    /// An admin handle on an existing client (its connections are shared).
    pub fn from_client(client: Client) -> Admin {
        Admin { client }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn config(&self) -> &ClientConfig {
        self.client.config()
    }

    /// Sends to broker `node` (or any broker) on the admin connection, honouring throttling.
    async fn send_control<R, F>(&self, node: Option<i32>, build: F) -> Result<R::Response>
    where
        R: Request + Send + Sync + 'static,
        R::Response: Throttled,
        F: FnOnce(i16) -> R,
    {
        let conn = match node {
            Some(id) => self.client.connection(id, Purpose::Control).await?,
            None => self.client.any_connection(Purpose::Control).await?,
        };
        send_throttled(&conn, build).await
    }

    /// Runs `op` until it succeeds, fails with a non-retriable error or the request timeout
    /// passes.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retry = Retry::new(self.config());
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => retry.backoff(e).await?,
            }
        }
    }

    /// A fresh Metadata response for `topics` (not the client's cache).
    async fn fetch_metadata(&self, topics: &[&str]) -> Result<ClusterMetadata> {
        let topics: Vec<MetadataRequestTopic> = topics
            .iter()
            .map(|n| MetadataRequestTopic {
                topic_id: Uuid::ZERO,
                name: Some(KString::from(*n)),
                ..Default::default()
            })
            .collect();
        self.fetch_metadata_of(Some(topics)).await
    }

    /// A fresh Metadata response for `topics`, or every topic for `None`.
    async fn fetch_metadata_of(
        &self,
        topics: Option<Vec<MetadataRequestTopic>>,
    ) -> Result<ClusterMetadata> {
        let resp = self
            .send_control(None, move |_| MetadataRequest {
                topics,
                allow_auto_topic_creation: false,
                ..Default::default()
            })
            .await?;
        Ok(ClusterMetadata::from_response(&resp, Instant::now()))
    }

    /// Waits until each `(topic, partitions)` shows at least that many partitions, all with a
    /// leader, or until `deadline`.
    async fn wait_for_leaders(&self, topics: &[(String, i32)], deadline: Instant) -> Result<()> {
        let mut delay = Duration::from_millis(20);
        loop {
            let names: Vec<&str> = topics.iter().map(|(n, _)| n.as_str()).collect();
            let ready = match self.fetch_metadata(&names).await {
                Ok(md) => topics.iter().all(|(name, want)| {
                    md.topic(name).is_some_and(|t| {
                        t.error.is_none()
                            && t.partitions.len() >= usize::try_from(*want).unwrap_or(0)
                            && !t.partitions.is_empty()
                            && t.partitions.iter().all(|p| p.leader >= 0)
                    })
                }),
                Err(e) if e.is_retriable() => false,
                Err(e) => return Err(e),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() + delay >= deadline {
                return Err(Error::Timeout {
                    what: "leaders for every partition of the topic",
                    after: self.config().request_timeout,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    // ---------------------------------------------------------------- topics

    /// Creates topics. Returns one result per topic, in the order given; a topic that exists
    /// already fails with [`Error::Broker`] whose code is `TOPIC_ALREADY_EXISTS`. Before a
    /// topic's result is `Ok`, its metadata shows a leader for every partition (waited for up to
    /// the request timeout; else that topic's result is [`Error::Timeout`]). The outer `Err` is
    /// for failures of the whole request.
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<TopicResults<CreatedTopic>> {
        let mut retry = Retry::new(self.config());
        let mut results: HashMap<String, Result<CreatedTopic>> = HashMap::new();
        let mut pending: Vec<&NewTopic> = topics.iter().collect();
        let timeout = timeout_ms(self.config());
        while !pending.is_empty() {
            let wire: Vec<CreatableTopic> = pending
                .iter()
                .map(|t| CreatableTopic {
                    name: KString::from(t.name.as_str()),
                    num_partitions: t.partitions,
                    replication_factor: t.replication_factor,
                    configs: t
                        .configs
                        .iter()
                        .map(|(k, v)| CreatableTopicConfig {
                            name: KString::from(k.as_str()),
                            value: Some(KString::from(v.as_str())),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect();
            let resp = match self
                .send_control(None, move |_| CreateTopicsRequest {
                    topics: wire,
                    timeout_ms: timeout,
                    validate_only: false,
                    ..Default::default()
                })
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    retry.backoff(e).await?;
                    continue;
                }
            };
            let mut again = Vec::new();
            for t in pending {
                let Some(r) = resp.topics.iter().find(|r| r.name.as_str() == t.name) else {
                    results.insert(
                        t.name.clone(),
                        Err(invalid_response(format!(
                            "CreateTopics response has no result for topic {}",
                            t.name
                        ))),
                    );
                    continue;
                };
                if r.error_code == 0 {
                    results.insert(
                        t.name.clone(),
                        Ok(CreatedTopic {
                            name: t.name.clone(),
                            topic_id: r.topic_id,
                            partitions: if r.num_partitions > 0 {
                                r.num_partitions
                            } else {
                                t.partitions
                            },
                            replication_factor: if r.replication_factor > 0 {
                                r.replication_factor
                            } else {
                                t.replication_factor
                            },
                        }),
                    );
                    continue;
                }
                let err = broker_error(r.error_code, r.error_message.as_ref()).with_topic(&t.name);
                if err.is_retriable() {
                    again.push((t, err));
                } else {
                    results.insert(t.name.clone(), Err(Error::Broker(err)));
                }
            }
            if let Some((_, err)) = again.last() {
                if retry.backoff(Error::Broker(err.clone())).await.is_err() {
                    // Out of time: each topic keeps its own last error.
                    for (t, err) in again.drain(..) {
                        results.insert(t.name.clone(), Err(Error::Broker(err)));
                    }
                }
            }
            pending = again.into_iter().map(|(t, _)| t).collect();
        }
        // Wait for leaders of what was created.
        for t in topics {
            let want = match results.get(&t.name) {
                Some(Ok(c)) => c.partitions,
                _ => continue,
            };
            if let Err(e) = self
                .wait_for_leaders(&[(t.name.clone(), want)], retry.deadline)
                .await
            {
                results.insert(t.name.clone(), Err(e));
            }
        }
        Ok(topics
            .iter()
            .map(|t| {
                let r = results.remove(&t.name).unwrap_or_else(|| {
                    Err(invalid_response(format!("no result for topic {}", t.name)))
                });
                (t.name.clone(), r)
            })
            .collect())
    }

    /// Creates one topic; see [`Admin::create_topics`].
    pub async fn create_topic(&self, topic: &NewTopic) -> Result<CreatedTopic> {
        let mut results = self.create_topics(std::slice::from_ref(topic)).await?;
        match results.pop() {
            Some((_, r)) => r,
            None => Err(invalid_response("no result for the topic".into())),
        }
    }

    /// Creates `topic` unless it exists. Returns whether it was created; either way its
    /// partitions have leaders when this returns `Ok`.
    pub async fn create_topic_if_absent(&self, topic: &NewTopic) -> Result<bool> {
        match self.create_topic(topic).await {
            Ok(_) => Ok(true),
            Err(e) if e.broker_code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {
                let deadline = Instant::now() + self.config().request_timeout;
                self.wait_for_leaders(&[(topic.name.clone(), 1)], deadline)
                    .await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes topics. Returns one result per topic, in the order given (a missing topic:
    /// `UNKNOWN_TOPIC_OR_PARTITION`). A topic's result is `Ok` once Metadata no longer lists it
    /// (waited for up to the request timeout).
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<TopicResults<()>> {
        let mut retry = Retry::new(self.config());
        let timeout = timeout_ms(self.config());
        let mut results: HashMap<String, Result<()>> = HashMap::new();
        let mut pending: Vec<&str> = topics.to_vec();
        while !pending.is_empty() {
            let names: Vec<String> = pending.iter().map(|s| s.to_string()).collect();
            let resp = match self
                .send_control(None, move |v| {
                    let mut req = DeleteTopicsRequest {
                        timeout_ms: timeout,
                        ..Default::default()
                    };
                    if v >= 6 {
                        req.topics = names
                            .iter()
                            .map(|n| DeleteTopicState {
                                name: Some(KString::from(n.as_str())),
                                topic_id: Uuid::ZERO,
                                ..Default::default()
                            })
                            .collect();
                    } else {
                        req.topic_names = names.iter().map(|n| KString::from(n.as_str())).collect();
                    }
                    req
                })
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    retry.backoff(e).await?;
                    continue;
                }
            };
            let mut again = Vec::new();
            for name in pending {
                let Some(r) = resp
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|n| n.as_str() == name))
                else {
                    results.insert(
                        name.to_string(),
                        Err(invalid_response(format!(
                            "DeleteTopics response has no result for topic {name}"
                        ))),
                    );
                    continue;
                };
                if r.error_code == 0 {
                    results.insert(name.to_string(), Ok(()));
                    continue;
                }
                let err = broker_error(r.error_code, r.error_message.as_ref()).with_topic(name);
                if err.is_retriable() && err.code != ErrorCode::UNKNOWN_TOPIC_OR_PARTITION {
                    again.push((name, err));
                } else {
                    results.insert(name.to_string(), Err(Error::Broker(err)));
                }
            }
            if let Some((_, err)) = again.last() {
                if retry.backoff(Error::Broker(err.clone())).await.is_err() {
                    // Out of time: each topic keeps its own last error.
                    for (name, err) in again.drain(..) {
                        results.insert(name.to_string(), Err(Error::Broker(err)));
                    }
                }
            }
            pending = again.into_iter().map(|(n, _)| n).collect();
        }
        // Wait until the deleted topics are gone from metadata.
        let deleted: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| matches!(results.get(*t), Some(Ok(()))))
            .collect();
        for t in &deleted {
            self.client.forget_topic(t);
        }
        let mut delay = Duration::from_millis(20);
        while !deleted.is_empty() {
            let gone = match self.fetch_metadata(&deleted).await {
                Ok(md) => deleted.iter().all(|t| {
                    md.topic(t)
                        .is_none_or(|t| t.error == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION))
                }),
                Err(_) => false,
            };
            if gone {
                break;
            }
            if Instant::now() + delay >= retry.deadline {
                for t in &deleted {
                    results.insert(
                        t.to_string(),
                        Err(Error::Timeout {
                            what: "a deleted topic to leave the metadata",
                            after: self.config().request_timeout,
                        }),
                    );
                }
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        Ok(topics
            .iter()
            .map(|t| {
                let r = results
                    .remove(*t)
                    .unwrap_or_else(|| Err(invalid_response(format!("no result for topic {t}"))));
                (t.to_string(), r)
            })
            .collect())
    }

    /// Describes topics (partitions, leaders, replicas, ISR, topic id) from a fresh Metadata
    /// request. Fails with the first topic error, e.g. `UNKNOWN_TOPIC_OR_PARTITION` with the
    /// topic name.
    pub async fn describe_topics(&self, topics: &[&str]) -> Result<Vec<TopicDescription>> {
        let md = self.retrying(|| self.fetch_metadata(topics)).await?;
        let mut out = Vec::with_capacity(topics.len());
        for name in topics {
            let Some(t) = md.topic(name) else {
                return Err(Error::Broker(
                    BrokerError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION).with_topic(*name),
                ));
            };
            if let Some(code) = t.error {
                return Err(Error::Broker(BrokerError::new(code).with_topic(*name)));
            }
            out.push(TopicDescription {
                name: t.name.clone(),
                topic_id: t.topic_id,
                is_internal: t.is_internal,
                partitions: t.partitions.clone(),
            });
        }
        Ok(out)
    }

    /// Raises `topic`'s partition count to `new_total`, then waits (up to the request timeout)
    /// until Metadata shows every partition with a leader.
    pub async fn create_partitions(&self, topic: &str, new_total: i32) -> Result<()> {
        let timeout = timeout_ms(self.config());
        let deadline = Instant::now() + self.config().request_timeout;
        self.retrying(|| async {
            let resp = self
                .send_control(None, |_| CreatePartitionsRequest {
                    topics: vec![CreatePartitionsTopic {
                        name: KString::from(topic),
                        count: new_total,
                        assignments: None,
                        ..Default::default()
                    }],
                    timeout_ms: timeout,
                    validate_only: false,
                    ..Default::default()
                })
                .await?;
            let r = resp
                .results
                .iter()
                .find(|r| r.name.as_str() == topic)
                .ok_or_else(|| {
                    invalid_response(format!("CreatePartitions has no result for {topic}"))
                })?;
            if r.error_code != 0 {
                return Err(Error::Broker(
                    broker_error(r.error_code, r.error_message.as_ref()).with_topic(topic),
                ));
            }
            Ok(())
        })
        .await?;
        self.wait_for_leaders(&[(topic.to_string(), new_total)], deadline)
            .await
    }

    // ---------------------------------------------------------------- configs

    /// Describes the configuration of a topic or a broker (all keys).
    pub async fn describe_configs(&self, resource: &ConfigResource) -> Result<Vec<ConfigEntry>> {
        let (rtype, rname) = resource.wire();
        self.retrying(|| async {
            let req = |_| DescribeConfigsRequest {
                resources: vec![DescribeConfigsResource {
                    resource_type: rtype,
                    resource_name: KString::from(rname.as_str()),
                    configuration_keys: None,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let resp = match resource {
                ConfigResource::Broker(id) => self.send_control(Some(*id), req).await?,
                ConfigResource::Topic(_) => self.send_control(None, req).await?,
            };
            let r = resp
                .results
                .first()
                .ok_or_else(|| invalid_response("DescribeConfigs response has no result".into()))?;
            if r.error_code != 0 {
                return Err(Error::Broker(
                    resource.context(broker_error(r.error_code, r.error_message.as_ref())),
                ));
            }
            Ok(r.configs
                .iter()
                .map(|c| ConfigEntry {
                    name: c.name.as_str().to_string(),
                    value: c.value.as_ref().map(|v| v.as_str().to_string()),
                    read_only: c.read_only,
                    is_default: c.config_source == 5,
                    is_sensitive: c.is_sensitive,
                    source: ConfigSource::from_wire(c.config_source),
                })
                .collect())
        })
        .await
    }

    /// Changes configuration entries of a topic or a broker incrementally
    /// (IncrementalAlterConfigs): keys not named keep their values.
    ///
    /// `Ok` means the controller committed the change. Brokers apply it from the metadata log
    /// shortly after, so a [`Admin::describe_configs`] right after may still show the old value
    /// for a few milliseconds (as with Java's admin client).
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        ops: &[AlterConfigOp],
    ) -> Result<()> {
        let (rtype, rname) = resource.wire();
        self.retrying(|| async {
            let req = |_| IncrementalAlterConfigsRequest {
                resources: vec![AlterConfigsResource {
                    resource_type: rtype,
                    resource_name: KString::from(rname.as_str()),
                    configs: ops.iter().map(AlterConfigOp::wire).collect(),
                    ..Default::default()
                }],
                validate_only: false,
                ..Default::default()
            };
            let resp = match resource {
                ConfigResource::Broker(id) => self.send_control(Some(*id), req).await?,
                ConfigResource::Topic(_) => self.send_control(None, req).await?,
            };
            let r = resp.responses.first().ok_or_else(|| {
                invalid_response("IncrementalAlterConfigs response has no result".into())
            })?;
            if r.error_code != 0 {
                return Err(Error::Broker(
                    resource.context(broker_error(r.error_code, r.error_message.as_ref())),
                ));
            }
            Ok(())
        })
        .await
    }

    // ---------------------------------------------------------------- offsets and records

    /// Looks up offsets (`Earliest`, `Latest` or a `Timestamp`) per partition; see
    /// [`crate::offsets::list_offsets`].
    pub async fn list_offsets(
        &self,
        requests: &[(TopicPartition, Offset)],
        isolation: IsolationLevel,
    ) -> Result<HashMap<TopicPartition, ListedOffset>> {
        crate::offsets::list_offsets(&self.client, requests, isolation).await
    }

    /// Deletes the records before the given offsets (-1: the high watermark) by sending
    /// DeleteRecords to each partition's leader. Returns each partition's new low watermark.
    /// Fails as a whole if a partition fails with a non-retriable error.
    pub async fn delete_records(
        &self,
        requests: &[(TopicPartition, i64)],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let mut retry = Retry::new(self.config());
        let timeout = timeout_ms(self.config());
        let mut pending: BTreeMap<TopicPartition, i64> = requests.iter().cloned().collect();
        let mut out = HashMap::with_capacity(pending.len());
        while !pending.is_empty() {
            let names: BTreeSet<&str> = pending.keys().map(|tp| tp.topic.as_str()).collect();
            let names: Vec<&str> = names.into_iter().collect();
            let md = match self.fetch_metadata(&names).await {
                Ok(md) => Arc::new(md),
                Err(e) => {
                    retry.backoff(e).await?;
                    continue;
                }
            };
            let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
            let mut last: Option<Error> = None;
            for (tp, off) in &pending {
                match md.topic(&tp.topic) {
                    Some(t) if t.error.is_some() => {
                        let code = t.error.unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR);
                        let err = BrokerError::new(code).with_partition(&tp.topic, tp.partition);
                        if !err.is_retriable() {
                            return Err(Error::Broker(err));
                        }
                        last = Some(Error::Broker(err));
                    }
                    None => {
                        last = Some(Error::Broker(
                            BrokerError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
                                .with_partition(&tp.topic, tp.partition),
                        ))
                    }
                    Some(t) => match t.partition(tp.partition) {
                        Some(p) if p.leader >= 0 => by_leader
                            .entry(p.leader)
                            .or_default()
                            .push((tp.clone(), *off)),
                        Some(_) => {
                            last = Some(Error::Broker(
                                BrokerError::new(ErrorCode::LEADER_NOT_AVAILABLE)
                                    .with_partition(&tp.topic, tp.partition),
                            ))
                        }
                        None => {
                            return Err(Error::Broker(
                                BrokerError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
                                    .with_partition(&tp.topic, tp.partition)
                                    .with_message("the topic has no such partition"),
                            ))
                        }
                    },
                }
            }
            for (leader, parts) in by_leader {
                let mut topics: BTreeMap<String, Vec<DeleteRecordsPartition>> = BTreeMap::new();
                for (tp, off) in &parts {
                    topics
                        .entry(tp.topic.clone())
                        .or_default()
                        .push(DeleteRecordsPartition {
                            partition_index: tp.partition,
                            offset: *off,
                            ..Default::default()
                        });
                }
                let req_topics: Vec<DeleteRecordsTopic> = topics
                    .into_iter()
                    .map(|(name, partitions)| DeleteRecordsTopic {
                        name: KString::from(name),
                        partitions,
                        ..Default::default()
                    })
                    .collect();
                let resp = match self
                    .send_control(Some(leader), move |_| DeleteRecordsRequest {
                        topics: req_topics,
                        timeout_ms: timeout,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(r) => r,
                    Err(e) if e.is_retriable() => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for (tp, _) in parts {
                    let r = resp
                        .topics
                        .iter()
                        .filter(|t| t.name.as_str() == tp.topic)
                        .flat_map(|t| t.partitions.iter())
                        .find(|p| p.partition_index == tp.partition);
                    let Some(r) = r else {
                        return Err(invalid_response(format!(
                            "DeleteRecords response has no result for {tp}"
                        )));
                    };
                    if r.error_code == 0 {
                        pending.remove(&tp);
                        out.insert(tp, r.low_watermark);
                        continue;
                    }
                    let err =
                        BrokerError::new(r.error_code).with_partition(&tp.topic, tp.partition);
                    if !err.is_retriable() {
                        return Err(Error::Broker(err));
                    }
                    last = Some(Error::Broker(err));
                }
            }
            if let Some(e) = last {
                if !pending.is_empty() {
                    retry.backoff(e).await?;
                }
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- cluster

    /// The cluster id, the controller and the live brokers (DescribeCluster; Metadata on brokers
    /// without it).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        self.retrying(|| async {
            let conn = self.client.any_connection(Purpose::Control).await?;
            if conn.version::<DescribeClusterRequest>().is_none() {
                let md = self.fetch_metadata(&[]).await?;
                return Ok(ClusterDescription {
                    cluster_id: md.cluster_id.clone().unwrap_or_default(),
                    controller: (md.controller_id >= 0).then_some(md.controller_id),
                    brokers: md.brokers.values().cloned().collect(),
                });
            }
            let resp = send_throttled(&conn, |_| DescribeClusterRequest::default()).await?;
            if resp.error_code != 0 {
                return Err(Error::Broker(broker_error(
                    resp.error_code,
                    resp.error_message.as_ref(),
                )));
            }
            let mut brokers: Vec<BrokerInfo> = resp
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.broker_id,
                    host: b.host.as_str().to_string(),
                    port: u16::try_from(b.port).unwrap_or(0),
                    rack: b.rack.as_ref().map(|r| r.as_str().to_string()),
                })
                .collect();
            brokers.sort_by_key(|b| b.id);
            Ok(ClusterDescription {
                cluster_id: resp.cluster_id.as_str().to_string(),
                controller: (resp.controller_id >= 0).then_some(resp.controller_id),
                brokers,
            })
        })
        .await
    }

    // ---------------------------------------------------------------- groups

    /// Every group of the cluster (ListGroups to every broker), sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let md = self.client.refresh_metadata().await?;
        let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
        for &id in md.brokers.keys() {
            let listed = self
                .retrying(|| async {
                    let resp = self
                        .send_control(Some(id), |_| ListGroupsRequest::default())
                        .await?;
                    if resp.error_code != 0 {
                        return Err(Error::Broker(BrokerError::new(resp.error_code)));
                    }
                    Ok(resp.groups)
                })
                .await?;
            for g in listed {
                let non_empty = |s: &KString| (!s.as_str().is_empty()).then(|| s.to_string());
                groups.insert(
                    g.group_id.to_string(),
                    GroupListing {
                        group_id: g.group_id.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        state: non_empty(&g.group_state),
                        group_type: non_empty(&g.group_type),
                    },
                );
            }
        }
        Ok(groups.into_values().collect())
    }

    /// The coordinator (node id) of `group`.
    pub async fn find_group_coordinator(&self, group: &str) -> Result<i32> {
        self.retrying(|| async {
            let resp = self
                .send_control(None, |v| {
                    if v >= 4 {
                        FindCoordinatorRequest {
                            key_type: 0,
                            coordinator_keys: vec![KString::from(group)],
                            ..Default::default()
                        }
                    } else {
                        FindCoordinatorRequest {
                            key: KString::from(group),
                            key_type: 0,
                            ..Default::default()
                        }
                    }
                })
                .await?;
            let (code, msg, node) = match resp.coordinators.first() {
                Some(c) => (c.error_code, c.error_message.clone(), c.node_id),
                None => (resp.error_code, resp.error_message.clone(), resp.node_id),
            };
            if code != 0 {
                return Err(Error::Broker(
                    broker_error(code, msg.as_ref()).with_group(group),
                ));
            }
            if !self.client.metadata().brokers.contains_key(&node) {
                self.client.refresh_metadata().await?;
            }
            Ok(node)
        })
        .await
    }

    /// Describes groups: classic groups through DescribeGroups, KIP-848 consumer groups through
    /// ConsumerGroupDescribe (when the coordinator says the group is not a classic group).
    pub async fn describe_groups(&self, groups: &[&str]) -> Result<Vec<GroupDescription>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            out.push(self.describe_group(group).await?);
        }
        Ok(out)
    }

    async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.retrying(|| async {
            let node = self.find_group_coordinator(group).await?;
            let resp = self
                .send_control(Some(node), |_| DescribeGroupsRequest {
                    groups: vec![KString::from(group)],
                    ..Default::default()
                })
                .await?;
            let g = resp
                .groups
                .iter()
                .find(|g| g.group_id.as_str() == group)
                .ok_or_else(|| {
                    invalid_response(format!("DescribeGroups has no result for group {group}"))
                })?;
            if g.error_code != 0 {
                let err = broker_error(g.error_code, g.error_message.as_ref()).with_group(group);
                if err.code == ErrorCode::GROUP_ID_NOT_FOUND {
                    if let Some(d) = self.describe_consumer_group(node, group).await? {
                        return Ok(d);
                    }
                }
                // NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS are retriable: the retry loop
                // finds the coordinator again.
                return Err(Error::Broker(err));
            }
            Ok(GroupDescription {
                group_id: group.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
                protocol: g.protocol_data.to_string(),
                members: g
                    .members
                    .iter()
                    .map(|m| MemberDescription {
                        member_id: m.member_id.to_string(),
                        client_id: m.client_id.to_string(),
                        host: m.client_host.to_string(),
                        group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                        assignment: if g.protocol_type.as_str() == "consumer" {
                            crate::group::balancer::Assignment::decode(&m.member_assignment)
                                .map(|a| a.partitions)
                                .unwrap_or_default()
                        } else {
                            Vec::new()
                        },
                    })
                    .collect(),
                is_consumer_protocol: false,
            })
        })
        .await
    }

    /// ConsumerGroupDescribe (KIP-848); `None` if the coordinator does not know the API or the
    /// group is not a consumer-protocol group.
    async fn describe_consumer_group(
        &self,
        node: i32,
        group: &str,
    ) -> Result<Option<GroupDescription>> {
        let conn = self.client.connection(node, Purpose::Control).await?;
        if conn.version::<ConsumerGroupDescribeRequest>().is_none() {
            return Ok(None);
        }
        let resp = send_throttled(&conn, |_| ConsumerGroupDescribeRequest {
            group_ids: vec![KString::from(group)],
            ..Default::default()
        })
        .await?;
        let Some(g) = resp.groups.iter().find(|g| g.group_id.as_str() == group) else {
            return Ok(None);
        };
        if g.error_code == ErrorCode::GROUP_ID_NOT_FOUND.0 {
            return Ok(None);
        }
        if g.error_code != 0 {
            return Err(Error::Broker(
                broker_error(g.error_code, g.error_message.as_ref()).with_group(group),
            ));
        }
        Ok(Some(GroupDescription {
            group_id: group.to_string(),
            state: g.group_state.to_string(),
            protocol_type: "consumer".to_string(),
            protocol: g.assignor_name.to_string(),
            members: g
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    group_instance_id: m.instance_id.as_ref().map(|i| i.to_string()),
                    assignment: m
                        .assignment
                        .topic_partitions
                        .iter()
                        .flat_map(|t| {
                            t.partitions
                                .iter()
                                .map(|&p| TopicPartition::new(t.topic_name.as_str(), p))
                        })
                        .collect(),
                })
                .collect(),
            is_consumer_protocol: true,
        }))
    }

    /// The committed offsets of `group` (OffsetFetch to its coordinator, stable offsets only:
    /// offsets of open transactions are waited for). Partitions without a committed offset are
    /// not listed.
    pub async fn list_group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let raw = self
            .retrying(|| async {
                let node = self.find_group_coordinator(group).await?;
                let resp = self
                    .send_control(Some(node), |v| offset_fetch_request(v, group, None))
                    .await?;
                offset_fetch_rows(&resp, !resp.groups.is_empty(), group)
            })
            .await?;
        // OffsetFetch v10 names topics by id: resolve the ids with Metadata.
        let ids: Vec<Uuid> = raw
            .iter()
            .filter(|r| r.topic.is_empty() && r.topic_id != Uuid::ZERO)
            .map(|r| r.topic_id)
            .collect();
        let md = if ids.is_empty() {
            None
        } else {
            Some(self.retrying(|| self.fetch_metadata_of(None)).await?)
        };
        let mut out = BTreeMap::new();
        for r in raw {
            if r.offset < 0 {
                continue;
            }
            let name = if r.topic.is_empty() {
                match md.as_ref().and_then(|m| m.topic_name(r.topic_id)) {
                    Some(n) => n.to_string(),
                    // A topic deleted since the commit.
                    None => continue,
                }
            } else {
                r.topic
            };
            out.insert(TopicPartition::new(name, r.partition), r.offset);
        }
        Ok(out)
    }

    /// Deletes groups (they must be empty: no active member). One result per group, in the
    /// order given (`GROUP_ID_NOT_FOUND`, `NON_EMPTY_GROUP`, ...).
    pub async fn delete_groups(&self, groups: &[&str]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let r = self
                .retrying(|| async {
                    let node = self.find_group_coordinator(group).await?;
                    let resp = self
                        .send_control(Some(node), |_| DeleteGroupsRequest {
                            groups_names: vec![KString::from(*group)],
                            ..Default::default()
                        })
                        .await?;
                    let r = resp
                        .results
                        .iter()
                        .find(|r| r.group_id.as_str() == *group)
                        .ok_or_else(|| {
                            invalid_response(format!("DeleteGroups has no result for {group}"))
                        })?;
                    if r.error_code != 0 {
                        return Err(Error::Broker(
                            broker_error(r.error_code, r.error_message.as_ref()).with_group(*group),
                        ));
                    }
                    Ok(())
                })
                .await;
            match r {
                Err(e @ Error::Broker(_)) => out.push((group.to_string(), Err(e))),
                Err(e) => return Err(e),
                Ok(()) => out.push((group.to_string(), Ok(()))),
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- SCRAM users

    /// Creates, replaces or deletes SCRAM credentials (AlterUserScramCredentials). Returns one
    /// result per user, in the order the users first appear.
    pub async fn alter_user_scram_credentials(
        &self,
        changes: &[ScramCredentialChange],
    ) -> Result<Vec<(String, Result<()>)>> {
        use kafka_wire::messages::alter_user_scram_credentials::{
            ScramCredentialDeletion, ScramCredentialUpsertion,
        };
        let mut upsertions = Vec::new();
        let mut deletions = Vec::new();
        let mut users: Vec<String> = Vec::new();
        for c in changes {
            match c {
                ScramCredentialChange::Upsert {
                    user,
                    mechanism,
                    iterations,
                    password,
                } => {
                    let iters = u32::try_from(*iterations).map_err(|_| {
                        Error::Misuse(format!(
                            "SCRAM iterations must be positive, got {iterations}"
                        ))
                    })?;
                    let mut salt = [0u8; 32];
                    for chunk in salt.chunks_mut(8) {
                        chunk.copy_from_slice(&OsRandom.next_u64().to_le_bytes());
                    }
                    let salted =
                        salted_password(*mechanism, password.expose().as_bytes(), &salt, iters);
                    upsertions.push(ScramCredentialUpsertion {
                        name: KString::from(user.as_str()),
                        mechanism: scram_wire(*mechanism),
                        iterations: *iterations,
                        salt: Bytes::copy_from_slice(&salt),
                        salted_password: Bytes::from(salted),
                        ..Default::default()
                    });
                    if !users.contains(user) {
                        users.push(user.clone());
                    }
                }
                ScramCredentialChange::Delete { user, mechanism } => {
                    deletions.push(ScramCredentialDeletion {
                        name: KString::from(user.as_str()),
                        mechanism: scram_wire(*mechanism),
                        ..Default::default()
                    });
                    if !users.contains(user) {
                        users.push(user.clone());
                    }
                }
            }
        }
        let resp = self
            .retrying(|| async {
                let resp = self
                    .send_control(None, |_| AlterUserScramCredentialsRequest {
                        deletions: deletions.clone(),
                        upsertions: upsertions.clone(),
                        ..Default::default()
                    })
                    .await?;
                // Retry the whole request while the controller moves.
                if let Some(r) = resp
                    .results
                    .iter()
                    .find(|r| ErrorCode(r.error_code) == ErrorCode::NOT_CONTROLLER)
                {
                    return Err(Error::Broker(broker_error(
                        r.error_code,
                        r.error_message.as_ref(),
                    )));
                }
                Ok(resp)
            })
            .await?;
        Ok(users
            .into_iter()
            .map(|u| {
                let r = match resp.results.iter().find(|r| r.user.as_str() == u) {
                    Some(r) if r.error_code == 0 => Ok(()),
                    Some(r) => Err(Error::Broker(
                        broker_error(r.error_code, r.error_message.as_ref()).with_message(format!(
                            "SCRAM credentials of user {u}: {}",
                            r.error_message.as_ref().map(|m| m.as_str()).unwrap_or("")
                        )),
                    )),
                    None => Err(invalid_response(format!(
                        "AlterUserScramCredentials has no result for user {u}"
                    ))),
                };
                (u, r)
            })
            .collect())
    }
}

/// PBKDF2-HMAC salted password, as SCRAM's `Hi()` (RFC 5802 section 2.2).
fn salted_password(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    match hash {
        ScramHash::Sha256 => {
            pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(password, salt, iterations).to_vec()
        }
        ScramHash::Sha512 => {
            pbkdf2::pbkdf2_hmac_array::<sha2::Sha512, 64>(password, salt, iterations).to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retry_is_bounded_by_the_request_timeout() {
        let mut cfg = ClientConfig::default();
        cfg.request_timeout(Duration::from_millis(300))
            .retry_backoff(Duration::from_millis(10))
            .retry_backoff_max(Duration::from_millis(40));
        let start = Instant::now();
        let mut retry = Retry::new(&cfg);
        let mut attempts = 0;
        let err = loop {
            attempts += 1;
            let e = Error::Broker(BrokerError::new(ErrorCode::NOT_CONTROLLER));
            if let Err(e) = retry.backoff(e).await {
                break e;
            }
        };
        assert_eq!(err.broker_code(), Some(ErrorCode::NOT_CONTROLLER));
        assert!(attempts > 3, "{attempts}");
        // Bounded: the last wait may end just past the deadline (one backoff at most), plus
        // scheduling slack on a loaded machine.
        assert!(
            start.elapsed() < Duration::from_millis(300 + 40 + 200),
            "{:?}",
            start.elapsed()
        );

        // Not retriable: returned at once, no sleep.
        let mut retry = Retry::new(&cfg);
        let start = Instant::now();
        let e = Error::Broker(BrokerError::new(ErrorCode::TOPIC_ALREADY_EXISTS));
        assert!(retry.backoff(e).await.is_err());
        assert!(start.elapsed() < Duration::from_millis(10));
    }

    #[test]
    fn alter_op_wire_codes() {
        assert_eq!(AlterConfigOp::set("a", "1").wire().config_operation, 0);
        assert_eq!(AlterConfigOp::delete("a").wire().config_operation, 1);
        assert!(AlterConfigOp::delete("a").wire().value.is_none());
        let sub = AlterConfigOp::Subtract {
            name: "a".into(),
            value: "x".into(),
        };
        assert_eq!(sub.wire().config_operation, 3);
    }

    #[test]
    fn config_resource_wire() {
        assert_eq!(
            ConfigResource::Topic("t".into()).wire(),
            (2, "t".to_string())
        );
        assert_eq!(ConfigResource::Broker(3).wire(), (4, "3".to_string()));
        assert_eq!(ConfigSource::from_wire(5), ConfigSource::Default);
        assert_eq!(ConfigSource::from_wire(42), ConfigSource::Other(42));
    }

    #[test]
    fn salted_password_agrees_with_the_sasl_client() {
        // The broker stores H(HMAC(salted, "Client Key")); it must equal what our SCRAM client
        // derives from the same password, salt and iterations, or login would fail.
        use hmac::{Hmac, Mac};
        use sha2::{Digest, Sha256, Sha512};
        let salt = b"0123456789abcdef";
        let salted = salted_password(ScramHash::Sha256, b"pencil", salt, 4096);
        assert_eq!(salted.len(), 32);
        let mut mac = Hmac::<Sha256>::new_from_slice(&salted).unwrap();
        mac.update(b"Client Key");
        let stored = Sha256::digest(mac.finalize().into_bytes()).to_vec();
        let keys = crate::sasl::ScramKeys::derive(ScramHash::Sha256, b"pencil", salt, 4096);
        assert_eq!(stored, keys.stored_key);

        let salted = salted_password(ScramHash::Sha512, b"pencil", salt, 4096);
        assert_eq!(salted.len(), 64);
        let mut mac = Hmac::<Sha512>::new_from_slice(&salted).unwrap();
        mac.update(b"Client Key");
        let stored = Sha512::digest(mac.finalize().into_bytes()).to_vec();
        let keys = crate::sasl::ScramKeys::derive(ScramHash::Sha512, b"pencil", salt, 4096);
        assert_eq!(stored, keys.stored_key);
    }
}
