//! The Raft RPCs between nodes: the messages ([`RaftRequest`], [`RaftResponse`]), their encoding into
//! the transport's opaque [`Blob`]s, and the receiving end ([`Inbound`], one per peer connection).
//!
//! The receiving end answers requests concurrently except those whose order matters, which it takes
//! in arrival order: snapshot pieces (assembled per connection, installed at `SnapshotEnd`) and
//! pipelined AppendEntries (fed to `Raft::stream_append` in arrival order, see `AppendPipeline`).
//!
//! Installing a snapshot closes this node's client connections: no watch fired for what the snapshot
//! changed, and reconnecting clients re-register their watches with the zxid they last saw.
//!
//! Left out: the dialing side (`super::network`), what the cluster layer does when a vote was answered
//! (it is told through [`VoteSeen`]).

use super::handle::RaftHandle;
use super::types::{SnapshotMeta, TypeConfig};
use crate::shared::{ConnMsg, Shared};
use crate::transport::server::Responder;
use crate::transport::wire::{Blob, PeerError, PeerResponse};
use futures::StreamExt;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A Raft request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Log replication or heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Vote.
    Vote(VoteRequest<TypeConfig>),
    /// Pre-vote.
    PreVote(VoteRequest<TypeConfig>),
    /// Starts a snapshot transfer on this connection.
    SnapshotBegin {
        /// The leader's vote.
        vote: VoteOf<TypeConfig>,
        /// The snapshot's metadata.
        meta: SnapshotMeta,
        /// Its length, bytes.
        len: u64,
    },
    /// A piece of the snapshot being transferred.
    SnapshotChunk {
        /// Where it goes.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The transfer is complete: install it.
    SnapshotEnd,
    /// One request of a pipelined AppendEntries stream: the receiver feeds the requests of one
    /// connection, in arrival order, to `Raft::stream_append` and answers each with
    /// [`RaftResponse::StreamAppend`] in the same order.
    StreamAppend(AppendEntriesRequest<TypeConfig>),
}

/// An answer to a [`RaftRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    /// To `AppendEntries`.
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    /// To `Vote` and `PreVote`.
    Vote(VoteResponse<TypeConfig>),
    /// To `SnapshotEnd`.
    Snapshot(SnapshotResponse<TypeConfig>),
    /// To `SnapshotBegin` and `SnapshotChunk`.
    Ack,
    /// To `StreamAppend`: the follower's result for that request (the log id it flushed, or why the
    /// stream stops), or the reason its Raft stopped.
    StreamAppend(Result<StreamAppendResult<TypeConfig>, String>),
}

/// Encodes a Raft message for the transport, into a buffer sized first (one allocation, no copies of
/// a growing buffer: AppendEntries carry many entries).
pub fn encode<T: Serialize>(msg: &T) -> Result<Blob, String> {
    let size = postcard::experimental::serialized_size(msg).unwrap_or(0);
    postcard::to_extend(msg, Vec::with_capacity(size))
        .map(Blob)
        .map_err(|e| format!("raft message does not encode: {e}"))
}

/// Decodes a Raft message the transport carried.
pub fn decode<T: for<'de> Deserialize<'de>>(blob: &Blob) -> Result<T, String> {
    postcard::from_bytes(&blob.0).map_err(|e| format!("raft message does not decode: {e}"))
}

fn answer(out: &Responder, id: u64, r: Result<RaftResponse, PeerError>) {
    out.send(
        id,
        match r.and_then(|r| encode(&r).map_err(PeerError::Raft)) {
            Ok(blob) => PeerResponse::Raft(blob),
            Err(e) => PeerResponse::Err(e),
        },
    );
}

/// What this node answered to a vote request, for the cluster layer's fast failover.
#[derive(Debug, Clone, Copy)]
pub struct VoteSeen {
    /// The candidate's term.
    pub term: u64,
    /// Whether it asked as a leadership transfer (a fast-failover candidate).
    pub transfer: bool,
    /// Whether this node granted it.
    pub granted: bool,
    /// Whether this node's log is longer than the candidate's.
    pub our_log_longer: bool,
}

/// Called after each answered vote request.
pub type OnVote = Arc<dyn Fn(VoteSeen) + Send + Sync>;

struct IncomingSnapshot {
    vote: VoteOf<TypeConfig>,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The receiving end of one peer connection's Raft requests.
pub struct Inbound {
    raft: RaftHandle,
    shared: Arc<Shared>,
    on_vote: OnVote,
    out: Responder,
    from: u64,
    snapshot: Option<IncomingSnapshot>,
    appends: Option<AppendPipeline>,
}

impl Inbound {
    /// The receiving end for a connection from node `from`, answering on `out`.
    pub fn new(
        raft: RaftHandle,
        shared: Arc<Shared>,
        on_vote: OnVote,
        out: Responder,
        from: u64,
    ) -> Inbound {
        Inbound {
            raft,
            shared,
            on_vote,
            out,
            from,
            snapshot: None,
            appends: None,
        }
    }

    /// Handles request `id`, in arrival order; the answer goes out on the connection (possibly later).
    pub async fn handle(&mut self, id: u64, body: &Blob) {
        let req: RaftRequest = match decode(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(from = self.from, error = %e, "raft request refused");
                return answer(&self.out, id, Err(PeerError::Refused(e)));
            }
        };
        if let Err(e) = mark_newer_format(&self.shared, &req) {
            tracing::error!(from = self.from, error = %e, "cannot record the data directory's format version: refusing the entries");
            return answer(&self.out, id, Err(PeerError::Raft(e.to_string())));
        }
        match req {
            RaftRequest::StreamAppend(rpc) => {
                let rpc = match &self.appends {
                    Some(p) => match p.push(id, rpc) {
                        Ok(()) => return,
                        Err(rpc) => rpc,
                    },
                    None => rpc,
                };
                // No pipeline yet, or the last one ended (after a refusal): start another.
                let p = AppendPipeline::start(&self.raft, self.out.clone());
                if let Err(_rpc) = p.push(id, rpc) {
                    answer(&self.out, id, Err(PeerError::Raft("raft shut down".into())));
                }
                self.appends = Some(p);
            }
            RaftRequest::SnapshotBegin { vote, meta, len } => {
                tracing::info!(from = self.from, bytes = len, meta = ?meta.signature(), "receiving snapshot");
                self.snapshot = Some(IncomingSnapshot {
                    vote,
                    meta,
                    data: Vec::with_capacity(len.min(1 << 30) as usize),
                });
                answer(&self.out, id, Ok(RaftResponse::Ack));
            }
            RaftRequest::SnapshotChunk { offset, data } => match &mut self.snapshot {
                Some(s) if s.data.len() as u64 == offset => {
                    s.data.extend_from_slice(&data);
                    answer(&self.out, id, Ok(RaftResponse::Ack));
                }
                _ => answer(
                    &self.out,
                    id,
                    Err(PeerError::Refused(format!(
                        "snapshot chunk at {offset} out of order"
                    ))),
                ),
            },
            RaftRequest::SnapshotEnd => match self.snapshot.take() {
                Some(s) => {
                    let r = self.install(s).await;
                    answer(&self.out, id, r);
                }
                None => answer(
                    &self.out,
                    id,
                    Err(PeerError::Refused(
                        "snapshot end without a beginning".into(),
                    )),
                ),
            },
            other => {
                let raft = self.raft.clone();
                let on_vote = self.on_vote.clone();
                let out = self.out.clone();
                tokio::spawn(async move {
                    let r = unordered(&raft, &on_vote, other).await;
                    answer(&out, id, r);
                });
            }
        }
    }

    async fn install(&self, s: IncomingSnapshot) -> Result<RaftResponse, PeerError> {
        let raft = self.raft.raft();
        let applied = raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map(|l| l.index);
        let replaces = s.meta.last_log_id.map(|l| l.index) > applied;
        let snap = SnapshotOf::<TypeConfig, Vec<u8>> {
            meta: s.meta,
            snapshot: s.data,
        };
        let r = raft
            .install_full_snapshot(s.vote, snap)
            .await
            .map_err(|e| PeerError::Raft(e.to_string()))?;
        self.raft.leader_contact();
        // The state was replaced wholesale, so no watch fired for what changed. Clients reconnect
        // (keeping their sessions) and re-register their watches with the zxid they last saw, which
        // fires what they missed.
        let conns = self.shared.conns.lock();
        if replaces {
            tracing::info!(
                connections = conns.by_id.len(),
                "snapshot installed: closing client connections so they re-register their watches"
            );
        }
        for c in conns.by_id.values().filter(|_| replaces) {
            let _ = c.tx.send(ConnMsg::Close(
                "state replaced by a snapshot from the leader",
            ));
        }
        Ok(RaftResponse::Snapshot(r))
    }

    /// Ends the connection's append pipeline (its task finishes once its input ends).
    pub fn close(self) {
        drop(self.appends);
    }
}

/// Before entries that record a newer cluster format version reach the log, the data directory
/// records that version (`crate::format::Formats::mark_dir`).
#[cfg(feature = "format-next")]
fn mark_newer_format(shared: &Shared, req: &RaftRequest) -> std::io::Result<()> {
    use openraft::EntryPayload;
    use roster_state::TxnOp;
    let entries = match req {
        RaftRequest::StreamAppend(rpc) | RaftRequest::AppendEntries(rpc) => &rpc.entries,
        _ => return Ok(()),
    };
    for e in entries {
        if let EntryPayload::Normal(cmd) = &e.payload {
            if let TxnOp::SetFormat { version } = cmd.0.op {
                shared.formats.mark_dir(version)?;
            }
        }
    }
    Ok(())
}

/// A build of the base format knows no entry of a newer one.
#[cfg(not(feature = "format-next"))]
fn mark_newer_format(_: &Shared, _: &RaftRequest) -> std::io::Result<()> {
    Ok(())
}

async fn unordered(
    raft: &RaftHandle,
    on_vote: &OnVote,
    req: RaftRequest,
) -> Result<RaftResponse, PeerError> {
    let err = |e: String| PeerError::Raft(e);
    match req {
        RaftRequest::AppendEntries(rpc) => {
            let r = raft
                .raft()
                .append_entries(rpc)
                .await
                .map_err(|e| err(e.to_string()))?;
            if r.is_success() {
                raft.leader_contact();
            }
            Ok(RaftResponse::AppendEntries(r))
        }
        RaftRequest::Vote(rpc) => {
            let resp = raft
                .raft()
                .vote(rpc.clone())
                .await
                .map_err(|e| err(e.to_string()))?;
            on_vote(VoteSeen {
                term: rpc.vote.leader_id.term,
                transfer: rpc.leadership_transfer,
                granted: resp.vote_granted,
                our_log_longer: resp.last_log_id > rpc.last_log_id,
            });
            Ok(RaftResponse::Vote(resp))
        }
        RaftRequest::PreVote(rpc) => raft
            .raft()
            .pre_vote(rpc)
            .await
            .map(RaftResponse::Vote)
            .map_err(|e| err(e.to_string())),
        _ => Err(PeerError::Refused(
            "ordered raft requests are answered by the connection".into(),
        )),
    }
}

/// The follower's end of one connection's pipelined AppendEntries stream: requests go to
/// `Raft::stream_append` in arrival order, and its results, which come in the same order, answer the
/// request ids queued beside them. After a result that ends openraft's stream (a conflict, a higher
/// vote, a stopped Raft) the pipeline is over; requests queued behind it are answered with an error
/// and the next request starts a new pipeline (the leader restarts its stream from what was
/// acknowledged, so a stale request that still reaches Raft is harmless: AppendEntries from the
/// same leader is idempotent).
struct AppendPipeline {
    requests: mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
    ids: mpsc::UnboundedSender<u64>,
}

impl AppendPipeline {
    fn start(raft: &RaftHandle, out: Responder) -> AppendPipeline {
        let (requests, req_rx) = mpsc::unbounded_channel();
        let (ids, mut id_rx) = mpsc::unbounded_channel::<u64>();
        let input =
            futures::stream::unfold(
                req_rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let results = raft.raft().stream_append(input);
        let raft = raft.clone();
        tokio::spawn(async move {
            let mut results = std::pin::pin!(results);
            while let Some(r) = results.next().await {
                let Some(id) = id_rx.recv().await else { break };
                let go_on = matches!(r, Ok(Ok(_)));
                if go_on {
                    raft.leader_contact();
                }
                answer(
                    &out,
                    id,
                    Ok(RaftResponse::StreamAppend(
                        r.map_err(|fatal| fatal.to_string()),
                    )),
                );
                if !go_on {
                    break;
                }
            }
            // Over: answer whatever is still queued so the leader does not wait for it.
            id_rx.close();
            while let Some(id) = id_rx.recv().await {
                answer(
                    &out,
                    id,
                    Err(PeerError::Refused(
                        "the append stream ended before this request".into(),
                    )),
                );
            }
        });
        AppendPipeline { requests, ids }
    }

    /// Queues request `id`; gives it back if this pipeline is over.
    fn push(
        &self,
        id: u64,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<(), AppendEntriesRequest<TypeConfig>> {
        if self.ids.is_closed() || self.requests.is_closed() || self.ids.send(id).is_err() {
            return Err(rpc);
        }
        self.requests.send(rpc).map_err(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_messages_round_trip_through_blobs_and_garbage_is_refused() {
        let blob = encode(&RaftRequest::SnapshotChunk {
            offset: 7,
            data: vec![1, 2, 3],
        })
        .unwrap();
        match decode::<RaftRequest>(&blob).unwrap() {
            RaftRequest::SnapshotChunk { offset, data } => {
                assert_eq!((offset, data), (7, vec![1, 2, 3]))
            }
            other => panic!("{other:?}"),
        }
        let e = decode::<RaftRequest>(&Blob(vec![0xff, 0xff, 0xff])).unwrap_err();
        assert!(e.contains("does not decode"), "{e}");
    }
}
