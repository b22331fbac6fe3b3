//! The retention job: at start and then every `retention_interval_secs`,
//! deletes stored output past each tenant's `retention_days` and records
//! what it deleted in the tenant's audit log.

use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::store::{Store, SystemStore};

pub fn spawn_retention(
    system: SystemStore,
    store: Store,
    interval: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match system.purge_expired(SystemTime::now()).await {
                Ok(purged) => {
                    for p in &purged {
                        info!(tenant.id = %p.tenant_id, session.id = p.session_id, bytes = p.bytes, "retention deleted a session's output");
                        let detail =
                            json!({ "bytes": p.bytes, "retention_days": p.retention_days });
                        let resource = format!("session/{}", p.session_id);
                        if let Err(err) = store
                            .audit(
                                &p.tenant_id,
                                "system",
                                "system",
                                "retention.deleted",
                                &resource,
                                &detail,
                            )
                            .await
                        {
                            error!(error = %err, "could not record a retention deletion");
                        }
                    }
                }
                Err(err) => error!(error = %err, "retention pass failed; will retry"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    })
}
