//! What container a task attempt runs in: a pure function of the task record,
//! its cores and the host mapping.

use std::collections::BTreeMap;

use mesh_protocol::topology::HostMapping;
use mesh_protocol::{Allocation, NodeId, TaskRecord, labels};

use crate::runtime::ContainerSpec;

/// `mesh-<node>-<task>-<start>`: unique per container ever created for the
/// task, readable in `docker ps`.
pub fn container_name(node: &NodeId, record: &TaskRecord) -> String {
    format!("mesh-{}-{}-{}", node, record.id, record.starts)
}

/// The labels that tie a container to its node, task and attempt.
pub fn task_labels(node: &NodeId, cluster: &str, record: &TaskRecord) -> BTreeMap<String, String> {
    let mut l = record.spec.labels.clone();
    l.insert(labels::NODE.into(), node.to_string());
    l.insert(labels::CLUSTER.into(), cluster.to_owned());
    l.insert(labels::TASK.into(), record.id.to_string());
    l.insert(labels::KIND.into(), labels::KIND_TASK.into());
    l.insert(labels::ATTEMPT.into(), record.attempt.to_string());
    l.insert(labels::START.into(), record.starts.to_string());
    l
}

pub fn container_spec(
    node: &NodeId,
    cluster: &str,
    record: &TaskRecord,
    allocation: &Allocation,
    mapping: &HostMapping,
    network: Option<&str>,
) -> ContainerSpec {
    let (cpus, mems) = mapping.map(&allocation.cpus, &allocation.mems);
    let mut env = record.spec.env.clone();
    env.extend([
        ("MESH_TASK_ID".into(), record.id.to_string()),
        ("MESH_TASK_ATTEMPT".into(), record.attempt.to_string()),
        ("MESH_NODE".into(), node.to_string()),
        ("MESH_CORES".into(), allocation.cores.len().to_string()),
        ("MESH_CPUS".into(), allocation.cpus.to_string()),
        ("MESH_HOST_CPUS".into(), cpus.to_string()),
    ]);
    ContainerSpec {
        name: container_name(node, record),
        image: record.spec.image.clone(),
        command: record.spec.command.clone(),
        env,
        labels: task_labels(node, cluster, record),
        cpuset_cpus: cpus,
        cpuset_mems: mems,
        memory: record.spec.memory.map(|m| m.get()),
        network: network.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::{CpuSet, TaskId, TaskSpec};

    #[test]
    fn spec_carries_labels_env_and_mapped_cpusets() {
        let spec = TaskSpec::builder("img")
            .command(["sleep", "1"])
            .env("A=1")
            .cores(2)
            .memory("64M")
            .label("team", "x")
            .build()
            .unwrap();
        let node = NodeId::new("n1").unwrap();
        let mut rec = TaskRecord::new(TaskId::new("t1").unwrap(), spec, node.clone(), 0, 0);
        let alloc = Allocation {
            cores: vec![4, 5],
            cpus: CpuSet::from_iter([8, 9, 10, 11]),
            mems: CpuSet::from_iter([1]),
        };
        rec.start(alloc.clone(), 1).unwrap();
        let mapping = HostMapping::RoundRobin {
            cpus: vec![0, 1],
            mems: vec![0],
        };
        let c = container_spec(&node, "c1", &rec, &alloc, &mapping, Some("net"));
        assert_eq!(c.name, "mesh-n1-t1-1");
        assert_eq!(c.cpuset_cpus.to_string(), "0-1");
        assert_eq!(c.cpuset_mems.to_string(), "0");
        assert_eq!(c.memory, Some(64 << 20));
        assert_eq!(c.labels["mesh.task"], "t1");
        assert_eq!(c.labels["mesh.attempt"], "1");
        assert_eq!(c.labels["mesh.kind"], "task");
        assert_eq!(c.labels["mesh.cluster"], "c1");
        assert_eq!(c.labels["team"], "x");
        assert!(c.env.contains(&("MESH_CPUS".into(), "8-11".into())));
        let ident = container_spec(&node, "c1", &rec, &alloc, &HostMapping::Identity, None);
        assert_eq!(ident.cpuset_cpus.to_string(), "8-11");
    }
}
