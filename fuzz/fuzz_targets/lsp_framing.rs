//! A language server's stdout (Content-Length framed JSON-RPC), as agentd's reader thread parses it.
//! The checks live in `agentd::fuzz_checks::lsp_framing`, shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| agentd::fuzz_checks::lsp_framing(bytes));
