//! A TCP proxy the test controls, standing for the network between agentd
//! and the control plane: it forwards connections until told to cut them,
//! then refuses new ones (accepts and closes them at once) until restored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
struct Shared {
    upstream: String,
    up: AtomicBool,
    /// Bumped by every cut; each forwarding task ends when it changes.
    cuts: watch::Sender<u64>,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A proxy on `127.0.0.1:0` in front of one upstream address.
#[derive(Debug)]
pub struct LinkProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl LinkProxy {
    /// Starts forwarding to the host and port of `upstream_url`
    /// (`http://127.0.0.1:PORT`); the link starts up.
    pub async fn start(upstream_url: &str) -> Result<LinkProxy> {
        let upstream = upstream_url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .with_context(|| format!("the upstream {upstream_url} is not http://HOST:PORT"))?
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("the proxy could not bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (cuts, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            upstream,
            up: AtomicBool::new(true),
            cuts,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(LinkProxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// The URL to give agentd instead of the control plane's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every forwarded connection (both ends see them close) and
    /// refuses new ones until [`LinkProxy::restore`].
    pub fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }

    /// Connections forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections refused while the link was cut.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections were refused in all (agentd
    /// tried to come back while the link was down).
    pub async fn wait_refused(&self, n: u64, limit: Duration) -> Result<()> {
        crate::wait_until(
            &format!("{n} refused connections at the proxy"),
            limit,
            || async { Ok((self.refused() >= n).then_some(())) },
        )
        .await
    }

    /// Waits until at least `n` connections were forwarded in all.
    pub async fn wait_accepted(&self, n: u64, limit: Duration) -> Result<()> {
        crate::wait_until(
            &format!("{n} forwarded connections at the proxy"),
            limit,
            || async { Ok((self.accepted() >= n).then_some(())) },
        )
        .await
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.shared.up.store(false, Ordering::SeqCst);
        self.shared.cuts.send_modify(|n| *n += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        // Subscribed before looking at `up`: a cut after this look still
        // reaches the connection, and one before it is seen here.
        let cuts = shared.cuts.subscribe();
        if !shared.up.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(forward(client, shared.clone(), cuts));
    }
}

async fn forward(mut client: TcpStream, shared: Arc<Shared>, mut cuts: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cuts.changed() => {}
    }
    // Dropping both sockets closes them: whatever was in flight is lost.
}
