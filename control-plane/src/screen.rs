//! Rendered screens for the browser console (`render=screen` streams and
//! the scrollback route): the session's server-side emulator turned into
//! rows of styled runs, sent as one full frame and then row diffs.
//!
//! Each viewer keeps only the rows it last sent. After a change it waits
//! out the rest of its frame interval (at most [`MAX_SCREEN_FPS`] frames a
//! second), then renders whatever the screen is *now* and sends the rows
//! that differ: changes in between coalesce, and a viewer whose socket is
//! slow simply gets fewer frames — nothing queues for it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Json;
use paddock_protocol::screen::{
    Color, Cursor, ScreenRow, ScreenRun, Scrollback, ScrollbackQuery, MAX_SCREEN_FPS,
    MAX_SCROLLBACK,
};
use paddock_protocol::{ControlToClient, ErrorCode, SessionId, StreamMode, TermSize};
use tokio::time::Instant;

use crate::api::{load_log, resolve_session};
use crate::error::ApiError;
use crate::fanout::{Ending, SessionLog};
use crate::store::Principal;
use crate::AppState;

/// The screen as the emulator shows it at one stream offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub offset: u64,
    pub size: TermSize,
    pub rows: Vec<ScreenRow>,
    pub cursor: Cursor,
}

fn color(c: vt100::Color) -> Option<Color> {
    match c {
        vt100::Color::Default => None,
        vt100::Color::Idx(i) => Some(Color::Indexed(i)),
        vt100::Color::Rgb(r, g, b) => Some(Color::Rgb([r, g, b])),
    }
}

/// One visible row of `screen` as styled runs, trailing blanks dropped.
pub fn render_row(screen: &vt100::Screen, row: u16, cols: u16) -> ScreenRow {
    let mut runs: Vec<ScreenRun> = Vec::new();
    for col in 0..cols {
        let Some(cell) = screen.cell(row, col) else {
            break;
        };
        if cell.is_wide_continuation() {
            continue;
        }
        let text = if cell.has_contents() {
            cell.contents()
        } else {
            " "
        };
        let style = ScreenRun {
            text: String::new(),
            fg: color(cell.fgcolor()),
            bg: color(cell.bgcolor()),
            bold: cell.bold(),
            italic: cell.italic(),
            underline: cell.underline(),
            inverse: cell.inverse(),
        };
        match runs.last_mut() {
            Some(last)
                if ScreenRun {
                    text: String::new(),
                    ..last.clone()
                } == style =>
            {
                last.text.push_str(text)
            }
            _ => runs.push(ScreenRun {
                text: text.to_owned(),
                ..style
            }),
        }
    }
    // Blank cells at the end of a row with no background to show add nothing.
    while let Some(last) = runs.last_mut() {
        if last.bg.is_some() || last.inverse || last.underline {
            break;
        }
        let trimmed = last.text.trim_end_matches(' ').len();
        last.text.truncate(trimmed);
        if !last.text.is_empty() {
            break;
        }
        runs.pop();
    }
    ScreenRow { row, runs }
}

/// Every visible row and the cursor.
pub fn render(screen: &vt100::Screen, offset: u64) -> Rendered {
    let (rows, cols) = screen.size();
    let (rows, cols) = (rows.get(), cols.get());
    let (cursor_row, cursor_col) = screen.cursor_position();
    Rendered {
        offset,
        size: TermSize { cols, rows },
        rows: (0..rows).map(|r| render_row(screen, r, cols)).collect(),
        cursor: Cursor {
            row: cursor_row,
            col: cursor_col,
            visible: !screen.hide_cursor() && screen.scrollback() == 0,
        },
    }
}

/// Lines above the screen (oldest first, at most `wanted`) and the screen.
pub fn scrollback_of(parser: &mut vt100::Parser, offset: u64, wanted: usize) -> Scrollback {
    let (rows, cols) = parser.screen().size();
    let (rows, cols) = (rows.get() as usize, cols.get());
    parser.screen_mut().set_scrollback(usize::MAX);
    let available = parser.screen().scrollback();
    let mut lines = Vec::new();
    // Viewed `above` lines up, the window's top row is the line that far
    // above the screen; walk windows from the oldest wanted line down.
    let mut above = available.min(wanted);
    while above > 0 {
        parser.screen_mut().set_scrollback(above);
        let take = above.min(rows);
        for r in 0..take {
            let mut row = render_row(parser.screen(), r as u16, cols);
            row.row = lines.len() as u16;
            lines.push(row);
        }
        above -= take;
    }
    parser.screen_mut().set_scrollback(0);
    let screen = render(parser.screen(), offset).rows;
    Scrollback {
        offset,
        lines,
        screen,
    }
}

/// `GET …/sessions/{session}/scrollback?lines=N`
pub async fn scrollback(
    State(state): State<AppState>,
    principal: Principal,
    Path((sandbox, session)): Path<(String, u64)>,
    query: Result<Query<ScrollbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Scrollback>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (_sandbox, row) = resolve_session(&state, &principal, &sandbox, SessionId(session)).await?;
    let log = load_log(&state, &row);
    let wanted = query.lines.min(MAX_SCROLLBACK) as usize;
    let scrollback = log.scrollback(&state.store, wanted).await.map_err(|err| {
        tracing::error!(error = %err, "could not rebuild the screen");
        ApiError::internal()
    })?;
    Ok(Json(scrollback))
}

/// Frames of at most this many bytes of rows each; a bigger screen is sent
/// as a frame and diffs at the same offset (a control frame holds 1 MiB).
const FRAME_BUDGET: usize = 256 * 1024;

/// The messages that bring a viewer from `last` to `now`: a full frame when
/// it has nothing yet or the size changed, else the changed rows.
pub fn screen_messages(last: Option<&Rendered>, now: &Rendered) -> Vec<ControlToClient> {
    let full = last.is_none_or(|l| l.size != now.size);
    let changed: Vec<ScreenRow> = match last {
        Some(last) if !full => now
            .rows
            .iter()
            .zip(&last.rows)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.clone())
            .collect(),
        _ => now
            .rows
            .iter()
            .filter(|r| !r.runs.is_empty())
            .cloned()
            .collect(),
    };
    if !full && changed.is_empty() && last.is_some_and(|l| l.cursor == now.cursor) {
        return Vec::new();
    }
    let mut batches: Vec<Vec<ScreenRow>> = vec![Vec::new()];
    let mut weight = 0;
    for row in changed {
        let w: usize = 16 + row.runs.iter().map(|r| r.text.len() + 64).sum::<usize>();
        if weight + w > FRAME_BUDGET && !batches.last().is_some_and(Vec::is_empty) {
            batches.push(Vec::new());
            weight = 0;
        }
        weight += w;
        if let Some(batch) = batches.last_mut() {
            batch.push(row);
        }
    }
    batches
        .into_iter()
        .enumerate()
        .map(|(i, rows)| {
            if full && i == 0 {
                ControlToClient::ScreenFrame {
                    offset: now.offset,
                    size: now.size,
                    rows,
                    cursor: now.cursor,
                }
            } else {
                ControlToClient::ScreenDiff {
                    offset: now.offset,
                    rows,
                    cursor: now.cursor,
                }
            }
        })
        .collect()
}

/// Sends rendered screens, driver and size changes, and the ending, until
/// the session ends or the client goes away.
pub async fn write_screens(
    state: &AppState,
    log: &SessionLog,
    client_id: u64,
    mut mode: StreamMode,
    sink: &mut crate::stream::Sink,
    done: &tokio_util::sync::CancellationToken,
) {
    let interval = Duration::from_millis(1000 / u64::from(MAX_SCREEN_FPS));
    let mut rx_changed = log.subscribe();
    let mut last: Option<Arc<Rendered>> = None;
    let mut driver = log.snapshot().driver;
    let mut next_frame = Instant::now();
    loop {
        rx_changed.borrow_and_update();
        let now = match log.screen_render(&state.store).await {
            Ok(now) => now,
            Err(err) => {
                tracing::error!(error = %err, "could not render the screen");
                crate::agent_conn::close(sink, 1011, "could not render the screen").await;
                return;
            }
        };
        let messages = screen_messages(last.as_deref(), &now);
        if !messages.is_empty() {
            for msg in &messages {
                if !crate::stream::send(sink, msg).await {
                    return;
                }
            }
            next_frame = Instant::now() + interval;
        }
        last = Some(now.clone());

        let snap = log.snapshot();
        if snap.driver != driver {
            let still_me = snap
                .driver
                .as_ref()
                .is_some_and(|d| d.client_id == client_id);
            if mode == StreamMode::Attach && !still_me {
                mode = StreamMode::Watch;
                let by = snap.driver.as_ref().map_or("nobody", |d| d.label.as_str());
                let reason = format!("taken over by {by}; you are watching now");
                let msg = ControlToClient::ModeChanged { mode, reason };
                if !crate::stream::send(sink, &msg).await {
                    return;
                }
            }
            driver = snap.driver.clone();
            let label = driver.as_ref().map(|d| d.label.clone());
            if !crate::stream::send(sink, &ControlToClient::DriverChanged { driver: label }).await {
                return;
            }
        }
        if now.offset >= snap.end {
            match snap.ending {
                Some(Ending::Exited(status)) => {
                    let exited = ControlToClient::Exited {
                        status,
                        end_offset: snap.end,
                    };
                    if crate::stream::send(sink, &exited).await {
                        crate::agent_conn::close(sink, 1000, "session ended").await;
                    }
                    return;
                }
                Some(Ending::Lost(reason)) => {
                    crate::stream::refuse(sink, ErrorCode::SessionEnded, 1000, reason).await;
                    return;
                }
                None => {}
            }
        }
        // Wait for a change, then for the rest of the frame interval: what
        // changes meanwhile is drawn by the one frame that follows.
        tokio::select! {
            changed = rx_changed.changed() => if changed.is_err() { return },
            _ = done.cancelled() => return,
            _ = state.shutdown.cancelled() => {
                crate::agent_conn::close(sink, 1001, "control plane shutting down").await;
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_frame) => {}
            _ = done.cancelled() => return,
            _ = state.shutdown.cancelled() => {
                crate::agent_conn::close(sink, 1001, "control plane shutting down").await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(bytes: &[u8]) -> vt100::Parser {
        let mut p = vt100::Parser::new(
            std::num::NonZeroU16::new(4).unwrap(),
            std::num::NonZeroU16::new(20).unwrap(),
            100,
        );
        p.process(bytes);
        p
    }

    #[test]
    fn rows_become_styled_runs_without_trailing_blanks() {
        let p = parser(b"$ \x1b[1;31mred\x1b[0m ok   \r\n\x1b[44m  \x1b[0m");
        let r = render(p.screen(), 7);
        assert_eq!(r.size, TermSize { cols: 20, rows: 4 });
        assert_eq!(r.rows[0].text(), "$ red ok");
        let red = &r.rows[0].runs[1];
        assert_eq!(
            (red.text.as_str(), red.fg, red.bold),
            ("red", Some(Color::Indexed(1)), true)
        );
        // A coloured background counts even when blank.
        assert_eq!(r.rows[1].runs[0].bg, Some(Color::Indexed(4)));
        assert!(r.rows[2].runs.is_empty());
        assert_eq!((r.cursor.row, r.cursor.col), (1, 2));
    }

    #[test]
    fn diffs_carry_only_changed_rows_and_nothing_when_idle() {
        let mut p = parser(b"one\r\ntwo");
        let first = render(p.screen(), 1);
        let msgs = screen_messages(None, &first);
        assert!(
            matches!(&msgs[..], [ControlToClient::ScreenFrame { rows, .. }] if rows.len() == 2)
        );
        p.process(b"\r\nthree");
        let second = render(p.screen(), 2);
        match &screen_messages(Some(&first), &second)[..] {
            [ControlToClient::ScreenDiff { rows, cursor, .. }] => {
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].text(), "three");
                assert_eq!((cursor.row, cursor.col), (2, 5));
            }
            other => panic!("expected one diff, got {other:?}"),
        }
        assert!(screen_messages(Some(&second), &second).is_empty());
        // A resize redraws everything.
        p.screen_mut().set_size(
            std::num::NonZeroU16::new(5).unwrap(),
            std::num::NonZeroU16::new(20).unwrap(),
        );
        let resized = render(p.screen(), 2);
        assert!(matches!(
            &screen_messages(Some(&second), &resized)[..],
            [ControlToClient::ScreenFrame { .. }]
        ));
    }

    #[test]
    fn scrollback_lists_lines_above_the_screen_oldest_first() {
        let mut p = parser(b"");
        for i in 0..10 {
            p.process(format!("line {i}\r\n").as_bytes());
        }
        let sb = scrollback_of(&mut p, 0, 100);
        let lines: Vec<String> = sb.lines.iter().map(ScreenRow::text).collect();
        assert_eq!(
            lines,
            (0..7).map(|i| format!("line {i}")).collect::<Vec<_>>()
        );
        let screen: Vec<String> = sb.screen.iter().map(ScreenRow::text).collect();
        assert_eq!(screen, vec!["line 7", "line 8", "line 9", ""]);
        assert_eq!(p.screen().scrollback(), 0);
        let last_two: Vec<String> = scrollback_of(&mut p, 0, 2)
            .lines
            .iter()
            .map(ScreenRow::text)
            .collect();
        assert_eq!(last_two, vec!["line 5", "line 6"]);
    }

    #[test]
    fn huge_screens_are_split_into_a_frame_and_diffs() {
        let rows: Vec<ScreenRow> = (0..200)
            .map(|row| ScreenRow {
                row,
                runs: (0..100)
                    .map(|i| ScreenRun {
                        text: "x".into(),
                        fg: Some(Color::Rgb([i as u8, 0, 0])),
                        ..ScreenRun::default()
                    })
                    .collect(),
            })
            .collect();
        let now = Rendered {
            offset: 1,
            size: TermSize {
                cols: 100,
                rows: 200,
            },
            rows,
            cursor: Cursor {
                row: 0,
                col: 0,
                visible: true,
            },
        };
        let msgs = screen_messages(None, &now);
        assert!(msgs.len() > 1);
        assert!(matches!(msgs[0], ControlToClient::ScreenFrame { .. }));
        for m in &msgs {
            assert!(m.encode().len() < paddock_protocol::MAX_CONTROL_FRAME);
        }
    }
}
