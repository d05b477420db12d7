//! Image-aware placement: each agent lists the images its host holds and
//! publishes them (`img`, a Bloom filter); among otherwise equal nodes a
//! task goes to one that holds its image. The logic on the in-memory
//! runtime; the listing on real Docker.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use mesh_agent::runtime::ContainerRuntime;
use mesh_agent::runtime::memory::{MemoryRuntime, TEST_REGISTRY};
use mesh_protocol::TaskState;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::image::{ImageSummary, Wanted};

/// Whether `at`'s gossip view shows `node` holding `image`.
async fn seen_holding(at: &TestAgent, node: &TestAgent, image: &str) -> Result<(), String> {
    let wanted = Wanted::of(image).unwrap();
    let peers = at.api.peers().await;
    let p = peers
        .iter()
        .find(|p| p.node == node.id)
        .ok_or("not in view")?;
    let info = p.info.as_ref().ok_or("no values")?;
    if info.images.holds(&wanted) {
        Ok(())
    } else {
        Err(format!(
            "{} does not hold {image}: {}",
            node.id, info.images
        ))
    }
}

/// Waits until `at` sees every node idle (nothing running, no pull), so
/// that the next placement finds them equal.
async fn all_idle(at: &TestAgent) {
    wait_until(
        "every node idle in the view",
        Duration::from_secs(10),
        || async {
            let peers = at.api.peers().await;
            let busy: Vec<_> = peers
                .iter()
                .filter(|p| {
                    p.info
                        .as_ref()
                        .is_none_or(|i| i.load.running > 0 || i.images.pulling > 0)
                })
                .map(|p| p.node.to_string())
                .collect();
            if busy.is_empty() { Ok(()) } else { Err(busy) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_task_goes_to_the_node_holding_its_image_among_equal_nodes() {
    let agents = Setup::memory("imgplace").cluster(3).await;
    let (a, b) = (&agents[0], &agents[1]);
    let image = format!("{TEST_REGISTRY}/team/app:1");
    // Only b has it, loaded by hand: seen through its image events.
    b.memory().load_image(&image);
    wait_until(
        "a sees b holding the image",
        Duration::from_secs(15),
        || seen_holding(a, b, &image),
    )
    .await;
    for _ in 0..5 {
        all_idle(a).await;
        let req = SubmitRequest {
            image: image.clone(),
            ..task(1, &["exit", "0"])
        };
        let id = a.api.submit(&req).await.id;
        let done = a.api.wait_state(&id, TaskState::Succeeded, 10).await;
        assert_eq!(done.node, b.id, "the node holding the image ran {id}");
    }
    let pulls: u64 = agents.iter().map(|n| n.memory().pulls()).sum();
    assert_eq!(pulls, 0, "nobody pulled");
}

#[tokio::test]
async fn a_pulled_image_is_published_at_once() {
    let rt = std::sync::Arc::new(MemoryRuntime::new());
    let a = Setup::memory("imgpub").start_on(rt.clone(), &[]).await;
    let image = format!("{TEST_REGISTRY}/team/pulled:1");
    assert!(rt.list_images().await.unwrap().is_empty());
    let req = SubmitRequest {
        image: image.clone(),
        ..task(1, &["exit", "0"])
    };
    let id = a.api.submit(&req).await.id;
    a.api.wait_state(&id, TaskState::Succeeded, 10).await;
    let listed = rt.list_images().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    // Well before the next timed listing (`RELIST_EVERY`): the pull's
    // end triggers one.
    wait_until("the pulled image published", Duration::from_secs(1), || {
        seen_holding(&a, &a, &image)
    })
    .await;
}

/// On real Docker: the runtime's listing finds the test image built by
/// `scripts/images` by its tag and its id, and an agent publishes it.
#[tokio::test]
async fn docker_lists_the_images_it_holds_and_the_agent_publishes_them() {
    require_docker().await;
    let image = "mesh-busybox:latest";
    let listed = docker().list_images().await.unwrap();
    let ours = listed
        .iter()
        .find(|i| i.repo_tags.iter().any(|t| t == image))
        .unwrap_or_else(|| panic!("{image} not listed (built by scripts/images): {listed:?}"));
    assert!(ours.id.starts_with("sha256:"), "{ours:?}");
    let summary = ImageSummary::of(&listed, 0);
    for name in [
        image,
        "mesh-busybox",
        "docker.io/library/mesh-busybox:latest",
        &ours.id,
    ] {
        assert!(summary.holds(&Wanted::of(name).unwrap()), "{name}");
    }
    assert!(!summary.holds(&Wanted::of("mesh-busybox:no-such-tag").unwrap()));

    let agent = Setup::docker("imglist").start(&[]).await;
    let _cleanup = NodeContainers(agent.id.clone());
    wait_until(
        "the agent publishes its images",
        Duration::from_secs(10),
        || seen_holding(&agent, &agent, image),
    )
    .await;
}
