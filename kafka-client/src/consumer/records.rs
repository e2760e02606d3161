//! Turning a partition's fetched bytes into [`ConsumerRecord`]s: records below the fetch offset
//! are skipped (a batch may start earlier), control records are never handed out, and with
//! read_committed the records of aborted transactions are dropped, the way Java's
//! `CompletedFetch` does it: the response lists aborted transactions (producer id, first offset);
//! a producer's transactional batches are dropped from that first offset until its ABORT marker.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use kafka_wire::messages::fetch::AbortedTransaction;
use kafka_wire::records::{ControlRecordType, ReadOptions, RecordBatches};
use kafka_wire::ErrorCode;

use super::ConsumerRecord;
use crate::config::IsolationLevel;
use crate::error::{BrokerError, Error};
use crate::types::{Header, TimestampType};

/// The records of one partition's fetch, decoded.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// Records to hand out, in offset order.
    pub records: Vec<ConsumerRecord>,
    /// The offset to fetch next (after the last whole batch read).
    pub next_offset: i64,
    /// A corrupt batch stopped decoding here.
    pub error: Option<Error>,
}

/// Decodes `bytes` fetched from `fetch_offset`.
pub(crate) fn decode(
    topic: &Arc<str>,
    partition: i32,
    fetch_offset: i64,
    bytes: Bytes,
    aborted: Option<&[AbortedTransaction]>,
    isolation: IsolationLevel,
    options: &ReadOptions,
) -> Decoded {
    let read_committed = isolation == IsolationLevel::ReadCommitted;
    // Aborted transactions by first offset, consumed as batches pass them.
    let mut aborted_queue: BTreeSet<(i64, i64)> = aborted
        .unwrap_or_default()
        .iter()
        .map(|a| (a.first_offset, a.producer_id))
        .collect();
    let mut aborting: HashSet<i64> = HashSet::new();
    let mut out = Decoded {
        records: Vec::new(),
        next_offset: fetch_offset,
        error: None,
    };
    let corrupt = |offset: i64, what: String| {
        Error::Broker(
            BrokerError::new(ErrorCode::CORRUPT_MESSAGE)
                .with_partition(topic.to_string(), partition)
                .with_offset(offset)
                .with_message(what),
        )
    };
    for batch in RecordBatches::new(bytes) {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                out.error = Some(corrupt(out.next_offset, e.to_string()));
                return out;
            }
        };
        let next = batch.next_offset();
        if next <= fetch_offset {
            out.next_offset = out.next_offset.max(next);
            continue;
        }
        if read_committed && batch.is_transactional() {
            while let Some(&(first, pid)) = aborted_queue.first() {
                if first > batch.last_offset() {
                    break;
                }
                aborted_queue.pop_first();
                aborting.insert(pid);
            }
            if batch.is_control() {
                match batch.control_record(options) {
                    Ok(Some(c)) if c.kind == ControlRecordType::ABORT => {
                        aborting.remove(&batch.producer_id());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        out.error = Some(corrupt(batch.base_offset(), e.to_string()));
                        return out;
                    }
                }
                out.next_offset = next;
                continue;
            }
            if aborting.contains(&batch.producer_id()) {
                out.next_offset = next;
                continue;
            }
        }
        if batch.is_control() {
            // Transaction markers and other control records are never handed out.
            out.next_offset = next;
            continue;
        }
        let records = match batch.records(options) {
            Ok(r) => r,
            Err(e) => {
                out.error = Some(corrupt(batch.base_offset(), e.to_string()));
                return out;
            }
        };
        let timestamp_type = match batch.timestamp_type() {
            kafka_wire::records::TimestampType::CreateTime => TimestampType::CreateTime,
            kafka_wire::records::TimestampType::LogAppendTime => TimestampType::LogAppendTime,
        };
        let epoch = batch.partition_leader_epoch();
        let leader_epoch = (epoch >= 0).then_some(epoch);
        let mut batch_records = Vec::new();
        for r in records {
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    // Hand out what came before the damage; the error follows them.
                    out.records.extend(batch_records);
                    out.error = Some(corrupt(batch.base_offset(), e.to_string()));
                    return out;
                }
            };
            if r.offset < fetch_offset {
                continue;
            }
            batch_records.push(ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .map(|h| Header {
                        key: String::from_utf8_lossy(&h.key).into_owned(),
                        value: h.value,
                    })
                    .collect(),
                leader_epoch,
            });
        }
        out.records.extend(batch_records);
        out.next_offset = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_wire::records::{end_txn_marker_batch, BatchBuilder, BatchOptions};
    use kafka_wire::Codec;

    fn data_batch(base: i64, n: i64, pid: i64, txn: bool, codec: Codec) -> Bytes {
        let mut b = BatchBuilder::new(BatchOptions {
            base_offset: base,
            producer_id: pid,
            producer_epoch: if pid >= 0 { 0 } else { -1 },
            base_sequence: if pid >= 0 { 0 } else { -1 },
            transactional: txn,
            compression: codec,
            ..Default::default()
        });
        for i in 0..n {
            let v = format!("v{}", base + i);
            b.append(
                1000 + base + i,
                Some(b"k"),
                Some(v.as_bytes()),
                &[("h", Some(b"x"))],
            )
            .unwrap();
        }
        b.finish().unwrap()
    }

    fn marker(base: i64, pid: i64, kind: ControlRecordType) -> Bytes {
        let opts = BatchOptions {
            base_offset: base,
            producer_id: pid,
            producer_epoch: 0,
            ..Default::default()
        };
        end_txn_marker_batch(&opts, 5000, kind, 1).unwrap()
    }

    fn concat(parts: &[Bytes]) -> Bytes {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(p);
        }
        Bytes::from(v)
    }

    fn offsets(d: &Decoded) -> Vec<i64> {
        d.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn skips_records_below_the_fetch_offset() {
        let bytes = concat(&[
            data_batch(0, 5, -1, false, Codec::Lz4),
            data_batch(5, 5, -1, false, Codec::None),
        ]);
        let topic: Arc<str> = Arc::from("t");
        let d = decode(
            &topic,
            0,
            3,
            bytes,
            None,
            IsolationLevel::ReadUncommitted,
            &ReadOptions::default(),
        );
        assert_eq!(offsets(&d), vec![3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(d.next_offset, 10);
        assert!(d.error.is_none());
        let r = &d.records[0];
        assert_eq!(r.value.as_deref(), Some(&b"v3"[..]));
        assert_eq!(r.timestamp, 1003);
        assert_eq!(r.headers, vec![Header::new("h", Some(&b"x"[..]))]);
    }

    /// pid 1 commits 0..3, pid 2 aborts 3..6 (interleaved with pid 1's second txn 6..8), then
    /// markers: abort(pid 2) at 8, commit(pid 1) at 9.
    fn txn_log() -> (Bytes, Vec<AbortedTransaction>) {
        let bytes = concat(&[
            data_batch(0, 3, 1, true, Codec::None),
            marker(3, 1, ControlRecordType::COMMIT),
            data_batch(4, 3, 2, true, Codec::Gzip),
            data_batch(7, 2, 1, true, Codec::None),
            marker(9, 2, ControlRecordType::ABORT),
            data_batch(10, 1, 2, true, Codec::None),
            marker(11, 1, ControlRecordType::COMMIT),
            marker(12, 2, ControlRecordType::COMMIT),
            data_batch(13, 2, -1, false, Codec::None),
        ]);
        let aborted = vec![AbortedTransaction {
            producer_id: 2,
            first_offset: 4,
            ..Default::default()
        }];
        (bytes, aborted)
    }

    #[test]
    fn read_committed_drops_aborted_and_control_records() {
        let (bytes, aborted) = txn_log();
        let topic: Arc<str> = Arc::from("t");
        let d = decode(
            &topic,
            0,
            0,
            bytes,
            Some(&aborted),
            IsolationLevel::ReadCommitted,
            &ReadOptions::default(),
        );
        // 4..7 aborted; 10 is pid 2's next (committed) transaction; markers 3, 9, 11, 12 hidden.
        assert_eq!(offsets(&d), vec![0, 1, 2, 7, 8, 10, 13, 14]);
        assert_eq!(d.next_offset, 15);
    }

    #[test]
    fn read_uncommitted_shows_everything_but_control_records() {
        let (bytes, aborted) = txn_log();
        let topic: Arc<str> = Arc::from("t");
        let d = decode(
            &topic,
            0,
            0,
            bytes,
            Some(&aborted),
            IsolationLevel::ReadUncommitted,
            &ReadOptions::default(),
        );
        assert_eq!(offsets(&d), vec![0, 1, 2, 4, 5, 6, 7, 8, 10, 13, 14]);
    }

    #[test]
    fn corrupt_batch_is_a_typed_error_after_the_good_records() {
        let good = data_batch(0, 2, -1, false, Codec::None);
        let mut bad = data_batch(2, 2, -1, false, Codec::None).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let bytes = concat(&[good, Bytes::from(bad)]);
        let topic: Arc<str> = Arc::from("t");
        let d = decode(
            &topic,
            4,
            0,
            bytes,
            None,
            IsolationLevel::ReadUncommitted,
            &ReadOptions::default(),
        );
        assert_eq!(offsets(&d), vec![0, 1]);
        assert_eq!(d.next_offset, 2);
        let e = d.error.expect("crc error");
        assert_eq!(e.broker_code(), Some(ErrorCode::CORRUPT_MESSAGE));
        assert!(e.to_string().contains("t-4"), "{e}");
    }
}
