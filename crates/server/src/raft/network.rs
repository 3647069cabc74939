//! The outbound Raft network ([`RaftNetworkV2`]) over the peer transport ([`crate::transport`]):
//! Raft messages ([`super::rpc`]) travel as the transport's opaque blobs.
//!
//! The factory hands openraft three kinds of clients per target, each with its own TCP connection:
//! replication (`new_client`), heartbeats (`new_heartbeat_client`) and snapshots (`new_snapshot_client`),
//! so neither a write burst nor a large snapshot delays a heartbeat. A client dials lazily, says hello
//! with the cluster id and the node id it expects (the remote refuses a mismatch, and so do we), and
//! bounds every call by the `RPCOption`'s `hard_ttl` (AppendEntries carrying entries by at least
//! 2 s: they wait for the follower's fsync). A dead or refusing peer is `Unreachable` (openraft
//! backs off); a slow one is `Timeout`. Snapshots stream in chunks on the snapshot connection and are
//! installed by the receiver once complete.
//!
//! Dialing is paced per peer ([`DialGate`], shared by the three clients of a target): after a failed
//! dial, no client dials that peer again before the backoff deadline (50 ms, doubling, at most
//! [`DIAL_BACKOFF_MAX`]); a call that needs a connection meanwhile waits for the deadline (openraft's
//! heartbeat cuts that wait at the heartbeat interval). openraft restarts a replication stream for
//! every new entry, so without this a leader with a dead voter dialed it once or more per client write.
//! A peer that stays unreachable is logged once per [`UNREACHABLE_LOG_EVERY`], and once when it is
//! back. `mntr` shows the dial counts (`zk_roster_peer_dials`, `zk_roster_peer_dials_failed`).
//!
//! Node addresses come from the Raft membership: `BasicNode::addr` is the peer address.
//!
//! Replication is pipelined (`stream_append`): requests go out as openraft produces them and the answers
//! come back in order, so a new batch or a commit index never waits for the previous round trip.
//!
//! Left out: `transfer_leader`.

use super::rpc::{self, RaftRequest, RaftResponse};
use super::types::TypeConfig;
use crate::shared::Shared;
use crate::transport::link::{Link, LinkError};
use crate::transport::tls::PeerTls;
use crate::transport::wire::{Hello, LinkKind, PeerRequest, PeerResponse};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Builds peer clients for openraft.
pub struct PeerNetwork {
    cluster_id: String,
    me: u64,
    shared: Arc<Shared>,
    tls: Option<Arc<PeerTls>>,
    /// One dial gate per target, shared by its clients.
    gates: HashMap<u64, Arc<parking_lot::Mutex<DialGate>>>,
}

impl PeerNetwork {
    /// The network of node `me` in cluster `cluster_id`, dialing over TLS with `tls`; dial counts go
    /// to `shared.stats`.
    pub fn new(
        cluster_id: String,
        me: u64,
        shared: Arc<Shared>,
        tls: Option<Arc<PeerTls>>,
    ) -> PeerNetwork {
        PeerNetwork {
            cluster_id,
            me,
            shared,
            tls,
            gates: HashMap::new(),
        }
    }

    fn client(&mut self, target: u64, node: &BasicNode, kind: LinkKind) -> PeerClient {
        let gate = self.gates.entry(target).or_default().clone();
        PeerClient {
            gate,
            shared: self.shared.clone(),
            tls: self.tls.clone(),
            target,
            addr: node.addr.clone(),
            kind,
            cluster_id: self.cluster_id.clone(),
            me: self.me,
            link: None,
            timeouts: 0,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        self.client(target, node, LinkKind::Raft)
    }

    async fn new_heartbeat_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        self.client(target, node, LinkKind::Heartbeat)
    }

    async fn new_snapshot_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        self.client(target, node, LinkKind::Snapshot)
    }
}

/// Paces the dials to one peer: at most one dial per backoff step, whichever client makes it.
#[derive(Default)]
pub struct DialGate {
    /// No dial before this instant (set when a dial starts, pushed back when it fails).
    not_before: Option<Instant>,
    /// Failed dials in a row.
    failures: u32,
    /// When "unreachable" was last logged for this peer.
    logged: Option<Instant>,
}

/// Longest wait between two dials to an unreachable peer (a peer that restarts is called again within it).
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Wait after the first failed dial; it doubles with each further failure up to [`DIAL_BACKOFF_MAX`].
pub const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// How often an unreachable peer is logged while it stays unreachable.
pub const UNREACHABLE_LOG_EVERY: Duration = Duration::from_secs(10);

impl DialGate {
    /// The wait after `failures` failed dials in a row.
    fn backoff(failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(16);
        (DIAL_BACKOFF_MIN * (1u32 << shift)).min(DIAL_BACKOFF_MAX)
    }

    /// Claims the next dial: `Ok` if this caller may dial now (the slot is then reserved for the
    /// length of the current backoff, so concurrent callers wait), or the instant to wait for.
    fn claim(&mut self, now: Instant) -> Result<(), Instant> {
        match self.not_before {
            Some(t) if t > now => Err(t),
            _ => {
                self.not_before = Some(now + Self::backoff(self.failures.max(1)));
                Ok(())
            }
        }
    }

    /// Records a dial's outcome; returns whether to log it (a failure at most once per
    /// [`UNREACHABLE_LOG_EVERY`], a success only after failures).
    fn record(&mut self, ok: bool, now: Instant) -> bool {
        if ok {
            let was_down = self.failures > 0;
            *self = DialGate::default();
            return was_down;
        }
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + Self::backoff(self.failures));
        if self
            .logged
            .is_none_or(|t| now.duration_since(t) >= UNREACHABLE_LOG_EVERY)
        {
            self.logged = Some(now);
            return true;
        }
        false
    }
}

/// A client for one peer, over one connection of one kind.
pub struct PeerClient {
    gate: Arc<parking_lot::Mutex<DialGate>>,
    shared: Arc<Shared>,
    tls: Option<Arc<PeerTls>>,
    target: u64,
    addr: String,
    kind: LinkKind,
    cluster_id: String,
    me: u64,
    link: Option<Link>,
    /// Calls timed out in a row on the current link; after [`MAX_TIMEOUTS`], once the link has also
    /// been silent for [`LINK_SILENCE`], it is dropped and redialed
    /// (a connection can stay open yet dead across a partition or a peer restart behind a NAT).
    timeouts: u32,
}

/// Smallest deadline of an AppendEntries that carries entries.
const REPLICATION_MIN_TTL: Duration = Duration::from_secs(2);
/// Consecutive timeouts after which a link is redialed, if it was also silent for [`LINK_SILENCE`].
const MAX_TIMEOUTS: u32 = 3;
/// How long nothing at all must have come back on a link before timeouts redial it. Heartbeats time
/// out after 50 ms, and on an overloaded machine (a 3-node cluster opening 50,000 sessions on two
/// cores) answers that are merely late did that three times in a row: the link was dropped, and its
/// redial waited for a hello answer just as late, so a live follower went without heartbeats until it
/// stopped serving its clients. A dead connection (a partition, a peer restarted behind a NAT) hears
/// nothing and is redialed after this long; the leaderless limit of a follower is the same second.
const LINK_SILENCE: Duration = Duration::from_secs(1);

/// Default snapshot chunk when openraft gives none.
const CHUNK: usize = 1 << 20;
/// Longest a connection attempt may take, whatever the RPC's deadline.
const CONNECT_MAX: Duration = Duration::from_secs(2);

enum CallError {
    Unreachable(String),
    Timeout(Duration),
    Remote(String),
}

impl PeerClient {
    async fn link(&mut self, ttl: Duration) -> Result<Link, CallError> {
        if let Some(l) = &self.link {
            if !l.is_closed() {
                return Ok(l.clone());
            }
        }
        self.link = None;
        // One dial per backoff step for this peer, whichever of its clients makes it.
        loop {
            let now = Instant::now();
            let claimed = self.gate.lock().claim(now);
            match claimed {
                Ok(()) => break,
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
        let hello = Hello {
            cluster_id: Some(self.cluster_id.clone()),
            from: self.me,
            to: Some(self.target),
            kind: self.kind,
        };
        let stats = &self.shared.stats;
        stats.peer_dials.fetch_add(1, Ordering::Relaxed);
        let r = match Link::connect(&self.addr, hello, ttl.min(CONNECT_MAX), self.tls.as_deref())
            .await
        {
            Ok(l) if l.remote_cluster() != self.cluster_id => Err(format!(
                "{} belongs to cluster {}",
                self.addr,
                l.remote_cluster()
            )),
            // A peer that cannot speak the cluster's format (a node rolled back to an older binary
            // after the cluster version rose) gets no entries it would misread.
            Ok(l) if l.version() < self.shared.formats.cluster() => Err(format!(
                "{} speaks format version {} but the cluster runs {}: run a Roster that supports \
                 format {} on node {} (docs/operations.md, \"Upgrading\")",
                self.addr,
                l.version(),
                self.shared.formats.cluster(),
                self.shared.formats.cluster(),
                self.target
            )),
            Ok(l) => Ok(l),
            Err(e) => Err(e.to_string()),
        };
        match &r {
            Ok(l) => self.shared.formats.note_peer(self.target, l.version()),
            Err(_) => self.shared.formats.forget_peer(self.target),
        }
        let log = self.gate.lock().record(r.is_ok(), Instant::now());
        match r {
            Ok(l) => {
                if log {
                    tracing::info!(peer = self.target, addr = %self.addr, "peer reachable again");
                }
                self.link = Some(l.clone());
                Ok(l)
            }
            Err(e) => {
                stats.peer_dials_failed.fetch_add(1, Ordering::Relaxed);
                if log {
                    tracing::warn!(peer = self.target, addr = %self.addr, error = %e, "peer unreachable: dialing it again at most every {DIAL_BACKOFF_MAX:?} (logged once per {UNREACHABLE_LOG_EVERY:?} while it lasts)");
                }
                Err(CallError::Unreachable(e))
            }
        }
    }

    async fn call(&mut self, req: RaftRequest, ttl: Duration) -> Result<RaftResponse, CallError> {
        let req = PeerRequest::Raft(rpc::encode(&req).map_err(CallError::Remote)?);
        let started = tokio::time::Instant::now();
        let link = self.link(ttl).await?;
        let left = ttl
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        match link.call(req, left).await {
            Ok(PeerResponse::Err(e)) => {
                self.timeouts = 0;
                Err(CallError::Remote(e.to_string()))
            }
            Ok(PeerResponse::Raft(blob)) => {
                self.timeouts = 0;
                rpc::decode(&blob).map_err(CallError::Remote)
            }
            Ok(other) => {
                self.timeouts = 0;
                Err(CallError::Remote(format!("unexpected answer {other:?}")))
            }
            Err(LinkError::Timeout(_)) => {
                self.timed_out(&link);
                Err(CallError::Timeout(ttl))
            }
            Err(e) => {
                self.link = None;
                Err(CallError::Unreachable(e.to_string()))
            }
        }
    }

    /// A call on `link` got no answer in time: after [`MAX_TIMEOUTS`] in a row on a link that was
    /// also silent for [`LINK_SILENCE`], the link is dropped, to be redialed by the next call.
    fn timed_out(&mut self, link: &Link) {
        self.timeouts += 1;
        if self.timeouts >= MAX_TIMEOUTS && link.silent_for() >= LINK_SILENCE {
            self.timeouts = 0;
            self.link = None;
        }
    }

    fn rpc_error(&self, e: CallError, action: RPCTypes) -> RPCError<TypeConfig> {
        match e {
            CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(format!(
                "node {} at {}: {m}",
                self.target, self.addr
            ))),
            CallError::Timeout(t) => RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout: t,
            }),
            CallError::Remote(m) => RPCError::Network(NetworkError::from_string(format!(
                "node {}: {m}",
                self.target
            ))),
        }
    }

    fn stream_error(&self, e: CallError) -> StreamingError<TypeConfig> {
        match self.rpc_error(e, RPCTypes::InstallSnapshot) {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::RemoteError(r) => {
                StreamingError::Network(NetworkError::from_string(r.to_string()))
            }
        }
    }

    fn unexpected<T>(&self, r: RaftResponse) -> Result<T, CallError> {
        Err(CallError::Remote(format!("unexpected answer {r:?}")))
    }
}

/// One request of a pipelined AppendEntries stream, sent and awaiting its answer.
struct InFlight {
    id: u64,
    rx: tokio::sync::oneshot::Receiver<PeerResponse>,
    deadline: tokio::time::Instant,
    ttl: Duration,
}

/// State of one [`PeerClient::stream_append`] response stream.
struct Pipe<'s, S> {
    client: &'s mut PeerClient,
    link: Link,
    input: S,
    input_done: bool,
    inflight: VecDeque<InFlight>,
    finished: bool,
}

/// An item of a stream_append response stream.
type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

impl<S> Pipe<'_, S>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    /// Sends `req` now; on failure the stream ends with the error.
    fn send(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Option<StreamItem> {
        let ttl = append_ttl(&req, option);
        let sent = rpc::encode(&RaftRequest::StreamAppend(req))
            .map_err(LinkError::Closed)
            .and_then(|blob| self.link.send_with_id(PeerRequest::Raft(blob)));
        match sent {
            Ok((id, rx)) => {
                self.inflight.push_back(InFlight {
                    id,
                    rx,
                    deadline: tokio::time::Instant::now() + ttl,
                    ttl,
                });
                None
            }
            Err(e) => {
                self.client.link = None;
                Some(Err(self.client.rpc_error(
                    CallError::Unreachable(e.to_string()),
                    RPCTypes::AppendEntries,
                )))
            }
        }
    }

    /// The next item: sends every request the input yields as soon as it yields it, and answers
    /// in request order. `None` once the input ended and every request was answered, or after an
    /// item that ends the stream (an error or a refusal from the follower).
    async fn next(&mut self, option: &RPCOption) -> Option<StreamItem> {
        if self.finished {
            return None;
        }
        loop {
            if self.inflight.is_empty() {
                if self.input_done {
                    return None;
                }
                match self.input.next().await {
                    Some(req) => {
                        if let Some(err) = self.send(req, option) {
                            self.finished = true;
                            return Some(err);
                        }
                    }
                    None => self.input_done = true,
                }
                continue;
            }
            let head = self.inflight.front_mut().expect("not empty");
            let (deadline, ttl) = (head.deadline, head.ttl);
            tokio::select! {
                biased;
                answer = tokio::time::timeout_at(deadline, &mut head.rx) => {
                    let id = head.id;
                    self.inflight.pop_front();
                    let item = self.answer(id, answer, ttl);
                    if !matches!(item, Ok(Ok(_))) {
                        self.finished = true;
                        for f in self.inflight.drain(..) {
                            self.link.forget(f.id);
                        }
                    }
                    return Some(item);
                }
                req = self.input.next(), if !self.input_done => match req {
                    Some(req) => {
                        if let Some(err) = self.send(req, option) {
                            self.finished = true;
                            return Some(err);
                        }
                    }
                    None => self.input_done = true,
                },
            }
        }
    }

    fn answer(
        &mut self,
        id: u64,
        answer: Result<
            Result<PeerResponse, tokio::sync::oneshot::error::RecvError>,
            tokio::time::error::Elapsed,
        >,
        ttl: Duration,
    ) -> StreamItem {
        let c = &mut *self.client;
        let e = match answer {
            Ok(Ok(PeerResponse::Raft(blob))) => match rpc::decode(&blob) {
                Ok(RaftResponse::StreamAppend(Ok(r))) => {
                    c.timeouts = 0;
                    return Ok(r);
                }
                Ok(RaftResponse::StreamAppend(Err(fatal))) => {
                    CallError::Remote(format!("its raft stopped: {fatal}"))
                }
                Ok(other) => CallError::Remote(format!("unexpected answer {other:?}")),
                Err(e) => CallError::Remote(e),
            },
            Ok(Ok(PeerResponse::Err(e))) => CallError::Remote(e.to_string()),
            Ok(Ok(other)) => CallError::Remote(format!("unexpected answer {other:?}")),
            Ok(Err(_)) => {
                c.link = None;
                CallError::Unreachable(format!("connection to {} broke before the answer", c.addr))
            }
            Err(_) => {
                self.link.forget(id);
                c.timed_out(&self.link);
                CallError::Timeout(ttl)
            }
        };
        Err(c.rpc_error(e, RPCTypes::AppendEntries))
    }
}

/// How long an AppendEntries may wait for its answer: openraft bounds replication RPCs by the
/// heartbeat interval; a batch of entries also waits for the follower's fsync, which a slow disk can
/// stretch past it, and a bound that every attempt exceeds would stall replication for good. Entries
/// get at least [`REPLICATION_MIN_TTL`].
fn append_ttl(rpc: &AppendEntriesRequest<TypeConfig>, option: &RPCOption) -> Duration {
    if rpc.entries.is_empty() {
        option.hard_ttl()
    } else {
        option.hard_ttl().max(REPLICATION_MIN_TTL)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    /// Pipelined: every request is sent as soon as openraft produces it, without waiting for the
    /// answers to earlier ones (the follower processes one connection's requests in order, so its
    /// log stays gap-free and its fsyncs group several requests). Answers come back in request
    /// order on the same connection. The stream ends at the first error or refusal, as openraft
    /// expects; requests still in flight then are forgotten (openraft restarts from what was
    /// acknowledged).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamItem>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let link = match self.link(option.hard_ttl().max(REPLICATION_MIN_TTL)).await {
                Ok(l) => l,
                Err(e) => return Err(self.rpc_error(e, RPCTypes::AppendEntries)),
            };
            let pipe = Pipe {
                client: self,
                link,
                input,
                input_done: false,
                inflight: VecDeque::new(),
                finished: false,
            };
            let strm = futures::stream::unfold((pipe, option), |(mut pipe, option)| async move {
                let item = pipe.next(&option).await?;
                Some((item, (pipe, option)))
            });
            Ok(Box::pin(strm) as BoxStream<'s, StreamItem>)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = append_ttl(&rpc, &option);
        let r = match self.call(RaftRequest::AppendEntries(rpc), ttl).await {
            Ok(RaftResponse::AppendEntries(r)) => Ok(r),
            Ok(other) => self.unexpected(other),
            Err(e) => Err(e),
        };
        r.map_err(|e| self.rpc_error(e, RPCTypes::AppendEntries))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let r = match self.call(RaftRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RaftResponse::Vote(r)) => Ok(r),
            Ok(other) => self.unexpected(other),
            Err(e) => Err(e),
        };
        r.map_err(|e| self.rpc_error(e, RPCTypes::Vote))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let r = match self
            .call(RaftRequest::PreVote(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftResponse::Vote(r)) => Ok(r),
            Ok(other) => self.unexpected(other),
            Err(e) => Err(e),
        };
        r.map_err(|e| self.rpc_error(e, RPCTypes::Vote))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut cancel = std::pin::pin!(cancel);
        let ttl = option.hard_ttl();
        let chunk = option
            .snapshot_chunk_size()
            .unwrap_or(CHUNK)
            .clamp(64 * 1024, 8 << 20);
        let data = snapshot.snapshot;
        tracing::info!(target_node = self.target, bytes = data.len(), meta = ?snapshot.meta.signature(), "sending snapshot");
        let len = data.len();
        // Begin, the chunks (built one at a time), then End; each answered before the next is sent.
        let steps = 2 + len.div_ceil(chunk);
        let mut begin = Some(RaftRequest::SnapshotBegin {
            vote,
            meta: snapshot.meta,
            len: len as u64,
        });
        for i in 0..steps {
            let last = i + 1 == steps;
            let req = if i == 0 {
                begin.take().expect("first step")
            } else if last {
                RaftRequest::SnapshotEnd
            } else {
                let offset = (i - 1) * chunk;
                RaftRequest::SnapshotChunk {
                    offset: offset as u64,
                    data: data[offset..(offset + chunk).min(len)].to_vec(),
                }
            };
            // Installing (the last step) decodes the whole state on the receiver: allow it longer.
            let ttl = if last {
                ttl.max(Duration::from_secs(60))
            } else {
                ttl
            };
            let r = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                r = self.call(req, ttl) => r,
            };
            match r {
                Ok(RaftResponse::Ack) if !last => {}
                Ok(RaftResponse::Snapshot(resp)) if last => return Ok(resp),
                Ok(other) => {
                    return Err(self
                        .stream_error(CallError::Remote(format!("unexpected answer {other:?}"))))
                }
                Err(e) => return Err(self.stream_error(e)),
            }
        }
        Err(self.stream_error(CallError::Remote(
            "snapshot transfer ended without an answer".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Vote;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let steps: Vec<u64> = (1..=6)
            .map(|f| DialGate::backoff(f).as_millis() as u64)
            .collect();
        assert_eq!(steps, [50, 100, 200, 250, 250, 250]);
    }

    #[test]
    fn one_dial_per_backoff_step_and_one_log_line_per_interval() {
        let t0 = Instant::now();
        let mut g = DialGate::default();
        assert!(
            g.claim(t0).is_ok(),
            "a fresh gate lets the first dial through"
        );
        assert!(
            g.claim(t0).is_err(),
            "a second dial waits while the first is out"
        );
        assert!(g.record(false, t0), "the first failure is logged");
        let at = g.claim(t0).unwrap_err();
        assert_eq!(at - t0, DIAL_BACKOFF_MIN);
        let mut now = at;
        let mut logged = 0;
        for _ in 0..20 {
            assert!(g.claim(now).is_ok());
            if g.record(false, now) {
                logged += 1;
            }
            now = g.claim(now).unwrap_err();
        }
        assert_eq!(
            logged, 0,
            "no further log line within {UNREACHABLE_LOG_EVERY:?}"
        );
        assert!(g.claim(now).is_ok());
        assert!(g.record(true, now), "coming back is logged");
        assert!(g.claim(now).is_ok(), "a reachable peer is dialed at once");
    }

    /// openraft calls again at once after an Unreachable (a replication stream restarts for every
    /// new entry): the calls must wait for the backoff instead of dialing a dead peer each time.
    #[tokio::test]
    async fn calls_to_a_dead_peer_dial_it_once_per_backoff_step() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = l.local_addr().unwrap().to_string();
        drop(l);
        let shared = Arc::new(Shared::new(
            crate::Config::default(),
            roster_state::State::new(),
        ));
        let mut net = PeerNetwork::new("c".into(), 1, shared.clone(), None);
        let node = BasicNode::new(dead);
        let mut clients = [
            net.new_client(2, &node).await,
            net.new_heartbeat_client(2, &node).await,
        ];
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < Duration::from_millis(1_000) {
            for c in clients.iter_mut() {
                let req = VoteRequest::new(Vote::new(1, 1), None);
                let r = c.vote(req, RPCOption::new(Duration::from_millis(50))).await;
                assert!(r.is_err(), "a dead peer answered");
                calls += 1;
            }
        }
        let elapsed = started.elapsed();
        let dials = shared.stats.peer_dials.load(Ordering::Relaxed);
        let failed = shared.stats.peer_dials_failed.load(Ordering::Relaxed);
        assert_eq!(dials, failed);
        // 50 + 100 + 200 ms, then one dial per 250 ms.
        let bound = 3 + elapsed.as_millis() as u64 / DIAL_BACKOFF_MAX.as_millis() as u64 + 1;
        assert!(
            dials <= bound,
            "{dials} dials in {elapsed:?} ({calls} calls); at most {bound} expected"
        );
        assert!(dials >= 3, "the peer was dialed again: {dials}");
    }
}
