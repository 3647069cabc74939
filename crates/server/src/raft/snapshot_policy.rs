//! When this node snapshots: once the log since its last snapshot holds at least its snapshot interval
//! (`snapshot_every`, drawn per node by [`super::staggered`]) **and** at least half as many entries as
//! the tree has znodes.
//!
//! A snapshot serializes the whole tree, so under a fixed interval its cost per write grows with the
//! tree: a 750,000-znode tree under 25,000 writes/s was rewritten (156 MB) every two seconds on every
//! node, and those rewrites took most of a 3-node cluster's CPU. Waiting for `znodes / 2` entries
//! bounds the work to two znodes serialized per write whatever the tree's size (the rule of Redis's
//! `auto-aof-rewrite-percentage`: rewrite once the log has grown in proportion to what a rewrite costs),
//! and a restart still replays at most half as many entries as the snapshot it loads holds znodes.
//! Small trees are unaffected: below `2 × snapshot_every` znodes the interval alone decides.
//!
//! openraft is told never to snapshot by itself (`SnapshotPolicy::Never`); [`run`] looks every
//! [`CHECK`] at the applied index, the last snapshot's index and the tree's size, and asks for a
//! snapshot when one is due. Building, installing and purging stay openraft's and the state machine's.

use super::handle::RaftHandle;
use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the policy looks. At 100,000 writes/s a snapshot starts at most 10,000 entries late.
pub const CHECK: Duration = Duration::from_millis(100);

/// This node's snapshot interval: the configured `snapshot_every` and the share of it this node drew
/// ([`super::staggered`]), which scales the tree-size part too, so that members of a cluster with a
/// large tree do not all serialize it at the same index either.
#[derive(Debug, Clone, Copy)]
pub struct Interval {
    /// The configured interval.
    pub every: u64,
    /// This node's drawn interval, in `(3/4 × every, every]`.
    pub drawn: u64,
}

impl Interval {
    /// Draws this node's interval.
    pub fn draw(every: u64) -> Interval {
        Interval {
            every,
            drawn: super::staggered(every),
        }
    }

    /// Log entries a snapshot waits for: the drawn interval, or half the tree's znodes (scaled by the
    /// same draw) if that is more.
    pub fn threshold(&self, znodes: u64) -> u64 {
        let tree = (znodes / 2) as u128 * self.drawn as u128 / self.every.max(1) as u128;
        self.drawn.max(tree as u64)
    }

    /// Whether a snapshot is due: `applied` is the last applied index, `base` the index of the last
    /// snapshot (or of the last one asked for, while it is being built).
    pub fn due(&self, applied: u64, base: u64, znodes: u64) -> bool {
        applied.saturating_sub(base) >= self.threshold(znodes)
    }
}

/// Asks for a snapshot whenever one is due, until `shutdown` changes or Raft stops.
pub async fn run(
    raft: RaftHandle,
    shared: Arc<Shared>,
    interval: Interval,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked_at = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (applied, snapshot) = raft.applied_and_snapshot();
        let znodes = shared.db.lock().state.node_count() as u64;
        if interval.due(applied, snapshot.max(asked_at), znodes) {
            tracing::debug!(
                applied,
                snapshot,
                znodes,
                threshold = interval.threshold(znodes),
                "snapshot due"
            );
            if raft.snapshot_now().await.is_err() {
                return; // Raft stopped
            }
            asked_at = applied;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Interval = Interval {
        every: 100_000,
        drawn: 100_000,
    };

    #[test]
    fn small_trees_snapshot_at_the_interval() {
        assert!(!FULL.due(99_999, 0, 1_000));
        assert!(FULL.due(100_000, 0, 1_000));
        assert!(FULL.due(250_000, 150_000, 199_999));
    }

    #[test]
    fn large_trees_wait_for_half_their_znodes_in_log_entries() {
        // 750,000 znodes: 375,000 entries, not 100,000.
        assert!(!FULL.due(374_999, 0, 750_000));
        assert!(FULL.due(375_000, 0, 750_000));
        // Counted from the last snapshot (or the last one asked for).
        assert!(!FULL.due(1_000_000, 700_000, 750_000));
        assert!(FULL.due(1_075_000, 700_000, 750_000));
    }

    #[test]
    fn the_draw_scales_both_parts() {
        let low = Interval {
            every: 100_000,
            drawn: 80_000,
        };
        assert_eq!(low.threshold(1_000), 80_000);
        assert_eq!(low.threshold(750_000), 300_000);
        let drawn = Interval::draw(100_000);
        assert!((75_001..=100_000).contains(&drawn.drawn), "{drawn:?}");
    }

    #[test]
    fn an_index_behind_the_snapshot_is_never_due() {
        let tiny = Interval { every: 1, drawn: 1 };
        assert!(!tiny.due(10, 500, 0));
        assert!(tiny.due(11, 10, 0));
    }
}
