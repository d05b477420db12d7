//! Removing a testnet and what its agents started. Synchronous, so that a
//! test's `Drop` can run it during a panic; it goes on past failures and
//! reports them all at the end, so one stuck container does not leave the
//! rest behind.
//!
//! It needs nothing but the name: agents are found by their labels and the
//! network by its name, so `down` also cleans up after a testnet whose state
//! directory is gone or was never written.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::agent::{LABEL_NODE, LABEL_TESTNET};
use crate::docker::Docker;
use crate::error::TestnetError;
use crate::name::TestnetName;
use crate::state::State;

/// How often, and how far apart, removing the network is tried while Docker
/// says it still has endpoints.
const NETWORK_RM_TRIES: u32 = 10;
const NETWORK_RM_PAUSE: Duration = Duration::from_millis(300);

/// What a teardown removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Agent containers.
    pub agents: usize,
    /// Containers the agents had started.
    pub containers: usize,
    pub network: bool,
    pub state_dir: bool,
}

/// Removes testnet `name`: its agents, every container they started, its
/// network and `state_dir`.
pub fn teardown(
    docker: &Docker,
    name: &TestnetName,
    state_dir: &Path,
) -> Result<Removed, TestnetError> {
    let mut removed = Removed::default();
    let mut problems = Vec::new();

    // A broken state file must not stop the cleanup: labels find the rest.
    let mut nodes: BTreeSet<String> = match State::load(state_dir) {
        Ok(Some(state)) => state.nodes.iter().map(|n| n.node.to_string()).collect(),
        Ok(None) => BTreeSet::new(),
        Err(e) => {
            problems.push(e.to_string());
            BTreeSet::new()
        }
    };

    // Agents first, so that none starts a container while we clean up.
    let listing = docker.run_blocking(&[
        "ps".to_owned(),
        "--all".to_owned(),
        "--filter".to_owned(),
        format!("label={LABEL_TESTNET}={name}"),
        "--format".to_owned(),
        format!("{{{{.ID}}}}\t{{{{.Label \"{LABEL_NODE}\"}}}}"),
    ]);
    match listing {
        Ok(listing) => {
            let mut ids = Vec::new();
            for line in listing.lines() {
                let mut fields = line.split('\t');
                if let Some(id) = fields.next().filter(|id| !id.is_empty()) {
                    ids.push(id.to_owned());
                }
                if let Some(node) = fields.next().filter(|n| !n.is_empty()) {
                    nodes.insert(node.to_owned());
                }
            }
            match remove_containers(docker, &ids) {
                Ok(n) => removed.agents = n,
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(e) => problems.push(e.to_string()),
    }

    for node in &nodes {
        match remove_node_containers(docker, name, node) {
            Ok(n) => removed.containers += n,
            Err(e) => problems.push(e.to_string()),
        }
    }

    match remove_network(docker, name) {
        Ok(gone) => removed.network = gone,
        Err(e) => problems.push(e.to_string()),
    }

    match remove_state_dir(state_dir) {
        Ok(gone) => removed.state_dir = gone,
        Err(e) => problems.push(e.to_string()),
    }

    if problems.is_empty() {
        Ok(removed)
    } else {
        Err(TestnetError::Teardown {
            name: name.clone(),
            message: problems.join("; "),
        })
    }
}

/// Removes the containers agent `node` of testnet `name` started (the loss
/// of a host). meshd labels them `mesh.node=<node>` and puts them on the
/// testnet network; the network filter keeps another testnet's node of the
/// same name (every testnet has an `n1`) out of it.
pub fn remove_node_containers(
    docker: &Docker,
    name: &TestnetName,
    node: &str,
) -> Result<usize, TestnetError> {
    let ids = docker.run_blocking(&[
        "ps".to_owned(),
        "--all".to_owned(),
        "--quiet".to_owned(),
        "--filter".to_owned(),
        format!("label={}={node}", mesh_protocol::labels::NODE),
        "--filter".to_owned(),
        format!("network={name}"),
    ])?;
    let ids: Vec<String> = ids.lines().map(str::to_owned).collect();
    remove_containers(docker, &ids)
}

/// Removes containers one at a time: Docker 20.10 sometimes loses count of
/// a network's endpoints when containers on it are removed concurrently
/// (which `docker rm A B C` does), and then refuses to remove the empty
/// network until dockerd restarts (moby/moby#42119).
fn remove_containers(docker: &Docker, ids: &[String]) -> Result<usize, TestnetError> {
    for id in ids {
        match docker.run_blocking(&["rm", "--force", "--volumes", id.as_str()]) {
            Ok(_) => {}
            // Gone in the meantime (an agent removing its own): nothing to do.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ids.len())
}

/// Removes the network `name` if it is testnet `name`'s. `Ok(false)`: there
/// was none.
fn remove_network(docker: &Docker, name: &TestnetName) -> Result<bool, TestnetError> {
    let label = docker.run_blocking(&[
        "network".to_owned(),
        "inspect".to_owned(),
        "--format".to_owned(),
        format!("{{{{index .Labels \"{LABEL_TESTNET}\"}}}}"),
        name.to_string(),
    ]);
    match label {
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e.into()),
        Ok(label) if label != name.as_str() => {
            return Err(TestnetError::ForeignNetwork { name: name.clone() });
        }
        Ok(_) => {}
    }
    // Docker may still be releasing the endpoints of containers just removed.
    let mut tries = 0;
    loop {
        match docker.run_blocking(&["network", "rm", name.as_str()]) {
            Ok(_) => return Ok(true),
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) if e.stderr().contains("active endpoints") && tries < NETWORK_RM_TRIES => {
                tries += 1;
                std::thread::sleep(NETWORK_RM_PAUSE);
            }
            Err(e) if e.stderr().contains("active endpoints") => {
                return Err(TestnetError::StuckNetwork {
                    name: name.clone(),
                    source: e,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes the state directory if it is one (it holds `state.json`) or is
/// empty; anything else is left alone, so a mistyped `--state-dir` never
/// deletes a user's files.
fn remove_state_dir(dir: &Path) -> Result<bool, TestnetError> {
    let io = |what, source| TestnetError::Io {
        what,
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        return Ok(false);
    }
    if dir.join(crate::state::STATE_FILE).exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io("remove the state directory", e))?;
        return Ok(true);
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) => Err(io(
            "remove the state directory (it holds files but no state.json, so it was left alone)",
            e,
        )),
    }
}
