//! Snapshots: the whole [`State`] as bytes and back.
//!
//! # Format (version 1)
//! `b"RSTS"`, a big-endian `u32` format version, then one postcard-encoded record:
//! last zxid, next session id, next ACL id, the ACL table as (id, entries) in id order, every node as
//! (path, data, ACL id, czxid, mzxid, pzxid, ctime, mtime, version, stored cversion, aversion,
//! ephemeralOwner) in path order, and every session as (id, timeout, password) in id order.
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
pub const SNAPSHOT_VERSION: u32 = 1;

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
    data: RawBytes<'a>,
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
struct NodeIn {
    path: String,
    data: Bytes,
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
struct SnapshotIn {
    last_zxid: i64,
    next_session_id: i64,
    next_acl_id: u64,
    acls: Vec<(u64, Vec<AclEntry>)>,
    nodes: Vec<NodeIn>,
    sessions: Vec<SessionIn>,
}

fn bad(msg: impl Into<String>) -> SnapshotError {
    SnapshotError::Inconsistent(msg.into())
}

impl State {
    /// Encodes the whole state (see the module docs for the format). Equal states give equal bytes.
    pub fn to_snapshot(&self) -> Vec<u8> {
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
                data: RawBytes(&n.data),
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
        let mut out = Vec::with_capacity(64 + tree.data_size as usize);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        // Serializing into a Vec cannot fail for these types (no maps with non-string keys, no
        // unsupported serde features), so an error here would be a bug in this file.
        match postcard::to_extend(&body, out) {
            Ok(v) => v,
            Err(e) => panic!("snapshot encoding failed: {e}"),
        }
    }

    /// Decodes a snapshot written by [`State::to_snapshot`], rebuilding and checking the derived indexes.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        if bytes.len() < 8 || &bytes[..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let (snap, rest): (SnapshotIn, &[u8]) = postcard::take_from_bytes(&bytes[8..])
            .map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SnapshotError::Decode(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }

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
            data_size += (n.path.len() + n.data.len()) as u64;
            prev_path = Some(n.path.clone());
            nodes.insert(
                n.path.into_boxed_str(),
                Arc::new(Node {
                    data: Box::from(&n.data[..]),
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
