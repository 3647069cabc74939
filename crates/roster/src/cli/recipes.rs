//! The recipe subcommands: `roster members GROUP [--watch]`, `roster leader ELECTION`,
//! `roster services [SERVICE]` and `roster resolve cluster://service/path`. They read the node layouts
//! of `roster_client::recipes` (Curator-compatible for elections and service discovery), so they also
//! show groups, elections and services made by other clients.
//!
//! Exit codes, besides the common ones (0 success, 1 ZooKeeper error such as `NoNode` for a missing
//! group, 2 connection problem): **3** when the answer is empty: an election without leader, a service or
//! a `cluster://` name without live instances.

use std::io::Write;
use std::process::ExitCode;

use roster_client::recipes::discovery::{ServiceDiscovery, ServiceInstance};
use roster_client::recipes::election;
use roster_client::recipes::membership::{read_view, Group, GroupEvent, Member};
use roster_client::{Client, Error, ErrorCode};
use serde_json::{json, Value};

use super::output::{print_json, Table};
use super::{Context, Failure};

/// Exit code for an empty answer (no leader, no instance).
pub const EXIT_EMPTY: u8 = 3;

fn member_json(m: &Member) -> Value {
    let info = m.info();
    json!({
        "id": m.id,
        "address": info.address,
        "port": info.port,
        "tags": info.tags,
        "session_id": format!("{:#x}", m.session_id),
        "czxid": m.czxid,
        "mzxid": m.mzxid,
    })
}

fn member_row(m: &Member) -> Vec<String> {
    let info = m.info();
    let tags: Vec<String> = info.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        m.id.clone(),
        info.address.clone(),
        info.port.to_string(),
        if tags.is_empty() {
            "-".into()
        } else {
            tags.join(",")
        },
        format!("{:#x}", m.session_id),
        format!("{:#x}", m.czxid),
    ]
}

const MEMBER_HEADERS: [&str; 6] = ["ID", "ADDRESS", "PORT", "TAGS", "SESSION", "JOINED_ZXID"];

/// `roster members GROUP [--watch [--count N]]`.
pub async fn members(
    c: &Client,
    group: &str,
    watch: bool,
    count: Option<u64>,
    json_out: bool,
) -> Result<ExitCode, Failure> {
    if !watch {
        // A missing group is an error (exit 1); an empty one is not.
        if c.exists(group)
            .await
            .doing(|| format!("members {group}"))?
            .is_none()
        {
            return Err(Failure::Zk(
                format!("members {group}"),
                Error::Code(ErrorCode::NoNode),
            ));
        }
        let view = read_view(c, group)
            .await
            .doing(|| format!("members {group}"))?;
        if json_out {
            let members: Vec<Value> = view.members.iter().map(member_json).collect();
            print_json(&json!({ "group": group, "zxid": view.zxid, "members": members }))?;
        } else {
            let mut t = Table::new(&MEMBER_HEADERS);
            for m in &view.members {
                t.row(member_row(m));
            }
            t.print()?;
            println!(
                "{} member{} (consistent at zxid {:#x})",
                view.members.len(),
                if view.members.len() == 1 { "" } else { "s" },
                view.zxid
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut w = Group::new(c, group)
        .watch()
        .await
        .doing(|| format!("members {group}"))?;
    let view = w.view();
    if json_out {
        for m in &view.members {
            print_json(&json!({ "event": "member", "member": member_json(m), "zxid": view.zxid }))?;
        }
    } else {
        let mut t = Table::new(&MEMBER_HEADERS);
        for m in &view.members {
            t.row(member_row(m));
        }
        t.print()?;
        println!(
            "-- watching {group} from zxid {:#x} (Ctrl-C to stop)",
            view.zxid
        );
    }
    std::io::stdout().flush()?;
    let mut seen = 0u64;
    if count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let ev = tokio::select! {
            ev = w.next() => ev,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Some(ev) = ev else { break };
        let (json_ev, line, counts) = match &ev {
            GroupEvent::Joined { member, zxid } => (
                json!({ "event": "joined", "member": member_json(member), "zxid": zxid }),
                format!(
                    "JOINED   {:<20} {}  zxid {zxid:#x}",
                    member.id,
                    member.info().endpoint()
                ),
                true,
            ),
            GroupEvent::Left { member, zxid } => (
                json!({ "event": "left", "member": member_json(member), "zxid": zxid }),
                format!(
                    "LEFT     {:<20} {}  zxid {zxid:#x}",
                    member.id,
                    member.info().endpoint()
                ),
                true,
            ),
            GroupEvent::Updated { new, zxid, .. } => (
                json!({ "event": "updated", "member": member_json(new), "zxid": zxid }),
                format!(
                    "UPDATED  {:<20} {}  zxid {zxid:#x}",
                    new.id,
                    new.info().endpoint()
                ),
                true,
            ),
            GroupEvent::Suspended => (
                json!({ "event": "suspended" }),
                "-- connection lost; reconnecting".to_string(),
                false,
            ),
            GroupEvent::Resynced { zxid } => (
                json!({ "event": "resynced", "zxid": zxid }),
                format!("-- reconnected, in sync at zxid {zxid:#x}"),
                false,
            ),
            GroupEvent::Ended => {
                return Err(Failure::Zk(
                    format!("members {group}"),
                    Error::SessionExpired,
                ))
            }
        };
        if json_out {
            print_json(&json_ev)?;
        } else if counts {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
        std::io::stdout().flush()?;
        if counts {
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `roster leader ELECTION [--lock-name NAME]`.
pub async fn leader(
    c: &Client,
    path: &str,
    lock_name: &str,
    json_out: bool,
) -> Result<ExitCode, Failure> {
    let parts = election::participants_with(c, path, lock_name)
        .await
        .doing(|| format!("leader {path}"))?;
    if json_out {
        let list: Vec<Value> = parts
            .iter()
            .map(|p| {
                json!({ "id": p.id, "node": p.node, "token": p.token,
                        "session_id": format!("{:#x}", p.session_id), "leader": p.is_leader })
            })
            .collect();
        let leader = list.first().cloned().unwrap_or(Value::Null);
        print_json(&json!({ "election": path, "leader": leader, "participants": list }))?;
    } else if parts.is_empty() {
        eprintln!("{path}: no candidates, no leader");
    } else {
        let mut t = Table::new(&["POSITION", "ID", "ROLE", "FENCING_TOKEN", "SESSION", "NODE"]);
        for (i, p) in parts.iter().enumerate() {
            t.row(vec![
                i.to_string(),
                p.id.clone(),
                if p.is_leader { "leader" } else { "candidate" }.into(),
                p.token.to_string(),
                format!("{:#x}", p.session_id),
                p.node.rsplit('/').next().unwrap_or("").to_string(),
            ]);
        }
        t.print()?;
    }
    Ok(if parts.is_empty() {
        ExitCode::from(EXIT_EMPTY)
    } else {
        ExitCode::SUCCESS
    })
}

fn instance_json(i: &ServiceInstance) -> Value {
    serde_json::to_value(i).unwrap_or(Value::Null)
}

fn instance_row(i: &ServiceInstance) -> Vec<String> {
    vec![
        i.id.clone(),
        i.address.clone().unwrap_or_else(|| "-".into()),
        i.port.map_or("-".into(), |p| p.to_string()),
        i.ssl_port.map_or("-".into(), |p| p.to_string()),
        super::output::format_time(i.registration_time_utc),
        i.payload.as_ref().map_or("-".into(), |p| p.to_string()),
    ]
}

/// `roster services [SERVICE] [--base PATH]`.
pub async fn services(
    c: &Client,
    base: &str,
    service: Option<&str>,
    json_out: bool,
) -> Result<ExitCode, Failure> {
    let sd = ServiceDiscovery::new(c, base);
    match service {
        None => {
            let names = sd.services().await.doing(|| format!("services {base}"))?;
            let mut rows = Vec::new();
            for n in &names {
                let inst = sd
                    .instances(n)
                    .await
                    .doing(|| format!("services {base}/{n}"))?;
                rows.push((n.clone(), inst));
            }
            if json_out {
                let list: Vec<Value> = rows
                    .iter()
                    .map(|(n, i)| json!({ "name": n, "instances": i.len() }))
                    .collect();
                print_json(&json!({ "base": base, "services": list }))?;
            } else {
                let mut t = Table::new(&["SERVICE", "INSTANCES", "ENDPOINTS"]);
                for (n, i) in &rows {
                    let eps: Vec<String> = i.iter().map(|x| x.endpoint()).collect();
                    t.row(vec![n.clone(), i.len().to_string(), eps.join(",")]);
                }
                t.print()?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(name) => {
            let inst = sd
                .instances(name)
                .await
                .doing(|| format!("services {name}"))?;
            if json_out {
                let list: Vec<Value> = inst.iter().map(instance_json).collect();
                print_json(&json!({ "service": name, "instances": list }))?;
            } else if inst.is_empty() {
                eprintln!("{name}: no live instances");
            } else {
                let mut t =
                    Table::new(&["ID", "ADDRESS", "PORT", "SSL_PORT", "REGISTERED", "PAYLOAD"]);
                for i in &inst {
                    t.row(instance_row(i));
                }
                t.print()?;
            }
            Ok(if inst.is_empty() {
                ExitCode::from(EXIT_EMPTY)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// `roster resolve cluster://service/path [--base PATH] [--names ROOT]`.
pub async fn resolve(
    c: &Client,
    base: &str,
    names: Option<&str>,
    uri: &str,
    json_out: bool,
) -> Result<ExitCode, Failure> {
    let mut sd = ServiceDiscovery::new(c, base);
    if let Some(root) = names {
        sd = sd.with_names(root);
    }
    let r = sd.resolve(uri).await.doing(|| format!("resolve {uri}"))?;
    let suffix = if r.uri.path.is_empty() {
        String::new()
    } else {
        format!("/{}", r.uri.path)
    };
    let targets = r.targets();
    if json_out {
        let list: Vec<Value> = targets
            .iter()
            .map(|i| {
                let mut v = instance_json(i);
                v["target"] = json!(format!("{}{suffix}", i.endpoint()));
                v
            })
            .collect();
        print_json(&json!({
            "uri": uri,
            "service": r.uri.service,
            "path": r.uri.path,
            "owner": r.owner.as_ref().map(|o| o.id.clone()),
            "instances": list,
        }))?;
    } else if targets.is_empty() {
        eprintln!("{uri}: no live instances of service {}", r.uri.service);
    } else {
        let mut t = Table::new(&["ID", "TARGET", "OWNER"]);
        for i in &targets {
            t.row(vec![
                i.id.clone(),
                format!("{}{suffix}", i.endpoint()),
                if r.owner.is_some() { "yes" } else { "-" }.into(),
            ]);
        }
        t.print()?;
    }
    Ok(if targets.is_empty() {
        ExitCode::from(EXIT_EMPTY)
    } else {
        ExitCode::SUCCESS
    })
}
