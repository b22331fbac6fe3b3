//! Sandbox lifecycle operations: provisioning a sandbox with a provider,
//! starting, stopping and destroying it, each stored as a state transition
//! around the provider call (`provisioning → starting → connected ⇄
//! disconnected → stopping → stopped → destroyed`, `failed` with a reason).
//! `connected` and `disconnected` are set by the agent hub when agentd's
//! link comes and goes. Used by the HTTP API, the pools and `up`.

use std::collections::BTreeMap;
use std::sync::Arc;

use paddock_protocol::api::SandboxStatus;
use paddock_protocol::ErrorCode;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::hub::Outgoing;
use crate::providers::{AgentEnv, Provider, ProviderError, SandboxSpec};
use crate::store::{SandboxRow, Transition};
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

impl From<ProviderError> for ApiError {
    fn from(err: ProviderError) -> Self {
        match err {
            ProviderError::NotFound(what) => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{what} is gone from its provider; destroy the sandbox and create a new one"
                ),
            ),
            ProviderError::Rejected(why) => {
                ApiError::bad_request(format!("the provider refused: {why}"))
            }
            ProviderError::Unavailable(why) | ProviderError::Other(why) => ApiError::new(
                ErrorCode::Unavailable,
                format!("the provider failed: {why}; try again, or see the control plane's log"),
            ),
        }
    }
}

/// What agentd needs to dial this control plane, with `token`.
pub fn agent_env(state: &AppState, token: String) -> Result<AgentEnv> {
    let url = state
        .config
        .providers
        .agent_url
        .clone()
        .or_else(|| state.agent_url.read().unwrap_or_else(|e| e.into_inner()).clone())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                "the control plane does not know its own URL yet; set agent_url (PADDOCK_AGENT_URL)",
            )
        })?;
    let ca_pem = match &state.config.providers.agent_ca_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|err| {
            warn!(path = %path.display(), error = %err, "could not read agent_ca_file");
            ApiError::internal()
        })?),
        None => None,
    };
    Ok(AgentEnv {
        control_plane_url: url,
        token,
        ca_pem,
    })
}

fn provider_of(state: &AppState, row: &SandboxRow) -> Result<(Arc<dyn Provider>, String)> {
    let Some(name) = &row.provider else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "sandbox {} was registered by hand: start or stop its agentd yourself, or destroy it",
                row.name
            ),
        ));
    };
    let provider = state.providers.get(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("sandbox {} runs on `{name}`, which is not enabled here; enable it (PADDOCK_PROVIDERS)", row.name),
        )
    })?;
    let resource = row.resource_id.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Conflict,
            format!(
                "sandbox {} was never created by its provider; destroy it and create a new one",
                row.name
            ),
        )
    })?;
    Ok((provider, resource))
}

/// Tells the tenant's `/v1/events` subscribers (`sandbox.<what>`).
pub fn publish(state: &AppState, row: &SandboxRow, what: &str, detail: serde_json::Value) {
    let about = crate::events::About {
        sandbox_id: Some(row.id.clone()),
        ..Default::default()
    };
    state
        .events
        .publish(&row.tenant_id, &format!("sandbox.{what}"), about, detail);
}

async fn reload(state: &AppState, row: &SandboxRow) -> Result<SandboxRow> {
    Ok(state
        .store
        .find_sandbox(&row.tenant_id, row.id.as_str())
        .await?
        .unwrap_or_else(|| row.clone()))
}

/// Records `err` as the reason the sandbox failed, and returns it.
async fn failed(state: &AppState, row: &SandboxRow, what: &str, err: ProviderError) -> ApiError {
    let reason = format!("{what}: {err}");
    warn!(sandbox.id = %row.id, error = %err, "{what}");
    let _ = state
        .store
        .transition(&row.tenant_id, &row.id, Transition::failed(&reason))
        .await;
    publish(
        state,
        row,
        "failed",
        serde_json::json!({ "reason": reason }),
    );
    err.into()
}

/// Creates a sandbox run by a provider (`provider` `None`: the tenant's)
/// of `size` (`None`: the default) and starts it; its agentd connects by
/// itself. Returns it in state `starting` (or `failed`, with an error).
pub async fn provision(
    state: &AppState,
    tenant: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    provider: Option<&str>,
    size: Option<&str>,
) -> Result<SandboxRow> {
    let settings = &state.config.providers;
    let provider = state
        .providers
        .choose(settings, tenant, provider)
        .map_err(ApiError::bad_request)?;
    let size = size.unwrap_or(&settings.default_size);
    let resources = settings.sizes.get(size).copied().ok_or_else(|| {
        ApiError::bad_request(format!(
            "no size `{size}`: use one of {}",
            settings.size_names()
        ))
    })?;
    if labels.keys().any(|k| k.starts_with("paddock.")) {
        return Err(ApiError::bad_request(
            "labels starting with `paddock.` are Paddock's own; choose another key",
        ));
    }
    let (row, token) = state
        .store
        .create_provisioned(tenant, name, labels, provider.name(), size)
        .await?;
    let spec = SandboxSpec {
        sandbox_id: row.id.clone(),
        tenant_id: tenant.to_owned(),
        name: name.to_owned(),
        labels: labels.clone(),
        size: size.to_owned(),
        resources: resources.into(),
        image: None,
        agent: agent_env(state, token)?,
    };
    create_resource(state, &row, provider.as_ref(), &spec).await?;
    info!(sandbox.id = %row.id, provider = provider.name(), size, "sandbox provisioned");
    publish(
        state,
        &row,
        "provisioned",
        serde_json::json!({ "provider": provider.name(), "size": size }),
    );
    reload(state, &row).await
}

async fn create_resource(
    state: &AppState,
    row: &SandboxRow,
    provider: &dyn Provider,
    spec: &SandboxSpec,
) -> Result<()> {
    match provider.create(spec).await {
        Ok(resource) => {
            state
                .store
                .set_resource_id(&row.tenant_id, &row.id, &resource)
                .await?;
            let t = Transition::to(SandboxStatus::Starting).from(&[SandboxStatus::Provisioning]);
            state.store.transition(&row.tenant_id, &row.id, t).await?;
            Ok(())
        }
        Err(err) => Err(failed(state, row, "the provider could not create it", err).await),
    }
}

/// Starts a stopped (or disconnected, or failed) provider-run sandbox.
pub async fn start(state: &AppState, row: &SandboxRow) -> Result<SandboxRow> {
    if row.state == SandboxStatus::Destroyed {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("sandbox {} is destroyed; create a new one", row.name),
        ));
    }
    let (provider, resource) = provider_of(state, row)?;
    if state.hub.link(&row.id).is_some() {
        return Ok(row.clone());
    }
    let t = Transition::to(SandboxStatus::Starting);
    state.store.transition(&row.tenant_id, &row.id, t).await?;
    if let Err(err) = provider.start(&resource).await {
        return Err(failed(state, row, "the provider could not start it", err).await);
    }
    info!(sandbox.id = %row.id, "sandbox starting");
    publish(state, row, "starting", serde_json::json!({}));
    reload(state, row).await
}

/// Stops a provider-run sandbox: agentd gets SIGTERM (its sessions end),
/// the workspace is kept.
pub async fn stop(state: &AppState, row: &SandboxRow) -> Result<SandboxRow> {
    match row.state {
        SandboxStatus::Stopped => return Ok(row.clone()),
        SandboxStatus::Destroyed => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("sandbox {} is destroyed", row.name),
            ))
        }
        _ => {}
    }
    let (provider, resource) = provider_of(state, row)?;
    let t = Transition::to(SandboxStatus::Stopping);
    state.store.transition(&row.tenant_id, &row.id, t).await?;
    if let Err(err) = provider.stop(&resource).await {
        return Err(failed(state, row, "the provider could not stop it", err).await);
    }
    let t = Transition::to(SandboxStatus::Stopped).from(&[SandboxStatus::Stopping]);
    state.store.transition(&row.tenant_id, &row.id, t).await?;
    info!(sandbox.id = %row.id, "sandbox stopped");
    publish(state, row, "stopped", serde_json::json!({}));
    reload(state, row).await
}

/// Destroys a sandbox: the provider's resource (and workspace) is removed,
/// the agentd token stops working, the name is free again. A sandbox
/// registered by hand only loses its token and its connection.
pub async fn destroy(state: &AppState, row: &SandboxRow) -> Result<SandboxRow> {
    if row.state == SandboxStatus::Destroyed {
        return Ok(row.clone());
    }
    if let (Some(_), Some(_)) = (&row.provider, &row.resource_id) {
        let (provider, resource) = provider_of(state, row)?;
        let t = Transition::to(SandboxStatus::Stopping);
        state.store.transition(&row.tenant_id, &row.id, t).await?;
        if let Err(err) = provider.destroy(&resource).await {
            return Err(failed(state, row, "the provider could not destroy it", err).await);
        }
    }
    state.store.destroy_sandbox(&row.tenant_id, &row.id).await?;
    if let Some(link) = state.hub.link(&row.id) {
        let _ = link
            .tx_out
            .try_send(Outgoing::Close(1000, "sandbox destroyed".into()));
    }
    info!(sandbox.id = %row.id, "sandbox destroyed");
    publish(state, row, "destroyed", serde_json::json!({}));
    reload(state, row).await
}
