//! Snapshot files: `<dir>/snap-<term>-<index>.snap` (term and index as 20 decimal digits).
//!
//! A snapshot is an opaque metadata blob (the Raft layer stores openraft's `SnapshotMeta`
//! postcard-encoded there) plus an opaque body (the serialized state machine). File format,
//! integers big-endian:
//!
//! ```text
//! [8 bytes magic "RSTRSNAP"][u32 layout version][u32 meta len][u64 body len]
//! [u32 crc32c over the whole file except this field][meta bytes][body bytes]
//! ```
//!
//! Layout 1: the body is the state. Layout 2 (written by builds of format 3 once the cluster runs
//! it, `crate::format::snapshot_layout`): the body opens with the cluster format version
//! (`crate::format::wrap_snapshot`). A file of a layout this build does not read is an error naming
//! both layouts and what to do, never read as something else.
//!
//! Writing goes to `<name>.snap.tmp`, is fsynced, renamed into place, and the directory is
//! fsynced; then all but the newest [`KEEP`] snapshots are deleted. A leftover `.tmp` (a crash
//! while writing) is ignored by [`SnapshotStore::latest`] and removed by
//! [`SnapshotStore::open`]. A complete-looking snapshot file that fails its checks is an
//! [`Error::Corrupt`] naming the file: it is never skipped in favour of an older one, because the
//! log has usually been purged past the older one.
//!
//! The API is synchronous; async callers run it under `tokio::task::spawn_blocking`. A snapshot can
//! be written as it is made ([`SnapshotStore::write_streamed`]), but is read back whole into memory.
//! Compressing snapshots is left out.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{create_dir_durable, fsync_dir, retry_transient, Error, IoResultExt, Result};

const MAGIC: &[u8; 8] = b"RSTRSNAP";
const VERSION: u32 = 1;
/// The newest layout this build reads.
const VERSION_MAX: u32 = crate::format::SNAPSHOT_LAYOUT_MAX;
/// Size of the fixed file header.
pub const HEADER_LEN: usize = 28;
/// Number of complete snapshots kept on disk.
pub const KEEP: usize = 2;
const TMP_SUFFIX: &str = ".snap.tmp";

/// A snapshot loaded from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Term of the last log entry the snapshot covers.
    pub term: u64,
    /// Index of the last log entry the snapshot covers.
    pub index: u64,
    /// Opaque metadata as passed to [`SnapshotStore::write`].
    pub meta: Vec<u8>,
    /// Opaque body as passed to [`SnapshotStore::write`].
    pub body: Vec<u8>,
    /// The file it was loaded from.
    pub path: PathBuf,
}

/// A directory of snapshot files.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Open (creating if needed) the snapshot directory, removing unfinished `.tmp` files.
    /// Call once at startup, before any concurrent [`write`](Self::write).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        create_dir_durable(&dir)?;
        let mut removed = false;
        for ent in fs::read_dir(&dir).at(&dir)? {
            let ent = ent.at(&dir)?;
            if ent.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
                let p = ent.path();
                tracing::warn!(path = %p.display(), "removing unfinished snapshot file");
                fs::remove_file(&p).at(&p)?;
                removed = true;
            }
        }
        if removed {
            fsync_dir(&dir)?;
        }
        Ok(SnapshotStore { dir })
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name used for a snapshot at (`term`, `index`).
    pub fn path_of(&self, term: u64, index: u64) -> PathBuf {
        self.dir.join(format!("snap-{term:020}-{index:020}.snap"))
    }

    /// Durably write a snapshot of layout 1, then delete all but the newest [`KEEP`]. Returns its path.
    pub fn write(&self, term: u64, index: u64, meta: &[u8], body: &[u8]) -> Result<PathBuf> {
        self.write_layout(VERSION, term, index, meta, body)
    }

    /// Durably write a snapshot of the given layout (see the module docs), then delete all but the
    /// newest [`KEEP`]. Returns its path.
    pub fn write_layout(
        &self,
        layout: u32,
        term: u64,
        index: u64,
        meta: &[u8],
        body: &[u8],
    ) -> Result<PathBuf> {
        self.write_streamed(layout, term, index, meta, &|w| w.write_all(body))
            .map(|(path, _)| path)
    }

    /// [`write_layout`](Self::write_layout) of a body that `body` writes into the file as it is made,
    /// through a 1 MiB buffer, so a snapshot of a large tree is never held in memory whole. `body` may
    /// be called more than once (a transient write error starts the file again). The header's body
    /// length and checksum are filled in once the body is written. Returns the path and the body's
    /// length.
    pub fn write_streamed(
        &self,
        layout: u32,
        term: u64,
        index: u64,
        meta: &[u8],
        body: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(PathBuf, u64)> {
        let meta_len = u32::try_from(meta.len())
            .map_err(|_| Error::Invalid("snapshot metadata larger than 4 GiB".into()))?;
        let dst = self.path_of(term, index);
        let tmp = dst.with_extension("snap.tmp");
        // Writing a fresh tmp file is repeatable on a transient error; its fsync is not retried.
        let write = || -> io::Result<(std::fs::File, u64)> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&[0u8; HEADER_LEN])?;
            f.write_all(meta)?;
            let mut w = BufWriter::with_capacity(1 << 20, Summed::new(f));
            body(&mut w)?;
            let Summed { inner: f, crc, len } = w.into_inner().map_err(|e| e.into_error())?;
            let mut header = [0u8; HEADER_LEN];
            header[0..8].copy_from_slice(MAGIC);
            header[8..12].copy_from_slice(&layout.to_be_bytes());
            header[12..16].copy_from_slice(&meta_len.to_be_bytes());
            header[16..24].copy_from_slice(&len.to_be_bytes());
            let head = crc32c::crc32c_append(crc32c::crc32c(&header[..24]), meta);
            let crc = crc32c::crc32c_combine(head, crc, len as usize);
            header[24..28].copy_from_slice(&crc.to_be_bytes());
            f.write_all_at(&header, 0)?;
            Ok((f, len))
        };
        let (f, len) = retry_transient(&tmp, "write", write).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        retry_transient(&dst, "rename", || fs::rename(&tmp, &dst)).at(&dst)?;
        fsync_dir(&self.dir)?;
        self.prune()?;
        Ok((dst, len))
    }

    /// Complete snapshot files, newest (highest index, then term) first.
    pub fn list(&self) -> Result<Vec<(u64, u64, PathBuf)>> {
        let mut out = Vec::new();
        for ent in retry_transient(&self.dir, "list", || fs::read_dir(&self.dir)).at(&self.dir)? {
            let ent = ent.at(&self.dir)?;
            let name = ent.file_name();
            if let Some((term, index)) = parse_name(&name.to_string_lossy()) {
                out.push((term, index, ent.path()));
            }
        }
        out.sort_by_key(|(term, index, _)| std::cmp::Reverse((*index, *term)));
        Ok(out)
    }

    /// Load and verify the newest snapshot; `None` if there is none.
    pub fn latest(&self) -> Result<Option<SnapshotFile>> {
        match self.list()?.into_iter().next() {
            None => Ok(None),
            Some((term, index, path)) => load(&path, term, index).map(Some),
        }
    }

    fn prune(&self) -> Result<()> {
        let all = self.list()?;
        if all.len() <= KEEP {
            return Ok(());
        }
        for (_, _, path) in &all[KEEP..] {
            fs::remove_file(path).at(path)?;
        }
        fsync_dir(&self.dir)
    }
}

/// A writer that passes everything to `inner`, keeping the crc32c and the length of what passed.
struct Summed<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W> Summed<W> {
    fn new(inner: W) -> Self {
        Summed {
            inner,
            crc: 0,
            len: 0,
        }
    }
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn checksum(header: &[u8; HEADER_LEN], meta: &[u8], body: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[..24]);
    let crc = crc32c::crc32c_append(crc, meta);
    crc32c::crc32c_append(crc, body)
}

/// Parse `snap-<20 digits>-<20 digits>.snap`.
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (t, i) = rest.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(t) || !digits(i) {
        return None;
    }
    Some((t.parse().ok()?, i.parse().ok()?))
}

fn load(path: &Path, term: u64, index: u64) -> Result<SnapshotFile> {
    let data = retry_transient(path, "read", || fs::read(path)).at(path)?;
    let bad = |offset: usize, reason: String| Err(Error::corrupt(path, offset as u64, reason));
    if data.len() < HEADER_LEN {
        return bad(
            0,
            format!("snapshot file is {} bytes, too short", data.len()),
        );
    }
    let header: [u8; HEADER_LEN] = data[..HEADER_LEN].try_into().expect("header length");
    if &header[0..8] != MAGIC {
        return bad(0, "bad magic, not a roster snapshot".into());
    }
    let version = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
    if !(VERSION..=VERSION_MAX).contains(&version) {
        return bad(
            8,
            format!(
                "snapshot file layout {version}, written by a newer Roster; this binary reads \
                 layouts {VERSION} to {VERSION_MAX}: run the newer binary, or restore the backup \
                 taken before the upgrade (docs/operations.md, \"Upgrading\")"
            ),
        );
    }
    let meta_len = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes")) as u64;
    let body_len = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
    let stored = u32::from_be_bytes(header[24..28].try_into().expect("4 bytes"));
    let want = (HEADER_LEN as u64)
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(body_len));
    if want != Some(data.len() as u64) {
        return bad(
            12,
            format!(
                "header says {meta_len} metadata + {body_len} body bytes but the file has {} \
                 bytes after the header",
                data.len() - HEADER_LEN
            ),
        );
    }
    let meta_end = HEADER_LEN + meta_len as usize;
    let (meta, body) = (&data[HEADER_LEN..meta_end], &data[meta_end..]);
    let actual = checksum(&header, meta, body);
    if actual != stored {
        return bad(
            24,
            format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"),
        );
    }
    Ok(SnapshotFile {
        term,
        index,
        meta: meta.to_vec(),
        body: body.to_vec(),
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::meta::flip_byte;

    #[test]
    fn write_latest_keeps_two() {
        let d = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(d.path().join("snapshots")).unwrap();
        assert_eq!(s.latest().unwrap(), None);
        s.write(1, 10, b"m10", b"body10").unwrap();
        s.write(1, 20, b"m20", b"body20").unwrap();
        s.write(2, 30, b"m30", &vec![7u8; 100_000]).unwrap();
        let l = s.latest().unwrap().unwrap();
        assert_eq!((l.term, l.index, &l.meta[..]), (2, 30, &b"m30"[..]));
        assert_eq!(l.body, vec![7u8; 100_000]);
        let idx: Vec<u64> = s.list().unwrap().iter().map(|x| x.1).collect();
        assert_eq!(idx, vec![30, 20]);
    }

    #[test]
    fn a_streamed_body_is_the_same_file_as_a_whole_one_and_a_failed_one_is_none() {
        let d = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(d.path()).unwrap();
        // 3 MiB in 7-byte writes: crosses the 1 MiB buffer unevenly.
        let body: Vec<u8> = (0..3u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
        let (path, len) = s
            .write_streamed(VERSION, 1, 10, b"meta", &|w| {
                body.chunks(7).try_for_each(|c| w.write_all(c))
            })
            .unwrap();
        assert_eq!(len, body.len() as u64);
        let streamed = fs::read(&path).unwrap();
        let l = s.latest().unwrap().unwrap();
        assert_eq!(
            (l.index, &l.meta[..], l.body == body),
            (10, &b"meta"[..], true)
        );
        // The same snapshot written whole: byte for byte the same file.
        let other = SnapshotStore::open(d.path().join("whole")).unwrap();
        let whole = other.write(1, 10, b"meta", &body).unwrap();
        assert_eq!(fs::read(whole).unwrap(), streamed);

        // A body that fails: its error comes back and the newest snapshot is still the old one.
        let e = s
            .write_streamed(VERSION, 1, 20, b"meta", &|w| {
                w.write_all(&body[..1000])?;
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            })
            .unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(s.latest().unwrap().unwrap().index, 10);
    }

    #[test]
    fn layouts_this_build_does_not_read_are_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(d.path()).unwrap();
        s.write_layout(VERSION_MAX, 1, 10, b"m", b"b").unwrap();
        assert_eq!(s.latest().unwrap().unwrap().body, b"b");
        s.write_layout(VERSION_MAX + 1, 1, 20, b"m", b"b").unwrap();
        let msg = s.latest().unwrap_err().to_string();
        assert!(
            msg.contains(&format!("layout {}", VERSION_MAX + 1)) && msg.contains("newer Roster"),
            "{msg}"
        );
    }

    #[test]
    fn tmp_is_ignored_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(d.path()).unwrap();
        s.write(1, 10, b"m", b"b").unwrap();
        let tmp = d
            .path()
            .join("snap-00000000000000000001-00000000000000000099.snap.tmp");
        fs::write(&tmp, b"half").unwrap();
        assert_eq!(s.latest().unwrap().unwrap().index, 10);
        let s = SnapshotStore::open(d.path()).unwrap();
        assert!(!tmp.exists());
        assert_eq!(s.latest().unwrap().unwrap().index, 10);
    }

    #[test]
    fn corrupt_snapshot_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(d.path()).unwrap();
        s.write(1, 10, b"m", b"b").unwrap();
        let p = s.write(1, 20, b"meta", b"the body").unwrap();
        flip_byte(&p, HEADER_LEN as u64 + 6);
        let err = s.latest().unwrap_err();
        assert!(err.is_corruption());
        let msg = err.to_string();
        assert!(
            msg.contains(&p.display().to_string()) && msg.contains("checksum"),
            "{msg}"
        );

        // Truncated.
        let p = s.write(1, 30, b"meta", b"the body").unwrap();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(HEADER_LEN as u64 + 2).unwrap();
        let msg = s.latest().unwrap_err().to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    }
}
