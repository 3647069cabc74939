//! Durability and recovery of the on-disk [`LogStore`]: what survives a reopen, how torn tails
//! and real corruption are told apart, purge/truncate persistence, and group commit.
//!
//! "Crashes" are simulated by dropping the store (which stops the flusher after the queued
//! writes) and then damaging the files by hand; power loss itself is not simulated.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log_id;
use openraft::type_config::alias::{EntryOf, LogIdOf, OneshotReceiverOf, VoteOf};
use openraft::type_config::TypeConfigExt;
use roster_server::raft::log_store::{LogStore, LOG_DIR, META_DIR};
use roster_server::storage::log::WalOptions;

openraft::declare_raft_types!(
    pub TestConfig:
        D = String,
        R = String,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);
type C = TestConfig;
type Flushed = OneshotReceiverOf<C, Result<(), std::io::Error>>;

fn lid(term: u64, index: u64) -> LogIdOf<C> {
    log_id::<C>(term, 1, index)
}

fn ent(term: u64, index: u64) -> EntryOf<C> {
    EntryOf::<C>::new_normal(lid(term, index), format!("data-{term}-{index}"))
}

fn open(dir: &Path) -> LogStore<C> {
    LogStore::<C>::open(dir).expect("open log store")
}

fn open_small(dir: &Path) -> LogStore<C> {
    LogStore::<C>::open_with(
        dir,
        WalOptions {
            segment_target_bytes: 512,
            // A tiny in-memory tail: reads of older entries go to the segment files.
            memory_tail_entries: 3,
            memory_tail_bytes: 1024,
            ..WalOptions::default()
        },
    )
    .expect("open log store")
}

/// Append without waiting; returns the flush notification.
async fn append_nowait(store: &mut LogStore<C>, entries: Vec<EntryOf<C>>) -> Flushed {
    let (tx, rx) = C::oneshot();
    store
        .append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx
}

async fn append(store: &mut LogStore<C>, entries: Vec<EntryOf<C>>) {
    append_nowait(store, entries)
        .await
        .await
        .expect("callback called")
        .expect("flushed");
}

async fn append_range(store: &mut LogStore<C>, term: u64, range: std::ops::Range<u64>) {
    append(store, range.map(|i| ent(term, i)).collect()).await;
}

async fn all(store: &mut LogStore<C>) -> Vec<(LogIdOf<C>, String)> {
    store
        .try_get_log_entries(..)
        .await
        .expect("read")
        .into_iter()
        .map(|e| {
            let data = match e.payload {
                openraft::EntryPayload::Normal(s) => s,
                other => format!("{other:?}"),
            };
            (e.log_id, data)
        })
        .collect()
}

fn expected(term: u64, range: std::ops::Range<u64>) -> Vec<(LogIdOf<C>, String)> {
    range
        .map(|i| (lid(term, i), format!("data-{term}-{i}")))
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join(LOG_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, offset: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

#[tokio::test]
async fn reopen_returns_same_entries_vote_and_committed() {
    let d = tempfile::tempdir().unwrap();
    let vote = VoteOf::<C>::new(3, 1);
    {
        let mut s = open(d.path());
        append_range(&mut s, 1, 0..10).await;
        append_range(&mut s, 2, 10..20).await;
        s.save_vote(&vote).await.unwrap();
        s.save_committed(Some(lid(2, 15))).await.unwrap();
    }
    let mut s = open(d.path());
    let mut want = expected(1, 0..10);
    want.extend(expected(2, 10..20));
    assert_eq!(all(&mut s).await, want);
    assert_eq!(s.read_vote().await.unwrap(), Some(vote));
    assert_eq!(s.read_committed().await.unwrap(), Some(lid(2, 15)));
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, None);
    assert_eq!(st.last_log_id, Some(lid(2, 19)));

    // A reader handle sees the same, and later appends.
    let mut r = s.get_log_reader().await;
    assert_eq!(r.read_vote().await.unwrap(), Some(vote));
    append_range(&mut s, 2, 20..21).await;
    assert_eq!(r.try_get_log_entries(20..).await.unwrap().len(), 1);
}

#[tokio::test]
async fn torn_tail_is_dropped_and_earlier_entries_survive() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = open(d.path());
        append_range(&mut s, 1, 0..10).await;
    }
    // Cut the last record short by a few bytes.
    let seg = segments(d.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    {
        let mut s = open(d.path());
        assert_eq!(all(&mut s).await, expected(1, 0..9));
        assert_eq!(
            s.get_log_state().await.unwrap().last_log_id,
            Some(lid(1, 8))
        );
        // The log continues where the torn record was.
        append_range(&mut s, 1, 9..12).await;
    }
    // Garbage after the last valid record.
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(b"\x00\x00\x00\x09garbage-garbage");
    fs::write(&seg, data).unwrap();
    let mut s = open(d.path());
    assert_eq!(all(&mut s).await, expected(1, 0..12));
}

#[tokio::test]
async fn flipped_byte_in_a_middle_record_is_an_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = open(d.path());
        append_range(&mut s, 1, 0..10).await;
    }
    let seg = segments(d.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    flip_byte(&seg, len / 2);
    let err = LogStore::<C>::open(d.path()).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&seg.display().to_string()), "{msg}");
    assert!(msg.contains("byte offset"), "{msg}");
    assert!(msg.contains("backup") && msg.contains("peer"), "{msg}");
}

/// Waits (up to 10 s) until `cond` holds; fails the test naming `what` otherwise.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn purge_then_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = open_small(d.path());
        append_range(&mut s, 1, 0..60).await;
        let before = segments(d.path()).len();
        s.purge(lid(1, 30)).await.unwrap();
        // Segment files are deleted off the flusher, soon after the purge point is durable.
        eventually("whole segments deleted", || {
            segments(d.path()).len() < before
        })
        .await;
        assert_eq!(all(&mut s).await, expected(1, 31..60));
    }
    {
        let mut s = open_small(d.path());
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 30)));
        assert_eq!(st.last_log_id, Some(lid(1, 59)));
        assert_eq!(all(&mut s).await, expected(1, 31..60));
        // Purge past the end, as after installing a snapshot.
        s.purge(lid(2, 80)).await.unwrap();
        eventually("every segment deleted", || segments(d.path()).is_empty()).await;
    }
    {
        let mut s = open_small(d.path());
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(2, 80)));
        assert_eq!(st.last_log_id, Some(lid(2, 80)));
        assert!(all(&mut s).await.is_empty());
        append_range(&mut s, 2, 81..83).await;
    }
    let mut s = open_small(d.path());
    assert_eq!(all(&mut s).await, expected(2, 81..83));
}

#[tokio::test]
async fn truncate_after_then_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = open_small(d.path());
        append_range(&mut s, 1, 0..30).await;
        s.truncate_after(Some(lid(1, 19))).await.unwrap();
        assert_eq!(all(&mut s).await, expected(1, 0..20));
        // A new leader's entries replace the removed ones.
        append_range(&mut s, 2, 20..25).await;
    }
    {
        let mut s = open_small(d.path());
        let mut want = expected(1, 0..20);
        want.extend(expected(2, 20..25));
        assert_eq!(all(&mut s).await, want);
        s.truncate_after(None).await.unwrap();
    }
    let mut s = open_small(d.path());
    assert!(all(&mut s).await.is_empty());
    assert_eq!(s.get_log_state().await.unwrap().last_log_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let d = tempfile::tempdir().unwrap();
    let mut s = open(d.path());
    let n = 500u64;
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(append_nowait(&mut s, vec![ent(1, i)]).await);
    }
    for rx in pending {
        rx.await.unwrap().unwrap();
    }
    let st = s.stats();
    eprintln!("{n} appends: {st:?}");
    assert_eq!(st.records_written, n);
    assert!(
        st.fsyncs * 4 < n,
        "{n} appends should share fsyncs, got {st:?}"
    );
    assert_eq!(all(&mut s).await.len(), n as usize);
}

#[tokio::test]
async fn save_vote_is_ordered_after_pending_appends() {
    let d = tempfile::tempdir().unwrap();
    let mut s = open(d.path());
    let mut pending = Vec::new();
    for i in 0..50 {
        pending.push(append_nowait(&mut s, vec![ent(1, i)]).await);
    }
    s.save_vote(&VoteOf::<C>::new(2, 1)).await.unwrap();
    // Every earlier append was made durable (and acknowledged) before the vote was written.
    for mut rx in pending {
        assert!(matches!(rx.try_recv(), Ok(Ok(()))));
    }
}

#[tokio::test]
async fn committed_is_persisted_in_both_modes() {
    for sync in [false, true] {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = open(d.path()).with_sync_committed(sync);
            append_range(&mut s, 1, 0..5).await;
            s.save_committed(Some(lid(1, 2))).await.unwrap();
            s.save_committed(Some(lid(1, 4))).await.unwrap();
            s.flush().await.unwrap();
        }
        let mut s = open(d.path());
        assert_eq!(
            s.read_committed().await.unwrap(),
            Some(lid(1, 4)),
            "sync={sync}"
        );
    }
}

#[tokio::test]
async fn corrupt_vote_file_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = open(d.path());
        s.save_vote(&VoteOf::<C>::new(2, 1)).await.unwrap();
    }
    let vote_file = d.path().join(META_DIR).join("vote.meta");
    flip_byte(&vote_file, 13);
    let msg = LogStore::<C>::open(d.path()).unwrap_err().to_string();
    assert!(msg.contains("vote.meta"), "{msg}");
}

#[tokio::test]
async fn holes_are_rejected_and_reads_never_have_gaps() {
    let d = tempfile::tempdir().unwrap();
    let mut s = open(d.path());
    append_range(&mut s, 1, 0..5).await;
    let (tx, _rx) = C::oneshot();
    let err = s
        .append(vec![ent(1, 7)], IOFlushed::signal(tx))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("next index is 5"), "{err}");
    let got = s.try_get_log_entries(3..100).await.unwrap();
    let idx: Vec<u64> = got.iter().map(|e| e.index()).collect();
    assert_eq!(idx, vec![3, 4]);
}
