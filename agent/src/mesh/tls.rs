//! Mutual TLS for the mesh's QUIC endpoint: the rustls and quinn
//! configurations a node serves and dials with.
//!
//! With [`TlsSource::Files`] both sides present a certificate signed by the
//! cluster's CA (see `mesh_protocol::pki` and `meshctl tls`), and each side
//! accepts only peers whose chain ends at that CA. Peers are dialled by
//! address, so the client does not check the server's name against the dialled
//! one; the caller reads the peer's node id from its certificate with
//! [`peer_node_name`] after the handshake and decides what to do with it.
//!
//! [`TlsSource::InsecureDev`] generates a self-signed certificate at startup
//! and accepts any peer: encrypted, but not authenticated. For development.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_protocol::NodeId;
use mesh_protocol::pki::{self, OffsetDateTime, PkiError};
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::VerifierBuilderError;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

/// The ALPN protocol both sides speak; a peer speaking anything else is
/// refused during the handshake.
pub const ALPN: &[u8] = b"ganger/1";

/// QUIC sends a PING after this long without traffic, so a healthy but quiet
/// connection never reaches the idle timeout and NAT mappings stay open.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A peer that sends nothing (not even keep-alives) for this long is gone:
/// five missed keep-alives, so one lost packet does not drop a connection,
/// while a dead peer is noticed within seconds.
const MAX_IDLE_MS: u32 = 10_000;
/// Every request, gossip exchange and log stream is its own stream; 256 lets
/// many run at once between two nodes while bounding what one peer can make
/// us hold open.
const MAX_STREAMS: u32 = 256;

/// How long the certificate generated for [`TlsSource::InsecureDev`] lasts.
const DEV_CERT_DAYS: u32 = 30;
/// Generated certificates start this long before now, for clock skew.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Where the node's TLS identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: the cluster CA's certificate, this node's certificate
    /// (chain) and its private key.
    Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
    /// A self-signed certificate made at startup; any peer is accepted.
    InsecureDev,
}

/// The QUIC configurations for serving and dialling peers.
#[derive(Debug)]
pub struct MeshTls {
    pub server: quinn::ServerConfig,
    pub client: quinn::ClientConfig,
    /// Peers are not authenticated ([`TlsSource::InsecureDev`]).
    pub insecure: bool,
}

/// Why the TLS configuration could not be built. Each says which file and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}; {hint}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: String,
    },
    #[error("{path} holds no PEM {what}; {hint}")]
    NoPem {
        what: &'static str,
        path: PathBuf,
        hint: String,
    },
    #[error("{path} is not valid PEM ({source}); {hint}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
        hint: String,
    },
    #[error("the CA certificate {path} cannot be used ({source}); {hint}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
        hint: String,
    },
    #[error("cannot read the node name in certificate {path} ({source}); {hint}")]
    Name {
        path: PathBuf,
        #[source]
        source: PkiError,
        hint: String,
    },
    #[error(
        "certificate {path} names {found} but this node is {node}; create one with `meshctl tls cert create --node {node}`, or run this node as {found}"
    )]
    WrongNode {
        path: PathBuf,
        found: String,
        node: NodeId,
    },
    #[error(
        "certificate {path} is not valid under the CA {ca} ({source}); create one signed by this CA with `meshctl tls cert create --node {node}`"
    )]
    NotFromCa {
        path: PathBuf,
        ca: PathBuf,
        node: NodeId,
        // Boxed to keep the error small (clippy::result_large_err).
        #[source]
        source: Box<rustls::Error>,
    },
    #[error(
        "key {key} cannot be used with certificate {cert} ({source}); give the key written together with this certificate"
    )]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot generate the development certificate: {0}")]
    DevCert(#[source] PkiError),
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("QUIC cannot use this TLS configuration: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// Builds the server and client configurations for `node` from `source`.
///
/// With files, refuses a certificate that names another node or does not
/// chain to the CA, so a misconfigured node fails at startup rather than at
/// its first handshake.
pub fn build(source: &TlsSource, node: &NodeId) -> Result<MeshTls, TlsError> {
    // Anything that builds a rustls config from the process-wide default
    // provider (rustls's `builder()`, which panics when it cannot choose one)
    // finds ring. An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match source {
        TlsSource::Files { ca, cert, key } => from_files(provider, ca, cert, key, node),
        TlsSource::InsecureDev => {
            tracing::warn!(node = %node, "mesh TLS is insecure: any peer is accepted");
            let now = SystemTime::now();
            let not_before = OffsetDateTime::from(now.checked_sub(CLOCK_SKEW).unwrap_or(now));
            let generated = pki::create_self_signed_node_cert(node, not_before, DEV_CERT_DAYS)
                .map_err(TlsError::DevCert)?;
            accept_any(provider, &generated)
        }
    }
}

/// Presents `cert` and accepts any peer.
fn accept_any(provider: Arc<CryptoProvider>, cert: &pki::NodeCert) -> Result<MeshTls, TlsError> {
    let pem_error =
        |e: rustls::pki_types::pem::Error| TlsError::DevCert(PkiError::Parse(e.to_string()));
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(pem_error)?;
    let accept_any = Arc::new(AcceptAnyPeer(provider.clone()));
    assemble(provider, accept_any.clone(), accept_any, chain, key, true)
}

/// The node id in the certificate the peer presented, if any.
pub fn peer_node_name(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    pki::cert_node_name(chain.first()?).ok()
}

fn from_files(
    provider: Arc<CryptoProvider>,
    ca_path: &Path,
    cert_path: &Path,
    key_path: &Path,
    node: &NodeId,
) -> Result<MeshTls, TlsError> {
    let ca_hint = "create one with `meshctl tls ca create`".to_owned();
    let cert_hint = format!("create one with `meshctl tls cert create --node {node}`");

    let mut roots = RootCertStore::empty();
    for ca in read_certs(ca_path, "CA certificate", &ca_hint)? {
        roots.add(ca).map_err(|source| TlsError::BadCa {
            path: ca_path.to_owned(),
            source,
            hint: ca_hint.clone(),
        })?;
    }
    let roots = Arc::new(roots);
    let chain = read_certs(cert_path, "certificate", &cert_hint)?;
    let key = read_key(key_path, &cert_hint)?;

    // read_certs returns at least one certificate.
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoPem {
            what: "certificate",
            path: cert_path.to_owned(),
            hint: cert_hint,
        });
    };
    let found = pki::cert_node_name(leaf).map_err(|source| TlsError::Name {
        path: cert_path.to_owned(),
        source,
        hint: cert_hint.clone(),
    })?;
    if found != node.as_str() {
        return Err(TlsError::WrongNode {
            path: cert_path.to_owned(),
            found,
            node: node.clone(),
        });
    }

    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()?;
    // Our own certificate must pass the check peers will apply to it.
    client_verifier
        .verify_client_cert(leaf, &chain[1..], UnixTime::now())
        .map_err(|source| TlsError::NotFromCa {
            path: cert_path.to_owned(),
            ca: ca_path.to_owned(),
            node: node.clone(),
            source: Box::new(source),
        })?;
    let server_verifier = Arc::new(CaOnlyServerVerifier(
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()?,
    ));
    assemble(
        provider,
        client_verifier,
        server_verifier,
        chain,
        key,
        false,
    )
    .map_err(|e| match e {
        TlsError::Rustls(source) => TlsError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        },
        other => other,
    })
}

/// Puts both sides together: TLS 1.3 only, our certificate on both sides,
/// ALPN, and the transport settings.
fn assemble(
    provider: Arc<CryptoProvider>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<dyn ServerCertVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    insecure: bool,
) -> Result<MeshTls, TlsError> {
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];

    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier)
        .with_client_auth_cert(chain, key)?;
    client_tls.alpn_protocols = vec![ALPN.to_vec()];

    let transport = transport();
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
    client.transport_config(transport);
    Ok(MeshTls {
        server,
        client,
        insecure,
    })
}

fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(MAX_IDLE_MS))))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_STREAMS))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    Arc::new(transport)
}

fn read_pem(path: &Path, what: &'static str, hint: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
        hint: hint.to_owned(),
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(
    path: &Path,
    what: &'static str,
    hint: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path, what, hint)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
            hint: hint.to_owned(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            what,
            path: path.to_owned(),
            hint: hint.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path, hint: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path, "private key", hint)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPem {
            what: "private key",
            path: path.to_owned(),
            hint: hint.to_owned(),
        },
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
            hint: hint.to_owned(),
        },
    })
}

/// Checks the server's chain against the CA but not its name: we dial
/// addresses, and the caller checks the name in the certificate
/// ([`peer_node_name`]) against the node it meant to reach.
#[derive(Debug)]
struct CaOnlyServerVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnlyServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The webpki verifier checks the name only after the chain, so a name
        // error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate, on either side, but still requires one and
/// checks the handshake signature, so the peer holds the key of the
/// certificate whose name we read. Only for [`TlsSource::InsecureDev`].
#[derive(Debug)]
struct AcceptAnyPeer(Arc<CryptoProvider>);

impl AcceptAnyPeer {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for AcceptAnyPeer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for AcceptAnyPeer {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

#[cfg(test)]
mod tests {
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

    /// A node of the CA's cluster, built from files as meshd would.
    fn member(dir: &TempDir, ca: &pki::Ca, name: &str) -> MeshTls {
        build(&write(dir, ca, &new_cert(ca, name), name), &node(name)).unwrap()
    }

    /// Presents `cert` (from any CA) and accepts any peer: one side of a
    /// handshake whose other side is under test.
    fn lenient(cert: &pki::NodeCert) -> MeshTls {
        accept_any(Arc::new(rustls::crypto::ring::default_provider()), cert).unwrap()
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
            Some(ALPN.to_vec())
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
        let client = build(&TlsSource::InsecureDev, &node("node-b")).unwrap();

        let (dialled, accepted) = handshake(&client, &server).await;
        assert!(accepted.is_err());
        assert_refused(dialled).await;
    }

    #[tokio::test]
    async fn insecure_peers_connect_and_see_each_others_names() {
        let a = build(&TlsSource::InsecureDev, &node("node-a")).unwrap();
        let b = build(&TlsSource::InsecureDev, &node("node-b")).unwrap();
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
        let err = build(&source, &node("node-b")).unwrap_err();
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
        let err = build(&source, &node("n")).unwrap_err();
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
        let err = build(&source, &node("n")).unwrap_err();
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
        let err = build(&source, &node("n")).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("ca.pem"), "{message}");
        assert!(message.contains("meshctl tls ca create"), "{message}");

        std::fs::write(ca_path, &ca.cert_pem).unwrap();
        std::fs::write(cert, "not pem").unwrap();
        let err = build(&source, &node("n")).unwrap_err();
        assert!(matches!(err, TlsError::NoPem { .. }), "{err:?}");
        assert!(err.to_string().contains("meshctl tls cert create --node n"));
    }
}
