//! Prometheus metrics: the process-wide recorder and `GET /metrics`.
//!
//! Counters and histograms are recorded where things happen, through the
//! `metrics` macros and the names below; gauges of the hub's state are set
//! when `/metrics` is rendered. The recorder is global to the process (tests
//! run several control planes in one), so it is installed once and every
//! [`crate::App`] renders the same registry.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use paddock_protocol::tasks::TaskState;

use crate::store::SystemStore;
use crate::AppState;

pub const SANDBOXES_CONNECTED: &str = "paddock_sandboxes_connected";
pub const SESSIONS_LIVE: &str = "paddock_sessions_live";
/// Labelled `kind`: `agent`, `client` or `events`.
pub const WEBSOCKET_CONNECTIONS: &str = "paddock_websocket_connections";
/// Terminal output; labelled `direction`: `in` from agents, `out` to clients.
pub const OUTPUT_BYTES: &str = "paddock_output_bytes_total";
/// Keyboard input forwarded from driving clients to agents.
pub const INPUT_BYTES: &str = "paddock_input_bytes_total";
pub const STORED_BYTES: &str = "paddock_stored_bytes_total";
/// Labelled `route` (the path template), `method`, `status`.
pub const HTTP_REQUESTS: &str = "paddock_http_requests_total";
/// Labelled `route`, `method`.
pub const HTTP_REQUEST_DURATION: &str = "paddock_http_request_duration_seconds";
pub const WATCHER_SKIPS: &str = "paddock_watcher_skips_total";
/// Tasks reaching a final state; labelled `state`.
pub const TASKS: &str = "paddock_tasks_total";
/// Tasks in each state now, across tenants; labelled `state`.
pub const TASKS_BY_STATE: &str = "paddock_tasks";
/// Labelled `reason` (the refusal's code).
pub const GOVERNANCE_REFUSALS: &str = "paddock_governance_refusals_total";
/// Requests and connections refused by a configured limit; labelled `limit`
/// (see [`crate::admission::limit`]).
pub const LIMIT_REFUSALS: &str = "paddock_limit_refusals_total";
/// Output received from agents but not yet stored (so not yet acked), over
/// every live session, in bytes.
pub const ACK_LAG_BYTES: &str = "paddock_ack_lag_bytes";
/// Labelled `op` (the store method).
pub const STORE_QUERY_DURATION: &str = "paddock_store_query_duration_seconds";
/// Passes of the pools' upkeep (idle stops, pool minimums).
pub const POOL_PASSES: &str = "paddock_pool_passes_total";
/// Sandboxes stopped for being idle.
pub const IDLE_STOPS: &str = "paddock_idle_stops_total";

/// Buckets of the request-duration histogram, in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How often histogram samples are folded in when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use. `None` when another
/// recorder was installed first (by an embedding program): metrics are
/// then theirs, and `/metrics` says so.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(HTTP_BUCKETS) {
                Ok(builder) => builder,
                Err(err) => {
                    tracing::warn!(error = %err, "histogram buckets refused; using summaries");
                    PrometheusBuilder::new()
                }
            };
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::warn!(error = %err, "could not install the metrics recorder; /metrics is off");
                    None
                }
            }
        })
        .as_ref()
}

/// Folds histogram samples in periodically, so they do not pile up between
/// scrapes, until shutdown.
pub fn spawn_upkeep(shutdown: CancellationToken) {
    let Some(handle) = handle() else { return };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(UPKEEP_INTERVAL) => handle.run_upkeep(),
            }
        }
    });
}

/// Counts one open WebSocket of `kind` for as long as it lives.
#[derive(Debug)]
pub struct ConnectionGauge(&'static str);

impl ConnectionGauge {
    pub fn open(kind: &'static str) -> ConnectionGauge {
        metrics::gauge!(WEBSOCKET_CONNECTIONS, "kind" => kind).increment(1.0);
        ConnectionGauge(kind)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!(WEBSOCKET_CONNECTIONS, "kind" => self.0).decrement(1.0);
    }
}

/// Counts tasks by state across tenants for `/metrics`: the one
/// cross-tenant query the metrics handler may make.
#[derive(Debug, Clone)]
pub struct TaskCensus(SystemStore);

impl TaskCensus {
    pub fn new(system: SystemStore) -> Self {
        TaskCensus(system)
    }

    /// Sets the gauge of every state, zero for states no task is in.
    async fn record(&self) {
        match self.0.task_counts().await {
            Ok(counts) => {
                for state in TaskState::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == state.as_str())
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!(TASKS_BY_STATE, "state" => state.as_str()).set(n as f64);
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not count tasks for /metrics"),
        }
    }
}

/// `GET /metrics`: the Prometheus text exposition format.
pub async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = handle() else {
        return crate::error::ApiError::not_found(
            "metrics are not available: another metrics recorder is installed in this process",
        )
        .into_response();
    };
    metrics::gauge!(SANDBOXES_CONNECTED).set(state.hub.connected().len() as f64);
    metrics::gauge!(SESSIONS_LIVE).set(state.hub.live_sessions() as f64);
    metrics::gauge!(ACK_LAG_BYTES).set(state.hub.ack_lag() as f64);
    state.census.record().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
