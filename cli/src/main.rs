//! `paddock`: list sandboxes and sessions, run commands, and watch or drive
//! live terminals through a Paddock control plane.

mod admin;
mod agents;
mod api;
mod attach;
mod config;
#[cfg(test)]
mod fake;
mod follow;
mod inbox;
mod lifecycle;
mod logs;
mod output;
mod reconnect;
mod stream;
mod tasks;
mod term;
mod tls;
mod tool;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::SystemTime;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use paddock_protocol::api::{OutputFormat, OutputQuery, RegisterSandbox};
use paddock_protocol::{SessionId, Signal};

use crate::admin::{TenantsCmd, TokensCmd, UsersCmd};
use crate::api::{display_base, Client};
use crate::config::{Flags, Settings};
use crate::follow::ExecArgs;
use crate::tool::ToolCli;

#[derive(Debug, Parser)]
#[command(
    name = "paddock",
    version,
    about = "Run commands in Paddock sandboxes and watch or drive their terminals",
    after_help = "Settings come from flags, then the PADDOCK_URL, PADDOCK_TOKEN, PADDOCK_TENANT and PADDOCK_CA_FILE environment variables, then the config file `paddock login` writes ($XDG_CONFIG_HOME/paddock/config.toml, else ~/.config/paddock/config.toml), then the defaults."
)]
struct Cli {
    /// The control plane's base URL [env: PADDOCK_URL] [default: http://127.0.0.1:7700].
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// The API token (printed by `control-plane up`) [env: PADDOCK_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Act on this tenant instead of the token's own: owners only (for any
    /// other role another tenant does not exist) [env: PADDOCK_TENANT].
    #[arg(long, global = true, value_name = "NAME")]
    tenant: Option<String>,
    /// A PEM file of CA certificates to trust besides the platform roots,
    /// for an https:// control plane with a private or self-signed
    /// certificate [env: PADDOCK_CA_FILE].
    #[arg(long, global = true, value_name = "PEM")]
    ca_file: Option<String>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    fn flags(&self) -> Flags {
        Flags {
            url: self.url.clone(),
            token: self.token.clone(),
            tenant: self.tenant.clone(),
            ca_file: self.ca_file.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List sandboxes, or register one.
    Sandboxes(SandboxesArgs),
    /// List a sandbox's sessions.
    Sessions {
        /// Sandbox id (`sbx_…`) or name.
        sandbox: String,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a new session and show its output; exits with its status.
    Exec(ExecCli),
    /// Show a session live, read-only: its current screen, then new output (Ctrl-C quits).
    Watch {
        sandbox: String,
        session: u64,
        /// Replay output from this offset instead (0 replays everything).
        #[arg(long)]
        from: Option<u64>,
    },
    /// Print a session's stored output (holes are noted on stderr).
    Logs {
        sandbox: String,
        session: u64,
        /// The first offset to print (default: 0, the beginning).
        #[arg(long)]
        from: Option<u64>,
        /// The offset to stop before (default: the output so far).
        #[arg(long)]
        to: Option<u64>,
        /// raw (default): the terminal's bytes; asciicast: an asciicast v2
        /// recording of the whole session, written as is (`asciinema play` replays it).
        #[arg(long, value_name = "raw|asciicast", value_parser = logs::parse_format)]
        format: Option<OutputFormat>,
    },
    /// Drive a session from this terminal (a new shell without SESSION); Ctrl-] detaches.
    Attach {
        sandbox: String,
        session: Option<u64>,
        /// Take over from the client that drives the session now.
        #[arg(long)]
        take: bool,
    },
    /// Send a signal (TERM, INT, HUP, KILL, QUIT, USR1, USR2) to a session's processes.
    Signal {
        sandbox: String,
        session: u64,
        /// The signal, e.g. TERM, SIGTERM or int.
        #[arg(value_parser = parse_signal)]
        signal: Signal,
    },
    /// End a session: hang up its processes, then kill them after 2 s.
    Close { sandbox: String, session: u64 },
    /// Call a tool (git, LSP, files, exec) in a sandbox and print its result as JSON.
    Tool(ToolCli),
    /// Show the API token's name, role and tenant.
    Whoami {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List, create and configure tenants.
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// List and create the tenant's users.
    #[command(subcommand)]
    Users(UsersCmd),
    /// List, create and revoke API tokens.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Submit, list, show, decide on and read the output of tasks.
    #[command(subcommand)]
    Tasks(tasks::TasksCmd),
    /// List and create agents; show and set their reputation, limits and costs.
    #[command(subcommand)]
    Agents(agents::AgentsCmd),
    /// Show the tenant's audit log, oldest first.
    Audit {
        /// How many of the latest events (1 to 10000; default 200).
        #[arg(long)]
        limit: Option<u32>,
        /// Print the events as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a token (--token, PADDOCK_TOKEN or stdin) and store it with the URL in the config file.
    Login,
    /// Remove the stored token from the config file.
    Logout,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SandboxesArgs {
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<SandboxesAction>,
}

#[derive(Debug, Subcommand)]
enum SandboxesAction {
    /// Register a sandbox and print the token its agentd connects with.
    Register {
        name: String,
        /// A label, as key=value; may be repeated.
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        /// Print the registration as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a sandbox run by a provider and wait until its agentd connects.
    Create(lifecycle::CreateArgs),
    /// Stop a provider-run sandbox (its workspace is kept).
    Stop(lifecycle::OpArgs),
    /// Start a stopped sandbox again and wait until it connects.
    Start(lifecycle::OpArgs),
    /// Destroy a sandbox: its provider's resources and workspace go, its name is free again.
    Destroy(lifecycle::OpArgs),
    /// Replace a sandbox's agentd token; the old one stops working at once.
    RotateToken {
        /// Sandbox id (`sbx_…`) or name.
        sandbox: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct ExecCli {
    /// Sandbox id (`sbx_…`) or name.
    sandbox: String,
    /// Working directory, relative to the sandbox's work dir or absolute.
    #[arg(long)]
    cwd: Option<String>,
    /// An environment variable, as KEY=VALUE; may be repeated.
    #[arg(long = "env", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// The command and its arguments, after `--`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

fn parse_signal(text: &str) -> Result<Signal, String> {
    Signal::parse(text).ok_or_else(|| {
        let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
        format!("unknown signal `{text}`: use one of {}", names.join(", "))
    })
}

fn main() {
    term::install_panic_hook();
    // Every TLS configuration names `ring`; this covers anything that asks for the default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let code = match tokio::runtime::Runtime::new() {
        Ok(runtime) => match runtime.block_on(run(cli)) {
            Ok(code) => code,
            Err(err) => {
                term::restore_now();
                eprintln!("error: {err:#}");
                1
            }
        },
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            1
        }
    };
    // The stdin reader of `attach` may be blocked in a read that nothing can
    // cancel, so exit without waiting for the runtime's threads.
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// Runs one command; the result is this process's exit code.
async fn run(cli: Cli) -> Result<i32> {
    let env = config::process_env;
    let path = config::default_config_path();
    match cli.command {
        Command::Login => return config::login(&cli.flags(), &env, path.as_deref()).await,
        Command::Logout => return config::logout(path.as_deref(), &env),
        _ => {}
    }
    let file = match &path {
        Some(path) => config::load(path)?,
        None => config::FileConfig::default(),
    };
    let client = Settings::resolve(&cli.flags(), &env, &file)?.client()?;
    match cli.command {
        Command::Sandboxes(args) => sandboxes(&client, args).await,
        Command::Sessions { sandbox, json } => {
            let list = client.list_sessions(&sandbox).await?;
            if json {
                output::print_json(&list)?;
            } else if list.sessions.is_empty() {
                eprintln!("no sessions in {sandbox}: start one with `paddock exec {sandbox} -- CMD` or `paddock attach {sandbox}`");
            } else {
                print!(
                    "{}",
                    output::sessions_table(&list.sessions, SystemTime::now())
                );
            }
            Ok(0)
        }
        Command::Exec(args) => follow::exec(&client, exec_args(args)?).await,
        Command::Watch {
            sandbox,
            session,
            from,
        } => follow::watch(&client, &sandbox, SessionId(session), from).await,
        Command::Logs {
            sandbox,
            session,
            from,
            to,
            format,
        } => {
            logs::logs(
                &client,
                &sandbox,
                SessionId(session),
                OutputQuery { from, to, format },
            )
            .await
        }
        Command::Attach {
            sandbox,
            session,
            take,
        } => attach::attach(&client, &sandbox, session.map(SessionId), take).await,
        Command::Signal {
            sandbox,
            session,
            signal,
        } => {
            client
                .signal_session(&sandbox, SessionId(session), signal)
                .await?;
            eprintln!("sent SIG{} to session {session}", signal.name());
            Ok(0)
        }
        Command::Close { sandbox, session } => {
            client.close_session(&sandbox, SessionId(session)).await?;
            eprintln!("closed session {session}");
            Ok(0)
        }
        Command::Tool(args) => tool::tool(&client, args).await,
        Command::Whoami { json } => admin::whoami(&client, json).await,
        Command::Tenants(cmd) => admin::tenants(&client, cmd).await,
        Command::Users(cmd) => admin::users(&client, cmd).await,
        Command::Tokens(cmd) => admin::tokens(&client, cmd).await,
        Command::Tasks(cmd) => tasks::tasks(&client, cmd).await,
        Command::Agents(cmd) => agents::agents(&client, cmd).await,
        Command::Audit { limit, json } => admin::audit(&client, limit, json).await,
        Command::Login | Command::Logout => unreachable!("handled before the client is made"),
    }
}

async fn sandboxes(client: &Client, args: SandboxesArgs) -> Result<i32> {
    match args.action {
        None => {
            let list = client.list_sandboxes().await?;
            if args.json {
                output::print_json(&list)?;
            } else if list.sandboxes.is_empty() {
                eprintln!("no sandboxes: create one with `paddock sandboxes create NAME`, register one with `paddock sandboxes register NAME`, or start the control plane with `control-plane up --sandboxes 1`");
            } else {
                print!(
                    "{}",
                    output::sandboxes_table(&list.sandboxes, SystemTime::now())
                );
            }
        }
        Some(SandboxesAction::Register { name, labels, json }) => {
            let body = RegisterSandbox {
                name,
                labels: labels.into_iter().collect(),
                ..RegisterSandbox::default()
            };
            let registered = client.register_sandbox(&body).await?;
            print_registered(client, &registered, json || args.json)?;
        }
        Some(SandboxesAction::RotateToken { sandbox, json }) => {
            let registered = client.rotate_sandbox_token(&sandbox).await?;
            print_registered(client, &registered, json || args.json)?;
        }
        Some(SandboxesAction::Create(create)) => return lifecycle::create(client, create).await,
        Some(SandboxesAction::Stop(op)) => {
            return lifecycle::op(client, lifecycle::Op::Stop, op).await
        }
        Some(SandboxesAction::Start(op)) => {
            return lifecycle::op(client, lifecycle::Op::Start, op).await
        }
        Some(SandboxesAction::Destroy(op)) => {
            return lifecycle::op(client, lifecycle::Op::Destroy, op).await
        }
    }
    Ok(0)
}

/// Prints a sandbox's (new) agentd token with how to use it.
fn print_registered(
    client: &api::Client,
    registered: &paddock_protocol::api::SandboxRegistered,
    json: bool,
) -> Result<()> {
    {
        {
            if json {
                output::print_json(registered)?;
            } else {
                let sb = &registered.sandbox;
                println!("sandbox {} ({})", sb.name, sb.id);
                println!("agentd token: {}", registered.token);
                println!();
                println!(
                    "The token is shown only once: store it now. Start the sandbox's agentd with:"
                );
                println!(
                    "  agentd --control-plane {} --token {} --workdir DIR",
                    display_base(client.base()),
                    registered.token
                );
            }
        }
    }
    Ok(())
}

fn exec_args(args: ExecCli) -> Result<ExecArgs> {
    let mut command = args.command.into_iter();
    let Some(program) = command.next() else {
        bail!("no command to run: use `paddock exec SANDBOX -- CMD ARGS...`");
    };
    let env: BTreeMap<String, String> = args.env.into_iter().collect();
    Ok(ExecArgs {
        sandbox: args.sandbox,
        cwd: args.cwd,
        env,
        command: program,
        args: command.collect(),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("paddock").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_everything_after_the_separator_as_the_command() {
        let cli = parse(&[
            "exec", "sb", "--env", "A=1=2", "--cwd", "/tmp", "--", "sh", "-c", "exit 3",
        ]);
        let Command::Exec(args) = cli.command else {
            panic!("not exec: {:?}", cli.command);
        };
        let exec = exec_args(args).unwrap();
        assert_eq!(exec.sandbox, "sb");
        assert_eq!(exec.cwd.as_deref(), Some("/tmp"));
        assert_eq!(exec.env.get("A").map(String::as_str), Some("1=2"));
        assert_eq!(exec.command, "sh");
        assert_eq!(exec.args, ["-c", "exit 3"]);
    }

    #[test]
    fn exec_flags_after_the_command_belong_to_the_command() {
        let cli = parse(&["exec", "sb", "ls", "-la", "--cwd", "x"]);
        let Command::Exec(args) = cli.command else {
            panic!("not exec");
        };
        let exec = exec_args(args).unwrap();
        assert_eq!(exec.cwd, None);
        assert_eq!(exec.command, "ls");
        assert_eq!(exec.args, ["-la", "--cwd", "x"]);
    }

    #[test]
    fn exec_without_a_command_is_refused() {
        assert!(Cli::try_parse_from(["paddock", "exec", "sb"]).is_err());
        assert!(Cli::try_parse_from(["paddock", "exec", "sb", "--"]).is_err());
    }

    #[test]
    fn sandboxes_lists_or_registers() {
        let cli = parse(&["sandboxes", "--json"]);
        assert!(matches!(
            cli.command,
            Command::Sandboxes(SandboxesArgs {
                json: true,
                action: None
            })
        ));
        let cli = parse(&[
            "sandboxes",
            "register",
            "box",
            "--label",
            "team=a",
            "--json",
        ]);
        let Command::Sandboxes(SandboxesArgs {
            action: Some(SandboxesAction::Register { name, labels, json }),
            ..
        }) = cli.command
        else {
            panic!("not register");
        };
        assert_eq!(name, "box");
        assert_eq!(labels, [("team".to_owned(), "a".to_owned())]);
        assert!(json);
        assert!(Cli::try_parse_from([
            "paddock",
            "sandboxes",
            "register",
            "x",
            "--label",
            "novalue"
        ])
        .is_err());
    }

    #[test]
    fn attach_session_is_optional_and_signals_parse_by_name() {
        let cli = parse(&["attach", "sb"]);
        assert!(matches!(
            cli.command,
            Command::Attach {
                session: None,
                take: false,
                ..
            }
        ));
        let cli = parse(&["attach", "sb", "7", "--take"]);
        assert!(matches!(
            cli.command,
            Command::Attach {
                session: Some(7),
                take: true,
                ..
            }
        ));
        let cli = parse(&["signal", "sb", "7", "SIGTERM"]);
        assert!(matches!(
            cli.command,
            Command::Signal {
                signal: Signal::Term,
                ..
            }
        ));
        let cli = parse(&["signal", "sb", "7", "int"]);
        assert!(matches!(
            cli.command,
            Command::Signal {
                signal: Signal::Int,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["paddock", "signal", "sb", "7", "WINCH"]).is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&[
            "watch",
            "sb",
            "3",
            "--url",
            "http://h:1",
            "--token",
            "t",
            "--from",
            "5",
        ]);
        assert_eq!(cli.url.as_deref(), Some("http://h:1"));
        assert_eq!(cli.token.as_deref(), Some("t"));
        assert!(matches!(
            cli.command,
            Command::Watch {
                session: 3,
                from: Some(5),
                ..
            }
        ));
    }

    #[test]
    fn watch_joins_live_unless_asked_to_replay() {
        let cli = parse(&["watch", "sb", "3"]);
        assert!(matches!(cli.command, Command::Watch { from: None, .. }));
    }

    #[test]
    fn logs_takes_an_optional_range() {
        let cli = parse(&["logs", "sb", "3"]);
        assert!(matches!(
            cli.command,
            Command::Logs {
                session: 3,
                from: None,
                to: None,
                ..
            }
        ));
        let cli = parse(&["logs", "sb", "3", "--from", "10", "--to", "20"]);
        assert!(matches!(
            cli.command,
            Command::Logs {
                from: Some(10),
                to: Some(20),
                ..
            }
        ));
        assert!(Cli::try_parse_from(["paddock", "logs", "sb", "3", "--from", "-1"]).is_err());
    }

    #[test]
    fn logs_takes_a_format() {
        let cli = parse(&["logs", "sb", "3", "--format", "asciicast"]);
        assert!(matches!(
            cli.command,
            Command::Logs {
                format: Some(OutputFormat::Asciicast),
                ..
            }
        ));
        let cli = parse(&["logs", "sb", "3"]);
        assert!(matches!(cli.command, Command::Logs { format: None, .. }));
        assert!(Cli::try_parse_from(["paddock", "logs", "sb", "3", "--format", "mp4"]).is_err());
    }

    #[test]
    fn the_tenant_flag_is_global() {
        let cli = parse(&["tokens", "list", "--tenant", "acme", "--json"]);
        assert_eq!(cli.flags().tenant.as_deref(), Some("acme"));
        assert!(matches!(
            cli.command,
            Command::Tokens(TokensCmd::List { json: true })
        ));
    }

    #[test]
    fn tokens_create_parses_role_user_and_lifetime() {
        let cli = parse(&[
            "tokens",
            "create",
            "ci",
            "--role",
            "agent",
            "--user",
            "usr_1",
            "--expires",
            "12h",
        ]);
        let Command::Tokens(TokensCmd::Create(args)) = cli.command else {
            panic!("not tokens create");
        };
        assert_eq!(args.role, paddock_protocol::admin::Role::Agent);
        assert_eq!(args.user_id.as_deref(), Some("usr_1"));
        assert_eq!(
            args.expires,
            Some(std::time::Duration::from_secs(12 * 3600))
        );
        assert!(Cli::try_parse_from(["paddock", "tokens", "create", "ci"]).is_err());
        assert!(
            Cli::try_parse_from(["paddock", "tokens", "create", "ci", "--role", "root"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "paddock",
            "tokens",
            "create",
            "ci",
            "--role",
            "agent",
            "--expires",
            "soon"
        ])
        .is_err());
    }

    #[test]
    fn tenants_set_needs_exactly_one_retention() {
        let cli = parse(&["tenants", "set", "acme", "--keep-forever"]);
        assert!(matches!(
            cli.command,
            Command::Tenants(TenantsCmd::Set {
                keep_forever: true,
                retention_days: None,
                ..
            })
        ));
        let cli = parse(&["tenants", "set", "acme", "--retention-days", "30", "--json"]);
        assert!(matches!(
            cli.command,
            Command::Tenants(TenantsCmd::Set {
                keep_forever: false,
                retention_days: Some(30),
                json: true,
                ..
            })
        ));
        for bad in [
            &["tenants", "set", "acme"][..],
            &[
                "tenants",
                "set",
                "acme",
                "--retention-days",
                "3",
                "--keep-forever",
            ],
            &["tenants", "set", "acme", "--retention-days", "0"],
        ] {
            let args = std::iter::once("paddock").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tool_takes_inline_or_file_arguments_but_not_both() {
        let cli = parse(&[
            "tool",
            "sb",
            "exec",
            "--json",
            r#"{"command":"true"}"#,
            "--timeout",
            "90s",
            "--raw",
        ]);
        let Command::Tool(args) = cli.command else {
            panic!("not tool");
        };
        assert_eq!(args.tool, "exec");
        assert_eq!(args.args_json.as_deref(), Some(r#"{"command":"true"}"#));
        assert_eq!(args.timeout, Some(std::time::Duration::from_secs(90)));
        assert!(args.raw);
        let cli = parse(&["tool", "sb", "git_status", "--args-file", "-"]);
        assert!(matches!(
            cli.command,
            Command::Tool(ToolCli {
                args_file: Some(_),
                ..
            })
        ));
        assert!(Cli::try_parse_from([
            "paddock",
            "tool",
            "sb",
            "x",
            "--json",
            "{}",
            "--args-file",
            "f"
        ])
        .is_err());
    }

    #[test]
    fn login_whoami_and_audit_parse() {
        let cli = parse(&["login", "--url", "http://h:1", "--token", "t"]);
        assert!(matches!(cli.command, Command::Login));
        assert_eq!(cli.flags().token.as_deref(), Some("t"));
        assert!(matches!(parse(&["logout"]).command, Command::Logout));
        assert!(matches!(
            parse(&["whoami", "--json"]).command,
            Command::Whoami { json: true }
        ));
        assert!(matches!(
            parse(&["audit", "--limit", "5"]).command,
            Command::Audit {
                limit: Some(5),
                json: false
            }
        ));
    }
}
