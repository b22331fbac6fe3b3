//! The terminal modes a stretch of output leaves set, found without
//! emulating it: DEC private modes (`CSI ? Pm h/l`: alternate screen,
//! cursor visibility, application cursor keys, mouse reporting, bracketed
//! paste…), ANSI modes (`CSI Pm h/l`) and the keypad mode (`ESC =`/`ESC >`).
//!
//! When the snapshot emulator skips output it never parsed (see
//! `fanout::CATCH_UP_TAIL`), it starts afresh with these replayed, so a
//! mode set long before the tail still holds in the snapshot. Scanning
//! only looks for escape bytes, so it costs a small fraction of parsing.

/// A mode a sequence sets or resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Private(u16),
    Ansi(u16),
    Keypad,
}

/// Longest sequence carried over between pieces; anything longer is not a
/// mode change worth keeping.
const MAX_SEQ: usize = 64;

/// Mode changes seen so far, each mode once, in the order of its last
/// change: replaying them in this order leaves every mode as the stream
/// left it (also for modes that replace each other, such as mouse modes).
#[derive(Debug, Default)]
pub struct ModeScan {
    changes: Vec<(Mode, bool)>,
    /// The start of a sequence cut by the end of the previous piece.
    carry: Vec<u8>,
}

impl ModeScan {
    /// Scans the next piece of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        if self.carry.is_empty() {
            self.scan(data);
        } else {
            // Rare (a sequence cut at the end of the last piece): rejoin.
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(data);
            self.scan(&joined);
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while let Some(at) = bytes[i..].iter().position(|&b| b == 0x1b) {
            let start = i + at;
            match self.scan_one(bytes, start) {
                Some(end) => i = end,
                None => {
                    // Cut by the end of this piece: keep it for the next one.
                    if bytes.len() - start < MAX_SEQ {
                        self.carry = bytes[start..].to_vec();
                    }
                    return;
                }
            }
        }
    }

    /// Parses the sequence at `bytes[start]` (an ESC), recording a mode
    /// change; the index just past it (or past the ESC alone when it is no
    /// sequence of interest), or `None` when the bytes end inside it.
    fn scan_one(&mut self, bytes: &[u8], start: usize) -> Option<usize> {
        let mut i = start + 1;
        match *bytes.get(i)? {
            b'=' => {
                self.record(Mode::Keypad, true);
                Some(i + 1)
            }
            b'>' => {
                self.record(Mode::Keypad, false);
                Some(i + 1)
            }
            b'[' => {
                i += 1;
                let private = bytes.get(i)? == &b'?';
                if private {
                    i += 1;
                }
                let params_start = i;
                while matches!(*bytes.get(i)?, b'0'..=b'9' | b';') {
                    i += 1;
                    if i - start > MAX_SEQ {
                        return Some(i);
                    }
                }
                let set = match bytes[i] {
                    b'h' => true,
                    b'l' => false,
                    _ => return Some(i),
                };
                for param in bytes[params_start..i].split(|&b| b == b';') {
                    let Some(n) = std::str::from_utf8(param)
                        .ok()
                        .and_then(|p| p.parse::<u16>().ok())
                    else {
                        continue;
                    };
                    let mode = if private {
                        Mode::Private(n)
                    } else {
                        Mode::Ansi(n)
                    };
                    self.record(mode, set);
                }
                Some(i + 1)
            }
            _ => Some(i),
        }
    }

    fn record(&mut self, mode: Mode, set: bool) {
        self.changes.retain(|(m, _)| *m != mode);
        self.changes.push((mode, set));
    }

    /// Escape sequences that set every mode seen as the stream left it.
    pub fn replay(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, set) in &self.changes {
            let hl = if *set { 'h' } else { 'l' };
            let seq = match mode {
                Mode::Private(n) => format!("\x1b[?{n}{hl}"),
                Mode::Ansi(n) => format!("\x1b[{n}{hl}"),
                Mode::Keypad if *set => "\x1b=".to_owned(),
                Mode::Keypad => "\x1b>".to_owned(),
            };
            out.extend_from_slice(seq.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&[u8]]) -> String {
        let mut scan = ModeScan::default();
        for piece in pieces {
            scan.feed(piece);
        }
        String::from_utf8(scan.replay()).unwrap()
    }

    #[test]
    fn the_last_change_of_each_mode_is_kept_in_order() {
        let stream: &[u8] =
            b"text\x1b[?1049h\x1b[1;1Hdraw\x1b[?25l\x1b[?1000h\x1b[?1002h\x1b[31mred\x1b[?25h\x1b=\x1b[4h";
        assert_eq!(
            scan(&[stream]),
            "\x1b[?1049h\x1b[?1000h\x1b[?1002h\x1b[?25h\x1b=\x1b[4h"
        );
        let later: &[u8] = b"\x1b[?1049l\x1b>\x1b[?2004;1h";
        assert_eq!(
            scan(&[stream, later]),
            "\x1b[?1000h\x1b[?1002h\x1b[?25h\x1b[4h\x1b[?1049l\x1b>\x1b[?2004h\x1b[?1h"
        );
    }

    #[test]
    fn sequences_cut_between_pieces_are_found() {
        let whole: &[u8] = b"aaaa\x1b[?1049hbbbb\x1b[?25lcccc\x1b=dd";
        let want = scan(&[whole]);
        assert_eq!(want, "\x1b[?1049h\x1b[?25l\x1b=");
        for cut in 0..whole.len() {
            assert_eq!(scan(&[&whole[..cut], &whole[cut..]]), want, "cut at {cut}");
        }
        for a in 0..whole.len() {
            for b in a..whole.len() {
                assert_eq!(
                    scan(&[&whole[..a], &whole[a..b], &whole[b..]]),
                    want,
                    "cuts at {a} and {b}"
                );
            }
        }
    }

    #[test]
    fn other_sequences_and_plain_text_change_nothing() {
        assert_eq!(
            scan(&[b"\x1b[2J\x1b[10;20H\x1b[1;31m\x1b]0;title\x07\x1b(B plain"]),
            ""
        );
        assert_eq!(scan(&[b"\x1b"]), "");
        assert_eq!(
            scan(&[b"\x1b[?99999999999999999999999999999999999999999999999999999999999999999999h"]),
            ""
        );
    }
}
