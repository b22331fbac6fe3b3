//! Reconciling at start-up, for each enabled provider, what the engine has
//! with what the database says: resources labelled with this deployment's
//! owner id but unknown to the database are destroyed (and logged);
//! provider-run sandboxes the engine no longer reports are marked `failed`;
//! the ones both know and that should run are adopted again (the local
//! provider supervises its live children instead of spawning others).
//! Sandboxes registered by hand have no provider and are left alone.

use std::collections::HashMap;

use paddock_protocol::api::SandboxStatus;
use tracing::{info, warn};

use crate::store::{SystemStore, Transition};
use crate::AppState;

/// What one pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub destroyed: Vec<String>,
    pub failed: Vec<String>,
    pub adopted: Vec<String>,
}

pub async fn reconcile(state: &AppState, system: &SystemStore) -> Reconciled {
    let mut done = Reconciled::default();
    for provider in state.providers.all() {
        let name = provider.name();
        let owned = match provider.list_owned().await {
            Ok(owned) => owned,
            Err(err) => {
                warn!(provider = name, error = %err, "could not list the provider's resources; not reconciling it");
                continue;
            }
        };
        let known = match system.provider_sandboxes(name).await {
            Ok(rows) => rows,
            Err(err) => {
                warn!(provider = name, error = %err, "could not list sandboxes; not reconciling");
                continue;
            }
        };
        let by_id: HashMap<_, _> = known.iter().map(|row| (row.id.clone(), row)).collect();
        for resource in &owned {
            let row = by_id
                .get(&resource.sandbox_id)
                .filter(|row| row.resource_id.as_deref() == Some(resource.resource_id.as_str()));
            match row {
                None => {
                    warn!(
                        provider = name,
                        resource = %resource.resource_id,
                        sandbox.id = %resource.sandbox_id,
                        tenant.id = %resource.tenant_id,
                        "destroying a resource of this deployment that the database does not know"
                    );
                    match provider.destroy(&resource.resource_id).await {
                        Ok(()) => done.destroyed.push(resource.resource_id.clone()),
                        Err(err) => {
                            warn!(resource = %resource.resource_id, error = %err, "could not destroy it")
                        }
                    }
                }
                Some(row)
                    if !matches!(row.state, SandboxStatus::Stopped | SandboxStatus::Stopping) =>
                {
                    match provider.adopt(&resource.resource_id).await {
                        Ok(()) => done.adopted.push(resource.resource_id.clone()),
                        Err(err) => {
                            warn!(resource = %resource.resource_id, error = %err, "could not adopt it")
                        }
                    }
                }
                Some(_) => {}
            }
        }
        for row in &known {
            let reported = owned.iter().any(|o| {
                o.sandbox_id == row.id && Some(o.resource_id.as_str()) == row.resource_id.as_deref()
            });
            if reported || row.state == SandboxStatus::Failed {
                continue;
            }
            let reason = match &row.resource_id {
                Some(resource) => {
                    format!("the {name} provider no longer reports its resource {resource}")
                }
                None => format!("the control plane stopped before the {name} provider created it"),
            };
            warn!(sandbox.id = %row.id, tenant.id = %row.tenant_id, %reason, "sandbox marked failed");
            match state
                .store
                .transition(&row.tenant_id, &row.id, Transition::failed(&reason))
                .await
            {
                Ok(_) => done.failed.push(row.id.to_string()),
                Err(err) => warn!(sandbox.id = %row.id, error = %err, "could not mark it failed"),
            }
        }
    }
    if done != Reconciled::default() {
        info!(
            destroyed = done.destroyed.len(),
            failed = done.failed.len(),
            adopted = done.adopted.len(),
            "reconciled providers with the database"
        );
    }
    done
}
