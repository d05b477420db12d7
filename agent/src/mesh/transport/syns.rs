//! The SYNs this node sent lately, by hash: a peer's SYN-ACK comes coded
//! against the SYN it answers (`digest_codec::compact_answer`), and is
//! expanded against this node's copy of it.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use mesh_protocol::digest_codec::syn_hash;
use tokio::time::Instant;

use crate::mesh::exchanges::REPLY_WITHIN;

/// SYNs kept at most: 3 peers a round, 2 rounds a second at the default
/// interval, for the [`REPLY_WITHIN`] a reply is awaited (consecutive equal
/// SYNs are kept once). About 1.4 MB at 1,000 nodes.
const KEEP: usize = 32;

#[derive(Debug, Default)]
pub struct RecentSyns(Mutex<VecDeque<(u64, Instant, Bytes)>>);

impl RecentSyns {
    /// Keeps a SYN (chitchat's bytes) this node sends.
    pub fn sent(&self, syn: Bytes, now: Instant) {
        let hash = syn_hash(&syn);
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|(h, _, _)| *h != hash);
        while kept
            .front()
            .is_some_and(|(_, at, _)| now.duration_since(*at) > REPLY_WITHIN)
            || kept.len() >= KEEP
        {
            kept.pop_front();
        }
        kept.push_back((hash, now, syn));
    }

    /// The SYN with this hash, if this node sent it within [`REPLY_WITHIN`].
    pub fn get(&self, hash: u64, now: Instant) -> Option<Bytes> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter()
            .rev()
            .find(|(h, at, _)| *h == hash && now.duration_since(*at) <= REPLY_WITHIN)
            .map(|(_, _, syn)| syn.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_syn_is_found_by_its_hash_until_replies_are_no_longer_awaited() {
        let syns = RecentSyns::default();
        let t0 = Instant::now();
        let a = Bytes::from_static(b"syn a");
        syns.sent(a.clone(), t0);
        assert_eq!(syns.get(syn_hash(&a), t0), Some(a.clone()));
        assert_eq!(syns.get(syn_hash(b"syn b"), t0), None);
        assert_eq!(syns.get(syn_hash(&a), t0 + REPLY_WITHIN), Some(a.clone()));
        let late = t0 + REPLY_WITHIN + Duration::from_millis(1);
        assert_eq!(syns.get(syn_hash(&a), late), None);
    }

    #[test]
    fn at_most_keep_syns_are_kept_and_a_repeated_one_once() {
        let syns = RecentSyns::default();
        let t0 = Instant::now();
        for i in 0..(KEEP + 8) {
            syns.sent(Bytes::from(format!("syn {i}")), t0);
            syns.sent(Bytes::from(format!("syn {i}")), t0);
        }
        assert_eq!(syns.0.lock().unwrap().len(), KEEP);
        assert_eq!(syns.get(syn_hash(b"syn 0"), t0), None);
        let last = format!("syn {}", KEEP + 7);
        assert!(syns.get(syn_hash(last.as_bytes()), t0).is_some());
    }
}
