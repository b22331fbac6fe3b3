//! A real headless Chromium driven through `chromedriver` (WebDriver), for
//! the console tests: Debian's `chromium` and `chromium-driver`, started on
//! 127.0.0.1 with a free port and killed with their process group on `Drop`.
//! Every page the console loads records `console.error` calls and uncaught
//! errors in `window.__consoleErrors`; [`Browser::assert_no_errors`] reads them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::process::{base_command, Proc};

/// The chromedriver binary: `PADDOCK_CHROMEDRIVER` or Debian's.
fn chromedriver_path() -> PathBuf {
    std::env::var_os("PADDOCK_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// The browser binary: `PADDOCK_CHROMIUM`, else Debian's real executable
/// (its `/usr/bin/chromium` is a shell launcher).
fn chromium_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PADDOCK_CHROMIUM") {
        return PathBuf::from(path);
    }
    let lib = PathBuf::from("/usr/lib/chromium/chromium");
    if lib.is_file() {
        lib
    } else {
        PathBuf::from("/usr/bin/chromium")
    }
}

/// Where the tests write screenshots: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    crate::bin_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(crate::bin_dir)
        .join("console-screenshots")
}

/// One browser window (1280×800 unless resized) with its own profile.
pub struct Browser {
    client: Client,
    driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Result<Browser> {
        let driver_bin = chromedriver_path();
        if !driver_bin.is_file() {
            bail!(
                "chromedriver not found at {}: install Debian's `chromium` and `chromium-driver` (.ci/run does)",
                driver_bin.display()
            );
        }
        let mut cmd = base_command(&driver_bin);
        cmd.arg("--port=0");
        let driver = Proc::spawn("chromedriver", cmd)?;
        let line = driver
            .stdout
            .wait_for(
                "chromedriver's port",
                Instant::now() + Duration::from_secs(30),
                |text| {
                    text.split("started successfully on port ")
                        .nth(1)?
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                },
            )
            .await
            .with_context(|| driver.logs())?;
        let port: u16 = line.parse().context("chromedriver printed a bad port")?;
        let profile = tempfile::tempdir()?;
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium_path(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "unhandledPromptBehavior": "accept",
        });
        let Value::Object(caps) = caps else {
            unreachable!("capabilities are an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| anyhow!("could not start a Chromium session: {e}\n{}", driver.logs()))?;
        let browser = Browser {
            client,
            driver,
            _profile: profile,
        };
        browser.resize(1280, 800).await?;
        Ok(browser)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("could not open {url}"))
    }

    pub async fn current_url(&self) -> Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    /// Sizes the window so the page itself (the viewport) is `width`×`height`.
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.client.set_window_size(width, height).await?;
        let inner = self
            .eval("return [window.innerWidth, window.innerHeight];", vec![])
            .await?;
        let (w, h) = (
            inner[0].as_u64().unwrap_or(u64::from(width)) as u32,
            inner[1].as_u64().unwrap_or(u64::from(height)) as u32,
        );
        if (w, h) != (width, height) {
            let outer_w = width + width.saturating_sub(w);
            let outer_h = height + height.saturating_sub(h);
            self.client.set_window_size(outer_w, outer_h).await?;
        }
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("script failed: {script}"))
    }

    /// Runs an async `script`: it calls `arguments[arguments.length - 1]` with its result.
    pub async fn eval_async(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute_async(script, args)
            .await
            .with_context(|| format!("async script failed: {script}"))
    }

    /// Polls `script` until it returns something truthy (not null, false,
    /// "" or an empty array), or fails after `limit` with `what`.
    pub async fn wait_js(&self, what: &str, limit: Duration, script: &str) -> Result<Value> {
        let deadline = Instant::now() + limit;
        let mut last;
        loop {
            match self.client.execute(script, vec![]).await {
                Ok(v) => {
                    let truthy = match &v {
                        Value::Null | Value::Bool(false) => false,
                        Value::String(s) => !s.is_empty(),
                        Value::Array(a) => !a.is_empty(),
                        _ => true,
                    };
                    if truthy {
                        return Ok(v);
                    }
                    last = v;
                }
                Err(err) => last = Value::String(format!("script error: {err}")),
            }
            if Instant::now() >= deadline {
                let page = self.page_text().await.unwrap_or_default();
                bail!(
                    "waited {limit:?} for {what}; the script last gave {last}\n--- page text ---\n{}",
                    crate::tail(&page, 4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element matching `css`.
    pub async fn wait_for(
        &self,
        css: &str,
        limit: Duration,
    ) -> Result<fantoccini::elements::Element> {
        let deadline = Instant::now() + limit;
        let script = format!("return document.querySelector({}) !== null;", json!(css));
        loop {
            self.wait_js(&format!("an element `{css}`"), limit, &script)
                .await?;
            // The page may redraw between the check and the lookup: look again.
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => return Ok(element),
                Err(err) if Instant::now() >= deadline => return Err(err.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Clicks the element `css`, looking it up again if the page redrew it
    /// between the lookup and the click (a stale element).
    pub async fn click(&self, css: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let element = self.wait_for(css, Duration::from_secs(20)).await?;
            match element.click().await {
                Ok(()) => return Ok(()),
                Err(err) if err.is_stale_element_reference() && Instant::now() < deadline => {}
                Err(err) => return Err(err).with_context(|| format!("could not click `{css}`")),
            }
        }
    }

    /// Types `keys` into the element `css` (WebDriver key codes allowed),
    /// looking it up again if it went stale before the keys were sent.
    pub async fn type_into(&self, css: &str, keys: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let element = self.wait_for(css, Duration::from_secs(20)).await?;
            match element.send_keys(keys).await {
                Ok(()) => return Ok(()),
                Err(err) if err.is_stale_element_reference() && Instant::now() < deadline => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("could not type into `{css}`"))
                }
            }
        }
    }

    pub async fn exists(&self, css: &str) -> Result<bool> {
        let script = format!("return document.querySelector({}) !== null;", json!(css));
        Ok(self.eval(&script, vec![]).await? == Value::Bool(true))
    }

    /// The visible text of the page, for failure messages.
    pub async fn page_text(&self) -> Result<String> {
        let v = self
            .eval(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Fails if the page recorded any `console.error` or uncaught error.
    pub async fn assert_no_errors(&self, page: &str) -> Result<()> {
        let errors = self
            .eval("return window.__consoleErrors || null;", vec![])
            .await?;
        match errors {
            Value::Array(list) if list.is_empty() => Ok(()),
            Value::Null => bail!("{page}: the page did not install its error recorder (errors.js)"),
            other => bail!("{page}: the console recorded errors: {other}"),
        }
    }

    /// Saves a PNG of the window as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .with_context(|| format!("could not write {}", path.display()))?;
        Ok(path)
    }

    pub fn logs(&self) -> String {
        self.driver.logs()
    }

    /// Ends the WebDriver session (closing Chromium); the driver goes on `Drop`.
    pub async fn close(self) -> Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }
}

/// The rows of text a snapshot's escape sequences draw on a terminal of
/// `size`, as an independent emulator (`avt`) shows them, trailing blanks
/// removed: what a rendered screen must read.
pub fn snapshot_rows(size: paddock_protocol::TermSize, screen: &str) -> Vec<String> {
    let mut vt = avt::Vt::new(size.cols as usize, size.rows as usize);
    vt.feed_str(screen);
    vt.view()
        .map(|line| line.text().trim_end().to_owned())
        .collect()
}
