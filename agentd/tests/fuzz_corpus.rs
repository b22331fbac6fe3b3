//! Replays every committed fuzz input — `fuzz/corpus/<target>` (the
//! minimized corpora) and `fuzz/regressions/<target>` (crash reproducers and
//! edge cases at the limits) — through the very checks the fuzz targets run,
//! so CI re-proves them on every change without a fuzzer or nightly Rust.
//!
//! Lives in agentd because agentd sees both decoders' crates: the wire's
//! checks (`paddock_protocol::fuzz_checks`) and its own LSP framing
//! (`agentd::fuzz_checks`). A folder that is missing or empty fails the
//! test, so a lost corpus cannot pass silently.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use paddock_protocol::fuzz_checks;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `check` on every file of the target's corpus and regression folders.
fn replay(target: &str, check: fn(&[u8])) {
    for folder in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(folder).join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|err| {
            panic!(
                "cannot read {}: {err}; commit the fuzz inputs (see fuzz/README.md)",
                dir.display()
            )
        });
        let mut failed = Vec::new();
        let mut replayed = 0;
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            if catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
                failed.push(path.display().to_string());
            }
            replayed += 1;
        }
        assert!(
            replayed > 0,
            "{} is empty; run the fuzzer or restore the folder (see fuzz/README.md)",
            dir.display()
        );
        assert!(
            failed.is_empty(),
            "inputs failing the {target} checks: {failed:#?}"
        );
    }
}

#[test]
fn data_frame_inputs_pass_the_checks() {
    replay("data_frame", fuzz_checks::data_frame);
}

#[test]
fn agent_to_control_inputs_pass_the_checks() {
    replay("agent_to_control", fuzz_checks::agent_to_control);
}

#[test]
fn control_to_agent_inputs_pass_the_checks() {
    replay("control_to_agent", fuzz_checks::control_to_agent);
}

#[test]
fn client_to_control_inputs_pass_the_checks() {
    replay("client_to_control", fuzz_checks::client_to_control);
}

#[test]
fn control_to_client_inputs_pass_the_checks() {
    replay("control_to_client", fuzz_checks::control_to_client);
}

#[test]
fn lsp_framing_inputs_pass_the_checks() {
    replay("lsp_framing", agentd::fuzz_checks::lsp_framing);
}

#[test]
fn tool_body_inputs_pass_the_checks() {
    replay("tool_body", fuzz_checks::tool_body);
}

#[test]
fn http_body_inputs_pass_the_checks() {
    replay("http_body", fuzz_checks::http_body);
}
