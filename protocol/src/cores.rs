//! Who holds each core of a node, as the dashboard draws it: a task, a
//! service container serving (a per-connection container with its client,
//! or a pool instance), a warm container waiting for a client, or nobody.
//! The supervisor knows only the holder's id of each core ([`CoreHold`]);
//! the services part knows which of its holders are warm ([`ServiceHolder`]);
//! [`classify`] joins the two. `GET /v1/cores` gathers one [`NodeCores`] per
//! live node (the `Cores` call).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::CoreHold;
use crate::ids::{NodeId, ServiceName, TaskId};

/// What the holder ids of service containers start with; task ids start
/// with `t` (`TaskId::generate`), so the two never meet.
const SERVICE_HOLDER_PREFIX: &str = "s-";

/// The id under which the `seq`th container this agent starts for
/// `service` holds its cores.
pub fn service_holder(service: &ServiceName, seq: u64) -> String {
    format!("{SERVICE_HOLDER_PREFIX}{service}-{seq}")
}

/// The service whose container holds as `holder`, if it is one
/// ([`service_holder`]'s inverse).
pub fn service_of_holder(holder: &TaskId) -> Option<ServiceName> {
    let rest = holder.as_str().strip_prefix(SERVICE_HOLDER_PREFIX)?;
    let (name, seq) = rest.rsplit_once('-')?;
    seq.parse::<u64>().ok()?;
    ServiceName::new(name).ok()
}

/// What a service container holding cores is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceUse {
    /// Started and connected, waiting for a client (`--warm`).
    Warm,
    /// Serving: a per-connection container with its client, a pool
    /// instance, or one being started.
    Serving,
}

/// One service container's holder id, as the services part knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHolder {
    pub holder: TaskId,
    pub service: ServiceName,
    pub usage: ServiceUse,
}

/// What holds a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldKind {
    Free,
    Task,
    /// A service container serving (or starting).
    Service,
    /// A warm service container, waiting for a client.
    Warm,
}

/// One core and what holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreUse {
    pub core: u32,
    pub numa: u32,
    pub kind: HoldKind,
    /// The task's id, or the service container's holder id.
    pub holder: Option<TaskId>,
    /// The service, for a service container.
    pub service: Option<ServiceName>,
}

/// One node's cores, each with what holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCores {
    pub node: NodeId,
    pub cores: Vec<CoreUse>,
}

/// `GET /v1/cores`: every live node's cores, and the nodes that did not
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshCores {
    pub nodes: Vec<NodeCores>,
    pub unreachable: Vec<NodeId>,
}

/// Each core of `cores` (the supervisor's view) with what holds it, told
/// apart by what the services part says of its `services` holders. A
/// service holder the services part does not list (yet, or any more) is
/// taken for one starting or being removed: serving.
pub fn classify(cores: &[CoreHold], services: &[ServiceHolder]) -> Vec<CoreUse> {
    let known: BTreeMap<&TaskId, &ServiceHolder> =
        services.iter().map(|s| (&s.holder, s)).collect();
    cores
        .iter()
        .map(|c| {
            let (kind, service) = match &c.task {
                None => (HoldKind::Free, None),
                Some(id) => match known.get(id) {
                    Some(s) => (
                        match s.usage {
                            ServiceUse::Warm => HoldKind::Warm,
                            ServiceUse::Serving => HoldKind::Service,
                        },
                        Some(s.service.clone()),
                    ),
                    None => match service_of_holder(id) {
                        Some(name) => (HoldKind::Service, Some(name)),
                        None => (HoldKind::Task, None),
                    },
                },
            };
            CoreUse {
                core: c.core,
                numa: c.numa,
                kind,
                holder: c.task.clone(),
                service,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(core: u32, numa: u32, task: Option<&str>) -> CoreHold {
        CoreHold {
            core,
            numa,
            pus: crate::CpuSet::default(),
            task: task.map(|t| TaskId::new(t).unwrap()),
        }
    }

    fn svc(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    #[test]
    fn holder_ids_name_their_service() {
        let web = svc("my-web");
        let id = TaskId::new(service_holder(&web, 42)).unwrap();
        assert_eq!(service_of_holder(&id), Some(web));
        for task in [
            "t0000000003e8ffffffff",
            "t0000000003e8ffffffff-3",
            "s-",
            "s-web",
        ] {
            assert_eq!(
                service_of_holder(&TaskId::new(task).unwrap()),
                None,
                "{task}"
            );
        }
    }

    #[test]
    fn each_core_gets_its_holders_kind() {
        let web = svc("web");
        let warm = service_holder(&web, 1);
        let busy = service_holder(&web, 2);
        let starting = service_holder(&web, 3);
        let cores = [
            hold(0, 0, None),
            hold(1, 0, Some("t0000000003e8ffffffff")),
            hold(2, 1, Some(&warm)),
            hold(3, 1, Some(&busy)),
            hold(4, 1, Some(&starting)),
        ];
        let services = [
            ServiceHolder {
                holder: TaskId::new(warm.as_str()).unwrap(),
                service: web.clone(),
                usage: ServiceUse::Warm,
            },
            ServiceHolder {
                holder: TaskId::new(busy.as_str()).unwrap(),
                service: web.clone(),
                usage: ServiceUse::Serving,
            },
        ];
        let out = classify(&cores, &services);
        let kinds: Vec<_> = out.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                HoldKind::Free,
                HoldKind::Task,
                HoldKind::Warm,
                HoldKind::Service,
                HoldKind::Service
            ]
        );
        assert_eq!(out[0].holder, None);
        assert_eq!(out[1].service, None);
        assert!(out[2..].iter().all(|c| c.service.as_ref() == Some(&web)));
        assert_eq!((out[3].core, out[3].numa), (3, 1));
    }

    #[test]
    fn node_cores_round_trip_the_wire() {
        let nc = NodeCores {
            node: NodeId::new("n1").unwrap(),
            cores: classify(&[hold(0, 0, Some("t0000000003e8ffffffff"))], &[]),
        };
        let bytes = crate::wire::encode(&nc).unwrap();
        let back: NodeCores = crate::wire::decode(&bytes).unwrap();
        assert_eq!(back, nc);
        let json = serde_json::to_value(&nc).unwrap();
        assert_eq!(json["cores"][0]["kind"], "task");
    }
}
