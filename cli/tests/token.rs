//! meshctl's credentials as a user types them: `meshctl token create`
//! writes the agent's tokens file, and meshctl sends the token from
//! `MESH_TOKEN` or `--token-file` to an agent that asks for one; `meshctl
//! tls cert create --client` makes a client certificate that meshctl shows
//! with `--ca`, `--cert` and `--key` to an agent serving HTTPS (in-process
//! agents on the in-memory runtime).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use mesh_agent::Config;
use mesh_agent::config::TlsSource;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_protocol::NodeId;
use mesh_protocol::token::Tokens;
use tokio_util::sync::CancellationToken;

/// Runs meshctl with `MESH_TOKEN` set to `token` (or unset): exit code,
/// stdout, stderr.
fn meshctl(token: Option<&str>, args: &[String]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    command
        .args(args)
        .env_remove("MESH_NODE")
        .env_remove("MESH_TOKEN");
    if let Some(t) = token {
        command.env("MESH_TOKEN", t);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn create(file: &Path, user: &str, role: &str) -> String {
    let args = [
        "token",
        "create",
        "--user",
        user,
        "--role",
        role,
        "--tokens-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([file.display().to_string()])
    .collect::<Vec<_>>();
    let (code, out, err) = meshctl(None, &args);
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshctl_sends_its_token_and_shows_why_a_call_was_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let root = create(&file, "root", "admin");
    let reader = create(&file, "reader", "read");
    let tokens = Tokens::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let node = NodeId::new(format!("cli-token-{}", std::process::id())).unwrap();
    let config = Config::builder(node, &dir.path().join("data")).api_tokens(tokens);
    let stop = CancellationToken::new();
    let agent =
        mesh_agent::start_with_runtime(config, Arc::new(MemoryRuntime::new()), stop.clone())
            .await
            .unwrap();
    let url = agent.api_addr.to_string();
    let run = |token: Option<&str>, args: &[&str]| {
        let mut all = vec!["--node".to_owned(), url.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        let token = token.map(str::to_owned);
        tokio::task::spawn_blocking(move || meshctl(token.as_deref(), &all))
    };

    let (code, _, err) = run(None, &["tasks"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("no credentials") && err.contains("MESH_TOKEN"),
        "{err}"
    );
    let (code, _, err) = run(Some("not-a-token"), &["tasks"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("not one this agent accepts"), "{err}");

    let (code, out, err) = run(Some(&reader), &["tasks"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID  NAME  OWNER"), "{out}");
    let submit = ["submit", "mesh-testsvc:latest", "--", "sleep", "30"];
    let (code, _, err) = run(Some(&reader), &submit).await.unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("reader has role read") && err.contains("needs role submit"),
        "{err}"
    );

    // --token-file beats MESH_TOKEN.
    let root_file = dir.path().join("root-token");
    std::fs::write(&root_file, format!("{root}\n")).unwrap();
    let file_arg = root_file.display().to_string();
    let mut with_file = vec!["--token-file", file_arg.as_str()];
    with_file.extend(submit);
    let (code, id, err) = run(Some(&reader), &with_file).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(Some(&reader), &["task", id.trim()]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l == "owner:           root"), "{out}");

    stop.cancel();
    agent.wait().await.unwrap();
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshctl_shows_a_client_certificate_to_an_agent_serving_https() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls_dir = tls.display().to_string();
    let node = format!("cli-tls-{}", std::process::id());
    for args in [
        vec!["tls", "ca", "create", "--dir", &tls_dir],
        vec!["tls", "cert", "create", "--node", &node, "--dir", &tls_dir],
        vec![
            "tls", "cert", "create", "--client", "alice", "--role", "submit", "--dir", &tls_dir,
        ],
        vec![
            "tls", "cert", "create", "--client", "eve", "--role", "read", "--dir", &tls_dir,
        ],
    ] {
        let (code, _, err) = meshctl(None, &strings(&args));
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let f = |name: &str| tls.join(name);
    let config = Config::builder(
        NodeId::new(node.as_str()).unwrap(),
        &dir.path().join("data"),
    )
    .tls(TlsSource::Files {
        ca: f("ca.pem"),
        cert: f(&format!("{node}.pem")),
        key: f(&format!("{node}-key.pem")),
    })
    .api_tls();
    let stop = CancellationToken::new();
    let agent =
        mesh_agent::start_with_runtime(config, Arc::new(MemoryRuntime::new()), stop.clone())
            .await
            .unwrap();
    let url = agent.api_addr.to_string();
    let path = |name: &str| f(name).display().to_string();
    let (ca, alice, alice_key, eve, eve_key) = (
        path("ca.pem"),
        path("alice.pem"),
        path("alice-key.pem"),
        path("eve.pem"),
        path("eve-key.pem"),
    );
    let run = |args: Vec<&str>| {
        let mut all = strings(&["--node", &url]);
        all.extend(strings(&args));
        tokio::task::spawn_blocking(move || meshctl(None, &all))
    };
    let submit = ["submit", "mesh-testsvc:latest", "--", "sleep", "30"];
    let mut as_alice = vec!["--ca", &ca, "--cert", &alice, "--key", &alice_key];
    as_alice.extend(submit);
    let (code, id, err) = run(as_alice).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    let (code, out, err) = run(vec![
        "--ca", &ca, "--cert", &eve, "--key", &eve_key, "tasks",
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains("alice"), "{out}");
    let (code, _, err) = run(vec![
        "--ca", &ca, "--cert", &eve, "--key", &eve_key, "kill", &id,
    ])
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("eve has role read"), "{err}");
    let (code, _, err) = run(vec!["--ca", &ca, "tasks"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("needs a client certificate"), "{err}");
    let (code, _, err) = run(vec!["--cert", &eve, "--key", &eve_key, "tasks"])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("need --ca"), "{err}");

    stop.cancel();
    agent.wait().await.unwrap();
}
