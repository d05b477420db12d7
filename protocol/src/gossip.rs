//! The gossip schema: what each agent publishes about itself, as chitchat
//! key-value pairs, and the typed view of it. One schema, versioned by the
//! `v` key; decoding is strict (a peer whose values do not parse is shown as
//! such, never trusted half-way).
//!
//! | key | example | changes |
//! |---|---|---|
//! | `v` | `3` (`SCHEMA_VERSION`) | never |
//! | `quic` | `10.0.0.5:7946` | never |
//! | `api` | `10.0.0.5:7700` | never |
//! | `ver` | `0.1.0` | never |
//! | `topo` | `1;4,4;2` (packages; cores per NUMA node; PUs per core) | never |
//! | `load` | `2,4;1;0;37` (free cores per NUMA node; running; queued; host CPU %) | often |
//! | `drain` | `0` | rarely |
//! | `svc` | `echo:3:1:2:0;web:4:4:9:0` (per service: containers, ready, open connections, queued connections; empty for none) | often |
//! | `simg` | `echo:p;web:f` (per service whose image this node lacks: `p` pulling, `f` pull failed; optional, absent means none) | rarely |
//! | `svcdef.NAME` | JSON `ServiceDef` (every definition the node knows, see `service::defs`) | rarely |
//! | `img` | `0;7;AAgB...` (pulls under way; the Bloom filter of the images held: hashes, base64 bits; see `image::held`) | on a pull, and when the images change |
//!
//! `img` is optional: a node without it (an older agent) holds no image as
//! far as placement knows. A value that is there must parse.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::image::ImageSummary;
use crate::load::{Load, ServiceLoad, TopologySummary, decode_loads, encode_loads};
use crate::service::image::{NodeImage, decode_images, encode_images};

pub const SCHEMA_VERSION: u32 = 3;

pub mod keys {
    pub const VERSION: &str = "v";
    pub const QUIC: &str = "quic";
    pub const API: &str = "api";
    pub const AGENT_VERSION: &str = "ver";
    pub const TOPOLOGY: &str = "topo";
    pub const LOAD: &str = "load";
    pub const DRAINING: &str = "drain";
    pub const SERVICES: &str = "svc";
    /// Optional: a node without it (an older agent) has every image.
    pub const SERVICE_IMAGES: &str = "simg";
    pub const IMAGES: &str = "img";
}

/// Everything a node publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub quic: SocketAddr,
    pub api: SocketAddr,
    pub version: String,
    pub topology: TopologySummary,
    pub load: Load,
    pub draining: bool,
    /// Per service this node serves, its containers and connections.
    pub services: BTreeMap<String, ServiceLoad>,
    /// Per service whose image this node does not have: pulling or failed.
    #[serde(default)]
    pub service_images: BTreeMap<String, NodeImage>,
    /// The images it holds and its pulls under way.
    #[serde(default)]
    pub images: ImageSummary,
}

/// A gossip value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("missing key {0:?}")]
    Missing(&'static str),
    #[error("key {key:?} has invalid value {value:?}")]
    Invalid { key: &'static str, value: String },
    #[error("schema version {0} is not supported (this agent speaks {SCHEMA_VERSION})")]
    Version(String),
}

impl NodeInfo {
    /// The key-value pairs to publish.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        vec![
            (keys::VERSION.into(), SCHEMA_VERSION.to_string()),
            (keys::QUIC.into(), self.quic.to_string()),
            (keys::API.into(), self.api.to_string()),
            (keys::AGENT_VERSION.into(), self.version.clone()),
            (keys::TOPOLOGY.into(), self.topology.to_string()),
            (keys::LOAD.into(), self.load.to_string()),
            (
                keys::DRAINING.into(),
                if self.draining { "1" } else { "0" }.into(),
            ),
            (keys::SERVICES.into(), encode_loads(&self.services)),
            (
                keys::SERVICE_IMAGES.into(),
                encode_images(&self.service_images),
            ),
            (keys::IMAGES.into(), self.images.to_string()),
        ]
    }

    /// Reads a node's published values; `get` looks a key up.
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, SchemaError> {
        let need = |key: &'static str| get(key).ok_or(SchemaError::Missing(key));
        let invalid = |key: &'static str, value: &str| SchemaError::Invalid {
            key,
            value: value.chars().take(64).collect(),
        };
        let v = need(keys::VERSION)?;
        if v != SCHEMA_VERSION.to_string() {
            return Err(SchemaError::Version(v.chars().take(16).collect()));
        }
        let quic = need(keys::QUIC)?;
        let api = need(keys::API)?;
        let topo = need(keys::TOPOLOGY)?;
        let load = need(keys::LOAD)?;
        let drain = need(keys::DRAINING)?;
        let version = need(keys::AGENT_VERSION)?;
        let services = need(keys::SERVICES)?;
        let service_images = get(keys::SERVICE_IMAGES).unwrap_or("");
        let images = match get(keys::IMAGES) {
            None => ImageSummary::default(),
            Some(v) => ImageSummary::parse(v).map_err(|_| invalid(keys::IMAGES, v))?,
        };
        Ok(Self {
            quic: quic.parse().map_err(|_| invalid(keys::QUIC, quic))?,
            api: api.parse().map_err(|_| invalid(keys::API, api))?,
            version: version.chars().take(32).collect(),
            topology: TopologySummary::parse(topo).ok_or_else(|| invalid(keys::TOPOLOGY, topo))?,
            load: Load::parse(load).ok_or_else(|| invalid(keys::LOAD, load))?,
            draining: match drain {
                "0" => false,
                "1" => true,
                other => return Err(invalid(keys::DRAINING, other)),
            },
            services: decode_loads(services).ok_or_else(|| invalid(keys::SERVICES, services))?,
            service_images: decode_images(service_images)
                .ok_or_else(|| invalid(keys::SERVICE_IMAGES, service_images))?,
            images,
        })
    }
}

/// Liveness as this node sees it: the failure detector's verdict, and
/// whether anything new was heard from a peer it still counts alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Alive,
    /// The failure detector counts it alive, but nothing new (heartbeat or
    /// value) was heard from it for longer than [`SUSPECT_AFTER_ROUNDS`]
    /// gossip intervals: it may be dying (paused, partitioned, overloaded).
    /// No new work goes there; everything else treats it as alive (its
    /// tasks are not re-placed, its leases hold) until it is declared dead
    /// or heard from again.
    Suspect,
    Dead,
}

/// Gossip intervals without news from a peer after which it is suspect.
/// A live peer's heartbeat changes every interval and reaches this node
/// within a round or two; three silent rounds are unusual.
pub const SUSPECT_AFTER_ROUNDS: u32 = 3;

impl PeerState {
    /// Not declared dead: alive or suspect. What failover, leases and
    /// majorities go by (a suspect peer still runs its tasks).
    pub fn is_live(self) -> bool {
        !matches!(self, PeerState::Dead)
    }

    /// Alive and not suspect: may be given new work.
    pub fn takes_work(self) -> bool {
        matches!(self, PeerState::Alive)
    }
}

/// A peer's state from the failure detector's verdict (`alive`), how long
/// ago something new was last heard from it (`heard_ms_ago`; `None` when
/// it was never observed changing, i.e. just seen) and the gossip
/// interval. This node itself is never suspect.
pub fn peer_state(
    alive: bool,
    is_self: bool,
    heard_ms_ago: Option<u64>,
    gossip_interval_ms: u64,
) -> PeerState {
    let quiet_for = gossip_interval_ms.saturating_mul(u64::from(SUSPECT_AFTER_ROUNDS));
    match (alive, heard_ms_ago) {
        (false, _) => PeerState::Dead,
        (true, Some(ago)) if !is_self && ago > quiet_for => PeerState::Suspect,
        (true, _) => PeerState::Alive,
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Dead => "dead",
        })
    }
}

/// One peer in `GET /v1/peers` and `meshctl peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub node: NodeId,
    pub state: PeerState,
    /// The node answering the request.
    pub is_self: bool,
    /// Incremented each time the node restarts.
    pub generation: u64,
    /// Gossip address the peer advertises.
    pub gossip_addr: SocketAddr,
    /// Its published values; `None` with `error` set if they do not parse.
    pub info: Option<NodeInfo>,
    pub error: Option<String>,
    /// Milliseconds since its state last changed here (heartbeat or value).
    pub last_heard_ms: Option<u64>,
    /// Whether this node has seen the peer's certificate name its node id at
    /// its gossip address (directly, not just through gossip).
    pub verified: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn info(free: Vec<u32>, running: u32, cpu: u32, draining: bool) -> NodeInfo {
        NodeInfo {
            quic: "10.0.0.5:7946".parse().unwrap(),
            api: "10.0.0.5:7700".parse().unwrap(),
            version: "0.1.0".into(),
            topology: TopologySummary {
                packages: 1,
                cores_per_numa: vec![4, 4],
                pus_per_core: 2,
            },
            load: Load {
                free_per_numa: free,
                running,
                queued: 3,
                cpu_percent: cpu,
            },
            draining,
            services: BTreeMap::from([(
                "echo".to_string(),
                ServiceLoad {
                    containers: 3,
                    conns: 2,
                    ..ServiceLoad::default()
                },
            )]),
            service_images: BTreeMap::from([("web".to_string(), NodeImage::Failed)]),
            images: ImageSummary::default(),
        }
    }

    fn decode(pairs: &[(String, String)]) -> Result<NodeInfo, SchemaError> {
        let map: BTreeMap<&str, &str> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        NodeInfo::from_lookup(|k| map.get(k).copied())
    }

    #[test]
    fn strict_decoding() {
        let mut pairs = info(vec![1, 2], 1, 5, false).to_pairs();
        pairs.retain(|(k, _)| k != keys::LOAD);
        assert_eq!(decode(&pairs), Err(SchemaError::Missing("load")));
        let mut pairs = info(vec![1], 1, 5, false).to_pairs();
        pairs[0].1 = "1".into(); // an older schema
        assert!(matches!(decode(&pairs), Err(SchemaError::Version(_))));
        let mut pairs = info(vec![1], 1, 5, false).to_pairs();
        for (k, v) in &mut pairs {
            if k == keys::LOAD {
                *v = "1;2;3;101".into();
            }
        }
        let got = decode(&pairs);
        assert!(
            matches!(got, Err(SchemaError::Invalid { key: "load", .. })),
            "{got:?}"
        );
    }

    /// `simg` is optional: an agent that does not publish it (an older one)
    /// has every image; a value that does not parse is refused.
    #[test]
    fn images_are_optional_and_strict() {
        let i = info(vec![1], 1, 5, false);
        let mut pairs = i.to_pairs();
        pairs.retain(|(k, _)| k != keys::SERVICE_IMAGES);
        let older = decode(&pairs).unwrap();
        assert!(older.service_images.is_empty());
        assert_eq!(older.services, i.services);
        pairs.push((keys::SERVICE_IMAGES.into(), "web:x".into()));
        let got = decode(&pairs);
        assert!(
            matches!(got, Err(SchemaError::Invalid { key: "simg", .. })),
            "{got:?}"
        );
    }

    #[test]
    fn images_are_optional_but_checked_when_there() {
        let mut i = info(vec![1], 1, 5, false);
        i.images = ImageSummary::of(
            &[crate::image::ListedImage {
                id: "sha256:".to_owned() + &"ab".repeat(32),
                repo_tags: vec!["busybox:latest".into()],
                repo_digests: Vec::new(),
            }],
            1,
        );
        assert_eq!(decode(&i.to_pairs()), Ok(i.clone()));
        let wanted = crate::image::Wanted::of("busybox").unwrap();
        assert!(decode(&i.to_pairs()).unwrap().images.holds(&wanted));
        // An older agent publishes no `img`: it holds nothing we know of.
        let mut pairs = i.to_pairs();
        pairs.retain(|(k, _)| k != keys::IMAGES);
        assert_eq!(decode(&pairs).unwrap().images, ImageSummary::default());
        // A malformed filter is refused with the peer's other values.
        for bad in ["1;7;!!", "1;99;AAAA", "1;7"] {
            let mut pairs = i.to_pairs();
            for (k, v) in &mut pairs {
                if k == keys::IMAGES {
                    *v = bad.into();
                }
            }
            let got = decode(&pairs);
            assert!(
                matches!(got, Err(SchemaError::Invalid { key: "img", .. })),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn a_quiet_live_peer_is_suspect_until_heard_or_dead() {
        use PeerState::*;
        let every = 200; // ms
        // The failure detector's verdict comes first.
        assert_eq!(peer_state(false, false, Some(0), every), Dead);
        assert_eq!(peer_state(false, false, None, every), Dead);
        // Alive and heard within three intervals.
        assert_eq!(peer_state(true, false, None, every), Alive);
        assert_eq!(peer_state(true, false, Some(0), every), Alive);
        assert_eq!(peer_state(true, false, Some(600), every), Alive);
        // Alive to the failure detector, but quiet for longer.
        assert_eq!(peer_state(true, false, Some(601), every), Suspect);
        assert_eq!(peer_state(true, false, Some(u64::MAX), every), Suspect);
        // This node is never suspect of itself.
        assert_eq!(peer_state(true, true, Some(10_000), every), Alive);
        // No overflow with an absurd interval.
        assert_eq!(peer_state(true, false, Some(u64::MAX), u64::MAX), Alive);
        // What each state allows.
        assert!(Suspect.is_live() && !Suspect.takes_work());
        assert!(Alive.is_live() && Alive.takes_work());
        assert!(!Dead.is_live() && !Dead.takes_work());
        assert_eq!(Suspect.to_string(), "suspect");
        assert_eq!(serde_json::to_string(&Suspect).unwrap(), "\"suspect\"");
    }

    #[test]
    fn bytes_per_node_are_small() {
        let pairs = info(vec![4, 4], 0, 0, false).to_pairs();
        let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(bytes < 120, "{bytes}");
    }

    proptest! {
        #[test]
        fn round_trip(free in proptest::collection::vec(0u32..512, 0..8), running in 0u32..10_000,
                      cpu in 0u32..=100, draining: bool) {
            let i = info(free, running, cpu, draining);
            prop_assert_eq!(decode(&i.to_pairs()).unwrap(), i);
        }
    }
}
