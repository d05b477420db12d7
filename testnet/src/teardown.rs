//! Removing a testnet and what its agents started. Synchronous, so that a
//! test's `Drop` can run it during a panic; it goes on past failures and
//! reports them all at the end, so one stuck container does not leave the
//! rest behind.
//!
//! It needs nothing but the name: agents are found by their labels, the
//! nodes' own engines (if any) by their records and the network by its name, so `down` also cleans up after a testnet whose state
//! directory is gone or was never written.
//!
//! A network Docker refuses to remove although nothing is attached to it
//! (Docker 20.10, moby/moby#42119) is not a failure: it is warned about and
//! recorded in the [`Leftovers`] for a later run to retry. Whether an answer
//! of Docker is that case is decided by [`judge_rm`], without Docker.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::agent::{LABEL_NODE, LABEL_TESTNET};
use crate::docker::{Docker, DockerError};
use crate::engine;
use crate::error::TestnetError;
use crate::leftovers::{Leftover, Leftovers};
use crate::name::TestnetName;
use crate::state::State;

/// How often, and how far apart, removing the network is tried while Docker
/// says it still has endpoints.
const NETWORK_RM_TRIES: u32 = 10;
const NETWORK_RM_PAUSE: Duration = Duration::from_millis(300);

/// What a teardown removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Agent containers.
    pub agents: usize,
    /// Containers the agents had started.
    pub containers: usize,
    /// The nodes' own Docker engines (with their data, bridges and
    /// sockets), if the testnet had them.
    pub engines: usize,
    pub network: NetworkFate,
    pub state_dir: bool,
}

/// Removes testnet `name`: its agents, every container they started, its
/// network and `state_dir`. A network Docker keeps with nothing attached is
/// recorded in `leftovers` rather than failing the teardown.
pub fn teardown(
    docker: &Docker,
    name: &TestnetName,
    state_dir: &Path,
    leftovers: &Leftovers,
) -> Result<Removed, TestnetError> {
    let mut removed = Removed {
        agents: 0,
        containers: 0,
        engines: 0,
        network: NetworkFate::Absent,
        state_dir: false,
    };
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

    // A split's firewall rules, found by their comment.
    if let Err(e) = crate::net::remove_split_rules(name) {
        problems.push(e.to_string());
    }

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

    // Found by their records, so even without a state directory; each
    // goes with its containers.
    match engine::of_testnet(name) {
        Ok(engines) => {
            for engine in engines {
                match engine::stop(&engine) {
                    Ok(containers) => {
                        removed.engines += 1;
                        removed.containers += containers;
                    }
                    Err(e) => problems.push(format!("engine of {}: {e}", engine.node)),
                }
            }
        }
        Err(e) => problems.push(e.to_string()),
    }

    match remove_network(docker, name, leftovers) {
        Ok(fate) => removed.network = fate,
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

/// What became of a testnet's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkFate {
    Removed,
    /// There was none.
    Absent,
    /// Docker would not remove it although nothing was attached to it
    /// (moby/moby#42119). Not a failure of the teardown: it is recorded in
    /// the [`Leftovers`], the next `up` tries again, and new testnets keep
    /// clear of its subnet.
    LeftBehind,
}

impl fmt::Display for NetworkFate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Removed => "removed",
            Self::Absent => "absent",
            Self::LeftBehind => {
                "left behind by a Docker bug (moby/moby#42119; recorded, the next `up` retries)"
            }
        })
    }
}

/// How one `docker network rm` ended, as far as the teardown tells answers
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RmAnswer {
    Removed,
    NotFound,
    /// "has active endpoints": something is attached, or Docker thinks so.
    ActiveEndpoints,
    /// Anything else (Docker down, permission denied): Docker's message says.
    Other,
}

impl RmAnswer {
    fn of(result: &Result<String, DockerError>) -> Self {
        match result {
            Ok(_) => Self::Removed,
            Err(e) if e.is_not_found() => Self::NotFound,
            Err(e) if e.stderr().contains("active endpoints") => Self::ActiveEndpoints,
            Err(_) => Self::Other,
        }
    }
}

/// What to do after a `docker network rm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RmVerdict {
    Done(NetworkFate),
    /// Wait [`NETWORK_RM_PAUSE`] and try again: Docker may still be
    /// releasing the endpoints of containers just removed.
    TryAgain,
    /// Running containers the teardown did not start hold the network: a
    /// real failure, naming them.
    InUse(Vec<String>),
    /// Docker failed otherwise: a real failure, with Docker's message.
    Failed,
}

/// Decides what a `network rm` answer means. `tries`: how many were made,
/// this one included; `attached`: the running containers Docker showed on
/// the network right after an "active endpoints" refusal. Only a refusal
/// with nothing attached, repeated until the tries are used up, is the
/// Docker bug that teardown tolerates.
pub(crate) fn judge_rm(answer: RmAnswer, tries: u32, attached: &[String]) -> RmVerdict {
    match answer {
        RmAnswer::Removed => RmVerdict::Done(NetworkFate::Removed),
        RmAnswer::NotFound => RmVerdict::Done(NetworkFate::Absent),
        RmAnswer::Other => RmVerdict::Failed,
        RmAnswer::ActiveEndpoints if tries < NETWORK_RM_TRIES => RmVerdict::TryAgain,
        RmAnswer::ActiveEndpoints if attached.is_empty() => {
            RmVerdict::Done(NetworkFate::LeftBehind)
        }
        RmAnswer::ActiveEndpoints => RmVerdict::InUse(attached.to_vec()),
    }
}

/// Removes the network `name` if it is testnet `name`'s; records it in
/// `leftovers` if Docker keeps it with nothing attached.
fn remove_network(
    docker: &Docker,
    name: &TestnetName,
    leftovers: &Leftovers,
) -> Result<NetworkFate, TestnetError> {
    let inspect = docker.run_blocking(&[
        "network".to_owned(),
        "inspect".to_owned(),
        "--format".to_owned(),
        format!(
            "{{{{index .Labels \"{LABEL_TESTNET}\"}}}}\t{{{{.Id}}}}\t{{{{range .IPAM.Config}}}}{{{{.Subnet}}}} {{{{end}}}}"
        ),
        name.to_string(),
    ]);
    let inspect = match inspect {
        Err(e) if e.is_not_found() => return Ok(NetworkFate::Absent),
        Err(e) => return Err(e.into()),
        Ok(inspect) => inspect,
    };
    let mut fields = inspect.splitn(3, '\t');
    let (label, id, subnet) = (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default().trim(),
    );
    if label != name.as_str() {
        return Err(TestnetError::ForeignNetwork { name: name.clone() });
    }
    let mut tries = 0;
    loop {
        let result = docker.run_blocking(&["network", "rm", id]);
        tries += 1;
        let answer = RmAnswer::of(&result);
        let attached = match answer {
            RmAnswer::ActiveEndpoints => attached(docker, name)?,
            _ => Vec::new(),
        };
        match judge_rm(answer, tries, &attached) {
            RmVerdict::Done(NetworkFate::LeftBehind) => {
                let leftover = Leftover::new(name.clone(), id.to_owned(), subnet.to_owned());
                leftovers.record(&leftover)?;
                let warning = format!(
                    "Docker keeps network {name} ({subnet}) although nothing is attached to it (moby/moby#42119); recorded in {}: the next testnet `up` tries to remove it again, and new testnets keep clear of its subnet (a dockerd restart frees it)",
                    leftovers.dir().display()
                );
                tracing::warn!(network = %name, %id, %subnet, "{warning}");
                // Tests have no tracing subscriber; their output should say so too.
                eprintln!("mesh-testnet: warning: {warning}");
                return Ok(NetworkFate::LeftBehind);
            }
            RmVerdict::Done(fate) => return Ok(fate),
            RmVerdict::TryAgain => std::thread::sleep(NETWORK_RM_PAUSE),
            RmVerdict::InUse(containers) => {
                return Err(TestnetError::NetworkInUse {
                    name: name.clone(),
                    containers,
                });
            }
            // Only an error is judged Failed, so this returns Docker's.
            RmVerdict::Failed => return result.map(|_| NetworkFate::Removed).map_err(Into::into),
        }
    }
}

/// The running containers on network `name`: its endpoints as `network
/// inspect` shows them and what `docker ps` finds on it.
fn attached(docker: &Docker, name: &TestnetName) -> Result<Vec<String>, TestnetError> {
    let endpoints = docker.run_blocking(&[
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}} {{end}}",
        name.as_str(),
    ])?;
    let running = docker.run_blocking(&[
        "ps".to_owned(),
        "--filter".to_owned(),
        format!("network={name}"),
        "--format".to_owned(),
        "{{.Names}}".to_owned(),
    ])?;
    let all: BTreeSet<&str> = endpoints
        .split_whitespace()
        .chain(running.split_whitespace())
        .collect();
    Ok(all.into_iter().map(str::to_owned).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn a_network_docker_keeps_with_nothing_attached_is_left_behind_not_a_failure() {
        let last = NETWORK_RM_TRIES;
        assert_eq!(
            judge_rm(RmAnswer::ActiveEndpoints, last, &[]),
            RmVerdict::Done(NetworkFate::LeftBehind)
        );
        // Before the tries are used up, Docker may still be releasing them.
        for tries in 1..last {
            assert_eq!(
                judge_rm(RmAnswer::ActiveEndpoints, tries, &[]),
                RmVerdict::TryAgain
            );
        }
    }

    #[test]
    fn a_network_something_real_holds_stays_a_failure() {
        let held = names(&["curious-client"]);
        assert_eq!(
            judge_rm(RmAnswer::ActiveEndpoints, NETWORK_RM_TRIES, &held),
            RmVerdict::InUse(held.clone())
        );
        assert_eq!(
            judge_rm(RmAnswer::ActiveEndpoints, 1, &held),
            RmVerdict::TryAgain
        );
        // Docker down, or any other refusal, is never tolerated.
        for tries in [1, NETWORK_RM_TRIES] {
            assert_eq!(judge_rm(RmAnswer::Other, tries, &[]), RmVerdict::Failed);
        }
    }

    #[test]
    fn removed_or_absent_is_done_at_once() {
        assert_eq!(
            judge_rm(RmAnswer::Removed, 1, &[]),
            RmVerdict::Done(NetworkFate::Removed)
        );
        assert_eq!(
            judge_rm(RmAnswer::NotFound, 3, &[]),
            RmVerdict::Done(NetworkFate::Absent)
        );
    }

    /// A `docker` that answers as Docker 20.10 does with moby/moby#42119
    /// (nothing attached, `network rm` refused for active endpoints), or, if
    /// `down`, as Docker does when dockerd is not running.
    fn fake_docker(dir: &Path, name: &TestnetName, down: bool) -> Docker {
        let script = if down {
            "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n"
                .to_owned()
        } else {
            format!(
                r#"case "$*" in
  "network inspect --format {{{{index .Labels"*) printf '{name}\tcafe01\t10.203.4.0/24 \n' ;;
  "network rm cafe01") echo 'Error response from daemon: error while removing network: network {name} id cafe01 has active endpoints' >&2; exit 1 ;;
  "network inspect "*|"ps "*) ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#
            )
        };
        let path = dir.join("docker.sh");
        std::fs::write(&path, script).unwrap();
        Docker::script(path)
    }

    /// A scratch directory, testnet `name`, [`fake_docker`] and empty
    /// leftovers.
    fn scene(name: &str, down: bool) -> (tempfile::TempDir, TestnetName, Docker, Leftovers) {
        let tmp = tempfile::tempdir().unwrap();
        let name = TestnetName::new(name).unwrap();
        let docker = fake_docker(tmp.path(), &name, down);
        let leftovers = Leftovers::new(tmp.path().join("leftovers"));
        (tmp, name, docker, leftovers)
    }

    #[test]
    fn teardown_records_the_network_docker_keeps_and_succeeds() {
        let (tmp, name, docker, leftovers) = scene("tn-stuck", false);
        let state_dir = tmp.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();

        let removed = teardown(&docker, &name, &state_dir, &leftovers).unwrap();
        assert_eq!(removed.network, NetworkFate::LeftBehind);
        assert!(removed.state_dir);
        let recorded = leftovers.list().unwrap();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(
            (recorded[0].name.as_str(), recorded[0].id.as_str()),
            ("tn-stuck", "cafe01")
        );
        assert_eq!(recorded[0].subnet, "10.203.4.0/24");
    }

    #[test]
    fn teardown_without_docker_fails_and_records_nothing() {
        let (tmp, name, docker, leftovers) = scene("tn-nodocker", true);
        let err = teardown(&docker, &name, &tmp.path().join("state"), &leftovers).unwrap_err();
        assert!(err.to_string().contains("Cannot connect"), "{err}");
        assert_eq!(leftovers.list().unwrap(), []);
    }

    #[test]
    fn docker_answers_are_told_apart() {
        use std::os::unix::process::ExitStatusExt;
        let failed = |stderr: &str| -> Result<String, DockerError> {
            Err(DockerError::Failed {
                command: "network rm x".into(),
                status: std::process::ExitStatus::from_raw(256),
                stderr: stderr.into(),
            })
        };
        assert_eq!(RmAnswer::of(&Ok("x".into())), RmAnswer::Removed);
        assert_eq!(
            RmAnswer::of(&failed("Error: No such network: x")),
            RmAnswer::NotFound
        );
        assert_eq!(
            RmAnswer::of(&failed(
                "Error response from daemon: error while removing network: network x id 9888 has active endpoints"
            )),
            RmAnswer::ActiveEndpoints
        );
        assert_eq!(
            RmAnswer::of(&failed(
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
            )),
            RmAnswer::Other
        );
    }
}
