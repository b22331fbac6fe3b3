//! A real PostgreSQL 15 server for the tests: `initdb` into a temporary
//! directory, `pg_ctl start` on a free port of `127.0.0.1`, a fresh database
//! per test, and `pg_ctl stop -m immediate` plus removal of the directory on
//! `Drop`.
//!
//! One cluster serves a whole CI run: `.ci/run` starts it with the
//! `pg_cluster` binary and exports its admin URL as `PADDOCK_TEST_PG_URL`;
//! [`PgCluster::shared`] uses that cluster when the variable is set and starts
//! one of its own otherwise (a plain `cargo nextest run`), so every test works
//! both ways. Isolation comes from databases, not clusters: each test asks for
//! [`SharedPg::fresh_database`].
//!
//! As root (CI), the server binaries run as the `postgres` system user
//! through `runuser`, since PostgreSQL refuses to run as root; otherwise they
//! run as the current user.
//!
//! Self-contained (std, anyhow, tempfile, nix) so `src/bin/pg_cluster.rs`
//! can include it with `#[path]`. Setup is blocking; every command runs under
//! a deadline, and nothing sleeps to synchronise.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The environment variable naming the admin URL of a cluster started for
/// the whole test run (by `.ci/run`).
pub const PG_URL_ENV: &str = "PADDOCK_TEST_PG_URL";

/// Overrides where the PostgreSQL binaries are (`initdb`, `pg_ctl`, `psql`).
pub const PG_BIN_DIR_ENV: &str = "PADDOCK_PG_BIN_DIR";

/// Where Debian's `postgresql-15` package puts its binaries.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The system user that runs the server when the tests run as root.
const SERVER_USER: &str = "postgres";

/// How long `initdb` may take (about a second here; slow disks and busy CI
/// machines get headroom).
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the server may take to accept connections after `pg_ctl start`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `pg_ctl stop` or one `psql` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How often readiness is polled after `pg_ctl -w` returned.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many ports to try when another process takes the free port we picked
/// between probing it and the server binding it.
const PORT_ATTEMPTS: usize = 5;

/// How much of the server log failure messages carry.
const LOG_TAIL_BYTES: u64 = 4000;

/// Server settings for tests. `fsync`, `synchronous_commit` and
/// `full_page_writes` are off: crash safety is worthless for a cluster that
/// is thrown away after the run, and they make every commit several times
/// slower. Many test processes share one cluster, hence `max_connections`.
const SERVER_SETTINGS: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
];

/// A PostgreSQL server owned by the tests: stopped, and its directory
/// removed, on `Drop`.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    bin_dir: PathBuf,
    /// `Some("postgres")` when running as root.
    run_as: Option<&'static str>,
    /// The cluster's directory: `data/` (PGDATA, holding `postgres.log`) and
    /// the Unix socket. Dropped after the server is stopped (see `Drop`).
    dir: TempDir,
}

impl PgCluster {
    /// Creates a cluster in a fresh directory under the temp dir, starts it
    /// on a free port of `127.0.0.1` and waits until it accepts connections.
    pub fn start() -> Result<PgCluster> {
        let bin_dir = bin_dir()?;
        let run_as = if is_root()? { Some(SERVER_USER) } else { None };
        let dir = tempfile::Builder::new()
            .prefix("paddock-pg-")
            .tempdir()
            .context("could not create a directory for the cluster")?;
        if let Some(user) = run_as {
            let (uid, gid) = user_ids(user)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("could not chown {} to `{user}`", dir.path().display()))?;
        }
        // The port is filled in below; until the server runs, `Drop` finds
        // no `postmaster.pid` and only removes the directory.
        let mut cluster = PgCluster {
            port: 0,
            bin_dir,
            run_as,
            dir,
        };
        cluster.initdb()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// The cluster for this test: the one named by `PADDOCK_TEST_PG_URL` if
    /// set, else one started by (and shared within) this process, which is
    /// stopped when the last handle to it is dropped.
    pub fn shared() -> Result<SharedPg> {
        if let Some(url) = std::env::var_os(PG_URL_ENV) {
            let url = url
                .into_string()
                .map_err(|_| anyhow!("{PG_URL_ENV} is not UTF-8"))?;
            if !url.trim().is_empty() {
                return SharedPg::existing(url.trim())
                    .with_context(|| format!("{PG_URL_ENV} names an unusable cluster"));
            }
        }
        // Tests of one process (`cargo test`) running at the same time share
        // one cluster; under nextest every test is its own process and starts
        // its own. A `Weak`, so the cluster does not outlive its last user: a
        // static is never dropped, and would leak a running server.
        static IN_PROCESS: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
        let mut slot = IN_PROCESS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let cluster = match slot.upgrade() {
            Some(cluster) => cluster,
            None => {
                let cluster = Arc::new(PgCluster::start()?);
                *slot = Arc::downgrade(&cluster);
                cluster
            }
        };
        Ok(SharedPg {
            admin_url: cluster.admin_url(),
            cluster: Some(cluster),
        })
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`: the superuser, over TCP
    /// (trust authentication, no password).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (removed on `Drop`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PGDATA.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log (`postgres.log` in the data directory).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir().join("postgres.log")
    }

    /// The last few KiB of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path(), LOG_TAIL_BYTES)
    }

    /// The postmaster's process id, from `postmaster.pid`, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Creates a uniquely named database and returns its URL (same
    /// superuser as [`PgCluster::admin_url`]).
    pub fn fresh_database(&self) -> Result<String> {
        create_database(&self.admin_url())
    }

    /// A command for one of the server binaries, run as the server's user.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        // The server's user may not be allowed into the tests' working
        // directory; it owns this one.
        cmd.current_dir(self.dir.path());
        clean_env(&mut cmd);
        cmd
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            // The cluster is thrown away: no need to wait for the disk.
            .arg("--no-sync");
        let out = run(cmd, "initdb", INITDB_TIMEOUT)?;
        if !out.status.success() {
            bail!("initdb failed ({}): {}", out.status, output_text(&out));
        }
        Ok(())
    }

    /// Starts the server on a free port, retrying on another port if the one
    /// probed was taken before the server could bind it.
    fn start_server(&mut self) -> Result<()> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            let log_len = fs::metadata(self.log_path()).map_or(0, |m| m.len());
            match self.pg_ctl_start() {
                Ok(()) => return self.wait_ready(),
                Err(err) => {
                    let log = read_from(&self.log_path(), log_len);
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        return Err(err);
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow!("no port tried"))
            .context(format!("no free port after {PORT_ATTEMPTS} attempts")))
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let socket_dir = self.dir.path().display().to_string();
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k '{socket_dir}'",
            self.port
        );
        for setting in SERVER_SETTINGS {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &READY_TIMEOUT.as_secs().to_string()])
            .arg("-o")
            .arg(options)
            .arg("start");
        // pg_ctl's own limit comes first; this one only catches a hung pg_ctl.
        let out = run(cmd, "pg_ctl start", READY_TIMEOUT + Duration::from_secs(10))?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed ({}): {}\nserver log:\n{}",
                out.status,
                output_text(&out),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// `pg_ctl -w` returned once the server accepts connections; this checks
    /// the same through TCP, as the tests will connect.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut cmd = Command::new(self.bin_dir.join("pg_isready"));
            cmd.args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-p", &self.port.to_string(), "-t", "5"]);
            clean_env(&mut cmd);
            let out = run(cmd, "pg_isready", COMMAND_TIMEOUT)?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server on port {} was not ready after {READY_TIMEOUT:?} ({})\nserver log:\n{}",
                    self.port,
                    out.status,
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops the server at once (`-m immediate`: no checkpoint, nothing to
    /// keep), falling back to SIGKILL on the postmaster.
    fn stop(&self) -> Result<()> {
        let Some(pid) = self.server_pid() else {
            return Ok(());
        };
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        let stopped = run(cmd, "pg_ctl stop", COMMAND_TIMEOUT);
        match stopped {
            Ok(out) if out.status.success() => Ok(()),
            other => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                match other {
                    Ok(out) => bail!("pg_ctl stop failed ({}): {}", out.status, output_text(&out)),
                    Err(err) => Err(err),
                }
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!(
                "could not stop the PostgreSQL cluster in {}: {err:#}",
                self.dir.path().display()
            );
        }
        // `dir` is removed when the fields drop, after this.
    }
}

/// A handle on the cluster of this test run (see [`PgCluster::shared`]).
#[derive(Debug, Clone)]
pub struct SharedPg {
    admin_url: String,
    /// Set when this process started the cluster; it stops with the last
    /// handle.
    cluster: Option<Arc<PgCluster>>,
}

impl SharedPg {
    /// A handle on a cluster someone else runs, given its superuser URL;
    /// checks that it answers.
    pub fn existing(admin_url: &str) -> Result<SharedPg> {
        psql(admin_url, "SELECT 1")
            .with_context(|| format!("the cluster at {admin_url} does not answer"))?;
        Ok(SharedPg {
            admin_url: admin_url.to_owned(),
            cluster: None,
        })
    }

    /// The superuser's URL of the `postgres` database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The cluster, if this process started it (not when it came from
    /// `PADDOCK_TEST_PG_URL`).
    pub fn owned_cluster(&self) -> Option<&PgCluster> {
        self.cluster.as_deref()
    }

    /// Creates a uniquely named database and returns its URL (same
    /// superuser as the admin URL).
    pub fn fresh_database(&self) -> Result<String> {
        create_database(&self.admin_url)
    }
}

/// Runs `sql` with `psql` against `url` and returns what it printed:
/// unaligned, tuples only (`SELECT 1` prints `1\n`). Stops at the first error.
pub fn psql(url: &str, sql: &str) -> Result<String> {
    let mut cmd = Command::new(bin_dir()?.join("psql"));
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-c",
        sql,
    ]);
    clean_env(&mut cmd);
    let out = run(cmd, "psql", COMMAND_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "psql failed ({}) on {url} running {sql:?}: {}",
            out.status,
            output_text(&out)
        );
    }
    String::from_utf8(out.stdout).context("psql printed something other than UTF-8")
}

/// The URL of database `name` on the cluster of `admin_url`: the same URL
/// with its path replaced.
pub fn database_url(admin_url: &str, name: &str) -> Result<String> {
    let (scheme, rest) = admin_url
        .split_once("://")
        .with_context(|| format!("not a URL: {admin_url}"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    let mut url = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// `CREATE DATABASE paddock_test_<pid>_<counter>_<random>` on the cluster of
/// `admin_url`; returns the new database's URL. Unique across the test
/// processes sharing a cluster, and across runs against the same cluster.
fn create_database(admin_url: &str) -> Result<String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "paddock_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_hex(4)?
    );
    // template0: no objects a developer may have added to template1, and
    // no clash with another CREATE DATABASE copying template1 at the same time.
    psql(
        admin_url,
        &format!("CREATE DATABASE {name} TEMPLATE template0"),
    )
    .with_context(|| format!("could not create database {name}"))?;
    database_url(admin_url, &name)
}

/// Where the PostgreSQL binaries are: `PADDOCK_PG_BIN_DIR`, else Debian's
/// PostgreSQL 15 location.
fn bin_dir() -> Result<PathBuf> {
    let dir = std::env::var_os(PG_BIN_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
    if !dir.join("initdb").is_file() {
        bail!(
            "PostgreSQL server binaries not found in {}: install them \
             (`apt-get install postgresql`) or set {PG_BIN_DIR_ENV}",
            dir.display()
        );
    }
    Ok(dir)
}

/// Whether this process runs as root (its effective uid owns `/proc/self`).
fn is_root() -> Result<bool> {
    let meta = fs::metadata("/proc/self").context("could not stat /proc/self")?;
    Ok(meta.uid() == 0)
}

/// The uid and gid of a system user, from `id`.
fn user_ids(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let mut cmd = Command::new("id");
        cmd.args([flag, user]);
        let out = run(cmd, "id", COMMAND_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "running as root, but there is no `{user}` user to run PostgreSQL as: {}",
                output_text(&out)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .with_context(|| format!("`id {flag} {user}` printed {text:?}"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Removes every inherited `PG*` variable (PGHOST, PGPORT, PGDATA,
/// PGPASSWORD, ...), so a developer's own settings never redirect a test.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

/// A free TCP port of 127.0.0.1, as the kernel hands them out. The probe
/// socket is closed before the server binds the port, so another process
/// can take it in between; `start_server` then tries another.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("could not bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `cmd` to completion with its output captured, killing it if it
/// takes longer than `limit`.
fn run(mut cmd: Command, what: &str, limit: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .with_context(|| format!("could not run {what} ({:?})", cmd.get_program()))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("wait-{what}"))
        .spawn(move || {
            // The receiver is gone only if we timed out and stopped caring.
            let _ = tx.send(child.wait_with_output());
        })
        .context("could not spawn a thread to wait for a child")?;
    match rx.recv_timeout(limit) {
        Ok(out) => out.with_context(|| format!("could not wait for {what}")),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            bail!("{what} did not finish within {limit:?}")
        }
    }
}

/// A child's stderr, or its stdout if stderr is empty, trimmed.
fn output_text(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        stderr.trim().to_owned()
    }
}

/// The last `max` bytes of a file (lossily decoded), or a note saying why
/// there are none.
fn read_tail(path: &Path, max: u64) -> String {
    let len = fs::metadata(path).map_or(0, |m| m.len());
    read_from(path, len.saturating_sub(max))
}

/// A file's bytes from `offset` on (lossily decoded), or a note saying why
/// there are none.
fn read_from(path: &Path, offset: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = fs::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|err| format!("(could not read {}: {err})", path.display()))
}

/// `bytes` random bytes from the kernel's CSPRNG, hex-encoded.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("could not read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_the_path_only() -> Result<()> {
        let admin = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(
            database_url(admin, "db1")?,
            "postgres://postgres@127.0.0.1:5432/db1"
        );
        assert_eq!(
            database_url("postgres://u:p@h:1/postgres?sslmode=disable", "db2")?,
            "postgres://u:p@h:1/db2?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h:1", "db3")?, "postgres://h:1/db3");
        assert!(database_url("127.0.0.1:5432", "db4").is_err());
        Ok(())
    }
}
