//! `mesh-testnet sim`: many gossip instances in one process over chitchat's
//! in-memory transport, publishing our real state schema, on tokio's paused
//! clock (so 1000 nodes cost CPU, not wall time). A benchmark: it measures,
//! it does not assert.
//!
//! Measured, in simulated time:
//! - convergence: from the first node's start until every node sees every
//!   node alive (the starts are spread over the first gossip interval
//!   unless `staggered_start` is off);
//! - propagation: a change of one node's `load` until every node has it;
//! - failure detection: one node stops until every other marks it dead;
//! - traffic: gossip bytes and messages per node per second in steady state,
//!   in chitchat's own serialization and in the compact form the agents
//!   send (every message goes through it and back, see `wire`).

mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat::transport::{ChannelTransport, Transport};
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use mesh_protocol::gossip::{NodeInfo, keys};
use mesh_protocol::load::{Load, TopologySummary};
use tokio::time::Instant;

/// Settings of one simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    /// How many of the first nodes every node uses as seeds.
    pub seeds: usize,
    /// Gives up on a phase after this much simulated time.
    pub limit: Duration,
    /// Spreads the nodes' starts over the first gossip interval, as real
    /// agents' starts and so their gossip rounds are spread; otherwise all
    /// start, and gossip, at the same instants.
    pub staggered_start: bool,
    /// Codes each SYN-ACK against the SYN it answers, as the agents do
    /// (`digest_codec::compact_answer`); otherwise sends it whole.
    pub coded_answers: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 10,
            gossip_interval: Duration::from_millis(500),
            phi_threshold: 6.0,
            seeds: 3,
            limit: Duration::from_secs(600),
            staggered_start: true,
            coded_answers: true,
        }
    }
}

/// What one simulation measured (simulated milliseconds; None: not reached
/// within the limit).
#[derive(Debug, Clone)]
pub struct SimReport {
    pub nodes: usize,
    pub converge_ms: Option<u64>,
    pub propagate_ms: Option<u64>,
    pub detect_ms: Option<u64>,
    /// In chitchat's own serialization.
    pub bytes_per_node_per_s: f64,
    /// In the compact form the agents send.
    pub compact_bytes_per_node_per_s: f64,
    pub messages_per_node_per_s: f64,
    /// Published key-value bytes of one node (keys + values).
    pub state_bytes_per_node: usize,
    pub wall: Duration,
}

impl SimReport {
    pub fn markdown_header() -> &'static str {
        "| nodes | converge (s) | change reaches all (s) | failure detected by all (s) | gossip bytes/node/s, chitchat's form | gossip bytes/node/s on the wire (compact) | messages/node/s | state bytes/node | wall time (s) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    }

    pub fn markdown_row(&self) -> String {
        let s = |v: Option<u64>| {
            v.map_or("not reached".to_owned(), |ms| {
                format!("{:.1}", ms as f64 / 1000.0)
            })
        };
        format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.1} | {} | {:.1} |",
            self.nodes,
            s(self.converge_ms),
            s(self.propagate_ms),
            s(self.detect_ms),
            self.bytes_per_node_per_s,
            self.compact_bytes_per_node_per_s,
            self.messages_per_node_per_s,
            self.state_bytes_per_node,
            self.wall.as_secs_f64()
        )
    }
}

fn addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250 + 1) as u8);
    SocketAddr::new(ip.into(), 7946)
}

/// Node `i`'s generation: as an agent's, its start time in milliseconds
/// (`Mesh::start`), spread over 30 days as the starts of a real mesh's
/// agents would be (the compact wire form codes each as a difference from
/// the one before, so equal generations would flatter it).
fn generation(i: usize) -> u64 {
    const THIRTY_DAYS_MS: u64 = 30 * 24 * 3600 * 1000;
    1_764_000_000_000 + (i as u64).wrapping_mul(2_654_435_761) % THIRTY_DAYS_MS
}

fn info(i: usize, load: Load) -> NodeInfo {
    NodeInfo {
        quic: addr(i),
        api: SocketAddr::new(addr(i).ip(), 7700),
        version: env!("CARGO_PKG_VERSION").into(),
        topology: TopologySummary {
            packages: 1,
            cores_per_numa: vec![4, 4],
            pus_per_core: 2,
        },
        load,
        draining: false,
        services: Default::default(),
        service_images: Default::default(),
        images: Default::default(),
    }
}

async fn poll_until<F, Fut>(limit: Duration, step: Duration, mut check: F) -> Option<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(step).await;
    }
    None
}

/// Runs one simulation on a fresh current-thread runtime with a paused clock.
pub fn run(cfg: &SimConfig) -> anyhow::Result<SimReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let wall = std::time::Instant::now();
    let mut report = rt.block_on(simulate(cfg))?;
    report.wall = wall.elapsed();
    Ok(report)
}

async fn simulate(cfg: &SimConfig) -> anyhow::Result<SimReport> {
    let (transport, wire) =
        wire::CompactWire::new(ChannelTransport::with_mtu(65_507), cfg.coded_answers);
    let seeds: Vec<String> = (0..cfg.seeds.min(cfg.nodes))
        .map(|i| addr(i).to_string())
        .collect();
    let mut handles: Vec<ChitchatHandle> = Vec::with_capacity(cfg.nodes);
    let started = Instant::now();
    for i in 0..cfg.nodes {
        if cfg.staggered_start && i > 0 {
            tokio::time::sleep(cfg.gossip_interval / cfg.nodes as u32).await;
        }
        let id = ChitchatId::new(format!("n{i}"), generation(i), addr(i));
        let config = ChitchatConfig {
            chitchat_id: id,
            cluster_id: "sim".into(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: addr(i),
            seed_nodes: seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: cfg.phi_threshold,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                initial_interval: cfg.gossip_interval * 2,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let pairs = info(i, Load::default()).to_pairs();
        handles.push(spawn_chitchat(config, pairs, &transport as &dyn Transport).await?);
    }
    let state_bytes_per_node = info(0, Load::default())
        .to_pairs()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let n = cfg.nodes;
    let step = cfg.gossip_interval / 5;

    let converge_ms = poll_until(cfg.limit, step, || async {
        for h in &handles {
            if h.with_chitchat(|c| c.live_nodes().count()).await < n {
                return false;
            }
        }
        true
    })
    .await
    .map(|_| started.elapsed().as_millis() as u64);

    // Steady-state traffic over 20 gossip intervals.
    let before = wire.totals();
    let messages_before = transport.messages();
    let window = cfg.gossip_interval * 20;
    tokio::time::sleep(window).await;
    let after = wire.totals();
    let secs = window.as_secs_f64() * n as f64;
    let bytes_per_node_per_s = (after.0 - before.0) as f64 / secs;
    let compact_bytes_per_node_per_s = (after.1 - before.1) as f64 / secs;
    let messages_per_node_per_s = (transport.messages() - messages_before) as f64 / secs;

    let last = n - 1;
    let changed = Load {
        free_per_numa: vec![3, 4],
        running: 1,
        queued: 0,
        cpu_percent: 12,
    }
    .to_string();
    let target = ChitchatId::new(format!("n{last}"), generation(last), addr(last));
    {
        let v = changed.clone();
        handles[last]
            .with_chitchat(move |c| c.self_node_state().set(keys::LOAD, v.clone()))
            .await;
    }
    let propagate_ms = poll_until(cfg.limit, step, || async {
        for h in &handles[..last] {
            let t = target.clone();
            let seen = h
                .with_chitchat(move |c| {
                    c.node_state(&t)
                        .and_then(|s| s.get(keys::LOAD).map(str::to_owned))
                })
                .await;
            if seen.as_deref() != Some(changed.as_str()) {
                return false;
            }
        }
        true
    })
    .await;

    let victim = handles.pop().ok_or_else(|| anyhow::anyhow!("no nodes"))?;
    victim.shutdown().await?;
    let detect_ms = poll_until(cfg.limit, step, || async {
        for h in &handles {
            let t = target.clone();
            if !h
                .with_chitchat(move |c| c.dead_nodes().any(|d| *d == t))
                .await
            {
                return false;
            }
        }
        true
    })
    .await;
    for h in handles {
        h.shutdown().await?;
    }
    Ok(SimReport {
        nodes: n,
        converge_ms,
        propagate_ms,
        detect_ms,
        bytes_per_node_per_s,
        compact_bytes_per_node_per_s,
        messages_per_node_per_s,
        state_bytes_per_node,
        wall: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small simulation converges, propagates and detects: the machinery
    /// works (no timing is asserted; the numbers are for the benchmark).
    #[test]
    fn small_mesh_reaches_every_phase() {
        let report = run(&SimConfig {
            nodes: 5,
            ..Default::default()
        })
        .unwrap();
        assert!(report.converge_ms.is_some(), "{report:?}");
        assert!(report.propagate_ms.is_some(), "{report:?}");
        assert!(report.detect_ms.is_some(), "{report:?}");
        assert!(report.bytes_per_node_per_s > 0.0);
        assert!(report.markdown_row().starts_with("| 5 |"));
    }
}
