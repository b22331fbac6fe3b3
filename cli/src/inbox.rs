//! What arrives on a session stream, turned into events in offset order:
//! each output byte delivered once, holes reported, and a skip-ahead (a
//! `gap` followed by a `snapshot`) told apart from lost output. Pure
//! bookkeeping with no socket, so that every rule is unit-tested.

use std::collections::VecDeque;

use paddock_protocol::{ControlToClient, ExitStatus, StreamMode, TermSize};
use tokio_tungstenite::tungstenite::Bytes;

/// Something that happened on the stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// New output bytes, contiguous with everything delivered before (or
    /// after a `Gap` or `Snapshot`).
    Output(Bytes),
    /// Output in `[from, to)` will never arrive.
    Gap {
        from: u64,
        to: u64,
        reason: String,
    },
    /// Escape sequences that redraw the session's screen as it stands at
    /// `offset`; output from `offset` follows. `skipped` is the range this
    /// client jumped over because it fell behind, `None` when it joined live.
    Snapshot {
        offset: u64,
        size: TermSize,
        screen: String,
        skipped: Option<(u64, u64)>,
    },
    /// The session ended; every byte of its output was delivered before this.
    Exited {
        status: ExitStatus,
        end_offset: u64,
    },
    ModeChanged {
        mode: StreamMode,
        reason: String,
    },
    DriverChanged(Option<String>),
    Resized(TermSize),
}

/// Tracks the next expected stream offset, so output is delivered once and in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    next: u64,
}

/// How to deliver one output frame: skip its first `skip` bytes (already
/// delivered), after noting the hole `gap`, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub skip: usize,
    pub gap: Option<(u64, u64)>,
}

impl Cursor {
    pub fn new(next: u64) -> Self {
        Cursor { next }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    /// Accounts for `len` bytes starting at `offset`.
    pub fn accept(&mut self, offset: u64, len: usize) -> Accepted {
        let end = offset.saturating_add(len as u64);
        if end <= self.next {
            return Accepted {
                skip: len,
                gap: None,
            };
        }
        let accepted = if offset < self.next {
            // end > next, so the difference is less than len.
            Accepted {
                skip: (self.next - offset) as usize,
                gap: None,
            }
        } else if offset > self.next {
            Accepted {
                skip: 0,
                gap: Some((self.next, offset)),
            }
        } else {
            Accepted { skip: 0, gap: None }
        };
        self.next = end;
        accepted
    }

    /// Moves past output that will never come.
    pub fn skip_to(&mut self, to: u64) {
        self.next = self.next.max(to);
    }
}

/// A `gap` on a live stream whose meaning the next message decides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldGap {
    from: u64,
    to: u64,
    reason: String,
}

/// The events of one stream connection, decoded from its messages.
#[derive(Debug)]
pub struct Inbox {
    cursor: Cursor,
    /// Whether this connection joined live (no `from`): only such a client
    /// is ever skipped ahead, so only its gaps wait to see whether a
    /// snapshot follows.
    live: bool,
    held: Option<HeldGap>,
    pending: VecDeque<Event>,
}

impl Inbox {
    /// An inbox whose first expected output byte is at `next`.
    pub fn new(next: u64, live: bool) -> Self {
        Inbox {
            cursor: Cursor::new(next),
            live,
            held: None,
            pending: VecDeque::new(),
        }
    }

    /// The offset of the first output byte not delivered yet. A gap still
    /// held is not counted: if the connection drops before its meaning is
    /// known, resuming here fetches the skipped bytes from the store.
    pub fn next_offset(&self) -> u64 {
        self.cursor.next()
    }

    /// The next event ready to be delivered.
    pub fn pop(&mut self) -> Option<Event> {
        self.pending.pop_front()
    }

    /// Queues an event that comes from outside the stream (e.g. a hole
    /// found in the handshake).
    pub fn push(&mut self, event: Event) {
        self.pending.push_back(event);
    }

    /// An output frame's payload `bytes[start..]`, the first byte at `offset`.
    pub fn output(&mut self, offset: u64, bytes: Bytes, start: usize) {
        self.settle_gap();
        let len = bytes.len().saturating_sub(start);
        let accepted = self.cursor.accept(offset, len);
        if let Some((from, to)) = accepted.gap {
            self.pending.push_back(Event::Gap {
                from,
                to,
                reason: "missing from the stream".to_owned(),
            });
        }
        if accepted.skip < len {
            self.pending
                .push_back(Event::Output(bytes.slice(start + accepted.skip..)));
        }
    }

    /// A control message other than `welcome` and `error`.
    pub fn control(&mut self, msg: ControlToClient) {
        let event = match msg {
            ControlToClient::Welcome { .. } | ControlToClient::Error { .. } => return,
            // Only `render=screen` streams carry these; the CLI asks for bytes.
            ControlToClient::ScreenFrame { .. } | ControlToClient::ScreenDiff { .. } => return,
            ControlToClient::Gap { from, to, reason } => {
                self.settle_gap();
                if to <= self.cursor.next() {
                    return;
                }
                let from = from.max(self.cursor.next());
                if self.live {
                    self.held = Some(HeldGap { from, to, reason });
                    return;
                }
                self.cursor.skip_to(to);
                Event::Gap { from, to, reason }
            }
            ControlToClient::Snapshot {
                offset,
                size,
                screen,
            } => {
                // Everything from here on is drawn from the snapshot, so the
                // cursor moves to it whichever way it lies.
                let skipped = self
                    .held
                    .take()
                    .map(|_| (self.cursor.next(), offset.max(self.cursor.next())));
                self.cursor = Cursor::new(offset);
                Event::Snapshot {
                    offset,
                    size,
                    screen,
                    skipped,
                }
            }
            ControlToClient::Exited { status, end_offset } => {
                self.settle_gap();
                Event::Exited { status, end_offset }
            }
            ControlToClient::ModeChanged { mode, reason } => {
                self.settle_gap();
                Event::ModeChanged { mode, reason }
            }
            ControlToClient::DriverChanged { driver } => {
                self.settle_gap();
                Event::DriverChanged(driver)
            }
            ControlToClient::Resized { size } => {
                self.settle_gap();
                Event::Resized(size)
            }
        };
        self.pending.push_back(event);
    }

    /// The connection ended: a gap still held is forgotten, since resuming
    /// from the cursor replays (or reports again) what it covered.
    pub fn disconnected(&mut self) {
        self.held = None;
    }

    /// A held gap not followed by a snapshot was lost output after all.
    fn settle_gap(&mut self) {
        if let Some(HeldGap { from, to, reason }) = self.held.take() {
            self.cursor.skip_to(to);
            self.pending.push_back(Event::Gap { from, to, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(offset: u64) -> ControlToClient {
        ControlToClient::Snapshot {
            offset,
            size: TermSize::DEFAULT,
            screen: "\x1b[H\x1b[2Jscreen".to_owned(),
        }
    }

    fn gap(from: u64, to: u64) -> ControlToClient {
        ControlToClient::Gap {
            from,
            to,
            reason: "r".to_owned(),
        }
    }

    fn drain(inbox: &mut Inbox) -> Vec<Event> {
        std::iter::from_fn(|| inbox.pop()).collect()
    }

    fn out(text: &str) -> Event {
        Event::Output(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn cursor_delivers_each_byte_once_and_notes_holes() {
        let mut cursor = Cursor::new(10);
        // Entirely before the cursor: skip all of it.
        assert_eq!(
            cursor.accept(0, 10),
            Accepted {
                skip: 10,
                gap: None
            }
        );
        assert_eq!(cursor.next(), 10);
        // Overlapping the cursor: skip the seen prefix.
        assert_eq!(cursor.accept(5, 10), Accepted { skip: 5, gap: None });
        assert_eq!(cursor.next(), 15);
        // Contiguous.
        assert_eq!(cursor.accept(15, 3), Accepted { skip: 0, gap: None });
        assert_eq!(cursor.next(), 18);
        // A hole.
        assert_eq!(
            cursor.accept(20, 2),
            Accepted {
                skip: 0,
                gap: Some((18, 20))
            }
        );
        assert_eq!(cursor.next(), 22);
        // Empty frames change nothing.
        assert_eq!(cursor.accept(22, 0), Accepted { skip: 0, gap: None });
        assert_eq!(cursor.next(), 22);
        cursor.skip_to(30);
        cursor.skip_to(25);
        assert_eq!(cursor.next(), 30);
    }

    #[test]
    fn output_frames_skip_the_header_and_replayed_bytes() {
        let mut inbox = Inbox::new(3, false);
        // A 2-byte "header", then "abcdef" at offset 0: "abc" was seen.
        inbox.output(0, Bytes::from_static(b"HHabcdef"), 2);
        inbox.output(6, Bytes::from_static(b"HHgh"), 2);
        inbox.output(10, Bytes::from_static(b"HHij"), 2);
        assert_eq!(
            drain(&mut inbox),
            [
                out("def"),
                out("gh"),
                Event::Gap {
                    from: 8,
                    to: 10,
                    reason: "missing from the stream".to_owned()
                },
                out("ij"),
            ]
        );
        assert_eq!(inbox.next_offset(), 12);
    }

    #[test]
    fn a_live_join_starts_with_the_snapshot() {
        let mut inbox = Inbox::new(100, true);
        inbox.control(snapshot(100));
        inbox.output(100, Bytes::from_static(b"xy"), 0);
        let events = drain(&mut inbox);
        assert!(
            matches!(&events[0], Event::Snapshot { offset: 100, skipped: None, screen, .. } if screen.ends_with("screen")),
            "{events:?}"
        );
        assert_eq!(events[1], out("xy"));
        assert_eq!(inbox.next_offset(), 102);
    }

    #[test]
    fn a_gap_then_a_snapshot_is_a_skip_ahead_not_a_loss() {
        let mut inbox = Inbox::new(0, true);
        inbox.output(0, Bytes::from_static(b"abcd"), 0);
        inbox.control(gap(4, 5000));
        // Nothing to show until the next message says what the gap was.
        assert_eq!(drain(&mut inbox), [out("abcd")]);
        assert_eq!(inbox.next_offset(), 4);
        inbox.control(snapshot(5000));
        inbox.output(5000, Bytes::from_static(b"z"), 0);
        let events = drain(&mut inbox);
        assert!(
            matches!(
                &events[0],
                Event::Snapshot {
                    offset: 5000,
                    skipped: Some((4, 5000)),
                    ..
                }
            ),
            "{events:?}"
        );
        assert_eq!(events[1], out("z"));
        assert_eq!(inbox.next_offset(), 5001);
    }

    #[test]
    fn a_live_gap_without_a_snapshot_is_reported_as_lost() {
        let mut inbox = Inbox::new(0, true);
        inbox.control(gap(0, 7));
        inbox.output(7, Bytes::from_static(b"after"), 0);
        assert_eq!(
            drain(&mut inbox),
            [
                Event::Gap {
                    from: 0,
                    to: 7,
                    reason: "r".to_owned()
                },
                out("after")
            ]
        );
        // Also when the session ends right after it.
        let mut inbox = Inbox::new(0, true);
        inbox.control(gap(0, 7));
        inbox.control(ControlToClient::Exited {
            status: ExitStatus::code(0),
            end_offset: 7,
        });
        let events = drain(&mut inbox);
        assert!(matches!(events[0], Event::Gap { from: 0, to: 7, .. }));
        assert!(matches!(events[1], Event::Exited { end_offset: 7, .. }));
    }

    #[test]
    fn a_replaying_stream_reports_gaps_at_once() {
        let mut inbox = Inbox::new(10, false);
        inbox.control(gap(5, 8));
        inbox.control(gap(8, 20));
        assert_eq!(
            drain(&mut inbox),
            [Event::Gap {
                from: 10,
                to: 20,
                reason: "r".to_owned()
            }]
        );
        assert_eq!(inbox.next_offset(), 20);
    }

    #[test]
    fn a_held_gap_is_forgotten_when_the_connection_drops() {
        let mut inbox = Inbox::new(4, true);
        inbox.control(gap(4, 5000));
        inbox.disconnected();
        assert_eq!(drain(&mut inbox), []);
        // Resuming from here fetches the skipped bytes from the store.
        assert_eq!(inbox.next_offset(), 4);
    }
}
