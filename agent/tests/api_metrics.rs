//! `GET /metrics` on a live agent (in-process, in-memory runtime): the
//! figures move with the tasks, the text passes `promtool check metrics`
//! (Debian's `prometheus` package, which scripts/test installs), and the
//! endpoint takes the read role like every GET.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::services::*;
use common::*;
use mesh_agent::runtime::memory::TEST_REGISTRY;
use mesh_protocol::TaskState;
use mesh_protocol::UserName;
use mesh_protocol::auth::Role;
use mesh_protocol::token::{self, Tokens};

fn setup(tag: &str) -> Setup {
    Setup::memory(tag).topology("numa:2 core:2 pu:1")
}

/// The samples of a scrape, by their name with labels.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// Scrapes `/metrics`, checking the answer's status and content type.
async fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = r.text().await.unwrap();
    let samples = samples(&text);
    (text, samples)
}

fn allocated(samples: &BTreeMap<String, f64>) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with("meshd_cores_allocated{"))
        .map(|(_, v)| v)
        .sum()
}

/// Runs `promtool check metrics` on `text`; fails the test with promtool's
/// complaints, or with how to get promtool when it is missing.
fn promtool_check(text: &str) {
    // scripts/test says where it put promtool.
    let promtool = std::env::var("MESH_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run {promtool} ({e}): scripts/test fetches it (MESH_PROMTOOL), or install Debian's `prometheus` package"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape:\n{}{}\n--- the scrape:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn figures_follow_the_tasks_and_pass_promtool() {
    let agent = setup("metrics").start(&[]).await;
    let api = &agent.api;
    let addr = agent.running().api_addr;
    let (before, idle) = scrape(addr).await;
    promtool_check(&before);
    assert_eq!(idle[r#"meshd_peers{state="alive"}"#], 1.0, "{before}");
    assert_eq!(idle[r#"meshd_peers{state="suspect"}"#], 0.0, "{before}");
    assert_eq!(idle[r#"meshd_cores{numa="0"}"#], 2.0, "{before}");
    assert_eq!(idle[r#"meshd_cores{numa="1"}"#], 2.0, "{before}");
    assert_eq!(allocated(&idle), 0.0, "{before}");
    assert_eq!(idle[r#"meshd_tasks{state="running"}"#], 0.0, "{before}");

    let t = api.submit(&sleep_task(3, "60")).await.id;
    api.wait_state(&t, TaskState::Running, 10).await;
    let (during, busy) = scrape(addr).await;
    promtool_check(&during);
    assert_eq!(busy[r#"meshd_tasks{state="running"}"#], 1.0, "{during}");
    assert_eq!(allocated(&busy), 3.0, "{during}");
    assert_eq!(busy["meshd_queue_tasks"], 0.0, "{during}");
    assert_eq!(idle["meshd_task_attempts_started_total"], 0.0, "{before}");
    assert_eq!(busy["meshd_task_attempts_started_total"], 1.0, "{during}");
    assert_eq!(idle["meshd_container_start_seconds_count"], 0.0, "{before}");
    assert_eq!(busy["meshd_container_start_seconds_count"], 1.0, "{during}");
    assert_eq!(
        busy[r#"meshd_container_start_seconds_bucket{le="+Inf"}"#], 1.0,
        "{during}"
    );
    // Placed by an offer (to this node itself).
    let placed = r#"meshd_task_placement_seconds_count{outcome="offered"}"#;
    assert_eq!(idle.get(placed), None, "{before}");
    assert_eq!(busy[placed], 1.0, "{during}");

    // A second task that does not fit waits in the queue.
    let waits = api.submit(&sleep_task(2, "60")).await.id;
    assert_eq!(api.task(&waits).await.state, TaskState::Queued);
    let (_, queued) = scrape(addr).await;
    assert_eq!(queued["meshd_queue_tasks"], 1.0);
    assert_eq!(queued[r#"meshd_tasks{state="queued"}"#], 1.0);
    assert_eq!(
        queued[r#"meshd_task_placement_seconds_count{outcome="queued"}"#],
        1.0
    );

    api.kill(&t).await;
    api.wait_state(&t, TaskState::Killed, 10).await;
    api.wait_state(&waits, TaskState::Running, 10).await;
    let after = wait_until(
        "the killed task's cores go to the queued one",
        Duration::from_secs(10),
        || async {
            let (text, s) = scrape(addr).await;
            let want = (1.0, 1.0, 0.0, 2.0, 2.0);
            let seen = (
                s[r#"meshd_tasks{state="killed"}"#],
                s[r#"meshd_tasks{state="running"}"#],
                s["meshd_queue_tasks"],
                allocated(&s),
                s["meshd_task_attempts_started_total"],
            );
            if seen == want { Ok(text) } else { Err(seen) }
        },
    )
    .await;
    promtool_check(&after);
}

#[tokio::test]
async fn metrics_need_the_read_role_when_the_api_asks_for_credentials() {
    let mut lines = String::new();
    let mut secrets = BTreeMap::new();
    for (user, role) in [("root", Role::Admin), ("reader", Role::Read)] {
        let t = token::create(&UserName::new(user).unwrap(), role).unwrap();
        lines.push_str(&t.line);
        lines.push('\n');
        secrets.insert(user, t.secret);
    }
    let setup = setup("metricsauth").api_tokens(Tokens::parse(&lines).unwrap(), &secrets["root"]);
    let agent = setup.start(&[]).await;
    let addr = agent.running().api_addr;
    let (status, _, body) = Api::new(addr).get_raw("/metrics").await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = Api::with_token(addr, Some(secrets["reader"].clone()))
        .get_raw("/metrics")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("meshd_tasks{"), "{body}");
}

#[tokio::test]
async fn a_retry_is_counted() {
    let agent = setup("metricsretry").start(&[]).await;
    let addr = agent.running().api_addr;
    let mut fails = task(1, &["exit", "1"]);
    fails.retries = Some(1);
    let t = agent.api.submit(&fails).await.id;
    agent.api.wait_state(&t, TaskState::Failed, 15).await;
    let (text, s) = scrape(addr).await;
    assert_eq!(s["meshd_task_retries_total"], 1.0, "{text}");
    assert_eq!(s["meshd_task_attempts_started_total"], 2.0, "{text}");
    assert_eq!(s[r#"meshd_tasks{state="failed"}"#], 1.0, "{text}");
}

#[tokio::test]
async fn each_node_counts_the_offers_it_took_and_sees_its_peer() {
    let [a, b]: [TestAgent; 2] = Setup::memory("metricsoffer")
        .topology("numa:1 core:1 pu:1")
        .cluster(2)
        .await
        .try_into()
        .ok()
        .unwrap();
    // Two 1-core nodes, two tasks: one runs on each, placed by an offer
    // (to the accepting node itself too).
    let t1 = a.api.submit(&sleep_task(1, "60")).await.id;
    let t2 = a.api.submit(&sleep_task(1, "60")).await.id;
    let r1 = a.api.wait_state(&t1, TaskState::Running, 10).await;
    let r2 = a.api.wait_state(&t2, TaskState::Running, 10).await;
    assert_ne!(r1.node, r2.node, "one on each node");
    for agent in [&a, &b] {
        let (text, s) = scrape(agent.running().api_addr).await;
        promtool_check(&text);
        assert_eq!(s[r#"meshd_peers{state="alive"}"#], 2.0, "{text}");
        assert_eq!(
            s[r#"meshd_task_offers_total{result="taken"}"#], 1.0,
            "{text}"
        );
        assert_eq!(s["meshd_task_attempts_started_total"], 1.0, "{text}");
        assert_eq!(allocated(&s), 1.0, "{text}");
        // Each gossips with the other: it started exchanges, got answers.
        for gossip in [
            "meshd_gossip_sent_bytes_total",
            "meshd_gossip_received_bytes_total",
            r#"meshd_gossip_messages_sent_total{kind="syn"}"#,
            r#"meshd_gossip_messages_received_total{kind="synack"}"#,
        ] {
            assert!(s[gossip] > 0.0, "{gossip}: {text}");
        }
        assert_eq!(
            s[r#"meshd_gossip_messages_sent_total{kind="bad_cluster"}"#], 0.0,
            "{text}"
        );
    }
    // The task that runs on B was offered to it by A, over the mesh.
    let (text, s) = scrape(a.running().api_addr).await;
    let offered = s
        .get(r#"meshd_rpc_calls_total{kind="offer",outcome="ok"}"#)
        .copied()
        .unwrap_or(0.0);
    assert!(offered >= 1.0, "{text}");
}

#[tokio::test]
async fn pulls_are_counted_with_their_bytes() {
    let agent = setup("metricspull").start(&[]).await;
    let addr = agent.running().api_addr;
    let mut pulled = task(1, &["exit", "0"]);
    pulled.image = format!("{TEST_REGISTRY}/app:1");
    let mut missing = task(1, &["exit", "0"]);
    missing.image = format!("{TEST_REGISTRY}/nosuch:1");
    let ok = agent.api.submit(&pulled).await.id;
    let not = agent.api.submit(&missing).await.id;
    agent.api.wait_state(&ok, TaskState::Succeeded, 10).await;
    agent.api.wait_state(&not, TaskState::Failed, 10).await;
    let (text, s) = scrape(addr).await;
    promtool_check(&text);
    assert_eq!(
        s[r#"meshd_image_pulls_total{result="succeeded"}"#], 1.0,
        "{text}"
    );
    assert_eq!(
        s[r#"meshd_image_pulls_total{result="failed"}"#], 1.0,
        "{text}"
    );
    // The in-memory registry reports each image as 1 byte.
    assert_eq!(s["meshd_image_pull_received_bytes_total"], 1.0, "{text}");
}

#[tokio::test]
async fn a_services_connections_are_counted() {
    let agent = setup("metricssvc").own_loopback().start(&[]).await;
    let listen = port(1);
    let mut echo = svc("echo", listen, &["echo", "--port", "7000"]);
    echo.warm = Some(1);
    agent.api.create_service(&echo).await;
    wait_listening(&agent.api, "echo", 1).await;
    let addr = SocketAddr::new(agent.ip, listen);
    assert_eq!(exchange(addr, b"hello").await.unwrap(), b"hello");
    // Served is counted when the connection has closed.
    let text = wait_until(
        "the connection counted accepted and served",
        Duration::from_secs(10),
        || async {
            let (text, s) = scrape(agent.running().api_addr).await;
            let seen = (
                s.get(r#"meshd_service_connections_accepted_total{service="echo"}"#)
                    .copied(),
                s.get(r#"meshd_service_connections_served_total{service="echo"}"#)
                    .copied(),
                s.get(r#"meshd_service_listening{service="echo"}"#).copied(),
                // Both ways, once the connection closed; served here.
                s.get(r#"meshd_service_local_bytes_total{direction="to_container"}"#)
                    .copied(),
                s.get(r#"meshd_service_local_bytes_total{direction="to_client"}"#)
                    .copied(),
                s.get(r#"meshd_service_connection_setup_seconds_count{route="local"}"#)
                    .copied(),
            );
            let want = (
                Some(1.0),
                Some(1.0),
                Some(1.0),
                Some(5.0),
                Some(5.0),
                Some(1.0),
            );
            if seen == want { Ok(text) } else { Err(seen) }
        },
    )
    .await;
    promtool_check(&text);
}
