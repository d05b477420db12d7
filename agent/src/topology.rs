//! Where the agent's hardware model comes from: the host (hwloc discovery) or
//! a synthetic hwloc description given with `--topology`, for tests and for
//! several agents sharing one host. Both go through hwloc, so a synthetic
//! string means exactly what it means to hwloc (`numa:2 core:4 pu:2`,
//! `pack:2 numa:1 l3:1 core:8 pu:2`, ...).

use hwlocality::Topology as Hwloc;
use hwlocality::object::TopologyObject;
use hwlocality::object::types::ObjectType;
use mesh_protocol::topology::{Core, HostMapping, NumaNode, Topology};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("hwloc could not discover this host's topology: {0}")]
    Discover(String),
    #[error(
        "invalid --topology {description:?}: {cause}; use an hwloc synthetic description such as 'numa:2 core:4 pu:2'"
    )]
    Synthetic { description: String, cause: String },
    #[error("topology {0:?} has no cores")]
    Empty(String),
}

/// The model the allocator uses and how it maps onto the real host.
#[derive(Debug, Clone)]
pub struct LoadedTopology {
    pub model: Topology,
    pub mapping: HostMapping,
}

/// Discovers the host, then applies `synthetic` if given.
pub fn load(synthetic: Option<&str>) -> Result<LoadedTopology, TopologyError> {
    let host_hw = Hwloc::new().map_err(|e| TopologyError::Discover(e.to_string()))?;
    let host = convert(&host_hw, "host")?;
    let Some(description) = synthetic else {
        return Ok(LoadedTopology {
            model: host,
            mapping: HostMapping::Identity,
        });
    };
    let model = synthetic_model(description)?;
    let host_cpus: Vec<u32> = host_hw
        .allowed_cpuset()
        .iter_set()
        .map(|i| usize::from(i) as u32)
        .collect();
    let host_mems: Vec<u32> = host_hw
        .allowed_nodeset()
        .iter_set()
        .map(|i| usize::from(i) as u32)
        .collect();
    Ok(LoadedTopology {
        model,
        mapping: HostMapping::RoundRobin {
            cpus: host_cpus,
            mems: host_mems,
        },
    })
}

/// Parses an hwloc synthetic description into our model.
pub fn synthetic_model(description: &str) -> Result<Topology, TopologyError> {
    let bad = |cause: String| TopologyError::Synthetic {
        description: description.to_owned(),
        cause,
    };
    let hw = Hwloc::builder()
        .from_synthetic(description)
        .map_err(|e| bad(e.to_string()))?
        .build()
        .map_err(|e| bad(e.to_string()))?;
    convert(&hw, description)
}

fn os_index(obj: &TopologyObject) -> u32 {
    obj.os_index().unwrap_or(obj.logical_index()) as u32
}

fn convert(hw: &Hwloc, source: &str) -> Result<Topology, TopologyError> {
    let numas: Vec<&TopologyObject> = hw.objects_with_type(ObjectType::NUMANode).collect();
    let mut nodes: Vec<NumaNode> = if numas.is_empty() {
        vec![NumaNode {
            os_index: 0,
            cores: Vec::new(),
        }]
    } else {
        numas
            .iter()
            .map(|n| NumaNode {
                os_index: os_index(n),
                cores: Vec::new(),
            })
            .collect()
    };
    for core in hw.objects_with_type(ObjectType::Core) {
        let Some(cpuset) = core.cpuset() else {
            continue;
        };
        let pus: Vec<u32> = cpuset.iter_set().map(|i| usize::from(i) as u32).collect();
        if pus.is_empty() {
            continue;
        }
        // The first NUMA node whose cpuset covers the core; node 0 otherwise.
        let slot = numas
            .iter()
            .position(|n| n.cpuset().is_some_and(|c| c.intersects(&*cpuset)))
            .unwrap_or(0);
        nodes[slot].cores.push(Core {
            id: core.logical_index() as u32,
            pus,
        });
    }
    nodes.retain(|n| !n.cores.is_empty());
    if nodes.is_empty() {
        return Err(TopologyError::Empty(source.to_owned()));
    }
    Ok(Topology {
        source: source.to_owned(),
        packages: hw.objects_with_type(ObjectType::Package).count().max(1) as u32,
        numa_nodes: nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_matches_the_description() {
        let t = synthetic_model("numa:2 core:4 pu:2").unwrap();
        assert_eq!(t.numa_nodes.len(), 2);
        assert_eq!(t.core_count(), 8);
        assert_eq!(t.pu_count(), 16);
        assert!(t.numa_nodes.iter().all(|n| n.cores.len() == 4));
        assert_eq!(t.numa_nodes[1].cores[0].pus, vec![8, 9]);
    }

    #[test]
    fn packages_are_counted() {
        let t = synthetic_model("pack:2 core:3 pu:1").unwrap();
        assert_eq!(t.packages, 2);
        assert_eq!(t.core_count(), 6);
    }

    #[test]
    fn bad_description_is_a_clear_error() {
        let e = synthetic_model("numa:two").unwrap_err().to_string();
        assert!(e.contains("numa:two"), "{e}");
    }

    #[test]
    fn host_discovery_finds_cores() {
        let t = load(None).unwrap();
        assert!(t.model.core_count() >= 1);
        assert_eq!(t.mapping, HostMapping::Identity);
        let s = load(Some("numa:2 core:2 pu:1")).unwrap();
        assert!(matches!(s.mapping, HostMapping::RoundRobin { .. }));
    }
}
