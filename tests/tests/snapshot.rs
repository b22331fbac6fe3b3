//! A live joiner's snapshot: the screen the control plane's terminal
//! emulator (`vt100`) redraws must be the screen another emulator (`avt`)
//! shows after the whole stored stream.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use paddock_tests::proto::api::OpenSessionRequest;
use paddock_tests::proto::{ControlToClient, TermSize};
use paddock_tests::{onlcr, wait_until, within_for, ControlPlane, StreamClient, StreamOptions};

const WAIT: Duration = Duration::from_secs(30);
const SIZE: TermSize = TermSize {
    cols: 100,
    rows: 30,
};

/// A full screen drawn with cursor addressing, colours and attributes, after
/// enough lines to scroll, ending with the cursor hidden at row 12, col 40.
fn drawing() -> String {
    let mut d = String::new();
    for i in 0..120 {
        d.push_str(&format!("scrolled away {i}\n"));
    }
    d.push_str("\x1b[2J");
    for row in 1..=SIZE.rows {
        let fg = 30 + row % 8;
        let idx = (row * 7) % 256;
        d.push_str(&format!(
            "\x1b[{row};1H\x1b[{fg}mrow {row:02}\x1b[0m \x1b[1;4mbold-under\x1b[0m \x1b[38;5;{idx}mindexed {idx}\x1b[0m \x1b[48;2;{r};{g};{b}mtruecolor\x1b[0m \x1b[7minverse\x1b[27m é─ü",
            r = row * 8,
            g = 255 - row * 8,
            b = 128,
        ));
        // Something in the right half too, placed by column.
        d.push_str(&format!(
            "\x1b[{row};{}H\x1b[3{}m|{:>3}|\x1b[m",
            SIZE.cols - 6,
            row % 7,
            row
        ));
    }
    // Erase part of a line and overwrite in the middle of another.
    d.push_str("\x1b[5;20H\x1b[K");
    d.push_str("\x1b[7;10H\x1b[45;33mOVER\x1b[m");
    d.push_str("\x1b[?25l\x1b[12;40H");
    d
}

/// What the second half prints once the gate opens: more drawing, after the
/// snapshot, which a live joiner must receive as output.
const AFTER_GATE: &str = "\x1b[3;30H\x1b[1;32mafter-the-gate\x1b[m\x1b[?25h\x1b[20;5H";

/// The screen an `avt` terminal of `size` shows after `bytes`.
fn screen_of(size: TermSize, bytes: &[u8]) -> avt::Vt {
    let mut vt = avt::Vt::new(size.cols as usize, size.rows as usize);
    vt.feed_str(&String::from_utf8_lossy(bytes));
    vt
}

/// Compares two screens cell by cell (text and pen) and by cursor.
fn compare_screens(got: &avt::Vt, want: &avt::Vt) -> Result<()> {
    ensure!(
        got.size() == want.size(),
        "sizes differ: {:?} vs {:?}",
        got.size(),
        want.size()
    );
    let got_lines: Vec<&avt::Line> = got.view().collect();
    let want_lines: Vec<&avt::Line> = want.view().collect();
    let mut problems = Vec::new();
    for (row, (g, w)) in got_lines.iter().zip(&want_lines).enumerate() {
        if g.text() != w.text() {
            problems.push(format!(
                "row {row}: text\n  snapshot: {:?}\n  stream:   {:?}",
                g.text(),
                w.text()
            ));
            continue;
        }
        for (col, (gc, wc)) in g.cells().iter().zip(w.cells()).enumerate() {
            if gc.pen() != wc.pen() {
                problems.push(format!(
                    "row {row} col {col} ({:?}): pen {:?} in the snapshot, {:?} from the stream",
                    wc.char(),
                    gc.pen(),
                    wc.pen()
                ));
                break;
            }
        }
    }
    let (gc, wc) = (got.cursor(), want.cursor());
    if (gc.col, gc.row, gc.visible) != (wc.col, wc.row, wc.visible) {
        problems.push(format!(
            "cursor: {gc:?} in the snapshot, {wc:?} from the stream"
        ));
    }
    ensure!(
        problems.is_empty(),
        "the screens differ:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// Opens `sh -c script` at [`SIZE`].
async fn open_sh_sized(
    api: &paddock_tests::Api,
    sandbox: &str,
    script: String,
) -> Result<paddock_tests::proto::api::SessionInfo> {
    api.open_session(
        sandbox,
        OpenSessionRequest {
            command: Some("sh".to_owned()),
            args: vec!["-c".to_owned(), script],
            size: Some(SIZE),
            ..Default::default()
        },
    )
    .await
}

/// Joins `session` live (no `from`): the client, and the snapshot it
/// receives first (offset, size and screen).
async fn join_live(
    cp: &ControlPlane,
    sandbox: &str,
    session: paddock_tests::proto::SessionId,
) -> Result<(StreamClient, (u64, TermSize, String))> {
    let mut late = StreamClient::connect(
        cp.url(),
        cp.token(),
        sandbox,
        session,
        StreamOptions::watch().from(None),
    )
    .await?;
    let snapshot = late
        .wait_event(WAIT, |event| match event {
            ControlToClient::Snapshot {
                offset,
                size,
                screen,
            } => Some((*offset, *size, screen.clone())),
            _ => None,
        })
        .await
        .context("a live joiner got no snapshot")?;
    Ok((late, snapshot))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_joiner_gets_a_snapshot_equal_to_replaying_the_stream() {
    within_for(Duration::from_secs(120), async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("snapshot").await?;
        let drawing_file = sb.workdir.path().join("drawing");
        std::fs::write(&drawing_file, drawing())?;
        let after_file = sb.workdir.path().join("after");
        std::fs::write(&after_file, AFTER_GATE)?;
        let gate = sb.workdir.path().join("gate");
        let script = format!(
            "cat '{}'; while [ ! -e '{}' ]; do sleep 0.05; done; cat '{}'; exec sleep 600",
            drawing_file.display(),
            gate.display(),
            after_file.display(),
        );
        let api = cp.api();
        let session = open_sh_sized(&api, sb.id(), script).await?;

        // The whole drawing is out (the PTY turns each \n into \r\n).
        let drawn = onlcr(drawing().as_bytes()).len() as u64;
        let mut full = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        full.recv_until_offset(drawn, WAIT).await?;
        ensure!(
            full.end_offset() == drawn,
            "the session printed {} bytes, the drawing is {drawn}",
            full.end_offset()
        );

        let (mut late, (offset, size, screen)) = join_live(&cp, sb.id(), session.id).await?;
        ensure!(
            offset == drawn && late.welcome().from == drawn,
            "the snapshot is at offset {offset} (welcome from {}), the stream at {drawn}",
            late.welcome().from
        );
        ensure!(size == SIZE, "the snapshot is {size:?}, the PTY {SIZE:?}");

        let stored = api.output(sb.id(), session.id, None, None).await?;
        ensure!(
            stored.bytes.len() as u64 == drawn && stored.gaps.is_empty(),
            "the stored stream holds {} bytes (gaps {:?}), expected {drawn}",
            stored.bytes.len(),
            stored.gaps_header
        );
        let replayed = screen_of(SIZE, &stored.bytes);
        let text = replayed.text().join("\n");
        ensure!(
            text.contains("row 30") && text.contains("OVER") && !replayed.cursor().visible,
            "the stream itself does not draw the expected screen:\n{text}"
        );
        compare_screens(&screen_of(size, screen.as_bytes()), &replayed)
            .context("the snapshot does not redraw the screen of the stream")?;

        // Output after the snapshot reaches the joiner, and on top of the
        // snapshot it still makes the same screen as the whole stream.
        std::fs::write(&gate, b"go")?;
        let end = drawn + AFTER_GATE.len() as u64;
        full.recv_until_offset(end, WAIT).await?;
        late.recv_until_offset(end, WAIT).await?;
        let mut on_snapshot = screen.into_bytes();
        on_snapshot.extend_from_slice(late.output());
        compare_screens(
            &screen_of(size, &on_snapshot),
            &screen_of(SIZE, full.output()),
        )
        .context("snapshot + later output does not make the screen of the whole stream")?;
        Ok(())
    })
    .await;
}

/// Input modes set at the start of the long stream: bracketed paste,
/// application cursor keys, application keypad (as `printf` writes them,
/// and as the bytes it prints).
const MODES_SET: &str = "\\033[?2004h\\033[?1h\\033=";
const MODES_SET_BYTES: &str = "\x1b[?2004h\x1b[?1h\x1b=";

/// After more output than the emulator reads back (`CATCH_UP_TAIL`, 4 MiB)
/// went by unwatched, the late joiner's snapshot comes from the tail (and
/// the modes the rest left set) and must still be the screen of the whole
/// stream: input modes set first, 12 MiB of scrolling lines, then the
/// full-screen drawing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_long_unwatched_output_the_snapshot_is_still_the_streams_screen() {
    within_for(Duration::from_secs(180), async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("snapshot-tail").await?;
        let drawing_file = sb.workdir.path().join("drawing");
        std::fs::write(&drawing_file, drawing())?;
        let script = format!(
            "printf '{MODES_SET}'; seq -f 'line %.0f of the unwatched flood, long enough to wrap nothing' 1 200000; cat '{}'; exec sleep 600",
            drawing_file.display(),
        );
        let api = cp.api();
        let session = open_sh_sized(&api, sb.id(), script).await?;
        // Wait until the whole stream is stored, without watching it live.
        let flood: String = (1..=200_000)
            .map(|i| format!("line {i} of the unwatched flood, long enough to wrap nothing\n"))
            .collect();
        let total = onlcr(format!("{MODES_SET_BYTES}{flood}{}", drawing()).as_bytes()).len() as u64;
        ensure!(total > 3 * 4 * 1024 * 1024, "the stream is only {total} bytes");
        wait_until("the whole stream stored", Duration::from_secs(120), || async {
            let last = api
                .output(sb.id(), session.id, Some(total - 1), None)
                .await?;
            Ok((!last.bytes.is_empty()).then_some(()))
        })
        .await?;
        let stored = api.output(sb.id(), session.id, None, None).await?;
        ensure!(
            stored.bytes.len() as u64 == total && stored.gaps.is_empty(),
            "stored {} bytes (gaps {:?}), expected {total}",
            stored.bytes.len(),
            stored.gaps_header
        );

        let (_late, (offset, size, screen)) = join_live(&cp, sb.id(), session.id).await?;
        ensure!(offset == total, "the snapshot is at {offset}, the stream at {total}");
        for (mode, seq) in [
            ("bracketed paste", "\x1b[?2004h"),
            ("application cursor keys", "\x1b[?1h"),
            ("application keypad", "\x1b="),
        ] {
            ensure!(
                screen.contains(seq),
                "the snapshot lost {mode}, set 12 MiB before ({seq:?} missing)"
            );
        }
        compare_screens(&screen_of(size, screen.as_bytes()), &screen_of(SIZE, &stored.bytes))
            .context("the snapshot after a long unwatched stream is not the stream's screen")?;
        Ok(())
    })
    .await;
}
