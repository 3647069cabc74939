//! Format versions: which peer protocol, log and snapshot formats this build reads and writes, what
//! it learned of its peers, and the cluster's format version.
//!
//! One number names a format generation of everything a node exchanges or stores: the peer frames'
//! version byte, the kinds of Raft log entries, the snapshot file layout. A build reads every version
//! from [`BASE`] to [`CURRENT`] and writes the *cluster* version: the highest version every member
//! runs, decided by the leader from what its peers announced ([`Formats::decide`]) and recorded in the
//! Raft log, so that every member applies the change at the same index. Until the cluster version
//! rises, a newer node writes what the older members read, so it can join, replicate, vote and lead
//! among them (etcd's cluster version, the same idea).
//!
//! - Peer frames: a dialer's hello frame carries its [`CURRENT`]; the listener answers at the
//!   negotiated version ([`negotiate`]) and both sides then write frames of that version. The hello
//!   message itself never changes shape, so any build can read any hello.
//! - The data directory records the cluster version it was written in (the meta file
//!   [`crate::storage::meta::KEY_FORMAT`], absent = [`BASE`]); a build older than it refuses to start
//!   ([`check_data_dir`]) instead of misreading entries it does not know.
//!
//! The normal build is version 2; the cargo feature `format-next` builds version 3, whose difference
//! is real and small: a log entry kind recording the cluster version (`TxnOp::SetFormat`), and
//! snapshot files of layout 2 that carry the cluster version, both written only once the cluster
//! version is 3.
//!
//! Left out: downgrading a cluster version (an older binary on a directory of a newer version is
//! refused; rolling back after the cluster version rose means restoring the backup).

use crate::storage::meta::{MetaStore, KEY_FORMAT};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};

/// The oldest format version this build reads and speaks.
pub const BASE: u8 = 2;

/// The newest format version this build reads and speaks (and writes once the cluster allows).
#[cfg(not(feature = "format-next"))]
pub const CURRENT: u8 = 2;
/// The newest format version this build reads and speaks (and writes once the cluster allows).
#[cfg(feature = "format-next")]
pub const CURRENT: u8 = 3;

/// Whether this build can read frames, entries and files of format `v`.
pub fn readable(v: u8) -> bool {
    (BASE..=CURRENT).contains(&v)
}

/// The version two peers speak: the lower of the two, or `Err` with what to do when this build
/// cannot speak it (`theirs` older than [`BASE`]) or the cluster already runs a newer version than
/// `theirs` (`cluster`).
pub fn negotiate(theirs: u8, cluster: u8) -> Result<u8, String> {
    if theirs < BASE {
        return Err(format!(
            "the dialer speaks format version {theirs}, this node {BASE} to {CURRENT}: upgrade the \
             dialing node (docs/operations.md, \"Upgrading\")"
        ));
    }
    let v = theirs.min(CURRENT);
    if v < cluster {
        return Err(format!(
            "the cluster runs format version {cluster} and the dialer only speaks up to {theirs}: \
             run a Roster that supports format {cluster} on that node (docs/operations.md, \"Upgrading\")"
        ));
    }
    Ok(v)
}

/// Checks the format version a data directory records against this build: `Err` with a message
/// naming both versions and what to do when the directory is newer than this build.
pub fn check_data_dir(dir: &std::path::Path, recorded: u8) -> Result<(), String> {
    if recorded > CURRENT {
        return Err(format!(
            "data directory {} is in format version {recorded}, written by a newer Roster; this \
             binary reads format versions {BASE} to {CURRENT}. Run the newer binary on it, or \
             restore the backup taken before the upgrade (docs/operations.md, \"Upgrading\")",
            dir.display()
        ));
    }
    if recorded < BASE {
        return Err(format!(
            "data directory {} is in format version {recorded}, older than this binary reads \
             ({BASE} to {CURRENT}): upgrade through an intermediate release first",
            dir.display()
        ));
    }
    Ok(())
}

/// What the node knows of format versions: the cluster version and each peer's announced one.
pub struct Formats {
    cluster: AtomicU8,
    /// The version the data directory records: the newest its files may hold.
    dir: AtomicU8,
    peers: Mutex<HashMap<u64, u8>>,
    meta: Mutex<Option<MetaStore>>,
}

impl std::fmt::Debug for Formats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Formats")
            .field("cluster", &self.cluster())
            .field("peers", &*self.peers.lock())
            .finish()
    }
}

impl Default for Formats {
    fn default() -> Self {
        Formats::new(BASE)
    }
}

impl Formats {
    /// Starts at cluster version `cluster`, with nothing known of peers and no directory to record to.
    pub fn new(cluster: u8) -> Formats {
        Formats {
            cluster: AtomicU8::new(cluster),
            dir: AtomicU8::new(cluster),
            peers: Mutex::new(HashMap::new()),
            meta: Mutex::new(None),
        }
    }

    /// Reads the data directory's recorded version from `meta` (absent: [`BASE`]), checks it
    /// ([`check_data_dir`]) and from now on records every raise of the cluster version there.
    pub fn open_dir(&self, dir: &std::path::Path, meta: MetaStore) -> Result<u8, String> {
        let recorded = read_recorded(&meta).map_err(|e| {
            format!(
                "data directory {}: its format version does not read: {e}",
                dir.display()
            )
        })?;
        check_data_dir(dir, recorded)?;
        self.cluster.store(recorded, Ordering::Release);
        self.dir.store(recorded, Ordering::Release);
        *self.meta.lock() = Some(meta);
        Ok(recorded)
    }

    /// The cluster's format version as this node last applied it.
    pub fn cluster(&self) -> u8 {
        self.cluster.load(Ordering::Acquire)
    }

    /// Files of version `v` are about to be written (a log entry recording it is appended): the
    /// data directory records `v` first (fsynced), so that an older binary refuses it rather than
    /// meeting an entry it cannot decode. A lower `v` than recorded is ignored.
    pub fn mark_dir(&self, v: u8) -> std::io::Result<()> {
        let meta = self.meta.lock();
        if v <= self.dir.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(meta) = meta.as_ref() {
            meta.put_value(KEY_FORMAT, &v)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        self.dir.store(v, Ordering::Release);
        Ok(())
    }

    /// The cluster version became `v` (an applied log entry or an installed snapshot says so):
    /// recorded in the data directory first ([`mark_dir`](Self::mark_dir)), then taken. A lower `v`
    /// than known is ignored.
    pub fn set_cluster(&self, v: u8) -> std::io::Result<()> {
        if v <= self.cluster() {
            return Ok(());
        }
        self.mark_dir(v)?;
        tracing::info!(
            from = self.cluster(),
            to = v,
            "cluster format version raised"
        );
        self.cluster.store(v, Ordering::Release);
        Ok(())
    }

    /// Peer `node` speaks up to `v` with this node (learned from a hello on a live connection).
    pub fn note_peer(&self, node: u64, v: u8) {
        if node != 0 {
            self.peers.lock().insert(node, v);
        }
    }

    /// Peer `node` is not reachable now: what it announced is no longer known to hold.
    pub fn forget_peer(&self, node: u64) {
        self.peers.lock().remove(&node);
    }

    /// What peer `node` announced, if known.
    pub fn peer(&self, node: u64) -> Option<u8> {
        self.peers.lock().get(&node).copied()
    }

    /// The version a leader should record for the cluster of `me` and `others` (every other member,
    /// voters and learners): the lowest version any of them runs, when that is above the recorded one
    /// and every member's is known. `None`: nothing to record.
    pub fn decide(&self, others: &[u64]) -> Option<u8> {
        let peers = self.peers.lock();
        let mut v = CURRENT;
        for n in others {
            v = v.min(*peers.get(n)?);
        }
        (v > self.cluster()).then_some(v)
    }
}

/// The snapshot file layout (`storage::snapshot`) written for cluster version `cluster`: 1 (the
/// state alone) below format 3, 2 (the cluster version, then the state: [`wrap_snapshot`]) from 3.
pub fn snapshot_layout(cluster: u8) -> u32 {
    if cluster >= 3 {
        2
    } else {
        1
    }
}

/// The newest snapshot file layout this build reads.
pub const SNAPSHOT_LAYOUT_MAX: u32 = if CURRENT >= 3 { 2 } else { 1 };

/// What opens a snapshot body that carries the cluster version: ten 0xff bytes (never the start of
/// a state body, whose first field is a postcard varint of at most ten bytes whose tenth is at most
/// 1) then "RFMT"; then the version byte.
const SNAPSHOT_MARK: [u8; 14] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'R', b'F', b'M', b'T',
];

/// The snapshot data (as stored and as sent to followers) for a state serialized as `state`, taken
/// at cluster version `cluster`: the state alone below format 3, the mark and the version before it
/// from 3 (so a follower that installs it learns the cluster version the log entry recorded).
pub fn wrap_snapshot(cluster: u8, state: Vec<u8>) -> Vec<u8> {
    if cluster < 3 {
        return state;
    }
    let mut out = Vec::with_capacity(SNAPSHOT_MARK.len() + 1 + state.len());
    out.extend_from_slice(&SNAPSHOT_MARK);
    out.push(cluster);
    out.extend_from_slice(&state);
    out
}

/// What [`wrap_snapshot`] puts before the state, written into `w` (nothing below format 3), for a
/// snapshot streamed to its file.
pub fn write_snapshot_prefix(cluster: u8, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    if cluster < 3 {
        return Ok(());
    }
    w.write_all(&SNAPSHOT_MARK)?;
    w.write_all(&[cluster])
}

/// The cluster version a snapshot's data was taken at and its state bytes; `Err` naming both
/// versions when it was taken at a version this build does not read.
pub fn unwrap_snapshot(data: &[u8]) -> Result<(u8, &[u8]), String> {
    match data.strip_prefix(&SNAPSHOT_MARK[..]) {
        None => Ok((BASE, data)),
        Some([v, state @ ..]) if readable(*v) => Ok((*v, state)),
        Some([v, ..]) => Err(format!(
            "the snapshot was taken at cluster format version {v}, this binary reads {BASE} to \
             {CURRENT}: run the newer binary, or restore the backup taken before the upgrade \
             (docs/operations.md, \"Upgrading\")"
        )),
        Some([]) => Err("the snapshot ends after its format mark".into()),
    }
}

fn read_recorded(meta: &MetaStore) -> crate::storage::Result<u8> {
    Ok(meta.get_value::<u8>(KEY_FORMAT)?.unwrap_or(BASE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_lower_version_and_respects_the_cluster() {
        assert_eq!(negotiate(CURRENT, BASE), Ok(CURRENT));
        assert_eq!(negotiate(CURRENT + 1, BASE), Ok(CURRENT));
        assert_eq!(negotiate(BASE, BASE), Ok(BASE));
        let e = negotiate(BASE - 1, BASE).unwrap_err();
        assert!(e.contains("upgrade the dialing node"), "{e}");
        // Once the cluster runs a newer version, an older node is refused, naming both.
        let e = negotiate(BASE, BASE + 1).unwrap_err();
        assert!(e.contains(&format!("format version {}", BASE + 1)), "{e}");
        assert!(e.contains(&format!("up to {BASE}")), "{e}");
    }

    #[test]
    fn the_leader_records_the_lowest_version_once_every_member_is_known() {
        let f = Formats::new(BASE);
        assert_eq!(f.decide(&[]), (CURRENT > BASE).then_some(CURRENT));
        assert_eq!(f.decide(&[2, 3]), None, "members not heard from yet");
        f.note_peer(2, CURRENT);
        assert_eq!(f.decide(&[2, 3]), None);
        f.note_peer(3, BASE);
        assert_eq!(f.decide(&[2, 3]), None, "an older member holds it back");
        f.note_peer(3, CURRENT);
        assert_eq!(f.decide(&[2, 3]), (CURRENT > BASE).then_some(CURRENT));
        f.forget_peer(2);
        assert_eq!(f.decide(&[2, 3]), None, "a member that went away");
        f.note_peer(0, BASE);
        assert_eq!(f.peer(0), None, "tools (node 0) are no members");
    }

    #[test]
    fn snapshots_carry_the_cluster_version_from_format_3() {
        let state = vec![0x02, 0x00, 0x07];
        assert_eq!(
            wrap_snapshot(BASE, state.clone()),
            state,
            "format 2: the state alone"
        );
        assert_eq!(unwrap_snapshot(&state), Ok((BASE, &state[..])));
        assert_eq!((snapshot_layout(2), snapshot_layout(3)), (1, 2));
        let wrapped = wrap_snapshot(3, state.clone());
        assert_ne!(wrapped, state);
        if CURRENT >= 3 {
            assert_eq!(unwrap_snapshot(&wrapped), Ok((3, &state[..])));
        } else {
            // An older build names both versions rather than misreading the state.
            let e = unwrap_snapshot(&wrapped).unwrap_err();
            assert!(
                e.contains("format version 3") && e.contains("2 to 2"),
                "{e}"
            );
        }
        // A snapshot streamed to its file opens with the same bytes as the wrapped one.
        for cluster in [BASE, 3] {
            let mut streamed = Vec::new();
            write_snapshot_prefix(cluster, &mut streamed).unwrap();
            streamed.extend_from_slice(&state);
            assert_eq!(streamed, wrap_snapshot(cluster, state.clone()), "{cluster}");
        }
        let mut newer = wrapped.clone();
        newer[SNAPSHOT_MARK.len()] = CURRENT + 1;
        assert!(unwrap_snapshot(&newer).is_err());
        assert!(unwrap_snapshot(&SNAPSHOT_MARK).is_err());
    }

    #[test]
    fn the_recorded_version_is_kept_in_the_data_directory_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = Formats::default();
        let meta = || MetaStore::open(d.path().join("meta")).unwrap();
        assert_eq!(f.open_dir(d.path(), meta()), Ok(BASE), "absent: the base");
        f.mark_dir(CURRENT).unwrap();
        assert_eq!(
            f.cluster(),
            BASE,
            "marking the directory does not raise the cluster"
        );
        if CURRENT > BASE {
            let e = Formats::default().open_dir(d.path(), meta());
            assert_eq!(e, Ok(CURRENT), "but it is recorded");
        }
        f.set_cluster(CURRENT).unwrap();
        assert_eq!(f.cluster(), CURRENT);
        f.set_cluster(BASE).unwrap();
        assert_eq!(f.cluster(), CURRENT, "never lowered");
        assert_eq!(Formats::default().open_dir(d.path(), meta()), Ok(CURRENT));
        // A directory written by a newer build is refused with both versions and what to do.
        meta().put_value(KEY_FORMAT, &(CURRENT + 1)).unwrap();
        let e = Formats::default().open_dir(d.path(), meta()).unwrap_err();
        assert!(
            e.contains(&format!("format version {}", CURRENT + 1)),
            "{e}"
        );
        assert!(e.contains(&format!("{BASE} to {CURRENT}")), "{e}");
        assert!(
            e.contains("Run the newer binary") && e.contains("restore the backup"),
            "{e}"
        );
        assert!(readable(BASE) && readable(CURRENT) && !readable(CURRENT + 1));
    }
}
