//! The `fly` provider's settings: which Fly app sandboxes run in, with
//! which token, image, region and CPU kind, and how patiently to talk to
//! the Machines API.
//!
//! Defaults, then a TOML table (`[fly]`, deserialised by the caller), then
//! the `PADDOCK_FLY_*` environment variables ([`FlyConfig::apply_env`]);
//! [`FlyConfig::validate`] names the key at fault.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::client::RetryPolicy;
use crate::config::{parse, ConfigError};

/// Fly's public Machines API endpoint.
pub const DEFAULT_API_URL: &str = "https://api.machines.dev";

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct FlyConfig {
    /// `PADDOCK_FLY_API_URL`: the Machines API; `https://api.machines.dev`,
    /// or `http://_api.internal:4280` from inside Fly's private network.
    pub api_url: String,
    /// `PADDOCK_FLY_APP`: the Fly app sandbox machines are created in
    /// (create it once with `fly apps create`).
    pub app: String,
    /// `PADDOCK_FLY_API_TOKEN`: a token with access to that app
    /// (`fly tokens create deploy -a APP`). Secret; redacted in `Debug`.
    pub api_token: String,
    /// `PADDOCK_FLY_REGION`: where machines are created; unset lets Fly pick.
    pub region: Option<String>,
    /// `PADDOCK_FLY_IMAGE`: the sandbox image, e.g.
    /// `registry.fly.io/paddock-sandboxes:v1`, unless a request names one.
    pub image: Option<String>,
    /// `PADDOCK_FLY_CPU_KIND`: `shared` (default) or `performance`.
    pub cpu_kind: String,
    /// `PADDOCK_FLY_WAIT_SECS`: how long `start` and `stop` wait for the
    /// machine to reach the state they asked for (default 60).
    pub wait_secs: u64,
    /// `PADDOCK_FLY_RETRY_ATTEMPTS` sets `retry.max_attempts`.
    pub retry: RetryPolicy,
}

impl Default for FlyConfig {
    fn default() -> Self {
        FlyConfig {
            api_url: DEFAULT_API_URL.to_owned(),
            app: String::new(),
            api_token: String::new(),
            region: None,
            image: None,
            cpu_kind: "shared".to_owned(),
            wait_secs: 60,
            retry: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for FlyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlyConfig")
            .field("api_url", &self.api_url)
            .field("app", &self.app)
            .field("api_token", &"<redacted>")
            .field("region", &self.region)
            .field("image", &self.image)
            .field("cpu_kind", &self.cpu_kind)
            .field("wait_secs", &self.wait_secs)
            .field("retry", &self.retry)
            .finish()
    }
}

impl FlyConfig {
    /// The defaults overlaid with `PADDOCK_FLY_*` variables, validated.
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut config = FlyConfig::default();
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Overlays the `PADDOCK_FLY_*` variables found in `env`; others are
    /// ignored. Empty values unset optional keys.
    pub fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (key, value) in env {
            match key.as_str() {
                "PADDOCK_FLY_API_URL" => self.api_url = value,
                "PADDOCK_FLY_APP" => self.app = value,
                "PADDOCK_FLY_API_TOKEN" => self.api_token = value,
                "PADDOCK_FLY_REGION" => self.region = Some(value).filter(|v| !v.is_empty()),
                "PADDOCK_FLY_IMAGE" => self.image = Some(value).filter(|v| !v.is_empty()),
                "PADDOCK_FLY_CPU_KIND" => self.cpu_kind = value,
                "PADDOCK_FLY_WAIT_SECS" => {
                    self.wait_secs = parse("PADDOCK_FLY_WAIT_SECS", value.trim())?
                }
                "PADDOCK_FLY_RETRY_ATTEMPTS" => {
                    self.retry.max_attempts = parse("PADDOCK_FLY_RETRY_ATTEMPTS", value.trim())?
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.app.trim().is_empty() {
            return invalid(
                "PADDOCK_FLY_APP",
                "is empty; set it to the Fly app sandbox machines run in (`fly apps create NAME`)",
            );
        }
        if self.api_token.trim().is_empty() {
            return invalid(
                "PADDOCK_FLY_API_TOKEN",
                "is empty; create one with `fly tokens create deploy -a APP`",
            );
        }
        if !self.api_token.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return invalid(
                "PADDOCK_FLY_API_TOKEN",
                "contains a line break or other control character; set it to the token alone",
            );
        }
        if !api_url_is_safe(&self.api_url) {
            return invalid(
                "PADDOCK_FLY_API_URL",
                "must be an https:// URL (plain http:// only for loopback or Fly's private \
                 `_api.internal`), e.g. https://api.machines.dev",
            );
        }
        if !matches!(self.cpu_kind.as_str(), "shared" | "performance") {
            return invalid("PADDOCK_FLY_CPU_KIND", "must be `shared` or `performance`");
        }
        if !(1..=3600).contains(&self.wait_secs) {
            return invalid("PADDOCK_FLY_WAIT_SECS", "must be within 1..=3600");
        }
        if !(1..=20).contains(&self.retry.max_attempts) {
            return invalid("PADDOCK_FLY_RETRY_ATTEMPTS", "must be within 1..=20");
        }
        Ok(())
    }

    pub fn wait_timeout(&self) -> Duration {
        Duration::from_secs(self.wait_secs)
    }
}

/// The token travels to this URL, so plain HTTP only where the network
/// itself is private: loopback, or Fly's `_api.internal` over 6PN.
fn api_url_is_safe(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "_api.internal")
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
    fn env_overrides_defaults() {
        let config = FlyConfig::from_env(env(&[
            ("PADDOCK_FLY_APP", "paddock-sandboxes"),
            ("PADDOCK_FLY_API_TOKEN", "FlyV1 secret"),
            ("PADDOCK_FLY_REGION", "ams"),
            ("PADDOCK_FLY_RETRY_ATTEMPTS", "3"),
            ("PATH", "/usr/bin"),
        ]))
        .unwrap();
        assert_eq!(config.api_url, DEFAULT_API_URL);
        assert_eq!(config.region.as_deref(), Some("ams"));
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.cpu_kind, "shared");
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = FlyConfig::from_env(env(&[("PADDOCK_FLY_API_TOKEN", "t")])).unwrap_err();
        assert!(err.to_string().starts_with("PADDOCK_FLY_APP:"), "{err}");
        let err = FlyConfig::from_env(env(&[
            ("PADDOCK_FLY_APP", "a"),
            ("PADDOCK_FLY_API_TOKEN", "t"),
            ("PADDOCK_FLY_WAIT_SECS", "soon"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("PADDOCK_FLY_WAIT_SECS:"),
            "{err}"
        );
    }

    #[test]
    fn a_toml_table_with_retry_limits_deserialises() {
        let config: FlyConfig = toml::from_str(
            "app = \"paddock-sandboxes\"\napi_token = \"t\"\nregion = \"fra\"\n\
             [retry]\nmax_attempts = 3\nbase_delay = 100\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.region.as_deref(), Some("fra"));
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.retry.base_delay, Duration::from_millis(100));
        assert_eq!(config.retry.max_delay, RetryPolicy::default().max_delay);
        assert_eq!(config.api_url, DEFAULT_API_URL);
    }

    #[test]
    fn a_pasted_token_with_a_line_break_is_refused() {
        let err = FlyConfig::from_env(env(&[
            ("PADDOCK_FLY_APP", "a"),
            ("PADDOCK_FLY_API_TOKEN", "FlyV1 fm2_abc\n"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("PADDOCK_FLY_API_TOKEN:"),
            "{err}"
        );
    }

    #[test]
    fn the_token_goes_to_plain_http_only_on_private_networks() {
        assert!(api_url_is_safe("https://api.machines.dev"));
        assert!(api_url_is_safe("http://127.0.0.1:4280"));
        assert!(api_url_is_safe("http://_api.internal:4280"));
        assert!(api_url_is_safe("http://[::1]:80/"));
        assert!(!api_url_is_safe("http://api.machines.dev"));
        assert!(!api_url_is_safe("http://127.0.0.1.evil.example"));
        assert!(!api_url_is_safe("ftp://127.0.0.1"));
    }
}
