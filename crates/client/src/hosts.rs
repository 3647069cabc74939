//! Connect strings: `host1:2181,host2:2182,[::1]:2183/optional/chroot`.
//!
//! The format is the Java client's (`ConnectStringParser`): comma-separated `host[:port]` entries (the
//! port defaults to 2181, IPv6 literals go in brackets), then an optional chroot starting at the first
//! `/`. `HostList` hands the servers out in a random order, shuffled once, and then round-robin
//! (`StaticHostProvider`): random so that many clients spread over the ensemble, round-robin so a
//! client that lost one server tries every other before coming back to it.

use crate::error::{Error, Result};
use crate::path::Chroot;
use rand::seq::SliceRandom;

/// The port a host without one gets.
pub const DEFAULT_PORT: u16 = 2181;

/// One server of a connect string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed connect string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectString {
    /// The servers, in the order given.
    pub hosts: Vec<HostAddr>,
    /// The chroot suffix.
    pub chroot: Chroot,
}

impl std::str::FromStr for ConnectString {
    type Err = Error;

    fn from_str(s: &str) -> Result<ConnectString> {
        let bad = |why: String| Error::BadArguments(format!("invalid connect string {s:?}: {why}"));
        let (list, chroot) = match s.find('/') {
            Some(i) => (&s[..i], Chroot::new(&s[i..])?),
            None => (s, Chroot::default()),
        };
        let mut hosts = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
                let (host, after) = rest
                    .split_once(']')
                    .ok_or_else(|| bad(format!("unclosed [ in {entry:?}")))?;
                match after.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None if after.is_empty() => (host, None),
                    None => return Err(bad(format!("junk after ] in {entry:?}"))),
                }
            } else {
                match entry.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (entry, None),
                }
            };
            if host.is_empty() {
                return Err(bad(format!("empty host in {entry:?}")));
            }
            let port = match port {
                Some(p) => p
                    .parse::<u16>()
                    .map_err(|_| bad(format!("bad port in {entry:?}")))?,
                None => DEFAULT_PORT,
            };
            hosts.push(HostAddr {
                host: host.to_string(),
                port,
            });
        }
        if hosts.is_empty() {
            return Err(bad("no servers".to_string()));
        }
        Ok(ConnectString { hosts, chroot })
    }
}

/// The servers in a random order, handed out round-robin.
#[derive(Debug, Clone)]
pub(crate) struct HostList {
    hosts: Vec<HostAddr>,
    next: usize,
}

impl HostList {
    /// Shuffles `hosts` once.
    pub(crate) fn new(mut hosts: Vec<HostAddr>) -> HostList {
        hosts.shuffle(&mut rand::rng());
        HostList { hosts, next: 0 }
    }

    /// How many servers there are.
    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// The next server, and whether it starts a new round (every server was tried since the last one).
    pub(crate) fn next(&mut self) -> (HostAddr, bool) {
        let wrapped = self.next == 0;
        let h = self.hosts[self.next].clone();
        self.next = (self.next + 1) % self.hosts.len();
        (h, wrapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ConnectString> {
        s.parse()
    }

    #[test]
    fn parses_hosts_ports_and_chroot() {
        let c = parse("a:1, b ,[::1]:3,[fe80::1]/app/x").unwrap();
        let hosts: Vec<String> = c.hosts.iter().map(|h| h.to_string()).collect();
        assert_eq!(hosts, ["a:1", "b:2181", "[::1]:3", "[fe80::1]:2181"]);
        assert_eq!(c.chroot.root(), Some("/app/x"));
        assert_eq!(parse("127.0.0.1:2181/").unwrap().chroot.root(), None);
    }

    #[test]
    fn rejects_junk() {
        for s in ["", "/app", "a:x", "a:99999", "[::1", "a:1/bad/", ":5"] {
            assert!(parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn host_list_visits_every_server_each_round() {
        let hosts: Vec<HostAddr> = (0..5)
            .map(|i| HostAddr {
                host: format!("h{i}"),
                port: 1,
            })
            .collect();
        let mut list = HostList::new(hosts.clone());
        let mut round: Vec<String> = Vec::new();
        for i in 0..5 {
            let (h, wrapped) = list.next();
            assert_eq!(wrapped, i == 0);
            round.push(h.host);
        }
        round.sort();
        assert_eq!(round, ["h0", "h1", "h2", "h3", "h4"]);
        assert!(list.next().1);
    }
}
