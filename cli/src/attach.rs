//! `paddock attach`: drive a session from the local terminal in raw mode,
//! with `Ctrl-]` to detach and a quiet fall-back to watching when someone
//! else takes over. An existing session is joined live (its current screen
//! is redrawn first); a lost connection is reopened from the first byte not
//! yet shown, and `Ctrl-]` still detaches while that is under way.

use std::io::Read;

use anyhow::{anyhow, Context, Result};
use paddock_protocol::api::{OpenSessionRequest, StreamQuery};
use paddock_protocol::{ErrorCode, SessionId, StreamMode};
use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};
use tokio::sync::mpsc;

use crate::api::Client;
use crate::follow::{note_gap, note_skipped, resume_from, write_output};
use crate::inbox::Event;
use crate::reconnect::Retry;
use crate::stream::{SessionStream, StreamError, Welcome};
use crate::term::{self, RawMode};

/// `Ctrl-]`, the byte that detaches instead of being typed into the session.
pub const DETACH_KEY: u8 = 0x1d;

/// Attaches to `session`, or to a new default shell when `None`; returns the
/// exit code for this process.
pub async fn attach(
    client: &Client,
    sandbox: &str,
    session: Option<SessionId>,
    take: bool,
) -> Result<i32> {
    let mut retry = Retry::new();
    // A new shell is followed from its first byte; an existing session is
    // joined live, with a redraw of its screen.
    let (session, asked) = match session {
        Some(id) => (id, None),
        None => {
            let request = OpenSessionRequest {
                size: Some(term::size_or_default()),
                ..OpenSessionRequest::default()
            };
            // Opening is not retried: it is not idempotent.
            let info = client.open_session(sandbox, &request).await?;
            term::note(&format!(
                "[opened session {} in sandbox {sandbox}]",
                info.id
            ));
            (info.id, Some(0))
        }
    };
    let query = StreamQuery {
        mode: StreamMode::Attach,
        take,
        from: asked,
        render: Default::default(),
    };
    let (mut stream, welcome) = match SessionStream::connect(client, sandbox, session, &query).await
    {
        Ok(opened) => {
            retry.connected();
            opened
        }
        // The shell was just created, so it is worth waiting for the stream.
        Err(StreamError::Dropped(why)) if asked.is_some() => {
            retry.lost(why, false);
            let mut mode = StreamMode::Attach;
            reconnect(client, sandbox, session, &mut mode, asked, &mut retry).await?
        }
        Err(err) => return Err(attach_error(err, sandbox, session, take)),
    };
    let mut mode = welcome.mode;
    match mode {
        StreamMode::Attach => term::note(&format!(
            "[attached to session {session} in sandbox {sandbox}; Ctrl-] detaches]"
        )),
        StreamMode::Watch => term::note(&format!(
            "[watching session {session}: {} drives it; Ctrl-] detaches]",
            welcome
                .session
                .driver
                .as_deref()
                .unwrap_or("another client")
        )),
    }

    let mut raw = RawMode::enable_if_tty()?;
    let mut rx_stdin = spawn_stdin_reader()?;
    let mut stdin_open = true;
    // Without SIGWINCH the session keeps its size; that is no reason to refuse attaching.
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut stdout = tokio::io::stdout();
    send_local_size(&mut stream, mode).await;
    // Whether the screen was drawn (a snapshot shown, or a replay begun), and
    // whether this connection delivered anything: both decide how to reconnect.
    let mut drawn = asked.is_some();
    let mut progressed = false;

    loop {
        tokio::select! {
            event = stream.next_event() => match event {
                Ok(Event::Output(bytes)) => {
                    write_output(&mut stdout, &bytes).await?;
                    progressed = true;
                }
                Ok(Event::Snapshot { screen, skipped, .. }) => {
                    // The note goes first: the redraw then paints over it.
                    if let Some((from, to)) = skipped {
                        note_skipped(from, to);
                    }
                    write_output(&mut stdout, screen.as_bytes()).await?;
                    drawn = true;
                    progressed = true;
                }
                Ok(Event::Gap { from, to, reason }) => {
                    note_gap(from, to, &reason);
                    progressed = true;
                }
                Ok(Event::Exited { status, .. }) => {
                    stream.close().await;
                    raw.restore();
                    term::note(&format!("[session {session} ended: {status}]"));
                    return Ok(status.shell_code());
                }
                Ok(Event::ModeChanged { mode: new, reason }) => {
                    mode = new;
                    match mode {
                        StreamMode::Watch => term::note(&format!(
                            "[paddock: you are now watching session {session} ({reason}); your input is ignored; Ctrl-] detaches]"
                        )),
                        StreamMode::Attach => {
                            term::note(&format!("[paddock: you drive session {session} again ({reason})]"));
                            send_local_size(&mut stream, mode).await;
                        }
                    }
                }
                Ok(Event::DriverChanged(driver)) => {
                    // Whoever drives now matters to a watcher; that nobody does, less so.
                    if let (StreamMode::Watch, Some(who)) = (mode, driver) {
                        term::note(&format!("[paddock: session {session} is now driven by {who}]"));
                    }
                }
                Ok(Event::Resized(_)) => {}
                Err(StreamError::Dropped(why)) => {
                    retry.lost(why, std::mem::take(&mut progressed));
                    let from = resume_from(asked, drawn, stream.next_offset());
                    // On failure the guard restores the terminal as `?` returns.
                    let reopened = tokio::select! {
                        reopened = reconnect(client, sandbox, session, &mut mode, from, &mut retry) => reopened?,
                        () = wait_for_detach(&mut rx_stdin, &mut stdin_open) => {
                            raw.restore();
                            term::note(&detached_note(sandbox, session));
                            return Ok(0);
                        }
                    };
                    (stream, _) = reopened;
                    send_local_size(&mut stream, mode).await;
                }
                Err(err) => {
                    raw.restore();
                    return Err(attach_error(err, sandbox, session, take));
                }
            },
            chunk = rx_stdin.recv(), if stdin_open => {
                let Some(bytes) = chunk else {
                    // End of input: keep showing the session until it ends or Ctrl-C.
                    stdin_open = false;
                    continue;
                };
                let (typed, detach) = split_at_detach(&bytes);
                if mode == StreamMode::Attach && !typed.is_empty() {
                    // A failed send means a dropped connection, which the
                    // next read reports and repairs; the keystrokes are lost.
                    let _ = stream.send_input(typed).await;
                }
                if detach {
                    stream.close().await;
                    raw.restore();
                    term::note(&detached_note(sandbox, session));
                    return Ok(0);
                }
            },
            Some(()) = next_winch(&mut winch) => send_local_size(&mut stream, mode).await,
        }
    }
}

fn detached_note(sandbox: &str, session: SessionId) -> String {
    format!("\ndetached from session {session} (reattach: paddock attach {sandbox} {session})")
}

/// Returns when the person presses the detach key; what else they type
/// while the session is out of reach is dropped.
async fn wait_for_detach(rx_stdin: &mut mpsc::Receiver<Vec<u8>>, stdin_open: &mut bool) {
    while *stdin_open {
        match rx_stdin.recv().await {
            Some(bytes) if split_at_detach(&bytes).1 => return,
            Some(_) => {}
            None => *stdin_open = false,
        }
    }
    std::future::pending().await
}

/// The bytes to type before the detach key, and whether the key was pressed.
pub fn split_at_detach(bytes: &[u8]) -> (&[u8], bool) {
    match bytes.iter().position(|&b| b == DETACH_KEY) {
        Some(pos) => (&bytes[..pos], true),
        None => (bytes, false),
    }
}

/// Sends the local terminal's size, if this client drives and there is a terminal.
async fn send_local_size(stream: &mut SessionStream, mode: StreamMode) {
    if mode != StreamMode::Attach {
        return;
    }
    if let Some(size) = term::local_size() {
        // As with input, a failure here is a dropped connection the next read reports.
        let _ = stream.send_resize(size).await;
    }
}

async fn next_winch(winch: &mut Option<UnixSignal>) -> Option<()> {
    match winch {
        Some(winch) => winch.recv().await,
        None => std::future::pending().await,
    }
}

/// Reopens a lost stream at `from` in the mode the client had, retrying
/// per `retry`; if someone else took the session meanwhile, carries on as a
/// watcher and sets `mode`.
async fn reconnect(
    client: &Client,
    sandbox: &str,
    session: SessionId,
    mode: &mut StreamMode,
    from: Option<u64>,
    retry: &mut Retry,
) -> Result<(SessionStream, Welcome)> {
    loop {
        retry.wait().await.map_err(|gave_up| {
            anyhow!("{gave_up}: the session may still be running; reattach with `paddock attach {sandbox} {session}`")
        })?;
        let query = StreamQuery {
            mode: *mode,
            take: false,
            from,
            render: Default::default(),
        };
        match SessionStream::connect(client, sandbox, session, &query).await {
            Ok((stream, welcome)) => {
                retry.connected();
                *mode = welcome.mode;
                return Ok((stream, welcome));
            }
            Err(StreamError::Dropped(why)) => retry.failed(why),
            Err(StreamError::Refused {
                code: Some(ErrorCode::DriverExists),
                message,
            }) if *mode == StreamMode::Attach => {
                term::note(&format!(
                    "[paddock: {message}; watching instead, your input is ignored]"
                ));
                *mode = StreamMode::Watch;
                retry.failed(message);
            }
            Err(err) => return Err(attach_error(err, sandbox, session, false)),
        }
    }
}

/// Adds to a refusal the hint that fixes it.
fn attach_error(err: StreamError, sandbox: &str, session: SessionId, take: bool) -> anyhow::Error {
    match err {
        StreamError::Refused {
            code: Some(ErrorCode::DriverExists),
            message,
        } if !take && !message.contains("--take") => anyhow!("{message}: use --take to take over"),
        StreamError::Refused {
            code: None,
            message,
        } if !take && message.contains("driv") => {
            anyhow!("{message}: use --take to take over")
        }
        StreamError::Refused {
            code: Some(ErrorCode::SessionEnded),
            message,
        } => anyhow!(
            "{message}: see its output with `paddock watch {sandbox} {session}`, or start a shell with `paddock attach {sandbox}`"
        ),
        other => other.into(),
    }
}

/// Reads stdin on its own thread: a blocking read cannot be cancelled, so the
/// thread is not joined; the process exits past it.
fn spawn_stdin_reader() -> Result<mpsc::Receiver<Vec<u8>>> {
    // Bounded: when the stream is slow the reader blocks, which holds back
    // the keyboard rather than growing memory.
    let (tx_stdin, rx_stdin) = mpsc::channel::<Vec<u8>>(16);
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx_stdin.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
        .context("could not start the thread that reads the keyboard")?;
    Ok(rx_stdin)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use paddock_protocol::ControlToClient;

    use super::*;
    use crate::fake::{FakeControlPlane, SESSION};

    #[test]
    fn the_detach_key_ends_input_and_keeps_what_came_before() {
        assert_eq!(split_at_detach(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_at_detach(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_at_detach(b"\x1d"), (&b""[..], true));
    }

    #[test]
    fn refusals_get_the_hint_that_fixes_them() {
        let refused = StreamError::Refused {
            code: Some(ErrorCode::DriverExists),
            message: "session 4 is driven by owner (paddock/0.1.0)".to_owned(),
        };
        let msg = attach_error(refused, "local-1", SessionId(4), false).to_string();
        assert_eq!(
            msg,
            "session 4 is driven by owner (paddock/0.1.0): use --take to take over"
        );
        let ended = StreamError::Refused {
            code: Some(ErrorCode::SessionEnded),
            message: "session 4 has ended".to_owned(),
        };
        let msg = attach_error(ended, "local-1", SessionId(4), false).to_string();
        assert!(msg.contains("paddock watch local-1 4"), "{msg}");
        let dropped = StreamError::Dropped("the connection ended".to_owned());
        let msg = attach_error(dropped, "local-1", SessionId(4), false).to_string();
        assert_eq!(msg, "the connection ended");
    }

    #[tokio::test]
    async fn reconnecting_resumes_by_offset_and_watches_when_someone_else_drives() {
        let cp = FakeControlPlane::start().await;
        let server = async {
            // Another client took the session while this one was away.
            let (query, mut fake) = cp.accept().await;
            assert_eq!(query, "mode=attach&from=10");
            fake.send(ControlToClient::Error {
                code: ErrorCode::DriverExists,
                message: "session 4 is driven by owner".to_owned(),
            })
            .await;
            fake.close(4003, "session 4 is driven by owner").await;
            let (query, mut fake) = cp.accept().await;
            assert_eq!(query, "mode=watch&from=10");
            fake.welcome(10).await;
            fake
        };
        let mut retry = Retry::new();
        retry.lost("the connection ended".to_owned(), true);
        let mut mode = StreamMode::Attach;
        let reconnecting = reconnect(cp.client(), "sb", SESSION, &mut mode, Some(10), &mut retry);
        let (reopened, _fake) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(reconnecting, server)
        })
        .await
        .unwrap();
        let (stream, welcome) = reopened.unwrap();
        assert_eq!(stream.next_offset(), 10);
        assert_eq!(welcome.from, 10);
        assert_eq!(mode, StreamMode::Watch);
    }
}
