//! Znode paths: validation, parent/child splitting and the sequential suffix.
//!
//! [`validate_path`] implements ZooKeeper's `PathUtils.validatePath` rule for rule. ZooKeeper checks Java
//! `char`s, which are UTF-16 code units; a Rust `char` above U+FFFF is a surrogate pair in Java, and
//! surrogates are in the refused range `\ud800..=\uf8ff`, so every supplementary-plane character is refused
//! here too. The rules: non-empty, starts with `/`, no trailing `/` (except the root itself), no empty
//! segment (`//`), no `.` or `..` segment, no NUL, no control characters (U+0001..U+001F, U+007F..U+009F),
//! nothing in U+D800..U+F8FF or U+FFF0..U+FFFF.
//!
//! [`split`] mirrors the `lastIndexOf('/')` arithmetic ZooKeeper's request processors use: the parent of
//! `/a` is `/` (ZooKeeper maps `""` to the root by aliasing it), and a sequential create validates the
//! path *with* its suffix, so `/a/` is a legal base for a sequential child of `/a`.
//!
//! Left out: chroot handling (it is the client's job: the server only ever sees absolute paths).

use std::fmt;

/// Why a path is not a valid znode path (ZooKeeper's `IllegalArgumentException` messages, shortened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path is empty.
    Empty,
    /// The path does not start with `/`.
    NotAbsolute,
    /// The path ends with `/` and is not the root.
    TrailingSlash,
    /// A `//` at the given byte offset.
    EmptySegment(usize),
    /// A `.` or `..` segment at the given byte offset.
    Relative(usize),
    /// A NUL, control or reserved character at the given byte offset.
    InvalidChar(usize),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => write!(f, "path length must be > 0"),
            PathError::NotAbsolute => write!(f, "path must start with / character"),
            PathError::TrailingSlash => write!(f, "path must not end with / character"),
            PathError::EmptySegment(i) => write!(f, "empty node name specified @{i}"),
            PathError::Relative(i) => write!(f, "relative paths not allowed @{i}"),
            PathError::InvalidChar(i) => write!(f, "invalid character @{i}"),
        }
    }
}

impl std::error::Error for PathError {}

/// Whether a character is refused by `PathUtils.validatePath` (NUL included).
fn is_invalid_char(c: char) -> bool {
    let c = c as u32;
    c == 0
        || (0x01..=0x1f).contains(&c)
        || (0x7f..=0x9f).contains(&c)
        || (0xd800..=0xf8ff).contains(&c)
        || (0xfff0..=0xffff).contains(&c)
        // Supplementary characters are surrogate pairs in Java, and surrogates are refused.
        || c > 0xffff
}

/// Validates a znode path exactly as ZooKeeper's `PathUtils.validatePath(String)`.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return Err(PathError::Empty);
    }
    if bytes[0] != b'/' {
        return Err(PathError::NotAbsolute);
    }
    if bytes.len() == 1 {
        return Ok(());
    }
    if bytes[bytes.len() - 1] == b'/' {
        return Err(PathError::TrailingSlash);
    }
    // Walk the characters after the leading slash, remembering the previous two.
    let mut prev = '/';
    let mut prev2 = '\0';
    let mut iter = path.char_indices().skip(1).peekable();
    while let Some((i, c)) = iter.next() {
        let next = iter.peek().map(|&(_, n)| n);
        let segment_ends = next.is_none() || next == Some('/');
        if is_invalid_char(c) {
            return Err(PathError::InvalidChar(i));
        } else if c == '/' && prev == '/' {
            return Err(PathError::EmptySegment(i));
        } else if c == '.' && prev == '.' {
            if prev2 == '/' && segment_ends {
                return Err(PathError::Relative(i));
            }
        } else if c == '.' && prev == '/' && segment_ends {
            return Err(PathError::Relative(i));
        }
        prev2 = prev;
        prev = c;
    }
    Ok(())
}

/// Whether `path` is a valid znode path.
pub fn is_valid(path: &str) -> bool {
    validate_path(path).is_ok()
}

/// Splits a path at its last `/` into (parent, child name), as ZooKeeper's `lastIndexOf('/')` does, with
/// the empty parent mapped to the root. `None` when the path has no `/` at all.
///
/// `split("/a/b") == Some(("/a", "b"))`, `split("/a") == Some(("/", "a"))`, `split("/") == Some(("/", ""))`,
/// `split("/a/") == Some(("/a", ""))`.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind('/')?;
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, &path[i + 1..]))
}

/// The parent of a valid, non-root path (`/` for top-level nodes).
pub fn parent(path: &str) -> &str {
    split(path).map(|(p, _)| p).unwrap_or("/")
}

/// Joins a parent path and a child name.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// The sequential suffix for a parent whose (stored) cversion is `cversion`: Java's
/// `String.format("%010d", cversion)`, zero-padded to ten characters including a minus sign. The count
/// is 64-bit: past 9,999,999,999 the suffix simply grows longer instead of wrapping.
pub fn sequential_suffix(cversion: i64) -> String {
    format!("{cversion:010}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a.b",
            "/..a",
            "/a..",
            "/.a",
            "/a.",
            "/a/...",
            "/zookeeper/quota",
            "/é",
            "/a b",
        ] {
            assert_eq!(validate_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn invalid_paths() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("a", PathError::NotAbsolute),
            ("a/b", PathError::NotAbsolute),
            ("/a/", PathError::TrailingSlash),
            ("//", PathError::TrailingSlash),
            ("//a", PathError::EmptySegment(1)),
            ("/a//b", PathError::EmptySegment(3)),
            ("/.", PathError::Relative(1)),
            ("/..", PathError::Relative(2)),
            ("/a/./b", PathError::Relative(3)),
            ("/a/../b", PathError::Relative(4)),
            ("/a/..", PathError::Relative(4)),
            ("/a\0b", PathError::InvalidChar(2)),
            ("/a\u{1}", PathError::InvalidChar(2)),
            ("/a\u{7f}", PathError::InvalidChar(2)),
            ("/a\u{9f}", PathError::InvalidChar(2)),
            ("/\u{e000}", PathError::InvalidChar(1)),
            ("/\u{f8ff}", PathError::InvalidChar(1)),
            ("/\u{fff0}", PathError::InvalidChar(1)),
            ("/\u{1f600}", PathError::InvalidChar(1)),
        ];
        for (p, e) in cases {
            assert_eq!(validate_path(p).as_ref(), Err(e), "{p:?}");
        }
        // Just outside the refused ranges.
        assert!(is_valid("/\u{a0}"));
        assert!(is_valid("/\u{f900}"));
        assert!(is_valid("/\u{ffef}"));
    }

    #[test]
    fn splitting() {
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/"), Some(("/", "")));
        assert_eq!(split("/a/"), Some(("/a", "")));
        assert_eq!(split("abc"), None);
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }

    #[test]
    fn suffix() {
        assert_eq!(sequential_suffix(0), "0000000000");
        assert_eq!(sequential_suffix(42), "0000000042");
        assert_eq!(sequential_suffix(i32::MAX as i64), "2147483647");
        assert_eq!(sequential_suffix(-5), "-000000005");
        assert_eq!(sequential_suffix(i32::MIN as i64), "-2147483648");
    }
}
