//! Invariants the LSP framing fuzz target (`fuzz/fuzz_targets/lsp_framing.rs`)
//! checks on arbitrary bytes, shared with the corpus replay test
//! (`agentd/tests/lsp_fuzz_corpus.rs`) so both run exactly the same checks.
//! Panics when an invariant breaks. Not part of agentd's API.

use std::io::Cursor;

use crate::lsp::framing::{encode, read_message, MAX_HEADER_LINE, MAX_MESSAGE};

/// A language server's stdout, read message by message as agentd's reader
/// thread does until the first error or the end. Every message read
/// consumed exactly its header lines (each within the limit) and its
/// declared body (within the limit), and re-frames to the same value.
pub fn lsp_framing(bytes: &[u8]) {
    let mut reader = Cursor::new(bytes);
    loop {
        let start = position(&reader);
        let message = match read_message(&mut reader) {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(err) => {
                let _ = err.to_string();
                return;
            }
        };
        let consumed = &bytes[start..position(&reader)];
        let body = body_after_headers(consumed);
        assert!(body.len() <= MAX_MESSAGE, "body over the limit");
        let parsed: serde_json::Value =
            serde_json::from_slice(body).expect("the consumed body is the message's JSON");
        assert_eq!(
            parsed, message,
            "the reader returned other than the body it consumed"
        );

        let framed = encode(&message);
        let again = read_message(&mut Cursor::new(&framed))
            .expect("an encoded message reads back")
            .expect("an encoded message is not the end of the stream");
        assert_eq!(again, message, "encode → read changed the message");
    }
}

fn position(reader: &Cursor<&[u8]>) -> usize {
    usize::try_from(reader.position()).expect("a cursor over a slice stays within it")
}

/// The bytes after the blank line that ends the headers, checking each
/// header line against the limit on the way.
fn body_after_headers(consumed: &[u8]) -> &[u8] {
    let mut rest = consumed;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .expect("a message's headers end with a blank line");
        let line = &rest[..=end];
        assert!(line.len() <= MAX_HEADER_LINE, "header line over the limit");
        rest = &rest[end + 1..];
        let line = std::str::from_utf8(line).expect("accepted header lines are UTF-8");
        // The same notion of blank as the reader's.
        if line.trim_end().is_empty() {
            return rest;
        }
    }
}
