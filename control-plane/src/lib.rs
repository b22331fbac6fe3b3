//! Paddock's control plane: the agent hub that agentd connects to, the HTTP
//! API, session fan-out to watchers and drivers, and storage.
//!
//! [`App::open`] prepares state from a [`Config`]; [`App::serve`] serves a
//! bound listener until the shutdown token is cancelled. The binary and the
//! tests call the same functions. [`up`] adds local sandboxes for the
//! all-in-one embedded default.

mod agent_conn;
mod api;
mod auth;
mod clock;
pub mod config;
mod error;
mod fanout;
mod hub;
mod store;
mod stream;
pub mod up;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
use hub::Hub;
use store::Store;

/// Shared by every handler and connection task.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    hub: Arc<Hub>,
    config: Arc<Config>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// A control plane ready to serve.
pub struct App {
    state: AppState,
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
        let store = Store::open(&config.database_url())
            .await
            .with_context(|| format!("could not open database {}", config.database_url()))?;
        let mut generated_token = None;
        if !store.has_api_tokens().await? {
            let token = match &config.bootstrap_token {
                Some(token) => token.clone(),
                None => {
                    let token = auth::new_token(auth::TokenKind::Api);
                    generated_token = Some(token.clone());
                    token
                }
            };
            store.ensure_owner_token(&token).await?;
        }
        let state = AppState {
            store,
            hub: Arc::default(),
            config: Arc::new(config),
            shutdown,
            tracker: TaskTracker::new(),
        };
        Ok(App {
            state,
            generated_token,
        })
    }

    /// Serves HTTP and WebSockets on `listener` until shutdown is cancelled,
    /// then waits (at most 5 s) for connection tasks to finish.
    pub async fn serve(&self, listener: TcpListener) -> anyhow::Result<()> {
        let router = api::router().with_state(self.state.clone());
        let shutdown = self.state.shutdown.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("the HTTP server failed")?;
        self.state.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connection tasks still running after 5 s; exiting anyway");
        }
        Ok(())
    }
}
