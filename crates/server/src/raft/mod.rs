//! The openraft glue, and the only part of the server that names openraft, so that an openraft upgrade
//! touches only this module.
//!
//! - [`types`]: the type configuration (what an entry carries, what applying one answers).
//! - [`log_store`]: openraft's log storage over the write-ahead log (`crate::storage::log`).
//! - [`state_machine`]: applies entries to the replicated state, builds and installs snapshots.
//! - [`network`]: the dialing side of the Raft RPCs, over the peer transport.
//! - [`rpc`]: the Raft messages and their receiving end.
//! - [`seed`]: a new data directory seeded with an imported state (a snapshot at its last zxid).
//! - [`handle`]: [`handle::RaftHandle`], the door the layers above use (status, propose, read index,
//!   membership changes), in Roster's own types.
//! - [`snapshot_policy`]: when this node snapshots (its interval, and never more often than the
//!   tree's size makes worthwhile).
//!
//! Below: this node's timers ([`raft_config`]).
//!
//! Left out: what the cluster does with Raft (joins, failover: `crate::cluster`).

pub mod handle;
pub mod log_store;
pub mod network;
pub mod rpc;
pub mod seed;
pub mod snapshot_policy;
pub mod state_machine;
pub mod types;

use std::time::Duration;

/// Heartbeat and election timeouts, ms. A follower starts an election once openraft's leader lease
/// (`ELECTION_MAX` since the last heartbeat) and then its randomized election timeout have passed:
/// 400–500 ms after the last heartbeat (often a second round after a split vote), so a leader that
/// stopped answering is replaced in about half a second. A leader whose process is gone (its peer port
/// refuses connections) is replaced at once by `cluster::failover`, without waiting for these timers.
/// Heartbeats travel on their own connections, never behind replication or snapshots.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
/// The shortest election timeout, ms.
pub const ELECTION_MIN: Duration = Duration::from_millis(150);
/// The longest election timeout, ms (also openraft's leader lease).
pub const ELECTION_MAX: Duration = Duration::from_millis(250);
/// Delays between attempts to reach an unreachable peer (openraft's backoff syntax: 50, 100,
/// 200, then 250 ms each).
const REPLICATION_BACKOFF: &str = "50ms 100ms ...250ms";
/// The snapshot interval this process uses: `every` minus up to a quarter, drawn once at start, so the
/// nodes of a cluster do not all serialize their trees at the same log index (ZooKeeper randomizes its
/// `snapCount` for the same reason).
pub fn staggered(every: u64) -> u64 {
    let quarter = every / 4;
    if quarter == 0 {
        return every;
    }
    every - rand::random_range(0..quarter)
}

/// The openraft configuration of a node: Roster's timers, backoff and elections.
///
/// Elections run a Pre-Vote round first (`enable_pre_vote`): a follower whose election timer fires
/// asks the voters whether they *would* vote for it at the next term, without raising its own term;
/// a voter says no while its leader lease (a leader heard from within `ELECTION_MAX`) holds or if
/// the candidate's log is behind. A node cut off from the others therefore never gets a quorum and
/// keeps its term, and when it returns it just catches up: its term is not higher than the leader's,
/// so nothing it sends makes the leader step down. A leader that is really gone (or cut off) is
/// replaced as before: the majority's voters' leases expire and the Pre-Vote passes at once, one round
/// trip before the real election.
pub fn raft_config(
    cluster_name: String,
    snapshot_policy: openraft::SnapshotPolicy,
    snapshot_log_keep: u64,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name,
        heartbeat_interval: HEARTBEAT.as_millis() as u64,
        election_timeout_min: ELECTION_MIN.as_millis() as u64,
        election_timeout_max: ELECTION_MAX.as_millis() as u64,
        enable_pre_vote: Some(true),
        install_snapshot_timeout: 10_000,
        snapshot_policy,
        max_in_snapshot_log_to_keep: snapshot_log_keep,
        // Retrying an unreachable peer: openraft's default doubles 200 ms up to 1 s, so a node
        // that restarts after a second away waited up to a second more before its leader
        // called again. A refused connect costs next to nothing; cap the wait at 250 ms.
        backoff: REPLICATION_BACKOFF.to_string(),
        ..Default::default()
    }
    .validate()
}

/// Starts this node's Raft on its storage: the log store, the state machine over the shared state and
/// its snapshot files, the network to its peers.
pub async fn start(
    identity: &crate::storage::meta::ClusterIdentity,
    config: &crate::config::Config,
    log_store: log_store::LogStore<types::TypeConfig>,
    shared: std::sync::Arc<crate::shared::Shared>,
    snapshots: std::sync::Arc<crate::storage::snapshot::SnapshotStore>,
    peer_tls: Option<std::sync::Arc<crate::transport::tls::PeerTls>>,
) -> Result<handle::RaftHandle, crate::error::Error> {
    let raft_error = |e: &dyn std::fmt::Display| crate::error::Error::Raft(e.to_string());
    let raft_config = raft_config(
        format!("roster-{}", identity.cluster_id),
        // Snapshots are asked for by `snapshot_policy::run` (started by the node).
        openraft::SnapshotPolicy::Never,
        config.snapshot_log_keep,
    )
    .map_err(|e| raft_error(&e))?;
    let sm = state_machine::StateMachine::new(shared.clone(), snapshots);
    let network = network::PeerNetwork::new(
        identity.cluster_id.clone(),
        identity.node_id,
        shared,
        peer_tls,
    );
    let raft = handle::Raft::new(
        identity.node_id,
        std::sync::Arc::new(raft_config),
        network,
        log_store,
        sm,
    )
    .await
    .map_err(|e| raft_error(&e))?;
    Ok(handle::RaftHandle::new(raft))
}

#[cfg(test)]
mod tests {
    use super::staggered;

    #[test]
    fn snapshot_intervals_are_staggered_within_the_top_quarter() {
        let drawn: std::collections::BTreeSet<u64> = (0..200).map(|_| staggered(100_000)).collect();
        assert!(
            drawn.iter().all(|n| (75_001..=100_000).contains(n)),
            "{drawn:?}"
        );
        assert!(drawn.len() > 100, "draws vary: {}", drawn.len());
        assert_eq!(staggered(3), 3, "tiny intervals are kept as given");
    }
}
