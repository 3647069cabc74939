//! Every record of ZooKeeper's client protocol (`zookeeper.jute`), field for field in wire order, with
//! jute field names in snake_case. Records whose bodies depend on context (the handshake's optional
//! trailing `readOnly` byte, multi) are in `connect.rs` and `request.rs`/`response.rs`.

use crate::jute_record;
use bytes::Bytes;

jute_record! {
    /// An identity: scheme (`world`, `auth`, `digest`, `ip`, `super`) and id.
    pub struct Id {
        /// The authentication scheme: `world`, `auth`, `digest`, `ip` or `super`.
        pub scheme: String,
        /// The identity within the scheme (`anyone`, `user:hash`, `addr/bits`, ...).
        pub id: String,
    }
}
jute_record! {
    /// One ACL entry: permission bits for an identity.
    pub struct Acl {
        /// Granted permission bits (see [`crate::perms`]).
        pub perms: i32,
        /// The identity they are granted to.
        pub id: Id,
    }
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
    pub struct RequestHeader {
        /// The client's request id, echoed in the reply (or a special xid, see [`crate::xid`]).
        pub xid: i32,
        /// The opcode ([`crate::OpCode`]).
        pub op_type: i32,
    }
}
jute_record! {
    /// Precedes every reply after the handshake.
    pub struct ReplyHeader {
        /// The xid of the request answered (or a special xid for events and pings).
        pub xid: i32,
        /// The last zxid the server has applied.
        pub zxid: i64,
        /// The error code ([`crate::ErrorCode`]); 0 for success.
        pub err: i32,
    }
}
jute_record! {
    /// Precedes every op and result inside a multi.
    pub struct MultiHeader {
        /// Opcode of the op or result that follows (-1 for an error result).
        pub op_type: i32,
        /// True on the terminating header, after the last op.
        pub done: bool,
        /// Error code (-1 in requests; the op's error in results).
        pub err: i32,
    }
}
jute_record! {
    /// Adds an identity to the session (xid -4).
    pub struct AuthPacket {
        /// Always 0.
        pub auth_type: i32,
        /// The scheme, for example `digest`.
        pub scheme: String,
        /// The credentials, for example `user:password`.
        pub auth: Bytes,
    }
}
jute_record! {
    /// Re-registers watches after a reconnect (xid -8).
    pub struct SetWatches {
        /// The last zxid the client saw; watches on nodes changed after it fire at once.
        pub relative_zxid: i64,
        /// Paths with a data watch.
        pub data_watches: Vec<String>,
        /// Paths with an exists watch on a missing node.
        pub exist_watches: Vec<String>,
        /// Paths with a child watch.
        pub child_watches: Vec<String>,
    }
}
jute_record! {
    /// SetWatches with persistent watches (3.6+).
    pub struct SetWatches2 {
        /// The last zxid the client saw; watches on nodes changed after it fire at once.
        pub relative_zxid: i64,
        /// Paths with a data watch.
        pub data_watches: Vec<String>,
        /// Paths with an exists watch on a missing node.
        pub exist_watches: Vec<String>,
        /// Paths with a child watch.
        pub child_watches: Vec<String>,
        /// Paths with a persistent watch.
        pub persistent_watches: Vec<String>,
        /// Paths with a persistent recursive watch.
        pub persistent_recursive_watches: Vec<String>,
    }
}
jute_record! {
    /// getData.
    pub struct GetDataRequest {
        /// The node's path.
        pub path: String,
        /// Whether to leave a watch on the node.
        pub watch: bool,
    }
}
jute_record! {
    /// setData.
    pub struct SetDataRequest {
        /// The node's path.
        pub path: String,
        /// The node's data; `None` is null (length -1 on the wire), kept apart from empty.
        #[serde(with = "crate::data::serde_compat")]
        pub data: Option<Bytes>,
        /// The expected version; -1 matches any.
        pub version: i32,
    }
}
jute_record! {
    /// reconfig.
    pub struct ReconfigRequest {
        /// Servers to add (incremental reconfig), comma separated.
        pub joining_servers: String,
        /// Server ids to remove (incremental reconfig), comma separated.
        pub leaving_servers: String,
        /// The complete new membership (bulk reconfig).
        pub new_members: String,
        /// Apply only if the current config has this version; -1 for any.
        pub cur_config_id: i64,
    }
}
jute_record! {
    /// setData reply (also standalone check's reply).
    pub struct SetDataResponse {
        /// The node's metadata.
        pub stat: Stat,
    }
}
jute_record! {
    /// sasl request.
    pub struct GetSaslRequest {
        /// The opaque SASL token.
        pub token: Bytes,
    }
}
jute_record! {
    /// sasl reply.
    pub struct SetSaslResponse {
        /// The opaque SASL token.
        pub token: Bytes,
    }
}
jute_record! {
    /// create, create2, createContainer.
    pub struct CreateRequest {
        /// The node's path.
        pub path: String,
        /// The node's data; `None` is null (length -1 on the wire), kept apart from empty.
        #[serde(with = "crate::data::serde_compat")]
        pub data: Option<Bytes>,
        /// The ACL list.
        pub acl: Vec<Acl>,
        /// The create mode ([`crate::CreateMode`]).
        pub flags: i32,
    }
}
jute_record! {
    /// createTTL.
    pub struct CreateTtlRequest {
        /// The node's path.
        pub path: String,
        /// The node's data; `None` is null (length -1 on the wire), kept apart from empty.
        #[serde(with = "crate::data::serde_compat")]
        pub data: Option<Bytes>,
        /// The ACL list.
        pub acl: Vec<Acl>,
        /// The create mode ([`crate::CreateMode`]).
        pub flags: i32,
        /// Time to live of the node once it has no children, ms.
        pub ttl: i64,
    }
}
jute_record! {
    /// delete.
    pub struct DeleteRequest {
        /// The node's path.
        pub path: String,
        /// The expected version; -1 matches any.
        pub version: i32,
    }
}
jute_record! {
    /// getChildren.
    pub struct GetChildrenRequest {
        /// The node's path.
        pub path: String,
        /// Whether to leave a watch on the node.
        pub watch: bool,
    }
}
jute_record! {
    /// getAllChildrenNumber.
    pub struct GetAllChildrenNumberRequest {
        /// The node's path.
        pub path: String,
    }
}
jute_record! {
    /// getChildren2.
    pub struct GetChildren2Request {
        /// The node's path.
        pub path: String,
        /// Whether to leave a watch on the node.
        pub watch: bool,
    }
}
jute_record! {
    /// check (version).
    pub struct CheckVersionRequest {
        /// The node's path.
        pub path: String,
        /// The expected version; -1 matches any.
        pub version: i32,
    }
}
jute_record! {
    /// sync.
    pub struct SyncRequest {
        /// The path to sync (the server syncs everything).
        pub path: String,
    }
}
jute_record! {
    /// sync reply.
    pub struct SyncResponse {
        /// The path named in the request.
        pub path: String,
    }
}
jute_record! {
    /// getACL.
    pub struct GetAclRequest {
        /// The node's path.
        pub path: String,
    }
}
jute_record! {
    /// setACL.
    pub struct SetAclRequest {
        /// The node's path.
        pub path: String,
        /// The ACL list.
        pub acl: Vec<Acl>,
        /// The expected version; -1 matches any.
        pub version: i32,
    }
}
jute_record! {
    /// setACL reply.
    pub struct SetAclResponse {
        /// The node's metadata.
        pub stat: Stat,
    }
}
jute_record! {
    /// addWatch.
    pub struct AddWatchRequest {
        /// The node's path.
        pub path: String,
        /// Persistent or persistent recursive ([`crate::AddWatchMode`]).
        pub mode: i32,
    }
}
jute_record! {
    /// A watch notification (sent with xid -1).
    pub struct WatcherEvent {
        /// What happened ([`crate::EventType`]).
        pub event_type: i32,
        /// The session state ([`crate::KeeperState`]).
        pub state: i32,
        /// The node concerned; empty for session events.
        pub path: String,
    }
}
jute_record! {
    /// An error result inside a multi; also addWatch's reply.
    pub struct ErrorResponse {
        /// The error code ([`crate::ErrorCode`]).
        pub err: i32,
    }
}
jute_record! {
    /// create reply.
    pub struct CreateResponse {
        /// The created node's path (with its sequence suffix, if any).
        pub path: String,
    }
}
jute_record! {
    /// create2/createContainer/createTTL reply.
    pub struct Create2Response {
        /// The created node's path (with its sequence suffix, if any).
        pub path: String,
        /// The node's metadata.
        pub stat: Stat,
    }
}
jute_record! {
    /// exists.
    pub struct ExistsRequest {
        /// The node's path.
        pub path: String,
        /// Whether to leave a watch on the node.
        pub watch: bool,
    }
}
jute_record! {
    /// exists reply.
    pub struct ExistsResponse {
        /// The node's metadata.
        pub stat: Stat,
    }
}
jute_record! {
    /// getData reply.
    pub struct GetDataResponse {
        /// The node's data; `None` is null (length -1 on the wire), kept apart from empty.
        pub data: Option<Bytes>,
        /// The node's metadata.
        pub stat: Stat,
    }
}
jute_record! {
    /// getChildren reply.
    pub struct GetChildrenResponse {
        /// The children's names (not full paths).
        pub children: Vec<String>,
    }
}
jute_record! {
    /// getAllChildrenNumber reply.
    pub struct GetAllChildrenNumberResponse {
        /// Number of descendants of the node.
        pub total_number: i32,
    }
}
jute_record! {
    /// getChildren2 reply.
    pub struct GetChildren2Response {
        /// The children's names (not full paths).
        pub children: Vec<String>,
        /// The node's metadata.
        pub stat: Stat,
    }
}
jute_record! {
    /// getACL reply.
    pub struct GetAclResponse {
        /// The ACL list.
        pub acl: Vec<Acl>,
        /// The node's metadata.
        pub stat: Stat,
    }
}
jute_record! {
    /// checkWatches.
    pub struct CheckWatchesRequest {
        /// The node's path.
        pub path: String,
        /// Which watches ([`crate::WatcherType`]).
        pub watcher_type: i32,
    }
}
jute_record! {
    /// removeWatches.
    pub struct RemoveWatchesRequest {
        /// The node's path.
        pub path: String,
        /// Which watches ([`crate::WatcherType`]).
        pub watcher_type: i32,
    }
}
jute_record! {
    /// getEphemerals.
    pub struct GetEphemeralsRequest {
        /// Only ephemerals whose path starts with this.
        pub prefix_path: String,
    }
}
jute_record! {
    /// getEphemerals reply.
    pub struct GetEphemeralsResponse {
        /// Paths of the session's ephemeral nodes.
        pub ephemerals: Vec<String>,
    }
}
jute_record! {
    /// One identity of the session, for whoAmI.
    pub struct ClientInfo {
        /// The identity's scheme.
        pub auth_scheme: String,
        /// The identity (for `digest`, the user name).
        pub user: String,
    }
}
jute_record! {
    /// whoAmI reply.
    pub struct WhoAmIResponse {
        /// The session's identities.
        pub client_info: Vec<ClientInfo>,
    }
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
