//! Placement decisions per second over a 1000-node gossip view: `rank` for
//! asks of 1, 4 and 16 cores, without and with the image it names looked up
//! in every node's image filter (`rank_1000_nodes_image_cores`), `adopter`
//! over 1000 live nodes, and reading the view's gossip values
//! (`NodeInfo::from_lookup` for every node, as each placement does) without
//! and with the `img` key. `cargo bench -p mesh-protocol --bench placement`;
//! results in docs/benchmarks.md. Throughput is one decision (or one view
//! read) per iteration, so criterion's `elem/s` is decisions per second.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mesh_protocol::gossip::{NodeInfo, keys};
use mesh_protocol::image::{ImageSummary, ListedImage, Wanted};
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

/// Images in the mesh: every node holds a sample of these.
const CATALOGUE: u32 = 1000;

/// Image `j` of the catalogue as Docker lists it: an id, a tag, a digest.
fn image(j: u32) -> ListedImage {
    ListedImage {
        id: format!("sha256:{j:064x}"),
        repo_tags: vec![format!("registry.example/team/app{j}:1")],
        repo_digests: vec![format!(
            "registry.example/team/app{j}@sha256:{:064x}",
            j + CATALOGUE
        )],
    }
}

/// 1000 nodes of 2 NUMA nodes of 4, 8 or 16 cores, each NUMA node anywhere
/// from full to empty, 0-40 running containers, 0-2 pulls under way,
/// holding 20-300 images of the catalogue (the first 20 of it, the popular
/// ones, more often: a node holds each of them with odds 1 in 2); about 3%
/// dead and 2% draining, as a large mesh's view would show.
fn view() -> Vec<Candidate> {
    let mut rng = Stream(0x9e37_79b9_7f4a_7c15);
    (0..NODES)
        .map(|i| {
            let per_numa = [4, 8, 16][rng.below(3) as usize];
            let free_per_numa = vec![rng.below(per_numa + 1), rng.below(per_numa + 1)];
            let count = 20 + rng.below(281);
            let popular: Vec<u32> = (0..20).filter(|_| rng.below(2) == 0).collect();
            let others: Vec<u32> = (0..count).map(|_| 20 + rng.below(CATALOGUE - 20)).collect();
            let held: Vec<ListedImage> = popular.into_iter().chain(others).map(image).collect();
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
                images: ImageSummary::of(&held, rng.below(3)),
            }
        })
        .collect()
}

fn task_ids() -> Vec<TaskId> {
    (0..TASKS as u64)
        .map(|i| TaskId::generate(1_800_000_000_000 + i, i.wrapping_mul(0x2545_f491)))
        .collect()
}

/// Each node's gossip values, as `NodeInfo::to_pairs` publishes them.
fn published(view: &[Candidate]) -> Vec<Vec<(String, String)>> {
    view.iter()
        .enumerate()
        .map(|(i, c)| {
            NodeInfo {
                quic: format!("10.0.{}.{}:7946", i / 250, i % 250 + 1)
                    .parse()
                    .expect("a valid address"),
                api: format!("10.0.{}.{}:7700", i / 250, i % 250 + 1)
                    .parse()
                    .expect("a valid address"),
                version: "0.1.0".into(),
                topology: c.topology.clone(),
                load: c.load.clone(),
                draining: c.draining,
                services: Default::default(),
                images: c.images.clone(),
                service_images: Default::default(),
            }
            .to_pairs()
        })
        .collect()
}

/// Reads every node's values as the agent does for each placement.
fn read_view(nodes: &[Vec<(String, String)>]) -> usize {
    nodes
        .iter()
        .filter_map(|pairs| {
            NodeInfo::from_lookup(|k| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            })
            .ok()
        })
        .count()
}

fn placement(c: &mut Criterion) {
    let view = view();
    let tasks = task_ids();
    // The popular images, asked in turn with the task ids.
    let wanted: Vec<Wanted> = (0..20)
        .map(|j| Wanted::of(&image(j).repo_tags[0]).expect("a valid image name"))
        .collect();
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
                    black_box(rank(black_box(task), cores, None, black_box(&view))).ok()
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("rank_1000_nodes_image_cores", asked),
            &cores,
            |b, &cores| {
                let mut next = tasks.iter().zip(wanted.iter().cycle()).cycle();
                b.iter(|| {
                    let (task, image) = next.next().expect("cycle over a non-empty list");
                    black_box(rank(
                        black_box(task),
                        cores,
                        Some(black_box(image)),
                        black_box(&view),
                    ))
                    .ok()
                });
            },
        );
    }
    let with_images = published(&view);
    let without_images: Vec<Vec<(String, String)>> = with_images
        .iter()
        .map(|pairs| {
            let mut pairs = pairs.clone();
            pairs.retain(|(k, _)| k != keys::IMAGES);
            pairs
        })
        .collect();
    for (name, nodes) in [("off", &without_images), ("on", &with_images)] {
        group.bench_function(BenchmarkId::new("read_view_1000_nodes_img", name), |b| {
            b.iter(|| black_box(read_view(black_box(nodes))));
        });
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
