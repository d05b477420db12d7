//! Services' limits on real Docker, through in-process agents: the port
//! range a node takes services on, connection caps, idle timeouts, and
//! definitions from a peer that the API would refuse.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::services::*;
use common::services_docker::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn service_ports_bound_what_the_api_takes_and_what_a_node_listens_on() {
    let listen = port(10);
    let mesh = setup("svcports");
    let a = mesh.start(&[]).await;
    // b allows only ports above the service's.
    let narrow = format!("{}-65535", listen + 1);
    let b = mesh
        .clone()
        .service_ports(&narrow)
        .start(&[a.gossip()])
        .await;
    wait_formed(&[&a, &b]).await;
    let refused = refusal(
        a.api
            .client()
            .create_service(&svc("low", 22, &["echo", "--port", "7000"]))
            .await,
    );
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.message.contains("--service-ports"), "{refused:?}");
    let refused = refusal(
        b.api
            .client()
            .create_service(&svc("narrow", listen, &["echo", "--port", "7000"]))
            .await,
    );
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.message.contains(&narrow), "{refused:?}");

    // Created on a, the definition reaches b, which does not listen and
    // says why; a serves it, with a container wherever there is room.
    a.api
        .create_service(&svc("wide", listen, &["echo", "--port", "7000"]))
        .await;
    wait_until(
        "b reports why it does not listen",
        Duration::from_secs(15),
        || async {
            let view = a
                .api
                .client()
                .service::<mesh_protocol::api::ServiceView>("wide")
                .await
                .unwrap();
            let at_b = view.nodes.iter().find(|n| n.node == b.id).cloned();
            match at_b {
                Some(n)
                    if !n.listening
                        && n.listen_error
                            .as_deref()
                            .is_some_and(|e| e.contains("--service-ports")) =>
                {
                    Ok(())
                }
                _ => Err(view),
            }
        },
    )
    .await;
    assert!(
        TcpStream::connect(SocketAddr::new(b.ip, listen))
            .await
            .is_err()
    );
    let reply = exchange(SocketAddr::new(a.ip, listen), b"wide")
        .await
        .unwrap();
    assert_eq!(reply, b"wide");
}

#[tokio::test]
async fn connections_beyond_the_caps_are_refused_cleanly_and_counted() {
    let a = setup("svccaps").conn_limits(3, 2).start(&[]).await;
    let listen = port(11);
    a.api
        .create_service(&svc("capped", listen, &["echo", "--port", "7000"]))
        .await;
    wait_listening(&a.api, "capped", 1).await;
    let at = SocketAddr::new(a.ip, listen);
    let (one, two) = (
        std::net::Ipv4Addr::new(127, 0, 0, 1),
        std::net::Ipv4Addr::new(127, 0, 0, 2),
    );
    let (a1, served) = echo_from(one, at).await;
    assert!(served);
    let (_a2, served) = echo_from(one, at).await;
    assert!(served);
    let (_a3, served) = echo_from(one, at).await;
    assert!(!served, "a third connection from one address is closed");
    let (_b1, served) = echo_from(two, at).await;
    assert!(served, "another address is served");
    let (_b2, served) = echo_from(two, at).await;
    assert!(!served, "a fourth in all is closed");
    drop(a1);
    wait_until("a place frees up", Duration::from_secs(20), || async {
        echo_from(two, at).await.1
    })
    .await;
    let view = a.api.services().await;
    let c = &view[0].nodes[0].counters;
    assert!(c.refused >= 2, "{c:?}");
    assert!(c.accepted >= 5 + c.refused - 2, "{c:?}");
}

#[tokio::test]
async fn an_idle_client_is_closed_and_its_container_removed() {
    let a = node().await;
    let listen = port(12);
    let mut quiet = svc("quiet", listen, &["echo", "--port", "7000"]);
    quiet.idle_timeout_ms = Some(500);
    a.api.create_service(&quiet).await;
    wait_listening(&a.api, "quiet", 1).await;
    let mut client = TcpStream::connect(SocketAddr::new(a.ip, listen))
        .await
        .unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut reply = [0u8; 2];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(containers(&a.id, "quiet").await.len(), 1);
    // Then nothing: the agent closes the connection (without the idle
    // timeout this read would wait forever).
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut rest))
        .await
        .expect("closed for being idle")
        .unwrap();
    assert_eq!(n, 0);
    wait_until(
        "its container is removed",
        Duration::from_secs(20),
        || async { containers(&a.id, "quiet").await.is_empty() },
    )
    .await;
    let view = a.api.services().await;
    assert_eq!(view[0].nodes[0].counters.served, 1);
}

/// A peer publishes, by gossip, definitions the API would refuse: one with
/// a ready timeout of u64::MAX ms and a warm container (the agents started
/// its container, reserved its cores, then panicked adding the timeout to
/// the clock, leaking both) and one with 4,000,000,000 containers per node.
/// Every node ignores them, starts nothing for them, and keeps serving.
#[tokio::test]
async fn definitions_from_a_peer_that_the_api_would_refuse_are_ignored() {
    let (a, b) = pair().await;
    let listen = port(14);
    a.api
        .create_service(&svc("fine", listen, &["echo", "--port", "7000"]))
        .await;
    wait_listening(&b.api, "fine", 2).await;
    let raw = |name: &str, listen: u16, change: &dyn Fn(&mut serde_json::Value)| {
        let mut request = svc(name, listen, &["echo", "--port", "7000"]);
        request.warm = Some(1);
        let def = mesh_protocol::service::ServiceDef {
            spec: request.try_into().unwrap(),
            revision: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            removed: false,
            owner: mesh_protocol::auth::unknown_owner(),
        };
        let mut json = serde_json::to_value(def).unwrap();
        change(&mut json);
        json.to_string()
    };
    let evil = raw("evil", port(15), &|j| {
        j["spec"]["ready_timeout_ms"] = u64::MAX.into();
    });
    let wide = raw("wide", port(16), &|j| {
        j["spec"]["warm"] = 0.into();
        j["spec"]["max_per_node"] = 4_000_000_000u32.into();
    });
    a.mesh().publish_raw_service_def("evil", evil).await;
    a.mesh().publish_raw_service_def("wide", wide).await;
    // Published after them by the same node: once b serves it, b has read
    // the invalid ones too, in the same round or before.
    a.api
        .create_service(&svc("later", port(17), &["echo", "--port", "7000"]))
        .await;
    wait_listening(&b.api, "later", 2).await;
    let heard = b
        .mesh()
        .values_with_prefix(mesh_protocol::service::defs::KEY_PREFIX)
        .await;
    for name in ["svcdef.evil", "svcdef.wide"] {
        assert!(
            heard
                .iter()
                .any(|v| v.node == a.id.as_str() && v.key == name),
            "b heard a's {name}: {heard:?}"
        );
    }
    for n in [&a, &b] {
        let names: BTreeSet<String> = n
            .api
            .services()
            .await
            .into_iter()
            .map(|v| v.def.spec.name.to_string())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["fine".to_string(), "later".to_string()]),
            "on {}",
            n.id
        );
    }
    // The valid services are still served, through either node.
    for n in [&a, &b] {
        let reply = exchange(SocketAddr::new(n.ip, listen), b"still here")
            .await
            .unwrap();
        assert_eq!(reply, b"still here");
        assert!(n.api.health().await.ok);
    }
    for n in [&a, &b] {
        for name in ["evil", "wide"] {
            assert!(
                containers(&n.id, name).await.is_empty(),
                "no container of {name} on {}",
                n.id
            );
        }
    }
    assert!(
        TcpStream::connect(SocketAddr::new(b.ip, port(15)))
            .await
            .is_err(),
        "b does not listen for evil"
    );
}
