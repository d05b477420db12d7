//! Teardown against the real Docker engine, without agents: a network held
//! by a container the testnet did not start stays a teardown failure (it is
//! not Docker's moby/moby#42119, which teardown tolerates), and recorded
//! leftover networks are removed by a later run once Docker lets go of them.
//!
//! The bug itself cannot be produced on demand; `teardown.rs`'s unit tests
//! feed its decision "nothing attached, yet Docker refuses" instead. Here a
//! running container stands in for whatever Docker will not let go of.

use anyhow::{Context, Result, ensure};
use mesh_testnet::docker::Docker;
use mesh_testnet::{
    LABEL_TESTNET, Leftover, Leftovers, NetworkFate, SCENARIO_LIMIT, Testnet, TestnetError,
    TestnetName, TestnetOptions, scenario,
};

const BUSYBOX: &str = "mesh-busybox:latest";
/// On everything these tests start, so a run's leftovers can be found.
const LABEL: &str = "mesh.test=teardown";

/// Docker networks and containers of one test, removed on drop, panics
/// included.
struct Scratch {
    docker: Docker,
    networks: Vec<String>,
    containers: Vec<String>,
    /// Records made in the shared default leftovers, by network id.
    records: Vec<String>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            docker: Docker::new(),
            networks: Vec::new(),
            containers: Vec::new(),
            records: Vec::new(),
        }
    }

    /// A network labelled as testnet `name`'s; returns its id.
    fn network(&mut self, name: &TestnetName) -> Result<String> {
        self.networks.push(name.to_string());
        let id = self.docker.run_blocking(&[
            "network".to_owned(),
            "create".to_owned(),
            "--label".to_owned(),
            format!("{LABEL_TESTNET}={name}"),
            "--label".to_owned(),
            LABEL.to_owned(),
            name.to_string(),
        ])?;
        Ok(id)
    }

    /// A running container on `network` that the testnet did not start (it
    /// lacks the testnet's labels).
    fn stranger(&mut self, network: &TestnetName) -> Result<String> {
        let name = format!("{network}-stranger");
        self.containers.push(name.clone());
        self.docker.run_blocking(&[
            "run",
            "--detach",
            "--name",
            &name,
            "--label",
            LABEL,
            "--network",
            network.as_str(),
            BUSYBOX,
            "sleep",
            "600",
        ])?;
        Ok(name)
    }

    fn remove_containers(&mut self) {
        for c in self.containers.drain(..) {
            // Gone already is fine; anything else shows in the test output.
            if let Err(e) = self.docker.run_blocking(&["rm", "--force", c.as_str()]) {
                eprintln!("removing {c}: {e}");
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for id in &self.records {
            if let Err(e) = Leftovers::default_location().forget(id) {
                eprintln!("forgetting {id}: {e}");
            }
        }
        self.remove_containers();
        for n in &self.networks {
            match self.docker.run_blocking(&["network", "rm", n.as_str()]) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => eprintln!("removing network {n}: {e}"),
            }
        }
    }
}

fn exists(docker: &Docker, network: &str) -> Result<bool> {
    match docker.run_blocking(&["network", "inspect", network]) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn a_network_a_running_stranger_holds_fails_the_teardown_naming_it() -> Result<()> {
    scenario(
        "a_network_a_running_stranger_holds_fails_the_teardown_naming_it",
        SCENARIO_LIMIT,
        async {
            let mut scratch = Scratch::new();
            let name = TestnetName::unique("held");
            let dir = tempfile::tempdir()?;
            let id = scratch.network(&name)?;
            let stranger = scratch.stranger(&name)?;

            let err = Testnet::remove(&name, Some(dir.path().to_owned()))
                .await
                .err()
                .context("the teardown succeeded although a container holds the network")?;
            let TestnetError::Teardown { message, .. } = &err else {
                anyhow::bail!("not a teardown failure: {err}");
            };
            ensure!(
                message.contains(&stranger) && message.contains("did not start"),
                "the failure does not name the container: {err}"
            );
            ensure!(exists(&scratch.docker, &name.to_string())?, "network gone");
            let recorded = Leftovers::default_location().list()?;
            ensure!(
                !recorded.iter().any(|l| l.id == id),
                "a held network was recorded as Docker's bug"
            );

            // Once the stranger is gone, the same teardown finishes.
            scratch.remove_containers();
            let removed = Testnet::remove(&name, Some(dir.path().to_owned())).await?;
            ensure!(removed.network == NetworkFate::Removed, "{removed:?}");
            ensure!(!exists(&scratch.docker, &name.to_string())?, "network kept");
            Ok(())
        },
    )
    .await
}

#[test]
fn a_later_run_removes_recorded_networks_docker_has_let_go_of() -> Result<()> {
    let mut scratch = Scratch::new();
    let records = tempfile::tempdir()?;
    let leftovers = Leftovers::new(records.path());
    let (free, held) = (TestnetName::unique("left"), TestnetName::unique("held"));
    let free_id = scratch.network(&free)?;
    let held_id = scratch.network(&held)?;
    scratch.stranger(&held)?;
    let record = |name: &TestnetName, id: &str| {
        leftovers.record(&Leftover::new(
            name.clone(),
            id.to_owned(),
            "10.200.0.0/24".into(),
        ))
    };
    record(&free, &free_id)?;
    record(&held, &held_id)?;
    // A network that went on its own meanwhile (a dockerd restart).
    let vanished = TestnetName::unique("vanished");
    record(&vanished, "0123456789abcdef")?;

    let retried = leftovers.retry(&scratch.docker)?;
    let ids = |l: &[Leftover]| {
        let mut ids: Vec<String> = l.iter().map(|l| l.id.clone()).collect();
        ids.sort();
        ids
    };
    let mut gone = vec![free_id.clone(), "0123456789abcdef".to_owned()];
    gone.sort();
    ensure!(ids(&retried.gone) == gone, "gone: {:?}", retried.gone);
    ensure!(
        ids(&retried.kept) == [held_id.clone()],
        "kept: {:?}",
        retried.kept
    );
    ensure!(
        !exists(&scratch.docker, &free_id)?,
        "the free network is still there"
    );
    ensure!(
        ids(&leftovers.list()?) == [held_id],
        "records: {:?}",
        leftovers.list()?
    );
    Ok(())
}

#[tokio::test]
async fn up_under_the_name_of_a_network_docker_still_keeps_says_so() -> Result<()> {
    scenario(
        "up_under_the_name_of_a_network_docker_still_keeps_says_so",
        SCENARIO_LIMIT,
        async {
            let mut scratch = Scratch::new();
            let name = TestnetName::unique("kept");
            let id = scratch.network(&name)?;
            // The stranger stands in for Docker's bug: the retry cannot remove it.
            scratch.stranger(&name)?;
            scratch.records.push(id.clone());
            Leftovers::default_location().record(&Leftover::new(name.clone(), id, "?".into()))?;

            let dir = tempfile::tempdir()?;
            let opts = TestnetOptions::for_test("kept")
                .name(name.clone())
                .state_dir(dir.path());
            match Testnet::up(opts).await {
                Err(TestnetError::NetworkLeftBehind { name: n }) if n == name => Ok(()),
                Err(e) => anyhow::bail!("not the left-behind network's error: {e}"),
                Ok(_) => anyhow::bail!("a testnet started on a network Docker keeps"),
            }
        },
    )
    .await
}
