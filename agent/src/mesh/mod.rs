//! The mesh: one QUIC endpoint per agent with mutual TLS, chitchat gossip
//! over it, what this node publishes about itself, the peer list, and calls
//! and tunnels to peers. It knows nothing of tasks or services: the parts
//! that do register handlers for their calls (`Mesh::handle_calls`,
//! `Mesh::handle_tunnels`) and publish their figures through it.

pub mod admission;
mod calls;
pub mod exchanges;
pub mod gossip_check;
pub mod handlers;
pub mod rpc;
mod socket;
pub mod tls;
pub mod transport;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use mesh_protocol::NodeId;
use mesh_protocol::api::MeshSummary;
use mesh_protocol::gossip::{NodeInfo, PeerState, PeerView, keys};
use mesh_protocol::image::ImageSummary;
use mesh_protocol::load::{Candidate, Load, TopologySummary};
use mesh_protocol::rpc::Topic;
use mesh_protocol::topology::Topology;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::MeshConfig;
use handlers::{Handlers, RpcHandler, TunnelHandler};
use transport::QuicTransport;

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot bind the QUIC endpoint on {addr}/udp: {source} (pick another with --bind)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start gossip: {0}")]
    Gossip(#[source] anyhow::Error),
    #[error(
        "gossip stopped on its own ({0}); this node would look dead to every peer, so the agent stops: restart it, and report this with the log"
    )]
    GossipStopped(String),
}

/// One key-value pair a node publishes, and which node (its id as
/// chitchat has it: the reader decides whether it is a valid one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipValue {
    pub node: String,
    pub key: String,
    pub value: String,
}

/// Per node: the (heartbeat, max version) last seen and when it changed.
type Heard = HashMap<ChitchatId, (chitchat::Heartbeat, u64, Instant)>;

/// A running mesh membership.
#[derive(Clone)]
pub struct Mesh {
    chitchat: Arc<ChitchatHandle>,
    transport: QuicTransport,
    endpoint: quinn::Endpoint,
    self_id: ChitchatId,
    /// (heartbeat, max version) last seen per node, and when it changed.
    heard: Arc<Mutex<Heard>>,
    pub insecure: bool,
    cluster_id: String,
    advertise: SocketAddr,
    node: NodeId,
    handlers: Arc<Handlers>,
    /// Calls made, by kind and outcome, for /metrics.
    calls: Arc<crate::metrics::RpcCounts>,
    /// One gossip round; a peer quiet for a few is suspect.
    gossip_interval: Duration,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("self", &self.self_id)
            .finish_non_exhaustive()
    }
}

pub fn topology_summary(t: &Topology) -> TopologySummary {
    TopologySummary {
        packages: t.packages,
        cores_per_numa: t.numa_nodes.iter().map(|n| n.cores.len() as u32).collect(),
        pus_per_core: t
            .numa_nodes
            .first()
            .and_then(|n| n.cores.first())
            .map(|c| c.pus.len() as u32)
            .unwrap_or(1),
    }
}

impl Mesh {
    /// Binds the endpoint and joins through the seeds, publishing `topology`
    /// and the API address. Runs until `shutdown`; the returned task ends
    /// once the endpoint is closed and gossip stopped. Should gossip stop
    /// on its own (chitchat's task panicked or failed), the task cancels
    /// `shutdown`, stopping the whole agent, and ends with
    /// [`MeshError::GossipStopped`].
    pub async fn start(
        cfg: &MeshConfig,
        node: &NodeId,
        api: SocketAddr,
        topology: TopologySummary,
        clock: &Clock,
        shutdown: CancellationToken,
    ) -> Result<(Mesh, tokio::task::JoinHandle<Result<(), MeshError>>), MeshError> {
        let alpn = mesh_protocol::rpc::alpn(cfg.rpc_version);
        let tls = tls::build(&cfg.tls, node, &alpn)?;
        if tls.insecure {
            warn!(
                "--insecure-dev: the mesh accepts ANY peer without a certificate check; never use this outside development"
            );
        }
        let bind_error = |source| MeshError::Bind {
            addr: cfg.bind,
            source,
        };
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(tls.server),
            socket::bind(cfg.bind).map_err(bind_error)?,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        endpoint.set_default_client_config(tls.client);
        let local = endpoint.local_addr().map_err(bind_error)?;
        let advertise = match cfg.advertise {
            Some(a) => a,
            None => advertise_addr(local, &cfg.seeds).await,
        };
        let api_advertise = if api.ip().is_unspecified() {
            SocketAddr::new(advertise.ip(), api.port())
        } else {
            api
        };
        let info = NodeInfo {
            quic: advertise,
            api: api_advertise,
            version: mesh_protocol::build_info::VERSION.into(),
            topology,
            load: Load::default(),
            draining: false,
            services: Default::default(),
            service_images: Default::default(),
            images: ImageSummary::default(),
        };
        let self_id = ChitchatId::new(node.to_string(), clock.now_ms(), advertise);
        let config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: cfg.cluster_id.clone(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: local,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: cfg.phi_threshold,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                // The prior mean heartbeat interval: one gossip round. A
                // larger prior slows detection of peers that die right
                // after joining.
                initial_interval: cfg.gossip_interval,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let handlers = Arc::new(Handlers::default());
        let transport = QuicTransport::new(endpoint.clone(), handlers.clone(), &alpn);
        let chitchat = spawn_chitchat(config, info.to_pairs(), &transport as &dyn Transport)
            .await
            .map_err(MeshError::Gossip)?;
        info!(node = %node, gossip = %advertise, api = %api_advertise, seeds = ?cfg.seeds, cluster = %cfg.cluster_id, "joined the mesh");
        let mesh = Mesh {
            chitchat: Arc::new(chitchat),
            transport,
            endpoint,
            self_id,
            heard: Arc::new(Mutex::new(HashMap::new())),
            insecure: tls.insecure,
            cluster_id: cfg.cluster_id.clone(),
            advertise,
            node: node.clone(),
            handlers,
            calls: Arc::default(),
            gossip_interval: cfg.gossip_interval,
        };
        let watcher = tokio::spawn(mesh.clone().watch(cfg.gossip_interval, shutdown));
        Ok((mesh, watcher))
    }

    /// Tracks when each peer was last heard from, every interval; on
    /// shutdown closes the endpoint and stops gossip (peers then find this
    /// node dead through their failure detectors: chitchat has no leave
    /// message). If gossip stops first, stops the agent (see `start`).
    async fn watch(self, every: Duration, shutdown: CancellationToken) -> Result<(), MeshError> {
        let mut tick = tokio::time::interval(every);
        let gossip_ended = self.chitchat.termination_watcher();
        tokio::pin!(gossip_ended);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ended = &mut gossip_ended => {
                    let why = match ended {
                        Ok(()) => "it ended without a shutdown".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    error!(error = %why, "gossip stopped on its own; stopping the agent");
                    shutdown.cancel();
                    self.endpoint.close(1u32.into(), b"gossip stopped");
                    return Err(MeshError::GossipStopped(why));
                }
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let heard = self.heard.clone();
            self.chitchat
                .with_chitchat(|c| {
                    let mut heard = heard.lock().unwrap_or_else(|p| p.into_inner());
                    for (id, state) in c.node_states() {
                        let mark = (state.heartbeat(), state.max_version());
                        match heard.get(id) {
                            Some((h, v, _)) if (*h, *v) == mark => {}
                            _ => {
                                heard.insert(id.clone(), (mark.0, mark.1, now));
                            }
                        }
                    }
                })
                .await;
        }
        self.endpoint.close(0u32.into(), b"shutting down");
        let _ = self.chitchat.initiate_shutdown();
        Ok(())
    }

    /// For tests: ends the gossip task as a panic in it would.
    #[doc(hidden)]
    pub fn abort_gossip(&self) {
        self.chitchat.abort();
    }

    /// Serves peers' calls of `topic` with `handler` from now on.
    pub fn handle_calls(&self, topic: Topic, handler: RpcHandler) {
        self.handlers.register_calls(topic, handler);
    }

    /// Serves service connections forwarded by peers with `handler`.
    pub fn handle_tunnels(&self, handler: TunnelHandler) {
        self.handlers.register_tunnels(handler);
    }

    /// Serves images asked for by peers with `handler` from now on.
    pub fn handle_images(&self, handler: TunnelHandler) {
        self.handlers.register_images(handler);
    }

    /// Publishes this node's load.
    pub async fn set_load(&self, load: &Load) {
        let value = load.to_string();
        self.chitchat
            .with_chitchat(|c| c.self_node_state().set(keys::LOAD, value.clone()))
            .await;
    }

    /// Publishes the images this node holds and its pulls under way, if
    /// they changed.
    pub async fn set_images(&self, images: &ImageSummary) {
        let value = images.to_string();
        self.chitchat
            .with_chitchat(|c| {
                let state = c.self_node_state();
                if state.get(keys::IMAGES) != Some(value.as_str()) {
                    state.set(keys::IMAGES, value.clone());
                }
            })
            .await;
    }

    /// Every node this one knows of, newest incarnation of each.
    pub async fn peers(&self) -> Vec<PeerView> {
        let heard = self.heard.clone();
        let names = self.transport.clone();
        let self_id = self.self_id.clone();
        let observed = self
            .chitchat
            .with_chitchat(|c| {
                let live: std::collections::HashSet<ChitchatId> = c.live_nodes().cloned().collect();
                let heard = heard.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                c.node_states()
                    .iter()
                    .map(|(id, state)| view::Observed {
                        node_id: id.node_id.to_string(),
                        generation: id.generation_id,
                        gossip_addr: id.gossip_advertise_addr,
                        alive: live.contains(id),
                        is_self: *id == self_id,
                        pairs: state
                            .key_values()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect::<BTreeMap<_, _>>(),
                        last_heard_ms: heard
                            .get(id)
                            .map(|(_, _, t)| now.duration_since(*t).as_millis() as u64),
                        cert_name: names.peers().name_at(&id.gossip_advertise_addr),
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let every = self.gossip_interval.as_millis() as u64;
        let (views, impostors) = view::peer_views(every, observed);
        for i in impostors {
            warn!(peer = %i, "refusing peer identity");
        }
        views
    }

    /// This node's membership in a few numbers, for `meshctl node`.
    pub async fn summary(&self) -> MeshSummary {
        let peers = self.peers().await;
        let count = |s: PeerState| peers.iter().filter(|p| p.state == s).count();
        MeshSummary {
            cluster_id: self.cluster_id.clone(),
            gossip_addr: self.advertise,
            insecure: self.insecure,
            alive: count(PeerState::Alive),
            suspect: count(PeerState::Suspect),
            dead: count(PeerState::Dead),
        }
    }

    /// Marks this node as draining (or not) in its published state.
    pub async fn set_draining(&self, draining: bool) {
        self.chitchat
            .with_chitchat(|c| {
                c.self_node_state()
                    .set(keys::DRAINING, if draining { "1" } else { "0" })
            })
            .await;
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn node(&self) -> NodeId {
        self.node.clone()
    }

    /// The live peers (not this node, suspect ones included: not declared
    /// dead) with where to call them.
    pub async fn live_peers(&self) -> Vec<(NodeId, SocketAddr)> {
        self.peers()
            .await
            .into_iter()
            .filter(|p| !p.is_self && p.state.is_live())
            .map(|p| (p.node, p.gossip_addr))
            .collect()
    }

    /// Every node with published values, as placement sees it.
    pub async fn candidates(&self) -> Vec<Candidate> {
        candidates_of(&self.peers().await)
    }

    /// Every value whose key starts with `prefix`, of every node state
    /// chitchat holds (dead nodes included, until forgotten), as published:
    /// the reader parses and validates them.
    pub async fn values_with_prefix(&self, prefix: &str) -> Vec<GossipValue> {
        self.chitchat
            .with_chitchat(|c| {
                c.node_states()
                    .iter()
                    .flat_map(|(id, state)| {
                        state
                            .key_values()
                            .filter(|(k, _)| k.starts_with(prefix))
                            .map(|(k, v)| GossipValue {
                                node: id.node_id.to_string(),
                                key: k.to_owned(),
                                value: v.to_owned(),
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .await
    }

    /// For tests: publishes `value` as the definition of service `name`
    /// as it is, as a faulty or hostile peer could (the services task
    /// publishes only valid definitions).
    #[doc(hidden)]
    pub async fn publish_raw_service_def(&self, name: &str, value: String) {
        let key = format!("{}{name}", mesh_protocol::service::defs::KEY_PREFIX);
        self.chitchat
            .with_chitchat(|c| c.self_node_state().set(key.clone(), value.clone()))
            .await;
    }

    /// Publishes these definitions and this node's service figures.
    pub async fn publish_services(
        &self,
        defs: &[mesh_protocol::service::ServiceDef],
        loads: &BTreeMap<String, mesh_protocol::load::ServiceLoad>,
        images: &BTreeMap<String, mesh_protocol::service::image::NodeImage>,
    ) {
        let loads = mesh_protocol::load::encode_loads(loads);
        let images = mesh_protocol::service::image::encode_images(images);
        self.chitchat
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for d in defs {
                    let (key, value) = (d.key(), d.encode());
                    if state.get(&key) != Some(value.as_str()) {
                        state.set(key, value);
                    }
                }
                if state.get(keys::SERVICES) != Some(loads.as_str()) {
                    state.set(keys::SERVICES, loads.clone());
                }
                if state.get(keys::SERVICE_IMAGES) != Some(images.as_str()) {
                    state.set(keys::SERVICE_IMAGES, images.clone());
                }
            })
            .await;
    }

    /// Refused handshakes and messages so far.
    pub fn refusals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.transport.refusals().handshakes.load(Relaxed),
            self.transport.refusals().messages.load(Relaxed),
        )
    }

    /// Gossip bytes and messages so far.
    pub fn gossip_traffic(&self) -> crate::metrics::GossipTraffic {
        self.transport.gossip()
    }

    /// Gossip messages refused so far, by reason (see
    /// [`gossip_check::Refusal::reason`]).
    pub fn gossip_refusals(&self) -> BTreeMap<&'static str, u64> {
        self.transport.refusals().gossip()
    }

    /// Calls and tunnels refused so far because the certificate at the
    /// address names another node than the one meant.
    pub fn identity_refusals(&self) -> u64 {
        self.transport
            .refusals()
            .identities
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Handshakes refused so far because the peer speaks another RPC
    /// version.
    pub fn version_refusals(&self) -> u64 {
        self.transport
            .refusals()
            .versions
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The nodes of a view that published values, as placement sees them: a
/// suspect peer is not `alive` there, so it gets no new task, connection
/// or pool container until it is heard from again.
pub fn candidates_of(peers: &[PeerView]) -> Vec<Candidate> {
    peers
        .iter()
        .filter_map(|p| {
            let info = p.info.as_ref()?;
            Some(Candidate {
                node: p.node.clone(),
                alive: p.state.takes_work(),
                draining: info.draining,
                topology: info.topology.clone(),
                load: info.load.clone(),
                images: info.images.clone(),
            })
        })
        .collect()
}

/// The address peers should use: the bound one, or when bound to 0.0.0.0
/// the address this host's name resolves to, or the one it would use to
/// reach the first seed.
async fn advertise_addr(local: SocketAddr, seeds: &[String]) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let port = local.port();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if let Ok(addrs) = tokio::net::lookup_host((host.trim(), port)).await {
        if let Some(a) = addrs
            .into_iter()
            .find(|a| a.is_ipv4() && !a.ip().is_loopback())
        {
            return a;
        }
    }
    for seed in seeds {
        let Ok(mut addrs) = tokio::net::lookup_host(seed.as_str()).await else {
            continue;
        };
        let Some(target) = addrs.next() else { continue };
        // Connecting a UDP socket sends nothing; it only picks a route.
        if let Ok(sock) = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            && sock.connect(target).is_ok()
            && let Ok(l) = sock.local_addr()
        {
            return SocketAddr::new(l.ip(), port);
        }
    }
    warn!("cannot tell this host's address; advertising 127.0.0.1 (set --advertise)");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}
