//! Linux `/proc` readings: resident memory (`VmRSS`) and CPU time (`utime + stime`) of a process.

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on every Linux architecture we run on).
const TICKS_PER_SEC: f64 = 100.0;

/// Resident set size of `pid` in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// User plus system CPU seconds consumed so far by `pid` (all threads), from `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    cpu_from_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds of this process.
pub fn self_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_from_stat(&s))
        .unwrap_or(0.0)
}

fn cpu_from_stat(s: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces; fields after its closing parenthesis are fixed.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// CPU and memory of a set of processes at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// (pid, cpu seconds, rss KiB) per process.
    pub procs: Vec<(u32, Option<f64>, Option<u64>)>,
    /// This process's CPU seconds.
    pub client_cpu: f64,
}

impl Snapshot {
    /// Reads every pid now.
    pub fn take(pids: &[u32]) -> Snapshot {
        Snapshot {
            procs: pids.iter().map(|&p| (p, cpu_secs(p), rss_kib(p))).collect(),
            client_cpu: self_cpu_secs(),
        }
    }

    /// Sum of RSS over the processes, MiB (None if any is unreadable or there are none).
    pub fn rss_mib(&self) -> Option<f64> {
        if self.procs.is_empty() {
            return None;
        }
        let mut t = 0u64;
        for p in &self.procs {
            t += p.2?;
        }
        Some(t as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let s = "1234 (java thing) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 30 0 100 0 0";
        assert_eq!(cpu_from_stat(s), Some(3.0));
        assert!(self_cpu_secs() >= 0.0);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
