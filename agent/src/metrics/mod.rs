//! `GET /metrics`: what this agent knows about itself and its view of the
//! mesh, in the Prometheus text format. Nothing is counted here: each scrape
//! reads a [`Snapshot`] of the state the agent already keeps (the
//! supervisor's cores, queue and records, the gossip view, the services'
//! counters, the transport's refusal counters, the supervisor's [`Tally`]
//! of its decisions, and the histograms and counters the parts doing the
//! work keep in shared handles: [`PlacementTimes`], [`ServiceTraffic`])
//! and [`encode`] turns it into text. The metric names and their meaning are listed in
//! `docs/operations.md` (Metrics).

mod encode;
mod gossip;
mod tally;
mod timings;
mod traffic;

pub use encode::{CONTENT_TYPE, encode};
pub use gossip::{GossipCounts, GossipKind, GossipTraffic};
pub use tally::{PullCounts, Pulled, RpcCounts, Tally, new_bytes};
pub use timings::{Histograms, Placed, PlacementTimes, Route, SetupTimes};
pub use traffic::{Forwarded, ServiceTraffic};

use std::collections::BTreeMap;

use mesh_protocol::TaskState;
use mesh_protocol::alloc::NumaLoad;
use mesh_protocol::api::ServiceNodeStats;
use mesh_protocol::gossip::{PeerState, PeerView};

use crate::services::ServicesHandle;
use crate::supervisor::SupervisorError;
use crate::tasks::Tasks;

/// The peers this node sees (itself included), by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Alive and taking tasks.
    pub alive: usize,
    /// Alive but draining: no new tasks start there.
    pub draining: usize,
    /// Alive to the failure detector but quiet for a few gossip rounds.
    pub suspect: usize,
    /// Declared dead by the failure detector.
    pub dead: usize,
}

impl PeerCounts {
    /// Counts a gossip view: a draining peer that is suspect or dead
    /// counts as such.
    pub fn of(peers: &[PeerView]) -> PeerCounts {
        let mut counts = PeerCounts::default();
        for p in peers {
            match p.state {
                PeerState::Dead => counts.dead += 1,
                PeerState::Suspect => counts.suspect += 1,
                PeerState::Alive if p.info.as_ref().is_some_and(|i| i.draining) => {
                    counts.draining += 1
                }
                PeerState::Alive => counts.alive += 1,
            }
        }
        counts
    }
}

/// Refused input at the mesh's transport, counted since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshRefusals {
    /// QUIC handshakes refused (any reason).
    pub handshakes: u64,
    /// Messages refused (gossip and calls).
    pub messages: u64,
    /// Gossip messages refused, by reason.
    pub gossip: BTreeMap<&'static str, u64>,
    /// Handshakes refused because the peer speaks another RPC version.
    pub versions: u64,
    /// Dials refused because the certificate named another node.
    pub identities: u64,
}

/// Everything one scrape reports, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub peers: PeerCounts,
    /// Per NUMA node, its cores and how many are free.
    pub numa: Vec<NumaLoad>,
    /// This node's task records by state (every state, zeros too).
    pub tasks: Vec<(TaskState, usize)>,
    /// The supervisor's decisions since start.
    pub tally: Tally,
    /// Tasks waiting in this node's queue, and the queue's bound.
    pub queued: usize,
    pub max_queue: usize,
    pub draining: bool,
    /// Image pulls under way here (as this node last published them).
    pub pulling: u32,
    /// Pulls ended and bytes received since start.
    pub pulled: Pulled,
    /// Host CPU use over the last interval, 0..=100 (as last published).
    pub cpu_percent: Option<u32>,
    /// Per service, this node's figures.
    pub services: Vec<ServiceNodeStats>,
    /// Client connections this node holds open now.
    pub connections_open: usize,
    pub refusals: MeshRefusals,
    /// Calls this node made to peers, by (kind, outcome).
    pub rpc_calls: BTreeMap<(&'static str, &'static str), u64>,
    /// How long placements took here, by outcome (shares the counts).
    pub placement: PlacementTimes,
    /// Service connections' setup times (shares the counts) and bytes.
    pub traffic: ServiceTraffic,
    /// Gossip bytes and messages through this node's transport.
    pub gossip: GossipTraffic,
}

/// Reads a snapshot from the agent's parts. Only the supervisor can fail
/// (it stopped); the rest answer from what they hold.
pub async fn gather(
    on: &Tasks,
    services: &ServicesHandle,
    pulls: &PullCounts,
) -> Result<Snapshot, SupervisorError> {
    let (supervisor, mesh) = (on.supervisor(), on.mesh());
    let node = supervisor.node().await?;
    let (tasks, tally) = supervisor.task_counts().await?;
    let peers = mesh.peers().await;
    let me = peers
        .iter()
        .find(|p| p.is_self)
        .and_then(|p| p.info.as_ref());
    let report = services.report().await;
    let (handshakes, messages) = mesh.refusals();
    Ok(Snapshot {
        peers: PeerCounts::of(&peers),
        numa: node.load,
        tasks,
        tally,
        queued: node.queued,
        max_queue: node.max_queue,
        draining: me.is_some_and(|i| i.draining),
        pulling: me.map_or(0, |i| i.images.pulling),
        pulled: pulls.read(),
        cpu_percent: me.map(|i| i.load.cpu_percent),
        services: report.stats,
        connections_open: report.connections.len(),
        refusals: MeshRefusals {
            handshakes,
            messages,
            gossip: mesh.gossip_refusals(),
            versions: mesh.version_refusals(),
            identities: mesh.identity_refusals(),
        },
        rpc_calls: mesh.rpc_calls(),
        placement: on.placement_times().clone(),
        traffic: services.traffic(),
        gossip: mesh.gossip_traffic(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mesh_protocol::NodeId;
    use mesh_protocol::gossip::NodeInfo;
    use mesh_protocol::load::{Load, TopologySummary};

    fn view(node: &str, state: PeerState, draining: bool) -> PeerView {
        PeerView {
            node: NodeId::new(node).unwrap(),
            state,
            is_self: false,
            generation: 1,
            gossip_addr: "10.0.0.1:7946".parse().unwrap(),
            info: Some(NodeInfo {
                quic: "10.0.0.1:7946".parse().unwrap(),
                api: "10.0.0.1:7700".parse().unwrap(),
                version: "0.1.0".into(),
                topology: TopologySummary::parse("1;1;1").unwrap(),
                load: Load::parse("1;0;0;0").unwrap(),
                draining,
                services: Default::default(),
                service_images: Default::default(),
                images: Default::default(),
            }),
            error: None,
            last_heard_ms: None,
            verified: true,
        }
    }

    #[test]
    fn peers_count_by_state_a_draining_one_apart_unless_suspect_or_dead() {
        use PeerState::*;
        let counts = PeerCounts::of(&[
            view("a", Alive, false),
            view("b", Alive, true),
            view("c", Suspect, true),
            view("d", Suspect, false),
            view("e", Dead, true),
        ]);
        assert_eq!(
            counts,
            PeerCounts {
                alive: 1,
                draining: 1,
                suspect: 2,
                dead: 1
            }
        );
    }
}
