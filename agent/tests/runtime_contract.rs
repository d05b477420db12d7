//! One suite, two runtimes: what the supervisor relies on holds for the real
//! Docker runtime and for the in-memory one used in fast tests.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mesh_agent::runtime::memory::{MemoryRuntime, TEST_REGISTRY, labels};
use mesh_agent::runtime::{ContainerRuntime, ContainerSpec, PullError, RuntimeError};
use mesh_protocol::CpuSet;
use mesh_protocol::image::{ImageRef, PullProgress};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

fn spec(node: &str, name: &str, image: &str, cmd: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: format!("mesh-{node}-{name}"),
        image: image.into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec![("A".into(), "1".into())],
        labels: labels(&[
            ("mesh.node", node),
            ("mesh.kind", "task"),
            ("mesh.task", name),
        ]),
        cpuset_cpus: CpuSet::from_iter([0]),
        cpuset_mems: CpuSet::from_iter([0]),
        memory: Some(64 << 20),
        network: None,
    }
}

async fn contract<R: ContainerRuntime>(rt: &R, node: &str) {
    rt.ping().await.unwrap();

    // Exit codes come back from wait.
    let quick = rt
        .run(&spec(node, "quick", IMAGE, &["exit", "3"]))
        .await
        .unwrap();
    assert_eq!(rt.wait(&quick).await.unwrap(), 3);
    let info = rt.inspect(&quick).await.unwrap();
    assert!(!info.running);
    assert_eq!(info.exit_code, Some(3));
    assert_eq!(info.cpuset_cpus.as_deref(), Some("0"));

    // A long one is listed by label, killed, then removed.
    let long = rt
        .run(&spec(node, "long", IMAGE, &["sleep", "60"]))
        .await
        .unwrap();
    assert!(rt.inspect(&long).await.unwrap().running);
    let mine = rt.list(&[("mesh.node", node)]).await.unwrap();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let only_long = rt
        .list(&[("mesh.node", node), ("mesh.task", "long")])
        .await
        .unwrap();
    assert_eq!(only_long.len(), 1);
    assert!(only_long[0].running);
    rt.kill(&long).await.unwrap();
    assert_eq!(rt.wait(&long).await.unwrap(), 137);
    rt.kill(&long).await.unwrap(); // killing a stopped container is fine

    // Names are unique.
    let dup = rt.run(&spec(node, "quick", IMAGE, &["exit", "0"])).await;
    assert!(matches!(dup, Err(RuntimeError::Rejected(_))), "{dup:?}");

    // A running server is reached at its address; its end closes its
    // connections.
    let server = rt
        .run(&spec(node, "server", IMAGE, &["echo", "--port", "7000"]))
        .await
        .unwrap();
    let mut conn = connect_when_listening(rt, &server, 7000).await;
    conn.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    conn.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    rt.kill(&server).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut got)).await;
    assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "{end:?}");
    assert_eq!(rt.inspect(&server).await.unwrap().address, None);

    for id in [&quick, &long, &server] {
        rt.remove(id).await.unwrap();
        assert!(matches!(
            rt.inspect(id).await,
            Err(RuntimeError::NotFound(_))
        ));
        rt.remove(id).await.unwrap(); // removing twice is fine
    }
    assert!(rt.list(&[("mesh.node", node)]).await.unwrap().is_empty());
    assert!(matches!(
        rt.wait("no-such-container").await,
        Err(RuntimeError::NotFound(_))
    ));

    // An unknown image is refused, not mistaken for an outage.
    let missing = rt.run(&spec(node, "missing", "missing", &[])).await;
    assert!(
        matches!(missing, Err(RuntimeError::Rejected(_))),
        "{missing:?}"
    );
    assert!(
        rt.list(&[("mesh.node", node)]).await.unwrap().is_empty(),
        "nothing left behind"
    );
}

/// Connects to `port` of a running container once it listens (a real
/// process takes a moment to bind).
async fn connect_when_listening<R: ContainerRuntime>(rt: &R, id: &str, port: u16) -> TcpStream {
    for _ in 0..200 {
        let info = rt.inspect(id).await.unwrap();
        assert!(info.running, "{info:?}");
        let ip = info.address.expect("a running container has an address");
        if let Ok(conn) = TcpStream::connect((ip, port)).await {
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("container {id} never accepted on port {port}");
}

#[tokio::test]
async fn memory_runtime_keeps_the_contract() {
    contract(&MemoryRuntime::new(), "mem").await;
}

#[tokio::test]
async fn docker_runtime_keeps_the_contract() {
    require_docker().await;
    let node = unique_node("contract");
    let _cleanup = NodeContainers(node.clone());
    let rt = docker();
    contract(&rt, node.as_str()).await;
}

#[tokio::test]
async fn unreachable_docker_is_reported_as_unavailable() {
    // A client pointed at a socket that does not exist.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    // SAFETY of the test: the variable is read only by this constructor, in
    // a child process, never by this one.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshd"))
        .args(["--cleanup", "--node-id", "x"])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none.sock") && err.contains("Is dockerd running"),
        "{err}"
    );
}

/// Pulling, against a real registry: an image the host lacks is pulled with
/// its progress; the registry's "no such image" is final, an unreachable
/// registry may succeed later.
#[tokio::test]
async fn docker_runtime_pulls_from_a_registry_and_says_why_a_pull_failed() {
    require_docker().await;
    let registry = common::registry::TestRegistry::start().await;
    let name = registry.push_new(IMAGE, &format!("ganger-test/{}:1", unique("pull")));
    let rt = docker();
    assert!(!rt.has_image(&name).await.unwrap(), "pushed and removed");
    let (progress, seen) = watch::channel(PullProgress::default());
    rt.pull(&ImageRef::parse(&name).unwrap(), None, &progress)
        .await
        .unwrap();
    assert!(rt.has_image(&name).await.unwrap());
    let done = *seen.borrow();
    assert!(
        done.layers > 0 && done.layers_done == done.layers,
        "{done:?}"
    );

    let nosuch = format!("{}/ganger-test/nosuch:1", registry.addr);
    let err = rt
        .pull(&ImageRef::parse(&nosuch).unwrap(), None, &progress)
        .await
        .unwrap_err();
    match err {
        PullError::Failed(f) => assert!(!f.may_succeed_later(), "{f}"),
        other => panic!("{other:?}"),
    }

    let closed = format!("{}/ganger-test/x:1", free_addr());
    let err = rt
        .pull(&ImageRef::parse(&closed).unwrap(), None, &progress)
        .await
        .unwrap_err();
    match err {
        PullError::Failed(f) => assert!(f.may_succeed_later(), "{f}"),
        other => panic!("{other:?}"),
    }
}

/// The in-memory runtime keeps the same promises, so the supervisor's
/// tests of pulling mean what they say.
#[tokio::test]
async fn memory_runtime_pulls_like_docker() {
    let rt = MemoryRuntime::new();
    let name = format!("{TEST_REGISTRY}/app:1");
    assert!(!rt.has_image(&name).await.unwrap());
    assert!(rt.has_image(IMAGE).await.unwrap());
    let (progress, seen) = watch::channel(PullProgress::default());
    rt.pull(&ImageRef::parse(&name).unwrap(), None, &progress)
        .await
        .unwrap();
    assert!(rt.has_image(&name).await.unwrap());
    assert_eq!(seen.borrow().percent(), 100);
    let nosuch = ImageRef::parse(&format!("{TEST_REGISTRY}/nosuch:1")).unwrap();
    let err = rt.pull(&nosuch, None, &progress).await.unwrap_err();
    assert!(
        matches!(&err, PullError::Failed(f) if !f.may_succeed_later()),
        "{err:?}"
    );
    assert_eq!(rt.pulls(), 2);
}

/// Images shared between runtimes as peers share them: the holder's id and
/// `save`, the asker's `load` (reporting that id) and `tag`, after which
/// the asker has the image by the new name.
async fn share_contract<A: ContainerRuntime, B: ContainerRuntime>(
    holder: &A,
    asker: &B,
    held: &str,
    name: &str,
) {
    let image = holder
        .image_id(held)
        .await
        .unwrap()
        .expect("the holder has it");
    assert!(image.id.starts_with("sha256:"), "{image:?}");
    assert!(image.size > 0);
    assert_eq!(
        holder.image_id(&image.id).await.unwrap(),
        Some(image.clone())
    );
    assert_eq!(
        holder.image_id("registry.test/nosuch:1").await.unwrap(),
        None
    );
    assert!(!asker.has_image(name).await.unwrap());
    let loaded = asker.load(holder.save(&image.id)).await.unwrap();
    assert_eq!(loaded, vec![image.id.clone()]);
    asker
        .tag(&image.id, &ImageRef::parse(name).unwrap())
        .await
        .unwrap();
    assert!(asker.has_image(name).await.unwrap());
    assert_eq!(asker.image_id(name).await.unwrap().unwrap().id, image.id);
}

#[tokio::test]
async fn memory_runtimes_share_images() {
    let name = format!("{TEST_REGISTRY}/shared:1");
    share_contract(&MemoryRuntime::new(), &MemoryRuntime::new(), IMAGE, &name).await;
}

#[tokio::test]
async fn docker_engines_share_images() {
    require_docker().await;
    let engine = common::engine::Engine::start().await;
    let asker = mesh_agent::runtime::docker::DockerRuntime::at(Some(&engine.host)).unwrap();
    let name = format!("ganger-test/{}:1", unique("shared"));
    share_contract(&docker(), &asker, "mesh-busybox:latest", &name).await;
}

/// The host's image events: a stream opened once the runtime answers
/// tells of a new name for an image and of its removal.
async fn events_contract<R: ContainerRuntime>(rt: &R, held: &str, name: &str) {
    use futures_util::StreamExt;
    let id = rt.image_id(held).await.unwrap().expect("held").id;
    let mut events = rt.image_events().await.unwrap();
    let name = ImageRef::parse(name).unwrap();
    // The bound only keeps a broken runtime from hanging the test.
    let bound = Duration::from_secs(30);
    rt.tag(&id, &name).await.unwrap();
    let tagged = tokio::time::timeout(bound, events.next()).await;
    assert!(matches!(tagged, Ok(Some(Ok(())))), "{tagged:?}");
    rt.remove_image(&name.to_string()).await.unwrap();
    let removed = tokio::time::timeout(bound, events.next()).await;
    assert!(matches!(removed, Ok(Some(Ok(())))), "{removed:?}");
}

#[tokio::test]
async fn memory_runtime_tells_of_image_changes() {
    let rt = MemoryRuntime::new();
    events_contract(&rt, IMAGE, &format!("{TEST_REGISTRY}/named:1")).await;
    // Going away ends the stream, as Docker's does when the daemon stops.
    let mut events = rt.image_events().await.unwrap();
    rt.set_available(false);
    assert!(futures_util::StreamExt::next(&mut events).await.is_none());
    assert!(matches!(
        rt.image_events().await,
        Err(RuntimeError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn docker_runtime_tells_of_image_changes() {
    require_docker().await;
    let name = format!("ganger-test/{}:evt", unique("events"));
    events_contract(&docker(), "mesh-busybox:latest", &name).await;
}
