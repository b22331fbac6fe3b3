//! The browser console in a real headless Chromium (Debian's `chromium`
//! driven through `chromium-driver`): sign-in, the live wall, the session
//! view against the server's snapshot, attach typing into a real shell,
//! an operator refused at the server, approving a task from the Approvals
//! page, and another tenant's session answering "not found". Every page is
//! checked for console errors and photographed into
//! `target/console-screenshots/`.

mod support;

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use control_plane::governance::{Governance, Outcome};
use control_plane::store::{self, Durability};
use paddock_tests::proto::{ControlToClient, SessionId};
use paddock_tests::{snapshot_rows, within_for, Agentd, Browser, StreamClient, StreamOptions};
use serde_json::{json, Value};
use support::{call, start, OWNER};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
/// The issue's bound for a printed line to reach the wall.
const WALL_DEADLINE: Duration = Duration::from_secs(10);

/// An API client for one token (and optionally another tenant).
struct Http {
    http: reqwest::Client,
    url: String,
}

impl Http {
    async fn call(
        &self,
        token: &str,
        tenant: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(tenant) = tenant {
            req = req.header("x-paddock-tenant", tenant);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, value) = call(&self.http, &self.url, method.clone(), path, body).await;
        ensure!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {value}"
        );
        Ok(value)
    }

    /// A token of `role` (in `tenant`, or the default one).
    async fn token(&self, name: &str, role: &str, tenant: Option<&str>) -> Result<String> {
        let (status, made) = self
            .call(
                OWNER,
                tenant,
                reqwest::Method::POST,
                "/v1/tokens",
                Some(json!({ "name": name, "role": role })),
            )
            .await?;
        ensure!(status == 201, "could not make a {role} token: {made}");
        Ok(made["token"].as_str().context("token secret")?.to_owned())
    }

    /// Registers a sandbox and starts a real agentd for it; waits until it is connected.
    async fn sandbox(&self, name: &str, work: &std::path::Path) -> Result<(String, Agentd)> {
        let made = self
            .ok(
                reqwest::Method::POST,
                "/v1/sandboxes",
                Some(json!({ "name": name })),
            )
            .await?;
        let agentd = Agentd::start(&self.url, made["token"].as_str().context("token")?, work)?;
        let id = made["sandbox"]["id"]
            .as_str()
            .context("sandbox id")?
            .to_owned();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let info = self
                .ok(reqwest::Method::GET, &format!("/v1/sandboxes/{id}"), None)
                .await?;
            if info["status"] == "connected" {
                return Ok((id, agentd));
            }
            if tokio::time::Instant::now() > deadline {
                bail!("sandbox {name} never connected:\n{}", agentd.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shell(&self, sandbox: &str) -> Result<u64> {
        let info = self
            .ok(
                reqwest::Method::POST,
                &format!("/v1/sandboxes/{sandbox}/sessions"),
                Some(json!({ "command": "sh", "env": { "PS1": "$ " } })),
            )
            .await?;
        info["id"].as_u64().context("session id")
    }

    /// Waits until task `id` is in `state`.
    async fn wait_task(&self, id: &str, state: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let t = self
                .ok(reqwest::Method::GET, &format!("/v1/tasks/{id}"), None)
                .await?;
            if t["state"] == state {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("task {id} never became {state}: {t}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stored_output(&self, sandbox: &str, session: u64) -> Result<String> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/sandboxes/{sandbox}/sessions/{session}/output",
                self.url
            ))
            .bearer_auth(OWNER)
            .send()
            .await?;
        ensure!(resp.status().is_success(), "output: {}", resp.status());
        Ok(String::from_utf8_lossy(&resp.bytes().await?).into_owned())
    }

    async fn wait_output(&self, sandbox: &str, session: u64, needle: &str) -> Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let out = self.stored_output(sandbox, session).await?;
            if out.contains(needle) {
                return Ok(out);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{needle:?} never reached the stored output of session {session}: {out:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Signs in through the form with `token` and waits for the wall.
async fn sign_in_with_form(b: &Browser, url: &str, token: &str) -> Result<()> {
    b.goto(&format!("{url}/console")).await?;
    b.type_into("#token", token).await?;
    b.click("#signin-submit").await?;
    b.wait_for("#wall", WAIT).await?;
    Ok(())
}

async fn sign_out(b: &Browser) -> Result<()> {
    b.click("#signout").await?;
    b.wait_for("#token", WAIT).await?;
    Ok(())
}

/// The text rows of the screen element `css`, trailing blanks removed.
async fn screen_rows(b: &Browser, css: &str) -> Result<Vec<String>> {
    let script = format!(
        "return [...document.querySelectorAll({})].map(r => r.textContent.replace(/\\s+$/, ''));",
        json!(format!("{css} .row"))
    );
    let rows = b.eval(&script, vec![]).await?;
    Ok(serde_json::from_value(rows)?)
}

/// The checks every page gets: no console errors, keyboard reachable (every
/// control is in the tab order and Tab moves focus onto one), no sideways
/// scrolling at 1280×800 and at a phone's width, and a screenshot of each.
async fn check_page(b: &Browser, name: &str) -> Result<()> {
    b.assert_no_errors(name).await?;
    let unreachable = b
        .eval(
            "return [...document.querySelectorAll('a[href], button, input, select, summary, textarea')]
                .filter(e => e.offsetParent !== null && e.tabIndex < 0).map(e => e.outerHTML.slice(0, 80));",
            vec![],
        )
        .await?;
    ensure!(
        unreachable == json!([]),
        "{name}: controls out of the tab order: {unreachable}"
    );
    // From the top of the page's content, Tab lands on a control.
    b.type_into("#main", "\u{E004}").await?;
    let focused = b
        .eval(
            "const e = document.activeElement; return e && e !== document.body ? e.tagName : null;",
            vec![],
        )
        .await?;
    ensure!(focused.is_string(), "{name}: Tab focused nothing");
    b.screenshot(name).await?;
    for (width, suffix) in [(1280u32, ""), (400u32, "-narrow"), (1280u32, "")] {
        b.resize(width, 800).await?;
        b.wait_js(
            &format!("{name} to fit {width} px without sideways scrolling"),
            WAIT,
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        )
        .await?;
        if !suffix.is_empty() {
            b.screenshot(&format!("{name}{suffix}")).await?;
        }
    }
    b.assert_no_errors(name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_wall_session_attach_operator_and_tenants() {
    within_for(Duration::from_secs(240), async {
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let url = start(dir.path(), None, &shutdown).await;
        let api = Http {
            http: reqwest::Client::new(),
            url: url.clone(),
        };
        let (work_a, work_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let (sb_a, _agentd_a) = api.sandbox("box-a", work_a.path()).await?;
        let (sb_b, _agentd_b) = api.sandbox("box-b", work_b.path()).await?;
        let session_a = api.shell(&sb_a).await?;
        let session_b = api.shell(&sb_b).await?;

        let b = Browser::start().await?;
        let result = async {
            // Sign-in page, then the form.
            b.goto(&format!("{url}/console")).await?;
            b.wait_for("#token", WAIT).await?;
            check_page(&b, "signin").await?;
            sign_in_with_form(&b, &url, OWNER).await?;

            // The wall shows both sandboxes' live sessions.
            for (sb, id) in [(&sb_a, session_a), (&sb_b, session_b)] {
                b.wait_for(
                    &format!(".tile[data-sandbox='{sb}'][data-session='{id}'] .term .row"),
                    WAIT,
                )
                .await?;
            }
            // A line printed in a sandbox reaches its tile within 10 s.
            let mut typist = StreamClient::connect(
                &url,
                OWNER,
                &sb_a,
                SessionId(session_a),
                StreamOptions::attach(),
            )
            .await
            .map_err(|e| anyhow!("attach to session {session_a}: {e}"))?;
            typist.send_input(b"echo wall-$((6*7))-line\r").await?;
            let started = std::time::Instant::now();
            b.wait_js(
                "the printed line on the wall",
                WALL_DEADLINE,
                &format!(
                    "return [...document.querySelectorAll(\".tile[data-session='{session_a}'] .term .row\")]
                        .some(r => r.textContent.trim() === 'wall-42-line');"
                ),
            )
            .await?;
            eprintln!("the line reached the wall in {:?}", started.elapsed());
            typist.close().await;
            // A session opened now appears without a reload (events stream).
            let session_c = api.shell(&sb_b).await?;
            b.wait_for(&format!(".tile[data-session='{session_c}'] .term"), WAIT)
                .await?;
            ensure!(
                b.eval("return document.querySelectorAll('.tile').length;", vec![]).await? == json!(3),
                "the wall should show three live sessions"
            );
            check_page(&b, "wall").await?;
            // ... and one that ends disappears.
            api.ok(
                reqwest::Method::DELETE,
                &format!("/v1/sandboxes/{sb_b}/sessions/{session_c}"),
                None,
            )
            .await?;
            b.wait_js(
                "the closed session to leave the wall",
                WAIT,
                &format!("return document.querySelector(\".tile[data-session='{session_c}']\") === null;"),
            )
            .await?;

            // The session view's rows are the server snapshot's text.
            b.goto(&format!("{url}/console#/sessions/{sb_a}/{session_a}")).await?;
            b.wait_for("#screen .row", WAIT).await?;
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let mut watcher = StreamClient::connect(
                    &url,
                    OWNER,
                    &sb_a,
                    SessionId(session_a),
                    StreamOptions::watch().from(None),
                )
                .await
                .map_err(|e| anyhow!("watch session {session_a}: {e}"))?;
                let (size, screen) = watcher
                    .wait_event(WAIT, |event| match event {
                        ControlToClient::Snapshot { size, screen, .. } => {
                            Some((*size, screen.clone()))
                        }
                        _ => None,
                    })
                    .await?;
                watcher.close().await;
                let want = snapshot_rows(size, &screen);
                let got = screen_rows(&b, "#screen").await?;
                if got == want {
                    ensure!(
                        want.iter().any(|r| r == "wall-42-line"),
                        "the snapshot should hold the printed line: {want:?}"
                    );
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("the session view never matched the snapshot:\n  page:     {got:?}\n  snapshot: {want:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            check_page(&b, "session").await?;

            // Attach: keys typed in the browser reach the shell, output comes back.
            b.goto(&format!("{url}/console#/sessions/{sb_b}/{session_b}")).await?;
            b.wait_for("#screen .row", WAIT).await?;
            b.click("#attach").await?;
            b.wait_js(
                "attach to be accepted",
                WAIT,
                "return document.getElementById('stream-status').textContent.startsWith('Attached');",
            )
            .await?;
            b.click("#screen").await?;
            // Backspace fixes a typo; Enter runs the line.
            b.type_into("#screen", "echo attach-$((2*21))-okX\u{E003} && stty size\u{E007}")
                .await?;
            b.wait_js(
                "the shell's answer on the page",
                WAIT,
                "return [...document.querySelectorAll('#screen .row')].some(r => r.textContent.trim() === 'attach-42-ok');",
            )
            .await?;
            api.wait_output(&sb_b, session_b, "attach-42-ok").await?;
            // Tab belongs to the terminal while attached; Ctrl-] gives the keyboard back.
            b.type_into("#screen", "\u{E009}]\u{E000}").await?;
            b.wait_js(
                "Ctrl-] to move focus to the attach switch",
                WAIT,
                "return document.activeElement && document.activeElement.id === 'attach';",
            )
            .await?;
            b.click("#screen").await?;
            // The PTY follows the browser's size, and the shell sees it.
            let info = api
                .ok(reqwest::Method::GET, &format!("/v1/sandboxes/{sb_b}/sessions/{session_b}"), None)
                .await?;
            let (cols, rows) = (info["size"]["cols"].as_u64().unwrap_or(0), info["size"]["rows"].as_u64().unwrap_or(0));
            ensure!(cols > 80 && rows > 0, "the PTY was not sized to the browser: {info}");
            let stty = format!("{rows} {cols}");
            api.wait_output(&sb_b, session_b, &stty).await?;
            // Every special key reaches the program as a terminal sends it (Ctrl-D ends it):
            // `cat -vT` prints what it reads (^I is only in its output, not the echo).
            b.type_into("#screen", "cat -vT\u{E007}").await.context("typing cat -v")?;
            b.type_into("#screen", concat!(
                    "\u{E013}\u{E015}\u{E012}\u{E014}", // arrows: up, down, left, right
                    "\u{E011}\u{E010}\u{E00E}\u{E00F}", // Home, End, PageUp, PageDown
                    "\u{E004}\u{E00C}",                   // Tab, Escape
                    "\u{E009}a\u{E000}z\u{E007}",        // Ctrl-A, z, Enter
                ))
                .await
                .context("typing special keys")?;
            api.wait_output(&sb_b, session_b, "^[[A^[[B^[[D^[[C^[[H^[[F^[[5~^[[6~^I^[^Az")
                .await?;
            b.type_into("#screen", "\u{E009}d\u{E000}").await.context("Ctrl-D")?;
            // Scrollback: lines that scrolled off are served by the server's emulator.
            b.type_into("#screen", "seq 1 150\u{E007}").await?;
            api.wait_output(&sb_b, session_b, "\r\n149\r\n150\r\n").await?;
            b.click("#scrollback summary").await?;
            b.wait_js(
                "the first lines in the scrollback",
                WAIT,
                "const rows = [...document.querySelectorAll('#scrollback-box .row')].map(r => r.textContent.trim());
                 return rows.includes('1') && rows.includes('2') && rows.includes('150');",
            )
            .await?;
            // The asciicast link downloads the recording.
            let cast = b
                .eval_async(
                    "const done = arguments[arguments.length - 1];
                     fetch(document.getElementById('download').href)
                       .then(r => r.text().then(t => done([r.status, t.split('\\n')[0]])))
                       .catch(e => done(String(e)));",
                    vec![],
                )
                .await?;
            ensure!(
                cast[0] == json!(200) && cast[1].as_str().unwrap_or("").contains("\"version\":2"),
                "the asciicast download failed: {cast}"
            );
            check_page(&b, "session-attached").await?;

            // A `?token=` link signs in once and is redirected away at once.
            let operator = api.token("ops", "operator", None).await?;
            sign_out(&b).await?;
            b.goto(&format!("{url}/console?token={operator}")).await?;
            b.wait_for("#wall", WAIT).await?;
            let here = b.current_url().await?;
            ensure!(!here.contains("token"), "the token stayed in the URL: {here}");
            // An operator watches but has no attach switch ...
            b.goto(&format!("{url}/console#/sessions/{sb_b}/{session_b}")).await?;
            b.wait_for("#screen .row", WAIT).await?;
            ensure!(!b.exists("#attach").await?, "an operator must not see the attach switch");
            check_page(&b, "session-operator").await?;
            // ... and the server refuses its attach and drops its keystrokes.
            let path = format!("/v1/sandboxes/{sb_b}/sessions/{session_b}/stream");
            let attach = b
                .eval_async(
                    "const [path, done] = [arguments[0], arguments[arguments.length - 1]];
                     const ws = new WebSocket('ws://' + location.host + path + '?mode=attach&render=screen');
                     let welcomed = false;
                     ws.onopen = () => ws.send(JSON.stringify({type: 'hello', protocol_version: 1, peer: 'test', capabilities: []}));
                     ws.onmessage = (e) => { if (JSON.parse(e.data).type === 'welcome') welcomed = true; };
                     ws.onclose = (e) => done({welcomed, code: e.code});",
                    vec![json!(path)],
                )
                .await?;
            ensure!(attach["welcomed"] == json!(false), "an operator was let attach: {attach}");
            let typed = b
                .eval_async(
                    "const [path, session, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
                     const ws = new WebSocket('ws://' + location.host + path + '?mode=watch&render=screen');
                     ws.binaryType = 'arraybuffer';
                     ws.onopen = () => ws.send(JSON.stringify({type: 'hello', protocol_version: 1, peer: 'test', capabilities: []}));
                     const seen = [];
                     ws.onmessage = (e) => {
                       seen.push(typeof e.data === 'string' ? JSON.parse(e.data).type : 'binary');
                       if (typeof e.data !== 'string' || JSON.parse(e.data).type !== 'welcome') return;
                       const keys = new TextEncoder().encode('echo op-$((3*5))-typed\\r');
                       const frame = new Uint8Array(17 + keys.length);
                       frame[0] = 2;
                       new DataView(frame.buffer).setBigUint64(1, BigInt(session), true);
                       frame.set(keys, 17);
                       ws.send(frame);
                       ws.close(1000, 'done');
                     };
                     ws.onclose = (e) => done({code: e.code, seen});",
                    vec![json!(path), json!(session_b)],
                )
                .await?;
            ensure!(
                typed["code"] == json!(1000) && typed["seen"][0] == json!("welcome"),
                "the operator's watch stream closed with {typed}"
            );
            let mut owner = StreamClient::connect(
                &url,
                OWNER,
                &sb_b,
                SessionId(session_b),
                StreamOptions::attach(),
            )
            .await
            .map_err(|e| anyhow!("attach to session {session_b}: {e}"))?;
            owner.send_input(b"echo after-$((1+1))-marker\r").await?;
            let out = api.wait_output(&sb_b, session_b, "after-2-marker").await?;
            ensure!(
                !out.contains("op-15-typed") && !out.contains("op-$((3*5))"),
                "an operator's keystrokes reached the shell: {out:?}"
            );
            owner.close().await;

            // Another tenant's session id shows "not found".
            api.ok(reqwest::Method::POST, "/v1/tenants", Some(json!({ "name": "tenant-b" })))
                .await?;
            let other = api.token("b-admin", "admin", Some("tenant-b")).await?;
            sign_out(&b).await?;
            sign_in_with_form(&b, &url, &other).await?;
            b.goto(&format!("{url}/console#/sessions/{sb_a}/{session_a}")).await?;
            b.wait_js(
                "the not-found page",
                WAIT,
                "const h = document.getElementById('page-title'); return h && h.textContent === 'Session not found';",
            )
            .await?;
            ensure!(
                !b.exists("#screen").await?,
                "another tenant's screen must not be shown"
            );
            check_page(&b, "session-not-found").await?;
            Ok(())
        }
        .await;
        let logs = b.logs();
        let _ = b.close().await;
        shutdown.cancel();
        result.with_context(|| format!("chromedriver:\n{logs}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_tasks_approvals_agents_and_audit() {
    within_for(Duration::from_secs(240), async {
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let url = start(dir.path(), None, &shutdown).await;
        let api = Http {
            http: reqwest::Client::new(),
            url: url.clone(),
        };
        let work = tempfile::tempdir()?;
        let (_sb, _agentd) = api.sandbox("box", work.path()).await?;
        let risky = api
            .ok(reqwest::Method::POST, "/v1/agents", Some(json!({ "name": "risky" })))
            .await?;
        api.ok(reqwest::Method::POST, "/v1/agents", Some(json!({ "name": "steady" })))
            .await?;
        // Eleven failures take the agent from 100 to 45: restricted.
        let (store, _system) =
            store::open(&store::sqlite_url(dir.path()), Durability::Normal).await?;
        let governance = Governance::new(store);
        for i in 0..11 {
            governance
                .apply_outcome(
                    "default",
                    risky["id"].as_str().context("agent id")?,
                    Outcome::Failure,
                    &format!("failure {i}"),
                    1_000 + i,
                )
                .await?;
        }
        let waiting = api
            .ok(
                reqwest::Method::POST,
                "/v1/tasks",
                Some(json!({ "agent": "risky", "steps": [{ "kind": "run", "command": "sh", "args": ["-c", "echo approved-run"] }] })),
            )
            .await?;
        ensure!(waiting["state"] == "awaiting_approval", "{waiting}");
        let waiting = waiting["id"].as_str().context("task id")?.to_owned();
        let doomed = api
            .ok(
                reqwest::Method::POST,
                "/v1/tasks",
                Some(json!({ "agent": "risky", "steps": [{ "kind": "run", "command": "sh", "args": ["-c", "echo rejected-run"] }] })),
            )
            .await?;
        ensure!(doomed["state"] == "awaiting_approval", "{doomed}");
        let doomed = doomed["id"].as_str().context("task id")?.to_owned();

        let b = Browser::start().await?;
        let result = async {
            sign_in_with_form(&b, &url, OWNER).await?;

            // Agents: reputation, restriction, budgets against limits, rate limits left.
            b.goto(&format!("{url}/console#/agents")).await?;
            let card = b.wait_for("[data-agent='risky']", WAIT).await?;
            let text = card.text().await?;
            for needle in ["restricted", "Reputation 45", "Budget this hour", "Budget today", "Rate limits left", "task runs today"] {
                ensure!(text.contains(needle), "the agent card lacks {needle:?}: {text}");
            }
            check_page(&b, "agents").await?;

            // Approvals: approving from the page runs the task, rejecting ends one.
            b.goto(&format!("{url}/console#/approvals")).await?;
            b.wait_for(&format!("[data-approve='{waiting}']"), WAIT).await?;
            check_page(&b, "approvals").await?;
            // Rejecting one: it never runs.
            b.click(&format!("[data-reject='{doomed}']")).await?;
            api.wait_task(&doomed, "rejected").await?;
            b.wait_js(
                "the rejected task to leave the list",
                WAIT,
                &format!("return document.querySelector(\"[data-reject='{doomed}']\") === null;"),
            )
            .await?;
            b.click(&format!("[data-approve='{waiting}']")).await?;
            api.wait_task(&waiting, "succeeded").await?;
            b.wait_js(
                "the approved task to leave the list",
                WAIT,
                &format!("return document.querySelector(\"[data-approve='{waiting}']\") === null;"),
            )
            .await?;

            // A long task, run now that the sandbox is free again.
            let long = api
                .ok(
                    reqwest::Method::POST,
                    "/v1/tasks",
                    Some(json!({ "agent": "steady", "steps": [{ "kind": "run", "command": "sh", "args": ["-c", "echo steady-$((20+3)); exec sleep 120"] }] })),
                )
                .await?;
            let long = long["id"].as_str().context("task id")?.to_owned();
            // Tasks: the list with a state filter, a detail with live output, cancel.
            b.goto(&format!("{url}/console#/tasks")).await?;
            b.wait_for(&format!("a[href='#/tasks/{long}']"), WAIT).await?;
            check_page(&b, "tasks").await?;
            b.wait_for("#filter-state", WAIT).await?.select_by_value("succeeded").await?;
            b.wait_js(
                "the filter to keep only succeeded tasks",
                WAIT,
                &format!(
                    "return document.querySelector(\"a[href='#/tasks/{waiting}']\") !== null &&
                            document.querySelector(\"a[href='#/tasks/{long}']\") === null;"
                ),
            )
            .await?;
            b.goto(&format!("{url}/console#/tasks/{long}")).await?;
            b.wait_js(
                "the running step's live output",
                WAIT,
                "return [...document.querySelectorAll('.task-output .row')].some(r => r.textContent.trim() === 'steady-23');",
            )
            .await?;
            check_page(&b, "task-detail").await?;
            b.eval("window.confirm = () => true;", vec![]).await?;
            b.click(&format!("[data-cancel='{long}']")).await?;
            api.wait_task(&long, "cancelled").await?;

            // Audit: the tenant's log, filterable.
            b.goto(&format!("{url}/console#/audit")).await?;
            b.wait_for("#audit-list table", WAIT).await?;
            b.type_into("#audit-filter", "console.signed_in").await?;
            b.wait_js(
                "the filter to keep only sign-ins",
                WAIT,
                "const rows = [...document.querySelectorAll('#audit-list tbody tr')];
                 return rows.length > 0 && rows.every(r => r.textContent.includes('console.signed_in'));",
            )
            .await?;
            check_page(&b, "audit").await?;

            // Logout ends the session on the server: the old cookie is worthless.
            sign_out(&b).await?;
            let status = b
                .eval_async(
                    "const done = arguments[arguments.length - 1];
                     fetch('/v1/whoami').then(r => done(r.status)).catch(e => done(String(e)));",
                    vec![],
                )
                .await?;
            ensure!(status == json!(401), "after logout /v1/whoami answered {status}");
            b.assert_no_errors("after logout").await?;
            Ok(())
        }
        .await;
        let logs = b.logs();
        let _ = b.close().await;
        shutdown.cancel();
        result.with_context(|| format!("chromedriver:\n{logs}"))
    })
    .await;
}
