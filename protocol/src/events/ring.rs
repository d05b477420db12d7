//! One node's recent events, bounded: the oldest are forgotten first.

use std::collections::VecDeque;

use super::{Event, EventKind, MAX_BATCH, MAX_REASON, MAX_SUBJECT, cut};
use crate::ids::NodeId;

/// What a reader asks of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingQuery {
    /// Only events numbered after this one, oldest first (a follower's
    /// cursor). Without it, the latest events.
    pub after: Option<u64>,
    /// Only events at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// At most this many (and never more than [`MAX_BATCH`]).
    pub limit: usize,
}

/// A node's events, numbered as they come.
#[derive(Debug, Clone)]
pub struct Ring {
    node: NodeId,
    next_seq: u64,
    capacity: usize,
    events: VecDeque<Event>,
}

impl Ring {
    /// An empty ring for `node`, numbering from `first_seq`, keeping at
    /// most `capacity` events (at least one).
    pub fn new(node: NodeId, first_seq: u64, capacity: usize) -> Self {
        Self {
            node,
            next_seq: first_seq,
            capacity: capacity.max(1),
            events: VecDeque::new(),
        }
    }

    /// Records an event at `time_ms`; subject and reason are cut to their
    /// bounds. Returns it as recorded.
    pub fn push(
        &mut self,
        time_ms: u64,
        kind: EventKind,
        subject: impl Into<String>,
        reason: impl Into<String>,
    ) -> Event {
        let event = Event {
            time_ms,
            node: self.node.clone(),
            seq: self.next_seq,
            kind,
            subject: cut(subject.into(), MAX_SUBJECT),
            reason: cut(reason.into(), MAX_REASON),
        };
        self.next_seq = self.next_seq.saturating_add(1);
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
        event
    }

    /// The number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events `q` asks for, oldest first.
    pub fn read(&self, q: RingQuery) -> Vec<Event> {
        let limit = q.limit.clamp(1, MAX_BATCH);
        let matches = |e: &&Event| {
            q.after.is_none_or(|a| e.seq > a) && q.since_ms.is_none_or(|t| e.time_ms >= t)
        };
        if q.after.is_some() {
            // Numbers increase along the ring: skip to the first after.
            let start = self
                .events
                .partition_point(|e| q.after.is_some_and(|a| e.seq <= a));
            self.events
                .range(start..)
                .filter(matches)
                .take(limit)
                .cloned()
                .collect()
        } else {
            let mut latest: Vec<Event> = self
                .events
                .iter()
                .rev()
                .filter(matches)
                .take(limit)
                .cloned()
                .collect();
            latest.reverse();
            latest
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring(capacity: usize) -> Ring {
        Ring::new(NodeId::new("n1").unwrap(), 1000, capacity)
    }

    #[test]
    fn numbers_grow_and_the_oldest_go_first() {
        let mut r = ring(3);
        for t in 0..5 {
            r.push(t, EventKind::TaskStarted, format!("t{t}"), "");
        }
        assert_eq!(r.len(), 3);
        let all = r.read(RingQuery {
            limit: 10,
            ..Default::default()
        });
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1002, 1003, 1004]);
        assert_eq!(r.next_seq(), 1005);
    }

    #[test]
    fn a_cursor_reads_oldest_first_and_without_one_the_latest() {
        let mut r = ring(100);
        for t in 0..10 {
            r.push(t * 10, EventKind::PeerJoined, "n2", "");
        }
        let after = r.read(RingQuery {
            after: Some(1003),
            limit: 2,
            ..Default::default()
        });
        assert_eq!(
            after.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1004, 1005]
        );
        let latest = r.read(RingQuery {
            limit: 2,
            ..Default::default()
        });
        assert_eq!(
            latest.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1008, 1009]
        );
        let since = r.read(RingQuery {
            since_ms: Some(75),
            limit: 100,
            ..Default::default()
        });
        assert_eq!(
            since.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1008, 1009]
        );
    }

    #[test]
    fn long_texts_are_cut_and_batches_bounded() {
        let mut r = ring(MAX_BATCH * 2);
        let e = r.push(0, EventKind::TaskExited, "x".repeat(1000), "y".repeat(5000));
        assert_eq!(e.subject.len(), MAX_SUBJECT);
        assert_eq!(e.reason.len(), MAX_REASON);
        for t in 0..(MAX_BATCH * 2) as u64 {
            r.push(t, EventKind::TaskExited, "t", "");
        }
        let page = r.read(RingQuery {
            limit: usize::MAX,
            ..Default::default()
        });
        assert_eq!(page.len(), MAX_BATCH);
        // A full batch of the largest events fits an RPC frame.
        let full: Vec<Event> = (0..MAX_BATCH).map(|_| e.clone()).collect();
        let bytes = crate::wire::encode(&full).unwrap();
        assert!(
            bytes.len() < crate::wire::MAX_MESSAGE,
            "{} bytes",
            bytes.len()
        );
    }

    proptest! {
        /// Following with a cursor sees every kept event once, in order.
        #[test]
        fn a_follower_sees_each_kept_event_once(n in 0usize..300, cap in 1usize..100, page in 1usize..20) {
            let mut r = ring(cap);
            for t in 0..n as u64 {
                r.push(t, EventKind::TaskPlaced, "t", "");
            }
            let mut seen = Vec::new();
            let mut after = Some(0);
            loop {
                let got = r.read(RingQuery { after, limit: page, ..Default::default() });
                if got.is_empty() { break; }
                after = got.last().map(|e| e.seq);
                seen.extend(got.into_iter().map(|e| e.seq));
            }
            let kept: Vec<u64> = (0..n as u64).map(|i| 1000 + i).skip(n.saturating_sub(cap)).collect();
            prop_assert_eq!(seen, kept);
        }
    }
}
