//! ZooKeeper's data tree as `roster import` rebuilds it: the snapshot's nodes and sessions, then every
//! logged txn after the snapshot applied with ZooKeeper's own replay rules (`DataTree.processTxn`,
//! `FileTxnSnapLog.processTransaction`), then the result as Roster's state.
//!
//! The rules that matter because a snapshot is fuzzy (taken while writes were applied, so some txns
//! after its zxid are already in it): a create of an existing node or under a missing parent changes
//! nothing except that the parent's cversion and pzxid move up to the txn's if they are larger; a
//! delete of a missing node is ignored; a delete raises the parent's pzxid only if larger; setData and
//! setACL write the version the txn carries. A closed session takes its ephemerals with it. A multi
//! with an error among its ops applies none of them.
//!
//! Stats are kept as ZooKeeper persists them (`StatPersisted`: cversion counts child creates), which is
//! what Roster stores too, so the next sequential suffix is the one ZooKeeper would have given.
//! Session passwords are ZooKeeper's (`SessionTrackerImpl`: `java.util.Random` seeded with the id
//! xor a fixed secret), so a client that reconnects to Roster with its session keeps it.
//!
//! Left out: quotas (ZooKeeper's stat nodes are copied as they are), and the per-node digest.

use super::zk::{FormatError, Jute, LogRecord, Snapshot};
use roster_proto::{Acl, Id};
use roster_state::{ImportedNode, ImportedSession, NodeKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// ZooKeeper's op codes as they appear in the log.
mod op {
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const SET_DATA: i32 = 5;
    pub const SET_ACL: i32 = 7;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const ERROR: i32 = -1;
    pub const CREATE_SESSION: i32 = -10;
    pub const CLOSE_SESSION: i32 = -11;
}

/// `EphemeralType.CONTAINER_EPHEMERAL_OWNER`.
const CONTAINER_OWNER: i64 = i64::MIN;
/// `EphemeralType.TTL` marker in the high byte.
const TTL_MARKER: i64 = 0xFF00_0000_0000_0000u64 as i64;

/// One znode during replay.
#[derive(Debug, Clone)]
struct ZNode {
    data: Option<Vec<u8>>,
    acl: Arc<Vec<Acl>>,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    version: i32,
    cversion: i32,
    aversion: i32,
    ephemeral_owner: i64,
}

/// The tree being rebuilt.
pub struct Tree {
    nodes: HashMap<String, ZNode>,
    /// Live sessions: id -> timeout.
    sessions: BTreeMap<i64, i32>,
    /// Ephemeral paths by owner (including owners not in `sessions`).
    ephemerals: HashMap<i64, BTreeSet<String>>,
    /// Child names by parent, for deleting a subtree.
    children: HashMap<String, BTreeSet<String>>,
    /// The zxid of the last change applied (or of the snapshot).
    pub last_zxid: i64,
    /// Log records applied, by kind of outcome.
    pub applied: u64,
    /// Records skipped because the snapshot already covered them (zxid at or below it).
    pub covered: u64,
    /// Txns of unknown types, skipped: (zxid, type).
    pub unknown: Vec<(i64, i32)>,
}

/// What was dropped while building Roster's state.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Ephemeral paths whose owning session no longer exists, by session.
    pub ephemerals: BTreeMap<i64, Vec<String>>,
    /// Containers that had children and have none left: ZooKeeper's container manager deletes
    /// them at its next check, Roster only when a last child goes, so they are not imported.
    pub empty_containers: Vec<String>,
    /// Every dropped node as it was in ZooKeeper's tree: `roster import --update` puts them back
    /// before it replays later txns (one may delete the container or give it a child).
    pub nodes: Vec<ImportedNode>,
}

fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some(if i == 0 { "/" } else { &path[..i] })
}

fn is_session_owner(owner: i64) -> bool {
    matches!(NodeKind::of(owner), NodeKind::Ephemeral(_))
}

fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: 31,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// A txn that failed to decode: at which zxid and why.
pub struct TxnError {
    pub zxid: i64,
    pub offset: usize,
    pub error: FormatError,
}

impl Tree {
    /// The tree of a snapshot.
    pub fn from_snapshot(snap: Snapshot) -> Result<Tree, String> {
        let acls: HashMap<i64, Arc<Vec<Acl>>> = snap
            .acls
            .into_iter()
            .map(|(id, l)| (id, Arc::new(l)))
            .collect();
        let open = Arc::new(open_acl());
        let mut t = Tree {
            nodes: HashMap::with_capacity(snap.nodes.len()),
            sessions: snap.sessions.into_iter().collect(),
            ephemerals: HashMap::new(),
            children: HashMap::new(),
            last_zxid: snap.zxid,
            applied: 0,
            covered: 0,
            unknown: Vec::new(),
        };
        for n in snap.nodes {
            let acl = match n.acl {
                -1 => open.clone(),
                id => acls.get(&id).cloned().ok_or_else(|| {
                    format!(
                        "node {} refers to ACL id {id}, which the snapshot does not define",
                        n.path
                    )
                })?,
            };
            let s = n.stat;
            t.insert(
                n.path,
                ZNode {
                    data: n.data,
                    acl,
                    czxid: s.czxid,
                    mzxid: s.mzxid,
                    pzxid: s.pzxid,
                    ctime: s.ctime,
                    mtime: s.mtime,
                    version: s.version,
                    cversion: s.cversion,
                    aversion: s.aversion,
                    ephemeral_owner: s.ephemeral_owner,
                },
            );
        }
        if !t.nodes.contains_key("/") {
            return Err("the snapshot has no root node".into());
        }
        Ok(t)
    }

    /// The tree of an earlier import (`roster import --update`): Roster's nodes and sessions at
    /// `last_zxid`, plus the nodes that import dropped.
    pub fn from_imported(
        last_zxid: i64,
        nodes: Vec<ImportedNode>,
        sessions: Vec<ImportedSession>,
    ) -> Result<Tree, String> {
        let mut t = Tree {
            nodes: HashMap::with_capacity(nodes.len()),
            sessions: sessions.iter().map(|s| (s.id, s.timeout_ms)).collect(),
            ephemerals: HashMap::new(),
            children: HashMap::new(),
            last_zxid,
            applied: 0,
            covered: 0,
            unknown: Vec::new(),
        };
        for n in nodes {
            let acl = Arc::new(n.acl);
            let cversion = i32::try_from(n.cversion).map_err(|_| {
                format!(
                    "node {} has cversion {} beyond ZooKeeper's",
                    n.path, n.cversion
                )
            })?;
            t.insert(
                n.path,
                ZNode {
                    data: n.data,
                    acl,
                    czxid: n.czxid,
                    mzxid: n.mzxid,
                    pzxid: n.pzxid,
                    ctime: n.ctime,
                    mtime: n.mtime,
                    version: n.version,
                    cversion,
                    aversion: n.aversion,
                    ephemeral_owner: n.ephemeral_owner,
                },
            );
        }
        if !t.nodes.contains_key("/") {
            return Err("the imported tree has no root node".into());
        }
        Ok(t)
    }

    fn insert(&mut self, path: String, node: ZNode) {
        if is_session_owner(node.ephemeral_owner) {
            self.ephemerals
                .entry(node.ephemeral_owner)
                .or_default()
                .insert(path.clone());
        }
        if let Some(p) = parent_of(&path) {
            self.children
                .entry(p.to_string())
                .or_default()
                .insert(path.clone());
        }
        self.nodes.insert(path, node);
    }

    fn remove_subtree(&mut self, path: &str) {
        if let Some(kids) = self.children.remove(path) {
            for k in kids {
                self.remove_subtree(&k);
            }
        }
        if let Some(n) = self.nodes.remove(path) {
            if is_session_owner(n.ephemeral_owner) {
                if let Some(set) = self.ephemerals.get_mut(&n.ephemeral_owner) {
                    set.remove(path);
                }
            }
        }
        if let Some(p) = parent_of(path) {
            if let Some(set) = self.children.get_mut(p) {
                set.remove(path);
            }
        }
    }

    /// Applies one log record (skipped when the snapshot covers its zxid).
    pub fn apply(&mut self, rec: &LogRecord, snapshot_zxid: i64) -> Result<(), TxnError> {
        if rec.zxid <= snapshot_zxid {
            self.covered += 1;
            return Ok(());
        }
        let fail = |error: FormatError| TxnError {
            zxid: rec.zxid,
            offset: rec.offset,
            error,
        };
        match rec.op {
            op::CREATE_SESSION => {
                let mut r = Jute::new(&rec.body);
                let timeout = r.i32("session timeout").map_err(fail)?;
                self.sessions.insert(rec.session_id, timeout);
            }
            op::CLOSE_SESSION => {
                self.sessions.remove(&rec.session_id);
                let paths = self.ephemerals.remove(&rec.session_id).unwrap_or_default();
                for p in paths {
                    self.delete(&p, rec.zxid);
                }
            }
            _ => {
                self.apply_op(rec.op, &rec.body, rec, true).map_err(fail)?;
            }
        }
        self.applied += 1;
        self.last_zxid = self.last_zxid.max(rec.zxid);
        Ok(())
    }

    fn apply_op(
        &mut self,
        kind: i32,
        body: &[u8],
        rec: &LogRecord,
        top: bool,
    ) -> Result<(), FormatError> {
        let mut r = Jute::new(body);
        match kind {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                let path = r.string("path")?;
                let data = r.buffer("data")?.map(<[u8]>::to_vec);
                let acl = r.acls("acl")?;
                let (owner, parent_cversion) = match kind {
                    op::CREATE_CONTAINER => (CONTAINER_OWNER, r.i32("parentCVersion")?),
                    op::CREATE_TTL => {
                        let pcv = r.i32("parentCVersion")?;
                        let ttl = r.i64("ttl")?;
                        (TTL_MARKER | ttl, pcv)
                    }
                    _ => {
                        let ephemeral = r.bool("ephemeral")?;
                        // 3.4's CreateTxnV0 has no parentCVersion.
                        let pcv = if r.remaining() >= 4 {
                            r.i32("parentCVersion")?
                        } else {
                            -1
                        };
                        (if ephemeral { rec.session_id } else { 0 }, pcv)
                    }
                };
                self.create(path, data, acl, owner, parent_cversion, rec, top);
            }
            op::DELETE | op::DELETE_CONTAINER => {
                let path = r.string("path")?;
                self.delete(&path, rec.zxid);
            }
            op::SET_DATA | op::RECONFIG => {
                let path = r.string("path")?;
                let data = r.buffer("data")?.map(<[u8]>::to_vec);
                let version = r.i32("version")?;
                if let Some(n) = self.nodes.get_mut(&path) {
                    n.data = data;
                    n.version = version;
                    n.mzxid = rec.zxid;
                    n.mtime = rec.time;
                }
            }
            op::SET_ACL => {
                let path = r.string("path")?;
                let acl = r.acls("acl")?;
                let version = r.i32("version")?;
                if let Some(n) = self.nodes.get_mut(&path) {
                    n.acl = Arc::new(acl);
                    n.aversion = version;
                }
            }
            op::MULTI => {
                let count = r.count("multi ops", 8)?;
                let mut ops = Vec::with_capacity(count);
                for _ in 0..count {
                    let sub = r.i32("multi op type")?;
                    let bytes = r.buffer("multi op")?.unwrap_or_default();
                    ops.push((sub, bytes));
                }
                // A multi that failed logs its ops before the failing one with their own types and
                // the rest as errors; ZooKeeper applies none of them.
                if ops.iter().all(|(sub, _)| *sub != op::ERROR) {
                    for (sub, bytes) in ops {
                        self.apply_op(sub, bytes, rec, false)?;
                    }
                }
            }
            op::CHECK | op::ERROR => {}
            other => self.unknown.push((rec.zxid, other)),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        path: String,
        data: Option<Vec<u8>>,
        acl: Vec<Acl>,
        owner: i64,
        parent_cversion: i32,
        rec: &LogRecord,
        top: bool,
    ) {
        let Some(parent_path) = parent_of(&path).map(str::to_string) else {
            return;
        };
        let exists = self.nodes.contains_key(&path);
        let Some(parent) = self.nodes.get_mut(&parent_path) else {
            return;
        };
        if exists && !top {
            return;
        }
        // createNode (and, for a create the fuzzy snapshot already holds, setCversionPzxid): the
        // parent's cversion and pzxid only move up.
        let pcv = if parent_cversion == -1 {
            parent.cversion.wrapping_add(1)
        } else {
            parent_cversion
        };
        if pcv > parent.cversion {
            parent.cversion = pcv;
            parent.pzxid = rec.zxid;
        }
        if exists {
            return;
        }
        self.insert(
            path,
            ZNode {
                data,
                acl: Arc::new(acl),
                czxid: rec.zxid,
                mzxid: rec.zxid,
                pzxid: rec.zxid,
                ctime: rec.time,
                mtime: rec.time,
                version: 0,
                cversion: 0,
                aversion: 0,
                ephemeral_owner: owner,
            },
        );
    }

    fn delete(&mut self, path: &str, zxid: i64) {
        if !self.nodes.contains_key(path) {
            return;
        }
        self.remove_subtree(path);
        if let Some(parent) = parent_of(path).and_then(|p| self.nodes.get_mut(p)) {
            if zxid > parent.pzxid {
                parent.pzxid = zxid;
            }
        }
    }

    /// The node at `path` as Roster imports it.
    fn imported_node(&self, path: &str) -> Option<ImportedNode> {
        self.nodes
            .get(path)
            .map(|n| to_imported(path.to_string(), n.clone()))
    }

    /// The live sessions: id and timeout.
    pub fn sessions(&self) -> &BTreeMap<i64, i32> {
        &self.sessions
    }

    /// Ephemeral count of a session.
    pub fn ephemeral_count(&self, session: i64) -> usize {
        self.ephemerals.get(&session).map_or(0, BTreeSet::len)
    }

    /// Roster's nodes and sessions; ephemerals of sessions that are gone are dropped and returned.
    pub fn into_imported(mut self) -> (Vec<ImportedNode>, Vec<ImportedSession>, Dropped) {
        let mut dropped = Dropped::default();
        let orphans: Vec<(String, i64)> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                is_session_owner(n.ephemeral_owner)
                    && !self.sessions.contains_key(&n.ephemeral_owner)
            })
            .map(|(p, n)| (p.clone(), n.ephemeral_owner))
            .collect();
        for (path, owner) in orphans {
            dropped.nodes.extend(self.imported_node(&path));
            self.remove_subtree(&path);
            dropped.ephemerals.entry(owner).or_default().push(path);
        }
        // Empty used containers, until none is left (removing one may empty its parent).
        loop {
            let empty: Vec<String> = self
                .nodes
                .iter()
                .filter(|(p, n)| {
                    n.ephemeral_owner == CONTAINER_OWNER
                        && n.cversion > 0
                        && self.children.get(p.as_str()).is_none_or(BTreeSet::is_empty)
                })
                .map(|(p, _)| p.clone())
                .collect();
            if empty.is_empty() {
                break;
            }
            for p in empty {
                dropped.nodes.extend(self.imported_node(&p));
                self.remove_subtree(&p);
                dropped.empty_containers.push(p);
            }
        }
        dropped.empty_containers.sort();
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (path, n) in self.nodes {
            nodes.push(to_imported(path, n));
        }
        for paths in dropped.ephemerals.values_mut() {
            paths.sort();
        }
        let sessions = self
            .sessions
            .iter()
            .map(|(&id, &timeout_ms)| ImportedSession {
                id,
                timeout_ms,
                passwd: zk_session_password(id).to_vec(),
            })
            .collect();
        (nodes, sessions, dropped)
    }
}

fn to_imported(path: String, n: ZNode) -> ImportedNode {
    ImportedNode {
        path,
        data: n.data,
        acl: Arc::unwrap_or_clone(n.acl),
        czxid: n.czxid,
        mzxid: n.mzxid,
        pzxid: n.pzxid,
        ctime: n.ctime,
        mtime: n.mtime,
        version: n.version,
        cversion: n.cversion as i64,
        aversion: n.aversion,
        ephemeral_owner: n.ephemeral_owner,
    }
}

/// The password ZooKeeper gives session `id`: 16 bytes of `new java.util.Random(id ^ 0xB3415C00)`.
pub fn zk_session_password(id: i64) -> [u8; 16] {
    const MULT: i64 = 0x5_DEEC_E66D;
    const MASK: i64 = (1 << 48) - 1;
    let mut seed = ((id ^ 0xB341_5C00) ^ MULT) & MASK;
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(4) {
        seed = (seed.wrapping_mul(MULT).wrapping_add(0xB)) & MASK;
        let mut v = (seed >> 16) as i32;
        for b in chunk {
            *b = v as u8;
            v >>= 8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `new java.util.Random(42).nextInt()` is -1170105035 (Java's documented LCG): the first four
    /// password bytes of the id whose seed is 42 are that int, low byte first.
    #[test]
    fn session_passwords_follow_java_random() {
        let p = zk_session_password(42 ^ 0xB341_5C00);
        assert_eq!(&p[..4], &(-1170105035i32).to_le_bytes());
        assert_ne!(zk_session_password(1), zk_session_password(2));
    }

    fn rec(zxid: i64, op: i32, body: Vec<u8>) -> LogRecord {
        LogRecord {
            session_id: 7,
            zxid,
            time: 1000 + zxid,
            op,
            body,
            offset: 0,
        }
    }

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }

    fn create_body(path: &str, ephemeral: bool, pcv: i32) -> Vec<u8> {
        let mut b = Vec::new();
        s(&mut b, path);
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(b'x');
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&31i32.to_be_bytes());
        s(&mut b, "world");
        s(&mut b, "anyone");
        b.push(ephemeral as u8);
        b.extend_from_slice(&pcv.to_be_bytes());
        b
    }

    fn root_only() -> Tree {
        let snap = Snapshot {
            zxid: 10,
            sessions: vec![],
            acls: vec![],
            nodes: vec![super::super::zk::SnapNode {
                path: "/".into(),
                data: None,
                acl: -1,
                stat: super::super::zk::StatPersisted {
                    czxid: 0,
                    mzxid: 0,
                    ctime: 0,
                    mtime: 0,
                    version: 0,
                    cversion: 0,
                    aversion: 0,
                    ephemeral_owner: 0,
                    pzxid: 0,
                },
            }],
            seals: 1,
        };
        Tree::from_snapshot(snap).unwrap()
    }

    #[test]
    fn replay_follows_zookeepers_rules() {
        let mut t = root_only();
        // Covered by the snapshot: skipped.
        t.apply(&rec(9, op::CREATE, create_body("/old", false, 1)), 10)
            .ok()
            .unwrap();
        assert_eq!(t.covered, 1);
        let mut sess = Vec::new();
        sess.extend_from_slice(&5000i32.to_be_bytes());
        t.apply(&rec(11, op::CREATE_SESSION, sess), 10)
            .ok()
            .unwrap();
        t.apply(&rec(12, op::CREATE, create_body("/a", false, 1)), 10)
            .ok()
            .unwrap();
        t.apply(&rec(13, op::CREATE, create_body("/e", true, 2)), 10)
            .ok()
            .unwrap();
        // A replayed create of an existing node moves only the parent's cversion and pzxid up.
        t.apply(&rec(14, op::CREATE, create_body("/a", false, 3)), 10)
            .ok()
            .unwrap();
        let root = &t.nodes["/"];
        assert_eq!((root.cversion, root.pzxid), (3, 14));
        assert_eq!(t.nodes["/e"].ephemeral_owner, 7);
        assert_eq!(t.nodes["/a"].czxid, 12);
        // Closing the session deletes its ephemeral; the parent's pzxid follows.
        t.apply(&rec(15, op::CLOSE_SESSION, vec![]), 10)
            .ok()
            .unwrap();
        assert!(!t.nodes.contains_key("/e"));
        assert_eq!(t.nodes["/"].pzxid, 15);
        assert_eq!(t.nodes["/"].cversion, 3);
        assert_eq!(t.last_zxid, 15);
        let (nodes, sessions, dropped) = t.into_imported();
        assert_eq!(nodes.len(), 2);
        assert!(sessions.is_empty());
        assert!(dropped.ephemerals.is_empty());
    }

    /// `--update` reads an import back (with the nodes it dropped) and replays on: the result is
    /// what replaying everything at once gives.
    #[test]
    fn an_import_read_back_replays_like_one_replay() {
        let mut sess = Vec::new();
        sess.extend_from_slice(&5000i32.to_be_bytes());
        let mut c = create_body("/c", false, 1);
        c.truncate(c.len() - 5);
        c.extend_from_slice(&1i32.to_be_bytes());
        let mut del = Vec::new();
        s(&mut del, "/c/x");
        let first = vec![
            rec(11, op::CREATE_SESSION, sess),
            rec(12, op::CREATE, create_body("/a", false, 1)),
            rec(13, op::CREATE, create_body("/e", true, 2)),
            rec(14, op::CREATE_CONTAINER, c),
            rec(15, op::CREATE, create_body("/c/x", false, 1)),
            rec(16, op::DELETE, del),
        ];
        // After the import: the emptied container gets a child again, the session closes.
        let later = vec![
            rec(17, op::CREATE, create_body("/c/y", false, 2)),
            rec(18, op::CREATE, create_body("/a/b", false, 1)),
            rec(19, op::CLOSE_SESSION, vec![]),
        ];
        let mut whole = root_only();
        for r in first.iter().chain(&later) {
            whole.apply(r, 10).ok().unwrap();
        }
        let mut part = root_only();
        for r in &first {
            part.apply(r, 10).ok().unwrap();
        }
        let base = part.last_zxid;
        let (mut nodes, sessions, dropped) = part.into_imported();
        assert_eq!(dropped.empty_containers, vec!["/c".to_string()]);
        assert_eq!(dropped.nodes.len(), 1);
        nodes.extend(dropped.nodes);
        let mut resumed = Tree::from_imported(base, nodes, sessions).unwrap();
        for r in first.iter().chain(&later) {
            resumed.apply(r, base).ok().unwrap();
        }
        assert_eq!((resumed.covered, resumed.applied), (6, 3));
        let sorted = |t: Tree| {
            let (mut n, s, d) = t.into_imported();
            n.sort_by(|a, b| a.path.cmp(&b.path));
            (n, s, d.empty_containers)
        };
        let want = sorted(whole);
        assert!(want.0.iter().any(|n| n.path == "/c/y"));
        assert_eq!(sorted(resumed), want);
    }

    #[test]
    fn a_failed_multi_applies_nothing() {
        let mut t = root_only();
        let mut m = Vec::new();
        m.extend_from_slice(&2i32.to_be_bytes());
        let c = create_body("/m", false, 1);
        m.extend_from_slice(&op::CREATE.to_be_bytes());
        m.extend_from_slice(&(c.len() as i32).to_be_bytes());
        m.extend_from_slice(&c);
        m.extend_from_slice(&op::ERROR.to_be_bytes());
        m.extend_from_slice(&4i32.to_be_bytes());
        m.extend_from_slice(&(-101i32).to_be_bytes());
        t.apply(&rec(11, op::MULTI, m.clone()), 10).ok().unwrap();
        assert!(!t.nodes.contains_key("/m"));
        // The same multi without the error applies its create.
        m[3] = 1;
        let cut = m.len() - 12;
        m.truncate(cut);
        t.apply(&rec(12, op::MULTI, m), 10).ok().unwrap();
        assert!(t.nodes.contains_key("/m"));
    }

    #[test]
    fn ephemerals_of_gone_sessions_are_dropped() {
        let mut t = root_only();
        t.apply(&rec(11, op::CREATE, create_body("/e", true, 1)), 10)
            .ok()
            .unwrap();
        let (nodes, _, dropped) = t.into_imported();
        assert_eq!(nodes.len(), 1);
        assert_eq!(dropped.ephemerals[&7], vec!["/e".to_string()]);
    }

    #[test]
    fn used_empty_containers_are_dropped_and_fresh_ones_kept() {
        let mut t = root_only();
        let mut c = create_body("/c", false, 1);
        c.truncate(c.len() - 5); // CreateContainerTxn: no ephemeral flag
        c.extend_from_slice(&1i32.to_be_bytes());
        t.apply(&rec(11, op::CREATE_CONTAINER, c.clone()), 10)
            .ok()
            .unwrap();
        let mut fresh = create_body("/fresh", false, 2);
        fresh.truncate(fresh.len() - 5);
        fresh.extend_from_slice(&2i32.to_be_bytes());
        t.apply(&rec(12, op::CREATE_CONTAINER, fresh), 10)
            .ok()
            .unwrap();
        t.apply(&rec(13, op::CREATE, create_body("/c/x", false, 1)), 10)
            .ok()
            .unwrap();
        let mut del = Vec::new();
        s(&mut del, "/c/x");
        t.apply(&rec(14, op::DELETE, del), 10).ok().unwrap();
        assert_eq!(t.nodes["/c"].ephemeral_owner, CONTAINER_OWNER);
        let (nodes, _, dropped) = t.into_imported();
        assert_eq!(dropped.empty_containers, vec!["/c".to_string()]);
        let paths: Vec<&str> = nodes.iter().map(|n| n.path.as_str()).collect();
        assert!(
            paths.contains(&"/fresh") && !paths.contains(&"/c"),
            "{paths:?}"
        );
    }
}
