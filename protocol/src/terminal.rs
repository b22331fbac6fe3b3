//! Terminal vocabulary shared by every peer: sizes, signals and exit statuses.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::limits::MAX_TERM_DIM;

/// A terminal size in character cells.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

impl TermSize {
    pub const DEFAULT: TermSize = TermSize { cols: 80, rows: 24 };

    pub(crate) fn validate(&self) -> Result<(), DecodeError> {
        if self.cols == 0 || self.rows == 0 {
            return Err(DecodeError::Invalid {
                field: "size",
                reason: "cols and rows must be at least 1",
            });
        }
        if self.cols > MAX_TERM_DIM || self.rows > MAX_TERM_DIM {
            return Err(DecodeError::Invalid {
                field: "size",
                reason: "cols and rows must be at most 1000",
            });
        }
        Ok(())
    }
}

impl Default for TermSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A signal that may be sent to a session's process group.
///
/// Named, not numbered, on the wire: signal numbers differ between platforms.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Kill,
    Usr1,
    Usr2,
    Term,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::Hup,
        Signal::Int,
        Signal::Quit,
        Signal::Kill,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Term,
    ];

    /// The signal's name without the `SIG` prefix, as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Int => "INT",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Term => "TERM",
        }
    }

    /// Parses `TERM`, `SIGTERM` or `term`.
    pub fn parse(s: &str) -> Option<Signal> {
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL.into_iter().find(|sig| sig.name() == name)
    }
}

/// How a session's process ended: an exit code, or the signal that killed it.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, when the process exited by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The number of the signal that ended the process, as the sandbox's kernel numbers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn code(code: i32) -> Self {
        ExitStatus {
            code: Some(code),
            signal: None,
        }
    }

    pub fn signal(signal: i32) -> Self {
        ExitStatus {
            code: None,
            signal: Some(signal),
        }
    }

    /// The status a shell would report: the exit code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_with_or_without_prefix() {
        assert_eq!(Signal::parse("SIGTERM"), Some(Signal::Term));
        assert_eq!(Signal::parse("int"), Some(Signal::Int));
        assert_eq!(Signal::parse("WINCH"), None);
        assert_eq!(serde_json::to_string(&Signal::Kill).unwrap(), "\"KILL\"");
    }

    #[test]
    fn shell_code_follows_the_128_plus_n_convention() {
        assert_eq!(ExitStatus::code(3).shell_code(), 3);
        assert_eq!(ExitStatus::signal(9).shell_code(), 137);
        assert_eq!(
            serde_json::to_string(&ExitStatus::signal(15)).unwrap(),
            r#"{"signal":15}"#
        );
    }

    #[test]
    fn sizes_outside_bounds_are_refused() {
        assert!(TermSize { cols: 0, rows: 24 }.validate().is_err());
        assert!(TermSize {
            cols: 80,
            rows: 1001
        }
        .validate()
        .is_err());
        assert!(TermSize::DEFAULT.validate().is_ok());
    }
}
