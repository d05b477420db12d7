//! Services and connections as tables.

use mesh_protocol::api::{ConnectionView, ServiceView};

use super::{duration, key_values, table};

fn sum(v: &ServiceView, f: impl Fn(&mesh_protocol::api::ServiceNodeStats) -> u64) -> u64 {
    v.nodes.iter().map(f).sum()
}

/// One line per service, with totals over the nodes that answered.
pub fn services(views: &[ServiceView]) -> String {
    if views.is_empty() {
        return "no services\n".into();
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let s = &v.def.spec;
            let listening = v.nodes.iter().filter(|n| n.listening).count();
            vec![
                s.name.to_string(),
                v.def.owner.to_string(),
                s.mode.to_string(),
                s.listen.to_string(),
                s.image.clone(),
                format!("{listening}/{}", v.nodes.len() + v.unreachable.len()),
                sum(v, |n| n.load.containers.into()).to_string(),
                sum(v, |n| n.load.ready.into()).to_string(),
                sum(v, |n| n.load.conns.into()).to_string(),
                sum(v, |n| n.load.queued.into()).to_string(),
                sum(v, |n| n.counters.served).to_string(),
                sum(v, |n| n.counters.refused).to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "OWNER",
            "MODE",
            "LISTEN",
            "IMAGE",
            "NODES",
            "CONTAINERS",
            "READY",
            "CONNS",
            "QUEUED",
            "SERVED",
            "REFUSED",
        ],
        &rows,
    )
}

/// A service's definition and one line per node.
pub fn service(v: &ServiceView) -> String {
    let s = &v.def.spec;
    let mut out = key_values(&[
        ("name", s.name.to_string()),
        ("owner", v.def.owner.to_string()),
        ("image", s.image.clone()),
        ("mode", s.mode.to_string()),
        ("listen", s.listen.to_string()),
        ("container port", s.port.to_string()),
        ("cores", s.cores.to_string()),
        (
            "instances",
            s.instances.map_or("-".into(), |i| i.to_string()),
        ),
        ("warm", s.warm.to_string()),
        ("max per node", s.max_per_node.to_string()),
        (
            "queue",
            format!("{} for {} ms", s.queue, s.queue_timeout_ms),
        ),
        (
            "ready",
            format!(
                "within {} ms, {} retries",
                s.ready_timeout_ms, s.ready_retries
            ),
        ),
        (
            "connections close",
            match s.total_timeout_ms {
                Some(total) => format!("idle {} ms, or open {} ms", s.idle_timeout_ms, total),
                None => format!("idle {} ms", s.idle_timeout_ms),
            },
        ),
        (
            "command",
            if s.command.is_empty() {
                "(the image's)".into()
            } else {
                s.command.join(" ")
            },
        ),
    ]);
    let rows: Vec<Vec<String>> = v
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node.to_string(),
                if n.listening {
                    "yes".into()
                } else {
                    n.listen_error.clone().unwrap_or_else(|| "no".into())
                },
                n.image.as_ref().map_or("-".into(), ToString::to_string),
                n.load.containers.to_string(),
                n.load.ready.to_string(),
                n.load.conns.to_string(),
                n.load.queued.to_string(),
                n.counters.accepted.to_string(),
                n.counters.served.to_string(),
                n.counters.queued.to_string(),
                n.counters.refused.to_string(),
                n.counters.failed_starts.to_string(),
            ]
        })
        .chain(
            v.unreachable
                .iter()
                .map(|n| vec![n.to_string(), "unreachable".into()]),
        )
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            "NODE",
            "LISTENING",
            "IMAGE",
            "CONTAINERS",
            "READY",
            "CONNS",
            "QUEUED",
            "ACCEPTED",
            "SERVED",
            "WAITED",
            "REFUSED",
            "FAILED-STARTS",
        ],
        &rows,
    ));
    out
}

pub fn connections(conns: &[ConnectionView]) -> String {
    if conns.is_empty() {
        return "no open connections\n".into();
    }
    let rows: Vec<Vec<String>> = conns
        .iter()
        .map(|c| {
            vec![
                c.service.to_string(),
                c.client.to_string(),
                c.entry.to_string(),
                c.node.to_string(),
                c.container.clone(),
                c.bytes_in.to_string(),
                c.bytes_out.to_string(),
                duration(c.age_ms),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "CLIENT",
            "ENTRY",
            "NODE",
            "CONTAINER",
            "IN",
            "OUT",
            "AGE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::api::ServiceNodeStats;
    use mesh_protocol::service::image::ImageStatus;
    use mesh_protocol::service::{ServiceDef, ServiceRequest, ServiceSpec};
    use mesh_protocol::{NodeId, ServiceName};

    #[test]
    fn service_show_reports_each_nodes_image() {
        let spec = ServiceSpec::try_from(ServiceRequest {
            name: "web".into(),
            image: "reg/web:1".into(),
            port: 7000,
            listen: 8080,
            ..Default::default()
        })
        .unwrap();
        let node = |n: &str, image: Option<ImageStatus>| ServiceNodeStats {
            node: NodeId::new(n).unwrap(),
            service: ServiceName::new("web").unwrap(),
            listening: true,
            listen_error: None,
            load: Default::default(),
            counters: Default::default(),
            image,
        };
        let view = ServiceView {
            def: ServiceDef {
                spec,
                revision: 1,
                removed: false,
                owner: mesh_protocol::auth::unknown_owner(),
            },
            nodes: vec![
                node("n1", Some(ImageStatus::Present)),
                node("n2", Some(ImageStatus::Failed("image not found: x".into()))),
                node("n3", None),
            ],
            unreachable: Vec::new(),
        };
        let out = service(&view);
        let line = |n: &str| out.lines().find(|l| l.starts_with(n)).unwrap().to_owned();
        assert!(out.contains("IMAGE"), "{out}");
        assert!(line("n1").contains("present"), "{out}");
        assert!(line("n2").contains("failed: image not found: x"), "{out}");
        assert!(line("n3").contains(" - "), "{out}");
    }
}
