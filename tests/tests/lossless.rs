//! Lossless, resumable streams: every byte a session prints is stored and
//! delivered exactly once, in order, across a SIGKILLed control plane, cut
//! agent links and spills to disk; bytes are dropped only past agentd's disk
//! cap, and then a gap says so.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use paddock_tests::proto::api::{SessionInfo, SessionState};
use paddock_tests::proto::{ExitStatus, SessionId};
use paddock_tests::{
    dir_bytes, first_difference, seq_output, sha256_hex, wait_until, within_for, without_gaps,
    AgentdOptions, Api, ControlPlane, LinkProxy, OutputSink, RssSampler, StreamClient,
    StreamOptions, MIB,
};

/// `seq 1 SEQ_N` prints about 26 MB through a PTY: long enough to be cut
/// half-way, short enough for a debug build.
const SEQ_N: u64 = 3_000_000;

/// Generous: these tests move tens of MiB through debug builds on 2 cores.
const LIMIT: Duration = Duration::from_secs(300);

/// The one session of a sandbox (the one an `exec` opened).
async fn only_session(api: &Api, sandbox: &str) -> Result<SessionInfo> {
    let sessions = api.sessions(sandbox).await?;
    match sessions.as_slice() {
        [one] => Ok(one.clone()),
        other => bail!("expected exactly one session, found {other:?}"),
    }
}

/// Waits until the session is `exited` in the API and returns it.
async fn wait_session_exited(api: &Api, sandbox: &str, id: SessionId) -> Result<SessionInfo> {
    wait_until(
        &format!("session {id} to be reported exited"),
        Duration::from_secs(60),
        || async move {
            let info = api.session(sandbox, id).await?;
            Ok((info.state == SessionState::Exited).then_some(info))
        },
    )
    .await
}

/// Checks the output endpoint holds exactly `expected`, with no gap.
async fn check_stored_exactly(
    api: &Api,
    sandbox: &str,
    id: SessionId,
    expected: &[u8],
) -> Result<()> {
    let stored = api.output(sandbox, id, None, None).await?;
    ensure!(
        stored.gaps.is_empty(),
        "the stored stream has gaps: {:?}",
        stored.gaps_header
    );
    if sha256_hex(&stored.bytes) != sha256_hex(expected) {
        // Say whether the store holds more past a short body.
        let mut detail = String::new();
        if stored.bytes.len() < expected.len() {
            let at = stored.bytes.len() as u64;
            match api.output(sandbox, id, Some(at), None).await {
                Ok(rest) => {
                    detail = format!(
                        "; asked again from {at}, the endpoint returns {} more bytes (gaps {:?})",
                        rest.bytes.len(),
                        rest.gaps_header
                    )
                }
                Err(err) => detail = format!("; asked again from {at}: {err:#}"),
            }
        }
        bail!(
            "the stored stream differs from the generator's output: {}{detail}",
            first_difference(&stored.bytes, expected)
        );
    }
    Ok(())
}

/// A shell word for a path (the temporary directories hold no quote).
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// Creates the file a session's script waits for.
fn open_gate(path: &Path) -> Result<()> {
    std::fs::write(path, b"go").with_context(|| format!("could not create {}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_survives_a_sigkilled_control_plane() {
    within_for(LIMIT, async {
        let mut cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("cp-killed").await?;
        let expected = seq_output(SEQ_N);
        let n = SEQ_N.to_string();
        let mut exec = cp.paddock_proc(&["exec", sb.name(), "--", "seq", "1", &n])?;
        exec.stdout
            .wait_len(4 * MIB as usize, Duration::from_secs(120))
            .await
            .with_context(|| exec.logs())?;

        let printed_at_kill = exec.stdout.len();
        cp.restart().await?;
        ensure!(
            printed_at_kill < expected.len(),
            "exec had printed everything ({printed_at_kill} bytes) before the kill: the generator is too short to test anything"
        );

        let status = exec.wait_exit(Duration::from_secs(240)).await?;
        let stdout = exec.stdout.bytes();
        ensure!(
            sha256_hex(&stdout) == sha256_hex(&expected),
            "exec's stdout differs from `seq 1 {n}` after the kill at byte {printed_at_kill}: {}\n{}",
            first_difference(&stdout, &expected),
            paddock_tests::tail(&exec.stderr.text(), 4000)
        );
        ensure!(
            status.success(),
            "exec ended with {status} after a complete output\n{}",
            exec.logs()
        );
        ensure!(
            !exec.stderr.is_empty(),
            "exec said nothing on stderr about its dropped connection"
        );

        let api = cp.api();
        let session = only_session(&api, sb.id()).await?;
        let session = wait_session_exited(&api, sb.id(), session.id).await?;
        ensure!(
            session.exit == Some(ExitStatus::code(0)) && session.end_offset == expected.len() as u64,
            "the session is reported as {session:?}, expected exit 0 at offset {}",
            expected.len()
        );
        check_stored_exactly(&api, sb.id(), session.id, &expected).await?;

        let logs = cp
            .paddock(&["logs", sb.name(), &session.id.to_string()])
            .await?
            .ok()?;
        ensure!(
            sha256_hex(logs.stdout.as_bytes()) == sha256_hex(&expected),
            "`paddock logs` differs from the generator's output: {}",
            first_difference(logs.stdout.as_bytes(), &expected)
        );
        Ok(())
    })
    .await;
}

/// A graceful restart (SIGTERM, as Fly sends it before `kill_timeout`): the
/// control plane exits in time, and its successor's stored stream and the
/// reconnecting `paddock exec` are byte-exact, like after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_survives_a_graceful_restart() {
    within_for(LIMIT, async {
        let mut cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("cp-drained").await?;
        let expected = seq_output(SEQ_N);
        let n = SEQ_N.to_string();
        let mut exec = cp.paddock_proc(&["exec", sb.name(), "--", "seq", "1", &n])?;
        exec.stdout
            .wait_len(4 * MIB as usize, Duration::from_secs(120))
            .await
            .with_context(|| exec.logs())?;
        // fly.toml gives 30 s; the control plane needs far less.
        let status = cp.terminate(Duration::from_secs(15)).await?;
        ensure!(
            status.success(),
            "the control plane ended with {status} on SIGTERM\n{}",
            cp.logs()
        );
        cp.restart().await?;

        let status = exec.wait_exit(Duration::from_secs(240)).await?;
        let stdout = exec.stdout.bytes();
        ensure!(
            sha256_hex(&stdout) == sha256_hex(&expected),
            "exec's stdout differs after a graceful restart: {}",
            first_difference(&stdout, &expected)
        );
        ensure!(
            status.success(),
            "exec ended with {status}\n{}",
            exec.logs()
        );
        let api = cp.api();
        let session = only_session(&api, sb.id()).await?;
        let session = wait_session_exited(&api, sb.id(), session.id).await?;
        check_stored_exactly(&api, sb.id(), session.id, &expected).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_stream_survives_cuts_of_the_agent_link() {
    within_for(LIMIT, async {
        let cp = ControlPlane::start().await?;
        let proxy = LinkProxy::start(cp.url()).await?;
        let sb = cp
            .add_sandbox_with("link-cut", AgentdOptions::default().via(&proxy.url()))
            .await?;
        let expected = Arc::new(seq_output(SEQ_N));
        let api = cp.api();
        let session = api
            .open_command(sb.id(), "seq", &["1", &SEQ_N.to_string()])
            .await?;
        // Connected straight to the control plane, not through the proxy:
        // it sees the stream go on across the agent's outages.
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        watcher.set_sink(OutputSink::Verify(expected.clone()));

        for at in [2 * MIB, 8 * MIB] {
            watcher
                .recv_until_offset(at, Duration::from_secs(120))
                .await?;
            let refused = proxy.refused();
            proxy.cut();
            cp.wait_disconnected(sb.id()).await?;
            // agentd tried to come back and was turned away at least once.
            proxy
                .wait_refused(refused + 1, Duration::from_secs(30))
                .await
                .with_context(|| sb.agentd.logs())?;
            proxy.restore();
            cp.wait_connected(sb.id())
                .await
                .with_context(|| sb.agentd.logs())?;
        }

        let status = watcher.wait_exited(LIMIT).await?;
        ensure!(status.success(), "seq ended with {status:?}");
        ensure!(
            watcher.end_offset() == expected.len() as u64 && watcher.gaps().is_empty(),
            "the watcher's stream ends at {} with gaps {:?}; expected {} bytes without gaps",
            watcher.end_offset(),
            watcher.gaps(),
            expected.len()
        );
        check_stored_exactly(&api, sb.id(), session.id, &expected).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_spills_to_disk_while_the_link_is_down_and_arrives_whole() {
    within_for(LIMIT, async {
        let cp = ControlPlane::start().await?;
        let proxy = LinkProxy::start(cp.url()).await?;
        let state_dir = tempfile::Builder::new()
            .prefix("paddock-agentd-state-")
            .tempdir()?;
        let opts = AgentdOptions::default()
            .via(&proxy.url())
            .env("PADDOCK_AGENTD_MEMORY_BOUND", 65536)
            .env("PADDOCK_AGENTD_STATE_DIR", state_dir.path().display());
        let sb = cp.add_sandbox_with("spill", opts).await?;
        let rss = RssSampler::start(sb.agentd.pid());

        // About 20 MiB: the first part flows while the link is up, the rest
        // (released by the gate) while it is down.
        const FIRST: u64 = 100_000;
        const LAST: u64 = 2_500_000;
        let gate = sb.workdir.path().join("gate");
        let done = sb.workdir.path().join("done");
        let script = format!(
            "seq 1 {FIRST}; while [ ! -e {gate} ]; do sleep 0.05; done; seq {} {LAST}; touch {done}",
            FIRST + 1,
            gate = quoted(&gate),
            done = quoted(&done),
        );
        let expected = Arc::new(seq_output(LAST));
        let api = cp.api();
        let session = api.open_sh(sb.id(), &script).await?;
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        watcher.set_sink(OutputSink::Verify(expected.clone()));
        watcher
            .recv_until_offset(seq_output(FIRST).len() as u64, Duration::from_secs(60))
            .await?;

        proxy.cut();
        cp.wait_disconnected(sb.id()).await?;
        open_gate(&gate)?;
        let spilled = wait_until(
            "agentd's state dir to hold at least 1 MiB of spilled output",
            Duration::from_secs(60),
            || async { Ok(Some(dir_bytes(state_dir.path())).filter(|n| *n >= MIB)) },
        )
        .await
        .with_context(|| sb.agentd.logs())?;
        wait_until(
            "the generator to finish while the link is down",
            Duration::from_secs(120),
            || async { Ok(done.exists().then_some(())) },
        )
        .await
        .with_context(|| sb.agentd.logs())?;
        let spilled_at_end = dir_bytes(state_dir.path());
        ensure!(
            watcher.end_offset() < expected.len() as u64,
            "the watcher got the whole stream while the link was down"
        );

        proxy.restore();
        cp.wait_connected(sb.id())
            .await
            .with_context(|| sb.agentd.logs())?;
        let status = watcher.wait_exited(LIMIT).await?;
        ensure!(status.success(), "the generator ended with {status:?}");
        ensure!(
            watcher.end_offset() == expected.len() as u64 && watcher.gaps().is_empty(),
            "the watcher's stream ends at {} with gaps {:?}; expected {} bytes without gaps",
            watcher.end_offset(),
            watcher.gaps(),
            expected.len()
        );
        check_stored_exactly(&api, sb.id(), session.id, &expected).await?;

        let peak = rss.peak();
        eprintln!(
            "spill: {spilled} bytes seen first, {spilled_at_end} when the generator ended; agentd peak RSS {} KiB",
            peak / 1024
        );
        ensure!(
            peak < 64 * MIB,
            "agentd's resident memory peaked at {} MiB with a 64 KiB memory bound (limit 64 MiB)",
            peak / MIB
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_disk_cap_becomes_a_gap_that_watchers_are_told_of() {
    within_for(LIMIT, async {
        let cp = ControlPlane::start().await?;
        let proxy = LinkProxy::start(cp.url()).await?;
        let state_dir = tempfile::Builder::new()
            .prefix("paddock-agentd-state-")
            .tempdir()?;
        let opts = AgentdOptions::default()
            .via(&proxy.url())
            .env("PADDOCK_AGENTD_MEMORY_BOUND", 16384)
            .env("PADDOCK_AGENTD_DISK_CAP", 65536)
            .env("PADDOCK_AGENTD_STATE_DIR", state_dir.path().display());
        let sb = cp.add_sandbox_with("disk-cap", opts).await?;

        // About 4 MiB while the link is down, 50 times the cap.
        const FIRST: u64 = 20_000;
        const LAST: u64 = 600_000;
        let gate = sb.workdir.path().join("gate");
        let done = sb.workdir.path().join("done");
        let script = format!(
            "seq 1 {FIRST}; while [ ! -e {gate} ]; do sleep 0.05; done; seq {} {LAST}; touch {done}",
            FIRST + 1,
            gate = quoted(&gate),
            done = quoted(&done),
        );
        let expected = seq_output(LAST);
        let api = cp.api();
        let session = api.open_sh(sb.id(), &script).await?;
        let mut live = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        live.recv_until_offset(seq_output(FIRST).len() as u64, Duration::from_secs(60))
            .await?;

        proxy.cut();
        cp.wait_disconnected(sb.id()).await?;
        open_gate(&gate)?;
        wait_until(
            "the generator to finish while the link is down",
            Duration::from_secs(120),
            || async { Ok(done.exists().then_some(())) },
        )
        .await
        .with_context(|| sb.agentd.logs())?;
        proxy.restore();
        cp.wait_connected(sb.id())
            .await
            .with_context(|| sb.agentd.logs())?;

        let status = live.wait_exited(LIMIT).await?;
        ensure!(status.success(), "the generator ended with {status:?}");
        let stored = api.output(sb.id(), session.id, None, None).await?;
        ensure!(
            !stored.gaps.is_empty(),
            "{} bytes went through a 64 KiB disk cap while the link was down, yet the output endpoint reports no gap (header {:?}; {} bytes stored of {})",
            expected.len() - seq_output(FIRST).len(),
            stored.gaps_header,
            stored.bytes.len(),
            expected.len()
        );
        let want = without_gaps(&expected, &stored.gaps);
        ensure!(
            stored.bytes == want,
            "the stored bytes around the gaps {:?} are wrong: {}",
            stored.gaps,
            first_difference(&stored.bytes, &want)
        );

        // The watcher that was there all along, and one that replays from 0
        // afterwards, are both told of the hole, and get the rest right.
        let mut replay = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        replay.wait_exited(LIMIT).await?;
        for (name, client) in [("the live watcher", &live), ("a replay from 0", &replay)] {
            let gaps: Vec<(u64, u64)> = client.gaps().iter().map(|(f, t, _)| (*f, *t)).collect();
            ensure!(
                !gaps.is_empty(),
                "{name} received no gap message; the store has gaps {:?}",
                stored.gaps
            );
            ensure!(
                client.end_offset() == expected.len() as u64,
                "{name}'s stream ends at {}, the generator printed {} bytes",
                client.end_offset(),
                expected.len()
            );
            let want = without_gaps(&expected, &gaps);
            ensure!(
                client.output() == want.as_slice(),
                "{name} got wrong bytes around its gaps {gaps:?}: {}",
                first_difference(client.output(), &want)
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_while_the_control_plane_is_down_keeps_its_exit_status() {
    within_for(LIMIT, async {
        let mut cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("ends-in-the-dark").await?;
        let pid_file = sb.workdir.path().join("pid");
        let gate = sb.workdir.path().join("gate");
        let script = format!(
            "echo $$ > {pid}; while [ ! -e {gate} ]; do sleep 0.05; done; echo last-words; exit 7",
            pid = quoted(&pid_file),
            gate = quoted(&gate),
        );
        let session = cp.api().open_sh(sb.id(), &script).await?;
        let pid: u32 = wait_until(
            "the session to write its pid",
            Duration::from_secs(15),
            || async {
                let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
                Ok(text.trim().parse().ok())
            },
        )
        .await?;

        cp.kill();
        open_gate(&gate)?;
        // The process is gone from /proc once agentd has reaped it, so
        // agentd knows the exit status while nobody is there to tell.
        wait_until(
            "agentd to reap the session's process",
            Duration::from_secs(30),
            || async { Ok((!Path::new(&format!("/proc/{pid}")).exists()).then_some(())) },
        )
        .await
        .with_context(|| sb.agentd.logs())?;
        cp.restart().await?;
        cp.wait_connected(sb.id())
            .await
            .with_context(|| sb.agentd.logs())?;

        let api = cp.api();
        let info = wait_session_exited(&api, sb.id(), session.id)
            .await
            .with_context(|| sb.agentd.logs())?;
        ensure!(
            info.exit == Some(ExitStatus::code(7)),
            "the session ended with exit 7 but is reported as {info:?}"
        );
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        let status = watcher.wait_exited(Duration::from_secs(30)).await?;
        ensure!(
            status == ExitStatus::code(7),
            "a watcher was told the session ended with {status:?}, not exit 7"
        );
        ensure!(
            watcher.output_text().contains("last-words"),
            "the output printed while the control plane was down is missing: {:?}",
            watcher.output_text()
        );
        let out = cp.paddock(&["sessions", sb.name(), "--json"]).await?.ok()?;
        let listed = paddock_tests::parse_sessions(&out.stdout)?;
        ensure!(
            listed
                .iter()
                .any(|s| s.id == session.id && s.exit == Some(ExitStatus::code(7))),
            "`paddock sessions` does not show exit 7: {}",
            out.stdout
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_prints_stored_output_whole_and_by_range() {
    within_for(LIMIT, async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("logs").await?;
        let out = cp
            .paddock(&["exec", sb.name(), "--", "seq", "1", "5000"])
            .await?
            .ok()?;
        let expected = seq_output(5000);
        ensure!(
            out.stdout.as_bytes() == expected.as_slice(),
            "exec printed the wrong bytes: {}",
            first_difference(out.stdout.as_bytes(), &expected)
        );
        let api = cp.api();
        let session = only_session(&api, sb.id()).await?;
        let id = session.id.to_string();

        let whole = cp.paddock(&["logs", sb.name(), &id]).await?.ok()?;
        ensure!(
            whole.stdout.as_bytes() == expected.as_slice(),
            "`paddock logs` printed the wrong bytes: {}",
            first_difference(whole.stdout.as_bytes(), &expected)
        );
        let part = cp
            .paddock(&["logs", sb.name(), &id, "--from", "1000", "--to", "2500"])
            .await?
            .ok()?;
        ensure!(
            part.stdout.as_bytes() == &expected[1000..2500],
            "`paddock logs --from 1000 --to 2500` printed the wrong bytes: {}",
            first_difference(part.stdout.as_bytes(), &expected[1000..2500])
        );
        let tail = cp
            .paddock(&["logs", sb.name(), &id, "--from", "20000"])
            .await?
            .ok()?;
        ensure!(
            tail.stdout.as_bytes() == &expected[20000..],
            "`paddock logs --from 20000` printed the wrong bytes: {}",
            first_difference(tail.stdout.as_bytes(), &expected[20000..])
        );

        let stored = api
            .output(sb.id(), session.id, Some(1000), Some(2500))
            .await?;
        ensure!(
            stored.bytes == expected[1000..2500] && stored.gaps.is_empty(),
            "the output endpoint's range 1000..2500 is wrong (gaps {:?}): {}",
            stored.gaps_header,
            first_difference(&stored.bytes, &expected[1000..2500])
        );
        Ok(())
    })
    .await;
}
