//! The in-memory runtime's `echo` containers: a TCP echo server on a
//! loopback address of its own, closed when the container ends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::runtime::RuntimeError;

/// A loopback address no other container of this process has: 127.220.0.1
/// and up, shifted by the process id so test processes running at once
/// rarely meet (and an address found taken is skipped).
pub(super) fn next_address() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst) + (std::process::id() % 64) * 4096;
    let [_, b, c, d] = n.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(127, 220 + (b % 30), c, d.max(1)))
}

/// Listens on `port` of a fresh address and echoes every connection until
/// the container ends (`exit` gets a code); its connections close then.
pub(super) fn echo_server(
    port: u16,
    mut exit: watch::Receiver<Option<i64>>,
) -> Result<IpAddr, RuntimeError> {
    let mut tries = 0;
    let listener = loop {
        let ip = next_address();
        let bound = std::net::TcpListener::bind(SocketAddr::new(ip, port)).and_then(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        });
        match bound {
            Ok(l) => break l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => tries += 1,
            Err(e) => {
                return Err(RuntimeError::Rejected(format!(
                    "cannot listen on {ip}:{port}: {e}"
                )));
            }
        }
    };
    let ip = listener
        .local_addr()
        .map_err(|e| RuntimeError::Rejected(e.to_string()))?
        .ip();
    tokio::spawn(async move {
        // Dropped with this task: the connections close when it ends.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = exit.wait_for(Option::is_some) => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(echo(stream));
                    }
                    Err(_) => return,
                },
                Some(_) = conns.join_next() => {}
            }
        }
    });
    Ok(ip)
}

/// Echoes until the client stops sending, then closes its side.
async fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
}
