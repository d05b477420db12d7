//! Moves a connection's bytes both ways between two streams, counting
//! them, and keeps half-close: when one side stops sending, the other
//! side's write half is shut down and the reply still flows back.

use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stats::Bytes;

/// Each direction starts with a small buffer (idle connections are cheap:
/// thousands may be open) and grows to the large one once a read fills it.
const SMALL: usize = 4 * 1024;
const LARGE: usize = 128 * 1024;

async fn one_way<R, W>(mut from: R, mut to: W, counter: &std::sync::atomic::AtomicU64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; SMALL];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if n == buf.len() && buf.len() < LARGE {
                    buf.resize(LARGE, 0);
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Pumps until both directions end. `client` is the client's side
/// (`bytes.inbound` counts what it sends), `server` the container's.
pub async fn pump<CR, CW, SR, SW>(
    (client_read, client_write): (CR, CW),
    (server_read, server_write): (SR, SW),
    bytes: &Bytes,
) where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    tokio::join!(
        one_way(client_read, server_write, &bytes.inbound),
        one_way(server_read, client_write, &bytes.outbound),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_close_keeps_the_reply() {
        // client <-> (a, b) pump (c, d) <-> server
        let (mut client, a) = tokio::io::duplex(1024);
        let (c, mut server) = tokio::io::duplex(1024);
        let bytes = Bytes::default();
        let (ar, aw) = tokio::io::split(a);
        let (cr, cw) = tokio::io::split(c);
        let server_side = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            // The client is done sending; the reply still goes back.
            server.write_all(&got.repeat(2)).await.unwrap();
            server.shutdown().await.unwrap();
        };
        let client_side = async {
            client.write_all(b"ping").await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        };
        let (_, reply, _) =
            tokio::join!(pump((ar, aw), (cr, cw), &bytes), client_side, server_side);
        assert_eq!(reply, b"pingping");
        assert_eq!(bytes.inbound.load(Ordering::Relaxed), 4);
        assert_eq!(bytes.outbound.load(Ordering::Relaxed), 8);
    }
}
