//! What the list commands print: aligned tables for people and JSON for scripts.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use paddock_protocol::admin::{AuditEvent, TenantInfo, TokenInfo, UserInfo};
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
    show_headers: bool,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            show_headers: true,
            rows: Vec::new(),
        }
    }

    /// The same table without its header line: aligned `key  value` lines.
    pub fn without_headers(mut self) -> Self {
        self.show_headers = false;
        self
    }

    /// Adds a row; control characters in its cells are shown as `?`, as
    /// they would break the table (and could drive the terminal).
    pub fn push(&mut self, row: Vec<String>) {
        self.rows
            .push(row.into_iter().map(|c| printable(&c)).collect());
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|h| {
                if self.show_headers {
                    h.chars().count()
                } else {
                    0
                }
            })
            .collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let header = self.show_headers.then_some(&headers);
        for row in header.into_iter().chain(&self.rows) {
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
    let mut table = Table::new(vec![
        "ID",
        "NAME",
        "STATUS",
        "LAST SEEN",
        "AGENT",
        "PROVIDER",
    ]);
    for sb in sandboxes {
        let status = match (&sb.status, &sb.reason) {
            (SandboxStatus::Failed, Some(reason)) => format!("failed: {reason}"),
            (status, _) => status.as_str().to_owned(),
        };
        let last_seen = match &sb.last_seen_at {
            Some(at) => ago(at, now),
            None => "never".to_owned(),
        };
        table.push(vec![
            sb.id.to_string(),
            sb.name.clone(),
            status,
            last_seen,
            sb.agent_version.clone().unwrap_or_else(|| "-".to_owned()),
            match (&sb.provider, &sb.size) {
                (Some(p), Some(size)) => format!("{p}/{size}"),
                (Some(p), None) => p.clone(),
                (None, _) => "-".to_owned(),
            },
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

/// The `paddock tenants list` table.
pub fn tenants_table(tenants: &[TenantInfo], now: SystemTime) -> String {
    let mut table = Table::new(vec!["ID", "NAME", "RETENTION", "CREATED"]);
    for t in tenants {
        table.push(vec![
            t.id.clone(),
            t.name.clone(),
            retention(t.retention_days),
            ago(&t.created_at, now),
        ]);
    }
    table.render()
}

/// How long a tenant keeps output: `30 days` or `forever`.
pub fn retention(days: Option<u32>) -> String {
    match days {
        Some(1) => "1 day".to_owned(),
        Some(days) => format!("{days} days"),
        None => "forever".to_owned(),
    }
}

/// The `paddock users list` table.
pub fn users_table(users: &[UserInfo], now: SystemTime) -> String {
    let mut table = Table::new(vec!["ID", "NAME", "EMAIL", "CREATED"]);
    for u in users {
        table.push(vec![
            u.id.clone(),
            u.name.clone(),
            dash(u.email.as_deref()),
            ago(&u.created_at, now),
        ]);
    }
    table.render()
}

/// The `paddock tokens list` table.
pub fn tokens_table(tokens: &[TokenInfo], now: SystemTime) -> String {
    let mut table = Table::new(vec![
        "ID", "NAME", "ROLE", "USER", "STATUS", "CREATED", "EXPIRES",
    ]);
    for t in tokens {
        table.push(vec![
            t.id.clone(),
            t.name.clone(),
            t.role.as_str().to_owned(),
            dash(t.user_id.as_deref()),
            token_status(t, now).to_owned(),
            ago(&t.created_at, now),
            match &t.expires_at {
                Some(at) => relative(at, now),
                None => "never".to_owned(),
            },
        ]);
    }
    table.render()
}

/// `revoked`, `expired` or `active`.
fn token_status(token: &TokenInfo, now: SystemTime) -> &'static str {
    if token.revoked_at.is_some() {
        return "revoked";
    }
    let expired = token
        .expires_at
        .as_deref()
        .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
        .is_some_and(|at| at <= now);
    if expired {
        "expired"
    } else {
        "active"
    }
}

/// The `paddock audit` table, oldest first as the control plane sends it.
pub fn audit_table(events: &[AuditEvent]) -> String {
    let mut table = Table::new(vec!["TIME", "ACTOR", "ROLE", "ACTION", "RESOURCE"]);
    for e in events {
        table.push(vec![
            whole_seconds(&e.at),
            e.actor.clone(),
            e.role.clone(),
            e.action.clone(),
            e.resource.clone(),
        ]);
    }
    table.render()
}

/// An RFC 3339 time cut to whole seconds in UTC; the raw text when it does not parse.
pub fn whole_seconds(rfc3339: &str) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(at) => humantime::format_rfc3339_seconds(at).to_string(),
        Err(_) => rfc3339.to_owned(),
    }
}

/// An RFC 3339 time as `in 3d` when ahead of `now`, else as `3d ago`.
pub fn relative(rfc3339: &str, now: SystemTime) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(then) => match then.duration_since(now) {
            Ok(ahead) if ahead >= Duration::from_secs(1) => {
                let text = humanize_elapsed(ahead);
                format!("in {}", text.trim_end_matches(" ago"))
            }
            _ => ago(rfc3339, now),
        },
        Err(_) => rfc3339.to_owned(),
    }
}

fn dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// `text` with control characters shown as `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
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
    let line = printable(&line);
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
                reason: None,
                provider: Some("local".to_owned()),
                size: Some("small".to_owned()),
                created_at: "2026-11-26T02:00:00Z".to_owned(),
                last_seen_at: Some("2026-11-26T03:00:07Z".to_owned()),
                agent_version: Some("agentd/0.1.0".to_owned()),
            },
            SandboxInfo {
                id: SandboxId::from("sbx_0002"),
                name: "b".to_owned(),
                labels: BTreeMap::new(),
                status: SandboxStatus::Failed,
                reason: Some("gone".to_owned()),
                provider: None,
                size: None,
                created_at: "2026-11-26T02:00:00Z".to_owned(),
                last_seen_at: None,
                agent_version: None,
            },
        ];
        assert_eq!(
            sandboxes_table(&sandboxes, now),
            "ID        NAME     STATUS        LAST SEEN  AGENT         PROVIDER\n\
             sbx_01    local-1  connected     3s ago     agentd/0.1.0  local/small\n\
             sbx_0002  b        failed: gone  never      -             -\n"
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

    fn token(id: &str, expires_at: Option<&str>, revoked_at: Option<&str>) -> TokenInfo {
        TokenInfo {
            id: id.to_owned(),
            tenant_id: "acme".to_owned(),
            name: "ci".to_owned(),
            role: paddock_protocol::admin::Role::Developer,
            user_id: None,
            created_at: "2026-11-26T02:00:00Z".to_owned(),
            expires_at: expires_at.map(str::to_owned),
            revoked_at: revoked_at.map(str::to_owned),
        }
    }

    #[test]
    fn tokens_table_shows_status_and_expiry() {
        let now = at("2026-11-26T03:00:00Z");
        let tokens = vec![
            token("tok_1", None, None),
            token("tok_22", Some("2026-11-29T03:00:00Z"), None),
            token("tok_3", Some("2026-11-26T01:00:00Z"), None),
            TokenInfo {
                user_id: Some("usr_1".to_owned()),
                ..token("tok_4", None, Some("2026-11-26T02:30:00Z"))
            },
        ];
        assert_eq!(
            tokens_table(&tokens, now),
            "ID      NAME  ROLE       USER   STATUS   CREATED  EXPIRES\n\
             tok_1   ci    developer  -      active   1h ago   never\n\
             tok_22  ci    developer  -      active   1h ago   in 3d\n\
             tok_3   ci    developer  -      expired  1h ago   2h ago\n\
             tok_4   ci    developer  usr_1  revoked  1h ago   never\n"
        );
    }

    #[test]
    fn tenants_and_users_tables_show_retention_and_email() {
        let now = at("2026-11-26T03:00:00Z");
        let tenants = vec![
            TenantInfo {
                id: "acme".to_owned(),
                name: "acme".to_owned(),
                retention_days: Some(30),
                created_at: "2026-11-25T03:00:00Z".to_owned(),
            },
            TenantInfo {
                id: "default".to_owned(),
                name: "default".to_owned(),
                retention_days: None,
                created_at: "2026-11-26T02:59:00Z".to_owned(),
            },
        ];
        assert_eq!(
            tenants_table(&tenants, now),
            "ID       NAME     RETENTION  CREATED\n\
             acme     acme     30 days    1d ago\n\
             default  default  forever    1m ago\n"
        );
        let users = vec![UserInfo {
            id: "usr_1".to_owned(),
            tenant_id: "acme".to_owned(),
            name: "alice".to_owned(),
            email: None,
            created_at: "2026-11-26T02:00:00Z".to_owned(),
        }];
        assert_eq!(
            users_table(&users, now),
            "ID     NAME   EMAIL  CREATED\nusr_1  alice  -      1h ago\n"
        );
    }

    #[test]
    fn audit_table_shows_whole_seconds_and_hides_control_characters() {
        let event = AuditEvent {
            id: 1,
            tenant_id: "acme".to_owned(),
            at: "2026-11-26T03:00:07.123Z".to_owned(),
            actor: "tok_1".to_owned(),
            role: "admin".to_owned(),
            action: "token.created".to_owned(),
            resource: "token/tok_2\x1b[2J".to_owned(),
            detail: serde_json::Value::Null,
        };
        let system = AuditEvent {
            at: "not a time".to_owned(),
            actor: "system".to_owned(),
            role: "system".to_owned(),
            action: "sandbox.registered".to_owned(),
            resource: "sandbox/sbx_1".to_owned(),
            ..event.clone()
        };
        assert_eq!(
            audit_table(&[event, system]),
            "TIME                  ACTOR   ROLE    ACTION              RESOURCE\n\
             2026-11-26T03:00:07Z  tok_1   admin   token.created       token/tok_2?[2J\n\
             not a time            system  system  sandbox.registered  sandbox/sbx_1\n"
        );
    }

    #[test]
    fn headerless_tables_align_keys_and_values() {
        let mut table = Table::new(vec!["", ""]).without_headers();
        table.push(vec!["role".to_owned(), "admin".to_owned()]);
        table.push(vec!["tenant".to_owned(), "acme".to_owned()]);
        assert_eq!(table.render(), "role    admin\ntenant  acme\n");
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
