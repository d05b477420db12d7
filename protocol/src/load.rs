//! What a node reports about its capacity and use -- its shape
//! (`TopologySummary`), its cores in use (`Load`), its services' figures
//! (`ServiceLoad`) -- and `Candidate`, one node as a gossip view shows it
//! (with its `image::ImageSummary`).
//! The gossip schema publishes these; placement and service routing rank
//! nodes by them. They live here, below all three, so that none of those
//! modules imports another to get them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::image::ImageSummary;

/// A node's shape as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologySummary {
    pub packages: u32,
    pub cores_per_numa: Vec<u32>,
    pub pus_per_core: u32,
}

impl TopologySummary {
    /// Its cores (saturating: the figures are a peer's word).
    pub fn total_cores(&self) -> u32 {
        saturating_sum(&self.cores_per_numa)
    }
}

/// The sum of figures a peer published, at most `u32::MAX` (a plain sum
/// would panic in a debug build, and wrap in a release one).
fn saturating_sum(v: &[u32]) -> u32 {
    v.iter().fold(0, |a, &b| a.saturating_add(b))
}

/// A node's load, refreshed every gossip interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub free_per_numa: Vec<u32>,
    pub running: u32,
    pub queued: u32,
    /// Host CPU use over the last interval, 0..=100.
    pub cpu_percent: u32,
}

/// One node's figures for one service, as gossiped under `svc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLoad {
    /// Containers of the service on the node (busy, warm or pool instances).
    pub containers: u32,
    /// Per-connection: started, ready and unused. Pool: ready instances.
    pub ready: u32,
    /// Connections open to the node's containers.
    pub conns: u32,
    /// Connections waiting at the node for a container.
    pub queued: u32,
}

/// One node as the gossip view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub alive: bool,
    pub draining: bool,
    pub topology: TopologySummary,
    pub load: Load,
    /// The images it holds and its pulls under way (empty if unknown).
    pub images: ImageSummary,
}

impl Candidate {
    pub(crate) fn total(&self) -> u32 {
        self.topology.total_cores()
    }

    /// Share of cores allocated, in parts per million (integer: no float
    /// ordering surprises).
    pub fn utilisation_ppm(&self) -> u64 {
        let total = u64::from(self.total().max(1));
        let used = u64::from(self.total().saturating_sub(self.load.free_cores()));
        used * 1_000_000 / total
    }

    pub(crate) fn fits_one_numa(&self, cores: u32) -> bool {
        self.load.free_per_numa.iter().any(|&f| f >= cores)
    }

    pub(crate) fn fits_spread(&self, cores: u32) -> bool {
        self.load.free_cores() >= cores
    }

    /// Its running tasks, a pull under way counting as one more.
    pub fn busy(&self) -> u32 {
        self.load.running.saturating_add(self.images.pulling)
    }
}

fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn parse_list(s: &str) -> Option<Vec<u32>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|x| x.parse().ok()).collect()
}

impl fmt::Display for TopologySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};{};{}",
            self.packages,
            list(&self.cores_per_numa),
            self.pus_per_core
        )
    }
}

impl TopologySummary {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(';');
        let packages = parts.next()?.parse().ok()?;
        let cores_per_numa = parse_list(parts.next()?)?;
        let pus_per_core = parts.next()?.parse().ok()?;
        if parts.next().is_some() || cores_per_numa.len() > 1024 {
            return None;
        }
        Some(Self {
            packages,
            cores_per_numa,
            pus_per_core,
        })
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};{};{};{}",
            list(&self.free_per_numa),
            self.running,
            self.queued,
            self.cpu_percent
        )
    }
}

impl Load {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(';');
        let free_per_numa = parse_list(parts.next()?)?;
        let running = parts.next()?.parse().ok()?;
        let queued = parts.next()?.parse().ok()?;
        let cpu_percent: u32 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || cpu_percent > 100 || free_per_numa.len() > 1024 {
            return None;
        }
        Some(Self {
            free_per_numa,
            running,
            queued,
            cpu_percent,
        })
    }

    /// Its free cores (saturating: the figures are a peer's word).
    pub fn free_cores(&self) -> u32 {
        saturating_sum(&self.free_per_numa)
    }
}

/// Encodes every service's load for the `svc` gossip key:
/// `name:containers:ready:conns:queued` joined by `;`.
pub fn encode_loads(loads: &BTreeMap<String, ServiceLoad>) -> String {
    loads
        .iter()
        .map(|(n, l)| format!("{n}:{}:{}:{}:{}", l.containers, l.ready, l.conns, l.queued))
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses the `svc` gossip value; `None` if any entry is malformed.
pub fn decode_loads(s: &str) -> Option<BTreeMap<String, ServiceLoad>> {
    if s.is_empty() {
        return Some(BTreeMap::new());
    }
    s.split(';')
        .map(|entry| {
            let mut p = entry.split(':');
            let name = p.next()?.to_owned();
            let mut num = || p.next()?.parse::<u32>().ok();
            let load = ServiceLoad {
                containers: num()?,
                ready: num()?,
                conns: num()?,
                queued: num()?,
            };
            (!name.is_empty()).then_some((name, load))
        })
        .collect()
}

/// 64-bit FNV-1a: stable across builds and platforms, so every node
/// computes the same ranking from the same inputs.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn loads_round_trip_and_garbage_is_refused() {
        let loads = BTreeMap::from([
            (
                "echo".to_string(),
                ServiceLoad {
                    containers: 3,
                    ready: 1,
                    conns: 2,
                    queued: 0,
                },
            ),
            ("web".to_string(), ServiceLoad::default()),
        ]);
        assert_eq!(decode_loads(&encode_loads(&loads)), Some(loads));
        assert_eq!(decode_loads(""), Some(BTreeMap::new()));
        assert_eq!(decode_loads("echo:1:2"), None);
        assert_eq!(decode_loads("echo:x:1:1:1"), None);
    }

    #[test]
    fn sums_of_a_peers_figures_saturate() {
        let topo = TopologySummary::parse("1;4294967295,4294967295,1;1").unwrap();
        assert_eq!(topo.total_cores(), u32::MAX);
        let load = Load::parse("4294967295,4294967295;1;0;0").unwrap();
        assert_eq!(load.free_cores(), u32::MAX);
        let c = Candidate {
            node: NodeId::new("n").unwrap(),
            alive: true,
            draining: false,
            topology: topo,
            load,
            images: ImageSummary::default(),
        };
        assert_eq!(c.utilisation_ppm(), 0);
        assert!(c.fits_spread(u32::MAX) && c.fits_one_numa(u32::MAX));
        let loads = decode_loads("a:4294967295:4294967295:4294967295:4294967295").unwrap();
        assert_eq!(loads["a"].conns, u32::MAX);
    }

    proptest! {
        #[test]
        fn figures_never_panic(free in proptest::collection::vec(any::<u32>(), 0..8),
                               cores in proptest::collection::vec(any::<u32>(), 0..8)) {
            let c = Candidate {
                node: NodeId::new("n").unwrap(),
                alive: true,
                draining: false,
                topology: TopologySummary { packages: 1, cores_per_numa: cores, pus_per_core: 1 },
                load: Load { free_per_numa: free, ..Load::default() },
                images: ImageSummary::default(),
            };
            prop_assert!(c.utilisation_ppm() <= 1_000_000);
            let _ = (c.total(), c.load.free_cores(), c.fits_spread(1), c.fits_one_numa(1));
        }

        #[test]
        fn garbage_never_panics(s in ".{0,40}") {
            let _ = Load::parse(&s);
            let _ = TopologySummary::parse(&s);
            let _ = decode_loads(&s);
        }
    }
}
