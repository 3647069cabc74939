//! The node's event journal: every membership, leadership, session and serving change, each with its
//! cause, published once where it happens ([`Events::publish`]).
//!
//! Publishing does three things: it logs the event once, at info or warn, with its cause (so the log
//! says *why*: "session 0x... expired: no request or ping for 6,012 ms, timeout 6,000 ms"); it keeps
//! the event in a bounded ring of recent events (the timeline the admin API serves); and it hands it
//! to live subscribers (the admin API's event stream). A subscriber that falls behind loses the
//! oldest events, never slows the publisher.
//!
//! Events are this node's view: in a cluster, each node publishes what it saw (the leader publishes
//! session expiries it decided, every node publishes the leader changes it observed).
//!
//! Left out: persistence (the ring is in memory), per-request and per-connection events, and session
//! creation and close (one per client: the metrics count them).

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use tokio::sync::broadcast;

/// How many recent events the ring keeps.
pub const RECENT: usize = 512;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// This node saw the leader change (or learned there is none).
    LeaderChanged {
        /// The new leader, if known.
        leader: Option<u64>,
        /// The previous leader, if any.
        previous: Option<u64>,
        /// The Raft term.
        term: u64,
    },
    /// A node became a member (voter or learner) of the cluster.
    MemberJoined {
        /// Its node id.
        node: u64,
        /// Its peer address.
        peer_addr: String,
        /// Whether it votes.
        voter: bool,
    },
    /// A member's role changed (learner promoted, voter demoted).
    MemberRoleChanged {
        /// Its node id.
        node: u64,
        /// Whether it votes now.
        voter: bool,
    },
    /// A node left the membership.
    MemberLeft {
        /// Its node id.
        node: u64,
    },
    /// This node started or stopped serving clients.
    Serving {
        /// Whether it serves now.
        serving: bool,
    },
    /// The leader expired a session.
    SessionExpired {
        /// Session id (hex).
        session: String,
        /// Its timeout, ms.
        timeout_ms: i32,
        /// How long it had been silent, ms.
        silent_ms: i64,
        /// Its ephemeral nodes, which go with it.
        ephemerals: usize,
    },
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Sequence number on this node, from 1.
    pub seq: u64,
    /// When, ms since the epoch.
    pub time_ms: i64,
    /// The node that saw it.
    pub seen_by: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// Why, in words ("node 1 unreachable for 1,200 ms (connection refused)").
    pub cause: String,
}

impl Event {
    /// The one log line of this event.
    fn log(&self) {
        let what = match &self.kind {
            EventKind::LeaderChanged {
                leader: Some(l), ..
            } => format!("leader changed to node {l}"),
            EventKind::LeaderChanged { leader: None, .. } => "no leader".to_string(),
            EventKind::MemberJoined { node, voter, .. } => format!(
                "node {node} joined as {}",
                if *voter { "voter" } else { "learner" }
            ),
            EventKind::MemberRoleChanged { node, voter } => format!(
                "node {node} is now a {}",
                if *voter { "voter" } else { "learner" }
            ),
            EventKind::MemberLeft { node } => format!("node {node} left the cluster"),
            EventKind::Serving { serving: true } => "serving clients".to_string(),
            EventKind::Serving { serving: false } => "not serving clients".to_string(),
            EventKind::SessionExpired { session, .. } => format!("session {session} expired"),
        };
        let warn = matches!(
            self.kind,
            EventKind::Serving { serving: false } | EventKind::LeaderChanged { leader: None, .. }
        );
        if warn {
            tracing::warn!(event = self.seq, "{what}: {}", self.cause);
        } else {
            tracing::info!(event = self.seq, "{what}: {}", self.cause);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The journal of one node.
pub struct Events {
    node: Mutex<u64>,
    inner: Mutex<(u64, VecDeque<Event>)>,
    live: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// An empty journal.
    pub fn new() -> Events {
        Events {
            node: Mutex::new(0),
            inner: Mutex::new((0, VecDeque::with_capacity(RECENT))),
            live: broadcast::channel(RECENT).0,
        }
    }

    /// Sets the node id events are stamped with (known once the identity is loaded).
    pub fn set_node(&self, node: u64) {
        *self.node.lock() = node;
    }

    /// Logs, keeps and broadcasts one event; returns its sequence number.
    pub fn publish(&self, kind: EventKind, cause: impl Into<String>) -> u64 {
        let node = *self.node.lock();
        let event = {
            let mut inner = self.inner.lock();
            inner.0 += 1;
            let event = Event {
                seq: inner.0,
                time_ms: now_ms(),
                seen_by: node,
                kind,
                cause: cause.into(),
            };
            if inner.1.len() == RECENT {
                inner.1.pop_front();
            }
            inner.1.push_back(event.clone());
            event
        };
        event.log();
        let seq = event.seq;
        let _ = self.live.send(event);
        seq
    }

    /// The recent events, oldest first, with a sequence number above `after`.
    pub fn recent(&self, after: u64) -> Vec<Event> {
        self.inner
            .lock()
            .1
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_kept_in_a_bounded_ring_and_broadcast() {
        let events = Events::new();
        events.set_node(3);
        let mut live = events.subscribe();
        for i in 0..(RECENT as u64 + 10) {
            let seq = events.publish(
                EventKind::MemberLeft { node: i },
                format!("removed by test {i}"),
            );
            assert_eq!(seq, i + 1);
        }
        let recent = events.recent(0);
        assert_eq!(recent.len(), RECENT, "the ring is bounded");
        assert_eq!(recent[0].seq, 11, "the oldest were dropped");
        assert_eq!(events.recent(RECENT as u64 + 8).len(), 2);
        let first = live.try_recv();
        // The subscriber fell behind by 10: it is told so, then reads on.
        assert!(
            matches!(first, Err(broadcast::error::TryRecvError::Lagged(10))),
            "{first:?}"
        );
        let next = live.try_recv().unwrap();
        assert_eq!((next.seq, next.seen_by), (11, 3));
        let json = serde_json::to_value(&next).unwrap();
        assert_eq!(json["kind"], "member_left");
        assert_eq!(json["node"], 10, "the node that left");
        assert_eq!(json["seen_by"], 3, "the node that saw it");
        assert_eq!(json["cause"], "removed by test 10");
    }
}
