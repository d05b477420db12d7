//! Tasks whose image the host lacks: pulled on the node that runs them, as
//! the pull policy says, with a failed pull failing the task with the
//! registry's reason. On the in-memory runtime (its `registry.test`
//! namespace) for the logic, and on real Docker against a real registry.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::registry::TestRegistry;
use common::*;
use mesh_agent::runtime::ContainerRuntime;
use mesh_agent::runtime::memory::{MemoryRuntime, TEST_REGISTRY};
use mesh_protocol::TaskState;
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::image::PullPolicy;

fn from(image: &str, cmd: &[&str]) -> SubmitRequest {
    SubmitRequest {
        image: image.into(),
        ..task(1, cmd)
    }
}

#[tokio::test]
async fn a_missing_image_is_pulled_once_then_used_as_present() {
    let rt = Arc::new(MemoryRuntime::new());
    let agent = Setup::memory("pull").start_on(rt.clone(), &[]).await;
    let api = &agent.api;
    let image = format!("{TEST_REGISTRY}/app:1");
    let first = api.submit(&from(&image, &["exit", "0"])).await.id;
    api.wait_state(&first, TaskState::Succeeded, 10).await;
    assert_eq!(rt.pulls(), 1);
    let second = api.submit(&from(&image, &["exit", "0"])).await.id;
    let done = api.wait_state(&second, TaskState::Succeeded, 10).await;
    assert_eq!(done.pull, None, "no pull shown once started");
    assert_eq!(rt.pulls(), 1, "the second task used the present image");
    // Always pulls again (a tag that moved).
    let mut always = from(&image, &["exit", "0"]);
    always.pull = Some(PullPolicy::Always);
    let third = api.submit(&always).await.id;
    api.wait_state(&third, TaskState::Succeeded, 10).await;
    assert_eq!(rt.pulls(), 2);
}

#[tokio::test]
async fn an_image_that_cannot_be_had_fails_the_task_with_the_reason_and_no_retry() {
    let rt = Arc::new(MemoryRuntime::new());
    let agent = Setup::memory("nopull").start_on(rt.clone(), &[]).await;
    let api = &agent.api;
    let mut nosuch = from(&format!("{TEST_REGISTRY}/nosuch:1"), &["exit", "0"]);
    nosuch.retries = Some(3);
    let id = api.submit(&nosuch).await.id;
    let failed = api.wait_state(&id, TaskState::Failed, 10).await;
    assert_eq!(failed.attempt, 1, "retrying cannot help: {failed:?}");
    assert!(
        failed.message.as_deref().unwrap().contains("not found"),
        "{failed:?}"
    );
    let mut never = from(&format!("{TEST_REGISTRY}/app:2"), &["exit", "0"]);
    never.pull = Some(PullPolicy::Never);
    let id = api.submit(&never).await.id;
    let refused = api.wait_state(&id, TaskState::Failed, 10).await;
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("pull policy is never"),
        "{refused:?}"
    );
    assert_eq!(rt.pulls(), 1, "never did not pull");
    assert_eq!(rt.started(), 0, "no container for either");
}

#[tokio::test]
async fn an_unreachable_registry_is_retried_as_retries_allow() {
    let rt = Arc::new(MemoryRuntime::new());
    let agent = Setup::memory("pulldown").start_on(rt.clone(), &[]).await;
    let api = &agent.api;
    // Docker answers pings but not this pull: take it away only for the pull.
    let mut req = from(&format!("{TEST_REGISTRY}/app:3"), &["exit", "0"]);
    req.retries = Some(1);
    rt.fail_next_pull("dial tcp: connection refused");
    let id = api.submit(&req).await.id;
    let done = api.wait_state(&id, TaskState::Succeeded, 15).await;
    assert_eq!(done.attempt, 2, "the first pull failed, the retry pulled");
    assert_eq!(rt.pulls(), 2);
}

/// On real Docker: an image pushed to a loopback registry and absent from
/// the host is pulled by the agent that runs the task; an unknown one
/// fails with the registry's reason.
#[tokio::test]
async fn docker_agent_pulls_a_task_image_from_a_registry() {
    require_docker().await;
    let registry = TestRegistry::start().await;
    let image = registry.push_new(IMAGE, &format!("ganger-test/{}:1", unique("task")));
    let agent = Setup::docker("pulltask").start(&[]).await;
    let _cleanup = NodeContainers(agent.id.clone());
    let api = &agent.api;
    let id = api.submit(&from(&image, &["exit", "0"])).await.id;
    let done = api.wait_state(&id, TaskState::Succeeded, 60).await;
    assert_eq!(done.attempt, 1);
    assert!(docker().has_image(&image).await.unwrap(), "pulled");

    let nosuch = format!("{}/ganger-test/nosuch:1", registry.addr);
    let mut req = from(&nosuch, &["exit", "0"]);
    req.retries = Some(2);
    let id = api.submit(&req).await.id;
    let failed = api.wait_state(&id, TaskState::Failed, 60).await;
    assert_eq!(failed.attempt, 1, "{failed:?}");
    assert!(
        failed.message.as_deref().unwrap().contains("not found"),
        "{failed:?}"
    );
}

/// On real Docker: a service whose image is only in a loopback registry is
/// pulled by the node before its first container, then served.
#[tokio::test]
async fn docker_agent_pulls_a_service_image_from_a_registry() {
    require_docker().await;
    let registry = TestRegistry::start().await;
    let image = registry.push_new(IMAGE, &format!("ganger-test/{}:1", unique("svc")));
    let a = common::services_docker::node().await;
    let listen = common::services::port(31);
    let mut echo = common::services::svc("pulledsvc", listen, &["echo", "--port", "7000"]);
    echo.image = image.clone();
    a.api.create_service(&echo).await;
    common::services::wait_listening(&a.api, "pulledsvc", 1).await;
    let addr = std::net::SocketAddr::new(a.ip, listen);
    let reply = common::services::exchange(addr, b"hello").await.unwrap();
    assert_eq!(reply, b"hello");
    assert!(docker().has_image(&image).await.unwrap(), "pulled");
}
