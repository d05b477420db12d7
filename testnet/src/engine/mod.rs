//! A Docker engine of a node's own (`--own-docker`): a second `dockerd` on
//! this host per agent, so that image presence is per node as on real hosts
//! (the main engine holds every image; an own engine starts with none).
//!
//! Each engine has a bridge of ours as its default network (never
//! `--bridge none`, which made dockerd remove the main engine's `docker0`),
//! a subnet in 10.252.0.0/16–10.253.0.0/16, `vfs` storage, no iptables
//! rules and a containerd of its own. Its socket, pid file and exec root sit
//! in a short directory under [`RUN_ROOT`] (Unix socket paths are limited
//! to 108 bytes); its data root sits in the testnet's state directory. The
//! directory under [`RUN_ROOT`] also holds [`ENGINE_FILE`], the
//! [`EngineRecord`], by which a later run finds the engine again: the
//! teardown of its testnet, and [`clean_leftovers`] for the engines of
//! testnets whose state directory is gone (a run that crashed).
//!
//! Decisions (names, subnets, `dockerd`'s command line) are pure functions;
//! starting, waiting and stopping run `ip`, `dockerd`, `kill` and `docker`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod host;

use crate::docker::{Docker, DockerError};
use crate::name::TestnetName;
use crate::state::STATE_FILE;
use crate::subnet::{Ipv4Net, Subnet};
use crate::testsvc::fnv::fnv1a64;
pub use host::host_subnets;
use host::{create_dir, interface_exists, read_pid, remove_dir, run, runs_with, terminate, write};

/// Where the engines' run directories live, one per engine, named after
/// its bridge.
pub const RUN_ROOT: &str = "/run/mesh-testnet";
/// The record in an engine's run directory.
pub const ENGINE_FILE: &str = "engine.json";
/// Every engine bridge's name starts with it (a Linux interface name holds
/// at most 15 bytes: the prefix, 8 hex digits of the testnet's name and 2
/// of the node's slot).
pub const BRIDGE_PREFIX: &str = "mtd";
/// Engine subnets: the /24s of 10.252.0.0/16 and 10.253.0.0/16.
const POOL_SECOND_OCTET: u8 = 252;
const POOL_SIZE: u32 = 2 * 256;
/// How long `dockerd` may take to answer after it was started, and to exit
/// after SIGTERM before it is killed.
pub const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// Why an engine could not be started or removed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error(
        "no free /24 for an engine bridge in 10.252.0.0/16-10.253.0.0/16; remove leftover bridges (`ip -br link | grep ^{BRIDGE_PREFIX}`)"
    )]
    NoSubnet,
    #[error(
        "the bridge {0} exists already: another testnet's engine (its name hashes alike) or a leftover; `mesh-testnet down` it, or `ip link del {0}`"
    )]
    BridgeExists(String),
    #[error("the engine of {node} did not answer within {limit:?}: {source}; its log: {}", log.display())]
    NotReady {
        node: String,
        limit: Duration,
        #[source]
        source: DockerError,
        log: PathBuf,
    },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{} is not an engine record: {source}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One node's engine: enough to start it, reach it and remove all of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineRecord {
    pub testnet: TestnetName,
    pub node: String,
    /// The testnet's state directory: when it holds no state, the testnet
    /// is gone and this engine is a leftover.
    pub state_dir: PathBuf,
    pub bridge: String,
    pub subnet: Subnet,
    /// Socket, pid file, exec root and this record.
    pub run_dir: PathBuf,
    /// Images and containers (vfs: whole copies, so keep images small).
    pub data_root: PathBuf,
    /// dockerd's output.
    pub log: PathBuf,
}

impl EngineRecord {
    /// The record of node `slot`'s engine of testnet `name`, its data under
    /// `node_dir`.
    pub fn new(
        name: &TestnetName,
        node: &str,
        slot: usize,
        state_dir: &Path,
        node_dir: &Path,
        subnet: Subnet,
    ) -> Self {
        let bridge = bridge_name(name.as_str(), slot);
        Self {
            testnet: name.clone(),
            node: node.to_owned(),
            state_dir: state_dir.to_owned(),
            run_dir: Path::new(RUN_ROOT).join(&bridge),
            bridge,
            subnet,
            data_root: node_dir.join("engine"),
            log: node_dir.join("dockerd.log"),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("docker.sock")
    }

    /// `DOCKER_HOST` of this engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn pidfile(&self) -> PathBuf {
        self.run_dir.join("docker.pid")
    }

    fn exec_root(&self) -> PathBuf {
        self.run_dir.join("exec")
    }

    fn config_file(&self) -> PathBuf {
        self.run_dir.join("daemon.json")
    }

    /// The `docker` client of this engine.
    pub fn docker(&self) -> Docker {
        Docker::new().with_host(self.docker_host())
    }
}

/// The bridge of node `slot`'s engine of testnet `name`: [`BRIDGE_PREFIX`],
/// 8 hex digits of the name's hash, 2 of the slot (at most 15 bytes).
pub fn bridge_name(name: &str, slot: usize) -> String {
    format!(
        "{BRIDGE_PREFIX}{:08x}{:02x}",
        fnv1a64(name.as_bytes()) & 0xffff_ffff,
        slot & 0xff
    )
}

/// A /24 of the engine pool for node `slot` of testnet `name` that overlaps
/// none of `taken`, starting from one derived from both so that engines
/// started at once mostly try different ones.
pub fn free_subnet(name: &str, slot: usize, taken: &[Ipv4Net]) -> Option<Subnet> {
    let seed = fnv1a64(format!("{name}/{slot}").as_bytes()) % u64::from(POOL_SIZE);
    // The remainder is below POOL_SIZE, which fits a u32.
    let start = seed as u32;
    (0..POOL_SIZE)
        .map(|i| (start + i) % POOL_SIZE)
        .map(|i| {
            // Both fit a byte: i < 2 * 256.
            let (second, third) = (POOL_SECOND_OCTET + (i / 256) as u8, (i % 256) as u8);
            Subnet::try_from(format!("10.{second}.{third}.0/24"))
        })
        .filter_map(Result::ok)
        .find(|s| !taken.iter().any(|t| t.overlaps(s)))
}

/// `dockerd`'s command line for `engine`: everything of its own, an empty
/// config file (the host's `/etc/docker/daemon.json` must not apply), our
/// bridge as the default network and no iptables rules (the main engine's
/// stay as they are).
pub fn dockerd_args(engine: &EngineRecord) -> Vec<String> {
    let path = |p: PathBuf| p.display().to_string();
    vec![
        "--config-file".into(),
        path(engine.config_file()),
        "--data-root".into(),
        path(engine.data_root.clone()),
        "--exec-root".into(),
        path(engine.exec_root()),
        "--host".into(),
        engine.docker_host(),
        "--pidfile".into(),
        path(engine.pidfile()),
        "--storage-driver".into(),
        "vfs".into(),
        "--iptables=false".into(),
        "--bridge".into(),
        engine.bridge.clone(),
    ]
}

/// Creates `engine`'s run directory, record, bridge and data root, and
/// starts its `dockerd` in a process group of its own (it outlives the
/// `mesh-testnet up` that started it). Does not wait for it: see
/// [`wait_ready`].
pub fn start(engine: &EngineRecord) -> Result<(), EngineError> {
    if interface_exists(&engine.bridge) {
        return Err(EngineError::BridgeExists(engine.bridge.clone()));
    }
    // The record first: from here on, a crash leaves something
    // `clean_leftovers` finds.
    create_dir(&engine.run_dir)?;
    let record = engine.run_dir.join(ENGINE_FILE);
    // Serialising plain data with string keys cannot fail.
    let text = serde_json::to_string_pretty(engine).map_err(|source| EngineError::Record {
        path: record.clone(),
        source,
    })?;
    write(&record, &text)?;
    write(&engine.config_file(), "{}\n")?;
    create_dir(&engine.data_root)?;

    let gateway = format!("{}/24", engine.subnet.gateway());
    run("ip", &["link", "add", &engine.bridge, "type", "bridge"])?;
    run("ip", &["addr", "add", &gateway, "dev", &engine.bridge])?;
    run("ip", &["link", "set", &engine.bridge, "up"])?;

    let log = std::fs::File::create(&engine.log).map_err(|source| EngineError::Io {
        what: "create the engine log",
        path: engine.log.clone(),
        source,
    })?;
    let err = log.try_clone().map_err(|source| EngineError::Io {
        what: "open the engine log",
        path: engine.log.clone(),
        source,
    })?;
    use std::os::unix::process::CommandExt;
    Command::new("dockerd")
        .args(dockerd_args(engine))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| EngineError::Io {
            what: "start dockerd (Debian: docker.io) for",
            path: engine.run_dir.clone(),
            source,
        })?;
    Ok(())
}

/// Waits until `engine` answers `docker version`.
pub async fn wait_ready(engine: &EngineRecord, limit: Duration) -> Result<(), EngineError> {
    let docker = engine.docker().with_limit(Duration::from_secs(5));
    let deadline = Instant::now() + limit;
    loop {
        match docker
            .run(&["version", "--format", "{{.Server.Version}}"])
            .await
        {
            Ok(_) => return Ok(()),
            Err(source) if Instant::now() >= deadline => {
                return Err(EngineError::NotReady {
                    node: engine.node.clone(),
                    limit,
                    source,
                    log: engine.log.clone(),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Removes every container of `engine` (the agent's, after a kill).
/// Returns how many.
pub fn remove_containers(engine: &EngineRecord) -> Result<usize, EngineError> {
    let docker = engine.docker();
    let ids = docker.run_blocking(&["ps", "--all", "--quiet"])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    for id in &ids {
        match docker.run_blocking(&["rm", "--force", "--volumes", id]) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ids.len())
}

/// Removes all of `engine`: its containers, its `dockerd` (SIGTERM, then
/// SIGKILL after [`STOP_LIMIT`]) and containerd, its bridge, its data root
/// and its run directory. Goes on past failures and returns the first.
/// Returns how many containers it removed.
pub fn stop(engine: &EngineRecord) -> Result<usize, EngineError> {
    let mut containers = 0;
    let mut first: Option<EngineError> = None;
    let mut note = |r: Result<(), EngineError>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    // Only processes whose command line names the run directory.
    let run_dir = engine.run_dir.display().to_string();
    let ours = |pid: &u32| runs_with(*pid, &run_dir);
    let daemon = read_pid(&engine.pidfile()).filter(ours);
    let containerd =
        read_pid(&engine.exec_root().join("containerd").join("containerd.pid")).filter(ours);
    if daemon.is_some() {
        // With dockerd gone they would be stopped anyway; removed first so
        // that nothing of theirs is mounted when the data root goes.
        note(remove_containers(engine).map(|n| containers = n));
    }
    for pid in daemon.into_iter().chain(containerd) {
        note(terminate(pid));
    }
    // Another cleanup may be removing it at the same time: only a bridge
    // still there after a failed `ip link del` is a failure.
    if interface_exists(&engine.bridge)
        && let Err(e) = run("ip", &["link", "del", &engine.bridge])
        && interface_exists(&engine.bridge)
    {
        note(Err(e));
    }
    note(remove_dir(
        &engine.data_root,
        "remove the engine's data root",
    ));
    note(remove_dir(
        &engine.run_dir,
        "remove the engine's run directory",
    ));
    first.map_or(Ok(containers), Err)
}

/// The engines recorded under [`RUN_ROOT`], whatever their testnet.
pub fn list() -> Result<Vec<EngineRecord>, EngineError> {
    let entries = match std::fs::read_dir(RUN_ROOT) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EngineError::Io {
                what: "list",
                path: RUN_ROOT.into(),
                source,
            });
        }
    };
    let mut engines = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join(ENGINE_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            // A run directory being created: its record comes next.
            continue;
        };
        let engine =
            serde_json::from_str(&text).map_err(|source| EngineError::Record { path, source })?;
        engines.push(engine);
    }
    Ok(engines)
}

/// The engines of testnet `name`.
pub fn of_testnet(name: &TestnetName) -> Result<Vec<EngineRecord>, EngineError> {
    Ok(list()?.into_iter().filter(|e| e.testnet == *name).collect())
}

/// Removes every engine whose testnet's state directory holds no state
/// (its run crashed, or its state was deleted by hand). Goes on past an
/// engine it cannot remove (warned about). Returns how many went.
pub fn clean_leftovers() -> Result<usize, EngineError> {
    let mut cleaned = 0;
    for engine in list()? {
        // Its testnet's state is saved before its engines start, and
        // removed after they are: without it, the testnet is gone.
        if !engine.state_dir.join(STATE_FILE).exists() {
            tracing::warn!(engine = %engine.bridge, testnet = %engine.testnet, "removing a leftover engine");
            match stop(&engine) {
                Ok(_) => cleaned += 1,
                Err(e) => {
                    tracing::warn!(engine = %engine.bridge, error = %e, "cannot remove a leftover engine")
                }
            }
        }
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EngineRecord {
        EngineRecord::new(
            &TestnetName::new("tn").unwrap(),
            "n2",
            1,
            Path::new("/st"),
            Path::new("/st/nodes/n2"),
            "10.252.7.0/24".to_owned().try_into().unwrap(),
        )
    }

    #[test]
    fn bridge_names_fit_linux_and_differ_by_testnet_and_slot() {
        let a = bridge_name("tn-own-docker-12345-abcd", 125);
        assert!(a.len() <= 15 && a.starts_with(BRIDGE_PREFIX), "{a}");
        assert_ne!(bridge_name("tn", 0), bridge_name("tn", 1));
        assert_ne!(bridge_name("tn", 0), bridge_name("tn2", 0));
        assert_eq!(bridge_name("tn", 3), bridge_name("tn", 3));
    }

    #[test]
    fn subnets_stay_in_the_pool_and_clear_of_taken_ones() {
        let s = free_subnet("tn", 0, &[]).unwrap();
        let cidr = s.cidr();
        assert!(
            cidr.starts_with("10.252.") || cidr.starts_with("10.253."),
            "{cidr}"
        );
        let taken = [Ipv4Net::parse(&cidr).unwrap()];
        let other = free_subnet("tn", 0, &taken).unwrap();
        assert_ne!(other, s);
        // The whole pool taken: none.
        let all = [Ipv4Net::parse("10.252.0.0/15").unwrap()];
        assert_eq!(free_subnet("tn", 0, &all), None);
    }

    #[test]
    fn dockerd_has_everything_of_its_own_and_our_bridge() {
        let e = record();
        let args = dockerd_args(&e).join(" ");
        let run = format!("{RUN_ROOT}/{}", e.bridge);
        for part in [
            format!("--config-file {run}/daemon.json"),
            "--data-root /st/nodes/n2/engine".to_owned(),
            format!("--exec-root {run}/exec"),
            format!("--host unix://{run}/docker.sock"),
            format!("--pidfile {run}/docker.pid"),
            "--storage-driver vfs --iptables=false".to_owned(),
            format!("--bridge {}", e.bridge),
        ] {
            assert!(args.contains(&part), "missing {part:?} in {args}");
        }
        assert!(!args.contains("--bridge none"), "{args}");
        // A Unix socket path holds at most 108 bytes.
        assert!(e.socket().as_os_str().len() < 108);
    }

    #[test]
    fn records_round_trip() {
        let e = record();
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<EngineRecord>(&text).unwrap(), e);
    }
}
