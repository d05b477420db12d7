//! The services the benchmark defines, where their containers may run, and
//! what their figures must show before a measurement: pure functions of a
//! services list.

use mesh_protocol::api::{ServiceNodeStats, ServiceView};
use mesh_protocol::service::ServiceRequest;

use crate::bench::TASK_IMAGE;

/// Runs every service container (and is the local agent).
pub(super) const SERVER: &str = "n2";
/// Runs none: its clients' connections cross the mesh to [`SERVER`].
pub(super) const ENTRY: &str = "n1";
/// Room for the warm pool, a busy container, its replacement, the pools
/// and a cold container, at [`CORES`] each.
pub(super) const SERVER_TOPOLOGY: &str = "numa:1 core:32 pu:1";
/// Too small for one [`CORES`]-core container.
pub(super) const ENTRY_TOPOLOGY: &str = "numa:1 core:1 pu:1";
/// Cores of every service container: on this 2-CPU host, both CPUs.
pub(super) const CORES: u32 = 2;
/// The port the test service listens on in its container.
pub(super) const PORT: u16 = 7000;
/// Warm containers of the warm per-connection service.
pub(super) const WARM: u32 = 4;

/// A service the benchmark defines: its name and the agents' port for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Svc {
    pub name: &'static str,
    pub listen: u16,
}

impl Svc {
    const fn new(name: &'static str, listen: u16) -> Self {
        Self { name, listen }
    }
}

/// Pool, one echo instance: first byte, requests/s and held connections.
pub(super) const ECHO_POOL: Svc = Svc::new("bench-echo", 9000);
/// Pool, one `source` instance: the large transfer.
pub(super) const SOURCE_POOL: Svc = Svc::new("bench-source", 9001);
/// Per-connection echo with [`WARM`] warm containers.
pub(super) const WARM_CONN: Svc = Svc::new("bench-warm", 9002);
/// Per-connection echo without warm containers.
pub(super) const COLD_CONN: Svc = Svc::new("bench-cold", 9003);

/// The four services, all of [`CORES`]-core echo or source containers.
pub(super) fn definitions(transfer_bytes: u64) -> [ServiceRequest; 4] {
    let echo = || {
        ["echo", "--port", &PORT.to_string()]
            .map(String::from)
            .to_vec()
    };
    let define = |svc: Svc, mode: &str, command: Vec<String>| ServiceRequest {
        name: svc.name.into(),
        image: TASK_IMAGE.into(),
        port: PORT,
        listen: svc.listen,
        mode: Some(mode.into()),
        cores: Some(CORES),
        command,
        ..Default::default()
    };
    let pool = |svc, command| ServiceRequest {
        instances: Some("1".into()),
        ..define(svc, "pool", command)
    };
    let source = vec![
        "source".into(),
        transfer_bytes.to_string(),
        "--port".into(),
        PORT.to_string(),
    ];
    [
        pool(ECHO_POOL, echo()),
        pool(SOURCE_POOL, source),
        ServiceRequest {
            warm: Some(WARM),
            ..define(WARM_CONN, "per-connection", echo())
        },
        define(COLD_CONN, "per-connection", echo()),
    ]
}

/// `node`'s figures for `svc`, as a services list shows them.
pub(super) fn stats<'a>(
    views: &'a [ServiceView],
    svc: Svc,
    node: &str,
) -> Result<&'a ServiceNodeStats, String> {
    let view = views
        .iter()
        .find(|v| v.def.name().as_str() == svc.name)
        .ok_or_else(|| format!("no service {}", svc.name))?;
    view.nodes
        .iter()
        .find(|s| s.node.as_str() == node)
        .ok_or_else(|| format!("{node} has no figures for {}", svc.name))
}

/// Whether every node listens for every service, the pools have their
/// instance, the warm pool is full and no cold container is left.
pub(super) fn settled(views: &[ServiceView]) -> Result<(), String> {
    for svc in [ECHO_POOL, SOURCE_POOL, WARM_CONN, COLD_CONN] {
        for node in [ENTRY, SERVER] {
            let s = stats(views, svc, node)?;
            if !s.listening {
                return Err(format!(
                    "{node} does not listen for {}: {:?}",
                    svc.name, s.listen_error
                ));
            }
        }
    }
    for svc in [ECHO_POOL, SOURCE_POOL] {
        let load = &stats(views, svc, SERVER)?.load;
        if load.ready != 1 {
            return Err(format!("{} has {} ready instances", svc.name, load.ready));
        }
    }
    warm_at_rest(views)?;
    cold_at_rest(views)
}

/// The warm pool full, with no busy or starting container besides.
pub(super) fn warm_at_rest(views: &[ServiceView]) -> Result<(), String> {
    let load = &stats(views, WARM_CONN, SERVER)?.load;
    if load.ready == WARM && load.containers == WARM {
        Ok(())
    } else {
        Err(format!(
            "{} on {SERVER}: {} ready of {} containers, want {WARM} of {WARM}",
            WARM_CONN.name, load.ready, load.containers
        ))
    }
}

pub(super) fn cold_at_rest(views: &[ServiceView]) -> Result<(), String> {
    let load = &stats(views, COLD_CONN, SERVER)?.load;
    match load.containers {
        0 => Ok(()),
        n => Err(format!("{} has {n} containers on {SERVER}", COLD_CONN.name)),
    }
}

/// The echo pool's open connections on [`SERVER`] all closed.
pub(super) fn echo_idle(views: &[ServiceView]) -> Result<(), String> {
    match stats(views, ECHO_POOL, SERVER)?.load.conns {
        0 => Ok(()),
        n => Err(format!("{n} connections still open to {}", ECHO_POOL.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::load::ServiceLoad;
    use mesh_protocol::service::{ServiceDef, ServiceSpec};
    use mesh_protocol::{NodeId, ServiceName};

    fn view(svc: Svc, loads: &[(&str, bool, ServiceLoad)]) -> ServiceView {
        let request = definitions(1)
            .into_iter()
            .find(|r| r.name == svc.name)
            .unwrap();
        ServiceView {
            def: ServiceDef {
                spec: ServiceSpec::try_from(request).unwrap(),
                revision: 1,
                removed: false,
                owner: mesh_protocol::auth::unknown_owner(),
            },
            nodes: loads
                .iter()
                .map(|(node, listening, load)| ServiceNodeStats {
                    node: NodeId::new(*node).unwrap(),
                    service: ServiceName::new(svc.name).unwrap(),
                    listening: *listening,
                    listen_error: None,
                    load: load.clone(),
                    counters: Default::default(),
                    image: None,
                })
                .collect(),
            unreachable: Vec::new(),
        }
    }

    fn load(containers: u32, ready: u32) -> ServiceLoad {
        ServiceLoad {
            containers,
            ready,
            ..Default::default()
        }
    }

    #[test]
    fn the_definitions_are_valid_and_only_fit_the_server() {
        for request in definitions(256 << 20) {
            let spec = ServiceSpec::try_from(request.clone()).unwrap();
            assert_eq!(spec.cores.get(), CORES, "{request:?}");
        }
        // n1's single core cannot hold a CORES-core container.
        assert!(ENTRY_TOPOLOGY.contains("core:1 "));
    }

    #[test]
    fn settled_wants_listeners_instances_a_full_warm_pool_and_no_cold_container() {
        let both = |server: ServiceLoad| {
            vec![
                (ENTRY, true, ServiceLoad::default()),
                (SERVER, true, server),
            ]
        };
        let mut views = vec![
            view(ECHO_POOL, &both(load(1, 1))),
            view(SOURCE_POOL, &both(load(1, 1))),
            view(WARM_CONN, &both(load(WARM, WARM))),
            view(COLD_CONN, &both(load(0, 0))),
        ];
        assert_eq!(settled(&views), Ok(()));
        views[2] = view(WARM_CONN, &both(load(WARM + 1, WARM)));
        assert!(settled(&views).unwrap_err().contains("bench-warm"));
        views[2] = view(WARM_CONN, &both(load(WARM, WARM)));
        views[3] = view(COLD_CONN, &both(load(1, 0)));
        assert!(settled(&views).is_err());
        views[3] = view(
            COLD_CONN,
            &[
                (ENTRY, false, ServiceLoad::default()),
                (SERVER, true, load(0, 0)),
            ],
        );
        assert!(settled(&views).unwrap_err().contains("n1 does not listen"));
        assert!(settled(&views[..2]).is_err());
    }
}
