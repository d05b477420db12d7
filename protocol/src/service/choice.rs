//! Where a service's connection goes and how many pool instances each node
//! runs: pure functions of one node's gossip view, so every node decides
//! the same way from the same view (and the view may be stale: a chosen
//! node that is full refuses, and the next is tried). Each node's image of
//! the service (`images`: the nodes that do not have it, see `image`) weighs
//! in: a node whose pull failed gets no connection and no pool instance, and
//! a node still pulling comes after the nodes that have the image.

use std::collections::BTreeMap;

use super::image::NodeImage;
use super::{Instances, MAX_PER_NODE, ServiceSpec};
use crate::ids::NodeId;
use crate::image::Wanted;
use crate::load::{Candidate, ServiceLoad, fnv1a};

/// Whether a node may be given the service's connections or instances:
/// not when its pull of the image failed.
pub fn image_usable(images: &BTreeMap<NodeId, NodeImage>, node: &NodeId) -> bool {
    images.get(node) != Some(&NodeImage::Failed)
}

/// The nodes to try for a new per-connection container, best first: nodes
/// with a warm container (this node first, then fewest containers), then
/// nodes whose view shows room (least utilised cores, then fewest
/// containers, then a hash of `salt` so equal nodes share the work), those
/// that have the image before those still pulling it. Dead, draining and
/// full nodes, and nodes whose pull failed, are left out.
pub fn route_per_connection(
    me: &NodeId,
    spec: &ServiceSpec,
    view: &[Candidate],
    loads: &BTreeMap<NodeId, ServiceLoad>,
    images: &BTreeMap<NodeId, NodeImage>,
    salt: u64,
) -> Vec<NodeId> {
    let cores = spec.cores.get();
    let wanted = Wanted::of(&spec.image);
    let mut warm = Vec::new();
    let mut room = Vec::new();
    for c in view
        .iter()
        .filter(|c| c.alive && !c.draining && image_usable(images, &c.node))
    {
        let load = loads.get(&c.node).cloned().unwrap_or_default();
        let tie = fnv1a(&[&salt.to_le_bytes(), c.node.as_str().as_bytes()]);
        let pulling = images.get(&c.node) == Some(&NodeImage::Pulling);
        if load.ready > 0 {
            warm.push(((c.node != *me), load.containers, tie, c.node.clone()));
        } else if load.containers < spec.max_per_node && c.fits_one_numa(cores) {
            let lacks_image = wanted.is_some_and(|w| !c.images.holds(&w));
            room.push((
                pulling,
                (c.utilisation_ppm(), load.containers),
                (c.images.pulling, lacks_image),
                tie,
                c.node.clone(),
            ));
        }
    }
    warm.sort();
    room.sort();
    warm.into_iter()
        .map(|w| w.3)
        .chain(room.into_iter().map(|r| r.4))
        .collect()
}

/// The nodes to send a pool connection to, best first: nodes with ready
/// instances, by fewest connections per instance, this node first among
/// equals, then a hash of `salt`. Nodes whose pull failed are left out.
pub fn route_pool(
    me: &NodeId,
    view: &[Candidate],
    loads: &BTreeMap<NodeId, ServiceLoad>,
    images: &BTreeMap<NodeId, NodeImage>,
    salt: u64,
) -> Vec<NodeId> {
    let mut ranked: Vec<_> = view
        .iter()
        .filter(|c| c.alive && image_usable(images, &c.node))
        .filter_map(|c| {
            let load = loads.get(&c.node)?;
            (load.ready > 0).then(|| {
                let per = u64::from(load.conns) * 1000 / u64::from(load.ready);
                let tie = fnv1a(&[&salt.to_le_bytes(), c.node.as_str().as_bytes()]);
                (per, c.node != *me, tie, c.node.clone())
            })
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|r| r.3).collect()
}

/// How many instances of a pool service `me` should run, and with how many
/// cores each. Per-core and per-numa pools size themselves from each node's
/// own topology; a counted pool is dealt out one instance at a time over
/// the live, non-draining nodes (in an order hashed from the service name,
/// so different services start on different nodes), each taking no more
/// than its cores allow. When a node leaves, or its pull of the image
/// fails, its share moves to the others. A node runs at most
/// `MAX_PER_NODE` instances of a service, whatever its peers say of their
/// shape.
pub fn pool_share(
    spec: &ServiceSpec,
    view: &[Candidate],
    images: &BTreeMap<NodeId, NodeImage>,
    me: &NodeId,
) -> Vec<u32> {
    let Some(mine) = view.iter().find(|c| &c.node == me) else {
        return Vec::new();
    };
    if !mine.alive || mine.draining || !image_usable(images, me) {
        return Vec::new();
    }
    match spec.instances {
        None => Vec::new(),
        Some(Instances::PerCore) => {
            vec![1; mine.topology.total_cores().min(MAX_PER_NODE) as usize]
        }
        Some(Instances::PerNuma) => {
            let mut v = mine.topology.cores_per_numa.clone();
            v.truncate(MAX_PER_NODE as usize);
            v
        }
        Some(Instances::Count(n)) => {
            let cores = spec.cores.get();
            let mut nodes: Vec<(u64, &Candidate, u32)> = view
                .iter()
                .filter(|c| c.alive && !c.draining && image_usable(images, &c.node))
                .map(|c| {
                    let hash = fnv1a(&[spec.name.as_str().as_bytes(), c.node.as_str().as_bytes()]);
                    let capacity = (c.topology.total_cores() / cores).min(MAX_PER_NODE);
                    (hash, c, capacity)
                })
                .collect();
            nodes.sort_by_key(|(hash, c, _)| (*hash, c.node.clone()));
            let mut given: Vec<u32> = vec![0; nodes.len()];
            let mut left = n;
            while left > 0 {
                let mut progressed = false;
                for (i, (_, _, capacity)) in nodes.iter().enumerate() {
                    if left > 0 && given[i] < *capacity {
                        given[i] += 1;
                        left -= 1;
                        progressed = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
            let at = nodes.iter().position(|(_, c, _)| &c.node == me);
            at.map(|i| vec![cores; given[i] as usize])
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Load, TopologySummary};
    use crate::service::ServiceRequest;

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn cand(n: &str, per_numa: Vec<u32>, free: Vec<u32>) -> Candidate {
        Candidate {
            node: node(n),
            alive: true,
            draining: false,
            topology: TopologySummary {
                packages: 1,
                cores_per_numa: per_numa,
                pus_per_core: 1,
            },
            load: Load {
                free_per_numa: free,
                ..Default::default()
            },
            images: Default::default(),
        }
    }

    fn spec(mode: &str, instances: Option<&str>, cores: u32, max: u32) -> ServiceSpec {
        ServiceSpec::try_from(ServiceRequest {
            name: "svc".into(),
            image: "img".into(),
            port: 1,
            listen: 2,
            mode: Some(mode.into()),
            instances: instances.map(Into::into),
            cores: (instances != Some("per-numa")).then_some(cores),
            max_per_node: Some(max),
            ..Default::default()
        })
        .unwrap()
    }

    fn none() -> BTreeMap<NodeId, NodeImage> {
        BTreeMap::new()
    }

    fn load(containers: u32, ready: u32, conns: u32) -> ServiceLoad {
        ServiceLoad {
            containers,
            ready,
            conns,
            queued: 0,
        }
    }

    #[test]
    fn warm_nodes_first_local_first_then_least_utilised_with_room() {
        let s = spec("per-connection", None, 1, 3);
        let view = vec![
            cand("a", vec![4], vec![1]),
            cand("b", vec![4], vec![3]),
            cand("c", vec![4], vec![4]),
            cand("d", vec![4], vec![0]),
            cand("e", vec![4], vec![4]),
        ];
        let loads = BTreeMap::from([
            (node("a"), load(2, 1, 1)),
            (node("c"), load(0, 0, 0)),
            (node("e"), load(3, 0, 3)),
        ]);
        let order = route_per_connection(&node("b"), &s, &view, &loads, &none(), 1);
        // a has a warm one; c, b by utilisation; d has no free core; e is
        // at its max.
        assert_eq!(order, vec![node("a"), node("c"), node("b")]);
        let mut both_warm = loads.clone();
        both_warm.insert(node("b"), load(1, 1, 0));
        let order = route_per_connection(&node("b"), &s, &view, &both_warm, &none(), 1);
        assert_eq!(&order[..2], &[node("b"), node("a")]);
    }

    #[test]
    fn among_equal_nodes_with_room_the_one_holding_the_image_comes_first() {
        let s = spec("per-connection", None, 1, 3);
        let held = |c: Candidate, pulling| Candidate {
            images: crate::image::ImageSummary::of(
                &[crate::image::ListedImage {
                    repo_tags: vec!["img:latest".into()],
                    ..Default::default()
                }],
                pulling,
            ),
            ..c
        };
        let view = vec![
            cand("a", vec![4], vec![4]),
            held(cand("b", vec![4], vec![4]), 0),
            cand("c", vec![4], vec![4]),
            // More utilised: holding the image does not put it first.
            held(cand("d", vec![4], vec![3]), 0),
        ];
        for salt in 0..20 {
            let order = route_per_connection(
                &node("a"),
                &s,
                &view,
                &BTreeMap::new(),
                &BTreeMap::new(),
                salt,
            );
            assert_eq!(order[0], node("b"), "salt {salt}");
            assert_eq!(order[3], node("d"), "salt {salt}");
        }
        // Pulling counts as busier than lacking the image.
        let view = vec![
            cand("a", vec![4], vec![4]),
            held(cand("b", vec![4], vec![4]), 1),
        ];
        for salt in 0..20 {
            let order = route_per_connection(
                &node("a"),
                &s,
                &view,
                &BTreeMap::new(),
                &BTreeMap::new(),
                salt,
            );
            assert_eq!(order[0], node("a"), "salt {salt}");
        }
    }

    #[test]
    fn dead_and_draining_nodes_get_no_connections() {
        let s = spec("per-connection", None, 2, 8);
        let mut dead = cand("a", vec![4], vec![4]);
        dead.alive = false;
        let mut draining = cand("b", vec![4], vec![4]);
        draining.draining = true;
        let split = cand("c", vec![1, 1], vec![1, 1]);
        let view = vec![dead, draining, split];
        assert!(
            route_per_connection(&node("c"), &s, &view, &BTreeMap::new(), &none(), 0).is_empty()
        );
    }

    #[test]
    fn pool_connections_go_to_the_fewest_per_instance_local_on_ties() {
        let view = vec![
            cand("a", vec![4], vec![0]),
            cand("b", vec![4], vec![0]),
            cand("c", vec![4], vec![0]),
        ];
        let loads = BTreeMap::from([
            (node("a"), load(4, 4, 8)),
            (node("b"), load(4, 4, 8)),
            (node("c"), load(2, 2, 1)),
        ]);
        assert_eq!(
            route_pool(&node("b"), &view, &loads, &none(), 0),
            vec![node("c"), node("b"), node("a")]
        );
        assert!(route_pool(&node("b"), &view, &BTreeMap::new(), &none(), 0).is_empty());
    }

    #[test]
    fn per_core_and_per_numa_pools_follow_each_nodes_topology() {
        let view = vec![cand("a", vec![4, 4], vec![8]), cand("b", vec![2], vec![2])];
        let per_core = spec("pool", Some("per-core"), 1, 64);
        assert_eq!(
            pool_share(&per_core, &view, &none(), &node("a")),
            vec![1; 8]
        );
        assert_eq!(
            pool_share(&per_core, &view, &none(), &node("b")),
            vec![1; 2]
        );
        let per_numa = spec("pool", Some("per-numa"), 1, 64);
        assert_eq!(
            pool_share(&per_numa, &view, &none(), &node("a")),
            vec![4, 4]
        );
        assert!(pool_share(&per_numa, &view, &none(), &node("zz")).is_empty());
    }

    #[test]
    fn counted_pools_spread_within_capacity_and_move_when_a_node_leaves() {
        let s = spec("pool", Some("6"), 1, 64);
        let mut view: Vec<Candidate> = ["a", "b", "c"]
            .iter()
            .map(|n| cand(n, vec![4], vec![4]))
            .collect();
        let shares = |view: &[Candidate]| -> Vec<usize> {
            ["a", "b", "c"]
                .iter()
                .map(|n| pool_share(&s, view, &none(), &node(n)).len())
                .collect()
        };
        assert_eq!(shares(&view), vec![2, 2, 2]);
        view[1].alive = false;
        assert_eq!(shares(&view), vec![3, 0, 3]);
        // Capacity bounds it: 2-core instances, 4 cores each node.
        let big = spec("pool", Some("9"), 2, 64);
        let total: usize = ["a", "b", "c"]
            .iter()
            .map(|n| pool_share(&big, &view, &none(), &node(n)).len())
            .sum();
        assert_eq!(total, 4);
    }

    /// Peers that claim billions of cores: a node's share stays within
    /// `MAX_PER_NODE`, and a counted pool is dealt out in at most its count.
    #[test]
    fn shares_are_bounded_whatever_peers_claim() {
        let huge = |n: &str| cand(n, vec![u32::MAX, u32::MAX], vec![u32::MAX]);
        let view = vec![huge("a"), huge("b")];
        let per_core = spec("pool", Some("per-core"), 1, 64);
        assert_eq!(
            pool_share(&per_core, &view, &none(), &node("a")).len(),
            MAX_PER_NODE as usize
        );
        let counted = spec("pool", Some("10000"), 1, 64);
        let total: usize = ["a", "b"]
            .iter()
            .map(|n| pool_share(&counted, &view, &none(), &node(n)).len())
            .sum();
        assert_eq!(total, 2 * MAX_PER_NODE as usize);
    }

    /// A node whose pull failed gets no connection, not even a warm one's,
    /// and no pool instance (its share goes to the others); a node still
    /// pulling comes after those with room that have the image.
    #[test]
    fn a_failed_pull_takes_a_node_out_and_a_pull_under_way_puts_it_last() {
        let s = spec("per-connection", None, 1, 8);
        let view = vec![
            cand("a", vec![4], vec![4]),
            cand("b", vec![4], vec![1]),
            cand("c", vec![4], vec![4]),
        ];
        let loads = BTreeMap::from([(node("c"), load(1, 1, 0))]);
        let images = BTreeMap::from([
            (node("a"), NodeImage::Pulling),
            (node("c"), NodeImage::Failed),
        ]);
        assert_eq!(
            route_per_connection(&node("a"), &s, &view, &loads, &images, 0),
            vec![node("b"), node("a")]
        );
        assert_eq!(
            route_per_connection(&node("a"), &s, &view, &loads, &none(), 0),
            vec![node("c"), node("a"), node("b")]
        );
        let pool_loads = BTreeMap::from([(node("a"), load(1, 1, 0)), (node("c"), load(1, 1, 0))]);
        assert_eq!(
            route_pool(&node("a"), &view, &pool_loads, &images, 0),
            vec![node("a")]
        );
        let counted = spec("pool", Some("6"), 1, 64);
        let share = |images: &BTreeMap<NodeId, NodeImage>, n: &str| {
            pool_share(&counted, &view, images, &node(n)).len()
        };
        assert_eq!(
            ["a", "b", "c"]
                .map(|n| share(&none(), n))
                .iter()
                .sum::<usize>(),
            6
        );
        assert_eq!(share(&images, "c"), 0);
        assert_eq!(share(&images, "a") + share(&images, "b"), 6);
        let per_core = spec("pool", Some("per-core"), 1, 64);
        assert!(pool_share(&per_core, &view, &images, &node("c")).is_empty());
        assert_eq!(pool_share(&per_core, &view, &images, &node("a")).len(), 4);
    }
}
