//! Why a replicated request (a write, a `sync` barrier, a membership change) could not be carried out,
//! and what a ZooKeeper client is told then ([`Error::client_answer`], the one place that decides).
//!
//! The other layers keep their own error types: storage has `storage::Error`, the peer transport
//! `transport::link::LinkError`, the peer protocol's answers `transport::wire::PeerError`, start-up
//! `node::StartError`, configuration `config::ConfigError`. This one is for the request path that
//! crosses Raft, the transport and cluster management.
//!
//! Left out: errors of a request the state machine refused (those are ZooKeeper error codes in the
//! applied result, `reply::Outcome`, not failures).

use roster_proto::ErrorCode;

/// Why a replicated request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This node does not lead, and knows this leader (if any).
    #[error("not the leader{}", match .0 { Some(l) => format!(" (leader is node {l})"), None => " (no leader known)".to_string() })]
    NotLeader(Option<u64>),
    /// No leader can be reached now.
    #[error("no reachable leader: {0}")]
    NoLeader(String),
    /// The leader could not confirm its leadership with a quorum.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The leader changed while the request was in flight: its fate is unknown.
    #[error("the leader changed while the request was in flight")]
    LeaderChanged,
    /// This node is shutting down (Raft stopped).
    #[error("shutting down")]
    ShuttingDown,
    /// Not done within its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Another node refused the request, with its reason.
    #[error("refused: {0}")]
    Refused(String),
    /// The link to another node failed, or it answered with an error.
    #[error("peer: {0}")]
    Peer(String),
    /// The TLS handshake with another node failed on a certificate (permanent: retrying with the
    /// same certificates cannot succeed).
    #[error("certificate refused: {0}")]
    Certificate(String),
    /// Raft refused the request for another reason.
    #[error("raft: {0}")]
    Raft(String),
}

/// What a ZooKeeper client is told when its request fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAnswer {
    /// Close the connection (the client sees ConnectionLoss, keeps its session and retries elsewhere),
    /// with the reason for the log.
    Close(String),
    /// Answer this error code and keep the connection.
    Code(ErrorCode),
}

impl Error {
    /// The one mapping from a failed request to what the client is told.
    ///
    /// Every failure of a replicated request closes the connection, as ZooKeeper does when it loses
    /// its leader: the outcome of the request is unknown (it may still commit), so no error code
    /// would be true, and requests queued behind it must not be answered first. The client
    /// reconnects with its session, to this node or another, and reads what happened.
    pub fn client_answer(&self) -> ClientAnswer {
        ClientAnswer::Close(self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_close_the_connection_with_a_reason_that_names_the_cause() {
        let cases = [
            (
                Error::NotLeader(Some(3)),
                "not the leader (leader is node 3)",
            ),
            (Error::NotLeader(None), "not the leader (no leader known)"),
            (Error::LeaderChanged, "the leader changed"),
            (Error::ShuttingDown, "shutting down"),
            (Error::NoQuorum("x".into()), "no quorum: x"),
        ];
        for (e, want) in cases {
            match e.client_answer() {
                ClientAnswer::Close(reason) => assert!(reason.contains(want), "{reason}"),
                other => panic!("{e:?} answered {other:?}"),
            }
        }
    }
}
