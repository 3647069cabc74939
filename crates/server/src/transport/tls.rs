//! TLS on the peer port: mutual TLS 1.3 (rustls, ring provider) with certificates from one cluster CA,
//! and the role a certificate gives its holder.
//!
//! With [`PeerTls`] set, the listener accepts only a TLS 1.3 handshake with a client certificate
//! signed by the cluster CA, and every outgoing link presents this node's certificate and checks that
//! the peer's is signed by the same CA and valid for the host it dialed (an IP address or DNS name of
//! its peer address). Without it, both sides speak plain TCP (allowed only on loopback unless the
//! operator said `--insecure-peers`: `crate::config`).
//!
//! Roles ([`PeerRole`]) come from names in the certificate, as `roster tls init` writes them: a node
//! certificate is valid for [`NODE_NAME`] (and its addresses), an administrator's for [`ADMIN_NAME`].
//! A node may do anything a peer does; an administrator only what `roster cluster` needs (the
//! listener enforces it, `transport::server`). A node's join must announce an address its certificate
//! names ([`PeerRole::may_announce`], checked by `cluster::service`), so a node certificate cannot be
//! used to add a member at another address.
//!
//! Left out: revocation lists, reloading certificates without a restart, binding a node id to a
//! certificate (ids are given at join time; any holder of a node certificate is trusted as a member).

use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The name every node certificate carries besides its addresses.
pub const NODE_NAME: &str = "roster-node";
/// The name an administrator's certificate (for `roster cluster ...`) carries.
pub const ADMIN_NAME: &str = "roster-admin";
/// Longest a TLS handshake may take on the listening side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The reading half of a peer connection, plain or TLS.
pub type PeerRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a peer connection, plain or TLS.
pub type PeerWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// This node's (or tool's) TLS material, ready for both directions.
pub struct PeerTls {
    /// `None` for a tool that only dials (its certificate need not be valid as a server's).
    server: Option<Arc<rustls::ServerConfig>>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

/// Who is at the other end of an accepted connection.
#[derive(Debug, Clone)]
pub enum PeerRole {
    /// Plain TCP: no TLS configured (loopback or `--insecure-peers`), everything allowed.
    Plain,
    /// A node certificate (kept to check the addresses it names).
    Node(CertificateDer<'static>),
    /// An administrator's certificate: `roster cluster` requests only.
    Admin,
}

impl PeerRole {
    /// Whether this peer may announce `peer_addr` (HOST:PORT) as its own: a node certificate must name
    /// the host; an administrator cannot join at all.
    pub fn may_announce(&self, peer_addr: &str) -> Result<(), String> {
        match self {
            PeerRole::Plain => Ok(()),
            PeerRole::Admin => Err("an administrator certificate cannot join a node".into()),
            PeerRole::Node(cert) => {
                let name = server_name(peer_addr)?;
                let parsed = ParsedCertificate::try_from(cert)
                    .map_err(|e| format!("certificate does not parse: {e}"))?;
                rustls::client::verify_server_name(&parsed, &name).map_err(|_| {
                    format!(
                        "the node's certificate is not valid for {}, the address it announces: make its certificate with that address (roster tls init --nodes NAME={})",
                        host_of(peer_addr),
                        host_of(peer_addr)
                    )
                })
            }
        }
    }
}

fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The name a dialer checks the listener's certificate against: the host part of `addr`.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host_of(addr).to_string())
        .map_err(|e| format!("{addr}: host is neither an IP address nor a DNS name: {e}"))
}

/// The ring provider (the workspace builds rustls with ring only). rustls 0.23.48 deprecates it for
/// lacking post-quantum key exchange, which only the aws-lc-rs provider has.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (expected one made by `roster tls init`)",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

impl PeerTls {
    /// A node's TLS: its certificate and key, and the cluster CA that signs every peer's.
    pub fn load_node(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, String> {
        Self::load(cert, key, ca, true)
    }

    /// A tool's TLS (`roster cluster ...`): dials only, with an administrator (or node) certificate.
    pub fn load_client(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, String> {
        Self::load(cert, key, ca, false)
    }

    fn load(cert: &Path, key: &Path, ca: &Path, server: bool) -> Result<PeerTls, String> {
        let chain = read_certs(cert)?;
        let key = read_key(key)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(ca)? {
            roots
                .add(c)
                .map_err(|e| format!("{} is not a usable CA certificate: {e}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let p = provider();
        let tls13 = &[&rustls::version::TLS13];
        let client = rustls::ClientConfig::builder_with_provider(p.clone())
            .with_protocol_versions(tls13)
            .map_err(|e| format!("TLS 1.3: {e}"))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("{} and its key do not go together: {e}", cert.display()))?;
        let server = if server {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, p.clone())
                .build()
                .map_err(|e| format!("CA {}: {e}", ca.display()))?;
            let config = rustls::ServerConfig::builder_with_provider(p)
                .with_protocol_versions(tls13)
                .map_err(|e| format!("TLS 1.3: {e}"))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .map_err(|e| format!("{} and its key do not go together: {e}", cert.display()))?;
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(PeerTls {
            server,
            client: Arc::new(client),
        })
    }
}

fn split<S: AsyncRead + AsyncWrite + Send + 'static>(s: S) -> (PeerRead, PeerWrite) {
    let (r, w) = tokio::io::split(s);
    (Box::new(r), Box::new(w))
}

/// Dials `addr` and, with `tls`, runs the TLS handshake (checking the listener's certificate against
/// the cluster CA and `addr`'s host).
pub async fn dial(addr: &str, tls: Option<&PeerTls>) -> std::io::Result<(PeerRead, PeerWrite)> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Some(tls) => {
            let name = server_name(addr).map_err(std::io::Error::other)?;
            let s = tokio_rustls::TlsConnector::from(tls.client.clone())
                .connect(name, stream)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), TlsFailure(e)))?;
            Ok(split(s))
        }
    }
}

/// Runs the listening side's TLS handshake on an accepted connection (or nothing, without `tls`),
/// and tells who the dialer is.
pub async fn accept(
    stream: TcpStream,
    tls: Option<&PeerTls>,
) -> std::io::Result<(PeerRead, PeerWrite, PeerRole)> {
    let Some(config) = tls.and_then(|t| t.server.clone()) else {
        let (r, w) = stream.into_split();
        return Ok((Box::new(r), Box::new(w), PeerRole::Plain));
    };
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let s = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(r) => r.map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake: {e}")))?,
        Err(_) => {
            return Err(std::io::Error::other(format!(
                "no TLS handshake within {HANDSHAKE_TIMEOUT:?}"
            )))
        }
    };
    let cert = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| std::io::Error::other("no client certificate"))?;
    let role = role_of(cert).map_err(std::io::Error::other)?;
    let (r, w) = split(s);
    Ok((r, w, role))
}

/// The role a CA-signed certificate gives: node if it names [`NODE_NAME`], admin if [`ADMIN_NAME`].
fn role_of(cert: CertificateDer<'static>) -> Result<PeerRole, String> {
    let parsed = ParsedCertificate::try_from(&cert)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let named = |n: &'static str| {
        ServerName::try_from(n)
            .map(|name| rustls::client::verify_server_name(&parsed, &name).is_ok())
            .unwrap_or(false)
    };
    if named(NODE_NAME) {
        Ok(PeerRole::Node(cert.clone()))
    } else if named(ADMIN_NAME) {
        Ok(PeerRole::Admin)
    } else {
        Err(format!(
            "the certificate is signed by the cluster CA but names neither {NODE_NAME} nor {ADMIN_NAME}: make it with `roster tls init`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_server_names() {
        assert_eq!(host_of("10.0.0.1:2888"), "10.0.0.1");
        assert_eq!(host_of("[::1]:2888"), "::1");
        assert_eq!(host_of("db-1.example:2888"), "db-1.example");
        assert!(matches!(
            server_name("10.0.0.1:2888").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("db-1.example:2888").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn missing_files_say_which() {
        let e = PeerTls::load_node(
            Path::new("/nonexistent/n.pem"),
            Path::new("/nonexistent/n-key.pem"),
            Path::new("/nonexistent/ca.pem"),
        )
        .unwrap_err();
        assert!(e.contains("/nonexistent/n.pem"), "{e}");
    }
}

/// A dialer's TLS handshake error, kept whole so [`is_certificate_failure`] can look inside it.
#[derive(Debug)]
struct TlsFailure(std::io::Error);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake: {}", self.0)
    }
}

impl std::error::Error for TlsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `e` (from [`dial`], or a read or write on a dialed connection) is a certificate failure:
/// the listener's certificate is not from this node's CA or not for the address dialed, or the
/// listener refused this node's certificate (with TLS 1.3 its alert arrives on the first read).
/// Such a failure is permanent: retrying with the same certificates cannot succeed.
pub fn is_certificate_failure(e: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|i| i as _);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return match r {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    true
                }
                rustls::Error::AlertReceived(a) => matches!(
                    a,
                    A::BadCertificate
                        | A::UnsupportedCertificate
                        | A::CertificateRevoked
                        | A::CertificateExpired
                        | A::CertificateUnknown
                        | A::UnknownCA
                        | A::AccessDenied
                        | A::CertificateRequired
                ),
                _ => false,
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            cur = io.get_ref().map(|i| i as _);
        } else {
            cur = err.source();
        }
    }
    false
}
