//! Session registry tests on real PTYs, with a plain channel standing in
//! for a connection's outbound queue.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use paddock_protocol::{DataFrame, ExitStatus};
use tempfile::TempDir;

use super::*;
use crate::connection::OutFrame;
use crate::session::OVERFLOW_REASON;

const DEADLINE: Duration = Duration::from_secs(10);

struct Fixture {
    sessions: Sessions,
    stop: CancellationToken,
    _dir: TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.sessions.hangup_all();
        self.stop.cancel();
    }
}

fn fixture(retain_cap: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ctx = SpawnContext {
        workdir: dir.path().to_path_buf(),
        default_shell: PathBuf::from("/bin/sh"),
        parent_env: vec![(
            OsString::from("PATH"),
            OsString::from("/usr/local/bin:/usr/bin:/bin"),
        )],
    };
    let stop = CancellationToken::new();
    Fixture {
        sessions: Sessions::with_retention(ctx, stop.clone(), retain_cap),
        stop,
        _dir: dir,
    }
}

fn open(id: u64, command: &str, args: &[&str]) -> ControlToAgent {
    ControlToAgent::OpenSession {
        request_id: RequestId(id),
        session_id: SessionId(id),
        command: Some(command.to_owned()),
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: None,
        env: BTreeMap::new(),
        size: TermSize::DEFAULT,
    }
}

fn spec(command: &str, args: &[&str]) -> SpawnSpec {
    SpawnSpec {
        command: Some(command.to_owned()),
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: None,
        env: BTreeMap::new(),
        size: TermSize::DEFAULT,
    }
}

/// What a fake connection received: data checked for contiguous offsets.
#[derive(Debug, Default)]
struct Received {
    /// The offset the next data frame must have.
    next: u64,
    bytes: Vec<u8>,
    gaps: Vec<(u64, u64)>,
    exited: Option<(ExitStatus, u64)>,
    control: Vec<AgentToControl>,
}

impl Received {
    fn from(offset: u64) -> Self {
        Received {
            next: offset,
            ..Received::default()
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Takes the next message like a writer would (firing its receipt).
    /// Returns false once every sender is gone.
    async fn take(&mut self, rx_out: &mut mpsc::Receiver<Outbound>) -> bool {
        let out = tokio::time::timeout(DEADLINE, rx_out.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing received in time; so far {:?}", self.text()));
        let Some(out) = out else {
            return false;
        };
        if let Some(written) = out.written {
            let _ = written.send(());
        }
        match out.frame {
            OutFrame::Data(encoded) => {
                let frame = DataFrame::decode(&encoded).unwrap();
                assert_eq!(frame.offset, self.next, "data frames must be contiguous");
                self.next += frame.payload.len() as u64;
                self.bytes.extend_from_slice(frame.payload);
            }
            OutFrame::Control(AgentToControl::Gap {
                from, to, reason, ..
            }) => {
                assert_eq!(from, self.next, "a gap starts where the data stopped");
                assert_eq!(reason, OVERFLOW_REASON);
                self.gaps.push((from, to));
                self.next = to;
            }
            OutFrame::Control(AgentToControl::SessionExited {
                status, end_offset, ..
            }) => {
                assert_eq!(end_offset, self.next, "the exit comes after all output");
                self.exited = Some((status, end_offset));
            }
            OutFrame::Control(other) => self.control.push(other),
        }
        true
    }

    async fn until_exit(&mut self, rx_out: &mut mpsc::Receiver<Outbound>) {
        while self.exited.is_none() {
            assert!(self.take(rx_out).await, "the link closed before the exit");
        }
    }

    async fn until_text(&mut self, rx_out: &mut mpsc::Receiver<Outbound>, needle: &str) {
        while !self.text().contains(needle) {
            assert!(self.take(rx_out).await, "the link closed before {needle:?}");
        }
    }
}

async fn wait_empty(sessions: &Sessions) {
    tokio::time::timeout(DEADLINE, sessions.wait_empty())
        .await
        .expect("every session was forgotten in time");
}

#[tokio::test]
async fn an_opened_session_reports_output_then_its_exit_and_is_forgotten() {
    let fx = fixture(RETAIN_CAP);
    let (tx_out, mut rx_out) = mpsc::channel(8);
    fx.sessions
        .handle(open(1, "/bin/sh", &["-c", "printf hello; exit 3"]), &tx_out)
        .await
        .unwrap();
    let mut got = Received::from(0);
    got.until_exit(&mut rx_out).await;
    assert!(matches!(
        got.control[0],
        AgentToControl::SessionOpened {
            request_id: RequestId(1),
            session_id: SessionId(1),
            pid: Some(_)
        }
    ));
    assert_eq!(got.text(), "hello");
    assert_eq!(got.exited, Some((ExitStatus::code(3), 5)));
    wait_empty(&fx.sessions).await;
}

#[tokio::test]
async fn requests_for_unknown_sessions_fail_with_not_found() {
    let fx = fixture(RETAIN_CAP);
    let (tx_out, mut rx_out) = mpsc::channel(8);
    let unknown = SessionId(99);
    let requests = [
        ControlToAgent::SignalSession {
            request_id: RequestId(1),
            session_id: unknown,
            signal: Signal::Term,
        },
        ControlToAgent::ResizeSession {
            request_id: RequestId(2),
            session_id: unknown,
            size: TermSize::DEFAULT,
        },
        ControlToAgent::CloseSession {
            request_id: RequestId(3),
            session_id: unknown,
        },
    ];
    for (i, request) in requests.into_iter().enumerate() {
        fx.sessions.handle(request, &tx_out).await.unwrap();
        let out = rx_out.recv().await.unwrap();
        match out.frame {
            OutFrame::Control(AgentToControl::RequestFailed {
                request_id, code, ..
            }) => {
                assert_eq!(request_id, RequestId(i as u64 + 1));
                assert_eq!(code, ErrorCode::NotFound);
            }
            _ => panic!("expected request_failed"),
        }
    }
}

#[tokio::test]
async fn spawn_failures_and_duplicate_ids_are_refused() {
    let fx = fixture(RETAIN_CAP);
    let (tx_out, mut rx_out) = mpsc::channel(8);
    fx.sessions
        .handle(open(1, "/bin/nope", &[]), &tx_out)
        .await
        .unwrap();
    match rx_out.recv().await.unwrap().frame {
        OutFrame::Control(AgentToControl::RequestFailed { code, message, .. }) => {
            assert_eq!(code, ErrorCode::SpawnFailed);
            assert_eq!(message, "no such file or directory: /bin/nope");
        }
        _ => panic!("expected request_failed"),
    }
    fx.sessions
        .open(SessionId(2), spec("sleep", &["30"]))
        .await
        .unwrap();
    let err = fx
        .sessions
        .open(SessionId(2), spec("sleep", &["30"]))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
}

#[tokio::test]
async fn output_retained_while_detached_is_replayed_after_a_gap() {
    let fx = fixture(1000);
    let id = SessionId(4);
    // No connection is attached while it runs.
    fx.sessions
        .open(
            id,
            spec("/bin/sh", &["-c", "head -c 5000 /dev/zero | tr '\\0' a"]),
        )
        .await
        .unwrap();
    let mut rx_progress = fx.sessions.progress(id).unwrap();
    tokio::time::timeout(DEADLINE, rx_progress.wait_for(|p| p.next_offset == 5000))
        .await
        .expect("all output read in time")
        .unwrap();
    let live = fx.sessions.live();
    assert_eq!((live[0].retained_from, live[0].next_offset), (4000, 5000));

    let (tx_out, mut rx_out) = mpsc::channel(8);
    fx.sessions.attach(id, tx_out, 10).await;
    let mut got = Received::from(10);
    got.until_exit(&mut rx_out).await;
    assert_eq!(got.gaps, [(10, 4000)]);
    assert_eq!(got.bytes, vec![b'a'; 1000]);
    assert_eq!(got.exited, Some((ExitStatus::code(0), 5000)));
    wait_empty(&fx.sessions).await;
}

#[tokio::test]
async fn replay_and_live_output_are_contiguous_across_reconnects() {
    let fx = fixture(RETAIN_CAP);
    let id = SessionId(5);
    let (tx_a, mut rx_a) = mpsc::channel(8);
    fx.sessions
        .handle(open(5, "/bin/sh", &[]), &tx_a)
        .await
        .unwrap();
    drop(tx_a);
    fx.sessions.input(id, b"echo o''ne\r");
    let mut on_a = Received::from(0);
    on_a.until_text(&mut rx_a, "one\r\n").await;

    // The connection dies; output goes on meanwhile.
    drop(rx_a);
    fx.sessions.input(id, b"echo t''wo\r");
    let (tx_b, mut rx_b) = mpsc::channel(8);
    fx.sessions.attach(id, tx_b.clone(), on_a.next).await;
    drop(tx_b);
    fx.sessions.input(id, b"echo th''ree; exit 7\r");
    let mut on_b = Received::from(on_a.next);
    on_b.until_exit(&mut rx_b).await;
    let text = on_b.text();
    assert!(
        text.contains("two\r\n") && text.contains("three\r\n"),
        "{text:?}"
    );
    assert!(!text.contains("one\r\n"), "nothing is sent twice: {text:?}");
    assert_eq!(on_b.exited.unwrap().0, ExitStatus::code(7));
}

#[tokio::test]
async fn close_hangs_up_and_reports_the_exit() {
    let fx = fixture(RETAIN_CAP);
    let (tx_out, mut rx_out) = mpsc::channel(8);
    fx.sessions
        .handle(open(6, "sleep", &["30"]), &tx_out)
        .await
        .unwrap();
    let close = ControlToAgent::CloseSession {
        request_id: RequestId(60),
        session_id: SessionId(6),
    };
    fx.sessions.handle(close, &tx_out).await.unwrap();
    let mut got = Received::from(0);
    got.until_exit(&mut rx_out).await;
    assert!(got.control.contains(&AgentToControl::RequestDone {
        request_id: RequestId(60)
    }));
    assert_eq!(got.exited.unwrap().0, ExitStatus::signal(1));
}

#[tokio::test]
async fn close_kills_a_session_that_ignores_the_hangup() {
    let fx = fixture(RETAIN_CAP);
    let (tx_out, mut rx_out) = mpsc::channel(8);
    let script = "trap '' HUP; echo ready; sleep 30";
    fx.sessions
        .handle(open(7, "/bin/sh", &["-c", script]), &tx_out)
        .await
        .unwrap();
    let mut got = Received::from(0);
    got.until_text(&mut rx_out, "ready").await;
    fx.sessions.close(SessionId(7)).unwrap();
    got.until_exit(&mut rx_out).await;
    assert_eq!(got.exited.unwrap().0, ExitStatus::signal(9));
}

#[tokio::test]
async fn a_dropped_session_is_killed_without_a_report() {
    let fx = fixture(RETAIN_CAP);
    let (tx_out, mut rx_out) = mpsc::channel(8);
    fx.sessions
        .handle(open(8, "sleep", &["30"]), &tx_out)
        .await
        .unwrap();
    let pty = fx.sessions.pty(SessionId(8)).unwrap();
    fx.sessions
        .handle(
            ControlToAgent::DropSession {
                session_id: SessionId(8),
            },
            &tx_out,
        )
        .await
        .unwrap();
    drop(tx_out);
    assert!(fx.sessions.live().is_empty());
    // The session task ends and drops its link, closing the channel.
    let mut got = Received::from(0);
    while got.take(&mut rx_out).await {}
    assert!(got.exited.is_none());
    assert_eq!(
        got.control.len(),
        1,
        "only session_opened: {:?}",
        got.control
    );
    // The process was killed (and reaped) all the same.
    tokio::time::timeout(DEADLINE, async {
        while !pty.has_exited() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the dropped process was reaped");
}

#[tokio::test]
async fn shutdown_ends_the_session_tasks() {
    let fx = fixture(RETAIN_CAP);
    fx.sessions
        .open(SessionId(9), spec("sleep", &["30"]))
        .await
        .unwrap();
    fx.sessions.hangup_all();
    fx.stop.cancel();
    tokio::time::timeout(DEADLINE, async {
        fx.sessions.inner.tracker.close();
        fx.sessions.inner.tracker.wait().await;
    })
    .await
    .expect("session tasks ended");
}
