//! [`State`] and [`State::apply`]: the deterministic transition function of the replicated state machine.
//!
//! # Inputs and outputs
//! `apply(zxid, &txn)` takes the Raft log index as the zxid and a [`Txn`] (session, leader time, op), and
//! returns an [`Applied`]: the result for the client (a session, a response or error code, `Closed`, or
//! nothing) and the ordered list of [`Change`]s, which the server feeds to every node-local
//! [`crate::WatchTable`] to fire watches. Watch events must reach a client before the response that
//! reveals the change; the changes are listed in the order ZooKeeper's `DataTree` fires them (for a
//! create: the node's `NodeCreated`, then the parent's `NodeChildrenChanged`; for a delete: `NodeDeleted`,
//! then the parent's `NodeChildrenChanged`; for setData: `NodeDataChanged`).
//!
//! # What apply checks, in ZooKeeper's order
//! The checks are those of `PrepRequestProcessor.pRequest2Txn`, in the same order, so the same request
//! fails with the same code:
//! - **create** (1, 15, 19, 21): flags → BadArguments; TTL rules (createTTL needs a TTL mode and a TTL in
//!   `1..=0xFF_FFFF_FFFF`; create/create2/createContainer with a TTL mode) → BadArguments; no `/` or a NUL
//!   → BadArguments; ACL (`fixupACL`) → InvalidACL; parent missing → NoNode; CREATE on the parent →
//!   NoAuth; sequential suffix from the parent's stored cversion; full path validation → BadArguments;
//!   exists → NodeExists; ephemeral parent → NoChildrenForEphemerals. The kind follows the *opcode*:
//!   createContainer always makes a container, createTTL a TTL node, and create/create2 with the container
//!   flag make a plain persistent node (ZooKeeper's `CreateTxn` carries only an ephemeral bit).
//! - **delete**: no `/`, a NUL, or a special path (`/`, `/zookeeper`, `/zookeeper/quota`,
//!   `/zookeeper/config`) → BadArguments; parent missing → NoNode; DELETE on the parent → NoAuth; node
//!   missing → NoNode; version → BadVersion; children → NotEmpty. (Note that ZooKeeper does not run full
//!   path validation on delete: an invalid path simply does not exist, so it is NoNode.)
//! - **setData**: path → BadArguments; NoNode; WRITE → NoAuth; version → BadVersion.
//! - **setACL**: path → BadArguments; ACL → InvalidACL; NoNode; ADMIN → NoAuth; aversion → BadVersion.
//! - **check**: path → BadArguments; NoNode; READ → NoAuth; version → BadVersion.
//! - **multi**: every op is checked against the state as changed by the ops before it. On the first
//!   failure the state is restored (a persistent-map clone taken before the first op, O(1)), and the
//!   results are `Error(Ok)` before the failing op, its code at it, `Error(RuntimeInconsistency)` after it;
//!   the reply itself is a success (`FinalRequestProcessor` never sets the header error for multi). A
//!   multi that contains an op type ZooKeeper's `MultiOperationRecord` would not decode for a write multi
//!   (a read, setACL, a nested multi) fails as a whole with MarshallingError.
//! - A `Request` from a session that is not in the table → SessionExpired, nothing changes.
//!
//! # Versions and counters
//! Data and ACL versions follow ZooKeeper 3.9's `checkAndIncVersion` exactly: `-1` matches any version;
//! the increment wraps like Java's `int` from `i32::MAX` to `i32::MIN`, and skips `-1` (going to 0
//! instead), because a stored -1 could never be matched by a conditional write (ZOOKEEPER-4743). This is
//! ZooKeeper's documented behaviour, not an accident, so Roster keeps it. The stored child cversion (the
//! count of creates, the source of sequential suffixes) is a 64-bit counter: suffixes keep growing past
//! 2^31 (ZooKeeper's 32-bit counter stops there and sequential creates fail), while the wire's 32-bit
//! cversion saturates at `i32::MAX`. zxids are `i64` log indexes and never wrap.
//!
//! # Deliberate differences from ZooKeeper
//! - **Containers are deleted in the same apply** that removes their last child (after all ops of a
//!   multi, so a multi may delete and recreate a container's only child), cascading to parent containers.
//!   ZooKeeper's `ContainerManager` does it up to a minute later with a separate `deleteContainer` txn.
//!   A container that never had a child (stored cversion 0) stays, as in ZooKeeper (whose optional
//!   `maxNeverUsedIntervalMs` cleanup is not implemented).
//! - **TTL nodes** are deleted only by an `ExpireTtl` txn the leader proposes from
//!   [`State::ttl_candidates`]; apply re-checks ZooKeeper's rule (childless, TTL non-zero,
//!   `time - mtime > ttl`, strictly) against the txn's time.
//! - A txn whose zxid is not above [`State::last_zxid`] is ignored (`TxnResult::None`, no changes): a
//!   replica that installed a snapshot and is handed an already-applied entry does not apply it twice.
//! - Quotas are neither tracked nor enforced (see `tree.rs`).

use crate::acl::{check_acl, fixup_acl};
use crate::path::{self, validate_path};
use crate::session::{first_session_id, Session};
use crate::tree::{node_data, DataTree, Node, NodeKind, CONTAINER_OWNER};
use crate::txn::{Txn, TxnOp};
use bytes::Bytes;
use imbl::{OrdMap, OrdSet};
use roster_proto::{
    perms, Acl, Create2Response, CreateMode, CreateResponse, ErrorCode, Id, MultiResult, Request,
    Response, Stat, SyncResponse,
};
use std::collections::BTreeSet;

/// The replicated state: the data tree, the session table and the counters that make ids deterministic.
/// Cloning is O(1) (persistent maps), so a snapshot can be serialized from a clone while apply goes on.
#[derive(Debug, Clone)]
pub struct State {
    /// The znodes.
    pub(crate) tree: DataTree,
    /// Live sessions by id.
    pub(crate) sessions: OrdMap<i64, Session>,
    /// The id the next `CreateSession` gets; 0 until the first one seeds it from its time.
    pub(crate) next_session_id: i64,
    /// The zxid (log index) of the last applied or noted entry.
    pub(crate) last_zxid: i64,
}

/// What one applied txn produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The txn's zxid (its log index).
    pub zxid: i64,
    /// The result for the issuing client.
    pub result: TxnResult,
    /// Node changes, in the order watches fire.
    pub changes: Vec<Change>,
}

/// The result of a txn for the client that issued it (also what the server's Raft layer returns
/// for an applied entry, so it is serializable).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TxnResult {
    /// `CreateSession`: the assigned session.
    Session {
        /// The new session's id.
        session_id: i64,
        /// Its timeout in milliseconds.
        timeout_ms: i32,
        /// Its password.
        passwd: Bytes,
    },
    /// `Request`: the reply (an `Err` is sent as the reply header's error code).
    Response(Result<Response, ErrorCode>),
    /// `CloseSession` of a live session: it is gone and its ephemerals deleted.
    Closed,
    /// Nothing for a client: `ExpireTtl`, closing an unknown session, or a stale zxid.
    None,
}

/// One node change, for watch triggering.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// A node was created (fires data/exist watches and recursive watches above it).
    Created(String),
    /// A node was deleted (fires data and child watches on it, and recursive watches above it).
    Deleted(String),
    /// A node's data was set.
    DataChanged(String),
    /// The children of this node (the parent) changed.
    ChildrenChanged(String),
}

impl Change {
    /// The path the change names.
    pub fn path(&self) -> &str {
        match self {
            Change::Created(p)
            | Change::Deleted(p)
            | Change::DataChanged(p)
            | Change::ChildrenChanged(p) => p,
        }
    }
}

/// The output of one write op before it becomes a `Response` or a `MultiResult`.
enum OpOut {
    Create(String),
    /// The bool says whether the op was a plain create2: inside a multi ZooKeeper 3.8 answers those
    /// with the path only, and containers and TTL nodes with path and stat.
    Create2(String, Stat, bool),
    Delete,
    SetData(Stat),
    SetAcl(Stat),
    Check(Stat),
}

impl OpOut {
    fn into_response(self) -> Response {
        match self {
            OpOut::Create(path) => Response::Create(CreateResponse { path }),
            OpOut::Create2(path, stat, _) => Response::Create2(Create2Response { path, stat }),
            OpOut::Delete => Response::Empty,
            OpOut::SetData(s) | OpOut::SetAcl(s) | OpOut::Check(s) => Response::Stat(s),
        }
    }

    fn into_multi(self) -> MultiResult {
        match self {
            OpOut::Create(path) => MultiResult::Create(path),
            OpOut::Create2(path, _, true) => MultiResult::Create(path),
            OpOut::Create2(path, stat, false) => MultiResult::Create2(path, stat),
            OpOut::Delete => MultiResult::Delete,
            OpOut::SetData(s) | OpOut::SetAcl(s) => MultiResult::SetData(s),
            OpOut::Check(_) => MultiResult::Check,
        }
    }
}

/// Per-txn context: who, when, and what changed so far.
struct Ctx<'a> {
    zxid: i64,
    time: i64,
    session_id: i64,
    auth: &'a [Id],
    changes: Vec<Change>,
    /// Parents that lost a child: container cleanup candidates.
    lost_child: BTreeSet<String>,
}

/// Paths ZooKeeper refuses to delete (`DataTree.isSpecialPath`).
fn is_special_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/zookeeper" | "/zookeeper/quota" | "/zookeeper/config"
    )
}

/// ZooKeeper 3.9's `checkAndIncVersion`.
fn check_and_inc_version(current: i32, expected: i32) -> Result<i32, ErrorCode> {
    if expected != -1 && expected != current {
        return Err(ErrorCode::BadVersion);
    }
    let next = current.wrapping_add(1);
    Ok(if next == -1 { 0 } else { next })
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// The state of a fresh ZooKeeper 3.8 standalone server (see [`DataTree::new`]), no sessions, zxid 0.
    pub fn new() -> State {
        State {
            tree: DataTree::new(),
            sessions: OrdMap::new(),
            next_session_id: 0,
            last_zxid: 0,
        }
    }

    /// Applies one txn at `zxid`. Never panics; every failure is a deterministic result.
    pub fn apply(&mut self, zxid: i64, txn: &Txn) -> Applied {
        if zxid <= self.last_zxid {
            return Applied {
                zxid,
                result: TxnResult::None,
                changes: Vec::new(),
            };
        }
        self.last_zxid = zxid;
        let mut ctx = Ctx {
            zxid,
            time: txn.time,
            session_id: txn.session_id,
            auth: &[],
            changes: Vec::new(),
            lost_child: BTreeSet::new(),
        };
        let result = match &txn.op {
            TxnOp::CreateSession { timeout_ms, passwd } => {
                self.create_session(txn.time, *timeout_ms, passwd)
            }
            TxnOp::CloseSession => self.close_session(&mut ctx),
            TxnOp::ExpireTtl { paths } => {
                self.expire_ttl(&mut ctx, paths);
                TxnResult::None
            }
            #[cfg(feature = "format-next")]
            TxnOp::SetFormat { .. } => TxnResult::None,
            TxnOp::SetConfig { data } => {
                self.set_config(&mut ctx, data);
                TxnResult::None
            }
            TxnOp::Request { request, auth } | TxnOp::RequestV1 { request, auth } => {
                ctx.auth = auth;
                if !self.sessions.contains_key(&txn.session_id) {
                    TxnResult::Response(Err(ErrorCode::SessionExpired))
                } else {
                    match request {
                        Request::CloseSession => self.close_session(&mut ctx),
                        Request::Sync(r) => TxnResult::Response(Ok(Response::Sync(SyncResponse {
                            path: r.path.clone(),
                        }))),
                        Request::Reconfig(_) => {
                            TxnResult::Response(Err(ErrorCode::ReconfigDisabled))
                        }
                        Request::Multi(ops) => TxnResult::Response(self.multi(&mut ctx, ops)),
                        _ => TxnResult::Response(
                            self.write_op(&mut ctx, request).map(OpOut::into_response),
                        ),
                    }
                }
            }
        };
        self.cleanup_containers(&mut ctx);
        Applied {
            zxid,
            result,
            changes: ctx.changes,
        }
    }

    /// Records that a log entry without a txn (blank, membership) advanced the log.
    pub fn note_zxid(&mut self, zxid: i64) {
        if zxid > self.last_zxid {
            self.last_zxid = zxid;
        }
    }

    /// The zxid of the last applied or noted entry (0 for a fresh state).
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// A live session.
    pub fn session(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    /// Every live session, by id.
    pub fn sessions(&self) -> impl Iterator<Item = (i64, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of znodes, the root included (a fresh state has 4). ZooKeeper's `zk_znode_count` is one
    /// more, because its node map also holds the root under the alias `""`.
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// Sum of `path.len() + data.len()` over all nodes (ZooKeeper's `approximateDataSize`, in bytes).
    pub fn approximate_data_size(&self) -> u64 {
        self.tree.data_size
    }

    /// Number of session-owned ephemeral nodes (containers and TTL nodes are not counted, as in ZooKeeper).
    pub fn ephemeral_count(&self) -> usize {
        self.sessions.values().map(|s| s.ephemerals.len()).sum()
    }

    /// The data tree (read-only).
    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    /// The node at `path`.
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.tree.get(path)
    }

    /// The client-visible stat of the node at `path`.
    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.tree.get(path).map(Node::stat)
    }

    /// The ACL of the node at `path`.
    pub fn acl(&self, path: &str) -> Option<&[Acl]> {
        self.tree.get(path).map(|n| self.tree.acl_of(n))
    }

    /// The children of the node at `path`, sorted.
    pub fn children(&self, path: &str) -> Option<Vec<String>> {
        self.tree.get(path).map(|_| self.tree.children(path))
    }

    /// TTL nodes that may be deleted at `now` (ms since the epoch), sorted: childless, TTL non-zero, and
    /// `now - mtime > ttl` (ZooKeeper's `ContainerManager.getCandidates`). The leader proposes them as an
    /// `ExpireTtl` txn stamped with a time at least `now`.
    pub fn ttl_candidates(&self, now: i64) -> Vec<String> {
        self.tree
            .ttls
            .iter()
            .filter(|p| self.ttl_expired(p, now))
            .cloned()
            .collect()
    }

    fn ttl_expired(&self, path: &str, now: i64) -> bool {
        match self.tree.get(path) {
            Some(n) => match n.kind() {
                NodeKind::Ttl(ttl) => {
                    ttl != 0 && n.num_children == 0 && (now as i128 - n.mtime as i128) > ttl as i128
                }
                _ => false,
            },
            None => false,
        }
    }

    fn create_session(&mut self, time: i64, timeout_ms: i32, passwd: &Bytes) -> TxnResult {
        if self.next_session_id == 0 {
            self.next_session_id = first_session_id(time);
        }
        let mut id = self.next_session_id;
        // Skip 0 ("no session") and ids still live (only possible after ~2^56 sessions).
        while id == 0 || self.sessions.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_session_id = id.wrapping_add(1);
        self.sessions.insert(
            id,
            Session {
                timeout_ms,
                passwd: passwd.clone(),
                ephemerals: OrdSet::new(),
            },
        );
        TxnResult::Session {
            session_id: id,
            timeout_ms,
            passwd: passwd.clone(),
        }
    }

    fn close_session(&mut self, ctx: &mut Ctx) -> TxnResult {
        let Some(session) = self.sessions.remove(&ctx.session_id) else {
            return TxnResult::None;
        };
        for path in session.ephemerals.iter() {
            let owned = self
                .tree
                .get(path)
                .is_some_and(|n| n.ephemeral_owner == ctx.session_id && n.num_children == 0);
            if owned {
                self.delete_node(ctx, path);
            }
        }
        TxnResult::Closed
    }

    fn expire_ttl(&mut self, ctx: &mut Ctx, paths: &[String]) {
        for path in paths {
            if self.ttl_expired(path, ctx.time) {
                self.delete_node(ctx, path);
            }
        }
    }

    /// Removes a node known to exist and be childless, with its index and change bookkeeping.
    fn delete_node(&mut self, ctx: &mut Ctx, path: &str) {
        let Some(node) = self.tree.remove_node(path, ctx.zxid) else {
            return;
        };
        if let NodeKind::Ephemeral(owner) = node.kind() {
            if let Some(s) = self.sessions.get_mut(&owner) {
                s.ephemerals.remove(path);
            }
        }
        let parent = path::parent(path).to_string();
        ctx.changes.push(Change::Deleted(path.to_string()));
        ctx.changes.push(Change::ChildrenChanged(parent.clone()));
        ctx.lost_child.insert(parent);
    }

    /// Deletes containers that lost their last child during this txn, cascading upwards.
    fn cleanup_containers(&mut self, ctx: &mut Ctx) {
        while !ctx.lost_child.is_empty() {
            let candidates = std::mem::take(&mut ctx.lost_child);
            for path in candidates {
                let empty_container = self.tree.get(&path).is_some_and(|n| {
                    n.kind() == NodeKind::Container && n.num_children == 0 && n.cversion > 0
                });
                if empty_container && !is_special_path(&path) {
                    self.delete_node(ctx, &path);
                }
            }
        }
    }

    fn multi(&mut self, ctx: &mut Ctx, ops: &[Request]) -> Result<Response, ErrorCode> {
        if !ops.iter().all(Request::allowed_in_multi) {
            return Err(ErrorCode::MarshallingError);
        }
        let saved_tree = self.tree.clone();
        let saved_sessions = self.sessions.clone();
        let saved_changes = ctx.changes.len();
        let saved_lost = ctx.lost_child.clone();
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            match self.write_op(ctx, op) {
                Ok(out) => results.push(out.into_multi()),
                Err(code) => {
                    self.tree = saved_tree;
                    self.sessions = saved_sessions;
                    ctx.changes.truncate(saved_changes);
                    ctx.lost_child = saved_lost;
                    let results = (0..ops.len())
                        .map(|j| {
                            MultiResult::Error(if j < i {
                                ErrorCode::Ok
                            } else if j == i {
                                code
                            } else {
                                ErrorCode::RuntimeInconsistency
                            })
                        })
                        .collect();
                    return Ok(Response::Multi(results));
                }
            }
        }
        Ok(Response::Multi(results))
    }

    /// One write op (also a multi sub-op). Validates fully before changing anything.
    fn write_op(&mut self, ctx: &mut Ctx, req: &Request) -> Result<OpOut, ErrorCode> {
        match req {
            Request::Create(r) => self.create(
                ctx,
                CreateKind::Create,
                &r.path,
                &r.data,
                &r.acl,
                r.flags,
                -1,
            ),
            Request::Create2(r) => self.create(
                ctx,
                CreateKind::Create2,
                &r.path,
                &r.data,
                &r.acl,
                r.flags,
                -1,
            ),
            Request::CreateContainer(r) => self.create(
                ctx,
                CreateKind::Container,
                &r.path,
                &r.data,
                &r.acl,
                r.flags,
                -1,
            ),
            Request::CreateTtl(r) => self.create(
                ctx,
                CreateKind::Ttl,
                &r.path,
                &r.data,
                &r.acl,
                r.flags,
                r.ttl,
            ),
            Request::Delete(r) => self.delete(ctx, &r.path, r.version),
            Request::SetData(r) => self.set_data(ctx, &r.path, &r.data, r.version),
            Request::SetAcl(r) => self.set_acl(ctx, &r.path, &r.acl, r.version),
            Request::Check(r) => self.check(ctx, &r.path, r.version),
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        ctx: &mut Ctx,
        kind: CreateKind,
        path: &str,
        data: &Option<Bytes>,
        acl: &[Acl],
        flags: i32,
        ttl: i64,
    ) -> Result<OpOut, ErrorCode> {
        let mode = CreateMode::from_i32(flags).map_err(|_| ErrorCode::BadArguments)?;
        // EphemeralType.validateTTL: only createTTL carries a TTL, and it needs a TTL mode.
        let ttl_owner = match kind {
            CreateKind::Ttl => {
                if !mode.is_ttl() {
                    return Err(ErrorCode::BadArguments);
                }
                Some(NodeKind::ttl_owner(ttl).ok_or(ErrorCode::BadArguments)?)
            }
            _ if mode.is_ttl() => return Err(ErrorCode::BadArguments),
            _ => None,
        };
        // validatePathForCreate.
        if path.contains('\0') {
            return Err(ErrorCode::BadArguments);
        }
        let (parent_path, _) = path::split(path).ok_or(ErrorCode::BadArguments)?;
        let acl = fixup_acl(ctx.auth, acl)?;
        let parent = self.tree.get(parent_path).ok_or(ErrorCode::NoNode)?;
        check_acl(self.tree.acl_of(parent), perms::CREATE, ctx.auth)?;
        let final_path = if mode.is_sequential() {
            format!("{path}{}", path::sequential_suffix(parent.cversion))
        } else {
            path.to_string()
        };
        validate_path(&final_path).map_err(|_| ErrorCode::BadArguments)?;
        if self.tree.get(&final_path).is_some() {
            return Err(ErrorCode::NodeExists);
        }
        if matches!(parent.kind(), NodeKind::Ephemeral(_)) {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        let owner = match kind {
            CreateKind::Container => CONTAINER_OWNER,
            CreateKind::Ttl => ttl_owner.unwrap_or(0),
            _ if mode.is_ephemeral() => ctx.session_id,
            _ => 0,
        };
        let parent_path = parent_path.to_string();
        path::split(&final_path).ok_or(ErrorCode::BadArguments)?;
        let acl_id = self.tree.acls.acquire(&acl);
        let node = Node::new(
            node_data(data.as_deref()),
            acl_id,
            ctx.zxid,
            ctx.time,
            owner,
        );
        let stat = node.stat();
        self.tree
            .insert_node(&final_path, &parent_path, node, ctx.zxid);
        if let NodeKind::Ephemeral(owner) = NodeKind::of(owner) {
            if let Some(s) = self.sessions.get_mut(&owner) {
                s.ephemerals.insert(final_path.clone());
            }
        }
        ctx.changes.push(Change::Created(final_path.clone()));
        ctx.changes.push(Change::ChildrenChanged(parent_path));
        Ok(match kind {
            CreateKind::Create => OpOut::Create(final_path),
            CreateKind::Create2 => OpOut::Create2(final_path, stat, true),
            CreateKind::Container | CreateKind::Ttl => OpOut::Create2(final_path, stat, false),
        })
    }

    fn delete(&mut self, ctx: &mut Ctx, path: &str, version: i32) -> Result<OpOut, ErrorCode> {
        // getParentPathAndValidate.
        if path.contains('\0') || is_special_path(path) {
            return Err(ErrorCode::BadArguments);
        }
        let (parent_path, _) = path::split(path).ok_or(ErrorCode::BadArguments)?;
        let parent = self.tree.get(parent_path).ok_or(ErrorCode::NoNode)?;
        check_acl(self.tree.acl_of(parent), perms::DELETE, ctx.auth)?;
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        check_and_inc_version(node.version, version)?;
        if node.num_children != 0 {
            return Err(ErrorCode::NotEmpty);
        }
        self.delete_node(ctx, path);
        Ok(OpOut::Delete)
    }

    fn set_data(
        &mut self,
        ctx: &mut Ctx,
        path: &str,
        data: &Option<Bytes>,
        version: i32,
    ) -> Result<OpOut, ErrorCode> {
        validate_path(path).map_err(|_| ErrorCode::BadArguments)?;
        let auth = ctx.auth;
        let stat = self
            .tree
            .set_data_checked(
                path,
                node_data(data.as_deref()),
                ctx.zxid,
                ctx.time,
                |node, acl| {
                    check_acl(acl, perms::WRITE, auth)?;
                    check_and_inc_version(node.version, version)
                },
            )
            .ok_or(ErrorCode::NoNode)??;
        ctx.changes.push(Change::DataChanged(path.to_string()));
        Ok(OpOut::SetData(stat))
    }

    /// `/zookeeper/config` gets the ensemble's configuration (see [`TxnOp::SetConfig`]).
    fn set_config(&mut self, ctx: &mut Ctx, data: &Bytes) {
        const PATH: &str = "/zookeeper/config";
        let Some(node) = self.tree.get(PATH) else {
            return;
        };
        let Ok(version) = check_and_inc_version(node.version, -1) else {
            return;
        };
        if self
            .tree
            .set_data(PATH, node_data(Some(data)), version, ctx.zxid, ctx.time)
            .is_some()
        {
            ctx.changes.push(Change::DataChanged(PATH.to_string()));
        }
    }

    fn set_acl(
        &mut self,
        ctx: &mut Ctx,
        path: &str,
        acl: &[Acl],
        version: i32,
    ) -> Result<OpOut, ErrorCode> {
        validate_path(path).map_err(|_| ErrorCode::BadArguments)?;
        let acl = fixup_acl(ctx.auth, acl)?;
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        check_acl(self.tree.acl_of(node), perms::ADMIN, ctx.auth)?;
        let new_aversion = check_and_inc_version(node.aversion, version)?;
        let stat = self
            .tree
            .set_acl(path, &acl, new_aversion)
            .ok_or(ErrorCode::NoNode)?;
        Ok(OpOut::SetAcl(stat))
    }

    fn check(&mut self, ctx: &mut Ctx, path: &str, version: i32) -> Result<OpOut, ErrorCode> {
        validate_path(path).map_err(|_| ErrorCode::BadArguments)?;
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        check_acl(self.tree.acl_of(node), perms::READ, ctx.auth)?;
        check_and_inc_version(node.version, version)?;
        Ok(OpOut::Check(node.stat()))
    }
}

/// Which create opcode is being applied: it decides the reply and the node kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CreateKind {
    /// create (1): replies with the path only.
    Create,
    /// create2 (15).
    Create2,
    /// createContainer (19): always a container.
    Container,
    /// createTTL (21): always a TTL node.
    Ttl,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(check_and_inc_version(0, -1), Ok(1));
        assert_eq!(check_and_inc_version(3, 3), Ok(4));
        assert_eq!(check_and_inc_version(3, 2), Err(ErrorCode::BadVersion));
        assert_eq!(check_and_inc_version(i32::MAX, -1), Ok(i32::MIN));
        assert_eq!(check_and_inc_version(-2, -2), Ok(0));
    }

    fn open(s: &mut State, zxid: i64) -> i64 {
        let txn = Txn {
            session_id: 0,
            time: 0,
            op: TxnOp::CreateSession {
                timeout_ms: 1000,
                passwd: Bytes::new(),
            },
        };
        match s.apply(zxid, &txn).result {
            TxnResult::Session { session_id, .. } => session_id,
            r => panic!("{r:?}"),
        }
    }

    fn req(s: &mut State, zxid: i64, sid: i64, request: Request) -> TxnResult {
        s.apply(
            zxid,
            &Txn {
                session_id: sid,
                time: zxid,
                op: TxnOp::Request {
                    request,
                    auth: vec![],
                },
            },
        )
        .result
    }

    #[test]
    fn counters_at_the_edge() {
        use roster_proto::{CreateRequest, SetDataRequest};
        let mut s = State::new();
        let sid = open(&mut s, 1);
        let create = |path: &str, flags| {
            Request::Create2(CreateRequest {
                path: path.into(),
                data: Some(Bytes::new()),
                acl: Acl::open_unsafe(),
                flags,
            })
        };
        req(&mut s, 2, sid, create("/p", 0));
        // Data version: i32::MAX wraps to i32::MIN, and -2 steps over -1 to 0 (ZOOKEEPER-4743).
        s.tree.get_mut("/p").unwrap().version = i32::MAX;
        let set = |version| {
            Request::SetData(SetDataRequest {
                path: "/p".into(),
                data: Some(Bytes::new()),
                version,
            })
        };
        assert!(
            matches!(req(&mut s, 3, sid, set(i32::MAX)), TxnResult::Response(Ok(Response::Stat(st))) if st.version == i32::MIN)
        );
        s.tree.get_mut("/p").unwrap().version = -2;
        assert!(
            matches!(req(&mut s, 4, sid, set(-2)), TxnResult::Response(Ok(Response::Stat(st))) if st.version == 0)
        );
        // The stored child count is 64-bit: sequential suffixes go on past 2^31 without wrapping, the
        // wire cversion saturates at i32::MAX, and pzxid still moves.
        s.tree.get_mut("/p").unwrap().cversion = i32::MAX as i64 - 1;
        let r = req(&mut s, 5, sid, create("/p/s", 2));
        assert!(
            matches!(r, TxnResult::Response(Ok(Response::Create2(c))) if c.path == "/p/s2147483646")
        );
        let r = req(&mut s, 6, sid, create("/p/s", 2));
        assert!(
            matches!(r, TxnResult::Response(Ok(Response::Create2(c))) if c.path == "/p/s2147483647")
        );
        let r = req(&mut s, 7, sid, create("/p/s", 2));
        assert!(
            matches!(r, TxnResult::Response(Ok(Response::Create2(c))) if c.path == "/p/s2147483648")
        );
        s.tree.get_mut("/p").unwrap().cversion = 9_999_999_999;
        let r = req(&mut s, 8, sid, create("/p/s", 2));
        assert!(
            matches!(r, TxnResult::Response(Ok(Response::Create2(c))) if c.path == "/p/s9999999999")
        );
        let r = req(&mut s, 9, sid, create("/p/s", 2));
        assert!(
            matches!(r, TxnResult::Response(Ok(Response::Create2(c))) if c.path == "/p/s10000000000")
        );
        assert_eq!(s.stat("/p").unwrap().cversion, i32::MAX);
        assert_eq!(s.tree.get("/p").unwrap().pzxid, 9);
        assert_eq!(s.check_invariants(), Ok(()));
    }

    #[test]
    fn fresh_state_matches_zookeeper() {
        let s = State::new();
        let root = s.stat("/").unwrap();
        assert_eq!((root.cversion, root.num_children, root.czxid), (-1, 1, 0));
        let zk = s.stat("/zookeeper").unwrap();
        assert_eq!((zk.cversion, zk.num_children), (-2, 2));
        let cfg = s.stat("/zookeeper/config").unwrap();
        assert_eq!(cfg.aversion, -1);
        assert_eq!(
            s.acl("/zookeeper/config").unwrap(),
            Acl::read_unsafe().as_slice()
        );
        assert_eq!(s.node_count(), 4);
    }

    #[test]
    fn set_config_updates_zookeeper_config_like_a_set_data() {
        let mut s = State::new();
        let txn = |data: &'static [u8]| Txn {
            session_id: 0,
            time: 77,
            op: TxnOp::SetConfig {
                data: Bytes::from_static(data),
            },
        };
        let a = s.apply(5, &txn(b"server.1=h:1:0:participant;h:2\nversion=0"));
        assert_eq!(
            a.changes,
            vec![Change::DataChanged("/zookeeper/config".into())]
        );
        let st = s.stat("/zookeeper/config").unwrap();
        assert_eq!((st.version, st.mzxid, st.mtime, st.czxid), (1, 5, 77, 0));
        s.apply(9, &txn(b"version=9"));
        let st = s.stat("/zookeeper/config").unwrap();
        assert_eq!((st.version, st.mzxid), (2, 9));
        assert_eq!(
            s.node("/zookeeper/config").unwrap().data_bytes(),
            b"version=9"
        );
        // The ACL stays read-only for clients.
        assert_eq!(
            s.acl("/zookeeper/config").unwrap(),
            Acl::read_unsafe().as_slice()
        );
        assert_eq!(s.check_invariants(), Ok(()));
    }
}
