//! Register worker of the fault suite (`tests/faults`), on this crate's own client.
//!
//! Random read, sync + read, write and compare-and-set on a few keys until the run's deadline (or
//! `--max-ops`), one request at a time, each written to `--out` as an `invoke` event and exactly one
//! `ok`/`fail`/`info` event (the history format of `docs/reliability.md`). Times are seconds of
//! `CLOCK_MONOTONIC` minus `--t0`, the clock the harness and the kazoo workers share. Every written value
//! is `--value-base` plus a counter, so values are unique in the run.
//!
//! Classification: `BadVersion`/`NoNode` answers are `fail` (no effect); connection loss, the per-call
//! timeout (the session timeout) and an expired session are `info` (unknown outcome), after which the
//! process continues under a new id (`rust-1` -> `rust-1.1`). A client that breaks is a `casualty`: a
//! call failing with `Closed`/`AuthFailed` on a client nobody closed, an unexpected server error code, or
//! no connection for more than twice the session timeout; the worker then carries on with a new
//! `Client`. Left out: creates and ephemerals (the kazoo workers do them), watches, multi.
//!
//! ```text
//! fault_worker --name rust-1 --hosts 10.211.0.11:2181,... --keys /faults/reg/r0,/faults/reg/r1 \
//!     --t0 1234.5 --duration 60 --value-base 1010000000 --seed 7 --session-timeout-ms 6000 --out FILE
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roster_client::{Client, ClientOptions, Error, ErrorCode, SessionState};
use serde_json::{json, Value};

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Seconds of CLOCK_MONOTONIC, the clock Python's `time.monotonic()` reads on Linux.
fn monotonic() -> f64 {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec (two i64 on 64-bit Linux) into the pointer we own;
    // CLOCK_MONOTONIC (1) always exists on Linux.
    let r = unsafe { clock_gettime(1, &mut ts) };
    if r != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

struct Args {
    name: String,
    hosts: String,
    keys: Vec<String>,
    t0: f64,
    duration: f64,
    value_base: i64,
    seed: u64,
    session_timeout: Duration,
    max_ops: u64,
    think_ms: u64,
    out: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        name: "rust".into(),
        hosts: String::new(),
        keys: Vec::new(),
        t0: 0.0,
        duration: 60.0,
        value_base: 0,
        seed: 0,
        session_timeout: Duration::from_secs(6),
        max_ops: 20_000,
        think_ms: 50,
        out: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| {
            format!("{flag} needs a value (see the doc comment of fault_worker.rs)")
        })?;
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>().map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--name" => a.name = v,
            "--hosts" => a.hosts = v,
            "--keys" => {
                a.keys = v
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--t0" => a.t0 = num(&v)?,
            "--duration" => a.duration = num(&v)?,
            "--value-base" => a.value_base = num(&v)? as i64,
            "--seed" => a.seed = num(&v)? as u64,
            "--session-timeout-ms" => a.session_timeout = Duration::from_millis(num(&v)? as u64),
            "--max-ops" => a.max_ops = num(&v)? as u64,
            "--think-ms" => a.think_ms = num(&v)? as u64,
            "--out" => a.out = v,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.hosts.is_empty() || a.keys.is_empty() || a.out.is_empty() {
        return Err("--hosts, --keys and --out are required".into());
    }
    Ok(a)
}

struct Worker {
    a: Args,
    out: BufWriter<File>,
    p: String,
    gen: u32,
    client: Option<Client>,
    disconnected_since: Option<Instant>,
    deadline: f64,
}

enum Outcome<T> {
    Ok(T),
    Fail,
    Info,
}

impl Worker {
    fn now(&self) -> f64 {
        ((monotonic() - self.a.t0) * 1e6).round() / 1e6
    }

    fn emit(&mut self, mut ev: Value) {
        if ev.get("t").is_none() {
            ev["t"] = json!(self.now());
        }
        if ev.get("p").is_none() {
            ev["p"] = json!(self.p);
        }
        // A full disk or a closed pipe must not stop the workload: the harness notices missing events.
        let _ = writeln!(self.out, "{ev}");
        let _ = self.out.flush();
    }

    fn casualty(&mut self, kind: &str, detail: String) {
        self.emit(json!({"type": "casualty", "kind": kind, "detail": detail}));
    }

    async fn connect(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
        while monotonic() < self.deadline + 30.0 {
            let opts = ClientOptions {
                session_timeout: self.a.session_timeout,
                request_timeout: Some(self.a.session_timeout),
                ..ClientOptions::default()
            };
            match Client::connect(&self.a.hosts, opts).await {
                Ok(c) => {
                    let sid = c.session_id();
                    self.emit(json!({"type": "log", "f": "connected", "value": sid}));
                    self.client = Some(c);
                    self.disconnected_since = None;
                    return;
                }
                Err(e) => {
                    self.emit(
                        json!({"type": "log", "f": "connect_failed", "value": e.to_string()}),
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        eprintln!("{}: no session by the end of the run", self.a.name);
        std::process::exit(1);
    }

    /// A casualty and a fresh client if this one has been without a connection for too long.
    async fn health(&mut self) {
        let state = self.client.as_ref().map(|c| c.state());
        match state {
            Some(SessionState::Connected) => self.disconnected_since = None,
            Some(SessionState::Suspended) | Some(SessionState::Connecting) => {
                let since = *self.disconnected_since.get_or_insert_with(Instant::now);
                if since.elapsed() > 2 * self.a.session_timeout {
                    let d = since.elapsed().as_secs_f64();
                    self.casualty("dead_client", format!("not connected for {d:.1}s"));
                    self.connect().await;
                }
            }
            Some(SessionState::Expired) => {
                self.emit(json!({"type": "log", "f": "session_expired", "value": null}));
                self.connect().await;
            }
            Some(s) => {
                self.casualty("dead_client", format!("client in state {s:?}"));
                self.connect().await;
            }
            None => self.connect().await,
        }
    }

    /// Classifies the result of one request whose invoke has been emitted.
    async fn complete<T>(
        &mut self,
        f: &str,
        key: &str,
        value: Value,
        r: Result<T, Error>,
    ) -> Outcome<T> {
        match r {
            Ok(v) => Outcome::Ok(v),
            Err(Error::Code(c @ (ErrorCode::BadVersion | ErrorCode::NoNode))) => {
                self.emit(json!({"type": "fail", "f": f, "key": key, "value": value, "error": format!("{c:?}")}));
                Outcome::Fail
            }
            Err(e) => {
                self.emit(json!({"type": "info", "f": f, "key": key, "value": value, "error": e.to_string()}));
                self.gen += 1;
                self.p = format!("{}.{}", self.a.name, self.gen);
                match e {
                    Error::ConnectionLoss | Error::Timeout => {}
                    Error::SessionExpired => {
                        self.emit(json!({"type": "log", "f": "session_expired", "value": null}));
                        self.connect().await;
                    }
                    Error::Closed | Error::AuthFailed => {
                        self.casualty("dead_client", e.to_string());
                        self.connect().await;
                    }
                    other => {
                        self.casualty("other", other.to_string());
                        self.connect().await;
                    }
                }
                Outcome::Info
            }
        }
    }
}

fn decode(data: &[u8]) -> Value {
    if data.is_empty() {
        return Value::Null;
    }
    match std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(v) => json!(v),
        None => json!(String::from_utf8_lossy(data)),
    }
}

async fn run(a: Args) -> Result<(), String> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(&a.out)
        .map_err(|e| format!("cannot open {}: {e}", a.out))?;
    let mut rng = StdRng::seed_from_u64(a.seed);
    let deadline = a.t0 + a.duration;
    let mut w = Worker {
        p: a.name.clone(),
        a,
        out: BufWriter::new(file),
        gen: 0,
        client: None,
        disconnected_since: None,
        deadline,
    };
    w.connect().await;
    let mut seen: std::collections::HashMap<String, (Value, i32)> = Default::default();
    let mut vid = w.a.value_base;
    let mut n = 0u64;
    while monotonic() < w.deadline && n < w.a.max_ops {
        n += 1;
        w.health().await;
        let Some(c) = w.client.clone() else { continue };
        let key = w.a.keys[rng.random_range(0..w.a.keys.len())].clone();
        let mut f = ["read", "sync_read", "write", "write", "cas", "cas"][rng.random_range(0..6)];
        if f == "cas" && !seen.contains_key(&key) {
            f = "read";
        }
        match f {
            "read" | "sync_read" => {
                w.emit(json!({"type": "invoke", "f": f, "key": key, "value": null}));
                let r = if f == "sync_read" {
                    match c.sync(&key).await {
                        Ok(()) => c.get_data(&key).await,
                        Err(e) => Err(e),
                    }
                } else {
                    c.get_data(&key).await
                };
                if let Outcome::Ok((data, stat)) = w.complete(f, &key, Value::Null, r).await {
                    let v = decode(&data);
                    w.emit(json!({"type": "ok", "f": f, "key": key, "value": v}));
                    seen.insert(key, (v, stat.version));
                }
            }
            "write" => {
                vid += 1;
                let val = vid;
                w.emit(json!({"type": "invoke", "f": "write", "key": key, "value": val}));
                let r = c.set_data(&key, val.to_string().as_bytes(), None).await;
                if let Outcome::Ok(stat) = w.complete("write", &key, json!(val), r).await {
                    w.emit(json!({"type": "ok", "f": "write", "key": key, "value": val}));
                    seen.insert(key, (json!(val), stat.version));
                }
            }
            _ => {
                let (expected, version) = seen[&key].clone();
                vid += 1;
                let val = vid;
                let pair = json!([expected, val]);
                w.emit(json!({"type": "invoke", "f": "cas", "key": key, "value": pair}));
                let r = c
                    .set_data(&key, val.to_string().as_bytes(), Some(version))
                    .await;
                match w.complete("cas", &key, pair.clone(), r).await {
                    Outcome::Ok(stat) => {
                        w.emit(json!({"type": "ok", "f": "cas", "key": key, "value": pair}));
                        seen.insert(key, (json!(val), stat.version));
                    }
                    Outcome::Fail => {
                        seen.remove(&key);
                    }
                    Outcome::Info => {}
                }
            }
        }
        let think = rng.random_range(0..=w.a.think_ms);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    if let Some(c) = w.client.take() {
        let _ = c.close().await;
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fault_worker: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fault_worker: cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("fault_worker: {e}");
        std::process::exit(1);
    }
}
