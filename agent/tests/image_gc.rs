//! Image GC (`--image-gc`): over the bound, the agent removes images it
//! pulled that no task, service or container of ours used for a while,
//! least recently used first, and never an image it did not pull. On the
//! in-memory runtime for the agent's wiring, and on real Docker against a
//! real registry.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::registry::TestRegistry;
use common::*;
use mesh_agent::images::GcSettings;
use mesh_agent::runtime::ContainerRuntime;
use mesh_agent::runtime::memory::{MemoryRuntime, TEST_REGISTRY};
use mesh_protocol::TaskState;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::image::canonical;

const MIB: u64 = 1 << 20;

fn from(image: &str, cmd: &[&str]) -> SubmitRequest {
    SubmitRequest {
        image: image.into(),
        ..task(1, cmd)
    }
}

/// GC with no idle time to wait, a pass every 200 ms besides those after pulls.
fn gc(max_bytes: u64) -> GcSettings {
    GcSettings {
        min_idle: Duration::ZERO,
        every: Duration::from_millis(200),
        ..GcSettings::new(max_bytes)
    }
}

#[tokio::test]
async fn memory_agent_removes_the_idle_image_it_pulled_and_keeps_the_one_in_use() {
    let rt = Arc::new(MemoryRuntime::new());
    // Not pulled by the agent: never counted, never removed.
    rt.add_image("mesh-busybox:latest", 100 * MIB);
    let agent = Setup::memory("gcmem")
        .image_gc(gc(3 * MIB / 2))
        .start_on(rt.clone(), &[])
        .await;
    let api = &agent.api;
    let (a, b) = (
        format!("{TEST_REGISTRY}/gc-a:1"),
        format!("{TEST_REGISTRY}/gc-b:1"),
    );
    let first = api.submit(&from(&a, &["exit", "0"])).await.id;
    api.wait_state(&first, TaskState::Succeeded, 10).await;
    hold_for("a alone fits the bound", Duration::from_millis(600), || {
        let rt = rt.clone();
        let a = canonical(&a);
        async move { rt.images().contains(&a).then_some(()).ok_or("a removed") }
    })
    .await;
    // b runs on: a, idle, must go for the two to fit.
    let second = api.submit(&from(&b, &["serve"])).await.id;
    api.wait_state(&second, TaskState::Running, 10).await;
    wait_until("a removed", Duration::from_secs(10), || {
        let images = rt.images();
        let a = canonical(&a);
        async move {
            if images.contains(&a) {
                Err(images)
            } else {
                Ok(())
            }
        }
    })
    .await;
    let left = rt.images();
    assert!(left.contains(&canonical(&b)), "in use: {left:?}");
    assert!(left.contains(&canonical("mesh-busybox:latest")), "{left:?}");
    let ledger = std::fs::read_to_string(agent.data_dir().join("images.json")).unwrap();
    let ledger: serde_json::Value = serde_json::from_str(&ledger).unwrap();
    let names = ledger["names"].as_object().unwrap();
    assert!(names[&canonical(&b)]["pulled_ms"].is_u64(), "{ledger}");
    assert!(
        !names.keys().any(|n| n.contains("mesh-busybox")),
        "{ledger}"
    );
}

/// The size Docker gives `image`.
async fn size_of(image: &str) -> u64 {
    docker()
        .image_usage()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.tags.iter().any(|t| t == image))
        .unwrap_or_else(|| panic!("{image} is on the host"))
        .size
}

async fn present(image: &str) -> bool {
    docker().has_image(image).await.unwrap()
}

/// On real Docker: two images pulled from a loopback registry, a task
/// running on one, a bound only one fits: the idle one is removed, the one
/// in use stays, and images the agent did not pull are never touched.
#[tokio::test]
async fn docker_agent_removes_an_idle_pulled_image_and_keeps_the_rest() {
    require_docker().await;
    let registry = TestRegistry::start().await;
    let tag = unique("gc");
    let a = registry.push_new(IMAGE, &format!("ganger-test/{tag}-a:1"));
    let b = registry.push_new(IMAGE, &format!("ganger-test/{tag}-b:1"));
    // Each pushed image is the base and a layer of 256 KiB: one fits
    // within the base and 1 MiB, two do not.
    let bound = size_of(IMAGE).await + MIB;
    let busybox = "mesh-busybox:latest";
    let busybox_before = present(busybox).await;
    let agent = Setup::docker("gcdocker")
        .image_gc(gc(bound))
        .start(&[])
        .await;
    let _cleanup = NodeContainers(agent.id.clone());
    let api = &agent.api;

    let runs = api.submit(&from(&a, &["sleep", "300"])).await.id;
    api.wait_state(&runs, TaskState::Running, 60).await;
    let done = api.submit(&from(&b, &["exit", "0"])).await.id;
    api.wait_state(&done, TaskState::Succeeded, 60).await;
    wait_until("the idle image is removed", Duration::from_secs(30), || {
        let b = b.clone();
        async move {
            if present(&b).await {
                Err("b present")
            } else {
                Ok(())
            }
        }
    })
    .await;
    assert!(present(&a).await, "the image of the running task stays");
    assert!(present(IMAGE).await, "not pulled by the agent");
    assert_eq!(present(busybox).await, busybox_before, "never touched");

    // Stopped, a alone fits: it stays.
    api.kill(&runs).await;
    api.wait_state(&runs, TaskState::Killed, 30).await;
    hold_for("a alone fits", Duration::from_secs(2), || {
        let a = a.clone();
        async move {
            if present(&a).await {
                Ok(())
            } else {
                Err("a removed")
            }
        }
    })
    .await;
}

/// The runtime's part, on both runtimes: the image list shows an image's
/// size and its containers, a removal a container stands in the way of is
/// refused and leaves the image, and removing what is gone is fine.
async fn removal_waits_for_the_container<R: ContainerRuntime>(
    rt: &R,
    image: &str,
    container: &str,
) {
    let listed = rt.image_usage().await.unwrap();
    let it = listed
        .iter()
        .find(|i| i.tags.iter().any(|t| canonical(t) == canonical(image)))
        .unwrap_or_else(|| panic!("{image} listed: {listed:?}"));
    assert!(it.size > 0, "{it:?}");
    assert_eq!(it.containers, 1, "{it:?}");
    let refused = rt.remove_image(image).await.unwrap_err();
    assert!(
        matches!(refused, mesh_agent::runtime::RemoveImageError::Conflict(_)),
        "{refused}"
    );
    assert!(rt.has_image(image).await.unwrap(), "refused: still there");
    rt.remove(container).await.unwrap();
    rt.remove_image(image).await.unwrap();
    assert!(!rt.has_image(image).await.unwrap(), "removed");
    rt.remove_image(image).await.unwrap();
}

#[tokio::test]
async fn memory_runtime_refuses_to_remove_an_image_a_container_uses() {
    let rt = MemoryRuntime::new();
    let image = format!("{TEST_REGISTRY}/gc-c:1");
    let (tx, _) = tokio::sync::watch::channel(Default::default());
    rt.pull(
        &mesh_protocol::image::ImageRef::parse(&image).unwrap(),
        None,
        &tx,
    )
    .await
    .unwrap();
    let mut spec = common::docker::sleeper_spec(unique("gcrefuse"), &[]);
    spec.image = image.clone();
    let id = rt.run(&spec).await.unwrap();
    rt.kill(&id).await.unwrap();
    removal_waits_for_the_container(&rt, &image, &id).await;
}

#[tokio::test]
async fn docker_refuses_to_remove_an_image_a_stopped_container_uses() {
    require_docker().await;
    // An image of its own: the test image with a label of this test.
    let image = format!("ganger-test/{}:1", unique("gcrefuse"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nLABEL ganger.test={image}\n"),
    )
    .unwrap();
    let context = dir.path().to_string_lossy().into_owned();
    common::registry::docker_cli(&["build", "-q", "-t", &image, &context]);
    let rt = docker();
    let name = unique("gcrefuse");
    let mut spec = common::docker::sleeper_spec(name.clone(), &[]);
    spec.image = image.clone();
    let id = rt.run(&spec).await.unwrap();
    rt.kill(&id).await.unwrap();
    let outcome = tokio::spawn({
        let image = image.clone();
        async move { removal_waits_for_the_container(&docker(), &image, &id).await }
    })
    .await;
    // Whatever the outcome, nothing of the test stays.
    for args in [["rm", "-f", &name], ["rmi", "-f", &image]] {
        let _ = std::process::Command::new("docker").args(args).output();
    }
    outcome.unwrap();
}
