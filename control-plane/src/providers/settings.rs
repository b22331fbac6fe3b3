//! The providers' part of the control plane's config: which providers are
//! enabled and which one a tenant gets, the named sizes, the pools and the
//! idle policy: the `[providers]` table of the config file
//! ([`crate::Config::providers`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

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
}
