//! ACL helpers for the `digest` scheme.
//!
//! A session authenticates with `add_auth("digest", b"user:password")`; an ACL names the same identity
//! as `digest:user:BASE64(SHA1("user:password"))` (`DigestAuthenticationProvider.generateDigest`). The
//! `world:anyone` and creator ACLs are in `roster_proto::Acl` (`open_unsafe`, `read_unsafe`,
//! `creator_all`).

use roster_proto::{Acl, Id};

/// The `digest` scheme id of `user` with `password`: `user:BASE64(SHA1("user:password"))`
/// ([`roster_proto::digest`] of `user:password`).
pub fn digest_id(user: &str, password: &str) -> String {
    roster_proto::digest(&format!("{user}:{password}"))
}

/// An ACL entry granting `perms` to `user` authenticated with `password`.
pub fn digest_acl(user: &str, password: &str, perms: i32) -> Acl {
    Acl {
        perms,
        id: Id::new("digest", &digest_id(user, password)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_zookeeper() {
        // `DigestAuthenticationProvider.generateDigest("super:test")`, a value quoted in ZooKeeper's docs.
        assert_eq!(
            digest_id("super", "test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }
}
