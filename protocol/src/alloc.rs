//! Exclusive core allocation on one host.
//!
//! A task gets whole physical cores (all their PUs), never shared with another
//! running task. All cores come from one NUMA node when one has room (the
//! tightest fit, to keep large holes for large asks); only when none has room
//! are they spread, taking from the nodes with the most free cores first.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
use crate::ids::TaskId;
use crate::resources::CoreCount;
use crate::topology::Topology;

/// Cores handed to one task, with the cpusets to give Docker (model indices;
/// see `HostMapping` for the host's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Logical core ids, ascending.
    pub cores: Vec<u32>,
    /// OS indices of the PUs of those cores.
    pub cpus: CpuSet,
    /// OS indices of the NUMA nodes those cores sit in.
    pub mems: CpuSet,
}

impl Allocation {
    pub fn single_numa(&self) -> bool {
        self.mems.len() == 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{asked} cores asked but this host has only {total}")]
    NeverFits { asked: u32, total: u32 },
    #[error("{asked} cores asked, {free} free now")]
    Busy { asked: u32, free: u32 },
    #[error("task {0} already holds cores")]
    AlreadyHolds(TaskId),
    #[error("core {core} of task {task} is already held by {holder}")]
    Conflict {
        core: u32,
        task: TaskId,
        holder: TaskId,
    },
    #[error("core {0} does not exist on this host")]
    UnknownCore(u32),
}

/// Free cores of one NUMA node, for views and gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaLoad {
    pub numa: u32,
    pub total: u32,
    pub free: u32,
}

/// Who holds which core. The single source of truth for a host's cores.
#[derive(Debug, Clone)]
pub struct CoreAllocator {
    topology: Topology,
    /// core id -> (numa os index, PUs)
    cores: BTreeMap<u32, (u32, Vec<u32>)>,
    held: BTreeMap<u32, TaskId>,
    by_task: BTreeMap<TaskId, Allocation>,
}

impl CoreAllocator {
    pub fn new(topology: Topology) -> Self {
        let cores = topology
            .cores()
            .map(|(numa, c)| (c.id, (numa, c.pus.clone())))
            .collect();
        Self {
            topology,
            cores,
            held: BTreeMap::new(),
            by_task: BTreeMap::new(),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn total_cores(&self) -> u32 {
        self.cores.len() as u32
    }

    pub fn free_cores(&self) -> u32 {
        self.total_cores() - self.held.len() as u32
    }

    /// Whether `asked` could ever fit on this host (all cores free).
    pub fn can_ever_fit(&self, asked: CoreCount) -> Result<(), AllocError> {
        if asked.get() > self.total_cores() {
            return Err(AllocError::NeverFits {
                asked: asked.get(),
                total: self.total_cores(),
            });
        }
        Ok(())
    }

    /// Chooses cores for `asked` without taking them.
    pub fn plan(&self, asked: CoreCount) -> Result<Allocation, AllocError> {
        self.can_ever_fit(asked)?;
        let n = asked.get() as usize;
        let free_by_numa: Vec<(u32, Vec<u32>)> = self
            .topology
            .numa_nodes
            .iter()
            .map(|node| {
                let free = node
                    .cores
                    .iter()
                    .map(|c| c.id)
                    .filter(|id| !self.held.contains_key(id))
                    .collect();
                (node.os_index, free)
            })
            .collect();
        let total_free: usize = free_by_numa.iter().map(|(_, f)| f.len()).sum();
        if total_free < n {
            return Err(AllocError::Busy {
                asked: asked.get(),
                free: total_free as u32,
            });
        }
        // Tightest single node that fits; ties go to the lowest index.
        let single = free_by_numa
            .iter()
            .filter(|(_, free)| free.len() >= n)
            .min_by_key(|(numa, free)| (free.len(), *numa));
        let chosen: Vec<u32> = match single {
            Some((_, free)) => free[..n].to_vec(),
            None => {
                let mut nodes: Vec<&(u32, Vec<u32>)> = free_by_numa.iter().collect();
                nodes.sort_by_key(|(numa, free)| (std::cmp::Reverse(free.len()), *numa));
                nodes
                    .iter()
                    .flat_map(|(_, free)| free.iter().copied())
                    .take(n)
                    .collect()
            }
        };
        Ok(self.allocation_of(chosen))
    }

    fn allocation_of(&self, mut cores: Vec<u32>) -> Allocation {
        cores.sort_unstable();
        let mut cpus = CpuSet::new();
        let mut mems = CpuSet::new();
        for id in &cores {
            if let Some((numa, pus)) = self.cores.get(id) {
                mems.insert(*numa);
                for pu in pus {
                    cpus.insert(*pu);
                }
            }
        }
        Allocation { cores, cpus, mems }
    }

    /// Plans and takes cores for `task`.
    pub fn allocate(&mut self, task: &TaskId, asked: CoreCount) -> Result<Allocation, AllocError> {
        if self.by_task.contains_key(task) {
            return Err(AllocError::AlreadyHolds(task.clone()));
        }
        let allocation = self.plan(asked)?;
        self.take(task, &allocation)?;
        Ok(allocation)
    }

    /// Takes a known allocation (a restart re-adopting a running container).
    /// Refuses if any core is unknown or held by someone else.
    pub fn take(&mut self, task: &TaskId, allocation: &Allocation) -> Result<(), AllocError> {
        if self.by_task.contains_key(task) {
            return Err(AllocError::AlreadyHolds(task.clone()));
        }
        for core in &allocation.cores {
            if !self.cores.contains_key(core) {
                return Err(AllocError::UnknownCore(*core));
            }
            if let Some(holder) = self.held.get(core) {
                return Err(AllocError::Conflict {
                    core: *core,
                    task: task.clone(),
                    holder: holder.clone(),
                });
            }
        }
        let unique: BTreeSet<u32> = allocation.cores.iter().copied().collect();
        if unique.len() != allocation.cores.len() {
            return Err(AllocError::Conflict {
                core: allocation.cores[0],
                task: task.clone(),
                holder: task.clone(),
            });
        }
        for core in &allocation.cores {
            self.held.insert(*core, task.clone());
        }
        self.by_task.insert(task.clone(), allocation.clone());
        Ok(())
    }

    /// Gives back `task`'s cores. Returns what it held, if anything.
    pub fn release(&mut self, task: &TaskId) -> Option<Allocation> {
        let allocation = self.by_task.remove(task)?;
        for core in &allocation.cores {
            self.held.remove(core);
        }
        Some(allocation)
    }

    /// Every holder and its cores.
    pub fn holdings(&self) -> &BTreeMap<TaskId, Allocation> {
        &self.by_task
    }

    pub fn holder(&self, core: u32) -> Option<&TaskId> {
        self.held.get(&core)
    }

    pub fn allocation(&self, task: &TaskId) -> Option<&Allocation> {
        self.by_task.get(task)
    }

    pub fn load(&self) -> Vec<NumaLoad> {
        self.topology
            .numa_nodes
            .iter()
            .map(|n| NumaLoad {
                numa: n.os_index,
                total: n.cores.len() as u32,
                free: n
                    .cores
                    .iter()
                    .filter(|c| !self.held.contains_key(&c.id))
                    .count() as u32,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u32) -> TaskId {
        TaskId::new(format!("t{n}")).unwrap()
    }

    fn cores(n: u32) -> CoreCount {
        CoreCount::new(n).unwrap()
    }

    #[test]
    fn prefers_one_numa_node_and_binds_memory() {
        let mut a = CoreAllocator::new(Topology::uniform(2, 4, 2));
        let x = a.allocate(&id(1), cores(2)).unwrap();
        assert_eq!(x.cores, vec![0, 1]);
        assert_eq!(x.cpus.to_string(), "0-3");
        assert_eq!(x.mems.to_string(), "0");
        // 3 cores: node 0 has 2 free, node 1 has 4: node 1 is the only fit.
        let y = a.allocate(&id(2), cores(3)).unwrap();
        assert_eq!(y.mems.to_string(), "1");
        // 2 cores: node 0 (2 free) is tighter than node 1 (1 free: no fit).
        let z = a.allocate(&id(3), cores(2)).unwrap();
        assert_eq!(z.mems.to_string(), "0");
    }

    #[test]
    fn spreads_only_when_no_node_fits() {
        let mut a = CoreAllocator::new(Topology::uniform(2, 4, 1));
        a.allocate(&id(1), cores(2)).unwrap();
        let big = a.allocate(&id(2), cores(5)).unwrap();
        assert!(!big.single_numa());
        assert_eq!(big.cores.len(), 5);
        assert_eq!(a.free_cores(), 1);
    }

    #[test]
    fn busy_and_never_fits() {
        let mut a = CoreAllocator::new(Topology::uniform(1, 2, 1));
        assert_eq!(
            a.plan(cores(3)),
            Err(AllocError::NeverFits { asked: 3, total: 2 })
        );
        a.allocate(&id(1), cores(2)).unwrap();
        assert_eq!(
            a.plan(cores(1)),
            Err(AllocError::Busy { asked: 1, free: 0 })
        );
        assert!(a.release(&id(1)).is_some());
        assert!(a.allocate(&id(2), cores(2)).is_ok());
    }

    #[test]
    fn take_refuses_conflicts() {
        let mut a = CoreAllocator::new(Topology::uniform(1, 4, 1));
        let x = a.allocate(&id(1), cores(2)).unwrap();
        assert!(matches!(
            a.take(&id(2), &x),
            Err(AllocError::Conflict { .. })
        ));
        assert!(matches!(
            a.take(&id(1), &x),
            Err(AllocError::AlreadyHolds(_))
        ));
        let bogus = Allocation {
            cores: vec![99],
            cpus: CpuSet::new(),
            mems: CpuSet::new(),
        };
        assert_eq!(a.take(&id(3), &bogus), Err(AllocError::UnknownCore(99)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u32, u32),
        Release(u32),
    }

    /// Task ids the operations draw from: `t0` to `t11`.
    const TASKS: u32 = 12;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..TASKS, 1u32..6).prop_map(|(t, n)| Op::Alloc(t, n)),
            (0..TASKS).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// No core is ever held by two tasks, every allocation has exactly
        /// the cores asked for, cores come back on release, and a single
        /// NUMA node is used whenever one had room.
        #[test]
        fn never_double_books(
            numa in 1u32..4, per in 1u32..5, pus in 1u32..3,
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let topo = Topology::uniform(numa, per, pus);
            let mut a = CoreAllocator::new(topo.clone());
            for op in ops {
                match op {
                    Op::Alloc(t, n) => {
                        let fit_one = a.load().iter().any(|l| l.free >= n);
                        match a.allocate(&id(t), cores(n)) {
                            Ok(x) => {
                                prop_assert_eq!(x.cores.len() as u32, n);
                                prop_assert_eq!(x.cpus.len() as u32, n * pus);
                                if fit_one { prop_assert!(x.single_numa()); }
                            }
                            Err(AllocError::AlreadyHolds(_)) => {}
                            Err(AllocError::Busy { free, .. }) => prop_assert!(free < n),
                            Err(AllocError::NeverFits { total, .. }) => prop_assert!(total < n),
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Op::Release(t) => { a.release(&id(t)); }
                }
                let mut seen = std::collections::BTreeSet::new();
                let mut held = 0;
                for x in (0..TASKS).filter_map(|t| a.allocation(&id(t))) {
                    for c in &x.cores { prop_assert!(seen.insert(*c), "core {} twice", c); }
                    prop_assert!(seen.len() <= topo.core_count());
                    held += x.cores.len() as u32;
                }
                prop_assert_eq!(a.free_cores(), a.total_cores() - held);
            }
        }
    }
}
