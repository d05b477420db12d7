//! Service definitions as the mesh spreads them: every agent publishes every
//! definition it knows under `svcdef.NAME` in its gossip state, and keeps
//! the newest of each name (last writer wins on `revision`, the creating
//! node's clock; removal is a tombstone with a newer revision). A node that
//! joins later reads them from any peer.

use serde::{Deserialize, Serialize};

use super::ServiceSpec;
use crate::ids::ServiceName;

/// Gossip key prefix of a definition.
pub const KEY_PREFIX: &str = "svcdef.";

/// One revision of a service's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    pub spec: ServiceSpec,
    /// Milliseconds since the epoch when it was created or removed.
    pub revision: u64,
    /// A tombstone: the service was removed at `revision`.
    pub removed: bool,
}

impl ServiceDef {
    pub fn name(&self) -> &ServiceName {
        &self.spec.name
    }

    /// The gossip key this definition is published under.
    pub fn key(&self) -> String {
        format!("{KEY_PREFIX}{}", self.spec.name)
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

    /// Parses a gossip value; `None` for anything malformed or whose name
    /// does not match its key.
    pub fn decode(key: &str, value: &str) -> Option<ServiceDef> {
        let name = key.strip_prefix(KEY_PREFIX)?;
        let def: ServiceDef = serde_json::from_str(value).ok()?;
        (def.spec.name.as_str() == name).then_some(def)
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

    #[test]
    fn gossip_values_round_trip_and_garbage_is_ignored() {
        let d = def("web", 8000, 7, false);
        assert_eq!(ServiceDef::decode(&d.key(), &d.encode()), Some(d.clone()));
        assert_eq!(ServiceDef::decode("svcdef.other", &d.encode()), None);
        assert_eq!(ServiceDef::decode(&d.key(), "{not json"), None);
        assert_eq!(ServiceDef::decode("load", &d.encode()), None);
    }
}
