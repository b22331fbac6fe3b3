//! TLS for the link to the control plane: a rustls client configuration
//! (the `ring` provider, TLS 1.2 and 1.3) that trusts the webpki roots plus
//! optional extra CAs (a file, or PEM text in the environment), and the recognition of certificate errors,
//! which retrying cannot fix.
//!
//! There is deliberately no way to turn certificate verification off: a
//! self-hosted control plane's CA goes in `--ca-file` instead.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::config::ConfigError;

/// The client configuration: webpki roots, plus every certificate in the
/// PEM file `ca_file` and in the PEM text `ca_pem`.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    ca_pem: Option<&str>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |why: String| ConfigError::CaFile(format!("{}: {why}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| bad(format!("could not read PEM certificates ({err})")))?;
        add_cas(&mut roots, certs).map_err(bad)?;
    }
    if let Some(pem) = ca_pem {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| {
                ConfigError::CaPem(format!("could not read PEM certificates ({err})"))
            })?;
        add_cas(&mut roots, certs).map_err(ConfigError::CaPem)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| ConfigError::CaFile(format!("the TLS provider is unusable: {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The WebSocket upgrade is HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn add_cas(roots: &mut RootCertStore, certs: Vec<CertificateDer<'static>>) -> Result<(), String> {
    if certs.is_empty() {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".to_owned());
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|err| format!("not a usable CA certificate ({err})"))?;
    }
    Ok(())
}

/// Why the control plane's certificate was rejected, when `err` (from a TLS
/// handshake) is a certificate error; `None` for any other failure.
pub(crate) fn certificate_error(err: &io::Error) -> Option<String> {
    describe(find_rustls(err.get_ref()?)?)
}

/// `err` itself, or what it wraps when it is another `io::Error`.
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    find_rustls(err.downcast_ref::<io::Error>()?.get_ref()?)
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
    Some(format!("{what} ({err})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_roots_are_trusted_without_a_ca_file() {
        let config = client_config(None, None).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_bad_ca_file_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing), None).unwrap_err().to_string();
        assert!(err.starts_with("ca_file (--ca-file"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(&empty), None).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = client_config(None, Some("not a certificate\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ca_pem (--ca-pem"), "{err}");
    }

    #[test]
    fn only_certificate_errors_are_recognised() {
        let unknown = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let reason = certificate_error(&unknown).unwrap();
        assert!(reason.contains("trusted certificate authority"), "{reason}");
        assert!(reason.contains("UnknownIssuer"), "{reason}");
        let other = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::General("handshake".into()),
        );
        assert_eq!(certificate_error(&other), None);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(certificate_error(&refused), None);
    }
}
