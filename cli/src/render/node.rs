//! The agent's node: `meshctl node` and `meshctl health`.

use std::collections::BTreeSet;

use mesh_protocol::CpuSet;
use mesh_protocol::api::{Health, NodeView, RuntimeHealth};
use mesh_protocol::topology::HostMapping;

use super::{key_values, or_dash, table};

/// Header lines, then per NUMA node its load and a table of its cores.
pub fn node(view: &NodeView) -> String {
    let mut out = key_values(&[
        ("node", view.node.to_string()),
        ("version", view.version.clone()),
        ("topology", view.topology.summary()),
        ("mapping", mapping(&view.mapping)),
        ("docker", docker(&view.docker)),
        ("queued", view.queued.to_string()),
        ("running", view.running.to_string()),
        ("max queue", view.max_queue.to_string()),
        ("mesh", mesh(view.mesh.as_ref())),
    ]);
    // Every NUMA node either side mentions, so a core is never left out.
    let numas: BTreeSet<u32> = view
        .load
        .iter()
        .map(|l| l.numa)
        .chain(view.cores.iter().map(|c| c.numa))
        .collect();
    for numa in numas {
        out.push('\n');
        match view.load.iter().find(|l| l.numa == numa) {
            Some(l) => out.push_str(&format!("NUMA {numa}: {}/{} cores free\n", l.free, l.total)),
            None => out.push_str(&format!("NUMA {numa}: load unknown\n")),
        }
        let rows: Vec<Vec<String>> = view
            .cores
            .iter()
            .filter(|c| c.numa == numa)
            .map(|c| {
                vec![
                    c.core.to_string(),
                    c.numa.to_string(),
                    c.pus.to_string(),
                    or_dash(c.task.as_ref()),
                ]
            })
            .collect();
        out.push_str(&table(&["CORE", "NUMA", "PUS", "TASK"], &rows));
    }
    out
}

fn mesh(m: Option<&mesh_protocol::api::MeshSummary>) -> String {
    match m {
        None => "-".into(),
        Some(m) => format!(
            "cluster {} at {}{}: {} alive, {}{} dead (see `meshctl peers`)",
            m.cluster_id,
            m.gossip_addr,
            if m.insecure {
                " (INSECURE: --insecure-dev)"
            } else {
                ""
            },
            m.alive,
            if m.suspect > 0 {
                format!("{} suspect, ", m.suspect)
            } else {
                String::new()
            },
            m.dead
        ),
    }
}

/// Whether the agent is ok, and why not.
pub fn health(h: &Health) -> String {
    key_values(&[
        ("ok", if h.ok { "yes" } else { "no" }.to_owned()),
        ("node", h.node.to_string()),
        ("docker", docker(&h.docker)),
        (
            "store",
            h.store_error
                .as_ref()
                .map_or_else(|| "writable".to_owned(), |e| format!("WRITES FAIL: {e}")),
        ),
    ])
}

fn mapping(m: &HostMapping) -> String {
    match m {
        HostMapping::Identity => "identity".to_owned(),
        HostMapping::RoundRobin { cpus, mems } => format!(
            "synthetic topology mapped round-robin onto host cpus {} mems {}",
            CpuSet::from_iter(cpus.iter().copied()),
            CpuSet::from_iter(mems.iter().copied()),
        ),
    }
}

/// `reachable at unix:///var/run/docker.sock, version 27.1` or
/// `UNREACHABLE at …: why`.
fn docker(d: &RuntimeHealth) -> String {
    let mut text = if d.reachable {
        format!("reachable at {}", d.endpoint)
    } else {
        format!("UNREACHABLE at {}", d.endpoint)
    };
    if let Some(v) = &d.version {
        text.push_str(&format!(", version {v}"));
    }
    if let Some(e) = &d.error {
        text.push_str(&format!(": {e}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use mesh_protocol::alloc::NumaLoad;
    use mesh_protocol::api::CoreHold;
    use mesh_protocol::{NodeId, TaskId, Topology};

    use super::*;

    fn docker_ok() -> RuntimeHealth {
        RuntimeHealth {
            reachable: true,
            endpoint: "unix:///var/run/docker.sock".into(),
            version: Some("27.1".into()),
            error: None,
        }
    }

    fn view() -> NodeView {
        let topology = Topology::uniform(2, 2, 2);
        let cores = topology
            .cores()
            .map(|(numa, c)| CoreHold {
                core: c.id,
                numa,
                pus: c.pus.iter().copied().collect(),
                task: (c.id < 2).then(|| TaskId::new("t1").unwrap()),
            })
            .collect();
        NodeView {
            node: NodeId::new("n1").unwrap(),
            version: "0.1.0".into(),
            topology,
            mapping: HostMapping::RoundRobin {
                cpus: vec![0, 1, 2, 3],
                mems: vec![0],
            },
            cores,
            load: vec![
                NumaLoad {
                    numa: 0,
                    total: 2,
                    free: 0,
                },
                NumaLoad {
                    numa: 1,
                    total: 2,
                    free: 2,
                },
            ],
            queued: 1,
            running: 1,
            max_queue: 100,
            mesh: None,
            docker: docker_ok(),
        }
    }

    #[test]
    fn node_view_renders_header_and_numa_tables() {
        let text = node(&view());
        let expected_tail = "\nNUMA 0: 0/2 cores free\n\
            CORE  NUMA  PUS  TASK\n\
            0     0     0-1  t1\n\
            1     0     2-3  t1\n\
            \n\
            NUMA 1: 2/2 cores free\n\
            CORE  NUMA  PUS  TASK\n\
            2     1     4-5  -\n\
            3     1     6-7  -\n";
        assert!(text.ends_with(expected_tail), "{text}");
        assert!(
            text.starts_with("node:      n1\nversion:   0.1.0\n"),
            "{text}"
        );
        assert!(text.contains(
            "mapping:   synthetic topology mapped round-robin onto host cpus 0-3 mems 0\n"
        ));
        assert!(text.contains("topology:  2 NUMA node(s), cores per node [2,2], 8 PUs"));
        assert!(
            text.contains("docker:    reachable at unix:///var/run/docker.sock, version 27.1\n")
        );
        assert!(text.contains("max queue: 100\n"));
    }

    #[test]
    fn node_without_cores_or_load_is_just_the_header() {
        let mut v = view();
        v.cores.clear();
        v.load.clear();
        v.mapping = HostMapping::Identity;
        let text = node(&v);
        assert_eq!(
            text.lines().count(),
            9,
            "eight header lines and the mesh line"
        );
        assert!(text.contains("mapping:   identity\n"));
    }

    #[test]
    fn health_says_why_docker_is_down() {
        let h = Health {
            ok: false,
            node: NodeId::new("n1").unwrap(),
            docker: RuntimeHealth {
                reachable: false,
                version: None,
                error: Some("permission denied; add the user to the docker group".into()),
                ..docker_ok()
            },
            store_error: None,
        };
        assert_eq!(
            health(&h),
            "ok:     no\nnode:   n1\ndocker: UNREACHABLE at unix:///var/run/docker.sock: \
             permission denied; add the user to the docker group\nstore:  writable\n"
        );
    }

    #[test]
    fn health_says_why_the_store_cannot_be_written() {
        let h = Health {
            ok: false,
            node: NodeId::new("n1").unwrap(),
            docker: docker_ok(),
            store_error: Some("cannot write the task store at /d/tasks.redb: No space".into()),
        };
        assert!(
            health(&h).ends_with(
                "store:  WRITES FAIL: cannot write the task store at /d/tasks.redb: No space\n"
            ),
            "{}",
            health(&h)
        );
    }
}
