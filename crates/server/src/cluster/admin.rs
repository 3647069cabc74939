//! Calls made to a node's peer port by a tool (`roster cluster ...`) or by a node that is joining:
//! ask the cluster id, ask to be added, ask for the status, ask to remove a node or to leave.
//!
//! Each call opens one admin connection (over TLS when given a [`PeerTls`]: a node's own, or an
//! administrator's certificate for the tool), sends one request and closes. Left out: retries
//! (callers decide).

use crate::error::Error;
use crate::transport::link::{Link, LinkError};
use crate::transport::tls::PeerTls;
use crate::transport::wire::PeerError;
use crate::transport::wire::{Hello, LinkKind, PeerRequest, PeerResponse, StatusInfo};
use std::time::Duration;

/// Sends one admin request to `addr` and waits at most `ttl` for the answer.
pub async fn call(
    addr: &str,
    cluster_id: Option<String>,
    from: u64,
    req: PeerRequest,
    ttl: Duration,
    tls: Option<&PeerTls>,
) -> Result<PeerResponse, Error> {
    let hello = Hello {
        cluster_id,
        from,
        to: None,
        kind: LinkKind::Admin,
    };
    let link = Link::connect(addr, hello, Duration::from_secs(5), tls)
        .await
        .map_err(|e| match (e, tls) {
            (LinkError::Unreachable(m), None) => Error::Peer(format!(
                "{addr}: {m} (if the cluster uses peer TLS, authenticate: roster cluster --tls-dir DIR, from `roster tls init`)"
            )),
            (LinkError::Certificate(m), _) => Error::Certificate(format!(
                "{m} (peers must hold certificates from the same cluster CA, each for the address it announces: docs/security.md)"
            )),
            (e, _) => Error::Peer(format!("{addr}: {e}")),
        })?;
    match link
        .call(req, ttl)
        .await
        .map_err(|e| Error::Peer(format!("{addr}: {e}")))?
    {
        PeerResponse::Err(PeerError::NotLeader(l)) => Err(Error::NotLeader(l)),
        PeerResponse::Err(PeerError::Refused(m)) => Err(Error::Refused(format!("{addr}: {m}"))),
        PeerResponse::Err(e) => Err(Error::Peer(format!("{addr}: {e}"))),
        r => Ok(r),
    }
}

/// The cluster id of the node at `addr`.
pub async fn cluster_id(addr: &str, tls: Option<&PeerTls>) -> Result<String, Error> {
    match call(
        addr,
        None,
        0,
        PeerRequest::ClusterInfo,
        Duration::from_secs(5),
        tls,
    )
    .await?
    {
        PeerResponse::ClusterInfo { cluster_id } => Ok(cluster_id),
        other => Err(unexpected(addr, other)),
    }
}

/// Asks the node at `addr` (any member; it forwards to the leader) to add node `node_id` reachable at
/// `peer_addr`. Returns whether it became a voter, and the leader's committed index.
pub async fn join(
    addr: &str,
    cluster_id: &str,
    node_id: u64,
    peer_addr: &str,
    tls: Option<&PeerTls>,
) -> Result<(bool, u64), Error> {
    let req = PeerRequest::Join {
        node_id,
        peer_addr: peer_addr.to_string(),
    };
    match call(
        addr,
        Some(cluster_id.to_string()),
        node_id,
        req,
        Duration::from_secs(300),
        tls,
    )
    .await?
    {
        PeerResponse::Joined { voter, committed } => Ok((voter, committed)),
        other => Err(unexpected(addr, other)),
    }
}

/// Asks the cluster (through the node at `addr`, a member of `cluster_id`) for a joining node's id.
pub async fn allocate_id(
    addr: &str,
    cluster_id: &str,
    tls: Option<&PeerTls>,
) -> Result<u64, Error> {
    match call(
        addr,
        Some(cluster_id.to_string()),
        0,
        PeerRequest::AllocateId,
        Duration::from_secs(30),
        tls,
    )
    .await?
    {
        PeerResponse::Allocated(id) => Ok(id),
        other => Err(unexpected(addr, other)),
    }
}

/// The status as the node at `addr` sees it.
pub async fn status(addr: &str, tls: Option<&PeerTls>) -> Result<StatusInfo, Error> {
    match call(
        addr,
        None,
        0,
        PeerRequest::Status,
        Duration::from_secs(5),
        tls,
    )
    .await?
    {
        PeerResponse::Status(s) => Ok(s),
        other => Err(unexpected(addr, other)),
    }
}

/// Asks the cluster (through the node at `addr`) to remove node `node_id`.
pub async fn remove(addr: &str, node_id: u64, tls: Option<&PeerTls>) -> Result<(), Error> {
    match call(
        addr,
        None,
        0,
        PeerRequest::Remove { node_id },
        Duration::from_secs(120),
        tls,
    )
    .await?
    {
        PeerResponse::Ack => Ok(()),
        other => Err(unexpected(addr, other)),
    }
}

/// Asks the node at `addr` to leave the cluster.
pub async fn leave(addr: &str, tls: Option<&PeerTls>) -> Result<(), Error> {
    match call(
        addr,
        None,
        0,
        PeerRequest::Leave,
        Duration::from_secs(120),
        tls,
    )
    .await?
    {
        PeerResponse::Ack => Ok(()),
        other => Err(unexpected(addr, other)),
    }
}

fn unexpected(addr: &str, answer: PeerResponse) -> Error {
    Error::Peer(format!("{addr}: unexpected answer {answer:?}"))
}
