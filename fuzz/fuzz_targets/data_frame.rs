//! Binary frames (17-byte header + terminal bytes) as the control plane, agentd and clients decode them.
//! The checks live in `paddock_protocol::fuzz_checks::data_frame`, shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| paddock_protocol::fuzz_checks::data_frame(bytes));
