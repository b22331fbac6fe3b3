//! The sandbox image for tests against the real Docker engine, built on
//! this machine without a registry.
//!
//! Two layers, each cached by a content hash so repeated runs reuse them:
//!
//! 1. **The base** (`paddock-sandbox-base:<hash>`): a Debian bookworm root
//!    filesystem assembled by `mmdebstrap --variant=minbase` from Debian's
//!    own packages (the tools agents need included), saved as a tarball
//!    under `target/paddock-docker/` and loaded with `docker import`.
//!    mmdebstrap rather than debootstrap: it downloads with apt in parallel
//!    and unpacks in one dpkg run, several times faster, and writes the
//!    tarball directly. Debian packages rather than the host's binaries: the
//!    image is then a real Debian (dpkg knows what is installed, so the
//!    Dockerfile's package check passes without network), independent of
//!    what happens to be installed on the host.
//! 2. **The sandbox image** (`paddock-sandbox:<hash>`): the shipped
//!    `images/sandbox/Dockerfile` itself, built with `--build-arg
//!    BASE=<base>` on a context holding the workspace's `agentd` binary, so
//!    the Dockerfile cannot rot unnoticed.
//!
//! Test processes run in parallel: building is serialised by a lock file,
//! and whoever gets the lock second finds the image already there.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use crate::bin_path;

/// What the base image holds besides minbase (bash, coreutils, dpkg, apt):
/// the Dockerfile's `PACKAGES`, so its check finds them all installed.
const BASE_PACKAGES: &[&str] = &[
    "bash",
    "git",
    "tini",
    "make",
    "gcc",
    "libc6-dev",
    "python3-pylsp",
    "python3-pyflakes",
    "ca-certificates",
    "procps",
    "passwd",
];
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Left out of the root filesystem: nobody reads them in a sandbox.
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
];
/// Changed when the way the base is assembled changes, to rebuild it.
const BASE_RECIPE: &str = "mmdebstrap minbase v1";

/// The label put on the images built here.
pub const IMAGE_LABEL: &str = "paddock.test-image";

/// The repository's root (the parent of this crate).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where the root filesystem tarballs and the lock file live.
fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("paddock-docker")
}

fn hex_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())[..16].to_owned()
}

/// Runs `docker ARGS`, returning its stdout; the error carries its stderr.
pub fn docker_cli(args: &[&str]) -> Result<String> {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("could not run the docker client; install docker.io (see .ci/run)")?;
    if !output.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn image_exists(tag: &str) -> bool {
    docker_cli(&["image", "inspect", "--format", "{{.Id}}", tag]).is_ok()
}

/// Holds the build lock until dropped.
fn lock_builds() -> Result<Flock<File>> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let path = dir.join("build.lock");
    let file = File::create(&path).with_context(|| format!("could not open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, err)| anyhow::anyhow!("could not lock {}: {err}", path.display()))
}

/// The sandbox image's tag, building it (and its base) if this machine
/// does not have it yet. Prints what it built and how long it took.
pub fn sandbox_image() -> Result<String> {
    let dockerfile_path = repo_root().join("images/sandbox/Dockerfile");
    let dockerfile = std::fs::read(&dockerfile_path)
        .with_context(|| format!("could not read {}", dockerfile_path.display()))?;
    let agentd_path = bin_path("agentd");
    let agentd = std::fs::read(&agentd_path).with_context(|| {
        format!(
            "could not read {}; run `cargo build --workspace --bins` first",
            agentd_path.display()
        )
    })?;
    let base = base_tag();
    let tag = format!(
        "paddock-sandbox:{}",
        hex_digest(&[base.as_bytes(), &dockerfile, &agentd])
    );
    if image_exists(&tag) {
        return Ok(tag);
    }
    let _lock = lock_builds()?;
    if image_exists(&tag) {
        return Ok(tag);
    }
    build_base(&base)?;
    let started = Instant::now();
    let context = tempfile::Builder::new()
        .prefix("paddock-image-")
        .tempdir()
        .context("could not create a build context")?;
    std::fs::write(context.path().join("agentd"), &agentd)
        .context("could not copy agentd into the build context")?;
    std::fs::set_permissions(
        context.path().join("agentd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let context_dir = context.path().to_string_lossy().into_owned();
    let dockerfile_arg = dockerfile_path.to_string_lossy().into_owned();
    let base_arg = format!("BASE={base}");
    let label = format!("{IMAGE_LABEL}=sandbox");
    // The classic builder: BuildKit may not be installed, and this build
    // needs none of its features.
    let output = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "--quiet",
            "--label",
            &label,
            "--build-arg",
            &base_arg,
        ])
        .args(["-f", &dockerfile_arg, "-t", &tag, &context_dir])
        .stdin(Stdio::null())
        .output()
        .context("could not run docker build")?;
    if !output.status.success() {
        bail!(
            "docker build of images/sandbox/Dockerfile on {base} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    eprintln!(
        "built {tag} from images/sandbox/Dockerfile in {:.1?}",
        started.elapsed()
    );
    remove_older_sandbox_images(&tag);
    Ok(tag)
}

/// Removes the sandbox images built before `tag` (for an older agentd or
/// Dockerfile), so a developer's engine does not fill up with them. An
/// image still used by a container is refused by the engine and stays.
fn remove_older_sandbox_images(tag: &str) {
    let label = format!("label={IMAGE_LABEL}=sandbox");
    let before = format!("before={tag}");
    let Ok(listed) = docker_cli(&[
        "image", "ls", "--filter", &label, "--filter", &before, "--format", "{{.ID}}",
    ]) else {
        return;
    };
    for id in listed.split_whitespace() {
        // Without --force: in use (or tagged twice) means kept.
        let _ = docker_cli(&["rmi", id]);
    }
}

fn base_tag() -> String {
    let mut parts: Vec<&[u8]> = vec![BASE_RECIPE.as_bytes(), SUITE.as_bytes(), MIRROR.as_bytes()];
    parts.extend(BASE_PACKAGES.iter().map(|p| p.as_bytes()));
    parts.extend(DPKG_EXCLUDES.iter().map(|p| p.as_bytes()));
    format!("paddock-sandbox-base:{}", hex_digest(&parts))
}

/// Imports the base image, assembling its root filesystem first unless a
/// tarball of it is cached. Called with the build lock held.
fn build_base(tag: &str) -> Result<()> {
    if image_exists(tag) {
        return Ok(());
    }
    let hash = tag.rsplit(':').next().unwrap_or("base");
    let tarball = cache_dir().join(format!("rootfs-{hash}.tar"));
    if !tarball.exists() {
        let started = Instant::now();
        // mmdebstrap picks the output format from the file name; a tarball
        // left by an interrupted run is replaced.
        let out = cache_dir().join(format!("rootfs-{hash}.partial.tar"));
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new("mmdebstrap");
        cmd.arg("--variant=minbase")
            .arg(format!("--include={}", BASE_PACKAGES.join(",")))
            .arg("--quiet")
            // No fsync per unpacked file: a failed run throws the tree away.
            .arg("--dpkgopt=force-unsafe-io");
        for exclude in DPKG_EXCLUDES {
            cmd.arg(format!("--dpkgopt={exclude}"));
        }
        cmd.args([SUITE, &out.to_string_lossy(), MIRROR])
            .stdin(Stdio::null());
        let output = cmd.output().context(
            "could not run mmdebstrap, which assembles the sandbox's root filesystem; \
             install it (apt-get install mmdebstrap, as .ci/run does)",
        )?;
        if !output.status.success() {
            bail!(
                "mmdebstrap failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        std::fs::rename(&out, &tarball)
            .with_context(|| format!("could not move {} into place", out.display()))?;
        eprintln!(
            "assembled the sandbox root filesystem {} in {:.1?}",
            tarball.display(),
            started.elapsed()
        );
    }
    let started = Instant::now();
    let label = format!("LABEL {IMAGE_LABEL}=base");
    docker_cli(&[
        "import",
        "--change",
        &label,
        &tarball.to_string_lossy(),
        tag,
    ])
    .context("could not import the sandbox root filesystem")?;
    eprintln!("imported {tag} in {:.1?}", started.elapsed());
    Ok(())
}

/// Removes every container, volume and network labelled with one of its
/// owners when dropped — also when the test failed half-way — through the
/// docker client, which needs no runtime.
#[derive(Debug)]
pub struct OwnerCleanup {
    owners: Vec<String>,
}

impl OwnerCleanup {
    pub fn new(owners: &[&str]) -> OwnerCleanup {
        OwnerCleanup {
            owners: owners.iter().map(|o| (*o).to_owned()).collect(),
        }
    }
}

impl Drop for OwnerCleanup {
    fn drop(&mut self) {
        for owner in &self.owners {
            let filter = format!("label=paddock.owner={owner}");
            let ids = |args: &[&str]| -> Vec<String> {
                docker_cli(args)
                    .map(|out| out.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default()
            };
            // Containers first: they hold the volumes and networks.
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
                let found = ids(&list);
                if found.is_empty() {
                    continue;
                }
                let mut args = remove.clone();
                args.extend(found.iter().map(String::as_str));
                if let Err(err) = docker_cli(&args) {
                    eprintln!("cleanup of {owner}'s resources: {err:#}");
                }
            }
        }
    }
}
