//! openraft log storage ([`RaftLogStorage`] + [`RaftLogReader`]) on top of
//! [`crate::storage::log::Wal`] and [`crate::storage::meta::MetaStore`].
//!
//! Generic over any [`RaftTypeConfig`]; entries, votes and log ids are encoded with postcard
//! (openraft's `serde` feature makes them serde types). Layout under the data directory:
//!
//! * `log/`  — the write-ahead log: one record per entry, keyed by log index; the purged log id
//!   is the marker of the WAL's purge point (`log/purged.meta`).
//! * `meta/` — `vote.meta`, `committed.meta` (and `identity.meta`, see
//!   [`MetaStore::save_identity`], which the node bootstrap owns).
//!
//! Guarantees:
//! * `append` returns once the entries are readable (in the WAL's in-memory tail); the flusher
//!   thread calls the [`IOFlushed`] callback after the batch's single fdatasync (group commit).
//! * `save_vote` runs on the flusher thread behind every earlier write, so a vote is never
//!   reordered with appends, and it is durable when `save_vote` returns.
//! * `save_committed` is queued behind earlier appends (so a persisted committed id never points
//!   past the durable log) but, by default, not waited for; consecutive values are coalesced.
//!   After a crash `read_committed` may therefore return an older value, which openraft
//!   tolerates (it is an optional optimization there; `Raft::wait_for_recovery` covers the
//!   gap); it is never a newer one. [`LogStore::with_sync_committed`] makes it wait instead.
//! * `truncate_after` is durable on return. `purge` returns at once (openraft awaits it inline
//!   in its core loop): the records are gone from reads immediately, the purge point (with its
//!   log id) is persisted in order behind earlier appends, and segments are deleted only after
//!   that, off the flusher (see [`crate::storage::log`]). A crash in between leaves more log
//!   behind a durable snapshot, never less.
//! * Readers return whole ranges or an error, never a partial run with holes.
//! * The most recently appended entries are also kept decoded (`Recent`, bounded by count and bytes),
//!   so the state machine's apply task and the leader's replication tasks, which read what was just
//!   appended, get them without decoding the WAL record again (entries share their `Arc`'d payload).
//!   Truncate and purge drop the same entries from it as from the WAL; a range it does not hold
//!   whole is read from the WAL.
//!
//! Left out: snapshots and the state machine (see [`crate::storage::snapshot`]), and cluster
//! identity checks (the caller uses [`LogStore::meta`]).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftTypeConfig};

use crate::storage::log::{Wal, WalOptions, WalStats};
use crate::storage::meta::{MetaStore, KEY_COMMITTED, KEY_VOTE};
use crate::storage::{Error, Result as StorageResult};

/// Longest time between two writes of the committed log id (see `save_committed`).
pub const COMMITTED_PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Sub-directory of the data directory holding the write-ahead log.
pub const LOG_DIR: &str = "log";
/// Sub-directory of the data directory holding the meta files.
pub const META_DIR: &str = "meta";
/// Upper bound on payload bytes returned by one `limited_get_log_entries` call (replication).
pub const MAX_READ_BYTES: usize = 4 << 20;
/// Payload bytes read at a time when [`LogStore::open_with`] checks every stored entry.
const OPEN_CHECK_CHUNK_BYTES: usize = 4 << 20;

type SharedVote<C> = Arc<Mutex<Option<VoteOf<C>>>>;
type SharedRecent<C> = Arc<Mutex<Recent<<C as RaftTypeConfig>::Entry>>>;

/// At most this many decoded entries are kept in [`Recent`].
const RECENT_MAX_ENTRIES: usize = 4096;
/// At most this many encoded bytes' worth of decoded entries are kept in [`Recent`].
const RECENT_MAX_BYTES: usize = 8 << 20;

/// The newest appended entries, decoded: a contiguous run, `entries[i]` being the entry at index
/// `first + i`, each with its encoded size (for `max_bytes` reads). Bounded by
/// [`RECENT_MAX_ENTRIES`] and [`RECENT_MAX_BYTES`]; the oldest leave first.
#[derive(Debug)]
struct Recent<E> {
    first: u64,
    entries: VecDeque<(E, usize)>,
    bytes: usize,
}

impl<E> Recent<E> {
    fn new() -> Self {
        Recent {
            first: 0,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Appends the entry at `index`; one that does not follow the run starts a new run.
    fn push(&mut self, index: u64, entry: E, size: usize) {
        if self.entries.is_empty() || index != self.end() {
            self.clear();
            self.first = index;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > RECENT_MAX_ENTRIES || self.bytes > RECENT_MAX_BYTES {
            if let Some((_, n)) = self.entries.pop_front() {
                self.bytes -= n;
                self.first += 1;
            }
        }
    }

    /// Forgets every entry after `last_kept` (all of them for `None`).
    fn truncate_after(&mut self, last_kept: Option<u64>) {
        match last_kept {
            Some(k) if k >= self.first => {
                let keep = (k - self.first + 1).min(self.entries.len() as u64) as usize;
                for (_, n) in self.entries.drain(keep..) {
                    self.bytes -= n;
                }
            }
            _ => self.clear(),
        }
    }

    /// Forgets every entry up to and including `upto`.
    fn purge_upto(&mut self, upto: u64) {
        while self.first <= upto {
            match self.entries.pop_front() {
                Some((_, n)) => {
                    self.bytes -= n;
                    self.first += 1;
                }
                None => break,
            }
        }
    }
}

impl<E: Clone> Recent<E> {
    /// The entries of `start..end` if all of them are held, as the WAL would return them: with
    /// `max_bytes`, stopping once the sizes returned exceed it (at least one entry).
    fn get(&self, start: u64, end: u64, max_bytes: Option<usize>) -> Option<Vec<E>> {
        if start >= end || start < self.first || end > self.end() {
            return None;
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut bytes = 0usize;
        for (e, n) in self
            .entries
            .range((start - self.first) as usize..(end - self.first) as usize)
        {
            out.push(e.clone());
            bytes += n;
            if max_bytes.is_some_and(|m| bytes > m) {
                break;
            }
        }
        Some(out)
    }
}

/// `range` as `start..end`, or `None` when it is unbounded above (only the WAL knows its end).
fn half_open(range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.checked_add(1)?,
        Bound::Excluded(e) => *e,
        Bound::Unbounded => return None,
    };
    Some((start, end))
}

/// Reads `range`, from the decoded tail when it holds all of it, else from the WAL.
fn read_range<C: RaftTypeConfig>(
    wal: &Wal,
    recent: &SharedRecent<C>,
    range: impl RangeBounds<u64>,
    max_bytes: Option<usize>,
) -> io::Result<Vec<C::Entry>>
where
    C::Entry: Clone,
{
    if let Some((start, end)) = half_open(&range) {
        if let Some(v) = lock(recent).get(start, end, max_bytes) {
            return Ok(v);
        }
    }
    read_entries::<C>(wal, range, max_bytes)
}

/// Durable Raft log + vote store. See the module docs.
pub struct LogStore<C: RaftTypeConfig> {
    wal: Wal,
    recent: SharedRecent<C>,
    meta: MetaStore,
    vote: SharedVote<C>,
    committed: Option<LogIdOf<C>>,
    last_purged: Option<LogIdOf<C>>,
    sync_committed: bool,
    last_committed_persist: std::time::Instant,
}

/// Read handle given to openraft's replication and apply tasks.
pub struct LogReader<C: RaftTypeConfig> {
    wal: Wal,
    recent: SharedRecent<C>,
    vote: SharedVote<C>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            wal: self.wal.clone(),
            recent: self.recent.clone(),
            vote: self.vote.clone(),
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("wal", &self.wal)
            .field("committed", &self.committed)
            .field("last_purged", &self.last_purged)
            .finish()
    }
}

/// postcard encoding into a buffer sized first (one allocation instead of a doubling series, each
/// copying what was already written).
fn encode<T: serde::Serialize>(what: &str, v: &T) -> io::Result<Vec<u8>> {
    let size = postcard::experimental::serialized_size(v).unwrap_or(0);
    postcard::to_extend(v, Vec::with_capacity(size)).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot encode {what}: {e}"),
        )
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decodes a log record's payload as this node's Raft entry and returns the index it claims: what
/// start-up does with every record it reads back (the fuzz target `log_segment` drives it).
pub fn entry_index(bytes: &[u8]) -> std::result::Result<u64, String> {
    postcard::from_bytes::<<crate::raft::types::TypeConfig as RaftTypeConfig>::Entry>(bytes)
        .map(|e| e.index())
        .map_err(|e| format!("does not decode as a Raft entry: {e}"))
}

/// Decode the entry stored as WAL record `index`, checking that it is the entry for `index`.
fn decode_entry<C: RaftTypeConfig>(wal: &Wal, index: u64, bytes: &[u8]) -> io::Result<C::Entry> {
    let entry: C::Entry = postcard::from_bytes(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "log record {index} in {} does not decode as a Raft entry: {e}",
                wal.dir().display()
            ),
        )
    })?;
    if entry.index() != index {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "log record {index} in {} holds the entry for log id {}",
                wal.dir().display(),
                entry.log_id()
            ),
        ));
    }
    Ok(entry)
}

fn read_entries<C: RaftTypeConfig>(
    wal: &Wal,
    range: impl RangeBounds<u64>,
    max_bytes: Option<usize>,
) -> io::Result<Vec<C::Entry>> {
    wal.read(range, max_bytes)?
        .into_iter()
        .map(|(idx, bytes)| decode_entry::<C>(wal, idx, &bytes))
        .collect()
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Open (creating if needed) the log store under `data_dir` with default options.
    pub fn open(data_dir: impl AsRef<Path>) -> StorageResult<Self> {
        Self::open_with(data_dir, WalOptions::default())
    }

    /// Open the log store under `data_dir`, recovering the log and checking that every stored
    /// entry decodes as the entry for its index and that the purge marker matches the log.
    pub fn open_with(data_dir: impl AsRef<Path>, opts: WalOptions) -> StorageResult<Self> {
        let data_dir = data_dir.as_ref();
        let wal = Wal::open(data_dir.join(LOG_DIR), opts)?;
        let meta = MetaStore::open(data_dir.join(META_DIR))?;
        let vote: Option<VoteOf<C>> = meta.get_value(KEY_VOTE)?;
        let committed: Option<Option<LogIdOf<C>>> = meta.get_value(KEY_COMMITTED)?;
        let committed = committed.flatten();

        let purge_file = wal.dir().join("purged.meta");
        let last_purged: Option<LogIdOf<C>> = match wal.purged() {
            None => None,
            Some((idx, marker)) => {
                let log_id: LogIdOf<C> = postcard::from_bytes(&marker).map_err(|e| {
                    Error::corrupt_file(&purge_file, format!("purged log id does not decode: {e}"))
                })?;
                if log_id.index() != idx {
                    return Err(Error::corrupt_file(
                        &purge_file,
                        format!("purge point {idx} disagrees with the purged log id {log_id}"),
                    ));
                }
                Some(log_id)
            }
        };

        // Every entry must decode as the entry for its index. Read in chunks: most of the log
        // is only on disk and is not kept in memory.
        let mut last_index = last_purged.as_ref().map(|l| l.index());
        if let (Some(first), Some(last)) = (wal.first_index(), wal.last_index()) {
            let mut from = first;
            while from <= last {
                let chunk = wal.read(from..=last, Some(OPEN_CHECK_CHUNK_BYTES))?;
                for (idx, bytes) in &chunk {
                    decode_entry::<C>(&wal, *idx, bytes).map_err(|e| {
                        Error::corrupt_file(wal.dir(), format!("log entry at index {idx}: {e}"))
                    })?;
                    last_index = Some(*idx);
                }
                from = chunk.last().map_or(last + 1, |(i, _)| i + 1);
            }
        }
        if let Some(c) = &committed {
            // Legitimate after a crash between installing a snapshot and purging the log up to
            // it; openraft's startup reconciles it with the state machine's snapshot.
            if last_index.is_none_or(|l| c.index() > l) {
                tracing::warn!(
                    committed = %c,
                    last_index = ?last_index,
                    "persisted committed log id is beyond the end of the log"
                );
            }
        }

        Ok(LogStore {
            wal,
            recent: Arc::new(Mutex::new(Recent::new())),
            meta,
            vote: Arc::new(Mutex::new(vote)),
            committed,
            last_purged,
            sync_committed: false,
            last_committed_persist: std::time::Instant::now() - COMMITTED_PERSIST_INTERVAL,
        })
    }

    /// Make `save_committed` wait until the committed id is durable (two fsyncs per call)
    /// instead of queueing it behind the log. Off by default.
    pub fn with_sync_committed(mut self, sync: bool) -> Self {
        self.sync_committed = sync;
        self
    }

    /// The underlying write-ahead log.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// The meta file store (`<data_dir>/meta`), e.g. for the cluster identity record.
    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// Flusher counters (fsyncs, batches, ...).
    pub fn stats(&self) -> WalStats {
        self.wal.stats()
    }

    /// Wait until everything written so far (including a queued committed id) is durable.
    pub async fn flush(&self) -> StorageResult<()> {
        // The committed id may be newer than the last one written (see `save_committed`).
        let bytes = postcard::to_allocvec(&self.committed)
            .map_err(|e| Error::Invalid(format!("cannot encode the committed log id: {e}")))?;
        let meta = self.meta.clone();
        self.wal.background(
            KEY_COMMITTED,
            Box::new(move || meta.put(KEY_COMMITTED, &bytes)),
        )?;
        self.wal.flush()?.wait_async().await
    }

    fn reader(&self) -> LogReader<C> {
        LogReader {
            wal: self.wal.clone(),
            recent: self.recent.clone(),
            vote: self.vote.clone(),
        }
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogReader<C>
where
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        read_range::<C>(&self.wal, &self.recent, range, None)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(lock(&self.vote).clone())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, io::Error> {
        read_range::<C>(&self.wal, &self.recent, start..end, Some(MAX_READ_BYTES))
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C>
where
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        read_range::<C>(&self.wal, &self.recent, range, None)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(lock(&self.vote).clone())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, io::Error> {
        read_range::<C>(&self.wal, &self.recent, start..end, Some(MAX_READ_BYTES))
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C>
where
    C::Entry: Clone,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_log_id = match self.wal.last_index() {
            None => self.last_purged.clone(),
            Some(idx) => {
                let bytes = self.wal.get(idx)?.ok_or_else(|| {
                    io::Error::other(format!("log record {idx} vanished while reading"))
                })?;
                Some(decode_entry::<C>(&self.wal, idx, &bytes)?.log_id())
            }
        };
        Ok(LogState {
            last_purged_log_id: self.last_purged.clone(),
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let bytes = encode("vote", vote)?;
        let meta = self.meta.clone();
        self.wal
            .barrier(Some(Box::new(move || meta.put(KEY_VOTE, &bytes))))?
            .wait_async()
            .await?;
        *lock(&self.vote) = Some(vote.clone());
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.committed = committed.clone();
        // Writing the meta file costs an fsync, a rename and a directory fsync. Persisting every
        // commit doubled the latency of an unloaded write, so the id is persisted at most once per
        // COMMITTED_PERSIST_INTERVAL: after a crash it may be older, which only means that more of
        // the (durable) log is re-applied once this node's leader commits again.
        if !self.sync_committed
            && self.last_committed_persist.elapsed() < COMMITTED_PERSIST_INTERVAL
        {
            return Ok(());
        }
        self.last_committed_persist = std::time::Instant::now();
        let bytes = encode("committed log id", &committed)?;
        let meta = self.meta.clone();
        let write = Box::new(move || meta.put(KEY_COMMITTED, &bytes));
        if self.sync_committed {
            self.wal.barrier(Some(write))?.wait_async().await?;
        } else {
            self.wal.background(KEY_COMMITTED, write)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.committed.clone())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        let mut decoded = Vec::new();
        for entry in entries {
            let bytes = encode("log entry", &entry)?;
            decoded.push((entry.index(), bytes.len(), entry));
            records.push((decoded[decoded.len() - 1].0, Bytes::from(bytes)));
        }
        // The decoded tail and the WAL change together under the tail's lock, so a reader never
        // finds one holding entries the other lacks.
        let mut recent = lock(&self.recent);
        for (index, size, entry) in decoded {
            recent.push(index, entry, size);
        }
        let appended = self.wal.append(records, move |r| {
            callback.io_completed(r.map_err(io::Error::from));
        });
        if appended.is_err() {
            recent.clear();
        }
        drop(recent);
        appended?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        tracing::debug!(last_kept = ?last_log_id, "truncating log");
        lock(&self.recent).truncate_after(last_log_id.as_ref().map(|l| l.index()));
        self.wal
            .truncate_after(last_log_id.as_ref().map(|l| l.index()))?
            .wait_async()
            .await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        if self
            .last_purged
            .as_ref()
            .is_some_and(|p| log_id.index() <= p.index())
        {
            return Ok(());
        }
        tracing::debug!(upto = %log_id, "purging log");
        let marker = Bytes::from(encode("purged log id", &log_id)?);
        // Not awaited: openraft runs purge inline in its core loop, and nothing depends on the
        // purge point being durable yet (a crash before it is only leaves more log behind a
        // durable snapshot, which the next purge removes). The log forgets the records at once,
        // keeps the purge ordered with later appends, and a failure fails every later write.
        lock(&self.recent).purge_upto(log_id.index());
        drop(self.wal.purge_upto(log_id.index(), marker)?);
        self.last_purged = Some(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{half_open, Recent, RECENT_MAX_ENTRIES};
    use std::collections::BTreeMap;

    /// What the WAL would answer for `start..end`: the held run clamped, at least one entry under
    /// `max_bytes`. `None` when the run is not held whole, where `Recent` must also say `None`
    /// or agree.
    fn model_get(
        m: &BTreeMap<u64, (u64, usize)>,
        start: u64,
        end: u64,
        max: Option<usize>,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, (v, n)) in m.range(start..end) {
            out.push(*v);
            bytes += n;
            if max.is_some_and(|x| bytes > x) {
                break;
            }
        }
        out
    }

    #[test]
    fn the_decoded_tail_agrees_with_the_log_it_mirrors() {
        // A log (index -> (value, size)) and the tail, driven by the same appends, truncates and
        // purges (a deterministic xorshift sequence); every read the tail answers must be the log's.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut log: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
        let mut tail: Recent<u64> = Recent::new();
        let (mut answered, mut value) = (0, 0u64);
        for _ in 0..20_000 {
            let last = log.keys().next_back().copied();
            match next() % 10 {
                0 => {
                    // truncate after a random kept index (or everything)
                    let keep = last.and_then(|l| l.checked_sub(next() % 8));
                    match keep {
                        Some(k) => log.retain(|i, _| *i <= k),
                        None => log.clear(),
                    }
                    tail.truncate_after(keep);
                }
                1 => {
                    if let Some(first) = log.keys().next().copied() {
                        let upto = first + next() % 6;
                        log.retain(|i, _| *i > upto);
                        tail.purge_upto(upto);
                    }
                }
                2 => {
                    // a snapshot installed: the log purged through it, appends go on after it
                    let at = last.map_or(1, |l| l + 1 + next() % 3);
                    log.clear();
                    tail.purge_upto(at - 1);
                    value += 1;
                    let size = (next() % 300) as usize;
                    log.insert(at, (value, size));
                    tail.push(at, value, size);
                }
                _ => {
                    for _ in 0..1 + next() % 5 {
                        let at = log.keys().next_back().map_or(1, |l| l + 1);
                        value += 1;
                        let size = (next() % 300) as usize;
                        log.insert(at, (value, size));
                        tail.push(at, value, size);
                    }
                }
            }
            let lo = log.keys().next().copied().unwrap_or(1);
            let start = lo.saturating_sub(2) + next() % 12;
            let end = start + next() % 12;
            let max = if next() % 2 == 0 {
                Some((next() % 600) as usize)
            } else {
                None
            };
            if let Some(got) = tail.get(start, end, max) {
                answered += 1;
                assert_eq!(
                    got,
                    model_get(&log, start, end, max),
                    "read {start}..{end} max {max:?}"
                );
                assert!(!got.is_empty());
            }
            assert!(tail.entries.len() <= RECENT_MAX_ENTRIES);
        }
        assert!(answered > 5_000, "the tail answered only {answered} reads");
    }

    #[test]
    fn ranges_become_half_open_and_unbounded_ends_go_to_the_wal() {
        assert_eq!(half_open(&(3..7)), Some((3, 7)));
        assert_eq!(half_open(&(3..=7)), Some((3, 8)));
        assert_eq!(half_open(&(..7)), Some((0, 7)));
        assert_eq!(half_open(&(3..)), None);
        assert_eq!(half_open(&(3..=u64::MAX)), None);
    }
}
