//! Helpers for the tests of services (on Docker and on the in-memory
//! runtime): definitions, waiting for listeners, and client connections.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_protocol::service::ServiceRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::IMAGE;
use super::api::Api;
use super::wait::wait_until;

/// Waits until every node listens for `name` (as `api` reports it).
pub async fn wait_listening(api: &Api, name: &str, nodes: usize) {
    wait_until(
        &format!("{nodes} nodes listen for {name}"),
        Duration::from_secs(15),
        || async {
            let views = api.services().await;
            let listening = views.iter().any(|v| {
                v.def.spec.name.as_str() == name
                    && v.nodes.iter().filter(|n| n.listening).count() == nodes
            });
            if listening { Ok(()) } else { Err(views) }
        },
    )
    .await;
}

pub fn svc(name: &str, listen: u16, command: &[&str]) -> ServiceRequest {
    ServiceRequest {
        name: name.into(),
        image: IMAGE.into(),
        port: 7000,
        listen,
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A port number for a test's service (agents listen on their own
/// loopback addresses, so only services of one test must differ).
pub fn port(n: u16) -> u16 {
    20_000 + (std::process::id() % 20_000) as u16 + n
}

/// Connects to `addr` from the loopback address `source`, sends a byte and
/// reads one back: the stream, and whether the byte came back (false: the
/// agent closed the connection).
pub async fn echo_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> (TcpStream, bool) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut one))
        .await
        .expect("an answer within 60 s")
        .unwrap_or(0);
    (s, n == 1)
}

/// Sends `data`, ends its side, reads to the end.
pub async fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no answer within 60 s"))??;
    Ok(out)
}
