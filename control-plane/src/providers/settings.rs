//! The providers' part of the control plane's config: which providers are
//! enabled and which one a tenant gets, the named sizes, the pools, the
//! idle policy and each engine's own settings (`[providers.docker]`,
//! `[providers.fly]`): the `[providers]` table of the config file
//! ([`crate::Config::providers`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::docker::DockerConfig;
use super::fly::FlyConfig;
use super::Resources;
use crate::config::ConfigError;

/// One named size (`[sizes.small]` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Thousandths of a core.
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// Process limit; 0 for none.
    #[serde(default)]
    pub pids: u32,
}

impl From<Size> for Resources {
    fn from(s: Size) -> Resources {
        Resources {
            cpu_millis: s.cpu_millis,
            memory_mib: s.memory_mib,
            pids: s.pids,
        }
    }
}

/// A pool (`[[pools]]`): sandboxes of one tenant, run by one provider,
/// carrying `labels`; tasks whose labels all match are served by it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Names its sandboxes (`<name>-<n>`).
    pub name: String,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The tenant's provider when absent.
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The configured default size when absent.
    #[serde(default)]
    pub size: Option<String>,
    /// Sandboxes kept in existence (possibly stopped).
    #[serde(default)]
    pub min: usize,
    /// Sandboxes at most.
    pub max: usize,
}

fn default_tenant() -> String {
    crate::store::DEFAULT_TENANT.to_owned()
}

/// The providers' settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderSettings {
    /// Enabled providers (`PADDOCK_PROVIDERS=local,docker`).
    pub enabled: Vec<String>,
    /// The provider a tenant gets unless `tenants` says otherwise
    /// (`PADDOCK_PROVIDER_DEFAULT`).
    pub default: String,
    /// Per-tenant provider (`PADDOCK_TENANT_PROVIDERS=acme=docker,beta=fly`).
    pub tenants: BTreeMap<String, String>,
    /// Named sizes; `small`, `medium` and `large` unless replaced.
    pub sizes: BTreeMap<String, Size>,
    /// The size used when none is asked for (`PADDOCK_DEFAULT_SIZE`).
    pub default_size: String,
    pub pools: Vec<Pool>,
    /// A provider-run sandbox with no open session and no running task for
    /// this long is stopped; 0 never stops (`PADDOCK_IDLE_STOP_SECS`).
    pub idle_stop_secs: u64,
    /// The control plane's URL as agentd inside a sandbox reaches it
    /// (`PADDOCK_AGENT_URL`); the listener's own address when absent.
    pub agent_url: Option<String>,
    /// The agentd binary the local provider runs (`PADDOCK_AGENTD_BIN`);
    /// next to the control-plane binary, then on PATH, when absent.
    pub agentd_bin: Option<PathBuf>,
    /// A CA (PEM file) local agentd children trust besides the platform roots.
    pub agent_ca_file: Option<PathBuf>,
    /// The docker provider's settings (`[providers.docker]`,
    /// `PADDOCK_DOCKER_*`); checked when `docker` is enabled.
    pub docker: DockerConfig,
    /// The fly provider's settings (`[providers.fly]`, `PADDOCK_FLY_*`);
    /// checked when `fly` is enabled.
    pub fly: FlyConfig,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        let size = |cpu_millis, memory_mib, pids| Size {
            cpu_millis,
            memory_mib,
            pids,
        };
        ProviderSettings {
            enabled: vec!["local".to_owned()],
            default: "local".to_owned(),
            tenants: BTreeMap::new(),
            sizes: BTreeMap::from([
                ("small".to_owned(), size(500, 512, 256)),
                ("medium".to_owned(), size(1000, 2048, 1024)),
                ("large".to_owned(), size(2000, 4096, 4096)),
            ]),
            default_size: "small".to_owned(),
            pools: Vec::new(),
            idle_stop_secs: 1800,
            agent_url: None,
            agentd_bin: None,
            agent_ca_file: None,
            docker: DockerConfig::default(),
            fly: FlyConfig::default(),
        }
    }
}

fn invalid(key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { key, message }
}

impl ProviderSettings {
    /// Applies one `PADDOCK_*` variable; `false` if the key is not ours.
    pub fn apply_env(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "PADDOCK_PROVIDERS" => {
                self.enabled = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "PADDOCK_PROVIDER_DEFAULT" => self.default = value.trim().to_owned(),
            "PADDOCK_TENANT_PROVIDERS" => {
                self.tenants.clear();
                for pair in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (tenant, provider) = pair.split_once('=').ok_or_else(|| {
                        invalid(
                            "PADDOCK_TENANT_PROVIDERS",
                            format!("`{pair}`: expected tenant=provider"),
                        )
                    })?;
                    self.tenants
                        .insert(tenant.trim().to_owned(), provider.trim().to_owned());
                }
            }
            "PADDOCK_DEFAULT_SIZE" => self.default_size = value.trim().to_owned(),
            "PADDOCK_IDLE_STOP_SECS" => {
                self.idle_stop_secs = value
                    .trim()
                    .parse()
                    .map_err(|e| invalid("PADDOCK_IDLE_STOP_SECS", format!("`{value}`: {e}")))?
            }
            "PADDOCK_AGENT_URL" if !value.is_empty() => self.agent_url = Some(value.to_owned()),
            "PADDOCK_AGENTD_BIN" if !value.is_empty() => {
                self.agentd_bin = Some(PathBuf::from(value))
            }
            "PADDOCK_DOCKER_IMAGE" => self.docker.image = value.trim().to_owned(),
            "PADDOCK_DOCKER_NAME_PREFIX" => self.docker.name_prefix = value.trim().to_owned(),
            "PADDOCK_DOCKER_AGENT_URL" => {
                self.docker.control_plane_url =
                    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
            }
            "PADDOCK_DOCKER_WORKSPACE" => self.docker.workspace = value.trim().to_owned(),
            "PADDOCK_DOCKER_STOP_GRACE_SECS" => {
                self.docker.stop_grace_secs = value.trim().parse().map_err(|e| {
                    invalid("PADDOCK_DOCKER_STOP_GRACE_SECS", format!("`{value}`: {e}"))
                })?
            }
            fly if fly.starts_with("PADDOCK_FLY_") => {
                self.fly.apply_env([(key.to_owned(), value.to_owned())])?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        const KNOWN: [&str; 3] = ["local", "docker", "fly"];
        for name in &self.enabled {
            if !KNOWN.contains(&name.as_str()) {
                return Err(invalid(
                    "providers.enabled",
                    format!("unknown provider `{name}`: use local, docker or fly"),
                ));
            }
        }
        let enabled = |name: &str| self.enabled.iter().any(|e| e == name);
        if !self.enabled.is_empty() && !enabled(&self.default) {
            return Err(invalid(
                "providers.default",
                format!(
                    "`{}` is not enabled (enabled: {}); set PADDOCK_PROVIDER_DEFAULT to one of them",
                    self.default,
                    self.enabled.join(", ")
                ),
            ));
        }
        for (tenant, provider) in &self.tenants {
            if !enabled(provider) {
                return Err(invalid(
                    "providers.tenants",
                    format!("tenant `{tenant}` is given `{provider}`, which is not enabled"),
                ));
            }
        }
        if enabled("docker") {
            validate_docker(&self.docker)?;
        }
        if enabled("fly") {
            self.fly.validate()?;
        }
        if !self.sizes.contains_key(&self.default_size) {
            return Err(invalid(
                "providers.default_size",
                format!(
                    "`{}` is not a configured size (sizes: {})",
                    self.default_size,
                    self.size_names()
                ),
            ));
        }
        for (name, size) in &self.sizes {
            if size.cpu_millis == 0 || size.memory_mib < 16 {
                return Err(invalid(
                    "providers.sizes",
                    format!("size `{name}` needs cpu_millis >= 1 and memory_mib >= 16"),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for pool in &self.pools {
            if !names.insert((&pool.tenant, &pool.name)) {
                return Err(invalid(
                    "providers.pools",
                    format!(
                        "two pools named `{}` in tenant `{}`",
                        pool.name, pool.tenant
                    ),
                ));
            }
            if pool.max == 0 || pool.min > pool.max {
                return Err(invalid(
                    "providers.pools",
                    format!("pool `{}`: need 0 <= min <= max and max >= 1", pool.name),
                ));
            }
            if let Some(provider) = &pool.provider {
                if !enabled(provider) {
                    return Err(invalid(
                        "providers.pools",
                        format!(
                            "pool `{}` uses `{provider}`, which is not enabled",
                            pool.name
                        ),
                    ));
                }
            }
            if let Some(size) = &pool.size {
                if !self.sizes.contains_key(size) {
                    return Err(invalid(
                        "providers.pools",
                        format!("pool `{}`: no size `{size}`", pool.name),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn size_names(&self) -> String {
        self.sizes.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The provider `tenant` gets when it does not name one.
    pub fn provider_for(&self, tenant: &str) -> &str {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }
}

/// The docker provider's settings, named by their config-file keys (the
/// message names the variable too).
fn validate_docker(docker: &DockerConfig) -> Result<(), ConfigError> {
    if docker.image.trim().is_empty() {
        return Err(invalid(
            "providers.docker.image",
            "no sandbox image: set PADDOCK_DOCKER_IMAGE (built from images/sandbox/Dockerfile)"
                .to_owned(),
        ));
    }
    let prefix = &docker.name_prefix;
    let name_char = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if !prefix.starts_with(|c: char| c.is_ascii_alphanumeric()) || !prefix.chars().all(name_char) {
        return Err(invalid(
            "providers.docker.name_prefix",
            format!(
                "`{prefix}` is not a Docker name: use letters, digits, '_', '.' and '-', \
                 starting with a letter or digit (PADDOCK_DOCKER_NAME_PREFIX)"
            ),
        ));
    }
    if let Some(url) = &docker.control_plane_url {
        let schemes = ["ws://", "wss://", "http://", "https://"];
        if !schemes.iter().any(|s| url.starts_with(s)) {
            return Err(invalid(
                "providers.docker.agent_url",
                format!(
                    "`{url}` is not a URL agentd can dial: use ws://, wss://, http:// or https:// \
                     (PADDOCK_DOCKER_AGENT_URL)"
                ),
            ));
        }
    }
    if !docker.workspace.starts_with('/') {
        return Err(invalid(
            "providers.docker.workspace",
            format!(
                "`{}` is not an absolute path in the container (PADDOCK_DOCKER_WORKSPACE)",
                docker.workspace
            ),
        ));
    }
    if docker.stop_grace_secs > 300 {
        return Err(invalid(
            "providers.docker.stop_grace_secs",
            format!(
                "{} s is too long: use at most 300 (PADDOCK_DOCKER_STOP_GRACE_SECS)",
                docker.stop_grace_secs
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_validation_name_the_key() {
        let mut s = ProviderSettings::default();
        assert!(s.apply_env("PADDOCK_PROVIDERS", "local, docker").unwrap());
        s.apply_env("PADDOCK_TENANT_PROVIDERS", "acme=docker")
            .unwrap();
        assert_eq!(s.provider_for("acme"), "docker");
        assert_eq!(s.provider_for("other"), "local");
        s.validate().unwrap();
        s.apply_env("PADDOCK_PROVIDER_DEFAULT", "fly").unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.starts_with("providers.default"), "{err}");
        let err = s
            .apply_env("PADDOCK_TENANT_PROVIDERS", "acme")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("PADDOCK_TENANT_PROVIDERS"), "{err}");
        let mut s = ProviderSettings::default();
        s.apply_env("PADDOCK_DEFAULT_SIZE", "huge").unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("small"), "{err}");
        assert!(!s.apply_env("PADDOCK_LISTEN", "x").unwrap());
    }

    #[test]
    fn docker_and_fly_settings_are_read_and_checked_when_enabled() {
        let mut s = ProviderSettings::default();
        for (key, value) in [
            ("PADDOCK_PROVIDERS", "local,docker,fly"),
            ("PADDOCK_DOCKER_IMAGE", "paddock-sandbox:v2"),
            ("PADDOCK_DOCKER_NAME_PREFIX", "pdk"),
            ("PADDOCK_DOCKER_AGENT_URL", "ws://172.18.0.1:7700"),
            ("PADDOCK_DOCKER_STOP_GRACE_SECS", "3"),
            ("PADDOCK_FLY_APP", "sandboxes"),
            ("PADDOCK_FLY_API_TOKEN", "FlyV1 t"),
            ("PADDOCK_FLY_REGION", "ams"),
        ] {
            assert!(s.apply_env(key, value).unwrap(), "{key}");
        }
        s.validate().unwrap();
        assert_eq!(s.docker.image, "paddock-sandbox:v2");
        assert_eq!(s.docker.name_prefix, "pdk");
        assert_eq!(
            s.docker.control_plane_url.as_deref(),
            Some("ws://172.18.0.1:7700")
        );
        assert_eq!(s.docker.stop_grace_secs, 3);
        assert_eq!(
            (s.fly.app.as_str(), s.fly.region.as_deref()),
            ("sandboxes", Some("ams"))
        );

        let err = s
            .apply_env("PADDOCK_DOCKER_STOP_GRACE_SECS", "soon")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PADDOCK_DOCKER_STOP_GRACE_SECS"),
            "{err}"
        );
        for (key, value, named) in [
            (
                "PADDOCK_DOCKER_AGENT_URL",
                "172.18.0.1:7700",
                "providers.docker.agent_url",
            ),
            (
                "PADDOCK_DOCKER_NAME_PREFIX",
                "-x",
                "providers.docker.name_prefix",
            ),
            ("PADDOCK_DOCKER_IMAGE", " ", "providers.docker.image"),
            ("PADDOCK_FLY_APP", "", "PADDOCK_FLY_APP"),
        ] {
            let mut bad = s.clone();
            bad.apply_env(key, value).unwrap();
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.starts_with(named), "{key}={value}: {err}");
        }
        // Settings of a provider that is not enabled are not checked.
        let mut local_only = s.clone();
        local_only.apply_env("PADDOCK_PROVIDERS", "local").unwrap();
        local_only.apply_env("PADDOCK_FLY_APP", "").unwrap();
        local_only.validate().unwrap();
    }
}
