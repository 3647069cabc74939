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
//!
//! # Layout
//!
//! This file holds the public API ([`Wal`], its options and counters) and the in-memory tail;
//! `segment.rs` the record and segment format (encoding, checking, reading records back);
//! `recovery.rs` what [`Wal::open`] does with the files it finds; `flusher.rs` the flusher and
//! janitor threads.

mod flusher;
mod recovery;
mod segment;

use std::collections::VecDeque;
use std::fs;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use self::flusher::{janitor, Chore, Flusher, Op, Written};
use self::recovery::recover;
use self::segment::{read_segments, Segment};
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
pub struct WalStatsHandle(Arc<Counters>, Arc<Mutex<Option<String>>>);

impl WalStatsHandle {
    /// Records fsync latencies and group-commit batch sizes into `m` from now on (the first call
    /// wins).
    pub fn observe(&self, m: crate::metrics::WalMetrics) {
        let _ = self.0.metrics.set(m);
    }

    /// Why the log failed (an I/O error that was not transient, or stayed for
    /// [`crate::storage::RETRY_FOR`]), or `None` while it works.
    pub fn failure(&self) -> Option<String> {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

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
    /// `records_written` at the last segment fdatasync (for the group-commit batch size).
    records_synced: AtomicU64,
    /// Where the flusher records fsync latencies and batch sizes, once the node has set it.
    metrics: std::sync::OnceLock<crate::metrics::WalMetrics>,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Completion callback of a queued operation, called on the flusher thread once the operation
/// (and everything queued before it) is durable, or with the error that prevented that.
pub type Done = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// A closure run on the flusher thread, ordered with the log's writes.
pub type OrderedWrite = Box<dyn FnOnce() -> Result<()> + Send + 'static>;

/// Completes once a queued operation (and everything queued before it) is durable.
#[must_use = "the operation is only known durable once this completes"]
pub struct WhenDurable(tokio::sync::oneshot::Receiver<Result<()>>);

impl WhenDurable {
    fn new() -> (Done, WhenDurable) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        (done, WhenDurable(rx))
    }

    /// Block the current thread until the operation is durable. Must not be called from inside
    /// an async runtime's worker (use [`WhenDurable::wait_async`] there).
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
        WalStatsHandle(self.inner.stats.clone(), self.inner.failed.clone())
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

    /// [`append`](Self::append) returning a [`WhenDurable`] instead of taking a callback.
    pub fn append_pending(&self, records: Vec<(u64, Bytes)>) -> Result<WhenDurable> {
        let (done, pending) = WhenDurable::new();
        self.append(records, done)?;
        Ok(pending)
    }

    /// Drop every record with an index greater than `last_kept` (`None`: drop all records).
    /// Readers stop seeing them immediately; the returned [`WhenDurable`] completes once the removal
    /// is durable. Truncating into the purged prefix is an error.
    pub fn truncate_after(&self, last_kept: Option<u64>) -> Result<WhenDurable> {
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
        let (done, pending) = WhenDurable::new();
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
    pub fn purge_upto(&self, upto: u64, marker: Bytes) -> Result<WhenDurable> {
        let mut m = self.mem();
        self.check_not_failed()?;
        if let Some((p, _)) = &m.purged {
            if upto < *p {
                return Err(Error::Invalid(format!(
                    "cannot purge up to {upto}: already purged up to {p}"
                )));
            }
        }
        let (done, pending) = WhenDurable::new();
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
    /// complete the returned [`WhenDurable`] with its result. Used to keep small meta writes (the
    /// Raft vote) ordered with the log.
    pub fn barrier(&self, write: Option<OrderedWrite>) -> Result<WhenDurable> {
        let m = self.mem();
        self.check_not_failed()?;
        let (done, pending) = WhenDurable::new();
        m.tx.send(Op::Barrier { write, done })
            .map_err(|_| Error::Closed)?;
        Ok(pending)
    }

    /// Completes once everything queued so far is durable.
    pub fn flush(&self) -> Result<WhenDurable> {
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

#[cfg(test)]
mod tests;
