//! JSON control messages (tool calls included) from the control plane, as agentd decodes them.
//! The checks live in `paddock_protocol::fuzz_checks::control_to_agent`, shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| paddock_protocol::fuzz_checks::control_to_agent(bytes));
