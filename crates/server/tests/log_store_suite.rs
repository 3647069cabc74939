//! openraft's own storage conformance suite (`openraft::testing::log::Suite`) run against the
//! on-disk [`LogStore`] in a fresh temp directory per case.
//!
//! The suite also exercises a state machine; the minimal one here keeps its state in memory and
//! its snapshots on disk through [`SnapshotStore`] (openraft's `SnapshotMeta` postcard-encoded as
//! the snapshot's metadata). It is a test fixture only, not Roster's state machine.

use std::io;

use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, StorageError};
use roster_server::raft::log_store::LogStore;
use roster_server::storage::snapshot::SnapshotStore;

openraft::declare_raft_types!(
    /// Test configuration; same leader-id flavour as Roster's.
    pub TestConfig:
        D = String,
        R = String,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);
type C = TestConfig;

/// In-memory state machine with on-disk snapshots.
struct TestSm {
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    applied_normal: Vec<String>,
    snapshots: SnapshotStore,
}

struct TestSnapshotBuilder {
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    applied_normal: Vec<String>,
    snapshots: SnapshotStore,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn term_index(meta: &SnapshotMetaOf<C>) -> (u64, u64) {
    meta.last_log_id
        .as_ref()
        .map_or((0, 0), |l| (l.committed_leader_id().term, l.index()))
}

fn write_snapshot(
    store: &SnapshotStore,
    meta: &SnapshotMetaOf<C>,
    body: &[u8],
) -> Result<(), io::Error> {
    let (term, index) = term_index(meta);
    let meta_bytes = postcard::to_allocvec(meta).map_err(io_err)?;
    store.write(term, index, &meta_bytes, body)?;
    Ok(())
}

impl RaftSnapshotBuilder<C> for TestSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Vec<u8>>, io::Error> {
        let meta = SnapshotMetaOf::<C> {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        let body = postcard::to_allocvec(&self.applied_normal).map_err(io_err)?;
        let (store, m, b) = (self.snapshots.clone(), meta.clone(), body.clone());
        tokio::task::spawn_blocking(move || write_snapshot(&store, &m, &b))
            .await
            .map_err(io_err)??;
        Ok(Snapshot {
            meta,
            snapshot: body,
        })
    }
}

impl RaftStateMachine<C> for TestSm {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = TestSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures::Stream<Item = Result<EntryResponder<C>, io::Error>>
            + Unpin
            + openraft::OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(s) => self.applied_normal.push(s),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m);
                }
            }
            self.last_applied = Some(entry.log_id);
            if let Some(r) = responder {
                r.send(String::new());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        TestSnapshotBuilder {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            applied_normal: self.applied_normal.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let applied: Vec<String> = postcard::from_bytes(&snapshot).map_err(io_err)?;
        let (store, m, b) = (self.snapshots.clone(), meta.clone(), snapshot);
        tokio::task::spawn_blocking(move || write_snapshot(&store, &m, &b))
            .await
            .map_err(io_err)??;
        self.applied_normal = applied;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, Vec<u8>>>, io::Error> {
        let store = self.snapshots.clone();
        let latest = tokio::task::spawn_blocking(move || store.latest())
            .await
            .map_err(io_err)??;
        match latest {
            None => Ok(None),
            Some(f) => {
                let meta: SnapshotMetaOf<C> = postcard::from_bytes(&f.meta).map_err(io_err)?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: f.body,
                }))
            }
        }
    }
}

struct Builder;

impl StoreBuilder<C, LogStore<C>, TestSm, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<C>, TestSm), StorageError<C>> {
        let to_sto = |e: roster_server::storage::Error| {
            StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, e.into())
        };
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let store = LogStore::<C>::open(dir.path()).map_err(to_sto)?;
        let snapshots = SnapshotStore::open(dir.path().join("snapshots")).map_err(to_sto)?;
        let sm = TestSm {
            last_applied: None,
            membership: Default::default(),
            applied_normal: Vec::new(),
            snapshots,
        };
        Ok((dir, store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<C>> {
    Suite::test_all(Builder).await?;
    Ok(())
}
