//! Images shared between peers on a testnet whose agents each drive a
//! Docker engine of their own, as on real hosts: a new service's image,
//! which only a loopback registry holds, is pre-pulled by every node, and
//! the registry sends it once. One node pulls it; the others wait for that
//! node (`image::first`) and load it from it over the mesh.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mesh_protocol::api::ServiceView;
use mesh_protocol::service::ServiceRequest;
use mesh_protocol::service::image::ImageStatus;
use mesh_testnet::{DEFAULT_IMAGE, SCENARIO_LIMIT, Testnet, TestnetOptions, scenario};
use meshctl::client::Client;
use serde_json::json;

mod common;

use common::engines::{has_image, image_events};
use common::registry::TestRegistry;

/// A layer big enough that a registry download is worth sparing.
const LAYER: usize = 8 * 1024 * 1024;

#[tokio::test]
async fn three_nodes_pre_pulling_a_new_image_make_one_registry_download() -> Result<()> {
    scenario(
        "three_nodes_pre_pulling_a_new_image_make_one_registry_download",
        SCENARIO_LIMIT,
        async {
            let registry = TestRegistry::start().await;
            let image =
                registry.push_new_sized("mesh-busybox:latest", "own-docker/shared:1", LAYER);

            let net = common::up_all_alive(
                TestnetOptions::for_test("own-share")
                    .nodes(3)
                    .topology("numa:1 core:1 pu:1")
                    .own_docker(true),
            )
            .await?;
            let all = net.nodes();

            let n1 = net.client("n1")?;
            create_and_wait_present(&n1, &image, Duration::from_secs(120)).await?;

            let mut pulled = Vec::new();
            let mut loaded = Vec::new();
            for node in &all {
                let docker = net.docker_of(node.as_str())?;
                ensure!(has_image(&docker, &image).await?, "{node} lacks {image}");
                if image_events(&docker, "pull").await? > 0 {
                    pulled.push(node.clone());
                }
                if image_events(&docker, "load").await? > 0 {
                    loaded.push(node.clone());
                }
            }
            ensure!(
                pulled.len() == 1,
                "the registry sent the image to {pulled:?}; one node only should pull it; the agents said:\n{}",
                image_log(&net)
            );
            ensure!(
                loaded.len() == 2 && !loaded.contains(&pulled[0]),
                "loaded from a peer: {loaded:?} (pulled: {pulled:?}); the agents said:\n{}",
                image_log(&net)
            );

            n1.remove_service("shared").await.context("removing the service")?;
            let removed = net.down().await?;
            ensure!(removed.engines == 3, "{removed:?}");
            drop(registry);
            Ok(())
        },
    )
    .await
}

/// The benchmark of docs/benchmarks.md ("Registry bytes when 3 nodes
/// start the same new service"): for `--image-source registry-only`, then
/// the default `peers-first`, a fresh registry and testnet of 3 nodes with
/// engines of their own, a new service whose image (mesh-busybox and a
/// layer of `BENCH_SHARE_MIB` (8) MiB of random bytes) only the registry
/// holds, pre-pulled by every node at once; then the registry's blob bytes
/// sent (its access log), the pulls and loads the engines saw, and the time
/// until all 3 held it. Prints a markdown table. The agents' image is
/// `BENCH_MESHD_IMAGE` if set (a meshd built from another checkout), else
/// `meshd:testnet`.
#[tokio::test]
#[ignore = "a benchmark: scripts/bench images"]
async fn bench_registry_bytes_when_three_nodes_start_one_new_service() -> Result<()> {
    let mib: usize = std::env::var("BENCH_SHARE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    println!(
        "| `--image-source` | registry bytes sent (access log) | stored compressed image | pulls × stored | pulls | loads from a peer | s until all 3 hold it |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for source in ["registry-only", "peers-first"] {
        let registry = TestRegistry::start().await;
        let image = registry.push_new_sized(
            "mesh-busybox:latest",
            &format!("own-docker/bench-{source}:1"),
            mib << 20,
        );
        let sent_before = registry.blob_bytes_sent();
        let stored = registry.stored_blob_bytes();
        let net = common::up_all_alive(
            TestnetOptions::for_test("own-bench")
                .nodes(3)
                .topology("numa:1 core:1 pu:1")
                .own_docker(true)
                .image(std::env::var("BENCH_MESHD_IMAGE").unwrap_or(DEFAULT_IMAGE.into()))
                .extra_arg("--image-source")
                .extra_arg(source),
        )
        .await?;
        let n1 = net.client("n1")?;
        let started = std::time::Instant::now();
        create_and_wait_present(&n1, &image, Duration::from_secs(300)).await?;
        let took = started.elapsed().as_secs_f64();
        let (mut pulls, mut loads) = (0, 0);
        for node in &net.nodes() {
            let docker = net.docker_of(node.as_str())?;
            pulls += image_events(&docker, "pull").await?;
            loads += image_events(&docker, "load").await?;
        }
        let sent = registry.blob_bytes_sent() - sent_before;
        println!(
            "| `{source}` | {sent} | {stored} | {} | {pulls} | {loads} | {took:.1} |",
            pulls as u64 * stored
        );
        n1.remove_service("shared")
            .await
            .context("removing the service")?;
        net.down().await?;
        drop(registry);
    }
    Ok(())
}

/// What each agent logged about images, for a failure's message.
fn image_log(net: &Testnet) -> String {
    let mut out = String::new();
    for node in &net.state().nodes {
        let logs = std::process::Command::new("docker")
            .args(["logs", &node.container])
            .output()
            .map(|o| String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).into_owned())
            .unwrap_or_else(|e| format!("docker logs: {e}"));
        for line in logs.lines().filter(|l| l.contains("image")) {
            out.push_str(&format!("{}: {line}\n", node.node));
        }
    }
    out
}

/// Creates the service `shared` of `image` through `n1`, with no warm
/// containers (only the pre-pull brings the image), and waits until all
/// three nodes report the image present.
async fn create_and_wait_present(n1: &Client, image: &str, budget: Duration) -> Result<()> {
    let request: ServiceRequest = serde_json::from_value(json!({
        "name": "shared", "image": image, "port": 7000, "listen": 9400,
        "command": ["sleep", "600"],
    }))?;
    n1.create_service(&request)
        .await
        .context("creating the service")?;
    mesh_testnet::wait_until("every node reports the image present", budget, async || {
        let view: ServiceView = n1.service("shared").await.map_err(|e| e.to_string())?;
        let images: Vec<_> = view.nodes.iter().map(|n| (&n.node, &n.image)).collect();
        let present = images
            .iter()
            .filter(|(_, i)| **i == Some(ImageStatus::Present))
            .count();
        if present == 3 {
            Ok(())
        } else {
            Err(format!("{images:?}"))
        }
    })
    .await?;
    Ok(())
}
