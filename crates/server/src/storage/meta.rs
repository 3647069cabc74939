//! Small durable key files: one file `<dir>/<name>.meta` per key.
//!
//! Each file holds one value, written atomically: the new content goes to `<name>.meta.tmp`,
//! is fsynced, renamed over `<name>.meta`, and the directory is fsynced. A reader therefore sees
//! either the old or the new value, never a mix. The file format (big-endian) is
//!
//! ```text
//! [4 bytes magic "RMTA"][u16 format version = 1][u16 reserved = 0][u32 payload len]
//! [payload][u32 crc32c of everything before it]
//! ```
//!
//! A file that fails these checks is reported as [`Error::Corrupt`] naming the file: a meta file
//! is only ever replaced by rename, so damage means the disk lost committed data.
//!
//! Used for the Raft vote, the committed log id, the log's purge point and the
//! [`ClusterIdentity`]. Not a database: values are small, there are few keys, and every `put`
//! costs two fsyncs. Keys are plain names of ASCII letters, digits, `-` and `_`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{create_dir_durable, fsync_dir, retry_transient, Error, IoResultExt, Result};

const MAGIC: &[u8; 4] = b"RMTA";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 12;
const TRAILER_LEN: usize = 4;
const EXT: &str = "meta";
const TMP_SUFFIX: &str = ".meta.tmp";

/// Key under which the vote is stored by [`crate::raft::log_store::LogStore`].
pub const KEY_VOTE: &str = "vote";
/// Key under which the committed log id is stored.
pub const KEY_COMMITTED: &str = "committed";
/// Key under which [`ClusterIdentity`] is stored (see [`MetaStore::load_identity`]).
pub const KEY_IDENTITY: &str = "identity";
/// Key under which the format version the directory is written in is stored (`crate::format`; absent
/// in directories of format 2, the first that had format versions).
pub const KEY_FORMAT: &str = "format";

/// The identity of a node's data directory: which cluster it belongs to and which node it is.
///
/// Written once when a node is first initialized; checked on every start so that a data
/// directory is never used by the wrong node or joined to the wrong cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// The cluster's id, drawn when it was created; shared by every member.
    pub cluster_id: String,
    /// This node's id within the cluster.
    pub node_id: u64,
}

impl ClusterIdentity {
    /// A fresh identity for `node_id` with a random 128-bit cluster id (32 hex digits), for a
    /// pristine data directory. Randomness comes from std's per-process random hash keys mixed
    /// with the clock and the process id; unique, not secret.
    pub fn new_random(node_id: u64) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let word = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(nanos);
            h.write_u32(std::process::id());
            h.write_u64(salt);
            h.finish()
        };
        let (a, b) = (word(node_id), word(!node_id));
        ClusterIdentity {
            cluster_id: format!("{a:016x}{b:016x}"),
            node_id,
        }
    }
}

/// A directory of small atomically-replaced, checksummed key files.
#[derive(Debug, Clone)]
pub struct MetaStore {
    dir: PathBuf,
}

impl MetaStore {
    /// Open (creating if needed) the meta directory.
    ///
    /// A leftover `<name>.meta.tmp` from an interrupted `put` is ignored (the rename never
    /// happened, so the old value stands) and reused by the next `put` of that key. It is not
    /// deleted here, so several `MetaStore`s may be opened on one directory at any time (each key
    /// must still have a single writer).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        create_dir_durable(&dir)?;
        Ok(MetaStore { dir })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the file holding `name`.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{EXT}"))
    }

    /// Durably store `value` under `name`, replacing any previous value.
    pub fn put(&self, name: &str, value: &[u8]) -> Result<()> {
        check_name(name)?;
        let len = u32::try_from(value.len())
            .map_err(|_| Error::Invalid(format!("meta value {name} too large")))?;
        let mut buf = Vec::with_capacity(HEADER_LEN + value.len() + TRAILER_LEN);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(value);
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_be_bytes());

        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let dst = self.path_of(name);
        {
            // Writing a fresh tmp file is repeatable; its fsync is not retried.
            let f = retry_transient(&tmp, "write", || {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)?;
                f.write_all(&buf)?;
                Ok(f)
            })
            .at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        retry_transient(&dst, "rename", || fs::rename(&tmp, &dst)).at(&dst)?;
        fsync_dir(&self.dir)
    }

    /// Read the value stored under `name`; `None` if it was never written (or was deleted).
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_name(name)?;
        let path = self.path_of(name);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        decode(&path, &data).map(Some)
    }

    /// Durably remove `name`. Removing a missing key is not an error.
    pub fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let path = self.path_of(name);
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// [`put`](Self::put) a value encoded with postcard.
    pub fn put_value<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let bytes = postcard::to_allocvec(value)
            .map_err(|e| Error::Invalid(format!("cannot encode meta value {name}: {e}")))?;
        self.put(name, &bytes)
    }

    /// [`get`](Self::get) a value encoded with postcard. A value that passes the checksum but
    /// does not decode is reported as corruption of that file.
    pub fn get_value<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.get(name)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(|e| {
                Error::corrupt(
                    self.path_of(name),
                    HEADER_LEN as u64,
                    format!("meta value does not decode: {e}"),
                )
            }),
        }
    }

    /// Load the stored [`ClusterIdentity`], if any.
    pub fn load_identity(&self) -> Result<Option<ClusterIdentity>> {
        self.get_value(KEY_IDENTITY)
    }

    /// Store the [`ClusterIdentity`].
    pub fn save_identity(&self, id: &ClusterIdentity) -> Result<()> {
        self.put_value(KEY_IDENTITY, id)
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("bad meta key name {name:?}")))
    }
}

fn decode(path: &Path, data: &[u8]) -> Result<Vec<u8>> {
    let bad = |offset: usize, reason: String| Err(Error::corrupt(path, offset as u64, reason));
    if data.len() < HEADER_LEN + TRAILER_LEN {
        return bad(0, format!("meta file is {} bytes, too short", data.len()));
    }
    if &data[0..4] != MAGIC {
        return bad(0, "bad magic, not a roster meta file".into());
    }
    let version = u16::from_be_bytes([data[4], data[5]]);
    if version != VERSION {
        return bad(4, format!("unsupported meta format version {version}"));
    }
    let len = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
    if data.len() != HEADER_LEN + len + TRAILER_LEN {
        return bad(
            8,
            format!(
                "length field says {len} payload bytes but the file has {}",
                data.len()
            ),
        );
    }
    let body_end = HEADER_LEN + len;
    let stored = u32::from_be_bytes(data[body_end..].try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(&data[..body_end]);
    if stored != actual {
        return bad(
            body_end,
            format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"),
        );
    }
    Ok(data[HEADER_LEN..body_end].to_vec())
}

/// Write garbage at `offset` of a file; test helper shared with the log tests.
#[cfg(test)]
pub(crate) fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
    f.sync_all().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_roundtrip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path().join("meta")).unwrap();
        assert_eq!(m.get("vote").unwrap(), None);
        m.put("vote", b"hello").unwrap();
        assert_eq!(m.get("vote").unwrap().as_deref(), Some(&b"hello"[..]));
        m.put("vote", b"").unwrap();
        assert_eq!(m.get("vote").unwrap().as_deref(), Some(&b""[..]));
        m.delete("vote").unwrap();
        assert_eq!(m.get("vote").unwrap(), None);
        m.delete("vote").unwrap();
    }

    #[test]
    fn identity_roundtrip_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = ClusterIdentity {
            cluster_id: "c-1".into(),
            node_id: 7,
        };
        MetaStore::open(dir.path())
            .unwrap()
            .save_identity(&id)
            .unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(m.load_identity().unwrap(), Some(id));
    }

    #[test]
    fn random_identities_differ() {
        let a = ClusterIdentity::new_random(1);
        let b = ClusterIdentity::new_random(1);
        assert_eq!(a.cluster_id.len(), 32);
        assert_ne!(a.cluster_id, b.cluster_id);
        assert_eq!(a.node_id, 1);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        m.put("committed", b"0123456789").unwrap();
        flip_byte(&m.path_of("committed"), 14);
        let err = m.get("committed").unwrap_err();
        assert!(err.is_corruption());
        let msg = err.to_string();
        assert!(msg.contains("committed.meta"), "{msg}");
        assert!(msg.contains("checksum"), "{msg}");

        // Truncated file.
        m.put("vote", b"0123456789").unwrap();
        let p = m.path_of("vote");
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(10).unwrap();
        let msg = m.get("vote").unwrap_err().to_string();
        assert!(
            msg.contains("vote.meta") && msg.contains("too short"),
            "{msg}"
        );
    }

    #[test]
    fn leftover_tmp_is_ignored_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        m.put("vote", b"old").unwrap();
        fs::write(dir.path().join("vote.meta.tmp"), b"half-written").unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(m.get("vote").unwrap().as_deref(), Some(&b"old"[..]));
        m.put("vote", b"new").unwrap();
        assert_eq!(m.get("vote").unwrap().as_deref(), Some(&b"new"[..]));
        assert!(!dir.path().join("vote.meta.tmp").exists());
    }

    #[test]
    fn bad_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        assert!(m.put("../x", b"").is_err());
        assert!(m.put("", b"").is_err());
    }
}
