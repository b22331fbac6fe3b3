//! Typed decode errors: every way a frame from the network can be refused.

use thiserror::Error;

/// Why a frame could not be decoded. The message is fit for a close frame's
/// reason after truncation and for a log line.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("binary frame of {len} bytes is shorter than its header")]
    Truncated { len: usize },
    #[error("unknown binary frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("malformed control message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("field `{field}` is {len} long; the limit is {limit}")]
    TooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("invalid field `{field}`: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

pub(crate) fn check_len(field: &'static str, len: usize, limit: usize) -> Result<(), DecodeError> {
    if len > limit {
        return Err(DecodeError::TooLong { field, len, limit });
    }
    Ok(())
}

pub(crate) fn check_str(field: &'static str, s: &str, limit: usize) -> Result<(), DecodeError> {
    check_len(field, s.len(), limit)
}

pub(crate) fn check_strs<'a>(
    field: &'static str,
    items: impl ExactSizeIterator<Item = &'a String>,
    max_items: usize,
    limit: usize,
) -> Result<(), DecodeError> {
    check_len(field, items.len(), max_items)?;
    for s in items {
        check_str(field, s, limit)?;
    }
    Ok(())
}
