//! `pg_cluster`: starts one throwaway PostgreSQL cluster for a whole test run
//! (`.ci/run` uses it), prints `PADDOCK_TEST_PG_URL=<admin url>` on stdout,
//! and stops the cluster, removing its directory, when stdin closes or on
//! SIGTERM / SIGINT. Tests given that variable create their databases there
//! instead of starting a cluster each.
//!
//! Stopping on EOF means the cluster goes away with whoever started it, even
//! if that process is killed: its end of our stdin closes with it.

#[path = "../postgres.rs"]
#[allow(dead_code)] // The tests' helpers (`psql`, `SharedPg`) are unused here.
mod postgres;

use std::io::{Read, Write};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use postgres::{PgCluster, PG_URL_ENV};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    // Installed first, so a signal during the start is not lost (and does
    // not kill us with the cluster left running).
    let mut sigterm = signal(SignalKind::terminate()).context("could not handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("could not handle SIGINT")?;
    let (tx_eof, rx_eof) = oneshot::channel();
    std::thread::Builder::new()
        .name("stdin-eof".to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            // Whatever arrives is ignored; EOF or an error means "stop".
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            let _ = tx_eof.send(());
        })
        .context("could not spawn the stdin thread")?;

    let started = std::time::Instant::now();
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .context("the cluster start panicked")?
        .context("could not start the PostgreSQL cluster")?;
    eprintln!(
        "pg_cluster: PostgreSQL ready on port {} in {:.2?} ({})",
        cluster.port(),
        started.elapsed(),
        cluster.dir().display()
    );

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{PG_URL_ENV}={}", cluster.admin_url())
        .and_then(|()| stdout.flush())
        .context("could not print the URL")?;
    drop(stdout);

    let why = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        _ = rx_eof => "stdin closed",
    };
    eprintln!("pg_cluster: {why}, stopping the cluster");
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .context("stopping the cluster panicked")?;
    Ok(())
}
