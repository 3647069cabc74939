//! Results: what each workload reports (JSON with `--json`), the human table, and the side-by-side
//! comparison of two labelled runs (`--compare`).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// A latency distribution, milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// A fresh histogram of nanoseconds, 1 ns to 10 minutes, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

impl Latency {
    /// Summary of a histogram of nanoseconds (None when it is empty).
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Some(Latency {
            count: h.len(),
            mean_ms: h.mean() / 1e6,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }
}

/// An extra figure of a workload (memory, expiry overshoot, per-class latencies).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Extra {
    /// Name, e.g. `rss_loaded_mib`.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Unit, e.g. `MiB`.
    pub unit: String,
    /// Whether a smaller value is better (for the comparison's verdict); None: neither.
    pub lower_is_better: Option<bool>,
}

/// CPU and memory of one server process over one workload.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ServerUsage {
    /// Process id.
    pub pid: u32,
    /// User plus system CPU seconds spent during the workload.
    pub cpu_s: Option<f64>,
    /// Resident memory before, MiB.
    pub rss_before_mib: Option<f64>,
    /// Resident memory after, MiB.
    pub rss_after_mib: Option<f64>,
}

/// Everything one workload measured.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct WorkloadResult {
    /// Workload name, e.g. `create`, `latency-get`, `memory`.
    pub workload: String,
    /// One line saying what was measured.
    pub description: String,
    /// Set when the workload could not run to the end.
    pub error: Option<String>,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    /// Completed operations (or cycles, trials, znodes).
    pub ops: u64,
    /// Operations answered with an unexpected error code.
    pub errors: u64,
    /// Operations per second over the measured window.
    pub throughput: Option<f64>,
    /// Unit of `throughput` and `ops`: `ops`, `cycles`, `znodes`, `trials`.
    pub unit: String,
    /// Latency of each operation (or cycle, notification, expiry).
    pub latency: Option<Latency>,
    /// Further figures.
    pub extras: Vec<Extra>,
    /// Server processes (with `--server-pids`).
    pub servers: Vec<ServerUsage>,
    /// Server CPU microseconds per operation, summed over server processes.
    pub server_cpu_us_per_op: Option<f64>,
    /// CPU seconds of the bench client itself during the workload.
    pub client_cpu_s: f64,
}

impl WorkloadResult {
    /// Adds an extra figure.
    pub fn extra(&mut self, name: &str, value: f64, unit: &str, lower_is_better: Option<bool>) {
        self.extras.push(Extra {
            name: name.into(),
            value,
            unit: unit.into(),
            lower_is_better,
        });
    }
}

/// The whole output of one `roster bench` run.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Report {
    /// `--label`: which system was driven (e.g. `roster`, `zookeeper`).
    pub label: String,
    /// Bench version.
    pub bench_version: String,
    /// Server addresses.
    pub servers: Vec<String>,
    /// Server process ids.
    pub server_pids: Vec<u32>,
    /// Sessions per load workload.
    pub sessions: usize,
    /// Requests in flight per session.
    pub depth: usize,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
    /// The results, in run order.
    pub results: Vec<WorkloadResult>,
}

fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        let s = format!("{:.0}", v);
        group(&s)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn group(s: &str) -> String {
    let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", s));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "-".into())
}

/// The human-readable table of one report.
pub fn table(r: &Report) -> String {
    let mut rows: Vec<Vec<String>> = vec![vec![
        "workload".into(),
        "ops".into(),
        "rate/s".into(),
        "p50 ms".into(),
        "p99 ms".into(),
        "p99.9 ms".into(),
        "max ms".into(),
        "errors".into(),
        "srv CPU s".into(),
        "srv µs/op".into(),
        "notes".into(),
    ]];
    for w in &r.results {
        let l = w.latency.as_ref();
        let cpu: Option<f64> = if w.servers.is_empty() {
            None
        } else {
            w.servers.iter().map(|s| s.cpu_s).sum::<Option<f64>>()
        };
        let mut notes: Vec<String> = w
            .extras
            .iter()
            .map(|e| {
                format!(
                    "{}={}{}",
                    e.name,
                    num(e.value),
                    if e.unit.is_empty() { "" } else { " " }.to_string() + &e.unit
                )
            })
            .collect();
        if let Some(e) = &w.error {
            notes.insert(0, format!("ERROR: {e}"));
        }
        rows.push(vec![
            w.workload.clone(),
            format!("{} {}", group(&w.ops.to_string()), w.unit),
            opt(w.throughput),
            opt(l.map(|l| l.p50_ms)),
            opt(l.map(|l| l.p99_ms)),
            opt(l.map(|l| l.p999_ms)),
            opt(l.map(|l| l.max_ms)),
            w.errors.to_string(),
            opt(cpu),
            opt(w.server_cpu_us_per_op),
            notes.join(", "),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "{} at {} ({} sessions x {} in flight, {}-byte payloads)\n",
        if r.label.is_empty() {
            "server"
        } else {
            &r.label
        },
        r.servers.join(","),
        r.sessions,
        r.depth,
        r.payload_bytes
    );
    for (n, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i == 0 || i == row.len() - 1 {
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(line, "{}{cell}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if n == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    out
}

/// One comparable figure: (workload, metric, unit, lower is better, value).
fn figures(w: &WorkloadResult) -> Vec<(String, String, Option<bool>, f64)> {
    let mut f = Vec::new();
    if let Some(t) = w.throughput {
        f.push((format!("{}/s", w.unit), String::new(), Some(false), t));
    }
    if let Some(l) = &w.latency {
        f.push(("p50".into(), "ms".into(), Some(true), l.p50_ms));
        f.push(("p99".into(), "ms".into(), Some(true), l.p99_ms));
        if l.count >= 1000 {
            f.push(("p99.9".into(), "ms".into(), Some(true), l.p999_ms));
        }
    }
    for e in &w.extras {
        f.push((e.name.clone(), e.unit.clone(), e.lower_is_better, e.value));
    }
    if !w.servers.is_empty() && w.server_cpu_us_per_op.is_some() {
        if let Some(c) = w.servers.iter().map(|s| s.cpu_s).sum::<Option<f64>>() {
            f.push(("server CPU".into(), "s".into(), None, c));
        }
        f.push(("client CPU".into(), "s".into(), None, w.client_cpu_s));
    }
    if let (Some(c), false) = (w.server_cpu_us_per_op, w.unit == "trials") {
        f.push(("server CPU per op".into(), "µs".into(), Some(true), c));
    }
    f
}

/// A Markdown table comparing the runs labelled `a` and `b` side by side, with the ratio a / b.
pub fn compare(reports: &[Report], a: &str, b: &str) -> String {
    let pick = |label: &str| -> Vec<&WorkloadResult> {
        reports
            .iter()
            .filter(|r| r.label == label)
            .flat_map(|r| r.results.iter())
            .collect()
    };
    let (ra, rb) = (pick(a), pick(b));
    let mut order: Vec<String> = Vec::new();
    for w in ra.iter().chain(rb.iter()) {
        if !order.contains(&w.workload) {
            order.push(w.workload.clone());
        }
    }
    let mut out = format!(
        "| workload | figure | {a} | {b} | {a} / {b} | better |\n|---|---|--:|--:|--:|---|\n"
    );
    for name in &order {
        let wa = ra.iter().rev().find(|w| &w.workload == name);
        let wb = rb.iter().rev().find(|w| &w.workload == name);
        let fa = wa.map(|w| figures(w)).unwrap_or_default();
        let fb = wb.map(|w| figures(w)).unwrap_or_default();
        let mut metrics: Vec<(String, String, Option<bool>)> = Vec::new();
        for (m, u, l, _) in fa.iter().chain(fb.iter()) {
            if !metrics.iter().any(|x| &x.0 == m) {
                metrics.push((m.clone(), u.clone(), *l));
            }
        }
        let err = |w: Option<&&WorkloadResult>| w.and_then(|w| w.error.clone());
        if metrics.is_empty() {
            let _ = writeln!(
                out,
                "| {name} | | {} | {} | | |",
                err(wa)
                    .map(|e| format!("error: {e}"))
                    .unwrap_or_else(|| "n/a".into()),
                err(wb)
                    .map(|e| format!("error: {e}"))
                    .unwrap_or_else(|| "n/a".into())
            );
            continue;
        }
        for (m, unit, lower) in metrics {
            let va = fa.iter().find(|x| x.0 == m).map(|x| x.3);
            let vb = fb.iter().find(|x| x.0 == m).map(|x| x.3);
            let cell = |v: Option<f64>, w: Option<&&WorkloadResult>| match (v, err(w)) {
                (Some(v), _) => format!(
                    "{}{}",
                    num(v),
                    if unit.is_empty() {
                        String::new()
                    } else {
                        format!(" {unit}")
                    }
                ),
                (None, Some(_)) => "error".into(),
                (None, None) => "n/a".into(),
            };
            let (ratio, better) = match (va, vb) {
                (Some(x), Some(y)) if y != 0.0 => {
                    let r = x / y;
                    let better = match lower {
                        Some(true) if r < 0.95 => a.to_string(),
                        Some(true) if r > 1.05 => b.to_string(),
                        Some(false) if r > 1.05 => a.to_string(),
                        Some(false) if r < 0.95 => b.to_string(),
                        Some(_) => "≈".into(),
                        None => String::new(),
                    };
                    (format!("{r:.2}"), better)
                }
                _ => ("".into(), "".into()),
            };
            let _ = writeln!(
                out,
                "| {name} | {m} | {} | {} | {ratio} | {better} |",
                cell(va, wa),
                cell(vb, wb)
            );
        }
    }
    let mut errors = String::new();
    for (label, rs) in [(a, &ra), (b, &rb)] {
        for w in rs.iter() {
            if let Some(e) = &w.error {
                let _ = writeln!(errors, "- {label} {}: {e}", w.workload);
            }
        }
    }
    if !errors.is_empty() {
        out.push_str("\nErrors:\n");
        out.push_str(&errors);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_compare() {
        assert_eq!(num(1234567.0), "1,234,567");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.1234), "0.123");
        let mut h = new_hist();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let l = Latency::of(&h).unwrap();
        assert!(l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
        let w = |label: &str, t: f64| Report {
            label: label.into(),
            results: vec![WorkloadResult {
                workload: "get".into(),
                unit: "ops".into(),
                throughput: Some(t),
                latency: Some(l.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let md = compare(
            &[w("roster", 200.0), w("zookeeper", 100.0)],
            "roster",
            "zookeeper",
        );
        assert!(
            md.contains("| get | ops/s | 200 | 100 | 2.00 | roster |"),
            "{md}"
        );
        assert!(table(&w("roster", 1.0)).contains("get"));
    }
}
