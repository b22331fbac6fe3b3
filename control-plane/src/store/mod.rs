//! Durable state through sqlx on SQLite (the embedded default) or
//! PostgreSQL (production), with one code path: queries are written once
//! with `$N` placeholders, which both drivers accept, and run on sqlx's
//! `Any` pool. Queries are checked at run time, so no database is needed to
//! build.
//!
//! Tenancy is enforced twice. Every method on tenant data takes the tenant
//! and filters by it; and on PostgreSQL every such query runs inside a
//! transaction that first sets `app.tenant_id`, as the role `paddock_app`,
//! so row-level security hides other tenants' rows even from a query that
//! forgot its filter. Work that must cross tenants goes through
//! [`SystemStore`] (role `paddock_system`), which request handlers do not hold.

use std::collections::BTreeMap;
use std::path::Path;

pub use lifecycle::Transition;
use paddock_protocol::api::{SandboxInfo, SandboxStatus, SessionState};
use paddock_protocol::{ExitStatus, SandboxId, SessionId, TermSize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::auth::{hash_token, new_token, TokenKind};
use crate::clock::now_rfc3339;

pub mod governance;
mod identity;
mod lifecycle;
mod output;
mod retention;
mod system;
mod tasks;
pub use output::{GapRow, Piece, SessionEvent, SessionWrite, TimedChunk};
pub use retention::Purged;
pub use system::{ConsoleSessionRow, SystemStore};
pub use tasks::TaskRow;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The one tenant that exists until multi-tenancy lands.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a sandbox named `{0}` already exists")]
    DuplicateName(String),
    #[error("{0}")]
    Duplicate(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("could not apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Times one store call into `paddock_store_query_duration_seconds{op}`
/// when dropped, whichever way the call ends.
pub(crate) struct QueryTimer {
    op: &'static str,
    started: std::time::Instant,
}

impl QueryTimer {
    pub(crate) fn start(op: &'static str) -> Self {
        QueryTimer {
            op,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        metrics::histogram!(crate::telemetry::STORE_QUERY_DURATION, "op" => self.op)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// Who an API token speaks for, and on which tenant the request acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub token_name: String,
    pub role: paddock_protocol::admin::Role,
    /// The tenant the token belongs to.
    pub home_tenant: String,
    /// The tenant this request acts on: the home tenant, or for an owner the
    /// one named in `x-paddock-tenant`.
    pub tenant_id: String,
    /// For an `agent` token, the agent it acts for.
    pub agent_id: Option<String>,
}

/// A sandbox as stored.
#[derive(Debug, Clone)]
pub struct SandboxRow {
    pub id: SandboxId,
    pub tenant_id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
    pub last_seen_at: Option<String>,
    pub agent_version: Option<String>,
    /// The lifecycle state as stored.
    pub state: SandboxStatus,
    /// Why it failed, for `failed`.
    pub state_reason: Option<String>,
    /// The provider that runs it; `None` when registered by hand.
    pub provider: Option<String>,
    /// The provider's handle for it (container id, machine id, …).
    pub resource_id: Option<String>,
    pub size: Option<String>,
}

impl SandboxRow {
    /// The API's view. `connected` is whether this control plane holds the
    /// sandbox's agent link: a stored `connected` without a link here shows
    /// as `disconnected` (the link ended with a control plane that died, or
    /// is held by another replica, which alone can reach the agent).
    pub fn to_info(&self, connected: bool, last_seen_at: Option<String>) -> SandboxInfo {
        let status = match (connected, self.state) {
            (_, SandboxStatus::Destroyed) => SandboxStatus::Destroyed,
            (true, _) => SandboxStatus::Connected,
            (false, SandboxStatus::Connected) => SandboxStatus::Disconnected,
            (false, state) => state,
        };
        // A destroyed sandbox's stored name carries its id (to free the name).
        let suffix = format!("~{}", self.id);
        SandboxInfo {
            id: self.id.clone(),
            name: self
                .name
                .strip_suffix(&suffix)
                .unwrap_or(&self.name)
                .to_owned(),
            labels: self.labels.clone(),
            status,
            reason: (status == SandboxStatus::Failed)
                .then(|| self.state_reason.clone())
                .flatten(),
            provider: self.provider.clone(),
            size: self.size.clone(),
            created_at: self.created_at.clone(),
            last_seen_at: last_seen_at.or_else(|| self.last_seen_at.clone()),
            agent_version: self.agent_version.clone(),
        }
    }
}

/// A session as stored; live details (offset, viewers) come from the fan-out.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: SessionId,
    pub tenant_id: String,
    pub sandbox_id: SandboxId,
    pub command: Option<String>,
    pub args: Vec<String>,
    pub size: TermSize,
    pub state: SessionState,
    pub created_at: String,
    pub ended_at: Option<String>,
    pub exit: Option<ExitStatus>,
    /// The durable end of the output stream: everything below is stored.
    pub end_offset: u64,
}

/// SQLite's `synchronous` setting: how hard a commit pushes data to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync on every commit: committed output survives a power cut.
    Full,
    /// fsync at WAL checkpoints: committed output survives the control plane
    /// being killed, not necessarily the machine losing power.
    Normal,
    /// No fsync at all (benchmarks only).
    Off,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
            Durability::Off => "off",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            "off" => Ok(Durability::Off),
            other => Err(format!("`{other}` is not one of full, normal, off")),
        }
    }
}

/// Which database a store speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Tenant-scoped storage: what request handlers and agent connections use.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Opens the database at `url` (a `sqlite://` path or a `postgres://` URL),
/// applies migrations, and returns the tenant-scoped store and the system
/// store. On PostgreSQL the two use separate pools, as `paddock_app` and
/// `paddock_system`.
pub async fn open(url: &str, durability: Durability) -> Result<(Store, SystemStore)> {
    let _timed = QueryTimer::start("open");
    sqlx::any::install_default_drivers();
    let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    match backend {
        Backend::Sqlite => {
            let url = if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            let pool = sqlite_pool(&url, durability).await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            let store = Store {
                pool: pool.clone(),
                backend,
            };
            store.ensure_tenant(DEFAULT_TENANT).await?;
            Ok((store, SystemStore::new(pool, backend)))
        }
        Backend::Postgres => {
            let owner = AnyPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await?;
            POSTGRES_MIGRATIONS.run(&owner).await?;
            owner.close().await;
            let app = pg_pool(url, "paddock_app", 16).await?;
            let system = pg_pool(url, "paddock_system", 4).await?;
            let store = Store { pool: app, backend };
            let system = SystemStore::new(system, backend);
            system.ensure_tenant(DEFAULT_TENANT).await?;
            Ok((store, system))
        }
    }
}

async fn sqlite_pool(url: &str, durability: Durability) -> Result<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL".to_owned(),
                    format!("PRAGMA synchronous = {}", durability.as_str()),
                    "PRAGMA foreign_keys = ON".to_owned(),
                    "PRAGMA busy_timeout = 5000".to_owned(),
                ] {
                    sqlx::query(&pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?;
    Ok(pool)
}

/// A pool whose connections act as `role` (`SET ROLE` right after connecting).
async fn pg_pool(url: &str, role: &'static str, max: u32) -> Result<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                sqlx::query(&format!("SET ROLE {role}"))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    Ok(pool)
}

/// The SQLite URL for a data directory.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("paddock.db").display())
}

impl Store {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One round trip to the database.
    pub async fn ping(&self) -> Result<()> {
        let _timed = QueryTimer::start("ping");
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A transaction in which every statement sees only `tenant`'s rows
    /// (enforced by row-level security on PostgreSQL).
    pub async fn begin(&self, tenant: &str) -> Result<Transaction<'static, Any>> {
        let _timed = QueryTimer::start("begin");
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    async fn ensure_tenant(&self, name: &str) -> Result<()> {
        let mut tx = self.begin(name).await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers a sandbox and returns it with its agentd token (shown
    /// once, stored hashed): by hand (`provider` `None`, state
    /// `disconnected`) or for a provider to run (state `provisioning`).
    pub async fn create_sandbox(
        &self,
        tenant_id: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        provider: Option<&str>,
    ) -> Result<(SandboxRow, String)> {
        let _timed = QueryTimer::start("create_sandbox");
        self.insert_sandbox(tenant_id, name, labels, provider, None)
            .await
    }

    /// Replaces a sandbox's agentd token; the old one stops working at once.
    pub async fn rotate_sandbox_token(&self, tenant_id: &str, id: &SandboxId) -> Result<String> {
        let _timed = QueryTimer::start("rotate_sandbox_token");
        let token = new_token(TokenKind::Sandbox);
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query("UPDATE sandboxes SET token_hash = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(hash_token(&token))
            .bind(tenant_id)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(token)
    }

    pub async fn list_sandboxes(&self, tenant_id: &str) -> Result<Vec<SandboxRow>> {
        let _timed = QueryTimer::start("list_sandboxes");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(&format!(
            "{SANDBOX_COLUMNS} WHERE tenant_id = $1 AND state <> 'destroyed' ORDER BY created_at, name"
        ))
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    /// Finds a sandbox of the tenant by id or, failing that, by name.
    pub async fn find_sandbox(
        &self,
        tenant_id: &str,
        id_or_name: &str,
    ) -> Result<Option<SandboxRow>> {
        let _timed = QueryTimer::start("find_sandbox");
        let mut tx = self.begin(tenant_id).await?;
        let row = sqlx::query(&format!(
            "{SANDBOX_COLUMNS} WHERE tenant_id = $1 AND (id = $2 OR name = $2)
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(tenant_id)
        .bind(id_or_name)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| sandbox_from_row(&r)).transpose()
    }

    pub async fn touch_sandbox(
        &self,
        tenant_id: &str,
        id: &SandboxId,
        last_seen_at: &str,
        agent_version: Option<&str>,
    ) -> Result<()> {
        let _timed = QueryTimer::start("touch_sandbox");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query(
            "UPDATE sandboxes SET last_seen_at = $1, agent_version = COALESCE($2, agent_version)
             WHERE tenant_id = $3 AND id = $4",
        )
        .bind(last_seen_at)
        .bind(agent_version)
        .bind(tenant_id)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_session(
        &self,
        sandbox: &SandboxRow,
        command: Option<&str>,
        args: &[String],
        size: TermSize,
    ) -> Result<SessionRow> {
        let _timed = QueryTimer::start("create_session");
        let created_at = now_rfc3339();
        let args_json =
            serde_json::to_string(args).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.begin(&sandbox.tenant_id).await?;
        let row = sqlx::query(
            "INSERT INTO sessions (tenant_id, sandbox_id, command, args, cols, rows, state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'starting', $7) RETURNING id",
        )
        .bind(&sandbox.tenant_id)
        .bind(sandbox.id.as_str())
        .bind(command)
        .bind(&args_json)
        .bind(i64::from(size.cols))
        .bind(i64::from(size.rows))
        .bind(&created_at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SessionRow {
            id: SessionId(row.try_get::<i64, _>("id")? as u64),
            tenant_id: sandbox.tenant_id.clone(),
            sandbox_id: sandbox.id.clone(),
            command: command.map(str::to_owned),
            args: args.to_vec(),
            size,
            state: SessionState::Starting,
            created_at,
            ended_at: None,
            exit: None,
            end_offset: 0,
        })
    }

    pub async fn set_session_state(
        &self,
        tenant_id: &str,
        id: SessionId,
        state: SessionState,
    ) -> Result<()> {
        let _timed = QueryTimer::start("set_session_state");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query("UPDATE sessions SET state = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(state_str(state))
            .bind(tenant_id)
            .bind(id.0 as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_session_size(
        &self,
        tenant_id: &str,
        id: SessionId,
        size: TermSize,
    ) -> Result<()> {
        let _timed = QueryTimer::start("set_session_size");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query("UPDATE sessions SET cols = $1, rows = $2 WHERE tenant_id = $3 AND id = $4")
            .bind(i64::from(size.cols))
            .bind(i64::from(size.rows))
            .bind(tenant_id)
            .bind(id.0 as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records how a session ended. `status` is `None` when it was lost.
    /// (Exits reported by agentd are recorded with the output, in
    /// [`Store::write_output`], so they are never stored ahead of it.)
    pub async fn finish_session(
        &self,
        tenant_id: &str,
        id: SessionId,
        status: Option<ExitStatus>,
        end_offset: u64,
    ) -> Result<()> {
        let _timed = QueryTimer::start("finish_session");
        let state = if status.is_some() {
            SessionState::Exited
        } else {
            SessionState::Lost
        };
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query(
            "UPDATE sessions SET state = $1, ended_at = $2, exit_code = $3, exit_signal = $4, end_offset = $5
             WHERE tenant_id = $6 AND id = $7",
        )
        .bind(state_str(state))
        .bind(now_rfc3339())
        .bind(status.and_then(|s| s.code).map(i64::from))
        .bind(status.and_then(|s| s.signal).map(i64::from))
        .bind(end_offset as i64)
        .bind(tenant_id)
        .bind(id.0 as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_sessions(
        &self,
        tenant_id: &str,
        sandbox: &SandboxId,
    ) -> Result<Vec<SessionRow>> {
        let _timed = QueryTimer::start("list_sessions");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(&format!(
            "{SESSION_COLUMNS} WHERE tenant_id = $1 AND sandbox_id = $2 ORDER BY id"
        ))
        .bind(tenant_id)
        .bind(sandbox.as_str())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(session_from_row).collect()
    }

    pub async fn get_session(
        &self,
        tenant_id: &str,
        sandbox: &SandboxId,
        id: SessionId,
    ) -> Result<Option<SessionRow>> {
        let _timed = QueryTimer::start("get_session");
        let mut tx = self.begin(tenant_id).await?;
        let row = sqlx::query(&format!(
            "{SESSION_COLUMNS} WHERE tenant_id = $1 AND sandbox_id = $2 AND id = $3"
        ))
        .bind(tenant_id)
        .bind(sandbox.as_str())
        .bind(id.0 as i64)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| session_from_row(&r)).transpose()
    }

    /// Sessions of a sandbox not known to have ended.
    pub async fn unfinished_sessions(
        &self,
        tenant_id: &str,
        sandbox: &SandboxId,
    ) -> Result<Vec<SessionRow>> {
        let _timed = QueryTimer::start("unfinished_sessions");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(&format!(
            "{SESSION_COLUMNS} WHERE tenant_id = $1 AND sandbox_id = $2
             AND state IN ('starting', 'running') ORDER BY id"
        ))
        .bind(tenant_id)
        .bind(sandbox.as_str())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(session_from_row).collect()
    }
}

const SANDBOX_COLUMNS: &str = "SELECT id, tenant_id, name, labels, created_at, last_seen_at,
     agent_version, state, state_reason, provider, resource_id, size FROM sandboxes";

const SESSION_COLUMNS: &str = "SELECT id, tenant_id, sandbox_id, command, args, cols, rows, state,
     created_at, ended_at, exit_code, exit_signal, stored_offset AS end_offset FROM sessions";

fn sandbox_from_row(row: &AnyRow) -> Result<SandboxRow> {
    let labels: String = row.try_get("labels")?;
    let state: String = row.try_get("state")?;
    Ok(SandboxRow {
        id: SandboxId(row.try_get("id")?),
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        labels: serde_json::from_str(&labels).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        agent_version: row.try_get("agent_version")?,
        state: SandboxStatus::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("sandbox state {state}")))?,
        state_reason: row.try_get("state_reason")?,
        provider: row.try_get("provider")?,
        resource_id: row.try_get("resource_id")?,
        size: row.try_get("size")?,
    })
}

fn small(row: &AnyRow, column: &str) -> Result<u16> {
    let v: i64 = row.try_get(column)?;
    u16::try_from(v).map_err(|_| StoreError::Corrupt(format!("{column} = {v}")))
}

fn session_from_row(row: &AnyRow) -> Result<SessionRow> {
    let args: String = row.try_get("args")?;
    let state: String = row.try_get("state")?;
    let code: Option<i64> = row.try_get("exit_code")?;
    let signal: Option<i64> = row.try_get("exit_signal")?;
    let exit = (code.is_some() || signal.is_some()).then_some(ExitStatus {
        code: code.map(|c| c as i32),
        signal: signal.map(|s| s as i32),
    });
    Ok(SessionRow {
        id: SessionId(row.try_get::<i64, _>("id")? as u64),
        tenant_id: row.try_get("tenant_id")?,
        sandbox_id: SandboxId(row.try_get("sandbox_id")?),
        command: row.try_get("command")?,
        args: serde_json::from_str(&args).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        size: TermSize {
            cols: small(row, "cols")?,
            rows: small(row, "rows")?,
        },
        state: parse_state(&state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
        created_at: row.try_get("created_at")?,
        ended_at: row.try_get("ended_at")?,
        exit,
        end_offset: row.try_get::<i64, _>("end_offset")? as u64,
    })
}

fn state_str(state: SessionState) -> &'static str {
    match state {
        SessionState::Starting => "starting",
        SessionState::Running => "running",
        SessionState::Exited => "exited",
        SessionState::Lost => "lost",
    }
}

fn parse_state(s: &str) -> Option<SessionState> {
    Some(match s {
        "starting" => SessionState::Starting,
        "running" => SessionState::Running,
        "exited" => SessionState::Exited,
        "lost" => SessionState::Lost,
        _ => return None,
    })
}

/// A random id with a type prefix, e.g. `sbx_3f9a…` (64 random bits, hex).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    crate::auth::fill_random(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_stores() -> (tempfile::TempDir, Store, SystemStore) {
        let dir = tempfile::tempdir().unwrap();
        let (store, system) = open(&sqlite_url(dir.path()), Durability::Normal)
            .await
            .unwrap();
        (dir, store, system)
    }

    async fn temp_store() -> (tempfile::TempDir, Store) {
        let (dir, store, _) = temp_stores().await;
        (dir, store)
    }

    #[tokio::test]
    async fn tokens_authenticate_only_by_their_hash() {
        let (_dir, _, store) = temp_stores().await;
        assert!(!store.has_api_tokens().await.unwrap());
        store
            .ensure_owner_token(DEFAULT_TENANT, "pdk_secret")
            .await
            .unwrap();
        store
            .ensure_owner_token(DEFAULT_TENANT, "pdk_secret")
            .await
            .unwrap();
        let who = store.authenticate_api("pdk_secret").await.unwrap().unwrap();
        assert_eq!(who.tenant_id, DEFAULT_TENANT);
        assert_eq!(who.role, paddock_protocol::admin::Role::Owner);
        assert!(store.authenticate_api("pdk_wrong").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sandboxes_are_found_by_id_or_name_and_names_are_unique() {
        let (_dir, store, system) = temp_stores().await;
        let labels = BTreeMap::new();
        let (sb, token) = store
            .create_sandbox(DEFAULT_TENANT, "alpha", &labels, None)
            .await
            .unwrap();
        assert!(token.starts_with("pds_"));
        let by_name = store
            .find_sandbox(DEFAULT_TENANT, "alpha")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_name.id, sb.id);
        let by_id = store
            .find_sandbox(DEFAULT_TENANT, sb.id.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_id.name, "alpha");
        assert!(store
            .find_sandbox("other", "alpha")
            .await
            .unwrap()
            .is_none());
        assert!(matches!(
            store
                .create_sandbox(DEFAULT_TENANT, "alpha", &labels, None)
                .await,
            Err(StoreError::DuplicateName(_))
        ));
        let authed = system.authenticate_sandbox(&token).await.unwrap().unwrap();
        assert_eq!(authed.id, sb.id);
        let rotated = store
            .rotate_sandbox_token(DEFAULT_TENANT, &sb.id)
            .await
            .unwrap();
        assert!(system.authenticate_sandbox(&token).await.unwrap().is_none());
        assert!(system
            .authenticate_sandbox(&rotated)
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn sessions_record_their_end() {
        let (_dir, store) = temp_store().await;
        let (sb, _) = store
            .create_sandbox(DEFAULT_TENANT, "s", &BTreeMap::new(), None)
            .await
            .unwrap();
        let s = store
            .create_session(
                &sb,
                Some("sh"),
                &["-c".into(), "exit 3".into()],
                TermSize::DEFAULT,
            )
            .await
            .unwrap();
        store
            .set_session_state(DEFAULT_TENANT, s.id, SessionState::Running)
            .await
            .unwrap();
        assert_eq!(
            store
                .unfinished_sessions(DEFAULT_TENANT, &sb.id)
                .await
                .unwrap()
                .len(),
            1
        );
        store
            .finish_session(DEFAULT_TENANT, s.id, Some(ExitStatus::code(3)), 42)
            .await
            .unwrap();
        let row = store
            .get_session(DEFAULT_TENANT, &sb.id, s.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state, SessionState::Exited);
        assert_eq!(row.exit, Some(ExitStatus::code(3)));
        // The durable end moves only with stored output, never with a claim.
        assert_eq!(row.end_offset, 0);
        assert_eq!(row.args, vec!["-c".to_owned(), "exit 3".to_owned()]);
        assert!(store
            .unfinished_sessions(DEFAULT_TENANT, &sb.id)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn output_is_read_back_byte_exact_with_its_gaps() {
        let (_dir, store) = temp_store().await;
        let (sb, _) = store
            .create_sandbox(DEFAULT_TENANT, "s", &BTreeMap::new(), None)
            .await
            .unwrap();
        let s = store
            .create_session(&sb, None, &[], TermSize::DEFAULT)
            .await
            .unwrap();
        let mut write = SessionWrite {
            tenant_id: DEFAULT_TENANT.into(),
            session_id: Some(s.id),
            ..SessionWrite::default()
        };
        write.push_data(0, b"hello ");
        write.push_data(6, b"world");
        write.push_gap(11, 20, "cap exceeded".into());
        write.push_data(20, b"!");
        write.exit = Some(ExitStatus::code(7));
        store.write_output(&[write]).await.unwrap();

        let row = store
            .get_session(DEFAULT_TENANT, &sb.id, s.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.end_offset, row.state, row.exit),
            (21, SessionState::Exited, Some(ExitStatus::code(7)))
        );
        let pieces = store
            .read_output(DEFAULT_TENANT, s.id, 3, 21, 1 << 20)
            .await
            .unwrap();
        let mut text = Vec::new();
        let mut gaps = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Data { data, .. } => text.extend_from_slice(&data),
                Piece::Gap { from, to, reason } => gaps.push((from, to, reason)),
            }
        }
        assert_eq!(text, b"lo world!".to_vec());
        assert_eq!(gaps, vec![(11, 20, "cap exceeded".to_owned())]);
        // Many small chunks before `from` do not hide the ones after it.
        let mut small = SessionWrite {
            tenant_id: DEFAULT_TENANT.into(),
            session_id: Some(s.id),
            ..SessionWrite::default()
        };
        small.stored_offset = 21;
        for i in 0..100u64 {
            small.chunks.push((21 + i, vec![b'x'], None));
        }
        store.write_output(&[small]).await.unwrap();
        let pieces = store
            .read_output(DEFAULT_TENANT, s.id, 120, 121, 1 << 20)
            .await
            .unwrap();
        assert!(
            matches!(&pieces[..], [Piece::Data { offset: 120, data, .. }] if &data[..] == b"x")
        );
        // A range that ends inside a chunk is cut there.
        let pieces = store
            .read_output(DEFAULT_TENANT, s.id, 0, 4, 1 << 20)
            .await
            .unwrap();
        assert!(
            matches!(&pieces[..], [Piece::Data { offset: 0, data, .. }] if &data[..] == b"hell")
        );
    }
}
