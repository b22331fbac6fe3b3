//! TLS for the control plane's listener: the rustls server configuration
//! (TLS 1.2 and 1.3, the `ring` provider, ALPN `http/1.1`) from PEM files,
//! and [`TlsListener`], an `axum::serve::Listener` that hands axum streams
//! whose handshake is already done.
//!
//! Handshakes run in tasks of their own, so a slow or silent client never
//! holds up the accept loop; finished streams reach axum through a bounded
//! queue. A failed handshake is the client's problem, logged at debug only.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; at the limit the accept loop waits for
/// one to finish and new connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for axum to take them. When full, the
/// handshake tasks wait (and count against [`MAX_HANDSHAKES`]).
const ACCEPTED_QUEUE: usize = 64;

/// Makes `ring` the process's default rustls provider. Every configuration
/// here names its provider explicitly; this is for libraries that ask for
/// the default. Installing twice is harmless.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server configuration from a PEM certificate chain (leaf first) and
/// its PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "tls_cert: could not read a PEM certificate chain from {}",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "tls_cert: {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "tls_key: could not read a PEM private key from {}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("the TLS provider does not support TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls_cert and tls_key do not make a usable certificate (does the key belong to the certificate?)")?;
    // WebSockets upgrade over HTTP/1.1; the server speaks nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections come out of a TLS handshake.
///
/// Dropping it stops the accept loop and every handshake in progress.
pub struct TlsListener {
    local_addr: SocketAddr,
    rx_accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    _accept_loop: AbortOnDropHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener`; must be called within a Tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx_accepted, rx_accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            tx_accepted,
        ));
        Ok(TlsListener {
            local_addr,
            rx_accepted,
            _accept_loop: AbortOnDropHandle::new(accept_loop),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx_accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only with this listener, or by panicking:
            // no connection will come any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections and starts a handshake task for each. The
/// handshakes live in a `JoinSet` owned here, so they end with this loop.
async fn accept_loop(
    mut listener: TcpListener,
    acceptor: TlsAcceptor,
    tx_accepted: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        if handshakes.len() >= MAX_HANDSHAKES {
            reap(handshakes.join_next().await);
            continue;
        }
        tokio::select! {
            () = tx_accepted.closed() => return,
            Some(done) = handshakes.join_next() => reap(Some(done)),
            // axum's accept for TcpListener retries (with a pause) on errors.
            (tcp, peer) = axum::serve::Listener::accept(&mut listener) => {
                // Keystrokes and echoes are tiny writes: Nagle would hold them for an ACK.
                let _ = tcp.set_nodelay(true);
                handshakes.spawn(handshake(acceptor.clone(), tcp, peer, tx_accepted.clone()));
            }
        }
    }
}

fn reap(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(err)) = done {
        if err.is_panic() {
            warn!(error = %err, "a TLS handshake task panicked");
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    tx_accepted: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            // A closed queue means the server is stopping: drop the stream.
            let _ = tx_accepted.send((stream, peer)).await;
        }
        Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
        Err(_) => debug!(
            %peer,
            timeout_s = HANDSHAKE_TIMEOUT.as_secs(),
            "TLS handshake timed out"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = server_config(&missing, &missing).unwrap_err();
        assert!(format!("{err:#}").starts_with("tls_cert"), "{err:#}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = server_config(&empty, &missing).unwrap_err();
        assert!(format!("{err:#}").contains("no PEM certificate"), "{err:#}");
    }
}
