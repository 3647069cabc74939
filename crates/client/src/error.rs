//! The client's one error type.
//!
//! ZooKeeper reports a failed request as a negative code in the reply header (`KeeperException.Code`).
//! Most of those codes are about the data ("no such node", "bad version") and reach the caller as
//! [`Error::Code`] carrying the [`ErrorCode`] unchanged. A few codes describe the session or the
//! connection instead, and those get their own variants, because a caller handles them differently:
//!
//! - [`Error::ConnectionLoss`]: the connection dropped while the request was in flight, so its outcome
//!   is unknown. The session may well be alive; the client is already reconnecting.
//! - [`Error::SessionExpired`]: the session is gone for good (the server said so on reconnect, or the
//!   client's own timer ran out). Its ephemerals are deleted and its watches dropped.
//! - [`Error::AuthFailed`]: the server rejected an `auth` packet and closed the connection; the client
//!   is dead, like the Java client in `AUTH_FAILED`.
//! - [`Error::Timeout`]: the per-call timeout ran out. Like connection loss, the outcome is unknown.
//! - [`Error::Closed`]: the client was closed by [`crate::Client::close`].
//! - [`Error::BadArguments`]: rejected locally before anything was sent (an invalid path, a TTL on a mode
//!   that has none).
//!
//! [`Error::code`] maps every variant back to the nearest ZooKeeper code, so code that only speaks
//! ZooKeeper's vocabulary can still switch on one number.

use roster_proto::ErrorCode;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server answered with this ZooKeeper error code (`NoNode`, `NodeExists`, `BadVersion`...).
    #[error("ZooKeeper error {0}")]
    Code(ErrorCode),
    /// The connection was lost before the reply arrived; the request may or may not have been applied.
    #[error("connection lost (ConnectionLoss): the outcome of the request is unknown")]
    ConnectionLoss,
    /// The session has expired: its ephemerals are gone and the client cannot be used any more.
    #[error("session expired (SessionExpired)")]
    SessionExpired,
    /// The per-call timeout elapsed; the request may or may not have been applied.
    #[error("request timed out (OperationTimeout)")]
    Timeout,
    /// The client has been closed.
    #[error("client is closed")]
    Closed,
    /// The server rejected the credentials of an `auth` packet and closed the connection.
    #[error("authentication failed (AuthFailed)")]
    AuthFailed,
    /// The call was rejected locally, before anything was sent.
    #[error("bad arguments: {0}")]
    BadArguments(String),
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error for a non-zero `err` of a reply header or multi result.
    ///
    /// The session-level codes get their own variants; a code ZooKeeper does not define (a newer server)
    /// becomes `SystemError`, the catch-all of `KeeperException.Code`.
    pub fn from_code(code: i32) -> Error {
        match ErrorCode::from_i32(code) {
            Some(ErrorCode::ConnectionLoss) => Error::ConnectionLoss,
            Some(ErrorCode::SessionExpired) => Error::SessionExpired,
            Some(ErrorCode::AuthFailed) => Error::AuthFailed,
            Some(ErrorCode::OperationTimeout) => Error::Timeout,
            Some(ErrorCode::BadArguments) => Error::Code(ErrorCode::BadArguments),
            Some(c) => Error::Code(c),
            None => Error::Code(ErrorCode::SystemError),
        }
    }

    /// The nearest ZooKeeper code. [`Error::Closed`] maps to `SessionExpired`, which is what the Java
    /// client reports for a request made on a closed handle (`ClientCnxn.conLossPacket`).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Code(c) => *c,
            Error::ConnectionLoss => ErrorCode::ConnectionLoss,
            Error::SessionExpired | Error::Closed => ErrorCode::SessionExpired,
            Error::Timeout => ErrorCode::OperationTimeout,
            Error::AuthFailed => ErrorCode::AuthFailed,
            Error::BadArguments(_) => ErrorCode::BadArguments,
        }
    }

    /// Whether the error is about reaching the service (connection loss, timeout) rather than about
    /// the data or a dead session. Such a call may be retried once the client has reconnected.
    pub fn is_connection_problem(&self) -> bool {
        matches!(self, Error::ConnectionLoss | Error::Timeout)
    }

    /// Whether the client can no longer be used (expired, closed, or authentication failed).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Error::SessionExpired | Error::Closed | Error::AuthFailed
        )
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Error {
        Error::from_code(code.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_codes_get_their_own_variants() {
        assert_eq!(Error::from_code(-101), Error::Code(ErrorCode::NoNode));
        assert_eq!(Error::from_code(-4), Error::ConnectionLoss);
        assert_eq!(Error::from_code(-112), Error::SessionExpired);
        assert_eq!(Error::from_code(-115), Error::AuthFailed);
        assert_eq!(Error::from_code(-7), Error::Timeout);
        assert_eq!(Error::from_code(-999), Error::Code(ErrorCode::SystemError));
    }

    #[test]
    fn every_variant_has_a_code() {
        assert_eq!(
            Error::Code(ErrorCode::NodeExists).code(),
            ErrorCode::NodeExists
        );
        assert_eq!(Error::Closed.code(), ErrorCode::SessionExpired);
        assert_eq!(
            Error::BadArguments("x".into()).code(),
            ErrorCode::BadArguments
        );
        assert!(Error::Code(ErrorCode::NoNode)
            .to_string()
            .contains("NoNode (-101)"));
    }
}
