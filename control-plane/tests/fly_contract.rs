//! Contract test of the `fly` provider against Fly's published Machines API.
//!
//! Fly cannot be reached from here, so this is a **contract test**, not an
//! end-to-end one: a local HTTP server on 127.0.0.1 (`fly_contract/fake.rs`)
//! checks every request the real client sends — path, method, bearer
//! token, query parameters, body fields and their JSON types — against a
//! description of the endpoints taken from Fly's Swagger 2.0 document
//! (`fly_contract/spec.rs`), and answers with bodies shaped like the
//! document's `Machine` and `ErrorResponse`. Any request outside that
//! description fails the test. It also plays Fly's behaviour: throttling
//! with 429 and `Retry-After`, machines that Fly stops by itself, machines
//! of other deployments in the same app, and destroyed machines.
//!
//! The last test runs a whole control plane configured with
//! `PADDOCK_PROVIDERS=fly` and the `PADDOCK_FLY_*` keys against the same
//! fake: sandboxes created, stopped, started and destroyed through its API
//! become the right Machines API calls.

#[path = "fly_contract/fake.rs"]
mod fake;
#[path = "fly_contract/spec.rs"]
mod spec;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use control_plane::providers::fly::{FlyConfig, FlyProvider, RetryPolicy};
use control_plane::providers::{
    AgentEnv, ObservedState, Provider, ProviderError, Resources, SandboxSpec,
};
use fake::{FakeFly, Scripted, APP, TOKEN};
use paddock_protocol::SandboxId;
use serde_json::json;

const IMAGE: &str = "registry.fly.io/paddock-sandboxes:contract";
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBcontract\n-----END CERTIFICATE-----\n";

fn config(fake: &FakeFly) -> FlyConfig {
    FlyConfig {
        api_url: fake.url.clone(),
        app: APP.into(),
        api_token: TOKEN.into(),
        region: Some("ams".into()),
        image: Some(IMAGE.into()),
        wait_secs: 10,
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(5),
        },
        ..FlyConfig::default()
    }
}

fn provider(fake: &FakeFly, owner: &str) -> FlyProvider {
    FlyProvider::new(config(fake), owner).unwrap()
}

fn sandbox(id: &str, tenant: &str) -> SandboxSpec {
    SandboxSpec {
        sandbox_id: SandboxId(id.into()),
        tenant_id: tenant.into(),
        name: format!("name-of-{id}"),
        labels: BTreeMap::from([("team".to_string(), "infra".to_string())]),
        size: "small".into(),
        resources: Resources {
            cpu_millis: 1000,
            memory_mib: 512,
            pids: 512,
        },
        image: None,
        agent: AgentEnv {
            control_plane_url: "wss://paddock.example.com".into(),
            token: format!("pdk_sandbox_token_of_{id}"),
            ca_pem: Some(CA_PEM.into()),
        },
    }
}

#[tokio::test]
async fn lifecycle_requests_match_the_published_api() {
    let fake = FakeFly::start().await;
    let fly = provider(&fake, "own_contract");
    assert!(
        !format!("{fly:?}").contains(TOKEN),
        "the Fly token leaks into Debug"
    );

    let id = fly.create(&sandbox("sbx_0a1b2c", "ten_1")).await.unwrap();
    let creates = fake.seen_of("Machines_create");
    assert_eq!(creates.len(), 1);
    let body = creates[0].body.clone().unwrap();
    assert_eq!(body["name"], "paddock-sbx-0a1b2c");
    assert_eq!(body["region"], "ams");
    let config = &body["config"];
    assert_eq!(config["image"], IMAGE);
    assert_eq!(
        config["guest"],
        json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 512})
    );
    assert_eq!(
        config["metadata"],
        json!({
            "paddock.owner": "own_contract",
            "paddock.sandbox": "sbx_0a1b2c",
            "paddock.tenant": "ten_1",
            "team": "infra",
        })
    );
    assert_eq!(
        config["env"],
        json!({
            "PADDOCK_AGENTD_CONTROL_PLANE": "wss://paddock.example.com",
            "PADDOCK_AGENTD_TOKEN": "pdk_sandbox_token_of_sbx_0a1b2c",
            "PADDOCK_AGENTD_CA_FILE": "/etc/paddock/ca.pem",
        })
    );
    let ca = base64::engine::general_purpose::STANDARD
        .decode(config["files"][0]["raw_value"].as_str().unwrap())
        .unwrap();
    assert_eq!(config["files"][0]["guest_path"], "/etc/paddock/ca.pem");
    assert_eq!(String::from_utf8(ca).unwrap(), CA_PEM);
    assert_eq!(config["restart"]["policy"], "on-failure");

    // Fly launches it in the background: created, then started.
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Running);

    fly.stop(&id).await.unwrap();
    let stops = fake.seen_of("Machines_stop");
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].body, Some(json!({"signal": "SIGTERM"})));
    let waits = fake.seen_of("Machines_wait");
    let last_wait = waits.last().expect("stop waits for the machine to stop");
    assert!(last_wait
        .query
        .contains(&("state".into(), "stopped".into())));
    assert!(last_wait.query.iter().any(|(k, _)| k == "instance_id"));
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Stopped);

    fly.start(&id).await.unwrap();
    assert_eq!(fake.seen_of("Machines_start").len(), 1);
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Running);

    fly.destroy(&id).await.unwrap();
    let deletes = fake.seen_of("Machines_delete");
    assert_eq!(deletes[0].query, vec![("force".into(), "true".into())]);
    assert!(matches!(
        fly.status(&id).await,
        Err(ProviderError::NotFound(_))
    ));
    assert!(fly.list_owned().await.unwrap().is_empty());
    fake.assert_clean();
}

#[tokio::test]
async fn throttled_calls_wait_for_retry_after_then_succeed() {
    let fake = FakeFly::start().await;
    let fly = provider(&fake, "own_contract");

    // A throttled create was not carried out, so it is repeated too.
    fake.script(
        "Machines_create",
        Scripted {
            status: 429,
            retry_after: None,
            body: json!({"error": "rate limit exceeded"}),
        },
    );
    let id = fly.create(&sandbox("sbx_1", "ten_1")).await.unwrap();
    let creates = fake.seen_of("Machines_create");
    assert_eq!(
        creates.iter().map(|s| s.status).collect::<Vec<_>>(),
        [429, 200]
    );

    fake.script(
        "Machines_show",
        Scripted {
            status: 429,
            retry_after: Some(1),
            body: json!({"error": "rate limit exceeded"}),
        },
    );
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Running);
    let shows = fake.seen_of("Machines_show");
    assert_eq!(
        shows.iter().map(|s| s.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = shows[1].at - shows[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: retried after {waited:?}"
    );

    // A 5xx on an idempotent call is retried ...
    fake.script(
        "Machines_show",
        Scripted {
            status: 503,
            retry_after: None,
            body: json!({"error": "service unavailable"}),
        },
    );
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Running);
    assert_eq!(fake.seen_of("Machines_show").len(), 4);

    // ... but not on a create, which may have happened: the provider looks
    // for the machine instead of making a second one.
    fake.script(
        "Machines_create",
        Scripted {
            status: 500,
            retry_after: None,
            body: json!({"error": "internal error"}),
        },
    );
    let err = fly.create(&sandbox("sbx_2", "ten_1")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert_eq!(fake.seen_of("Machines_create").len(), 3);

    // Retries are bounded: max_attempts in all, then a clear error.
    for _ in 0..4 {
        fake.script(
            "Machines_list",
            Scripted {
                status: 429,
                retry_after: None,
                body: json!({"error": "rate limit exceeded"}),
            },
        );
    }
    let lists_before = fake.seen_of("Machines_list").len();
    let err = fly.list_owned().await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unavailable(m) if m.contains("attempts made: 4")),
        "{err:?}"
    );
    assert_eq!(fake.seen_of("Machines_list").len() - lists_before, 4);

    // A Retry-After beyond the longest wait ends the retries at once.
    fake.script(
        "Machines_show",
        Scripted {
            status: 429,
            retry_after: Some(3600),
            body: json!({"error": "rate limit exceeded"}),
        },
    );
    let shows_before = fake.seen_of("Machines_show").len();
    assert!(matches!(
        fly.status(&id).await,
        Err(ProviderError::Unavailable(_))
    ));
    assert_eq!(fake.seen_of("Machines_show").len() - shows_before, 1);
    fake.assert_clean();
}

#[tokio::test]
async fn a_machine_auto_stopped_by_fly_is_stopped_not_failed_and_starts_on_demand() {
    let fake = FakeFly::start().await;
    let fly = provider(&fake, "own_contract");
    let id = fly.create(&sandbox("sbx_idle", "ten_1")).await.unwrap();
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Running);

    // Fly's proxy stops the idle machine by itself.
    fake.fly_sets_state(&id, "stopped", "exit", "fly-proxy");
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Stopped);
    let owned = fly.list_owned().await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].state, ObservedState::Stopped);
    assert!(fake.seen_of("Machines_stop").is_empty());

    // Stopping it again is a no-op; starting it is what brings it back.
    fly.stop(&id).await.unwrap();
    assert!(fake.seen_of("Machines_stop").is_empty());
    fly.start(&id).await.unwrap();
    let waits = fake.seen_of("Machines_wait");
    assert!(waits
        .last()
        .unwrap()
        .query
        .contains(&("state".into(), "started".into())));
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Running);

    // Fly is still stopping it when it is wanted again: the provider lets
    // the stop finish, then starts it.
    fake.fly_is_moving(&id, "stopping", "stopped", 1);
    fly.start(&id).await.unwrap();
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Running);
    assert_eq!(fake.seen_of("Machines_start").len(), 2);

    // Stopping what Fly is already stopping only waits for it.
    fake.fly_is_moving(&id, "stopping", "stopped", 1);
    fly.stop(&id).await.unwrap();
    assert_eq!(fake.seen_of("Machines_stop").len(), 0);
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Stopped);
    fly.start(&id).await.unwrap();
    assert_eq!(fake.seen_of("Machines_start").len(), 3);

    // Already starting: no second start, only the wait.
    fake.fly_is_moving(&id, "starting", "started", 1);
    fly.start(&id).await.unwrap();
    assert_eq!(fake.seen_of("Machines_start").len(), 3);
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Running);

    // Fly stops it by itself just as the provider asks: Fly refuses the
    // stop, and the machine being stopped is what was asked for.
    fake.fly_is_moving(&id, "started", "stopped", 1);
    fake.script(
        "Machines_stop",
        Scripted {
            status: 412,
            retry_after: None,
            body: json!({"error": "failed_precondition: machine is not started"}),
        },
    );
    fly.stop(&id).await.unwrap();
    assert_eq!(fake.seen_of("Machines_stop").len(), 1);
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Stopped);
    fly.start(&id).await.unwrap();

    // Suspended counts as stopped too.
    fake.fly_sets_state(&id, "suspended", "suspend", "fly-proxy");
    assert_eq!(fly.status(&id).await.unwrap(), ObservedState::Stopped);
    fake.assert_clean();
}

#[tokio::test]
async fn list_owned_returns_only_this_owners_machines() {
    let fake = FakeFly::start().await;
    let ours = provider(&fake, "own_a");
    let theirs = provider(&fake, "own_b");
    let a1 = ours.create(&sandbox("sbx_a1", "ten_1")).await.unwrap();
    let a2 = ours.create(&sandbox("sbx_a2", "ten_2")).await.unwrap();
    let gone = ours.create(&sandbox("sbx_a3", "ten_1")).await.unwrap();
    ours.destroy(&gone).await.unwrap();
    let b1 = theirs.create(&sandbox("sbx_b1", "ten_1")).await.unwrap();
    // The control plane's own machine, with Fly's metadata only.
    fake.insert_machine(json!({"fly_process_group": "app"}), "started");

    let mut owned = ours.list_owned().await.unwrap();
    owned.sort_by(|x, y| x.sandbox_id.cmp(&y.sandbox_id));
    let summary: Vec<_> = owned
        .iter()
        .map(|o| {
            (
                o.resource_id.as_str(),
                o.sandbox_id.as_str(),
                o.tenant_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (a1.as_str(), "sbx_a1", "ten_1"),
            (a2.as_str(), "sbx_a2", "ten_2")
        ]
    );
    let theirs_owned = theirs.list_owned().await.unwrap();
    assert_eq!(theirs_owned.len(), 1);
    assert_eq!(theirs_owned[0].resource_id, b1);
    for list in fake.seen_of("Machines_list") {
        assert!(list
            .query
            .contains(&("include_deleted".into(), "false".into())));
    }
    fake.assert_clean();
}

#[tokio::test]
async fn destroying_a_missing_machine_is_not_an_error() {
    let fake = FakeFly::start().await;
    let fly = provider(&fake, "own_contract");
    fly.destroy("0e286039f42e86").await.unwrap();
    let id = fly.create(&sandbox("sbx_twice", "ten_1")).await.unwrap();
    fly.destroy(&id).await.unwrap();
    fly.destroy(&id).await.unwrap();
    let statuses: Vec<_> = fake
        .seen_of("Machines_delete")
        .iter()
        .map(|s| s.status)
        .collect();
    assert_eq!(statuses, [404, 200, 404]);
    // Starting or stopping what is gone is NotFound, for the caller to mark.
    assert!(matches!(
        fly.start(&id).await,
        Err(ProviderError::NotFound(_))
    ));
    assert!(matches!(
        fly.stop(&id).await,
        Err(ProviderError::NotFound(_))
    ));
    fake.assert_clean();
}

#[tokio::test]
async fn a_failed_machine_reports_why_and_a_repeated_create_finds_the_first() {
    let fake = FakeFly::start().await;
    let fly = provider(&fake, "own_contract");
    let spec = sandbox("sbx_flaky", "ten_1");
    let id = fly.create(&spec).await.unwrap();
    // Same sandbox again (an answer lost in transit): Fly refuses the
    // duplicate name and the provider returns the machine it already has.
    assert_eq!(fly.create(&spec).await.unwrap(), id);
    assert_eq!(fly.list_owned().await.unwrap().len(), 1);

    fake.fly_sets_state(&id, "failed", "exit", "flyd");
    match fly.status(&id).await.unwrap() {
        ObservedState::Failed(reason) => {
            assert!(reason.contains(&id) && reason.contains("flyd"), "{reason}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    // No capacity: refused with advice, and no machine left behind.
    fake.script(
        "Machines_create",
        Scripted {
            status: 412,
            retry_after: None,
            body: json!({"error": "insufficient resources", "status": "insufficient_capacity"}),
        },
    );
    let err = fly.create(&sandbox("sbx_big", "ten_1")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Rejected(m) if m.contains("try another region")),
        "{err:?}"
    );
    fake.assert_clean();
}

#[tokio::test]
async fn bad_tokens_labels_and_images_are_refused_with_what_to_do() {
    let fake = FakeFly::start().await;
    let mut wrong = config(&fake);
    wrong.api_token = "FlyV1 not-the-token".into();
    let fly = FlyProvider::new(wrong, "own_contract").unwrap();
    let err = fly.list_owned().await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Rejected(m) if m.contains("PADDOCK_FLY_API_TOKEN")),
        "{err:?}"
    );

    let fly = provider(&fake, "own_contract");
    let mut spec = sandbox("sbx_label", "ten_1");
    spec.labels
        .insert("paddock.owner".into(), "someone-else".into());
    assert!(matches!(
        fly.create(&spec).await,
        Err(ProviderError::Rejected(m)) if m.contains("reserved")
    ));

    let mut no_image = config(&fake);
    no_image.image = None;
    let fly = FlyProvider::new(no_image, "own_contract").unwrap();
    assert!(matches!(
        fly.create(&sandbox("sbx_img", "ten_1")).await,
        Err(ProviderError::Rejected(m)) if m.contains("PADDOCK_FLY_IMAGE")
    ));
    assert!(fake.seen_of("Machines_create").is_empty());
    fake.assert_clean();
}

/// The checker itself must be able to fail: requests that break the
/// published shapes are each caught.
#[tokio::test]
async fn the_contract_catches_malformed_requests() {
    let fake = FakeFly::start().await;
    let http = reqwest::Client::new();
    let machines = format!("{}/v1/apps/{APP}/machines", fake.url);
    let auth = format!("Bearer {TOKEN}");

    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            http.post(&machines)
                .header("authorization", &auth)
                .json(&json!({"config": {"image": "x", "guest": {"cpus": "2"}}, "size": "huge"})),
            "body.config.guest.cpus: expected an integer",
        ),
        (
            http.post(&machines)
                .header("authorization", &auth)
                .json(&json!({"config": {"image": "x"}, "size": "huge"})),
            "body.size: not a documented field",
        ),
        (
            http.post(&machines)
                .header("authorization", &auth)
                .json(&json!({"config": {"env": {"A": 1}}})),
            "body.config.image: required but missing",
        ),
        (
            http.get(format!("{machines}/3d8d9016b23489/start"))
                .header("authorization", &auth),
            "not an endpoint",
        ),
        (http.get(&machines), "Authorization must be `Bearer TOKEN`"),
        (
            http.get(format!("{machines}/3d8d9016b23489/wait?state=running"))
                .header("authorization", &auth),
            "query state=running",
        ),
        (
            http.delete(format!("{machines}/3d8d9016b23489?force=yes"))
                .header("authorization", &auth),
            "query force=yes",
        ),
        (
            http.get(format!("{machines}?metadata.paddock.owner=x"))
                .header("authorization", &auth),
            "`metadata.paddock.owner` is not documented",
        ),
        (
            http.get(format!("{}/v1/apps/another-app/machines", fake.url))
                .header("authorization", &auth),
            "app_name is not the configured app",
        ),
    ];
    for (request, expected) in cases {
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_client_error(),
            "{expected}: answered {}",
            response.status()
        );
        let violations = fake.take_violations();
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "expected a violation containing {expected:?}, got {violations:?}"
        );
    }
    fake.assert_clean();
}

#[test]
fn the_fake_answers_fit_the_documented_shapes() {
    // A shape check of a representative Machine, so a wrong description in
    // spec.rs (rather than a wrong client) shows up here.
    let machine = json!({
        "id": "3d8d9016b23489", "name": "paddock-sbx-1", "state": "started",
        "region": "ams", "instance_id": "01JDZ8K4Q7R2M9X30000000001",
        "private_ip": "fdaa:9:3a1c:a7b:1f6:e:5f3e:2",
        "config": {"image": IMAGE, "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
                   "metadata": {"paddock.owner": "o"}, "restart": {"policy": "on-failure"}},
        "image_ref": {"registry": "registry.fly.io", "repository": "paddock", "tag": "1",
                      "digest": "sha256:00", "labels": {}},
        "events": [{"id": "e", "type": "start", "status": "started", "source": "flyd",
                    "timestamp": 1_700_000_000_000_i64}],
        "checks": [], "created_at": "2026-11-26T06:00:00Z", "updated_at": "2026-11-26T06:00:01Z",
    });
    let mut out = Vec::new();
    spec::check(&spec::machine(), &machine, "machine", &mut out);
    assert!(out.is_empty(), "{out:?}");
    spec::check(
        &spec::machine(),
        &json!({"state": 3, "extra": true}),
        "machine",
        &mut out,
    );
    out.sort();
    assert_eq!(
        out,
        [
            "machine.extra: not a documented field",
            "machine.state: expected a string, got 3",
        ]
    );
}

/// `PADDOCK_PROVIDERS=fly` on a control plane: the registry builds the fly
/// provider from the `PADDOCK_FLY_*` keys with the deployment's owner id,
/// and the sandbox API drives it.
#[tokio::test]
async fn a_control_plane_configured_for_fly_runs_sandboxes_as_machines() {
    use control_plane::config::{Config, Overrides};
    use reqwest::Method;

    let fake = FakeFly::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PADDOCK_DATA_DIR", dir.path().to_str().unwrap()),
        ("PADDOCK_BOOTSTRAP_TOKEN", support::OWNER),
        ("PADDOCK_PROVIDERS", "local,fly"),
        ("PADDOCK_PROVIDER_DEFAULT", "fly"),
        ("PADDOCK_AGENT_URL", "wss://paddock.example.com"),
        ("PADDOCK_FLY_API_URL", fake.url.as_str()),
        ("PADDOCK_FLY_APP", APP),
        ("PADDOCK_FLY_API_TOKEN", TOKEN),
        ("PADDOCK_FLY_IMAGE", IMAGE),
        ("PADDOCK_FLY_REGION", "ams"),
        ("PADDOCK_FLY_WAIT_SECS", "10"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    // Without the app the config is refused, naming the key.
    let without_app = env.iter().filter(|(k, _)| k != "PADDOCK_FLY_APP").cloned();
    let err = Config::load(None, without_app, Overrides::default()).unwrap_err();
    assert!(err.to_string().starts_with("PADDOCK_FLY_APP"), "{err}");

    let config = Config::load(None, env, Overrides::default()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let url = support::start_config(config.clone(), &shutdown).await;
    let http = reqwest::Client::new();

    // The tenant's provider is fly: no --provider needed.
    let (status, made) = support::call(
        &http,
        &url,
        Method::POST,
        "/v1/sandboxes",
        Some(
            json!({"name": "on-fly", "provider": "default", "size": "small",
                    "labels": {"team": "infra"}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let sandbox = &made["sandbox"];
    assert_eq!(sandbox["provider"], "fly", "{made}");
    assert_eq!(sandbox["status"], "starting", "{made}");
    let id = sandbox["id"].as_str().unwrap().to_owned();

    let creates = fake.seen_of("Machines_create");
    assert_eq!(creates.len(), 1);
    let body = creates[0].body.clone().unwrap();
    assert_eq!(body["region"], "ams");
    let machine = &body["config"];
    assert_eq!(machine["image"], IMAGE);
    // small: 500 thousandths of a core and 512 MiB.
    assert_eq!(
        machine["guest"],
        json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 512})
    );
    let metadata = &machine["metadata"];
    assert_eq!(metadata["paddock.sandbox"], id.as_str());
    assert_eq!(metadata["paddock.tenant"], "default");
    assert_eq!(metadata["team"], "infra");
    let owner = metadata["paddock.owner"].as_str().unwrap();
    assert!(owner.starts_with("own_"), "{metadata}");
    assert_eq!(
        machine["env"]["PADDOCK_AGENTD_CONTROL_PLANE"],
        "wss://paddock.example.com"
    );
    let token = machine["env"]["PADDOCK_AGENTD_TOKEN"].as_str().unwrap();
    assert!(token.len() >= 16, "{token}");
    assert!(
        !made.to_string().contains(token),
        "the API showed agentd's token"
    );

    // Stop, start and destroy go through the Machines API.
    let (status, stopped) = support::call(
        &http,
        &url,
        Method::POST,
        &format!("/v1/sandboxes/{id}/stop"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(fake.seen_of("Machines_stop").len(), 1);
    let (status, started) = support::call(
        &http,
        &url,
        Method::POST,
        &format!("/v1/sandboxes/{id}/start"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["status"], "starting");
    assert_eq!(fake.seen_of("Machines_start").len(), 1);
    let (status, gone) = support::call(
        &http,
        &url,
        Method::DELETE,
        &format!("/v1/sandboxes/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["status"], "destroyed");
    let deletes = fake.seen_of("Machines_delete");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].query, vec![("force".into(), "true".into())]);
    // A provider that is not enabled is refused, naming those that are.
    let (status, refused) = support::call(
        &http,
        &url,
        Method::POST,
        "/v1/sandboxes",
        Some(json!({"name": "elsewhere", "provider": "docker"})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("local, fly") || message.contains("fly, local"),
        "{message}"
    );
    shutdown.cancel();
    fake.assert_clean();
}
