//! agentd's settings: where the control plane is, the sandbox token, the
//! work directory, the default shell and the output retention limits, with
//! the checks and derivations (connect URL, login shell, byte sizes) that
//! turn them into something usable.

use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Uid, User};

use crate::lsp::LspConfig;

/// The path agentd dials on the control plane.
pub const CONNECT_PATH: &str = "/v1/agent/connect";

/// The shell of last resort.
const FALLBACK_SHELL: &str = "/bin/sh";

/// The state directory under the workdir unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_SUBDIR: &str = ".agentd";
/// Unacknowledged output kept in memory per session before it spills to disk.
pub const DEFAULT_MEMORY_BOUND: u64 = 4 * 1024 * 1024;
/// Spilled output across the whole sandbox.
pub const DEFAULT_DISK_CAP: u64 = 256 * 1024 * 1024;
/// Unacknowledged output a session may have in flight while connected,
/// unless the memory bound plus the disk cap is smaller.
pub const DEFAULT_WINDOW: u64 = 8 * 1024 * 1024;

/// Everything `agentd::run` needs. The token is redacted in `Debug`.
#[derive(Clone)]
pub struct Config {
    /// The control plane's base URL (`http://host:port`, `https://…`) or a
    /// full WebSocket URL (`ws://…/v1/agent/connect`).
    pub control_plane: String,
    /// The sandbox token, sent as `Authorization: Bearer`.
    pub token: String,
    /// Where sessions start; created if missing.
    pub workdir: PathBuf,
    /// The program a session runs when it names none; see [`default_shell`].
    pub default_shell: Option<PathBuf>,
    /// Where spill files go; `<workdir>/.agentd` when `None`. Created if missing.
    pub state_dir: Option<PathBuf>,
    /// Unacknowledged output held in memory per session, in bytes; the rest spills.
    pub memory_bound: u64,
    /// Spilled output across every session of the sandbox, in bytes.
    pub disk_cap: u64,
    /// Unacknowledged output a session may have in flight while connected,
    /// in bytes; at the window the session stops reading its terminal.
    /// `None`: see [`Config::window`].
    pub window: Option<u64>,
    /// Language servers by language, and how long an unused one is kept.
    pub lsp: LspConfig,
    /// A PEM file of CA certificates trusted besides the platform (webpki)
    /// roots, for a control plane with a private or self-signed certificate.
    pub ca_file: Option<PathBuf>,
    /// Like `ca_file`, the PEM text itself: for containers, whose provider
    /// passes it in the environment (certificates are not secret).
    pub ca_pem: Option<String>,
    /// The uid sessions and `exec` run as, when not agentd's own (agentd
    /// must then run as root); `None`: agentd's own user.
    pub session_uid: Option<u32>,
    /// Their gid; `None`: the session uid's primary group.
    pub session_gid: Option<u32>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("control_plane", &self.control_plane)
            .field("token", &"<redacted>")
            .field("workdir", &self.workdir)
            .field("default_shell", &self.default_shell)
            .field("state_dir", &self.state_dir)
            .field("memory_bound", &self.memory_bound)
            .field("disk_cap", &self.disk_cap)
            .field("window", &self.window)
            .field("lsp", &self.lsp)
            .field("ca_file", &self.ca_file)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("session_uid", &self.session_uid)
            .field("session_gid", &self.session_gid)
            .finish()
    }
}

/// A setting that cannot work, naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("control_plane (--control-plane, PADDOCK_AGENTD_CONTROL_PLANE): {0}")]
    ControlPlane(String),
    #[error("token (--token, PADDOCK_AGENTD_TOKEN): {0}")]
    Token(&'static str),
    #[error("memory_bound (--memory-bound, PADDOCK_AGENTD_MEMORY_BOUND): {0}")]
    MemoryBound(String),
    #[error("disk_cap (--disk-cap, PADDOCK_AGENTD_DISK_CAP): {0}")]
    DiskCap(String),
    #[error("window (--window, PADDOCK_AGENTD_WINDOW): {0}")]
    Window(String),
    #[error("ca_file (--ca-file, PADDOCK_AGENTD_CA_FILE): {0}")]
    CaFile(String),
    #[error("ca_pem (--ca-pem, PADDOCK_AGENTD_CA_PEM): {0}")]
    CaPem(String),
    #[error("session_uid (--session-uid, PADDOCK_AGENTD_SESSION_UID): {0}")]
    SessionUid(String),
}

impl Config {
    pub fn new(
        control_plane: impl Into<String>,
        token: impl Into<String>,
        workdir: impl Into<PathBuf>,
    ) -> Self {
        Config {
            control_plane: control_plane.into(),
            token: token.into(),
            workdir: workdir.into(),
            default_shell: None,
            state_dir: None,
            memory_bound: DEFAULT_MEMORY_BOUND,
            disk_cap: DEFAULT_DISK_CAP,
            window: None,
            lsp: LspConfig::default(),
            ca_file: None,
            ca_pem: None,
            session_uid: None,
            session_gid: None,
        }
    }

    /// Checks what can be checked without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        connect_url(&self.control_plane)?;
        if self.token.is_empty() {
            return Err(ConfigError::Token("must not be empty"));
        }
        // It travels in an HTTP header.
        if !self.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Token("must be printable ASCII without spaces"));
        }
        if self.memory_bound == 0 {
            return Err(ConfigError::MemoryBound("must not be zero".to_owned()));
        }
        if usize::try_from(self.memory_bound).is_err() {
            return Err(ConfigError::MemoryBound(
                "does not fit this machine's address space".to_owned(),
            ));
        }
        if self.disk_cap == 0 {
            return Err(ConfigError::DiskCap("must not be zero".to_owned()));
        }
        match self.window {
            Some(0) => return Err(ConfigError::Window("must not be zero".to_owned())),
            Some(window) if window > self.retention_room() => {
                return Err(ConfigError::Window(format!(
                    "{window} bytes is more than the memory bound plus the disk cap ({} bytes)",
                    self.retention_room()
                )))
            }
            _ => {}
        }
        self.check_session_user(Uid::effective().as_raw())
    }

    /// Sessions can run as another user only if agentd is root.
    fn check_session_user(&self, agentd_uid: u32) -> Result<(), ConfigError> {
        match self.session_uid {
            None if self.session_gid.is_some() => Err(ConfigError::SessionUid(
                "a session gid (--session-gid) needs a session uid as well".to_owned(),
            )),
            Some(uid) if agentd_uid != 0 && uid != agentd_uid => {
                Err(ConfigError::SessionUid(format!(
                    "agentd runs as uid {agentd_uid}, not root, so it cannot start sessions \
                     as uid {uid}; run agentd as root or leave the session uid unset"
                )))
            }
            _ => Ok(()),
        }
    }

    /// What one session can retain at most: the memory bound plus the disk cap.
    fn retention_room(&self) -> u64 {
        self.memory_bound.saturating_add(self.disk_cap)
    }

    /// The window in effect: as set, else [`DEFAULT_WINDOW`] or the memory
    /// bound plus the disk cap, whichever is smaller.
    pub fn window(&self) -> u64 {
        self.window
            .unwrap_or_else(|| DEFAULT_WINDOW.min(self.retention_room()))
    }

    /// Where spill files go: `state_dir`, else `.agentd` under `workdir`.
    pub fn state_dir(&self, workdir: &Path) -> PathBuf {
        match &self.state_dir {
            Some(dir) => dir.clone(),
            None => workdir.join(DEFAULT_STATE_SUBDIR),
        }
    }

    /// The WebSocket URL to dial; see [`connect_url`].
    pub fn connect_url(&self) -> Result<String, ConfigError> {
        connect_url(&self.control_plane)
    }
}

/// Derives the WebSocket URL from the control plane's address.
///
/// `http://h:p` becomes `ws://h:p/v1/agent/connect` (`https` → `wss`, any
/// base path kept in front); a `ws://` or `wss://` URL is used as given,
/// unless its path is empty or `/`, which gets the connect path.
pub fn connect_url(base: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError::ControlPlane(format!("{why}: {base:?}"));
    let base = base.trim();
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| bad("expected a URL such as http://127.0.0.1:7700"))?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("the URL has no host"));
    }
    if path.starts_with(['?', '#']) {
        return Err(bad("a query or fragment is not supported"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => {
            let ws = if scheme.eq_ignore_ascii_case("https") {
                "wss"
            } else {
                "ws"
            };
            let prefix = path.trim_end_matches('/');
            Ok(format!("{ws}://{authority}{prefix}{CONNECT_PATH}"))
        }
        "ws" | "wss" => {
            if path.is_empty() || path == "/" {
                Ok(format!(
                    "{}://{authority}{CONNECT_PATH}",
                    scheme.to_ascii_lowercase()
                ))
            } else {
                Ok(base.to_owned())
            }
        }
        _ => Err(bad("the scheme must be http, https, ws or wss")),
    }
}

/// The host of a plain `ws://` URL when it is not a loopback host
/// (127.0.0.0/8, ::1, `localhost`): a link whose token and traffic would
/// cross a network unencrypted. `None` for `wss://` and for loopback.
pub fn plain_remote_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("ws://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_owned())
}

/// Parses a byte size: a whole number, optionally followed by `K`, `M`,
/// `G` or `T` (also spelled `KB`/`KiB`, any case). Every suffix is a
/// power of 1024: `64K` is 65536 bytes, `4MiB` 4194304.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "expected a number of bytes such as 65536, 64K or 4MiB, got {text:?}"
        ));
    }
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown size suffix {other:?} in {text:?}; use K, M, G or T"
            ))
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The shell a session runs when its request names no command: `$SHELL` if
/// set and executable, else the login shell of the current user from the
/// password database, else `/bin/sh`.
pub fn default_shell() -> PathBuf {
    let from_env = std::env::var_os("SHELL").map(PathBuf::from);
    let from_passwd = || {
        User::from_uid(Uid::current())
            .ok()
            .flatten()
            .map(|user| user.shell)
    };
    pick_shell(from_env, from_passwd)
}

fn pick_shell(from_env: Option<PathBuf>, from_passwd: impl FnOnce() -> Option<PathBuf>) -> PathBuf {
    if let Some(shell) = from_env.filter(|s| is_executable(s)) {
        return shell;
    }
    if let Some(shell) = from_passwd().filter(|s| is_executable(s)) {
        return shell;
    }
    PathBuf::from(FALLBACK_SHELL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_become_the_connect_url() {
        let url = |base: &str| connect_url(base).unwrap();
        assert_eq!(
            url("http://127.0.0.1:7700"),
            "ws://127.0.0.1:7700/v1/agent/connect"
        );
        assert_eq!(
            url("http://127.0.0.1:7700/"),
            "ws://127.0.0.1:7700/v1/agent/connect"
        );
        assert_eq!(
            url("https://paddock.example.com"),
            "wss://paddock.example.com/v1/agent/connect"
        );
        assert_eq!(
            url("https://example.com/paddock/"),
            "wss://example.com/paddock/v1/agent/connect"
        );
        assert_eq!(
            url("ws://localhost:7700"),
            "ws://localhost:7700/v1/agent/connect"
        );
        assert_eq!(url("wss://h/"), "wss://h/v1/agent/connect");
        assert_eq!(
            url("ws://h:1/v1/agent/connect"),
            "ws://h:1/v1/agent/connect"
        );
        assert_eq!(url("ws://h:1/custom"), "ws://h:1/custom");
    }

    #[test]
    fn bad_urls_are_refused_naming_the_setting() {
        for bad in ["127.0.0.1:7700", "ftp://h", "http://", "http://h?x=1"] {
            let err = connect_url(bad).unwrap_err().to_string();
            assert!(err.starts_with("control_plane"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_token_is_redacted_and_checked() {
        let config = Config::new("http://h:1", "s3cret", "/tmp");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(config.validate().is_ok());
        assert!(Config::new("http://h:1", "", "/tmp").validate().is_err());
        assert!(Config::new("http://h:1", "a b", "/tmp").validate().is_err());
        assert!(Config::new("https://h", "t", "/tmp").validate().is_ok());
    }

    #[test]
    fn plain_links_off_loopback_are_recognised() {
        for loopback in [
            "ws://127.0.0.1:7700/v1/agent/connect",
            "ws://127.1.2.3/x",
            "ws://[::1]:7700/v1/agent/connect",
            "ws://localhost:7700/v1/agent/connect",
            "wss://paddock.example.com/v1/agent/connect",
        ] {
            assert_eq!(plain_remote_host(loopback), None, "{loopback}");
        }
        assert_eq!(
            plain_remote_host("ws://10.1.2.3:7700/v1/agent/connect").as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(
            plain_remote_host("ws://control-plane:7700/v1/agent/connect").as_deref(),
            Some("control-plane")
        );
        assert_eq!(
            plain_remote_host("ws://[fd00::1]:7700/x").as_deref(),
            Some("fd00::1")
        );
    }

    #[test]
    fn byte_sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(64 * 1024));
        assert_eq!(parse_bytes("64k"), Ok(64 * 1024));
        assert_eq!(parse_bytes("4M"), Ok(4 << 20));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("8 MB"), Ok(8 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("2TiB"), Ok(2 << 40));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in [
            "",
            "K",
            "4X",
            "-1",
            "1.5M",
            "99999999999999999999",
            "20000000T",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retention_limits_are_checked_naming_the_flag() {
        let base = || Config::new("http://h:1", "t", "/tmp");
        let err = |config: Config| config.validate().unwrap_err().to_string();
        let mut c = base();
        c.memory_bound = 0;
        assert!(err(c).contains("--memory-bound"));
        let mut c = base();
        c.disk_cap = 0;
        assert!(err(c).contains("--disk-cap"));
        let mut c = base();
        c.window = Some(0);
        assert!(err(c).contains("--window"));
        let mut c = base();
        c.memory_bound = 1024;
        c.disk_cap = 1024;
        c.window = Some(2049);
        let message = err(c);
        assert!(
            message.contains("--window") && message.contains("2048"),
            "{message}"
        );
        let mut c = base();
        c.memory_bound = 1024;
        c.disk_cap = 1024;
        c.window = Some(2048);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn another_session_user_needs_root() {
        let mut c = Config::new("http://h:1", "t", "/tmp");
        assert!(c.check_session_user(1000).is_ok());
        c.session_gid = Some(5);
        assert!(c.check_session_user(0).is_err());
        c.session_uid = Some(1000);
        assert!(c.check_session_user(0).is_ok());
        assert!(c.check_session_user(1000).is_ok());
        let message = c.check_session_user(1001).unwrap_err().to_string();
        assert!(
            message.contains("--session-uid") && message.contains("root"),
            "{message}"
        );
    }

    #[test]
    fn the_default_window_fits_what_a_session_can_retain() {
        let mut c = Config::new("http://h:1", "t", "/tmp");
        assert_eq!(c.window(), DEFAULT_WINDOW);
        c.memory_bound = 16 * 1024;
        c.disk_cap = 64 * 1024;
        assert!(c.validate().is_ok());
        assert_eq!(c.window(), 80 * 1024);
        c.window = Some(1000);
        assert_eq!(c.window(), 1000);
    }

    #[test]
    fn the_state_dir_defaults_to_the_workdir() {
        let mut config = Config::new("http://h:1", "t", "/w");
        assert_eq!(
            config.state_dir(Path::new("/real/w")),
            PathBuf::from("/real/w/.agentd")
        );
        config.state_dir = Some("/var/agentd".into());
        assert_eq!(
            config.state_dir(Path::new("/real/w")),
            PathBuf::from("/var/agentd")
        );
    }

    #[test]
    fn the_default_shell_falls_back_in_order() {
        assert_eq!(
            pick_shell(Some("/bin/sh".into()), || None),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            pick_shell(Some("/no/such/shell".into()), || Some("/bin/sh".into())),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            pick_shell(None, || Some("/no/such/shell".into())),
            PathBuf::from(FALLBACK_SHELL)
        );
    }
}
