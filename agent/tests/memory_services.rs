//! Services on the in-memory runtime, through an in-process agent: the
//! backend's task, the warm pool and a pool's instances without Docker (the
//! containers are echo servers on loopback addresses of their own). The
//! same paths on real Docker, with a mesh of agents: `services.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::services::*;
use common::*;
use mesh_agent::runtime::ContainerInfo;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_protocol::labels;

/// One agent on `rt`, its clients on a loopback address of its own.
async fn agent(rt: Arc<MemoryRuntime>) -> TestAgent {
    Setup::memory("memsvc")
        .topology("numa:1 core:4 pu:1")
        .own_loopback()
        .ping_interval(Duration::from_millis(50))
        .start_on(rt, &[])
        .await
}

/// The service containers that run.
fn running(rt: &MemoryRuntime) -> Vec<ContainerInfo> {
    rt.containers()
        .into_iter()
        .filter(|c| {
            c.running
                && c.labels.get(labels::KIND).map(String::as_str) == Some(labels::KIND_SERVICE)
        })
        .collect()
}

async fn wait_running(rt: &MemoryRuntime, n: usize) -> Vec<ContainerInfo> {
    wait_until(
        &format!("{n} service containers run"),
        Duration::from_secs(10),
        || async { running(rt).len() == n },
    )
    .await;
    running(rt)
}

#[tokio::test]
async fn a_connection_takes_the_warm_container_which_is_replaced_and_shutdown_removes_all() {
    let rt = Arc::new(MemoryRuntime::new());
    let mut a = agent(rt.clone()).await;
    let listen = port(101);
    let mut echo = svc("echo", listen, &["echo", "--port", "7000"]);
    echo.warm = Some(1);
    echo.max_per_node = Some(2);
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "echo", 1).await;
    let warm = wait_running(&rt, 1).await.remove(0);

    let addr = SocketAddr::new(a.ip, listen);
    assert_eq!(exchange(addr, b"hello").await.unwrap(), b"hello");
    // The connection had the warm container (now removed); another is warm.
    wait_until(
        "the used container is gone and another is warm",
        Duration::from_secs(10),
        || async {
            let now = running(&rt);
            now.len() == 1 && now[0].id != warm.id
        },
    )
    .await;
    assert_eq!(rt.started(), 2);

    // Two at once: the warm one and a fresh one (the limit is two).
    let (x, y) = tokio::join!(exchange(addr, b"x"), exchange(addr, b"y"));
    assert_eq!((x.unwrap(), y.unwrap()), (b"x".to_vec(), b"y".to_vec()));

    a.stop().await;
    assert!(rt.containers().is_empty(), "{:?}", rt.containers());
}

#[tokio::test]
async fn a_pool_serves_every_connection_from_its_instances_and_replaces_one_that_exits() {
    let rt = Arc::new(MemoryRuntime::new());
    let mut a = agent(rt.clone()).await;
    let listen = port(102);
    let mut pool = svc("pool", listen, &["echo", "--port", "7000"]);
    pool.mode = Some("pool".into());
    pool.instances = Some("2".into());
    a.api.create_service(&pool).await;
    wait_listening(&a.api, "pool", 1).await;
    let instances = wait_running(&rt, 2).await;

    let addr = SocketAddr::new(a.ip, listen);
    let replies = futures_util::future::join_all(
        (0..6u8).map(|i| async move { exchange(addr, &[i; 3]).await.unwrap() }),
    )
    .await;
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply, [i as u8; 3]);
    }
    assert_eq!(rt.started(), 2, "connections share the instances");

    rt.finish(&instances[0].id, 1);
    wait_until(
        "the exited instance is replaced",
        Duration::from_secs(10),
        || async {
            let now = running(&rt);
            now.len() == 2 && now.iter().all(|c| c.id != instances[0].id)
        },
    )
    .await;
    assert_eq!(exchange(addr, b"again").await.unwrap(), b"again");

    a.stop().await;
    assert!(rt.containers().is_empty(), "{:?}", rt.containers());
}

/// A service removed and created again under its name starts counting
/// from zero (its counters used to carry over).
#[tokio::test]
async fn a_service_created_again_starts_its_counters_from_zero() {
    let rt = Arc::new(MemoryRuntime::new());
    let mut a = agent(rt.clone()).await;
    let listen = port(103);
    let echo = svc("again", listen, &["echo", "--port", "7000"]);
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "again", 1).await;
    let addr = SocketAddr::new(a.ip, listen);
    assert_eq!(exchange(addr, b"one").await.unwrap(), b"one");
    let counted = |served: u64| {
        let api = &a.api;
        async move {
            wait_until(
                &format!("the service counts {served} served"),
                Duration::from_secs(10),
                || async {
                    let views = api.services().await;
                    let served_now: u64 = views
                        .iter()
                        .filter(|v| v.def.name().as_str() == "again")
                        .flat_map(|v| &v.nodes)
                        .map(|n| n.counters.served)
                        .sum();
                    served_now == served
                },
            )
            .await;
        }
    };
    counted(1).await;

    a.api.remove_service("again").await;
    wait_until("the service is gone", Duration::from_secs(10), || async {
        running(&rt).is_empty()
    })
    .await;
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "again", 1).await;
    counted(0).await;
    assert_eq!(exchange(addr, b"two").await.unwrap(), b"two");
    counted(1).await;

    a.stop().await;
}

/// `services.json` holding a definition the API would refuse (written by
/// an older agent with other limits, or by hand): at the next start it is
/// set aside with a warning, and the other definitions are served.
#[tokio::test]
async fn an_invalid_stored_definition_is_set_aside_at_start_and_the_others_served() {
    let rt = Arc::new(MemoryRuntime::new());
    let mut a = agent(rt.clone()).await;
    let listen = port(103);
    a.api
        .create_service(&svc("one", listen, &["echo", "--port", "7000"]))
        .await;
    wait_listening(&a.api, "one", 1).await;
    a.stop().await;
    let path = a.data_dir().join("services.json");
    let mut stored: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut bad = stored[0].clone();
    bad["spec"]["name"] = "two".into();
    bad["spec"]["listen"] = (listen + 1).into();
    bad["spec"]["warm"] = 1.into();
    bad["spec"]["ready_timeout_ms"] = u64::MAX.into();
    stored.push(bad);
    std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).unwrap();

    a.restart(&[]).await;
    wait_listening(&a.api, "one", 1).await;
    let names: Vec<String> = a
        .api
        .services()
        .await
        .into_iter()
        .map(|v| v.def.spec.name.to_string())
        .collect();
    assert_eq!(names, ["one"]);
    let rejected = std::fs::read_to_string(a.data_dir().join("services.rejected.jsonl")).unwrap();
    assert!(rejected.contains("--ready-timeout"), "{rejected}");
    assert_eq!(
        exchange(SocketAddr::new(a.ip, listen), b"one")
            .await
            .unwrap(),
        b"one"
    );
    assert!(
        running(&rt)
            .iter()
            .all(|c| c.labels.get(labels::SERVICE).map(String::as_str) == Some("one")),
        "{:?}",
        running(&rt)
    );
    a.stop().await;
}

/// A service whose image the host lacks: pulled before its first container
/// (once, whatever the connections), then served; one whose image the
/// registry does not have starts no container and serves nobody.
#[tokio::test]
async fn a_service_image_the_host_lacks_is_pulled_before_its_first_container() {
    let rt = Arc::new(MemoryRuntime::new());
    let mut a = agent(rt.clone()).await;
    let listen = port(103);
    let mut echo = svc("pulled", listen, &["echo", "--port", "7000"]);
    echo.image = format!("{}/echo:1", mesh_agent::runtime::memory::TEST_REGISTRY);
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "pulled", 1).await;
    let addr = SocketAddr::new(a.ip, listen);
    assert_eq!(exchange(addr, b"hello").await.unwrap(), b"hello");
    assert_eq!(exchange(addr, b"again").await.unwrap(), b"again");
    assert_eq!(rt.pulls(), 1, "pulled once");

    let listen = port(104);
    let mut nosuch = svc("nosuch", listen, &["echo", "--port", "7000"]);
    nosuch.image = format!("{}/nosuch:1", mesh_agent::runtime::memory::TEST_REGISTRY);
    nosuch.queue_timeout_ms = Some(500);
    a.api.create_service(&nosuch).await;
    wait_listening(&a.api, "nosuch", 1).await;
    let started = rt.started();
    let refused = exchange(SocketAddr::new(a.ip, listen), b"x").await;
    assert!(
        !matches!(&refused, Ok(echoed) if echoed.as_slice() == b"x"),
        "{refused:?}"
    );
    assert_eq!(rt.started(), started, "no container without its image");
    a.stop().await;
}

/// `GET /v1/cores` tells each core's holder apart: a task, a warm service
/// container, one serving a client, or nobody.
#[tokio::test]
async fn cores_show_tasks_warm_and_serving_containers_apart() {
    use mesh_protocol::cores::{HoldKind, MeshCores};
    let rt = Arc::new(MemoryRuntime::new());
    let mut a = agent(rt.clone()).await;
    let listen = port(104);
    let mut echo = svc("echo", listen, &["echo", "--port", "7000"]);
    echo.warm = Some(1);
    a.api.create_service(&echo).await;
    wait_listening(&a.api, "echo", 1).await;
    wait_running(&rt, 1).await;
    let task = a.api.submit(&sleep_task(1, "600")).await;
    a.api
        .wait_state(&task.id, mesh_protocol::TaskState::Running, 10)
        .await;
    // A client that holds its connection: its container serves it, and
    // another is started warm.
    let mut client = tokio::net::TcpStream::connect(SocketAddr::new(a.ip, listen))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut client, b"x")
        .await
        .unwrap();
    let kinds = wait_until(
        "a task, a serving, a warm and a free core",
        Duration::from_secs(10),
        || async {
            let (status, _, body) = a.api.get_raw("/v1/cores").await;
            assert_eq!(status, 200, "{body}");
            let cores: MeshCores = serde_json::from_str(&body).unwrap();
            assert_eq!(cores.nodes.len(), 1);
            let mut kinds: Vec<_> = cores.nodes[0].cores.iter().map(|c| c.kind).collect();
            kinds.sort_by_key(|k| format!("{k:?}"));
            let want = [
                HoldKind::Free,
                HoldKind::Service,
                HoldKind::Task,
                HoldKind::Warm,
            ];
            if kinds == want {
                Ok((cores.nodes[0].cores.clone(), task.id.clone()))
            } else {
                Err(kinds)
            }
        },
    )
    .await;
    let (cores, id) = kinds;
    let task_core = cores.iter().find(|c| c.kind == HoldKind::Task).unwrap();
    assert_eq!(task_core.holder.as_ref(), Some(&id));
    for c in cores.iter().filter(|c| c.kind != HoldKind::Free) {
        if c.kind != HoldKind::Task {
            assert_eq!(c.service.as_ref().map(|s| s.as_str()), Some("echo"));
        }
    }
    drop(client);
    a.api.kill(&task.id).await;
    a.stop().await;
}
