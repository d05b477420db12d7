//! A valid service definition, `ServiceSpec`, and the one validation that
//! makes it: from `ServiceFields`, the definition's fields as they are
//! stored and gossiped. Every way in goes through `ServiceSpec::try_from`:
//! the API (`ServiceRequest`, parsed into fields first), the gossip and
//! `services.json` (deserialising a `ServiceSpec` validates), so a
//! `ServiceSpec` never holds what the API would refuse.

use std::ops::Deref;

use crate::image::PullPolicy;
use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_IDLE_TIMEOUT_MS, Instances, MAX_IDLE_MS, MAX_INSTANCES, MAX_PER_NODE, MAX_QUEUE,
    MAX_READY_RETRIES, MAX_TOTAL_MS, MAX_WAIT_MS, MAX_WARM, Mode, ServiceError,
};
use crate::ids::ServiceName;
use crate::resources::{CoreCount, MemoryBytes};

/// A definition's fields with every default filled in, not yet validated:
/// what a `ServiceSpec` is made from and serialises to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFields {
    pub name: ServiceName,
    pub image: String,
    pub port: u16,
    pub listen: u16,
    pub mode: Mode,
    /// Cores each container holds, all on one NUMA node (per-numa pools:
    /// the whole node, decided where it runs; then 1 here).
    pub cores: CoreCount,
    pub memory: Option<MemoryBytes>,
    pub warm: u32,
    pub max_per_node: u32,
    pub queue: u32,
    pub queue_timeout_ms: u64,
    pub ready_timeout_ms: u64,
    pub ready_retries: u32,
    /// Pool mode only.
    pub instances: Option<Instances>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A client connection idle this long is closed. (Definitions from
    /// before this field get the default.)
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u64,
    /// A client connection open this long is closed; `None`: no limit.
    #[serde(default)]
    pub total_timeout_ms: Option<u64>,
    /// When each node pulls the image. (Definitions from before this field
    /// get the default, `missing`.)
    #[serde(default)]
    pub pull: PullPolicy,
}

fn default_idle() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}

/// A valid service definition: made only by `try_from` (from fields or a
/// request) or by deserialising, both of which validate; read through its
/// fields (`spec.warm`), never changed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ServiceFields")]
pub struct ServiceSpec(ServiceFields);

impl Deref for ServiceSpec {
    type Target = ServiceFields;

    fn deref(&self) -> &ServiceFields {
        &self.0
    }
}

impl Serialize for ServiceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl ServiceSpec {
    /// Its fields, e.g. to change one and validate again.
    pub fn fields(&self) -> &ServiceFields {
        &self.0
    }
}

impl TryFrom<ServiceFields> for ServiceSpec {
    type Error = ServiceError;

    /// The one validation of a definition (the API's and the gossip's).
    fn try_from(f: ServiceFields) -> Result<Self, ServiceError> {
        if f.image.trim().is_empty() {
            return Err(ServiceError::NoImage);
        }
        crate::image::ImageRef::parse(&f.image)?;
        if f.port == 0 {
            return Err(ServiceError::NoPort {
                which: "container",
                what: "the container listens on (--port)",
            });
        }
        if f.listen == 0 {
            return Err(ServiceError::NoPort {
                which: "listen",
                what: "every agent listens on for clients (--listen)",
            });
        }
        match (f.mode, f.instances) {
            (Mode::PerConnection, Some(_)) => {
                return Err(ServiceError::WrongMode("--instances", "pool"));
            }
            (Mode::Pool, None) => {
                return Err(ServiceError::Invalid(
                    "a pool needs --instances (per-core, per-numa or a count)".into(),
                ));
            }
            (_, Some(Instances::Count(n))) if !(1..=MAX_INSTANCES).contains(&n) => {
                return Err(ServiceError::Instances(n.to_string()));
            }
            (_, Some(Instances::PerCore)) if f.cores.get() != 1 => {
                return Err(ServiceError::Invalid(format!(
                    "--instances per-core runs single-core instances; --cores {} contradicts it",
                    f.cores
                )));
            }
            (_, Some(Instances::PerNuma)) if f.cores.get() != 1 => {
                return Err(ServiceError::Invalid(
                    "--instances per-numa gives each instance a whole NUMA node; drop --cores"
                        .into(),
                ));
            }
            _ => {}
        }
        if f.mode == Mode::Pool && f.warm > 0 {
            return Err(ServiceError::WrongMode("--warm", "per-connection"));
        }
        if f.max_per_node == 0 {
            return Err(ServiceError::Invalid(
                "--max-per-node 0 would serve nothing".into(),
            ));
        }
        above("--max-per-node", f.max_per_node.into(), MAX_PER_NODE.into())?;
        above("--warm", f.warm.into(), MAX_WARM.into())?;
        if f.warm > f.max_per_node {
            return Err(ServiceError::Invalid(format!(
                "--warm {} exceeds --max-per-node {} (warm containers count)",
                f.warm, f.max_per_node
            )));
        }
        above("--queue", f.queue.into(), MAX_QUEUE.into())?;
        wait(f.queue_timeout_ms, "--queue-timeout")?;
        wait(f.ready_timeout_ms, "--ready-timeout")?;
        above(
            "--ready-retries",
            f.ready_retries.into(),
            MAX_READY_RETRIES.into(),
        )?;
        match f.idle_timeout_ms {
            0 => {
                return Err(ServiceError::Invalid(
                    "--idle-timeout must be above 0".into(),
                ));
            }
            ms if ms > MAX_IDLE_MS => {
                return Err(ServiceError::Invalid(format!(
                    "--idle-timeout {ms} ms is above the limit of a day"
                )));
            }
            _ => {}
        }
        match f.total_timeout_ms {
            Some(0) => {
                return Err(ServiceError::Invalid(
                    "--total-timeout must be above 0 (leave it out for no limit)".into(),
                ));
            }
            Some(ms) if ms > MAX_TOTAL_MS => {
                return Err(ServiceError::Invalid(format!(
                    "--total-timeout {ms} ms is above the limit of a week"
                )));
            }
            _ => {}
        }
        if let Some((k, v)) = f.env.iter().find(|(k, _)| k.is_empty() || k.contains('=')) {
            return Err(ServiceError::Env(format!("{k}={v}")));
        }
        Ok(Self(f))
    }
}

fn above(flag: &'static str, value: u64, limit: u64) -> Result<(), ServiceError> {
    if value > limit {
        return Err(ServiceError::AboveLimit { flag, value, limit });
    }
    Ok(())
}

fn wait(ms: u64, flag: &str) -> Result<(), ServiceError> {
    match ms {
        0 => Err(ServiceError::Invalid(format!("{flag} must be above 0"))),
        ms if ms > MAX_WAIT_MS => Err(ServiceError::Invalid(format!(
            "{flag} {ms} ms is above the limit of an hour"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::service::ServiceRequest;

    fn valid() -> ServiceFields {
        ServiceSpec::try_from(ServiceRequest {
            name: "echo".into(),
            image: "img".into(),
            port: 7000,
            listen: 9000,
            ..Default::default()
        })
        .unwrap()
        .fields()
        .clone()
    }

    #[test]
    fn limits_are_named_in_the_error() {
        let bad = |change: fn(&mut ServiceFields)| {
            let mut f = valid();
            change(&mut f);
            ServiceSpec::try_from(f).unwrap_err().to_string()
        };
        let e = bad(|f| f.max_per_node = 4_000_000_000);
        assert!(e.contains("--max-per-node") && e.contains("4096"), "{e}");
        let e = bad(|f| {
            f.max_per_node = MAX_PER_NODE;
            f.warm = MAX_PER_NODE;
        });
        assert!(e.contains("--warm") && e.contains("256"), "{e}");
        let e = bad(|f| f.ready_timeout_ms = u64::MAX);
        assert!(e.contains("--ready-timeout"), "{e}");
        let e = bad(|f| f.queue_timeout_ms = u64::MAX);
        assert!(e.contains("--queue-timeout"), "{e}");
        let e = bad(|f| f.ready_retries = u32::MAX);
        assert!(e.contains("--ready-retries") && e.contains("100"), "{e}");
        let e = bad(|f| {
            f.mode = Mode::Pool;
            f.instances = Some(Instances::Count(u32::MAX));
        });
        assert!(e.contains("instances"), "{e}");
        let e = bad(|f| f.env = vec![("A=B".into(), "C".into())]);
        assert!(e.contains("KEY=VALUE"), "{e}");
        let e = bad(|f| f.mode = Mode::Pool);
        assert!(e.contains("--instances"), "{e}");
    }

    #[test]
    fn deserialising_validates() {
        let mut json = serde_json::to_value(valid()).unwrap();
        let spec: ServiceSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(spec.fields(), &valid());
        json["ready_timeout_ms"] = u64::MAX.into();
        let e = serde_json::from_value::<ServiceSpec>(json).unwrap_err();
        assert!(e.to_string().contains("--ready-timeout"), "{e}");
    }

    fn fields() -> impl Strategy<Value = ServiceFields> {
        let mode = prop_oneof![Just(Mode::PerConnection), Just(Mode::Pool)];
        let instances = prop_oneof![
            Just(None),
            Just(Some(Instances::PerCore)),
            Just(Some(Instances::PerNuma)),
            any::<u32>().prop_map(|n| Some(Instances::Count(n % 20_000))),
            any::<u32>().prop_map(|n| Some(Instances::Count(n))),
        ];
        let small = prop_oneof![0u32..300, 0u32..5000, any::<u32>()];
        let ms = prop_oneof![0u64..10_000, 0u64..=2 * MAX_WAIT_MS, any::<u64>()];
        (
            (mode, instances, 1u32..=4, small.clone(), small.clone()),
            (small.clone(), ms.clone(), ms, small),
            (any::<u16>(), any::<u16>(), "[a-z=]{0,3}"),
        )
            .prop_map(
                |(
                    (mode, instances, cores, warm, max_per_node),
                    (queue, queue_timeout_ms, ready_timeout_ms, ready_retries),
                    (port, listen, key),
                )| ServiceFields {
                    mode,
                    instances,
                    cores: CoreCount::new(cores).unwrap(),
                    warm,
                    max_per_node,
                    queue,
                    queue_timeout_ms,
                    ready_timeout_ms,
                    ready_retries,
                    port,
                    listen,
                    env: vec![(key, "v".into())],
                    ..valid()
                },
            )
    }

    proptest! {
        /// Whatever the fields, a spec that validates stays within every
        /// limit, and the time and counts it holds do not overflow what the
        /// agent computes from them.
        #[test]
        fn a_valid_spec_is_within_every_limit(f in fields()) {
            if let Ok(s) = ServiceSpec::try_from(f.clone()) {
                prop_assert!(s.max_per_node >= 1 && s.max_per_node <= MAX_PER_NODE);
                prop_assert!(s.warm <= MAX_WARM.min(s.max_per_node));
                prop_assert!(s.queue <= MAX_QUEUE);
                prop_assert!((1..=MAX_WAIT_MS).contains(&s.queue_timeout_ms));
                prop_assert!((1..=MAX_WAIT_MS).contains(&s.ready_timeout_ms));
                prop_assert!(s.ready_retries <= MAX_READY_RETRIES);
                match (s.mode, s.instances) {
                    (Mode::PerConnection, None) => {}
                    (Mode::Pool, Some(Instances::Count(n))) => {
                        prop_assert!((1..=MAX_INSTANCES).contains(&n));
                    }
                    (Mode::Pool, Some(_)) => prop_assert_eq!(s.cores.get(), 1),
                    other => prop_assert!(false, "{other:?}"),
                }
                prop_assert!(s.port != 0 && s.listen != 0);
                prop_assert!(s.env.iter().all(|(k, _)| !k.is_empty() && !k.contains('=')));
                // What a stored or gossiped copy reads back is the same spec.
                let back: ServiceSpec =
                    serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
                prop_assert_eq!(back, s);
            } else {
                // Refused fields are refused when deserialised too.
                let json = serde_json::to_string(&f).unwrap();
                prop_assert!(serde_json::from_str::<ServiceSpec>(&json).is_err());
            }
        }
    }
}
