//! A testnet whose agents each drive a Docker engine of their own
//! (`own_docker`): images are per node, as on real hosts. A task naming an
//! image that only a local registry holds is pulled by the node that runs
//! it, and only by it, and once; `down` removes the engines with all they
//! hold.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::{TaskId, TaskRecord, TaskState};
use mesh_testnet::engine::{self, EngineRecord};
use mesh_testnet::{SCENARIO_LIMIT, Testnet, TestnetOptions, scenario};
use meshctl::client::Client;

mod common;

use common::engines::{has_image, image_events};
use common::registry::TestRegistry;

/// Only n2 has room for a 4-core task: both tasks run there.
const BIG: &str = "numa:1 core:4 pu:1";
const SMALL: &str = "numa:1 core:1 pu:1";

#[tokio::test]
async fn a_task_image_is_pulled_once_by_the_node_that_runs_it_and_down_removes_the_engines()
-> Result<()> {
    scenario(
        "a_task_image_is_pulled_once_by_the_node_that_runs_it",
        SCENARIO_LIMIT,
        async {
            let registry = TestRegistry::start().await;
            let image = registry.push_new("mesh-busybox:latest", "own-docker/pulled:1");

            let net = common::up_all_alive(
                TestnetOptions::for_test("own-docker")
                    .nodes(3)
                    .topology(SMALL)
                    .topology_of("n2", BIG)
                    .own_docker(true),
            )
            .await?;
            let all = net.nodes();
            let engines: Vec<EngineRecord> = net.state().engines.values().cloned().collect();
            ensure!(engines.len() == 3, "one engine per node: {engines:?}");
            for node in &all {
                let images = net
                    .docker_of(node.as_str())?
                    .run(&["images", "--quiet"])
                    .await?;
                ensure!(
                    images.is_empty(),
                    "{node}'s engine starts with images: {images}"
                );
            }

            let n1 = net.client("n1")?;
            wait_n2_free(&net).await?;
            let first = run_to_end(&n1, &image).await?;
            ensure!(first.node.as_str() == "n2", "ran on {}, not n2", first.node);
            for node in &all {
                let has = has_image(&net.docker_of(node.as_str())?, &image).await?;
                ensure!(
                    has == (node.as_str() == "n2"),
                    "{node} holds {image}: {has}; only n2, which ran the task, should"
                );
            }
            let n2 = net.docker_of("n2")?;
            ensure!(
                image_events(&n2, "pull").await? == 1,
                "n2 pulled {image} once"
            );

            // n1 offers it to n2 only once it has heard that n2's cores
            // are free again.
            wait_n2_free(&net).await?;
            let second = run_to_end(&n1, &image).await?;
            ensure!(
                second.node.as_str() == "n2",
                "ran on {}, not n2",
                second.node
            );
            let pulled = image_events(&n2, "pull").await?;
            ensure!(pulled == 1, "the second task pulled again: {pulled} pulls");
            for node in ["n1", "n3"] {
                ensure!(
                    !has_image(&net.docker_of(node)?, &image).await?,
                    "{node} got {image} without running it"
                );
            }

            let removed = net.down().await?;
            ensure!(removed.engines == 3, "{removed:?}");
            for e in &engines {
                ensure_gone(e)?;
            }
            drop(registry);
            Ok(())
        },
    )
    .await
}

/// An engine a crashed run left (its testnet's state directory holds no
/// state) is found and removed by the next `clean_leftovers`.
#[tokio::test]
async fn an_engine_a_crashed_run_left_is_cleaned_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let name = mesh_testnet::TestnetName::unique("leftover");
    let taken = engine::host_subnets()?;
    let subnet = engine::free_subnet(name.as_str(), 0, &taken).context("a free subnet")?;
    let e = EngineRecord::new(&name, "n1", 0, dir.path(), &dir.path().join("n1"), subnet);
    // Removed even if the test fails before the cleanup under test runs.
    let _guard = Guard(e.clone());
    engine::start(&e)?;
    engine::wait_ready(&e, engine::START_LIMIT).await?;
    ensure!(
        Path::new("/sys/class/net").join(&e.bridge).exists(),
        "no bridge"
    );

    // Another test's `up` may clean it first: either way it must be gone.
    tokio::task::spawn_blocking(engine::clean_leftovers).await??;
    ensure_gone(&e)
}

/// Removes its engine when dropped, whatever happened.
struct Guard(EngineRecord);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.run_dir.exists() || Path::new("/sys/class/net").join(&self.0.bridge).exists() {
            let _ = engine::stop(&self.0);
        }
    }
}

/// Waits until n1 sees n2 with its 4 cores free.
async fn wait_n2_free(net: &Testnet) -> Result<()> {
    let n1 = net.nodes()[..1].to_vec();
    net.wait_views(
        "n1 sees n2's cores free",
        Duration::from_secs(20),
        &n1,
        |views| {
            let free: Option<u32> = views
                .iter()
                .find(|v| v.node.as_str() == "n2")
                .and_then(|v| v.info.as_ref())
                .map(|i| i.load.free_per_numa.iter().sum());
            match free {
                Some(4) => Ok(()),
                other => Err(format!("n2 free cores: {other:?}")),
            }
        },
    )
    .await?;
    Ok(())
}

/// Submits a 4-core task of `image` through `api` and waits until it ends;
/// fails unless it succeeded.
async fn run_to_end(api: &Client, image: &str) -> Result<TaskRecord> {
    let req = SubmitRequest {
        image: image.to_owned(),
        command: vec!["true".into()],
        cores: Some(4),
        ..Default::default()
    };
    let id: TaskId = api.submit(&req).await?.id;
    let what = format!("task {id} of {image} ends");
    let mut last = None;
    mesh_testnet::wait_until(&what, Duration::from_secs(60), async || {
        let task = api.task(&id).await.map_err(|e| e.to_string())?;
        let ended = task.state.is_terminal();
        last = Some(task);
        if ended {
            Ok(())
        } else {
            Err(format!("{:?}", last))
        }
    })
    .await?;
    let task = last.context("no record")?;
    ensure!(
        task.state == TaskState::Succeeded,
        "task {id} ended {:?}: {:?}",
        task.state,
        task.message
    );
    Ok(task)
}

/// Nothing of `e` is left: its dockerd, bridge, socket, run directory and
/// data root.
fn ensure_gone(e: &EngineRecord) -> Result<()> {
    ensure!(
        !Path::new("/sys/class/net").join(&e.bridge).exists(),
        "bridge {} is left",
        e.bridge
    );
    for path in [e.socket(), e.run_dir.clone(), e.data_root.clone()] {
        ensure!(!path.exists(), "{} is left", path.display());
    }
    let run_dir = e.run_dir.display().to_string();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        ensure!(
            !(cmdline.contains("dockerd") && cmdline.contains(&run_dir)),
            "dockerd of {} still runs (pid {:?})",
            e.bridge,
            entry.file_name()
        );
    }
    Ok(())
}
