//! [`Testnet`]: meshd agents in containers of one Docker network on this
//! host, started, killed, cut off and healed on command.
//!
//! The handle carries the testnet's [`State`] (also saved in its state
//! directory, so a later process can [`Testnet::open`] it); what runs and
//! what is connected is always read back from Docker.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use mesh_protocol::NodeId;
use mesh_protocol::pki::OffsetDateTime;
use meshctl::client::Client;
use meshctl::node_url::NodeUrl;

use crate::agent::{self, LABEL_TESTNET};
use crate::certs;
use crate::docker::Docker;
use crate::engine::{self, EngineRecord};
use crate::error::TestnetError;
use crate::leftovers::Leftovers;
use crate::name::TestnetName;
use crate::options::{DEFAULT_READY_TIMEOUT, TestnetOptions, default_state_dir};
use crate::sockproxy::SocketProxy;
use crate::state::{Layout, NodeRecord, State};
use crate::status::{self, NodeState, NodeStatus};
use crate::subnet::{self, Ipv4Net, MAX_AGENTS, Subnet};
use crate::teardown::{self, Removed};

/// How long one of the harness's own calls to an agent may take: it polls,
/// so it would rather give up on an agent soon and ask again.
const POLL_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Subnets tried before giving up (each try is one `docker network create`).
const SUBNET_TRIES: usize = 64;

mod faults;
mod split;

/// A running testnet. Dropping it removes the testnet if it was started with
/// `teardown_on_drop` (tests), and leaves it running otherwise (the
/// `mesh-testnet` command).
#[derive(Debug)]
pub struct Testnet {
    pub(crate) docker: Docker,
    pub(crate) state: State,
    pub(crate) layout: Layout,
    /// Where teardown records a network Docker will not remove.
    leftovers: Leftovers,
    /// The harness's own clients, by node, kept so that its polls reuse
    /// their connections.
    poll_clients: Mutex<BTreeMap<String, Client>>,
    ready_timeout: Duration,
    started_at: Instant,
    teardown_on_drop: bool,
    /// Each agent's Docker socket proxy, by node, when it has one.
    proxies: BTreeMap<String, SocketProxy>,
}

impl Testnet {
    /// Starts a testnet: its network, CA and node certificates, and one agent
    /// container per node, then waits until every agent answers
    /// `/v1/health`. On failure, whatever was created is removed again.
    pub async fn up(opts: TestnetOptions) -> Result<Self, TestnetError> {
        if opts.nodes == 0 || opts.nodes > MAX_AGENTS {
            return Err(TestnetError::NodeCount {
                asked: opts.nodes,
                max: MAX_AGENTS,
            });
        }
        let docker = Docker::new();
        check_docker(&docker, &opts.image).await?;
        let docker_socket = docker_socket()?;
        let name = opts.name.clone();
        let dir = absolute(
            opts.state_dir
                .clone()
                .unwrap_or_else(|| default_state_dir(&name)),
        )?;
        // Networks earlier teardowns had to leave behind: removed if Docker
        // lets go of them now (one might even carry this name), kept clear
        // of otherwise.
        let leftovers = Leftovers::default_location();
        let kept = {
            let (docker, leftovers) = (docker.clone(), leftovers.clone());
            blocking(move || leftovers.retry(&docker)).await?.kept
        };
        if kept.iter().any(|l| l.name == name) {
            return Err(TestnetError::NetworkLeftBehind { name });
        }
        if State::load(&dir)?.is_some() || network_exists(&docker, &name).await? {
            return Err(TestnetError::AlreadyUp { name, dir });
        }
        let members = (1..=opts.nodes)
            .map(|i| NodeId::new(format!("n{i}")))
            .collect::<Result<Vec<_>, _>>()?;

        if opts.own_docker {
            // Engines of testnets that crashed: removed, their bridges and
            // subnets freed.
            blocking(|| Ok(engine::clean_leftovers()?)).await?;
        }
        let mut taken = docker_subnets(&docker).await?;
        taken.extend(kept.iter().filter_map(|l| Ipv4Net::parse(&l.subnet)));
        // Other testnets' engine bridges, which Docker's overlap check
        // misses. Only an own-docker testnet cannot do without them.
        match engine::host_subnets() {
            Ok(host) => taken.extend(host),
            Err(e) if opts.own_docker => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, "cannot list the host's subnets"),
        }
        let subnet = create_network(&docker, &name, &taken).await?;
        let mut nodes = Vec::with_capacity(members.len());
        for (slot, node) in members.into_iter().enumerate() {
            nodes.push(NodeRecord {
                container: format!("{name}-{node}"),
                ip: subnet.agent_ip(slot).ok_or(TestnetError::NodeCount {
                    asked: opts.nodes,
                    max: MAX_AGENTS,
                })?,
                topology: opts.topology_for(node.as_str()).to_owned(),
                foreign: false,
                node,
            });
        }
        let mut engines = BTreeMap::new();
        if opts.own_docker {
            taken.push(
                Ipv4Net::parse(&subnet.cidr()).ok_or(TestnetError::NoSubnet {
                    last: subnet.cidr(),
                })?,
            );
            let layout = Layout::new(dir.clone());
            for (slot, node) in nodes.iter().enumerate() {
                let bridge_net = engine::free_subnet(name.as_str(), slot, &taken)
                    .ok_or(engine::EngineError::NoSubnet)?;
                taken.extend(Ipv4Net::parse(&bridge_net.cidr()));
                let record = EngineRecord::new(
                    &name,
                    node.node.as_str(),
                    slot,
                    &dir,
                    &layout.node_dir(&node.node),
                    bridge_net,
                );
                engines.insert(node.node.to_string(), record);
            }
        }
        let state = State {
            name,
            image: opts.image.clone(),
            subnet,
            docker_socket,
            gossip_interval_ms: u64::try_from(opts.gossip_interval.as_millis()).unwrap_or(u64::MAX),
            extra_args: opts.extra_args.clone(),
            docker_proxy: opts.docker_proxy,
            small_data: opts.small_data.clone(),
            engines,
            nodes,
        };
        // From here on, an error drops `net`, which removes what exists.
        let mut net = Self {
            docker,
            state,
            layout: Layout::new(dir),
            leftovers,
            poll_clients: Mutex::default(),
            ready_timeout: opts.ready_timeout,
            started_at: Instant::now(),
            teardown_on_drop: true,
            proxies: BTreeMap::new(),
        };
        let dir = net.layout.root().to_owned();
        create_dir(&dir)?;
        net.state.save(&dir)?;

        net.start_engines().await?;

        let now = OffsetDateTime::now_utc();
        let ca = certs::create_ca(&net.layout.ca_dir(), net.state.name.as_str(), now)?;
        for node in &net.state.nodes {
            certs::create_node_tls(&net.layout, &ca, &node.node, now)?;
            create_dir(&net.layout.data_dir(&node.node))?;
            if net.state.docker_proxy {
                let path = net.layout.docker_proxy(&node.node);
                let upstream = net
                    .state
                    .engine(&node.node)
                    .map_or_else(|| net.state.docker_socket.clone(), EngineRecord::socket);
                let proxy =
                    SocketProxy::start(&path, upstream).map_err(|source| TestnetError::Io {
                        what: "start the Docker socket proxy at",
                        path,
                        source,
                    })?;
                net.proxies.insert(node.node.to_string(), proxy);
            }
        }

        let runs: Vec<Vec<String>> = net
            .state
            .nodes
            .iter()
            .map(|n| agent::run_args(&net.state, &net.layout, n))
            .collect();
        try_join_all(runs.iter().map(|args| net.docker.run(args))).await?;
        net.started_at = Instant::now();
        tracing::info!(testnet = %net.state.name, nodes = opts.nodes, subnet = %net.state.subnet.cidr(), "agents started");

        try_join_all(net.state.nodes.iter().map(|n| net.wait_ready(n))).await?;
        net.teardown_on_drop = opts.teardown_on_drop;
        Ok(net)
    }

    /// The testnet `name` a previous `up` started, from its state directory
    /// (`None`: the default one). Dropping the handle leaves it running.
    pub fn open(name: &TestnetName, state_dir: Option<PathBuf>) -> Result<Self, TestnetError> {
        let dir = absolute(state_dir.unwrap_or_else(|| default_state_dir(name)))?;
        let state = State::load(&dir)?.ok_or_else(|| TestnetError::NotUp {
            name: name.clone(),
            dir: dir.clone(),
        })?;
        Ok(Self {
            docker: Docker::new(),
            state,
            layout: Layout::new(dir),
            leftovers: Leftovers::default_location(),
            poll_clients: Mutex::default(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            started_at: Instant::now(),
            teardown_on_drop: false,
            proxies: BTreeMap::new(),
        })
    }

    /// Removes testnet `name` (see [`Testnet::down`]) whether or not its
    /// state directory still exists.
    pub async fn remove(
        name: &TestnetName,
        state_dir: Option<PathBuf>,
    ) -> Result<Removed, TestnetError> {
        let dir = absolute(state_dir.unwrap_or_else(|| default_state_dir(name)))?;
        let name = name.clone();
        let docker = Docker::new();
        let leftovers = Leftovers::default_location();
        blocking(move || teardown::teardown(&docker, &name, &dir, &leftovers)).await
    }

    /// Removes the agents, every container they started, the network and the
    /// state directory.
    pub async fn down(mut self) -> Result<Removed, TestnetError> {
        self.teardown_on_drop = false;
        let (docker, name, dir, leftovers) = (
            self.docker.clone(),
            self.state.name.clone(),
            self.layout.root().to_owned(),
            self.leftovers.clone(),
        );
        blocking(move || teardown::teardown(&docker, &name, &dir, &leftovers)).await
    }

    pub fn name(&self) -> &TestnetName {
        &self.state.name
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn state_dir(&self) -> &Path {
        self.layout.root()
    }

    /// The cluster's members, `n1` to `nN` (foreign nodes left out).
    pub fn nodes(&self) -> Vec<NodeId> {
        self.state.members().map(|n| n.node.clone()).collect()
    }

    /// When the last agent container had been started, the origin for
    /// "within N s of start" (for a handle from [`Testnet::open`]: when it
    /// was opened).
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Where `node`'s HTTP API answers, from the host.
    pub fn api_url(&self, node: &str) -> Result<String, TestnetError> {
        Ok(status::api_url(self.state.node(node)?.ip))
    }

    /// meshctl's client of `node`'s API: the one client the tests and the
    /// benchmarks use.
    pub fn client(&self, node: &str) -> Result<Client, TestnetError> {
        let url = self.node_url(node)?;
        Ok(Client::new(url)
            .map_err(TestnetError::api(node))?
            .with_token(self.api_token()?))
    }

    /// The client the harness polls `node` with: it gives up on a call
    /// after [`POLL_CALL_TIMEOUT`].
    pub(crate) fn poll_client(&self, node: &str) -> Result<Client, TestnetError> {
        // Held only to look up or insert; a panic elsewhere while holding it
        // leaves the map as valid as before, so a poisoned lock is used as is.
        let mut clients = self
            .poll_clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(node) {
            return Ok(client.clone());
        }
        let url = self.node_url(node)?;
        let client = Client::with_timeouts(url, POLL_CALL_TIMEOUT, POLL_CALL_TIMEOUT)
            .map_err(TestnetError::api(node))?
            .with_token(self.api_token()?);
        clients.insert(node.to_owned(), client.clone());
        Ok(client)
    }

    /// The agents' admin token (see `certs`), if the testnet has one.
    pub fn api_token(&self) -> Result<Option<String>, TestnetError> {
        let path = self.layout.api_token_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TestnetError::Io {
                what: "read the API token",
                path,
                source,
            }),
        }
    }

    fn node_url(&self, node: &str) -> Result<NodeUrl, TestnetError> {
        let ip = self.state.node(node)?.ip;
        Ok(NodeUrl::from(std::net::SocketAddr::from((
            ip,
            agent::API_PORT,
        ))))
    }

    /// Every node with its address, state and API URL.
    pub async fn ls(&self) -> Result<Vec<NodeStatus>, TestnetError> {
        let ps = self
            .docker
            .run(&[
                "ps".to_owned(),
                "--all".to_owned(),
                "--filter".to_owned(),
                format!("label={LABEL_TESTNET}={}", self.state.name),
                "--format".to_owned(),
                status::ps_format(),
            ])
            .await?;
        Ok(status::statuses(
            &self.state,
            &status::parse_ps(&ps),
            &self.layout.api_token_file(),
        ))
    }

    /// Starts every node's own engine, if the testnet has them, and waits
    /// until each answers.
    async fn start_engines(&self) -> Result<(), TestnetError> {
        for engine in self.state.engines.values() {
            let engine = engine.clone();
            blocking(move || Ok(engine::start(&engine)?)).await?;
        }
        try_join_all(
            self.state
                .engines
                .values()
                .map(|e| engine::wait_ready(e, engine::START_LIMIT)),
        )
        .await?;
        if !self.state.engines.is_empty() {
            tracing::info!(testnet = %self.state.name, engines = self.state.engines.len(), "own engines started");
        }
        Ok(())
    }

    /// The `docker` client of `node`'s own engine, or of the host's if it
    /// has none.
    pub fn docker_of(&self, node: &str) -> Result<Docker, TestnetError> {
        let record = self.state.node(node)?;
        Ok(self
            .state
            .engine(&record.node)
            .map_or_else(|| self.docker.clone(), EngineRecord::docker))
    }

    /// Whether dropping this handle removes the testnet.
    pub fn set_teardown_on_drop(&mut self, teardown: bool) {
        self.teardown_on_drop = teardown;
    }

    /// Waits until `node` answers `/v1/health` with `ok`; on timeout the
    /// error carries the end of its log.
    async fn wait_ready(&self, node: &NodeRecord) -> Result<(), TestnetError> {
        let what = format!("{} answers /v1/health", node.node);
        let result = crate::steps::wait_until(&what, self.ready_timeout, async || {
            match self.health(node.node.as_str()).await {
                Ok(h) if h.ok => Ok(()),
                Ok(h) => Err(format!("not ok: {h:?}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(source) => Err(TestnetError::NotReady {
                node: node.node.to_string(),
                container: node.container.clone(),
                source: Box::new(source),
                logs: self.docker.logs(&node.container, 20).await,
            }),
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if !self.teardown_on_drop {
            return;
        }
        let (name, dir) = (&self.state.name, self.layout.root());
        if let Err(e) = teardown::teardown(&self.docker, name, dir, &self.leftovers) {
            // Drop cannot return it; a test's output shows it.
            eprintln!("mesh-testnet: {e}");
        }
    }
}

/// Fails unless Docker answers and has `image`.
async fn check_docker(docker: &Docker, image: &str) -> Result<(), TestnetError> {
    docker
        .run(&["version", "--format", "{{.Server.Version}}"])
        .await
        .map_err(TestnetError::DockerUnavailable)?;
    match docker
        .run(&["image", "inspect", "--format", "{{.Id}}", image])
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(TestnetError::NoImage {
            image: image.to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The host's Docker socket, from `DOCKER_HOST` (`unix://PATH`) or the
/// default `/var/run/docker.sock`.
fn docker_socket() -> Result<PathBuf, TestnetError> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .ok_or(TestnetError::DockerSocket(host)),
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

async fn network_exists(docker: &Docker, name: &TestnetName) -> Result<bool, TestnetError> {
    match docker.run(&["network", "inspect", name.as_str()]).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The subnets of every Docker network, IPv4 only.
async fn docker_subnets(docker: &Docker) -> Result<Vec<Ipv4Net>, TestnetError> {
    let ids = docker.run(&["network", "ls", "--quiet"]).await?;
    let mut args = vec![
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
    ];
    args.extend(ids.split_whitespace());
    let subnets = match docker.run(&args).await {
        Ok(subnets) => subnets,
        // One went between the listing and now: Docker's "overlaps" on
        // create still keeps us clear of the rest.
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(subnets
        .split_whitespace()
        .filter_map(Ipv4Net::parse)
        .collect())
}

/// Creates the testnet network on the first candidate subnet that overlaps
/// none of `taken`; one another testnet takes meanwhile (Docker says
/// "overlaps") is skipped too.
async fn create_network(
    docker: &Docker,
    name: &TestnetName,
    taken: &[Ipv4Net],
) -> Result<Subnet, TestnetError> {
    let mut last = String::new();
    for subnet in subnet::free_candidates(name.as_str(), taken).take(SUBNET_TRIES) {
        let args = [
            "network".to_owned(),
            "create".to_owned(),
            "--driver".to_owned(),
            "bridge".to_owned(),
            "--subnet".to_owned(),
            subnet.cidr(),
            "--gateway".to_owned(),
            subnet.gateway().to_string(),
            "--ip-range".to_owned(),
            subnet.dynamic_range(),
            "--label".to_owned(),
            format!("{LABEL_TESTNET}={name}"),
            name.to_string(),
        ];
        match docker.run(&args).await {
            Ok(_) => return Ok(subnet),
            Err(e) if e.stderr().contains("overlaps") => last = subnet.cidr(),
            Err(e) => return Err(e.into()),
        }
    }
    Err(TestnetError::NoSubnet { last })
}

fn absolute(dir: PathBuf) -> Result<PathBuf, TestnetError> {
    std::path::absolute(&dir).map_err(|source| TestnetError::Io {
        what: "resolve the state directory",
        path: dir,
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), TestnetError> {
    std::fs::create_dir_all(dir).map_err(|source| TestnetError::Io {
        what: "create",
        path: dir.to_owned(),
        source,
    })
}

/// Runs blocking teardown work off the async runtime.
/// Removes the firewall rules of a split of testnet `name` (teardown).
pub(crate) fn remove_split_rules(name: &TestnetName) -> Result<usize, TestnetError> {
    split::remove_rules(name)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TestnetError> + Send + 'static,
) -> Result<T, TestnetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TestnetError::Task(e.to_string()))?
}
