//! Service definitions as the mesh spreads them: every agent publishes every
//! definition it knows under `svcdef.NAME` in its gossip state, and keeps
//! the newest of each name (last writer wins on `revision`, the creating
//! node's clock; removal is a tombstone with a newer revision). A node that
//! joins later reads them from any peer.
//!
//! A definition read from a peer or from the disk is validated as the API
//! validates one (deserialising a `ServiceDef` does it), and its revision
//! is bounded: at most `MAX_REVISION` always, and from the gossip at most
//! `MAX_AHEAD_MS` ahead of this node's clock, so that no definition can be
//! made that nothing newer ever supersedes.

use serde::{Deserialize, Serialize};

use super::{ServiceError, ServiceFields, ServiceSpec};
use crate::ids::{ServiceName, UserName};

/// Gossip key prefix of a definition.
pub const KEY_PREFIX: &str = "svcdef.";

/// The highest revision: 2^53 - 1 ms after the epoch (the year 287,396),
/// the largest integer a JSON number holds exactly. `revision + 1` never
/// wraps.
pub const MAX_REVISION: u64 = (1 << 53) - 1;

/// How far ahead of this node's clock a gossiped revision may be: the clock
/// difference between nodes that the mesh tolerates. A definition further
/// ahead is ignored (with a warning) until this node's clock catches up.
pub const MAX_AHEAD_MS: u64 = 10 * 60 * 1000;

/// One revision of a service's definition. Deserialising one validates it
/// (see `DefError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DefFields")]
pub struct ServiceDef {
    pub spec: ServiceSpec,
    /// Milliseconds since the epoch when it was created or removed (or the
    /// previous revision + 1, if that is higher); at most `MAX_REVISION`.
    pub revision: u64,
    /// A tombstone: the service was removed at `revision`.
    pub removed: bool,
    /// The API user who created it: only they or an admin may remove it.
    /// Definitions from before owners were kept have `unknown`.
    pub owner: UserName,
}

/// A `ServiceDef` as stored and gossiped, not yet validated.
#[derive(Debug, Clone, Deserialize)]
struct DefFields {
    spec: ServiceFields,
    revision: u64,
    removed: bool,
    #[serde(default = "crate::auth::unknown_owner")]
    owner: UserName,
}

/// Why a stored or gossiped definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefError {
    #[error("not a service definition: {0}")]
    Malformed(String),
    #[error(transparent)]
    Invalid(#[from] ServiceError),
    #[error("revision {0} is above the limit of {MAX_REVISION}")]
    Revision(u64),
    #[error("published under the key of service {key:?}")]
    Name { key: String },
    #[error(
        "revision {revision} is {ahead_ms} ms ahead of this node's clock (at most {MAX_AHEAD_MS} ms is taken): check the nodes' clocks"
    )]
    Ahead { revision: u64, ahead_ms: u64 },
}

/// A gossiped definition that was refused: for which service (as its key
/// says), which revision (if one could be read) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub service: String,
    pub revision: Option<u64>,
    pub error: DefError,
}

/// A stored list of definitions, read: the valid ones in the stored order,
/// and the refused ones as stored, with why.
#[derive(Debug, Default)]
pub struct Stored {
    pub valid: Vec<ServiceDef>,
    pub refused: Vec<(serde_json::Value, DefError)>,
}

impl TryFrom<DefFields> for ServiceDef {
    type Error = DefError;

    fn try_from(f: DefFields) -> Result<Self, DefError> {
        let spec = ServiceSpec::try_from(f.spec)?;
        if f.revision > MAX_REVISION {
            return Err(DefError::Revision(f.revision));
        }
        Ok(ServiceDef {
            spec,
            revision: f.revision,
            removed: f.removed,
            owner: f.owner,
        })
    }
}

impl ServiceDef {
    pub fn name(&self) -> &ServiceName {
        &self.spec.name
    }

    /// The gossip key this definition is published under.
    pub fn key(&self) -> String {
        format!("{KEY_PREFIX}{}", self.spec.name)
    }

    /// The revision of a change made at `now_ms` to a name whose newest
    /// definition is `previous`: newer than it, at most `MAX_REVISION`.
    pub fn next_revision(previous: Option<&ServiceDef>, now_ms: u64) -> u64 {
        previous
            .map_or(0, |p| p.revision.saturating_add(1))
            .max(now_ms)
            .min(MAX_REVISION)
    }

    /// Whether `self` should replace `other` (same name). Ties on revision
    /// break on removal, then on the encoded value, so every node picks the
    /// same winner whatever order it hears them in.
    pub fn supersedes(&self, other: &ServiceDef) -> bool {
        (self.revision, self.removed, self.encode())
            > (other.revision, other.removed, other.encode())
    }

    pub fn encode(&self) -> String {
        // A struct of plain fields always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored definition (one entry of `services.json`).
    pub fn from_json(value: serde_json::Value) -> Result<ServiceDef, DefError> {
        let fields: DefFields =
            serde_json::from_value(value).map_err(|e| DefError::Malformed(e.to_string()))?;
        ServiceDef::try_from(fields)
    }

    /// Reads a stored list of definitions (the bytes of `services.json`):
    /// the valid ones, and each refused one with why. Bytes that are not a
    /// JSON list at all are an error.
    pub fn read_stored(bytes: &[u8]) -> Result<Stored, serde_json::Error> {
        let list: Vec<serde_json::Value> = serde_json::from_slice(bytes)?;
        let mut stored = Stored::default();
        for value in list {
            match ServiceDef::from_json(value.clone()) {
                Ok(def) => stored.valid.push(def),
                Err(e) => stored.refused.push((value, e)),
            }
        }
        Ok(stored)
    }

    /// Reads a gossip value published under `key` (which starts with
    /// `KEY_PREFIX`), heard when this node's clock says `now_ms`.
    pub fn from_gossip(key: &str, value: &str, now_ms: u64) -> Result<ServiceDef, Refused> {
        let service = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
        let json: Result<serde_json::Value, _> = serde_json::from_str(value);
        let revision = json.as_ref().ok().and_then(|j| j.get("revision")?.as_u64());
        let refuse = |error| Refused {
            service: service.chars().take(64).collect(),
            revision,
            error,
        };
        let json = json.map_err(|e| refuse(DefError::Malformed(e.to_string())))?;
        let def = ServiceDef::from_json(json).map_err(refuse)?;
        if def.spec.name.as_str() != service || !key.starts_with(KEY_PREFIX) {
            return Err(refuse(DefError::Name {
                key: key.chars().take(64).collect(),
            }));
        }
        if def.revision > now_ms.saturating_add(MAX_AHEAD_MS) {
            return Err(refuse(DefError::Ahead {
                revision: def.revision,
                ahead_ms: def.revision - now_ms,
            }));
        }
        Ok(def)
    }
}

/// Merges `incoming` into `known`; returns the definitions that changed
/// (to store and serve).
pub fn merge(
    known: &mut std::collections::BTreeMap<ServiceName, ServiceDef>,
    incoming: impl IntoIterator<Item = ServiceDef>,
) -> Vec<ServiceDef> {
    let mut changed = Vec::new();
    for def in incoming {
        let newer = known.get(def.name()).is_none_or(|k| def.supersedes(k));
        if newer {
            known.insert(def.name().clone(), def.clone());
            changed.retain(|c: &ServiceDef| c.name() != def.name());
            changed.push(def);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::service::{ServiceRequest, ServiceSpec};

    fn def(name: &str, listen: u16, revision: u64, removed: bool) -> ServiceDef {
        ServiceDef {
            spec: ServiceSpec::try_from(ServiceRequest {
                name: name.into(),
                image: "img".into(),
                port: 80,
                listen,
                ..Default::default()
            })
            .unwrap(),
            revision,
            removed,
            owner: crate::auth::unknown_owner(),
        }
    }

    #[test]
    fn newest_wins_in_any_order_and_tombstones_stick() {
        let a = def("web", 8000, 1, false);
        let b = def("web", 8001, 2, false);
        let gone = def("web", 8001, 3, true);
        let orders = [
            vec![a.clone(), b.clone(), gone.clone()],
            vec![gone.clone(), a.clone(), b.clone()],
            vec![b.clone(), gone.clone(), a.clone()],
        ];
        for order in orders {
            let mut known = BTreeMap::new();
            merge(&mut known, order);
            assert_eq!(known.values().next(), Some(&gone));
        }
        // Re-created after removal: a newer revision brings it back.
        let again = def("web", 8002, 4, false);
        let mut known = BTreeMap::new();
        merge(&mut known, [gone.clone()]);
        assert_eq!(merge(&mut known, [again.clone()]), vec![again]);
        assert!(merge(&mut known, [gone]).is_empty());
    }

    #[test]
    fn equal_revisions_pick_one_winner_everywhere() {
        let x = def("web", 8000, 5, false);
        let y = def("web", 9000, 5, false);
        assert_ne!(x.supersedes(&y), y.supersedes(&x));
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn gossip_values_round_trip_and_garbage_is_refused() {
        let d = def("web", 8000, 7, false);
        let read = |key: &str, value: &str| ServiceDef::from_gossip(key, value, NOW);
        assert_eq!(read(&d.key(), &d.encode()), Ok(d.clone()));
        let other = read("svcdef.other", &d.encode()).unwrap_err();
        assert_eq!((other.service.as_str(), other.revision), ("other", Some(7)));
        assert!(matches!(other.error, DefError::Name { .. }), "{other:?}");
        let garbage = read(&d.key(), "{not json").unwrap_err();
        assert!(matches!(garbage.error, DefError::Malformed(_)));
        assert_eq!((garbage.service.as_str(), garbage.revision), ("web", None));
        assert!(read("load", &d.encode()).is_err());
    }

    /// A peer's definition with what the API refuses (issue: it panicked
    /// the agent, or made it start containers without end) is refused,
    /// naming what is wrong and which revision it was.
    #[test]
    fn gossiped_definitions_are_validated_as_the_api_validates() {
        let d = def("web", 8000, 7, false);
        let with = |field: &str, value: serde_json::Value| {
            let mut json: serde_json::Value = serde_json::from_str(&d.encode()).unwrap();
            json["spec"][field] = value;
            ServiceDef::from_gossip(&d.key(), &json.to_string(), NOW).unwrap_err()
        };
        for (field, value, says) in [
            ("ready_timeout_ms", u64::MAX.into(), "--ready-timeout"),
            ("queue_timeout_ms", u64::MAX.into(), "--queue-timeout"),
            ("ready_retries", u32::MAX.into(), "--ready-retries"),
            ("max_per_node", 4_000_000_000u32.into(), "--max-per-node"),
            ("warm", 300.into(), "--warm"),
            ("max_per_node", 0.into(), "--max-per-node"),
            ("port", 0.into(), "--port"),
            ("image", "".into(), "image"),
            ("cores", 0.into(), "cores"),
            ("memory", 1.into(), "memory"),
            ("name", "a b".into(), "character"),
        ] {
            let refused = with(field, value);
            assert_eq!(refused.revision, Some(7));
            assert!(
                refused.error.to_string().contains(says),
                "{field}: {refused:?}"
            );
        }
        let mut json: serde_json::Value = serde_json::from_str(&d.encode()).unwrap();
        json["spec"]["mode"] = "Pool".into();
        json["spec"]["instances"] = serde_json::json!({"Count": u32::MAX});
        let refused = ServiceDef::from_gossip(&d.key(), &json.to_string(), NOW).unwrap_err();
        assert!(matches!(
            refused.error,
            DefError::Invalid(ServiceError::Instances(_))
        ));
    }

    #[test]
    fn revisions_are_bounded() {
        let at = |revision: u64| {
            let mut json: serde_json::Value =
                serde_json::from_str(&def("web", 8000, 1, false).encode()).unwrap();
            json["revision"] = revision.into();
            ServiceDef::from_gossip("svcdef.web", &json.to_string(), NOW)
        };
        assert!(matches!(
            at(u64::MAX).unwrap_err().error,
            DefError::Revision(_)
        ));
        assert!(matches!(
            at(MAX_REVISION).unwrap_err().error,
            DefError::Ahead { .. }
        ));
        assert!(matches!(
            at(NOW + MAX_AHEAD_MS + 1).unwrap_err().error,
            DefError::Ahead { ahead_ms, .. } if ahead_ms == MAX_AHEAD_MS + 1
        ));
        assert!(
            at(NOW + MAX_AHEAD_MS).is_ok(),
            "within the clock skew taken"
        );
        // The disk takes any revision up to the limit (this node's clock
        // may have gone back since it stored it).
        let stored = |revision: u64| {
            let mut json: serde_json::Value =
                serde_json::from_str(&def("web", 8000, 1, false).encode()).unwrap();
            json["revision"] = revision.into();
            ServiceDef::from_json(json)
        };
        assert!(stored(MAX_REVISION).is_ok());
        assert!(matches!(
            stored(MAX_REVISION + 1),
            Err(DefError::Revision(_))
        ));
        // A change to the newest possible revision does not wrap.
        let top = stored(MAX_REVISION).unwrap();
        assert_eq!(ServiceDef::next_revision(Some(&top), NOW), MAX_REVISION);
        assert_eq!(ServiceDef::next_revision(None, NOW), NOW);
        let old = def("web", 8000, NOW + 5, false);
        assert_eq!(ServiceDef::next_revision(Some(&old), NOW), NOW + 6);
    }

    proptest::proptest! {
        #[test]
        fn any_gossip_value_is_read_or_refused_without_panicking(
            key in "(svcdef\\.)?[a-z]{0,4}",
            value in ".{0,200}",
            now in proptest::prelude::any::<u64>(),
        ) {
            let _ = ServiceDef::from_gossip(&key, &value, now);
        }

        /// Numbers anywhere in a definition: what is read back is valid
        /// (it validates again), whatever was sent.
        #[test]
        fn numbers_from_a_peer_never_make_an_invalid_definition(
            field in proptest::sample::select(vec![
                "port", "listen", "cores", "memory", "warm", "max_per_node", "queue",
                "queue_timeout_ms", "ready_timeout_ms", "ready_retries",
            ]),
            value in proptest::prelude::any::<u64>(),
            revision in proptest::prelude::any::<u64>(),
        ) {
            let mut json: serde_json::Value =
                serde_json::from_str(&def("web", 8000, 1, false).encode()).unwrap();
            json["spec"][field] = value.into();
            json["revision"] = revision.into();
            if let Ok(d) = ServiceDef::from_gossip("svcdef.web", &json.to_string(), NOW) {
                proptest::prop_assert!(d.revision <= NOW + MAX_AHEAD_MS);
                proptest::prop_assert_eq!(
                    ServiceSpec::try_from(d.spec.fields().clone()),
                    Ok(d.spec.clone())
                );
            }
        }
    }
}
