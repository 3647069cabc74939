//! TLS for the secure client port: the rustls server configuration built from PEM files, rebuilt when
//! the files change, and the `x509` identity of a client certificate.
//!
//! TLS 1.2 and 1.3 (rustls with the ring provider). The certificate, key and CA files are checked for
//! a newer modification time at most once a second, on accept; a change rebuilds the configuration for
//! the connections accepted after it (established ones keep theirs). A rebuild that fails (a half
//! written file, a key that does not match) is logged and the previous configuration kept.
//!
//! Client certificates: with a CA file the server asks for one and verifies it against the CA;
//! `want` lets clients without one in, `need` refuses them (ZooKeeper's `ssl.clientAuth`, whose
//! default is `need`). A verified certificate's subject, in RFC 2253 form as Java's
//! `X500Principal.getName()` prints it, becomes the session's `x509` identity (ZooKeeper's
//! `X509AuthenticationProvider`).
//!
//! Left out: revocation (CRL, OCSP), hostname checks of client certificates, PKCS#12/JKS stores
//! (convert them to PEM with openssl).

use parking_lot::Mutex;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The files the configuration is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// CAs for client certificates, PEM; `None`: no client certificates asked for.
    pub ca: Option<PathBuf>,
    /// Whether a client certificate is required (`need`) or optional (`want`).
    pub require_client_cert: bool,
}

/// The current server configuration, rebuilt when its files change.
pub struct Reloading {
    files: TlsFiles,
    inner: Mutex<Current>,
}

struct Current {
    config: Arc<ServerConfig>,
    mtimes: Vec<Option<SystemTime>>,
    checked: Instant,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&PathBuf> {
        let mut v = vec![&self.cert, &self.key];
        v.extend(self.ca.as_ref());
        v
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Builds the rustls configuration; the error names the file and what is wrong with it.
    pub fn build(&self) -> Result<ServerConfig, String> {
        // The workspace pins rustls with the ring provider; ring's default provider is deprecated
        // only for lacking post-quantum key exchange, which ZooKeeper's Java clients do not offer.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("TLS certificate file {}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "TLS certificate file {} holds no CERTIFICATE block",
                self.cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("TLS key file {}: {e}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match &self.ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                    .and_then(|it| it.collect::<Result<_, _>>())
                    .map_err(|e| format!("TLS CA file {}: {e}", ca.display()))?;
                for c in cas {
                    roots
                        .add(c)
                        .map_err(|e| format!("TLS CA file {}: {e}", ca.display()))?;
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let v = if self.require_client_cert {
                    v
                } else {
                    v.allow_unauthenticated()
                };
                let v = v
                    .build()
                    .map_err(|e| format!("TLS CA file {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(v)
            }
        };
        builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "TLS certificate {} and key {}: {e}",
                self.cert.display(),
                self.key.display()
            )
        })
    }
}

impl Reloading {
    /// Builds the first configuration; an error here stops the node from starting.
    pub fn new(files: TlsFiles) -> Result<Reloading, String> {
        let config = Arc::new(files.build()?);
        let mtimes = files.mtimes();
        Ok(Reloading {
            files,
            inner: Mutex::new(Current {
                config,
                mtimes,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for a new connection, rebuilt first if a file changed.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut cur = self.inner.lock();
        if cur.checked.elapsed() >= Duration::from_secs(1) {
            cur.checked = Instant::now();
            let mtimes = self.files.mtimes();
            if mtimes != cur.mtimes {
                match self.files.build() {
                    Ok(c) => {
                        tracing::info!(cert = %self.files.cert.display(), "client TLS files changed: new connections use the new certificate");
                        cur.config = Arc::new(c);
                        cur.mtimes = mtimes;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "client TLS files changed but do not load: keeping the previous certificate (fix the files; they are checked again each second on accept)");
                    }
                }
            }
        }
        cur.config.clone()
    }
}

/// The subject of a DER certificate in RFC 2253 form (`CN=client,O=Example,C=DE`), or `None` when
/// the certificate does not parse.
pub fn subject_dn(cert: &[u8]) -> Option<String> {
    let (cert_body, _) = der(cert, 0x30)?;
    let (mut tbs, _) = der(cert_body, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs, 0xa0)?.1; // version
    }
    tbs = der(tbs, 0x02)?.1; // serial
    tbs = der(tbs, 0x30)?.1; // signature algorithm
    tbs = der(tbs, 0x30)?.1; // issuer
    tbs = der(tbs, 0x30)?.1; // validity
    let (mut name, _) = der(tbs, 0x30)?;
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (mut set, rest) = der(name, 0x31)?;
        name = rest;
        let mut atvs = Vec::new();
        while !set.is_empty() {
            let (atv, rest) = der(set, 0x30)?;
            set = rest;
            let (oid, value_tlv) = der(atv, 0x06)?;
            atvs.push(format!("{}={}", oid_name(oid), value(value_tlv)?));
        }
        rdns.push(atvs.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// One DER element with the expected tag: (its contents, what follows it).
fn der(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = b.split_first()?;
    if t != tag {
        return None;
    }
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// Java's RFC 2253 keywords; other attribute types print as dotted OIDs.
fn oid_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x09] => "STREET".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID".into(),
        _ => {
            let mut parts = Vec::new();
            if let Some((&first, rest)) = oid.split_first() {
                parts.push((first / 40) as u64);
                parts.push((first % 40) as u64);
                let mut v = 0u64;
                for &b in rest {
                    v = (v << 7) | (b & 0x7f) as u64;
                    if b & 0x80 == 0 {
                        parts.push(v);
                        v = 0;
                    }
                }
            }
            parts
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(".")
        }
    }
}

/// An attribute value: strings escaped as RFC 2253 says, anything else as `#` and the DER in hex.
fn value(tlv: &[u8]) -> Option<String> {
    let tag = *tlv.first()?;
    let text = match tag {
        // UTF8String, PrintableString, IA5String, TeletexString (read as Latin-1 would be wrong for
        // multi-byte; names in practice are ASCII there).
        0x0c | 0x13 | 0x16 | 0x14 => der(tlv, tag)
            .and_then(|(v, _)| std::str::from_utf8(v).ok())
            .map(str::to_string),
        0x1e => der(tlv, tag).and_then(|(v, _)| {
            let units: Vec<u16> = v
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }),
        _ => None,
    };
    Some(match text {
        Some(t) => escape(&t),
        None => {
            let (body, _) = der(tlv, tag)?;
            let len = tlv.len() - body.len();
            format!(
                "#{}",
                tlv[..len + body.len()]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        }
    })
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let n = s.chars().count();
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_in_rfc2253_order() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Roster, Inc");
        dn.push(rcgen::DnType::CommonName, "client one");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_dn(cert.der()).as_deref(),
            Some("CN=client one,O=Roster\\, Inc,C=DE")
        );
        assert_eq!(subject_dn(b"\x30\x03\x02\x01"), None);
        assert_eq!(subject_dn(b""), None);
        assert_eq!(
            oid_name(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            "1.2.840.113549.1.9.1"
        );
    }

    #[test]
    fn reload_keeps_old_config_on_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
            ca: None,
            require_client_cert: false,
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        let r = Reloading::new(files.clone()).unwrap();
        let first = r.current();
        std::fs::write(&files.cert, "not pem").unwrap();
        r.inner.lock().checked = Instant::now() - Duration::from_secs(2);
        r.inner.lock().mtimes = vec![None, None];
        assert!(
            Arc::ptr_eq(&first, &r.current()),
            "bad file replaced the config"
        );
        std::fs::write(&files.cert, cert.pem()).unwrap();
        r.inner.lock().checked = Instant::now() - Duration::from_secs(2);
        assert!(!Arc::ptr_eq(&first, &r.current()), "good file not reloaded");
        assert!(TlsFiles {
            cert: dir.path().join("missing"),
            ..files
        }
        .build()
        .is_err());
    }
}
