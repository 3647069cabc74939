//! Golden scripts for the state machine: `testscripts/<area>/<name>.txt`.
//!
//! A script is a list of blocks. A block is one or more command lines (lines starting with `#` are
//! comments, lines starting with whitespace continue the previous command, as the ops of a `multi`), a
//! `----` line, then the output up to the next empty line. The runner executes each command against one
//! [`State`] and one [`WatchTable`], and compares the regenerated file with the one on disk. Run with
//! `UPDATE_GOLDENFILES=1` to rewrite the files, then review the diff.
//!
//! Every write is applied at the next zxid (`last_zxid + 1`) with the `time=` given (default: the time of
//! the previous command), prints its result, the `Stat` where there is one, the changes, and the watch
//! events the changes fire on the runner's watch table. Sessions are named `S1`, `S2`... in opening order,
//! and session ids in output are shown by name.
//!
//! Commands:
//! - `session open [timeout=MS] [time=T] [passwd=P]`, `session close [S] [time=T]`, `sessions`
//! - `auth S scheme:rest` (a session identity used by its later commands: `digest:user:password` is
//!   hashed; `ip:1.2.3.4`; `super`)
//! - `create PATH [data=] [mode=persistent|ephemeral|persistent_sequential|ephemeral_sequential|
//!   container|ttl|ttl_sequential] [flags=N] [op=create|create2|container|ttl] [ttl=MS] [acl=LIST]`
//!   (`null=true` instead of `data=`: a null buffer, on `set` too; null data prints as `null`)
//! - `set PATH data= [version=]`, `delete PATH [version=]`, `check PATH version=`, `setacl PATH acl= [version=]`
//! - `multi` with indented op lines (create/set/delete/check)
//! - `get`, `exists`, `children`, `ls` (getChildren), `getacl`, `count`, `ephemerals [PREFIX]`,
//!   `multiread` with indented `get PATH`/`ls PATH` lines; `watch=true` registers a watch for `conn=`
//! - `addwatch PATH mode=persistent|recursive`, `removewatches PATH type=`, `checkwatches PATH type=`,
//!   `setwatches zxid=N [data=a,b] [exist=] [child=] [persistent=] [recursive=]`, `dropconn`, `watches`
//! - `expire-ttl [paths=a,b] time=T` (defaults to `ttl_candidates(time)`), `ttl-candidates time=T`
//! - `stat PATH`, `tree`, `snapshot` (round trip check), `noop` (note_zxid)
//! - `raw <postcard hex of a Txn>`: apply arbitrary bytes (decoding errors are printed)
//!
//! Every command also takes `session=S` (default: the last opened session), `conn=N` (default 1),
//! `time=T` and `zxid=N`.

use bytes::Bytes;
use roster_proto::*;
use roster_state::{read, Applied, Change, State, Txn, TxnOp, TxnResult, WatchTable};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One parsed command: name, positional arguments, key=value arguments, continuation lines.
#[derive(Debug, Default)]
struct Cmd {
    name: String,
    pos: Vec<String>,
    kv: BTreeMap<String, String>,
    sub: Vec<Cmd>,
}

fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // \xNN inside a token is the character U+00NN (for control characters in paths).
            '\\' if chars.peek() == Some(&'x') => {
                chars.next();
                let hex: String = chars.by_ref().take(2).collect();
                cur.push(char::from(u8::from_str_radix(&hex, 16).expect("\\xNN")));
                has = true;
            }
            '"' => {
                in_quotes = !in_quotes;
                has = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        out.push(cur);
    }
    out
}

fn parse_cmd(line: &str) -> Cmd {
    let mut toks = tokenize(line).into_iter();
    let mut cmd = Cmd {
        name: toks.next().unwrap_or_default(),
        ..Cmd::default()
    };
    for t in toks {
        match t.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.starts_with('/') => {
                cmd.kv.insert(k.to_string(), v.to_string());
            }
            _ => cmd.pos.push(t),
        }
    }
    cmd
}

struct Runner {
    state: State,
    watches: WatchTable,
    /// Session names in opening order → ids.
    names: Vec<(String, i64)>,
    /// Identities per session id.
    auth: BTreeMap<i64, Vec<Id>>,
    time: i64,
}

fn perms_of(s: &str) -> i32 {
    s.chars()
        .map(|c| match c {
            'r' => perms::READ,
            'w' => perms::WRITE,
            'c' => perms::CREATE,
            'd' => perms::DELETE,
            'a' => perms::ADMIN,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

fn perms_str(p: i32) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (perms::CREATE, 'c'),
        (perms::DELETE, 'd'),
        (perms::READ, 'r'),
        (perms::WRITE, 'w'),
        (perms::ADMIN, 'a'),
    ] {
        if p & bit != 0 {
            s.push(c);
        }
    }
    if p & !perms::ALL != 0 {
        write!(s, "+{:#x}", p & !perms::ALL).unwrap();
    }
    s
}

/// `world:anyone:cdrwa,digestpw:bob:secret:r,ip:10.0.0.0/8:rw,auth::a,digest:bob:HASH:r`.
fn parse_acl(s: &str) -> Vec<Acl> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',')
        .map(|e| {
            let (rest, p) = e.rsplit_once(':').expect("acl entry needs perms");
            let (scheme, id) = rest.split_once(':').unwrap_or((rest, ""));
            if scheme == "digestpw" {
                Acl {
                    perms: perms_of(p),
                    id: Id::new("digest", &roster_state::digest(id)),
                }
            } else {
                Acl {
                    perms: perms_of(p),
                    id: Id::new(scheme, id),
                }
            }
        })
        .collect()
}

fn fmt_acl(acl: &[Acl]) -> String {
    acl.iter()
        .map(|a| format!("{}:{}:{}", a.id.scheme, a.id.id, perms_str(a.perms)))
        .collect::<Vec<_>>()
        .join(",")
}

fn fmt_data(d: &Option<Bytes>) -> String {
    let Some(d) = d else {
        return "null".into();
    };
    match std::str::from_utf8(d) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!(
            "0x{}",
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

fn event_name(t: i32) -> String {
    EventType::from_i32(t)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|_| t.to_string())
}

impl Runner {
    fn new() -> Runner {
        Runner {
            state: State::new(),
            watches: WatchTable::new(),
            names: Vec::new(),
            auth: BTreeMap::new(),
            time: 0,
        }
    }

    fn sid_name(&self, id: i64) -> String {
        self.names
            .iter()
            .find(|(_, i)| *i == id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("{id:#x}"))
    }

    fn owner(&self, owner: i64) -> String {
        match roster_state::NodeKind::of(owner) {
            roster_state::NodeKind::Persistent => "0".into(),
            roster_state::NodeKind::Container => "container".into(),
            roster_state::NodeKind::Ttl(t) => format!("ttl({t})"),
            roster_state::NodeKind::Ephemeral(id) => self.sid_name(id),
        }
    }

    fn fmt_stat(&self, s: &Stat) -> String {
        format!(
            "czxid={} mzxid={} pzxid={} ctime={} mtime={} version={} cversion={} aversion={} owner={} dataLength={} numChildren={}",
            s.czxid,
            s.mzxid,
            s.pzxid,
            s.ctime,
            s.mtime,
            s.version,
            s.cversion,
            s.aversion,
            self.owner(s.ephemeral_owner),
            s.data_length,
            s.num_children
        )
    }

    fn session_of(&self, cmd: &Cmd) -> i64 {
        match cmd.kv.get("session") {
            Some(n) => self
                .names
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, id)| *id)
                .unwrap_or_else(|| n.parse().unwrap_or_else(|_| panic!("unknown session {n}"))),
            None => self.names.last().map(|(_, id)| *id).unwrap_or(0),
        }
    }

    fn time_of(&mut self, cmd: &Cmd) -> i64 {
        if let Some(t) = cmd.kv.get("time") {
            self.time = t.parse().expect("time");
        }
        self.time
    }

    fn conn(cmd: &Cmd) -> u64 {
        cmd.kv
            .get("conn")
            .map(|c| c.parse().expect("conn"))
            .unwrap_or(1)
    }

    fn version(cmd: &Cmd) -> i32 {
        cmd.kv
            .get("version")
            .map(|v| v.parse().expect("version"))
            .unwrap_or(-1)
    }

    fn path(cmd: &Cmd) -> String {
        cmd.pos.first().cloned().unwrap_or_default()
    }

    /// `data=` (default empty), or null with `null=true`.
    fn data(cmd: &Cmd) -> Option<Bytes> {
        if cmd.kv.get("null").is_some_and(|n| n == "true") {
            return None;
        }
        Some(Bytes::from(cmd.kv.get("data").cloned().unwrap_or_default()))
    }

    fn watch_flag(cmd: &Cmd) -> bool {
        cmd.kv.get("watch").is_some_and(|w| w == "true")
    }

    /// Builds the write request of a command (also a multi op).
    fn write_request(cmd: &Cmd) -> Request {
        let path = Self::path(cmd);
        match cmd.name.as_str() {
            "create" => {
                let mode = cmd
                    .kv
                    .get("mode")
                    .map(String::as_str)
                    .unwrap_or("persistent");
                let flags = match cmd.kv.get("flags") {
                    Some(f) => f.parse().expect("flags"),
                    None => match mode {
                        "persistent" => 0,
                        "ephemeral" => 1,
                        "persistent_sequential" => 2,
                        "ephemeral_sequential" => 3,
                        "container" => 4,
                        "ttl" => 5,
                        "ttl_sequential" => 6,
                        m => panic!("unknown mode {m}"),
                    },
                };
                let default_op = match mode {
                    "container" => "container",
                    "ttl" | "ttl_sequential" => "ttl",
                    _ => "create2",
                };
                let op = cmd.kv.get("op").map(String::as_str).unwrap_or(default_op);
                let acl = cmd
                    .kv
                    .get("acl")
                    .map(|a| parse_acl(a))
                    .unwrap_or_else(Acl::open_unsafe);
                let data = Self::data(cmd);
                let r = CreateRequest {
                    path: path.clone(),
                    data: data.clone(),
                    acl: acl.clone(),
                    flags,
                };
                match op {
                    "create" => Request::Create(r),
                    "create2" => Request::Create2(r),
                    "container" => Request::CreateContainer(r),
                    "ttl" => Request::CreateTtl(CreateTtlRequest {
                        path,
                        data,
                        acl,
                        flags,
                        ttl: cmd
                            .kv
                            .get("ttl")
                            .map(|t| t.parse().expect("ttl"))
                            .unwrap_or(-1),
                    }),
                    o => panic!("unknown op {o}"),
                }
            }
            "set" => Request::SetData(SetDataRequest {
                path,
                data: Self::data(cmd),
                version: Self::version(cmd),
            }),
            "delete" => Request::Delete(DeleteRequest {
                path,
                version: Self::version(cmd),
            }),
            "check" => Request::Check(CheckVersionRequest {
                path,
                version: Self::version(cmd),
            }),
            "setacl" => Request::SetAcl(SetAclRequest {
                path,
                acl: cmd.kv.get("acl").map(|a| parse_acl(a)).unwrap_or_default(),
                version: Self::version(cmd),
            }),
            "multi" => Request::Multi(cmd.sub.iter().map(Self::write_request).collect()),
            "get" => Request::GetData(GetDataRequest {
                path,
                watch: Self::watch_flag(cmd),
            }),
            "ls" => Request::GetChildren(GetChildrenRequest {
                path,
                watch: Self::watch_flag(cmd),
            }),
            n => panic!("not a write: {n}"),
        }
    }

    fn fmt_multi_result(&self, r: &MultiResult) -> String {
        match r {
            MultiResult::Create(p) => format!("create {p}"),
            MultiResult::Create2(p, s) => format!("create2 {p} {}", self.fmt_stat(s)),
            MultiResult::Delete => "delete".into(),
            MultiResult::SetData(s) => format!("setData {}", self.fmt_stat(s)),
            MultiResult::Check => "check".into(),
            MultiResult::GetData(d, s) => format!("getData {} {}", fmt_data(d), self.fmt_stat(s)),
            MultiResult::GetChildren(c) => format!("getChildren [{}]", c.join(", ")),
            MultiResult::Error(e) => format!("error {}", e.name()),
        }
    }

    fn fmt_response(&self, r: &Result<Response, ErrorCode>) -> Vec<String> {
        let r = match r {
            Err(e) => return vec![format!("error {}", e.name())],
            Ok(r) => r,
        };
        match r {
            Response::Empty => vec!["ok".into()],
            Response::Create(c) => vec![format!("ok path={}", c.path)],
            Response::Create2(c) => vec![
                format!("ok path={}", c.path),
                format!("stat {}", self.fmt_stat(&c.stat)),
            ],
            Response::Stat(s) => vec!["ok".into(), format!("stat {}", self.fmt_stat(s))],
            Response::GetData(d) => vec![
                format!("ok data={}", fmt_data(&d.data)),
                format!("stat {}", self.fmt_stat(&d.stat)),
            ],
            Response::GetAcl(a) => vec![
                format!("ok acl={}", fmt_acl(&a.acl)),
                format!("stat {}", self.fmt_stat(&a.stat)),
            ],
            Response::GetChildren(c) => vec![format!("ok children=[{}]", c.children.join(", "))],
            Response::GetChildren2(c) => {
                vec![
                    format!("ok children=[{}]", c.children.join(", ")),
                    format!("stat {}", self.fmt_stat(&c.stat)),
                ]
            }
            Response::Sync(s) => vec![format!("ok sync {}", s.path)],
            Response::Multi(rs) => {
                let mut v = vec!["ok multi".to_string()];
                v.extend(rs.iter().map(|r| format!("  {}", self.fmt_multi_result(r))));
                v
            }
            Response::GetEphemerals(e) => {
                vec![format!("ok ephemerals=[{}]", e.ephemerals.join(", "))]
            }
            Response::AllChildrenNumber(n) => vec![format!("ok count={}", n.total_number)],
            Response::WhoAmI(w) => vec![format!(
                "ok whoami=[{}]",
                w.client_info
                    .iter()
                    .map(|c| format!("{}:{}", c.auth_scheme, c.user))
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
            Response::Sasl(_) => vec!["ok sasl".into()],
            Response::Error(e) => vec![format!("ok err={}", e.err)],
        }
    }

    fn apply(&mut self, cmd: &Cmd, session_id: i64, op: TxnOp, out: &mut Vec<String>) -> Applied {
        let time = self.time_of(cmd);
        let zxid = cmd
            .kv
            .get("zxid")
            .map(|z| z.parse().expect("zxid"))
            .unwrap_or(self.state.last_zxid() + 1);
        let txn = Txn {
            session_id,
            time,
            op,
        };
        let applied = self.state.apply(zxid, &txn);
        out.push(format!("zxid={}", applied.zxid));
        self.report(&applied, out);
        applied
    }

    fn report(&mut self, applied: &Applied, out: &mut Vec<String>) {
        match &applied.result {
            TxnResult::Session {
                session_id,
                timeout_ms,
                passwd,
            } => {
                let name = format!("S{}", self.names.len() + 1);
                out.push(format!(
                    "session {name} id={session_id:#x} timeout={timeout_ms} passwd={}",
                    fmt_data(&Some(passwd.clone()))
                ));
                self.names.push((name, *session_id));
            }
            TxnResult::Response(r) => out.extend(self.fmt_response(r)),
            TxnResult::Closed => out.push("closed".into()),
            TxnResult::None => out.push("none".into()),
        }
        for c in &applied.changes {
            let (k, p) = match c {
                Change::Created(p) => ("Created", p),
                Change::Deleted(p) => ("Deleted", p),
                Change::DataChanged(p) => ("DataChanged", p),
                Change::ChildrenChanged(p) => ("ChildrenChanged", p),
            };
            out.push(format!("change {k} {p}"));
        }
        for (w, e) in self.watches.trigger(&applied.changes) {
            out.push(format!(
                "event conn={w} {} {} state={}",
                event_name(e.event_type),
                e.path,
                e.state
            ));
        }
    }

    fn read(&mut self, cmd: &Cmd, req: Request, out: &mut Vec<String>) {
        let sid = self.session_of(cmd);
        let auth = self.auth.get(&sid).cloned().unwrap_or_default();
        let r = read(
            &self.state,
            &mut self.watches,
            Self::conn(cmd),
            sid,
            &req,
            &auth,
        );
        out.extend(self.fmt_response(&r));
    }

    fn list(cmd: &Cmd, key: &str) -> Vec<String> {
        cmd.kv
            .get(key)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wtype(cmd: &Cmd) -> WatcherType {
        match cmd.kv.get("type").map(String::as_str).unwrap_or("any") {
            "children" => WatcherType::Children,
            "data" => WatcherType::Data,
            "any" => WatcherType::Any,
            "persistent" => WatcherType::Persistent,
            "recursive" => WatcherType::PersistentRecursive,
            t => panic!("unknown watcher type {t}"),
        }
    }

    fn run(&mut self, cmd: &Cmd) -> Vec<String> {
        let mut out = Vec::new();
        let path = Self::path(cmd);
        match cmd.name.as_str() {
            "session" => match cmd.pos.first().map(String::as_str) {
                Some("open") => {
                    let timeout_ms = cmd
                        .kv
                        .get("timeout")
                        .map(|t| t.parse().expect("timeout"))
                        .unwrap_or(30000);
                    let passwd =
                        Bytes::from(cmd.kv.get("passwd").cloned().unwrap_or_else(|| "pw".into()));
                    self.apply(
                        cmd,
                        0,
                        TxnOp::CreateSession { timeout_ms, passwd },
                        &mut out,
                    );
                }
                Some("close") => {
                    let sid = match cmd.pos.get(1) {
                        Some(n) => self
                            .names
                            .iter()
                            .find(|(x, _)| x == n)
                            .map(|(_, i)| *i)
                            .unwrap_or(0),
                        None => self.session_of(cmd),
                    };
                    self.apply(cmd, sid, TxnOp::CloseSession, &mut out);
                }
                other => panic!("session {other:?}"),
            },
            "sessions" => {
                let lines: Vec<String> = self
                    .state
                    .sessions()
                    .map(|(id, s)| {
                        format!(
                            "{} timeout={} ephemerals=[{}]",
                            self.sid_name(id),
                            s.timeout_ms,
                            s.ephemerals.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect();
                out.extend(lines);
                out.push(format!("ephemeral_count={}", self.state.ephemeral_count()));
            }
            "auth" => {
                let name = cmd.pos.first().expect("auth SESSION ID");
                let sid = self
                    .names
                    .iter()
                    .find(|(x, _)| x == name)
                    .map(|(_, i)| *i)
                    .expect("known session");
                let spec = cmd.pos.get(1).expect("auth SESSION ID");
                let id = match spec.split_once(':') {
                    Some(("digest", up)) => Id::new("digest", &roster_state::digest(up)),
                    Some((scheme, rest)) => Id::new(scheme, rest),
                    None => Id::new(spec, ""),
                };
                out.push(format!("{name} += {}:{}", id.scheme, id.id));
                self.auth.entry(sid).or_default().push(id);
            }
            "create" | "set" | "delete" | "check" | "setacl" | "multi" => {
                let sid = self.session_of(cmd);
                let request = Self::write_request(cmd);
                let auth = self.auth.get(&sid).cloned().unwrap_or_default();
                self.apply(cmd, sid, TxnOp::Request { request, auth }, &mut out);
            }
            "get" => self.read(
                cmd,
                Request::GetData(GetDataRequest {
                    path,
                    watch: Self::watch_flag(cmd),
                }),
                &mut out,
            ),
            "exists" => self.read(
                cmd,
                Request::Exists(ExistsRequest {
                    path,
                    watch: Self::watch_flag(cmd),
                }),
                &mut out,
            ),
            "children" => self.read(
                cmd,
                Request::GetChildren2(GetChildren2Request {
                    path,
                    watch: Self::watch_flag(cmd),
                }),
                &mut out,
            ),
            "ls" => self.read(
                cmd,
                Request::GetChildren(GetChildrenRequest {
                    path,
                    watch: Self::watch_flag(cmd),
                }),
                &mut out,
            ),
            "getacl" => self.read(cmd, Request::GetAcl(GetAclRequest { path }), &mut out),
            "count" => self.read(
                cmd,
                Request::GetAllChildrenNumber(GetAllChildrenNumberRequest { path }),
                &mut out,
            ),
            "ephemerals" => self.read(
                cmd,
                Request::GetEphemerals(GetEphemeralsRequest { prefix_path: path }),
                &mut out,
            ),
            "whoami" => self.read(cmd, Request::WhoAmI, &mut out),
            "multiread" => {
                let ops = cmd.sub.iter().map(Self::write_request).collect();
                self.read(cmd, Request::MultiRead(ops), &mut out)
            }
            "addwatch" => {
                let mode = match cmd
                    .kv
                    .get("mode")
                    .map(String::as_str)
                    .unwrap_or("persistent")
                {
                    "persistent" => 0,
                    "recursive" => 1,
                    m => m.parse().expect("mode"),
                };
                self.read(
                    cmd,
                    Request::AddWatch(AddWatchRequest { path, mode }),
                    &mut out,
                )
            }
            "removewatches" => {
                let t = Self::wtype(cmd);
                let r = self
                    .watches
                    .remove_watches(Self::conn(cmd), &path, t, false);
                match r {
                    Ok(events) if events.is_empty() => out.push("ok".into()),
                    Ok(events) => out.extend(
                        events
                            .iter()
                            .map(|e| format!("event {} {}", event_name(e.event_type), e.path)),
                    ),
                    Err(e) => out.push(format!("error {}", e.name())),
                }
            }
            "checkwatches" => {
                let r = self
                    .watches
                    .check_watches(Self::conn(cmd), &path, Self::wtype(cmd));
                out.extend(self.fmt_response(&r.map(|()| Response::Empty)));
            }
            "setwatches" => {
                let sw = SetWatches2 {
                    relative_zxid: cmd
                        .kv
                        .get("zxid")
                        .map(|z| z.parse().expect("zxid"))
                        .unwrap_or(0),
                    data_watches: Self::list(cmd, "data"),
                    exist_watches: Self::list(cmd, "exist"),
                    child_watches: Self::list(cmd, "child"),
                    persistent_watches: Self::list(cmd, "persistent"),
                    persistent_recursive_watches: Self::list(cmd, "recursive"),
                };
                let events = self.watches.set_watches(&self.state, Self::conn(cmd), &sw);
                if events.is_empty() {
                    out.push("ok".into());
                }
                for e in events {
                    out.push(format!(
                        "event conn={} {} {} state={}",
                        Self::conn(cmd),
                        event_name(e.event_type),
                        e.path,
                        e.state
                    ));
                }
            }
            "dropconn" => {
                self.watches.remove_watcher(Self::conn(cmd));
                out.push("ok".into());
            }
            "watches" => {
                for (p, ws) in self.watches.all_by_path() {
                    out.push(format!("{p}: {ws:?}"));
                }
                for (w, ps) in self.watches.all_by_watcher() {
                    out.push(format!(
                        "conn={w}: {} watches {ps:?}",
                        self.watches.count_for(w)
                    ));
                }
                out.push(format!("total={}", self.watches.total()));
            }
            "ttl-candidates" => {
                let t = self.time_of(cmd);
                out.push(format!("[{}]", self.state.ttl_candidates(t).join(", ")));
            }
            "expire-ttl" => {
                let t = self.time_of(cmd);
                let paths = if cmd.kv.contains_key("paths") {
                    Self::list(cmd, "paths")
                } else {
                    self.state.ttl_candidates(t)
                };
                out.push(format!("paths=[{}]", paths.join(", ")));
                self.apply(cmd, 0, TxnOp::ExpireTtl { paths }, &mut out);
            }
            "stat" => match self.state.stat(&path) {
                Some(s) => out.push(format!("stat {}", self.fmt_stat(&s))),
                None => out.push("no node".into()),
            },
            "tree" => {
                let lines: Vec<String> = self
                    .state
                    .tree()
                    .iter()
                    .map(|(p, n)| {
                        format!(
                            "{p} data={} acl={} {}",
                            fmt_data(&n.data.as_deref().map(Bytes::copy_from_slice)),
                            fmt_acl(self.state.tree().acl_of(n)),
                            self.fmt_stat(&n.stat())
                        )
                    })
                    .collect();
                out.extend(lines);
                out.push(format!(
                    "nodes={} data_size={} acls={}",
                    self.state.node_count(),
                    self.state.approximate_data_size(),
                    self.state.tree().acl_table().len()
                ));
            }
            "snapshot" => {
                let bytes = self.state.to_snapshot();
                let back = State::from_snapshot(&bytes).expect("snapshot loads");
                assert_eq!(back.to_snapshot(), bytes, "snapshot round trip");
                out.push(format!("ok bytes={}", bytes.len()));
                self.state = back;
            }
            "noop" => {
                let z = cmd
                    .kv
                    .get("zxid")
                    .map(|z| z.parse().expect("zxid"))
                    .unwrap_or(self.state.last_zxid() + 1);
                self.state.note_zxid(z);
                out.push(format!("last_zxid={}", self.state.last_zxid()));
            }
            "raw" => {
                let hex = cmd.pos.first().cloned().unwrap_or_default();
                let bytes: Vec<u8> = (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect();
                match postcard::from_bytes::<Txn>(&bytes) {
                    Ok(txn) => {
                        let sid = txn.session_id;
                        self.apply(cmd, sid, txn.op, &mut out);
                    }
                    Err(e) => out.push(format!("decode error: {e}")),
                }
            }
            n => panic!("unknown command {n}"),
        }
        out
    }
}

/// Runs one script and returns the regenerated text.
fn run_script(text: &str) -> String {
    let mut runner = Runner::new();
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while lines.peek().is_some() {
        // Leading blank lines and comments are copied.
        let mut cmds: Vec<Cmd> = Vec::new();
        let mut saw_separator = false;
        for line in lines.by_ref() {
            if line == "----" {
                out.push_str("----\n");
                saw_separator = true;
                break;
            }
            out.push_str(line);
            out.push('\n');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                cmds.last_mut()
                    .expect("continuation without a command")
                    .sub
                    .push(parse_cmd(line.trim()));
            } else {
                cmds.push(parse_cmd(line));
            }
        }
        if !saw_separator {
            assert!(cmds.is_empty(), "commands without a ---- separator");
            break;
        }
        // Skip the old output.
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
        }
        for cmd in &cmds {
            for l in runner.run(cmd) {
                out.push_str(&l);
                out.push('\n');
            }
        }
        if lines.peek().is_some() {
            out.push('\n');
        }
    }
    out
}

fn scripts() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testscripts");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("testscripts dir") {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "txt") {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn golden_scripts() {
    let update = std::env::var("UPDATE_GOLDENFILES").is_ok_and(|v| v == "1");
    let mut failed = Vec::new();
    for file in scripts() {
        let text = std::fs::read_to_string(&file).unwrap();
        let got = run_script(&text);
        if got != text {
            if update {
                std::fs::write(&file, &got).unwrap();
            } else {
                let name = file.display().to_string();
                let first = text
                    .lines()
                    .zip(got.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                eprintln!("--- {name}: first difference at line {}", first + 1);
                eprintln!("expected: {:?}", text.lines().nth(first));
                eprintln!("got:      {:?}", got.lines().nth(first));
                failed.push(name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "golden scripts differ (UPDATE_GOLDENFILES=1 to regenerate): {failed:?}"
    );
}
