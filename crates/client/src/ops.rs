//! The argument and result types of the calls: create options, multi ops and their results.

use std::time::Duration;

use bytes::Bytes;
use roster_proto::{Acl, CreateMode, ErrorCode, Stat};

/// How to create a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// Persistent, ephemeral, sequential, container or TTL.
    pub mode: CreateMode,
    /// The node's ACL; must not be empty.
    pub acl: Vec<Acl>,
    /// The TTL, required by (and only allowed with) the `*WithTtl` modes. The node is deleted once it
    /// has had no children and no change for this long (needs `zookeeper.extendedTypesEnabled` on
    /// ZooKeeper).
    pub ttl: Option<Duration>,
}

impl Default for CreateOptions {
    /// A persistent node open to everyone (`OPEN_ACL_UNSAFE`).
    fn default() -> Self {
        CreateOptions {
            mode: CreateMode::Persistent,
            acl: Acl::open_unsafe(),
            ttl: None,
        }
    }
}

impl CreateOptions {
    /// Options with `mode` and the open ACL.
    pub fn new(mode: CreateMode) -> CreateOptions {
        CreateOptions {
            mode,
            ..Default::default()
        }
    }

    /// An ephemeral node with the open ACL.
    pub fn ephemeral() -> CreateOptions {
        CreateOptions::new(CreateMode::Ephemeral)
    }

    /// A persistent node that is deleted after `ttl` without children or changes.
    pub fn ttl(ttl: Duration) -> CreateOptions {
        CreateOptions {
            mode: CreateMode::PersistentWithTtl,
            acl: Acl::open_unsafe(),
            ttl: Some(ttl),
        }
    }

    /// The same options with another ACL.
    pub fn with_acl(mut self, acl: Vec<Acl>) -> CreateOptions {
        self.acl = acl;
        self
    }
}

/// One write of a [`crate::Client::multi`] transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a node (its result carries a stat only for containers and TTL nodes, which ZooKeeper
    /// always answers with create2's record).
    Create {
        /// Path (sequential modes get a suffix).
        path: String,
        /// Data.
        data: Bytes,
        /// Mode, ACL, TTL.
        options: CreateOptions,
    },
    /// Delete a node, if its version matches (`None`: any version).
    Delete {
        /// Path.
        path: String,
        /// Expected version.
        version: Option<i32>,
    },
    /// Set a node's data, if its version matches (`None`: any version).
    SetData {
        /// Path.
        path: String,
        /// New data.
        data: Bytes,
        /// Expected version.
        version: Option<i32>,
    },
    /// Fail the transaction unless the node exists with this version (`None`: just exists).
    Check {
        /// Path.
        path: String,
        /// Expected version.
        version: Option<i32>,
    },
}

impl Op {
    /// A create op.
    pub fn create(path: &str, data: &[u8], options: CreateOptions) -> Op {
        Op::Create {
            path: path.to_string(),
            data: Bytes::copy_from_slice(data),
            options,
        }
    }
    /// A delete op.
    pub fn delete(path: &str, version: Option<i32>) -> Op {
        Op::Delete {
            path: path.to_string(),
            version,
        }
    }
    /// A setData op.
    pub fn set_data(path: &str, data: &[u8], version: Option<i32>) -> Op {
        Op::SetData {
            path: path.to_string(),
            data: Bytes::copy_from_slice(data),
            version,
        }
    }
    /// A check op.
    pub fn check(path: &str, version: Option<i32>) -> Op {
        Op::Check {
            path: path.to_string(),
            version,
        }
    }
}

/// The result of one op of a multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// A node was created (path relative to the chroot).
    Create {
        /// The created path, with its sequential suffix.
        path: String,
        /// The new node's stat, when the server sent one.
        stat: Option<Stat>,
    },
    /// A node was deleted.
    Delete,
    /// Data was set.
    SetData(Stat),
    /// A check passed.
    Check,
    /// In a failed transaction: `Ok` for the ops before the failing one (rolled back), the failing op's
    /// code, then `RuntimeInconsistency` for the ops after it.
    Error(ErrorCode),
}

/// One read of a [`crate::Client::multi_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    /// getData.
    GetData(String),
    /// getChildren.
    GetChildren(String),
}

/// The result of one read of a multiRead; each read succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// getData's data and stat.
    Data {
        /// The data.
        data: Bytes,
        /// The stat.
        stat: Stat,
    },
    /// getChildren's children.
    Children(Vec<String>),
    /// The read failed with this code.
    Error(ErrorCode),
}

/// The `-1` of ZooKeeper's version arguments.
pub(crate) fn version(v: Option<i32>) -> i32 {
    v.unwrap_or(-1)
}
