//! Every record of ZooKeeper's client protocol (`zookeeper.jute`), field for field in wire order, with
//! jute field names in snake_case. Records whose bodies depend on context (the handshake's optional
//! trailing `readOnly` byte, multi) are in `connect.rs` and `request.rs`/`response.rs`.

use crate::jute_record;
use bytes::Bytes;

jute_record! {
    /// An identity: scheme (`world`, `auth`, `digest`, `ip`, `super`) and id.
    pub struct Id { pub scheme: String, pub id: String }
}
jute_record! {
    /// One ACL entry: permission bits for an identity.
    pub struct Acl { pub perms: i32, pub id: Id }
}
jute_record! {
    /// Node metadata, as returned to clients.
    pub struct Stat {
        /// zxid of the create.
        pub czxid: i64,
        /// zxid of the last data change.
        pub mzxid: i64,
        /// Create time, ms since the epoch.
        pub ctime: i64,
        /// Last data change time, ms since the epoch.
        pub mtime: i64,
        /// Number of data changes.
        pub version: i32,
        /// Number of child changes.
        pub cversion: i32,
        /// Number of ACL changes.
        pub aversion: i32,
        /// Owning session of an ephemeral, or the container/TTL marker, or 0.
        pub ephemeral_owner: i64,
        /// Length of the data.
        pub data_length: i32,
        /// Number of children.
        pub num_children: i32,
        /// zxid of the last child change.
        pub pzxid: i64,
    }
}
jute_record! {
    /// Precedes every request after the handshake.
    pub struct RequestHeader { pub xid: i32, pub op_type: i32 }
}
jute_record! {
    /// Precedes every reply after the handshake.
    pub struct ReplyHeader { pub xid: i32, pub zxid: i64, pub err: i32 }
}
jute_record! {
    /// Precedes every op and result inside a multi.
    pub struct MultiHeader { pub op_type: i32, pub done: bool, pub err: i32 }
}
jute_record! {
    /// Adds an identity to the session (xid -4).
    pub struct AuthPacket { pub auth_type: i32, pub scheme: String, pub auth: Bytes }
}
jute_record! {
    /// Re-registers watches after a reconnect (xid -8).
    pub struct SetWatches {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
    }
}
jute_record! {
    /// SetWatches with persistent watches (3.6+).
    pub struct SetWatches2 {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
        pub persistent_watches: Vec<String>,
        pub persistent_recursive_watches: Vec<String>,
    }
}
jute_record! {
    /// getData.
    pub struct GetDataRequest { pub path: String, pub watch: bool }
}
jute_record! {
    /// setData.
    pub struct SetDataRequest { pub path: String, pub data: Bytes, pub version: i32 }
}
jute_record! {
    /// reconfig.
    pub struct ReconfigRequest {
        pub joining_servers: String,
        pub leaving_servers: String,
        pub new_members: String,
        pub cur_config_id: i64,
    }
}
jute_record! {
    /// setData reply (also standalone check's reply).
    pub struct SetDataResponse { pub stat: Stat }
}
jute_record! {
    /// sasl request.
    pub struct GetSaslRequest { pub token: Bytes }
}
jute_record! {
    /// sasl reply.
    pub struct SetSaslResponse { pub token: Bytes }
}
jute_record! {
    /// create, create2, createContainer.
    pub struct CreateRequest { pub path: String, pub data: Bytes, pub acl: Vec<Acl>, pub flags: i32 }
}
jute_record! {
    /// createTTL.
    pub struct CreateTtlRequest { pub path: String, pub data: Bytes, pub acl: Vec<Acl>, pub flags: i32, pub ttl: i64 }
}
jute_record! {
    /// delete.
    pub struct DeleteRequest { pub path: String, pub version: i32 }
}
jute_record! {
    /// getChildren.
    pub struct GetChildrenRequest { pub path: String, pub watch: bool }
}
jute_record! {
    /// getAllChildrenNumber.
    pub struct GetAllChildrenNumberRequest { pub path: String }
}
jute_record! {
    /// getChildren2.
    pub struct GetChildren2Request { pub path: String, pub watch: bool }
}
jute_record! {
    /// check (version).
    pub struct CheckVersionRequest { pub path: String, pub version: i32 }
}
jute_record! {
    /// sync.
    pub struct SyncRequest { pub path: String }
}
jute_record! {
    /// sync reply.
    pub struct SyncResponse { pub path: String }
}
jute_record! {
    /// getACL.
    pub struct GetAclRequest { pub path: String }
}
jute_record! {
    /// setACL.
    pub struct SetAclRequest { pub path: String, pub acl: Vec<Acl>, pub version: i32 }
}
jute_record! {
    /// setACL reply.
    pub struct SetAclResponse { pub stat: Stat }
}
jute_record! {
    /// addWatch.
    pub struct AddWatchRequest { pub path: String, pub mode: i32 }
}
jute_record! {
    /// A watch notification (sent with xid -1).
    pub struct WatcherEvent { pub event_type: i32, pub state: i32, pub path: String }
}
jute_record! {
    /// An error result inside a multi; also addWatch's reply.
    pub struct ErrorResponse { pub err: i32 }
}
jute_record! {
    /// create reply.
    pub struct CreateResponse { pub path: String }
}
jute_record! {
    /// create2/createContainer/createTTL reply.
    pub struct Create2Response { pub path: String, pub stat: Stat }
}
jute_record! {
    /// exists.
    pub struct ExistsRequest { pub path: String, pub watch: bool }
}
jute_record! {
    /// exists reply.
    pub struct ExistsResponse { pub stat: Stat }
}
jute_record! {
    /// getData reply.
    pub struct GetDataResponse { pub data: Bytes, pub stat: Stat }
}
jute_record! {
    /// getChildren reply.
    pub struct GetChildrenResponse { pub children: Vec<String> }
}
jute_record! {
    /// getAllChildrenNumber reply.
    pub struct GetAllChildrenNumberResponse { pub total_number: i32 }
}
jute_record! {
    /// getChildren2 reply.
    pub struct GetChildren2Response { pub children: Vec<String>, pub stat: Stat }
}
jute_record! {
    /// getACL reply.
    pub struct GetAclResponse { pub acl: Vec<Acl>, pub stat: Stat }
}
jute_record! {
    /// checkWatches.
    pub struct CheckWatchesRequest { pub path: String, pub watcher_type: i32 }
}
jute_record! {
    /// removeWatches.
    pub struct RemoveWatchesRequest { pub path: String, pub watcher_type: i32 }
}
jute_record! {
    /// getEphemerals.
    pub struct GetEphemeralsRequest { pub prefix_path: String }
}
jute_record! {
    /// getEphemerals reply.
    pub struct GetEphemeralsResponse { pub ephemerals: Vec<String> }
}
jute_record! {
    /// One identity of the session, for whoAmI.
    pub struct ClientInfo { pub auth_scheme: String, pub user: String }
}
jute_record! {
    /// whoAmI reply.
    pub struct WhoAmIResponse { pub client_info: Vec<ClientInfo> }
}

impl Id {
    /// Builds an id.
    pub fn new(scheme: &str, id: &str) -> Id {
        Id {
            scheme: scheme.to_string(),
            id: id.to_string(),
        }
    }
}

impl Acl {
    /// `world:anyone` with all permissions (`ZooDefs.Ids.OPEN_ACL_UNSAFE`).
    pub fn open_unsafe() -> Vec<Acl> {
        vec![Acl {
            perms: crate::perms::ALL,
            id: Id::new("world", "anyone"),
        }]
    }
    /// `world:anyone` read-only (`ZooDefs.Ids.READ_ACL_UNSAFE`).
    pub fn read_unsafe() -> Vec<Acl> {
        vec![Acl {
            perms: crate::perms::READ,
            id: Id::new("world", "anyone"),
        }]
    }
    /// `auth:` with all permissions (`ZooDefs.Ids.CREATOR_ALL_ACL`).
    pub fn creator_all() -> Vec<Acl> {
        vec![Acl {
            perms: crate::perms::ALL,
            id: Id::new("auth", ""),
        }]
    }
}
