//! Governance on both backends (SQLite in a temporary directory and a real
//! PostgreSQL, a fresh database per test): rolling-window quotas, cost
//! budgets in exact micro-dollars, reputation and restriction, limits per
//! tenant and per agent, and that concurrent callers on one store cannot
//! both take the last slot of a quota. The clock is the explicit `now_ms`
//! every decision takes, so nothing here sleeps.

use std::sync::Arc;

use control_plane::governance::{
    Action, BudgetWindow, CostKind, Governance, GovernanceError, LimitOverrides, Limits, Outcome,
    Refusal, Scope, Spent, HOUR_MS, MICROS_PER_DOLLAR,
};
use control_plane::store::{self, Durability, Store, SystemStore};
use paddock_tests::SharedPg;
use sqlx::Row;

const A: &str = "tenant-a";
const B: &str = "tenant-b";
/// An arbitrary start of time (2023-11-14T22:13:20Z).
const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
const SECOND: i64 = 1_000;

struct Backend {
    gov: Governance,
    store: Store,
    _system: SystemStore,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<SharedPg>,
}

async fn with_tenants(store: Store, system: SystemStore) -> (Governance, Store, SystemStore) {
    system.ensure_tenant(A).await.unwrap();
    system.ensure_tenant(B).await.unwrap();
    (Governance::new(store.clone()), store, system)
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (store, system) = store::open(&store::sqlite_url(dir.path()), Durability::Normal)
        .await
        .unwrap();
    let (gov, store, system) = with_tenants(store, system).await;
    Backend {
        gov,
        store,
        _system: system,
        _dir: Some(dir),
        _pg: None,
    }
}

async fn postgres() -> Backend {
    let pg = tokio::task::spawn_blocking(paddock_tests::PgCluster::shared)
        .await
        .unwrap()
        .expect("a PostgreSQL cluster for the test");
    let (pg, url) = tokio::task::spawn_blocking(move || {
        let url = pg.fresh_database();
        (pg, url)
    })
    .await
    .unwrap();
    let (store, system) = store::open(&url.unwrap(), Durability::Full).await.unwrap();
    let (gov, store, system) = with_tenants(store, system).await;
    Backend {
        gov,
        store,
        _system: system,
        _dir: None,
        _pg: Some(pg),
    }
}

fn refusal<T: std::fmt::Debug>(result: Result<T, GovernanceError>) -> Refusal {
    match result {
        Err(GovernanceError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn dollars(d: i64, cents: i64) -> i64 {
    d * MICROS_PER_DOLLAR + cents * 10_000
}

async fn pushes_are_limited_in_a_rolling_hour(b: Backend) {
    let g = &b.gov;
    for _ in 0..10 {
        g.try_action(A, "agt_1", Action::Push, T0).await.unwrap();
    }
    let at = T0 + 59 * MINUTE + 59 * SECOND;
    let refused = refusal(g.try_action(A, "agt_1", Action::Push, at).await);
    assert_eq!(
        refused,
        Refusal::QuotaExceeded {
            scope: Scope::Agent,
            action: Action::Push,
            limit: 10,
            window_secs: 3_600,
            retry_after_secs: Some(1),
        }
    );
    assert_eq!(refused.code(), "quota_exceeded");
    assert!(refused.to_string().contains("retry in 1 s"), "{refused}");
    // check_action agrees and takes nothing.
    assert_eq!(
        refusal(g.check_action(A, "agt_1", Action::Push, at).await),
        refused
    );
    // Another agent, the same agent in another tenant, and another action are unaffected.
    g.try_action(A, "agt_2", Action::Push, at).await.unwrap();
    g.try_action(B, "agt_1", Action::Push, at).await.unwrap();
    g.try_action(A, "agt_1", Action::TaskExecution, at)
        .await
        .unwrap();
    // The window is (now - 1 h, now]: the pushes at T0 are out at T0 + 60:00.
    g.check_action(A, "agt_1", Action::Push, T0 + HOUR_MS)
        .await
        .unwrap();
    g.try_action(A, "agt_1", Action::Push, T0 + HOUR_MS)
        .await
        .unwrap();
    let status = g.status(A, "agt_1", T0 + HOUR_MS).await.unwrap();
    assert_eq!(
        (status.pushes_in_window, status.executions_in_window),
        (1, 1)
    );
    // A refusal recorded nothing: 10 slots again, less the one just taken.
    for _ in 0..9 {
        g.try_action(A, "agt_1", Action::Push, T0 + HOUR_MS + 1)
            .await
            .unwrap();
    }
    assert!(g
        .try_action(A, "agt_1", Action::Push, T0 + HOUR_MS + 2)
        .await
        .is_err());
}

async fn limits_come_from_agent_then_tenant_then_defaults(b: Backend) {
    let g = &b.gov;
    let tenant = LimitOverrides {
        pushes_per_hour: Some(3),
        ..LimitOverrides::default()
    };
    g.set_limits(A, None, &tenant).await.unwrap();
    let agent = LimitOverrides {
        pushes_per_hour: Some(5),
        budget_hourly_micros: Some(dollars(0, 50)),
        ..LimitOverrides::default()
    };
    g.set_limits(A, Some("agt_own"), &agent).await.unwrap();
    assert_eq!(g.limit_overrides(A, None).await.unwrap(), tenant);
    assert_eq!(g.limit_overrides(A, Some("agt_own")).await.unwrap(), agent);

    assert_eq!(
        g.limits(A, "agt_plain").await.unwrap(),
        Limits {
            pushes_per_hour: 3,
            ..Limits::DEFAULT_AGENT
        }
    );
    assert_eq!(
        g.limits(A, "agt_own").await.unwrap(),
        Limits {
            pushes_per_hour: 5,
            budget_hourly_micros: 500_000,
            ..Limits::DEFAULT_AGENT
        }
    );
    // Another tenant keeps the defaults.
    assert_eq!(
        g.limits(B, "agt_plain").await.unwrap(),
        Limits::DEFAULT_AGENT
    );

    // The tenant's setting applies to an agent without its own...
    for _ in 0..3 {
        g.try_action(A, "agt_plain", Action::Push, T0)
            .await
            .unwrap();
    }
    assert!(matches!(
        refusal(g.try_action(A, "agt_plain", Action::Push, T0).await),
        Refusal::QuotaExceeded {
            limit: 3,
            scope: Scope::Agent,
            ..
        }
    ));
    // ...and the agent's own beats it.
    for _ in 0..5 {
        g.try_action(A, "agt_own", Action::Push, T0).await.unwrap();
    }
    assert!(matches!(
        refusal(g.try_action(A, "agt_own", Action::Push, T0).await),
        Refusal::QuotaExceeded { limit: 5, .. }
    ));

    // Setting a level again replaces it; empty overrides clear it.
    g.set_limits(A, Some("agt_own"), &LimitOverrides::default())
        .await
        .unwrap();
    assert_eq!(g.limits(A, "agt_own").await.unwrap().pushes_per_hour, 3);
    g.set_limits(A, None, &LimitOverrides::default())
        .await
        .unwrap();
    assert_eq!(g.limits(A, "agt_own").await.unwrap(), Limits::DEFAULT_AGENT);

    // A tenant cap over all agents together; no agent may set one.
    let cap = LimitOverrides {
        tenant_pushes_per_hour: Some(4),
        ..LimitOverrides::default()
    };
    assert!(matches!(
        g.set_limits(B, Some("agt_x"), &cap).await,
        Err(GovernanceError::Invalid(_))
    ));
    g.set_limits(B, None, &cap).await.unwrap();
    assert_eq!(g.tenant_limits(B).await.unwrap().pushes_per_hour, Some(4));
    for agent in ["agt_x", "agt_y", "agt_x", "agt_z"] {
        g.try_action(B, agent, Action::Push, T0).await.unwrap();
    }
    let refused = refusal(g.try_action(B, "agt_new", Action::Push, T0 + MINUTE).await);
    assert_eq!(
        refused,
        Refusal::QuotaExceeded {
            scope: Scope::Tenant,
            action: Action::Push,
            limit: 4,
            window_secs: 3_600,
            retry_after_secs: Some(59 * 60),
        }
    );
    assert!(refused.to_string().contains("tenant_pushes_per_hour"));
    let negative = LimitOverrides {
        budget_daily_micros: Some(-1),
        ..LimitOverrides::default()
    };
    assert!(matches!(
        g.set_limits(A, None, &negative).await,
        Err(GovernanceError::Invalid(_))
    ));
}

async fn executions_are_limited_in_a_rolling_day(b: Backend) {
    let g = &b.gov;
    // 100 executions, one every 10 minutes from T0 (the last at 16:30).
    for i in 0..100 {
        g.admit_task(A, "agt_1", false, T0 + i * 10 * MINUTE)
            .await
            .unwrap();
    }
    let at = T0 + 23 * HOUR_MS;
    let refused = refusal(g.admit_task(A, "agt_1", false, at).await);
    assert_eq!(
        refused,
        Refusal::QuotaExceeded {
            scope: Scope::Agent,
            action: Action::TaskExecution,
            limit: 100,
            window_secs: 86_400,
            retry_after_secs: Some(3_600),
        }
    );
    assert!(g
        .try_action(A, "agt_1", Action::TaskExecution, at)
        .await
        .is_err());
    // The first leaves the window at T0 + 24 h; one slot opens, not two.
    g.admit_task(A, "agt_1", false, T0 + 24 * HOUR_MS)
        .await
        .unwrap();
    assert!(matches!(
        refusal(g.admit_task(A, "agt_1", false, T0 + 24 * HOUR_MS).await),
        Refusal::QuotaExceeded {
            retry_after_secs: Some(600),
            ..
        }
    ));
    // A limit of 0 refuses with no time to wait for.
    let none = LimitOverrides {
        executions_per_day: Some(0),
        ..LimitOverrides::default()
    };
    g.set_limits(A, Some("agt_2"), &none).await.unwrap();
    let refused = refusal(g.admit_task(A, "agt_2", false, T0).await);
    assert_eq!(refused.retry_after_secs(), None);
}

async fn budgets_hold_per_hour_and_per_day_to_the_micro_dollar(b: Backend) {
    let g = &b.gov;
    let first = g
        .record_cost(
            A,
            "agt_1",
            CostKind::LlmTokens,
            dollars(1, 50),
            Some("gpt"),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(first.overrun, None);
    g.check_budget(A, "agt_1", T0).await.unwrap();
    g.admit_task(A, "agt_1", false, T0).await.unwrap();

    // $1.50 + $0.60 in the hour is over $2: refused, and one overrun charged.
    let second = g
        .record_cost(
            A,
            "agt_1",
            CostKind::ApiCall,
            dollars(0, 60),
            None,
            T0 + 30 * MINUTE,
        )
        .await
        .unwrap();
    assert_eq!(
        second.spent,
        Spent {
            hourly_micros: 2_100_000,
            daily_micros: 2_100_000
        }
    );
    let overrun = second.overrun.expect("an overrun");
    assert_eq!((overrun.before, overrun.after), (100, 80));
    let refused = refusal(g.check_budget(A, "agt_1", T0 + 30 * MINUTE).await);
    assert_eq!(
        refused,
        Refusal::BudgetExceeded {
            scope: Scope::Agent,
            window: BudgetWindow::Hourly,
            spent_micros: 2_100_000,
            limit_micros: 2_000_000,
            retry_after_secs: Some(30 * 60),
        }
    );
    assert_eq!(refused.code(), "budget_exceeded");
    assert!(refused.to_string().contains("$2.10"), "{refused}");
    assert!(matches!(
        refusal(g.admit_task(A, "agt_1", false, T0 + 30 * MINUTE).await),
        Refusal::BudgetExceeded { .. }
    ));
    // Already over: more spending is no second overrun.
    assert_eq!(
        g.record_cost(A, "agt_1", CostKind::Storage, 0, None, T0 + 31 * MINUTE)
            .await
            .unwrap()
            .overrun,
        None
    );
    // The next hour's window frees it ($0.60 left in it).
    g.check_budget(A, "agt_1", T0 + HOUR_MS).await.unwrap();
    assert_eq!(
        g.spent(A, "agt_1", T0 + HOUR_MS).await.unwrap(),
        Spent {
            hourly_micros: 600_000,
            daily_micros: 2_100_000
        }
    );

    // $1.90 in each of four later hours, then $0.30: exactly $10.00 today.
    for h in 2..6 {
        let r = g
            .record_cost(
                A,
                "agt_1",
                CostKind::SandboxTime,
                dollars(1, 90),
                None,
                T0 + h * HOUR_MS,
            )
            .await
            .unwrap();
        assert_eq!(r.overrun, None);
    }
    g.check_budget(A, "agt_1", T0 + 5 * HOUR_MS + MINUTE)
        .await
        .unwrap();
    // $0.30 as three costs of $0.10: the sums are exact.
    for _ in 0..3 {
        g.record_cost(
            A,
            "agt_1",
            CostKind::LlmTokens,
            100_000,
            None,
            T0 + 6 * HOUR_MS,
        )
        .await
        .unwrap();
    }
    assert_eq!(
        g.spent(A, "agt_1", T0 + 6 * HOUR_MS).await.unwrap(),
        Spent {
            hourly_micros: 300_000,
            daily_micros: 10_000_000
        }
    );
    // A budget reached is used up (refused), but not overrun (no penalty).
    assert_eq!(g.reputation(A, "agt_1").await.unwrap(), (80, false));
    assert!(matches!(
        refusal(g.check_budget(A, "agt_1", T0 + 6 * HOUR_MS).await),
        Refusal::BudgetExceeded {
            window: BudgetWindow::Daily,
            spent_micros: 10_000_000,
            limit_micros: 10_000_000,
            // When the $1.50 at T0 leaves the day.
            retry_after_secs: Some(64_800),
            ..
        }
    ));
    // One more micro-dollar is a daily overrun.
    let r = g
        .record_cost(A, "agt_1", CostKind::ApiCall, 1, None, T0 + 6 * HOUR_MS)
        .await
        .unwrap();
    assert_eq!(r.spent.daily_micros, 10_000_001);
    assert_eq!(r.overrun.map(|o| o.after), Some(60));

    // Sandbox time: 90 s at $0.36 an hour is exactly 9 000 micro-dollars.
    let r = g
        .record_sandbox_time(A, "agt_2", 90, 360_000, T0)
        .await
        .unwrap();
    assert_eq!(r.spent.hourly_micros, 9_000);
    assert!(matches!(
        g.record_cost(A, "agt_2", CostKind::ApiCall, -1, None, T0)
            .await,
        Err(GovernanceError::Invalid(_))
    ));

    // A tenant budget counts every agent of the tenant.
    let cap = LimitOverrides {
        tenant_budget_hourly_micros: Some(dollars(3, 0)),
        ..LimitOverrides::default()
    };
    g.set_limits(B, None, &cap).await.unwrap();
    g.record_cost(B, "agt_x", CostKind::LlmTokens, dollars(1, 60), None, T0)
        .await
        .unwrap();
    g.check_budget(B, "agt_y", T0).await.unwrap();
    g.record_cost(B, "agt_y", CostKind::LlmTokens, dollars(1, 60), None, T0)
        .await
        .unwrap();
    assert!(matches!(
        refusal(g.check_budget(B, "agt_z", T0).await),
        Refusal::BudgetExceeded {
            scope: Scope::Tenant,
            window: BudgetWindow::Hourly,
            spent_micros: 3_200_000,
            ..
        }
    ));
}

async fn reputation_moves_and_restricts(b: Backend) {
    let g = &b.gov;
    assert_eq!(g.reputation(A, "agt_1").await.unwrap(), (100, false));
    for i in 0..6 {
        let c = g
            .apply_outcome(
                A,
                "agt_1",
                Outcome::Failure,
                &format!("task {i} failed"),
                T0 + i,
            )
            .await
            .unwrap();
        assert_eq!(c.after, c.before - 5);
    }
    let c = g
        .apply_outcome(A, "agt_1", Outcome::CostOverrun, "spent $3 of $2", T0 + 10)
        .await
        .unwrap();
    // At 50 exactly the agent is still free.
    assert_eq!((c.before, c.after, c.restricted), (70, 50, false));
    g.check_restricted(A, "agt_1").await.unwrap();
    let c = g
        .apply_outcome(A, "agt_1", Outcome::Failure, "tests failed", T0 + 11)
        .await
        .unwrap();
    assert_eq!((c.after, c.restricted), (45, true));
    assert_eq!(g.reputation(A, "agt_1").await.unwrap(), (45, true));
    let refused = refusal(g.check_restricted(A, "agt_1").await);
    assert_eq!(refused, Refusal::Restricted { reputation: 45 });
    assert_eq!(refused.code(), "agent_restricted");
    assert!(refusal(g.admit_task(A, "agt_1", false, T0 + 12).await) == refused);
    // An approved task runs; its success lifts the score and the restriction.
    g.admit_task(A, "agt_1", true, T0 + 12).await.unwrap();
    let c = g
        .apply_outcome(A, "agt_1", Outcome::Success, "task 7 passed", T0 + 13)
        .await
        .unwrap();
    assert_eq!((c.before, c.after, c.restricted), (45, 55, false));
    g.admit_task(A, "agt_1", false, T0 + 14).await.unwrap();

    let events = g.reputation_events(A, "agt_1", 3).await.unwrap();
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.outcome, e.delta, e.reason.as_str(), e.score_after))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Outcome::Success, 10, "task 7 passed", 55),
            (Outcome::Failure, -5, "tests failed", 45),
            (Outcome::CostOverrun, -20, "spent $3 of $2", 50),
        ]
    );
    assert_eq!(events[0].at_ms, T0 + 13);
    assert_eq!(g.reputation_events(A, "agt_1", 100).await.unwrap().len(), 9);
    // Other agents and tenants are untouched.
    assert_eq!(g.reputation(B, "agt_1").await.unwrap(), (100, false));
    assert!(g
        .reputation_events(B, "agt_1", 10)
        .await
        .unwrap()
        .is_empty());
    let status = g.status(A, "agt_1", T0 + 14).await.unwrap();
    assert_eq!((status.reputation, status.restricted), (55, false));
    assert_eq!(status.executions_in_window, 2);

    // The floor is 0; the recorded delta is what was applied.
    for _ in 0..6 {
        g.apply_outcome(A, "agt_2", Outcome::CostOverrun, "again", T0)
            .await
            .unwrap();
    }
    assert_eq!(g.reputation(A, "agt_2").await.unwrap(), (0, true));
    let last = &g.reputation_events(A, "agt_2", 2).await.unwrap();
    assert_eq!(
        (last[0].delta, last[0].score_after, last[1].delta),
        (0, 0, -20)
    );
}

/// Twenty callers race for the last push of an agent, then twenty agents
/// for the last push of their tenant: exactly one wins each time.
async fn the_last_slot_goes_to_exactly_one_caller(b: Backend) {
    let g = &b.gov;
    for _ in 0..9 {
        g.record_action(A, "agt_1", Action::Push, T0).await.unwrap();
    }
    let wins = race(g, (0..20).map(|_| (A, "agt_1".to_owned())).collect()).await;
    assert_eq!(wins, 1);
    assert_eq!(
        g.status(A, "agt_1", T0 + SECOND)
            .await
            .unwrap()
            .pushes_in_window,
        10
    );

    let cap = LimitOverrides {
        tenant_pushes_per_hour: Some(5),
        ..LimitOverrides::default()
    };
    g.set_limits(B, None, &cap).await.unwrap();
    for _ in 0..4 {
        g.record_action(B, "agt_0", Action::Push, T0).await.unwrap();
    }
    let wins = race(g, (1..=20).map(|i| (B, format!("agt_{i}"))).collect()).await;
    assert_eq!(wins, 1);
}

async fn race(g: &Governance, callers: Vec<(&'static str, String)>) -> usize {
    let barrier = Arc::new(tokio::sync::Barrier::new(callers.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (tenant, agent) in callers {
        let g = g.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            g.try_action(tenant, &agent, Action::Push, T0 + SECOND)
                .await
        });
    }
    let mut wins = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(()) => wins += 1,
            Err(GovernanceError::Refused(Refusal::QuotaExceeded { .. })) => {}
            Err(other) => panic!("a racing caller failed: {other:?}"),
        }
    }
    wins
}

#[tokio::test]
async fn sqlite_pushes_are_limited_in_a_rolling_hour() {
    pushes_are_limited_in_a_rolling_hour(sqlite().await).await;
}

#[tokio::test]
async fn postgres_pushes_are_limited_in_a_rolling_hour() {
    pushes_are_limited_in_a_rolling_hour(postgres().await).await;
}

#[tokio::test]
async fn sqlite_limits_come_from_agent_then_tenant_then_defaults() {
    limits_come_from_agent_then_tenant_then_defaults(sqlite().await).await;
}

#[tokio::test]
async fn postgres_limits_come_from_agent_then_tenant_then_defaults() {
    limits_come_from_agent_then_tenant_then_defaults(postgres().await).await;
}

#[tokio::test]
async fn sqlite_executions_are_limited_in_a_rolling_day() {
    executions_are_limited_in_a_rolling_day(sqlite().await).await;
}

#[tokio::test]
async fn postgres_executions_are_limited_in_a_rolling_day() {
    executions_are_limited_in_a_rolling_day(postgres().await).await;
}

#[tokio::test]
async fn sqlite_budgets_hold_per_hour_and_per_day_to_the_micro_dollar() {
    budgets_hold_per_hour_and_per_day_to_the_micro_dollar(sqlite().await).await;
}

#[tokio::test]
async fn postgres_budgets_hold_per_hour_and_per_day_to_the_micro_dollar() {
    budgets_hold_per_hour_and_per_day_to_the_micro_dollar(postgres().await).await;
}

#[tokio::test]
async fn sqlite_reputation_moves_and_restricts() {
    reputation_moves_and_restricts(sqlite().await).await;
}

#[tokio::test]
async fn postgres_reputation_moves_and_restricts() {
    reputation_moves_and_restricts(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_the_last_slot_goes_to_exactly_one_caller() {
    the_last_slot_goes_to_exactly_one_caller(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_the_last_slot_goes_to_exactly_one_caller() {
    the_last_slot_goes_to_exactly_one_caller(postgres().await).await;
}

/// Inside tenant B's transaction, queries with no tenant filter see none of
/// tenant A's governance rows.
#[tokio::test]
async fn postgres_row_level_security_hides_other_tenants_governance() {
    let b = postgres().await;
    let g = &b.gov;
    g.try_action(A, "agt_1", Action::Push, T0).await.unwrap();
    g.record_cost(A, "agt_1", CostKind::ApiCall, 5, None, T0)
        .await
        .unwrap();
    g.apply_outcome(A, "agt_1", Outcome::Success, "ok", T0)
        .await
        .unwrap();
    g.set_limits(
        A,
        None,
        &LimitOverrides {
            pushes_per_hour: Some(1),
            ..LimitOverrides::default()
        },
    )
    .await
    .unwrap();
    for (tenant, expected) in [(A, 1), (B, 0)] {
        let mut tx = b.store.begin(tenant).await.unwrap();
        for table in [
            "agent_actions",
            "agent_costs",
            "reputation_events",
            "agent_reputation",
            "governance_limits",
        ] {
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&mut *tx)
                .await
                .unwrap()
                .try_get("n")
                .unwrap();
            assert_eq!(n, expected, "{table} as {tenant}");
        }
        tx.commit().await.unwrap();
    }
}
