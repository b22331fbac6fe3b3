//! The browser console: its pages (plain HTML, CSS and JavaScript modules
//! embedded in the binary, no build step) and its sign-in.
//!
//! Browsers cannot put `Authorization` on a WebSocket, so the console
//! exchanges an API token for a session cookie (`HttpOnly`,
//! `SameSite=Strict`) backed by a server-side row per sign-in; logout
//! deletes the row. A request authenticated by the cookie must carry the
//! session's CSRF token in `x-paddock-csrf` unless it is a safe method, and
//! a WebSocket upgrade must come from a page of this origin (`Origin`
//! checked against `Host`). Revoking the API token ends its console
//! sessions at once.

use axum::extract::{Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN,
    REFERRER_POLICY, SET_COOKIE, UPGRADE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_protocol::admin::{ConsoleSession, ConsoleSignIn, CSRF_HEADER, SESSION_COOKIE};
use paddock_protocol::ErrorCode;
use serde::Deserialize;

use crate::auth::{fill_random, new_token, TokenKind};
use crate::error::ApiError;
use crate::store::Principal;
use crate::AppState;

/// How long a console sign-in lasts.
const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The cookie's value, if the request carries the console's cookie.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Equal strings, compared in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether a WebSocket upgrade comes from a page served by this origin.
fn same_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host))
        }
        _ => false,
    }
}

/// The principal behind a console cookie, after the CSRF and Origin checks.
pub async fn authenticate_cookie(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    secret: &str,
) -> Result<Principal, ApiError> {
    let (principal, session) = state.auth.console_session(secret).await?.ok_or_else(|| {
        ApiError::unauthorized("console session ended or expired; sign in again at /console")
    })?;
    let upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade && !same_origin(headers) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "WebSocket from another origin refused: open it from the console's own pages",
        ));
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|sent| same_secret(sent, &session.csrf_token)) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "missing or wrong CSRF token: send the console session's `csrf_token` in `{CSRF_HEADER}`"
                ),
            ));
        }
    }
    Ok(principal)
}

fn cookie(state: &AppState, value: &str, max_age_secs: u64) -> HeaderValue {
    let secure = if state.config.tls().is_some() {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    // Built from a hex secret and fixed text: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Creates a console session for a valid API token; the cookie that carries it.
async fn open_session(
    state: &AppState,
    token: &str,
) -> Result<(ConsoleSession, HeaderValue), ApiError> {
    let principal = state
        .auth
        .api_token(token.trim())
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid, expired or revoked API token"))?;
    let secret = new_token(TokenKind::Api);
    let mut csrf = [0u8; 24];
    fill_random(&mut csrf);
    let csrf_token = hex::encode(csrf);
    let expires_at = crate::clock::rfc3339(std::time::SystemTime::now() + SESSION_TTL);
    state
        .auth
        .create_console_session(&principal, &secret, &csrf_token, &expires_at)
        .await?;
    crate::admin::record(
        state,
        &principal,
        "console.signed_in",
        &format!("token/{}", principal.token_id),
        serde_json::json!({}),
    )
    .await;
    let session = ConsoleSession {
        csrf_token,
        token_name: principal.token_name,
        role: principal.role,
        tenant_id: principal.tenant_id,
        expires_at,
    };
    Ok((session, cookie(state, &secret, SESSION_TTL.as_secs())))
}

/// `POST /v1/console/session`: exchange an API token for a session cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ConsoleSignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    // A page of another site must not sign a browser in (to its own token).
    if headers.contains_key(ORIGIN) && !same_origin(&headers) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "sign-in from another origin refused: sign in on the console's own page",
        ));
    }
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (session, cookie) = open_session(&state, &body.token).await?;
    let mut response = (StatusCode::CREATED, Json(session)).into_response();
    response.headers_mut().insert(SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /v1/console/session`: the signed-in session (its CSRF token), for
/// a page that was reloaded.
pub async fn current(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_cookie =
        || ApiError::not_found("this request was not made with a console session cookie");
    let secret = session_cookie(&headers).ok_or_else(not_cookie)?;
    if crate::auth::bearer(&headers).is_some() {
        return Err(not_cookie());
    }
    let (_, session) = state
        .auth
        .console_session(secret)
        .await?
        .ok_or_else(not_cookie)?;
    let body = ConsoleSession {
        csrf_token: session.csrf_token,
        token_name: principal.token_name,
        role: principal.role,
        tenant_id: principal.tenant_id,
        expires_at: session.expires_at,
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /v1/console/session`: log out; the session row is deleted, so the
/// cookie is worthless even if a copy survives.
pub async fn sign_out(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(secret) = session_cookie(&headers) {
        state.auth.end_console_session(secret).await?;
        crate::admin::record(
            &state,
            &principal,
            "console.signed_out",
            &format!("token/{}", principal.token_id),
            serde_json::json!({}),
        )
        .await;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, cookie(&state, "", 0));
    Ok(response)
}

/// One embedded file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `/console/assets/`.
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("errors.js", JS),
    asset!("app.js", JS),
    asset!("dom.js", JS),
    asset!("api.js", JS),
    asset!("screen.js", JS),
    asset!("keys.js", JS),
    asset!("pages.js", JS),
    asset!("session.js", JS),
];

const INDEX: &str = include_str!("../console/index.html");

/// The pages may load only their own scripts and styles and talk only to
/// this origin; nobody may frame them.
fn page_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    token: Option<String>,
}

/// `GET /console`: the single page. With `?token=` (a sign-in link) the
/// token is exchanged for a cookie and the browser redirected at once to
/// the URL without it, so it stays in neither the address bar nor history.
pub async fn page(State(state): State<AppState>, Query(query): Query<PageQuery>) -> Response {
    let mut response = match query.token {
        Some(token) => {
            let (location, cookie) = match open_session(&state, &token).await {
                Ok((_, cookie)) => ("/console", Some(cookie)),
                Err(_) => ("/console#/signin?failed=link", None),
            };
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            headers.insert(LOCATION, HeaderValue::from_static(location));
            if let Some(cookie) = cookie {
                headers.insert(SET_COOKIE, cookie);
            }
            response
        }
        None => ([(CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response(),
    };
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    page_headers(&mut response);
    response
}

/// `GET /console/assets/{file}`
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => {
            let mut response = ([(CONTENT_TYPE, asset.content_type)], asset.body).into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            page_headers(&mut response);
            response
        }
        None => ApiError::not_found(format!("no console asset `{file}`")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; paddock_session=pdk_abc ; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("pdk_abc"));
        headers.insert(COOKIE, HeaderValue::from_static("paddock_session="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn origins_must_match_the_host() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:7700"));
        assert!(!same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:7700"));
        assert!(same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
