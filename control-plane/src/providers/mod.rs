//! Sandbox providers: how sandboxes come to exist.
//!
//! A [`Provider`] turns a [`SandboxSpec`] into a running `agentd` somewhere —
//! a child process (`local`), a container (`docker`, against the Docker
//! Engine API) or a Fly Machine (`fly`, against the Machines API) — and
//! starts, stops and destroys it again. The control plane never dials the
//! sandbox: the provider only hands `agentd` the control plane's URL and the
//! sandbox's token ([`AgentEnv`]), and `agentd` dials out.
//!
//! Every resource a provider creates carries the labels in [`labels`]:
//! the sandbox id, its tenant and the **owner** — the id of the control-plane
//! deployment that created it (stable per data directory / database), so
//! that reconciling at start-up only ever touches this deployment's
//! resources, never those of another control plane sharing the same Docker
//! host or Fly app (several test control planes run side by side).
//!
//! The lifecycle states are the database's (`provisioning → starting →
//! connected ⇄ disconnected → stopping → stopped → destroyed`, and `failed`
//! with a reason); a provider reports only what its engine sees
//! ([`ObservedState`]).

pub mod docker;
pub mod fly;

use std::collections::BTreeMap;
use std::fmt;

pub mod local;
pub mod registry;
pub mod settings;

use paddock_protocol::SandboxId;

/// The label keys put on every provider resource (Docker labels, Fly
/// machine metadata, a local sandbox's state file).
pub mod labels {
    /// The sandbox id (`sb_…`).
    pub const SANDBOX: &str = "paddock.sandbox";
    /// The tenant id.
    pub const TENANT: &str = "paddock.tenant";
    /// The control-plane deployment that owns the resource.
    pub const OWNER: &str = "paddock.owner";
}

/// Resources for one sandbox, from a named size in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// CPU in thousandths of a core (1000 = one core).
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// Maximum number of processes (Docker's pids limit); 0 for no limit.
    pub pids: u32,
}

/// What `agentd` needs to reach the control plane; put in agentd's own
/// environment (`PADDOCK_AGENTD_CONTROL_PLANE`, `PADDOCK_AGENTD_TOKEN`,
/// `PADDOCK_AGENTD_CA_FILE`), never in its sessions' (agentd scrubs them).
#[derive(Clone)]
pub struct AgentEnv {
    /// `ws://…` or `wss://…` as reachable *from inside the sandbox*.
    pub control_plane_url: String,
    /// The sandbox's agentd token (secret).
    pub token: String,
    /// PEM of an extra CA agentd should trust (self-hosted TLS), if any.
    pub ca_pem: Option<String>,
}

impl fmt::Debug for AgentEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentEnv")
            .field("control_plane_url", &self.control_plane_url)
            .field("token", &"<redacted>")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

/// Everything a provider needs to create one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub sandbox_id: SandboxId,
    pub tenant_id: String,
    /// The sandbox's name (unique per tenant); providers may use it in
    /// resource names, always together with the id.
    pub name: String,
    /// The user's labels (`--label k=v`), besides Paddock's own.
    pub labels: BTreeMap<String, String>,
    /// The size's name (`--size`) and what it stands for.
    pub size: String,
    pub resources: Resources,
    /// The image (docker, fly); `None` means the provider's configured default.
    pub image: Option<String>,
    pub agent: AgentEnv,
}

/// What the engine reports of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    /// Created or starting, not yet running.
    Starting,
    Running,
    /// Stopped (exited, suspended); can be started again.
    Stopped,
    /// The engine reports it broken, with its reason.
    Failed(String),
}

/// One resource a provider owns, as listed by [`Provider::list_owned`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// The provider's handle for it: container id, machine id, local pid file key.
    pub resource_id: String,
    /// From the resource's labels.
    pub sandbox_id: SandboxId,
    pub tenant_id: String,
    pub state: ObservedState,
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The resource does not exist (any more).
    #[error("{0} not found")]
    NotFound(String),
    /// The engine cannot be reached or is overloaded; the caller may retry.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The engine refused the request (bad image, size out of range, …).
    #[error("provider refused: {0}")]
    Rejected(String),
    #[error("{0}")]
    Other(String),
}

/// One way of running sandboxes. Implementations are cheap to share
/// (`Arc<dyn Provider>`) and hold no per-sandbox state that is not also
/// recoverable from the engine ([`Provider::list_owned`]) — the database is
/// the source of truth, the engine the source of facts.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// `local`, `docker` or `fly`; stored with each sandbox.
    fn name(&self) -> &'static str;

    /// Creates the sandbox and starts it; returns the resource id to store.
    /// Labels it with [`labels`] (owner included).
    async fn create(&self, spec: &SandboxSpec) -> Result<String, ProviderError>;

    /// Starts a stopped sandbox again (its workspace is kept).
    async fn start(&self, resource_id: &str) -> Result<(), ProviderError>;

    /// Stops it: agentd gets SIGTERM (it hangs up its sessions and sends
    /// their final output), then SIGKILL after a grace period.
    async fn stop(&self, resource_id: &str) -> Result<(), ProviderError>;

    /// Removes it and everything created for it (workspace, volume);
    /// destroying what is already gone is not an error.
    async fn destroy(&self, resource_id: &str) -> Result<(), ProviderError>;

    /// What the engine sees now; [`ProviderError::NotFound`] when it is gone.
    async fn status(&self, resource_id: &str) -> Result<ObservedState, ProviderError>;

    /// Every resource labelled as owned by this deployment, in any state.
    async fn list_owned(&self) -> Result<Vec<Owned>, ProviderError>;

    /// Takes charge again, after a control-plane restart, of a resource
    /// the database knows and that should be running (the local provider
    /// supervises its live child again instead of spawning another).
    /// Engines that supervise their own resources need nothing here.
    async fn adopt(&self, _resource_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }
}
