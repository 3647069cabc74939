//! The client subcommands (`roster ls/get/set/create/delete/stat/watch/status`), run as the built
//! binary against a real Apache ZooKeeper (or Roster: `ROSTER_CLIENT_TEST_TARGETS`), started with the
//! client tests' launcher.

#[path = "../../client/tests/support/mod.rs"]
mod zk_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use roster_client::{Client, ClientOptions, CreateOptions};
use serde_json::Value;
use zk_support::{shared, targets, unique_root, ServerProcess};

/// Runs `roster --server ADDR ARGS...` and returns its output.
fn roster(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["--server", server, "--timeout", "5s"])
        .args(args)
        .output()
        .expect("roster runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed; returns its standard output.
fn ok(server: &str, args: &[&str]) -> String {
    let o = roster(server, args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "roster {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn json(server: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(server, &all)).expect("valid JSON")
}

async fn client(server: &ServerProcess) -> Client {
    let opts = ClientOptions {
        request_timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    Client::connect(&server.tcp_addr(), opts)
        .await
        .expect("connect")
}

#[test]
fn read_and_write_nodes() {
    for target in targets() {
        let server = shared(target);
        let s = &server.tcp_addr();
        let root = unique_root("cli");
        let x = format!("{root}/x");

        assert_eq!(ok(s, &["create", &root]), format!("{root}\n"));
        assert_eq!(ok(s, &["create", &x, "hello"]), format!("{x}\n"));
        assert_eq!(ok(s, &["get", &x]), "hello\n");
        assert_eq!(ok(s, &["set", &x, "world"]), format!("{x}: version 1\n"));
        let got = json(s, &["get", &x, "--stat"]);
        assert_eq!(
            (got["data"].as_str(), got["data_base64"].as_str()),
            (Some("world"), Some("d29ybGQ="))
        );
        assert_eq!(got["stat"]["version"], 1);
        assert_eq!(json(s, &["stat", &x])["stat"]["data_length"], 5);
        let table = ok(s, &["stat", &x]);
        assert!(
            table.contains("version") && table.contains("dataLength"),
            "{table}"
        );

        // Optimistic concurrency, with the code's name in the message and exit code 1.
        let o = roster(s, &["set", &x, "again", "--expected-version", "0"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("BadVersion"), "{}", stderr(&o));
        let o = roster(s, &["get", &format!("{root}/missing")]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("NoNode"), "{}", stderr(&o));

        // Modes and parents.
        let deep = format!("{root}/a/b/c");
        assert_eq!(
            ok(s, &["create", "--parents", &deep, "d"]),
            format!("{deep}\n")
        );
        let seq = ok(s, &["create", "--sequential", &format!("{root}/q-")]);
        assert!(
            seq.trim().starts_with(&format!("{root}/q-00000000")),
            "{seq}"
        );
        ok(s, &["create", "--container", &format!("{root}/box")]);
        ok(s, &["create", "--ttl", "60000", &format!("{root}/ttl")]);
        let o = roster(
            s,
            &[
                "create",
                "--ephemeral",
                "--container",
                &format!("{root}/bad"),
            ],
        );
        assert_eq!(o.status.code(), Some(2), "clap rejects conflicting flags");

        let listing = ok(s, &["ls", &root]);
        assert_eq!(listing.lines().collect::<Vec<_>>().len(), 5, "{listing}");
        assert!(listing.starts_with("a\nbox\n"), "sorted: {listing}");
        let long = ok(s, &["ls", "-l", &root]);
        assert!(
            long.starts_with("NAME") && long.contains("VERSION"),
            "{long}"
        );
        let kids = json(s, &["ls", "-l", &root]);
        assert_eq!(kids["children"].as_array().map(Vec::len), Some(5));
        assert_eq!(kids["children"][0]["name"], "a");

        let o = roster(s, &["delete", &format!("{root}/a")]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("NotEmpty"), "{}", stderr(&o));
        let deleted = json(s, &["delete", "--recursive", &format!("{root}/a")]);
        assert_eq!(deleted["deleted"].as_array().map(Vec::len), Some(3));
        assert_eq!(deleted["deleted"][0], deep);
        ok(s, &["delete", "-r", &root]);
        assert_eq!(roster(s, &["stat", &root]).status.code(), Some(1));
    }
}

#[test]
fn connection_problems_exit_with_2() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["--server", &dead, "--timeout", "500ms", "get", "/"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_roster"))
        .env("ROSTER_SERVERS", &dead)
        .args(["--timeout", "500ms", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn status_uses_four_letter_words() {
    for target in targets() {
        let server = shared(target);
        let table = ok(&server.tcp_addr(), &["status"]);
        assert!(table.starts_with("SERVER"), "{table}");
        assert!(table.contains(&server.tcp_addr()), "{table}");
        let v = json(&server.tcp_addr(), &["status"]);
        let s = &v["servers"][0];
        assert_eq!(s["ok"], true, "{v}");
        if target == zk_support::TestServer::ZooKeeper {
            assert_eq!(s["srvr"]["Mode"], "standalone");
            assert!(
                s["mntr"]["zk_version"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("3.")),
                "{v}"
            );
        }
    }
}

#[tokio::test]
async fn watch_streams_events_and_ephemerals_live_with_the_command() {
    for target in targets() {
        let server = shared(target);
        let c = client(server).await;
        let root = unique_root("cli-watch");
        c.create(&root, b"", &CreateOptions::default())
            .await
            .unwrap();

        // `watch --recursive --count 3 --json`: one JSON object per event.
        let mut child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args([
                "--server",
                &server.tcp_addr(),
                "--json",
                "watch",
                "--recursive",
                "--count",
                "3",
                &root,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The watch is set once the command says so on stderr.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.starts_with("watching"), "{line}");
        c.create(&format!("{root}/a"), b"", &CreateOptions::default())
            .await
            .unwrap();
        c.set_data(&format!("{root}/a"), b"1", None).await.unwrap();
        c.delete(&format!("{root}/a"), None).await.unwrap();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let events: Vec<Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["NodeCreated", "NodeDataChanged", "NodeDeleted"]);
        assert_eq!(events[0]["path"], format!("{root}/a"));

        // `create --ephemeral` holds the session until interrupted; SIGTERM closes it cleanly.
        let e = format!("{root}/member");
        let mut holder = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["--server", &server.tcp_addr(), "create", "--ephemeral", &e])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut printed = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut printed)
            .unwrap();
        assert_eq!(printed.trim(), e);
        let owner = c
            .exists(&e)
            .await
            .unwrap()
            .expect("the ephemeral exists")
            .ephemeral_owner;
        assert_ne!(owner, 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(c.exists(&e).await.unwrap().is_some(), "still held");
        let killed = Command::new("kill")
            .args(["-TERM", &holder.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        assert_eq!(
            tokio::task::spawn_blocking(move || holder.wait().unwrap())
                .await
                .unwrap()
                .code(),
            Some(0)
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while c.exists(&e).await.unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "the ephemeral outlived its command"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.close().await.unwrap();
    }
}
