//! Apache ZooKeeper's on-disk formats (3.4 to 3.9), read-only: snapshot files (`snapshot.<zxid>`) and
//! transaction logs (`log.<zxid>`), with their Adler32 checksums verified.
//!
//! Facts taken from ZooKeeper's sources (`FileSnap`, `FileTxnLog`, `SnapStream`, `SerializeUtils`,
//! `DataTree.serialize`, `ReferenceCountedACLCache`, the jute records):
//! - Jute encoding: big-endian `int`/`long`, `boolean` one byte, `ustring`/`buffer` an `int` length
//!   (-1: null) and the bytes, `vector` an `int` count (-1: null) and the elements.
//! - Snapshot: `FileHeader` (magic `ZKSN`, version, dbid), the sessions (`int` count, then id and
//!   timeout each), the ACL cache (`int` count, then a `long` id and a vector of ACLs each), the nodes
//!   (path, then a `DataNode`: data buffer, `long` ACL id, `StatPersisted`) in pre-order from the root,
//!   whose path is written as "", up to the path "/" that ends them; then the Adler32 of every byte
//!   before it as a `long` and the string "/". 3.6+ append a digest (zxid, digest version, digest) and
//!   a second Adler32 + "/" seal. The checksum is over the uncompressed bytes; `.gz` files are gzip,
//!   `.snappy` files snappy-java streams.
//! - Transaction log: `FileHeader` (magic `ZKLG`), then records: Adler32 `long` of the record bytes,
//!   `int` length, the bytes (`TxnHeader`, the txn, 3.6+ a `TxnDigest`), the byte 0x42 `B`; the rest
//!   of the preallocated file is zeros (a zero length ends the log).
//!
//! Left out: snappy-compressed snapshots (refused with what to do), and the digest's value (it is
//! skipped, not recomputed: the checksums cover the bytes).

use anyhow::{bail, Context, Result};
use roster_proto::{Acl, Id};
use std::io::Read;
use std::path::Path;

/// `ZKSN`.
const SNAP_MAGIC: i32 = 0x5a4b_534e;
/// `ZKLG`.
const LOG_MAGIC: i32 = 0x5a4b_4c47;
/// A log record's end marker.
const RECORD_END: u8 = b'B';

/// Adler32 as `java.util.zip.Adler32` computes it.
pub fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Why a file does not decode: what and where.
#[derive(Debug)]
pub struct FormatError {
    /// Byte offset (in the uncompressed stream).
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

/// A jute reader over bytes, every read bounds-checked.
pub struct Jute<'a> {
    buf: &'a [u8],
    /// Next byte to read.
    pub pos: usize,
}

impl<'a> Jute<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Jute<'a> {
        Jute { buf, pos: 0 }
    }

    fn err<T>(&self, reason: impl Into<String>) -> Result<T, FormatError> {
        Err(FormatError {
            offset: self.pos,
            reason: reason.into(),
        })
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return self.err(format!(
                "{what}: needs {n} bytes, {} left",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A `byte`.
    pub fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }

    /// An `int`.
    pub fn i32(&mut self, what: &str) -> Result<i32, FormatError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `long`.
    pub fn i64(&mut self, what: &str) -> Result<i64, FormatError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A `boolean`.
    pub fn bool(&mut self, what: &str) -> Result<bool, FormatError> {
        Ok(self.u8(what)? != 0)
    }

    /// A `buffer` (`None`: null).
    pub fn buffer(&mut self, what: &str) -> Result<Option<&'a [u8]>, FormatError> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize, what)?))
    }

    /// A `ustring` (null read as "").
    pub fn string(&mut self, what: &str) -> Result<String, FormatError> {
        let at = self.pos;
        match self.buffer(what)? {
            None => Ok(String::new()),
            Some(b) => String::from_utf8(b.to_vec()).map_err(|_| FormatError {
                offset: at,
                reason: format!("{what}: not UTF-8"),
            }),
        }
    }

    /// A vector's element count (null read as 0), checked against the bytes left (each element
    /// takes at least `min_size` bytes) so that a damaged count cannot ask for huge allocations.
    pub fn count(&mut self, what: &str, min_size: usize) -> Result<usize, FormatError> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        if n.saturating_mul(min_size) > self.remaining() {
            return self.err(format!("{what}: count {n} larger than the bytes left"));
        }
        Ok(n)
    }

    /// A vector of ACLs.
    pub fn acls(&mut self, what: &str) -> Result<Vec<Acl>, FormatError> {
        let n = self.count(what, 12)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let perms = self.i32("acl perms")?;
            let scheme = self.string("acl scheme")?;
            let id = self.string("acl id")?;
            out.push(Acl {
                perms,
                id: Id { scheme, id },
            });
        }
        Ok(out)
    }
}

/// `StatPersisted`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatPersisted {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub pzxid: i64,
}

/// One node of a snapshot.
#[derive(Debug, Clone)]
pub struct SnapNode {
    pub path: String,
    pub data: Option<Vec<u8>>,
    /// Id into [`Snapshot::acls`]; -1 is `OPEN_ACL_UNSAFE`.
    pub acl: i64,
    pub stat: StatPersisted,
}

/// A decoded snapshot file.
#[derive(Debug)]
pub struct Snapshot {
    /// The zxid in the file name: every txn up to it is in the snapshot (later ones may be too: the
    /// snapshot is fuzzy, taken while ZooKeeper applied writes).
    pub zxid: i64,
    /// Session id and timeout.
    pub sessions: Vec<(i64, i32)>,
    /// The ACL cache: id and list.
    pub acls: Vec<(i64, Vec<Acl>)>,
    pub nodes: Vec<SnapNode>,
    /// Checksum seals verified (1, or 2 with a 3.6+ digest).
    pub seals: usize,
}

/// A ZooKeeper file name's kind and zxid: `snapshot.<hex>[.gz|.snappy]` or `log.<hex>`.
pub fn zxid_of_name(name: &str, prefix: &str) -> Option<i64> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
    let hex = rest.split('.').next()?;
    u64::from_str_radix(hex, 16).ok().map(|z| z as i64)
}

/// The uncompressed bytes of a snapshot file.
fn read_snapshot_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: gzip does not decompress", path.display()))?;
        Ok(out)
    } else if name.ends_with(".snappy") {
        bail!(
            "{}: snappy-compressed snapshots are not read; restart ZooKeeper once with \
             -Dzookeeper.snapshot.compression.method= (none) so that it writes an uncompressed \
             snapshot, then import again",
            path.display()
        )
    } else {
        Ok(raw)
    }
}

/// Reads a snapshot file, verifying its header, its structure and its checksum seals.
pub fn read_snapshot(path: &Path) -> Result<Snapshot> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let zxid = zxid_of_name(&name, "snapshot")
        .with_context(|| format!("{}: not a snapshot file name", path.display()))?;
    let bytes = read_snapshot_bytes(path)?;
    parse_snapshot(&bytes, zxid).map_err(|e| {
        anyhow::anyhow!(
            "{}: damaged snapshot at byte {} (uncompressed): {}",
            path.display(),
            e.offset,
            e.reason
        )
    })
}

/// Checks a checksum seal at the reader's position: the Adler32 of every byte before it, and "/".
fn seal(r: &mut Jute, bytes: &[u8]) -> Result<(), FormatError> {
    let expected = adler32(&bytes[..r.pos]) as i64;
    let at = r.pos;
    let val = r.i64("checksum")?;
    if val != expected {
        return Err(FormatError {
            offset: at,
            reason: format!("checksum {val:#x} but the bytes give {expected:#x}"),
        });
    }
    let slash = r.string("checksum seal")?;
    if slash != "/" {
        return Err(FormatError {
            offset: at + 8,
            reason: format!("seal {slash:?}, expected \"/\""),
        });
    }
    Ok(())
}

/// Decodes a snapshot's uncompressed bytes.
pub fn parse_snapshot(bytes: &[u8], zxid: i64) -> Result<Snapshot, FormatError> {
    let mut r = Jute::new(bytes);
    let magic = r.i32("magic")?;
    if magic != SNAP_MAGIC {
        return Err(FormatError {
            offset: 0,
            reason: format!("magic {magic:#x}, not ZKSN: not a ZooKeeper snapshot"),
        });
    }
    let _version = r.i32("version")?;
    let _dbid = r.i64("dbid")?;
    let n = r.count("session count", 12)?;
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.i64("session id")?;
        let timeout = r.i32("session timeout")?;
        sessions.push((id, timeout));
    }
    let n = r.count("ACL cache size", 12)?;
    let mut acls = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.i64("ACL id")?;
        let list = r.acls("ACL list")?;
        acls.push((id, list));
    }
    let mut nodes = Vec::new();
    loop {
        let path = r.string("node path")?;
        if path == "/" {
            break;
        }
        let data = r.buffer("node data")?.map(<[u8]>::to_vec);
        let acl = r.i64("node ACL id")?;
        let stat = StatPersisted {
            czxid: r.i64("czxid")?,
            mzxid: r.i64("mzxid")?,
            ctime: r.i64("ctime")?,
            mtime: r.i64("mtime")?,
            version: r.i32("version")?,
            cversion: r.i32("cversion")?,
            aversion: r.i32("aversion")?,
            ephemeral_owner: r.i64("ephemeralOwner")?,
            pzxid: r.i64("pzxid")?,
        };
        // The root is written as "".
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        nodes.push(SnapNode {
            path,
            data,
            acl,
            stat,
        });
    }
    seal(&mut r, bytes)?;
    let mut seals = 1;
    // 3.6+: zxid, digest version, digest, then a second seal.
    if r.remaining() >= 20 {
        let _digest_zxid = r.i64("digest zxid")?;
        let _digest_version = r.i32("digest version")?;
        let _digest = r.i64("digest")?;
        seal(&mut r, bytes)?;
        seals += 1;
    }
    if r.remaining() != 0 {
        return Err(FormatError {
            offset: r.pos,
            reason: format!("{} unexpected bytes after the end", r.remaining()),
        });
    }
    Ok(Snapshot {
        zxid,
        sessions,
        acls,
        nodes,
        seals,
    })
}

/// One record of a transaction log: its header fields and the txn bytes after the header.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub session_id: i64,
    pub zxid: i64,
    pub time: i64,
    pub op: i32,
    /// The txn record (and, 3.6+, a trailing digest).
    pub body: Vec<u8>,
    /// Where the record starts in its file.
    pub offset: usize,
}

/// A decoded transaction log file.
#[derive(Debug)]
pub struct LogFile {
    pub records: Vec<LogRecord>,
    /// A record cut short at the end of the file (ZooKeeper stopped mid-write): ignored, as
    /// ZooKeeper ignores it.
    pub torn_tail: Option<usize>,
}

/// Reads a transaction log file, verifying each record's checksum and end marker. A damaged record
/// is an error naming the file and offset; a record cut off by the end of the file ends the log.
pub fn read_log(path: &Path) -> Result<LogFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let damaged = |offset: usize, reason: String| {
        anyhow::anyhow!(
            "{}: damaged transaction log at byte {offset}: {reason}. ZooKeeper would refuse \
             this log too; import from a copy taken before the damage, or move this file and \
             later ones aside to import up to the record before it",
            path.display()
        )
    };
    let mut r = Jute::new(&bytes);
    let magic = r.i32("magic").map_err(|e| damaged(e.offset, e.reason))?;
    if magic != LOG_MAGIC {
        bail!(
            "{}: magic {magic:#x}, not ZKLG: not a ZooKeeper transaction log",
            path.display()
        );
    }
    let _version = r.i32("version").map_err(|e| damaged(e.offset, e.reason))?;
    let _dbid = r.i64("dbid").map_err(|e| damaged(e.offset, e.reason))?;
    let mut records = Vec::new();
    let mut torn_tail = None;
    while r.remaining() > 0 {
        let start = r.pos;
        if r.remaining() < 12 {
            if bytes[start..].iter().any(|&b| b != 0) {
                torn_tail = Some(start);
            }
            break;
        }
        let crc = r
            .i64("record checksum")
            .map_err(|e| damaged(e.offset, e.reason))?;
        let len = r
            .i32("record length")
            .map_err(|e| damaged(e.offset, e.reason))?;
        if len == 0 && crc == 0 {
            // The zero-filled preallocated tail.
            break;
        }
        if len < 0 {
            return Err(damaged(start, format!("record length {len}")));
        }
        let len = len as usize;
        if r.remaining() < len + 1 {
            torn_tail = Some(start);
            break;
        }
        let body = &bytes[r.pos..r.pos + len];
        let actual = adler32(body) as i64;
        // A record ZooKeeper is still writing, read live: its end is still the zero-filled
        // preallocation (no end marker, nothing after it), so it is cut short, not damaged.
        if actual != crc && bytes[r.pos + len..].iter().all(|&b| b == 0) {
            torn_tail = Some(start);
            break;
        }
        r.pos += len;
        if actual != crc {
            return Err(damaged(
                start,
                format!("checksum {crc:#x} but the record gives {actual:#x}"),
            ));
        }
        let end = r
            .u8("end marker")
            .map_err(|e| damaged(e.offset, e.reason))?;
        if end != RECORD_END {
            return Err(damaged(
                r.pos - 1,
                format!("end marker {end:#x}, expected 0x42"),
            ));
        }
        let mut h = Jute::new(body);
        let header = (|| -> Result<_, FormatError> {
            Ok((
                h.i64("session id")?,
                h.i32("cxid")?, // unused
                h.i64("zxid")?,
                h.i64("time")?,
                h.i32("type")?,
            ))
        })()
        .map_err(|e| damaged(start + 12 + e.offset, e.reason))?;
        records.push(LogRecord {
            session_id: header.0,
            zxid: header.2,
            time: header.3,
            op: header.4,
            body: body[h.pos..].to_vec(),
            offset: start,
        });
    }
    Ok(LogFile { records, torn_tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_matches_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        let big = vec![0xffu8; 100_000];
        // Reference computed by the unchunked definition.
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &big {
            a = (a + x as u64) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(adler32(&big), ((b << 16) | a) as u32);
    }

    #[test]
    fn names_give_zxids() {
        assert_eq!(zxid_of_name("snapshot.1a", "snapshot"), Some(0x1a));
        assert_eq!(
            zxid_of_name("snapshot.100000003.gz", "snapshot"),
            Some(0x1_0000_0003)
        );
        assert_eq!(zxid_of_name("log.200000001", "log"), Some(0x2_0000_0001));
        assert_eq!(zxid_of_name("log.xyz", "log"), None);
        assert_eq!(zxid_of_name("snapshot.1", "log"), None);
    }

    fn jute_string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// A minimal snapshot: no sessions, no ACLs, the root only, one seal.
    fn tiny_snapshot() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&SNAP_MAGIC.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        jute_string(&mut b, "");
        b.extend_from_slice(&(-1i32).to_be_bytes()); // null data
        b.extend_from_slice(&(-1i64).to_be_bytes()); // open ACL
        for v in [0i64, 0, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for v in [0i32, 3, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&7i64.to_be_bytes());
        jute_string(&mut b, "/");
        let sum = adler32(&b) as i64;
        b.extend_from_slice(&sum.to_be_bytes());
        jute_string(&mut b, "/");
        b
    }

    #[test]
    fn a_snapshot_decodes_and_a_flipped_byte_is_caught() {
        let b = tiny_snapshot();
        let s = parse_snapshot(&b, 5).unwrap();
        assert_eq!(s.nodes.len(), 1);
        assert_eq!(s.nodes[0].path, "/");
        assert_eq!(s.nodes[0].stat.cversion, 3);
        assert_eq!(s.nodes[0].stat.pzxid, 7);
        assert_eq!(s.seals, 1);
        let mut bad = b.clone();
        bad[40] ^= 1;
        let e = parse_snapshot(&bad, 5).unwrap_err();
        assert!(e.reason.contains("checksum"), "{}", e.reason);
        let e = parse_snapshot(&b[..b.len() - 3], 5).unwrap_err();
        assert!(e.reason.contains("checksum seal"), "{}", e.reason);
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut b = tiny_snapshot();
        b[16..20].copy_from_slice(&i32::MAX.to_be_bytes());
        let e = parse_snapshot(&b, 5).unwrap_err();
        assert!(
            e.reason.contains("larger than the bytes left"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn a_log_with_a_damaged_record_names_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(&LOG_MAGIC.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&0i64.to_be_bytes());
        let mut rec = Vec::new();
        rec.extend_from_slice(&0x42i64.to_be_bytes()); // session
        rec.extend_from_slice(&1i32.to_be_bytes()); // cxid
        rec.extend_from_slice(&0x1_0000_0001i64.to_be_bytes()); // zxid
        rec.extend_from_slice(&1000i64.to_be_bytes()); // time
        rec.extend_from_slice(&(-10i32).to_be_bytes()); // createSession
        rec.extend_from_slice(&30000i32.to_be_bytes()); // timeout
        b.extend_from_slice(&(adler32(&rec) as i64).to_be_bytes());
        b.extend_from_slice(&(rec.len() as i32).to_be_bytes());
        b.extend_from_slice(&rec);
        b.push(b'B');
        b.extend_from_slice(&[0u8; 64]);
        let p = dir.path().join("log.100000001");
        std::fs::write(&p, &b).unwrap();
        let log = read_log(&p).unwrap();
        assert_eq!(log.records.len(), 1);
        assert_eq!(log.records[0].zxid, 0x1_0000_0001);
        assert_eq!(log.records[0].op, -10);
        assert_eq!(log.records[0].body, 30000i32.to_be_bytes());
        assert!(log.torn_tail.is_none());
        b[16 + 12 + 30] ^= 0x10;
        std::fs::write(&p, &b).unwrap();
        let e = read_log(&p).unwrap_err().to_string();
        assert!(e.contains("log.100000001") && e.contains("byte 16"), "{e}");
        // The same record half written (read while ZooKeeper writes it): zeros from some byte of
        // its body on, no end marker yet. A record cut short, not damage.
        b[16 + 12 + 30] ^= 0x10;
        let end = 16 + 12 + rec.len();
        for x in &mut b[end - 6..=end] {
            *x = 0;
        }
        std::fs::write(&p, &b).unwrap();
        let log = read_log(&p).unwrap();
        assert!(log.records.is_empty());
        assert_eq!(log.torn_tail, Some(16));
    }
}
