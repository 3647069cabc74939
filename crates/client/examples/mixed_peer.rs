//! The Rust participant of the mixed-fleet tests (`tests/curator`): one session of this crate's client,
//! driven line by line on stdin, answering one JSON line per command on stdout.
//!
//! The test harness runs it beside a Java program on Apache Curator so that both take part in one
//! election, one lock, one service registry and one group. Commands (space-separated; one reply each,
//! `{"ok":true,...}` or `{"ok":false,"error":"..."}`):
//!
//! ```text
//! elect PATH ID               join the election on PATH as ID (recipes::election)
//! leadership                  {"leader":bool,"token":T|null}
//! wait_leader MS              wait at most MS for leadership; {"leader":bool,"token":..}
//! participants PATH           [{"id","token","leader","session"}], first in line first
//! resign_election             leave the election (close the candidate)
//! lock PATH DATA MS           try to take the mutex on PATH for MS; {"acquired":bool,"token":..}
//! unlock                      release the held mutex
//! register BASE NAME ID ADDR PORT [PAYLOAD_JSON]   register a service instance
//! unregister                  remove it
//! instances BASE NAME         {"instances":[ServiceInstance JSON...]} sorted by id
//! resolve BASE URI            {"targets":[ids]} for a cluster:// name
//! provider BASE NAME ID MS    a watched ServiceProvider: wait at most MS until it lists ID
//! join GROUP ID ADDR PORT     join a group (recipes::membership)
//! leave                       leave it
//! members GROUP               {"ids":[..],"data":{id: utf8}}
//! session                     {"session": id as hex}
//! ```
//!
//! Reads of what other clients wrote (`participants`, `instances`, `resolve`, `members`) `sync` first.
//!
//! Usage: `mixed_peer HOSTS [SESSION_TIMEOUT_MS]`; it prints `{"ok":true,"session":..}` once connected
//! and exits at end of input. Left out: anything the mixed-fleet tests do not need (several locks or
//! elections at once, renewing sessions: a peer whose session expires stays expired).

use std::io::{BufRead, Write};
use std::time::Duration;

use roster_client::recipes::discovery::Registration;
use roster_client::recipes::discovery::{ServiceDiscovery, ServiceInstance, Strategy};
use roster_client::recipes::election::{self, Candidate, LeaderElection};
use roster_client::recipes::lock::{LockGuard, Mutex};
use roster_client::recipes::membership::{Group, MemberInfo, Membership};
use roster_client::{Client, ClientOptions};
use serde_json::{json, Value};

#[derive(Default)]
struct Peer {
    candidate: Option<Candidate>,
    guard: Option<LockGuard>,
    registration: Option<Registration>,
    membership: Option<Membership>,
}

fn arg<'a>(words: &'a [&'a str], i: usize, what: &str) -> Result<&'a str, String> {
    words
        .get(i)
        .copied()
        .ok_or_else(|| format!("missing argument {i} ({what}); see the usage in mixed_peer.rs"))
}

fn millis(words: &[&str], i: usize) -> Result<Duration, String> {
    let s = arg(words, i, "milliseconds")?;
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))
}

/// Brings this client's server up to date with the leader before a read of what other clients wrote
/// (a server may lag behind the leader: ZooKeeper's reads are only sequentially consistent per client).
async fn sync(client: &Client, path: &str) -> Result<(), String> {
    match client.sync(path).await {
        Ok(()) | Err(roster_client::Error::Code(roster_client::ErrorCode::NoNode)) => Ok(()),
        Err(e) => Err(format!("sync {path}: {e}")),
    }
}

async fn run(client: &Client, peer: &mut Peer, words: &[&str]) -> Result<Value, String> {
    let err = |e: roster_client::Error| e.to_string();
    match words[0] {
        "session" => Ok(json!({ "session": format!("{:#x}", client.session_id()) })),
        "elect" => {
            let path = arg(words, 1, "path")?;
            let id = arg(words, 2, "id")?;
            let c = LeaderElection::new(client, path, id)
                .join()
                .await
                .map_err(err)?;
            peer.candidate = Some(c);
            Ok(json!({}))
        }
        "leadership" => {
            let c = peer.candidate.as_ref().ok_or("not in an election")?;
            Ok(json!({ "leader": c.is_leader(), "token": c.fencing_token() }))
        }
        "wait_leader" => {
            let c = peer.candidate.as_ref().ok_or("not in an election")?;
            let t = millis(words, 1)?;
            match tokio::time::timeout(t, c.wait_leader()).await {
                Ok(Ok(token)) => Ok(json!({ "leader": true, "token": token })),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Ok(json!({ "leader": false, "token": null })),
            }
        }
        "participants" => {
            let path = arg(words, 1, "path")?;
            sync(client, path).await?;
            let ps = election::participants(client, path).await.map_err(err)?;
            let list: Vec<Value> = ps
                .iter()
                .map(|p| {
                    json!({"id": p.id, "token": p.token, "leader": p.is_leader,
                           "session": format!("{:#x}", p.session_id)})
                })
                .collect();
            Ok(json!({ "participants": list }))
        }
        "resign_election" => {
            let c = peer.candidate.take().ok_or("not in an election")?;
            c.close().await.map_err(err)?;
            Ok(json!({}))
        }
        "lock" => {
            let path = arg(words, 1, "path")?;
            let data = arg(words, 2, "data")?;
            let t = millis(words, 3)?;
            if peer.guard.is_some() {
                return Err("already holding the lock: unlock first".into());
            }
            let m = Mutex::new(client, path).with_data(data.as_bytes());
            match m.try_acquire(t).await.map_err(err)? {
                Some(g) => {
                    let token = g.fencing_token();
                    peer.guard = Some(g);
                    Ok(json!({ "acquired": true, "token": token }))
                }
                None => Ok(json!({ "acquired": false, "token": null })),
            }
        }
        "unlock" => {
            let g = peer.guard.take().ok_or("not holding the lock")?;
            g.release().await.map_err(err)?;
            Ok(json!({}))
        }
        "register" => {
            let base = arg(words, 1, "base")?;
            let name = arg(words, 2, "name")?;
            let id = arg(words, 3, "id")?;
            let addr = arg(words, 4, "address")?;
            let port: u16 = arg(words, 5, "port")?
                .parse()
                .map_err(|_| "port is not a number")?;
            let mut inst = ServiceInstance::new(name, id, addr, port);
            if let Some(p) = words.get(6) {
                let v: Value =
                    serde_json::from_str(p).map_err(|e| format!("payload is not JSON: {e}"))?;
                inst = inst.with_payload(v);
            }
            let reg = ServiceDiscovery::new(client, base)
                .register(inst)
                .await
                .map_err(err)?;
            let path = reg.path().to_string();
            peer.registration = Some(reg);
            Ok(json!({ "path": path }))
        }
        "unregister" => {
            let r = peer.registration.take().ok_or("nothing registered")?;
            r.unregister().await.map_err(err)?;
            Ok(json!({}))
        }
        "instances" => {
            let base = arg(words, 1, "base")?;
            let name = arg(words, 2, "name")?;
            sync(client, base).await?;
            let mut list = ServiceDiscovery::new(client, base)
                .instances(name)
                .await
                .map_err(err)?;
            list.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(json!({ "instances": list }))
        }
        "resolve" => {
            let base = arg(words, 1, "base")?;
            let uri = arg(words, 2, "uri")?;
            sync(client, base).await?;
            let r = ServiceDiscovery::new(client, base)
                .resolve(uri)
                .await
                .map_err(err)?;
            let mut ids: Vec<String> = r.targets().iter().map(|i| i.id.clone()).collect();
            ids.sort();
            Ok(json!({ "targets": ids, "path": r.uri.path }))
        }
        "provider" => {
            let base = arg(words, 1, "base")?;
            let name = arg(words, 2, "name")?;
            let id = arg(words, 3, "id")?.to_string();
            let t = millis(words, 4)?;
            let mut p = ServiceDiscovery::new(client, base)
                .provider(name, Strategy::RoundRobin)
                .await
                .map_err(err)?;
            let seen = tokio::time::timeout(t, p.wait_for(|l| l.iter().any(|i| i.id == id))).await;
            let mut ids: Vec<String> = p.instances().into_iter().map(|i| i.id).collect();
            ids.sort();
            Ok(json!({ "seen": matches!(seen, Ok(Ok(()))), "ids": ids }))
        }
        "join" => {
            let group = arg(words, 1, "group")?;
            let id = arg(words, 2, "id")?;
            let addr = arg(words, 3, "address")?;
            let port: u16 = arg(words, 4, "port")?
                .parse()
                .map_err(|_| "port is not a number")?;
            let m = Group::new(client, group)
                .join(id, MemberInfo::new(addr, port))
                .await
                .map_err(err)?;
            peer.membership = Some(m);
            Ok(json!({}))
        }
        "leave" => {
            let m = peer.membership.take().ok_or("not a member")?;
            m.leave().await.map_err(err)?;
            Ok(json!({}))
        }
        "members" => {
            let group = arg(words, 1, "group")?;
            sync(client, group).await?;
            let view = Group::new(client, group).members().await.map_err(err)?;
            let mut data = serde_json::Map::new();
            for m in &view.members {
                data.insert(
                    m.id.clone(),
                    Value::String(String::from_utf8_lossy(&m.data).into_owned()),
                );
            }
            let mut ids = view.ids();
            ids.sort();
            Ok(json!({ "ids": ids, "data": data }))
        }
        other => Err(format!(
            "unknown command {other:?}; see the command list in mixed_peer.rs"
        )),
    }
}

fn reply(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(hosts) = args.get(1) else {
        eprintln!("usage: mixed_peer HOSTS [SESSION_TIMEOUT_MS]");
        std::process::exit(2);
    };
    let timeout_ms: u64 = match args.get(2).map(|s| s.parse()) {
        None => 4000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("SESSION_TIMEOUT_MS must be a number of milliseconds");
            std::process::exit(2);
        }
    };
    let options = ClientOptions {
        session_timeout: Duration::from_millis(timeout_ms),
        ..ClientOptions::default()
    };
    let client = match Client::connect(hosts, options).await {
        Ok(c) => c,
        Err(e) => {
            reply(json!({"ok": false, "error": format!("connect to {hosts}: {e}")}));
            std::process::exit(1);
        }
    };
    reply(json!({"ok": true, "session": format!("{:#x}", client.session_id())}));
    let mut peer = Peer::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let v = match run(&client, &mut peer, &words).await {
            Ok(Value::Object(mut m)) => {
                m.insert("ok".into(), Value::Bool(true));
                Value::Object(m)
            }
            Ok(other) => json!({"ok": true, "value": other}),
            Err(e) => json!({"ok": false, "error": e}),
        };
        reply(v);
    }
    let _ = client.close().await;
}
