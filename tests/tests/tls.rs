//! TLS end to end, with a certificate authority the test makes itself: the
//! control plane serves HTTPS and `wss://` from PEM files, agentd and the
//! CLI connect when given the CA, and a certificate they cannot verify is
//! refused with a message that names the problem and the setting to fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use paddock_tests::proto::api::{RegisterSandbox, SandboxInfo, SandboxRegistered, SandboxStatus};
use paddock_tests::{
    base_command, bin_path, paddock_command, wait_until, within, Agentd, ControlPlane, Proc,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject as _;
use tempfile::TempDir;

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and a
/// second CA that signed nothing of ours, as PEM files.
struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
    /// A key that does not belong to `cert`.
    other_key: PathBuf,
}

fn new_ca(name: &str) -> Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn pki() -> Result<Pki> {
    let dir = tempfile::Builder::new().prefix("paddock-tls-").tempdir()?;
    let (ca_pem, issuer) = new_ca("Paddock test CA")?;
    let (other_ca_pem, _) = new_ca("Some other CA")?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "paddock control plane");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, text).with_context(|| format!("could not write {name}"))?;
        Ok(path)
    };
    Ok(Pki {
        ca: write("ca.pem", &ca_pem)?,
        cert: write("server.pem", &cert.pem())?,
        key: write("server.key", &key.serialize_pem())?,
        other_ca: write("other-ca.pem", &other_ca_pem)?,
        other_key: write("other.key", &KeyPair::generate()?.serialize_pem())?,
        _dir: dir,
    })
}

/// An HTTPS client that trusts only `ca`.
fn https_client(ca: &Path) -> Result<reqwest::Client> {
    let pem = std::fs::read(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn register(
    client: &reqwest::Client,
    cp: &ControlPlane,
    name: &str,
) -> Result<SandboxRegistered> {
    let response = client
        .post(format!("{}/v1/sandboxes", cp.url()))
        .bearer_auth(cp.token())
        .json(&RegisterSandbox {
            name: name.to_owned(),
            ..RegisterSandbox::default()
        })
        .send()
        .await
        .context("POST /v1/sandboxes over HTTPS")?;
    ensure!(
        response.status() == 201,
        "register answered {}",
        response.status()
    );
    Ok(response.json().await?)
}

async fn wait_connected(client: &reqwest::Client, cp: &ControlPlane, id: &str) -> Result<()> {
    let url = format!("{}/v1/sandboxes/{id}", cp.url());
    wait_until(
        &format!("sandbox {id} to connect over wss://"),
        Duration::from_secs(15),
        || async {
            let info: SandboxInfo = client
                .get(&url)
                .bearer_auth(cp.token())
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok((info.status == SandboxStatus::Connected).then_some(()))
        },
    )
    .await
}

/// Runs `paddock ARGS…` against `cp` with extra environment variables and
/// returns (exit code, stdout, stderr).
async fn run_paddock(
    cp: &ControlPlane,
    env: &[(&str, &Path)],
    args: &[&str],
) -> Result<(Option<i32>, String, String)> {
    let mut cmd = paddock_command(cp.url(), cp.token(), args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut proc = Proc::spawn("paddock", cmd)?;
    let status = proc.wait_exit(Duration::from_secs(30)).await?;
    // The pipes close once the process is gone; wait for the drains to finish.
    for capture in [&proc.stdout, &proc.stderr] {
        wait_until(
            "paddock's output to end",
            Duration::from_secs(5),
            || async { Ok(capture.is_closed().then_some(())) },
        )
        .await?;
    }
    Ok((status.code(), proc.stdout.text(), proc.stderr.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentd_and_the_cli_connect_over_tls_and_refuse_an_unknown_ca() {
    within(async {
        let pki = pki()?;
        let cp = ControlPlane::start_with(&[
            ("PADDOCK_TLS_CERT", pki.cert.to_str().context("utf-8 path")?),
            ("PADDOCK_TLS_KEY", pki.key.to_str().context("utf-8 path")?),
        ])
        .await?;
        ensure!(
            cp.url().starts_with("https://127.0.0.1:"),
            "the readiness line should name an https:// URL, not {}",
            cp.url()
        );
        let client = https_client(&pki.ca)?;

        // agentd with the CA connects over wss://.
        let registered = register(&client, &cp, "tls-sb").await?;
        let workdir = tempfile::tempdir()?;
        let agentd = Agentd::start_with(
            cp.url(),
            &registered.token,
            workdir.path(),
            &[("PADDOCK_AGENTD_CA_FILE".to_owned(), pki.ca.display().to_string())],
        )?;
        wait_connected(&client, &cp, registered.sandbox.id.as_str())
            .await
            .with_context(|| agentd.logs())?;

        // The CA as PEM text in the environment (how the docker provider
        // hands it to a container) works as well.
        let by_pem = register(&client, &cp, "tls-pem").await?;
        let pem_workdir = tempfile::tempdir()?;
        let pem_agentd = Agentd::start_with(
            cp.url(),
            &by_pem.token,
            pem_workdir.path(),
            &[(
                "PADDOCK_AGENTD_CA_PEM".to_owned(),
                std::fs::read_to_string(&pki.ca)?,
            )],
        )?;
        wait_connected(&client, &cp, by_pem.sandbox.id.as_str())
            .await
            .with_context(|| pem_agentd.logs())?;

        // The CLI with the CA: HTTPS for the session, wss:// for its output.
        let (code, stdout, stderr) = run_paddock(
            &cp,
            &[("PADDOCK_CA_FILE", &pki.ca)],
            &["exec", "tls-sb", "--", "echo", "tls-ok"],
        )
        .await?;
        ensure!(
            code == Some(0) && stdout.contains("tls-ok"),
            "paddock exec over TLS: exit {code:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        );

        // agentd trusting another CA stops for good, saying why.
        let wrong = register(&client, &cp, "tls-wrong-ca").await?;
        let workdir = tempfile::tempdir()?;
        let mut agentd = Agentd::start_with(
            cp.url(),
            &wrong.token,
            workdir.path(),
            &[("PADDOCK_AGENTD_CA_FILE".to_owned(), pki.other_ca.display().to_string())],
        )?;
        let status = agentd.wait_exit(Duration::from_secs(15)).await?;
        let stderr = agentd.stderr();
        ensure!(
            status.code() == Some(2),
            "agentd with the wrong CA should exit 2, not {status}\n{}",
            agentd.logs()
        );
        ensure!(
            stderr.contains("certificate was rejected")
                && stderr.contains("trusted certificate authority")
                && stderr.contains("--ca-file"),
            "agentd should name the certificate problem and --ca-file:\n{stderr}"
        );

        // The CLI without the CA: both the HTTP and the stream paths say so.
        for args in [&["sandboxes"][..], &["watch", "tls-sb", "1", "--from", "0"][..]] {
            let (code, stdout, stderr) = run_paddock(&cp, &[], args).await?;
            ensure!(
                code.is_some_and(|c| c != 0),
                "`paddock {}` without the CA should fail: exit {code:?}\n{stdout}\n{stderr}",
                args.join(" ")
            );
            ensure!(
                stderr.contains("the control plane's certificate was rejected")
                    && stderr.contains("PADDOCK_CA_FILE"),
                "`paddock {}` should name the certificate problem:\n{stderr}",
                args.join(" ")
            );
        }
        Ok(())
    })
    .await;
}

/// Runs `control-plane serve ARGS…` on a fresh data dir and returns its
/// exit code and stderr; for configurations that must be refused.
async fn serve_refused(args: &[&str]) -> Result<(Option<i32>, String)> {
    let data_dir = tempfile::tempdir()?;
    let mut cmd = base_command(&bin_path("control-plane"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(args);
    let mut proc = Proc::spawn("control-plane", cmd)?;
    let status = proc.wait_exit(Duration::from_secs(15)).await?;
    wait_until(
        "the server's stderr to end",
        Duration::from_secs(5),
        || async { Ok(proc.stderr.is_closed().then_some(())) },
    )
    .await?;
    ensure!(
        !proc.stdout.text().contains("PADDOCK_URL="),
        "a refused configuration must not report itself ready:\n{}",
        proc.logs()
    );
    Ok((status.code(), proc.stderr.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_off_loopback_and_bad_certificates_are_refused() {
    within(async {
        // Refused by validation, before anything is bound.
        let (code, stderr) = serve_refused(&["--listen", "0.0.0.0:0"]).await?;
        ensure!(code == Some(1), "exit {code:?}: {stderr}");
        ensure!(
            stderr.contains("listen")
                && stderr.contains("tls_cert")
                && stderr.contains("allow_plain_http"),
            "the error should name the key and the ways out:\n{stderr}"
        );

        let pki = pki()?;
        let cert = pki.cert.to_str().context("utf-8 path")?;
        let (code, stderr) =
            serve_refused(&["--listen", "127.0.0.1:0", "--tls-cert", cert]).await?;
        ensure!(code == Some(1), "exit {code:?}: {stderr}");
        ensure!(stderr.contains("tls_key"), "{stderr}");

        let other_key = pki.other_key.to_str().context("utf-8 path")?;
        let (code, stderr) = serve_refused(&[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            other_key,
        ])
        .await?;
        ensure!(code == Some(1), "exit {code:?}: {stderr}");
        ensure!(
            stderr.contains("tls_cert and tls_key"),
            "a key that is not the certificate's should be named:\n{stderr}"
        );
        Ok(())
    })
    .await;
}
