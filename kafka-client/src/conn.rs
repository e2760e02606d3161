//! The sans-IO state of one broker connection: correlation ids, the requests in flight and
//! response framing.
//!
//! The tokio driver in [`crate::net`] moves bytes between this and a socket. Everything that can
//! go wrong with the bytes a broker sends (a truncated or oversized frame, a response to no
//! request, a response out of order) is decided here and tested without a socket.
//!
//! Kafka answers the requests of one connection in the order they were sent (the broker mutes a
//! connection while it processes a request), so the in-flight requests form a queue and every
//! response must carry the correlation id at its front. Anything else means the stream is out of
//! sync; the only safe reaction is to drop the connection.
//!
//! One exception: a request we gave up on ([`ConnState::give_up`], its caller timed out while
//! the connection stayed alive) leaves the queue, and its correlation id is remembered (the
//! last [`LATE_MEMORY`] of them). When its answer comes after all, in its place in the order,
//! it is a *late answer*: dropped with a debug log, and the connection goes on. A correlation
//! id we never sent, or a late answer overtaking an older request, is still a violation.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::Request;
use kafka_wire::frame::{encode_request, FrameDecoder};
use kafka_wire::header::{peek_correlation_id, ResponseHeader};
use kafka_wire::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_wire::{ApiKey, Decode, ErrorCode};

use crate::error::{Error, Peer, ProtocolErrorKind};

/// How many given-up correlation ids a connection remembers (bounded memory: an id forgotten
/// this way makes its late answer a protocol violation, which closes the connection).
pub const LATE_MEMORY: usize = 1024;

/// A request written and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Its correlation id.
    pub correlation_id: i32,
    /// Its API key.
    pub api_key: ApiKey,
    /// The version it was sent at.
    pub version: i16,
    /// When it was written.
    pub sent_at: Instant,
    /// Whether the broker will answer (false only for Produce with acks=0).
    pub expects_response: bool,
    /// Its place in the order of requests written on this connection.
    seq: u64,
}

/// A response matched to its request, the header already read.
#[derive(Debug)]
pub struct Answer {
    /// The request it answers.
    pub request: InFlight,
    /// The response body, not yet decoded.
    pub body: Bytes,
}

/// Bookkeeping for one connection.
#[derive(Debug)]
pub struct ConnState {
    peer: Peer,
    client_id: Option<String>,
    next_correlation_id: i32,
    in_flight: VecDeque<InFlight>,
    /// Requests given up on: (correlation id, place in the order), oldest first.
    late: VecDeque<(i32, u64)>,
    /// Requests written so far (the next one's place in the order).
    written: u64,
    /// Late answers dropped so far.
    late_answers: u64,
    decoder: FrameDecoder,
    max_request_bytes: usize,
}

impl ConnState {
    /// A connection to `peer`. Request frames above `max_request_bytes` are refused before
    /// anything is written; response frames above `max_response_bytes` break the connection.
    pub fn new(
        peer: Peer,
        client_id: Option<String>,
        max_request_bytes: usize,
        max_response_bytes: usize,
    ) -> ConnState {
        ConnState {
            peer,
            client_id,
            next_correlation_id: 0,
            in_flight: VecDeque::new(),
            late: VecDeque::new(),
            written: 0,
            late_answers: 0,
            decoder: FrameDecoder::new(max_response_bytes),
            max_request_bytes,
        }
    }

    /// The peer this connection talks to.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Requests written and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The oldest unanswered request's send time, for request timeouts.
    #[cfg(test)]
    pub fn oldest_sent_at(&self) -> Option<Instant> {
        self.in_flight
            .iter()
            .filter(|r| r.expects_response)
            .map(|r| r.sent_at)
            .min()
    }

    /// Appends the frame of `req` at `version` to `out` and records it as in flight.
    ///
    /// Nothing is appended or recorded on error. `expects_response` is false only for Produce
    /// with acks=0, which the broker never answers.
    pub fn write_request<R: Request>(
        &mut self,
        now: Instant,
        version: i16,
        req: &R,
        expects_response: bool,
        out: &mut BytesMut,
    ) -> Result<i32, Error> {
        let correlation_id = self.next_correlation_id;
        encode_request(
            out,
            correlation_id,
            self.client_id.as_deref(),
            version,
            req,
            self.max_request_bytes,
        )?;
        // Wrap to 0 rather than go negative: some brokers' logs treat negative ids as suspect.
        self.next_correlation_id = correlation_id.checked_add(1).unwrap_or(0);
        let seq = self.written;
        self.written += 1;
        if expects_response {
            self.in_flight.push_back(InFlight {
                correlation_id,
                api_key: R::API_KEY,
                version,
                sent_at: now,
                expects_response,
                seq,
            });
        }
        Ok(correlation_id)
    }

    /// When the request with `correlation_id` was written, if it is in flight.
    pub fn sent_at(&self, correlation_id: i32) -> Option<Instant> {
        self.in_flight
            .iter()
            .find(|r| r.correlation_id == correlation_id)
            .map(|r| r.sent_at)
    }

    /// Gives up on the request with `correlation_id` (its caller timed out): it leaves the
    /// in-flight queue, and its answer, if it still comes, is dropped as a late answer instead
    /// of breaking the connection. Returns whether it was in flight.
    pub fn give_up(&mut self, correlation_id: i32) -> bool {
        let Some(i) = self
            .in_flight
            .iter()
            .position(|r| r.correlation_id == correlation_id)
        else {
            return false;
        };
        let req = self.in_flight.remove(i).expect("position found above");
        if self.late.len() == LATE_MEMORY {
            self.late.pop_front();
        }
        self.late.push_back((correlation_id, req.seq));
        true
    }

    /// The request at place `seq` is answered: given-up requests before it can no longer be
    /// answered in order, so their ids are forgotten (their answer now would be a violation).
    fn answered_up_to(&mut self, seq: u64) {
        self.late.retain(|(_, s)| *s > seq);
    }

    /// Late answers dropped so far (answers to requests given up on).
    pub fn late_answers(&self) -> u64 {
        self.late_answers
    }

    /// Takes the next complete response out of `buf` (bytes read from the socket), if there is
    /// one. Late answers (to requests given up on) are dropped on the way. An error means the
    /// connection must be closed.
    pub fn read_response(&mut self, buf: &mut BytesMut) -> Result<Option<Answer>, Error> {
        loop {
            let Some(frame) = self
                .decoder
                .decode(buf)
                .map_err(|e| Error::decode(self.peer.clone(), e))?
            else {
                return Ok(None);
            };
            if let Some(answer) = self.match_response(frame)? {
                return Ok(Some(answer));
            }
        }
    }

    /// Matches one response frame to its request; `None` for a late answer (dropped).
    fn match_response(&mut self, mut frame: Bytes) -> Result<Option<Answer>, Error> {
        let got = peek_correlation_id(&frame).map_err(|e| Error::decode(self.peer.clone(), e))?;
        let front = self.in_flight.front();
        if front.is_none_or(|f| f.correlation_id != got) {
            let late = self.late.iter().find(|(id, _)| *id == got).copied();
            // A late answer in its place in the order: no older request is still waiting.
            if let Some((_, seq)) = late.filter(|(_, seq)| front.is_none_or(|f| f.seq > *seq)) {
                self.answered_up_to(seq);
                self.late_answers += 1;
                tracing::debug!(peer = %self.peer, "late answer for correlation id {got}, dropped");
                return Ok(None);
            }
        }
        let Some(front) = self.in_flight.front() else {
            return Err(Error::Protocol {
                peer: self.peer.clone(),
                kind: ProtocolErrorKind::Invalid(format!(
                    "response with correlation id {got} while no request is in flight"
                )),
            });
        };
        if front.correlation_id != got {
            return Err(Error::Protocol {
                peer: self.peer.clone(),
                kind: ProtocolErrorKind::CorrelationId {
                    expected: front.correlation_id,
                    got,
                },
            });
        }
        let request = self.in_flight.pop_front().expect("front checked above");
        self.answered_up_to(request.seq);
        let hv = kafka_wire::messages::header_versions(request.api_key, request.version)
            .map_or(0, |(_, resp)| resp);
        ResponseHeader::decode(&mut frame, hv).map_err(|e| Error::decode(self.peer.clone(), e))?;
        Ok(Some(Answer {
            request,
            body: frame,
        }))
    }

    /// Forgets every request in flight (the connection is gone) and returns them.
    pub fn fail_all(&mut self) -> Vec<InFlight> {
        self.in_flight.drain(..).collect()
    }
}

/// What the answer to a handshake ApiVersions request says.
#[derive(Debug)]
pub(crate) enum ApiVersionsStep {
    /// The broker answered at the version we sent: these are its ranges.
    Ready(ApiVersionsResponse),
    /// The broker does not speak the version we sent; ask again at this one.
    Retry(i16),
}

/// Reads the body of an ApiVersions answer to a request sent at `sent`.
///
/// A broker that does not speak `sent` answers UNSUPPORTED_VERSION with a **v0** body listing its
/// own ranges (KIP-511; Kafka's `ApiVersionsRequest.getErrorResponse`, Redpanda likewise). That
/// body is decoded at v0, never at `sent`: decoding it at the version we asked for reads garbage
/// (a v3+ body is flexible, v0 is not). The next attempt is at the broker's highest ApiVersions
/// version below `sent`, or v0 when it lists none, so the versions tried strictly decrease.
pub(crate) fn read_api_versions(
    peer: &Peer,
    body: Bytes,
    sent: i16,
) -> Result<ApiVersionsStep, Error> {
    if body.len() < 2 {
        return Err(Error::Protocol {
            peer: peer.clone(),
            kind: ProtocolErrorKind::Invalid(format!(
                "ApiVersions answer of {} bytes has no error code",
                body.len()
            )),
        });
    }
    let code = ErrorCode(i16::from_be_bytes([body[0], body[1]]));
    if code == ErrorCode::UNSUPPORTED_VERSION {
        if sent == 0 {
            return Err(Error::Unsupported {
                peer: peer.clone(),
                api: "ApiVersions",
                need: "v0+".into(),
                broker_range: None,
                feature: "version negotiation".into(),
            });
        }
        let mut v0 = body;
        let resp =
            ApiVersionsResponse::decode(&mut v0, 0).map_err(|e| Error::decode(peer.clone(), e))?;
        let theirs = resp
            .api_keys
            .iter()
            .find(|k| ApiKey(k.api_key) == ApiKey::API_VERSIONS)
            .map(|k| (k.min_version, k.max_version));
        let next = match theirs {
            Some((_, max)) if (0..sent).contains(&max) => max,
            // Listed with a range that includes what we sent (nonsense), or not listed: v0,
            // which every broker since KIP-35 answers.
            _ => 0,
        };
        return Ok(ApiVersionsStep::Retry(
            next.min(ApiVersionsRequest::MAX_VERSION),
        ));
    }
    let mut b = body;
    let resp =
        ApiVersionsResponse::decode(&mut b, sent).map_err(|e| Error::decode(peer.clone(), e))?;
    if code != ErrorCode::NONE {
        return Err(Error::Broker(
            crate::error::BrokerError::new(code).with_message("ApiVersions"),
        ));
    }
    Ok(ApiVersionsStep::Ready(resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_wire::frame::encode_response;
    use kafka_wire::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};

    /// Writes an ApiVersions v3 request on `s` (awaiting an answer or not).
    fn send_api_versions(s: &mut ConnState, expect_response: bool) {
        let mut out = BytesMut::new();
        s.write_request(
            Instant::now(),
            3,
            &ApiVersionsRequest::default(),
            expect_response,
            &mut out,
        )
        .unwrap();
    }

    fn state() -> ConnState {
        ConnState::new(
            Peer::Bootstrap { addr: "x:1".into() },
            Some("t".into()),
            1 << 20,
            1 << 20,
        )
    }

    fn api_versions_answer(corr: i32, version: i16) -> BytesMut {
        let mut b = BytesMut::new();
        encode_response::<ApiVersionsRequest>(
            &mut b,
            corr,
            version,
            &ApiVersionsResponse::default(),
            1 << 20,
        )
        .unwrap();
        b
    }

    #[test]
    fn responses_match_requests_in_order_even_when_split() {
        let mut s = state();
        let now = Instant::now();
        let mut out = BytesMut::new();
        let a = s
            .write_request(now, 3, &ApiVersionsRequest::default(), true, &mut out)
            .unwrap();
        let b = s
            .write_request(now, 3, &ApiVersionsRequest::default(), true, &mut out)
            .unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(s.in_flight(), 2);
        let mut wire = api_versions_answer(0, 3);
        wire.extend_from_slice(&api_versions_answer(1, 3));
        // Feed one byte at a time: nothing completes early, both complete in order.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(ans) = s.read_response(&mut buf).unwrap() {
                let body = ApiVersionsResponse::decode(&mut ans.body.clone(), ans.request.version)
                    .unwrap();
                assert_eq!(body, ApiVersionsResponse::default());
                got.push(ans.request.correlation_id);
            }
        }
        assert_eq!(got, vec![0, 1]);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn wrong_correlation_id_is_a_protocol_error() {
        let mut s = state();
        send_api_versions(&mut s, true);
        let mut buf = api_versions_answer(7, 3);
        let err = s.read_response(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            Error::Protocol {
                kind: ProtocolErrorKind::CorrelationId {
                    expected: 0,
                    got: 7
                },
                ..
            }
        ));
    }

    #[test]
    fn unsolicited_response_is_a_protocol_error() {
        let mut s = state();
        let mut buf = api_versions_answer(0, 3);
        assert!(matches!(
            s.read_response(&mut buf),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn hostile_length_is_refused_before_buffering() {
        let mut s = state();
        send_api_versions(&mut s, true);
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0][..]);
        assert!(matches!(
            s.read_response(&mut buf),
            Err(Error::Protocol { .. })
        ));
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xf0][..]);
        assert!(s.read_response(&mut buf).is_err());
    }

    #[test]
    fn truncated_header_is_a_protocol_error() {
        let mut s = state();
        send_api_versions(&mut s, true);
        // A complete frame of 2 bytes: too short for a correlation id.
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 0, 0][..]);
        assert!(matches!(
            s.read_response(&mut buf),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn oversized_request_is_refused_and_not_recorded() {
        let mut s = ConnState::new(Peer::Unknown, None, 8, 1 << 20);
        let mut out = BytesMut::new();
        let req = MetadataRequest::default();
        assert!(s
            .write_request(Instant::now(), 12, &req, true, &mut out)
            .is_err());
        assert!(out.is_empty());
        assert_eq!(s.in_flight(), 0);
    }

    fn versions_body(code: ErrorCode, api_versions_max: Option<i16>, at: i16) -> Bytes {
        use kafka_wire::messages::api_versions::ApiVersion;
        use kafka_wire::Encode;
        let mut api_keys = vec![ApiVersion {
            api_key: ApiKey::METADATA.0,
            min_version: 0,
            max_version: 12,
            ..Default::default()
        }];
        if let Some(max) = api_versions_max {
            api_keys.push(ApiVersion {
                api_key: ApiKey::API_VERSIONS.0,
                min_version: 0,
                max_version: max,
                ..Default::default()
            });
        }
        let resp = ApiVersionsResponse {
            error_code: code.0,
            api_keys,
            ..Default::default()
        };
        let mut b = BytesMut::new();
        resp.encode(&mut b, at).unwrap();
        b.freeze()
    }

    #[test]
    fn unsupported_api_versions_answer_is_read_at_v0_and_retried_at_the_broker_max() {
        let peer = Peer::Unknown;
        // Kafka 4.0-4.3 (ApiVersions up to v4) answering our v5, in the v0 format.
        let body = versions_body(ErrorCode::UNSUPPORTED_VERSION, Some(4), 0);
        // Decoding that body at v5 is what broke: it must not be tried.
        assert!(ApiVersionsResponse::decode(&mut body.clone(), 5).is_err());
        match read_api_versions(&peer, body, 5).unwrap() {
            ApiVersionsStep::Retry(v) => assert_eq!(v, 4),
            other => panic!("{other:?}"),
        }
        // Redpanda (up to v3).
        let body = versions_body(ErrorCode::UNSUPPORTED_VERSION, Some(3), 0);
        assert!(matches!(
            read_api_versions(&peer, body, 5),
            Ok(ApiVersionsStep::Retry(3))
        ));
        // No ApiVersions entry, or a nonsensical one: v0, so the loop always goes down.
        for max in [None, Some(5), Some(9), Some(-1)] {
            let body = versions_body(ErrorCode::UNSUPPORTED_VERSION, max, 0);
            assert!(
                matches!(
                    read_api_versions(&peer, body, 5),
                    Ok(ApiVersionsStep::Retry(0))
                ),
                "{max:?}"
            );
        }
        // UNSUPPORTED_VERSION at v0 is the end: a typed error, not a loop.
        let body = versions_body(ErrorCode::UNSUPPORTED_VERSION, Some(0), 0);
        assert!(matches!(
            read_api_versions(&peer, body, 0),
            Err(Error::Unsupported {
                api: "ApiVersions",
                ..
            })
        ));
    }

    #[test]
    fn api_versions_answers_at_our_version_and_other_errors() {
        let peer = Peer::Unknown;
        for v in 0..=ApiVersionsRequest::MAX_VERSION {
            let body = versions_body(ErrorCode::NONE, Some(v), v);
            match read_api_versions(&peer, body, v).unwrap() {
                ApiVersionsStep::Ready(r) => assert_eq!(r.api_keys.len(), 2, "v{v}"),
                other => panic!("v{v}: {other:?}"),
            }
        }
        let body = versions_body(ErrorCode::CLUSTER_AUTHORIZATION_FAILED, None, 3);
        let err = read_api_versions(&peer, body, 3).unwrap_err();
        assert_eq!(
            err.broker_code(),
            Some(ErrorCode::CLUSTER_AUTHORIZATION_FAILED)
        );
        // Too short, or garbage: a protocol error, never a panic.
        for bytes in [
            &[][..],
            &[0][..],
            &[0, 0, 0xff, 0xff, 0xff][..],
            &[0, 35, 9][..],
        ] {
            assert!(
                matches!(
                    read_api_versions(&peer, Bytes::copy_from_slice(bytes), 3),
                    Err(Error::Protocol { .. })
                ),
                "{bytes:?}"
            );
        }
    }

    /// Writes `n` ApiVersions requests; returns their correlation ids.
    fn send_n(s: &mut ConnState, n: usize) -> Vec<i32> {
        let mut out = BytesMut::new();
        (0..n)
            .map(|_| {
                s.write_request(
                    Instant::now(),
                    3,
                    &ApiVersionsRequest::default(),
                    true,
                    &mut out,
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_late_answer_to_a_request_given_up_is_dropped_and_the_stream_goes_on() {
        let mut s = state();
        let ids = send_n(&mut s, 3);
        assert!(s.give_up(ids[0]));
        assert!(!s.give_up(99), "not in flight");
        assert_eq!(s.in_flight(), 2);
        // The late answer comes first, in its place; then the others.
        let mut buf = api_versions_answer(ids[0], 3);
        buf.extend_from_slice(&api_versions_answer(ids[1], 3));
        let ans = s.read_response(&mut buf).unwrap().expect("the next answer");
        assert_eq!(ans.request.correlation_id, ids[1]);
        assert_eq!(s.late_answers(), 1);
        // A request given up in the middle of the queue.
        let more = send_n(&mut s, 2);
        assert!(s.give_up(more[0]));
        let mut buf = api_versions_answer(ids[2], 3);
        buf.extend_from_slice(&api_versions_answer(more[0], 3));
        buf.extend_from_slice(&api_versions_answer(more[1], 3));
        let got: Vec<i32> = std::iter::from_fn(|| s.read_response(&mut buf).unwrap())
            .map(|a| a.request.correlation_id)
            .collect();
        assert_eq!(got, vec![ids[2], more[1]]);
        assert_eq!((s.late_answers(), s.in_flight()), (2, 0));
        // The late answer of a request given up last, with nothing else in flight.
        let last = send_n(&mut s, 1);
        s.give_up(last[0]);
        let mut buf = api_versions_answer(last[0], 3);
        assert!(s.read_response(&mut buf).unwrap().is_none());
        assert_eq!(s.late_answers(), 3);
    }

    #[test]
    fn answers_that_are_not_late_are_still_violations() {
        // A correlation id never sent.
        let mut s = state();
        let ids = send_n(&mut s, 2);
        s.give_up(ids[0]);
        let mut buf = api_versions_answer(77, 3);
        assert!(matches!(
            s.read_response(&mut buf),
            Err(Error::Protocol {
                kind: ProtocolErrorKind::CorrelationId {
                    expected: 1,
                    got: 77
                },
                ..
            })
        ));
        // A late answer overtaking an older request still in flight.
        let mut s = state();
        let ids = send_n(&mut s, 2);
        s.give_up(ids[1]);
        let mut buf = api_versions_answer(ids[1], 3);
        assert!(matches!(
            s.read_response(&mut buf),
            Err(Error::Protocol {
                kind: ProtocolErrorKind::CorrelationId {
                    expected: 0,
                    got: 1
                },
                ..
            })
        ));
        // A late answer after a later request was answered: out of order.
        let mut s = state();
        let ids = send_n(&mut s, 2);
        s.give_up(ids[0]);
        let mut buf = api_versions_answer(ids[1], 3);
        buf.extend_from_slice(&api_versions_answer(ids[0], 3));
        assert!(s.read_response(&mut buf).unwrap().is_some());
        assert!(matches!(
            s.read_response(&mut buf),
            Err(Error::Protocol { .. })
        ));
        assert_eq!(s.late_answers(), 0);
    }

    #[test]
    fn given_up_ids_are_remembered_in_bounded_memory() {
        let mut s = state();
        let ids = send_n(&mut s, LATE_MEMORY + 500);
        for id in &ids {
            assert!(s.give_up(*id));
        }
        assert_eq!(s.late.len(), LATE_MEMORY);
        // The oldest were forgotten: their answers are violations now...
        let mut buf = api_versions_answer(ids[0], 3);
        assert!(s.read_response(&mut buf).is_err());
        // ...the newest are late answers.
        let mut s = state();
        let ids = send_n(&mut s, LATE_MEMORY + 500);
        for id in &ids {
            s.give_up(*id);
        }
        let mut buf = api_versions_answer(ids[ids.len() - 1], 3);
        assert!(s.read_response(&mut buf).unwrap().is_none());
        assert_eq!(s.late_answers(), 1);
        // Everything before it can no longer come in order: forgotten.
        assert!(s.late.is_empty());
    }

    #[test]
    fn acks_zero_requests_are_not_awaited() {
        let mut s = state();
        send_api_versions(&mut s, false);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.oldest_sent_at(), None);
    }
}
