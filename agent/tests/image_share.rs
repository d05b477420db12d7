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
/// emptied of the image between runs. Each run also times the stages of
/// both paths alone: `docker save` to nothing, `docker load` of a saved
/// file, the save streamed over the mesh (QUIC) to nothing, `docker pull`,
/// and save piped into load. Prints a markdown table.
#[tokio::test]
#[ignore = "a benchmark: scripts/bench images"]
async fn bench_image_from_a_peer_against_a_registry() {
    use futures_util::StreamExt;
    use mesh_agent::images::{Holder, ImagePeers, MeshPeers};
    use mesh_protocol::rpc::HeldImage;
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
    let image_id = docker_cli(&["image", "inspect", "-f", "{{.Id}}", &name])
        .trim()
        .to_owned();
    let saved = tempfile::NamedTempFile::new().unwrap();
    let saved_path = saved.path().display().to_string();
    sh(&format!("docker save {image_id} > {saved_path}"));
    let tar_bytes = std::fs::metadata(saved.path()).unwrap().len();
    // The stream P gets from A, as the peer path's fetch asks for it.
    let a_addr = p
        .mesh()
        .live_peers()
        .await
        .into_iter()
        .find(|(n, _)| *n == a.id)
        .unwrap()
        .1;
    let holder = Holder {
        node: a.id.clone(),
        addr: a_addr,
        image: HeldImage {
            id: image_id.clone(),
            size: 0,
        },
    };
    let mesh_peers = MeshPeers(p.mesh().clone());
    let labels = [
        "registry on loopback (registry-only), submit to task ended",
        "peer over the mesh (peers-first), submit to task ended",
        "`docker save` piped into `docker load`, no mesh, no task",
        "stage: `docker pull` alone (the registry path's engine work)",
        "stage: `docker save` alone, to /dev/null",
        "stage: `docker load` alone, of the saved file",
        "stage: save streamed A to P over the mesh (QUIC), to nothing",
        "stage: that stream's first byte",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); labels.len()];
    let mut chunks = 0usize;
    for _ in 0..runs {
        // The floor of the peer path: the two engines piped, no mesh.
        times[2].push(sh(&format!(
            "docker save {image_id} | docker -H {} load -q",
            from_peer.host
        )));
        assert!(from_peer.cli(&["rmi", &image_id]).status.success());
        times[3].push(sh(&format!(
            "docker -H {} pull -q {name}",
            from_registry.host
        )));
        assert!(from_registry.cli(&["rmi", &name]).status.success());
        times[4].push(sh(&format!("docker save {image_id} > /dev/null")));
        times[5].push(sh(&format!(
            "docker -H {} load -q -i {saved_path}",
            from_peer.host
        )));
        assert!(from_peer.cli(&["rmi", &image_id]).status.success());
        let started = Instant::now();
        let (_, mut tar) = mesh_peers.fetch(&holder).await.unwrap();
        let (mut got, mut first) = (0u64, None);
        while let Some(chunk) = tar.next().await {
            first.get_or_insert(started.elapsed().as_secs_f64());
            got += chunk.unwrap().len() as u64;
            chunks += 1;
        }
        times[6].push(started.elapsed().as_secs_f64());
        times[7].push(first.unwrap());
        assert_eq!(got, tar_bytes, "the whole tarball");
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
        "image: {name}, {} bytes as the engine counts it, a {tar_bytes}-byte tarball \
         (the mesh stream came in {} chunks of {} bytes on average), {runs} runs each\n",
        size.trim(),
        chunks / runs,
        tar_bytes * runs as u64 / chunks.max(1) as u64,
    );
    println!("| what | median s | min s | max s |\n|---|---:|---:|---:|");
    for (label, t) in labels.iter().zip(&times) {
        let (med, min, max) = stats(t);
        println!("| {label} | {med:.2} | {min:.2} | {max:.2} |");
    }
    let ratio = stats(&times[1]).0 / stats(&times[0]).0;
    println!("\nimage: peer over registry, medians: {ratio:.2}x");
    drop((r, p));
}

/// Runs `command` with sh, failing the test if it fails; its time in s.
fn sh(command: &str) -> f64 {
    let started = std::time::Instant::now();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {out:?}");
    started.elapsed().as_secs_f64()
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
