//! The part of Fly's published Machines API (Swagger 2.0, "Machines API"
//! version 1.0, host `api.machines.dev`, base path `/v1`) that Paddock's
//! Fly client uses, written down here as facts so the contract test runs
//! from a fresh clone without the document.
//!
//! Every endpoint is named by its `operationId`; every body and query
//! parameter has the JSON type the document gives it. The document marks
//! no body field `required`; the contract requires what Fly refuses to do
//! without (a create needs `config` and `config.image`).

use serde_json::Value;

/// A JSON shape from the document's `definitions`.
#[derive(Debug, Clone)]
pub enum Shape {
    String,
    Integer,
    Boolean,
    /// A string from a fixed set (`enum`).
    OneOf(&'static [&'static str]),
    /// An object with documented properties; any other property is refused.
    Object(Vec<Prop>),
    /// An object of free keys (`additionalProperties`).
    MapOf(Box<Shape>),
    ArrayOf(Box<Shape>),
    /// Documented without a type (e.g. `MachineEvent.request`).
    Any,
}

#[derive(Debug, Clone)]
pub struct Prop {
    pub name: &'static str,
    pub shape: Shape,
    pub required: bool,
}

fn opt(name: &'static str, shape: Shape) -> Prop {
    Prop {
        name,
        shape,
        required: false,
    }
}

fn req(name: &'static str, shape: Shape) -> Prop {
    Prop {
        name,
        shape,
        required: true,
    }
}

fn map_of(shape: Shape) -> Shape {
    Shape::MapOf(Box::new(shape))
}

fn array_of(shape: Shape) -> Shape {
    Shape::ArrayOf(Box::new(shape))
}

fn strings() -> Shape {
    array_of(Shape::String)
}

/// `fly.Duration`: described as an object holding `time.Duration` (ns).
fn duration() -> Shape {
    Shape::Object(vec![opt("time.Duration", Shape::Integer)])
}

/// `fly.MachineGuest`.
pub fn machine_guest() -> Shape {
    Shape::Object(vec![
        opt("cpu_kind", Shape::String),
        opt("cpus", Shape::Integer),
        opt("gpu_kind", Shape::String),
        opt("gpus", Shape::Integer),
        opt("host_dedication_id", Shape::String),
        opt("kernel_args", strings()),
        opt("memory_mb", Shape::Integer),
    ])
}

/// `fly.MachineConfig`. Sub-objects Paddock never sends (checks, dns,
/// services, …) are described by their outer type only.
pub fn machine_config(image_required: bool) -> Shape {
    let any_object = || map_of(Shape::Any);
    let any_array = || array_of(Shape::Any);
    Shape::Object(vec![
        opt("auto_destroy", Shape::Boolean),
        opt("checks", any_object()),
        opt("disable_machine_autostart", Shape::Boolean),
        opt("dns", any_object()),
        opt("env", map_of(Shape::String)),
        opt(
            "files",
            array_of(Shape::Object(vec![
                opt("guest_path", Shape::String),
                opt("raw_value", Shape::String),
                opt("secret_name", Shape::String),
            ])),
        ),
        opt("guest", machine_guest()),
        Prop {
            name: "image",
            shape: Shape::String,
            required: image_required,
        },
        opt(
            "init",
            Shape::Object(vec![
                opt("cmd", strings()),
                opt("entrypoint", strings()),
                opt("exec", strings()),
                opt("kernel_args", strings()),
                opt("swap_size_mb", Shape::Integer),
                opt("tty", Shape::Boolean),
            ]),
        ),
        opt("metadata", map_of(Shape::String)),
        opt(
            "metrics",
            Shape::Object(vec![
                opt("path", Shape::String),
                opt("port", Shape::Integer),
            ]),
        ),
        opt("mounts", any_array()),
        opt("processes", any_array()),
        opt(
            "restart",
            Shape::Object(vec![
                opt("max_retries", Shape::Integer),
                opt("policy", Shape::OneOf(&["no", "always", "on-failure"])),
            ]),
        ),
        opt("schedule", Shape::String),
        opt("services", any_array()),
        opt("size", Shape::String),
        opt("standbys", strings()),
        opt("statics", any_array()),
        opt(
            "stop_config",
            Shape::Object(vec![
                opt("signal", Shape::String),
                opt("timeout", duration()),
            ]),
        ),
    ])
}

/// `CreateMachineRequest`.
pub fn create_machine_request() -> Shape {
    Shape::Object(vec![
        req("config", machine_config(true)),
        opt("lease_ttl", Shape::Integer),
        opt("lsvd", Shape::Boolean),
        opt("name", Shape::String),
        opt("region", Shape::String),
        opt("skip_launch", Shape::Boolean),
        opt("skip_service_registration", Shape::Boolean),
    ])
}

/// `StopRequest`.
pub fn stop_request() -> Shape {
    Shape::Object(vec![
        opt("signal", Shape::String),
        opt("timeout", duration()),
    ])
}

/// `Machine`, as Fly answers (used to check the fake's own answers).
pub fn machine() -> Shape {
    Shape::Object(vec![
        opt(
            "checks",
            array_of(Shape::Object(vec![
                opt("name", Shape::String),
                opt("output", Shape::String),
                opt("status", Shape::String),
                opt("updated_at", Shape::String),
            ])),
        ),
        opt("config", machine_config(false)),
        opt("created_at", Shape::String),
        opt(
            "events",
            array_of(Shape::Object(vec![
                opt("id", Shape::String),
                opt("request", Shape::Any),
                opt("source", Shape::String),
                opt("status", Shape::String),
                opt("timestamp", Shape::Integer),
                opt("type", Shape::String),
            ])),
        ),
        opt("id", Shape::String),
        opt(
            "image_ref",
            Shape::Object(vec![
                opt("digest", Shape::String),
                opt("labels", map_of(Shape::String)),
                opt("registry", Shape::String),
                opt("repository", Shape::String),
                opt("tag", Shape::String),
            ]),
        ),
        opt("instance_id", Shape::String),
        opt("name", Shape::String),
        opt("nonce", Shape::String),
        opt("private_ip", Shape::String),
        opt("region", Shape::String),
        opt("state", Shape::String),
        opt("updated_at", Shape::String),
    ])
}

/// `ErrorResponse`.
pub fn error_response() -> Shape {
    Shape::Object(vec![
        opt("details", Shape::Any),
        opt("error", Shape::String),
        opt(
            "status",
            Shape::OneOf(&["unknown", "insufficient_capacity"]),
        ),
    ])
}

/// Whether (and how) an endpoint takes a JSON body.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Optional(Shape),
    Required(Shape),
}

/// One endpoint of the document.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub operation_id: &'static str,
    pub method: &'static str,
    /// Below the base path, with `{app_name}` and `{machine_id}`.
    pub path: &'static str,
    pub query: Vec<(&'static str, Shape)>,
    pub body: Body,
}

/// The base path every endpoint is under.
pub const BASE_PATH: &str = "/v1";

/// The endpoints the client may call.
pub fn endpoints() -> Vec<Endpoint> {
    let machine = "/apps/{app_name}/machines/{machine_id}";
    vec![
        Endpoint {
            operation_id: "Machines_list",
            method: "GET",
            path: "/apps/{app_name}/machines",
            query: vec![
                ("include_deleted", Shape::Boolean),
                ("region", Shape::String),
            ],
            body: Body::None,
        },
        Endpoint {
            operation_id: "Machines_create",
            method: "POST",
            path: "/apps/{app_name}/machines",
            query: vec![],
            body: Body::Required(create_machine_request()),
        },
        Endpoint {
            operation_id: "Machines_show",
            method: "GET",
            path: machine,
            query: vec![],
            body: Body::None,
        },
        Endpoint {
            operation_id: "Machines_delete",
            method: "DELETE",
            path: machine,
            query: vec![("force", Shape::Boolean)],
            body: Body::None,
        },
        Endpoint {
            operation_id: "Machines_start",
            method: "POST",
            path: "/apps/{app_name}/machines/{machine_id}/start",
            query: vec![],
            body: Body::None,
        },
        Endpoint {
            operation_id: "Machines_stop",
            method: "POST",
            path: "/apps/{app_name}/machines/{machine_id}/stop",
            query: vec![],
            body: Body::Optional(stop_request()),
        },
        Endpoint {
            operation_id: "Machines_wait",
            method: "GET",
            path: "/apps/{app_name}/machines/{machine_id}/wait",
            query: vec![
                ("instance_id", Shape::String),
                ("timeout", Shape::Integer),
                ("state", Shape::OneOf(&["started", "stopped", "destroyed"])),
            ],
            body: Body::None,
        },
    ]
}

/// The endpoint `method path` addresses and its path parameters, if any.
pub fn route(method: &str, path: &str) -> Option<(Endpoint, Vec<(&'static str, String)>)> {
    let rest = path.strip_prefix(BASE_PATH)?;
    let given: Vec<&str> = rest.split('/').collect();
    endpoints().into_iter().find_map(|endpoint| {
        if endpoint.method != method {
            return None;
        }
        let template: Vec<&'static str> = endpoint.path.split('/').collect();
        if template.len() != given.len() {
            return None;
        }
        let mut params = Vec::new();
        for (t, g) in template.iter().zip(&given) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                if g.is_empty() {
                    return None;
                }
                params.push((name, g.to_string()));
            } else if t != g {
                return None;
            }
        }
        Some((endpoint, params))
    })
}

/// Everything about `value` that does not fit `shape`, as messages naming
/// the JSON path.
pub fn check(shape: &Shape, value: &Value, at: &str, out: &mut Vec<String>) {
    let mut wrong = |expected: &str| {
        out.push(format!("{at}: expected {expected}, got {value}"));
    };
    match shape {
        Shape::Any => {}
        Shape::String if !value.is_string() => wrong("a string"),
        Shape::Integer if !(value.is_i64() || value.is_u64()) => wrong("an integer"),
        Shape::Boolean if !value.is_boolean() => wrong("a boolean"),
        Shape::OneOf(allowed) => match value.as_str() {
            Some(s) if allowed.contains(&s) => {}
            _ => wrong(&format!("one of {allowed:?}")),
        },
        Shape::Object(props) => {
            let Some(object) = value.as_object() else {
                return wrong("an object");
            };
            for (key, field) in object {
                match props.iter().find(|p| p.name == key) {
                    Some(prop) => check(&prop.shape, field, &format!("{at}.{key}"), out),
                    None => out.push(format!("{at}.{key}: not a documented field")),
                }
            }
            for prop in props.iter().filter(|p| p.required) {
                if !object.contains_key(prop.name) {
                    out.push(format!("{at}.{}: required but missing", prop.name));
                }
            }
        }
        Shape::MapOf(inner) => {
            let Some(object) = value.as_object() else {
                return wrong("an object");
            };
            for (key, field) in object {
                check(inner, field, &format!("{at}.{key}"), out);
            }
        }
        Shape::ArrayOf(inner) => {
            let Some(items) = value.as_array() else {
                return wrong("an array");
            };
            for (i, item) in items.iter().enumerate() {
                check(inner, item, &format!("{at}[{i}]"), out);
            }
        }
        Shape::String | Shape::Integer | Shape::Boolean => {}
    }
}

/// A query parameter's text checked against its documented type.
pub fn check_query_value(shape: &Shape, name: &str, text: &str, out: &mut Vec<String>) {
    let ok = match shape {
        Shape::Boolean => matches!(text, "true" | "false"),
        Shape::Integer => text.parse::<i64>().is_ok(),
        Shape::OneOf(allowed) => allowed.contains(&text),
        _ => true,
    };
    if !ok {
        out.push(format!("query {name}={text}: not a valid {shape:?}"));
    }
}
