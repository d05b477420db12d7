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

/// The benchmark of docs/benchmarks.md (`scripts/bench images`): time to
/// get an image of about `BENCH_IMAGE_MIB` (100) MiB to a node, from a
/// peer that holds it against from a registry on loopback, `BENCH_RUNS`
/// (3) times each, alternating; both targets are second engines (vfs),
/// emptied of the image between runs. Prints a markdown table.
#[tokio::test]
#[ignore = "a benchmark: scripts/bench images"]
async fn bench_image_from_a_peer_against_a_registry() {
    use std::time::Instant;
    require_docker().await;
    let mib: usize = env_or("BENCH_IMAGE_MIB", 100);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let registry = TestRegistry::start().await;
    let name = registry.push_new_sized(
        "mesh-busybox:latest",
        &format!("ganger-bench/{}:1", unique("img")),
        mib << 20,
    );
    // A holds it (the registry's push_new removed it: pull it back).
    docker_cli(&["pull", "-q", &name]);
    let _held = Held(name.clone());
    let size = docker_cli(&["image", "inspect", "-f", "{{.Size}}", &name]);
    let setup = Setup::docker("bench");
    let a = setup.start(&[]).await;
    let _a_containers = NodeContainers(a.id.clone());
    a.api.set_draining(a.id.as_str(), true, false).await;
    let from_registry = Engine::start().await;
    let from_peer = Engine::start().await;
    let r = setup
        .clone()
        .docker_host(&from_registry.host)
        .image_source(ImageSource::RegistryOnly)
        .start(&[a.gossip()])
        .await;
    let p = setup
        .clone()
        .docker_host(&from_peer.host)
        .image_source(ImageSource::PeersFirst)
        .start(&[a.gossip()])
        .await;
    wait_formed(&[&a, &r, &p]).await;
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let image_id = docker_cli(&["image", "inspect", "-f", "{{.Id}}", &name]);
    for _ in 0..runs {
        // The floor of the peer path: the two engines piped, no mesh.
        let started = Instant::now();
        let piped = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {} | docker -H {} load -q",
                image_id.trim(),
                from_peer.host
            ))
            .output()
            .unwrap();
        assert!(piped.status.success(), "{piped:?}");
        times[2].push(started.elapsed().as_secs_f64());
        assert!(from_peer.cli(&["rmi", image_id.trim()]).status.success());
        for (i, (agent, other, engine)) in [(&r, &p, &from_registry), (&p, &r, &from_peer)]
            .into_iter()
            .enumerate()
        {
            // The task goes to `agent`: the other one drains meanwhile.
            other.api.set_draining(other.id.as_str(), true, false).await;
            agent
                .api
                .set_draining(agent.id.as_str(), false, false)
                .await;
            let started = Instant::now();
            let id = agent.api.submit(&from(&name)).await.id;
            let done = agent.api.wait_state(&id, TaskState::Succeeded, 600).await;
            times[i].push(started.elapsed().as_secs_f64());
            assert_eq!(done.node, agent.id);
            // Empty again for the next run.
            let _ = engine.cli(&["container", "prune", "-f"]);
            assert!(engine.cli(&["rmi", &name]).status.success());
        }
    }
    let stats = |t: &[f64]| {
        let mut s = t.to_vec();
        s.sort_by(f64::total_cmp);
        (s[s.len() / 2], s[0], s[s.len() - 1])
    };
    println!(
        "image: {name}, {} bytes as the engine counts it, {runs} runs each\n",
        size.trim()
    );
    println!("| source | median s | min s | max s |\n|---|---:|---:|---:|");
    for (label, t) in [
        (
            "registry on loopback (registry-only), submit to task ended",
            &times[0],
        ),
        (
            "peer over the mesh (peers-first), submit to task ended",
            &times[1],
        ),
        (
            "`docker save` piped into `docker load`, no mesh, no task",
            &times[2],
        ),
    ] {
        let (med, min, max) = stats(t);
        println!("| {label} | {med:.2} | {min:.2} | {max:.2} |");
    }
    drop((r, p));
}

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a peer may send, as the asker's engine takes it: garbage and a cut
/// tarball fail the load (nothing loaded); a whole one reports the id that
/// `verify_loaded` checks, and another image's id does not pass.
#[tokio::test]
async fn an_engine_refuses_garbage_and_cut_tarballs_and_reports_what_it_loaded() {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use mesh_agent::runtime::docker::DockerRuntime;
    use mesh_agent::runtime::{ContainerRuntime, TarStream};
    use mesh_protocol::image::share::verify_loaded;
    require_docker().await;
    let engine = Engine::start().await;
    let main = DockerRuntime::from_env().unwrap();
    let asker = DockerRuntime::at(Some(&engine.host)).unwrap();
    let held = main.image_id("mesh-busybox:latest").await.unwrap().unwrap();
    let tar: Vec<Bytes> = main.save(&held.id).map(|c| c.unwrap()).collect().await;
    let whole: Vec<u8> = tar.concat();
    let stream = |chunks: Vec<Result<Bytes, std::io::Error>>| -> TarStream {
        futures_util::stream::iter(chunks).boxed()
    };

    let garbage = asker
        .load(stream(vec![Ok(Bytes::from_static(
            b"not a tarball at all",
        ))]))
        .await;
    assert!(garbage.is_err(), "{garbage:?}");
    let cut = asker
        .load(stream(vec![
            Ok(Bytes::copy_from_slice(&whole[..whole.len() / 2])),
            Err(std::io::Error::other("the peer reset the stream")),
        ]))
        .await;
    assert!(cut.is_err(), "{cut:?}");
    assert!(!engine.has_image(&held.id), "nothing loaded");

    let loaded = asker
        .load(stream(vec![Ok(Bytes::from(whole))]))
        .await
        .unwrap();
    assert_eq!(verify_loaded(&held.id, &loaded), Ok(()), "{loaded:?}");
    let other = format!("sha256:{}", "0".repeat(64));
    assert!(verify_loaded(&other, &loaded).is_err());
    assert!(engine.has_image(&held.id));
}
