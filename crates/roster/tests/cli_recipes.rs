//! The recipe subcommands (`roster members / leader / services / resolve`), run as the built binary
//! against a real Apache ZooKeeper (or Roster: `ROSTER_CLIENT_TEST_TARGETS=zookeeper,roster`), with the
//! groups, elections and services made by `roster_client::recipes` in the test process.

#[path = "../../client/tests/support/mod.rs"]
mod zk_support;

use std::process::{Output, Stdio};
use std::time::Duration;

use roster_client::recipes::discovery::{ServiceDiscovery, ServiceInstance};
use roster_client::recipes::election::LeaderElection;
use roster_client::recipes::membership::{Group, MemberInfo};
use roster_client::recipes::names::NameRegistry;
use roster_client::{Client, ClientOptions};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use zk_support::{shared, targets, unique_root, ServerProcess};

const STEP: Duration = Duration::from_secs(20);

fn cmd(server: Option<&str>, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"));
    if let Some(s) = server {
        c.args(["--server", s]);
    }
    c.args(["--timeout", "5s"]).args(args);
    c.kill_on_drop(true);
    c
}

async fn roster(server: &str, args: &[&str]) -> Output {
    cmd(Some(server), args).output().await.expect("roster runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn ok(server: &str, args: &[&str]) -> String {
    let o = roster(server, args).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "roster {args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

async fn json(server: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(server, &all).await).expect("valid JSON")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_table_json_and_watch() {
    for target in targets() {
        let server = shared(target);
        let s = &server.tcp_addr();
        let group = format!("{}/group", unique_root("cli-members"));
        let c = client(server).await;

        // A missing group: exit 1 with NoNode.
        let o = roster(s, &["members", &group]).await;
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("NoNode"));

        let _a = Group::new(&c, &group)
            .join(
                "node-a",
                MemberInfo::new("10.0.0.1", 2552).tag("dc", "east"),
            )
            .await
            .unwrap();
        let table = ok(s, &["members", &group]).await;
        assert!(table.starts_with("ID"), "{table}");
        assert!(
            table.contains("node-a") && table.contains("10.0.0.1") && table.contains("dc=east"),
            "{table}"
        );
        assert!(table.contains("1 member (consistent at zxid 0x"), "{table}");
        let v = json(s, &["members", &group]).await;
        assert_eq!(v["members"][0]["id"], "node-a");
        assert_eq!(v["members"][0]["port"], 2552);
        assert!(v["zxid"].as_i64().unwrap() > 0);

        // --watch: the current members, then events, one JSON object per line; ROSTER_SERVERS.
        let mut child = cmd(
            None,
            &["--json", "members", &group, "--watch", "--count", "2"],
        )
        .env("ROSTER_SERVERS", s)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(
            &tokio::time::timeout(STEP, lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["event"], "member");
        assert_eq!(first["member"]["id"], "node-a");
        let b = client(server).await;
        let mb = Group::new(&b, &group)
            .join("node-b", MemberInfo::new("10.0.0.2", 2552))
            .await
            .unwrap();
        let joined: Value = serde_json::from_str(
            &tokio::time::timeout(STEP, lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (joined["event"].as_str(), joined["member"]["id"].as_str()),
            (Some("joined"), Some("node-b"))
        );
        mb.leave().await.unwrap();
        let left: Value = serde_json::from_str(
            &tokio::time::timeout(STEP, lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (left["event"].as_str(), left["member"]["id"].as_str()),
            (Some("left"), Some("node-b"))
        );
        assert!(left["zxid"].as_i64() > joined["zxid"].as_i64());
        let status = tokio::time::timeout(STEP, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(0));
        b.close().await.unwrap();
        c.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_shows_the_leader_and_its_token() {
    for target in targets() {
        let server = shared(target);
        let s = &server.tcp_addr();
        let path = format!("{}/election", unique_root("cli-leader"));
        let o = roster(s, &["leader", &path]).await;
        assert_eq!(o.status.code(), Some(3), "no leader: exit 3");
        let c1 = client(server).await;
        let c2 = client(server).await;
        let first = LeaderElection::new(&c1, &path, "alpha")
            .join()
            .await
            .unwrap();
        let token = tokio::time::timeout(STEP, first.wait_leader())
            .await
            .unwrap()
            .unwrap();
        let second = LeaderElection::new(&c2, &path, "beta")
            .join()
            .await
            .unwrap();
        let v = json(s, &["leader", &path]).await;
        assert_eq!(v["leader"]["id"], "alpha");
        assert_eq!(v["leader"]["token"], token);
        assert_eq!(v["participants"].as_array().unwrap().len(), 2);
        assert_eq!(v["participants"][1]["id"], "beta");
        let table = ok(s, &["leader", &path]).await;
        assert!(table.starts_with("POSITION"), "{table}");
        assert!(
            table.lines().nth(1).unwrap().contains("alpha") && table.contains("leader"),
            "{table}"
        );
        assert!(table.contains(&token.to_string()), "{table}");
        first.close().await.unwrap();
        tokio::time::timeout(STEP, second.wait_leader())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(json(s, &["leader", &path]).await["leader"]["id"], "beta");
        second.close().await.unwrap();
        c1.close().await.unwrap();
        c2.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_resolve() {
    for target in targets() {
        let server = shared(target);
        let s = &server.tcp_addr();
        let root = unique_root("cli-services");
        let base = format!("{root}/services");
        let names = format!("{root}/names");
        let c = client(server).await;
        let sd = ServiceDiscovery::new(&c, &base);
        let _r1 = sd
            .register(ServiceInstance::new("user", "u1", "10.0.0.1", 8080))
            .await
            .unwrap();
        let _r2 = sd
            .register(
                ServiceInstance::new("user", "u2", "10.0.0.2", 8080)
                    .with_payload(serde_json::json!({"zone": "b"})),
            )
            .await
            .unwrap();
        let _r3 = sd
            .register(ServiceInstance::new("billing", "b1", "10.0.0.3", 9090))
            .await
            .unwrap();

        let table = ok(s, &["services", "--base", &base]).await;
        assert!(table.starts_with("SERVICE"), "{table}");
        assert!(
            table.contains("billing") && table.contains("user"),
            "{table}"
        );
        let v = json(s, &["services", "--base", &base]).await;
        assert_eq!(v["services"][1]["name"], "user");
        assert_eq!(v["services"][1]["instances"], 2);
        let v = json(s, &["services", "user", "--base", &base]).await;
        assert_eq!(v["instances"][1]["id"], "u2");
        assert_eq!(v["instances"][1]["payload"]["zone"], "b");
        assert_eq!(v["instances"][1]["serviceType"], "DYNAMIC");
        let o = roster(s, &["services", "nobody", "--base", &base]).await;
        assert_eq!(o.status.code(), Some(3));

        let uri = "cluster://user/victorops/broadcaster";
        let v = json(s, &["resolve", uri, "--base", &base]).await;
        assert_eq!(v["service"], "user");
        assert_eq!(v["path"], "victorops/broadcaster");
        let targets: Vec<&str> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["target"].as_str().unwrap())
            .collect();
        assert_eq!(
            targets,
            vec![
                "10.0.0.1:8080/victorops/broadcaster",
                "10.0.0.2:8080/victorops/broadcaster"
            ]
        );
        // With owned names: the owner only.
        let reg = NameRegistry::new(&c, &names, "u2");
        reg.claim("user/victorops/broadcaster").await.unwrap();
        let v = json(s, &["resolve", uri, "--base", &base, "--names", &names]).await;
        assert_eq!(v["owner"], "u2");
        assert_eq!(v["instances"].as_array().unwrap().len(), 1);
        let table = ok(s, &["resolve", uri, "--base", &base, "--names", &names]).await;
        assert!(
            table.contains("10.0.0.2:8080/victorops/broadcaster") && table.contains("yes"),
            "{table}"
        );
        let o = roster(s, &["resolve", "cluster://ghost/x", "--base", &base]).await;
        assert_eq!(o.status.code(), Some(3));
        let o = roster(s, &["resolve", "http://nope", "--base", &base]).await;
        assert_eq!(o.status.code(), Some(1), "bad arguments: exit 1");
        reg.release_all().await.unwrap();
        c.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_exit_2() {
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "--server",
            "127.0.0.1:1",
            "--timeout",
            "1s",
            "members",
            "/g",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("cannot connect"),
        "{}",
        text(&o.stderr)
    );
}
