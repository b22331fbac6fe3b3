//! Expected output streams, computed in the test, of the generators the
//! tests run in sessions, as a PTY delivers them (with `onlcr`, every `\n`
//! becomes `\r\n`).

use sha2::{Digest, Sha256};

/// `bytes` as a PTY's line discipline passes them on: `\n` → `\r\n`.
pub fn onlcr(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// What `seq 1 N` prints through a PTY.
pub fn seq_output(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity((n as usize) * 9);
    for i in 1..=n {
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A shell pipeline printing `total` bytes of `x` in lines of `width`
/// (the last one partial and without a newline when `width` does not
/// divide `total`).
pub fn x_lines_command(total: u64, width: u32) -> String {
    format!("head -c {total} /dev/zero | tr '\\0' x | fold -w {width}")
}

/// What [`x_lines_command`] prints through a PTY.
pub fn x_lines_output(total: u64, width: u32) -> Vec<u8> {
    let width = width as usize;
    let total = total as usize;
    let full = total / width;
    let rest = total % width;
    let mut line = vec![b'x'; width];
    line.extend_from_slice(b"\r\n");
    let mut out = Vec::with_capacity(full * line.len() + rest);
    for _ in 0..full {
        out.extend_from_slice(&line);
    }
    out.resize(out.len() + rest, b'x');
    out
}

/// The SHA-256 of `bytes`, hex-encoded.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `expected` with the `[from, to)` holes cut out: what the output endpoint
/// returns for a stream with gaps.
pub fn without_gaps(expected: &[u8], gaps: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(expected.len());
    let mut at = 0usize;
    for &(from, to) in gaps {
        let from = (from as usize).min(expected.len());
        let to = (to as usize).min(expected.len());
        if from > at {
            out.extend_from_slice(&expected[at..from]);
        }
        at = at.max(to);
    }
    if at < expected.len() {
        out.extend_from_slice(&expected[at..]);
    }
    out
}

/// Where two byte strings first differ, with a little context of each,
/// for failure messages about streams of many MiB.
pub fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    if at == got.len() && at == want.len() {
        return "identical".to_owned();
    }
    let from = at.saturating_sub(40);
    let show = |b: &[u8]| {
        String::from_utf8_lossy(&b[from.min(b.len())..(at + 40).min(b.len())]).into_owned()
    };
    format!(
        "{} bytes vs {} expected; first difference at offset {at}: got {:?}, expected {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}
