//! The PostgreSQL harness itself: fresh databases are isolated from each
//! other, a cluster a test starts is gone after `Drop`, and the `pg_cluster`
//! binary that `.ci/run` uses serves databases and stops when its stdin closes.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use paddock_tests::{psql, PgCluster, SharedPg, PG_URL_ENV};

/// How long `pg_cluster` may take to print its URL, and to stop.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a table of that name exists in the database of `url`.
fn has_table(url: &str, table: &str) -> Result<bool> {
    let out = psql(
        url,
        &format!("SELECT to_regclass('public.{table}') IS NOT NULL"),
    )?;
    match out.trim() {
        "t" => Ok(true),
        "f" => Ok(false),
        other => bail!("unexpected psql output {other:?}"),
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// Two databases of the run's cluster: a table created in one does not
/// exist in the other, and each URL names its own database.
#[test]
fn fresh_databases_are_isolated() -> Result<()> {
    let pg = PgCluster::shared()?;
    match std::env::var(PG_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => {
            ensure!(pg.admin_url() == url.trim(), "did not use {PG_URL_ENV}");
            ensure!(pg.owned_cluster().is_none(), "started a cluster anyway");
        }
        _ => ensure!(
            pg.owned_cluster().is_some(),
            "no {PG_URL_ENV}, yet no cluster of its own"
        ),
    }

    let a = pg.fresh_database()?;
    let b = pg.fresh_database()?;
    ensure!(a != b, "two fresh databases share the URL {a}");
    for url in [&a, &b] {
        let name = psql(url, "SELECT current_database()")?;
        ensure!(
            url.ends_with(&format!("/{}", name.trim())),
            "{url} connected to database {name:?}"
        );
    }

    psql(
        &a,
        "CREATE TABLE only_in_a (id int PRIMARY KEY); INSERT INTO only_in_a VALUES (7)",
    )?;
    ensure!(
        has_table(&a, "only_in_a")?,
        "the table is missing where it was created"
    );
    ensure!(
        !has_table(&b, "only_in_a")?,
        "the table leaked into the other database"
    );
    ensure!(
        psql(&a, "SELECT id FROM only_in_a")?.trim() == "7",
        "the row is missing"
    );
    let err = match psql(&b, "SELECT id FROM only_in_a") {
        Ok(out) => bail!("the other database answered {out:?}"),
        Err(err) => format!("{err:#}"),
    };
    ensure!(err.contains("does not exist"), "unexpected error: {err}");
    Ok(())
}

/// A cluster started by a test stops on `Drop`: its postmaster exits, its
/// port closes and its directory is removed.
#[test]
fn dropped_cluster_is_gone() -> Result<()> {
    let cluster = PgCluster::start()?;
    let port = cluster.port();
    let dir = cluster.dir().to_owned();
    let pid = cluster
        .server_pid()
        .context("a running cluster has a postmaster.pid")?;
    let db = cluster.fresh_database()?;
    ensure!(
        psql(&db, "SELECT 1")?.trim() == "1",
        "the cluster does not answer"
    );
    ensure!(
        port_open(port),
        "port {port} is closed while the cluster runs"
    );
    ensure!(!process_gone(pid), "postmaster {pid} is not running");
    ensure!(cluster.log_path().is_file(), "no server log");

    drop(cluster);
    // `pg_ctl stop -w` returned only after the postmaster exited.
    ensure!(process_gone(pid), "postmaster {pid} survived the drop");
    ensure!(!port_open(port), "port {port} still accepts connections");
    ensure!(!dir.exists(), "{} survived the drop", dir.display());
    Ok(())
}

/// `pg_cluster` prints the URL of a working cluster, and stops it (postmaster
/// gone, directory removed) when its stdin closes, as when `.ci/run` exits.
#[test]
fn pg_cluster_binary_serves_until_stdin_closes() -> Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg_cluster"))
        .env_remove(PG_URL_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("could not start pg_cluster")?;
    let stdout = child.stdout.take().context("pg_cluster has a stdout")?;
    let (tx_line, rx_line) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx_line.send(read);
    });
    let line = match rx_line.recv_timeout(CLUSTER_TIMEOUT) {
        Ok(line) => line.context("could not read pg_cluster's stdout")?,
        Err(_) => {
            let _ = child.kill();
            bail!("pg_cluster printed no URL within {CLUSTER_TIMEOUT:?}");
        }
    };
    let url = line
        .trim()
        .strip_prefix(&format!("{PG_URL_ENV}="))
        .with_context(|| format!("pg_cluster printed {line:?}"))?
        .to_owned();

    let pg = SharedPg::existing(&url)?;
    ensure!(
        pg.owned_cluster().is_none(),
        "an existing cluster was owned"
    );
    let db = pg.fresh_database()?;
    psql(&db, "CREATE TABLE t (x int)")?;
    ensure!(has_table(&db, "t")?, "the table is missing");
    let data_dir = psql(pg.admin_url(), "SHOW data_directory")?;
    let data_dir = Path::new(data_dir.trim()).to_owned();
    let postmaster_pid: u32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))?
        .lines()
        .next()
        .context("an empty postmaster.pid")?
        .trim()
        .parse()?;

    drop(child.stdin.take());
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("pg_cluster did not exit within {CLUSTER_TIMEOUT:?} of stdin closing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(status.success(), "pg_cluster exited with {status}");
    ensure!(
        process_gone(postmaster_pid),
        "postmaster {postmaster_pid} survived"
    );
    ensure!(!data_dir.exists(), "{} survived", data_dir.display());
    Ok(())
}
