//! Unit tests of the write-ahead log: append, read, truncate, purge, recovery and failures.

use std::fs::{self, OpenOptions};

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
