//! Hostile traffic at the mesh's QUIC port, agents in-process on loopback
//! (the in-memory runtime): connection floods, stalled handshakes, peers
//! that try to make an agent hold memory, and members that send gossip
//! chitchat would choke on. Whatever they send, peers keep joining,
//! gossiping and calling.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::ChitchatId;
use common::quic::{Attempts, Flood};
use common::*;
use mesh_agent::agent::AgentError;
use mesh_agent::mesh::MeshError;
use mesh_agent::mesh::gossip_check::craft::{self, Ops};
use mesh_agent::mesh::handlers::{Handlers, Reply};
use mesh_agent::mesh::rpc::CallError;
use mesh_agent::mesh::tls::{self, TlsSource};
use mesh_agent::mesh::transport::{DialError, KIND_GOSSIP, MAX_GOSSIP_BYTES, QuicTransport};
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
async fn stalled_handshakes_from_one_source_do_not_lock_out_other_peers() {
    let target = setup().start(&[]).await;
    let to = quic_addr(&target);
    // A source that proves its address (it follows the Retry), then never
    // finishes a handshake: more attempts than there are slots, and more
    // all the time. (Off the test's runtime thread, which runs the agent.)
    let attempts = tokio::task::spawn_blocking(move || {
        let mut attempts = Attempts::from(IpAddr::from([127, 0, 0, 9]));
        attempts.validated_then_silent(to, 100);
        attempts
    })
    .await
    .unwrap();
    let _flood = Flood::start(attempts, Duration::from_millis(20), move |a| {
        a.validated_then_silent(to, 20);
    });
    // Another source gets a slot every time.
    let endpoint = client("other", None);
    for i in 0..5 {
        let conn = endpoint.connect(to, "x").unwrap().await;
        assert!(conn.is_ok(), "connection {i}: {:?}", conn.err());
    }
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

/// A quinn endpoint on loopback with a certificate of `ca` naming `name`
/// (its files live as long as the directory returned).
fn member_endpoint(ca: &pki::Ca, name: &str) -> (quinn::Endpoint, tempfile::TempDir) {
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
    let mut endpoint = quinn::Endpoint::server(tls.server, "127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(tls.client);
    (endpoint, dir)
}

impl Member {
    fn start(ca: &pki::Ca, name: &str) -> Member {
        let (endpoint, dir) = member_endpoint(ca, name);
        let alpn = mesh_protocol::rpc::alpn(mesh_protocol::rpc::VERSION);
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

fn new_ca() -> pki::Ca {
    pki::create_ca(
        "c1",
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
        2,
    )
    .unwrap()
}

#[tokio::test]
async fn a_call_reaches_only_the_node_whose_certificate_it_names() {
    let ca = new_ca();
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

/// A quinn client endpoint that presents a development certificate for
/// `name`, with the mesh's transport settings unless `transport` is given.
fn client(name: &str, transport: Option<quinn::TransportConfig>) -> quinn::Endpoint {
    let mut config = common::quic::dev_tls(name).client;
    if let Some(t) = transport {
        config.transport_config(Arc::new(t));
    }
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

#[tokio::test]
async fn stalled_requests_cannot_make_an_agent_take_unbounded_bytes() {
    const MIB: u64 = 1 << 20;
    let target = setup().start(&[]).await;
    // A peer with a small send buffer, so what it manages to write is what
    // the agent took in.
    let mut transport = quinn::TransportConfig::default();
    transport.send_window(MIB);
    let endpoint = client("greedy", Some(transport));
    let conn = endpoint
        .connect(quic_addr(&target), "x")
        .unwrap()
        .await
        .unwrap();
    // 64 calls that each claim the largest frame (1 MiB) and send all of it
    // but the last 64 KiB, then stall: 60 MiB that never becomes a request.
    let written = Arc::new(AtomicU64::new(0));
    for _ in 0..64 {
        let (conn, written) = (conn.clone(), written.clone());
        tokio::spawn(async move {
            let Ok((mut send, _recv)) = conn.open_bi().await else {
                return;
            };
            let mut head = vec![mesh_protocol::rpc::KIND_RPC];
            head.extend((mesh_protocol::rpc::MAX_FRAME as u32).to_be_bytes());
            if send.write_all(&head).await.is_err() {
                return;
            }
            let chunk = vec![0u8; 64 * 1024];
            for _ in 0..15 {
                if send.write_all(&chunk).await.is_err() {
                    return;
                }
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            // Holds the stream open until the test ends.
            std::future::pending::<()>().await;
        });
    }
    let pushed = || written.load(Ordering::Relaxed);
    wait_until(
        "the peer pushed what the agent lets it",
        Duration::from_secs(20),
        || async {
            if pushed() >= 16 * MIB {
                Ok(())
            } else {
                Err(pushed())
            }
        },
    )
    .await;
    // The request budget (4 MiB) and the connection's receive window
    // (16 MiB), plus the peer's own 1 MiB buffer: the rest waits.
    hold_for(
        "the agent takes no more than its windows",
        Duration::from_secs(3),
        || async {
            if pushed() < 24 * MIB {
                Ok(())
            } else {
                Err(pushed())
            }
        },
    )
    .await;
    target.api.client().peers().await.unwrap();
}

#[tokio::test]
async fn a_peer_that_opens_many_connections_keeps_only_its_newest() {
    let target = setup().start(&[]).await;
    let endpoint = client("many", None);
    let mut conns = Vec::new();
    for _ in 0..8 {
        let c = endpoint
            .connect(quic_addr(&target), "x")
            .unwrap()
            .await
            .unwrap();
        conns.push(c);
    }
    wait_until(
        "the oldest connections are closed, the newest kept",
        Duration::from_secs(10),
        || async {
            let open: Vec<bool> = conns.iter().map(|c| c.close_reason().is_none()).collect();
            if open == [false, false, false, false, true, true, true, true] {
                Ok(())
            } else {
                Err(open)
            }
        },
    )
    .await;
    assert!(
        matches!(
            conns[0].close_reason(),
            Some(quinn::ConnectionError::ApplicationClosed(ref c)) if &c.reason[..] == b"too many connections from this peer"
        ),
        "{:?}",
        conns[0].close_reason()
    );
}

/// Opens a stream, writes `bytes` and finishes: what came back, or how
/// the stream was reset.
async fn stream_answer(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    tokio::time::timeout(Duration::from_secs(15), recv.read_to_end(1 << 20))
        .await
        .expect("the agent answered or reset the stream")
        .map_err(|e| e.to_string())
}

/// Streams a member may open with anything in them: no kind byte, an
/// unknown kind, a forwarded connection whose `TunnelOpen` is garbage,
/// truncated, oversized or names no service. Each is reset or ended with
/// no answer, or told why (an unknown service), and the agent goes on.
#[tokio::test]
async fn malformed_streams_get_no_answer_and_the_agent_goes_on() {
    use mesh_protocol::rpc::{KIND_TUNNEL, MAX_FRAME, TunnelOpen, TunnelReply, frame};
    let target = setup().start(&[]).await;
    let endpoint = client("odd", None);
    let conn = endpoint
        .connect(quic_addr(&target), "x")
        .unwrap()
        .await
        .unwrap();
    let tunnel = |body: &[u8]| [&[KIND_TUNNEL][..], body].concat();
    let oversized = ((MAX_FRAME + 1) as u32).to_be_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no kind byte", vec![]),
        ("an unknown kind", vec![0xEE, 1, 2, 3]),
        ("a tunnel without its TunnelOpen", tunnel(b"")),
        ("a truncated length", tunnel(&[0, 0])),
        ("a frame longer than the stream", tunnel(&[0, 0, 0, 9, 1])),
        (
            "garbage in the frame",
            tunnel(&[0, 0, 0, 3, 0xff, 0xff, 0xff]),
        ),
        ("an oversized frame", tunnel(&oversized)),
    ];
    for (what, bytes) in cases {
        let answer = stream_answer(&conn, &bytes).await;
        assert!(
            answer.as_ref().is_ok_and(|b| b.is_empty()) || answer.is_err(),
            "{what}: reset or ended with no answer, got {answer:?}"
        );
    }
    // A well-formed one for a service nobody defined: told so, in a frame.
    let open = TunnelOpen {
        service: mesh_protocol::ServiceName::new("nothing-here").unwrap(),
        client: "127.0.0.1:1".parse().unwrap(),
    };
    let answer = stream_answer(&conn, &tunnel(&frame(&open).unwrap()))
        .await
        .unwrap();
    let reply: TunnelReply = mesh_protocol::wire::decode(&answer[4..]).unwrap();
    assert!(
        matches!(&reply, TunnelReply::Full(why) if why.contains("nothing-here")),
        "{reply:?}"
    );
    target.api.client().peers().await.unwrap();
}

/// Sends one gossip message on a stream of its own, in the wire's compact
/// form; bytes that are no chitchat message go as they are.
async fn send_gossip(conn: &quinn::Connection, message: &[u8]) {
    let wire = mesh_protocol::digest_codec::compact(message).unwrap_or_else(|_| message.to_vec());
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&[KIND_GOSSIP]).await.unwrap();
    s.write_all(&wire).await.unwrap();
    s.finish().unwrap();
}

/// Reads gossip streams from `conn` until one holds a message of type
/// `kind` (the compact form's first byte, after the stream's kind), for at
/// most 10 s.
async fn receive_gossip(conn: &quinn::Connection, kind: u8) {
    let received = async {
        loop {
            let mut s = conn.accept_uni().await.unwrap();
            let bytes = s.read_to_end(MAX_GOSSIP_BYTES).await.unwrap();
            if bytes.get(1) == Some(&kind) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .unwrap_or_else(|_| panic!("no gossip message of type {kind} within 10 s"));
}

/// Gossip refusals of these reasons so far (0 for none).
fn refused(agent: &TestAgent, reasons: &[&'static str]) -> Vec<(&'static str, u64)> {
    let all = agent.mesh().gossip_refusals();
    reasons
        .iter()
        .map(|r| (*r, all.get(r).copied().unwrap_or(0)))
        .collect()
}

#[tokio::test]
async fn a_member_sending_gossip_chitchat_would_choke_on_does_not_stop_the_agent_gossiping() {
    let ca = new_ca();
    let nodes = setup().tls(&ca).cluster(2).await;
    let (target, honest) = (&nodes[0], &nodes[1]);
    let (endpoint, _dir) = member_endpoint(&ca, "hostile");
    let conn = endpoint
        .connect(quic_addr(target), "x")
        .unwrap()
        .await
        .unwrap();
    let me = ChitchatId::new("hostile", 1, endpoint.local_addr().unwrap());
    let digest = craft::digest(&[(me.clone(), 1, 0, 0)]);
    // Replies to nothing (the target never gossiped with the member): a
    // SynAck and an Ack, valid but for that.
    let fine = Ops::default().node(&me, 0, 0).key_value("k", "v", 1);
    send_gossip(&conn, &craft::syn_ack(&digest, &fine.plain())).await;
    send_gossip(&conn, &craft::ack(&fine.compressed())).await;
    // 4 MiB of zeros in a few hundred bytes, and bytes that are no message.
    send_gossip(&conn, &craft::zstd_bomb(64)).await;
    send_gossip(&conn, b"\x53\xb0\x00\x09garbage").await;
    // A Syn of 5 nodes that ends at once.
    send_gossip(&conn, b"\x00\x05").await;
    let lone = ["unsolicited"];
    wait_until(
        "the lone replies are refused",
        Duration::from_secs(10),
        || async {
            let seen = refused(target, &lone);
            if seen == [("unsolicited", 2)] {
                Ok(())
            } else {
                Err(seen)
            }
        },
    )
    .await;
    // A Syn that names the member, so that the target keeps a state for it;
    // the target answers with a SynAck (coded against that Syn).
    send_gossip(&conn, &craft::syn(target.cluster(), &digest)).await;
    receive_gossip(&conn, mesh_protocol::digest_codec::ANSWER).await;
    // The Ack that answers it, with a delta that chitchat applies to the
    // member's state and then panics on: a key-value at version 10, then a
    // max version of 5.
    let poison = Ops::default()
        .node(&me, 0, 0)
        .key_value("k", "v", 10)
        .max_version(5);
    send_gossip(&conn, &craft::ack(&poison.plain())).await;
    // Gossip goes on: for longer than the failure detector needs to mark a
    // silent node dead, the two honest agents see each other alive.
    hold_for(
        "the target and the honest agent keep seeing each other alive",
        Duration::from_secs(5),
        || async {
            for (a, b) in [(target, honest), (honest, target)] {
                if !a.alive().await.contains(&b.id.to_string()) {
                    return Err(format!("{} sees {} dead", a.id, b.id));
                }
            }
            Ok(())
        },
    )
    .await;
    let reasons = [
        "max-version-below-key-value",
        "unsolicited",
        "too-large",
        "type",
        "truncated",
    ];
    assert_eq!(
        refused(target, &reasons),
        reasons.map(|r| (r, if r == "unsolicited" { 2 } else { 1 })),
        "each message refused for its reason, and no other"
    );
}

#[tokio::test]
async fn an_agent_whose_gossip_stops_stops_with_an_error() {
    let mut agent = setup().start(&[]).await;
    agent.mesh().abort_gossip();
    let ended = agent.stopped().await;
    assert!(
        matches!(ended, Err(AgentError::Mesh(MeshError::GossipStopped(_)))),
        "{ended:?}"
    );
}
