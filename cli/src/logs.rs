//! `paddock logs`: a session's stored output, streamed to stdout as it
//! arrives (never held in memory whole), with the holes the control plane
//! reports in its gaps header noted on stderr where they fall; or, with
//! `--format asciicast`, the control plane's asciicast v2 recording as is.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use paddock_protocol::api::{OutputFormat, OutputQuery, GAPS_HEADER};
use paddock_protocol::SessionId;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::api::Client;
use crate::term;

/// How long the download may stall before it is given up.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// The media type of an asciicast recording.
const ASCIICAST_TYPE: &str = "application/x-asciicast";

/// Parses `--format`: `raw` or `asciicast`.
pub fn parse_format(text: &str) -> Result<OutputFormat, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "raw" => Ok(OutputFormat::Raw),
        "asciicast" => Ok(OutputFormat::Asciicast),
        _ => Err(format!("unknown format `{text}`: use raw or asciicast")),
    }
}

/// Prints the session's stored output in `query`'s range to stdout, in its format.
pub async fn logs(
    client: &Client,
    sandbox: &str,
    session: SessionId,
    query: OutputQuery,
) -> Result<i32> {
    let format = query.format.unwrap_or(OutputFormat::Raw);
    if format == OutputFormat::Asciicast && (query.from.is_some() || query.to.is_some()) {
        bail!("--from and --to do not apply to --format asciicast, which records the whole session: leave them out");
    }
    if let (Some(from), Some(to)) = (query.from, query.to) {
        if to < from {
            bail!("--to {to} is before --from {from}: the range is [FROM, TO), so TO must be at least FROM");
        }
    }
    let mut response = client.session_output(sandbox, session, &query).await?;
    let from = query.from.unwrap_or(0);
    let gaps = match format {
        OutputFormat::Raw => match gaps_header(response.headers()) {
            Ok(gaps) => gaps,
            Err(err) => {
                term::note(&format!(
                    "[paddock: {err}; holes in the output are not reported]"
                ));
                Vec::new()
            }
        },
        // The recording is written as is; its offsets are not the body's.
        OutputFormat::Asciicast => {
            check_asciicast(response.headers())?;
            Vec::new()
        }
    };
    let mut holes = Holes::new(from, &gaps);
    let mut stdout = tokio::io::stdout();
    let mut note = |text: &str| term::note(text);
    let resume = |offset: u64| {
        let to = query.to.map(|to| format!(" --to {to}")).unwrap_or_default();
        match format {
            OutputFormat::Raw => format!(
                "run `paddock logs {sandbox} {session} --from {offset}{to}` to get the rest"
            ),
            OutputFormat::Asciicast => {
                "run the command again: a recording cannot be resumed".to_owned()
            }
        }
    };
    loop {
        let chunk = match tokio::time::timeout(CHUNK_TIMEOUT, response.chunk()).await {
            Err(_) => bail!(
                "the control plane sent nothing for {}s at offset {}: {}",
                CHUNK_TIMEOUT.as_secs(),
                holes.offset(),
                resume(holes.offset())
            ),
            Ok(Err(err)) => bail!(
                "the download broke at offset {} ({err}): {}",
                holes.offset(),
                resume(holes.offset())
            ),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        match copy_chunk(&mut stdout, &mut holes, &chunk, &mut note).await {
            Ok(()) => {}
            // Whoever reads the output (`head`, say) has all it wants.
            Err(err) if err.kind() == ErrorKind::BrokenPipe => return Ok(0),
            Err(err) => {
                return Err(anyhow!(err).context("could not write the session's output to stdout"))
            }
        }
    }
    holes.rest(&mut note);
    Ok(0)
}

/// Refuses an answer that is not an asciicast recording: a control plane
/// that predates `format` answers with the raw bytes instead.
fn check_asciicast(headers: &HeaderMap) -> Result<()> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case(ASCIICAST_TYPE) {
        bail!(
            "the control plane answered with {content_type} instead of an asciicast recording: it does not support --format asciicast yet; upgrade it, or use --format raw"
        );
    }
    Ok(())
}

/// The holes listed in the answer's gaps header, in any of its values.
fn gaps_header(headers: &HeaderMap) -> Result<Vec<(u64, u64)>, String> {
    let mut gaps = Vec::new();
    for value in headers.get_all(GAPS_HEADER) {
        let text = value
            .to_str()
            .map_err(|_| format!("the control plane's {GAPS_HEADER} header is not text"))?;
        gaps.extend(parse_gaps(text)?);
    }
    Ok(gaps)
}

/// Parses `from-to` pairs separated by commas, e.g. `10-20,30-31`.
pub fn parse_gaps(text: &str) -> Result<Vec<(u64, u64)>, String> {
    let bad = |why: &str| format!("the control plane's {GAPS_HEADER} header `{text}` {why}");
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (from, to) = pair
                .split_once('-')
                .ok_or_else(|| bad("has a range without `-`"))?;
            let parse = |n: &str| {
                n.trim()
                    .parse::<u64>()
                    .map_err(|_| bad("has a bound that is not an offset"))
            };
            let (from, to) = (parse(from)?, parse(to)?);
            if to < from {
                return Err(bad("has a range that ends before it starts"));
            }
            Ok((from, to))
        })
        .collect()
}

/// A hole, placed before the body byte at position `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hole {
    at: u64,
    from: u64,
    to: u64,
}

/// Where the holes of a download fall in its body, which holds only the
/// bytes that exist, and the stream offset of the next body byte.
#[derive(Debug)]
struct Holes {
    ahead: VecDeque<Hole>,
    received: u64,
    offset: u64,
}

impl Holes {
    /// The holes `gaps` of a body that starts at stream offset `from`.
    fn new(from: u64, gaps: &[(u64, u64)]) -> Self {
        let mut gaps = gaps.to_vec();
        gaps.sort_unstable();
        let mut ahead = VecDeque::new();
        // `at` counts the bytes that exist between `from` and each hole.
        let (mut cursor, mut at) = (from, 0);
        for (start, end) in gaps {
            let start = start.max(cursor);
            if end <= start {
                continue;
            }
            at += start - cursor;
            ahead.push_back(Hole {
                at,
                from: start,
                to: end,
            });
            cursor = end;
        }
        Holes {
            ahead,
            received: 0,
            offset: from,
        }
    }

    /// The stream offset of the next body byte: where a new download resumes.
    fn offset(&self) -> u64 {
        self.offset
    }

    /// How many of the next `len` body bytes come before the next hole, if
    /// that hole falls within them.
    fn before_next_hole(&self, len: usize) -> Option<usize> {
        let hole = self.ahead.front()?;
        let n = hole.at.saturating_sub(self.received);
        (n <= len as u64).then_some(n as usize)
    }

    fn pass_bytes(&mut self, n: usize) {
        self.received += n as u64;
        self.offset += n as u64;
    }

    fn pass_hole(&mut self) -> Option<Hole> {
        let hole = self.ahead.pop_front()?;
        self.offset = self.offset.max(hole.to);
        Some(hole)
    }

    /// Notes the holes the body did not reach (those at its very end).
    fn rest(&mut self, note: &mut impl FnMut(&str)) {
        while let Some(hole) = self.pass_hole() {
            note(&gap_note(hole));
        }
    }
}

fn gap_note(hole: Hole) -> String {
    format!("[gap: bytes {}..{} missing]", hole.from, hole.to)
}

/// Writes one chunk of the body, noting each hole between the bytes it falls between.
async fn copy_chunk(
    out: &mut (impl AsyncWrite + Unpin),
    holes: &mut Holes,
    mut chunk: &[u8],
    note: &mut impl FnMut(&str),
) -> std::io::Result<()> {
    while let Some(n) = holes.before_next_hole(chunk.len()) {
        let (before, after) = chunk.split_at(n);
        out.write_all(before).await?;
        // The note must not overtake the bytes before it on a terminal.
        out.flush().await?;
        holes.pass_bytes(n);
        if let Some(hole) = holes.pass_hole() {
            note(&gap_note(hole));
        }
        chunk = after;
    }
    out.write_all(chunk).await?;
    out.flush().await?;
    holes.pass_bytes(chunk.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn the_gaps_header_lists_ranges_separated_by_commas() {
        assert_eq!(parse_gaps(""), Ok(vec![]));
        assert_eq!(parse_gaps("10-20"), Ok(vec![(10, 20)]));
        assert_eq!(
            parse_gaps("0-7, 100-4096 ,5000-5000"),
            Ok(vec![(0, 7), (100, 4096), (5000, 5000)])
        );
        for bad in ["10", "a-b", "10-", "-3", "20-10", "1-2;3-4"] {
            let err = parse_gaps(bad).unwrap_err();
            assert!(
                err.contains(GAPS_HEADER) && err.contains(bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(parse_format("raw"), Ok(OutputFormat::Raw));
        assert_eq!(parse_format("Asciicast"), Ok(OutputFormat::Asciicast));
        assert!(parse_format("cast")
            .unwrap_err()
            .contains("raw or asciicast"));
    }

    #[test]
    fn asciicast_answers_are_recognised_by_their_media_type() {
        let mut headers = HeaderMap::new();
        let err = check_asciicast(&headers).unwrap_err().to_string();
        assert!(err.contains("--format raw"), "{err}");
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let err = check_asciicast(&headers).unwrap_err().to_string();
        assert!(err.contains("application/octet-stream"), "{err}");
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-asciicast; charset=utf-8"),
        );
        check_asciicast(&headers).unwrap();
    }

    #[test]
    fn the_header_may_be_absent_or_repeated() {
        let mut headers = HeaderMap::new();
        assert_eq!(gaps_header(&headers), Ok(vec![]));
        headers.append(GAPS_HEADER, HeaderValue::from_static("1-2"));
        headers.append(GAPS_HEADER, HeaderValue::from_static("5-6,8-9"));
        assert_eq!(gaps_header(&headers), Ok(vec![(1, 2), (5, 6), (8, 9)]));
    }

    #[test]
    fn holes_are_placed_among_the_bytes_that_exist() {
        // Bytes from 100; holes [100,101) (clipped), [110,120) and
        // [125,130): the body holds 101..110, 120..125, 130.. back to back.
        let holes = Holes::new(100, &[(125, 130), (110, 120), (90, 95), (50, 101)]);
        let placed: Vec<_> = holes.ahead.iter().copied().collect();
        assert_eq!(
            placed,
            [
                Hole {
                    at: 0,
                    from: 100,
                    to: 101
                },
                Hole {
                    at: 9,
                    from: 110,
                    to: 120
                },
                Hole {
                    at: 14,
                    from: 125,
                    to: 130
                },
            ]
        );
    }

    /// Copies `chunks`, marking each chunk's start with `|`; the notes of a
    /// chunk follow its bytes.
    async fn copy(from: u64, gaps: &[(u64, u64)], chunks: &[&[u8]]) -> (String, u64) {
        let mut holes = Holes::new(from, gaps);
        let mut out = Vec::new();
        for chunk in chunks {
            out.push(b'|');
            let mut notes = Vec::new();
            copy_chunk(&mut out, &mut holes, chunk, &mut |t: &str| {
                notes.push(t.to_owned())
            })
            .await
            .unwrap();
            out.extend(notes.concat().into_bytes());
        }
        let mut notes = Vec::new();
        holes.rest(&mut |t: &str| notes.push(t.to_owned()));
        out.extend(notes.concat().into_bytes());
        (String::from_utf8(out).unwrap(), holes.offset())
    }

    #[tokio::test]
    async fn bytes_are_copied_in_order_with_every_hole_noted() {
        // 0..3 "abc", hole 3..10, 10..12 "de", hole 12..15 at the very end.
        let (text, offset) = copy(0, &[(3, 10), (12, 15)], &[b"ab", b"cde"]).await;
        assert_eq!(
            text,
            "|ab|cde[gap: bytes 3..10 missing][gap: bytes 12..15 missing]"
        );
        assert_eq!(offset, 15);
        // Within one chunk the note sits between its bytes (checked through the offset).
        let mut holes = Holes::new(0, &[(3, 10)]);
        let mut out = Vec::new();
        let mut notes = Vec::new();
        copy_chunk(&mut out, &mut holes, b"abcde", &mut |t: &str| {
            notes.push(t.to_owned())
        })
        .await
        .unwrap();
        assert_eq!(out, b"abcde");
        assert_eq!(notes, ["[gap: bytes 3..10 missing]"]);
        assert_eq!(holes.offset(), 12);
        // A hole before the first byte is noted before anything is written.
        let (text, _) = copy(5, &[(5, 8)], &[b"xy"]).await;
        assert_eq!(text, "|xy[gap: bytes 5..8 missing]");
        let mut holes = Holes::new(5, &[(5, 8)]);
        assert_eq!(holes.before_next_hole(2), Some(0));
        holes.pass_hole();
        assert_eq!(holes.offset(), 8);
    }

    #[tokio::test]
    async fn a_download_that_breaks_knows_where_to_resume() {
        let mut holes = Holes::new(100, &[(102, 200)]);
        let mut out = Vec::new();
        copy_chunk(&mut out, &mut holes, b"a", &mut |_: &str| {})
            .await
            .unwrap();
        assert_eq!(holes.offset(), 101);
        // A hole right after a chunk is noted with it, so resuming skips it.
        copy_chunk(&mut out, &mut holes, b"b", &mut |_: &str| {})
            .await
            .unwrap();
        assert_eq!(holes.offset(), 200);
        copy_chunk(&mut out, &mut holes, b"c", &mut |_: &str| {})
            .await
            .unwrap();
        assert_eq!(holes.offset(), 201);
        assert_eq!(out, b"abc");
    }
}
