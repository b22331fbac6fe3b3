//! asciicast v2 export: every line parses (header fields, event shapes,
//! monotonic times), resizes appear as `r` events, and Debian's `asciinema
//! cat` prints exactly the raw stored log.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use paddock_tests::proto::api::SessionState;
use paddock_tests::proto::TermSize;
use paddock_tests::{wait_until, within, ControlPlane, PtyProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asciicast_export_plays_back_the_raw_log() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("cast").await?;
        let api = cp.api();
        // Unicode, colours, and a pause; the resize lands while it sleeps.
        let script = "printf 'h\\303\\251llo \\033[31mred\\033[0m \\342\\202\\254\\n'; \
                      sleep 0.5; stty size; printf 'second line\\n'";
        let session = api.open_sh(sb.id(), script).await?;
        api.resize(
            sb.id(),
            session.id,
            TermSize {
                cols: 100,
                rows: 30,
            },
        )
        .await?;
        wait_until("the session to exit", Duration::from_secs(20), || async {
            let s = api.session(sb.id(), session.id).await?;
            Ok((s.state == SessionState::Exited).then_some(()))
        })
        .await?;
        // The exit is recorded after all output is stored.
        let raw = api.output(sb.id(), session.id, None, None).await?;
        ensure!(raw.gaps.is_empty(), "unexpected gaps {:?}", raw.gaps_header);
        let raw_text = String::from_utf8(raw.bytes.clone()).context("raw log is not UTF-8")?;
        ensure!(
            raw_text.contains("30 100"),
            "stty did not see the resize: {raw_text:?}"
        );

        let url = format!(
            "{}/v1/sandboxes/{}/sessions/{}/output?format=asciicast",
            cp.url(),
            sb.id(),
            session.id
        );
        let resp = reqwest::Client::new()
            .get(&url)
            .bearer_auth(cp.token())
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "export failed: {}",
            resp.status()
        );
        let cast = resp.text().await?;

        let mut lines = cast.lines();
        let header: serde_json::Value =
            serde_json::from_str(lines.next().context("empty export")?)?;
        ensure!(header["version"] == 2, "header: {header}");
        ensure!(
            header["width"] == 80 && header["height"] == 24,
            "the header must carry the initial size: {header}"
        );
        ensure!(header["timestamp"].as_u64().is_some(), "header: {header}");
        ensure!(
            header["command"]
                .as_str()
                .is_some_and(|c| c.starts_with("sh -c")),
            "header: {header}"
        );
        let mut last = 0.0;
        let mut played = String::new();
        let mut resizes = Vec::new();
        for line in lines {
            let event: serde_json::Value = serde_json::from_str(line)?;
            let Some([time, kind, data]) = event.as_array().map(|a| a.as_slice()) else {
                bail!("not a 3-element event: {line}");
            };
            let time = time.as_f64().context("time is not a number")?;
            ensure!(time >= last, "times go backwards at {line}");
            last = time;
            let data = data.as_str().context("data is not a string")?;
            match kind.as_str() {
                Some("o") => played.push_str(data),
                Some("r") => resizes.push(data.to_owned()),
                _ => bail!("unknown event kind in {line}"),
            }
        }
        ensure!(
            played == raw_text,
            "the output events differ from the raw log"
        );
        ensure!(resizes == ["100x30"], "resize events: {resizes:?}");
        ensure!(
            last >= 0.4,
            "the pause vanished from the timing (last event at {last}s)"
        );

        // Standard tools play it: `asciinema cat` prints the raw log back. It
        // insists on a terminal, so it runs in a PTY with output processing
        // off (`stty -opost`), which passes its bytes through unchanged.
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("session.cast");
        std::fs::write(&file, &cast)?;
        let command = format!(
            "stty -opost && printf BEGIN && asciinema cat '{}' && printf END",
            file.display()
        );
        let home = dir.path().display().to_string();
        let mut player = PtyProcess::spawn(
            std::path::Path::new("/bin/sh"),
            &["-c", &command],
            &[("HOME", home.as_str())],
            TermSize {
                cols: 100,
                rows: 30,
            },
        )?;
        let status = player.wait_exit(Duration::from_secs(20)).await?;
        let shown = player.output().bytes();
        ensure!(
            status.success(),
            "asciinema cat failed: {}",
            String::from_utf8_lossy(&shown)
        );
        let begin = find(&shown, b"BEGIN").context("no BEGIN marker")? + 5;
        let end = shown
            .windows(3)
            .rposition(|w| w == b"END")
            .context("no END marker")?;
        ensure!(
            shown[begin..end] == raw.bytes[..],
            "asciinema cat printed something else than the raw log:\n{:?}\nvs\n{:?}",
            String::from_utf8_lossy(&shown[begin..end]),
            raw_text
        );
        Ok(())
    })
    .await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
