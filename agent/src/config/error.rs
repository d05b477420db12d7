//! Why meshd's settings were refused: each error names the setting.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid node id: {0} (set --node-id)")]
    NodeId(#[from] mesh_protocol::ids::IdError),
    #[error("--max-queue must be at least 1")]
    MaxQueue,
    #[error(
        "no TLS files: give --tls-ca, --tls-cert and --tls-key (create them with `meshctl tls ca create` and `meshctl tls cert create --node NAME`), or --insecure-dev for a development mesh without authentication"
    )]
    NoTls,
    #[error("--tls-ca, --tls-cert and --tls-key go together; missing {0}")]
    PartialTls(&'static str),
    #[error(
        "the API at {0} is reachable from other hosts and has no credentials: give --api-tokens FILE (from `meshctl token create`) and/or --api-tls (client certificates from `meshctl tls cert create --client NAME --role ROLE`), bind --api to 127.0.0.1, or use --insecure-dev on a private network"
    )]
    ApiOpen(SocketAddr),
    #[error(
        "--insecure-dev: {flag} {addr} is not a loopback or private address, and an unauthenticated agent there is open to anyone; bind {flag} to 127.0.0.1 or a private address (10/8, 172.16/12, 192.168/16, fc00::/7), or drop --insecure-dev and give credentials"
    )]
    InsecurePublic {
        flag: &'static str,
        addr: SocketAddr,
    },
    #[error(
        "--api-tls serves the API with this node's certificate: give --tls-ca, --tls-cert and --tls-key (not --insecure-dev)"
    )]
    ApiTlsWithoutFiles,
    #[error("cannot read the API tokens file {path}: {source}")]
    ReadTokens {
        path: String,
        source: std::io::Error,
    },
    #[error("API tokens file {path}: {source}")]
    Tokens {
        path: String,
        source: mesh_protocol::token::TokenError,
    },
    #[error("API tokens file {0} holds no token; add one with `meshctl token create`")]
    NoTokens(String),
    #[error("--gossip-interval-ms must be between 50 and 60000")]
    GossipInterval,
    #[error("--phi-threshold must be between 1 and 100")]
    Phi,
    #[error("--fence-after must be between 1 and 3600 seconds")]
    FenceAfter,
    #[error(transparent)]
    ServicePorts(#[from] crate::services::port_range::PortRangeError),
    #[error("{0} must be at least 1")]
    MaxConnections(&'static str),
    #[error("--retain-finished {0:?}: give a duration such as 24h, 90m, 7d or 3600 (seconds)")]
    RetainFinished(String),
    #[error("--retain-finished-records must be at least 1")]
    RetainRecords,
    #[error("--max-log-bytes {0:?}: give a size from 1K, such as 16M, 1G or 65536 (bytes)")]
    MaxLogBytes(String),
    #[error("--image-gc {0:?}: give a size from 1M, such as 10GiB, 500M or 1T")]
    ImageGc(String),
    #[error("--image-gc-idle {0:?}: give a duration such as 1h, 30m, 2d or 600 (seconds)")]
    ImageGcIdle(String),
    #[error("--image-gc-idle and --image-gc-all need --image-gc SIZE")]
    ImageGcOff,
    #[error("--image-source: {0}")]
    ImageSource(String),
}
