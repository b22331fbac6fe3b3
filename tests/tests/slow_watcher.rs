//! A live watcher that stops reading costs nobody anything: the other
//! watchers get every byte, the control plane's memory stays bounded, and
//! the stalled watcher, once it reads again, is skipped ahead with a gap and
//! a fresh snapshot instead of being fed the backlog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use paddock_tests::{
    rss_bytes, within_for, x_lines_command, x_lines_output, ControlPlane, OutputSink, RssSampler,
    StreamClient, StreamOptions, MIB,
};

/// 256 MiB of `x` in lines of 100 (about 261 MiB through the PTY).
const TOTAL: u64 = 256 * MIB;
const WIDTH: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_live_watcher_slows_nobody_and_costs_bounded_memory() {
    within_for(Duration::from_secs(600), async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("stalled").await?;
        let gate = sb.workdir.path().join("gate");
        let script = format!(
            "while [ ! -e '{}' ]; do sleep 0.05; done; {}",
            gate.display(),
            x_lines_command(TOTAL, WIDTH)
        );
        let expected = Arc::new(x_lines_output(TOTAL, WIDTH));
        let session = cp.api().open_sh(sb.id(), &script).await?;
        let connect = |opts| StreamClient::connect(cp.url(), cp.token(), sb.id(), session.id, opts);

        // Joins live (no `from`) and then reads nothing until the end.
        let mut stalled = connect(StreamOptions::watch().from(None).peer("stalled")).await?;
        stalled.set_sink(OutputSink::Verify(expected.clone()));
        let mut reader = connect(StreamOptions::watch().peer("reader")).await?;
        reader.set_sink(OutputSink::Verify(expected.clone()));

        let baseline = rss_bytes(cp.pid())?;
        let rss = RssSampler::start(cp.pid());
        let started = Instant::now();
        std::fs::write(&gate, b"go")?;
        let status = reader.wait_exited(Duration::from_secs(540)).await?;
        let elapsed = started.elapsed();
        let peak = rss.peak();
        eprintln!(
            "{} MiB in {elapsed:?} ({:.1} MiB/s); control plane RSS {} MiB before, peak {} MiB",
            expected.len() as u64 / MIB,
            expected.len() as f64 / MIB as f64 / elapsed.as_secs_f64(),
            baseline / MIB,
            peak / MIB
        );
        ensure!(status.success(), "the generator ended with {status:?}");
        ensure!(
            reader.end_offset() == expected.len() as u64
                && reader.received() == expected.len() as u64
                && reader.gaps().is_empty(),
            "the reader got {} bytes up to offset {} with gaps {:?}; expected all {}",
            reader.received(),
            reader.end_offset(),
            reader.gaps(),
            expected.len()
        );
        ensure!(
            peak.saturating_sub(baseline) < 64 * MIB,
            "the control plane's resident memory grew by {} MiB (from {} to {} MiB) while a live watcher stalled through {} MiB",
            peak.saturating_sub(baseline) / MIB,
            baseline / MIB,
            peak / MIB,
            expected.len() as u64 / MIB
        );

        // Reading again, the stalled watcher is skipped to the present: a
        // gap and a fresh snapshot, every byte it does get at its true
        // offset (the Verify sink), and the end.
        let resumed = Instant::now();
        stalled.wait_exited(Duration::from_secs(240)).await?;
        eprintln!(
            "the stalled watcher then took {:?} to the end: {} bytes received, gaps {:?}, {} snapshots",
            resumed.elapsed(),
            stalled.received(),
            stalled
                .gaps()
                .iter()
                .map(|(f, t, _)| (*f, *t))
                .collect::<Vec<_>>(),
            stalled.snapshots().len()
        );
        ensure!(
            !stalled.gaps().is_empty() && stalled.snapshots().len() >= 2,
            "the stalled watcher got {} gaps and {} snapshots after {} of {} bytes; expected a skip (a gap and a fresh snapshot)",
            stalled.gaps().len(),
            stalled.snapshots().len(),
            stalled.received(),
            expected.len()
        );
        Ok(())
    })
    .await;
}
