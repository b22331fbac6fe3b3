//! The `fly` provider: each sandbox is a Fly Machine in one Fly app,
//! created, started, stopped and destroyed through the Machines API
//! ([`client::MachinesClient`]).
//!
//! A machine carries Paddock's [`labels`] (owner included) and the user's
//! labels in its metadata, agentd's control-plane URL and token in its
//! environment (plus an extra CA as a file, when there is one), and its
//! size as the machine's guest. Fly may stop a machine by itself (its
//! auto-stop, or the main process exiting): such a machine is reported
//! [`ObservedState::Stopped`], not failed, and [`Provider::start`] starts
//! it again on demand.

pub mod api;
pub mod client;
pub mod config;

use std::collections::BTreeMap;

use base64::Engine as _;
use paddock_protocol::SandboxId;
use tracing::{info, warn};

use self::api::{
    CreateMachineRequest, Machine, MachineConfig, MachineFile, MachineGuest, MachineRestart,
    WaitState,
};
pub use self::client::RetryPolicy;
use self::client::{FlyError, MachinesClient};
pub use self::config::FlyConfig;
use super::{labels, ObservedState, Owned, Provider, ProviderError, Resources, SandboxSpec};

/// Where an extra CA for agentd is written inside the machine.
const CA_PATH: &str = "/etc/paddock/ca.pem";
/// The signal `stop` sends: agentd hangs up its sessions and reports their
/// final output on SIGTERM.
const STOP_SIGNAL: &str = "SIGTERM";
/// A crashed agentd is restarted this often before the machine is left
/// stopped (agentd exits 2 on a refused token, which restarting cannot fix).
const RESTART_RETRIES: u32 = 3;
/// Fly gives shared CPUs memory in steps of 256 MB.
const MEMORY_STEP_MB: u32 = 256;

/// Sandboxes as Fly Machines.
#[derive(Debug)]
pub struct FlyProvider {
    client: MachinesClient,
    config: FlyConfig,
    owner: String,
}

impl FlyProvider {
    /// `owner` is this deployment's owner id (see [`labels::OWNER`]).
    pub fn new(config: FlyConfig, owner: impl Into<String>) -> Result<Self, ProviderError> {
        config
            .validate()
            .map_err(|e| ProviderError::Rejected(e.to_string()))?;
        let client = MachinesClient::new(
            &config.api_url,
            &config.app,
            &config.api_token,
            config.retry,
        )?;
        Ok(FlyProvider {
            client,
            config,
            owner: owner.into(),
        })
    }

    /// The API client, for callers that need an endpoint the trait lacks.
    pub fn client(&self) -> &MachinesClient {
        &self.client
    }

    fn machine_request(&self, spec: &SandboxSpec) -> Result<CreateMachineRequest, ProviderError> {
        let image = spec
            .image
            .clone()
            .or_else(|| self.config.image.clone())
            .ok_or_else(|| {
                ProviderError::Rejected(
                    "no sandbox image for the fly provider: set PADDOCK_FLY_IMAGE (e.g. \
                     registry.fly.io/APP:TAG) or name one in the request"
                        .into(),
                )
            })?;
        let mut metadata = BTreeMap::new();
        for (key, value) in &spec.labels {
            if key.starts_with("paddock.") || key.starts_with("fly_") {
                return Err(ProviderError::Rejected(format!(
                    "label `{key}` uses a reserved prefix (`paddock.` or `fly_`); rename it"
                )));
            }
            metadata.insert(key.clone(), value.clone());
        }
        metadata.insert(labels::SANDBOX.into(), spec.sandbox_id.to_string());
        metadata.insert(labels::TENANT.into(), spec.tenant_id.clone());
        metadata.insert(labels::OWNER.into(), self.owner.clone());

        let mut env = BTreeMap::new();
        env.insert(
            "PADDOCK_AGENTD_CONTROL_PLANE".into(),
            spec.agent.control_plane_url.clone(),
        );
        env.insert("PADDOCK_AGENTD_TOKEN".into(), spec.agent.token.clone());
        let mut files = Vec::new();
        if let Some(pem) = &spec.agent.ca_pem {
            env.insert("PADDOCK_AGENTD_CA_FILE".into(), CA_PATH.into());
            files.push(MachineFile {
                guest_path: CA_PATH.into(),
                raw_value: base64::engine::general_purpose::STANDARD.encode(pem),
            });
        }
        Ok(CreateMachineRequest {
            name: Some(machine_name(&spec.sandbox_id)),
            region: self.config.region.clone(),
            config: MachineConfig {
                image,
                guest: Some(guest(&self.config.cpu_kind, spec.resources)),
                env,
                metadata,
                files,
                restart: Some(MachineRestart {
                    policy: "on-failure".into(),
                    max_retries: Some(RESTART_RETRIES),
                }),
                auto_destroy: Some(false),
            },
        })
    }

    /// Asks Fly to stop the machine; a machine Fly stopped meanwhile (its
    /// auto-stop) counts as done.
    async fn stop_now(&self, resource_id: &str) -> Result<(), ProviderError> {
        let Err(err) = self.client.stop(resource_id, STOP_SIGNAL).await else {
            return Ok(());
        };
        let now = self.client.get(resource_id).await?;
        if observe(&now) == Some(ObservedState::Stopped) {
            return Ok(());
        }
        Err(err.into())
    }

    /// The live machine of this owner labelled with `sandbox`, if any: how a
    /// create whose answer was lost (or refused as a duplicate name) finds
    /// the machine it made.
    async fn find_sandbox(&self, sandbox: &SandboxId) -> Result<Option<Machine>, FlyError> {
        let machines = self
            .client
            .list_by_metadata(&[
                (labels::OWNER, self.owner.as_str()),
                (labels::SANDBOX, sandbox.as_str()),
            ])
            .await?;
        Ok(machines.into_iter().find(|m| observe(m).is_some()))
    }
}

#[async_trait::async_trait]
impl Provider for FlyProvider {
    fn name(&self) -> &'static str {
        "fly"
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<String, ProviderError> {
        let request = self.machine_request(spec)?;
        match self.client.create(&request).await {
            Ok(machine) => {
                info!(sandbox.id = %spec.sandbox_id, machine.id = %machine.id,
                    region = %machine.region, "fly machine created");
                Ok(machine.id)
            }
            Err(err @ (FlyError::Refused(_) | FlyError::Unavailable(_))) => {
                match self.find_sandbox(&spec.sandbox_id).await {
                    Ok(Some(machine)) => {
                        info!(sandbox.id = %spec.sandbox_id, machine.id = %machine.id,
                            "fly machine found after an unclear create");
                        Ok(machine.id)
                    }
                    _ => Err(err.into()),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn start(&self, resource_id: &str) -> Result<(), ProviderError> {
        let machine = self.client.get(resource_id).await?;
        let instance = Some(machine.instance_id.as_str());
        match machine.state.as_str() {
            _ if observe(&machine).is_none() => return Err(gone(resource_id)),
            "started" => return Ok(()),
            // Already on its way up: asking again could only be refused.
            "created" | "starting" => {}
            // Fly is stopping it (auto-stop): let it finish, then start.
            "stopping" => {
                self.client
                    .wait_for_state(
                        resource_id,
                        instance,
                        WaitState::Stopped,
                        self.config.wait_timeout(),
                    )
                    .await?;
                self.client.start(resource_id).await?;
            }
            _ => self.client.start(resource_id).await?,
        }
        let reached = self
            .client
            .wait_for_state(
                resource_id,
                instance,
                WaitState::Started,
                self.config.wait_timeout(),
            )
            .await?;
        if !reached {
            return Err(ProviderError::Unavailable(format!(
                "fly machine {resource_id} did not start within {} s; see `fly machine status \
                 {resource_id} -a {}`",
                self.config.wait_secs,
                self.client.app()
            )));
        }
        Ok(())
    }

    async fn stop(&self, resource_id: &str) -> Result<(), ProviderError> {
        let machine = self.client.get(resource_id).await?;
        match observe(&machine) {
            None => return Err(gone(resource_id)),
            // Fly is already stopping it (auto-stop): only wait below.
            Some(ObservedState::Stopped) if machine.state == "stopping" => {}
            Some(ObservedState::Stopped) => return Ok(()),
            Some(_) => self.stop_now(resource_id).await?,
        }
        let reached = self
            .client
            .wait_for_state(
                resource_id,
                Some(&machine.instance_id),
                WaitState::Stopped,
                self.config.wait_timeout(),
            )
            .await?;
        if !reached {
            return Err(ProviderError::Unavailable(format!(
                "fly machine {resource_id} did not stop within {} s; destroy it to force it",
                self.config.wait_secs
            )));
        }
        Ok(())
    }

    async fn destroy(&self, resource_id: &str) -> Result<(), ProviderError> {
        self.client.destroy(resource_id, true).await?;
        info!(machine.id = %resource_id, "fly machine destroyed");
        Ok(())
    }

    async fn status(&self, resource_id: &str) -> Result<ObservedState, ProviderError> {
        let machine = self.client.get(resource_id).await?;
        observe(&machine).ok_or_else(|| gone(resource_id))
    }

    async fn list_owned(&self) -> Result<Vec<Owned>, ProviderError> {
        let machines = self
            .client
            .list_by_metadata(&[(labels::OWNER, self.owner.as_str())])
            .await?;
        let mut owned = Vec::with_capacity(machines.len());
        for machine in machines {
            let Some(state) = observe(&machine) else {
                continue;
            };
            let (Some(sandbox), Some(tenant)) = (
                machine.config.metadata.get(labels::SANDBOX),
                machine.config.metadata.get(labels::TENANT),
            ) else {
                warn!(machine.id = %machine.id, "fly machine with Paddock's owner label but no \
                    sandbox or tenant label; left alone");
                continue;
            };
            owned.push(Owned {
                resource_id: machine.id.clone(),
                sandbox_id: SandboxId(sandbox.clone()),
                tenant_id: tenant.clone(),
                state,
            });
        }
        Ok(owned)
    }
}

/// What a machine's state means to Paddock; `None` when it is gone.
pub fn observe(machine: &Machine) -> Option<ObservedState> {
    match machine.state.as_str() {
        "started" => Some(ObservedState::Running),
        // Fly's auto-stop and suspend leave a machine that starts again.
        "stopping" | "stopped" | "suspending" | "suspended" => Some(ObservedState::Stopped),
        "destroying" | "destroyed" => None,
        "failed" => Some(ObservedState::Failed(failure_reason(machine))),
        // created, starting, replacing, updating, launching, and any state
        // Fly adds later: on its way, not yet running.
        _ => Some(ObservedState::Starting),
    }
}

fn failure_reason(machine: &Machine) -> String {
    let last = machine.events.iter().max_by_key(|e| e.timestamp);
    match last {
        Some(e) => format!(
            "fly machine {} failed (last event: {} {} from {})",
            machine.id, e.kind, e.status, e.source
        ),
        None => format!("fly machine {} failed", machine.id),
    }
}

/// A size as a Fly guest: whole CPUs (at least one) and memory rounded up
/// to Fly's 256 MB steps. Fly has no process limit; `pids` is not applied.
pub fn guest(cpu_kind: &str, resources: Resources) -> MachineGuest {
    let cpus = resources.cpu_millis.div_ceil(1000).max(1);
    let memory_mb = resources
        .memory_mib
        .div_ceil(MEMORY_STEP_MB)
        .max(1)
        .saturating_mul(MEMORY_STEP_MB);
    MachineGuest {
        cpu_kind: cpu_kind.to_owned(),
        cpus,
        memory_mb,
    }
}

/// `paddock-sbx-…`: Fly machine names are unique per app, which makes a
/// repeated create of one sandbox fail instead of making a second machine.
pub fn machine_name(sandbox: &SandboxId) -> String {
    let id: String = sandbox
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("paddock-{id}")
}

fn gone(resource_id: &str) -> ProviderError {
    ProviderError::NotFound(format!("fly machine {resource_id}"))
}

impl From<FlyError> for ProviderError {
    fn from(err: FlyError) -> Self {
        match err {
            FlyError::NotFound(m) => ProviderError::NotFound(m),
            FlyError::Unauthorized(m) | FlyError::Refused(m) => ProviderError::Rejected(m),
            FlyError::Unavailable(m) => ProviderError::Unavailable(m),
            FlyError::Malformed(m) => ProviderError::Other(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(state: &str) -> Machine {
        serde_json::from_value(serde_json::json!({"id": "e784079b449483", "state": state})).unwrap()
    }

    #[test]
    fn fly_states_map_to_observed_states() {
        for (state, want) in [
            ("created", Some(ObservedState::Starting)),
            ("starting", Some(ObservedState::Starting)),
            ("started", Some(ObservedState::Running)),
            ("stopping", Some(ObservedState::Stopped)),
            ("stopped", Some(ObservedState::Stopped)),
            ("suspended", Some(ObservedState::Stopped)),
            ("destroying", None),
            ("destroyed", None),
        ] {
            assert_eq!(observe(&machine(state)), want, "{state}");
        }
        assert!(matches!(
            observe(&machine("failed")),
            Some(ObservedState::Failed(reason)) if reason.contains("e784079b449483")
        ));
    }

    #[test]
    fn sizes_become_whole_cpus_and_256_mb_steps() {
        let g = guest(
            "shared",
            Resources {
                cpu_millis: 500,
                memory_mib: 300,
                pids: 256,
            },
        );
        assert_eq!((g.cpus, g.memory_mb), (1, 512));
        let g = guest(
            "performance",
            Resources {
                cpu_millis: 2000,
                memory_mib: 4096,
                pids: 0,
            },
        );
        assert_eq!(
            (g.cpu_kind.as_str(), g.cpus, g.memory_mb),
            ("performance", 2, 4096)
        );
        let g = guest(
            "shared",
            Resources {
                cpu_millis: 0,
                memory_mib: 0,
                pids: 0,
            },
        );
        assert_eq!((g.cpus, g.memory_mb), (1, 256));
    }

    #[test]
    fn machine_names_are_lowercase_and_dashed() {
        assert_eq!(
            machine_name(&SandboxId("sbx_0A1b".into())),
            "paddock-sbx-0a1b"
        );
    }
}
