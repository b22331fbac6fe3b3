//! `paddock agents`: list and create agents, show their governance state
//! (reputation, restriction, quotas and budgets), set their limits and
//! report their costs. Money is integer micro-dollars on the wire; people
//! type and read dollars, converted here without floating point.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use clap::Subcommand;
use paddock_protocol::tasks::{AgentInfo, AgentList, CreateAgent};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::api::Client;
use crate::output::{self, Table};
use crate::tasks::{call, About};

/// Micro-dollars in a dollar.
const MICROS: i64 = 1_000_000;

#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// List the tenant's agents.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an agent (give it a token with `tokens create --role agent --agent NAME`).
    Create {
        name: String,
        /// Print the agent as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's reputation, restriction, limits, usage and recent reputation events.
    Show {
        name: String,
        /// Print the control plane's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Override the tenant's limits for one agent; budgets are in dollars, e.g. 2.50.
    Limits(LimitsArgs),
    /// Report a cost the agent incurred outside its sandbox, in dollars.
    Cost {
        name: String,
        #[arg(long, value_parser = ["llm_tokens", "api_call", "storage", "sandbox_time"])]
        kind: String,
        /// Dollars, e.g. 0.75 (at most 6 decimals: micro-dollars).
        #[arg(long, value_name = "DOLLARS", value_parser = parse_dollars)]
        amount: i64,
        #[arg(long)]
        note: Option<String>,
        /// Print the control plane's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct LimitsArgs {
    pub name: String,
    /// Pushes in any rolling hour.
    #[arg(long, value_name = "N")]
    pub pushes_per_hour: Option<u32>,
    /// Task executions in any rolling 24 hours.
    #[arg(long, value_name = "N")]
    pub executions_per_day: Option<u32>,
    /// Dollars in any rolling hour, e.g. 2.50.
    #[arg(long, value_name = "DOLLARS", value_parser = parse_dollars)]
    pub budget_hourly: Option<i64>,
    /// Dollars in any rolling 24 hours, e.g. 20.
    #[arg(long, value_name = "DOLLARS", value_parser = parse_dollars)]
    pub budget_daily: Option<i64>,
    /// Print the agent's new state as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `PUT /v1/agents/{agent}/limits`; only the limits given change. (The
/// control plane's `LimitOverrides`, which the protocol crate does not hold yet.)
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
struct LimitOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pushes_per_hour: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executions_per_day: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_hourly_micros: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_daily_micros: Option<i64>,
}

/// `POST /v1/agents/{agent}/costs`.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct ReportCost {
    kind: String,
    micros: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// The answer of `POST /v1/agents/{agent}/costs`.
#[derive(Debug, Deserialize)]
struct CostRecorded {
    spent_hourly_micros: i64,
    spent_daily_micros: i64,
    #[serde(default)]
    overrun: Option<Overrun>,
}

#[derive(Debug, Deserialize)]
struct Overrun {
    before: i64,
    after: i64,
    restricted: bool,
}

/// The answer of `GET /v1/agents/{agent}` (and of setting limits).
#[derive(Debug, Deserialize)]
pub struct AgentStatus {
    agent: AgentInfo,
    reputation: i64,
    restricted: bool,
    limits: Limits,
    used: Used,
    left: Left,
    #[serde(default)]
    reputation_events: Vec<ReputationEvent>,
}

#[derive(Debug, Deserialize)]
struct Limits {
    pushes_per_hour: u64,
    executions_per_day: u64,
    budget_hourly_micros: i64,
    budget_daily_micros: i64,
}

#[derive(Debug, Deserialize)]
struct Used {
    pushes_in_hour: u64,
    executions_in_day: u64,
    spent_hourly_micros: i64,
    spent_daily_micros: i64,
}

#[derive(Debug, Deserialize)]
struct Left {
    pushes: u64,
    executions: u64,
    budget_hourly_micros: i64,
    budget_daily_micros: i64,
}

#[derive(Debug, Deserialize)]
struct ReputationEvent {
    at_ms: i64,
    outcome: String,
    delta: i64,
    reason: String,
    score_after: i64,
}

/// Parses dollars into micro-dollars without floating point: `2`, `2.5`,
/// `0.75`, `$1.000001`; at most six decimals, never negative.
pub fn parse_dollars(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix('$').unwrap_or(trimmed);
    let bad = |why: &str| format!("invalid amount `{text}`: {why}, e.g. 2, 2.5 or 0.75 (dollars)");
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(bad("it has no digits"));
    }
    if !whole
        .chars()
        .chain(fraction.chars())
        .all(|c| c.is_ascii_digit())
    {
        return Err(bad("use digits and one dot only"));
    }
    if fraction.len() > 6 {
        return Err(bad("at most 6 decimals (a micro-dollar)"));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad("too large"))?
    };
    let fraction: i64 = format!("{fraction:0<6}")
        .parse()
        .map_err(|_| bad("bad decimals"))?;
    whole
        .checked_mul(MICROS)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(|| bad("too large"))
}

/// Micro-dollars as dollars with two decimals, rounded half away from zero: `$2.50`.
pub fn format_dollars(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let cents = (micros.unsigned_abs() + 5_000) / 10_000;
    format!("{sign}${}.{:02}", cents / 100, cents % 100)
}

impl Client {
    pub async fn list_agents(&self) -> Result<AgentList> {
        let req = self.request(Method::GET, &["v1", "agents"])?;
        Ok(call(self, req, About::Tenant).await?.1)
    }

    pub async fn create_agent(&self, body: &CreateAgent) -> Result<AgentInfo> {
        let req = self.request(Method::POST, &["v1", "agents"])?.json(body);
        Ok(call(self, req, About::Tenant).await?.1)
    }

    /// `GET /v1/agents/{agent}` as the control plane sent it.
    pub async fn agent_status(&self, name: &str) -> Result<serde_json::Value> {
        let req = self.request(Method::GET, &["v1", "agents", name])?;
        Ok(call(self, req, About::Agent(name)).await?.1)
    }

    async fn set_agent_limits(
        &self,
        name: &str,
        body: &LimitOverrides,
    ) -> Result<serde_json::Value> {
        let req = self
            .request(Method::PUT, &["v1", "agents", name, "limits"])?
            .json(body);
        Ok(call(self, req, About::Agent(name)).await?.1)
    }

    async fn report_cost(&self, name: &str, body: &ReportCost) -> Result<serde_json::Value> {
        let req = self
            .request(Method::POST, &["v1", "agents", name, "costs"])?
            .json(body);
        Ok(call(self, req, About::Agent(name)).await?.1)
    }
}

/// `paddock agents …`.
pub async fn agents(client: &Client, cmd: AgentsCmd) -> Result<i32> {
    match cmd {
        AgentsCmd::List { json } => {
            let list = client.list_agents().await?;
            if json {
                output::print_json(&list)?;
            } else if list.agents.is_empty() {
                eprintln!("no agents: create one with `paddock agents create NAME`");
            } else {
                print!("{}", agents_table(&list.agents, SystemTime::now()));
            }
        }
        AgentsCmd::Create { name, json } => {
            let agent = client.create_agent(&CreateAgent { name }).await?;
            if json {
                output::print_json(&agent)?;
            } else {
                println!("created agent {} ({})", agent.name, agent.id);
                println!(
                    "Give it a token with `paddock tokens create NAME --role agent --agent {}`.",
                    agent.name
                );
            }
        }
        AgentsCmd::Show { name, json } => {
            let status = client.agent_status(&name).await?;
            print_status(status, json)?;
        }
        AgentsCmd::Limits(args) => {
            let json = args.json;
            let (name, body) = limits_body(args)?;
            let status = client.set_agent_limits(&name, &body).await?;
            print_status(status, json)?;
        }
        AgentsCmd::Cost {
            name,
            kind,
            amount,
            note,
            json,
        } => {
            let body = ReportCost {
                kind: kind.clone(),
                micros: amount,
                note,
            };
            let answer = client.report_cost(&name, &body).await?;
            if json {
                output::print_json(&answer)?;
            } else {
                let recorded: CostRecorded = decode(answer)?;
                print!("{}", cost_text(&name, &kind, amount, &recorded));
            }
        }
    }
    Ok(0)
}

/// The agent's state as JSON as received (nothing the control plane adds
/// is lost), or for a person.
fn print_status(status: serde_json::Value, json: bool) -> Result<()> {
    if json {
        return output::print_json(&status);
    }
    let status: AgentStatus = decode(status)?;
    print!("{}", status_text(&status));
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|err| {
        anyhow::anyhow!(
            "could not understand the control plane's answer ({err}): are paddock and the control plane the same version? (--json prints it as is)"
        )
    })
}

fn limits_body(args: LimitsArgs) -> Result<(String, LimitOverrides)> {
    let body = LimitOverrides {
        pushes_per_hour: args.pushes_per_hour,
        executions_per_day: args.executions_per_day,
        budget_hourly_micros: args.budget_hourly,
        budget_daily_micros: args.budget_daily,
    };
    if body == LimitOverrides::default() {
        bail!("nothing to change: give at least one of --pushes-per-hour, --executions-per-day, --budget-hourly or --budget-daily");
    }
    Ok((args.name, body))
}

/// The `paddock agents list` table.
pub fn agents_table(agents: &[AgentInfo], now: SystemTime) -> String {
    let mut table = Table::new(vec!["ID", "NAME", "CREATED"]);
    for a in agents {
        table.push(vec![
            a.id.clone(),
            a.name.clone(),
            output::ago(&a.created_at, now),
        ]);
    }
    table.render()
}

/// What `agents show` (and `agents limits`) print for a person.
fn status_text(s: &AgentStatus) -> String {
    let mut head = Table::new(vec!["", ""]).without_headers();
    head.push(vec![
        "agent".into(),
        format!("{} ({})", s.agent.name, s.agent.id),
    ]);
    head.push(vec!["score".into(), s.reputation.to_string()]);
    let restricted = if s.restricted {
        "yes (its new tasks wait for approval)"
    } else {
        "no"
    };
    head.push(vec!["restricted".into(), restricted.into()]);
    let mut text = head.render();

    text.push('\n');
    let mut usage = Table::new(vec!["", "LIMIT", "USED", "LEFT"]);
    usage.push(vec![
        "pushes per hour".into(),
        s.limits.pushes_per_hour.to_string(),
        s.used.pushes_in_hour.to_string(),
        s.left.pushes.to_string(),
    ]);
    usage.push(vec![
        "executions per day".into(),
        s.limits.executions_per_day.to_string(),
        s.used.executions_in_day.to_string(),
        s.left.executions.to_string(),
    ]);
    usage.push(vec![
        "budget per hour".into(),
        format_dollars(s.limits.budget_hourly_micros),
        format_dollars(s.used.spent_hourly_micros),
        format_dollars(s.left.budget_hourly_micros),
    ]);
    usage.push(vec![
        "budget per day".into(),
        format_dollars(s.limits.budget_daily_micros),
        format_dollars(s.used.spent_daily_micros),
        format_dollars(s.left.budget_daily_micros),
    ]);
    text.push_str(&usage.render());

    text.push_str("\nReputation events:\n");
    if s.reputation_events.is_empty() {
        text.push_str("(none)\n");
    } else {
        let mut events = Table::new(vec!["TIME", "OUTCOME", "DELTA", "SCORE", "REASON"]);
        for e in &s.reputation_events {
            events.push(vec![
                millis_text(e.at_ms),
                e.outcome.clone(),
                format!("{:+}", e.delta),
                e.score_after.to_string(),
                e.reason.clone(),
            ]);
        }
        text.push_str(&events.render());
    }
    text
}

/// Unix milliseconds as an RFC 3339 time in whole seconds.
fn millis_text(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => ms.to_string(),
    }
}

fn cost_text(name: &str, kind: &str, micros: i64, r: &CostRecorded) -> String {
    let mut text = format!(
        "recorded {} of {kind} for agent {name}; spent {} in the last hour, {} in the last day\n",
        format_dollars(micros),
        format_dollars(r.spent_hourly_micros),
        format_dollars(r.spent_daily_micros),
    );
    if let Some(o) = &r.overrun {
        text.push_str(&format!(
            "The cost overran a budget: reputation {} -> {}.",
            o.before, o.after
        ));
        if o.restricted {
            text.push_str(&format!(
                " The agent is now restricted: its new tasks wait for approval (`paddock tasks list --state awaiting_approval`); `paddock agents show {name}` shows its state."
            ));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeControlPlane;

    #[test]
    fn dollars_parse_to_micros_without_floats() {
        assert_eq!(parse_dollars("2"), Ok(2_000_000));
        assert_eq!(parse_dollars("2.5"), Ok(2_500_000));
        assert_eq!(parse_dollars("0.75"), Ok(750_000));
        assert_eq!(parse_dollars(".5"), Ok(500_000));
        assert_eq!(parse_dollars("3."), Ok(3_000_000));
        assert_eq!(parse_dollars(" $1.000001 "), Ok(1_000_001));
        assert_eq!(parse_dollars("0"), Ok(0));
        // 0.1 + 0.2 style errors cannot happen: 0.29 is exactly 290000.
        assert_eq!(parse_dollars("0.29"), Ok(290_000));
        for bad in ["", ".", "-1", "1.2.3", "1,5", "abc", "1e3", "$"] {
            let err = parse_dollars(bad).unwrap_err();
            assert!(err.contains("e.g. 2, 2.5 or 0.75"), "{bad}: {err}");
        }
        assert!(parse_dollars("0.0000001")
            .unwrap_err()
            .contains("6 decimals"));
        assert!(parse_dollars("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_dollars("9223372036855")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn micros_format_as_dollars_with_cents() {
        assert_eq!(format_dollars(0), "$0.00");
        assert_eq!(format_dollars(2_500_000), "$2.50");
        assert_eq!(format_dollars(750_000), "$0.75");
        assert_eq!(format_dollars(1_004_999), "$1.00");
        assert_eq!(format_dollars(1_005_000), "$1.01");
        assert_eq!(format_dollars(-1_250_000), "-$1.25");
        assert_eq!(format_dollars(i64::MIN), "-$9223372036854.78");
    }

    fn status_json() -> serde_json::Value {
        serde_json::json!({
            "agent": {"id": "agt_1", "name": "dev", "created_at": "2026-11-26T02:00:00Z"},
            "reputation": 42,
            "restricted": true,
            "limits": {"pushes_per_hour": 10, "executions_per_day": 100,
                       "budget_hourly_micros": 5_000_000, "budget_daily_micros": 20_000_000},
            "used": {"pushes_in_hour": 2, "executions_in_day": 7,
                     "spent_hourly_micros": 1_250_000, "spent_daily_micros": 3_000_000},
            "left": {"pushes": 8, "executions": 93,
                     "budget_hourly_micros": 3_750_000, "budget_daily_micros": 17_000_000},
            "reputation_events": [{"at_ms": 1_795_000_000_000i64, "outcome": "failure",
                                   "delta": -10, "reason": "task tsk_1 failed", "score_after": 42}],
        })
    }

    #[test]
    fn the_status_shows_score_limits_usage_and_events() {
        let status: AgentStatus = decode(status_json()).unwrap();
        let text = status_text(&status);
        assert_eq!(
            text,
            "agent       dev (agt_1)\n\
             score       42\n\
             restricted  yes (its new tasks wait for approval)\n\
             \n\
             \x20                   LIMIT   USED   LEFT\n\
             pushes per hour     10      2      8\n\
             executions per day  100     7      93\n\
             budget per hour     $5.00   $1.25  $3.75\n\
             budget per day      $20.00  $3.00  $17.00\n\
             \n\
             Reputation events:\n\
             TIME                  OUTCOME  DELTA  SCORE  REASON\n\
             2026-11-18T11:06:40Z  failure  -10    42     task tsk_1 failed\n"
        );
    }

    #[test]
    fn the_agents_table_lists_names_and_ages() {
        let now = humantime::parse_rfc3339_weak("2026-11-26T03:00:00Z").unwrap();
        let agents = vec![AgentInfo {
            id: "agt_1".into(),
            name: "dev".into(),
            created_at: "2026-11-26T02:00:00Z".into(),
        }];
        assert_eq!(
            agents_table(&agents, now),
            "ID     NAME  CREATED\nagt_1  dev   1h ago\n"
        );
    }

    #[test]
    fn limits_need_at_least_one_change() {
        let args = |budget| LimitsArgs {
            name: "dev".into(),
            pushes_per_hour: None,
            executions_per_day: None,
            budget_hourly: budget,
            budget_daily: None,
            json: false,
        };
        assert!(limits_body(args(None))
            .unwrap_err()
            .to_string()
            .contains("--budget-hourly"));
        let (_, body) = limits_body(args(Some(2_500_000))).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"budget_hourly_micros": 2_500_000})
        );
    }

    #[test]
    fn an_overrun_says_the_agent_is_restricted() {
        let recorded = CostRecorded {
            spent_hourly_micros: 6_000_000,
            spent_daily_micros: 6_000_000,
            overrun: Some(Overrun {
                before: 50,
                after: 30,
                restricted: true,
            }),
        };
        let text = cost_text("dev", "llm_tokens", 750_000, &recorded);
        assert!(
            text.starts_with(
                "recorded $0.75 of llm_tokens for agent dev; spent $6.00 in the last hour"
            ),
            "{text}"
        );
        assert!(text.contains("reputation 50 -> 30"), "{text}");
        assert!(text.contains("now restricted"), "{text}");
    }

    #[tokio::test]
    async fn limits_and_costs_go_to_the_agent_and_name_it_when_missing() {
        let fake = FakeControlPlane::start().await;
        let body = LimitOverrides {
            pushes_per_hour: Some(3),
            ..LimitOverrides::default()
        };
        let answer = status_json().to_string();
        let (status, req) = tokio::join!(
            fake.client().set_agent_limits("dev", &body),
            fake.answer(200, "application/json", &answer)
        );
        assert_eq!(status.unwrap()["reputation"], 42);
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("PUT", "/v1/agents/dev/limits")
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&req.body).unwrap(),
            serde_json::json!({"pushes_per_hour": 3})
        );
        let cost = ReportCost {
            kind: "api_call".into(),
            micros: 10,
            note: None,
        };
        let (err, req) = tokio::join!(
            fake.client().report_cost("bot", &cost),
            fake.answer(
                404,
                "application/json",
                r#"{"error":{"code":"not_found","message":"no agent `bot`; `paddock agents list` lists them"}}"#
            )
        );
        assert_eq!(req.path, "/v1/agents/bot/costs");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&req.body).unwrap(),
            serde_json::json!({"kind": "api_call", "micros": 10})
        );
        let err = err.unwrap_err().to_string();
        assert!(
            err.starts_with("no agent `bot`: run `paddock agents list`"),
            "{err}"
        );
    }
}
