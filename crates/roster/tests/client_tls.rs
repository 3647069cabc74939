//! The TLS client port with the Rust client and the `roster` CLI: a session over TLS, a client
//! certificate as the `x509` identity, refusals (plain client on the TLS port, untrusted CA), and a
//! certificate replaced on disk being served to new connections without a restart.
//!
//! Certificates are made at test time with rcgen; kazoo and zkCli over TLS are in
//! tests/compat/test_client_security.py.

mod support;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use roster_client::{tls_config, Client, ClientOptions, CreateOptions, Error};
use roster_proto::{perms, Acl, Id};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::Roster;

/// A CA that signs a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

const CLIENT_DN: &str = "CN=worker-7,O=Roster Test";

fn make_pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    // A fresh name: the default one holds a CN already, which a push would replace in place.
    cp.distinguished_name = rcgen::DistinguishedName::new();
    cp.distinguished_name
        .push(DnType::OrganizationName, "Roster Test");
    cp.distinguished_name.push(DnType::CommonName, "worker-7");
    let client = cp.signed_by(&client_key, &issuer).unwrap();

    let write = |file: &str, text: String| {
        let p = dir.join(format!("{name}-{file}"));
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn options(tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Some(Duration::from_secs(3)),
        request_timeout: Some(Duration::from_secs(10)),
        tls,
        ..Default::default()
    }
}

#[test]
fn rust_client_and_cli_over_tls_with_x509_identity_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "first");
    // The server reads its certificate from these paths; the test replaces their contents later.
    let cert = dir.path().join("live-cert.pem");
    let key = dir.path().join("live-key.pem");
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    let secure = free_addr();
    let roster = Roster::start(&[
        "--secure-client-addr",
        &secure,
        "--client-tls-cert",
        cert.to_str().unwrap(),
        "--client-tls-key",
        key.to_str().unwrap(),
        "--client-tls-ca",
        pki.ca.to_str().unwrap(),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A client certificate: the session holds x509:<subject DN> and owns a node by it.
        let with_cert = tls_config(&pki.ca, Some((&pki.client_cert, &pki.client_key))).unwrap();
        let owner = Client::connect(&secure, options(Some(with_cert)))
            .await
            .unwrap();
        let acl = vec![Acl {
            perms: perms::ALL,
            id: Id::new("x509", CLIENT_DN),
        }];
        owner
            .create(
                "/tls-owned",
                b"v1",
                &CreateOptions {
                    acl,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let me = owner.whoami().await.unwrap();
        assert!(
            me.iter()
                .any(|c| c.auth_scheme == "x509" && c.user == CLIENT_DN),
            "{me:?}"
        );
        assert_eq!(&owner.get_data("/tls-owned").await.unwrap().0[..], b"v1");

        // TLS without a certificate: connected (client_auth want), but not the owner.
        let anon = Client::connect(&secure, options(Some(tls_config(&pki.ca, None).unwrap())))
            .await
            .unwrap();
        assert!(matches!(
            anon.get_data("/tls-owned").await,
            Err(Error::Code(roster_proto::ErrorCode::NoAuth))
        ));

        // A plain client on the TLS port gets no session.
        assert!(Client::connect(&secure, options(None)).await.is_err());
        // A client that trusts another CA refuses the server.
        let other = make_pki(dir.path(), "other");
        let untrusting = tls_config(&other.ca, None).unwrap();
        assert!(Client::connect(&secure, options(Some(untrusting)))
            .await
            .is_err());

        // Replace the certificate on disk with one from the other CA: new connections get it
        // (the files are checked at most once a second).
        std::fs::copy(&other.server_cert, &cert).unwrap();
        std::fs::copy(&other.server_key, &key).unwrap();
        let mut reloaded = false;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let c = tls_config(&other.ca, None).unwrap();
            if let Ok(c) = Client::connect(&secure, options(Some(c))).await {
                c.close().await.ok();
                reloaded = true;
                break;
            }
        }
        assert!(
            reloaded,
            "the replaced certificate was not served within 6 s"
        );
        // The established session keeps working.
        assert_eq!(&owner.get_data("/tls-owned").await.unwrap().0[..], b"v1");
    });

    // The CLI over TLS, with the client certificate.
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["--server", &secure, "--timeout", "5s"])
        .args([
            "--tls-ca",
            dir.path().join("other-ca.pem").to_str().unwrap(),
        ])
        .args(["get", "/tls-owned"])
        .output()
        .unwrap();
    // Reachable over TLS, but the node belongs to the first CA's client: NoAuth.
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("noauth") || err.contains("not authorized") || err.contains("no auth"),
        "{err}"
    );
    // `roster status` sends its four-letter words over TLS too.
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["--server", &secure, "--timeout", "5s", "--json"])
        .args([
            "--tls-ca",
            dir.path().join("other-ca.pem").to_str().unwrap(),
        ])
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("standalone")
            || String::from_utf8_lossy(&out.stdout).contains("leader")
    );
    drop(roster);
}

#[test]
fn client_auth_need_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "need");
    let secure = free_addr();
    let _roster = Roster::start(&[
        "--secure-client-addr",
        &secure,
        "--client-tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--client-tls-key",
        pki.server_key.to_str().unwrap(),
        "--client-tls-ca",
        pki.ca.to_str().unwrap(),
        "--client-tls-client-auth",
        "need",
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let anon = tls_config(&pki.ca, None).unwrap();
        assert!(Client::connect(&secure, options(Some(anon))).await.is_err());
        let with_cert = tls_config(&pki.ca, Some((&pki.client_cert, &pki.client_key))).unwrap();
        let c = Client::connect(&secure, options(Some(with_cert)))
            .await
            .unwrap();
        assert!(c.exists("/").await.unwrap().is_some());
    });
}
