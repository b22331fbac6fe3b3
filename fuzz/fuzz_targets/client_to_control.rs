//! JSON control messages from a stream client, as the control plane decodes them.
//! The checks live in `paddock_protocol::fuzz_checks::client_to_control`, shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| paddock_protocol::fuzz_checks::client_to_control(bytes));
