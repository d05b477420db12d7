//! The definitions heard from the gossip: each value is read and validated
//! as the API validates a definition (`ServiceDef::from_gossip`), and one
//! that is refused is ignored, with one warning per (node, service,
//! revision) for as long as the node publishes it.

use std::collections::BTreeSet;

use mesh_protocol::service::ServiceDef;
use mesh_protocol::service::defs::Refused;
use tracing::warn;

use crate::mesh::GossipValue;

/// The valid definitions among `values`, heard at `now_ms`, and the
/// refused ones with the node that published each.
pub fn read(values: Vec<GossipValue>, now_ms: u64) -> (Vec<ServiceDef>, Vec<(String, Refused)>) {
    let mut defs = Vec::new();
    let mut refused = Vec::new();
    for v in values {
        match ServiceDef::from_gossip(&v.key, &v.value, now_ms) {
            Ok(def) => defs.push(def),
            Err(r) => refused.push((v.node, r)),
        }
    }
    (defs, refused)
}

/// (node, service, revision) of a refused definition.
type Key = (String, String, Option<u64>);

/// The refusals already warned about, among those still published.
#[derive(Debug, Default)]
pub struct Warned {
    seen: BTreeSet<Key>,
}

impl Warned {
    /// The refusals of this round not warned about before. Only this
    /// round's are remembered, so the set holds what peers publish now,
    /// and a definition published again after it was gone is warned
    /// about again.
    pub fn fresh<'a>(&mut self, refused: &'a [(String, Refused)]) -> Vec<&'a (String, Refused)> {
        let now: BTreeSet<Key> = refused.iter().map(key).collect();
        let fresh = refused
            .iter()
            .filter(|r| !self.seen.contains(&key(r)))
            .collect();
        self.seen = now;
        fresh
    }

    /// Warns about the refusals not warned about yet.
    pub fn warn(&mut self, refused: &[(String, Refused)]) {
        for (node, r) in self.fresh(refused) {
            warn!(
                peer = %node,
                service = %r.service,
                revision = ?r.revision,
                error = %r.error,
                "ignored a service definition a peer publishes: it is not valid here"
            );
        }
    }
}

fn key((node, r): &(String, Refused)) -> Key {
    (node.clone(), r.service.clone(), r.revision)
}

#[cfg(test)]
mod tests {
    use mesh_protocol::service::ServiceRequest;
    use mesh_protocol::service::ServiceSpec;

    use super::*;

    fn value(node: &str, key: &str, value: String) -> GossipValue {
        GossipValue {
            node: node.into(),
            key: key.into(),
            value,
        }
    }

    fn valid(revision: u64) -> ServiceDef {
        ServiceDef {
            spec: ServiceSpec::try_from(ServiceRequest {
                name: "web".into(),
                image: "img".into(),
                port: 80,
                listen: 8080,
                ..Default::default()
            })
            .unwrap(),
            revision,
            removed: false,
            owner: mesh_protocol::auth::unknown_owner(),
        }
    }

    fn broken(revision: u64) -> String {
        let mut json: serde_json::Value = serde_json::from_str(&valid(revision).encode()).unwrap();
        json["spec"]["ready_timeout_ms"] = u64::MAX.into();
        json.to_string()
    }

    #[test]
    fn valid_definitions_are_kept_and_refusals_warned_once_per_revision() {
        let good = valid(5);
        let values = vec![
            value("n1", "svcdef.web", good.encode()),
            value("n2", "svcdef.bad", broken(1)),
            value("n2", "svcdef.web", "{".into()),
        ];
        let (defs, refused) = read(values, 10);
        assert_eq!(defs, vec![good]);
        assert_eq!(refused.len(), 2);
        let mut warned = Warned::default();
        assert_eq!(warned.fresh(&refused).len(), 2);
        assert!(warned.fresh(&refused).is_empty(), "once");
        // A new revision of the same bad definition is warned about.
        let (_, again) = read(vec![value("n2", "svcdef.bad", broken(2))], 10);
        assert_eq!(warned.fresh(&again).len(), 1);
        // Gone, then back: warned again.
        assert!(warned.fresh(&[]).is_empty());
        assert_eq!(warned.fresh(&again).len(), 1);
    }
}
