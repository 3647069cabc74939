//! The request pipeline of one client connection, as a state machine without I/O.
//!
//! A connection's requests are answered strictly in the order they arrived (ZooKeeper's per-session FIFO
//! rule), yet a connection keeps many requests in flight: writes wait for the Raft log, reads wait behind
//! the writes before them, `sync` waits for a read barrier. This module decides, for every input, what
//! may happen next; the connection task ([`super::connection`]) feeds it inputs and carries out the
//! [`Action`]s it emits, in emission order. Time is an input (`now`), never read here, so every rule is
//! tested by golden scripts (`crates/server/testscripts/pipeline/`).
//!
//! Inputs: a request decoded ([`Pipeline::request`]), the oldest proposal's result ([`Pipeline::done`])
//! or failure ([`Pipeline::failed`]), the route to the leader changed ([`Pipeline::route`]), a watch
//! event ([`Pipeline::event`]), the node closing the session ([`Pipeline::close_by_node`]), time passed
//! ([`Pipeline::tick`]). Outputs: propose, execute a read and send its reply, send a write's reply,
//! send an event, register for state views, close.
//!
//! The rules, all ZooKeeper's unless said:
//! 1. Replies leave in request order. A request that cannot be answered (its write failed, the leader it
//!    went to was replaced while it was in flight) closes the connection at once: nothing queued behind
//!    it is answered, so a client never sees a reply to a later request before an earlier one.
//! 2. Writes are proposed in arrival order along one route (the local Raft on the leader, or one ordered
//!    link to the leader); their results come back in that order. When another leader is known while
//!    ordered proposals are in flight on the old route, their fate is unknown and the connection closes
//!    at once (the client resumes its session elsewhere, as with ZooKeeper on leader loss). A moment
//!    with no leader known (an election the same leader may win again) changes nothing by itself. A
//!    write that has no route waits for one for at most the connection's `hold`, then the connection
//!    closes.
//! 3. A read with nothing queued before it is answered at once. A read behind a write is answered once
//!    that write is answered; on the leader, from the state right after that write (a *view*), so later
//!    writes need not wait for the read (Roster's pipelining: the write after a read is proposed at once
//!    when every read before it will be answered from a view).
//! 4. A watch event leaves before any reply that shows its change, and after every reply answered from
//!    an older view: while reads wait in the queue, events are held back and released up to the zxid of
//!    the state each reply shows.
//! 5. `sync` and linearizable reads are read barriers: later requests do not pass them.
//!
//! Left out: the I/O itself, decoding, pings and auth (answered by the connection at once, out of band),
//! and what a request does (the connection executes reads; Raft executes writes).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The types a pipeline carries without looking inside them.
pub trait Types {
    /// What the connection needs back to answer a request (xid, opcode, arrival time).
    type Meta;
    /// A proposal: a write or a barrier.
    type Prop;
    /// A request answered locally.
    type Read;
    /// The answer of a proposal, to encode as a reply.
    type Reply;
    /// The replicated state as of one zxid.
    type View: Clone;
    /// A watch notification.
    type Event;
}

/// Where this node's proposals go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// This node leads: proposals go to the local Raft.
    Local,
    /// Proposals go over the ordered link `link` (a per-node counter) to the leader `leader`.
    Forward {
        /// The leader's node id.
        leader: u64,
        /// Which connection to it.
        link: u64,
    },
    /// No leader this node can reach now.
    Unreachable,
    /// Not ordered with other proposals (a `reconfig`, carried out apart from the write path).
    Unordered,
}

/// What kind of proposal a request makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropKind {
    /// A replicated write. `closes_session`: the client's closeSession (the node's close of that session
    /// is then expected, and the connection ends after its reply).
    Write {
        /// Whether this is the client's closeSession.
        closes_session: bool,
    },
    /// A read barrier (`sync`, or the barrier in front of a linearizable read).
    Barrier,
    /// A write that travels apart from the ordered route (`reconfig`).
    Unordered,
}

/// A decoded request, as the pipeline sees it.
pub enum Request<T: Types> {
    /// A proposal; `then`: a read answered once it passed (a linearizable read behind its barrier).
    Propose {
        /// The request's metadata.
        meta: T::Meta,
        /// What is proposed.
        prop: T::Prop,
        /// Its kind.
        kind: PropKind,
        /// The read to answer when the barrier passed.
        then: Option<T::Read>,
    },
    /// A locally answered request. `last`: close the connection right after its reply (a request
    /// ZooKeeper answers and then disconnects, such as an unknown opcode).
    Read {
        /// The request's metadata.
        meta: T::Meta,
        /// The request.
        read: T::Read,
        /// Whether the connection closes after it.
        last: bool,
    },
}

/// The result of the oldest proposal in flight.
pub struct Done<T: Types> {
    /// The zxid the reply carries.
    pub zxid: i64,
    /// The answer.
    pub reply: T::Reply,
    /// The state right after this write, when one was asked for.
    pub view: Option<T::View>,
    /// Whether the write ended the session (the connection closes after this reply).
    pub closes: bool,
}

/// What the connection must do, in order.
pub enum Action<T: Types> {
    /// Propose now along `target` (its result comes back through [`Pipeline::done`], in order).
    Propose {
        /// The proposal.
        prop: T::Prop,
        /// Where to.
        target: Target,
        /// Whether the proposer should ask for a state view of the result.
        view: bool,
    },
    /// Execute this read and send its reply: against `view` (the state as of zxid `at`) when given,
    /// else against the current state.
    Read {
        /// The request's metadata.
        meta: T::Meta,
        /// The request.
        read: T::Read,
        /// The state to answer from.
        view: Option<(T::View, i64)>,
    },
    /// Send the reply of a proposal.
    Reply {
        /// The request's metadata.
        meta: T::Meta,
        /// The zxid of the reply header.
        zxid: i64,
        /// The answer.
        reply: T::Reply,
    },
    /// Send a watch notification.
    Event(T::Event, i64),
    /// From now on this session's writes should carry state views (reads wait behind its writes).
    WantViews,
    /// Close the connection once what was emitted before is sent. Nothing follows.
    Close {
        /// Why, for the log.
        reason: String,
        /// Whether this is an expected end (the client closed its session, or a request that ends the
        /// connection by protocol) rather than a failure.
        expected: bool,
    },
}

enum Slot<T: Types> {
    /// Not proposed yet: behind an earlier request it must not overtake, or waiting for a route.
    Held {
        meta: T::Meta,
        prop: T::Prop,
        kind: PropKind,
        then: Option<T::Read>,
    },
    /// Proposed; its result arrives in proposal order.
    Proposed {
        meta: T::Meta,
        then: Option<T::Read>,
        view: bool,
    },
    /// A local read waiting for the requests before it.
    Read {
        meta: T::Meta,
        read: T::Read,
        last: bool,
    },
}

/// The pipeline of one connection.
pub struct Pipeline<T: Types> {
    queue: VecDeque<Slot<T>>,
    /// Proposals sent whose results are still awaited.
    in_flight: usize,
    /// The route of the ordered proposals in flight (`None` when none are).
    route: Option<Target>,
    /// The route proposals would take now.
    target: Target,
    /// How long a proposal may wait for a route when nothing else is in flight.
    hold: Duration,
    /// Since when the first held proposal waits for a route.
    waiting_since: Option<Instant>,
    /// Whether this session's writes carry state views.
    wants_views: bool,
    /// The state after the last answered write, for the reads right behind it.
    view: Option<(T::View, i64)>,
    /// Events held back while reads answered from older views are queued.
    deferred: VecDeque<(T::Event, i64)>,
    /// The client sent closeSession.
    close_requested: bool,
    /// A request that ends the connection was queued: later requests are ignored.
    ending: bool,
    closed: bool,
    actions: VecDeque<Action<T>>,
}

impl<T: Types> Pipeline<T> {
    /// A pipeline whose proposals currently go to `target`, waiting at most `hold` for a route.
    pub fn new(target: Target, hold: Duration) -> Pipeline<T> {
        Pipeline {
            queue: VecDeque::new(),
            in_flight: 0,
            route: None,
            target,
            hold,
            waiting_since: None,
            wants_views: false,
            view: None,
            deferred: VecDeque::new(),
            close_requested: false,
            ending: false,
            closed: false,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, in order.
    pub fn next_action(&mut self) -> Option<Action<T>> {
        self.actions.pop_front()
    }

    /// Requests not yet answered.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Proposals whose results are awaited.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the connection has been told to close (no input has effect any more).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether more requests may be read (false once a request that ends the connection was queued).
    pub fn accepts_requests(&self) -> bool {
        !self.closed && !self.ending
    }

    /// When [`Pipeline::tick`] must be called next (a proposal waits for a route), if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.waiting_since.map(|t| t + self.hold)
    }

    /// A request was decoded.
    pub fn request(&mut self, now: Instant, req: Request<T>) {
        if !self.accepts_requests() {
            return;
        }
        match req {
            Request::Read { meta, read, last } => {
                self.ending |= last;
                if self.queue.is_empty() {
                    self.drain_events(None);
                    self.actions.push_back(Action::Read {
                        meta,
                        read,
                        view: None,
                    });
                    if last {
                        self.close("the request ends the connection".into(), true);
                    }
                } else {
                    if !self.wants_views {
                        self.wants_views = true;
                        self.actions.push_back(Action::WantViews);
                    }
                    self.queue.push_back(Slot::Read { meta, read, last });
                }
            }
            Request::Propose {
                meta,
                prop,
                kind,
                then,
            } => {
                if let PropKind::Write {
                    closes_session: true,
                } = kind
                {
                    self.close_requested = true;
                }
                self.queue.push_back(Slot::Held {
                    meta,
                    prop,
                    kind,
                    then,
                });
                self.advance(now);
            }
        }
    }

    /// The route to the leader changed.
    pub fn route(&mut self, now: Instant, target: Target) {
        if self.closed || target == self.target {
            return;
        }
        self.target = target;
        if let Some(route) = self.route {
            // No leader known for a moment (an election) is not yet a change of route: the writes in
            // flight may still be answered if the same leader stays; they fail by themselves if its link
            // breaks, and a held write waits at most `hold`.
            if route != target && target != Target::Unreachable {
                self.close(
                    format!(
                        "the leader changed while {} write(s) of this connection were in flight ({route:?} -> {target:?}): their outcome is unknown",
                        self.in_flight
                    ),
                    false,
                );
                return;
            }
        }
        self.advance(now);
    }

    /// Time passed: a proposal that waited longer than `hold` for a route closes the connection.
    pub fn tick(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if let Some(deadline) = self.deadline() {
            if now >= deadline {
                self.close(
                    format!(
                        "no reachable leader for {} ms: the write was not proposed",
                        self.hold.as_millis()
                    ),
                    false,
                );
            }
        }
    }

    /// The oldest proposal in flight was applied on this node with this result.
    pub fn done(&mut self, now: Instant, done: Done<T>) {
        if self.closed {
            return;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.route = None;
        }
        let Some(Slot::Proposed { meta, then, .. }) = self.queue.pop_front() else {
            self.close(
                "a proposal result arrived with no proposal in flight".into(),
                false,
            );
            return;
        };
        match then {
            Some(read) => {
                // A linearizable read whose barrier passed: answer it from the current state.
                self.drain_events(None);
                self.actions.push_back(Action::Read {
                    meta,
                    read,
                    view: None,
                });
            }
            None => {
                let reads_follow = matches!(self.queue.front(), Some(Slot::Read { .. }));
                self.view = match done.view {
                    Some(v) if reads_follow => Some((v, done.zxid)),
                    _ => None,
                };
                self.drain_events(self.view.as_ref().map(|(_, z)| *z));
                self.actions.push_back(Action::Reply {
                    meta,
                    zxid: done.zxid,
                    reply: done.reply,
                });
                if done.closes {
                    self.close("the session was closed".into(), true);
                    return;
                }
            }
        }
        self.answer_reads();
        self.advance(now);
    }

    /// The oldest proposal in flight failed (or its answer can no longer come): close before anything
    /// behind it is answered.
    pub fn failed(&mut self, reason: String) {
        if self.closed {
            return;
        }
        self.close(
            format!("write not answered: {reason}; the client must reconnect"),
            false,
        );
    }

    /// A watch fired for this connection.
    pub fn event(&mut self, event: T::Event, zxid: i64) {
        if self.closed {
            return;
        }
        if self.queue.iter().any(|s| matches!(s, Slot::Read { .. })) {
            self.deferred.push_back((event, zxid));
        } else {
            self.drain_events(None);
            self.actions.push_back(Action::Event(event, zxid));
        }
    }

    /// The node ends this connection's session (expired, moved, closed elsewhere, no leader).
    pub fn close_by_node(&mut self, reason: &str) {
        if self.closed || self.close_requested {
            // After the client's closeSession, the node's close of the session is the expected end:
            // the reply to closeSession comes first.
            return;
        }
        self.close(reason.to_string(), false);
    }

    /// Answers the reads at the head of the queue, from the view of the write just answered.
    fn answer_reads(&mut self) {
        let view = self.view.take();
        while let Some(Slot::Read { .. }) = self.queue.front() {
            let Some(Slot::Read { meta, read, last }) = self.queue.pop_front() else {
                unreachable!("front is a read")
            };
            self.drain_events(view.as_ref().map(|(_, z)| *z));
            self.actions.push_back(Action::Read {
                meta,
                read,
                view: view.clone(),
            });
            if last {
                self.close("the request ends the connection".into(), true);
                return;
            }
        }
        if !self.queue.iter().any(|s| matches!(s, Slot::Read { .. })) {
            self.drain_events(None);
        }
    }

    /// Proposes, in order, the held proposals that may go now (rules 2, 3 and 5).
    fn advance(&mut self, now: Instant) {
        // Whether the last proposed write before this point carries a view (reads behind it will be
        // answered from that view, so a later write cannot change what they show).
        let mut view_before = false;
        for i in 0..self.queue.len() {
            match &self.queue[i] {
                Slot::Proposed { then: Some(_), .. } => return,
                Slot::Proposed { view, .. } => view_before = *view,
                Slot::Read { .. } if !view_before => return,
                Slot::Read { .. } => {}
                Slot::Held { kind, .. } => {
                    let kind = *kind;
                    let target = match kind {
                        PropKind::Unordered => Target::Unordered,
                        _ => self.target,
                    };
                    if target == Target::Unreachable {
                        self.waiting_since.get_or_insert(now);
                        return;
                    }
                    self.waiting_since = None;
                    let view = self.wants_views
                        && target == Target::Local
                        && matches!(kind, PropKind::Write { .. });
                    let Some(Slot::Held {
                        meta, prop, then, ..
                    }) = self.queue.remove(i)
                    else {
                        unreachable!("slot {i} is held")
                    };
                    let barrier = then.is_some();
                    self.queue.insert(i, Slot::Proposed { meta, then, view });
                    self.in_flight += 1;
                    if target != Target::Unordered {
                        self.route = Some(target);
                    }
                    self.actions
                        .push_back(Action::Propose { prop, target, view });
                    if barrier {
                        return;
                    }
                    view_before = view;
                }
            }
        }
    }

    /// Emits the held-back events up to zxid `upto` (all when `None`).
    fn drain_events(&mut self, upto: Option<i64>) {
        while let Some((_, z)) = self.deferred.front() {
            if upto.is_some_and(|u| *z > u) {
                break;
            }
            let (e, z) = self.deferred.pop_front().expect("front exists");
            self.actions.push_back(Action::Event(e, z));
        }
    }

    fn close(&mut self, reason: String, expected: bool) {
        self.closed = true;
        self.waiting_since = None;
        self.queue.clear();
        self.deferred.clear();
        self.actions.push_back(Action::Close { reason, expected });
    }
}
