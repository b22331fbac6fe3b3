//! `paddock exec` and `paddock watch`: follow a session's output to stdout
//! until it exits. `watch` joins live (the current screen, then new output)
//! unless asked to replay from an offset; a lost connection is reopened from
//! the first byte not yet printed, so stdout carries every byte once.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use paddock_protocol::api::{OpenSessionRequest, StreamQuery};
use paddock_protocol::{ExitStatus, SessionId, StreamMode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::api::Client;
use crate::inbox::Event;
use crate::reconnect::{GaveUp, Retry};
use crate::stream::{SessionStream, StreamError};
use crate::term;

/// What `paddock exec` asks for.
#[derive(Debug, Clone)]
pub struct ExecArgs {
    pub sandbox: String,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    pub command: String,
    pub args: Vec<String>,
}

/// Runs a command in a new session and returns the exit code a shell would report.
pub async fn exec(client: &Client, args: ExecArgs) -> Result<i32> {
    let request = OpenSessionRequest {
        command: Some(args.command),
        args: args.args,
        cwd: args.cwd,
        env: args.env,
        size: Some(term::size_or_default()),
    };
    // Opening is not retried: it is not idempotent, and its failure says what to fix.
    let session = client.open_session(&args.sandbox, &request).await?;
    // from=0: output the command printed before the stream opened is replayed.
    // The session exists, so even the first stream is worth retrying.
    let mut stdout = tokio::io::stdout();
    let status = follow(
        client,
        &args.sandbox,
        session.id,
        Some(0),
        true,
        &mut stdout,
    )
    .await?;
    Ok(status.shell_code())
}

/// Shows a session's output until it ends, then says how it ended. Without
/// `from` it joins live: a redraw of the current screen, then new output.
pub async fn watch(
    client: &Client,
    sandbox: &str,
    session: SessionId,
    from: Option<u64>,
) -> Result<i32> {
    let mut stdout = tokio::io::stdout();
    let status = follow(client, sandbox, session, from, false, &mut stdout).await?;
    term::note(&format!("[session {session} ended: {status}]"));
    Ok(0)
}

/// Where the next connection of a stream asked to start at `asked` (`None`:
/// live) resumes: live again while the screen was never drawn, else at the
/// first byte not yet shown.
pub fn resume_from(asked: Option<u64>, drawn: bool, next: u64) -> Option<u64> {
    match asked {
        None if !drawn => None,
        _ => Some(next),
    }
}

/// How one connection of a stream ended.
enum Ended {
    Exited(ExitStatus),
    Dropped { why: String, progressed: bool },
}

/// Copies the session's output to `out` until it exits, reconnecting when
/// the connection is lost. The first connection's failure is final unless
/// `retry_first` (the session was just created, so it exists).
pub(crate) async fn follow(
    client: &Client,
    sandbox: &str,
    session: SessionId,
    asked: Option<u64>,
    retry_first: bool,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<ExitStatus> {
    let mut retry = Retry::new();
    let mut drawn = asked.is_some();
    let mut next = asked.unwrap_or(0);
    let mut reconnecting = false;
    loop {
        let query = StreamQuery {
            mode: StreamMode::Watch,
            take: false,
            from: resume_from(asked, drawn, next),
            render: Default::default(),
        };
        let mut stream = match SessionStream::connect(client, sandbox, session, &query).await {
            Ok((stream, _welcome)) => {
                retry.connected();
                stream
            }
            Err(StreamError::Dropped(why)) if reconnecting || retry_first => {
                if reconnecting {
                    retry.failed(why);
                } else {
                    retry.lost(why, false);
                    reconnecting = true;
                }
                retry
                    .wait()
                    .await
                    .map_err(|gave_up| gave_up_error(gave_up, sandbox, session, query.from))?;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        match pump(&mut stream, out, &mut drawn).await? {
            Ended::Exited(status) => {
                stream.close().await;
                return Ok(status);
            }
            Ended::Dropped { why, progressed } => {
                next = stream.next_offset();
                retry.lost(why, progressed);
                reconnecting = true;
                let from = resume_from(asked, drawn, next);
                retry
                    .wait()
                    .await
                    .map_err(|gave_up| gave_up_error(gave_up, sandbox, session, from))?;
            }
        }
    }
}

/// Delivers events until the session exits or the connection drops;
/// refusals and local failures are errors. Sets `drawn` once a snapshot
/// has been shown.
async fn pump(
    stream: &mut SessionStream,
    out: &mut (impl AsyncWrite + Unpin),
    drawn: &mut bool,
) -> Result<Ended> {
    let mut progressed = false;
    loop {
        match stream.next_event().await {
            Ok(Event::Output(bytes)) => {
                write_output(out, &bytes).await?;
                progressed = true;
            }
            Ok(Event::Snapshot {
                screen, skipped, ..
            }) => {
                if let Some((from, to)) = skipped {
                    note_skipped(from, to);
                }
                write_output(out, screen.as_bytes()).await?;
                *drawn = true;
                progressed = true;
            }
            Ok(Event::Gap { from, to, reason }) => {
                note_gap(from, to, &reason);
                progressed = true;
            }
            Ok(Event::Exited { status, .. }) => return Ok(Ended::Exited(status)),
            Ok(Event::ModeChanged { .. } | Event::DriverChanged(_) | Event::Resized(_)) => {}
            Err(StreamError::Dropped(why)) => return Ok(Ended::Dropped { why, progressed }),
            Err(err @ StreamError::Refused { .. }) => return Err(err.into()),
        }
    }
}

/// The error of a follow that stopped reconnecting, with the command that carries on.
fn gave_up_error(
    gave_up: GaveUp,
    sandbox: &str,
    session: SessionId,
    from: Option<u64>,
) -> anyhow::Error {
    let from = from.map(|n| format!(" --from {n}")).unwrap_or_default();
    anyhow!(
        "{gave_up}: the session may still be running; carry on with `paddock watch {sandbox} {session}{from}`"
    )
}

/// Writes output and flushes it, so a person sees every byte as it arrives.
pub async fn write_output(out: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)
        .await
        .context("could not write the session's output to stdout")?;
    out.flush()
        .await
        .context("could not write the session's output to stdout")
}

pub fn note_gap(from: u64, to: u64, reason: &str) {
    term::note(&format!(
        "[paddock: {} bytes of output (offsets {from}..{to}) were lost: {reason}]",
        to.saturating_sub(from)
    ));
}

/// Says that this client fell behind and was skipped ahead to a fresh screen.
pub fn note_skipped(from: u64, to: u64) {
    term::note(&skipped_note(from, to));
}

fn skipped_note(from: u64, to: u64) -> String {
    format!(
        "[skipped {} bytes: fell behind; screen redrawn]",
        to.saturating_sub(from)
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fake::{FakeControlPlane, SESSION};

    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    #[test]
    fn a_live_stream_rejoins_live_until_it_has_drawn_the_screen() {
        assert_eq!(resume_from(None, false, 120), None);
        assert_eq!(resume_from(None, true, 120), Some(120));
        assert_eq!(resume_from(Some(0), true, 120), Some(120));
        // A replay resumes where it is even before printing anything.
        assert_eq!(resume_from(Some(7), true, 7), Some(7));
    }

    #[test]
    fn the_skip_note_counts_the_bytes_not_shown() {
        assert_eq!(
            skipped_note(100, 5100),
            "[skipped 5000 bytes: fell behind; screen redrawn]"
        );
    }

    #[test]
    fn giving_up_names_the_command_that_carries_on() {
        let gave_up = GaveUp {
            why: "the connection ended".to_owned(),
            tried_for: Duration::from_secs(61),
        };
        let msg = gave_up_error(gave_up.clone(), "local-1", SESSION, Some(42)).to_string();
        assert_eq!(
            msg,
            "the connection ended (gave up reconnecting after 61s): the session may still be running; carry on with `paddock watch local-1 4 --from 42`"
        );
        let msg = gave_up_error(gave_up, "local-1", SESSION, None).to_string();
        assert!(msg.ends_with("`paddock watch local-1 4`"), "{msg}");
    }

    #[tokio::test]
    async fn exec_resumes_after_a_restart_without_losing_or_repeating_a_byte() {
        let cp = FakeControlPlane::start().await;
        let mut out = Vec::new();
        let server = async {
            let (query, mut fake) = cp.accept().await;
            assert_eq!(query, "mode=watch&from=0");
            fake.welcome(0).await;
            fake.output(0, b"hello ").await;
            fake.close(1001, "control plane shutting down").await;
            // The restarted control plane is not listening yet.
            cp.refuse(503, "").await;
            let (query, mut fake) = cp.accept().await;
            assert_eq!(query, "mode=watch&from=6");
            fake.welcome(6).await;
            // Replays may overlap what was printed.
            fake.output(3, b"lo world").await;
            fake.exited(3, 11).await;
            fake.close(1000, "session ended").await;
        };
        let following = follow(cp.client(), "sb", SESSION, Some(0), true, &mut out);
        let (status, ()) =
            tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(following, server) })
                .await
                .unwrap();
        assert_eq!(status.unwrap(), ExitStatus::code(3));
        assert_eq!(String::from_utf8(out).unwrap(), "hello world");
    }

    #[tokio::test]
    async fn watch_joins_live_and_resumes_by_offset_after_a_dropped_link() {
        let cp = FakeControlPlane::start().await;
        let mut out = Vec::new();
        let server = async {
            // Dropped before the snapshot: nothing was drawn, so join live again.
            let (query, mut fake) = cp.accept().await;
            assert_eq!(query, "mode=watch");
            fake.welcome(40).await;
            drop(fake);
            let (query, mut fake) = cp.accept().await;
            assert_eq!(query, "mode=watch");
            fake.welcome(50).await;
            fake.snapshot(50, "SCREEN|").await;
            fake.output(50, b"ab").await;
            drop(fake);
            // Drawn: resume from the offset, never from a new snapshot.
            let (query, mut fake) = cp.accept().await;
            assert_eq!(query, "mode=watch&from=52");
            fake.welcome(52).await;
            fake.output(52, b"c").await;
            fake.exited(0, 53).await;
        };
        let following = follow(cp.client(), "sb", SESSION, None, false, &mut out);
        let (status, ()) =
            tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(following, server) })
                .await
                .unwrap();
        assert_eq!(status.unwrap(), ExitStatus::code(0));
        assert_eq!(String::from_utf8(out).unwrap(), "SCREEN|abc");
    }

    #[tokio::test]
    async fn a_skip_ahead_redraws_the_screen() {
        let cp = FakeControlPlane::start().await;
        let mut out = Vec::new();
        let server = async {
            let (_, mut fake) = cp.accept().await;
            fake.welcome(0).await;
            fake.snapshot(0, "S0|").await;
            fake.output(0, b"ab").await;
            fake.send(paddock_protocol::ControlToClient::Gap {
                from: 2,
                to: 900,
                reason: "fell behind".to_owned(),
            })
            .await;
            fake.snapshot(900, "S900|").await;
            fake.output(900, b"z").await;
            fake.exited(0, 901).await;
        };
        let following = follow(cp.client(), "sb", SESSION, None, false, &mut out);
        let (status, ()) =
            tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(following, server) })
                .await
                .unwrap();
        status.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "S0|abS900|z");
    }

    #[tokio::test]
    async fn refusals_end_following_at_once() {
        let cp = FakeControlPlane::start().await;
        let mut out = Vec::new();
        let server = async {
            let (_, mut fake) = cp.accept().await;
            fake.welcome(0).await;
            fake.output(0, b"x").await;
            fake.close(1001, "bye").await;
            // The session is gone after the restart: final.
            cp.refuse(
                404,
                r#"{"error":{"code":"not_found","message":"no session 4"}}"#,
            )
            .await;
        };
        let following = follow(cp.client(), "sb", SESSION, Some(0), true, &mut out);
        let (result, ()) =
            tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(following, server) })
                .await
                .unwrap();
        let err = result.unwrap_err().to_string();
        assert!(err.contains("no session 4 in sandbox `sb`"), "{err}");

        // A refusal on the stream itself (close code 4003) is final too.
        let server = async {
            let (_, mut fake) = cp.accept().await;
            fake.welcome(0).await;
            fake.close(4003, "refused").await;
        };
        let following = follow(cp.client(), "sb", SESSION, Some(0), true, &mut out);
        let (result, ()) =
            tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(following, server) })
                .await
                .unwrap();
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn watch_fails_at_once_when_the_first_stream_cannot_open() {
        let cp = FakeControlPlane::start().await;
        let mut out = Vec::new();
        let following = follow(cp.client(), "sb", SESSION, None, false, &mut out);
        let (result, _) = tokio::time::timeout(TEST_TIMEOUT, async {
            tokio::join!(following, cp.refuse(502, "bad gateway"))
        })
        .await
        .unwrap();
        let err = result.unwrap_err().to_string();
        assert!(err.contains("HTTP 502"), "{err}");
    }
}
