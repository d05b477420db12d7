//! Which incoming QUIC connection attempts get a handshake slot.
//!
//! A handshake costs the accepting node state and CPU until it completes or
//! times out, so the slots are bounded (in total and per source), and only
//! sources that proved they receive packets at their address get one: an
//! attempt from an address QUIC has not validated is answered with a
//! stateless Retry (RFC 9000 §8.1), which a real peer's QUIC stack follows
//! within one round trip and a spoofed source never sees. Without that, a
//! few dozen spoofed Initials a second held every slot and no peer could
//! join, restart or reconnect.
//!
//! The decision is pure ([`decide`]); [`Slots`] counts the handshakes in
//! progress and hands out a guard that frees its slot when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Handshakes in progress at once, from all sources.
pub const MAX_HANDSHAKES: usize = 64;
/// Handshakes in progress at once from one source (an IPv4 address, or an
/// IPv6 /64). A node dials another once per address, so a handful covers
/// restarts and both sides dialling at once; the rest of the slots stay
/// for everyone else.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 8;

/// What to do with one incoming connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Start the handshake.
    Accept,
    /// Answer with a stateless Retry: the source has not shown it receives
    /// packets at its address.
    Retry,
    /// Refuse: all slots are taken.
    Full,
    /// Refuse: this source holds its share of the slots.
    SourceFull,
}

/// The limits [`decide`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total: MAX_HANDSHAKES,
            per_source: MAX_HANDSHAKES_PER_SOURCE,
        }
    }
}

/// Decides on one attempt: `validated` says whether QUIC has validated the
/// source address (a Retry token came back), `in_progress` and
/// `from_source` how many handshakes run now in total and from its source.
pub fn decide(validated: bool, in_progress: usize, from_source: usize, limits: Limits) -> Admit {
    if !validated {
        Admit::Retry
    } else if in_progress >= limits.total {
        Admit::Full
    } else if from_source >= limits.per_source {
        Admit::SourceFull
    } else {
        Admit::Accept
    }
}

/// The source an address counts against: an IPv4 address, or an IPv6
/// address's /64 (one host usually holds a whole /64).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The handshakes in progress, by source.
#[derive(Debug, Default)]
pub struct Slots {
    limits: Limits,
    inner: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A taken slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    source: IpAddr,
    inner: Arc<Mutex<Counts>>,
}

impl Slots {
    pub fn new(limits: Limits) -> Self {
        Slots {
            limits,
            inner: Arc::default(),
        }
    }

    /// Decides on an attempt from `ip`, taking a slot if it is accepted.
    pub fn admit(&self, validated: bool, ip: IpAddr) -> Result<Slot, Admit> {
        let source = source_of(ip);
        let mut counts = lock(&self.inner);
        let from_source = counts.by_source.get(&source).copied().unwrap_or(0);
        match decide(validated, counts.total, from_source, self.limits) {
            Admit::Accept => {
                counts.total += 1;
                *counts.by_source.entry(source).or_insert(0) += 1;
                Ok(Slot {
                    source,
                    inner: self.inner.clone(),
                })
            }
            other => Err(other),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_source.remove(&self.source);
            }
        }
    }
}

fn lock(m: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // Poisoning only follows a panic elsewhere; the counts stay whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        total: 3,
        per_source: 2,
    };

    #[test]
    fn unvalidated_sources_are_retried_whatever_the_load() {
        assert_eq!(decide(false, 0, 0, L), Admit::Retry);
        assert_eq!(decide(false, 3, 2, L), Admit::Retry);
        assert_eq!(decide(true, 0, 0, L), Admit::Accept);
    }

    #[test]
    fn slots_are_bounded_in_total_and_per_source() {
        let slots = Slots::new(L);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = slots.admit(true, a).unwrap();
        let _a2 = slots.admit(true, a).unwrap();
        assert_eq!(slots.admit(true, a).unwrap_err(), Admit::SourceFull);
        let _b1 = slots.admit(true, b).unwrap();
        assert_eq!(slots.admit(true, b).unwrap_err(), Admit::Full);
        drop(a1);
        let _a3 = slots.admit(true, a).unwrap();
        assert_eq!(slots.admit(false, b).unwrap_err(), Admit::Retry);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let x: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        assert_eq!(source_of(x), source_of(y));
        assert_ne!(source_of(x), source_of(z));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_of(mapped), IpAddr::from([10, 0, 0, 1]));
    }
}
