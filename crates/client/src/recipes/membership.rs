//! Group membership: processes join a named group with their metadata (address, port, tags), anyone
//! reads the member list or follows it as a stream of Joined / Left / Updated events.
//!
//! **Layout**: the group is a persistent node; each member is an ephemeral child `GROUP/<member-id>`
//! whose data is JSON `{"id": .., "address": .., "port": .., "tags": {..}}` ([`MemberInfo`]). A member
//! disappears when its process dies (its session expires) or leaves. Nodes that are not JSON are still
//! members (with empty metadata, the bytes in [`Member::data`]), so any ZooKeeper client can join by
//! creating an ephemeral child. This is the layout of Apache Curator's `GroupMember`
//! (`membershipPath/thisId`, ephemeral, the payload as data): a Curator `GroupMember` on the same path
//! sees our members (its payload being our JSON) and we see its.
//!
//! **Guarantees**
//!
//! - [`Group::members`] returns a view consistent at one point of the group's history: the member list
//!   and every member's data as they were after the transaction [`GroupView::zxid`] (the newest
//!   creation, deletion or update of the group's members included), never a mix of two moments.
//! - [`GroupWatcher`] starts from such a view and emits each later difference exactly once, across
//!   reconnections and session expiry: after any interruption it re-reads the view and emits the
//!   difference from the last one it reported. Changes that undo each other between two reads (a member
//!   that joins and leaves while the watcher is disconnected) are not seen, as with any ZooKeeper watch.
//! - [`Membership`] keeps the member node alive: re-created with the *current* metadata if deleted, and
//!   after session expiry on a new session when the group was joined through a renewing [`Connector`]
//!   ([`NodeEvent::Recreated`]).
//!
//! **What the caller must do**: on `Suspended`, treat the member list as possibly stale (the watcher
//! re-reads on reconnection); on `Expired` with a plain [`crate::Client`], join again with a new client
//! ([`NodeEvent::Ended`]). Member ids must be unique in the group: a second join with a live id fails
//! with `NodeExists`.

use std::collections::BTreeMap;

use bytes::Bytes;
use roster_proto::{AddWatchMode, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

pub use super::keeper::{EphemeralNode, NodeEvent, RecreateCause};
use super::{join, next_state, Connector};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::ops::{ReadOp, ReadResult};
use crate::session::SessionEvent;

/// A member's metadata, stored as JSON in its node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member id (the node's name).
    #[serde(default)]
    pub id: String,
    /// Where to reach it (host name or IP address).
    #[serde(default)]
    pub address: String,
    /// Its port.
    #[serde(default)]
    pub port: u16,
    /// Anything else.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl MemberInfo {
    /// Metadata with an address and a port.
    pub fn new(address: &str, port: u16) -> MemberInfo {
        MemberInfo {
            address: address.to_string(),
            port,
            ..Default::default()
        }
    }

    /// The same, with one more tag.
    pub fn tag(mut self, key: &str, value: &str) -> MemberInfo {
        self.tags.insert(key.to_string(), value.to_string());
        self
    }

    /// `address:port`.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }
}

/// A member as read from its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member id (the node's name).
    pub id: String,
    /// The node's raw data.
    pub data: Bytes,
    /// When it joined (its node's creation zxid).
    pub czxid: i64,
    /// When its data last changed.
    pub mzxid: i64,
    /// The session holding it (0 for a persistent node).
    pub session_id: i64,
}

impl Member {
    /// The metadata, if the data is [`MemberInfo`] JSON; empty metadata otherwise.
    pub fn info(&self) -> MemberInfo {
        let mut info: MemberInfo = serde_json::from_slice(&self.data).unwrap_or_default();
        if info.id.is_empty() {
            info.id = self.id.clone();
        }
        info
    }
}

/// The members of a group at one point of its history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    /// The members, by id.
    pub members: Vec<Member>,
    /// The zxid the view is consistent at: the newest change to the group it includes (0 if the group
    /// node does not exist).
    pub zxid: i64,
}

impl GroupView {
    /// The member with this id.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The member ids.
    pub fn ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }
}

/// A change in a group, or in the watcher's connection to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// A member joined (or re-joined: a new node for an id counts as Left then Joined).
    Joined {
        /// The member.
        member: Member,
        /// The zxid of the view that first showed it.
        zxid: i64,
    },
    /// A member left (or its session died).
    Left {
        /// The member as last seen.
        member: Member,
        /// The zxid of the view that first missed it.
        zxid: i64,
    },
    /// A member's metadata changed.
    Updated {
        /// Before.
        old: Member,
        /// After.
        new: Member,
        /// The zxid of the view that first showed the change.
        zxid: i64,
    },
    /// The watcher lost its connection: the view may be stale until `Resynced`.
    Suspended,
    /// The watcher is connected again and has caught up (the events since `Suspended` are above).
    Resynced {
        /// The zxid of the view it caught up to.
        zxid: i64,
    },
    /// The watcher's session ended and could not be renewed: no more events.
    Ended,
}

/// A named group. See the module docs.
#[derive(Debug, Clone)]
pub struct Group {
    connector: Connector,
    path: String,
}

impl Group {
    /// The group at `path`.
    pub fn new(connector: impl Into<Connector>, path: &str) -> Group {
        Group {
            connector: connector.into(),
            path: path.trim_end_matches('/').to_string(),
        }
    }

    /// The group's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Joins as `id` with `info` (its `id` field is set to `id`). Fails with `NodeExists` if a live
    /// member already has this id.
    pub async fn join(&self, id: &str, info: MemberInfo) -> Result<Membership> {
        if id.is_empty() || id.contains('/') {
            return Err(Error::BadArguments(format!("invalid member id {id:?}")));
        }
        let info = MemberInfo {
            id: id.to_string(),
            ..info
        };
        let node =
            EphemeralNode::create(&self.connector, &join(&self.path, id), &info.to_json()).await?;
        Ok(Membership { node, info })
    }

    /// The members now, consistent at one zxid.
    pub async fn members(&self) -> Result<GroupView> {
        read_view(&self.connector.client(), &self.path).await
    }

    /// Follows the group: the current view, then every change as an event.
    pub async fn watch(&self) -> Result<GroupWatcher> {
        GroupWatcher::start(self.connector.clone(), self.path.clone()).await
    }
}

/// Membership in a group; dropping it leaves the group (in the background).
#[derive(Debug)]
pub struct Membership {
    node: EphemeralNode,
    info: MemberInfo,
}

impl Membership {
    /// The member's metadata, as last set.
    pub fn info(&self) -> &MemberInfo {
        &self.info
    }

    /// The member node's path.
    pub fn path(&self) -> &str {
        self.node.path()
    }

    /// The member node's czxid (when it (re-)joined), unless it is being re-created.
    pub fn czxid(&self) -> Option<i64> {
        self.node.stat().map(|s| s.czxid)
    }

    /// Joined / Suspended / Reconnected / Recreated (re-joined) / Ended, starting with `Created`.
    pub fn events(&mut self) -> broadcast::Receiver<NodeEvent> {
        self.node.events()
    }

    /// Replaces the metadata (also used by any later re-join).
    pub async fn update(&mut self, info: MemberInfo) -> Result<()> {
        let info = MemberInfo {
            id: self.info.id.clone(),
            ..info
        };
        self.node.update(&info.to_json()).await?;
        self.info = info;
        Ok(())
    }

    /// Leaves the group.
    pub async fn leave(self) -> Result<()> {
        self.node.delete().await
    }
}

/// Reads every child of `path` with its data and stat, consistent at one zxid (see [`GroupView`]).
pub async fn read_view(client: &Client, path: &str) -> Result<GroupView> {
    loop {
        let (names, before) = match client.get_children2(path).await {
            Ok(r) => r,
            Err(Error::Code(ErrorCode::NoNode)) => return Ok(GroupView::default()),
            Err(e) => return Err(e),
        };
        let reads = if names.is_empty() {
            Vec::new()
        } else {
            client
                .multi_read(
                    names
                        .iter()
                        .map(|n| ReadOp::GetData(join(path, n)))
                        .collect(),
                )
                .await?
        };
        // The data was read in one request; the list is the same before and after it (same child
        // version of the same group node), so list and data belong to one moment.
        let after = match client.get_children2(path).await {
            Ok((_, s)) => s,
            Err(Error::Code(ErrorCode::NoNode)) => continue,
            Err(e) => return Err(e),
        };
        if after.cversion != before.cversion || after.czxid != before.czxid {
            continue;
        }
        let mut members = Vec::with_capacity(names.len());
        let mut zxid = after.pzxid;
        let mut complete = true;
        for (id, r) in names.into_iter().zip(reads) {
            match r {
                ReadResult::Data { data, stat } => {
                    zxid = zxid.max(stat.mzxid);
                    members.push(Member {
                        id,
                        data,
                        czxid: stat.czxid,
                        mzxid: stat.mzxid,
                        session_id: stat.ephemeral_owner,
                    });
                }
                _ => complete = false,
            }
        }
        if !complete {
            continue;
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        return Ok(GroupView { members, zxid });
    }
}

/// The events that take `old` to `new`: Left first, then Joined and Updated, each by id.
pub fn diff(old: &GroupView, new: &GroupView) -> Vec<GroupEvent> {
    let zxid = new.zxid;
    let mut left = Vec::new();
    let mut joined = Vec::new();
    for m in &old.members {
        match new.get(&m.id) {
            Some(n) if n.czxid == m.czxid => {}
            _ => left.push(GroupEvent::Left {
                member: m.clone(),
                zxid,
            }),
        }
    }
    for n in &new.members {
        match old.get(&n.id) {
            Some(m) if m.czxid == n.czxid => {
                if m.mzxid != n.mzxid || m.data != n.data {
                    joined.push(GroupEvent::Updated {
                        old: m.clone(),
                        new: n.clone(),
                        zxid,
                    });
                }
            }
            _ => joined.push(GroupEvent::Joined {
                member: n.clone(),
                zxid,
            }),
        }
    }
    left.extend(joined);
    left
}

/// Follows a group: [`GroupWatcher::view`] is the latest view, [`GroupWatcher::next`] the changes.
/// Works for members and non-members alike. Dropping it stops following.
#[derive(Debug)]
pub struct GroupWatcher {
    view: watch::Receiver<GroupView>,
    events: mpsc::UnboundedReceiver<GroupEvent>,
}

impl GroupWatcher {
    pub(crate) async fn start(connector: Connector, path: String) -> Result<GroupWatcher> {
        let client = connector.client();
        let stream = client
            .add_watch(&path, AddWatchMode::PersistentRecursive)
            .await?;
        let first = read_view(&client, &path).await?;
        let (view_tx, view_rx) = watch::channel(first);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(watch_task(
            connector, path, client, stream, view_tx, events_tx,
        ));
        Ok(GroupWatcher {
            view: view_rx,
            events: events_rx,
        })
    }

    /// The latest view.
    pub fn view(&self) -> GroupView {
        self.view.borrow().clone()
    }

    /// The view as a watch channel.
    pub fn subscribe(&self) -> watch::Receiver<GroupView> {
        self.view.clone()
    }

    /// The next event; `None` after [`GroupEvent::Ended`].
    pub async fn next(&mut self) -> Option<GroupEvent> {
        self.events.recv().await
    }
}

async fn watch_task(
    connector: Connector,
    path: String,
    mut client: Client,
    mut stream: crate::WatchStream,
    view_tx: watch::Sender<GroupView>,
    events_tx: mpsc::UnboundedSender<GroupEvent>,
) {
    let mut states = client.state_events();
    let mut suspended = false;
    let mut dirty = false;
    loop {
        if dirty {
            match read_view(&client, &path).await {
                Ok(view) => {
                    let zxid = view.zxid;
                    // The view first, so that whoever reads an event sees a view that includes it.
                    let old = view_tx.send_replace(view.clone());
                    for ev in diff(&old, &view) {
                        if events_tx.send(ev).is_err() {
                            return;
                        }
                    }
                    if suspended {
                        suspended = false;
                        let _ = events_tx.send(GroupEvent::Resynced { zxid });
                    }
                    dirty = false;
                }
                Err(e) if e.is_terminal() => {}
                Err(_) => {
                    let _ = super::wait_connected(&client).await;
                    continue;
                }
            }
        }
        let session_ended = tokio::select! {
            ev = stream.recv() => match ev {
                Some(ev) if !ev.is_session_event() => {
                    dirty = true;
                    // Take every event already queued: one read covers them.
                    while let Some(Some(ev)) = futures::FutureExt::now_or_never(stream.recv()) {
                        if ev.is_session_event() { break; }
                    }
                    false
                }
                _ => true,
            },
            ev = next_state(&mut states, &client) => match ev {
                SessionEvent::Suspended => {
                    if !suspended {
                        suspended = true;
                        if events_tx.send(GroupEvent::Suspended).is_err() { return; }
                    }
                    false
                }
                // Persistent watches miss what happened while disconnected: read again.
                SessionEvent::Reconnected | SessionEvent::Connected => { dirty = true; false }
                _ => true,
            },
            _ = events_tx.closed() => return,
        };
        if session_ended || client.state().is_terminal() {
            if !suspended {
                suspended = true;
                let _ = events_tx.send(GroupEvent::Suspended);
            }
            let renewed = if connector.renews() && client.state() != crate::SessionState::Closed {
                connector.renew(client.session_id()).await.ok()
            } else {
                None
            };
            let Some(c) = renewed else {
                let _ = events_tx.send(GroupEvent::Ended);
                return;
            };
            client = c;
            states = client.state_events();
            loop {
                match client
                    .add_watch(&path, AddWatchMode::PersistentRecursive)
                    .await
                {
                    Ok(s) => {
                        stream = s;
                        break;
                    }
                    Err(e) if e.is_terminal() => break,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
            dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, czxid: i64, mzxid: i64) -> Member {
        Member {
            id: id.into(),
            data: Bytes::new(),
            czxid,
            mzxid,
            session_id: 1,
        }
    }

    #[test]
    fn diffs_views() {
        let old = GroupView {
            members: vec![m("a", 1, 1), m("b", 2, 2), m("c", 3, 3)],
            zxid: 3,
        };
        let new = GroupView {
            members: vec![m("a", 1, 5), m("b", 6, 6), m("d", 7, 7)],
            zxid: 7,
        };
        let evs = diff(&old, &new);
        let kinds: Vec<String> = evs
            .iter()
            .map(|e| match e {
                GroupEvent::Joined { member, .. } => format!("+{}", member.id),
                GroupEvent::Left { member, .. } => format!("-{}", member.id),
                GroupEvent::Updated { new, .. } => format!("~{}", new.id),
                _ => "?".into(),
            })
            .collect();
        assert_eq!(kinds, vec!["-b", "-c", "~a", "+b", "+d"]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn member_info_is_lenient() {
        let mem = Member {
            data: Bytes::from_static(b"not json"),
            ..m("x", 1, 1)
        };
        assert_eq!(mem.info().id, "x");
        let info = MemberInfo::new("10.0.0.1", 80).tag("zone", "a");
        let mem = Member {
            data: Bytes::from(info.to_json()),
            ..m("y", 1, 1)
        };
        assert_eq!(mem.info().endpoint(), "10.0.0.1:80");
        assert_eq!(mem.info().tags["zone"], "a");
    }
}
