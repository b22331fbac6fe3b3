//! asciicast v2 export of a session's stored output, for replay with
//! standard tools (`asciinema play`, `asciinema cat`): a JSON header line,
//! then `[time, "o", text]` output events and `[time, "r", "COLSxROWS"]`
//! resize events, with times in seconds relative to the session's start.

use serde_json::json;

/// Turns timed output chunks and resizes into asciicast lines.
#[derive(Debug)]
pub struct Encoder {
    start_ms: i64,
    last_time: f64,
    /// Bytes of a UTF-8 sequence cut by a chunk boundary, kept for the next event.
    carry: Vec<u8>,
}

impl Encoder {
    pub fn new(start_ms: i64) -> Self {
        Encoder {
            start_ms,
            last_time: 0.0,
            carry: Vec::new(),
        }
    }

    /// The header line.
    pub fn header(
        cols: u16,
        rows: u16,
        start_ms: i64,
        command: Option<&str>,
        title: &str,
    ) -> String {
        let mut header = json!({
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": start_ms / 1000,
            "title": title,
            "env": { "TERM": "xterm-256color" },
        });
        if let Some(command) = command {
            header["command"] = json!(command);
        }
        format!("{header}\n")
    }

    /// Event times never go backwards, whatever the clock said.
    fn time(&mut self, at_ms: Option<i64>) -> f64 {
        if let Some(at) = at_ms {
            let t = (at - self.start_ms).max(0) as f64 / 1000.0;
            if t > self.last_time {
                self.last_time = t;
            }
        }
        self.last_time
    }

    /// An output event for `bytes`, or nothing if they only begin a UTF-8
    /// sequence. Invalid UTF-8 is replaced with U+FFFD, as a terminal would.
    pub fn output(&mut self, at_ms: Option<i64>, bytes: &[u8]) -> Option<String> {
        self.carry.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&self.carry) {
            Ok(_) => self.carry.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.carry.len(),
        };
        if valid_up_to == 0 {
            return None;
        }
        let rest = self.carry.split_off(valid_up_to);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        let time = self.time(at_ms);
        Some(format!("{}\n", json!([round(time), "o", text])))
    }

    pub fn resize(&mut self, at_ms: Option<i64>, cols: u16, rows: u16) -> String {
        let time = self.time(at_ms);
        format!("{}\n", json!([round(time), "r", format!("{cols}x{rows}")]))
    }

    /// Whatever is left of a cut UTF-8 sequence, as a last output event.
    pub fn finish(&mut self) -> Option<String> {
        if self.carry.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.carry)).into_owned();
        Some(format!("{}\n", json!([round(self.last_time), "o", text])))
    }
}

/// Microsecond precision keeps lines short and times exact enough.
fn round(t: f64) -> f64 {
    (t * 1_000_000.0).round() / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_cut_across_chunks_is_joined_and_times_are_monotonic() {
        let mut enc = Encoder::new(1_000);
        let euro = "€".as_bytes();
        let first = enc.output(Some(1_500), &[b'a', euro[0]]).unwrap();
        assert_eq!(first, "[0.5,\"o\",\"a\"]\n");
        let second = enc.output(Some(1_200), &euro[1..]).unwrap();
        // An earlier clock reading does not move time backwards.
        assert_eq!(second, "[0.5,\"o\",\"€\"]\n");
        assert_eq!(enc.resize(Some(2_000), 100, 30), "[1.0,\"r\",\"100x30\"]\n");
        assert!(enc.output(Some(2_100), &[0xe2]).is_none());
        assert_eq!(enc.finish().unwrap(), "[1.0,\"o\",\"\u{fffd}\"]\n");
    }

    #[test]
    fn header_carries_size_time_and_command() {
        let header = Encoder::header(80, 24, 1_700_000_000_123, Some("sh -c ls"), "session 4");
        let v: serde_json::Value = serde_json::from_str(header.trim()).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(80), Some(24))
        );
        assert_eq!(v["timestamp"], 1_700_000_000);
        assert_eq!(v["command"], "sh -c ls");
    }
}
