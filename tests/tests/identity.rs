//! Tenants, tokens and roles through the real CLI and control plane: a
//! viewer may list but not run commands (and is told which permission it
//! lacks), an owner works in another tenant with `--tenant` while the
//! default tenant sees nothing of it, the audit log records it all, and
//! `paddock login` keeps its token in a file only its owner can read.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use anyhow::{ensure, Context};
use paddock_tests::{paddock, within, ControlPlane};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tenants_and_audit_through_the_cli() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("ident").await?;

        let made = cp
            .paddock(&["tokens", "create", "reader", "--role", "viewer", "--json"])
            .await?;
        ensure!(made.code() == Some(0), "tokens create: {}", made.describe());
        let made: Value = serde_json::from_str(&made.stdout)?;
        let viewer = made["token"]
            .as_str()
            .context("no token in the answer")?
            .to_owned();

        let list = paddock(cp.url(), &viewer, &["sandboxes", "--json"]).await?;
        ensure!(
            list.code() == Some(0),
            "a viewer lists sandboxes: {}",
            list.describe()
        );
        let run = paddock(cp.url(), &viewer, &["exec", sb.name(), "--", "true"]).await?;
        ensure!(run.code() != Some(0), "a viewer must not run commands");
        ensure!(
            run.stderr.contains("open_sessions"),
            "the refusal should name the missing permission: {}",
            run.describe()
        );

        // The owner creates a tenant and works in it.
        let t = cp.paddock(&["tenants", "create", "acme", "--json"]).await?;
        ensure!(t.code() == Some(0), "tenants create: {}", t.describe());
        let reg = cp
            .paddock(&[
                "--tenant",
                "acme",
                "sandboxes",
                "register",
                "acme-box",
                "--json",
            ])
            .await?;
        ensure!(
            reg.code() == Some(0),
            "register in acme: {}",
            reg.describe()
        );
        let acme = cp
            .paddock(&["--tenant", "acme", "sandboxes", "--json"])
            .await?;
        ensure!(
            acme.stdout.contains("acme-box"),
            "acme lists its sandbox: {}",
            acme.stdout
        );
        let default = cp.paddock(&["sandboxes", "--json"]).await?;
        ensure!(
            !default.stdout.contains("acme-box"),
            "the default tenant must not see acme's sandbox: {}",
            default.stdout
        );
        // A non-owner cannot name another tenant.
        let sneaky = paddock(cp.url(), &viewer, &["--tenant", "acme", "sandboxes"]).await?;
        ensure!(sneaky.code() != Some(0), "a viewer reached another tenant");

        let audit = cp.paddock(&["audit", "--json"]).await?;
        ensure!(audit.code() == Some(0), "audit: {}", audit.describe());
        let audit: Value = serde_json::from_str(&audit.stdout)?;
        let actions: Vec<&str> = audit["events"]
            .as_array()
            .context("no events")?
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        for wanted in ["sandbox.registered", "token.created"] {
            ensure!(
                actions.contains(&wanted),
                "audit lacks {wanted}: {actions:?}"
            );
        }
        let acme_audit = cp.paddock(&["--tenant", "acme", "audit", "--json"]).await?;
        ensure!(
            acme_audit.stdout.contains("sandbox.registered")
                && !acme_audit.stdout.contains("token.created"),
            "acme's audit log holds acme's events only: {}",
            acme_audit.stdout
        );

        // login keeps the token in a 0600 file and later commands use it.
        let home = tempfile::tempdir()?;
        let login = tokio::process::Command::new(paddock_tests::bin_path("paddock"))
            .args(["--url", cp.url(), "--token", cp.token(), "login"])
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("PADDOCK_URL")
            .env_remove("PADDOCK_TOKEN")
            .stdin(Stdio::null())
            .output()
            .await?;
        ensure!(
            login.status.success(),
            "login: {}",
            String::from_utf8_lossy(&login.stderr)
        );
        let file = home.path().join("paddock/config.toml");
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "config file mode {mode:o}");
        let whoami = tokio::process::Command::new(paddock_tests::bin_path("paddock"))
            .args(["whoami", "--json"])
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("PADDOCK_URL")
            .env_remove("PADDOCK_TOKEN")
            .stdin(Stdio::null())
            .output()
            .await?;
        let who: Value = serde_json::from_slice(&whoami.stdout)
            .with_context(|| String::from_utf8_lossy(&whoami.stderr).into_owned())?;
        ensure!(who["role"] == "owner", "whoami after login: {who}");
        Ok(())
    })
    .await;
}
