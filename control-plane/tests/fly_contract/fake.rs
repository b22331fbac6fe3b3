//! A stand-in for `api.machines.dev` on 127.0.0.1 that checks every request
//! against the published API ([`super::spec`]) before answering it like Fly
//! would: path, method, bearer token, query parameters and their types,
//! body fields and their JSON types. A request that does not fit is
//! recorded as a violation (and refused with 400), so a test that ends
//! with [`FakeFly::assert_clean`] fails on any unexpected or malformed call.
//!
//! Machines move through Fly's states asynchronously: a state change that
//! Fly would carry out in the background (launching, starting, stopping)
//! becomes visible at the next read of the machine, so the client's waits
//! are exercised without the fake sleeping.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::spec::{self, Body};

/// The Fly app the client is configured with.
pub const APP: &str = "paddock-sandboxes-contract";
/// The token the fake accepts.
pub const TOKEN: &str = "FlyV1 fm2_contract_test_token";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub operation: &'static str,
    pub at: Instant,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub status: u16,
}

/// An answer to give instead of the normal one, once.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Value,
}

#[derive(Debug, Clone)]
struct FakeMachine {
    id: String,
    name: String,
    state: String,
    /// The state Fly reaches in the background, shown once `reads_left`
    /// more reads have seen the current one.
    pending: Option<&'static str>,
    reads_left: u32,
    region: String,
    instance_id: String,
    config: Value,
    created_at: String,
    updated_at: String,
    events: Vec<Value>,
}

#[derive(Default)]
struct Inner {
    /// By id, in creation order (ids grow).
    machines: BTreeMap<String, FakeMachine>,
    seen: Vec<Seen>,
    violations: Vec<String>,
    scripted: HashMap<&'static str, VecDeque<Scripted>>,
    next: u64,
}

type Shared = Arc<Mutex<Inner>>;

pub struct FakeFly {
    pub url: String,
    inner: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeFly {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeFly {
    pub async fn start() -> FakeFly {
        let inner: Shared = Arc::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeFly { url, inner, server }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    pub fn seen_of(&self, operation: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.operation == operation)
            .collect()
    }

    /// Answers the next `operation` call with `answer` instead.
    pub fn script(&self, operation: &'static str, answer: Scripted) {
        self.lock()
            .scripted
            .entry(operation)
            .or_default()
            .push_back(answer);
    }

    /// What Fly does on its own (auto-stop, a crash): sets the machine's
    /// state and records the event.
    pub fn fly_sets_state(&self, id: &str, state: &str, event: &str, source: &str) {
        let mut inner = self.lock();
        let machine = inner.machines.get_mut(id).expect("no such machine");
        machine.state = state.to_owned();
        machine.pending = None;
        machine.updated_at = now_rfc3339();
        machine.events.push(event_json(event, state, source));
    }

    /// Fly is moving the machine to `pending` in the background; the next
    /// `reads` reads still show `state`.
    pub fn fly_is_moving(&self, id: &str, state: &str, pending: &'static str, reads: u32) {
        let mut inner = self.lock();
        let machine = inner.machines.get_mut(id).expect("no such machine");
        machine.state = state.to_owned();
        machine.pending = Some(pending);
        machine.reads_left = reads;
    }

    /// A machine made outside this client (another deployment, the control
    /// plane's own machine); returns its id.
    pub fn insert_machine(&self, metadata: Value, state: &str) -> String {
        let mut inner = self.lock();
        let config = json!({"image": "registry.fly.io/other:1", "metadata": metadata});
        let machine = new_machine(&mut inner, None, None, config);
        let id = machine.id.clone();
        inner.machines.insert(id.clone(), machine);
        inner.machines.get_mut(&id).unwrap().state = state.to_owned();
        id
    }

    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().violations)
    }

    /// Fails the test if any request broke the contract.
    pub fn assert_clean(&self) {
        let violations = self.take_violations();
        assert!(
            violations.is_empty(),
            "requests that do not fit Fly's Machines API:\n{}",
            violations.join("\n")
        );
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn event_json(kind: &str, status: &str, source: &str) -> Value {
    json!({
        "id": format!("01JDZ{:021}", now_ms()),
        "type": kind,
        "status": status,
        "source": source,
        "timestamp": now_ms(),
    })
}

fn new_machine(
    inner: &mut Inner,
    name: Option<String>,
    region: Option<String>,
    config: Value,
) -> FakeMachine {
    inner.next += 1;
    let n = inner.next;
    // Fly's machine ids are 14 hex digits; instance ids are ULIDs.
    let id = format!("{:014x}", 0x0017_8194_d05e_8489_u64 + n * 0x10_0001);
    FakeMachine {
        name: name.unwrap_or_else(|| format!("morning-sun-{n}")),
        state: "created".into(),
        pending: Some("started"),
        reads_left: 0,
        region: region.unwrap_or_else(|| "ams".into()),
        instance_id: format!("01JDZ8K4Q7R2M9X3{n:010}"),
        config,
        created_at: now_rfc3339(),
        updated_at: now_rfc3339(),
        events: vec![event_json("launch", "created", "user")],
        id,
    }
}

fn machine_json(m: &FakeMachine) -> Value {
    let image = m.config["image"].as_str().unwrap_or_default();
    let (repository, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let (registry, repository) = repository
        .split_once('/')
        .unwrap_or(("docker.io", repository));
    json!({
        "id": m.id,
        "name": m.name,
        "state": m.state,
        "region": m.region,
        "instance_id": m.instance_id,
        "private_ip": format!("fdaa:9:3a1c:a7b:1f6:{:x}:5f3e:2", m.id.len()),
        "config": m.config,
        "image_ref": {
            "registry": registry,
            "repository": repository,
            "tag": tag,
            "digest": "sha256:9b1a3c0f4e2d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b",
            "labels": {},
        },
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "events": m.events,
        "checks": [],
    })
}

/// Fly's background work becomes visible when the machine is read.
fn settle(m: &mut FakeMachine) {
    if m.reads_left > 0 {
        m.reads_left -= 1;
        return;
    }
    if let Some(state) = m.pending.take() {
        m.state = state.to_owned();
        m.updated_at = now_rfc3339();
        m.events.push(event_json(
            if state == "started" { "start" } else { "exit" },
            state,
            "flyd",
        ));
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn handle(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().unwrap();
    let inner = &mut *inner;
    let query = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let mut violations = Vec::new();
    let (response, operation, body_json) = answer(
        inner,
        &method,
        &uri,
        &headers,
        &query,
        &body,
        &mut violations,
    );
    let status = response.status().as_u16();
    inner.seen.push(Seen {
        operation,
        at: Instant::now(),
        query,
        body: body_json,
        status,
    });
    inner.violations.extend(violations);
    response
}

#[allow(clippy::too_many_arguments)]
fn answer(
    inner: &mut Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: &[u8],
    violations: &mut Vec<String>,
) -> (Response, &'static str, Option<Value>) {
    let what = format!("{method} {uri}");
    let Some((endpoint, params)) = spec::route(method.as_str(), uri.path()) else {
        violations.push(format!(
            "{what}: not an endpoint of the Machines API the client uses"
        ));
        return (error(StatusCode::NOT_FOUND, "not found"), "unknown", None);
    };
    let op = endpoint.operation_id;
    let before = violations.len();

    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(value) if value.starts_with("Bearer ") => {
            if value != format!("Bearer {TOKEN}") {
                return (error(StatusCode::UNAUTHORIZED, "unauthorized"), op, None);
            }
        }
        other => violations.push(format!(
            "{what}: Authorization must be `Bearer TOKEN`, got {other:?}"
        )),
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    if param("app_name").as_deref() != Some(APP) {
        violations.push(format!("{what}: app_name is not the configured app {APP}"));
    }
    for (name, value) in query {
        match endpoint.query.iter().find(|(n, _)| n == name) {
            Some((_, shape)) => spec::check_query_value(shape, name, value, violations),
            None => violations.push(format!(
                "{what}: query parameter `{name}` is not documented"
            )),
        }
        if query.iter().filter(|(n, _)| n == name).count() > 1 {
            violations.push(format!("{what}: query parameter `{name}` repeated"));
        }
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body_json = match (&endpoint.body, body.is_empty()) {
        (Body::None, true) | (Body::Optional(_), true) => None,
        (Body::None, false) => {
            violations.push(format!("{what}: this endpoint takes no body"));
            None
        }
        (Body::Required(_), true) => {
            violations.push(format!("{what}: the body is required"));
            None
        }
        (Body::Optional(shape) | Body::Required(shape), false) => {
            if !content_type.starts_with("application/json") {
                violations.push(format!("{what}: body sent as `{content_type}`, not JSON"));
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(value) => {
                    spec::check(shape, &value, "body", violations);
                    Some(value)
                }
                Err(e) => {
                    violations.push(format!("{what}: body is not JSON: {e}"));
                    None
                }
            }
        }
    };
    if violations.len() > before {
        let message = format!("contract violation: {}", violations[before..].join("; "));
        return (error(StatusCode::BAD_REQUEST, &message), op, body_json);
    }
    if let Some(scripted) = inner.scripted.get_mut(op).and_then(VecDeque::pop_front) {
        spec::check(
            &spec::error_response(),
            &scripted.body,
            "scripted answer",
            violations,
        );
        let status = StatusCode::from_u16(scripted.status).unwrap();
        let mut response = (status, Json(scripted.body)).into_response();
        if let Some(secs) = scripted.retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
        }
        return (response, op, body_json);
    }
    let machine_id = param("machine_id").unwrap_or_default();
    let response = operate(
        inner,
        op,
        &machine_id,
        query,
        body_json.as_ref(),
        violations,
    );
    (response, op, body_json)
}

fn operate(
    inner: &mut Inner,
    op: &str,
    machine_id: &str,
    query: &[(String, String)],
    body: Option<&Value>,
    violations: &mut Vec<String>,
) -> Response {
    let q = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    // The fake's own answers must fit the document too.
    let answer_machine = |m: &FakeMachine, violations: &mut Vec<String>| {
        let value = machine_json(m);
        spec::check(&spec::machine(), &value, "fake's Machine", violations);
        Json(value).into_response()
    };
    if op == "Machines_create" {
        let body = body.expect("checked above");
        let name = body["name"].as_str().map(str::to_owned);
        if let Some(name) = &name {
            let taken = inner
                .machines
                .values()
                .any(|m| &m.name == name && m.state != "destroyed");
            if taken {
                return error(
                    StatusCode::CONFLICT,
                    &format!("a machine named {name} already exists"),
                );
            }
        }
        let region = body["region"].as_str().map(str::to_owned);
        let machine = new_machine(inner, name, region, body["config"].clone());
        let response = answer_machine(&machine, violations);
        inner.machines.insert(machine.id.clone(), machine);
        return response;
    }
    if op == "Machines_list" {
        let include_deleted = q("include_deleted") == Some("true");
        let mut list = Vec::new();
        for m in inner.machines.values_mut() {
            settle(m);
            if include_deleted || m.state != "destroyed" {
                let value = machine_json(m);
                spec::check(&spec::machine(), &value, "fake's Machine", violations);
                list.push(value);
            }
        }
        return Json(Value::Array(list)).into_response();
    }
    let Some(m) = inner
        .machines
        .get_mut(machine_id)
        .filter(|m| m.state != "destroyed")
    else {
        return error(StatusCode::NOT_FOUND, "machine not found");
    };
    settle(m);
    match op {
        "Machines_show" => answer_machine(m, violations),
        "Machines_start" => {
            let previous = m.state.clone();
            if previous != "started" {
                m.state = "starting".into();
                m.pending = Some("started");
            }
            Json(json!({"previous_state": previous, "migrated": false, "new_host": ""}))
                .into_response()
        }
        "Machines_stop" => {
            if m.state == "started" || m.state == "starting" {
                m.state = "stopping".into();
                m.pending = Some("stopped");
            }
            Json(json!({"ok": true})).into_response()
        }
        "Machines_wait" => {
            if let Some(instance) = q("instance_id") {
                if instance != m.instance_id {
                    violations.push(format!(
                        "wait: instance_id {instance} is not machine {}'s ({})",
                        m.id, m.instance_id
                    ));
                }
            }
            let wanted = q("state").unwrap_or("started");
            if m.state == wanted {
                Json(json!({"ok": true})).into_response()
            } else {
                error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("deadline_exceeded: timeout waiting for machine to be {wanted}"),
                )
            }
        }
        "Machines_delete" => {
            if m.state == "started" && q("force") != Some("true") {
                return error(
                    StatusCode::PRECONDITION_FAILED,
                    "failed_precondition: machine still active, refusing to delete",
                );
            }
            m.state = "destroyed".into();
            m.pending = None;
            m.events.push(event_json("destroy", "destroyed", "user"));
            Json(json!({"ok": true})).into_response()
        }
        other => error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("{other} not modelled"),
        ),
    }
}
