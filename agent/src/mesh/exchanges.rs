//! The gossip replies this node waits for, per peer: a SynAck (or
//! BadCluster) answers a Syn it sent, an Ack answers a SynAck it sent, and
//! nothing else is a reply. chitchat takes any reply from anyone; these
//! are checked first. Bounded: a few replies per peer, a few thousand
//! peers, each wait ending after [`REPLY_WITHIN`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::gossip_check::Kind;

/// How long a sent Syn or SynAck waits for its reply.
pub const REPLY_WITHIN: Duration = Duration::from_secs(5);
/// Replies of one kind awaited from one peer at once; beyond, the oldest
/// wait is dropped.
pub const MAX_PENDING: usize = 8;
/// Peers tracked at once; beyond, the one whose waits end first is dropped.
pub const MAX_PEERS: usize = 4096;

/// Outstanding exchanges, by peer (the name its certificate proves).
#[derive(Debug, Default)]
pub struct Exchanges {
    peers: HashMap<String, Waits>,
}

/// When each awaited reply stops being awaited, oldest first.
#[derive(Debug, Default)]
struct Waits {
    syn_acks: VecDeque<Instant>,
    acks: VecDeque<Instant>,
}

impl Waits {
    fn queue(&mut self, reply: Kind) -> Option<&mut VecDeque<Instant>> {
        match reply {
            Kind::SynAck | Kind::BadCluster => Some(&mut self.syn_acks),
            Kind::Ack => Some(&mut self.acks),
            Kind::Syn => None,
        }
    }

    fn expire(&mut self, now: Instant) {
        for q in [&mut self.syn_acks, &mut self.acks] {
            while q.front().is_some_and(|&t| t <= now) {
                q.pop_front();
            }
        }
    }

    /// When its last wait ends (None when it awaits nothing).
    fn last(&self) -> Option<Instant> {
        self.syn_acks.back().max(self.acks.back()).copied()
    }
}

/// The reply a sent message awaits.
fn awaited(sent: Kind) -> Option<Kind> {
    match sent {
        Kind::Syn => Some(Kind::SynAck),
        Kind::SynAck => Some(Kind::Ack),
        Kind::Ack | Kind::BadCluster => None,
    }
}

impl Exchanges {
    /// Records that a message of kind `sent` went to `peer` at `now`.
    pub fn sent(&mut self, peer: &str, sent: Kind, now: Instant) {
        let Some(reply) = awaited(sent) else { return };
        if !self.peers.contains_key(peer) && self.peers.len() >= MAX_PEERS {
            self.make_room(now);
        }
        let waits = self.peers.entry(peer.to_owned()).or_default();
        if let Some(q) = waits.queue(reply) {
            if q.len() >= MAX_PENDING {
                q.pop_front();
            }
            q.push_back(now + REPLY_WITHIN);
        }
    }

    /// Whether a message of kind `kind` from `peer` is taken at `now`: a
    /// Syn always (it starts an exchange), a reply only in answer to one
    /// this node sent, which it then ends.
    pub fn take(&mut self, peer: &str, kind: Kind, now: Instant) -> bool {
        if kind == Kind::Syn {
            return true;
        }
        let Some(waits) = self.peers.get_mut(peer) else {
            return false;
        };
        waits.expire(now);
        let taken = waits.queue(kind).and_then(|q| q.pop_front()).is_some();
        if waits.last().is_none() {
            self.peers.remove(peer);
        }
        taken
    }

    /// Forgets what has expired, and if every peer still waits, the peer
    /// whose waits end first.
    fn make_room(&mut self, now: Instant) {
        self.peers.retain(|_, w| {
            w.expire(now);
            w.last().is_some()
        });
        if self.peers.len() < MAX_PEERS {
            return;
        }
        let first = self
            .peers
            .iter()
            .min_by_key(|(_, w)| w.last())
            .map(|(p, _)| p.clone());
        if let Some(p) = first {
            self.peers.remove(&p);
        }
    }

    /// Peers tracked (for tests).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_taken_only_once_and_only_for_what_was_sent() {
        let now = Instant::now();
        let mut x = Exchanges::default();
        assert!(x.take("a", Kind::Syn, now), "a Syn starts an exchange");
        for kind in [Kind::SynAck, Kind::Ack, Kind::BadCluster] {
            assert!(!x.take("a", kind, now), "a lone {kind:?}");
        }
        x.sent("a", Kind::Syn, now);
        assert!(!x.take("a", Kind::Ack, now), "an Ack does not answer a Syn");
        assert!(!x.take("b", Kind::SynAck, now), "another peer's answer");
        assert!(x.take("a", Kind::SynAck, now));
        assert!(!x.take("a", Kind::SynAck, now), "a second answer");
        x.sent("a", Kind::SynAck, now);
        assert!(!x.take("a", Kind::SynAck, now));
        assert!(x.take("a", Kind::Ack, now));
        x.sent("a", Kind::Syn, now);
        assert!(
            x.take("a", Kind::BadCluster, now),
            "BadCluster answers a Syn"
        );
        x.sent("a", Kind::Ack, now);
        x.sent("a", Kind::BadCluster, now);
        assert!(x.is_empty(), "Acks and BadClusters await nothing");
    }

    #[test]
    fn waits_expire_and_are_bounded() {
        let now = Instant::now();
        let mut x = Exchanges::default();
        x.sent("a", Kind::Syn, now);
        assert!(!x.take("a", Kind::SynAck, now + REPLY_WITHIN));
        assert!(x.is_empty(), "the expired wait is forgotten");
        for _ in 0..MAX_PENDING + 3 {
            x.sent("a", Kind::Syn, now);
        }
        let taken = (0..MAX_PENDING + 3)
            .filter(|_| x.take("a", Kind::SynAck, now))
            .count();
        assert_eq!(taken, MAX_PENDING);
        for i in 0..MAX_PEERS + 10 {
            x.sent(
                &format!("p{i}"),
                Kind::Syn,
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(x.len(), MAX_PEERS);
        assert!(
            !x.take("p0", Kind::SynAck, now),
            "the oldest peer made room"
        );
        let last = format!("p{}", MAX_PEERS + 9);
        assert!(x.take(&last, Kind::SynAck, now));
        x.sent("another", Kind::Syn, now);
        assert_eq!(x.len(), MAX_PEERS);
        // Once the others' waits ended, a new peer makes room by expiry.
        x.sent("new", Kind::Syn, now + REPLY_WITHIN * 3);
        assert_eq!(x.len(), 1);
    }
}
