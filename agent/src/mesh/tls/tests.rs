//! Handshakes between real quinn endpoints on 127.0.0.1 with certificates
//! from one CA, another CA, and none.

use std::net::SocketAddr;

use quinn::{Connection, ConnectionError, Endpoint};
use tempfile::TempDir;

use super::*;

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn not_before() -> OffsetDateTime {
    OffsetDateTime::from(SystemTime::now() - CLOCK_SKEW)
}

fn new_ca() -> pki::Ca {
    pki::create_ca("test", not_before(), 2).unwrap()
}

fn new_cert(ca: &pki::Ca, name: &str) -> pki::NodeCert {
    pki::create_node_cert(ca, &node(name), not_before(), 1).unwrap()
}

/// Writes the CA certificate and `cert` into `dir` as `meshctl tls`
/// would, and names the files.
fn write(dir: &TempDir, ca: &pki::Ca, cert: &pki::NodeCert, name: &str) -> TlsSource {
    let path = |file: &str| dir.path().join(file);
    std::fs::write(path("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(path(&format!("{name}.pem")), &cert.cert_pem).unwrap();
    std::fs::write(path(&format!("{name}-key.pem")), &cert.key_pem).unwrap();
    TlsSource::Files {
        ca: path("ca.pem"),
        cert: path(&format!("{name}.pem")),
        key: path(&format!("{name}-key.pem")),
    }
}

/// What this build speaks.
fn alpn() -> Vec<u8> {
    mesh_protocol::rpc::alpn(mesh_protocol::rpc::VERSION)
}

/// A node of the CA's cluster, built from files as meshd would.
fn member(dir: &TempDir, ca: &pki::Ca, name: &str) -> MeshTls {
    build(
        &write(dir, ca, &new_cert(ca, name), name),
        &node(name),
        &alpn(),
    )
    .unwrap()
}

/// Presents `cert` (from any CA) and accepts any peer: one side of a
/// handshake whose other side is under test.
fn lenient(cert: &pki::NodeCert) -> MeshTls {
    accept_any(
        Arc::new(rustls::crypto::ring::default_provider()),
        cert,
        &alpn(),
    )
    .unwrap()
}

fn endpoint(tls: &MeshTls) -> Endpoint {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut endpoint = Endpoint::server(tls.server.clone(), addr).unwrap();
    endpoint.set_default_client_config(tls.client.clone());
    endpoint
}

type Outcome = Result<Connection, ConnectionError>;

/// `client` dials `server`; returns what each side got. The server name
/// is deliberately not the server's node id: names are not checked.
async fn handshake(client: &MeshTls, server: &MeshTls) -> (Outcome, Outcome) {
    let client = endpoint(client);
    let server = endpoint(server);
    let addr = server.local_addr().unwrap();
    let dial = async { client.connect(addr, "peer").unwrap().await };
    let accept = async { server.accept().await.unwrap().await };
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(dial, accept)
    })
    .await
    .unwrap()
}

/// The client side was refused: at once, or (TLS 1.3 finishes the
/// client's handshake before the server has checked its certificate)
/// by the server closing the connection right after.
async fn assert_refused(outcome: Outcome) {
    if let Ok(conn) = outcome {
        let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .unwrap();
        assert!(
            matches!(reason, ConnectionError::ConnectionClosed(_)),
            "{reason:?}"
        );
    }
}

#[tokio::test]
async fn members_of_one_ca_connect_and_see_each_others_names() {
    let dir = TempDir::new().unwrap();
    let ca = new_ca();
    let a = member(&dir, &ca, "node-a");
    let b = member(&dir, &ca, "node-b");
    assert!(!a.insecure);

    let (dialled, accepted) = handshake(&b, &a).await;
    let (dialled, accepted) = (dialled.unwrap(), accepted.unwrap());
    assert_eq!(peer_node_name(&dialled).as_deref(), Some("node-a"));
    assert_eq!(peer_node_name(&accepted).as_deref(), Some("node-b"));
    assert_eq!(
        dialled.handshake_data().and_then(|d| {
            d.downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()
                .and_then(|d| d.protocol)
        }),
        Some(alpn())
    );
}

#[tokio::test]
async fn server_refuses_a_client_from_another_ca() {
    let dir = TempDir::new().unwrap();
    let server = member(&dir, &new_ca(), "node-a");
    let client = lenient(&new_cert(&new_ca(), "node-b"));

    let (dialled, accepted) = handshake(&client, &server).await;
    assert!(accepted.is_err());
    assert_refused(dialled).await;
}

#[tokio::test]
async fn client_refuses_a_server_from_another_ca() {
    let dir = TempDir::new().unwrap();
    let client = member(&dir, &new_ca(), "node-b");
    let server = lenient(&new_cert(&new_ca(), "node-a"));

    let (dialled, accepted) = handshake(&client, &server).await;
    assert!(
        matches!(dialled, Err(ConnectionError::TransportError(_))),
        "{dialled:?}"
    );
    assert!(accepted.is_err());
}

#[tokio::test]
async fn server_refuses_an_insecure_client() {
    let dir = TempDir::new().unwrap();
    let server = member(&dir, &new_ca(), "node-a");
    let client = build(&TlsSource::InsecureDev, &node("node-b"), &alpn()).unwrap();

    let (dialled, accepted) = handshake(&client, &server).await;
    assert!(accepted.is_err());
    assert_refused(dialled).await;
}

#[tokio::test]
async fn insecure_peers_connect_and_see_each_others_names() {
    let a = build(&TlsSource::InsecureDev, &node("node-a"), &alpn()).unwrap();
    let b = build(&TlsSource::InsecureDev, &node("node-b"), &alpn()).unwrap();
    assert!(a.insecure && b.insecure);

    let (dialled, accepted) = handshake(&b, &a).await;
    assert_eq!(peer_node_name(&dialled.unwrap()).as_deref(), Some("node-a"));
    assert_eq!(
        peer_node_name(&accepted.unwrap()).as_deref(),
        Some("node-b")
    );
}

#[test]
fn build_refuses_a_certificate_for_another_node() {
    let dir = TempDir::new().unwrap();
    let ca = new_ca();
    let source = write(&dir, &ca, &new_cert(&ca, "node-a"), "node-a");
    let err = build(&source, &node("node-b"), &alpn()).unwrap_err();
    assert!(matches!(err, TlsError::WrongNode { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("names node-a but this node is node-b"),
        "{message}"
    );
    assert!(
        message.contains("meshctl tls cert create --node node-b"),
        "{message}"
    );
}

#[test]
fn build_refuses_a_certificate_from_another_ca() {
    let dir = TempDir::new().unwrap();
    let source = write(&dir, &new_ca(), &new_cert(&new_ca(), "n"), "n");
    let err = build(&source, &node("n"), &alpn()).unwrap_err();
    assert!(matches!(err, TlsError::NotFromCa { .. }), "{err:?}");
}

#[test]
fn build_refuses_a_key_of_another_certificate() {
    let dir = TempDir::new().unwrap();
    let ca = new_ca();
    let source = write(&dir, &ca, &new_cert(&ca, "n"), "n");
    let TlsSource::Files { key, .. } = &source else {
        unreachable!()
    };
    std::fs::write(key, new_cert(&ca, "n").key_pem).unwrap();
    let err = build(&source, &node("n"), &alpn()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn build_names_missing_and_empty_files() {
    let dir = TempDir::new().unwrap();
    let ca = new_ca();
    let source = write(&dir, &ca, &new_cert(&ca, "n"), "n");
    let TlsSource::Files {
        ca: ca_path, cert, ..
    } = &source
    else {
        unreachable!()
    };

    std::fs::remove_file(ca_path).unwrap();
    let err = build(&source, &node("n"), &alpn()).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("ca.pem"), "{message}");
    assert!(message.contains("meshctl tls ca create"), "{message}");

    std::fs::write(ca_path, &ca.cert_pem).unwrap();
    std::fs::write(cert, "not pem").unwrap();
    let err = build(&source, &node("n"), &alpn()).unwrap_err();
    assert!(matches!(err, TlsError::NoPem { .. }), "{err:?}");
    assert!(err.to_string().contains("meshctl tls cert create --node n"));
}

#[tokio::test]
async fn builds_of_different_rpc_versions_refuse_each_other() {
    let dir = TempDir::new().unwrap();
    let ca = new_ca();
    let new = member(&dir, &ca, "node-a");
    let old = write(&dir, &ca, &new_cert(&ca, "node-b"), "node-b");
    let old = build(&old, &node("node-b"), &mesh_protocol::rpc::alpn(1)).unwrap();

    let (dialled, accepted) = handshake(&old, &new).await;
    let accepted = accepted.unwrap_err();
    assert!(is_version_mismatch(&accepted), "{accepted:?}");
    let dialled = dialled.unwrap_err();
    assert!(is_version_mismatch(&dialled), "{dialled:?}");
}
