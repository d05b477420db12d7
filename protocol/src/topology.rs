//! The hardware model the allocator works on: NUMA nodes holding physical
//! cores holding processing units (PUs, hardware threads), each with its OS
//! index. Built by the agent from hwloc (the host, or a synthetic string).

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;

/// One physical core: a logical id unique on the host and its PUs' OS indices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Core {
    pub id: u32,
    pub pus: Vec<u32>,
}

/// One NUMA node and the cores local to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    pub os_index: u32,
    pub cores: Vec<Core>,
}

/// A host's topology. Every core belongs to exactly one NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Where it came from: `host` or the synthetic description.
    pub source: String,
    pub packages: u32,
    pub numa_nodes: Vec<NumaNode>,
}

impl Topology {
    /// A regular topology: `numa` nodes of `cores` cores of `pus` PUs, with
    /// PU OS indices numbered in order (as hwloc numbers synthetic ones).
    pub fn uniform(numa: u32, cores: u32, pus: u32) -> Self {
        let mut next_core = 0;
        let mut next_pu = 0;
        let numa_nodes = (0..numa)
            .map(|n| NumaNode {
                os_index: n,
                cores: (0..cores)
                    .map(|_| {
                        let core = Core {
                            id: next_core,
                            pus: (next_pu..next_pu + pus).collect(),
                        };
                        next_core += 1;
                        next_pu += pus;
                        core
                    })
                    .collect(),
            })
            .collect();
        Self {
            source: format!("numa:{numa} core:{cores} pu:{pus}"),
            packages: 1,
            numa_nodes,
        }
    }

    pub fn core_count(&self) -> usize {
        self.numa_nodes.iter().map(|n| n.cores.len()).sum()
    }

    pub fn pu_count(&self) -> usize {
        self.cores().map(|(_, c)| c.pus.len()).sum()
    }

    /// Every core with the OS index of its NUMA node.
    pub fn cores(&self) -> impl Iterator<Item = (u32, &Core)> {
        self.numa_nodes
            .iter()
            .flat_map(|n| n.cores.iter().map(move |c| (n.os_index, c)))
    }

    /// One line: `2 NUMA x 4 cores x 2 PUs (numa:2 core:4 pu:2)`.
    pub fn summary(&self) -> String {
        let per_numa: Vec<String> = self
            .numa_nodes
            .iter()
            .map(|n| n.cores.len().to_string())
            .collect();
        format!(
            "{} NUMA node(s), cores per node [{}], {} PUs ({})",
            self.numa_nodes.len(),
            per_numa.join(","),
            self.pu_count(),
            self.source
        )
    }
}

/// How a topology's OS indices map onto the host Docker really runs on.
///
/// For the host's own topology the mapping is the identity. For a synthetic
/// topology (tests, several agents on one host) each synthetic PU maps onto a
/// real allowed CPU and each synthetic NUMA node onto a real one, round-robin,
/// so containers start on a small host while the bookkeeping follows the
/// synthetic model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMapping {
    Identity,
    RoundRobin { cpus: Vec<u32>, mems: Vec<u32> },
}

impl HostMapping {
    /// Maps model PU and NUMA OS indices to host `cpuset_cpus`/`cpuset_mems`.
    pub fn map(&self, cpus: &CpuSet, mems: &CpuSet) -> (CpuSet, CpuSet) {
        match self {
            HostMapping::Identity => (cpus.clone(), mems.clone()),
            HostMapping::RoundRobin {
                cpus: host_cpus,
                mems: host_mems,
            } => (round_robin(cpus, host_cpus), round_robin(mems, host_mems)),
        }
    }
}

fn round_robin(model: &CpuSet, host: &[u32]) -> CpuSet {
    if host.is_empty() {
        return model.clone();
    }
    model
        .iter()
        .map(|i| host[i as usize % host.len()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_numbers_in_order() {
        let t = Topology::uniform(2, 2, 2);
        assert_eq!(t.core_count(), 4);
        assert_eq!(t.pu_count(), 8);
        assert_eq!(t.numa_nodes[1].cores[0].id, 2);
        assert_eq!(t.numa_nodes[1].cores[0].pus, vec![4, 5]);
    }

    #[test]
    fn round_robin_maps_onto_small_host() {
        let m = HostMapping::RoundRobin {
            cpus: vec![0, 1],
            mems: vec![0],
        };
        let cpus: CpuSet = [4, 5, 7].into_iter().collect();
        let mems: CpuSet = [1].into_iter().collect();
        let (c, n) = m.map(&cpus, &mems);
        assert_eq!(c.to_string(), "0-1");
        assert_eq!(n.to_string(), "0");
        assert_eq!(HostMapping::Identity.map(&cpus, &mems).0, cpus);
    }
}
