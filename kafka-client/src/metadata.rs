//! Cluster metadata: immutable snapshots and the sans-IO cache that decides when to refresh.
//!
//! Readers take an `Arc<ClusterMetadata>` snapshot and never lock. The cache replaces the
//! snapshot as a whole on each Metadata response, and patches it copy-on-write when a Produce or
//! Fetch response names a newer leader (KIP-951), so a leader move costs no extra round trip.
//!
//! Refresh policy:
//! - every `metadata.max.age.ms` (default 5 min), whatever happens;
//! - on demand after leader-related errors, but at most once per
//!   `metadata.min.refresh.interval.ms` (default 5 s) so a broken partition cannot make every
//!   record trigger a refresh storm;
//! - immediately (`urgent`) when a topic is not known at all: a send to a new topic must not
//!   wait the minimum interval.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::codec::Uuid;
use kafka_wire::messages::MetadataResponse;
use kafka_wire::ErrorCode;

/// A broker as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
    /// Rack, if configured.
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port`.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition id.
    pub partition: i32,
    /// Leader node id, or -1 while there is none.
    pub leader: i32,
    /// Leader epoch (-1 if unknown).
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Offline replica node ids.
    pub offline: Vec<i32>,
    /// The partition's error (e.g. `LEADER_NOT_AVAILABLE`), if any.
    pub error: Option<ErrorCode>,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Name.
    pub name: String,
    /// Topic id (zero if the broker did not send one).
    pub topic_id: Uuid,
    /// Whether it is internal (`__consumer_offsets`, ...).
    pub is_internal: bool,
    /// The topic's error (e.g. `UNKNOWN_TOPIC_OR_PARTITION`), if any.
    pub error: Option<ErrorCode>,
    /// Partitions, sorted by id; `partitions[i].partition == i` for a healthy topic.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// The partition with id `p`.
    pub fn partition(&self, p: i32) -> Option<&PartitionMetadata> {
        let i = usize::try_from(p).ok()?;
        match self.partitions.get(i) {
            Some(pm) if pm.partition == p => Some(pm),
            _ => self.partitions.iter().find(|pm| pm.partition == p),
        }
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }
}

/// A map by topic name with a fast hasher, seeded per process (producers look topics up per
/// record).
pub type TopicMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// A snapshot of what the cluster told us.
#[derive(Debug, Clone)]
pub struct ClusterMetadata {
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Active controller id (-1 if unknown).
    pub controller_id: i32,
    /// Brokers by node id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name (only those asked for, unless all topics were fetched).
    pub topics: TopicMap<Arc<TopicMetadata>>,
    /// When the response that made this snapshot arrived.
    pub fetched_at: Instant,
}

impl ClusterMetadata {
    /// An empty snapshot (before the first response).
    pub fn empty(now: Instant) -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: None,
            controller_id: -1,
            brokers: BTreeMap::new(),
            topics: TopicMap::default(),
            fetched_at: now,
        }
    }

    /// Builds a snapshot from a Metadata response. Topics without a name (a v10+ response to a
    /// request by id) are skipped.
    pub fn from_response(resp: &MetadataResponse, now: Instant) -> ClusterMetadata {
        let brokers = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id,
                    BrokerInfo {
                        id: b.node_id,
                        host: b.host.as_str().to_string(),
                        port: u16::try_from(b.port).unwrap_or(0),
                        rack: b.rack.as_ref().map(|r| r.as_str().to_string()),
                    },
                )
            })
            .collect();
        let mut topics = TopicMap::default();
        for t in &resp.topics {
            let Some(name) = &t.name else { continue };
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.clone(),
                    isr: p.isr_nodes.clone(),
                    offline: p.offline_replicas.clone(),
                    error: non_zero(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            topics.insert(
                name.as_str().to_string(),
                Arc::new(TopicMetadata {
                    name: name.as_str().to_string(),
                    topic_id: t.topic_id,
                    is_internal: t.is_internal,
                    error: non_zero(t.error_code),
                    partitions,
                }),
            );
        }
        ClusterMetadata {
            cluster_id: resp.cluster_id.as_ref().map(|c| c.as_str().to_string()),
            controller_id: resp.controller_id,
            brokers,
            topics,
            fetched_at: now,
        }
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMetadata>> {
        self.topics.get(name)
    }

    /// A topic's name by id.
    pub fn topic_name(&self, id: Uuid) -> Option<&str> {
        if id == Uuid::ZERO {
            return None;
        }
        self.topics
            .values()
            .find(|t| t.topic_id == id)
            .map(|t| t.name.as_str())
    }

    /// The leader of a partition, if it has one and the broker is known.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<&BrokerInfo> {
        let p = self.topic(topic)?.partition(partition)?;
        if p.leader < 0 {
            return None;
        }
        self.brokers.get(&p.leader)
    }

    /// Applies a KIP-951 leader hint if it is newer than what we know. Returns whether the
    /// snapshot changed.
    pub fn apply_leader_hint(
        &mut self,
        topic: &str,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
    ) -> bool {
        if leader < 0 || leader_epoch < 0 {
            return false;
        }
        let Some(t) = self.topics.get_mut(topic) else {
            return false;
        };
        let Some(i) = t.partitions.iter().position(|p| p.partition == partition) else {
            return false;
        };
        let p = &t.partitions[i];
        if leader_epoch < p.leader_epoch || (leader_epoch == p.leader_epoch && p.leader == leader) {
            return false;
        }
        let tm = Arc::make_mut(t);
        tm.partitions[i].leader = leader;
        tm.partitions[i].leader_epoch = leader_epoch;
        tm.partitions[i].error = None;
        true
    }

    /// Adds or updates a broker endpoint (KIP-951 `node_endpoints`).
    pub fn apply_node_endpoint(&mut self, broker: BrokerInfo) -> bool {
        if self.brokers.get(&broker.id) == Some(&broker) {
            return false;
        }
        self.brokers.insert(broker.id, broker);
        true
    }
}

fn non_zero(code: i16) -> Option<ErrorCode> {
    (code != 0).then_some(ErrorCode(code))
}

/// Which topics a refresh asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSelection {
    /// Every topic in the cluster.
    All,
    /// These topics (possibly none: brokers and controller only).
    Some(BTreeSet<String>),
}

/// The sans-IO metadata cache: the current snapshot, the topics of interest and the refresh
/// timing.
#[derive(Debug)]
pub struct MetadataCache {
    snapshot: Arc<ClusterMetadata>,
    interest: BTreeSet<String>,
    all_topics: bool,
    max_age: Duration,
    min_interval: Duration,
    last_refresh: Option<Instant>,
    wanted: Option<Want>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Soon,
    Urgent,
}

impl MetadataCache {
    /// An empty cache.
    pub fn new(now: Instant, max_age: Duration, min_interval: Duration) -> MetadataCache {
        MetadataCache {
            snapshot: Arc::new(ClusterMetadata::empty(now)),
            interest: BTreeSet::new(),
            all_topics: false,
            max_age,
            min_interval,
            last_refresh: None,
            wanted: None,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<ClusterMetadata> {
        self.snapshot.clone()
    }

    /// Adds topics to those refreshed. Returns whether any was new (the caller should then
    /// refresh urgently).
    pub fn add_interest<'a>(&mut self, topics: impl IntoIterator<Item = &'a str>) -> bool {
        let mut added = false;
        for t in topics {
            if !self.interest.contains(t) {
                self.interest.insert(t.to_string());
                added = true;
            }
        }
        if added {
            self.wanted = Some(Want::Urgent);
        }
        added
    }

    /// Stops refreshing a topic.
    pub fn remove_interest(&mut self, topic: &str) {
        self.interest.remove(topic);
    }

    /// Refresh every topic of the cluster from now on.
    pub fn set_all_topics(&mut self, all: bool) {
        self.all_topics = all;
    }

    /// What the next request should ask for.
    pub fn selection(&self) -> TopicSelection {
        if self.all_topics {
            TopicSelection::All
        } else {
            TopicSelection::Some(self.interest.clone())
        }
    }

    /// Asks for a refresh: `urgent` ignores the minimum interval.
    pub fn request_refresh(&mut self, urgent: bool) {
        let w = if urgent { Want::Urgent } else { Want::Soon };
        self.wanted = Some(match self.wanted {
            Some(Want::Urgent) => Want::Urgent,
            _ => w,
        });
    }

    /// When the next refresh is due, or `None` if one is due now... never: always a time (the
    /// max-age refresh). A time at or before `now` means "refresh now".
    pub fn poll_timeout(&self) -> Instant {
        let Some(last) = self.last_refresh else {
            return self.snapshot.fetched_at;
        };
        let by_age = last + self.max_age;
        match self.wanted {
            Some(Want::Urgent) => last.min(by_age),
            Some(Want::Soon) => (last + self.min_interval).min(by_age),
            None => by_age,
        }
    }

    /// Whether a refresh should start now.
    pub fn needs_refresh(&self, now: Instant) -> bool {
        self.poll_timeout() <= now
    }

    /// A response arrived: replace the snapshot. Topics of interest the broker does not know keep
    /// their error in the snapshot (so waiters can report `UNKNOWN_TOPIC_OR_PARTITION`).
    pub fn apply_response(
        &mut self,
        now: Instant,
        resp: &MetadataResponse,
    ) -> Arc<ClusterMetadata> {
        let mut snap = ClusterMetadata::from_response(resp, now);
        // A response to a request for some topics must not forget others we know (a narrower
        // request by another caller): keep the topics the response did not mention.
        if !self.all_topics {
            for (name, t) in &self.snapshot.topics {
                if self.interest.contains(name) && !snap.topics.contains_key(name) {
                    snap.topics.insert(name.clone(), t.clone());
                }
            }
        }
        self.snapshot = Arc::new(snap);
        self.last_refresh = Some(now);
        self.wanted = None;
        // Topics with leaderless partitions should be looked at again soon.
        if self
            .snapshot
            .topics
            .values()
            .any(|t| t.error.is_some() || t.partitions.iter().any(|p| p.leader < 0))
        {
            self.wanted = Some(Want::Soon);
        }
        self.snapshot.clone()
    }

    /// A refresh failed; try again after the minimum interval.
    pub fn refresh_failed(&mut self, now: Instant) {
        self.last_refresh = Some(now);
        self.wanted = Some(Want::Soon);
    }

    /// Applies a KIP-951 leader hint to the snapshot.
    pub fn apply_leader_hint(&mut self, topic: &str, partition: i32, leader: i32, epoch: i32) {
        let snap = Arc::make_mut(&mut self.snapshot);
        snap.apply_leader_hint(topic, partition, leader, epoch);
    }

    /// Applies a KIP-951 node endpoint to the snapshot.
    pub fn apply_node_endpoint(&mut self, broker: BrokerInfo) {
        if self.snapshot.brokers.get(&broker.id) != Some(&broker) {
            Arc::make_mut(&mut self.snapshot).apply_node_endpoint(broker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_wire::codec::KString;
    use kafka_wire::messages::metadata::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };

    fn resp(leader: i32, epoch: i32) -> MetadataResponse {
        MetadataResponse {
            brokers: vec![
                MetadataResponseBroker {
                    node_id: 1,
                    host: KString::from("h1"),
                    port: 9092,
                    ..Default::default()
                },
                MetadataResponseBroker {
                    node_id: 2,
                    host: KString::from("h2"),
                    port: 9092,
                    ..Default::default()
                },
            ],
            controller_id: 1,
            topics: vec![MetadataResponseTopic {
                name: Some(KString::from("t")),
                topic_id: Uuid::from_u128(7),
                partitions: (0..3)
                    .rev()
                    .map(|p| MetadataResponsePartition {
                        partition_index: p,
                        leader_id: leader,
                        leader_epoch: epoch,
                        replica_nodes: vec![1, 2],
                        isr_nodes: vec![1, 2],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_from_response_sorts_partitions_and_finds_leaders() {
        let now = Instant::now();
        let m = ClusterMetadata::from_response(&resp(2, 5), now);
        let t = m.topic("t").unwrap();
        assert_eq!(t.partition_count(), 3);
        assert_eq!(t.partition(2).unwrap().partition, 2);
        assert_eq!(m.leader("t", 1).unwrap().addr(), "h2:9092");
        assert_eq!(m.topic_name(Uuid::from_u128(7)), Some("t"));
        assert!(m.leader("t", 9).is_none());
    }

    #[test]
    fn leader_hints_only_move_forward() {
        let now = Instant::now();
        let mut m = ClusterMetadata::from_response(&resp(1, 5), now);
        assert!(!m.apply_leader_hint("t", 0, 2, 4), "older epoch ignored");
        assert_eq!(m.leader("t", 0).unwrap().id, 1);
        assert!(m.apply_leader_hint("t", 0, 2, 6));
        assert_eq!(m.leader("t", 0).unwrap().id, 2);
        assert_eq!(
            m.leader("t", 1).unwrap().id,
            1,
            "other partitions untouched"
        );
        assert!(
            !m.apply_leader_hint("t", 0, 2, 6),
            "same hint twice is no change"
        );
        assert!(!m.apply_leader_hint("nope", 0, 2, 9));
    }

    #[test]
    fn refresh_timing_respects_max_age_min_interval_and_urgency() {
        let t0 = Instant::now();
        let mut c = MetadataCache::new(t0, Duration::from_secs(300), Duration::from_secs(5));
        assert!(c.needs_refresh(t0), "nothing fetched yet");
        c.apply_response(t0, &resp(1, 1));
        assert!(!c.needs_refresh(t0 + Duration::from_secs(10)));
        assert!(c.needs_refresh(t0 + Duration::from_secs(300)), "max age");

        c.request_refresh(false);
        assert!(
            !c.needs_refresh(t0 + Duration::from_secs(4)),
            "min interval holds"
        );
        assert!(c.needs_refresh(t0 + Duration::from_secs(5)));

        c.request_refresh(true);
        assert!(
            c.needs_refresh(t0 + Duration::from_millis(1)),
            "urgent ignores it"
        );
        c.request_refresh(false);
        assert!(
            c.needs_refresh(t0 + Duration::from_millis(1)),
            "a soft request does not downgrade an urgent one"
        );

        let t1 = t0 + Duration::from_secs(1);
        c.apply_response(t1, &resp(1, 1));
        assert!(!c.needs_refresh(t1 + Duration::from_secs(1)));
        assert!(c.add_interest(["new"]));
        assert!(c.needs_refresh(t1), "a new topic is urgent");
        assert!(!c.add_interest(["new"]));
    }

    #[test]
    fn leaderless_partitions_ask_for_another_look() {
        let t0 = Instant::now();
        let mut c = MetadataCache::new(t0, Duration::from_secs(300), Duration::from_secs(5));
        c.apply_response(t0, &resp(-1, 1));
        assert!(c.needs_refresh(t0 + Duration::from_secs(5)));
        assert!(!c.needs_refresh(t0 + Duration::from_secs(4)));
    }

    #[test]
    fn narrower_response_keeps_other_interesting_topics() {
        let t0 = Instant::now();
        let mut c = MetadataCache::new(t0, Duration::from_secs(300), Duration::from_secs(5));
        c.add_interest(["t", "u"]);
        c.apply_response(t0, &resp(1, 1));
        let mut r = resp(1, 1);
        r.topics[0].name = Some(KString::from("u"));
        let snap = c.apply_response(t0, &r);
        assert!(snap.topic("t").is_some());
        assert!(snap.topic("u").is_some());
    }
}
