//! Rendered screens for the browser console: the server's terminal emulator
//! turned into rows of styled text runs plus the cursor, so a browser draws
//! a terminal without emulating one. Sent on a session stream opened with
//! `render=screen` as [`crate::ControlToClient::ScreenFrame`] (the whole
//! screen) and [`crate::ControlToClient::ScreenDiff`] (changed rows only).

use serde::{Deserialize, Serialize};

use crate::error::{check_len, check_str, DecodeError};
use crate::limits::{MAX_CONTROL_FRAME, MAX_TERM_DIM};

/// How a client wants a session stream's output.
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Render {
    /// The terminal's bytes, in binary output frames (the CLI).
    #[default]
    Bytes,
    /// Rendered screens: `screen_frame` then `screen_diff` messages,
    /// at most [`MAX_SCREEN_FPS`] a second; no binary output frames.
    Screen,
}

impl Render {
    pub fn as_str(self) -> &'static str {
        match self {
            Render::Bytes => "bytes",
            Render::Screen => "screen",
        }
    }
}

/// The most screen messages a viewer gets per second; changes in between
/// coalesce into the next one (latest state wins, nothing queues).
pub const MAX_SCREEN_FPS: u32 = 30;

/// A colour: an xterm palette index (`0`–`255`) or `[r, g, b]`. Absent means
/// the terminal's default.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Color {
    Indexed(u8),
    Rgb([u8; 3]),
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Consecutive cells of one row with the same style.
#[derive(
    schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize,
)]
pub struct ScreenRun {
    /// The cells' characters; a wide character stands for two cells.
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fg: Option<Color>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bg: Option<Color>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub bold: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub italic: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub underline: bool,
    /// Foreground and background swapped.
    #[serde(default, skip_serializing_if = "is_false")]
    pub inverse: bool,
}

/// One row of the screen, numbered from 0 at the top. Trailing blank
/// default-styled cells are left out.
#[derive(
    schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize,
)]
pub struct ScreenRow {
    pub row: u16,
    pub runs: Vec<ScreenRun>,
}

impl ScreenRow {
    /// The row's characters without styles.
    pub fn text(&self) -> String {
        self.runs.iter().map(|r| r.text.as_str()).collect()
    }
}

/// Where the cursor stands (0-based) and whether the program shows it.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub row: u16,
    pub col: u16,
    pub visible: bool,
}

/// Rendered lines above the screen and the screen itself, oldest first:
/// `GET /v1/sandboxes/{sandbox}/sessions/{session}/scrollback`.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scrollback {
    /// The stream offset the emulator stands at.
    pub offset: u64,
    /// Lines that scrolled off the top, oldest first (`row` counts from 0).
    pub lines: Vec<ScreenRow>,
    /// The current screen's rows.
    pub screen: Vec<ScreenRow>,
}

/// Query of the scrollback route.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrollbackQuery {
    /// At most this many lines above the screen (default and cap: [`MAX_SCROLLBACK`]).
    #[serde(default = "max_scrollback")]
    pub lines: u32,
}

/// Lines of scrollback the server's emulator keeps per session.
pub const MAX_SCROLLBACK: u32 = 1000;

fn max_scrollback() -> u32 {
    MAX_SCROLLBACK
}

pub(crate) fn check_rows(rows: &[ScreenRow]) -> Result<(), DecodeError> {
    check_len("rows", rows.len(), MAX_TERM_DIM as usize)?;
    for row in rows {
        if row.row >= MAX_TERM_DIM {
            return Err(DecodeError::Invalid {
                field: "rows",
                reason: "row numbers must be below the largest terminal size",
            });
        }
        for run in &row.runs {
            check_str("text", &run.text, MAX_CONTROL_FRAME)?;
        }
    }
    Ok(())
}
