//! Hostile clients at the HTTP API, an agent in-process on loopback (the
//! in-memory runtime): a 100 MB body, JSON nested 10,000 deep, invalid
//! UTF-8, and slowloris clients holding many slow connections. Each gets a
//! 4xx or is cut, the process's memory stays bounded, and a normal request
//! succeeds meanwhile.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use mesh_agent::api::{BODY_TIMEOUT, HEADER_TIMEOUT};
use mesh_protocol::TaskState;
use mesh_protocol::api::MAX_BODY;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const MIB: usize = 1 << 20;
/// What a hostile client may make the process hold, at most: far below the
/// 100 MB it sends, far above the agent's own working set.
const MEMORY_BOUND: u64 = 48 * MIB as u64;

fn setup() -> Setup {
    Setup::memory("api").topology("numa:1 core:2 pu:1")
}

fn api_addr(agent: &TestAgent) -> SocketAddr {
    agent.running().api_addr
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// The status code of an HTTP answer's first line, if there is one.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\r').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends `head`, then `body_chunks` chunks of `chunk` (each framed as an
/// HTTP chunk if `chunked`) while reading the answer. Returns the answer's
/// status, or `None` if the connection was cut without one. Write errors
/// are expected: the agent stops reading once it refuses.
async fn send_streaming(
    addr: SocketAddr,
    head: String,
    chunk: Vec<u8>,
    body_chunks: usize,
    chunked: bool,
) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for _ in 0..body_chunks {
            if chunked {
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
            }
            wr.write_all(&chunk).await?;
            if chunked {
                wr.write_all(b"\r\n").await?;
            }
        }
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    let _ = rd.read_to_end(&mut answer).await;
    writer.abort();
    status_of(&answer)
}

/// One request, whole, read to its answer's status (the connection closes
/// after it).
async fn send_raw(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap_or(0);
    status_of(&answer[..n])
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A normal client's request still gets its answer.
async fn still_serves(agent: &TestAgent) {
    let t = agent.api.submit(&task(1, &["exit", "0"])).await.id;
    agent.api.wait_state(&t, TaskState::Succeeded, 10).await;
}

#[tokio::test]
async fn a_100_mb_body_is_refused_without_being_held() {
    let agent = setup().start(&[]).await;
    let addr = api_addr(&agent);
    let before = rss();
    let hundred_mb = 100;
    // Declared up front: refused from the header, before any body byte.
    let declared = tokio::spawn(send_streaming(
        addr,
        format!(
            "POST /v1/tasks HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            hundred_mb * MIB
        ),
        vec![b' '; MIB],
        hundred_mb,
        false,
    ));
    // Chunked, so no length is known: refused once past MAX_BODY.
    let chunked = tokio::spawn(send_streaming(
        addr,
        "POST /v1/services HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".into(),
        vec![b' '; MIB],
        hundred_mb,
        true,
    ));
    still_serves(&agent).await;
    assert_eq!(declared.await.unwrap(), Some(413));
    assert_eq!(chunked.await.unwrap(), Some(413));
    let grew = rss().saturating_sub(before);
    assert!(
        grew < MEMORY_BOUND,
        "the process grew by {grew} bytes for 2 x 100 MB bodies"
    );
    // One byte past the limit is refused; the limit itself is a body the
    // handler reads (and refuses as malformed: it is all spaces).
    let over = post("/v1/tasks", &vec![b' '; MAX_BODY + 1]);
    assert_eq!(send_raw(addr, &over).await, Some(413));
    let at = post("/v1/tasks", &vec![b' '; MAX_BODY]);
    assert_eq!(send_raw(addr, &at).await, Some(400));
    still_serves(&agent).await;
}

#[tokio::test]
async fn deep_json_and_invalid_utf8_get_400() {
    let agent = setup().start(&[]).await;
    let addr = api_addr(&agent);
    let deep = format!(
        r#"{{"image":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_object = format!("{}{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let bad_utf8: &[u8] = b"{\"image\":\"\xff\xfe\xfd\",\"cores\":1}";
    for path in ["/v1/tasks", "/v1/services"] {
        for body in [deep.as_bytes(), deep_object.as_bytes(), bad_utf8] {
            let request = post(path, body);
            assert_eq!(
                send_raw(addr, &request).await,
                Some(400),
                "POST {path} with {}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
    }
    // Invalid UTF-8 in a path or a query, raw or percent-encoded.
    let requests: [&[u8]; 4] = [
        b"GET /v1/tasks/t\xff\xfe HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n",
        b"GET /v1/tasks/t%ff%fe HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n",
        b"GET /v1/tasks?after=%ff%fe HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n",
        b"POST /v1/nodes/n%c3%28/drain HTTP/1.1\r\nhost: agent\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    ];
    for request in requests {
        let status = send_raw(addr, request).await;
        assert!(
            status.is_some_and(|s| (400..500).contains(&s)),
            "{} answered {status:?}",
            String::from_utf8_lossy(request).lines().next().unwrap()
        );
    }
    still_serves(&agent).await;
}

/// A slowloris connection: sends `head`, then `trickle` one byte at a time
/// every 500 ms (for at most 2 minutes), and returns what ended it: the
/// answer's status, or `None` if the agent closed it without one.
async fn slow_client(addr: SocketAddr, head: &'static str, trickle: u8) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for _ in 0..240 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            wr.write_all(&[trickle]).await?;
        }
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    let _ = rd.read_to_end(&mut answer).await;
    writer.abort();
    status_of(&answer)
}

#[tokio::test]
async fn slowloris_clients_are_cut_and_others_served_meanwhile() {
    let agent = setup().start(&[]).await;
    let addr = api_addr(&agent);
    let before = rss();
    let mut slow = JoinSet::new();
    // Heads that never end (a header line that grows by a byte at a time),
    // and bodies that never end (1 MiB declared, a byte at a time).
    for _ in 0..200 {
        slow.spawn(slow_client(
            addr,
            "POST /v1/tasks HTTP/1.1\r\nhost: agent\r\nx-slow: ",
            b'a',
        ));
    }
    for _ in 0..50 {
        slow.spawn(slow_client(
            addr,
            "POST /v1/tasks HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n",
            b' ',
        ));
    }
    // While they are all held: normal requests are answered.
    still_serves(&agent).await;
    assert!(agent.api.health().await.ok);
    // Every slow client is cut: a head by HEADER_TIMEOUT (closed), a body
    // by BODY_TIMEOUT (408). The bound only keeps a broken agent from
    // hanging the test.
    let bound = HEADER_TIMEOUT.max(BODY_TIMEOUT) * 3;
    let mut ends = Vec::new();
    let all = async {
        while let Some(end) = slow.join_next().await {
            ends.push(end.unwrap());
        }
    };
    assert!(
        tokio::time::timeout(bound, all).await.is_ok(),
        "slow clients still connected after {bound:?}"
    );
    let timed_out = ends.iter().filter(|e| **e == Some(408)).count();
    let closed = ends.iter().filter(|e| e.is_none()).count();
    assert_eq!(
        (closed, timed_out),
        (200, 50),
        "heads closed, bodies answered 408: {ends:?}"
    );
    let grew = rss().saturating_sub(before);
    assert!(
        grew < MEMORY_BOUND,
        "the process grew by {grew} bytes for 250 slow clients"
    );
    still_serves(&agent).await;
}
