//! Pools and the idle policy. A pool (`[[providers.pools]]`) is the
//! sandboxes of one tenant run by one provider and carrying the pool's
//! labels; it keeps at least `min` of them in existence and never more
//! than `max`. A task whose labels the pool's carry, finding no free
//! connected sandbox, makes the pool start a stopped member — before it
//! creates a new one. A provider-run sandbox with no open session and no
//! running task for `idle_stop_secs` (read on the injected clock) is stopped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use paddock_protocol::api::SandboxStatus;
use paddock_protocol::SandboxId;
use tracing::{info, warn};

use crate::providers::settings::Pool;
use crate::store::{SandboxRow, SystemStore};
use crate::{lifecycle, AppState};

/// How often the idle policy and pool minimums are checked.
const TICK: Duration = Duration::from_millis(500);
/// Every this many passes, sandboxes without a link are checked with their
/// provider (engines stop machines on their own: Fly's auto-stop, a
/// container killed from outside).
const SYNC_EVERY: u64 = 20;

/// Pool work in flight, so that a busy scheduler does not start the same
/// pool's sandboxes twice.
#[derive(Debug, Default)]
pub struct PoolsHandle {
    in_flight: Mutex<HashSet<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn carries(labels: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn provider_of<'a>(state: &'a AppState, pool: &'a Pool) -> &'a str {
    pool.provider
        .as_deref()
        .unwrap_or_else(|| state.config.providers.provider_for(&pool.tenant))
}

/// The pool's members among `rows` (the tenant's sandboxes), failed ones excepted.
fn members<'a>(state: &AppState, pool: &Pool, rows: &'a [SandboxRow]) -> Vec<&'a SandboxRow> {
    let provider = provider_of(state, pool);
    rows.iter()
        .filter(|row| {
            row.tenant_id == pool.tenant
                && row.provider.as_deref() == Some(provider)
                && carries(&row.labels, &pool.labels)
                && !matches!(row.state, SandboxStatus::Failed | SandboxStatus::Destroyed)
        })
        .collect()
}

/// Runs `work` for `pool` in the background unless work for it is in flight.
fn spawn_for_pool<F>(state: &AppState, pool: &Pool, work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let key = (pool.tenant.clone(), pool.name.clone());
    if !lock(&state.pools.in_flight).insert(key.clone()) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        work.await;
        lock(&state.pools.in_flight).remove(&key);
        state.scheduler.wake();
    });
}

async fn provision_member(state: &AppState, pool: &Pool) {
    let name = format!("{}-{}", pool.name, &crate::store::new_id("p")[2..10]);
    match lifecycle::provision(
        state,
        &pool.tenant,
        &name,
        &pool.labels,
        Some(provider_of(state, pool)),
        pool.size.as_deref(),
    )
    .await
    {
        Ok(row) => info!(sandbox.id = %row.id, pool = %pool.name, "pool sandbox created"),
        Err(err) => {
            warn!(pool = %pool.name, error = %err.body().error.message, "could not create a pool sandbox")
        }
    }
}

/// A task of `tenant` wants a sandbox carrying `labels` and none is free:
/// the first pool that can serve it starts a stopped member or, below its
/// `max`, creates one. Whether some pool took it up.
pub async fn on_demand(state: &AppState, tenant: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(pool) = state
        .config
        .providers
        .pools
        .iter()
        .find(|p| p.tenant == tenant && carries(&p.labels, labels))
        .cloned()
    else {
        return false;
    };
    let rows = match state.store.list_sandboxes(tenant).await {
        Ok(rows) => rows,
        Err(err) => {
            warn!(error = %err, "could not list sandboxes for a pool");
            return false;
        }
    };
    let members = members(state, &pool, &rows);
    let coming = members.iter().any(|row| {
        matches!(
            row.state,
            SandboxStatus::Provisioning | SandboxStatus::Starting
        ) && state.hub.link(&row.id).is_none()
    });
    if coming {
        return true; // One is on its way; its connection wakes the scheduler.
    }
    if let Some(stopped) = members.iter().find(|r| r.state == SandboxStatus::Stopped) {
        let row = (*stopped).clone();
        let st = state.clone();
        spawn_for_pool(state, &pool, async move {
            match lifecycle::start(&st, &row).await {
                Ok(_) => info!(sandbox.id = %row.id, "pool sandbox started on demand"),
                Err(err) => {
                    warn!(sandbox.id = %row.id, error = %err.body().error.message, "could not start a pool sandbox")
                }
            }
        });
        return true;
    }
    if members.len() < pool.max {
        let st = state.clone();
        let p = pool.clone();
        spawn_for_pool(state, &pool, async move { provision_member(&st, &p).await });
        return true;
    }
    false
}

pub fn spawn_upkeep(state: AppState, system: SystemStore) {
    tokio::spawn(async move {
        let mut idle_since: HashMap<SandboxId, i64> = HashMap::new();
        let mut passes = 0u64;
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            passes += 1;
            if passes % SYNC_EVERY == 1 {
                sync_observed(&state, &system).await;
            }
            stop_idle(&state, &system, &mut idle_since).await;
            keep_minimums(&state).await;
            metrics::counter!(crate::telemetry::POOL_PASSES).increment(1);
        }
    });
}

/// Stops provider-run sandboxes idle for longer than `idle_stop_secs`.
async fn stop_idle(
    state: &AppState,
    system: &SystemStore,
    idle_since: &mut HashMap<SandboxId, i64>,
) {
    let limit_ms = state.config.providers.idle_stop_secs as i64 * 1000;
    if limit_ms == 0 {
        return;
    }
    let now = state.config.clock.now_ms();
    let mut seen = HashSet::new();
    for provider in state.providers.all() {
        let Ok(rows) = system.provider_sandboxes(provider.name()).await else {
            continue;
        };
        for row in rows.into_iter().filter(|r| state.hub.link(&r.id).is_some()) {
            seen.insert(row.id.clone());
            let busy = state.scheduler.task_on(&row.id).is_some()
                || state
                    .store
                    .unfinished_sessions(&row.tenant_id, &row.id)
                    .await
                    .map_or(true, |s| !s.is_empty());
            if busy {
                idle_since.remove(&row.id);
                continue;
            }
            let since = *idle_since.entry(row.id.clone()).or_insert(now);
            if now - since >= limit_ms {
                idle_since.remove(&row.id);
                info!(sandbox.id = %row.id, idle_secs = (now - since) / 1000, "stopping an idle sandbox");
                metrics::counter!(crate::telemetry::IDLE_STOPS).increment(1);
                if let Err(err) = lifecycle::stop(state, &row).await {
                    warn!(sandbox.id = %row.id, error = %err.body().error.message, "could not stop an idle sandbox");
                }
            }
        }
    }
    idle_since.retain(|id, _| seen.contains(id));
}

/// Takes in what engines did by themselves to sandboxes no agent link here
/// vouches for: stopped (Fly's auto-stop) → `stopped`; broken or gone →
/// `failed` with the reason. A sandbox connected to another replica is
/// stored `connected` and left alone.
async fn sync_observed(state: &AppState, system: &SystemStore) {
    use crate::providers::{ObservedState, ProviderError};
    use crate::store::Transition;
    const UNVOUCHED: &[SandboxStatus] = &[SandboxStatus::Disconnected, SandboxStatus::Starting];
    for provider in state.providers.all() {
        let Ok(rows) = system.provider_sandboxes(provider.name()).await else {
            continue;
        };
        for row in rows {
            if !UNVOUCHED.contains(&row.state) || state.hub.link(&row.id).is_some() {
                continue;
            }
            let Some(resource) = &row.resource_id else {
                continue;
            };
            let (t, what, reason) = match provider.status(resource).await {
                Ok(ObservedState::Stopped) => (
                    Transition::to(SandboxStatus::Stopped),
                    "stopped",
                    String::new(),
                ),
                Ok(ObservedState::Failed(reason)) => (
                    Transition::failed(""),
                    "failed",
                    format!("the {} provider reports: {reason}", provider.name()),
                ),
                Err(ProviderError::NotFound(_)) => (
                    Transition::failed(""),
                    "failed",
                    format!(
                        "the {} provider no longer reports its resource {resource}",
                        provider.name()
                    ),
                ),
                _ => continue,
            };
            let t = Transition {
                from: UNVOUCHED,
                reason: (!reason.is_empty()).then_some(reason.as_str()),
                ..t
            };
            if let Ok(true) = state.store.transition(&row.tenant_id, &row.id, t).await {
                info!(sandbox.id = %row.id, state = what, %reason, "the provider changed a sandbox by itself");
                lifecycle::publish(state, &row, what, serde_json::json!({ "reason": reason }));
            }
        }
    }
}

/// Creates sandboxes in pools that have fewer than their `min`.
async fn keep_minimums(state: &AppState) {
    for pool in state.config.providers.pools.iter().filter(|p| p.min > 0) {
        let Ok(rows) = state.store.list_sandboxes(&pool.tenant).await else {
            continue;
        };
        let missing = pool.min.saturating_sub(members(state, pool, &rows).len());
        if missing > 0 {
            let st = state.clone();
            let p = pool.clone();
            spawn_for_pool(state, pool, async move {
                for _ in 0..missing {
                    provision_member(&st, &p).await;
                }
            });
        }
    }
}
