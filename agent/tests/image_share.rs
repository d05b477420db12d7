//! Images shared between peers, on real Docker engines that do not share
//! images: agent A on the main engine holds an image, agent B on a second
//! engine (`common::engine`) lacks it. The image's name points at a real
//! loopback registry that does not have it, so only a peer can give it.

#![allow(clippy::unwrap_used)]

mod common;

use common::engine::Engine;
use common::registry::{TestRegistry, docker_cli};
use common::*;
use mesh_protocol::TaskState;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::image::ImageSource;

/// The image A holds: mesh-busybox under a name of the test's own.
struct Held(String);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", &self.0])
            .output();
    }
}

fn from(image: &str) -> SubmitRequest {
    SubmitRequest {
        image: image.into(),
        ..task(1, &["true"])
    }
}

#[tokio::test]
async fn a_task_on_a_node_without_the_image_gets_it_from_the_peer_that_holds_it() {
    require_docker().await;
    let engine = Engine::start().await;
    let registry = TestRegistry::start().await;
    let name = format!("{}/ganger-test/{}:1", registry.addr, unique("share"));
    docker_cli(&["tag", "mesh-busybox:latest", &name]);
    let _held = Held(name.clone());
    assert!(!engine.has_image(&name));

    let setup = Setup::docker("share");
    let a = setup.start(&[]).await;
    let _a_containers = NodeContainers(a.id.clone());
    // Tasks go to B: A drains.
    a.api.set_draining(a.id.as_str(), true, false).await;
    let on_b = setup.clone().docker_host(&engine.host);

    // registry-only: B asks the registry, which has no such image.
    let b = on_b
        .clone()
        .image_source(ImageSource::RegistryOnly)
        .start(&[a.gossip()])
        .await;
    wait_formed(&[&a, &b]).await;
    let id = b.api.submit(&from(&name)).await.id;
    let failed = b.api.wait_state(&id, TaskState::Failed, 60).await;
    assert_eq!(failed.node, b.id, "{failed:?}");
    assert!(
        failed.message.as_deref().unwrap().contains("not found"),
        "the registry's reason: {failed:?}"
    );
    assert!(!engine.has_image(&name));
    drop(b);

    // peers-first: B fetches it from A, checks it, runs the task.
    let b = on_b
        .image_source(ImageSource::PeersFirst)
        .start(&[a.gossip()])
        .await;
    wait_formed(&[&a, &b]).await;
    let id = b.api.submit(&from(&name)).await.id;
    let done = b.api.wait_state(&id, TaskState::Succeeded, 120).await;
    assert_eq!(done.node, b.id, "{done:?}");
    assert_eq!(done.attempt, 1, "{done:?}");
    assert!(engine.has_image(&name), "B's engine has it now");
    let ids = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let want = docker_cli(&["image", "inspect", "-f", "{{.Id}}", &name]);
    let got = ids(engine.cli(&["image", "inspect", "-f", "{{.Id}}", &name]));
    assert_eq!(got, want.trim(), "the same image");
    drop(b);
}
