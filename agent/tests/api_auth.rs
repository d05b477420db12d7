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
