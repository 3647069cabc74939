//! Durable on-disk storage used underneath openraft.
//!
//! * [`log`]: a segmented, checksummed write-ahead log of opaque byte records keyed by a `u64`
//!   index, with group commit on a dedicated flusher thread and crash recovery.
//! * [`meta`]: small durable key files (vote, committed log id, purge point, cluster identity),
//!   each replaced atomically (tmp file + fsync + rename + directory fsync) and checksummed.
//! * [`snapshot`]: checksummed snapshot files (opaque metadata + opaque body), the newest two
//!   kept.
//!
//! Everything here is byte-oriented and knows nothing about openraft's types; the typed glue
//! lives in [`crate::raft::log_store`]. What this module leaves out: compression, encryption,
//! preallocation, and any attempt to repair damaged committed data — damage that is not a torn
//! tail write is reported as [`Error::Corrupt`] and the operator has to restore the node.
//!
//! All functions are synchronous and may block on disk I/O; async callers wrap them in
//! `tokio::task::spawn_blocking` or use the callback/`WhenDurable` interfaces of [`log::Wal`].
//!
//! Transient errors (no free file descriptor, a full disk, EAGAIN, EINTR) on the operations that
//! can be repeated safely (opening files, positioned writes, writing a fresh tmp file, renames) are
//! retried with backoff for up to [`RETRY_FOR`] (see `retry_transient`); only then, or on any
//! other error, does the store fail. A failed fsync is never retried: the kernel may have dropped
//! the dirty pages, so what reached the disk is unknown.

pub mod log;
pub mod meta;
pub mod snapshot;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Errors produced by the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system level I/O failure on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Data that was once written durably is damaged. Never repaired automatically.
    #[error(
        "corrupt data in {}{}: {reason}. This data was acknowledged as \
         durable, so the node refuses to start on it rather than silently losing it. Restore this \
         node's data directory from a backup, or remove it and let the node re-sync from a \
         healthy peer (re-add it to the cluster as a fresh member)",
        path.display(),
        offset.map(|o| format!(" at byte offset {o}")).unwrap_or_default()
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage within the file, when it is known.
        offset: Option<u64>,
        /// What is wrong with the data.
        reason: String,
    },

    /// The caller asked for something the storage cannot do (e.g. a hole in the log).
    #[error("invalid storage request: {0}")]
    Invalid(String),

    /// An earlier write or fsync failed; the store no longer accepts writes, since what is on
    /// disk is unknown. Restart the process to recover from the durable state.
    #[error("storage is failed after an earlier I/O error and refuses further writes: {0}")]
    Failed(String),

    /// The background flusher has exited (the store is shutting down).
    #[error("storage flusher thread is gone")]
    Closed,
}

/// Result alias for the storage layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset: Some(offset),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset: None,
            reason: reason.into(),
        }
    }

    /// True if this error reports damaged durable data.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::Corrupt { .. } => io::ErrorKind::InvalidData,
            Error::Invalid(_) => io::ErrorKind::InvalidInput,
            Error::Failed(_) | Error::Closed => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Extension to attach a path to `io::Result`s.
pub(crate) trait IoResultExt<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoResultExt<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// fsync a directory so that file creations, renames and removals in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    retry_transient(dir, "open", || File::open(dir))
        .and_then(|d| d.sync_all())
        .at(dir)
}

/// How long a transient I/O error is retried before the store fails.
pub const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether `e` may clear by itself: no free file descriptor (EMFILE, ENFILE), a full disk (ENOSPC),
/// EAGAIN or EINTR (Linux error numbers).
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::StorageFull
    ) || matches!(e.raw_os_error(), Some(4 | 11 | 23 | 24 | 28))
}

/// Runs `f` (an operation on `path` that is safe to repeat) until it succeeds, fails with an error
/// that is not [transient](is_transient), or [`RETRY_FOR`] has passed; waits 10 ms, doubling up to
/// 1 s, between attempts. The first transient error is logged with its reason, then at most one line
/// every 10 s.
pub(crate) fn retry_transient<T>(
    path: &Path,
    op: &str,
    mut f: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(10);
    let mut logged: Option<std::time::Instant> = None;
    let mut attempts = 0u32;
    loop {
        match f() {
            Ok(v) => {
                if logged.is_some() {
                    tracing::info!(path = %path.display(), op, attempts, "storage operation succeeded after transient errors");
                }
                return Ok(v);
            }
            Err(e) if is_transient(&e) && started.elapsed() < RETRY_FOR => {
                attempts += 1;
                if logged.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
                    logged = Some(std::time::Instant::now());
                    tracing::warn!(
                        path = %path.display(), op, error = %e,
                        "transient storage error: retrying (free file descriptors or disk space; logged at most every 10 s)"
                    );
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Create `dir` (and parents) if missing, making the creation itself durable.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).at(dir)?;
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            fsync_dir(parent)?;
        }
    }
    fsync_dir(dir)
}
