//! Deterministic-fault simulation of a Roster ensemble, in process: N openraft nodes built with the
//! real `StateMachine` and `LogStore` (each in its own temporary directory), wired by an in-memory
//! `RaftNetworkV2` that delivers, drops or delays every message as a seeded RNG decides. A seeded
//! script of faults runs against a bounded workload of `roster_state::Txn`s: leader crash and restart
//! from disk, partition and heal, message loss and delay, membership change (add a node, remove one).
//!
//! After each run: every acknowledged write is present, the replicas' `State::to_snapshot()` bytes are
//! equal, acknowledged zxids increase, and no node's applied zxid ever went backwards.
//!
//! Several seeds run per test; a failure names its seed. `ROSTER_SIM_SEED=<n>` replays one seed (tokio's
//! scheduling is not deterministic, so a replay follows the same fault script, not the same
//! interleaving). `ROSTER_SIM_SEEDS=<n>` runs more seeds.

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, ChangeMembers, OptionalSend, SnapshotPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roster_proto::{Acl, CreateRequest, Request, SetDataRequest};
use roster_server::raft::handle::Raft;
use roster_server::raft::log_store::LogStore;
use roster_server::raft::state_machine::StateMachine;
use roster_server::raft::types::{Command, Outcome, TypeConfig};
use roster_server::shared::Shared;
use roster_server::storage::snapshot::SnapshotStore;
use roster_state::{State, Txn, TxnOp};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

// ------------------------------------------------------------------------------------------ network

/// The simulated network: who is up, which pairs are cut, how lossy and slow it is.
#[derive(Default)]
struct NetState {
    rafts: HashMap<u64, Raft>,
    cut: HashSet<(u64, u64)>,
    /// Probability (0..1) that a message (request or its answer) is lost.
    loss: f64,
    /// Largest extra delay of a message, ms.
    delay_ms: u64,
    rng: Option<StdRng>,
}

#[derive(Clone, Default)]
struct Net(Arc<parking_lot::Mutex<NetState>>);

/// What the RNG decided for one message.
enum Fate {
    Lost(u64),
    Deliver(u64, Raft),
}

impl Net {
    fn fate(&self, from: u64, to: u64) -> Fate {
        let mut st = self.0.lock();
        let (loss, delay_max) = (st.loss, st.delay_ms);
        let rng = st.rng.as_mut().expect("seeded");
        let lost = rng.random_bool(loss.clamp(0.0, 1.0));
        let delay = if delay_max > 0 {
            rng.random_range(0..=delay_max)
        } else {
            0
        };
        if lost || st.cut.contains(&(from, to)) {
            return Fate::Lost(delay);
        }
        match st.rafts.get(&to) {
            Some(r) => Fate::Deliver(delay, r.clone()),
            None => Fate::Lost(delay),
        }
    }

    /// Whether the answer to a delivered message is lost on the way back.
    fn answer_lost(&self, from: u64, to: u64) -> bool {
        let mut st = self.0.lock();
        let loss = st.loss;
        let cut = st.cut.contains(&(to, from)) || !st.rafts.contains_key(&from);
        let rng = st.rng.as_mut().expect("seeded");
        cut || rng.random_bool(loss.clamp(0.0, 1.0))
    }

    /// Runs `call` against the target as the network decides.
    async fn send<T, E: std::fmt::Display, F, Fut>(
        &self,
        from: u64,
        to: u64,
        call: F,
    ) -> Result<T, String>
    where
        F: FnOnce(Raft) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.fate(from, to) {
            Fate::Lost(delay) => {
                tokio::time::sleep(Duration::from_millis(delay.max(1))).await;
                Err(format!("{from}->{to}: lost"))
            }
            Fate::Deliver(delay, raft) => {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let r = call(raft).await.map_err(|e| format!("{from}->{to}: {e}"))?;
                if self.answer_lost(from, to) {
                    return Err(format!("{to}->{from}: answer lost"));
                }
                Ok(r)
            }
        }
    }
}

struct Factory {
    me: u64,
    net: Net,
}

struct Client {
    me: u64,
    target: u64,
    net: Net,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Client;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Client {
        Client {
            me: self.me,
            target,
            net: self.net.clone(),
        }
    }
}

fn unreachable(m: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(m))
}

impl RaftNetworkV2<TypeConfig> for Client {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net
            .send(self.me, self.target, |r| async move {
                r.append_entries(rpc).await
            })
            .await
            .map_err(unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net
            .send(self.me, self.target, |r| async move { r.vote(rpc).await })
            .await
            .map_err(unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net
            .send(
                self.me,
                self.target,
                |r| async move { r.pre_vote(rpc).await },
            )
            .await
            .map_err(unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let send = self.net.send(self.me, self.target, |r| async move {
            r.install_full_snapshot(vote, snapshot).await
        });
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r.map_err(|m| StreamingError::Network(NetworkError::from_string(m))),
        }
    }
}

// ------------------------------------------------------------------------------------------ nodes

struct SimNode {
    raft: Option<Raft>,
    shared: Option<Arc<Shared>>,
    /// Set when this incarnation's applied zxid ever went backwards.
    regressed: Arc<AtomicBool>,
}

struct Sim {
    net: Net,
    nodes: BTreeMap<u64, SimNode>,
    _tmp: tempfile::TempDir,
    log: Vec<String>,
}

/// The production configuration (timers, Pre-Vote, backoff), with frequent snapshots and purges so
/// that snapshot transfer and log purging are exercised too.
fn raft_config() -> Arc<openraft::Config> {
    let mut c =
        roster_server::raft::raft_config("sim".into(), SnapshotPolicy::LogsSinceLast(40), 5)
            .unwrap();
    c.install_snapshot_timeout = 5_000;
    c.purge_batch_size = 1;
    Arc::new(c.validate().unwrap())
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let net = Net::default();
        net.0.lock().rng = Some(StdRng::seed_from_u64(seed ^ 0x5eed));
        Sim {
            net,
            nodes: BTreeMap::new(),
            _tmp: tempfile::tempdir().unwrap(),
            log: vec![],
        }
    }

    fn note(&mut self, what: String) {
        self.log.push(what);
    }

    /// Starts (or restarts from its directory) node `id`.
    async fn start(&mut self, id: u64) {
        let dir = self._tmp.path().join(format!("n{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log_store = LogStore::<TypeConfig>::open(&dir).unwrap();
        let snapshots = Arc::new(SnapshotStore::open(dir.join("snapshots")).unwrap());
        let config = roster_server::Config {
            data_dir: dir.clone(),
            ..Default::default()
        };
        let shared = Arc::new(Shared::new(config, State::new()));
        let sm = StateMachine::new(shared.clone(), snapshots);
        let factory = Factory {
            me: id,
            net: self.net.clone(),
        };
        let raft = Raft::new(id, raft_config(), factory, log_store, sm)
            .await
            .unwrap();
        // Watch this incarnation's applied zxid: it must never go back.
        let regressed = Arc::new(AtomicBool::new(false));
        {
            let (shared, regressed) = (shared.clone(), regressed.clone());
            let mut progress = raft.watch_apply_progress();
            tokio::spawn(async move {
                let mut last = 0i64;
                loop {
                    let z = shared.db.lock().state.last_zxid();
                    if z < last {
                        regressed.store(true, Ordering::Relaxed);
                    }
                    last = last.max(z);
                    if progress.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        self.net.0.lock().rafts.insert(id, raft.clone());
        self.nodes.insert(
            id,
            SimNode {
                raft: Some(raft),
                shared: Some(shared),
                regressed,
            },
        );
    }

    async fn crash(&mut self, id: u64) {
        self.net.0.lock().rafts.remove(&id);
        let n = self.nodes.get_mut(&id).unwrap();
        if n.regressed.load(Ordering::Relaxed) {
            panic!("node {id}: applied zxid went backwards");
        }
        if let Some(r) = n.raft.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), r.shutdown()).await;
        }
        n.shared = None;
    }

    fn raft(&self, id: u64) -> Option<Raft> {
        self.nodes.get(&id).and_then(|n| n.raft.clone())
    }

    fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leader that most live nodes agree on.
    fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.live() {
            let m = self.raft(id).unwrap().metrics().borrow_watched().clone();
            if let Some(l) = m.current_leader {
                *votes.entry(l).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(l, _)| l)
            .filter(|l| self.raft(*l).is_some())
    }

    /// Starts nodes 1-3 and initializes them as one three-voter cluster.
    async fn start_three(&mut self) {
        for id in 1..=3 {
            self.start(id).await;
        }
        let members: BTreeMap<u64, BasicNode> = (1..=3)
            .map(|id| (id, BasicNode::new(format!("sim-{id}"))))
            .collect();
        self.raft(1).unwrap().initialize(members).await.unwrap();
    }

    async fn wait_leader(&self, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(l) = self.leader() {
                if self.raft(l).is_some_and(|r| {
                    r.metrics().borrow_watched().state == openraft::ServerState::Leader
                }) {
                    return Some(l);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn members(&self) -> (BTreeSet<u64>, BTreeSet<u64>) {
        let l = self
            .leader()
            .or_else(|| self.live().first().copied())
            .unwrap();
        let m = self
            .raft(l)
            .unwrap()
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        (
            m.voter_ids().collect(),
            m.nodes().map(|(id, _)| *id).collect(),
        )
    }
}

// ------------------------------------------------------------------------------------------ workload

/// What the workload had acknowledged: path → data, and the zxids in acknowledgement order.
#[derive(Default)]
struct Acked {
    data: BTreeMap<String, Vec<u8>>,
    zxids: Vec<i64>,
    unacked: usize,
}

fn create(path: &str, data: &[u8]) -> Request {
    Request::Create(CreateRequest {
        path: path.into(),
        data: Some(bytes::Bytes::copy_from_slice(data)),
        acl: Acl::open_unsafe(),
        flags: 0,
    })
}

/// Proposes `txn` to whichever node leads now; `Some` only when acknowledged.
async fn write(net: &Net, txn: Txn) -> Option<roster_server::raft::types::WriteReply> {
    let rafts: Vec<Raft> = net.0.lock().rafts.values().cloned().collect();
    let leader = rafts
        .iter()
        .find(|r| r.metrics().borrow_watched().state == openraft::ServerState::Leader)?
        .clone();
    match tokio::time::timeout(
        Duration::from_secs(3),
        leader.client_write(Command(std::sync::Arc::new(txn))),
    )
    .await
    {
        Ok(Ok(resp)) => Some(resp.data),
        _ => None,
    }
}

async fn workload(net: Net, stop: Arc<AtomicBool>, max_ops: usize) -> Acked {
    let mut acked = Acked::default();
    // One session, created first (a Request from an unknown session is refused by apply).
    let session = loop {
        let txn = Txn {
            session_id: 0,
            time: 1,
            op: TxnOp::CreateSession {
                timeout_ms: 1_000_000,
                passwd: bytes::Bytes::from_static(b"p"),
            },
        };
        if let Some(r) = write(&net, txn).await {
            if let Outcome::Session { session_id, .. } = r.outcome {
                acked.zxids.push(r.zxid);
                break session_id;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) && i < max_ops {
        i += 1;
        if i % 50 == 25 {
            // The config node, as the leader's config loop writes it.
            let data = format!("server.1=sim-1:0:participant\nversion={i:x}").into_bytes();
            let txn = Txn {
                session_id: 0,
                time: 1_000 + i as i64,
                op: TxnOp::SetConfig {
                    data: data.clone().into(),
                },
            };
            match write(&net, txn).await {
                Some(r) => {
                    assert!(
                        acked.zxids.last().is_none_or(|last| r.zxid > *last),
                        "acknowledged zxid {} went back",
                        r.zxid
                    );
                    acked.zxids.push(r.zxid);
                    acked.data.insert("/zookeeper/config".into(), data);
                }
                None => {
                    acked.unacked += 1;
                    acked.data.remove("/zookeeper/config");
                }
            }
            continue;
        }
        let (path, data, request) = if i.is_multiple_of(4) {
            let data = format!("v{i}").into_bytes();
            (
                "/counter".to_string(),
                data.clone(),
                Request::SetData(SetDataRequest {
                    path: "/counter".into(),
                    data: Some(data.into()),
                    version: -1,
                }),
            )
        } else if i == 1 {
            (
                "/counter".to_string(),
                b"v0".to_vec(),
                create("/counter", b"v0"),
            )
        } else {
            let p = format!("/w{i}");
            let d = format!("data{i}").into_bytes();
            (p.clone(), d.clone(), create(&p, &d))
        };
        let txn = Txn {
            session_id: session,
            time: 1_000 + i as i64,
            op: TxnOp::Request {
                request,
                auth: vec![],
            },
        };
        match write(&net, txn).await {
            Some(r) => {
                let ok = matches!(r.outcome, Outcome::Response(Ok(_)));
                if let Some(last) = acked.zxids.last() {
                    assert!(r.zxid > *last, "acknowledged zxid {} after {last}", r.zxid);
                }
                acked.zxids.push(r.zxid);
                if ok {
                    acked.data.insert(path, data);
                }
            }
            None => {
                acked.unacked += 1;
                // An unacknowledged setData may or may not have landed: the counter's value is unknown.
                if path == "/counter" {
                    acked.data.remove("/counter");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    acked
}

// ------------------------------------------------------------------------------------------ a run

async fn run(seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sim = Sim::new(seed);
    sim.start_three().await;
    sim.wait_leader(Duration::from_secs(10))
        .await
        .expect("a first leader");

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload(sim.net.clone(), stop.clone(), 400));
    let mut next_id = 4;
    let mut added = false;
    for step in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..300))).await;
        let kind = rng.random_range(0..5);
        match kind {
            0 => {
                // Crash the leader, restart it from its directory a little later.
                let Some(l) = sim.wait_leader(Duration::from_secs(5)).await else {
                    continue;
                };
                sim.note(format!("step {step}: crash leader {l}"));
                sim.crash(l).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..700))).await;
                sim.note(format!("step {step}: restart {l}"));
                sim.start(l).await;
            }
            1 => {
                // Partition one node (the leader half of the time) from every other, then heal.
                let live = sim.live();
                let victim = if rng.random_bool(0.5) {
                    sim.leader().unwrap_or(live[0])
                } else {
                    live[rng.random_range(0..live.len())]
                };
                sim.note(format!("step {step}: isolate {victim}"));
                {
                    let mut st = sim.net.0.lock();
                    for o in sim.nodes.keys() {
                        if *o != victim {
                            st.cut.insert((victim, *o));
                            st.cut.insert((*o, victim));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
                sim.note(format!("step {step}: heal"));
                sim.net.0.lock().cut.clear();
            }
            2 => {
                // Lossy, slow network for a while.
                let loss = rng.random_range(0.05..0.3);
                let delay = rng.random_range(5..40);
                sim.note(format!("step {step}: loss {loss:.2} delay {delay}ms"));
                {
                    let mut st = sim.net.0.lock();
                    st.loss = loss;
                    st.delay_ms = delay;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..800))).await;
                let mut st = sim.net.0.lock();
                st.loss = 0.0;
                st.delay_ms = 0;
            }
            3 if !added => {
                // Add a fresh node: learner, then voter.
                added = true;
                let id = next_id;
                next_id += 1;
                sim.note(format!("step {step}: add node {id}"));
                sim.start(id).await;
                if let Some(l) = sim.wait_leader(Duration::from_secs(5)).await {
                    let r = sim.raft(l).unwrap();
                    let add = r.add_learner(id, BasicNode::new(format!("sim-{id}")), true);
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), add).await {
                        let promote = r.change_membership(
                            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                            false,
                        );
                        let res = tokio::time::timeout(Duration::from_secs(5), promote).await;
                        sim.note(format!(
                            "step {step}: promote {id}: {}",
                            if matches!(res, Ok(Ok(_))) {
                                "ok"
                            } else {
                                "failed"
                            }
                        ));
                    }
                }
            }
            _ => {
                // Remove a follower voter (keeping at least 3 voters), then stop it.
                let Some(l) = sim.wait_leader(Duration::from_secs(5)).await else {
                    continue;
                };
                let (voters, _) = sim.members();
                if voters.len() <= 3 {
                    sim.note(format!(
                        "step {step}: (no removal: {} voters)",
                        voters.len()
                    ));
                    continue;
                }
                let Some(victim) = voters.iter().copied().find(|v| *v != l) else {
                    continue;
                };
                sim.note(format!("step {step}: remove node {victim}"));
                let r = sim.raft(l).unwrap();
                let change = r.change_membership(
                    ChangeMembers::RemoveVoters(BTreeSet::from([victim])),
                    false,
                );
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), change).await {
                    sim.crash(victim).await;
                    sim.nodes.remove(&victim);
                }
            }
        }
    }
    // Heal everything, stop the workload, let the members converge.
    {
        let mut st = sim.net.0.lock();
        st.cut.clear();
        st.loss = 0.0;
        st.delay_ms = 0;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    sim.note(format!(
        "acknowledged {} writes ({} unacknowledged attempts)",
        acked.zxids.len(),
        acked.unacked
    ));
    let leader = sim
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("a leader after healing");
    // A write in the final term commits everything before it on every member.
    let fin = Txn {
        session_id: 0,
        time: 9,
        op: TxnOp::ExpireTtl { paths: vec![] },
    };
    let mut fin_zxid = None;
    for _ in 0..50 {
        if let Some(r) = write(&sim.net, fin.clone()).await {
            fin_zxid = Some(r.zxid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fin_zxid = fin_zxid.expect("a final write commits") as u64;
    // Members converge: all applied the same index, at or past the final write (a leader elected
    // after it appends a blank entry, so "the same" is re-checked until it holds).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (nodes, snaps) = loop {
        let (_, nodes) = sim.members();
        let applied: BTreeMap<u64, i64> = nodes
            .iter()
            .map(|id| {
                (
                    *id,
                    sim.nodes
                        .get(id)
                        .and_then(|n| n.shared.clone())
                        .map(|s| s.db.lock().state.last_zxid())
                        .unwrap_or(-1),
                )
            })
            .collect();
        let top = applied.values().copied().max().unwrap_or(-1);
        if top >= fin_zxid as i64 && applied.values().all(|z| *z == top) {
            // Same applied zxid everywhere: take every state (each under its own lock, re-checking the zxid).
            let snaps: BTreeMap<u64, (i64, Vec<u8>, State)> = nodes
                .iter()
                .map(|id| {
                    let shared = sim.nodes[id].shared.clone().unwrap();
                    let db = shared.db.lock();
                    (
                        *id,
                        (
                            db.state.last_zxid(),
                            db.state.to_snapshot(),
                            db.state.clone(),
                        ),
                    )
                })
                .collect();
            if snaps.values().all(|(z, _, _)| *z == top) {
                break (nodes, snaps);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "members never converged past {fin_zxid} (leader {leader}): applied {applied:?}; {:#?}",
            sim.log
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Checks.
    for (id, (_, _, state)) in &snaps {
        for (path, data) in &acked.data {
            let n = state
                .node(path)
                .unwrap_or_else(|| panic!("node {id}: acknowledged {path} lost; {:#?}", sim.log));
            assert_eq!(
                n.data_bytes(),
                &data[..],
                "node {id}: {path} has other data"
            );
        }
    }
    let snaps: BTreeMap<u64, Vec<u8>> = snaps
        .into_iter()
        .map(|(id, (_, bytes, _))| (id, bytes))
        .collect();
    let first = snaps.values().next().unwrap();
    for (id, s) in &snaps {
        assert!(
            s == first,
            "node {id}'s state differs from node {}'s; {:#?}",
            snaps.keys().next().unwrap(),
            sim.log
        );
    }
    for (id, n) in &sim.nodes {
        assert!(
            !n.regressed.load(Ordering::Relaxed),
            "node {id}: applied zxid went backwards"
        );
    }
    sim.note(format!(
        "{} members agree at zxid {fin_zxid}, {} acknowledged paths present",
        nodes.len(),
        acked.data.len()
    ));
    for id in sim.live() {
        sim.crash(id).await;
    }
    sim.log
}

fn run_seed(seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), run(seed)).await })
    }));
    match result {
        Ok(Ok(log)) => eprintln!("sim seed {seed}: ok in {:?}: {log:?}", started.elapsed()),
        Ok(Err(_)) => panic!("sim seed {seed}: timed out (replay with ROSTER_SIM_SEED={seed})"),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!(
                "sim seed {seed} failed (replay with ROSTER_SIM_SEED={seed}): {}",
                msg.unwrap_or_default()
            );
        }
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}

#[test]
fn seeded_faults_keep_acknowledged_writes_and_replicas_identical() {
    if let Ok(s) = std::env::var("ROSTER_SIM_SEED") {
        run_seed(s.trim().parse().expect("ROSTER_SIM_SEED is a number"));
        return;
    }
    let n: u64 = std::env::var("ROSTER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for seed in 1..=n {
        run_seed(seed);
    }
}

/// Cuts `victim` off from every other node, both directions.
fn isolate(net: &Net, victim: u64, nodes: impl Iterator<Item = u64>) {
    let mut st = net.0.lock();
    for o in nodes {
        if o != victim {
            st.cut.insert((victim, o));
            st.cut.insert((o, victim));
        }
    }
}

/// Pre-Vote: a follower cut off for 3 s (well over ten election timeouts) under light writes keeps its
/// term, and when the partition heals it catches up under the same leader, in the same term: a node
/// returning from a partition causes no election.
#[test]
fn a_returning_follower_catches_up_without_an_election() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sim = Sim::new(7);
        sim.start_three().await;
        let leader = sim
            .wait_leader(Duration::from_secs(10))
            .await
            .expect("a first leader");
        let term = |sim: &Sim, id: u64| {
            sim.raft(id)
                .unwrap()
                .metrics()
                .borrow_watched()
                .current_term
        };
        let term0 = term(&sim, leader);
        let follower = sim.live().into_iter().find(|id| *id != leader).unwrap();

        // Light writes throughout: one every 20 ms, at most 400.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (net, stop) = (sim.net.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = 0usize;
                for i in 0..400i64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let txn = Txn {
                        session_id: 0,
                        time: 1_000 + i,
                        op: TxnOp::ExpireTtl { paths: vec![] },
                    };
                    if write(&net, txn).await.is_some() {
                        acked += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;

        isolate(&sim.net, follower, sim.live().into_iter());
        let cut_at = tokio::time::Instant::now();
        let mut max_cut_term = term0;
        while cut_at.elapsed() < Duration::from_secs(3) {
            max_cut_term = max_cut_term.max(term(&sim, follower));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            max_cut_term, term0,
            "the cut-off follower raised its term (Pre-Vote off?)"
        );
        sim.net.0.lock().cut.clear();

        // The follower catches up with the leader, which stays leader in the same term.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let lm = sim.raft(leader).unwrap().metrics().borrow_watched().clone();
            let fm = sim
                .raft(follower)
                .unwrap()
                .metrics()
                .borrow_watched()
                .clone();
            assert_eq!(
                lm.state,
                openraft::ServerState::Leader,
                "node {leader} stopped leading after the heal (term {} -> {})",
                term0,
                lm.current_term
            );
            assert_eq!(lm.current_term, term0, "a new term after the heal");
            if fm.current_leader == Some(leader) && fm.last_applied == lm.last_applied {
                assert_eq!(fm.current_term, term0);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the follower did not catch up: {:?} vs {:?}",
                fm.last_applied,
                lm.last_applied
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Pre-Vote does not slow down replacing a leader that is really cut off: the majority elects
        // a new one within the lease + election timeout + two round trips (about 0.5 s; 2 s allowed
        // for a busy machine).
        isolate(&sim.net, leader, sim.live().into_iter());
        let cut_at = tokio::time::Instant::now();
        let new_leader = loop {
            let others: Vec<u64> = sim.live().into_iter().filter(|id| *id != leader).collect();
            let found = others.iter().copied().find(|id| {
                sim.raft(*id).unwrap().metrics().borrow_watched().state
                    == openraft::ServerState::Leader
            });
            if let Some(l) = found {
                break l;
            }
            assert!(
                cut_at.elapsed() < Duration::from_secs(2),
                "no new leader 2 s after the leader was cut off"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        eprintln!(
            "leader {leader} cut off: node {new_leader} leads after {:?}",
            cut_at.elapsed()
        );
        sim.net.0.lock().cut.clear();
        stop.store(true, Ordering::Relaxed);
        let acked = writer.await.unwrap();
        assert!(acked > 50, "the majority kept writing: {acked} writes");
        for id in sim.live() {
            sim.crash(id).await;
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}
