//! The embedded consumer protocol formats: a big-endian `i16` version followed by a
//! `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` body of that version.
//!
//! As Java's `ConsumerProtocol` does, a version newer than we know is read as the newest we know
//! (later versions only append fields) and trailing bytes are ignored; a negative version or a
//! malformed body is a typed error.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_wire::codec::{Decode, Encode, KString};
use kafka_wire::messages::consumer_protocol_assignment as wa;
use kafka_wire::messages::consumer_protocol_subscription as ws;

use super::{Assignment, BalancerError, Subscription, TopicPartition};

/// The newest `ConsumerProtocolSubscription` version we read and write.
pub const SUBSCRIPTION_VERSION: i16 = 3;
/// The newest `ConsumerProtocolAssignment` version we read and write.
pub const ASSIGNMENT_VERSION: i16 = 3;

fn read_version(buf: &mut Bytes, newest: i16) -> Result<i16, BalancerError> {
    let v = kafka_wire::codec::get_i16(buf, "consumer protocol version")?;
    if v < 0 {
        return Err(BalancerError::UnsupportedVersion(v));
    }
    Ok(v.min(newest))
}

/// Groups partitions by topic, topics in first-appearance order.
fn group_by_topic(parts: &[TopicPartition]) -> Vec<(&str, Vec<i32>)> {
    let mut out: Vec<(&str, Vec<i32>)> = Vec::new();
    for tp in parts {
        match out.iter_mut().find(|(t, _)| *t == tp.topic) {
            Some((_, ps)) => ps.push(tp.partition),
            None => out.push((tp.topic.as_str(), vec![tp.partition])),
        }
    }
    out
}

fn flatten<'a>(groups: impl Iterator<Item = (&'a KString, &'a Vec<i32>)>) -> Vec<TopicPartition> {
    let mut out = Vec::new();
    for (t, ps) in groups {
        for &p in ps {
            out.push(TopicPartition::new(t.as_str(), p));
        }
    }
    out
}

impl Subscription {
    /// Encodes with a leading version (0..=3; higher is written as 3).
    pub fn encode(&self, version: i16) -> Result<Bytes, BalancerError> {
        if version < 0 {
            return Err(BalancerError::UnsupportedVersion(version));
        }
        let version = version.min(SUBSCRIPTION_VERSION);
        let msg = ws::ConsumerProtocolSubscription {
            topics: self
                .topics
                .iter()
                .map(|t| KString::from(t.as_str()))
                .collect(),
            user_data: self.user_data.clone(),
            owned_partitions: if version >= 1 {
                group_by_topic(&self.owned_partitions)
                    .into_iter()
                    .map(|(t, partitions)| ws::TopicPartition {
                        topic: KString::from(t),
                        partitions,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            generation_id: if version >= 2 { self.generation_id } else { -1 },
            rack_id: if version >= 3 {
                self.rack_id.as_deref().map(KString::from)
            } else {
                None
            },
        };
        let mut buf = BytesMut::with_capacity(2 + msg.encoded_len(version)?);
        buf.put_i16(version);
        msg.encode(&mut buf, version)?;
        Ok(buf.freeze())
    }

    /// Decodes any version; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Subscription, BalancerError> {
        let mut buf = Bytes::copy_from_slice(bytes);
        let version = read_version(&mut buf, SUBSCRIPTION_VERSION)?;
        let m = ws::ConsumerProtocolSubscription::decode(&mut buf, version)?;
        Ok(Subscription {
            topics: m.topics.iter().map(|t| t.as_str().to_string()).collect(),
            user_data: m.user_data,
            owned_partitions: flatten(
                m.owned_partitions
                    .iter()
                    .map(|tp| (&tp.topic, &tp.partitions)),
            ),
            generation_id: m.generation_id,
            rack_id: m.rack_id.map(|r| r.as_str().to_string()),
        })
    }
}

impl Assignment {
    /// Encodes with a leading version (0..=3; higher is written as 3).
    pub fn encode(&self, version: i16) -> Result<Bytes, BalancerError> {
        if version < 0 {
            return Err(BalancerError::UnsupportedVersion(version));
        }
        let version = version.min(ASSIGNMENT_VERSION);
        let msg = wa::ConsumerProtocolAssignment {
            assigned_partitions: group_by_topic(&self.partitions)
                .into_iter()
                .map(|(t, partitions)| wa::TopicPartition {
                    topic: KString::from(t),
                    partitions,
                })
                .collect(),
            user_data: self.user_data.clone(),
        };
        let mut buf = BytesMut::with_capacity(2 + msg.encoded_len(version)?);
        buf.put_i16(version);
        msg.encode(&mut buf, version)?;
        Ok(buf.freeze())
    }

    /// Decodes any version; never panics. An empty input is an empty assignment (what the
    /// coordinator sends a member that got nothing, as Java reads it).
    pub fn decode(bytes: &[u8]) -> Result<Assignment, BalancerError> {
        if bytes.is_empty() {
            return Ok(Assignment::default());
        }
        let mut buf = Bytes::copy_from_slice(bytes);
        let version = read_version(&mut buf, ASSIGNMENT_VERSION)?;
        let m = wa::ConsumerProtocolAssignment::decode(&mut buf, version)?;
        Ok(Assignment {
            partitions: flatten(
                m.assigned_partitions
                    .iter()
                    .map(|tp| (&tp.topic, &tp.partitions)),
            ),
            user_data: m.user_data,
        })
    }
}
