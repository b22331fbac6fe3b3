//! TLS for every connection `paddock` makes (HTTP requests and session
//! streams): one rustls client configuration (the `ring` provider, TLS 1.2
//! and 1.3) trusting the webpki roots plus an optional extra CA file, and
//! the message for a certificate that does not verify.
//!
//! There is deliberately no way to turn certificate verification off: a
//! self-hosted control plane's CA goes in `--ca-file` instead.

use std::io;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// Where an extra CA can be given, for error messages.
const CA_SETTING: &str = "--ca-file, PADDOCK_CA_FILE or the config file's ca_file";

/// The client configuration: webpki roots, plus every certificate in the
/// PEM file `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |why: String| anyhow!("the CA file {} {why} ({CA_SETTING})", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| bad(format!("could not be read as PEM certificates: {err}")))?;
        if certs.is_empty() {
            return Err(bad(
                "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".to_owned(),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| bad(format!("holds a certificate that cannot be a CA: {err}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| anyhow!("could not set up TLS: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The API and the WebSocket upgrade are HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The message for a failure anywhere in `err`'s chain that is the
/// control plane's certificate not verifying; `None` for anything else.
pub fn rejected_certificate(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(tls) = find_rustls(err) {
            return describe(tls).map(message);
        }
        next = err.source();
    }
    None
}

/// `err` itself, or what it wraps when it is an `io::Error` (which hides
/// the error it wraps from `source()`; reqwest's connector nests two).
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    find_rustls(err.downcast_ref::<io::Error>()?.get_ref()?)
}

fn message(reason: String) -> String {
    format!(
        "the control plane's certificate was rejected ({reason}): pass its CA with --ca-file or PADDOCK_CA_FILE"
    )
}

fn describe(err: &rustls::Error) -> Option<String> {
    let what = match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "it is not signed by a trusted certificate authority"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "it is not valid for this host name"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet"
            }
            CertificateError::Revoked => "it has been revoked",
            CertificateError::BadSignature => "its signature is invalid",
            // webpki's error, which rustls carries only as an opaque one.
            CertificateError::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
                "it is a CA certificate, which cannot be a server's own: serve one without CA:TRUE, or one the CA signed"
            }
            _ => "it is not acceptable",
        },
        rustls::Error::NoCertificatesPresented => "the server presented none",
        _ => return None,
    };
    Some(format!("{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_names_the_settings() {
        assert!(client_config(None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("missing.pem") && err.contains("--ca-file"),
            "{err}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk\n").unwrap();
        let err = client_config(Some(&junk)).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn certificate_errors_are_found_behind_io_errors() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let nested = io::Error::other(io);
        let wrapped = anyhow::Error::new(nested).context("connecting");
        let message = rejected_certificate(wrapped.as_ref()).unwrap();
        assert!(
            message.starts_with("the control plane's certificate was rejected (it is not signed by a trusted certificate authority"),
            "{message}"
        );
        assert!(message.ends_with("PADDOCK_CA_FILE"), "{message}");
        let other = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::General("x".into()),
        );
        assert_eq!(rejected_certificate(&other), None);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(rejected_certificate(&refused), None);
    }
}
