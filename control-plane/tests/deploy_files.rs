//! The deployment files agree with the code: `fly.toml` asks Fly for what
//! the control plane needs (WebSockets balanced by connections, health
//! checks on a route that exists, a graceful kill), its environment is
//! accepted by the control plane's and the fly provider's config, the
//! secrets it names are keys they read, and the Dockerfile it builds from
//! exists and copies files that exist or are built.

use std::path::{Path, PathBuf};

use control_plane::config::{Config, Overrides};
use control_plane::providers::fly::FlyConfig;
use toml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn fly_toml() -> (String, Value) {
    let text = std::fs::read_to_string(repo().join("fly.toml")).unwrap();
    let value = text.parse::<toml::Table>().unwrap();
    (text, Value::Table(value))
}

#[test]
fn fly_toml_serves_websockets_by_connections_with_health_checks_and_a_drain() {
    let (_, fly) = fly_toml();
    assert_eq!(fly["kill_signal"].as_str(), Some("SIGTERM"));
    let kill_timeout = fly["kill_timeout"].as_str().unwrap();
    let kill_timeout = humantime::parse_duration(kill_timeout).unwrap();
    assert!(
        (15..=300).contains(&kill_timeout.as_secs()),
        "kill_timeout {kill_timeout:?} leaves no time to drain, or exceeds Fly's 300 s"
    );

    let service = &fly["http_service"];
    let internal_port = service["internal_port"].as_integer().unwrap();
    let listen = fly["env"]["PADDOCK_LISTEN"].as_str().unwrap();
    assert!(
        listen.ends_with(&format!(":{internal_port}")),
        "{listen} vs {internal_port}"
    );
    assert_eq!(service["concurrency"]["type"].as_str(), Some("connections"));
    assert_eq!(service["auto_stop_machines"].as_str(), Some("off"));
    let checks = service["checks"].as_array().unwrap();
    assert!(checks
        .iter()
        .any(|c| c["path"].as_str() == Some("/healthz") && c["method"].as_str() == Some("GET")));
    assert!(control_plane::routes::ROUTES
        .iter()
        .any(|r| r.path == "/healthz"));
}

#[test]
fn fly_toml_env_and_named_secrets_are_keys_the_config_reads() {
    let (text, fly) = fly_toml();
    let mut env: Vec<(String, String)> = fly["env"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    // The secrets, named in the comments, with stand-in values.
    let secrets: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|k| k.starts_with("PADDOCK_"))
        .collect();
    assert_eq!(
        secrets,
        [
            "PADDOCK_DATABASE_URL",
            "PADDOCK_BOOTSTRAP_TOKEN",
            "PADDOCK_FLY_API_TOKEN"
        ]
    );
    assert!(!text.contains("FlyV1 "), "a token value in fly.toml");
    env.push((
        "PADDOCK_DATABASE_URL".into(),
        "postgres://paddock@db.internal/paddock".into(),
    ));
    env.push((
        "PADDOCK_BOOTSTRAP_TOKEN".into(),
        "pdk_a_stand_in_owner_token".into(),
    ));
    env.push(("PADDOCK_FLY_API_TOKEN".into(), "FlyV1 stand-in".into()));

    let config = Config::load(None, env.clone(), Overrides::default()).unwrap();
    assert_eq!(config.data_dir, Path::new("/data"));
    assert!(config.allow_plain_http);
    let fly_config = FlyConfig::from_env(env.clone()).unwrap();
    assert_eq!(fly_config.app, "paddock-sandboxes");
    assert!(fly_config.image.is_some());
    // The control plane runs its sandboxes as Fly Machines with exactly
    // these settings, and hands agentd a URL through Fly's proxy.
    assert_eq!(config.providers.enabled, ["fly"]);
    assert_eq!(config.providers.default, "fly");
    assert_eq!(
        format!("{:?}", config.providers.fly),
        format!("{fly_config:?}")
    );
    assert_eq!(config.providers.fly.api_token, fly_config.api_token);
    let agent_url = config.providers.agent_url.as_deref().unwrap();
    let app = fly["app"].as_str().unwrap();
    assert_eq!(agent_url, format!("wss://{app}.fly.dev"));

    // Every PADDOCK_FLY_* key in fly.toml is read by FlyConfig: another
    // value changes the config or is refused by name.
    for (key, _) in env.iter().filter(|(k, _)| k.starts_with("PADDOCK_FLY_")) {
        let mut changed = env.clone();
        changed.push((key.clone(), "x-changed".into()));
        match FlyConfig::from_env(changed) {
            // (Debug redacts the token, so it is compared apart.)
            Ok(other) => assert_ne!(
                (format!("{other:?}"), &other.api_token),
                (format!("{fly_config:?}"), &fly_config.api_token),
                "{key} in fly.toml is not read by FlyConfig"
            ),
            Err(e) => assert!(e.to_string().starts_with(key.as_str()), "{key}: {e}"),
        }
    }
}

#[test]
fn the_control_plane_dockerfile_copies_what_exists() {
    let (_, fly) = fly_toml();
    let dockerfile = fly["build"]["dockerfile"].as_str().unwrap();
    let text = std::fs::read_to_string(repo().join(dockerfile)).unwrap();
    for line in text.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            if let Some(binary) = source.strip_prefix("target/release/") {
                // Built by `cargo build --release`: a binary of this workspace.
                assert!(
                    ["control-plane", "agentd"].contains(&binary),
                    "{line}: {binary} is not a workspace binary"
                );
            } else {
                assert!(repo().join(source).is_file(), "{line}: {source} missing");
            }
        }
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target"));
    assert!(ignore.lines().any(|l| l == "!target/release/control-plane"));
}
