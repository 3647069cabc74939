//! Snapshots: the whole [`State`] as bytes and back.
//!
//! # Format (version 2)
//! `b"RSTS"`, a big-endian `u32` format version, then one postcard-encoded record:
//! last zxid, next session id, next ACL id, the ACL table as (id, entries) in id order, every node as
//! (path, data, ACL id, czxid, mzxid, pzxid, ctime, mtime, version, stored cversion, aversion,
//! ephemeralOwner) in path order, and every session as (id, timeout, password) in id order. The data
//! is an option (`None`: null data). Version 1, written before node data could be null, is the same
//! with plain data bytes; it is still read (every node's data non-null).
//!
//! Only primary facts are written. Everything derivable is rebuilt on load and checked on the way: the
//! child counts (from the paths), ACL reference counts (from the nodes), the container and TTL indexes,
//! each session's ephemerals (from the owners) and the data size. Because every collection is written in
//! sorted order and nothing derived is written, two equal states give byte-identical snapshots, and a
//! loaded snapshot re-encodes to the same bytes.
//!
//! `from_snapshot` never panics on bad input: a wrong magic, an unknown version, a postcard error,
//! trailing bytes, or a state that breaks an invariant (unsorted or invalid paths, a missing parent, an
//! unknown or unused ACL id, an ephemeral of an unknown session) is a [`SnapshotError`].
//!
//! Left out: compression and checksums (the server's storage layer frames and checks the bytes).

use crate::acl::AclTable;
use crate::apply::State;
use crate::path;
use crate::session::Session;
use crate::tree::{DataTree, Node, NodeKind};
use bytes::Bytes;
use imbl::{OrdMap, OrdSet};
use roster_proto::{Acl, Id};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Leading bytes of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 4] = b"RSTS";
/// The format version written by [`State::to_snapshot`].
pub const SNAPSHOT_VERSION: u32 = 2;
/// The version before null data, still read by [`State::from_snapshot`].
const SNAPSHOT_VERSION_V1: u32 = 1;

/// Why bytes are not a snapshot this version can load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot magic.
    #[error("not a roster state snapshot")]
    BadMagic,
    /// A format version this build does not know.
    #[error("unsupported snapshot version {0}")]
    UnsupportedVersion(u32),
    /// The body did not decode.
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    /// The body decoded but describes an impossible state.
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(String),
}

/// A node's data, written as a serde byte string (the encoding a `Bytes` field has, which [`NodeIn`]
/// reads back).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// One node as written; the borrowed form for encoding and the owned form for decoding share a layout.
#[derive(Serialize)]
struct NodeOut<'a> {
    path: &'a str,
    data: Option<RawBytes<'a>>,
    acl: u64,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    version: i32,
    cversion: i64,
    aversion: i32,
    ephemeral_owner: i64,
}

#[derive(Deserialize)]
struct NodeIn<D = Option<Bytes>> {
    path: String,
    /// `Option<Bytes>` (version 2) or `Bytes` (version 1).
    data: D,
    acl: u64,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    version: i32,
    cversion: i64,
    aversion: i32,
    ephemeral_owner: i64,
}

/// (perms, scheme, id).
type AclEntry = (i32, String, String);

#[derive(Serialize)]
struct SessionOut<'a> {
    id: i64,
    timeout_ms: i32,
    passwd: &'a Bytes,
}

#[derive(Deserialize)]
struct SessionIn {
    id: i64,
    timeout_ms: i32,
    passwd: Bytes,
}

/// A sequence of known length serialized from an iterator without collecting it (postcard needs the
/// length up front).
struct SeqOf<F>(usize, F);

impl<F, I, T> Serialize for SeqOf<F>
where
    F: Fn() -> I,
    I: Iterator<Item = T>,
    T: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0))?;
        for item in (self.1)() {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

#[derive(Deserialize)]
struct SnapshotIn<D = Option<Bytes>> {
    last_zxid: i64,
    next_session_id: i64,
    next_acl_id: u64,
    acls: Vec<(u64, Vec<AclEntry>)>,
    nodes: Vec<NodeIn<D>>,
    sessions: Vec<SessionIn>,
}

impl SnapshotIn<Bytes> {
    /// A version 1 snapshot as version 2: every node's data is non-null.
    fn upgrade(self) -> SnapshotIn {
        SnapshotIn {
            last_zxid: self.last_zxid,
            next_session_id: self.next_session_id,
            next_acl_id: self.next_acl_id,
            acls: self.acls,
            nodes: self
                .nodes
                .into_iter()
                .map(|n| NodeIn {
                    path: n.path,
                    data: Some(n.data),
                    acl: n.acl,
                    czxid: n.czxid,
                    mzxid: n.mzxid,
                    pzxid: n.pzxid,
                    ctime: n.ctime,
                    mtime: n.mtime,
                    version: n.version,
                    cversion: n.cversion,
                    aversion: n.aversion,
                    ephemeral_owner: n.ephemeral_owner,
                })
                .collect(),
            sessions: self.sessions,
        }
    }
}

/// Decodes the postcard body, insisting that nothing follows it.
fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SnapshotError> {
    let (snap, rest): (T, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SnapshotError::Decode(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(snap)
}

fn bad(msg: impl Into<String>) -> SnapshotError {
    SnapshotError::Inconsistent(msg.into())
}

impl State {
    /// Encodes the whole state (see the module docs for the format). Equal states give equal bytes.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.tree.data_size as usize);
        // Writing into a Vec cannot fail for these types (no maps with non-string keys, no
        // unsupported serde features), so an error here would be a bug in this file.
        if let Err(e) = self.write_snapshot(&mut out) {
            panic!("snapshot encoding failed: {e}");
        }
        out
    }

    /// Streams the bytes of [`State::to_snapshot`] into `w` without holding them in memory (a
    /// snapshot of a large tree is written straight to its file through a buffer). The only errors
    /// are `w`'s own.
    pub fn write_snapshot<W: std::io::Write>(&self, mut w: W) -> std::io::Result<()> {
        let tree = &self.tree;
        let acls = SeqOf(tree.acls.len(), || {
            tree.acls.iter().map(|(id, acl, _)| {
                (
                    id,
                    acl.iter()
                        .map(|a| (a.perms, a.id.scheme.as_str(), a.id.id.as_str()))
                        .collect::<Vec<_>>(),
                )
            })
        });
        let nodes = SeqOf(tree.nodes.len(), || {
            tree.nodes.iter().map(|(p, n)| NodeOut {
                path: p,
                data: n.data.as_deref().map(RawBytes),
                acl: n.acl,
                czxid: n.czxid,
                mzxid: n.mzxid,
                pzxid: n.pzxid,
                ctime: n.ctime,
                mtime: n.mtime,
                version: n.version,
                cversion: n.cversion,
                aversion: n.aversion,
                ephemeral_owner: n.ephemeral_owner,
            })
        });
        let sessions = SeqOf(self.sessions.len(), || {
            self.sessions.iter().map(|(id, s)| SessionOut {
                id: *id,
                timeout_ms: s.timeout_ms,
                passwd: &s.passwd,
            })
        });
        let body = (
            self.last_zxid,
            self.next_session_id,
            tree.acls.next_id(),
            acls,
            nodes,
            sessions,
        );
        write_snapshot_body(&body, &mut w)
    }

    /// Decodes a snapshot written by [`State::to_snapshot`], rebuilding and checking the derived indexes.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        if bytes.len() < 8 || &bytes[..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let snap: SnapshotIn = match version {
            SNAPSHOT_VERSION => decode_body(&bytes[8..])?,
            SNAPSHOT_VERSION_V1 => decode_body::<SnapshotIn<Bytes>>(&bytes[8..])?.upgrade(),
            _ => return Err(SnapshotError::UnsupportedVersion(version)),
        };

        // Sessions first: ephemerals are attached to them as the nodes are read.
        let mut sessions: OrdMap<i64, Session> = OrdMap::new();
        let mut prev_sid = None;
        for s in snap.sessions {
            if prev_sid.is_some_and(|p| p >= s.id) || s.id == 0 {
                return Err(bad("session ids not strictly increasing and non-zero"));
            }
            prev_sid = Some(s.id);
            sessions.insert(
                s.id,
                Session {
                    timeout_ms: s.timeout_ms,
                    passwd: s.passwd,
                    ephemerals: OrdSet::new(),
                },
            );
        }

        // Nodes in path order: a parent is a prefix of its child, so it always comes first.
        let mut refs: BTreeMap<u64, u64> = BTreeMap::new();
        let acl_ids: BTreeMap<u64, ()> = snap.acls.iter().map(|(id, _)| (*id, ())).collect();
        let mut nodes: OrdMap<Box<str>, Arc<Node>> = OrdMap::new();
        let mut containers = OrdSet::new();
        let mut ttls = OrdSet::new();
        let mut data_size = 0u64;
        let mut prev_path: Option<String> = None;
        for n in snap.nodes {
            if prev_path.as_ref().is_some_and(|p| *p >= n.path) {
                return Err(bad("node paths not strictly increasing"));
            }
            if path::validate_path(&n.path).is_err() {
                return Err(bad(format!("invalid path {:?}", n.path)));
            }
            if !acl_ids.contains_key(&n.acl) {
                return Err(bad(format!("node {} has unknown ACL id {}", n.path, n.acl)));
            }
            *refs.entry(n.acl).or_insert(0) += 1;
            if n.path == "/" {
                if n.ephemeral_owner != 0 {
                    return Err(bad("root must be persistent"));
                }
            } else {
                let (parent, _) = path::split(&n.path).ok_or_else(|| bad("path without /"))?;
                let Some(p) = nodes.get_mut(parent).map(Arc::make_mut) else {
                    return Err(bad(format!("node {} has no parent", n.path)));
                };
                if let NodeKind::Ephemeral(_) = p.kind() {
                    return Err(bad(format!("ephemeral {parent} has a child")));
                }
                p.num_children += 1;
            }
            match NodeKind::of(n.ephemeral_owner) {
                NodeKind::Container => {
                    containers.insert(n.path.clone());
                }
                NodeKind::Ttl(_) => {
                    ttls.insert(n.path.clone());
                }
                NodeKind::Ephemeral(owner) => match sessions.get_mut(&owner) {
                    Some(s) => {
                        s.ephemerals.insert(n.path.clone());
                    }
                    None => {
                        return Err(bad(format!(
                            "ephemeral {} of unknown session {owner:#x}",
                            n.path
                        )))
                    }
                },
                NodeKind::Persistent => {}
            }
            data_size += (n.path.len() + n.data.as_ref().map_or(0, Bytes::len)) as u64;
            prev_path = Some(n.path.clone());
            nodes.insert(
                n.path.into_boxed_str(),
                Arc::new(Node {
                    data: n.data.as_deref().map(Box::from),
                    acl: n.acl,
                    czxid: n.czxid,
                    mzxid: n.mzxid,
                    pzxid: n.pzxid,
                    ctime: n.ctime,
                    mtime: n.mtime,
                    version: n.version,
                    cversion: n.cversion,
                    aversion: n.aversion,
                    ephemeral_owner: n.ephemeral_owner,
                    num_children: 0,
                }),
            );
        }
        if !nodes.contains_key("/") {
            return Err(bad("no root node"));
        }

        let mut entries = Vec::with_capacity(snap.acls.len());
        for (id, list) in snap.acls {
            let Some(&count) = refs.get(&id) else {
                return Err(bad(format!("ACL id {id} is unused")));
            };
            let acl = list
                .into_iter()
                .map(|(perms, scheme, id)| Acl {
                    perms,
                    id: Id { scheme, id },
                })
                .collect();
            entries.push((id, acl, count));
        }
        let acls = AclTable::from_parts(entries, snap.next_acl_id)
            .ok_or_else(|| bad("ACL table ids or lists repeat"))?;

        Ok(State {
            tree: DataTree {
                nodes,
                acls,
                containers,
                ttls,
                data_size,
            },
            sessions,
            next_session_id: snap.next_session_id,
            last_zxid: snap.last_zxid,
        })
    }
}

/// The snapshot file: magic, version, then the postcard body `(last_zxid, next_session_id,
/// next_acl_id, acls, nodes, sessions)` that [`SnapshotIn`] decodes, written into `w` as it is made.
/// The one place that layout is written, for [`State::to_snapshot`], [`State::write_snapshot`] and
/// [`imported_snapshot`] alike.
fn write_snapshot_body<A, N, S, W>(
    body: &(i64, i64, u64, A, N, S),
    w: &mut W,
) -> std::io::Result<()>
where
    A: Serialize,
    N: Serialize,
    S: Serialize,
    W: std::io::Write,
{
    w.write_all(SNAPSHOT_MAGIC)?;
    w.write_all(&SNAPSHOT_VERSION.to_be_bytes())?;
    let mut out = Chunked {
        buf: Vec::with_capacity(CHUNK),
        w,
        err: None,
    };
    let done = postcard::serialize_with_flavor(body, &mut out).and_then(|()| out.drain());
    match done {
        Ok(()) => Ok(()),
        // A write error stops the serializer as a postcard error; return the writer's own.
        Err(e) => Err(out
            .err
            .take()
            .unwrap_or_else(|| std::io::Error::other(format!("snapshot encoding failed: {e}")))),
    }
}

/// Bytes [`write_snapshot_body`] collects before it hands them to the writer.
const CHUNK: usize = 1 << 20;

/// A postcard output that gathers the encoding in a buffer of [`CHUNK`] bytes and writes each full
/// buffer at once (postcard's own io output calls the writer for every byte of every varint), keeping
/// the first write error.
struct Chunked<'a, W> {
    buf: Vec<u8>,
    w: &'a mut W,
    err: Option<std::io::Error>,
}

impl<W: std::io::Write> Chunked<'_, W> {
    fn drain(&mut self) -> postcard::Result<()> {
        if let Err(e) = self.w.write_all(&self.buf) {
            self.err = Some(e);
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.clear();
        Ok(())
    }
}

impl<W: std::io::Write> postcard::ser_flavors::Flavor for &mut Chunked<'_, W> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.buf.push(data);
        if self.buf.len() >= CHUNK {
            self.drain()?;
        }
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.drain()?;
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// One znode of a tree built outside Roster (by `roster import` from a ZooKeeper data directory), with
/// ZooKeeper's persisted stat. `cversion` is the *stored* cversion (ZooKeeper's `StatPersisted`).
/// Serializable as it stands: `roster import` keeps the nodes it dropped in its marker (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedNode {
    /// Full path.
    pub path: String,
    /// Data; `None` for null data.
    pub data: Option<Vec<u8>>,
    /// The node's ACL list.
    pub acl: Vec<Acl>,
    /// zxid of the create.
    pub czxid: i64,
    /// zxid of the last setData.
    pub mzxid: i64,
    /// zxid of the last child create or delete.
    pub pzxid: i64,
    /// Create time (ms).
    pub ctime: i64,
    /// Last setData time (ms).
    pub mtime: i64,
    /// Data version.
    pub version: i32,
    /// Stored cversion: child creates.
    pub cversion: i64,
    /// ACL version.
    pub aversion: i32,
    /// Owning session, container or TTL marker, or 0.
    pub ephemeral_owner: i64,
}

/// One live session of a state built outside Roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedSession {
    /// Session id.
    pub id: i64,
    /// Negotiated timeout (ms).
    pub timeout_ms: i32,
    /// The session password clients reconnect with.
    pub passwd: Vec<u8>,
}

impl State {
    /// Builds a state from nodes (any order) and sessions assembled elsewhere, with `last_zxid` as the
    /// zxid of the last applied change. ACL lists are interned here. The result goes through
    /// [`State::from_snapshot`], so every invariant it checks (a root, parents before children, valid
    /// paths, ephemerals of known sessions) is checked here too and reported as a [`SnapshotError`].
    pub fn from_imported(
        last_zxid: i64,
        nodes: Vec<ImportedNode>,
        sessions: Vec<ImportedSession>,
    ) -> Result<State, SnapshotError> {
        State::from_snapshot(&imported_snapshot(last_zxid, nodes, sessions)?)
    }
}

/// The snapshot bytes (the format of [`State::to_snapshot`]) of the state [`State::from_imported`]
/// builds, without building it: for `roster import --update`, whose tree comes from a checked state
/// plus ZooKeeper's replay rules and must be written fast (writes are stopped meanwhile). Nothing but
/// the encoding is checked here; [`State::from_snapshot`] checks every invariant when the snapshot is
/// loaded (`roster serve` refuses one that breaks any).
pub fn imported_snapshot(
    last_zxid: i64,
    mut nodes: Vec<ImportedNode>,
    mut sessions: Vec<ImportedSession>,
) -> Result<Vec<u8>, SnapshotError> {
    // Paths are unique (a repeat fails the check on load), so an unstable sort gives one order.
    nodes.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    sessions.sort_by_key(|s| s.id);
    /// An ACL list as (perms, scheme, id) triples, borrowed from the nodes.
    type Key<'a> = Vec<(i32, &'a str, &'a str)>;
    let mut ids: BTreeMap<Key, u64> = BTreeMap::new();
    let mut acl_of = Vec::with_capacity(nodes.len());
    let mut prev: Option<(&Vec<Acl>, u64)> = None;
    for n in &nodes {
        // Siblings mostly share a list: skip the lookup when it is the previous node's.
        if let Some((acl, id)) = prev {
            if *acl == n.acl {
                acl_of.push(id);
                continue;
            }
        }
        let key: Key = n
            .acl
            .iter()
            .map(|a| (a.perms, a.id.scheme.as_str(), a.id.id.as_str()))
            .collect();
        let next = ids.len() as u64 + 1;
        let id = *ids.entry(key).or_insert(next);
        acl_of.push(id);
        prev = Some((&n.acl, id));
    }
    let mut acls: Vec<(u64, &Key)> = ids.iter().map(|(k, id)| (*id, k)).collect();
    acls.sort_by_key(|(id, _)| *id);
    let next_acl_id = acls.len() as u64 + 1;
    let node_out = SeqOf(nodes.len(), || {
        nodes.iter().zip(&acl_of).map(|(n, acl)| NodeOut {
            path: &n.path,
            data: n.data.as_deref().map(RawBytes),
            acl: *acl,
            czxid: n.czxid,
            mzxid: n.mzxid,
            pzxid: n.pzxid,
            ctime: n.ctime,
            mtime: n.mtime,
            version: n.version,
            cversion: n.cversion,
            aversion: n.aversion,
            ephemeral_owner: n.ephemeral_owner,
        })
    });
    let passwds: Vec<Bytes> = sessions
        .iter()
        .map(|s| Bytes::from(s.passwd.clone()))
        .collect();
    let session_out = SeqOf(sessions.len(), || {
        sessions.iter().zip(&passwds).map(|(s, p)| SessionOut {
            id: s.id,
            timeout_ms: s.timeout_ms,
            passwd: p,
        })
    });
    // 0: the next CreateSession seeds the id from its own time, as on a fresh cluster (later than
    // any imported session's, and apply skips ids in use).
    let body = (last_zxid, 0i64, next_acl_id, acls, node_out, session_out);
    let mut out = Vec::with_capacity(64);
    write_snapshot_body(&body, &mut out).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    Ok(out)
}

/// The parts of a snapshot (written by [`State::to_snapshot`] or [`State::from_imported`]) in the form
/// [`State::from_imported`] takes: last zxid, nodes in path order with their ACL lists and stored
/// stats, and sessions. For `roster import --update`, which continues ZooKeeper's replay on a tree it
/// imported before; it decodes without building a [`State`], so nothing but the encoding is checked.
pub fn imported_parts(
    bytes: &[u8],
) -> Result<(i64, Vec<ImportedNode>, Vec<ImportedSession>), SnapshotError> {
    if bytes.len() < 8 || &bytes[..4] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let snap: SnapshotIn = match version {
        SNAPSHOT_VERSION => decode_body(&bytes[8..])?,
        SNAPSHOT_VERSION_V1 => decode_body::<SnapshotIn<Bytes>>(&bytes[8..])?.upgrade(),
        _ => return Err(SnapshotError::UnsupportedVersion(version)),
    };
    let acls: BTreeMap<u64, Vec<Acl>> = snap
        .acls
        .into_iter()
        .map(|(id, list)| {
            let acl = list
                .into_iter()
                .map(|(perms, scheme, id)| Acl {
                    perms,
                    id: Id { scheme, id },
                })
                .collect();
            (id, acl)
        })
        .collect();
    let mut nodes = Vec::with_capacity(snap.nodes.len());
    for n in snap.nodes {
        let acl = acls
            .get(&n.acl)
            .cloned()
            .ok_or_else(|| bad(format!("node {} has unknown ACL id {}", n.path, n.acl)))?;
        nodes.push(ImportedNode {
            path: n.path,
            data: n.data.map(|d| d.to_vec()),
            acl,
            czxid: n.czxid,
            mzxid: n.mzxid,
            pzxid: n.pzxid,
            ctime: n.ctime,
            mtime: n.mtime,
            version: n.version,
            cversion: n.cversion,
            aversion: n.aversion,
            ephemeral_owner: n.ephemeral_owner,
        });
    }
    let sessions = snap
        .sessions
        .into_iter()
        .map(|s| ImportedSession {
            id: s.id,
            timeout_ms: s.timeout_ms,
            passwd: s.passwd.to_vec(),
        })
        .collect();
    Ok((snap.last_zxid, nodes, sessions))
}

impl State {
    /// Checks that every index kept beside the tree agrees with the tree itself: child counts, ACL
    /// reference counts, the container and TTL sets, session ephemerals and the data size. It rebuilds
    /// them through a snapshot round trip, so it is O(n): a test and debugging aid, not for the apply path.
    pub fn check_invariants(&self) -> Result<(), String> {
        let bytes = self.to_snapshot();
        let rebuilt = State::from_snapshot(&bytes).map_err(|e| e.to_string())?;
        let (a, b) = (&self.tree, &rebuilt.tree);
        if a.nodes != b.nodes {
            let diff = a
                .nodes
                .iter()
                .zip(b.nodes.iter())
                .find(|(x, y)| x != y)
                .map(|(x, _)| x.0.clone());
            return Err(format!(
                "child counts disagree with paths (first at {diff:?})"
            ));
        }
        if !a.acls.iter().eq(b.acls.iter()) {
            return Err("ACL reference counts disagree with the nodes".into());
        }
        if a.containers != b.containers || a.ttls != b.ttls {
            return Err("container or TTL index disagrees with the nodes".into());
        }
        if a.data_size != b.data_size {
            return Err(format!(
                "data size {} but the nodes add up to {}",
                a.data_size, b.data_size
            ));
        }
        if self.sessions != rebuilt.sessions {
            return Err("session ephemerals disagree with the node owners".into());
        }
        if rebuilt.to_snapshot() != bytes {
            return Err("snapshot does not re-encode to the same bytes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A version 1 snapshot written by the build before null data: one session, `/a` = "hi" and `/e`
    /// with empty data (created at zxids 2 and 3).
    const V1: &str = "525354530000000106828028020200013e05776f726c6406616e796f6e6501010205776f\
        726c6406616e796f6e6506012f0000000006000000040000022f61026869000404040c0c00000000022f65000006\
        06060e0e000000000a2f7a6f6f6b65657065720000000000000000000000112f7a6f6f6b65657065722f636f6e66\
        69670001000000000000000100102f7a6f6f6b65657065722f71756f7461000000000000000000000001808028c0\
        3e027077";

    #[test]
    fn version_1_snapshots_still_load_with_non_null_data() {
        let s = State::from_snapshot(&unhex(V1)).unwrap();
        assert_eq!(s.last_zxid(), 3);
        assert_eq!(s.node("/a").unwrap().data.as_deref(), Some(&b"hi"[..]));
        assert_eq!(s.node("/e").unwrap().data.as_deref(), Some(&b""[..]));
        assert_eq!(s.node_count(), 6);
        assert_eq!(s.check_invariants(), Ok(()));
        // Written again, it is a version 2 snapshot of the same state.
        let v2 = s.to_snapshot();
        assert_eq!(&v2[4..8], &SNAPSHOT_VERSION.to_be_bytes());
        assert_eq!(
            State::from_snapshot(&v2).unwrap().tree().nodes,
            s.tree.nodes
        );
    }

    /// Takes `room` bytes, then fails as a full disk does.
    struct Fills {
        room: usize,
        got: Vec<u8>,
    }

    impl std::io::Write for Fills {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left",
                ));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_streamed_snapshot_is_the_same_bytes_and_returns_the_writers_error() {
        let s = State::from_snapshot(&unhex(V1)).unwrap();
        let whole = s.to_snapshot();
        let mut all = Fills {
            room: usize::MAX,
            got: Vec::new(),
        };
        s.write_snapshot(&mut all).unwrap();
        assert_eq!(all.got, whole);
        // Every place it can fail (the header, then the body): the writer's own error, no panic.
        for room in [0, 5, 8, 20, whole.len() - 1] {
            let mut w = Fills {
                room,
                got: Vec::new(),
            };
            let e = s.write_snapshot(&mut w).unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::StorageFull,
                "room {room}: {e}"
            );
            assert_eq!(w.got, whole[..room], "room {room}");
        }
    }

    #[test]
    fn null_data_survives_a_snapshot_round_trip() {
        let mut s = State::from_snapshot(&unhex(V1)).unwrap();
        s.tree.get_mut("/a").unwrap().data = None;
        let back = State::from_snapshot(&s.to_snapshot()).unwrap();
        assert_eq!(back.node("/a").unwrap().data, None);
        assert_eq!(back.node("/e").unwrap().data.as_deref(), Some(&b""[..]));
        assert_eq!(back.stat("/a").unwrap().data_length, 0);
        assert_ne!(
            s.to_snapshot(),
            State::from_snapshot(&unhex(V1)).unwrap().to_snapshot()
        );
    }

    fn imported(path: &str, acl: Vec<Acl>, owner: i64, cversion: i64) -> ImportedNode {
        ImportedNode {
            path: path.into(),
            data: Some(b"d".to_vec()),
            acl,
            czxid: 5,
            mzxid: 6,
            pzxid: 7,
            ctime: 8,
            mtime: 9,
            version: 2,
            cversion,
            aversion: 1,
            ephemeral_owner: owner,
        }
    }

    #[test]
    fn imported_states_keep_every_stat_and_intern_acls() {
        let open = Acl::open_unsafe();
        let nodes = vec![
            imported("/a/e", open.clone(), 0x77, 0),
            imported("/", open.clone(), 0, 1),
            imported("/a", Acl::read_unsafe(), 0, 5),
        ];
        let sessions = vec![ImportedSession {
            id: 0x77,
            timeout_ms: 5000,
            passwd: vec![1; 16],
        }];
        let s = State::from_imported(0x1_0000_0009, nodes, sessions).unwrap();
        assert_eq!(s.last_zxid(), 0x1_0000_0009);
        assert_eq!(s.tree().acl_list_count(), 2);
        let a = s.stat("/a").unwrap();
        assert_eq!(
            (a.czxid, a.mzxid, a.pzxid, a.ctime, a.mtime),
            (5, 6, 7, 8, 9)
        );
        assert_eq!((a.version, a.aversion, a.num_children), (2, 1, 1));
        assert_eq!(
            a.cversion,
            5 * 2 - 1,
            "visible cversion from the stored one"
        );
        assert_eq!(s.stat("/a/e").unwrap().ephemeral_owner, 0x77);
        assert_eq!(s.session(0x77).unwrap().ephemerals.len(), 1);
        assert_eq!(s.check_invariants(), Ok(()));
        // An ephemeral of a session that is not there is refused, not imported.
        let orphan = vec![
            imported("/", open.clone(), 0, 0),
            imported("/x", open, 0x9, 0),
        ];
        assert!(State::from_imported(1, orphan, vec![]).is_err());
    }

    #[test]
    fn imported_parts_inverts_from_imported() {
        let open = vec![Acl {
            perms: 31,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }];
        let mut nodes = vec![
            imported("/", open.clone(), 0, 0),
            imported("/a", open.clone(), 0, 5),
            imported("/a/e", open, 0x77, 6),
        ];
        nodes[2].data = None;
        let sessions = vec![ImportedSession {
            id: 0x77,
            timeout_ms: 4000,
            passwd: vec![1; 16],
        }];
        let s = State::from_imported(0x1_0000_0009, nodes.clone(), sessions.clone()).unwrap();
        let (zxid, back, back_sessions) = imported_parts(&s.to_snapshot()).unwrap();
        assert_eq!(zxid, 0x1_0000_0009);
        assert_eq!(back, nodes);
        assert_eq!(back_sessions, sessions);
        assert_eq!(imported_parts(b"nope").err(), Some(SnapshotError::BadMagic));
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut b = unhex(V1);
        b[7] = 3;
        assert_eq!(
            State::from_snapshot(&b).err(),
            Some(SnapshotError::UnsupportedVersion(3))
        );
    }
}
