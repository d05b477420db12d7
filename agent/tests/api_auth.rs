//! The API's credentials: bearer tokens with roles, the 401 and 403 each
//! kind of wrong call meets, on in-process agents (in-memory runtime).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use mesh_protocol::UserName;
use mesh_protocol::auth::Role;
use mesh_protocol::token::{self, Tokens};

/// A tokens file of these users and roles, and each user's secret.
fn tokens(users: &[(&str, Role)]) -> (Tokens, BTreeMap<String, String>) {
    let mut lines = String::new();
    let mut secrets = BTreeMap::new();
    for (user, role) in users {
        let t = token::create(&UserName::new(*user).unwrap(), *role).unwrap();
        lines.push_str(&t.line);
        lines.push('\n');
        secrets.insert((*user).to_owned(), t.secret);
    }
    (Tokens::parse(&lines).unwrap(), secrets)
}

/// Agents whose API asks for tokens of `root` (admin), `alice` and `bob`
/// (submit) and `reader` (read).
fn setup(tag: &str) -> (Setup, BTreeMap<String, String>) {
    let (tokens, secrets) = tokens(&[
        ("root", Role::Admin),
        ("alice", Role::Submit),
        ("bob", Role::Submit),
        ("reader", Role::Read),
    ]);
    let setup = Setup::memory(tag).api_tokens(tokens, &secrets["root"]);
    (setup, secrets)
}

/// Whether a kill's answer shows the task killed.
trait KillRequested {
    fn kill_requested(&self) -> bool;
}

impl KillRequested for meshctl::client::Killed {
    fn kill_requested(&self) -> bool {
        match self {
            meshctl::client::Killed::One(r) => r.kill_requested,
            meshctl::client::Killed::Array(rs) => rs.iter().all(|r| r.kill_requested),
        }
    }
}

fn as_user(agent: &TestAgent, secrets: &BTreeMap<String, String>, user: &str) -> Api {
    Api::with_token(agent.running().api_addr, Some(secrets[user].clone()))
}

#[tokio::test]
async fn calls_without_a_valid_token_are_refused_with_401_saying_why() {
    let (setup, _) = setup("auth401");
    let agent = setup.start(&[]).await;
    let addr = agent.running().api_addr;
    let none = Api::new(addr);
    let r = refusal(none.client().tasks().await);
    assert_eq!(r.status, 401);
    assert!(r.message.contains("no credentials"), "{}", r.message);
    let r = none.submit_refused(&sleep_task(1, "1")).await;
    assert_eq!(r.status, 401);
    let wrong = Api::with_token(addr, Some("0".repeat(64)));
    let r = refusal(wrong.client().node().await);
    assert_eq!(r.status, 401);
    assert!(
        r.message.contains("not one this agent accepts"),
        "{}",
        r.message
    );
    // Not a bearer credential at all.
    let raw = reqwest::Client::new()
        .get(format!("http://{addr}/v1/tasks"))
        .header("authorization", "Basic cm9vdDpyb290")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 401);
    assert_eq!(raw.headers()["www-authenticate"], "Bearer");
    assert!(raw.text().await.unwrap().contains("not `Bearer TOKEN`"));
    // Nothing was submitted.
    assert!(agent.api.tasks().await.is_empty());
}

#[tokio::test]
async fn each_role_may_do_its_calls_and_no_more() {
    let (setup, secrets) = setup("authroles");
    let agent = setup.start(&[]).await;
    let reader = as_user(&agent, &secrets, "reader");
    let alice = as_user(&agent, &secrets, "alice");
    let root = as_user(&agent, &secrets, "root");
    let node = agent.id.to_string();

    // read: every GET, nothing else.
    assert!(reader.tasks().await.is_empty());
    reader.node().await;
    reader.peers().await;
    reader.services().await;
    let r = reader.submit_refused(&sleep_task(1, "30")).await;
    assert_eq!(r.status, 403);
    assert!(
        r.message.contains("reader has role read") && r.message.contains("needs role submit"),
        "{}",
        r.message
    );

    // submit: tasks, and its own kills; not drain.
    let id = alice.submit(&sleep_task(1, "30")).await.id;
    assert_eq!(reader.task(&id).await.id, id);
    let r = refusal(reader.client().kill(&id).await);
    assert_eq!(r.status, 403);
    let r = refusal(alice.client().set_draining(&node, true, false).await);
    assert_eq!(r.status, 403);
    assert!(r.message.contains("needs role admin"), "{}", r.message);
    alice.kill(&id).await;

    // admin: drain and undrain.
    root.set_draining(&node, true, false).await;
    root.set_draining(&node, false, false).await;
}

#[tokio::test]
async fn only_the_owner_or_an_admin_kills_a_task() {
    let (setup, secrets) = setup("authowner");
    let agent = setup.start(&[]).await;
    let alice = as_user(&agent, &secrets, "alice");
    let bob = as_user(&agent, &secrets, "bob");
    let root = as_user(&agent, &secrets, "root");
    let a1 = alice.submit(&sleep_task(1, "30")).await.id;
    let a2 = alice.submit(&sleep_task(1, "30")).await.id;
    assert_eq!(alice.task(&a1).await.owner.as_str(), "alice");
    assert!(
        bob.tasks()
            .await
            .iter()
            .all(|t| t.owner.as_str() == "alice")
    );

    let r = refusal(bob.client().kill(&a1).await);
    assert_eq!(r.status, 403);
    assert!(
        r.message.contains("bob") && r.message.contains("created by alice"),
        "{}",
        r.message
    );
    assert!(
        !bob.task(&a1).await.kill_requested,
        "a refused kill kills nothing"
    );
    assert!(alice.kill(&a1).await.kill_requested());
    assert!(root.kill(&a2).await.kill_requested());

    // An array: every member is alice's.
    let mut array = sleep_task(1, "30");
    array.array = Some(2);
    let parent = alice.submit(&array).await.id;
    assert_eq!(refusal(bob.client().kill(&parent).await).status, 403);
    root.kill(&parent).await;
}

#[tokio::test]
async fn only_the_owner_or_an_admin_removes_a_service() {
    let (setup, secrets) = setup("authsvc");
    let agent = setup.start(&[]).await;
    let alice = as_user(&agent, &secrets, "alice");
    let bob = as_user(&agent, &secrets, "bob");
    let reader = as_user(&agent, &secrets, "reader");
    let root = as_user(&agent, &secrets, "root");
    let port = free_addr().port();
    let request = |name: &str| mesh_protocol::service::ServiceRequest {
        name: name.into(),
        image: IMAGE.into(),
        port: 7000,
        listen: port,
        ..Default::default()
    };
    let r = refusal(reader.client().create_service(&request("web")).await);
    assert_eq!(r.status, 403);
    let def = alice.create_service(&request("web")).await;
    assert_eq!(def.owner.as_str(), "alice");
    assert_eq!(reader.services().await[0].def.owner.as_str(), "alice");
    let r = refusal(bob.client().remove_service("web").await);
    assert_eq!(r.status, 403);
    assert!(r.message.contains("service web"), "{}", r.message);
    assert_eq!(
        refusal(reader.client().remove_service("web").await).status,
        403
    );
    assert!(root.client().remove_service("web").await.unwrap().removed);
    let mine = alice.create_service(&request("web2")).await;
    assert!(
        alice
            .client()
            .remove_service(mine.name().as_str())
            .await
            .unwrap()
            .removed
    );
}

#[tokio::test]
async fn a_kill_through_another_node_is_judged_as_its_caller() {
    let (setup, secrets) = setup("authfwd");
    let agents = setup.cluster(2).await;
    let alice0 = as_user(&agents[0], &secrets, "alice");
    let id = alice0.submit(&sleep_task(1, "30")).await.id;
    let runner = alice0.task(&id).await.node;
    // Ask the node that does not hold the task: it forwards the kill, with
    // the caller, to the node that does.
    let other = agents.iter().find(|a| a.id != runner).unwrap();
    let bob = as_user(other, &secrets, "bob");
    let alice = as_user(other, &secrets, "alice");
    let r = refusal(bob.client().kill(&id).await);
    assert_eq!(r.status, 403, "{}", r.message);
    assert!(r.message.contains("created by alice"), "{}", r.message);
    assert!(!alice.task(&id).await.kill_requested);
    assert!(alice.kill(&id).await.kill_requested());
    let id2 = alice0.submit(&sleep_task(1, "30")).await.id;
    let runner2 = alice0.task(&id2).await.node;
    let other2 = agents.iter().find(|a| a.id != runner2).unwrap();
    assert_eq!(
        refusal(as_user(other2, &secrets, "bob").client().kill(&id2).await).status,
        403
    );
    assert!(
        as_user(other2, &secrets, "root")
            .kill(&id2)
            .await
            .kill_requested()
    );
}

/// The dashboard's page, script and style sheet hold no data: served
/// without a token. The data the page asks for needs one like any call.
#[tokio::test]
async fn the_dashboard_needs_no_token_but_its_data_does() {
    let (setup, secrets) = setup("authdash");
    let agent = setup.start(&[]).await;
    let addr = agent.running().api_addr;
    let none = Api::new(addr);
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard/core.js", "text/javascript"),
        ("/dashboard/tasks.js", "text/javascript"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert!(
            header("content-security-policy").contains("connect-src 'self'"),
            "{path}"
        );
    }
    let (status, _, body) = none.get_raw("/v1/cores").await;
    assert_eq!(status, 401, "{body}");
    let reader = as_user(&agent, &secrets, "reader");
    let (status, _, body) = reader.get_raw("/v1/cores").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"kind\":\"free\""), "{body}");
    // Anything else unknown still asks for credentials first.
    let (status, _, _) = none.get_raw("/dashboard/other.js").await;
    assert_eq!(status, 401);
}
