//! `paddock attach`: drive a session from the local terminal in raw mode,
//! with `Ctrl-]` to detach and a quiet fall-back to watching when someone
//! else takes over.

use std::io::Read;

use anyhow::{anyhow, Context, Result};
use paddock_protocol::api::OpenSessionRequest;
use paddock_protocol::{ErrorCode, SessionId, StreamMode};
use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};
use tokio::sync::mpsc;

use crate::api::Client;
use crate::follow::{backoff, note_gap, write_output, MAX_RECONNECTS};
use crate::stream::{Event, SessionStream, StreamError, StreamRequest};
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
    let session = match session {
        Some(id) => id,
        None => {
            let request = OpenSessionRequest {
                size: Some(term::size_or_default()),
                ..OpenSessionRequest::default()
            };
            let info = client.open_session(sandbox, &request).await?;
            term::note(&format!(
                "[opened session {} in sandbox {sandbox}]",
                info.id
            ));
            info.id
        }
    };
    let req = StreamRequest {
        mode: StreamMode::Attach,
        take,
        from: Some(0),
    };
    let (mut stream, welcome) = SessionStream::connect(client, sandbox, session, &req)
        .await
        .map_err(|err| attach_error(err, sandbox, session, take))?;
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

    loop {
        tokio::select! {
            event = stream.next_event() => match event {
                Ok(Event::Output(bytes)) => write_output(&mut stdout, &bytes).await?,
                Ok(Event::Gap { from, to, reason }) => note_gap(from, to, &reason),
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
                    let next = stream.next_offset();
                    // On failure the guard restores the terminal as `?` returns.
                    let (new_stream, new_mode) =
                        reconnect(client, sandbox, session, mode, next, why).await?;
                    stream = new_stream;
                    mode = new_mode;
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
                    term::note(&format!(
                        "\ndetached from session {session} (reattach: paddock attach {sandbox} {session})"
                    ));
                    return Ok(0);
                }
            },
            Some(()) = next_winch(&mut winch) => send_local_size(&mut stream, mode).await,
        }
    }
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

/// Reopens a dropped stream from `next`, in the mode the client had; if
/// someone else took the session meanwhile, carries on as a watcher.
async fn reconnect(
    client: &Client,
    sandbox: &str,
    session: SessionId,
    mut mode: StreamMode,
    next: u64,
    mut why: String,
) -> Result<(SessionStream, StreamMode)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > MAX_RECONNECTS {
            return Err(anyhow!(
                "{why} (gave up after {MAX_RECONNECTS} attempts to reconnect; reattach: paddock attach {sandbox} {session})"
            ));
        }
        backoff(attempt, &why, next).await;
        let req = StreamRequest {
            mode,
            take: false,
            from: Some(next),
        };
        match SessionStream::connect(client, sandbox, session, &req).await {
            Ok((stream, welcome)) => return Ok((stream, welcome.mode)),
            Err(StreamError::Dropped(again)) => why = again,
            Err(StreamError::Refused {
                code: Some(ErrorCode::DriverExists),
                message,
            }) if mode == StreamMode::Attach => {
                term::note(&format!(
                    "[paddock: {message}; watching instead, your input is ignored]"
                ));
                mode = StreamMode::Watch;
                attempt = 0;
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
    use super::*;

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
}
