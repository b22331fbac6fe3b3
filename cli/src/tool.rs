//! `paddock tool SANDBOX TOOL`: one typed tool call (git, language servers,
//! files, exec) in a sandbox through `POST /v1/sandboxes/{sandbox}/tools/{tool}`,
//! with the arguments as a JSON object and the result printed as JSON (or,
//! for `exec --raw`, as the command's own output and exit status).

use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use paddock_protocol::tools::CapturedOutput;
use paddock_protocol::{ExitStatus, ToolCall};
use reqwest::Method;
use serde_json::{Map, Value};

use crate::admin::parse_duration;
use crate::api::{Client, Target};

/// How long the HTTP request may outlast the call's own deadline: the
/// control plane and agentd answer `timeout` themselves before that.
const DEADLINE_SLACK: Duration = Duration::from_secs(30);
/// The call's deadline when this paddock does not know the tool (a newer
/// control plane may): the longest of the protocol's defaults, and more.
const UNKNOWN_TOOL_DEADLINE: Duration = Duration::from_secs(120);
/// The most argument text read from a file or stdin.
const MAX_ARGS_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct ToolCli {
    /// Sandbox id (`sbx_…`) or name.
    pub sandbox: String,
    /// The tool, e.g. git_status, git_clone, file_read, file_write, lsp_hover, exec.
    pub tool: String,
    /// The tool's arguments as a JSON object, e.g. '{"repo": "."}' (default: {}).
    #[arg(long = "json", value_name = "ARGS_JSON", conflicts_with = "args_file")]
    pub args_json: Option<String>,
    /// Read the arguments from FILE, or from stdin with `-`.
    #[arg(long, value_name = "FILE")]
    pub args_file: Option<PathBuf>,
    /// How long the call may take, e.g. 30, 90s or 5m (sent as timeout_ms).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// exec only: print the command's stdout and stderr to this process's
    /// stdout and stderr instead of the JSON result.
    #[arg(long)]
    pub raw: bool,
}

impl Client {
    /// Calls `tool` in `sandbox` with `args`; the answer is the tool's
    /// result as JSON. `deadline` bounds the whole HTTP request.
    pub async fn call_tool(
        &self,
        sandbox: &str,
        tool: &str,
        args: &Map<String, Value>,
        deadline: Duration,
    ) -> Result<Value> {
        let req = self
            .request(Method::POST, &["v1", "sandboxes", sandbox, "tools", tool])?
            .json(args)
            .timeout(deadline);
        let target = Target::Tool {
            sandbox: sandbox.to_owned(),
            tool: tool.to_owned(),
        };
        self.send_json(req, &target).await
    }
}

/// Runs `paddock tool`; the result is this process's exit code.
pub async fn tool(client: &Client, cli: ToolCli) -> Result<i32> {
    if cli.raw && cli.tool != "exec" {
        bail!(
            "--raw applies to exec only: {} prints its result as JSON; leave --raw out",
            cli.tool
        );
    }
    let text = args_text(&cli)?;
    let args = call_args(&cli.tool, text.as_deref(), cli.timeout)?;
    let deadline = call_deadline(&cli.tool, &args);
    let result = client
        .call_tool(&cli.sandbox, &cli.tool, &args, deadline)
        .await?;
    let outcome = render(&result, cli.raw)?;
    emit(&outcome)?;
    Ok(outcome.code)
}

/// The arguments' text as given: `--json`, `--args-file FILE` or `-` (stdin).
fn args_text(cli: &ToolCli) -> Result<Option<String>> {
    if let Some(text) = &cli.args_json {
        return Ok(Some(text.clone()));
    }
    let Some(path) = &cli.args_file else {
        return Ok(None);
    };
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_ARGS_BYTES)
            .read_to_string(&mut text)
            .context("could not read the arguments from stdin: pipe in a JSON object")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_ARGS_BYTES).read_to_string(&mut text))
            .with_context(|| {
                format!(
                    "could not read the arguments from {}: check the path, or pass them with --json",
                    path.display()
                )
            })?;
    }
    Ok(Some(text))
}

/// The request body: the arguments as a JSON object without the `"tool"`
/// tag (it is in the path), plus `timeout_ms` from `--timeout`.
pub fn call_args(
    tool: &str,
    text: Option<&str>,
    timeout: Option<Duration>,
) -> Result<Map<String, Value>> {
    let mut args = match text.map(str::trim) {
        None | Some("") => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => bail!(
                "the arguments must be a JSON object, not {}: e.g. --json '{{\"repo\": \".\"}}'",
                json_kind(&other)
            ),
            Err(err) => bail!(
                "the arguments are not valid JSON ({err}): pass an object, e.g. --json '{{\"repo\": \".\"}}'"
            ),
        },
    };
    // Arguments copied from a tagged ToolCall may carry the tag; it must agree.
    match args.remove("tool") {
        None => {}
        Some(Value::String(tagged)) if tagged == tool => {}
        Some(tagged) => bail!(
            "the arguments name the tool {tagged} but the command line names {tool}: drop \"tool\" from the arguments, or call {tagged}"
        ),
    }
    if let Some(timeout) = timeout {
        if args.contains_key("call_timeout_ms") {
            bail!("the timeout is given twice, as --timeout and as call_timeout_ms in the arguments: keep one");
        }
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        args.insert("call_timeout_ms".to_owned(), Value::from(ms));
    }
    Ok(args)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How long to wait for the answer: the call's timeout (given, or the
/// tool's default as the control plane computes it) plus slack.
pub fn call_deadline(tool: &str, args: &Map<String, Value>) -> Duration {
    let given = args.get("call_timeout_ms").and_then(Value::as_u64);
    let default = || {
        let mut tagged = args.clone();
        tagged.remove("call_timeout_ms");
        tagged.insert("tool".to_owned(), Value::String(tool.to_owned()));
        serde_json::from_value::<ToolCall>(Value::Object(tagged))
            .ok()
            .map(|call| call.default_timeout_ms())
    };
    let call = given
        .or_else(default)
        .map_or(UNKNOWN_TOOL_DEADLINE, Duration::from_millis);
    call.saturating_add(DEADLINE_SLACK)
}

/// What `paddock tool` prints, and its exit code.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// The result as pretty JSON, or with `raw` an exec's own output; an exec
/// result's status is the exit code.
pub fn render(result: &Value, raw: bool) -> Result<Outcome> {
    let is_exec = result.get("tool").and_then(Value::as_str) == Some("exec");
    let status = match result.get("status") {
        Some(status) if is_exec => Some(
            serde_json::from_value::<ExitStatus>(status.clone()).map_err(|err| {
                anyhow!("the exec result's status is not an exit status ({err}): are paddock and the control plane the same version?")
            })?,
        ),
        _ => None,
    };
    let code = status.as_ref().map_or(0, ExitStatus::shell_code);
    if !raw {
        let text =
            serde_json::to_string_pretty(result).context("could not encode the result as JSON")?;
        return Ok(Outcome {
            stdout: format!("{text}\n"),
            stderr: String::new(),
            code,
        });
    }
    let captured = |name: &str| -> Result<CapturedOutput> {
        let value = result.get(name).cloned().unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|err| {
            anyhow!("the exec result has no usable {name} ({err}): run without --raw to see the result as JSON")
        })
    };
    let (out, err) = (captured("stdout")?, captured("stderr")?);
    let mut stderr = err.text.clone();
    let mut note = |text: String| {
        if !stderr.is_empty() && !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        stderr.push_str(&format!("[paddock: {text}]\n"));
    };
    for (name, captured) in [("stdout", &out), ("stderr", &err)] {
        if captured.omitted_bytes > 0 {
            note(format!(
                "{} of {} bytes of {name} left out; raise max_output in the arguments to keep more",
                captured.omitted_bytes, captured.total_bytes
            ));
        }
    }
    if result.get("timed_out").and_then(Value::as_bool) == Some(true) {
        note("the command was killed at its timeout; raise timeout_ms in the arguments".to_owned());
    }
    Ok(Outcome {
        stdout: out.text,
        stderr,
        code,
    })
}

fn emit(outcome: &Outcome) -> Result<()> {
    let written = std::io::stdout()
        .write_all(outcome.stdout.as_bytes())
        .and_then(|()| std::io::stdout().flush());
    match written {
        // Whoever reads the output (`head`, say) has all it wants.
        Err(err) if err.kind() != ErrorKind::BrokenPipe => {
            return Err(anyhow!(err).context("could not write the result to stdout"))
        }
        _ => {}
    }
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fake::FakeControlPlane;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn arguments_are_an_object_without_the_tag() {
        assert_eq!(call_args("git_status", None, None).unwrap(), Map::new());
        assert_eq!(
            call_args("git_status", Some("  "), None).unwrap(),
            Map::new()
        );
        assert_eq!(
            call_args(
                "git_status",
                Some(r#"{"tool":"git_status","repo":"."}"#),
                None
            )
            .unwrap(),
            obj(json!({"repo": "."}))
        );
        let err = call_args("git_status", Some(r#"{"tool":"exec"}"#), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("drop \"tool\""), "{err}");
        let err = call_args("x", Some("[1]"), None).unwrap_err().to_string();
        assert!(err.contains("not an array"), "{err}");
        let err = call_args("x", Some("{repo:"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn the_timeout_is_sent_in_milliseconds_once() {
        let args = call_args(
            "git_status",
            Some(r#"{"repo":"."}"#),
            Some(Duration::from_secs(90)),
        )
        .unwrap();
        assert_eq!(args, obj(json!({"repo": ".", "call_timeout_ms": 90_000})));
        let err = call_args(
            "x",
            Some(r#"{"call_timeout_ms":5}"#),
            Some(Duration::from_secs(1)),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("keep one"), "{err}");
    }

    #[test]
    fn the_deadline_follows_the_call_timeout_or_the_tools_default() {
        let given = obj(json!({"repo": ".", "call_timeout_ms": 600_000}));
        assert_eq!(
            call_deadline("git_status", &given),
            Duration::from_secs(600) + DEADLINE_SLACK
        );
        let exec = obj(json!({"command": "true", "timeout_ms": 1000}));
        // exec's own `timeout_ms` limits the process; the call waits that plus agentd's margin.
        assert_eq!(
            call_deadline("exec", &exec),
            Duration::from_millis(
                paddock_protocol::ToolCall::Exec(
                    serde_json::from_value(json!({"command": "true", "timeout_ms": 1000})).unwrap()
                )
                .default_timeout_ms()
            ) + DEADLINE_SLACK
        );
        let status = obj(json!({"repo": "."}));
        assert_eq!(
            call_deadline("git_status", &status),
            Duration::from_millis(paddock_protocol::DEFAULT_GIT_TIMEOUT_MS) + DEADLINE_SLACK
        );
        assert_eq!(
            call_deadline("from_the_future", &Map::new()),
            UNKNOWN_TOOL_DEADLINE + DEADLINE_SLACK
        );
    }

    fn exec_result(code: Option<i32>, signal: Option<i32>) -> Value {
        json!({
            "tool": "exec",
            "status": {"code": code, "signal": signal},
            "stdout": {"text": "out\n", "total_bytes": 4},
            "stderr": {"text": "err", "total_bytes": 3000, "omitted_bytes": 2997},
            "timed_out": signal.is_some(),
            "duration_ms": 12
        })
    }

    #[test]
    fn exec_results_exit_with_the_commands_status() {
        let json = render(&exec_result(Some(3), None), false).unwrap();
        assert_eq!(json.code, 3);
        assert!(json.stdout.starts_with("{\n"), "{}", json.stdout);
        assert_eq!(json.stderr, "");

        let raw = render(&exec_result(Some(0), None), true).unwrap();
        assert_eq!(raw.code, 0);
        assert_eq!(raw.stdout, "out\n");
        assert!(
            raw.stderr
                .starts_with("err\n[paddock: 2997 of 3000 bytes of stderr left out"),
            "{}",
            raw.stderr
        );

        let killed = render(&exec_result(None, Some(9)), true).unwrap();
        assert_eq!(killed.code, 137);
        assert!(
            killed.stderr.contains("killed at its timeout"),
            "{}",
            killed.stderr
        );

        // Other tools exit 0 whatever their fields are called.
        let other = json!({"tool": "file_stat", "status": "whatever"});
        assert_eq!(render(&other, false).unwrap().code, 0);
    }

    #[tokio::test]
    async fn calls_post_the_arguments_and_errors_give_tool_hints() {
        let fake = FakeControlPlane::start().await;
        let client = fake.client();
        let args = obj(json!({"repo": "."}));
        let answer = r#"{"tool":"git_status","branch":"main"}"#;
        let (result, req) = tokio::join!(
            client.call_tool("local 1", "git_status", &args, Duration::from_secs(5)),
            fake.answer(200, "application/json", answer)
        );
        assert_eq!(result.unwrap()["branch"], "main");
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v1/sandboxes/local%201/tools/git_status");
        assert_eq!(
            serde_json::from_slice::<Value>(&req.body).unwrap(),
            json!({"repo": "."})
        );

        let cases = [
            (408, "timeout", "--timeout"),
            (422, "tool_failed", "check its arguments"),
            (409, "non_fast_forward", "git_fetch"),
            (403, "path_escape", "inside it"),
            (401, "auth_failed", "credentials"),
            (409, "cancelled", "run it again"),
            (409, "sandbox_disconnected", "agentd running"),
        ];
        for (status, code, hint) in cases {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"it went wrong"}}}}"#);
            let (result, _) = tokio::join!(
                client.call_tool("sb", "git_push", &args, Duration::from_secs(5)),
                fake.answer(status, "application/json", &body)
            );
            let err = result.unwrap_err().to_string();
            assert!(err.contains(hint), "{code}: {err}");
            assert!(err.contains("it went wrong"), "{code}: {err}");
        }
    }
}
