//! The version cap of a [`crate::proxy::FaultProxy`]: make a real Apache Kafka look, to a client,
//! like a broker with a smaller set of API versions, such as Redpanda.
//!
//! No container runtime exists on our machines, so a Redpanda broker cannot be run here. What a
//! client meets first in Redpanda is its version set; that part is emulated:
//!
//! * the broker's ApiVersions answer is cut down to the cap: each API's range becomes the overlap
//!   of the broker's and the cap's range, APIs outside the cap disappear, and the finalized and
//!   supported features are removed (Redpanda sends none, so a client falls back to the
//!   transaction protocol v1 and to whatever it does without `transaction.version`);
//! * an ApiVersions request above the cap's ApiVersions range is answered by the proxy itself with
//!   UNSUPPORTED_VERSION in the v0 format, listing the whole cap (Redpanda lists its whole table
//!   there; Apache Kafka lists only ApiVersions);
//! * any other request at a version outside the cap, or of an API the cap lacks, closes the
//!   connection without an answer, as Redpanda does (`kafka_api_version_not_supported_exception`
//!   in its request dispatch, which shuts the connection's input).
//!
//! What is not emulated: Redpanda's own semantics behind those versions (its transaction
//! coordinator, its group coordinator, its error codes in corner cases).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::{Decodable, Encodable};

/// The ApiVersions API key.
const API_VERSIONS: i16 = 18;
/// UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// The Kafka APIs Redpanda v24.3.2 advertises, as `(api key, min version, max version)`,
/// sorted by key.
///
/// Read from Redpanda's sources at tag v24.3.2 (commit 32a9dce3): the handler list
/// `src/v/kafka/server/handlers/handlers.h` and each handler's declared version range in
/// `src/v/kafka/server/handlers/<api>.h`. InitProducerId is left out by Redpanda when idempotence
/// is off, and the four transaction APIs when transactions are off; both are on by default.
pub const REDPANDA_24_3_APIS: &[(i16, i16, i16)] = &[
    (0, 0, 7),  // Produce
    (1, 4, 11), // Fetch
    (2, 0, 4),  // ListOffsets
    (3, 0, 8),  // Metadata
    (8, 1, 8),  // OffsetCommit
    (9, 1, 7),  // OffsetFetch
    (10, 0, 3), // FindCoordinator
    (11, 0, 6), // JoinGroup
    (12, 0, 4), // Heartbeat
    (13, 0, 4), // LeaveGroup
    (14, 0, 4), // SyncGroup
    (15, 0, 5), // DescribeGroups
    (16, 0, 4), // ListGroups
    (17, 0, 1), // SaslHandshake
    (18, 0, 3), // ApiVersions
    (19, 0, 6), // CreateTopics
    (20, 0, 5), // DeleteTopics
    (21, 0, 2), // DeleteRecords
    (22, 0, 3), // InitProducerId
    (23, 0, 4), // OffsetForLeaderEpoch
    (24, 0, 3), // AddPartitionsToTxn
    (25, 0, 1), // AddOffsetsToTxn
    (26, 0, 3), // EndTxn
    (28, 0, 3), // TxnOffsetCommit
    (29, 0, 2), // DescribeAcls
    (30, 0, 2), // CreateAcls
    (31, 0, 2), // DeleteAcls
    (32, 0, 4), // DescribeConfigs
    (33, 0, 2), // AlterConfigs
    (35, 0, 2), // DescribeLogDirs
    (36, 0, 2), // SaslAuthenticate
    (37, 0, 3), // CreatePartitions
    (42, 0, 2), // DeleteGroups
    (44, 0, 1), // IncrementalAlterConfigs
    (45, 0, 0), // AlterPartitionReassignments
    (46, 0, 0), // ListPartitionReassignments
    (47, 0, 0), // OffsetDelete
    (48, 0, 1), // DescribeClientQuotas
    (49, 0, 1), // AlterClientQuotas
    (61, 0, 0), // DescribeProducers
    (65, 0, 0), // DescribeTransactions
    (66, 0, 0), // ListTransactions
];

/// A set of API version ranges a proxy presents instead of its broker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCap {
    name: String,
    apis: Vec<(i16, i16, i16)>,
}

/// What the proxy does with one request under a cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it to the broker.
    Forward,
    /// Forward it; it is an ApiVersions request at this version whose answer is to be capped.
    ForwardApiVersions { correlation_id: i32, version: i16 },
    /// Answer it from the proxy with this frame (length prefix included).
    Answer(Bytes),
    /// Close the connection without an answer.
    Close(String),
}

impl VersionCap {
    /// A cap named `name` (for logs) with these `(api key, min, max)` ranges.
    pub fn new(name: impl Into<String>, apis: &[(i16, i16, i16)]) -> VersionCap {
        VersionCap {
            name: name.into(),
            apis: apis.to_vec(),
        }
    }

    /// Redpanda v24.3's version set ([`REDPANDA_24_3_APIS`]).
    pub fn redpanda() -> VersionCap {
        VersionCap::new("redpanda-24.3", REDPANDA_24_3_APIS)
    }

    /// The cap's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cap's range for `api_key`.
    pub fn range(&self, api_key: i16) -> Option<(i16, i16)> {
        self.apis
            .iter()
            .find(|(k, _, _)| *k == api_key)
            .map(|&(_, lo, hi)| (lo, hi))
    }

    /// Decides what to do with a request frame's payload (the bytes after the length prefix).
    pub fn verdict(&self, payload: &[u8]) -> Verdict {
        if payload.len() < 8 {
            return Verdict::Close(format!("a request of {} bytes", payload.len()));
        }
        let api_key = i16::from_be_bytes([payload[0], payload[1]]);
        let version = i16::from_be_bytes([payload[2], payload[3]]);
        let correlation_id = i32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        let Some((lo, hi)) = self.range(api_key) else {
            return Verdict::Close(format!("API {api_key} is not offered by {}", self.name));
        };
        if api_key == API_VERSIONS {
            if version > hi {
                return Verdict::Answer(self.unsupported_api_versions(correlation_id));
            }
            return Verdict::ForwardApiVersions {
                correlation_id,
                version,
            };
        }
        if version < lo || version > hi {
            return Verdict::Close(format!(
                "API {api_key} v{version} is outside {}'s v{lo}-v{hi}",
                self.name
            ));
        }
        Verdict::Forward
    }

    /// The frame answering an ApiVersions request above the cap: UNSUPPORTED_VERSION in the v0
    /// format with the whole cap, under a v0 response header.
    pub fn unsupported_api_versions(&self, correlation_id: i32) -> Bytes {
        let resp = ApiVersionsResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .with_api_keys(
                self.apis
                    .iter()
                    .map(|&(k, lo, hi)| api(k, lo, hi))
                    .collect(),
            );
        frame(correlation_id, &resp, 0)
    }

    /// Rewrites a broker's ApiVersions response frame (length prefix included) answering a
    /// request at `version`: every range becomes its overlap with the cap, APIs outside the cap
    /// go, and so do the features. An answer that carries an error, or that does not decode, is
    /// passed on unchanged.
    pub fn rewrite_api_versions(&self, frame_bytes: Bytes, version: i16) -> Bytes {
        if frame_bytes.len() < 8 {
            return frame_bytes;
        }
        let correlation_id = i32::from_be_bytes([
            frame_bytes[4],
            frame_bytes[5],
            frame_bytes[6],
            frame_bytes[7],
        ]);
        // The ApiVersions response header is always v0: the correlation id alone.
        let mut body = frame_bytes.slice(8..);
        let Ok(resp) = ApiVersionsResponse::decode(&mut body, version) else {
            return frame_bytes;
        };
        if resp.error_code != 0 {
            return frame_bytes;
        }
        let api_keys = self
            .apis
            .iter()
            .filter_map(|&(k, lo, hi)| {
                let theirs = resp.api_keys.iter().find(|a| a.api_key == k)?;
                let (lo, hi) = (lo.max(theirs.min_version), hi.min(theirs.max_version));
                (lo <= hi).then(|| api(k, lo, hi))
            })
            .collect();
        let capped = ApiVersionsResponse::default()
            .with_error_code(0)
            .with_api_keys(api_keys)
            .with_throttle_time_ms(resp.throttle_time_ms)
            .with_finalized_features_epoch(-1);
        frame(correlation_id, &capped, version)
    }
}

fn api(k: i16, lo: i16, hi: i16) -> ApiVersion {
    ApiVersion::default()
        .with_api_key(k)
        .with_min_version(lo)
        .with_max_version(hi)
}

fn frame(correlation_id: i32, resp: &ApiVersionsResponse, version: i16) -> Bytes {
    let mut body = BytesMut::new();
    // Encoding our own small, well-formed message at a version the type supports cannot fail.
    resp.encode(&mut body, version)
        .expect("an ApiVersions response encodes");
    let mut out = BytesMut::with_capacity(8 + body.len());
    out.put_i32((4 + body.len()) as i32);
    out.put_i32(correlation_id);
    out.put_slice(&body);
    out.freeze()
}

/// Takes the next whole frame (length prefix included) off the front of `buf`. `Err` when the
/// length is negative or above `max`.
pub fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Ok(len) = usize::try_from(len) else {
        return Err(format!("negative frame length {len}"));
    };
    if len > max {
        return Err(format!("frame of {len} bytes (limit {max})"));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(4 + len).freeze()))
}

/// The correlation id of a response frame (length prefix included).
pub fn response_correlation_id(frame: &[u8]) -> Option<i32> {
    let mut b = frame.get(4..8)?;
    Some(b.get_i32())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(api_key: i16, version: i16, corr: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&api_key.to_be_bytes());
        v.extend_from_slice(&version.to_be_bytes());
        v.extend_from_slice(&corr.to_be_bytes());
        v.extend_from_slice(&[0, 0]); // null-ish client id, not read
        v
    }

    #[test]
    fn verdicts_follow_the_cap() {
        let cap = VersionCap::redpanda();
        assert_eq!(cap.verdict(&request(0, 7, 1)), Verdict::Forward);
        assert!(matches!(cap.verdict(&request(0, 8, 1)), Verdict::Close(_)));
        assert!(matches!(cap.verdict(&request(1, 3, 1)), Verdict::Close(_)));
        // KIP-848 ConsumerGroupHeartbeat: not offered.
        assert!(matches!(cap.verdict(&request(68, 0, 1)), Verdict::Close(_)));
        assert_eq!(
            cap.verdict(&request(18, 3, 9)),
            Verdict::ForwardApiVersions {
                correlation_id: 9,
                version: 3
            }
        );
        assert!(matches!(cap.verdict(&[0, 18, 0]), Verdict::Close(_)));
    }

    #[test]
    fn api_versions_above_the_cap_gets_a_v0_unsupported_answer_with_the_whole_table() {
        let cap = VersionCap::redpanda();
        let Verdict::Answer(frame) = cap.verdict(&request(18, 5, 42)) else {
            panic!("expected an answer");
        };
        assert_eq!(response_correlation_id(&frame), Some(42));
        let len = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len + 4, frame.len());
        let resp = ApiVersionsResponse::decode(&mut frame.slice(8..), 0).unwrap();
        assert_eq!(resp.error_code, UNSUPPORTED_VERSION);
        assert_eq!(resp.api_keys.len(), REDPANDA_24_3_APIS.len());
        let av = resp.api_keys.iter().find(|a| a.api_key == 18).unwrap();
        assert_eq!((av.min_version, av.max_version), (0, 3));
    }

    #[test]
    fn rewrite_intersects_ranges_and_drops_features() {
        let cap = VersionCap::new("t", &[(0, 0, 7), (1, 4, 11), (18, 0, 3), (22, 0, 3)]);
        let broker = ApiVersionsResponse::default()
            .with_api_keys(vec![
                api(0, 3, 13),
                api(1, 4, 18),
                api(18, 0, 4),
                api(68, 0, 1),
            ])
            .with_finalized_features_epoch(7)
            .with_finalized_features(vec![Default::default()]);
        for version in [0, 3] {
            let out = cap.rewrite_api_versions(frame(5, &broker, version), version);
            assert_eq!(response_correlation_id(&out), Some(5));
            let resp = ApiVersionsResponse::decode(&mut out.slice(8..), version).unwrap();
            let got: Vec<_> = resp
                .api_keys
                .iter()
                .map(|a| (a.api_key, a.min_version, a.max_version))
                .collect();
            // Produce 3-7 (the broker's minimum wins), Fetch 4-11, ApiVersions 0-3; 22 is not
            // the broker's, 68 is not the cap's.
            assert_eq!(got, vec![(0, 3, 7), (1, 4, 11), (18, 0, 3)], "v{version}");
            assert!(resp.finalized_features.is_empty());
        }
        // Garbage passes through unchanged.
        let junk = Bytes::from_static(&[0, 0, 0, 6, 0, 0, 0, 1, 0xff, 0xff]);
        assert_eq!(cap.rewrite_api_versions(junk.clone(), 3), junk);
    }

    #[test]
    fn frames_are_split_and_bounded() {
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 7, 8, 0, 0][..]);
        assert_eq!(
            take_frame(&mut buf, 100).unwrap().unwrap().as_ref(),
            &[0, 0, 0, 2, 7, 8]
        );
        assert_eq!(take_frame(&mut buf, 100).unwrap(), None);
        let mut buf = BytesMut::from(&[0xff, 0, 0, 0][..]);
        assert!(take_frame(&mut buf, 100).is_err());
        let mut buf = BytesMut::from(&[0, 0, 1, 0][..]);
        assert!(take_frame(&mut buf, 100).is_err());
    }
}
