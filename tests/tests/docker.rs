//! The docker provider end to end, against this machine's real Docker
//! engine: the sandbox image built here from images/sandbox/Dockerfile (no
//! registry); a control plane started with `PADDOCK_PROVIDERS=local,docker`
//! and its `PADDOCK_DOCKER_*` settings; sandboxes of two tenants created as
//! a user does (`paddock sandboxes create --provider docker --label k=v
//! --size small`); commands run in them through `paddock exec`; the sandbox
//! token kept out of sessions (which run as another uid than agentd);
//! per-tenant network isolation; `paddock sandboxes stop/start` keeping the
//! workspace; a container killed from outside reported disconnected, then
//! marked failed (lost) by the status sync, with its task retried elsewhere; `paddock
//! sandboxes destroy`; reconciling at start-up (a container of this
//! deployment unknown to the database destroyed, another deployment's left
//! alone); and nothing left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};
use bollard::Docker;
use control_plane::providers::docker::{DockerConfig, DockerProvider};
use control_plane::providers::{AgentEnv, ObservedState, Provider, Resources, SandboxSpec};
use paddock_tests::docker::{docker_cli, sandbox_image, OwnerCleanup};
use paddock_tests::proto::admin::TENANT_HEADER;
use paddock_tests::proto::api::{SandboxInfo, SandboxStatus};
use paddock_tests::proto::SandboxId;
use paddock_tests::{random_token, tail, wait_until, within_for, CliOutput, ControlPlane};
use reqwest::Method;
use serde_json::{json, Value};

/// Container start plus agentd's first connection, on a loaded machine.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// The port a container listens on for the isolation check.
const PROBE_PORT: u16 = 8080;
/// Names of containers, volumes and networks start with it
/// (`PADDOCK_DOCKER_NAME_PREFIX`, made unique per run).
const PREFIX: &str = "paddock-test";

/// Removes, when dropped, every container, volume and network whose name
/// starts with a run's prefix: what the control plane made before the test
/// learnt its owner id (and could hand it to [`OwnerCleanup`]).
struct PrefixCleanup(String);

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        let filter = format!("name={}-", self.0);
        for (list, remove) in [
            (
                vec!["ps", "-aq", "--filter", &filter],
                vec!["rm", "-f", "-v"],
            ),
            (
                vec!["volume", "ls", "-q", "--filter", &filter],
                vec!["volume", "rm", "-f"],
            ),
            (
                vec!["network", "ls", "-q", "--filter", &filter],
                vec!["network", "rm"],
            ),
        ] {
            let found = docker_cli(&list).unwrap_or_default();
            if found.trim().is_empty() {
                continue;
            }
            let mut args = remove;
            args.extend(found.split_whitespace());
            if let Err(err) = docker_cli(&args) {
                eprintln!("cleanup of {}-*: {err:#}", self.0);
            }
        }
    }
}

/// One sandbox created through the CLI, in a tenant (`None`: the owner's own).
struct Created {
    id: String,
    name: String,
    tenant: Option<String>,
    /// Its container, found by its `paddock.sandbox` label.
    container: String,
}

impl Created {
    /// `paddock [--tenant T] ARGS…`
    async fn paddock(&self, cp: &ControlPlane, args: &[&str]) -> Result<CliOutput> {
        paddock_in(cp, self.tenant.as_deref(), args).await
    }

    /// The sandbox as the API shows it to its tenant.
    async fn info(&self, cp: &ControlPlane) -> Result<SandboxInfo> {
        let mut req = reqwest::Client::new()
            .get(format!("{}/v1/sandboxes/{}", cp.url(), self.id))
            .bearer_auth(cp.token());
        if let Some(tenant) = &self.tenant {
            req = req.header(TENANT_HEADER, tenant);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(
            status.is_success(),
            "GET sandbox {}: {status} {text}",
            self.id
        );
        Ok(serde_json::from_str(&text)?)
    }
}

async fn paddock_in(cp: &ControlPlane, tenant: Option<&str>, args: &[&str]) -> Result<CliOutput> {
    let mut all: Vec<&str> = Vec::new();
    if let Some(tenant) = tenant {
        all.extend(["--tenant", tenant]);
    }
    all.extend(args);
    cp.paddock(&all).await
}

/// `paddock [--tenant T] sandboxes create NAME --provider docker --label
/// purpose=docker-test --size small --json`, which returns once the
/// sandbox is connected.
async fn create_sandbox(
    cp: &ControlPlane,
    docker: &Docker,
    name: &str,
    tenant: Option<&str>,
) -> Result<Created> {
    let args = [
        "sandboxes",
        "create",
        name,
        "--provider",
        "docker",
        "--label",
        "purpose=docker-test",
        "--size",
        "small",
        "--json",
    ];
    let out = paddock_in(cp, tenant, &args).await?;
    ensure!(
        out.code() == Some(0),
        "{}\ncontrol plane logs:\n{}",
        out.describe(),
        tail(&cp.logs(), 4000)
    );
    let info: SandboxInfo = serde_json::from_str(&out.stdout)
        .with_context(|| format!("`sandboxes create --json` printed {}", out.stdout))?;
    ensure!(info.status == SandboxStatus::Connected, "{info:?}");
    ensure!(info.provider.as_deref() == Some("docker"), "{info:?}");
    ensure!(info.size.as_deref() == Some("small"), "{info:?}");
    ensure!(
        info.labels.get("purpose").map(String::as_str) == Some("docker-test"),
        "{info:?}"
    );
    let id = info.id.to_string();
    Ok(Created {
        container: container_of(docker, &id).await?,
        id,
        name: name.to_owned(),
        tenant: tenant.map(str::to_owned),
    })
}

/// The one container labelled with sandbox `id`.
async fn container_of(docker: &Docker, id: &str) -> Result<String> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("paddock.sandbox={id}")])]);
    let found = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    ensure!(found.len() == 1, "containers of {id}: {found:?}");
    found[0].id.clone().context("a container without an id")
}

async fn wait_status(cp: &ControlPlane, sandbox: &Created, want: SandboxStatus) -> Result<()> {
    wait_until(
        &format!("sandbox {} to be {want:?}", sandbox.name),
        CONNECT_LIMIT,
        || async move { Ok((sandbox.info(cp).await?.status == want).then_some(())) },
    )
    .await
    .with_context(|| format!("control plane logs:\n{}", tail(&cp.logs(), 4000)))
}

/// `paddock [--tenant T] sandboxes OP SANDBOX`, which waits until it got there.
async fn lifecycle(cp: &ControlPlane, sandbox: &Created, op: &str) -> Result<()> {
    let out = sandbox.paddock(cp, &["sandboxes", op, &sandbox.id]).await?;
    ensure!(out.code() == Some(0), "{}", out.describe());
    Ok(())
}

/// Runs `script` with `sh -c` in the sandbox through `paddock exec`.
async fn exec(cp: &ControlPlane, sandbox: &Created, script: &str) -> Result<(Option<i32>, String)> {
    let out = sandbox
        .paddock(cp, &["exec", &sandbox.id, "--", "sh", "-c", script])
        .await?;
    Ok((out.code(), out.stdout.replace('\r', "")))
}

async fn exec_ok(cp: &ControlPlane, sandbox: &Created, script: &str) -> Result<String> {
    let (code, stdout) = exec(cp, sandbox, script).await?;
    ensure!(
        code == Some(0),
        "`{script}` in {} ended with {code:?}: {stdout}",
        sandbox.name
    );
    Ok(stdout)
}

/// A Python one-liner connecting to `ip:PROBE_PORT` (exit 0 on success).
fn connect_script(ip: &str) -> String {
    format!(
        "python3 -c 'import socket; socket.create_connection((\"{ip}\", {PROBE_PORT}), timeout=2); print(\"connected\")'"
    )
}

/// Starts a listener in the background, detached from the session (which
/// hangs up its process group when the shell exits), and returns once it
/// accepts: polled from inside, so it has left the group by then.
fn listen_script() -> String {
    format!(
        "setsid python3 -c 'import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind((\"0.0.0.0\", {PROBE_PORT}))\ns.listen()\nwhile True: s.accept()[0].close()' </dev/null >/dev/null 2>&1 &\n\
         tries=0; until {probe} >/dev/null 2>&1; do \
         tries=$((tries + 1)); [ $tries -lt 300 ] || exit 1; sleep 0.1; done",
        probe = connect_script("127.0.0.1")
    )
}

/// The container's address on its tenant's network.
async fn container_ip(docker: &Docker, container: &str) -> Result<String> {
    let container = docker.inspect_container(container, None).await?;
    container
        .network_settings
        .and_then(|settings| settings.networks)
        .unwrap_or_default()
        .into_values()
        .find_map(|endpoint| endpoint.ip_address.filter(|ip| !ip.is_empty()))
        .context("the container has no address")
}

/// Waits until a listener at `ip` can be reached from `from`.
async fn wait_reachable(cp: &ControlPlane, from: &Created, ip: &str) -> Result<()> {
    let script = connect_script(ip);
    wait_until(
        &format!("{ip}:{PROBE_PORT} to accept from {}", from.name),
        CONNECT_LIMIT,
        || {
            let script = script.clone();
            async move {
                let (code, out) = exec(cp, from, &script).await?;
                Ok((code == Some(0) && out.contains("connected")).then_some(()))
            }
        },
    )
    .await
}

/// Everything the engine still holds with `owner`'s label.
async fn leftovers(docker: &Docker, owner: &str) -> Result<Vec<String>> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("paddock.owner={owner}")])]);
    let mut left = Vec::new();
    for container in docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await?
    {
        left.push(format!("container {:?}", container.names));
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters.clone()),
        }))
        .await?;
    for volume in volumes.volumes.unwrap_or_default() {
        left.push(format!("volume {}", volume.name));
    }
    for network in docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await?
    {
        left.push(format!("network {:?}", network.name));
    }
    Ok(left)
}

async fn post(cp: &ControlPlane, path: &str, body: Value) -> Result<Value> {
    let (status, text) = cp.api().raw(Method::POST, path, Some(body)).await?;
    ensure!(status.is_success(), "POST {path}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

async fn get(cp: &ControlPlane, path: &str) -> Result<Value> {
    let (status, text) = cp.api().raw(Method::GET, path, None).await?;
    ensure!(status.is_success(), "GET {path}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

/// A free port on `ip` (bound, then released for the control plane), so
/// the agent URL can be configured before the control plane starts and
/// stays the same across its restart.
fn free_port(ip: std::net::IpAddr) -> Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A container that a provider with `owner` creates directly, as if a
/// control plane of that deployment had and then forgot it.
fn stray_spec(id: &str, cp: &ControlPlane) -> SandboxSpec {
    SandboxSpec {
        sandbox_id: SandboxId(id.to_owned()),
        tenant_id: "default".to_owned(),
        name: id.to_owned(),
        labels: BTreeMap::new(),
        size: "small".to_owned(),
        resources: Resources {
            cpu_millis: 250,
            memory_mib: 64,
            pids: 64,
        },
        image: None,
        agent: AgentEnv {
            control_plane_url: cp.url().to_owned(),
            token: "pdk_not_a_sandbox_token".to_owned(),
            ca_pem: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_run_as_containers_isolated_per_tenant_and_leave_nothing_behind() {
    // Built (or found in the cache) before the clock starts: on a fresh
    // machine this assembles a root filesystem from Debian's packages.
    let image = tokio::task::spawn_blocking(sandbox_image)
        .await
        .expect("the image build panicked")
        .unwrap_or_else(|err| panic!("could not build the sandbox image: {err:#}"));
    // The test's own resources: the bridge the control plane listens on
    // and another deployment's container.
    let test_owner = format!("test-{}", &random_token()[..12]);
    let _cleanup = OwnerCleanup::new(&[&test_owner]);
    let prefix = format!("{PREFIX}-{}", &random_token()[..8]);
    let _by_name = PrefixCleanup(prefix.clone());
    within_for(Duration::from_secs(240), async {
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        let config = DockerConfig {
            image: image.clone(),
            name_prefix: prefix.clone(),
            stop_grace_secs: 5,
            ..DockerConfig::default()
        };
        // The control plane listens on a bridge's gateway: a host address
        // every container reaches through the host, from any tenant's
        // network. The bridge is the test's, labelled with its owner.
        let test_side = DockerProvider::with_client(docker.clone(), config.clone(), &test_owner)?;
        let bridge = test_side.ensure_network("control-plane").await?;
        let gateway = bridge.gateway.context("the test's bridge has no gateway")?;
        let listen = format!("{gateway}:{}", free_port(gateway)?);
        let agent_url = format!("ws://{listen}");
        let mut cp = ControlPlane::start_listening(
            &listen,
            &[
                ("PADDOCK_ALLOW_PLAIN_HTTP", "true"),
                ("PADDOCK_PROVIDERS", "local,docker"),
                ("PADDOCK_DOCKER_IMAGE", &image),
                ("PADDOCK_DOCKER_NAME_PREFIX", &prefix),
                ("PADDOCK_DOCKER_AGENT_URL", &agent_url),
                ("PADDOCK_DOCKER_STOP_GRACE_SECS", "5"),
            ],
        )
        .await?;

        // A second tenant; the owner works in it with --tenant.
        let out = cp.paddock(&["tenants", "create", "docker-b", "--json"]).await?;
        ensure!(out.code() == Some(0), "{}", out.describe());
        let tenant_b: Value = serde_json::from_str(&out.stdout)?;
        let tenant_b = tenant_b["id"].as_str().context("no tenant id")?.to_owned();

        // Three sandboxes at once, as a user creates them.
        let (a1, a2, b1) = tokio::try_join!(
            create_sandbox(&cp, &docker, "a1", None),
            create_sandbox(&cp, &docker, "a2", None),
            create_sandbox(&cp, &docker, "b1", Some(&tenant_b)),
        )?;
        let all = [&a1, &a2, &b1];

        // Limits, labels, the agent URL and the read-only root, as the
        // engine applied them; the owner is the control plane's.
        let inspect = docker.inspect_container(&a1.container, None).await?;
        let owner = inspect
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get("paddock.owner").cloned())
            .context("no owner label")?;
        let _cp_cleanup = OwnerCleanup::new(&[&owner]);
        for sandbox in all {
            let inspect = docker.inspect_container(&sandbox.container, None).await?;
            let name = inspect.name.clone().unwrap_or_default();
            ensure!(name.starts_with(&format!("/{prefix}-")), "{name}");
            let host = inspect.host_config.context("no host config")?;
            ensure!(host.readonly_rootfs == Some(true), "{host:?}");
            ensure!(host.nano_cpus == Some(500_000_000), "{host:?}");
            ensure!(host.memory == Some(512 << 20), "{host:?}");
            ensure!(host.pids_limit == Some(256), "{host:?}");
            let config = inspect.config.context("no config")?;
            let env = config.env.unwrap_or_default();
            let url_var = format!("PADDOCK_AGENTD_CONTROL_PLANE={agent_url}");
            ensure!(env.contains(&url_var), "{env:?}");
            let labels = config.labels.unwrap_or_default();
            let tenant = sandbox.tenant.as_deref().unwrap_or("default");
            ensure!(labels.get("paddock.sandbox") == Some(&sandbox.id), "{labels:?}");
            ensure!(labels.get("paddock.tenant").map(String::as_str) == Some(tenant));
            ensure!(labels.get("paddock.owner") == Some(&owner), "{labels:?}");
            ensure!(labels.get("purpose").map(String::as_str) == Some("docker-test"));
            let refused = docker_exec_fails(&sandbox.container, "touch /etc/paddock-probe")?;
            ensure!(refused.contains("Read-only"), "root was writable: {refused}");
        }

        // A command in each through `paddock exec`: as uid 1000 while agentd
        // is root, without the token, in a writable workspace.
        for sandbox in all {
            let token = sandbox_token(&docker, &sandbox.container).await?;
            let out = exec_ok(
                &cp,
                sandbox,
                "echo uid=$(id -u); echo agentd=$(ps -o uid= -C agentd | tr -d ' '); \
                 echo home=$HOME; env; echo kept > /workspace/note; cat /workspace/note",
            )
            .await?;
            ensure!(out.contains("uid=1000"), "{out}");
            ensure!(out.contains("agentd=0"), "{out}");
            ensure!(out.contains("home=/home/agent"), "{out}");
            ensure!(out.contains("kept"), "{out}");
            ensure!(!out.contains(&token), "the token leaked into a session: {out}");
            ensure!(!out.contains("PADDOCK_AGENTD_"), "agentd's settings leaked: {out}");
            // Nor can the session read agentd's environment from /proc.
            let (code, out) = exec(&cp, sandbox, "cat /proc/$(pgrep -x agentd | head -1)/environ")
                .await?;
            ensure!(code != Some(0), "a session read agentd's environment: {out}");
            ensure!(!out.contains(&token), "the token leaked through /proc: {out}");
        }

        // What agentd's tools write, the session user can change.
        let (status, text) = cp
            .api()
            .raw(
                Method::POST,
                &format!("/v1/sandboxes/{}/tools/file_write", a1.id),
                Some(json!({ "path": "src/by-tool.txt", "content": "from a tool\n" })),
            )
            .await?;
        ensure!(status.is_success(), "file_write: {status} {text}");
        let out = exec_ok(
            &cp,
            &a1,
            "echo from a session >> src/by-tool.txt && touch src/new && cat src/by-tool.txt",
        )
        .await?;
        ensure!(out.contains("from a tool") && out.contains("from a session"), "{out}");

        // The language server (pylsp, in the image) runs as the session
        // user too.
        let (status, text) = cp
            .api()
            .raw(
                Method::POST,
                &format!("/v1/sandboxes/{}/tools/lsp_open", a1.id),
                Some(json!({
                    "workspace": ".", "language": "python",
                    "path": "src/m.py", "text": "import os\n"
                })),
            )
            .await?;
        ensure!(status.is_success(), "lsp_open: {status} {text}");
        let out = exec_ok(&cp, &a1, "ps -eo user:16,args | grep '[p]ylsp'").await?;
        ensure!(out.trim_start().starts_with("agent "), "pylsp runs as: {out}");

        // Per-tenant isolation: a2 reaches a listener in a1 (same tenant),
        // but not one in b1 (the other tenant) that b1 itself reaches.
        for sandbox in [&a1, &b1] {
            exec_ok(&cp, sandbox, &listen_script()).await?;
        }
        let ip_a1 = container_ip(&docker, &a1.container).await?;
        let ip_b1 = container_ip(&docker, &b1.container).await?;
        wait_reachable(&cp, &a2, &ip_a1).await?;
        let (code, out) = exec(&cp, &a2, &connect_script(&ip_b1)).await?;
        ensure!(
            code != Some(0) && !out.contains("connected"),
            "tenant A reached tenant B's container at {ip_b1}: {out}"
        );

        // `paddock sandboxes stop/start` keep the workspace.
        lifecycle(&cp, &a2, "stop").await?;
        ensure!(a2.info(&cp).await?.status == SandboxStatus::Stopped);
        let a2_side = DockerProvider::with_client(docker.clone(), config.clone(), &owner)?;
        ensure!(a2_side.status(&a2.container).await? == ObservedState::Stopped);
        lifecycle(&cp, &a2, "start").await?;
        ensure!(a2.info(&cp).await?.status == SandboxStatus::Connected);
        let out = exec_ok(&cp, &a2, "cat /workspace/note").await?;
        ensure!(out.contains("kept"), "the workspace was lost across stop/start: {out}");

        // A container killed from outside mid-task: reported disconnected,
        // then marked failed by the status sync (the engine reports exit
        // code 137, not a stop anyone asked for), and the task
        // retried on the other sandbox of the tenant.
        post(&cp, "/v1/agents", json!({ "name": "docker-agent" })).await?;
        let task = post(
            &cp,
            "/v1/tasks",
            json!({
                "agent": "docker-agent",
                "steps": [{ "kind": "run", "command": "sh", "args": ["-c", "sleep 3; echo finished"] }],
                "retry": { "attempts": 2 }
            }),
        )
        .await?;
        let task_id = task["id"].as_str().context("no task id")?.to_owned();
        let running = wait_until("the task's step to open its session", CONNECT_LIMIT, || async {
            let t = get(&cp, &format!("/v1/tasks/{task_id}")).await?;
            let opened = t["results"]
                .as_array()
                .is_some_and(|r| r.iter().any(|s| s["session_id"].is_u64()));
            Ok((t["state"] == "running" && opened).then_some(t))
        })
        .await?;
        let lost_on = running["sandbox_id"].as_str().context("no sandbox")?.to_owned();
        let victim = [&a1, &a2]
            .into_iter()
            .find(|s| s.id == lost_on)
            .with_context(|| format!("the task runs on an unexpected sandbox {lost_on}"))?;
        docker_cli(&["kill", &victim.container])?;
        wait_status(&cp, victim, SandboxStatus::Disconnected).await?;
        let done = wait_until("the task to succeed elsewhere", CONNECT_LIMIT, || async {
            let t = get(&cp, &format!("/v1/tasks/{task_id}")).await?;
            if t["state"] == "failed" {
                bail!("the task failed: {t}");
            }
            Ok((t["state"] == "succeeded").then_some(t))
        })
        .await?;
        ensure!(done["sandbox_id"] != lost_on.as_str(), "retried on the lost sandbox: {done}");
        wait_status(&cp, victim, SandboxStatus::Failed).await?;
        let lost = victim.info(&cp).await?;
        ensure!(
            lost.reason.as_deref().is_some_and(|r| r.contains("killed")),
            "a killed container's sandbox should say why it failed: {lost:?}"
        );

        // The provider lists this deployment's containers only.
        let ours: BTreeSet<String> = a2_side
            .list_owned()
            .await?
            .into_iter()
            .map(|o| o.sandbox_id.to_string())
            .collect();
        let expected: BTreeSet<String> = all.iter().map(|s| s.id.clone()).collect();
        ensure!(ours == expected, "list_owned: {ours:?}, expected {expected:?}");

        // `paddock sandboxes destroy` removes containers, volumes and the
        // tenants' networks.
        for sandbox in all {
            lifecycle(&cp, sandbox, "destroy").await?;
            ensure!(sandbox.info(&cp).await?.status == SandboxStatus::Destroyed);
        }
        let left = leftovers(&docker, &owner).await?;
        ensure!(left.is_empty(), "destroy left behind: {left:?}");

        // Reconciling at start-up: a container labelled with this
        // deployment's owner that the database does not know is destroyed;
        // another deployment's, on the same engine, is left alone.
        let stray = a2_side.create(&stray_spec("sbx_00000000deadbeef", &cp)).await?;
        let foreign = test_side.create(&stray_spec("sbx_00000000f0f0f0f0", &cp)).await?;
        ensure!(a2_side.status(&stray).await.is_ok(), "the stray container was not made");
        cp.restart().await?;
        wait_until("the stray container to be destroyed", CONNECT_LIMIT, || async {
            Ok(leftovers(&docker, &owner).await?.is_empty().then_some(()))
        })
        .await
        .with_context(|| format!("control plane logs:\n{}", tail(&cp.logs(), 4000)))?;
        ensure!(cp.logs().contains(&stray), "the destruction of {stray} was not logged");
        let state = test_side.status(&foreign).await?;
        ensure!(
            matches!(state, ObservedState::Running | ObservedState::Starting),
            "another deployment's container was touched: {state:?}"
        );

        // Nothing left behind: the test removes its own.
        test_side.destroy(&foreign).await?;
        cp.kill();
        docker_cli(&["network", "rm", &bridge.name])?;
        for who in [&owner, &test_owner] {
            let left = leftovers(&docker, who).await?;
            ensure!(left.is_empty(), "left behind for {who}: {left:?}");
        }
        Ok(())
    })
    .await;
}

/// The sandbox token in agentd's environment (what sessions must not see).
async fn sandbox_token(docker: &Docker, container: &str) -> Result<String> {
    let inspect = docker.inspect_container(container, None).await?;
    inspect
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .iter()
        .find_map(|v| v.strip_prefix("PADDOCK_AGENTD_TOKEN=").map(str::to_owned))
        .context("no sandbox token in agentd's environment")
}

/// Runs `script` as root in the container with `docker exec`, expecting it
/// to fail; returns its error output.
fn docker_exec_fails(container: &str, script: &str) -> Result<String> {
    match docker_cli(&["exec", container, "sh", "-c", script]) {
        Ok(out) => bail!("`{script}` succeeded in {container}: {out}"),
        Err(err) => Ok(format!("{err:#}")),
    }
}
