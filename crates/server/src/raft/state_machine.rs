//! The openraft state machine: applies committed [`Command`]s to the replicated `roster_state::State`,
//! fires the watches of this node's connections, and answers proposers with [`WriteReply`].
//!
//! Applying, firing watches and handing events to connections happen under the `db` lock, and the
//! proposer's reply is sent only after that, so a client always sees a watch event before any reply that
//! reveals the change (ZooKeeper's ordering rule; ClickHouse Keeper's `storage_and_responses_lock`).
//!
//! Snapshots: the state is an in-memory persistent structure, so the builder takes an O(1) clone and
//! serializes it on a blocking thread while applying goes on; the bytes go to a checksummed snapshot
//! file (`storage::snapshot`). The state itself is not persisted on apply: after a restart openraft
//! installs the latest snapshot and re-applies the committed log (the log store persists `committed`).
//!
//! Format versions (`crate::format`): a `SetFormat` entry (builds of format 3) records the new cluster
//! version in the data directory as it is applied; snapshots are written in the cluster's format, and
//! one taken at format 3 carries the version, which a follower installing it records too.

use super::types::{
    Command, LogId, Outcome, SnapshotMeta, StateView, StoredMembership, TypeConfig, WriteReply,
};
use crate::format;
use crate::shared::{now_ms, ConnMsg, Shared};
use crate::storage::snapshot::SnapshotStore;
use futures::TryStreamExt;
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use roster_state::{State, TxnOp, TxnResult};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The state machine handle given to openraft.
pub struct StateMachine {
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
}

impl StateMachine {
    /// A state machine over `shared`, storing snapshots in `snapshots`.
    pub fn new(shared: Arc<Shared>, snapshots: Arc<SnapshotStore>) -> StateMachine {
        StateMachine {
            shared,
            last_applied: None,
            membership: StoredMembership::default(),
            snapshots,
        }
    }

    fn apply_command(&self, zxid: i64, cmd: &Command) -> WriteReply {
        let shared = &self.shared;
        let txn = &cmd.0;
        let mut db = shared.db.lock();
        let applied = db.state.apply(zxid, txn);
        let events = db.watches.trigger(&applied.changes);
        if let TxnResult::Session {
            session_id,
            timeout_ms,
            ..
        } = &applied.result
        {
            shared
                .tracker
                .lock()
                .touch(*session_id, *timeout_ms, now_ms());
        }
        let outcome: Outcome = applied.result;
        let conns = shared.conns.lock();
        shared
            .stats
            .watch_events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for (watcher, event) in events {
            conns.send(watcher, ConnMsg::Event(event, zxid));
        }
        if matches!(txn.op, TxnOp::CloseSession) {
            conns.close_session(txn.session_id, "session closed");
            shared.tracker.lock().remove(txn.session_id);
            shared.closing.lock().remove(&txn.session_id);
        }
        // Sessions that pipeline reads behind their writes get an O(1) copy of the state as of this
        // entry, so those reads see exactly their own earlier writes (see net/connection.rs).
        let view = if shared.view_sessions.lock().contains_key(&txn.session_id) {
            StateView(Some(db.state.clone()))
        } else {
            StateView(None)
        };
        WriteReply {
            zxid,
            outcome,
            view,
        }
    }
}

/// Builds one snapshot from a clone of the state taken when it was asked for.
pub struct SnapshotBuilder {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
    /// The cluster format version as of `last_applied` (`crate::format`).
    cluster_format: u8,
    /// For the snapshot metrics.
    shared: Arc<Shared>,
}

/// (term, index) of a snapshot's last log id, for its file name.
fn position(last: &Option<LogId>) -> (u64, u64) {
    last.as_ref()
        .map(|l| (l.committed_leader_id().term, l.index))
        .unwrap_or((0, 0))
}

fn to_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        let (term, index) = position(&meta.last_log_id);
        let state = self.state.clone();
        let store = self.snapshots.clone();
        let meta_bytes = postcard::to_allocvec(&meta).map_err(to_io)?;
        let started = std::time::Instant::now();
        let cluster = self.cluster_format;
        // Streamed into the file as it is serialized: a large tree's snapshot is never one buffer.
        let bytes = tokio::task::spawn_blocking(move || -> Result<u64, io::Error> {
            let (_, bytes) = store
                .write_streamed(
                    format::snapshot_layout(cluster),
                    term,
                    index,
                    &meta_bytes,
                    // In the format every member reads (`format`): the cluster's.
                    &|w| {
                        format::write_snapshot_prefix(cluster, w)?;
                        state.write_snapshot(w)
                    },
                )
                .map_err(io::Error::from)?;
            Ok(bytes)
        })
        .await
        .map_err(to_io)??;
        self.shared
            .metrics
            .snapshot_built(started.elapsed(), bytes as usize);
        tracing::info!(
            term,
            index,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        // openraft (0.10, `core::sm::worker`) keeps only the metadata of a snapshot it asked for; the
        // data it sends to a follower comes from `get_current_snapshot`, which reads the file. So the
        // data is not read back here: it stays on disk, not in memory.
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: Vec::new(),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let zxid = i64::try_from(entry.log_id.index)
                .map_err(|_| to_io("log index beyond i64: zxid would wrap"))?;
            let reply = match entry.payload {
                EntryPayload::Normal(cmd) => {
                    // Recorded in the data directory before anything of the new format is written.
                    #[cfg(feature = "format-next")]
                    if let TxnOp::SetFormat { version } = cmd.0.op {
                        self.shared.formats.set_cluster(version)?;
                    }
                    self.apply_command(zxid, &cmd)
                }
                EntryPayload::Blank => {
                    self.shared.db.lock().state.note_zxid(zxid);
                    WriteReply::new(zxid, Outcome::None)
                }
                EntryPayload::Membership(m) => {
                    self.shared.db.lock().state.note_zxid(zxid);
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    WriteReply::new(zxid, Outcome::None)
                }
            };
            self.last_applied = Some(entry.log_id);
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let state = self.shared.db.lock().state.clone();
        SnapshotBuilder {
            state,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
            cluster_format: self.shared.formats.cluster(),
            shared: self.shared.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let (term, index) = position(&meta.last_log_id);
        let started = std::time::Instant::now();
        let size = snapshot.len();
        let (cluster, body) = format::unwrap_snapshot(&snapshot).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot {term}-{index}: {e}"),
            )
        })?;
        let state = State::from_snapshot(body).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot {term}-{index} does not decode: {e}"),
            )
        })?;
        self.shared.formats.set_cluster(cluster)?;
        // On restart openraft installs the snapshot it just read from disk: do not write it again.
        let already_stored = self.snapshots.path_of(term, index).exists();
        if !already_stored {
            let meta_bytes = postcard::to_allocvec(meta).map_err(to_io)?;
            let store = self.snapshots.clone();
            let layout = format::snapshot_layout(cluster);
            tokio::task::spawn_blocking(move || {
                store.write_layout(layout, term, index, &meta_bytes, &snapshot)
            })
            .await
            .map_err(to_io)?
            .map_err(io::Error::from)?;
        }
        self.shared.db.lock().state = state;
        if !already_stored {
            // Received from the leader (not the one read back at start-up).
            self.shared
                .metrics
                .snapshot_installed(started.elapsed(), size);
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        let store = self.snapshots.clone();
        let latest = tokio::task::spawn_blocking(move || store.latest())
            .await
            .map_err(to_io)?
            .map_err(io::Error::from)?;
        match latest {
            None => Ok(None),
            Some(file) => {
                let meta: SnapshotMeta = postcard::from_bytes(&file.meta).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "snapshot metadata in {} does not decode: {e}",
                            file.path.display()
                        ),
                    )
                })?;
                Ok(Some(SnapshotOf::<TypeConfig, Vec<u8>> {
                    meta,
                    snapshot: file.body,
                }))
            }
        }
    }
}
