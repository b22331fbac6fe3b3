//! Governance keeps every agent inside its limits: quotas on governed
//! actions (pushes, task executions) in rolling windows, cost budgets per
//! hour and per day, and a reputation that restricts agents which fail too
//! often. Everything is decided from stored state, so limits hold across
//! restarts and replicas; nothing here knows about HTTP.
//!
//! Every decision takes the time as `now_ms` (milliseconds since the Unix
//! epoch) from the caller, so tests drive the clock and replicas agree on
//! what "the last hour" means. A rolling window of length `w` at `now` is
//! `(now - w, now]`: an action at `t` counts until `t + w` and no longer at
//! `t + w` exactly.
//!
//! Limits come from three levels: [`Limits::DEFAULT_AGENT`], overridden by
//! the tenant's [`LimitOverrides`], overridden by the agent's own. The tenant
//! level may also cap the tenant's total over all its agents (none by
//! default).
//!
//! Money is integer micro-dollars (`i64`, $1 = 1 000 000), never floats.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::governance::GovernanceTx;
use crate::store::{Store, StoreError};

pub const SECOND_MS: i64 = 1_000;
pub const HOUR_MS: i64 = 3_600 * SECOND_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
pub const MICROS_PER_DOLLAR: i64 = 1_000_000;

/// Every agent starts with this reputation.
pub const REPUTATION_START: i64 = 100;
/// Below this score an agent is restricted: its new tasks wait for approval.
/// The restriction follows the score both ways (no hysteresis): an approved
/// task that succeeds lifts the score, and at 50 or more the agent is free
/// again.
pub const REPUTATION_RESTRICTED_BELOW: i64 = 50;
/// Scores are clamped to `0..=REPUTATION_MAX`. The ceiling lets a long good
/// record count for something without letting it buy unlimited failures.
pub const REPUTATION_MAX: i64 = 1_000;

/// The effective limits of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pushes in any rolling hour.
    pub pushes_per_hour: u32,
    /// Task executions in any rolling 24 hours.
    pub executions_per_day: u32,
    /// Micro-dollars in any rolling hour.
    pub budget_hourly_micros: i64,
    /// Micro-dollars in any rolling 24 hours.
    pub budget_daily_micros: i64,
}

impl Limits {
    /// Where every agent starts: 10 pushes an hour, 100 executions a day,
    /// $2 an hour, $10 a day.
    pub const DEFAULT_AGENT: Limits = Limits {
        pushes_per_hour: 10,
        executions_per_day: 100,
        budget_hourly_micros: 2 * MICROS_PER_DOLLAR,
        budget_daily_micros: 10 * MICROS_PER_DOLLAR,
    };

    /// The defaults, overridden by the tenant's settings, overridden by the agent's.
    pub fn effective(tenant: &LimitOverrides, agent: &LimitOverrides) -> Limits {
        Limits::DEFAULT_AGENT.with(tenant).with(agent)
    }

    /// These limits with every field `overrides` sets replaced.
    pub fn with(self, overrides: &LimitOverrides) -> Limits {
        Limits {
            pushes_per_hour: overrides.pushes_per_hour.unwrap_or(self.pushes_per_hour),
            executions_per_day: overrides
                .executions_per_day
                .unwrap_or(self.executions_per_day),
            budget_hourly_micros: overrides
                .budget_hourly_micros
                .unwrap_or(self.budget_hourly_micros),
            budget_daily_micros: overrides
                .budget_daily_micros
                .unwrap_or(self.budget_daily_micros),
        }
    }

    pub fn quota(&self, action: Action) -> u32 {
        match action {
            Action::Push => self.pushes_per_hour,
            Action::TaskExecution => self.executions_per_day,
        }
    }

    pub fn budget(&self, window: BudgetWindow) -> i64 {
        match window {
            BudgetWindow::Hourly => self.budget_hourly_micros,
            BudgetWindow::Daily => self.budget_daily_micros,
        }
    }
}

/// Caps on a tenant's total over all its agents; `None` is no cap (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub pushes_per_hour: Option<u32>,
    pub executions_per_day: Option<u32>,
    pub budget_hourly_micros: Option<i64>,
    pub budget_daily_micros: Option<i64>,
}

impl TenantLimits {
    pub fn quota(&self, action: Action) -> Option<u32> {
        match action {
            Action::Push => self.pushes_per_hour,
            Action::TaskExecution => self.executions_per_day,
        }
    }

    pub fn budget(&self, window: BudgetWindow) -> Option<i64> {
        match window {
            BudgetWindow::Hourly => self.budget_hourly_micros,
            BudgetWindow::Daily => self.budget_daily_micros,
        }
    }
}

/// Limit settings of one level (a tenant, or one agent), stored as JSON.
/// Unset fields fall through to the level below. The `tenant_*` fields cap
/// the tenant's total and are accepted at the tenant level only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes_per_hour: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions_per_day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_hourly_micros: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_daily_micros: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_pushes_per_hour: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_executions_per_day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_budget_hourly_micros: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_budget_daily_micros: Option<i64>,
}

impl LimitOverrides {
    pub fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }

    /// The caps on the tenant's total these settings name.
    pub fn tenant_limits(&self) -> TenantLimits {
        TenantLimits {
            pushes_per_hour: self.tenant_pushes_per_hour,
            executions_per_day: self.tenant_executions_per_day,
            budget_hourly_micros: self.tenant_budget_hourly_micros,
            budget_daily_micros: self.tenant_budget_daily_micros,
        }
    }

    /// Rejects negative budgets, and tenant caps set on an agent.
    pub fn validate(&self, agent_level: bool) -> std::result::Result<(), String> {
        for (key, value) in [
            ("budget_hourly_micros", self.budget_hourly_micros),
            ("budget_daily_micros", self.budget_daily_micros),
            (
                "tenant_budget_hourly_micros",
                self.tenant_budget_hourly_micros,
            ),
            (
                "tenant_budget_daily_micros",
                self.tenant_budget_daily_micros,
            ),
        ] {
            if value.is_some_and(|v| v < 0) {
                return Err(format!("`{key}` must not be negative"));
            }
        }
        if agent_level && self.tenant_limits() != TenantLimits::default() {
            return Err(
                "`tenant_*` limits cap a whole tenant and are set at the tenant level".to_owned(),
            );
        }
        Ok(())
    }
}

/// An action that counts against a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Push,
    TaskExecution,
}

impl Action {
    pub const ALL: [Action; 2] = [Action::Push, Action::TaskExecution];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::TaskExecution => "task_execution",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The rolling window its quota counts over.
    pub fn window_ms(self) -> i64 {
        match self {
            Action::Push => HOUR_MS,
            Action::TaskExecution => DAY_MS,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Action::Push => "pushes",
            Action::TaskExecution => "task executions",
        }
    }

    /// The setting that raises its quota.
    fn setting(self) -> &'static str {
        match self {
            Action::Push => "pushes_per_hour",
            Action::TaskExecution => "executions_per_day",
        }
    }
}

/// Whose limit refused: the agent's own, or its tenant's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Agent,
    Tenant,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Agent => "agent",
            Scope::Tenant => "tenant",
        }
    }

    fn setting_prefix(self) -> &'static str {
        match self {
            Scope::Agent => "",
            Scope::Tenant => "tenant_",
        }
    }
}

/// The two budget windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetWindow {
    Hourly,
    Daily,
}

impl BudgetWindow {
    pub const ALL: [BudgetWindow; 2] = [BudgetWindow::Hourly, BudgetWindow::Daily];

    pub fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::Hourly => "hourly",
            BudgetWindow::Daily => "daily",
        }
    }

    pub fn window_ms(self) -> i64 {
        match self {
            BudgetWindow::Hourly => HOUR_MS,
            BudgetWindow::Daily => DAY_MS,
        }
    }

    fn spent(self, spent: Spent) -> i64 {
        match self {
            BudgetWindow::Hourly => spent.hourly_micros,
            BudgetWindow::Daily => spent.daily_micros,
        }
    }
}

/// Why governance said no. `code()` is stable for machines; `Display` says
/// what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `limit` actions already in the last `window_secs`. `retry_after_secs`
    /// is when the oldest one that matters leaves the window (`None` when the
    /// limit is 0 and waiting cannot help).
    QuotaExceeded {
        scope: Scope,
        action: Action,
        limit: u32,
        window_secs: u64,
        retry_after_secs: Option<u64>,
    },
    /// At least the budget already spent in the window: a budget is used up
    /// once spending reaches it. `retry_after_secs` is when enough spending
    /// has left the window, if no more is recorded.
    BudgetExceeded {
        scope: Scope,
        window: BudgetWindow,
        spent_micros: i64,
        limit_micros: i64,
        retry_after_secs: Option<u64>,
    },
    /// The agent's reputation is below the threshold: its new tasks need approval.
    Restricted { reputation: i64 },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::QuotaExceeded { .. } => "quota_exceeded",
            Refusal::BudgetExceeded { .. } => "budget_exceeded",
            Refusal::Restricted { .. } => "agent_restricted",
        }
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::QuotaExceeded {
                retry_after_secs, ..
            }
            | Refusal::BudgetExceeded {
                retry_after_secs, ..
            } => *retry_after_secs,
            Refusal::Restricted { .. } => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::QuotaExceeded {
                scope,
                action,
                limit,
                window_secs,
                retry_after_secs,
            } => {
                let whose = match scope {
                    Scope::Agent => "this agent",
                    Scope::Tenant => "this tenant's agents together",
                };
                write!(
                    f,
                    "quota exceeded: {whose} may make at most {limit} {} in any {}; ",
                    action.plural(),
                    window(*window_secs)
                )?;
                if let Some(secs) = retry_after_secs {
                    write!(f, "retry in {secs} s, or ")?;
                }
                write!(
                    f,
                    "ask an admin to raise `{}{}`",
                    scope.setting_prefix(),
                    action.setting()
                )
            }
            Refusal::BudgetExceeded {
                scope,
                window,
                spent_micros,
                limit_micros,
                retry_after_secs,
            } => {
                let whose = match scope {
                    Scope::Agent => "this agent",
                    Scope::Tenant => "this tenant's agents",
                };
                write!(
                    f,
                    "budget exceeded: {whose} spent {} in the last {}, and the {} budget is {}; ",
                    dollars(*spent_micros),
                    match window {
                        BudgetWindow::Hourly => "hour",
                        BudgetWindow::Daily => "24 hours",
                    },
                    window.as_str(),
                    dollars(*limit_micros),
                )?;
                if let Some(secs) = retry_after_secs {
                    write!(f, "retry in {secs} s, or ")?;
                }
                write!(
                    f,
                    "ask an admin to raise `{}budget_{}_micros`",
                    scope.setting_prefix(),
                    window.as_str()
                )
            }
            Refusal::Restricted { reputation } => write!(
                f,
                "agent restricted: its reputation is {reputation}, below \
                 {REPUTATION_RESTRICTED_BELOW}; its new tasks wait for an admin's approval \
                 (each success raises the reputation by {})",
                Outcome::Success.delta()
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// "60 minutes", "24 hours", else seconds.
fn window(secs: u64) -> String {
    match secs {
        s if s % 3_600 == 0 && s >= 86_400 => format!("{} hours", s / 3_600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// Micro-dollars as dollars: `$2.10`, `$0.000001`.
pub fn dollars(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let whole = abs / MICROS_PER_DOLLAR as u64;
    let frac = format!("{:06}", abs % MICROS_PER_DOLLAR as u64);
    let frac = frac.trim_end_matches('0');
    format!("{sign}${whole}.{frac:0<2}")
}

/// What happened to an agent's work, and what it does to its reputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    CostOverrun,
}

impl Outcome {
    pub fn delta(self) -> i64 {
        match self {
            Outcome::Success => 10,
            Outcome::Failure => -5,
            Outcome::CostOverrun => -20,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::CostOverrun => "cost_overrun",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Success, Outcome::Failure, Outcome::CostOverrun]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// The score after `outcome`, clamped to `0..=REPUTATION_MAX`.
pub fn next_score(before: i64, outcome: Outcome) -> i64 {
    before
        .saturating_add(outcome.delta())
        .clamp(0, REPUTATION_MAX)
}

pub fn is_restricted(score: i64) -> bool {
    score < REPUTATION_RESTRICTED_BELOW
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReputationChange {
    pub before: i64,
    pub after: i64,
    pub restricted: bool,
}

/// One stored change of reputation. `delta` is the change actually applied
/// (after clamping), so the deltas add up to the score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReputationEvent {
    pub at_ms: i64,
    pub outcome: Outcome,
    pub delta: i64,
    pub reason: String,
    pub score_after: i64,
}

/// What a cost was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostKind {
    LlmTokens,
    ApiCall,
    Storage,
    SandboxTime,
}

impl CostKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CostKind::LlmTokens => "llm_tokens",
            CostKind::ApiCall => "api_call",
            CostKind::Storage => "storage",
            CostKind::SandboxTime => "sandbox_time",
        }
    }

    pub fn parse(s: &str) -> Option<CostKind> {
        [
            CostKind::LlmTokens,
            CostKind::ApiCall,
            CostKind::Storage,
            CostKind::SandboxTime,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The cost of `seconds` of sandbox time at `micros_per_hour`, rounded up to
/// the next micro-dollar (so that many short runs never add up to free
/// time); `None` if it does not fit in an `i64`.
pub fn sandbox_time_micros(seconds: u64, micros_per_hour: i64) -> Option<i64> {
    let rate = u128::try_from(micros_per_hour).ok()?;
    let micros = (u128::from(seconds) * rate).div_ceil(3_600);
    i64::try_from(micros).ok()
}

/// Micro-dollars spent in the rolling hour and the rolling 24 hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub hourly_micros: i64,
    pub daily_micros: i64,
}

/// What [`Governance::record_cost`] did: the agent's spending including the
/// new cost, and the reputation penalty if this cost pushed it over a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostRecorded {
    pub spent: Spent,
    pub overrun: Option<ReputationChange>,
}

/// Everything about an agent's governance, for `paddock agents show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    pub reputation: i64,
    pub restricted: bool,
    pub limits: Limits,
    pub tenant_limits: TenantLimits,
    pub spent: Spent,
    /// Pushes in the rolling hour.
    pub pushes_in_window: u64,
    /// Task executions in the rolling 24 hours.
    pub executions_in_window: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Bad input from the caller (a negative cost, a misplaced limit).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GovernanceError {
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            GovernanceError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, GovernanceError>;

/// Whole seconds from `now_ms` until `free_at_ms`, rounded up.
fn secs_until(free_at_ms: i64, now_ms: i64) -> u64 {
    let ms = free_at_ms.saturating_sub(now_ms).max(0) as u64;
    ms.div_ceil(SECOND_MS as u64)
}

/// When spending of `spent` (the sum of `costs`, oldest first, in the
/// window) falls below `limit` if nothing more is spent: when the cost that
/// tips it leaves the window.
fn budget_frees_at(costs: &[(i64, i64)], spent: i64, limit: i64, window_ms: i64) -> Option<i64> {
    let mut remaining = spent;
    for &(at_ms, micros) in costs {
        remaining -= micros;
        if remaining < limit {
            return Some(at_ms + window_ms);
        }
    }
    None
}

/// Quotas, budgets and reputation on the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Governance {
    store: Store,
}

impl Governance {
    pub fn new(store: Store) -> Governance {
        Governance { store }
    }

    /// Replaces the overrides of a tenant (`agent_id` `None`) or of one agent.
    /// Empty overrides clear that level.
    pub async fn set_limits(
        &self,
        tenant: &str,
        agent_id: Option<&str>,
        overrides: &LimitOverrides,
    ) -> Result<()> {
        overrides
            .validate(agent_id.is_some())
            .map_err(GovernanceError::Invalid)?;
        self.store
            .set_governance_limits(tenant, agent_id, overrides)
            .await?;
        Ok(())
    }

    /// The overrides set at one level (what an admin wrote), not the effective limits.
    pub async fn limit_overrides(
        &self,
        tenant: &str,
        agent_id: Option<&str>,
    ) -> Result<LimitOverrides> {
        let mut tx = self.store.governance_read(tenant).await?;
        let (tenant_level, agent_level) = tx.limit_overrides(agent_id).await?;
        tx.commit().await?;
        Ok(match agent_id {
            Some(_) => agent_level,
            None => tenant_level,
        })
    }

    /// The agent's effective limits.
    pub async fn limits(&self, tenant: &str, agent_id: &str) -> Result<Limits> {
        let mut tx = self.store.governance_read(tenant).await?;
        let (limits, _) = limits_in(&mut tx, agent_id).await?;
        tx.commit().await?;
        Ok(limits)
    }

    /// The caps on the tenant's total.
    pub async fn tenant_limits(&self, tenant: &str) -> Result<TenantLimits> {
        let mut tx = self.store.governance_read(tenant).await?;
        let (tenant_level, _) = tx.limit_overrides(None).await?;
        tx.commit().await?;
        Ok(tenant_level.tenant_limits())
    }

    /// Whether `action` would pass the agent's and the tenant's quotas now.
    /// Only advisory: use [`Governance::try_action`] to take a slot.
    pub async fn check_action(
        &self,
        tenant: &str,
        agent_id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.store.governance_read(tenant).await?;
        let (limits, tenant_limits) = limits_in(&mut tx, agent_id).await?;
        quota_in(&mut tx, agent_id, action, &limits, &tenant_limits, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records `action` without asking (it happened anyway).
    pub async fn record_action(
        &self,
        tenant: &str,
        agent_id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.store.governance_read(tenant).await?;
        tx.insert_action(agent_id, action, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks the quotas and records `action` in one transaction under the
    /// agent's lock (and the tenant's, if the tenant caps this action), so
    /// that of concurrent callers on any replicas only as many pass as
    /// there are slots.
    pub async fn try_action(
        &self,
        tenant: &str,
        agent_id: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write(tenant, agent_id).await?;
        let (limits, tenant_limits) = limits_in(&mut tx, agent_id).await?;
        take_slot_in(&mut tx, agent_id, action, &limits, &tenant_limits, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether the agent and its tenant are within their budgets now.
    pub async fn check_budget(&self, tenant: &str, agent_id: &str, now_ms: i64) -> Result<()> {
        let mut tx = self.store.governance_read(tenant).await?;
        let (limits, tenant_limits) = limits_in(&mut tx, agent_id).await?;
        budget_in(&mut tx, agent_id, &limits, &tenant_limits, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fails with [`Refusal::Restricted`] if the agent's new tasks need approval.
    pub async fn check_restricted(&self, tenant: &str, agent_id: &str) -> Result<()> {
        let (reputation, restricted) = self.reputation(tenant, agent_id).await?;
        if restricted {
            return Err(Refusal::Restricted { reputation }.into());
        }
        Ok(())
    }

    /// Admits one task execution of the agent, in one transaction: refused
    /// if the agent is restricted (unless an admin `approved` this task),
    /// over a budget, or out of executions; otherwise the execution is
    /// recorded against the quota.
    pub async fn admit_task(
        &self,
        tenant: &str,
        agent_id: &str,
        approved: bool,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write(tenant, agent_id).await?;
        let reputation = tx.reputation(agent_id).await?.unwrap_or(REPUTATION_START);
        if is_restricted(reputation) && !approved {
            return Err(Refusal::Restricted { reputation }.into());
        }
        let (limits, tenant_limits) = limits_in(&mut tx, agent_id).await?;
        budget_in(&mut tx, agent_id, &limits, &tenant_limits, now_ms).await?;
        take_slot_in(
            &mut tx,
            agent_id,
            Action::TaskExecution,
            &limits,
            &tenant_limits,
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a cost the agent incurred (always: it is spent). If it takes
    /// the agent's spending over its hourly or daily budget (from at or
    /// under to over), the agent is also charged one
    /// [`Outcome::CostOverrun`] in the same transaction; callers do not
    /// apply that outcome themselves.
    pub async fn record_cost(
        &self,
        tenant: &str,
        agent_id: &str,
        kind: CostKind,
        micros: i64,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<CostRecorded> {
        if micros < 0 {
            return Err(GovernanceError::Invalid(format!(
                "a cost must not be negative (got {micros} micro-dollars)"
            )));
        }
        let mut tx = self.write(tenant, agent_id).await?;
        let (limits, _) = limits_in(&mut tx, agent_id).await?;
        let before = spent_in(&mut tx, Some(agent_id), now_ms).await?;
        tx.insert_cost(agent_id, now_ms, kind, micros, note).await?;
        let after = Spent {
            hourly_micros: before.hourly_micros.saturating_add(micros),
            daily_micros: before.daily_micros.saturating_add(micros),
        };
        let crossed = BudgetWindow::ALL.into_iter().find(|w| {
            let limit = limits.budget(*w);
            w.spent(before) <= limit && w.spent(after) > limit
        });
        let overrun = match crossed {
            Some(window) => {
                let reason = format!(
                    "{} budget overrun: {} spent of {}",
                    window.as_str(),
                    dollars(window.spent(after)),
                    dollars(limits.budget(window))
                );
                Some(outcome_in(&mut tx, agent_id, Outcome::CostOverrun, &reason, now_ms).await?)
            }
            None => None,
        };
        tx.commit().await?;
        Ok(CostRecorded {
            spent: after,
            overrun,
        })
    }

    /// Records `seconds` of sandbox time at the caller's per-size rate.
    pub async fn record_sandbox_time(
        &self,
        tenant: &str,
        agent_id: &str,
        seconds: u64,
        micros_per_hour: i64,
        now_ms: i64,
    ) -> Result<CostRecorded> {
        let micros = sandbox_time_micros(seconds, micros_per_hour).ok_or_else(|| {
            GovernanceError::Invalid(format!(
                "{seconds} s at {micros_per_hour} micro-dollars an hour is not a valid cost"
            ))
        })?;
        let note = format!("{seconds} s at {} an hour", dollars(micros_per_hour));
        self.record_cost(
            tenant,
            agent_id,
            CostKind::SandboxTime,
            micros,
            Some(&note),
            now_ms,
        )
        .await
    }

    /// The agent's spending in the rolling hour and 24 hours.
    pub async fn spent(&self, tenant: &str, agent_id: &str, now_ms: i64) -> Result<Spent> {
        let mut tx = self.store.governance_read(tenant).await?;
        let spent = spent_in(&mut tx, Some(agent_id), now_ms).await?;
        tx.commit().await?;
        Ok(spent)
    }

    /// Applies `outcome` to the agent's reputation and stores the event with `reason`.
    pub async fn apply_outcome(
        &self,
        tenant: &str,
        agent_id: &str,
        outcome: Outcome,
        reason: &str,
        now_ms: i64,
    ) -> Result<ReputationChange> {
        let mut tx = self.write(tenant, agent_id).await?;
        let change = outcome_in(&mut tx, agent_id, outcome, reason, now_ms).await?;
        tx.commit().await?;
        Ok(change)
    }

    /// The agent's score and whether it is restricted (an agent never seen
    /// has the starting score).
    pub async fn reputation(&self, tenant: &str, agent_id: &str) -> Result<(i64, bool)> {
        let mut tx = self.store.governance_read(tenant).await?;
        let score = tx.reputation(agent_id).await?.unwrap_or(REPUTATION_START);
        tx.commit().await?;
        Ok((score, is_restricted(score)))
    }

    /// The agent's latest reputation events, newest first.
    pub async fn reputation_events(
        &self,
        tenant: &str,
        agent_id: &str,
        limit: u32,
    ) -> Result<Vec<ReputationEvent>> {
        Ok(self
            .store
            .reputation_events(tenant, agent_id, limit)
            .await?)
    }

    pub async fn status(&self, tenant: &str, agent_id: &str, now_ms: i64) -> Result<AgentStatus> {
        let mut tx = self.store.governance_read(tenant).await?;
        let reputation = tx.reputation(agent_id).await?.unwrap_or(REPUTATION_START);
        let (limits, tenant_limits) = limits_in(&mut tx, agent_id).await?;
        let spent = spent_in(&mut tx, Some(agent_id), now_ms).await?;
        let mut counts = [0; 2];
        for (count, action) in counts.iter_mut().zip(Action::ALL) {
            *count = tx
                .count_actions(Some(agent_id), action, now_ms - action.window_ms(), now_ms)
                .await?;
        }
        tx.commit().await?;
        Ok(AgentStatus {
            reputation,
            restricted: is_restricted(reputation),
            limits,
            tenant_limits,
            spent,
            pushes_in_window: counts[0],
            executions_in_window: counts[1],
        })
    }

    async fn write(&self, tenant: &str, agent_id: &str) -> Result<GovernanceTx> {
        Ok(self
            .store
            .governance_write(tenant, agent_id, REPUTATION_START)
            .await?)
    }
}

async fn limits_in(tx: &mut GovernanceTx, agent_id: &str) -> Result<(Limits, TenantLimits)> {
    let (tenant, agent) = tx.limit_overrides(Some(agent_id)).await?;
    Ok((Limits::effective(&tenant, &agent), tenant.tenant_limits()))
}

/// Refuses if `limit` actions are already in the window, saying when the
/// oldest one that matters leaves it.
async fn quota_one(
    tx: &mut GovernanceTx,
    scope: Scope,
    agent_id: Option<&str>,
    action: Action,
    limit: u32,
    now_ms: i64,
) -> Result<()> {
    let window_ms = action.window_ms();
    let since = now_ms - window_ms;
    let count = tx.count_actions(agent_id, action, since, now_ms).await?;
    if count < u64::from(limit) {
        return Ok(());
    }
    // With `count` in the window and room for `limit`, the one at index
    // `count - limit` (oldest first) must leave before another fits.
    let retry_after_secs = if limit == 0 {
        None
    } else {
        tx.action_at(agent_id, action, since, now_ms, count - u64::from(limit))
            .await?
            .map(|at| secs_until(at + window_ms, now_ms))
    };
    Err(Refusal::QuotaExceeded {
        scope,
        action,
        limit,
        window_secs: (window_ms / SECOND_MS) as u64,
        retry_after_secs,
    }
    .into())
}

async fn quota_in(
    tx: &mut GovernanceTx,
    agent_id: &str,
    action: Action,
    limits: &Limits,
    tenant_limits: &TenantLimits,
    now_ms: i64,
) -> Result<()> {
    quota_one(
        tx,
        Scope::Agent,
        Some(agent_id),
        action,
        limits.quota(action),
        now_ms,
    )
    .await?;
    if let Some(limit) = tenant_limits.quota(action) {
        quota_one(tx, Scope::Tenant, None, action, limit, now_ms).await?;
    }
    Ok(())
}

/// [`quota_in`] and, if it passes, the action recorded; the caller holds the agent's lock.
async fn take_slot_in(
    tx: &mut GovernanceTx,
    agent_id: &str,
    action: Action,
    limits: &Limits,
    tenant_limits: &TenantLimits,
    now_ms: i64,
) -> Result<()> {
    if tenant_limits.quota(action).is_some() {
        tx.lock_tenant().await?;
    }
    quota_in(tx, agent_id, action, limits, tenant_limits, now_ms).await?;
    tx.insert_action(agent_id, action, now_ms).await?;
    Ok(())
}

async fn spent_in(tx: &mut GovernanceTx, agent_id: Option<&str>, now_ms: i64) -> Result<Spent> {
    Ok(Spent {
        hourly_micros: tx.sum_costs(agent_id, now_ms - HOUR_MS, now_ms).await?,
        daily_micros: tx.sum_costs(agent_id, now_ms - DAY_MS, now_ms).await?,
    })
}

async fn budget_in(
    tx: &mut GovernanceTx,
    agent_id: &str,
    limits: &Limits,
    tenant_limits: &TenantLimits,
    now_ms: i64,
) -> Result<()> {
    let mut checks = vec![(Scope::Agent, Some(agent_id), Some(*limits))];
    if *tenant_limits != TenantLimits::default() {
        checks.push((Scope::Tenant, None, None));
    }
    for (scope, who, agent_limits) in checks {
        let spent = spent_in(tx, who, now_ms).await?;
        for window in BudgetWindow::ALL {
            let limit = match agent_limits {
                Some(l) => Some(l.budget(window)),
                None => tenant_limits.budget(window),
            };
            let Some(limit) = limit else { continue };
            let spent_micros = window.spent(spent);
            if spent_micros < limit {
                continue;
            }
            let since = now_ms - window.window_ms();
            let costs = tx.costs(who, since, now_ms).await?;
            let retry_after_secs = budget_frees_at(&costs, spent_micros, limit, window.window_ms())
                .map(|at| secs_until(at, now_ms));
            return Err(Refusal::BudgetExceeded {
                scope,
                window,
                spent_micros,
                limit_micros: limit,
                retry_after_secs,
            }
            .into());
        }
    }
    Ok(())
}

async fn outcome_in(
    tx: &mut GovernanceTx,
    agent_id: &str,
    outcome: Outcome,
    reason: &str,
    now_ms: i64,
) -> Result<ReputationChange> {
    let before = tx.reputation(agent_id).await?.unwrap_or(REPUTATION_START);
    let after = next_score(before, outcome);
    let restricted = is_restricted(after);
    let event = ReputationEvent {
        at_ms: now_ms,
        outcome,
        delta: after - before,
        reason: reason.to_owned(),
        score_after: after,
    };
    tx.record_reputation(agent_id, &event, restricted).await?;
    Ok(ReputationChange {
        before,
        after,
        restricted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_settings_beat_the_tenant_s_which_beat_the_defaults() {
        let tenant = LimitOverrides {
            pushes_per_hour: Some(20),
            budget_daily_micros: Some(50 * MICROS_PER_DOLLAR),
            ..LimitOverrides::default()
        };
        let agent = LimitOverrides {
            pushes_per_hour: Some(3),
            ..LimitOverrides::default()
        };
        let limits = Limits::effective(&tenant, &agent);
        assert_eq!(
            limits,
            Limits {
                pushes_per_hour: 3,
                executions_per_day: 100,
                budget_hourly_micros: 2_000_000,
                budget_daily_micros: 50_000_000,
            }
        );
        assert_eq!(
            Limits::effective(&LimitOverrides::default(), &LimitOverrides::default()),
            Limits::DEFAULT_AGENT
        );
    }

    #[test]
    fn overrides_are_checked_and_round_trip_as_json() {
        let o: LimitOverrides =
            serde_json::from_str(r#"{"pushes_per_hour":5,"tenant_budget_daily_micros":7}"#)
                .unwrap();
        assert_eq!(o.pushes_per_hour, Some(5));
        assert_eq!(o.tenant_limits().budget_daily_micros, Some(7));
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"pushes_per_hour":5,"tenant_budget_daily_micros":7}"#
        );
        assert!(o.validate(false).is_ok());
        assert!(o.validate(true).is_err());
        assert!(serde_json::from_str::<LimitOverrides>(r#"{"pushes":5}"#).is_err());
        let negative = LimitOverrides {
            budget_hourly_micros: Some(-1),
            ..LimitOverrides::default()
        };
        assert!(negative
            .validate(true)
            .unwrap_err()
            .contains("budget_hourly_micros"));
    }

    #[test]
    fn reputation_is_clamped_and_restricts_below_fifty() {
        assert_eq!(next_score(100, Outcome::Success), 110);
        assert_eq!(next_score(3, Outcome::Failure), 0);
        assert_eq!(next_score(995, Outcome::Success), REPUTATION_MAX);
        assert!(is_restricted(49));
        assert!(!is_restricted(50));
    }

    #[test]
    fn sandbox_time_is_exact_and_rounds_up() {
        // $0.36 an hour is 100 micro-dollars a second.
        assert_eq!(sandbox_time_micros(90, 360_000), Some(9_000));
        assert_eq!(sandbox_time_micros(1, 1), Some(1));
        assert_eq!(sandbox_time_micros(3_600, 1), Some(1));
        assert_eq!(sandbox_time_micros(0, 1_000_000), Some(0));
        assert_eq!(sandbox_time_micros(1, -1), None);
        assert_eq!(sandbox_time_micros(u64::MAX, i64::MAX), None);
    }

    #[test]
    fn budgets_free_up_when_the_tipping_cost_leaves_the_window() {
        let costs = [(0, 1_500_000), (10, 600_000)];
        // Spent 2.1 of 2.0: once the first leaves, 0.6 remains.
        assert_eq!(
            budget_frees_at(&costs, 2_100_000, 2_000_000, HOUR_MS),
            Some(HOUR_MS)
        );
        assert_eq!(budget_frees_at(&costs, 2_100_000, 0, HOUR_MS), None);
        assert_eq!(secs_until(HOUR_MS, HOUR_MS - 1), 1);
        assert_eq!(secs_until(HOUR_MS, HOUR_MS - 1_001), 2);
    }

    #[test]
    fn refusals_have_stable_codes_and_say_what_to_do() {
        let quota = Refusal::QuotaExceeded {
            scope: Scope::Agent,
            action: Action::Push,
            limit: 10,
            window_secs: 3_600,
            retry_after_secs: Some(1),
        };
        assert_eq!(quota.code(), "quota_exceeded");
        assert_eq!(
            quota.to_string(),
            "quota exceeded: this agent may make at most 10 pushes in any 60 minutes; \
             retry in 1 s, or ask an admin to raise `pushes_per_hour`"
        );
        let budget = Refusal::BudgetExceeded {
            scope: Scope::Tenant,
            window: BudgetWindow::Daily,
            spent_micros: 10_000_001,
            limit_micros: 10_000_000,
            retry_after_secs: None,
        };
        assert_eq!(budget.code(), "budget_exceeded");
        assert_eq!(
            budget.to_string(),
            "budget exceeded: this tenant's agents spent $10.000001 in the last 24 hours, \
             and the daily budget is $10.00; ask an admin to raise `tenant_budget_daily_micros`"
        );
        assert_eq!(
            Refusal::Restricted { reputation: 45 }.code(),
            "agent_restricted"
        );
        assert_eq!(dollars(2_100_000), "$2.10");
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(window(86_400), "24 hours");
    }
}
