//! Paths: client-side validation (ZooKeeper's `PathUtils.validatePath`) and the chroot.
//!
//! A path is checked before it is sent, so a malformed path fails fast with
//! [`Error::BadArguments`] instead of costing a round trip (the Java client does the same). A chroot,
//! given as the suffix of a connect string (`host:2181/app`), makes the client behave as if `/app` were
//! the root: [`Chroot::to_server`] prefixes every path the caller gives, and [`Chroot::to_client`] strips
//! the prefix from every path the server returns (created paths, watch events, ephemerals).

use crate::error::{Error, Result};

/// Checks a znode path. `sequential` allows the trailing `/` of a sequential create (`/queue/`),
/// whose name the server completes with a ten-digit counter.
pub fn validate_path(path: &str, sequential: bool) -> Result<()> {
    let bad = |why: &str| Err(Error::BadArguments(format!("invalid path {path:?}: {why}")));
    if path.is_empty() {
        return bad("path must not be empty");
    }
    if !path.starts_with('/') {
        return bad("path must start with /");
    }
    if path == "/" {
        return Ok(());
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if seg.is_empty() {
            if last && sequential {
                continue;
            }
            return bad(if last {
                "path must not end with /"
            } else {
                "empty node name"
            });
        }
        if *seg == "." || *seg == ".." {
            return bad("relative paths are not allowed");
        }
        if let Some(c) = seg.chars().find(|c| invalid_char(*c)) {
            return bad(&format!("invalid character {c:?}"));
        }
    }
    Ok(())
}

/// The characters `PathUtils` rejects: NUL and controls, the C1 block, the private-use area, and the
/// specials block. (Java's surrogate range cannot occur in a Rust string.)
fn invalid_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}')
}

/// The chroot of a connect string; `None` inside means the server's root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chroot(Option<String>);

impl Chroot {
    /// A chroot at `root`; `/` or an empty string means none.
    pub fn new(root: &str) -> Result<Chroot> {
        if root.is_empty() || root == "/" {
            return Ok(Chroot(None));
        }
        validate_path(root, false)?;
        Ok(Chroot(Some(root.to_string())))
    }

    /// The chroot's server path, if any.
    pub fn root(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The server path of a client path.
    pub fn to_server(&self, path: &str) -> String {
        match &self.0 {
            None => path.to_string(),
            Some(root) if path == "/" => root.clone(),
            Some(root) => format!("{root}{path}"),
        }
    }

    /// The client path of a server path, or `None` when the server path lies outside the chroot.
    pub fn try_to_client(&self, path: &str) -> Option<String> {
        match &self.0 {
            None => Some(path.to_string()),
            Some(root) if path == root => Some("/".to_string()),
            Some(root) => path
                .strip_prefix(root.as_str())
                .filter(|rest| rest.starts_with('/'))
                .map(str::to_string),
        }
    }

    /// The client path of a server path; a path outside the chroot is returned unchanged.
    pub fn to_client(&self, path: &str) -> String {
        self.try_to_client(path).unwrap_or_else(|| path.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_path_utils() {
        for ok in [
            "/",
            "/a",
            "/a/b",
            "/a.b/..c",
            "/zookeeper/quota",
            "/ünïcode",
        ] {
            assert!(validate_path(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "/a/",
            "//a",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/.",
            "/a\u{0}",
            "/a\u{e000}",
        ] {
            assert!(
                matches!(validate_path(bad, false), Err(Error::BadArguments(_))),
                "{bad:?}"
            );
        }
        assert!(validate_path("/queue/", true).is_ok());
        assert!(validate_path("/queue//", true).is_err());
    }

    #[test]
    fn chroot_maps_both_ways() {
        let c = Chroot::new("/app").unwrap();
        assert_eq!(c.to_server("/"), "/app");
        assert_eq!(c.to_server("/x/y"), "/app/x/y");
        assert_eq!(c.to_client("/app"), "/");
        assert_eq!(c.to_client("/app/x"), "/x");
        assert_eq!(c.try_to_client("/apple"), None);
        assert_eq!(c.to_client("/other"), "/other");
        let none = Chroot::new("/").unwrap();
        assert_eq!(none.to_server("/x"), "/x");
        assert!(Chroot::new("/app/").is_err());
    }
}
