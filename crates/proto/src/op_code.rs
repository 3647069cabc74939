//! Opcodes (`ZooDefs.OpCode`), special xids (`ClientCnxn`), watch event types, keeper states,
//! watcher types, create modes and permissions: the protocol's enumerations.

use crate::jute::DecodeError;
use serde::{Deserialize, Serialize};

macro_rules! int_enum {
    ($(#[$em:meta])* $ename:ident, $what:expr, { $( $(#[$m:meta])* $name:ident = $v:expr, )* }) => {
        $(#[$em])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(i32)]
        pub enum $ename { $( $(#[$m])* $name = $v, )* }

        impl $ename {
            /// The value for a wire integer, or [`DecodeError::Unknown`].
            pub fn from_i32(v: i32) -> Result<Self, DecodeError> {
                match v { $( $v => Ok($ename::$name), )* _ => Err(DecodeError::Unknown { what: $what, value: v }) }
            }
            /// The wire integer.
            pub fn code(self) -> i32 { self as i32 }
        }
    };
}

int_enum!(
    /// A request type (`ZooDefs.OpCode`).
    OpCode, "opcode", {
    /// Watch notification (server only, sent with xid -1).
    Notification = 0,
    /// create
    Create = 1,
    /// delete
    Delete = 2,
    /// exists
    Exists = 3,
    /// getData
    GetData = 4,
    /// setData
    SetData = 5,
    /// getACL
    GetAcl = 6,
    /// setACL
    SetAcl = 7,
    /// getChildren
    GetChildren = 8,
    /// sync
    Sync = 9,
    /// ping
    Ping = 11,
    /// getChildren2
    GetChildren2 = 12,
    /// check (version)
    Check = 13,
    /// multi
    Multi = 14,
    /// create2
    Create2 = 15,
    /// reconfig
    Reconfig = 16,
    /// checkWatches
    CheckWatches = 17,
    /// removeWatches
    RemoveWatches = 18,
    /// createContainer
    CreateContainer = 19,
    /// deleteContainer (internal)
    DeleteContainer = 20,
    /// createTTL
    CreateTtl = 21,
    /// multiRead
    MultiRead = 22,
    /// auth
    Auth = 100,
    /// setWatches
    SetWatches = 101,
    /// sasl
    Sasl = 102,
    /// getEphemerals
    GetEphemerals = 103,
    /// getAllChildrenNumber
    GetAllChildrenNumber = 104,
    /// setWatches2
    SetWatches2 = 105,
    /// addWatch
    AddWatch = 106,
    /// whoAmI
    WhoAmI = 107,
    /// createSession (internal)
    CreateSession = -10,
    /// closeSession
    CloseSession = -11,
    /// error result inside a multi
    Error = -1,
});

int_enum!(
    /// `Watcher.Event.EventType`.
    EventType, "event type", {
    /// A state change only.
    None = -1,
    /// Node created.
    NodeCreated = 1,
    /// Node deleted.
    NodeDeleted = 2,
    /// Node data changed.
    NodeDataChanged = 3,
    /// Children changed.
    NodeChildrenChanged = 4,
    /// A data watch was removed.
    DataWatchRemoved = 5,
    /// A child watch was removed.
    ChildWatchRemoved = 6,
    /// A persistent watch was removed.
    PersistentWatchRemoved = 7,
});

int_enum!(
    /// `Watcher.Event.KeeperState`.
    KeeperState, "keeper state", {
    /// Unknown.
    Unknown = -1,
    /// Disconnected.
    Disconnected = 0,
    /// Deprecated.
    NoSyncConnected = 1,
    /// Connected.
    SyncConnected = 3,
    /// Authentication failed.
    AuthFailed = 4,
    /// Connected to a read-only server.
    ConnectedReadOnly = 5,
    /// SASL authenticated.
    SaslAuthenticated = 6,
    /// Session expired.
    Expired = -112,
    /// Closed by the client.
    Closed = 7,
});

int_enum!(
    /// `Watcher.WatcherType`, used by checkWatches and removeWatches.
    WatcherType, "watcher type", {
    /// Child watches.
    Children = 1,
    /// Data (and exist) watches.
    Data = 2,
    /// Any watch.
    Any = 3,
    /// Persistent watches.
    Persistent = 4,
    /// Persistent recursive watches.
    PersistentRecursive = 5,
});

int_enum!(
    /// `ZooDefs.AddWatchModes`.
    AddWatchMode, "add-watch mode", {
    /// Persistent: fires for the node itself (and its children list), does not disarm.
    Persistent = 0,
    /// Persistent recursive: fires for every node under the path.
    PersistentRecursive = 1,
});

int_enum!(
    /// `CreateMode`: the `flags` of a create request.
    CreateMode, "create mode", {
    /// Persistent.
    Persistent = 0,
    /// Ephemeral: deleted when the session ends.
    Ephemeral = 1,
    /// Persistent with a sequential suffix.
    PersistentSequential = 2,
    /// Ephemeral with a sequential suffix.
    EphemeralSequential = 3,
    /// Container: deleted once its last child is gone.
    Container = 4,
    /// Persistent, deleted after a TTL without changes and children.
    PersistentWithTtl = 5,
    /// Persistent sequential with a TTL.
    PersistentSequentialWithTtl = 6,
});

impl OpCode {
    /// Whether an op of this type may be a sub-op of a write `multi` (the ops ZooKeeper's
    /// `MultiOperationRecord` decodes: creates, delete, setData, check).
    pub fn allowed_in_multi(self) -> bool {
        matches!(
            self,
            OpCode::Create
                | OpCode::Create2
                | OpCode::CreateTtl
                | OpCode::CreateContainer
                | OpCode::Delete
                | OpCode::SetData
                | OpCode::Check
        )
    }

    /// Whether an op of this type may be a sub-op of a `multiRead` (getChildren, getData).
    pub fn allowed_in_multi_read(self) -> bool {
        matches!(self, OpCode::GetChildren | OpCode::GetData)
    }

    /// The opcode of a request header: any known opcode but notification (0) and error (-1), which
    /// only appear in replies. ZooKeeper's `Request.isValid` refuses those two like an unknown
    /// opcode: it answers `Unimplemented` and closes the connection.
    pub fn of_request(v: i32) -> Result<OpCode, DecodeError> {
        match OpCode::from_i32(v)? {
            OpCode::Notification | OpCode::Error => Err(DecodeError::Unknown {
                what: "request opcode",
                value: v,
            }),
            op => Ok(op),
        }
    }
}

impl CreateMode {
    /// Whether the node gets a sequential suffix.
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }
    /// Whether the node belongs to a session.
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }
    /// Whether the node is a container.
    pub fn is_container(self) -> bool {
        self == CreateMode::Container
    }
    /// Whether the node has a TTL.
    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }
}

/// Special xids (`ClientCnxn`).
pub mod xid {
    /// Watch notification (server to client).
    pub const NOTIFICATION: i32 = -1;
    /// Ping, both directions.
    pub const PING: i32 = -2;
    /// Auth packet.
    pub const AUTH: i32 = -4;
    /// SetWatches after a reconnect.
    pub const SET_WATCHES: i32 = -8;
}

/// ACL permission bits (`ZooDefs.Perms`).
pub mod perms {
    /// Read data and list children.
    pub const READ: i32 = 1;
    /// Set data.
    pub const WRITE: i32 = 2;
    /// Create children.
    pub const CREATE: i32 = 4;
    /// Delete children.
    pub const DELETE: i32 = 8;
    /// Set ACLs.
    pub const ADMIN: i32 = 16;
    /// Everything.
    pub const ALL: i32 = 31;
}
