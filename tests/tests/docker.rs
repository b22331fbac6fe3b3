//! The docker provider against this machine's real Docker engine: the
//! sandbox image built here from images/sandbox/Dockerfile (no registry),
//! sandboxes registered through the API and created by `DockerProvider`,
//! commands run in them through `paddock exec`, the sandbox token kept out
//! of sessions (which run as another uid than agentd), per-tenant network
//! isolation, stop/start keeping the workspace, a container killed from
//! outside reported disconnected with its task retried elsewhere,
//! `list_owned` limited to its owner, and nothing left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};
use bollard::Docker;
use control_plane::providers::docker::{DockerConfig, DockerProvider};
use control_plane::providers::{AgentEnv, ObservedState, Provider, Resources, SandboxSpec};
use paddock_tests::docker::{docker_cli, sandbox_image, OwnerCleanup};
use paddock_tests::proto::api::SandboxStatus;
use paddock_tests::{random_token, wait_until, within_for, ControlPlane};
use reqwest::Method;
use serde_json::{json, Value};

const TENANT_A: &str = "tenant-a";
const TENANT_B: &str = "tenant-b";
/// Container start plus agentd's first connection, on a loaded machine.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// The port a container listens on for the isolation check.
const PROBE_PORT: u16 = 8080;

fn resources() -> Resources {
    Resources {
        cpu_millis: 500,
        memory_mib: 256,
        pids: 256,
    }
}

/// One sandbox: registered through the API, created by a provider.
struct Created {
    id: String,
    token: String,
    resource: String,
    tenant: &'static str,
}

async fn create_sandbox(
    cp: &ControlPlane,
    provider: &DockerProvider,
    name: &str,
    tenant: &'static str,
) -> Result<Created> {
    let registered = cp.api().register_sandbox(name).await?;
    let spec = SandboxSpec {
        sandbox_id: registered.sandbox.id.clone(),
        tenant_id: tenant.to_owned(),
        name: name.to_owned(),
        labels: BTreeMap::from([("purpose".to_owned(), "docker-test".to_owned())]),
        size: "small".to_owned(),
        resources: resources(),
        image: None,
        agent: AgentEnv {
            control_plane_url: cp.url().to_owned(),
            token: registered.token.clone(),
            ca_pem: None,
        },
    };
    let resource = provider
        .create(&spec)
        .await
        .with_context(|| format!("could not create the sandbox {name}"))?;
    Ok(Created {
        id: registered.sandbox.id.to_string(),
        token: registered.token,
        resource,
        tenant,
    })
}

async fn wait_status(cp: &ControlPlane, id: &str, want: SandboxStatus) -> Result<()> {
    let api = cp.api();
    wait_until(
        &format!("sandbox {id} to be {want:?}"),
        CONNECT_LIMIT,
        || {
            let api = api.clone();
            async move { Ok((api.sandbox(id).await?.status == want).then_some(())) }
        },
    )
    .await
    .with_context(|| {
        format!(
            "control plane logs:\n{}",
            paddock_tests::tail(&cp.logs(), 4000)
        )
    })
}

/// Runs `script` with `sh -c` in the sandbox through `paddock exec`.
async fn exec(cp: &ControlPlane, id: &str, script: &str) -> Result<(Option<i32>, String)> {
    let out = cp.paddock(&["exec", id, "--", "sh", "-c", script]).await?;
    Ok((out.code(), out.stdout.replace('\r', "")))
}

async fn exec_ok(cp: &ControlPlane, id: &str, script: &str) -> Result<String> {
    let (code, stdout) = exec(cp, id, script).await?;
    ensure!(
        code == Some(0),
        "`{script}` in {id} ended with {code:?}: {stdout}"
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
async fn container_ip(docker: &Docker, resource: &str) -> Result<String> {
    let container = docker.inspect_container(resource, None).await?;
    container
        .network_settings
        .and_then(|settings| settings.networks)
        .unwrap_or_default()
        .into_values()
        .find_map(|endpoint| endpoint.ip_address.filter(|ip| !ip.is_empty()))
        .with_context(|| format!("{resource} has no address"))
}

/// Waits until a listener in `from` can (or, checked once, cannot) be
/// reached at `ip`.
async fn wait_reachable(cp: &ControlPlane, from: &str, ip: &str) -> Result<()> {
    let script = connect_script(ip);
    wait_until(
        &format!("{ip}:{PROBE_PORT} to accept from {from}"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_run_as_containers_isolated_per_tenant_and_leave_nothing_behind() {
    // Built (or found in the cache) before the clock starts: on a fresh
    // machine this assembles a root filesystem from Debian's packages.
    let image = tokio::task::spawn_blocking(sandbox_image)
        .await
        .expect("the image build panicked")
        .unwrap_or_else(|err| panic!("could not build the sandbox image: {err:#}"));
    let owner = format!("test-{}", &random_token()[..12]);
    let other_owner = format!("test-{}", &random_token()[..12]);
    // Removes whatever is left if an assertion fails half-way.
    let _cleanup = OwnerCleanup::new(&[&owner, &other_owner]);
    within_for(Duration::from_secs(240), async {
        let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
        let config = DockerConfig {
            image,
            name_prefix: "paddock-test".to_owned(),
            stop_grace_secs: 5,
            ..DockerConfig::default()
        };
        // Through `connect`, as the control plane does (API version negotiated).
        let provider = DockerProvider::connect(config.clone(), &owner).await?;

        // The control plane listens on tenant A's bridge gateway: a host
        // address every container reaches (tenant B's through the host).
        let network_a = provider.ensure_network(TENANT_A).await?;
        let gateway = network_a.gateway.context("tenant A's network has no gateway")?;
        let cp = ControlPlane::start_listening(
            &format!("{gateway}:0"),
            &[("PADDOCK_ALLOW_PLAIN_HTTP", "true")],
        )
        .await?;

        let a1 = create_sandbox(&cp, &provider, "a1", TENANT_A).await?;
        let a2 = create_sandbox(&cp, &provider, "a2", TENANT_A).await?;
        let b1 = create_sandbox(&cp, &provider, "b1", TENANT_B).await?;
        let all = [&a1, &a2, &b1];
        for sandbox in all {
            wait_status(&cp, &sandbox.id, SandboxStatus::Connected).await?;
            ensure!(provider.status(&sandbox.resource).await? == ObservedState::Running);
        }

        // Limits, labels and the read-only root, as the engine applied them.
        for sandbox in all {
            let inspect = docker.inspect_container(&sandbox.resource, None).await?;
            let host = inspect.host_config.context("no host config")?;
            ensure!(host.readonly_rootfs == Some(true), "{host:?}");
            ensure!(host.nano_cpus == Some(500_000_000), "{host:?}");
            ensure!(host.memory == Some(256 << 20), "{host:?}");
            ensure!(host.pids_limit == Some(256), "{host:?}");
            let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
            ensure!(labels.get("paddock.sandbox") == Some(&sandbox.id), "{labels:?}");
            ensure!(labels.get("paddock.tenant").map(String::as_str) == Some(sandbox.tenant));
            ensure!(labels.get("paddock.owner") == Some(&owner), "{labels:?}");
            let refused = docker_exec_fails(&sandbox.resource, "touch /etc/paddock-probe")?;
            ensure!(refused.contains("Read-only"), "root was writable: {refused}");
        }

        // A command in each through `paddock exec`: as uid 1000 while agentd
        // is root, without the token, in a writable workspace.
        for sandbox in all {
            let out = exec_ok(
                &cp,
                &sandbox.id,
                "echo uid=$(id -u); echo agentd=$(ps -o uid= -C agentd | tr -d ' '); \
                 echo home=$HOME; env; echo kept > /workspace/note; cat /workspace/note",
            )
            .await?;
            ensure!(out.contains("uid=1000"), "{out}");
            ensure!(out.contains("agentd=0"), "{out}");
            ensure!(out.contains("home=/home/agent"), "{out}");
            ensure!(out.contains("kept"), "{out}");
            ensure!(!out.contains(&sandbox.token), "the token leaked into a session: {out}");
            ensure!(!out.contains("PADDOCK_AGENTD_"), "agentd's settings leaked: {out}");
            // Nor can the session read agentd's environment from /proc.
            let (code, out) = exec(
                &cp,
                &sandbox.id,
                "cat /proc/$(pgrep -x agentd | head -1)/environ",
            )
            .await?;
            ensure!(code != Some(0), "a session read agentd's environment: {out}");
            ensure!(!out.contains(&sandbox.token), "the token leaked through /proc: {out}");
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
            &a1.id,
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
        let out = exec_ok(&cp, &a1.id, "ps -eo user:16,args | grep '[p]ylsp'").await?;
        ensure!(out.trim_start().starts_with("agent "), "pylsp runs as: {out}");

        // Per-tenant isolation: a2 (tenant A) reaches a listener in a1 (same
        // tenant), but not one in b1 (tenant B) that b1 itself reaches.
        for sandbox in [&a1, &b1] {
            exec_ok(&cp, &sandbox.id, &listen_script()).await?;
        }
        let ip_a1 = container_ip(&docker, &a1.resource).await?;
        let ip_b1 = container_ip(&docker, &b1.resource).await?;
        wait_reachable(&cp, &a2.id, &ip_a1).await?;
        let (code, out) = exec(&cp, &a2.id, &connect_script(&ip_b1)).await?;
        ensure!(
            code != Some(0) && !out.contains("connected"),
            "tenant A reached tenant B's container at {ip_b1}: {out}"
        );

        // Stop and start keep the workspace.
        provider.stop(&a2.resource).await?;
        wait_status(&cp, &a2.id, SandboxStatus::Disconnected).await?;
        ensure!(provider.status(&a2.resource).await? == ObservedState::Stopped);
        provider.start(&a2.resource).await?;
        wait_status(&cp, &a2.id, SandboxStatus::Connected).await?;
        let out = exec_ok(&cp, &a2.id, "cat /workspace/note").await?;
        ensure!(out.contains("kept"), "the workspace was lost across stop/start: {out}");

        // A container killed from outside mid-task: reported disconnected,
        // the task retried on another sandbox.
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
        let victim = all
            .iter()
            .find(|s| s.id == lost_on)
            .with_context(|| format!("the task runs on an unknown sandbox {lost_on}"))?;
        docker_cli(&["kill", &victim.resource])?;
        wait_status(&cp, &victim.id, SandboxStatus::Disconnected).await?;
        ensure!(provider.status(&victim.resource).await? == ObservedState::Stopped);
        let done = wait_until("the task to succeed elsewhere", CONNECT_LIMIT, || async {
            let t = get(&cp, &format!("/v1/tasks/{task_id}")).await?;
            if t["state"] == "failed" {
                bail!("the task failed: {t}");
            }
            Ok((t["state"] == "succeeded").then_some(t))
        })
        .await?;
        ensure!(done["sandbox_id"] != lost_on.as_str(), "retried on the lost sandbox: {done}");

        // list_owned sees this owner's sandboxes only, not another owner's
        // on the same engine (and the same tenant name).
        let other = DockerProvider::with_client(docker.clone(), config, &other_owner)?;
        let foreign = create_sandbox(&cp, &other, "foreign", TENANT_A).await?;
        let ours: BTreeSet<String> = provider
            .list_owned()
            .await?
            .into_iter()
            .map(|o| o.sandbox_id.to_string())
            .collect();
        let expected: BTreeSet<String> = all.iter().map(|s| s.id.clone()).collect();
        ensure!(ours == expected, "list_owned: {ours:?}, expected {expected:?}");
        let theirs = other.list_owned().await?;
        ensure!(
            theirs.len() == 1 && theirs[0].sandbox_id.as_str() == foreign.id,
            "{theirs:?}"
        );

        // Destroy removes containers, volumes and the tenant networks;
        // destroying again is not an error.
        for sandbox in all {
            provider.destroy(&sandbox.resource).await?;
            provider.destroy(&sandbox.resource).await?;
        }
        // A container removed behind the provider's back leaves its
        // volume, which list_owned still reports (for reconciling) and
        // destroy removes, with the tenant's network.
        docker_cli(&["rm", "--force", &foreign.resource])?;
        let theirs = other.list_owned().await?;
        ensure!(
            theirs.len() == 1
                && theirs[0].resource_id == foreign.resource
                && matches!(theirs[0].state, ObservedState::Failed(_)),
            "an orphaned volume should be listed as failed: {theirs:?}"
        );
        other.destroy(&foreign.resource).await?;
        ensure!(provider.list_owned().await?.is_empty());
        for who in [&owner, &other_owner] {
            let left = leftovers(&docker, who).await?;
            ensure!(left.is_empty(), "left behind for {who}: {left:?}");
        }
        Ok(())
    })
    .await;
}

/// Runs `script` as root in the container with `docker exec`, expecting it
/// to fail; returns its error output.
fn docker_exec_fails(container: &str, script: &str) -> Result<String> {
    match docker_cli(&["exec", container, "sh", "-c", script]) {
        Ok(out) => bail!("`{script}` succeeded in {container}: {out}"),
        Err(err) => Ok(format!("{err:#}")),
    }
}
