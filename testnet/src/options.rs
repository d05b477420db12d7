//! How to start a testnet: [`TestnetOptions`], with the defaults the
//! `mesh-testnet` command uses and a preset for tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::name::TestnetName;

/// The topology each agent gets unless told otherwise: 2 NUMA nodes of 2
/// single-threaded cores.
pub const DEFAULT_TOPOLOGY: &str = "numa:2 core:2 pu:1";
/// The image `scripts/images` builds.
pub const DEFAULT_IMAGE: &str = "meshd:testnet";
/// Names another agent image for [`TestnetOptions::for_test`].
pub const TEST_IMAGE_VAR: &str = "MESH_TESTNET_IMAGE";
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(500);
/// How long `up`, `restart` and `add_foreign` wait for an agent to answer
/// `/v1/health`.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `Testnet::up` starts.
#[derive(Debug, Clone)]
pub struct TestnetOptions {
    pub name: TestnetName,
    /// Agents `n1` to `nN`.
    pub nodes: usize,
    /// Synthetic hwloc topology of every agent not in `topologies`.
    pub topology: String,
    /// Topology per node, by node name, overriding `topology`.
    pub topologies: BTreeMap<String, String>,
    pub image: String,
    /// `None`: [`default_state_dir`] of the name.
    pub state_dir: Option<PathBuf>,
    pub gossip_interval: Duration,
    /// Passed to every agent's meshd after the harness's flags.
    pub extra_args: Vec<String>,
    /// Give each agent a Docker socket proxy of its own, run by this
    /// process, that can stop Docker answering it (the chaos run).
    pub docker_proxy: bool,
    /// Agents whose data directory is a tmpfs of this size (e.g. `64m`).
    pub small_data: BTreeMap<String, String>,
    /// Give each agent a Docker engine of its own, started with no images
    /// (see `engine.rs`), instead of the host's: image presence is then
    /// per node, as on real hosts.
    pub own_docker: bool,
    pub ready_timeout: Duration,
    /// Whether dropping the `Testnet` removes it (tests: yes; the command
    /// line tool, whose testnet outlives the process: no).
    pub teardown_on_drop: bool,
}

impl Default for TestnetOptions {
    fn default() -> Self {
        Self {
            name: TestnetName::default(),
            nodes: 3,
            topology: DEFAULT_TOPOLOGY.into(),
            topologies: BTreeMap::new(),
            image: DEFAULT_IMAGE.into(),
            state_dir: None,
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            extra_args: Vec::new(),
            docker_proxy: false,
            small_data: BTreeMap::new(),
            own_docker: false,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            teardown_on_drop: false,
        }
    }
}

impl TestnetOptions {
    /// A testnet for one test: a unique name from `label` (so parallel tests
    /// and a user's `ganger` testnet never collide) and removed when dropped,
    /// panics included. The agents' image is [`DEFAULT_IMAGE`] unless
    /// `MESH_TESTNET_IMAGE` names another (so checkouts side by side can
    /// each test their own meshd: `MESHD_IMAGE=meshd:mine scripts/images`).
    pub fn for_test(label: &str) -> Self {
        let image = std::env::var(TEST_IMAGE_VAR)
            .ok()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| DEFAULT_IMAGE.into());
        Self {
            name: TestnetName::unique(label),
            teardown_on_drop: true,
            image,
            ..Self::default()
        }
    }

    pub fn name(mut self, name: TestnetName) -> Self {
        self.name = name;
        self
    }

    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    pub fn topology(mut self, topology: impl Into<String>) -> Self {
        self.topology = topology.into();
        self
    }

    pub fn topology_of(mut self, node: impl Into<String>, topology: impl Into<String>) -> Self {
        self.topologies.insert(node.into(), topology.into());
        self
    }

    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip_interval = interval;
        self
    }

    pub fn extra_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    pub fn docker_proxy(mut self, on: bool) -> Self {
        self.docker_proxy = on;
        self
    }

    pub fn small_data(mut self, node: impl Into<String>, size: impl Into<String>) -> Self {
        self.small_data.insert(node.into(), size.into());
        self
    }

    pub fn own_docker(mut self, on: bool) -> Self {
        self.own_docker = on;
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    pub fn teardown_on_drop(mut self, teardown: bool) -> Self {
        self.teardown_on_drop = teardown;
        self
    }

    /// The topology of the agent called `node`.
    pub fn topology_for(&self, node: &str) -> &str {
        self.topologies.get(node).unwrap_or(&self.topology)
    }
}

/// Where testnet `name` keeps its state: `<repo>/target/testnet/<name>`
/// (the repository this crate was built from).
pub fn default_state_dir(name: &TestnetName) -> PathBuf {
    default_state_root().join(name.as_str())
}

/// `<repo>/target/testnet`: where the default state directories live.
pub fn default_state_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The crate sits at <repo>/testnet; fall back to its own dir otherwise.
    let repo = manifest.parent().unwrap_or(manifest);
    repo.join("target").join("testnet")
}
