//! Watches: the client's table of who waits for which change, and the handles callers hold.
//!
//! ZooKeeper keeps at most one watch of each kind per path and connection on the server; the client
//! fans a notification out to every local watcher of that path. The table here follows the Java
//! client's `ZKWatchManager`:
//!
//! - **One-shot watches** (set by `getData`, `exists`, `getChildren`) live in three maps: *data*
//!   (`getData`, or `exists` on a node that exists), *exist* (`exists` on a missing node) and *child*.
//!   `NodeCreated`/`NodeDataChanged` fire data and exist watches, `NodeChildrenChanged` fires child
//!   watches, `NodeDeleted` fires all three. Firing removes them: each resolves a [`Watch`] future once.
//! - **Persistent watches** (`addWatch` mode 0) receive every event on their path, children changes
//!   included, and stay. **Persistent recursive watches** (mode 1) receive every event on their path
//!   and on every descendant, except `NodeChildrenChanged`, which the server may still send for a
//!   one-shot child watch on a descendant and which is filtered out here. Both feed a [`WatchStream`].
//! - **Session end** resolves every watch with an event of type `None` and the final state
//!   (`Expired`, `Closed`, `AuthFailed`), then forgets them. A lost connection does not touch them: they
//!   are re-registered on the next server with `SetWatches` (see `WatchRegistry::set_watches`).
//! - **removeWatches** removes the local watchers of the named kind after the server agreed, and sends
//!   them a `DataWatchRemoved`, `ChildWatchRemoved` or `PersistentWatchRemoved` event.
//!
//! The table is keyed by server paths (chroot included) and hands out client paths. It does no I/O:
//! delivering an event is a non-blocking channel send, and a watcher whose handle was dropped is pruned
//! when next seen.
//!
//! # Caveats (server behaviour, observed against ZooKeeper 3.8)
//!
//! - On reconnection the server fires a one-shot watch at once if its node changed while the client was
//!   away (`DataTree.setWatches` compares with the last zxid seen), but it simply re-adds persistent
//!   watches: **changes made during an outage are not reported to persistent watches**. Re-read after
//!   [`crate::SessionEvent::Reconnected`] if that matters.
//! - Before 3.9 the server keeps one watch *mode* per path and connection (ZOOKEEPER-4466): a
//!   persistent watch added on a path that also has a one-shot watch from the same session turns the
//!   one-shot into a persistent one on the server, and a persistent *recursive* one then swallows the
//!   `NodeChildrenChanged` that a one-shot child watch on that path was waiting for.
//! - `removeWatches`/`checkWatches` with [`WatcherType::Persistent`] or
//!   [`WatcherType::PersistentRecursive`] need 3.9; 3.8 answers `MarshallingError`. Use
//!   [`WatcherType::Any`] there.

use futures::Stream;
use roster_proto::{
    AddWatchMode, EventType, KeeperState, Request, SetWatches, SetWatches2, WatcherType,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

use crate::path::Chroot;

/// Java's `SET_WATCHES_MAX_LENGTH`: a SetWatches request is cut once its paths add up to this many bytes,
/// so that a client with many watches stays under the server's `jute.maxbuffer` (ZOOKEEPER-706).
pub const SET_WATCHES_MAX_BYTES: usize = 128 * 1024;

/// A watch notification, or the end of the session for a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedEvent {
    /// What happened; `None` for a session-state event.
    pub event_type: EventType,
    /// The session state: `SyncConnected` for node events, the final state when the session ended.
    pub state: KeeperState,
    /// The node's path relative to the chroot; empty for a session-state event.
    pub path: String,
}

impl WatchedEvent {
    fn node(event_type: EventType, path: &str) -> WatchedEvent {
        WatchedEvent {
            event_type,
            state: KeeperState::SyncConnected,
            path: path.to_string(),
        }
    }

    fn session(state: KeeperState) -> WatchedEvent {
        WatchedEvent {
            event_type: EventType::None,
            state,
            path: String::new(),
        }
    }

    /// Whether this is a session-state event (the session ended), not a node event.
    pub fn is_session_event(&self) -> bool {
        self.event_type == EventType::None
    }
}

/// A one-shot watch: a future that resolves to the first event on the watched node.
///
/// If the session ends first it resolves to an event of type `None` whose state is `Expired`, `Closed`
/// or `AuthFailed`. Dropping it simply stops listening (the server-side watch stays until it fires).
#[derive(Debug)]
#[must_use = "a Watch does nothing unless awaited"]
pub struct Watch {
    rx: oneshot::Receiver<WatchedEvent>,
}

impl Watch {
    pub(crate) fn new(rx: oneshot::Receiver<WatchedEvent>) -> Watch {
        Watch { rx }
    }
}

impl Future for Watch {
    type Output = WatchedEvent;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WatchedEvent> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(ev)) => Poll::Ready(ev),
            // The connection task is gone without saying why: the client was dropped.
            Poll::Ready(Err(_)) => Poll::Ready(WatchedEvent::session(KeeperState::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A persistent (or persistent recursive) watch: a stream of events that ends after the session ends
/// (the last item is then a `None`-type event with the final state) or after the watch is removed (the
/// last item is `PersistentWatchRemoved`).
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::UnboundedReceiver<WatchedEvent>,
}

impl WatchStream {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<WatchedEvent>) -> WatchStream {
        WatchStream { rx }
    }

    /// The next event, or `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<WatchedEvent> {
        self.rx.recv().await
    }
}

impl Stream for WatchStream {
    type Item = WatchedEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchedEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// The three kinds of one-shot watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OneShotKind {
    /// getData, or exists on an existing node.
    Data,
    /// exists on a missing node.
    Exist,
    /// getChildren / getChildren2.
    Child,
}

type OneShots = BTreeMap<String, Vec<oneshot::Sender<WatchedEvent>>>;
type Persistents = BTreeMap<String, Vec<mpsc::UnboundedSender<WatchedEvent>>>;

/// Every watch of the session, by server path.
#[derive(Debug, Default)]
pub(crate) struct WatchRegistry {
    chroot: Chroot,
    data: OneShots,
    exist: OneShots,
    child: OneShots,
    persistent: Persistents,
    recursive: Persistents,
}

impl WatchRegistry {
    pub(crate) fn new(chroot: Chroot) -> WatchRegistry {
        WatchRegistry {
            chroot,
            ..Default::default()
        }
    }

    /// Registers a one-shot watcher (after the server accepted the read that set it).
    pub(crate) fn add_oneshot(
        &mut self,
        kind: OneShotKind,
        path: String,
        tx: oneshot::Sender<WatchedEvent>,
    ) {
        let map = match kind {
            OneShotKind::Data => &mut self.data,
            OneShotKind::Exist => &mut self.exist,
            OneShotKind::Child => &mut self.child,
        };
        map.entry(path).or_default().push(tx);
    }

    /// Registers a persistent watcher (after the server accepted the addWatch).
    pub(crate) fn add_persistent(
        &mut self,
        mode: AddWatchMode,
        path: String,
        tx: mpsc::UnboundedSender<WatchedEvent>,
    ) {
        let map = match mode {
            AddWatchMode::Persistent => &mut self.persistent,
            AddWatchMode::PersistentRecursive => &mut self.recursive,
        };
        map.entry(path).or_default().push(tx);
    }

    /// Delivers a notification for `server_path` to every watcher it concerns.
    pub(crate) fn dispatch(&mut self, event_type: EventType, server_path: &str) {
        let event = WatchedEvent::node(event_type, &self.chroot.to_client(server_path));
        let fire = |map: &mut OneShots| {
            for tx in map.remove(server_path).unwrap_or_default() {
                let _ = tx.send(event.clone());
            }
        };
        match event_type {
            EventType::NodeCreated | EventType::NodeDataChanged => {
                fire(&mut self.data);
                fire(&mut self.exist);
            }
            EventType::NodeChildrenChanged => fire(&mut self.child),
            EventType::NodeDeleted => {
                fire(&mut self.data);
                fire(&mut self.exist);
                fire(&mut self.child);
            }
            // The server sends only node events; anything else has no watcher to go to.
            _ => return,
        }
        send_all(&mut self.persistent, server_path, &event);
        if event_type != EventType::NodeChildrenChanged {
            for ancestor in ancestors(server_path) {
                send_all(&mut self.recursive, ancestor, &event);
            }
        }
    }

    /// Removes the local watchers of `watcher_type` on `server_path` and tells each it was removed.
    pub(crate) fn remove(&mut self, server_path: &str, watcher_type: WatcherType) {
        let path = self.chroot.to_client(server_path);
        let tell = |map: &mut OneShots, t: EventType| {
            for tx in map.remove(server_path).unwrap_or_default() {
                let _ = tx.send(WatchedEvent::node(t, &path));
            }
        };
        let tell_persistent = |map: &mut Persistents| {
            for tx in map.remove(server_path).unwrap_or_default() {
                let _ = tx.send(WatchedEvent::node(EventType::PersistentWatchRemoved, &path));
            }
        };
        let (data, child, persistent, recursive) = match watcher_type {
            WatcherType::Children => (false, true, false, false),
            WatcherType::Data => (true, false, false, false),
            WatcherType::Persistent => (false, false, true, false),
            WatcherType::PersistentRecursive => (false, false, false, true),
            WatcherType::Any => (true, true, true, true),
        };
        if data {
            tell(&mut self.data, EventType::DataWatchRemoved);
            tell(&mut self.exist, EventType::DataWatchRemoved);
        }
        if child {
            tell(&mut self.child, EventType::ChildWatchRemoved);
        }
        if persistent {
            tell_persistent(&mut self.persistent);
        }
        if recursive {
            tell_persistent(&mut self.recursive);
        }
    }

    /// Ends every watch with a session-state event (`Expired`, `Closed`, `AuthFailed`).
    pub(crate) fn terminate(&mut self, state: KeeperState) {
        let ev = WatchedEvent::session(state);
        for map in [&mut self.data, &mut self.exist, &mut self.child] {
            for tx in std::mem::take(map).into_values().flatten() {
                let _ = tx.send(ev.clone());
            }
        }
        for map in [&mut self.persistent, &mut self.recursive] {
            for tx in std::mem::take(map).into_values().flatten() {
                let _ = tx.send(ev.clone());
            }
        }
    }

    /// Drops watchers whose handles are gone, so they are not re-registered.
    fn prune(&mut self) {
        for map in [&mut self.data, &mut self.exist, &mut self.child] {
            map.retain(|_, txs| {
                txs.retain(|tx| !tx.is_closed());
                !txs.is_empty()
            });
        }
        for map in [&mut self.persistent, &mut self.recursive] {
            map.retain(|_, txs| {
                txs.retain(|tx| !tx.is_closed());
                !txs.is_empty()
            });
        }
    }

    /// Whether no watch is registered.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
            && self.exist.is_empty()
            && self.child.is_empty()
            && self.persistent.is_empty()
            && self.recursive.is_empty()
    }

    /// The SetWatches requests that re-register every live watch on a new connection, as the Java client
    /// builds them (`ClientCnxn.primeConnection`): batches of at most about [`SET_WATCHES_MAX_BYTES`] of
    /// paths, each a `SetWatches` (opcode 101) unless it carries persistent watches, which need
    /// `SetWatches2` (105). `relative_zxid` is the last zxid seen: the server fires at once the watches
    /// whose node changed after it.
    pub(crate) fn set_watches(&mut self, relative_zxid: i64) -> Vec<Request> {
        self.prune();
        let mut lists: [Vec<String>; 5] = [
            self.data.keys().cloned().collect(),
            self.exist.keys().cloned().collect(),
            self.child.keys().cloned().collect(),
            self.persistent.keys().cloned().collect(),
            self.recursive.keys().cloned().collect(),
        ];
        // Popped from the back below; reversed so each batch lists paths in sorted order.
        lists.iter_mut().for_each(|l| l.reverse());
        let mut requests = Vec::new();
        while lists.iter().any(|l| !l.is_empty()) {
            let mut batch: [Vec<String>; 5] = Default::default();
            let mut bytes = 0;
            'fill: for (i, list) in lists.iter_mut().enumerate() {
                while bytes < SET_WATCHES_MAX_BYTES {
                    let Some(path) = list.pop() else {
                        continue 'fill;
                    };
                    bytes += path.len();
                    batch[i].push(path);
                }
                break;
            }
            let [data_watches, exist_watches, child_watches, persistent_watches, persistent_recursive_watches] =
                batch;
            requests.push(
                if persistent_watches.is_empty() && persistent_recursive_watches.is_empty() {
                    Request::SetWatches(SetWatches {
                        relative_zxid,
                        data_watches,
                        exist_watches,
                        child_watches,
                    })
                } else {
                    Request::SetWatches2(SetWatches2 {
                        relative_zxid,
                        data_watches,
                        exist_watches,
                        child_watches,
                        persistent_watches,
                        persistent_recursive_watches,
                    })
                },
            );
        }
        requests
    }
}

fn send_all(map: &mut Persistents, path: &str, event: &WatchedEvent) {
    if let Some(txs) = map.get_mut(path) {
        txs.retain(|tx| tx.send(event.clone()).is_ok());
        if txs.is_empty() {
            map.remove(path);
        }
    }
}

/// `path` and each of its ancestors, up to `/`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let cur = next?;
        next = match cur.rfind('/') {
            _ if cur == "/" => None,
            Some(0) => Some("/"),
            Some(i) => Some(&cur[..i]),
            None => None,
        };
        Some(cur)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oneshot_watch(
        reg: &mut WatchRegistry,
        kind: OneShotKind,
        path: &str,
    ) -> oneshot::Receiver<WatchedEvent> {
        let (tx, rx) = oneshot::channel();
        reg.add_oneshot(kind, path.to_string(), tx);
        rx
    }

    fn stream(
        reg: &mut WatchRegistry,
        mode: AddWatchMode,
        path: &str,
    ) -> mpsc::UnboundedReceiver<WatchedEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        reg.add_persistent(mode, path.to_string(), tx);
        rx
    }

    #[test]
    fn ancestors_walk_to_the_root() {
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            ["/a/b/c", "/a/b", "/a", "/"]
        );
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn one_shot_watches_fire_once_by_kind() {
        let mut reg = WatchRegistry::default();
        let mut data = oneshot_watch(&mut reg, OneShotKind::Data, "/a");
        let mut exist = oneshot_watch(&mut reg, OneShotKind::Exist, "/a");
        let mut child = oneshot_watch(&mut reg, OneShotKind::Child, "/a");
        reg.dispatch(EventType::NodeDataChanged, "/a");
        assert_eq!(
            data.try_recv().unwrap().event_type,
            EventType::NodeDataChanged
        );
        assert_eq!(exist.try_recv().unwrap().path, "/a");
        assert!(child.try_recv().is_err());
        reg.dispatch(EventType::NodeDeleted, "/a");
        assert_eq!(child.try_recv().unwrap().event_type, EventType::NodeDeleted);
        assert!(reg.is_empty());
    }

    #[test]
    fn recursive_watches_skip_child_events_and_see_descendants() {
        let mut reg = WatchRegistry::new(Chroot::new("/app").unwrap());
        let mut rec = stream(&mut reg, AddWatchMode::PersistentRecursive, "/app");
        let mut per = stream(&mut reg, AddWatchMode::Persistent, "/app/x");
        reg.dispatch(EventType::NodeCreated, "/app/x/y");
        reg.dispatch(EventType::NodeChildrenChanged, "/app/x");
        reg.dispatch(EventType::NodeDataChanged, "/app/x");
        assert_eq!(
            rec.try_recv().unwrap(),
            WatchedEvent::node(EventType::NodeCreated, "/x/y")
        );
        assert_eq!(
            rec.try_recv().unwrap(),
            WatchedEvent::node(EventType::NodeDataChanged, "/x")
        );
        assert!(rec.try_recv().is_err());
        assert_eq!(
            per.try_recv().unwrap().event_type,
            EventType::NodeChildrenChanged
        );
        assert_eq!(
            per.try_recv().unwrap().event_type,
            EventType::NodeDataChanged
        );
        assert!(!reg.is_empty(), "persistent watches stay");
    }

    #[test]
    fn remove_and_terminate_tell_the_watchers() {
        let mut reg = WatchRegistry::default();
        let mut data = oneshot_watch(&mut reg, OneShotKind::Data, "/a");
        let mut child = oneshot_watch(&mut reg, OneShotKind::Child, "/a");
        let mut per = stream(&mut reg, AddWatchMode::Persistent, "/a");
        reg.remove("/a", WatcherType::Data);
        assert_eq!(
            data.try_recv().unwrap().event_type,
            EventType::DataWatchRemoved
        );
        assert!(child.try_recv().is_err());
        reg.terminate(KeeperState::Expired);
        assert_eq!(
            child.try_recv().unwrap(),
            WatchedEvent::session(KeeperState::Expired)
        );
        assert_eq!(per.try_recv().unwrap().state, KeeperState::Expired);
        assert!(matches!(
            per.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn set_watches_lists_live_watches_and_uses_v2_only_when_needed() {
        let mut reg = WatchRegistry::default();
        let _d = oneshot_watch(&mut reg, OneShotKind::Data, "/d");
        let _e = oneshot_watch(&mut reg, OneShotKind::Exist, "/e");
        drop(oneshot_watch(&mut reg, OneShotKind::Child, "/dropped"));
        assert_eq!(
            reg.set_watches(7),
            [Request::SetWatches(SetWatches {
                relative_zxid: 7,
                data_watches: vec!["/d".into()],
                exist_watches: vec!["/e".into()],
                child_watches: vec![],
            })]
        );
        let _p = stream(&mut reg, AddWatchMode::PersistentRecursive, "/r");
        assert!(
            matches!(&reg.set_watches(7)[..], [Request::SetWatches2(s)] if s.persistent_recursive_watches == ["/r"])
        );
    }

    #[test]
    fn set_watches_is_split_into_batches() {
        let mut reg = WatchRegistry::default();
        let long = "x".repeat(1000);
        let _rx: Vec<_> = (0..300)
            .map(|i| oneshot_watch(&mut reg, OneShotKind::Data, &format!("/{long}{i}")))
            .collect();
        let reqs = reg.set_watches(0);
        assert_eq!(reqs.len(), 3);
        let total: usize = reqs
            .iter()
            .map(|r| match r {
                Request::SetWatches(s) => s.data_watches.len(),
                _ => unreachable!(),
            })
            .sum();
        assert_eq!(total, 300);
    }
}
