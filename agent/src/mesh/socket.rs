//! The endpoint's UDP socket, with buffers sized for bulk transfers.
//!
//! Linux gives a UDP socket 208 KiB of receive buffer by default. A peer
//! sending a transfer at full speed fills that whenever this agent is a
//! moment slower than the sender (both share the CPU with the containers),
//! and every datagram dropped there is a QUIC loss: a retransmission and a
//! smaller congestion window. Measured on loopback (docs/benchmarks.md):
//! hundreds of drops per 768 MB at 208 KiB, none at 4 MiB.

use std::net::{SocketAddr, UdpSocket};

use tracing::{debug, info};

/// What each of the socket's buffers is asked to hold.
pub const BUFFER: usize = 4 << 20;

/// Binds `addr` and sizes its buffers: beyond the system's cap
/// (`net.core.rmem_max`, `wmem_max`) where this process may (as root, with
/// `CAP_NET_ADMIN`), else up to that cap.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(&socket, BUFFER).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(&socket, BUFFER);
    }
    if sockopt::set_socket_send_buffer_size_force(&socket, BUFFER).is_err() {
        let _ = sockopt::set_socket_send_buffer_size(&socket, BUFFER);
    }
    // The kernel reports twice what it was asked (its bookkeeping).
    let recv = sockopt::socket_recv_buffer_size(&socket).unwrap_or(0) / 2;
    let send = sockopt::socket_send_buffer_size(&socket).unwrap_or(0) / 2;
    if recv < BUFFER {
        info!(
            receive_buffer = recv,
            asked = BUFFER,
            "the QUIC socket's receive buffer is smaller than asked (capped by net.core.rmem_max; run meshd as root or raise the sysctl): fast transfers from peers may see drops"
        );
    } else {
        debug!(
            receive_buffer = recv,
            send_buffer = send,
            "QUIC socket buffers"
        );
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_gets_at_least_the_systems_default_and_is_bound() {
        let s = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(s.local_addr().unwrap().port(), 0);
        let recv = rustix::net::sockopt::socket_recv_buffer_size(&s).unwrap() / 2;
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        // Either it got what it asked, or as much as the cap allows.
        assert!(recv >= BUFFER.min(cap), "receive buffer {recv}, cap {cap}");
    }
}
