//! This node's event log (`mesh_protocol::events`): the parts of the agent
//! report what happened through an [`EventLog`] handle; readers take the
//! latest events or follow new ones by cursor, here (`follow`) or across
//! the mesh (`mesh`). `peers` watches the peer view and `serve` answers
//! peers' calls for this node's events.

pub mod mesh;
pub mod peers;
pub mod serve;

use std::sync::{Arc, Mutex};

use futures_util::stream::{BoxStream, StreamExt};
use mesh_protocol::NodeId;
use mesh_protocol::events::{Coalescer, Event, EventKind, KEPT, MAX_BATCH, Ring, RingQuery};
use tokio::sync::watch;
use tracing::debug;

use crate::clock::Clock;

/// How long events that come in floods are gathered (see
/// [`EventLog::emit_flood`]).
pub const FLOOD_WINDOW_MS: u64 = 10_000;

/// The handle every part reports events through; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    ring: Mutex<Ring>,
    /// Floods told once per [`FLOOD_WINDOW_MS`] (`Coalescer`).
    floods: Mutex<Coalescer>,
    clock: Clock,
    /// The number of the latest event, for followers to wake on.
    latest: watch::Sender<u64>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

impl EventLog {
    /// An empty log for `node`, numbering from the clock (see
    /// `Event::seq`), keeping `KEPT` events.
    pub fn new(node: NodeId, clock: Clock) -> Self {
        let first = clock.now_ms().saturating_mul(1000);
        let (latest, _) = watch::channel(first.saturating_sub(1));
        Self {
            inner: Arc::new(Inner {
                ring: Mutex::new(Ring::new(node, first, KEPT)),
                floods: Mutex::new(Coalescer::default()),
                clock,
                latest,
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A poisoned lock only follows a panic elsewhere; the ring is whole.
        self.inner.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `kind` happened to `subject`, because of `reason`.
    pub fn emit(&self, kind: EventKind, subject: impl ToString, reason: impl Into<String>) {
        let now = self.inner.clock.now_ms();
        let event = self.ring().push(now, kind, subject.to_string(), reason);
        debug!(kind = %event.kind, subject = %event.subject, reason = %event.reason, "event");
        self.inner.latest.send_replace(event.seq);
    }

    /// As [`Self::emit`], for events that may come in floods (a container
    /// per connection, refused connections): the first of a kind and
    /// subject at once, the others of the next [`FLOOD_WINDOW_MS`] counted
    /// and told together (by [`Self::tell_floods`], or with the next one).
    pub fn emit_flood(&self, kind: EventKind, subject: impl ToString, reason: impl Into<String>) {
        let subject = subject.to_string();
        let now = self.inner.clock.now_ms();
        let told = self
            .floods()
            .offer(now, FLOOD_WINDOW_MS, kind, &subject, reason.into());
        if let Some(reason) = told {
            self.emit(kind, subject, reason);
        }
    }

    /// Tells the flood counts whose window is over; called once a gossip
    /// round.
    pub fn tell_floods(&self) {
        let now = self.inner.clock.now_ms();
        let due = self.floods().due(now, FLOOD_WINDOW_MS);
        for (kind, subject, reason) in due {
            self.emit(kind, subject, reason);
        }
    }

    fn floods(&self) -> std::sync::MutexGuard<'_, Coalescer> {
        // A poisoned lock only follows a panic elsewhere; the map is whole.
        self.inner.floods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events `q` asks for, oldest first.
    pub fn read(&self, q: RingQuery) -> Vec<Event> {
        self.ring().read(q)
    }

    /// The number of the latest event (or just below the first to come).
    pub fn latest(&self) -> u64 {
        *self.inner.latest.borrow()
    }

    /// How many followers (`follow` streams, here or for peers) are open.
    pub fn followers(&self) -> usize {
        self.inner.latest.receiver_count()
    }

    /// Batches of the events after `after`, as they come, oldest first,
    /// never ending while the log lives. A reader slower than the log
    /// misses the events forgotten meanwhile, never more.
    pub fn follow(&self, after: u64) -> BoxStream<'static, Vec<Event>> {
        let log = self.clone();
        let rx = self.inner.latest.subscribe();
        futures_util::stream::unfold((log, rx, after), |(log, mut rx, after)| async move {
            loop {
                let batch = log.read(RingQuery {
                    after: Some(after),
                    since_ms: None,
                    limit: MAX_BATCH,
                });
                if let Some(last) = batch.last() {
                    let next = last.seq;
                    return Some((batch, (log, rx, next)));
                }
                // The log is gone only when the agent is.
                rx.changed().await.ok()?;
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_follower_gets_what_comes_after_its_cursor() {
        let log = EventLog::new(NodeId::new("n1").unwrap(), Clock::System);
        log.emit(EventKind::PeerJoined, "n2", "before");
        let mut follow = log.follow(log.latest());
        log.emit(EventKind::PeerDead, "n2", "after");
        let batch = follow.next().await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].kind, EventKind::PeerDead);
        assert_eq!(batch[0].reason, "after");
    }
}
