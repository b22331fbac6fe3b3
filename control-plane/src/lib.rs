//! Paddock's control plane: the agent hub that agentd connects to, the HTTP
//! API, session fan-out to watchers and drivers, and storage.
//!
//! [`App::open`] prepares state from a [`Config`]; [`App::serve`] serves a
//! bound listener until the shutdown token is cancelled. The binary and the
//! tests call the same functions. [`up`] adds local sandboxes for the
//! all-in-one embedded default.

mod admin;
mod admission;
mod agent_conn;
mod api;
mod asciicast;
mod auth;
pub mod clock;
pub mod config;
mod console;
mod error;
mod events;
mod fanout;
pub mod governance;
mod hub;
mod lifecycle;
pub mod limits;
mod modes;
mod openapi;
mod persist;
mod pools;
pub mod providers;
mod ratelimit;
pub mod reconcile;
mod retention;
pub mod routes;
mod scheduler;
mod screen;
pub mod store;
mod stream;
mod tasks_api;
mod telemetry;
pub mod tls;
mod tools;
pub mod up;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use auth::{Authenticator, Tenants};
pub use config::Config;
use hub::Hub;
use store::Store;

/// Shared by every handler and connection task.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    auth: Authenticator,
    tenants: Tenants,
    events: events::EventBus,
    scheduler: Arc<scheduler::SchedulerHandle>,
    governance: governance::Governance,
    hub: Arc<Hub>,
    config: Arc<Config>,
    /// The enabled providers, by name.
    providers: Arc<providers::registry::Registry>,
    /// This control plane's URL for agentd, once the listener is bound.
    agent_url: providers::local::AgentUrl,
    pools: Arc<pools::PoolsHandle>,
    /// Request-rate limits per API token, checked by `routes::authorize`.
    rate_limit: Arc<ratelimit::ApiRateLimiter>,
    /// Connection, session, watcher, size and message-rate limits.
    admission: Arc<admission::Admission>,
    /// Tasks by state, for `/metrics`.
    census: telemetry::TaskCensus,
    /// Output and exits on their way to the store, in arrival order.
    tx_persist: tokio::sync::mpsc::Sender<persist::PersistMsg>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// A control plane ready to serve.
pub struct App {
    state: AppState,
    /// What reconciling the providers with the database did at start-up.
    pub reconciled: reconcile::Reconciled,
    persister: tokio::task::JoinHandle<()>,
    /// The owner token generated on a fresh database, to be shown once.
    pub generated_token: Option<String>,
}

impl App {
    /// Opens the database (creating the data directory), applies migrations
    /// and, on a fresh database, creates the owner's API token.
    pub async fn open(config: Config, shutdown: CancellationToken) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "could not create data directory {}",
                config.data_dir.display()
            )
        })?;
        let (store, system) = store::open(&config.database_url(), config.sqlite_synchronous)
            .await
            .with_context(|| {
                format!(
                    "could not open database {}",
                    redact_url(&config.database_url())
                )
            })?;
        let mut generated_token = None;
        if !system.has_api_tokens().await? {
            let token = match &config.bootstrap_token {
                Some(token) => token.clone(),
                None => {
                    let token = auth::new_token(auth::TokenKind::Api);
                    generated_token = Some(token.clone());
                    token
                }
            };
            system
                .ensure_owner_token(store::DEFAULT_TENANT, &token)
                .await?;
        }
        if let Some(token) = &config.owner_token {
            system
                .ensure_owner_token(store::DEFAULT_TENANT, token)
                .await?;
        }
        let hub: Arc<Hub> = Arc::default();
        let (tx_persist, rx_persist) = tokio::sync::mpsc::channel(persist::PERSIST_QUEUE);
        let persister =
            persist::spawn_persister(store.clone(), hub.clone(), rx_persist, shutdown.clone());
        retention::spawn_retention(
            system.clone(),
            store.clone(),
            Duration::from_secs(config.retention_interval_secs),
            shutdown.clone(),
        );
        telemetry::spawn_upkeep(shutdown.clone());
        let governance = governance::Governance::new(store.clone());
        let owner = system
            .owner_id()
            .await
            .context("could not read the deployment's owner id")?;
        // Known now when the port is fixed (re-adopted children are pointed
        // at it); otherwise once the listener is bound, in `serve`.
        let agent_url = providers::local::AgentUrl::default();
        if config.listen.port() != 0 {
            *agent_url.write().unwrap_or_else(|e| e.into_inner()) =
                Some(config.base_url(config.listen));
        }
        let registry =
            providers::registry::build(&config, &owner, agent_url.clone(), &shutdown).await?;
        let state = AppState {
            store,
            auth: Authenticator::new(system.clone()),
            tenants: Tenants::new(system.clone()),
            census: telemetry::TaskCensus::new(system.clone()),
            events: events::EventBus::default(),
            scheduler: Arc::default(),
            governance,
            hub,
            rate_limit: Arc::new(ratelimit::ApiRateLimiter::new(
                config.api_rate_per_sec,
                config.api_burst,
            )),
            admission: Arc::new(admission::Admission::new(config.limits.clone())),
            config: Arc::new(config),
            providers: Arc::new(registry),
            agent_url,
            pools: Arc::default(),
            tx_persist,
            shutdown,
            tracker: TaskTracker::new(),
        };
        let reconciled = reconcile::reconcile(&state, &system).await;
        pools::spawn_upkeep(state.clone(), system.clone());
        let instance = instance_id(&state.config.data_dir)?;
        scheduler::spawn_scheduler(state.clone(), system, instance);
        Ok(App {
            state,
            reconciled,
            persister,
            generated_token,
        })
    }

    /// Serves HTTP and WebSockets on `listener` (HTTPS and `wss://` when
    /// the config names a certificate) until shutdown is cancelled, then
    /// waits (at most 5 s) for connection tasks to finish.
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        let url = self.state.config.base_url(listener.local_addr()?);
        *self
            .state
            .agent_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(url);
        let router = routes::router(self.state.clone());
        let shutdown = self.state.shutdown.clone();
        let stopped = async move { shutdown.cancelled().await };
        let served = match self.state.config.tls() {
            Some((cert, key)) => {
                let tls = tls::server_config(cert, key)?;
                let listener = tls::TlsListener::new(listener, tls)
                    .context("could not start the TLS listener")?;
                // With the peer's address, for the per-IP connection limit.
                let service = router.into_make_service_with_connect_info::<admission::PeerAddr>();
                axum::serve(listener, service)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            None => {
                // Keystrokes and echoes are tiny writes: Nagle would hold them for an ACK.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
                axum::serve(listener, service)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        served.context("the HTTP server failed")?;
        self.state.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connection tasks still running after 5 s; exiting anyway");
        }
        // Agent connections are gone: the persister stores what is queued and stops.
        drop(self.state);
        if tokio::time::timeout(Duration::from_secs(10), self.persister)
            .await
            .is_err()
        {
            tracing::warn!("output still queued for the store after 10 s; exiting anyway");
        }
        Ok(())
    }
}

/// A database URL fit for logs: the password, if any, replaced.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:<redacted>{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// This control plane's identity for task claims: kept in the data directory,
/// so a restart recognises the attempts it had running.
fn instance_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance.id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = store::new_id("cp");
    std::fs::write(&path, &id).with_context(|| format!("could not write {}", path.display()))?;
    Ok(id)
}
