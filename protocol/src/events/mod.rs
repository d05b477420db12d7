//! Mesh events: what happened, where and why, for `meshctl events` and the
//! dashboard's feed. Each node records the events it witnessed in a bounded
//! [`Ring`] with its own sequence numbers; a node asked for the whole mesh
//! merges every live node's ring ([`merge`]). What counts as an event for a
//! task or a peer is decided here, from records and views ([`task`],
//! [`peer`]), so the agent only reports what changed.

mod coalesce;
pub mod peer;
mod ring;
pub mod task;
pub mod when;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

pub use coalesce::Coalescer;
pub use ring::{Ring, RingQuery};

/// Longest subject an event carries (longer ones are cut).
pub const MAX_SUBJECT: usize = 256;
/// Longest reason an event carries (longer ones are cut).
pub const MAX_REASON: usize = 1024;
/// Events a node keeps; older ones are forgotten.
pub const KEPT: usize = 4096;
/// Most events in one answer (a page of a ring, or one batch of a stream):
/// at [`MAX_SUBJECT`] and [`MAX_REASON`] each, it fits an RPC frame.
pub const MAX_BATCH: usize = 512;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Submitted to this node and stored.
    TaskAccepted,
    /// Given a node to run on (subject: the task; reason names the node).
    TaskPlaced,
    /// Its node is pulling its image.
    TaskPulling,
    /// Its container runs.
    TaskStarted,
    /// Its container ended (reason: the exit code or the error).
    TaskExited,
    /// Its node died and its keeper placed it again.
    TaskReplaced,
    /// It failed and waits to run again (`--retries`).
    TaskRetried,
    /// Killed on request.
    TaskKilled,
    /// Its container vanished or its start could not be confirmed.
    TaskLost,
    /// Its node lost its lease and stopped it until its keeper answers.
    TaskFenced,
    /// A node this node had not seen alive before.
    PeerJoined,
    /// Alive to the failure detector, but not heard from lately.
    PeerSuspect,
    /// Declared dead by this node's failure detector.
    PeerDead,
    /// Alive again after being suspect or dead.
    PeerAlive,
    PeerDrained,
    PeerUndrained,
    ServiceCreated,
    ServiceRemoved,
    /// A service container started (subject: the service).
    ContainerStarted,
    /// A service container could not be started.
    ContainerFailed,
    /// A service container was stopped (idle, scaled down, replaced).
    ContainerRetired,
    /// Client connections were refused (reason: how many and why).
    ConnectionRefused,
}

impl EventKind {
    pub const ALL: [EventKind; 22] = [
        EventKind::TaskAccepted,
        EventKind::TaskPlaced,
        EventKind::TaskPulling,
        EventKind::TaskStarted,
        EventKind::TaskExited,
        EventKind::TaskReplaced,
        EventKind::TaskRetried,
        EventKind::TaskKilled,
        EventKind::TaskLost,
        EventKind::TaskFenced,
        EventKind::PeerJoined,
        EventKind::PeerSuspect,
        EventKind::PeerDead,
        EventKind::PeerAlive,
        EventKind::PeerDrained,
        EventKind::PeerUndrained,
        EventKind::ServiceCreated,
        EventKind::ServiceRemoved,
        EventKind::ContainerStarted,
        EventKind::ContainerFailed,
        EventKind::ContainerRetired,
        EventKind::ConnectionRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TaskAccepted => "task-accepted",
            EventKind::TaskPlaced => "task-placed",
            EventKind::TaskPulling => "task-pulling",
            EventKind::TaskStarted => "task-started",
            EventKind::TaskExited => "task-exited",
            EventKind::TaskReplaced => "task-replaced",
            EventKind::TaskRetried => "task-retried",
            EventKind::TaskKilled => "task-killed",
            EventKind::TaskLost => "task-lost",
            EventKind::TaskFenced => "task-fenced",
            EventKind::PeerJoined => "peer-joined",
            EventKind::PeerSuspect => "peer-suspect",
            EventKind::PeerDead => "peer-dead",
            EventKind::PeerAlive => "peer-alive",
            EventKind::PeerDrained => "peer-drained",
            EventKind::PeerUndrained => "peer-undrained",
            EventKind::ServiceCreated => "service-created",
            EventKind::ServiceRemoved => "service-removed",
            EventKind::ContainerStarted => "container-started",
            EventKind::ContainerFailed => "container-failed",
            EventKind::ContainerRetired => "container-retired",
            EventKind::ConnectionRefused => "connection-refused",
        }
    }

    /// What the event is about: `task`, `peer`, `service`.
    pub fn topic(self) -> &'static str {
        let s = self.as_str();
        match s.split_once('-') {
            Some(("task", _)) => "task",
            Some(("peer", _)) => "peer",
            _ => "service",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened, as the node that saw it tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, in milliseconds since the Unix epoch, by that node's clock.
    pub time_ms: u64,
    /// The node that saw it (and numbered it).
    pub node: NodeId,
    /// Its number on that node, increasing: a node numbers from its start
    /// time in milliseconds times 1,000, so numbers keep growing across
    /// restarts (unless the clock went back) and a follower's cursor stays
    /// good.
    pub seq: u64,
    pub kind: EventKind,
    /// A task id, a node id or a service name.
    pub subject: String,
    /// Why, in words for people.
    pub reason: String,
}

impl Event {
    /// The order events are shown in: by time, then node, then number.
    pub fn order_key(&self) -> (u64, &NodeId, u64) {
        (self.time_ms, &self.node, self.seq)
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Merges answers from several nodes into one list in [`Event::order_key`]
/// order, duplicates (same node and number) once, keeping the last `limit`.
pub fn merge(answers: impl IntoIterator<Item = Vec<Event>>, limit: usize) -> Vec<Event> {
    let mut all: Vec<Event> = answers.into_iter().flatten().collect();
    all.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    all.dedup_by(|a, b| a.node == b.node && a.seq == b.seq);
    let skip = all.len().saturating_sub(limit);
    all.drain(..skip);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(node: &str, seq: u64, time_ms: u64) -> Event {
        Event {
            time_ms,
            node: NodeId::new(node).unwrap(),
            seq,
            kind: EventKind::TaskStarted,
            subject: "t".into(),
            reason: String::new(),
        }
    }

    #[test]
    fn kinds_name_themselves_as_serde_does() {
        for k in EventKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert!(["task", "peer", "service"].contains(&k.topic()));
        }
        assert_eq!(EventKind::ContainerStarted.topic(), "service");
        assert_eq!(EventKind::PeerDead.topic(), "peer");
    }

    #[test]
    fn merge_orders_by_time_drops_duplicates_and_keeps_the_latest() {
        let a = vec![ev("n1", 1, 10), ev("n1", 2, 30)];
        let b = vec![ev("n2", 7, 20), ev("n2", 8, 40)];
        let dup = vec![ev("n1", 2, 30)];
        let merged = merge([a, b, dup], 3);
        let seen: Vec<(String, u64)> = merged.iter().map(|e| (e.node.to_string(), e.seq)).collect();
        assert_eq!(
            seen,
            vec![("n2".into(), 7), ("n1".into(), 2), ("n2".into(), 8)]
        );
    }

    #[test]
    fn cut_respects_character_boundaries() {
        assert_eq!(cut("héllo".into(), 2), "h");
        assert_eq!(cut("hello".into(), 10), "hello");
        assert_eq!(cut("hello".into(), 3), "hel");
    }
}
