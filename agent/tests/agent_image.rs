//! The agent as a container image, started the way docs/operations.md ("As
//! a container") says: host network, the Docker socket mounted, /etc/meshd
//! (configuration and TLS material) and /var/lib/meshd as volumes, a
//! restart policy. Its API answers on a loopback port with Docker
//! reachable, the topology it reports is this host's as hwloc reads it (from
//! /sys inside the container), and a task submitted through it runs.
//!
//! The image is the one scripts/images builds for the tests (a debug meshd,
//! `MESH_TESTNET_IMAGE`, default `meshd:testnet`): the same build as
//! scripts/agent-image's release `ganger/meshd` image (scripts/lib.sh,
//! `build_meshd_image`), quicker to make.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Api, NodeContainers, require_docker, unique, unique_node, wait_until};
use mesh_protocol::TaskState;
use mesh_protocol::pki;

/// The flags of the documented `docker run` line, with the places of the
/// host's /etc/meshd and /var/lib/meshd given. docs/operations.md must show
/// each of them (checked below).
fn documented_run_flags(etc: &Path, data: &Path) -> Vec<[String; 2]> {
    [
        ["--restart", "unless-stopped"],
        ["--network", "host"],
        ["--volume", "/var/run/docker.sock:/var/run/docker.sock"],
        ["--volume", &format!("{}:/etc/meshd:ro", etc.display())],
        ["--volume", &format!("{}:/var/lib/meshd", data.display())],
    ]
    .map(|pair| pair.map(str::to_owned))
    .into()
}

/// Removes the agent's container when the test ends, pass or fail.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn docker(args: &[String]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command runs");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_documented_docker_run_line_is_in_the_docs() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let section = docs
        .split("### As a container")
        .nth(1)
        .expect("docs/operations.md has a section \"As a container\"");
    let flags = documented_run_flags(Path::new("/etc/meshd"), Path::new("/var/lib/meshd"));
    for pair in flags {
        let shown = pair.join(" ");
        assert!(
            section.contains(&shown),
            "\"As a container\" does not show {shown:?}"
        );
    }
    assert!(section.contains("ganger/meshd:latest --config /etc/meshd/meshd.toml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_image_runs_on_the_host_network_with_the_host_topology() {
    require_docker().await;
    let image = std::env::var("MESH_TESTNET_IMAGE").unwrap_or_else(|_| "meshd:testnet".into());
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&data).unwrap();

    // The node's TLS material, as `meshctl tls ca create` and `meshctl tls
    // cert create --node` would write it into /etc/meshd.
    let node = unique_node("image");
    let _tasks = NodeContainers(node.clone());
    let t0 = pki::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let ca = pki::create_ca("agent-image", t0, 2).unwrap();
    let cert = pki::create_node_cert(&ca, &node, t0, 2).unwrap();
    std::fs::write(etc.join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(etc.join("node.pem"), &cert.cert_pem).unwrap();
    std::fs::write(etc.join("node-key.pem"), &cert.key_pem).unwrap();
    // Loopback ports of their own: the host's network is the container's.
    let api = common::free_addr();
    let quic = free_udp();
    std::fs::write(
        etc.join("meshd.toml"),
        format!(
            "node_id = \"{node}\"\n\
             cluster_id = \"agent-image\"\n\
             api = \"{api}\"\n\
             bind = \"{quic}\"\n\
             data_dir = \"/var/lib/meshd\"\n\
             tls_ca = \"/etc/meshd/ca.pem\"\n\
             tls_cert = \"/etc/meshd/node.pem\"\n\
             tls_key = \"/etc/meshd/node-key.pem\"\n"
        ),
    )
    .unwrap();

    let name = unique("agent-image");
    let mut run: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--name".into(),
        name.clone(),
    ];
    run.extend(["--label".into(), format!("mesh.test={name}")]);
    run.extend(documented_run_flags(&etc, &data).into_iter().flatten());
    run.extend([
        image.clone(),
        "--config".into(),
        "/etc/meshd/meshd.toml".into(),
    ]);
    let _agent = Container(name.clone());
    docker(&run);

    let api = Api::new(api);
    let logs = || docker(&["logs".into(), name.clone()]);
    let health = wait_until(
        "the agent in its container answers /v1/health",
        Duration::from_secs(60),
        || async {
            match api.client().health().await {
                Ok(h) if h.docker.reachable => Ok(h),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(health.ok, "{health:?}\n{}", logs());
    assert_eq!(health.node, node);

    // The topology is the real host's (hwloc in the container reads the
    // host's /sys), as this process finds it: no synthetic description.
    let host = mesh_agent::topology::load(None).unwrap().model;
    let seen = api.node().await.topology;
    assert_eq!(seen.source, "host", "{seen:?}");
    assert_eq!(
        seen, host,
        "the container's topology differs from the host's"
    );

    // A task submitted through it runs on this host's Docker.
    let submitted = api.submit(&common::task(1, &["print", "1"])).await;
    let done = api
        .wait_state(&submitted.id, TaskState::Succeeded, 60)
        .await;
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    let out = api.logs(&submitted.id, false).await;
    assert!(out.contains("out 1"), "{out:?}\n{}", logs());

    // It stays up: the restart policy is the documented one.
    let policy = docker(&[
        "inspect".into(),
        "--format".into(),
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.NetworkMode}} {{.State.Running}}".into(),
        name.clone(),
    ]);
    assert_eq!(policy, "unless-stopped host true");
}

/// A free UDP port on 127.0.0.1 (the QUIC endpoint's).
fn free_udp() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free loopback UDP port");
    s.local_addr().expect("its address")
}
