//! Pre-pull for services: creating a service pulls its image on every node
//! (and on a node that joins later) before any connection; `service show`
//! reports each node's image; a node whose pull failed is not routed to and
//! says why. On the in-memory runtime (its `registry.test` namespace, one
//! runtime per agent, so image presence is per node) for the mesh, and on
//! real Docker against a real registry on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::registry::TestRegistry;
use common::services::*;
use common::*;
use mesh_agent::runtime::ContainerRuntime;
use mesh_agent::runtime::memory::{MemoryRuntime, TEST_REGISTRY};
use mesh_protocol::api::ServiceView;
use mesh_protocol::service::image::ImageStatus;

/// Each node's image of `name`, as `service show` reports it.
async fn images(api: &common::api::Api, name: &str) -> Vec<(String, Option<ImageStatus>)> {
    let views: Vec<ServiceView> = api.services().await;
    let Some(view) = views.into_iter().find(|v| v.def.spec.name.as_str() == name) else {
        return Vec::new();
    };
    let mut nodes: Vec<_> = view
        .nodes
        .into_iter()
        .map(|n| (n.node.to_string(), n.image))
        .collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    nodes
}

/// The image status `node` reports for `name`, once it is `ready(status)`.
async fn wait_image(
    api: &common::api::Api,
    name: &str,
    node: &str,
    what: &str,
    ready: impl Fn(&ImageStatus) -> bool,
) -> ImageStatus {
    wait_until(
        &format!("{node} reports {name}'s image {what}"),
        Duration::from_secs(20),
        || async {
            let all = images(api, name).await;
            match all.iter().find(|(n, _)| n == node) {
                Some((_, Some(s))) if ready(s) => Ok(s.clone()),
                _ => Err(all),
            }
        },
    )
    .await
}

#[tokio::test]
async fn creating_a_service_pulls_its_image_everywhere_and_a_node_whose_pull_failed_is_not_routed_to()
 {
    // From the registry only: with peers first, b would get the image from
    // a once a has it (tests/image_share.rs), and its pull would not fail.
    let setup = Setup::memory("prepull")
        .topology("numa:1 core:4 pu:1")
        .own_loopback()
        .ping_interval(Duration::from_millis(50))
        .image_source(mesh_protocol::image::ImageSource::RegistryOnly);
    let (rt_a, rt_b) = (
        Arc::new(MemoryRuntime::new()),
        Arc::new(MemoryRuntime::new()),
    );
    rt_b.fail_pulls("no route to the registry from b");
    let a = setup.start_on(rt_a.clone(), &[]).await;
    let mut b = setup.start_on(rt_b.clone(), &[a.gossip()]).await;
    wait_formed(&[&a, &b]).await;
    let (an, bn) = (a.id.to_string(), b.id.to_string());

    let listen = port(121);
    let mut echo = svc("prepulled", listen, &["echo", "--port", "7000"]);
    echo.image = format!("{TEST_REGISTRY}/echo:1");
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "prepulled", 2).await;

    // Before any connection: a has pulled it, b tried and says why.
    let present = wait_image(&a.api, "prepulled", &an, "present", |s| {
        *s == ImageStatus::Present
    })
    .await;
    assert_eq!(present.to_string(), "present");
    let failed = wait_image(&a.api, "prepulled", &bn, "failed", |s| {
        matches!(s, ImageStatus::Failed(_))
    })
    .await;
    assert!(
        failed.to_string().starts_with("failed: ")
            && failed
                .to_string()
                .contains("no route to the registry from b"),
        "{failed}"
    );
    assert_eq!(rt_a.pulls(), 1, "pulled once on a");
    assert!(rt_b.pulls() >= 1, "tried on b");
    assert_eq!(rt_a.started() + rt_b.started(), 0, "no connection yet");

    // b's clients are served by a: b is not routed to, not even by itself.
    let b_addr = SocketAddr::new(b.ip, listen);
    for i in 0..3u8 {
        assert_eq!(exchange(b_addr, &[i]).await.unwrap(), vec![i]);
    }
    let a_addr = SocketAddr::new(a.ip, listen);
    assert_eq!(exchange(a_addr, b"a").await.unwrap(), b"a");
    assert_eq!(rt_b.started(), 0, "no container where the image is missing");
    assert_eq!(rt_a.started(), 4);
    let views: Vec<ServiceView> = a.api.services().await;
    let on_b = views
        .iter()
        .flat_map(|v| &v.nodes)
        .find(|n| n.node == b.id && n.service.as_str() == "prepulled")
        .unwrap();
    assert_eq!(on_b.counters.served, 3, "{on_b:?}");
    assert_eq!(on_b.counters.failed_starts, 0, "b never tried: {on_b:?}");

    // A node that joins later pulls it before any connection too.
    let rt_c = Arc::new(MemoryRuntime::new());
    let c = setup.start_on(rt_c.clone(), &[a.gossip()]).await;
    wait_formed(&[&a, &b, &c]).await;
    wait_image(&a.api, "prepulled", c.id.as_str(), "present", |s| {
        *s == ImageStatus::Present
    })
    .await;
    assert_eq!((rt_c.pulls(), rt_c.started()), (1, 0));
    assert_eq!(rt_a.pulls(), 1, "a did not pull again");

    // b restarts with the registry within reach: it pulls at start (from
    // its stored definitions), without waiting for its retry.
    rt_b.heal_pulls();
    let tried = rt_b.pulls();
    b.stop().await;
    b.restart(&[a.gossip()]).await;
    wait_image(&a.api, "prepulled", &bn, "present after a restart", |s| {
        *s == ImageStatus::Present
    })
    .await;
    assert_eq!(rt_b.pulls(), tried + 1);
    assert_eq!(rt_b.started(), 0, "still no connection on b");
}

/// On real Docker: a service whose image is only in a loopback registry is
/// pulled by the node when the service is created, before any connection
/// (no warm container asks for it), and `service show` reports it present.
#[tokio::test]
async fn docker_service_image_is_pulled_when_the_service_is_created() {
    require_docker().await;
    let registry = TestRegistry::start().await;
    let image = registry.push_new(IMAGE, &format!("ganger-test/{}:1", unique("prepull")));
    let a = common::services_docker::node().await;
    assert!(!docker().has_image(&image).await.unwrap());
    let listen = port(122);
    let mut echo = svc("prepulledsvc", listen, &["echo", "--port", "7000"]);
    echo.image = image.clone();
    echo.warm = Some(0);
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "prepulledsvc", 1).await;
    let status = wait_image(&a.api, "prepulledsvc", a.id.as_str(), "present", |s| {
        *s == ImageStatus::Present
    })
    .await;
    assert_eq!(status.to_string(), "present");
    assert!(docker().has_image(&image).await.unwrap(), "pulled");
    let ours = common::services_docker::containers(&a.id, "prepulledsvc").await;
    assert!(
        ours.is_empty(),
        "no container before a connection: {ours:?}"
    );

    let addr = SocketAddr::new(a.ip, listen);
    assert_eq!(exchange(addr, b"hello").await.unwrap(), b"hello");
    // The registry's drop removes the pulled image; the agent's, its containers.
}
