//! Wall-clock timestamps as the API shows them: RFC 3339, UTC, milliseconds.

use std::time::SystemTime;

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
