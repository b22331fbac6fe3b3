//! Every HTTP and WebSocket route with the permission it requires, in one
//! table. The router is built from this table and the authorization layer
//! is attached per route from it, so a route cannot exist without a
//! declared permission — and the cross-tenant and role tests iterate the
//! same table.

use axum::extract::{Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use paddock_protocol::admin::Role;

use crate::error::ApiError;
use crate::{
    admin, admission, agent_conn, api, console, events, screen, stream, tasks_api, telemetry,
    tools, AppState,
};

/// What a route requires of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// No token at all (health checks).
    Public,
    /// A sandbox's agentd token, checked by the handler before the upgrade.
    SandboxToken,
    /// Any valid API token.
    Authenticated,
    ReadSandboxes,
    ManageSandboxes,
    OpenSessions,
    /// Watching a live terminal; attaching (`mode=attach`) also needs [`Permission::Attach`].
    Watch,
    Attach,
    ControlSessions,
    ReadLogs,
    ManageUsers,
    ManageTokens,
    /// Settings of the caller's own tenant (an owner: of any tenant).
    ManageTenantSettings,
    /// Creating and listing tenants: the platform operator only.
    ManageTenants,
    ReadAudit,
    /// Tool calls (git, LSP, files, exec) in a sandbox.
    CallTools,
    /// Submitting tasks (an agent token: for its own agent only).
    SubmitTasks,
    /// Reading tasks (an agent token: its own only).
    ReadTasks,
    CancelTasks,
    /// Approving or rejecting a restricted agent's tasks.
    ApproveTasks,
    ManageAgents,
    ReadAgents,
    /// The tenant's live events stream.
    ReadEvents,
    /// Reporting an agent's costs (an agent token: its own).
    ReportCosts,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Public => "public",
            Permission::SandboxToken => "sandbox_token",
            Permission::Authenticated => "authenticated",
            Permission::ReadSandboxes => "read_sandboxes",
            Permission::ManageSandboxes => "manage_sandboxes",
            Permission::OpenSessions => "open_sessions",
            Permission::Watch => "watch",
            Permission::Attach => "attach",
            Permission::ControlSessions => "control_sessions",
            Permission::ReadLogs => "read_logs",
            Permission::ManageUsers => "manage_users",
            Permission::ManageTokens => "manage_tokens",
            Permission::ManageTenantSettings => "manage_tenant_settings",
            Permission::ManageTenants => "manage_tenants",
            Permission::ReadAudit => "read_audit",
            Permission::CallTools => "call_tools",
            Permission::SubmitTasks => "submit_tasks",
            Permission::ReadTasks => "read_tasks",
            Permission::CancelTasks => "cancel_tasks",
            Permission::ApproveTasks => "approve_tasks",
            Permission::ManageAgents => "manage_agents",
            Permission::ReadAgents => "read_agents",
            Permission::ReadEvents => "read_events",
            Permission::ReportCosts => "report_costs",
        }
    }

    /// Whether `role` holds this permission.
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        let roles: &[Role] = match self {
            Permission::Public | Permission::SandboxToken | Permission::Authenticated => {
                return true
            }
            Permission::ReadSandboxes => &[Owner, Admin, Operator, Developer, Viewer],
            Permission::ManageSandboxes => &[Owner, Admin],
            Permission::OpenSessions | Permission::ControlSessions => &[Owner, Admin, Developer],
            Permission::Watch => &[Owner, Admin, Operator, Developer],
            Permission::Attach => &[Owner, Admin, Developer],
            Permission::ReadLogs => &[Owner, Admin, Operator, Developer, Viewer],
            Permission::ManageUsers | Permission::ManageTokens => &[Owner, Admin],
            Permission::ManageTenantSettings => &[Owner, Admin],
            Permission::ManageTenants => &[Owner],
            Permission::ReadAudit => &[Owner, Admin, Operator],
            Permission::CallTools => &[Owner, Admin, Developer, Agent],
            Permission::SubmitTasks => &[Owner, Admin, Developer, Agent],
            Permission::ReadTasks | Permission::ReadEvents => {
                &[Owner, Admin, Operator, Developer, Agent, Viewer]
            }
            Permission::CancelTasks => &[Owner, Admin, Operator, Developer, Agent],
            Permission::ApproveTasks => &[Owner, Admin, Operator, Developer],
            Permission::ManageAgents => &[Owner, Admin],
            Permission::ReportCosts => &[Owner, Admin, Agent],
            Permission::ReadAgents => &[Owner, Admin, Operator, Developer, Viewer],
        };
        roles.contains(&role)
    }

    /// Whether the caller must present an API token.
    pub fn needs_api_token(self) -> bool {
        !matches!(self, Permission::Public | Permission::SandboxToken)
    }
}

/// One route of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
    /// Whether the route names a tenant's resource in its path (for the
    /// cross-tenant tests: another tenant's id must answer 404).
    pub tenant_resource: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    permission: Permission,
    tenant_resource: bool,
) -> Route {
    Route {
        method,
        path,
        permission,
        tenant_resource,
    }
}

/// Every route the control plane serves.
pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", Permission::Public, false),
    route("GET", "/readyz", Permission::Public, false),
    route("GET", "/v1/openapi.json", Permission::Public, false),
    route("GET", "/metrics", Permission::Public, false),
    route("GET", "/console", Permission::Public, false),
    route("GET", "/console/assets/{file}", Permission::Public, false),
    // Signing in takes an API token in the body: the handler checks it.
    route("POST", "/v1/console/session", Permission::Public, false),
    route(
        "GET",
        "/v1/console/session",
        Permission::Authenticated,
        false,
    ),
    route(
        "DELETE",
        "/v1/console/session",
        Permission::Authenticated,
        false,
    ),
    route("GET", "/v1/agent/connect", Permission::SandboxToken, false),
    route("GET", "/v1/whoami", Permission::Authenticated, false),
    route("GET", "/v1/sandboxes", Permission::ReadSandboxes, false),
    route("POST", "/v1/sandboxes", Permission::ManageSandboxes, false),
    route(
        "POST",
        "/v1/sandboxes/{sandbox}/token",
        Permission::ManageSandboxes,
        true,
    ),
    route(
        "GET",
        "/v1/sandboxes/{sandbox}",
        Permission::ReadSandboxes,
        true,
    ),
    route(
        "GET",
        "/v1/sandboxes/{sandbox}/sessions",
        Permission::ReadSandboxes,
        true,
    ),
    route(
        "POST",
        "/v1/sandboxes/{sandbox}/sessions",
        Permission::OpenSessions,
        true,
    ),
    route(
        "GET",
        "/v1/sandboxes/{sandbox}/sessions/{session}",
        Permission::ReadSandboxes,
        true,
    ),
    route(
        "DELETE",
        "/v1/sandboxes/{sandbox}/sessions/{session}",
        Permission::ControlSessions,
        true,
    ),
    route(
        "POST",
        "/v1/sandboxes/{sandbox}/sessions/{session}/signal",
        Permission::ControlSessions,
        true,
    ),
    route(
        "POST",
        "/v1/sandboxes/{sandbox}/sessions/{session}/resize",
        Permission::ControlSessions,
        true,
    ),
    route(
        "GET",
        "/v1/sandboxes/{sandbox}/sessions/{session}/output",
        Permission::ReadLogs,
        true,
    ),
    route(
        "GET",
        "/v1/sandboxes/{sandbox}/sessions/{session}/stream",
        Permission::Watch,
        true,
    ),
    route(
        "GET",
        "/v1/sandboxes/{sandbox}/sessions/{session}/scrollback",
        Permission::Watch,
        true,
    ),
    route(
        "POST",
        "/v1/sandboxes/{sandbox}/tools/{tool}",
        Permission::CallTools,
        true,
    ),
    route("GET", "/v1/tenants", Permission::ManageTenants, false),
    route("POST", "/v1/tenants", Permission::ManageTenants, false),
    route(
        "PATCH",
        "/v1/tenants/{tenant}",
        Permission::ManageTenantSettings,
        true,
    ),
    route("GET", "/v1/users", Permission::ManageUsers, false),
    route("POST", "/v1/users", Permission::ManageUsers, false),
    route("GET", "/v1/tokens", Permission::ManageTokens, false),
    route("POST", "/v1/tokens", Permission::ManageTokens, false),
    route(
        "DELETE",
        "/v1/tokens/{token}",
        Permission::ManageTokens,
        true,
    ),
    route("GET", "/v1/audit", Permission::ReadAudit, false),
    route("GET", "/v1/events", Permission::ReadEvents, false),
    route("GET", "/v1/agents", Permission::ReadAgents, false),
    route("POST", "/v1/agents", Permission::ManageAgents, false),
    route("GET", "/v1/tasks", Permission::ReadTasks, false),
    route("POST", "/v1/tasks", Permission::SubmitTasks, false),
    route("GET", "/v1/tasks/{task}", Permission::ReadTasks, true),
    route(
        "GET",
        "/v1/tasks/{task}/events",
        Permission::ReadTasks,
        true,
    ),
    route(
        "POST",
        "/v1/tasks/{task}/cancel",
        Permission::CancelTasks,
        true,
    ),
    route(
        "POST",
        "/v1/tasks/{task}/approve",
        Permission::ApproveTasks,
        true,
    ),
    route(
        "POST",
        "/v1/tasks/{task}/reject",
        Permission::ApproveTasks,
        true,
    ),
    route("GET", "/v1/agents/{agent}", Permission::ReadAgents, true),
    route(
        "PUT",
        "/v1/agents/{agent}/limits",
        Permission::ManageAgents,
        true,
    ),
    route(
        "POST",
        "/v1/agents/{agent}/costs",
        Permission::ReportCosts,
        true,
    ),
    route("PUT", "/v1/limits", Permission::ManageTenantSettings, false),
    route(
        "POST",
        "/v1/sandboxes/{sandbox}/stop",
        Permission::ManageSandboxes,
        true,
    ),
    route(
        "POST",
        "/v1/sandboxes/{sandbox}/start",
        Permission::ManageSandboxes,
        true,
    ),
    // Last: the authorization matrix runs routes in this order, and this
    // one ends the sandbox the others use.
    route(
        "DELETE",
        "/v1/sandboxes/{sandbox}",
        Permission::ManageSandboxes,
        true,
    ),
];

/// The handler of a route of the table.
fn handler(route: &Route) -> MethodRouter<AppState> {
    match (route.method, route.path) {
        ("GET", "/healthz") => get(api::health),
        ("GET", "/readyz") => get(api::ready),
        ("GET", "/v1/openapi.json") => get(crate::openapi::serve),
        ("GET", "/metrics") => get(telemetry::render),
        ("GET", "/console") => get(console::page),
        ("GET", "/console/assets/{file}") => get(console::asset),
        ("POST", "/v1/console/session") => post(console::sign_in),
        ("GET", "/v1/console/session") => get(console::current),
        ("DELETE", "/v1/console/session") => delete(console::sign_out),
        ("GET", "/v1/agent/connect") => get(agent_conn::connect),
        ("GET", "/v1/whoami") => get(admin::whoami),
        ("GET", "/v1/sandboxes") => get(api::list_sandboxes),
        ("POST", "/v1/sandboxes") => post(api::register_sandbox),
        ("GET", "/v1/sandboxes/{sandbox}") => get(api::get_sandbox),
        ("POST", "/v1/sandboxes/{sandbox}/token") => post(api::rotate_sandbox_token),
        ("POST", "/v1/sandboxes/{sandbox}/stop") => post(api::stop_sandbox),
        ("POST", "/v1/sandboxes/{sandbox}/start") => post(api::start_sandbox),
        ("DELETE", "/v1/sandboxes/{sandbox}") => delete(api::destroy_sandbox),
        ("GET", "/v1/sandboxes/{sandbox}/sessions") => get(api::list_sessions),
        ("POST", "/v1/sandboxes/{sandbox}/sessions") => post(api::open_session),
        ("GET", "/v1/sandboxes/{sandbox}/sessions/{session}") => get(api::get_session),
        ("DELETE", "/v1/sandboxes/{sandbox}/sessions/{session}") => delete(api::close_session),
        ("POST", "/v1/sandboxes/{sandbox}/sessions/{session}/signal") => post(api::signal_session),
        ("POST", "/v1/sandboxes/{sandbox}/sessions/{session}/resize") => post(api::resize_session),
        ("GET", "/v1/sandboxes/{sandbox}/sessions/{session}/output") => get(api::session_output),
        ("GET", "/v1/sandboxes/{sandbox}/sessions/{session}/stream") => get(stream::stream),
        ("GET", "/v1/sandboxes/{sandbox}/sessions/{session}/scrollback") => get(screen::scrollback),
        ("POST", "/v1/sandboxes/{sandbox}/tools/{tool}") => post(tools::call_tool),
        ("GET", "/v1/tenants") => get(admin::list_tenants),
        ("POST", "/v1/tenants") => post(admin::create_tenant),
        ("PATCH", "/v1/tenants/{tenant}") => patch(admin::update_tenant),
        ("GET", "/v1/users") => get(admin::list_users),
        ("POST", "/v1/users") => post(admin::create_user),
        ("GET", "/v1/tokens") => get(admin::list_tokens),
        ("POST", "/v1/tokens") => post(admin::create_token),
        ("DELETE", "/v1/tokens/{token}") => delete(admin::revoke_token),
        ("GET", "/v1/audit") => get(admin::list_audit),
        ("GET", "/v1/events") => get(events::stream),
        ("GET", "/v1/agents/{agent}") => get(tasks_api::agent_status),
        ("PUT", "/v1/agents/{agent}/limits") => put(tasks_api::set_agent_limits),
        ("POST", "/v1/agents/{agent}/costs") => post(tasks_api::report_cost),
        ("PUT", "/v1/limits") => put(tasks_api::set_tenant_limits),
        ("GET", "/v1/agents") => get(tasks_api::list_agents),
        ("POST", "/v1/agents") => post(tasks_api::create_agent),
        ("GET", "/v1/tasks") => get(tasks_api::list_tasks),
        ("POST", "/v1/tasks") => post(tasks_api::submit_task),
        ("GET", "/v1/tasks/{task}") => get(tasks_api::get_task),
        ("GET", "/v1/tasks/{task}/events") => get(tasks_api::task_events),
        ("POST", "/v1/tasks/{task}/cancel") => post(tasks_api::cancel_task),
        ("POST", "/v1/tasks/{task}/approve") => post(tasks_api::approve_task),
        ("POST", "/v1/tasks/{task}/reject") => post(tasks_api::reject_task),
        (method, path) => unreachable!("route {method} {path} has no handler"),
    }
}

/// The router: every route of [`ROUTES`], each behind its permission check.
pub fn router(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
    paths.dedup();
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        if !seen.insert(path) {
            continue;
        }
        let mut methods: Option<MethodRouter<AppState>> = None;
        for route in ROUTES.iter().filter(|r| r.path == path) {
            let guarded = handler(route).route_layer(from_fn_with_state(
                state.clone(),
                move |State(state): State<AppState>, req: Request, next: Next| {
                    observe(route, async move {
                        // Before authentication: a body too large costs no lookup.
                        if let Err(refused) = admission::check_body(&state.admission, &req) {
                            return refused.into_response();
                        }
                        authorize(state, route.permission, req, next).await
                    })
                },
            ));
            methods = Some(match methods {
                Some(m) => m.merge(guarded),
                None => guarded,
            });
        }
        if let Some(methods) = methods {
            router = router.route(path, methods);
        }
    }
    router
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/ARCHITECTURE.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                paddock_protocol::ErrorCode::BadRequest,
                "method not allowed on this endpoint; see docs/ARCHITECTURE.md",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            state.admission.limits.max_body_bytes,
        ))
        .layer(from_fn_with_state(
            state.clone(),
            admission::client_ip_layer,
        ))
        .with_state(state)
}

/// Counts a request of `route` by status and times it, refusals included.
async fn observe(
    route: &'static Route,
    run: impl std::future::Future<Output = Response>,
) -> Response {
    let started = std::time::Instant::now();
    let response = run.await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        telemetry::HTTP_REQUESTS,
        "route" => route.path,
        "method" => route.method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!(
        telemetry::HTTP_REQUEST_DURATION,
        "route" => route.path,
        "method" => route.method
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Authenticates the caller, checks the route's permission, resolves the
/// tenant the request acts on, and hands the [`Principal`] to the handler.
async fn authorize(
    state: AppState,
    permission: Permission,
    mut req: Request,
    next: Next,
) -> Response {
    if !permission.needs_api_token() {
        return next.run(req).await;
    }
    let principal = match crate::auth::authenticate(&state, req.method(), req.headers()).await {
        Ok(principal) => principal,
        Err(err) => return err.into_response(),
    };
    // Counted before the role check: a token hammering routes it may not
    // use is still hammering.
    if let Err(throttled) = state.rate_limit.check(&principal.token_id) {
        return throttled.into_response();
    }
    if !permission.allows(principal.role) {
        return ApiError::new(
            paddock_protocol::ErrorCode::Forbidden,
            format!(
                "the `{}` role lacks the `{}` permission; ask an admin for a token that has it",
                principal.role.as_str(),
                permission.as_str()
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}
