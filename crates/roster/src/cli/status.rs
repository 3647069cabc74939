//! `roster status`: every server's view of itself, from the `srvr` and `mntr` four-letter words.
//!
//! A four-letter word is sent on a fresh connection to the client port instead of a handshake; the
//! server answers in plain text and closes (ZooKeeper's `NIOServerCnxn.checkFourLetterWord`). `srvr`
//! answers `Key: value` lines (version, latency, zxid, mode, node count), `mntr` tab-separated
//! `zk_key value` lines with more counters (watches, ephemerals, data size). A server that does not
//! allow `mntr` (not in `4lw.commands.whitelist`) is shown with what `srvr` gave. With `--tls-ca`
//! the words go over TLS (secure client ports answer them after the handshake).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use roster_client::ConnectString;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::output::{print_json, Table};
use super::{GlobalClientOpts, EXIT_CONNECTION, EXIT_ZK_ERROR};

/// What one server said.
struct Report {
    server: String,
    srvr: Result<BTreeMap<String, String>, String>,
    mntr: Option<BTreeMap<String, String>>,
}

pub(super) async fn run(opts: &GlobalClientOpts) -> anyhow::Result<ExitCode> {
    let cs: ConnectString = match opts.servers().parse() {
        Ok(cs) => cs,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_ZK_ERROR));
        }
    };
    let tls = match &opts.tls_ca {
        None => None,
        Some(ca) => {
            let client = opts.tls_cert.as_deref().zip(opts.tls_key.as_deref());
            match roster_client::tls_config(ca, client) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("error: cannot set up TLS: {e}");
                    return Ok(ExitCode::from(EXIT_ZK_ERROR));
                }
            }
        }
    };
    let tls = tls.as_ref();
    let reports = futures::future::join_all(cs.hosts.iter().map(|h| async move {
        let server = h.to_string();
        let srvr = four_letter(h, "srvr", opts.timeout, tls)
            .await
            .map(|t| parse_srvr(&t));
        let mntr = match &srvr {
            Ok(_) => four_letter(h, "mntr", opts.timeout, tls)
                .await
                .ok()
                .and_then(|t| parse_mntr(&t)),
            Err(_) => None,
        };
        Report { server, srvr, mntr }
    }))
    .await;

    if opts.json {
        let items: Vec<Value> = reports
            .iter()
            .map(|r| match &r.srvr {
                Ok(s) => json!({ "server": r.server, "ok": true, "srvr": s, "mntr": r.mntr }),
                Err(e) => json!({ "server": r.server, "ok": false, "error": e }),
            })
            .collect();
        print_json(&json!({ "servers": items }))?;
    } else {
        let mut t = Table::new(&[
            "SERVER",
            "MODE",
            "VERSION",
            "ZXID",
            "CONNECTIONS",
            "OUTSTANDING",
            "NODES",
            "WATCHES",
            "EPHEMERALS",
            "LATENCY_MS",
        ]);
        for r in &reports {
            match &r.srvr {
                Ok(s) => {
                    let get = |k: &str| s.get(k).cloned().unwrap_or_else(|| "-".into());
                    let m = |k: &str| {
                        r.mntr
                            .as_ref()
                            .and_then(|m| m.get(k))
                            .cloned()
                            .unwrap_or_else(|| "-".into())
                    };
                    // "3.8.0-<commit>, built on ..." is too long for a table: keep the version.
                    let version = get("Zookeeper version")
                        .split([',', '-'])
                        .next()
                        .unwrap_or("-")
                        .trim()
                        .to_string();
                    t.row(vec![
                        r.server.clone(),
                        get("Mode"),
                        version,
                        get("Zxid"),
                        get("Connections"),
                        get("Outstanding"),
                        get("Node count"),
                        m("zk_watch_count"),
                        m("zk_ephemerals_count"),
                        get("Latency min/avg/max"),
                    ]);
                }
                Err(e) => {
                    let mut row = vec![r.server.clone(), format!("unreachable: {e}")];
                    row.resize(10, String::new());
                    t.row(row);
                }
            }
        }
        t.print()?;
    }
    let failed = reports.iter().filter(|r| r.srvr.is_err()).count();
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} servers did not answer",
            reports.len()
        );
        return Ok(ExitCode::from(EXIT_CONNECTION));
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends `word` (over TLS with `tls`) and reads the reply until the server closes.
async fn four_letter(
    server: &roster_client::HostAddr,
    word: &str,
    timeout: Duration,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> Result<String, String> {
    async fn talk<S: AsyncReadExt + AsyncWriteExt + Unpin>(
        mut s: S,
        word: &str,
    ) -> std::io::Result<String> {
        s.write_all(word.as_bytes()).await?;
        let mut out = Vec::new();
        match s.read_to_end(&mut out).await {
            // A TLS server may close without close_notify once it has answered.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
            r => {
                r?;
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
    let exchange = async {
        let tcp = TcpStream::connect((server.host.as_str(), server.port)).await?;
        match tls {
            None => talk(tcp, word).await,
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(server.host.clone())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let s = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                talk(s, word).await
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(text)) if text.contains("is not executed because it is not in the whitelist") => Err(
            format!("{word} is not allowed by the server's 4lw whitelist"),
        ),
        Ok(Ok(text)) if text.trim().is_empty() => Err(format!("empty answer to {word}")),
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer to {word} within {timeout:?}")),
    }
}

/// `Key: value` lines.
fn parse_srvr(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `key<TAB>value` lines; `None` if there are none (an error text).
fn parse_mntr(text: &str) -> Option<BTreeMap<String, String>> {
    let map: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_srvr_and_mntr() {
        let srvr = "Zookeeper version: 3.8.0-abc, built on 2024-12-29 17:54 UTC\nLatency min/avg/max: 0/0.1/3\n\
                    Zxid: 0x1f\nMode: standalone\nNode count: 5\n";
        let s = parse_srvr(srvr);
        assert_eq!(s["Zxid"], "0x1f");
        assert_eq!(s["Latency min/avg/max"], "0/0.1/3");
        assert_eq!(
            s["Zookeeper version"],
            "3.8.0-abc, built on 2024-12-29 17:54 UTC"
        );
        let m = parse_mntr("zk_version\t3.8.0\nzk_watch_count\t4\n").unwrap();
        assert_eq!(m["zk_watch_count"], "4");
        assert!(parse_mntr("mntr is not executed because it is not in the whitelist.\n").is_none());
    }
}
