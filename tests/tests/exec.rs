//! `paddock exec`: a command's output and exit status travel from the
//! sandbox's PTY through the control plane to the CLI.

use anyhow::ensure;
use paddock_tests::{within, ControlPlane};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_prints_output_and_exits_zero() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("exec-hello").await?;
        let out = cp
            .paddock(&["exec", sb.name(), "--", "sh", "-c", "echo hello"])
            .await?;
        ensure!(out.code() == Some(0), "expected exit 0: {}", out.describe());
        ensure!(
            out.stdout.contains("hello"),
            "expected `hello` on stdout: {}",
            out.describe()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_on_the_exit_code() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("exec-code").await?;
        let out = cp
            .paddock(&["exec", sb.id(), "--", "sh", "-c", "exit 3"])
            .await?;
        ensure!(out.code() == Some(3), "expected exit 3: {}", out.describe());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_of_a_signalled_command_exits_128_plus_signal() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("exec-signal").await?;
        let out = cp
            .paddock(&["exec", sb.name(), "--", "sh", "-c", "kill -TERM $$"])
            .await?;
        ensure!(
            out.code() == Some(143),
            "expected exit 143 (128 + SIGTERM): {}",
            out.describe()
        );
        Ok(())
    })
    .await;
}

/// Output written the instant the process starts, before any client could
/// have attached, must still reach `exec`. Repeated, because losing it is a
/// race that does not show every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_never_misses_output_printed_immediately() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("exec-early").await?;
        for round in 0..5 {
            let out = cp
                .paddock(&["exec", sb.name(), "--", "printf", "early"])
                .await?;
            ensure!(out.code() == Some(0), "round {round}: {}", out.describe());
            ensure!(
                out.stdout.contains("early"),
                "round {round}: `early` was lost: {}",
                out.describe()
            );
        }
        Ok(())
    })
    .await;
}
