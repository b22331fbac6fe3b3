//! A typed client of the control plane's HTTP API, built on the bodies in
//! `paddock_protocol::api`, plus a raw helper for the error tests.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use paddock_protocol::api::{
    OpenSessionRequest, RegisterSandbox, ResizeRequest, SandboxInfo, SandboxList,
    SandboxRegistered, SessionInfo, SessionList, SignalRequest, GAPS_HEADER,
};
use paddock_protocol::{SessionId, Signal, TermSize};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

/// The control plane's HTTP API as one API token sees it.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("a plain reqwest client builds");
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: token.to_owned(),
            ..self.clone()
        }
    }

    /// Sends a request and returns the status and the body as text, whatever
    /// they are.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url} failed"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("could not read the body of {method} {url}"))?;
        Ok((status, text))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        expect: StatusCode,
    ) -> Result<T> {
        let (status, text) = self.raw(method.clone(), path, body).await?;
        if status != expect {
            bail!("{method} {path}: expected {expect}, got {status}: {text}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: unexpected body: {text}"))
    }

    async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        let (status, text) = self.raw(method.clone(), path, body).await?;
        if status != StatusCode::NO_CONTENT {
            bail!("{method} {path}: expected 204, got {status}: {text}");
        }
        Ok(())
    }

    pub async fn register_sandbox(&self, name: &str) -> Result<SandboxRegistered> {
        let body = RegisterSandbox {
            name: name.to_owned(),
            ..RegisterSandbox::default()
        };
        self.call(
            Method::POST,
            "/v1/sandboxes",
            Some(serde_json::to_value(body)?),
            StatusCode::CREATED,
        )
        .await
    }

    pub async fn sandboxes(&self) -> Result<Vec<SandboxInfo>> {
        let list: SandboxList = self
            .call(Method::GET, "/v1/sandboxes", None, StatusCode::OK)
            .await?;
        Ok(list.sandboxes)
    }

    pub async fn sandbox(&self, sandbox: &str) -> Result<SandboxInfo> {
        self.call(
            Method::GET,
            &format!("/v1/sandboxes/{sandbox}"),
            None,
            StatusCode::OK,
        )
        .await
    }

    pub async fn open_session(
        &self,
        sandbox: &str,
        req: OpenSessionRequest,
    ) -> Result<SessionInfo> {
        self.call(
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/sessions"),
            Some(serde_json::to_value(req)?),
            StatusCode::CREATED,
        )
        .await
    }

    /// Opens a session running `command args…` at the default size.
    pub async fn open_command(
        &self,
        sandbox: &str,
        command: &str,
        args: &[&str],
    ) -> Result<SessionInfo> {
        let req = OpenSessionRequest {
            command: Some(command.to_owned()),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        };
        self.open_session(sandbox, req).await
    }

    /// Opens a session running `sh -c script`.
    pub async fn open_sh(&self, sandbox: &str, script: &str) -> Result<SessionInfo> {
        self.open_command(sandbox, "sh", &["-c", script]).await
    }

    pub async fn sessions(&self, sandbox: &str) -> Result<Vec<SessionInfo>> {
        let list: SessionList = self
            .call(
                Method::GET,
                &format!("/v1/sandboxes/{sandbox}/sessions"),
                None,
                StatusCode::OK,
            )
            .await?;
        Ok(list.sessions)
    }

    pub async fn session(&self, sandbox: &str, session: SessionId) -> Result<SessionInfo> {
        self.call(
            Method::GET,
            &format!("/v1/sandboxes/{sandbox}/sessions/{session}"),
            None,
            StatusCode::OK,
        )
        .await
    }

    pub async fn signal(&self, sandbox: &str, session: SessionId, signal: Signal) -> Result<()> {
        self.call_empty(
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/sessions/{session}/signal"),
            Some(serde_json::to_value(SignalRequest { signal })?),
        )
        .await
    }

    pub async fn resize(&self, sandbox: &str, session: SessionId, size: TermSize) -> Result<()> {
        self.call_empty(
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/sessions/{session}/resize"),
            Some(serde_json::to_value(ResizeRequest { size })?),
        )
        .await
    }

    /// `GET …/sessions/{id}/output?from=&to=`: the stored bytes of
    /// `[from, to)` and the holes listed in its `x-paddock-gaps` header.
    pub async fn output(
        &self,
        sandbox: &str,
        session: SessionId,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<StoredOutput> {
        let mut url = format!(
            "{}/v1/sandboxes/{sandbox}/sessions/{session}/output",
            self.base
        );
        let query: Vec<String> = [("from", from), ("to", to)]
            .iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
            .collect();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        // Whole streams of hundreds of MiB come this way: no 20 s limit.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .context("could not build an HTTP client")?;
        let resp = http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {url} failed"))?;
        let status = resp.status();
        let header = match resp.headers().get(GAPS_HEADER) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .with_context(|| format!("GET {url}: {GAPS_HEADER} is not text: {value:?}"))?
                    .to_owned(),
            ),
        };
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("could not read the body of GET {url}"))?
            .to_vec();
        if status != StatusCode::OK {
            bail!(
                "GET {url}: expected 200, got {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let gaps = match &header {
            Some(text) => parse_gaps(text).with_context(|| format!("GET {url}"))?,
            None => Vec::new(),
        };
        Ok(StoredOutput {
            bytes,
            gaps,
            gaps_header: header,
        })
    }

    pub async fn close_session(&self, sandbox: &str, session: SessionId) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!("/v1/sandboxes/{sandbox}/sessions/{session}"),
            None,
        )
        .await
    }
}

/// What the output endpoint returned.
#[derive(Debug, Clone)]
pub struct StoredOutput {
    /// The bytes that exist in the range, in order (holes left out).
    pub bytes: Vec<u8>,
    /// The holes, as `[from, to)` offsets.
    pub gaps: Vec<(u64, u64)>,
    /// The raw `x-paddock-gaps` header, if the response had one.
    pub gaps_header: Option<String>,
}

/// Parses `from-to` pairs separated by commas (blank means none).
pub fn parse_gaps(text: &str) -> Result<Vec<(u64, u64)>> {
    let mut gaps = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = pair
            .split_once('-')
            .and_then(|(from, to)| Some((from.trim().parse().ok()?, to.trim().parse().ok()?)));
        match parsed {
            Some((from, to)) if from < to => gaps.push((from, to)),
            _ => {
                bail!("{GAPS_HEADER} holds {pair:?}, not a `from-to` pair with from < to: {text:?}")
            }
        }
    }
    Ok(gaps)
}
