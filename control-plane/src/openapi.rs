//! The OpenAPI 3 description of the HTTP API (`GET /v1/openapi.json`),
//! generated from the route table and the protocol types' JSON schemas, so
//! a route cannot exist without its entry: the document iterates
//! [`ROUTES`], and [`bodies`] must name the bodies of every one of them.

use axum::Json;
use paddock_protocol::admin::{
    AuditList, ConsoleSession, ConsoleSignIn, CreateTenant, CreateToken, CreateUser, TenantInfo,
    TenantList, TokenCreated, TokenInfo, TokenList, UpdateTenant, UserInfo, UserList, WhoAmI,
};
use paddock_protocol::api::{
    ErrorBody, Health, OpenSessionRequest, OutputQuery, RegisterSandbox, ResizeRequest,
    SandboxInfo, SandboxList, SandboxRegistered, SessionInfo, SessionList, SignalRequest,
    StreamQuery,
};
use paddock_protocol::screen::{Scrollback, ScrollbackQuery};
use paddock_protocol::tasks::{
    AgentInfo, AgentList, CreateAgent, SubmitTask, TaskDecision, TaskEvents, TaskInfo, TaskList,
};
use paddock_protocol::ToolOutput;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::routes::{Permission, Route, ROUTES};

/// What a route takes and gives.
enum Body {
    None,
    Json(Value),
    Raw(&'static str),
    /// A WebSocket upgrade (101).
    Upgrade,
}

struct Bodies {
    request: Body,
    status: u16,
    response: Body,
    query: Option<Value>,
}

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    serde_json::to_value(generator.subschema_for::<T>()).unwrap_or(Value::Null)
}

fn any_object() -> Value {
    json!({ "type": "object" })
}

/// The bodies of each route. A route without an arm here panics when the
/// document is built, which the tests do.
fn bodies(g: &mut SchemaGenerator, route: &Route) -> Bodies {
    use Body::{Json as J, None as N, Raw, Upgrade};
    let ok = |status: u16, response: Body| Bodies {
        request: N,
        status,
        response,
        query: None,
    };
    let with = |request: Body, status: u16, response: Body| Bodies {
        request,
        status,
        response,
        query: None,
    };
    match (route.method, route.path) {
        ("GET", "/healthz" | "/readyz") => ok(200, J(schema::<Health>(g))),
        ("GET", "/metrics") => ok(200, Raw("text/plain")),
        ("GET", "/v1/openapi.json") => ok(200, J(any_object())),
        ("GET", "/console") => ok(200, Raw("text/html")),
        ("GET", "/console/assets/{file}") => ok(200, Raw("text/javascript")),
        ("POST", "/v1/console/session") => with(J(schema::<ConsoleSignIn>(g)), 201, J(schema::<ConsoleSession>(g))),
        ("GET", "/v1/console/session") => ok(200, J(schema::<ConsoleSession>(g))),
        ("DELETE", "/v1/console/session") => ok(204, N),
        ("GET", "/v1/sandboxes/{sandbox}/sessions/{session}/scrollback") => Bodies {
            request: N,
            status: 200,
            response: J(schema::<Scrollback>(g)),
            query: Some(schema::<ScrollbackQuery>(g)),
        },
        ("GET", "/v1/agent/connect" | "/v1/events") => ok(101, Upgrade),
        ("GET", "/v1/whoami") => ok(200, J(schema::<WhoAmI>(g))),
        ("GET", "/v1/sandboxes") => ok(200, J(schema::<SandboxList>(g))),
        ("POST", "/v1/sandboxes") => with(J(schema::<RegisterSandbox>(g)), 201, J(schema::<SandboxRegistered>(g))),
        ("GET", "/v1/sandboxes/{sandbox}") => ok(200, J(schema::<SandboxInfo>(g))),
        ("POST", "/v1/sandboxes/{sandbox}/token") => ok(200, J(schema::<SandboxRegistered>(g))),
        ("POST", "/v1/sandboxes/{sandbox}/stop" | "/v1/sandboxes/{sandbox}/start") => ok(200, J(schema::<SandboxInfo>(g))),
        ("DELETE", "/v1/sandboxes/{sandbox}") => ok(200, J(schema::<SandboxInfo>(g))),
        ("GET", "/v1/sandboxes/{sandbox}/sessions") => ok(200, J(schema::<SessionList>(g))),
        ("POST", "/v1/sandboxes/{sandbox}/sessions") => {
            with(J(schema::<OpenSessionRequest>(g)), 201, J(schema::<SessionInfo>(g)))
        }
        ("GET", "/v1/sandboxes/{sandbox}/sessions/{session}") => ok(200, J(schema::<SessionInfo>(g))),
        ("DELETE", "/v1/sandboxes/{sandbox}/sessions/{session}") => ok(204, N),
        ("POST", "/v1/sandboxes/{sandbox}/sessions/{session}/signal") => with(J(schema::<SignalRequest>(g)), 204, N),
        ("POST", "/v1/sandboxes/{sandbox}/sessions/{session}/resize") => with(J(schema::<ResizeRequest>(g)), 204, N),
        ("GET", "/v1/sandboxes/{sandbox}/sessions/{session}/output") => Bodies {
            request: N,
            status: 200,
            response: Raw("application/octet-stream"),
            query: Some(schema::<OutputQuery>(g)),
        },
        ("GET", "/v1/sandboxes/{sandbox}/sessions/{session}/stream") => Bodies {
            request: N,
            status: 101,
            response: Upgrade,
            query: Some(schema::<StreamQuery>(g)),
        },
        ("POST", "/v1/sandboxes/{sandbox}/tools/{tool}") => with(J(any_object()), 200, J(schema::<ToolOutput>(g))),
        ("GET", "/v1/tenants") => ok(200, J(schema::<TenantList>(g))),
        ("POST", "/v1/tenants") => with(J(schema::<CreateTenant>(g)), 201, J(schema::<TenantInfo>(g))),
        ("PATCH", "/v1/tenants/{tenant}") => with(J(schema::<UpdateTenant>(g)), 200, J(schema::<TenantInfo>(g))),
        ("GET", "/v1/users") => ok(200, J(schema::<UserList>(g))),
        ("POST", "/v1/users") => with(J(schema::<CreateUser>(g)), 201, J(schema::<UserInfo>(g))),
        ("GET", "/v1/tokens") => ok(200, J(schema::<TokenList>(g))),
        ("POST", "/v1/tokens") => with(J(schema::<CreateToken>(g)), 201, J(schema::<TokenCreated>(g))),
        ("DELETE", "/v1/tokens/{token}") => ok(200, J(schema::<TokenInfo>(g))),
        ("GET", "/v1/audit") => ok(200, J(schema::<AuditList>(g))),
        ("GET", "/v1/agents") => ok(200, J(schema::<AgentList>(g))),
        ("POST", "/v1/agents") => with(J(schema::<CreateAgent>(g)), 201, J(schema::<AgentInfo>(g))),
        ("GET", "/v1/agents/{agent}") => ok(200, J(any_object())),
        ("PUT", "/v1/agents/{agent}/limits") => with(J(any_object()), 200, J(any_object())),
        ("POST", "/v1/agents/{agent}/costs") => with(J(any_object()), 200, J(any_object())),
        ("PUT", "/v1/limits") => with(J(any_object()), 204, N),
        ("GET", "/v1/tasks") => ok(200, J(schema::<TaskList>(g))),
        ("POST", "/v1/tasks") => with(J(schema::<SubmitTask>(g)), 201, J(schema::<TaskInfo>(g))),
        ("GET", "/v1/tasks/{task}") => ok(200, J(schema::<TaskInfo>(g))),
        ("GET", "/v1/tasks/{task}/events") => ok(200, J(schema::<TaskEvents>(g))),
        ("POST", "/v1/tasks/{task}/cancel" | "/v1/tasks/{task}/approve" | "/v1/tasks/{task}/reject") => {
            with(J(schema::<TaskDecision>(g)), 200, J(schema::<TaskInfo>(g)))
        }
        (method, path) => panic!("route {method} {path} has no entry in the OpenAPI description: add it to openapi::bodies"),
    }
}

fn content(body: &Body) -> Option<Value> {
    match body {
        Body::None | Body::Upgrade => None,
        Body::Json(schema) => Some(json!({ "application/json": { "schema": schema } })),
        Body::Raw(kind) => Some(json!({ *kind: { "schema": { "type": "string" } } })),
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    let error = schema::<ErrorBody>(&mut generator);
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let b = bodies(&mut generator, route);
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if let Some(query) = &b.query {
            parameters.push(json!({ "name": "query", "in": "query", "style": "form", "explode": true, "schema": query }));
        }
        let mut responses = Map::new();
        let mut ok = json!({ "description": match b.response { Body::Upgrade => "WebSocket upgrade", _ => "success" } });
        if let Some(c) = content(&b.response) {
            ok["content"] = c;
        }
        responses.insert(b.status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({ "description": "an error", "content": { "application/json": { "schema": error } } }),
        );
        let mut op = json!({
            "operationId": format!("{} {}", route.method, route.path),
            "description": format!("permission: {}", route.permission.as_str()),
            "parameters": parameters,
            "responses": responses,
        });
        match route.permission {
            Permission::Public => op["security"] = json!([]),
            Permission::SandboxToken => op["security"] = json!([{ "sandboxToken": [] }]),
            _ => {}
        }
        if let Some(c) = content(&b.request) {
            op["requestBody"] = json!({ "required": true, "content": c });
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = op;
    }
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Paddock control plane", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "security": [{ "apiToken": [] }],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiToken": { "type": "http", "scheme": "bearer" },
                "sandboxToken": { "type": "http", "scheme": "bearer" }
            }
        }
    })
}

/// `GET /v1/openapi.json`
pub async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_with_resolvable_schemas() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{} {} is missing from the document",
                route.method,
                route.path
            );
        }
        // Every $ref points at a schema the document defines.
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
        assert!(schemas.contains_key("SubmitTask") && schemas.contains_key("SessionInfo"));
    }
}
