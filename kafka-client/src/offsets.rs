//! Looking up offsets by position or time: ListOffsets, sent to each partition's leader.
//!
//! Used by the consumer (to resolve `auto.offset.reset` and seeks to `Earliest`, `Latest` or a
//! timestamp) and by admin (`listOffsets` / `offsetsForTimes`).
//!
//! Requests are grouped per leader and sent on the leader's [`Purpose::Fetch`] connection.
//! Partitions that fail with a leadership error (the metadata was stale) are retried after a
//! metadata refresh until the request timeout; any other error fails that partition.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_wire::messages::list_offsets::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_wire::messages::ListOffsetsRequest;
use kafka_wire::{ErrorCode, KString};

use crate::client::{Client, Purpose};
use crate::config::IsolationLevel;
use crate::error::{BrokerError, Error, Result};
use crate::proto::is_leader_error;
use crate::types::{Offset, TopicPartition};

/// The answer of ListOffsets for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset found. For a timestamp lookup with no record at or after the timestamp: -1.
    pub offset: i64,
    /// The timestamp of the record at `offset` (timestamp lookups), otherwise -1.
    pub timestamp: i64,
    /// The leader epoch of that record, -1 if unknown.
    pub leader_epoch: i32,
}

/// The wire `timestamp` of a lookup: -2 earliest, -1 latest, else a time in ms.
pub(crate) fn wire_timestamp(offset: Offset) -> Result<i64> {
    match offset {
        Offset::Earliest => Ok(-2),
        Offset::Latest => Ok(-1),
        Offset::Timestamp(ts) if ts >= 0 => Ok(ts),
        Offset::Timestamp(ts) => Err(Error::Misuse(format!(
            "a timestamp lookup needs a time >= 0, got {ts}"
        ))),
        Offset::At(o) => Err(Error::Misuse(format!(
            "ListOffsets looks up Earliest, Latest or a Timestamp, not the offset {o}"
        ))),
    }
}

/// Looks up offsets: `Earliest` (-2), `Latest` (-1) or the first offset at or after a
/// `Timestamp` (ms) for each partition. `At(_)` is API misuse.
///
/// Fails as a whole if any partition fails (after retrying leadership errors until the request
/// timeout).
pub async fn list_offsets(
    client: &Client,
    requests: &[(TopicPartition, Offset)],
    isolation: IsolationLevel,
) -> Result<HashMap<TopicPartition, ListedOffset>> {
    let results = list_offsets_each(client, requests, isolation).await?;
    let mut out = HashMap::with_capacity(results.len());
    for (tp, r) in results {
        out.insert(tp, r?);
    }
    Ok(out)
}

/// Like [`list_offsets`], with one result per partition. Fails as a whole only for misuse.
pub(crate) async fn list_offsets_each(
    client: &Client,
    requests: &[(TopicPartition, Offset)],
    isolation: IsolationLevel,
) -> Result<HashMap<TopicPartition, Result<ListedOffset>>> {
    let mut pending: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for (tp, o) in requests {
        pending.insert(tp.clone(), wire_timestamp(*o)?);
    }
    let timeout = client.config().request_timeout;
    let deadline = Instant::now() + timeout;
    let mut out: HashMap<TopicPartition, Result<ListedOffset>> = HashMap::new();
    let mut delay = Duration::from_millis(50);
    loop {
        // Partitions whose leader we do not know yet, with the last error seen for them.
        let mut retry: BTreeMap<TopicPartition, (i64, Error)> = BTreeMap::new();
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, ts) in std::mem::take(&mut pending) {
            let leader = match client.topic(&tp.topic).await {
                Ok(t) => match t.partition(tp.partition) {
                    Some(p) if p.leader >= 0 => Ok(p.leader),
                    Some(_) => Err(BrokerError::new(ErrorCode::LEADER_NOT_AVAILABLE)
                        .with_partition(&tp.topic, tp.partition)
                        .into()),
                    None => Err(Error::Broker(
                        BrokerError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_partition(&tp.topic, tp.partition),
                    )),
                },
                Err(e) => Err(e),
            };
            match leader {
                Ok(l) => by_leader.entry(l).or_default().push((tp, ts)),
                Err(e) if e.is_retriable() => {
                    retry.insert(tp, (ts, e));
                }
                Err(e) => {
                    out.insert(tp, Err(e));
                }
            }
        }
        for (leader, parts) in by_leader {
            let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
            for (tp, ts) in &parts {
                topics
                    .entry(tp.topic.as_str())
                    .or_default()
                    .push(ListOffsetsPartition {
                        partition_index: tp.partition,
                        timestamp: *ts,
                        ..Default::default()
                    });
            }
            let req = ListOffsetsRequest {
                replica_id: -1,
                isolation_level: isolation.wire_value(),
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| ListOffsetsTopic {
                        name: KString::from(name),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                timeout_ms,
                ..Default::default()
            };
            let resp = client.send(leader, Purpose::Fetch, move |_v| req).await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    client.request_metadata_refresh();
                    for (tp, ts) in parts {
                        if e.is_retriable() {
                            retry.insert(tp, (ts, e.clone()));
                        } else {
                            out.insert(tp, Err(e.clone()));
                        }
                    }
                    continue;
                }
            };
            let mut answered: HashMap<(&str, i32), _> = HashMap::new();
            for t in &resp.topics {
                for p in &t.partitions {
                    answered.insert((t.name.as_str(), p.partition_index), p);
                }
            }
            for (tp, ts) in parts {
                let found = answered
                    .get(&(tp.topic.as_str(), tp.partition))
                    .map(|p| (p.error_code, p.offset, p.timestamp, p.leader_epoch));
                let Some((error_code, offset, timestamp, leader_epoch)) = found else {
                    let e = Error::Protocol {
                        peer: crate::error::Peer::Unknown,
                        kind: crate::error::ProtocolErrorKind::Invalid(format!(
                            "ListOffsets response from broker {leader} lacks {tp}"
                        )),
                    };
                    out.insert(tp, Err(e));
                    continue;
                };
                let code = ErrorCode(error_code);
                if code == ErrorCode::NONE {
                    out.insert(
                        tp,
                        Ok(ListedOffset {
                            offset,
                            timestamp,
                            leader_epoch,
                        }),
                    );
                    continue;
                }
                let e =
                    Error::Broker(BrokerError::new(code).with_partition(&tp.topic, tp.partition));
                if is_leader_error(code) || code.is_retriable() {
                    client.request_metadata_refresh();
                    retry.insert(tp, (ts, e));
                } else {
                    out.insert(tp, Err(e));
                }
            }
        }
        if retry.is_empty() {
            return Ok(out);
        }
        if Instant::now() + delay >= deadline {
            for (tp, (_, e)) in retry {
                out.insert(tp, Err(e));
            }
            return Ok(out);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(1000));
        // Leadership moved: read the new leaders before asking again.
        let _ = client.refresh_metadata().await;
        pending = retry.into_iter().map(|(tp, (ts, _))| (tp, ts)).collect();
    }
}

/// One partition of an OffsetFetch answer. `topic` is empty when the broker named the topic by
/// id only (OffsetFetch v10+).
pub(crate) struct FetchedOffset {
    pub topic: String,
    pub topic_id: kafka_wire::codec::Uuid,
    pub partition: i32,
    /// -1: nothing committed.
    pub offset: i64,
}

/// An OffsetFetch of `group`'s committed offsets, stable offsets only (KIP-447, v7+), in the
/// shape `version` takes (v8+ groups the request): of `topics` (topic -> partitions), or of
/// every partition the group committed (`None`).
pub(crate) fn offset_fetch_request(
    version: i16,
    group: &str,
    topics: Option<&BTreeMap<&str, Vec<i32>>>,
) -> kafka_wire::messages::OffsetFetchRequest {
    use kafka_wire::messages::offset_fetch::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_wire::messages::OffsetFetchRequest;
    if version >= 8 {
        OffsetFetchRequest {
            groups: vec![OffsetFetchRequestGroup {
                group_id: KString::from(group),
                member_id: None,
                member_epoch: -1,
                topics: topics.map(|ts| {
                    ts.iter()
                        .map(|(t, ps)| OffsetFetchRequestTopics {
                            name: KString::from(*t),
                            partition_indexes: ps.clone(),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }],
            require_stable: true,
            ..Default::default()
        }
    } else {
        OffsetFetchRequest {
            group_id: KString::from(group),
            topics: topics.map(|ts| {
                ts.iter()
                    .map(|(t, ps)| OffsetFetchRequestTopic {
                        name: KString::from(*t),
                        partition_indexes: ps.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            require_stable: version >= 7,
            ..Default::default()
        }
    }
}

/// The partitions of an OffsetFetch answer, or its group error, or its first partition error.
/// `grouped`: the answer is in the v8+ shape (results per group).
pub(crate) fn offset_fetch_rows(
    resp: &kafka_wire::messages::OffsetFetchResponse,
    grouped: bool,
    group: &str,
) -> Result<Vec<FetchedOffset>> {
    // (row, error code)
    let mut rows: Vec<(FetchedOffset, i16)> = Vec::new();
    let group_code = if grouped {
        let Some(g) = resp.groups.first() else {
            return Err(Error::Broker(
                BrokerError::new(ErrorCode::UNKNOWN_SERVER_ERROR)
                    .with_group(group)
                    .with_message("OffsetFetch answered no group"),
            ));
        };
        for t in &g.topics {
            for p in &t.partitions {
                let row = FetchedOffset {
                    topic: t.name.to_string(),
                    topic_id: t.topic_id,
                    partition: p.partition_index,
                    offset: p.committed_offset,
                };
                rows.push((row, p.error_code));
            }
        }
        g.error_code
    } else {
        for t in &resp.topics {
            for p in &t.partitions {
                let row = FetchedOffset {
                    topic: t.name.to_string(),
                    topic_id: kafka_wire::codec::Uuid::ZERO,
                    partition: p.partition_index,
                    offset: p.committed_offset,
                };
                rows.push((row, p.error_code));
            }
        }
        resp.error_code
    };
    if group_code != 0 {
        return Err(Error::Broker(
            BrokerError::new(group_code).with_group(group),
        ));
    }
    if let Some((row, code)) = rows.iter().find(|(_, code)| *code != 0) {
        return Err(Error::Broker(
            BrokerError::new(*code)
                .with_group(group)
                .with_partition(row.topic.clone(), row.partition),
        ));
    }
    Ok(rows.into_iter().map(|(row, _)| row).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_timestamps() {
        assert_eq!(wire_timestamp(Offset::Earliest).unwrap(), -2);
        assert_eq!(wire_timestamp(Offset::Latest).unwrap(), -1);
        assert_eq!(wire_timestamp(Offset::Timestamp(1234)).unwrap(), 1234);
        assert!(matches!(
            wire_timestamp(Offset::At(5)),
            Err(Error::Misuse(_))
        ));
        assert!(matches!(
            wire_timestamp(Offset::Timestamp(-7)),
            Err(Error::Misuse(_))
        ));
    }
}
