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
//! Certificates are reloaded without a restart: when the certificate, key or CA file of a node
//! changes (checked at most once a second, on the next dial or accept), new connections use the new
//! files; links already open keep the session they negotiated. Files that do not load (a rotation
//! half done) are logged and the previous material stays in use.
//!
//! Left out: revocation lists, binding a node id to a certificate (ids are given at join time; any
//! holder of a node certificate is trusted as a member).

use parking_lot::Mutex;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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

/// This node's (or tool's) TLS material, ready for both directions, reloaded when its files change.
pub struct PeerTls {
    files: [PathBuf; 3],
    /// Whether a listening side is built (a node) or not (a tool that only dials).
    serves: bool,
    current: Mutex<Current>,
}

/// The configurations built from the files as they were at `mtimes`.
struct Current {
    configs: Configs,
    mtimes: Vec<Option<SystemTime>>,
    checked: Instant,
}

#[derive(Clone)]
struct Configs {
    /// `None` for a tool that only dials (its certificate need not be valid as a server's).
    server: Option<Arc<rustls::ServerConfig>>,
    client: Arc<rustls::ClientConfig>,
}

/// How often at most the files' modification times are looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

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

    fn load(cert: &Path, key: &Path, ca: &Path, serves: bool) -> Result<PeerTls, String> {
        let files = [cert.to_path_buf(), key.to_path_buf(), ca.to_path_buf()];
        let mtimes = mtimes(&files);
        let configs = build(cert, key, ca, serves)?;
        Ok(PeerTls {
            files,
            serves,
            current: Mutex::new(Current {
                configs,
                mtimes,
                checked: Instant::now(),
            }),
        })
    }

    /// The configurations for a new connection, rebuilt first if a file changed since the last look
    /// (at most once per [`RELOAD_CHECK`]). Files that do not load leave the previous ones in use.
    fn configs(&self) -> Configs {
        let mut cur = self.current.lock();
        if cur.checked.elapsed() >= RELOAD_CHECK {
            cur.checked = Instant::now();
            let now = mtimes(&self.files);
            if now != cur.mtimes {
                let [cert, key, ca] = &self.files;
                match build(cert, key, ca, self.serves) {
                    Ok(c) => {
                        tracing::info!(cert = %cert.display(), "peer TLS files changed: new peer connections use the new certificate");
                        cur.configs = c;
                        cur.mtimes = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "peer TLS files changed but do not load: keeping the previous certificate (fix the files; they are checked again each second when a peer connection opens)")
                    }
                }
            }
        }
        cur.configs.clone()
    }
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Builds both directions' configurations from the files; the error names the file at fault.
fn build(cert: &Path, key: &Path, ca: &Path, server: bool) -> Result<Configs, String> {
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
    Ok(Configs {
        server,
        client: Arc::new(client),
    })
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
            let s = tokio_rustls::TlsConnector::from(tls.configs().client)
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
    let Some(config) = tls.and_then(|t| t.configs().server) else {
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

    /// A CA, and a function issuing node certificates for 127.0.0.1 into `dir` as `name.pem` and
    /// `name-key.pem` (what `roster tls init` writes).
    fn test_ca(dir: &Path) -> impl Fn(&str) -> (PathBuf, PathBuf) + '_ {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        std::fs::write(
            dir.join("ca.pem"),
            ca.clone().self_signed(&ca_key).unwrap().pem(),
        )
        .unwrap();
        let issuer = Issuer::new(ca, ca_key);
        move |name: &str| {
            let key = KeyPair::generate().unwrap();
            let params =
                CertificateParams::new(vec![NODE_NAME.to_string(), "127.0.0.1".into()]).unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            let (c, k) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}-key.pem")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        }
    }

    /// Copies a new certificate and key over the files a node was started with.
    fn replace_with(new: (PathBuf, PathBuf), old: (&Path, &Path)) {
        std::fs::copy(&new.0, old.0).unwrap();
        std::fs::copy(&new.1, old.1).unwrap();
    }

    /// Makes the next connection look at the files again now, as if a second had passed and they
    /// had all changed.
    fn due_for_a_look(tls: &PeerTls) {
        let mut cur = tls.current.lock();
        cur.checked = Instant::now() - RELOAD_CHECK;
        cur.mtimes.clear();
    }

    /// The DER of the first certificate in a PEM file.
    fn first_der(path: &Path) -> Vec<u8> {
        read_certs(path).unwrap()[0].to_vec()
    }

    #[tokio::test]
    async fn rotated_certificates_are_used_by_new_connections_and_bad_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let issue = test_ca(dir.path());
        let (lc, lk) = issue("listener");
        let (dc, dk) = issue("dialer");
        let ca = dir.path().join("ca.pem");
        let listener_tls = Arc::new(PeerTls::load_node(&lc, &lk, &ca).unwrap());
        let dialer_tls = PeerTls::load_node(&dc, &dk, &ca).unwrap();
        let sock = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap().to_string();
        // Accepts connections, handing back the certificate each dialer presented.
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let acceptor = {
            let tls = listener_tls.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = sock.accept().await {
                    let role = accept(stream, Some(&tls)).await.map(|(_, _, role)| role);
                    let der = match role {
                        Ok(PeerRole::Node(cert)) => Ok(cert.to_vec()),
                        Ok(other) => Err(format!("role {other:?}")),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = seen_tx.send(der);
                }
            })
        };
        let connect = |tls: &PeerTls| {
            let addr = addr.clone();
            let client = tls.configs().client;
            async move {
                let stream = TcpStream::connect(&addr).await.unwrap();
                tokio_rustls::TlsConnector::from(client)
                    .connect(server_name(&addr).unwrap(), stream)
                    .await
                    .map(|_| ())
            }
        };
        let old = first_der(&dc);
        connect(&dialer_tls).await.unwrap();
        assert_eq!(seen.recv().await.unwrap().unwrap(), old);

        // A rotation half done (the key file not PEM): the previous material stays in use.
        std::fs::write(&dk, "not a key").unwrap();
        due_for_a_look(&dialer_tls);
        connect(&dialer_tls).await.unwrap();
        assert_eq!(
            seen.recv().await.unwrap().unwrap(),
            old,
            "a broken file replaced the certificate"
        );

        // The rotation finished: a new certificate from the same CA, used from the next connection.
        replace_with(issue("dialer-new"), (&dc, &dk));
        due_for_a_look(&dialer_tls);
        connect(&dialer_tls).await.unwrap();
        let new = first_der(&dc);
        assert_ne!(new, old);
        assert_eq!(
            seen.recv().await.unwrap().unwrap(),
            new,
            "the new certificate was not used"
        );

        // The listener's side reloads too: a new certificate for it is what the dialer now sees.
        replace_with(issue("listener-new"), (&lc, &lk));
        due_for_a_look(&listener_tls);
        let stream = TcpStream::connect(&addr).await.unwrap();
        let s = tokio_rustls::TlsConnector::from(dialer_tls.configs().client)
            .connect(server_name(&addr).unwrap(), stream)
            .await
            .unwrap();
        let presented = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        assert_eq!(presented, first_der(&lc));
        assert_eq!(seen.recv().await.unwrap().unwrap(), new);
        acceptor.abort();
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
