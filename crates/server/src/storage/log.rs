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
//! files (tens of milliseconds for a 64 MiB file on ext4) happens on a second thread, the janitor,
//! so appends never wait for it. A crash before the janitor is done leaves files wholly below the
//! purge point, which recovery deletes.
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
//! Only a bounded tail of the log is kept in memory ([`Bytes`] payloads): the newest
//! [`WalOptions::memory_tail_entries`] records (fewer if they exceed
//! [`WalOptions::memory_tail_bytes`]), plus every record the flusher has not written to its
//! segment yet. Older records are read back from the segment files (`pread`, each record's
//! checksum and index verified) while holding the segment index lock, so a read never sees a
//! truncate or purge half done. Normal operation (apply, replication to followers that keep up)
//! stays within the tail; lagging followers and recovery read from disk. The caller is expected
//! to purge after each snapshot.
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

/// Default number of newest records kept in memory (see the module docs, Reads).
pub const DEFAULT_MEMORY_TAIL_ENTRIES: usize = 2048;
/// Default cap on the payload bytes of the in-memory tail.
pub const DEFAULT_MEMORY_TAIL_BYTES: usize = 4 << 20;
/// Most records read from a segment with one `pread`.
const DISK_READ_CHUNK: u64 = 1024;

/// Tunables for [`Wal::open`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new segment once the current one is at least this large.
    pub segment_target_bytes: u64,
    /// Zero-filled room kept ahead of the last record; 0 turns preallocation off.
    pub prealloc_bytes: u64,
    /// Keep at most this many written records in memory; older ones are read from disk.
    pub memory_tail_entries: usize,
    /// Keep at most this many payload bytes of written records in memory (at least one record
    /// is kept while the log is not empty).
    pub memory_tail_bytes: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_target_bytes: DEFAULT_SEGMENT_TARGET_BYTES,
            prealloc_bytes: DEFAULT_PREALLOC_BYTES,
            memory_tail_entries: DEFAULT_MEMORY_TAIL_ENTRIES,
            memory_tail_bytes: DEFAULT_MEMORY_TAIL_BYTES,
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

/// Reads a log's [`WalStats`] (see [`Wal::stats_handle`]).
#[derive(Clone)]
pub struct WalStatsHandle(Arc<Counters>);

impl WalStatsHandle {
    /// The counters now.
    pub fn get(&self) -> WalStats {
        let c = &self.0;
        WalStats {
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            dir_fsyncs: c.dir_fsyncs.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            records_written: c.records_written.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
        }
    }
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
        /// The log's truncate epoch after this truncate (see [`Written`]).
        epoch: u64,
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

/// How far the flusher has written records to the segment files (readable with `pread`).
/// `epoch` counts truncates: a value published before the flusher processed the newest truncate
/// says nothing about the records appended after it, so the tail is only trimmed while the
/// epochs agree.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    epoch: u64,
    /// Every record below this index (and at or after the log's first index) is written.
    next: u64,
}

/// In-memory view of the log, the source of truth for readers.
struct Mem {
    /// Index of the log's first record; when the log is empty, the index the next append must
    /// have.
    first: u64,
    /// Index of `tail[0]`; records in `first..tail_first` are only on disk.
    tail_first: u64,
    /// The newest records.
    tail: VecDeque<Bytes>,
    /// Payload bytes in `tail`.
    tail_bytes: usize,
    /// Truncates issued so far.
    epoch: u64,
    purged: Option<(u64, Bytes)>,
    tx: mpsc::Sender<Op>,
}

impl Mem {
    fn next_index(&self) -> u64 {
        self.tail_first + self.tail.len() as u64
    }

    fn is_empty(&self) -> bool {
        self.next_index() == self.first
    }

    fn clear_tail(&mut self, tail_first: u64) {
        self.tail.clear();
        self.tail_bytes = 0;
        self.tail_first = tail_first;
    }

    fn pop_front(&mut self) {
        if let Some(p) = self.tail.pop_front() {
            self.tail_bytes -= p.len();
            self.tail_first += 1;
        }
    }

    /// Drop written records beyond the tail bounds.
    fn trim(&mut self, written: Written, opts: &WalOptions) {
        if written.epoch != self.epoch {
            return;
        }
        while self.tail_first < written.next
            && self.tail.len() > 1
            && (self.tail.len() > opts.memory_tail_entries
                || self.tail_bytes > opts.memory_tail_bytes)
        {
            self.pop_front();
        }
    }
}

/// The flusher's segments, shared with readers of records that left the in-memory tail.
type SharedSegs = Arc<Mutex<Vec<Segment>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No lock is held across a panic-prone section; recover the data regardless.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    dir: PathBuf,
    opts: WalOptions,
    mem: Mutex<Mem>,
    segs: SharedSegs,
    written: Arc<Mutex<Written>>,
    failed: Arc<Mutex<Option<String>>>,
    stats: Arc<Counters>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    janitor: Mutex<Option<(mpsc::Sender<Chore>, thread::JoinHandle<()>)>>,
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
        if let Some((tx, h)) = self.janitor.get_mut().ok().and_then(|j| j.take()) {
            let _ = tx.send(Chore::Stop);
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
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

        let recovered = recover(&dir, purged_idx, base.unwrap_or(0), &opts)?;
        let next = recovered.tail_first + recovered.tail.len() as u64;
        // Everything recovered is on disk.
        let written = Arc::new(Mutex::new(Written { epoch: 0, next }));
        let segs: SharedSegs = Arc::new(Mutex::new(recovered.segs));
        let (janitor_tx, janitor_rx) = mpsc::channel();

        let mut flusher = Flusher {
            dir: dir.clone(),
            meta,
            opts: opts.clone(),
            stats: stats.clone(),
            failed: failed.clone(),
            segs: segs.clone(),
            written: written.clone(),
            epoch: 0,
            buffered_next: None,
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

        let tail_bytes = recovered.tail.iter().map(Bytes::len).sum();
        let mem = Mem {
            first: recovered.first,
            tail_first: recovered.tail_first,
            tail: recovered.tail,
            tail_bytes,
            epoch: 0,
            purged: purge.map(|p| (p.index, Bytes::from(p.marker))),
            tx,
        };
        Ok(Wal {
            inner: Arc::new(Inner {
                dir,
                opts,
                mem: Mutex::new(mem),
                segs,
                written,
                failed,
                stats,
                thread: Mutex::new(Some(thread)),
                janitor: Mutex::new(Some((janitor_tx, janitor_thread))),
            }),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn mem(&self) -> MutexGuard<'_, Mem> {
        lock(&self.inner.mem)
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
        (!m.is_empty()).then_some(m.first)
    }

    /// Index of the last record held, `None` if the log is empty.
    pub fn last_index(&self) -> Option<u64> {
        let m = self.mem();
        (!m.is_empty()).then(|| m.next_index() - 1)
    }

    /// Records currently kept in memory (the tail; see the module docs).
    pub fn memory_tail_len(&self) -> usize {
        self.mem().tail.len()
    }

    /// The index the next appended record must have.
    pub fn next_index(&self) -> u64 {
        self.mem().next_index()
    }

    /// The purge point and the marker stored with it, if anything was ever purged.
    pub fn purged(&self) -> Option<(u64, Bytes)> {
        self.mem().purged.clone()
    }

    /// The payload of record `index`, if held. Fails only if a record that left the in-memory
    /// tail cannot be read back from its segment.
    pub fn get(&self, index: u64) -> Result<Option<Bytes>> {
        Ok(self.read(index..=index, None)?.pop().map(|(_, p)| p))
    }

    /// The held records within `range`, in order. The range is clamped to what the log holds,
    /// so the result is always a contiguous run. With `max_bytes`, stops once the payloads
    /// returned exceed that many bytes (at least one record is returned if any is in range).
    /// Records older than the in-memory tail are read from the segment files; a record there
    /// that is damaged or missing is an error, never a shorter result.
    pub fn read(
        &self,
        range: impl RangeBounds<u64>,
        max_bytes: Option<usize>,
    ) -> Result<Vec<(u64, Bytes)>> {
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
        let mut out: Vec<(u64, Bytes)> = Vec::new();
        let mut bytes = 0usize;
        let mut from = start;
        loop {
            let m = self.mem();
            let end = end.min(m.next_index());
            let at = from.max(m.first);
            if at != from && !out.is_empty() {
                return Err(Error::Invalid(format!(
                    "records from {from} were purged while reading {start}..{end}"
                )));
            }
            if at >= end {
                return Ok(out);
            }
            if at >= m.tail_first {
                read_tail(&m, at, end, max_bytes, bytes, &mut out);
                return Ok(out);
            }
            // Lock coupling: the segments are locked before the tail is released, so no truncate
            // or purge issued after this point reaches the files before the read is done.
            let segs = lock(&self.inner.segs);
            let disk_end = end.min(m.tail_first);
            drop(m);
            let before = out.len();
            let budget = max_bytes.map(|max| max - bytes);
            read_segments(&segs, at, disk_end, budget, &mut out)?;
            bytes += out[before..].iter().map(|(_, p)| p.len()).sum::<usize>();
            if max_bytes.is_some_and(|max| bytes >= max) {
                return Ok(out);
            }
            from = disk_end;
        }
    }

    /// Flusher counters.
    pub fn stats(&self) -> WalStats {
        self.stats_handle().get()
    }

    /// A handle that reads the flusher counters and does not keep the log open.
    pub fn stats_handle(&self) -> WalStatsHandle {
        WalStatsHandle(self.inner.stats.clone())
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
        let fresh = m.is_empty() && m.purged.is_none();
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
            m.clear_tail(start);
        }
        for p in payloads {
            m.tail_bytes += p.len();
            m.tail.push_back(p);
        }
        let written = *lock(&self.inner.written);
        m.trim(written, &self.inner.opts);
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
        let epoch = m.epoch + 1;
        m.tx.send(Op::Truncate {
            last_kept,
            epoch,
            done,
        })
        .map_err(|_| Error::Closed)?;
        m.epoch = epoch;
        match last_kept {
            None => {
                let first = m.first;
                m.clear_tail(first);
            }
            Some(k) => {
                let next = k + 1;
                if next < m.first {
                    // Everything went; continue right after the kept index.
                    m.first = next;
                    m.clear_tail(next);
                } else if next < m.tail_first {
                    m.clear_tail(next);
                } else {
                    let keep = (next - m.tail_first).min(m.tail.len() as u64) as usize;
                    while m.tail.len() > keep {
                        let p = m.tail.pop_back().expect("longer than keep");
                        m.tail_bytes -= p.len();
                    }
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
        if upto >= next {
            m.clear_tail(upto + 1);
        } else {
            while m.tail_first <= upto {
                m.pop_front();
            }
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

/// Append the tail records `from..to` to `out` (`bytes` already returned), honouring `max_bytes`.
fn read_tail(
    m: &Mem,
    from: u64,
    to: u64,
    max_bytes: Option<usize>,
    mut bytes: usize,
    out: &mut Vec<(u64, Bytes)>,
) {
    for idx in from..to {
        let p = m.tail[(idx - m.tail_first) as usize].clone();
        bytes += p.len();
        out.push((idx, p));
        if max_bytes.is_some_and(|max| bytes >= max) {
            break;
        }
    }
}

/// Read records `from..to` (all written) from the segment files into `out`, stopping once more
/// than `max_bytes` payload bytes were read. Each record's checksum and index are verified.
fn read_segments(
    segs: &[Segment],
    from: u64,
    to: u64,
    max_bytes: Option<usize>,
    out: &mut Vec<(u64, Bytes)>,
) -> Result<()> {
    let mut bytes = 0usize;
    let mut idx = from;
    while idx < to {
        let seg = segs
            .iter()
            .rev()
            .find(|s| s.first <= idx)
            .filter(|s| idx < s.next_index())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "log record {idx} is neither in memory nor in any segment"
                ))
            })?;
        let end = to.min(seg.next_index()).min(idx + DISK_READ_CHUNK);
        let at = seg.offsets[(idx - seg.first) as usize];
        let stop = if end < seg.next_index() {
            seg.offsets[(end - seg.first) as usize]
        } else {
            seg.len
        };
        let mut buf = vec![0u8; (stop - at) as usize];
        File::open(&seg.path)
            .and_then(|f| f.read_exact_at(&mut buf, at))
            .at(&seg.path)?;
        let buf = Bytes::from(buf);
        let mut pos = 0usize;
        for expected in idx..end {
            let (index, s, e) = parse_record(&buf, pos)
                .map_err(|why| Error::corrupt(&seg.path, at + pos as u64, why))?;
            if index != expected {
                return Err(Error::corrupt(
                    &seg.path,
                    at + pos as u64,
                    format!("record has index {index} where index {expected} was expected"),
                ));
            }
            bytes += e - s;
            out.push((index, buf.slice(s..e)));
            pos = e;
            if max_bytes.is_some_and(|max| bytes >= max) {
                return Ok(());
            }
        }
        idx = end;
    }
    Ok(())
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
    /// Index of `tail[0]`.
    tail_first: u64,
    /// The newest records, within the bounds of [`WalOptions`].
    tail: VecDeque<Bytes>,
}

fn recover(dir: &Path, purged: Option<u64>, base: u64, opts: &WalOptions) -> Result<Recovered> {
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
    let mut tail = VecDeque::new();
    let mut tail_bytes = 0usize;
    let mut next = start;
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
        let Some(Scanned {
            seg,
            data,
            payloads,
        }) = scan_segment(&path, first, is_last, &mut dir_changed)?
        else {
            continue;
        };
        let held = payloads.len() as u64 - start.saturating_sub(first).min(payloads.len() as u64);
        if held > 0 {
            next = seg.next_index();
        }
        // Only the newest records stay in memory: walk back from the end of the segment.
        let mut newest = VecDeque::new();
        let mut newest_bytes = 0usize;
        for &(s, e) in payloads.iter().rev().take(held as usize) {
            if !newest.is_empty()
                && (newest.len() >= opts.memory_tail_entries
                    || newest_bytes + (e - s) > opts.memory_tail_bytes)
            {
                break;
            }
            newest_bytes += e - s;
            newest.push_front(Bytes::copy_from_slice(&data[s..e]));
        }
        if newest.len() as u64 == held {
            // The whole segment fits: it extends the tail of the segments before it.
            tail.extend(newest);
            tail_bytes += newest_bytes;
            while tail.len() > 1
                && (tail.len() > opts.memory_tail_entries || tail_bytes > opts.memory_tail_bytes)
            {
                tail_bytes -= tail.pop_front().map_or(0, |p| p.len());
            }
        } else if held > 0 {
            tail = newest;
            tail_bytes = newest_bytes;
        }
        segs.push(seg);
    }
    if dir_changed {
        fsync_dir(dir)?;
    }
    Ok(Recovered {
        segs,
        first: start,
        tail_first: next - tail.len() as u64,
        tail,
    })
}

/// A verified segment: its index, its bytes and the byte range of each record's payload.
struct Scanned {
    seg: Segment,
    data: Vec<u8>,
    payloads: Vec<(usize, usize)>,
}

/// Read and verify one segment. Returns `None` if it was an empty last segment (removed).
fn scan_segment(
    path: &Path,
    first: u64,
    is_last: bool,
    dir_changed: &mut bool,
) -> Result<Option<Scanned>> {
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
                payloads.push((start, end));
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
                } else {
                    if let Some((at, idx)) = find_valid_record_after(&data, pos, expected) {
                        return Err(Error::corrupt(
                            path,
                            pos as u64,
                            format!(
                                "damaged record ({reason}) followed by a valid record (index \
                                 {idx}) at offset {at}: this is not a torn write at the tail"
                            ),
                        ));
                    }
                    tracing::warn!(
                        path = %path.display(),
                        offset = pos,
                        dropped_bytes = data.len() - pos,
                        "torn write at the log tail ({reason}); truncating it away"
                    );
                }
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
    Ok(Some(Scanned {
        seg,
        data,
        payloads,
    }))
}

// ---------------------------------------------------------------------------------------------
// Flusher

struct Flusher {
    dir: PathBuf,
    meta: MetaStore,
    opts: WalOptions,
    stats: Arc<Counters>,
    failed: Arc<Mutex<Option<String>>>,
    /// The segments; shared with readers, which hold the lock while reading the files, so every
    /// change to the files and to this list happens under it.
    segs: SharedSegs,
    /// How far records are written, published to the appenders (see [`Written`]).
    written: Arc<Mutex<Written>>,
    /// Truncate epoch of the last truncate processed.
    epoch: u64,
    /// Index after the last record in `buf`, if any.
    buffered_next: Option<u64>,
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

/// Work taken off the flusher: deleting purged segment files.
enum Chore {
    /// Delete these segment files, then fsync the directory.
    Remove(Vec<PathBuf>),
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
            Chore::Stop => return,
        }
    }
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
                Op::Truncate {
                    last_kept,
                    epoch,
                    done,
                } => {
                    self.sync_waiting(&mut waiting);
                    done(self.guarded(|s| s.truncate(last_kept, epoch)));
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
    /// between batches, after the acknowledgements went out. The zeros lie beyond every record,
    /// so readers (which only read below `len`) need not be held off.
    fn preallocate(&mut self) -> Result<()> {
        let chunk = self.opts.prealloc_bytes;
        if chunk == 0 || !self.buf.is_empty() {
            return Ok(());
        }
        let Some((len, alloc, path)) = self.last_extent() else {
            return Ok(());
        };
        if len >= self.opts.segment_target_bytes || alloc.saturating_sub(len) >= chunk / 2 {
            return Ok(()); // a new segment comes next, or there is room enough
        }
        let (from, to) = (alloc.max(len), len + chunk);
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
        self.set_last_alloc(to);
        Ok(())
    }

    /// Cuts the preallocated zeros off the last segment (durably), leaving only its records.
    fn trim_active(&mut self) -> Result<()> {
        self.sync()?;
        let Some((len, alloc, path)) = self.last_extent() else {
            return Ok(());
        };
        if alloc <= len {
            return Ok(());
        }
        let f = self.active_file()?;
        f.set_len(len).at(&path)?;
        f.sync_all().at(&path)?;
        bump(&self.stats.fsyncs, 1);
        self.set_last_alloc(len);
        Ok(())
    }

    /// The last segment's record length, length on disk and path.
    fn last_extent(&self) -> Option<(u64, u64, PathBuf)> {
        lock(&self.segs)
            .last()
            .map(|seg| (seg.len, seg.alloc, seg.path.clone()))
    }

    /// Records the last segment's length on disk.
    fn set_last_alloc(&self, alloc: u64) {
        if let Some(seg) = lock(&self.segs).last_mut() {
            seg.alloc = alloc;
        }
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
            let path = lock(&self.segs)
                .last()
                .map(|s| s.path.clone())
                .ok_or(Error::Invalid("no active segment".into()))?;
            let f = OpenOptions::new().write(true).open(&path).at(&path)?;
            self.active = Some(f);
        }
        Ok(self.active.as_ref().expect("just opened"))
    }

    /// Records below `next` are written: let the appenders drop them from memory.
    fn publish_written(&self, next: u64) {
        *lock(&self.written) = Written {
            epoch: self.epoch,
            next,
        };
    }

    /// Write buffered bytes to the last segment and fdatasync it if dirty.
    fn sync(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let (at, path) = {
                let segs = lock(&self.segs);
                let seg = segs
                    .last()
                    .ok_or(Error::Invalid("buffer without segment".into()))?;
                (seg.len - self.buf.len() as u64, seg.path.clone())
            };
            let mut buf = std::mem::take(&mut self.buf);
            let r = self
                .active_file()
                .and_then(|f| f.write_all_at(&buf, at).at(&path));
            buf.clear();
            self.buf = buf;
            r?;
            if let Some(seg) = lock(&self.segs).last_mut() {
                seg.alloc = seg.alloc.max(seg.len);
            }
            if let Some(next) = self.buffered_next.take() {
                self.publish_written(next);
            }
        }
        if self.dirty {
            let path = lock(&self.segs)
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            self.active_file()?.sync_data().at(&path)?;
            bump(&self.stats.fsyncs, 1);
            self.dirty = false;
        }
        Ok(())
    }

    fn write_records(&mut self, records: &[(u64, Bytes)]) -> Result<()> {
        for (index, payload) in records {
            let roll = match lock(&self.segs).last() {
                None => true,
                Some(s) => s.len >= self.opts.segment_target_bytes && !s.offsets.is_empty(),
            };
            if roll {
                self.roll(*index)?;
            }
            let mut segs = lock(&self.segs);
            let seg = segs.last_mut().expect("rolled");
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
            self.buffered_next = Some(index + 1);
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
        if lock(&self.segs).is_empty() && self.base != first {
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
        lock(&self.segs).push(Segment {
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

    fn truncate(&mut self, last_kept: Option<u64>, epoch: u64) -> Result<()> {
        self.epoch = epoch;
        let segs_lock = self.segs.clone();
        let mut segs = lock(&segs_lock);
        // Everything up to the kept index stays written (the batch was synced before).
        let written = lock(&self.written).next;
        let kept_next = last_kept.map_or(0, |k| k + 1);
        self.publish_written(written.min(kept_next));
        // Remove whole segments newest first, so a crash leaves a contiguous prefix.
        let mut removed = false;
        while let Some(seg) = segs.last() {
            if last_kept.is_some_and(|k| seg.first <= k) {
                break;
            }
            self.active = None;
            fs::remove_file(&seg.path).at(&seg.path)?;
            segs.pop();
            removed = true;
        }
        if removed {
            self.dir_sync()?;
        }
        let Some(k) = last_kept else { return Ok(()) };
        let Some(seg) = segs.last_mut() else {
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
        let f = self.active_file_of(&path)?;
        f.set_len(cut).at(&path)?;
        f.sync_all().at(&path)?;
        bump(&self.stats.fsyncs, 1);
        Ok(())
    }

    /// [`Flusher::active_file`] for callers already holding the segment lock.
    fn active_file_of(&mut self, path: &Path) -> Result<&File> {
        if self.active.is_none() {
            let f = OpenOptions::new().write(true).open(path).at(path)?;
            self.active = Some(f);
        }
        Ok(self.active.as_ref().expect("just opened"))
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
    /// return their paths for deletion (no reader can reach them once they left the list).
    fn take_purged_segments(&mut self) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        let Some(p) = self.purged else { return gone };
        let segs_lock = self.segs.clone();
        let mut segs = lock(&segs_lock);
        while let Some(seg) = segs.first() {
            let wholly_purged = seg.last_index().is_none_or(|last| last <= p);
            if !wholly_purged {
                break;
            }
            if segs.len() == 1 {
                self.active = None;
                self.buf.clear();
                self.buffered_next = None;
                self.dirty = false;
            }
            gone.push(segs.remove(0).path);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::meta::flip_byte;

    /// Small segments and a tiny memory tail, so most reads go to the segment files.
    fn small() -> WalOptions {
        WalOptions {
            segment_target_bytes: 200,
            prealloc_bytes: 256,
            memory_tail_entries: 3,
            memory_tail_bytes: 64,
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

    /// Cuts the last `n` bytes off a file: the last record torn, as by a crash mid-write.
    fn cut_tail(path: &Path, n: u64) {
        let len = fs::metadata(path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len - n)
            .unwrap();
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
        w.read(.., None)
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect()
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
            assert_eq!(w.get(7).unwrap().unwrap(), Bytes::from("payload-7"));
            assert_eq!(w.read(10..13, None).unwrap().len(), 3);
            assert_eq!(w.read(45..100, None).unwrap().len(), 5);
            assert!(segments(d.path()).len() > 3, "rolled segments");
        }
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(indexes(&w), (0..50).collect::<Vec<_>>());
        assert_eq!(w.get(49).unwrap().unwrap(), Bytes::from("payload-49"));
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

    fn payloads(w: &Wal, range: std::ops::Range<u64>) -> Vec<(u64, Bytes)> {
        w.read(range, None).unwrap()
    }

    #[test]
    fn memory_tail_is_bounded_and_older_records_come_from_disk() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), small()).unwrap();
            append(&w, 0..60);
            // The flusher published the writes: the next append trims to the bounds.
            append(&w, 60..61);
            assert!(
                w.memory_tail_len() <= 3,
                "tail holds {}",
                w.memory_tail_len()
            );
            assert_eq!(payloads(&w, 0..61), recs(0..61));
            assert_eq!(payloads(&w, 5..17), recs(5..17));
            assert_eq!(payloads(&w, 55..70), recs(55..61));
            // max_bytes counts across the disk part and the tail ("payload-N" is 9-10 bytes).
            let r = w.read(50.., Some(25)).unwrap();
            assert_eq!(r, recs(50..53));
            let r = w.read(0.., Some(1)).unwrap();
            assert_eq!(r, recs(0..1));
            // Truncate into the part that is only on disk, then append different payloads.
            w.truncate_after(Some(20)).unwrap().wait().unwrap();
            assert_eq!(w.last_index(), Some(20));
            assert_eq!(payloads(&w, 0..100), recs(0..21));
            let other: Vec<(u64, Bytes)> = (21..40)
                .map(|i| (i, Bytes::from(format!("other-{i}"))))
                .collect();
            w.append_pending(other.clone()).unwrap().wait().unwrap();
            append(&w, 40..41);
            let mut want = recs(0..21);
            want.extend(other.iter().cloned());
            want.extend(recs(40..41));
            assert_eq!(payloads(&w, 0..100), want);
            // Purge: records below the purge point are gone, later ones still read from disk.
            w.purge_upto(9, Bytes::from_static(b"m"))
                .unwrap()
                .wait()
                .unwrap();
            assert_eq!(payloads(&w, 0..100), want[10..].to_vec());
            assert_eq!(w.get(9).unwrap(), None);
            assert_eq!(w.get(10).unwrap(), Some(Bytes::from("payload-10")));
        }
        // After a restart only the tail is loaded; everything else reads back from disk.
        let w = Wal::open(d.path(), small()).unwrap();
        assert!(w.memory_tail_len() <= 3);
        let all = payloads(&w, 0..100);
        assert_eq!(all.first().map(|(i, _)| *i), Some(10));
        assert_eq!(all.last().map(|(i, _)| *i), Some(40));
        assert_eq!(all[11], (21, Bytes::from("other-21")));
        assert_eq!(w.get(40).unwrap(), Some(Bytes::from("payload-40")));
    }

    #[test]
    fn tail_of_a_torn_log_reads_back_after_restart() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), small()).unwrap();
            append(&w, 0..30);
        }
        let seg = segments(d.path()).pop().unwrap();
        cut_tail(&seg, 3);
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(w.last_index(), Some(28));
        assert_eq!(payloads(&w, 0..100), recs(0..29));
        append(&w, 29..35);
        append(&w, 35..36);
        drop(w);
        let w = Wal::open(d.path(), small()).unwrap();
        assert_eq!(payloads(&w, 0..100), recs(0..36));
    }

    #[test]
    fn damage_found_by_a_disk_read_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let w = Wal::open(d.path(), small()).unwrap();
        append(&w, 0..30);
        append(&w, 30..31);
        assert!(w.memory_tail_len() <= 3);
        // Damage a record of the first (sealed) segment behind the log's back.
        let seg = segments(d.path()).remove(0);
        let mut data = fs::read(&seg).unwrap();
        data[RECORD_HEADER_LEN + 2] ^= 0xFF;
        fs::write(&seg, &data).unwrap();
        let err = w.read(0..5, None).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        // The tail is still served from memory.
        assert_eq!(payloads(&w, 30..31), recs(30..31));
    }

    #[test]
    fn torn_tail_is_truncated() {
        let d = tempfile::tempdir().unwrap();
        {
            let w = Wal::open(d.path(), WalOptions::default()).unwrap();
            append(&w, 0..10);
        }
        let seg = segments(d.path()).pop().unwrap();
        cut_tail(&seg, 3);
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
            ..WalOptions::default()
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
