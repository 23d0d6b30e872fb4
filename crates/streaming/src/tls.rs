//! HTTPS for the streaming server: PEM certificate chain and key, rustls with ring.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::error::StreamingError;

pub(crate) fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, StreamingError> {
    let certs = load_certificates(&tls.cert_file)?;
    let key =
        PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|err| tls_error(&tls.key_file, err))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| tls_error(&tls.cert_file, err))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|err| tls_error(&tls.cert_file, err))?;
    // Upgrades are HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, StreamingError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| tls_error(path, err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| tls_error(path, err))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> StreamingError {
    StreamingError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}
