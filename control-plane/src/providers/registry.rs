//! The providers this control plane runs sandboxes with, by name, and
//! which one a tenant or pool gets (from [`ProviderSettings`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::settings::ProviderSettings;
use super::Provider;

#[derive(Debug, Default)]
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl Registry {
    /// Adds (or replaces) a provider under its own name.
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.providers.insert(provider.name().to_owned(), provider);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(name).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.providers.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.providers.keys().map(String::as_str).collect()
    }

    /// The provider named `asked` (`default` or `None`: the tenant's), or
    /// an error saying which ones there are.
    pub fn choose(
        &self,
        settings: &ProviderSettings,
        tenant: &str,
        asked: Option<&str>,
    ) -> Result<Arc<dyn Provider>, String> {
        let name = match asked {
            None | Some("default") => settings.provider_for(tenant),
            Some(name) => name,
        };
        self.get(name).ok_or_else(|| {
            format!(
                "provider `{name}` is not enabled on this control plane (enabled: {}); \
                 pass one of them with --provider or ask the operator to enable it (PADDOCK_PROVIDERS)",
                if self.providers.is_empty() {
                    "none".to_owned()
                } else {
                    self.names().join(", ")
                }
            )
        })
    }
}

/// The registry for `config`: each enabled provider, labelling what it
/// creates with `owner`. The docker provider connects to its engine here,
/// so a control plane configured with it does not start without one.
pub async fn build(
    config: &crate::Config,
    owner: &str,
    agent_url: super::local::AgentUrl,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Registry> {
    let mut registry = Registry::default();
    for name in &config.providers.enabled {
        match name.as_str() {
            "local" => {
                let agentd = find_agentd(config.providers.agentd_bin.as_deref());
                let local = super::local::LocalProvider::new(
                    &config.data_dir,
                    owner,
                    agentd,
                    agent_url.clone(),
                    shutdown.clone(),
                );
                registry.insert(Arc::new(super::local::Local(Arc::new(local))));
            }
            "docker" => {
                let docker =
                    super::docker::DockerProvider::connect(config.providers.docker.clone(), owner)
                        .await
                        .map_err(|err| {
                            anyhow::anyhow!(
                                "providers.enabled: docker: {err}; start the Docker engine (or point \
                                 DOCKER_HOST at one), or remove docker from PADDOCK_PROVIDERS"
                            )
                        })?;
                registry.insert(Arc::new(docker));
            }
            "fly" => {
                let fly = super::fly::FlyProvider::new(config.providers.fly.clone(), owner)
                    .map_err(|err| {
                        anyhow::anyhow!(
                            "providers.enabled: fly: {err}; check the PADDOCK_FLY_* settings"
                        )
                    })?;
                registry.insert(Arc::new(fly));
            }
            other => anyhow::bail!(
                "providers.enabled: unknown provider `{other}`; use local, docker or fly in PADDOCK_PROVIDERS"
            ),
        }
    }
    Ok(registry)
}

/// The agentd binary: as configured, else next to this executable (or its
/// parent directory, for test binaries in `target/*/deps`), else `agentd`
/// on PATH (a missing binary is reported when a sandbox starts).
pub fn find_agentd(explicit: Option<&std::path::Path>) -> std::path::PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("agentd");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("agentd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| "agentd".into())
}
