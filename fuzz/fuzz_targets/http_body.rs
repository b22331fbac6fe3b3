//! Typed HTTP API request bodies (`type` line, then the body), as the control plane reads them.
//! The checks live in `paddock_protocol::fuzz_checks::http_body`, shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| paddock_protocol::fuzz_checks::http_body(bytes));
