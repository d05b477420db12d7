//! Loopback addresses for tests: nothing here reaches past 127.0.0.0/8.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

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

/// A free TCP port on 127.0.0.1 (for agents run as separate processes).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    l.local_addr().expect("its address")
}
