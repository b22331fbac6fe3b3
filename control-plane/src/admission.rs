//! Enforcing [`Limits`]: WebSocket connection slots per token and per client
//! IP, watcher slots per session, sessions per sandbox, message rates per
//! connection, frame and request-body sizes. Every refusal is counted in
//! `paddock_limit_refusals_total{limit}` and answered with a clear error:
//! JSON before an upgrade, a close frame with a reason after it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::ws::Message;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use paddock_protocol::{ErrorCode, CLOSE_RATE_LIMITED};

use crate::agent_conn::Violation;
use crate::error::ApiError;
use crate::limits::Limits;
use crate::AppState;

/// The `limit` label of each refusal.
pub mod limit {
    pub const FRAME_SIZE: &str = "frame_size";
    pub const MESSAGE_RATE: &str = "message_rate";
    pub const SESSIONS_PER_SANDBOX: &str = "sessions_per_sandbox";
    pub const WATCHERS_PER_SESSION: &str = "watchers_per_session";
    pub const CONNECTIONS_PER_TOKEN: &str = "connections_per_token";
    pub const CONNECTIONS_PER_IP: &str = "connections_per_ip";
    pub const BODY_SIZE: &str = "body_size";
}

/// Counts one refusal for `limit`.
pub fn count_refusal(limit: &'static str) {
    metrics::counter!(crate::telemetry::LIMIT_REFUSALS, "limit" => limit).increment(1);
}

/// The limits and the slots held against them, shared by every connection.
#[derive(Debug)]
pub struct Admission {
    pub limits: Limits,
    per_token: Slots<String>,
    per_ip: Slots<IpAddr>,
    per_session: Slots<u64>,
    /// Sessions being opened, per sandbox.
    opening: Slots<String>,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            per_token: Slots::default(),
            per_ip: Slots::default(),
            per_session: Slots::default(),
            opening: Slots::default(),
        }
    }

    /// Admits one more WebSocket of `token` (an API token id, or a sandbox
    /// id for agentd) from `ip`; the permit holds the slots until dropped.
    pub fn admit_websocket(&self, token: &str, ip: Option<IpAddr>) -> Result<WsPermit, ApiError> {
        let max = self.limits.max_connections_per_token;
        let Some(by_token) = self.per_token.take(token.to_owned(), max) else {
            count_refusal(limit::CONNECTIONS_PER_TOKEN);
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "this token already holds {max} WebSocket connections (max_connections_per_token); \
                     close some before opening another"
                ),
            ));
        };
        let by_ip = match ip {
            Some(ip) => {
                let max = self.limits.max_connections_per_ip;
                match self.per_ip.take(ip, max) {
                    Some(slot) => Some(slot),
                    None => {
                        count_refusal(limit::CONNECTIONS_PER_IP);
                        return Err(ApiError::new(
                            ErrorCode::LimitExceeded,
                            format!(
                                "{ip} already holds {max} WebSocket connections (max_connections_per_ip); \
                                 close some before opening another"
                            ),
                        ));
                    }
                }
            }
            None => None,
        };
        Ok(WsPermit {
            _by_token: by_token,
            _by_ip: by_ip,
        })
    }

    /// Admits one more client on the stream of session `id`.
    pub fn admit_watcher(&self, id: u64) -> Result<Slot<u64>, ApiError> {
        let max = self.limits.max_watchers_per_session;
        self.per_session.take(id, max).ok_or_else(|| {
            count_refusal(limit::WATCHERS_PER_SESSION);
            ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "session {id} already has {max} clients on its stream (max_watchers_per_session); \
                     try again when one leaves"
                ),
            )
        })
    }

    /// Admits one more session of `sandbox`, whose sessions not yet ended
    /// are counted by `open`. The slot stands for the session until it is
    /// in the hub (and so counted by `open`): hold it until then, so that
    /// concurrent opens cannot pass the limit together.
    pub fn reserve_session(
        &self,
        sandbox: &str,
        open: impl FnOnce() -> usize,
    ) -> Result<Slot<String>, ApiError> {
        let max = self.limits.max_sessions_per_sandbox;
        self.opening
            .take_if(sandbox.to_owned(), |opening| open() + opening < max)
            .ok_or_else(|| {
                count_refusal(limit::SESSIONS_PER_SANDBOX);
                ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "sandbox {sandbox} already has {max} open sessions (max_sessions_per_sandbox); \
                         close one (DELETE its session) before opening another"
                    ),
                )
            })
    }

    /// A fresh message-rate budget for one agent (`agent`) or client connection.
    pub fn message_rate(&self, agent: bool) -> MessageRate {
        let per_sec = if agent {
            self.limits.max_agent_messages_per_sec
        } else {
            self.limits.max_client_messages_per_sec
        };
        MessageRate::new(per_sec)
    }

    /// Checks one incoming WebSocket message's size against `max_frame_bytes`;
    /// the error is the close reason.
    pub fn check_frame(&self, len: usize) -> Result<(), String> {
        let max = self.limits.max_frame_bytes;
        if len <= max {
            return Ok(());
        }
        count_refusal(limit::FRAME_SIZE);
        Err(format!(
            "a message of {len} bytes exceeds the limit of {max} (max_frame_bytes)"
        ))
    }
}

/// Checks an incoming message against the frame-size limit and the
/// connection's message rate.
pub fn admit_message(
    admission: &Admission,
    rate: &MessageRate,
    msg: &Message,
) -> Result<(), Violation> {
    let len = match msg {
        Message::Binary(bytes) => bytes.len(),
        Message::Text(text) => text.len(),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(()),
    };
    admission.check_frame(len)?;
    rate.check().map_err(|reason| Violation {
        code: CLOSE_RATE_LIMITED,
        reason,
    })
}

/// A connection's slots against the per-token and per-IP limits.
#[derive(Debug)]
pub struct WsPermit {
    _by_token: Slot<String>,
    _by_ip: Option<Slot<IpAddr>>,
}

/// Counts of held slots per key; a key with none is forgotten.
#[derive(Debug)]
struct Slots<K> {
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K> Default for Slots<K> {
    fn default() -> Self {
        Slots {
            held: Arc::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Slots<K> {
    /// One more slot of `key`, unless it already holds `max`.
    fn take(&self, key: K, max: usize) -> Option<Slot<K>> {
        self.take_if(key, |held| held < max)
    }

    /// One more slot of `key` if `admit` allows it, given the slots `key`
    /// holds; decided under the lock.
    fn take_if(&self, key: K, admit: impl FnOnce(usize) -> bool) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key.clone()).or_insert(0);
        if !admit(*count) {
            if *count == 0 {
                held.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            held: self.held.clone(),
            key,
        })
    }
}

/// One held slot, given back when dropped.
#[derive(Debug)]
pub struct Slot<K: std::hash::Hash + Eq> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: std::hash::Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// One connection's message-rate budget (GCRA): `per_sec` sustained, twice
/// that in a burst.
pub struct MessageRate {
    limiter: DefaultDirectRateLimiter,
    per_sec: u32,
}

impl MessageRate {
    fn new(per_sec: u32) -> Self {
        let rate = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        MessageRate {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            per_sec: rate.get(),
        }
    }

    /// Counts one message; past the rate, the error is the close reason.
    pub fn check(&self) -> Result<(), String> {
        if self.limiter.check().is_ok() {
            return Ok(());
        }
        count_refusal(limit::MESSAGE_RATE);
        Err(format!(
            "more than {} messages a second on this connection; slow down and reconnect",
            self.per_sec
        ))
    }
}

/// The peer's address of a TLS connection, for the per-IP limit (plain TCP
/// listeners give axum's `ConnectInfo<SocketAddr>`; a foreign type cannot
/// be given the TLS listener's).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The client's address when the server was started with connect info.
pub fn client_ip(req: &Request) -> Option<IpAddr> {
    let extensions = req.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .or_else(|| {
            extensions
                .get::<ConnectInfo<PeerAddr>>()
                .map(|info| info.0 .0.ip())
        })
}

/// The client's IP as handlers see it (inserted by [`client_ip_layer`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

/// Hands handlers the client's IP ([`ClientIp`]): from `client_ip_header`
/// when configured and present, else the peer address.
pub async fn client_ip_layer(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let forwarded = state
        .admission
        .limits
        .client_ip_header
        .as_deref()
        .and_then(|name| req.headers().get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    let ip = forwarded.or_else(|| client_ip(&req));
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// Refuses a body announced larger than `max_body_bytes` with 413 and the
/// JSON error before it is read. Bodies without a length are cut by axum's
/// body limit, which the JSON extractor's rejection turns into the same 413.
pub fn check_body(admission: &Admission, req: &Request) -> Result<(), ApiError> {
    let max = admission.limits.max_body_bytes;
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced.filter(|&len| len > max as u64) {
        Some(len) => {
            count_refusal(limit::BODY_SIZE);
            Err(too_large(Some((len, max))))
        }
        None => Ok(()),
    }
}

/// The 413 for a body too large: its length and the limit, when known.
pub fn too_large(sizes: Option<(u64, usize)>) -> ApiError {
    let message = match sizes {
        Some((len, max)) => {
            format!("a body of {len} bytes exceeds the limit of {max} bytes (max_body_bytes); send less")
        }
        None => "the body exceeds this server's limit (max_body_bytes); send less".to_owned(),
    };
    ApiError::new(ErrorCode::PayloadTooLarge, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_when_dropped() {
        let slots: Slots<String> = Slots::default();
        let a = slots.take("t".into(), 2).unwrap();
        let b = slots.take("t".into(), 2).unwrap();
        assert!(slots.take("t".into(), 2).is_none());
        assert!(
            slots.take("u".into(), 2).is_some(),
            "keys are counted apart"
        );
        drop(a);
        let c = slots.take("t".into(), 2).unwrap();
        drop((b, c));
        assert!(
            slots.held.lock().unwrap().is_empty(),
            "idle keys are forgotten"
        );
    }

    #[test]
    fn sessions_being_opened_count_against_the_limit() {
        let admission = Admission::new(Limits {
            max_sessions_per_sandbox: 2,
            ..Limits::default()
        });
        let opening = admission.reserve_session("sbx_a", || 1).unwrap();
        // Not in the hub yet, but it may not be opened twice over.
        let err = admission.reserve_session("sbx_a", || 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::LimitExceeded);
        assert!(
            err.message.contains("max_sessions_per_sandbox"),
            "{}",
            err.message
        );
        assert!(admission.reserve_session("sbx_b", || 1).is_ok());
        // In the hub now: counted by `open` instead.
        drop(opening);
        assert!(admission.reserve_session("sbx_a", || 2).is_err());
        assert!(admission.reserve_session("sbx_a", || 1).is_ok());
    }

    #[test]
    fn a_burst_of_twice_the_rate_then_refusal() {
        let rate = MessageRate::new(5);
        for i in 0..10 {
            assert!(rate.check().is_ok(), "message {i} of the burst");
        }
        let reason = rate.check().unwrap_err();
        assert!(reason.contains("more than 5 messages a second"), "{reason}");
        assert!(
            reason.len() <= 120,
            "a close reason holds 123 bytes at most"
        );
    }

    #[test]
    fn oversized_frames_are_refused_with_the_limit_named() {
        let admission = Admission::new(Limits {
            max_frame_bytes: 100_000,
            ..Limits::default()
        });
        assert!(admission.check_frame(100_000).is_ok());
        let reason = admission.check_frame(100_001).unwrap_err();
        assert!(reason.contains("max_frame_bytes"), "{reason}");
    }
}
