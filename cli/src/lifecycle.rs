//! `paddock sandboxes create|stop|start|destroy`: sandboxes run by a
//! provider. Each command waits until the sandbox gets where it was sent
//! (`connected`, `stopped`, `destroyed`), with progress on stderr.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use paddock_protocol::api::{RegisterSandbox, SandboxInfo, SandboxRegistered, SandboxStatus};
use reqwest::Method;

use crate::api::{Client, Target};
use crate::output;

impl Client {
    pub async fn get_sandbox(&self, sandbox: &str) -> Result<SandboxInfo> {
        let req = self.request(Method::GET, &["v1", "sandboxes", sandbox])?;
        self.send_json(req, &Target::Sandbox(sandbox.to_owned()))
            .await
    }

    /// `POST .../stop`, `POST .../start` or `DELETE` of a sandbox.
    async fn sandbox_op(&self, sandbox: &str, op: Op) -> Result<SandboxInfo> {
        let req = match op {
            Op::Stop => self.request(Method::POST, &["v1", "sandboxes", sandbox, "stop"])?,
            Op::Start => self.request(Method::POST, &["v1", "sandboxes", sandbox, "start"])?,
            Op::Destroy => self.request(Method::DELETE, &["v1", "sandboxes", sandbox])?,
        };
        self.send_json(req, &Target::Sandbox(sandbox.to_owned()))
            .await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Stop,
    Start,
    Destroy,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The sandbox's name (letters, digits, '-', '_', '.').
    pub name: String,
    /// `local`, `docker` or `fly` [default: the tenant's provider].
    #[arg(long)]
    pub provider: Option<String>,
    /// A size configured on the control plane (small, medium, large by default).
    #[arg(long)]
    pub size: Option<String>,
    /// A label, as key=value; may be repeated.
    #[arg(long = "label", value_parser = crate::parse_key_value)]
    pub labels: Vec<(String, String)>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct OpArgs {
    /// Sandbox id (`sbx_…`) or name.
    pub sandbox: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Return at once instead of waiting for the sandbox to get there.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Print the sandbox as JSON when done.
    #[arg(long)]
    pub json: bool,
}

pub async fn create(client: &Client, args: CreateArgs) -> Result<i32> {
    let body = RegisterSandbox {
        name: args.name.clone(),
        labels: args.labels.into_iter().collect(),
        // Without either, the control plane would only register it by hand.
        provider: Some(args.provider.unwrap_or_else(|| "default".into())),
        size: args.size,
    };
    eprintln!(
        "creating sandbox {} with the {} provider…",
        body.name,
        body.provider.as_deref().unwrap_or("default")
    );
    let made: SandboxRegistered = client.register_sandbox(&body).await?;
    let sb = made.sandbox;
    eprintln!(
        "{} ({}) is {} on {}",
        sb.name,
        sb.id,
        sb.status.as_str(),
        sb.provider.as_deref().unwrap_or("?")
    );
    finish(client, sb, SandboxStatus::Connected, &args.wait).await
}

pub async fn op(client: &Client, op: Op, args: OpArgs) -> Result<i32> {
    let (doing, goal) = match op {
        Op::Stop => ("stopping", SandboxStatus::Stopped),
        Op::Start => ("starting", SandboxStatus::Connected),
        Op::Destroy => ("destroying", SandboxStatus::Destroyed),
    };
    eprintln!("{doing} sandbox {}…", args.sandbox);
    let sb = client.sandbox_op(&args.sandbox, op).await?;
    finish(client, sb, goal, &args.wait).await
}

/// Waits (unless told not to) until `sb` reaches `goal`, then prints it.
async fn finish(
    client: &Client,
    mut sb: SandboxInfo,
    goal: SandboxStatus,
    wait: &WaitArgs,
) -> Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(wait.timeout);
    let mut last = sb.status;
    while !wait.no_wait && sb.status != goal {
        if sb.status == SandboxStatus::Failed {
            bail!(
                "sandbox {} failed: {}; see the control plane's log, then `paddock sandboxes destroy {}` and create it again",
                sb.name,
                sb.reason.as_deref().unwrap_or("no reason given"),
                sb.name
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "sandbox {} is still {} after {}s (waiting for {}); check `paddock sandboxes` later, or wait longer with --timeout",
                sb.name,
                sb.status.as_str(),
                wait.timeout,
                goal.as_str()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Destroyed sandboxes are found by id only: their name is free again.
        sb = client.get_sandbox(sb.id.as_str()).await?;
        if sb.status != last {
            eprintln!("{} is {}", sb.name, sb.status.as_str());
            last = sb.status;
        }
    }
    if wait.json {
        output::print_json(&sb)?;
    } else {
        println!("{} {} {}", sb.id, sb.name, sb.status.as_str());
    }
    Ok(0)
}
