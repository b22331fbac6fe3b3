//! JSON-RPC framing on a language server's stdio: `Content-Length` headers,
//! a blank line, then that many bytes of JSON.
//!
//! A pure function over a [`BufRead`], so the reader thread, the unit tests
//! and the fuzz target (`fuzz/fuzz_targets/lsp_framing.rs`, through
//! `crate::fuzz_checks`) all parse with the same code. The server is a
//! process agentd started, but it runs whatever the sandbox holds, so its
//! output is treated as hostile: every read is bounded.

use std::io::{self, BufRead, Read};

use serde_json::Value;

/// Largest message body accepted from a server.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Longest header line accepted, newline included. Servers send
/// `Content-Length` and at most `Content-Type`; a longer line is garbage.
pub(crate) const MAX_HEADER_LINE: usize = 4096;
/// The body buffer grows as bytes arrive, from at most this much up front,
/// so a `Content-Length` the stream does not back costs no memory.
const INITIAL_BODY: usize = 64 * 1024;

/// Frames one message for a server's stdin.
pub(crate) fn encode(message: &Value) -> Vec<u8> {
    let body = message.to_string();
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Reads one framed message; `Ok(None)` at end of stream. Any error leaves
/// the stream at an unknown position: the caller stops reading.
pub(crate) fn read_message(reader: &mut impl BufRead) -> io::Result<Option<Value>> {
    let mut length = None;
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_HEADER_LINE as u64)
            .read_line(&mut line)?;
        if read == 0 {
            return Ok(None);
        }
        if !line.ends_with('\n') && read == MAX_HEADER_LINE {
            return Err(io::Error::other(format!(
                "header line longer than {MAX_HEADER_LINE} bytes"
            )));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length = length
        .filter(|&n| n <= MAX_MESSAGE)
        .ok_or_else(|| io::Error::other("missing or oversized Content-Length"))?;
    let mut body = Vec::with_capacity(length.min(INITIAL_BODY));
    reader.take(length as u64).read_to_end(&mut body)?;
    if body.len() < length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "stream ended {} bytes into a {length}-byte message",
                body.len()
            ),
        ));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_round_trip() {
        let message = json!({"jsonrpc": "2.0", "id": 1, "result": {"ok": "é"}});
        let bytes = encode(&message);
        let mut reader = io::Cursor::new(bytes);
        assert_eq!(read_message(&mut reader).unwrap(), Some(message));
        assert_eq!(read_message(&mut reader).unwrap(), None);
        let mut bad = io::Cursor::new(b"Content-Type: x\r\n\r\n{}".to_vec());
        assert!(read_message(&mut bad).is_err());
    }

    #[test]
    fn an_endless_header_line_is_refused() {
        let mut bytes = b"Content-Length: 2\r\nX-Junk: ".to_vec();
        bytes.resize(bytes.len() + MAX_HEADER_LINE, b'a');
        let err = read_message(&mut io::Cursor::new(bytes)).unwrap_err();
        assert!(err.to_string().contains("header line longer"), "{err}");
    }

    #[test]
    fn a_length_the_stream_does_not_back_is_an_error() {
        let mut reader = io::Cursor::new(b"Content-Length: 60000000\r\n\r\n{}".to_vec());
        let err = read_message(&mut reader).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut over = io::Cursor::new(format!("Content-Length: {}\r\n\r\n", MAX_MESSAGE + 1));
        assert!(read_message(&mut over).is_err());
    }
}
