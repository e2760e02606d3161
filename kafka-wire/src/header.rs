//! Request and response headers (request header v0-v2, response header v0-v1).
//!
//! The header version follows from the API and its version: see
//! [`Request::request_header_version`](crate::codec::Request::request_header_version) and
//! [`header_versions`](crate::messages::header_versions).

use bytes::{BufMut, Bytes};

use crate::api_key::ApiKey;
use crate::codec::*;
use crate::error::{DecodeError, EncodeError};

/// A request header.
///
/// v0 has no client id; v1 adds a nullable client id (always a classic `int16`-prefixed string,
/// even in v2); v2 adds tagged fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestHeader {
    /// The API of the request.
    pub request_api_key: ApiKey,
    /// The version of the request body.
    pub request_api_version: i16,
    /// Matches the response to the request.
    pub correlation_id: i32,
    /// The client's id (v1+), `None` for null.
    pub client_id: Option<KString>,
    /// Tagged fields (v2), kept as they are.
    pub unknown_tagged_fields: UnknownTaggedFields,
}

const REQ_TAGS: &str = "RequestHeader tagged fields";

impl Encode for RequestHeader {
    fn encode<B: BufMut>(&self, buf: &mut B, version: i16) -> Result<(), EncodeError> {
        if !(0..=2).contains(&version) {
            return Err(EncodeError::UnsupportedVersion {
                api_key: -1,
                version,
            });
        }
        put_i16(buf, self.request_api_key.0);
        put_i16(buf, self.request_api_version);
        put_i32(buf, self.correlation_id);
        if version >= 1 {
            put_nullable_string(
                buf,
                self.client_id.as_deref(),
                false,
                true,
                version,
                "RequestHeader.client_id",
            )?;
        } else if self.client_id.is_some() {
            return Err(EncodeError::FieldNotInVersion {
                what: "RequestHeader.client_id",
                version,
            });
        }
        if version >= 2 {
            put_uvarint(buf, self.unknown_tagged_fields.len() as u32);
            put_unknown_tags(buf, &self.unknown_tagged_fields, .., REQ_TAGS)?;
        }
        Ok(())
    }

    fn encoded_len(&self, version: i16) -> Result<usize, EncodeError> {
        let mut n = 8;
        if version >= 1 {
            n += nullable_string_len(self.client_id.as_deref(), false);
        }
        if version >= 2 {
            n += uvarint_len(self.unknown_tagged_fields.len() as u32)
                + unknown_tags_len(&self.unknown_tagged_fields);
        }
        Ok(n)
    }
}

impl Decode for RequestHeader {
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError> {
        if !(0..=2).contains(&version) {
            return Err(DecodeError::UnsupportedVersion {
                api_key: -1,
                version,
            });
        }
        let mut h = RequestHeader {
            request_api_key: ApiKey(get_i16(buf, "RequestHeader.request_api_key")?),
            request_api_version: get_i16(buf, "RequestHeader.request_api_version")?,
            correlation_id: get_i32(buf, "RequestHeader.correlation_id")?,
            ..Default::default()
        };
        if version >= 1 {
            h.client_id = get_nullable_string(buf, false, "RequestHeader.client_id")?;
        }
        if version >= 2 {
            h.unknown_tagged_fields = get_unknown_tagged_fields(buf, REQ_TAGS)?;
        }
        Ok(h)
    }
}

impl RequestHeader {
    /// Reads a request header whose version is found from the API key and version at its start,
    /// as a broker does. Unknown APIs and versions are read as header v1 (what Kafka assumes for
    /// requests it cannot parse further).
    pub fn decode_any(buf: &mut Bytes) -> Result<Self, DecodeError> {
        need(buf, 4, "RequestHeader")?;
        let key = ApiKey(i16::from_be_bytes([buf[0], buf[1]]));
        let version = i16::from_be_bytes([buf[2], buf[3]]);
        let hv = crate::messages::header_versions(key, version).map_or(1, |(req, _)| req);
        RequestHeader::decode(buf, hv)
    }
}

/// A response header: the correlation id, and tagged fields in v1.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseHeader {
    /// The correlation id of the request this answers.
    pub correlation_id: i32,
    /// Tagged fields (v1), kept as they are.
    pub unknown_tagged_fields: UnknownTaggedFields,
}

const RESP_TAGS: &str = "ResponseHeader tagged fields";

impl Encode for ResponseHeader {
    fn encode<B: BufMut>(&self, buf: &mut B, version: i16) -> Result<(), EncodeError> {
        if !(0..=1).contains(&version) {
            return Err(EncodeError::UnsupportedVersion {
                api_key: -1,
                version,
            });
        }
        put_i32(buf, self.correlation_id);
        if version >= 1 {
            put_uvarint(buf, self.unknown_tagged_fields.len() as u32);
            put_unknown_tags(buf, &self.unknown_tagged_fields, .., RESP_TAGS)?;
        }
        Ok(())
    }

    fn encoded_len(&self, version: i16) -> Result<usize, EncodeError> {
        let mut n = 4;
        if version >= 1 {
            n += uvarint_len(self.unknown_tagged_fields.len() as u32)
                + unknown_tags_len(&self.unknown_tagged_fields);
        }
        Ok(n)
    }
}

impl Decode for ResponseHeader {
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError> {
        if !(0..=1).contains(&version) {
            return Err(DecodeError::UnsupportedVersion {
                api_key: -1,
                version,
            });
        }
        let mut h = ResponseHeader {
            correlation_id: get_i32(buf, "ResponseHeader.correlation_id")?,
            ..Default::default()
        };
        if version >= 1 {
            h.unknown_tagged_fields = get_unknown_tagged_fields(buf, RESP_TAGS)?;
        }
        Ok(h)
    }
}

/// Reads only the correlation id at the front of a response frame, without consuming anything,
/// so a client can route a response before it knows which request (and header version) it
/// answers.
pub fn peek_correlation_id(frame: &[u8]) -> Result<i32, DecodeError> {
    match frame {
        [a, b, c, d, ..] => Ok(i32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(DecodeError::UnexpectedEof {
            what: "ResponseHeader.correlation_id",
            needed: 4,
            remaining: frame.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_request_header_is_an_error() {
        for v in 0..=2 {
            let mut b = Bytes::from_static(&[0x00]);
            assert!(matches!(
                RequestHeader::decode(&mut b, v),
                Err(DecodeError::UnexpectedEof { .. })
            ));
        }
        let mut b = Bytes::from_static(&[0x00]);
        assert!(RequestHeader::decode_any(&mut b).is_err());
    }

    #[test]
    fn request_header_round_trips() {
        let h = RequestHeader {
            request_api_key: ApiKey::METADATA,
            request_api_version: 12,
            correlation_id: 7,
            client_id: Some("me".into()),
            unknown_tagged_fields: [(3u32, Bytes::from_static(b"x"))].into_iter().collect(),
        };
        let mut out = Vec::new();
        h.encode(&mut out, 2).unwrap();
        assert_eq!(out.len(), h.encoded_len(2).unwrap());
        // Client id stays a classic string in v2: length 0x0002 then the bytes.
        assert_eq!(&out[8..12], &[0, 2, b'm', b'e']);
        let mut b = Bytes::from(out);
        assert_eq!(RequestHeader::decode_any(&mut b).unwrap(), h);
        assert!(b.is_empty());
    }

    #[test]
    fn response_header_round_trips() {
        let h = ResponseHeader {
            correlation_id: -5,
            unknown_tagged_fields: Default::default(),
        };
        for v in 0..=1 {
            let mut out = Vec::new();
            h.encode(&mut out, v).unwrap();
            assert_eq!(out.len(), h.encoded_len(v).unwrap());
            assert_eq!(peek_correlation_id(&out).unwrap(), -5);
            let mut b = Bytes::from(out);
            assert_eq!(ResponseHeader::decode(&mut b, v).unwrap(), h);
        }
    }
}
