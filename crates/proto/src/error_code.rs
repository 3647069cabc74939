//! ZooKeeper's error codes (`KeeperException.Code`): the single list used by every Roster layer that
//! talks to clients. Values are the wire values.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($( $(#[$m:meta])* $name:ident = $v:expr, )*) => {
        /// A ZooKeeper error code as carried in `ReplyHeader.err` and in multi results.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(i32)]
        pub enum ErrorCode { $( $(#[$m])* $name = $v, )* }

        impl ErrorCode {
            /// The code for a wire value, if ZooKeeper defines it.
            pub fn from_i32(v: i32) -> Option<ErrorCode> {
                match v { $( $v => Some(ErrorCode::$name), )* _ => None }
            }
            /// ZooKeeper's name for the code, as in `KeeperException.Code`.
            pub fn name(self) -> &'static str {
                match self { $( ErrorCode::$name => stringify!($name), )* }
            }
        }
    };
}

codes! {
    /// Success.
    Ok = 0,
    /// A system or server-side error.
    SystemError = -1,
    /// Operations after a failed one in a multi.
    RuntimeInconsistency = -2,
    /// Data inconsistency.
    DataInconsistency = -3,
    /// Client-side: connection lost. A server never sends it.
    ConnectionLoss = -4,
    /// Error while marshalling or unmarshalling data.
    MarshallingError = -5,
    /// Operation is not implemented.
    Unimplemented = -6,
    /// Client-side: operation timeout.
    OperationTimeout = -7,
    /// Invalid arguments.
    BadArguments = -8,
    /// Unknown session (internal).
    UnknownSession = -12,
    /// No quorum of the new config is connected.
    NewConfigNoQuorum = -13,
    /// Another reconfiguration is in progress.
    ReconfigInProgress = -14,
    /// Base of the API errors.
    ApiError = -100,
    /// Node does not exist.
    NoNode = -101,
    /// Not authenticated.
    NoAuth = -102,
    /// Version conflict.
    BadVersion = -103,
    /// Ephemeral nodes may not have children.
    NoChildrenForEphemerals = -108,
    /// The node already exists.
    NodeExists = -110,
    /// The node has children.
    NotEmpty = -111,
    /// The session has been expired by the server.
    SessionExpired = -112,
    /// Invalid callback.
    InvalidCallback = -113,
    /// Invalid ACL.
    InvalidAcl = -114,
    /// Client authentication failed.
    AuthFailed = -115,
    /// Session moved to another server.
    SessionMoved = -118,
    /// State-changing request passed to a read-only server.
    NotReadOnly = -119,
    /// Attempt to create an ephemeral node on a local session.
    EphemeralOnLocalSession = -120,
    /// No watcher for removeWatches/checkWatches.
    NoWatcher = -121,
    /// Request not completed within the max allowed time.
    RequestTimeout = -122,
    /// Reconfig is disabled.
    ReconfigDisabled = -123,
    /// The session was closed and requires SASL authentication.
    SessionClosedRequireSaslAuth = -124,
    /// Quota exceeded.
    QuotaExceeded = -125,
    /// The operation was throttled.
    ThrottledOp = -127,
}

impl ErrorCode {
    /// The wire value.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl std::error::Error for ErrorCode {}
