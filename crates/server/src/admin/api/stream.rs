//! `GET /api/v1/events?after=SEQ` (the recent events of this node's journal, oldest first) and
//! `GET /api/v1/events/stream`, the same as server-sent events: first the recent events after the
//! `Last-Event-ID` header (or `?after=`; none: the whole ring), then each new event as it is published.
//!
//! Each SSE message has `id: <seq>` (so a reconnecting browser resumes where it stopped) and the
//! event's JSON as `data` (its `kind` says what happened); the type is the default (`message`). A
//! comment (`: keep-alive`) every [`KEEP_ALIVE`] keeps proxies from closing an idle stream. A reader
//! too slow for the live events misses none the ring still holds: they are replayed from the ring;
//! older ones are announced with a `gap` message (`{"kind":"gap","missed_after":SEQ}`) so the reader
//! re-reads the state. The stream ends when the node shuts down.
//!
//! Left out: filtering by kind, events of other nodes (each node journals what it saw).

use super::ctx::ApiCtx;
use super::data::query;
use super::error::ApiResult;
use crate::events::Event;
use crate::shared::Shared;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

/// How often an idle stream carries a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The `after` parameter.
#[derive(Debug, Deserialize)]
pub struct After {
    /// Only events with a higher sequence number.
    pub after: Option<u64>,
}

/// Recent events.
#[derive(Debug, Serialize)]
pub struct Recent {
    /// The node whose journal this is.
    pub node_id: u64,
    /// The highest sequence number published so far (0: none).
    pub last_seq: u64,
    /// The events after `after`, oldest first (at most the ring's size).
    pub events: Vec<Event>,
}

/// `GET /api/v1/events?after=`.
pub async fn recent(
    State(api): State<Arc<ApiCtx>>,
    q: Result<Query<After>, QueryRejection>,
) -> ApiResult<Recent> {
    let after = query(q)?.after.unwrap_or(0);
    let journal = &api.admin.node.shared.events;
    let events = journal.recent(after);
    let last_seq = journal.recent(0).last().map(|e| e.seq).unwrap_or(0);
    Ok(Json(Recent {
        node_id: api.admin.node.identity.node_id,
        last_seq,
        events,
    }))
}

/// What a stream sends next.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// The browser's reconnection delay (first message).
    Retry(Duration),
    /// An event.
    Event(Event),
    /// Events after this sequence number were lost (the ring no longer has them).
    Gap(u64),
}

impl Item {
    fn sse(&self) -> sse::Event {
        match self {
            Item::Retry(d) => sse::Event::default().retry(*d),
            Item::Event(e) => sse::Event::default()
                .id(e.seq.to_string())
                .json_data(e)
                .unwrap_or_else(|_| sse::Event::default().comment("unencodable event")),
            Item::Gap(after) => {
                sse::Event::default().data(format!(r#"{{"kind":"gap","missed_after":{after}}}"#))
            }
        }
    }
}

/// An open stream: what it has sent and what it still has to send.
pub struct Reader {
    shared: Arc<Shared>,
    live: broadcast::Receiver<Event>,
    stop: watch::Receiver<bool>,
    last: u64,
    pending: VecDeque<Item>,
}

impl Reader {
    /// A stream of the events after `after`: the ring's first, then live ones, until `stop`.
    pub fn new(shared: Arc<Shared>, after: u64, stop: watch::Receiver<bool>) -> Reader {
        // Subscribe before reading the ring, so nothing published in between is lost (the ones seen
        // twice are skipped by sequence number).
        let mut r = Reader {
            live: shared.events.subscribe(),
            shared,
            stop,
            last: after,
            pending: VecDeque::from([Item::Retry(Duration::from_secs(1))]),
        };
        r.replay(false);
        r
    }

    /// Queues the ring's events after `last`, announcing a gap if the ring lost some of them (on a
    /// fresh stream from the start, `last` 0, the ring is all there is to send).
    fn replay(&mut self, lagged: bool) {
        let ring = self.shared.events.recent(self.last);
        if let Some(first) = ring.first() {
            if (lagged || self.last > 0) && first.seq > self.last + 1 {
                self.pending.push_back(Item::Gap(self.last));
            }
        }
        for e in ring {
            self.last = e.seq;
            self.pending.push_back(Item::Event(e));
        }
    }

    /// The next message to send; `None` once the node shuts down.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            let received = tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return None,
                r = self.live.recv() => r,
            };
            match received {
                Ok(e) if e.seq > self.last => {
                    self.last = e.seq;
                    return Some(Item::Event(e));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => self.replay(true),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// `GET /api/v1/events/stream`.
pub async fn live(
    State(api): State<Arc<ApiCtx>>,
    headers: HeaderMap,
    q: Result<Query<After>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, super::error::ApiError> {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let after = from_header.or(query(q)?.after).unwrap_or(0);
    let reader = Reader::new(api.admin.node.shared.clone(), after, api.stop.clone());
    let stream = futures::stream::unfold(reader, |mut r| async move {
        r.next().await.map(|m| (Ok(m.sse()), r))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::events::{EventKind, RECENT};

    fn left(shared: &Shared, node: u64) -> u64 {
        shared
            .events
            .publish(EventKind::MemberLeft { node }, format!("test {node}"))
    }

    fn seqs(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Retry(_) => "retry".to_string(),
                Item::Event(e) => e.seq.to_string(),
                Item::Gap(a) => format!("gap after {a}"),
            })
            .collect()
    }

    async fn take(r: &mut Reader, n: usize) -> Vec<Item> {
        let mut out = Vec::new();
        for _ in 0..n {
            let item = tokio::time::timeout(Duration::from_secs(5), r.next())
                .await
                .expect("an item in time")
                .expect("the stream is open");
            out.push(item);
        }
        out
    }

    #[tokio::test]
    async fn a_stream_replays_after_the_last_id_then_goes_live_then_ends_on_stop() {
        let shared = Arc::new(Shared::new(Config::default(), roster_state::State::new()));
        for n in 1..=3 {
            left(&shared, n);
        }
        let (tx, stop) = watch::channel(false);
        let mut r = Reader::new(shared.clone(), 1, stop);
        assert_eq!(seqs(&take(&mut r, 3).await), ["retry", "2", "3"]);
        left(&shared, 4);
        let live = take(&mut r, 1).await;
        assert_eq!(seqs(&live), ["4"]);
        let Item::Event(e) = &live[0] else {
            unreachable!()
        };
        assert_eq!(e.cause, "test 4");
        tx.send(true).unwrap();
        assert!(r.next().await.is_none(), "the stream ends on shutdown");
    }

    #[tokio::test]
    async fn a_reader_too_slow_for_the_live_events_gets_them_from_the_ring_or_a_gap() {
        let shared = Arc::new(Shared::new(Config::default(), roster_state::State::new()));
        let (_tx, stop) = watch::channel(false);
        let mut r = Reader::new(shared.clone(), 0, stop);
        assert_eq!(seqs(&take(&mut r, 1).await), ["retry"]);
        // Twice the ring: the subscriber lags, the ring kept only the last RECENT.
        let total = 2 * RECENT as u64;
        for n in 1..=total {
            left(&shared, n);
        }
        let items = take(&mut r, RECENT + 1).await;
        let names = seqs(&items);
        assert_eq!(names[0], "gap after 0", "{names:?}");
        assert_eq!(names[1], (RECENT as u64 + 1).to_string());
        assert_eq!(
            names[RECENT],
            total.to_string(),
            "none lost that the ring held"
        );
    }
}
