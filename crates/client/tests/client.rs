//! The client against a real server: every operation, watches, session resume and expiry, chroot and
//! auth. Each test runs against every target of `ROSTER_CLIENT_TEST_TARGETS` (default: a real Apache
//! ZooKeeper started by the tests; see `support/mod.rs`), on a path of its own.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use roster_client::{
    digest_acl, perms, Acl, AddWatchMode, Client, ClientOptions, CreateMode, CreateOptions, Error,
    ErrorCode, EventType, KeeperState, Op, OpResult, ReadOp, ReadResult, SessionEvent,
    SessionState, WatchedEvent, WatcherType,
};
use support::{each_target, unique_root, ServerProcess};
use tokio::sync::broadcast;

/// The longest any single step of a test may take.
const STEP: Duration = Duration::from_secs(15);

fn options(session_timeout: Duration) -> ClientOptions {
    ClientOptions {
        session_timeout,
        connect_timeout: Some(STEP),
        request_timeout: Some(STEP),
        ..Default::default()
    }
}

async fn connect(server: &ServerProcess) -> Client {
    connect_to(&server.addr(), options(Duration::from_secs(6))).await
}

async fn connect_to(connect_string: &str, opts: ClientOptions) -> Client {
    Client::connect(connect_string, opts)
        .await
        .unwrap_or_else(|e| panic!("connect to {connect_string}: {e}"))
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn next_state(rx: &mut broadcast::Receiver<SessionEvent>) -> SessionEvent {
    within("a session event", rx.recv())
        .await
        .expect("session event channel")
}

/// Polls until `path` no longer exists (for server-side deletions: TTL, containers, expiry).
async fn wait_gone(c: &Client, path: &str) {
    within(&format!("{path} to disappear"), async {
        while c.exists(path).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn event(event_type: EventType, path: &str) -> WatchedEvent {
    WatchedEvent {
        event_type,
        state: KeeperState::SyncConnected,
        path: path.to_string(),
    }
}

fn code(e: ErrorCode) -> Error {
    Error::Code(e)
}

#[tokio::test]
async fn crud_versions_and_errors() {
    each_target("crud_versions_and_errors", |server| async move {
        let c = connect(server).await;
        let root = unique_root("crud");
        let opts = CreateOptions::default();
        assert_eq!(c.create(&root, b"", &opts).await.unwrap(), root);
        let a = format!("{root}/a");
        let (path, stat) = c.create2(&a, b"hello", &opts).await.unwrap();
        assert_eq!(path, a);
        assert_eq!(
            (
                stat.version,
                stat.data_length,
                stat.num_children,
                stat.ephemeral_owner
            ),
            (0, 5, 0, 0)
        );
        assert_eq!(stat.czxid, stat.mzxid);
        assert!(c.last_zxid() >= stat.czxid);

        let (data, st) = c.get_data(&a).await.unwrap();
        assert_eq!((&data[..], st), (&b"hello"[..], stat.clone()));
        assert_eq!(c.exists(&a).await.unwrap(), Some(stat.clone()));
        assert_eq!(c.exists(&format!("{root}/missing")).await.unwrap(), None);

        let st1 = c.set_data(&a, b"world", Some(0)).await.unwrap();
        assert_eq!((st1.version, st1.data_length), (1, 5));
        assert!(st1.mzxid > stat.mzxid);
        assert_eq!(
            c.set_data(&a, b"x", Some(0)).await,
            Err(code(ErrorCode::BadVersion))
        );
        assert_eq!(c.set_data(&a, b"", None).await.unwrap().version, 2);

        assert_eq!(
            c.create(&a, b"", &opts).await,
            Err(code(ErrorCode::NodeExists))
        );
        assert_eq!(
            c.get_data(&format!("{root}/nope")).await,
            Err(code(ErrorCode::NoNode))
        );
        assert_eq!(
            c.create(&format!("{root}/nope/x"), b"", &opts).await,
            Err(code(ErrorCode::NoNode))
        );
        assert_eq!(c.delete(&root, None).await, Err(code(ErrorCode::NotEmpty)));
        assert_eq!(
            c.delete(&a, Some(7)).await,
            Err(code(ErrorCode::BadVersion))
        );

        // Children, with the parent's stat.
        c.create(&format!("{root}/b"), b"", &opts).await.unwrap();
        c.create(&format!("{root}/b/c"), b"", &opts).await.unwrap();
        let mut kids = c.get_children(&root).await.unwrap();
        kids.sort();
        assert_eq!(kids, ["a", "b"]);
        let (mut kids2, pstat) = c.get_children2(&root).await.unwrap();
        kids2.sort();
        assert_eq!((kids2, pstat.num_children, pstat.cversion), (kids, 2, 2));
        assert_eq!(c.get_all_children_number(&root).await.unwrap(), 3);

        // Sequential names come from the parent's cversion, ten digits.
        let seq = format!("{root}/seq");
        c.create(&seq, b"", &opts).await.unwrap();
        let s0 = c
            .create(
                &format!("{seq}/n-"),
                b"",
                &CreateOptions::new(CreateMode::PersistentSequential),
            )
            .await
            .unwrap();
        let s1 = c
            .create(
                &format!("{seq}/n-"),
                b"",
                &CreateOptions::new(CreateMode::PersistentSequential),
            )
            .await
            .unwrap();
        assert_eq!(
            (s0, s1),
            (format!("{seq}/n-0000000000"), format!("{seq}/n-0000000001"))
        );
        let dir = c
            .create(
                &format!("{seq}/"),
                b"",
                &CreateOptions::new(CreateMode::PersistentSequential),
            )
            .await
            .unwrap();
        assert_eq!(dir, format!("{seq}/0000000002"));

        // Ephemerals belong to the session and cannot have children.
        let e = format!("{root}/eph");
        let (_, est) = c
            .create2(&e, b"", &CreateOptions::ephemeral())
            .await
            .unwrap();
        assert_eq!(est.ephemeral_owner, c.session_id());
        assert_eq!(
            c.create(&format!("{e}/x"), b"", &opts).await,
            Err(code(ErrorCode::NoChildrenForEphemerals))
        );
        let es = c
            .create(
                &format!("{root}/es-"),
                b"",
                &CreateOptions::new(CreateMode::EphemeralSequential),
            )
            .await
            .unwrap();
        let mut ephemerals = c.get_ephemerals(&root).await.unwrap();
        ephemerals.sort();
        assert_eq!(ephemerals, [e.clone(), es]);

        c.sync(&root).await.unwrap();
        c.delete(&a, Some(2)).await.unwrap();
        assert_eq!(c.exists(&a).await.unwrap(), None);
        c.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn null_data_is_kept_apart_from_empty_data() {
    each_target(
        "null_data_is_kept_apart_from_empty_data",
        |server| async move {
            let c = connect(server).await;
            let root = unique_root("null");
            let opts = CreateOptions::default();
            c.create(&root, b"", &opts).await.unwrap();
            let (n, e) = (format!("{root}/n"), format!("{root}/e"));
            c.create_nullable(&n, None, &opts).await.unwrap();
            c.create_nullable(&e, Some(b""), &opts).await.unwrap();
            let (data, stat) = c.get_data_nullable(&n).await.unwrap();
            assert_eq!((data, stat.data_length), (None, 0));
            assert_eq!(c.get_data_nullable(&e).await.unwrap().0, Some(Bytes::new()));
            // get_data reads null as empty.
            assert_eq!(c.get_data(&n).await.unwrap().0, Bytes::new());
            let st = c.set_data_nullable(&e, None, Some(0)).await.unwrap();
            assert_eq!((st.version, st.data_length), (1, 0));
            assert_eq!(c.get_data_nullable(&e).await.unwrap().0, None);
            c.set_data_nullable(&n, Some(b"x"), None).await.unwrap();
            assert_eq!(
                c.get_data_nullable(&n).await.unwrap().0,
                Some(Bytes::from_static(b"x"))
            );
            c.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn acls_and_digest_auth() {
    each_target("acls_and_digest_auth", |server| async move {
        let alice = connect(server).await;
        alice.add_auth("digest", b"alice:secret").await.unwrap();
        let who = alice.whoami().await.unwrap();
        assert!(
            who.iter()
                .any(|i| i.auth_scheme == "digest" && i.user.starts_with("alice")),
            "{who:?}"
        );

        let root = unique_root("acl");
        let private =
            CreateOptions::default().with_acl(vec![digest_acl("alice", "secret", perms::ALL)]);
        alice.create(&root, b"secret data", &private).await.unwrap();
        let (acl, stat) = alice.get_acl(&root).await.unwrap();
        assert_eq!(
            (acl, stat.aversion),
            (vec![digest_acl("alice", "secret", perms::ALL)], 0)
        );

        let bob = connect(server).await;
        assert_eq!(bob.get_data(&root).await, Err(code(ErrorCode::NoAuth)));
        // Digest auth never fails by itself: a wrong password is just another identity.
        bob.add_auth("digest", b"alice:wrong").await.unwrap();
        assert_eq!(bob.get_data(&root).await, Err(code(ErrorCode::NoAuth)));
        bob.add_auth("digest", b"alice:secret").await.unwrap();
        assert_eq!(&bob.get_data(&root).await.unwrap().0[..], b"secret data");

        // `auth:` (creator) ACLs need an authenticated session.
        let anon = connect(server).await;
        let creator = CreateOptions::default().with_acl(Acl::creator_all());
        assert_eq!(
            anon.create(&format!("{root}-anon"), b"", &creator).await,
            Err(code(ErrorCode::InvalidAcl))
        );
        assert_eq!(
            anon.create(
                &format!("{root}-x"),
                b"",
                &CreateOptions::default().with_acl(vec![])
            )
            .await,
            Err(code(ErrorCode::InvalidAcl))
        );

        // setACL checks the ACL version.
        let open = unique_root("acl-open");
        alice
            .create(&open, b"", &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            alice.set_acl(&open, &Acl::read_unsafe(), Some(3)).await,
            Err(code(ErrorCode::BadVersion))
        );
        assert_eq!(
            alice
                .set_acl(&open, &Acl::read_unsafe(), Some(0))
                .await
                .unwrap()
                .aversion,
            1
        );
        assert_eq!(
            anon.set_data(&open, b"x", None).await,
            Err(code(ErrorCode::NoAuth))
        );

        // Credentials are replayed after a reconnection.
        let mut events = alice.state_events();
        alice.inject_connection_loss(Duration::ZERO);
        assert_eq!(next_state(&mut events).await, SessionEvent::Suspended);
        assert_eq!(next_state(&mut events).await, SessionEvent::Reconnected);
        assert_eq!(&alice.get_data(&root).await.unwrap().0[..], b"secret data");

        // An unknown scheme fails the auth, and the server closes the connection: the client is dead.
        let doomed = connect(server).await;
        let mut events = doomed.state_events();
        assert_eq!(
            doomed.add_auth("no-such-scheme", b"x").await,
            Err(Error::AuthFailed)
        );
        assert_eq!(next_state(&mut events).await, SessionEvent::AuthFailed);
        assert_eq!(doomed.state(), SessionState::AuthFailed);
        assert_eq!(doomed.exists("/").await, Err(Error::AuthFailed));
        for c in [alice, bob, anon] {
            c.close().await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn containers_and_ttl_nodes() {
    each_target("containers_and_ttl_nodes", |server| async move {
        let c = connect(server).await;
        let root = unique_root("extended");
        c.create(&root, b"", &CreateOptions::default())
            .await
            .unwrap();

        // A container is deleted by the server once its last child is gone.
        let box_ = format!("{root}/box");
        let (_, st) = c
            .create2(&box_, b"", &CreateOptions::new(CreateMode::Container))
            .await
            .unwrap();
        // The server marks containers with ephemeralOwner 0x8000000000000000 internally, but hides the
        // marker from clients (`DataNode.getClientEphemeralOwner`): they see 0.
        assert_eq!(st.ephemeral_owner, 0);
        c.create(&format!("{box_}/item"), b"", &CreateOptions::default())
            .await
            .unwrap();
        c.delete(&format!("{box_}/item"), None).await.unwrap();
        wait_gone(&c, &box_).await;

        // A TTL node is deleted once it has had no children and no change for the TTL. Its marker
        // (0xFF in the top byte of ephemeralOwner, the TTL below) is hidden from clients too.
        let ttl = format!("{root}/ttl");
        let (_, st) = c
            .create2(&ttl, b"", &CreateOptions::ttl(Duration::from_millis(300)))
            .await
            .unwrap();
        assert_eq!(st.ephemeral_owner, 0);
        wait_gone(&c, &ttl).await;
        let seq = CreateOptions {
            mode: CreateMode::PersistentSequentialWithTtl,
            ttl: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        assert!(c
            .create(&format!("{root}/ttl-"), b"", &seq)
            .await
            .unwrap()
            .starts_with(&format!("{root}/ttl-00000000")));

        // Checked before sending.
        let no_ttl = CreateOptions::new(CreateMode::PersistentWithTtl);
        assert!(matches!(
            c.create(&format!("{root}/x"), b"", &no_ttl).await,
            Err(Error::BadArguments(_))
        ));
        let stray_ttl = CreateOptions {
            ttl: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        assert!(matches!(
            c.create(&format!("{root}/x"), b"", &stray_ttl).await,
            Err(Error::BadArguments(_))
        ));
        for bad in ["relative", "/trailing/", "/a//b", "/a/../b"] {
            assert!(
                matches!(c.exists(bad).await, Err(Error::BadArguments(_))),
                "{bad}"
            );
        }
        c.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn multi_and_multi_read() {
    each_target("multi_and_multi_read", |server| async move {
        let c = connect(server).await;
        let root = unique_root("multi");
        c.create(&root, b"", &CreateOptions::default()).await.unwrap();
        let (a, b) = (format!("{root}/a"), format!("{root}/b"));
        let results = c
            .multi(vec![
                Op::create(&a, b"1", CreateOptions::default()),
                Op::create(&b, b"", CreateOptions::default()),
                Op::set_data(&a, b"2", Some(0)),
                Op::check(&b, Some(0)),
                Op::create(&format!("{root}/c"), b"", CreateOptions::new(CreateMode::Container)),
                Op::delete(&b, None),
            ])
            .await
            .unwrap();
        assert_eq!(results.len(), 6);
        assert_eq!(results[0], OpResult::Create { path: a.clone(), stat: None });
        assert!(matches!(&results[2], OpResult::SetData(s) if s.version == 1));
        assert_eq!((&results[3], &results[5]), (&OpResult::Check, &OpResult::Delete));
        assert!(matches!(&results[4], OpResult::Create { stat: Some(_), .. }), "containers answer with create2's record");

        // A failing op rolls everything back: Ok before it, its code, RuntimeInconsistency after.
        let failing = || {
            vec![
                Op::create(&format!("{root}/new"), b"", CreateOptions::default()),
                Op::set_data(&a, b"3", Some(99)),
                Op::delete(&a, None),
            ]
        };
        assert_eq!(
            c.multi_results(failing()).await.unwrap(),
            [
                OpResult::Error(ErrorCode::Ok),
                OpResult::Error(ErrorCode::BadVersion),
                OpResult::Error(ErrorCode::RuntimeInconsistency)
            ]
        );
        assert_eq!(c.multi(failing()).await, Err(code(ErrorCode::BadVersion)));
        assert_eq!(c.exists(&format!("{root}/new")).await.unwrap(), None);
        assert_eq!(c.multi(vec![]).await.unwrap(), []);

        let reads = c
            .multi_read(vec![ReadOp::GetData(a.clone()), ReadOp::GetChildren(root.clone()), ReadOp::GetData(format!("{root}/zz"))])
            .await
            .unwrap();
        assert!(matches!(&reads[0], ReadResult::Data { data, stat } if &data[..] == b"2" && stat.version == 1));
        assert!(matches!(&reads[1], ReadResult::Children(k) if k.len() == 2));
        assert_eq!(reads[2], ReadResult::Error(ErrorCode::NoNode));
        c.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn one_shot_watches() {
    each_target("one_shot_watches", |server| async move {
        let c = connect(server).await;
        let other = connect(server).await;
        let root = unique_root("watch");
        let opts = CreateOptions::default();
        c.create(&root, b"", &opts).await.unwrap();
        let n = format!("{root}/n");

        // exists on a missing node, then creation.
        let (none, created) = c.exists_w(&n).await.unwrap();
        assert!(none.is_none());
        other.create(&n, b"1", &opts).await.unwrap();
        assert_eq!(
            within("NodeCreated", created).await,
            event(EventType::NodeCreated, &n)
        );

        // Data watches fire once, from another session's write.
        let (_, _, changed) = c.get_data_w(&n).await.unwrap();
        let (_, _, changed_too) = c.get_data_w(&n).await.unwrap();
        let (_, exists_changed) = c.exists_w(&n).await.unwrap();
        other.set_data(&n, b"2", None).await.unwrap();
        assert_eq!(
            within("NodeDataChanged", changed).await,
            event(EventType::NodeDataChanged, &n)
        );
        assert_eq!(
            within("second watcher", changed_too).await.event_type,
            EventType::NodeDataChanged
        );
        assert_eq!(
            within("exists watcher", exists_changed).await.event_type,
            EventType::NodeDataChanged
        );

        // The notification arrives before the reply that follows it: once our own write returns, the
        // watch has already fired.
        let (_, _, mine) = c.get_data_w(&n).await.unwrap();
        c.set_data(&n, b"3", None).await.unwrap();
        assert_eq!(
            mine.now_or_never().map(|e| e.event_type),
            Some(EventType::NodeDataChanged)
        );

        // Child watches: a new child, then the node's own deletion.
        let (kids, child_changed) = c.get_children_w(&root).await.unwrap();
        assert_eq!(kids, ["n"]);
        other
            .create(&format!("{root}/m"), b"", &opts)
            .await
            .unwrap();
        assert_eq!(
            within("NodeChildrenChanged", child_changed).await,
            event(EventType::NodeChildrenChanged, &root)
        );
        let (_, _, deleted_data) = c.get_data_w(&n).await.unwrap();
        let (_, _, children_of_n) = c.get_children2_w(&n).await.unwrap();
        other.delete(&n, None).await.unwrap();
        assert_eq!(
            within("NodeDeleted", deleted_data).await,
            event(EventType::NodeDeleted, &n)
        );
        assert_eq!(
            within("NodeDeleted (child watch)", children_of_n)
                .await
                .event_type,
            EventType::NodeDeleted
        );

        // A read that fails sets no watch (getData on a missing node).
        assert_eq!(c.get_data_w(&n).await.err(), Some(code(ErrorCode::NoNode)));

        // removeWatches: the server drops it and the local watcher is told.
        let m = format!("{root}/m");
        let (_, _, removed) = c.get_data_w(&m).await.unwrap();
        c.check_watches(&m, WatcherType::Data).await.unwrap();
        c.remove_watches(&m, WatcherType::Data).await.unwrap();
        assert_eq!(
            within("DataWatchRemoved", removed).await,
            event(EventType::DataWatchRemoved, &m)
        );
        assert_eq!(
            c.check_watches(&m, WatcherType::Data).await,
            Err(code(ErrorCode::NoWatcher))
        );
        assert_eq!(
            c.remove_watches(&m, WatcherType::Data).await,
            Err(code(ErrorCode::NoWatcher))
        );
        let (_, kids_removed) = c.get_children_w(&m).await.unwrap();
        c.remove_watches(&m, WatcherType::Any).await.unwrap();
        assert_eq!(
            within("ChildWatchRemoved", kids_removed).await.event_type,
            EventType::ChildWatchRemoved
        );

        // Closing ends the remaining watches with a session event.
        let (_, _, pending) = c.get_data_w(&m).await.unwrap();
        c.close().await.unwrap();
        let last = within("the Closed event", pending).await;
        assert_eq!(
            (last.event_type, last.state),
            (EventType::None, KeeperState::Closed)
        );
        other.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn persistent_and_recursive_watches() {
    each_target("persistent_and_recursive_watches", |server| async move {
        let c = connect(server).await;
        let other = connect(server).await;
        let root = unique_root("persistent");
        let opts = CreateOptions::default();
        let p = format!("{root}/p");

        // Set before the nodes exist.
        let mut on_p = c.add_watch(&p, AddWatchMode::Persistent).await.unwrap();
        let mut below = c
            .add_watch(&root, AddWatchMode::PersistentRecursive)
            .await
            .unwrap();
        other.create(&root, b"", &opts).await.unwrap();
        other.create(&p, b"", &opts).await.unwrap();
        other.create(&format!("{p}/kid"), b"", &opts).await.unwrap();
        other
            .set_data(&format!("{p}/kid"), b"x", None)
            .await
            .unwrap();
        other.set_data(&p, b"y", None).await.unwrap();
        other.delete(&format!("{p}/kid"), None).await.unwrap();

        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(within("persistent event", on_p.next()).await.unwrap());
        }
        assert_eq!(
            seen,
            [
                event(EventType::NodeCreated, &p),
                event(EventType::NodeChildrenChanged, &p),
                event(EventType::NodeDataChanged, &p),
                event(EventType::NodeChildrenChanged, &p),
            ]
        );
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(within("recursive event", below.next()).await.unwrap());
        }
        let kid = format!("{p}/kid");
        assert_eq!(
            seen,
            [
                event(EventType::NodeCreated, &root),
                event(EventType::NodeCreated, &p),
                event(EventType::NodeCreated, &kid),
                event(EventType::NodeDataChanged, &kid),
                event(EventType::NodeDataChanged, &p),
                event(EventType::NodeDeleted, &kid),
            ],
            "recursive watches see the whole subtree but no NodeChildrenChanged"
        );

        // Removing a persistent watch ends its stream with PersistentWatchRemoved.
        c.remove_watches(&p, WatcherType::Any).await.unwrap();
        assert_eq!(
            within("removal", on_p.next()).await,
            Some(event(EventType::PersistentWatchRemoved, &p))
        );
        assert_eq!(within("end of stream", on_p.next()).await, None);

        // The recursive one still works, and ends with the session.
        other.delete(&p, None).await.unwrap();
        assert_eq!(
            within("delete", below.recv()).await,
            Some(event(EventType::NodeDeleted, &p))
        );
        c.close().await.unwrap();
        let last = within("Closed", below.recv()).await.unwrap();
        assert_eq!(
            (last.event_type, last.state),
            (EventType::None, KeeperState::Closed)
        );
        assert_eq!(below.recv().await, None);
        other.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn resume_after_connection_loss_keeps_ephemerals_and_watches() {
    each_target("resume_after_connection_loss", |server| async move {
        let c = connect_to(&server.addr(), options(Duration::from_secs(4))).await;
        let other = connect(server).await;
        let root = unique_root("resume");
        other
            .create(&root, b"", &CreateOptions::default())
            .await
            .unwrap();
        let e = format!("{root}/eph");
        c.create(&e, b"", &CreateOptions::ephemeral())
            .await
            .unwrap();
        let (_, _, data_watch) = c.get_data_w(&root).await.unwrap();
        let (_, child_watch) = c.get_children_w(&root).await.unwrap();
        // Not on `root` itself: ZooKeeper before 3.9 keeps one watch mode per path and connection
        // (ZOOKEEPER-4466), so a recursive watch there would swallow the child watch's events.
        let sub = format!("{root}/sub");
        other
            .create(&sub, b"", &CreateOptions::default())
            .await
            .unwrap();
        let mut stream = c
            .add_watch(&sub, AddWatchMode::PersistentRecursive)
            .await
            .unwrap();
        let later = format!("{root}/later");
        let (none, created_meanwhile) = c.exists_w(&later).await.unwrap();
        assert!(none.is_none());
        let id = c.session_id();
        let mut events = c.state_events();

        // The socket dies; nothing for a second; meanwhile another session changes the node.
        c.inject_connection_loss(Duration::from_millis(1000));
        assert_eq!(next_state(&mut events).await, SessionEvent::Suspended);
        assert!(matches!(c.state(), SessionState::Suspended));
        other
            .set_data(&root, b"changed while away", None)
            .await
            .unwrap();
        other
            .create(&later, b"", &CreateOptions::default())
            .await
            .unwrap();
        // A call made while suspended waits for the reconnection.
        let queued = tokio::spawn({
            let (c, root) = (c.clone(), root.clone());
            async move { c.get_data(&root).await }
        });
        // With a short per-call timeout it gives up instead.
        assert_eq!(
            c.with_timeout(Duration::from_millis(100)).exists("/").await,
            Err(Error::Timeout)
        );
        assert_eq!(
            &within("queued call", queued).await.unwrap().unwrap().0[..],
            b"changed while away"
        );
        assert_eq!(next_state(&mut events).await, SessionEvent::Reconnected);
        assert_eq!(c.session_id(), id);

        // The data watch was re-registered with SetWatches relative to the last zxid seen, so the change
        // made during the outage fires it at once; the child watch is still armed. Persistent watches are
        // re-added as they are: they do not hear of changes missed during the outage.
        assert_eq!(
            within("missed change", data_watch).await,
            event(EventType::NodeDataChanged, &root)
        );
        assert_eq!(
            within("missed create", created_meanwhile).await,
            event(EventType::NodeCreated, &later)
        );
        assert_eq!(
            other.exists(&e).await.unwrap().map(|s| s.ephemeral_owner),
            Some(id)
        );
        other
            .create(&format!("{root}/new"), b"", &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            within("child watch", child_watch).await.event_type,
            EventType::NodeChildrenChanged
        );
        other
            .create(&format!("{sub}/new"), b"", &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            within("stream", stream.next()).await,
            Some(event(EventType::NodeCreated, &format!("{sub}/new")))
        );
        c.close().await.unwrap();
        wait_gone(&other, &e).await;
        other.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn expiry_reported_by_the_server_on_reconnect() {
    each_target("expiry_reported_by_the_server", |server| async move {
        let c = connect_to(&server.addr(), options(Duration::from_secs(6))).await;
        let root = unique_root("expire");
        c.create(&root, b"", &CreateOptions::ephemeral())
            .await
            .unwrap();
        let (_, _, watch) = c.get_data_w(&root).await.unwrap();
        let mut events = c.state_events();

        // While `c` is away, another client takes over its session and closes it.
        c.inject_connection_loss(Duration::from_millis(1500));
        assert_eq!(next_state(&mut events).await, SessionEvent::Suspended);
        let opts = ClientOptions {
            session: Some((c.session_id(), c.session_password())),
            ..options(Duration::from_secs(6))
        };
        let thief = connect_to(&server.addr(), opts).await;
        assert_eq!(thief.session_id(), c.session_id());
        thief.close().await.unwrap();

        // On reconnecting, the server answers the handshake with timeout 0: expired.
        assert_eq!(next_state(&mut events).await, SessionEvent::Expired);
        assert_eq!(c.state(), SessionState::Expired);
        let last = within("watch end", watch).await;
        assert_eq!(
            (last.event_type, last.state),
            (EventType::None, KeeperState::Expired)
        );
        assert_eq!(c.exists("/").await, Err(Error::SessionExpired));
        assert_eq!(c.close().await, Ok(()));

        let check = connect(server).await;
        assert_eq!(
            check.exists(&root).await.unwrap(),
            None,
            "the ephemeral went with the session"
        );
        // Resuming a dead session fails at connect time.
        let opts = ClientOptions {
            session: Some((c.session_id(), c.session_password())),
            ..options(Duration::from_secs(6))
        };
        assert_eq!(
            Client::connect(&server.addr(), opts).await.err(),
            Some(Error::SessionExpired)
        );
        check.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn expiry_declared_by_the_client_timer() {
    each_target("expiry_declared_by_the_client_timer", |server| async move {
        let c = connect_to(&server.addr(), options(Duration::from_millis(1200))).await;
        assert_eq!(c.negotiated_timeout(), Duration::from_millis(1200));
        let root = unique_root("lost");
        c.create(&root, b"", &CreateOptions::ephemeral())
            .await
            .unwrap();
        let mut events = c.state_events();
        // Idle for several timeouts: the pings keep the session alive.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert!(matches!(
            events.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        assert!(c.exists(&root).await.unwrap().is_some());
        let started = tokio::time::Instant::now();
        c.inject_connection_loss(Duration::from_secs(30));
        assert_eq!(next_state(&mut events).await, SessionEvent::Suspended);
        assert_eq!(next_state(&mut events).await, SessionEvent::Expired);
        let took = started.elapsed();
        // One timeout after the server was last heard from, which was at most a ping interval
        // (timeout/3) before the loss.
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(3),
            "declared after {took:?}"
        );
        assert_eq!(c.get_data("/").await, Err(Error::SessionExpired));
        // The server reaches the same verdict on its own.
        let check = connect(server).await;
        wait_gone(&check, &root).await;
        check.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn chroot_maps_paths_both_ways() {
    each_target("chroot_maps_paths_both_ways", |server| async move {
        let plain = connect(server).await;
        let root = unique_root("chroot");
        plain
            .create(&root, b"", &CreateOptions::default())
            .await
            .unwrap();
        let c = connect_to(
            &format!("{}{root}", server.addr()),
            options(Duration::from_secs(6)),
        )
        .await;
        assert_eq!(c.chroot(), Some(root.as_str()));

        assert_eq!(
            c.create("/a", b"x", &CreateOptions::default())
                .await
                .unwrap(),
            "/a"
        );
        assert_eq!(
            &plain.get_data(&format!("{root}/a")).await.unwrap().0[..],
            b"x"
        );
        assert_eq!(c.get_children("/").await.unwrap(), ["a"]);
        let (path, _) = c
            .create2(
                "/s-",
                b"",
                &CreateOptions::new(CreateMode::EphemeralSequential),
            )
            .await
            .unwrap();
        assert_eq!(path, "/s-0000000001");
        assert_eq!(c.get_ephemerals("/").await.unwrap(), [path]);
        let results = c
            .multi(vec![Op::create("/m", b"", CreateOptions::default())])
            .await
            .unwrap();
        assert_eq!(
            results,
            [OpResult::Create {
                path: "/m".into(),
                stat: None
            }]
        );

        let (_, _, watch) = c.get_data_w("/a").await.unwrap();
        let mut all = c
            .add_watch("/", AddWatchMode::PersistentRecursive)
            .await
            .unwrap();
        plain
            .set_data(&format!("{root}/a"), b"y", None)
            .await
            .unwrap();
        assert_eq!(
            within("chroot watch", watch).await,
            event(EventType::NodeDataChanged, "/a")
        );
        assert_eq!(
            within("chroot stream", all.next()).await,
            Some(event(EventType::NodeDataChanged, "/a"))
        );
        plain.set_data(&root, b"", None).await.unwrap();
        assert_eq!(
            within("chroot root", all.next()).await,
            Some(event(EventType::NodeDataChanged, "/"))
        );
        c.close().await.unwrap();
        plain.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn connection_setup_and_pipelining() {
    each_target("connection_setup_and_pipelining", |server| async move {
        // A dead server in the list is skipped (the order is random, so either may come first).
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = connect_to(
            &format!("{dead},{}", server.addr()),
            options(Duration::from_secs(6)),
        )
        .await;
        assert_eq!(c.server(), Some(server.addr()));

        // Nothing listening at all: a connection problem once the connect timeout is over.
        let opts = ClientOptions {
            connect_timeout: Some(Duration::from_millis(700)),
            ..options(Duration::from_secs(2))
        };
        assert_eq!(
            Client::connect(&dead.to_string(), opts).await.err(),
            Some(Error::ConnectionLoss)
        );
        assert!(matches!(
            Client::connect("host:notaport", ClientOptions::default()).await,
            Err(Error::BadArguments(_))
        ));

        // Many calls in flight at once on one connection, answered in order.
        let root = unique_root("pipeline");
        c.create(&root, b"", &CreateOptions::default())
            .await
            .unwrap();
        let writes = (0..200).map(|i| {
            let c = c.clone();
            let p = format!("{root}/n{i}");
            async move {
                c.create(&p, format!("{i}").as_bytes(), &CreateOptions::default())
                    .await
            }
        });
        assert!(futures::future::join_all(writes)
            .await
            .iter()
            .all(|r| r.is_ok()));
        assert_eq!(c.get_all_children_number(&root).await.unwrap(), 200);
        let paths: Vec<String> = (0..200).map(|i| format!("{root}/n{i}")).collect();
        let reads = paths.iter().map(|p| c.get_data_w(p));
        for (i, r) in futures::future::join_all(reads)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(r.unwrap().0, Bytes::from(format!("{i}")));
        }

        // A large value, near the default jute.maxbuffer.
        let big = vec![7u8; 900 * 1024];
        c.create(&format!("{root}/big"), &big, &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            c.get_data(&format!("{root}/big")).await.unwrap().0.len(),
            big.len()
        );

        // Reconfig is off on a standalone ZooKeeper.
        let reconfig = c.reconfig("", "", "", None).await;
        match server.kind {
            support::TestServer::ZooKeeper => {
                assert_eq!(reconfig, Err(code(ErrorCode::ReconfigDisabled)))
            }
            support::TestServer::Roster | support::TestServer::Embedded => {
                assert!(reconfig.is_err(), "{reconfig:?}")
            }
        }
        c.close().await.unwrap();
        assert_eq!(c.state(), SessionState::Closed);
        assert_eq!(c.exists("/").await, Err(Error::Closed));
    })
    .await;
}
