//! Placement decisions per second over a 1000-node gossip view: `rank` for
//! asks of 1, 4 and 16 cores, and `adopter` over 1000 live nodes.
//! `cargo bench -p mesh-protocol --bench placement`; results in
//! docs/benchmarks.md. Throughput is one decision per iteration, so
//! criterion's `elem/s` is decisions per second.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mesh_protocol::load::{Candidate, Load, TopologySummary};
use mesh_protocol::placement::{adopter, rank};
use mesh_protocol::{CoreCount, NodeId, TaskId};

const NODES: usize = 1000;
/// Distinct task ids the iterations cycle through: the tie-break hashes the
/// task id, so one fixed id would not be a fair sample.
const TASKS: usize = 256;

/// A fixed xorshift stream: the same view on every run, no RNG crate.
struct Stream(u64);

impl Stream {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u32
    }
}

/// 1000 nodes of 2 NUMA nodes of 4, 8 or 16 cores, each NUMA node anywhere
/// from full to empty, 0-40 running containers; about 3% dead and 2%
/// draining, as a large mesh's view would show.
fn view() -> Vec<Candidate> {
    let mut rng = Stream(0x9e37_79b9_7f4a_7c15);
    (0..NODES)
        .map(|i| {
            let per_numa = [4, 8, 16][rng.below(3) as usize];
            let free_per_numa = vec![rng.below(per_numa + 1), rng.below(per_numa + 1)];
            Candidate {
                node: NodeId::new(format!("node-{i:04}")).expect("a valid node id"),
                alive: rng.below(100) >= 3,
                draining: rng.below(100) < 2,
                topology: TopologySummary {
                    packages: 1,
                    cores_per_numa: vec![per_numa; 2],
                    pus_per_core: 2,
                },
                load: Load {
                    free_per_numa,
                    running: rng.below(41),
                    queued: 0,
                    cpu_percent: rng.below(101),
                },
            }
        })
        .collect()
}

fn task_ids() -> Vec<TaskId> {
    (0..TASKS as u64)
        .map(|i| TaskId::generate(1_800_000_000_000 + i, i.wrapping_mul(0x2545_f491)))
        .collect()
}

fn placement(c: &mut Criterion) {
    let view = view();
    let tasks = task_ids();
    let live: Vec<NodeId> = view
        .iter()
        .filter(|c| c.alive)
        .map(|c| c.node.clone())
        .collect();
    let mut group = c.benchmark_group("placement");
    group.throughput(Throughput::Elements(1));
    for asked in [1, 4, 16] {
        let cores = CoreCount::new(asked).expect("1, 4 and 16 are valid core counts");
        group.bench_with_input(
            BenchmarkId::new("rank_1000_nodes_cores", asked),
            &cores,
            |b, &cores| {
                let mut next = tasks.iter().cycle();
                b.iter(|| {
                    let task = next.next().expect("cycle over a non-empty list");
                    // Some asks may find no room; either answer is a decision.
                    black_box(rank(black_box(task), cores, black_box(&view))).ok()
                });
            },
        );
    }
    group.bench_function(BenchmarkId::new("adopter_live_nodes", live.len()), |b| {
        let mut next = tasks.iter().cycle();
        b.iter(|| {
            let task = next.next().expect("cycle over a non-empty list");
            black_box(adopter(black_box(task), black_box(&live)))
        });
    });
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
