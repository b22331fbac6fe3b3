//! `control-plane up`: one command brings up a server with local sandboxes,
//! and Ctrl-C takes all of it down again.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use paddock_tests::proto::api::SandboxStatus;
use paddock_tests::{parse_sandboxes, wait_until, within, Up};

/// Sends SIGINT to `up` and checks it exits 0 and leaves no agentd behind.
async fn interrupt_and_check(up: &mut Up) -> Result<()> {
    up.proc.signal(Signal::SIGINT)?;
    let status = up.proc.wait_exit(Duration::from_secs(20)).await?;
    ensure!(
        status.success(),
        "`control-plane up` exited with {status} after SIGINT\n{}",
        up.proc.logs()
    );
    // The children may still be on their way out of the process table.
    let data_dir = up.data_dir().to_owned();
    let data_dir = &data_dir;
    wait_until(
        "every agentd of `up` to be gone",
        Duration::from_secs(3),
        || async move {
            let left = paddock_tests::agentd_processes_of(data_dir);
            Ok(left.is_empty().then_some(()))
        },
    )
    .await
    .with_context(|| {
        format!(
            "agentd processes remain: {:?}",
            paddock_tests::agentd_processes_of(data_dir)
        )
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_local_sandboxes_and_stops_them_on_ctrl_c() {
    within(async {
        let tmp = tempfile::Builder::new().prefix("paddock-up-").tempdir()?;
        let data_dir = tmp.path().join("data");
        let mut up = Up::start(&data_dir, 2).await?;

        let up_ref = &up;
        let sandboxes = wait_until(
            "`paddock sandboxes --json` to list 2 connected sandboxes",
            Duration::from_secs(20),
            || async move {
                let out = up_ref.paddock(&["sandboxes", "--json"]).await?.ok()?;
                let list = parse_sandboxes(&out.stdout)?;
                let connected = list
                    .iter()
                    .filter(|s| s.status == SandboxStatus::Connected)
                    .count();
                Ok((list.len() == 2 && connected == 2).then_some(list))
            },
        )
        .await?;
        let mut names: Vec<_> = sandboxes.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        ensure!(
            names == ["local-1", "local-2"],
            "unexpected sandbox names {names:?}"
        );

        let out = up
            .paddock(&["exec", "local-1", "--", "sh", "-c", "echo from-up"])
            .await?;
        ensure!(
            out.code() == Some(0) && out.stdout.contains("from-up"),
            "exec in an `up` sandbox failed: {}",
            out.describe()
        );

        let token_file = data_dir.join("owner.token");
        let mode = std::fs::metadata(&token_file)
            .with_context(|| format!("{} is missing", token_file.display()))?
            .permissions()
            .mode();
        ensure!(
            mode & 0o777 == 0o600,
            "owner.token has mode {:o}, expected 600",
            mode & 0o777
        );
        let stored = std::fs::read_to_string(&token_file)?;
        ensure!(
            stored.trim() == up.token,
            "owner.token does not hold the printed token"
        );

        ensure!(
            !up.agentd_processes().is_empty(),
            "no agentd process of `up` found, so the cleanup check below would prove nothing"
        );
        interrupt_and_check(&mut up).await?;

        // A second start on the same data dir keeps the owner's token.
        let first_token = up.token.clone();
        let mut again = Up::start(&data_dir, 1).await?;
        ensure!(
            again.token == first_token,
            "the second start printed another token"
        );
        interrupt_and_check(&mut again).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_adopts_its_sandboxes_after_being_killed() {
    within(async {
        let tmp = tempfile::Builder::new().prefix("paddock-up-").tempdir()?;
        let data_dir = tmp.path().join("data");
        // A fixed address, so the children still dial the right place.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut first = Up::start_on(&data_dir, 1, &listen).await?;
        let before = first.agentd_processes();
        ensure!(before.len() == 1, "agentd processes: {before:?}");
        first.proc.kill();
        ensure!(
            first.agentd_processes() == before,
            "agentd died with `up`: {:?}",
            first.agentd_processes()
        );

        let mut again = Up::start_on(&data_dir, 1, &listen).await?;
        let after = again.agentd_processes();
        ensure!(after == before, "not adopted: {before:?} became {after:?}");
        let out = again
            .paddock(&["exec", "local-1", "--", "sh", "-c", "echo adopted"])
            .await?;
        ensure!(
            out.code() == Some(0) && out.stdout.contains("adopted"),
            "exec after adoption failed: {}",
            out.describe()
        );
        interrupt_and_check(&mut again).await?;
        Ok(())
    })
    .await;
}
