//! Hostile input gives a typed error: never a panic, an abort or a huge allocation.

use bytes::Bytes;
use kafka_wire::header::RequestHeader;
use kafka_wire::messages::{decode_request, decode_response};
use kafka_wire::{ApiKey, Decode, DecodeError};

use crate::gen_arb::cases;
use crate::support::{Kind, Rng};

#[test]
fn one_byte_request_header() {
    for v in 0..=2 {
        let err = RequestHeader::decode(&mut Bytes::from_static(&[0x00]), v).unwrap_err();
        assert!(matches!(err, DecodeError::UnexpectedEof { .. }), "{err}");
    }
    assert!(RequestHeader::decode_any(&mut Bytes::from_static(&[0x12])).is_err());
}

#[test]
fn api_versions_response_with_huge_array_count() {
    // error_code = 0, then an api_keys count of 0x7fffffff with nothing behind it.
    let bytes = [0x00, 0x00, 0x7f, 0xff, 0xff, 0xff];
    let err =
        decode_response(ApiKey::API_VERSIONS, 0, &mut Bytes::copy_from_slice(&bytes)).unwrap_err();
    match err {
        DecodeError::InvalidLength { what, len, .. } => {
            assert_eq!(what, "ApiVersionsResponse.api_keys");
            assert_eq!(len, 0x7fff_ffff);
        }
        other => panic!("unexpected {other}"),
    }
    // The same in the flexible encoding (compact count 2^32-2).
    let bytes = [0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(matches!(
        decode_response(ApiKey::API_VERSIONS, 3, &mut Bytes::copy_from_slice(&bytes)),
        Err(DecodeError::InvalidLength { .. })
    ));
}

#[test]
fn unknown_api_and_version_are_errors() {
    assert!(matches!(
        decode_request(ApiKey(999), 0, &mut Bytes::new()),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        decode_request(ApiKey::PRODUCE, 99, &mut Bytes::new()),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
}

/// Every strict prefix of a valid message fails to decode, with an error rather than a panic.
#[test]
fn truncated_messages_are_errors() {
    for case in cases() {
        let Some(key) = case.api_key else { continue };
        for v in case.min..=case.max {
            let mut r = Rng::new(0xdead ^ v as u64);
            let bytes = (case.roundtrip)(&mut r, v).unwrap();
            for cut in 0..bytes.len() {
                let mut b = Bytes::copy_from_slice(&bytes[..cut]);
                let res = match case.kind {
                    Kind::Request => decode_request(ApiKey(key), v, &mut b).map(|_| ()),
                    _ => decode_response(ApiKey(key), v, &mut b).map(|_| ()),
                };
                assert!(
                    res.is_err(),
                    "{} v{v}: prefix of {cut} bytes decoded",
                    case.name
                );
            }
        }
    }
}

/// Random and mutated bytes never panic the decoders.
#[test]
fn garbage_never_panics() {
    let mut r = Rng::new(42);
    for case in cases() {
        let Some(key) = case.api_key else { continue };
        for v in case.min..=case.max {
            let valid = (case.roundtrip)(&mut r, v).unwrap();
            for _ in 0..20 {
                let mut bytes = valid.clone();
                if bytes.is_empty() || r.one_in(4) {
                    bytes = (0..r.below(64)).map(|_| r.next() as u8).collect();
                } else {
                    for _ in 0..1 + r.below(3) {
                        let i = r.below(bytes.len() as u64) as usize;
                        bytes[i] = r.next() as u8;
                    }
                }
                let mut b = Bytes::from(bytes);
                let _ = match case.kind {
                    Kind::Request => decode_request(ApiKey(key), v, &mut b).map(|_| ()),
                    _ => decode_response(ApiKey(key), v, &mut b).map(|_| ()),
                };
            }
        }
    }
}
