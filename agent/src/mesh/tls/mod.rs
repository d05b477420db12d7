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
use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::VerifierBuilderError;
use rustls::server::danger::ClientCertVerifier;

/// QUIC sends a PING after this long without traffic, so a healthy but quiet
/// connection never reaches the idle timeout and NAT mappings stay open.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A peer that sends nothing (not even keep-alives) for this long is gone:
/// five missed keep-alives, so one lost packet does not drop a connection,
/// while a dead peer is noticed within seconds.
const MAX_IDLE_MS: u32 = 10_000;
/// Every gossip message is its own unidirectional stream; 256 lets many run
/// at once between two nodes while bounding what one peer can make us hold
/// open (each reads at most 64 KiB).
const MAX_STREAMS: u32 = 256;
/// Bidirectional streams (calls, and one per forwarded service connection)
/// a peer may open at once on a new connection. The transport raises it
/// while most are in use (`transport::serve_connection`), up to
/// [`MAX_BIDI_STREAMS`]. Quinn sets aside state for every stream a peer may
/// open, so a large fixed limit costs every connection: at 100,000 each
/// connection cost 100,000 entries on both sides before a byte moved.
pub const INITIAL_BIDI_STREAMS: u32 = 1024;
/// The most bidirectional streams one connection may have open: well above
/// the 10,000 service connections held through one peer in the benchmarks.
pub const MAX_BIDI_STREAMS: u32 = 16_384;
/// Bytes a peer may send on one stream ahead of what we read: quinn's
/// default (12.5 MB/s over a 100 ms round trip), which a single tunnel needs
/// to move a bulk transfer at full speed on a LAN or between regions.
const STREAM_RECEIVE_WINDOW: u32 = 1_250_000;
/// Bytes a peer may send on all streams of a connection ahead of what we
/// read (quinn's default is unbounded): 16 MiB, about 13 streams' windows,
/// so many tunnels at once still move at full speed, while a peer that
/// fills streams nobody reads holds at most this much per connection.
const RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;

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
    #[error(
        "--api-tls serves the API with this node's certificate: give --tls-ca, --tls-cert and --tls-key (not --insecure-dev)"
    )]
    ApiTlsWithoutFiles,
    #[error("cannot generate the development certificate: {0}")]
    DevCert(#[source] PkiError),
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("QUIC cannot use this TLS configuration: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// Builds the server and client configurations for `node` from `source`,
/// speaking ALPN protocol `alpn` only (`mesh_protocol::rpc::alpn`: a peer of
/// another RPC version is refused during the handshake).
///
/// With files, refuses a certificate that names another node or does not
/// chain to the CA, so a misconfigured node fails at startup rather than at
/// its first handshake.
pub fn build(source: &TlsSource, node: &NodeId, alpn: &[u8]) -> Result<MeshTls, TlsError> {
    // Anything that builds a rustls config from the process-wide default
    // provider (rustls's `builder()`, which panics when it cannot choose one)
    // finds ring. An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match source {
        TlsSource::Files { ca, cert, key } => from_files(provider, ca, cert, key, node, alpn),
        TlsSource::InsecureDev => {
            tracing::warn!(node = %node, "mesh TLS is insecure: any peer is accepted");
            let now = SystemTime::now();
            let not_before = OffsetDateTime::from(now.checked_sub(CLOCK_SKEW).unwrap_or(now));
            let generated = pki::create_self_signed_node_cert(node, not_before, DEV_CERT_DAYS)
                .map_err(TlsError::DevCert)?;
            accept_any(provider, &generated, alpn)
        }
    }
}

/// Presents `cert` and accepts any peer.
fn accept_any(
    provider: Arc<CryptoProvider>,
    cert: &pki::NodeCert,
    alpn: &[u8],
) -> Result<MeshTls, TlsError> {
    let pem_error =
        |e: rustls::pki_types::pem::Error| TlsError::DevCert(PkiError::Parse(e.to_string()));
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(pem_error)?;
    let accept_any = Arc::new(AcceptAnyPeer(provider.clone()));
    assemble(
        provider,
        accept_any.clone(),
        accept_any,
        chain,
        key,
        alpn,
        true,
    )
}

/// TLS alert `no_application_protocol` (RFC 8446): the peer speaks no ALPN
/// protocol we offered.
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

/// Whether a handshake failed because the two sides speak different RPC
/// versions (no common ALPN protocol), on either side of it.
pub fn is_version_mismatch(e: &quinn::ConnectionError) -> bool {
    let code = quinn::TransportErrorCode::crypto(ALERT_NO_APPLICATION_PROTOCOL);
    match e {
        quinn::ConnectionError::TransportError(t) => t.code == code,
        quinn::ConnectionError::ConnectionClosed(c) => c.error_code == code,
        _ => false,
    }
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
    alpn: &[u8],
) -> Result<MeshTls, TlsError> {
    let cert_hint = format!("create one with `meshctl tls cert create --node {node}`");
    let roots = read_roots(ca_path)?;
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
        alpn,
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
    alpn: &[u8],
    insecure: bool,
) -> Result<MeshTls, TlsError> {
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server_tls.alpn_protocols = vec![alpn.to_vec()];

    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier)
        .with_client_auth_cert(chain, key)?;
    client_tls.alpn_protocols = vec![alpn.to_vec()];

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
        .max_concurrent_bidi_streams(VarInt::from_u32(INITIAL_BIDI_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW));
    Arc::new(transport)
}

/// The cluster CA's certificates as trust roots.
fn read_roots(ca_path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let ca_hint = "create one with `meshctl tls ca create`".to_owned();
    let mut roots = RootCertStore::empty();
    for ca in read_certs(ca_path, "CA certificate", &ca_hint)? {
        roots.add(ca).map_err(|source| TlsError::BadCa {
            path: ca_path.to_owned(),
            source,
            hint: ca_hint.clone(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The HTTPS configuration of the control API (`--api-tls`): the node's own
/// certificate (checked by `build` at start), and client certificates
/// verified against the cluster CA when a client shows one (optional: a
/// caller may come with a bearer token instead). Which certificates are API
/// credentials is the API's decision (`pki::client_caller`).
pub fn api_server_config(source: &TlsSource) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let TlsSource::Files { ca, cert, key } = source else {
        return Err(TlsError::ApiTlsWithoutFiles);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let hint = "create one with `meshctl tls cert create --node NAME`";
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        read_roots(ca)?,
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(cert, "certificate", hint)?, read_key(key, hint)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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

#[cfg(test)]
mod tests;
mod verify;

use verify::{AcceptAnyPeer, CaOnlyServerVerifier};
