//! Hostile QUIC clients for tests, on loopback only: connection attempts
//! that never finish their handshake (from quinn-proto, driven by hand over
//! a plain UDP socket), and ready-made quinn endpoints with a given
//! identity.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mesh_agent::mesh::tls::{self, TlsSource};
use mesh_protocol::NodeId;
use quinn_proto::{ConnectionHandle, DatagramEvent};

/// TLS for a client that claims `node` without a certificate from any CA
/// (`--insecure-dev`'s kind): enough to start handshakes.
pub fn dev_tls(node: &str) -> tls::MeshTls {
    let alpn = mesh_protocol::rpc::alpn(mesh_protocol::rpc::VERSION);
    tls::build(
        &TlsSource::InsecureDev,
        &NodeId::new(node).expect("a valid node id"),
        &alpn,
    )
    .expect("development TLS")
}

/// A client that offers TLS 1.3 and the mesh's ALPN, and trusts no one
/// (cheap to start: its transport settings are quinn's defaults).
fn bare_client() -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![mesh_protocol::rpc::alpn(mesh_protocol::rpc::VERSION)];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("a QUIC client config"),
    ))
}

/// Connection attempts from one UDP socket that never complete: each is a
/// new connection (its own connection id) with a valid Initial packet.
pub struct Attempts {
    endpoint: quinn_proto::Endpoint,
    config: quinn::ClientConfig,
    socket: UdpSocket,
    connections: HashMap<ConnectionHandle, quinn_proto::Connection>,
}

impl Attempts {
    /// Attempts from `ip` (a loopback address), any port.
    pub fn from(ip: IpAddr) -> Attempts {
        let socket = UdpSocket::bind((ip, 0)).expect("a loopback UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("a read timeout");
        Attempts {
            endpoint: quinn_proto::Endpoint::new(
                Arc::new(quinn::EndpointConfig::default()),
                None,
                false,
                None,
            ),
            config: bare_client(),
            socket,
            connections: HashMap::new(),
        }
    }

    fn start(&mut self, to: SocketAddr) -> ConnectionHandle {
        let now = Instant::now();
        let (handle, mut conn) = self
            .endpoint
            .connect(now, self.config.clone(), to, "x")
            .expect("a client connection");
        let mut buf = Vec::new();
        let tx = conn.poll_transmit(now, 1, &mut buf);
        if let Some(t) = tx {
            let _ = self.socket.send_to(&buf[..t.size], to);
        }
        self.connections.insert(handle, conn);
        handle
    }

    /// Sends `n` Initials and reads nothing back: what a flood from spoofed
    /// source addresses looks like to the server, whose answers go nowhere.
    pub fn spoofed(&mut self, to: SocketAddr, n: usize) {
        for _ in 0..n {
            self.start(to);
        }
    }

    /// Starts `n` connections and answers the server's first reply to
    /// each once (a Retry is followed, so the address counts as validated),
    /// then goes silent: a source that proves its address and stalls the
    /// handshake. Returns how many the server answered within a second.
    pub fn validated_then_silent(&mut self, to: SocketAddr, n: usize) -> usize {
        let mut waiting: std::collections::HashSet<ConnectionHandle> =
            (0..n).map(|_| self.start(to)).collect();
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut data = vec![0u8; 65_536];
        let mut answered = 0;
        while !waiting.is_empty() && Instant::now() < deadline {
            let Ok((len, from)) = self.socket.recv_from(&mut data) else {
                break;
            };
            let now = Instant::now();
            let mut buf = Vec::new();
            let event = self.endpoint.handle(
                now,
                from,
                None,
                None,
                BytesMut::from(&data[..len]),
                &mut buf,
            );
            // Each attempt answers once: later packets leave it stalled.
            let Some(DatagramEvent::ConnectionEvent(h, event)) = event else {
                continue;
            };
            if !waiting.remove(&h) {
                continue;
            }
            let Some(conn) = self.connections.get_mut(&h) else {
                continue;
            };
            answered += 1;
            conn.handle_event(event);
            let mut out = Vec::new();
            while let Some(t) = conn.poll_transmit(now, 1, &mut out) {
                let _ = self.socket.send_to(&out[..t.size], to);
                out.clear();
            }
        }
        answered
    }
}

/// A background flood, stopped when dropped (and after a minute whatever
/// happens). `round` runs every `every`.
pub struct Flood {
    stop: Arc<AtomicBool>,
    pub rounds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    pub fn start(
        mut attempts: Attempts,
        every: Duration,
        mut round: impl FnMut(&mut Attempts) + Send + 'static,
    ) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                round(&mut attempts);
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(every);
            }
        });
        Flood {
            stop,
            rounds,
            thread: Some(thread),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
