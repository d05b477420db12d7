//! Helpers for the tests of services (on Docker and on the in-memory
//! runtime): definitions, the API's answers, and client connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mesh_protocol::api::ServiceView;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Api, IMAGE, wait_until};

/// A loopback address of its own for each agent, so agents in one test
/// (and tests running at once) can listen on the same service port.
pub fn own_loopback() -> IpAddr {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(
        127,
        20 + (pid % 200) as u8,
        (n / 250) as u8,
        (n % 250 + 1) as u8,
    ))
}

pub async fn create(api: &Api, body: Value) -> (u16, String) {
    let r = api
        .http
        .post(format!("{}/v1/services", api.url))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub async fn services(api: &Api) -> Vec<ServiceView> {
    let r = api
        .http
        .get(format!("{}/v1/services", api.url))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

/// Waits until every node listens for `name` (as `api` reports it).
pub async fn wait_listening(api: &Api, name: &str, nodes: usize) {
    wait_until(
        &format!("{nodes} nodes listen for {name}"),
        Duration::from_secs(15),
        || async {
            services(api).await.iter().any(|v| {
                v.def.spec.name.as_str() == name
                    && v.nodes.iter().filter(|n| n.listening).count() == nodes
            })
        },
    )
    .await;
}

pub fn svc(name: &str, listen: u16, command: &[&str]) -> Value {
    json!({
        "name": name,
        "image": IMAGE,
        "port": 7000,
        "listen": listen,
        "command": command,
    })
}

/// A port number for a test's service (agents listen on their own
/// loopback addresses, so only services of one test must differ).
pub fn port(n: u16) -> u16 {
    20_000 + (std::process::id() % 20_000) as u16 + n
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
