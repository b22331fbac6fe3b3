//! What the list commands print: aligned tables for people and JSON for scripts.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use paddock_protocol::api::{SandboxInfo, SandboxStatus, SessionInfo, SessionState};
use serde::Serialize;

/// Longest command shown in the sessions table before it is cut with `…`.
const MAX_COMMAND_WIDTH: usize = 40;

/// Prints `value` as pretty JSON on stdout, the `--json` form of every list.
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).context("could not encode the answer as JSON")?;
    println!("{text}");
    Ok(())
}

/// A table of left-aligned columns separated by two spaces.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The `paddock sandboxes` table.
pub fn sandboxes_table(sandboxes: &[SandboxInfo], now: SystemTime) -> String {
    let mut table = Table::new(vec!["ID", "NAME", "STATUS", "LAST SEEN", "AGENT"]);
    for sb in sandboxes {
        let status = match sb.status {
            SandboxStatus::Connected => "connected",
            SandboxStatus::Disconnected => "disconnected",
        };
        let last_seen = match &sb.last_seen_at {
            Some(at) => ago(at, now),
            None => "never".to_owned(),
        };
        table.push(vec![
            sb.id.to_string(),
            sb.name.clone(),
            status.to_owned(),
            last_seen,
            sb.agent_version.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.render()
}

/// The `paddock sessions SANDBOX` table.
pub fn sessions_table(sessions: &[SessionInfo], now: SystemTime) -> String {
    let mut table = Table::new(vec![
        "ID", "STATE", "COMMAND", "SIZE", "EXIT", "DRIVER", "VIEWERS", "CREATED",
    ]);
    for s in sessions {
        let state = match s.state {
            SessionState::Starting => "starting",
            SessionState::Running => "running",
            SessionState::Exited => "exited",
            SessionState::Lost => "lost",
        };
        table.push(vec![
            s.id.to_string(),
            state.to_owned(),
            command_line(s.command.as_deref(), &s.args),
            format!("{}x{}", s.size.cols, s.size.rows),
            s.exit.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            s.driver.clone().unwrap_or_else(|| "-".to_owned()),
            s.viewers.to_string(),
            ago(&s.created_at, now),
        ]);
    }
    table.render()
}

/// A session's command as one short line: `(shell)` for the default shell.
pub fn command_line(command: Option<&str>, args: &[String]) -> String {
    let Some(command) = command else {
        return "(shell)".to_owned();
    };
    let mut line = command.to_owned();
    for arg in args {
        line.push(' ');
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            line.push('\'');
            line.push_str(arg);
            line.push('\'');
        } else {
            line.push_str(arg);
        }
    }
    // Control characters would break the table (and could drive the terminal).
    let line: String = line
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if line.chars().count() > MAX_COMMAND_WIDTH {
        let cut: String = line.chars().take(MAX_COMMAND_WIDTH - 1).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// An RFC 3339 time as `3s ago`; the raw text when it does not parse.
pub fn ago(rfc3339: &str, now: SystemTime) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(then) => humanize_elapsed(now.duration_since(then).unwrap_or(Duration::ZERO)),
        Err(_) => rfc3339.to_owned(),
    }
}

/// A duration as the one largest unit that fits: `3s ago`, `5m ago`, `2h ago`, `4d ago`.
pub fn humanize_elapsed(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    match secs {
        0 => "just now".to_owned(),
        1..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use paddock_protocol::{ExitStatus, SandboxId, SessionId, TermSize};

    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339_weak(rfc3339).unwrap()
    }

    #[test]
    fn elapsed_times_use_the_largest_unit() {
        assert_eq!(humanize_elapsed(Duration::from_millis(300)), "just now");
        assert_eq!(humanize_elapsed(Duration::from_secs(3)), "3s ago");
        assert_eq!(humanize_elapsed(Duration::from_secs(125)), "2m ago");
        assert_eq!(humanize_elapsed(Duration::from_secs(7300)), "2h ago");
        assert_eq!(humanize_elapsed(Duration::from_secs(3 * 86_400)), "3d ago");
    }

    #[test]
    fn ago_parses_rfc3339_and_tolerates_the_future_and_garbage() {
        let now = at("2026-11-26T03:00:10Z");
        assert_eq!(ago("2026-11-26T03:00:07.000Z", now), "3s ago");
        assert_eq!(ago("2026-11-26T03:00:07+00:00", now), "3s ago");
        assert_eq!(ago("2026-11-26T03:00:20Z", now), "just now");
        assert_eq!(ago("yesterday", now), "yesterday");
    }

    #[test]
    fn sandboxes_table_aligns_columns() {
        let now = at("2026-11-26T03:00:10Z");
        let sandboxes = vec![
            SandboxInfo {
                id: SandboxId::from("sbx_01"),
                name: "local-1".to_owned(),
                labels: BTreeMap::new(),
                status: SandboxStatus::Connected,
                created_at: "2026-11-26T02:00:00Z".to_owned(),
                last_seen_at: Some("2026-11-26T03:00:07Z".to_owned()),
                agent_version: Some("agentd/0.1.0".to_owned()),
            },
            SandboxInfo {
                id: SandboxId::from("sbx_0002"),
                name: "b".to_owned(),
                labels: BTreeMap::new(),
                status: SandboxStatus::Disconnected,
                created_at: "2026-11-26T02:00:00Z".to_owned(),
                last_seen_at: None,
                agent_version: None,
            },
        ];
        assert_eq!(
            sandboxes_table(&sandboxes, now),
            "ID        NAME     STATUS        LAST SEEN  AGENT\n\
             sbx_01    local-1  connected     3s ago     agentd/0.1.0\n\
             sbx_0002  b        disconnected  never      -\n"
        );
    }

    #[test]
    fn sessions_table_shows_command_size_exit_and_driver() {
        let now = at("2026-11-26T03:05:00Z");
        let session = SessionInfo {
            id: SessionId(4),
            sandbox_id: SandboxId::from("sbx_01"),
            command: Some("sh".to_owned()),
            args: vec!["-c".to_owned(), "exit 3".to_owned()],
            state: SessionState::Exited,
            size: TermSize {
                cols: 120,
                rows: 40,
            },
            created_at: "2026-11-26T03:00:00.000Z".to_owned(),
            ended_at: None,
            exit: Some(ExitStatus::code(3)),
            end_offset: 0,
            driver: None,
            viewers: 0,
        };
        let shell = SessionInfo {
            id: SessionId(5),
            command: None,
            args: vec![],
            state: SessionState::Running,
            exit: None,
            driver: Some("owner (paddock/0.1.0)".to_owned()),
            viewers: 2,
            ..session.clone()
        };
        assert_eq!(
            sessions_table(&[session, shell], now),
            "ID  STATE    COMMAND         SIZE    EXIT    DRIVER                 VIEWERS  CREATED\n\
             4   exited   sh -c 'exit 3'  120x40  exit 3  -                      0        5m ago\n\
             5   running  (shell)         120x40  -       owner (paddock/0.1.0)  2        5m ago\n"
        );
    }

    #[test]
    fn long_commands_are_cut_and_control_characters_hidden() {
        let args = vec!["x".repeat(60)];
        let line = command_line(Some("echo"), &args);
        assert_eq!(line.chars().count(), MAX_COMMAND_WIDTH);
        assert!(line.ends_with('…'));
        assert_eq!(command_line(Some("a\x1b[2J"), &[]), "a?[2J");
    }
}
