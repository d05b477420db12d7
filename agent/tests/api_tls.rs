//! The API over HTTPS (`--api-tls`): client certificates from the cluster
//! CA carrying a role are credentials, as tokens are; a node's certificate
//! is not one. An in-process agent on the in-memory runtime, called through
//! meshctl's client.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use std::time::Duration;

use common::{refusal, sleep_task, wait_until};
use mesh_agent::config::TlsSource;
use mesh_agent::runtime::memory::MemoryRuntime;
use mesh_agent::{Config, RunningAgent};
use mesh_protocol::UserName;
use mesh_protocol::auth::Role;
use mesh_protocol::pki::{self, Ca};
use mesh_protocol::token::{self, Tokens};
use meshctl::client::{Client, ClientError, ClientTls};
use tokio_util::sync::CancellationToken;

fn t0() -> pki::OffsetDateTime {
    pki::OffsetDateTime::now_utc() - time::Duration::hours(1)
}

/// An agent serving its API over HTTPS with a node certificate of `ca`,
/// also taking `tokens` if given.
struct TlsAgent {
    running: Option<RunningAgent>,
    stop: CancellationToken,
    ca: Ca,
    node_cert: pki::NodeCert,
    _dir: tempfile::TempDir,
}

impl TlsAgent {
    async fn start(tokens: Option<Tokens>) -> TlsAgent {
        Self::start_with(tokens, None).await
    }

    /// With `tokens_file`'s text as its --api-tokens file (the path is
    /// [`TlsAgent::tokens_path`]).
    async fn start_with(tokens: Option<Tokens>, tokens_file: Option<&str>) -> TlsAgent {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::create_ca("api-tls", t0(), 2).unwrap();
        let node = common::unique_node("apitls");
        let node_cert = pki::create_node_cert(&ca, &node, t0(), 2).unwrap();
        let write = |name: &str, pem: &str| {
            std::fs::write(dir.path().join(name), pem).unwrap();
            dir.path().join(name)
        };
        let tls = TlsSource::Files {
            ca: write("ca.pem", &ca.cert_pem),
            cert: write("node.pem", &node_cert.cert_pem),
            key: write("node-key.pem", &node_cert.key_pem),
        };
        let mut config = Config::builder(node, &dir.path().join("data"))
            .topology("numa:1 core:2 pu:1")
            .tls(tls)
            .api_tls();
        if let Some(t) = tokens {
            config = config.api_tokens(t);
        }
        if let Some(text) = tokens_file {
            config = config.api_tokens_from(write("tokens", text)).unwrap();
        }
        let stop = CancellationToken::new();
        let running =
            mesh_agent::start_with_runtime(config, Arc::new(MemoryRuntime::new()), stop.clone())
                .await
                .unwrap();
        TlsAgent {
            running: Some(running),
            stop,
            ca,
            node_cert,
            _dir: dir,
        }
    }

    fn tokens_path(&self) -> std::path::PathBuf {
        self._dir.path().join("tokens")
    }

    fn url(&self) -> meshctl::node_url::NodeUrl {
        self.running.as_ref().unwrap().api_addr.into()
    }

    /// A client showing `cert` (or none), trusting `ca`.
    fn client_with(&self, ca: &Ca, cert: Option<&pki::NodeCert>) -> Client {
        let tls = ClientTls {
            ca_pem: ca.cert_pem.clone().into_bytes(),
            identity_pem: cert.map(|c| format!("{}\n{}", c.cert_pem, c.key_pem).into_bytes()),
        };
        Client::with_tls(self.url(), &tls).unwrap()
    }

    /// A client with a fresh certificate for `user` with `role`.
    fn client(&self, user: &str, role: Role) -> Client {
        let cert = pki::create_client_cert(&self.ca, &UserName::new(user).unwrap(), role, t0(), 2)
            .unwrap();
        self.client_with(&self.ca, Some(&cert))
    }
}

impl Drop for TlsAgent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn stopped(mut agent: TlsAgent) {
    agent.stop.cancel();
    agent.running.take().unwrap().wait().await.unwrap();
}

#[tokio::test]
async fn client_certificates_carry_their_role() {
    let agent = TlsAgent::start(None).await;
    let reader = agent.client("reader", Role::Read);
    let alice = agent.client("alice", Role::Submit);
    let bob = agent.client("bob", Role::Submit);
    let root = agent.client("root", Role::Admin);

    assert!(reader.tasks().await.unwrap().is_empty());
    let r = refusal(reader.submit(&sleep_task(1, "30")).await);
    assert_eq!(r.status, 403);
    assert!(r.message.contains("reader has role read"), "{}", r.message);

    let id = alice.submit(&sleep_task(1, "30")).await.unwrap().id;
    assert_eq!(reader.task(&id).await.unwrap().owner.as_str(), "alice");
    let r = refusal(bob.kill(&id).await);
    assert_eq!(r.status, 403);
    assert!(r.message.contains("created by alice"), "{}", r.message);
    let r = refusal(alice.set_draining("x", true, false).await);
    assert_eq!(r.status, 403);
    root.kill(&id).await.unwrap();
    let node = root.node().await.unwrap().node.to_string();
    root.set_draining(&node, true, false).await.unwrap();
    stopped(agent).await;
}

#[tokio::test]
async fn a_node_certificate_or_none_is_refused_with_401() {
    let agent = TlsAgent::start(None).await;
    let as_node = agent.client_with(&agent.ca, Some(&agent.node_cert));
    let r = refusal(as_node.tasks().await);
    assert_eq!(r.status, 401);
    assert!(
        r.message.contains("not an API credential") && r.message.contains("node's certificate"),
        "{}",
        r.message
    );
    let anonymous = agent.client_with(&agent.ca, None);
    let r = refusal(anonymous.tasks().await);
    assert_eq!(r.status, 401);
    assert!(
        r.message.contains("needs a client certificate"),
        "{}",
        r.message
    );
    let r = refusal(
        anonymous
            .clone()
            .with_token(Some("0".repeat(64)))
            .tasks()
            .await,
    );
    assert_eq!(r.status, 401);
    assert!(
        r.message.contains("takes no bearer tokens"),
        "{}",
        r.message
    );

    // A certificate of another CA does not get through the handshake.
    let other = pki::create_ca("other", t0(), 2).unwrap();
    let stranger = pki::create_client_cert(
        &other,
        &UserName::new("root").unwrap(),
        Role::Admin,
        t0(),
        2,
    )
    .unwrap();
    let answer = agent.client_with(&agent.ca, Some(&stranger)).tasks().await;
    assert!(
        matches!(answer, Err(ClientError::Unreachable { .. })),
        "{answer:?}"
    );
    // Nor does a client that does not trust the agent's CA.
    let answer = agent.client_with(&other, None).tasks().await;
    assert!(
        matches!(answer, Err(ClientError::Unreachable { .. })),
        "{answer:?}"
    );
    // Plain HTTP gets no answer from an HTTPS API.
    assert!(Client::new(agent.url()).unwrap().tasks().await.is_err());
    stopped(agent).await;
}

#[tokio::test]
async fn tokens_work_over_https_beside_certificates() {
    let alice = token::create(&UserName::new("alice").unwrap(), Role::Submit).unwrap();
    let agent = TlsAgent::start(Some(Tokens::parse(&alice.line).unwrap())).await;
    let by_token = agent
        .client_with(&agent.ca, None)
        .with_token(Some(alice.secret.clone()));
    let id = by_token.submit(&sleep_task(1, "30")).await.unwrap().id;
    let reader = agent.client("reader", Role::Read);
    assert_eq!(reader.task(&id).await.unwrap().owner.as_str(), "alice");
    let r = refusal(agent.client_with(&agent.ca, None).tasks().await);
    assert!(
        r.message.contains("bearer token") && r.message.contains("client certificate"),
        "{}",
        r.message
    );
    stopped(agent).await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_without_a_restart() {
    // A file of revocations alone: with client certificates, that is fine.
    let agent = TlsAgent::start_with(None, Some("# nobody revoked yet\nformer revoked\n")).await;
    let alice = agent.client("alice", Role::Submit);
    let bob = agent.client("bob", Role::Submit);
    alice.tasks().await.unwrap();
    let former = agent.client("former", Role::Admin);
    let refused = refusal(former.tasks().await);
    assert_eq!(refused.status, 401);
    assert!(refused.message.contains("revoked"), "{}", refused.message);

    std::fs::write(agent.tokens_path(), "former revoked\nalice revoked\n").unwrap();
    wait_until(
        "alice's certificate is refused",
        Duration::from_secs(20),
        || async {
            match alice.tasks().await {
                Err(e) if e.to_string().contains("revoked") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    bob.tasks().await.unwrap();

    // A file that no longer parses is not taken: the last good one holds.
    std::fs::write(agent.tokens_path(), "alice is-not-a-role x\n").unwrap();
    tokio::time::sleep(mesh_agent::api::tokens::RELOAD_EVERY * 2).await;
    bob.tasks().await.unwrap();
    assert_eq!(refusal(alice.tasks().await).status, 401);
    stopped(agent).await;
}
