//! The peer protocol's frames and messages.
//!
//! A frame is a big-endian `u32` length, then a `u8` format version (`crate::format`), then one
//! postcard-encoded [`PeerMsg`]; the length counts the version byte and the body. postcard is not
//! self-describing, so a frame of a version this build does not read is refused rather than guessed
//! at, with one exception that makes versions negotiable: the hello and its two answers (the first
//! three variants of [`PeerMsg`]) keep their shape in every version, so they are read at any version
//! from `format::BASE` up.
//!
//! Every connection opens with a [`Hello`] from the dialer, in a frame of the dialer's newest version
//! (`format::CURRENT`), answered by `HelloOk` or `HelloErr` (wrong cluster id, wrong expected node id,
//! a version the cluster no longer speaks) in a frame of the negotiated version
//! (`format::negotiate`: the lower of the two); every later frame on the connection, both ways, is of
//! that version. After it, the dialer sends `Request`s tagged with an id and the
//! listener answers `Response`s with the same id, in any order (request ids multiplex one connection).
//!
//! Version 2 carries Raft RPCs as opaque [`Blob`]s encoded by the Raft layer, so that this layer
//! does not depend on openraft's types; version 1 (Raft messages inline) is refused.
//!
//! Left out: compression. Authentication and encryption are below the frames (`super::tls`).

use crate::reply::WriteReply;
use roster_state::Txn;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The newest frame format version this build speaks (`format::CURRENT`).
pub const FORMAT_VERSION: u8 = crate::format::CURRENT;
/// Largest peer frame accepted, bytes (snapshot chunks and append batches stay far below it).
pub const MAX_FRAME: usize = 64 << 20;

/// What a connection is for; informational (logged), each kind gets its own connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    /// Log replication, votes.
    Raft,
    /// Heartbeats only, so replication bursts never delay them.
    Heartbeat,
    /// Snapshot transfer.
    Snapshot,
    /// A follower's ordered stream of client writes, sync barriers and session touches to the leader.
    Forward,
    /// Administration: join, remove, status, cluster id discovery.
    Admin,
}

/// The first frame of every connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The dialer's cluster id; `None` only for admin links of a node or tool that has none yet.
    pub cluster_id: Option<String>,
    /// The dialer's node id (0 for tools).
    pub from: u64,
    /// The node id the dialer expects to reach, if it knows it.
    pub to: Option<u64>,
    /// What the connection is for.
    pub kind: LinkKind,
}

/// One member as a status report shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub node_id: u64,
    /// Peer address (from the Raft membership).
    pub peer_addr: String,
    /// Whether it votes.
    pub voter: bool,
}

/// One node's view of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Cluster id.
    pub cluster_id: String,
    /// The answering node.
    pub node_id: u64,
    /// Its client address.
    pub client_addr: String,
    /// Its Raft state (Leader, Follower, Learner, Candidate).
    pub state: String,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Last applied log index (zxid).
    pub applied: u64,
    /// Whether it serves clients right now.
    pub serving: bool,
    /// The membership it knows.
    pub members: Vec<MemberInfo>,
}

/// A request from the dialer.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A Raft RPC (replication, heartbeat, vote, snapshot piece), encoded by the Raft layer
    /// (`crate::raft::rpc`); the transport does not look inside. The Raft requests of one connection
    /// are handed to the Raft layer in arrival order.
    Raft(Blob),
    /// A client write forwarded by a follower; proposed in arrival order.
    Write(Txn),
    /// A read barrier for `sync`: answer the leader's read index.
    ReadIndex,
    /// Session touches from a follower: (session id, ms left before its deadline on that follower;
    /// builds before 2026-12-07 sent the whole timeout). The leader only ever moves deadlines later.
    Touch(Vec<(i64, i32)>),
    /// The cluster id (for a joining node).
    ClusterInfo,
    /// Adds a node (as learner, then voter while the cluster has fewer than the target voters).
    Join {
        /// The new node's id.
        node_id: u64,
        /// Its peer address.
        peer_addr: String,
    },
    /// Removes a node from the membership.
    Remove {
        /// The node.
        node_id: u64,
    },
    /// The answering node asks the leader to remove itself.
    Leave,
    /// This node's view of the cluster.
    Status,
    /// A client's `reconfig`, as the leader carries it out (see `cluster::reconfig`): joins and role
    /// changes, then removals.
    Reconfig {
        /// Servers to add (or whose role changes).
        joining: Vec<Joiner>,
        /// Node ids to remove.
        leaving: Vec<u64>,
    },
    /// A joining node asks for its node id: the leader answers the smallest id no member has or was
    /// recently given (2, 3, ...), so that ids stay short enough to read and type.
    AllocateId,
}

impl PeerRequest {
    /// Whether a connection that named no cluster id may send this (a joining node asking for the
    /// cluster id, or the `roster cluster` tool).
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            PeerRequest::ClusterInfo
                | PeerRequest::Join { .. }
                | PeerRequest::Remove { .. }
                | PeerRequest::Leave
                | PeerRequest::Status
                | PeerRequest::Reconfig { .. }
        )
    }
}

/// One joining server of a `reconfig`, as the leader applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joiner {
    /// Node id.
    pub id: u64,
    /// Peer address.
    pub peer_addr: String,
    /// Participant (voter) or observer (learner).
    pub voter: bool,
}

/// Bytes the transport carries without looking inside (a Raft RPC encoded by the Raft layer).
/// Encoded as one byte string, not a sequence of numbers.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct BlobVisitor;
        impl<'de> serde::de::Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(BlobVisitor)
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerError {
    /// This node does not lead (and knows this leader, if any).
    NotLeader(Option<u64>),
    /// Refused, with the reason.
    Refused(String),
    /// Raft failed.
    Raft(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::NotLeader(Some(l)) => write!(f, "not the leader (leader is node {l})"),
            PeerError::NotLeader(None) => write!(f, "not the leader (no leader known)"),
            PeerError::Refused(m) => write!(f, "refused: {m}"),
            PeerError::Raft(m) => write!(f, "raft: {m}"),
        }
    }
}

/// An answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// To `Raft`: the Raft layer's answer, encoded by it.
    Raft(Blob),
    /// To requests with nothing to say.
    Ack,
    /// To `Write`: the applied result.
    Written(WriteReply),
    /// To `ReadIndex`: the index to wait for.
    ReadIndex(u64),
    /// To `ClusterInfo`.
    ClusterInfo {
        /// The cluster id.
        cluster_id: String,
    },
    /// To `Join`.
    Joined {
        /// Whether the node became a voter.
        voter: bool,
        /// The leader's committed index when it was added.
        committed: u64,
    },
    /// To `Status`.
    Status(StatusInfo),
    /// To `AllocateId`.
    Allocated(u64),
    /// A failure.
    Err(PeerError),
}

/// Everything that travels on a peer connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerMsg {
    /// The dialer's greeting.
    Hello(Hello),
    /// The listener accepts: its cluster id and node id.
    HelloOk {
        /// Its cluster id.
        cluster_id: String,
        /// Its node id.
        node_id: u64,
    },
    /// The listener refuses, with the reason; it closes the connection.
    HelloErr(String),
    /// A request.
    Request {
        /// Request id, unique per connection.
        id: u64,
        /// The request.
        body: PeerRequest,
    },
    /// An answer.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        body: PeerResponse,
    },
}

/// Encodes one frame of this build's newest version.
pub fn encode(msg: &PeerMsg) -> std::io::Result<Vec<u8>> {
    encode_v(msg, FORMAT_VERSION)
}

/// Encodes one frame of format `version` (the one negotiated on its connection), into a buffer sized
/// first (a frame carrying a Raft batch is copied once, not once per doubling of a growing buffer).
pub fn encode_v(msg: &PeerMsg, version: u8) -> std::io::Result<Vec<u8>> {
    let size = postcard::experimental::serialized_size(msg).unwrap_or(0);
    let mut out = Vec::with_capacity(5 + size);
    out.resize(5, 0);
    out[4] = version;
    let out = postcard::to_extend(msg, out)
        .map_err(|e| std::io::Error::other(format!("peer message does not encode: {e}")))?;
    let len =
        u32::try_from(out.len() - 4).map_err(|_| std::io::Error::other("peer frame too large"))?;
    let mut out = out;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Writes one frame of format `version`.
pub async fn write_msg<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &PeerMsg,
    version: u8,
) -> std::io::Result<()> {
    w.write_all(&encode_v(msg, version)?).await
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<PeerMsg>> {
    read_msg_max(r, MAX_FRAME).await
}

/// Reads one frame of at most `max` bytes; `Ok(None)` on a clean end of stream between frames.
pub async fn read_msg_max<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<PeerMsg>> {
    Ok(read_frame(r, max).await?.map(|(_, m)| m))
}

/// Reads one frame of at most `max` bytes with its format version; `Ok(None)` on a clean end of
/// stream between frames. The buffer grows as the bytes arrive, never to the declared length up
/// front, so a half-sent frame holds only what was sent.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<(u8, PeerMsg)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes (limit {max})"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    (&mut *r).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let version = buf[0];
    let refuse = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "peer frame format version {version} (this build speaks {} to {FORMAT_VERSION}): \
                 upgrade the older node (docs/operations.md, \"Upgrading\")",
                crate::format::BASE
            ),
        )
    };
    if version < crate::format::BASE {
        return Err(refuse());
    }
    let msg: PeerMsg = postcard::from_bytes(&buf[1..]).map_err(|e| {
        if crate::format::readable(version) {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("peer frame does not decode: {e}"),
            )
        } else {
            refuse()
        }
    })?;
    let handshake = matches!(
        msg,
        PeerMsg::Hello(_) | PeerMsg::HelloOk { .. } | PeerMsg::HelloErr(_)
    );
    if !crate::format::readable(version) && !handshake {
        return Err(refuse());
    }
    Ok(Some((version, msg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_other_versions_are_refused() {
        let hello = PeerMsg::Hello(Hello {
            cluster_id: Some("c1".into()),
            from: 7,
            to: Some(9),
            kind: LinkKind::Heartbeat,
        });
        let mut bytes = encode(&hello).unwrap();
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        assert_eq!(bytes[4], FORMAT_VERSION);
        match read_msg(&mut bytes.as_slice()).await.unwrap() {
            Some(PeerMsg::Hello(h)) => {
                assert_eq!(
                    (h.cluster_id.as_deref(), h.from, h.to, h.kind),
                    (Some("c1"), 7, Some(9), LinkKind::Heartbeat)
                )
            }
            other => panic!("{other:?}"),
        }
        // A clean end between frames is the end of the stream; a torn frame is an error.
        assert!(read_msg(&mut &[][..]).await.unwrap().is_none());
        assert!(read_msg(&mut &bytes[..bytes.len() - 1]).await.is_err());
        // A hello of a newer version is read (versions are negotiated on it); other frames of a
        // version this build does not read, and frames older than the base, are refused.
        bytes[4] = FORMAT_VERSION + 1;
        let (v, _) = read_frame(&mut bytes.as_slice(), MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, FORMAT_VERSION + 1);
        let ack = PeerMsg::Response {
            id: 1,
            body: PeerResponse::Ack,
        };
        let newer = encode_v(&ack, FORMAT_VERSION + 1).unwrap();
        let e = read_msg(&mut newer.as_slice()).await.unwrap_err();
        assert!(e.to_string().contains("format version"), "{e}");
        let older = encode_v(&ack, crate::format::BASE - 1).unwrap();
        let e = read_msg(&mut older.as_slice()).await.unwrap_err();
        assert!(e.to_string().contains("upgrade the older node"), "{e}");
        let base = encode_v(&ack, crate::format::BASE).unwrap();
        assert!(matches!(
            read_frame(&mut base.as_slice(), MAX_FRAME).await.unwrap(),
            Some((crate::format::BASE, PeerMsg::Response { id: 1, .. }))
        ));
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(read_msg(&mut &huge[..]).await.is_err());
    }
}
