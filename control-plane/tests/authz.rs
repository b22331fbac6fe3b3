//! Authorization, checked route by route from the one route table the
//! router is built from (`control_plane::routes::ROUTES`), on both storage
//! backends:
//! - cross-tenant: a token of tenant A aimed at tenant B's resources gets
//!   404 on every route that names a resource, and lists show none of B's;
//! - a missing or wrong token gets 401 on every route that needs one;
//! - the role matrix: each role is refused (403) exactly where the table's
//!   permission does not allow it.
//!
//! A route added to the table without a way to fill its path here fails
//! these tests.

use std::collections::HashMap;
use std::time::Duration;

use control_plane::config::Config;
use control_plane::routes::{Permission, ROUTES};
use control_plane::App;
use paddock_protocol::admin::{Role, TokenCreated, TENANT_HEADER};
use paddock_protocol::api::{SandboxRegistered, SessionInfo};
use paddock_protocol::{ClientToControl, Hello, PROTOCOL_VERSION};
use paddock_tests::{Agentd, PgCluster};
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

const OWNER_TOKEN: &str = "pdk_owner_token_for_authz_tests_0123456789";

struct Server {
    url: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
    _pg: Option<paddock_tests::SharedPg>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(postgres: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (database_url, pg) = if postgres {
        let pg = tokio::task::spawn_blocking(PgCluster::shared)
            .await
            .unwrap()
            .unwrap();
        let (pg, url) = tokio::task::spawn_blocking(move || {
            let url = pg.fresh_database();
            (pg, url)
        })
        .await
        .unwrap();
        (Some(url.unwrap()), Some(pg))
    } else {
        (None, None)
    };
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        database_url,
        heartbeat_ms: 1000,
        // These tests call the API hard; the rate limit has its own test.
        api_rate_per_sec: 100_000,
        api_burst: 100_000,
        bootstrap_token: Some(OWNER_TOKEN.to_owned()),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let app = App::open(config, shutdown.clone()).await.unwrap();
    tokio::spawn(app.serve(listener));
    Server {
        url,
        shutdown,
        _dir: dir,
        _pg: pg,
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        tenant: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, String) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(tenant) = tenant {
            req = req.header(TENANT_HEADER, tenant);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }

    async fn create<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        tenant: Option<&str>,
        body: serde_json::Value,
    ) -> T {
        let (status, text) = self
            .call(Method::POST, path, Some(token), tenant, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The status of a WebSocket upgrade of the stream route.
    async fn upgrade(&self, path: &str, token: Option<&str>) -> StatusCode {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let ws_url = format!("{}{path}", self.url.replacen("http", "ws", 1));
        let mut request = ws_url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((mut ws, resp)) => {
                use futures_util::SinkExt;
                let hello = ClientToControl::Hello {
                    hello: Hello {
                        protocol_version: PROTOCOL_VERSION,
                        peer: "authz-test".into(),
                        capabilities: vec![],
                    },
                };
                let _ = ws.send(hello.encode().into()).await;
                let _ = ws.close(None).await;
                resp.status()
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status(),
            Err(other) => panic!("upgrade of {path} failed oddly: {other}"),
        }
    }
}

/// One tenant's resources, as path parameters.
#[derive(Debug, Clone)]
struct Resources {
    tenant: String,
    sandbox: String,
    session: String,
    token: String,
    task: String,
    agent: String,
    _agent: std::sync::Arc<Agentd>,
    _workdir: std::sync::Arc<tempfile::TempDir>,
}

impl Resources {
    fn fill(&self, path: &str) -> String {
        let filled = path
            .replace("{sandbox}", &self.sandbox)
            .replace("{session}", &self.session)
            .replace("{tenant}", &self.tenant)
            .replace("{token}", &self.token)
            .replace("{tool}", "file_stat")
            .replace("{task}", &self.task)
            .replace("{agent}", &self.agent)
            .replace("{file}", "app.js");
        assert!(
            !filled.contains('{'),
            "no filler for a parameter of {path}: add one here"
        );
        filled
    }
}

/// A sandbox with a connected agentd and a running session, and a spare
/// token, in `tenant`, made with `admin` (an admin token of that tenant).
async fn populate(c: &Client, tenant: &str, admin: &str, name: &str) -> Resources {
    let sandbox: SandboxRegistered = c
        .create(
            "/v1/sandboxes",
            admin,
            None,
            serde_json::json!({ "name": name }),
        )
        .await;
    let workdir = tempfile::tempdir().unwrap();
    let agent = Agentd::start(&c.url, &sandbox.token, workdir.path()).unwrap();
    let id = sandbox.sandbox.id.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let session: SessionInfo = loop {
        let (status, text) = c
            .call(
                Method::POST,
                &format!("/v1/sandboxes/{id}/sessions"),
                Some(admin),
                None,
                Some(serde_json::json!({ "command": "sleep", "args": ["600"] })),
            )
            .await;
        if status == StatusCode::CREATED {
            break serde_json::from_str(&text).unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agentd never connected: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let spare: TokenCreated = c
        .create(
            "/v1/tokens",
            admin,
            None,
            serde_json::json!({ "name": format!("spare-{name}"), "role": "viewer" }),
        )
        .await;
    let bot: serde_json::Value = c
        .create(
            "/v1/agents",
            admin,
            None,
            serde_json::json!({ "name": format!("bot-{name}") }),
        )
        .await;
    let task: serde_json::Value = c
        .create(
            "/v1/tasks",
            admin,
            None,
            serde_json::json!({
                "agent": bot["name"],
                "labels": { "never": "matches" },
                "steps": [{ "kind": "run", "command": "true" }]
            }),
        )
        .await;
    Resources {
        task: task["id"].as_str().unwrap().to_owned(),
        agent: bot["name"].as_str().unwrap().to_owned(),
        tenant: tenant.to_owned(),
        sandbox: id,
        session: session.id.to_string(),
        token: spare.info.id,
        _agent: std::sync::Arc::new(agent),
        _workdir: std::sync::Arc::new(workdir),
    }
}

/// A body that passes each route's parsing, so only authorization decides.
fn body_for(method: &str, path: &str) -> Option<serde_json::Value> {
    let body = match (method, path) {
        ("POST", "/v1/sandboxes") => serde_json::json!({ "name": "made-by-matrix" }),
        ("POST", "/v1/console/session") => serde_json::json!({ "token": OWNER_TOKEN }),
        ("POST", "/v1/sandboxes/{sandbox}/sessions") => serde_json::json!({ "command": "true" }),
        ("POST", p) if p.ends_with("/signal") => serde_json::json!({ "signal": "HUP" }),
        ("POST", p) if p.ends_with("/resize") => {
            serde_json::json!({ "size": { "cols": 90, "rows": 20 } })
        }
        ("POST", p) if p.contains("/tools/") => serde_json::json!({ "path": "." }),
        ("POST", "/v1/tenants") => serde_json::json!({ "name": "made-by-matrix" }),
        ("PATCH", _) => serde_json::json!({ "retention_days": 30 }),
        ("POST", "/v1/users") => serde_json::json!({ "name": "made-by-matrix" }),
        ("POST", "/v1/tokens") => serde_json::json!({ "name": "made-by-matrix", "role": "viewer" }),
        ("POST", "/v1/agents") => serde_json::json!({ "name": "made-by-matrix" }),
        ("PUT", _) => serde_json::json!({}),
        ("POST", p) if p.ends_with("/costs") => {
            serde_json::json!({ "kind": "api_call", "micros": 1 })
        }
        ("POST", "/v1/tasks") => {
            serde_json::json!({ "agent": "bot-a-box", "labels": { "never": "matches" }, "steps": [{ "kind": "run", "command": "true" }] })
        }
        _ => return None,
    };
    Some(body)
}

async fn request(
    c: &Client,
    route: &control_plane::routes::Route,
    path: &str,
    token: Option<&str>,
) -> StatusCode {
    if path.ends_with("/stream") {
        return c.upgrade(&format!("{path}?mode=watch"), token).await;
    }
    if path == "/v1/events" {
        return c.upgrade(path, token).await;
    }
    let method = Method::from_bytes(route.method.as_bytes()).unwrap();
    c.call(
        method,
        path,
        token,
        None,
        body_for(route.method, route.path),
    )
    .await
    .0
}

async fn matrix(postgres: bool) {
    let server = start(postgres).await;
    let c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        url: server.url.clone(),
    };
    // Tenant A is the default tenant; B is made by the owner.
    let (status, text) = c
        .call(
            Method::POST,
            "/v1/tenants",
            Some(OWNER_TOKEN),
            None,
            Some(serde_json::json!({ "name": "tenant-b" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let mut tokens: HashMap<Role, String> = HashMap::new();
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Agent) {
        let made: TokenCreated = c
            .create(
                "/v1/tokens",
                OWNER_TOKEN,
                None,
                serde_json::json!({ "name": format!("a-{}", role.as_str()), "role": role }),
            )
            .await;
        tokens.insert(role, made.token);
    }
    let admin_b: TokenCreated = c
        .create(
            "/v1/tokens",
            OWNER_TOKEN,
            Some("tenant-b"),
            serde_json::json!({ "name": "b-admin", "role": "admin" }),
        )
        .await;
    let admin_a = tokens[&Role::Admin].clone();
    let a = populate(&c, "default", &admin_a, "a-box").await;
    let b = populate(&c, "tenant-b", &admin_b.token, "b-box").await;
    // The agent token acts for A's agent, as agent tokens do.
    let agent_token: TokenCreated = c
        .create(
            "/v1/tokens",
            OWNER_TOKEN,
            None,
            serde_json::json!({ "name": "a-agent", "role": "agent", "agent": "bot-a-box" }),
        )
        .await;
    tokens.insert(Role::Agent, agent_token.token);

    // Every route that needs a token refuses none and a wrong one with 401.
    for route in ROUTES {
        let path = a.fill(route.path);
        match route.permission {
            Permission::Public => {
                let status = request(&c, route, &path, None).await;
                assert!(status.is_success(), "{path}: {status}");
            }
            _ => {
                for token in [None, Some("pdk_wrong")] {
                    let status = request(&c, route, &path, token).await;
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{} {path} with {token:?}",
                        route.method
                    );
                }
            }
        }
    }

    // Tenant A's admin aimed at tenant B's resources: 404, never a hint.
    for route in ROUTES.iter().filter(|r| r.tenant_resource) {
        let path = b.fill(route.path);
        let status = request(&c, route, &path, Some(&admin_a)).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{} {path} from tenant A",
            route.method
        );
    }
    // ... and an agent of A dialling with B's sandbox id in mind gets nothing either:
    // lists show none of B's resources.
    for path in ["/v1/sandboxes", "/v1/tokens", "/v1/users", "/v1/audit"] {
        let (status, text) = c.call(Method::GET, path, Some(&admin_a), None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
        for secret in [b.sandbox.as_str(), b.token.as_str(), "tenant-b", "b-box"] {
            assert!(
                !text.contains(secret),
                "{path} shows tenant B's {secret}: {text}"
            );
        }
    }
    // A non-owner naming another tenant in the header gets 404 for it.
    let (status, _) = c
        .call(
            Method::GET,
            "/v1/sandboxes",
            Some(&admin_a),
            Some("tenant-b"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The role matrix, on tenant A's own resources. Destructive routes run
    // last so the session and token are there for the others.
    let mut order: Vec<_> = ROUTES
        .iter()
        .filter(|r| r.permission.needs_api_token())
        .collect();
    order.sort_by_key(|r| r.method == "DELETE");
    for route in order {
        let path = a.fill(route.path);
        for role in Role::ALL {
            // Agents call tools only where their own tasks run: a handler
            // check on top of the permission (tested in tests/tools.rs).
            if role == Role::Agent && route.permission == Permission::CallTools {
                continue;
            }
            let status = request(&c, route, &path, Some(&tokens[&role])).await;
            if route.permission.allows(role) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{} {path} should be allowed for {role:?}, got {status}",
                    route.method
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} {path} for {role:?}",
                    route.method
                );
            }
        }
    }
    // Attaching needs more than watching: operators watch, never type.
    let stream = a.fill("/v1/sandboxes/{sandbox}/sessions/{session}/stream");
    assert_eq!(
        c.upgrade(
            &format!("{stream}?mode=attach"),
            Some(&tokens[&Role::Operator])
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.upgrade(
            &format!("{stream}?mode=attach"),
            Some(&tokens[&Role::Developer])
        )
        .await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    // An expired token is refused like a wrong one.
    let short: TokenCreated = c
        .create(
            "/v1/tokens",
            &admin_a,
            None,
            serde_json::json!({ "name": "short", "role": "viewer", "expires_in_secs": 1 }),
        )
        .await;
    let (status, _) = c
        .call(Method::GET, "/v1/whoami", Some(&short.token), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = c
            .call(Method::GET, "/v1/whoami", Some(&short.token), None, None)
            .await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Revoked tokens stop working at once.
    let victim: TokenCreated = c
        .create(
            "/v1/tokens",
            &admin_a,
            None,
            serde_json::json!({ "name": "victim", "role": "developer" }),
        )
        .await;
    let (status, _) = c
        .call(Method::GET, "/v1/whoami", Some(&victim.token), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = c
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}", victim.info.id),
            Some(&admin_a),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = c
        .call(Method::GET, "/v1/whoami", Some(&victim.token), None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_on_sqlite() {
    tokio::time::timeout(Duration::from_secs(120), matrix(false))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_on_postgres() {
    tokio::time::timeout(Duration::from_secs(120), matrix(true))
        .await
        .expect("timed out");
}

/// The roles as the product promises them, written out independently of
/// `Permission::allows`, so a change of the table is a visible change here.
#[test]
fn the_permission_table_matches_the_roles_as_documented() {
    use Permission::*;
    let expected = |role: Role, permission: Permission| -> bool {
        let allowed: &[Permission] = match role {
            // owner: everything, across tenants.
            Role::Owner => return true,
            // admin: manage its tenant — users, tokens, agents, sandboxes,
            // settings — and use it; not other tenants.
            Role::Admin => return permission != ManageTenants,
            // operator: list and watch every sandbox and session; read logs
            // and the audit log; approve, reject and cancel tasks; no input.
            Role::Operator => &[
                ReadSandboxes,
                Watch,
                ReadLogs,
                ReadAudit,
                ReadAgents,
                ReadTasks,
                ReadEvents,
                ApproveTasks,
                CancelTasks,
            ],
            // developer: watch and attach, run commands, call tools, submit,
            // approve and cancel tasks.
            Role::Developer => &[
                ReadSandboxes,
                OpenSessions,
                Watch,
                Attach,
                ControlSessions,
                ReadLogs,
                CallTools,
                ReadAgents,
                ReadTasks,
                ReadEvents,
                SubmitTasks,
                ApproveTasks,
                CancelTasks,
            ],
            // agent: tool calls and its own tasks (checked per agent by the handlers).
            Role::Agent => &[
                CallTools,
                SubmitTasks,
                ReadTasks,
                CancelTasks,
                ReadEvents,
                ReportCosts,
            ],
            // viewer: read-only lists and logs.
            Role::Viewer => &[ReadSandboxes, ReadLogs, ReadAgents, ReadTasks, ReadEvents],
        };
        matches!(permission, Public | SandboxToken | Authenticated) || allowed.contains(&permission)
    };
    let all = [
        Public,
        SandboxToken,
        Authenticated,
        ReadSandboxes,
        ManageSandboxes,
        OpenSessions,
        Watch,
        Attach,
        ControlSessions,
        ReadLogs,
        ManageUsers,
        ManageTokens,
        ManageTenantSettings,
        ManageTenants,
        ReadAudit,
        CallTools,
        SubmitTasks,
        ReadTasks,
        CancelTasks,
        ApproveTasks,
        ManageAgents,
        ReadAgents,
        ReadEvents,
        ReportCosts,
    ];
    for role in Role::ALL {
        for permission in all {
            assert_eq!(
                permission.allows(role),
                expected(role, permission),
                "{role:?} / {permission:?}"
            );
        }
    }
    // Every route's permission is one of the above.
    assert!(ROUTES.iter().all(|r| all.contains(&r.permission)));
}
