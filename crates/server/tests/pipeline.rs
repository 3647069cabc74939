//! Golden scripts for a connection's request pipeline: `testscripts/pipeline/<name>.txt`.
//!
//! A script is a list of blocks: one or more command lines (`#` lines are comments), a `----` line, then
//! the actions the pipeline emitted, up to the next empty line. The runner feeds each command to one
//! [`Pipeline`] and compares the regenerated file with the one on disk. Run with
//! `UPDATE_GOLDENFILES=1` to rewrite the files, then review the diff.
//!
//! Time is an input: every command takes `t=MS` (milliseconds since the script's start; default: the
//! time of the previous command). The pipeline is created with `route local` and a hold of 1,000 ms
//! unless the first block is `new route=... hold=MS`.
//!
//! Commands (xids are the request's number):
//! - `new [route=local|forward:L|unreachable] [hold=MS]`: a fresh pipeline
//! - `write X [close]`, `sync X`, `lread X` (a linearizable read: barrier, then the read),
//!   `reconfig X` (unordered): requests that propose
//! - `read X [last]`: a locally answered request (`last`: the connection closes after its reply)
//! - `done [zxid=Z] [view] [closes]`: the oldest proposal's result (`view`: with a state view)
//! - `fail REASON`: the oldest proposal failed
//! - `route local|forward:L[:N]|unreachable`: the route changed (`forward:L` is a new link to L;
//!   `forward:L:N` names link N)
//! - `event NAME zxid=Z`: a watch event, `nodeclose REASON`: the node ends the session
//! - `tick`: time passed (with `t=`)
//!
//! Outputs: `propose LABEL -> TARGET [view]`, `read X [view@Z]`, `reply X zxid=Z`, `event NAME zxid=Z`,
//! `want-views`, `close: REASON [expected]`; after the actions, `deadline t=MS` while a proposal
//! waits for a route, and `state queued=N in_flight=N` when it changed.

use roster_server::net::pipeline::{Action, Done, Pipeline, PropKind, Request, Target, Types};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct T;
impl Types for T {
    type Meta = i32;
    type Prop = String;
    type Read = i32;
    type Reply = ();
    type View = i64;
    type Event = String;
}

struct Runner {
    pipe: Pipeline<T>,
    start: Instant,
    now: Instant,
    links: u64,
    zxid: i64,
    last_state: (usize, usize),
}

impl Runner {
    fn new(target: Target, hold: u64) -> Runner {
        let start = Instant::now();
        Runner {
            pipe: Pipeline::new(target, Duration::from_millis(hold)),
            start,
            now: start,
            links: 0,
            zxid: 0,
            last_state: (0, 0),
        }
    }

    fn target(&mut self, s: &str) -> Target {
        match s {
            "local" => Target::Local,
            "unreachable" => Target::Unreachable,
            f if f.starts_with("forward:") => {
                let mut parts = f["forward:".len()..].split(':');
                let leader = parts.next().unwrap().parse().expect("forward:LEADER");
                let link = match parts.next() {
                    Some(n) => n.parse().expect("forward:LEADER:LINK"),
                    None => {
                        self.links += 1;
                        self.links
                    }
                };
                Target::Forward { leader, link }
            }
            other => panic!("unknown route {other}"),
        }
    }

    fn run(&mut self, line: &str, out: &mut String) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut pos = Vec::new();
        let mut kv = std::collections::BTreeMap::new();
        for w in &words[1..] {
            match w.split_once('=') {
                Some((k, v)) => {
                    kv.insert(k.to_string(), v.to_string());
                }
                None => pos.push(*w),
            }
        }
        if let Some(t) = kv.get("t") {
            self.now = self.start + Duration::from_millis(t.parse().expect("t=MS"));
        }
        let now = self.now;
        let xid = |i: usize| -> i32 { pos[i].parse().expect("xid") };
        let has = |w: &str| pos.contains(&w);
        let propose =
            |xid: i32, label: String, kind: PropKind, then: Option<i32>| Request::<T>::Propose {
                meta: xid,
                prop: label,
                kind,
                then,
            };
        match words[0] {
            "new" => {
                let route = kv.get("route").cloned().unwrap_or("local".into());
                let target = self.target(&route);
                let hold = kv.get("hold").map(|h| h.parse().unwrap()).unwrap_or(1000);
                *self = Runner::new(target, hold);
                self.links = match target {
                    Target::Forward { link, .. } => link,
                    _ => 0,
                };
            }
            "write" => {
                let x = xid(0);
                let kind = PropKind::Write {
                    closes_session: has("close"),
                };
                self.pipe
                    .request(now, propose(x, format!("write{x}"), kind, None));
            }
            "sync" => {
                let x = xid(0);
                self.pipe
                    .request(now, propose(x, format!("sync{x}"), PropKind::Barrier, None));
            }
            "lread" => {
                let x = xid(0);
                self.pipe.request(
                    now,
                    propose(x, format!("barrier{x}"), PropKind::Barrier, Some(x)),
                );
            }
            "reconfig" => {
                let x = xid(0);
                self.pipe.request(
                    now,
                    propose(x, format!("reconfig{x}"), PropKind::Unordered, None),
                );
            }
            "read" => {
                let x = xid(0);
                self.pipe.request(
                    now,
                    Request::Read {
                        meta: x,
                        read: x,
                        last: has("last"),
                    },
                );
            }
            "done" => {
                let zxid = match kv.get("zxid") {
                    Some(z) => z.parse().unwrap(),
                    None => self.zxid + 1,
                };
                self.zxid = self.zxid.max(zxid);
                self.pipe.done(
                    now,
                    Done {
                        zxid,
                        reply: (),
                        view: has("view").then_some(zxid),
                        closes: has("closes"),
                    },
                );
            }
            "fail" => self.pipe.failed(pos.join(" ")),
            "route" => {
                let t = self.target(pos[0]);
                self.pipe.route(now, t);
            }
            "event" => {
                let z: i64 = kv["zxid"].parse().unwrap();
                self.zxid = self.zxid.max(z);
                self.pipe.event(pos[0].to_string(), z);
            }
            "nodeclose" => self.pipe.close_by_node(&pos.join(" ")),
            "tick" => self.pipe.tick(now),
            other => panic!("unknown command {other:?}"),
        }
        while let Some(a) = self.pipe.next_action() {
            match a {
                Action::Propose { prop, target, view } => {
                    let target = match target {
                        Target::Local => "local".to_string(),
                        Target::Forward { leader, link } => format!("forward:{leader}#{link}"),
                        Target::Unordered => "unordered".to_string(),
                        Target::Unreachable => "UNREACHABLE (bug)".to_string(),
                    };
                    let view = if view { " view" } else { "" };
                    writeln!(out, "propose {prop} -> {target}{view}").unwrap();
                }
                Action::Read { meta, view, .. } => match view {
                    Some((_, z)) => writeln!(out, "read {meta} view@{z}").unwrap(),
                    None => writeln!(out, "read {meta}").unwrap(),
                },
                Action::Reply { meta, zxid, .. } => {
                    writeln!(out, "reply {meta} zxid={zxid}").unwrap()
                }
                Action::Event(e, z) => writeln!(out, "event {e} zxid={z}").unwrap(),
                Action::WantViews => writeln!(out, "want-views").unwrap(),
                Action::Close { reason, expected } => {
                    let e = if expected { " [expected]" } else { "" };
                    writeln!(out, "close: {reason}{e}").unwrap()
                }
            }
        }
        if let Some(d) = self.pipe.deadline() {
            writeln!(out, "deadline t={}", (d - self.start).as_millis()).unwrap();
        }
        let state = (self.pipe.queued(), self.pipe.in_flight());
        if state != self.last_state {
            writeln!(out, "state queued={} in_flight={}", state.0, state.1).unwrap();
            self.last_state = state;
        }
    }
}

fn run_script(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut runner = Runner::new(Target::Local, 1000);
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            out.push('\n');
            continue;
        }
        if line.starts_with('#') {
            writeln!(out, "{line}").unwrap();
            continue;
        }
        // A block: commands up to `----`, then the old output up to an empty line (skipped).
        let mut cmds = vec![line.to_string()];
        for l in lines.by_ref() {
            if l == "----" {
                break;
            }
            cmds.push(l.to_string());
        }
        while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
            lines.next();
        }
        let mut result = String::new();
        for c in &cmds {
            writeln!(out, "{c}").unwrap();
            runner.run(c, &mut result);
        }
        out.push_str("----\n");
        out.push_str(&result);
    }
    out
}

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testscripts/pipeline");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no scripts in {}", dir.display());
    v
}

#[test]
fn golden_scripts() {
    let update = std::env::var("UPDATE_GOLDENFILES").is_ok_and(|v| v == "1");
    let mut failed = Vec::new();
    for path in scripts() {
        let got = run_script(&path);
        let want = std::fs::read_to_string(&path).unwrap();
        if got != want {
            if update {
                std::fs::write(&path, &got).unwrap();
            } else {
                eprintln!("--- {} differs; got:\n{got}", path.display());
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "scripts differ (UPDATE_GOLDENFILES=1 rewrites): {failed:?}"
    );
}
