//! meshctl end to end against a real agent on the real Docker engine: the
//! foundation's "done when" as a user would type it.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use mesh_agent::Config;
use mesh_protocol::{NodeId, TaskRecord, TaskState};
use tokio_util::sync::CancellationToken;

fn meshctl(url: &str, args: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("--node")
        .arg(url)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Removes the node's containers at the end, pass or fail.
struct Cleanup(NodeId);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter label=mesh.node={} | xargs -r docker rm -f",
                self.0
            ))
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_pinned_task_watch_it_run_and_read_its_logs() {
    let node = NodeId::new(format!("cli-e2e-{}", std::process::id())).unwrap();
    let _cleanup = Cleanup(node.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = Config::builder(node.clone(), dir.path()).topology("numa:2 core:2 pu:1");
    let stop = CancellationToken::new();
    let agent = mesh_agent::start(config, stop.clone()).await.unwrap();
    let url = format!("http://{}", agent.api_addr);
    let url2 = url.clone();
    // meshctl is a separate, blocking process: run it off the runtime.
    let run = move |args: &[&str]| {
        let url = url2.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || meshctl(&url, &args))
    };

    let mut healthy = false;
    for _ in 0..100 {
        if run(&["health"]).await.unwrap().0 == 0 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "agent never reported Docker reachable");

    let (code, out, err) = run(&[
        "submit",
        "--cores",
        "2",
        "mesh-testsvc:latest",
        "--",
        "sleep",
        "2",
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    assert!(id.starts_with('t'), "{out}");

    // Running on two cores of one NUMA node, as `tasks` and `node` both say.
    let mut running: Option<TaskRecord> = None;
    for _ in 0..100 {
        let (_, json, _) = run(&["tasks", "--json"]).await.unwrap();
        let tasks: Vec<TaskRecord> = serde_json::from_str(&json).unwrap();
        if let Some(t) = tasks
            .into_iter()
            .find(|t| t.id.as_str() == id && t.state == TaskState::Running)
        {
            running = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = running.expect("task never ran");
    let a = t.allocation.unwrap();
    assert_eq!(a.cores.len(), 2);
    assert!(a.single_numa());
    let (_, table, _) = run(&["tasks"]).await.unwrap();
    assert!(table.contains(&id) && table.contains("running"), "{table}");
    let (_, node_out, _) = run(&["node"]).await.unwrap();
    assert_eq!(
        node_out.matches(id.as_str()).count(),
        2,
        "two cores held:\n{node_out}"
    );

    let (code, out, _) = run(&["wait", &id]).await.unwrap();
    assert_eq!((code, out.trim()), (0, "succeeded"));
    let (_, logs, _) = run(&["logs", &id]).await.unwrap();
    assert!(
        logs.contains("sleeping 2") && logs.contains("done"),
        "{logs}"
    );

    // Errors come back as the agent's message with a non-zero exit.
    let (code, _, err) = run(&["task", "tnope"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("no task with id tnope"), "{err}");
    let (code, _, err) = run(&["submit", "--cores", "64", "mesh-testsvc:latest"])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("cores"), "{err}");

    let (code, peers, _) = run(&["peers"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(peers.contains(&format!("{node}*")), "{peers}");

    stop.cancel();
    agent.wait().await.unwrap();
    let (code, _, err) = tokio::task::spawn_blocking(move || meshctl(&url, &["tasks".to_string()]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the agent"), "{err}");
}
