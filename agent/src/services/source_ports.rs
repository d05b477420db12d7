//! Connections to pool instances from source ports chosen in turn.
//!
//! Every client connection is a new connection from this agent to an
//! instance, and each closed one keeps its source port in TIME_WAIT for a
//! minute (the agent passes the client's end of stream on first). Left to
//! the kernel, `connect()` looks for a free port by walking the range past
//! every such socket toward the same address: measured, 79% of the agent's
//! CPU per new connection (docs/benchmarks.md). Here the agent walks the
//! range itself, one port after the other, so the port it tries is the one
//! it used longest ago, almost always out of TIME_WAIT already; a port
//! that is taken (by another program, or still waiting) costs one more try,
//! and after a few the kernel chooses as before.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// Ports tried in turn before the kernel chooses.
const TRIES: usize = 8;
/// Linux's default ephemeral range, when /proc does not say.
const DEFAULT_RANGE: RangeInclusive<u16> = 32768..=60999;

/// The next port's place in the range, shared by every connection.
static NEXT: AtomicU32 = AtomicU32::new(0);
static RANGE: OnceLock<RangeInclusive<u16>> = OnceLock::new();

/// This host's ephemeral port range (`net.ipv4.ip_local_port_range`).
fn range() -> &'static RangeInclusive<u16> {
    RANGE.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| parse_range(&text))
            .unwrap_or(DEFAULT_RANGE)
    })
}

/// "low high" as a range, if it is one.
fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (parts.next()?.ok()?, parts.next()?.ok()?);
    (low > 0 && low <= high).then_some(low..=high)
}

/// The port at turn `turn` of `range`.
fn port_at(range: &RangeInclusive<u16>, turn: u32) -> u16 {
    let len = u32::from(*range.end() - *range.start()) + 1;
    *range.start() + (turn % len) as u16
}

/// Connects to `addr` from the next port in turn (see the module's text).
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    for _ in 0..TRIES {
        let port = port_at(range(), NEXT.fetch_add(1, Ordering::Relaxed));
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // Lets the port be bound while it has sockets in TIME_WAIT; the
        // connect still refuses a pair of addresses that one holds.
        socket.set_reuseaddr(true)?;
        let any = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        if socket.bind(SocketAddr::new(any, port)).is_err() {
            continue;
        }
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse
                ) => {}
            Err(e) => return Err(e),
        }
    }
    TcpStream::connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_read_as_the_kernel_writes_it() {
        assert_eq!(parse_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_range("1024 1024"), Some(1024..=1024));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("0 10"), None);
        assert_eq!(parse_range("garbage"), None);
        assert_eq!(parse_range(""), None);
    }

    #[test]
    fn turns_walk_the_range_and_wrap() {
        let r = 100..=102;
        let ports: Vec<u16> = (0..7).map(|t| port_at(&r, t)).collect();
        assert_eq!(ports, [100, 101, 102, 100, 101, 102, 100]);
        let whole = 1..=u16::MAX;
        assert_eq!(port_at(&whole, u32::from(u16::MAX)), 1);
    }

    #[tokio::test]
    async fn connections_come_from_ports_in_turn_and_carry_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..20 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
            }
        });
        let mut ports = Vec::new();
        for _ in 0..20 {
            let mut c = connect(addr).await.unwrap();
            ports.push(c.local_addr().unwrap().port());
            c.write_all(b"hi").await.unwrap();
            let mut b = [0u8; 2];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"hi");
            // Closed first here, as the agent closes toward an instance:
            // the port is left in TIME_WAIT.
        }
        server.await.unwrap();
        assert!(ports.iter().all(|p| range().contains(p)), "{ports:?}");
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "no port twice: {ports:?}");
        // In turn, not the kernel's random choice (other tests' connections
        // may take a turn in between).
        let next = ports
            .windows(2)
            .filter(|w| port_at(range(), u32::from(w[0] - range().start()) + 1) == w[1])
            .count();
        assert!(next >= ports.len() / 2, "not in turn: {ports:?}");
    }
}
