//! Runs the built `meshctl` against a tiny fake agent that answers canned
//! HTTP responses, to check exit codes, stdout and error messages.

// Test harness: a setup that fails should panic right there.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};

use mesh_protocol::api::{CopyStatus, Health, RuntimeHealth, SubmitRequest, SubmitResponse};
use mesh_protocol::{NodeId, TaskId, TaskRecord, TaskSpec, TaskState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake answers to `METHOD /path?query`: successive answers in
/// turn, the last one repeated.
type Routes = BTreeMap<String, Vec<(u16, String)>>;

/// Requests received: the request line and the body.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

struct FakeAgent {
    addr: SocketAddr,
    seen: Seen,
}

impl FakeAgent {
    async fn start(routes: &[(&str, u16, &str)]) -> Self {
        let mut table = Routes::new();
        for (route, status, body) in routes {
            table
                .entry((*route).to_owned())
                .or_default()
                .push((*status, (*body).to_owned()));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Seen::default();
        let table = Arc::new(Mutex::new(table));
        let log = seen.clone();
        // Ends with the test's runtime.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, table.clone(), log.clone()));
            }
        });
        Self { addr, seen }
    }

    /// Runs meshctl against this agent, giving the address without scheme.
    async fn meshctl(&self, args: &[&str]) -> Output {
        let node = self.addr.to_string();
        let mut all = vec!["--node", node.as_str()];
        all.extend_from_slice(args);
        meshctl(&all).await
    }
}

async fn meshctl(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env_remove("MESH_NODE")
        .output()
        .await
        .unwrap()
}

async fn serve(mut stream: TcpStream, routes: Arc<Mutex<Routes>>, seen: Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = head.lines().next().unwrap_or_default();
    let route = line.rsplit_once(' ').map_or(line, |(r, _)| r).to_owned();
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    seen.lock().unwrap().push((route.clone(), body));
    let (status, body) = {
        let mut routes = routes.lock().unwrap();
        match routes.get_mut(&route) {
            Some(answers) if answers.len() > 1 => answers.remove(0),
            Some(answers) => answers[0].clone(),
            None => (404, r#"{"error":"no such route"}"#.to_owned()),
        }
    };
    let answer = format!(
        "HTTP/1.1 {status} Canned\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
}

fn record(id: &str, state: TaskState) -> String {
    let spec = TaskSpec::builder("img:1").cores(2).build().unwrap();
    let mut r = TaskRecord::new(
        TaskId::new(id).unwrap(),
        spec,
        NodeId::new("n1").unwrap(),
        0,
        0,
    );
    r.state = state;
    if state == TaskState::Failed {
        r.message = Some("exited with code 3".into());
    }
    serde_json::to_string(&r).unwrap()
}

/// A record whose image is being pulled: 3 of 5 layers, 43% of the bytes.
fn pulling(id: &str) -> String {
    let mut r: TaskRecord = serde_json::from_str(&record(id, TaskState::Starting)).unwrap();
    r.pull = Some(mesh_protocol::image::PullProgress {
        layers_done: 3,
        layers: 5,
        bytes_done: 4_400_000,
        bytes: 10_200_000,
    });
    serde_json::to_string(&r).unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn agent_error_message_is_shown_with_exit_1() {
    let agent = FakeAgent::start(&[("GET /v1/tasks/t9", 404, r#"{"error":"no task t9"}"#)]).await;
    let out = agent.meshctl(&["task", "t9"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: no task t9\n");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn other_error_bodies_show_status_and_body() {
    let agent = FakeAgent::start(&[("GET /v1/tasks", 500, "<html>oops</html>")]).await;
    let out = agent.meshctl(&["tasks"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("500") && err.contains("<html>oops</html>"),
        "{err}"
    );
}

#[tokio::test]
async fn unreadable_answers_are_errors_not_panics() {
    let agent = FakeAgent::start(&[("GET /v1/node", 200, r#"{"node":5}"#)]).await;
    let out = agent.meshctl(&["node"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: cannot read the agent's answer to GET /v1/node"));
}

#[tokio::test]
async fn unreachable_agent_says_what_to_do() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = meshctl(&["--node", &format!("http://{addr}"), "tasks"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("error: cannot reach the agent at http://{addr}: ")),
        "{err}"
    );
    assert!(
        err.ends_with("Is meshd running? Set --node or MESH_NODE.\n"),
        "{err}"
    );
}

#[tokio::test]
async fn submit_sends_the_request_and_prints_only_the_id() {
    let answer = serde_json::to_string(&SubmitResponse {
        id: TaskId::new("t1").unwrap(),
        state: TaskState::Queued,
        node: None,
        members: Vec::new(),
        copy: None,
    })
    .unwrap();
    let agent = FakeAgent::start(&[("POST /v1/tasks", 202, &answer)]).await;
    let out = agent
        .meshctl(&[
            "submit", "--cores", "2", "--env", "A=1", "img:1", "--", "echo", "hi",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "t1\n");
    let seen = agent.seen.lock().unwrap().clone();
    let sent: SubmitRequest = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(sent.image, "img:1");
    assert_eq!(sent.command, ["echo", "hi"]);
    assert_eq!((sent.cores, sent.env), (Some(2), vec!["A=1".to_owned()]));
}

/// A copy its keeper did not keep: the id alone on stdout, as always, and
/// a warning on stderr saying where and why.
#[tokio::test]
async fn submit_warns_when_the_keeper_did_not_keep_its_copy() {
    let answer = serde_json::to_string(&SubmitResponse {
        id: TaskId::new("t1").unwrap(),
        state: TaskState::Queued,
        node: Some(NodeId::new("n1").unwrap()),
        members: Vec::new(),
        copy: Some(CopyStatus::NotKept {
            node: NodeId::new("n2").unwrap(),
            reason: "n2: cannot write the task store: No space left on device".into(),
        }),
    })
    .unwrap();
    let agent = FakeAgent::start(&[("POST /v1/tasks", 202, &answer)]).await;
    let out = agent.meshctl(&["submit", "img:1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "t1\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: t1: the keeper's copy: NOT KEPT on n2: n2: cannot write the task store: No space left on device"),
        "{err}"
    );
}

#[tokio::test]
async fn tasks_table_and_filtered_json() {
    let list = format!(
        "[{},{}]",
        record("t1", TaskState::Running),
        record("t2", TaskState::Failed)
    );
    let agent = FakeAgent::start(&[("GET /v1/tasks", 200, &list)]).await;
    let out = agent.meshctl(&["tasks"]).await;
    let table = text(&out.stdout);
    assert!(table.starts_with("ID  NAME  OWNER    STATE"), "{table}");
    assert_eq!(table.lines().count(), 3);
    let out = agent
        .meshctl(&["tasks", "--json", "--state", "failed"])
        .await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(1));
    assert_eq!(json[0]["id"], "t2");
}

#[tokio::test]
async fn health_503_prints_and_exits_1() {
    let health = serde_json::to_string(&Health {
        ok: false,
        node: NodeId::new("n1").unwrap(),
        docker: RuntimeHealth {
            reachable: false,
            endpoint: "unix:///var/run/docker.sock".into(),
            version: None,
            error: Some("socket missing; start Docker".into()),
        },
        store_error: None,
    })
    .unwrap();
    let agent = FakeAgent::start(&[("GET /v1/health", 503, &health)]).await;
    let out = agent.meshctl(&["health"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("socket missing; start Docker"));
}

#[tokio::test]
async fn logs_stream_to_stdout() {
    let agent = FakeAgent::start(&[
        ("GET /v1/tasks/t1", 200, &pulling("t1")),
        ("GET /v1/tasks/t1", 200, &record("t1", TaskState::Running)),
        ("GET /v1/tasks/t1/logs?follow=true", 200, "line 1\nline 2\n"),
        ("GET /v1/tasks/t1/logs?follow=false", 200, "snapshot\n"),
    ])
    .await;
    let out = agent.meshctl(&["logs", "-f", "t1"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "line 1\nline 2\n");
    // While it waited for its start, the pull on stderr, not in the output.
    assert_eq!(
        text(&out.stderr),
        "t1: pulling img:1 on n1 [##########..............] 43% 4.4/10.2 MB, 3/5 layers\n\
         t1: running on n1 (attempt 0)\n"
    );
    let out = agent.meshctl(&["logs", "t1"]).await;
    assert_eq!(text(&out.stdout), "snapshot\n");
}

#[tokio::test]
async fn kill_reports_what_happened() {
    let agent = FakeAgent::start(&[
        (
            "POST /v1/tasks/t1/kill",
            200,
            &record("t1", TaskState::Killed),
        ),
        (
            "POST /v1/tasks/t2/kill",
            200,
            &record("t2", TaskState::Running),
        ),
    ])
    .await;
    assert_eq!(
        text(&agent.meshctl(&["kill", "t1"]).await.stdout),
        "t1 killed\n"
    );
    assert_eq!(
        text(&agent.meshctl(&["kill", "t2"]).await.stdout),
        "t2: kill requested (state: running)\n"
    );
}

#[tokio::test]
async fn wait_exit_codes() {
    let agent = FakeAgent::start(&[
        ("GET /v1/tasks/t1", 200, &record("t1", TaskState::Running)),
        ("GET /v1/tasks/t1", 200, &record("t1", TaskState::Succeeded)),
        ("GET /v1/tasks/t2", 200, &record("t2", TaskState::Failed)),
        ("GET /v1/tasks/t3", 200, &record("t3", TaskState::Running)),
    ])
    .await;
    let out = agent.meshctl(&["wait", "t1"]).await;
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "succeeded\n".to_owned())
    );
    let out = agent.meshctl(&["wait", "t2"]).await;
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(1), "failed\n".to_owned())
    );
    assert!(text(&out.stderr).contains("exited with code 3"));
    let out = agent.meshctl(&["wait", "t3", "--timeout", "0.3"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("timed out"));
}

#[tokio::test]
async fn submit_wait_shows_the_pull_and_exits_as_wait_does() {
    let answer = serde_json::to_string(&SubmitResponse {
        id: TaskId::new("t1").unwrap(),
        state: TaskState::Queued,
        node: None,
        members: Vec::new(),
        copy: None,
    })
    .unwrap();
    let agent = FakeAgent::start(&[
        ("POST /v1/tasks", 202, &answer),
        ("GET /v1/tasks/t1", 200, &record("t1", TaskState::Queued)),
        ("GET /v1/tasks/t1", 200, &pulling("t1")),
        ("GET /v1/tasks/t1", 200, &pulling("t1")),
        ("GET /v1/tasks/t1", 200, &record("t1", TaskState::Running)),
        ("GET /v1/tasks/t1", 200, &record("t1", TaskState::Failed)),
    ])
    .await;
    let out = agent.meshctl(&["submit", "--wait", "img:1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "t1\nfailed\n");
    // Not a terminal: one line per change, the same pull shown once; the
    // end only on stdout.
    assert_eq!(
        text(&out.stderr),
        "t1: queued\n\
         t1: pulling img:1 on n1 [##########..............] 43% 4.4/10.2 MB, 3/5 layers\n\
         t1: running on n1 (attempt 0)\n\
         task t1 failed: exited with code 3\n"
    );
    // --timeout needs --wait.
    let out = agent.meshctl(&["submit", "--timeout", "1", "img:1"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
