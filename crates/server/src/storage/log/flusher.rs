//! The flusher thread, which owns the segment files and makes queued operations durable in
//! batches (group commit), and the janitor thread, which deletes purged segment files so that
//! appends never wait for it. The queued operations ([`Op`]) come from [`super::Wal`]; what is
//! already in memory and who reads it is the business of [`super`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;

use super::segment::{encode_record, segment_path, Segment};
use super::{
    bump, lock, Counters, Done, OrderedWrite, PurgeRecord, SharedSegs, WalOptions, BASE_KEY,
    MAX_OPS_PER_BATCH, PURGE_KEY, RECORD_HEADER_LEN,
};
use crate::storage::meta::MetaStore;
use crate::storage::{fsync_dir, retry_transient, Error, IoResultExt, Result};

pub(super) enum Op {
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
pub(super) struct Written {
    pub(super) epoch: u64,
    /// Every record below this index (and at or after the log's first index) is written.
    pub(super) next: u64,
}

pub(super) struct Flusher {
    pub(super) dir: PathBuf,
    pub(super) meta: MetaStore,
    pub(super) opts: WalOptions,
    pub(super) stats: Arc<Counters>,
    pub(super) failed: Arc<Mutex<Option<String>>>,
    /// The segments; shared with readers, which hold the lock while reading the files, so every
    /// change to the files and to this list happens under it.
    pub(super) segs: SharedSegs,
    /// How far records are written, published to the appenders (see [`Written`]).
    pub(super) written: Arc<Mutex<Written>>,
    /// Truncate epoch of the last truncate processed.
    pub(super) epoch: u64,
    /// Index after the last record in `buf`, if any.
    pub(super) buffered_next: Option<u64>,
    /// Open handle on the last segment.
    pub(super) active: Option<File>,
    /// Encoded records for the last segment not yet written.
    pub(super) buf: Vec<u8>,
    /// The last segment has bytes (buffered or written) not yet fdatasynced.
    pub(super) dirty: bool,
    pub(super) purged: Option<u64>,
    /// Durable index of the first segment created in an empty log (`base.meta`, 0 if absent).
    pub(super) base: u64,
    /// Deletes purged segment files off this thread.
    pub(super) janitor: mpsc::Sender<Chore>,
}

/// Work taken off the flusher: deleting purged segment files.
pub(super) enum Chore {
    /// Delete these segment files, then fsync the directory.
    Remove(Vec<PathBuf>),
    /// Stop after the chores queued before.
    Stop,
}

/// The janitor thread's loop. Failures are logged: a file it could not delete is wholly below the
/// durable purge point, and the next recovery deletes it.
pub(super) fn janitor(dir: PathBuf, stats: Arc<Counters>, rx: mpsc::Receiver<Chore>) {
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
    pub(super) fn run(mut self, rx: mpsc::Receiver<Op>) {
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
            retry_transient(&path, "preallocate", || f.write_all_at(&ZEROS[..n], at)).at(&path)?;
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
            let f = retry_transient(&path, "open", || OpenOptions::new().write(true).open(&path))
                .at(&path)?;
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
            let r = self.active_file().and_then(|f| {
                retry_transient(&path, "write", || f.write_all_at(&buf, at)).at(&path)
            });
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
            let started = std::time::Instant::now();
            self.active_file()?.sync_data().at(&path)?;
            bump(&self.stats.fsyncs, 1);
            if let Some(m) = self.stats.metrics.get() {
                let written = self.stats.records_written.load(Ordering::Relaxed);
                let before = self.stats.records_synced.swap(written, Ordering::Relaxed);
                m.fsync(started.elapsed(), written.saturating_sub(before));
            }
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
        let f = retry_transient(&path, "create", || {
            OpenOptions::new().write(true).create_new(true).open(&path)
        })
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
            let f = retry_transient(path, "open", || OpenOptions::new().write(true).open(path))
                .at(path)?;
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
    pub(super) fn take_purged_segments(&mut self) -> Vec<PathBuf> {
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
