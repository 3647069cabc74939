//! Segmented write-ahead log of opaque byte records keyed by a `u64` index, with group commit.
//!
//! # On disk
//!
//! `<dir>/<first index, 20 decimal digits>.seg` segment files, plus `<dir>/purged.meta` (a
//! [`MetaStore`] file holding the purge point). A segment is a sequence of records, all integers
//! big-endian:
//!
//! ```text
//! [u32 payload len][u32 crc32c(index as 8 BE bytes ++ payload)][u64 index][payload]
//! ```
//!
//! Records are contiguous: the first record of a segment has the index in its file name and
//! every next record (in this and the following segment) has the next index. A new segment is
//! started once the current one reaches [`WalOptions::segment_target_bytes`] (64 MiB by default);
//! the old one is fdatasynced before the new one is created, so only the last segment can ever
//! hold unsynced bytes.
//!
//! # Writes: group commit
//!
//! One flusher thread owns the files. Every mutation (append, truncate, purge, barrier) is
//! applied to the in-memory copy of the log under a lock and queued to the flusher in the same
//! critical section, so the flusher sees them in the order callers observed them. The flusher
//! takes everything queued, writes all queued appends with one `write` per segment, issues ONE
//! `fdatasync` for the batch, then completes every callback of the batch. Truncate, purge and
//! barriers first make all earlier appends durable, so nothing is ever reordered.
//! Segment creation and removal are followed by a directory fsync.
//!
//! A purge makes its purge point durable on the flusher and returns; deleting the purged segment
//! files (tens of milliseconds for a 64 MiB file on ext4) and freeing their in-memory records
//! happen on a second thread, the janitor, so appends and the caller never wait for them. A crash
//! before the janitor is done leaves files wholly below the purge point, which recovery deletes.
//!
//! # Preallocation
//!
//! The last segment is kept zero-filled [`WalOptions::prealloc_bytes`] ahead of its last record
//! (real zeros written and fdatasynced, not a sparse hole or unwritten extents). Appends then
//! overwrite blocks that already exist, so the `fdatasync` of a batch flushes data only: the file
//! size and block map did not change, and the file system has no journal commit to make (on ext4
//! this takes roughly a third off each fdatasync). The zeros are written right after a batch was
//! acknowledged, never in front of one. A segment is trimmed to its records before it is sealed
//! and on clean shutdown; after a crash, recovery recognises an all-zero tail as preallocation
//! and trims it without complaint (anything else there is a torn write, as below).
//!
//! Any I/O error puts the log into a failed state: the failing and all later operations
//! complete with an error, because what reached the disk is unknown. Restarting the process
//! recovers from the durable state.
//!
//! # Reads
//!
//! All records after the purge point are kept decoded in memory ([`Bytes`] payloads), so reads
//! never touch the disk. The caller is expected to purge after each snapshot.
//!
//! # Recovery
//!
//! [`Wal::open`] reads every segment. A damaged record (short header, short payload, bad
//! checksum) at the very tail of the last segment, followed by no valid record, is a torn write
//! from a crash: it is logged and truncated away. Anything else — a damaged record followed by
//! valid data, damage in a sealed (non-last) segment, a gap or overlap in indexes, a missing
//! first segment — is corruption of acknowledged data and [`Wal::open`] fails with
//! [`Error::Corrupt`] naming the file and byte offset. Nothing is ever dropped silently.
//!
//! Caveat of that rule: with group commit, a crash in the middle of a batch that was never
//! acknowledged could in principle leave a hole *followed* by valid records of the same batch
//! (if the file system persisted later pages before earlier ones); that is reported as
//! corruption too, erring on the side of refusing to start.
//!
//! # Left out
//!
//! Compression, encryption, and any record larger than [`MAX_RECORD_BYTES`].
//!
//! Where the log starts: an empty log that was never purged may start at any index (its first
//! append decides); after a purge it continues at the purge point + 1 (or where it already
//! was). Whenever the first segment of an empty log is created at an index other than the
//! recorded one, that index is first stored durably in `<dir>/base.meta`, so recovery can tell
//! a lost first segment from a log that simply starts later.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::meta::MetaStore;
use super::{create_dir_durable, fsync_dir, Error, IoResultExt, Result};

/// Bytes of record header before the payload.
pub const RECORD_HEADER_LEN: usize = 16;
/// Largest accepted record payload.
pub const MAX_RECORD_BYTES: usize = 256 << 20;
/// Default size at which a new segment is started.
pub const DEFAULT_SEGMENT_TARGET_BYTES: u64 = 64 << 20;
/// Default zero-filled room kept ahead of the last record (see the module docs).
pub const DEFAULT_PREALLOC_BYTES: u64 = 1 << 20;

const SEG_EXT: &str = "seg";
const PURGE_KEY: &str = "purged";
const BASE_KEY: &str = "base";
const MAX_OPS_PER_BATCH: usize = 4096;

/// Tunables for [`Wal::open`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new segment once the current one is at least this large.
    pub segment_target_bytes: u64,
    /// Zero-filled room kept ahead of the last record; 0 turns preallocation off.
    pub prealloc_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_target_bytes: DEFAULT_SEGMENT_TARGET_BYTES,
            prealloc_bytes: DEFAULT_PREALLOC_BYTES,
        }
    }
}

/// Counters of the flusher's work, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// `fdatasync`/`fsync` calls on segment files.
    pub fsyncs: u64,
    /// fsyncs of the log directory (segment created or removed).
    pub dir_fsyncs: u64,
    /// Batches processed by the flusher.
    pub batches: u64,
    /// Records written.
    pub records_written: u64,
    /// Record bytes (headers included) written.
    pub bytes_written: u64,
}

#[derive(Default)]
struct Counters {
    fsyncs: AtomicU64,
    dir_fsyncs: AtomicU64,
    batches: AtomicU64,
    records_written: AtomicU64,
    bytes_written: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Completion callback of a queued operation, called on the flusher thread once the operation
/// (and everything queued before it) is durable, or with the error that prevented that.
pub type Done = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// A closure run on the flusher thread, ordered with the log's writes.
pub type OrderedWrite = Box<dyn FnOnce() -> Result<()> + Send + 'static>;

/// Handle to the completion of a queued operation.
#[must_use = "the operation is only known durable once the Pending completes"]
pub struct Pending(tokio::sync::oneshot::Receiver<Result<()>>);

impl Pending {
    fn new() -> (Done, Pending) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        (done, Pending(rx))
    }

    /// Block the current thread until the operation is durable. Must not be called from inside
    /// an async runtime's worker (use [`Pending::wait_async`] there).
    pub fn wait(self) -> Result<()> {
        self.0.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Wait asynchronously until the operation is durable.
    pub async fn wait_async(self) -> Result<()> {
        self.0.await.map_err(|_| Error::Closed)?
    }
}

/// The durable purge point: everything at or below `index` is gone; `marker` is an opaque
/// value stored with it (the Raft layer keeps the purged log id there).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PurgeRecord {
    index: u64,
    marker: Vec<u8>,
}

enum Op {
    Append {
        records: Vec<(u64, Bytes)>,
        done: Done,
    },
    Truncate {
        last_kept: Option<u64>,
        done: Done,
    },
    Purge {
        upto: u64,
        marker: Bytes,
        done: Done,
    },
    Barrier {
        write: Option<OrderedWrite>,
        done: Done,
    },
    Background {
        key: &'static str,
        write: OrderedWrite,
    },
    Shutdown,
}

/// In-memory view of the log, the source of truth for readers.
struct Mem {
    /// Index of `entries[0]`; when empty, the index the next append must have.
    first: u64,
    entries: VecDeque<Bytes>,
    purged: Option<(u64, Bytes)>,
    tx: mpsc::Sender<Op>,
    janitor: mpsc::Sender<Chore>,
}

/// Work taken off the flusher and off callers: deleting purged segment files, freeing memory.
enum Chore {
    /// Delete these segment files, then fsync the directory.
    Remove(Vec<PathBuf>),
    /// Drop purged in-memory records.
    Free(VecDeque<Bytes>),
    /// Stop after the chores queued before.
    Stop,
}

/// The janitor thread's loop. Failures are logged: a file it could not delete is wholly below the
/// durable purge point, and the next recovery deletes it.
fn janitor(dir: PathBuf, stats: Arc<Counters>, rx: mpsc::Receiver<Chore>) {
    while let Ok(chore) = rx.recv() {
        match chore {
            Chore::Remove(paths) => {
                for p in &paths {
                    if let Err(e) = fs::remove_file(p) {
                        tracing::warn!(path = %p.display(), error = %e, "could not delete a purged log segment; recovery will");
                    }
                }
                match fsync_dir(&dir) {
                    Ok(()) => bump(&stats.dir_fsyncs, 1),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "fsync of the log directory failed")
                    }
                }
            }
            Chore::Free(records) => drop(records),
            Chore::Stop => return,
        }
    }
}

impl Mem {
    fn next_index(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

struct Inner {
    dir: PathBuf,
    mem: Mutex<Mem>,
    failed: Arc<Mutex<Option<String>>>,
    stats: Arc<Counters>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    janitor: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mem) = self.mem.get_mut() {
            let _ = mem.tx.send(Op::Shutdown);
        }
        let handle = self.thread.get_mut().ok().and_then(|h| h.take());
        if let Some(h) = handle {
            // The last handle may be dropped by a callback running on the flusher itself.
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
        if let Ok(mem) = self.mem.get_mut() {
            let _ = mem.janitor.send(Chore::Stop);
        }
        if let Some(h) = self.janitor.get_mut().ok().and_then(|h| h.take()) {
            let _ = h.join();
        }
    }
}

/// A write-ahead log handle. Cheap to clone; all clones share one log and one flusher thread,
/// which stops (after making everything queued durable) when the last clone is dropped.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .finish()
    }
}

impl Wal {
    /// Open the log in `dir` (created if missing), recovering from a crash as described in the
    /// module docs, and start its flusher thread.
    pub fn open(dir: impl Into<PathBuf>, opts: WalOptions) -> Result<Wal> {
        let dir = dir.into();
        create_dir_durable(&dir)?;
        let meta = MetaStore::open(&dir)?;
        let purge: Option<PurgeRecord> = meta.get_value(PURGE_KEY)?;
        let purged_idx = purge.as_ref().map(|p| p.index);
        let base: Option<u64> = meta.get_value(BASE_KEY)?;
        let stats = Arc::new(Counters::default());
        let failed = Arc::new(Mutex::new(None));

        let recovered = recover(&dir, purged_idx, base.unwrap_or(0))?;
        let (janitor_tx, janitor_rx) = mpsc::channel();

        let mut flusher = Flusher {
            dir: dir.clone(),
            meta,
            opts,
            stats: stats.clone(),
            failed: failed.clone(),
            segs: recovered.segs,
            active: None,
            buf: Vec::new(),
            dirty: false,
            purged: purged_idx,
            base: base.unwrap_or(0),
            janitor: janitor_tx.clone(),
        };
        // Drop a last segment that lies wholly at or below the purge point.
        let leftovers = flusher.take_purged_segments();
        for p in &leftovers {
            fs::remove_file(p).at(p)?;
        }
        if !leftovers.is_empty() {
            fsync_dir(&dir)?;
        }
        let janitor_thread = {
            let (jdir, jstats) = (dir.clone(), stats.clone());
            thread::Builder::new()
                .name("roster-wal-janitor".into())
                .spawn(move || janitor(jdir, jstats, janitor_rx))
                .at(&dir)?
        };

        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("roster-wal-flusher".into())
            .spawn(move || flusher.run(rx))
            .at(&dir)?;

        let mem = Mem {
            first: recovered.first,
            entries: recovered.entries,
            purged: purge.map(|p| (p.index, Bytes::from(p.marker))),
            tx,
            janitor: janitor_tx,
        };
        Ok(Wal {
            inner: Arc::new(Inner {
                dir,
                mem: Mutex::new(mem),
                failed,
                stats,
                thread: Mutex::new(Some(thread)),
                janitor: Mutex::new(Some(janitor_thread)),
            }),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn mem(&self) -> MutexGuard<'_, Mem> {
        // The lock is never held across a panic-prone section; recover the data regardless.
        self.inner.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_not_failed(&self) -> Result<()> {
        match &*self.inner.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(msg) => Err(Error::Failed(msg.clone())),
            None => Ok(()),
        }
    }

    /// Index of the first record held (after the purge point), `None` if the log is empty.
    pub fn first_index(&self) -> Option<u64> {
        let m = self.mem();
        (!m.entries.is_empty()).then_some(m.first)
    }

    /// Index of the last record held, `None` if the log is empty.
    pub fn last_index(&self) -> Option<u64> {
        let m = self.mem();
        (!m.entries.is_empty()).then(|| m.next_index() - 1)
    }

    /// The index the next appended record must have.
    pub fn next_index(&self) -> u64 {
        self.mem().next_index()
    }

    /// The purge point and the marker stored with it, if anything was ever purged.
    pub fn purged(&self) -> Option<(u64, Bytes)> {
        self.mem().purged.clone()
    }

    /// The payload of record `index`, if held.
    pub fn get(&self, index: u64) -> Option<Bytes> {
        let m = self.mem();
        let off = index.checked_sub(m.first)?;
        m.entries.get(usize::try_from(off).ok()?).cloned()
    }

    /// The held records within `range`, in order. The range is clamped to what the log holds,
    /// so the result is always a contiguous run. With `max_bytes`, stops once the payloads
    /// returned exceed that many bytes (at least one record is returned if any is in range).
    pub fn read(
        &self,
        range: impl RangeBounds<u64>,
        max_bytes: Option<usize>,
    ) -> Vec<(u64, Bytes)> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        let m = self.mem();
        let start = start.max(m.first);
        let end = end.min(m.next_index());
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for idx in start..end {
            let p = m.entries[(idx - m.first) as usize].clone();
            bytes += p.len();
            out.push((idx, p));
            if max_bytes.is_some_and(|max| bytes >= max) {
                break;
            }
        }
        out
    }

    /// Flusher counters.
    pub fn stats(&self) -> WalStats {
        let c = &self.inner.stats;
        WalStats {
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            dir_fsyncs: c.dir_fsyncs.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            records_written: c.records_written.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Append records. They must be contiguous and start at [`Wal::next_index`] (or anywhere, if
    /// the log holds nothing and was never purged); otherwise nothing is appended and an error
    /// is returned (and `done` is dropped uncalled).
    ///
    /// On `Ok` the records are readable immediately; `done` is called on the flusher thread once
    /// they are durable (or with the I/O error that prevented it). An empty `records` is a
    /// barrier: `done` fires once everything queued before is durable.
    pub fn append<F>(&self, records: Vec<(u64, Bytes)>, done: F) -> Result<()>
    where
        F: FnOnce(Result<()>) + Send + 'static,
    {
        let mut m = self.mem();
        self.check_not_failed()?;
        // A log that holds nothing and was never purged may start anywhere.
        let fresh = m.entries.is_empty() && m.purged.is_none();
        let start = match records.first() {
            Some((first, _)) if fresh => *first,
            _ => m.next_index(),
        };
        for (next, (idx, payload)) in (start..).zip(&records) {
            if *idx != next {
                return Err(Error::Invalid(format!(
                    "append of index {idx} rejected: the log's next index is {next} (a log must \
                     have no holes and appends never overwrite; truncate first)"
                )));
            }
            if payload.len() > MAX_RECORD_BYTES {
                return Err(Error::Invalid(format!(
                    "record {idx} is {} bytes, larger than the {MAX_RECORD_BYTES} byte limit",
                    payload.len()
                )));
            }
        }
        let payloads: Vec<Bytes> = records.iter().map(|(_, p)| p.clone()).collect();
        m.tx.send(Op::Append {
            records,
            done: Box::new(done),
        })
        .map_err(|_| Error::Closed)?;
        if fresh {
            m.first = start;
        }
        m.entries.extend(payloads);
        Ok(())
    }

    /// [`append`](Self::append) returning a [`Pending`] instead of taking a callback.
    pub fn append_pending(&self, records: Vec<(u64, Bytes)>) -> Result<Pending> {
        let (done, pending) = Pending::new();
        self.append(records, done)?;
        Ok(pending)
    }

    /// Drop every record with an index greater than `last_kept` (`None`: drop all records).
    /// Readers stop seeing them immediately; the returned [`Pending`] completes once the removal
    /// is durable. Truncating into the purged prefix is an error.
    pub fn truncate_after(&self, last_kept: Option<u64>) -> Result<Pending> {
        let mut m = self.mem();
        self.check_not_failed()?;
        match last_kept {
            None => {
                if let Some((p, _)) = &m.purged {
                    return Err(Error::Invalid(format!(
                        "cannot truncate the whole log: records up to {p} were purged"
                    )));
                }
            }
            Some(k) => {
                if let Some((p, _)) = &m.purged {
                    if k < *p {
                        return Err(Error::Invalid(format!(
                            "cannot truncate after {k}: records up to {p} were purged"
                        )));
                    }
                }
            }
        }
        let (done, pending) = Pending::new();
        m.tx.send(Op::Truncate { last_kept, done })
            .map_err(|_| Error::Closed)?;
        match last_kept {
            None => m.entries.clear(),
            Some(k) => {
                let keep = (k + 1).saturating_sub(m.first).min(m.entries.len() as u64) as usize;
                m.entries.truncate(keep);
                if k + 1 < m.first {
                    // Everything went; continue right after the kept index.
                    m.first = k + 1;
                }
            }
        }
        Ok(pending)
    }

    /// Forget every record with index `<= upto` and durably record `upto` (and `marker`) as the
    /// purge point; whole segments at or below it are deleted. `upto` may be beyond the last
    /// record, in which case the log becomes empty and continues at `upto + 1`.
    ///
    /// The purge point is durable before any segment is removed.
    pub fn purge_upto(&self, upto: u64, marker: Bytes) -> Result<Pending> {
        let mut m = self.mem();
        self.check_not_failed()?;
        if let Some((p, _)) = &m.purged {
            if upto < *p {
                return Err(Error::Invalid(format!(
                    "cannot purge up to {upto}: already purged up to {p}"
                )));
            }
        }
        let (done, pending) = Pending::new();
        m.tx.send(Op::Purge {
            upto,
            marker: marker.clone(),
            done,
        })
        .map_err(|_| Error::Closed)?;
        let next = m.next_index();
        // The purged records are freed on the janitor: splitting off the (short) kept tail is
        // cheap, dropping a hundred thousand payloads under the lock is not.
        let gone = if upto >= next {
            std::mem::take(&mut m.entries)
        } else if upto >= m.first {
            let n = (upto + 1 - m.first) as usize;
            let kept = m.entries.split_off(n);
            std::mem::replace(&mut m.entries, kept)
        } else {
            VecDeque::new()
        };
        if !gone.is_empty() {
            let _ = m.janitor.send(Chore::Free(gone));
        }
        m.first = m.first.max(upto + 1);
        m.purged = Some((upto, marker));
        Ok(pending)
    }

    /// Run `write` on the flusher thread after everything queued before it is durable, and
    /// complete the returned [`Pending`] with its result. Used to keep small meta writes (the
    /// Raft vote) ordered with the log.
    pub fn barrier(&self, write: Option<OrderedWrite>) -> Result<Pending> {
        let m = self.mem();
        self.check_not_failed()?;
        let (done, pending) = Pending::new();
        m.tx.send(Op::Barrier { write, done })
            .map_err(|_| Error::Closed)?;
        Ok(pending)
    }

    /// Completes once everything queued so far is durable.
    pub fn flush(&self) -> Result<Pending> {
        self.barrier(None)
    }

    /// Queue `write` to run on the flusher thread after everything queued before it is durable,
    /// without waiting. When several writes with the same `key` are queued in one batch only the
    /// last one runs (each is expected to overwrite the same small file with a newer value).
    /// A failure puts the log in the failed state, reported by every later operation.
    pub fn background(&self, key: &'static str, write: OrderedWrite) -> Result<()> {
        let m = self.mem();
        self.check_not_failed()?;
        m.tx.send(Op::Background { key, write })
            .map_err(|_| Error::Closed)
    }
}

// ---------------------------------------------------------------------------------------------
// Record codec

fn encode_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let idx = index.to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&idx), payload);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&idx);
    out.extend_from_slice(payload);
}

/// Parse the record at `pos`: its index and the payload's byte range, or why it is damaged.
fn parse_record(data: &[u8], pos: usize) -> std::result::Result<(u64, usize, usize), String> {
    let avail = data.len() - pos;
    if avail < RECORD_HEADER_LEN {
        return Err(format!(
            "truncated record header ({avail} of {RECORD_HEADER_LEN} bytes)"
        ));
    }
    let h = &data[pos..pos + RECORD_HEADER_LEN];
    let len = u32::from_be_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(h[4..8].try_into().expect("4 bytes"));
    let index = u64::from_be_bytes(h[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD_BYTES {
        return Err(format!("record length field {len} exceeds the maximum"));
    }
    let start = pos + RECORD_HEADER_LEN;
    if len > data.len() - start {
        return Err(format!(
            "record claims {len} payload bytes but only {} remain in the file",
            data.len() - start
        ));
    }
    let end = start + len;
    let actual = crc32c::crc32c_append(crc32c::crc32c(&h[8..16]), &data[start..end]);
    if actual != crc {
        return Err(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    Ok((index, start, end))
}

/// Look for a valid record anywhere after a damaged one at `bad`, whose index would be
/// `expected`. Returns its offset and index.
fn find_valid_record_after(data: &[u8], bad: usize, expected: u64) -> Option<(usize, u64)> {
    // Records are at least RECORD_HEADER_LEN bytes, which bounds the plausible indexes.
    let max_index = expected.saturating_add(((data.len() - bad) / RECORD_HEADER_LEN) as u64 + 1);
    let last_start = data.len().checked_sub(RECORD_HEADER_LEN)?;
    for q in (bad + 1)..=last_start {
        let index = u64::from_be_bytes(data[q + 8..q + 16].try_into().expect("8 bytes"));
        if index < expected || index > max_index {
            continue;
        }
        if let Ok((idx, _, _)) = parse_record(data, q) {
            return Some((q, idx));
        }
    }
    None
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SEG_EXT}"))
}

/// Parse `<20 digits>.seg`.
fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Recovery

struct Segment {
    first: u64,
    path: PathBuf,
    /// Byte offset of each record in the file.
    offsets: Vec<u64>,
    /// File length including bytes still buffered in the flusher.
    len: u64,
    /// Length of the file on disk: `len` plus the zero-filled preallocation beyond it (at least
    /// `len` once the buffer is written).
    alloc: u64,
}

impl Segment {
    /// Index of the last record, `None` if the segment holds none.
    fn last_index(&self) -> Option<u64> {
        if self.offsets.is_empty() {
            None
        } else {
            Some(self.first + self.offsets.len() as u64 - 1)
        }
    }

    fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

struct Recovered {
    segs: Vec<Segment>,
    first: u64,
    entries: VecDeque<Bytes>,
}

fn recover(dir: &Path, purged: Option<u64>, base: u64) -> Result<Recovered> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for ent in fs::read_dir(dir).at(dir)? {
        let ent = ent.at(dir)?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = parse_segment_name(&name) {
            found.push((first, ent.path()));
        } else if name.ends_with(".meta") || name.ends_with(".meta.tmp") {
            // MetaStore's files.
        } else {
            tracing::warn!(path = %ent.path().display(), "ignoring unknown file in the log directory");
        }
    }
    found.sort();

    let mut dir_changed = false;
    // Leftovers of an interrupted purge: segments wholly at or below the purge point.
    if let Some(p) = purged {
        while found.len() >= 2 && found[1].0 <= p.saturating_add(1) {
            let (_, path) = found.remove(0);
            tracing::info!(path = %path.display(), purged = p, "removing segment left behind by an interrupted purge");
            fs::remove_file(&path).at(&path)?;
            dir_changed = true;
        }
    }

    let start = purged.map_or(base, |p| base.max(p + 1));
    let mut segs: Vec<Segment> = Vec::new();
    let mut entries = VecDeque::new();
    let n = found.len();
    for (i, (first, path)) in found.into_iter().enumerate() {
        let is_last = i + 1 == n;
        match segs.last() {
            None => {
                if first > start || (purged.is_none() && first != start) {
                    let why = match purged {
                        Some(p) => format!("the log was purged up to {p}"),
                        None => format!("nothing was purged and the log began at index {start}"),
                    };
                    return Err(Error::corrupt(
                        &path,
                        0,
                        format!(
                            "the oldest segment starts at index {first}, but {why}: a segment \
                             file was lost, or files from another log were mixed in"
                        ),
                    ));
                }
            }
            Some(prev) => {
                if first != prev.next_index() {
                    return Err(Error::corrupt(
                        &path,
                        0,
                        format!(
                            "segment starts at index {first} but the previous segment {} ends \
                             at index {}: records are missing or duplicated",
                            prev.path.display(),
                            prev.next_index() - 1
                        ),
                    ));
                }
            }
        }
        let Some((seg, payloads)) = scan_segment(&path, first, is_last, &mut dir_changed)? else {
            continue;
        };
        for (k, p) in payloads.into_iter().enumerate() {
            if first + k as u64 >= start {
                entries.push_back(p);
            }
        }
        segs.push(seg);
    }
    if dir_changed {
        fsync_dir(dir)?;
    }
    Ok(Recovered {
        segs,
        first: start,
        entries,
    })
}

/// Read and verify one segment. Returns `None` if it was an empty last segment (removed).
fn scan_segment(
    path: &Path,
    first: u64,
    is_last: bool,
    dir_changed: &mut bool,
) -> Result<Option<(Segment, Vec<Bytes>)>> {
    let data = fs::read(path).at(path)?;
    let mut pos = 0usize;
    let mut expected = first;
    let mut offsets = Vec::new();
    let mut payloads = Vec::new();
    while pos < data.len() {
        match parse_record(&data, pos) {
            Ok((index, start, end)) => {
                if index != expected {
                    return Err(Error::corrupt(
                        path,
                        pos as u64,
                        format!(
                            "record has index {index} where index {expected} was expected: \
                             records are missing or duplicated"
                        ),
                    ));
                }
                offsets.push(pos as u64);
                payloads.push(Bytes::copy_from_slice(&data[start..end]));
                pos = end;
                expected += 1;
            }
            Err(reason) => {
                if !is_last {
                    return Err(Error::corrupt(
                        path,
                        pos as u64,
                        format!(
                            "damaged record ({reason}) in a sealed segment that is not the log's \
                             tail"
                        ),
                    ));
                }
                if data[pos..].iter().all(|b| *b == 0) {
                    // The zero-filled preallocation of a log that was not shut down cleanly.
                    tracing::debug!(
                        path = %path.display(),
                        offset = pos,
                        bytes = data.len() - pos,
                        "trimming the preallocated zeros after the last record"
                    );
                    let f = OpenOptions::new().write(true).open(path).at(path)?;
                    f.set_len(pos as u64).at(path)?;
                    f.sync_all().at(path)?;
                    break;
                }
                if let Some((at, idx)) = find_valid_record_after(&data, pos, expected) {
                    return Err(Error::corrupt(
                        path,
                        pos as u64,
                        format!(
                            "damaged record ({reason}) followed by a valid record (index {idx}) at \
                             offset {at}: this is not a torn write at the tail"
                        ),
                    ));
                }
                tracing::warn!(
                    path = %path.display(),
                    offset = pos,
                    dropped_bytes = data.len() - pos,
                    "torn write at the log tail ({reason}); truncating it away"
                );
                let f = OpenOptions::new().write(true).open(path).at(path)?;
                f.set_len(pos as u64).at(path)?;
                f.sync_all().at(path)?;
                break;
            }
        }
    }
    if offsets.is_empty() {
        if is_last {
            tracing::warn!(path = %path.display(), "removing empty last log segment");
            fs::remove_file(path).at(path)?;
            *dir_changed = true;
            return Ok(None);
        }
        return Err(Error::corrupt(path, 0, "sealed segment holds no records"));
    }
    let seg = Segment {
        first,
        path: path.to_path_buf(),
        offsets,
        len: pos as u64,
        alloc: pos as u64,
    };
    Ok(Some((seg, payloads)))
}

// ---------------------------------------------------------------------------------------------
// Flusher

struct Flusher {
    dir: PathBuf,
    meta: MetaStore,
    opts: WalOptions,
    stats: Arc<Counters>,
    failed: Arc<Mutex<Option<String>>>,
    segs: Vec<Segment>,
    /// Open handle on the last segment.
    active: Option<File>,
    /// Encoded records for the last segment not yet written.
    buf: Vec<u8>,
    /// The last segment has bytes (buffered or written) not yet fdatasynced.
    dirty: bool,
    purged: Option<u64>,
    /// Durable index of the first segment created in an empty log (`base.meta`, 0 if absent).
    base: u64,
    /// Deletes purged segment files off this thread.
    janitor: mpsc::Sender<Chore>,
}

impl Flusher {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(op) = rx.recv() {
            let mut batch = vec![op];
            while batch.len() < MAX_OPS_PER_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if !self.process(batch) {
                break;
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn check(&self) -> Result<()> {
        match self.failure() {
            Some(m) => Err(Error::Failed(m)),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: &Error) {
        tracing::error!(dir = %self.dir.display(), error = %e, "write-ahead log failed");
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(e.to_string());
        }
        self.buf.clear();
        self.active = None;
    }

    /// Run `f` unless already failed; a failure marks the log failed. Returns the outcome as a
    /// fresh error per caller.
    fn guarded(&mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        self.check()?;
        if let Err(e) = f(self) {
            self.fail(&e);
            return Err(e);
        }
        Ok(())
    }

    /// Process one batch; returns false on shutdown.
    fn process(&mut self, batch: Vec<Op>) -> bool {
        bump(&self.stats.batches, 1);
        let mut last_bg: HashMap<&'static str, usize> = HashMap::new();
        for (i, op) in batch.iter().enumerate() {
            if let Op::Background { key, .. } = op {
                last_bg.insert(key, i);
            }
        }
        let mut waiting: Vec<Done> = Vec::new();
        let mut keep_running = true;
        for (i, op) in batch.into_iter().enumerate() {
            match op {
                Op::Append { records, done } => match self.guarded(|s| s.write_records(&records)) {
                    Ok(()) => waiting.push(done),
                    Err(e) => done(Err(e)),
                },
                Op::Truncate { last_kept, done } => {
                    self.sync_waiting(&mut waiting);
                    done(self.guarded(|s| s.truncate(last_kept)));
                }
                Op::Purge { upto, marker, done } => {
                    self.sync_waiting(&mut waiting);
                    done(self.guarded(|s| s.purge(upto, &marker)));
                }
                Op::Barrier { write, done } => {
                    self.sync_waiting(&mut waiting);
                    done(self.guarded(|_| write.map_or(Ok(()), |w| w())));
                }
                Op::Background { key, write } => {
                    if last_bg.get(key) == Some(&i) {
                        self.sync_waiting(&mut waiting);
                        let _ = self.guarded(|_| write());
                    }
                }
                Op::Shutdown => keep_running = false,
            }
        }
        self.sync_waiting(&mut waiting);
        if keep_running {
            let _ = self.guarded(|s| s.preallocate());
        } else {
            let _ = self.guarded(|s| s.trim_active());
        }
        keep_running
    }

    /// Keeps at least half of [`WalOptions::prealloc_bytes`] of zero-filled room after the last
    /// record of the last segment, refilling a whole `prealloc_bytes` when it runs low. Called
    /// between batches, after the acknowledgements went out.
    fn preallocate(&mut self) -> Result<()> {
        let chunk = self.opts.prealloc_bytes;
        if chunk == 0 || !self.buf.is_empty() {
            return Ok(());
        }
        let Some(seg) = self.segs.last() else {
            return Ok(());
        };
        if seg.len >= self.opts.segment_target_bytes {
            return Ok(()); // the next append starts a new segment
        }
        let room = seg.alloc.saturating_sub(seg.len);
        if room >= chunk / 2 {
            return Ok(());
        }
        let from = seg.alloc.max(seg.len);
        let to = seg.len + chunk;
        let path = seg.path.clone();
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let f = self.active_file()?;
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            f.write_all_at(&ZEROS[..n], at).at(&path)?;
            at += n as u64;
        }
        f.sync_data().at(&path)?;
        bump(&self.stats.fsyncs, 1);
        if let Some(seg) = self.segs.last_mut() {
            seg.alloc = to;
        }
        Ok(())
    }

    /// Cuts the preallocated zeros off the last segment (durably), leaving only its records.
    fn trim_active(&mut self) -> Result<()> {
        self.sync()?;
        let Some(seg) = self.segs.last() else {
            return Ok(());
        };
        if seg.alloc <= seg.len {
            return Ok(());
        }
        let (len, path) = (seg.len, seg.path.clone());
        let f = self.active_file()?;
        f.set_len(len).at(&path)?;
        f.sync_all().at(&path)?;
        bump(&self.stats.fsyncs, 1);
        if let Some(seg) = self.segs.last_mut() {
            seg.alloc = len;
        }
        Ok(())
    }

    /// Make everything written so far durable and complete the callbacks waiting for it.
    fn sync_waiting(&mut self, waiting: &mut Vec<Done>) {
        let r = self.guarded(|s| s.sync());
        if waiting.is_empty() {
            return;
        }
        let msg = r.err().map(|e| e.to_string());
        for done in waiting.drain(..) {
            done(match &msg {
                None => Ok(()),
                Some(m) => Err(Error::Failed(m.clone())),
            });
        }
    }

    fn active_file(&mut self) -> Result<&File> {
        if self.active.is_none() {
            let seg = self
                .segs
                .last()
                .ok_or(Error::Invalid("no active segment".into()))?;
            let f = OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .at(&seg.path)?;
            self.active = Some(f);
        }
        Ok(self.active.as_ref().expect("just opened"))
    }

    /// Write buffered bytes to the last segment and fdatasync it if dirty.
    fn sync(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let seg = self
                .segs
                .last()
                .ok_or(Error::Invalid("buffer without segment".into()))?;
            let at = seg.len - self.buf.len() as u64;
            let path = seg.path.clone();
            let mut buf = std::mem::take(&mut self.buf);
            let r = self
                .active_file()
                .and_then(|f| f.write_all_at(&buf, at).at(&path));
            buf.clear();
            self.buf = buf;
            r?;
            if let Some(seg) = self.segs.last_mut() {
                seg.alloc = seg.alloc.max(seg.len);
            }
        }
        if self.dirty {
            let path = self.segs.last().map(|s| s.path.clone()).unwrap_or_default();
            self.active_file()?.sync_data().at(&path)?;
            bump(&self.stats.fsyncs, 1);
            self.dirty = false;
        }
        Ok(())
    }

    fn write_records(&mut self, records: &[(u64, Bytes)]) -> Result<()> {
        for (index, payload) in records {
            let roll = match self.segs.last() {
                None => true,
                Some(s) => s.len >= self.opts.segment_target_bytes && !s.offsets.is_empty(),
            };
            if roll {
                self.roll(*index)?;
            }
            let seg = self.segs.last_mut().expect("rolled");
            if seg.next_index() != *index {
                return Err(Error::Invalid(format!(
                    "internal error: writing index {index} into {} whose next index is {}",
                    seg.path.display(),
                    seg.next_index()
                )));
            }
            seg.offsets.push(seg.len);
            let n = (RECORD_HEADER_LEN + payload.len()) as u64;
            seg.len += n;
            encode_record(&mut self.buf, *index, payload);
            self.dirty = true;
            bump(&self.stats.records_written, 1);
            bump(&self.stats.bytes_written, n);
        }
        Ok(())
    }

    /// Seal the current segment (durably) and start a new one whose first record is `first`.
    fn roll(&mut self, first: u64) -> Result<()> {
        // A sealed segment holds records only: recovery treats anything else in it as damage.
        self.trim_active()?;
        if self.segs.is_empty() && self.base != first {
            // An empty log starting at a new index: record it before the segment exists.
            self.meta.put_value(BASE_KEY, &first)?;
            self.base = first;
        }
        let path = segment_path(&self.dir, first);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        self.dir_sync()?;
        self.segs.push(Segment {
            first,
            path,
            offsets: Vec::new(),
            len: 0,
            alloc: 0,
        });
        self.active = Some(f);
        Ok(())
    }

    fn dir_sync(&mut self) -> Result<()> {
        fsync_dir(&self.dir)?;
        bump(&self.stats.dir_fsyncs, 1);
        Ok(())
    }

    fn truncate(&mut self, last_kept: Option<u64>) -> Result<()> {
        // Remove whole segments newest first, so a crash leaves a contiguous prefix.
        let mut removed = false;
        while let Some(seg) = self.segs.last() {
            if last_kept.is_some_and(|k| seg.first <= k) {
                break;
            }
            self.active = None;
            fs::remove_file(&seg.path).at(&seg.path)?;
            self.segs.pop();
            removed = true;
        }
        if removed {
            self.dir_sync()?;
        }
        let Some(k) = last_kept else { return Ok(()) };
        let Some(seg) = self.segs.last_mut() else {
            return Ok(());
        };
        let keep = (k + 1 - seg.first) as usize;
        if keep >= seg.offsets.len() {
            return Ok(());
        }
        let cut = seg.offsets[keep];
        seg.offsets.truncate(keep);
        seg.len = cut;
        seg.alloc = cut;
        let path = seg.path.clone();
        let f = self.active_file()?;
        f.set_len(cut).at(&path)?;
        f.sync_all().at(&path)?;
        bump(&self.stats.fsyncs, 1);
        Ok(())
    }

    fn purge(&mut self, upto: u64, marker: &[u8]) -> Result<()> {
        let rec = PurgeRecord {
            index: upto,
            marker: marker.to_vec(),
        };
        self.meta.put_value(PURGE_KEY, &rec)?;
        self.purged = Some(upto);
        // The purge point is durable: the files below it may go, off this thread.
        let gone = self.take_purged_segments();
        if !gone.is_empty() {
            let _ = self.janitor.send(Chore::Remove(gone));
        }
        Ok(())
    }

    /// Forget the segments whose records all lie at or below the purge point, oldest first, and
    /// return their paths for deletion.
    fn take_purged_segments(&mut self) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        let Some(p) = self.purged else { return gone };
        while let Some(seg) = self.segs.first() {
            let wholly_purged = seg.last_index().is_none_or(|last| last <= p);
            if !wholly_purged {
                break;
            }
            if self.segs.len() == 1 {
                self.active = None;
                self.buf.clear();
                self.dirty = false;
            }
            gone.push(self.segs.remove(0).path);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::meta::flip_byte;

    fn small() -> WalOptions {
        WalOptions {
            segment_target_bytes: 200,
            prealloc_bytes: 256,
        }
    }

    fn recs(range: std::ops::Range<u64>) -> Vec<(u64, Bytes)> {
        range
            .map(|i| (i, Bytes::from(format!("payload-{i}"))))
            .collect()
    }

    fn append(w: &Wal, range: std::ops::Range<u64>) {
        w.append_pending(recs(range)).unwrap().wait().unwrap();
    }

    /// Waits (up to 10 s) until `cond` holds, failing the test otherwise.
    fn eventually(cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "condition never held");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn indexes(w: &Wal) -> Vec<u64> {
        w.read(.., None).into_iter().map(|(i, _)| i).collect()
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn append_read_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), small()).unwrap();
            assert_eq!(w.last_index(), None);
            append(&w, 0..50);
            assert_eq!(w.get(7).unwrap(), Bytes::from("payload-7"));
            assert_eq!(w.read(10..13, None).len(), 3);
            assert_eq!(w.read(45..100, None).len(), 5);
            assert!(segments(d.path()).len() > 3, "rolled segments");
        }
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(indexes(&w), (0..50).collect::<Vec<_>>());
        assert_eq!(w.get(49).unwrap(), Bytes::from("payload-49"));
        append(&w, 50..52);
        assert_eq!(w.last_index(), Some(51));
    }

    #[test]
    fn holes_and_overwrites_are_rejected() {
        let d = tempfile::tempdir().unwrap();
        let w = Wal::open(d.path(), small()).unwrap();
        append(&w, 0..3);
        assert!(w.append_pending(recs(2..4)).is_err());
        assert!(w.append_pending(recs(4..5)).is_err());
        assert!(w
            .append_pending(vec![(3, Bytes::new()), (5, Bytes::new())])
            .is_err());
        assert_eq!(indexes(&w), vec![0, 1, 2]);
    }

    #[test]
    fn truncate_is_durable() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), small()).unwrap();
            append(&w, 0..40);
            w.truncate_after(Some(17)).unwrap().wait().unwrap();
            assert_eq!(w.last_index(), Some(17));
            append(&w, 18..20);
        }
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(indexes(&w), (0..20).collect::<Vec<_>>());
        w.truncate_after(None).unwrap().wait().unwrap();
        assert_eq!(w.last_index(), None);
        drop(w);
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(w.last_index(), None);
        assert!(segments(d.path()).is_empty());
        append(&w, 0..1);
    }

    #[test]
    fn purge_deletes_whole_segments_and_is_durable() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), small()).unwrap();
            append(&w, 0..40);
            let before = segments(d.path()).len();
            w.purge_upto(20, Bytes::from("m20"))
                .unwrap()
                .wait()
                .unwrap();
            // The janitor deletes the files soon after the purge point is durable.
            eventually(|| segments(d.path()).len() < before);
            assert_eq!(w.first_index(), Some(21));
            assert!(w.truncate_after(Some(10)).is_err());
        }
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(w.purged(), Some((20, Bytes::from("m20"))));
        assert_eq!(indexes(&w), (21..40).collect::<Vec<_>>());
        // Purge beyond the end: log becomes empty and continues after the purge point.
        w.purge_upto(100, Bytes::new()).unwrap().wait().unwrap();
        assert_eq!(w.last_index(), None);
        assert_eq!(w.next_index(), 101);
        eventually(|| segments(d.path()).is_empty());
        drop(w);
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(w.next_index(), 101);
        append(&w, 101..103);
        drop(w);
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(indexes(&w), vec![101, 102]);
    }

    #[test]
    fn torn_tail_is_truncated() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), WalOptions::default()).unwrap();
            append(&w, 0..10);
        }
        let seg = segments(d.path()).pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        // Cut the last record short by a few bytes.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        {
            let w = Wal::open(d.path(), WalOptions::default()).unwrap();
            assert_eq!(indexes(&w), (0..9).collect::<Vec<_>>());
            append(&w, 9..12);
        }
        // Garbage appended after valid records.
        let seg = segments(d.path()).pop().unwrap();
        let mut data = fs::read(&seg).unwrap();
        data.extend_from_slice(&[0xAB; 37]);
        fs::write(&seg, &data).unwrap();
        let w = Wal::open(d.path(), WalOptions::default()).unwrap();
        assert_eq!(indexes(&w), (0..12).collect::<Vec<_>>());
        // Zero-filled tail.
        drop(w);
        let mut data = fs::read(&seg).unwrap();
        data.extend_from_slice(&[0; 4096]);
        fs::write(&seg, &data).unwrap();
        let w = Wal::open(d.path(), WalOptions::default()).unwrap();
        assert_eq!(indexes(&w), (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn preallocated_zeros_are_kept_ahead_and_trimmed() {
        let d = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_target_bytes: 600,
            prealloc_bytes: 4096,
        };
        // Each record is 16 + len("payload-N") = 25 bytes for N < 10.
        let w = Wal::open(d.path(), opts.clone()).unwrap();
        append(&w, 0..10);
        w.flush().unwrap().wait().unwrap();
        let seg = segments(d.path()).pop().unwrap();
        let data = fs::read(&seg).unwrap();
        assert!(data.len() >= 250 + 2048, "room kept ahead: {}", data.len());
        assert!(data[250..].iter().all(|b| *b == 0));
        // A crash leaves the zeros in place: recovery keeps every record and trims them quietly.
        std::mem::forget(w);
        let w = Wal::open(d.path(), opts.clone()).unwrap();
        assert_eq!(indexes(&w), (0..10).collect::<Vec<_>>());
        assert_eq!(fs::metadata(&seg).unwrap().len(), 250);
        // Appends go on after the trimmed end; sealed segments never keep zeros.
        append(&w, 10..60);
        w.flush().unwrap().wait().unwrap();
        let segs = segments(d.path());
        assert!(segs.len() >= 3, "{segs:?}");
        for s in &segs[..segs.len() - 1] {
            let data = fs::read(s).unwrap();
            assert_ne!(data.last(), Some(&0), "{} ends in zeros", s.display());
        }
        std::mem::forget(w);
        let w = Wal::open(d.path(), opts.clone()).unwrap();
        assert_eq!(indexes(&w), (0..60).collect::<Vec<_>>());
        // A clean shutdown trims the last segment too.
        drop(w);
        let last = segments(d.path()).pop().unwrap();
        assert_ne!(fs::read(&last).unwrap().last(), Some(&0));
    }

    #[test]
    fn damage_followed_by_valid_data_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), WalOptions::default()).unwrap();
            append(&w, 0..10);
        }
        let seg = segments(d.path()).pop().unwrap();
        // Record 3's payload: each record is 16 + len("payload-N") = 25 bytes.
        flip_byte(&seg, 3 * 25 + 20);
        let err = Wal::open(d.path(), WalOptions::default()).unwrap_err();
        assert!(err.is_corruption());
        let msg = err.to_string();
        assert!(msg.contains(&seg.display().to_string()), "{msg}");
        assert!(msg.contains("offset 75"), "{msg}");
        assert!(msg.contains("backup") && msg.contains("peer"), "{msg}");
    }

    #[test]
    fn damage_in_sealed_segment_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), small()).unwrap();
            append(&w, 0..40);
        }
        let segs = segments(d.path());
        assert!(segs.len() >= 3);
        // Last byte of the first segment: the tail of a sealed segment.
        let len = fs::metadata(&segs[0]).unwrap().len();
        flip_byte(&segs[0], len - 1);
        let msg = Wal::open(d.path(), small()).unwrap_err().to_string();
        assert!(msg.contains(&segs[0].display().to_string()), "{msg}");
        assert!(msg.contains("sealed"), "{msg}");
    }

    #[test]
    fn missing_segment_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), small()).unwrap();
            append(&w, 0..40);
        }
        let segs = segments(d.path());
        fs::remove_file(&segs[1]).unwrap();
        let msg = Wal::open(d.path(), small()).unwrap_err().to_string();
        assert!(msg.contains("missing"), "{msg}");
        fs::remove_file(&segs[0]).unwrap();
        let msg = Wal::open(d.path(), small()).unwrap_err().to_string();
        assert!(msg.contains("lost"), "{msg}");
    }

    #[test]
    fn fresh_log_may_start_anywhere_and_remembers_where() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), small()).unwrap();
            append(&w, 5..40);
            assert_eq!(w.first_index(), Some(5));
        }
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(indexes(&w), (5..40).collect::<Vec<_>>());
        // Restart the log elsewhere after dropping everything.
        w.truncate_after(None).unwrap().wait().unwrap();
        append(&w, 3..30);
        drop(w);
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(indexes(&w), (3..30).collect::<Vec<_>>());
        drop(w);
        let segs = segments(d.path());
        fs::remove_file(&segs[0]).unwrap();
        let msg = Wal::open(d.path(), small()).unwrap_err().to_string();
        assert!(msg.contains("lost"), "{msg}");
    }

    #[test]
    fn group_commit_shares_fsyncs() {
        let d = tempfile::tempdir().unwrap();
        let w = Wal::open(d.path(), WalOptions::default()).unwrap();
        let n = 200u64;
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..n {
            let tx = tx.clone();
            w.append(vec![(i, Bytes::from(vec![1u8; 100]))], move |r| {
                tx.send(r.is_ok()).unwrap();
            })
            .unwrap();
        }
        for _ in 0..n {
            assert!(rx.recv().unwrap());
        }
        let s = w.stats();
        assert_eq!(s.records_written, n);
        assert!(s.fsyncs < n / 2, "expected shared fsyncs, got {s:?}");
    }

    #[test]
    fn barrier_runs_after_prior_appends_are_durable() {
        let d = tempfile::tempdir().unwrap();
        let w = Wal::open(d.path(), WalOptions::default()).unwrap();
        w.append(recs(0..5), |_| {}).unwrap();
        let stats = w.inner.stats.clone();
        let seen = Arc::new(AtomicU64::new(0));
        let seen2 = seen.clone();
        w.barrier(Some(Box::new(move || {
            seen2.store(stats.fsyncs.load(Ordering::Relaxed), Ordering::Relaxed);
            Ok(())
        })))
        .unwrap()
        .wait()
        .unwrap();
        assert!(seen.load(Ordering::Relaxed) >= 1);
    }
}
