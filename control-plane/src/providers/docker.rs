//! The `docker` provider: one container per sandbox, against the Docker
//! Engine API (bollard).
//!
//! Each sandbox is a container named `<prefix>-<sandbox id>` (that name is
//! the resource id, so everything created for it can be found from it
//! alone) from the sandbox image (images/sandbox/Dockerfile: agentd under
//! tini, sessions as an unprivileged user), with
//!
//! - CPU, memory and pids limits from the sandbox's size, no swap;
//! - a read-only root filesystem, the workspace on a named volume
//!   (`<name>-workspace`, kept across stop/start, removed on destroy) and
//!   tmpfs for `/tmp` and the session user's home;
//! - every capability dropped except the few agentd needs to start
//!   sessions as another user and manage their files, and
//!   `no-new-privileges`;
//! - the control plane's URL and the sandbox token in agentd's environment
//!   (agentd keeps `PADDOCK_AGENTD_*` out of its sessions', and sessions run
//!   as another uid, so they cannot read agentd's from `/proc` either);
//! - Paddock's labels (sandbox, tenant, owner) on the container, its volume
//!   and its network;
//! - a bridge network per (owner, tenant), created on demand and removed
//!   with the tenant's last sandbox. Docker isolates bridge networks from
//!   each other, so one tenant's containers cannot reach another's; they
//!   reach the control plane through the host (e.g. a bridge's gateway).

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, HostConfig, Mount,
    MountType, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use bollard::Docker;
use paddock_protocol::SandboxId;
use tracing::{info, warn};

use super::{labels, ObservedState, Owned, Provider, ProviderError, SandboxSpec};

/// Marks the networks this provider creates, besides owner and tenant.
const NETWORK_LABEL: &str = "paddock.network";
/// On a workspace volume: the container (resource id) it belongs to.
const RESOURCE_LABEL: &str = "paddock.resource";
/// Docker refuses containers with less memory than this.
const MIN_MEMORY_MIB: u32 = 6;
/// What agentd keeps of the capabilities Docker grants by default: enough
/// to switch to the session user (SETUID, SETGID), signal its processes
/// (KILL) and read and write the files of its workspace (CHOWN,
/// DAC_OVERRIDE, FOWNER).
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
];

/// How the docker provider runs sandboxes: the `[providers.docker]` table
/// of the config file, or `PADDOCK_DOCKER_*` variables
/// ([`crate::providers::settings::ProviderSettings::apply_env`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// The sandbox image, built from images/sandbox/Dockerfile; a spec's
    /// own image wins.
    pub image: String,
    /// Names: containers `<prefix>-<sandbox>`, networks
    /// `<prefix>-<owner>-<tenant>`.
    pub name_prefix: String,
    /// The control plane's URL as agentd in a container reaches it (e.g.
    /// `ws://172.18.0.1:7700` on a bridge's gateway), when it differs from
    /// the spec's; `None` keeps the spec's. `agent_url` in the config file.
    #[serde(rename = "agent_url")]
    pub control_plane_url: Option<String>,
    /// Where the workspace volume is mounted (the image's workdir).
    pub workspace: String,
    /// tmpfs mounts (path → mount options) on top of the read-only root.
    pub tmpfs: Vec<(String, String)>,
    /// Seconds agentd gets between SIGTERM and SIGKILL on stop.
    pub stop_grace_secs: u32,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            image: "paddock-sandbox:latest".to_owned(),
            name_prefix: "paddock".to_owned(),
            control_plane_url: None,
            workspace: "/workspace".to_owned(),
            // The session user of images/sandbox/Dockerfile is uid 1000
            // with its home in /home/agent.
            tmpfs: vec![
                ("/tmp".to_owned(), "rw,nosuid,nodev,size=256m".to_owned()),
                (
                    "/home/agent".to_owned(),
                    "rw,nosuid,nodev,size=64m,uid=1000,gid=1000,mode=0755".to_owned(),
                ),
            ],
            stop_grace_secs: 10,
        }
    }
}

/// A tenant's network as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNetwork {
    pub name: String,
    pub id: String,
    /// The bridge's address on the host, reachable from the network's
    /// containers (a control plane on this host may listen there).
    pub gateway: Option<IpAddr>,
}

/// Sandboxes as Docker containers; see the module docs.
#[derive(Debug)]
pub struct DockerProvider {
    docker: Docker,
    config: DockerConfig,
    owner: String,
    /// Held while a tenant's network is created or removed together with
    /// the containers on it, so a create does not lose its network to a
    /// destroy removing the tenant's last container at the same time.
    networks: tokio::sync::Mutex<()>,
}

impl DockerProvider {
    /// Connects to the local engine (`DOCKER_HOST`, else the Unix socket)
    /// and agrees on an API version with it.
    pub async fn connect(config: DockerConfig, owner: &str) -> Result<Self, ProviderError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|err| unavailable("could not reach the Docker engine", err))?
            .negotiate_version()
            .await
            .map_err(|err| unavailable("could not reach the Docker engine", err))?;
        Self::with_client(docker, config, owner)
    }

    /// With an engine client of the caller's.
    pub fn with_client(
        docker: Docker,
        config: DockerConfig,
        owner: &str,
    ) -> Result<Self, ProviderError> {
        if owner.is_empty() {
            return Err(ProviderError::Rejected(
                "the owner id must not be empty".into(),
            ));
        }
        Ok(DockerProvider {
            docker,
            config,
            owner: owner.to_owned(),
            networks: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The name of `tenant`'s network.
    pub fn network_name(&self, tenant: &str) -> String {
        docker_name(&format!(
            "{}-{}-{}",
            self.config.name_prefix, self.owner, tenant
        ))
    }

    /// `tenant`'s network, created (labelled) if it does not exist yet.
    pub async fn ensure_network(&self, tenant: &str) -> Result<TenantNetwork, ProviderError> {
        let _guard = self.networks.lock().await;
        self.ensure_network_locked(tenant).await
    }

    async fn ensure_network_locked(&self, tenant: &str) -> Result<TenantNetwork, ProviderError> {
        let name = self.network_name(tenant);
        if let Some(network) = self.inspect_network(&name).await? {
            return Ok(network);
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(HashMap::from([
                (labels::OWNER.to_owned(), self.owner.clone()),
                (labels::TENANT.to_owned(), tenant.to_owned()),
                (NETWORK_LABEL.to_owned(), "tenant".to_owned()),
            ])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => info!(network = %name, tenant.id = %tenant, "created a tenant network"),
            // Another control plane of this deployment was quicker.
            Err(err) if status_of(&err) == Some(409) => {}
            Err(err) => return Err(map_err(&format!("network {name}"), err)),
        }
        self.inspect_network(&name)
            .await?
            .ok_or_else(|| ProviderError::Other(format!("network {name} vanished after creation")))
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<TenantNetwork>, ProviderError> {
        match self.docker.inspect_network(name, None).await {
            Ok(network) => {
                let gateway = network
                    .ipam
                    .and_then(|ipam| ipam.config)
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|config| config.gateway?.parse().ok());
                Ok(Some(TenantNetwork {
                    name: network.name.unwrap_or_else(|| name.to_owned()),
                    id: network.id.unwrap_or_default(),
                    gateway,
                }))
            }
            Err(err) if status_of(&err) == Some(404) => Ok(None),
            Err(err) => Err(map_err(&format!("network {name}"), err)),
        }
    }

    /// Removes `tenant`'s network if no container is left on it.
    async fn remove_network_if_unused(&self, tenant: &str) -> Result<(), ProviderError> {
        let _guard = self.networks.lock().await;
        let name = self.network_name(tenant);
        let network = match self.docker.inspect_network(&name, None).await {
            Ok(network) => network,
            Err(err) if status_of(&err) == Some(404) => return Ok(()),
            Err(err) => return Err(map_err(&format!("network {name}"), err)),
        };
        if network.containers.is_some_and(|c| !c.is_empty()) || self.has_containers(tenant).await? {
            return Ok(());
        }
        match self.docker.remove_network(&name).await {
            Ok(()) => {
                info!(network = %name, tenant.id = %tenant, "removed a tenant network");
                Ok(())
            }
            // Gone already, or a container appeared on it after all.
            Err(err) if matches!(status_of(&err), Some(404 | 403 | 409)) => Ok(()),
            Err(err) => Err(map_err(&format!("network {name}"), err)),
        }
    }

    /// Whether this owner has any container (in any state) of `tenant`:
    /// a stopped container is not attached to its network, yet needs it
    /// to start again.
    async fn has_containers(&self, tenant: &str) -> Result<bool, ProviderError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{}={}", labels::OWNER, self.owner),
                format!("{}={tenant}", labels::TENANT),
            ],
        )]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|err| map_err("containers", err))?;
        Ok(!containers.is_empty())
    }

    fn owner_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={}", labels::OWNER, self.owner)],
        )])
    }

    fn container_body(
        &self,
        spec: &SandboxSpec,
        volume: &str,
        network: &str,
    ) -> ContainerCreateBody {
        let url = self
            .config
            .control_plane_url
            .clone()
            .unwrap_or_else(|| spec.agent.control_plane_url.clone());
        let mut container_labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        container_labels.extend(self.paddock_labels(spec));
        let resources = spec.resources;
        let memory = i64::from(resources.memory_mib) * 1024 * 1024;
        let host_config = HostConfig {
            nano_cpus: Some(i64::from(resources.cpu_millis) * 1_000_000),
            memory: Some(memory),
            // No swap beyond the memory limit.
            memory_swap: Some(memory),
            pids_limit: (resources.pids > 0).then_some(i64::from(resources.pids)),
            readonly_rootfs: Some(true),
            mounts: Some(vec![Mount {
                target: Some(self.config.workspace.clone()),
                source: Some(volume.to_owned()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            tmpfs: Some(self.config.tmpfs.iter().cloned().collect()),
            network_mode: Some(network.to_owned()),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(
                spec.image
                    .clone()
                    .unwrap_or_else(|| self.config.image.clone()),
            ),
            env: Some(agent_env(&url, spec)),
            labels: Some(container_labels),
            stop_timeout: Some(i64::from(self.config.stop_grace_secs)),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    fn paddock_labels(&self, spec: &SandboxSpec) -> [(String, String); 3] {
        [
            (labels::SANDBOX.to_owned(), spec.sandbox_id.to_string()),
            (labels::TENANT.to_owned(), spec.tenant_id.clone()),
            (labels::OWNER.to_owned(), self.owner.clone()),
        ]
    }

    /// Creates the volume and the container (not started).
    async fn create_resources(
        &self,
        spec: &SandboxSpec,
        name: &str,
        network: &str,
    ) -> Result<(), ProviderError> {
        let volume = volume_name(name);
        let mut volume_labels: HashMap<String, String> =
            self.paddock_labels(spec).into_iter().collect();
        volume_labels.insert(RESOURCE_LABEL.to_owned(), name.to_owned());
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(volume_labels),
                ..Default::default()
            })
            .await
            .map_err(|err| map_err(&format!("volume {volume}"), err))?;
        let body = self.container_body(spec, &volume, network);
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|err| map_err(&format!("container {name}"), err))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<String, ProviderError> {
        if spec.resources.memory_mib < MIN_MEMORY_MIB {
            return Err(ProviderError::Rejected(format!(
                "size {}: Docker needs at least {MIN_MEMORY_MIB} MiB of memory",
                spec.size
            )));
        }
        let name = docker_name(&format!("{}-{}", self.config.name_prefix, spec.sandbox_id));
        let created = {
            let _guard = self.networks.lock().await;
            match self.ensure_network_locked(&spec.tenant_id).await {
                Ok(network) => self.create_resources(spec, &name, &network.name).await,
                Err(err) => Err(err),
            }
        };
        let started = match created {
            Ok(()) => self.start(&name).await.map_err(|err| {
                ProviderError::Other(format!("container {name} did not start: {err}"))
            }),
            Err(err) => Err(err),
        };
        if let Err(err) = started {
            // Leave nothing half-made behind.
            if let Err(cleanup) = self.destroy(&name).await {
                warn!(container = %name, error = %cleanup, "could not clean up a failed create");
            }
            return Err(err);
        }
        info!(
            sandbox.id = %spec.sandbox_id,
            tenant.id = %spec.tenant_id,
            container = %name,
            "created a docker sandbox"
        );
        Ok(name)
    }

    async fn start(&self, resource_id: &str) -> Result<(), ProviderError> {
        match self.docker.start_container(resource_id, None).await {
            // 304: already running.
            Err(err) if status_of(&err) != Some(304) => {
                Err(map_err(&format!("container {resource_id}"), err))
            }
            _ => Ok(()),
        }
    }

    async fn stop(&self, resource_id: &str) -> Result<(), ProviderError> {
        let options = StopContainerOptions {
            t: Some(self.config.stop_grace_secs as i32),
            ..Default::default()
        };
        match self.docker.stop_container(resource_id, Some(options)).await {
            // 304: already stopped.
            Err(err) if status_of(&err) != Some(304) => {
                Err(map_err(&format!("container {resource_id}"), err))
            }
            _ => Ok(()),
        }
    }

    async fn destroy(&self, resource_id: &str) -> Result<(), ProviderError> {
        let tenant = match self.docker.inspect_container(resource_id, None).await {
            Ok(container) => container
                .config
                .and_then(|config| config.labels)
                .and_then(|mut labels| labels.remove(labels::TENANT)),
            Err(err) if status_of(&err) == Some(404) => None,
            Err(err) => return Err(map_err(&format!("container {resource_id}"), err)),
        };
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self
            .docker
            .remove_container(resource_id, Some(options))
            .await
        {
            Err(err) if status_of(&err) != Some(404) => {
                return Err(map_err(&format!("container {resource_id}"), err))
            }
            _ => {}
        }
        let volume = volume_name(resource_id);
        // With the container already gone, the volume still names the tenant.
        let tenant = match tenant {
            Some(tenant) => Some(tenant),
            None => match self.docker.inspect_volume(&volume).await {
                Ok(mut found) => found.labels.remove(labels::TENANT),
                Err(err) if status_of(&err) == Some(404) => None,
                Err(err) => return Err(map_err(&format!("volume {volume}"), err)),
            },
        };
        match self
            .docker
            .remove_volume(&volume, None::<RemoveVolumeOptions>)
            .await
        {
            Err(err) if status_of(&err) != Some(404) => {
                return Err(map_err(&format!("volume {volume}"), err))
            }
            _ => {}
        }
        if let Some(tenant) = tenant {
            self.remove_network_if_unused(&tenant).await?;
        }
        Ok(())
    }

    async fn status(&self, resource_id: &str) -> Result<ObservedState, ProviderError> {
        let container = self
            .docker
            .inspect_container(resource_id, None)
            .await
            .map_err(|err| map_err(&format!("container {resource_id}"), err))?;
        let state = container.state.unwrap_or_default();
        Ok(match state.status {
            Some(ContainerStateStatusEnum::RUNNING) => ObservedState::Running,
            Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::RESTARTING) => {
                ObservedState::Starting
            }
            Some(ContainerStateStatusEnum::DEAD) => ObservedState::Failed(
                state
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "the container is dead".to_owned()),
            ),
            _ if state.oom_killed == Some(true) => {
                ObservedState::Failed("killed for running out of memory".to_owned())
            }
            // agentd exits 0 when it is asked to stop (tini forwards the
            // SIGTERM of `docker stop`); any other end is a loss — killed
            // from outside (137) or crashed. The lifecycle sync only takes
            // this in for sandboxes nobody asked to stop.
            Some(ContainerStateStatusEnum::EXITED) if state.exit_code.is_some_and(|c| c != 0) => {
                let code = state.exit_code.unwrap_or_default();
                ObservedState::Failed(match code {
                    137 => "the container was killed (exit code 137)".to_owned(),
                    code => format!("the container exited with code {code}"),
                })
            }
            _ => ObservedState::Stopped,
        })
    }

    async fn list_owned(&self) -> Result<Vec<Owned>, ProviderError> {
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.owner_filter()),
                ..Default::default()
            }))
            .await
            .map_err(|err| map_err("containers", err))?;
        let mut owned = Vec::new();
        for container in containers {
            let labels = container.labels.unwrap_or_default();
            let (Some(sandbox), Some(tenant)) =
                (labels.get(labels::SANDBOX), labels.get(labels::TENANT))
            else {
                continue;
            };
            let Some(name) = container
                .names
                .unwrap_or_default()
                .into_iter()
                .next()
                .map(|n| n.trim_start_matches('/').to_owned())
            else {
                continue;
            };
            let state = match container.state {
                Some(ContainerSummaryStateEnum::RUNNING) => ObservedState::Running,
                Some(
                    ContainerSummaryStateEnum::CREATED | ContainerSummaryStateEnum::RESTARTING,
                ) => ObservedState::Starting,
                Some(ContainerSummaryStateEnum::DEAD) => {
                    ObservedState::Failed("the container is dead".to_owned())
                }
                _ => ObservedState::Stopped,
            };
            owned.push(Owned {
                resource_id: name,
                sandbox_id: SandboxId::from(sandbox.as_str()),
                tenant_id: tenant.clone(),
                state,
            });
        }
        // A workspace volume whose container is gone (a create or destroy
        // cut short) is reported too, so reconciling removes it.
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(self.owner_filter()),
            }))
            .await
            .map_err(|err| map_err("volumes", err))?;
        for volume in volumes.volumes.unwrap_or_default() {
            let labels = &volume.labels;
            let (Some(resource), Some(sandbox), Some(tenant)) = (
                labels.get(RESOURCE_LABEL),
                labels.get(labels::SANDBOX),
                labels.get(labels::TENANT),
            ) else {
                continue;
            };
            if owned.iter().any(|o| &o.resource_id == resource) {
                continue;
            }
            owned.push(Owned {
                resource_id: resource.clone(),
                sandbox_id: SandboxId::from(sandbox.as_str()),
                tenant_id: tenant.clone(),
                state: ObservedState::Failed(format!(
                    "only the workspace volume {} is left",
                    volume.name
                )),
            });
        }
        Ok(owned)
    }
}

impl DockerProvider {
    /// This owner's tenant networks (for cleanup checks).
    pub async fn owned_networks(&self) -> Result<Vec<String>, ProviderError> {
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(self.owner_filter()),
            }))
            .await
            .map_err(|err| map_err("networks", err))?;
        Ok(networks.into_iter().filter_map(|n| n.name).collect())
    }
}

/// agentd's settings: where the control plane is, the token, and the CA
/// to trust for it, if any.
fn agent_env(url: &str, spec: &SandboxSpec) -> Vec<String> {
    let mut env = vec![
        format!("PADDOCK_AGENTD_CONTROL_PLANE={url}"),
        format!("PADDOCK_AGENTD_TOKEN={}", spec.agent.token),
    ];
    if let Some(pem) = &spec.agent.ca_pem {
        env.push(format!("PADDOCK_AGENTD_CA_PEM={pem}"));
    }
    env
}

/// The workspace volume of the container `resource_id`.
fn volume_name(resource_id: &str) -> String {
    format!("{resource_id}-workspace")
}

/// `text` with every character Docker does not allow in names
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) replaced by `-`.
fn docker_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'p');
    }
    name
}

fn status_of(err: &DockerError) -> Option<u16> {
    match err {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn unavailable(what: &str, err: DockerError) -> ProviderError {
    ProviderError::Unavailable(format!(
        "{what}: {err}; is the Docker daemon running and its socket (DOCKER_HOST) reachable?"
    ))
}

/// Maps an engine error about `what` to the trait's errors.
fn map_err(what: &str, err: DockerError) -> ProviderError {
    match err {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => ProviderError::NotFound(format!("{what}: {message}")),
            400 | 403 | 409 => ProviderError::Rejected(format!("{what}: {message}")),
            503 => ProviderError::Unavailable(format!("{what}: {message}")),
            _ => ProviderError::Other(format!(
                "{what}: the Docker engine answered {status_code}: {message}"
            )),
        },
        other => unavailable(what, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_docker_accepts() {
        assert_eq!(docker_name("paddock-sbx_12ab"), "paddock-sbx_12ab");
        assert_eq!(docker_name("paddock-own/er-t:1"), "paddock-own-er-t-1");
        assert_eq!(docker_name("-x"), "p-x");
        assert_eq!(volume_name("paddock-sbx_1"), "paddock-sbx_1-workspace");
    }

    #[test]
    fn agentd_gets_the_url_the_token_and_any_ca() {
        let mut spec = SandboxSpec {
            sandbox_id: SandboxId::from("sbx_1"),
            tenant_id: "t".to_owned(),
            name: "n".to_owned(),
            labels: Default::default(),
            size: "small".to_owned(),
            resources: super::super::Resources {
                cpu_millis: 1000,
                memory_mib: 512,
                pids: 0,
            },
            image: None,
            agent: super::super::AgentEnv {
                control_plane_url: "ws://cp".to_owned(),
                token: "secret".to_owned(),
                ca_pem: None,
            },
        };
        assert_eq!(
            agent_env("ws://gw:1", &spec),
            [
                "PADDOCK_AGENTD_CONTROL_PLANE=ws://gw:1",
                "PADDOCK_AGENTD_TOKEN=secret"
            ]
        );
        spec.agent.ca_pem = Some("-----BEGIN CERTIFICATE-----".to_owned());
        assert_eq!(
            agent_env("ws://gw:1", &spec)[2],
            "PADDOCK_AGENTD_CA_PEM=-----BEGIN CERTIFICATE-----"
        );
    }

    #[test]
    fn engine_errors_map_to_what_callers_branch_on() {
        let server = |status_code| DockerError::DockerResponseServerError {
            status_code,
            message: "m".to_owned(),
        };
        assert!(matches!(
            map_err("c", server(404)),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            map_err("c", server(409)),
            ProviderError::Rejected(_)
        ));
        assert!(matches!(map_err("c", server(500)), ProviderError::Other(_)));
        assert!(matches!(
            map_err("c", DockerError::RequestTimeoutError),
            ProviderError::Unavailable(_)
        ));
    }
}
