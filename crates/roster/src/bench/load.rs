//! The pipelined load engine: N sessions spread round-robin over the server addresses, each one task
//! keeping `depth` requests in flight. A request's latency runs from just before it is written to the
//! socket until its reply is parsed. Requests issued during the warm-up are not measured; the run stops
//! issuing at the op cap or the deadline, whichever comes first, then drains what is in flight.

use super::conn::{err_name, Conn, Incoming};
use super::report::new_hist;
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use roster_proto::{xid, Request};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A tiny xorshift generator: per-session key choice must cost nothing.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (never zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

/// Builds request number `seq` (unique over the run); returns it and its latency class (0 or 1).
pub type Generator = dyn Fn(u64, &mut Rng) -> (Request, usize) + Send + Sync;

/// What to run.
pub struct LoadSpec {
    /// Server addresses; session i uses `addrs[i % len]`.
    pub addrs: Vec<SocketAddr>,
    /// Number of sessions.
    pub sessions: usize,
    /// Requests in flight per session.
    pub depth: usize,
    /// Most measured requests.
    pub ops: u64,
    /// Measured window length.
    pub duration: Duration,
    /// Unmeasured warm-up before the window.
    pub warmup: Duration,
    /// Session timeout to request, ms.
    pub session_timeout_ms: i32,
    /// Error codes that count as success (e.g. NodeExists when preloading).
    pub ignore_errors: Vec<i32>,
    /// The request generator.
    pub generator: Arc<Generator>,
}

/// What a run measured.
pub struct LoadOutcome {
    /// Measured completed requests.
    pub ops: u64,
    /// Measured requests answered with an unexpected error, by code.
    pub errors: BTreeMap<i32, u64>,
    /// Latency histograms (ns) per class.
    pub hist: [Histogram<u64>; 2],
    /// From the start of the measured window to the last measured reply.
    pub elapsed: Duration,
}

struct Shared {
    spec: LoadSpec,
    measure_start: Instant,
    deadline: Instant,
    issued: AtomicU64,
    names: AtomicU64,
    done: AtomicU64,
}

struct SessionOut {
    ops: u64,
    errors: BTreeMap<i32, u64>,
    hist: [Histogram<u64>; 2],
    last: Option<Instant>,
}

/// Connects the sessions, runs the load, closes the sessions. `pb` shows progress over the window.
pub async fn run(spec: LoadSpec, pb: &ProgressBar) -> anyhow::Result<LoadOutcome> {
    if spec.addrs.is_empty() || spec.sessions == 0 || spec.depth == 0 {
        bail!("need at least one server, session and request in flight");
    }
    let mut conns = Vec::with_capacity(spec.sessions);
    let mut connecting = Vec::new();
    for i in 0..spec.sessions {
        let addr = spec.addrs[i % spec.addrs.len()];
        let t = spec.session_timeout_ms;
        connecting.push(tokio::spawn(async move { Conn::connect(addr, t).await }));
    }
    for c in connecting {
        conns.push(c.await.context("connect task")??);
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        measure_start: start + spec.warmup,
        deadline: start + spec.warmup + spec.duration,
        spec,
        issued: AtomicU64::new(0),
        names: AtomicU64::new(0),
        done: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let sh = shared.clone();
        tasks.push(tokio::spawn(async move { session(c, sh, i as u64).await }));
    }
    // Progress: position is the elapsed part of the window, or the op count, whichever is further along.
    let ticker = {
        let sh = shared.clone();
        let pb = pb.clone();
        tokio::spawn(async move {
            let total = sh.spec.duration.as_secs_f64().max(1e-3);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = Instant::now();
                let done = sh.done.load(Ordering::Relaxed);
                let frac_t = if now < sh.measure_start {
                    0.0
                } else {
                    (now - sh.measure_start).as_secs_f64() / total
                };
                let frac_o = done as f64 / sh.spec.ops.max(1) as f64;
                pb.set_position((frac_t.max(frac_o).min(1.0) * 1000.0) as u64);
                let rate = if now > sh.measure_start {
                    done as f64 / (now - sh.measure_start).as_secs_f64()
                } else {
                    0.0
                };
                pb.set_message(if now < sh.measure_start {
                    "warming up".to_string()
                } else {
                    format!("{done} ops, {rate:.0}/s")
                });
            }
        })
    };
    let mut out = LoadOutcome {
        ops: 0,
        errors: BTreeMap::new(),
        hist: [new_hist(), new_hist()],
        elapsed: Duration::ZERO,
    };
    let mut last: Option<Instant> = None;
    let mut first_err: Option<anyhow::Error> = None;
    for t in tasks {
        match t.await.context("session task")? {
            Ok(s) => {
                out.ops += s.ops;
                for (k, v) in s.errors {
                    *out.errors.entry(k).or_default() += v;
                }
                for (a, b) in out.hist.iter_mut().zip(s.hist.iter()) {
                    a.add(b).context("merge histograms")?;
                }
                last = last.max(s.last);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    ticker.abort();
    if let Some(e) = first_err {
        return Err(e);
    }
    out.elapsed = last
        .map(|l| l.saturating_duration_since(shared.measure_start))
        .unwrap_or_default();
    Ok(out)
}

async fn session(mut c: Conn, sh: Arc<Shared>, idx: u64) -> anyhow::Result<SessionOut> {
    let spec = &sh.spec;
    let mut rng = Rng::new(idx + 1 + (sh.measure_start.elapsed().as_nanos() as u64));
    let mut inflight: VecDeque<(i32, Instant, usize, bool)> = VecDeque::with_capacity(spec.depth);
    let mut out = SessionOut {
        ops: 0,
        errors: BTreeMap::new(),
        hist: [new_hist(), new_hist()],
        last: None,
    };
    let mut issuing = true;
    // In-flight requests get this long to be answered once issuing stops.
    let drain_limit = Duration::from_secs(30);
    loop {
        if issuing {
            let now = Instant::now();
            while inflight.len() < spec.depth {
                if now >= sh.deadline {
                    issuing = false;
                    break;
                }
                let measured = now >= sh.measure_start;
                if measured && sh.issued.fetch_add(1, Ordering::Relaxed) >= spec.ops {
                    issuing = false;
                    break;
                }
                let seq = sh.names.fetch_add(1, Ordering::Relaxed);
                let (req, class) = (spec.generator)(seq, &mut rng);
                let x = c.queue(&req);
                inflight.push_back((x, now, class, measured));
            }
            c.flush().await?;
        }
        if inflight.is_empty() {
            break;
        }
        let first = if issuing {
            c.next().await?
        } else {
            match tokio::time::timeout(drain_limit, c.next()).await {
                Ok(r) => r?,
                Err(_) => bail!(
                    "{} requests unanswered {drain_limit:?} after the run ended",
                    inflight.len()
                ),
            }
        };
        let now = Instant::now();
        let mut n = 0u64;
        let mut inc = Some(first);
        while let Some(i) = inc {
            if let Incoming::Reply(h, _) = i {
                if h.xid != xid::PING {
                    let Some((x, sent, class, measured)) = inflight.pop_front() else {
                        bail!("reply xid {} with nothing in flight", h.xid)
                    };
                    if x != h.xid {
                        bail!("reply xid {} out of order (expected {x})", h.xid);
                    }
                    if measured {
                        n += 1;
                        out.ops += 1;
                        let ns = now.saturating_duration_since(sent).as_nanos() as u64;
                        out.hist[class].saturating_record(ns.max(1));
                        out.last = Some(now);
                        if h.err != 0 && !spec.ignore_errors.contains(&h.err) {
                            let e = out.errors.entry(h.err).or_default();
                            if *e == 0 {
                                tracing::debug!("error reply: {}", err_name(h.err));
                            }
                            *e += 1;
                        }
                    }
                }
            }
            inc = c.try_next()?;
        }
        sh.done.fetch_add(n, Ordering::Relaxed);
    }
    c.close().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(7);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[r.below(10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (9_000..11_000).contains(&b)),
            "{buckets:?}"
        );
    }
}
