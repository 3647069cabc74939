//! ZooKeeper's `reconfig` (opcode 16) and `/zookeeper/config`, both mapped onto the Raft membership.
//!
//! # `/zookeeper/config`
//! The leader keeps `/zookeeper/config` equal to the Raft membership in ZooKeeper's dynamic config format
//! (`QuorumMaj.toString`): one line per member, sorted by id, then the version,
//!
//! ```text
//! server.<id>=<peer host>:<peer port>:0:<participant|observer>;<client host>:<client port>
//! version=<hex>
//! ```
//!
//! - `<id>` is the Raft node id (1 for a cluster's first node, then the smallest free id for each joiner), printed
//!   unsigned.
//! - The peer address is the one the node announces in the membership; Roster has no election port, so
//!   the third field is always `0`.
//! - Voters are `participant`, learners `observer`.
//! - The client address is the one the node reports over the peer port (`roster cluster status`); until
//!   the leader learned it (a joining node binds its client port only once it joined), the member's line
//!   has no `;client` part, which ZooKeeper's parser accepts too.
//! - `version` is the log index (zxid) of the membership entry the config describes, in hex without
//!   `0x`, as ZooKeeper prints the zxid of the reconfig that made the config.
//!
//! The config is written by a replicated transaction (`TxnOp::SetConfig`) the leader proposes whenever
//! the text it would write differs from what the tree holds ([`config_loop`]), so every replica's tree
//! agrees and the node's Stat (version, mzxid, mtime) changes like after a setData. It follows every
//! membership change, whatever made it: `reconfig`, `roster cluster`, a join, a node's first start.
//!
//! # `reconfig`
//! Answered like ZooKeeper's leader (`PrepRequestProcessor`): `ReconfigInProgress` while a membership
//! change is not finished (a joint config), `BadVersion` when `curConfigId` is not -1 and not the current
//! `version`, `BadArguments` for malformed server strings or a config without voters, `NoAuth` unless the
//! caller may WRITE `/zookeeper/config` (its ACL is `world:anyone` READ, so only a super user can;
//! Roster has no `skipACL` setting). Incremental mode: `joiningServers` (comma-separated
//! `server.<id>=...` specs) are added through the same code path as `roster cluster` joins (learner,
//! caught up, then voter for `participant`), a member named again with the other role is promoted or
//! demoted (demoted voters stay learners), `leavingServers` (comma-separated ids) are removed as by
//! `roster cluster remove` (which then promotes learners while voters are short of `--target-voters`).
//! Non-incremental mode (`newMembers`) is turned into the joins and removals that reach that set.
//! A joining server must already run as a node of this cluster with that id, at that peer address (a
//! node removed earlier, or one started with `--join`); its client address comes from the node itself,
//! the one in the request is ignored. A member's peer address cannot be changed (`BadArguments`).
//! The answer is ZooKeeper's: `GetDataResponse` with the new config and the Stat of `/zookeeper/config`,
//! once this node applied the config that shows the change (`NewConfigNoQuorum` if that takes longer
//! than [`CONFIG_WAIT`]).
//!
//! Unlike ZooKeeper, a single node accepts `reconfig` (it is a one-voter Raft group, not a standalone
//! server), and `reconfig` is always enabled (ZooKeeper's `reconfigEnabled`).

use super::ctx::NodeCtx;
use crate::raft::handle::MembershipChange;
use crate::reply::{Outcome, WriteInFlight, WriteReply};
use crate::shared::now_ms;
pub use crate::transport::wire::Joiner;
use crate::transport::wire::{PeerError, PeerRequest, PeerResponse};
use roster_proto::{perms, ErrorCode, GetDataResponse, Id, ReconfigRequest, Response, Stat};
use roster_state::{Txn, TxnOp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The path of the config node.
pub const CONFIG_PATH: &str = "/zookeeper/config";
/// How long `reconfig` waits for the config showing its change to be applied here.
pub const CONFIG_WAIT: Duration = Duration::from_secs(30);

/// One server of a dynamic config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// Node id.
    pub id: u64,
    /// Peer address, `host:port`.
    pub peer_addr: String,
    /// `participant` (voter) or `observer` (learner).
    pub voter: bool,
    /// Client address, `host:port`, if known.
    pub client_addr: Option<String>,
}

impl ServerSpec {
    /// The `server.<id>=...` line (without the newline).
    pub fn line(&self) -> String {
        let role = if self.voter {
            "participant"
        } else {
            "observer"
        };
        let mut s = format!("server.{}={}:0:{role}", self.id, self.peer_addr);
        if let Some(c) = &self.client_addr {
            s.push(';');
            s.push_str(c);
        }
        s
    }
}

/// Renders a config as `QuorumMaj.toString` does: member lines sorted by id, then `version=<hex>`.
pub fn render(servers: &[ServerSpec], version: u64) -> String {
    let mut sorted: Vec<&ServerSpec> = servers.iter().collect();
    sorted.sort_by_key(|s| s.id);
    let mut out = String::new();
    for s in sorted {
        out.push_str(&s.line());
        out.push('\n');
    }
    out.push_str(&format!("version={version:x}"));
    out
}

/// Splits `host:port` (an IPv6 host in brackets) off the front of `s`; returns (host:port, rest after ':').
fn split_host_port(s: &str) -> Option<(String, &str)> {
    let (host, rest) = if let Some(r) = s.strip_prefix('[') {
        let end = r.find(']')?;
        (format!("[{}]", &r[..end]), r[end + 1..].strip_prefix(':')?)
    } else {
        let i = s.find(':')?;
        (s[..i].to_string(), &s[i + 1..])
    };
    let (port, rest) = match rest.find(':') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let port: u16 = port.trim().parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some((format!("{host}:{port}"), rest))
}

/// Parses one `server.<id>=<host>:<port>[:<election port>][:<role>][;[<client host>:]<client port>]`.
pub fn parse_server(spec: &str) -> Result<ServerSpec, String> {
    let spec = spec.trim();
    let (key, value) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: expected server.<id>=<address>"))?;
    let id: u64 = key
        .trim()
        .strip_prefix("server.")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| format!("{spec:?}: expected server.<id> with a numeric id"))?;
    let (server, client) = match value.split_once(';') {
        Some((s, c)) => (s.trim(), Some(c.trim())),
        None => (value.trim(), None),
    };
    let (peer_addr, rest) = split_host_port(server)
        .ok_or_else(|| format!("{spec:?}: expected <host>:<port> for the server"))?;
    let mut voter = true;
    for part in rest.split(':').filter(|p| !p.is_empty()) {
        match part {
            "participant" => voter = true,
            "observer" => voter = false,
            p if p.parse::<u16>().is_ok() => {}
            p => return Err(format!("{spec:?}: unknown role {p:?}")),
        }
    }
    let client_addr = match client {
        None | Some("") => None,
        Some(c) if c.parse::<u16>().is_ok() => Some(format!("0.0.0.0:{c}")),
        Some(c) => Some(
            split_host_port(c)
                .ok_or_else(|| format!("{spec:?}: bad client address {c:?}"))?
                .0,
        ),
    };
    Ok(ServerSpec {
        id,
        peer_addr,
        voter,
        client_addr,
    })
}

/// Parses a whole config (`server.*` lines and `version=`); other lines are ignored. Returns the servers
/// and the version (0 when absent).
pub fn parse_config(text: &str) -> (Vec<ServerSpec>, u64) {
    let mut servers = Vec::new();
    let mut version = 0;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("version=") {
            version = u64::from_str_radix(v.trim(), 16).unwrap_or(0);
        } else if line.starts_with("server.") {
            if let Ok(s) = parse_server(line) {
                servers.push(s);
            }
        }
    }
    (servers, version)
}

/// The outcome of a forwarded reconfig: 0, or a ZooKeeper error code, with a message.
pub type ChangeResult = Result<(), (ErrorCode, String)>;

fn refused(code: ErrorCode, msg: impl Into<String>) -> (ErrorCode, String) {
    (code, msg.into())
}

/// The ZooKeeper error code a forwarded membership change answers with (carried in a `Refused`
/// message as `code=<n>: ...`).
fn encode_err(code: ErrorCode, msg: &str) -> PeerResponse {
    PeerResponse::Err(PeerError::Refused(format!("code={}: {msg}", code.code())))
}

fn decode_err(msg: &str) -> (ErrorCode, String) {
    let code = msg
        .split("code=")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|c| c.parse::<i32>().ok())
        .and_then(ErrorCode::from_i32)
        .unwrap_or(ErrorCode::NewConfigNoQuorum);
    (code, msg.to_string())
}

/// The peer request handler for `PeerRequest::Reconfig`: applies the change here when leading,
/// forwards it to the leader otherwise.
pub async fn handle_peer(
    ctx: &Arc<NodeCtx>,
    joining: Vec<Joiner>,
    leaving: Vec<u64>,
) -> PeerResponse {
    match apply_changes(ctx, joining, leaving).await {
        Ok(()) => PeerResponse::Ack,
        Err((code, msg)) => encode_err(code, &msg),
    }
}

/// Carries out the membership changes on the leader (forwarding them there from another node).
pub async fn apply_changes(
    ctx: &Arc<NodeCtx>,
    joining: Vec<Joiner>,
    leaving: Vec<u64>,
) -> ChangeResult {
    if !ctx.raft.is_leader() {
        let Some((leader, addr)) = ctx.raft.leader_addr() else {
            return Err(refused(ErrorCode::NewConfigNoQuorum, "no leader"));
        };
        let Some(addr) = addr else {
            return Err(refused(
                ErrorCode::NewConfigNoQuorum,
                format!("leader {leader} unknown"),
            ));
        };
        if leader == ctx.identity.node_id {
            return Err(refused(
                ErrorCode::NewConfigNoQuorum,
                "leadership changed; retry",
            ));
        }
        let req = PeerRequest::Reconfig { joining, leaving };
        let cluster = Some(ctx.identity.cluster_id.clone());
        return match super::admin::call(
            &addr,
            cluster,
            ctx.identity.node_id,
            req,
            Duration::from_secs(300),
            ctx.peer_tls.as_deref(),
        )
        .await
        {
            Ok(PeerResponse::Ack) => Ok(()),
            Ok(other) => Err(refused(
                ErrorCode::NewConfigNoQuorum,
                format!("unexpected answer {other:?}"),
            )),
            Err(e) => Err(decode_err(&e.to_string())),
        };
    }
    for j in joining {
        let m = ctx.raft.status();
        let member = m.nodes.get(&j.id).cloned();
        let is_voter = m.voters.contains(&j.id);
        match member {
            Some(addr) if addr != j.peer_addr => {
                return Err(refused(
                    ErrorCode::BadArguments,
                    format!(
                        "server {} is a member at {addr}; its peer address cannot be changed",
                        j.id
                    ),
                ))
            }
            Some(_) if is_voter == j.voter => {}
            Some(_) => {
                let _g = ctx.cluster.membership_lock.lock().await;
                let change = if j.voter {
                    MembershipChange::AddVoters(BTreeSet::from([j.id]))
                } else {
                    if m.voters.len() == 1 {
                        return Err(refused(
                            ErrorCode::BadArguments,
                            "the new configuration must include at least 1 follower",
                        ));
                    }
                    MembershipChange::DemoteVoters(BTreeSet::from([j.id]))
                };
                tracing::info!(
                    node = j.id,
                    voter = j.voter,
                    "reconfig: changing the role of a member"
                );
                ctx.raft
                    .change_membership(change, true)
                    .await
                    .map_err(|e| refused(ErrorCode::NewConfigNoQuorum, e.to_string()))?;
            }
            None => {
                match super::membership::add(ctx, j.id, j.peer_addr.clone(), Some(j.voter)).await {
                    PeerResponse::Joined { .. } => {}
                    PeerResponse::Err(e) => {
                        return Err(refused(ErrorCode::NewConfigNoQuorum, e.to_string()))
                    }
                    other => {
                        return Err(refused(
                            ErrorCode::NewConfigNoQuorum,
                            format!("unexpected answer {other:?}"),
                        ))
                    }
                }
            }
        }
    }
    for id in leaving {
        match super::membership::remove(ctx, id).await {
            PeerResponse::Ack => {}
            PeerResponse::Err(PeerError::Refused(m)) => {
                return Err(refused(ErrorCode::BadArguments, m))
            }
            PeerResponse::Err(e) => {
                return Err(refused(ErrorCode::NewConfigNoQuorum, e.to_string()))
            }
            other => {
                return Err(refused(
                    ErrorCode::NewConfigNoQuorum,
                    format!("unexpected answer {other:?}"),
                ))
            }
        }
    }
    Ok(())
}

/// The current `/zookeeper/config` data and stat on this node.
fn current_config(ctx: &NodeCtx) -> (String, Stat) {
    let db = ctx.shared.db.lock();
    let data = db
        .state
        .node(CONFIG_PATH)
        .map(|n| String::from_utf8_lossy(n.data_bytes()).into_owned())
        .unwrap_or_default();
    let stat = db.state.stat(CONFIG_PATH).unwrap_or_default();
    (data, stat)
}

/// Whether the client may WRITE `/zookeeper/config` (super users may).
fn authorized(ctx: &NodeCtx, auth: &[Id]) -> bool {
    let db = ctx.shared.db.lock();
    let Some(acl) = db.state.acl(CONFIG_PATH) else {
        return false;
    };
    roster_state::acl::check_acl(acl, perms::WRITE, auth).is_ok()
}

/// Executes a client's `reconfig` (see the module doc); the answer is `GetData{config, stat}`.
pub async fn reconfig(
    ctx: &Arc<NodeCtx>,
    req: &ReconfigRequest,
    auth: &[Id],
) -> Result<(i64, Response), ErrorCode> {
    let joining_s = req.joining_servers.trim();
    let leaving_s = req.leaving_servers.trim();
    let new_members_s = req.new_members.trim();
    let m = ctx.raft.status();
    if m.changing {
        return Err(ErrorCode::ReconfigInProgress);
    }
    let (cur_text, _) = current_config(ctx);
    let (_, cur_version) = parse_config(&cur_text);
    if req.cur_config_id != -1 && req.cur_config_id as u64 != cur_version {
        return Err(ErrorCode::BadVersion);
    }
    let voters: BTreeSet<u64> = m.voters.clone();
    let nodes: BTreeMap<u64, String> = m.nodes.clone();
    let (joining, leaving): (Vec<Joiner>, Vec<u64>) =
        if joining_s.is_empty() && leaving_s.is_empty() && !new_members_s.is_empty() {
            // Non-incremental: the whole new member set.
            let mut want = Vec::new();
            for s in new_members_s
                .split([',', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty() && !s.starts_with("version="))
            {
                want.push(parse_server(s).map_err(|_| ErrorCode::BadArguments)?);
            }
            let ids: BTreeSet<u64> = want.iter().map(|s| s.id).collect();
            let leaving = nodes
                .keys()
                .filter(|id| !ids.contains(id))
                .copied()
                .collect();
            let joining = want
                .into_iter()
                .map(|s| Joiner {
                    id: s.id,
                    peer_addr: s.peer_addr,
                    voter: s.voter,
                })
                .collect();
            (joining, leaving)
        } else {
            let mut joining = Vec::new();
            for s in joining_s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let s = parse_server(s).map_err(|_| ErrorCode::BadArguments)?;
                joining.push(Joiner {
                    id: s.id,
                    peer_addr: s.peer_addr,
                    voter: s.voter,
                });
            }
            let mut leaving = Vec::new();
            for s in leaving_s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                leaving.push(s.parse::<u64>().map_err(|_| ErrorCode::BadArguments)?);
            }
            (joining, leaving)
        };
    // The voters after the change must not be empty (ZooKeeper: "at least 1 follower").
    let mut next: BTreeSet<u64> = voters.clone();
    for j in &joining {
        if j.voter {
            next.insert(j.id);
        } else {
            next.remove(&j.id);
        }
    }
    for l in &leaving {
        next.remove(l);
    }
    if next.is_empty() {
        return Err(ErrorCode::BadArguments);
    }
    if !authorized(ctx, auth) {
        return Err(ErrorCode::NoAuth);
    }
    tracing::info!(?joining, ?leaving, "reconfig");
    let expect_joined: Vec<(u64, bool)> = joining.iter().map(|j| (j.id, j.voter)).collect();
    let expect_left: Vec<u64> = leaving
        .iter()
        .filter(|l| !joining.iter().any(|j| j.id == **l))
        .copied()
        .collect();
    if let Err((code, msg)) = apply_changes(ctx, joining, leaving).await {
        tracing::warn!(code = ?code, %msg, "reconfig failed");
        return Err(code);
    }
    // Wait until this node applied the config that shows the change.
    let deadline = tokio::time::Instant::now() + CONFIG_WAIT;
    loop {
        let (text, stat) = current_config(ctx);
        let (servers, _) = parse_config(&text);
        let done = expect_joined
            .iter()
            .all(|(id, voter)| servers.iter().any(|s| s.id == *id && s.voter == *voter))
            && expect_left
                .iter()
                .all(|id| !servers.iter().any(|s| s.id == *id));
        if done {
            let zxid = stat.mzxid;
            return Ok((
                zxid,
                Response::GetData(GetDataResponse {
                    data: Some(bytes::Bytes::from(text)),
                    stat,
                }),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ErrorCode::NewConfigNoQuorum);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pending answer of a client's `reconfig`, as a connection awaits writes.
pub fn pending(ctx: Arc<NodeCtx>, req: ReconfigRequest, auth: Vec<Id>) -> WriteInFlight {
    Box::pin(async move {
        let (zxid, outcome) = match reconfig(&ctx, &req, &auth).await {
            Ok((zxid, r)) => (zxid, Outcome::Response(Ok(r))),
            Err(code) => (
                ctx.shared.db.lock().state.last_zxid(),
                Outcome::Response(Err(code)),
            ),
        };
        Ok(WriteReply::new(zxid, outcome))
    })
}

/// A `reconfig` that reached the local-request path (it normally travels the write path, see
/// `crate::net::routing::propose`): it cannot wait for a membership change there, so it is refused.
pub fn local(_req: &ReconfigRequest) -> Result<Response, ErrorCode> {
    Err(ErrorCode::Unimplemented)
}

/// The config text the leader wants now, or `None` while a membership change is under way.
fn desired(ctx: &NodeCtx, clients: &HashMap<u64, (String, String)>) -> Option<String> {
    let m = ctx.raft.status();
    if m.changing {
        return None;
    }
    let version = m.membership_index;
    // Only a committed (here: applied) membership is described.
    if m.applied < version {
        return None;
    }
    let servers: Vec<ServerSpec> = m
        .nodes
        .iter()
        .map(|(id, addr)| ServerSpec {
            id: *id,
            peer_addr: addr.clone(),
            voter: m.voters.contains(id),
            client_addr: clients
                .get(id)
                .filter(|(peer, _)| peer == addr)
                .map(|(_, c)| c.clone()),
        })
        .collect();
    Some(render(&servers, version))
}

/// On the leader, keeps `/zookeeper/config` equal to the membership (see the module doc): every
/// `tick`, proposes a `SetConfig` when the text differs. Client addresses of other members are asked
/// over the peer port (`Status`), at most once a second per member, until known.
pub async fn config_loop(ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // node id → (peer address, client address)
    let mut clients: HashMap<u64, (String, String)> = HashMap::new();
    let mut asked: HashMap<u64, i64> = HashMap::new();
    let mut proposed: Option<(String, i64)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !ctx.raft.is_leader() || !ctx.cluster.is_serving() {
            proposed = None;
            continue;
        }
        let me = ctx.identity.node_id;
        let mine = ctx.cluster.client_addr.lock().clone();
        if !mine.is_empty() {
            clients.insert(me, (ctx.cluster.peer_addr.clone(), mine));
        }
        let (cur_text, _) = current_config(&ctx);
        for s in parse_config(&cur_text).0 {
            if let Some(c) = s.client_addr {
                clients.entry(s.id).or_insert((s.peer_addr, c));
            }
        }
        let members: Vec<(u64, String)> = ctx.raft.status().nodes.into_iter().collect();
        let now = now_ms();
        for (id, addr) in &members {
            let known = clients.get(id).is_some_and(|(p, _)| p == addr);
            // Unknown addresses are asked every second; known ones are re-checked every 10 s (a
            // member restarted on another client port).
            let every = if known { 10_000 } else { 1_000 };
            if *id == me || asked.get(id).is_some_and(|t| now - *t < every) {
                continue;
            }
            asked.insert(*id, now);
            // Asked inline but bounded: a member that does not answer delays the config by at most this.
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_millis(500),
                super::admin::status(addr, ctx.peer_tls.as_deref()),
            )
            .await
            {
                if s.node_id == *id && !s.client_addr.is_empty() {
                    clients.insert(*id, (addr.clone(), s.client_addr));
                }
            }
        }
        let Some(want) = desired(&ctx, &clients) else {
            continue;
        };
        if want == cur_text {
            proposed = None;
            continue;
        }
        if proposed
            .as_ref()
            .is_some_and(|(t, at)| *t == want && now - *at < 2_000)
        {
            continue;
        }
        tracing::info!(config = %want.replace('\n', " "), "membership changed: updating /zookeeper/config");
        proposed = Some((want.clone(), now));
        let txn = Txn {
            session_id: 0,
            time: now,
            op: TxnOp::SetConfig {
                data: bytes::Bytes::from(want),
            },
        };
        if let Err(e) = ctx.raft.submit(txn).await {
            tracing::warn!(error = %e, "cannot propose the new /zookeeper/config");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_zookeeper_format() {
        let servers = vec![
            ServerSpec {
                id: 2,
                peer_addr: "10.0.0.2:2888".into(),
                voter: false,
                client_addr: None,
            },
            ServerSpec {
                id: 1,
                peer_addr: "10.0.0.1:2888".into(),
                voter: true,
                client_addr: Some("10.0.0.1:2181".into()),
            },
        ];
        let text = render(&servers, 0x100000000);
        assert_eq!(text, "server.1=10.0.0.1:2888:0:participant;10.0.0.1:2181\nserver.2=10.0.0.2:2888:0:observer\nversion=100000000");
        let (parsed, v) = parse_config(&text);
        assert_eq!(v, 0x100000000);
        assert_eq!(parsed[0], servers[1]);
        assert_eq!(parsed[1], servers[0]);
        let s = parse_server("server.5=127.0.0.1:2890:3890:observer;2185").unwrap();
        assert_eq!(
            (
                s.id,
                s.peer_addr.as_str(),
                s.voter,
                s.client_addr.as_deref()
            ),
            (5, "127.0.0.1:2890", false, Some("0.0.0.0:2185"))
        );
        let s = parse_server("server.6=[::1]:2890:3890;[::1]:2186").unwrap();
        assert_eq!(
            (s.peer_addr.as_str(), s.voter, s.client_addr.as_deref()),
            ("[::1]:2890", true, Some("[::1]:2186"))
        );
        assert!(parse_server("server.x=1.2.3.4:5").is_err());
        assert!(parse_server("server.1=1.2.3.4").is_err());
        assert!(parse_server("server.1=1.2.3.4:5:6:boss").is_err());
    }
}
