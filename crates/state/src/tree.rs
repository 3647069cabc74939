//! The data tree: every znode by path, with its data, interned ACL, persisted stat and child count.
//!
//! # Representation
//! `nodes` is an `imbl::OrdMap<Box<str>, Arc<Node>>` keyed by full path (a `Box<str>` key is 8 bytes
//! smaller than a `String` in every B-tree slot). It is persistent (structurally
//! shared), so cloning a whole tree is O(1) and a clone taken for a background snapshot costs only the
//! paths touched afterwards (a shared node is copied on write with `Arc::make_mut`). The node sits behind
//! an `Arc` to keep the B-tree's entries small: imbl leaves are often only half full after sequential
//! inserts, and a half-empty slot of a pointer costs far less than one of a whole node. A node's data
//! is a `Box<[u8]>` copied out of the request (16 bytes in the node, where a `Bytes` takes 32), which
//! keeps node and counts inside one 112-byte allocation; a read copies the data into its response.
//!
//! A node keeps only the *number* of its children. Their names are not stored a second time: the
//! children of `P` are the keys `P/name` of the path map, found with one ordered range walk that seeks
//! past each child's own subtree ([`DataTree::children`]), so listing costs O(k log n) for k children.
//! Everything iterates in sorted order, so nothing about hashing can reach an output.
//!
//! # The stat, as ZooKeeper keeps it
//! A node stores ZooKeeper's `StatPersisted`: czxid, mzxid, pzxid, ctime, mtime, version, aversion,
//! ephemeralOwner and a *stored* cversion that counts child **creates** only. The client-visible stat is
//! derived in [`Node::stat`] exactly as `DataNode.copyStat` does it: `dataLength` from the data,
//! `numChildren` from the child count, and `cversion = stored * 2 - numChildren` (every create that is no
//! longer a child was matched by a delete, so the visible number counts creates plus deletes). The
//! sequential suffix uses the *stored* cversion, as ZooKeeper's `PrepRequestProcessor` does, so sequence
//! numbers are not advanced by deletes. A fresh tree therefore shows cversion -1 on `/` and -2 on
//! `/zookeeper`, as a real ZooKeeper does.
//!
//! # Indexes kept beside the tree
//! The container and TTL path sets (for cleanup), the interned ACL table, and the approximate data size
//! (`path.len() + data.len()` summed, ZooKeeper's `approximateDataSize`). Session ephemerals are kept by
//! the session table (`session.rs`).
//!
//! # Left out
//! Quotas (`/zookeeper/quota/**/zookeeper_limits` and `zookeeper_stats`): ZooKeeper updates the stats
//! node's data on writes inside a quota subtree and (optionally) enforces limits; Roster stores the quota
//! nodes as ordinary nodes and neither tracks nor enforces. The per-node digest (`DigestCalculator`) is not
//! computed: Raft replicates the log, and the snapshot bytes are comparable instead.

use crate::acl::{AclId, AclTable};
use imbl::{OrdMap, OrdSet};
use roster_proto::{Acl, Stat};
use std::ops::Bound::{Included, Unbounded};
use std::sync::Arc;

/// `ephemeralOwner` of a container node (`EphemeralType.CONTAINER_EPHEMERAL_OWNER`).
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// High byte of a TTL node's `ephemeralOwner` (`EphemeralType.EXTENDED_MASK`).
pub const TTL_MASK: i64 = 0xFF00_0000_0000_0000u64 as i64;
/// Reserved bits under the TTL marker; zero for the TTL feature (`RESERVED_BITS_MASK`).
const TTL_RESERVED_MASK: i64 = 0x00FF_FF00_0000_0000;
/// Largest TTL in milliseconds (`EphemeralType.TTL.maxValue()`, about 34 years).
pub const MAX_TTL: i64 = 0x0000_00FF_FFFF_FFFF;

/// The kind of node, decoded from `ephemeralOwner` (`EphemeralType.get`, extended types enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Persistent (owner 0).
    Persistent,
    /// Ephemeral, owned by this session.
    Ephemeral(i64),
    /// Container.
    Container,
    /// TTL node with this TTL in milliseconds.
    Ttl(i64),
}

impl NodeKind {
    /// Decodes an `ephemeralOwner`.
    pub fn of(owner: i64) -> NodeKind {
        if owner == 0 {
            NodeKind::Persistent
        } else if owner == CONTAINER_OWNER {
            NodeKind::Container
        } else if owner & TTL_MASK == TTL_MASK && owner & TTL_RESERVED_MASK == 0 {
            NodeKind::Ttl(owner & MAX_TTL)
        } else {
            NodeKind::Ephemeral(owner)
        }
    }

    /// The `ephemeralOwner` of a TTL node (`EphemeralType.TTL.toEphemeralOwner`), `None` when the TTL is
    /// outside `1..=MAX_TTL`.
    pub fn ttl_owner(ttl: i64) -> Option<i64> {
        if ttl <= 0 || ttl > MAX_TTL {
            None
        } else {
            Some(TTL_MASK | ttl)
        }
    }
}

/// One znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's data, in an exact-size buffer of its own (16 bytes here, half a `Bytes`); `None` is
    /// null data (created or set with a null buffer), which reads back as null, as in ZooKeeper.
    pub data: Option<Box<[u8]>>,
    /// The node's ACL, interned in the tree's [`AclTable`].
    pub acl: AclId,
    /// zxid of the create.
    pub czxid: i64,
    /// zxid of the last setData.
    pub mzxid: i64,
    /// zxid of the last child create or delete.
    pub pzxid: i64,
    /// Create time, ms since the epoch (leader's clock).
    pub ctime: i64,
    /// Last setData time.
    pub mtime: i64,
    /// Data version.
    pub version: i32,
    /// Stored cversion: the number of child creates (ZooKeeper's `StatPersisted.cversion`). Kept as a
    /// 64-bit counter so sequential suffixes never wrap; the wire's 32-bit cversion is derived from it.
    pub cversion: i64,
    /// ACL version.
    pub aversion: i32,
    /// Owning session, container or TTL marker, or 0.
    pub ephemeral_owner: i64,
    /// Number of children (their names are the tree's keys under this path).
    pub num_children: u32,
}

impl Node {
    /// A new childless node.
    pub fn new(
        data: Option<Box<[u8]>>,
        acl: AclId,
        zxid: i64,
        time: i64,
        ephemeral_owner: i64,
    ) -> Node {
        Node {
            data,
            acl,
            czxid: zxid,
            mzxid: zxid,
            pzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner,
            num_children: 0,
        }
    }

    /// The client-visible stat (`DataNode.copyStat`), with Java's wrapping `int` arithmetic.
    pub fn stat(&self) -> Stat {
        let num_children = self.num_children as i32;
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            // ZooKeeper's visible value while the count fits its 32-bit field; past that the wire
            // cannot carry it, and the stat saturates instead of wrapping.
            cversion: i32::try_from(self.cversion)
                .map(|c| c.wrapping_mul(2).wrapping_sub(num_children))
                .unwrap_or(i32::MAX),
            aversion: self.aversion,
            // Clients see 0 for containers and TTL nodes (`DataTree.getClientEphemeralOwner`); the
            // marker stays in the node and in snapshots.
            ephemeral_owner: match self.kind() {
                NodeKind::Container | NodeKind::Ttl(_) => 0,
                _ => self.ephemeral_owner,
            },
            data_length: self.data_len() as i32,
            num_children,
            pzxid: self.pzxid,
        }
    }

    /// Length of the data; 0 for null, as ZooKeeper's `dataLength`.
    pub fn data_len(&self) -> usize {
        self.data.as_deref().map_or(0, <[u8]>::len)
    }

    /// The data's bytes; empty for null.
    pub fn data_bytes(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }

    /// The node's kind.
    pub fn kind(&self) -> NodeKind {
        NodeKind::of(self.ephemeral_owner)
    }
}

/// The data to store in a node for a request's `data`: a copy in an exact-size buffer that the node
/// alone owns. Sharing the `Bytes` instead would keep the whole decoded Raft entry alive and cost a
/// 32-byte handle (plus a share record once cloned) in every node.
/// Null stays null.
pub fn node_data(data: Option<&[u8]>) -> Option<Box<[u8]>> {
    data.map(Box::from)
}

/// The tree of znodes plus the indexes kept with it.
#[derive(Debug, Clone)]
pub struct DataTree {
    /// Every node by full path; `/` always present.
    pub(crate) nodes: OrdMap<Box<str>, Arc<Node>>,
    /// Interned ACL lists.
    pub(crate) acls: AclTable,
    /// Paths of container nodes.
    pub(crate) containers: OrdSet<String>,
    /// Paths of TTL nodes.
    pub(crate) ttls: OrdSet<String>,
    /// Sum of `path.len() + data.len()` over the nodes.
    pub(crate) data_size: u64,
}

impl Default for DataTree {
    fn default() -> Self {
        Self::new()
    }
}

impl DataTree {
    /// The tree of a fresh ZooKeeper 3.8 standalone server: `/`, `/zookeeper`, `/zookeeper/quota` and
    /// `/zookeeper/config`, all with zeroed stats and empty data; `/zookeeper/config` is `world:anyone`
    /// read-only with aversion -1 (`DataTree.addConfigNode` sets its ACL with version -1), the others
    /// `world:anyone` with all permissions.
    pub fn new() -> DataTree {
        let mut t = DataTree {
            nodes: OrdMap::new(),
            acls: AclTable::default(),
            containers: OrdSet::new(),
            ttls: OrdSet::new(),
            data_size: 0,
        };
        let open = t.acls.acquire(&Acl::open_unsafe());
        let mut root = Node::new(Some(Box::default()), open, 0, 0, 0);
        root.num_children = 1;
        let zk_open = t.acls.acquire(&Acl::open_unsafe());
        let mut zk = Node::new(Some(Box::default()), zk_open, 0, 0, 0);
        zk.num_children = 2;
        let quota = Node::new(
            Some(Box::default()),
            t.acls.acquire(&Acl::open_unsafe()),
            0,
            0,
            0,
        );
        let mut config = Node::new(
            Some(Box::default()),
            t.acls.acquire(&Acl::read_unsafe()),
            0,
            0,
            0,
        );
        config.aversion = -1;
        for (p, n) in [
            ("/", root),
            ("/zookeeper", zk),
            ("/zookeeper/quota", quota),
            ("/zookeeper/config", config),
        ] {
            t.data_size += (p.len() + n.data_len()) as u64;
            t.nodes.insert(p.into(), Arc::new(n));
        }
        t
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path).map(|n| &**n)
    }

    /// The node at `path` for changing it, copied first if a snapshot still shares it.
    pub(crate) fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path).map(Arc::make_mut)
    }

    /// The names of the children of the node at `path`, sorted; empty if there is no such node.
    ///
    /// Walks the keys after `path/` in order: a key `path/name` is a child; a key `path/name/...` starts
    /// that child's subtree, which is skipped with one seek to `path/name0` (`'0'` follows `'/'`).
    pub fn children(&self, path: &str) -> Vec<String> {
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        let mut out = Vec::new();
        let mut from = prefix.clone();
        'seek: loop {
            for (key, _) in self
                .nodes
                .range::<_, str>((Included(from.as_str()), Unbounded))
            {
                let Some(rest) = key.strip_prefix(&prefix) else {
                    break 'seek;
                };
                match rest.find('/') {
                    None => {
                        if !rest.is_empty() {
                            out.push(rest.to_string());
                        }
                    }
                    Some(at) => {
                        // Inside the subtree of child `rest[..at]`: continue after it.
                        from = format!("{prefix}{}0", &rest[..at]);
                        continue 'seek;
                    }
                }
            }
            break;
        }
        out
    }

    /// The ACL of a node.
    pub fn acl_of(&self, node: &Node) -> &[Acl] {
        self.acls.get(node.acl)
    }

    /// Number of distinct ACL lists in use.
    pub fn acl_list_count(&self) -> usize {
        self.acls.len()
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: the root exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Iterates every (path, node) in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (&**p, &**n))
    }

    /// The interned ACL table.
    pub fn acl_table(&self) -> &AclTable {
        &self.acls
    }

    /// Number of nodes strictly below `path` (`DataTree.getAllChildrenNumber`; for `/` every node but
    /// the root).
    pub fn descendant_count(&self, path: &str) -> usize {
        if path == "/" {
            return self.nodes.len().saturating_sub(1);
        }
        let prefix = format!("{path}/");
        self.nodes
            .range::<_, str>((Included(prefix.as_str()), Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .count()
    }

    /// Inserts a new node under an existing parent, doing ZooKeeper's `createNode` bookkeeping on the
    /// parent: stored cversion + 1 (a 64-bit count, so sequential suffixes keep growing past 2^31) and
    /// pzxid = zxid. The caller has validated everything (parent exists, child does not).
    pub(crate) fn insert_node(&mut self, path: &str, parent: &str, node: Node, zxid: i64) {
        if let Some(p) = self.get_mut(parent) {
            p.cversion = p.cversion.saturating_add(1);
            p.pzxid = zxid;
            p.num_children += 1;
        }
        match node.kind() {
            NodeKind::Container => {
                self.containers.insert(path.to_string());
            }
            NodeKind::Ttl(_) => {
                self.ttls.insert(path.to_string());
            }
            _ => {}
        }
        self.data_size += (path.len() + node.data_len()) as u64;
        self.nodes.insert(path.into(), Arc::new(node));
    }

    /// Removes a childless node, doing ZooKeeper's `deleteNode` bookkeeping: the parent loses the child and
    /// its pzxid becomes zxid when larger; the ACL reference is released. Returns the removed node.
    pub(crate) fn remove_node(&mut self, path: &str, zxid: i64) -> Option<Node> {
        let (parent, _) = crate::path::split(path)?;
        let node = self.nodes.remove(path)?;
        if let Some(p) = self.get_mut(parent) {
            p.num_children = p.num_children.saturating_sub(1);
            if zxid > p.pzxid {
                p.pzxid = zxid;
            }
        }
        self.acls.release(node.acl);
        self.containers.remove(path);
        self.ttls.remove(path);
        self.data_size = self
            .data_size
            .saturating_sub((path.len() + node.data_len()) as u64);
        Some(Arc::unwrap_or_clone(node))
    }

    /// Replaces a node's data (setData): version, mzxid and mtime as given.
    pub(crate) fn set_data(
        &mut self,
        path: &str,
        data: Option<Box<[u8]>>,
        version: i32,
        zxid: i64,
        time: i64,
    ) -> Option<Stat> {
        self.set_data_checked(path, data, zxid, time, |_, _| {
            Ok::<_, std::convert::Infallible>(version)
        })
        .map(|r| match r {
            Ok(stat) => stat,
            Err(never) => match never {},
        })
    }

    /// setData with its checks in the same single lookup of `path`: `check` sees the node and its
    /// ACL and returns the new version, or an error that leaves the node as it was. `None` when there
    /// is no node at `path`.
    pub(crate) fn set_data_checked<E>(
        &mut self,
        path: &str,
        data: Option<Box<[u8]>>,
        zxid: i64,
        time: i64,
        check: impl FnOnce(&Node, &[Acl]) -> Result<i32, E>,
    ) -> Option<Result<Stat, E>> {
        let shared = self.nodes.get_mut(path)?;
        let version = match check(shared, self.acls.get(shared.acl)) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let node = Arc::make_mut(shared);
        let old = node.data_len() as u64;
        let new = data.as_deref().map_or(0, <[u8]>::len) as u64;
        node.data = data;
        node.version = version;
        node.mzxid = zxid;
        node.mtime = time;
        let stat = node.stat();
        self.data_size = self.data_size.saturating_sub(old) + new;
        Some(Ok(stat))
    }

    /// Replaces a node's ACL (setACL) and aversion.
    pub(crate) fn set_acl(&mut self, path: &str, acl: &[Acl], aversion: i32) -> Option<Stat> {
        if !self.nodes.contains_key(path) {
            return None;
        }
        let new_id = self.acls.acquire(acl);
        let node = self.get_mut(path)?;
        let old_id = node.acl;
        node.acl = new_id;
        node.aversion = aversion;
        let stat = node.stat();
        self.acls.release(old_id);
        Some(stat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(t: &mut DataTree, path: &str) {
        let (parent, _) = crate::path::split(path).unwrap();
        let acl = t.acls.acquire(&Acl::open_unsafe());
        t.insert_node(
            path,
            parent,
            Node::new(Some(Box::default()), acl, 1, 0, 0),
            1,
        );
    }

    #[test]
    fn children_come_from_the_path_map_and_skip_grandchildren() {
        let mut t = DataTree::new();
        // '-' and '.' sort before '/', '0' right after it: the subtree skip must not lose siblings.
        for p in [
            "/a", "/a-b", "/a.c", "/a/x", "/a/x/y", "/a/y", "/a0", "/ab", "/b", "/b/c",
        ] {
            add(&mut t, p);
        }
        assert_eq!(
            t.children("/"),
            ["a", "a-b", "a.c", "a0", "ab", "b", "zookeeper"]
        );
        assert_eq!(t.children("/a"), ["x", "y"]);
        assert_eq!(t.children("/a/x"), ["y"]);
        assert_eq!(t.children("/zookeeper"), ["config", "quota"]);
        assert!(t.children("/ab").is_empty());
        assert!(t.children("/missing").is_empty());
        for p in ["/", "/a", "/a/x", "/b", "/ab", "/zookeeper"] {
            assert_eq!(
                t.get(p).unwrap().num_children as usize,
                t.children(p).len(),
                "{p}"
            );
        }
        t.remove_node("/a/y", 2);
        assert_eq!(t.children("/a"), ["x"]);
        assert_eq!(t.get("/a").unwrap().num_children, 1);
    }

    #[test]
    fn node_fits_a_112_byte_allocation_with_its_arc_counts() {
        // Two reference counts plus the node: one 112-byte size class in jemalloc and glibc alike.
        assert!(std::mem::size_of::<Node>() + 16 <= 112);
    }
}
