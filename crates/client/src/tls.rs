//! TLS for the client: a rustls configuration from PEM files, for a server's secure client port
//! (ZooKeeper's `secureClientPort`, Roster's `secure_client_addr`).
//!
//! [`tls_config`] builds one from a CA file (the server certificate must chain to it and name the
//! host of the connect string, an IP address or a DNS name) and an optional client certificate and
//! key (presented to servers that ask; the server maps its subject to the `x509` ACL scheme). Put
//! it in [`crate::ClientOptions::tls`]. TLS 1.2 and 1.3, rustls with the ring provider.
//!
//! Left out: the system's trust store, PKCS#12/JKS files (convert them to PEM), revocation checks.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// A client TLS configuration trusting the CAs of `ca` (PEM), presenting `cert`/`key` (PEM) if given.
pub fn tls_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>> {
    let bad = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        Error::BadArguments(format!("TLS {what} file {}: {e}", p.display()))
    };
    // ring's default provider is deprecated only for lacking post-quantum key exchange, which the
    // ZooKeeper servers this talks to do not offer either; the workspace pins ring.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<std::result::Result<_, _>>())
        .map_err(|e| bad("CA", ca, &e))?;
    if cas.is_empty() {
        return Err(bad("CA", ca, &"no CERTIFICATE block"));
    }
    for c in cas {
        roots.add(c).map_err(|e| bad("CA", ca, &e))?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| Error::BadArguments(format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<std::result::Result<_, _>>())
                .map_err(|e| bad("client certificate", cert, &e))?;
            let k = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("client key", key, &e))?;
            builder
                .with_client_auth_cert(chain, k)
                .map_err(|e| bad("client certificate", cert, &e))?
        }
    };
    Ok(Arc::new(config))
}
