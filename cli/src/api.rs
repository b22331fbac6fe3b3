//! The control plane's HTTP API as async methods, and the one place that turns
//! its failures into messages saying what to do next.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use paddock_protocol::admin::TENANT_HEADER;
use paddock_protocol::api::{
    ErrorBody, OpenSessionRequest, OutputFormat, OutputQuery, RegisterSandbox, SandboxList,
    SandboxRegistered, SessionInfo, SessionList, SignalRequest,
};
use paddock_protocol::{ErrorCode, SessionId, Signal};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;

/// How long a TCP connect to the control plane may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take; opening a session waits for agentd,
/// and the control plane answers `timeout` itself well before this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a download whose body is streamed may take in all; what bounds
/// it in practice is the time each chunk may take (see `logs`).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What a request was about, so that an error can name it and suggest the next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    ControlPlane,
    Sandbox(String),
    Session {
        sandbox: String,
        session: SessionId,
    },
    /// A tool call in a sandbox.
    Tool {
        sandbox: String,
        tool: String,
    },
    /// A tenant named in the path.
    Tenant(String),
    /// An API token named in the path.
    Token(String),
}

/// Parses `--url`: an `http://` or `https://` base URL; a bare `HOST:PORT` means `http://`.
pub fn parse_base_url(text: &str) -> Result<Url> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = Url::parse(&with_scheme).map_err(|err| {
        anyhow!("invalid control plane URL `{text}` ({err}): set PADDOCK_URL or --url to something like http://127.0.0.1:7700")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("invalid control plane URL `{text}`: set PADDOCK_URL or --url to an https:// or http:// URL such as http://127.0.0.1:7700");
    }
    Ok(url)
}

/// `base` with `segments` appended to its path, each percent-encoded as needed.
pub fn api_url(base: &Url, segments: &[&str]) -> Result<Url> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| anyhow!("the control plane URL `{base}` cannot have a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// The message for a control plane that cannot be reached at all.
pub fn unreachable_message(base: &Url) -> String {
    format!(
        "could not reach the control plane at {}: is it running? Start it with `cargo run --release -p control-plane -- up`",
        display_base(base)
    )
}

/// The base URL as a person typed it, without the trailing slash `Url` adds.
pub fn display_base(base: &Url) -> String {
    base.as_str().trim_end_matches('/').to_owned()
}

/// Turns a failed HTTP answer into a message that says what went wrong and what to do.
pub fn describe_failure(status: StatusCode, body: &[u8], target: &Target) -> String {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let (code, server) = match parsed {
        Some(body) => (body.error.code, body.error.message),
        None => {
            let code = match status {
                StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
                StatusCode::FORBIDDEN => ErrorCode::Forbidden,
                StatusCode::NOT_FOUND => ErrorCode::NotFound,
                _ => ErrorCode::Unknown,
            };
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            (code, text)
        }
    };
    let said = if server.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("the control plane said: {server}")
    };
    match code {
        ErrorCode::Unauthorized => {
            "the control plane refused the API token (invalid, expired or revoked): check PADDOCK_TOKEN or --token, or run `paddock login`".to_owned()
        }
        ErrorCode::Forbidden => format!(
            "the API token may not do this ({said}): use a token with more rights; `paddock whoami` shows its role"
        ),
        // An owner's `--tenant` naming no tenant fails every request this way.
        ErrorCode::NotFound
            if server.starts_with("no tenant") && !matches!(target, Target::Tenant(_)) =>
        {
            format!("{server}: check --tenant or PADDOCK_TENANT; `paddock tenants list` lists them (owners only)")
        }
        ErrorCode::NotFound => match target {
            Target::Session { sandbox, session } if !mentions_sandbox_only(&server) => hinted(
                format!("no session {session} in sandbox `{sandbox}`"),
                &said,
                &format!("run `paddock sessions {sandbox}` to list them"),
                "paddock sessions",
            ),
            // A tool's own "not found" (a file, a repository) is not the sandbox's.
            Target::Tool { sandbox, tool } if !server.starts_with("no sandbox") => format!(
                "the tool {tool} could not find what it was asked for ({said}): check the paths in the arguments; `paddock tool {sandbox} file_list --json '{{\"path\":\".\"}}'` lists the workspace"
            ),
            Target::Sandbox(sandbox)
            | Target::Session { sandbox, .. }
            | Target::Tool { sandbox, .. } => hinted(
                format!("no sandbox `{sandbox}`"),
                &said,
                "run `paddock sandboxes` to list them",
                "paddock sandboxes",
            ),
            Target::Tenant(tenant) => hinted(
                format!("no tenant `{tenant}`"),
                &said,
                "run `paddock tenants list` to list them (owners only; an admin can change only its own tenant)",
                "paddock tenants list",
            ),
            Target::Token(token) => hinted(
                format!("no token `{token}`"),
                &said,
                "run `paddock tokens list` to list them",
                "paddock tokens list",
            ),
            Target::ControlPlane => format!(
                "the control plane does not know this request ({said}): are paddock and the control plane the same version?"
            ),
        },
        ErrorCode::SandboxDisconnected => hinted(
            format!(
                "sandbox {} is not connected",
                target_sandbox(target).unwrap_or("the sandbox")
            ),
            &said,
            "is its agentd running? `paddock sandboxes` shows its last-seen time",
            "agentd running",
        ),
        ErrorCode::SpawnFailed => format!(
            "the sandbox could not start the command ({said}): check the command, its arguments and --cwd"
        ),
        ErrorCode::AuthFailed => format!(
            "the sandbox's tool was refused by a remote ({said}): pass credentials in the call's arguments, e.g. \"credentials\": {{\"token\": \"…\"}}, and check that they are valid"
        ),
        ErrorCode::PathEscape => format!(
            "the path leaves the sandbox workspace ({said}): use a path relative to the workspace, or an absolute one inside it"
        ),
        ErrorCode::NonFastForward => format!(
            "the push was refused as not fast-forward ({said}): fetch (git_fetch) and integrate the remote's commits first, or push with \"force\": true"
        ),
        ErrorCode::ToolFailed => match target {
            Target::Tool { sandbox, tool } => format!(
                "the tool {tool} failed in {sandbox} ({said}): check its arguments and the state of the workspace (e.g. `paddock tool {sandbox} git_status --json '{{\"repo\":\".\"}}'`)"
            ),
            _ => format!("the tool failed in the sandbox ({said}): check its arguments"),
        },
        ErrorCode::Cancelled => format!("the call was cancelled ({said}): run it again if still needed"),
        ErrorCode::QuotaExceeded | ErrorCode::BudgetExceeded => format!(
            "refused by governance ({said}): wait as it says, or ask an admin to raise the limit (`paddock agents limits`)"
        ),
        ErrorCode::LimitExceeded => format!(
            "refused by a limit of the control plane ({said}): close what you hold open, or ask its operator to raise the limit"
        ),
        ErrorCode::PayloadTooLarge => format!(
            "the request is larger than the control plane accepts ({said}): send less, or ask its operator to raise max_body_bytes"
        ),
        ErrorCode::Unavailable => format!(
            "the control plane cannot reach its database ({said}): check the database, then retry"
        ),
        ErrorCode::AgentRestricted => format!(
            "the agent is restricted ({said}): its tasks wait for approval (`paddock tasks approve ID`)"
        ),
        ErrorCode::SessionEnded => match target {
            Target::Session { sandbox, session } => hinted(
                format!("session {session} has already ended"),
                &said,
                &format!("`paddock sessions {sandbox}` shows its exit status"),
                "paddock sessions",
            ),
            _ => format!("the session has already ended ({said})"),
        },
        ErrorCode::DriverExists => {
            format!("another client drives the session ({said}): use --take to take over")
        }
        ErrorCode::Timeout if matches!(target, Target::Tool { .. }) => format!(
            "the tool did not finish in time ({said}): give it longer with --timeout (e.g. --timeout 5m), or check that the sandbox is healthy"
        ),
        ErrorCode::Timeout => {
            let sandbox = target_sandbox(target).unwrap_or("the sandbox");
            format!(
                "{sandbox} did not answer in time ({said}): is its agentd healthy? try again, and see `paddock sandboxes`"
            )
        }
        ErrorCode::UnsupportedVersion => format!(
            "the control plane does not speak this paddock's protocol ({said}): use paddock and control-plane of the same version"
        ),
        ErrorCode::BadRequest => match target {
            Target::Tool { tool, .. } => format!(
                "the control plane refused the call ({said}): check the tool name and its arguments for {tool} (a JSON object of its fields; `paddock tool --help`)"
            ),
            _ => format!("the control plane refused the request ({said}): check the arguments (`paddock help`)"),
        },
        ErrorCode::Conflict => format!(
            "the request conflicts with the current state ({said}): check what exists (the matching `paddock … list`) and try again"
        ),
        ErrorCode::Internal | ErrorCode::Unknown => format!(
            "the control plane failed with HTTP {status} ({said}): its log says more; try again"
        ),
    }
}

/// `lead (said): hint`, leaving out what the control plane said when it only
/// repeats the lead or the hint (recognised by `marker`).
fn hinted(lead: String, said: &str, hint: &str, marker: &str) -> String {
    if said.contains(marker) || said.ends_with(&format!("said: {lead}")) {
        format!("{lead}: {hint}")
    } else {
        format!("{lead} ({said}): {hint}")
    }
}

/// Whether a 404's message is about the sandbox rather than the session.
fn mentions_sandbox_only(server: &str) -> bool {
    let lower = server.to_ascii_lowercase();
    lower.contains("sandbox") && !lower.contains("session")
}

fn target_sandbox(target: &Target) -> Option<&str> {
    match target {
        Target::Sandbox(sandbox)
        | Target::Session { sandbox, .. }
        | Target::Tool { sandbox, .. } => Some(sandbox),
        Target::ControlPlane | Target::Tenant(_) | Target::Token(_) => None,
    }
}

/// An authenticated client of one control plane.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Shared with the session streams, so both trust the same CAs.
    tls: Arc<rustls::ClientConfig>,
    base: Url,
    token: String,
    /// The tenant an owner acts on, sent as [`TENANT_HEADER`].
    tenant: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &"<redacted>")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl Client {
    /// A client trusting the platform's (webpki) roots only.
    #[cfg(test)]
    pub fn new(base: Url, token: String) -> Result<Self> {
        Client::with_ca_file(base, token, None)
    }

    /// A client trusting the platform's roots plus the CAs in `ca_file`.
    pub fn with_ca_file(base: Url, token: String, ca_file: Option<&Path>) -> Result<Self> {
        let tls = crate::tls::client_config(ca_file)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("paddock/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(rustls::ClientConfig::clone(&tls))
            .build()
            .context("could not set up the HTTP client")?;
        Ok(Client {
            http,
            tls,
            base,
            token,
            tenant: None,
        })
    }

    /// The same client acting on `tenant` (owners only), if given.
    pub fn with_tenant(mut self, tenant: Option<String>) -> Self {
        self.tenant = tenant;
        self
    }

    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The TLS configuration for connections of this client's own making.
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    pub async fn list_sandboxes(&self) -> Result<SandboxList> {
        let req = self.request(Method::GET, &["v1", "sandboxes"])?;
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn register_sandbox(&self, body: &RegisterSandbox) -> Result<SandboxRegistered> {
        let req = self.request(Method::POST, &["v1", "sandboxes"])?.json(body);
        self.send_json(req, &Target::ControlPlane).await
    }

    pub async fn rotate_sandbox_token(&self, sandbox: &str) -> Result<SandboxRegistered> {
        let req = self.request(Method::POST, &["v1", "sandboxes", sandbox, "token"])?;
        self.send_json(req, &Target::Sandbox(sandbox.to_owned()))
            .await
    }

    pub async fn list_sessions(&self, sandbox: &str) -> Result<SessionList> {
        let req = self.request(Method::GET, &["v1", "sandboxes", sandbox, "sessions"])?;
        self.send_json(req, &Target::Sandbox(sandbox.to_owned()))
            .await
    }

    pub async fn open_session(
        &self,
        sandbox: &str,
        body: &OpenSessionRequest,
    ) -> Result<SessionInfo> {
        let req = self
            .request(Method::POST, &["v1", "sandboxes", sandbox, "sessions"])?
            .json(body);
        self.send_json(req, &Target::Sandbox(sandbox.to_owned()))
            .await
    }

    pub async fn signal_session(
        &self,
        sandbox: &str,
        session: SessionId,
        signal: Signal,
    ) -> Result<()> {
        let id = session.to_string();
        let req = self
            .request(
                Method::POST,
                &["v1", "sandboxes", sandbox, "sessions", &id, "signal"],
            )?
            .json(&SignalRequest { signal });
        self.send(req, &session_target(sandbox, session)).await?;
        Ok(())
    }

    pub async fn close_session(&self, sandbox: &str, session: SessionId) -> Result<()> {
        let id = session.to_string();
        let req = self.request(
            Method::DELETE,
            &["v1", "sandboxes", sandbox, "sessions", &id],
        )?;
        self.send(req, &session_target(sandbox, session)).await?;
        Ok(())
    }

    /// Starts `GET .../output`: the session's stored output in the query's
    /// range. The answer's body is left to the caller to stream.
    pub async fn session_output(
        &self,
        sandbox: &str,
        session: SessionId,
        query: &OutputQuery,
    ) -> Result<reqwest::Response> {
        let url = output_url(&self.base, sandbox, session, query)?;
        let req = self.authorize(self.http.get(url)).timeout(DOWNLOAD_TIMEOUT);
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, req.send()).await {
            Ok(sent) => sent.map_err(|err| self.transport_error(err))?,
            Err(_) => bail!(
                "the control plane at {} did not answer within {}s: is it overloaded or stuck? try again",
                display_base(&self.base),
                REQUEST_TIMEOUT.as_secs()
            ),
        };
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            bail!(describe_failure(
                status,
                &body,
                &session_target(sandbox, session)
            ));
        }
        Ok(response)
    }

    /// A request to the API path `segments`, with the token and tenant.
    pub(crate) fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder> {
        let url = api_url(&self.base, segments)?;
        Ok(self.authorize(self.http.request(method, url)))
    }

    fn authorize(&self, req: RequestBuilder) -> RequestBuilder {
        let req = req.bearer_auth(&self.token);
        match &self.tenant {
            Some(tenant) => req.header(TENANT_HEADER, tenant),
            None => req,
        }
    }

    pub(crate) async fn send_json<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        target: &Target,
    ) -> Result<T> {
        let body = self.send(req, target).await?;
        serde_json::from_slice(&body).map_err(|err| {
            anyhow!(
                "could not understand the control plane's answer ({err}): are paddock and the control plane the same version?"
            )
        })
    }

    /// Sends `req` and returns the body of a successful answer.
    pub(crate) async fn send(&self, req: RequestBuilder, target: &Target) -> Result<Vec<u8>> {
        let response = req.send().await.map_err(|err| self.transport_error(err))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| self.transport_error(err))?;
        if !status.is_success() {
            bail!(describe_failure(status, &body, target));
        }
        Ok(body.to_vec())
    }

    fn transport_error(&self, err: reqwest::Error) -> anyhow::Error {
        if let Some(message) = crate::tls::rejected_certificate(&err) {
            anyhow!(message)
        } else if err.is_connect() {
            anyhow!(unreachable_message(&self.base))
        } else if err.is_timeout() {
            anyhow!(
                "the control plane at {} did not answer within {}s: is it overloaded or stuck? try again",
                display_base(&self.base),
                REQUEST_TIMEOUT.as_secs()
            )
        } else {
            anyhow!(
                "the request to the control plane at {} failed ({err}): check the URL and try again",
                display_base(&self.base)
            )
        }
    }
}

/// The URL of a session's stored output, with the range in its query.
pub fn output_url(
    base: &Url,
    sandbox: &str,
    session: SessionId,
    query: &OutputQuery,
) -> Result<Url> {
    let id = session.to_string();
    let mut url = api_url(
        base,
        &["v1", "sandboxes", sandbox, "sessions", &id, "output"],
    )?;
    let mut pairs = Vec::new();
    if let Some(from) = query.from {
        pairs.push(format!("from={from}"));
    }
    if let Some(to) = query.to {
        pairs.push(format!("to={to}"));
    }
    // Raw is the default; leaving it out keeps older control planes working.
    if query.format == Some(OutputFormat::Asciicast) {
        pairs.push("format=asciicast".to_owned());
    }
    if !pairs.is_empty() {
        url.set_query(Some(&pairs.join("&")));
    }
    Ok(url)
}

fn session_target(sandbox: &str, session: SessionId) -> Target {
    Target::Session {
        sandbox: sandbox.to_owned(),
        session,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> Vec<u8> {
        format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#).into_bytes()
    }

    fn sandbox(name: &str) -> Target {
        Target::Sandbox(name.to_owned())
    }

    #[test]
    fn base_urls_are_validated_and_default_to_http() {
        assert_eq!(
            parse_base_url("http://127.0.0.1:7700").unwrap().as_str(),
            "http://127.0.0.1:7700/"
        );
        assert_eq!(
            parse_base_url("localhost:7700").unwrap().as_str(),
            "http://localhost:7700/"
        );
        assert!(parse_base_url("ftp://example.com").is_err());
        assert!(parse_base_url("http://").is_err());
    }

    #[test]
    fn api_urls_append_encoded_segments_to_any_base_path() {
        let base = parse_base_url("http://127.0.0.1:7700").unwrap();
        let url = api_url(&base, &["v1", "sandboxes", "my box", "sessions"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7700/v1/sandboxes/my%20box/sessions"
        );
        let prefixed = parse_base_url("https://example.com/paddock/?x=1").unwrap();
        let url = api_url(&prefixed, &["v1", "sandboxes", "a/b"]).unwrap();
        assert_eq!(
            url.as_str(),
            "https://example.com/paddock/v1/sandboxes/a%2Fb"
        );
    }

    #[test]
    fn output_urls_carry_only_the_bounds_given() {
        let base = parse_base_url("http://127.0.0.1:7700").unwrap();
        let url = |from, to| {
            output_url(
                &base,
                "local-1",
                SessionId(4),
                &OutputQuery {
                    from,
                    to,
                    format: Some(OutputFormat::Raw),
                },
            )
            .unwrap()
            .to_string()
        };
        assert_eq!(
            url(None, None),
            "http://127.0.0.1:7700/v1/sandboxes/local-1/sessions/4/output"
        );
        assert_eq!(
            url(Some(10), None),
            "http://127.0.0.1:7700/v1/sandboxes/local-1/sessions/4/output?from=10"
        );
        assert_eq!(
            url(None, Some(20)),
            "http://127.0.0.1:7700/v1/sandboxes/local-1/sessions/4/output?to=20"
        );
        assert_eq!(
            url(Some(0), Some(20)),
            "http://127.0.0.1:7700/v1/sandboxes/local-1/sessions/4/output?from=0&to=20"
        );
        let cast = output_url(
            &base,
            "local-1",
            SessionId(4),
            &OutputQuery {
                from: None,
                to: None,
                format: Some(OutputFormat::Asciicast),
            },
        )
        .unwrap();
        assert_eq!(
            cast.as_str(),
            "http://127.0.0.1:7700/v1/sandboxes/local-1/sessions/4/output?format=asciicast"
        );
    }

    #[test]
    fn unauthorized_names_the_token_settings() {
        let msg = describe_failure(
            StatusCode::UNAUTHORIZED,
            &body("unauthorized", "bad token"),
            &Target::ControlPlane,
        );
        assert_eq!(
            msg,
            "the control plane refused the API token (invalid, expired or revoked): check PADDOCK_TOKEN or --token, or run `paddock login`"
        );
        // Even without a JSON body.
        let msg = describe_failure(StatusCode::UNAUTHORIZED, b"", &Target::ControlPlane);
        assert!(msg.contains("PADDOCK_TOKEN"), "{msg}");
    }

    #[test]
    fn not_found_names_the_sandbox_or_session_and_the_listing_command() {
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body("not_found", "no sandbox named nope"),
            &sandbox("nope"),
        );
        assert_eq!(
            msg,
            "no sandbox `nope` (the control plane said: no sandbox named nope): run `paddock sandboxes` to list them"
        );
        let session = Target::Session {
            sandbox: "local-1".to_owned(),
            session: SessionId(9),
        };
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body("not_found", "no session 9"),
            &session,
        );
        assert!(
            msg.starts_with("no session 9 in sandbox `local-1`"),
            "{msg}"
        );
        assert!(msg.contains("paddock sessions local-1"), "{msg}");
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body("not_found", "no sandbox local-1"),
            &session,
        );
        assert!(msg.starts_with("no sandbox `local-1`"), "{msg}");
    }

    #[test]
    fn server_messages_that_repeat_the_hint_are_not_shown_twice() {
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body(
                "not_found",
                "no sandbox `nope`; `paddock sandboxes` lists them",
            ),
            &sandbox("nope"),
        );
        assert_eq!(
            msg,
            "no sandbox `nope`: run `paddock sandboxes` to list them"
        );
        let msg = describe_failure(
            StatusCode::CONFLICT,
            &body(
                "sandbox_disconnected",
                "sandbox sbx_1 is not connected; is its agentd running?",
            ),
            &sandbox("local-1"),
        );
        assert_eq!(
            msg,
            "sandbox local-1 is not connected: is its agentd running? `paddock sandboxes` shows its last-seen time"
        );
        let session = Target::Session {
            sandbox: "local-1".to_owned(),
            session: SessionId(8),
        };
        let msg = describe_failure(
            StatusCode::CONFLICT,
            &body("session_ended", "session 8 has already ended"),
            &session,
        );
        assert_eq!(
            msg,
            "session 8 has already ended: `paddock sessions local-1` shows its exit status"
        );
    }

    #[test]
    fn disconnected_and_spawn_failures_say_what_to_check() {
        let msg = describe_failure(
            StatusCode::CONFLICT,
            &body("sandbox_disconnected", "agentd is not connected"),
            &sandbox("local-2"),
        );
        assert!(msg.starts_with("sandbox local-2 is not connected"), "{msg}");
        assert!(msg.contains("is its agentd running?"), "{msg}");
        assert!(
            msg.contains("`paddock sandboxes` shows its last-seen time"),
            "{msg}"
        );

        let msg = describe_failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            &body("spawn_failed", "No such file or directory: nosuchcmd"),
            &sandbox("local-1"),
        );
        assert!(
            msg.contains("No such file or directory: nosuchcmd"),
            "{msg}"
        );
        assert!(msg.contains("check the command"), "{msg}");
    }

    #[test]
    fn tenants_and_tokens_that_do_not_exist_name_the_listing_command() {
        // An owner's --tenant naming no tenant fails whatever the request.
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body("not_found", "no tenant `nope`"),
            &sandbox("local-1"),
        );
        assert!(msg.starts_with("no tenant `nope`: check --tenant"), "{msg}");
        assert!(msg.contains("paddock tenants list"), "{msg}");
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body("not_found", "no tenant `nope`"),
            &Target::Tenant("nope".to_owned()),
        );
        assert!(msg.starts_with("no tenant `nope`: run"), "{msg}");
        assert!(msg.contains("paddock tenants list"), "{msg}");
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body("not_found", "no token"),
            &Target::Token("tok_1".to_owned()),
        );
        assert!(msg.starts_with("no token `tok_1`"), "{msg}");
        assert!(msg.contains("paddock tokens list"), "{msg}");
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body(
                "not_found",
                "no token `tok_1`; `paddock tokens list` lists them",
            ),
            &Target::Token("tok_1".to_owned()),
        );
        assert_eq!(
            msg,
            "no token `tok_1`: run `paddock tokens list` to list them"
        );
    }

    #[test]
    fn a_tools_own_not_found_is_not_a_missing_sandbox() {
        let tool = Target::Tool {
            sandbox: "local-1".to_owned(),
            tool: "git_status".to_owned(),
        };
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body("not_found", "not a git repository: /sandboxes/local-1/work"),
            &tool,
        );
        assert!(
            msg.starts_with("the tool git_status could not find"),
            "{msg}"
        );
        assert!(msg.contains("paddock tool local-1 file_list"), "{msg}");
        let msg = describe_failure(
            StatusCode::NOT_FOUND,
            &body(
                "not_found",
                "no sandbox `local-1`; `paddock sandboxes` lists them",
            ),
            &tool,
        );
        assert_eq!(
            msg,
            "no sandbox `local-1`: run `paddock sandboxes` to list them"
        );
        let msg = describe_failure(
            StatusCode::BAD_REQUEST,
            &body("bad_request", "unknown variant `nosuch`"),
            &tool,
        );
        assert!(msg.contains("paddock tool --help"), "{msg}");
    }

    #[test]
    fn unknown_codes_and_plain_bodies_still_show_the_status() {
        let msg = describe_failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            &body("from_the_future", "boom"),
            &Target::ControlPlane,
        );
        assert!(msg.contains("HTTP 500"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
        let msg = describe_failure(
            StatusCode::BAD_GATEWAY,
            b"<html>bad gateway</html>",
            &Target::ControlPlane,
        );
        assert!(msg.contains("HTTP 502"), "{msg}");
        assert!(msg.contains("bad gateway"), "{msg}");
    }

    #[test]
    fn unreachable_message_says_how_to_start_the_control_plane() {
        let base = parse_base_url("http://127.0.0.1:1").unwrap();
        assert_eq!(
            unreachable_message(&base),
            "could not reach the control plane at http://127.0.0.1:1: is it running? Start it with `cargo run --release -p control-plane -- up`"
        );
    }
}
