//! The control plane's configurable limits: how large a frame, how many
//! messages a second, sessions, watchers, WebSocket connections and request
//! bodies it accepts. The `[limits]` table of the config file, or
//! `PADDOCK_MAX_*` variables; enforced by [`crate::admission`].

use paddock_protocol::{FRAME_HEADER_LEN, MAX_CONTROL_FRAME, MAX_DATA_PAYLOAD};
use serde::Deserialize;

use crate::config::{parse, ConfigError};

/// The smallest frame limit allowed: a full output or input frame must fit.
pub const MIN_FRAME_BYTES: usize = FRAME_HEADER_LEN + MAX_DATA_PAYLOAD;
/// The protocol's hard ceiling on any frame (a JSON text frame); the
/// WebSocket library refuses anything larger whatever the config says.
pub const MAX_FRAME_BYTES: usize = MAX_CONTROL_FRAME;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message accepted from agents and clients, in bytes
    /// (`MIN_FRAME_BYTES..=MAX_FRAME_BYTES`); a larger one closes that
    /// connection with 4001.
    pub max_frame_bytes: usize,
    /// Messages a second one agent connection may send, sustained; twice as
    /// many in a burst. Past it the connection is closed with 4004.
    pub max_agent_messages_per_sec: u32,
    /// Messages a second one client stream may send (input, resizes),
    /// sustained; twice as many in a burst. Past it: closed with 4004.
    pub max_client_messages_per_sec: u32,
    /// Sessions of one sandbox open at once (not yet ended).
    pub max_sessions_per_sandbox: usize,
    /// Clients (watchers and the driver) on one session's stream at once.
    pub max_watchers_per_session: usize,
    /// WebSocket connections one token (an API token, or a sandbox's agentd
    /// token) may hold open at once.
    pub max_connections_per_token: usize,
    /// WebSocket connections one client IP address may hold open at once.
    /// Behind a proxy every connection comes from the proxy's address:
    /// name the header that carries the client's in `client_ip_header`.
    pub max_connections_per_ip: usize,
    /// A request header holding the client's IP address, set by a proxy in
    /// front that overwrites it (`fly-client-ip` behind Fly's): used instead
    /// of the peer address when present and valid. Unset: the peer address.
    pub client_ip_header: Option<String>,
    /// Largest HTTP request body accepted, in bytes; larger is 413.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: MAX_FRAME_BYTES,
            // A PTY read (often 4 KiB) is one frame: output at 200 MB/s is
            // 50 000 frames a second. This stops a spin of tiny messages.
            max_agent_messages_per_sec: 100_000,
            max_client_messages_per_sec: 1_000,
            max_sessions_per_sandbox: 256,
            max_watchers_per_session: 256,
            max_connections_per_token: 512,
            max_connections_per_ip: 1024,
            client_ip_header: None,
            // A `file_write` tool call carries up to 512 KiB as base64.
            max_body_bytes: 2 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Applies one `PADDOCK_MAX_*` variable; other keys are left alone.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "PADDOCK_MAX_FRAME_BYTES" => {
                self.max_frame_bytes = parse("PADDOCK_MAX_FRAME_BYTES", value)?
            }
            "PADDOCK_MAX_AGENT_MESSAGES_PER_SEC" => {
                self.max_agent_messages_per_sec =
                    parse("PADDOCK_MAX_AGENT_MESSAGES_PER_SEC", value)?
            }
            "PADDOCK_MAX_CLIENT_MESSAGES_PER_SEC" => {
                self.max_client_messages_per_sec =
                    parse("PADDOCK_MAX_CLIENT_MESSAGES_PER_SEC", value)?
            }
            "PADDOCK_MAX_SESSIONS_PER_SANDBOX" => {
                self.max_sessions_per_sandbox = parse("PADDOCK_MAX_SESSIONS_PER_SANDBOX", value)?
            }
            "PADDOCK_MAX_WATCHERS_PER_SESSION" => {
                self.max_watchers_per_session = parse("PADDOCK_MAX_WATCHERS_PER_SESSION", value)?
            }
            "PADDOCK_MAX_CONNECTIONS_PER_TOKEN" => {
                self.max_connections_per_token = parse("PADDOCK_MAX_CONNECTIONS_PER_TOKEN", value)?
            }
            "PADDOCK_MAX_CONNECTIONS_PER_IP" => {
                self.max_connections_per_ip = parse("PADDOCK_MAX_CONNECTIONS_PER_IP", value)?
            }
            "PADDOCK_CLIENT_IP_HEADER" => {
                self.client_ip_header =
                    Some(value.trim().to_ascii_lowercase()).filter(|h| !h.is_empty())
            }
            "PADDOCK_MAX_BODY_BYTES" => {
                self.max_body_bytes = parse("PADDOCK_MAX_BODY_BYTES", value)?
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return Err(ConfigError::Invalid {
                key: "max_frame_bytes",
                message: format!(
                    "{} is outside {MIN_FRAME_BYTES}..={MAX_FRAME_BYTES} (a full data frame must fit; \
                     the protocol allows no larger frame)",
                    self.max_frame_bytes
                ),
            });
        }
        if !(1024..=1024 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(ConfigError::Invalid {
                key: "max_body_bytes",
                message: format!("{} is outside 1 KiB..=1 GiB", self.max_body_bytes),
            });
        }
        if let Some(header) = &self.client_ip_header {
            if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(ConfigError::Invalid {
                    key: "client_ip_header",
                    message: format!("`{header}` is not a valid header name"),
                });
            }
        }
        let counts = [
            (
                "max_agent_messages_per_sec",
                self.max_agent_messages_per_sec as usize,
            ),
            (
                "max_client_messages_per_sec",
                self.max_client_messages_per_sec as usize,
            ),
            ("max_sessions_per_sandbox", self.max_sessions_per_sandbox),
            ("max_watchers_per_session", self.max_watchers_per_session),
            ("max_connections_per_token", self.max_connections_per_token),
            ("max_connections_per_ip", self.max_connections_per_ip),
        ];
        for (key, value) in counts {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(None, env, Overrides::default())
    }

    #[test]
    fn every_limit_comes_from_the_environment() {
        let config = load(&[
            ("PADDOCK_MAX_FRAME_BYTES", "100000"),
            ("PADDOCK_MAX_AGENT_MESSAGES_PER_SEC", "7"),
            ("PADDOCK_MAX_CLIENT_MESSAGES_PER_SEC", "8"),
            ("PADDOCK_MAX_SESSIONS_PER_SANDBOX", "9"),
            ("PADDOCK_MAX_WATCHERS_PER_SESSION", "10"),
            ("PADDOCK_MAX_CONNECTIONS_PER_TOKEN", "11"),
            ("PADDOCK_MAX_CONNECTIONS_PER_IP", "12"),
            ("PADDOCK_MAX_BODY_BYTES", "4096"),
            ("PADDOCK_CLIENT_IP_HEADER", "Fly-Client-IP"),
        ])
        .unwrap();
        assert_eq!(
            config.limits,
            Limits {
                max_frame_bytes: 100_000,
                max_agent_messages_per_sec: 7,
                max_client_messages_per_sec: 8,
                max_sessions_per_sandbox: 9,
                max_watchers_per_session: 10,
                max_connections_per_token: 11,
                max_connections_per_ip: 12,
                max_body_bytes: 4096,
                client_ip_header: Some("fly-client-ip".into()),
            }
        );
    }

    #[test]
    fn limits_come_from_the_file_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("paddock.toml");
        std::fs::write(&file, "[limits]\nmax_watchers_per_session = 3\n").unwrap();
        let env: Vec<(String, String)> = Vec::new();
        let config = Config::load(Some(&file), env, Overrides::default()).unwrap();
        assert_eq!(config.limits.max_watchers_per_session, 3);
        assert_eq!(
            config.limits.max_body_bytes,
            Limits::default().max_body_bytes
        );
    }

    #[test]
    fn out_of_range_limits_are_refused_by_name() {
        for (var, value, key) in [
            ("PADDOCK_MAX_FRAME_BYTES", "1000", "max_frame_bytes"),
            ("PADDOCK_MAX_FRAME_BYTES", "2000000", "max_frame_bytes"),
            ("PADDOCK_MAX_BODY_BYTES", "10", "max_body_bytes"),
            (
                "PADDOCK_MAX_SESSIONS_PER_SANDBOX",
                "0",
                "max_sessions_per_sandbox",
            ),
            (
                "PADDOCK_MAX_CONNECTIONS_PER_IP",
                "0",
                "max_connections_per_ip",
            ),
            (
                "PADDOCK_MAX_CLIENT_MESSAGES_PER_SEC",
                "0",
                "max_client_messages_per_sec",
            ),
            (
                "PADDOCK_MAX_WATCHERS_PER_SESSION",
                "many",
                "PADDOCK_MAX_WATCHERS_PER_SESSION",
            ),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert!(err.to_string().starts_with(key), "{var}={value}: {err}");
        }
    }
}
