//! Server configuration: every setting with its default, loadable from an optional TOML file.
//!
//! Precedence (highest first): command-line flags, `ROSTER_*` environment variables, the TOML file
//! (`--config`), then the defaults here. The binary's clap parser handles flags and environment and sets
//! the fields it was given over [`Config::from_file`] (or [`Config::default`]). The defaults make
//! `roster serve` a usable single node with no file at all.
//!
//! Ensemble settings: `peer_addr` (the peer port, also announced to the other nodes), `join` (a member's
//! peer address, for a pristine node to join its cluster) and `target_voters`. Peer TLS:
//! `peer_tls_cert`, `peer_tls_key`, `peer_tls_ca` (all three or none); without them a node refuses a
//! peer address off loopback unless `insecure_peers` says so ([`Config::validate`]).
//!
//! Client security: `secure_client_addr` with `client_tls_cert`/`client_tls_key` (and
//! `client_tls_ca`, `client_tls_client_auth` for client certificates) opens a TLS port beside the plain
//! one; `sasl_users_file` enables SASL DIGEST-MD5 logins. See docs/security.md. Both the client and
//! the peer certificates are reloaded when their files change (`net::tls`, `transport::tls`).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// All server settings. Field docs are the `roster serve --help` texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address for ZooKeeper clients and four-letter words. `None` (`"off"` in a file or flag): no plain
    /// client port: clients use the TLS port (`secure_client_addr`) or, for an embedded node (see
    /// `roster-embed`), connect in process only.
    #[serde(with = "addr_or_off")]
    pub client_addr: Option<SocketAddr>,
    /// Directory for the Raft log, snapshots and metadata; created if missing.
    pub data_dir: PathBuf,
    /// Smallest session timeout granted, ms (ZooKeeper: minSessionTimeout).
    pub min_session_timeout_ms: i32,
    /// Largest session timeout granted, ms (ZooKeeper: maxSessionTimeout).
    pub max_session_timeout_ms: i32,
    /// Largest frame accepted from a client, bytes (ZooKeeper: jute.maxbuffer).
    pub max_frame_bytes: usize,
    /// Most concurrent connections from one client IP address; 0 means no limit (ZooKeeper: maxClientCnxns).
    pub max_connections_per_ip: usize,
    /// Most watches one connection may hold; 0 means no limit.
    pub max_watches_per_session: usize,
    /// Four-letter words answered on the client port: a comma-separated list, or `*` for all.
    pub four_letter_words: String,
    /// Digest of the super user, `super:<base64 sha1>` as made by `roster digest super:PASSWORD`
    /// (ZooKeeper: zookeeper.DigestAuthenticationProvider.superDigest). Unset: no super user.
    pub super_digest: Option<String>,
    /// Whether TTL nodes may be created (ZooKeeper: extendedTypesEnabled, off there by default).
    pub ttl_nodes: bool,
    /// Take a snapshot after this many log entries since the last one, and not before half as many
    /// entries as the tree has znodes (`crate::raft::snapshot_policy`). Each node draws its own
    /// interval between three quarters of this and this, so cluster members snapshot at different
    /// times.
    pub snapshot_every: u64,
    /// How often session deadlines are checked, ms. Expiry happens within one tick after the timeout.
    pub session_tick_ms: u64,
    /// Make every read linearizable: each read first passes a Raft read barrier (as `sync` does),
    /// so it reflects every write acknowledged anywhere before it was sent. Costs a leader round trip
    /// per read; off by default (ZooKeeper's guarantee: reads are sequentially consistent, `sync` then
    /// read is linearizable).
    pub linearizable_reads: bool,
    /// On a graceful shutdown (SIGTERM, Ctrl-C), leave the cluster first: the node is removed from
    /// the membership (a learner is promoted if voters fall short of the target) instead of being
    /// counted as a down voter. Off by default: a restarted node rejoins as it was.
    pub leave_on_shutdown: bool,
    /// Log filter (tracing EnvFilter syntax), for example `info` or `roster_server=debug`.
    pub log: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Address for the other Roster nodes (Raft replication, forwarded writes, joins); announced to the
    /// cluster as is, so it must be reachable from the other nodes.
    pub peer_addr: SocketAddr,
    /// Peer address (HOST:PORT) of any member of an existing cluster: a node with an empty data
    /// directory joins that cluster instead of starting a new one. Ignored once the node has an identity.
    pub join: Option<String>,
    /// Log entries kept behind the latest snapshot (for followers slightly behind); older entries are
    /// purged, and a node that needs them gets the snapshot instead.
    pub snapshot_log_keep: u64,
    /// How many voters the leader aims for: a joining node becomes a voter while the cluster has fewer,
    /// and a learner (observer) otherwise.
    pub target_voters: usize,
    /// Address of the admin HTTP port (metrics, JSON API, event stream, web view; ZooKeeper's
    /// AdminServer port), or `off`. If the port is taken the node runs without it and says so.
    pub admin_addr: String,
    /// On the leader: a voter that has acknowledged nothing for this long (ms) is demoted to a learner
    /// and a caught-up learner promoted in its place, in one joint-consensus change, so the cluster keeps
    /// `target_voters` voters while an instance is dead. 0 (the default): never; a dead voter stays a
    /// voter until it comes back or is removed (`roster cluster remove`). See docs/embedding.md.
    pub replace_dead_voters_ms: u64,
    /// Record Prometheus metrics and serve them at the admin port's `/metrics`. `false` records
    /// nothing at all (the cost measured in BENCHMARKS.md is the difference).
    pub metrics: bool,
    /// File descriptors kept free for storage and peers: client connections are refused (counted
    /// with reason `descriptors`) once this process's open descriptors reach its limit minus this.
    pub fd_reserve: u64,
    /// A connection that has not completed its handshake (ConnectRequest or four-letter word) within
    /// this many ms is closed (ZooKeeper: zookeeper.nio.sessionlessCnxnTimeout, 10 s).
    pub handshake_timeout_ms: u64,
    /// Most bytes of replies and watch events queued for one client that does not read them; a
    /// connection over it is closed as a slow reader (its session lives on until its timeout). At
    /// least twice `max_frame_bytes` is used, so one reply always fits.
    pub max_outgoing_bytes: usize,
    /// This node's peer certificate (PEM), signed by the cluster CA, as `roster tls init` writes it.
    /// With `peer_tls_key` and `peer_tls_ca`: every peer connection is mutual TLS 1.3.
    pub peer_tls_cert: Option<PathBuf>,
    /// The private key of `peer_tls_cert` (PEM).
    pub peer_tls_key: Option<PathBuf>,
    /// The cluster CA certificate (PEM): peers must present a certificate it signed.
    pub peer_tls_ca: Option<PathBuf>,
    /// Allow plain-text, unauthenticated peers on an address other than loopback (anyone who reaches
    /// the peer port can then join, remove members and vote). Only for networks you fully trust.
    pub insecure_peers: bool,
    /// Address of the TLS client port (ZooKeeper: secureClientPort), beside the plain `client_addr`.
    /// Needs `client_tls_cert` and `client_tls_key`. Unset: no TLS port.
    pub secure_client_addr: Option<SocketAddr>,
    /// PEM file with the TLS port's certificate chain (leaf first). Reloaded when it changes.
    pub client_tls_cert: Option<PathBuf>,
    /// PEM file with the TLS port's private key (PKCS#8, PKCS#1 or SEC1). Reloaded when it changes.
    pub client_tls_key: Option<PathBuf>,
    /// PEM file with the CAs that client certificates must chain to. Set: clients are asked for a
    /// certificate (see `client_tls_client_auth`), whose subject becomes their `x509` identity.
    pub client_tls_ca: Option<PathBuf>,
    /// With `client_tls_ca`: `want` (a client may present a certificate; one that does not verify is
    /// refused) or `need` (every client must present one) (ZooKeeper: ssl.clientAuth).
    pub client_tls_client_auth: String,
    /// JAAS file whose `Server` section lists SASL users (`user_bob="secret";`, as ZooKeeper's): enables
    /// SASL DIGEST-MD5 logins, giving the session the identity `sasl:bob`. Read at each login.
    pub sasl_users_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client_addr: Some("127.0.0.1:2181".parse().expect("valid default address")),
            data_dir: PathBuf::from("roster-data"),
            min_session_timeout_ms: 4_000,
            max_session_timeout_ms: 40_000,
            max_frame_bytes: roster_proto::DEFAULT_MAX_FRAME,
            max_connections_per_ip: 2_000,
            max_watches_per_session: 1_000_000,
            four_letter_words: "*".to_string(),
            super_digest: None,
            ttl_nodes: true,
            snapshot_every: 100_000,
            session_tick_ms: 20,
            linearizable_reads: false,
            leave_on_shutdown: false,
            log: "info,openraft=error".to_string(),
            log_format: "text".to_string(),
            peer_addr: "127.0.0.1:2888".parse().expect("valid default address"),
            join: None,
            target_voters: 3,
            admin_addr: "127.0.0.1:8080".to_string(),
            metrics: true,
            replace_dead_voters_ms: 0,
            snapshot_log_keep: 1_000,
            fd_reserve: 128,
            handshake_timeout_ms: 10_000,
            max_outgoing_bytes: 16 * 1024 * 1024,
            peer_tls_cert: None,
            peer_tls_key: None,
            peer_tls_ca: None,
            insecure_peers: false,
            secure_client_addr: None,
            client_tls_cert: None,
            client_tls_key: None,
            client_tls_ca: None,
            client_tls_client_auth: "want".to_string(),
            sasl_users_file: None,
        }
    }
}

/// A configuration problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error(
        "config file {path} is invalid: {message} (see `roster serve --help` for the settings)"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
}

impl Config {
    /// Reads a TOML file; missing keys keep their defaults, unknown keys are errors.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.admin_socket()?;
        if self.min_session_timeout_ms <= 0
            || self.min_session_timeout_ms > self.max_session_timeout_ms
        {
            return Err(ConfigError::Invalid {
                setting: "min-session-timeout-ms / max-session-timeout-ms",
                message: format!(
                    "need 0 < min <= max, got min {} and max {}",
                    self.min_session_timeout_ms, self.max_session_timeout_ms
                ),
            });
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > i32::MAX as usize {
            return Err(ConfigError::Invalid {
                setting: "max-frame-bytes",
                message: format!(
                    "must be between 1024 and 2^31-1, got {}",
                    self.max_frame_bytes
                ),
            });
        }
        if self.handshake_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                setting: "handshake-timeout-ms",
                message: "must be at least 1".into(),
            });
        }
        if self.session_tick_ms == 0 || self.session_tick_ms > 1000 {
            return Err(ConfigError::Invalid {
                setting: "session-tick-ms",
                message: format!("must be between 1 and 1000, got {}", self.session_tick_ms),
            });
        }
        if self.snapshot_every == 0 {
            return Err(ConfigError::Invalid {
                setting: "snapshot-every",
                message: "must be at least 1".into(),
            });
        }
        if let Some(d) = &self.super_digest {
            if !d.contains(':') {
                return Err(ConfigError::Invalid {
                    setting: "super-digest",
                    message:
                        "expected user:base64digest, as printed by `roster digest super:PASSWORD`"
                            .into(),
                });
            }
        }
        if self.secure_client_addr.is_some()
            && (self.client_tls_cert.is_none() || self.client_tls_key.is_none())
        {
            return Err(ConfigError::Invalid {
                setting: "secure-client-addr",
                message: "the TLS port needs client-tls-cert and client-tls-key (PEM files)".into(),
            });
        }
        if !matches!(self.client_tls_client_auth.as_str(), "want" | "need") {
            return Err(ConfigError::Invalid {
                setting: "client-tls-client-auth",
                message: format!(
                    "must be want or need, got {:?}",
                    self.client_tls_client_auth
                ),
            });
        }
        if self.target_voters == 0 {
            return Err(ConfigError::Invalid {
                setting: "target-voters",
                message: "must be at least 1".into(),
            });
        }
        if let Some(j) = &self.join {
            if !j.contains(':') {
                return Err(ConfigError::Invalid {
                    setting: "join",
                    message: format!("expected HOST:PEERPORT of a cluster member, got {j:?}"),
                });
            }
        }
        self.peer_tls()?;
        if self.log_format != "text" && self.log_format != "json" {
            return Err(ConfigError::Invalid {
                setting: "log-format",
                message: "must be text or json".into(),
            });
        }
        Ok(())
    }

    /// The peer TLS files (certificate, key, CA), or `None` for plain-text peers. Errors when only
    /// some are set, or when peers would be plain text on an address off loopback without
    /// `insecure_peers`.
    pub fn peer_tls(&self) -> Result<Option<(&Path, &Path, &Path)>, ConfigError> {
        match (&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca) {
            (Some(c), Some(k), Some(a)) => Ok(Some((c, k, a))),
            (None, None, None) if self.peer_addr.ip().is_loopback() || self.insecure_peers => {
                Ok(None)
            }
            (None, None, None) => Err(ConfigError::Invalid {
                setting: "peer-addr",
                message: format!(
                    "{} is not a loopback address, and peers without TLS are unauthenticated (anyone who reaches the port can join, remove members and vote). \
                     Make certificates with `roster tls init --dir DIR --nodes n1=HOST1,n2=HOST2,...` and pass \
                     --peer-tls-cert DIR/n1.pem --peer-tls-key DIR/n1-key.pem --peer-tls-ca DIR/ca.pem \
                     (or, on a network you fully trust, --insecure-peers); see docs/security.md",
                    self.peer_addr
                ),
            }),
            _ => Err(ConfigError::Invalid {
                setting: "peer-tls-cert / peer-tls-key / peer-tls-ca",
                message: "set all three (this node's certificate, its key and the cluster CA, as `roster tls init` writes them) or none".into(),
            }),
        }
    }

    /// Whether a four-letter word is allowed by the `four_letter_words` list.
    pub fn four_letter_word_allowed(&self, word: &str) -> bool {
        self.four_letter_words
            .split(',')
            .map(str::trim)
            .any(|w| w == "*" || w == word)
    }

    /// The admin HTTP address, or `None` when it is `off` (or empty).
    pub fn admin_socket(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.admin_addr.trim() {
            "" | "off" => Ok(None),
            a => a.parse().map(Some).map_err(|_| ConfigError::Invalid {
                setting: "admin-addr",
                message: format!("{a:?} is not HOST:PORT (an IP address and a port) or off"),
            }),
        }
    }

    /// How often the leader checks for expired sessions and TTL nodes ([`Config::session_tick_ms`]).
    pub fn session_tick(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.session_tick_ms)
    }

    /// Clamps a requested session timeout into `[min, max]`.
    pub fn negotiate_timeout(&self, requested: i32) -> i32 {
        requested.clamp(self.min_session_timeout_ms, self.max_session_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_file_overrides() {
        Config::default().validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("roster.toml");
        std::fs::write(
            &p,
            "client_addr = \"127.0.0.1:3000\"\nmax_session_timeout_ms = 60000\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.client_addr.map(|a| a.port()), Some(3000));
        assert_eq!(c.max_session_timeout_ms, 60000);
        assert_eq!(c.min_session_timeout_ms, 4000);
        std::fs::write(&p, "no_such_setting = 1\n").unwrap();
        assert!(Config::from_file(&p)
            .unwrap_err()
            .to_string()
            .contains("no_such_setting"));
    }

    #[test]
    fn the_plain_client_port_can_be_off() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("roster.toml");
        std::fs::write(&p, "client_addr = \"off\"\n").unwrap();
        assert_eq!(Config::from_file(&p).unwrap().client_addr, None);
        std::fs::write(&p, "client_addr = \"nowhere\"\n").unwrap();
        let e = Config::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("not IP:PORT or off"), "{e}");
        assert_eq!(parse_addr_or_off("OFF"), Ok(None));
        assert_eq!(
            parse_addr_or_off("127.0.0.1:2281"),
            Ok(Some("127.0.0.1:2281".parse().unwrap()))
        );
    }

    #[test]
    fn ensemble_settings() {
        let c = Config::default();
        assert_eq!(c.peer_addr.port(), 2888);
        assert_eq!(
            (c.join.as_deref(), c.target_voters, c.snapshot_log_keep),
            (None, 3, 1_000)
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("roster.toml");
        std::fs::write(
            &p,
            "peer_addr = \"127.0.0.1:3888\"\njoin = \"10.0.0.1:2888\"\ntarget_voters = 5\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(
            (c.peer_addr.port(), c.join.as_deref(), c.target_voters),
            (3888, Some("10.0.0.1:2888"), 5)
        );
        c.validate().unwrap();
        let mut bad = c.clone();
        bad.target_voters = 0;
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.join = Some("nohost".into());
        assert!(bad.validate().unwrap_err().to_string().contains("join"));
    }

    #[test]
    fn peers_off_loopback_need_tls_or_the_insecure_flag() {
        let mut c = Config {
            peer_addr: "10.0.0.1:2888".parse().unwrap(),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("roster tls init") && e.contains("--insecure-peers"),
            "the error says how to fix it: {e}"
        );
        c.insecure_peers = true;
        assert_eq!(c.peer_tls().unwrap(), None);
        c.insecure_peers = false;
        c.peer_tls_cert = Some("n1.pem".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("all three"), "{e}");
        c.peer_tls_key = Some("n1-key.pem".into());
        c.peer_tls_ca = Some("ca.pem".into());
        let (cert, key, ca) = c.peer_tls().unwrap().unwrap();
        assert_eq!(
            (cert, key, ca),
            (
                Path::new("n1.pem"),
                Path::new("n1-key.pem"),
                Path::new("ca.pem")
            )
        );
        // The single-machine default needs nothing.
        assert_eq!(Config::default().peer_tls().unwrap(), None);
        let v6 = Config {
            peer_addr: "[::1]:2888".parse().unwrap(),
            ..Config::default()
        };
        v6.validate().unwrap();
    }

    #[test]
    fn timeout_clamp_and_whitelist() {
        let mut c = Config::default();
        assert_eq!(c.negotiate_timeout(100), 4000);
        assert_eq!(c.negotiate_timeout(100_000), 40_000);
        assert_eq!(c.negotiate_timeout(10_000), 10_000);
        c.four_letter_words = "ruok, srvr".into();
        assert!(c.four_letter_word_allowed("srvr"));
        assert!(!c.four_letter_word_allowed("dump"));
        c.min_session_timeout_ms = 50_000;
        assert!(c.validate().is_err());
    }
}

/// An address, or `"off"` for none (`client_addr`).
mod addr_or_off {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.collect_str(a),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_addr_or_off(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses `HOST:PORT` (an IP address and port), or `off` for none.
pub fn parse_addr_or_off(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|e| format!("{s:?} is not IP:PORT or off ({e})"))
}
