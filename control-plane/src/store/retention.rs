//! Retention: deleting the stored output of sessions that ended longer ago
//! than their tenant's `retention_days`. It crosses tenants, so it runs on
//! the system store; what it deletes is replaced by a gap record that says
//! why, and reported back for the audit log.

use std::time::{Duration, SystemTime};

use sqlx::Row;

use super::QueryTimer;
use super::{now_rfc3339, Result, SystemStore};
use crate::clock::rfc3339;

/// What one pass deleted, per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    pub tenant_id: String,
    pub session_id: i64,
    /// Bytes of output deleted (the stream's stored length).
    pub bytes: i64,
    pub retention_days: i64,
}

impl SystemStore {
    /// Deletes the output of every session that ended before `now` minus
    /// its tenant's retention, once; returns what was deleted.
    pub async fn purge_expired(&self, now: SystemTime) -> Result<Vec<Purged>> {
        let _timed = QueryTimer::start("purge_expired");
        let tenants =
            sqlx::query("SELECT id, retention_days FROM tenants WHERE retention_days IS NOT NULL")
                .fetch_all(self.pool())
                .await?;
        let mut purged = Vec::new();
        for tenant in tenants {
            let tenant_id: String = tenant.try_get("id")?;
            let days: i64 = tenant.try_get("retention_days")?;
            let cutoff = rfc3339(now - Duration::from_secs(days.max(0) as u64 * 86_400));
            let mut tx = self.pool().begin().await?;
            // RFC 3339 UTC strings of one format compare like the times they name.
            let sessions = sqlx::query(
                "SELECT id, stored_offset FROM sessions
                 WHERE tenant_id = $1 AND ended_at IS NOT NULL AND ended_at < $2
                 AND output_purged_at IS NULL ORDER BY id",
            )
            .bind(&tenant_id)
            .bind(&cutoff)
            .fetch_all(&mut *tx)
            .await?;
            for session in sessions {
                let id: i64 = session.try_get("id")?;
                let bytes: i64 = session.try_get("stored_offset")?;
                for table in ["output_chunks", "output_gaps", "session_events"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE tenant_id = $1 AND session_id = $2"
                    ))
                    .bind(&tenant_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                if bytes > 0 {
                    sqlx::query(
                        "INSERT INTO output_gaps (tenant_id, session_id, start, stop, reason)
                         VALUES ($1, $2, 0, $3, $4)",
                    )
                    .bind(&tenant_id)
                    .bind(id)
                    .bind(bytes)
                    .bind(format!(
                        "deleted by the tenant's retention policy ({days} days)"
                    ))
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "UPDATE sessions SET output_purged_at = $1 WHERE tenant_id = $2 AND id = $3",
                )
                .bind(now_rfc3339())
                .bind(&tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                purged.push(Purged {
                    tenant_id: tenant_id.clone(),
                    session_id: id,
                    bytes,
                    retention_days: days,
                });
            }
            tx.commit().await?;
        }
        Ok(purged)
    }
}
