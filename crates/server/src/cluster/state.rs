//! A node's cluster-facing state: its addresses, the target number of voters, whether it serves
//! clients, and the fast-failover bookkeeping. Plain data; the tasks that change it are in the other
//! files of this module.
//!
//! Left out: the Raft state (`crate::raft::handle::Status`).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// A node's cluster-facing state.
pub struct Cluster {
    /// The peer address this node announces (in the Raft membership).
    pub peer_addr: String,
    /// The client address, known once the client port is bound.
    pub client_addr: parking_lot::Mutex<String>,
    /// Voters the leader aims for when nodes join.
    pub target_voters: usize,
    /// Whether client connections are accepted (false while the node has had no leader for too long).
    pub serving: AtomicBool,
    /// Whether the state committed before the last stop has been applied (until then, no clients).
    pub recovered: AtomicBool,
    /// The latest evidence of a working leader this node saw (`cluster::status::leaderless_ms`), ms since the epoch.
    pub last_evidence: AtomicI64,
    /// Serializes membership changes on the leader.
    pub membership_lock: tokio::sync::Mutex<()>,
    /// Why the leader is changing the membership now ("join request from node 4 at ..."), for the
    /// membership events (`cluster::watch`); taken by the next change seen.
    pub change_reason: parking_lot::Mutex<Option<String>>,
    /// Node ids the leader gave to joining nodes recently (id → when, ms since the epoch), so that two
    /// nodes joining at once do not get the same one.
    pub given_ids: parking_lot::Mutex<std::collections::BTreeMap<u64, i64>>,
    /// Fast-failover state (see `cluster::failover`).
    pub failover: Failover,
    /// Why this node's storage failed for good (set once; the node then serves nothing and its
    /// application, `roster serve`, exits so that a supervisor restarts it).
    pub storage_failed: tokio::sync::watch::Sender<Option<String>>,
}

impl Cluster {
    /// The state of a node announcing `peer_addr`.
    pub fn new(peer_addr: String, target_voters: usize, serving: bool) -> Cluster {
        Cluster {
            peer_addr,
            client_addr: parking_lot::Mutex::new(String::new()),
            target_voters,
            serving: AtomicBool::new(serving),
            recovered: AtomicBool::new(false),
            last_evidence: AtomicI64::new(0),
            membership_lock: tokio::sync::Mutex::new(()),
            change_reason: parking_lot::Mutex::new(None),
            given_ids: parking_lot::Mutex::new(std::collections::BTreeMap::new()),
            failover: Failover::default(),
            storage_failed: tokio::sync::watch::Sender::new(None),
        }
    }

    /// Why storage failed for good, or `None` while it works.
    pub fn storage_failure(&self) -> Option<String> {
        self.storage_failed.borrow().clone()
    }

    /// Records that storage failed for good; false if it was recorded already.
    pub fn fail_storage(&self, why: String) -> bool {
        self.storage_failed.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            *f = Some(why);
            true
        })
    }

    /// Records why the membership is about to change; reasons not yet taken by a membership event are
    /// kept, joined by "; ".
    pub fn note_change(&self, reason: String) {
        let mut r = self.change_reason.lock();
        *r = Some(match r.take() {
            Some(earlier) => format!("{earlier}; {reason}"),
            None => reason,
        });
    }

    /// Whether the node serves clients now.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }
}

/// Per-node fast-failover state (in `Cluster`).
#[derive(Default)]
pub struct Failover {
    /// The last term whose leader was found gone, held while checking (one check at a time).
    pub(crate) checked: tokio::sync::Mutex<u64>,
    /// The same, readable without waiting for a check in progress.
    pub(crate) gone: AtomicU64,
    /// The highest term of a fast-failover candidate this node refused because its log is behind ours.
    pub(crate) outbid: AtomicU64,
    /// The last term this node campaigned from.
    pub(crate) campaigned: AtomicU64,
}
