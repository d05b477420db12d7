//! The allocator and placement together under random orders of events: a
//! mesh of nodes, each with its own `CoreAllocator`, and a stream of
//! submissions, finishes, node deaths, joins, drains and agent restarts
//! (which give every core back and re-take the running tasks' allocations,
//! as an agent re-adopts its containers). After every event:
//!
//! - no core is held by two tasks, and every running task holds exactly the
//!   cores it asked for, on exactly one node;
//! - no core is lost: a node's free cores are its total less what its tasks
//!   hold, and once every task has finished every core is free again;
//! - placement only ranks live, undrained nodes that fit the ask, and the
//!   node it ranks first (from an exact view) can always allocate it;
//! - a dead node's tasks are adopted by a live node, the same one whatever
//!   order the live set is listed in.

use std::collections::BTreeMap;

use mesh_protocol::alloc::AllocError;
use mesh_protocol::load::{Candidate, Load, TopologySummary};
use mesh_protocol::placement::{self, PlacementError};
use mesh_protocol::{CoreAllocator, CoreCount, NodeId, TaskId, Topology};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    /// Task `t` asks for `n` cores.
    Submit { t: u32, n: u32 },
    /// Task `t` ends (its cores come back).
    Finish { t: u32 },
    /// Node `i` (modulo the mesh's size) dies; its tasks are adopted.
    Die { i: usize },
    /// A node of this shape joins.
    Join { numa: u32, cores: u32 },
    /// Node `i` starts or stops draining.
    Drain { i: usize, on: bool },
    /// Node `i`'s agent restarts: every allocation is dropped, then the
    /// running tasks' allocations are taken back in another order.
    Restart { i: usize, rotate: usize },
}

/// Task ids the events draw from: `t0` to `t19`.
const TASKS: u32 = 20;

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (0..TASKS, 1u32..7).prop_map(|(t, n)| Event::Submit { t, n }),
        4 => (0..TASKS).prop_map(|t| Event::Finish { t }),
        1 => any::<usize>().prop_map(|i| Event::Die { i }),
        1 => (1u32..3, 1u32..5).prop_map(|(numa, cores)| Event::Join { numa, cores }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, on)| Event::Drain { i, on }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, rotate)| Event::Restart { i, rotate }),
    ]
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    alloc: CoreAllocator,
    alive: bool,
    draining: bool,
}

impl Node {
    /// The node as an exact gossip view shows it.
    fn candidate(&self, running: u32) -> Candidate {
        let topo = self.alloc.topology();
        let loads = self.alloc.load();
        Candidate {
            node: self.id.clone(),
            alive: self.alive,
            draining: self.draining,
            topology: TopologySummary {
                packages: topo.packages,
                cores_per_numa: loads.iter().map(|l| l.total).collect(),
                pus_per_core: 1,
            },
            load: Load {
                free_per_numa: loads.iter().map(|l| l.free).collect(),
                running,
                queued: 0,
                cpu_percent: 0,
            },
            images: Default::default(),
        }
    }
}

/// The mesh: its nodes and where each running task is (node index, cores
/// asked).
#[derive(Debug, Default)]
struct Mesh {
    nodes: Vec<Node>,
    running: BTreeMap<TaskId, (usize, u32)>,
}

fn task(t: u32) -> TaskId {
    TaskId::new(format!("t{t}")).expect("a valid task id")
}

fn cores(n: u32) -> CoreCount {
    CoreCount::new(n).expect("at least one core")
}

impl Mesh {
    fn join(&mut self, numa: u32, per: u32) {
        let id = NodeId::new(format!("n{}", self.nodes.len())).expect("a valid node id");
        self.nodes.push(Node {
            id,
            alloc: CoreAllocator::new(Topology::uniform(numa, per, 1)),
            alive: true,
            draining: false,
        });
    }

    fn view(&self) -> Vec<Candidate> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let running = self.running.values().filter(|(at, _)| *at == i).count();
                n.candidate(running as u32)
            })
            .collect()
    }

    /// Places `t` as an agent does: rank from the view, allocate on the
    /// first. The view is exact, so the first must accept.
    fn place(&mut self, t: &TaskId, n: u32) -> Result<(), TestCaseError> {
        let view = self.view();
        match placement::rank(t, cores(n), None, &view) {
            Ok(ranked) => {
                for id in &ranked {
                    let c = view
                        .iter()
                        .find(|c| &c.node == id)
                        .expect("ranked from the view");
                    prop_assert!(c.alive && !c.draining, "{id} ranked but dead or draining");
                    prop_assert!(c.load.free_cores() >= n, "{id} ranked without {n} free");
                }
                let i = self.index(&ranked[0]);
                let got = self.nodes[i].alloc.allocate(t, cores(n));
                prop_assert!(got.is_ok(), "{} ranked first refused: {:?}", ranked[0], got);
                self.running.insert(t.clone(), (i, n));
            }
            Err(PlacementError::Busy { .. }) => {
                for c in &view {
                    prop_assert!(
                        !c.alive || c.draining || c.load.free_cores() < n,
                        "busy, yet {} could take {n}",
                        c.node
                    );
                }
            }
            Err(PlacementError::NeverFits { largest, .. }) => prop_assert!(largest < n),
        }
        Ok(())
    }

    fn index(&self, id: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| &n.id == id)
            .expect("a known node")
    }

    fn apply(&mut self, event: Event) -> Result<(), TestCaseError> {
        match event {
            Event::Submit { t, n } => {
                let t = task(t);
                if !self.running.contains_key(&t) {
                    self.place(&t, n)?;
                }
            }
            Event::Finish { t } => {
                let t = task(t);
                if let Some((i, n)) = self.running.remove(&t) {
                    let back = self.nodes[i].alloc.release(&t);
                    prop_assert_eq!(back.map(|a| a.cores.len() as u32), Some(n));
                }
            }
            Event::Die { i } => {
                let i = i % self.nodes.len();
                self.nodes[i].alive = false;
                let orphans: Vec<(TaskId, u32)> = self
                    .running
                    .iter()
                    .filter(|(_, (at, _))| *at == i)
                    .map(|(t, (_, n))| (t.clone(), *n))
                    .collect();
                for (t, n) in orphans {
                    self.running.remove(&t);
                    self.nodes[i].alloc.release(&t);
                    let live: Vec<&NodeId> = self
                        .nodes
                        .iter()
                        .filter(|n| n.alive)
                        .map(|n| &n.id)
                        .collect();
                    let adopter = placement::adopter(&t, live.iter().copied());
                    let reversed = placement::adopter(&t, live.iter().rev().copied());
                    prop_assert_eq!(adopter, reversed);
                    if let Some(a) = adopter {
                        let a = self.index(a);
                        prop_assert!(self.nodes[a].alive);
                        // The adopter re-places it through placement.
                        self.place(&t, n)?;
                    } else {
                        prop_assert!(live.is_empty());
                    }
                }
            }
            Event::Join { numa, cores } => self.join(numa, cores),
            Event::Drain { i, on } => {
                let i = i % self.nodes.len();
                self.nodes[i].draining = on;
            }
            Event::Restart { i, rotate } => {
                let i = i % self.nodes.len();
                let mut held: Vec<(TaskId, mesh_protocol::Allocation)> = self
                    .running
                    .iter()
                    .filter(|(_, (at, _))| *at == i)
                    .map(|(t, _)| {
                        let a = self.nodes[i].alloc.allocation(t).expect("running holds");
                        (t.clone(), a.clone())
                    })
                    .collect();
                let topo = self.nodes[i].alloc.topology().clone();
                self.nodes[i].alloc = CoreAllocator::new(topo);
                if !held.is_empty() {
                    let k = rotate % held.len();
                    held.rotate_left(k);
                }
                for (t, a) in &held {
                    let took = self.nodes[i].alloc.take(t, a);
                    prop_assert!(took.is_ok(), "re-adopting {t}: {:?}", took);
                    // Taking it twice is refused, not double-booked.
                    prop_assert!(matches!(
                        self.nodes[i].alloc.take(t, a),
                        Err(AllocError::AlreadyHolds(_))
                    ));
                }
            }
        }
        self.check()
    }

    /// The invariants that hold after every event.
    fn check(&self) -> Result<(), TestCaseError> {
        for (i, node) in self.nodes.iter().enumerate() {
            let mut seen = std::collections::BTreeSet::new();
            let mut held = 0u32;
            for (t, (at, n)) in &self.running {
                let here = node.alloc.allocation(t);
                if *at != i {
                    prop_assert!(here.is_none(), "{t} held on {} and elsewhere", node.id);
                    continue;
                }
                let a = here.expect("a running task holds its cores");
                prop_assert_eq!(a.cores.len() as u32, *n);
                for c in &a.cores {
                    prop_assert!(seen.insert(*c), "core {c} of {} held twice", node.id);
                    prop_assert_eq!(node.alloc.holder(*c), Some(t));
                }
                held += n;
            }
            prop_assert_eq!(node.alloc.free_cores(), node.alloc.total_cores() - held);
            let free: u32 = node.alloc.load().iter().map(|l| l.free).sum();
            prop_assert_eq!(free, node.alloc.free_cores());
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_event_orders_keep_cores_exclusive_and_placement_sound(
        first in proptest::collection::vec((1u32..3, 1u32..5), 1..4),
        events in proptest::collection::vec(event(), 1..80),
    ) {
        let mut mesh = Mesh::default();
        for (numa, per) in first {
            mesh.join(numa, per);
        }
        for e in events {
            mesh.apply(e)?;
        }
        // Every task ends: every core of every node is free again.
        let all: Vec<TaskId> = mesh.running.keys().cloned().collect();
        for t in all {
            let (i, _) = mesh.running.remove(&t).expect("listed");
            prop_assert!(mesh.nodes[i].alloc.release(&t).is_some());
        }
        for node in &mesh.nodes {
            prop_assert_eq!(node.alloc.free_cores(), node.alloc.total_cores());
        }
    }
}
