//! The control plane's typed configuration: defaults, then a TOML file, then
//! `PADDOCK_*` environment variables, then command-line flags.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::store::Durability;

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Directory for the SQLite database and local sandboxes.
    pub data_dir: PathBuf,
    /// `sqlite://…`; defaults to `<data_dir>/paddock.db`.
    pub database_url: Option<String>,
    /// How often agentd pings; a link silent for three intervals is dropped.
    pub heartbeat_ms: u64,
    /// SQLite `synchronous` mode: `full` (default), `normal` or `off`.
    pub sqlite_synchronous: Durability,
    /// Bytes of recent output each live session keeps in memory for watchers.
    pub live_buffer_bytes: usize,
    /// Seconds between passes of the retention job.
    pub retention_interval_secs: u64,
    /// The owner's API token on a fresh database (`PADDOCK_BOOTSTRAP_TOKEN`).
    #[serde(skip)]
    pub bootstrap_token: Option<String>,
    /// An owner token to accept whatever the database holds (`up` keeps one
    /// in its data directory).
    #[serde(skip)]
    pub owner_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from(".paddock"),
            database_url: None,
            heartbeat_ms: 15_000,
            sqlite_synchronous: Durability::Full,
            live_buffer_bytes: 4 * 1024 * 1024,
            retention_interval_secs: 3600,
            bootstrap_token: None,
            owner_token: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .field("live_buffer_bytes", &self.live_buffer_bytes)
            .field("retention_interval_secs", &self.retention_interval_secs)
            .field(
                "bootstrap_token",
                &self.bootstrap_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "owner_token",
                &self.owner_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Values given as flags; `None` leaves the lower layers' value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

impl Config {
    /// Builds the configuration from every layer, lowest first.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Overrides,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?
            }
            None => Config::default(),
        };
        for (key, value) in env {
            match key.as_str() {
                "PADDOCK_LISTEN" => config.listen = parse("PADDOCK_LISTEN", &value)?,
                "PADDOCK_DATA_DIR" => config.data_dir = PathBuf::from(value),
                "PADDOCK_DATABASE_URL" => config.database_url = Some(value),
                "PADDOCK_HEARTBEAT_MS" => {
                    config.heartbeat_ms = parse("PADDOCK_HEARTBEAT_MS", &value)?
                }
                "PADDOCK_SQLITE_SYNCHRONOUS" => {
                    config.sqlite_synchronous =
                        value.parse().map_err(|message| ConfigError::Invalid {
                            key: "PADDOCK_SQLITE_SYNCHRONOUS",
                            message,
                        })?
                }
                "PADDOCK_RETENTION_INTERVAL_SECS" => {
                    config.retention_interval_secs =
                        parse("PADDOCK_RETENTION_INTERVAL_SECS", &value)?
                }
                "PADDOCK_LIVE_BUFFER_BYTES" => {
                    config.live_buffer_bytes = parse("PADDOCK_LIVE_BUFFER_BYTES", &value)?
                }
                "PADDOCK_BOOTSTRAP_TOKEN" if !value.is_empty() => {
                    config.bootstrap_token = Some(value)
                }
                _ => {}
            }
        }
        if let Some(listen) = flags.listen {
            config.listen = listen;
        }
        if let Some(dir) = flags.data_dir {
            config.data_dir = dir;
        }
        if let Some(url) = flags.database_url {
            config.database_url = Some(url);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(50..=600_000).contains(&self.heartbeat_ms) {
            return Err(ConfigError::Invalid {
                key: "heartbeat_ms",
                message: format!("{} is outside 50..=600000", self.heartbeat_ms),
            });
        }
        if self.retention_interval_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "retention_interval_secs",
                message: "must be at least 1".into(),
            });
        }
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.live_buffer_bytes) {
            return Err(ConfigError::Invalid {
                key: "live_buffer_bytes",
                message: format!("{} is outside 64 KiB..=1 GiB", self.live_buffer_bytes),
            });
        }
        if let Some(url) = &self.database_url {
            let known = ["sqlite:", "postgres:", "postgresql:"];
            if !known.iter().any(|scheme| url.starts_with(scheme)) {
                return Err(ConfigError::Invalid {
                    key: "database_url",
                    message: "use a sqlite:// path or a postgres:// URL".into(),
                });
            }
        }
        if let Some(token) = &self.bootstrap_token {
            if token.len() < 16 {
                return Err(ConfigError::Invalid {
                    key: "PADDOCK_BOOTSTRAP_TOKEN",
                    message: "must be at least 16 characters".into(),
                });
            }
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| crate::store::sqlite_url(&self.data_dir))
    }
}

fn parse<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Invalid {
        key,
        message: format!("`{value}`: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("paddock.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nheartbeat_ms = 1000\ndata_dir = \"/from/file\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("PADDOCK_HEARTBEAT_MS", "500"),
                ("PADDOCK_DATA_DIR", "/from/env"),
            ]),
            Overrides {
                data_dir: Some("/from/flag".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.heartbeat_ms, 500);
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.database_url(), "sqlite:///from/flag/paddock.db");
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::load(
            None,
            env(&[("PADDOCK_HEARTBEAT_MS", "abc")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("PADDOCK_HEARTBEAT_MS"), "{err}");
        let err = Config::load(
            None,
            env(&[("PADDOCK_HEARTBEAT_MS", "1")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("heartbeat_ms"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let err = Config::load(Some(&file), env(&[]), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }

    #[test]
    fn debug_redacts_the_bootstrap_token() {
        let config = Config::load(
            None,
            env(&[("PADDOCK_BOOTSTRAP_TOKEN", "super-secret-token-value")]),
            Overrides::default(),
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
