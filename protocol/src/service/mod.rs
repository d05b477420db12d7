//! Services: long-lived TCP endpoints the mesh serves with containers. A
//! definition (`ServiceSpec`, in `spec`) is validated once, by one function,
//! whether it comes from a client's `ServiceRequest`, the gossip or the
//! disk; `defs` merges definitions spread by gossip; `choice` decides where
//! a connection goes and how many pool instances a node runs; `image` is a
//! service's image on each node, and `prepull` when a node pulls it.

pub mod choice;
pub mod defs;
pub mod image;
pub mod prepull;
mod spec;

use serde::{Deserialize, Serialize};

use crate::ids::{IdError, ServiceName};
use crate::resources::{CoreCount, ResourceError};

pub use defs::ServiceDef;
pub use spec::{ServiceFields, ServiceSpec};

/// How connections meet containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// A fresh container per connection, removed when it closes.
    PerConnection,
    /// Long-running instances shared by connections (least connections).
    Pool,
}

/// How many pool instances the mesh runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instances {
    /// One single-core instance per core of every live node.
    PerCore,
    /// One instance per NUMA node of every live node, holding all its cores.
    PerNuma,
    /// This many in all, spread over the live nodes.
    Count(u32),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::PerConnection => "per-connection",
            Mode::Pool => "pool",
        })
    }
}

impl std::fmt::Display for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Instances::PerCore => f.write_str("per-core"),
            Instances::PerNuma => f.write_str("per-numa"),
            Instances::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Defaults a user gets without the flag.
pub const DEFAULT_MAX_PER_NODE: u32 = 64;
pub const DEFAULT_QUEUE: u32 = 128;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_READY_RETRIES: u32 = 2;
/// A client connection with no byte either way for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 600_000;
/// Bounds that keep one definition from taking the mesh down (it is served
/// by every node). A node holds at most `MAX_PER_NODE` containers of a
/// service (each holds a core at least, and no host has more than
/// `resources::MAX_CORES`), of which at most `MAX_WARM` warm ones.
pub const MAX_PER_NODE: u32 = 4096;
pub const MAX_WARM: u32 = 256;
pub const MAX_INSTANCES: u32 = 10_000;
pub const MAX_WAIT_MS: u64 = 3_600_000;
pub const MAX_QUEUE: u32 = 100_000;
pub const MAX_READY_RETRIES: u32 = 100;
/// Longest idle timeout: a day.
pub const MAX_IDLE_MS: u64 = 86_400_000;
/// Longest total timeout: a week.
pub const MAX_TOTAL_MS: u64 = 7 * 86_400_000;

/// A service definition as a client sends it (JSON body of
/// `POST /v1/services`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRequest {
    pub name: String,
    pub image: String,
    /// The port the container listens on.
    pub port: u16,
    /// The port every agent listens on for clients.
    pub listen: u16,
    /// `per-connection` (default) or `pool`.
    pub mode: Option<String>,
    pub cores: Option<u32>,
    pub memory: Option<String>,
    pub warm: Option<u32>,
    pub max_per_node: Option<u32>,
    pub queue: Option<u32>,
    pub queue_timeout_ms: Option<u64>,
    pub ready_timeout_ms: Option<u64>,
    pub ready_retries: Option<u32>,
    /// Close a client connection idle (no byte either way) this long.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Close a client connection open this long, busy or not (none: no
    /// limit).
    #[serde(default)]
    pub total_timeout_ms: Option<u64>,
    /// Pool mode: `per-core`, `per-numa` or a count.
    pub instances: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// When each node pulls the image: `missing` (default), `always`, `never`.
    #[serde(default)]
    pub pull: Option<crate::image::PullPolicy>,
}

/// Why a definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Name(#[from] IdError),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error("image is empty")]
    NoImage,
    #[error(transparent)]
    Image(#[from] crate::image::ImageRefError),
    #[error("{which} port is 0; give the port {what}")]
    NoPort {
        which: &'static str,
        what: &'static str,
    },
    #[error("mode {0:?} is unknown; use per-connection or pool")]
    Mode(String),
    #[error(
        "instances {0:?} is invalid; use per-core, per-numa or a count from 1 to {MAX_INSTANCES}"
    )]
    Instances(String),
    #[error("{0} only applies to {1} mode")]
    WrongMode(&'static str, &'static str),
    #[error("{flag} {value} is above the limit of {limit}")]
    AboveLimit {
        flag: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("env entry {0:?} is not KEY=VALUE")]
    Env(String),
}

impl TryFrom<ServiceRequest> for ServiceSpec {
    type Error = ServiceError;

    /// Parses the request's words and fills in the defaults; the values
    /// are then checked by the one validation, `ServiceSpec::try_from`
    /// of `ServiceFields`.
    fn try_from(r: ServiceRequest) -> Result<Self, Self::Error> {
        let name = ServiceName::new(r.name)?;
        let mode = match r.mode.as_deref().unwrap_or("per-connection") {
            "per-connection" => Mode::PerConnection,
            "pool" => Mode::Pool,
            other => return Err(ServiceError::Mode(other.into())),
        };
        let instances = match (mode, r.instances.as_deref()) {
            (Mode::PerConnection, None) => None,
            (Mode::Pool, None) | (_, Some("per-core")) => Some(Instances::PerCore),
            (_, Some("per-numa")) => Some(Instances::PerNuma),
            (_, Some(n)) => Some(Instances::Count(
                n.parse::<u32>()
                    .map_err(|_| ServiceError::Instances(n.into()))?,
            )),
        };
        if instances == Some(Instances::PerNuma) && r.cores.is_some() {
            return Err(ServiceError::Invalid(
                "--instances per-numa gives each instance a whole NUMA node; drop --cores".into(),
            ));
        }
        let cores = CoreCount::new(r.cores.unwrap_or(1))?;
        let memory = r.memory.as_deref().map(str::parse).transpose()?;
        let env = r
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err(ServiceError::Env(e.clone())),
            })
            .collect::<Result<_, _>>()?;
        ServiceSpec::try_from(ServiceFields {
            name,
            image: r.image,
            port: r.port,
            listen: r.listen,
            mode,
            cores,
            memory,
            warm: r.warm.unwrap_or(0),
            max_per_node: r.max_per_node.unwrap_or(DEFAULT_MAX_PER_NODE),
            queue: r.queue.unwrap_or(DEFAULT_QUEUE),
            queue_timeout_ms: r.queue_timeout_ms.unwrap_or(DEFAULT_QUEUE_TIMEOUT_MS),
            ready_timeout_ms: r.ready_timeout_ms.unwrap_or(DEFAULT_READY_TIMEOUT_MS),
            ready_retries: r.ready_retries.unwrap_or(DEFAULT_READY_RETRIES),
            instances,
            command: r.command,
            env,
            idle_timeout_ms: r.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
            total_timeout_ms: r.total_timeout_ms,
            pull: r.pull.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ServiceRequest {
        ServiceRequest {
            name: "echo".into(),
            image: "mesh-testsvc".into(),
            port: 7000,
            listen: 9000,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_make_a_per_connection_service() {
        let s = ServiceSpec::try_from(req()).unwrap();
        assert_eq!(s.mode, Mode::PerConnection);
        assert_eq!(s.cores.get(), 1);
        assert_eq!(s.instances, None);
        assert_eq!(s.max_per_node, DEFAULT_MAX_PER_NODE);
        assert_eq!(s.ready_retries, DEFAULT_READY_RETRIES);
        assert_eq!(
            (s.idle_timeout_ms, s.total_timeout_ms),
            (DEFAULT_IDLE_TIMEOUT_MS, None)
        );
    }

    #[test]
    fn timeouts_are_bounded_and_old_definitions_get_the_default_idle_timeout() {
        let with = |idle, total| {
            ServiceSpec::try_from(ServiceRequest {
                idle_timeout_ms: idle,
                total_timeout_ms: total,
                ..req()
            })
        };
        let s = with(Some(500), Some(60_000)).unwrap();
        assert_eq!((s.idle_timeout_ms, s.total_timeout_ms), (500, Some(60_000)));
        for (idle, total, says) in [
            (Some(0), None, "--idle-timeout"),
            (Some(MAX_IDLE_MS + 1), None, "--idle-timeout"),
            (None, Some(0), "--total-timeout"),
            (None, Some(MAX_TOTAL_MS + 1), "--total-timeout"),
        ] {
            let e = with(idle, total).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        // A definition stored or gossiped before the fields existed.
        let mut old = serde_json::to_value(ServiceSpec::try_from(req()).unwrap()).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("idle_timeout_ms");
        fields.remove("total_timeout_ms");
        let old: ServiceSpec = serde_json::from_value(old).unwrap();
        assert_eq!(
            (old.idle_timeout_ms, old.total_timeout_ms),
            (DEFAULT_IDLE_TIMEOUT_MS, None)
        );
    }

    #[test]
    fn pool_modes_parse() {
        let pool = |i: Option<&str>| {
            ServiceSpec::try_from(ServiceRequest {
                mode: Some("pool".into()),
                instances: i.map(Into::into),
                ..req()
            })
        };
        assert_eq!(pool(None).unwrap().instances, Some(Instances::PerCore));
        assert_eq!(
            pool(Some("per-numa")).unwrap().instances,
            Some(Instances::PerNuma)
        );
        assert_eq!(
            pool(Some("6")).unwrap().instances,
            Some(Instances::Count(6))
        );
        assert!(matches!(pool(Some("0")), Err(ServiceError::Instances(_))));
        assert!(matches!(
            pool(Some("many")),
            Err(ServiceError::Instances(_))
        ));
    }

    #[test]
    fn invalid_definitions_say_why() {
        let bad = |r: ServiceRequest| ServiceSpec::try_from(r).unwrap_err().to_string();
        assert!(
            bad(ServiceRequest {
                name: "a b".into(),
                ..req()
            })
            .contains("character")
        );
        assert!(
            bad(ServiceRequest {
                image: " ".into(),
                ..req()
            })
            .contains("image")
        );
        assert!(bad(ServiceRequest { port: 0, ..req() }).contains("--port"));
        assert!(bad(ServiceRequest { listen: 0, ..req() }).contains("--listen"));
        assert!(
            bad(ServiceRequest {
                mode: Some("x".into()),
                ..req()
            })
            .contains("per-connection or pool")
        );
        assert!(
            bad(ServiceRequest {
                instances: Some("4".into()),
                ..req()
            })
            .contains("pool")
        );
        assert!(
            bad(ServiceRequest {
                warm: Some(9),
                max_per_node: Some(2),
                ..req()
            })
            .contains("--warm")
        );
        assert!(
            bad(ServiceRequest {
                cores: Some(0),
                ..req()
            })
            .contains("0")
        );
        assert!(
            bad(ServiceRequest {
                max_per_node: Some(0),
                ..req()
            })
            .contains("--max-per-node")
        );
        assert!(
            bad(ServiceRequest {
                queue_timeout_ms: Some(0),
                ..req()
            })
            .contains("--queue-timeout")
        );
        assert!(
            bad(ServiceRequest {
                env: vec!["NOEQ".into()],
                ..req()
            })
            .contains("KEY=VALUE")
        );
        assert!(
            bad(ServiceRequest {
                mode: Some("pool".into()),
                instances: Some("per-core".into()),
                cores: Some(2),
                ..req()
            })
            .contains("per-core")
        );
        assert!(
            bad(ServiceRequest {
                mode: Some("pool".into()),
                warm: Some(1),
                ..req()
            })
            .contains("--warm")
        );
        // Limits are named: one API call cannot make every node start
        // billions of containers or wait forever.
        let e = bad(ServiceRequest {
            warm: Some(4_000_000_000),
            max_per_node: Some(4_000_000_000),
            ..req()
        });
        assert!(e.contains("--max-per-node") && e.contains("4096"), "{e}");
        let e = bad(ServiceRequest {
            warm: Some(1000),
            max_per_node: Some(MAX_PER_NODE),
            ..req()
        });
        assert!(e.contains("--warm 1000 is above the limit of 256"), "{e}");
        let e = bad(ServiceRequest {
            ready_timeout_ms: Some(u64::MAX),
            ..req()
        });
        assert!(e.contains("--ready-timeout"), "{e}");
        let e = bad(ServiceRequest {
            mode: Some("pool".into()),
            instances: Some(u32::MAX.to_string()),
            ..req()
        });
        assert!(e.contains("instances"), "{e}");
        assert!(
            ServiceSpec::try_from(ServiceRequest {
                warm: Some(MAX_WARM),
                max_per_node: Some(MAX_PER_NODE),
                ..req()
            })
            .is_ok(),
            "the limits themselves are allowed"
        );
    }
}
