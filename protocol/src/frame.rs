//! Binary data frames: terminal bytes with a fixed 17-byte header and no
//! JSON or base64 on the hot path.
//!
//! ```text
//! byte 0      kind (1 = output, 2 = input)
//! bytes 1..9  session id, u64 little-endian
//! bytes 9..17 offset, u64 little-endian: the stream offset of the first payload byte
//! bytes 17..  payload, at most MAX_DATA_PAYLOAD bytes
//! ```

use crate::error::DecodeError;
use crate::ids::SessionId;
use crate::limits::MAX_DATA_PAYLOAD;

/// Length of the fixed header in front of every binary frame's payload.
pub const FRAME_HEADER_LEN: usize = 17;

/// What a binary frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Terminal output, from agentd to the control plane and on to clients.
    /// The offset addresses the first payload byte in the session's stream.
    Output = 1,
    /// Keyboard input, from a driving client to the control plane and on to
    /// agentd. The offset is unused and sent as 0.
    Input = 2,
}

impl FrameKind {
    fn from_byte(b: u8) -> Result<FrameKind, DecodeError> {
        match b {
            1 => Ok(FrameKind::Output),
            2 => Ok(FrameKind::Input),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// A decoded binary frame borrowing its payload from the received buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFrame<'a> {
    pub kind: FrameKind,
    pub session_id: SessionId,
    pub offset: u64,
    pub payload: &'a [u8],
}

impl<'a> DataFrame<'a> {
    pub fn output(session_id: SessionId, offset: u64, payload: &'a [u8]) -> Self {
        DataFrame {
            kind: FrameKind::Output,
            session_id,
            offset,
            payload,
        }
    }

    pub fn input(session_id: SessionId, payload: &'a [u8]) -> Self {
        DataFrame {
            kind: FrameKind::Input,
            session_id,
            offset: 0,
            payload,
        }
    }

    /// Encodes header and payload into one buffer. Callers split payloads
    /// larger than [`MAX_DATA_PAYLOAD`] before encoding; see [`DataFrame::chunks`].
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(FRAME_HEADER_LEN + self.payload.len());
        buf.push(self.kind as u8);
        buf.extend_from_slice(&self.session_id.0.to_le_bytes());
        buf.extend_from_slice(&self.offset.to_le_bytes());
        buf.extend_from_slice(self.payload);
        buf
    }

    /// Decodes a received binary frame, enforcing the header and size limits.
    pub fn decode(bytes: &'a [u8]) -> Result<DataFrame<'a>, DecodeError> {
        if bytes.len() < FRAME_HEADER_LEN {
            return Err(DecodeError::Truncated { len: bytes.len() });
        }
        let limit = FRAME_HEADER_LEN + MAX_DATA_PAYLOAD;
        if bytes.len() > limit {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                limit,
            });
        }
        let kind = FrameKind::from_byte(bytes[0])?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[1..9]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&bytes[9..17]);
        Ok(DataFrame {
            kind,
            session_id: SessionId(u64::from_le_bytes(id)),
            offset: u64::from_le_bytes(offset),
            payload: &bytes[FRAME_HEADER_LEN..],
        })
    }

    /// Splits `payload`, starting at stream offset `offset`, into output
    /// frames no larger than the limit, each with its own offset.
    pub fn chunks(
        session_id: SessionId,
        offset: u64,
        payload: &'a [u8],
    ) -> impl Iterator<Item = DataFrame<'a>> + 'a {
        payload
            .chunks(MAX_DATA_PAYLOAD)
            .enumerate()
            .map(move |(i, chunk)| {
                DataFrame::output(session_id, offset + (i * MAX_DATA_PAYLOAD) as u64, chunk)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frame_golden_bytes() {
        let frame = DataFrame::output(SessionId(7), 0x0102, b"hi");
        let bytes = frame.encode();
        assert_eq!(
            bytes,
            [1, 7, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, b'h', b'i']
        );
        assert_eq!(DataFrame::decode(&bytes).unwrap(), frame);
    }

    #[test]
    fn input_frame_golden_bytes() {
        let frame = DataFrame::input(SessionId(258), b"\r");
        let bytes = frame.encode();
        assert_eq!(
            bytes,
            [2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'\r']
        );
        assert_eq!(DataFrame::decode(&bytes).unwrap(), frame);
    }

    #[test]
    fn short_unknown_and_oversized_frames_are_refused() {
        assert!(matches!(
            DataFrame::decode(&[1, 2, 3]),
            Err(DecodeError::Truncated { len: 3 })
        ));
        let mut bad = DataFrame::output(SessionId(1), 0, b"x").encode();
        bad[0] = 9;
        assert!(matches!(
            DataFrame::decode(&bad),
            Err(DecodeError::UnknownKind(9))
        ));
        let big = vec![0u8; MAX_DATA_PAYLOAD + 1];
        let encoded = DataFrame::output(SessionId(1), 0, &big).encode();
        assert!(matches!(
            DataFrame::decode(&encoded),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn chunks_carry_consecutive_offsets() {
        let data = vec![b'a'; MAX_DATA_PAYLOAD * 2 + 5];
        let frames: Vec<_> = DataFrame::chunks(SessionId(1), 100, &data).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].offset, 100 + MAX_DATA_PAYLOAD as u64);
        assert_eq!(frames[2].payload.len(), 5);
    }
}
