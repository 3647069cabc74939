//! Access control: checking a request's identities against a node's ACL, validating and expanding the ACL
//! of a create or setACL (ZooKeeper's `PrepRequestProcessor.fixupACL`), the digest scheme's hash (re-exported from `roster_proto`), and the
//! interned ACL table that keeps one copy of each distinct ACL list.
//!
//! # Identities
//! A request carries the session's identities (`auth: &[Id]`), put there by the server when it handled the
//! session's auth packets: `digest:user:base64(sha1(user:password))` for each `addauth digest`, `ip:<addr>`
//! for the connection's remote address (ZooKeeper adds it at connect time), and `super:` for a superuser
//! (ZooKeeper adds it when the digest equals `zookeeper.DigestAuthenticationProvider.superDigest`).
//! `world:anyone` need not be listed: it is matched by the ACL side. A SASL login adds `sasl:<user>`, a
//! client certificate on the TLS port adds `x509:<subject DN, RFC 2253>`.
//!
//! # Checks (`ZooKeeperServer.checkACL`)
//! An empty ACL allows everything; a `super` identity allows everything; otherwise some ACL entry must
//! grant one of the requested permission bits *and* match an identity: `world:anyone` matches everyone,
//! `digest` matches the identical id, `ip` matches an address inside the entry's `addr[/bits]` network,
//! `sasl` and `x509` match the identical id, and a `sasl` identity named `super` matches every `sasl`
//! entry (ZooKeeper's `SASLAuthenticationProvider.matches`).
//!
//! # Validation (`fixupACL`)
//! Duplicates are removed (first occurrence kept). An empty list is `InvalidACL`. `world` is valid only as
//! `world:anyone`; `auth` expands to every *authenticated* identity of the session (ZooKeeper's
//! `isAuthenticated()`: digest yes, ip no, super has no provider) and is `InvalidACL` when there is none;
//! `digest` needs `user:hash` (Java's `split(":").length == 2`); `ip` needs a parseable IPv4/IPv6 address
//! with an optional prefix length in range; `sasl` needs a name Kerberos would parse (`KerberosName`: a
//! name with `@` must be `[service[/host]]@realm` with no further `/` or `@`); `x509` takes any DN.
//! Any other scheme is `InvalidACL`. Unlike ZooKeeper, where `sasl` and `x509` ids are valid only on a
//! server that registers their providers, Roster always accepts them: validity must not depend on a
//! node's settings, since every replica applies the same log.
//!
//! # Interning
//! [`AclTable`] is ZooKeeper's `ReferenceCountedACLCache`: each distinct list gets a small id, nodes store
//! the id, and a reference count drops the list when its last node goes. Ids are handed out in order of
//! first use, so two replicas that apply the same log build the same table.

use imbl::OrdMap;
use roster_proto::{perms, Acl, ErrorCode, Id};
use std::sync::Arc;

/// ZooKeeper's digest of `user:password` (defined in `roster_proto`, re-exported for the server).
pub use roster_proto::digest;

/// Whether the scheme's identities count as "authenticated" for the `auth` ACL scheme (ZooKeeper's
/// `AuthenticationProvider.isAuthenticated()`; ip is not, and super has no provider at all).
fn is_authenticated_scheme(scheme: &str) -> bool {
    matches!(scheme, "digest" | "sasl" | "x509")
}

/// Java's `id.split(":").length == 2`: trailing empty pieces are dropped before counting.
fn is_valid_digest_id(id: &str) -> bool {
    let mut parts: Vec<&str> = id.split(':').collect();
    while parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    if parts.len() == 1 && parts[0].is_empty() && id.contains(':') {
        return false;
    }
    parts.len() == 2
}

/// Parses an address the way `IPAuthenticationProvider.addr2Bytes` does: anything with a `:` is IPv6,
/// anything with a `.` is IPv4 (four decimal parts 0..=255), otherwise nothing.
fn addr_bytes(addr: &str) -> Option<Vec<u8>> {
    if addr.contains(':') {
        v6_bytes(addr)
    } else if addr.contains('.') {
        let parts: Vec<&str> = addr.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut out = Vec::with_capacity(4);
        for p in parts {
            let v = parse_java_int(p, 10)?;
            if !(0..=255).contains(&v) {
                return None;
            }
            out.push(v as u8);
        }
        Some(out)
    } else {
        None
    }
}

/// Java's `Integer.parseInt(s, radix)`: optional sign, at least one digit, fits in an i32.
fn parse_java_int(s: &str, radix: u32) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    let v = if neg { -v } else { v };
    if v < i32::MIN as i64 || v > i32::MAX as i64 {
        return None;
    }
    Some(v)
}

/// `IPAuthenticationProvider.parseV6addr`: full eight segments, or one `::` with fewer than eight
/// explicit segments; each segment 1..=4 hex digits.
fn v6_bytes(addr: &str) -> Option<Vec<u8>> {
    let halves: Vec<&str> = addr.split("::").collect();
    let (first, second): (Vec<&str>, Vec<&str>) = match halves.len() {
        1 => {
            let segs: Vec<&str> = halves[0].split(':').collect();
            if segs.len() != 8 {
                return None;
            }
            (segs, Vec::new())
        }
        2 => {
            let a = if halves[0].is_empty() {
                Vec::new()
            } else {
                halves[0].split(':').collect()
            };
            let b = if halves[1].is_empty() {
                Vec::new()
            } else {
                halves[1].split(':').collect()
            };
            if a.len() + b.len() >= 8 {
                return None;
            }
            (a, b)
        }
        _ => return None,
    };
    let mut out = vec![0u8; 16];
    let mut put = |start: usize, segs: &[&str]| -> Option<()> {
        let mut i = start;
        for s in segs {
            if s.is_empty() || s.len() > 4 {
                return None;
            }
            let v = parse_java_int(s, 16)?;
            out[i] = ((v >> 8) & 0xff) as u8;
            out[i + 1] = (v & 0xff) as u8;
            i += 2;
        }
        Some(())
    };
    put(0, &first)?;
    put(16 - second.len() * 2, &second)?;
    Some(out)
}

/// Parses `addr[/bits]` into (address bytes, prefix bits), or `None` when ZooKeeper would refuse it.
fn parse_ip_expr(expr: &str) -> Option<(Vec<u8>, usize)> {
    let (addr, bits) = match expr.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (expr, None),
    };
    let bytes = addr_bytes(addr)?;
    let max = bytes.len() * 8;
    let bits = match bits {
        None => max,
        Some(b) => {
            let b = parse_java_int(b, 10)?;
            if b < 0 || b as usize > max {
                return None;
            }
            b as usize
        }
    };
    Some((bytes, bits))
}

fn mask(bytes: &mut [u8], bits: usize) {
    for (i, b) in bytes.iter_mut().enumerate() {
        let lo = i * 8;
        if bits <= lo {
            *b = 0;
        } else if bits < lo + 8 {
            *b &= !((1u16 << (8 - (bits - lo))) - 1) as u8;
        }
    }
}

/// `IPAuthenticationProvider.matches(id, aclExpr)`: both addresses masked to the entry's prefix length.
pub fn ip_matches(client_addr: &str, acl_expr: &str) -> bool {
    let Some((mut acl, bits)) = parse_ip_expr(acl_expr) else {
        return false;
    };
    let Some(mut remote) = addr_bytes(client_addr) else {
        return false;
    };
    if remote.len() != acl.len() {
        return false;
    }
    mask(&mut acl, bits);
    mask(&mut remote, bits);
    acl == remote
}

/// `KerberosName`'s parser: a name without `@` is a simple name; with `@` it must be
/// `[^/@]*(/[^/@]*)?@[^/@]*`.
fn is_valid_kerberos_name(name: &str) -> bool {
    let Some((left, realm)) = name.split_once('@') else {
        return true;
    };
    if realm.contains('@') || realm.contains('/') {
        return false;
    }
    match left.split_once('/') {
        Some((_, host)) => !host.contains('/'),
        None => true,
    }
}

/// Whether an ACL identity is well formed for its scheme (the provider's `isValid`).
fn is_valid_id(id: &Id) -> bool {
    match id.scheme.as_str() {
        "digest" => is_valid_digest_id(&id.id),
        "ip" => parse_ip_expr(&id.id).is_some(),
        "sasl" => is_valid_kerberos_name(&id.id),
        "x509" => true,
        _ => false,
    }
}

/// Validates and expands the ACL of a create or setACL (`PrepRequestProcessor.fixupACL`).
pub fn fixup_acl(auth: &[Id], acls: &[Acl]) -> Result<Vec<Acl>, ErrorCode> {
    let mut uniq: Vec<&Acl> = Vec::with_capacity(acls.len());
    for a in acls {
        if !uniq.contains(&a) {
            uniq.push(a);
        }
    }
    if uniq.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut out = Vec::with_capacity(uniq.len());
    for a in uniq {
        if a.id.scheme == "world" && a.id.id == "anyone" {
            out.push(a.clone());
        } else if a.id.scheme == "auth" {
            let mut any = false;
            for id in auth.iter().filter(|id| is_authenticated_scheme(&id.scheme)) {
                any = true;
                out.push(Acl {
                    perms: a.perms,
                    id: id.clone(),
                });
            }
            if !any {
                return Err(ErrorCode::InvalidAcl);
            }
        } else if is_valid_id(&a.id) {
            out.push(a.clone());
        } else {
            return Err(ErrorCode::InvalidAcl);
        }
    }
    Ok(out)
}

/// `ZooKeeperServer.checkACL`: `Ok` when `auth` may use any of the `perm` bits on a node with `acl`.
pub fn check_acl(acl: &[Acl], perm: i32, auth: &[Id]) -> Result<(), ErrorCode> {
    if acl.is_empty() || auth.iter().any(|id| id.scheme == "super") {
        return Ok(());
    }
    for a in acl {
        if a.perms & perm == 0 {
            continue;
        }
        match a.id.scheme.as_str() {
            "world" if a.id.id == "anyone" => return Ok(()),
            "digest"
                if auth
                    .iter()
                    .any(|id| id.scheme == "digest" && id.id == a.id.id) =>
            {
                return Ok(())
            }
            "ip" if auth
                .iter()
                .any(|id| id.scheme == "ip" && ip_matches(&id.id, &a.id.id)) =>
            {
                return Ok(())
            }
            "sasl"
                if auth
                    .iter()
                    .any(|id| id.scheme == "sasl" && (id.id == a.id.id || id.id == "super")) =>
            {
                return Ok(())
            }
            "x509"
                if auth
                    .iter()
                    .any(|id| id.scheme == "x509" && id.id == a.id.id) =>
            {
                return Ok(())
            }
            _ => {}
        }
    }
    Err(ErrorCode::NoAuth)
}

/// getACL for a reader without ADMIN: digest ids are shown as `user:x` (FinalRequestProcessor).
pub fn mask_digests(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| {
            if a.id.scheme == "digest" {
                let user = a.id.id.split(':').next().unwrap_or("");
                Acl {
                    perms: a.perms,
                    id: Id::new("digest", &format!("{user}:x")),
                }
            } else {
                a.clone()
            }
        })
        .collect()
}

/// whoAmI's user name for an identity (`AuthUtil.getUser`): the digest user, otherwise the id.
pub fn user_name(id: &Id) -> String {
    match id.scheme.as_str() {
        "digest" => id.id.split(':').next().unwrap_or("").to_string(),
        _ => id.id.clone(),
    }
}

/// The id of an interned ACL list.
pub type AclId = u64;

/// The interning key: the list as (perms, scheme, id) triples.
type AclKey = Vec<(i32, String, String)>;

fn key_of(acl: &[Acl]) -> AclKey {
    acl.iter()
        .map(|a| (a.perms, a.id.scheme.clone(), a.id.id.clone()))
        .collect()
}

/// The interned ACL lists of a tree (ZooKeeper's `ReferenceCountedACLCache`), persistent so it clones in O(1).
#[derive(Debug, Clone, Default)]
pub struct AclTable {
    /// id → (list, number of nodes using it).
    by_id: OrdMap<AclId, (Arc<Vec<Acl>>, u64)>,
    /// list → id.
    by_key: OrdMap<AclKey, AclId>,
    /// The next id to hand out.
    next_id: AclId,
}

impl AclTable {
    /// Interns a list and counts one more user of it.
    pub fn acquire(&mut self, acl: &[Acl]) -> AclId {
        let key = key_of(acl);
        if let Some(&id) = self.by_key.get(&key) {
            if let Some(entry) = self.by_id.get_mut(&id) {
                entry.1 += 1;
            }
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.by_key.insert(key, id);
        self.by_id.insert(id, (Arc::new(acl.to_vec()), 1));
        id
    }

    /// Counts one user less; the list is dropped with its last user.
    pub fn release(&mut self, id: AclId) {
        let drop = match self.by_id.get_mut(&id) {
            Some(entry) => {
                entry.1 = entry.1.saturating_sub(1);
                entry.1 == 0
            }
            None => false,
        };
        if drop {
            if let Some((acl, _)) = self.by_id.remove(&id) {
                self.by_key.remove(&key_of(&acl));
            }
        }
    }

    /// The list for an id (empty if unknown, which a consistent tree never asks for).
    pub fn get(&self, id: AclId) -> &[Acl] {
        self.by_id
            .get(&id)
            .map(|(a, _)| a.as_slice())
            .unwrap_or(&[])
    }

    /// Number of distinct lists.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Iterates (id, list, reference count) in id order.
    pub fn iter(&self) -> impl Iterator<Item = (AclId, &[Acl], u64)> {
        self.by_id
            .iter()
            .map(|(id, (a, n))| (*id, a.as_slice(), *n))
    }

    /// The next id to be handed out.
    pub fn next_id(&self) -> AclId {
        self.next_id
    }

    /// Rebuilds a table from (id, list, reference count) entries (snapshot restore).
    pub(crate) fn from_parts(
        entries: Vec<(AclId, Vec<Acl>, u64)>,
        next_id: AclId,
    ) -> Option<AclTable> {
        let mut t = AclTable {
            next_id,
            ..AclTable::default()
        };
        for (id, acl, refs) in entries {
            if id >= next_id || refs == 0 {
                return None;
            }
            let key = key_of(&acl);
            if t.by_key.insert(key, id).is_some()
                || t.by_id.insert(id, (Arc::new(acl), refs)).is_some()
            {
                return None;
            }
        }
        Some(t)
    }
}

/// Permission bits needed by getACL: READ or ADMIN (ZooKeeper 3.8 checks `READ | ADMIN`, any bit).
pub const GET_ACL_PERMS: i32 = perms::READ | perms::ADMIN;

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id::new(scheme, id),
        }
    }

    #[test]
    fn digest_id_validity() {
        assert!(is_valid_digest_id("user:hash"));
        assert!(is_valid_digest_id(":hash"));
        assert!(!is_valid_digest_id("user:"));
        assert!(!is_valid_digest_id("user"));
        assert!(!is_valid_digest_id("a:b:c"));
        assert!(!is_valid_digest_id(""));
        assert!(!is_valid_digest_id(":"));
        assert!(is_valid_digest_id("a:b::"));
    }

    #[test]
    fn ip_rules() {
        assert!(ip_matches("10.0.0.7", "10.0.0.7"));
        assert!(ip_matches("10.0.0.7", "10.0.0.0/24"));
        assert!(!ip_matches("10.0.1.7", "10.0.0.0/24"));
        assert!(ip_matches("10.0.1.7", "10.0.0.0/16"));
        assert!(ip_matches("1.2.3.4", "0.0.0.0/0"));
        assert!(ip_matches("10.0.0.129", "10.0.0.128/25"));
        assert!(!ip_matches("10.0.0.127", "10.0.0.128/25"));
        assert!(!ip_matches("10.0.0.7", "10.0.0.0/33"));
        assert!(!ip_matches("::1", "127.0.0.1"));
        assert!(ip_matches("::1", "0:0:0:0:0:0:0:1"));
        assert!(ip_matches("fe80::1:2", "fe80::/64"));
        assert!(!ip_matches("fe81::1", "fe80::/16"));
        assert!(parse_ip_expr("10.0.0.256").is_none());
        assert!(parse_ip_expr("10.0.0").is_none());
        assert!(parse_ip_expr("host").is_none());
        assert!(parse_ip_expr("1:2:3:4:5:6:7:8:9").is_none());
        assert!(parse_ip_expr("1::2::3").is_none());
        assert!(parse_ip_expr("12345::").is_none());
        assert!(parse_ip_expr("10.0.0.1/x").is_none());
    }

    #[test]
    fn fixup() {
        let digest_id = Id::new("digest", "bob:abc=");
        let auth = vec![
            Id::new("ip", "10.0.0.1"),
            digest_id.clone(),
            Id::new("super", ""),
        ];
        assert_eq!(fixup_acl(&auth, &[]), Err(ErrorCode::InvalidAcl));
        assert_eq!(
            fixup_acl(&auth, &[acl(31, "auth", "")]),
            Ok(vec![Acl {
                perms: 31,
                id: digest_id.clone()
            }])
        );
        assert_eq!(
            fixup_acl(&[Id::new("ip", "10.0.0.1")], &[acl(31, "auth", "")]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup_acl(&auth, &[acl(31, "world", "nobody")]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup_acl(&auth, &[acl(31, "foo", "x")]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup_acl(&auth, &[acl(31, "digest", "nocolon")]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup_acl(&auth, &[acl(31, "super", "")]),
            Err(ErrorCode::InvalidAcl)
        );
        let open = Acl::open_unsafe();
        assert_eq!(
            fixup_acl(&[], &[open[0].clone(), open[0].clone()]),
            Ok(open.clone())
        );
    }

    #[test]
    fn checks() {
        let node = vec![
            acl(perms::READ, "digest", "bob:h"),
            acl(perms::WRITE, "ip", "10.0.0.0/8"),
        ];
        assert_eq!(check_acl(&node, perms::READ, &[]), Err(ErrorCode::NoAuth));
        assert_eq!(
            check_acl(&node, perms::READ, &[Id::new("digest", "bob:h")]),
            Ok(())
        );
        assert_eq!(
            check_acl(&node, perms::WRITE, &[Id::new("digest", "bob:h")]),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(
            check_acl(&node, perms::WRITE, &[Id::new("ip", "10.1.2.3")]),
            Ok(())
        );
        assert_eq!(
            check_acl(&node, perms::ADMIN, &[Id::new("super", "")]),
            Ok(())
        );
        assert_eq!(check_acl(&[], perms::ADMIN, &[]), Ok(()));
        assert_eq!(
            check_acl(&node, GET_ACL_PERMS, &[Id::new("digest", "bob:h")]),
            Ok(())
        );
    }

    #[test]
    fn sasl_and_x509() {
        assert!(is_valid_kerberos_name("bob"));
        assert!(is_valid_kerberos_name("zookeeper/host@EXAMPLE.COM"));
        assert!(is_valid_kerberos_name("bob@EXAMPLE.COM"));
        assert!(!is_valid_kerberos_name("a@b@c"));
        assert!(!is_valid_kerberos_name("a/b/c@R"));
        assert_eq!(
            fixup_acl(&[], &[acl(31, "sasl", "a@b@c")]),
            Err(ErrorCode::InvalidAcl)
        );
        let sasl_bob = Id::new("sasl", "bob");
        let x509 = Id::new("x509", "CN=client,O=Roster");
        assert_eq!(
            fixup_acl(&[sasl_bob.clone(), x509.clone()], &[acl(31, "auth", "")]),
            Ok(vec![
                Acl {
                    perms: 31,
                    id: sasl_bob.clone()
                },
                Acl {
                    perms: 31,
                    id: x509.clone()
                }
            ])
        );
        let node = vec![
            acl(perms::READ, "sasl", "bob"),
            acl(perms::WRITE, "x509", "CN=client,O=Roster"),
        ];
        assert_eq!(
            check_acl(&node, perms::READ, std::slice::from_ref(&sasl_bob)),
            Ok(())
        );
        assert_eq!(
            check_acl(&node, perms::READ, &[Id::new("sasl", "alice")]),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(
            check_acl(&node, perms::READ, &[Id::new("sasl", "super")]),
            Ok(())
        );
        assert_eq!(
            check_acl(&node, perms::WRITE, std::slice::from_ref(&x509)),
            Ok(())
        );
        assert_eq!(
            check_acl(&node, perms::WRITE, &[sasl_bob]),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(
            check_acl(&node, perms::WRITE, &[Id::new("x509", "CN=other")]),
            Err(ErrorCode::NoAuth)
        );
    }

    #[test]
    fn interning() {
        let mut t = AclTable::default();
        let a = t.acquire(&Acl::open_unsafe());
        let b = t.acquire(&Acl::open_unsafe());
        let c = t.acquire(&Acl::read_unsafe());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(t.len(), 2);
        t.release(c);
        assert_eq!(t.len(), 1);
        t.release(a);
        assert_eq!(t.len(), 1);
        t.release(a);
        assert!(t.is_empty());
    }
}
