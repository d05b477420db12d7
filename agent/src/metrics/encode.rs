//! A [`Snapshot`] in the Prometheus text format (0.0.4), through the
//! Prometheus project's client (`prometheus-client`): a registry made for
//! the one scrape, its metrics set from the snapshot. Names follow the
//! Prometheus conventions: the `meshd_` prefix, `_total` on counters (the
//! client appends it), counts without a unit, ratios in 0..1.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Snapshot;

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

/// A gauge family with one label.
fn gauges(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

/// A counter family with one label; `name` without `_total` (added).
fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

/// A counter family with one label and a value for each of `values`.
fn counters_by(
    registry: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: &[(&str, u64)],
) {
    let family = counters(registry, name, help);
    for (value, n) in values {
        family.get_or_create(&label(key, value)).inc_by(*n);
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

fn label(key: &'static str, value: impl ToString) -> Labels {
    vec![(key, value.to_string())]
}

/// The text a scrape answers.
pub fn encode(s: &Snapshot) -> String {
    let mut root = Registry::with_prefix("meshd");
    let r = &mut root;

    let peers = gauges(
        r,
        "peers",
        "Peers this node sees in the mesh, itself included, by state",
    );
    for (state, n) in [
        ("alive", s.peers.alive),
        ("draining", s.peers.draining),
        ("suspect", s.peers.suspect),
        ("dead", s.peers.dead),
    ] {
        peers.get_or_create(&label("state", state)).set(int(n));
    }

    let cores = gauges(r, "cores", "Cores of this host per NUMA node");
    let allocated = gauges(
        r,
        "cores_allocated",
        "Cores held by a task or service container, per NUMA node",
    );
    for numa in &s.numa {
        let l = label("numa", numa.numa);
        cores.get_or_create(&l).set(i64::from(numa.total));
        allocated
            .get_or_create(&l)
            .set(i64::from(numa.total.saturating_sub(numa.free)));
    }

    let tasks = gauges(
        r,
        "tasks",
        "Task records this node holds, by state (finished ones until retention forgets them)",
    );
    for (state, n) in &s.tasks {
        tasks.get_or_create(&label("state", state)).set(int(*n));
    }
    let t = &s.tally;
    counter(
        r,
        "task_attempts_started",
        "Task attempts started on this node (first runs and retries)",
        t.attempts_started,
    );
    counter(
        r,
        "task_retries",
        "Task attempts that ended here and were queued again to retry",
        t.retries,
    );
    counter(
        r,
        "task_replacements",
        "Tasks of dead nodes this node re-placed as their keeper",
        t.replacements,
    );
    r.register(
        "container_start_seconds",
        "Time the container runtime took to create and start a task's container (image pull not included)",
        t.container_start.clone(),
    );
    r.register(
        "task_placement_seconds",
        "Time from this node accepting a task (submitted, or re-placed as a dead node's keeper) to a node taking it or it being queued here, by outcome (offered, queued, in_doubt)",
        s.placement.histograms(),
    );
    counters_by(
        r,
        "task_offers",
        "Tasks offered to this node (by itself or a peer: placements and moves), by answer",
        "result",
        &[("taken", t.offers_taken), ("refused", t.offers_refused)],
    );
    gauge(
        r,
        "queue_tasks",
        "Tasks waiting in this node's queue for cores",
        int(s.queued),
    );
    gauge(
        r,
        "queue_capacity_tasks",
        "Most tasks this node's queue holds (--max-queue)",
        int(s.max_queue),
    );
    gauge(
        r,
        "draining",
        "1 while this node is draining (no new task starts here), else 0",
        i64::from(s.draining),
    );
    gauge(
        r,
        "image_pulls_in_progress",
        "Image pulls under way on this node",
        i64::from(s.pulling),
    );
    counters_by(
        r,
        "image_pulls",
        "Image pulls that ended here, by result",
        "result",
        &[
            ("succeeded", s.pulled.succeeded),
            ("failed", s.pulled.failed),
        ],
    );
    counter(
        r,
        "image_pull_received_bytes",
        "Image layer bytes this node's pulls received, from registries and peers",
        s.pulled.bytes,
    );
    if let Some(cpu) = s.cpu_percent {
        let ratio = Gauge::<f64, AtomicU64>::default();
        ratio.set(f64::from(cpu) / 100.0);
        r.register(
            "host_cpu_utilization_ratio",
            "Host CPU use over the last sampling interval, 0 to 1",
            ratio,
        );
    }

    encode_services(r, s);
    encode_mesh(r, s);

    let mut text = String::new();
    // Writing into a String cannot fail, and every name and label here is
    // well-formed; an error would leave a truncated answer, not a panic.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &root);
    text
}

fn encode_services(r: &mut Registry, s: &Snapshot) {
    let accepted = counters(
        r,
        "service_connections_accepted",
        "Client connections this node accepted for the service",
    );
    let served = counters(
        r,
        "service_connections_served",
        "Accepted connections forwarded to a container, counted when they close",
    );
    let queued = counters(
        r,
        "service_connections_queued",
        "Accepted connections that waited for a container",
    );
    let refused = counters(
        r,
        "service_connections_refused",
        "Accepted connections refused (failed starts, queue full or timed out, caps)",
    );
    let failed = counters(
        r,
        "service_container_start_failures",
        "Service containers that failed to start on this node",
    );
    let containers = gauges(
        r,
        "service_containers",
        "The service's containers on this node (busy, warm or pooled)",
    );
    let ready = gauges(
        r,
        "service_containers_ready",
        "The service's started, unused containers on this node",
    );
    let open = gauges(
        r,
        "service_connections_open",
        "Connections open to the service's containers on this node",
    );
    let waiting = gauges(
        r,
        "service_connections_waiting",
        "Connections waiting at this node for one of the service's containers",
    );
    let listening = gauges(
        r,
        "service_listening",
        "1 if this node listens for the service's clients, else 0",
    );
    for stats in &s.services {
        let l = label("service", &stats.service);
        let c = &stats.counters;
        accepted.get_or_create(&l).inc_by(c.accepted);
        served.get_or_create(&l).inc_by(c.served);
        queued.get_or_create(&l).inc_by(c.queued);
        refused.get_or_create(&l).inc_by(c.refused);
        failed.get_or_create(&l).inc_by(c.failed_starts);
        containers
            .get_or_create(&l)
            .set(i64::from(stats.load.containers));
        ready.get_or_create(&l).set(i64::from(stats.load.ready));
        open.get_or_create(&l).set(i64::from(stats.load.conns));
        waiting.get_or_create(&l).set(i64::from(stats.load.queued));
        listening.get_or_create(&l).set(i64::from(stats.listening));
    }
    let b = s.traffic.forwarded();
    counters_by(
        r,
        "service_local_bytes",
        "Bytes of closed service connections between clients and containers both on this node, by direction (to_container, to_client)",
        "direction",
        &[("to_container", b.to_container), ("to_client", b.to_client)],
    );
    counters_by(
        r,
        "service_mesh_bytes",
        "Bytes of closed service connections forwarded over QUIC to or from peers (as the accepting or the serving node), by direction (sent, received)",
        "direction",
        &[("sent", b.mesh_sent), ("received", b.mesh_received)],
    );
    r.register(
        "service_connection_setup_seconds",
        "Time from this node accepting a client connection to a container being ready for its bytes (waiting for room, container start and tunnel open included), by route (local, mesh)",
        s.traffic.setup.histograms(),
    );
    gauge(
        r,
        "client_connections_open",
        "Client connections this node accepted and holds open, all services",
        int(s.connections_open),
    );
}

fn encode_mesh(r: &mut Registry, s: &Snapshot) {
    let m = &s.refusals;
    counter(
        r,
        "mesh_handshakes_refused",
        "QUIC handshakes from peers this node refused",
        m.handshakes,
    );
    counter(
        r,
        "mesh_messages_refused",
        "Messages from peers (gossip and calls) this node refused",
        m.messages,
    );
    counter(
        r,
        "mesh_version_mismatches",
        "Handshakes refused because the peer speaks another RPC version",
        m.versions,
    );
    counter(
        r,
        "mesh_identity_mismatches",
        "Dials refused because the certificate at the address named another node",
        m.identities,
    );
    let gossip = counters(
        r,
        "gossip_messages_refused",
        "Gossip messages this node refused, by reason",
    );
    for (reason, n) in &m.gossip {
        gossip.get_or_create(&label("reason", reason)).inc_by(*n);
    }
    let g = &s.gossip;
    counter(
        r,
        "gossip_sent_bytes",
        "Bytes of gossip messages this node sent to peers (QUIC overhead not included)",
        g.sent_bytes,
    );
    counter(
        r,
        "gossip_received_bytes",
        "Bytes of gossip messages this node read from peers, refused ones included",
        g.received_bytes,
    );
    let sent = counters(
        r,
        "gossip_messages_sent",
        "Gossip messages this node sent, by kind; syn counts the exchanges it started (each round, one per peer picked)",
    );
    let received = counters(
        r,
        "gossip_messages_received",
        "Gossip messages from peers that passed the checks, by kind",
    );
    for (i, kind) in crate::metrics::GossipKind::ALL.iter().enumerate() {
        let l = label("kind", kind.name());
        sent.get_or_create(&l).inc_by(g.sent[i]);
        received.get_or_create(&l).inc_by(g.received[i]);
    }
    let calls = counters(
        r,
        "rpc_calls",
        "Calls this node made to peers, by kind and outcome (ok, failed: the peer answered with an error, no_answer)",
    );
    for ((kind, outcome), n) in &s.rpc_calls {
        calls
            .get_or_create(&vec![
                ("kind", (*kind).to_owned()),
                ("outcome", (*outcome).to_owned()),
            ])
            .inc_by(*n);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::metrics::{MeshRefusals, PeerCounts};
    use mesh_protocol::TaskState;
    use mesh_protocol::alloc::NumaLoad;
    use mesh_protocol::api::{ServiceCounters, ServiceNodeStats};
    use mesh_protocol::load::ServiceLoad;
    use mesh_protocol::{NodeId, ServiceName};
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        Snapshot {
            peers: PeerCounts {
                alive: 2,
                draining: 1,
                suspect: 1,
                dead: 0,
            },
            numa: vec![
                NumaLoad {
                    numa: 0,
                    total: 4,
                    free: 1,
                },
                NumaLoad {
                    numa: 1,
                    total: 4,
                    free: 4,
                },
            ],
            tasks: TaskState::ALL
                .iter()
                .map(|&s| (s, usize::from(s == TaskState::Running) * 3))
                .collect(),
            tally: crate::metrics::Tally {
                attempts_started: 4,
                retries: 1,
                offers_taken: 2,
                offers_refused: 3,
                replacements: 0,
                ..crate::metrics::Tally::default()
            },
            queued: 5,
            max_queue: 100,
            draining: false,
            pulling: 1,
            pulled: crate::metrics::Pulled {
                succeeded: 3,
                failed: 1,
                bytes: 2048,
            },
            cpu_percent: Some(25),
            services: vec![ServiceNodeStats {
                node: NodeId::new("n1").unwrap(),
                service: ServiceName::new("web").unwrap(),
                listening: true,
                listen_error: None,
                load: ServiceLoad {
                    containers: 2,
                    ready: 1,
                    conns: 1,
                    queued: 0,
                },
                counters: ServiceCounters {
                    accepted: 7,
                    served: 6,
                    queued: 2,
                    refused: 1,
                    failed_starts: 0,
                },
                image: None,
            }],
            connections_open: 1,
            refusals: MeshRefusals {
                gossip: [("magic", 3)].into_iter().collect(),
                ..MeshRefusals::default()
            },
            rpc_calls: [(("offer", "ok"), 4)].into_iter().collect(),
            gossip: crate::metrics::GossipTraffic {
                sent_bytes: 300,
                sent: [2, 1, 0, 0],
                received: [0, 0, 1, 0],
                ..Default::default()
            },
            ..Snapshot::default()
        }
    }

    /// The sample lines (not comments) of a scrape.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn figures_become_samples_with_their_labels() {
        let mut s = snapshot();
        s.tally
            .container_started(std::time::Duration::from_millis(300));
        s.placement
            .observe(crate::metrics::Placed::Offered, Duration::from_millis(7));
        s.traffic
            .setup
            .observe(crate::metrics::Route::Mesh, Duration::from_millis(2));
        s.traffic.carried_local(10, 20);
        s.traffic.carried_mesh(3, 4);
        let text = encode(&s);
        let samples = samples(&text);
        for want in [
            r#"meshd_peers{state="alive"} 2"#,
            r#"meshd_peers{state="draining"} 1"#,
            r#"meshd_peers{state="suspect"} 1"#,
            r#"meshd_peers{state="dead"} 0"#,
            r#"meshd_cores{numa="0"} 4"#,
            r#"meshd_cores_allocated{numa="0"} 3"#,
            r#"meshd_cores_allocated{numa="1"} 0"#,
            r#"meshd_tasks{state="running"} 3"#,
            r#"meshd_tasks{state="lost"} 0"#,
            "meshd_queue_tasks 5",
            "meshd_task_attempts_started_total 4",
            "meshd_task_retries_total 1",
            r#"meshd_container_start_seconds_bucket{le="0.25"} 0"#,
            r#"meshd_container_start_seconds_bucket{le="0.5"} 1"#,
            r#"meshd_container_start_seconds_bucket{le="+Inf"} 1"#,
            "meshd_container_start_seconds_count 1",
            "meshd_task_replacements_total 0",
            r#"meshd_task_offers_total{result="taken"} 2"#,
            r#"meshd_task_offers_total{result="refused"} 3"#,
            "meshd_queue_capacity_tasks 100",
            "meshd_draining 0",
            "meshd_image_pulls_in_progress 1",
            r#"meshd_image_pulls_total{result="succeeded"} 3"#,
            r#"meshd_image_pulls_total{result="failed"} 1"#,
            "meshd_image_pull_received_bytes_total 2048",
            "meshd_host_cpu_utilization_ratio 0.25",
            r#"meshd_service_connections_accepted_total{service="web"} 7"#,
            r#"meshd_service_connections_refused_total{service="web"} 1"#,
            r#"meshd_service_container_start_failures_total{service="web"} 0"#,
            r#"meshd_service_containers{service="web"} 2"#,
            r#"meshd_service_listening{service="web"} 1"#,
            "meshd_client_connections_open 1",
            r#"meshd_gossip_messages_refused_total{reason="magic"} 3"#,
            "meshd_mesh_handshakes_refused_total 0",
            r#"meshd_rpc_calls_total{kind="offer",outcome="ok"} 4"#,
            r#"meshd_task_placement_seconds_bucket{outcome="offered",le="0.005"} 0"#,
            r#"meshd_task_placement_seconds_bucket{outcome="offered",le="0.01"} 1"#,
            r#"meshd_task_placement_seconds_count{outcome="offered"} 1"#,
            r#"meshd_service_connection_setup_seconds_bucket{route="mesh",le="0.0025"} 1"#,
            r#"meshd_service_connection_setup_seconds_count{route="mesh"} 1"#,
            r#"meshd_service_local_bytes_total{direction="to_container"} 10"#,
            r#"meshd_service_local_bytes_total{direction="to_client"} 20"#,
            r#"meshd_service_mesh_bytes_total{direction="sent"} 3"#,
            r#"meshd_service_mesh_bytes_total{direction="received"} 4"#,
            "meshd_gossip_sent_bytes_total 300",
            "meshd_gossip_received_bytes_total 0",
            r#"meshd_gossip_messages_sent_total{kind="syn"} 2"#,
            r#"meshd_gossip_messages_sent_total{kind="bad_cluster"} 0"#,
            r#"meshd_gossip_messages_received_total{kind="ack"} 1"#,
        ] {
            assert!(samples.contains(&want), "no {want:?} in\n{text}");
        }
    }

    #[test]
    fn counters_end_in_total_and_every_family_is_typed() {
        let text = encode(&snapshot());
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(name.starts_with("meshd_"), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                typed.push(name.to_owned());
            }
        }
        for sample in samples(&text) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| typed.iter().any(|t| t == f))
                .unwrap_or(name);
            assert!(typed.iter().any(|t| t == family), "{name} has no TYPE");
        }
    }

    #[test]
    fn an_unknown_cpu_figure_is_left_out_not_zero() {
        let mut s = snapshot();
        s.cpu_percent = None;
        assert!(!encode(&s).contains("host_cpu_utilization_ratio"));
    }
}
