//! Caps on the client connections this agent holds open, across all its
//! services: `--max-connections` in all and `--max-connections-per-source`
//! from one client address (as xinetd's `per_source`). The accept loops
//! ask before serving a connection; a refused one is closed cleanly and
//! counted `refused`. The decision is pure (`decide`); `Admission` keeps
//! the counts (a lock held for a map update, never across a wait) and
//! `Permit` gives a connection's place back when it drops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The caps (both at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub total: u32,
    pub per_source: u32,
}

/// The defaults: room for many clients, but not for one client to take
/// them all.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
pub const DEFAULT_MAX_PER_SOURCE: u32 = 1_000;

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            total: DEFAULT_MAX_CONNECTIONS,
            per_source: DEFAULT_MAX_PER_SOURCE,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this agent holds --max-connections {0} client connections")]
    Total(u32),
    #[error("this client address holds --max-connections-per-source {0} connections")]
    PerSource(u32),
}

/// Whether one more connection fits, given how many are open in all and
/// from its source.
pub fn decide(open: u32, from_source: u32, limits: ConnLimits) -> Result<(), Refusal> {
    if open >= limits.total {
        Err(Refusal::Total(limits.total))
    } else if from_source >= limits.per_source {
        Err(Refusal::PerSource(limits.per_source))
    } else {
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: u32,
    by_source: HashMap<IpAddr, u32>,
}

/// The open client connections of this agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: ConnLimits,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; its place is given back on drop.
#[derive(Debug)]
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    source: IpAddr,
}

impl Admission {
    pub fn new(limits: ConnLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// Admits a connection from `source`, or says which cap it meets.
    pub fn admit(&self, source: IpAddr) -> Result<Permit, Refusal> {
        // An IPv4 client on a dual-stack socket is the same client.
        let source = source.to_canonical();
        let mut c = lock(&self.counts);
        let from_source = c.by_source.get(&source).copied().unwrap_or(0);
        decide(c.open, from_source, self.limits)?;
        c.open += 1;
        *c.by_source.entry(source).or_default() += 1;
        Ok(Permit {
            counts: self.counts.clone(),
            source,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        lock(&self.counts).open
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.open = c.open.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The counts stay consistent at every step: a panic elsewhere while
    // holding the lock cannot leave them half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnLimits = ConnLimits {
        total: 3,
        per_source: 2,
    };

    #[test]
    fn the_caps_refuse_beyond_them_and_give_places_back() {
        assert_eq!(decide(3, 0, LIMITS), Err(Refusal::Total(3)));
        assert_eq!(decide(2, 2, LIMITS), Err(Refusal::PerSource(2)));
        assert_eq!(decide(2, 1, LIMITS), Ok(()));

        let a = Admission::new(LIMITS);
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let x1 = a.admit(x).unwrap();
        // The same client over IPv6-mapped IPv4 counts as the same source.
        let x2 = a.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refusal::PerSource(2));
        let y1 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).unwrap_err(), Refusal::Total(3));
        drop(x1);
        let y2 = a.admit(y).unwrap();
        assert_eq!(a.open(), 3);
        drop((x2, y1, y2));
        assert_eq!(a.open(), 0);
        assert!(lock(&a.counts).by_source.is_empty(), "nothing left behind");
    }
}
