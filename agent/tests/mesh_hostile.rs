//! Hostile traffic at the mesh's QUIC port, agents in-process on loopback
//! (the in-memory runtime): connection floods, stalled handshakes, and
//! peers that try to make an agent hold memory. Whatever they send, peers
//! keep joining and calling.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::quic::{Attempts, Flood};
use common::*;
use mesh_agent::mesh::handlers::{Handlers, Reply};
use mesh_agent::mesh::rpc::CallError;
use mesh_agent::mesh::tls::{self, TlsSource};
use mesh_agent::mesh::transport::{DialError, QuicTransport};
use mesh_protocol::NodeId;
use mesh_protocol::pki;
use mesh_protocol::rpc::{Request, Response, Topic};

fn setup() -> Setup {
    Setup::memory("h")
}

/// Both agents list each other alive.
async fn wait_joined(a: &TestAgent, b: &TestAgent) {
    let mut expect = vec![a.id.to_string(), b.id.to_string()];
    expect.sort();
    wait_until(
        "the joining agent and the attacked one see each other",
        Duration::from_secs(15),
        || async {
            for n in [a, b] {
                let alive = n.alive().await;
                if alive != expect {
                    return Err((n.id.clone(), alive));
                }
            }
            Ok(())
        },
    )
    .await;
}

fn quic_addr(a: &TestAgent) -> SocketAddr {
    a.gossip().parse().unwrap()
}

#[tokio::test]
async fn a_flood_of_spoofed_initials_does_not_stop_a_peer_joining() {
    let setup = setup();
    let target = setup.start(&[]).await;
    let to = quic_addr(&target);
    // Far more attempts than there are handshake slots, and more every
    // 50 ms (about 1,000 a second) while the peer joins; the flood reads
    // nothing back, as a spoofed source cannot.
    let mut attempts = Attempts::from(IpAddr::from([127, 0, 0, 1]));
    attempts.spoofed(to, 200);
    let _flood = Flood::start(attempts, Duration::from_millis(50), move |a| {
        a.spoofed(to, 50)
    });
    let joiner = setup.start(&[target.gossip()]).await;
    wait_joined(&target, &joiner).await;
}

#[tokio::test]
async fn stalled_handshakes_from_one_source_do_not_stop_a_peer_joining() {
    let setup = setup();
    let target = setup.start(&[]).await;
    let to = quic_addr(&target);
    // A source that proves its address (it follows the Retry), then never
    // finishes a handshake, more than once per slot.
    // (Off the test's runtime thread, which runs the agent.)
    let attempts = tokio::task::spawn_blocking(move || {
        let mut attempts = Attempts::from(IpAddr::from([127, 0, 0, 9]));
        attempts.validated_then_silent(to, 100);
        attempts
    })
    .await
    .unwrap();
    let _flood = Flood::start(attempts, Duration::from_millis(50), move |a| {
        a.validated_then_silent(to, 20);
    });
    let joiner = setup.start(&[target.gossip()]).await;
    wait_joined(&target, &joiner).await;
    let (refused, _) = target.mesh().refusals();
    assert!(refused > 0, "the staller's extra attempts were refused");
}

/// A member of the mesh (a certificate from its CA naming `name`) that
/// serves task calls on an endpoint of its own and records them.
struct Member {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<String>>>,
    _transport: QuicTransport,
    _dir: tempfile::TempDir,
}

impl Member {
    fn start(ca: &pki::Ca, name: &str) -> Member {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeId::new(name).unwrap();
        let now = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let cert = pki::create_node_cert(ca, &node, now, 2).unwrap();
        let p = |f: &str| dir.path().join(f);
        std::fs::write(p("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(p("node.pem"), &cert.cert_pem).unwrap();
        std::fs::write(p("key.pem"), &cert.key_pem).unwrap();
        let source = TlsSource::Files {
            ca: p("ca.pem"),
            cert: p("node.pem"),
            key: p("key.pem"),
        };
        let alpn = mesh_protocol::rpc::alpn(mesh_protocol::rpc::VERSION);
        let tls = tls::build(&source, &node, &alpn).unwrap();
        let mut endpoint =
            quinn::Endpoint::server(tls.server, "127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(tls.client);
        let addr = endpoint.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let handlers = Arc::new(Handlers::default());
        let seen = calls.clone();
        handlers.register_calls(
            Topic::Tasks,
            Arc::new(move |_, request: Request| {
                seen.lock().unwrap().push(request.name().to_owned());
                Box::pin(async {
                    Reply::One(Response::Page(mesh_protocol::listing::Page {
                        records: Vec::new(),
                        more: false,
                    }))
                })
            }),
        );
        Member {
            addr,
            calls,
            _transport: QuicTransport::new(endpoint, handlers, &alpn),
            _dir: dir,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_call_reaches_only_the_node_whose_certificate_it_names() {
    let ca = pki::create_ca(
        "c1",
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
        2,
    )
    .unwrap();
    let nodes = setup().tls(&ca).cluster(2).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    // A member that gossip (stale, or the member itself) puts where n2 is.
    let member = Member::start(&ca, "member");
    let timeout = Duration::from_secs(5);
    let answer = n1
        .mesh()
        .call(
            &n2.id,
            member.addr,
            &Request::List {
                after: None,
                limit: 10,
            },
            timeout,
        )
        .await;
    assert!(
        matches!(
            answer,
            Err(CallError::Dial(DialError::WrongNode { ref found, .. })) if found.as_deref() == Some("member")
        ),
        "{answer:?}"
    );
    assert_eq!(
        member.calls(),
        Vec::<String>::new(),
        "it got nothing meant for n2"
    );
    assert_eq!(n1.mesh().identity_refusals(), 1);
    // The member itself, called by its own name, is served.
    let member_id = NodeId::new("member").unwrap();
    let answer = n1
        .mesh()
        .call(
            &member_id,
            member.addr,
            &Request::List {
                after: None,
                limit: 10,
            },
            timeout,
        )
        .await;
    assert!(matches!(answer, Ok(Response::Page(_))), "{answer:?}");
    assert_eq!(member.calls(), vec!["list".to_owned()]);
    // n2 at its own address still answers.
    let answer = n1
        .mesh()
        .call(
            &n2.id,
            n2.gossip().parse().unwrap(),
            &Request::List {
                after: None,
                limit: 10,
            },
            timeout,
        )
        .await;
    assert!(matches!(answer, Ok(Response::Page(_))), "{answer:?}");
}
