//! agentd's settings: where the control plane is, the sandbox token, the
//! work directory and the default shell, with the checks and derivations
//! (connect URL, login shell) that turn them into something usable.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Uid, User};

/// The path agentd dials on the control plane.
pub const CONNECT_PATH: &str = "/v1/agent/connect";

/// The shell of last resort.
const FALLBACK_SHELL: &str = "/bin/sh";

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
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("control_plane", &self.control_plane)
            .field("token", &"<redacted>")
            .field("workdir", &self.workdir)
            .field("default_shell", &self.default_shell)
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
        }
    }

    /// Checks what can be checked without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = connect_url(&self.control_plane)?;
        // This build links no TLS stack; refuse now rather than retry forever.
        if url.starts_with("wss://") {
            return Err(ConfigError::ControlPlane(
                "https:// and wss:// are not supported yet: this build of agentd has no TLS"
                    .to_owned(),
            ));
        }
        if self.token.is_empty() {
            return Err(ConfigError::Token("must not be empty"));
        }
        // It travels in an HTTP header.
        if !self.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Token("must be printable ASCII without spaces"));
        }
        Ok(())
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
        assert!(Config::new("https://h", "t", "/tmp").validate().is_err());
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
