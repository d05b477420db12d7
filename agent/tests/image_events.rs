//! On real Docker: an image named or removed by hand (`docker tag`,
//! `docker rmi`), not by the agent, shows in the agent's published image
//! summary within seconds, through Docker's image events, long before the
//! timed listing (`publish::RELIST_EVERY`).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use mesh_agent::images::publish::RELIST_EVERY;
use mesh_protocol::image::Wanted;

/// What the test tags by hand; every agent's host has it.
const HELD: &str = "mesh-busybox:latest";

/// Runs the Docker CLI, as an operator would.
fn docker_cli(args: &[&str]) -> Result<(), String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Removes the throwaway name, whatever happened to the test.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = docker_cli(&["rmi", &self.0]);
    }
}

/// Whether `agent` publishes that its host holds `image`, as it sees
/// itself in its gossip view.
async fn publishes(agent: &TestAgent, image: &str) -> Result<bool, String> {
    let wanted = Wanted::of(image).unwrap();
    let peers = agent.api.peers().await;
    let me = peers
        .iter()
        .find(|p| p.node == agent.id)
        .ok_or("itself not in its view")?;
    let info = me.info.as_ref().ok_or("no values")?;
    Ok(info.images.holds(&wanted))
}

async fn wait_published(agent: &TestAgent, image: &str, held: bool) {
    // Well within the timed listing: only the events can make it.
    let within = Duration::from_secs(5);
    assert!(within < RELIST_EVERY / 2);
    wait_until(
        &format!("{image} published as held: {held}"),
        within,
        || async {
            match publishes(agent, image).await {
                Ok(h) if h == held => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_image_tagged_or_removed_by_hand_is_published_within_seconds() {
    let agent = Setup::docker("imgevt").start(&[]).await;
    let _containers = NodeContainers(agent.id.clone());
    wait_published(&agent, HELD, true).await;
    let name = format!("ganger-test/{}:hand", unique("imgevt"));
    let _untag = Untag(name.clone());
    // Twice: the first tag may fall on a listing the agent's start asked
    // for; every change after the first removal is seen through events only.
    for _ in 0..2 {
        docker_cli(&["tag", HELD, &name]).unwrap();
        wait_published(&agent, &name, true).await;
        docker_cli(&["rmi", &name]).unwrap();
        wait_published(&agent, &name, false).await;
    }
}
