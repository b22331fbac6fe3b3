//! The local terminal: its size, a raw-mode guard that restores it on every
//! exit path, and notes to stderr that read right in either mode.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use paddock_protocol::{TermSize, MAX_TERM_DIM};

/// Whether this process put the terminal in raw mode and has not restored it yet.
static RAW: AtomicBool = AtomicBool::new(false);

/// Raw mode for as long as the guard lives. Dropping it (on return, on `?`,
/// or while a panic unwinds) restores the terminal.
#[derive(Debug)]
pub struct RawMode {
    active: bool,
}

impl RawMode {
    /// Puts the terminal in raw mode when stdin is a terminal; otherwise a no-op
    /// guard, so that piped input still works.
    pub fn enable_if_tty() -> Result<RawMode> {
        if !std::io::stdin().is_terminal() {
            return Ok(RawMode { active: false });
        }
        crossterm::terminal::enable_raw_mode()
            .context("could not put the terminal in raw mode: is stdin a terminal?")?;
        RAW.store(true, Ordering::SeqCst);
        Ok(RawMode { active: true })
    }

    /// Restores the terminal now; later calls and the drop do nothing.
    pub fn restore(&mut self) {
        if std::mem::take(&mut self.active) {
            restore_now();
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Leaves raw mode if this process entered it; safe to call from a panic hook.
pub fn restore_now() {
    if RAW.swap(false, Ordering::SeqCst) {
        // Nothing better to do if it fails: the terminal is ours to fix, not the user's.
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Makes panics restore the terminal before their message is printed.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_now();
        default(info);
    }));
}

/// Prints a note for the person on stderr, on lines of its own even in raw mode.
pub fn note(message: &str) {
    let mut stderr = std::io::stderr().lock();
    // A note that cannot be written has nowhere else to go.
    let _ = if RAW.load(Ordering::SeqCst) {
        write!(stderr, "\r\n{}\r\n", message.replace('\n', "\r\n"))
    } else {
        writeln!(stderr, "{message}")
    };
    let _ = stderr.flush();
}

/// The local terminal's size, if stdout is a terminal that reports one.
pub fn local_size() -> Option<TermSize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let (cols, rows) = crossterm::terminal::size().ok()?;
    clamp_size(cols, rows)
}

/// The local terminal's size, or 80×24 when there is no terminal.
pub fn size_or_default() -> TermSize {
    local_size().unwrap_or(TermSize::DEFAULT)
}

/// A size the protocol accepts: `None` for a zero dimension (a terminal that
/// does not know its size), larger ones cut to the protocol's maximum.
pub fn clamp_size(cols: u16, rows: u16) -> Option<TermSize> {
    if cols == 0 || rows == 0 {
        return None;
    }
    Some(TermSize {
        cols: cols.min(MAX_TERM_DIM),
        rows: rows.min(MAX_TERM_DIM),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_clamped_to_what_the_protocol_accepts() {
        assert_eq!(clamp_size(0, 24), None);
        assert_eq!(clamp_size(80, 0), None);
        assert_eq!(
            clamp_size(120, 40),
            Some(TermSize {
                cols: 120,
                rows: 40
            })
        );
        assert_eq!(
            clamp_size(5000, 2000),
            Some(TermSize {
                cols: MAX_TERM_DIM,
                rows: MAX_TERM_DIM
            })
        );
    }
}
