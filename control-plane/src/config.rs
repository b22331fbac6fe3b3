//! The control plane's typed configuration: defaults, then a TOML file, then
//! `PADDOCK_*` environment variables, then command-line flags.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::limits::Limits;
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
    /// Tasks of one tenant running at once, at most.
    pub max_tasks_per_tenant: usize,
    /// What an hour of sandbox time costs, in micro-dollars (for budgets).
    pub sandbox_micros_per_hour: i64,
    /// PEM certificate chain to serve HTTPS and `wss://` with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback: only behind a
    /// proxy that terminates TLS (such as Fly's).
    pub allow_plain_http: bool,
    /// API requests a second each token may make, sustained (GCRA).
    pub api_rate_per_sec: u32,
    /// API requests one token may make at once before the rate applies.
    pub api_burst: u32,
    /// Connection, size and rate limits: the `[limits]` table, `PADDOCK_MAX_*`.
    pub limits: Limits,
    /// Providers, sizes, pools and the idle policy (`[providers]`).
    pub providers: crate::providers::settings::ProviderSettings,
    /// The clock of time-based policies (tests put a manual one here).
    #[serde(skip)]
    pub clock: crate::clock::Clock,
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
            max_tasks_per_tenant: 8,
            sandbox_micros_per_hour: 100_000,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            api_rate_per_sec: 50,
            api_burst: 100,
            limits: Limits::default(),
            providers: Default::default(),
            clock: Default::default(),
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
            .field("max_tasks_per_tenant", &self.max_tasks_per_tenant)
            .field("sandbox_micros_per_hour", &self.sandbox_micros_per_hour)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("allow_plain_http", &self.allow_plain_http)
            .field("api_rate_per_sec", &self.api_rate_per_sec)
            .field("api_burst", &self.api_burst)
            .field("limits", &self.limits)
            .field("providers", &self.providers)
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
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `Some(true)` when the flag was given.
    pub allow_plain_http: Option<bool>,
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
                "PADDOCK_SANDBOX_MICROS_PER_HOUR" => {
                    config.sandbox_micros_per_hour =
                        parse("PADDOCK_SANDBOX_MICROS_PER_HOUR", &value)?
                }
                "PADDOCK_MAX_TASKS_PER_TENANT" => {
                    config.max_tasks_per_tenant = parse("PADDOCK_MAX_TASKS_PER_TENANT", &value)?
                }
                "PADDOCK_LIVE_BUFFER_BYTES" => {
                    config.live_buffer_bytes = parse("PADDOCK_LIVE_BUFFER_BYTES", &value)?
                }
                "PADDOCK_BOOTSTRAP_TOKEN" if !value.is_empty() => {
                    config.bootstrap_token = Some(value)
                }
                "PADDOCK_TLS_CERT" if !value.is_empty() => {
                    config.tls_cert = Some(PathBuf::from(value))
                }
                "PADDOCK_TLS_KEY" if !value.is_empty() => {
                    config.tls_key = Some(PathBuf::from(value))
                }
                "PADDOCK_ALLOW_PLAIN_HTTP" => {
                    config.allow_plain_http = parse_bool("PADDOCK_ALLOW_PLAIN_HTTP", &value)?
                }
                "PADDOCK_API_RATE_PER_SEC" => {
                    config.api_rate_per_sec = parse("PADDOCK_API_RATE_PER_SEC", &value)?
                }
                "PADDOCK_API_BURST" => config.api_burst = parse("PADDOCK_API_BURST", &value)?,
                other => {
                    if !config.providers.apply_env(other, &value)? {
                        config.limits.set_env(other, &value)?;
                    }
                }
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
        if let Some(cert) = flags.tls_cert {
            config.tls_cert = Some(cert);
        }
        if let Some(key) = flags.tls_key {
            config.tls_key = Some(key);
        }
        if let Some(allow) = flags.allow_plain_http {
            config.allow_plain_http = allow;
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
        for (key, value) in [
            ("api_rate_per_sec", self.api_rate_per_sec),
            ("api_burst", self.api_burst),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        self.limits.validate()?;
        self.validate_tls()?;
        self.providers.validate()?;
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

    /// Both or neither of the certificate and key; plain HTTP only on
    /// loopback unless explicitly allowed.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(ConfigError::Invalid {
                key: "tls_key",
                message: "tls_cert is set but tls_key is not: give both (--tls-key, PADDOCK_TLS_KEY) or neither".into(),
            }),
            (None, Some(_)) => Err(ConfigError::Invalid {
                key: "tls_cert",
                message: "tls_key is set but tls_cert is not: give both (--tls-cert, PADDOCK_TLS_CERT) or neither".into(),
            }),
            (None, None) if !is_loopback(self.listen.ip()) && !self.allow_plain_http => {
                Err(ConfigError::Invalid {
                    key: "listen",
                    message: format!(
                        "{} is not a loopback address, and without TLS the tokens would cross the network in clear: \
                         give tls_cert and tls_key (--tls-cert/--tls-key, PADDOCK_TLS_CERT/PADDOCK_TLS_KEY), \
                         or set allow_plain_http = true (PADDOCK_ALLOW_PLAIN_HTTP=true, --allow-plain-http) \
                         if a proxy in front terminates TLS",
                        self.listen
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// The certificate and key files, when TLS is on.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }

    /// The base URL clients use for a server bound to `addr`: `https://`
    /// with TLS, else `http://`.
    pub fn base_url(&self, addr: SocketAddr) -> String {
        let scheme = if self.tls().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| crate::store::sqlite_url(&self.data_dir))
    }
}

pub(crate) fn parse<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Invalid {
        key,
        message: format!("`{value}`: {e}"),
    })
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(ConfigError::Invalid {
            key,
            message: format!("`{value}`: expected true or false"),
        }),
    }
}

/// 127.0.0.0/8 and ::1 (also as an IPv4-mapped address).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
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
    fn plain_http_off_loopback_needs_tls_or_an_explicit_allowance() {
        let public = Overrides {
            listen: Some("0.0.0.0:7700".parse().unwrap()),
            ..Overrides::default()
        };
        let err = Config::load(None, env(&[]), public.clone()).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("listen"), "{message}");
        assert!(
            message.contains("tls_cert") && message.contains("allow_plain_http"),
            "{message}"
        );
        let allowed = Config::load(
            None,
            env(&[("PADDOCK_ALLOW_PLAIN_HTTP", "true")]),
            public.clone(),
        )
        .unwrap();
        assert!(allowed.allow_plain_http);
        assert_eq!(
            allowed.base_url("10.0.0.1:7700".parse().unwrap()),
            "http://10.0.0.1:7700"
        );
        let with_tls = Config::load(
            None,
            env(&[
                ("PADDOCK_TLS_CERT", "/etc/paddock/cert.pem"),
                ("PADDOCK_TLS_KEY", "/etc/paddock/key.pem"),
            ]),
            public,
        )
        .unwrap();
        assert_eq!(
            with_tls.base_url("10.0.0.1:7700".parse().unwrap()),
            "https://10.0.0.1:7700"
        );
        for listen in ["127.0.0.1:0", "127.8.9.10:1", "[::1]:7700"] {
            let loopback = Overrides {
                listen: Some(listen.parse().unwrap()),
                ..Overrides::default()
            };
            assert!(Config::load(None, env(&[]), loopback).is_ok(), "{listen}");
        }
        let err = Config::load(
            None,
            env(&[("PADDOCK_ALLOW_PLAIN_HTTP", "maybe")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("PADDOCK_ALLOW_PLAIN_HTTP"),
            "{err}"
        );
    }

    #[test]
    fn the_certificate_and_key_come_together() {
        let only_cert = Overrides {
            tls_cert: Some("/c.pem".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, env(&[]), only_cert).unwrap_err();
        assert!(err.to_string().starts_with("tls_key"), "{err}");
        let err = Config::load(
            None,
            env(&[("PADDOCK_TLS_KEY", "/k.pem")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("tls_cert"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("paddock.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:443\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), env(&[]), Overrides::default()).unwrap();
        assert_eq!(
            config.tls(),
            Some((Path::new("/c.pem"), Path::new("/k.pem")))
        );
    }

    #[test]
    fn api_rate_limits_come_from_the_environment_and_are_at_least_1() {
        let config = Config::load(
            None,
            env(&[
                ("PADDOCK_API_RATE_PER_SEC", "5"),
                ("PADDOCK_API_BURST", "10"),
            ]),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!((config.api_rate_per_sec, config.api_burst), (5, 10));
        let defaults = Config::default();
        assert_eq!((defaults.api_rate_per_sec, defaults.api_burst), (50, 100));
        for (var, key) in [
            ("PADDOCK_API_RATE_PER_SEC", "api_rate_per_sec"),
            ("PADDOCK_API_BURST", "api_burst"),
        ] {
            let err = Config::load(None, env(&[(var, "0")]), Overrides::default()).unwrap_err();
            assert!(err.to_string().starts_with(key), "{err}");
        }
    }

    #[test]
    fn the_providers_table_reads_sizes_pools_and_per_tenant_providers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("paddock.toml");
        std::fs::write(
            &file,
            r#"
[providers]
enabled = ["local"]
default_size = "tiny"
idle_stop_secs = 300
tenants = { acme = "local" }

[providers.sizes.tiny]
cpu_millis = 250
memory_mib = 256

[[providers.pools]]
name = "builders"
labels = { kind = "build" }
min = 1
max = 3
"#,
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[("PADDOCK_IDLE_STOP_SECS", "60")]),
            Overrides::default(),
        )
        .unwrap();
        let p = &config.providers;
        assert_eq!(p.default_size, "tiny");
        // A `sizes` table replaces the default sizes.
        assert_eq!(p.sizes.keys().collect::<Vec<_>>(), ["tiny"]);
        assert_eq!(p.idle_stop_secs, 60);
        assert_eq!(p.provider_for("acme"), "local");
        assert_eq!(
            (p.pools[0].tenant.as_str(), p.pools[0].min, p.pools[0].max),
            ("default", 1, 3)
        );
        std::fs::write(
            &file,
            "[[providers.pools]]\nname = \"x\"\nmin = 4\nmax = 2\n",
        )
        .unwrap();
        let err = Config::load(Some(&file), env(&[]), Overrides::default()).unwrap_err();
        assert!(err.to_string().starts_with("providers.pools"), "{err}");
        let err = Config::load(
            None,
            env(&[("PADDOCK_PROVIDERS", "local,podman")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("providers.enabled"), "{err}");
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
