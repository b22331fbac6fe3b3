//! Session registry tests on real PTYs, with a plain channel standing in
//! for a connection's outbound queue.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use paddock_protocol::{DataFrame, ExitStatus, MAX_DATA_PAYLOAD};
use tempfile::TempDir;

use super::*;
use crate::config::{DEFAULT_DISK_CAP, DEFAULT_MEMORY_BOUND, DEFAULT_WINDOW};
use crate::connection::OutFrame;

const DEADLINE: Duration = Duration::from_secs(10);
/// For the tests that push tens of megabytes through a PTY.
const BULK_DEADLINE: Duration = Duration::from_secs(120);

struct Fixture {
    sessions: Sessions,
    stop: CancellationToken,
    state: PathBuf,
    _dir: TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.sessions.hangup_all();
        self.stop.cancel();
    }
}

/// Retention limits for a fixture.
#[derive(Clone, Copy)]
struct Caps {
    memory: usize,
    disk: u64,
    window: u64,
}

const DEFAULT_CAPS: Caps = Caps {
    memory: DEFAULT_MEMORY_BOUND as usize,
    disk: DEFAULT_DISK_CAP,
    window: DEFAULT_WINDOW,
};

fn fixture(caps: Caps) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ctx = SpawnContext {
        workdir: dir.path().to_path_buf(),
        default_shell: PathBuf::from("/bin/sh"),
        parent_env: vec![(
            OsString::from("PATH"),
            OsString::from("/usr/local/bin:/usr/bin:/bin"),
        )],
        session_user: None,
    };
    let state = dir.path().join(".agentd");
    let limits = Limits {
        memory_bound: caps.memory,
        window: caps.window,
        spill_dir: SpillDir::open(&state, caps.disk).unwrap(),
    };
    let stop = CancellationToken::new();
    Fixture {
        sessions: Sessions::new(ctx, limits, stop.clone()),
        stop,
        state,
        _dir: dir,
    }
}

/// The spill files in `state`, with their lengths.
fn spill_files(state: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(state)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().len())
        })
        .filter(|(name, _)| name.ends_with(".spill"))
        .collect()
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

/// What `seq 1 N` shows on a terminal: its output with `\n` turned into `\r\n`.
fn seq_on_a_terminal(n: u64) -> Vec<u8> {
    let out = std::process::Command::new("seq")
        .arg("1")
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut expected = Vec::with_capacity(out.stdout.len() * 9 / 8);
    for &b in &out.stdout {
        if b == b'\n' {
            expected.push(b'\r');
        }
        expected.push(b);
    }
    expected
}

/// What a fake connection received: data checked for contiguous offsets.
#[derive(Default)]
struct Received {
    /// The offset the next data frame must have.
    next: u64,
    bytes: Vec<u8>,
    gaps: Vec<(u64, u64, String)>,
    exited: Option<(ExitStatus, u64)>,
    control: Vec<AgentToControl>,
    /// Acknowledge everything received, as a control plane that stores it would.
    acker: Option<(Sessions, SessionId)>,
}

impl Received {
    fn from(offset: u64) -> Self {
        Received {
            next: offset,
            ..Received::default()
        }
    }

    /// Receives from `offset`, acknowledging each frame as it arrives.
    fn acking(offset: u64, sessions: &Sessions, id: SessionId) -> Self {
        Received {
            acker: Some((sessions.clone(), id)),
            ..Received::from(offset)
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Takes the next message like a writer would. Returns false once every
    /// sender is gone.
    async fn take(&mut self, rx_out: &mut mpsc::Receiver<Outbound>) -> bool {
        let out = tokio::time::timeout(DEADLINE, rx_out.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing received in time; so far {} bytes", self.next));
        let Some(out) = out else {
            return false;
        };
        match out.frame {
            OutFrame::Data(encoded) => {
                let frame = DataFrame::decode(&encoded).unwrap();
                assert_eq!(frame.offset, self.next, "data frames must be contiguous");
                assert!(!frame.payload.is_empty());
                self.next += frame.payload.len() as u64;
                self.bytes.extend_from_slice(frame.payload);
            }
            OutFrame::Control(AgentToControl::Gap {
                from, to, reason, ..
            }) => {
                assert_eq!(from, self.next, "a gap starts where the data stopped");
                self.gaps.push((from, to, reason));
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
        if let Some((sessions, id)) = &self.acker {
            sessions.ack(*id, self.next);
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
    let fx = fixture(DEFAULT_CAPS);
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
    // Held until the control plane has recorded the exit.
    assert_eq!(fx.sessions.live().len(), 1);
    fx.sessions
        .handle(
            ControlToAgent::ExitRecorded {
                session_id: SessionId(1),
            },
            &tx_out,
        )
        .await
        .unwrap();
    wait_empty(&fx.sessions).await;
}

#[tokio::test]
async fn requests_for_unknown_sessions_fail_with_not_found() {
    let fx = fixture(DEFAULT_CAPS);
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
    let fx = fixture(DEFAULT_CAPS);
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
async fn past_the_disk_cap_while_detached_the_newest_output_becomes_a_gap() {
    let fx = fixture(Caps {
        memory: 1000,
        disk: 1000,
        window: 2000,
    });
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
    tokio::time::timeout(DEADLINE, rx_progress.wait_for(|p| p.exited))
        .await
        .expect("all output read in time")
        .unwrap();
    let progress = *rx_progress.borrow();
    assert_eq!((progress.memory, progress.spilled), (1000, 1000));
    let live = fx.sessions.live();
    assert_eq!((live[0].retained_from, live[0].next_offset), (0, 5000));

    // The control plane stored the first 10 bytes before the link went.
    let (tx_out, mut rx_out) = mpsc::channel(8);
    fx.sessions.attach(id, tx_out, 10, true).await;
    let mut got = Received::acking(10, &fx.sessions, id);
    got.until_exit(&mut rx_out).await;
    assert_eq!(got.bytes, vec![b'a'; 1990]);
    assert_eq!(got.gaps.len(), 1, "one gap however many reads dropped");
    let (from, to, reason) = &got.gaps[0];
    assert_eq!((*from, *to), (2000, 5000));
    assert_eq!(
        reason,
        "agentd disk cap of 1000 bytes exceeded while the control plane was unreachable"
    );
    assert_eq!(got.exited, Some((ExitStatus::code(0), 5000)));
    fx.sessions.exit_recorded(id);
    wait_empty(&fx.sessions).await;
}

#[tokio::test]
async fn replay_and_live_output_are_contiguous_across_reconnects() {
    let fx = fixture(DEFAULT_CAPS);
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
    fx.sessions.attach(id, tx_b.clone(), on_a.next, true).await;
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
    let fx = fixture(DEFAULT_CAPS);
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
    let fx = fixture(DEFAULT_CAPS);
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
    let fx = fixture(DEFAULT_CAPS);
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
    let fx = fixture(DEFAULT_CAPS);
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

// Multi-threaded, as in the binary: spill I/O then runs in `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_memory_bound_spills_and_replays_byte_exact() {
    const LINES: u64 = 2_500_000; // about 21 MB on a terminal
    const MEMORY: usize = 64 * 1024;
    let fx = fixture(Caps {
        memory: MEMORY,
        ..DEFAULT_CAPS
    });
    let id = SessionId(10);
    let count = LINES.to_string();
    // No connection is attached while it runs.
    fx.sessions
        .open(id, spec("seq", &["1", &count]))
        .await
        .unwrap();
    let mut rx_progress = fx.sessions.progress(id).unwrap();
    let mut most_in_memory = 0;
    tokio::time::timeout(BULK_DEADLINE, async {
        loop {
            let progress = *rx_progress.borrow_and_update();
            most_in_memory = most_in_memory.max(progress.memory);
            if progress.exited {
                break;
            }
            rx_progress.changed().await.unwrap();
        }
    })
    .await
    .expect("all output read in time");
    let progress = *rx_progress.borrow();
    let expected = seq_on_a_terminal(LINES);
    assert_eq!(progress.next_offset, expected.len() as u64);
    assert!(most_in_memory <= MEMORY, "{most_in_memory} bytes in memory");
    assert_eq!(progress.memory, MEMORY);
    assert_eq!(progress.spilled, expected.len() as u64 - MEMORY as u64);
    let on_disk: u64 = spill_files(&fx.state).iter().map(|(_, len)| len).sum();
    assert_eq!(on_disk, progress.spilled);

    // A connection asks for everything; it is replayed from the spill
    // files, then memory, and acknowledged as it arrives.
    let (tx_out, mut rx_out) = mpsc::channel(8);
    fx.sessions.attach(id, tx_out, 0, true).await;
    let mut got = Received::acking(0, &fx.sessions, id);
    tokio::time::timeout(BULK_DEADLINE, got.until_exit(&mut rx_out))
        .await
        .expect("replayed in time");
    assert!(got.gaps.is_empty());
    assert!(
        got.bytes == expected,
        "the replay differs from seq's output"
    );
    assert_eq!(
        got.exited,
        Some((ExitStatus::code(0), expected.len() as u64))
    );

    // Every byte is acknowledged: the spill files are emptied; once the
    // exit is recorded they are gone.
    let mut rx_progress = fx.sessions.progress(id).unwrap();
    tokio::time::timeout(
        DEADLINE,
        rx_progress.wait_for(|p| p.spilled == 0 && p.memory == 0),
    )
    .await
    .expect("acks reclaimed everything")
    .unwrap();
    assert!(spill_files(&fx.state).iter().all(|(_, len)| *len == 0));
    fx.sessions.exit_recorded(id);
    wait_empty(&fx.sessions).await;
    tokio::time::timeout(DEADLINE, async {
        while !spill_files(&fx.state).is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("spill files removed with the session");
}

#[tokio::test]
async fn a_full_window_stops_reading_the_terminal_until_acks_arrive() {
    const LINES: u64 = 1_000_000; // about 7.9 MB on a terminal
    const WINDOW: u64 = 128 * 1024;
    let fx = fixture(Caps {
        memory: 64 * 1024,
        disk: DEFAULT_DISK_CAP,
        window: WINDOW,
    });
    let id = SessionId(11);
    let count = LINES.to_string();
    let (tx_out, mut rx_out) = mpsc::channel(64);
    fx.sessions
        .handle(open(11, "seq", &["1", &count]), &tx_out)
        .await
        .unwrap();
    let mut got = Received::from(0);
    while got.next < WINDOW {
        assert!(got.take(&mut rx_out).await);
    }
    assert_eq!(got.next, WINDOW, "never more than a window unacknowledged");

    // The session reads at most one more chunk than the window allows, so
    // the PTY's writer is held up long before it could finish.
    let mut rx_progress = fx.sessions.progress(id).unwrap();
    let limit = WINDOW + MAX_DATA_PAYLOAD as u64;
    let read_past = tokio::time::timeout(
        Duration::from_millis(500),
        rx_progress.wait_for(|p| p.next_offset > limit || p.exited),
    )
    .await
    .is_ok();
    assert!(
        !read_past,
        "kept reading without acks: {:?}",
        *rx_progress.borrow()
    );
    assert!(!fx.sessions.pty(id).unwrap().has_exited());
    assert!(
        matches!(rx_out.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
        "nothing is sent past the window"
    );

    // Acks open the window again, a frame at a time.
    fx.sessions.ack(id, got.next);
    got.acker = Some((fx.sessions.clone(), id));
    let mut acked = got.next;
    while got.exited.is_none() {
        assert!(got.take(&mut rx_out).await);
        assert!(got.next <= acked + WINDOW, "in flight beyond the window");
        acked = got.next;
    }
    assert!(got.bytes == seq_on_a_terminal(LINES), "output differs");
}

#[tokio::test]
async fn an_exit_is_sent_again_after_a_reconnect_until_it_is_recorded() {
    let fx = fixture(DEFAULT_CAPS);
    let id = SessionId(12);
    let (tx_a, mut rx_a) = mpsc::channel(8);
    fx.sessions
        .handle(open(12, "/bin/sh", &["-c", "printf hello; exit 3"]), &tx_a)
        .await
        .unwrap();
    drop(tx_a);
    let mut on_a = Received::from(0);
    on_a.until_exit(&mut rx_a).await;
    assert_eq!(on_a.exited, Some((ExitStatus::code(3), 5)));
    // Stored up to 2, then the link went before anything else was.
    fx.sessions.ack(id, 2);
    drop(rx_a);

    let mut rx_progress = fx.sessions.progress(id).unwrap();
    tokio::time::timeout(DEADLINE, rx_progress.wait_for(|p| p.retained_from == 2))
        .await
        .expect("ack applied in time")
        .unwrap();
    let live = fx.sessions.live();
    assert_eq!(live.len(), 1, "an unrecorded exit keeps the session");
    assert_eq!((live[0].retained_from, live[0].next_offset), (2, 5));

    let (tx_b, mut rx_b) = mpsc::channel(8);
    fx.sessions.attach(id, tx_b, 2, true).await;
    let mut on_b = Received::from(2);
    on_b.until_exit(&mut rx_b).await;
    assert_eq!(on_b.text(), "llo");
    assert_eq!(on_b.exited, Some((ExitStatus::code(3), 5)));

    fx.sessions.exit_recorded(id);
    wait_empty(&fx.sessions).await;
    // The task let go of its link.
    while on_b.take(&mut rx_b).await {}
}
