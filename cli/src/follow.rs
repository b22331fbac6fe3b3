//! `paddock exec` and `paddock watch`: follow a session's output to stdout
//! until it exits, reconnecting without losing or repeating a byte.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use paddock_protocol::api::OpenSessionRequest;
use paddock_protocol::{ExitStatus, SessionId, StreamMode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::api::Client;
use crate::stream::{Event, SessionStream, StreamError, StreamRequest};
use crate::term;

/// How many times in a row a dropped stream is reopened before giving up.
pub const MAX_RECONNECTS: u32 = 5;
/// The wait before the first reconnect; it doubles with each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

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
    let session = client.open_session(&args.sandbox, &request).await?;
    // from=0: output the command printed before the stream opened is replayed.
    let status = follow(client, &args.sandbox, session.id, 0).await?;
    Ok(status.shell_code())
}

/// Shows a session's output until it ends, then says how it ended.
pub async fn watch(client: &Client, sandbox: &str, session: SessionId, from: u64) -> Result<i32> {
    let status = follow(client, sandbox, session, from).await?;
    term::note(&format!("[session {session} ended: {status}]"));
    Ok(0)
}

/// Copies the session's output from offset `from` to stdout until it exits.
async fn follow(
    client: &Client,
    sandbox: &str,
    session: SessionId,
    from: u64,
) -> Result<ExitStatus> {
    let mut stdout = tokio::io::stdout();
    let mut next = from;
    let mut failures = 0;
    loop {
        let req = StreamRequest {
            mode: StreamMode::Watch,
            take: false,
            from: Some(next),
        };
        let mut stream = match SessionStream::connect(client, sandbox, session, &req).await {
            Ok((stream, _welcome)) => stream,
            // The first connection's failure is reported as is: there is
            // nothing to resume yet, and the message says what to fix.
            Err(StreamError::Dropped(why)) if next != from || failures > 0 => {
                failures += 1;
                if failures > MAX_RECONNECTS {
                    anyhow::bail!("{why} (gave up after {MAX_RECONNECTS} attempts to reconnect)");
                }
                backoff(failures, &why, next).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let started_at = stream.next_offset();
        match pump(&mut stream, &mut stdout).await? {
            Ok(status) => {
                stream.close().await;
                return Ok(status);
            }
            Err(why) => {
                // Progress since the last drop earns a fresh set of attempts.
                if stream.next_offset() > started_at {
                    failures = 0;
                }
                next = stream.next_offset();
                failures += 1;
                if failures > MAX_RECONNECTS {
                    anyhow::bail!("{why} (gave up after {MAX_RECONNECTS} attempts to reconnect)");
                }
                backoff(failures, &why, next).await;
            }
        }
    }
}

/// Delivers events until the session exits (`Ok(Ok(status))`) or the
/// connection drops (`Ok(Err(why))`); refusals and local failures are errors.
async fn pump(
    stream: &mut SessionStream,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<Result<ExitStatus, String>> {
    loop {
        match stream.next_event().await {
            Ok(Event::Output(bytes)) => write_output(out, &bytes).await?,
            Ok(Event::Gap { from, to, reason }) => note_gap(from, to, &reason),
            Ok(Event::Exited { status, .. }) => return Ok(Ok(status)),
            Ok(Event::ModeChanged { .. } | Event::DriverChanged(_) | Event::Resized(_)) => {}
            Err(StreamError::Dropped(why)) => return Ok(Err(why)),
            Err(err @ StreamError::Refused { .. }) => return Err(err.into()),
        }
    }
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

/// Says that the stream dropped and waits before the next attempt.
pub async fn backoff(failures: u32, why: &str, next: u64) {
    let delay = FIRST_BACKOFF * 2u32.saturating_pow(failures.saturating_sub(1));
    term::note(&format!(
        "[paddock: {why}; reconnecting from offset {next} (attempt {failures} of {MAX_RECONNECTS})]"
    ));
    tokio::time::sleep(delay).await;
}
