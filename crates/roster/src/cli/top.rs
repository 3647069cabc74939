//! `roster status --admin ADDR` and `roster top`: the cluster as one node's admin API sees it
//! (`GET /api/v1/cluster`), and a live terminal view of it with sessions, request rates (from
//! `/metrics`) and recent events with their causes (`/api/v1/events`).
//!
//! Left out: driving actions (snapshot, remove) from the terminal: `roster cluster` does that.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{get, get_json};
use super::output::{print_json, Table};
use super::EXIT_CONNECTION;

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The members table of a `/api/v1/cluster` answer.
fn members_table(cluster: &Value) -> Table {
    let mut t = Table::new(&[
        "node", "role", "health", "applied", "lag", "serving", "client", "peer",
    ]);
    for m in cluster["members"].as_array().into_iter().flatten() {
        let mut id = text(&m["id"]);
        if m["this_node"] == Value::Bool(true) {
            id.push('*');
        }
        t.row(vec![
            id,
            text(&m["role"]),
            text(&m["health"]),
            text(&m["applied"]),
            text(&m["lag"]),
            text(&m["serving"]),
            text(&m["client_addr"]),
            text(&m["peer_addr"]),
        ]);
    }
    t
}

fn header(cluster: &Value) -> String {
    format!(
        "cluster {}  term {}  leader {}  target voters {}",
        text(&cluster["cluster_id"]),
        text(&cluster["term"]),
        text(&cluster["leader"]),
        text(&cluster["target_voters"]),
    )
}

/// `roster status --admin ADDR`.
pub(super) async fn status(admin: &str, json: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
    match get_json(admin, "/api/v1/cluster", timeout).await {
        Ok(c) if json => {
            print_json(&c)?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(c) => {
            println!("{}", header(&c));
            members_table(&c).print()?;
            println!("(* the node asked)");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_CONNECTION))
        }
    }
}

/// The sum of every sample of `name` (all label sets) in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = match line.rsplit_once(' ') {
            Some(kv) => kv,
            None => continue,
        };
        let key_name = key.split('{').next().unwrap_or(key);
        if key_name == name {
            if let Ok(v) = value.parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

/// One sample of what `roster top` shows.
struct Sample {
    at: Instant,
    requests: Option<f64>,
}

/// `roster top`: refreshes every `every` until interrupted, or `count` times.
pub(super) async fn top(
    admin: &str,
    every: Duration,
    count: Option<u64>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut last: Option<Sample> = None;
    let mut shown = 0u64;
    loop {
        let cluster = get_json(admin, "/api/v1/cluster", timeout).await;
        let sessions = get_json(admin, "/api/v1/sessions?limit=0", timeout).await;
        let events = get_json(admin, "/api/v1/events", timeout).await;
        let metrics = get(admin, "/metrics", timeout).await.ok();
        let now = Sample {
            at: Instant::now(),
            requests: metrics
                .as_ref()
                .filter(|(s, _)| *s == 200)
                .and_then(|(_, body)| metric_sum(body, "roster_request_duration_seconds_count")),
        };
        let rate = match (&last, now.requests) {
            (Some(prev), Some(n)) => prev.requests.map(|p| {
                let secs = now.at.duration_since(prev.at).as_secs_f64().max(0.001);
                format!("{:.0} req/s", (n - p).max(0.0) / secs)
            }),
            _ => None,
        };
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        match &cluster {
            Ok(c) => {
                out.push_str(&format!("roster top — {admin}   {}\n\n", header(c)));
                out.push_str(&members_table(c).render());
            }
            Err(e) => out.push_str(&format!("roster top — {admin}\n\nerror: {e}\n")),
        }
        let total = sessions
            .as_ref()
            .ok()
            .map(|s| text(&s["total"]))
            .unwrap_or_else(|| "?".into());
        out.push_str(&format!(
            "\nsessions {total}   requests {}\n",
            rate.unwrap_or_else(|| if now.requests.is_some() {
                "(measuring)".into()
            } else {
                "? (metrics off)".into()
            })
        ));
        if let Ok(ev) = &events {
            out.push_str("\nrecent events:\n");
            let list = ev["events"].as_array().cloned().unwrap_or_default();
            for e in list.iter().rev().take(8) {
                out.push_str(&format!(
                    "  {}  {}: {}\n",
                    super::output::format_time(e["time_ms"].as_i64().unwrap_or(0)),
                    text(&e["kind"]),
                    text(&e["cause"])
                ));
            }
        }
        print!("{out}");
        std::io::stdout().flush()?;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(if cluster.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CONNECTION)
            });
        }
        last = Some(now);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        if !tty {
            println!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_add_every_label_set_of_one_name_only() {
        let text = "# HELP x\nroster_request_duration_seconds_count{op=\"create\"} 3\n\
                    roster_request_duration_seconds_count{op=\"get_data\"} 4.5\n\
                    roster_request_duration_seconds_sum{op=\"create\"} 9\n";
        assert_eq!(
            metric_sum(text, "roster_request_duration_seconds_count"),
            Some(7.5)
        );
        assert_eq!(metric_sum(text, "nothing"), None);
    }

    #[test]
    fn the_members_table_marks_the_node_asked_and_dashes_unknowns() {
        let c = serde_json::json!({"members": [
            {"id": 1, "this_node": true, "role": "leader", "health": "ok", "applied": 9, "lag": 0,
             "serving": true, "client_addr": "127.0.0.1:2181", "peer_addr": "127.0.0.1:2888"},
            {"id": 2, "this_node": false, "role": "unknown", "health": "unreachable", "applied": null,
             "lag": null, "serving": null, "client_addr": null, "peer_addr": "127.0.0.1:2889"}]});
        let t = members_table(&c).render();
        assert!(t.contains("1*"), "{t}");
        assert!(t.contains("unreachable"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains(" - "), "{t}");
    }
}
