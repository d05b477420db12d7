//! The dashboard in a real browser (Debian's chromium through
//! chromedriver) against a 3-agent testnet whose APIs ask for a token: the
//! page asks for the token, then shows the 3 peers and their cores; a task
//! submitted with meshctl's client appears and changes state, and the live
//! events feed tells it; running tasks and a service colour their cores; a
//! kill from the page without a token, or with a read token, is refused and
//! the page says so; a killed agent turns dead; a page of tasks leads to
//! the next and the last. Screenshots go to `target/dashboard/`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mesh_protocol::api::SubmitRequest;
use mesh_protocol::service::ServiceRequest;
use mesh_protocol::{TaskId, TaskState};
use mesh_testnet::{SCENARIO_LIMIT, Testnet, scenario};
use meshctl::client::Client;
use serde_json::{Value, json};

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::wait_until;

/// How long the page may take to show a change: its slow refresh is 5 s.
const SHOWN: Duration = Duration::from_secs(60);

/// Every peer card: `[node, state, cores drawn, cores known]`.
const PEERS_JS: &str = "return [...document.querySelectorAll('.peer')].map(p => [
    p.dataset.node, p.querySelector('.state').textContent,
    p.querySelectorAll('.core').length, p.querySelectorAll('.core:not(.unknown)').length]);";

/// The kinds of the cores drawn, each once.
const KINDS_JS: &str = "return [...new Set([...document.querySelectorAll('.mesh .core')]
    .map(c => c.className.replace('core ', '')))];";

/// A task's state in the page's list (`null` if not listed).
const TASK_STATE_JS: &str =
    "const r = document.querySelector(`#tasks tr[data-id=\"${arguments[0]}\"] .st`);
    return r ? r.textContent : null;";

async fn submit(api: &Client, name: &str, cores: u32, cmd: &[&str]) -> Result<TaskId> {
    let req = SubmitRequest {
        image: "mesh-testsvc:latest".into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        cores: Some(cores),
        name: Some(name.into()),
        ..Default::default()
    };
    Ok(api.submit(&req).await?.id)
}

/// Waits until `script` (with `args`) returns something `ok` accepts.
async fn wait_page(
    browser: &Browser,
    what: &str,
    script: &str,
    args: Vec<Value>,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(what, SHOWN, || {
        let args = args.clone();
        let ok = &ok;
        async move {
            let v = browser.js(script, args).await.map_err(|e| e.to_string())?;
            if ok(&v) { Ok(v) } else { Err(v.to_string()) }
        }
    })
    .await
}

async fn peers_shown(browser: &Browser, what: &str, ok: impl Fn(&[Value]) -> bool) -> Value {
    wait_page(browser, what, PEERS_JS, vec![], |v| {
        v.as_array().is_some_and(|a| ok(a))
    })
    .await
}

/// A new token of the role `read` (user `viewer`), added to n1's tokens
/// file (the agent reads it again within 2 s of a change): its secret, once
/// n1 takes it.
async fn read_token(net: &Testnet) -> Result<String> {
    let user = mesh_protocol::UserName::new("viewer")?;
    let token = mesh_protocol::token::create(&user, mesh_protocol::auth::Role::Read)?;
    let file = net.state_dir().join("nodes/n1/tls/tokens");
    let mut lines = std::fs::read_to_string(&file)?;
    lines.push_str(&format!("{}\n", token.line));
    std::fs::write(&file, lines)?;
    let url = net.api_url("n1")?.parse().context("n1's API URL")?;
    let reader = Client::new(url)?.with_token(Some(token.secret.clone()));
    wait_until("n1 takes the read token", SHOWN, || reader.peers()).await;
    Ok(token.secret)
}

/// Waits until the events feed is live and shows an event of `kind` about
/// `subject`.
async fn feed_shows(browser: &Browser, kind: &str, subject: &str) {
    wait_page(
        browser,
        &format!("the events feed shows {kind} {subject}"),
        "return document.getElementById('events-status').textContent === 'events: live'
            && [...document.querySelectorAll('#events li')].some(li =>
                li.querySelector('.kind').textContent === arguments[0]
                && li.textContent.includes(' ' + arguments[1]));",
        vec![json!(kind), json!(subject)],
        |v| v == true,
    )
    .await;
}

#[tokio::test]
async fn the_dashboard_shows_the_mesh_and_refuses_a_kill_without_a_token() -> Result<()> {
    scenario(
        "the_dashboard_shows_the_mesh_and_refuses_a_kill_without_a_token",
        SCENARIO_LIMIT,
        async {
            let net = common::three_agents("dashboard", "numa:2 core:2 pu:1").await?;
            let token = net
                .api_token()?
                .context("the testnet's agents ask for a token")?;
            let result = walk(&net, &token).await;
            // The screenshot of a failure is the most useful one.
            net.down().await?;
            result
        },
    )
    .await
}

async fn walk(net: &Testnet, token: &str) -> Result<()> {
    let browser = Browser::start().await?;
    let result = steps(net, token, &browser).await;
    if result.is_err() {
        let _ = browser.screenshot("failure").await;
    }
    browser.close().await?;
    result
}

async fn steps(net: &Testnet, token: &str, browser: &Browser) -> Result<()> {
    let n1 = net.client("n1")?;
    let url = format!("{}/", net.api_url("n1")?);
    browser.client.goto(&url).await?;

    // No token yet: the API answers 401 and the page asks for one.
    wait_page(
        browser,
        "the page asks for a token",
        "return !document.getElementById('token-form').hidden
            && document.getElementById('problem').textContent;",
        vec![],
        |v| v.as_str().is_some_and(|s| s.contains("401")),
    )
    .await;
    browser.screenshot("token").await?;
    browser.type_into("#token-input", token).await?;
    browser.click("#token-save").await?;

    // 3 peers, alive, each with its 4 cores known.
    peers_shown(browser, "3 alive peers with 4 known cores each", |a| {
        a.len() == 3 && a.iter().all(|p| p[1] == "alive" && p[2] == 4 && p[3] == 4)
    })
    .await;

    // A task submitted through n2 appears running, and shows killed once
    // meshctl's client kills it.
    let n2 = net.client("n2")?;
    let short = submit(&n2, "short", 1, &["sleep", "600"]).await?;
    let state_is = |want: &'static str| {
        let id = short.to_string();
        async move {
            wait_page(
                browser,
                &format!("task {id} shown {want}"),
                TASK_STATE_JS,
                vec![json!(id)],
                |v| v == want,
            )
            .await
        }
    };
    state_is("running").await;
    n2.kill(&short).await?;
    state_is("killed").await;
    // The live feed (GET /v1/events, server-sent) tells the kill.
    feed_shows(browser, "task-killed", &short.to_string()).await;
    browser.screenshot("task-killed").await?;

    // Running tasks and a service with a warm container per node and one
    // client served: every kind of holder colours a core.
    let train = submit(&n1, "train", 2, &["sleep", "600"]).await?;
    let etl = submit(&n1, "etl", 1, &["sleep", "600"]).await?;
    let service: ServiceRequest = serde_json::from_value(json!({
        "name": "hello", "image": "mesh-testsvc:latest", "port": 7000, "listen": 9000,
        "warm": 1, "command": ["echo", "--port", "7000"],
    }))?;
    n1.create_service(&service).await?;
    wait_page(
        browser,
        "the service has a warm container on each node",
        "return [...document.querySelectorAll('#services tbody tr')]
            .filter(r => r.cells[0].textContent === 'hello' && r.cells[5].textContent === '1').length;",
        vec![],
        |v| v == 3,
    )
    .await;
    let n2_ip = IpAddr::V4(net.state().node("n2")?.ip);
    let client = tokio::net::TcpStream::connect(SocketAddr::new(n2_ip, 9000))
        .await
        .context("connecting to the service hello")?;
    wait_page(
        browser,
        "cores held by tasks, a serving container, warm ones, and free",
        KINDS_JS,
        vec![],
        |v| {
            ["task", "service", "warm", "free"]
                .iter()
                .all(|k| v.as_array().is_some_and(|a| a.contains(&json!(k))))
        },
    )
    .await;
    wait_page(
        browser,
        "both long tasks running",
        "return [arguments[0], arguments[1]].map(id =>
            (document.querySelector(`#tasks tr[data-id=\"${id}\"] .st`) || {}).textContent);",
        vec![json!(train.to_string()), json!(etl.to_string())],
        |v| v == &json!(["running", "running"]),
    )
    .await;
    // The picture settled: the client's connection counted, both tasks
    // in the peers' load.
    wait_page(
        browser,
        "one open connection and 2 running tasks in the peers' load",
        "return [...document.querySelectorAll('#services tbody tr')]
                .filter(r => r.cells[6].textContent === '1').length === 1
            && [...document.querySelectorAll('.peer')]
                .reduce((n, p) => n + Number(p.dataset.running), 0) === 2;",
        vec![],
        |v| v == true,
    )
    .await;
    browser.screenshot("mesh").await?;

    // The long task's details, then a kill with the token forgotten: the
    // API refuses it (401) and the page says so; the task runs on.
    browser
        .click(&format!("#tasks tr[data-id=\"{train}\"]"))
        .await?;
    wait_page(
        browser,
        "the task's details",
        "return document.getElementById('d-id').textContent;",
        vec![],
        |v| v == &json!(train.to_string()),
    )
    .await;
    browser.click("#token-forget").await?;
    browser.click("#d-kill").await?;
    let refusal = wait_page(
        browser,
        "the page shows the kill refused",
        "const b = document.getElementById('d-refusal'); return b.hidden ? null : b.textContent;",
        vec![],
        |v| v.as_str().is_some_and(|s| s.contains("401")),
    )
    .await;
    browser.screenshot("kill-refused").await?;
    let still = n1.task(&train).await?;
    ensure!(
        still.state == TaskState::Running && !still.kill_requested,
        "a kill without a token changed the task: {still:?} (page: {refusal})"
    );

    // A read token shows everything but may not kill: 403, named role.
    let viewer = read_token(net).await?;
    browser.click("#token-edit").await?;
    browser.type_into("#token-input", &viewer).await?;
    browser.click("#token-save").await?;
    browser.click("#d-kill").await?;
    wait_page(
        browser,
        "the page shows the kill refused to a reader",
        "const b = document.getElementById('d-refusal'); return b.hidden ? null : b.textContent;",
        vec![],
        |v| {
            v.as_str()
                .is_some_and(|s| s.contains("403") && s.contains("submit"))
        },
    )
    .await;
    browser.screenshot("kill-refused-reader").await?;
    let still = n1.task(&train).await?;
    ensure!(
        still.state == TaskState::Running && !still.kill_requested,
        "a reader's kill changed the task: {still:?}"
    );

    // The token again, and an agent killed: it turns dead on the page.
    browser.click("#token-edit").await?;
    browser.type_into("#token-input", token).await?;
    browser.click("#token-save").await?;
    net.kill("n3").await?;
    peers_shown(browser, "n3 dead, n1 and n2 alive", |a| {
        a.iter().any(|p| p[0] == "n3" && p[1] == "dead")
            && a.iter().filter(|p| p[1] == "alive").count() == 2
    })
    .await;
    feed_shows(browser, "peer-dead", "n3").await;
    browser.screenshot("peer-dead").await?;

    // Paging: an array of 60 tasks makes more than a page (50). The first
    // page has a next one; `last` shows the newest task.
    let many = SubmitRequest {
        image: "mesh-testsvc:latest".into(),
        command: vec!["sleep".into(), "0".into()],
        cores: Some(1),
        name: Some("many".into()),
        array: Some(60),
        ..Default::default()
    };
    n1.submit(&many).await?;
    let newest = n1
        .tasks()
        .await?
        .into_iter()
        .map(|t| t.id.to_string())
        .max()
        .context("tasks listed")?;
    browser.click("#page-first").await?;
    wait_page(
        browser,
        "a full first page with a next one",
        "return document.querySelectorAll('#tasks tbody tr').length === 50
            && !document.getElementById('page-next').disabled;",
        vec![],
        |v| v == true,
    )
    .await;
    browser.click("#page-last").await?;
    wait_page(
        browser,
        "the last page shows the newest task, and no next page",
        "return !!document.querySelector(`#tasks tr[data-id=\"${arguments[0]}\"]`)
            && document.getElementById('page-next').disabled
            && !document.getElementById('page-prev').disabled;",
        vec![json!(newest)],
        |v| v == true,
    )
    .await;
    browser.screenshot("last-page").await?;

    // Best effort: a task of n3 is out of reach until its keeper re-places
    // it, and the testnet's teardown removes every container anyway.
    drop(client);
    for id in [&train, &etl] {
        let _ = n1.kill(id).await;
    }
    let _ = n1.remove_service("hello").await;
    Ok(())
}
