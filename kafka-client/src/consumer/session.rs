//! KIP-227 incremental fetch sessions: the sans-IO state of one broker's session.
//!
//! A *full* fetch lists every partition wanted and (with epoch 0) asks the broker to create a
//! session. Once the broker answers with a session id, later fetches are *incremental*: they carry
//! only the partitions that are new or whose fetch parameters changed, and name the partitions no
//! longer wanted in `forgotten_topics_data`; the broker remembers the rest. Each successful
//! response moves the epoch on. `FETCH_SESSION_ID_NOT_FOUND` / `INVALID_FETCH_SESSION_EPOCH`, or
//! any failed request, drop the session: the next fetch is full again.

use std::collections::BTreeMap;

use kafka_wire::messages::fetch::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_wire::{ErrorCode, KString, Uuid};

use crate::types::TopicPartition;

/// Session id 0: no session.
pub const INVALID_SESSION_ID: i32 = 0;
/// Epoch 0 asks the broker to create a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// Epoch -1: a sessionless (or session-closing) fetch.
pub const FINAL_EPOCH: i32 = -1;

/// What we ask of one partition in a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchTarget {
    /// The topic id (needed at Fetch v13+).
    pub topic_id: Uuid,
    /// The offset to fetch from.
    pub fetch_offset: i64,
    /// The leader epoch we believe current (-1 for none).
    pub current_leader_epoch: i32,
    /// `partition_max_bytes`.
    pub max_bytes: i32,
}

/// The session part of a fetch request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FetchPlan {
    /// `session_id`.
    pub session_id: i32,
    /// `session_epoch`.
    pub session_epoch: i32,
    /// Whether the request lists every partition.
    pub full: bool,
    /// `topics`.
    pub topics: Vec<FetchTopic>,
    /// `forgotten_topics_data`.
    pub forgotten: Vec<ForgottenTopic>,
}

/// The fetch session with one broker.
#[derive(Debug, Clone, Default)]
pub struct FetchSession {
    id: i32,
    epoch: i32,
    /// What the broker holds for us (as of the last successful response).
    partitions: BTreeMap<TopicPartition, FetchTarget>,
    /// What the request in flight asks for, committed when its response succeeds.
    pending: Option<BTreeMap<TopicPartition, FetchTarget>>,
}

impl FetchSession {
    /// No session yet: the first fetch is full.
    pub fn new() -> FetchSession {
        FetchSession::default()
    }

    /// The session id (0 for none).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The epoch of the next request.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Builds the partitions part of the next fetch for `wanted`. Versions below 7 have no
    /// sessions: every fetch is full and sessionless.
    pub fn build(
        &mut self,
        wanted: &BTreeMap<TopicPartition, FetchTarget>,
        version: i16,
    ) -> FetchPlan {
        let use_ids = version >= 13;
        if version < 7 {
            self.pending = Some(wanted.clone());
            return FetchPlan {
                session_id: INVALID_SESSION_ID,
                session_epoch: FINAL_EPOCH,
                full: true,
                topics: to_topics(wanted.iter(), use_ids),
                forgotten: Vec::new(),
            };
        }
        let full = self.id == INVALID_SESSION_ID || self.epoch == INITIAL_EPOCH;
        let plan = if full {
            FetchPlan {
                // With an old id and epoch 0 the broker closes that session and opens a new one.
                session_id: self.id,
                session_epoch: INITIAL_EPOCH,
                full: true,
                topics: to_topics(wanted.iter(), use_ids),
                forgotten: Vec::new(),
            }
        } else {
            let changed = wanted
                .iter()
                .filter(|(tp, t)| self.partitions.get(*tp) != Some(*t));
            let mut forgotten: BTreeMap<(&str, Uuid), Vec<i32>> = BTreeMap::new();
            for (tp, t) in &self.partitions {
                if !wanted.contains_key(tp) {
                    forgotten
                        .entry((tp.topic.as_str(), t.topic_id))
                        .or_default()
                        .push(tp.partition);
                }
            }
            FetchPlan {
                session_id: self.id,
                session_epoch: self.epoch,
                full: false,
                topics: to_topics(changed, use_ids),
                forgotten: forgotten
                    .into_iter()
                    .map(|((name, id), partitions)| ForgottenTopic {
                        topic: if use_ids {
                            KString::new()
                        } else {
                            KString::from(name)
                        },
                        topic_id: if use_ids { id } else { Uuid::ZERO },
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
            }
        };
        self.pending = Some(wanted.clone());
        plan
    }

    /// The response's top-level error and session id arrived. Returns whether the response's
    /// partitions may be used (false: the session was reset and nothing was fetched).
    pub fn handle_response(&mut self, error_code: i16, session_id: i32) -> bool {
        let pending = self.pending.take();
        let code = ErrorCode(error_code);
        if code != ErrorCode::NONE {
            if code == ErrorCode::FETCH_SESSION_ID_NOT_FOUND
                || code == ErrorCode::INVALID_FETCH_SESSION_EPOCH
                || code == ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR
            {
                // The broker no longer knows us (evicted, restarted) or we lost count.
                self.id = INVALID_SESSION_ID;
            }
            self.reset();
            return false;
        }
        let Some(pending) = pending else {
            return true;
        };
        if session_id == INVALID_SESSION_ID {
            // The broker did not (or could not) open a session: stay sessionless.
            self.id = INVALID_SESSION_ID;
            self.epoch = INITIAL_EPOCH;
            self.partitions.clear();
        } else {
            if session_id != self.id {
                self.id = session_id;
                self.epoch = INITIAL_EPOCH;
            }
            self.epoch = next_epoch(self.epoch);
            self.partitions = pending;
        }
        true
    }

    /// The request failed (I/O, timeout): the broker's view is unknown, so start over with a full
    /// fetch (closing the old session, if any).
    pub fn handle_error(&mut self) {
        self.pending = None;
        self.reset();
    }

    fn reset(&mut self) {
        self.epoch = INITIAL_EPOCH;
        self.partitions.clear();
    }
}

fn next_epoch(e: i32) -> i32 {
    if e == i32::MAX {
        1
    } else {
        e + 1
    }
}

fn to_topics<'a>(
    parts: impl Iterator<Item = (&'a TopicPartition, &'a FetchTarget)>,
    use_ids: bool,
) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (tp, t) in parts {
        let p = FetchPartition {
            partition: tp.partition,
            current_leader_epoch: t.current_leader_epoch,
            fetch_offset: t.fetch_offset,
            partition_max_bytes: t.max_bytes,
            ..Default::default()
        };
        // Partitions arrive sorted by topic, so grouping needs only the last entry.
        match topics.last_mut() {
            Some(last)
                if (use_ids && last.topic_id == t.topic_id)
                    || (!use_ids && last.topic.as_str() == tp.topic) =>
            {
                last.partitions.push(p)
            }
            _ => topics.push(FetchTopic {
                topic: if use_ids {
                    KString::new()
                } else {
                    KString::from(tp.topic.as_str())
                },
                topic_id: if use_ids { t.topic_id } else { Uuid::ZERO },
                partitions: vec![p],
                ..Default::default()
            }),
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(offset: i64) -> FetchTarget {
        FetchTarget {
            topic_id: Uuid([1; 16]),
            fetch_offset: offset,
            current_leader_epoch: 0,
            max_bytes: 1024,
        }
    }

    fn wanted(items: &[(i32, i64)]) -> BTreeMap<TopicPartition, FetchTarget> {
        items
            .iter()
            .map(|(p, o)| (TopicPartition::new("t", *p), target(*o)))
            .collect()
    }

    fn parts(plan: &FetchPlan) -> Vec<(i32, i64)> {
        plan.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.fetch_offset)))
            .collect()
    }

    #[test]
    fn full_then_incremental_then_forgotten() {
        let mut s = FetchSession::new();
        let w = wanted(&[(0, 10), (1, 20)]);
        let plan = s.build(&w, 13);
        assert!(plan.full);
        assert_eq!((plan.session_id, plan.session_epoch), (0, 0));
        assert_eq!(parts(&plan), vec![(0, 10), (1, 20)]);
        assert_eq!(plan.topics.len(), 1);
        assert_eq!(plan.topics[0].topic_id, Uuid([1; 16]));
        assert!(s.handle_response(0, 77));
        assert_eq!((s.id(), s.epoch()), (77, 1));

        // Only partition 0 moved on: the incremental fetch carries only it.
        let w = wanted(&[(0, 15), (1, 20)]);
        let plan = s.build(&w, 13);
        assert!(!plan.full);
        assert_eq!((plan.session_id, plan.session_epoch), (77, 1));
        assert_eq!(parts(&plan), vec![(0, 15)]);
        assert!(plan.forgotten.is_empty());
        assert!(s.handle_response(0, 77));
        assert_eq!(s.epoch(), 2);

        // Partition 1 is no longer wanted (paused): forgotten; nothing else changed.
        let w = wanted(&[(0, 15)]);
        let plan = s.build(&w, 13);
        assert!(parts(&plan).is_empty());
        assert_eq!(plan.forgotten.len(), 1);
        assert_eq!(plan.forgotten[0].partitions, vec![1]);
        assert!(s.handle_response(0, 77));
        // Added back: sent again.
        let w = wanted(&[(0, 15), (1, 20)]);
        assert_eq!(parts(&s.build(&w, 13)), vec![(1, 20)]);
    }

    #[test]
    fn session_errors_reset_to_full() {
        for code in [
            ErrorCode::FETCH_SESSION_ID_NOT_FOUND,
            ErrorCode::INVALID_FETCH_SESSION_EPOCH,
        ] {
            let mut s = FetchSession::new();
            let w = wanted(&[(0, 1)]);
            s.build(&w, 12);
            assert!(s.handle_response(0, 5));
            s.build(&w, 12);
            assert!(!s.handle_response(code.0, 0));
            let plan = s.build(&w, 12);
            assert!(plan.full);
            assert_eq!((plan.session_id, plan.session_epoch), (0, 0));
            assert_eq!(parts(&plan), vec![(0, 1)]);
            // Names, not ids, below v13.
            assert_eq!(plan.topics[0].topic.as_str(), "t");
        }
    }

    #[test]
    fn failed_request_closes_and_reopens() {
        let mut s = FetchSession::new();
        let w = wanted(&[(0, 1)]);
        s.build(&w, 13);
        s.handle_response(0, 9);
        s.build(&w, 13);
        s.handle_error();
        let plan = s.build(&w, 13);
        assert!(plan.full);
        assert_eq!((plan.session_id, plan.session_epoch), (9, 0));
        // The broker gives a new session.
        assert!(s.handle_response(0, 10));
        assert_eq!((s.id(), s.epoch()), (10, 1));
    }

    #[test]
    fn sessionless_broker_and_old_versions() {
        let mut s = FetchSession::new();
        let w = wanted(&[(0, 1)]);
        s.build(&w, 13);
        assert!(s.handle_response(0, 0));
        assert!(s.build(&w, 13).full);
        let plan = s.build(&w, 6);
        assert_eq!((plan.session_id, plan.session_epoch), (0, FINAL_EPOCH));
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}
