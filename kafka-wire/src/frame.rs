//! Size-prefixed frames: every Kafka request and response travels as a big-endian `int32` size
//! followed by that many bytes (header, then body).
//!
//! [`FrameDecoder`] cuts frames out of a growing [`BytesMut`] incrementally: `Ok(None)` means more
//! bytes are needed. A size above the configured maximum is rejected as soon as the 4-byte prefix
//! is seen, before the body is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::{Encode, KString, Request};
use crate::error::{DecodeError, EncodeError};
use crate::header::{RequestHeader, ResponseHeader};

/// The default maximum frame size: 100 MiB (the Java client's `max.request.size` ceiling and the
/// broker's `socket.request.max.bytes` default are both of this order).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 100 * 1024 * 1024;

/// Cuts size-prefixed frames out of a byte stream.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_size: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `max_frame_size` bytes (not counting the prefix).
    pub fn new(max_frame_size: usize) -> Self {
        FrameDecoder { max_frame_size }
    }

    /// The maximum frame size.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Takes the next complete frame (without its size prefix) from the front of `buf`.
    ///
    /// `Ok(None)`: not enough bytes yet; `buf` is left as it was, with room reserved for the rest
    /// of the frame. An error leaves `buf` untouched too; the stream cannot be resynchronised
    /// after one, so the connection should be closed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if size < 0 {
            return Err(DecodeError::InvalidLength {
                what: "frame size",
                len: i64::from(size),
                remaining: buf.len() - 4,
            });
        }
        let size = size as usize;
        if size > self.max_frame_size {
            return Err(DecodeError::FrameTooLarge {
                size: size as i64,
                max: self.max_frame_size,
            });
        }
        if buf.len() - 4 < size {
            buf.reserve(size + 4 - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size).freeze()))
    }
}

/// Writes `size` as a frame prefix, refusing sizes above `max`.
fn put_size(buf: &mut BytesMut, size: usize, max: usize) -> Result<(), EncodeError> {
    if size > max || size > i32::MAX as usize {
        return Err(EncodeError::TooLarge {
            what: "frame",
            size,
            max: max.min(i32::MAX as usize),
        });
    }
    buf.put_i32(size as i32);
    Ok(())
}

/// Appends a complete request frame (size, header, body) to `buf`.
///
/// The header version is the one `R` uses at `version`. Nothing is written on error.
pub fn encode_request<R: Request>(
    buf: &mut BytesMut,
    correlation_id: i32,
    client_id: Option<&str>,
    version: i16,
    body: &R,
    max_frame_size: usize,
) -> Result<(), EncodeError> {
    let header = RequestHeader {
        request_api_key: R::API_KEY,
        request_api_version: version,
        correlation_id,
        client_id: client_id.map(KString::from),
        unknown_tagged_fields: Default::default(),
    };
    let hv = R::request_header_version(version);
    encode_frame(buf, &header, hv, body, version, max_frame_size)
}

/// Appends a complete response frame (size, header, body) for request type `R` to `buf`.
pub fn encode_response<R: Request>(
    buf: &mut BytesMut,
    correlation_id: i32,
    version: i16,
    body: &R::Response,
    max_frame_size: usize,
) -> Result<(), EncodeError> {
    let header = ResponseHeader {
        correlation_id,
        unknown_tagged_fields: Default::default(),
    };
    let hv = R::response_header_version(version);
    encode_frame(buf, &header, hv, body, version, max_frame_size)
}

/// Appends a frame holding `header` (as `header_version`) then `body` (as `version`).
pub fn encode_frame<H: Encode, M: Encode>(
    buf: &mut BytesMut,
    header: &H,
    header_version: i16,
    body: &M,
    version: i16,
    max_frame_size: usize,
) -> Result<(), EncodeError> {
    let size = header.encoded_len(header_version)? + body.encoded_len(version)?;
    let start = buf.len();
    buf.reserve(size + 4);
    let result = put_size(buf, size, max_frame_size)
        .and_then(|()| header.encode(buf, header_version))
        .and_then(|()| body.encode(buf, version));
    match result {
        Ok(()) if buf.len() - start == size + 4 => Ok(()),
        Ok(()) => {
            let written = buf.len() - start;
            buf.truncate(start);
            Err(EncodeError::TooLarge {
                what: "frame (encoded size differs from encoded_len)",
                size: written,
                max: size + 4,
            })
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_frames() {
        let d = FrameDecoder::new(16);
        let mut buf = BytesMut::new();
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[0, 0, 0]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[3, b'a', b'b']);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[b'c', 0, 0, 0, 0]);
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_and_negative_frames_are_rejected_early() {
        let d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 17][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { size: 17, max: 16 })
        ));
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(DecodeError::InvalidLength { .. })
        ));
        let mut buf = BytesMut::from(&[0x7fu8, 0xff, 0xff, 0xff][..]);
        assert!(DecodeError::FrameTooLarge { size: 0, max: 0 }
            .to_string()
            .contains("exceeds"));
        assert!(FrameDecoder::default().decode(&mut buf).is_err());
    }
}
