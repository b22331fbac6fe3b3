//! Tool call bodies of the HTTP API (`tool` line, then the body), as the control plane reads them before forwarding.
//! The checks live in `paddock_protocol::fuzz_checks::tool_body`, shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| paddock_protocol::fuzz_checks::tool_body(bytes));
