//! JSON control messages from agentd, as the control plane decodes them.
//! The checks live in `paddock_protocol::fuzz_checks::agent_to_control`, shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| paddock_protocol::fuzz_checks::agent_to_control(bytes));
