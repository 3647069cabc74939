//! `roster tls init`: makes what a cluster needs for authenticated, encrypted peers (rcgen): a cluster
//! CA, a certificate and key per node (valid for `roster-node` and the node's addresses, usable as
//! server and client), and an administrator's certificate for `roster cluster ...` (valid for
//! `roster-admin`, client only). Run again with the same directory, it keeps the CA and adds or
//! replaces node certificates (a new node, or rotation before expiry).
//!
//! Left out: certificate revocation, join tokens, storing the CA key anywhere but the directory
//! (move `ca-key.pem` offline once the certificates are made).

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use roster_server::transport::tls::{ADMIN_NAME, NODE_NAME};
use std::path::{Path, PathBuf};

/// The CA's subject; kept the same when a later run signs with an existing CA key.
const CA_NAME: &str = "Roster cluster CA";

/// `roster tls ...`.
#[derive(clap::Subcommand)]
pub enum TlsCommand {
    /// Make a cluster CA (or reuse the one in --dir), a certificate per node and an administrator
    /// certificate, as PEM files: ca.pem, ca-key.pem, NAME.pem, NAME-key.pem, admin.pem, admin-key.pem.
    Init {
        /// Directory for the files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Nodes as NAME=HOST[+HOST...], comma-separated: each HOST (IP address or DNS name) is how the
        /// other nodes reach it, the host of its --peer-addr. Example: n1=10.0.0.1,n2=10.0.0.2,n3=10.0.0.3
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Validity of the node and administrator certificates, days (the CA gets ten years).
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

/// Runs a `roster tls` command.
pub fn run(cmd: TlsCommand) -> anyhow::Result<()> {
    match cmd {
        TlsCommand::Init { dir, nodes, days } => init(&dir, &nodes, days),
    }
}

/// Parses `NAME=HOST[+HOST...]`.
fn parse_node(spec: &str) -> anyhow::Result<(String, Vec<String>)> {
    let Some((name, hosts)) = spec.split_once('=') else {
        bail!("--nodes {spec:?}: expected NAME=HOST (for example n1=10.0.0.1)");
    };
    let ok_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok_name || name == "ca" || name == "admin" {
        bail!("--nodes {spec:?}: NAME must be letters, digits, - or _, and not ca or admin (it names the files)");
    }
    let hosts: Vec<String> = hosts
        .split('+')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    if hosts.is_empty() {
        bail!("--nodes {spec:?}: give at least one HOST after =");
    }
    for h in &hosts {
        if h.contains(':') && h.parse::<std::net::IpAddr>().is_err() {
            bail!("--nodes {spec:?}: {h:?} looks like HOST:PORT; give the host only (IP address or DNS name)");
        }
    }
    Ok((name.to_string(), hosts))
}

fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Today's date (UTC) plus `days` (negative for the past), as (year, month, day).
fn date_in(days: i64) -> (i32, u8, u8) {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 / 86_400)
        .unwrap_or(0);
    civil_from_days(today + days)
}

/// The proleptic Gregorian date of a count of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn init(dir: &Path, nodes: &[String], days: u32) -> anyhow::Result<()> {
    let nodes = nodes
        .iter()
        .map(|s| parse_node(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    // Valid from yesterday, so that a clock a little behind does not see a "not yet valid" certificate.
    let at = |days: i64| {
        let (y, m, d) = date_in(days);
        rcgen::date_time_ymd(y, m, d)
    };
    let ca_key = if ca_pem.exists() && ca_key_pem.exists() {
        let text = std::fs::read_to_string(&ca_key_pem)
            .with_context(|| format!("cannot read {}", ca_key_pem.display()))?;
        println!("using the existing CA in {}", ca_pem.display());
        KeyPair::from_pem(&text)
            .with_context(|| format!("{} is not a PEM private key", ca_key_pem.display()))?
    } else {
        let key = KeyPair::generate()?;
        let mut p = ca_params()?;
        p.not_before = at(-1);
        p.not_after = at(3653);
        let cert = p.self_signed(&key)?;
        write(&ca_pem, &cert.pem(), false)?;
        write(&ca_key_pem, &key.serialize_pem(), true)?;
        println!("wrote {} and {}", ca_pem.display(), ca_key_pem.display());
        key
    };
    let issuer = Issuer::new(ca_params()?, ca_key);
    let issue = |file: &str, names: Vec<String>, server: bool| -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, file);
        p.distinguished_name = dn;
        p.not_before = at(-1);
        p.not_after = at(i64::from(days));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = if server {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let cert = p.signed_by(&key, &issuer)?;
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}-key.pem")),
        );
        write(&c, &cert.pem(), false)?;
        write(&k, &key.serialize_pem(), true)?;
        println!("wrote {} and {}", c.display(), k.display());
        Ok(())
    };
    for (name, hosts) in &nodes {
        let mut names = vec![NODE_NAME.to_string()];
        names.extend(hosts.iter().cloned());
        issue(name, names, true)?;
    }
    if !dir.join("admin.pem").exists() || !dir.join("admin-key.pem").exists() {
        issue("admin", vec![ADMIN_NAME.to_string()], false)?;
    }
    if let Some((name, _)) = nodes.first() {
        let d = dir.display();
        println!(
            "\nstart node {name} with: --peer-tls-cert {d}/{name}.pem --peer-tls-key {d}/{name}-key.pem --peer-tls-ca {d}/ca.pem"
        );
        println!("run roster cluster commands with: roster cluster --tls-dir {d} status --server HOST:PEERPORT");
        println!("copy each node only its own NAME.pem, NAME-key.pem and ca.pem; keep ca-key.pem offline");
    }
    Ok(())
}

/// Client TLS for `roster cluster ...`: `--tls-dir DIR` (DIR/admin.pem, DIR/admin-key.pem,
/// DIR/ca.pem) or the three files one by one.
#[derive(clap::Args, Default)]
pub struct ClusterTlsOpts {
    /// Directory written by `roster tls init`: authenticate with its admin.pem and admin-key.pem and
    /// trust its ca.pem.
    #[arg(long, global = true, env = "ROSTER_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Client certificate (PEM) signed by the cluster CA (instead of --tls-dir).
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// The cluster CA certificate (PEM).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
}

impl ClusterTlsOpts {
    /// The TLS to dial with, or `None` for plain-text peers.
    pub fn load(&self) -> anyhow::Result<Option<roster_server::transport::tls::PeerTls>> {
        let (cert, key, ca) = match (&self.tls_dir, &self.cert, &self.key, &self.ca) {
            (None, None, None, None) => return Ok(None),
            (Some(d), None, None, None) => (
                d.join("admin.pem"),
                d.join("admin-key.pem"),
                d.join("ca.pem"),
            ),
            (None, Some(c), Some(k), Some(a)) => (c.clone(), k.clone(), a.clone()),
            _ => bail!("give either --tls-dir DIR or all three of --cert, --key and --ca"),
        };
        roster_server::transport::tls::PeerTls::load_client(&cert, &key, &ca)
            .map(Some)
            .map_err(|e| anyhow::anyhow!(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs() {
        assert_eq!(
            parse_node("n1=10.0.0.1+db1.example").unwrap(),
            ("n1".into(), vec!["10.0.0.1".into(), "db1.example".into()])
        );
        assert!(parse_node("n1").is_err());
        assert!(parse_node("ca=10.0.0.1").is_err());
        assert!(parse_node("n1=").is_err());
        assert!(parse_node("n1=10.0.0.1:2888").is_err());
        assert!(parse_node("n1=::1").is_ok());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
