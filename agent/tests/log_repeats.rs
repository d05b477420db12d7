//! A warning that recurs is said once per new reason, as the operator's log
//! file gets it: two meshd processes, the second one's port for a service
//! taken by another program. It tries the port again and again (with a
//! back-off), and its log says so once; when the port frees, it listens and
//! says how often the reason came back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Api, NodeContainers, free_addr, own_loopback, unique_node, wait_until};
use mesh_protocol::NodeId;

const WARNING: &str = "service not served from this node";

/// A meshd process, killed when the test ends.
struct Meshd(Child);

impl Drop for Meshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts meshd as `node`, its log (text, no colours: stdout is a file) in
/// `log`, with its services' listeners on `service_bind`.
fn meshd(
    dir: &Path,
    node: &NodeId,
    service_bind: IpAddr,
    seed: Option<SocketAddr>,
) -> (Meshd, Api, SocketAddr) {
    let api = free_addr();
    let quic = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshd"));
    cmd.args([
        "--node-id",
        node.as_str(),
        "--insecure-dev",
        "--topology",
        "numa:1 core:1 pu:1",
    ])
    .args(["--cluster-id", "log-repeats", "--gossip-interval-ms", "100"])
    .arg("--api")
    .arg(api.to_string())
    .arg("--bind")
    .arg(quic.to_string())
    .arg("--service-bind")
    .arg(service_bind.to_string())
    .arg("--data-dir")
    .arg(dir.join(format!("data-{node}")));
    if let Some(seed) = seed {
        cmd.arg("--seed").arg(seed.to_string());
    }
    let log = std::fs::File::create(dir.join(format!("{node}.log"))).unwrap();
    let child = cmd
        .env("MESH_LOG", "info")
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("meshd starts");
    (Meshd(child), Api::new(api), quic)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_service_port_is_warned_about_once_and_its_repeats_counted() {
    common::require_docker().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (unique_node("repeat-a"), unique_node("repeat-b"));
    let _containers = (NodeContainers(a.clone()), NodeContainers(b.clone()));
    let (ip_a, ip_b) = (own_loopback(), own_loopback());
    // Another program holds the service's port on b's address.
    let holder = TcpListener::bind((ip_b, 0)).unwrap();
    let port = holder.local_addr().unwrap().port();

    let (_a, api_a, quic_a) = meshd(dir.path(), &a, ip_a, None);
    let (_b, api_b, _) = meshd(dir.path(), &b, ip_b, Some(quic_a));
    wait_until(
        "the two agents see each other",
        Duration::from_secs(30),
        || async {
            match api_b.client().peers().await {
                Ok(p) if p.len() == 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    api_a
        .create_service(&common::services::svc("repeated", port, &["echo"]))
        .await;

    // b tries the port again and again: its view of the service says how
    // often (1 s, then 2 s between tries, ...).
    let tried_thrice = |api: Api| async move {
        let views = api.services().await;
        let error = views
            .iter()
            .flat_map(|v| &v.nodes)
            .find_map(|n| n.listen_error.clone())
            .unwrap_or_default();
        if error.contains("tried 3 times") {
            Ok(())
        } else {
            Err(error)
        }
    };
    wait_until(
        "b tried the taken port three times",
        Duration::from_secs(60),
        || tried_thrice(api_b.clone()),
    )
    .await;
    let log = || std::fs::read_to_string(dir.path().join(format!("{b}.log"))).unwrap();
    let text = log();
    assert_eq!(
        text.matches(WARNING).count(),
        1,
        "three failed tries, one warning:\n{text}"
    );
    assert!(text.contains("Address already in use"), "{text}");

    // The port frees: b listens, and says how often the reason came back.
    drop(holder);
    wait_until(
        "b listens once the port is free",
        Duration::from_secs(90),
        || async {
            let text = log();
            if text.contains("the service's port is free again") {
                Ok(text)
            } else {
                Err(text.lines().rev().take(3).collect::<Vec<_>>().join("\n"))
            }
        },
    )
    .await;
    let text = log();
    let freed = text
        .lines()
        .find(|l| l.contains("the service's port is free again"))
        .unwrap();
    let repeats: u64 = freed
        .split("repeats=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no repeats=N in {freed:?}"));
    assert!(
        repeats >= 2,
        "the tries after the first were counted: {freed}"
    );
    assert_eq!(text.matches(WARNING).count(), 1, "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes in a file");
}
