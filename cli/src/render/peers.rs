//! `meshctl peers`: every node the agent knows, one line each.

use mesh_protocol::gossip::PeerView;

use super::table;

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => super::duration(ms),
    }
}

/// NODE, STATE, GOSSIP, API, TOPOLOGY (cores per NUMA node), FREE, RUNNING,
/// QUEUED, CPU, VERSION (so a mesh in the middle of an upgrade shows who
/// runs what), LAST HEARD; the answering node is marked with `*`.
pub fn peers(list: &[PeerView]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let name = if p.is_self {
                format!("{}*", p.node)
            } else if !p.verified {
                format!("{}?", p.node)
            } else {
                p.node.to_string()
            };
            let mut row = vec![name, p.state.to_string(), p.gossip_addr.to_string()];
            match &p.info {
                Some(i) => {
                    let topo: Vec<String> = i
                        .topology
                        .cores_per_numa
                        .iter()
                        .map(u32::to_string)
                        .collect();
                    let free: Vec<String> =
                        i.load.free_per_numa.iter().map(u32::to_string).collect();
                    row.extend([
                        i.api.to_string(),
                        format!("{}x{}", topo.join("+"), i.topology.pus_per_core),
                        free.join("+"),
                        i.load.running.to_string(),
                        i.load.queued.to_string(),
                        format!("{}%", i.load.cpu_percent),
                        i.version.clone(),
                    ]);
                    if i.draining {
                        row[1].push_str(",draining");
                    }
                }
                None => row.extend([
                    format!("({})", p.error.as_deref().unwrap_or("no values")),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]),
            }
            row.push(ago(p.last_heard_ms));
            row
        })
        .collect();
    let mut out = table(
        &[
            "NODE", "STATE", "GOSSIP", "API", "CORES", "FREE", "RUNNING", "QUEUED", "CPU",
            "VERSION", "HEARD",
        ],
        &rows,
    );
    out.push_str(
        "(* this node, ? not yet verified by certificate; CORES: per NUMA node x PUs per core)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::NodeId;
    use mesh_protocol::gossip::{NodeInfo, PeerState};
    use mesh_protocol::load::{Load, TopologySummary};

    #[test]
    fn renders_alive_suspect_dead_and_broken_peers() {
        let info = NodeInfo {
            quic: "10.0.0.1:7946".parse().unwrap(),
            api: "10.0.0.1:7700".parse().unwrap(),
            version: "0.1.0+3f2c1a9b0".into(),
            // The gossip forms: 1 package, 4+4 cores, 2 PUs a core; 3+4 free, 1 running, 7% CPU.
            topology: TopologySummary::parse("1;4,4;2").unwrap(),
            load: Load::parse("3,4;1;0;7").unwrap(),
            draining: false,
            services: Default::default(),
            service_images: Default::default(),
            images: Default::default(),
        };
        let p = |name: &str, state, info: Option<NodeInfo>, is_self| PeerView {
            node: NodeId::new(name).unwrap(),
            state,
            is_self,
            generation: 1,
            gossip_addr: "10.0.0.1:7946".parse().unwrap(),
            error: info.is_none().then(|| "missing key \"load\"".into()),
            info,
            last_heard_ms: Some(1500),
            verified: true,
        };
        let out = peers(&[
            p("n1", PeerState::Alive, Some(info.clone()), true),
            p("n2", PeerState::Dead, Some(info.clone()), false),
            p("n3", PeerState::Alive, None, false),
            p("n4", PeerState::Suspect, Some(info), false),
        ]);
        assert!(out.contains("n1*"), "{out}");
        assert!(out.contains("4+4x2"), "{out}");
        assert!(out.contains("3+4"), "{out}");
        assert!(out.contains("dead"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("n4") && l.contains("suspect")),
            "{out}"
        );
        assert!(out.contains("missing key"), "{out}");
        assert!(out.contains("1.5s"), "{out}");
        assert!(out.contains("VERSION"), "{out}");
        assert!(out.contains("0.1.0+3f2c1a9b0"), "{out}");
    }
}
